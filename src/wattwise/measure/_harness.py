"""The measurement harness: energy per item of a model's inference or training step.

What one call does, in order (all inside a child process unless ``isolate=False``):

1. build the model (or call the factory), move it and the batch to the device;
2. run it once, checking it doesn't raise and outputs no NaN; count MACs on that call;
3. warm up until the latency is stable (median of the last 3 calls within 5% of the
   3 before them) or a warm-up time cap;
4. measure the idle power with the same meter, sleeping for one window;
5. measure windows, each long enough for the meter (≥ ``min_window_s``, e.g. 10 NVML counter
   updates) by repeating the work, until the 95% confidence interval of the per-window J/item
   is within ``target_ci95_rel`` of the median, or the time cap;
6. report medians, percentiles, and the harness's own overhead inside the windows.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

from wattwise.errors import InputError, UnavailableError, WorkloadError
from wattwise.measure import _carbon, _stats
from wattwise.measure._isolate import pin_threads, run_isolated
from wattwise.measure._lock import device_lock
from wattwise.measure._measurement import Measurement

MODES = ("inference", "train")
DEFAULT_MIN_WINDOW_S = 0.5
MIN_WINDOWS = 3
MAX_WINDOWS = 50


@dataclasses.dataclass(frozen=True)
class _Workload:
    model: Any  # nn.Module, zero-arg factory, or a plain callable taking the batch
    example_input: Any  # Tensor or tuple of Tensors, batch of 1
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
) -> Measurement:
    """Measure energy per item, latency and size of ``model`` on ``device``.

    Args:
        model: an ``nn.Module``; a zero-argument factory returning one (cheaper to send to
            the child process); or any callable taking the batch (e.g. an ONNX Runtime
            session wrapper).
        example_input: one input with batch size 1 (a tensor or a tuple of tensors); it is
            repeated along dimension 0 to ``batch_size``.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        mode: ``"inference"`` (no grad, eval mode) or ``"train"`` (forward, loss, backward
            and an SGD step per call; energy is per sample trained).
        target: labels for ``mode="train"``, batch size 1 like ``example_input``.
        loss_fn: training loss; default cross-entropy for integer targets, else MSE.
        meter: ``"auto"`` or a meter name (``nvml``, ``rapl``, ``estimate``).
        threads: intra-op threads (CPU cores are pinned to match); default all allowed cores.
        min_window_s: shortest measured window; default max(0.5 s, the meter's minimum).
        max_time_s: soft cap on the measuring phase (at least 3 windows are always taken).
        target_ci95_rel: stop once the 95% CI half-width of J/item is within this fraction.
        isolate: measure in a spawned child process (recommended; needs a picklable model).
        grid_intensity_g_per_kwh: for the CO2e figure; default see ``_carbon``.

    Returns:
        A :class:`Measurement`; its ``energy_source`` says whether the joules were measured
        by a counter or estimated, and ``energy_uncertainty`` how far to trust them.

    Example:
        >>> m = wattwise.measure(model, torch.randn(1, 3, 224, 224), batch_size=32)
        >>> print(m.energy_j_per_item, m.energy_source)
    """
    import torch

    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise InputError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if not (max_time_s > 0 and math.isfinite(max_time_s)):
        raise InputError(f"max_time_s must be > 0, got {max_time_s!r}")
    if not 0 < target_ci95_rel < 1:
        raise InputError(f"target_ci95_rel must be in (0, 1), got {target_ci95_rel!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise InputError(f"threads must be an integer >= 1, got {threads!r}")
    device = check_device(device)
    _check_inputs(example_input, "example_input")
    if mode == "train":
        if target is None:
            raise InputError("mode='train' needs target= (labels for one item)")
        _check_inputs(target, "target")
    g_per_kwh, _ = _carbon.grid_intensity(grid_intensity_g_per_kwh)
    work = _Workload(
        model=model,
        example_input=_to_cpu(example_input),
        device=device,
        batch_size=batch_size,
        mode=mode,
        target=_to_cpu(target),
        loss_fn=loss_fn,
        meter=meter,
        threads=threads,
        min_window_s=min_window_s,
        max_time_s=float(max_time_s),
        target_ci95_rel=float(target_ci95_rel),
        warmup_max_s=float(warmup_max_s if warmup_max_s is not None else min(5.0, max_time_s / 2)),
        grid_g_per_kwh=g_per_kwh,
        isolated=isolate,
    )
    del torch
    with device_lock(device):
        if isolate:
            # Generous: a child spends seconds importing torch and compiling, then warms up.
            timeout_s = 120.0 + 3 * (work.max_time_s + work.warmup_max_s)
            data = run_isolated(_run, work, threads=threads, timeout_s=timeout_s)
        else:
            data = _run(work)
    return Measurement(**data)


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


def _check_inputs(value: Any, name: str) -> None:
    import torch

    items = value if isinstance(value, tuple | list) else (value,)
    if not items or not all(isinstance(t, torch.Tensor) for t in items):
        raise InputError(f"{name} must be a tensor or a tuple of tensors")
    for t in items:
        if t.dim() < 1 or t.shape[0] < 1:
            raise InputError(f"{name} needs a batch dimension, got shape {tuple(t.shape)}")


def _to_cpu(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, tuple | list):
        return tuple(t.detach().cpu() for t in value)
    return value.detach().cpu()


def _batch(value: Any, batch_size: int, device: str) -> Any:
    def one(t: Any) -> Any:
        first = t[:1]
        reps = (batch_size,) + (1,) * (first.dim() - 1)
        return first.repeat(*reps).to(device).contiguous()

    if isinstance(value, tuple):
        return tuple(one(t) for t in value)
    return one(value)


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


def _shape(value: Any) -> str:
    if isinstance(value, tuple):
        return ", ".join(str(tuple(t.shape)) for t in value)
    return str(tuple(value.shape))


def _make_step(work: _Workload, model: Any, batch: Any, target: Any) -> Callable[[], Any]:
    import torch
    from torch import nn

    args = batch if isinstance(batch, tuple) else (batch,)
    if work.mode == "inference":
        if isinstance(model, nn.Module):
            model.eval()

        def infer() -> Any:
            with torch.inference_mode():
                return model(*args)

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
        loss = loss_fn(model(*args), target)
        loss.backward()
        opt.step()
        return loss.detach()

    return train_step


def _count_macs(step: Callable[[], Any], batch_size: int) -> float:
    import contextlib

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    # A torch.compile'd model called under a dispatch mode recompiles, and the new graph can
    # replace the fast one (a PT2E int8 model measured 5x slower after counting). Count on the
    # eager code path instead: the same operations, and the compiled cache stays as it was.
    set_stance = getattr(torch.compiler, "set_stance", None)
    eager = set_stance("force_eager") if set_stance is not None else contextlib.nullcontext()
    with eager, counter:
        step()
    # FLOPs as torch counts them are 2 per multiply-accumulate.
    return counter.get_total_flops() / 2.0 / batch_size


def _run(work: _Workload) -> dict[str, Any]:
    """The measuring itself; runs in the child process when isolated."""
    import resource

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
    if isinstance(model, torch.nn.Module):
        model = model.to(device)
        params = sum(p.numel() for p in model.parameters())
    else:
        params = 0
    batch = _batch(work.example_input, work.batch_size, device)
    target = _batch(work.target, work.batch_size, device) if work.target is not None else None
    step = _make_step(work, model, batch, target)

    # First call: does it run at all, and are its outputs finite?
    try:
        out = step()
        _sync(device)
    except (InputError, WorkloadError):
        raise
    except Exception as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise WorkloadError(
            f"the model raised {type(exc).__name__} on input of shape {_shape(batch)}: {message}"
        ) from None
    if _has_nan(out):
        raise WorkloadError(
            f"the model's {'loss' if work.mode == 'train' else 'output'} contains NaN or inf"
        )
    try:
        macs = _count_macs(step, work.batch_size)
    except Exception:  # some callables (ONNX Runtime, compiled graphs) hide their ops
        macs = 0.0
        notes.append("MACs not counted: the callable hides its operations from torch")

    meter = create_meter(work.meter, device)
    try:
        return _measure_loop(work, step, meter, threads, params, macs, notes, resource, torch)
    finally:
        meter.close()


def _measure_loop(
    work: _Workload,
    step: Callable[[], Any],
    meter: Any,
    threads: int,
    params: int,
    macs: float,
    notes: list[str],
    resource: Any,
    torch: Any,
) -> dict[str, Any]:
    device = work.device
    clock = time.perf_counter

    # Warm-up until stable.
    warm: list[float] = []
    warm_start = clock()
    while True:
        t0 = clock()
        step()
        _sync(device)
        warm.append(clock() - t0)
        if len(warm) >= 6:
            recent = statistics.median(warm[-3:])
            before = statistics.median(warm[-6:-3])
            if abs(recent - before) <= 0.05 * before:
                break
        if clock() - warm_start > work.warmup_max_s and len(warm) >= 2:
            notes.append(f"warm-up hit its {work.warmup_max_s:.1f} s cap before latency settled")
            break
    call_s = statistics.median(warm[-3:])

    window_s = max(work.min_window_s or DEFAULT_MIN_WINDOW_S, meter.min_window_s)
    calls = max(1, math.ceil(window_s / max(call_s, 1e-9)))

    # Idle power: the same meter over a window of sleep.
    mark = meter.start()
    time.sleep(max(window_s, 0.2))
    idle = meter.stop(mark)
    idle_power_w = idle.energy_j / idle.time_s

    latencies: list[float] = []
    per_window_j: list[float] = []
    per_window_above: list[float] = []
    window_times: list[float] = []
    busy_s = 0.0
    total_s = 0.0
    items_total = 0
    measure_start = clock()
    while True:
        lat: list[float] = []
        outer0 = clock()
        mark = meter.start()
        w0 = clock()
        for _ in range(calls):
            t0 = clock()
            step()
            _sync(device)
            lat.append(clock() - t0)
        w1 = clock()
        reading = meter.stop(mark)
        outer1 = clock()
        items = calls * work.batch_size
        if not (reading.energy_j > 0 and math.isfinite(reading.energy_j)):
            raise WorkloadError(
                f"the {meter.name} meter returned {reading.energy_j!r} J for a window"
            )
        per_window_j.append(reading.energy_j / items)
        per_window_above.append((reading.energy_j - idle_power_w * reading.time_s) / items)
        window_times.append(w1 - w0)
        latencies.extend(lat)
        busy_s += sum(lat)
        # Overhead counts the meter's own start/stop reads too, not only our loop.
        total_s += outer1 - outer0
        items_total += items
        n = len(per_window_j)
        if n >= MIN_WINDOWS and _stats.ci95_rel(per_window_j) <= work.target_ci95_rel:
            break
        if n >= MIN_WINDOWS and clock() - measure_start >= work.max_time_s:
            break
        if n >= MAX_WINDOWS:
            break
        # If a window came out short of the meter's minimum (the work sped up), lengthen it.
        if w1 - w0 < window_s:
            calls = max(calls + 1, math.ceil(calls * window_s / max(w1 - w0, 1e-9)))

    ci = _stats.ci95_rel(per_window_j)
    converged = ci <= work.target_ci95_rel
    if not converged:
        notes.append(
            f"J/item CI95 ±{ci:.1%} after {len(per_window_j)} windows (target ±{work.target_ci95_rel:.0%})"
        )
    energy = statistics.median(per_window_j)
    above = statistics.median(per_window_above)
    if above <= 0:
        notes.append("energy above idle is within the idle-power noise")
        above = max(above, 0.0)
    if device.startswith("cuda"):
        peak = int(torch.cuda.max_memory_allocated(device))
    else:
        # Peak RSS of the measuring process (Linux reports KiB).
        peak = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    return {
        "mode": work.mode,
        "device": device,
        "batch_size": work.batch_size,
        "energy_j_per_item": energy,
        "energy_above_idle_j_per_item": above,
        "energy_source": meter.source,
        "energy_uncertainty": float(meter.uncertainty),
        "idle_power_w": idle_power_w,
        "latency_ms_p50": _stats.percentile(latencies, 50) * 1e3,
        "latency_ms_p90": _stats.percentile(latencies, 90) * 1e3,
        "latency_ms_p99": _stats.percentile(latencies, 99) * 1e3,
        "throughput_items_per_s": items_total / busy_s,
        "peak_memory_bytes": peak,
        "macs_per_item": macs,
        "params": params,
        "co2e_g_per_million_items": _carbon.co2e_g_per_million_items(energy, work.grid_g_per_kwh),
        "grid_intensity_g_per_kwh": work.grid_g_per_kwh,
        "windows": len(per_window_j),
        "window_s": statistics.median(window_times),
        "ci95_rel": ci if math.isfinite(ci) else 1.0,
        "converged": converged,
        "threads": threads,
        "isolated": work.isolated,
        "warmup_calls": len(warm),
        "harness_overhead_rel": max(0.0, (total_s - busy_s) / total_s) if total_s > 0 else 0.0,
        "notes": tuple(notes),
    }
