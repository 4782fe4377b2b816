"""The one command behind ``docs/BENCHMARKS.md``: run the benchmarks, then write the document.

1. ``bench_peers.py``: wattwise optimize vs single-technique peers on six models, both
   scenarios (``docs/benchmarks/peers.json``);
2. ``bench_meters.py``: our meter and harness vs CodeCarbon and Zeus
   (``docs/benchmarks/meters.json``);
3. the GPU table from the last ``gpu_check.py`` run on a lent machine, if one was committed
   (it needs a GPU, so it is not rerun here; its date and machine are stated beside it).

Run: ``make bench`` (installs the ``bench`` extra first). ``--render-only`` rewrites the
document from the committed JSON without measuring anything.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from wattwise._units import format_energy as _energy

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "docs" / "benchmarks"
DOC = ROOT / "docs" / "BENCHMARKS.md"
PEER_ORDER = (
    "wattwise optimize",
    "torchao PT2E int8 + compile",
    "ONNX Runtime static int8",
    "NNCF PTQ int8 (OpenVINO)",
    "Torch-Pruning 50% + fine-tune",
    "torch.compile fp32",
    "fp32 eager",
)


def _run(script: str, *args: str) -> None:
    cmd = [sys.executable, str(ROOT / "benchmarks" / script), *args]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def _ratio(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}×" if x >= 0.1 else f"{x:.3f}×"


def _size(n: int | None) -> str:
    if n is None:
        return "—"
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _threads(t: int | None) -> str:
    return "all" if not t else str(t)


def _peer_table(rows: list[dict[str, Any]]) -> list[str]:
    order = {name: i for i, name in enumerate(PEER_ORDER)}
    lines = [
        "| method | accuracy (change, points) | J/item | × fp32 eager | p50 ms/call (×) | p90 ms/call (×) "
        "| size (×) | MACs/item (×) | batch, threads |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in sorted(rows, key=lambda r: order.get(r["method"], 99)):
        name = f"**{r['method']}**" if r["method"] == "wattwise optimize" else r["method"]
        if "energy_j_per_item" not in r:
            lines.append(f"| {name} | failed: {r.get('error', '?')} | | | | | | | |")
            continue
        flag = "" if r["within_limit"] else " ✗"
        macs = r.get("macs_per_item") or 0
        lines.append(
            f"| {name} | {r['accuracy']:.4f} ({-r['drop_points']:+.2f}){flag} "
            f"| {_energy(r['energy_j_per_item'])} | **{_ratio(r['energy_ratio'])}** "
            f"| {r['latency_ms_p50']:.3g} ({_ratio(r['latency_ms_p50_ratio'])}) "
            f"| {r['latency_ms_p90']:.3g} ({_ratio(r['latency_ms_p90_ratio'])}) "
            f"| {_size(r['size_bytes'])} ({_ratio(r['size_ratio'])}) "
            f"| {macs / 1e6:.3g} M ({_ratio(r.get('macs_ratio'))}) "
            f"| {r['batch_size']}, {_threads(r['threads'])} |"
        )
    return lines


def _choice(row: dict[str, Any]) -> str:
    c = row.get("choice") or {}
    what = c.get("label") or f"{c.get('backend')}/{c.get('precision')}"
    return f"`{what}`"


def verdict(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Is wattwise's J/item below every single-technique peer within the accuracy limit?

    A peer whose median is at or below ours *clearly* beats us when every one of its rounds is
    below every one of ours; otherwise the two overlap and it is called a tie (the rounds'
    spread is the noise this machine puts on the comparison).
    """
    ours = next((r for r in rows if r["method"] == "wattwise optimize"), None)
    if ours is None or ours.get("energy_j_per_item") is None:
        reason = (ours or {}).get("error", "no measured row")
        return {"lowest": False, "reason": f"wattwise optimize: {reason}"}
    peers = [
        r
        for r in rows
        if r["method"] not in ("wattwise optimize", "fp32 eager")
        and r.get("within_limit")
        and r.get("energy_j_per_item") is not None
    ]
    best = min(peers, key=lambda r: r["energy_j_per_item"], default=None)
    clear, ties = [], []
    for r in peers:
        if r["energy_j_per_item"] > ours["energy_j_per_item"]:
            continue
        if max(r["rounds_j_per_item"]) < min(ours["rounds_j_per_item"]):
            clear.append(r["method"])
        else:
            ties.append(r["method"])
    return {
        "lowest": not clear and not ties,
        "clearly_beaten_by": clear,
        "tied_with": ties,
        "best_peer": best["method"] if best else None,
        "vs_best_peer": ours["energy_j_per_item"] / best["energy_j_per_item"] if best else None,
    }


def _verdict_line(case: dict[str, Any], scenario: str, rows: list[dict[str, Any]]) -> str:
    v = verdict(rows)
    where = f"{case['title']}, {scenario}"
    ratio = v.get("vs_best_peer")
    vs = f"{ratio:.2f}× the J/item of the best peer ({v['best_peer']})" if ratio else ""
    if v.get("lowest"):
        return f"* {where}: **wattwise lowest**, {vs}."
    if v.get("clearly_beaten_by"):
        return (
            f"* {where}: **wattwise NOT lowest**: {', '.join(v['clearly_beaten_by'])} used less "
            f"energy per item in every round; {vs}."
        )
    if v.get("tied_with"):
        return (
            f"* {where}: **wattwise not lowest, a tie**: {', '.join(v['tied_with'])} has a median "
            f"at or below ours, but their rounds overlap with ours; {vs}."
        )
    return f"* {where}: **no wattwise figure**: {v.get('reason')}."


def _machine_line(case: dict[str, Any], data: dict[str, Any]) -> str | None:
    """Where a case's machine or versions differ from the file's last run, say so."""
    hw, versions = case.get("hardware") or {}, case.get("versions") or {}
    same = (hw.get("cpu_model"), versions) == (data["hardware"].get("cpu_model"), data["versions"])
    if same or not hw:
        return None
    listed = ", ".join(f"{k} {v}" for k, v in versions.items())
    return f"*This case was measured on a different run: {hw.get('cpu_model')}; {listed}.*"


def peers_section(data: dict[str, Any]) -> list[str]:
    proto = data["protocol"]
    lines = [
        "## 1. Compression and deployment vs peers",
        "",
        f"`benchmarks/bench_peers.py`, {data['date']}. Raw: `benchmarks/peers.json`.",
        "",
        "Every method starts from the same trained fp32 model and is scored on the same validation "
        f"set with the same limit (≤ {proto['max_accuracy_drop_points']:g} point drop). Each peer is "
        "its own library's documented recipe (`benchmarks/peers.py`) and gets its best batch "
        "size and thread count from a short pre-pass, as a user tuning it would; wattwise keeps "
        "the batch and threads its search chose. Then all are measured in "
        f"{proto['rounds']} rotating rounds (A B C …, B C … A, …), each measurement in its own "
        "child process; figures are medians, ratios are to fp32 eager from the same rounds. "
        "Online = batch 1; offline = the best batch. A ✗ marks a drop beyond the limit.",
        "",
    ]
    summary: list[str] = []
    for case in data["cases"].values():
        lines += [
            f"### {case['title']}",
            "",
            f"Task `{case['task']}`; metric: {case['metric']} on {case['val_items']} items; "
            f"baseline {case['baseline_accuracy']:.4f}. wattwise search budget: "
            f"{case['trials']['online']} trials online, {case['trials']['offline']} offline; "
            f"this model took {case['elapsed_s'] / 60:.1f} min in all"
            + (
                f", finished {case['finished']}"
                + (f" at commit `{case['commit']}`." if case.get("commit") else ".")
                if case.get("finished")
                else f" (run finished {data['date']})."
            ),
            "",
        ]
        machine = _machine_line(case, data)
        if machine:
            lines += [machine, ""]
        for scenario, block in case["scenarios"].items():
            rows = block["rows"]
            ours: dict[str, Any] = next((r for r in rows if r["method"] == "wattwise optimize"), {})
            sources = sorted(
                {
                    f"{r['energy_source']} ±{r['energy_uncertainty']:.0%}"
                    for r in rows
                    if "energy_source" in r
                }
            )
            search = block.get("wattwise_search") or {}
            lines += [f"**{scenario}** (energy: {', '.join(sources) or '—'})", ""]
            lines += _peer_table(rows)
            extra = ""
            if search.get("search_energy_j") is not None:
                extra = (
                    f"; the search took {search['search_s'] / 60:.1f} min and "
                    f"{_energy(search['search_energy_j'])} ({search.get('search_energy_source')})"
                )
            lines += ["", f"wattwise chose {_choice(ours)}{extra}.", ""]
            summary.append(_verdict_line(case, scenario, rows))
    return ["## Summary: is wattwise's result the lowest-energy one?", "", *summary, "", *lines]


# What the committed run shows (2026-12-06), written after reading it; rerunning regenerates
# the tables and the summary above, not this text.
READING = """### Reading the committed run (2026-12-06)

* **The machine and the run.** An AMD EPYC VM with 2 vCPUs and AVX512-BF16. While every
  measurement ran, other processes used at most 0.02 cores: the load guard refuses to write a
  model measured above 0.5.
  * The digits and ResNet-style cases ran the search of commit `36943b8`. It queues
    refinements only once nothing queued waits, and tries a model that missed the accuracy
    bound in int8 again in float (`docs/search.md`). The search committed after it
    (`7b0c8f7`) skips two of those rescues, one per case, that could not win: the last trial
    of the digits search and the thirteenth of the ResNet one. Neither was the winner.
  * tinylm ran `19bd797`, which adds students half as wide and half as deep for a model
    that generates, all distilled for twice the teacher's epochs.
  * MobileNetV3, EfficientNet-Lite0 and MiniLM ran `47be49d`, the search before those
    changes.
* **wattwise is lowest in all 12 cells; ≤0.5× the best peer in 6**, half of them, the goal:
  digits offline 0.45×, MobileNetV3 online 0.32×, MiniLM online 0.30× and offline 0.35×,
  tinylm online 0.37× and offline 0.19×.
* **ResNet-style offline: 0.61×; 0.45× in the run of `d0aeb4a`.** That run's winner, the
  half-width student pruned 30% by sensitivity on OpenVINO int8 at batch 256, now misses the
  bound by one item: 0.9833 (354 of 360) against a limit of 0.9844, at 218 µJ/item. In the
  earlier run it scored 0.9889 there. The student itself has not changed (0.9889 in fp32
  both times); OpenVINO's conversion has (`d9a8582`: its PyTorch frontend first, the ONNX
  graph only when that fails its check). The search now tries that student in bf16: 0.9889
  at 257 µJ/item, against 423 for NNCF's int8 of the baseline.
* **Where wattwise wins by most, it stacks what the peers do one at a time.**
  * MiniLM: a two-layer student (every third layer kept, distilled) on OpenVINO int8. At
    batch 1 it costs 2.27 mJ/item against 7.7 for NNCF's transformer int8 of the full
    model. Offline, with its float layers in bf16 at batch 64, 1.54 mJ against 4.4. It
    scored 0.833 against the baseline's 0.823.
  * MobileNetV3 online: the baseline on OpenVINO fp32 at batch 1 on one thread, 1.02 mJ
    against 3.18 for ONNX Runtime's static int8. OpenVINO's int8 of it, float layers in bf16,
    failed the output check at batch 1 (mean cosine 0.975 against 0.98, though every top-1
    agreed), and the students lost more than the point allowed.
  * Digits offline: the half-width student on OpenVINO int8 at batch 256, 14.3 µJ against
    32.0 for NNCF's int8 of the baseline.
  * tinylm: a student half as wide and half as deep, distilled for six epochs and compiled,
    on one thread. At batch 1 it costs 23.5 mJ per response against 64.2 for
    `torch.compile` of the baseline; at batch 32, 3.08 against 16.6 for torchao's int8
    weight-only + compile. Its next-byte accuracy is 0.577 against the baseline's 0.494: the
    task trains its baseline for three epochs, and the students train for twice that.
    Before `19bd797` the only students were half as wide or half as deep, each trained for
    three epochs: the half-width one won at 0.58× and 0.47×, and the half-depth one lost 2.8
    points.
* **Where it wins by less than half, and why.**
  * EfficientNet-Lite0 (0.61× online, 0.83× offline): the winner is the fp32 baseline on
    OpenVINO. Every int8 misses the one-point bound on agreement with fp32: OpenVINO's 0.965,
    ONNX Runtime's 0.930; torchao's PT2E failed the output check. The task has 128 photo
    crops to train on, too few for a student or a pruned copy of a 1000-class network
    (Torch-Pruning 50% + fine-tune: 0.000).
  * MobileNetV3 offline (0.91×): the winner is the baseline in OpenVINO's int8 with its
    float layers in bf16, at batch 256. Every smaller model misses the bound: the
    quarter-width student in int8 0.967 at 45 µJ/item, the half-width one in bf16 0.969 at
    65, against a limit of 0.971. NNCF's default int8, 114 µJ, loses 1.4 points.
  * Online (batch 1), the digits CNN (0.85×) and the ResNet-style net (0.89×): the runtime's
    fixed cost per call. The half-width student on ONNX Runtime fp32 costs 74 µJ per digit
    against 87 for ONNX Runtime's static int8 of the full model; the quarter-width one, 52
    µJ, loses 1.9 points. On the ResNet-style net the pruned student costs 595 µJ against
    672 for NNCF's int8.
* **Peers' own defaults can hurt.**
  * NNCF's default PTQ is the cheapest int8 of MobileNetV3 and of EfficientNet-Lite0, but
    loses 1.4 and 3.1 points.
  * ONNX Runtime's static int8 of EfficientNet-Lite0 loses 35 points; torchao's PT2E, 7.4.
  * ONNX Runtime's static int8 costs more than fp32 eager on MobileNetV3 offline (1.46×).
  * torchao's dynamic int8 costs more than fp32 eager on MiniLM at batch 1 (1.42×), and bf16
    without compile more on tinylm (1.85×). torchao's int8 weight-only + compile costs more
    than `torch.compile` alone on tinylm at batch 1 (86.7 against 64.2 mJ per response).
  * Optimum's ONNX Runtime dynamic int8 loses a point on MiniLM.
* **Cost of the search.** The wattwise rows come from searches of 5 to 14 trials. Each took
  1.3 to 11.1 minutes and 0.2 to 1.9 kJ (given per table), against seconds for one peer.
  `results.json`'s payback says after how many items that pays off.
"""


def meters_section() -> list[str]:
    path = DATA / "meters.md"
    if not path.exists():
        return ["## 2. Measurement vs peers", "", "Not run.", ""]
    body = path.read_text(encoding="utf-8").splitlines()
    # Reuse bench_meters.py's own rendering, one heading level down.
    out = ["## 2. Measurement vs peers: wattwise, CodeCarbon, Zeus"]
    for line in body[1:]:
        out.append(line.replace("`meters.json`", "`benchmarks/meters.json`"))
    return [*out, ""]


def gpu_section() -> list[str]:
    path = DATA / "gpu.md"
    if not path.exists():
        return ["## 3. GPU", "", "No GPU run committed yet; see `benchmarks/gpu_check.py`.", ""]
    body = path.read_text(encoding="utf-8").splitlines()
    out = [
        "## 3. GPU (NVML counter)",
        "",
        "Not rerun by this command: it needs a lent GPU machine (`benchmarks/gpu_check.py`, one "
        "prepared run of at most 5 minutes). The last committed run follows, with its own date "
        "and machine.",
        "",
    ]
    for line in body[1:]:
        out.append(line.replace("## ", "### "))
    return [*out, ""]


def render(peers_json: Path) -> str:
    data = json.loads(peers_json.read_text(encoding="utf-8"))
    hw = data["hardware"]
    versions = ", ".join(f"{k} {v}" for k, v in data["versions"].items())
    head = [
        "# Benchmarks",
        "",
        f"Written by `benchmarks/run.py` on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC. "
        f"Machine: {hw.get('cpu_model')}, {hw.get('cpus_allowed')} vCPUs allowed, "
        f"{(hw.get('ram_bytes') or 0) / 2**30:.0f} GiB, {len(hw.get('cuda_devices') or [])} GPUs "
        f"({hw.get('os')}). Versions: {versions}.",
        "",
        "Every energy figure carries its source. This VM has no energy counter, so its figures "
        "are `estimated:cpu-ccf` (a CPU-time model, ±40% absolute): read the **ratios**, taken "
        "side by side within one run, not the absolute joules. Timings are per call (one batch).",
        "",
    ]
    parts = [*head, *peers_section(data), READING, "", *meters_section(), *gpu_section()]
    return "\n".join(parts).rstrip() + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--render-only", action="store_true")
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: few trials, no meters; writes to /tmp"
    )
    args = parser.parse_args()
    from wattwise._fs import atomic_write_text

    if args.quick:
        tmp = Path("/tmp/wattwise-bench-quick")
        tmp.mkdir(exist_ok=True)
        _run("bench_peers.py", "--quick", "--fresh", "--out", str(tmp / "peers.json"))
        atomic_write_text(tmp / "BENCHMARKS.md", render(tmp / "peers.json"))
        print(f"wrote {tmp / 'BENCHMARKS.md'}")
        return
    if not args.render_only:
        _run("bench_peers.py", "--fresh")
        _run("bench_meters.py")
    atomic_write_text(DOC, render(DATA / "peers.json"))
    print(f"wrote {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
