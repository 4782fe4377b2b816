"""The result of measuring one workload: energy per item with its source, latency, size."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from wattwise.measure._generate import Generation

SCHEMA_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Measurement:
    """One workload measured on one device.

    Units live in the names. ``energy_source`` is ``measured:nvml``, ``measured:rapl`` or
    ``estimated:<model>``; ``energy_uncertainty`` is relative (0.3 = ±30%) and belongs to every
    energy figure here. Latency is per call (one batch of ``batch_size`` items).

    Attributes:
        energy_j_per_item: all energy the meter saw in the measured windows, per item.
        energy_above_idle_j_per_item: the same less the idle power measured before the run.
        idle_power_w: the device's power while we slept, measured by the same meter.
        ci95_rel: half-width of the 95% confidence interval of the per-window J/item median,
            relative to it; ``converged`` says whether it reached the target before the time cap.
        disturbed_windows: of the ``windows`` reported, how many ran while other processes used
            more than ``FOREIGN_CORES_MAX`` CPU cores (see ``_harness.CpuWatch``); above 0 the
            figures may be inflated, and ``notes`` says so. Defaults keep older dicts loading.
        repeated_windows: disturbed windows dropped and measured again (not in ``windows``).
        foreign_cpu_cores: the CPU cores other processes used on average during the reported
            windows; None where it was not checked (a GPU, or no ``/proc/stat``).
        tokens_per_item: for token inputs (integer ids), the real tokens in one item of the
            measured batch (an ``attention_mask``'s ones, else the ids' sequence length, see
            :func:`wattwise._inputs.tokens_per_item`); None for other inputs. It gives
            :attr:`energy_j_per_token` and :attr:`throughput_tokens_per_s`.
        generation: for a generation workload (``measure(..., generate=...)``), prefill and
            decode J/token, J per response, TTFT, TBT (:class:`Generation`); an item is then
            one response of ``prompt_tokens + new_tokens`` tokens. None otherwise.
    """

    mode: str  # "inference" | "train"
    device: str
    batch_size: int
    energy_j_per_item: float
    energy_above_idle_j_per_item: float
    energy_source: str
    energy_uncertainty: float
    idle_power_w: float
    latency_ms_p50: float
    latency_ms_p90: float
    latency_ms_p99: float
    throughput_items_per_s: float
    peak_memory_bytes: int
    macs_per_item: float
    params: int
    co2e_g_per_million_items: float
    grid_intensity_g_per_kwh: float
    windows: int
    window_s: float
    ci95_rel: float
    converged: bool
    threads: int
    isolated: bool
    warmup_calls: int
    harness_overhead_rel: float
    notes: tuple[str, ...] = ()
    disturbed_windows: int = 0
    repeated_windows: int = 0
    foreign_cpu_cores: float | None = None
    tokens_per_item: float | None = None
    generation: Generation | None = None

    def __post_init__(self) -> None:
        for name in ("energy_j_per_item", "latency_ms_p50", "throughput_items_per_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"Measurement.{name} must be finite and > 0, got {value!r}")
        tokens = self.tokens_per_item
        if tokens is not None and not (
            isinstance(tokens, int | float) and math.isfinite(tokens) and tokens > 0
        ):
            raise ValueError(f"Measurement.tokens_per_item must be None or > 0, got {tokens!r}")
        if not self.energy_source.startswith(("measured:", "estimated:")):
            raise ValueError(
                f"energy_source {self.energy_source!r} must say measured: or estimated:"
            )

    @property
    def is_estimate(self) -> bool:
        return self.energy_source.startswith("estimated:")

    @property
    def is_disturbed(self) -> bool:
        """Whether other processes' CPU load ran through some of the reported windows."""
        return self.disturbed_windows > 0

    @property
    def energy_j_per_token(self) -> float | None:
        """Energy per real token (padding excluded); None for inputs without tokens."""
        if self.tokens_per_item is None:
            return None
        return self.energy_j_per_item / self.tokens_per_item

    @property
    def throughput_tokens_per_s(self) -> float | None:
        """Real tokens processed per second; None for inputs without tokens."""
        if self.tokens_per_item is None:
            return None
        return self.throughput_items_per_s * self.tokens_per_item

    def training_run(self, items_per_epoch: int, epochs: int) -> dict[str, Any]:
        """A ``mode="train"`` measurement extrapolated to a whole run: ``epochs`` passes over
        ``items_per_epoch`` items at this measurement's steady rate, with an interval from its
        CI95. A run's warm-up and its evaluations are not in it: ``wattwise train --predict``
        predicts a real run after its first epoch, those included (``docs/training.md``).

        Raises:
            InputError: an inference measurement, or counts that are not whole numbers >= 1.
        """
        from wattwise.errors import InputError

        if self.mode != "train":
            raise InputError("training_run needs a measurement made with mode='train'")
        for name, value in (("items_per_epoch", items_per_epoch), ("epochs", epochs)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be an integer >= 1, got {value!r}")
        items = items_per_epoch * epochs
        energy = self.energy_j_per_item * items
        time_s = items / self.throughput_items_per_s
        half = self.ci95_rel if math.isfinite(self.ci95_rel) else 0.0
        return {
            "items": items,
            "energy_j": energy,
            "interval_j": (energy * (1 - half), energy * (1 + half)),
            "time_s": time_s,
            "energy_source": self.energy_source,
            "energy_uncertainty": self.energy_uncertainty,
        }

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["notes"] = list(self.notes)
        # Derived, for readers of the JSON (None without tokens); from_dict ignores them.
        out["energy_j_per_token"] = self.energy_j_per_token
        out["throughput_tokens_per_s"] = self.throughput_tokens_per_s
        out["schema"] = SCHEMA_VERSION
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measurement:
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in fields}
        kwargs["notes"] = tuple(kwargs.get("notes", ()))
        if isinstance(kwargs.get("generation"), dict):
            kwargs["generation"] = Generation.from_dict(kwargs["generation"])
        return cls(**kwargs)
