"""Scenarios (MLPerf's names): choose the deployment that spends the least energy per item.

* ``online``: one query at a time (batch 1), optionally under a latency bound on the p90 call
  latency: the lowest J/item among the candidates that meet it.
* ``offline``: all items available up front; batch size and threads are free: the lowest J/item.

Candidates are measured side by side in one run, in rounds, with the order rotated each round
(A B C, B C A, C A B): slow drifts of the machine (temperature, clocks, a neighbour's load) then
fall on every candidate alike instead of on whoever came last, and each candidate's figure is
the median over its rounds. Ratios between candidates measured this way are what a selection
rests on; a figure measured in another run is not compared.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from wattwise._core import SCENARIOS, check_choice
from wattwise.deploy._base import BACKENDS
from wattwise.deploy._check import CheckResult
from wattwise.deploy._deployment import Deployment
from wattwise.deploy._prepare import Deployed, deploy_with
from wattwise.errors import InputError, UnavailableError, WattwiseError, WorkloadError
from wattwise.measure import Measurement


@dataclasses.dataclass(frozen=True)
class CandidateResult:
    """One candidate of a selection: its median figures over the rounds, or why it was dropped.

    Attributes:
        deployment: the candidate.
        ok: measured in every round (passed preparation, the equivalence check and measuring).
        reason: why it was dropped, or why it misses the latency bound; ``""`` otherwise.
        energy_j_per_item: median over rounds; ``energy_source`` and ``energy_uncertainty``
            (relative) belong to it.
        latency_ms_p90: median over rounds of each round's p90 call latency.
        meets_bound: ``ok`` and within the scenario's latency bound (if any).
    """

    deployment: Deployment
    ok: bool
    reason: str = ""
    energy_j_per_item: float | None = None
    energy_source: str | None = None
    energy_uncertainty: float | None = None
    latency_ms_p90: float | None = None
    throughput_items_per_s: float | None = None
    rounds_j_per_item: tuple[float, ...] = ()
    measurements: tuple[Measurement, ...] = ()
    check: CheckResult | None = None
    meets_bound: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "deployment": self.deployment.to_dict(),
            "label": self.deployment.label,
            "ok": self.ok,
            "reason": self.reason,
            "energy_j_per_item": self.energy_j_per_item,
            "energy_source": self.energy_source,
            "energy_uncertainty": self.energy_uncertainty,
            "latency_ms_p90": self.latency_ms_p90,
            "throughput_items_per_s": self.throughput_items_per_s,
            "rounds_j_per_item": list(self.rounds_j_per_item),
            "check": self.check.to_dict() if self.check else None,
            "meets_bound": self.meets_bound,
        }


@dataclasses.dataclass(frozen=True, eq=False)
class SelectionResult:
    """What :func:`select_deployment` found.

    Attributes:
        scenario: ``online`` or ``offline``.
        latency_p90_ms: the bound used (online only).
        candidates: every candidate, in the order given, measured or dropped with a reason.
        chosen: the lowest-J/item candidate meeting the bound, or ``None`` if none did.
        deployed: the chosen candidate, prepared (ready to call or export).
        reason: one line on the choice, or on why nothing was chosen.
        notes: caveats (e.g. energy estimated rather than measured).
    """

    scenario: str
    latency_p90_ms: float | None
    candidates: tuple[CandidateResult, ...]
    chosen: CandidateResult | None
    deployed: Deployed | None
    reason: str
    notes: tuple[str, ...] = ()

    def ratio(self, deployment: Deployment) -> float | None:
        """J/item of ``deployment`` over J/item of the chosen one, both from this run."""
        if self.chosen is None or self.chosen.energy_j_per_item is None:
            return None
        for cand in self.candidates:
            if cand.deployment == deployment and cand.energy_j_per_item is not None:
                return cand.energy_j_per_item / self.chosen.energy_j_per_item
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "latency_p90_ms": self.latency_p90_ms,
            "chosen": self.chosen.deployment.to_dict() if self.chosen else None,
            "reason": self.reason,
            "notes": list(self.notes),
            "candidates": [c.to_dict() for c in self.candidates],
        }


def offline_candidates(
    backends: Iterable[str] = ("eager", "compile", "onnxruntime"),
    precisions: Iterable[str] = ("fp32",),
    batch_sizes: Iterable[int] = (1, 8, 32),
    threads: Iterable[int | None] = (None,),
    *,
    device: str = "cpu",
    model: Any = None,
) -> list[Deployment]:
    """Every backend × precision × batch size × threads combination the backend can run.

    Combinations a backend can't run on ``device`` (e.g. fp16 on the onnxruntime CPU provider;
    int8 on the torch backends unless ``model`` is a PT2E-quantized graph) are left out; names
    that don't exist raise.

    Example:
        >>> offline_candidates(["eager", "onnxruntime"], ["fp32", "int8"], [1, 32])  # doctest: +SKIP
    """
    out: list[Deployment] = []
    for backend, precision, batch, n_threads in itertools.product(
        list(backends), list(precisions), list(batch_sizes), list(threads)
    ):
        dep = Deployment(
            backend=backend, precision=precision, batch_size=batch, threads=n_threads, device=device
        )
        if BACKENDS.get(backend)().unsupported(precision, device, model) is None and dep not in out:
            out.append(dep)
    return out


def online_candidates(
    backends: Iterable[str] = ("eager", "compile", "onnxruntime"),
    precisions: Iterable[str] = ("fp32",),
    threads: Iterable[int | None] = (None,),
    *,
    device: str = "cpu",
    model: Any = None,
) -> list[Deployment]:
    """Like :func:`offline_candidates` at batch size 1 (the online scenario's only batch)."""
    return offline_candidates(backends, precisions, (1,), threads, device=device, model=model)


def select_deployment(
    model: Any,
    candidates: Sequence[Deployment],
    example_input: Any,
    scenario: str,
    *,
    calibration: Sequence[Any] | None = None,
    latency_p90_ms: float | None = None,
    max_time_s: float = 60.0,
    rounds: int = 3,
    meter: str = "auto",
    isolate: bool = True,
) -> SelectionResult:
    """Prepare, check and measure every candidate side by side; pick the lowest J/item.

    Args:
        model: the eager model (``nn.Module``).
        candidates: deployments to compare (e.g. from :func:`offline_candidates`); include eager
            fp32 to have the baseline measured in the same run.
        example_input: one input batch; its first row is what is measured.
        scenario: ``online`` (batch 1 only; optional ``latency_p90_ms``) or ``offline``.
        calibration: input batches for int8 calibration (and the equivalence check).
        latency_p90_ms: online only: the p90 call latency a candidate must not exceed.
        max_time_s: soft cap on the measuring time, split evenly over candidates and rounds
            (every measurement still takes its minimum number of windows).
        rounds: how many times each candidate is measured; its figure is the median.
        meter: the energy meter (``"auto"`` picks the best available).
        isolate: measure each time in a child process (see :func:`wattwise.measure`).

    Returns:
        A :class:`SelectionResult`; ``chosen`` is ``None`` when no candidate met the bound
        (``reason`` says why). Candidates that fail to prepare, mismatch eager fp32 or fail
        while measured are kept in ``candidates`` with ``ok=False`` and the reason.

    Example:
        >>> cands = offline_candidates(["eager", "onnxruntime"], ["fp32", "int8"], [1, 32])
        >>> res = select_deployment(model, cands, x, "offline", calibration=task.calibration_batches())
        >>> res.chosen.deployment.label, res.chosen.energy_j_per_item, res.chosen.energy_source
    """
    unique = check_selection(
        candidates,
        scenario,
        latency_p90_ms=latency_p90_ms,
        rounds=rounds,
        max_time_s=max_time_s,
    )
    deployed, dropped = prepare_candidates(
        model, unique, example_input, scenario, calibration=calibration
    )
    runs, failed = measure_rounds(
        deployed, rounds=rounds, max_time_s=max_time_s, meter=meter, isolate=isolate
    )
    results = {**dropped, **failed}
    results.update({i: summarise(deployed[i], ms, latency_p90_ms) for i, ms in runs.items()})
    ordered = tuple(results[i] for i in range(len(unique)))
    return choose(scenario, latency_p90_ms, ordered, deployed, rounds)


def check_selection(
    candidates: Sequence[Deployment],
    scenario: str,
    *,
    latency_p90_ms: float | None,
    rounds: int,
    max_time_s: float,
) -> list[Deployment]:
    """The candidates without repeats, in their order, once the request is known to be sound.

    Raises:
        InputError: an unknown scenario, no candidates or one that is not a
            :class:`Deployment`, a latency bound off the online scenario or not > 0, or bad
            ``rounds`` / ``max_time_s``.
    """
    check_choice(scenario, SCENARIOS, what="scenario")
    if isinstance(candidates, Deployment) or not isinstance(candidates, Sequence) or not candidates:
        raise InputError("candidates must be a non-empty list of Deployment")
    for i, cand in enumerate(candidates):
        if not isinstance(cand, Deployment):
            raise InputError(f"candidates[{i}] must be a Deployment, got {type(cand).__name__}")
    if latency_p90_ms is not None:
        if scenario != "online":
            raise InputError(
                "latency_p90_ms bounds the online scenario; offline has no latency bound"
            )
        if not (
            isinstance(latency_p90_ms, int | float)
            and math.isfinite(latency_p90_ms)
            and latency_p90_ms > 0
        ):
            raise InputError(f"latency_p90_ms must be a number > 0, got {latency_p90_ms!r}")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise InputError(f"rounds must be an integer >= 1, got {rounds!r}")
    if not (isinstance(max_time_s, int | float) and math.isfinite(max_time_s) and max_time_s > 0):
        raise InputError(f"max_time_s must be > 0, got {max_time_s!r}")
    unique: list[Deployment] = []
    for cand in candidates:
        if cand not in unique:
            unique.append(cand)
    return unique


def prepare_candidates(
    model: Any,
    candidates: Sequence[Deployment],
    example_input: Any,
    scenario: str,
    *,
    calibration: Sequence[Any] | None = None,
) -> tuple[dict[int, Deployed], dict[int, CandidateResult]]:
    """Prepare and check each candidate: ``(prepared, dropped)``, both keyed by position.

    A candidate the scenario cannot serve, or one that fails to prepare or mismatches eager
    fp32, is dropped with the reason instead of raising.
    """
    deployed: dict[int, Deployed] = {}
    dropped: dict[int, CandidateResult] = {}
    for i, cand in enumerate(candidates):
        if scenario == "online" and cand.batch_size != 1:
            dropped[i] = CandidateResult(
                cand, False, "the online scenario serves one query at a time (batch 1)"
            )
            continue
        try:
            deployed[i] = deploy_with(
                model, cand, example_input=example_input, calibration=calibration
            )
        except (InputError, UnavailableError, WorkloadError) as exc:
            dropped[i] = CandidateResult(cand, False, f"not prepared: {exc}")
    return deployed, dropped


def measure_rounds(
    deployed: dict[int, Deployed],
    *,
    rounds: int,
    max_time_s: float,
    meter: str = "auto",
    isolate: bool = True,
) -> tuple[dict[int, list[Measurement]], dict[int, CandidateResult]]:
    """Measure every prepared candidate once a round, the order rotated each round (see the
    module docstring): ``(measurements of those measured in every round, dropped)``.

    ``max_time_s`` is split evenly over candidates and rounds. A candidate whose measuring
    fails is dropped with the round and the reason, and not measured again.
    """
    alive = list(deployed)
    runs: dict[int, list[Measurement]] = {i: [] for i in alive}
    failed: dict[int, CandidateResult] = {}
    payloads = {i: (deployed[i].factory() if isolate else deployed[i].module) for i in alive}
    per_run_s = max_time_s / max(1, rounds * len(alive))
    for r in range(rounds):
        order = alive[r % len(alive) :] + alive[: r % len(alive)] if alive else []
        for i in order:
            try:
                m = _measure(payloads[i], deployed[i], per_run_s, meter, isolate)
            except WattwiseError as exc:
                failed[i] = CandidateResult(
                    deployed[i].deployment,
                    False,
                    f"measuring failed in round {r + 1}: {exc}",
                    check=deployed[i].check,
                )
                continue
            runs[i].append(m)
        alive = [i for i in alive if i not in failed]
    return {i: runs[i] for i in alive}, failed


def summarise(
    deployed: Deployed, measurements: Sequence[Measurement], latency_p90_ms: float | None
) -> CandidateResult:
    """One measured candidate: medians over its rounds, the worst round's uncertainty, and
    whether its p90 latency meets ``latency_p90_ms`` (if given)."""
    ms = list(measurements)
    result = CandidateResult(
        deployment=deployed.deployment,
        ok=True,
        energy_j_per_item=statistics.median(m.energy_j_per_item for m in ms),
        energy_source=ms[0].energy_source,
        energy_uncertainty=max(m.energy_uncertainty for m in ms),
        latency_ms_p90=statistics.median(m.latency_ms_p90 for m in ms),
        throughput_items_per_s=statistics.median(m.throughput_items_per_s for m in ms),
        rounds_j_per_item=tuple(m.energy_j_per_item for m in ms),
        measurements=tuple(ms),
        check=deployed.check,
        meets_bound=True,
    )
    if latency_p90_ms is not None and (result.latency_ms_p90 or 0.0) > latency_p90_ms:
        result = dataclasses.replace(
            result,
            meets_bound=False,
            reason=f"p90 latency {result.latency_ms_p90:.3g} ms exceeds the bound {latency_p90_ms:g} ms",
        )
    return result


def choose(
    scenario: str,
    latency_p90_ms: float | None,
    candidates: tuple[CandidateResult, ...],
    deployed: dict[int, Deployed],
    rounds: int,
) -> SelectionResult:
    """The lowest median J/item among ``candidates`` that meet the bound (ties: the lower
    latency), with the reason in one line and notes on what makes the choice less certain.

    ``deployed`` maps a candidate's position to its prepared deployment.
    """
    notes: list[str] = []
    sources = {c.energy_source for c in candidates if c.ok}
    if len(sources) > 1:
        notes.append(
            f"candidates were measured with different meters ({', '.join(sorted(map(str, sources)))})"
        )
    if any(s and s.startswith("estimated:") for s in sources):
        notes.append(
            "energy is estimated (no counter here): rankings follow the estimate's power model"
        )
    eligible = [
        (c, i)
        for i, c in enumerate(candidates)
        if c.meets_bound and c.energy_j_per_item is not None
    ]
    if not eligible:
        why = (
            "no candidate was measured"
            if not any(c.ok for c in candidates)
            else "no candidate met the latency bound"
        )
        return SelectionResult(scenario, latency_p90_ms, candidates, None, None, why, tuple(notes))
    best, best_index = min(
        eligible, key=lambda ci: (ci[0].energy_j_per_item, ci[0].latency_ms_p90 or 0.0)
    )
    assert best.energy_j_per_item is not None
    others = sorted(
        (c for c, _ in eligible if c is not best and c.energy_j_per_item),
        key=lambda c: c.energy_j_per_item or 0.0,
    )
    margin = ""
    if others:
        second = others[0]
        margin = f"; next best {second.deployment.label} at {(second.energy_j_per_item or 0.0) / best.energy_j_per_item:.2f}×"
        # The meter's stated uncertainty is mostly a shared bias that cancels in a side-by-side
        # ratio; what doesn't cancel is the round-to-round spread.
        if max(best.rounds_j_per_item) >= min(second.rounds_j_per_item):
            notes.append(
                f"the rounds of {best.deployment.label} and {second.deployment.label} overlap: their order is not certain"
            )
    reason = (
        f"{best.deployment.label}: lowest median J/item ({best.energy_j_per_item:.3g} J, {best.energy_source}, "
        f"±{best.energy_uncertainty:.0%}) over {rounds} round(s){margin}"
    )
    return SelectionResult(
        scenario,
        latency_p90_ms,
        candidates,
        best,
        deployed[best_index],
        reason,
        tuple(notes),
    )


def _measure(
    payload: Any, deployed: Deployed, max_time_s: float, meter: str, isolate: bool
) -> Measurement:
    from wattwise.measure import measure

    dep = deployed.deployment
    return measure(
        payload,
        deployed.example_input,
        device=dep.device,
        batch_size=dep.batch_size,
        threads=dep.threads,
        max_time_s=max_time_s,
        meter=meter,
        isolate=isolate,
    )
