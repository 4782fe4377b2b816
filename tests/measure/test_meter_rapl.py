"""RAPL meter against a sysfs-shaped tree built in tmp_path (the layout of /sys/class/powercap)."""

from __future__ import annotations

import json
import os
import pwd
import select
import signal
import stat
import tempfile
from pathlib import Path

import pytest

from wattwise.errors import CheckFailed, UnavailableError
from wattwise.measure.meters import CounterError, RaplMeter, create_meter

RANGE_UJ = 262143328850  # an Intel package's max_energy_range_uj


def zone(root: Path, entry: str, name: str, energy_uj: int, max_uj: int = RANGE_UJ) -> Path:
    path = root / entry
    path.mkdir(parents=True)
    (path / "name").write_text(f"{name}\n")
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    (path / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return path


def set_uj(root: Path, entry: str, energy_uj: int) -> None:
    (root / entry / "energy_uj").write_text(f"{energy_uj}\n")


@pytest.fixture
def two_sockets(tmp_path: Path) -> Path:
    """Two packages, each with core and dram subzones, a psys zone and an MMIO duplicate."""
    (tmp_path / "intel-rapl").mkdir()  # the control type's own folder: not a zone
    zone(tmp_path, "intel-rapl:0", "package-0", 1_000_000)
    zone(tmp_path, "intel-rapl:0:0", "core", 500_000)
    zone(tmp_path, "intel-rapl:0:1", "dram", 200_000, 65712999613)
    zone(tmp_path, "intel-rapl:1", "package-1", 3_000_000)
    zone(tmp_path, "intel-rapl:1:0", "dram", 400_000, 65712999613)
    zone(tmp_path, "intel-rapl:2", "psys", 9_000_000)
    zone(tmp_path, "intel-rapl-mmio:0", "package-0", 7_000_000)
    return tmp_path


def test_sums_packages_and_dram_exactly(two_sockets: Path) -> None:
    meter = RaplMeter(root=two_sockets)
    assert meter.domains == ["package-0", "dram-0", "package-1", "dram-1"]
    mark = meter.start()
    set_uj(two_sockets, "intel-rapl:0", 1_000_000 + 12_500_000)  # 12.5 J
    set_uj(two_sockets, "intel-rapl:0:1", 200_000 + 1_250_000)  # 1.25 J
    set_uj(two_sockets, "intel-rapl:1", 3_000_000 + 7_000_001)  # 7.000001 J
    set_uj(two_sockets, "intel-rapl:1:0", 400_000 + 3)  # 3 µJ
    # Subzones inside the package, psys and the MMIO copy move too, and must not be added.
    set_uj(two_sockets, "intel-rapl:0:0", 99_000_000)
    set_uj(two_sockets, "intel-rapl:2", 99_000_000)
    set_uj(two_sockets, "intel-rapl-mmio:0", 99_000_000)
    reading = meter.stop(mark)
    assert reading.domains == {
        "package-0": 12.5,
        "dram-0": 1.25,
        "package-1": 7.000001,
        "dram-1": 3e-6,
    }
    assert reading.energy_j == pytest.approx(12.5 + 1.25 + 7.000001 + 3e-6, rel=1e-12)
    assert reading.time_s > 0
    assert meter.source == "measured:rapl"


def test_wraparound_adds_the_range_once(tmp_path: Path) -> None:
    zone(tmp_path, "intel-rapl:0", "package-0", RANGE_UJ - 1_000_000)
    meter = RaplMeter(root=tmp_path)
    mark = meter.start()
    set_uj(tmp_path, "intel-rapl:0", 2_000_000)  # 1 J before the wrap, 2 J after
    reading = meter.stop(mark)
    assert reading.energy_j == pytest.approx(3.0, rel=1e-12)
    assert reading.domains == {"package-0": pytest.approx(3.0, rel=1e-12)}


def test_counter_that_did_not_move_is_an_error_not_zero(tmp_path: Path) -> None:
    zone(tmp_path, "intel-rapl:0", "package-0", 5_000_000)
    meter = RaplMeter(root=tmp_path)
    with pytest.raises(CounterError, match="no counter moved"):
        meter.stop(meter.start())


def test_uses_one_control_type_only(tmp_path: Path) -> None:
    """TPMI (Granite Rapids) is read when there is no MSR interface; MMIO is a last resort."""
    zone(tmp_path, "intel-rapl-tpmi:0", "package-0", 0)
    zone(tmp_path, "intel-rapl-mmio:0", "package-0", 0)
    meter = RaplMeter(root=tmp_path)
    assert meter.domains == ["package-0"]
    assert meter.describe()["domains"] == ["package-0"]
    mark = meter.start()
    set_uj(tmp_path, "intel-rapl-tpmi:0", 4_000_000)
    set_uj(tmp_path, "intel-rapl-mmio:0", 9_000_000)
    assert meter.stop(mark).energy_j == 4.0


def test_multi_die_packages_are_each_counted(tmp_path: Path) -> None:
    zone(tmp_path, "intel-rapl:0", "package-0-die-0", 0)
    zone(tmp_path, "intel-rapl:1", "package-0-die-1", 0)
    zone(tmp_path, "intel-rapl:1:0", "dram", 0)
    assert RaplMeter(root=tmp_path).domains == [
        "package-0-die-0",
        "package-0-die-1",
        "dram-0-die-1",
    ]


def test_no_powercap_folder_is_unavailable_with_reason(tmp_path: Path) -> None:
    missing = tmp_path / "powercap"
    availability = RaplMeter.probe("cpu", root=missing)
    assert not availability
    assert availability.reason == f"no {missing} (not exposed by this VM or kernel)"
    with pytest.raises(UnavailableError, match="not exposed by this VM or kernel"):
        create_meter("rapl", "cpu", root=missing)


def test_powercap_without_rapl_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "dtpm").mkdir()
    availability = RaplMeter.probe("cpu", root=tmp_path)
    assert not availability
    assert "no RAPL package zone" in availability.reason


def test_not_a_cpu_device() -> None:
    assert "not 'cpu'" in RaplMeter.probe("cuda").reason
    with pytest.raises(UnavailableError):
        RaplMeter("cuda:0")


def test_unreadable_counter_gives_its_path(tmp_path: Path) -> None:
    """An energy_uj that cannot be read at all (here a folder: EISDIR) names the file."""
    path = zone(tmp_path, "intel-rapl:0", "package-0", 0)
    (path / "energy_uj").unlink()
    (path / "energy_uj").mkdir()
    availability = RaplMeter.probe("cpu", root=tmp_path)
    assert not availability
    assert availability.reason.startswith(f"cannot read {path / 'energy_uj'}: ")
    with pytest.raises(UnavailableError, match="cannot read"):
        RaplMeter(root=tmp_path)


def _probe_and_create(root: Path) -> tuple[bool, str, str]:
    """The probe's verdict and reason, and the UnavailableError that creating the meter raises."""
    found = RaplMeter.probe("cpu", root=root)
    try:
        create_meter("rapl", "cpu", root=root)
    except UnavailableError as exc:
        return found.ok, found.reason, str(exc)
    return found.ok, found.reason, "no error"


def _probe_as(uid: int, gid: int, root: Path) -> tuple[bool, str, str]:
    """Run :func:`_probe_and_create` in a forked child that has dropped to ``uid``/``gid``."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            os.write(write_end, json.dumps(_probe_and_create(root)).encode())
            code = 0
        except BaseException as exc:
            os.write(write_end, json.dumps(["error", repr(exc)]).encode())
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        # A fork of a multi-threaded process can deadlock in the child: never wait forever.
        ready, _, _ = select.select([pipe], [], [], 30.0)
        if not ready:
            os.kill(pid, signal.SIGKILL)
        answer = json.loads((ready and pipe.read()) or '["error", "the child hung"]')
    os.waitpid(pid, 0)
    if answer[0] == "error":
        pytest.skip(f"cannot drop to an unprivileged user here: {answer[1]}")
    return bool(answer[0]), str(answer[1]), str(answer[2])


def test_permission_denied_says_root_or_udev_is_needed() -> None:
    """The PLATYPUS case: energy_uj is mode 0400 root. Root reads through any mode, so when
    the tests run as root the probe runs in a forked child that drops to ``nobody``."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        root.chmod(0o755)  # the unprivileged child must be able to walk to the file
        path = zone(root, "intel-rapl:0", "package-0", 123)
        for part in (path, path / "name", path / "max_energy_range_uj"):
            part.chmod(part.stat().st_mode | stat.S_IROTH | stat.S_IXOTH)
        (path / "energy_uj").chmod(0o400)
        if os.geteuid() == 0:
            try:
                nobody = pwd.getpwnam("nobody")
            except KeyError:
                pytest.skip("no user 'nobody' to drop to")
            ok, reason, error = _probe_as(nobody.pw_uid, nobody.pw_gid, root)
        else:
            (path / "energy_uj").chmod(0o000)
            ok, reason, error = _probe_and_create(root)
    expected = (
        f"permission denied reading {path / 'energy_uj'} (root or a udev rule is needed since "
        "the PLATYPUS fix, CVE-2020-8694)"
    )
    assert not ok
    assert reason == expected
    assert error == f"rapl meter: {expected}"


def test_counter_error_is_not_a_check_failure() -> None:
    # The CLI maps CheckFailed to exit 1; a broken counter must not look like a broken budget.
    assert not issubclass(CounterError, CheckFailed)
