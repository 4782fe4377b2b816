"""Knowledge distillation: train the model (or a new, smaller student) against a teacher.

Loss per batch (Hinton et al. 2015), with ``T = temperature``::

    alpha · T² · KL(softmax(teacher / T) ‖ softmax(student / T))
    + (1 − alpha) · cross_entropy(student, labels)
    + feature_weight · Σ MSE(adapter(student feature), teacher feature)

The ``T²`` keeps the soft-target gradients at the scale of the hard-label ones as T grows.
Feature distillation (FitNets, Romero et al. 2015) hooks named layers of both networks and
learns a 1×1 conv (4-D features) or a linear map (2-D/3-D features) from the student's width
to the teacher's; the adapters are trained with the student and then dropped.

Two uses:

* **after pruning or quantization**, recover accuracy: ``Distill()`` trains the model entering
  the pass against the model *before compression* (``teacher=None`` → ``"original"``);
* **a shallower student from the teacher's own layers** (DistilBERT, Sanh et al. 2019):
  ``Distill(student="layers", student_kwargs={"keep": 0.5})`` copies the model entering the
  pass, keeps every other block of its stack of repeated layers (a transformer's encoder
  layers), and trains that against the model entering the pass; any model with such a stack
  gets a student, whether or not its factory takes ``width``;
* **train an efficient student**: ``Distill(student="mobilenetv3_small",
  student_kwargs={"width": 0.5, "num_classes": 10, "in_chans": 1})`` replaces the model with a
  new network from :func:`wattwise.archs.create` (or ``student="task"``: the task's own model
  factory with ``student_kwargs`` as overrides, e.g. ``{"width": 0.4}``) and trains it against
  the *model entering the pass* (``teacher=None`` → ``"input"``).

Where the teacher comes from: recipes must stay YAML, so the teacher is named, not stored:
``"original"`` (the model given to :func:`wattwise.compress`) or ``"input"`` (the model entering
this pass). To distil from any other network, compress *that* network with a student recipe,
or pass ``teacher=<nn.Module>`` in Python (such a pass cannot be saved to a recipe).

Mixed precision: ``precision="auto"`` trains under bf16 autocast where the hardware has
native bf16 (CUDA bf16, or CPUs with AVX512-BF16/AMX) *and* a training step is big enough for
the faster matmuls to outweigh autocast's casts. Measured on this project's AVX512-BF16 CPU
(batch 64, one thread): a DigitsCNN step (≈150 M MACs) ran 1.3-1.9× faster under bf16
autocast, a 3-layer MLP step (≈1 M MACs) about 20× slower. The rule uses the hardware and the
step's MAC count only, never a timing, so a recipe and seed still give one model; the pass
times a few steps both ways and logs the speed-up it saw.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from typing import TYPE_CHECKING, Any, ClassVar

from wattwise._core import first_line
from wattwise._inputs import call, describe, primary_tensor, take_rows, to_device
from wattwise.errors import InputError
from wattwise.passes._base import Pass, PassContext, register_handler, register_pass
from wattwise.passes._fields import choice, integer, names, number, store
from wattwise.passes._model import count_macs, keep_layers, model_device

if TYPE_CHECKING:
    import torch
    from torch import nn

    from wattwise.tasks import Task

TEACHERS = ("original", "input")
PRECISIONS = ("auto", "fp32", "bf16")
_TIMING_STEPS = 3
# "auto" uses bf16 autocast only from this many MACs per training batch (forward): between the
# ~1 M of a small MLP (20× slower under autocast) and the ~150 M of DigitsCNN (1.3-1.9× faster).
_BF16_MIN_MACS_PER_STEP = 32e6


def _is_module(obj: object) -> bool:
    from torch import nn

    return isinstance(obj, nn.Module)


@register_pass
@dataclasses.dataclass(frozen=True)
class Distill(Pass):
    """Train against a teacher's soft targets (and, optionally, its features).

    Args:
        teacher: ``None`` (``"original"`` without a student, ``"input"`` with one),
            ``"original"``, ``"input"``, or an ``nn.Module`` (Python only, not saved in recipes).
        temperature: softmax temperature T of the soft targets (> 0).
        alpha: weight of the soft-target term, in [0, 1]; ``1 - alpha`` weighs the labels.
        epochs: training epochs (``task.fit``).
        lr: learning rate (default: the task's).
        feature_layers: layers whose outputs the student should match, ``"name"`` (same name
            in both networks) or ``"student_name=teacher_name"``.
        feature_weight: weight of the feature term.
        student: ``None`` (train the model entering the pass), an architecture name from
            :mod:`wattwise.archs`, ``"task"`` (the task's model factory), or ``"layers"``: the
            model entering the pass with part of its stack of repeated layers dropped, the rest
            keeping the teacher's weights (DistilBERT's recipe; for models whose factory takes
            no ``width``).
        student_kwargs: keyword arguments for the student's factory; for ``"layers"``,
            ``{"keep": 0.5}`` (the fraction of layers kept, evenly spaced from the first).
        precision: ``"auto"``, ``"fp32"`` or ``"bf16"`` (autocast) for the training.

    Example:
        >>> Distill(student="task", student_kwargs={"width": 0.4}, epochs=15)
    """

    TYPE: ClassVar[str] = "distill"

    teacher: Any = None
    temperature: float = 4.0
    alpha: float = 0.7
    epochs: int = 5
    lr: float | None = None
    feature_layers: tuple[str, ...] = ()
    feature_weight: float = 1.0
    student: str | None = None
    student_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    precision: str = "auto"

    def __post_init__(self) -> None:
        t = self.teacher
        if not (
            t is None
            or (isinstance(t, str) and t in TEACHERS)
            or (not isinstance(t, str) and _is_module(t))
        ):
            raise InputError(
                f"Distill.teacher must be None, 'original', 'input' or an nn.Module, got {t!r}"
            )
        number(self, "temperature", low=0.0, low_open=True)
        number(self, "alpha", low=0.0, high=1.0)
        integer(self, "epochs", low=0)
        number(self, "lr", low=0.0, low_open=True, optional=True)
        names(self, "feature_layers")
        for item in self.feature_layers:
            if item.count("=") > 1 or item.startswith("=") or item.endswith("="):
                raise InputError(
                    f"Distill.feature_layers: {item!r} is not 'name' or 'student=teacher'"
                )
        number(self, "feature_weight", low=0.0)
        if self.student is not None and (not isinstance(self.student, str) or not self.student):
            raise InputError(
                f"Distill.student must be an architecture name or 'task', got {self.student!r}"
            )
        if not isinstance(self.student_kwargs, dict) or not all(
            isinstance(k, str) for k in self.student_kwargs
        ):
            raise InputError(
                f"Distill.student_kwargs must be a mapping of names to values, got {self.student_kwargs!r}"
            )
        if self.student_kwargs and self.student is None:
            raise InputError("Distill.student_kwargs is set but Distill.student is not")
        if self.student == "layers":
            extra = set(self.student_kwargs) - {"keep"}
            keep = self.student_kwargs.get("keep", 0.5)
            if extra or isinstance(keep, bool) or not isinstance(keep, int | float):
                raise InputError(
                    "Distill.student 'layers' takes student_kwargs {'keep': a fraction}, got "
                    f"{self.student_kwargs!r}"
                )
            if not 0 < keep < 1:
                raise InputError(f"Distill.student_kwargs keep must be in (0, 1), got {keep!r}")
        store(self, "student_kwargs", dict(self.student_kwargs))
        choice(self, "precision", PRECISIONS)

    @property
    def teacher_source(self) -> str:
        """``"original"``, ``"input"`` or ``"module"``: where the teacher comes from."""
        if self.teacher is None:
            return "original" if self.student is None else "input"
        return self.teacher if isinstance(self.teacher, str) else "module"

    def to_dict(self) -> dict[str, Any]:
        if _is_module(self.teacher) and not isinstance(self.teacher, str):
            raise InputError(
                "Distill.teacher is a model, which a recipe cannot hold: use teacher='original' "
                "or 'input' (see wattwise.passes.distill)"
            )
        return super().to_dict()

    def describe(self) -> dict[str, Any]:
        if isinstance(self.teacher, str) or self.teacher is None:
            return self.to_dict()
        out = dataclasses.replace(self, teacher=None).to_dict()
        out["teacher"] = f"<{type(self.teacher).__name__} given in Python>"
        return out


def soft_target_loss(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``KL(softmax(teacher / T) ‖ softmax(student / T))``, the mean over predictions.

    Logits are ``[..., classes]``: one prediction per row of a classifier's ``[B, C]``, one per
    position of a language model's ``[B, T, V]``. ``reduction="batchmean"`` divides by the
    first dimension only, so the other leading ones are flattened into it first (else a
    128-token window's soft term would weigh 128 times a classifier's).
    """
    import torch.nn.functional as F

    return F.kl_div(
        F.log_softmax(student.flatten(0, -2) / temperature, dim=-1),
        F.log_softmax(teacher.flatten(0, -2) / temperature, dim=-1),
        log_target=True,
        reduction="batchmean",
    )


def _bf16_native(device: torch.device) -> bool:
    import torch

    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, c, lambda: False)()) for c in checks)


def _make_student(cfg: Distill, task: Task, model: nn.Module, ctx: PassContext) -> nn.Module:
    from torch import nn

    kwargs = dict(cfg.student_kwargs)
    if cfg.student == "layers":
        student = copy.deepcopy(model)
        name, had, kept = keep_layers(student, float(kwargs.get("keep", 0.5)))
        ctx.note(f"student: {len(kept)} of the {had} layers of {name} (kept {kept})")
        return student
    try:
        if cfg.student == "task":
            student = task.model_factory(**kwargs)  # type: ignore[call-arg]
        else:
            from wattwise import archs

            student = archs.create(str(cfg.student), **kwargs)
    except InputError as exc:
        raise InputError(f"Distill.student: {exc}") from None
    except TypeError as exc:
        raise InputError(f"Distill.student_kwargs: {exc}") from None
    if not isinstance(student, nn.Module):
        raise InputError(f"Distill.student {cfg.student!r} did not build an nn.Module")
    return student


def _features(model: nn.Module, names: list[str], who: str) -> tuple[dict[str, Any], list[Any]]:
    """Forward hooks that keep the outputs of ``names`` in a dict (returned with the handles)."""
    table = dict(model.named_modules())
    store: dict[str, Any] = {}
    handles = []
    for name in names:
        if name not in table:
            raise InputError(f"Distill.feature_layers: the {who} has no module named {name!r}")

        def keep(_m: Any, _i: Any, out: Any, name: str = name) -> None:
            store[name] = out[0] if isinstance(out, tuple) else out

        handles.append(table[name].register_forward_hook(keep))
    return store, handles


def _adapter(s: torch.Tensor, t: torch.Tensor, where: str) -> nn.Module:
    from torch import nn

    if s.dim() == 4 and t.dim() == 4:
        return nn.Conv2d(s.shape[1], t.shape[1], kernel_size=1, bias=False)
    if s.dim() == t.dim() and s.dim() in (2, 3) and s.shape[:-1] == t.shape[:-1]:
        return nn.Linear(s.shape[-1], t.shape[-1], bias=False)
    raise InputError(
        f"Distill.feature_layers {where!r}: cannot map a student feature of shape "
        f"{tuple(s.shape)} onto the teacher's {tuple(t.shape)}"
    )


def _match(adapter: nn.Module, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    import torch.nn.functional as F

    out = adapter(s.float())
    if out.dim() == 4 and out.shape[-2:] != t.shape[-2:]:
        out = F.adaptive_avg_pool2d(out, (int(t.shape[-2]), int(t.shape[-1])))
    return F.mse_loss(out, t.float())


@register_handler(Distill)
def _distill(model: nn.Module, cfg: Distill, ctx: PassContext) -> nn.Module:
    import torch
    from torch import nn

    task = ctx.task
    source = cfg.teacher_source
    if source == "module":
        teacher: nn.Module = cfg.teacher
    elif source == "original":
        teacher = ctx.original_model()
    else:
        teacher = model
    student = _make_student(cfg, task, model, ctx) if cfg.student is not None else model
    if teacher is student:  # self-distillation: learn from a frozen snapshot, not a moving target
        teacher = copy.deepcopy(model)
    teacher.eval()
    device = model_device(teacher)
    student.to(device)
    ctx.metrics["teacher"] = source
    known = source == "input" and ctx.accuracy_before is not None
    ctx.metrics["teacher_accuracy"] = ctx.accuracy_before if known else task.evaluate(teacher)

    pairs = [tuple(item.split("=")) if "=" in item else (item, item) for item in cfg.feature_layers]
    if pairs and not isinstance(task.example_input, torch.Tensor):
        # The adapters match CNN feature maps, probed with a lone image batch.
        raise InputError(
            "Distill.feature_layers takes models with one tensor input for now; this task's "
            f"input is {describe(task.example_input)}; distil the logits alone (no feature_layers)"
        )
    s_store, s_handles = _features(student, [p[0] for p in pairs], "student")
    t_store, t_handles = _features(teacher, [p[1] for p in pairs], "teacher")

    class Distiller(nn.Module):
        """The student plus its feature adapters, so one optimizer trains both."""

        def __init__(self) -> None:
            super().__init__()
            self.student = student
            self.adapters = nn.ModuleList()

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            return self.student(*args, **kwargs)

    wrapper = Distiller()
    example = to_device(task.example_input, device)
    if pairs:
        with torch.no_grad():
            student.eval()
            student(take_rows(example, 2))  # batch of 2: BatchNorm in train mode later
            teacher(take_rows(example, 2))
        for s_name, t_name in pairs:
            wrapper.adapters.append(
                _adapter(s_store[s_name], t_store[t_name], f"{s_name}={t_name}").to(device)
            )

    bf16 = cfg.precision == "bf16"
    if cfg.precision == "auto" and _bf16_native(device):
        step_macs = count_macs(student, example) * task.batch_size
        ctx.metrics["student_macs_per_step"] = step_macs
        bf16 = step_macs >= _BF16_MIN_MACS_PER_STEP
    T, alpha = cfg.temperature, cfg.alpha

    def kd_loss(m: nn.Module, x: Any, y: torch.Tensor, use_bf16: bool = bf16) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            with torch.no_grad():
                t_logits = primary_tensor(call(teacher, x))
            s_logits = primary_tensor(call(m, x))
        s_logits, t_logits = s_logits.float(), t_logits.float()
        loss = alpha * T * T * soft_target_loss(s_logits, t_logits, T)
        if alpha < 1.0:
            loss = loss + (1.0 - alpha) * task.loss_fn(s_logits, y)
        if pairs and cfg.feature_weight > 0:
            feat = sum(
                _match(a, s_store[s], t_store[t].detach())
                for a, (s, t) in zip(wrapper.adapters, pairs, strict=True)
            )
            loss = loss + cfg.feature_weight * feat
        return loss

    if cfg.precision == "auto" and cfg.epochs > 0:
        try:
            speedup = _bf16_speedup(wrapper, kd_loss, task)
        except RuntimeError as exc:
            # Some models cannot run under bf16 autocast: the teacher's fused transformer path
            # (eval, a padding mask) fails with "expected scalar type Float but found
            # BFloat16". "auto" then means fp32.
            speedup, bf16 = 0.0, False
            ctx.note(f"bf16 autocast fails on this model ({first_line(exc)}); trained in fp32")
        ctx.metrics["bf16_step_speedup"] = speedup
        if bf16 and speedup < 1.0:
            ctx.note(
                f"bf16 autocast was slower here (×{speedup:.2f} per step); try precision='fp32'"
            )
        elif not bf16 and speedup > 1.2:
            ctx.note(
                f"bf16 autocast was faster here (×{speedup:.2f} per step); try precision='bf16'"
            )
    ctx.method = ("bf16-autocast" if bf16 else "fp32") + f"/teacher={source}"
    try:
        if cfg.epochs > 0:
            task.fit(
                wrapper,
                epochs=cfg.epochs,
                lr=cfg.lr,
                seed=ctx.seed * 1000,
                loss=kd_loss,
                on_epoch=ctx.stop_when_recovered(
                    lambda: task.evaluate(student), ctx.metrics["teacher_accuracy"]
                ),
            )
    finally:
        for h in s_handles + t_handles:
            h.remove()
    student.eval()
    if cfg.student is not None:
        ctx.note(
            f"model replaced by a {type(student).__name__} student ({cfg.student}, {cfg.student_kwargs})"
        )
    return student


def _bf16_speedup(wrapper: nn.Module, loss: Any, task: Task) -> float:
    """fp32 step time over bf16-autocast step time, on a few real batches (no update kept)."""
    import torch

    with torch.random.fork_rng(devices=[]):  # dropout here must not shift the training's RNG
        return _time_both(wrapper, loss, task)


def _time_both(wrapper: nn.Module, loss: Any, task: Task) -> float:
    probe = copy.deepcopy(wrapper)
    probe.train()
    batches = []
    for i, (x, y) in enumerate(task.train_loader(seed=task.seed + 11)):
        if i > _TIMING_STEPS:
            break
        batches.append((x, y))
    times = {}
    for use in (False, True, False, True):  # twice each; the second round is warm
        t0 = time.perf_counter()
        for x, y in batches:
            probe.zero_grad(set_to_none=True)
            loss(probe, x, y, use_bf16=use).backward()
        times[use] = time.perf_counter() - t0
    wrapper.zero_grad(set_to_none=True)  # the adapters are shared with the probe
    return times[False] / times[True]
