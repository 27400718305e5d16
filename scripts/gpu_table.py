#!/usr/bin/env python3
"""Tables from a scripts/gpu_bench.sh run: `python3 scripts/gpu_table.py DIR`, where DIR holds
the JSON files of the harness (quick.json, slope.json, db-<cell>-<checked|unchecked>.json) and
of scripts/bench_torch.py (torch-db-<cell>.json, torch-slope.json). Prints Markdown: the quick
suite's parity, the per-step cost (the slope of time against T), and the DeepBench rows with
our checked and unchecked times beside PyTorch's (cuDNN) fp32 and TF32 times, as ratios
measured in the same run. Missing files leave their columns empty."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def key(r):
    return (r["cell"], r.get("layers", 1), r.get("bidirectional", False), r["hidden"], r["batch"],
            r["steps"], r["mode"])


def rows_of(report, device=None):
    out = {}
    if not report:
        return out
    for r in report.get("rows", []):
        if r.get("status") != "ok":
            continue
        if device is not None and r.get("device") != device:
            continue
        out[key(r)] = r
    return out


def slope(points):
    """Least-squares slope of ms against T, in microseconds per step."""
    if len(points) < 2:
        return None
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(ms for _, ms in points) / n
    sxx = sum((t - mx) ** 2 for t, _ in points)
    if sxx == 0:
        return None
    return 1e3 * sum((t - mx) * (ms - my) for t, ms in points) / sxx


def fmt(v, spec=".3f"):
    return "" if v is None else format(v, spec)


def main() -> int:
    d = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    machine = (d / "machine.txt")
    if machine.exists():
        print("```\n" + machine.read_text().strip() + "\n```\n")

    quick = load(d / "quick.json")
    if quick:
        a = quick.get("adapter", {})
        print(f"### Quick suite (parity), {quick.get('date')}, adapter {a.get('name')} "
              f"({a.get('backend')})\n")
        print("| cell | L | dir | H | B | T | mode | ms | GFLOP/s | max err | within tol |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in quick.get("rows", []):
            print(f"| {r['cell']} | {r.get('layers')} | {'bi' if r.get('bidirectional') else 'fwd'} "
                  f"| {r['hidden']} | {r['batch']} | {r['steps']} | {r['mode']} "
                  f"| {fmt(r.get('ms'))} | {fmt(r.get('gflops'), '.2f')} "
                  f"| {fmt(r.get('max_err'), '.1e')} | {r.get('within_tol')} |")
        print()

    ours = rows_of(load(d / "slope.json"))
    torch_slope = load(d / "torch-slope.json")
    print("### Per-step cost: slope of time against T (LSTM H = 256, B = 1, inference)\n")
    print("| | " + " | ".join(f"T = {k[5]}" for k in sorted(ours, key=lambda k: k[5])) + " | us/step |")
    print("|---|" + "---|" * (len(ours) + 1))
    for label, rows in [("rnn-wgpu", ours), ("torch cuda fp32", rows_of(torch_slope, "cuda")),
                        ("torch cuda tf32", rows_of(torch_slope, "cuda+tf32"))]:
        ks = sorted(ours, key=lambda k: k[5])
        cells = [fmt(rows[k]["ms"]) if k in rows else "" for k in ks]
        s = slope([(k[5], rows[k]["ms"]) for k in ks if k in rows])
        print(f"| {label} ms | " + " | ".join(cells) + f" | {fmt(s, '.1f')} |")
    print()

    for cell in ["lstm", "gru"]:
        checked = rows_of(load(d / f"db-{cell}-checked.json"))
        unchecked = rows_of(load(d / f"db-{cell}-unchecked.json"))
        nosg = rows_of(load(d / f"db-{cell}-nosubgroups.json"))
        torch = load(d / f"torch-db-{cell}.json")
        fp32, tf32 = rows_of(torch, "cuda"), rows_of(torch, "cuda+tf32")
        if not (checked or unchecked or fp32):
            continue
        print(f"### DeepBench {cell.upper()} (ms, median; ratio = torch ms / our checked ms, "
              f"> 1 means we are faster)\n")
        print("| H | B | T | mode | ours checked | ours unchecked | ours no subgroups | GFLOP/s "
              "| torch fp32 | ratio | torch tf32 | ratio |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for k in sorted(set(checked) | set(unchecked) | set(fp32), key=lambda k: (k[6], k[3], k[4], k[5])):
            c, u, n, f, t = (x.get(k) for x in (checked, unchecked, nosg, fp32, tf32))
            cms = c["ms"] if c else None
            ratio = lambda o: fmt(o["ms"] / cms, ".2f") if (o and cms) else ""
            print(f"| {k[3]} | {k[4]} | {k[5]} | {k[6]} | {fmt(cms)} | {fmt(u and u['ms'])} "
                  f"| {fmt(n and n['ms'])} | {fmt(c and c.get('gflops'), '.1f')} | {fmt(f and f['ms'])} | {ratio(f)} "
                  f"| {fmt(t and t['ms'])} | {ratio(t)} |")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
