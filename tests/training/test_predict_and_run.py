"""The first-epoch prediction (its arithmetic, on made-up blocks) and one real run on the meters
(digits, in this process): curve, early stop at the target, caps, the prediction settled."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from pathlib import Path

import pytest

from wattwise.errors import InputError
from wattwise.measure.meters import create_meter
from wattwise.tasks import DigitsCNN, TrainConfig, digits
from wattwise.training import (
    Block,
    PowerProfiler,
    Prediction,
    RunSpec,
    block_ends,
    predict,
    train_run,
)


class FileControl:
    """A board whose limit lives in a JSON file (NVML cannot exist here): 100-700 W."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.write_text(json.dumps({"limit_w": 700.0}))

    def key(self) -> str:
        return "GPU-file-train"

    def constraints_w(self) -> tuple[float, float, float]:
        return 100.0, 700.0, 700.0

    def get_w(self) -> float:
        return float(json.loads(self.path.read_text())["limit_w"])

    def set_w(self, watts: float) -> None:
        self.path.write_text(json.dumps({"limit_w": float(watts)}))


def _task(epochs: int = 4):
    return dataclasses.replace(
        digits(), model_factory=functools.partial(DigitsCNN, width=0.25), epochs=epochs
    )


def test_block_ends_cover_the_epoch() -> None:
    assert block_ends(23) == [3, 6, 9, 12, 14, 17, 20, 23]
    assert block_ends(3) == [1, 2, 3]
    with pytest.raises(InputError):
        block_ends(0)


def test_warm_up_is_kept_out_of_the_rate_and_the_interval_brackets_it() -> None:
    # 8 blocks of 10 steps: a 50 s warm-up (a compile), then 0.1 s/step at 10 W, one block
    # slower.
    blocks = [Block(10, 50.0, 500.0)] + [Block(10, 1.0, 10.0)] * 6 + [Block(10, 1.5, 15.0)]
    train_t, train_e = sum(b.time_s for b in blocks), sum(b.energy_j or 0.0 for b in blocks)
    p = predict(
        blocks,
        epoch_time_s=train_t + 0.5,
        epoch_energy_j=train_e + 5.0,
        eval_time_s=0.5,
        eval_energy_j=5.0,
        epochs=10,
        energy_source="estimated:cpu-ccf",
    )
    steady_rate = 75.0 / 70  # J/step over blocks 2..8
    assert p.epoch_energy_j == pytest.approx(80 * steady_rate + 5.0)
    assert p.predicted_energy_j == pytest.approx(train_e + 5.0 + 9 * p.epoch_energy_j)
    low, high = p.interval_j
    assert low == pytest.approx(train_e + 5.0 + 9 * (80 * 1.0 + 5.0))
    assert high == pytest.approx(train_e + 5.0 + 9 * (80 * 1.5 + 5.0))
    assert low < p.predicted_energy_j < high
    assert p.warmup_energy_j == pytest.approx(p.energy_at(1) - p.epoch_energy_j)
    # CarbonTracker's rule (epoch 1 x 10) counts the warm-up ten times: more than twice this.
    assert p.predicted_energy_j < 0.5 * 10 * (train_e + 5.0)
    # A run that stopped after 3 epochs is checked against the prediction for 3.
    p.settle(3, p.energy_at(3) * 1.1, p.time_at(3))
    assert p.energy_error == pytest.approx(1 / 1.1 - 1)
    assert p.time_error == pytest.approx(0.0)
    assert Prediction.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    p.settle(1, 1.0, 1.0)  # stopped with epoch 1: no error to state
    assert p.energy_error is None and "stopped after" in p.notes[-1]


def test_blocks_the_meter_could_not_resolve_take_the_steady_power() -> None:
    blocks = [Block(5, 2.0, 20.0), Block(5, 1.0, None), Block(5, 1.0, 10.0)]
    p = predict(
        blocks,
        epoch_time_s=4.0,
        epoch_energy_j=40.0,
        eval_time_s=0.0,
        eval_energy_j=0.0,
        epochs=2,
        energy_source="measured:nvml",
    )
    assert p.epoch_energy_j == pytest.approx(15 * 2.0)  # 10 W over 0.2 s/step
    assert any("resolution" in n for n in p.notes)
    one = predict(
        [Block(3, 1.0, 5.0)],
        epoch_time_s=1.0,
        epoch_energy_j=5.0,
        eval_time_s=0.0,
        eval_energy_j=0.0,
        epochs=4,
        energy_source="x",
    )
    assert one.predicted_energy_j == pytest.approx(20.0) and "too few steps" in one.notes[0]


def test_a_real_run_stops_at_its_target_and_settles_its_prediction() -> None:
    task = _task(epochs=6)
    run = train_run(task, RunSpec(TrainConfig(threads=1).to_dict(), target=0.8, meter="estimate"))
    assert run["reached"] and run["accuracy"] >= 0.8
    assert run["epochs"] == len(run["curve"]) < 6
    assert run["energy_to_target_j"] == run["curve"][-1]["energy_j"] > 0
    assert run["time_to_target_s"] == run["curve"][-1]["time_s"] > 0
    energies = [c["energy_j"] for c in run["curve"]]
    assert energies == sorted(energies)  # cumulative
    assert run["energy_source"] == "estimated:cpu-ccf" and run["stopped"] is None  # meter=estimate
    p = run["prediction"]
    assert p["epochs"] == 6 and p["actual_epochs"] == run["epochs"]
    assert p["interval_j"][0] <= p["predicted_energy_j"] <= p["interval_j"][1]
    assert p["actual_energy_j"] == pytest.approx(run["energy_to_target_j"])  # whole epochs
    assert p["energy_error"] is not None and abs(p["energy_error"]) < 1.0


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to pin one")
def test_a_child_run_on_one_thread_is_pinned_to_one_cpu_and_charged_for_it() -> None:
    """As every measuring child: a run on fewer threads owns as many vCPUs, so the estimate
    charges it their idle share alone (the step profile reads its windows the same way)."""
    from wattwise.measure import run_isolated
    from wattwise.search._objective import TaskRef
    from wattwise.training._run import train_job

    ref = TaskRef("train_tasks:tiny", None)
    runs = {
        threads: run_isolated(
            train_job,
            ref,
            RunSpec(TrainConfig(threads=threads, epochs=1).to_dict(), 0.0, meter="estimate"),
            threads=threads,
            timeout_s=120,
            what="a pinned run",
        )
        for threads in (1, None)
    }
    assert runs[1]["vcpus"] == 1
    assert runs[None]["vcpus"] == len(os.sched_getaffinity(0))


def test_a_run_is_stopped_past_its_energy_cap_and_an_unreached_target_says_so() -> None:
    task = _task(epochs=3)
    capped = train_run(
        task, RunSpec(TrainConfig().to_dict(), 1.01, meter="estimate", max_energy_j=1e-9)
    )
    assert not capped["reached"] and "beat the best" in capped["stopped"]
    assert capped["energy_to_target_j"] is None
    full = train_run(task, RunSpec(TrainConfig(epochs=1).to_dict(), 1.01, meter="estimate"))
    assert not full["reached"] and full["stopped"] == "the target was not reached in 1 epochs"


def test_the_trained_model_is_exported_as_an_artifact(tmp_path: Path) -> None:
    from wattwise.deploy import load_artifact

    task = _task(epochs=1)
    run = train_run(
        task,
        RunSpec(
            TrainConfig(channels_last=True).to_dict(),
            None,
            meter="estimate",
            save_to=str(tmp_path / "artifact"),
        ),
    )
    loaded = load_artifact(tmp_path / "artifact")
    out = loaded(task.example_input)
    assert out.shape == (1, 10)
    assert run["stopped"] is None and run["epochs"] == 1


def test_power_profiler_tries_each_limit_then_keeps_the_cheapest_within_the_slowdown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATTWISE_STATE_DIR", str(tmp_path / "state"))
    board = FileControl(tmp_path / "board.json")
    meter = create_meter("estimate", "cpu")
    profiler = PowerProfiler(
        (700.0, 500.0, 300.0), "cuda", meter, max_slowdown=0.1, control=board, window_s=0.0
    )
    seen = []
    while not profiler.done:
        profiler.step()
        seen.append(board.get_w())
    assert [p["power_limit_w"] for p in profiler.profile] == [700.0, 500.0, 300.0]
    assert profiler.chosen_w in (700.0, 500.0, 300.0) and board.get_w() == profiler.chosen_w
    # choose(): the cheapest among those within 10% of the fastest step.
    profiler.profile[:] = [
        {"power_limit_w": 700.0, "time_s_per_step": 1.0, "energy_j_per_step": 10.0},
        {"power_limit_w": 500.0, "time_s_per_step": 1.08, "energy_j_per_step": 8.0},
        {"power_limit_w": 300.0, "time_s_per_step": 1.5, "energy_j_per_step": 6.0},
    ]
    assert profiler.choose() == 500.0
    profiler.close()
    assert board.get_w() == 700.0  # put back


@pytest.mark.gpu
def test_a_gpu_run_profiles_the_power_limit_and_puts_it_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    from wattwise.measure._power_limit import NvmlPowerControl, power_limit_availability

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    if not (available := power_limit_availability("cuda")):
        pytest.skip(f"power limits cannot be set here: {available.reason}")
    import wattwise.training._run as run_module

    before = NvmlPowerControl("cuda").get_w()
    task = _task(epochs=40)
    # Six limits of 0.3 s each (digits is small; a real run profiles 2 s per limit).
    monkeypatch.setattr(run_module, "PROFILE_WINDOW_S", 0.3)
    run = train_run(
        task,
        RunSpec(TrainConfig(profile_power_limit=True).to_dict(), None, device="cuda"),
    )
    assert run["energy_source"] == "measured:nvml"
    assert run["power_profile"] and run["power_limit_w"] is not None
    assert abs(NvmlPowerControl("cuda").get_w() - before) < 1
