"""Render ``gpu_check.py``'s JSON as the Markdown table in ``docs/benchmarks/gpu.md``.

Run: ``python benchmarks/gpu_report.py docs/benchmarks/gpu_h100.json > docs/benchmarks/gpu.md``
"""

from __future__ import annotations

import json
import sys

# The project's H200 anchors, measured by this project on an H200 (NVML counter), mJ per image. Its
# ResNet-50 was torchvision's, the same v1.5 network as ours; rows of either name match.
ANCHORS_H200_MJ = {
    ("ResNet-50 (torchvision)", "float32", 1, False): 713,
    ("ResNet-50 (torchvision)", "float32", 256, False): 74.5,
    ("ResNet-50 (torchvision)", "bfloat16", 256, False): 42.0,
    ("ResNet-50 (torchvision)", "bfloat16", 256, True): 28.8,
    ("MobileNetV3-Large (ours)", "float32", 1, False): 427,
    ("MobileNetV3-Large (ours)", "float32", 256, False): 25.5,
    ("MobileNetV3-Large (ours)", "bfloat16", 256, False): 14.7,
    ("MobileNetV3-Large (ours)", "bfloat16", 256, True): 11.4,
    # The anchors' EfficientNet row is B0 (squeeze-excite, swish), not Lite0: no anchor for Lite0.
}


def main(path: str) -> None:
    with open(path) as handle:
        data = json.load(handle)
    probe = data.get("counter_probe", {})
    gpu = data["hardware"].get("cuda_devices", ["?"])[0]
    print(f"# GPU energy on an {gpu} (NVML counter)\n")
    print(
        f"Measured {data['started']} by `benchmarks/gpu_check.py` on a lent machine "
        f"({data['nvidia_smi']}; torch {data['torch']}). Raw data: `{path.split('/')[-1]}`.\n"
    )
    print("## The meter\n")
    print("| figure | value |\n| --- | --- |")
    print(
        f"| counter update period, median (min–max) | {probe.get('update_period_ms_median', float('nan')):.1f} ms "
        f"({probe.get('update_period_ms_min', float('nan')):.1f}–{probe.get('update_period_ms_max', float('nan')):.1f}) |"
    )
    print(f"| one counter read, median | {probe.get('read_ms_median', float('nan')):.2f} ms |")
    print(
        f"| counter vs integrated 10 ms instant power, {probe.get('window_s', 0):.1f} s window "
        f"at {probe.get('mean_power_w', 0):.0f} W | {probe.get('relative_difference', float('nan')):+.2%} |"
    )
    print(
        "\nSo a window must last ≥ 1 s (10 updates): the harness repeats the work until it does.\n"
    )
    print("## J/image through `wattwise.measure` (each row its own child process)\n")
    print(
        "Random weights, 224×224, `measured:nvml` (±5%). `above idle` subtracts the idle power the"
    )
    print(
        "harness measured just before the windows. The H200 column is the project's H200 anchor (another"
    )
    print("card and harness: compare shapes, not absolute values).\n")
    print(
        "| model | precision | batch | compiled | mJ/image | above idle | idle W | p50 ms/batch | images/s | CI95 | H200 anchor mJ |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in data["rows"]:
        key = (r["model"], r["dtype"], r["batch_size"], r.get("compiled", False))
        anchor = ANCHORS_H200_MJ.get(
            (key[0].replace("(ours)", "(torchvision)") if "ResNet" in key[0] else key[0], *key[1:])
        )
        if r.get("error"):
            print(
                f"| {r['model']} | {r['dtype']} | {r['batch_size']} | {key[3]} | failed: {r['error']} |||||||"
            )
            continue
        print(
            f"| {r['model']} | {r['dtype']} | {r['batch_size']} | {'yes' if key[3] else 'no'} | "
            f"{r['energy_j_per_item'] * 1e3:.1f} | {r['energy_above_idle_j_per_item'] * 1e3:.1f} | "
            f"{r['idle_power_w']:.0f} | {r['latency_ms_p50']:.1f} | {r['throughput_items_per_s']:.0f} | "
            f"±{r['ci95_rel']:.1%} | {anchor if anchor is not None else '—'} |"
        )
    print(NOTES)


NOTES = """
## What this shows

- **Batching is the biggest lever on a GPU**: fp32 batch 256 costs 8–19x less per image than
  batch 1 for every model; bf16 takes another 1.4–1.7x off, and `torch.compile` (inductor,
  channels_last) another 1.3–1.5x. Our best MobileNetV3-Large deployment (bf16 + compile,
  batch 256) uses 39x less energy per image than fp32 eager at batch 1.
- **At batch 1 the idle floor dominates**: the board draws 130+ W between calls, so only
  2–13% of a batch-1 image's energy is above idle; above-idle figures at batch 1 are noisy (CI95
  up to ±42% with 4 windows of ~1 s, flagged in each result's notes and here).
- **Idle power depends on what came before**: measured just after warm-up it was 131–181 W,
  against ~75–80 W on a cold board (the counter probe above, and the meter's own tests). The
  harness measures idle at the moment it measures the work, which is the honest baseline for
  "above idle", but it is higher than a datasheet idle.
- **Against the project's H200 anchors (H200)**: our H100 figures run 1.2–1.7x higher. Part is the
  card (the H100 has 30% less memory bandwidth), part is the harness: it synchronises after
  every call to time each one (latency percentiles), which idles the GPU between launches at
  small batch. The ranking of configurations matches the anchors throughout.
"""


if __name__ == "__main__":
    main(sys.argv[1])
