"""tune_training end to end on a small space: the walk, the study (stored, resumable, refused
for another target), the side-by-side rounds, training.json, the page and the model."""

from __future__ import annotations

import dataclasses
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
    first = walk[0]
    assert first["precision"] == "bf16" or first["threads"] == 1
    # One knob at a time, but the schedule's length and the learning rate move together.
    moved = [{k for k in n if n[k] != space.default_params()[k]} for n in walk]
    assert all(len(m) == 1 or m <= {"epochs", "lr_scale"} for m in moved)
    assert {"epochs", "lr_scale"} in moved
    assert TrainingSpace.from_dict(json.loads(json.dumps(space.to_dict()))) == space


def test_tune_finds_reports_confirms_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = tune_training(
        "train_tasks:tiny",
        0.9,
        trials=3,
        out=out,
        space=SPACE,
        rounds=2,
        seeds=3,
        progress=False,
    )
    report = result.report
    doc = json.loads((out / "training.json").read_text())
    assert TrainingReport.from_dict(doc).to_dict() == doc
    assert load_training(out / "training.json") == report
    assert len(report.trials) == 3 and report.trials[0]["config"]["batch_size"] == 64
    # The walk: the recipe first, then one knob at a time (here threads first: the space
    # has one precision). A new best is trained with three seeds.
    assert report.trials[1]["params"]["threads"] == 1
    assert [r["seed"] for r in report.trials[0]["seed_runs"]] == [0, 1000, 2000]  # seeds=3
    assert report.default is not None and report.default.label == "b64 lr0.003 e4 fp32 t(all)"
    assert report.best is not None and report.best.reached
    assert len(report.best.rounds_energy_j) == 2 and report.rounds == 2
    # The rounds train with seeds the search (seed 0) did not use, the same seed within a round.
    assert any("seeds 1, 2" in n and "seed 0" in n for n in report.notes)
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
        "train_tasks:tiny",
        0.9,
        trials=4,
        out=out,
        space=SPACE,
        rounds=2,
        seeds=3,
        progress=False,
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
        seeds=1,
    )
    open_training_study(open_storage(url), "shared", settings, url=url)
    study = find_training_study(url, "shared")
    assert study is not None
    assert run_training_worker(url, "shared", out=tmp_path / "worker", progress=False) == 2
    done = [t for t in study.get_trials() if t.state.name == "COMPLETE"]
    # The recipe, then the walk's first step (the space's first knob with a choice).
    assert [(t.params["batch_size"], t.params["threads"]) for t in done] == [(64, 0), (64, 1)]
    with pytest.raises(InputError, match="no study named"):
        find_training_study(url, "missing")
    with pytest.raises(InputError, match="is not study"):
        run_training_worker(url, "shared", out=tmp_path / "w2", task="digits", progress=False)


def test_the_walk_skips_larger_batches_than_a_run_that_ran_out() -> None:
    from wattwise.training._tune import _fewer_steps_than_failed

    failed = [{"batch_size": 32, "threads": 0, "precision": "fp32", "epochs": 3}]
    assert _fewer_steps_than_failed({**failed[0], "batch_size": 64}, failed)
    assert not _fewer_steps_than_failed({**failed[0], "batch_size": 8}, failed)
    # Another knob changed too (a longer schedule): it may reach the target.
    assert not _fewer_steps_than_failed({**failed[0], "batch_size": 64, "epochs": 6}, failed)
    assert not _fewer_steps_than_failed({**failed[0], "batch_size": 64}, [])


def test_a_new_best_counts_as_the_mean_of_seeds() -> None:
    from wattwise.training._tune import _seeds

    def run(seed: int, reached: bool, energy: float, epochs: int) -> dict:
        return {
            "seed": seed,
            "reached": reached,
            "epochs": epochs,
            "energy_to_target_j": energy if reached else None,
            "time_to_target_s": energy / 4 if reached else None,
            "energy_j": energy,
            "time_s": energy / 4,
            "stopped": None if reached else "the target was not reached in 15 epochs",
            "ran_out": not reached,
        }

    both = _seeds(run(0, True, 1.0, 1), [run(1000, True, 3.0, 3)])
    assert both["reached"] and both["energy_to_target_j"] == 2.0 and both["epochs"] == 3
    assert both["energy_j"] == 4.0 and [r["seed"] for r in both["seed_runs"]] == [0, 1000]
    lucky = _seeds(run(0, True, 1.0, 1), [run(1000, True, 1.0, 1), run(2000, False, 5.0, 15)])
    assert not lucky["reached"] and lucky["energy_to_target_j"] is None and lucky["ran_out"]
    assert "seed 0 but not with seed 2000" in lucky["stopped"]


def test_the_walk_goes_on_to_the_next_knob() -> None:
    """Coordinate descent: from a best made by changing the batch size, the next knob first."""
    first = SPACE.neighbours(SPACE.default_params())
    assert first[0]["threads"] == 1
    after_threads = SPACE.neighbours({**SPACE.default_params(), "threads": 1}, "threads")
    assert after_threads[0]["batch_size"] == 256 and after_threads[-1]["threads"] == 0


def test_the_headline_ratio_is_of_the_means_over_rounds() -> None:
    from wattwise.training._tune import _ratio

    def r(e: float, reached: bool = True) -> dict:
        return {"reached": reached, "energy_to_target_j": e if reached else None}

    runs = {
        "default": [r(3.0), r(2.0), r(3.0), r(9.0)],
        "best": [r(2.0), r(2.0), r(1.0), r(1.0, reached=False)],
    }
    ratio, per_round = _ratio(runs, "energy_to_target_j")
    assert per_round == [1.5, 1.0, 3.0]  # the last round: the best did not reach the target
    assert ratio == (8.0 / 3) / (5.0 / 3)
    assert _ratio({"default": [r(1.0)], "best": [r(1.0, False)]}, "energy_to_target_j") == (
        None,
        [],
    )


def test_while_nothing_reaches_the_target_the_walk_changes_what_is_learned(
    tmp_path: Path,
) -> None:
    """Threads and precision change what a step costs, not what a run learns: while no run
    has reached the target, the walk tries the batch size first (a smaller one: a larger
    batch takes fewer steps than the recipe's run that fell short)."""
    space = TrainingSpace(
        {**SPACE.choices, "batch_size": (64, 256, 32)},
        base_batch_size=SPACE.base_batch_size,
        base_lr=SPACE.base_lr,
    )
    result = tune_training(
        "train_tasks:tiny",
        0.999,
        trials=2,
        out=tmp_path / "out",
        space=space,
        rounds=0,
        seeds=1,
        progress=False,
    )
    first, second = result.report.trials
    assert not first["reached"] and first["params"]["threads"] == 0
    assert second["params"]["batch_size"] == 32 and second["params"]["threads"] == 0


def test_which_runs_are_trained_again_with_other_seeds() -> None:
    from train_tasks import tiny

    from wattwise.search._objective import task_id
    from wattwise.training import TrainingSettings
    from wattwise.training._tune import _reruns_wanted

    base = TrainingSettings(
        task_spec="train_tasks:tiny",
        task_name="tiny",
        task_id=task_id(tiny(), "train_tasks:tiny"),
        target_accuracy=0.9,
        trials=4,
        space=SPACE,
    )
    short = {"reached": True, "energy_to_target_j": 1.0, "epochs": 2, "time_to_target_s": 1.0}
    long = {**short, "epochs": 20, "time_to_target_s": 600.0}
    assert _reruns_wanted(short, None, base) == 4  # the first to reach, and a short run
    assert _reruns_wanted(long, 1.1, base) == 2  # near the best
    assert _reruns_wanted(long, 0.5, base) == 0  # far from it
    assert _reruns_wanted({**short, "reached": False}, None, base) == 0
    assert _reruns_wanted(short, None, dataclasses.replace(base, seeds=1)) == 0
    assert _reruns_wanted(long, None, dataclasses.replace(base, seeds=4)) == 3
