"""What one trial does, in a child process: build → evaluate → deploy → measure a candidate.

Every function here named ``*_job`` runs inside :func:`wattwise.measure.run_isolated` (a
spawned child): a backend that segfaults, a model that hangs or runs out of memory fails one
trial, not the search. Each job meters its own energy from its first line (so the child's
imports count too) with the same meter the measurements use, because the CPU estimate meter
only sees the CPU time of the process it runs in.

Expensive work is reused: the float model of each :class:`ModelChoice` (the trained baseline,
a pruned and fine-tuned copy, a distilled student) is built once, by :func:`build_job`, and
cached under ``OUT/cache/models`` as a plain state dict (``torch.save``, read back with
``weights_only=True``, so a cache file can never run code). Loading rebuilds the module tree
from the task's factory (or the distillation student's) and resizes layers to the saved shapes,
which is what structured pruning changed. A model that cannot round-trip this way (e.g. a
recipe ending in a quantized graph) is marked uncacheable and rebuilt in each trial.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import fcntl
import hashlib
import importlib
import json
import math
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from wattwise._inputs import call, describe, primary_tensor, take_rows
from wattwise.errors import InputError, UnavailableError, WattwiseError, WorkloadError
from wattwise.results import Figures
from wattwise.search._space import Candidate, ModelChoice

if TYPE_CHECKING:
    from torch import nn

    from wattwise.tasks import Task

CACHE_FORMAT = 1

__all__ = [
    "JOB_IMPORTS",
    "JobContext",
    "TaskRef",
    "baseline_job",
    "build_job",
    "classify_failure",
    "export_job",
    "trial_job",
]

# What a search's children import (trials export to ONNX and run ONNX Runtime, prune with
# Torch-Pruning): the fork server imports it once instead (see measure/_isolate.py). torchao
# is left out: its import prints warnings, which from the server would reach the terminal.
JOB_IMPORTS = (
    "onnx",
    "onnxruntime",
    "onnxscript",
    "torch_pruning",
    "wattwise.search._objective",
    "wattwise.deploy",
    "wattwise.passes",
    "wattwise.tasks",
)


# ----------------------------------------------------------------------------- inputs


@dataclasses.dataclass(frozen=True)
class TaskRef:
    """How a child process gets the task: by spec (``"digits"``, ``"pkg.mod:factory"``) or, for a
    :class:`Task` given in Python, the object itself (pickled; workers need a spec)."""

    spec: str | None
    obj: Any = None

    def load(self) -> Task:
        if self.obj is not None:
            return self.obj  # type: ignore[no-any-return]
        if self.spec is None:
            raise InputError("this study's task was given as a Python object; pass --task SPEC")
        from wattwise.tasks import load_task

        return load_task(self.spec)


@dataclasses.dataclass(frozen=True)
class JobContext:
    """What every job needs besides its own arguments.

    Attributes:
        task: how to get the task.
        task_id: identifies the task and its training recipe (part of every cache key).
        cache_dir: ``OUT/cache``.
        seed: seeds training and compression.
        device: where models run and are measured.
        meter: energy meter name (``"auto"`` picks the best available for ``device``).
        train_config: the :class:`~wattwise.tasks.TrainConfig` (a dict) of the fine-tunes a
            recipe runs (``None``: the task's recipe); the baseline ignores it.
        log_dir: where each job's output (the user's prints and warnings, C libraries'
            writes) goes, one file per trial or step (``OUT/logs``); ``None``: to the caller's
            stdout and stderr.
    """

    task: TaskRef
    task_id: str
    cache_dir: str
    seed: int = 0
    device: str = "cpu"
    meter: str = "auto"
    log_dir: str | None = None
    train_config: dict[str, Any] | None = None

    def log_path(self, name: str) -> str | None:
        """The log file for one trial or step (``trial-0007``, ``baseline``, ``export``), to
        pass to :func:`~wattwise.measure.run_isolated` as ``log_path``; ``None`` without a
        ``log_dir``."""
        return str(Path(self.log_dir) / f"{name}.log") if self.log_dir is not None else None


def task_id(task: Task, spec: str | None) -> str:
    """A stable identity of the task and its baseline training recipe."""
    fields = {
        "name": task.name,
        "spec": spec,
        "train": len(task.train_data),  # type: ignore[arg-type]
        "val": len(task.val_data),  # type: ignore[arg-type]
        "input": _input_id(task.example_input),
        "classes": task.num_classes,
        "epochs": task.epochs,
        "lr": task.lr,
        "batch": task.batch_size,
        "seed": task.seed,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def _input_id(example: Any) -> Any:
    """A tensor input by its shape (as studies before dict inputs were keyed, so they
    resume); a tuple or dict by its shapes, dtypes and names."""
    import torch

    return list(example.shape) if isinstance(example, torch.Tensor) else describe(example)


def model_key(ctx: JobContext, passes: Sequence[Mapping[str, Any]]) -> str:
    text = json.dumps(
        {
            "format": CACHE_FORMAT,
            "task": ctx.task_id,
            "seed": ctx.seed,
            "passes": [dict(p) for p in passes],
            # only when set, so the keys of models built with the task's recipe stay the same
            **({"training": ctx.train_config} if ctx.train_config and passes else {}),
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:20]


# ----------------------------------------------------------------------------- child


def _die_with_parent() -> None:
    """Set up a job's child process.

    Ask Linux to kill this child when its parent dies, as a second guard beside
    ``run_isolated``'s lifeline (which a child stuck in C code holding the GIL could not act
    on): an orphaned trial would otherwise keep running, and keep the device's measurement
    lock, for minutes. Its parent is the fork server, which exits when its caller does. And,
    unless its output goes to a log file, silence library warnings and log lines (torch,
    torchao, onnx): the child then shares the parent's terminal, where they would tear the
    progress bar; a trial's failure is reported with its reason instead. In a log they help
    read a failure.
    """
    import logging
    import warnings

    from wattwise.measure._isolate import output_is_logged

    if not output_is_logged():
        warnings.simplefilter("ignore")
        for name in ("torch", "torchao", "onnx", "onnxscript", "onnxruntime"):
            logging.getLogger(name).setLevel(logging.ERROR)
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        import ctypes
        import signal

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL))


def _quiet_torch() -> None:
    """torch sets its own loggers' levels when it is imported: quiet them after that."""
    import logging

    import torch._logging

    torch._logging.set_logs(all=logging.ERROR)


# ----------------------------------------------------------------------------- energy


class _Ledger:
    """Energy and time of one job's phases, from one meter created in this process."""

    def __init__(self, meter_name: str, device: str) -> None:
        from wattwise.measure.meters import create_meter

        self.meter = create_meter(meter_name, device)
        self.source = self.meter.source
        self.uncertainty = float(self.meter.uncertainty)
        self.energy_j: dict[str, float] = {}
        self.time_s: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        from wattwise.measure.meters import CounterError

        mark = self.meter.start()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.time_s[name] = self.time_s.get(name, 0.0) + time.perf_counter() - t0
            try:
                joules = self.meter.stop(mark).energy_j
            except CounterError:
                joules = 0.0  # a window too short for the counter: below what it resolves
            self.energy_j[name] = self.energy_j.get(name, 0.0) + joules

    def add(self, other: Mapping[str, Any], prefix: str = "") -> None:
        for name, joules in (other.get("energy_j") or {}).items():
            key = f"{prefix}{name}"
            self.energy_j[key] = self.energy_j.get(key, 0.0) + float(joules)

    def to_dict(self) -> dict[str, Any]:
        return {
            "energy_j": dict(self.energy_j),
            "time_s": dict(self.time_s),
            "energy_source": self.source,
            "energy_uncertainty": self.uncertainty,
        }

    def close(self) -> None:
        self.meter.close()


@contextlib.contextmanager
def _job(ctx: JobContext, *, threads: int | None = None) -> Iterator[tuple[Task, _Ledger]]:
    """How every job starts: die with the parent, pin ``threads`` (before anything starts a
    thread: threads inherit their creator's affinity), meter from here on, load the task and
    what measuring needs (in the ``setup`` phase, so the child's imports count); the meter is
    closed however the job ends."""
    _die_with_parent()
    if threads:
        from wattwise.measure._isolate import pin_threads

        pin_threads(threads)
    ledger = _Ledger(ctx.meter, ctx.device)
    try:
        with ledger.phase("setup"):
            task = ctx.task.load()
            if ctx.train_config:
                from wattwise.tasks import TrainConfig

                config = TrainConfig.from_dict(ctx.train_config).for_fine_tunes()
                task = dataclasses.replace(task, train_config=config)
            _quiet_torch()
            for name in ("wattwise.measure", "wattwise.passes._model"):
                importlib.import_module(name)  # now, so that their cost is metered as setup
        yield task, ledger
    finally:
        ledger.close()


# ----------------------------------------------------------------------------- cache


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """One builder per cache entry per machine (two workers here would build it twice)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _skeleton(task: Task, passes: Sequence[Mapping[str, Any]]) -> nn.Module:
    """A fresh module tree of the right family: the last distillation student in the recipe,
    or the task's own model."""
    student = None
    for p in passes:
        if p.get("type") == "distill" and p.get("student"):
            student = p
    if student is None:
        return task.model_factory()
    kwargs = dict(student.get("student_kwargs") or {})
    if student["student"] == "task":
        return task.model_factory(**kwargs)  # type: ignore[call-arg]
    from wattwise import archs

    return archs.create(str(student["student"]), **kwargs)


def _resize_like(model: nn.Module, state: Mapping[str, Any]) -> None:
    """Give every parameter and buffer of ``model`` the shape it has in ``state``.

    Structured pruning removes channels, so a pruned model has the same module tree with
    smaller tensors. Forward passes read shapes from the tensors, except a grouped conv's
    ``groups``, which is rescaled for depthwise convs (groups = channels).
    """
    import torch
    from torch import nn

    modules = dict(model.named_modules())
    for name, tensor in state.items():
        owner_name, _, attr = name.rpartition(".")
        owner = modules.get(owner_name)
        if owner is None or not isinstance(tensor, torch.Tensor):
            continue
        current = owner._parameters.get(attr) if attr in owner._parameters else None
        if current is not None:
            if tuple(current.shape) != tuple(tensor.shape):
                owner._parameters[attr] = nn.Parameter(
                    torch.empty(tensor.shape, dtype=tensor.dtype), requires_grad=True
                )
        elif attr in owner._buffers:
            buf = owner._buffers[attr]
            if buf is not None and tuple(buf.shape) != tuple(tensor.shape):
                owner._buffers[attr] = torch.empty(tensor.shape, dtype=tensor.dtype)
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            w = module.weight
            out_ch = int(w.shape[0])
            if module.groups > 1 and module.groups == module.in_channels:  # depthwise
                mult = max(1, module.out_channels // module.groups)
                module.groups = max(1, out_ch // mult)
            module.out_channels = out_ch
            module.in_channels = int(w.shape[1]) * module.groups
        elif isinstance(module, nn.modules.batchnorm._NormBase):
            ref = module.weight if module.weight is not None else module.running_mean
            if ref is not None:
                module.num_features = int(ref.shape[0])
        elif isinstance(module, nn.Linear):
            module.out_features, module.in_features = (int(s) for s in module.weight.shape)
        elif isinstance(module, nn.LayerNorm) and module.weight is not None:
            module.normalized_shape = tuple(int(s) for s in module.weight.shape)
        elif isinstance(module, nn.GroupNorm) and module.weight is not None:
            module.num_channels = int(module.weight.shape[0])


def _load_cached(path: Path, task: Task, passes: Sequence[Mapping[str, Any]]) -> nn.Module:
    import torch

    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
        raise InputError(f"cache file {path} is not a wattwise model cache (format {CACHE_FORMAT})")
    state = data["state_dict"]
    model = _skeleton(task, passes)
    _resize_like(model, state)
    model.load_state_dict(state, strict=True)
    model.eval()
    return model


def _paths(ctx: JobContext, key: str) -> tuple[Path, Path, Path]:
    root = Path(ctx.cache_dir) / "models"
    return root / f"{key}.pt", root / f"{key}.uncacheable", root / f"{key}.lock"


def model_macs(
    ctx: JobContext, task: Task, passes: Sequence[Mapping[str, Any]], model: Any
) -> float:
    """MACs per item of the float model of ``passes`` on the task's example input, counted once
    and kept beside its cache entry (``KEY.macs.json``).

    Counting loads dynamo (about 1.5 s in a fresh child, see ``measure/_macs.py``), and every
    trial of a model choice would pay it for the same number. A record that cannot be read, or
    holds no finite count, is counted again and rewritten.
    """
    from wattwise._fs import atomic_write_text
    from wattwise.passes._model import count_macs

    path = Path(ctx.cache_dir) / "models" / f"{model_key(ctx, passes)}.macs.json"
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        value = json.loads(path.read_text(encoding="utf-8"))["macs_per_item"]
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    macs = count_macs(model, task.example_input)
    with contextlib.suppress(OSError):  # a read-only cache still gives the count
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({"macs_per_item": macs}) + "\n")
    return macs


def _same_outputs(a: nn.Module, b: nn.Module, example: Any) -> bool:
    import torch

    with torch.no_grad():
        x = take_rows(example, 2)
        ya, yb = call(a, x), call(b, x)
    if not isinstance(ya, torch.Tensor):  # a tuple or a ModelOutput: compare what is scored
        try:
            ya, yb = primary_tensor(ya), primary_tensor(yb)
        except InputError:
            return False
    return (
        isinstance(ya, torch.Tensor)
        and isinstance(yb, torch.Tensor)
        and ya.shape == yb.shape
        and bool(torch.allclose(ya, yb, atol=1e-5, rtol=1e-4))
    )


def _save_cached(path: Path, model: nn.Module, meta: dict[str, Any]) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    torch.save({"format": CACHE_FORMAT, "state_dict": state, "meta": meta}, tmp)
    os.replace(tmp, path)


def _get_model(
    ctx: JobContext, task: Task, passes: Sequence[Mapping[str, Any]], ledger: _Ledger
) -> tuple[nn.Module, dict[str, Any]]:
    """The float model after ``passes`` from the trained baseline: from the cache, or built
    (and cached) now. Returns it with what building it did (empty when it came from cache)."""
    key = model_key(ctx, passes)
    path, marker, lock = _paths(ctx, key)
    if path.exists():
        with contextlib.suppress(Exception):  # unreadable or stale entry: rebuild below
            return _load_cached(path, task, passes), {}
    with _file_lock(lock):
        if path.exists():  # another worker on this machine built it while we waited
            with contextlib.suppress(Exception):
                return _load_cached(path, task, passes), {}
        info: dict[str, Any] = {"built": key}
        if not passes:
            with ledger.phase("train"):
                import torch

                torch.manual_seed(ctx.seed)
                from wattwise.tasks import TrainConfig

                # The reference is trained with the task's own recipe, whatever the
                # fine-tunes use.
                model = task.fit(task.model_factory(), seed=task.seed, config=TrainConfig())
            info["accuracy"] = task.evaluate(model)
        else:
            # Build on the longest prefix of the recipe that stands alone (cached, or built and
            # cached now): distill -> prune reuses the distilled student every other deployment
            # of it already paid for. The seed is the one the pass has in the whole recipe, so
            # either way gives the same model.
            split = _reusable_prefix(passes)
            start, _ = _get_model(ctx, task, passes[:split], ledger)
            from wattwise.passes import compress

            with ledger.phase("compress"):
                model, log = compress(
                    start, [dict(p) for p in passes[split:]], task=task, seed=ctx.seed + split
                )
            info["accuracy"] = log.final.accuracy
            info["log"] = log.to_dict()
        if not marker.exists():
            try:
                _save_cached(path, model, {"passes": [dict(p) for p in passes]})
                again = _load_cached(path, task, passes)
                ok = _same_outputs(model, again, task.example_input)
            except Exception:
                ok = False
            if not ok:
                with contextlib.suppress(OSError):
                    path.unlink()
                marker.write_text("the model does not round-trip through a state dict\n")
        return model, info


def _reusable_prefix(passes: Sequence[Mapping[str, Any]]) -> int:
    """How many leading passes of a recipe can be built (and cached) on their own: all but the
    last, unless the last distils from the model before compression (``teacher`` "original"),
    which only the whole recipe knows; 0 means build from the baseline."""
    last = passes[-1] if passes else {}
    if last.get("type") == "distill":
        teacher = last.get("teacher")
        if teacher == "original" or (teacher is None and not last.get("student")):
            return 0
    return max(0, len(passes) - 1)


# ----------------------------------------------------------------------------- failures


def classify_failure(exc: BaseException) -> str:
    """A short kind for a failed trial: ``crash``, ``killed``, ``oom``, ``timeout``, ``nan``,
    ``mismatch``, ``unsupported`` or ``error``."""
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str) and reason:
        return reason
    text = str(exc)
    if isinstance(exc, MemoryError) or "MemoryError" in text or "out of memory" in text.lower():
        return "oom"
    if "NaN" in text or " inf" in text:
        return "nan"
    if "differs from eager fp32" in text:
        return "mismatch"
    if isinstance(exc, UnavailableError) or "can't run" in text:
        return "unsupported"
    return "error"


def _failure(exc: BaseException) -> dict[str, Any]:
    first = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, WattwiseError):
        first = f"{type(exc).__name__}: {first}"
    return {"ok": False, "kind": classify_failure(exc), "message": first[:500]}


# ----------------------------------------------------------------------------- evaluation


def _fixed_batch_module(fn: Any, batch_size: int) -> nn.Module:
    """Wrap a deployed callable so a metric can feed it any batch size: inputs (positional
    tensors, or named ones such as ``input_ids`` and ``attention_mask``) are cut into chunks of
    exactly ``batch_size`` rows, the last one padded by repeating its first row and the
    padding's outputs dropped. A graph whose kernels depend on the batch (OpenVINO's int8)
    then computes the metric as it runs deployed, and a static one never sees a shape it
    wasn't checked on."""
    import torch
    from torch import nn

    def pad(t: torch.Tensor, k: int) -> torch.Tensor:
        return torch.cat([t, t[:1].expand(batch_size - k, *t.shape[1:])]) if k < batch_size else t

    class _FixedBatch(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fn = fn

        def forward(self, *args: torch.Tensor, **named: torch.Tensor) -> Any:
            parts = [*args, *named.values()]
            n = int(parts[0].shape[0])
            outs = []
            for start in range(0, n, batch_size):
                chunk = [p[start : start + batch_size] for p in parts]
                k = int(chunk[0].shape[0])
                chunk = [pad(c, k) for c in chunk]
                out = self.fn(
                    *chunk[: len(args)], **dict(zip(named, chunk[len(args) :], strict=True))
                )
                outs.append(out[:k] if isinstance(out, torch.Tensor) else [o[:k] for o in out])
            if all(isinstance(o, torch.Tensor) for o in outs):
                return torch.cat(outs)  # type: ignore[arg-type]
            return tuple(torch.cat(parts) for parts in zip(*outs, strict=True))

    return _FixedBatch()


def _accuracy_model(deployed: Any, model: nn.Module, cand: Candidate, task: Task) -> nn.Module:
    """What the task metric is computed on, at any batch size.

    ONNX Runtime models have a dynamic batch dimension: the deployed session itself. Eager
    backends: the deployed runner itself. ``compile`` has static shapes, so the metric runs the
    same model at the same precision eagerly (for int8 the PT2E graph, whose quantize /
    dequantize ops are what inductor fuses); the equivalence check has already held the
    compiled graph to it on the check batches.
    """
    if isinstance(deployed, _Generating):
        return deployed.eager  # the same weights and precision, not compiled
    if cand.backend == "onnxruntime" or cand.backend in ("eager", "eager_cl"):
        return deployed.module  # type: ignore[no-any-return]
    from wattwise.deploy import Deployment, deploy_with

    try:
        eager = deploy_with(
            model,
            Deployment(
                backend="eager",
                precision=cand.precision,
                batch_size=cand.batch_size,
                threads=cand.threads,
                device=cand.device,
            ),
            example_input=task.example_input,
            check=False,
        )
    except WattwiseError:  # no eager form at this precision: judge the deployment itself
        return _fixed_batch_module(deployed.module, cand.batch_size)
    return eager.module  # type: ignore[no-any-return]


def _finite(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise WorkloadError(f"{what} is {value} (NaN or inf)")
    return value


# ----------------------------------------------------------------------------- jobs


def _figures(m: Any, accuracy: float, macs: float, model: nn.Module, size_bytes: int) -> Figures:
    """A measured candidate's figures: its measurement's, its accuracy, MACs and size."""
    from wattwise.passes._model import count_params

    return Figures.measured(
        m, accuracy=accuracy, macs_per_item=macs, params=count_params(model), size_bytes=size_bytes
    )


def baseline_job(ctx: JobContext, batch_size: int, max_time_s: float) -> dict[str, Any]:
    """Train (or load) the baseline, evaluate it, and measure it as fp32 eager at ``batch_size``.

    Returns its figures flat beside ``deployment``, ``recipe``, ``measurement`` and ``ledger``:
    the study keeps this dict as its baseline (``Figures.from_dict`` reads it back).
    """
    with _job(ctx) as (task, ledger):
        from wattwise.passes._model import count_macs, state_dict_bytes

        model, _info = _get_model(ctx, task, (), ledger)
        with ledger.phase("evaluate"):
            accuracy = _finite(task.evaluate(model), "the baseline's metric")
            macs = count_macs(model, task.example_input)
        m = measure_in_job(model, task, ctx, ledger, _Batch(batch_size), max_time_s)
        figures = _figures(m, accuracy, macs, model, state_dict_bytes(model))
        return {
            "ok": True,
            **figures.to_dict(),
            "deployment": {
                "backend": "eager",
                "precision": "fp32",
                "batch_size": batch_size,
                "threads": None,
                "device": ctx.device,
            },
            "recipe": [],
            "measurement": m.to_dict(),
            "ledger": ledger.to_dict(),
        }


def build_job(ctx: JobContext, choice: ModelChoice) -> dict[str, Any]:
    """Build the float model of ``choice`` into the cache (its training is the expensive part).

    Fine-tunes trained on fewer threads (``optimize --training``'s configuration) pin the job
    to as many vCPUs, as a training run is pinned (``docs/training.md``)."""
    threads = None
    if ctx.train_config and choice.passes:
        from wattwise.tasks import TrainConfig

        threads = TrainConfig.from_dict(ctx.train_config).for_fine_tunes().threads
    with _job(ctx, threads=threads) as (task, ledger):
        try:
            _model, info = _get_model(ctx, task, choice.passes, ledger)
        except Exception as exc:
            return _failed(exc, ledger)
        return {"ok": True, "info": info, "ledger": ledger.to_dict()}


@dataclasses.dataclass(frozen=True)
class _Generating:
    """A generative candidate deployed (:func:`~wattwise.deploy._generation.serve_for_generation`)
    in the shape the jobs read a deployment: ``module`` to measure, and no export bytes."""

    module: nn.Module
    eager: nn.Module
    notes: tuple[str, ...]
    check: Any = None
    onnx_bytes: bytes | None = None
    ir_bytes: tuple[bytes, bytes] | None = None


def _prepare_generation(
    ctx: JobContext, task: Task, cand: Candidate, ledger: _Ledger
) -> tuple[_Generating, nn.Module, nn.Module]:
    """A generative task's candidate: its model at its precision, compiled or not, with the KV
    cache kept; held to its eager form on the candidate's own batch of prompts."""
    from wattwise.deploy._generation import check_generation, serve_for_generation

    assert task.generate is not None
    float_model, _ = _get_model(ctx, task, cand.model.passes, ledger)
    with ledger.phase("deploy"):
        served = serve_for_generation(
            copy.deepcopy(float_model),
            cand.backend,
            cand.precision,
            device=cand.device,
        )
        agreement = check_generation(served, task.example_input, cand.batch_size, task.generate)
    notes = (*served.notes, f"first tokens agree with the eager form's: {agreement:.0%}")
    return _Generating(served.module, served.eager, notes), float_model, served.eager


def _prepare(
    ctx: JobContext, task: Task, cand: Candidate, ledger: _Ledger
) -> tuple[Any, nn.Module, nn.Module]:
    """The deployed candidate, with the float model it came from and the model it deploys."""
    from wattwise.deploy import Deployment, deploy_with

    if task.generate is not None:
        return _prepare_generation(ctx, task, cand, ledger)
    float_model, _ = _get_model(ctx, task, cand.model.passes, ledger)
    model = float_model
    if cand.quantize_passes:
        from wattwise.passes import compress

        with ledger.phase("quantize"):
            model, _log = compress(
                float_model, list(cand.quantize_passes), task=task, seed=ctx.seed
            )
    deployment = Deployment(
        backend=cand.backend,
        precision=cand.precision,
        batch_size=cand.batch_size,
        threads=cand.threads,
        device=cand.device,
    )
    with ledger.phase("deploy"):
        calibration = task.calibration_batches()
        deployed = deploy_with(
            model, deployment, example_input=task.example_input, calibration=calibration
        )
    return deployed, float_model, model


class MeasuredAt(Protocol):
    """How a candidate is measured: its batch size and threads (``None``: every allowed core);
    a :class:`Candidate` and a confirmation's spec are both."""

    @property
    def batch_size(self) -> int: ...

    @property
    def threads(self) -> int | None: ...


@dataclasses.dataclass(frozen=True)
class _Batch:
    """Measured at ``batch_size`` on every allowed core: how the baseline is."""

    batch_size: int
    threads: int | None = None


def measure_in_job(
    target: Any,
    task: Task,
    ctx: JobContext,
    ledger: _Ledger,
    at: MeasuredAt,
    max_time_s: float,
    min_window_s: float | None = None,
) -> Any:
    """Measure ``target`` on the task's example input on ``ctx.device`` at ``at``'s batch size
    and threads, in this (already isolated) job, metered as the job's ``measure`` phase: one
    protocol for the baseline, the trials and the confirmation rounds. MACs are not counted
    here: the jobs count them on the float model (the deployed callable often hides its
    operations), and the confirmation publishes none."""
    from wattwise.measure import measure
    from wattwise.measure._power_limit import power_limit

    limit = getattr(at, "power_limit_w", None)
    with ledger.phase("measure"), power_limit(limit, ctx.device):
        return measure(
            target,
            task.example_input,
            device=ctx.device,
            batch_size=at.batch_size,
            threads=at.threads,
            max_time_s=max_time_s,
            min_window_s=min_window_s,
            isolate=False,
            meter=ctx.meter,
            count_macs=False,
            generate=task.generate,
        )


def _failed(exc: BaseException, ledger: _Ledger) -> dict[str, Any]:
    """A job's answer when its work raised: the kind and reason, and what it spent anyway."""
    return {**_failure(exc), "ledger": ledger.to_dict()}


# A screening measurement: the harness's minimum of windows, each this short, for at most this
# long (the meter's own minimum window still wins). On the digits CNN it took about 1 s where
# the full protocol took 2 to 3 s.
SCREEN_WINDOW_S = 0.2
SCREEN_MAX_TIME_S = 0.5


@dataclasses.dataclass(frozen=True)
class Screen:
    """When a candidate's screening measurement is all it gets (multi-fidelity).

    Attributes:
        energy_above_j: its screened J/item is above this (a margin over the best feasible
            trial so far): it cannot be the best; ``None`` before any feasible trial.
        min_accuracy: its metric is below this (the baseline less the allowed drop): it is
            not feasible, whatever it costs; ``None`` when not known.
    """

    energy_above_j: float | None = None
    min_accuracy: float | None = None

    def stops(self, accuracy: float, energy_j: float | None) -> bool:
        if self.min_accuracy is not None and accuracy < self.min_accuracy - 1e-9:
            return True
        return (
            self.energy_above_j is not None
            and energy_j is not None
            and (energy_j > self.energy_above_j)
        )


def _measure_candidate(
    deployed: Any,
    task: Task,
    ctx: JobContext,
    ledger: _Ledger,
    cand: Candidate,
    max_time_s: float,
    accuracy: float,
    screen: Screen | None,
) -> tuple[Any, str]:
    """The candidate's measurement and its fidelity: a short screening first when ``screen``
    may stop it (it is then all the candidate gets), else, or if it could still be the best,
    the full protocol."""
    if screen is not None and (screen.energy_above_j is not None or screen.stops(accuracy, None)):
        m = measure_in_job(
            deployed, task, ctx, ledger, cand, SCREEN_MAX_TIME_S, min_window_s=SCREEN_WINDOW_S
        )
        if screen.stops(accuracy, m.energy_j_per_item):
            return m, "screen"
    return measure_in_job(deployed, task, ctx, ledger, cand, max_time_s), "full"


def trial_job(
    ctx: JobContext, cand: Candidate, max_time_s: float, screen: Screen | None = None
) -> dict[str, Any]:
    """Build, evaluate, deploy (checked against eager fp32) and measure one candidate.

    Returns a dict: ``ok`` with the figures (flat, :data:`~wattwise.results.FIGURE_KEYS`) and
    the ``fidelity`` of their measurement, or ``ok=False`` with ``kind`` and ``message``;
    always the ``ledger`` (energy per phase, spent whether or not the trial succeeded).
    """
    with _job(ctx, threads=cand.threads) as (task, ledger):
        from wattwise.passes._model import state_dict_bytes

        try:
            deployed, float_model, model = _prepare(ctx, task, cand, ledger)
            with ledger.phase("evaluate"):
                judged = _accuracy_model(deployed, model, cand, task)
                accuracy = _finite(
                    float(task.metric(judged, task.val_loader(max(256, cand.batch_size)))),
                    "the candidate's metric",
                )
                macs = model_macs(ctx, task, cand.model.passes, float_model)
            m, fidelity = _measure_candidate(
                deployed.module, task, ctx, ledger, cand, max_time_s, accuracy, screen
            )
        except (Exception, MemoryError) as exc:
            return _failed(exc, ledger)
        if deployed.onnx_bytes is not None:
            size = len(deployed.onnx_bytes)
        elif deployed.ir_bytes is not None:
            size = sum(len(part) for part in deployed.ir_bytes)
        else:
            size = state_dict_bytes(model)
        figures = _figures(m, accuracy, macs, model, int(size))
        return {
            "ok": True,
            **figures.to_dict(),
            "fidelity": fidelity,
            "check": deployed.check.to_dict() if deployed.check else None,
            "notes": list(deployed.notes) + list(m.notes),
            "measurement": m.to_dict(),
            "ledger": ledger.to_dict(),
        }


def export_job(
    ctx: JobContext,
    cand: Candidate,
    out_dir: str,
    measurement: dict[str, Any] | None,
    accuracy: float | None,
    how_made: str,
) -> dict[str, Any]:
    """Rebuild the chosen candidate and export it as a self-contained artifact directory."""
    with _job(ctx) as (task, ledger):
        from wattwise.deploy import export_deployment
        from wattwise.measure import Measurement

        if task.generate is not None:
            # A generative deployment is the model itself, kept whole for its KV cache: there
            # is no graph file to write for it yet (docs/search.md, "Generative tasks").
            raise UnavailableError(
                "a generative deployment is the model itself, kept whole for its KV cache, "
                "and has no artifact format yet: rebuild it with "
                f"wattwise.deploy.serve_for_generation(model, {cand.backend!r}, "
                f"{cand.precision!r}) and generate {cand.batch_size} sequences at a time"
            )
        deployed, _, _ = _prepare(ctx, task, cand, ledger)
        with ledger.phase("export"):
            path = export_deployment(
                deployed,
                out_dir,
                measurement=Measurement.from_dict(measurement) if measurement else None,
                accuracy=accuracy if accuracy is not None and 0 <= accuracy <= 1 else None,
                task_name=task.name,
                how_made=how_made,
                overwrite=True,
            )
        return {"ok": True, "path": str(path), "ledger": ledger.to_dict()}
