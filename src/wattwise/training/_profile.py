"""The cost of one training step under each setting of the knobs that do not change what a run
learns (precision, threads, memory format), measured side by side in one child process.

Each of those knobs moved digits' energy per step by 5 to 15% here, less than one run's
spread from seed to seed, so a walk that compares whole runs cannot tell them apart; together
they were worth 1.36x. Steps can be compared far more finely than runs: every setting trains
the same model on the same batches for a fixed window, in rotating rounds (A B C ..., then
B C ... A), and its figure is the median over rounds of its joules per item. The cheapest
setting then joins the walk as one candidate.

``torch.compile`` is left out: what it costs is the compile, once per run, not the step.
"""

from __future__ import annotations

import copy
import itertools
import statistics
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wattwise.search._objective import TaskRef
    from wattwise.tasks import Task
    from wattwise.training._space import TrainingSpace

__all__ = ["STEP_KNOBS", "profile_job", "profile_steps", "step_variants"]

STEP_KNOBS = ("precision", "threads", "channels_last")
WINDOW_S = 0.25  # each setting trains at least this long per round ...
MIN_STEPS = 20  # ... and at least this many steps
ROUNDS = 3


def step_variants(space: TrainingSpace, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``params`` under every combination of the space's :data:`STEP_KNOBS` values, ``params``
    itself first."""
    knobs = [k for k in STEP_KNOBS if k in space.choices]
    out = [dict(params)]
    for values in itertools.product(*(space.choices[k] for k in knobs)):
        variant = {**params, **dict(zip(knobs, values, strict=True))}
        if variant not in out:
            out.append(variant)
    return out


def profile_steps(
    task: Task,
    configs: Sequence[Mapping[str, Any]],
    *,
    seed: int = 0,
    device: str = "cpu",
    meter: str = "auto",
    rounds: int = ROUNDS,
    window_s: float = WINDOW_S,
) -> dict[str, Any]:
    """In this process: every configuration (a :class:`TrainConfig` dict) trains its own copy of
    one freshly initialised model, through :meth:`Task.fit` (the real step: autocast, memory
    format, threads), for a window per round; rounds rotate the order. Returns ``rows`` (per
    configuration: ``config``, ``j_per_item`` and ``s_per_item``, medians over rounds, and
    ``rounds_j_per_item``), the ``energy_j`` and ``time_s`` the profile spent, and
    ``energy_source``."""
    import torch

    from wattwise.measure.meters import create_meter
    from wattwise.tasks import TrainConfig

    torch.manual_seed(seed)
    base = task.model_factory().to(device)
    cfgs = [TrainConfig.from_dict(dict(c)) for c in configs]
    models = [copy.deepcopy(base) for _ in cfgs]
    meter_ = create_meter(meter, device)
    per: list[list[tuple[float, float]]] = [[] for _ in cfgs]
    spent_j = spent_s = 0.0
    try:
        for r in range(-1, rounds):  # round -1 is the warm-up: allocator, autocast caches
            shift = max(r, 0) % len(cfgs)
            order = [*range(shift, len(cfgs)), *range(shift)]
            for i in order:
                cfg, model = cfgs[i], models[i]
                batch = cfg.batch_size or task.batch_size
                steps = [0]
                t0 = time.perf_counter()

                def stop(_epoch: int, _step: int, t0: float = t0, steps: list[int] = steps) -> bool:
                    steps[0] += 1
                    return steps[0] >= MIN_STEPS and time.perf_counter() - t0 >= window_s

                mark = meter_.start()
                # Many epochs: the window, not the epoch, ends the call; the schedule's shape
                # does not change what a step costs.
                task.fit(model, config=cfg, epochs=1000, seed=seed + r, on_step=stop)
                reading = _resolved(meter_, mark)
                spent_j, spent_s = spent_j + reading.energy_j, spent_s + reading.time_s
                if cfg.threads:
                    # A run on fewer threads is pinned to as many vCPUs (training/_run.py),
                    # and this one child is not: read the window as the run's meter would.
                    reading = meter_.as_pinned(reading, cfg.threads)
                if r >= 0:
                    items = steps[0] * batch
                    per[i].append((reading.energy_j / items, reading.time_s / items))
    finally:
        meter_.close()
    return {
        "rows": [
            {
                "config": cfg.to_dict(),
                "j_per_item": statistics.median(j for j, _ in rows),
                "s_per_item": statistics.median(s for _, s in rows),
                "rounds_j_per_item": [j for j, _ in rows],
            }
            for cfg, rows in zip(cfgs, per, strict=True)
        ],
        "energy_j": spent_j,
        "time_s": spent_s,
        "energy_source": meter_.source,
        "rounds": rounds,
    }


def _resolved(meter: Any, mark: object, limit_s: float = 2.0) -> Any:
    """The window's reading once the meter resolves it (a counter that has not moved yet is
    waited for, up to ``limit_s``)."""
    from wattwise.errors import WorkloadError
    from wattwise.measure.meters import CounterError

    deadline = time.perf_counter() + limit_s
    while True:
        try:
            return meter.stop(mark)
        except CounterError:
            if time.perf_counter() > deadline:
                raise WorkloadError("the meter did not resolve a step window within 2 s") from None
            time.sleep(0.05)


def profile_job(
    ref: TaskRef, configs: Sequence[Mapping[str, Any]], seed: int, device: str, meter: str
) -> dict[str, Any]:
    """:func:`profile_steps` as a child job: it dies with its parent."""
    from wattwise.search._objective import _die_with_parent, _quiet_torch

    _die_with_parent()
    task = ref.load()
    _quiet_torch()
    return profile_steps(task, configs, seed=seed, device=device, meter=meter)
