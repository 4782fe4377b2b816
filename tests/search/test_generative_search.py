"""A generative task through ``wattwise optimize`` from the CLI: every candidate, the baseline
and the confirmation measure generation, and results.json, the summary and the report carry
prefill and decode apart."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from search_helpers import subprocess_env, wattwise_cmd

from wattwise.results import Results

SPACE = {
    "models": [{"name": "base"}],
    "deployments": ["eager/bf16"],
    "batch_sizes": [4],
    "threads": [1],
}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_generative_search_publishes_prefill_and_decode_per_token(tmp_path: Path) -> None:
    out, space = tmp_path / "out", tmp_path / "space.json"
    space.write_text(json.dumps(SPACE))
    done = subprocess.run(
        wattwise_cmd(
            "optimize",
            "--task",
            "search_tasks:tiny_lm",
            "--trials",
            "1",
            "--space",
            str(space),
            "--max-time-s",
            "0.3",
            "--max-accuracy-drop",
            "0.05",
            "--confirm-rounds",
            "3",
            "--out",
            str(out),
        ),
        env={**subprocess_env(), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    doc = Results.from_dict(json.loads((out / "results.json").read_text()))
    assert doc.best is not None and doc.baseline_same_batch is not None
    for entry in (doc.baseline, doc.baseline_same_batch, doc.best):
        f = entry.figures
        for value in (
            f.prefill_energy_j_per_token,
            f.decode_energy_j_per_token,
            f.ttft_ms_p90,
            f.tbt_ms_p90,
            f.tokens_per_s,
        ):
            assert value is not None and value > 0
        assert f.energy_source == "estimated:cpu-ccf" and f.energy_uncertainty == 0.4
        # An item is a response: its prompt's and its new tokens' energy (exactly so in each
        # round; the published medians are taken figure by figure, so only nearly).
        prefill, decode = f.prefill_energy_j_per_token, f.decode_energy_j_per_token
        assert prefill is not None and decode is not None
        assert f.energy_j_per_item == pytest.approx(8 * prefill + 8 * decode, rel=0.2)
    conf = doc.confirmation
    assert conf is not None and doc.energy_ratio_same_batch is not None
    for phase in ("prefill", "decode"):
        ratio = conf.ratio(f"{phase}_energy_ratio_same_batch")
        assert ratio is not None and ratio > 0
        assert len(conf.ratios[f"{phase}_energy_ratio_same_batch"].rounds) == 3
    assert conf.candidates["best"].round_figures["decode_energy_j_per_token"]
    # The summary prints both phases and the time between tokens.
    assert "prefill energy / token" in done.stdout and "decode energy / token" in done.stdout
    assert "p90 time between tokens" in done.stdout
    html = (out / "report.html").read_text()
    assert "decode energy per generated token" in html
    assert "prefill energy per prompt token" in html
    assert any("not exported" in note for note in doc.notes)
