"""``wattwise.results``: the one typed schema of results.json and trials.csv.

What a real search writes is checked in ``test_confirm.py`` (it runs one, confirmed, and
hands its output to ``results_checks``); here the schema itself: exact round trips, a newer
writer's keys kept, and hostile documents refused in one line that names the field.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wattwise.errors import InputError
from wattwise.results import (
    FIGURE_KEYS,
    GENERATION_KEYS,
    BestEntry,
    Confirmation,
    Figures,
    Results,
    TrialRow,
)

FIGURES = {
    "accuracy": 0.99,
    "energy_j_per_item": 2.5e-3,
    "energy_source": "estimated:cpu-ccf",
    "energy_uncertainty": 0.4,
    "latency_ms_p50": 10.0,
    "latency_ms_p90": 12.0,
    "throughput_items_per_s": 400.0,
    "co2e_g_per_million_items": 0.33,
    "macs_per_item": 5.6e6,
    "params": 120_000,
    "size_bytes": 480_000,
    "disturbed_windows": 0,
}
DEPLOYMENT = {"backend": "eager", "precision": "fp32", "batch_size": 16, "threads": 1}
CANDIDATE = {
    "label": "fp32 eager b16 t1",
    "trial": 1,
    "deployment": DEPLOYMENT,
    "rounds_measured": 3,
    "failures": [],
    "round_figures": {
        "energy_j_per_item": [1e-3, 2e-3, None],
        "latency_ms_p50": [1.0, 1.0, None],
        "latency_ms_p90": [2.0, 2.0, None],
        "throughput_items_per_s": [9.0, 9.0, None],
        "co2e_g_per_million_items": [0.1, 0.2, None],
    },
    "energy_j_per_item": 1.5e-3,
    "energy_source": "estimated:cpu-ccf",
    "energy_uncertainty": 0.4,
    "latency_ms_p50": 1.0,
    "latency_ms_p90": 2.0,
    "throughput_items_per_s": 9.0,
    "co2e_g_per_million_items": 0.15,
    "disturbed_windows": 2,
    "spread_rel": 0.66,
}


def _document() -> dict[str, Any]:
    """A whole results document, every field set, as ``Results.to_dict`` orders it."""
    entry = {"number": 1, "label": "base eager/fp32 b16 t1", **FIGURES, "accuracy_drop": 0.01}
    entry.update(recipe=[{"type": "prune", "version": 1, "ratio": 0.5}], student=None)
    entry["deployment"] = {**DEPLOYMENT, "device": "cpu"}
    doc = Results().to_dict()
    doc.update(
        task="digits",
        task_spec="digits",
        study="digits-offline",
        storage="sqlite:///x.db",
        scenario="offline",
        max_accuracy_drop=0.01,
        hardware={"cpu_model": "x", "cuda_devices": []},
        meter={"source": "estimated:cpu-ccf", "uncertainty": 0.4},
        baseline={**FIGURES, "recipe": [], "deployment": {**DEPLOYMENT, "device": "cpu"}},
        baseline_same_batch={
            **FIGURES,
            "batch_size": 16,
            "threads": 1,
            "deployment": {**DEPLOYMENT, "device": "cpu"},
        },
        best={**entry, "artifact": "out/artifact", "trial_energy_j_per_item": 2e-3},
        energy_ratio=40.0,
        energy_ratio_same_batch=4.0,
        confirmation={
            "rounds": 3,
            "order": [["baseline", "best"], ["best", "baseline"], ["baseline", "best"]],
            "candidates": {"baseline": copy.deepcopy(CANDIDATE), "best": copy.deepcopy(CANDIDATE)},
            "ratios": {"energy_ratio": {"rounds": [1.0, 2.0], "median": 1.5}},
            "chosen": "best",
            "spread": 0.66,
        },
        pareto=[entry],
        trials=2,
        failed_trials=0,
        interrupted_trials=0,
        trials_budget=2,
        search_energy_j=12.5,
        search_energy_source="estimated:cpu-ccf",
        search_energy_uncertainty=0.4,
        search_energy_by_phase_j={"baseline_train": 3.0, "trials_measure": 9},
        payback_items=1234.0,
        payback_basis="baseline_same_batch",
        payback_items_batch1=99.0,
        grid_intensity_g_per_kwh=55,
        grid_intensity_source="user",
        price_per_kwh=0.31,
        price_source="user",
        currency="EUR",
        elapsed_s=3.5,
        interrupted=False,
        notes=["a note"],
    )
    return copy.deepcopy(doc)  # nothing shared between documents, nor with the constants


def test_a_whole_document_round_trips_exactly() -> None:
    doc = _document()
    read = Results.from_dict(copy.deepcopy(doc))
    assert read.to_dict() == doc and list(read.to_dict()) == list(doc)
    text = json.dumps(read.to_dict(), indent=2)
    assert text == json.dumps(doc, indent=2)  # the bytes too: 55 stays 55, not 55.0
    assert read.best is not None and read.best.figures.energy_j_per_item == 2.5e-3
    assert read.confirmation is not None and read.confirmation.ratio("energy_ratio") == 1.5
    assert read.confirmation.winner is not None and read.confirmation.winner.trial == 1


def test_the_figure_keys_are_the_figures_fields() -> None:
    # A classifier's figures: the generation ones are not written when not measured.
    assert tuple(FIGURES) == tuple(k for k in FIGURE_KEYS if k not in GENERATION_KEYS)
    assert Figures.from_dict(FIGURES).to_dict() == FIGURES


GENERATION = {
    "prefill_energy_j_per_token": 8e-5,
    "decode_energy_j_per_token": 6e-4,
    "ttft_ms_p50": 10.0,
    "ttft_ms_p90": 11.0,
    "tbt_ms_p50": 1.4,
    "tbt_ms_p90": 1.6,
    "tokens_per_s": 4900.0,
}


def test_a_generative_tasks_figures_round_trip_and_bound_the_time_between_tokens() -> None:
    both = {**FIGURES, **GENERATION}
    read = Figures.from_dict(both)
    assert read.to_dict() == both and tuple(read.to_dict()) == FIGURE_KEYS
    assert read.latency_bound_ms == 1.6  # TBT, not the whole response's latency
    assert Figures.from_dict(FIGURES).latency_bound_ms == 12.0
    doc = _document()
    doc["best"].update(GENERATION)
    doc["confirmation"]["candidates"]["best"].update(GENERATION)
    doc["confirmation"]["candidates"]["best"]["round_figures"]["decode_energy_j_per_token"] = [
        6e-4,
        6.2e-4,
        None,
    ]
    doc["confirmation"]["ratios"]["decode_energy_ratio_same_batch"] = {
        "rounds": [2.1, 2.3],
        "median": 2.2,
    }
    written = Results.from_dict(copy.deepcopy(doc)).to_dict()
    assert written == doc  # every value kept (in the writer's order, as the next line checks)
    text = json.dumps(written)
    assert json.dumps(Results.from_dict(json.loads(text)).to_dict()) == text
    again = Results.from_dict(written)
    assert again.best is not None and again.best.figures.decode_energy_j_per_token == 6e-4
    assert again.confirmation is not None
    assert again.confirmation.ratio("decode_energy_ratio_same_batch") == 2.2


def test_a_newer_writers_keys_are_kept_and_written_back() -> None:
    doc = _document()
    doc["carbon_budget_g"] = 12.0  # what a later wattwise might add
    doc["best"]["energy_j_per_item_p99"] = 3e-3
    doc["confirmation"]["candidates"]["best"]["energy_j_per_item_p99"] = 3e-3
    read = Results.from_dict(doc)
    assert read.extra == {"carbon_budget_g": 12.0}
    assert read.best is not None and read.best.extra == {"energy_j_per_item_p99": 3e-3}
    assert read.to_dict() == doc


def test_an_older_schema_1_document_loads_with_its_missing_fields_empty() -> None:
    old = {"schema": 1, "task": "digits", "best": {"energy_j_per_item": 1e-3}, "baseline": {}}
    read = Results.from_dict(old)
    assert read.confirmation is None and read.baseline_same_batch is None
    assert read.best is not None and read.best.figures.accuracy is None
    written = read.to_dict()
    assert written["best"]["energy_j_per_item"] == 1e-3 and written["pareto"] == []


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        (2, "the results has results schema 2; this wattwise reads schema 1"),
        (True, "the results has results schema True; this wattwise reads schema 1"),
        ("1", "the results has results schema 'a string'; this wattwise reads schema 1"),
    ],
)
def test_another_schema_is_refused(schema: Any, message: str) -> None:
    with pytest.raises(InputError) as info:
        Results.from_dict({**_document(), "schema": schema})
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("best", "energy_j_per_item"), "2mJ", "results: best.energy_j_per_item must be a number, got a string"),
        (("best", "energy_j_per_item"), float("nan"), "results: best.energy_j_per_item is nan, not a finite number"),
        (("baseline", "params"), 1.5, "results: baseline.params must be a whole number, got 1.5"),
        (("baseline", "energy_source"), "x\x1b[2J", "results: baseline.energy_source must be a short source label such as 'measured:rapl', got 'x\\x1b[2J'"),
        (("best", "recipe"), [3], "results: best.recipe[0] must be an object, got a number"),
        (("best",), [1], "results: best must be an object, got a list"),
        (("pareto",), {"a": 1}, "results: pareto must be a list, got an object"),
        (("notes",), ["ok", 3], "results: notes[1] must be a string, got a number"),
        (("confirmation", "candidates", "best", "round_figures", "energy_j_per_item"), ["x"], "results: confirmation.candidates.best.round_figures.energy_j_per_item[0] must be a number, got a string"),
        (("confirmation", "order"), [["best", 1]], "results: confirmation.order[0] must be a list of role names"),
        (("search_energy_by_phase_j", "trials_measure"), None, "results: search_energy_by_phase_j.trials_measure must be a number, got null"),
        (("interrupted",), "no", "results: interrupted must be true or false, got a string"),
    ],
)  # fmt: skip
def test_a_wrong_type_is_one_line_naming_the_field(
    path: tuple[str, ...], value: Any, message: str
) -> None:
    doc = _document()
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(InputError) as info:
        Results.from_dict(doc)
    assert str(info.value) == message


def test_trial_rows_round_trip_and_need_their_number_and_state() -> None:
    row = {"number": 3, "state": "complete", **FIGURES, "accuracy_drop": 0.01, "feasible": True}
    read = TrialRow.from_dict(row)
    assert read.figures == Figures.from_dict(FIGURES) and read.feasible and not read.pareto
    assert TrialRow.from_dict(read.to_dict()) == read
    with pytest.raises(InputError, match=r"^trials\[2\]\.number is missing"):
        TrialRow.from_dict({"state": "failed"}, name="trials[2]")
    with pytest.raises(InputError, match=r"^row\.state must be a string, got a number"):
        TrialRow.from_dict({"number": 1, "state": 5})


def test_entries_are_built_from_trial_rows() -> None:
    row = TrialRow.from_dict({"number": 3, "state": "complete", **FIGURES, "label": "x"})
    best = BestEntry.of_row(row, artifact="a", trial_energy_j_per_item=1.0)
    assert best.number == 3 and best.label == "x" and best.figures == row.figures
    assert BestEntry.from_dict(best.to_dict()) == best
    assert Confirmation.from_dict(Confirmation().to_dict()) == Confirmation()


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(_document())), _JSON)
def test_any_value_anywhere_reads_or_is_refused_in_one_line(key: str, value: Any) -> None:
    """Hostile input: whatever JSON value stands in a field, from_dict returns a document that
    writes back what it read, or raises one InputError line; never another exception."""
    doc = _document()
    doc[key] = value
    try:
        read = Results.from_dict(doc)
    except InputError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 400
    else:
        assert Results.from_dict(read.to_dict()) == read
