"""Ctrl-C, then SIGTERM, then kill -9, a running ``wattwise optimize`` mid-search, and rerun the
same command: it resumes, every completed trial is intact, each trial that was in flight is failed as
interrupted and run again, and the budget counts across the runs. Then ``wattwise report`` and
``wattwise check`` on the result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import optuna
import pytest
from search_helpers import subprocess_env, wattwise_cmd

SPACE = {
    "models": [
        {"name": "base"},
        {"name": "prune50", "passes": [{"type": "prune", "ratio": 0.5, "finetune_epochs": 1}]},
    ],
    "deployments": ["eager/fp32", "onnxruntime/fp32"],
    "batch_sizes": [1, 16, 64],
    # One thread: on a loaded 2-core machine two OpenMP threads stall each other for ms.
    "threads": [1],
}
TRIALS = 3


def _wait_for(db: str, out, proc: subprocess.Popen, *, need_complete: bool) -> int:
    """The number of a trial ``proc`` is running (after one of its trials completed, if asked)."""
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and proc.poll() is None:
        trials = _trials(db) if (out / "wattwise.db").exists() else []
        mine = [t for t in trials if t.user_attrs.get("worker", {}).get("pid") == proc.pid]
        done = [t for t in mine if t.state == optuna.trial.TrialState.COMPLETE]
        # A trial with a label is past the sampler, running its candidate.
        running = [
            t
            for t in mine
            if t.state == optuna.trial.TrialState.RUNNING and "label" in t.user_attrs
        ]
        if running and (done or not need_complete):
            return running[0].number
        time.sleep(0.2)  # a trial lasts about a second: look often enough to catch it running
    if proc.poll() is not None:
        _, stderr = proc.communicate()
        raise AssertionError(
            f"exit code {proc.returncode} before a running trial was seen:\n{stderr[-3000:]}"
        )
    raise AssertionError("no running trial seen in 400 s")


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _trials(db: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name="tiny-offline", storage=db).get_trials()
    except Exception:  # the study does not exist yet
        return []


@pytest.mark.slow
def test_ctrl_c_sigterm_and_kill_9_then_rerun_resumes_with_completed_trials_intact(tmp_path):
    out = tmp_path / "out"
    space = tmp_path / "space.yaml"
    space.write_text(json.dumps(SPACE))
    cmd = wattwise_cmd(
        "optimize",
        "--task",
        "search_tasks:tiny",
        "--trials",
        str(TRIALS),
        "--out",
        str(out),
        "--space",
        str(space),
        "--timeout-per-trial-s",
        "200",
        "--max-time-s",
        "0.3",
    )
    env = subprocess_env()
    db = f"sqlite:///{out}/wattwise.db"
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    # Run 1: Ctrl-C while its first trial runs. It stops cleanly with a summary and exit 130;
    # the trial in flight is failed as interrupted and queued again.
    zeroth = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A shell starts background jobs with SIGINT ignored, and Python keeps it ignored: a
        # test run launched with `&` would send a Ctrl-C nobody hears. Give the child the
        # default disposition, as a terminal would.
        preexec_fn=_default_sigint,
    )
    stopped = _wait_for(db, out, zeroth, need_complete=False)
    zeroth.send_signal(signal.SIGINT)
    stdout, stderr = zeroth.communicate(timeout=120)
    assert zeroth.returncode == 130, stdout + stderr
    assert "interrupted" in stdout and f"of {TRIALS}" in stdout
    trials = _trials(db)
    assert trials[stopped].state == optuna.trial.TrialState.FAIL
    assert trials[stopped].user_attrs["fail_reason"] == "interrupted: stopped by Ctrl-C"
    queued = [t for t in trials if t.user_attrs.get("retry_of") == stopped]
    assert len(queued) == 1 and queued[0].state == optuna.trial.TrialState.WAITING

    # Run 2: SIGTERM (what `timeout`, CI runners and containers send) once one of its trials
    # has completed and the next one is running: it stops like Ctrl-C, with exit 143 and the
    # outputs written whole.
    second = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    termed = _wait_for(db, out, second, need_complete=True)
    done = [t for t in _trials(db) if t.state == optuna.trial.TrialState.COMPLETE]
    second.send_signal(signal.SIGTERM)
    stdout, stderr = second.communicate(timeout=120)
    assert second.returncode == 143, stdout + stderr
    assert "interrupted (SIGTERM)" in stdout
    doc = json.loads((out / "results.json").read_text())  # written whole
    assert doc["interrupted"] is True and doc["trials"] == len(done)
    trials = _trials(db)
    assert trials[termed].state == optuna.trial.TrialState.FAIL
    assert trials[termed].user_attrs["fail_reason"].startswith("interrupted:")
    queued = [t for t in trials if t.user_attrs.get("retry_of") == termed]
    assert len(queued) == 1 and queued[0].state == optuna.trial.TrialState.WAITING

    # Run 3: kill -9 once one of its trials has completed and the next one is running.
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    victim = _wait_for(db, out, first, need_complete=True)
    before = {t.number: t for t in _trials(db) if t.state == optuna.trial.TrialState.COMPLETE}
    os.kill(first.pid, signal.SIGKILL)
    first.wait(30)
    assert _trials(db)[victim].state == optuna.trial.TrialState.RUNNING  # nobody cleaned up

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"trials: {TRIALS} of {TRIALS}" in again.stdout

    after = {t.number: t for t in _trials(db)}
    for number, old in before.items():  # every completed trial is intact
        new = after[number]
        assert new.state == optuna.trial.TrialState.COMPLETE
        assert new.values == old.values and new.params == old.params
        assert new.user_attrs["figures"] == old.user_attrs["figures"]
    for lost in (stopped, termed, victim):  # each interrupted trial ran again, once, to completion
        killed = after[lost]
        assert killed.state == optuna.trial.TrialState.FAIL
        assert killed.user_attrs["fail_reason"].startswith("interrupted:")
        retry = [t for t in after.values() if t.user_attrs.get("retry_of") == lost]
        assert len(retry) == 1 and retry[0].params == killed.params
        assert retry[0].state == optuna.trial.TrialState.COMPLETE
    states = [t.state for t in after.values()]
    assert optuna.trial.TrialState.RUNNING not in states
    counted = [t for t in after.values() if t.state == optuna.trial.TrialState.COMPLETE]
    counted += [
        t
        for t in after.values()
        if t.state == optuna.trial.TrialState.FAIL
        and not str(t.user_attrs.get("fail_reason", "interrupted")).startswith("interrupted")
    ]
    assert len(counted) == TRIALS

    doc = json.loads((out / "results.json").read_text())
    assert doc["trials"] == TRIALS and doc["interrupted_trials"] == 3
    assert doc["interrupted"] is False
    assert doc["best"]["energy_j_per_item"] < doc["baseline"]["energy_j_per_item"]
    assert doc["search_energy_j"] > 0
    # The suite skips the confirmation stage (tests/conftest.py): then no ratio or payback is
    # published, and the notes say why (test_confirm.py checks the stage itself).
    assert doc["energy_ratio"] is None and doc["payback_items"] is None
    assert any("confirmation stage was skipped" in n for n in doc["notes"])
    assert doc["search_energy_source"].startswith(("measured:", "estimated:"))
    assert (out / "report.html").exists() and (out / "trials.csv").exists()
    assert (out / "artifact" / "deployment.json").exists()

    # The report command rebuilds the same figures from the storage alone.
    report_dir = tmp_path / "report"
    rep = subprocess.run(
        wattwise_cmd(
            "report", "--storage", db, "--study", "tiny-offline", "--out", str(report_dir)
        ),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rep.returncode == 0, rep.stderr
    redo = json.loads((report_dir / "results.json").read_text())
    assert redo["best"]["number"] == doc["best"]["number"]
    assert redo["search_energy_j"] <= doc["search_energy_j"]  # no export in a report

    # And the CI gate on it: generous budget passes, an impossible one fails with exit 1.
    results = str(out / "results.json")
    ok = subprocess.run(
        wattwise_cmd(
            "check", results, "--max-energy-per-item", "1J", "--max-accuracy-drop", "0.05"
        ),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(
        wattwise_cmd("check", results, "--max-energy-per-item", "1nJ"),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and "exceeds the budget 1 nJ" in bad.stderr
