"""The confirmation stage: the headline of a search, measured side by side after it.

A real ``wattwise optimize`` (a tiny task, two trials) and ``wattwise report --confirm`` run
through the CLI; results.json, the report and the summary are checked, and a rerun must
publish the same stored rounds. The round arithmetic (rotation, paired ratios, the runner-up's
win) is checked on its own.
"""

from __future__ import annotations

import json
import statistics
import subprocess
from pathlib import Path

import pytest
from results_checks import assert_results_published, assert_round_trips
from search_helpers import subprocess_env, wattwise_cmd

from wattwise.search._confirm import _choose, _paired, _rotations

# Eager only, so a confirmation child spends its seconds measuring, not exporting to ONNX: the
# winner (batch 16, one thread) and the runner-up (batch 1, one thread) are both fp32 eager, and
# the same-batch baseline shares the winner's deployment (confirmed as its own role).
SPACE = {
    "models": [{"name": "base"}],
    "deployments": ["eager/fp32"],
    "batch_sizes": [1, 16],
    "threads": [1],
}


def _round(j: float) -> dict[str, float]:
    return {"energy_j_per_item": j}


def test_rounds_rotate_so_each_candidate_takes_each_place_once() -> None:
    order = _rotations(4, 4)
    assert order[0] == [0, 1, 2, 3] and order[1] == [1, 2, 3, 0]
    for place in range(4):
        assert sorted(o[place] for o in order) == [0, 1, 2, 3]


def test_ratios_are_taken_within_rounds_and_their_median_published() -> None:
    # A machine that slows down round by round: within-round ratios stay put.
    per_role: dict[str, list[dict[str, float] | None]] = {
        "baseline": [_round(10.0), _round(20.0), _round(40.0)],
        "best": [_round(1.0), _round(2.0), None],  # failed in round 3: that round has no pair
    }
    paired = _paired(per_role, "baseline", "best")
    assert paired["rounds"] == [10.0, 10.0]
    assert paired["median"] == 10.0
    assert _paired(per_role, "baseline", "absent") == {"rounds": [], "median": None}


def test_runner_up_wins_only_when_lower_side_by_side() -> None:
    best = [_round(2.0), _round(2.0), _round(2.0)]
    assert _choose({"best": best, "runner_up": [_round(1.9)] * 3}) == "runner_up"
    assert _choose({"best": best, "runner_up": [_round(2.1)] * 3}) == "best"
    assert _choose({"best": [None] * 3, "runner_up": [_round(5.0)] * 3}) == "runner_up"
    assert _choose({"best": [None] * 3}) is None


@pytest.mark.slow
@pytest.mark.timeout(900)  # a search, report --confirm's 12 children, then a publishing rerun
def test_headline_is_published_only_from_side_by_side_rounds(tmp_path: Path) -> None:
    """optimize without the stage publishes no ratio; ``report --confirm`` measures the rounds
    and stores them in the study; optimize run again publishes those same rounds (one set of
    12 measurements serves both paths: each is about 1 s of child process here, measuring for
    0.3 s at most in 0.1 s windows)."""
    out = tmp_path / "out"
    space = tmp_path / "space.json"
    space.write_text(json.dumps(SPACE))
    costs = ["--grid-intensity", "55", "--price-per-kwh", "0.31", "--currency", "EUR"]

    def optimize(rounds: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            wattwise_cmd(
                "optimize",
                "--task",
                "search_tasks:tiny",
                "--trials",
                "2",
                "--out",
                str(out),
                "--space",
                str(space),
                "--max-time-s",
                "0.3",
                "--confirm-rounds",
                rounds,
                *costs,
            ),
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    env = subprocess_env()
    # 1. Skipped: single measurements minutes apart, so no ratio and no payback.
    first = optimize("0")
    assert first.returncode == 0, first.stdout + first.stderr
    res0 = json.loads((out / "results.json").read_text())
    assert res0["confirmation"] is None and res0["baseline_same_batch"] is None
    assert res0["energy_ratio"] is None and res0["payback_items"] is None
    assert any("confirmation stage was skipped" in n for n in res0["notes"])
    assert "headline:" not in first.stdout
    assert_round_trips(out)

    # 2. `wattwise report --confirm` measures them side by side, into a new directory.
    db = f"sqlite:///{out}/wattwise.db"
    rep = tmp_path / "rep"
    report = subprocess.run(
        wattwise_cmd(
            "report", "--storage", db, "--study", "tiny-offline", "--out", str(rep), "--confirm"
        ),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert report.returncode == 0, report.stdout + report.stderr
    assert "confirming side by side, 3 rounds" in report.stderr
    res = json.loads((rep / "results.json").read_text())
    best, base, same = res["best"], res["baseline"], res["baseline_same_batch"]
    conf = res["confirmation"]

    # Every candidate measured in each of 3 rounds, in rotated order.
    assert conf["rounds"] == 3
    assert set(conf["candidates"]) == {"baseline", "baseline_same_batch", "best", "runner_up"}
    assert len({tuple(o) for o in conf["order"]}) == 3
    for doc in conf["candidates"].values():
        rounds_j = doc["round_figures"]["energy_j_per_item"]
        assert len(rounds_j) == 3 and all(j > 0 for j in rounds_j), doc
        assert doc["energy_j_per_item"] == pytest.approx(statistics.median(rounds_j))
        assert doc["energy_source"].startswith(("measured:", "estimated:"))

    # The same-batch baseline is fp32 eager at the winner's batch and threads.
    assert same["batch_size"] == best["deployment"]["batch_size"]
    assert same["threads"] == best["deployment"]["threads"]
    assert same["deployment"]["backend"] == "eager" and same["deployment"]["precision"] == "fp32"
    assert base["deployment"]["batch_size"] == 1

    # The published figures are the rounds' medians; the ratios the medians of paired rounds.
    chosen = conf["candidates"][conf["chosen"]]
    assert best["number"] == chosen["trial"]
    assert best["energy_j_per_item"] == chosen["energy_j_per_item"]
    assert base["energy_j_per_item"] == conf["candidates"]["baseline"]["energy_j_per_item"]
    pairs = conf["ratios"]["energy_ratio"]["rounds"]
    assert len(pairs) == 3 and res["energy_ratio"] == pytest.approx(statistics.median(pairs))
    assert res["energy_ratio_same_batch"] == conf["ratios"]["energy_ratio_same_batch"]["median"]
    assert res["energy_ratio_same_batch"] > 0 and res["energy_ratio"] > 0

    # Payback from the same-batch saving (the conservative one), and says so.
    assert res["payback_basis"] == "baseline_same_batch"
    saving = same["energy_j_per_item"] - best["energy_j_per_item"]
    if saving > 0:
        assert res["payback_items"] == pytest.approx(res["search_energy_j"] / saving)
    else:
        assert res["payback_items"] is None
    assert any(k.startswith("confirm_") for k in res["search_energy_by_phase_j"])

    # CO2e and cost factors given to optimize reach the study's later reports.
    assert res["grid_intensity_g_per_kwh"] == 55 and res["grid_intensity_source"] == "user"
    assert res["price_per_kwh"] == 0.31 and res["currency"] == "EUR"
    assert best["co2e_g_per_million_items"] == pytest.approx(
        best["energy_j_per_item"] * 1e6 / 3.6e6 * 55
    )

    # The summary says both ratios in words; the page shows the rounds and no raw null.
    assert "less energy per item than fp32 eager at the same batch" in report.stdout
    assert "from batching and threads alone" in report.stdout
    page = (rep / "report.html").read_text()
    assert 'id="confirmation-table"' in page and "not recorded" not in page
    assert "null" not in page and ">None<" not in page
    assert "55 g CO2e/kWh" in page

    # 3. optimize again, nothing new to search: it publishes the rounds stored in the study
    # (measuring nothing again), with the ratios in its own summary.
    again = optimize("3")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "confirming" not in again.stderr
    res2 = json.loads((out / "results.json").read_text())
    assert res2["confirmation"] == conf
    assert res2["energy_ratio_same_batch"] == res["energy_ratio_same_batch"]
    assert "headline:" in again.stdout

    # Both confirmed outputs: results.json round-trips through Results, and every field the
    # report and the summary show is the search's (no "—" where it has the value).
    assert_results_published(rep, report.stdout)
    assert_results_published(out, again.stdout)


def test_confirm_rounds_below_three_are_refused(tmp_path: Path) -> None:
    run = subprocess.run(
        wattwise_cmd("optimize", "--task", "search_tasks:tiny", "--confirm-rounds", "2"),
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        "error: confirm_rounds must be 0 (skip the confirmation) or at least 3, got 2"
    ]
    assert not (tmp_path / "wattwise-out").exists()
