"""The Torch-Pruning adapter on its own: stand-ins for recurrent layers, what it freezes, and
the models it refuses. (``test_prune.py`` checks the Prune pass built on it.)"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from passes.zoo import TinyGRU, TinyMLP, Untraceable
from wattwise.errors import InputError
from wattwise.passes._torch_pruning import (
    build_pruner,
    channels,
    find_classifier,
    recurrent_swapped,
)

ROWS = torch.randn(1, 1, 8, 8)  # one digit: 8 rows of 8 pixels


def test_recurrent_layers_are_swapped_for_a_traceable_stand_in_and_put_back() -> None:
    model = TinyGRU().eval()
    gru = model.rnn
    with torch.no_grad():
        expected_shape = model(ROWS).shape
    with recurrent_swapped(model) as stand_ins:
        assert list(stand_ins) == ["rnn"] and model.rnn is stand_ins["rnn"]
        assert not isinstance(model.rnn, nn.RNNBase)
        with torch.no_grad():
            assert model(ROWS).shape == expected_shape  # same input -> output coupling
    assert model.rnn is gru
    with pytest.raises(RuntimeError), recurrent_swapped(model):
        raise RuntimeError("a failing step")
    assert model.rnn is gru  # put back on the way out of an error too


def test_the_classifier_is_the_last_layer_to_run_and_is_never_cut() -> None:
    model = TinyMLP().eval()
    assert find_classifier(model, ROWS) == ("net.5", model.net[5])
    setup = build_pruner(model, ROWS, ratio=0.5, scope="uniform")
    assert setup.classifier == "net.5"
    setup.pruner.step()
    assert model.net[5].out_features == 10
    assert channels(model.net[1]) == 64 and channels(model.net[3]) == 32
    with torch.no_grad():
        assert model(ROWS).shape == (1, 10)


def test_protected_and_recurrent_groups_are_left_out_with_the_reason() -> None:
    model = TinyMLP().eval()
    setup = build_pruner(model, ROWS, ratio=0.5, scope="uniform", protect=("net.1",))
    setup.pruner.step()
    assert model.net[1].out_features == 128 and model.net[3].out_features == 32
    assert "protected" in setup.guard.skipped["net.1"]

    gru = TinyGRU().eval()
    with recurrent_swapped(gru):
        setup = build_pruner(gru, ROWS, ratio=0.5, scope="uniform")
        setup.pruner.step()
    assert gru.proj.out_features == 32  # tied to the recurrent layer, so kept whole
    assert "'rnn'" in setup.guard.skipped["proj"]


def test_a_model_the_trace_cannot_follow_is_refused() -> None:
    with pytest.raises(InputError, match="did not run in the traced forward pass"):
        build_pruner(Untraceable().eval(), ROWS, ratio=0.5)
    with pytest.raises(InputError, match="no module named 'nope'"):
        build_pruner(TinyMLP().eval(), ROWS, ratio=0.5, protect=("nope",))
