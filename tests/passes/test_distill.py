"""Distill: teachers, students from the archs registry or the task, features, precision."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from wattwise.errors import InputError
from wattwise.passes import Distill, Prune, compress
from wattwise.tasks import Task


def test_student_from_the_archs_registry(
    task: Task, trained_zoo: Callable[[str], nn.Module]
) -> None:
    kwargs = {"width": 0.25, "num_classes": 10, "in_chans": 1}
    student, log = compress(
        trained_zoo("mlp"),
        [Distill(student="mobilenetv2", student_kwargs=kwargs, epochs=1)],
        task=task,
    )
    rec = log.records[0]
    assert type(student).__name__ == "MobileNetV2"
    assert rec.metrics["teacher"] == "input"
    assert rec.metrics["teacher_accuracy"] == pytest.approx(log.initial.accuracy)
    assert rec.energy_j is not None and rec.energy_j > 0
    with torch.no_grad():
        assert student(task.example_input).shape == (1, 10)


def test_feature_distillation_after_pruning_recovers_accuracy(
    task: Task, trained_zoo: Callable[[str], nn.Module]
) -> None:
    recipe = [
        Prune(ratio=0.5, finetune_epochs=0),
        Distill(epochs=3, feature_layers=("layer3=layer3",), precision="bf16"),
    ]
    _, log = compress(trained_zoo("resnet"), recipe, task=task)
    pruned, distilled = log.records
    assert distilled.method == "bf16-autocast/teacher=original"
    assert distilled.accuracy_after > pruned.accuracy_after
    assert distilled.accuracy_after >= log.initial.accuracy - 0.05


def test_teacher_given_in_python(task: Task, trained_zoo: Callable[[str], nn.Module]) -> None:
    teacher = trained_zoo("resnet")
    student, log = compress(
        trained_zoo("mlp"), [Distill(teacher=teacher, epochs=1, precision="fp32")], task=task
    )
    assert log.records[0].metrics["teacher"] == "module"
    assert log.records[0].config["teacher"] == "<TinyResNet given in Python>"
    assert isinstance(student, type(trained_zoo("mlp")))


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (Distill(student="nonet"), "Distill.student"),
        (Distill(student="task", student_kwargs={"depth": 3}), "Distill.student_kwargs"),
        (Distill(feature_layers=("net.9",)), "Distill.feature_layers"),
    ],
)
def test_bad_students_and_layers(
    config: Distill, field: str, task: Task, trained_zoo: Callable[[str], nn.Module]
) -> None:
    with pytest.raises(InputError, match=field.replace(".", r"\.")):
        compress(trained_zoo("mlp"), [config], task=task)


def test_auto_precision_keeps_small_steps_in_fp32(
    task: Task, trained_zoo: Callable[[str], nn.Module]
) -> None:
    # A TinyMLP step is ~1 M MACs: autocast's casts would cost more than bf16 saves.
    _, log = compress(trained_zoo("mlp"), [Distill(epochs=1)], task=task)
    rec = log.records[0]
    assert rec.method == "fp32/teacher=original"
    assert rec.metrics["bf16_step_speedup"] > 0


def test_soft_targets_of_a_language_model_are_averaged_per_position() -> None:
    # [B, T, V] logits hold B*T predictions: the soft term is their mean KL, the same as the
    # same predictions laid out as a classifier's [B*T, V], not B*T/B times it.
    from wattwise.passes.distill import soft_target_loss

    gen = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 2, 8, 16, generator=gen)
    per_position = torch.nn.functional.kl_div(
        torch.log_softmax(student / 2.0, -1),
        torch.log_softmax(teacher / 2.0, -1),
        log_target=True,
        reduction="none",
    ).sum(-1)
    lm = soft_target_loss(student, teacher, 2.0)
    flat = soft_target_loss(student.reshape(-1, 16), teacher.reshape(-1, 16), 2.0)
    assert torch.allclose(lm, per_position.mean())
    assert torch.allclose(lm, flat)
    assert float(soft_target_loss(teacher, teacher, 2.0)) == pytest.approx(0.0, abs=1e-6)


def test_a_tuned_configuration_stops_fine_tunes_once_recovered(
    task: Task, trained_zoo: Callable[[str], nn.Module]
) -> None:
    """With a training configuration on the task (``optimize --training``), distillation and
    pruning's fine-tunes stop after the epoch that brings the model back to the accuracy it
    started from; under the recipe they run their whole length."""
    import dataclasses

    from wattwise.tasks import TrainConfig

    recipe = [Distill(epochs=6, precision="fp32"), Prune(ratio=0.3, finetune_epochs=4)]
    tuned = dataclasses.replace(task, train_config=TrainConfig(batch_size=32))
    _, log = compress(trained_zoo("mlp"), recipe, task=tuned)
    distilled, pruned = log.records
    assert 1 <= distilled.metrics["finetune_epochs_run"][0] <= 6
    assert len(pruned.metrics["finetune_epochs_run"]) == 1
    for rec in (distilled, pruned):
        ran = rec.metrics["finetune_epochs_run"][-1]
        stopped = [n for n in rec.notes if n.startswith("fine-tune stopped")]
        # Stopped early only with the model back where it started.
        if stopped:
            assert f"epoch {ran}:" in stopped[0]
            assert rec.accuracy_after >= rec.accuracy_before
    _, plain = compress(trained_zoo("mlp"), recipe, task=task)
    assert all("finetune_epochs_run" not in r.metrics for r in plain.records)
