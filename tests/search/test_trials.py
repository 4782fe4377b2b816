"""The worker loop's steps on their own: what it does next (next_step), what it counts
(LoopState), what it refuses (check_loop_args), and one trial of the objective (TrialRunner)
on a real SQLite study, with Optuna running it; test_isolation runs whole trials."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import TrialState, create_trial

from wattwise.errors import InputError
from wattwise.search import ModelChoice, SearchSettings, SearchSpace, open_storage
from wattwise.search._liveness import TrialCounts, counts_for_budget, is_interrupted
from wattwise.search._objective import JobContext, TaskRef
from wattwise.search._study import open_study, quiet_optuna
from wattwise.search._trials import (
    FAILED_STAGE,
    MAX_CONSECUTIVE_DUPLICATES,
    LoopState,
    TrialRunner,
    check_loop_args,
    next_step,
    refine_around_best,
)

SPACE = SearchSpace(
    models=(ModelChoice("base"),),
    deployments=("eager/fp32",),
    batch_sizes=(1, 2, 4, 8, 16, 32),
    threads=(1,),
)
FIRST = {name: choices[0] for name, choices in SPACE.choices().items()}
QUEUED = {**FIRST, "batch_size": 16}  # not what the seeded sampler proposes first
DISTRIBUTIONS: dict[str, BaseDistribution] = {
    name: CategoricalDistribution(list(c)) for name, c in SPACE.choices().items()
}
STUCK = MAX_CONSECUTIVE_DUPLICATES


@pytest.mark.parametrize(
    ("counts", "duplicates", "step"),
    [
        (TrialCounts(complete=3, failed=1), 0, "done"),  # budget 4: counted trials fill it
        (TrialCounts(complete=2, interrupted=5, pruned=9), 0, "trial"),  # those don't count
        (TrialCounts(complete=2, running=2), 0, "wait"),  # the rest runs elsewhere
        (TrialCounts(complete=2, running=1), 0, "trial"),
        (TrialCounts(complete=1), STUCK, "exhausted"),  # the sampler only repeats itself
        (TrialCounts(complete=1, running=1), STUCK, "wait"),  # ... but a lost trial may return
        (TrialCounts(complete=1, waiting=1), STUCK, "trial"),  # ... or one is queued
        (TrialCounts(complete=1), STUCK - 1, "trial"),
    ],
)
def test_next_step(counts: TrialCounts, duplicates: int, step: str) -> None:
    assert next_step(counts, duplicates, budget=4) == step


def test_loop_state_counts_duplicates_in_a_row_and_the_trials_it_ran() -> None:
    state = LoopState()
    duplicate = create_trial(state=TrialState.PRUNED, user_attrs={"duplicate_of": 0})
    surplus = create_trial(state=TrialState.PRUNED, user_attrs={"fail_reason": "budget reached"})
    for number, trial in enumerate([duplicate, duplicate, surplus]):
        trial.number = number
        state.add(trial)
    assert (state.duplicates, state.ran) == (2, [])  # a budget surplus leaves the run going
    ran = create_trial(state=TrialState.FAIL, user_attrs={"fail_reason": "nan: outputs NaN"})
    ran.number = 3
    state.add(ran)
    assert (state.duplicates, state.ran) == (0, [3])


def _settings(trials: int) -> SearchSettings:
    return SearchSettings(
        task_spec="search_tasks:tiny",
        task_name="tiny",
        task_id="tiny-test",
        scenario="offline",
        max_accuracy_drop=0.05,
        latency_p90_ms=None,
        trials=trials,
        space=SPACE,
    )


def _study(tmp_path: Path, trials: int) -> optuna.Study:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study, _ = open_study(open_storage(url), "t", _settings(trials), url=url)
    return study


def _runner(study: optuna.Study, tmp_path: Path, budget: int, **kwargs: Any) -> TrialRunner:
    ctx = JobContext(
        task=TaskRef(kwargs.pop("spec", "search_tasks:tiny")),
        task_id="tiny-test",
        cache_dir=str(tmp_path / "cache"),
        log_dir=str(tmp_path / "logs"),
    )
    return TrialRunner(
        study, _settings(budget), ctx, baseline_accuracy=0.9, budget=budget, **kwargs
    )


def _complete(study: optuna.Study, params: dict[str, Any] | None = None) -> None:
    study.add_trial(
        create_trial(
            values=[0.9, 1e-3, 1.0],
            params=params or {},
            distributions=DISTRIBUTIONS if params else {},
        )
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"budget": 0}, "budget must be an integer >= 1"),
        ({"budget": True}, "budget must be an integer >= 1"),
        ({"budget": 2.0}, "budget must be an integer >= 1"),
        ({"baseline_accuracy": math.nan}, "baseline_accuracy must be a finite number"),
        ({"baseline_accuracy": "0.9"}, "baseline_accuracy must be a finite number"),
    ],
)
def test_check_loop_args_names_the_argument(
    tmp_path: Path, kwargs: dict[str, Any], match: str
) -> None:
    study = _study(tmp_path, 2)
    check_loop_args(study, baseline_accuracy=0.9, budget=2)  # the search's own study: fine
    with pytest.raises(InputError, match=match):
        check_loop_args(study, **{"baseline_accuracy": 0.9, "budget": 2, **kwargs})


def test_check_loop_args_refuses_a_study_with_other_objectives(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'plain.db'}"
    with quiet_optuna():
        plain = optuna.create_study(study_name="plain", storage=url, direction="minimize")
    with pytest.raises(InputError, match="must have the directions maximize, minimize"):
        check_loop_args(plain, baseline_accuracy=0.9, budget=2)


def test_runner_prunes_a_trial_past_the_budget(tmp_path: Path) -> None:
    study = _study(tmp_path, 2)
    for _ in range(2):
        _complete(study)
    runner = _runner(study, tmp_path, budget=2)
    with quiet_optuna():
        (trial,) = runner.run_one()
    assert runner.started == [trial.number] == [2]
    assert trial.state == TrialState.PRUNED and trial.user_attrs["fail_reason"] == "budget reached"
    assert trial.user_attrs["worker"]["host"]  # signed before anything else


def test_runner_prunes_a_candidate_already_tried(tmp_path: Path) -> None:
    study = _study(tmp_path, 5)
    _complete(study, FIRST)
    study.enqueue_trial(FIRST)  # the sampler proposes it again
    with quiet_optuna():
        (trial,) = _runner(study, tmp_path, budget=5).run_one()
    assert trial.state == TrialState.PRUNED
    assert trial.user_attrs["duplicate_of"] == 0
    assert trial.user_attrs["fail_reason"] == "duplicate of trial 0"
    assert "label" not in trial.user_attrs  # pruned before its candidate was built
    # The untried candidate nearest the proposal is queued for the next trial.
    (queued,) = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.WAITING]
    assert queued.system_attrs["fixed_params"] == {**FIRST, "batch_size": 2}
    assert queued.user_attrs == {"queued_for": "a duplicate proposal"}


def test_a_duplicate_queues_nothing_when_every_candidate_is_taken(tmp_path: Path) -> None:
    study = _study(tmp_path, 10)
    for batch in SPACE.batch_sizes:
        _complete(study, {**FIRST, "batch_size": batch})
    study.enqueue_trial(FIRST)
    with quiet_optuna():
        (trial,) = _runner(study, tmp_path, budget=10).run_one()
    assert trial.user_attrs["duplicate_of"] == 0
    assert not [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.WAITING]


def test_runner_gives_back_a_trial_stopped_by_ctrl_c(tmp_path: Path) -> None:
    study = _study(tmp_path, 5)
    started: list[tuple[int, str]] = []

    def ctrl_c(number: int, label: str) -> None:  # Ctrl-C as the candidate starts
        started.append((number, label))
        raise KeyboardInterrupt

    runner = _runner(study, tmp_path, budget=5, on_start=ctrl_c)
    study.enqueue_trial(QUEUED)
    with quiet_optuna(), pytest.raises(KeyboardInterrupt):
        runner.run_one()
    assert started == [(0, "base eager/fp32 b16 t1")] and runner.started == [0]
    stopped, retry = study.get_trials(deepcopy=False)
    assert stopped.state == TrialState.FAIL and is_interrupted(stopped)
    assert not counts_for_budget(stopped)
    assert stopped.user_attrs["fail_reason"] == "interrupted: stopped by Ctrl-C"
    assert stopped.user_attrs["duration_s"] > 0 and stopped.user_attrs["log"].endswith(
        "trial-0000.log"
    )
    # Its candidate is queued again: the next trial runs it.
    assert retry.state == TrialState.WAITING and retry.user_attrs == {"retry_of": 0}
    with quiet_optuna(), pytest.raises(KeyboardInterrupt):
        runner.run_one()
    assert started[1] == (1, "base eager/fp32 b16 t1")
    assert study.trials[1].params == QUEUED


def test_runner_fails_a_trial_whose_candidate_fails_with_the_reason(tmp_path: Path) -> None:
    # The task cannot be loaded in the build's child process: a real child, a real failure.
    study = _study(tmp_path, 5)
    runner = _runner(study, tmp_path, budget=5, spec="search_tasks:no_such_task")
    study.enqueue_trial(FIRST)
    with quiet_optuna():
        (trial,) = runner.run_one()
    assert trial.state == TrialState.FAIL and counts_for_budget(trial)
    reason = trial.user_attrs["fail_reason"]
    assert "no_such_task" in reason and not reason.startswith("interrupted"), reason
    assert trial.user_attrs["duration_s"] > 0 and "figures" not in trial.user_attrs


def test_model_macs_are_counted_once_per_model_choice_and_a_spoiled_record_recounted(
    tmp_path: Path,
) -> None:
    import torch

    from wattwise.search._objective import model_key, model_macs
    from wattwise.tasks import digits

    task = digits()
    ctx = JobContext(task=TaskRef("digits"), task_id="digits", cache_dir=str(tmp_path))
    model = task.model_factory().eval()
    counted = model_macs(ctx, task, (), model)
    record = tmp_path / "models" / f"{model_key(ctx, ())}.macs.json"
    assert counted > 0 and json.loads(record.read_text()) == {"macs_per_item": counted}
    # The record is what later trials read: another model under the same key gets its number.
    assert model_macs(ctx, task, (), torch.nn.Flatten()) == counted
    record.write_text('{"macs_per_item": "NaN"}')
    assert model_macs(ctx, task, (), model) == counted
    assert json.loads(record.read_text()) == {"macs_per_item": counted}


def test_a_candidate_that_cannot_be_the_best_gets_only_its_screening(tmp_path: Path) -> None:
    """Multi-fidelity: with a feasible trial far cheaper than anything this CPU can do, a real
    candidate is measured by the short screening alone, labelled so; its figures are real."""
    study = _study(tmp_path, 5)
    cheap = {"accuracy": 0.95, "energy_j_per_item": 1e-12, "latency_ms_p90": 1.0}
    study.add_trial(
        create_trial(
            values=[0.95, 1e-12, 1.0],
            params=FIRST,
            distributions=DISTRIBUTIONS,
            user_attrs={"figures": cheap},
        )
    )
    runner = _runner(study, tmp_path, budget=5)
    screen = runner._screen(number=1)
    assert screen.energy_above_j == pytest.approx(1.5e-12)
    assert screen.min_accuracy == pytest.approx(0.9 - 0.05)  # baseline less the drop allowed
    study.enqueue_trial(QUEUED)
    with quiet_optuna():
        (trial,) = runner.run_one()
    assert trial.state == TrialState.COMPLETE, trial.user_attrs.get("fail_reason")
    assert trial.user_attrs["fidelity"] == "screen"
    measurement = trial.user_attrs["measurement"]
    # Real figures from the short protocol (its windows' length is the harness's to keep, and
    # a loaded machine stretches them: not asserted here).
    assert measurement["energy_j_per_item"] > 0 and measurement["windows"] >= 1


def test_screen_stops_the_infeasible_and_the_costly_only() -> None:
    from wattwise.search._objective import Screen

    screen = Screen(energy_above_j=2.0, min_accuracy=0.9)
    assert screen.stops(0.85, None)  # below the accuracy bound: whatever it costs
    assert screen.stops(0.95, 2.5) and not screen.stops(0.95, 1.5)
    assert not Screen().stops(0.1, 1e9)  # nothing known yet: the full protocol


def _add(
    study: optuna.Study,
    space: SearchSpace,
    params: dict[str, Any],
    joules: float = math.nan,
    accuracy: float = math.nan,
    *,
    failed_stage: str | None = None,
) -> None:
    """Add a finished trial of ``space``: complete with its figures, or failed at
    ``failed_stage`` for a reason of its own."""
    dists: dict[str, BaseDistribution] = {
        n: CategoricalDistribution(list(c)) for n, c in space.choices().items()
    }
    if failed_stage is not None:
        attrs = {FAILED_STAGE: failed_stage, "fail_reason": "mismatch"}
        trial = create_trial(
            state=TrialState.FAIL, params=params, distributions=dists, user_attrs=attrs
        )
    else:
        figures = {"accuracy": accuracy, "energy_j_per_item": joules, "latency_ms_p90": 1.0}
        trial = create_trial(
            values=[accuracy, joules, 1.0],
            params=params,
            distributions=dists,
            user_attrs={"figures": figures},
        )
    study.add_trial(trial)


def _study_with(
    tmp_path: Path,
    space: SearchSpace,
    trials: list[tuple[dict[str, Any], float, float]],
    max_accuracy_drop: float = 0.01,
) -> tuple[optuna.Study, SearchSettings]:
    """A study of ``space`` holding complete trials ``(params, J/item, accuracy)``."""
    settings = dataclasses.replace(_settings(20), space=space, max_accuracy_drop=max_accuracy_drop)
    url = f"sqlite:///{tmp_path / 'rows.db'}"
    study, _ = open_study(open_storage(url), "rows", settings, url=url)
    for params, joules, accuracy in trials:
        _add(study, space, params, joules, accuracy)
    return study, settings


def _queued(study: optuna.Study) -> list[tuple[dict[str, Any], str]]:
    return [
        (t.system_attrs["fixed_params"], t.user_attrs["queued_for"])
        for t in study.get_trials()
        if t.state == TrialState.WAITING
    ]


def test_a_new_best_gets_its_other_threads_and_neighbouring_batches_queued(
    tmp_path: Path,
) -> None:
    space = SearchSpace(
        models=(ModelChoice("base"),),
        deployments=("eager/fp32",),
        batch_sizes=(1, 4, 16, 64),
        threads=(0, 1),
    )
    best = {"model": "base", "deployment": "eager/fp32", "batch_size": 16, "threads": 1}
    study, settings = _study_with(
        tmp_path,
        space,
        [(best, 1e-3, 0.95), ({**best, "batch_size": 1}, 1e-4, 0.5)],  # cheaper, not feasible
        max_accuracy_drop=0.05,
    )
    done: set[int] = set()
    refine_around_best(study, settings, 0.95, done)
    why = "around the best, trial 0"
    assert _queued(study) == [
        ({**best, "threads": 0}, why),
        ({**best, "batch_size": 4}, why),
        ({**best, "batch_size": 64}, why),
    ]
    refine_around_best(study, settings, 0.95, done)  # the same best: nothing more
    assert len(_queued(study)) == 3


def test_refining_an_int8_best_tries_its_float_layers_in_the_other_precision_first(
    tmp_path: Path,
) -> None:
    space = SearchSpace(
        models=(ModelChoice("base"),),
        deployments=("openvino/int8", "openvino/int8-bf16", "onnxruntime/int8"),
        batch_sizes=(256,),
        threads=(0, 1),
    )
    best = {"model": "base", "deployment": "openvino/int8", "batch_size": 256, "threads": 1}
    study, settings = _study_with(tmp_path, space, [(best, 1e-3, 0.95)])
    refine_around_best(study, settings, 0.95, set())
    # Not ONNX Runtime's int8: another runtime is another model, not a neighbour.
    assert [p for p, _ in _queued(study)] == [
        {**best, "deployment": "openvino/int8-bf16"},
        {**best, "threads": 0},
    ]


def test_a_cheaper_model_that_missed_the_bound_in_int8_is_tried_in_float_first(
    tmp_path: Path,
) -> None:
    space = SearchSpace(
        models=tuple(ModelChoice(m) for m in ("base", "student", "quarter", "half", "close")),
        deployments=("openvino/int8", "openvino/bf16", "openvino/fp32"),
        batch_sizes=(64, 256),
        threads=(0, 1),
    )
    at = {"deployment": "openvino/int8", "batch_size": 256, "threads": 1}
    best = {"model": "base", **at}
    study, settings = _study_with(
        tmp_path,
        space,
        [
            (best, 4.3e-4, 0.95),
            ({"model": "student", **at}, 1.9e-4, 0.939),  # 1.1 points down: int8's doing?
            ({"model": "quarter", **at}, 1.7e-4, 0.922),  # 2.8 down: more than int8 costs
            ({"model": "half", **at}, 2.7e-4, 0.93),
            ({"model": "half", **at, "deployment": "openvino/bf16"}, 2.9e-4, 0.93),  # float too
            # Too close to the best's J/item to win in float, which costs more than int8.
            ({"model": "close", **at}, 3.5e-4, 0.939),
        ],
    )
    done: set[int] = set()
    refine_around_best(study, settings, 0.95, done)
    assert _queued(study) == [
        (
            {"model": "student", **at, "deployment": "openvino/bf16"},
            "trial 1's model in float: it missed the bound in int8",
        ),
        ({**best, "threads": 0}, "around the best, trial 0"),
        ({**best, "batch_size": 64}, "around the best, trial 0"),
    ]
    # Nothing more while those wait, though a new best came: it may change again before they run.
    _add(study, space, {"model": "quarter", **at, "batch_size": 64}, 1e-4, 0.95)
    refine_around_best(study, settings, 0.95, done)
    assert len(_queued(study)) == 3
    assert done == {0}


def test_a_model_kept_elsewhere_is_rescued_in_fp32_where_the_space_has_no_bf16(
    tmp_path: Path,
) -> None:
    space = SearchSpace(
        models=(ModelChoice("base"), ModelChoice("student")),
        deployments=("onnxruntime/int8", "onnxruntime/fp32", "openvino/fp32"),
        batch_sizes=(1,),
        threads=(1,),
    )
    at = {"batch_size": 1, "threads": 1}
    study, settings = _study_with(
        tmp_path,
        space,
        [
            ({"model": "base", "deployment": "openvino/fp32", **at}, 1e-3, 0.95),
            # Kept the bound on OpenVINO: its 3-point loss in ONNX Runtime's int8 is int8's.
            ({"model": "student", "deployment": "openvino/fp32", **at}, 8e-4, 0.945),
            ({"model": "student", "deployment": "onnxruntime/int8", **at}, 3e-4, 0.92),
        ],
    )
    refine_around_best(study, settings, 0.95, set())
    assert [p for p, _ in _queued(study)] == [
        {"model": "student", "deployment": "onnxruntime/fp32", **at}
    ]


@pytest.mark.parametrize("bf16", ["complete", "failed"])
def test_a_rescue_goes_on_to_fp32_only_when_bf16_failed_to_deploy(
    tmp_path: Path, bf16: str
) -> None:
    space = SearchSpace(
        models=(ModelChoice("base"), ModelChoice("student")),
        deployments=("openvino/int8", "openvino/bf16", "openvino/fp32"),
        batch_sizes=(256,),
        threads=(1,),
    )
    at = {"batch_size": 256, "threads": 1}
    student_bf16 = {"model": "student", "deployment": "openvino/bf16", **at}
    study, settings = _study_with(
        tmp_path,
        space,
        [
            ({"model": "base", "deployment": "openvino/int8", **at}, 4.3e-4, 0.95),
            ({"model": "student", "deployment": "openvino/int8", **at}, 2.2e-4, 0.939),
        ],
    )
    if bf16 == "failed":  # the output check refused it: a deterministic failure
        _add(study, space, student_bf16, failed_stage="deploy")
    else:
        _add(study, space, student_bf16, 3.5e-4, 0.945)
    refine_around_best(study, settings, 0.95, set())
    expected = [{**student_bf16, "deployment": "openvino/fp32"}] if bf16 == "failed" else []
    assert [p for p, _ in _queued(study)] == expected
