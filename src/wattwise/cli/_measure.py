"""``wattwise measure``: energy per item, latency and size of a model at each batch size."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from wattwise.cli._app import app
from wattwise.cli._errors import handled
from wattwise.cli._options import Device, JsonOut
from wattwise.cli._output import JSON_SCHEMA, print_json, progress, stdout_to_stderr, write_stdout

if TYPE_CHECKING:
    from rich.console import Console

    from wattwise.cli._targets import ResolvedTarget
    from wattwise.measure import GenerateSpec, Generation, Measurement

__all__ = ["disturbed_cell"]


@app.command()
@handled
def measure(
    target: Annotated[
        str | None,
        typer.Argument(
            help="A built-in model (digits_cnn, mobilenetv3_small, ...), a built-in task's "
            "model (tinylm, minilm-topics, ...), package.module:factory (runs your code), or a .pt2 file (torch.export.save); "
            "optional with --task (the task's own model).",
            show_default=False,
        ),
    ] = None,
    input_shape: Annotated[
        str | None,
        typer.Option(
            "--input-shape",
            help="Input shape with batch 1 first, e.g. 1,3,224,224 (default: the model's own "
            "example_input, as given).",
        ),
    ] = None,
    input_dtype: Annotated[
        str | None,
        typer.Option(
            "--input-dtype",
            help="dtype of an input made from a shape: float32 (default), int64 for token ids "
            "(drawn below the model's smallest nn.Embedding vocabulary), ...",
        ),
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(
            "--task",
            help="Measure on a task's example input (built-in name or package.module:factory); "
            "without TARGET, the task's own (untrained) model.",
        ),
    ] = None,
    batch_size: Annotated[
        str | None,
        typer.Option("--batch-size", help="Batch sizes to measure, comma-separated: 1,32."),
    ] = None,
    device: Device = "cpu",
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
    generate: Annotated[
        bool,
        typer.Option(
            "--generate",
            help="Measure generation (a language model): prefill and decode J/token, TTFT and "
            "TBT; the batch size is the number of sequences generated together.",
        ),
    ] = False,
    prompt_tokens: Annotated[
        int,
        typer.Option(
            "--prompt-tokens", help="With --generate: prompt length (the input's ids, repeated)."
        ),
    ] = 128,
    new_tokens: Annotated[
        int, typer.Option("--new-tokens", help="With --generate: tokens generated per sequence.")
    ] = 64,
    json_out: JsonOut = False,
) -> None:
    """Measure energy per item, latency and size of TARGET at each batch size."""
    from rich.console import Console

    from wattwise._core import MODES, check_choice
    from wattwise.cli._targets import parse_batch_sizes, parse_dtype, parse_shape
    from wattwise.measure import check_device
    from wattwise.measure import measure as run_measure

    check_choice(mode, MODES, what="--mode")
    spec = _generate_spec(generate, prompt_tokens, new_tokens, mode)
    shape = parse_shape(input_shape) if input_shape is not None else None
    dtype = parse_dtype(input_dtype) if input_dtype is not None else None
    sizes = parse_batch_sizes(batch_size) if batch_size is not None else None
    device = check_device(device)  # no GPU → fail before building anything
    err = Console(stderr=True)
    results: list[Measurement] = []
    with stdout_to_stderr():  # the user's code runs in here; its prints must not reach stdout
        resolved = _resolve(target, task, shape, dtype)
        if resolved.fixed_batch_size is not None:
            sizes = _fixed_batch_sizes(resolved, sizes)
        sizes = sizes or [1]
        labels = _preflight(resolved, mode)
        for size in sizes:
            with progress(err, f"measuring {resolved.name} at batch {size} on {device}"):
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
                        generate=spec,
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
                # A single tensor's shape; None for a tuple or dict input ("input" names all).
                "input_shape": list(shape) if (shape := resolved.input_shape) else None,
                "input": resolved.input_text,
                "input_source": resolved.input_source,
            },
            "hardware": hardware,
            "measurements": [m.to_dict() for m in results],
        }
        print_json(doc)
    else:
        console = Console()
        with console.capture() as table:  # rendered as this console would, then written whole
            _print_measurements(console, resolved, results, hardware)
        write_stdout(table.get())


def _generate_spec(
    generate: bool, prompt_tokens: int, new_tokens: int, mode: str
) -> GenerateSpec | None:
    """The generation to measure, or None; --prompt-tokens/--new-tokens alone are a mistake."""
    from wattwise.errors import InputError
    from wattwise.measure import GenerateSpec

    if not generate:
        if (prompt_tokens, new_tokens) != (128, 64):
            raise InputError("--prompt-tokens and --new-tokens go with --generate")
        return None
    if mode != "inference":
        raise InputError("--generate measures inference; it takes --mode inference")
    for flag, value in (("--prompt-tokens", prompt_tokens), ("--new-tokens", new_tokens)):
        if value < 1:
            raise InputError(f"{flag} must be >= 1, got {value}")
    return GenerateSpec(prompt_tokens=prompt_tokens, new_tokens=new_tokens)


def _resolve(
    target: str | None, task: str | None, shape: tuple[int, ...] | None, dtype: str | None
) -> ResolvedTarget:
    """TARGET, measured on its own input, one made from --input-shape/--input-dtype, or the
    task's example input; without TARGET, the task's own model."""
    import functools

    from wattwise.cli._targets import ResolvedTarget, build_task_model, resolve_target
    from wattwise.errors import InputError

    if task is None:
        if target is None:
            raise InputError("measure needs a TARGET (a model), or --task NAME|module:factory")
        return resolve_target(target, input_shape=shape, input_dtype=dtype)
    from wattwise.tasks import load_task

    the_task = load_task(task)
    if target is not None:
        return resolve_target(target, example_input=the_task.example_input)
    if shape is not None or dtype is not None:
        raise InputError(
            "--input-shape and --input-dtype make an input from a shape; with --task the "
            "task's example input is used as given"
        )
    return ResolvedTarget(
        name=f"{task} (task model)",
        factory=functools.partial(build_task_model, task),
        example_input=the_task.example_input,
        kind="factory",
        input_source="task",
    )


def _fixed_batch_sizes(resolved: ResolvedTarget, sizes: list[int] | None) -> list[int]:
    from wattwise.cli._targets import _DYNAMIC_RECIPE
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
    from wattwise._inputs import call, describe, primary_tensor, take_rows
    from wattwise.errors import InputError, WorkloadError

    model = resolved.factory()
    x = resolved.example_input
    if resolved.fixed_batch_size is not None:
        x = take_rows(x, resolved.fixed_batch_size)
    try:
        model.eval()
        with torch.no_grad():
            out = call(model, x)
    except Exception as exc:
        raise WorkloadError(
            f"{resolved.name} failed on {_input_words(resolved)} [{describe(x)}]"
            f"{_input_hint(model, x, resolved)}: {one_line(exc)}"
        ) from None
    if mode != "train":
        return None
    with contextlib.suppress(InputError):  # refused just below, naming what it returned
        out = primary_tensor(out)
    if not (isinstance(out, torch.Tensor) and out.dim() == 2 and out.is_floating_point()):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InputError(
            f"--mode train needs a classifier whose output is (batch, classes); "
            f"{resolved.name} returns {got}"
        )
    classes = int(out.shape[1])
    # Random labels: energy does not depend on which class is right, only on the shapes.
    return torch.randint(0, classes, (1,), generator=torch.Generator().manual_seed(0))


def _input_words(resolved: ResolvedTarget) -> str:
    return {
        "shape": "an input made from a shape",
        "model": "its own example_input",
        "task": "the task's example input",
        "artifact": "the deployment's stored input",
    }[resolved.input_source]


def _input_hint(model: Any, x: Any, resolved: ResolvedTarget) -> str:
    """What to change, where we can tell: float input into an embedding wants token ids; an
    input made from a shape may have the wrong one."""
    from torch import nn

    from wattwise._inputs import is_token_input

    embeds = isinstance(model, nn.Module) and any(
        isinstance(m, nn.Embedding) for m in model.modules()
    )
    if embeds and not is_token_input(x):
        fix = "pass --input-dtype int64" if resolved.input_source == "shape" else "give it ids"
        return f" (its nn.Embedding takes integer token ids: {fix})"
    return " (check --input-shape)" if resolved.input_source == "shape" else ""


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


def _generation_rows(
    row: Callable[[str, Callable[[Measurement], str]], None],
    format_energy: Callable[[float], str],
) -> None:
    """The generation figures of each column (an item is then one response)."""

    def gen(fmt: Callable[[Generation], str]) -> Callable[[Measurement], str]:
        return lambda m: fmt(m.generation) if m.generation is not None else "n/a"

    row("prompt + new tokens", gen(lambda g: f"{g.prompt_tokens} + {g.new_tokens}"))
    row("prefill / token", gen(lambda g: format_energy(g.prefill_energy_j_per_token)))
    row("decode / token", gen(lambda g: format_energy(g.decode_energy_j_per_token)))
    row("energy / response", gen(lambda g: format_energy(g.energy_j_per_response)))
    row("TTFT p50 / p90 (ms)", gen(lambda g: f"{_ms(g.ttft_ms_p50)} / {_ms(g.ttft_ms_p90)}"))
    row("TBT p50 / p90 (ms)", gen(lambda g: f"{_ms(g.tbt_ms_p50)} / {_ms(g.tbt_ms_p90)}"))
    row("generated tokens / s", gen(lambda g: _si(g.tokens_per_s)))
    row("idle share", gen(lambda g: f"{g.idle_share:.0%}"))
    row("KV cache", gen(lambda g: g.kv_cache))


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
        title=f"{resolved.name} [{resolved.input_text}], {results[0].mode}, {where}: {machine}",
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
    if any(m.tokens_per_item is not None for m in results):
        # Token inputs: J/token compares models across sequence lengths (padding excluded).
        row("tokens / item", lambda m: _maybe(m.tokens_per_item, lambda v: f"{v:.3g}"))
        row("energy / token", lambda m: _maybe(m.energy_j_per_token, format_energy))
        row("tokens / s", lambda m: _maybe(m.throughput_tokens_per_s, _si))
    if any(m.generation is not None for m in results):
        _generation_rows(row, format_energy)
    row("MACs / item", lambda m: _si(m.macs_per_item) if m.macs_per_item > 0 else "n/a")
    row("params", lambda m: _si(m.params))
    row("CO2e g / M items", lambda m: f"{m.co2e_g_per_million_items:.3g}")
    row(
        "CI95, windows",
        lambda m: f"±{m.ci95_rel:.1%}, {m.windows}" + ("" if m.converged else " (capped)"),
    )
    row("disturbed windows", disturbed_cell)
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


def _maybe(value: float | None, fmt: Callable[[float], str]) -> str:
    return "n/a" if value is None else fmt(value)


def disturbed_cell(m: Measurement) -> str:
    """``3 of 8, foreign CPU 0.9 cores (+5 repeated)``: a window another process disturbed
    must show in the table, not only in a note under it."""
    if m.foreign_cpu_cores is None:
        return "not checked"
    text = f"{m.disturbed_windows} of {m.windows}"
    if m.disturbed_windows:
        text += f", foreign CPU {m.foreign_cpu_cores:.1f} cores"
    return text + (f" (+{m.repeated_windows} repeated)" if m.repeated_windows else "")
