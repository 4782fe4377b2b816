"""Scale-out: a real PostgreSQL server and two ``wattwise worker`` processes on one study; no
trial is lost or run twice, and the budget is shared."""

from __future__ import annotations

import json
import subprocess

import optuna
import pytest
import search_tasks
from search_helpers import subprocess_env, wattwise_cmd

from wattwise.search import ModelChoice, SearchSettings, SearchSpace, open_storage, seed_params
from wattwise.search._objective import task_id
from wattwise.search._space import params_key
from wattwise.search._study import open_study

TRIALS = 6


@pytest.mark.slow
def test_two_workers_share_one_postgresql_study(postgres_url, tmp_path):
    space = SearchSpace(
        models=(ModelChoice("base"),),
        deployments=("eager/fp32", "onnxruntime/fp32"),
        batch_sizes=(1, 8, 32, 64),
        threads=(1,),
    )
    task = search_tasks.tiny()
    settings = SearchSettings(
        task_spec="search_tasks:tiny",
        task_name=task.name,
        task_id=task_id(task, "search_tasks:tiny"),
        scenario="offline",
        max_accuracy_drop=0.05,
        latency_p90_ms=None,
        trials=TRIALS,
        space=space,
        max_time_s=0.3,
        timeout_per_trial_s=200,
    )
    seeds = seed_params(space)
    open_study(open_storage(postgres_url), "two-workers", settings, url=postgres_url, seeds=seeds)

    env = subprocess_env()
    procs = [
        subprocess.Popen(
            wattwise_cmd(
                "worker",
                "--storage",
                postgres_url,
                "--study",
                "two-workers",
                "--out",
                str(tmp_path / f"worker{i}"),
            ),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (stdout, stderr) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, stdout + stderr
        assert f"of {TRIALS}" in stdout

    trials = optuna.load_study(
        study_name="two-workers", storage=open_storage(postgres_url)
    ).get_trials()
    states = [t.state for t in trials]
    assert optuna.trial.TrialState.RUNNING not in states
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    counted = [
        t
        for t in trials
        if t.state == optuna.trial.TrialState.COMPLETE
        or (t.state == optuna.trial.TrialState.FAIL and "fail_reason" in t.user_attrs)
    ]
    assert len(counted) == TRIALS  # none lost, none extra
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in counted)
    # No candidate was measured twice, and each seed point ran exactly once.
    keys = [params_key(t.params) for t in counted]
    assert len(set(keys)) == len(keys)
    for seed in seeds:
        assert keys.count(params_key(seed)) == 1
    # Both workers took part, each trial run by exactly one of them.
    pids = {t.user_attrs["worker"]["pid"] for t in counted}
    assert pids == {p.pid for p in procs}
    # Each worker wrote results from everyone's trials: all of them, because a worker whose
    # remaining budget is running in the other waits for it (were the other to die, it would
    # run that trial again) instead of stopping with the budget short.
    for i in range(2):
        doc = json.loads((tmp_path / f"worker{i}" / "results.json").read_text())
        assert doc["best"] is not None and doc["storage"].startswith("postgresql://")
        assert doc["trials"] == TRIALS, (i, doc["trials"])


def _open_and_answer(url: str, answers) -> None:  # in a child process
    try:
        open_storage(url)
        answers.put("ok")
    except Exception as exc:
        answers.put(f"{type(exc).__name__}: {exc}")


def test_processes_opening_one_fresh_sqlite_file_together_all_succeed(tmp_path):
    """Optuna makes its tables on first open without a lock: ``optimize`` started beside a
    ``worker`` (or beside anything reading the study) on a new file failed with "table already
    exists" or a UNIQUE constraint, exit 2. Three real processes open each of six new files at
    once; before the fix one open in six failed."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    answers = ctx.Queue()
    for i in range(6):
        url = f"sqlite:///{tmp_path}/fresh-{i}.db"
        procs = [ctx.Process(target=_open_and_answer, args=(url, answers)) for _ in range(3)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(timeout=120)
        got = [answers.get(timeout=10) for _ in procs]
        assert got == ["ok"] * 3, got
