"""Faults (issue "Robustness", part 2): a search survives what kills processes and servers.

1. ``kill -9`` of ``wattwise optimize`` at six random moments (seeded), rerunning each time: the
   SQLite file is never corrupt, no completed trial is lost or changed, every trial in flight at
   a kill is failed as interrupted and run again, and the last run finishes the budget.
2. A worker on another machine dies mid-trial: this machine cannot see its process, so only its
   stale heartbeat tells; the trial is failed as interrupted and retried, never left RUNNING.
   And a trial no worker ever signed (no name, no heartbeat) is failed after the grace period.
3. The PostgreSQL server restarts under two workers: each worker carries on or stops with one
   ``error:`` line naming the storage (password redacted); rerun, the study completes with no
   trial lost, duplicated or left RUNNING.

The search helpers live in ``tests/search``; this folder's tests import them from there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

# pytest puts tests/search on sys.path only when it collects that folder
sys.path.append(str(Path(__file__).resolve().parents[1] / "search"))

from search_helpers import subprocess_env, wattwise_cmd
from user_tasks import HOLD_ENV, pid_file

from wattwise.search import ModelChoice, SearchSettings, SearchSpace, open_storage
from wattwise.search._liveness import (
    GRACE_PERIOD_ENV,
    counts_for_budget,
    is_interrupted,
    recover_dead_trials,
)
from wattwise.search._objective import task_id
from wattwise.search._space import params_key
from wattwise.search._study import BASELINE_ATTR, open_study
from wattwise.tasks import load_task

optuna.logging.set_verbosity(optuna.logging.ERROR)


@pytest.fixture(autouse=True)
def _private_lock_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Other people's measurements on this machine may hold the shared CPU lock for minutes;
    these tests check recovery, not the lock, so they measure under their own."""
    monkeypatch.setenv("WATTWISE_LOCK_DIR", str(tmp_path_factory.mktemp("locks")))


@pytest.fixture
def reaper() -> Iterator[list[subprocess.Popen[Any]]]:
    """Processes a test starts; whatever is left of them when it ends (a failed assertion
    mid-way) is killed with its children, so it cannot load the machine for the next test."""
    procs: list[subprocess.Popen[Any]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            _reap(proc.pid)
            proc.wait(30)


# --------------------------------------------------------------------------- shared helpers


def _space(batch_sizes: tuple[int, ...]) -> SearchSpace:
    """The smallest useful space: the trained model, eager fp32, one thread, a few batch sizes
    (a trial of 0.3 s measurement then takes about 1 s: its child starts from the fork server)."""
    return SearchSpace(
        models=(ModelChoice("base"),),
        deployments=("eager/fp32",),
        batch_sizes=batch_sizes,
        threads=(1,),
    )


def _trials(storage: optuna.storages.BaseStorage, study: str) -> list[FrozenTrial]:
    """The study's trials as they stand; none while the study does not exist yet."""
    try:
        return optuna.load_study(study_name=study, storage=storage).get_trials()
    except KeyError:
        return []


def _completed(trials: list[FrozenTrial]) -> dict[int, FrozenTrial]:
    return {t.number: t for t in trials if t.state == TrialState.COMPLETE}


def _assert_intact(before: dict[int, FrozenTrial], after: list[FrozenTrial], story: str) -> None:
    """Every trial completed earlier is still complete, with the same candidate and figures."""
    now = {t.number: t for t in after}
    for number, old in before.items():
        new = now.get(number)
        assert new is not None, f"completed trial {number} vanished; {story}"
        assert new.state == TrialState.COMPLETE, f"trial {number} is {new.state.name}; {story}"
        assert new.values == old.values and new.params == old.params, f"trial {number}; {story}"
        assert new.user_attrs.get("figures") == old.user_attrs.get("figures"), story


def _retries(trials: list[FrozenTrial], number: int) -> list[FrozenTrial]:
    return [t for t in trials if t.user_attrs.get("retry_of") == number]


def _assert_retried(trials: list[FrozenTrial], number: int, story: str) -> None:
    """Trial ``number`` was failed as interrupted and its candidate ran again, once, until a run
    of it finished (a retry interrupted in its turn is followed to its own retry). A trial
    stopped before its candidate was chosen (no label yet) has none to run again."""
    by_number = {t.number: t for t in trials}
    seen = []
    while True:
        trial = by_number[number]
        seen.append(number)
        if not is_interrupted(trial):
            assert trial.state == TrialState.COMPLETE, f"retries {seen}: {trial.state}; {story}"
            return
        retries = _retries(trials, number)
        if "label" not in trial.user_attrs:
            assert not retries, f"trial {number} had no candidate to retry; {story}"
            return
        assert len(retries) == 1, f"trial {number} has retries {retries}; {story}"
        assert retries[0].params == trial.params, story
        number = retries[0].number


def _describe(trials: list[FrozenTrial]) -> str:
    """One word per trial, for failure messages: number, state, worker pid, why it failed."""
    words = []
    for t in trials:
        pid = t.user_attrs.get("worker", {}).get("pid", "unsigned")
        why = t.user_attrs.get("fail_reason") or t.user_attrs.get("retry_of", "")
        words.append(f"{t.number}:{t.state.name}:{pid}:{why}")
    return " ".join(words)


def _assert_finished_study(trials: list[FrozenTrial], budget: int, story: str) -> None:
    """The budget is used exactly, nothing is RUNNING, no candidate was counted twice."""
    states = [t.state for t in trials]
    assert TrialState.RUNNING not in states, f"left RUNNING: {_describe(trials)}; {story}"
    counted = [t for t in trials if counts_for_budget(t)]
    assert len(counted) == budget, f"{len(counted)} trials count, budget {budget}; {story}"
    assert all(t.state == TrialState.COMPLETE for t in counted), story
    keys = [params_key(t.params) for t in counted]
    assert len(set(keys)) == len(keys), f"a candidate was measured twice: {keys}; {story}"


def _reap(group: int) -> None:
    """Kill what is left of a killed process's group (its measuring child, orphaned by the
    kill -9, would otherwise run on and crowd the next run on a 2-core machine)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal.SIGKILL)


class _Clock:
    """Milestones of a test, in seconds since it started: for the story a failure tells."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.marks: list[str] = []

    def mark(self, what: str) -> None:
        self.marks.append(f"{what}@{time.monotonic() - self.start:.0f}s")

    def __str__(self) -> str:
        return ", ".join(self.marks)


def _wait_until(what: str, check: Callable[[], Any], procs: list[subprocess.Popen[Any]]) -> Any:
    """Poll ``check`` until it returns something truthy; fail if ``procs`` all exit first."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        if procs and all(p.poll() is not None for p in procs):
            raise AssertionError(f"{what}: never seen (exit codes {[p.poll() for p in procs]})")
        time.sleep(0.3)
    raise AssertionError(f"{what}: not seen within 300 s")


# --------------------------------------------------------------------------- 1. kill -9 x 6

KILL_SEED = int(os.environ.get("WATTWISE_FAULT_SEED", "20250611"))
# Six kills: three at a random moment of a run's life and three into a trial in flight. Ten
# (the first version) cost 4 s of run start-up each for no more: with this seed every kill after
# the first struck the same trial's retry mid-measurement again.
KILLS = 6
KILL_TRIALS = 3
KILL_SPACE = {
    "models": [{"name": "base"}],
    "deployments": ["eager/fp32"],
    "batch_sizes": [1, 4, 16, 64],
    "threads": [1],
}
# About how long each part of a run takes on an idle 2-core machine: a kill moment is a random
# fraction of (about) the life the next run would have, so kills land in every part of it.
# Every other kill instead waits for the run to start a trial and strikes a random moment into
# it: trials are short beside the rest of a run (children start in 0.05 s from the fork
# server), and the point is trials in flight at a kill.
KILL_MAX_TIME_S = 0.3
STARTUP_S, BASELINE_S, TRIAL_S, FINISH_S = 4.0, 7.0, 1.0, 3.0


@dataclasses.dataclass
class Kill:
    """One kill: when, where the run was (its last progress line), what the study held."""

    delay_s: float
    phase: str
    complete: int
    running: list[int]

    def __str__(self) -> str:
        return f"{self.delay_s:.1f}s/{self.phase}/done={self.complete}/running={self.running}"


class _SqliteStudy:
    """The kill test's study, read as the next run would read it; the storage is opened only
    once a run has made the file, so the test never creates its schema itself."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self._storage: optuna.storages.RDBStorage | None = None

    def load(self) -> optuna.Study | None:
        if self._storage is None and not self.db.exists():
            return None
        self._storage = self._storage or open_storage(f"sqlite:///{self.db}")
        try:
            return optuna.load_study(study_name="tiny-offline", storage=self._storage)
        except KeyError:  # the study does not exist yet
            return None

    def trials(self) -> list[FrozenTrial]:
        study = self.load()
        return study.get_trials() if study is not None else []

    def trials_left(self) -> int:
        """How many trials of the budget are still to finish."""
        return KILL_TRIALS - sum(1 for t in self.trials() if counts_for_budget(t))

    def window_s(self, baseline_s: float) -> float:
        """How long the next run would live if at most one trial were left (and its baseline,
        if still to measure, took ``baseline_s``): each run then gets about one trial further at
        most, and the kills spread over the whole search instead of bunching at its end."""
        study = self.load()
        trials = study.get_trials() if study is not None else []
        left = KILL_TRIALS - sum(1 for t in trials if counts_for_budget(t))
        baseline = 0 if study is not None and BASELINE_ATTR in study.user_attrs else baseline_s
        return STARTUP_S + baseline + min(left, 1) * TRIAL_S + FINISH_S


def _phase(stderr: Path, budget_done: bool) -> str:
    """Where a run was, from its last progress line on stderr and whether the budget was done."""
    lines = [line for line in stderr.read_text(errors="replace").splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    if not last:
        return "startup"
    if last.startswith("training and measuring the baseline"):
        return "baseline"
    if budget_done and last.startswith("baseline:"):
        return "report"  # nothing left to run, the artifact exported: writing the results
    if last.startswith("baseline:") or last.startswith("  trial "):
        return "sampling"  # between trials: the sampler, the database, the next child starting
    if last.startswith("["):
        return "measuring"
    if last.startswith("exporting"):
        return "export/report"
    return f"other: {last[:40]}"


def _check_sqlite(db: Path, story: str) -> None:
    """The file passes SQLite's own integrity check (rolling back a hot journal if need be)."""
    if not db.exists():
        return
    with contextlib.closing(sqlite3.connect(db, timeout=60)) as conn:
        result = conn.execute("PRAGMA integrity_check").fetchall()
    assert result == [("ok",)], f"database corrupt: {result}; {story}"


class _KillCampaign:
    """Runs of one ``wattwise optimize`` command, each killed with SIGKILL, and what the study
    must show after each kill."""

    def __init__(
        self, cmd: list[str], out: Path, rng: random.Random, spawned: list[subprocess.Popen[Any]]
    ) -> None:
        self.cmd, self.out, self.rng, self.spawned = cmd, out, rng, spawned
        self.env = subprocess_env()
        self.study = _SqliteStudy(out / "wattwise.db")
        self.kills: list[Kill] = []
        self.kept: dict[int, FrozenTrial] = {}  # every trial seen complete before a kill
        self.pending: list[int] = []  # in flight at a kill, not yet seen recovered
        self.interrupted: set[int] = set()  # every trial in flight at a kill
        self.baseline_s = BASELINE_S  # longer once a run is killed still measuring it

    def story(self) -> str:
        return f"seed {KILL_SEED}, kills {[str(k) for k in self.kills]}"

    def cycle(self, log: Path) -> None:
        """Start a run and kill it at a random moment of the life it would have (unless it ends
        first, which only a run with the budget done may)."""
        # (Once the budget is done no run starts a trial: every kill is then a random one.)
        mid_trial = len(self.kills) % 2 == 1 and self.study.trials_left() > 0
        delay = self.rng.uniform(0.05, 1.0) * self.study.window_s(self.baseline_s)
        if mid_trial:
            delay = self.rng.uniform(0.1, 0.9) * TRIAL_S  # after the run's first trial starts
        with log.open("w") as err:
            proc = subprocess.Popen(
                self.cmd,
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )
            self.spawned.append(proc)
            started = time.monotonic()
            while mid_trial and proc.poll() is None and time.monotonic() - started < 120:
                if any(line.startswith("[") for line in log.read_text().splitlines()):
                    break
                time.sleep(0.02)
            try:
                code = proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                code = None
            if mid_trial:
                delay = time.monotonic() - started  # the kill's moment in the run's life
            if code is not None:
                assert code == 0, f"a run exited {code}: {log.read_text()}; {self.story()}"
                return
            before = _completed(self.study.trials())
            phase = _phase(log, len(before) >= KILL_TRIALS)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
            _reap(proc.pid)
        self.check_after_kill(proc.pid, before)
        after = self.study.trials()
        running = [t.number for t in after if t.state == TrialState.RUNNING]
        self.kills.append(Kill(delay, phase, len(_completed(after)), running))
        if phase == "baseline":  # a busy machine: give the next run time to get past it
            self.baseline_s = max(self.baseline_s, 1.5 * (delay - STARTUP_S))
        self.pending += running
        self.interrupted.update(running)

    def check_after_kill(self, pid: int, before: dict[int, FrozenTrial]) -> None:
        """The file is sound, Optuna loads it, nothing completed is lost; and if the killed run
        got as far as a trial of its own, it had recovered the trials the previous kill left."""
        _check_sqlite(self.study.db, self.story())
        after = self.study.trials()
        self.kept.update(before)
        _assert_intact(self.kept, after, self.story())
        if any(t.user_attrs.get("worker", {}).get("pid") == pid for t in after):
            for number in self.pending:
                trial = next(t for t in after if t.number == number)
                assert is_interrupted(trial), f"trial {number} not recovered; {self.story()}"
                queued = bool(_retries(after, number)) or "label" not in trial.user_attrs
                assert queued, f"trial {number} not queued again; {self.story()}"
            self.pending.clear()

    def finish(self) -> subprocess.CompletedProcess[str]:
        """The last run, left alone."""
        return subprocess.run(self.cmd, env=self.env, capture_output=True, text=True, timeout=400)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_kill_9_at_six_random_moments_then_rerun_loses_nothing(
    tmp_path: Path, reaper: list[subprocess.Popen[Any]]
) -> None:
    out = tmp_path / "out"
    space = tmp_path / "space.yaml"
    space.write_text(json.dumps(KILL_SPACE))
    cmd = wattwise_cmd(
        "optimize",
        "--task",
        "search_tasks:tiny",
        "--trials",
        str(KILL_TRIALS),
        "--out",
        str(out),
        "--space",
        str(space),
        "--timeout-per-trial-s",
        "200",
        "--max-time-s",
        str(KILL_MAX_TIME_S),
    )
    runs = _KillCampaign(cmd, out, random.Random(KILL_SEED), reaper)
    clock = _Clock()
    for cycle in range(3 * KILLS):  # a run that ends before its kill is no kill
        if len(runs.kills) == KILLS:
            break
        runs.cycle(tmp_path / f"run{cycle}.err")
    assert len(runs.kills) == KILLS, runs.story()
    clock.mark(f"{KILLS} kills")

    final = runs.finish()
    clock.mark("last run")
    story = f"{runs.story()}; {clock}"
    assert final.returncode == 0, final.stdout + final.stderr + story
    assert f"trials: {KILL_TRIALS} of {KILL_TRIALS}" in final.stdout, final.stdout + story
    _check_sqlite(runs.study.db, story)
    trials = runs.study.trials()
    _assert_intact(runs.kept, trials, story)
    _assert_finished_study(trials, KILL_TRIALS, story)
    for number in runs.interrupted:
        _assert_retried(trials, number, story)
    doc = json.loads((out / "results.json").read_text())
    assert doc["trials"] == KILL_TRIALS and not doc["interrupted"], story
    assert doc["interrupted_trials"] == sum(1 for t in trials if is_interrupted(t)), story
    assert (out / "artifact" / "deployment.json").exists(), story
    # The point is trials in flight at a kill: with this seed several runs die mid-trial.
    assert runs.interrupted, f"no kill landed mid-trial; {story}"
    print(f"kill -9: {story}; kept {sorted(runs.kept)}, retried {sorted(runs.interrupted)}")


# --------------------------------------------------------------------------- PostgreSQL

PASSWORD = "s3cret-Pa55"  # the server trusts loopback, so any password works; none may leak


@dataclasses.dataclass
class Postgres:
    """A private PostgreSQL server (Debian's binaries, run as ``postgres``) that can restart."""

    bindir: Path
    root: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres:{PASSWORD}@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return _as_postgres(str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), *args)

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root / 'sock'} -c listen_addresses=127.0.0.1 "
            "-c max_connections=50"
        )
        done = self._ctl("-o", options, "-l", str(self.root / "log"), "-w", "start")
        assert done.returncode == 0, f"pg_ctl start: {done.stderr} {self._log()}"

    def stop(self, mode: str = "fast") -> None:
        done = self._ctl("-m", mode, "-w", "stop")
        assert done.returncode == 0, f"pg_ctl stop: {done.stderr} {self._log()}"

    def _log(self) -> str:
        log = self.root / "log"
        return log.read_text(errors="replace")[-500:] if log.exists() else ""


def _as_postgres(*cmd: str) -> subprocess.CompletedProcess[str]:
    """Run a server command as the ``postgres`` user (the server refuses to run as root)."""
    return subprocess.run(
        ["runuser", "-u", "postgres", "--", *cmd],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """A fresh server for this module's tests (its own, as one test restarts it)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.skip("PostgreSQL is not installed (make sysdeps installs it)")
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("starting PostgreSQL as the postgres user needs root and runuser")
    pytest.importorskip("psycopg2")
    root = Path(tempfile.mkdtemp(prefix="wattwise-pg-faults-", dir="/tmp"))
    (root / "sock").mkdir()
    os.chmod(root, 0o755)
    shutil.chown(root, "postgres")
    shutil.chown(root / "sock", "postgres")
    server = Postgres(Path(found[-1]).parent, root, _free_port())
    init = _as_postgres(found[-1], "-D", str(root / "data"), "-A", "trust", "-U", "postgres")
    assert init.returncode == 0, init.stderr
    server.start()
    try:
        yield server
    finally:
        server._ctl("-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def _new_study(
    url: str,
    name: str,
    trials: int,
    batch_sizes: tuple[int, ...],
    spec: str = "search_tasks:tiny",
    max_time_s: float = 0.3,
) -> None:
    """Create a study the way ``wattwise optimize --storage URL`` does, for workers to join."""
    task = load_task(spec)
    settings = SearchSettings(
        task_spec=spec,
        task_name=task.name,
        task_id=task_id(task, spec),
        scenario="offline",
        max_accuracy_drop=0.05,
        latency_p90_ms=None,
        trials=trials,
        space=_space(batch_sizes),
        max_time_s=max_time_s,
        timeout_per_trial_s=200,
    )
    open_study(open_storage(url), name, settings, url=url)


def _has_baseline(storage: optuna.storages.BaseStorage, study: str) -> bool:
    return BASELINE_ATTR in optuna.load_study(study_name=study, storage=storage).user_attrs


def _worker(
    spawned: list[subprocess.Popen[Any]],
    url: str,
    study: str,
    out: Path,
    *,
    launch: Sequence[str] = (),
    stderr: Any = subprocess.PIPE,
) -> subprocess.Popen[str]:
    """Start ``wattwise worker`` on the study (in its own process group, for killing); its
    stderr to a pipe, or to ``stderr`` (an open file, to read its progress while it runs)."""
    cmd = wattwise_cmd("worker", "--storage", url, "--study", study, "--out", str(out))
    proc = subprocess.Popen(
        [*launch, *cmd],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        start_new_session=True,
    )
    spawned.append(proc)
    return proc


# --------------------------------------------------------------------------- 2. lost worker

FAR_HOST = "far-away-host"
# Start a command with its own hostname (a UTS namespace): to the study it is a worker on
# another machine, so this machine's process check cannot vouch for it, dead or alive.
FAR_LAUNCH = [
    "unshare",
    "--uts",
    "--fork",
    "--",
    sys.executable,
    "-c",
    "import os, socket, sys; socket.sethostname(sys.argv[1]); os.execv(sys.argv[2], sys.argv[2:])",
    FAR_HOST,
]
GRACE_S = 6


def _heartbeat_stale(storage: optuna.storages.RDBStorage, study: str, trial_id: int) -> bool:
    """The trial's last heartbeat is older than the grace period, by the database's clock."""
    study_id = storage.get_study_id_from_name(study)
    return trial_id in storage._get_stale_trial_ids(study_id)


@pytest.mark.slow
@pytest.mark.timeout(450)
def test_worker_lost_on_another_machine_is_failed_by_its_heartbeat_and_retried(
    postgres: Postgres,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    reaper: list[subprocess.Popen[Any]],
) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is needed to run a worker under another hostname")
    monkeypatch.setenv(GRACE_PERIOD_ENV, str(GRACE_S))  # this process and the workers
    url, name, budget = postgres.url, "lost-worker", 1
    _new_study(url, name, budget, (1, 4, 16, 64))
    storage = open_storage(url)

    # The far worker is lost in the budget's only trial: on the trial count alone, every other
    # worker would take the study for done.
    far = _worker(reaper, url, name, tmp_path / "far", launch=FAR_LAUNCH)

    def far_mid_trial() -> FrozenTrial | None:
        trials = _trials(storage, name)
        mine = [t for t in trials if t.user_attrs.get("worker", {}).get("host") == FAR_HOST]
        live = [t for t in mine if t.state == TrialState.RUNNING and "label" in t.user_attrs]
        return live[0] if live else None

    clock = _Clock()
    victim = _wait_until("the far worker mid-trial", far_mid_trial, [far])
    os.killpg(far.pid, signal.SIGKILL)
    far.communicate(timeout=30)
    clock.mark("killed")
    study = optuna.load_study(study_name=name, storage=storage)
    assert recover_dead_trials(study) == []  # another host: its pid means nothing here
    assert study.trials[victim.number].state == TrialState.RUNNING
    _wait_until(
        "the lost trial's heartbeat going stale",
        lambda: _heartbeat_stale(storage, name, victim._trial_id),
        [],
    )
    clock.mark("stale")

    here = _worker(reaper, url, name, tmp_path / "here")
    stdout, stderr = here.communicate(timeout=400)
    clock.mark("rerun done")
    assert here.returncode == 0, stdout + stderr
    assert f"trials: {budget} of {budget}" in stdout, stdout + stderr
    trials = _trials(storage, name)
    lost = trials[victim.number]
    assert lost.state == TrialState.FAIL and is_interrupted(lost)
    _assert_retried(trials, victim.number, "the lost worker's trial")
    (retry,) = _retries(trials, victim.number)
    assert retry.user_attrs["worker"]["pid"] == here.pid
    _assert_finished_study(trials, budget, "after the lost worker")
    print(f"lost worker: trial {victim.number} retried as {retry.number}; {clock}")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_worker_killed_here_mid_trial_is_recovered_by_the_survivor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reaper: list[subprocess.Popen[Any]]
) -> None:
    """Two workers on this machine share a SQLite study whose budget is its one trial. The
    first is held inside that trial (in the user's model) while the second starts and finds
    the whole budget running elsewhere; then the first is killed with SIGKILL. The survivor
    must not take the running trial for done and exit short of the budget: it waits, sees the
    dead worker's process gone, fails the trial as interrupted and runs it again."""
    monkeypatch.setenv(GRACE_PERIOD_ENV, str(GRACE_S))  # beats every second: cheap to share
    hold = tmp_path / "hold"
    hold.write_text("")
    monkeypatch.setenv(HOLD_ENV, str(hold))
    url, name, budget = f"sqlite:///{tmp_path / 'study.db'}", "killed-here", 1
    _new_study(url, name, budget, (4,), spec="user_tasks:held")
    storage = open_storage(url)
    clock = _Clock()

    victim_worker = _worker(reaper, url, name, tmp_path / "w0")

    def held_mid_trial() -> FrozenTrial | None:
        trials = [t for t in _trials(storage, name) if t.state == TrialState.RUNNING]
        return trials[0] if trials and pid_file(hold).exists() else None

    victim = _wait_until("the first worker held mid-trial", held_mid_trial, [victim_worker])
    clock.mark("held")
    survivor_err = tmp_path / "w1.err"
    with survivor_err.open("w") as err:
        survivor = _worker(reaper, url, name, tmp_path / "w1", stderr=err)
    # The survivor prints the baseline's line as it enters its trial loop; given a moment there
    # it has seen the budget's only trial running, and must still be waiting, not gone.
    _wait_until(
        "the survivor in its trial loop",
        lambda: "baseline:" in survivor_err.read_text(),
        [survivor],
    )
    time.sleep(2)
    assert survivor.poll() is None, f"the survivor left: {survivor_err.read_text()}"
    clock.mark("survivor waiting")

    child = int(pid_file(hold).read_text())
    os.kill(victim_worker.pid, signal.SIGKILL)  # the worker alone: its child has PDEATHSIG
    victim_worker.communicate(timeout=30)
    hold.unlink()  # the retry may pass
    _wait_until("the held trial's child gone with its worker", lambda: not _pid_alive(child), [])
    clock.mark("killed")

    stdout, _ = survivor.communicate(timeout=200)
    clock.mark("survivor done")
    story = f"{clock}; stderr: {survivor_err.read_text()[-2000:]}"
    assert survivor.returncode == 0, stdout + story
    assert f"trials: {budget} of {budget}" in stdout, stdout + story
    trials = _trials(storage, name)
    story += f"; trials {_describe(trials)}"
    lost = trials[victim.number]
    assert lost.state == TrialState.FAIL and is_interrupted(lost), story
    assert "stopped mid-trial" in lost.user_attrs["fail_reason"], story
    _assert_retried(trials, victim.number, story)
    (retry,) = _retries(trials, victim.number)
    assert retry.user_attrs["worker"]["pid"] == survivor.pid, story
    _assert_finished_study(trials, budget, story)


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` is still a process here (a zombie counts as gone: it runs nothing)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_trial_never_signed_is_failed_after_the_grace_period(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What neither check above can see: a RUNNING trial with no worker's name and no heartbeat
    (left by a worker cut off in the instant between popping a queued trial and signing it, or
    by plain Optuna sharing the study). It must not stay RUNNING, holding the budget, for ever."""
    monkeypatch.setenv(GRACE_PERIOD_ENV, "2")
    url = f"sqlite:///{tmp_path / 'wattwise.db'}"
    _new_study(url, "unsigned", 1, (1, 4))
    plain = optuna.storages.RDBStorage(url)  # Optuna's own: it starts trials unsigned
    orphan = optuna.load_study(study_name="unsigned", storage=plain).ask()
    study = optuna.load_study(study_name="unsigned", storage=open_storage(url))
    assert "worker" not in study.trials[orphan.number].user_attrs
    assert recover_dead_trials(study) == []  # a moment old: it may be a live worker's
    recovered = _wait_until("the orphan recovered", lambda: recover_dead_trials(study), [])
    assert recovered == [orphan.number]
    trial = study.trials[orphan.number]
    assert trial.state == TrialState.FAIL and is_interrupted(trial)
    assert trial.user_attrs["fail_reason"] == "interrupted: its worker stopped as the trial started"
    assert not _retries(study.trials, orphan.number)  # it had no candidate yet


# --------------------------------------------------------------------------- 3. server restart

RESTART_TRIALS = 5
DOWN_S = 10.0
# Trials long enough (about 2.5 s) that the second worker, which starts once the first has
# measured the baseline, finds trials left to run beside it: its own start (torch, its fork
# server) takes longer than four trials of 0.3 s each did.
RESTART_MAX_TIME_S = 2.0


def _worker_outcome(proc: subprocess.Popen[str], out: tuple[str, str], postgres: Postgres) -> str:
    """Check one worker's end after the restart: carried on, or one clear line and exit != 0."""
    stdout, stderr = out
    assert PASSWORD not in stdout + stderr, "the storage password leaked"
    assert "Traceback" not in stderr, stderr
    if proc.returncode == 0:
        assert f"of {RESTART_TRIALS}" in stdout, stdout + stderr
        return "continued"
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    shown = f"postgresql://postgres:***@127.0.0.1:{postgres.port}/postgres"
    assert shown in errors[0], errors[0]
    assert "internal error" not in errors[0], errors[0]
    return f"stopped: {errors[0]}"


@pytest.mark.slow
@pytest.mark.timeout(450)
def test_postgresql_restart_under_two_workers_then_rerun_completes(
    postgres: Postgres,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    reaper: list[subprocess.Popen[Any]],
) -> None:
    # Beats every 7 s, so the trials in flight miss some while the server is down; the grace
    # period stays well above the outage, so no live trial is taken for lost.
    monkeypatch.setenv(GRACE_PERIOD_ENV, "30")
    url, name = postgres.url, "restart"
    _new_study(url, name, RESTART_TRIALS, (1, 2, 4, 16, 64), max_time_s=RESTART_MAX_TIME_S)
    storage = open_storage(url)
    clock = _Clock()
    # The second worker starts once the first has measured the baseline (else both would).
    procs = [_worker(reaper, url, name, tmp_path / "worker0")]
    _wait_until("the baseline", lambda: _has_baseline(storage, name), procs)
    procs.append(_worker(reaper, url, name, tmp_path / "worker1"))

    def both_at_work() -> bool:
        trials = _trials(storage, name)
        pids = {t.user_attrs.get("worker", {}).get("pid") for t in trials}
        busy = any(t.state == TrialState.RUNNING and "label" in t.user_attrs for t in trials)
        return busy and bool(_completed(trials)) and {p.pid for p in procs} <= pids

    _wait_until("both workers at work", both_at_work, procs)
    before = _completed(_trials(storage, name))
    clock.mark("restart")
    postgres.stop("fast")
    # Down long enough for the workers to need it: until one gives up, DOWN_S at most.
    deadline = time.monotonic() + DOWN_S
    while time.monotonic() < deadline and all(p.poll() is None for p in procs):
        time.sleep(0.2)
    postgres.start()
    clock.mark("server back")
    outcomes = [_worker_outcome(p, p.communicate(timeout=400), postgres) for p in procs]

    clock.mark("workers ended")
    again = _worker(reaper, url, name, tmp_path / "again")
    stdout, stderr = again.communicate(timeout=400)
    clock.mark("rerun done")
    trials = _trials(storage, name)
    story = f"outcomes {outcomes}; {clock}; trials {_describe(trials)}"
    assert again.returncode == 0, stdout + stderr + story
    assert f"trials: {RESTART_TRIALS} of {RESTART_TRIALS}" in stdout, stdout + stderr + story
    _assert_intact(before, trials, story)
    _assert_finished_study(trials, RESTART_TRIALS, story)
    for trial in trials:
        if is_interrupted(trial):
            _assert_retried(trials, trial.number, story)
    print(f"PostgreSQL restart: {story}")
