#!/usr/bin/env python3
"""Time PyTorch's nn.LSTM, nn.GRU and nn.RNN on the rnn-wgpu benchmark suites, for a
side-by-side ratio.

Same rows as the Rust harness (`cargo run --release -- --suite ...`): `quick` is the harness's
QUICK_ROWS (one-layer rows, 2-layer bidirectional rows and B = 1 streaming rows); `lite` and
`deepbench` come from benches/deepbench_rnn.csv, parsed and selected the same way (comment
lines and the header skipped, DeepBench's "vanilla" cell is nn.RNN with relu, rows grouped by
cell then mode); or custom `--rows H,B,T;...`, one row per cell --cell selects and per mode
--mode selects. `--layers N` and `--bidirectional` apply to every row, as in the harness
(rows that become identical are timed once; a bidirectional stream row is skipped). Same
models: nn.LSTM, nn.GRU, nn.RNN(nonlinearity="relu"), num_layers and bidirectional as the row
says, I = H, seq-major x [T, B, H] uniform in +-1, no dropout.
Same FLOP count, summed over layers l and directions D: sum_l D*2*G*B*H*(I_l+H)*T with
I_0 = H and I_l = D*H above; one layer: LSTM 8*B*H*(I+H)*T, GRU 6*B*H*(I+H)*T,
RNN 2*B*H*(I+H)*T; a train row (forward + backward) counts 3x that, a stream row its T steps
as one forward.

Modes: inference runs one forward over the sequence under torch.no_grad(); train times
forward plus backward (input and weight gradients); stream feeds the sequence one timestep
per call (x[t:t+1], the state (h, c) carried from the previous call, under no_grad), with
torch.cuda.synchronize() and a copy of y_t to the host after every step, like the harness's
Session::step + download of y_t, and reports the median over reps of the mean step time in
us/step. --mode both = inference + train; all (the default) = all three.

Devices: the CPU, and when CUDA is available, CUDA with TF32 off ("cuda") and on
("cuda+tf32"), switched through torch.backends.cuda.matmul.allow_tf32 and
torch.backends.cudnn.allow_tf32. Each row reports the median wall time of --reps runs after
--warmup runs, with torch.cuda.synchronize() inside the timed region.

Run (a venv with torch exists at /tmp/torchvenv on the dev machine):

    /tmp/torchvenv/bin/python scripts/bench_torch.py --suite quick
    /tmp/torchvenv/bin/python scripts/bench_torch.py --suite lite --devices cpu --json torch-lite.json
    /tmp/torchvenv/bin/python scripts/bench_torch.py --rows "512,4,25;1024,1,25" --cell gru --mode inference
    /tmp/torchvenv/bin/python scripts/bench_torch.py --rows "256,1,100" --layers 2 --mode stream

On a shared or busy machine pass --threads (e.g. 1): torch's CPU thread pool spin-waits, and
with more threads than free cores a small row can run ~100x slower than it should.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

DEEPBENCH_CSV = Path(__file__).resolve().parent.parent / "benches" / "deepbench_rnn.csv"
# Table order, and gates per hidden unit (the G of 2*G*B*H*(I+H)*T).
CELLS = ("lstm", "gru", "rnn")
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
# DeepBench's cell names.
DEEPBENCH_CELLS = {"lstm": "lstm", "gru": "gru", "vanilla": "rnn"}
MODES = ("inference", "train", "stream")
# --mode choices beyond the single modes.
MODE_GROUPS = {"both": ["inference", "train"], "all": list(MODES)}
# (cell, mode, layers, bidirectional, H, B, T) of the smoke suite; keep in step with
# QUICK_ROWS in src/bin/rnn-wgpu/suite.rs.
QUICK_ROWS = [
    ("lstm", "inference", 1, False, 64, 16, 25),
    ("lstm", "inference", 1, False, 128, 4, 50),
    ("lstm", "inference", 1, False, 256, 1, 150),
    ("lstm", "inference", 1, False, 256, 16, 25),
    ("lstm", "inference", 2, True, 64, 16, 25),
    ("lstm", "train", 1, False, 64, 16, 25),
    ("lstm", "train", 1, False, 128, 4, 50),
    ("lstm", "train", 2, True, 64, 16, 25),
    ("gru", "inference", 1, False, 64, 16, 25),
    ("gru", "inference", 2, True, 64, 16, 25),
    ("gru", "train", 1, False, 64, 16, 25),
    ("gru", "train", 2, True, 64, 16, 25),
    ("rnn", "inference", 1, False, 128, 16, 25),
    ("rnn", "train", 1, False, 128, 16, 25),
    ("lstm", "stream", 2, False, 128, 1, 25),
    ("lstm", "stream", 1, False, 256, 1, 25),
    ("gru", "stream", 2, False, 128, 1, 25),
]
# lite's cap on a GRU or vanilla row, FLOPs of one pass; keep in step with LITE_MAX_FLOPS.
LITE_MAX_FLOPS = 8e9
LITE_ABOUT = (
    "lite = DeepBench's LSTM inference rows and LSTM train rows with H <= 1024, plus its GRU "
    "and vanilla rows of at most 8 GFLOP a pass (about its largest LSTM inference row)"
)
FLOPS_NOTE = (
    "GFLOP/s: forward FLOPs (x3 for train) / median ms, forward FLOPs summed over layers and "
    "directions, sum_l D*2*G*B*H*(I_l+H)*T with I_0 = H, I_l = D*H (one layer: "
    "lstm 8*B*H*(I+H)*T, gru 6*B*H*(I+H)*T, rnn 2*B*H*(I+H)*T)"
)
STREAM_NOTE = (
    "stream rows: ms = T steps of one timestep each (state carried, synchronize + copy of y_t "
    "to the host per step); us/step = median over reps of the mean step time"
)
TOPOLOGY_NOTE = (
    "L: stacked layers (I = H for layer 0, D*H above); dir: fwd (forward) or bi "
    "(bidirectional, D = 2)"
)
BIDIRECTIONAL_STREAM = (
    "a streaming session runs the forward direction only (a reverse direction needs the whole "
    "sequence)"
)
I_EQUALS_H_NOTE = (
    "whole layer timed with I = H, input projection included; "
    "DeepBench times only the recurrent part"
)


@dataclass(frozen=True)
class Row:
    cell: str
    hidden: int
    batch: int
    steps: int
    mode: str  # "inference", "train" or "stream"
    layers: int = 1
    bidirectional: bool = False


def directions(row: Row) -> int:
    return 2 if row.bidirectional else 1


def forward_flops(row: Row) -> float:
    """Forward sum_l D*2*G*B*H*(I_l+H)*T with I_0 = H, I_l = D*H (DeepBench / cuDNN
    convention, summed over layers and directions as RnnConfig::forward_flops)."""
    h, b, t, d = row.hidden, row.batch, row.steps, directions(row)
    return sum(
        d * 2.0 * GATES[row.cell] * b * h * ((h if layer == 0 else d * h) + h) * t
        for layer in range(row.layers)
    )


def row_flops(row: Row) -> float:
    return forward_flops(row) * (3.0 if row.mode == "train" else 1.0)


def in_lite(row: Row) -> bool:
    """lite's selection; keep in step with in_lite in src/bin/rnn-wgpu/suite.rs."""
    if row.cell == "lstm":
        return row.mode == "inference" or row.hidden <= 1024
    return row_flops(row) <= LITE_MAX_FLOPS


def table_order(row: Row) -> tuple[int, int]:
    """Cell (lstm, gru, rnn), then mode (inference, train); a stable sort keeps CSV order."""
    return CELLS.index(row.cell), MODES.index(row.mode)


def load_suite(name: str) -> tuple[list[Row], str | None]:
    """Rows of a named suite plus a one-line note of what was left out."""
    if name == "quick":
        return [Row(c, h, b, t, m, n, bi) for c, m, n, bi, h, b, t in QUICK_ROWS], None
    rows: list[Row] = []
    beyond_lite = 0
    duplicates = 0
    for line in DEEPBENCH_CSV.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or line.startswith("suite,"):
            continue
        suite, cell, hidden, batch, steps = (f.strip() for f in line.split(","))
        # DeepBench's `device` rows are inference problems sized for phones.
        mode = "train" if suite == "train" else "inference"
        row = Row(DEEPBENCH_CELLS[cell], int(hidden), int(batch), int(steps), mode)
        if name == "lite" and not in_lite(row):
            beyond_lite += 1
        elif row in rows:
            duplicates += 1
        else:
            rows.append(row)
    rows.sort(key=table_order)
    notes = []
    if beyond_lite:
        notes.append(f"{beyond_lite} DeepBench row(s) beyond lite's sizes left out")
    if duplicates:
        notes.append(f"{duplicates} duplicate row(s) timed once")
    return rows, "; ".join(notes) or None


def parse_rows(spec: str, cells: list[str], modes: list[str]) -> list[Row]:
    """Rows of --rows H,B,T[;...]: one per cell in `cells` and mode in `modes`, cell-major."""
    problems = []
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        nums = [int(v) for v in part.split(",")]
        if len(nums) != 3 or min(nums) <= 0:
            raise SystemExit(f"--rows: {part!r} is not H,B,T with positive sizes")
        problems.append(nums)
    if not problems:
        raise SystemExit("--rows: no rows given")
    return [Row(c, h, b, t, m) for c in cells for h, b, t in problems for m in modes]


def apply_topology(
    rows: list[Row], layers: int | None, bidirectional: bool
) -> tuple[list[Row], str | None]:
    """--layers / --bidirectional on every row; rows that become identical are timed once.
    Keep in step with apply_topology in src/bin/rnn-wgpu/suite.rs."""
    if layers is None and not bidirectional:
        return rows, None
    out: list[Row] = []
    for row in rows:
        row = replace(
            row,
            layers=row.layers if layers is None else layers,
            bidirectional=row.bidirectional or bidirectional,
        )
        if row not in out:
            out.append(row)
    dropped = len(rows) - len(out)
    if not dropped:
        return out, None
    flags = ([f"--layers {layers}"] if layers is not None else []) + (
        ["--bidirectional"] if bidirectional else []
    )
    return out, f"{dropped} row(s) identical under {' '.join(flags)} timed once"


def make_model(row: Row) -> torch.nn.Module:
    """PyTorch's plain cell of `row`, I = H, with biases, no dropout."""
    kw = {"num_layers": row.layers, "bidirectional": row.bidirectional}
    if row.cell == "lstm":
        return torch.nn.LSTM(row.hidden, row.hidden, **kw)
    if row.cell == "gru":
        return torch.nn.GRU(row.hidden, row.hidden, **kw)
    return torch.nn.RNN(row.hidden, row.hidden, nonlinearity="relu", **kw)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_row(row: Row, device: torch.device, reps: int, warmup: int, seed: int) -> list[float]:
    """Wall times in ms of `reps` runs of `row` on `device`."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = make_model(row).to(device)
    shape = (row.steps, row.batch, row.hidden)
    x = (torch.rand(shape, generator=gen) * 2 - 1).to(device)
    if row.mode == "train":
        x.requires_grad_(True)
        out_shape = (row.steps, row.batch, directions(row) * row.hidden)
        dy = (torch.rand(out_shape, generator=gen) * 2 - 1).to(device)
    # Stream rows: each step's [1, B, H] input, sliced ahead of the timed loop.
    steps = [x[t : t + 1] for t in range(row.steps)] if row.mode == "stream" else []

    def run() -> None:
        if row.mode == "stream":
            with torch.no_grad():
                state = None
                for x_t in steps:
                    y_t, state = model(x_t, state)
                    sync(device)
                    y_t.cpu()
        elif row.mode == "train":
            model.zero_grad(set_to_none=True)
            x.grad = None
            y, _ = model(x)
            y.backward(dy)
        else:
            with torch.no_grad():
                model(x)

    for _ in range(warmup):
        run()
    sync(device)
    samples = []
    for _ in range(reps):
        sync(device)
        start = time.perf_counter()
        run()
        sync(device)
        samples.append((time.perf_counter() - start) * 1e3)
    return samples


def devices(wanted: list[str] | None) -> list[tuple[str, torch.device, bool]]:
    """(label, device, tf32) for every device to time."""
    out = [("cpu", torch.device("cpu"), False)]
    if torch.cuda.is_available():
        cuda = torch.device("cuda")
        out += [("cuda", cuda, False), ("cuda+tf32", cuda, True)]
    if wanted:
        unknown = set(wanted) - {label for label, _, _ in out}
        if unknown:
            raise SystemExit(f"--devices: {sorted(unknown)} not available here")
        out = [d for d in out if d[0] in wanted]
    return out


def set_tf32(enabled: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", choices=["quick", "lite", "deepbench"], default="quick")
    ap.add_argument(
        "--rows",
        help="custom rows H,B,T[;H,B,T...] (I = H), one per cell --cell and mode --mode select",
    )
    ap.add_argument(
        "--cell", choices=[*CELLS, "all"], default="all", help="which cells to run (default all)"
    )
    ap.add_argument(
        "--mode",
        choices=[*MODES, *MODE_GROUPS],
        default="all",
        help="inference (forward), train (forward + backward), stream (one timestep per call, "
        "state carried), both = inference + train, or all three (default)",
    )
    ap.add_argument(
        "--layers",
        type=int,
        help="stacked layers of every row (default: each row's own; 1 but for the quick "
        "suite's 2-layer rows)",
    )
    ap.add_argument(
        "--bidirectional",
        action="store_true",
        help="make every row bidirectional (stream rows are then skipped)",
    )
    ap.add_argument("--reps", type=int, default=5, help="timed runs per row (median reported)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs before timing")
    ap.add_argument("--devices", help="comma list from cpu,cuda,cuda+tf32 (default: all present)")
    ap.add_argument("--inference-only", action="store_true", help="same as --mode inference")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads for the CPU runs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="write results here")
    args = ap.parse_args()
    if args.reps < 1:
        raise SystemExit("--reps must be at least 1")
    if args.layers is not None and args.layers < 1:
        raise SystemExit("--layers must be at least 1")

    if args.threads:
        torch.set_num_threads(args.threads)
    cells = list(CELLS) if args.cell == "all" else [args.cell]
    mode = "inference" if args.inference_only else args.mode
    modes = MODE_GROUPS.get(mode, [mode])
    about = None
    if args.rows:
        suite, rows, left_out = "custom", parse_rows(args.rows, cells, modes), None
    else:
        suite = args.suite
        about = LITE_ABOUT if suite == "lite" else None
        rows, left_out = load_suite(suite)
        notes = [left_out] if left_out else []
        for flag, value, keep in [
            ("--cell", args.cell, lambda r: r.cell in cells),
            ("--mode", mode, lambda r: r.mode in modes),
        ]:
            kept = [r for r in rows if keep(r)]
            if len(kept) < len(rows):
                notes.append(f"{len(rows) - len(kept)} row(s) left out by {flag} {value}")
            rows = kept
        left_out = "; ".join(notes) or None
    rows, topo_note = apply_topology(rows, args.layers, args.bidirectional)
    if topo_note:
        left_out = f"{left_out}; {topo_note}" if left_out else topo_note
    if not rows:
        raise SystemExit(
            f"suite {suite} has no rows for --cell {args.cell} --mode {mode} "
            "(stream rows: the quick suite and --rows only)"
        )
    devs = devices(args.devices.split(",") if args.devices else None)

    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    print(f"torch {torch.__version__} | cpu threads: {torch.get_num_threads()} | date: {date}")
    if torch.cuda.is_available():
        print(f"cuda: {torch.cuda.get_device_name()} (cuDNN {torch.backends.cudnn.version()})")
    print(f"suite: {suite} ({len(rows)} rows), {args.reps} reps (median), {args.warmup} warm-up")
    if about:
        print(about)
    if left_out:
        print(left_out)
    print()
    header = (
        f"{'cell':<5} {'L':>2} {'dir':<3} {'H':>5} {'B':>4} {'T':>5} {'mode':<9} "
        f"{'device':<9} {'ms':>10} {'us/step':>9} {'GFLOP/s':>9}"
    )
    print(header)
    print("-" * len(header))

    results = []
    for label, device, tf32 in devs:
        if device.type == "cuda":
            set_tf32(tf32)
        for k, row in enumerate(rows):
            topo = f"L={row.layers}" + (" bi" if row.bidirectional else "")
            print(
                f"[{label} {k + 1}/{len(rows)}] {row.cell} {topo} H={row.hidden} "
                f"B={row.batch} T={row.steps} {row.mode}",
                file=sys.stderr,
            )
            lead = (
                f"{row.cell:<5} {row.layers:>2} {'bi' if row.bidirectional else 'fwd':<3} "
                f"{row.hidden:>5} {row.batch:>4} {row.steps:>5} {row.mode:<9} {label:<9}"
            )
            result = {
                **asdict(row),
                "input_size": row.hidden,
                "device": label,
                "tf32": tf32,
                "flops": row_flops(row),
            }
            if row.mode == "stream" and row.bidirectional:
                print(f"{lead} skipped: {BIDIRECTIONAL_STREAM}", flush=True)
                results.append({**result, "status": "skipped", "note": BIDIRECTIONAL_STREAM})
                continue
            samples = time_row(row, device, args.reps, args.warmup, args.seed)
            ms = statistics.median(samples)
            gflops = row_flops(row) / (ms * 1e6)
            us_per_step = ms * 1e3 / row.steps if row.mode == "stream" else None
            us = f"{us_per_step:.1f}" if us_per_step is not None else ""
            print(f"{lead} {ms:>10.3f} {us:>9} {gflops:>9.2f}", flush=True)
            results.append(
                {**result, "status": "ok", "ms": ms, "samples_ms": samples,
                 "us_per_step": us_per_step, "gflops": gflops}
            )
    print()
    print(f"{I_EQUALS_H_NOTE}.")
    print('cells: nn.LSTM, nn.GRU, nn.RNN(nonlinearity="relu"; DeepBench\'s "vanilla" is cuDNN RNN_RELU).')
    print(f"{TOPOLOGY_NOTE}.")
    print(f"{FLOPS_NOTE}.")
    print(f"{STREAM_NOTE}.")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "tool": "scripts/bench_torch.py",
            "torch": torch.__version__,
            "cpu_threads": torch.get_num_threads(),
            "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "suite": suite,
            "date": date,
            "reps": args.reps,
            "warmup": args.warmup,
            "suite_about": about,
            "cell": args.cell,
            "mode": mode,
            "layers": args.layers,
            "bidirectional": args.bidirectional,
            "note": I_EQUALS_H_NOTE,
            "flops_note": FLOPS_NOTE,
            "stream_note": STREAM_NOTE,
            "left_out": left_out,
            "rows": results,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
