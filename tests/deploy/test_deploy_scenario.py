"""Scenario selection: candidates measured side by side in one run, the lowest J/item chosen."""

from __future__ import annotations

import statistics

import pytest
import torch

import wattwise.deploy as wd
from wattwise.errors import InputError


def _measured_j(cand: wd.CandidateResult) -> float:
    """A measured candidate's median J/item (``None`` only for a dropped one)."""
    assert cand.energy_j_per_item is not None, cand.reason
    return cand.energy_j_per_item


@pytest.mark.slow
def test_digits_ort_int8_and_compile_against_eager_fp32_side_by_side(task, trained, calib):
    """Digits CNN: ONNX Runtime int8 and torch.compile deployments measured against eager fp32
    side by side in one run; the better one chosen automatically by offline selection."""
    # One thread each: a fair comparison, and steadier on a shared 2-core machine.
    candidates = [
        wd.Deployment(backend="eager", precision="fp32", batch_size=32, threads=1),
        wd.Deployment(backend="onnxruntime", precision="int8", batch_size=32, threads=1),
        wd.Deployment(backend="compile", precision="fp32", batch_size=32, threads=1),
        wd.Deployment(backend="eager", precision="int8", batch_size=32, threads=1),  # dropped
    ]
    result = wd.select_deployment(
        trained,
        candidates,
        task.example_input,
        "offline",
        calibration=calib,
        rounds=2,
        max_time_s=2.0,  # the checks are of the selection and its labels, not precision
        isolate=True,
    )
    measured = [c for c in result.candidates if c.ok]
    assert [c.deployment for c in measured] == candidates[:3]
    dropped = result.candidates[3]
    assert not dropped.ok and "int8" in dropped.reason and "not prepared" in dropped.reason
    for cand in measured:
        assert len(cand.rounds_j_per_item) == 2 and len(cand.measurements) == 2
        assert cand.energy_j_per_item == pytest.approx(statistics.median(cand.rounds_j_per_item))
        # Every figure carries its source and uncertainty; all from the same meter.
        assert cand.energy_source is not None
        assert cand.energy_source.startswith(("measured:", "estimated:"))
        assert all(m.energy_source == cand.energy_source for m in cand.measurements)
        assert cand.energy_uncertainty is not None and 0 < cand.energy_uncertainty < 1
        assert all(m.isolated and m.batch_size == 32 and m.threads == 1 for m in cand.measurements)
        assert cand.check is not None and cand.check.passed
    best = min(measured, key=_measured_j)
    assert result.chosen is best
    assert result.deployed is not None and result.deployed.deployment == best.deployment
    assert result.ratio(best.deployment) == pytest.approx(1.0)
    for cand in measured:
        ratio = result.ratio(cand.deployment)
        assert ratio is not None and ratio >= 1.0
    assert best.energy_source is not None
    assert best.deployment.label in result.reason and best.energy_source in result.reason
    assert result.to_dict()["chosen"] == best.deployment.to_dict()


def test_online_scenario_serves_batch_one_under_a_latency_bound(random_model):
    x = torch.rand(1, 1, 8, 8)
    candidates = [
        wd.Deployment(backend="eager", precision="fp32"),
        wd.Deployment(backend="onnxruntime", precision="fp32", threads=1),
        wd.Deployment(backend="eager", precision="fp32", batch_size=4),
    ]
    result = wd.select_deployment(
        random_model,
        candidates,
        x,
        "online",
        latency_p90_ms=1e-6,
        rounds=1,
        max_time_s=1.0,
        isolate=False,
    )
    assert result.chosen is None and result.deployed is None
    assert "latency bound" in result.reason
    first, second, batched = result.candidates
    for cand in (first, second):
        assert cand.ok and not cand.meets_bound and "exceeds the bound" in cand.reason
        assert cand.latency_ms_p90 is not None and cand.latency_ms_p90 > 1e-6
    assert not batched.ok and "batch 1" in batched.reason


def test_selection_rejects_bad_requests(random_model):
    x = torch.rand(1, 1, 8, 8)
    dep = [wd.Deployment()]
    with pytest.raises(InputError, match="scenario"):
        wd.select_deployment(random_model, dep, x, "server")
    with pytest.raises(InputError, match="online"):
        wd.select_deployment(random_model, dep, x, "offline", latency_p90_ms=5.0)
    with pytest.raises(InputError, match="non-empty"):
        wd.select_deployment(random_model, [], x, "offline")
    with pytest.raises(InputError, match="rounds"):
        wd.select_deployment(random_model, dep, x, "offline", rounds=0)
    with pytest.raises(InputError, match=r"candidates\[0\]"):
        wd.select_deployment(random_model, [{"backend": "eager"}], x, "offline")  # type: ignore[list-item]
