"""GPU power limits: set for a block, put back always, and put back after a crash.

NVML cannot exist on a machine without an NVIDIA driver, so the CPU tests drive the logic
through :class:`FileControl`, a power control whose "board" is a JSON file (it survives the
process that sets it, as a GPU's limit does). The ``gpu`` tests use the real NVML."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from wattwise.errors import InputError, UnavailableError
from wattwise.measure._power_limit import (
    NvmlPowerControl,
    power_limit,
    power_limit_availability,
    restore_orphaned_limits,
)

HERE = Path(__file__).parent


class FileControl:
    """A board whose limit lives in ``path``: range 100-700 W, default 700 W."""

    def __init__(self, path: Path, key: str = "GPU-file-0") -> None:
        self.path, self._key = Path(path), key
        if not self.path.exists():
            self.path.write_text(json.dumps({"limit_w": 700.0}))

    def key(self) -> str:
        return self._key

    def constraints_w(self) -> tuple[float, float, float]:
        return 100.0, 700.0, 700.0

    def get_w(self) -> float:
        return float(json.loads(self.path.read_text())["limit_w"])

    def set_w(self, watts: float) -> None:
        self.path.write_text(json.dumps({"limit_w": float(watts)}))


def test_a_limit_holds_for_the_block_and_is_put_back(tmp_path: Path) -> None:
    board = FileControl(tmp_path / "board.json")
    with power_limit(300, control=board, state_dir=tmp_path / "state") as set_to:
        assert set_to == 300 and board.get_w() == 300
        assert len(list((tmp_path / "state").glob("*.json"))) == 1  # the record of 700 W
    assert board.get_w() == 700
    assert not list((tmp_path / "state").glob("*.json"))


def test_an_exception_in_the_block_still_puts_it_back(tmp_path: Path) -> None:
    board = FileControl(tmp_path / "board.json")
    with (
        pytest.raises(RuntimeError, match="boom"),
        power_limit(250, control=board, state_dir=tmp_path / "state"),
    ):
        raise RuntimeError("boom")
    assert board.get_w() == 700


def test_none_changes_nothing_and_out_of_range_is_refused(tmp_path: Path) -> None:
    board = FileControl(tmp_path / "board.json")
    with power_limit(None, control=board, state_dir=tmp_path / "state") as set_to:
        assert set_to is None
    with (
        pytest.raises(InputError, match="outside this GPU's range 100-700 W"),
        power_limit(50, control=board, state_dir=tmp_path / "state"),
    ):
        pass
    assert board.get_w() == 700
    assert not (tmp_path / "state").exists() or not list((tmp_path / "state").iterdir())


def _child(tmp_path: Path, body: str) -> subprocess.Popen[str]:
    code = "\n".join(
        [
            "import os, signal, sys, time",
            f"sys.path.insert(0, {str(HERE)!r})",
            "from test_power_limit import FileControl",
            "from wattwise.measure._power_limit import power_limit",
            f"board = FileControl({str(tmp_path / 'board.json')!r})",
            f"with power_limit(300, control=board, state_dir={str(tmp_path / 'state')!r}):",
            "    print('set', flush=True)",
            f"    {body}",  # inside the block: the limit is still set
        ]
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_a_limit_left_by_a_killed_process_is_restored(tmp_path: Path) -> None:
    board = FileControl(tmp_path / "board.json")
    proc = _child(tmp_path, "os.kill(os.getpid(), signal.SIGKILL)")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err
    assert out.strip() == "set"
    assert board.get_w() == 300  # nothing in the dead process could put it back
    said = restore_orphaned_limits(
        state_dir=tmp_path / "state", control_for=lambda key: FileControl(tmp_path / "board.json")
    )
    assert board.get_w() == 700
    assert len(said) == 1 and "restored to 700 W" in said[0] and str(proc.pid) in said[0]
    assert not list((tmp_path / "state").glob("*.json"))
    assert restore_orphaned_limits(state_dir=tmp_path / "state") == []  # nothing left


def test_a_live_holder_keeps_its_limit_and_its_gpu(tmp_path: Path) -> None:
    board = FileControl(tmp_path / "board.json")
    proc = _child(tmp_path, "time.sleep(60)")
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "set"
        assert (
            restore_orphaned_limits(state_dir=tmp_path / "state", control_for=lambda key: board)
            == []
        )
        assert board.get_w() == 300
        with (
            pytest.raises(UnavailableError, match=f"held by process {proc.pid}"),
            power_limit(200, control=board, state_dir=tmp_path / "state"),
        ):
            pass
        assert board.get_w() == 300
    finally:
        proc.send_signal(signal.SIGTERM)  # no handler: it dies without restoring
        proc.communicate(timeout=60)
    restore_orphaned_limits(state_dir=tmp_path / "state", control_for=lambda key: board)
    assert board.get_w() == 700


def test_a_hostile_record_is_ignored(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "junk.json").write_text("[1, 2, 3]")
    (state / "huge.json").write_bytes(b"{" + b" " * 10_000)
    assert restore_orphaned_limits(state_dir=state, control_for=lambda key: pytest.fail()) == []


def test_without_a_gpu_doctor_says_why() -> None:
    reason = power_limit_availability("cpu").reason
    assert "CUDA device" in reason
    if not os.path.exists("/dev/nvidiactl"):
        assert not power_limit_availability("cuda")


@pytest.mark.gpu
def test_nvml_limit_is_set_and_put_back_even_after_kill_9(tmp_path: Path) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    if not (available := power_limit_availability("cuda")):
        pytest.skip(f"power limits cannot be set here: {available.reason}")
    board = NvmlPowerControl("cuda")
    before = board.get_w()
    low, _high, default = board.constraints_w()
    target = max(low, round(default * 0.7))
    with power_limit(target, "cuda", state_dir=tmp_path):
        assert abs(board.get_w() - target) < 1
    assert abs(board.get_w() - before) < 1
    code = textwrap.dedent(
        f"""
        import os, signal
        from wattwise.measure._power_limit import power_limit
        with power_limit({target}, "cuda", state_dir={str(tmp_path)!r}):
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert abs(board.get_w() - target) < 1
    said = restore_orphaned_limits(state_dir=tmp_path)
    assert len(said) == 1 and "restored" in said[0]
    assert abs(board.get_w() - before) < 1
