"""Small helpers shared by the pass tests."""

from __future__ import annotations

import torch
from torch import nn


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
