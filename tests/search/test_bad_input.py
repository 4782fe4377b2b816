"""Bad input to ``optimize``: one line naming the problem (CLI exit 2), no password printed,
nothing half-written. None of these trains or measures anything."""

from __future__ import annotations

import pytest
import search_tasks
from typer.testing import CliRunner

from wattwise.cli import app
from wattwise.errors import InputError, UnavailableError, WattwiseError
from wattwise.search import SearchSettings, default_space, open_storage, optimize
from wattwise.search._objective import task_id
from wattwise.search._study import open_study


@pytest.mark.parametrize(
    ("task", "match"),
    [
        ("no_such_module_xyz:make", "no module named 'no_such_module_xyz'"),
        ("search_tasks:missing", "has no attribute 'missing'"),
        ("search_tasks:wrong_type", "returned a int, expected a wattwise Task"),
        ("search_tasks:empty", "Task.val_data is empty"),
        ("nonsense", "unknown task 'nonsense'"),
    ],
)
def test_bad_task_is_one_line_and_writes_nothing(tmp_path, task, match):
    out = tmp_path / "out"
    with pytest.raises(InputError, match=match) as info:
        optimize(task, out=out, progress=False)
    assert "\n" not in str(info.value)
    assert not out.exists()


def test_unreachable_storage_never_prints_the_password(tmp_path):
    out = tmp_path / "out"
    url = "postgresql://u:s3cretpw@127.0.0.1:1/x"
    with pytest.raises((InputError, UnavailableError)) as info:
        optimize("search_tasks:tiny", storage=url, out=out, progress=False)
    message = str(info.value)
    assert "s3cretpw" not in message and "\n" not in message
    assert "cannot open storage postgresql://u:***@127.0.0.1:1/x" in message
    assert not out.exists()  # the directory we made for it is gone again

    result = CliRunner().invoke(
        app,
        ["optimize", "--task", "search_tasks:tiny", "--storage", url, "--out", str(out)],
    )
    assert result.exit_code == 2
    assert "s3cretpw" not in result.output
    assert result.stderr.startswith("error: cannot open storage") and result.stderr.count("\n") == 1


def test_bad_storage_urls(tmp_path):
    with pytest.raises(InputError, match="database URL"):
        open_storage("wattwise.db")
    with pytest.raises(InputError, match="does not exist"):
        open_storage(f"sqlite:///{tmp_path}/missing/dir/x.db")
    with pytest.raises(InputError, match="unsupported scheme"):
        open_storage("redis://localhost/0")


def test_study_name_reused_for_another_task_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path}/shared.db"
    task = search_tasks.tiny()
    settings = SearchSettings(
        task_spec="search_tasks:tiny",
        task_name="tiny",
        task_id=task_id(task, "search_tasks:tiny"),
        scenario="offline",
        max_accuracy_drop=0.01,
        latency_p90_ms=None,
        trials=3,
        space=default_space(task, "offline"),
    )
    open_study(open_storage(url), "shared", settings, url=url)
    out = tmp_path / "out"
    with pytest.raises(InputError, match="belongs to task 'tiny', not 'other'"):
        optimize("search_tasks:other", storage=url, study="shared", out=out, progress=False)
    # Same task, other fixed settings: refused too, naming the setting.
    with pytest.raises(InputError, match=r"max_accuracy_drop=0\.01"):
        optimize(
            "search_tasks:tiny",
            storage=url,
            study="shared",
            out=out,
            max_accuracy_drop=0.02,
            progress=False,
        )
    assert not (out / "results.json").exists()


def test_unwritable_output_directory(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    for out in (blocker, blocker / "sub", "/proc/wattwise-cannot-write-here"):
        with pytest.raises(InputError, match="output directory") as info:
            optimize("search_tasks:tiny", out=out, progress=False)
        assert "\n" not in str(info.value)
    assert blocker.read_text() == "not a directory"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scenario": "batchy"}, "scenario"),
        ({"trials": 0}, "trials"),
        ({"max_accuracy_drop": -0.1}, "max_accuracy_drop"),
        ({"latency_p90_ms": 0}, "latency_p90_ms"),
        ({"device": "tpu"}, "device"),
        ({"study": " "}, "study"),
    ],
)
def test_bad_arguments_name_the_field(tmp_path, kwargs, match):
    out = tmp_path / "out"
    with pytest.raises(WattwiseError, match=match):
        optimize("search_tasks:tiny", out=out, progress=False, **kwargs)
    assert not out.exists()


def test_worker_on_a_missing_study(tmp_path):
    url = f"sqlite:///{tmp_path}/w.db"
    result = CliRunner().invoke(
        app, ["worker", "--storage", url, "--study", "nope", "--out", str(tmp_path / "w")]
    )
    assert result.exit_code == 2
    assert "no study named 'nope'" in result.stderr
