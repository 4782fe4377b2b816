"""``compress``: run a recipe of passes on a copy of a model and log what each one did."""

from __future__ import annotations

import copy
import os
import random
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wattwise._inputs import call, primary_tensor, to_device
from wattwise.errors import InputError, WorkloadError
from wattwise.passes._base import PASSES, CompressionLog, ModelStats, Pass, PassContext, PassRecord
from wattwise.passes._model import count_macs, count_params, model_device, state_dict_bytes

if TYPE_CHECKING:
    from torch import nn

    from wattwise.tasks import Task


def compress(
    model: nn.Module,
    passes: Sequence[Pass | Mapping[str, Any]] | str | os.PathLike[str],
    *,
    task: Task,
    seed: int = 0,
    meter: str = "auto",
) -> tuple[nn.Module, CompressionLog]:
    """Apply ``passes`` in order to a copy of ``model``; the caller's model is never changed.

    Each pass runs inside one energy-meter window (its fine-tuning, calibration and analysis,
    not the evaluation around it), and the log records, per pass, parameters, MACs, size,
    accuracy before and after, wall time and the joules spent with their source label.

    Args:
        model: the model to compress (copied with ``copy.deepcopy`` first).
        passes: pass configs (or their dicts), or the path of a YAML recipe.
        task: gives the data for fine-tuning and calibration, the metric and the example input.
        seed: the same recipe with the same seed gives the same model, bit for bit (on the
            same machine and thread count).
        meter: energy meter name for the passes' own cost (``"auto"``, ``"rapl"``, ...).

    Returns:
        ``(compressed_model, log)``.

    Raises:
        InputError: a bad pass, recipe or field (the message names it), or a model a pass
            cannot handle (e.g. Torch-Pruning cannot trace it).
        UnavailableError: a pass needs hardware this machine lacks (e.g. float8 on a CPU).

    Example:
        >>> task = wattwise.tasks.digits()
        >>> model = task.fit(task.model_factory())
        >>> small, log = wattwise.compress(model, [Prune(ratio=0.5), Quantize("pt2e-int8")], task=task)
        >>> print(log.summary())
    """
    import torch
    from torch import nn

    from wattwise.measure.meters import CounterError, create_meter
    from wattwise.tasks import Task

    if not isinstance(model, nn.Module):
        raise InputError(f"compress: model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(task, Task):
        raise InputError(f"compress: task must be a wattwise Task, got {type(task).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"compress: seed must be an integer >= 0, got {seed!r}")
    recipe = _as_passes(passes)
    try:
        work = copy.deepcopy(model)
    except Exception as exc:
        raise InputError(f"compress: cannot copy the model ({type(exc).__name__}: {exc})") from None
    work.eval()
    device = model_device(work)
    task = _task_on(task, device)
    example = task.example_input
    energy_meter = create_meter(meter, device=str(device))

    initial = _stats(work, task, example, macs=None)
    records: list[PassRecord] = []
    accuracy = initial.accuracy
    macs = initial.macs
    out_shape = _output_shape(work, example, "the input model")
    for index, pass_ in enumerate(recipe):
        pass_seed = seed + index
        _seed_everything(pass_seed)
        ctx = PassContext(
            task=task, seed=pass_seed, index=index, source_model=model, accuracy_before=accuracy
        )
        mark = energy_meter.start()
        t0 = time.perf_counter()
        work = pass_.apply(work, ctx)
        time_s = time.perf_counter() - t0
        try:
            energy_j: float | None = energy_meter.stop(mark).energy_j
        except CounterError as exc:
            energy_j = None
            ctx.note(f"energy not read: {exc}")
        if time_s < energy_meter.min_window_s:
            ctx.note(
                f"the pass took {time_s:.3g} s, less than the meter's {energy_meter.min_window_s} s "
                "resolution: its energy is below what the meter can resolve"
            )
        if not isinstance(work, nn.Module):
            raise WorkloadError(
                f"pass {index} ({pass_.TYPE}) returned {type(work).__name__}, not a model"
            )
        work.eval()
        got = _output_shape(work, example, f"pass {index} ({pass_.TYPE})")
        if got != out_shape:
            raise WorkloadError(
                f"pass {index} ({pass_.TYPE}) changed the output shape from {out_shape} to {got}"
            )
        stats = _stats(work, task, example, macs=macs if pass_.PRESERVES_MACS else None)
        if pass_.PRESERVES_MACS:
            ctx.note("MACs carried over: the pass changes the precision of MACs, not their number")
        records.append(
            PassRecord(
                name=pass_.TYPE,
                config=pass_.describe(),
                params=stats.params,
                macs=stats.macs,
                size_bytes=stats.size_bytes,
                accuracy_before=accuracy,
                accuracy_after=stats.accuracy,
                time_s=time_s,
                energy_j=energy_j,
                energy_source=energy_meter.source,
                energy_uncertainty=float(energy_meter.uncertainty),
                method=ctx.method,
                skipped=tuple(ctx.skipped),
                notes=tuple(ctx.notes),
                metrics=dict(ctx.metrics),
            )
        )
        accuracy, macs = stats.accuracy, stats.macs
    del torch
    energy_meter.close()
    return work, CompressionLog(task=task.name, seed=seed, initial=initial, records=tuple(records))


def _as_passes(passes: Any) -> list[Pass]:
    from wattwise.passes._recipe import load_recipe, passes_from_dicts

    if isinstance(passes, str | os.PathLike):
        return load_recipe(Path(passes))
    if isinstance(passes, Pass | Mapping) or not isinstance(passes, Sequence):
        raise InputError(
            f"compress: passes must be a list of passes (or a recipe path), got {type(passes).__name__}"
        )
    out: list[Pass] = []
    for i, p in enumerate(passes):
        if isinstance(p, Pass):
            out.append(p)
        elif isinstance(p, Mapping):
            out.append(passes_from_dicts([dict(p)], where="compress", first=i)[0])
        else:
            raise InputError(
                f"compress: pass {i} is a {type(p).__name__}, not one of: {', '.join(PASSES.names())}"
            )
    return out


class _OnDevice:
    """A dataset view whose items' tensors live on ``device`` (for models off the CPU)."""

    def __init__(self, data: Any, device: Any) -> None:
        self.data = data
        self.device = device

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> Any:
        item = self.data[index]
        if isinstance(item, tuple | list):
            return type(item)(self._move(v) for v in item)
        return self._move(item)

    def _move(self, value: Any) -> Any:
        if isinstance(value, Mapping):  # a dict input: its named tensors
            return to_device(value, self.device)
        return value.to(self.device) if hasattr(value, "to") else value


def _task_on(task: Task, device: Any) -> Task:
    """``task`` as seen by a model on ``device``: its data arrive there (CPU: unchanged)."""
    import dataclasses

    if device.type == "cpu":
        return task
    return dataclasses.replace(
        task,
        train_data=_OnDevice(task.train_data, device),  # type: ignore[arg-type]
        val_data=_OnDevice(task.val_data, device),  # type: ignore[arg-type]
        example_input=to_device(task.example_input, device),
    )


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _output_shape(model: nn.Module, example: Any, who: str) -> tuple[int, ...]:
    import torch

    try:
        with torch.no_grad():
            out = call(model, example)
    except Exception as exc:
        raise WorkloadError(
            f"{who} fails on the task's example input: {type(exc).__name__}: {exc}"
        ) from None
    try:
        out = primary_tensor(out)
    except InputError:
        raise WorkloadError(
            f"{who} returned {type(out).__name__}; compress needs a tensor output (or logits)"
        ) from None
    if not torch.isfinite(out.float()).all():
        raise WorkloadError(f"{who} outputs NaN or inf on the task's example input")
    return tuple(out.shape)


def _stats(model: nn.Module, task: Task, example: Any, *, macs: float | None) -> ModelStats:
    return ModelStats(
        params=count_params(model),
        macs=count_macs(model, example) if macs is None else macs,
        size_bytes=state_dict_bytes(model),
        accuracy=task.evaluate(model),
    )
