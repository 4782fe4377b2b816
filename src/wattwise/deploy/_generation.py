"""Serving a language model that generates: precision, quantization and compilation that keep
its KV cache.

A classifier is deployed by wrapping it (:mod:`wattwise.deploy._runners`) or by exporting its
graph. A model that generates must keep its own interface, because the generation loop drives it
one token at a time against its cache: ``new_cache(...)`` and ``forward(ids, cache=)`` for our
models, ``past_key_values`` for Hugging Face's. So a generative deployment changes the model in
place and returns the same object:

* **precision**: ``fp32`` as it is; ``bf16`` and ``fp16`` cast the weights (and so the cache,
  which ``new_cache`` sizes from them); ``int8-weight-only``, ``int8-dynamic``,
  ``int4-weight-only`` and ``fp8`` go through torchao's ``quantize_`` (the
  :class:`~wattwise.passes.Quantize` pass), which swaps each ``nn.Linear``'s weight for a
  quantized tensor and keeps the module tree, so the cache protocol survives
  (:func:`wattwise.passes.quantize.quantize_weights`: these methods need no data). int4 and fp8 are
  CUDA-only in torchao (its CPU int4 layout needs a kernel package this torch lacks);
* **backend**: ``eager``; ``compile`` (``nn.Module.compile``, inductor: a static cache has the
  same shapes at every decode step, so a step compiles once; the cache's fill length becomes a
  symbolic integer after its second value, not one graph per position); ``cudagraphs``
  (``compile`` with ``mode="reduce-overhead"``: each decode step replays as one CUDA graph, what
  removes kernel-launch overhead at small batch; CUDA only).

The task's metric is computed on the model before compilation (:attr:`Served.eager`: the same
weights at the same precision), and the compiled model is held to it on the deployment's own
shapes: the first tokens of a batch of responses must agree (:func:`check_generation`).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from wattwise._core import first_line
from wattwise.errors import InputError, UnavailableError, WorkloadError

if TYPE_CHECKING:
    from torch import nn

    from wattwise.measure import GenerateSpec

__all__ = [
    "GENERATION_BACKENDS",
    "GENERATION_PRECISIONS",
    "Served",
    "check_generation",
    "generation_unsupported",
    "serve_for_generation",
]

GENERATION_BACKENDS = ("eager", "compile", "cudagraphs")
GENERATION_PRECISIONS = (
    "fp32",
    "bf16",
    "fp16",
    "int8-weight-only",
    "int8-dynamic",
    "int4-weight-only",
    "fp8",
)
# Precision → the Quantize pass's method that makes it.
_QUANTIZE = {
    "int8-weight-only": "int8-weight-only",
    "int8-dynamic": "dynamic-int8",
    "int4-weight-only": "int4-weight-only",
    "fp8": "float8",
}
_CUDA_ONLY = {
    "cudagraphs": "CUDA graphs replay GPU work: they need a CUDA device",
    "int4-weight-only": "torchao's int4 weight-only kernels are CUDA-only",
    "fp8": "float8 needs a CUDA GPU of compute capability 8.9 or more (Ada, Hopper)",
}
# Inductor options for generation on the CPU: weights folded in as constants (freezing), the
# graph's calls made from C++ rather than Python (cpp_wrapper), and GEMM kernels chosen by
# timing them (max_autotune).
CPU_COMPILE_OPTIONS = {"freezing": True, "cpp_wrapper": True, "max_autotune": True}
# The compiled model's first tokens must agree with its eager form's at least this often.
# Greedy choices between near-equal logits flip with the order of a sum, so not 1.0; a broken
# compilation agrees at chance (1/vocabulary).
MIN_TOKEN_AGREEMENT = 0.9
CHECK_STEPS = 4


def generation_unsupported(backend: str, precision: str, device: str) -> str | None:
    """Why ``backend/precision`` cannot serve generation on ``device`` here, or ``None``."""
    if backend not in GENERATION_BACKENDS:
        return (
            f"backend {backend!r} does not serve generation (a KV cache needs the model's own "
            f"forward); use one of {', '.join(GENERATION_BACKENDS)}"
        )
    if precision not in GENERATION_PRECISIONS:
        return (
            f"precision {precision!r} does not serve generation; use one of "
            f"{', '.join(GENERATION_PRECISIONS)}"
        )
    cuda = device.startswith("cuda")
    for choice in (backend, precision):
        if choice in _CUDA_ONLY and not cuda:
            return _CUDA_ONLY[choice]
    if backend != "eager":
        from wattwise.deploy._base import BACKENDS

        available = BACKENDS.get("compile").probe(device)
        if not available:
            return available.reason
    return None


@dataclasses.dataclass(frozen=True)
class Served:
    """A model ready to generate.

    Attributes:
        module: what generation runs (compiled for ``compile``/``cudagraphs``), with the
            model's own cache protocol.
        eager: the same weights at the same precision, not compiled: what the metric runs on.
        notes: what was done, in words (kept in the trial's notes).
    """

    module: nn.Module
    eager: nn.Module
    notes: tuple[str, ...]


def serve_for_generation(
    model: nn.Module,
    backend: str,
    precision: str,
    *,
    device: str = "cpu",
) -> Served:
    """Make ``model`` (changed in place) serve generation at ``backend/precision``.

    Args:
        model: a float language model (ours with ``new_cache``, or a Hugging Face causal LM).
        backend, precision: one of :data:`GENERATION_BACKENDS` and
            :data:`GENERATION_PRECISIONS`.
        device: where it runs.

    Raises:
        UnavailableError: the choice cannot run here (the message says why).
    """
    import torch

    if why := generation_unsupported(backend, precision, device):
        raise UnavailableError(f"{backend}/{precision} on {device}: {why}")
    notes: list[str] = []
    model = model.to(device).eval()
    if precision in ("bf16", "fp16"):
        model = model.to(torch.bfloat16 if precision == "bf16" else torch.float16)
        notes.append(f"weights and KV cache in {precision}")
    elif precision in _QUANTIZE:
        from wattwise.passes.quantize import quantize_weights

        model, said = quantize_weights(model, _QUANTIZE[precision])
        notes.append(f"{precision}: torchao quantize_ on every nn.Linear")
        notes.extend(said)
    eager = model
    if backend == "eager":
        return Served(model, eager, tuple(notes))
    compiled = _shallow_copy(model)
    if backend == "cudagraphs":
        compiled.compile(mode="reduce-overhead")
        notes.append("torch.compile mode=reduce-overhead: each decode step replays a CUDA graph")
    elif device.startswith("cuda"):
        compiled.compile()
        notes.append("torch.compile (inductor): a decode step compiles once, on first use")
    else:
        # On the CPU a small model's decode step is mostly the cost of its many small calls.
        # Measured on tinylm, batch 8, one thread, 2-vCPU EPYC, ms per decode step: eager 2.72,
        # compiled 1.56, with these options 1.40 (and 20 s of compiling, not 8).
        compiled.compile(options=CPU_COMPILE_OPTIONS)
        notes.append(
            "torch.compile (inductor; weights frozen, C++ wrapper, autotuned GEMMs): a decode "
            "step compiles once, on first use"
        )
    return Served(compiled, eager, tuple(notes))


def _shallow_copy(model: nn.Module) -> nn.Module:
    """A second module object sharing ``model``'s parameters and submodules: compiling it (its
    own ``__call__``) leaves ``model`` eager for the metric, without a second set of weights."""
    import copy

    return copy.copy(model)


def check_generation(
    served: Served, example_input: Any, batch_size: int, spec: GenerateSpec
) -> float:
    """Hold the compiled model to its eager form on the deployment's own shapes.

    Both generate :data:`CHECK_STEPS` greedy tokens for ``batch_size`` prompts of
    ``spec.prompt_tokens``, each with its own cache; the share of first tokens (after the
    prefill) that agree must be at least :data:`MIN_TOKEN_AGREEMENT`. The compiled graphs this
    builds are the ones the measurement then runs.

    Returns:
        The share of agreeing first tokens (1.0 when nothing is compiled: nothing to check).

    Raises:
        WorkloadError: the compiled model fails, or disagrees (the message says how often).
    """
    import torch

    from wattwise.measure._generate import generator_for, prompt_ids

    if served.module is served.eager:
        return 1.0
    prompt = prompt_ids(example_input, batch_size, spec.prompt_tokens)
    device = next(iter(served.eager.parameters())).device
    prompt = prompt.to(device)

    def tokens(model: nn.Module) -> torch.Tensor:
        gen = generator_for(model, prompt, spec)
        out = [gen.prefill()]
        for _ in range(min(CHECK_STEPS, spec.new_tokens) - 1):
            out.append(gen.step(out[-1]))
        return torch.cat(out, dim=1).cpu()

    with torch.inference_mode():
        want = tokens(served.eager)
        try:
            got = tokens(served.module)
        except (InputError, WorkloadError):
            raise
        except Exception as exc:
            raise WorkloadError(
                f"the compiled model failed to generate: {type(exc).__name__}: {first_line(exc)}"
            ) from None
    agreement = float((got[:, 0] == want[:, 0]).double().mean())
    if agreement < MIN_TOKEN_AGREEMENT:
        raise WorkloadError(
            f"the compiled model's first tokens agree with its eager form's in {agreement:.0%} "
            f"of {batch_size} prompts (at least {MIN_TOKEN_AGREEMENT:.0%} required)"
        )
    return agreement
