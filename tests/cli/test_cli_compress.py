"""``wattwise compress``: a recipe applied from the CLI, written atomically, reloadable."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from wattwise.cli import EXIT_ERROR, app
from wattwise.cli._targets import resolve_target

runner = CliRunner()

QUICK_TASK = textwrap.dedent(
    """
    import dataclasses
    from wattwise.tasks import digits

    def task():
        # The digits task with a short training recipe, so the test stays quick.
        return dataclasses.replace(digits(), epochs=3)
    """
)


@pytest.fixture
def quick_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "quick_digits.py").write_text(QUICK_TASK)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("WATTWISE_LOCK_DIR", str(tmp_path / "locks"))
    torch.set_num_threads(1)  # tiny model: one thread is faster and steadier on a busy machine
    return "quick_digits:task"


@pytest.mark.slow
def test_compress_writes_model_recipe_and_log(tmp_path: Path, quick_task: str) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("- {type: prune, ratio: 0.5, finetune_epochs: 1}\n")
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "compress",
            "digits_cnn",
            "--recipe",
            str(recipe),
            "--task",
            quick_task,
            "--out",
            str(out),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "compression_log.json",
        "model.pt2",
        "recipe.yaml",
    ]
    log = json.loads((out / "compression_log.json").read_text())
    assert log["model"] == "model.pt2"
    assert log["final"]["macs"] < log["initial"]["macs"] / 2
    (record,) = log["passes"]
    assert record["energy_source"].startswith(("measured:", "estimated:"))
    assert record["energy_j"] > 0
    # The written program reloads (safely, torch.export) and keeps the output shape.
    reloaded = resolve_target(str(out / "model.pt2"))
    model = reloaded.factory()
    assert model(torch.randn(5, 1, 8, 8)).shape == (5, 10)
    assert "prune" in (out / "recipe.yaml").read_text()


@pytest.mark.parametrize(
    ("recipe_text", "fragment"),
    [
        ("- {type: shrink}\n", "shrink"),
        ("- {type: prune, ratio: 1.2}\n", "ratio"),
        ("- [unclosed\n", "recipe"),
    ],
)
def test_bad_recipe_is_one_line_and_writes_nothing(
    tmp_path: Path, quick_task: str, recipe_text: str, fragment: str
) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text)
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "compress",
            "digits_cnn",
            "--recipe",
            str(recipe),
            "--task",
            quick_task,
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == EXIT_ERROR
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and fragment in lines[0]
    assert "Traceback" not in result.output
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def test_non_empty_output_directory_is_refused(tmp_path: Path, quick_task: str) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("- {type: prune, ratio: 0.5, finetune_epochs: 0}\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = runner.invoke(
        app,
        [
            "compress",
            "digits_cnn",
            "--recipe",
            str(recipe),
            "--task",
            quick_task,
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == EXIT_ERROR
    assert "not empty" in result.output
    assert (out / "keep.txt").read_text() == "mine"
