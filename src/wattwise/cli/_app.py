"""The ``wattwise`` typer app: one-line usage errors, ``--debug``, ``--version`` and the
console-script entry point. The commands add themselves from their own modules."""

from __future__ import annotations

import functools
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from wattwise.cli._errors import DEBUG, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK

__all__ = ["app", "main"]


def _click_exception() -> type[Exception]:
    # typer bundles its own click; reach its ClickException through a public class.
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


class _OneLineErrors(TyperGroup):
    """Usage errors (a bad option value typer checks itself) as one ``error:`` line, exit 2,
    like every other error, instead of typer's usage text and boxed panel."""

    def main(  # type: ignore[override]  # same parameters, windows_expand_args via kwargs
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **kwargs: Any,
    ) -> Any:
        run = functools.partial(
            super().main, args=args, prog_name=prog_name, complete_var=complete_var, **kwargs
        )
        if not standalone_mode:
            return run(standalone_mode=False)
        try:
            rv = run(standalone_mode=False)
        except typer.Abort:
            print("error: interrupted", file=sys.stderr)
            sys.exit(EXIT_INTERRUPTED)
        except _click_exception() as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # bare 'wattwise': show the help
                ctx = getattr(exc, "ctx", None)
                print(ctx.get_help() if ctx is not None else str(exc))
                sys.exit(0)
            message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
            print(f"error: {' '.join(message.split())}", file=sys.stderr)
            sys.exit(getattr(exc, "exit_code", EXIT_ERROR))
        sys.exit(rv if isinstance(rv, int) else EXIT_OK)


app = typer.Typer(
    cls=_OneLineErrors,
    name="wattwise",
    help="Measure and reduce the energy of PyTorch models; every joule says where it came from.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # our own one-line errors; --debug for tracebacks
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        import wattwise

        typer.echo(f"wattwise {wattwise.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Measure and reduce the energy of PyTorch models; every joule says where it came from."""
    DEBUG.set(debug)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``wattwise``, ``python -m wattwise``)."""
    try:
        app(args=argv, prog_name="wattwise")
    except KeyboardInterrupt:  # outside a command (argument parsing, imports)
        print("error: interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
