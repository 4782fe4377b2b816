"""ONNX Runtime: int8 accuracy on the trained digits CNN, OrtModule pickling and measuring."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn

import wattwise.deploy as wd
from wattwise.errors import InputError
from wattwise.measure import measure


def test_static_qdq_int8_keeps_digits_accuracy_within_one_point(task, trained, calib):
    base = task.evaluate(trained)
    dep = wd.deploy(
        trained,
        "onnxruntime",
        "int8",
        example_input=task.example_input,
        calibration=calib,
        batch_size=32,
    )
    assert dep.deployment.calibration_method == "minmax"
    int8 = task.evaluate(dep.module)
    assert base >= 0.95
    assert base - int8 <= 0.01, f"fp32 {base:.4f} -> int8 {int8:.4f}"
    # It really is quantized: QDQ nodes in the graph, and int8 weights make it smaller.
    fp32 = wd.deploy(trained, "onnxruntime", "fp32", example_input=task.example_input)
    assert dep.onnx_bytes is not None and fp32.onnx_bytes is not None
    assert b"QuantizeLinear" in dep.onnx_bytes and b"QuantizeLinear" not in fp32.onnx_bytes
    assert len(dep.onnx_bytes) < 0.5 * len(fp32.onnx_bytes)
    assert dep.check is not None and dep.check.top1_agreement is not None
    assert dep.check.top1_agreement >= 0.95


def test_ort_module_pickles_as_bytes_and_measures_in_a_child(random_model, calib):
    dep = wd.deploy(
        random_model, "onnxruntime", "fp32", example_input=calib[0][:1], threads=1, batch_size=8
    )
    module = dep.module
    copy = pickle.loads(pickle.dumps(module))
    assert copy is not module and copy._session is None  # the session is rebuilt lazily
    torch.testing.assert_close(copy(calib[0]), module(calib[0]))
    assert copy.threads == 1
    m = measure(module, calib[0][:1], batch_size=8, threads=1, isolate=True, max_time_s=1.0)
    assert m.isolated and m.batch_size == 8 and m.energy_j_per_item > 0
    assert m.energy_source.startswith(("measured:", "estimated:")) and m.energy_uncertainty > 0


class _TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 4)
        self.b = nn.Linear(3, 4)

    def forward(self, x, y):
        return torch.relu(self.a(x)) + self.b(y)


def test_several_inputs_and_a_dynamic_batch():
    torch.manual_seed(0)
    model = _TwoInputs().eval()
    example = (torch.randn(1, 6), torch.randn(1, 3))
    dep = wd.deploy(model, "onnxruntime", "fp32", example_input=example, batch_size=2)
    assert dep.module.input_names == ["input_0", "input_1"]
    for n in (1, 5):  # any batch size runs on the one exported model
        x, y = torch.randn(n, 6), torch.randn(n, 3)
        torch.testing.assert_close(dep(x, y), model(x, y), atol=1e-5, rtol=1e-4)
    with pytest.raises(InputError, match="takes 2 input"):
        dep.module(torch.randn(1, 6))


def test_ort_module_rejects_bad_bytes():
    with pytest.raises(InputError):
        wd.OrtModule(b"")
    with pytest.raises(InputError, match="cannot load"):
        wd.OrtModule(b"not an onnx model")(torch.zeros(1))
