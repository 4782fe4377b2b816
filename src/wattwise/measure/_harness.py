"""The measurement harness: energy per item of a model's inference or training step.

What one call does, in order (all inside a child process unless ``isolate=False``):

1. build the model (or call the factory), move it and the batch to the device;
2. run it once, checking it doesn't raise and outputs no NaN; count MACs on that call;
3. warm up until the latency is stable (median of the last 3 calls within 5% of the
   3 before them) or a warm-up time cap;
4. measure the idle power with the same meter, sleeping for one window;
5. measure windows, each long enough for the meter (≥ ``min_window_s``, e.g. 10 NVML counter
   updates) by repeating the work, until the 95% confidence interval of the per-window J/item
   is within ``target_ci95_rel`` of the median, or the time cap; on the CPU, a window in which
   other processes used more than ``FOREIGN_CORES_MAX`` cores is dropped and measured again
   (at most ``MAX_REPEATED_WINDOWS`` times, and not past the time cap), then kept and
   flagged (see :class:`CpuWatch`);
6. report medians, percentiles, and the harness's own overhead inside the windows.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wattwise._core import MODES, check_choice, first_line
from wattwise._inputs import (
    call,
    check_input,
    describe,
    detach_cpu,
    primary_tensor,
    take_rows,
    to_device,
    tokens_per_item,
)
from wattwise.errors import InputError, UnavailableError, WorkloadError
from wattwise.measure import _carbon, _stats
from wattwise.measure._generate import (
    GenerateSpec,
    Generator,
    Phase,
    check_runs,
    generator_for,
    prompt_ids,
    summarise,
    timed_pass,
)
from wattwise.measure._isolate import pin_threads, run_isolated
from wattwise.measure._lock import device_lock
from wattwise.measure._macs import count_step_macs
from wattwise.measure._measurement import Measurement

if TYPE_CHECKING:
    from wattwise.measure.meters import Meter, Reading

DEFAULT_MIN_WINDOW_S = 0.5
# Overrides DEFAULT_MIN_WINDOW_S for every measurement this process and its children make (a
# caller's min_window_s still wins, and so does a meter's own minimum). The search tests set it
# to 0.1 s: they check what a search does with its figures, not the figures' precision, and
# every trial, baseline and confirmation child then measures in a fifth of the time.
MIN_WINDOW_ENV = "WATTWISE_MIN_WINDOW_S"
MIN_WINDOWS = 3
# Generation on a GPU, after ML.ENERGY's protocol: windows of at least 5 s (a board's power
# and clocks take seconds to settle at a new load), and each measurement starts from a GPU
# no hotter than COOL_GPU_C, waiting up to COOL_DOWN_MAX_S for it to cool from the last one.
GPU_GENERATION_WINDOW_S = 5.0
COOL_GPU_C = 60.0
COOL_DOWN_MAX_S = 60.0
MAX_WINDOWS = 50
# A window is disturbed when other processes used more than this many cores on average during
# it (beyond the counters' resolution, see CpuWatch.disturbed). On our idle 2-core VM the
# background is 0.00-0.01 cores; one busy-loop process per core reads 1.0-1.9 cores.
FOREIGN_CORES_MAX = 0.25
# Disturbed windows dropped and measured again per measurement, before they are kept and flagged.
MAX_REPEATED_WINDOWS = 5
PROC_STAT = Path("/proc/stat")


@dataclasses.dataclass(frozen=True)
class _Workload:
    model: Any  # nn.Module, zero-arg factory, or a plain callable taking the batch
    example_input: Any  # a tensor, tuple or dict of tensors (wattwise._inputs), on the CPU
    device: str
    batch_size: int
    mode: str
    target: Any
    loss_fn: Any
    meter: str
    threads: int | None
    min_window_s: float | None
    max_time_s: float
    target_ci95_rel: float
    warmup_max_s: float
    grid_g_per_kwh: float
    isolated: bool
    count_macs: bool = True
    generate: GenerateSpec | None = None


def measure(
    model: Any,
    example_input: Any,
    *,
    device: str = "cpu",
    batch_size: int = 1,
    mode: str = "inference",
    target: Any = None,
    loss_fn: Callable[..., Any] | None = None,
    meter: str = "auto",
    threads: int | None = None,
    min_window_s: float | None = None,
    max_time_s: float = 30.0,
    target_ci95_rel: float = 0.02,
    warmup_max_s: float | None = None,
    isolate: bool = True,
    grid_intensity_g_per_kwh: float | None = None,
    count_macs: bool = True,
    generate: GenerateSpec | None = None,
) -> Measurement:
    """Measure energy per item, latency and size of ``model`` on ``device``.

    Args:
        model: an ``nn.Module``; a zero-argument factory returning one (cheaper to send to
            the child process); or any callable taking the batch (e.g. an ONNX Runtime
            session wrapper).
        example_input: real input rows: a tensor, a tuple of tensors (positional arguments)
            or a dict of named tensors (keyword arguments, e.g. ``input_ids`` and
            ``attention_mask``), dtypes as the model takes them; the measured batch of
            ``batch_size`` rows cycles through its rows. For token inputs (integer tensors),
            the :class:`Measurement` also counts ``tokens_per_item``.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        mode: ``"inference"`` (no grad, eval mode) or ``"train"`` (forward, loss, backward
            and an SGD step per call; energy is per sample trained). Training runs on a copy:
            the caller's module keeps its weights, buffers, gradients and flags.
        target: labels for ``mode="train"``, one row per row of ``example_input``.
        loss_fn: training loss; default cross-entropy for integer targets, else MSE.
        meter: ``"auto"`` or a meter name (``nvml``, ``rapl``, ``estimate``).
        threads: intra-op threads (CPU cores are pinned to match); default all allowed cores.
        min_window_s: shortest measured window; default max(0.5 s, the meter's minimum).
        max_time_s: soft cap on the measuring phase (at least 3 windows are always taken).
        target_ci95_rel: stop once the 95% CI half-width of J/item is within this fraction.
        isolate: measure in a spawned child process (recommended; needs a picklable model).
        grid_intensity_g_per_kwh: for the CO2e figure; default see ``_carbon``.
        count_macs: count the MACs of one call (``macs_per_item``). Counting goes through
            torch's dispatch, which loads dynamo (about 1.5 s in a fresh child); a caller that
            has the count already, or publishes none, passes False and gets 0.
        generate: measure generation instead of one forward call: ``batch_size`` sequences
            each prefill a prompt of ``generate.prompt_tokens`` (the example's token ids,
            repeated) and decode ``generate.new_tokens`` greedily, with the model's KV cache
            where it has one (see :mod:`wattwise.measure._generate`). The result's
            ``generation`` holds prefill and decode J/token, J per response, TTFT and TBT;
            an item is one response.

    Returns:
        A :class:`Measurement`; its ``energy_source`` says whether the joules were measured
        by a counter or estimated, and ``energy_uncertainty`` how far to trust them. On the
        CPU, windows in which other processes were busy are measured again, then kept and
        counted in ``disturbed_windows`` (with a note): such figures may be inflated.

    Example:
        >>> m = wattwise.measure(model, torch.randn(1, 3, 224, 224), batch_size=32)
        >>> print(m.energy_j_per_item, m.energy_source)
    """
    device = _check_arguments(
        example_input,
        device=device,
        batch_size=batch_size,
        mode=mode,
        target=target,
        threads=threads,
        max_time_s=max_time_s,
        target_ci95_rel=target_ci95_rel,
    )
    if generate is not None:
        if not isinstance(generate, GenerateSpec):
            raise InputError(f"generate must be a GenerateSpec, got {type(generate).__name__}")
        if mode != "inference":
            raise InputError("generate= measures inference; it takes mode='inference'")
        prompt_ids(example_input, 1, 1)  # token ids, or one line now rather than in the child
    g_per_kwh, _ = _carbon.grid_intensity(grid_intensity_g_per_kwh)
    work = _Workload(
        model=model,
        example_input=detach_cpu(example_input),
        device=device,
        batch_size=batch_size,
        mode=mode,
        target=detach_cpu(target) if target is not None else None,
        loss_fn=loss_fn,
        meter=meter,
        threads=threads,
        min_window_s=min_window_s,
        max_time_s=float(max_time_s),
        target_ci95_rel=float(target_ci95_rel),
        warmup_max_s=float(warmup_max_s if warmup_max_s is not None else min(5.0, max_time_s / 2)),
        grid_g_per_kwh=g_per_kwh,
        isolated=isolate,
        count_macs=bool(count_macs),
        generate=generate,
    )
    with device_lock(device):
        if isolate:
            # Generous: a child spends seconds importing torch and compiling, then warms up.
            timeout_s = 120.0 + 3 * (work.max_time_s + work.warmup_max_s)
            data = run_isolated(_run, work, threads=threads, timeout_s=timeout_s)
        else:
            data = _run(work)
    return Measurement(**data)


def _check_arguments(
    example_input: Any,
    *,
    device: str,
    batch_size: int,
    mode: str,
    target: Any,
    threads: int | None,
    max_time_s: float,
    target_ci95_rel: float,
) -> str:
    """Check :func:`measure`'s arguments before any child starts.

    Returns:
        ``device``, normalised (``"cuda"`` -> ``"cuda:0"``).

    Raises:
        InputError: a bad value; the message names the argument, on one line.
        UnavailableError: ``device`` cannot be used here.
    """
    check_choice(mode, MODES, what="mode")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise InputError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if not (max_time_s > 0 and math.isfinite(max_time_s)):
        raise InputError(f"max_time_s must be > 0, got {max_time_s!r}")
    if not 0 < target_ci95_rel < 1:
        raise InputError(f"target_ci95_rel must be in (0, 1), got {target_ci95_rel!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise InputError(f"threads must be an integer >= 1, got {threads!r}")
    default_min_window_s()  # a bad WATTWISE_MIN_WINDOW_S fails here, not in the child
    device = check_device(device)
    check_input(example_input, "example_input")
    if mode == "train":
        if target is None:
            raise InputError("mode='train' needs target= (labels for one item)")
        check_input(target, "target")
    return device


def check_device(device: str) -> str:
    """Normalise ``device`` and fail with one line if it cannot be used here."""
    import torch

    if not isinstance(device, str) or not device:
        raise InputError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if device == "cpu":
        return device
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UnavailableError(
                f"device {device!r}: no CUDA GPU is visible here (torch.cuda.is_available() is False)"
            )
        index = 0 if device == "cuda" else _parse_index(device)
        if index >= torch.cuda.device_count():
            raise UnavailableError(
                f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) are visible"
            )
        return f"cuda:{index}"
    raise InputError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")


def _parse_index(device: str) -> int:
    try:
        index = int(device.split(":", 1)[1])
    except ValueError:
        raise InputError(f"bad device {device!r}; use 'cuda:N'") from None
    if index < 0:
        raise InputError(f"bad device {device!r}; use 'cuda:N'")
    return index


def _resolve_model(obj: Any) -> Any:
    """A module stays a module; a zero-arg factory is called; other callables are used as is."""
    from torch import nn

    if isinstance(obj, nn.Module):
        return obj
    if not callable(obj):
        raise InputError(f"model must be an nn.Module or a callable, got {type(obj).__name__}")
    try:
        sig = inspect.signature(obj)
        required = [
            p
            for p in sig.parameters.values()
            if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):  # no signature to read: treat as a callable taking input
        return obj
    if required:
        return obj
    try:
        built = obj()
    except Exception as exc:
        raise WorkloadError(f"the model factory raised {type(exc).__name__}: {exc}") from None
    if not callable(built):
        raise InputError(f"the model factory returned {type(built).__name__}, not a model")
    return built


def _private_copy(model: Any) -> Any:
    """A copy of the caller's module to train: training steps update its weights, BatchNorm
    statistics, gradients and train/eval flags in place, and measuring must not change the
    caller's model (a trained one lost 4 points of accuracy). In a child process the model
    is already a copy, unpickled there."""
    import copy

    try:
        return copy.deepcopy(model)
    except Exception as exc:
        raise InputError(
            f"mode='train' trains a copy of the model, and this one cannot be copied "
            f"({type(exc).__name__}: {exc}); pass a factory, or measure with isolate=True"
        ) from None


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


def _has_nan(value: Any) -> bool:
    import torch

    if isinstance(value, torch.Tensor):
        return bool(value.is_floating_point() and not torch.isfinite(value).all())
    if isinstance(value, tuple | list):
        return any(_has_nan(v) for v in value)
    if isinstance(value, dict):
        return any(_has_nan(v) for v in value.values())
    return False


def _make_step(work: _Workload, model: Any, batch: Any, target: Any) -> Callable[[], Any]:
    import torch
    from torch import nn

    if work.mode == "inference":
        if isinstance(model, nn.Module):
            model.eval()

        def infer() -> Any:
            with torch.inference_mode():
                return call(model, batch)

        return infer

    if not isinstance(model, nn.Module):
        raise InputError("mode='train' needs an nn.Module (it has parameters to update)")
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise InputError("mode='train': the model has no trainable parameters")
    # SGD with momentum: the cheapest common optimizer, so the figure is mostly the model's.
    opt = torch.optim.SGD(params, lr=1e-4, momentum=0.9)
    if work.loss_fn is not None:
        loss_fn = work.loss_fn
    elif not target.is_floating_point():
        loss_fn = nn.functional.cross_entropy
    else:
        loss_fn = nn.functional.mse_loss

    def train_step() -> Any:
        opt.zero_grad(set_to_none=True)
        out = call(model, batch)
        # A custom loss takes the output as the model gives it; the defaults score its
        # primary tensor (a classifier's logits, also inside a tuple or a ModelOutput).
        loss = loss_fn(out if work.loss_fn is not None else primary_tensor(out), target)
        loss.backward()
        opt.step()
        return loss.detach()

    return train_step


def _count_macs(step: Callable[[], Any], batch_size: int) -> float:
    """MACs per item of one step (see :mod:`wattwise.measure._macs` for what is counted)."""
    return count_step_macs(step) / batch_size


def _lengthen(calls: int, took_s: float, window_s: float) -> int:
    """The calls for the next window: more if this one came out short of the meter's minimum
    (the work sped up after warm-up), else as many as before."""
    if took_s >= window_s:
        return calls
    return max(calls + 1, math.ceil(calls * window_s / max(took_s, 1e-9)))


# --- other processes' CPU load ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CpuMark:
    """The CPU clocks at one instant: the whole machine's busy time and this process's own."""

    wall_s: float  # time.perf_counter()
    busy_s: float  # CPU seconds every process has been busy since boot, all CPUs (/proc/stat)
    own_s: float  # CPU seconds this process has used, every thread (time.process_time())


def parse_proc_stat(text: str, ticks_per_s: float) -> tuple[float, int]:
    """Busy CPU seconds since boot (all CPUs together) and the number of CPUs, from the text of
    ``/proc/stat``.

    Busy is user + nice + system + irq + softirq of the aggregate ``cpu`` line. Guest time is
    already inside user and nice, and steal (the hypervisor running another VM) is time no
    process here used, so neither is added; idle and iowait are not busy.

    Raises:
        ValueError: there is no aggregate ``cpu`` line of at least seven counters.
    """
    busy: int | None = None
    cpus = 0
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if name == "cpu":
            fields = [int(x) for x in rest.split()]
            if len(fields) < 7:
                raise ValueError(f"the 'cpu' line has {len(fields)} counters, expected >= 7")
            user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
            busy = user + nice + system + irq + softirq
        elif name.startswith("cpu") and name[3:].isdigit():
            cpus += 1
    if busy is None:
        raise ValueError("no aggregate 'cpu' line")
    return busy / ticks_per_s, max(cpus, 1)


def foreign_cpu_s(start: CpuMark, end: CpuMark) -> float:
    """CPU seconds other processes used between two marks: the machine's busy time less ours
    (never below zero, which only the counters' resolution can produce)."""
    return max(0.0, (end.busy_s - start.busy_s) - (end.own_s - start.own_s))


def foreign_cores(start: CpuMark, end: CpuMark) -> float:
    """How many cores other processes kept busy, on average, between two marks."""
    wall_s = end.wall_s - start.wall_s
    return foreign_cpu_s(start, end) / wall_s if wall_s > 0 else 0.0


def is_disturbed(
    start: CpuMark,
    end: CpuMark,
    cpus: int,
    ticks_per_s: float,
    limit_cores: float = FOREIGN_CORES_MAX,
) -> bool:
    """Whether other processes used more than ``limit_cores`` on average between two marks.

    ``/proc/stat`` counts in clock ticks (10 ms) charged per CPU, while our own time is exact:
    each CPU's figure may be a tick off and each reading is cut to whole ticks, so up to
    ``cpus + 2`` ticks of "foreign" time are resolution, not load. Without that allowance a
    short window on a quiet machine could read as disturbed.
    """
    wall_s = end.wall_s - start.wall_s
    slack_s = (cpus + 2) / ticks_per_s
    return foreign_cpu_s(start, end) > limit_cores * wall_s + slack_s


class CpuWatch:
    """How much CPU other processes took during a window, from ``/proc/stat``.

    Why: on a shared machine a neighbour's busy loop slows the measured work (longer windows,
    more cache misses) and, for meters that count the whole package (RAPL), adds its joules to
    ours. Neither shows in the figures themselves, so each window is checked: the machine's busy
    time less this process's own CPU time (every thread; the measuring child's when isolated)
    is what other processes used.

    Example:
        >>> watch = CpuWatch.open()
        >>> a = watch.mark(); b = watch.mark()  # doctest: +SKIP
        >>> watch.disturbed(a, b)  # doctest: +SKIP
        False
    """

    def __init__(self, path: Path = PROC_STAT, ticks_per_s: float | None = None) -> None:
        self.path = Path(path)
        self.ticks_per_s = float(ticks_per_s or _clock_ticks())
        _, self.cpus = self._read()

    @classmethod
    def open(cls, path: Path = PROC_STAT, ticks_per_s: float | None = None) -> CpuWatch | None:
        """A watch on ``path``; None where it cannot be read or parsed (not Linux)."""
        try:
            return cls(path, ticks_per_s)
        except (OSError, ValueError):
            return None

    def _read(self) -> tuple[float, int]:
        return parse_proc_stat(self.path.read_text(encoding="ascii"), self.ticks_per_s)

    def mark(self) -> CpuMark:
        busy_s, _ = self._read()
        return CpuMark(time.perf_counter(), busy_s, time.process_time())

    def disturbed(self, start: CpuMark, end: CpuMark) -> bool:
        return is_disturbed(start, end, self.cpus, self.ticks_per_s)


def _clock_ticks() -> float:
    """USER_HZ, the unit of /proc/stat (100 on every mainstream Linux)."""
    try:
        return float(os.sysconf("SC_CLK_TCK"))
    except (AttributeError, ValueError, OSError):
        return 100.0


@dataclasses.dataclass
class _Disturbance:
    """The verdicts on one measurement's windows: which were dropped, which were kept disturbed."""

    watch: CpuWatch | None
    repeated: int = 0
    kept_cores: list[float] = dataclasses.field(default_factory=list)
    disturbed_cores: list[float] = dataclasses.field(default_factory=list)

    def mark(self) -> CpuMark | None:
        return self.watch.mark() if self.watch is not None else None

    def drop(self, start: CpuMark | None, end: CpuMark | None, may_repeat: bool = True) -> bool:
        """Judge a window: True to drop it and measure another (while repeats remain and
        ``may_repeat``: under a neighbour every window is slow, so repeats stop at the time
        cap); a kept window is recorded, flagged if disturbed."""
        if self.watch is None or start is None or end is None:
            return False
        cores = foreign_cores(start, end)
        if self.watch.disturbed(start, end):
            if may_repeat and self.repeated < MAX_REPEATED_WINDOWS:
                self.repeated += 1
                return True
            self.disturbed_cores.append(cores)
        self.kept_cores.append(cores)
        return False

    def notes(self, windows: int) -> list[str]:
        if self.watch is None:
            return ["other processes' CPU load not checked: /proc/stat is unreadable here"]
        again = f"{self.repeated} disturbed window(s) were dropped and measured again"
        if not self.disturbed_cores:
            return [again] if self.repeated else []
        text = (
            f"{len(self.disturbed_cores)} of {windows} windows disturbed by other processes "
            f"(foreign CPU {statistics.fmean(self.disturbed_cores):.1f} cores); "
            "figures may be inflated"
        )
        return [f"{text}; {again}" if self.repeated else text]

    def fields(self) -> dict[str, Any]:
        return {
            "disturbed_windows": len(self.disturbed_cores),
            "repeated_windows": self.repeated,
            "foreign_cpu_cores": _mean_or_none(self.kept_cores),
        }


def _mean_or_none(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _idle_note(dist: _Disturbance, start: CpuMark | None, end: CpuMark | None) -> list[str]:
    """A note when the idle window was disturbed: a whole-package counter then reads the
    neighbour's power as our idle, and the figure above idle comes out too low."""
    if dist.watch is None or start is None or end is None or not dist.watch.disturbed(start, end):
        return []
    return [
        f"idle power measured while other processes used {foreign_cores(start, end):.1f} cores; "
        "it may be inflated"
    ]


def _run(work: _Workload) -> dict[str, Any]:
    """The measuring itself; runs in the child process when isolated."""
    import torch

    from wattwise.measure.meters import create_meter

    threads = (
        pin_threads(work.threads) if work.isolated else (work.threads or torch.get_num_threads())
    )
    if not work.isolated and work.threads:
        torch.set_num_threads(work.threads)
    device = work.device
    notes: list[str] = []
    model = _resolve_model(work.model)
    if work.mode == "train" and not work.isolated and model is work.model:
        model = _private_copy(model)
    if isinstance(model, torch.nn.Module):
        model = model.to(device)
        params = sum(p.numel() for p in model.parameters())
    else:
        params = 0
    if work.generate is not None:
        return _run_generation(work, model, threads, params, notes)
    batch = to_device(take_rows(work.example_input, work.batch_size), device)
    target = (
        to_device(take_rows(work.target, work.batch_size), device)
        if work.target is not None
        else None
    )
    step = _make_step(work, model, batch, target)

    # First call: does it run at all, and are its outputs finite?
    try:
        out = step()
        _sync(device)
    except (InputError, WorkloadError):
        raise
    except Exception as exc:
        raise WorkloadError(
            f"the model raised {type(exc).__name__} on input [{describe(batch)}]: {first_line(exc)}"
        ) from None
    if _has_nan(out):
        raise WorkloadError(
            f"the model's {'loss' if work.mode == 'train' else 'output'} contains NaN or inf"
        )
    macs = 0.0
    if work.count_macs:
        try:
            macs = _count_macs(step, work.batch_size)
        except Exception:  # some callables (ONNX Runtime, compiled graphs) hide their ops
            notes.append("MACs not counted: the callable hides its operations from torch")

    meter = create_meter(work.meter, device)
    try:
        return _measure_loop(work, step, meter, threads, params, macs, notes)
    finally:
        meter.close()


def _measure_loop(
    work: _Workload,
    step: Callable[[], Any],
    meter: Meter,
    threads: int,
    params: int,
    macs: float,
    notes: list[str],
) -> dict[str, Any]:
    """Steps 3-6 of the module's docstring, each its own function below."""
    warm = warm_up(step, work.warmup_max_s, work.device)
    if warm.capped:
        notes.append(f"warm-up hit its {work.warmup_max_s:.1f} s cap before latency settled")
    window_s, calls = _window_plan(work.min_window_s, meter.min_window_s, warm.call_s)
    dist = _open_disturbance(work.device, notes)
    idle_power_w = _idle_power_w(meter, window_s, dist, notes)
    # On a GPU a sync per call would throttle the very throughput the windows measure (the
    # GPU idles while the host waits, then while it launches the next call): the windows wait
    # once, at their end, and the per-call latencies come from a separate timed pass. On the
    # CPU a call is done when it returns, so its window's own times are its latencies.
    gpu = work.device.startswith("cuda")
    windows = _measure_windows(
        work, step, meter, calls, window_s, idle_power_w, dist, sync_each=not gpu
    )
    if gpu:
        windows.latencies_s = _timed_calls(step, work.device, min_s=min(1.0, window_s))
    return _summarise(
        work,
        windows,
        energy_source=meter.source,
        energy_uncertainty=float(meter.uncertainty),
        idle_power_w=idle_power_w,
        dist=dist,
        notes=notes,
        threads=threads,
        params=params,
        macs=macs,
        warmup_calls=len(warm.call_times_s),
        peak_memory_bytes=_peak_memory_bytes(work.device),
    )


def _timed_calls(
    step: Callable[[], Any], device: str, *, min_s: float, min_calls: int = 20
) -> list[float]:
    """Seconds of each call, each waited for to the device's end of work: at least
    ``min_calls`` calls and ``min_s`` seconds of them (a latency pass apart from the windows)."""
    clock = time.perf_counter
    out: list[float] = []
    start = clock()
    while len(out) < min_calls or clock() - start < min_s:
        t0 = clock()
        step()
        _sync(device)
        out.append(clock() - t0)
        if len(out) >= 50 * min_calls:
            break
    return out


# 3. warm up


def latency_settled(call_times_s: Sequence[float]) -> bool:
    """Whether a latency has settled: the median of the last 3 calls is within 5% of the
    median of the 3 before them (so at least 6 calls)."""
    if len(call_times_s) < 6:
        return False
    recent = statistics.median(call_times_s[-3:])
    before = statistics.median(call_times_s[-6:-3])
    return abs(recent - before) <= 0.05 * before


@dataclasses.dataclass(frozen=True)
class WarmUp:
    """What warming up saw: each call's seconds, and whether the time cap ended it."""

    call_times_s: tuple[float, ...]
    capped: bool

    @property
    def call_s(self) -> float:
        """The warmed-up latency: the median of the last 3 calls."""
        return statistics.median(self.call_times_s[-3:])


def warm_up(step: Callable[[], Any], cap_s: float, device: str = "cpu") -> WarmUp:
    """Call ``step`` until its latency settles (:func:`latency_settled`), or, once it has run
    twice, until ``cap_s`` seconds have passed. Each call is timed to the device's end of work
    (CUDA is synchronised). The harness's warm-up; ``benchmarks/bench_meters.py`` uses it too,
    so that its peers start from the state ``measure`` starts from.

    Example:
        >>> warm = warm_up(lambda: sum(range(10_000)), cap_s=1.0)
        >>> warm.call_s > 0
        True
    """
    clock = time.perf_counter
    times: list[float] = []
    start = clock()
    while True:
        t0 = clock()
        step()
        _sync(device)
        times.append(clock() - t0)
        if latency_settled(times):
            return WarmUp(tuple(times), capped=False)
        if clock() - start > cap_s and len(times) >= 2:
            return WarmUp(tuple(times), capped=True)


# 4. prepare the windows, and measure the idle power


def default_min_window_s() -> float:
    """:data:`DEFAULT_MIN_WINDOW_S`, or the seconds in :data:`MIN_WINDOW_ENV` when it is set.

    Raises:
        InputError: the variable is set to something other than seconds in (0, 60].
    """
    raw = os.environ.get(MIN_WINDOW_ENV, "").strip()
    if not raw:
        return DEFAULT_MIN_WINDOW_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 < value <= 60:
        raise InputError(f"{MIN_WINDOW_ENV} must be seconds in (0, 60], got {raw!r}")
    return value


def _window_plan(
    min_window_s: float | None, meter_min_window_s: float, call_s: float
) -> tuple[float, int]:
    """The shortest window (the caller's, default :func:`default_min_window_s`, but never shorter
    than the meter trusts) and the calls of the warmed-up latency ``call_s`` that fill it."""
    window_s = max(min_window_s or default_min_window_s(), meter_min_window_s)
    return window_s, max(1, math.ceil(window_s / max(call_s, 1e-9)))


def _open_disturbance(device: str, notes: list[str]) -> _Disturbance:
    """The judge of other processes' load for this measurement; a note if it cannot watch."""
    # Other processes' CPU load is checked on the CPU only: a GPU's counter is its own.
    dist = _Disturbance(CpuWatch.open() if device == "cpu" else None)
    if device == "cpu" and dist.watch is None:
        notes.extend(dist.notes(0))
    return dist


def _idle_power_w(meter: Meter, window_s: float, dist: _Disturbance, notes: list[str]) -> float:
    """Idle power: the same meter over a window of sleep (a note if a neighbour was busy)."""
    cpu0 = dist.mark()
    mark = meter.start()
    time.sleep(max(window_s, 0.2))
    idle = meter.stop(mark)
    idle_power_w = idle.energy_j / idle.time_s
    if meter.source.startswith("measured:"):  # the estimate's idle is a model: unaffected
        notes.extend(_idle_note(dist, cpu0, dist.mark()))
    return idle_power_w


# 5. measure windows


@dataclasses.dataclass
class _Windows:
    """The kept windows: per-window figures, and the totals behind throughput and overhead."""

    j_per_item: list[float] = dataclasses.field(default_factory=list)
    above_idle_j_per_item: list[float] = dataclasses.field(default_factory=list)
    window_s: list[float] = dataclasses.field(default_factory=list)  # the calls' loop only
    latencies_s: list[float] = dataclasses.field(default_factory=list)  # every call
    busy_s: float = 0.0  # inside the model's calls
    total_s: float = 0.0  # from before the meter's start read to after its stop read
    items: int = 0


@dataclasses.dataclass(frozen=True)
class _Window:
    """One window as run: the meter's reading, each call's seconds, and two spans: the calls'
    loop alone, and the loop with the meter's own start and stop reads."""

    reading: Reading
    latencies_s: list[float]  # empty without a sync per call
    loop_s: float
    outer_s: float
    busy_s: float


def _run_window(
    step: Callable[[], Any], meter: Meter, calls: int, device: str, sync_each: bool = True
) -> _Window:
    """``calls`` calls between the meter's reads. ``sync_each=False`` waits for a GPU once, at
    the window's end: the calls' latencies are then not their own (take them elsewhere), and
    the window's throughput is not throttled by a sync per call."""
    clock = time.perf_counter
    lat: list[float] = []
    outer0 = clock()
    mark = meter.start()
    w0 = clock()
    for _ in range(calls):
        t0 = clock()
        step()
        if sync_each:
            _sync(device)
            lat.append(clock() - t0)
    _sync(device)
    w1 = clock()
    reading = meter.stop(mark)
    # Overhead counts the meter's own start/stop reads too, not only our loop. Without a sync
    # per call, the calls' time is the whole loop's (their own times are only launches).
    busy = sum(lat) if sync_each else w1 - w0
    return _Window(reading, lat, w1 - w0, clock() - outer0, busy)


def _measure_windows(
    work: _Workload,
    step: Callable[[], Any],
    meter: Meter,
    calls: int,
    window_s: float,
    idle_power_w: float,
    dist: _Disturbance,
    sync_each: bool = True,
) -> _Windows:
    """Windows of ``calls`` calls until the J/item CI is within the target (after
    ``MIN_WINDOWS``), the time cap, or ``MAX_WINDOWS``; a disturbed window is dropped and
    measured again while ``dist`` allows."""
    clock = time.perf_counter
    kept = _Windows()
    start = clock()

    def out_of_time() -> bool:
        return len(kept.j_per_item) >= MIN_WINDOWS and clock() - start >= work.max_time_s

    while True:
        cpu0 = dist.mark()
        window = _run_window(step, meter, calls, work.device, sync_each)
        reading = window.reading
        items = calls * work.batch_size
        if not (reading.energy_j > 0 and math.isfinite(reading.energy_j)):
            raise WorkloadError(
                f"the {meter.name} meter returned {reading.energy_j!r} J for a window"
            )
        if dist.drop(cpu0, dist.mark(), may_repeat=clock() - start < work.max_time_s):
            # Another process was busy: this window says little about our work. Measure another,
            # unless the time is up (the windows kept so far then stand).
            if out_of_time():
                break
            calls = _lengthen(calls, window.loop_s, window_s)
            continue
        kept.j_per_item.append(reading.energy_j / items)
        kept.above_idle_j_per_item.append(
            (reading.energy_j - idle_power_w * reading.time_s) / items
        )
        kept.window_s.append(window.loop_s)
        kept.latencies_s.extend(window.latencies_s)
        kept.busy_s += window.busy_s
        kept.total_s += window.outer_s
        kept.items += items
        n = len(kept.j_per_item)
        if n >= MIN_WINDOWS and _stats.ci95_rel(kept.j_per_item) <= work.target_ci95_rel:
            break
        if out_of_time():
            break
        if n >= MAX_WINDOWS:
            break
        calls = _lengthen(calls, window.loop_s, window_s)
    return kept


# 6. summarise


def _peak_memory_bytes(device: str) -> int:
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.max_memory_allocated(device))
    import resource

    # Peak RSS of the measuring process (Linux reports KiB).
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _summarise(
    work: _Workload,
    windows: _Windows,
    *,
    energy_source: str,
    energy_uncertainty: float,
    idle_power_w: float,
    dist: _Disturbance,
    notes: Sequence[str],
    threads: int,
    params: int,
    macs: float,
    warmup_calls: int,
    peak_memory_bytes: int,
) -> dict[str, Any]:
    """The :class:`Measurement` fields: medians and percentiles of the kept windows, and a
    note for each figure to read with care (CI short of the target, disturbed windows,
    energy above idle lost in the idle noise)."""
    notes = list(notes)
    per_window_j = windows.j_per_item
    ci = _stats.ci95_rel(per_window_j)
    converged = ci <= work.target_ci95_rel
    if not converged:
        notes.append(
            f"J/item CI95 ±{ci:.1%} after {len(per_window_j)} windows (target ±{work.target_ci95_rel:.0%})"
        )
    if dist.watch is not None:
        notes.extend(dist.notes(len(per_window_j)))
    energy = statistics.median(per_window_j)
    above = statistics.median(windows.above_idle_j_per_item)
    if above <= 0:
        notes.append("energy above idle is within the idle-power noise")
        above = max(above, 0.0)
    latencies = windows.latencies_s
    busy_s, total_s = windows.busy_s, windows.total_s
    return {
        "mode": work.mode,
        "device": work.device,
        "batch_size": work.batch_size,
        "energy_j_per_item": energy,
        "energy_above_idle_j_per_item": above,
        "energy_source": energy_source,
        "energy_uncertainty": energy_uncertainty,
        "idle_power_w": idle_power_w,
        "latency_ms_p50": _stats.percentile(latencies, 50) * 1e3,
        "latency_ms_p90": _stats.percentile(latencies, 90) * 1e3,
        "latency_ms_p99": _stats.percentile(latencies, 99) * 1e3,
        "throughput_items_per_s": windows.items / busy_s,
        "peak_memory_bytes": peak_memory_bytes,
        "macs_per_item": macs,
        "tokens_per_item": tokens_per_item(take_rows(work.example_input, work.batch_size)),
        "params": params,
        "co2e_g_per_million_items": _carbon.co2e_g_per_million_items(energy, work.grid_g_per_kwh),
        "grid_intensity_g_per_kwh": work.grid_g_per_kwh,
        "windows": len(per_window_j),
        "window_s": statistics.median(windows.window_s),
        "ci95_rel": ci if math.isfinite(ci) else 1.0,
        "converged": converged,
        "threads": threads,
        "isolated": work.isolated,
        "warmup_calls": warmup_calls,
        "harness_overhead_rel": max(0.0, (total_s - busy_s) / total_s) if total_s > 0 else 0.0,
        "notes": tuple(notes),
        **dist.fields(),
    }


# Generation (see _generate.py): two phases of windows, then a timed pass


def _run_generation(
    work: _Workload, model: Any, threads: int, params: int, notes: list[str]
) -> dict[str, Any]:
    """Prefill and decode measured as separate windows, TTFT and TBT from a timed pass."""
    import torch

    from wattwise.measure.meters import create_meter

    spec = work.generate
    assert spec is not None
    if isinstance(model, torch.nn.Module):
        model.eval()
    prompt = prompt_ids(work.example_input, work.batch_size, spec.prompt_tokens).to(work.device)
    with torch.inference_mode():
        gen = generator_for(model, prompt, spec)
        check_runs(gen, describe(prompt))
        if gen.kv_cache == "none":
            notes.append(
                "no KV cache: the model takes only forward(ids), so each new token recomputes "
                "the whole sequence"
            )
        meter = create_meter(work.meter, work.device)
        try:
            return _measure_generation(work, gen, meter, threads, params, notes)
        finally:
            meter.close()


def _cool_down(device: str, notes: list[str]) -> None:
    """Wait (up to :data:`COOL_DOWN_MAX_S`) for the GPU to cool to :data:`COOL_GPU_C`, so a
    candidate is not charged for the heat the last one left; the note says what was found."""
    from wattwise.measure.meters.nvml import gpu_temperature_c

    start = time.monotonic()
    temp = gpu_temperature_c(device)
    if temp is None:
        notes.append("GPU temperature unreadable: no cool-down before measuring")
        return
    first = temp
    while temp is not None and temp > COOL_GPU_C and time.monotonic() - start < COOL_DOWN_MAX_S:
        time.sleep(1.0)
        temp = gpu_temperature_c(device)
    waited = time.monotonic() - start
    if waited >= 1.0:
        notes.append(
            f"GPU cooled from {first:.0f} to {temp if temp is not None else first:.0f} °C "
            f"in {waited:.0f} s before measuring"
        )
    if temp is not None and temp > COOL_GPU_C:
        notes.append(f"GPU still at {temp:.0f} °C after {COOL_DOWN_MAX_S:.0f} s of cool-down")


def _response_macs(work: _Workload, gen: Generator, notes: list[str]) -> float:
    """MACs of one response of one sequence: the prefill, then the decode steps (counted at
    the first decode position; the attention over a longer cache adds a little)."""
    assert work.generate is not None
    if not work.count_macs:
        return 0.0
    try:
        tokens = gen.prefill()
        prefill = count_step_macs(gen.prefill)
        step = count_step_macs(lambda: gen.step(tokens))
    except Exception:
        notes.append("MACs not counted: the model hides its operations from torch")
        return 0.0
    gen.rewind()
    return float(prefill + work.generate.new_tokens * step) / work.batch_size


def _phase(windows: _Windows, batch_size: int) -> Phase:
    calls = windows.items / batch_size
    time_s = sum(windows.window_s)
    return Phase(
        j_per_sequence=list(windows.j_per_item),
        above_idle_j_per_sequence=list(windows.above_idle_j_per_item),
        ci95_rel=_stats.ci95_rel(windows.j_per_item),
        call_s=time_s / calls,
        energy_j=statistics.fmean(windows.j_per_item) * windows.items,
        time_s=time_s,
    )


def _measure_generation(
    work: _Workload, gen: Generator, meter: Meter, threads: int, params: int, notes: list[str]
) -> dict[str, Any]:
    spec = work.generate
    assert spec is not None
    macs = _response_macs(work, gen, notes)
    half = dataclasses.replace(work, max_time_s=work.max_time_s / 2)
    min_window_s = work.min_window_s
    if work.device.startswith("cuda"):
        _cool_down(work.device, notes)
        if min_window_s is None:  # a window the caller chose stands
            min_window_s = GPU_GENERATION_WINDOW_S
    warm = warm_up(gen.prefill, work.warmup_max_s / 2, work.device)
    window_s, calls = _window_plan(min_window_s, meter.min_window_s, warm.call_s)
    dist = _open_disturbance(work.device, notes)
    idle_power_w = _idle_power_w(meter, window_s, dist, notes)
    prefill = _phase(
        _measure_windows(
            half, gen.prefill, meter, calls, window_s, idle_power_w, dist, sync_each=False
        ),
        work.batch_size,
    )

    tokens = gen.prefill()
    made = 0

    def decode() -> None:
        nonlocal tokens, made
        if made == spec.new_tokens:  # the response is done: the next starts over
            gen.rewind()
            made = 0
        tokens = gen.step(tokens)
        made += 1

    warm = warm_up(decode, work.warmup_max_s / 2, work.device)
    _, calls = _window_plan(min_window_s, meter.min_window_s, warm.call_s)
    decode_phase = _phase(
        _measure_windows(half, decode, meter, calls, window_s, idle_power_w, dist, sync_each=False),
        work.batch_size,
    )
    timed = timed_pass(gen, lambda: _sync(work.device))
    generation = summarise(
        spec, work.batch_size, prefill, decode_phase, timed, idle_power_w, gen.kv_cache
    )
    ci = max(prefill.ci95_rel, decode_phase.ci95_rel)
    converged = ci <= work.target_ci95_rel
    if not converged:
        notes.append(
            f"prefill/decode J CI95 ±{ci:.1%} (target ±{work.target_ci95_rel:.0%}) at the time cap"
        )
    if dist.watch is not None:
        notes.extend(dist.notes(generation.prefill_windows + generation.decode_windows))
    above = statistics.median(
        prefill.above_idle_j_per_sequence
    ) + spec.new_tokens * statistics.median(decode_phase.above_idle_j_per_sequence)
    energy = generation.energy_j_per_response
    responses_s = timed.response_s
    return {
        "mode": work.mode,
        "device": work.device,
        "batch_size": work.batch_size,
        "energy_j_per_item": energy,
        "energy_above_idle_j_per_item": max(above, 0.0),
        "energy_source": meter.source,
        "energy_uncertainty": float(meter.uncertainty),
        "idle_power_w": idle_power_w,
        "latency_ms_p50": _stats.percentile(responses_s, 50) * 1e3,
        "latency_ms_p90": _stats.percentile(responses_s, 90) * 1e3,
        "latency_ms_p99": _stats.percentile(responses_s, 99) * 1e3,
        "throughput_items_per_s": generation.tokens_per_s / spec.new_tokens,
        "peak_memory_bytes": _peak_memory_bytes(work.device),
        "macs_per_item": macs,
        "tokens_per_item": float(spec.prompt_tokens + spec.new_tokens),
        "params": params,
        "co2e_g_per_million_items": _carbon.co2e_g_per_million_items(energy, work.grid_g_per_kwh),
        "grid_intensity_g_per_kwh": work.grid_g_per_kwh,
        "windows": generation.prefill_windows + generation.decode_windows,
        "window_s": window_s,
        "ci95_rel": ci if math.isfinite(ci) else 1.0,
        "converged": converged,
        "threads": threads,
        "isolated": work.isolated,
        "warmup_calls": len(warm.call_times_s),
        "harness_overhead_rel": 0.0,
        "notes": tuple(notes),
        "generation": generation,
        **dist.fields(),
    }
