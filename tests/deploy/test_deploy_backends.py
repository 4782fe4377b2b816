"""Every backend prepares the digits CNN and passes the equivalence check against eager fp32."""

from __future__ import annotations

import pickle

import pytest
import torch

import wattwise.deploy as wd
from wattwise.errors import InputError

EXPECTED_METRIC = {"fp32": "allclose", "bf16": "rel_l2", "fp16": "rel_l2", "int8": "cosine"}


@pytest.mark.parametrize(
    ("backend", "precision"),
    [
        ("eager", "fp32"),
        ("eager", "bf16"),
        ("eager", "fp16"),
        ("eager_cl", "fp32"),
        ("eager_cl", "bf16"),
        ("onnxruntime", "fp32"),
        ("onnxruntime", "int8"),
        ("openvino", "fp32"),
        ("openvino", "int8"),
    ],
)
def test_backend_prepares_and_matches_eager_fp32(random_model, calib, backend, precision):
    x = calib[0][:1]
    dep = wd.deploy(
        random_model, backend, precision, example_input=x, calibration=calib[:2], batch_size=4
    )
    assert dep.check is not None and dep.check.passed
    assert dep.check.metric == EXPECTED_METRIC[precision]
    assert dep.check.items == 4 + 64  # the example batch plus the calibration items
    out = dep(calib[0][:4])
    assert out.shape == (4, 10) and torch.isfinite(out.float()).all()
    assert dep.deployment == wd.Deployment(backend=backend, precision=precision, batch_size=4)
    if backend == "onnxruntime":
        assert dep.onnx_bytes and isinstance(dep.module, wd.OrtModule)
    if backend == "openvino":
        assert dep.ir_bytes and isinstance(dep.module, wd.OvModule)


@pytest.mark.slow
def test_compile_fp32_matches_eager(random_model):
    x = torch.rand(1, 1, 8, 8)
    dep = wd.deploy(random_model, "compile", "fp32", example_input=x, batch_size=2)
    assert dep.check is not None and dep.check.passed and dep.check.metric == "allclose"
    # Second call of the same shape skips the scoped inductor settings and still agrees.
    torch.testing.assert_close(dep(x.repeat(2, 1, 1, 1)), random_model(x.repeat(2, 1, 1, 1)))


@pytest.mark.slow
def test_compile_lowers_a_pt2e_graph_to_int8_and_agrees(pt2e_model, calib, task):
    assert wd.is_pt2e_quantized(pt2e_model)
    dep = wd.deploy(
        pt2e_model, "compile", "int8", example_input=calib[0][:1], calibration=calib, batch_size=32
    )
    assert dep.check is not None and dep.check.passed
    assert dep.check.metric == "cosine" and dep.check.value > 0.99
    # Preparing at all shows freezing was on while compiling: without it inductor fails on the
    # quantized convolutions (onednn.qconv_prepack). And the int8 model still classifies.
    assert task.evaluate(dep.module) >= 0.95
    # The factory sends the PT2E graph (which doesn't pickle) as torch.export bytes.
    rebuilt = pickle.loads(pickle.dumps(dep.factory()))()
    torch.testing.assert_close(rebuilt(calib[0]), dep(calib[0]))


def test_pt2e_graph_rules(pt2e_model, trained):
    x = torch.rand(1, 1, 8, 8)
    assert not wd.is_pt2e_quantized(trained)
    eager = wd.deploy(pt2e_model, "eager", "int8", example_input=x, batch_size=2)
    assert eager.check is not None and eager.check.passed
    with pytest.raises(InputError, match="already PT2E"):
        wd.deploy(pt2e_model, "eager", "fp32", example_input=x)
    with pytest.raises(InputError, match="float model"):
        wd.deploy(pt2e_model, "onnxruntime", "int8", example_input=x, calibration=[x])


def test_deploy_leaves_the_callers_model_alone(random_model):
    random_model.train()
    before = {k: v.clone() for k, v in random_model.state_dict().items()}
    dep = wd.deploy(random_model, "eager_cl", "bf16", example_input=torch.rand(1, 1, 8, 8))
    assert random_model.training  # not switched to eval behind the caller's back
    for key, value in random_model.state_dict().items():
        assert torch.equal(value, before[key]) and value.is_contiguous()
    assert dep.source_model is not random_model


def test_torch_factory_pickles_and_rebuilds_the_same_callable(random_model):
    x = torch.rand(3, 1, 8, 8)
    dep = wd.deploy(random_model, "eager_cl", "fp32", example_input=x[:1], batch_size=3)
    rebuilt = pickle.loads(pickle.dumps(dep.factory()))()
    torch.testing.assert_close(rebuilt(x), dep(x))


def test_probe_reports_every_backend_with_a_reason():
    found = wd.probe_backends("cpu")
    assert (
        set(found)
        == set(wd.BACKENDS.names())
        == {
            "eager",
            "eager_cl",
            "compile",
            "onnxruntime",
            "openvino",
        }
    )
    assert found["eager"].ok and found["onnxruntime"].ok
    assert "onnxruntime" in found["onnxruntime"].reason
    # compile needs a C++ compiler: the probe names the one it found, or says none was.
    assert ("C++ compiler" in found["compile"].reason) or not found["compile"].ok


def test_offline_candidates_leave_out_what_a_backend_cannot_run(pt2e_model):
    cands = wd.offline_candidates(["eager", "onnxruntime"], ["fp32", "fp16", "int8"], [1, 8])
    labels = {c.label for c in cands}
    assert "onnxruntime/int8 b8 cpu" in labels and "eager/fp16 b1 cpu" in labels
    assert not any(c.backend == "onnxruntime" and c.precision == "fp16" for c in cands)
    assert not any(c.backend == "eager" and c.precision == "int8" for c in cands)
    quantized = wd.offline_candidates(["eager", "compile"], ["fp32", "int8"], [4], model=pt2e_model)
    assert {c.label for c in quantized} == {"eager/int8 b4 cpu", "compile/int8 b4 cpu"}
    assert all(c.batch_size == 1 for c in wd.online_candidates(["eager"], ["fp32", "bf16"]))
