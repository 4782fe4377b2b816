"""``wattwise measure`` and ``wattwise doctor``: output contracts, exit codes, one-line errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from wattwise.cli import EXIT_ERROR, EXIT_INTERRUPTED, app, error_line, exit_code_for
from wattwise.errors import CheckFailed, InputError
from wattwise.tasks import DigitsCNN

runner = CliRunner()


@pytest.fixture(autouse=True)
def _private_device_lock(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The harness holds a machine-wide lock per device while measuring; on a shared machine
    # these tests would otherwise queue behind other people's long measurements. The
    # subprocess runs inherit the variable.
    monkeypatch.setenv("WATTWISE_LOCK_DIR", str(tmp_path_factory.mktemp("locks")))


POSITIVE_FIELDS = (
    "energy_j_per_item",
    "energy_uncertainty",
    "latency_ms_p50",
    "latency_ms_p90",
    "latency_ms_p99",
    "throughput_items_per_s",
    "macs_per_item",
    "params",
    "co2e_g_per_million_items",
    "windows",
)


def _check_measurement(m: dict[str, Any], batch_size: int) -> None:
    assert m["batch_size"] == batch_size
    for field in POSITIVE_FIELDS:
        value = m[field]
        assert isinstance(value, int | float) and math.isfinite(value) and value > 0, field
    assert m["energy_above_idle_j_per_item"] >= 0
    assert m["energy_source"].startswith(("measured:", "estimated:"))


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wattwise", *args],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=cwd,
    )


def _assert_one_line_error(result: Any, *words: str) -> None:
    assert result.exit_code == EXIT_ERROR, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    assert result.stdout == ""
    for word in words:
        assert word in lines[0]


# --- help, version -------------------------------------------------------------------------


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys, runpy\n"
        "sys.argv = ['wattwise', '--help']\n"
        "try:\n    runpy.run_module('wattwise', run_name='__main__')\n"
        "except SystemExit as exc:\n    print('EXIT', exc.code)\n"
        "print('TORCH', 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "measure" in out.stdout and "doctor" in out.stdout
    assert "EXIT 0" in out.stdout and "TORCH False" in out.stdout


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.startswith("wattwise ")


# --- measure -------------------------------------------------------------------------------


@pytest.mark.slow
def test_measure_json_is_one_document_on_stdout() -> None:
    # One pinned thread: on a shared 2-core machine, two spinning OpenMP threads make the
    # harness's windows run several times longer than asked.
    args = ["digits_cnn", "--json", "--max-time-s", "1", "--batch-size", "1,4", "--threads", "1"]
    result = runner.invoke(app, ["measure", *args])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)  # the whole of stdout is the document
    assert doc["schema"] == 1
    assert doc["target"] == {
        "name": "digits_cnn",
        "kind": "builtin",
        "input_shape": [1, 1, 8, 8],
        "input": "(1, 1, 8, 8) float32",
        "input_source": "shape",
    }
    assert doc["hardware"]["cpus_allowed"] >= 1 and doc["hardware"]["torch"] == torch.__version__
    assert [m["batch_size"] for m in doc["measurements"]] == [1, 4]
    for m, size in zip(doc["measurements"], (1, 4), strict=True):
        _check_measurement(m, size)
        assert m["mode"] == "inference" and m["threads"] == 1


@pytest.mark.slow
def test_measure_table_for_people() -> None:
    args = ["digits", "--max-time-s", "1", "--mode", "train", "--threads", "1"]
    result = runner.invoke(app, ["measure", *args])
    assert result.exit_code == 0, result.output
    out = result.stdout
    for words in ("batch 1", "energy / item", "uncertainty", "latency p99", "MACs / item", "CO2e"):
        assert words in out
    assert "train" in out
    assert ("Energy is measured by" in out) or ("Energy is ESTIMATED by" in out)


@pytest.fixture
def user_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = f"ww_cli_models_{abs(hash(tmp_path)) % 10**8}"
    (tmp_path / f"{name}.py").write_text(
        "from torch import nn\n"
        "class Raises(nn.Module):\n"
        "    default_input_size = (4,)\n"
        "    def forward(self, x):\n"
        "        raise RuntimeError('this model always fails\\nsecond line')\n"
        "def raises():\n    return Raises()\n"
        "def interrupted():\n    raise KeyboardInterrupt\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["nosuch_model"], ["unknown TARGET 'nosuch_model'"]),
        (["mobilenet_v3_small"], ["did you mean mobilenetv3_small"]),
        (["digits_cnn", "--input-shape", "1,3,8,8"], ["(1, 3, 8, 8)", "channels"]),
        (["digits_cnn", "--input-shape", "1;3"], ["--input-shape"]),
        (["digits_cnn", "--batch-size", "0"], ["--batch-size"]),
        (["digits_cnn", "--device", "cuda"], ["cuda", "no CUDA GPU"]),
        (["digits_cnn", "--device", "tpu"], ["device"]),
        (["digits_cnn", "--mode", "serve"], ["--mode"]),
        (["{models}:raises"], ["this model always fails", "RuntimeError"]),
        (["{tmp}/garbage.pt2"], ["garbage.pt2", "not a torch.export archive"]),
        (["{tmp}/absent.pt2"], ["no such file"]),
        (["{tmp}/model.pt"], ["pickled model", "torch.export"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    user_models: str, tmp_path: Path, args: list[str], words: list[str]
) -> None:
    (tmp_path / "garbage.pt2").write_bytes(b"\x00\x01 not a program")
    torch.save(DigitsCNN(), str(tmp_path / "model.pt"))
    args = [a.format(models=user_models, tmp=tmp_path) for a in args]
    result = runner.invoke(app, ["measure", *args, "--max-time-s", "1"])
    _assert_one_line_error(result, *words)


def test_debug_shows_the_traceback() -> None:
    result = runner.invoke(app, ["--debug", "measure", "nosuch_model"])
    assert result.exit_code == EXIT_ERROR
    assert "Traceback" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: unknown TARGET")


def test_ctrl_c_exits_130(user_models: str) -> None:
    result = runner.invoke(app, ["measure", f"{user_models}:interrupted"])
    assert result.exit_code == EXIT_INTERRUPTED
    assert result.stderr.strip() == "error: interrupted"


def test_exit_codes_and_lines_for_other_errors() -> None:
    assert exit_code_for(CheckFailed("energy 3 mJ > 2 mJ")) == 1
    assert exit_code_for(InputError("bad")) == EXIT_ERROR
    line = error_line(RuntimeError("cuda kernel failed\nat line 2"))
    assert line.startswith("internal error (RuntimeError: cuda kernel failed at line 2)")
    assert "--debug" in line


@pytest.mark.slow
def test_real_process_digits_json(monkeypatch: pytest.MonkeyPatch) -> None:
    # The JSON contract of a real process on its default threads, not the figures' precision:
    # 0.1 s windows (inherited by the subprocess) and a 1 s cap, not 0.5 s windows for 3 s.
    monkeypatch.setenv("WATTWISE_MIN_WINDOW_S", "0.1")
    out = _run("measure", "digits_cnn", "--json", "--max-time-s", "1")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["schema"] == 1 and doc["hardware"]["cpu_logical"] >= 1
    _check_measurement(doc["measurements"][0], 1)
    assert doc["measurements"][0]["params"] == sum(p.numel() for p in DigitsCNN().parameters())


@pytest.mark.slow
def test_real_process_mobilenetv3_small_at_224() -> None:
    out = _run(
        "measure",
        "mobilenetv3_small",
        "--batch-size",
        "1",
        "--json",
        "--max-time-s",
        "2",
        "--threads",
        "1",
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["target"]["input_shape"] == [1, 3, 224, 224]
    m = doc["measurements"][0]
    _check_measurement(m, 1)
    assert 40e6 < m["macs_per_item"] < 80e6  # MobileNetV3-Small: ~57 M MACs at 224×224


@pytest.mark.slow
def test_real_process_user_factory_from_cwd_with_prints(tmp_path: Path) -> None:
    # A module beside the user (not installed) whose code prints: in the parent and in the
    # measuring child alike, the prints go to stderr and stdout stays one JSON document.
    (tmp_path / "noisy_model.py").write_text(
        "from torch import nn\n"
        "print('importing')\n"
        "class Noisy(nn.Linear):\n"
        "    default_input_size = (4,)\n"
        "    def forward(self, x):\n"
        "        print('forward')\n"
        "        return super().forward(x)\n"
        "def build():\n    return Noisy(4, 3)\n"
    )
    out = _run(
        "measure",
        "noisy_model:build",
        "--json",
        "--max-time-s",
        "1",
        "--threads",
        "1",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads(out.stdout)
    assert doc["target"] == {
        "name": "noisy_model:build",
        "kind": "factory",
        "input_shape": [1, 4],
        "input": "(1, 4) float32",
        "input_source": "shape",
    }
    _check_measurement(doc["measurements"][0], 1)
    assert "forward" in out.stderr and "importing" in out.stderr


@pytest.mark.slow
def test_real_process_error_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "broken.pt2").write_bytes(b"nope")
    for args in (["digits_cnn", "--device", "cuda"], ["broken.pt2"]):
        out = _run("measure", *args, cwd=tmp_path)
        assert out.returncode == EXIT_ERROR
        assert out.stdout == ""
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr


# --- doctor --------------------------------------------------------------------------------


def test_doctor_json() -> None:
    result = runner.invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    meters = {(r["name"], r["device"]): r for r in doc["meters"]}
    assert meters[("estimate", "cpu")]["available"] is True
    nvml = [r for r in doc["meters"] if r["name"] == "nvml"]
    if not torch.cuda.is_available():
        assert nvml and all(not r["available"] and r["reason"] for r in nvml)
    backends = {(r["name"], r["device"]): r for r in doc["backends"]}
    assert {"eager", "eager_cl", "compile", "onnxruntime"} <= {name for name, _ in backends}
    assert backends["eager", "cpu"]["available"] is True
    assert backends["eager", "cuda"]["available"] is torch.cuda.is_available()
    assert all(r["available"] or r["reason"] for r in doc["backends"])


def test_doctor_table() -> None:
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 0, result.output
    for word in ("estimate", "nvml", "rapl", "eager", "onnxruntime", "available"):
        assert word in result.stdout
