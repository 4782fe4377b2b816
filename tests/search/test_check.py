"""``wattwise check``: budgets on a results file, exit codes 0 / 1 / 2, and the progress lines."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from typer.testing import CliRunner

from wattwise.cli import app
from wattwise.errors import InputError
from wattwise.results import Results
from wattwise.search import SearchProgress, check_results, load_results

# A results file as JSON holds it: the checks read raw documents as well as Results.
RESULTS: dict[str, Any] = {
    "schema": 1,
    "task": "digits",
    "baseline": {
        "accuracy": 1.0,
        "energy_j_per_item": 1.8e-3,
        "energy_source": "estimated:cpu-ccf",
    },
    "best": {
        "accuracy": 0.9944,
        "accuracy_drop": 0.0056,
        "energy_j_per_item": 2.5e-3,
        "energy_source": "estimated:cpu-ccf",
        "energy_uncertainty": 0.4,
        "latency_ms_p90": 12.0,
    },
}


@pytest.fixture
def results_file(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(RESULTS))
    return path


def test_breaches_say_which_budget_and_by_how_much():
    breaches = check_results(RESULTS, max_energy_j_per_item=2e-3, max_accuracy_drop=0.005)
    assert [b.budget for b in breaches] == ["energy_per_item", "accuracy_drop"]
    energy, drop = breaches
    assert "2.5 mJ" in energy.message and "by 500 µJ (25%)" in energy.message
    assert "estimated:cpu-ccf ±40%" in energy.message  # an estimate never reads as measured
    assert "0.56 points exceeds the budget 0.50 points by 0.06 points" in drop.message
    assert check_results(RESULTS, max_energy_j_per_item=3e-3, max_accuracy_drop=0.01) == []
    assert check_results(RESULTS, max_latency_p90_ms=10)[0].budget == "latency_p90"


def test_no_best_breaks_every_budget_and_bad_budgets_are_input_errors():
    breaches = check_results({**RESULTS, "best": None}, max_energy_j_per_item=1.0)
    assert len(breaches) == 1 and "no best deployment" in breaches[0].message
    with pytest.raises(InputError, match="at least one budget"):
        check_results(RESULTS)
    with pytest.raises(InputError, match="fraction"):
        check_results(RESULTS, max_accuracy_drop=5)


def test_load_results_refuses_what_is_not_a_results_file(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("{nope")
    with pytest.raises(InputError, match="not JSON"):
        load_results(bad)
    bad.write_text(json.dumps({"schema": 7}))
    with pytest.raises(InputError, match="schema 7"):
        load_results(bad)
    with pytest.raises(InputError, match="cannot read"):
        load_results(tmp_path / "missing.json")


@pytest.mark.parametrize(
    ("figures", "match"),
    [
        ({"energy_j_per_item": -5e-3}, r"best\.energy_j_per_item is -0\.005; it must be greater"),
        ({"energy_j_per_item": 0.0}, "must be greater than 0"),
        ({"energy_j_per_item": float("nan")}, "is nan, not a finite number"),
        ({"energy_j_per_item": float("-inf")}, "is -inf, not a finite number"),
        ({"energy_j_per_item": False}, "must be a number, got a boolean"),
        ({"energy_j_per_item": [1e-3]}, "must be a number, got a list"),
        ({"latency_ms_p90": -1}, r"best\.latency_ms_p90 is -1; it must be at least 0"),
        ({"energy_source": 7}, "short source label"),
    ],
)
def test_broken_figures_are_input_errors_not_breaches(figures, match):
    broken = {**RESULTS, "best": {**RESULTS["best"], **figures}}
    with pytest.raises(InputError, match=match):
        check_results(broken, max_energy_j_per_item=1.0)


def test_missing_figures_are_breaches_and_a_zero_uncertainty_is_fine():
    best = {k: v for k, v in RESULTS["best"].items() if k != "energy_j_per_item"}
    (breach,) = check_results({**RESULTS, "best": best}, max_energy_j_per_item=1.0)
    assert breach.message == "energy per item: missing from the results"
    exact = {**RESULTS, "best": {**RESULTS["best"], "energy_uncertainty": 0}}
    assert check_results(exact, max_energy_j_per_item=1.0) == []
    # A negative accuracy drop is a candidate better than the baseline, not a broken file.
    better = {**RESULTS, "best": {**RESULTS["best"], "accuracy_drop": -0.002}}
    assert check_results(better, max_accuracy_drop=0.0) == []


def test_load_results_is_bounded_and_strict(tmp_path):
    path = tmp_path / "results.json"
    with path.open("wb") as fh:
        fh.truncate((64 << 20) + 1)  # one byte over the limit, stored as a hole
    with pytest.raises(InputError, match="more than the 64 MiB wattwise reads"):
        load_results(path)
    path.write_text(json.dumps(RESULTS)[:-1] + ', "best": null}')
    with pytest.raises(InputError, match="has the key 'best' twice"):
        load_results(path)
    path.write_text(json.dumps(RESULTS))
    assert load_results(path) == Results.from_dict(RESULTS)


def test_cli_check_exit_codes(results_file):
    runner = CliRunner()
    ok = runner.invoke(
        app,
        ["check", str(results_file), "--max-energy-per-item", "3mJ", "--max-accuracy-drop", "0.01"],
    )
    assert ok.exit_code == 0, ok.output
    assert "every budget holds" in ok.stdout

    broken = runner.invoke(app, ["check", str(results_file), "--max-energy-per-item", "2mJ"])
    assert broken.exit_code == 1
    assert "exceeds the budget 2 mJ by 500 µJ" in broken.stderr
    assert len(broken.stderr.strip().splitlines()) == 1

    for args in (
        ["check", str(results_file), "--max-energy-per-item", "2 parsecs"],
        ["check", str(results_file.parent / "missing.json"), "--max-accuracy-drop", "0.01"],
        ["check", str(results_file)],
    ):
        bad = runner.invoke(app, args)
        assert bad.exit_code == 2, (args, bad.output)
        assert bad.stderr.startswith("error: ") and len(bad.stderr.strip().splitlines()) == 1


def test_plain_progress_lines_name_the_trial_and_the_source():
    stream = io.StringIO()
    row: dict[str, Any] = {  # a trial row as the results file holds it
        "number": 3,
        "state": "complete",
        "label": "prune50 onnxruntime/int8 b256",
        "accuracy": 0.99,
        "accuracy_drop": 0.01,
        "energy_j_per_item": 2e-5,
        "energy_source": "estimated:cpu-ccf",
        "energy_uncertainty": 0.4,
        "latency_ms_p90": 5.0,
        "feasible": True,
        "duration_s": 9.5,
    }
    with SearchProgress(10, done=2, stream=stream) as bar:
        assert not bar.live  # a StringIO is not a terminal
        bar.trial_started(3, row["label"])
        bar.trial_finished(row, row, counted=True)
        bar.trial_finished(
            {"number": 4, "state": "failed", "label": "x", "fail_reason": "crash: SIGSEGV"},
            row,
            counted=True,
        )
    text = stream.getvalue()
    assert "[3/10] trial 3: prune50 onnxruntime/int8 b256" in text
    assert "20 µJ/item (estimated:cpu-ccf ±40%)" in text
    assert "failed (crash: SIGSEGV)" in text
    assert bar.done == 4


def test_live_progress_draws_a_bar():
    stream = io.StringIO()
    with SearchProgress(5, stream=stream, live=True) as bar:
        bar.trial_started(0, "base eager/fp32 b1")
        bar.message("hello")
    text = stream.getvalue()
    assert "hello" in text and "0/5" in text and "best" in text
