//! Property test of valid input: `proptest` draws random valid configurations and shapes, and
//! the GPU's forward (inference and training) and backward must match the f64 CPU stack
//! reference (`cpu::stack_forward` / `stack_forward_train` / `stack_backward`) at the
//! tolerances of `tests/topology_gpu.rs` and `tests/cells_gpu.rs`.
//!
//! Drawn: the cell (LSTM, GRU, RNN tanh/relu); LSTM peepholes, coupled gates, `proj_size`,
//! gate and cell clips; GRU reset before/after; the ONNX activations in every role; 1-3
//! layers; forward, reverse or bidirectional; seq-major or batch-first; biases; per-row
//! lengths; initial states; which upstream gradients exist; time chunking; dropout between
//! layers (with a seed the CPU draws the same mask from). Shapes: B 1-33, H 1-70, I 1-40,
//! T 1-60.
//!
//! CI runs 256 cases from a fixed seed, split over two tests that run in parallel. How widely
//! they draw is [`Draws`]: CI takes the cell variant, `H`, `B` and bias from twelve
//! [`anchors`] (each a set of shader pipelines to compile: llvmpipe spends about a second of
//! CPU per pipeline when Mesa's shader cache is cold) and every other value freely;
//! `RNN_WGPU_PROP=full` draws everything freely. The long run is
//! `PROPTEST_RNG_SEED=20261202 PROPTEST_CASES=10000 cargo test --release --test prop_valid --
//! --nocapture` (add `RNN_WGPU_PROP=full` for full draws); it prints the cases passed every
//! 100 cases, the cases rejected (see [`KINK_MARGIN`]) and the worst error seen as a fraction
//! of its tolerance. A failure stops the run with its case, shrunk.

mod common;
#[path = "prop_valid/draws.rs"]
mod draws;

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::gpu::ctx;
use draws::{Case, case, draws};
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use rnn_wgpu::cpu::{
    StackGrads, StackTrace, stack_backward, stack_forward, stack_forward_train, to_f64,
};
use rnn_wgpu::{
    Activation, CellKind, Context, GpuTensor, HostState, Layout, Rnn, RnnConfig, RunOptions, State,
    Upstream, Weights,
};

/// Cases CI runs (`PROPTEST_CASES` overrides).
const CI_CASES: u32 = 256;
/// The fixed seed CI draws from (`PROPTEST_RNG_SEED` overrides).
const CI_SEED: u64 = 0x5EED_0012;

/// Outputs (`y`, `h_n`, `c_n`): the bound of `tests/topology_gpu.rs` (f32 sums of at most
/// (I + S) * G ≈ 500 products per step, observed ~1e-7 to 1e-6), scaled like
/// `tests/cells_gpu.rs` by the tensor's largest reference magnitude when it exceeds 1 (ReLU,
/// affine and softplus outputs are unbounded, and f32 rounding scales with them).
const Y_ATOL: f64 = 2e-5;
const Y_RTOL: f64 = 1e-4;

/// Gradients: within 1e-4 of the tensor's own scale (max |reference|) plus 1e-6, the bound of
/// `tests/lstm_backward.rs` and `tests/topology_gpu.rs` (f32 sums over T*B terms).
const G_SCALE_RTOL: f64 = 1e-4;
const G_ATOL: f64 = 1e-6;

/// A case whose f64 reference puts some value within this distance of an activation's kink
/// (ReLU at 0, ThresholdedRelu at alpha, HardSigmoid's corners, ...) or a clip bound is
/// redrawn (another data seed, up to [`SEED_TRIES`]): there f32 rounding (~1e-6 after a
/// few hundred products and steps) may land on the other side, which changes a derivative by
/// O(1) (or, for ThresholdedRelu, the value itself) — a legitimate difference no tolerance
/// can absorb. Values exactly on a kink are exact in both precisions (a product with an exact
/// zero) and are kept. After [`SEED_TRIES`] near-kink draws the case is rejected and counted.
const KINK_MARGIN: f64 = 1e-5;
const SEED_TRIES: u64 = 4;

/// Where `act` is not differentiable (or, for ThresholdedRelu, not continuous).
fn kinks(act: Activation) -> Vec<f64> {
    match act {
        Activation::Relu | Activation::LeakyRelu { .. } | Activation::Elu { .. } => vec![0.0],
        Activation::ThresholdedRelu { alpha } => vec![alpha as f64],
        Activation::HardSigmoid { alpha, beta } => {
            let (a, b) = (alpha as f64, beta as f64);
            vec![-b / a, (1.0 - b) / a]
        }
        _ => Vec::new(),
    }
}

/// The smallest nonzero distance of any pre-activation or cell state in `trace` from a kink
/// or clip bound of `cfg`.
fn kink_margin(cfg: &RnnConfig, trace: &StackTrace) -> f64 {
    let acts = cfg.activations();
    let h = cfg.hidden_size();
    // The activation of each H-wide block of the pre-activations; `None` for a block that is
    // computed but not used (the LSTM's forget gate under input_forget).
    let blocks: Vec<Option<Activation>> = match cfg.cell() {
        CellKind::Lstm => vec![
            Some(acts.gate),
            (!cfg.input_forget()).then_some(acts.gate),
            Some(acts.cell),
            Some(acts.gate),
        ],
        CellKind::Gru => vec![Some(acts.gate), Some(acts.gate), Some(acts.cell)],
        _ => vec![Some(acts.cell)],
    };
    let g = blocks.len();
    let clip = cfg.gate_clip().map(f64::from);
    let block_points: Vec<Option<Vec<f64>>> = blocks
        .iter()
        .map(|b| {
            b.map(|a| {
                let mut p = kinks(a);
                if let Some(c) = clip {
                    p.extend([-c, c]);
                }
                p
            })
        })
        .collect();
    let hidden = kinks(acts.hidden);
    let cell_clip: Vec<f64> = cfg
        .cell_clip()
        .map(|(lo, hi)| vec![lo as f64, hi as f64])
        .unwrap_or_default();
    let mut margin = f64::INFINITY;
    let mut near = |v: f64, points: &[f64]| {
        for &k in points {
            let d = (v - k).abs();
            if d > 0.0 {
                margin = margin.min(d);
            }
        }
    };
    for runs in trace.layer_traces() {
        for tr in runs {
            for (e, &p) in tr.pre.iter().enumerate() {
                if let Some(points) = &block_points[(e / h) % g] {
                    near(p, points);
                }
            }
            for &c in &tr.c {
                near(c, &hidden);
            }
            for &c in &tr.c_unclipped {
                near(c, &cell_clip);
            }
        }
    }
    margin
}

/// The inputs of one problem, f32 (what the GPU gets; the CPU gets them widened).
struct Data {
    w: Weights,
    x: Vec<f32>,
    h0: Option<Vec<f32>>,
    c0: Option<Vec<f32>>,
    dy: Option<Vec<f32>>,
    dh_n: Option<Vec<f32>>,
    dc_n: Option<Vec<f32>>,
}

fn data(c: &Case, seed: u64) -> Data {
    let cfg = &c.cfg;
    let (t, b) = (c.t, c.b);
    let (h, s) = (cfg.hidden_size(), cfg.state_size());
    let ld = cfg.num_layers() * cfg.num_directions();
    let lstm = cfg.cell() == CellKind::Lstm;
    let draw = |k: u64, n: usize, scale: f32| common::seeded(seed * 16 + k, n, scale);
    Data {
        w: Weights::init(cfg, seed),
        x: draw(1, t * b * cfg.input_size(), 1.0),
        h0: c.with_state.then(|| draw(2, ld * b * s, 0.5)),
        c0: (c.with_state && lstm).then(|| draw(3, ld * b * h, 0.5)),
        dy: c.upstream[0].then(|| draw(4, t * b * cfg.output_size(), 1.0)),
        dh_n: c.upstream[1].then(|| draw(5, ld * b * s, 1.0)),
        dc_n: (c.upstream[2] && lstm).then(|| draw(6, ld * b * h, 1.0)),
    }
}

/// The CPU reference: the inference trace, the training trace (differs with dropout) and
/// the gradients.
struct Reference {
    inference: StackTrace,
    train: StackTrace,
    grads: StackGrads,
}

fn reference(c: &Case, d: &Data) -> Reference {
    let cfg = &c.cfg;
    let w64 = |v: &Option<Vec<f32>>| v.as_deref().map(to_f64);
    let (x, h0, c0) = (to_f64(&d.x), w64(&d.h0), w64(&d.c0));
    let (dy, dh_n, dc_n) = (w64(&d.dy), w64(&d.dh_n), w64(&d.dc_n));
    let state = HostState {
        h0: h0.as_deref(),
        c0: c0.as_deref(),
    };
    let opts = RunOptions {
        lengths: c.lengths.as_deref(),
        dropout_seed: Some(c.dropout_seed),
        ..Default::default()
    };
    let inference = stack_forward(cfg, &d.w, &x, c.t, c.b, state, &opts)
        .expect("the reference accepts a valid case");
    let train = match cfg.dropout() {
        0.0 => inference.clone(),
        _ => stack_forward_train(cfg, &d.w, &x, c.t, c.b, state, &opts).unwrap(),
    };
    let upstream = Upstream {
        dy: dy.as_deref(),
        dh_n: dh_n.as_deref(),
        dc_n: dc_n.as_deref(),
    };
    let grads = stack_backward(cfg, &d.w, &train, state, upstream, &opts).unwrap();
    Reference {
        inference,
        train,
        grads,
    }
}

/// The GPU's results of one problem.
struct GpuRun {
    y_inference: Vec<f32>,
    h_n_inference: Vec<f32>,
    y: Vec<f32>,
    h_n: Vec<f32>,
    c_n: Option<Vec<f32>>,
    grads: rnn_wgpu::HostGrads,
}

fn run_gpu(ctx: &Context, c: &Case, d: &Data) -> rnn_wgpu::Result<GpuRun> {
    let cfg = &c.cfg;
    let (t, b) = (c.t, c.b);
    let (h, s) = (cfg.hidden_size(), cfg.state_size());
    let ld = cfg.num_layers() * cfg.num_directions();
    let seq = |f: usize| match cfg.layout() {
        Layout::BatchFirst => vec![b, t, f],
        _ => vec![t, b, f],
    };
    let mut rnn = Rnn::new(ctx, &d.w)?;
    if let Some(steps) = c.chunk {
        rnn = rnn.with_max_chunk_steps(steps)?;
    }
    let x = GpuTensor::upload(ctx, &d.x, &seq(cfg.input_size()))?;
    let state = match &d.h0 {
        Some(h0) => Some(State {
            h: GpuTensor::upload(ctx, h0, &[ld, b, s])?,
            c: match &d.c0 {
                Some(c0) => Some(GpuTensor::upload(ctx, c0, &[ld, b, h])?),
                None => None,
            },
        }),
        None => None,
    };
    let opts = RunOptions {
        lengths: c.lengths.as_deref(),
        dropout_seed: Some(c.dropout_seed),
        ..Default::default()
    };
    let inference = rnn.forward_with(&x, state.as_ref(), &opts)?;
    let (out, tape) = rnn.forward_train_with(&x, state.as_ref(), &opts)?;
    let up = |v: &Option<Vec<f32>>, shape: &[usize]| -> rnn_wgpu::Result<Option<GpuTensor>> {
        v.as_deref()
            .map(|v| GpuTensor::upload(ctx, v, shape))
            .transpose()
    };
    let dy = up(&d.dy, &seq(cfg.output_size()))?;
    let dh_n = up(&d.dh_n, &[ld, b, s])?;
    let dc_n = up(&d.dc_n, &[ld, b, h])?;
    let grads = rnn
        .backward(&tape, dy.as_ref(), dh_n.as_ref(), dc_n.as_ref())?
        .to_host(&rnn)?;
    Ok(GpuRun {
        y_inference: inference.y.download(ctx)?,
        h_n_inference: inference.h_n.download(ctx)?,
        y: out.y.download(ctx)?,
        h_n: out.h_n.download(ctx)?,
        c_n: out.c_n.map(|c| c.download(ctx)).transpose()?,
        grads,
    })
}

/// The worst `|err| / tolerance` of any case so far (for the long run's report).
static WORST: Mutex<(f64, String)> = Mutex::new((0.0, String::new()));
static REJECTED: AtomicUsize = AtomicUsize::new(0);

/// `Err` (a proptest failure, with the first mismatch) unless every element of `got` is
/// within `atol + rtol*|want|`; records the worst fraction of the tolerance used.
fn close(name: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) -> Result<(), TestCaseError> {
    if got.len() != want.len() {
        return Err(TestCaseError::fail(format!(
            "{name}: length {} vs reference {}",
            got.len(),
            want.len()
        )));
    }
    let mut used = 0.0f64;
    for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        let tol = atol + rtol * w.abs();
        if err.is_nan() || err > tol {
            return Err(TestCaseError::fail(format!(
                "{name}: index {k} of {}: gpu {g:.6e}, reference {w:.6e} (|err| {err:.2e} > \
                 tolerance {tol:.2e})",
                got.len()
            )));
        }
        used = used.max(err / tol);
    }
    let mut worst = WORST.lock().unwrap();
    if used > worst.0 {
        *worst = (used, name.to_string());
    }
    Ok(())
}

fn scale(v: &[f64]) -> f64 {
    v.iter().fold(0.0f64, |m, x| m.max(x.abs()))
}

fn output(name: &str, got: &[f32], want: &[f64]) -> Result<(), TestCaseError> {
    close(name, got, want, Y_ATOL * scale(want).max(1.0), Y_RTOL)
}

fn grad(name: &str, got: &[f32], want: &[f64]) -> Result<(), TestCaseError> {
    close(name, got, want, G_SCALE_RTOL * scale(want) + G_ATOL, 0.0)
}

fn check_case(ctx: &Context, c: &Case) -> Result<(), TestCaseError> {
    // Draw data clear of every kink (see KINK_MARGIN).
    let mut found = None;
    for seed in c.data_seed..c.data_seed + SEED_TRIES {
        let d = data(c, seed);
        let r = reference(c, &d);
        if kink_margin(&c.cfg, &r.train).min(kink_margin(&c.cfg, &r.inference)) >= KINK_MARGIN {
            found = Some((d, r));
            break;
        }
    }
    let Some((d, r)) = found else {
        REJECTED.fetch_add(1, Ordering::Relaxed);
        return Err(TestCaseError::reject("every data seed comes near a kink"));
    };
    let run = run_gpu(ctx, c, &d)
        .map_err(|e| TestCaseError::fail(format!("a valid case got an error: {e}")))?;
    output("y (inference)", &run.y_inference, &r.inference.y)?;
    output("h_n (inference)", &run.h_n_inference, &r.inference.h_n)?;
    output("y (training)", &run.y, &r.train.y)?;
    output("h_n (training)", &run.h_n, &r.train.h_n)?;
    match (&run.c_n, &r.train.c_n) {
        (Some(g), Some(w)) => output("c_n", g, w)?,
        (None, None) => {}
        _ => return Err(TestCaseError::fail("c_n on one side only")),
    }
    let (g, rg) = (&run.grads, &r.grads);
    grad("dx", &g.dx, &rg.dx)?;
    grad("dh0", &g.dh0, &rg.dh0)?;
    if let (Some(a), Some(b)) = (&g.dc0, &rg.dc0) {
        grad("dc0", a, b)?;
    }
    if g.params.len() != rg.layers.len() {
        return Err(TestCaseError::fail(
            "parameter gradients of another topology",
        ));
    }
    for (k, (p, l)) in g.params.iter().zip(&rg.layers).enumerate() {
        grad(&format!("d weight_ih {k}"), &p.weight_ih, &l.d_weight_ih)?;
        grad(&format!("d weight_hh {k}"), &p.weight_hh, &l.d_weight_hh)?;
        match (&p.bias_ih, &p.bias_hh) {
            (Some(bi), Some(bh)) => {
                grad(&format!("d bias_ih {k}"), bi, &l.d_bias_ih)?;
                grad(&format!("d bias_hh {k}"), bh, &l.d_bias_hh)?;
            }
            (None, None) if !c.cfg.bias() => {}
            _ => {
                return Err(TestCaseError::fail(
                    "bias gradients do not match the config",
                ));
            }
        }
        match (&p.peephole, &l.d_peephole) {
            (Some(a), Some(b)) => grad(&format!("d peephole {k}"), a, b)?,
            (None, None) => {}
            _ => return Err(TestCaseError::fail("peephole gradient on one side only")),
        }
        match (&p.weight_hr, &l.d_weight_hr) {
            (Some(a), Some(b)) => grad(&format!("d weight_hr {k}"), a, b)?,
            (None, None) => {}
            _ => return Err(TestCaseError::fail("weight_hr gradient on one side only")),
        }
    }
    // Padding is exactly zero.
    if let Some(lengths) = &c.lengths {
        common::assert_zero_past_lengths(
            "prop",
            &c.cfg,
            &run.y,
            lengths,
            c.t,
            c.b,
            c.cfg.output_size(),
            "y",
        );
        common::assert_zero_past_lengths(
            "prop",
            &c.cfg,
            &g.dx,
            lengths,
            c.t,
            c.b,
            c.cfg.input_size(),
            "dx",
        );
    }
    Ok(())
}

fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Run this test's share of the cases: the cases are split over two tests, which the test
/// harness runs on two threads (pipeline compiles then use both cores).
fn run_part(part: u32) {
    let Some(ctx) = ctx() else { return };
    let total = env("PROPTEST_CASES").unwrap_or(CI_CASES);
    let cases = total / 2 + if part == 0 { total % 2 } else { 0 };
    let seed = env("PROPTEST_RNG_SEED").unwrap_or(CI_SEED) + part as u64;
    let config = Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        // A failure is reported with its (shrunk) case; nothing is written to disk.
        failure_persistence: None,
        // Rejections (near-kink draws) are a few percent; allow up to one per case.
        max_global_rejects: cases,
        // Each shrink step reruns a GPU problem: bound the time a failure takes to report.
        max_shrink_iters: 200,
        ..Config::default()
    };
    let start = std::time::Instant::now();
    let passed = AtomicUsize::new(0);
    let result = TestRunner::new(config).run(&case(draws()), |c| {
        check_case(ctx, &c)?;
        let n = passed.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_multiple_of(100) {
            eprintln!(
                "prop_valid part {part}: {n} cases passed, {:.0} s",
                start.elapsed().as_secs_f64()
            );
        }
        Ok(())
    });
    let worst = WORST.lock().unwrap().clone();
    eprintln!(
        "prop_valid part {part}: {:?} draws, seed {seed:#x}, {} cases passed, {} rejected near \
         a kink (both parts), worst error so far {:.0}% of its tolerance ({}), {:.1} s",
        draws(),
        passed.load(Ordering::Relaxed),
        REJECTED.load(Ordering::Relaxed),
        100.0 * worst.0,
        worst.1,
        start.elapsed().as_secs_f64()
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn gpu_matches_the_cpu_reference_on_random_valid_problems_part_0() {
    run_part(0);
}

#[test]
fn gpu_matches_the_cpu_reference_on_random_valid_problems_part_1() {
    run_part(1);
}
