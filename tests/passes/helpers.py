"""Small helpers shared by the pass tests."""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)


def part(module: nn.Module, path: str, kind: type[M]) -> M:
    """The submodule of ``module`` at the dotted ``path``, checked to be a ``kind``.

    A model's layers typed as what the test expects them to be: ``model.layer1.conv1[0]``
    types as ``Tensor | Module`` (``nn.Module.__getattr__``), ``part(model,
    "layer1.conv1.0", nn.Conv2d)`` as the ``Conv2d`` it is checked to be.
    """
    found = module.get_submodule(path)
    assert isinstance(found, kind), f"{path} is a {type(found).__name__}, not {kind.__name__}"
    return found


def weight_of(module: nn.Module, path: str) -> torch.Tensor:
    """The ``weight`` of the layer at the dotted ``path``, checked to be a tensor (a pass may
    have made it a tensor subclass, e.g. torchao's quantized weights)."""
    weight = module.get_submodule(path).weight
    assert isinstance(weight, torch.Tensor), f"{path}.weight is a {type(weight).__name__}"
    return weight


def state_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    if sa.keys() != sb.keys():
        return False
    return all(
        type(sa[k]) is type(sb[k])
        and (
            not torch.is_tensor(sa[k]) or (sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]))
        )
        for k in sa
    )
