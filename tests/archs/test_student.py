"""student_for: a real teacher, real measurements, a student that fits the budget."""

from __future__ import annotations

import pytest
import torch

from wattwise.archs import create, student_for
from wattwise.errors import InputError

X = torch.randn(1, 3, 64, 64)


@pytest.fixture(autouse=True)
def _private_lock(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATTWISE_LOCK_DIR", str(tmp_path))


@pytest.mark.slow
def test_student_fits_the_budget_and_is_the_most_capable_fit() -> None:
    # Energy is far from proportional to MACs at this size (per-layer overheads), so the
    # teacher is much bigger than the candidates and the budget is not tight.
    teacher = create("efficientnet_lite0", width=1.0, num_classes=10)
    choice = student_for(
        teacher,
        X,
        budget_ratio=0.8,
        families=("mobilenetv3_small", "mobilenetv2"),
        widths=(0.35, 1.0),
        batch_size=16,
        max_time_s=1.0,
        shortlist=3,
    )
    assert choice.energy_j_per_item <= 0.8 * choice.teacher_energy_j_per_item
    assert choice.energy_source.startswith(("measured:", "estimated:cpu"))
    measured_fits = [c for c in choice.candidates if c.measured and c.fits]
    assert max(c.macs_per_item for c in measured_fits) == next(
        c.macs_per_item
        for c in choice.candidates
        if (c.arch, c.width) == (choice.arch, choice.width)
    )
    # Unmeasured candidates say their figure is an estimate.
    assert all(
        c.energy_source == "estimated:macs-scaled" for c in choice.candidates if not c.measured
    )
    student = choice.create()
    assert student(X).shape == (1, 10)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({}, "exactly one"),
        ({"budget_ratio": 0.5, "energy_budget_j_per_item": 1.0}, "exactly one"),
        ({"budget_ratio": 1.5}, "budget_ratio"),
        ({"budget_ratio": 0.5, "families": ("resnet9000",)}, "resnet9000"),
    ],
)
def test_bad_arguments(kwargs: dict, fragment: str) -> None:
    with pytest.raises(InputError, match=fragment):
        student_for(create("mobilenetv3_small", num_classes=10), X, **kwargs)


@pytest.mark.slow
def test_an_impossible_budget_says_what_the_cheapest_costs() -> None:
    with pytest.raises(InputError, match="no student fits"):
        student_for(
            create("mobilenetv3_small", width=0.35, num_classes=10),
            X,
            energy_budget_j_per_item=1e-12,
            families=("mobilenetv3_small",),
            widths=(0.35,),
            batch_size=4,
            max_time_s=0.5,
        )
