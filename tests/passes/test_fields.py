"""The field checks every pass config runs in ``__post_init__``: what they accept, what they
store, and the one-line message naming ``Class.field`` for what they refuse."""

from __future__ import annotations

import dataclasses

import pytest

from wattwise.errors import InputError
from wattwise.passes._fields import choice, flag, integer, names, number


@dataclasses.dataclass(frozen=True)
class Knobs:
    rate: object = 0.5
    cap: object = None
    steps: object = 1
    mode: object = "fast"
    on: object = True
    layers: object = ()

    def __post_init__(self) -> None:
        number(self, "rate", low=0.0, high=1.0, high_open=True)
        number(self, "cap", low=0.0, low_open=True, optional=True)
        integer(self, "steps", low=1, high=10)
        choice(self, "mode", ("fast", "exact"))
        flag(self, "on")
        names(self, "layers")


def test_accepted_values_are_stored_normalised() -> None:
    knobs = Knobs(rate=0, cap=3, layers=["a.b", "c"])
    assert knobs.rate == 0.0 and isinstance(knobs.rate, float)
    assert knobs.cap == 3.0 and isinstance(knobs.cap, float)
    assert knobs.layers == ("a.b", "c")  # a YAML list becomes a tuple: hashable, frozen
    assert Knobs(layers="head").layers == ("head",)
    assert Knobs().cap is None
    assert Knobs(rate=0.25) == Knobs(rate=0.25)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("rate", 1.0, "Knobs.rate must be a number in [0.0, 1.0), got 1.0"),
        ("rate", True, "Knobs.rate must be a number in [0.0, 1.0), got True"),
        ("rate", float("nan"), "Knobs.rate must be a number in [0.0, 1.0), got nan"),
        ("cap", 0, "Knobs.cap must be a number in (0.0, inf), got 0"),
        ("steps", 0, "Knobs.steps must be an integer >= 1, got 0"),
        ("steps", 11, "Knobs.steps must be <= 10, got 11"),
        ("steps", 2.0, "Knobs.steps must be an integer >= 1, got 2.0"),
        ("mode", "slow", "Knobs.mode must be one of fast, exact, got 'slow'"),
        ("on", 1, "Knobs.on must be true or false, got 1"),
        ("layers", ["ok", ""], "Knobs.layers must be a list of module names, got ['ok', '']"),
    ],
)
def test_refused_values_name_the_field_in_one_line(field: str, value: object, message: str) -> None:
    with pytest.raises(InputError) as err:
        Knobs(**{field: value})
    assert str(err.value) == message


def test_an_int_too_large_for_a_float_is_refused_not_an_overflow() -> None:
    with pytest.raises(InputError, match=r"Knobs\.cap must be a number"):
        Knobs(cap=10**400)
