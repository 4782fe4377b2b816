"""A corpus of bad inputs: each must fail up front with one ``error:`` line, the documented exit
code (2 bad input, 1 a broken ``wattwise check`` budget) and nothing half-written left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner, Result

import wattwise
from wattwise.cli import app
from wattwise.errors import WattwiseError

MODS = """
import torch
from torch import nn


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = x.flatten(1)
        if x.sum() > 0:  # data-dependent control flow: not traceable
            return self.fc(x)
        return self.fc(-x)


class MakeNaN(nn.Module):
    def forward(self, x):
        return x * float("nan")


def data_dependent():
    return DataDependent()


def wrong_type():
    return 42


def raises():
    raise RuntimeError("kaboom")


def nan_model():
    return nn.Sequential(nn.Linear(4, 2), MakeNaN())
"""

RECIPE_OK = "- type: prune\n  ratio: 0.5\n  finetune_epochs: 0\n"


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A workspace: lock dir in tmp, a module of bad factories importable as ``badmods``."""
    lock = tmp_path / "lock"
    lock.mkdir()
    monkeypatch.setenv("WATTWISE_LOCK_DIR", str(lock))
    (tmp_path / "badmods.py").write_text(MODS)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("badmods", None)
    return tmp_path


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def assert_no_leftovers(out: Path | None) -> None:
    if out is None:
        return
    assert not out.exists(), f"{out} was left behind"
    if out.parent.is_dir():
        siblings = [p.name for p in out.parent.iterdir() if out.name in p.name]
        assert not siblings, f"temporary siblings left behind: {siblings}"


def check_cli_error(
    args: list[str], *, code: int = 2, needle: str, out: Path | None = None
) -> Result:
    result = CliRunner().invoke(app, args)
    stderr = result.stderr
    assert "Traceback" not in result.output
    assert result.exit_code == code, result.output
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one stderr line, got: {stderr!r}"
    assert lines[0].startswith("error:"), lines[0]
    assert needle.lower() in lines[0].lower(), lines[0]
    assert_no_leftovers(out)
    return result


# --- compress: recipes --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("recipe", "needle"),
    [
        ("- type: prune\n  ratio: [1,\n", "malformed YAML"),
        ("- type: nosuch\n", "unknown pass 'nosuch'"),
        ("- type: prune\n  ratio: 1.2\n", "ratio"),
        ("- type: prune\n  ratio: 0.5\n  finetune_epochs: -1\n", "finetune_epochs"),
    ],
    ids=["malformed-yaml", "unknown-pass", "ratio-1.2", "negative-epochs"],
)
def test_compress_bad_recipe(ws: Path, recipe: str, needle: str) -> None:
    (ws / "r.yaml").write_text(recipe)
    out = ws / "out"
    check_cli_error(
        ["compress", "digits_cnn", "--recipe", str(ws / "r.yaml"), "--out", str(out)],
        needle=needle,
        out=out,
    )


def test_compress_missing_recipe(ws: Path) -> None:
    out = ws / "out"
    check_cli_error(
        ["compress", "digits_cnn", "--recipe", str(ws / "nope.yaml"), "--out", str(out)],
        needle="nope.yaml",
        out=out,
    )


@pytest.mark.parametrize(
    ("target", "needle"),
    [
        ("badmods:wrong_type", "factory returned a int"),
        ("badmods:raises", "kaboom"),
        ("badmods:nosuch", "badmods:nosuch"),
        ("nosuch_pkg.mod:f", "nosuch_pkg"),
    ],
    ids=["factory-wrong-type", "factory-raises", "factory-missing-attr", "factory-missing-module"],
)
def test_compress_bad_factory(ws: Path, target: str, needle: str) -> None:
    (ws / "r.yaml").write_text(RECIPE_OK)
    out = ws / "out"
    check_cli_error(
        ["compress", target, "--recipe", str(ws / "r.yaml"), "--out", str(out)],
        needle=needle,
        out=out,
    )


def test_compress_untraceable_model(ws: Path) -> None:
    (ws / "r.yaml").write_text(RECIPE_OK)
    out = ws / "out"
    check_cli_error(
        ["compress", "badmods:data_dependent", "--recipe", str(ws / "r.yaml"), "--out", str(out)],
        needle="data_dependent",
        out=out,
    )


def test_compress_out_under_a_file(ws: Path) -> None:
    (ws / "r.yaml").write_text(RECIPE_OK)
    (ws / "afile").write_text("x")
    out = ws / "afile" / "out"
    result = CliRunner().invoke(
        app, ["compress", "digits_cnn", "--recipe", str(ws / "r.yaml"), "--out", str(out)]
    )
    # Either refused up front or after training; both must be one line, exit 2, nothing left.
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert len(_error_lines(result.stderr)) == 1
    assert not out.exists()
    assert (ws / "afile").read_text() == "x"


# --- measure ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["digits_cnn", "--input-shape", "1,3,8,8"], "check --input-shape"),
        (["digits_cnn", "--input-shape", "a,b"], "--input-shape"),
        (["digits_cnn", "--input-shape", "0,1,8,8"], ">= 1"),
        (["nosuchmodel"], "unknown TARGET 'nosuchmodel'"),
        (["digits_cnn", "--batch-size", "0"], "--batch-size"),
        (["digits_cnn", "--batch-size", "x"], "--batch-size"),
        (["digits_cnn", "--device", "tpu"], "tpu"),
        (["digits_cnn", "--grid-intensity", "-5"], "grid_intensity"),
        (["digits_cnn", "--mode", "serve"], "--mode"),
        (["digits_cnn", "--max-time-s", "0"], "max_time_s"),
        (["badmods:wrong_type"], "expected a torch nn.Module"),
        (["badmods:raises"], "factory raised RuntimeError: kaboom"),
        (["badmods:nan_model", "--input-shape", "1,4", "--max-time-s", "1"], "NaN"),
    ],
    ids=[
        "wrong-shape",
        "shape-not-ints",
        "shape-zero",
        "unknown-model",
        "batch-size-0",
        "batch-size-x",
        "device-tpu",
        "grid-intensity-negative",
        "mode-serve",
        "max-time-0",
        "factory-wrong-type",
        "factory-raises",
        "nan-output",
    ],
)
def test_measure_bad_input(ws: Path, args: list[str], needle: str) -> None:
    check_cli_error(["measure", *args], needle=needle)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_measure_cuda_without_gpu(ws: Path) -> None:
    check_cli_error(["measure", "digits_cnn", "--device", "cuda"], needle="no CUDA GPU")


def test_measure_pickled_module(ws: Path) -> None:
    torch.save(nn.Linear(2, 2), ws / "m.pt")
    check_cli_error(["measure", str(ws / "m.pt")], needle="torch.export")


def test_measure_state_dict(ws: Path) -> None:
    torch.save(nn.Linear(2, 2).state_dict(), ws / "sd.pt")
    check_cli_error(["measure", str(ws / "sd.pt")], needle="state dict")


def test_measure_corrupt_pt2(ws: Path) -> None:
    (ws / "junk.pt2").write_bytes(os.urandom(512))
    check_cli_error(["measure", str(ws / "junk.pt2")], needle="not a torch.export archive")


def test_measure_missing_pt2(ws: Path) -> None:
    check_cli_error(["measure", str(ws / "nope.pt2")], needle="no such file")


def test_measure_dir_without_deployment(ws: Path) -> None:
    (ws / "d").mkdir()
    check_cli_error(["measure", str(ws / "d")], needle="without deployment.json")


def test_measure_corrupt_artifact(ws: Path) -> None:
    (ws / "d").mkdir()
    (ws / "d" / "deployment.json").write_text("{junk")
    check_cli_error(["measure", str(ws / "d")], needle="not valid JSON")


def test_measure_non_utf8_path(ws: Path) -> None:
    path = os.fsencode(ws) + b"/\xff.pt2"
    exe = Path(sys.executable).with_name("wattwise")
    env = {**os.environ, "WATTWISE_LOCK_DIR": str(ws / "lock")}
    proc = subprocess.run(
        [os.fsencode(exe), b"measure", path], capture_output=True, env=env, timeout=120
    )
    stderr = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 2, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), stderr
    assert "no such file" in lines[0]
    assert proc.stdout == b""


# --- optimize (all rejected before any training) ------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--task", "nosuch.module:f"], "nosuch"),
        (["--task", "nosuch"], "unknown task"),
        (["--max-accuracy-drop", "-1"], "max_accuracy_drop"),
        (["--scenario", "weird"], "scenario"),
        (["--trials", "0"], "trials"),
        (["--device", "tpu"], "tpu"),
    ],
    ids=["task-module", "task-name", "accuracy-drop", "scenario", "trials-0", "device-tpu"],
)
def test_optimize_bad_input(ws: Path, args: list[str], needle: str) -> None:
    out = ws / "out"
    check_cli_error(["optimize", *args, "--out", str(out)], needle=needle, out=out)


def test_optimize_unreachable_storage_hides_password(ws: Path) -> None:
    out = ws / "out"
    result = check_cli_error(
        ["optimize", "--storage", "postgresql://u:secret@127.0.0.1:1/x", "--out", str(out)],
        needle="storage",
        out=out,
    )
    assert "secret" not in result.output


def test_optimize_out_under_a_file(ws: Path) -> None:
    (ws / "afile").write_text("x")
    out = ws / "afile" / "out"
    check_cli_error(["optimize", "--out", str(out)], needle="afile")
    assert (ws / "afile").read_text() == "x"


# --- check --------------------------------------------------------------------------------


def _results(ws: Path) -> Path:
    doc = {
        "schema": 1,
        "baseline": {"accuracy": 0.98, "energy_j_per_item": 0.02, "energy_source": "measured:rapl"},
        "best": {
            "accuracy": 0.975,
            "accuracy_drop": 0.005,
            "energy_j_per_item": 0.01,
            "energy_source": "measured:rapl",
            "latency_ms_p90": 1.0,
        },
    }
    path = ws / "results.json"
    path.write_text(json.dumps(doc))
    return path


def test_check_missing_file(ws: Path) -> None:
    check_cli_error(["check", str(ws / "nofile.json")], needle="cannot read")


def test_check_not_json(ws: Path) -> None:
    (ws / "r.json").write_text("hello")
    check_cli_error(["check", str(ws / "r.json")], needle="not JSON")


def test_check_bad_quantity(ws: Path) -> None:
    check_cli_error(["check", str(_results(ws)), "--max-energy-per-item", "2xJ"], needle="2xJ")


def test_check_broken_budget_exits_1(ws: Path) -> None:
    check_cli_error(
        ["check", str(_results(ws)), "--max-energy-per-item", "1mJ"], code=1, needle="energy"
    )


def test_check_holds_exits_0(ws: Path) -> None:  # the control case: a good input passes
    result = CliRunner().invoke(app, ["check", str(_results(ws)), "--max-energy-per-item", "1J"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ok:")


# --- API ----------------------------------------------------------------------------------


def _one_line_error(exc: BaseException, needle: str) -> None:
    text = str(exc)
    assert "\n" not in text, text
    assert needle.lower() in text.lower(), text


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda m, x: wattwise.measure(m, x, batch_size=0), "batch_size"),
        (lambda m, x: wattwise.archs.create("nosuch"), "unknown architecture 'nosuch'"),
        (lambda m, x: wattwise.archs.create("mobilenetv3_small", width=0), "width"),
        (lambda m, x: wattwise.deploy(m, backend="tensorrt", example_input=x), "tensorrt"),
        (
            lambda m, x: wattwise.deploy(
                m, backend="onnxruntime", precision="fp16", example_input=x
            ),
            "fp16",
        ),
        (lambda m, x: wattwise.tasks.load_task("nosuch"), "unknown task 'nosuch'"),
        (lambda m, x: wattwise.Prune(ratio=1.2), "ratio"),
        (lambda m, x: wattwise.Prune(ratio=0.5, finetune_epochs=-1), "finetune_epochs"),
    ],
    ids=[
        "measure-batch-0",
        "create-unknown",
        "create-width-0",
        "deploy-tensorrt",
        "deploy-ort-fp16-cpu",
        "load-task-unknown",
        "prune-ratio-1.2",
        "prune-negative-epochs",
    ],
)
def test_api_bad_input(ws: Path, call, needle: str) -> None:  # type: ignore[no-untyped-def]
    model, x = nn.Linear(4, 2), torch.randn(1, 4)
    with pytest.raises(WattwiseError) as info:
        call(model, x)
    assert isinstance(info.value, ValueError)
    _one_line_error(info.value, needle)
    assert {p.name for p in ws.iterdir()} <= {"badmods.py", "lock", "__pycache__"}


# --- typer's own parameter validation -----------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["optimize", "--max-time-s", "0"], "--max-time-s"),
        (["optimize", "--seed", "-1"], "--seed"),
        (["measure", "digits_cnn", "--threads", "x"], "--threads"),
    ],
    ids=["optimize-max-time-0", "optimize-seed-negative", "measure-threads-x"],
)
def test_typer_validated_options(ws: Path, args: list[str], needle: str) -> None:
    out = ws / "out"
    check_cli_error(
        [*args, "--out", str(out)] if args[0] == "optimize" else args, needle=needle, out=out
    )
