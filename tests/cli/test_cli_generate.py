"""``wattwise measure --generate`` as a user runs it, on a language model of their own."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from wattwise.cli import EXIT_ERROR, app

runner = CliRunner()

USER_LM = """\
import torch
from torch import nn

class CharLM(nn.Module):
    # forward(ids) -> logits and nothing else: no KV cache to use.
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(64, 16)
        self.out = nn.Linear(16, 64)
        self.example_input = torch.randint(0, 64, (1, 6))

    def forward(self, ids):
        h = self.emb(ids).cumsum(1)
        return self.out(h / torch.arange(1, ids.shape[1] + 1).view(1, -1, 1))

def build():
    print("building the user's model")  # goes to stderr, never into the JSON
    return CharLM()
"""


@pytest.fixture
def user_lm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> str:
    (tmp_path / "user_lm.py").write_text(USER_LM, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("WATTWISE_LOCK_DIR", str(tmp_path_factory.mktemp("locks")))
    return "user_lm:build"


def test_generate_prints_prefill_decode_and_latency_per_token(user_lm: str) -> None:
    # One run, in a measuring child as users get it; the JSON carries Measurement.to_dict,
    # whose generation part test_generate round-trips.
    args = ["measure", user_lm, "--generate", "--prompt-tokens", "12", "--new-tokens", "4"]
    result = runner.invoke(app, [*args, "--max-time-s", "0.5", "--threads", "1"])
    assert result.exit_code == 0, result.output
    table = result.stdout
    for row in ("prefill / token", "decode / token", "energy / response", "TTFT p50 / p90"):
        assert row in table
    assert "12 + 4" in table and "no KV cache" in table
    assert "building the user's model" not in table  # the user's print went to stderr
    kv = next(line for line in table.splitlines() if "KV cache" in line)
    assert "none" in kv


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--prompt-tokens", "8"], "--prompt-tokens and --new-tokens go with --generate"),
        (["--generate", "--new-tokens", "0"], "--new-tokens must be >= 1, got 0"),
        (
            ["--generate", "--mode", "train"],
            "--generate measures inference; it takes --mode inference",
        ),
    ],
)
def test_generate_options_fail_in_one_line(user_lm: str, extra: list[str], message: str) -> None:
    result = runner.invoke(app, ["measure", user_lm, *extra])
    assert result.exit_code == EXIT_ERROR, result.output
    assert result.stderr.strip() == f"error: {message}"


USER_GPT2 = """\
from transformers import GPT2Config, GPT2LMHeadModel

def build():
    # A user's own GPT-2-style model, random weights, from a config (no download).
    config = GPT2Config(vocab_size=96, n_positions=64, n_embd=32, n_layer=2, n_head=2)
    return GPT2LMHeadModel(config).eval()
"""


def test_a_users_hugging_face_lm_generates_from_the_cli_as_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    import json

    (tmp_path / "user_gpt2.py").write_text(USER_GPT2, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("WATTWISE_LOCK_DIR", str(tmp_path_factory.mktemp("locks")))
    args = ["measure", "user_gpt2:build", "--input-shape", "1,8", "--input-dtype", "int64"]
    args += ["--generate", "--prompt-tokens", "16", "--new-tokens", "8", "--json"]
    result = runner.invoke(app, [*args, "--max-time-s", "0.5", "--threads", "1"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    rows = doc.get("measurements", [doc])
    gen = rows[0]["generation"]
    assert gen["kv_cache"] == "dynamic"  # Hugging Face's own cache, driven token by token
    for key in ("prefill_energy_j_per_token", "decode_energy_j_per_token", "ttft_ms_p90"):
        assert gen[key] > 0 and gen[key] < float("inf")
    assert gen["tbt_ms_p90"] > 0
    assert rows[0]["energy_source"] == "estimated:cpu-ccf"


def test_a_built_in_task_name_is_a_target_measured_on_the_tasks_own_input(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # `wattwise measure tinylm --generate --json`, as issue 14 writes it: the task's own
    # (untrained) Llama-style model on the task's prompt, with its static KV cache.
    import json

    monkeypatch.setenv("WATTWISE_LOCK_DIR", str(tmp_path_factory.mktemp("locks")))
    args = ["measure", "tinylm", "--generate", "--prompt-tokens", "16", "--new-tokens", "4"]
    result = runner.invoke(app, [*args, "--json", "--max-time-s", "0.5", "--threads", "1"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["target"]["name"] == "tinylm" and doc["target"]["input_source"] == "task"
    gen = doc["measurements"][0]["generation"]
    assert gen["kv_cache"] == "static"
    for key in ("prefill_energy_j_per_token", "decode_energy_j_per_token", "ttft_ms_p50"):
        assert 0 < gen[key] < float("inf")
    assert 0 < gen["tbt_ms_p90"] < float("inf")
    assert doc["measurements"][0]["energy_source"] == "estimated:cpu-ccf"


def test_an_unknown_target_names_the_built_in_tasks_too() -> None:
    result = runner.invoke(app, ["measure", "tinylmm"])
    assert result.exit_code == EXIT_ERROR
    line = result.stderr.strip()
    assert line.startswith("error: unknown TARGET 'tinylmm' (did you mean tinylm")
    assert "a built-in task's model (digits32, lite0-photos, minilm-embed" in line
