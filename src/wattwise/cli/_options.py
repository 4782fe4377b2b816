"""Options that more than one command takes, declared once so that their flag, type and help
read the same in every command (``device: Device = "cpu"``). An option whose help differs
between commands (``--grid-intensity``: each says its own default) stays with its command."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["Currency", "Device", "JsonOut", "StudyName", "StudyStorage", "TaskSpec"]

Device = Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")]
JsonOut = Annotated[
    bool, typer.Option("--json", help="Print one JSON document to stdout instead of a table.")
]
Currency = Annotated[str, typer.Option(help="The price's currency.")]
# A study another command started (worker, report): both are required, so no default is shown.
StudyStorage = Annotated[str, typer.Option(help="The study's storage URL.", show_default=False)]
StudyName = Annotated[str, typer.Option(help="The study's name.", show_default=False)]
# The task a search or a training run works on.
TaskSpec = Annotated[
    str,
    typer.Option(help="A built-in task (digits) or package.module:factory (runs your code)."),
]
