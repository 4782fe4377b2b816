"""Search progress on stderr: a live rich bar on a terminal, plain log lines otherwise.

The bar shows trials done of the budget, the best feasible J/item so far (with its source),
elapsed time and an ETA; a log (CI, a file, a pipe) gets one line per finished trial instead,
because a redrawn bar is noise there.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from wattwise._units import format_energy

__all__ = ["SearchProgress", "describe_row"]


def _energy(row: Mapping[str, Any]) -> str:
    value = row.get("energy_j_per_item")
    if value is None:
        return "—"
    unc = row.get("energy_uncertainty")
    tail = f" ±{unc:.0%}" if isinstance(unc, int | float) else ""
    return f"{format_energy(value)}/item ({row.get('energy_source')}{tail})"


def describe_row(row: Mapping[str, Any]) -> str:
    """One line for a finished trial: what it was and what came out."""
    label = row.get("label") or f"trial {row.get('number')}"
    if row.get("state") == "complete":
        acc = float(row.get("accuracy") or 0.0)
        drop = float(row.get("accuracy_drop") or 0.0)
        p90 = float(row.get("latency_ms_p90") or 0.0)
        flag = "" if row.get("feasible") else "  [infeasible]"
        return (
            f"{label}: accuracy {acc:.4f} (drop {drop * 100:+.2f} pt), {_energy(row)}, "
            f"p90 {p90:.3g} ms{flag}"
        )
    return f"{label}: {row.get('state')} ({row.get('fail_reason')})"


def _output_block(tail: str, log: Any) -> str:
    """A failed trial's last output lines, indented under its line, and where the rest is."""
    where = f" (all of it in {log})" if log else ""
    lines = [f"    | {line}" for line in str(tail).splitlines()]
    return "\n".join([f"    its output ended{where}:", *lines])


class SearchProgress:
    """Context manager reporting a search's progress.

    Args:
        total: the trial budget.
        done: trials already counted (a resumed study).
        stream: where to write (default stderr).
        live: force the rich bar on/off; default: on when ``stream`` is a terminal.
    """

    def __init__(
        self, total: int, *, done: int = 0, stream: TextIO | None = None, live: bool | None = None
    ) -> None:
        self.total = max(1, int(total))
        self.done = int(done)
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", lambda: False)
        self.live = bool(isatty()) if live is None else live
        self.best = "—"
        self._start = time.monotonic()
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> SearchProgress:
        if self.live:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            console = Console(file=self.stream)
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("best {task.fields[best]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=console,
                transient=False,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task(
                "searching", total=self.total, completed=min(self.done, self.total), best=self.best
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(None, None, None)
            self._progress = None

    def message(self, text: str) -> None:
        """A line above the bar (or a plain line)."""
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self.stream, flush=True)

    def trial_started(self, number: int, label: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=f"trial {number}: {label}")
        else:
            self.message(f"[{self.done + 1}/{self.total}] trial {number}: {label} ...")

    def trial_finished(
        self, row: Mapping[str, Any], best: Mapping[str, Any] | None, *, counted: bool
    ) -> None:
        if counted:
            self.done += 1
        if best is not None:
            self.best = _energy(best)
        elapsed = time.monotonic() - self._start
        line = (
            f"  trial {row.get('number')} {describe_row(row)} ({row.get('duration_s') or 0:.1f} s)"
        )
        if self._progress is not None:
            self._progress.update(self._task, completed=min(self.done, self.total), best=self.best)
            if row.get("state") != "pruned":
                self.message(line)
        elif row.get("state") != "pruned" or counted:
            self.message(f"{line}; best so far {self.best}; elapsed {elapsed:.0f} s")
        tail = row.get("output_tail")
        if tail:
            self.message(_output_block(tail, row.get("log")))
