"""The one MAC counter against counts worked out by hand.

MACs here are the multiply-accumulates of convolutions, matmuls and attention (what
``FlopCounterMode`` counts, FLOPs / 2); elementwise work (softmax, norms, activations) is not
in them. The transformer cases run in eval mode without autograd, where PyTorch takes its
fused fast path (``_transformer_encoder_layer_fwd``, ``_native_multi_head_attention``), whose
operators the counter cannot see into: it counted 0 for a 2-layer encoder before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from wattwise.measure import measure
from wattwise.measure._macs import count_macs, count_step_macs

D, HEADS, FF, SEQ = 64, 4, 128, 16


def _attention_macs(seq: int, d: int) -> int:
    """Self-attention over ``seq`` tokens of width ``d``: q/k/v projections, q·kᵀ, scores·v,
    the output projection (the head split changes none of these totals)."""
    return 3 * seq * d * d + seq * seq * d + seq * seq * d + seq * d * d


def _encoder_layer_macs(seq: int, d: int, ff: int) -> int:
    return _attention_macs(seq, d) + seq * d * ff + seq * ff * d


class _OpsSeen(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.names.add(func._overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def _ops(fn: Callable[[], Any]) -> set[str]:
    with _OpsSeen() as seen:
        fn()
    return seen.names


def test_conv_counts_kernel_times_output_positions() -> None:
    x = torch.randn(2, 3, 16, 16)
    conv = nn.Conv2d(3, 8, 3, padding=1)
    # per output element: 3 input channels × 3×3 taps; 8 × 16 × 16 outputs per item, 2 items
    assert count_macs(conv, x) == 2 * 8 * 16 * 16 * 3 * 3 * 3
    depthwise = nn.Conv2d(8, 8, 5, stride=2, padding=2, groups=8)
    assert count_macs(depthwise, torch.randn(1, 8, 16, 16)) == 8 * 8 * 8 * 5 * 5


def test_linear_counts_inputs_times_outputs_per_row() -> None:
    assert count_macs(nn.Linear(32, 10), torch.randn(4, 32)) == 4 * 32 * 10
    # a 3-D input applies the layer to every token
    assert count_macs(nn.Linear(32, 10), torch.randn(2, 7, 32)) == 2 * 7 * 32 * 10


@pytest.mark.parametrize("need_weights", [False, True])
def test_multi_head_attention_counts_projections_and_both_products(need_weights: bool) -> None:
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(D, HEADS, batch_first=True).eval()
    x = torch.randn(1, SEQ, D)

    def call() -> Any:
        return mha(x, x, x, need_weights=need_weights)

    with torch.no_grad():
        if not need_weights:  # the case PyTorch fuses into one native op
            assert "_native_multi_head_attention" in _ops(call)
        assert count_step_macs(call) == _attention_macs(SEQ, D)


def test_transformer_encoder_in_eval_mode_counts_every_layer() -> None:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(D, HEADS, FF, batch_first=True)
    encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False).eval()
    x = torch.randn(1, SEQ, D)
    expected = 2 * _encoder_layer_macs(SEQ, D, FF)

    with torch.inference_mode():
        # The case of the bug: eval mode without autograd takes the fused encoder layer.
        assert "_transformer_encoder_layer_fwd" in _ops(lambda: encoder(x))
        assert count_step_macs(lambda: encoder(x)) == expected
    assert count_macs(encoder, x) == expected
    # Counting leaves PyTorch's fast path as it found it, and the model's mode too.
    assert torch.backends.mha.get_fastpath_enabled()
    assert not encoder.training
    encoder.train()
    count_macs(encoder, x)
    assert encoder.training


def test_the_harness_reports_the_same_count_per_item() -> None:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(D, HEADS, FF, batch_first=True)
    encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
    m = measure(
        encoder,
        torch.randn(1, SEQ, D),
        batch_size=2,
        threads=1,
        isolate=False,
        max_time_s=0.5,
        min_window_s=0.05,
        warmup_max_s=0.2,
    )
    assert m.macs_per_item == 2 * _encoder_layer_macs(SEQ, D, FF)
