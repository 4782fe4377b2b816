"""Property-based tests: unit parsing, recipe round trips, the search's Pareto logic and budgets."""

from __future__ import annotations

import math
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from wattwise._units import format_energy, parse_quantity
from wattwise.errors import InputError
from wattwise.passes import Distill, Prune, Quantize, Sparsify, dump_recipe, parse_recipe
from wattwise.passes.distill import PRECISIONS
from wattwise.passes.prune import IMPORTANCES
from wattwise.passes.prune import SCOPES as PRUNE_SCOPES
from wattwise.passes.sparsity import PATTERNS
from wattwise.passes.sparsity import SCOPES as SPARSE_SCOPES
from wattwise.report import payback
from wattwise.search import check_results

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

PREFIX = {"": 1.0, "k": 1e3, "m": 1e-3, "u": 1e-6, "µ": 1e-6, "n": 1e-9}
finite_nonneg = st.floats(min_value=0.0, max_value=1e12, allow_nan=False, allow_infinity=False)


def _check_one_line_input_error(fn: Any, *args: Any) -> str:
    with pytest.raises(InputError) as info:
        fn(*args)
    msg = str(info.value)
    assert msg and "\n" not in msg
    return msg


# -- 1. units ---------------------------------------------------------------------------------


@FAST
@given(finite_nonneg, st.sampled_from(sorted(PREFIX)), st.sampled_from(["", " "]))
def test_prefixed_joules_round_trip(v: float, prefix: str, space: str) -> None:
    got = parse_quantity(f"{v!r}{space}{prefix}J", "J")
    assert got == pytest.approx(v * PREFIX[prefix], rel=1e-12, abs=0.0)


@FAST
@given(finite_nonneg, st.sampled_from(["J", "W", "s"]))
def test_bare_number_is_base_unit(v: float, unit: str) -> None:
    assert parse_quantity(repr(v), unit) == v
    assert parse_quantity(f"  {v!r}  ", unit) == v


@FAST
@given(finite_nonneg, st.sampled_from(sorted(PREFIX)))
def test_wh_is_3600_joules(v: float, prefix: str) -> None:
    got = parse_quantity(f"{v!r}{prefix}Wh", "J")
    assert got == pytest.approx(v * PREFIX[prefix] * 3600.0, rel=1e-12, abs=0.0)


@FAST
@given(
    finite_nonneg,
    st.sampled_from(sorted(PREFIX)),
    st.sampled_from([("J", "W"), ("J", "s"), ("W", "J"), ("s", "J"), ("Wh", "W"), ("Wh", "s")]),
)
def test_wrong_unit_is_one_line_input_error(v: float, prefix: str, units: tuple[str, str]) -> None:
    got, expected = units
    msg = _check_one_line_input_error(parse_quantity, f"{v!r}{prefix}{got}", expected)
    assert expected in msg


@FAST
@given(
    st.one_of(
        st.floats(max_value=-1e-300, allow_nan=False, allow_infinity=False).map(repr),
        st.sampled_from(["nan", "NaN", "inf", "-inf", "Infinity", "1e400", "1e400J", "-1J"]),
        st.sampled_from(["nan J", "inf J", "1e308kJ", "1e308kWh", "-0.5 mJ", "-2"]),
    ),
)
def test_negative_nan_inf_rejected(text: str) -> None:
    _check_one_line_input_error(parse_quantity, text, "J")


@FAST
@given(
    st.one_of(
        st.text(max_size=20),
        st.from_regex(r"\s*[+-]?[0-9.eE_]{0,6}\s*[kmuµnKMG]?(J|Wh|W|s|j|wh)?\s*", fullmatch=True),
        st.integers(),
        st.none(),
        st.binary(max_size=5),
    ),
    st.sampled_from(["J", "W", "s"]),
)
def test_arbitrary_input_raises_only_input_error(text: Any, unit: str) -> None:
    try:
        value = parse_quantity(text, unit)
    except InputError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert isinstance(value, float) and math.isfinite(value) and value >= 0


@FAST
@given(st.floats(min_value=0.0, max_value=1e6, allow_nan=False))
def test_format_energy_reads_back(joules: float) -> None:
    text = format_energy(joules)
    assert text.endswith("J") and "\n" not in text
    back = parse_quantity(text, "J")
    assert back == pytest.approx(joules, rel=5e-3, abs=1e-12)


# -- 2. recipes -------------------------------------------------------------------------------

names = st.text(min_size=1, max_size=8)
unit_floats = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
pos_floats = st.floats(min_value=1e-9, max_value=1e3, allow_nan=False)


@st.composite
def prunes(draw: st.DrawFn) -> Prune:
    ratio = draw(st.floats(min_value=0.0, max_value=0.95))
    max_layer = draw(st.floats(min_value=max(ratio, 1e-6), max_value=1.0, exclude_max=True))
    return Prune(
        ratio=ratio,
        scope=draw(st.sampled_from(PRUNE_SCOPES)),
        importance=draw(st.sampled_from(IMPORTANCES)),
        steps=draw(st.integers(1, 4)),
        finetune_epochs=draw(st.integers(0, 5)),
        lr=draw(st.none() | pos_floats),
        protect=tuple(draw(st.lists(names, max_size=3))),
        sensitivity=draw(st.booleans()),
        max_layer_ratio=max_layer,
    )


quantizes = st.builds(
    Quantize,
    method=st.sampled_from(["pt2e-int8", "dynamic-int8", "bf16", "fp16"]),
    calibration_items=st.integers(1, 4096),
    max_accuracy_drop=st.none() | unit_floats,
    qat_epochs=st.integers(0, 5),
    skip=st.lists(names, max_size=3).map(tuple),
)

sparsifies = st.builds(
    Sparsify,
    ratio=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
    pattern=st.sampled_from(PATTERNS),
    scope=st.sampled_from(SPARSE_SCOPES),
    finetune_epochs=st.integers(0, 5),
    measure=st.booleans(),
    max_time_s=pos_floats,
    protect=st.lists(names, max_size=3).map(tuple),
)

kwarg_values = st.one_of(
    st.integers(-1000, 1000), st.floats(allow_nan=False), st.text(max_size=5), st.booleans()
)


@st.composite
def distills(draw: st.DrawFn) -> Distill:
    student = draw(st.none() | st.sampled_from(["task", "tiny_cnn", "mlp"]))
    kwargs = {} if student is None else draw(st.dictionaries(names, kwarg_values, max_size=3))
    return Distill(
        teacher=draw(st.sampled_from([None, "original", "input"])),
        temperature=draw(pos_floats),
        alpha=draw(unit_floats),
        epochs=draw(st.integers(0, 10)),
        lr=draw(st.none() | pos_floats),
        feature_layers=tuple(
            draw(st.lists(st.from_regex(r"[a-z.0-9]{1,4}(=[a-z.0-9]{1,4})?", fullmatch=True)))
        ),
        feature_weight=draw(st.floats(min_value=0.0, max_value=1e3)),
        student=student,
        student_kwargs=kwargs,
        precision=draw(st.sampled_from(PRECISIONS)),
    )


any_pass = st.one_of(prunes(), quantizes, sparsifies, distills())
recipes = st.lists(any_pass, max_size=5)


@SLOW
@given(recipes)
def test_recipe_round_trip_is_exact(passes: list[Any]) -> None:
    text = dump_recipe(passes)
    back = parse_recipe(text)
    assert back == passes
    assert [type(p) for p in back] == [type(p) for p in passes]
    assert dump_recipe(back) == text


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(),
    st.text(max_size=6),
    st.sampled_from(["prune", "quantize", "sparsify", "distill", "type", "version", "passes"]),
)
# Mixed key types and huge ints once escaped as TypeError/OverflowError; they have their own
# regression tests below.
junk = st.recursive(
    scalars,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=8,
)


def _check_parses_or_input_error(text: str) -> None:
    try:
        out = parse_recipe(text)
    except InputError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert isinstance(out, list)
        assert parse_recipe(dump_recipe(out)) == out


@SLOW
@given(st.text(max_size=60))
def test_arbitrary_text_raises_only_input_error(text: str) -> None:
    _check_parses_or_input_error(text)


@SLOW
@given(junk)
def test_arbitrary_yaml_document_raises_only_input_error(doc: Any) -> None:
    _check_parses_or_input_error(yaml.safe_dump(doc))
    _check_parses_or_input_error(yaml.safe_dump({"wattwise_recipe": 1, "passes": doc}))


@SLOW
@given(
    st.lists(any_pass, min_size=1, max_size=3),
    st.data(),
    st.one_of(st.text(max_size=6), st.sampled_from(["ratio", "method", "steps", "type", "lr"])),
    junk,
)
def test_mutated_recipe_raises_only_input_error(
    passes: list[Any], data: st.DataObject, key: str, value: Any
) -> None:
    doc = yaml.safe_load(dump_recipe(passes))
    item = data.draw(st.sampled_from(doc["passes"]))
    field = data.draw(st.sampled_from([key, *item]))
    item[field] = value
    _check_parses_or_input_error(yaml.safe_dump(doc))


@pytest.mark.parametrize(
    "text", ["passes: []\n1: 2\nfoo: 3\n", "- type: prune\n  1: 2\n  foo: 3\n"]
)
def test_mixed_type_keys_are_an_input_error(text: str) -> None:
    # Once a TypeError from sorting int and str keys together.
    _check_parses_or_input_error(text)


def test_huge_int_is_an_input_error() -> None:
    # Once an OverflowError from math.isfinite on an int too large for a float.
    _check_parses_or_input_error("- type: prune\n  ratio: 1" + "0" * 400 + "\n")


def test_recipe_format_version_true_is_accepted_as_1() -> None:
    # Quirk, not asserted as wanted behaviour: True == 1, so ``wattwise_recipe: true`` passes.
    assert parse_recipe("wattwise_recipe: true\npasses: []\n") == []


# -- 3. Pareto front, best row, budgets -------------------------------------------------------

BASE_ACC = 0.9
ACCS = (0.7, 0.8, 0.85, 0.88, 0.9, 0.95)


def _settings(max_drop: float, latency: float | None) -> Any:
    from wattwise.search import ModelChoice, SearchSettings, SearchSpace

    space = SearchSpace((ModelChoice("base"),), ("eager/fp32",), (1,), (0,))
    return SearchSettings(None, "t", "id", "offline", max_drop, latency, 1, space)


def _trial(number: int, state: str, acc: float, energy: float, p90: float) -> Any:
    import optuna
    from optuna.trial import TrialState

    states = {"complete": TrialState.COMPLETE, "failed": TrialState.FAIL}
    figures = {"accuracy": acc, "energy_j_per_item": energy, "latency_ms_p90": p90}
    t = optuna.trial.create_trial(
        state=states[state],
        values=[energy, -acc, p90] if state == "complete" else None,
        user_attrs={"figures": figures, "fail_reason": None if state == "complete" else "x"},
    )
    t.number = number
    return t


trial_specs = st.lists(
    st.tuples(
        st.sampled_from(["complete"] * 4 + ["failed"]),
        st.sampled_from(ACCS),
        st.integers(1, 6).map(lambda e: e * 1e-3),
        st.integers(1, 6).map(float),
    ),
    max_size=12,
)
bounds = st.tuples(st.sampled_from([0.0, 0.02, 0.05, 0.1]), st.sampled_from([None, 3.0, 5.0]))


def _trial_rows(specs: list[tuple[Any, ...]], bound: tuple[float, float | None]) -> list[Any]:
    from wattwise.search._rows import trial_rows

    trials = [_trial(i, *s) for i, s in enumerate(specs)]
    return trial_rows(trials, BASE_ACC, _settings(*bound))


def _rows(specs: list[tuple[Any, ...]], bound: tuple[float, float | None]) -> list[dict[str, Any]]:
    return [r.to_dict() for r in _trial_rows(specs, bound)]


def _dom(a: dict[str, Any], b: dict[str, Any]) -> bool:
    pa = (-a["accuracy"], a["energy_j_per_item"], a["latency_ms_p90"])
    pb = (-b["accuracy"], b["energy_j_per_item"], b["latency_ms_p90"])
    return all(x <= y for x, y in zip(pa, pb, strict=True)) and pa != pb


@SLOW
@given(trial_specs, bounds)
def test_pareto_front_properties(specs: list[tuple[Any, ...]], bound: Any) -> None:
    from wattwise.search._optimize import _best

    rows = _rows(specs, bound)
    max_drop, latency = bound
    feasible = [r for r in rows if r["feasible"]]
    front = [r for r in rows if r["pareto"]]
    for r in rows:
        ok = (
            r["state"] == "complete"
            and BASE_ACC - r["accuracy"] <= max_drop + 1e-9
            and (latency is None or r["latency_ms_p90"] <= latency)
        )
        assert r["feasible"] == ok
        if not r["feasible"]:
            assert not r["pareto"]
    for f in front:
        assert not any(_dom(o, f) for o in feasible)
    for r in feasible:
        if not r["pareto"]:
            assert any(_dom(f, r) for f in front)
    assert bool(front) == bool(feasible)
    best = _best(_trial_rows(specs, bound))
    if not feasible:
        assert best is None
    else:
        assert best is not None and best.feasible and best.pareto
        assert best.figures.energy_j_per_item == min(r["energy_j_per_item"] for r in feasible)


@SLOW
@given(trial_specs, bounds, st.data())
def test_dominated_row_leaves_front_unchanged(specs: Any, bound: Any, data: Any) -> None:
    rows = _rows(specs, bound)
    feasible = [i for i, r in enumerate(rows) if r["feasible"]]
    assume(feasible)
    src = specs[data.draw(st.sampled_from(feasible))]
    worse_acc = data.draw(st.sampled_from([a for a in ACCS if a <= src[1]]))
    worse = ("complete", worse_acc, src[2] + data.draw(st.integers(0, 2)) * 1e-3, src[3])
    assume(worse[1:] != src[1:])
    after = _rows([*specs, worse], bound)
    assert [r["number"] for r in after if r["pareto"]] == [r["number"] for r in rows if r["pareto"]]
    assert not after[-1]["pareto"]


@FAST
@given(
    # Energy must be > 0 (check refuses zero or negative J/item as a broken file).
    st.floats(min_value=1e-12, max_value=10.0),
    st.floats(min_value=0.0, max_value=1.0),
    st.floats(min_value=0.0, max_value=1e4),
    st.floats(min_value=1e-9, max_value=10.0),
)
def test_check_budget_above_holds_below_breaks(e: float, d: float, p: float, gap: float) -> None:
    results = {
        "best": {"energy_j_per_item": e, "accuracy_drop": d, "latency_ms_p90": p},
        "baseline": {"accuracy": 0.9},
    }
    assert check_results(results, max_energy_j_per_item=e + gap) == []
    assert check_results(results, max_energy_j_per_item=e) == []
    assert check_results(results, max_latency_p90_ms=p + gap) == []
    assert check_results(results, max_accuracy_drop=min(1.0, d + gap)) == []
    if e - gap >= 0:
        (b,) = check_results(results, max_energy_j_per_item=e - gap)
        assert b.budget == "energy_per_item" and b.value == e and "\n" not in b.message
    if p - gap >= 0:
        (b,) = check_results(results, max_latency_p90_ms=p - gap)
        assert b.budget == "latency_p90" and b.value == p
    if d - gap >= 0 and gap > 1e-11:
        (b,) = check_results(results, max_accuracy_drop=d - gap)
        assert b.budget == "accuracy_drop" and b.value == d
    no_best: dict[str, Any] = {"best": None, "baseline": {}}  # a raw results document
    got = check_results(no_best, max_energy_j_per_item=e + gap, max_latency_p90_ms=p + gap)
    assert [b.budget for b in got] == ["energy_per_item", "latency_p90"]


@FAST
@given(
    st.floats(min_value=1e-9, max_value=10.0),
    st.floats(min_value=1e-9, max_value=10.0),
    st.none() | st.floats(min_value=0.0, max_value=1e6),
)
def test_payback_arithmetic(e_base: float, e_best: float, search_j: float | None) -> None:
    out = payback(
        {
            "best": {"energy_j_per_item": e_best},
            "baseline": {"energy_j_per_item": e_base},
            "search_energy_j": search_j,
        }
    )
    saving = e_base - e_best
    assert out["saving_j"] == saving
    if saving <= 0:
        assert out["state"] == "no_saving"
    elif search_j is None:
        assert out["state"] == "unknown" and out["items"] is None
    else:
        assert out["state"] == "pays"
        assert out["items"] == pytest.approx(search_j / saving)
        assert out["items"] * saving == pytest.approx(search_j)
    assert payback({"best": None, "baseline": {}})["state"] == "no_best"
