"""Quantization: int8 (static PT2E and dynamic), bf16/fp16 casts, and torchao's CUDA configs.

Methods:

``pt2e-int8``
    Static post-training quantization through PyTorch 2 export: ``torch.export`` →
    ``prepare_pt2e`` with torchao's ``X86InductorQuantizer`` (per-channel int8 weights, uint8
    activations) → calibration on ``task.calibration_batches()`` → ``convert_pt2e``. The result
    is a ``GraphModule`` of quantize/dequantize ops around float convs and matmuls: run
    eagerly it is *not* faster (we evaluate accuracy that way); its speed comes when
    ``torch.compile`` (inductor, with freezing) fuses the q/dq pairs into int8 kernels, which
    is what the deploy step does.
``dynamic-int8``
    Weights int8, activations quantized on the fly per batch: for Linear- and RNN-heavy
    models. Linear layers go through torchao's ``Int8DynamicActivationInt8WeightConfig``;
    GRU/LSTM layers through ``torch.ao.quantization.quantize_dynamic``, the only CPU int8
    recurrent kernels in this torch (torchao rewrites ``nn.Linear`` only). Convs stay float.
``bf16`` / ``fp16``
    Cast the weights; the model casts its inputs and returns float32 logits. On CPUs without
    AMX/AVX512-FP16, fp16 is emulated and slow: the pass times it and says so in the log.
``int8-weight-only``
    torchao's ``Int8WeightOnlyConfig`` on every Linear: int8 weights, float activations. It
    runs on the CPU too (a quarter of the Linear weights' bytes; whether it is faster there is
    for the measurement to say: the weights are dequantized in the matmul).
``int4-weight-only``, ``float8``
    torchao's GPU configs (weight-only int4, float8 dynamic activations and weights). They
    need CUDA, as torchao's kernels for them are CUDA-only; float8 needs compute capability
    8.9+ (Ada/Hopper). Elsewhere they raise :class:`UnavailableError` saying why.

The accuracy guard (``max_accuracy_drop``, pt2e-int8 only): when the drop exceeds it, the
layers whose quantization alone costs the most accuracy are put back to float one at a time
(``X86InductorQuantizer.set_module_name_qconfig(name, None)``) until it holds, up to half of
the layers; if it still does not hold, quantization-aware fine-tuning (``prepare_qat_pt2e``,
``qat_epochs``) is tried. The log's ``method`` says which was used.
"""

from __future__ import annotations

import copy
import dataclasses
import time
import warnings
from typing import TYPE_CHECKING, Any, ClassVar

from wattwise._core import first_line
from wattwise._inputs import call, describe, to_device
from wattwise.errors import InputError, UnavailableError
from wattwise.passes._base import Pass, PassContext, register_handler, register_pass
from wattwise.passes._fields import choice, integer, names, number
from wattwise.passes._model import model_device, resolve_modules

if TYPE_CHECKING:
    import torch
    from torch import nn

    from wattwise.tasks import Task

METHODS = (
    "pt2e-int8",
    "dynamic-int8",
    "bf16",
    "fp16",
    "int8-weight-only",
    "int4-weight-only",
    "float8",
)
_CUDA_METHODS = ("int4-weight-only", "float8")
# At most this fraction of the quantizable layers goes back to float before QAT is tried:
# beyond it, most of int8's benefit is gone anyway.
_MAX_FLOAT_FRACTION = 0.5
_RANK_CALIBRATION_ITEMS = 64


@register_pass
@dataclasses.dataclass(frozen=True)
class Quantize(Pass):
    """Lower the precision of weights (and activations).

    Args:
        method: one of ``pt2e-int8``, ``dynamic-int8``, ``bf16``, ``fp16``,
            ``int8-weight-only``, ``int4-weight-only``, ``float8`` (see the module docstring).
        calibration_items: training inputs used to calibrate static activation ranges.
        max_accuracy_drop: largest acceptable drop of the task metric (0.01 = one point);
            pt2e-int8 then falls back to float layers and QAT as needed. ``None``: no guard.
        qat_epochs: epochs of quantization-aware fine-tuning, when the guard needs it.
        skip: module names to keep in float.

    Example:
        >>> model2, log = wattwise.compress(model, [Quantize("pt2e-int8", max_accuracy_drop=0.01)], task=task)
        >>> log.records[0].method
        'ptq'
    """

    TYPE: ClassVar[str] = "quantize"
    PRESERVES_MACS: ClassVar[bool] = True

    method: str = "pt2e-int8"
    calibration_items: int = 256
    max_accuracy_drop: float | None = None
    qat_epochs: int = 2
    skip: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        choice(self, "method", METHODS)
        integer(self, "calibration_items", low=1)
        number(self, "max_accuracy_drop", low=0.0, high=1.0, optional=True)
        integer(self, "qat_epochs", low=0)
        names(self, "skip")


# -- pt2e static int8 --------------------------------------------------------------------------


def _export(model: nn.Module, batch: torch.Tensor, method: str) -> nn.Module:
    """``torch.export`` with a dynamic batch dimension, errors as one line naming the model."""
    import torch

    if not isinstance(batch, torch.Tensor):
        # The graph is captured with one dynamic batch dimension for one tensor argument.
        raise InputError(
            f"Quantize({method}) takes models with one tensor input for now; this task's "
            f"input is {describe(batch)} (use method='dynamic-int8', or deploy with onnxruntime int8)"
        )
    if batch.shape[0] < 2:  # export specialises a batch of 1; two makes the dimension symbolic
        batch = torch.cat([batch, batch])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exported = torch.export.export(
                model, (batch,), dynamic_shapes=({0: torch.export.Dim.DYNAMIC},)
            )
    except Exception as exc:
        first = first_line(exc, default=type(exc).__name__)
        raise InputError(
            f"Quantize({method}): torch.export cannot capture {type(model).__name__}: {first}"
        ) from None
    return exported.module()


def _quantizer(float_layers: tuple[str, ...], *, qat: bool = False) -> Any:
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config(is_qat=qat))
    for name in float_layers:
        quantizer.set_module_name_qconfig(name, None)
    return quantizer


def _drop_unused_attrs(gm: Any) -> None:
    """Delete attributes the converted graph no longer reads.

    ``convert_pt2e`` folds each float weight into an int8 constant but leaves the float
    parameter on the module, which would make the saved model bigger, not smaller.
    """
    used = {str(n.target) for n in gm.graph.nodes if n.op == "get_attr"}
    for name, _ in list(gm.named_parameters()) + list(gm.named_buffers()):
        if name not in used:
            owner_name, _, attr = name.rpartition(".")
            owner = gm.get_submodule(owner_name) if owner_name else gm
            delattr(owner, attr)
    gm.delete_all_unused_submodules()


def _ptq(
    exported: nn.Module, batches: list[torch.Tensor], float_layers: tuple[str, ...]
) -> nn.Module:
    import torch
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_pt2e(copy.deepcopy(exported), _quantizer(float_layers))  # type: ignore[arg-type]
        with torch.no_grad():
            for x in batches:
                prepared(x)
        converted = convert_pt2e(prepared)
    _drop_unused_attrs(converted)
    for p in converted.parameters():
        p.requires_grad_(False)
    # Let compress/evaluate call .eval(): exported models refuse it by default.
    allow_exported_model_train_eval(converted)
    return converted


def _qat(
    model: nn.Module,
    task: Task,
    batch: torch.Tensor,
    float_layers: tuple[str, ...],
    epochs: int,
    seed: int,
) -> nn.Module:
    import torch
    from torchao.quantization.pt2e import (
        allow_exported_model_train_eval,
        move_exported_model_to_eval,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e

    exported = _export(model, batch, "pt2e-int8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_qat_pt2e(exported, _quantizer(float_layers, qat=True))  # type: ignore[arg-type]
    allow_exported_model_train_eval(prepared)
    # Fine-tune at a tenth of the task's rate: the weights are already trained, QAT only
    # teaches them to sit well on the int8 grid.
    from wattwise.tasks import TrainConfig

    # The task's own recipe: a prepared PT2E graph is not compiled or autocast in training.
    task.fit(prepared, epochs=epochs, lr=task.lr / 10, seed=seed, config=TrainConfig())
    move_exported_model_to_eval(prepared)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        converted = convert_pt2e(prepared)  # type: ignore[arg-type]
    _drop_unused_attrs(converted)
    for p in converted.parameters():
        p.requires_grad_(False)
    allow_exported_model_train_eval(converted)
    return converted


def quantizable_layers(model: nn.Module) -> list[str]:
    """Names of the Conv/Linear modules X86InductorQuantizer annotates (not attention internals)."""
    from torch import nn

    inside_mha = {
        id(sub)
        for m in model.modules()
        if isinstance(m, nn.MultiheadAttention)
        for sub in m.modules()
    }
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear | nn.modules.conv._ConvNd) and id(m) not in inside_mha
    ]


def _pt2e(model: nn.Module, cfg: Quantize, ctx: PassContext) -> nn.Module:
    task = ctx.task
    model.eval()
    resolve_modules(model, cfg.skip, cls="Quantize", field="skip")
    batches = task.calibration_batches(n_items=cfg.calibration_items)
    exported = _export(model, batches[0], cfg.method)
    for name in cfg.skip:
        ctx.skip(name, "kept float (Quantize.skip)")
    quantized = _ptq(exported, batches, cfg.skip)
    ctx.method = "ptq"
    ctx.note(
        "pt2e-int8 runs eagerly as float ops between quantize/dequantize pairs; its speed-up "
        "comes from torch.compile (inductor, freezing) at deployment"
    )
    if cfg.max_accuracy_drop is None:
        return quantized
    base = ctx.accuracy_before if ctx.accuracy_before is not None else task.evaluate(model)
    acc = task.evaluate(quantized)
    ctx.metrics["ptq_accuracy"] = acc
    if base - acc <= cfg.max_accuracy_drop:
        return quantized
    # 1. Rank layers by the accuracy their quantization alone costs; float them one at a time.
    candidates = [n for n in quantizable_layers(model) if n not in cfg.skip]
    rank_batches = task.calibration_batches(n_items=_RANK_CALIBRATION_ITEMS)
    drops: dict[str, float] = {}
    for name in candidates:
        only = tuple(n for n in candidates if n != name) + cfg.skip
        drops[name] = base - task.evaluate(_ptq(exported, rank_batches, only))
    ranked = sorted(candidates, key=lambda n: drops[n], reverse=True)
    ctx.metrics["layer_drops"] = drops
    floated: tuple[str, ...] = ()
    best, best_acc = quantized, acc
    for name in ranked[: max(1, int(len(ranked) * _MAX_FLOAT_FRACTION))]:
        floated += (name,)
        trial = _ptq(exported, batches, cfg.skip + floated)
        trial_acc = task.evaluate(trial)
        if trial_acc > best_acc:
            best, best_acc = trial, trial_acc
        if base - trial_acc <= cfg.max_accuracy_drop:
            for f in floated:
                ctx.skip(
                    f,
                    f"kept float by the accuracy guard (quantizing it alone costs {drops[f]:.4f})",
                )
            ctx.method = f"ptq+float({len(floated)})"
            return trial
    # 2. Quantization-aware fine-tuning, all layers but the user's skips quantized.
    if cfg.qat_epochs > 0:
        qat = _qat(model, task, batches[0], cfg.skip, cfg.qat_epochs, ctx.seed)
        qat_acc = task.evaluate(qat)
        ctx.metrics["qat_accuracy"] = qat_acc
        if qat_acc >= best_acc or base - qat_acc <= cfg.max_accuracy_drop:
            best, best_acc = qat, qat_acc
            ctx.method = "qat"
    if base - best_acc > cfg.max_accuracy_drop:
        ctx.note(
            f"accuracy guard not met: drop {base - best_acc:.4f} > {cfg.max_accuracy_drop} "
            f"(best of ptq, float fallback and qat kept: {ctx.method})"
        )
    return best


# -- dynamic int8 --------------------------------------------------------------------------------


def _dynamic(model: nn.Module, cfg: Quantize, ctx: PassContext) -> nn.Module:
    import torch
    from torch import nn
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    model.eval()
    skip = resolve_modules(model, cfg.skip, cls="Quantize", field="skip")
    skipped_ids = {id(sub) for m in skip.values() for sub in m.modules()}
    mha_ids: set[int] = set()
    for name, m in model.named_modules():
        if isinstance(m, nn.MultiheadAttention):
            mha_ids.update(id(sub) for sub in m.modules())
            ctx.skip(
                name, "attention kept float: F.multi_head_attention_forward reads its raw weights"
            )
        elif isinstance(m, nn.modules.conv._ConvNd) and id(m) not in skipped_ids:
            ctx.skip(
                name,
                "conv kept float: dynamic int8 covers Linear and recurrent layers (use pt2e-int8)",
            )
    for name in cfg.skip:
        ctx.skip(name, "kept float (Quantize.skip)")

    def is_target(module: nn.Module, fqn: str) -> bool:
        return (
            isinstance(module, nn.Linear)
            and id(module) not in skipped_ids
            and id(module) not in mha_ids
        )

    n_linear = sum(1 for n, m in model.named_modules() if is_target(m, n))
    if n_linear:
        quantize_(model, Int8DynamicActivationInt8WeightConfig(), filter_fn=is_target)
    rnns = {
        n: m
        for n, m in model.named_modules()
        if isinstance(m, nn.GRU | nn.LSTM) and id(m) not in skipped_ids
    }
    for name, m in model.named_modules():
        if isinstance(m, nn.RNNBase) and name not in rnns and id(m) not in skipped_ids:
            ctx.skip(name, f"{type(m).__name__} has no int8 dynamic kernel (GRU and LSTM do)")
    if rnns:
        from torch.ao.quantization import quantize_dynamic

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecated upstream, still the only int8 RNN kernel
            for name, rnn in rnns.items():
                parent_name, _, attr = name.rpartition(".")
                parent = model.get_submodule(parent_name) if parent_name else model
                wrapped = quantize_dynamic(nn.Sequential(rnn), {type(rnn)}, dtype=torch.qint8)
                setattr(parent, attr, wrapped[0])
        ctx.note(
            "recurrent layers quantized with torch.ao.quantization.quantize_dynamic (eager, fbgemm)"
        )
    ctx.metrics["int8_linear_layers"] = n_linear
    ctx.metrics["int8_recurrent_layers"] = len(rnns)
    ctx.method = "dynamic-int8"
    return model


# -- casts -------------------------------------------------------------------------------------


def _cast_model(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    import torch
    from torch import nn

    class CastModel(nn.Module):
        """Runs ``inner`` in ``dtype``: casts float inputs in, float32 outputs out."""

        def __init__(self, inner: nn.Module, dtype: torch.dtype) -> None:
            super().__init__()
            self.inner = inner.to(dtype)
            self.dtype = dtype

        def forward(self, *args: Any) -> Any:
            cast = [
                a.to(self.dtype) if torch.is_tensor(a) and a.is_floating_point() else a
                for a in args
            ]
            out = self.inner(*cast)
            return out.float() if torch.is_tensor(out) and out.is_floating_point() else out

    return CastModel(model, dtype)


def _latency_s(model: nn.Module, x: Any, calls: int = 10) -> float:
    """Median wall time of a forward call: a quick check, not the measurement harness."""
    import statistics

    import torch

    times = []
    with torch.no_grad():
        call(model, x)
        for _ in range(calls):
            t0 = time.perf_counter()
            call(model, x)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _cast(model: nn.Module, cfg: Quantize, ctx: PassContext) -> nn.Module:
    import torch

    dtype = torch.bfloat16 if cfg.method == "bf16" else torch.float16
    model.eval()
    if cfg.skip:
        raise InputError(
            f"Quantize.skip is not supported with {cfg.method}: the whole model is cast"
        )
    device = model_device(model)
    x = to_device(ctx.task.calibration_batches(n_items=32, batch_size=32)[0], device)
    before = _latency_s(model, x)
    cast = _cast_model(model, dtype)
    ratio = _latency_s(cast, x) / before
    ctx.metrics["latency_ratio"] = ratio
    ctx.method = cfg.method
    if device.type == "cpu":
        what = "slower" if ratio > 1.05 else "no faster" if ratio > 0.95 else "faster"
        ctx.note(
            f"{cfg.method} on this CPU is {what} than float32 in eager mode: latency ratio "
            f"{ratio:.2f} (batch 32, quick timing)"
            + (
                "; fp16 has no native CPU kernels here and is emulated"
                if cfg.method == "fp16" and ratio > 1.05
                else ""
            )
        )
    return cast


# -- torchao weight-only and float8 configs ----------------------------------------------------


def _torchao_config(model: nn.Module, cfg: Quantize, ctx: PassContext) -> nn.Module:
    import torch
    from torch import nn

    device = model_device(model)
    if cfg.method in _CUDA_METHODS and device.type != "cuda":
        why = (
            "no CUDA GPU here"
            if not torch.cuda.is_available()
            else f"the model is on {device}, not a CUDA device"
        )
        raise UnavailableError(
            f"Quantize({cfg.method}) needs a CUDA GPU (torchao's kernels for it are CUDA-only): {why}"
        )
    if cfg.method == "float8":
        cap = torch.cuda.get_device_capability(device)
        if cap < (8, 9):
            raise UnavailableError(
                f"Quantize(float8) needs compute capability 8.9+ (Ada/Hopper); "
                f"{torch.cuda.get_device_name(device)} is {cap[0]}.{cap[1]}"
            )
    import torchao.quantization as tq

    config: Any
    if cfg.method == "int8-weight-only":
        config = tq.Int8WeightOnlyConfig()
    elif cfg.method == "int4-weight-only":
        config = tq.Int4WeightOnlyConfig()
    else:
        config = tq.Float8DynamicActivationFloat8WeightConfig()
    skip = resolve_modules(model, cfg.skip, cls="Quantize", field="skip")
    skipped_ids = {id(sub) for m in skip.values() for sub in m.modules()}
    if cfg.method == "int4-weight-only":
        model.to(torch.bfloat16)  # torchao's int4 kernels take bf16 activations

    def is_target(module: nn.Module, fqn: str) -> bool:
        if not isinstance(module, nn.Linear) or id(module) in skipped_ids:
            return False
        # int4 packs groups of 128 input features; float8 needs dims divisible by 16.
        k, n = module.in_features, module.out_features
        if cfg.method == "int4-weight-only" and k % 128:
            ctx.skip(fqn, f"in_features {k} is not a multiple of 128 (int4 group size)")
            return False
        if cfg.method == "float8" and (k % 16 or n % 16):
            ctx.skip(fqn, f"shape {n}x{k} is not a multiple of 16 (float8 GEMM)")
            return False
        return True

    try:
        tq.quantize_(model, config, filter_fn=is_target)
    except ImportError as exc:
        # torchao ≥ 0.15 moved its int4 GEMMs to a separate kernel package (mslk/fbgemm-gpu-genai).
        raise UnavailableError(
            f"Quantize({cfg.method}) needs a kernel package torchao could not import: {exc}"
        ) from None
    ctx.method = cfg.method
    if cfg.method == "int4-weight-only":
        return _cast_model(model, torch.bfloat16)
    return model


_METHOD_HANDLERS = {
    "pt2e-int8": _pt2e,
    "dynamic-int8": _dynamic,
    "bf16": _cast,
    "fp16": _cast,
    "int8-weight-only": _torchao_config,
    "int4-weight-only": _torchao_config,
    "float8": _torchao_config,
}


# The methods that need no data: they rewrite Linear weights alone.
DATA_FREE_METHODS = ("dynamic-int8", "int8-weight-only", "int4-weight-only", "float8")


def quantize_weights(model: nn.Module, method: str) -> tuple[nn.Module, list[str]]:
    """Quantize ``model``'s Linear layers in place with a method that needs no data
    (:data:`DATA_FREE_METHODS`), outside a recipe: what a generative deployment applies, since
    it must keep the model object (and its KV cache protocol) whole.

    Returns:
        The model (the same object) and what the method said: layers left alone, and notes.

    Raises:
        InputError: a method that needs data (``pt2e-int8``) or a cast.
        UnavailableError: the method cannot run here (int4 and float8 need CUDA).
    """
    from typing import cast

    if method not in DATA_FREE_METHODS:
        raise InputError(
            f"quantize_weights takes one of {', '.join(DATA_FREE_METHODS)}, got {method!r}"
        )
    # These handlers read no task: they calibrate nothing.
    ctx = PassContext(task=cast("Task", None), seed=0)
    out = _METHOD_HANDLERS[method](model, Quantize(method=method), ctx)
    # int4 hands back the model wrapped to cast float inputs to bf16; token ids need no cast,
    # and the wrapper would hide the model's own methods (its cache).
    if getattr(out, "inner", None) is model:
        out = model
    return out, [*ctx.skipped, *ctx.notes]


@register_handler(Quantize)
def _quantize(model: nn.Module, cfg: Quantize, ctx: PassContext) -> nn.Module:
    return _METHOD_HANDLERS[cfg.method](model, cfg, ctx)
