"""Output-directory ownership: wattwise writes only into a new, empty or own directory, and a
directory holding anything else is refused, untouched, before any work is done."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import optuna
import pytest
import search_tasks
from typer.testing import CliRunner

from wattwise._fs import OUT_MARKER, read_out_marker, write_out_marker
from wattwise.cli import app
from wattwise.deploy import _export
from wattwise.errors import InputError
from wattwise.report import render_report
from wattwise.search import SearchSettings, open_storage, optimize
from wattwise.search._objective import task_id
from wattwise.search._outdir import (
    ARTIFACT_OWN_FILES,
    OUTPUT_NAMES,
    check_out_dir,
    record_outputs,
)
from wattwise.search._space import ModelChoice, SearchSpace
from wattwise.search._study import BASELINE_ATTR, open_study

RESULTS = {"schema": 1, "task": "tiny", "baseline": {"accuracy": 0.9}, "best": None}
TINY_SPACE = SearchSpace(
    models=(ModelChoice("base"),), deployments=("eager/fp32",), batch_sizes=(1,), threads=(1,)
)


def _snapshot(folder: Path) -> dict[str, tuple[bytes | None, int]]:
    """Every entry under ``folder`` with its bytes and mtime (ns): "untouched" means equal."""
    return {
        str(p.relative_to(folder)): (
            p.read_bytes() if p.is_file() else None,
            p.lstat().st_mtime_ns,
        )
        for p in sorted(folder.rglob("*"))
    }


def test_a_new_directory_is_made_and_marked_ours(tmp_path: Path) -> None:
    out = tmp_path / "a" / "out"
    assert check_out_dir(out) is True
    assert read_out_marker(out) == frozenset(OUTPUT_NAMES)
    assert [p.name for p in out.iterdir()] == [OUT_MARKER]
    doc = json.loads((out / OUT_MARKER).read_text())
    assert doc["wattwise_output_dir"] == 1 and "results.json" in doc["owns"]
    # Our own directory again (a resume): fine, and not "made now".
    (out / "results.json").write_text(json.dumps(RESULTS))
    (out / "cache" / "models").mkdir(parents=True)
    (out / "cache" / "models" / "k.pt").write_bytes(b"x")
    assert check_out_dir(out) is False
    empty = tmp_path / "empty"
    empty.mkdir()
    assert check_out_dir(empty) is False and read_out_marker(empty) is not None


@pytest.mark.parametrize(
    "files",
    [
        {"notes.txt": "mine"},
        {"artifact/notes.txt": "mine"},
        {"cache": "a file where we keep a directory"},
        {"report.html": "<p>mine</p>", "results.json": '{"not": "ours"}'},
        {"trials.csv": "a,b\n"},
    ],
    ids=["foreign-file", "artifact-notes", "file-named-like-our-dir", "foreign-report", "csv"],
)
def test_foreign_entries_are_refused_untouched(tmp_path: Path, files: dict[str, str]) -> None:
    out = tmp_path / "out"
    for name, text in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    before = _snapshot(out)
    with pytest.raises(InputError, match=f"output directory {out} holds") as info:
        check_out_dir(out)
    assert "\n" not in str(info.value)
    assert _snapshot(out) == before  # no marker written either


def test_a_marker_owns_what_it_lists_and_nothing_else(tmp_path: Path) -> None:
    out = tmp_path / "out"
    check_out_dir(out)
    (out / "notes.txt").write_text("mine, added after the run")
    with pytest.raises(InputError, match=r"did not write \(notes\.txt\)"):
        check_out_dir(out)
    # Names a newer wattwise wrote and listed stay ours; a killed run's temp files too.
    write_out_marker(out, [*OUTPUT_NAMES, "notes.txt"])
    (out / ".results.json.k2j3.tmp").write_text("half")
    (out / ".artifact.tmp-k2j3").mkdir()
    assert check_out_dir(out) is False
    assert "notes.txt" in (read_out_marker(out) or ())


def test_old_output_dirs_without_a_marker(tmp_path: Path) -> None:
    """Before the marker: every entry must have one of our names, and report files must sit
    beside a wattwise results.json."""
    old = tmp_path / "old"
    (old / "cache").mkdir(parents=True)
    for name in ("results.json", "trials.csv", "report.html"):
        (old / name).write_text(json.dumps(RESULTS) if name == "results.json" else "x")
    (old / "wattwise.db").write_bytes(b"SQLite format 3\x00")
    (old / ".wattwise-write-test-4242").write_text("")  # an old version's probe, left by a kill
    assert check_out_dir(old) is False and read_out_marker(old) is not None
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "report.html").write_text("<p>my own page</p>")
    with pytest.raises(InputError, match=r"report files \(report\.html\) but no wattwise"):
        check_out_dir(foreign)
    assert [p.name for p in foreign.iterdir()] == ["report.html"]


def test_artifact_holds_only_what_its_manifest_lists(tmp_path: Path) -> None:
    assert (_export.MANIFEST, _export.CARD) == ARTIFACT_OWN_FILES  # same names as the exporter
    out = tmp_path / "out"
    art = out / "artifact"
    art.mkdir(parents=True)
    manifest = {"schema": 1, "files": {"model.pt2": {}, "example_input.npy": {}}}
    (art / "deployment.json").write_text(json.dumps(manifest))
    for name in ("model.pt2", "example_input.npy", "MODEL_CARD.md"):
        (art / name).write_bytes(b"x")
    assert check_out_dir(out) is False
    (art / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match=r"\(artifact/notes\.txt\)"):
        check_out_dir(out)
    (art / "notes.txt").unlink()
    (art / "deployment.json").write_text("[" * 100_000)  # not a manifest we wrote
    with pytest.raises(InputError, match=r"\(artifact/MODEL_CARD\.md, .* and 1 more\)"):
        check_out_dir(out)


@pytest.mark.parametrize(
    ("marker", "match"),
    [
        (b"x" * ((64 << 10) + 1), "more than the 64 KiB"),
        (b'{"wattwise_output_dir": true, "owns": []}', "not a marker this wattwise wrote"),
        (b'{"wattwise_output_dir": 1, "owns": ["a/b"]}', "not a marker this wattwise wrote"),
        (b'{"wattwise_output_dir": 1, "owns": "results.json"}', "not a marker"),
        (b"\xff\xfe{\x00}\x00", "UTF-16"),
        (None, "FIFO"),
    ],
    ids=["oversize", "version-true", "path-name", "owns-a-string", "utf-16", "fifo"],
)
def test_the_marker_is_read_as_hostile(tmp_path: Path, marker: bytes | None, match: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    if marker is None:
        os.mkfifo(out / OUT_MARKER)  # opened for reading with no writer: must not hang
    else:
        (out / OUT_MARKER).write_bytes(marker)
    with pytest.raises(InputError, match=match):
        check_out_dir(out)


def test_render_report_records_its_files_in_a_marked_directory_only(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    write_out_marker(out, [])
    render_report(RESULTS, [], out)
    assert {"results.json", "trials.csv", "report.html"} <= (read_out_marker(out) or set())
    # A folder an API caller chose, without a marker, gets the three files and nothing else.
    plain = tmp_path / "plain"
    render_report(RESULTS, [], plain)
    assert sorted(p.name for p in plain.iterdir()) == ["report.html", "results.json", "trials.csv"]
    record_outputs(plain, ["x.html"])
    assert read_out_marker(plain) is None


def test_a_sqlite_storage_in_the_directory_is_owned_when_named(tmp_path: Path) -> None:
    out = tmp_path / "out"
    check_out_dir(out)
    (out / "mine.db").write_bytes(b"SQLite format 3\x00")
    with pytest.raises(InputError, match=r"\(mine\.db\)"):
        check_out_dir(out)
    assert check_out_dir(out, storage=f"sqlite:///{out}/mine.db") is False
    assert {"mine.db", "mine.db-journal"} <= (read_out_marker(out) or set())


# --- through the CLI: refused before any training ---------------------------------------


def _foreign_out(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    out = tmp_path / "out"
    (out / "artifact").mkdir(parents=True)
    (out / "artifact" / "notes.txt").write_text("my notes")
    (out / "report.html").write_text("<p>mine</p>")
    return out, _snapshot(out)


def _check_refused(args: list[str], out: Path, before: dict[str, Any]) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: output directory {out} holds")
    assert "artifact/notes.txt" in lines[0]
    # Byte-identical, same mtimes, and nothing of a run (no cache/, no wattwise.db, no marker).
    assert _snapshot(out) == before


def test_optimize_into_a_foreign_directory_is_refused_before_training(tmp_path: Path) -> None:
    out, before = _foreign_out(tmp_path)
    _check_refused(["optimize", "--task", "search_tasks:tiny", "--out", str(out)], out, before)


def _study_with_baseline(tmp_path: Path) -> str:
    """A real study (sqlite) with a recorded baseline, as optimize leaves one: what report and
    worker need to get as far as the output directory."""
    url = f"sqlite:///{tmp_path}/study.db"
    task = search_tasks.tiny()
    settings = SearchSettings(
        task_spec="search_tasks:tiny",
        task_name="tiny",
        task_id=task_id(task, "search_tasks:tiny"),
        scenario="offline",
        max_accuracy_drop=0.01,
        latency_p90_ms=None,
        trials=2,
        space=TINY_SPACE,
    )
    study, _ = open_study(open_storage(url), "s", settings, url=url)
    study.set_user_attr(BASELINE_ATTR, {"ok": True, "accuracy": 0.9})
    return url


@pytest.mark.parametrize("command", ["report", "worker"])
def test_report_and_worker_into_a_foreign_directory_are_refused(
    tmp_path: Path, command: str
) -> None:
    url = _study_with_baseline(tmp_path)
    out, before = _foreign_out(tmp_path)
    _check_refused([command, "--storage", url, "--study", "s", "--out", str(out)], out, before)
    study = optuna.load_study(study_name="s", storage=url)
    assert study.trials == []  # the worker ran nothing


@pytest.mark.slow
def test_resume_into_own_directory_and_refuse_a_file_added_to_its_artifact(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"

    def run() -> Any:
        return optimize(
            "search_tasks:tiny",
            trials=1,
            out=out,
            space=TINY_SPACE,
            max_time_s=0.2,
            progress=False,
        )

    first = run()
    assert (out / "artifact" / "deployment.json").exists(), first.results.get("notes")
    artifact = _snapshot(out / "artifact")
    again = run()  # a resume: the budget is used, results are written again
    assert again.results["best"]["number"] == first.results["best"]["number"]
    assert _snapshot(out / "artifact") == artifact  # the same export, not redone
    report = CliRunner().invoke(
        app,
        [
            *("report", "--storage", f"sqlite:///{out}/wattwise.db"),
            *("--study", "tiny-offline", "--out", str(out)),
        ],
    )
    assert report.exit_code == 0, report.output
    (out / "artifact" / "notes.txt").write_text("my notes")
    before = _snapshot(out)
    with pytest.raises(InputError, match=r"artifact/notes\.txt"):
        run()
    assert _snapshot(out) == before
