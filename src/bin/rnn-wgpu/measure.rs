//! Time one row on the GPU and check it against the f64 CPU stack reference.

use rnn_wgpu::{HostState, Upstream};
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rnn_wgpu::cpu::{self, to_f64};
use rnn_wgpu::{
    Context, Direction, Error, GpuTensor, GradMode, Grads, Nonlinearity, Result, Rnn, RnnConfig,
    RunOptions, Weights,
};

use crate::suite::{Cell, Row};

/// How to time and check a row.
pub struct Settings {
    pub warmup: usize,
    pub reps: usize,
    /// Batch rows the CPU reference runs on; `None` skips the check.
    pub check_rows: Option<usize>,
    pub seed: u64,
    /// `--f16-weights`: models store their weight matrices as f16 (inference and stream rows).
    pub f16_weights: bool,
}

/// The row's model: f32 weights, or f16 weight storage under `--f16-weights`. Train rows of an
/// f16 model are refused by the library (`Error::Unsupported`).
fn model(ctx: &Context, weights: &Weights, s: &Settings) -> Result<Rnn> {
    match s.f16_weights {
        false => Rnn::new(ctx, weights),
        true => Rnn::with_precision(ctx, weights, rnn_wgpu::WeightPrecision::F16),
    }
}

/// What one row measured.
pub struct Measurement {
    /// Wall time of each timed pass (`forward` + `wait`, `forward_train` + `backward` +
    /// `wait`, or a stream row's `T` steps, each `step` + download of `y_t`), in ms.
    pub samples_ms: Vec<f64>,
    pub median_ms: f64,
    /// Queue submissions made by one pass (one forward, or one training step); for a stream
    /// row, the most made by one `step` (the download of `y_t` not counted).
    pub submissions: u64,
    pub check: Option<Check>,
}

/// How a check's error is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrKind {
    /// `max |gpu - ref|` over every element of every output (inference: all outputs are O(1)).
    Abs,
    /// `max` over tensors of `max |gpu - ref| / max |ref|` (training: gradient magnitudes
    /// grow with `T*B`, so each tensor is measured against its own scale).
    Scaled,
}

impl ErrKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrKind::Abs => "abs",
            ErrKind::Scaled => "scaled",
        }
    }
}

/// Parity with the CPU reference on `rows` batch rows.
pub struct Check {
    pub rows: usize,
    /// The largest error, measured as `kind` says (NaN if any compared value was NaN).
    pub max_err: f64,
    pub kind: ErrKind,
    /// The tensor `max_err` came from (`y`, `h_n`, `dW_hh_l1_reverse`, ...).
    pub worst: String,
    /// The reference's time on `rows` rows.
    pub cpu_ms: f64,
}

impl Check {
    /// The reference's time scaled linearly to all `batch` rows (its forward and backward
    /// work, weight gradients included, is linear in B).
    pub fn cpu_ms_all_rows(&self, batch: usize) -> f64 {
        self.cpu_ms * batch as f64 / self.rows as f64
    }
}

/// Model config of a row: PyTorch's plain cell (`nn.LSTM`, `nn.GRU`, `nn.RNN` with relu, as
/// DeepBench's "vanilla" = cuDNN RNN_RELU), `I = H`, the row's layers and directions, with
/// biases, no dropout.
pub fn config(row: &Row) -> Result<RnnConfig> {
    let h = row.hidden;
    let direction = if row.bidirectional {
        Direction::Bidirectional
    } else {
        Direction::Forward
    };
    match row.cell {
        Cell::Lstm => RnnConfig::lstm(h, h),
        Cell::Gru => RnnConfig::gru(h, h),
        // DeepBench's "vanilla" cell is cuDNN's CUDNN_RNN_RELU.
        Cell::Rnn => RnnConfig::rnn(h, h, Nonlinearity::Relu),
    }
    .num_layers(row.layers)
    .direction(direction)
    .build()
}

/// `n` seeded values, uniform in ±1.
pub fn uniform(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0f32..=1.0)).collect()
}

/// Batch rows `0..rows` of a `[N, B, width]` tensor (`N` = T for `x`/`y`, layers x
/// directions for states), as `[N, rows, width]`.
fn batch_rows(v: &[f32], n: usize, batch: usize, width: usize, rows: usize) -> Vec<f32> {
    (0..n)
        .flat_map(|k| &v[k * batch * width..(k * batch + rows) * width])
        .copied()
        .collect()
}

/// The outputs of a GPU forward (or of a session stepped over the whole sequence), on the
/// host: `y [T, B, D*H]`, `h_n [L*D, B, H]`, `c_n [L*D, B, H]` (LSTM only).
struct HostOut {
    y: Vec<f32>,
    h_n: Vec<f32>,
    c_n: Option<Vec<f32>>,
}

/// Run an inference row: warm up, time `reps` forwards, count one forward's submissions, and
/// (optionally) check that forward's outputs against the CPU reference.
pub fn run_inference(
    ctx: &Context,
    row: &Row,
    s: &Settings,
    progress: &dyn Fn(&str),
) -> Result<Measurement> {
    let cfg = config(row)?;
    let weights = Weights::init(&cfg, s.seed);
    let rnn = model(ctx, &weights, s)?;
    let (t, b, h) = (row.steps, row.batch, row.hidden);
    let x = uniform(t * b * h, s.seed.wrapping_add(1));
    let x_gpu = GpuTensor::upload(ctx, &x, &[t, b, h])?;
    ctx.wait()?;

    let (samples_ms, submissions) = time_passes(ctx, s, progress, || {
        rnn.forward(&x_gpu, None)?;
        Ok(())
    })?;

    let check = match s.check_rows {
        None => None,
        Some(rows) => {
            // One more forward, untimed, for its outputs.
            let out = rnn.forward(&x_gpu, None)?;
            let gpu = HostOut {
                y: out.y.download(ctx)?,
                h_n: out.h_n.download(ctx)?,
                c_n: out.c_n.as_ref().map(|c| c.download(ctx)).transpose()?,
            };
            // The reference gets the weights the GPU holds (f16-rounded for an f16 model).
            let held = rnn.weights()?;
            Some(check_outputs(&cfg, &held, row, &x, rows, &gpu, progress)?)
        }
    };
    Ok(Measurement {
        median_ms: median(&samples_ms),
        samples_ms,
        submissions,
        check,
    })
}

/// Run a training row: warm up, time `reps` training steps (`forward_train` + `backward` with
/// a seeded `dy` + `wait`), count one step's submissions, and (optionally) check the gradients
/// of a `B' = min(B, check_rows)` problem against the CPU reference.
pub fn run_train(
    ctx: &Context,
    row: &Row,
    s: &Settings,
    progress: &dyn Fn(&str),
) -> Result<Measurement> {
    let cfg = config(row)?;
    let weights = Weights::init(&cfg, s.seed);
    let rnn = model(ctx, &weights, s)?;
    let (t, b, h, out_w) = (row.steps, row.batch, row.hidden, cfg.output_size());
    let x = uniform(t * b * h, s.seed.wrapping_add(1));
    // The upstream gradient of a loss on every output, e.g. `sum(y * dy)`.
    let dy = uniform(t * b * out_w, s.seed.wrapping_add(2));
    let x_gpu = GpuTensor::upload(ctx, &x, &[t, b, h])?;
    let dy_gpu = GpuTensor::upload(ctx, &dy, &[t, b, out_w])?;
    ctx.wait()?;

    // Outputs and gradients made once; each step records forward_train and backward into one
    // encoder: one submission.
    let out = rnn.alloc_output(t, b)?;
    let grads = rnn.alloc_grads(t, b)?;
    let (samples_ms, submissions) = time_passes(ctx, s, progress, || {
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        let opts = RunOptions::default();
        let tape = rnn.record_forward_train(&mut enc, &x_gpu, None, &opts, &out)?;
        rnn.record_backward(
            &mut enc,
            &tape,
            Some(&dy_gpu),
            None,
            None,
            &grads,
            GradMode::Overwrite,
        )?;
        ctx.submit(enc.finish())?;
        Ok(())
    })?;

    let check = match s.check_rows {
        None => None,
        Some(rows) => {
            let rows = rows.clamp(1, b);
            Some(check_train(
                ctx, &rnn, &cfg, &weights, row, &x, &dy, rows, progress,
            )?)
        }
    };
    Ok(Measurement {
        median_ms: median(&samples_ms),
        samples_ms,
        submissions,
        check,
    })
}

/// Run a streaming row: a [`rnn_wgpu::Session`] of `B` rows fed `x_0 .. x_{T-1}` from the
/// host one `step_host` at a time, submitted back to back, then one wait; the round-trip
/// latency of one step whose `y_t` is read back at once is measured apart. Warm up, time `reps` whole sequences
/// (each on a fresh session, created outside the timer), and (optionally) check the stepped
/// outputs and the session's final state against the CPU reference over the whole sequence.
/// The model must run forward only (a session cannot run a reverse direction).
pub fn run_stream(
    ctx: &Context,
    row: &Row,
    s: &Settings,
    progress: &dyn Fn(&str),
) -> Result<Measurement> {
    let cfg = config(row)?;
    let weights = Weights::init(&cfg, s.seed);
    let rnn = model(ctx, &weights, s)?;
    let (t, b, h) = (row.steps, row.batch, row.hidden);
    // The same x as an inference row of the same problem; step k's [B, H] slice comes from
    // the host, as a stream's input arrives (`step_host` writes it in place).
    let x = uniform(t * b * h, s.seed.wrapping_add(1));
    let xs: Vec<&[f32]> = x.chunks(b * h).collect();

    progress(&format!("warm-up x{} (of {t} steps each)", s.warmup));
    for _ in 0..s.warmup {
        stream_pass(ctx, &rnn, &xs, false)?;
    }
    progress(&format!("timing x{} (of {t} steps each)", s.reps));
    let mut samples_ms = Vec::with_capacity(s.reps);
    let mut submissions = 0;
    for _ in 0..s.reps {
        let pass = stream_pass(ctx, &rnn, &xs, false)?;
        samples_ms.push(pass.ms);
        submissions = submissions.max(pass.max_submissions);
    }
    let round_trip = step_round_trip_us(ctx, &rnn, &xs)?;
    progress(&format!(
        "round trip of one step with its y_t read back at once: {round_trip:.1} us"
    ));

    // The checked outputs come from one more, untimed pass that keeps every y_t: a timed
    // pass drops each y_t as a server would once it has used it, so the session reuses one
    // output buffer instead of allocating a new one per step while the caller holds T.
    let checked = match s.check_rows {
        Some(_) => stream_pass(ctx, &rnn, &xs, true)?.out,
        None => None,
    };
    let check = match (s.check_rows, checked) {
        (Some(rows), Some(gpu)) => Some(check_outputs(
            &cfg,
            &rnn.weights()?,
            row,
            &x,
            rows,
            &gpu,
            progress,
        )?),
        _ => None,
    };
    Ok(Measurement {
        median_ms: median(&samples_ms),
        samples_ms,
        submissions,
        check,
    })
}

/// One timed sequence of a stream row.
struct StreamPass {
    /// Wall time of the `T` steps: each `step` submitted as its input is ready, then one wait
    /// for the GPU to finish them. Each `y_t` stays on the GPU and is let go after its step
    /// (unless kept for the check), as a server lets it go once it has recorded its use.
    ms: f64,
    /// The most submissions one `step` made.
    max_submissions: u64,
    /// `y [T, B, H]` of the steps and the session's final state, when asked for (downloaded
    /// after the timer).
    out: Option<HostOut>,
}

/// Step a fresh session of `batch` rows through `xs` (each `[B, I]`, from the host).
fn stream_pass(ctx: &Context, rnn: &Rnn, xs: &[&[f32]], keep: bool) -> Result<StreamPass> {
    let batch = xs
        .first()
        .map_or(1, |x| x.len() / rnn.config().input_size());
    let mut session = rnn.session(batch)?;
    let mut ys = Vec::with_capacity(xs.len());
    let mut max_submissions = 0;
    let start = Instant::now();
    for x_t in xs {
        let before = ctx.submission_count();
        let y_t = session.step_host(x_t)?;
        max_submissions = max_submissions.max(ctx.submission_count() - before);
        if keep {
            ys.push(y_t);
        }
    }
    ctx.wait()?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    let out = if keep {
        let mut y = Vec::with_capacity(ys.iter().map(GpuTensor::numel).sum());
        for y_t in &ys {
            y.extend(y_t.download(ctx)?);
        }
        let state = session.state()?;
        Some(HostOut {
            y,
            h_n: state.h.download(ctx)?,
            c_n: state.c.as_ref().map(|c| c.download(ctx)).transpose()?,
        })
    } else {
        None
    };
    Ok(StreamPass {
        ms,
        max_submissions,
        out,
    })
}

/// The round-trip latency of one session step whose output the host reads at once (step,
/// then download `y_t`, which waits), in microseconds: the median over `T` steps of a fresh
/// session.
pub fn step_round_trip_us(ctx: &Context, rnn: &Rnn, xs: &[&[f32]]) -> Result<f64> {
    let batch = xs
        .first()
        .map_or(1, |x| x.len() / rnn.config().input_size());
    let mut session = rnn.session(batch)?;
    let mut us = Vec::with_capacity(xs.len());
    for x_t in xs {
        let start = Instant::now();
        session.step_host(x_t)?.download(ctx)?;
        us.push(start.elapsed().as_secs_f64() * 1e6);
    }
    Ok(median(&us))
}

/// One training step on the GPU: `forward_train`, then `backward` from `dy` alone.
fn train_step(rnn: &Rnn, x: &GpuTensor, dy: &GpuTensor) -> Result<Grads> {
    let (_out, tape) = rnn.forward_train(x, None)?;
    rnn.backward(&tape, Some(dy), None, None)
}

/// Warm up, then time `reps` runs of `pass` + `wait`; then count one more run's submissions.
/// Returns `(samples in ms, submissions per pass)`.
fn time_passes(
    ctx: &Context,
    s: &Settings,
    progress: &dyn Fn(&str),
    mut pass: impl FnMut() -> Result<()>,
) -> Result<(Vec<f64>, u64)> {
    progress(&format!("warm-up x{}", s.warmup));
    for _ in 0..s.warmup {
        pass()?;
        ctx.wait()?;
    }

    progress(&format!("timing x{}", s.reps));
    let mut samples_ms = Vec::with_capacity(s.reps);
    for _ in 0..s.reps {
        let start = Instant::now();
        pass()?;
        ctx.wait()?;
        samples_ms.push(start.elapsed().as_secs_f64() * 1e3);
    }

    // One more pass, untimed, for its submission count.
    let before = ctx.submission_count();
    pass()?;
    ctx.wait()?;
    Ok((samples_ms, ctx.submission_count() - before))
}

/// PyTorch's suffix of layer-direction `k` (`l*D + d`): `l0`, `l0_reverse`, `l1`, ...
fn layer_name(cfg: &RnnConfig, k: usize) -> String {
    let dirs = cfg.num_directions();
    let (layer, dir) = (k / dirs, k % dirs);
    if dir == 1 {
        format!("l{layer}_reverse")
    } else {
        format!("l{layer}")
    }
}

/// Run the f64 stack reference ([`cpu::stack_forward`]: every layer and direction) on the
/// first `rows` batch rows of `x` (clamped to `1..=B`) and compare with `gpu`, the outputs of
/// the whole batch: `y [T, B, D*H]`, `h_n` and `c_n` (LSTM) `[L*D, B, H]`.
fn check_outputs(
    cfg: &RnnConfig,
    weights: &Weights,
    row: &Row,
    x: &[f32],
    rows: usize,
    gpu: &HostOut,
    progress: &dyn Fn(&str),
) -> Result<Check> {
    let (t, b, h) = (row.steps, row.batch, row.hidden);
    let rows = rows.clamp(1, b);
    let (out_w, states) = (cfg.output_size(), cfg.num_layers() * cfg.num_directions());
    progress(&format!("CPU reference on {rows} of {b} batch rows"));
    // Batch rows never interact, so rows 0..rows of x alone give rows 0..rows of every output.
    let x_sub = to_f64(&batch_rows(x, t, b, h, rows));
    let start = Instant::now();
    let reference = cpu::stack_forward(
        cfg,
        weights,
        &x_sub,
        t,
        rows,
        HostState::zeros(),
        &RunOptions::default(),
    )?;
    let cpu_ms = start.elapsed().as_secs_f64() * 1e3;

    let mut max = MaxErr::default();
    max.add(
        "y",
        max_abs_diff(&batch_rows(&gpu.y, t, b, out_w, rows), &reference.y),
    );
    max.add(
        "h_n",
        max_abs_diff(&batch_rows(&gpu.h_n, states, b, h, rows), &reference.h_n),
    );
    match (&gpu.c_n, &reference.c_n) {
        (Some(got), Some(want)) => max.add(
            "c_n",
            max_abs_diff(&batch_rows(got, states, b, h, rows), want),
        ),
        (None, None) => {}
        (got, _) => return Err(presence_mismatch(cfg, "c_n", got.is_some())),
    }
    Ok(Check {
        rows,
        max_err: max.err,
        kind: ErrKind::Abs,
        worst: max.worst,
        cpu_ms,
    })
}

/// The GPU returned an optional tensor (`c_n`, `dc0`) that the reference did not, or the
/// reverse: a library bug, reported as a row error.
fn presence_mismatch(cfg: &RnnConfig, name: &str, gpu_has_it: bool) -> Error {
    let cell = cfg.cell().name();
    Error::Internal(if gpu_has_it {
        format!("{cell}: the GPU returned {name}, the CPU reference has none")
    } else {
        format!("{cell}: the GPU returned no {name}, the CPU reference has one")
    })
}

/// Gradient parity on a reduced problem: same `H`, `I`, `T`, topology and weights, batch rows
/// `0..rows` of `x` and `dy`. The full problem's rows cannot be checked on their own, since
/// weight gradients sum over every batch row; a fresh GPU forward_train + backward at
/// `B' = rows` is compared with the f64 stack reference ([`cpu::stack_forward`] +
/// [`cpu::stack_backward`]) at `B'`: `dx`, `dh0`, `dc0` (LSTM), and every layer-direction's
/// `dW_ih`, `dW_hh`, `db_ih`, `db_hh`.
#[allow(clippy::too_many_arguments)]
fn check_train(
    ctx: &Context,
    rnn: &Rnn,
    cfg: &RnnConfig,
    weights: &Weights,
    row: &Row,
    x: &[f32],
    dy: &[f32],
    rows: usize,
    progress: &dyn Fn(&str),
) -> Result<Check> {
    let (t, b, h, out_w) = (row.steps, row.batch, row.hidden, cfg.output_size());
    let x_sub = batch_rows(x, t, b, h, rows);
    let dy_sub = batch_rows(dy, t, b, out_w, rows);
    progress(&format!("GPU gradients at B'={rows} for the check"));
    let x_gpu = GpuTensor::upload(ctx, &x_sub, &[t, rows, h])?;
    let dy_gpu = GpuTensor::upload(ctx, &dy_sub, &[t, rows, out_w])?;
    let gpu = train_step(rnn, &x_gpu, &dy_gpu)?.to_host(rnn)?;

    progress(&format!(
        "CPU reference forward + backward at B'={rows} (of {b})"
    ));
    let (x64, dy64) = (to_f64(&x_sub), to_f64(&dy_sub));
    let start = Instant::now();
    let fwd = cpu::stack_forward(
        cfg,
        weights,
        &x64,
        t,
        rows,
        HostState::zeros(),
        &RunOptions::default(),
    )?;
    let reference = cpu::stack_backward(
        cfg,
        weights,
        &fwd,
        HostState::zeros(),
        Upstream {
            dy: Some(&dy64),
            dh_n: None,
            dc_n: None,
        },
        &RunOptions::default(),
    )?;
    let cpu_ms = start.elapsed().as_secs_f64() * 1e3;

    let mut max = MaxErr::default();
    max.add("dx", scaled_diff(&gpu.dx, &reference.dx));
    max.add("dh0", scaled_diff(&gpu.dh0, &reference.dh0));
    match (&gpu.dc0, &reference.dc0) {
        (Some(got), Some(want)) => max.add("dc0", scaled_diff(got, want)),
        (None, None) => {}
        (got, _) => return Err(presence_mismatch(cfg, "dc0", got.is_some())),
    }
    if gpu.params.len() != reference.layers.len() {
        return Err(Error::Internal(format!(
            "backward returned parameter gradients of {} layer-direction(s), the model has {}",
            gpu.params.len(),
            reference.layers.len()
        )));
    }
    for (k, (p, want)) in gpu.params.iter().zip(&reference.layers).enumerate() {
        let suffix = layer_name(cfg, k);
        max.add(
            &format!("dW_ih_{suffix}"),
            scaled_diff(&p.weight_ih, &want.d_weight_ih),
        );
        max.add(
            &format!("dW_hh_{suffix}"),
            scaled_diff(&p.weight_hh, &want.d_weight_hh),
        );
        // The harness's configs have biases; a missing bias gradient would be a library bug.
        for (name, got, want) in [
            ("db_ih", &p.bias_ih, &want.d_bias_ih),
            ("db_hh", &p.bias_hh, &want.d_bias_hh),
        ] {
            match got {
                Some(g) => max.add(&format!("{name}_{suffix}"), scaled_diff(g, want)),
                None => {
                    return Err(Error::Internal(format!(
                        "{} backward returned no {name}_{suffix}",
                        cfg.cell().name()
                    )));
                }
            }
        }
    }
    Ok(Check {
        rows,
        max_err: max.err,
        kind: ErrKind::Scaled,
        worst: max.worst,
        cpu_ms,
    })
}

/// Running maximum of per-tensor errors, with the tensor it came from. A NaN sticks (and
/// then fails the tolerance check); `f64::max` would drop it.
struct MaxErr {
    err: f64,
    worst: String,
}

impl Default for MaxErr {
    fn default() -> Self {
        MaxErr {
            err: 0.0,
            worst: "-".into(),
        }
    }
}

impl MaxErr {
    fn add(&mut self, name: &str, e: f64) {
        if !self.err.is_nan() && (e.is_nan() || e > self.err) {
            self.err = e;
            self.worst = name.into();
        }
    }
}

/// `max |gpu - ref|`; NaN if any difference is NaN or the lengths differ.
fn max_abs_diff(gpu: &[f32], reference: &[f64]) -> f64 {
    if gpu.len() != reference.len() {
        return f64::NAN;
    }
    gpu.iter().zip(reference).fold(0.0f64, |m, (a, b)| {
        let e = (f64::from(*a) - b).abs();
        if e.is_nan() || m.is_nan() {
            f64::NAN
        } else {
            m.max(e)
        }
    })
}

/// `max |gpu - ref| / max |ref|`: the error relative to the tensor's scale. An all-zero
/// reference (no scale) falls back to the absolute error.
fn scaled_diff(gpu: &[f32], reference: &[f64]) -> f64 {
    let scale = reference.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let e = max_abs_diff(gpu, reference);
    if scale > 0.0 { e / scale } else { e }
}

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn layer_names_follow_pytorch() {
        let row = Row::plain(Cell::Gru, crate::suite::Mode::Train, 8, 1, 1).stacked(2, true);
        let cfg = config(&row).unwrap();
        let names: Vec<String> = (0..4).map(|k| layer_name(&cfg, k)).collect();
        assert_eq!(names, ["l0", "l0_reverse", "l1", "l1_reverse"]);
        let cfg = config(&row.stacked(2, false)).unwrap();
        assert_eq!(layer_name(&cfg, 1), "l1");
    }

    #[test]
    fn batch_rows_picks_leading_rows_of_every_step() {
        // [T=2, B=3, W=2]
        let v: Vec<f32> = (0..12).map(|k| k as f32).collect();
        assert_eq!(batch_rows(&v, 2, 3, 2, 1), [0.0, 1.0, 6.0, 7.0]);
        assert_eq!(batch_rows(&v, 2, 3, 2, 3), v);
    }

    #[test]
    fn errors_keep_nan_and_scale() {
        assert_eq!(max_abs_diff(&[1.0, 2.0], &[1.5, 2.0]), 0.5);
        assert!(max_abs_diff(&[f32::NAN], &[0.0]).is_nan());
        assert!(max_abs_diff(&[1.0], &[1.0, 2.0]).is_nan());
        assert_eq!(scaled_diff(&[10.0, 0.0], &[8.0, -4.0]), 0.5);
        assert_eq!(scaled_diff(&[0.25], &[0.0]), 0.25);

        let mut m = MaxErr::default();
        m.add("a", 1e-6);
        m.add("b", 1e-5);
        m.add("c", 1e-7);
        assert_eq!((m.err, m.worst.as_str()), (1e-5, "b"));
        m.add("d", f64::NAN);
        m.add("e", 1.0);
        assert!(m.err.is_nan());
        assert_eq!(m.worst, "d");
    }
}
