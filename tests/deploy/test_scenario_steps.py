"""The steps of a selection, each on its own: validate, prepare, measure in rounds, summarise,
choose. (``test_deploy_scenario.py`` runs them together through ``select_deployment``.)"""

from __future__ import annotations

from typing import TypedDict

import pytest
import torch
from torch import nn

import wattwise.deploy as wd
from wattwise.deploy._scenario import (
    check_selection,
    choose,
    measure_rounds,
    prepare_candidates,
    summarise,
)
from wattwise.errors import InputError
from wattwise.measure import Measurement

X = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def _measurement(energy_j: float, latency_ms: float = 1.0, source: str = "measured:rapl"):
    return Measurement(
        mode="inference",
        device="cpu",
        batch_size=1,
        energy_j_per_item=energy_j,
        energy_above_idle_j_per_item=energy_j / 2,
        energy_source=source,
        energy_uncertainty=0.1 if source.startswith("measured:") else 0.4,
        idle_power_w=2.0,
        latency_ms_p50=latency_ms,
        latency_ms_p90=latency_ms,
        latency_ms_p99=latency_ms,
        throughput_items_per_s=1e3 / latency_ms,
        peak_memory_bytes=0,
        macs_per_item=0.0,
        params=0,
        co2e_g_per_million_items=0.0,
        grid_intensity_g_per_kwh=0.0,
        windows=3,
        window_s=0.5,
        ci95_rel=0.01,
        converged=True,
        threads=1,
        isolated=False,
        warmup_calls=1,
        harness_overhead_rel=0.0,
    )


class _FailsWhenMeasured(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("out of memory")


@pytest.fixture
def eager(random_model) -> wd.Deployed:
    return wd.deploy(random_model, "eager", example_input=X)


@pytest.fixture
def eager_cl(random_model) -> wd.Deployed:
    return wd.deploy(random_model, "eager_cl", example_input=X)


class _Selection(TypedDict):
    """``check_selection``'s keywords, typed so that ``**ok`` type-checks."""

    latency_p90_ms: float | None
    rounds: int
    max_time_s: float


def test_a_request_is_validated_and_repeats_are_dropped_in_order() -> None:
    a, b = wd.Deployment(backend="eager"), wd.Deployment(backend="eager_cl")
    ok: _Selection = {"latency_p90_ms": None, "rounds": 2, "max_time_s": 1.0}
    assert check_selection([a, b, a], "offline", **ok) == [a, b]
    assert check_selection([b], "online", **(ok | {"latency_p90_ms": 5})) == [b]
    with pytest.raises(InputError, match="scenario must be one of offline, online, got 'server'"):
        check_selection([a], "server", **ok)
    with pytest.raises(InputError, match="non-empty list"):
        check_selection(a, "offline", **ok)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="latency_p90_ms must be a number > 0"):
        check_selection([a], "online", **(ok | {"latency_p90_ms": float("nan")}))
    with pytest.raises(InputError, match="max_time_s must be > 0"):
        check_selection([a], "offline", **(ok | {"max_time_s": 0}))
    with pytest.raises(InputError, match="rounds must be an integer"):
        check_selection([a], "offline", **(ok | {"rounds": True}))


def test_candidates_that_cannot_be_served_or_prepared_are_dropped_with_the_reason(
    random_model,
) -> None:
    candidates = [
        wd.Deployment(backend="eager"),
        wd.Deployment(backend="eager", batch_size=4),
        wd.Deployment(backend="onnxruntime", precision="int8"),  # no calibration given
    ]
    deployed, dropped = prepare_candidates(random_model, candidates, X, "online")
    assert list(deployed) == [0] and deployed[0].check is not None and deployed[0].check.passed
    assert sorted(dropped) == [1, 2]
    assert "batch 1" in dropped[1].reason
    assert dropped[2].reason.startswith("not prepared: ") and "calibration" in dropped[2].reason
    assert not any(c.ok for c in dropped.values())
    deployed, dropped = prepare_candidates(random_model, candidates[:2], X, "offline")
    assert list(deployed) == [0, 1] and not dropped


def test_rounds_measure_every_candidate_and_drop_one_that_fails(random_model, eager) -> None:
    broken = wd.Deployed(
        module=_FailsWhenMeasured(),
        deployment=wd.Deployment(backend="eager_cl"),
        check=None,
        example_input=X,
        source_model=random_model,
    )
    runs, failed = measure_rounds({0: eager, 1: broken}, rounds=2, max_time_s=1.0, isolate=False)
    assert list(runs) == [0] and len(runs[0]) == 2
    assert all(m.batch_size == 1 and not m.isolated for m in runs[0])
    assert list(failed) == [1] and not failed[1].ok
    assert failed[1].reason.startswith("measuring failed in round 1: ")
    assert "RuntimeError" in failed[1].reason


def test_a_candidate_is_summarised_by_its_medians_and_held_to_the_bound(eager) -> None:
    rounds = [_measurement(3.0, 2.0), _measurement(1.0, 4.0), _measurement(2.0, 9.0)]
    result = summarise(eager, rounds, latency_p90_ms=None)
    assert result.ok and result.meets_bound and result.reason == ""
    assert result.energy_j_per_item == 2.0 and result.latency_ms_p90 == 4.0
    assert result.rounds_j_per_item == (3.0, 1.0, 2.0) and result.check is eager.check
    slow = summarise(eager, rounds, latency_p90_ms=3.0)
    assert slow.ok and not slow.meets_bound
    assert slow.reason == "p90 latency 4 ms exceeds the bound 3 ms"


def test_the_lowest_median_within_the_bound_is_chosen(
    eager: wd.Deployed, eager_cl: wd.Deployed
) -> None:
    cheap = summarise(eager_cl, [_measurement(1.0), _measurement(1.2)], None)
    dear = summarise(eager, [_measurement(2.0), _measurement(2.1)], None)
    result = choose("offline", None, (dear, cheap), {0: eager, 1: eager_cl}, rounds=2)
    assert result.chosen is cheap and result.deployed is eager_cl
    assert result.reason.startswith("eager_cl/fp32 b1 cpu: lowest median J/item (1.1 J")
    assert "next best eager/fp32 b1 cpu at 1.86×" in result.reason
    assert result.notes == ()

    overlapping = summarise(eager, [_measurement(1.15), _measurement(1.3)], None)
    result = choose("offline", None, (overlapping, cheap), {0: eager, 1: eager_cl}, rounds=2)
    assert result.chosen is cheap and any("overlap" in n for n in result.notes)

    estimated = summarise(eager, [_measurement(0.5, source="estimated:tdp")], None)
    result = choose("offline", None, (estimated, cheap), {0: eager, 1: eager_cl}, rounds=1)
    assert result.chosen is estimated
    assert any("different meters" in n for n in result.notes)
    assert any("energy is estimated" in n for n in result.notes)


def test_nothing_is_chosen_when_nothing_meets_the_bound(eager) -> None:
    slow = summarise(eager, [_measurement(1.0, 5.0)], latency_p90_ms=1.0)
    result = choose("online", 1.0, (slow,), {0: eager}, rounds=1)
    assert result.chosen is None and result.deployed is None
    assert result.reason == "no candidate met the latency bound"
    dropped = wd.CandidateResult(wd.Deployment(), False, "not prepared: no")
    result = choose("offline", None, (dropped,), {}, rounds=1)
    assert result.reason == "no candidate was measured" and result.candidates == (dropped,)
