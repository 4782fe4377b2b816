"""Deployment config, the output comparison, and the one-line errors of deploy()."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import wattwise.deploy as wd
from wattwise.config import Config
from wattwise.errors import InputError, UnavailableError, UnknownNameError


def test_deployment_round_trips_through_a_dict():
    dep = wd.Deployment(backend="onnxruntime", precision="int8", batch_size=32, threads=2)
    data = dep.to_dict()
    assert data["type"] == "deployment" and data["version"] == 1
    assert Config.from_dict(data) == dep
    assert dep.label == "onnxruntime/int8 b32 t2 cpu"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"backend": "tensorrt"}, "backend"),
        ({"precision": "int4"}, "precision"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"threads": 0}, "threads"),
        ({"device": "gpu"}, "device"),
        ({"calibration_method": "mse"}, "calibration_method"),
    ],
)
def test_deployment_rejects_bad_fields_naming_them(kwargs, field):
    with pytest.raises(InputError) as info:
        wd.Deployment(**kwargs)
    assert field in str(info.value) or "unknown backend" in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_backend_lists_the_known_ones():
    with pytest.raises(UnknownNameError, match="onnxruntime"):
        wd.Deployment(backend="tensorrt")


def test_fp32_tolerance_passes_reordering_noise_and_fails_real_differences():
    ref = torch.randn(8, 10)
    ok = wd.compare_outputs([ref], [ref + 1e-6], "fp32")
    assert ok.passed and ok.metric == "allclose" and ok.value < 1
    bad = wd.compare_outputs([ref], [ref + 1e-2], "fp32")
    assert not bad.passed and bad.value > 1 and bad.max_abs_diff == pytest.approx(1e-2, rel=1e-3)


def test_low_precision_uses_relative_l2_error():
    ref = torch.randn(16, 10)
    noise = torch.randn(16, 10)
    near = wd.compare_outputs([ref], [ref + 0.005 * ref.norm() / noise.norm() * noise], "bf16")
    assert near.metric == "rel_l2" and near.passed and near.value == pytest.approx(0.005, rel=1e-3)
    far = wd.compare_outputs([ref], [ref + 0.05 * ref.norm() / noise.norm() * noise], "fp16")
    assert not far.passed


def test_int8_uses_cosine_and_catches_a_sign_flip():
    ref = torch.randn(32, 10)
    assert wd.compare_outputs([ref], [ref * 1.1 + 0.01], "int8").passed
    flipped = wd.compare_outputs([ref], [-ref], "int8")
    assert flipped.metric == "cosine" and not flipped.passed and flipped.value < 0
    assert flipped.top1_agreement is not None and flipped.top1_agreement < 0.5


def test_shape_mismatch_and_nan_raise_deployment_mismatch():
    ref = torch.randn(4, 10)
    with pytest.raises(wd.DeploymentMismatch, match="shape"):
        wd.compare_outputs([ref], [ref[:, :5]], "fp32")
    with pytest.raises(wd.DeploymentMismatch, match="NaN"):
        wd.compare_outputs([ref], [torch.full_like(ref, float("nan"))], "fp32")


def test_precision_a_backend_cannot_run_names_backend_and_precision(random_model):
    x = torch.randn(1, 1, 8, 8)
    with pytest.raises(InputError) as info:
        wd.deploy(random_model, "eager", "int8", example_input=x)
    assert "'eager'" in str(info.value) and "'int8'" in str(info.value)
    for precision in ("fp16", "bf16"):
        with pytest.raises(InputError, match=f"'onnxruntime' can't run precision '{precision}'"):
            wd.deploy(random_model, "onnxruntime", precision, example_input=x)


def test_bad_inputs_to_deploy(random_model):
    x = torch.randn(1, 1, 8, 8)
    with pytest.raises(UnknownNameError):
        wd.deploy(random_model, "tvm", "fp32", example_input=x)
    with pytest.raises(InputError, match="batch_size"):
        wd.deploy(random_model, "eager", "fp32", example_input=x, batch_size=0)
    with pytest.raises(InputError, match=r"nn\.Module"):
        wd.deploy(lambda t: t, "eager", "fp32", example_input=x)
    with pytest.raises(InputError, match="example_input"):
        wd.deploy(random_model, "eager", "fp32", example_input=[1, 2])
    with pytest.raises(InputError, match="calibration"):
        wd.deploy(random_model, "onnxruntime", "int8", example_input=x)
    with pytest.raises(InputError, match="calibration"):
        wd.deploy(random_model, "onnxruntime", "int8", example_input=x, calibration=x)  # type: ignore[arg-type]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_a_gpu_is_unavailable(random_model):
    with pytest.raises(UnavailableError, match="CUDA"):
        wd.deploy(
            random_model, "eager", "fp32", example_input=torch.randn(1, 1, 8, 8), device="cuda"
        )
    assert not wd.probe_backends("cuda")["eager"].ok


class _BigOffset(nn.Module):
    """y = (x W + 1e4) - 1e4: exact in fp32, but bf16 keeps 8 bits, so the offset eats x."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(10, 10)
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(10))
            self.linear.bias.fill_(1e4)

    def forward(self, x):
        return self.linear(x) - 1e4


def test_a_deployment_that_changes_the_outputs_raises_mismatch_with_numbers():
    model = _BigOffset().eval()
    with pytest.raises(wd.DeploymentMismatch) as info:
        wd.deploy(model, "eager", "bf16", example_input=torch.randn(4, 10))
    result = info.value.result
    assert result is not None and result.metric == "rel_l2" and result.value > 0.02
    assert "relative L2 error" in str(info.value) and "bound 0.02" in str(info.value)
    # fp32 of the same model passes: the check is about the precision, not the model.
    fp32 = wd.deploy(model, "eager", "fp32", example_input=torch.randn(4, 10))
    assert fp32.check is not None and fp32.check.passed


def test_wattwise_deploy_is_callable_as_the_public_api_says(random_model):
    import wattwise

    dep = wattwise.deploy(
        random_model, backend="eager", precision="fp32", example_input=torch.rand(1, 1, 8, 8)
    )
    assert isinstance(dep, wd.Deployed) and dep.check is not None and dep.check.passed
