"""The torch backends: ``eager`` runs the module as is; ``eager_cl`` in channels_last memory
format (what oneDNN and cuDNN convolutions prefer); ``compile`` through ``torch.compile``
(inductor, with weight freezing). ``onnxruntime`` is in ``_ort.py``; the interface and the
registry are in ``_base.py``.

Low precision on the torch backends is autocast (weights stay fp32, matmuls/convs run in
bf16/fp16), the form the project's anchors were measured with and the one that keeps
normalisation layers in fp32. ``int8`` on the torch backends means the model is already a PT2E
quantized graph (``wattwise.Quantize(method="pt2e-int8")``): eager runs its quantize/dequantize
ops as they are (a correctness reference, slow), ``compile`` lowers them to int8 oneDNN kernels,
which only happens with inductor's ``freezing`` on.
"""

from __future__ import annotations

import abc
import os
import shutil
from typing import TYPE_CHECKING, Any, ClassVar

from wattwise._core import Availability
from wattwise.deploy._base import BACKENDS, Backend, Batch, Prepared, cuda_probe, device_type

if TYPE_CHECKING:
    from wattwise.deploy._deployment import Deployment
    from wattwise.deploy._runners import TorchCore

__all__ = ["ChannelsLastBackend", "CompileBackend", "EagerBackend", "is_pt2e_quantized"]


def is_pt2e_quantized(model: Any) -> bool:
    """Whether ``model`` holds a PT2E-quantized FX graph (quantize/dequantize ops in it)."""
    import torch

    if not isinstance(model, torch.nn.Module):
        return False
    for module in model.modules():
        if isinstance(module, torch.fx.GraphModule):
            for node in module.graph.nodes:
                if node.op == "call_function" and getattr(node.target, "namespace", "") in (
                    "quantized_decomposed",
                    "torchao",
                ):
                    return True
    return False


def _autocast_dtype(precision: str) -> Any:
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


class _TorchBackend(Backend):
    """What the torch backends share: their precisions and the rules for them (int8 means a
    PT2E graph, on CPU), and the model moved to the device inside a :class:`TorchCore`."""

    precisions = ("fp32", "bf16", "fp16", "int8")
    channels_last: ClassVar[bool] = False

    def unsupported(self, precision: str, device: str, model: Any = None) -> str | None:
        if why := super().unsupported(precision, device, model):
            return why
        quantized = is_pt2e_quantized(model)
        if precision == "int8" and not quantized:
            return (
                "int8 on the torch backends needs a model already quantized with "
                "wattwise.Quantize(method='pt2e-int8'); or use backend='onnxruntime', which quantizes itself"
            )
        if precision == "int8" and device != "cpu":
            return "PT2E int8 (X86 inductor quantizer) is a CPU path"
        if quantized and precision != "int8":
            return "the model is already PT2E int8-quantized; deploy it with precision='int8'"
        return None

    def prepare(
        self, model: Any, deployment: Deployment, *, example_input: Batch, calibration: list[Batch]
    ) -> Prepared:
        import torch

        from wattwise.deploy._runners import TorchCore

        model = model.to(deployment.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        core = TorchCore(
            model, _autocast_dtype(deployment.precision), device_type(deployment.device)
        )
        return self._runner(core, deployment.device)

    @abc.abstractmethod
    def _runner(self, core: TorchCore, device: str) -> Prepared:
        """The callable that runs ``core`` on ``device``."""


@BACKENDS.register("eager")
class EagerBackend(_TorchBackend):
    """The module as it is, on the device; bf16/fp16 by autocast; int8 for PT2E graphs."""

    name = "eager"

    @classmethod
    def probe(cls, device: str = "cpu") -> Availability:
        cuda = cuda_probe(device)
        return cuda if cuda is not None else Availability(True, "")

    def _runner(self, core: TorchCore, device: str) -> Prepared:
        from wattwise.deploy._runners import TorchRunner

        return Prepared(TorchRunner(core, device=device, channels_last=self.channels_last))


@BACKENDS.register("eager_cl")
class ChannelsLastBackend(EagerBackend):
    """Eager in channels_last (NHWC) memory format, for 4-D (image) inputs."""

    name = "eager_cl"
    channels_last = True


@BACKENDS.register("compile")
class CompileBackend(_TorchBackend):
    """``torch.compile`` with inductor, static shapes, weight freezing.

    On CPU, freezing (weights become constants: folded, pre-packed for oneDNN) is on for every
    precision, since a deployment never trains; it is what turns a PT2E int8 graph into int8
    kernels. On CUDA it adds CUDA graphs (``reduce-overhead``): at the small batches where
    deployment energy is spent, kernel-launch overhead is a large share of each call.
    """

    name = "compile"

    @classmethod
    def probe(cls, device: str = "cpu") -> Availability:
        cuda = cuda_probe(device)
        if cuda is not None and not cuda:
            return cuda
        if cuda is not None:
            import importlib.util

            if importlib.util.find_spec("triton") is None:
                return Availability(
                    False, "torch.compile on CUDA needs triton, which is not installed"
                )
            return Availability(True, "")
        compiler = _cpp_compiler()
        if compiler is None:
            return Availability(
                False,
                "torch.compile on CPU needs a C++ compiler (g++ or clang++; set CXX), none found",
            )
        return Availability(True, f"C++ compiler: {compiler}")

    def _runner(self, core: TorchCore, device: str) -> Prepared:
        import torch
        import torch._inductor

        from wattwise.deploy._runners import TorchRunner

        # Freezing (weights become constants: folded and pre-packed for oneDNN; what lowers a
        # PT2E graph to int8 kernels) is read outside the compiled callable's own options, so
        # the runner sets it globally, scoped to the calls that compile. One compile thread:
        # a pool of worker processes (each importing torch) would compete with the measured
        # process for the cores while it warms up, for little gain on a deployment-sized graph.
        compile_config: dict[str, Any] = {"freezing": True, "compile_threads": 1}
        options: dict[str, Any] = {}
        cudagraphs = device.startswith("cuda")
        if cudagraphs:
            options.update(torch._inductor.list_mode_options("reduce-overhead"))
        # Static shapes: a deployment has one batch size, and static kernels are the fast ones.
        compiled = torch.compile(core, options=options or None, dynamic=False)
        notes = ("compiled lazily: the first call of each input shape compiles (seconds)",)
        return Prepared(
            TorchRunner(
                core,
                device=device,
                compiled=compiled,
                compile_config=compile_config,
                clone_outputs=cudagraphs,
            ),
            notes=notes,
        )


def _cpp_compiler() -> str | None:
    candidates = [os.environ.get("CXX", ""), "g++", "clang++", "c++"]
    for name in candidates:
        if name and shutil.which(name):
            return name
    return None
