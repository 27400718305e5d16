//! The cell-independent part of the reference: weights in f64, the saved forward [`Trace`],
//! the gradients, shape checks, the batched input projection and the backward GEMMs over all
//! steps, and the dispatcher [`forward`] / [`backward`] that runs any cell and variant.
//!
//! Every cell runs the same schedule, as the GPU does:
//! 1. [`input_projection`] of all `T*B` rows at once, with `b_ih`;
//! 2. one step per timestep (`lstm_step`, `gru_step`, `rnn_step`), which adds the
//!    recurrent product and `b_hh`;
//! 3. backward: one step-backward per timestep in reverse, then [`input_gradients`] and the
//!    recurrent-weight sums over all steps.

use crate::config::{Activations, CellKind, GruReset, RnnConfig};
use crate::error::{Error, Result};
use crate::validate::{check_len, check_steps_batch};
use crate::weights::LayerWeights;

use super::{gru, lstm, rnn, to_f64};

/// One layer's weights widened to f64 (PyTorch layout, see [`LayerWeights`]).
///
/// `G` is the gate count (4, 3, 1), `H` the hidden size, `S` the state size (`P` with a
/// projection, else `H`).
#[derive(Debug, Clone)]
pub struct RefWeights {
    /// `[G*H, I]`.
    pub weight_ih: Vec<f64>,
    /// `[G*H, S]`.
    pub weight_hh: Vec<f64>,
    /// `[G*H]` (zeros when the model has no bias).
    pub bias_ih: Vec<f64>,
    /// `[G*H]` (zeros when the model has no bias).
    pub bias_hh: Vec<f64>,
    /// `[P, H]`: LSTM projection, `None` without one.
    pub weight_hr: Option<Vec<f64>>,
    /// `[3H]`: LSTM peepholes `p_i | p_f | p_o`, `None` without them.
    pub peephole: Option<Vec<f64>>,
}

impl RefWeights {
    /// Widen `w` (a layer of a model configured by `cfg`) to f64; missing biases become zeros.
    pub fn new(cfg: &RnnConfig, w: &LayerWeights) -> RefWeights {
        let n = cfg.gate_count() * cfg.hidden_size();
        let bias = |b: &Option<Vec<f32>>| b.as_deref().map(to_f64).unwrap_or(vec![0.0; n]);
        RefWeights {
            weight_ih: to_f64(&w.weight_ih),
            weight_hh: to_f64(&w.weight_hh),
            bias_ih: bias(&w.bias_ih),
            bias_hh: bias(&w.bias_hh),
            weight_hr: w.weight_hr.as_deref().map(to_f64),
            peephole: w.peephole.as_deref().map(to_f64),
        }
    }

    /// Check every tensor against `cfg` (a layer whose input is `cfg.input_size()`).
    pub(crate) fn validate(&self, cfg: &RnnConfig) -> Result<()> {
        let (h, s) = (cfg.hidden_size(), cfg.state_size());
        let gh = cfg.gate_count() * h;
        check("weight_ih", &self.weight_ih, &[gh, cfg.input_size()])?;
        check("weight_hh", &self.weight_hh, &[gh, s])?;
        check("bias_ih", &self.bias_ih, &[gh])?;
        check("bias_hh", &self.bias_hh, &[gh])?;
        let proj = cfg.proj_size().map(|p| vec![p, h]);
        check_optional("weight_hr", self.weight_hr.as_deref(), proj.as_deref())?;
        let peep = cfg.peepholes().then(|| vec![3 * h]);
        check_optional("peephole", self.peephole.as_deref(), peep.as_deref())
    }
}

/// Everything the forward pass computed: the outputs, and what backward needs.
///
/// `G*H` blocks are in PyTorch gate order (LSTM `i|f|g|o`, GRU `r|z|n`, RNN one block).
#[derive(Debug, Clone)]
pub struct Trace {
    /// `[T, B, S]`: `h_t` for every step.
    pub y: Vec<f64>,
    /// `[B, S]`: `h_{T-1}`, equal to the last step of `y`.
    pub h_n: Vec<f64>,
    /// `[B, H]`: the LSTM's `c_{T-1}` (after the cell clip); `None` for GRU and RNN.
    pub c_n: Option<Vec<f64>>,
    /// `[T, B, G*H]`: every pre-activation as it enters the gate clip (so backward can tell
    /// where the clip was active). LSTM: peephole terms included. GRU: `n`'s pre-activation
    /// includes its hidden term ([`Trace::hn`] times `r` when reset-after).
    pub pre: Vec<f64>,
    /// `[T, B, G*H]`: the activated values (LSTM `i, f, g, o` with `f = 1 - i` under
    /// `input_forget`; GRU `r, z, n`; RNN `h`).
    pub gates: Vec<f64>,
    /// `[T, B, H]`: LSTM cell state `c_t` after the cell clip; empty for GRU and RNN.
    pub c: Vec<f64>,
    /// `[T, B, H]`: LSTM cell state before the cell clip (equal to `c` without one); empty
    /// for GRU and RNN.
    pub c_unclipped: Vec<f64>,
    /// `[T, B, H]`: LSTM `o * h(c)`, before the projection (equal to `y` without one); empty
    /// for GRU and RNN.
    pub h_raw: Vec<f64>,
    /// `[T, B, H]`: GRU hidden-side term of `n`: `W_hn h + b_hn` (reset after) or
    /// `W_hn (r*h) + b_hn` (reset before); empty for LSTM and RNN.
    pub hn: Vec<f64>,
}

/// Gradients of a loss with respect to every input and parameter of one layer.
#[derive(Debug, Clone)]
pub struct CellGrads {
    /// `[T, B, I]`.
    pub dx: Vec<f64>,
    /// `[B, S]`.
    pub dh0: Vec<f64>,
    /// `[B, H]`: LSTM only.
    pub dc0: Option<Vec<f64>>,
    /// `[G*H, I]`.
    pub d_weight_ih: Vec<f64>,
    /// `[G*H, S]`.
    pub d_weight_hh: Vec<f64>,
    /// `[G*H]`.
    pub d_bias_ih: Vec<f64>,
    /// `[G*H]` (equal to `d_bias_ih` except in a GRU's `n` block, where `b_hn` sits behind
    /// the reset gate).
    pub d_bias_hh: Vec<f64>,
    /// `[P, H]`: LSTM with projection only.
    pub d_weight_hr: Option<Vec<f64>>,
    /// `[3H]`: LSTM with peepholes only.
    pub d_peephole: Option<Vec<f64>>,
}

/// What one step-backward returns, for every cell.
#[derive(Debug, Clone)]
pub struct StepGrads {
    /// `[B, G*H]`: gradient of the input-side pre-activations (`x·W_ih^T + b_ih`); feeds
    /// `dx`, `d_weight_ih` and `d_bias_ih`.
    pub d_gx: Vec<f64>,
    /// `[B, G*H]`: gradient of the hidden-side terms (`W_hh·h + b_hh`); feeds
    /// `d_weight_hh` and `d_bias_hh`. Equal to `d_gx` except for a GRU's `n` block.
    pub d_gh: Vec<f64>,
    /// `[B, S]`: gradient reaching `h_{t-1}`.
    pub dh_prev: Vec<f64>,
    /// `[B, H]`: gradient reaching `c_{t-1}` (LSTM only).
    pub dc_prev: Option<Vec<f64>>,
}

/// The configuration as one step sees it, widened to f64.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CellSpec {
    /// `H`.
    pub hidden: usize,
    /// `S`: `P` with a projection, else `H`.
    pub state: usize,
    pub acts: Activations,
    pub gate_clip: Option<f64>,
    pub cell_clip: Option<(f64, f64)>,
    pub input_forget: bool,
    pub reset: GruReset,
}

impl CellSpec {
    pub fn of(cfg: &RnnConfig) -> CellSpec {
        CellSpec {
            hidden: cfg.hidden_size(),
            state: cfg.state_size(),
            acts: cfg.activations(),
            gate_clip: cfg.gate_clip().map(f64::from),
            cell_clip: cfg.cell_clip().map(|(lo, hi)| (lo as f64, hi as f64)),
            input_forget: cfg.input_forget(),
            reset: cfg.gru_reset(),
        }
    }

    /// A pre-activation after the gate clip (ONNX `clip`): clamped to `[-c, c]`.
    pub fn clip(&self, x: f64) -> f64 {
        match self.gate_clip {
            Some(c) => x.clamp(-c, c),
            None => x,
        }
    }

    /// `d clip(x) / dx`: 1 where the gate clip passes `x` through, 0 where it clamps. The
    /// bounds count as inside, as for `torch.clamp`'s gradient.
    pub fn clip_pass(&self, x: f64) -> f64 {
        match self.gate_clip {
            Some(c) if x < -c || x > c => 0.0,
            _ => 1.0,
        }
    }

    /// The cell state after the cell clip (cuDNN): clamped to `[min, max]`.
    pub fn cell_clip(&self, c: f64) -> f64 {
        match self.cell_clip {
            Some((lo, hi)) => c.clamp(lo, hi),
            None => c,
        }
    }

    /// `d cell_clip(c) / dc`, bounds inside as in [`CellSpec::clip_pass`].
    pub fn cell_clip_pass(&self, c: f64) -> f64 {
        match self.cell_clip {
            Some((lo, hi)) if c < lo || c > hi => 0.0,
            _ => 1.0,
        }
    }
}

/// `v` must hold `shape.iter().product()` elements ([`crate::validate::check_len`]).
pub(crate) fn check(name: &str, v: &[f64], shape: &[usize]) -> Result<()> {
    check_len(name, v, shape)
}

/// An optional tensor must be present exactly when `shape` is `Some`, and then of that shape.
pub(crate) fn check_optional(name: &str, v: Option<&[f64]>, shape: Option<&[usize]>) -> Result<()> {
    match (v, shape) {
        (Some(v), Some(shape)) => check(name, v, shape),
        (None, Some(_)) => Err(Error::MissingTensor(name.into())),
        (Some(_), None) => Err(Error::InvalidConfig(format!(
            "`{name}` is given but the configuration has no such tensor"
        ))),
        (None, None) => Ok(()),
    }
}

/// An optional state of `[B, n]` elements, zeros when absent.
pub(crate) fn state_or_zeros(
    name: &str,
    v: Option<&[f64]>,
    batch: usize,
    n: usize,
) -> Result<Vec<f64>> {
    match v {
        Some(v) => {
            check(name, v, &[batch, n])?;
            Ok(v.to_vec())
        }
        None => Ok(vec![0.0; batch * n]),
    }
}

/// The LSTM's cell-state argument (`c0`, `dc_n`): `[B, H]`, zeros when absent; refused for
/// cells without a cell state.
fn cell_state(cfg: &RnnConfig, name: &str, v: Option<&[f64]>, batch: usize) -> Result<Vec<f64>> {
    if cfg.cell() != CellKind::Lstm {
        if v.is_some() {
            return Err(Error::InvalidConfig(format!(
                "`{name}` is given but a {} has no cell state",
                cfg.cell().name()
            )));
        }
        return Ok(Vec::new());
    }
    state_or_zeros(name, v, batch, cfg.hidden_size())
}

/// `gx[m, n] = sum_k x[m, k] * W_ih[n, k] + b_ih[n]` for all `M = T*B` rows at once.
///
/// Shapes: `x [M, I]`, `weight_ih [N, I]`, `bias_ih [N]` (`N = G*H`); returns `[M, N]`.
/// Only `b_ih` enters here; every cell's step adds `b_hh`, as the GPU's step kernel does
/// (a GRU needs it there: its `b_hn` sits behind the reset gate).
///
/// Errors: [`Error::ShapeMismatch`] naming the first argument of the wrong length.
pub fn input_projection(
    x: &[f64],
    weight_ih: &[f64],
    bias_ih: &[f64],
    rows: usize,
    input_size: usize,
) -> Result<Vec<f64>> {
    // N from `weight_ih`, so that a bias of the wrong length is the one named.
    let n = match input_size {
        0 => bias_ih.len(),
        i => weight_ih.len() / i,
    };
    check("x", x, &[rows, input_size])?;
    check("weight_ih", weight_ih, &[n, input_size])?;
    check("bias_ih", bias_ih, &[n])?;
    let mut gx = vec![0.0; rows * n];
    for m in 0..rows {
        for j in 0..n {
            let mut acc = bias_ih[j];
            for k in 0..input_size {
                acc += x[m * input_size + k] * weight_ih[j * input_size + k];
            }
            gx[m * n + j] = acc;
        }
    }
    Ok(gx)
}

/// The input-side backward GEMMs over all steps, from `d_gx [M, N]` (`M = T*B`, `N = G*H`),
/// `x [M, I]` and `weight_ih [N, I]`: returns `(dx [M, I], d_weight_ih [N, I], d_bias_ih [N])`.
pub(crate) fn input_gradients(
    d_gx: &[f64],
    x: &[f64],
    weight_ih: &[f64],
    rows: usize,
    input: usize,
    n_out: usize,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut dx = vec![0.0; rows * input];
    let mut dw = vec![0.0; n_out * input];
    let mut db = vec![0.0; n_out];
    for m in 0..rows {
        for n in 0..n_out {
            let d = d_gx[m * n_out + n];
            db[n] += d;
            for k in 0..input {
                dw[n * input + k] += d * x[m * input + k];
                dx[m * input + k] += d * weight_ih[n * input + k];
            }
        }
    }
    (dx, dw, db)
}

/// The recurrent-weight backward GEMM over all steps: `d_weight_hh[n, k] = sum_m d_gh[m, n] *
/// operand(m, n)[k]` and `d_bias_hh[n] = sum_m d_gh[m, n]`, for `d_gh [M, N]`. `operand(m, n)`
/// is the `[S]` vector gate row `n` multiplied at row `m`: `h_{t-1}` (or `r*h_{t-1}` for a
/// reset-before GRU's `n` rows).
pub(crate) fn recurrent_gradients<'a>(
    d_gh: &[f64],
    rows: usize,
    n_out: usize,
    state: usize,
    operand: impl Fn(usize, usize) -> &'a [f64],
) -> (Vec<f64>, Vec<f64>) {
    let mut dw = vec![0.0; n_out * state];
    let mut db = vec![0.0; n_out];
    for m in 0..rows {
        for n in 0..n_out {
            let d = d_gh[m * n_out + n];
            db[n] += d;
            for (k, &hk) in operand(m, n).iter().enumerate() {
                dw[n * state + k] += d * hk;
            }
        }
    }
    (dw, db)
}

/// `[T, B, S]`: the state each step starts from: `h0`, then `y_0 .. y_{T-2}`.
pub(crate) fn previous_states(h0: &[f64], y: &[f64], steps: usize) -> Vec<f64> {
    let bs = h0.len();
    let mut out = Vec::with_capacity(steps * bs);
    out.extend_from_slice(h0);
    out.extend_from_slice(&y[..(steps - 1) * bs]);
    out
}

/// Full forward over `T` steps for any cell and variant of `cfg` (one layer, one direction).
///
/// Shapes: `x [T, B, I]`; `h0 [B, S]` (zeros when `None`); `c0 [B, H]`, LSTM only (zeros when
/// `None`). `S` is `P` with a projection, else `H`.
///
/// Errors: [`Error::ZeroSize`] for `T = 0` or `B = 0`; [`Error::ShapeMismatch`] for any
/// tensor of the wrong length; [`Error::MissingTensor`] / [`Error::InvalidConfig`] for a
/// projection or peephole tensor that the configuration needs and `w` lacks, or the reverse,
/// and for a `c0` given to a GRU or RNN.
pub fn forward(
    cfg: &RnnConfig,
    w: &RefWeights,
    x: &[f64],
    h0: Option<&[f64]>,
    c0: Option<&[f64]>,
    steps: usize,
    batch: usize,
) -> Result<Trace> {
    check_steps_batch(steps, batch)?;
    w.validate(cfg)?;
    check("x", x, &[steps, batch, cfg.input_size()])?;
    let h0 = state_or_zeros("h0", h0, batch, cfg.state_size())?;
    let c0 = cell_state(cfg, "c0", c0, batch)?;
    let spec = CellSpec::of(cfg);
    let input = cfg.input_size();
    match cfg.cell() {
        CellKind::Lstm => lstm::forward_sequence(&spec, w, x, &h0, &c0, steps, batch, input),
        CellKind::Gru => gru::forward_sequence(&spec, w, x, &h0, steps, batch, input),
        CellKind::Rnn => rnn::forward_sequence(&spec, w, x, &h0, steps, batch, input),
    }
}

/// Backward through time for the sequence `trace` was computed from (by [`forward`] with the
/// same arguments).
///
/// The loss is `sum(y*dy) + sum(h_n*dh_n) + sum(c_n*dc_n)`: `dy [T, B, S]`, `dh_n [B, S]`,
/// `dc_n [B, H]` (LSTM only); any may be `None` (zeros).
///
/// Errors: as [`forward`], plus [`Error::ShapeMismatch`] for a `trace` that does not fit.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    cfg: &RnnConfig,
    w: &RefWeights,
    x: &[f64],
    h0: Option<&[f64]>,
    c0: Option<&[f64]>,
    trace: &Trace,
    dy: Option<&[f64]>,
    dh_n: Option<&[f64]>,
    dc_n: Option<&[f64]>,
    steps: usize,
    batch: usize,
) -> Result<CellGrads> {
    check_steps_batch(steps, batch)?;
    w.validate(cfg)?;
    let (h, s) = (cfg.hidden_size(), cfg.state_size());
    let gh = cfg.gate_count() * h;
    check("x", x, &[steps, batch, cfg.input_size()])?;
    let h0 = state_or_zeros("h0", h0, batch, s)?;
    let c0 = cell_state(cfg, "c0", c0, batch)?;
    let dh_n = state_or_zeros("dh_n", dh_n, batch, s)?;
    let dc_n = cell_state(cfg, "dc_n", dc_n, batch)?;
    if let Some(dy) = dy {
        check("dy", dy, &[steps, batch, s])?;
    }
    check("trace.y", &trace.y, &[steps, batch, s])?;
    check("trace.h_n", &trace.h_n, &[batch, s])?;
    check("trace.pre", &trace.pre, &[steps, batch, gh])?;
    check("trace.gates", &trace.gates, &[steps, batch, gh])?;
    let lstm_only = if cfg.cell() == CellKind::Lstm {
        steps
    } else {
        0
    };
    check("trace.c", &trace.c, &[lstm_only, batch, h])?;
    check(
        "trace.c_unclipped",
        &trace.c_unclipped,
        &[lstm_only, batch, h],
    )?;
    check("trace.h_raw", &trace.h_raw, &[lstm_only, batch, h])?;
    let gru_only = if cfg.cell() == CellKind::Gru {
        steps
    } else {
        0
    };
    check("trace.hn", &trace.hn, &[gru_only, batch, h])?;

    let spec = CellSpec::of(cfg);
    let input = cfg.input_size();
    let up = Upstream { dy, dh_n, dc_n };
    Ok(match cfg.cell() {
        CellKind::Lstm => {
            lstm::backward_sequence(&spec, w, x, &h0, &c0, trace, up, steps, batch, input)
        }
        CellKind::Gru => gru::backward_sequence(&spec, w, x, &h0, trace, up, steps, batch, input),
        CellKind::Rnn => rnn::backward_sequence(&spec, w, x, &h0, trace, up, steps, batch, input),
    })
}

/// The validated upstream gradients of [`backward`].
pub(crate) struct Upstream<'a> {
    /// `[T, B, S]`, `None` = zeros.
    pub dy: Option<&'a [f64]>,
    /// `[B, S]`.
    pub dh_n: Vec<f64>,
    /// `[B, H]` (empty for GRU and RNN).
    pub dc_n: Vec<f64>,
}

impl Upstream<'_> {
    /// Add `dy_t` to the running `dh` (the gradient reaching `h_t` from later steps).
    pub fn add_dy(&self, dh: &mut [f64], t: usize) {
        if let Some(dy) = self.dy {
            let n = dh.len();
            for (a, b) in dh.iter_mut().zip(&dy[t * n..(t + 1) * n]) {
                *a += b;
            }
        }
    }
}

/// The step functions serve one cell each; refuse a configuration of another.
pub(crate) fn check_cell(cfg: &RnnConfig, kind: CellKind, what: &str) -> Result<()> {
    if cfg.cell() != kind {
        return Err(Error::InvalidConfig(format!(
            "{what} computes a {} step, the configuration is a {}",
            kind.name(),
            cfg.cell().name()
        )));
    }
    Ok(())
}

/// `out[n] = sum_k w[n, k] * v[k]` for `w [N, K]`, `v [K]`.
pub(crate) fn mat_vec(w: &[f64], v: &[f64]) -> Vec<f64> {
    let k = v.len();
    w.chunks_exact(k)
        .map(|row| row.iter().zip(v).map(|(a, b)| a * b).sum())
        .collect()
}

/// `out[k] = sum_n w[n, k] * v[n]` for `w [N, K]`, `v [N]`: the transpose product that carries
/// a gradient back through `w`.
pub(crate) fn mat_t_vec(w: &[f64], v: &[f64], k: usize) -> Vec<f64> {
    let mut out = vec![0.0; k];
    for (row, &d) in w.chunks_exact(k).zip(v) {
        for (o, a) in out.iter_mut().zip(row) {
            *o += d * a;
        }
    }
    out
}
