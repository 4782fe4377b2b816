"""compress(): copies, logs, recipes (YAML round trip, same seed → same model), bad input."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from passes.helpers import state_equal
from passes.zoo import Untraceable
from wattwise.errors import InputError
from wattwise.passes import (
    PASSES,
    Distill,
    Prune,
    Quantize,
    Sparsify,
    compress,
    dump_recipe,
    load_recipe,
    parse_recipe,
    save_recipe,
)
from wattwise.tasks import Task

RECIPE = [
    Prune(
        ratio=0.4,
        scope="uniform",
        importance="taylor",
        steps=2,
        finetune_epochs=1,
        protect=("net.1",),
    ),
    Sparsify(ratio=0.2, pattern="unstructured", scope="layer", measure=False),
    Distill(temperature=3.0, alpha=0.5, epochs=1, feature_layers=("net.3",), precision="fp32"),
    Quantize("pt2e-int8", calibration_items=64, max_accuracy_drop=0.05, skip=("net.5",)),
]


def test_registry_lists_the_passes() -> None:
    assert PASSES.names() == ["attention", "distill", "prune", "quantize", "sparsify"]


def test_compress_logs_every_pass_and_leaves_the_caller_alone(
    task: Task, trained_zoo: Callable[[str], nn.Module]
) -> None:
    model = trained_zoo("mlp").train()  # a training flag compress must not flip either
    before = {k: v.clone() for k, v in model.state_dict().items()}

    small, log = compress(model, RECIPE, task=task, seed=3)

    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [r.name for r in log.records] == ["prune", "sparsify", "distill", "quantize"]
    assert log.seed == 3 and log.task == "digits"
    for prev, rec in zip([None, *log.records], log.records, strict=False):
        assert rec.accuracy_before == (
            log.initial.accuracy if prev is None else prev.accuracy_after
        )
        assert rec.energy_j is not None and rec.energy_j > 0
        assert rec.energy_source.startswith(("measured:", "estimated:"))
        assert 0 < rec.energy_uncertainty < 1
        assert rec.time_s > 0 and rec.size_bytes > 0
        assert rec.config["type"] == rec.name
    prune = log.records[0]
    assert prune.macs < log.initial.macs and prune.params < log.initial.params
    assert any(s.startswith("net.1:") and "protected" in s for s in prune.skipped)
    assert log.final.accuracy >= log.initial.accuracy - 0.05
    assert log.energy_j == pytest.approx(sum(r.energy_j or 0 for r in log.records))
    # The whole log is plain data.
    text = json.dumps(log.to_dict())
    assert '"passes"' in text and "prune" in log.summary()
    with torch.no_grad():
        assert small(task.example_input).shape == (1, 10)


def test_recipe_round_trips_through_yaml_exactly(tmp_path: Path) -> None:
    path = save_recipe(tmp_path / "recipe.yaml", RECIPE)
    again = load_recipe(path)
    assert again == RECIPE
    assert [type(p) for p in again] == [type(p) for p in RECIPE]
    assert dump_recipe(again) == path.read_text()
    # Floats survive exactly; tuples come back as tuples, not lists.
    prune, _, distill = again[:3]
    assert isinstance(prune, Prune) and isinstance(distill, Distill)
    assert prune.protect == ("net.1",) and isinstance(distill.feature_layers, tuple)
    assert parse_recipe("- {type: prune, ratio: 0.5}") == [Prune(ratio=0.5)]


@pytest.mark.slow
def test_same_recipe_same_seed_same_model(
    tmp_path: Path, task: Task, trained_zoo: Callable[[str], nn.Module]
) -> None:
    model = trained_zoo("resnet")
    recipe = [Prune(ratio=0.5, finetune_epochs=1), Quantize("pt2e-int8", calibration_items=64)]
    save_recipe(tmp_path / "r.yaml", recipe)
    first, _ = compress(model, recipe, task=task, seed=7)
    second, _ = compress(model, tmp_path / "r.yaml", task=task, seed=7)
    assert state_equal(first, second)


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("passes:\n- type: squash\n", ["pass 0", "unknown pass 'squash'", "prune"]),
        ("passes:\n- type: prune\n  ratio: 1.2\n", ["pass 0 (prune)", "Prune.ratio", "1.2"]),
        ("passes:\n- type: prune\n  ratio: [1\n", ["malformed YAML", "line"]),
        ("passes:\n- type: prune\n  colour: red\n", ["unknown field(s) colour"]),
        ("passes:\n- type: prune\n  version: 9\n", ["version 9"]),
        ("- {type: quantize, method: int3}\n", ["Quantize.method", "int3"]),
        ("- {type: distill, alpha: 2}\n", ["Distill.alpha"]),
        ("passes: 3\n", ["expected a list of passes"]),
        ("- ratio: 0.5\n", ["no 'type' field"]),
    ],
)
def test_bad_recipes_fail_with_one_line_naming_the_problem(
    tmp_path: Path, text: str, names: list[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        load_recipe(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    for name in names:
        assert name in message


def test_missing_recipe_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read recipe"):
        load_recipe(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: Prune(ratio=1.2), "Prune.ratio"),
        (lambda: Prune(ratio=-0.1), "Prune.ratio"),
        (lambda: Prune(scope="some"), "Prune.scope"),
        (lambda: Prune(importance="l7"), "Prune.importance"),
        (lambda: Prune(steps=0), "Prune.steps"),
        (lambda: Prune(ratio=0.95), "Prune.max_layer_ratio"),
        (lambda: Prune(protect=[3]), "Prune.protect"),  # type: ignore[arg-type]
        (lambda: Sparsify(pattern="1:8"), "Sparsify.pattern"),
        (lambda: Quantize("int3"), "Quantize.method"),
        (lambda: Quantize(max_accuracy_drop=2.0), "Quantize.max_accuracy_drop"),
        (lambda: Distill(temperature=0), "Distill.temperature"),
        (lambda: Distill(teacher="mine"), "Distill.teacher"),
        (lambda: Distill(feature_layers=("a=b=c",)), "Distill.feature_layers"),
        (lambda: Distill(student_kwargs={"width": 0.5}), "Distill.student_kwargs"),
    ],
)
def test_bad_fields_name_themselves(make: Callable[[], object], field: str) -> None:
    with pytest.raises(InputError, match=field.replace(".", r"\.")) as info:
        make()
    assert "\n" not in str(info.value)


def test_protecting_a_layer_that_does_not_exist(
    task: Task, trained_zoo: Callable[[str], nn.Module]
) -> None:
    model = trained_zoo("mlp")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(
        InputError, match=r"Prune\.protect: TinyMLP has no module named 'net\.9'"
    ) as info:
        compress(model, [Prune(protect=("net.9",))], task=task)
    assert "\n" not in str(info.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_untraceable_model_is_refused_and_untouched(task: Task) -> None:
    model = Untraceable()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(InputError, match="cannot trace Untraceable") as info:
        compress(model, [Prune(ratio=0.5)], task=task)
    assert "head_neg" in str(info.value) or "head_pos" in str(info.value)
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match=r"torch\.export cannot capture Untraceable"):
        compress(model, [Quantize("pt2e-int8")], task=task)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_compress_input_checks(task: Task, trained_zoo: Callable[[str], nn.Module]) -> None:
    model = trained_zoo("mlp")
    with pytest.raises(InputError, match=r"must be a torch\.nn\.Module"):
        compress("model", [Prune()], task=task)  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"pass 1 is a str"):
        compress(model, [Prune(), "quantize"], task=task)  # type: ignore[list-item]
    with pytest.raises(InputError, match=r"compress, pass 0.*unknown pass 'shrink'"):
        compress(model, [{"type": "shrink"}], task=task)
    with pytest.raises(InputError, match="seed"):
        compress(model, [Prune()], task=task, seed=-1)
    _out, log = compress(model, [{"type": "quantize", "method": "bf16"}], task=task)
    assert log.records[0].name == "quantize"


def test_a_teacher_model_cannot_go_into_a_recipe(
    tmp_path: Path, trained_zoo: Callable[[str], nn.Module]
) -> None:
    teacher = trained_zoo("mlp")
    with pytest.raises(InputError, match=r"Distill\.teacher is a model"):
        save_recipe(tmp_path / "r.yaml", [Distill(teacher=teacher)])
    assert Distill(teacher=teacher).describe()["teacher"] == "<TinyMLP given in Python>"
