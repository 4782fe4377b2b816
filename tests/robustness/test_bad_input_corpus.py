"""A corpus of bad inputs: each must fail up front with one ``error:`` line, the documented exit
code (2 bad input, 1 a broken ``wattwise check`` budget) and nothing half-written left behind."""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from typer.testing import CliRunner, Result

import wattwise
from wattwise.cli import app, error_line, exit_code_for
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


def small():
    from wattwise.tasks import DigitsCNN

    return DigitsCNN(width=0.25)
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
    # Refused up front, before any training: one line, exit 2, nothing left.
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert len(_error_lines(result.stderr)) == 1
    assert "afile is not a directory" in result.stderr
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
        (["--confirm-rounds", "2"], "at least 3"),
        (["--confirm-rounds", "1"], "at least 3"),
        (["--grid-intensity", "-3"], "non-negative"),
        (["--grid-intensity", "nan"], "finite"),
        (["--price-per-kwh", "-0.1"], "price per kwh"),
        (["--price-per-kwh", "inf"], "finite"),
        (["--currency", "DOLLARS-OF-THE-REALM"], "currency"),
    ],
    ids=[
        "task-module",
        "task-name",
        "accuracy-drop",
        "scenario",
        "trials-0",
        "device-tpu",
        "confirm-rounds-2",
        "confirm-rounds-1",
        "grid-negative",
        "grid-nan",
        "price-negative",
        "price-inf",
        "currency-long",
    ],
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


# --- where the output cannot go: a file-size limit, a read-only directory -----------------

FSIZE_LIMIT = 1024  # bytes; every result document is larger


def _limit_file_size() -> None:
    """Run in the child before exec: files may grow to ``FSIZE_LIMIT`` bytes (``ulimit -f``),
    and a write past that fails with EFBIG instead of killing the process (SIGXFSZ ignored, as
    the Python interpreter does at start-up anyway)."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (FSIZE_LIMIT, FSIZE_LIMIT))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _run_cli(
    ws: Path,
    args: list[str],
    *,
    stdout: Any = subprocess.PIPE,
    preexec_fn: Callable[[], None] | None = None,
    prefix: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """The real ``wattwise`` in a subprocess (a rlimit or a mount namespace needs one)."""
    full_env = {**(os.environ if env is None else env)}
    full_env.update(WATTWISE_LOCK_DIR=str(ws / "lock"), PYTHONPATH=str(ws))
    return subprocess.run(
        [*prefix, sys.executable, "-m", "wattwise", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        env=full_env,
        preexec_fn=preexec_fn,
        timeout=600,
        check=False,
    )


def check_process_error(
    proc: subprocess.CompletedProcess[bytes], *, needle: str, code: int = 2
) -> str:
    """The ``check_cli_error`` contract for a real process: one ``error:`` line, the exit code,
    no traceback. Returns the line."""
    stderr = proc.stderr.decode("utf-8", "replace")
    assert "Traceback" not in stderr, stderr
    assert proc.returncode == code, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one stderr line, got: {stderr!r}"
    assert lines[0].startswith("error:"), lines[0]
    assert needle.lower() in lines[0].lower(), lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("args", "before", "unbuffered"),
    [
        (["doctor", "--json"], b"", "1"),
        (["doctor", "--json"], b"", None),
        (["doctor", "--json"], b"an earlier run's line\n", "1"),
    ],
    ids=["unbuffered-new-file", "buffered-new-file", "appending"],
)
def test_json_to_stdout_under_a_file_size_limit(
    ws: Path, args: list[str], before: bytes, unbuffered: str | None
) -> None:
    # PYTHONUNBUFFERED=1 once made the short write vanish silently: exit 0, half a document.
    out = ws / "result.json"
    out.write_bytes(before)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = unbuffered
    with out.open("ab") as fh:
        proc = _run_cli(ws, args, stdout=fh, preexec_fn=_limit_file_size, env=env)
    line = check_process_error(proc, needle="file too large")
    assert str(out) in line and "ulimit -f" in line and str(FSIZE_LIMIT) in line, line
    # Cut back to what it held: no half JSON document for a script to read.
    assert out.read_bytes() == before
    assert sorted(p.name for p in ws.iterdir()) == ["badmods.py", "lock", "result.json"]


@pytest.mark.slow
def test_measure_json_to_stdout_under_a_file_size_limit(ws: Path) -> None:
    """The real measurement (child process included) under the limit: the result is lost,
    so the command must fail, and say where and why."""
    out = ws / "m.json"
    with out.open("wb") as fh:
        proc = _run_cli(
            ws,
            ["measure", "digits_cnn", "--max-time-s", "0.5", "--json"],
            stdout=fh,
            preexec_fn=_limit_file_size,
        )
    line = check_process_error(proc, needle="file too large")
    assert str(out) in line, line
    assert out.read_bytes() == b""


@pytest.mark.slow
def test_compress_under_a_file_size_limit(ws: Path) -> None:
    (ws / "r.yaml").write_text(RECIPE_OK)
    out = ws / "out"
    proc = _run_cli(
        ws,
        ["compress", "badmods:small", "--recipe", str(ws / "r.yaml"), "--out", str(out)],
        preexec_fn=_limit_file_size,
    )
    assert proc.returncode != -signal.SIGABRT, "the process aborted"
    line = check_process_error(proc, needle="file too large")
    assert str(out) in line
    assert_no_leftovers(out)


def _read_only(folder: Path) -> list[str]:
    """A command prefix under which ``folder`` is read-only for real, root included.

    As root, mode 0o500 stops nothing, so the folder is bind-mounted read-only in a private
    mount namespace (``unshare --mount``): the child sees EROFS, nobody else sees the mount.
    Other users get ``chmod 0o500``. Skips, saying why, where neither can be done.
    """
    if os.geteuid() != 0:
        folder.chmod(0o500)
        return []
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        pytest.skip(
            "root ignores chmod, and unshare/mount are not here to mount a folder read-only"
        )
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
    prefix = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"]
    probe = subprocess.run(
        [*prefix, str(folder), "touch", str(folder / "probe")], capture_output=True, check=False
    )
    if probe.returncode == 0 or b"Read-only" not in probe.stderr:
        pytest.skip(f"cannot mount a folder read-only here: {probe.stderr.decode().strip()}")
    return [*prefix, str(folder)]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["optimize", "--out", "{ro}/out"], "cannot create output directory {ro}/out"),
        (
            ["compress", "badmods:small", "--recipe", "{ws}/r.yaml", "--out", "{ro}/out"],
            "cannot write to {ro}",
        ),
    ],
    ids=["optimize", "compress"],
)
def test_output_in_a_read_only_directory(ws: Path, args: list[str], needle: str) -> None:
    ro = ws / "ro"
    ro.mkdir()
    (ws / "r.yaml").write_text(RECIPE_OK)
    prefix = _read_only(ro)
    try:
        proc = _run_cli(ws, [a.format(ws=ws, ro=ro) for a in args], prefix=prefix)
    finally:
        ro.chmod(0o755)
    line = check_process_error(proc, needle=needle.format(ws=ws, ro=ro))
    assert "read-only file system" in line.lower() or "permission denied" in line.lower(), line
    assert list(ro.iterdir()) == []
    assert not [p.name for p in ws.iterdir() if p.name.startswith(".out")]


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (OSError(errno.EFBIG, "File too large", "out/report.html"), "out/report.html: File too"),
        (OSError(errno.ENOSPC, "No space left on device", "o/r.json"), "o/r.json: No space"),
        (OSError(errno.EDQUOT, "Disk quota exceeded", "o/r.json"), "Disk quota exceeded"),
        (OSError(errno.EROFS, "Read-only file system"), "the output: Read-only"),
    ],
    ids=["efbig", "enospc", "edquot", "erofs-no-name"],
)
def test_storage_errors_are_plain_lines_not_internal_errors(error: OSError, words: str) -> None:
    line = error_line(error)
    assert line.startswith("cannot write "), line
    assert words in line and "internal error" not in line and "\n" not in line
    assert exit_code_for(error) == 2
    # Anything else from the OS is still reported as ours to fix; EACCES too, as reading a
    # file raises it as well as writing one.
    assert error_line(OSError(errno.EBADF, "Bad file descriptor")).startswith("internal error")
    assert error_line(PermissionError(errno.EACCES, "Permission denied", "/x")).startswith(
        "internal error"
    )


def test_atomic_write_names_the_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from wattwise._fs import atomic_write_text, storage_error_line\n"
        "try:\n"
        "    atomic_write_text(Path(sys.argv[1]), 'x' * 5000)\n"
        "except OSError as exc:\n"
        "    print(storage_error_line(exc))\n"
    )
    target = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(target)],
        capture_output=True,
        text=True,
        preexec_fn=_limit_file_size,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        f"cannot write {target}: File too large "
        f"(this process may write files of at most {FSIZE_LIMIT} bytes: ulimit -f)"
    )
    assert list(tmp_path.iterdir()) == []


_REPORT_UNDER_LIMIT = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from report_study import make_study
from wattwise.report import render_report
from wattwise._fs import storage_error_line
results, trials = make_study()
try:
    render_report(results, trials, Path(sys.argv[1]))
except OSError as exc:
    print("error:", storage_error_line(exc), file=sys.stderr)
    sys.exit(2)
"""


@pytest.mark.parametrize("limit", [1, 8 * 1024])
def test_report_under_a_file_size_limit_writes_all_three_files_or_none(
    ws: Path, limit: int
) -> None:
    """The report is three files: past the limit on any of them, none is left (1 byte: the
    first fails; 8 kB: results.json fits, the page does not), nor the folder made for them."""
    out = ws / "rep"
    reports = Path(__file__).resolve().parent.parent / "report"

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    proc = subprocess.run(
        [sys.executable, "-c", _REPORT_UNDER_LIMIT, str(out), str(reports)],
        capture_output=True,
        preexec_fn=limited,
        timeout=120,
        check=False,
    )
    line = check_process_error(proc, needle="file too large")
    assert str(out) in line
    assert_no_leftovers(out)


# --- check: results files that are hostile, huge, endless or wrong -----------------------


def _best_with(ws: Path, **figures: Any) -> Path:
    """A results.json whose best deployment has ``figures`` (written as given, NaN included)."""
    doc = json.loads(_results(ws).read_text())
    doc["best"].update(figures)
    path = ws / "results.json"
    path.write_text(json.dumps(doc))  # allow_nan: NaN and Infinity as bare words, as others write
    return path


@pytest.mark.parametrize(
    ("figures", "needle"),
    [
        ({"energy_j_per_item": -5.0}, "best.energy_j_per_item is -5.0; it must be greater than 0"),
        ({"energy_j_per_item": 0}, "best.energy_j_per_item is 0; it must be greater than 0"),
        ({"energy_j_per_item": float("nan")}, "best.energy_j_per_item is nan, not a finite"),
        ({"energy_j_per_item": float("inf")}, "best.energy_j_per_item is inf, not a finite"),
        ({"energy_j_per_item": "0.001"}, "must be a number, got a string"),
        ({"energy_j_per_item": True}, "must be a number, got a boolean"),
        ({"energy_uncertainty": -0.4}, "best.energy_uncertainty is -0.4"),
        ({"accuracy_drop": float("nan")}, "best.accuracy_drop is nan"),
        ({"energy_source": "measured:rapl\x1b[2J\nok: all fine"}, "short source label"),
        ({"energy_source": "x" * 100_000}, "short source label"),
    ],
    ids=[
        "energy-negative",
        "energy-zero",
        "energy-nan",
        "energy-infinite",
        "energy-string",
        "energy-boolean",
        "uncertainty-negative",
        "drop-nan",
        "source-escape-sequence",
        "source-100k-chars",
    ],
)
def test_check_refuses_broken_figures(ws: Path, figures: dict[str, Any], needle: str) -> None:
    # Exit 2 (a broken file), not 0 (−5 J/item once passed the gate) nor 1 (NaN read "missing").
    path = _best_with(ws, **figures)
    result = check_cli_error(["check", str(path), "--max-energy-per-item", "1J"], needle=needle)
    assert "\x1b" not in result.output and len(result.stderr) < 400


def test_check_refuses_a_broken_figure_even_when_not_gated(ws: Path) -> None:
    # The ok: line prints the energy: a gate on accuracy alone must not print "-5 J/item".
    path = _best_with(ws, energy_j_per_item=-5)
    check_cli_error(["check", str(path), "--max-accuracy-drop", "0.05"], needle="greater than 0")


def _fifo(ws: Path) -> Path:
    path = ws / "fifo"
    os.mkfifo(path)
    return path


def _sparse(ws: Path, size: int) -> Path:
    """A file of ``size`` bytes that takes no disk (a hole): reading it whole would."""
    path = ws / "huge"
    with path.open("wb") as fh:
        fh.truncate(size)
    return path


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda ws: Path("/dev/zero"), "/dev/zero: it is a character device, not a regular file"),
        (_fifo, "it is a FIFO (named pipe), not a regular file"),
        (lambda ws: _sparse(ws, 1 << 30), "it holds 1 GiB, more than the 64 MiB wattwise reads"),
        (lambda ws: ws, "it is a directory"),
    ],
    ids=["dev-zero", "fifo", "1-gib-file", "directory"],
)
def test_check_reads_only_bounded_regular_files(
    ws: Path, make: Callable[[Path], Path], needle: str
) -> None:
    check_cli_error(["check", str(make(ws)), "--max-energy-per-item", "1J"], needle=needle)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b'{"schema": ' + b"1" * 5001 + b"}", "a number with too many digits"),
        (b"[" * 100_000 + b"]" * 100_000, "nests deeper than 64 levels"),
        (b'[{"schema": 1}]', "expected a JSON object, got a list"),
        (b'"results"', "expected a JSON object, got a string"),
        ('{"schema": 1}'.encode("utf-16"), "UTF-16"),
        (b'{"schema": 1, "note": "caf\xe9"}', "not UTF-8 text"),
        (b'{"schema": 1, "best": {}, "baseline": {}, "best": null}', "has the key 'best' twice"),
        (b'{"schema": true, "best": null, "baseline": {}}', "results schema True"),
        (b'{"schema": 1, "best": [1], "baseline": {}}', "'best' must be a JSON object or null"),
    ],
    ids=[
        "int-5001-digits",
        "brackets-100k-deep",
        "top-level-list",
        "top-level-string",
        "utf-16",
        "latin-1",
        "duplicate-keys",
        "schema-true",
        "best-is-a-list",
    ],
)
def test_check_bad_results_documents(ws: Path, content: bytes, needle: str) -> None:
    path = ws / "results.json"
    path.write_bytes(content)
    check_cli_error(["check", str(path), "--max-energy-per-item", "1J"], needle=needle)


def test_check_reads_a_results_file_with_a_bom(ws: Path) -> None:  # control: Windows editors
    path = _results(ws)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    result = CliRunner().invoke(app, ["check", str(path), "--max-energy-per-item", "1J"])
    assert result.exit_code == 0, result.output


# --- optimize --space: hostile YAML -------------------------------------------------------

BILLION_LAUGHS = "".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n',
        *(
            f"{b}: &{b} [{','.join([f'*{a}'] * 9)}]\n"
            for a, b in zip("abcdefgh", "bcdefghi", strict=True)
        ),
        "models: *i\ndeployments: *i\nbatch_sizes: [1]\n",
    ]
)


@pytest.mark.parametrize(
    ("space", "needle"),
    [
        (BILLION_LAUGHS, "uses a YAML alias (*name) at line 2"),
        ("models: !!python/object/apply:os.system [echo pwned]\n", "python/object/apply"),
        ("models: " + "[" * 100_000 + "]" * 100_000 + "\n", "nests deeper than 32 levels"),
        ("batch_sizes: [" + "9" * 5001 + "]\n", "a number with too many digits"),
        ("models: [{name: base}]\nmodels: []\n", "has the key 'models' twice (line 2)"),
        ("deployments: [" + "x" * 500_000 + "]\nmodels: [{name: b}]\nbatch_sizes: [1]\n", "…"),
    ],
    ids=[
        "billion-laughs",
        "python-tag",
        "brackets-100k-deep",
        "int-5001-digits",
        "duplicate-key",
        "500k-char-value",
    ],
)
def test_optimize_hostile_space_file(ws: Path, space: str, needle: str) -> None:
    assert len(BILLION_LAUGHS) < 700  # 9**9 "lol"s in 600 bytes: the case is the small size
    (ws / "space.yaml").write_text(space)
    out = ws / "out"
    result = check_cli_error(
        ["optimize", "--space", str(ws / "space.yaml"), "--out", str(out)], needle=needle, out=out
    )
    assert len(result.stderr) < 600
    assert not (ws / "pwned").exists()


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda ws: ws, "cannot read search space"),
        (lambda ws: Path("/dev/zero"), "it is a character device"),
        (_fifo, "it is a FIFO"),
        (lambda ws: _sparse(ws, 2 << 20), "more than the 1 MiB wattwise reads"),
    ],
    ids=["directory", "dev-zero", "fifo", "2-mib-file"],
)
def test_optimize_space_file_that_is_no_file(
    ws: Path, make: Callable[[Path], Path], needle: str
) -> None:
    out = ws / "out"
    check_cli_error(
        ["optimize", "--space", str(make(ws)), "--out", str(out)], needle=needle, out=out
    )


# --- optimize --out: a directory holding the user's own files -----------------------------


def _snapshot(folder: Path) -> dict[str, tuple[bytes | None, int]]:
    """Every entry under ``folder`` (links not followed) with its bytes and mtime in ns."""
    out: dict[str, tuple[bytes | None, int]] = {}
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        data = path.read_bytes() if path.is_file() and not path.is_symlink() else None
        out[str(path.relative_to(folder))] = (data, info.st_mtime_ns)
    return out


def _foreign_dir(ws: Path, files: Mapping[str, str]) -> Path:
    out = ws / "mine"
    for name, text in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    return out


@pytest.mark.parametrize(
    ("files", "needle"),
    [
        ({"artifact/notes.txt": "my notes"}, "artifact/notes.txt"),
        ({"report.html": "<p>my own page</p>"}, "report files (report.html)"),
        ({"thesis.tex": "x", "results.json": "{}"}, "thesis.tex"),
        ({".wattwise-out.json": "[1, 2"}, "not JSON"),
        ({".wattwise-out.json": '{"wattwise_output_dir": 1, "owns": ["../up"]}'}, "not a marker"),
        ({"evil\x1b[31m\nname": "x"}, "evil\\x1b[31m\\nname"),
    ],
    ids=[
        "artifact-notes",
        "foreign-report",
        "foreign-file",
        "damaged-marker",
        "marker-with-a-path",
        "escape-in-a-name",
    ],
)
def test_optimize_refuses_an_out_dir_holding_foreign_files(
    ws: Path, files: dict[str, str], needle: str
) -> None:
    out = _foreign_dir(ws, files)
    before = _snapshot(out)
    check_cli_error(["optimize", "--out", str(out)], needle=needle)
    assert _snapshot(out) == before  # byte-identical, same mtimes, nothing added


def test_optimize_out_is_a_link_to_a_foreign_dir(ws: Path) -> None:
    target = _foreign_dir(ws, {"artifact/notes.txt": "my notes"})
    link = ws / "link"
    link.symlink_to(target)
    before = _snapshot(target)
    check_cli_error(["optimize", "--out", str(link)], needle="artifact/notes.txt")
    assert _snapshot(target) == before


def test_optimize_out_holds_a_link_named_like_ours(ws: Path) -> None:
    out = ws / "mine"
    out.mkdir()
    (ws / "elsewhere.json").write_text("{}")
    (out / "results.json").symlink_to(ws / "elsewhere.json")
    check_cli_error(["optimize", "--out", str(out)], needle="did not write (results.json)")
    assert (ws / "elsewhere.json").read_text() == "{}"


def test_optimize_marker_that_is_a_link(ws: Path) -> None:
    out = ws / "mine"
    out.mkdir()
    (ws / "secret").write_text("x")
    (out / ".wattwise-out.json").symlink_to(ws / "secret")
    check_cli_error(["optimize", "--out", str(out)], needle="symbolic link")
