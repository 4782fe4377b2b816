"""The CUDA path (deselected by default; run with ``-m gpu`` on a machine with an NVIDIA GPU)."""

from __future__ import annotations

import pytest
import torch

import wattwise.deploy as wd
from wattwise.errors import UnavailableError

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize(
    ("backend", "precision"),
    [
        ("eager", "fp32"),
        ("eager", "bf16"),
        ("eager", "fp16"),
        ("eager_cl", "fp16"),
        ("compile", "bf16"),
    ],
)
def test_cuda_backends_match_eager_fp32(random_model, backend, precision):
    x = torch.rand(1, 1, 8, 8)
    dep = wd.deploy(random_model, backend, precision, example_input=x, device="cuda", batch_size=8)
    assert dep.check is not None and dep.check.passed
    out = dep(x.repeat(8, 1, 1, 1))  # a CPU input is moved to the device
    assert out.is_cuda and out.shape == (8, 10)


def test_cuda_graph_outputs_survive_the_next_call(random_model):
    dep = wd.deploy(
        random_model,
        "compile",
        "fp32",
        example_input=torch.rand(1, 1, 8, 8),
        device="cuda",
        batch_size=4,
    )
    a, b = torch.rand(4, 1, 8, 8), torch.rand(4, 1, 8, 8)
    first = dep(a)
    kept = first.clone()
    dep(b)  # a CUDA graph replay writes into its own output buffer again
    torch.testing.assert_close(first, kept)
    torch.testing.assert_close(first.cpu(), random_model(a), atol=1e-4, rtol=1e-3)


def test_cuda_deployment_measures_in_a_child(random_model):
    dep = wd.deploy(
        random_model,
        "eager",
        "bf16",
        example_input=torch.rand(1, 1, 8, 8),
        device="cuda",
        batch_size=64,
    )
    m = dep.measure(max_time_s=2.0)
    assert m.device.startswith("cuda") and m.batch_size == 64 and m.energy_j_per_item > 0
    assert m.energy_source.startswith(("measured:", "estimated:"))


def test_onnxruntime_cuda_is_probed(random_model):
    available = wd.probe_backends("cuda")["onnxruntime"]
    x = torch.rand(1, 1, 8, 8)
    if not available.ok:
        assert "CUDAExecutionProvider" in available.reason or "not installed" in available.reason
        with pytest.raises(UnavailableError):
            wd.deploy(random_model, "onnxruntime", "fp16", example_input=x, device="cuda")
        return
    dep = wd.deploy(
        random_model, "onnxruntime", "fp16", example_input=x, device="cuda", batch_size=4
    )
    assert dep.check is not None and dep.check.passed and dep(x.repeat(4, 1, 1, 1)).is_cuda


def test_cuda_artifact_reloads_on_cuda_and_on_cpu(tmp_path, random_model):
    dep = wd.deploy(
        random_model,
        "eager",
        "fp16",
        example_input=torch.rand(1, 1, 8, 8),
        device="cuda",
        batch_size=2,
    )
    out = wd.export_deployment(dep, tmp_path / "art")
    assert wd.load_artifact(out).verify().passed
    on_cpu = wd.load_artifact(out, device="cpu")
    assert on_cpu.deployment.device == "cpu" and on_cpu.verify().passed
