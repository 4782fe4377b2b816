"""``wattwise compress TARGET --recipe r.yaml --task NAME --out DIR``: apply a recipe from the CLI.

The output directory holds:

* ``model.pt2``: the compressed model as a ``torch.export`` program (dynamic batch), which
  ``wattwise measure DIR/model.pt2`` measures and ``torch.export.load`` reloads without
  unpickling anything;
* ``recipe.yaml``: the recipe as applied (re-applying it with the same seed gives the same model);
* ``compression_log.json``: per pass, params, MACs, size, accuracy before and after, time and
  the energy the pass itself spent, with its source.

It is written to a temporary directory beside ``DIR`` and renamed into place: a failure leaves
nothing half-written.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from wattwise.cli._app import app
from wattwise.cli._errors import handled

__all__ = ["check_out_dir", "write_compressed"]


def check_out_dir(out: Path) -> Path:
    """Refuse an output directory we would have to overwrite, before any work is done."""
    from wattwise.errors import InputError

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a directory")
    if out.exists() and any(out.iterdir()):
        raise InputError(f"--out {out} is not empty; choose a new directory")
    # The nearest existing folder above must be a writable directory, or the work would be
    # done for nothing (a file on the path, a read-only mount).
    above = out.absolute().parent
    while not above.exists() and above != above.parent:
        above = above.parent
    if not above.is_dir():
        raise InputError(f"--out {out}: {above} is not a directory")
    try:  # a probe file of our own, removed at once: access() says nothing of read-only mounts
        fd, probe = tempfile.mkstemp(prefix=".wattwise-probe-", dir=above)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"--out {out}: cannot write to {above}: {exc.strerror or exc}") from None
    return out


def write_compressed(
    model: Any, example_input: Any, passes: list[Any], log: Any, out: Path
) -> dict[str, Any]:
    """Write the compressed model, its recipe and its log to ``out`` atomically."""
    import torch

    from wattwise._fs import temp_dir_beside
    from wattwise.deploy import export_program
    from wattwise.errors import InputError
    from wattwise.passes import dump_recipe

    out = check_out_dir(out)
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_dir_beside(parent / out.name)
    except OSError as exc:
        raise InputError(f"cannot write to {parent}: {exc.strerror or exc}") from None
    notes: list[str] = []
    try:
        (tmp / "recipe.yaml").write_text(dump_recipe(passes))
        model_file = None
        program = None
        try:
            # Serialised in memory, then written by Python: PyTorch's own file writer aborts the
            # process (std::terminate) on a write error such as a full disk or `ulimit -f`.
            buf = io.BytesIO()
            torch.export.save(export_program(model, example_input), buf)
            program = buf.getvalue()
        except Exception as exc:  # some quantized graphs don't re-export; say so, keep the log
            first = (str(exc).strip().splitlines() or [""])[0]
            notes.append(f"model not exported with torch.export ({type(exc).__name__}: {first})")
        if program is not None:
            (tmp / "model.pt2").write_bytes(program)
            model_file = "model.pt2"
        doc = {"schema": 1, "model": model_file, "notes": notes, **log.to_dict()}
        (tmp / "compression_log.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise InputError(f"cannot write {out}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return doc


def _check_traceable(model: Any, example_input: Any, name: str) -> None:
    """Refuse, before any work, a model torch.export cannot trace: its result could not be saved."""
    from wattwise.deploy import export_program
    from wattwise.errors import InputError

    try:
        with contextlib.suppress(Exception):
            model.eval()
        export_program(model, example_input)
    except Exception as exc:
        first = " ".join((str(exc).strip().splitlines() or [type(exc).__name__])[0].split())
        raise InputError(
            f"{name}: torch.export cannot trace this model ({type(exc).__name__}: {first}); "
            "wattwise compress saves its result as a torch.export program, so the model must "
            "trace (no Python branches on tensor values)"
        ) from None


@app.command()
@handled
def compress(
    target: Annotated[
        str,
        typer.Argument(
            help="The model: a built-in name (trained on the task first), "
            "package.module:factory (runs your code) or a .pt2 file.",
            show_default=False,
        ),
    ],
    recipe: Annotated[
        Path,
        typer.Option("--recipe", help="Recipe YAML: a list of passes.", show_default=False),
    ],
    out: Annotated[
        Path, typer.Option("--out", help="New directory for the results.", show_default=False)
    ],
    task: Annotated[
        str, typer.Option("--task", help="Built-in task name or package.module:factory.")
    ] = "digits",
    seed: Annotated[int, typer.Option("--seed", help="Seed for every random choice.")] = 0,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the log as JSON instead of a table.")
    ] = False,
) -> None:
    """Apply a compression recipe to a model; write the model, recipe and log to --out."""
    import sys

    import torch

    from wattwise._inputs import describe
    from wattwise.cli._targets import resolve_target
    from wattwise.errors import InputError
    from wattwise.passes import compress as run_compress
    from wattwise.passes import load_recipe
    from wattwise.tasks import load_task

    check_out_dir(out)
    passes = load_recipe(recipe)
    the_task = load_task(task)
    if not isinstance(the_task.example_input, torch.Tensor):
        # Its result is saved as a torch.export program of one tensor argument (write_compressed).
        raise InputError(
            f"wattwise compress takes tasks with one tensor input for now; {the_task.name}'s "
            f"input is {describe(the_task.example_input)} (use wattwise.compress from Python)"
        )
    resolved = resolve_target(target, input_shape=tuple(the_task.example_input.shape))
    model = resolved.factory()
    _check_traceable(model, the_task.example_input, resolved.name)
    if resolved.kind == "builtin":
        # A built-in name is an architecture with random weights: train it on the task first,
        # or compressing it would measure nothing meaningful.
        print(f"training {resolved.name} on {the_task.name} first", file=sys.stderr)
        model = the_task.fit(model, seed=seed)
    new_model, log = run_compress(model, passes, task=the_task, seed=seed)
    doc = write_compressed(new_model, the_task.example_input, passes, log, out)
    if json_out:
        print(json.dumps(doc, indent=2, default=str))
        return
    print(log.summary())
    print(
        f"MACs {log.macs_ratio:.2f}x fewer; accuracy {log.initial.accuracy:.4f} -> "
        f"{log.final.accuracy:.4f}; wrote {out}"
        + ("" if doc["model"] else " (model not exported: see compression_log.json)")
    )
