"""tune_training end to end on a small space: the walk, the study (stored, resumable, refused
for another target), the side-by-side rounds, training.json, the page and the model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from wattwise.errors import InputError
from wattwise.training import (
    TrainingReport,
    TrainingSpace,
    load_training,
    training_space,
    tune_training,
)
from wattwise.training._tune import front

SPACE = TrainingSpace(
    {
        "batch_size": (64, 256),
        "threads": (0, 1),
        "precision": ("fp32",),
        "compile": (False,),
        "epochs": (4,),
        "channels_last": (False,),
        "power_limit": ("default",),
    },
    base_batch_size=64,
    base_lr=3e-3,
)


def test_the_default_space_starts_from_the_recipe() -> None:
    from train_tasks import tiny

    task = tiny()
    space = training_space(task)
    default = space.config(space.default_params())
    assert (default.batch_size, default.lr, default.epochs) == (task.batch_size, task.lr, 4)
    assert default.threads is None and default.precision == "fp32" and not default.compile
    assert space.choices["batch_size"][:4] == (64, 128, 256, 32)  # 512 leaves < 4 steps
    assert space.choices["channels_last"] == (False, True)  # an image task
    walk = space.neighbours(space.default_params())
    assert walk[0]["batch_size"] == 128 and all(
        sum(n[k] != space.default_params()[k] for k in n) == 1 for n in walk
    )
    assert TrainingSpace.from_dict(json.loads(json.dumps(space.to_dict()))) == space


def test_tune_finds_reports_confirms_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = tune_training(
        "train_tasks:tiny", 0.9, trials=3, out=out, space=SPACE, rounds=2, progress=False
    )
    report = result.report
    doc = json.loads((out / "training.json").read_text())
    assert TrainingReport.from_dict(doc).to_dict() == doc
    assert load_training(out / "training.json") == report
    assert len(report.trials) == 3 and report.trials[0]["config"]["batch_size"] == 64
    # The walk: the recipe first, then one knob at a time (batch size first).
    assert report.trials[1]["params"]["batch_size"] == 256
    assert report.default is not None and report.default.label == "b64 lr0.003 e4 fp32 t(all)"
    assert report.best is not None and report.best.reached
    assert len(report.best.rounds_energy_j) == 2 and report.rounds == 2
    if report.default.reached:
        assert report.energy_ratio is not None and report.energy_ratio > 0
    assert report.front and report.front[0]["energy_to_target_j"] == min(
        t["energy_to_target_j"] for t in report.trials if t["reached"]
    )
    assert report.meter["source"].startswith(("measured:", "estimated:"))
    assert report.prediction is not None and report.prediction["actual_epochs"] >= 1
    assert report.search_energy_j > 0
    html = (out / "training.html").read_text()
    assert "<svg" in html and "energy-time" in html and "<script" not in html
    from wattwise.deploy import load_artifact

    assert load_artifact(out / "artifact")(torch.zeros(1, 1, 8, 8)).shape == (1, 10)
    # Resuming with a larger budget runs only the new trial; the rounds are stored.
    again = tune_training(
        "train_tasks:tiny", 0.9, trials=4, out=out, space=SPACE, rounds=2, progress=False
    )
    assert len(again.report.trials) == 4
    assert [t["trial"] for t in again.report.trials[:3]] == [t["trial"] for t in report.trials]
    with pytest.raises(InputError, match="target accuracy"):
        tune_training("train_tasks:tiny", 0.8, trials=4, out=out, space=SPACE, progress=False)


def test_bad_input_is_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="target accuracy is needed"):
        tune_training("train_tasks:tiny", None, out=tmp_path / "a", progress=False)
    with pytest.raises(InputError, match="trials"):
        tune_training("train_tasks:tiny", 0.9, trials=0, out=tmp_path / "b", progress=False)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match=r"notes\.txt"):
        tune_training("train_tasks:tiny", 0.9, out=foreign, space=SPACE, progress=False)
    assert (foreign / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "a").exists()


def test_front_keeps_only_the_undominated() -> None:
    rows = [
        {
            "trial": 0,
            "label": "a",
            "config": {},
            "reached": True,
            "energy_to_target_j": 1.0,
            "time_to_target_s": 9.0,
        },
        {
            "trial": 1,
            "label": "b",
            "config": {},
            "reached": True,
            "energy_to_target_j": 2.0,
            "time_to_target_s": 3.0,
        },
        {
            "trial": 2,
            "label": "c",
            "config": {},
            "reached": True,
            "energy_to_target_j": 3.0,
            "time_to_target_s": 4.0,
        },
        {
            "trial": 3,
            "label": "d",
            "config": {},
            "reached": False,
            "energy_to_target_j": None,
            "time_to_target_s": None,
        },
    ]
    assert [p["trial"] for p in front(rows)] == [0, 1]


def test_a_hostile_training_file_is_one_error(tmp_path: Path) -> None:
    bad = tmp_path / "training.json"
    bad.write_text('{"schema": 1, "task": "x"}')
    with pytest.raises(InputError, match="missing or bad field"):
        load_training(bad)
    bad.write_text('{"schema": 1, "schema": 2}')
    with pytest.raises(InputError):
        load_training(bad)
    with pytest.raises(InputError, match="cannot read"):
        load_training(tmp_path)


def test_a_worker_joins_a_training_study_from_the_storage_alone(tmp_path: Path) -> None:
    from train_tasks import tiny

    from wattwise.search._objective import task_id
    from wattwise.search._storage import open_storage
    from wattwise.training import TrainingSettings, find_training_study, run_training_worker
    from wattwise.training._tune import open_training_study

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    settings = TrainingSettings(
        task_spec="train_tasks:tiny",
        task_name="tiny",
        task_id=task_id(tiny(), "train_tasks:tiny"),
        target_accuracy=0.9,
        trials=2,
        space=SPACE,
    )
    open_training_study(open_storage(url), "shared", settings, url=url)
    study = find_training_study(url, "shared")
    assert study is not None
    assert run_training_worker(url, "shared", out=tmp_path / "worker", progress=False) == 2
    done = [t for t in study.get_trials() if t.state.name == "COMPLETE"]
    assert [t.params["batch_size"] for t in done] == [64, 256]  # the recipe, then the walk
    with pytest.raises(InputError, match="no study named"):
        find_training_study(url, "missing")
    with pytest.raises(InputError, match="is not study"):
        run_training_worker(url, "shared", out=tmp_path / "w2", task="digits", progress=False)
