"""``torch.export`` programs as the deploy layer writes them: a dynamic batch dimension on every
input (:func:`export_program`), exporters kept quiet (:func:`quiet`), and the operator
namespaces a PT2E graph needs registered before one is read back
(:func:`register_quantized_ops`). Reading a ``.pt2`` is ``_safe_load.py``'s job alone."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from typing import Any

from wattwise._inputs import take_rows
from wattwise.deploy._inputs import as_batch

__all__ = ["export_program", "export_program_bytes", "quiet", "register_quantized_ops"]


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Exporters print progress, deprecation notes and, when they fail, whole graphs; a library
    call should not (failures still raise, and we report them in one line)."""
    import logging

    names = (
        "torch.onnx",
        "onnxscript",
        "torch.export",
        "torch._dynamo",
        "torch.fx.experimental.symbolic_shapes",
    )
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


def register_quantized_ops(uses_torchao: bool = False) -> None:
    """Register the operator namespaces a PT2E graph refers to, before deserialising one.

    ``quantized_decomposed`` ops are defined by a torch module that only quantization code
    imports; a fresh process loading a saved int8 program must import it first.
    """
    with contextlib.suppress(ImportError):
        import torch.ao.quantization.fx._decomposed  # noqa: F401
    if uses_torchao:
        with contextlib.suppress(ImportError):
            import torchao.quantization  # noqa: F401


def export_program(model: Any, example_input: Any) -> Any:
    """``torch.export`` ``model`` with a dynamic batch dimension on every input.

    The example is widened to 2 rows because ``torch.export`` specialises a dimension of size 1.
    """
    import torch

    args = take_rows(as_batch(example_input, "example_input"), 2)
    batch = torch.export.Dim("batch")
    shapes = tuple({0: batch} for _ in args)
    with quiet():
        return torch.export.export(model, args, dynamic_shapes=shapes)


def export_program_bytes(model: Any, example_input: Any) -> bytes:
    """:func:`export_program`, saved as the bytes of a ``.pt2`` archive."""
    import torch

    buf = io.BytesIO()
    torch.export.save(export_program(model, example_input), buf)
    return buf.getvalue()
