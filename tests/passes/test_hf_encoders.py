"""Hugging Face encoders as a user brings them, through the passes: pruning takes whole
attention heads and FFN units, and a pooler the classifier never reads does not block its
trace; ``Attention`` moves a model built with eager attention onto SDPA.

The models are built from small configs (no download), with a classifier a user would write on
top: mean of the token states, then a Linear. ``BertModel`` keeps its pooler, which runs on
every call but feeds nothing the classifier returns.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset
from transformers import BertConfig, BertModel, DistilBertConfig, DistilBertModel

import wattwise as ww
from passes.helpers import part
from wattwise.passes._torch_pruning import headed_attention

VOCAB, SEQ, WIDTH, HEADS, LAYERS, FFN, CLASSES = 50, 12, 64, 4, 2, 128, 3


class Classifier(nn.Module):
    """An encoder with a mean-pooled linear head over its token states."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(WIDTH, CLASSES)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        return self.head((states * mask).sum(1) / mask.sum(1))


def bert(attention: str = "sdpa") -> Classifier:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=WIDTH,
        num_attention_heads=HEADS,
        num_hidden_layers=LAYERS,
        intermediate_size=FFN,
        max_position_embeddings=SEQ,
    )
    config._attn_implementation = attention  # what from_pretrained(attn_implementation=) sets
    return Classifier(BertModel(config))  # with its pooler, as BertModel comes


def distilbert(attention: str = "sdpa") -> Classifier:
    torch.manual_seed(0)
    config = DistilBertConfig(
        vocab_size=VOCAB,
        dim=WIDTH,
        n_heads=HEADS,
        n_layers=LAYERS,
        hidden_dim=FFN,
        max_position_embeddings=SEQ,
    )
    config._attn_implementation = attention
    return Classifier(DistilBertModel(config))


def text_task(factory: object) -> ww.Task:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, VOCAB, (96, SEQ), generator=gen)
    mask = torch.ones_like(ids)
    mask[::2, SEQ // 2 :] = 0  # every other sentence padded to half length
    labels = ids[:, 0] % CLASSES

    class Rows(TensorDataset):
        def __getitem__(self, i: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:  # type: ignore[override]
            x, m, y = super().__getitem__(i)
            return {"input_ids": x, "attention_mask": m}, y

    data = Rows(ids, mask, labels)
    return ww.Task(
        name="hf-encoder",
        model_factory=factory,  # type: ignore[arg-type]
        train_data=data,
        val_data=data,
        example_input={"input_ids": ids[:1], "attention_mask": mask[:1]},
        epochs=1,
        batch_size=32,
    )


@pytest.mark.parametrize("factory", [bert, distilbert], ids=["bert", "distilbert"])
def test_whole_heads_and_ffn_units_go_and_the_model_still_runs(factory: object) -> None:
    task = text_task(factory)
    model = task.model_factory()
    before = {
        id(a.module): (a, int(getattr(a.module, a.count_attr))) for a in headed_attention(model)
    }
    assert len(before) == LAYERS and {h for _, h in before.values()} == {HEADS}
    pruned, log = ww.compress(
        model, [ww.Prune(ratio=0.5, scope="uniform", finetune_epochs=0)], task=task
    )
    record = log.records[0]
    heads = record.metrics["heads"]
    assert len(heads) == LAYERS and all(h == [HEADS, HEADS // 2] for h in heads.values()), heads
    for a in headed_attention(pruned):
        # Whole heads left: the head size is as it was, the projections shrank together.
        assert a.head_size == WIDTH // HEADS
        assert {p.out_features for p in a.projections} == {HEADS // 2 * a.head_size}
    ffn = [m for n, m in pruned.named_modules() if n.endswith(("intermediate.dense", "ffn.lin1"))]
    assert len(ffn) == LAYERS and all(m.out_features == FFN // 2 for m in ffn)
    assert log.final.macs < 0.5 * log.initial.macs
    x = task.calibration_batches(n_items=8, batch_size=8)[0]
    assert pruned(**x).shape == (8, CLASSES)
    assert model is not pruned and len(headed_attention(model)) == LAYERS  # the caller's is whole


def test_an_unused_pooler_follows_the_hidden_size_and_is_named() -> None:
    task = text_task(bert)
    model = task.model_factory()
    assert part(model, "encoder.pooler.dense", nn.Linear).in_features == WIDTH
    pruned, log = ww.compress(
        copy.deepcopy(model), [ww.Prune(ratio=0.5, scope="uniform", finetune_epochs=0)], task=task
    )
    dense = part(pruned, "encoder.pooler.dense", nn.Linear)
    hidden = part(pruned, "encoder.embeddings.word_embeddings", nn.Embedding).embedding_dim
    assert hidden < WIDTH and dense.in_features == hidden and dense.out_features == WIDTH
    (skip,) = [s for s in log.records[0].skipped if s.startswith("encoder.pooler.dense")]
    assert "feeds none of the model's outputs" in skip
    # The pooler still runs on the pruned states, as BertModel calls it on every forward.
    x = task.calibration_batches(n_items=4, batch_size=4)[0]
    encoder = part(pruned, "encoder", BertModel)
    assert encoder(**x).pooler_output.shape == (4, WIDTH)


def test_sensitivity_prunes_heads_per_layer() -> None:
    task = text_task(bert)
    pruned, log = ww.compress(
        task.model_factory(),
        [ww.Prune(ratio=0.25, sensitivity=True, finetune_epochs=0)],
        task=task,
    )
    record = log.records[0]
    assert record.method == "sensitivity" and record.metrics["layer_ratios"]
    heads = record.metrics["heads"]
    assert all(after <= before == HEADS for before, after in heads.values()), heads
    assert any(after < before for before, after in heads.values()), heads
    x = task.calibration_batches(n_items=4, batch_size=4)[0]
    assert pruned(**x).shape == (4, CLASSES)
    assert log.final.macs < log.initial.macs


def attention_of(model: nn.Module) -> str:
    """The attention kernel the encoder's config names."""
    config = getattr(model.get_submodule("encoder"), "config")  # noqa: B009 (typed as Any)
    return str(config._attn_implementation)


@pytest.mark.parametrize("factory", [bert, distilbert], ids=["bert", "distilbert"])
def test_eager_attention_moves_to_sdpa_with_the_same_outputs(
    factory: Callable[..., Classifier],
) -> None:
    task = text_task(factory)
    model = factory("eager").eval()
    fast, log = ww.compress(model, [ww.Attention("sdpa")], task=task)
    assert attention_of(model) == "eager" and attention_of(fast) == "sdpa"
    kind = type(model.get_submodule("encoder")).__name__
    assert f"encoder: {kind} attention eager -> sdpa" in log.records[0].notes
    x = task.calibration_batches(n_items=8, batch_size=8)[0]
    with torch.no_grad():
        torch.testing.assert_close(fast(**x), model(**x), atol=1e-5, rtol=1e-4)
    # Already on SDPA: nothing to do, and the log says so.
    _, again = ww.compress(fast, [ww.Attention("sdpa")], task=task)
    assert f"encoder: {kind} already uses sdpa attention" in again.records[0].notes
