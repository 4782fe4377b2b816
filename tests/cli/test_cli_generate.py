"""``wattwise measure --generate`` as a user runs it, on a language model of their own."""

from __future__ import annotations

import json
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
    args = ["measure", user_lm, "--generate", "--prompt-tokens", "12", "--new-tokens", "4"]
    fast = ["--max-time-s", "0.5", "--threads", "1"]
    result = runner.invoke(app, [*args, *fast, "--json"])
    assert result.exit_code == 0, result.output
    (m,) = json.loads(result.stdout)["measurements"]
    g = m["generation"]
    assert (g["prompt_tokens"], g["new_tokens"], g["kv_cache"]) == (12, 4, "none")
    assert g["prefill_energy_j_per_token"] > 0 and g["decode_energy_j_per_token"] > 0
    assert g["ttft_ms_p90"] >= g["ttft_ms_p50"] > 0 and g["tbt_ms_p50"] > 0
    assert m["tokens_per_item"] == 16 and m["energy_source"].startswith("estimated:")
    table = runner.invoke(app, [*args, *fast])
    assert table.exit_code == 0, table.output
    for row in ("prefill / token", "decode / token", "TTFT p50 / p90", "KV cache", "none"):
        assert row in table.stdout
    assert "no KV cache" in table.stdout


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
