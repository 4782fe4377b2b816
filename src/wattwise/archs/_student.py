"""Pick a distillation student: the most capable family member whose energy fits a budget.

:func:`student_for` ranks every (family, width) candidate by its MACs on the teacher's input,
scales the teacher's measured J/item by the MACs ratio to shortlist those likely to fit (an
estimate, labelled so), then **measures** the shortlist for real with the harness and returns
the candidate with the most MACs (the most capacity to learn from the teacher) whose measured
J/item fits the budget.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

from wattwise.errors import InputError

# The efficient families only. ResNets are registered too, but the ranking below takes MACs
# as capacity, which holds within families designed for accuracy per MAC and not across
# them: a thinned ResNet-18 spends its MACs on dense 3×3 convs (width 0.35 at 224: 265M MACs, 1.5M
# parameters, against MobileNetV2's 301M and 3.5M), so it would often be picked "most
# capable" over a better student. They serve as teachers and baselines; pass
# ``families=("resnet18",)`` to weigh one anyway.
DEFAULT_FAMILIES = ("mobilenetv3_small", "mobilenetv3_large", "mobilenetv2", "efficientnet_lite0")
DEFAULT_WIDTHS = (0.35, 0.5, 0.75, 1.0)


@dataclasses.dataclass(frozen=True)
class StudentCandidate:
    """One (family, width) considered, with its MACs and J/item.

    ``energy_source`` is the meter's label when measured, or ``estimated:macs-scaled`` (the
    teacher's measured J/item × the MACs ratio) for candidates that were only ranked.
    """

    arch: str
    width: float
    macs_per_item: float
    params: int
    energy_j_per_item: float
    energy_source: str
    measured: bool
    fits: bool


@dataclasses.dataclass(frozen=True)
class StudentChoice:
    """What :func:`student_for` chose, and every candidate it weighed."""

    arch: str
    width: float
    kwargs: dict[str, Any]
    energy_j_per_item: float
    energy_source: str
    teacher_energy_j_per_item: float
    teacher_macs_per_item: float
    candidates: tuple[StudentCandidate, ...]

    def create(self) -> Any:
        """A fresh (untrained) student, ready for :class:`wattwise.Distill`."""
        from wattwise.archs._registry import create

        return create(self.arch, width=self.width, **self.kwargs)


def student_for(
    teacher: Any,
    example_input: Any,
    *,
    energy_budget_j_per_item: float | None = None,
    budget_ratio: float | None = None,
    families: Sequence[str] = DEFAULT_FAMILIES,
    widths: Sequence[float] = DEFAULT_WIDTHS,
    batch_size: int = 32,
    device: str = "cpu",
    shortlist: int = 4,
    max_time_s: float = 5.0,
) -> StudentChoice:
    """Choose and size an efficient student for ``teacher`` under an energy budget.

    Args:
        teacher: the model to distil from (its output size sets ``num_classes``; its input's
            channel count sets ``in_chans``).
        example_input: one input of batch 1, as the teacher takes it.
        energy_budget_j_per_item: the student's J/item must not exceed this (measured with the
            same meter and batch size as the teacher).
        budget_ratio: alternatively, a fraction of the teacher's measured J/item (0.25 = 4x
            less energy). Exactly one of the two must be given.
        families, widths: the candidates (registered architecture names × width multipliers).
        batch_size, device, max_time_s: how the teacher and the shortlist are measured.
        shortlist: at most this many likely fits are measured, most capable first; the first
            whose measured J/item fits is chosen.

    Returns:
        A :class:`StudentChoice`; ``create()`` builds the student.

    Raises:
        InputError: bad budget, unknown family, or no candidate fits the budget (the message
            gives the cheapest candidate's measured J/item).

    Example:
        >>> choice = student_for(teacher, x, budget_ratio=0.25)
        >>> student = choice.create()
    """
    import torch

    from wattwise.archs._registry import create, list_archs
    from wattwise.measure import measure
    from wattwise.measure._macs import count_macs

    if (energy_budget_j_per_item is None) == (budget_ratio is None):
        raise InputError("give exactly one of energy_budget_j_per_item and budget_ratio")
    if budget_ratio is not None and not 0 < budget_ratio <= 1:
        raise InputError(f"budget_ratio must be in (0, 1], got {budget_ratio!r}")
    if energy_budget_j_per_item is not None and not energy_budget_j_per_item > 0:
        raise InputError(f"energy_budget_j_per_item must be > 0, got {energy_budget_j_per_item!r}")
    unknown = [f for f in families if f not in list_archs()]
    if unknown:
        raise InputError(
            f"unknown architecture(s) {', '.join(unknown)}; choose from {', '.join(list_archs())}"
        )
    if shortlist < 1:
        raise InputError(f"shortlist must be >= 1, got {shortlist!r}")
    if not isinstance(example_input, torch.Tensor) or example_input.dim() != 4:
        raise InputError("student_for needs an image input of shape (1, C, H, W)")

    teacher = teacher.eval()
    with torch.no_grad():
        num_classes = int(teacher(example_input).shape[-1])
    kwargs: dict[str, Any] = {"num_classes": num_classes, "in_chans": int(example_input.shape[1])}
    run = functools.partial(
        measure, batch_size=batch_size, device=device, max_time_s=max_time_s, isolate=True
    )
    teacher_m = run(teacher, example_input)
    budget = (
        energy_budget_j_per_item
        if energy_budget_j_per_item is not None
        else teacher_m.energy_j_per_item * float(budget_ratio)  # type: ignore[arg-type]
    )
    teacher_macs = count_macs(teacher, example_input)
    if teacher_macs <= 0:
        raise InputError("cannot count the teacher's MACs, so candidates cannot be ranked")

    ranked: list[tuple[str, float, float, int]] = []
    for arch in families:
        for width in widths:
            model = create(arch, width=width, **kwargs)
            ranked.append((arch, width, count_macs(model, example_input), _params(model)))
    ranked.sort(key=lambda r: r[2], reverse=True)  # most capable first

    per_mac = teacher_m.energy_j_per_item / teacher_macs
    likely = [r for r in ranked if r[2] * per_mac <= budget]
    # Measure the likely fits from the most capable down, stopping at the first real fit; if
    # none fits, measure the cheapest overall too, so the error can say what it costs.
    measured: dict[tuple[str, float], float] = {}
    for arch, width, _, _ in likely[:shortlist]:
        factory = functools.partial(create, arch, width=width, **kwargs)
        measured[arch, width] = run(factory, example_input).energy_j_per_item
        if measured[arch, width] <= budget:
            break
    else:
        arch, width = ranked[-1][:2]
        if (arch, width) not in measured:
            factory = functools.partial(create, arch, width=width, **kwargs)
            measured[arch, width] = run(factory, example_input).energy_j_per_item

    candidates = tuple(
        StudentCandidate(
            arch=arch,
            width=width,
            macs_per_item=macs,
            params=params,
            energy_j_per_item=measured.get((arch, width), macs * per_mac),
            energy_source=teacher_m.energy_source
            if (arch, width) in measured
            else "estimated:macs-scaled",
            measured=(arch, width) in measured,
            fits=measured.get((arch, width), macs * per_mac) <= budget,
        )
        for arch, width, macs, params in ranked
    )
    fitting = [c for c in candidates if c.measured and c.fits]
    if not fitting:
        cheapest = min((c for c in candidates if c.measured), key=lambda c: c.energy_j_per_item)
        raise InputError(
            f"no student fits {budget:.3g} J/item: the cheapest measured, {cheapest.arch} width "
            f"{cheapest.width}, takes {cheapest.energy_j_per_item:.3g} J/item ({cheapest.energy_source})"
        )
    best = max(fitting, key=lambda c: c.macs_per_item)  # the first measured fit
    return StudentChoice(
        arch=best.arch,
        width=best.width,
        kwargs=kwargs,
        energy_j_per_item=best.energy_j_per_item,
        energy_source=best.energy_source,
        teacher_energy_j_per_item=teacher_m.energy_j_per_item,
        teacher_macs_per_item=teacher_macs,
        candidates=candidates,
    )


def _params(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())
