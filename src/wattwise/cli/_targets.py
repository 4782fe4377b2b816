"""TARGET, as the CLI takes it: a built-in model name, ``package.module:factory``, or a file.

:func:`resolve_target` turns the string into a picklable zero-argument model factory (the
harness sends it to its measuring child process) and an example input of batch size 1: the
model's own ``example_input`` as given (a tensor, tuple or dict, dtypes and values kept), else
one made from a shape: random floats, or with ``--input-dtype int64`` token ids below the
model's smallest ``nn.Embedding`` vocabulary.

Files are loaded without running code from them: ``.pt2`` programs and exported deployment
directories go through ``wattwise.deploy._safe_load`` (see ``docs/artifacts.md``), and
``.pt``/``.pth`` go through ``torch.load(weights_only=True)``,
which can only hold tensors, so a pickled ``nn.Module`` is refused with the one-line recipe to
convert it. ``module:factory`` imports and runs the user's code, as the user asked.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import re
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wattwise._inputs import batch_size_of, check_input, describe, detach_cpu, take_rows
from wattwise.errors import InputError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "INPUT_SOURCES",
    "KINDS",
    "ResolvedTarget",
    "build_task_model",
    "builtin_names",
    "parse_batch_sizes",
    "parse_dtype",
    "parse_shape",
    "resolve_target",
]

KINDS = ("builtin", "factory", "file")
# Where a target's example input came from: made from a shape (--input-shape, or the model's
# default_input_size, or a program's signature), the model's own example_input, a task's, or
# the one an exported deployment stored.
INPUT_SOURCES = ("shape", "model", "task", "artifact")
DTYPES = {
    "float32": "float32",
    "float": "float32",
    "float16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "float64": "float64",
    "int64": "int64",
    "long": "int64",
    "int32": "int32",
    "int": "int32",
}
DIGITS_NAMES = ("digits_cnn", "digits")  # "digits" is an alias: the task's own model
FILE_SUFFIXES = (".pt2", ".pt", ".pth")
IMAGENET_CLASSES = 1000  # built-in architectures are measured at their ImageNet size
_MAX_INPUT_ELEMENTS = 2**30  # 4 GiB of float32 for one item: surely a typo
_SHAPE_SPLIT = re.compile(r"[,x×\s]+")
_EXPORT_RECIPE = (
    "torch.export.save(torch.export.export(model.eval(), (x,)), 'model.pt2') "
    "where x is an example input"
)
_DYNAMIC_RECIPE = (
    "export with a batch of 2 and dynamic_shapes=({0: torch.export.Dim.DYNAMIC},) "
    "to measure other batch sizes"
)


@dataclasses.dataclass(frozen=True)
class ResolvedTarget:
    """A model the harness can measure.

    Attributes:
        name: what the user typed, normalised (``"digits_cnn"``, ``"pkg.mod:build"``, a path).
        factory: a picklable zero-argument callable that builds a fresh ``nn.Module``.
        example_input: one input of batch size 1, on the CPU: a tensor, a tuple of tensors
            or a dict of named tensors (see :mod:`wattwise._inputs`).
        kind: ``"builtin"``, ``"factory"`` or ``"file"``.
        fixed_batch_size: set for exported programs whose batch dimension is static: only
            that batch size runs (``example_input`` still has batch 1).
        input_source: where ``example_input`` came from, one of :data:`INPUT_SOURCES`; error
            messages say which option would change it.
    """

    name: str
    factory: Callable[[], nn.Module]
    example_input: Any
    kind: str
    fixed_batch_size: int | None = None
    input_source: str = "shape"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InputError("ResolvedTarget.name must be a non-empty string")
        if not callable(self.factory):
            raise InputError("ResolvedTarget.factory must be a zero-argument callable")
        check_input(self.example_input, "ResolvedTarget.example_input")
        if batch_size_of(self.example_input) != 1:
            raise InputError(
                "ResolvedTarget.example_input must have batch size 1, got "
                f"{describe(self.example_input)}"
            )
        if self.input_source not in INPUT_SOURCES:
            raise InputError(
                f"ResolvedTarget.input_source must be one of {', '.join(INPUT_SOURCES)}, "
                f"got {self.input_source!r}"
            )
        if self.kind not in KINDS:
            raise InputError(
                f"ResolvedTarget.kind must be one of {', '.join(KINDS)}, got {self.kind!r}"
            )
        if self.fixed_batch_size is not None and self.fixed_batch_size < 1:
            raise InputError(
                f"ResolvedTarget.fixed_batch_size must be >= 1, got {self.fixed_batch_size}"
            )

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """Shape of :attr:`example_input` (batch size 1 first); None for a tuple or a dict."""
        import torch

        if not isinstance(self.example_input, torch.Tensor):
            return None
        return tuple(int(d) for d in self.example_input.shape)

    @property
    def input_text(self) -> str:
        """:attr:`example_input` on one line: names, shapes and dtypes."""
        return describe(self.example_input)


def parse_shape(text: str) -> tuple[int, ...]:
    """Read an input shape like ``"1,3,224,224"`` (``x`` and spaces also separate).

    The first dimension is the batch and must be 1; batch sizes are a separate option.

    Raises:
        InputError: not a list of positive integers, or a batch dimension other than 1.

    Example:
        >>> parse_shape("1,3,224,224")
        (1, 3, 224, 224)
    """
    if not isinstance(text, str):
        raise InputError(f"--input-shape must be a string like 1,3,224,224, got {text!r}")
    body = text.strip().strip("()[]").strip()
    parts = [p for p in _SHAPE_SPLIT.split(body) if p]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if not shape:
        raise InputError(f"--input-shape {text!r}: expected integers like 1,3,224,224")
    return check_shape(shape, what=f"--input-shape {text!r}")


def check_shape(shape: tuple[int, ...], *, what: str = "input_shape") -> tuple[int, ...]:
    """Validate a batch-1 input shape; returns it as a tuple of ints."""
    if isinstance(shape, str) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in shape
    ):
        raise InputError(f"{what}: expected a tuple of integers like (1, 3, 224, 224)")
    shape = tuple(shape)
    if len(shape) < 2:
        raise InputError(f"{what}: needs a batch dimension and at least one more, e.g. 1,3,224,224")
    if any(d < 1 for d in shape):
        raise InputError(f"{what}: every dimension must be >= 1")
    if shape[0] != 1:
        raise InputError(
            f"{what}: the first dimension is the batch and must be 1 (use --batch-size for more)"
        )
    if math.prod(shape) > _MAX_INPUT_ELEMENTS:
        raise InputError(f"{what}: {math.prod(shape)} elements per item is too large")
    return shape


def parse_dtype(text: str) -> str:
    """Read ``--input-dtype``: ``int64`` (token ids), ``float32``, ... as torch names them.

    Raises:
        InputError: not one of :data:`DTYPES`.

    Example:
        >>> parse_dtype("long")
        'int64'
    """
    name = str(text).strip().lower().removeprefix("torch.")
    if name not in DTYPES:
        choices = ", ".join(dict.fromkeys(DTYPES.values()))
        raise InputError(f"--input-dtype {text!r}: expected one of {choices}")
    return DTYPES[name]


def parse_batch_sizes(text: str) -> list[int]:
    """Read ``"1,32"`` into ``[1, 32]`` (order kept, duplicates dropped).

    Raises:
        InputError: empty, not integers, or a size below 1.
    """
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        sizes = []
    if not sizes or any(s < 1 for s in sizes):
        raise InputError(f"--batch-size {text!r}: expected positive integers like 1,32")
    return list(dict.fromkeys(sizes))


def builtin_names() -> list[str]:
    """Built-in TARGET names: ``digits_cnn`` (alias ``digits``) and every architecture."""
    return [*DIGITS_NAMES, *_arch_names()]


def resolve_target(
    target: str,
    *,
    input_shape: tuple[int, ...] | None = None,
    input_dtype: str | None = None,
    example_input: Any = None,
) -> ResolvedTarget:
    """Resolve a TARGET string to a model factory and an example input.

    Args:
        target: a built-in name (:func:`builtin_names`), ``package.module:factory`` (a
            zero-argument callable returning an ``nn.Module``; this runs the user's code), or
            a path to a ``.pt2`` file written by ``torch.export.save``.
        input_shape: the example input's shape, batch 1 first; needed for a factory whose
            model has neither ``example_input`` nor ``default_input_size``; for other targets
            it overrides their own input.
        input_dtype: the dtype of an input made from a shape (:func:`parse_dtype`); an
            integer dtype draws token ids in ``[0, vocab)``, ``vocab`` the smallest
            ``nn.Embedding.num_embeddings`` in the model. Refused where the target brings its
            own example input (it is used as given).
        example_input: an input to use as given instead (a task's); its first row is kept.

    Raises:
        InputError: an unknown name, a factory or file that cannot be used (the message says
            what to do instead), or a bad ``input_shape``.
        WorkloadError: the user's factory raised.

    Example:
        >>> t = resolve_target("digits_cnn")
        >>> t.input_shape, t.kind
        ((1, 1, 8, 8), 'builtin')
    """
    if not isinstance(target, str) or not target.strip():
        raise InputError(f"TARGET must be a non-empty string, got {target!r}")
    target = target.strip()
    shape = check_shape(tuple(input_shape)) if input_shape is not None else None
    dtype = parse_dtype(input_dtype) if input_dtype is not None else None
    if example_input is not None:
        if shape is not None or dtype is not None:
            raise InputError(
                "--input-shape and --input-dtype make an input from a shape; a task's example "
                "input is used as given"
            )
        check_input(example_input, "the task's example_input")
        given: Any = take_rows(detach_cpu(example_input), 1)
        resolved = _resolve(target, None, None, given_input=True)
        return dataclasses.replace(resolved, example_input=given, input_source="task")
    return _resolve(target, shape, dtype)


def _resolve(
    target: str, shape: tuple[int, ...] | None, dtype: str | None, *, given_input: bool = False
) -> ResolvedTarget:
    """:func:`resolve_target` on a checked string; ``given_input``: the caller brings the
    input, so a factory without one of its own is fine (a placeholder stands in)."""
    from wattwise.tasks._builtin import is_spec

    if target in DIGITS_NAMES:
        return _digits_target(shape, dtype)
    arch_names = _arch_names()
    if target in arch_names:
        return _arch_target(target, shape, dtype)
    if target in _task_names():
        return _task_target(target, shape, dtype)
    path = Path(target)
    if is_spec(target) and not path.exists():
        return _factory_target(target, shape, dtype, given_input=given_input)
    if dtype is not None and path.suffix.lower() != ".pt2":
        raise InputError(
            f"--input-dtype applies to inputs made from a shape; TARGET '{path}' brings its own"
        )
    if path.suffix.lower() in (*FILE_SUFFIXES, ".onnx") or path.exists() or "/" in target:
        return _file_target(path, shape, dtype)
    tasks = [name for name in _task_names() if name not in DIGITS_NAMES]
    close = difflib.get_close_matches(target, [*builtin_names(), *tasks], n=3, cutoff=0.5)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise InputError(
        f"unknown TARGET {target!r}{hint}; use a built-in model "
        f"({', '.join(builtin_names())}), a built-in task's model ({', '.join(tasks)}), "
        "package.module:factory, or a .pt2 file"
    )


def _example(
    shape: tuple[int, ...], dtype: str | None = None, model: Callable[[], Any] | None = None
) -> torch.Tensor:
    """An input made from a shape: random floats, or for an integer ``dtype`` token ids that
    every ``nn.Embedding`` of the model (built by ``model`` only then) can look up."""
    import torch

    # Fixed seed: the same TARGET measures the same input every time.
    gen = torch.Generator().manual_seed(0)
    torch_dtype = getattr(torch, dtype or "float32")
    if torch_dtype.is_floating_point:
        return torch.randn(shape, generator=gen).to(torch_dtype)
    vocab = _smallest_vocab(model() if model is not None else None)
    if vocab is None:
        raise InputError(
            f"--input-dtype {dtype}: the model has no nn.Embedding to bound the token ids; "
            "give the model an example_input attribute instead"
        )
    return torch.randint(0, vocab, shape, generator=gen, dtype=torch_dtype)


def _smallest_vocab(model: Any) -> int | None:
    """The smallest ``num_embeddings`` of the model's ``nn.Embedding`` layers: ids below it
    are valid for all of them."""
    from torch import nn

    if not isinstance(model, nn.Module):
        return None
    sizes = [m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding)]
    return min(sizes) if sizes else None


# --- built-in models ---------------------------------------------------------------------


def _digits_target(shape: tuple[int, ...] | None, dtype: str | None) -> ResolvedTarget:
    from wattwise.tasks.digits import DigitsCNN

    factory = functools.partial(DigitsCNN)
    return ResolvedTarget(
        name="digits_cnn",
        factory=factory,
        example_input=_example(shape or (1, 1, 8, 8), dtype, factory),
        kind="builtin",
    )


def _arch_names() -> list[str]:
    try:
        from wattwise import archs

        return list(archs.list())
    except (ImportError, AttributeError):  # the archs package is optional in a partial install
        return []


def _arch_target(name: str, shape: tuple[int, ...] | None, dtype: str | None) -> ResolvedTarget:
    from wattwise import archs

    factory = functools.partial(archs.create, name, num_classes=IMAGENET_CLASSES)
    if shape is None:
        size = _arch_input_size(name)
        shape = (1, *size) if size is not None else _model_input_shape(factory(), name)
    return ResolvedTarget(
        name=name, factory=factory, example_input=_example(shape, dtype, factory), kind="builtin"
    )


def _task_names() -> list[str]:
    from wattwise.tasks import names

    return names()


def _task_target(name: str, shape: tuple[int, ...] | None, dtype: str | None) -> ResolvedTarget:
    """A built-in task's own (untrained) model, on the task's example input unless a shape
    is given: ``wattwise measure tinylm --generate`` is ``measure --task tinylm``."""
    from wattwise.tasks import load_task

    factory = functools.partial(build_task_model, name)
    if shape is not None or dtype is not None:
        example = _example(shape or _model_input_shape(factory(), name), dtype, factory)
        return ResolvedTarget(name=name, factory=factory, example_input=example, kind="builtin")
    given = take_rows(detach_cpu(load_task(name).example_input), 1)
    return ResolvedTarget(
        name=name, factory=factory, example_input=given, kind="builtin", input_source="task"
    )


def _arch_input_size(name: str) -> tuple[int, ...] | None:
    """The architecture's input size from ``archs.info`` without building it, if it says."""
    from wattwise import archs

    try:
        info = archs.info(name)
    except Exception:  # info is a convenience; building the model below always works
        return None
    for key in ("default_input_size", "input_size"):
        value = info.get(key) if isinstance(info, dict) else getattr(info, key, None)
        if isinstance(value, tuple | list) and value and all(isinstance(d, int) for d in value):
            return tuple(value)
    return None


def _model_input_shape(model: Any, name: str) -> tuple[int, ...]:
    """Input shape from a built model's ``default_input_size``."""
    size = getattr(model, "default_input_size", None)
    if isinstance(size, tuple | list) and size and all(isinstance(d, int) for d in size):
        return check_shape((1, *size), what=f"{name}: default_input_size")
    raise InputError(
        f"TARGET {name!r}: the model has no example_input or default_input_size; "
        "pass --input-shape for TARGET (e.g. --input-shape 1,3,224,224, and --input-dtype "
        "int64 for token ids)"
    )


def _own_example(model: Any, name: str) -> Any:
    """The model's ``example_input`` attribute, first row, on the CPU; None if it has none."""
    example = getattr(model, "example_input", None)
    if example is None:
        return None
    check_input(example, f"TARGET {name!r}: example_input")
    return take_rows(detach_cpu(example), 1)


# --- package.module:factory --------------------------------------------------------------


def build_from_spec(spec: str) -> nn.Module:
    """Import ``package.module:attr`` and build the model: call ``attr`` or take it as is.

    Module-level (and given only a string) so that it pickles: the measuring child imports
    the user's module itself, so lambdas and closures in the user's code are fine.
    """
    from torch import nn

    from wattwise.tasks._builtin import call_factory, import_spec

    obj = import_spec(spec, what="TARGET")
    if isinstance(obj, nn.Module):
        return obj
    return call_factory(obj, spec, what="TARGET", returns=nn.Module, expected="a torch nn.Module")


def _factory_target(
    spec: str, shape: tuple[int, ...] | None, dtype: str | None, *, given_input: bool = False
) -> ResolvedTarget:
    """The user's model, measured on (in this order): an input made from ``--input-shape``,
    the caller's (``given_input``: a placeholder here), the model's own ``example_input`` as
    given, or an input made from its ``default_input_size``."""
    factory = functools.partial(build_from_spec, spec)
    model = factory()  # build once here: a bad factory fails now, in one line, not in the child
    own = None if shape is not None or given_input else _own_example(model, spec)
    if given_input:
        example, source = _example((1, 1)), "task"  # replaced by the caller
    elif own is not None:
        if dtype is not None:
            raise InputError(
                f"--input-dtype applies to inputs made from a shape; {spec} has its own "
                f"example_input ({describe(own)}), used as given (or pass --input-shape too)"
            )
        example, source = own, "model"
    else:
        shape = shape or _model_input_shape(model, spec)
        example, source = _example(shape, dtype, lambda: model), "shape"
    return ResolvedTarget(
        name=spec, factory=factory, example_input=example, kind="factory", input_source=source
    )


def build_task_model(spec: str) -> nn.Module:
    """A fresh, untrained model from a task's factory (picklable by the task's spec, for
    ``wattwise measure --task`` without a TARGET: the child loads the task itself)."""
    from wattwise.tasks import load_task

    return load_task(spec).model_factory()


# --- files -------------------------------------------------------------------------------


def load_exported(path: str) -> nn.Module:
    """The module of a ``torch.export.save``'d program (picklable by path, for the child)."""
    from torch import nn

    class ExportedModule(nn.Module):
        """An exported graph behind a module whose ``train()``/``eval()`` are accepted.

        ``ExportedProgram.module()`` refuses ``eval()`` (its train/eval behaviour was fixed at
        export time), but the harness and callers put every model in eval mode first.
        """

        def __init__(self, graph: nn.Module) -> None:
            super().__init__()
            self.graph = graph

        def train(self, mode: bool = True) -> ExportedModule:
            self.training = mode  # the graph's own mode was fixed when it was exported
            return self

        def forward(self, *args: Any) -> Any:
            return self.graph(*args)

    return ExportedModule(_load_program(Path(path)).module())


def _load_program(path: Path) -> Any:
    # The deploy layer's loader: it refuses anything in the archive that would run code.
    from wattwise.deploy._safe_load import load_program

    return load_program(path, where=f"TARGET '{path}'")


def _file_target(
    path: Path, shape: tuple[int, ...] | None, dtype: str | None = None
) -> ResolvedTarget:
    suffix = path.suffix.lower()
    if not path.exists():
        raise InputError(f"TARGET '{path}': no such file")
    if path.is_dir():
        return _artifact_target(path, shape)
    if suffix not in FILE_SUFFIXES:
        raise InputError(
            f"TARGET '{path}': {suffix or 'this'} files are not supported; save the model with "
            f"{_EXPORT_RECIPE}"
        )
    try:
        with path.open("rb") as f:
            f.read(1)
    except OSError as exc:
        raise InputError(f"TARGET '{path}': cannot read it ({exc.strerror or exc})") from None
    if suffix == ".pt2":
        return _pt2_target(path, shape, dtype)
    _refuse_checkpoint(path)
    raise AssertionError("unreachable")  # _refuse_checkpoint always raises


def load_artifact_callable(path: str) -> Any:
    """Zero-argument factory for an exported deployment directory (picklable by path)."""
    from wattwise.deploy import load_artifact

    return load_artifact(path).callable


def _artifact_target(path: Path, shape: tuple[int, ...] | None) -> ResolvedTarget:
    """A directory written by ``wattwise.deploy.export_deployment`` (or ``wattwise optimize``)."""
    import torch

    from wattwise.deploy import load_artifact

    if not (path / "deployment.json").exists():
        raise InputError(
            f"TARGET '{path}' is a directory without deployment.json; measure takes an exported "
            "deployment directory or a .pt2 file"
        )
    artifact = load_artifact(path)  # checksums, hostile content and stored outputs checked
    example = artifact.example_input
    factory = functools.partial(load_artifact_callable, str(path.resolve()))
    if shape is None or (
        isinstance(example, torch.Tensor) and tuple(shape) == (1, *example.shape[1:])
    ):
        # The stored input, as given (a tuple or a dict of named inputs too).
        return ResolvedTarget(
            name=str(path),
            factory=factory,
            example_input=take_rows(detach_cpu(example), 1),
            kind="file",
            input_source="artifact",
        )
    if not isinstance(example, torch.Tensor):
        raise InputError(
            f"TARGET '{path}': --input-shape sets one tensor, and the deployment takes "
            f"{describe(example)}"
        )
    return ResolvedTarget(
        name=str(path),
        factory=factory,
        example_input=torch.zeros(shape, dtype=example.dtype),
        kind="file",
    )


def _pt2_target(path: Path, shape: tuple[int, ...] | None, dtype: str | None) -> ResolvedTarget:
    import torch

    program = _load_program(path)
    user_inputs = list(program.graph_signature.user_inputs)
    if len(user_inputs) != 1:
        raise InputError(
            f"TARGET '{path}': the program takes {len(user_inputs)} inputs; measure takes one tensor"
        )
    fixed: int | None = None
    example_shape: tuple[int, ...] | None = None
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name == user_inputs[0]:
            val = node.meta.get("val")
            if isinstance(val, torch.Tensor) and val.dim() >= 1:
                dims = tuple(val.shape)
                if isinstance(dims[0], int):
                    fixed = dims[0]
                if all(isinstance(d, int) for d in dims[1:]):
                    example_shape = (1, *dims[1:])
    if example_shape is None:
        examples = getattr(program, "example_inputs", None)
        args: tuple[Any, ...] = tuple(examples[0]) if examples else ()
        if len(args) == 1 and isinstance(args[0], torch.Tensor) and args[0].dim() >= 1:
            example_shape = (1, *args[0].shape[1:])
    if shape is None:
        if example_shape is None:
            raise InputError(f"pass --input-shape for TARGET '{path}' (its input shape is dynamic)")
        shape = check_shape(tuple(int(d) for d in example_shape), what=f"TARGET '{path}'")
    factory = functools.partial(load_exported, str(path.resolve()))
    return ResolvedTarget(
        name=str(path),
        factory=factory,
        example_input=_example(shape, dtype, factory),
        kind="file",
        fixed_batch_size=fixed,
    )


def _refuse_checkpoint(path: Path) -> None:
    """Explain why a ``.pt``/``.pth`` file cannot be measured, and how to make one that can."""
    import torch

    from wattwise._core import one_line

    if not zipfile.is_zipfile(path):
        raise InputError(f"TARGET '{path}': not a file torch.save wrote (it is not a zip archive)")
    try:
        with warnings.catch_warnings():  # torch warns about TorchScript before refusing it
            warnings.simplefilter("ignore")
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        text = str(exc)
        if "TorchScript" in text:
            raise InputError(
                f"TARGET '{path}' is a TorchScript archive, which measure does not take; "
                f"convert it once: {_EXPORT_RECIPE}"
            ) from None
        if "Weights only load failed" in text or "Unsupported global" in text:
            raise InputError(
                f"TARGET '{path}' holds a pickled model, which wattwise will not unpickle "
                f"(that can run arbitrary code); where you trust it, convert it once: {_EXPORT_RECIPE}"
            ) from None
        raise InputError(f"TARGET '{path}': cannot read it: {one_line(exc)}") from None
    if isinstance(obj, dict):
        raise InputError(
            f"TARGET '{path}' is a state dict: it has weights but no architecture; pass "
            "package.module:factory that builds the model and loads them, or a .pt2 file"
        )
    raise InputError(
        f"TARGET '{path}' holds a {type(obj).__name__}, not a model; pass a .pt2 file "
        f"({_EXPORT_RECIPE})"
    )
