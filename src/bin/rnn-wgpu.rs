//! The benchmark harness:
//! `cargo run --release [-- --suite quick|lite|deepbench] [--cell lstm|gru|rnn|all]
//! [--mode inference|train|stream|both|all] [--layers N] [--bidirectional]`, or
//! `cargo run --release -- --gemm M,N,K` to time the GEMM kernel alone.
//!
//! Rows are PyTorch's plain cells with `I = H`: `nn.LSTM`, `nn.GRU` and `nn.RNN` (relu; the
//! "vanilla" rows of DeepBench), with one or more layers, forward or bidirectional. Opens the
//! best adapter and times each row of a suite: median of `--reps` passes, where an inference
//! pass is `forward` + `wait`, a train pass (one training step) is `forward_train` +
//! `backward` (from a seeded `dy`) + `wait`, and a stream pass is `T` calls of
//! `Session::step`, each followed by the download of its `y_t` (reported as µs per step).
//! It checks one pass against the f64 CPU stack reference (inference and stream: the outputs
//! on `--check-rows` batch rows; train: every gradient of every layer-direction of a reduced
//! problem with `B' = min(B, --check-rows)`), prints a table and writes JSON plus an SVG
//! chart under `bench-results/`. Exits non-zero when no adapter is found, a row fails, a
//! stream step takes more than one submission, or an error exceeds `--tol` (inference,
//! stream) or `--train-tol` (train).

// A crate root's modules live beside it, so these name the folder named after the binary.
#[path = "rnn-wgpu/gemm.rs"]
mod gemm;
#[path = "rnn-wgpu/measure.rs"]
mod measure;
#[path = "rnn-wgpu/report.rs"]
mod report;
#[path = "rnn-wgpu/suite.rs"]
mod suite;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use rnn_wgpu::{Context, Error};

use measure::Settings;
use report::{AdapterJson, FLOPS_NOTE, I_EQUALS_H_NOTE, MAX_ERR_NOTE, Report, RowResult, Status};
use suite::{CellFilter, Mode, ModeFilter, Row, SuiteName};

/// Default `--tol`, for every cell. Each pre-activation is an f32 dot product over I + H + 2 terms with
/// |x|, |h| <= 1 and |w| <= 1/sqrt(H), so its value is O(1) and its rounding error grows like
/// sqrt(I + H) * 2^-24: about 1e-5 at H = 4096. sigmoid and tanh have slopes <= 1, c and h stay
/// bounded by 1, and the recurrence does not amplify errors with weights this small; 1e-4
/// leaves headroom for the adapter's `exp`/`tanh`, and a real bug (a wrong gate, a stale
/// state) shows up as errors of 1e-2 or more. The same holds for the GRU (its `n` adds `r`
/// times a second O(1) dot product, and `h' = (1-z)*n + z*h` is a convex mix) and the tanh
/// RNN.
const DEFAULT_TOL: f64 = 1e-4;

/// Default `--train-tol`, on the scaled error: per gradient tensor, max |gpu - ref| divided by
/// the reference's largest magnitude (gradients grow with T*B, so an absolute bound would
/// have to grow too). Each gradient is an f32 sum: over G*H terms for dx and dh (G = 4, 3, 1), over the T*B'
/// rows of the check problem for dW_ih, dW_hh and the biases, and BPTT carries every step's
/// rounding into the previous one through W_hh (damped by f < 1). f32 summation error grows
/// like sqrt(n) * 6e-8 of the summed magnitudes, so a few thousand terms give ~1e-6 to 1e-5 of
/// the tensor's scale (the quick suite here shows ~1e-6; tests/lstm_backward.rs holds its
/// grid, T up to 1000 and T*B up to 64 000, to 1e-4 of scale). 1e-3 leaves two orders of magnitude for the adapter's `exp`/`tanh` and cancellation
/// in the sums, while a real bug (wrong gate, missing term, bad index) gives errors of the
/// order of the tensor's scale itself, i.e. near 1.
const DEFAULT_TRAIN_TOL: f64 = 1e-3;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Benchmark rnn-wgpu's LSTM, GRU and RNN (one or more layers, forward or \
             bidirectional): forward (inference), forward + backward (train) and streaming \
             session steps (stream) on the best wgpu adapter"
)]
struct Args {
    /// Rows to run (ignored when --rows is given).
    #[arg(long, value_enum, default_value_t = SuiteName::Quick)]
    suite: SuiteName,
    /// Custom rows, `H,B,T[;H,B,T...]` (I = H): one per cell --cell selects and per mode
    /// --mode selects (one layer, forward, unless --layers / --bidirectional say otherwise).
    #[arg(long)]
    rows: Option<String>,
    /// Which cells to run: LSTM, GRU, plain RNN (relu), or all.
    #[arg(long, value_enum, default_value_t = CellFilter::All)]
    cell: CellFilter,
    /// Which rows to run: forward (inference), forward + backward (train), streaming session
    /// steps (stream; only the quick suite and --rows have stream rows), both = inference +
    /// train, or all three.
    #[arg(long, value_enum, default_value_t = ModeFilter::All)]
    mode: ModeFilter,
    /// Stacked layers of every row of the suite or --rows (layer l > 0 reads the D*H outputs of
    /// the layer below) [default: each row's own: 1, but for the quick suite's 2-layer rows].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    layers: Option<u32>,
    /// Make every row of the suite or --rows bidirectional [default: each row's own: forward,
    /// but for the quick suite's bidirectional rows]. Stream rows are then skipped: a session
    /// runs the forward direction only.
    #[arg(long)]
    bidirectional: bool,
    /// Timed passes per row; the median is reported.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    reps: u32,
    /// Untimed passes before timing (pipeline compilation, first-touch allocation).
    #[arg(long, default_value_t = 1)]
    warmup: u32,
    /// Skip the CPU-reference parity check.
    #[arg(long)]
    no_check: bool,
    /// Batch rows the CPU reference runs on (inference: the first rows of the problem;
    /// train: B' of a reduced problem, since weight gradients sum over all rows).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    check_rows: u32,
    /// Inference and stream rows: largest allowed |gpu - cpu| over y, h_n and (LSTM) c_n.
    #[arg(long, default_value_t = DEFAULT_TOL)]
    tol: f64,
    /// Train rows: largest allowed max |gpu - cpu| / max |cpu| of any gradient tensor.
    #[arg(long, default_value_t = DEFAULT_TRAIN_TOL)]
    train_tol: f64,
    /// The adapter's peak f32 GFLOP/s, to print % of peak.
    #[arg(long)]
    peak_gflops: Option<f64>,
    /// Seed of the weights (the input uses seed + 1, train rows' dy seed + 2).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// JSON output [default: bench-results/<suite>.json; a --cell other than all, a --mode
    /// other than all, --layers and --bidirectional add -<cell>, -<mode>, -l<N>, -bi].
    #[arg(long)]
    json: Option<PathBuf>,
    /// SVG chart output [default: as --json, with .svg].
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Print each row's plan (every dispatch of one step, per-kernel totals of the pass:
    /// workgroups, threads, workgroup memory, global bytes) instead of timing it. Uses the best
    /// adapter's limits, or WebGPU's default limits when there is none.
    #[arg(long)]
    plan: bool,
    /// Time the crate's GEMM alone instead of a suite: `c (M, N) = A (M, K) · B (K, N)` as
    /// --gemm-mode says, on seeded random data; --warmup untimed and --reps timed products,
    /// one submission and wait each, median reported as 2*M*N*K flops per second; a few
    /// entries are checked against an f64 CPU product.
    #[arg(long, value_name = "M,N,K", value_parser = gemm::parse_shape)]
    gemm: Option<(usize, usize, usize)>,
    /// --gemm's product: plain (+ bias, the input projection), trans-a (`a` stored (K, M),
    /// the weight gradients) or trans-b (`b` stored (N, K), the data gradients).
    #[arg(long, value_enum, default_value_t = gemm::GemmMode::Plain)]
    gemm_mode: gemm::GemmMode,
    /// --gemm trans-a / trans-b: split K as the backward pass does (when the shapes call for
    /// it; the line says how many chunks).
    #[arg(long)]
    gemm_split_k: bool,
    /// Compile the kernels without wgpu's shader runtime checks (bounds clamping, loop
    /// bounding, guarded division), to measure what they cost; see
    /// `Context::set_unchecked_shaders`.
    #[arg(long)]
    unchecked_shaders: bool,
    /// Reduce the step kernels' split reductions through workgroup memory even where the
    /// device has subgroups (results are bit-identical either way); see
    /// `Context::set_subgroups`.
    #[arg(long)]
    no_subgroups: bool,
    /// Run the two directions of a bidirectional layer as one step dispatch each (the
    /// fallback) even where the device could pair them in one (results are bit-identical
    /// either way); see `Context::set_paired_steps`. With `--plan`, plans as if the device
    /// could not pair them.
    #[arg(long)]
    no_paired_steps: bool,
    /// Store every model's weight matrices as f16 (f32 arithmetic; see
    /// `Rnn::with_precision`): inference and stream rows only, checked against the CPU
    /// reference fed the same f16-rounded weights. An error where the device lacks
    /// SHADER_F16, or with train rows.
    #[arg(long)]
    f16_weights: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(shape) = args.gemm {
        return run_gemm(&args, shape);
    }
    let suite = match &args.rows {
        Some(spec) => match suite::parse_rows(spec, args.cell.cells(), args.mode.modes()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
        None => suite::filter_modes(
            suite::filter_cells(suite::suite(args.suite), args.cell),
            args.mode,
        ),
    };
    let layers = args.layers.map(|l| l as usize);
    let suite = suite::apply_topology(suite, layers, args.bidirectional);
    if suite.rows.is_empty() {
        eprintln!(
            "error: suite {} has no rows for --cell {} --mode {} (stream rows: the quick suite \
             and --rows only)",
            suite.name,
            args.cell.as_str(),
            args.mode.as_str()
        );
        return ExitCode::from(2);
    }

    if args.f16_weights && suite.rows.iter().any(|r| r.mode == suite::Mode::Train) {
        eprintln!(
            "error: --f16-weights stores weights for inference only: give --mode inference or \
             stream (the suite has train rows)"
        );
        return ExitCode::from(2);
    }
    if args.plan {
        return print_plans(&suite.rows, args.no_paired_steps);
    }
    let Some(ctx) = open_context(&args) else {
        return ExitCode::FAILURE;
    };
    let info = ctx.adapter_info();
    let date = report::today_utc();
    println!(
        "adapter: {} | backend: {:?} | type: {:?} | date: {date} | shaders: {} | subgroups: {} \
         | paired steps: {}",
        info.name,
        info.backend,
        info.device_type,
        if args.unchecked_shaders {
            "unchecked"
        } else {
            "checked (wgpu default)"
        },
        match ctx.subgroups() {
            Some(n) => format!("on (smallest {n})"),
            None => "off".to_string(),
        },
        if ctx.paired_steps() { "on" } else { "off" }
    );
    println!(
        "suite: {} ({} rows), {} reps (median), {} warm-up",
        suite.name,
        suite.rows.len(),
        args.reps,
        args.warmup
    );
    if let Some(about) = suite.about {
        println!("{about}");
    }
    if let Some(note) = &suite.left_out {
        println!("{note}");
    }
    println!();

    // A filtered run gets its own files, so it does not overwrite a full run's.
    let mut stem = format!("bench-results/{}", suite.name);
    if args.cell != CellFilter::All {
        stem = format!("{stem}-{}", args.cell.as_str());
    }
    if args.mode != ModeFilter::All {
        stem = format!("{stem}-{}", args.mode.as_str());
    }
    if let Some(l) = layers {
        stem = format!("{stem}-l{l}");
    }
    if args.bidirectional {
        stem = format!("{stem}-bi");
    }
    if args.f16_weights {
        stem = format!("{stem}-f16");
    }
    let json_path = args
        .json
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{stem}.json")));
    let svg_path = args
        .svg
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{stem}.svg")));
    let settings = Settings {
        warmup: args.warmup as usize,
        reps: args.reps as usize,
        check_rows: (!args.no_check).then_some(args.check_rows as usize),
        seed: args.seed,
        f16_weights: args.f16_weights,
    };
    let mut report = Report {
        tool: format!("rnn-wgpu {}", env!("CARGO_PKG_VERSION")),
        suite: suite.name.clone(),
        suite_about: suite.about,
        date,
        adapter: AdapterJson::new(info),
        reps: settings.reps,
        warmup: settings.warmup,
        tol: args.tol,
        train_tol: args.train_tol,
        mode: args.mode.as_str(),
        cell: args.cell.as_str(),
        layers,
        bidirectional: args.bidirectional,
        peak_gflops: args.peak_gflops,
        unchecked_shaders: args.unchecked_shaders,
        f16_weights: args.f16_weights,
        subgroups: ctx.subgroups(),
        note: I_EQUALS_H_NOTE,
        flops_note: FLOPS_NOTE,
        max_err_note: MAX_ERR_NOTE,
        left_out: suite.left_out.clone(),
        complete: false,
        rows: Vec::new(),
    };

    println!("{}", report::table_header());
    let n = suite.rows.len();
    for (k, row) in suite.rows.iter().enumerate() {
        let tag = format!(
            "[{}/{n}] {} {} H={} B={} T={} {}",
            k + 1,
            row.cell.as_str(),
            row.topology(),
            row.hidden,
            row.batch,
            row.steps,
            row.mode.as_str()
        );
        let result = run_row(&ctx, row, &settings, &args, &|step| {
            eprintln!("{tag}: {step}")
        });
        println!("{}", report::table_line(&result));
        report.rows.push(result);
        // Rewritten after every row, so an interrupted long suite keeps what it measured.
        save(&report, &json_path, &svg_path);
    }
    report.complete = true;
    save(&report, &json_path, &svg_path);

    println!();
    println!("{I_EQUALS_H_NOTE}.");
    println!(
        "cells: PyTorch nn.LSTM, nn.GRU (reset after), nn.RNN (relu; DeepBench's \"vanilla\", cuDNN RNN_RELU)."
    );
    println!(
        "L: stacked layers (I = H for layer 0, D*H above); dir: fwd (forward) or bi \
         (bidirectional, D = 2, outputs concatenated)."
    );
    println!(
        "ms: median wall time of one pass (inference: forward + wait; train: forward_train + \
         backward + wait; stream: T session steps (step_host: x_t written from the host) submitted back to back, then one wait, each y_t left on the GPU and let go after its step); us/step \
         (stream rows): median over reps of the mean step latency, ms * 1000 / T; GFLOP/s: \
         forward FLOPs / ms, 3x that for train, with forward FLOPs summed over layers and \
         directions, sum_l D*2*G*B*H*(I_l+H)*T (one layer: lstm 8*B*H*(I+H)*T, gru \
         6*B*H*(I+H)*T, rnn 2*B*H*(I+H)*T); vs CPU: f64 reference time (forward, or forward + \
         backward; measured on --check-rows batch rows, scaled to B) / ms; subs: queue \
         submissions per pass (stream: per step, the y_t download not counted; must be 1)."
    );
    println!(
        "max err: inference and stream: max |gpu - ref| over y, h_n, c_n (lstm only) of every \
         layer-direction (stream: the stepped y_t and the session's final state) (absolute, \
         --tol {:e}); train: max over dx, dh0, dc0 (lstm only) and every layer-direction's \
         dW_ih, dW_hh, db_ih, db_hh of max |gpu - ref| / max |ref| (relative to each tensor's \
         scale, --train-tol {:e}), on a B' = min(B, --check-rows) problem; reference: the f64 \
         CPU stack (cpu::stack_forward / stack_backward).",
        args.tol, args.train_tol
    );
    println!("wrote {} and {}", json_path.display(), svg_path.display());

    let failed = report.rows.iter().filter(|r| r.failed()).count();
    if failed > 0 {
        eprintln!(
            "{failed} row(s) failed (error, or max err above --tol {:e} / --train-tol {:e})",
            args.tol, args.train_tol
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// `--gemm M,N,K`: one line, ending in GFLOP/s.
/// The best adapter's context with the shader settings of `args` (`--unchecked-shaders`,
/// `--no-subgroups`, `--no-paired-steps`); `None` after explaining why there is none.
fn open_context(args: &Args) -> Option<Context> {
    match Context::new() {
        Ok(ctx) => {
            ctx.set_unchecked_shaders(args.unchecked_shaders);
            ctx.set_subgroups(!args.no_subgroups);
            ctx.set_paired_steps(!args.no_paired_steps);
            Some(ctx)
        }
        Err(e) => {
            report_no_context(&e);
            None
        }
    }
}

fn run_gemm(args: &Args, (m, n, k): (usize, usize, usize)) -> ExitCode {
    let Some(ctx) = open_context(args) else {
        return ExitCode::FAILURE;
    };
    let how = (args.gemm_mode, args.gemm_split_k);
    let (warmup, reps) = (args.warmup as usize, args.reps as usize);
    match gemm::run(&ctx, (m, n, k), how, warmup, reps, args.seed) {
        Ok(r) => {
            let min = r.samples_ms.iter().copied().fold(f64::NAN, f64::min);
            let max = r.samples_ms.iter().copied().fold(f64::NAN, f64::max);
            println!(
                "gemm {:?} M={m} N={n} K={k} split-K {} on {}{}: median {:.3} ms of {} (min {:.3}, \
                 max {:.3}), max err {:.1e} (tol {:.1e}), {:.2} GFLOP/s",
                args.gemm_mode,
                r.splits,
                ctx.adapter_info().name,
                if args.unchecked_shaders {
                    ", unchecked shaders"
                } else {
                    ""
                },
                r.median_ms,
                r.samples_ms.len(),
                min,
                max,
                r.max_err,
                r.tol,
                r.gflops
            );
            if r.max_err <= r.tol {
                ExitCode::SUCCESS
            } else {
                eprintln!("error: max err {:e} above tol {:e}", r.max_err, r.tol);
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Measure one row, turning a skip or an error into a table row.
/// `--plan`: each row's plan, no GPU work (`unpaired`: as if the device could not pair a
/// bidirectional layer's steps, whose kernel binds 16 storage buffers).
fn print_plans(rows: &[Row], unpaired: bool) -> ExitCode {
    let (mut limits, whose) = match Context::new() {
        Ok(ctx) => (ctx.limits().clone(), ctx.describe()),
        Err(_) => (wgpu::Limits::default(), "WebGPU default limits".to_string()),
    };
    if unpaired {
        let most = &mut limits.max_storage_buffers_per_shader_stage;
        *most = (*most).min(15);
    }
    println!("plans against the limits of {whose}\n");
    for row in rows {
        let (steps, mode) = match row.mode {
            Mode::Inference => (row.steps, rnn_wgpu::PlanMode::Inference),
            Mode::Train => (row.steps, rnn_wgpu::PlanMode::Training),
            // A session step is a one-step inference pass.
            Mode::Stream => (1, rnn_wgpu::PlanMode::Stream),
        };
        println!(
            "== {} L={} {} H={} B={} T={} {}",
            row.cell.as_str(),
            row.layers,
            if row.bidirectional { "bi" } else { "fwd" },
            row.hidden,
            row.batch,
            row.steps,
            row.mode.as_str()
        );
        match measure::config(row)
            .and_then(|cfg| rnn_wgpu::Plan::new(&cfg, steps, row.batch, mode, false, &limits))
        {
            Ok(plan) => println!("{plan}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

fn run_row(
    ctx: &Context,
    row: &Row,
    settings: &Settings,
    args: &Args,
    progress: &dyn Fn(&str),
) -> RowResult {
    // A training step (forward + backward) is counted as 3 forwards: backward does the two
    // products of each forward GEMM, for the data and for the weight gradients.
    let flops = measure::config(row)
        .map(|cfg| row.mode.forward_passes() * cfg.forward_flops(row.batch, row.steps))
        .unwrap_or(f64::NAN);
    let tol = match row.mode {
        Mode::Inference | Mode::Stream => args.tol,
        Mode::Train => args.train_tol,
    };
    let mut result = RowResult {
        cell: row.cell.as_str(),
        layers: row.layers,
        bidirectional: row.bidirectional,
        hidden: row.hidden,
        batch: row.batch,
        steps: row.steps,
        input_size: row.hidden,
        mode: row.mode.as_str(),
        status: Status::Ok,
        note: None,
        flops,
        ms: None,
        samples_ms: Vec::new(),
        us_per_step: None,
        gflops: None,
        percent_peak: None,
        submissions: None,
        check_rows: None,
        cpu_ms: None,
        vs_cpu: None,
        max_err: None,
        err_kind: None,
        max_err_tensor: None,
        tol,
        within_tol: None,
    };
    if row.mode == Mode::Stream && row.bidirectional {
        let why = "a streaming session runs the forward direction only (a reverse direction \
                   needs the whole sequence)";
        progress(&format!("skipped: {why}"));
        result.status = Status::Skipped;
        result.note = Some(why.into());
        return result;
    }
    let measured = match row.mode {
        Mode::Inference => measure::run_inference(ctx, row, settings, progress),
        Mode::Train => measure::run_train(ctx, row, settings, progress),
        Mode::Stream => measure::run_stream(ctx, row, settings, progress),
    };
    match measured {
        Ok(m) => {
            let gflops = flops / (m.median_ms * 1e6);
            result.ms = Some(m.median_ms);
            result.samples_ms = m.samples_ms;
            result.gflops = Some(gflops);
            result.percent_peak = args.peak_gflops.map(|peak| 100.0 * gflops / peak);
            result.submissions = Some(m.submissions);
            if let Some(c) = m.check {
                let cpu_ms = c.cpu_ms_all_rows(row.batch);
                result.check_rows = Some(c.rows);
                result.cpu_ms = Some(cpu_ms);
                result.vs_cpu = Some(cpu_ms / m.median_ms);
                result.max_err = (!c.max_err.is_nan()).then_some(c.max_err);
                result.err_kind = Some(c.kind.as_str());
                result.max_err_tensor = Some(c.worst);
                // A NaN error compares false here, so it fails the check.
                result.within_tol = Some(c.max_err <= tol);
            }
            if row.mode == Mode::Stream {
                let us = m.median_ms * 1e3 / row.steps as f64;
                result.us_per_step = Some(us);
                progress(&format!(
                    "{us:.1} us/step, {} submission(s) per step",
                    m.submissions
                ));
                if m.submissions != 1 {
                    result.status = Status::Error;
                    result.note = Some(format!(
                        "a session step made {} queue submissions, expected 1 ({us:.1} us/step)",
                        m.submissions
                    ));
                }
            }
            progress(&format!("{:.3} ms, {gflops:.2} GFLOP/s", m.median_ms));
        }
        Err(e) => {
            progress(&format!("error: {e}"));
            result.status = Status::Error;
            result.note = Some(e.to_string());
        }
    }
    result
}

fn save(report: &Report, json: &std::path::Path, svg: &std::path::Path) {
    if let Err(e) = report::write_json(json, report) {
        eprintln!("warning: could not write {}: {e}", json.display());
    }
    if let Err(e) = report::write_svg(svg, report) {
        eprintln!("warning: could not write {}: {e}", svg.display());
    }
}

/// Explain a failed `Context::new`, listing every adapter wgpu saw.
fn report_no_context(e: &Error) {
    eprintln!("error: {e}");
    if matches!(e, Error::NoAdapter(_)) {
        eprintln!();
        eprintln!("No usable wgpu adapter was found, so there is nothing to benchmark on.");
        eprintln!("To get one:");
        eprintln!(
            "  - without a GPU (Linux): install Mesa's software Vulkan driver (llvmpipe), e.g. \
             `sudo apt-get install mesa-vulkan-drivers`;"
        );
        eprintln!(
            "  - with a GPU: install its vendor driver with Vulkan (or Metal / DX12) support."
        );
        eprintln!(
            "  - check RNN_WGPU_ADAPTER (a substring of the adapter name) and WGPU_BACKEND \
             (e.g. vulkan, gl), which narrow the search."
        );
    }
    let seen = rnn_wgpu::gpu::list_adapters();
    if seen.is_empty() {
        eprintln!("wgpu saw no adapters at all.");
    } else {
        eprintln!("wgpu saw:");
        for a in seen {
            eprintln!("  - {} ({:?}, {:?})", a.name, a.backend, a.device_type);
        }
    }
}
