"""``wattwise train`` as a stranger runs it: on a model wattwise has never seen (an MLP written
in tests/training/train_tasks.py, through module:factory), from a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    paths = [str(TESTS / "training"), str(TESTS.parent / "src"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return subprocess.run(
        [sys.executable, "-m", "wattwise", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=600,
    )


def test_train_a_strangers_model_to_a_target(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _run(
        "train",
        "--task",
        "train_tasks:user_mlp",
        "--target-accuracy",
        "0.85",
        "--trials",
        "2",
        "--rounds",
        "1",
        "--seeds",
        "1",
        "--out",
        str(out),
        "--json",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    assert doc == json.loads((out / "training.json").read_text())
    assert doc["task"] == "user-mlp" and doc["target_accuracy"] == 0.85
    assert doc["default"]["config"]["batch_size"] == 32
    # The walk's first step: one knob changed from the recipe, the first in walk order.
    first = doc["trials"][1]["config"]
    assert first["batch_size"] == 32 and (first["precision"] == "bf16" or first["threads"] == 1)
    assert doc["meter"]["source"].startswith(("measured:", "estimated:"))
    assert all(t.get("seed_runs") is None for t in doc["trials"])  # --seeds 1: no reruns
    assert "[train] trial 0" in proc.stderr
    assert (out / "artifact" / "deployment.json").is_file() == (doc["artifact"] is not None)


def test_predict_states_the_prediction_then_the_error(tmp_path: Path) -> None:
    proc = _run("train", "--task", "train_tasks:user_mlp", "--predict", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "after epoch 1: the run of 6 epoch(s) will take" in proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("b(task) fp32 t(all): 6 epoch(s)")
    assert "predicted after epoch 1 for 6 epoch(s)" in lines[1]
    assert ("(estimated:" in lines[1]) or ("(measured:" in lines[1])  # its source
    assert "actual for the 6 epoch(s) run" in lines[2] and "error" in lines[2]
    assert list(tmp_path.iterdir()) == []  # --predict writes nothing


def test_no_target_is_one_error_line_and_exit_2(tmp_path: Path) -> None:
    proc = _run(
        "train", "--task", "train_tasks:user_mlp", "--out", str(tmp_path / "o"), cwd=tmp_path
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: a target accuracy is needed (--target-accuracy)"
    ]
    assert not (tmp_path / "o").exists()
