"""The ``wattwise`` command: a thin typer + rich layer over the Python API.

Exit codes (the contract scripts and CI rely on):

* 0: success.
* 1: a check failed (:class:`~wattwise.errors.CheckFailed`, from ``wattwise check``).
* 2: the command could not do its job: bad input, something unavailable here (no GPU, no
  counter), the user's model raised, or an unexpected internal error. The reason is one line
  on stderr, ``error: ...``; ``wattwise --debug ...`` adds the traceback. Internal errors say
  "internal error" so they can be told apart and reported.
* 130: interrupted (Ctrl-C); 141: stdout was closed early (``wattwise ... | head``).

Only results go to stdout (a table, or one JSON document with ``--json``); errors and progress
go to stderr, and the progress spinner only when stderr is a terminal.

Nothing heavy is imported at module level: ``wattwise --help`` must not load torch.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import math
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from typer.core import TyperGroup

from wattwise.errors import CheckFailed, WattwiseError

if TYPE_CHECKING:
    from rich.console import Console

    from wattwise._core import Availability
    from wattwise._targets import ResolvedTarget
    from wattwise.measure import Measurement

__all__ = ["app", "doctor_report", "main"]

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a tool killed by a closed pipe
JSON_SCHEMA = 1
MODES = ("inference", "train")


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


# --- errors ------------------------------------------------------------------------------


# Set by the root callback, which runs before every command (also under typer's CliRunner).
_DEBUG: contextvars.ContextVar[bool] = contextvars.ContextVar("wattwise_debug", default=False)

F = TypeVar("F", bound=Callable[..., Any])


def exit_code_for(exc: BaseException) -> int:
    """The exit code the CLI gives for ``exc`` (see the module docstring)."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, CheckFailed):
        return EXIT_CHECK_FAILED
    return EXIT_ERROR


def error_line(exc: BaseException) -> str:
    """The one line printed for ``exc``, without the ``error:`` prefix."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    text = " ".join(str(exc).split())  # one line, whatever the message held
    if isinstance(exc, WattwiseError):
        return text or type(exc).__name__
    from wattwise._fs import storage_error_line

    storage = storage_error_line(exc)  # a full disk or a file-size limit is no internal error
    if storage is not None:
        return " ".join(storage.split())
    detail = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return f"internal error ({detail}); rerun as 'wattwise --debug ...' for the traceback"


def _handled(func: F) -> F:
    """Run a command, turning any exception into one line on stderr and an exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.BadParameter):
            raise  # typer's own control flow: it prints and exits as usual
        except BrokenPipeError:
            # stdout closed early (``wattwise ... | head``): quiet, like other Unix tools; point
            # stdout at devnull so the interpreter's final flush does not raise again.
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(EXIT_BROKEN_PIPE) from None
        except (Exception, KeyboardInterrupt) as exc:
            if _DEBUG.get():
                traceback.print_exception(exc, file=sys.stderr)
            print(f"error: {error_line(exc)}", file=sys.stderr, flush=True)
            raise typer.Exit(exit_code_for(exc)) from None

    return wrapper  # type: ignore[return-value]


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
    _DEBUG.set(debug)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``wattwise``, ``python -m wattwise``)."""
    try:
        app(args=argv, prog_name="wattwise")
    except KeyboardInterrupt:  # outside a command (argument parsing, imports)
        print("error: interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)


# --- measure -----------------------------------------------------------------------------


@app.command()
@_handled
def measure(
    target: Annotated[
        str,
        typer.Argument(
            help="A built-in model (digits_cnn, mobilenetv3_small, ...), "
            "package.module:factory (runs your code), or a .pt2 file (torch.export.save).",
            show_default=False,
        ),
    ],
    input_shape: Annotated[
        str | None,
        typer.Option(
            "--input-shape",
            help="Input shape with batch 1 first, e.g. 1,3,224,224 (default: the model's own).",
        ),
    ] = None,
    batch_size: Annotated[
        str | None,
        typer.Option("--batch-size", help="Batch sizes to measure, comma-separated: 1,32."),
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "cpu",
    mode: Annotated[
        str,
        typer.Option(
            help="inference, or train (forward+backward+SGD step; labels are random classes "
            "in [0, outputs) of the model's last layer)."
        ),
    ] = "inference",
    meter: Annotated[str, typer.Option(help="auto, nvml, rapl or estimate.")] = "auto",
    threads: Annotated[
        int | None, typer.Option(help="CPU threads (default: all allowed cores).")
    ] = None,
    max_time_s: Annotated[
        float, typer.Option("--max-time-s", help="Time cap per batch size, seconds.")
    ] = 30.0,
    grid_intensity: Annotated[
        float | None,
        typer.Option(
            "--grid-intensity",
            help="Grid carbon intensity in gCO2e/kWh for the CO2e figure (default: world average).",
        ),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print one JSON document to stdout instead of a table.")
    ] = False,
) -> None:
    """Measure energy per item, latency and size of TARGET at each batch size."""
    from rich.console import Console

    from wattwise._targets import parse_batch_sizes, parse_shape, resolve_target
    from wattwise.errors import InputError
    from wattwise.measure import check_device
    from wattwise.measure import measure as run_measure

    if mode not in MODES:
        raise InputError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    shape = parse_shape(input_shape) if input_shape is not None else None
    sizes = parse_batch_sizes(batch_size) if batch_size is not None else None
    device = check_device(device)  # no GPU → fail before building anything
    err = Console(stderr=True)
    results: list[Measurement] = []
    with _stdout_to_stderr():  # the user's code runs in here; its prints must not reach stdout
        resolved = resolve_target(target, input_shape=shape)
        if resolved.fixed_batch_size is not None:
            sizes = _fixed_batch_sizes(resolved, sizes)
        sizes = sizes or [1]
        labels = _preflight(resolved, mode)
        for size in sizes:
            with _progress(err, f"measuring {resolved.name} at batch {size} on {device}"):
                results.append(
                    run_measure(
                        resolved.factory,
                        resolved.example_input,
                        device=device,
                        batch_size=size,
                        mode=mode,
                        target=labels,
                        meter=meter,
                        threads=threads,
                        max_time_s=max_time_s,
                        grid_intensity_g_per_kwh=grid_intensity,
                    )
                )

    from wattwise.measure._hardware import hardware_info

    hardware = hardware_info(include_cuda=device.startswith("cuda"))
    if json_out:
        doc = {
            "schema": JSON_SCHEMA,
            "target": {
                "name": resolved.name,
                "kind": resolved.kind,
                "input_shape": list(resolved.input_shape),
            },
            "hardware": hardware,
            "measurements": [m.to_dict() for m in results],
        }
        _print_json(doc)
    else:
        console = Console()
        with console.capture() as table:  # rendered as this console would, then written whole
            _print_measurements(console, resolved, results, hardware)
        _write_stdout(table.get())


def _fixed_batch_sizes(resolved: ResolvedTarget, sizes: list[int] | None) -> list[int]:
    from wattwise._targets import _DYNAMIC_RECIPE
    from wattwise.errors import InputError

    fixed = resolved.fixed_batch_size
    if sizes is not None and any(s != fixed for s in sizes):
        raise InputError(
            f"{resolved.name} was exported with a fixed batch of {fixed}, so only "
            f"--batch-size {fixed} runs; {_DYNAMIC_RECIPE}"
        )
    return [fixed] if fixed is not None else []


def _preflight(resolved: ResolvedTarget, mode: str) -> Any:
    """Build the model and run it once here, so a bad shape fails in one line before the
    harness starts a child; in train mode, return labels of batch 1 for the classifier."""
    import torch

    from wattwise._core import one_line
    from wattwise.errors import InputError, WorkloadError

    model = resolved.factory()
    x = resolved.example_input
    if resolved.fixed_batch_size is not None:
        x = x.repeat(resolved.fixed_batch_size, *([1] * (x.dim() - 1)))
    try:
        model.eval()
        with torch.no_grad():
            out = model(x)
    except Exception as exc:
        raise WorkloadError(
            f"{resolved.name} failed on an input of shape {tuple(x.shape)} (check --input-shape): "
            f"{one_line(exc)}"
        ) from None
    if mode != "train":
        return None
    if not (isinstance(out, torch.Tensor) and out.dim() == 2 and out.is_floating_point()):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InputError(
            f"--mode train needs a classifier whose output is (batch, classes); "
            f"{resolved.name} returns {got}"
        )
    classes = int(out.shape[1])
    # Random labels: energy does not depend on which class is right, only on the shapes.
    return torch.randint(0, classes, (1,), generator=torch.Generator().manual_seed(0))


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send whatever is written to stdout meanwhile to stderr, at the file-descriptor level too,
    so prints in the user's model (here or in the measuring child, which inherits fd 1) never
    corrupt the JSON document or the table."""
    import os

    with contextlib.redirect_stdout(sys.stderr):
        try:
            out_fd, err_fd = sys.__stdout__.fileno(), sys.__stderr__.fileno()  # type: ignore[union-attr]
            saved: int | None = os.dup(out_fd)
        except (AttributeError, OSError, ValueError):  # no real stdout (embedded, closed)
            saved = None
        if saved is not None:
            sys.__stdout__.flush()  # type: ignore[union-attr]
            os.dup2(err_fd, out_fd)
        try:
            yield
        finally:
            if saved is not None:
                sys.__stdout__.flush()  # type: ignore[union-attr]
                os.dup2(saved, out_fd)
                os.close(saved)


@contextlib.contextmanager
def _progress(console: Console, text: str) -> Iterator[None]:
    if console.is_terminal:
        with console.status(text):
            yield
    else:
        yield


def _finite(value: Any) -> Any:
    """JSON has no NaN or Infinity: write null instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _print_json(doc: dict[str, Any]) -> None:
    _write_stdout(json.dumps(_finite(doc), indent=2, allow_nan=False) + "\n")


def _write_stdout(text: str) -> None:
    """Write a command's result to stdout whole, or fail saying so and leave nothing behind.

    Two things go wrong without this when stdout is a file that runs out of room
    (``ulimit -f``, a full disk): with ``PYTHONUNBUFFERED=1`` ``sys.stdout.write`` drops the
    rest of a short write without an error (exit 0, half a JSON document); and the part that
    was written stays. So the bytes are written in a loop until all are taken or the OS says
    why not; on such an error the file is cut back to the size it had, stdout is pointed at
    /dev/null (the interpreter's flush at exit would fail again, exit 120, and print a second
    error), and the error names the file.
    """
    import os

    from wattwise._fs import STORAGE_ERRNOS

    sys.stdout.flush()
    size = _regular_file_size(sys.stdout)
    buffer = getattr(sys.stdout, "buffer", None)
    try:
        if buffer is None:  # a text-only stream (embedded): it keeps what it is given
            sys.stdout.write(text)
        else:
            _write_all(buffer, text.encode(sys.stdout.encoding or "utf-8", "replace"))
        sys.stdout.flush()
    except OSError as exc:
        if exc.errno not in STORAGE_ERRNOS:
            raise
        fd = sys.stdout.fileno()
        where = _fd_path(fd)
        if size is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
        os.dup2(os.open(os.devnull, os.O_WRONLY), fd)
        raise OSError(exc.errno, exc.strerror, where) from None


def _write_all(buffer: Any, data: bytes) -> None:
    """``buffer.write`` until every byte is taken: a raw (unbuffered) stream may take fewer."""
    import errno

    view = memoryview(data)
    while view:
        taken = buffer.write(view)
        if taken is None:  # a non-blocking raw stream with no room now
            raise BlockingIOError(errno.EAGAIN, "stdout is non-blocking and full")
        view = view[taken:]
    buffer.flush()


def _regular_file_size(stream: Any) -> int | None:
    """The size of the file ``stream`` writes to, if it is a regular file; else None."""
    import os
    import stat

    try:
        info = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):  # not a real file (CliRunner, embedded)
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def _fd_path(fd: int) -> str:
    """What a file descriptor is open on, for an error message: ``stdout (/path)``."""
    import os

    with contextlib.suppress(OSError):
        target = os.readlink(f"/proc/self/fd/{fd}")
        if target.startswith("/"):
            return f"stdout ({target})"
    return "stdout"


def _si(value: float, unit: str = "") -> str:
    """``1.23e9 → '1.23 G'``: three significant figures with an SI prefix."""
    if not math.isfinite(value):
        return str(value)
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}".rstrip()
    return f"{value:.3g} {unit}".rstrip()


def _ms(value: float) -> str:
    return f"{value:.3g}"


def _describe_source(source: str) -> str:
    kind, _, how = source.partition(":")
    if kind == "measured":
        return f"Energy is measured by the {how} counter ({source})."
    return (
        f"Energy is ESTIMATED by the {how} power model ({source}): no energy counter is "
        "readable here. Compare figures from this machine with each other, not with "
        "measured ones."
    )


def _print_measurements(
    console: Console,
    resolved: ResolvedTarget,
    results: list[Measurement],
    hardware: dict[str, Any],
) -> None:
    from rich.table import Table

    from wattwise._units import format_energy

    where = results[0].device
    cpu = hardware.get("cpu_model") or "unknown CPU"
    machine = (
        ", ".join(hardware["cuda_devices"])
        if where.startswith("cuda") and hardware.get("cuda_devices")
        else f"{cpu}, {hardware.get('cpus_allowed')} vCPUs"
    )
    table = Table(
        title=f"{resolved.name} {tuple(resolved.input_shape)}, {results[0].mode}, {where}: {machine}",
        title_justify="left",
    )
    table.add_column("", style="bold")
    for m in results:
        table.add_column(f"batch {m.batch_size}", justify="right")

    def row(label: str, fmt: Callable[[Measurement], str]) -> None:
        table.add_row(label, *(fmt(m) for m in results))

    row("energy / item", lambda m: format_energy(m.energy_j_per_item))
    row("uncertainty", lambda m: f"±{m.energy_uncertainty:.0%}")
    row("source", lambda m: m.energy_source)
    row("above idle / item", lambda m: format_energy(m.energy_above_idle_j_per_item))
    row("idle power", lambda m: f"{m.idle_power_w:.3g} W")
    row("latency p50 (ms)", lambda m: _ms(m.latency_ms_p50))
    row("latency p90 (ms)", lambda m: _ms(m.latency_ms_p90))
    row("latency p99 (ms)", lambda m: _ms(m.latency_ms_p99))
    row("items / s", lambda m: _si(m.throughput_items_per_s))
    row("MACs / item", lambda m: _si(m.macs_per_item) if m.macs_per_item > 0 else "n/a")
    row("params", lambda m: _si(m.params))
    row("CO2e g / M items", lambda m: f"{m.co2e_g_per_million_items:.3g}")
    row(
        "CI95, windows",
        lambda m: f"±{m.ci95_rel:.1%}, {m.windows}" + ("" if m.converged else " (capped)"),
    )
    row("disturbed windows", _disturbed_cell)
    console.print(table)
    for source in dict.fromkeys(m.energy_source for m in results):
        uncertainty = max(m.energy_uncertainty for m in results if m.energy_source == source)
        console.print(
            f"{_describe_source(source)} Uncertainty ±{uncertainty:.0%}.", highlight=False
        )
    console.print(
        f"CO2e at {results[0].grid_intensity_g_per_kwh:g} gCO2e/kWh (--grid-intensity to change).",
        highlight=False,
    )
    for note in dict.fromkeys(n for m in results for n in m.notes):
        console.print(f"note: {note}", highlight=False, markup=False)


def _disturbed_cell(m: Measurement) -> str:
    """``3 of 8, foreign CPU 0.9 cores (+5 repeated)``: a window another process disturbed
    must show in the table, not only in a note under it."""
    if m.foreign_cpu_cores is None:
        return "not checked"
    text = f"{m.disturbed_windows} of {m.windows}"
    if m.disturbed_windows:
        text += f", foreign CPU {m.foreign_cpu_cores:.1f} cores"
    return text + (f" (+{m.repeated_windows} repeated)" if m.repeated_windows else "")


# --- doctor ------------------------------------------------------------------------------


def doctor_report() -> dict[str, Any]:
    """What works here: every meter (per device) and backend, available or not and why.

    Returns:
        ``{"schema": 1, "hardware": {...}, "meters": [...], "backends": [...]}``, each row
        ``{"name", "device", "available", "reason"}``. A probe that raises is reported as
        unavailable with the exception, never raised: doctor must always finish.
    """
    import torch

    from wattwise.measure._hardware import hardware_info
    from wattwise.measure.meters import probe_meters
    from wattwise.measure.meters._auto import PREFERENCE

    del torch  # imported first so its import time is not charged to a probe
    # Probe every meter for both device kinds, even without a GPU: "nvml: no NVIDIA driver"
    # answers the question, "nvml: 'cpu' is not a CUDA device" does not. Each meter is listed
    # for the devices it works on, or, if none, for the device kind it is made for.
    devices = ("cpu", "cuda")
    probed = {device: dict(probe_meters(device)) for device in devices}
    home = {name: kind for kind, names in PREFERENCE.items() for name in names}
    meters = []
    for name in probed["cpu"]:
        working = [d for d in devices if probed[d][name]]
        for device in working or [home.get(name, "cpu")]:
            meters.append(_doctor_row(name, device, probed[device][name]))
    # Backends come from the deploy registry: a backend registered there is reported here.
    from wattwise.deploy import probe_backends

    backends = []
    for device in devices:
        try:
            probed_backends = probe_backends(device)
        except Exception as exc:  # doctor must always finish
            backends.append(
                {
                    "name": "*",
                    "device": device,
                    "available": False,
                    "reason": f"probe failed: {exc}",
                }
            )
            continue
        for name, availability in probed_backends.items():
            backends.append(_doctor_row(name, device, availability))
    return {
        "schema": JSON_SCHEMA,
        "hardware": hardware_info(),
        "meters": meters,
        "backends": backends,
    }


def _doctor_row(name: str, device: str, availability: Availability) -> dict[str, Any]:
    return {
        "name": name,
        "device": device,
        "available": bool(availability.ok),
        "reason": " ".join(availability.reason.split()),
    }


@app.command()
@_handled
def doctor(
    json_out: Annotated[
        bool, typer.Option("--json", help="Print one JSON document to stdout instead of a table.")
    ] = False,
) -> None:
    """Say which energy meters and backends work here, and why the others do not."""
    report = doctor_report()
    if json_out:
        _print_json(report)
        return
    from rich.console import Console
    from rich.table import Table

    hw = report["hardware"]
    table = Table(
        title=f"{hw['cpu_model']}, {hw['cpus_allowed']} vCPUs, torch {hw['torch']}",
        title_justify="left",
    )
    for column in ("kind", "name", "device", "available", "reason"):
        table.add_column(column)
    for kind, rows in (("meter", report["meters"]), ("backend", report["backends"])):
        for r in rows:
            mark = "[green]yes[/]" if r["available"] else "[red]no[/]"
            table.add_row(kind, r["name"], r["device"], mark, r["reason"])
    Console().print(table)


# compress and the search commands (optimize, worker, report, check) live in their own modules.
from wattwise._cli_compress import register as _register_compress  # noqa: E402
from wattwise._cli_search import register as _register_search  # noqa: E402

_register_compress(app)
_register_search(app)
