"""Quantize: the int8 graph, the accuracy guard (float fallback, then QAT), casts, skips."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from passes.helpers import part
from wattwise.errors import InputError
from wattwise.passes import Quantize, compress
from wattwise.tasks import Task


def _with_outliers(model: nn.Module, layers: tuple[int, ...]) -> nn.Module:
    """Scale 8 units of each given Linear up 1000× and the next Linear's inputs down 1000×.

    In float the function is unchanged (ReLU is positively homogeneous), but the activations
    feeding the next Linear now span 1000× more range, so a per-tensor uint8 scale leaves the
    other units almost no levels: quantizing that input wrecks the model.
    """
    with torch.no_grad():
        for i in layers:
            scaled, next_ = (
                part(model, f"net.{i}", nn.Linear),
                part(model, f"net.{i + 2}", nn.Linear),
            )
            scaled.weight[:8] *= 1000
            scaled.bias[:8] *= 1000
            next_.weight[:, :8] /= 1000
    return model


def test_pt2e_stores_int8_weights_and_drops_the_float_ones(
    task: Task, trained_zoo: Callable[[str], nn.Module]
) -> None:
    small, log = compress(trained_zoo("mlp"), [Quantize("pt2e-int8")], task=task)
    state = small.state_dict()
    int8 = [k for k, v in state.items() if v.dtype == torch.int8]
    assert len(int8) == 3
    assert not any(k.endswith(".weight") and v.dtype == torch.float32 for k, v in state.items())
    assert log.records[0].size_bytes < 0.4 * log.initial.size_bytes
    assert any("torch.compile" in n for n in log.records[0].notes)


@pytest.mark.slow
def test_guard_puts_the_sensitive_layer_back_to_float(
    task: Task, trained_zoo: Callable[[str], nn.Module]
) -> None:
    model = _with_outliers(trained_zoo("mlp"), (1,))
    _, plain = compress(model, [Quantize("pt2e-int8")], task=task)
    assert plain.records[0].accuracy_drop > 0.3  # the outliers do break plain PTQ

    _, log = compress(model, [Quantize("pt2e-int8", max_accuracy_drop=0.01)], task=task)
    rec = log.records[0]
    assert rec.method == "ptq+float(1)"
    assert rec.accuracy_drop <= 0.01
    assert any(s.startswith("net.3:") and "accuracy guard" in s for s in rec.skipped)
    drops = rec.metrics["layer_drops"]
    assert max(drops, key=drops.get) == "net.3"


@pytest.mark.slow
def test_guard_falls_back_to_qat_and_says_whether_it_held(
    task: Task, trained_zoo: Callable[[str], nn.Module]
) -> None:
    # Two broken inputs but only one layer may go back to float (half of three): QAT is next.
    model = _with_outliers(trained_zoo("mlp"), (1, 3))
    _, log = compress(
        model, [Quantize("pt2e-int8", max_accuracy_drop=0.01, qat_epochs=1)], task=task
    )
    rec = log.records[0]
    assert "qat_accuracy" in rec.metrics
    assert rec.accuracy_after >= rec.metrics["ptq_accuracy"]
    held = rec.accuracy_drop <= 0.01
    assert held or any("accuracy guard not met" in n for n in rec.notes)


def test_dynamic_int8_quantizes_linear_and_gru(
    task: Task, trained_zoo: Callable[[str], nn.Module]
) -> None:
    small, log = compress(trained_zoo("gru"), [Quantize("dynamic-int8")], task=task)
    assert type(small.rnn).__module__.startswith("torch.ao.nn.quantized.dynamic")
    assert (
        "Int8" in type(small.get_submodule("head").weight).__name__
    )  # torchao's int8 weight tensor
    assert log.records[0].params == log.initial.params  # packed weights are still counted


def test_casts_return_float32_and_note_cpu_speed(
    task: Task, trained_zoo: Callable[[str], nn.Module]
) -> None:
    small, log = compress(trained_zoo("mlp"), [Quantize("fp16")], task=task)
    with torch.no_grad():
        assert small(task.example_input).dtype == torch.float32
    assert next(small.parameters()).dtype == torch.float16
    rec = log.records[0]
    assert f"latency ratio {rec.metrics['latency_ratio']:.2f}" in " ".join(rec.notes)


def test_skip_names_must_exist(task: Task, trained_zoo: Callable[[str], nn.Module]) -> None:
    with pytest.raises(InputError, match=r"Quantize\.skip: TinyMLP has no module named 'net\.7'"):
        compress(trained_zoo("mlp"), [Quantize("pt2e-int8", skip=("net.7",))], task=task)


def test_int8_weight_only_runs_on_the_cpu_and_keeps_accuracy(
    task: Task, trained_zoo: Callable[[str], nn.Module]
) -> None:
    # torchao's Int8WeightOnlyConfig has CPU kernels (torchao 0.18); it was refused here as
    # CUDA-only. Every Linear's weight becomes int8, activations stay float.
    model = trained_zoo("mlp")
    out, log = compress(model, [Quantize("int8-weight-only")], task=task)
    rec = log.records[0]
    assert rec.method == "int8-weight-only"
    assert rec.accuracy_drop <= 0.01
    assert rec.size_bytes < 0.4 * log.initial.size_bytes
    linear = [m for m in out.modules() if isinstance(m, nn.Linear)]
    assert linear and all(type(m.weight).__name__ == "Int8Tensor" for m in linear)


@pytest.mark.gpu
def test_cuda_methods_on_a_gpu(task: Task) -> None:
    """Checked on an H100 (torch 2.11, torchao 0.18): int8-weight-only and float8 run and keep
    accuracy; int4-weight-only needs torchao's separate kernel package (mslk) and says so."""
    from wattwise.errors import UnavailableError

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Flatten(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 16), nn.Flatten()
    )
    model = task.fit(nn.Sequential(net, _Take(10)), epochs=10).cuda()
    for method in ("int8-weight-only", "float8", "int4-weight-only"):
        try:
            out, log = compress(model, [Quantize(method)], task=task)
        except UnavailableError as exc:
            assert method == "int4-weight-only", exc
            continue
        assert log.records[0].accuracy_drop <= 0.02
        assert log.records[0].energy_source == "measured:nvml"
        with torch.no_grad():
            assert out(task.example_input.cuda()).shape == (1, 10)


class _Take(nn.Module):
    """Keep the first ``n`` logits (the last Linear is 16 wide for float8's GEMM shapes)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, : self.n]
