"""The adapter to Torch-Pruning: one place that builds its pruners and knows its limits.

:mod:`wattwise.passes.prune` (the ``Prune`` pass) and :mod:`wattwise.passes._sensitivity`
(per-group sensitivity) both prune through here, so what Torch-Pruning 1.6 cannot do is handled
once:

* recurrent layers are traced through a shape-alike stand-in (:func:`recurrent_swapped`): its
  GRU/RNN have no pruner and its LSTM pruner fails on the gate weights;
* the final classifier (:func:`find_classifier`), ``protect``-ed modules and recurrent layers
  are frozen, and ``max_layer_ratio`` caps each group, by wrapping the importance
  (:class:`_GuardedImportance`);
* attention written the Hugging Face way (separate ``query``/``key``/``value`` projections and
  a head count in an attribute its forward reads) loses whole heads, never dimensions inside a
  head, and its attributes are brought up to date after each step
  (:func:`headed_attention`, :func:`sync_heads`);
* a module that runs but whose output reaches nothing the model returns (BERT's pooler under
  a head that reads the token states) is traced through its own output, so its inputs shrink
  with the layer feeding it and its outputs stay (:func:`_dead_ends`);
* models whose traced forward misses a module are refused (:func:`_check_traced`).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from wattwise._inputs import call, primary_tensor
from wattwise.errors import InputError
from wattwise.passes._model import resolve_modules

if TYPE_CHECKING:
    import torch
    from torch import nn

    from wattwise.tasks import Task

# Batches whose loss gradients feed the Taylor importance: a few hundred items are enough to
# rank channels (Molchanov et al. 2019 use a running average over minibatches).
TAYLOR_BATCHES = 4


def _recurrent_stand_in(rnn: nn.Module) -> nn.Module:
    """A traceable shape-alike of a recurrent layer: one Linear from input to output size.

    Torch-Pruning traces the autograd graph; inside a GRU/LSTM that graph is a tangle of gate
    slices it mis-maps (IndexError). The stand-in gives the same input→output channel
    coupling, so the layers around the recurrent one are known to be tied to it.
    """
    from torch import nn

    class _RecurrentStandIn(nn.Module):
        def __init__(self, rnn: Any) -> None:
            super().__init__()
            self.dirs = 2 if rnn.bidirectional else 1
            self.layers = int(rnn.num_layers)
            self.hidden = int(getattr(rnn, "proj_size", 0) or rnn.hidden_size)
            self.batch_first = bool(rnn.batch_first)
            self.lstm = isinstance(rnn, nn.LSTM)
            self.proj = nn.Linear(int(rnn.input_size), self.hidden * self.dirs)

        def forward(self, x: torch.Tensor, hx: Any = None) -> Any:
            out = self.proj(x)
            if out.dim() == 2:  # unbatched (T, H)
                last = out[-1].unsqueeze(0)
            else:
                last = out[:, -1] if self.batch_first else out[-1]
            h = last.reshape(last.shape[0], self.dirs, self.hidden).transpose(0, 1)
            h = h.repeat(self.layers, 1, 1)
            return (out, (h, h)) if self.lstm else (out, h)

    return _RecurrentStandIn(rnn)


@contextmanager
def recurrent_swapped(
    model: nn.Module, reuse: dict[str, nn.Module] | None = None
) -> Iterator[dict[str, nn.Module]]:
    """Replace every recurrent layer by a stand-in for the duration; yields name → stand-in.

    ``reuse`` puts back the stand-ins of an earlier swap: a pruner's graph refers to the
    modules it was built on.
    """
    from torch import nn

    swaps: list[tuple[nn.Module, str, nn.Module]] = []
    stand_ins: dict[str, nn.Module] = {}
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.RNNBase):
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            stand_in = (reuse or {}).get(name) or _recurrent_stand_in(module)
            setattr(parent, attr, stand_in)
            swaps.append((parent, attr, module))
            stand_ins[name] = stand_in
    try:
        yield stand_ins
    finally:
        for parent, attr, module in swaps:
            setattr(parent, attr, module)


def find_classifier(model: nn.Module, example: Any) -> tuple[str, nn.Module] | None:
    """The last Conv/Linear module to run in a forward pass: it makes the model's outputs."""
    import torch
    from torch import nn

    order: list[nn.Module] = []
    hooks = [
        m.register_forward_hook(lambda mod, _i, _o: order.append(mod))
        for m in model.modules()
        if isinstance(m, nn.Linear | nn.modules.conv._ConvNd)
    ]
    try:
        with torch.no_grad():
            call(model, example)
    finally:
        for h in hooks:
            h.remove()
    if not order:
        return None
    names = {m: n for n, m in model.named_modules()}
    return names[order[-1]], order[-1]


class _GuardedImportance:
    """Wraps a Torch-Pruning importance: refuses frozen groups, caps each group's loss.

    Returning ``None`` makes Torch-Pruning leave a group out of the ranking entirely, so a
    frozen group neither loses channels nor takes part in the global threshold.
    """

    def __init__(
        self,
        inner: Any,
        frozen: dict[nn.Module, str],
        names: dict[Any, str],
        max_layer_ratio: float | None,
    ) -> None:
        self.inner = inner
        self.frozen = frozen
        self.names = names
        self.max_layer_ratio = max_layer_ratio
        self.skipped: dict[str, str] = {}
        self._initial: dict[Any, int] = {}

    def _name(self, module: Any) -> str:
        return self.names.get(module, type(module).__name__)

    def __call__(self, group: Any) -> Any:
        import torch

        root = group[0].dep.target.module
        for dep, _ in group:
            for module in (dep.source.module, dep.target.module):
                why = self.frozen.get(module) if _hashable(module) else None
                if why is not None and module is not root:
                    self.skipped[self._name(root)] = (
                        f"coupled to {self._name(module)!r}, which is {why}"
                    )
                    return None
                if why is not None:
                    self.skipped[self._name(root)] = why
                    return None
        imp = self.inner(group)
        if imp is None:
            self.skipped[self._name(root)] = "the importance criterion has no score for it"
            return None
        if self.max_layer_ratio is not None:
            n0 = self._initial.setdefault(root, len(imp))
            keep = min(len(imp), math.ceil(n0 * (1.0 - self.max_layer_ratio)))
            if keep > 0:
                imp = imp.clone()
                imp[torch.topk(imp, keep).indices] = math.inf
        return imp


def _hashable(obj: object) -> bool:
    try:
        hash(obj)
    except TypeError:
        return False
    return True


def _importance(kind: str) -> Any:
    import torch_pruning as tp

    if kind == "taylor":
        return tp.importance.GroupTaylorImportance()
    if kind == "bn_scale":
        return tp.importance.BNScaleImportance()
    return tp.importance.GroupMagnitudeImportance(p=2)


# Projections of attention written the Hugging Face way (BERT and RoBERTa; DistilBERT; BART,
# Llama and most decoders), and the attribute holding the head count their forward reads.
_QKV_NAMES = (
    ("query", "key", "value"),
    ("q_lin", "k_lin", "v_lin"),
    ("q_proj", "k_proj", "v_proj"),
)
_HEAD_COUNT_ATTRS = ("num_attention_heads", "num_heads", "n_heads")
# Attributes holding the heads' joint width (heads x head size), read by some forwards.
_HEADS_WIDTH_ATTRS = ("all_head_size", "inner_dim")


@dataclasses.dataclass(frozen=True)
class HeadedAttention:
    """One attention module whose heads Torch-Pruning removes whole."""

    module: nn.Module
    projections: tuple[nn.Linear, nn.Linear, nn.Linear]
    count_attr: str
    head_size: int


def headed_attention(model: nn.Module) -> list[HeadedAttention]:
    """Attention modules with separate q/k/v ``nn.Linear`` projections and a head count.

    Their forward reshapes q, k and v to ``(..., heads, head_size)`` with the head size fixed
    in code, so only whole heads may go; ``nn.MultiheadAttention`` is left out (Torch-Pruning
    updates it itself). Grouped-query attention (k/v narrower than q) is left out too: its
    projections are pruned as channels, and a pruned model that no longer runs is refused.
    """
    from torch import nn

    found: list[HeadedAttention] = []
    for module in model.modules():
        if isinstance(module, nn.MultiheadAttention):
            continue
        for names in _QKV_NAMES:
            projections = [getattr(module, n, None) for n in names]
            linear = [p for p in projections if isinstance(p, nn.Linear)]
            if len(linear) == 3:
                break
        else:
            continue
        count_attr = next(
            (a for a in _HEAD_COUNT_ATTRS if type(getattr(module, a, None)) is int), None
        )
        if count_attr is None:
            continue
        heads = int(getattr(module, count_attr))
        widths = {int(p.out_features) for p in linear}
        width = widths.pop()
        if widths or heads <= 0 or width % heads:
            continue
        q, k, v = linear
        found.append(HeadedAttention(module, (q, k, v), count_attr, width // heads))
    return found


def sync_heads(attention: list[HeadedAttention]) -> None:
    """Set each attention's head count (and joint width) from its pruned projections."""
    for a in attention:
        width = int(a.projections[0].out_features)
        setattr(a.module, a.count_attr, width // a.head_size)
        for attr in _HEADS_WIDTH_ATTRS:
            if type(getattr(a.module, attr, None)) is int:
                setattr(a.module, attr, width)


def _flat_tensors(value: Any) -> list[torch.Tensor]:
    import torch

    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _flat_tensors(v)]
    if isinstance(value, list | tuple):
        return [t for v in value for t in _flat_tensors(v)]
    return []


def _reached_parameters(outputs: Any) -> set[int]:
    """ids of the parameters the autograd graph of ``outputs`` reaches."""
    seen_fns: set[Any] = set()
    params: set[int] = set()
    stack = [t.grad_fn for t in _flat_tensors(outputs) if t.grad_fn is not None]
    while stack:
        fn = stack.pop()
        if fn in seen_fns:
            continue
        seen_fns.add(fn)
        variable = getattr(fn, "variable", None)
        if variable is not None:
            params.add(id(variable))
        stack.extend(f for f, _ in fn.next_functions if f is not None)
    return params


def _dead_ends(model: nn.Module, example: Any) -> list[nn.Module]:
    """Modules with parameters that run in a forward pass but feed none of its outputs.

    Hugging Face's ``BertModel`` computes its pooler whether or not the model on top reads
    it; Torch-Pruning traces from the outputs and never sees it, and the pruned hidden size
    would leave it mis-shaped.
    """
    import torch

    ran: list[nn.Module] = []
    hooks = [
        m.register_forward_hook(lambda mod, _i, _o: ran.append(mod))
        for m in model.modules()
        if any(True for _ in m.parameters(recurse=False))
    ]
    try:
        with torch.enable_grad():
            out = call(model, example)
    finally:
        for h in hooks:
            h.remove()
    reached = _reached_parameters(out)
    dead: list[nn.Module] = []
    for m in dict.fromkeys(ran):
        own = [p for p in m.parameters(recurse=False) if p.requires_grad]
        if own and not any(id(p) in reached for p in own):
            dead.append(m)
    return dead


class _WithDeadEnds:
    """Torch-Pruning's ``forward_fn``: the model's outputs, then the dead ends' outputs, so
    its graph holds every module that runs."""

    def __init__(self, dead: list[nn.Module]) -> None:
        self.dead = dead

    def __call__(self, model: nn.Module, example: Any) -> Any:
        if not self.dead:
            return call(model, example)
        extra: list[Any] = []
        hooks = [m.register_forward_hook(lambda _m, _i, o: extra.append(o)) for m in self.dead]
        try:
            out = call(model, example)
        finally:
            for h in hooks:
                h.remove()
        return (*_flat_tensors(out), *[t for o in extra for t in _flat_tensors(o)])


@dataclasses.dataclass
class PrunerSetup:
    """A Torch-Pruning pruner built on ``model``, with what it will not touch and why."""

    pruner: Any
    guard: _GuardedImportance
    classifier: str | None
    frozen_reasons: dict[str, str]
    attention: list[HeadedAttention] = dataclasses.field(default_factory=list)
    dead_ends: dict[str, str] = dataclasses.field(default_factory=dict)

    def step(self) -> None:
        """One pruning step, then the head counts of the attention that lost heads."""
        self.pruner.step()
        sync_heads(self.attention)


def build_pruner(
    model: nn.Module,
    example: Any,
    *,
    ratio: float,
    scope: str = "uniform",
    importance: str = "magnitude",
    steps: int = 1,
    protect: tuple[str, ...] = (),
    ratio_dict: dict[str, float] | None = None,
    max_layer_ratio: float | None = None,
    who: str = "Prune",
) -> PrunerSetup:
    """Build a Torch-Pruning ``BasePruner`` for ``model``; call inside :func:`recurrent_swapped`.

    Raises:
        InputError: a protected name that is not in the model, or a model Torch-Pruning
            cannot trace (it raises, or some module never ran during its traced forward).
    """
    import torch_pruning as tp
    from torch import nn

    protected = resolve_modules(model, protect, cls=who, field="protect")
    names: dict[Any, str] = {m: n for n, m in model.named_modules()}
    frozen: dict[nn.Module, str] = {}
    frozen_reasons: dict[str, str] = {}
    for name, module in protected.items():
        for sub in module.modules():
            frozen[sub] = f"protected ({who}.protect {name!r})"
        frozen_reasons[name] = "protected by Prune.protect"
    for name, module in model.named_modules():
        if type(module).__name__ == "_RecurrentStandIn":
            why = "a recurrent layer (Torch-Pruning 1.6 cannot prune GRU/RNN, and its LSTM pruner fails)"
            frozen[module] = why
            frozen[module.proj] = why
            names[module.proj] = name
    found = find_classifier(model, example)
    classifier = None
    ignored: list[nn.Module] = []
    if found is not None:
        classifier, head = found
        ignored.append(head)
    dead = _dead_ends(model, example)
    ignored.extend(m for m in dead if m not in ignored)
    attention = headed_attention(model)
    num_heads: dict[nn.Module, int] = {
        m: m.num_heads for m in model.modules() if isinstance(m, nn.MultiheadAttention)
    }
    for a in attention:
        heads = int(getattr(a.module, a.count_attr))
        num_heads.update({p: heads for p in a.projections})
    guard = _GuardedImportance(_importance(importance), frozen, names, max_layer_ratio)
    table = dict(model.named_modules())
    for name in ratio_dict or {}:
        if name not in table:
            raise InputError(f"{who}: no module named {name!r} for a per-layer ratio")

    def head_ratios(per_module: dict[nn.Module, float]) -> dict[nn.Module, float] | None:
        """A ratio given to one projection of a headed attention applies to all three."""
        if not attention:
            return None
        out: dict[nn.Module, float] = {}
        for a in attention:
            given = [per_module[p] for p in a.projections if p in per_module]
            out.update({p: (max(given) if given else 0.0) for p in a.projections})
        return out

    def make(
        per_module: dict[nn.Module, float] | None,
        global_pruning: bool,
        head_dict: dict[nn.Module, float] | None = None,
    ) -> Any:
        try:
            with warnings.catch_warnings():
                # Torch-Pruning warns about every parameter outside a standard layer (position
                # embeddings) and prunes their last dimension, which is what we want.
                warnings.simplefilter("ignore")
                return tp.pruner.BasePruner(
                    model,
                    example,
                    # Our calling convention (a dict is keyword arguments); left to itself,
                    # Torch-Pruning first tries model(*x), which unpacks a lone tensor.
                    forward_fn=_WithDeadEnds(dead),
                    importance=guard,
                    global_pruning=global_pruning,
                    pruning_ratio=ratio,
                    pruning_ratio_dict=per_module,
                    max_pruning_ratio=max_layer_ratio if max_layer_ratio is not None else 1.0,
                    iterative_steps=steps,
                    ignored_layers=ignored,
                    num_heads=dict(num_heads),
                    # Whole heads of Hugging Face-style attention, at the channel ratio; its
                    # head size is fixed in code. nn.MultiheadAttention keeps pruning dims
                    # inside its heads when the model has no such attention.
                    prune_num_heads=bool(attention),
                    prune_head_dims=not attention,
                    head_pruning_ratio=ratio if attention else 0.0,
                    head_pruning_ratio_dict=head_dict,
                    # Torch-Pruning's defaults for these are shared dicts it writes into: pass
                    # fresh ones so one pruner's layers never leak into the next.
                    in_channel_groups={},
                    out_channel_groups={},
                )
        except InputError:
            raise
        except Exception as exc:
            raise InputError(
                f"{who}: Torch-Pruning cannot trace {type(model).__name__}: "
                f"{type(exc).__name__}: {exc}"
            ) from None

    if ratio_dict:
        per_module = {table[n]: float(r) for n, r in ratio_dict.items()}
        pruner = make(per_module, False, head_ratios(per_module))
    elif scope == "uniform":
        # Torch-Pruning's local mode keys each group's scope by its source module's name, so
        # groups sharing one (attention's embedding and head dims) overwrite each other and
        # go unpruned. One explicit ratio per group root gives each group its own scope.
        first = make(None, True)
        roots = [
            group[0].dep.target.module
            for group in first.DG.get_all_groups(
                ignored_layers=first.ignored_layers, root_module_types=first.root_module_types
            )
        ]
        pruner = make({root: ratio for root in roots}, False)
    else:
        pruner = make(None, scope == "global")
    _check_traced(model, pruner.DG, who)
    dead_names = {
        names[m]: "runs, but its output feeds none of the model's outputs (e.g. an unused "
        "pooler): its inputs shrink with the layer feeding it, its outputs are kept"
        for m in dead
        if m in names
    }
    return PrunerSetup(pruner, guard, classifier, frozen_reasons, attention, dead_names)


def _check_traced(model: nn.Module, graph: Any, who: str) -> None:
    """Refuse models with parameters the traced forward never reached.

    Torch-Pruning follows the autograd graph of one forward call. A module that call did not
    use (a branch taken only for other inputs) would keep its old input width and break.
    """
    from torch import nn

    seen: set[int] = set()
    for key in graph.module2node:
        if isinstance(key, nn.Module):
            seen.update(id(p) for p in key.parameters())
        elif isinstance(key, nn.Parameter):
            seen.add(id(key))
    missing = []
    for name, module in model.named_modules():
        own = list(module.parameters(recurse=False))
        if own and any(id(p) not in seen for p in own):
            missing.append(name or "<root>")
    if missing:
        raise InputError(
            f"{who}: Torch-Pruning cannot trace {type(model).__name__}: module(s) "
            f"{', '.join(missing[:5])} did not run in the traced forward pass (data-dependent "
            "control flow?); pruning would leave them mis-shaped"
        )


def taylor_gradients(model: nn.Module, task: Task) -> None:
    """Accumulate task-loss gradients on a few training batches (for Taylor importance)."""
    model.eval()  # BatchNorm statistics stay as they are; gradients still flow
    model.zero_grad(set_to_none=True)
    for i, (x, y) in enumerate(task.train_loader(seed=task.seed + 7)):
        if i >= TAYLOR_BATCHES:
            break
        task.loss_fn(primary_tensor(call(model, x)), y).backward()


def channels(module: Any) -> int | None:
    for attr in ("out_channels", "out_features", "embed_dim", "hidden_size"):
        if hasattr(module, attr):
            return int(getattr(module, attr))
    return None
