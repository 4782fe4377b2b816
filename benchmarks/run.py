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


# What the committed run shows (2026-12-05), written after reading it; rerunning regenerates
# the tables and the summary above, not this text.
READING = """### Reading the committed run (2026-12-05)

* **The machine and the run.** An AMD EPYC VM with 2 vCPUs and AVX512-BF16. While every
  measurement ran, other processes used at most 0.09 cores: the load guard refuses to write a
  model measured above 0.5.
  * The digits, ResNet-style and MiniLM cases ran the search of commit `d0aeb4a`.
  * MobileNetV3 and tinylm ran `766561a`. That commit adds three search changes: the seeds
    take two thirds of the budget, int8 seeds past batch 1 run on one thread, and the best
    trial gets its thread counts and neighbouring batches refined.
  * EfficientNet-Lite0 is still November's run (an older wattwise) and is to be rerun.
* **wattwise is lowest in 10 of 12 cells; ≤0.5× the best peer in 2** (ResNet-style offline
  0.45×, MobileNetV3 online 0.48×). The goal is half the cells; this run does not meet it.
* **MobileNetV3 offline: NOT lowest (7.7×).** The search chose the baseline compiled in bf16
  at batch 64, at 1.06 mJ/item. torchao's PT2E int8 compiled by inductor cost 138 µJ.
  * Earlier the same day, before `766561a`, the search had chosen the baseline on OpenVINO
    int8 on all threads: 582 µJ/item, against NNCF's one-thread int8 at 123 µJ. NNCF is 1.4
    points below the baseline, outside the limit.
  * The search's own trials are not in this file, so why it rated bf16 above its OpenVINO and
    compile int8 candidates is not known yet. `bench_peers.py` now keeps every search trial
    (`search_trials`), and the next run shows it.
* **tinylm online: NOT lowest (1.26×).** The half-width student compiled for the CPU cost
  more per response than the baseline under plain `model.compile()`. At batch 1 a decode
  step of this model is mostly per-operation overhead, which a narrower model does not
  remove. Why the student did not at least tie is still to be found.
  * Offline (batch 32), the same student wins: 0.55× the best peer, torchao int8 weight-only
    + compile.
* **Online (batch 1), small models: the runtime's per-call overhead.** A digits CNN call costs
  73 µJ with the half-width student on ONNX Runtime, against 87 for ONNX Runtime's static
  int8 of the full model: 0.84×. The ResNet-style net is 0.88×. Shrinking the model further
  barely moves the fixed cost of a call.
* **Where wattwise wins, it stacks what the peers do one at a time.**
  * ResNet-style offline: a quarter-width student, pruned, on OpenVINO int8 at batch 256 on
    one thread, 0.45× NNCF.
  * MiniLM: a half-depth student on OpenVINO int8, 0.73× online and 0.55× offline against
    NNCF's transformer int8. It also scored 0.854 against the baseline's 0.823, from three
    more epochs of training, half of them on soft targets.
* **Peers' own defaults can hurt.**
  * NNCF's default PTQ on MobileNetV3 is the cheapest deployment there, but loses 1.4 points.
  * Optimum's ONNX Runtime dynamic int8 loses a point on MiniLM.
  * ONNX Runtime's static int8 costs more than fp32 eager on MobileNetV3 offline (1.19×).
  * torchao's int8 costs more than fp32 eager on the digits CNN at batch 1 (1.53×).
* **Cost of the search.** The wattwise rows come from searches of 6 to 14 trials that took
  minutes and hundreds of joules each (given per table), against seconds for one peer.
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
