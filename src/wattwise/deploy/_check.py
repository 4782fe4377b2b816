"""The check that a prepared deployment still computes what the eager fp32 model computes:
the batches it runs on (:func:`check_batches`), the comparison (:func:`compare_outputs`) and
its verdict (:class:`CheckResult`, :class:`DeploymentMismatch`).

The check's tolerances, per precision, and why:

* ``fp32``: every output element within ``atol=1e-4, rtol=1e-3`` of eager fp32. Fused kernels,
  ONNX Runtime and oneDNN reorder floating-point sums; more than that means a real bug.
* ``bf16`` / ``fp16``: relative L2 error ``‖y - y_ref‖ / ‖y_ref‖ ≤ 2e-2``. An elementwise bound
  fails on the small logits that low precision rounds coarsely; a norm bound asks "is the output
  the same vector", which is what a downstream argmax or loss sees. bf16 keeps 8 bits of
  mantissa (≈0.4% per rounding); a few layers of accumulation stay well under 2%.
* ``int8``, ``int8-bf16`` and ``int8-dynamic``: mean per-item cosine similarity ``≥ 0.98`` between outputs, over the example batch and
  up to 128 items of the calibration batches. Top-1 agreement of the argmax (also reported) is
  not the gate because it only means something for a trained classifier: on random weights the
  logits nearly tie and int8 rounding flips argmaxes while the outputs are the same vector; the
  accuracy a quantized model keeps is judged by the task metric, not here. Cosine 0.98 allows
  ~20% relative error per item (1 - cos ≈ err²/2): loose enough for honest int8, tight enough to
  catch a wrong scale, a missing bias or swapped channels (which give cosines near 0).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from wattwise._core import check_choice
from wattwise._inputs import take_rows
from wattwise.deploy._base import CALIBRATED_INT8, Batch
from wattwise.deploy._deployment import PRECISIONS
from wattwise.errors import WorkloadError

if TYPE_CHECKING:
    import torch

__all__ = ["CheckResult", "DeploymentMismatch", "check_batches", "compare_outputs"]

FP32_ATOL = 1e-4
FP32_RTOL = 1e-3
LOW_PRECISION_MAX_REL_L2 = 2e-2
INT8_MIN_COSINE = 0.98
CHECK_MAX_CALIBRATION_ITEMS = 128  # enough items to see a broken int8 graph, few enough to be quick


class DeploymentMismatch(WorkloadError):
    """A prepared deployment's outputs differ from eager fp32 beyond the precision's tolerance.

    Attributes:
        result: the :class:`CheckResult` with the numbers.
    """

    def __init__(self, message: str, result: CheckResult | None = None) -> None:
        super().__init__(message)
        self.result = result


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """How close a deployment's outputs are to eager fp32.

    Attributes:
        precision: the deployment's precision, which picked the metric.
        metric: ``allclose`` (value = worst element's |Δ| over its allowance, passes ≤ 1),
            ``rel_l2`` (passes ≤ threshold) or ``cosine`` (mean per item, passes ≥ threshold).
        value, threshold, passed: the figure, its bound, and the verdict.
        items: how many input items were compared.
        max_abs_diff: the largest elementwise difference, for the record.
        top1_agreement: fraction of items whose argmax over the last dimension agrees
            (reported for 2-D outputs with ≥ 2 columns; not a gate, see the module docstring).
    """

    precision: str
    metric: str
    value: float
    threshold: float
    passed: bool
    items: int
    max_abs_diff: float
    top1_agreement: float | None = None

    def describe(self) -> str:
        top1 = (
            f", top-1 agreement {self.top1_agreement:.3f}"
            if self.top1_agreement is not None
            else ""
        )
        if self.metric == "allclose":
            what = (
                f"worst element at {self.value:.3g}× its allowance (atol {FP32_ATOL:g}, rtol {FP32_RTOL:g}), "
                f"max |Δ| {self.max_abs_diff:.3g}"
            )
        elif self.metric == "rel_l2":
            what = f"relative L2 error {self.value:.3g} (bound {self.threshold:g})"
        else:
            what = f"mean cosine similarity {self.value:.4f} (bound {self.threshold:g})"
        return f"{what} over {self.items} items{top1}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _flat_outputs(value: Any) -> list[torch.Tensor]:
    import torch

    if isinstance(value, torch.Tensor):
        return [value.detach().float().cpu()]
    if isinstance(value, tuple | list):
        return [t for v in value for t in _flat_outputs(v)]
    if isinstance(value, dict):
        return [t for k in sorted(value) for t in _flat_outputs(value[k])]
    return []


def compare_outputs(
    reference: Sequence[Any], outputs: Sequence[Any], precision: str
) -> CheckResult:
    """Compare per-batch outputs of a deployment with eager fp32 ones.

    Args:
        reference: eager fp32 outputs, one per input batch (tensor, tuple or dict of tensors).
        outputs: the deployment's outputs for the same batches.
        precision: selects the metric and bound (see the module docstring).

    Raises:
        DeploymentMismatch: output structure or shapes differ, or outputs are not finite.
    """
    import torch

    if len(reference) != len(outputs):
        raise DeploymentMismatch(
            f"{len(outputs)} output batches for {len(reference)} input batches"
        )
    refs = [t for r in reference for t in _flat_outputs(r)]
    gots = [t for o in outputs for t in _flat_outputs(o)]
    if not refs or len(refs) != len(gots):
        raise DeploymentMismatch(
            f"the deployment returned {len(gots)} output tensor(s) where eager fp32 returned {len(refs)}"
        )
    for r, g in zip(refs, gots, strict=True):
        if r.shape != g.shape:
            raise DeploymentMismatch(
                f"output shape {tuple(g.shape)} differs from eager fp32's {tuple(r.shape)}"
            )
        if not torch.isfinite(g).all():
            raise DeploymentMismatch("the deployment's outputs contain NaN or inf")
    # Items are counted on each batch's first output tensor (its leading dimension).
    firsts = [
        (_flat_outputs(r)[0], _flat_outputs(o)[0]) for r, o in zip(reference, outputs, strict=True)
    ]
    items = sum(int(r.shape[0]) if r.dim() else 1 for r, _ in firsts)
    max_abs = max(
        float((g - r).abs().max()) if r.numel() else 0.0 for r, g in zip(refs, gots, strict=True)
    )

    top1: float | None = None
    if all(r.dim() == 2 and r.shape[1] >= 2 for r, _ in firsts):
        agree = sum(int((r.argmax(1) == g.argmax(1)).sum()) for r, g in firsts)
        top1 = agree / max(1, sum(int(r.shape[0]) for r, _ in firsts))

    if precision == "fp32":
        ratio = max(
            float(((g - r).abs() / (FP32_ATOL + FP32_RTOL * r.abs())).max()) if r.numel() else 0.0
            for r, g in zip(refs, gots, strict=True)
        )
        return CheckResult(precision, "allclose", ratio, 1.0, ratio <= 1.0, items, max_abs, top1)
    if precision in ("bf16", "fp16"):
        num = math.sqrt(sum(float((g - r).pow(2).sum()) for r, g in zip(refs, gots, strict=True)))
        den = math.sqrt(sum(float(r.pow(2).sum()) for r in refs))
        rel = num / den if den > 0 else num
        return CheckResult(
            precision,
            "rel_l2",
            rel,
            LOW_PRECISION_MAX_REL_L2,
            rel <= LOW_PRECISION_MAX_REL_L2,
            items,
            max_abs,
            top1,
        )
    if precision in (*CALIBRATED_INT8, "int8-dynamic"):
        cosines: list[torch.Tensor] = []
        for r, g in zip(refs, gots, strict=True):
            rr = r.reshape(r.shape[0], -1) if r.dim() else r.reshape(1, 1)
            gg = g.reshape(rr.shape)
            # eps keeps an all-zero row (e.g. a dead ReLU map) from dividing by zero.
            cosines.append(torch.nn.functional.cosine_similarity(rr, gg, dim=1, eps=1e-12))
        cos = float(torch.cat(cosines).mean())
        return CheckResult(
            precision, "cosine", cos, INT8_MIN_COSINE, cos >= INT8_MIN_COSINE, items, max_abs, top1
        )
    check_choice(precision, PRECISIONS, what="precision")
    raise AssertionError(f"no metric for precision {precision!r}")


def check_batches(example: Batch, calibration: list[Batch], batch_size: int) -> list[Batch]:
    """The batches a deployment is checked on, all of ``batch_size`` rows (static shapes):
    the example input, then up to :data:`CHECK_MAX_CALIBRATION_ITEMS` calibration items.

    Calibration batches are joined only while their shapes past the batch dimension agree:
    text batches are padded to their own longest item, so their sequence lengths differ
    (joining them all failed with "Sizes of tensors must match"). Image batches all agree, so
    they are pooled as one.
    """
    import torch

    batches = [take_rows(example, batch_size)]
    groups: list[list[Batch]] = []
    for batch in calibration:
        if groups and all(
            t.shape[1:] == u.shape[1:] for t, u in zip(batch, groups[-1][0], strict=True)
        ):
            groups[-1].append(batch)
        else:
            groups.append([batch])
    budget = max(CHECK_MAX_CALIBRATION_ITEMS, batch_size)
    for group in groups:
        if budget < batch_size:
            break
        pool = tuple(torch.cat(parts) for parts in zip(*group, strict=True))
        total = min(pool[0].shape[0], budget)
        if total >= batch_size:
            for start in range(0, total - batch_size + 1, batch_size):
                batches.append(tuple(t[start : start + batch_size] for t in pool))
                budget -= batch_size
        else:
            batches.append(take_rows(pool, batch_size))
            budget -= batch_size
    return batches
