"""The contract every registered pass keeps, on every model of the zoo.

For each (pass, model): the caller's model is unchanged; the output shape is preserved with no
NaN; what the pass claims to reduce is reduced, or the log says which layers it skipped and
why; the accuracy drop on digits stays within the pass's threshold. Registering a new pass
without adding it to ``CASES`` fails :func:`test_every_registered_pass_is_covered`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
import torch
from torch import nn

from passes.zoo import ZOO
from wattwise.passes import (
    PASSES,
    Attention,
    CompressionLog,
    Distill,
    Pass,
    Prune,
    Quantize,
    Sparsify,
    compress,
)
from wattwise.tasks import Task


@dataclasses.dataclass(frozen=True)
class Case:
    """A pass config, the accuracy drop it may cost, and what it claims (checked by ``claim``)."""

    id: str
    config: Pass
    max_drop: float
    claim: Callable[[str, CompressionLog], None]


def _reduces_macs_and_params(model: str, log: CompressionLog) -> None:
    rec = log.records[0]
    if model == "gru":  # the recurrent layer is kept whole, and so is everything tied to it
        assert rec.macs == log.initial.macs
        assert any(s.startswith("rnn:") and "recurrent" in s for s in rec.skipped), rec.skipped
        assert any(s.startswith("proj:") and "'rnn'" in s for s in rec.skipped), rec.skipped
    else:
        assert rec.macs < 0.8 * log.initial.macs
        assert rec.params < 0.8 * log.initial.params
    assert any("final classifier" in s for s in rec.skipped)


def _zeroes_weights(model: str, log: CompressionLog) -> None:
    rec = log.records[0]
    assert rec.metrics["sparsity"] == pytest.approx(0.3, abs=1e-3)
    assert rec.macs == log.initial.macs  # dense kernels: no MAC goes away
    if model in ("transformer", "gru"):
        assert any("Conv/Linear only" in s for s in rec.skipped)


def _int8_shrinks(model: str, log: CompressionLog) -> None:
    rec = log.records[0]
    assert rec.size_bytes < log.initial.size_bytes
    assert rec.macs == log.initial.macs  # carried over: int8 MACs are still MACs
    assert rec.method == "ptq"


def _dynamic_int8(model: str, log: CompressionLog) -> None:
    rec = log.records[0]
    if model in ("resnet", "mobilenet"):  # conv nets: only the tiny head is Linear
        assert any("conv kept float" in s for s in rec.skipped)
        assert rec.metrics["int8_linear_layers"] == 1
    else:  # attention weights stay float, so the transformer shrinks less
        assert rec.size_bytes < (0.8 if model == "transformer" else 0.6) * log.initial.size_bytes
    if model == "gru":
        assert rec.metrics["int8_recurrent_layers"] == 1
    if model == "transformer":
        assert any("attention kept float" in s for s in rec.skipped)


def _halves_size(model: str, log: CompressionLog) -> None:
    rec = log.records[0]
    assert rec.size_bytes < 0.75 * log.initial.size_bytes
    assert rec.metrics["latency_ratio"] > 0


def _keeps_shape(model: str, log: CompressionLog) -> None:
    rec = log.records[0]
    assert rec.params == log.initial.params
    assert rec.metrics["teacher"] == "original"


def _no_attention_to_switch(model: str, log: CompressionLog) -> None:
    rec = log.records[0]  # the zoo holds no Hugging Face model: nothing changes, and it says so
    assert (rec.params, rec.macs) == (log.initial.params, log.initial.macs)
    assert rec.accuracy_after == rec.accuracy_before
    assert any(s.startswith("<model>: no Hugging Face model") for s in rec.skipped), rec.skipped


CASES = [
    Case(
        "prune",
        Prune(ratio=0.3, scope="uniform", finetune_epochs=2),
        0.08,
        _reduces_macs_and_params,
    ),
    Case("sparsify", Sparsify(ratio=0.3, measure=False), 0.05, _zeroes_weights),
    Case("pt2e-int8", Quantize("pt2e-int8"), 0.03, _int8_shrinks),
    Case("dynamic-int8", Quantize("dynamic-int8"), 0.03, _dynamic_int8),
    Case("bf16", Quantize("bf16"), 0.03, _halves_size),
    Case("fp16", Quantize("fp16"), 0.03, _halves_size),
    Case("distill", Distill(epochs=1, precision="fp32"), 0.03, _keeps_shape),
    Case("attention", Attention("sdpa"), 0.0, _no_attention_to_switch),
]


def test_every_registered_pass_is_covered() -> None:
    covered = {case.config.TYPE for case in CASES}
    assert set(PASSES.names()) <= covered, set(PASSES.names()) - covered


@pytest.mark.parametrize("model_name", sorted(ZOO))
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_pass_contract(
    case: Case, model_name: str, task: Task, trained_zoo: Callable[[str], nn.Module]
) -> None:
    model = trained_zoo(model_name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.cat(task.calibration_batches(n_items=16, batch_size=16))

    out_model, log = compress(model, [case.config], task=task, seed=0)

    assert out_model is not model
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        y_ref, y = model(x), out_model(x)
    assert y.shape == y_ref.shape
    assert torch.isfinite(y).all()
    rec = log.records[0]
    assert rec.name == case.config.TYPE
    assert rec.accuracy_before == pytest.approx(log.initial.accuracy)
    assert rec.accuracy_drop <= case.max_drop, (rec.accuracy_before, rec.accuracy_after)
    assert rec.energy_source.startswith(("measured:", "estimated:"))
    assert rec.energy_uncertainty >= 0 and rec.time_s >= 0
    assert all(": " in s for s in rec.skipped)  # every skip names a layer and says why
    case.claim(model_name, log)


@pytest.mark.parametrize("method", ["int4-weight-only", "float8"])
def test_cuda_only_methods_say_why_on_cpu(
    method: str, task: Task, trained_zoo: Callable[[str], nn.Module]
) -> None:
    from wattwise.errors import UnavailableError

    if torch.cuda.is_available():
        pytest.skip("a GPU is present; this checks the CPU refusal")
    model = trained_zoo("mlp")
    with pytest.raises(UnavailableError, match="CUDA"):
        compress(model, [Quantize(method)], task=task)
