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

from wattwise._units import MISSING, format_energy, format_energy_figure
from wattwise.results import Figures, TrialRow

__all__ = ["SearchProgress", "describe_figures", "describe_row"]


def _energy(figures: Figures) -> str:
    if figures.energy_j_per_item is None:
        return MISSING
    return format_energy_figure(
        figures.energy_j_per_item,
        figures.energy_source,
        figures.energy_uncertainty,
        per="/response" if figures.tbt_ms_p90 is not None else "/item",
    )


def _latency(figures: Figures) -> str:
    """``p90 12 ms``; a generative task's: the decode energy per token and the p90 time
    between tokens."""
    if figures.tbt_ms_p90 is not None:
        # Same source as the line's energy per response, which says it.
        decode = format_energy(figures.decode_energy_j_per_token)
        return f"decode {decode}/token, p90 {figures.tbt_ms_p90:.3g} ms between tokens"
    p90 = figures.latency_ms_p90
    return f"p90 {p90 if p90 is not None else 0.0:.3g} ms"


def describe_figures(figures: Figures) -> str:
    """``accuracy 0.9944, 2.1 mJ/item (estimated:cpu-ccf ±40%), p90 12 ms``."""
    acc = figures.accuracy
    return (
        f"accuracy {acc if acc is not None else 0.0:.4f}, {_energy(figures)}, {_latency(figures)}"
    )


def _row(row: TrialRow | Mapping[str, Any]) -> TrialRow:
    return row if isinstance(row, TrialRow) else TrialRow.from_dict(row)


def describe_row(row: TrialRow | Mapping[str, Any]) -> str:
    """One line for a finished trial: what it was and what came out."""
    row = _row(row)
    label = row.label or f"trial {row.number}"
    if row.complete:
        f = row.figures
        acc, drop = f.accuracy or 0.0, row.accuracy_drop or 0.0
        flag = "" if row.feasible else "  [infeasible]"
        if row.fidelity == "screen":
            flag += "  [screened: cannot be the best]"
        return (
            f"{label}: accuracy {acc:.4f} (drop {drop * 100:+.2f} pt), {_energy(f)}, "
            f"{_latency(f)}{flag}"
        )
    return f"{label}: {row.state} ({row.fail_reason})"


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
        self.best = MISSING
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
        self,
        row: TrialRow | Mapping[str, Any],
        best: TrialRow | Mapping[str, Any] | None,
        *,
        counted: bool,
    ) -> None:
        """A trial ended: count it (``counted``: against the budget), show it and the best
        feasible figure so far. Rows may be given as their dicts."""
        row = _row(row)
        if counted:
            self.done += 1
        if best is not None:
            self.best = _energy(_row(best).figures)
        elapsed = time.monotonic() - self._start
        line = f"  trial {row.number} {describe_row(row)} ({row.duration_s or 0:.1f} s)"
        if self._progress is not None:
            self._progress.update(self._task, completed=min(self.done, self.total), best=self.best)
            if row.state != "pruned":
                self.message(line)
        elif row.state != "pruned" or counted:
            self.message(f"{line}; best so far {self.best}; elapsed {elapsed:.0f} s")
        if row.output_tail:
            self.message(_output_block(row.output_tail, row.log))
