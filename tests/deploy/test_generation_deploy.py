"""Generative deployments: precision, torchao quantization and compilation that keep the model's
own KV cache, held to the eager form on the deployment's shapes."""

from __future__ import annotations

import pytest
import torch

from wattwise.archs.tinylm import TinyLM, tinylm
from wattwise.deploy._generation import (
    check_generation,
    generation_unsupported,
    serve_for_generation,
)
from wattwise.errors import InputError, UnavailableError
from wattwise.measure import GenerateSpec
from wattwise.measure._generate import generator_for, prompt_ids
from wattwise.tasks import Task
from wattwise.tasks.tinylm import ByteWindows, next_token_accuracy, next_token_loss

pytestmark = pytest.mark.usefixtures("one_thread")

SPEC = GenerateSpec(prompt_tokens=12, new_tokens=6)
TEXT = b"the quick brown fox jumps over the lazy dog; " * 40


def _small() -> TinyLM:
    torch.manual_seed(0)
    return tinylm(width=0.5, depth=0.5, max_seq_len=64).eval()


def _task() -> Task:
    data = ByteWindows(TEXT, window=16)
    return Task(
        "bytes",
        _small,
        data,
        data,
        example_input=data[0][0].unsqueeze(0),
        metric=next_token_accuracy,
        loss_fn=next_token_loss,
        generate=SPEC,
    )


def _tokens(model: torch.nn.Module, batch: int = 3) -> torch.Tensor:
    prompt = prompt_ids(torch.arange(10).unsqueeze(0) + 97, batch, SPEC.prompt_tokens)
    with torch.inference_mode():
        gen = generator_for(model, prompt, SPEC)
        assert gen.kv_cache == "static"  # the cache protocol survived the deployment
        out = [gen.prefill()]
        for _ in range(SPEC.new_tokens - 1):
            out.append(gen.step(out[-1]))
    return torch.cat(out, 1)


def test_eager_fp32_is_the_model_itself() -> None:
    model = _small()
    served = serve_for_generation(model, "eager", "fp32")
    assert served.module is served.eager is model
    assert check_generation(served, _task().example_input, 2, SPEC) == 1.0


def test_bf16_casts_weights_and_cache_and_still_generates() -> None:
    reference = _tokens(_small())
    served = serve_for_generation(_small(), "eager", "bf16")
    model = served.module
    assert isinstance(model, TinyLM) and model.head.weight.dtype == torch.bfloat16
    cache = model.new_cache(1, 8)
    assert cache.keys[0].dtype == torch.bfloat16
    got = _tokens(served.module)
    assert got.shape == reference.shape
    assert "bf16" in " ".join(served.notes)


@pytest.mark.parametrize("precision", ["int8-weight-only", "int8-dynamic"])
def test_torchao_quantization_keeps_the_cache_protocol(precision: str) -> None:
    task = _task()
    served = serve_for_generation(_small(), "eager", precision)
    assert isinstance(served.module, TinyLM)
    weight = served.module.get_submodule("blocks.0.attn.q").weight
    assert type(weight) is not torch.nn.Parameter or weight.dtype != torch.float32
    assert _tokens(served.module).shape == (3, SPEC.new_tokens)
    assert 0.0 <= task.evaluate(served.eager) <= 1.0


def test_only_data_free_methods_quantize_weights_outside_a_recipe() -> None:
    from wattwise.passes.quantize import quantize_weights

    with pytest.raises(InputError, match="pt2e-int8"):
        quantize_weights(_small(), "pt2e-int8")


def test_compiled_model_agrees_with_its_eager_form_and_leaves_it_eager() -> None:
    served = serve_for_generation(_small(), "compile", "fp32")
    assert served.module is not served.eager
    assert getattr(served.eager, "_compiled_call_impl", None) is None
    assert check_generation(served, _task().example_input, 2, SPEC) >= 0.9
    torch.testing.assert_close(_tokens(served.module), _tokens(served.eager))


@pytest.mark.parametrize(
    ("backend", "precision", "why"),
    [
        ("onnxruntime", "fp32", "does not serve generation"),
        ("eager", "int8", "does not serve generation"),
        ("cudagraphs", "bf16", "CUDA device"),
        ("eager", "int4-weight-only", "CUDA-only"),
        ("compile", "fp8", "CUDA GPU"),
    ],
)
def test_what_cannot_serve_generation_says_why(backend: str, precision: str, why: str) -> None:
    reason = generation_unsupported(backend, precision, "cpu")
    assert reason is not None and why in reason
    with pytest.raises(UnavailableError, match=why):
        serve_for_generation(_small(), backend, precision)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize(
    ("backend", "precision"),
    [("eager", "bf16"), ("cudagraphs", "bf16"), ("eager", "int8-weight-only")],
)
def test_generation_on_cuda(backend: str, precision: str) -> None:
    import wattwise as ww

    task = _task()
    served = serve_for_generation(_small(), backend, precision, device="cuda")
    assert check_generation(served, task.example_input, 4, SPEC) >= 0.9
    m = ww.measure(
        served.module,
        task.example_input,
        device="cuda",
        batch_size=4,
        generate=SPEC,
        isolate=False,
        max_time_s=2.0,
    )
    assert m.generation is not None and m.energy_source.startswith("measured:nvml")
    assert m.generation.decode_energy_j_per_token > 0
