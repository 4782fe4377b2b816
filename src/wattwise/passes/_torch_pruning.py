"""The adapter to Torch-Pruning: one place that builds its pruners and knows its limits.

:mod:`wattwise.passes.prune` (the ``Prune`` pass) and :mod:`wattwise.passes._sensitivity`
(per-group sensitivity) both prune through here, so what Torch-Pruning 1.6 cannot do is handled
once:

* recurrent layers are traced through a shape-alike stand-in (:func:`recurrent_swapped`): its
  GRU/RNN have no pruner and its LSTM pruner fails on the gate weights;
* the final classifier (:func:`find_classifier`), ``protect``-ed modules and recurrent layers
  are frozen, and ``max_layer_ratio`` caps each group, by wrapping the importance
  (:class:`_GuardedImportance`);
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


@dataclasses.dataclass
class PrunerSetup:
    """A Torch-Pruning pruner built on ``model``, with what it will not touch and why."""

    pruner: Any
    guard: _GuardedImportance
    classifier: str | None
    frozen_reasons: dict[str, str]


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
    guard = _GuardedImportance(_importance(importance), frozen, names, max_layer_ratio)
    table = dict(model.named_modules())
    for name in ratio_dict or {}:
        if name not in table:
            raise InputError(f"{who}: no module named {name!r} for a per-layer ratio")

    def make(per_module: dict[nn.Module, float] | None, global_pruning: bool) -> Any:
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
                    forward_fn=call,
                    importance=guard,
                    global_pruning=global_pruning,
                    pruning_ratio=ratio,
                    pruning_ratio_dict=per_module,
                    max_pruning_ratio=max_layer_ratio if max_layer_ratio is not None else 1.0,
                    iterative_steps=steps,
                    ignored_layers=ignored,
                    num_heads={
                        m: m.num_heads
                        for m in model.modules()
                        if isinstance(m, nn.MultiheadAttention)
                    },
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
        pruner = make({table[n]: float(r) for n, r in ratio_dict.items()}, False)
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
    return PrunerSetup(pruner, guard, classifier, frozen_reasons)


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
