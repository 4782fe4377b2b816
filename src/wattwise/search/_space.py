"""The candidate space: model recipe × deployment (backend/precision) × batch size × threads.

A candidate is four categorical choices, which is all the Optuna study stores as its params:

* ``model``: a named :class:`ModelChoice`: the float model to start from, built by a recipe of
  compression passes from the trained baseline (``base``: no pass; ``prune30``: 30% of the
  channels removed and fine-tuned; ``distill-w0.5``: a half-width student trained against the
  baseline). Building one is the expensive part (training), so each is built once per study
  and machine, cached on disk, and tried under many deployments.
* ``deployment``: ``backend/precision`` (``onnxruntime/int8``, ``compile/fp32``, ...). int8 on
  the torch backends adds a ``Quantize(method="pt2e-int8")`` pass to the recipe (cheap:
  calibration only, so it is not cached); ONNX Runtime quantizes by itself.
* ``batch_size``: items per call; the offline scenario's big lever, since per-call overhead
  is shared by every item of a batch.
* ``threads``: intra-op threads, ``0`` meaning every core the process may use.

Only valid combinations exist in the space (one ``deployment`` choice instead of independent
backend and precision choices), so the sampler never wastes a trial on an impossible one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from wattwise._core import SCENARIOS
from wattwise._inputs import is_token_input
from wattwise.errors import InputError
from wattwise.results import DEPLOYMENT_KEYS

if TYPE_CHECKING:
    from wattwise.tasks import Task

__all__ = [
    "SCENARIOS",
    "Candidate",
    "ModelChoice",
    "SearchSpace",
    "default_space",
    "load_space",
    "seed_params",
]

PARAM_NAMES = ("model", "deployment", "batch_size", "threads")
# The GPU power limit's param, present only in spaces that search it.
POWER_LIMIT = "power_limit_w"
# Torch backends run int8 only on a PT2E-quantized graph; this pass makes one.
PT2E_INT8 = {"type": "quantize", "method": "pt2e-int8"}
TORCH_BACKENDS = ("eager", "eager_cl", "compile")


def _jsonable(value: Any) -> Any:
    """Round-trip through JSON: tuples become lists, and anything not JSON is refused early."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise InputError(f"search space values must be JSON data: {exc}") from None


@dataclasses.dataclass(frozen=True)
class ModelChoice:
    """A named way to get the float model a candidate deploys.

    Attributes:
        name: the study's categorical value (``"base"``, ``"prune50"``, ...).
        passes: the compression recipe as pass dicts (``{"type": "prune", "ratio": 0.5, ...}``)
            applied to the trained baseline; empty for the baseline itself.
    """

    name: str
    passes: tuple[dict[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or "/" in self.name:
            raise InputError(
                f"ModelChoice.name must be a non-empty name without '/', got {self.name!r}"
            )
        if isinstance(self.passes, Mapping) or not isinstance(self.passes, Sequence):
            raise InputError(f"ModelChoice.passes must be a list of pass dicts ({self.name})")
        passes = tuple(_jsonable(dict(p)) if isinstance(p, Mapping) else p for p in self.passes)
        for i, p in enumerate(passes):
            if not isinstance(p, dict) or not isinstance(p.get("type"), str):
                raise InputError(
                    f"ModelChoice.passes[{i}] of {self.name!r} must be a mapping with a 'type'"
                )
        object.__setattr__(self, "passes", passes)

    @property
    def student(self) -> str | None:
        """The student architecture if the recipe replaces the model (``"task"`` = the task's
        own factory with other kwargs), else ``None``."""
        label = None
        for p in self.passes:
            if p.get("type") == "distill" and p.get("student"):
                kwargs = p.get("student_kwargs") or {}
                extra = ",".join(
                    f"{k}={v}" for k, v in sorted(kwargs.items()) if k in ("width", "depth")
                )
                label = f"{p['student']}({extra})" if extra else str(p["student"])
        return label

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passes": [dict(p) for p in self.passes]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelChoice:
        if not isinstance(data, Mapping) or "name" not in data:
            raise InputError(f"a model choice must be a mapping with a 'name', got {data!r}")
        return cls(name=data["name"], passes=tuple(data.get("passes") or ()))


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """Every choice the search may combine; stored with the study so workers rebuild it.

    Attributes:
        models: the model choices (recipes from the baseline).
        deployments: ``"backend/precision"`` strings, e.g. ``"onnxruntime/int8"``.
        batch_sizes: items per call (the online scenario allows only 1).
        threads: intra-op threads; 0 = every core the process may use.

    Example:
        >>> space = SearchSpace(models=(ModelChoice("base"),), deployments=("eager/fp32",),
        ...                     batch_sizes=(1, 32), threads=(0,))
        >>> space.size
        2
    """

    models: tuple[ModelChoice, ...]
    deployments: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    threads: tuple[int, ...] = (0,)
    power_limits_w: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        from wattwise.deploy import BACKENDS, PRECISIONS
        from wattwise.deploy._generation import GENERATION_BACKENDS, GENERATION_PRECISIONS

        models = tuple(
            m if isinstance(m, ModelChoice) else ModelChoice.from_dict(m) for m in self.models
        )
        if not models:
            raise InputError("SearchSpace.models must not be empty")
        names = [m.name for m in models]
        if len(set(names)) != len(names):
            raise InputError(f"SearchSpace.models has duplicate names: {names}")
        object.__setattr__(self, "models", models)
        deployments = tuple(self.deployments)
        if not deployments:
            raise InputError("SearchSpace.deployments must not be empty")
        for dep in deployments:
            backend, _, precision = str(dep).partition("/")
            served = backend in BACKENDS and precision in PRECISIONS
            generates = backend in GENERATION_BACKENDS and precision in GENERATION_PRECISIONS
            if not (served or generates):
                raise InputError(
                    f"SearchSpace.deployments: {dep!r} is not 'backend/precision' with a backend in "
                    f"{', '.join(BACKENDS.names())} and a precision in {', '.join(PRECISIONS)}, "
                    f"nor, for a generative task, one of {', '.join(GENERATION_BACKENDS)} with "
                    f"one of {', '.join(GENERATION_PRECISIONS)}"
                )
        if len(set(deployments)) != len(deployments):
            raise InputError("SearchSpace.deployments has duplicates")
        object.__setattr__(self, "deployments", deployments)
        for field, low in (("batch_sizes", 1), ("threads", 0)):
            values = tuple(getattr(self, field))
            if not values or any(
                isinstance(v, bool) or not isinstance(v, int) or v < low for v in values
            ):
                raise InputError(
                    f"SearchSpace.{field} must be a non-empty list of integers >= {low}, got {values!r}"
                )
            if len(set(values)) != len(values):
                raise InputError(f"SearchSpace.{field} has duplicates: {values!r}")
            object.__setattr__(self, field, values)
        limits = tuple(self.power_limits_w)
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in limits):
            raise InputError(
                f"SearchSpace.power_limits_w must be a list of whole watts >= 1, got {limits!r}"
            )
        if len(set(limits)) != len(limits):
            raise InputError(f"SearchSpace.power_limits_w has duplicates: {limits!r}")
        object.__setattr__(self, "power_limits_w", limits)

    @property
    def size(self) -> int:
        """How many distinct candidates the space holds."""
        n = len(self.models) * len(self.deployments) * len(self.batch_sizes) * len(self.threads)
        return n * max(1, len(self.power_limits_w))

    def model(self, name: str) -> ModelChoice:
        for m in self.models:
            if m.name == name:
                return m
        raise InputError(
            f"model choice {name!r} is not in this search space ({', '.join(m.name for m in self.models)})"
        )

    def choices(self) -> dict[str, tuple[Any, ...]]:
        """The categorical choices per Optuna param name."""
        choices: dict[str, tuple[Any, ...]] = {
            "model": tuple(m.name for m in self.models),
            "deployment": self.deployments,
            "batch_size": self.batch_sizes,
            "threads": self.threads,
        }
        if self.power_limits_w:  # a GPU's: a param only where the space has the choice
            choices[POWER_LIMIT] = self.power_limits_w
        return choices

    def contains(self, params: Mapping[str, Any]) -> bool:
        choices = self.choices()
        return set(params) == set(choices) and all(params[k] in choices[k] for k in choices)

    def to_dict(self) -> dict[str, Any]:
        # Without power limits the key is left out: a study's stored space (and its
        # fingerprint) stays what it was before the choice existed.
        return {
            "models": [m.to_dict() for m in self.models],
            "deployments": list(self.deployments),
            "batch_sizes": list(self.batch_sizes),
            "threads": list(self.threads),
            **({"power_limits_w": list(self.power_limits_w)} if self.power_limits_w else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchSpace:
        if not isinstance(data, Mapping):
            raise InputError(f"a search space must be a mapping, got {type(data).__name__}")
        try:
            return cls(
                models=tuple(ModelChoice.from_dict(m) for m in data["models"]),
                deployments=tuple(data["deployments"]),
                batch_sizes=tuple(data["batch_sizes"]),
                threads=tuple(data.get("threads") or (0,)),
                power_limits_w=tuple(data.get("power_limits_w") or ()),
            )
        except KeyError as exc:
            raise InputError(f"search space is missing {exc}") from None

    def fingerprint(self) -> str:
        """A short hash of the space: a study's space must not change under it."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One point of the space, ready to build: the model choice and the deployment.

    Attributes:
        model: the :class:`ModelChoice`.
        backend, precision, batch_size: the deployment.
        threads: intra-op threads, ``None`` = every allowed core.
        device: where it runs and is measured.
    """

    model: ModelChoice
    backend: str
    precision: str
    batch_size: int
    threads: int | None
    device: str = "cpu"
    power_limit_w: int | None = None

    @classmethod
    def from_params(
        cls, space: SearchSpace, params: Mapping[str, Any], device: str = "cpu"
    ) -> Candidate:
        if not space.contains(params):
            raise InputError(f"trial params {dict(params)!r} are not in the study's search space")
        backend, _, precision = str(params["deployment"]).partition("/")
        threads = int(params["threads"])
        return cls(
            model=space.model(str(params["model"])),
            backend=backend,
            precision=precision,
            batch_size=int(params["batch_size"]),
            threads=threads or None,
            device=device,
            power_limit_w=int(params[POWER_LIMIT]) if POWER_LIMIT in params else None,
        )

    @property
    def quantize_passes(self) -> tuple[dict[str, Any], ...]:
        """Passes applied after the cached model, in the trial itself (cheap ones)."""
        if self.precision == "int8" and self.backend in TORCH_BACKENDS:
            return (dict(PT2E_INT8),)
        return ()

    @property
    def recipe(self) -> list[dict[str, Any]]:
        """The full recipe: the model choice's passes, then any quantization pass."""
        return [dict(p) for p in self.model.passes + self.quantize_passes]

    @property
    def deployment(self) -> dict[str, Any]:
        limit = {POWER_LIMIT: self.power_limit_w} if self.power_limit_w is not None else {}
        return {**{k: getattr(self, k) for k in DEPLOYMENT_KEYS}, **limit}

    @property
    def label(self) -> str:
        threads = f" t{self.threads}" if self.threads else ""
        limit = f" {self.power_limit_w}W" if self.power_limit_w is not None else ""
        return (
            f"{self.model.name} {self.backend}/{self.precision} b{self.batch_size}{threads}{limit}"
        )


def _accepts_width(factory: Any) -> bool:
    return _accepts(factory, "width")


def _accepts(factory: Any, name: str) -> bool:
    """Whether ``factory(name=...)`` is accepted (``width``, ``depth``: so a narrower or
    shallower copy of the task's own model can be a distillation student)."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return False
    return name in sig.parameters or any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())


def _allowed_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_space(task: Task, scenario: str = "offline", device: str = "cpu") -> SearchSpace:
    """The space the default search explores for ``task``.

    Models: the baseline, 30% and 50% channel pruning with fine-tuning, and a distilled
    student: half the task model's width when its factory takes ``width`` (or a MobileNetV3
    for an image classification with known classes), else, for a model with a stack of
    repeated layers (a transformer), half its layers initialised from the teacher's.
    Deployments: what the backends can run on ``device`` here (``wattwise doctor`` lists why
    one cannot), with ONNX Runtime's dynamic int8 for token inputs. Offline batches 1 to 256;
    online batch 1.
    """
    if scenario not in SCENARIOS:
        raise InputError(f"scenario must be one of {', '.join(SCENARIOS)}, got {scenario!r}")
    if task.generate is not None:
        return _generation_space(task, scenario, device)
    # Fine-tuning budgets follow the task's own training length: pruning keeps the learned
    # weights and needs a fraction of it; a student starts from scratch and needs all of it.
    epochs = max(1, int(task.epochs))
    # Sensitivity-driven ratios per layer group at 50%: sensitive groups keep more channels.
    prune50 = {
        "type": "prune",
        "ratio": 0.5,
        "sensitivity": True,
        "finetune_epochs": max(2, epochs // 3),
    }
    models = [
        ModelChoice("base"),
        ModelChoice(
            "prune30",
            ({"type": "prune", "ratio": 0.3, "finetune_epochs": max(1, epochs // 5)},),
        ),
        ModelChoice("prune50", (prune50,)),
    ]
    student = _student_pass(task, epochs)
    if student is not None and student["student"] == "layers":
        models.append(ModelChoice("distill-layers0.5", (student,)))
        # A third of the layers too: on minilm-topics the half-depth student (three layers)
        # kept its accuracy with room to spare (0.865 against the baseline's 0.823) but saved
        # only 2.89x at batch 256 with dynamic int8, against the 3x asked of it.
        third = {**student, "student_kwargs": {"keep": 0.34}}
        models.append(ModelChoice("distill-layers0.34", (third,)))
    elif student is not None:
        models.append(ModelChoice("distill-w0.5", (student,)))
        # Chained: the student, then pruned by sensitivity and fine-tuned (its build starts
        # from the cached student), and a student a quarter as wide.
        prune30 = {**prune50, "ratio": 0.3, "finetune_epochs": max(1, epochs // 5)}
        models.append(ModelChoice("distill-w0.5+prune30", (student, prune30)))
        quarter = _student_pass(task, epochs, width=0.25)
        if quarter is not None:
            models.append(ModelChoice("distill-w0.25", (quarter,)))

    cuda = device.startswith("cuda")
    wanted: tuple[str, ...] = (
        ("eager/fp32", "eager/bf16", "compile/fp32", "compile/bf16", "compile/fp16")
        if cuda
        else (
            "eager/fp32",
            "compile/fp32",
            "compile/int8",
            "onnxruntime/fp32",
            "onnxruntime/int8",
            "openvino/fp32",
            "openvino/int8",
            # On a CPU that computes in bf16 (AMX, AVX512-BF16): 4.9x less energy than fp32
            # for a ResNet-style network's OpenVINO IR on a Xeon with AMX (docs/search.md);
            # and NNCF's int8 with the layers it leaves in float run in bf16.
            *(("compile/bf16", "openvino/bf16", "openvino/int8-bf16") if native_bf16() else ()),
        )
    )
    if not _is_one_tensor(task.example_input):
        # PT2E int8 captures one tensor argument; a tuple or dict input cannot go through it.
        wanted = tuple(d for d in wanted if d != "compile/int8")
    if not cuda and is_token_input(task.example_input):
        # A transformer's activations change range with each sentence: quantized per call.
        wanted = (*wanted, "onnxruntime/int8-dynamic")
    deployments = tuple(d for d in wanted if _runs_here(d, device))
    if not deployments:
        deployments = ("eager/fp32",)
    batch_sizes = (1,) if scenario == "online" else (1, 16, 64, 256)
    cpus = _allowed_cpus()
    threads = (0,) if cuda or cpus == 1 else (1, 0)
    return SearchSpace(tuple(models), deployments, batch_sizes, threads, _power_limits(device))


# A generative task's deployments, cheapest-looking first (the order only lists them).
GENERATION_WANTED_CPU = (
    "eager/fp32",
    "compile/fp32",
    "eager/bf16",
    "compile/bf16",
    "eager/int8-weight-only",
    "compile/int8-weight-only",
    "eager/int8-dynamic",
    "compile/int8-dynamic",
)
GENERATION_WANTED_CUDA = (
    "eager/fp32",
    "eager/bf16",
    "compile/bf16",
    "cudagraphs/bf16",
    "cudagraphs/fp16",
    "cudagraphs/int8-weight-only",
    "cudagraphs/int4-weight-only",
    "cudagraphs/fp8",
)


def _generation_space(task: Task, scenario: str, device: str) -> SearchSpace:
    """A language model that generates: the baseline and students narrower and shallower,
    distilled from it; precisions and quantizations that keep the KV cache, eager or compiled
    (CUDA graphs on a GPU); batches of concurrent sequences; threads.

    Pruning is not in it: a grouped-query model's heads are tied to their key/value heads, and
    the pruning adapter removes heads one projection at a time (``docs/search.md``).
    """
    from wattwise.deploy._generation import generation_unsupported

    # The students train from scratch for twice the teacher's epochs, half on its soft
    # targets. On tinylm (3 epochs, 0.494 next-byte accuracy) the half-depth student reached
    # 0.466 in 3 epochs and 0.559 in 6; the one half as wide and half as deep, 0.484 and 0.577.
    epochs = 2 * max(1, int(task.epochs))
    width = _accepts_width(task.model_factory)
    depth = _accepts(task.model_factory, "depth")
    shapes: list[tuple[str, dict[str, float]]] = []
    if width and depth:
        # Smallest first: at batch 1 a decode step is mostly per-operation overhead, which
        # only fewer layers remove. On tinylm it cost 23.3 mJ per response compiled, against
        # 37.2 for the half-width student and 31.5 for the half-depth one.
        shapes.append(("distill-w0.5-d0.5", {"width": 0.5, "depth": 0.5}))
    if width:
        shapes.append(("distill-w0.5", {"width": 0.5}))
    if depth:
        shapes.append(("distill-d0.5", {"depth": 0.5}))
    models = [ModelChoice("base")]
    for name, kwargs in shapes:
        if "width" in kwargs:
            kwargs = {
                **kwargs,
                "width": round(kwargs["width"] * _current_width(task.model_factory), 4),
            }
        recipe = {
            "type": "distill",
            "student": "task",
            "student_kwargs": kwargs,
            "epochs": epochs,
            "alpha": 0.5,
        }
        models.append(ModelChoice(name, (recipe,)))
    cuda = device.startswith("cuda")
    wanted = GENERATION_WANTED_CUDA if cuda else GENERATION_WANTED_CPU
    deployments = tuple(
        d
        for d in wanted
        if generation_unsupported(d.split("/")[0], d.split("/")[1], device) is None
    ) or ("eager/fp32",)
    batch_sizes = (1,) if scenario == "online" else (1, 8, 32)
    threads = (0,) if cuda or _allowed_cpus() == 1 else (1, 0)
    return SearchSpace(tuple(models), deployments, batch_sizes, threads, _power_limits(device))


def restore_power_limits(device: str) -> None:
    """After a child job on a GPU: put back any power limit a dead process left set, saying so
    on stderr (a no-op elsewhere)."""
    if not device.startswith("cuda"):
        return
    import sys

    from wattwise.measure._power_limit import restore_orphaned_limits

    for line in restore_orphaned_limits():
        print(f"wattwise: {line}", file=sys.stderr)


def _power_limits(device: str) -> tuple[int, ...]:
    """On a GPU whose power limit this process may set: the default limit, 80% and 60% of it
    (``wattwise doctor`` says why not elsewhere)."""
    if not device.startswith("cuda"):
        return ()
    from wattwise.measure._power_limit import power_limit_choices

    return power_limit_choices(device)


def native_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (the deployments' own probe)."""
    from wattwise.deploy._base import native_bf16 as probe

    return probe()


def _runs_here(choice: str, device: str) -> bool:
    """Whether ``backend/precision`` can run on ``device`` here: the backend's probe (what
    ``wattwise doctor`` shows), and the precision's own needs (OpenVINO's int8 needs NNCF)."""
    from wattwise.deploy import BACKENDS

    backend, precision = choice.split("/")
    return bool(BACKENDS.get(backend).probe_precision(precision, device))


def _is_one_tensor(example: Any) -> bool:
    import torch

    return isinstance(example, torch.Tensor)


def _is_image_batch(example: Any) -> bool:
    """Whether ``example`` is one image batch (N, C, H, W), which a CNN student takes."""
    return _is_one_tensor(example) and example.dim() == 4


def _current_width(factory: Any) -> float:
    """The width the task's factory builds at: a ``functools.partial`` keyword, or the
    signature's default, or 1."""
    keywords = getattr(factory, "keywords", None) or {}
    if isinstance(keywords.get("width"), int | float):
        return float(keywords["width"])
    try:
        default = inspect.signature(factory).parameters["width"].default
    except (KeyError, TypeError, ValueError):
        return 1.0
    return float(default) if isinstance(default, int | float) else 1.0


MIN_STUDENT_SIDE = 32  # the smallest image side a MobileNetV3-Small student is offered for


def _student_pass(task: Task, epochs: int, *, width: float = 0.5) -> dict[str, Any] | None:
    """The distillation pass of a student ``width`` times as wide as the task's model (or, for
    an image classifier whose factory takes no width and whose images are at least
    :data:`MIN_STUDENT_SIDE` pixels, a MobileNetV3-Small at that width), or
    at half depth from the teacher's own layers; ``None`` when no student fits the model.
    Only half width builds a layer-stack student."""
    if _accepts_width(task.model_factory):
        return {
            "type": "distill",
            "student": "task",
            "student_kwargs": {"width": round(width * _current_width(task.model_factory), 4)},
            "epochs": epochs,
        }
    example = task.example_input
    # MobileNetV3-Small halves the side five times: on 8×8 digits its features are 1×1 after
    # the third stride, and a user's CNN there got students at chance (0.10) in every recipe.
    if (
        _is_image_batch(example)
        and task.num_classes
        and min(example.shape[-2:]) >= MIN_STUDENT_SIDE
    ):
        return {
            "type": "distill",
            "student": "mobilenetv3_small",
            "student_kwargs": {
                "width": width,
                "num_classes": int(task.num_classes),
                "in_chans": int(example.shape[1]),
            },
            "epochs": epochs,
        }
    if width == 0.5 and _has_layer_stack(task):
        # Three times the teacher's epochs, half on its soft targets: on minilm-topics (one
        # epoch, 0.823) the 3-layer student reached 0.771 in one epoch at alpha 0.7, and 0.854
        # in three at alpha 0.5.
        return {
            "type": "distill",
            "student": "layers",
            "student_kwargs": {"keep": 0.5},
            "epochs": 3 * epochs,
            "alpha": 0.5,
        }
    return None


def _has_layer_stack(task: Task) -> bool:
    """Whether the task's model has a stack of repeated layers to halve (built once to see)."""
    from wattwise.passes._model import layer_stack

    try:
        found = layer_stack(task.model_factory())
    except Exception:  # a factory that fails here fails the baseline too, with its reason
        return False
    return found is not None and len(found[1]) >= 2


def seed_params(space: SearchSpace, *, generative: bool = False) -> list[dict[str, Any]]:
    """Known-good starting points, enqueued before the sampler takes over.

    For token inputs, OpenVINO's int8 at the largest batch for the third- and half-depth
    students, then ONNX Runtime's dynamic int8 for the students and the baseline. At batch 1
    only (online): ONNX Runtime's fp32 (the least overhead per call) for the quarter-width (or
    third-depth) and half-width students; the baseline in OpenVINO's int8; the student in
    OpenVINO's int8; the baseline in OpenVINO's fp32; the pruned student in ONNX Runtime's fp32;
    then ONNX Runtime's int8. Then int8 at the largest batch: OpenVINO's for the student on one
    thread; ONNX Runtime's, OpenVINO's (its float layers in fp32, then in bf16) and PT2E's with
    compile for the baseline; OpenVINO's for the stacks (a quarter-width student, the student
    pruned after distillation); ONNX Runtime's for the student; the student in bf16 where the
    CPU has it; ONNX Runtime's for the pruned models; the student's int8 with compile; the
    baseline in OpenVINO's fp32; batching alone (fp32 eager); a pruned model compiled at one
    thread. Points outside ``space`` are left out.
    Past batch 1, the int8 seeds run on one thread; the search tries the best's other thread
    counts and neighbouring batch sizes itself (``refine_around_best``).

    For a generative task (``generative=True``): compiled fp32 and bf16 at the largest batch
    for the baseline, compiled fp32 for the students (the smallest first), compiled int8
    weight-only and eager bf16, all on one thread.

    Why several int8 runtimes: which one is cheapest depends on the model and the CPU. On our
    2-vCPU EPYC, ONNX Runtime's QDQ int8 was the cheapest peer for the digits CNN but slower
    than fp32 for a ResNet-style network, where torchao's PT2E int8 compiled by inductor used
    a third of its energy per item (``docs/BENCHMARKS.md``); OpenVINO's NNCF int8 used 17% less
    than ONNX Runtime's on the trained digits CNN at batch 256 (64.5 against 78.0 µJ/item,
    estimated, three rounds side by side). A small budget must try each on the model most
    likely to win.
    """
    choices = space.choices()
    big = max(space.batch_sizes)
    mid = sorted(space.batch_sizes)[len(space.batch_sizes) // 2]
    all_threads = 0 if 0 in space.threads else space.threads[0]
    one = 1 if 1 in space.threads else all_threads
    students = [m.name for m in space.models if m.student]
    student = students[:1]
    # The stacks: a smaller student, and the student pruned after distillation.
    smaller = [
        m for m in ("distill-w0.25", "distill-layers0.34", "distill-w0.5+prune30") if m in students
    ]
    wishes: list[tuple[str, str, int, int]] = []
    if "onnxruntime/int8-dynamic" in space.deployments:
        # Token inputs (a transformer): the students in OpenVINO's int8 first, the shallower
        # first. On minilm-topics NNCF's int8 cost 7.1 mJ/item at batch 1 and 3.8 at batch 64,
        # where Optimum's ONNX Runtime dynamic int8 cost 12.5 and 9.9, and both of the search's
        # winners were the half-depth student in OpenVINO's int8 (docs/BENCHMARKS.md).
        wishes += [(s, "openvino/int8", big, one) for s in smaller[:1] + student]
    wishes += [
        *((s, "onnxruntime/int8-dynamic", big, all_threads) for s in students[:2]),
        ("base", "onnxruntime/int8-dynamic", big, all_threads),
    ]
    # OpenVINO's int8 with its float layers in bf16 where the CPU has it (the search's
    # refinement tries the other on the best).
    ov_int8 = "openvino/int8-bf16" if "openvino/int8-bf16" in space.deployments else "openvino/int8"
    if big == 1:
        # One item per call: the runtime with the least overhead per call (ONNX Runtime) on
        # the smallest models first; int8's quantize/dequantize may cost more than it saves.
        # Then, before the stacks, the baseline in OpenVINO's int8: for depthwise networks
        # ONNX Runtime's int8 costs more than its fp32, and the student loses accuracy. On
        # MobileNetV3-Small at batch 1, NNCF's int8 cost 0.71 mJ/item where the search's
        # winner, found without it (the student in ONNX Runtime's int8), cost 1.66.
        wishes += [
            *((s, "onnxruntime/fp32", big, one) for s in smaller[:1] + student),
            ("base", ov_int8, big, one),
            *((s, "openvino/int8", big, one) for s in student),
            # The baseline in OpenVINO's fp32, for when int8 loses accuracy: EfficientNet-Lite0's
            # cost 10 ms/item at batch 1 on one thread where inductor's cost 14, both keeping
            # top-1 agreement 1.0 (NNCF's int8 kept 0.969, its bf16 0.980).
            ("base", "openvino/fp32", big, one),
            *((s, "onnxruntime/fp32", big, one) for s in smaller[1:]),
            *((s, "onnxruntime/int8", big, one) for s in student + smaller),
            *((s, "openvino/int8", big, one) for s in smaller[:1]),
            ("base", "onnxruntime/int8", big, one),
        ]
    # Cheap and likely-good first: a small budget should already hold a good front.
    wishes += [
        *((s, "openvino/int8", big, one) for s in student),
        # One thread: on our 2-vCPU EPYC every peer's own tuning chose it, and MobileNetV3 on
        # OpenVINO int8 at batch 256 on all threads cost 582 µJ/item where NNCF's int8 on one
        # cost 123; the search refines the best's threads itself.
        ("base", "onnxruntime/int8", big, one),
        ("base", "openvino/int8", big, one),
        # Its float layers in bf16 where the CPU has it: MobileNetV3-Small's NNCF int8 IR cost
        # 162 against 193 µJ/item at batch 256 on one thread, at the same accuracy.
        ("base", "openvino/int8-bf16", big, one),
        # torchao's PT2E int8 compiled by inductor kept MobileNetV3-Small within the accuracy
        # limit where NNCF's int8 lost 1.4 points, and cost 138 µJ/item at batch 256 against
        # the 1.06 mJ of the search's winner when it came twelfth and was never tried.
        ("base", "compile/int8", big, one),
        *((s, "openvino/int8", big, one) for s in smaller),
        *((s, "onnxruntime/int8", big, one) for s in student),
        *((s, "openvino/bf16", big, one) for s in student),
        ("prune50", "onnxruntime/int8", big, one),
        *((s, "compile/int8", big, one) for s in student),
        ("prune30", "onnxruntime/int8", big, one),
        ("base", "openvino/fp32", big, one),
        ("base", "eager/fp32", big, all_threads),
        ("prune50", "compile/fp32", mid, one),
    ]
    if generative:
        # A small model's decode step is mostly per-operation overhead, which compilation
        # removes; then half-precision weights, then the students.
        pairs = [
            *(("base", f"{b}/{p}") for b, p in (("compile", "fp32"), ("compile", "bf16"))),
            ("base", "cudagraphs/bf16"),
            *((s, "compile/fp32") for s in students[:3]),
            *(("base", d) for d in ("compile/int8-weight-only", "eager/bf16", "eager/fp32")),
        ]
        # On one thread, as the search's other seeds: tinylm's peers, each tuned over batch and
        # threads, all chose one thread online and offline, and the online search's winner on
        # every thread cost 1.26x the best peer's (a decode step is too small to share).
        wishes = [(model, dep, big, one) for model, dep in pairs]
    out: list[dict[str, Any]] = []
    # With power limits, each wish at the board's highest limit in the space (the default's
    # behaviour); the sampler explores the lower ones.
    limit = {POWER_LIMIT: max(space.power_limits_w)} if space.power_limits_w else {}
    for model, dep, batch, threads in wishes:
        params = {
            "model": model,
            "deployment": dep,
            "batch_size": batch,
            "threads": threads,
            **limit,
        }
        if all(params[k] in choices[k] for k in PARAM_NAMES) and params not in out:
            out.append(params)
    return out


# A space lists a few models and deployments: kilobytes. More is not a space file.
MAX_SPACE_BYTES = 1 << 20


def load_space(path: str | os.PathLike[str]) -> SearchSpace:
    """Read a :class:`SearchSpace` from a YAML or JSON file (``wattwise optimize --space``)::

    models:
      - {name: base}
      - {name: prune50, passes: [{type: prune, ratio: 0.5, finetune_epochs: 2}]}
    deployments: [onnxruntime/int8, eager/fp32]
    batch_sizes: [1, 64, 256]
    threads: [1, 0]          # 0 = every allowed core

    The file is read only if it is a regular file of at most 1 MiB, and parsed without YAML
    aliases and with bounded nesting, so a hostile file is one error line, never a hang or an
    out-of-memory kill ("billion laughs": 600 bytes of nested aliases).
    """
    from wattwise._fs import decode_utf8, parse_yaml, read_bounded

    what = f"search space {os.fsdecode(path)}"
    raw = read_bounded(path, MAX_SPACE_BYTES, what="search space")
    data = parse_yaml(decode_utf8(raw, what=what), what=what)
    try:
        return SearchSpace.from_dict(data)
    except (TypeError, ValueError) as exc:  # InputError included
        # The message may quote a value from the file; a 1 MiB name is not one line to read.
        text = " ".join(str(exc).split())
        text = text if len(text) <= 300 else text[:299] + "…"
        raise InputError(f"{what}: {text}") from None


def params_key(params: Mapping[str, Any]) -> str:
    """A canonical string for a candidate's params (duplicate detection)."""
    keys = (*PARAM_NAMES, POWER_LIMIT) if POWER_LIMIT in params else PARAM_NAMES
    return json.dumps({k: params.get(k) for k in keys}, sort_keys=True)
