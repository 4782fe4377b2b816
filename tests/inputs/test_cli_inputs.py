"""``wattwise measure`` on models as strangers write them (``stranger_models.py``), through the
real CLI: a dict of token ids and a mask, ids with no example input, a task's example input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import stranger_models as sm
from test_flow import text_macs
from typer.testing import CliRunner

import wattwise
from wattwise.cli import EXIT_ERROR, app

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]
SHORT = ["--max-time-s", "0.5", "--threads", "1"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m wattwise`` from the repository root, as a user types it, on this checkout's
    wattwise (so the spec ``tests.inputs.stranger_models:...`` imports from the current
    directory, as the CLI promises)."""
    src = str(Path(wattwise.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "wattwise", *args],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO,
        env=env,
    )


def _one_measurement(stdout: str) -> tuple[dict[str, Any], dict[str, Any]]:
    doc = json.loads(stdout)
    assert len(doc["measurements"]) == 1
    return doc["target"], doc["measurements"][0]


@pytest.mark.slow
def test_a_dict_input_transformer_measures_from_the_cli_as_a_user_runs_it() -> None:
    out = _cli("measure", "tests.inputs.stranger_models:factory", "--json", *SHORT)
    assert out.returncode == 0, out.stderr[-2000:]
    target, m = _one_measurement(out.stdout)
    assert target["input"] == "input_ids (1, 20) int64, attention_mask (1, 20) int64"
    assert target["input_source"] == "model" and target["input_shape"] is None
    assert m["energy_source"] == "estimated:cpu-ccf" or m["energy_source"].startswith("measured:")
    assert m["macs_per_item"] == text_macs(sm.SEQ) == 378_976
    assert m["tokens_per_item"] == sm.REAL_TOKENS  # the mask's ones: padding is not a token
    assert m["energy_j_per_token"] == pytest.approx(m["energy_j_per_item"] / sm.REAL_TOKENS)
    assert m["throughput_tokens_per_s"] == pytest.approx(
        m["throughput_items_per_s"] * sm.REAL_TOKENS
    )


def _ids_encoder_macs(seq: int) -> int:
    d, ff = sm.IDS_D, sm.IDS_FF
    return seq * d * 3 * d + 2 * seq * seq * d + seq * d * d + 2 * seq * d * ff + d * sm.IDS_CLASSES


@pytest.mark.slow
def test_ids_without_an_example_measure_with_input_dtype_and_show_tokens() -> None:
    spec = "stranger_models:ids_encoder"
    result = runner.invoke(
        app, ["measure", spec, "--input-shape", "1,24", "--input-dtype", "int64", *SHORT]
    )
    assert result.exit_code == 0, result.output
    table = result.stdout
    assert "[(1, 24) int64]" in " ".join(table.split())  # the title wraps with the width
    for row in ("tokens / item", "energy / token", "tokens / s"):
        assert row in table
    assert "234 k" in table  # MACs / item: 233,600 by hand
    assert _ids_encoder_macs(24) == 233_600

    json_out = runner.invoke(
        app, ["measure", spec, "--input-shape", "1,24", "--input-dtype", "int64", "--json", *SHORT]
    )
    _, m = _one_measurement(json_out.stdout)
    assert m["macs_per_item"] == _ids_encoder_macs(24) and m["tokens_per_item"] == 24


def test_float_ids_into_an_embedding_fail_in_one_line_naming_the_fix() -> None:
    result = runner.invoke(app, ["measure", "stranger_models:ids_encoder", "--input-shape", "1,24"])
    assert result.exit_code == EXIT_ERROR
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    assert "--input-dtype int64" in lines[0] and "(1, 24) float32" in lines[0]


def test_without_a_shape_the_error_asks_for_shape_and_dtype() -> None:
    result = runner.invoke(app, ["measure", "stranger_models:ids_encoder"])
    assert result.exit_code == EXIT_ERROR
    assert "--input-shape" in result.stderr and "--input-dtype int64" in result.stderr


def test_input_dtype_is_refused_where_the_model_brings_its_own_input() -> None:
    result = runner.invoke(app, ["measure", "stranger_models:factory", "--input-dtype", "int64"])
    assert result.exit_code == EXIT_ERROR
    assert "has its own example_input (input_ids (1, 20) int64" in result.stderr
    bad = runner.invoke(app, ["measure", "stranger_models:factory", "--input-dtype", "int65"])
    assert bad.exit_code == EXIT_ERROR and "expected one of float32" in bad.stderr


def _mlp_macs() -> int:
    return sm.CANCER_FEATURES * sm.CANCER_HIDDEN + sm.CANCER_HIDDEN * 2


@pytest.mark.slow
def test_a_task_gives_the_input_and_without_target_the_model() -> None:
    result = runner.invoke(
        app, ["measure", "--task", "stranger_models:cancer_task", "--json", *SHORT]
    )
    assert result.exit_code == 0, result.output
    target, m = _one_measurement(result.stdout)
    assert target["input_source"] == "task" and target["input"] == "(1, 30) float32"
    assert m["macs_per_item"] == _mlp_macs() == 2048
    assert m["tokens_per_item"] is None and m["energy_j_per_token"] is None
    # TARGET measured on the task's input: the text task's dict, with the stranger's model.
    text = runner.invoke(
        app,
        [
            "measure",
            "stranger_models:factory",
            "--task",
            "stranger_models:text_task",
            "--json",
            *SHORT,
        ],
    )
    assert text.exit_code == 0, text.output
    target, m = _one_measurement(text.stdout)
    assert target["input_source"] == "task" and target["input"].startswith("input_ids (1, ")
    assert m["tokens_per_item"] == float(sm.text_task().example_input["attention_mask"].sum())


def test_measure_needs_a_target_or_a_task() -> None:
    result = runner.invoke(app, ["measure"])
    assert result.exit_code == EXIT_ERROR and "--task" in result.stderr


def test_compress_refuses_a_dict_input_task_in_one_line(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("- type: prune\n  ratio: 0.3\n")
    result = runner.invoke(
        app,
        [
            "compress",
            "stranger_models:factory",
            "--recipe",
            str(recipe),
            "--task",
            "stranger_models:text_task",
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == EXIT_ERROR
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    assert "one tensor input for now" in lines[0] and "input_ids (1, 7) int64" in lines[0]
