"""One training run on the meters, in its own child process: train with a configuration until
the validation metric reaches the target, and say what it cost.

Energy to target counts every optimizer step and every evaluation after an epoch (early
stopping needs them) from the first step to the evaluation that reached the target; loading
the task and building the model are left out (every configuration pays them alike). The run
stops at the target, at its last epoch, past a time limit, or once it has spent more than
``max_energy_j`` (a bound the search sets: a run already dearer than the best one found cannot
be the cheapest, and need not finish).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from wattwise.tasks import TrainConfig
from wattwise.training._predict import Block, Prediction, block_ends, predict
from wattwise.training._space import _allowed_cpus

if TYPE_CHECKING:
    from torch import nn

    from wattwise.measure._power_limit import PowerControl
    from wattwise.measure.meters import Meter
    from wattwise.search._objective import TaskRef
    from wattwise.tasks import Task

__all__ = ["PowerProfiler", "RunSpec", "describe_prediction", "train_job", "train_run"]

CAP_CHECK_S = 1.0  # how often the energy and time caps are looked at between epochs
CLOCK_WINDOW_S = 5.0  # the run's meter window is restarted (and summed) this often
PROFILE_SHARES = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)  # of the default limit, as Zeus's profiler
PROFILE_WINDOW_S = 2.0  # each limit runs this long (≥ 10 NVML counter updates)


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """What one run is asked to do.

    Attributes:
        config: the :class:`TrainConfig` as a dict.
        target: stop when the task's metric reaches this (``None``: run every epoch).
        seed: seeds the model's initialisation and the data order.
        device: where it trains (``cpu``, ``cuda[:N]``).
        meter: the energy meter (``auto``).
        max_energy_j, max_time_s: stop once past either (``None``: no bound).
        max_slowdown: with ``profile_power_limit``, the most a limit may slow a step (0.1:
            10%) against the default limit.
        save_to: export the trained model there as an artifact (``None``: don't).
        announce: print the prediction to stderr as soon as epoch 1 has made it.
    """

    config: dict[str, Any]
    target: float | None
    seed: int = 0
    device: str = "cpu"
    meter: str = "auto"
    max_energy_j: float | None = None
    max_time_s: float | None = None
    max_slowdown: float = 0.1
    save_to: str | None = None
    announce: bool = False


class _Clock:
    """Seconds and joules since the run began. The meter's window is restarted every
    :data:`CLOCK_WINDOW_S` and the joules added up, so no counter wraps twice in one window
    (RAPL's correct one wrap each)."""

    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        self.mark = meter.start()
        self.t0 = time.perf_counter()
        self.banked_j = 0.0

    def now(self) -> tuple[float, float | None]:
        """``(seconds, joules)`` so far; joules ``None`` while the meter cannot resolve the
        open window (a counter that has not moved yet)."""
        from wattwise.measure.meters import CounterError

        t = time.perf_counter() - self.t0
        try:
            reading = self.meter.stop(self.mark)
        except CounterError:
            return t, None
        total = self.banked_j + reading.energy_j
        if reading.time_s >= CLOCK_WINDOW_S:
            self.banked_j, self.mark = total, self.meter.start()
        return t, total

    def resolved(self, limit_s: float = 2.0) -> tuple[float, float]:
        """``(seconds, joules)`` once the meter resolves them (waiting up to ``limit_s``)."""
        from wattwise.errors import WorkloadError

        deadline = time.perf_counter() + limit_s
        while True:
            t, e = self.now()
            if e is not None:
                return t, e
            if time.perf_counter() > deadline:
                raise WorkloadError("the meter did not resolve the run's energy within 2 s")
            time.sleep(0.05)


class PowerProfiler:
    """Zeus's just-in-time power-limit profiling, step by step: after the warm-up, each limit
    runs for :data:`PROFILE_WINDOW_S`; then the limit with the fewest joules per step whose
    step is at most ``1 + max_slowdown`` times as slow as under the highest limit is kept for
    the rest of the run. Every limit is put back when the run ends (see
    :func:`~wattwise.measure._power_limit.power_limit`)."""

    def __init__(
        self,
        limits: tuple[float, ...],
        device: str,
        meter: Meter,
        *,
        max_slowdown: float,
        control: PowerControl | None = None,
        window_s: float = PROFILE_WINDOW_S,
    ) -> None:
        self.limits = tuple(sorted(limits, reverse=True))
        self.device, self.meter, self.control = device, meter, control
        self.max_slowdown, self.window_s = float(max_slowdown), float(window_s)
        self.profile: list[dict[str, float]] = []
        self.chosen_w: float | None = None
        self._stack = contextlib.ExitStack()
        self._index = -1
        self._window: tuple[float, Any, int] | None = None

    @property
    def done(self) -> bool:
        return self.chosen_w is not None or not self.limits

    def _set(self, watts: float) -> None:
        from wattwise.measure._power_limit import power_limit

        self._stack.close()
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(power_limit(watts, self.device, control=self.control))

    def step(self) -> None:
        """Call after each optimizer step once the warm-up is over."""
        if self.done:
            return
        if self._window is None:
            self._index = 0
            self._set(self.limits[0])
            self._window = (time.perf_counter(), self.meter.start(), 0)
            return
        t0, mark, steps = self._window
        steps += 1
        elapsed = time.perf_counter() - t0
        if elapsed < self.window_s:
            self._window = (t0, mark, steps)
            return
        joules = self.meter.stop(mark).energy_j
        self.profile.append(
            {
                "power_limit_w": self.limits[self._index],
                "time_s_per_step": elapsed / steps,
                "energy_j_per_step": joules / steps,
            }
        )
        self._index += 1
        if self._index < len(self.limits):
            self._set(self.limits[self._index])
            self._window = (time.perf_counter(), self.meter.start(), 0)
            return
        self.chosen_w = self.choose()
        self._set(self.chosen_w)

    def choose(self) -> float:
        """The cheapest limit within the allowed slowdown of the highest one's step time."""
        fastest = self.profile[0]["time_s_per_step"]
        allowed = [
            p for p in self.profile if p["time_s_per_step"] <= fastest * (1 + self.max_slowdown)
        ]
        return min(allowed, key=lambda p: p["energy_j_per_step"])["power_limit_w"]

    def close(self) -> None:
        self._stack.close()


@contextlib.contextmanager
def _power(cfg: TrainConfig, spec: RunSpec, meter: Meter) -> Iterator[PowerProfiler | None]:
    """The run's power limit: fixed, profiled, or left alone; always put back."""
    from wattwise.measure._power_limit import power_limit, power_limit_choices

    if cfg.profile_power_limit:
        profiler = PowerProfiler(
            power_limit_choices(spec.device, shares=PROFILE_SHARES),
            spec.device,
            meter,
            max_slowdown=spec.max_slowdown,
            window_s=PROFILE_WINDOW_S,
        )
        try:
            yield profiler
        finally:
            profiler.close()
        return
    with power_limit(cfg.power_limit_w, spec.device):
        yield None


def describe_prediction(p: Prediction) -> str:
    """One line: the whole run's predicted energy and time, with their intervals."""
    from wattwise.report import fmt_energy_j

    low, high = p.interval_j
    return (
        f"after epoch 1: the run of {p.epochs} epoch(s) will take {fmt_energy_j(p.predicted_energy_j)} "
        f"[{fmt_energy_j(low)} - {fmt_energy_j(high)}] ({p.energy_source}) and "
        f"{p.predicted_time_s:.1f} s [{p.interval_s[0]:.1f} - {p.interval_s[1]:.1f}]"
    )


def _evaluator(task: Task, device: str) -> Callable[[nn.Module], float]:
    """The task's metric on the model where it trains (inputs moved to its device)."""
    if device == "cpu":
        return task.evaluate
    import torch

    from wattwise._inputs import detach_cpu, to_device

    class _OnDevice(torch.nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            args, kwargs = to_device(args, device), to_device(kwargs, device)
            return detach_cpu(self.inner(*args, **kwargs))

    return lambda model: task.evaluate(_OnDevice(model))


def train_run(task: Task, spec: RunSpec) -> dict[str, Any]:
    """Train a fresh model of ``task`` with ``spec``'s configuration, in this process, on the
    meters; see the module docstring. Returns the run's figures (see :func:`train_job`)."""
    import torch

    from wattwise.measure.meters import create_meter

    cfg = TrainConfig.from_dict(spec.config)
    torch.manual_seed(spec.seed)
    model = task.model_factory().to(spec.device)
    batch = cfg.batch_size or task.batch_size
    steps = math.ceil(len(task.train_data) / batch)  # type: ignore[arg-type]
    epochs = cfg.epochs or task.epochs
    ends = block_ends(steps)
    evaluate = _evaluator(task, spec.device)
    meter = create_meter(spec.meter, spec.device)
    state: dict[str, Any] = {"blocks": [], "curve": [], "stopped": None, "reached_at": None}
    prediction: list[Prediction] = []
    try:
        with _power(cfg, spec, meter) as profiler:
            clock = _Clock(meter)
            last: dict[str, Any] = {"step": 0, "t": 0.0, "e": 0.0, "check": 0.0}

            def over_caps(t: float, e: float | None) -> bool:
                if spec.max_time_s is not None and t > spec.max_time_s:
                    state["stopped"] = f"time limit ({spec.max_time_s:g} s)"
                    return True
                if spec.max_energy_j is not None and e is not None and e > spec.max_energy_j:
                    state["stopped"] = (
                        f"spent {e:.3g} J, over the {spec.max_energy_j:.3g} J it may spend to "
                        "beat the best run so far"
                    )
                    return True
                return False

            def on_step(epoch: int, step: int) -> bool:
                if profiler is not None and epoch * steps + step + 1 > ends[0]:
                    profiler.step()  # after epoch 1's first block: the warm-up
                if epoch == 0 and step + 1 in ends:
                    t, e = clock.now()
                    joules = e - last["e"] if e is not None and last["e"] is not None else None
                    state["blocks"].append(Block(step + 1 - last["step"], t - last["t"], joules))
                    last.update(step=step + 1, t=t, e=e)
                t = time.perf_counter() - clock.t0
                if t - last["check"] < CAP_CHECK_S:
                    return False
                last["check"] = t
                return over_caps(*clock.now())

            def on_epoch(epoch: int, trained: nn.Module) -> bool:
                t_eval0, e_eval0 = clock.now()
                accuracy = float(evaluate(trained))
                t, e = clock.now()
                entry = {"epoch": epoch + 1, "accuracy": accuracy, "time_s": t, "energy_j": e}
                state["curve"].append(entry)
                if epoch == 0 and e is not None and e_eval0 is not None:
                    prediction.append(
                        predict(
                            state["blocks"],
                            epoch_time_s=t,
                            epoch_energy_j=e,
                            eval_time_s=t - t_eval0,
                            eval_energy_j=e - e_eval0,
                            epochs=epochs,
                            energy_source=meter.source,
                        )
                    )
                    if spec.announce:
                        print(describe_prediction(prediction[0]), file=sys.stderr, flush=True)
                if spec.target is not None and accuracy >= spec.target:
                    if e is None:  # a counter not moved yet: the figure must exist
                        t, e = clock.resolved()
                        entry.update(time_s=t, energy_j=e)
                    state["reached_at"] = entry
                    return True
                return over_caps(t, e)

            task.fit(model, config=cfg, seed=spec.seed, on_step=on_step, on_epoch=on_epoch)
            total_t, total_e = clock.now()
            chosen_w = profiler.chosen_w if profiler is not None else cfg.power_limit_w
            profile = profiler.profile if profiler is not None else []
    finally:
        meter.close()
    curve = state["curve"]
    reached = state["reached_at"]
    # The whole schedule ran and the target was not reached (no cap stopped it).
    ran_out = reached is None and state["stopped"] is None and spec.target is not None
    if reached is None and state["stopped"] is None:
        state["stopped"] = (
            f"the target was not reached in {epochs} epochs" if spec.target is not None else None
        )
    if prediction and curve and curve[-1]["energy_j"] is not None:
        # Against the last whole epoch: a run stopped mid-epoch (a cap) ran part of another.
        prediction[0].settle(len(curve), curve[-1]["energy_j"], curve[-1]["time_s"])
        if profile:
            prediction[0].notes.append("epoch 1 ran under several power limits (profiling)")
    out: dict[str, Any] = {
        "config": cfg.to_dict(),
        "label": cfg.label(),
        "reached": reached is not None,
        "epochs": len(curve),
        "energy_to_target_j": reached["energy_j"] if reached else None,
        "time_to_target_s": reached["time_s"] if reached else None,
        "energy_j": total_e,
        "time_s": total_t,
        "accuracy": curve[-1]["accuracy"] if curve else None,
        "curve": curve,
        "stopped": state["stopped"],
        "ran_out": ran_out,
        "energy_source": meter.source,
        "energy_uncertainty": float(meter.uncertainty),
        "steps_per_epoch": steps,
        "vcpus": _allowed_cpus(),
        "prediction": prediction[0].to_dict() if prediction else None,
        "power_limit_w": chosen_w,
        "power_profile": profile,
    }
    if spec.save_to is not None:
        _export(task, model, spec.save_to, out)
    return out


def _export(task: Task, model: nn.Module, path: str, run: dict[str, Any]) -> None:
    """The trained model as an artifact (eager fp32, checked), loadable without running code."""
    import torch

    from wattwise.deploy import deploy, export_deployment

    model = model.to("cpu").to(memory_format=torch.contiguous_format).eval()  # type: ignore[call-overload]
    dep = deploy(model, "eager", "fp32", example_input=task.example_input)
    how = (
        f"Trained by `wattwise train` with {run['label']}: {run['epochs']} epoch(s), "
        f"{'reaching' if run['reached'] else 'not reaching'} the target."
    )
    export_deployment(
        dep, path, accuracy=run["accuracy"], task_name=task.name, how_made=how, overwrite=True
    )


def train_job(ref: TaskRef, spec: RunSpec) -> dict[str, Any]:
    """:func:`train_run` as a child job (see :func:`~wattwise.measure.run_isolated`): it dies
    with its parent, and the task comes by reference.

    Returns:
        ``config``, ``label``, ``reached``, ``epochs``, ``energy_to_target_j`` and
        ``time_to_target_s`` (``None`` unless reached), ``energy_j`` and ``time_s`` (all it
        spent), ``accuracy`` (the last), ``curve`` (per epoch: accuracy, seconds and joules
        so far), ``vcpus`` (the CPUs it was pinned to: its ``threads``, else all), ``stopped`` (why it stopped short, or ``None``), ``energy_source``,
        ``energy_uncertainty``, ``prediction`` (after epoch 1), ``power_limit_w`` and
        ``power_profile``.
    """
    from wattwise.measure._isolate import pin_threads
    from wattwise.search._objective import _die_with_parent, _quiet_torch

    _die_with_parent()
    threads = TrainConfig.from_dict(spec.config).threads
    if threads:
        # As every measuring job: a run on fewer threads is pinned to as many vCPUs (before
        # anything starts a thread; threads inherit their creator's affinity), so it owns,
        # and is charged for, only those.
        pin_threads(threads)
    task = ref.load()
    _quiet_torch()
    return train_run(task, spec)
