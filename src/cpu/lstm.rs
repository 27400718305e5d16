//! LSTM forward and backward (BPTT), one layer, one direction. Gate blocks `i | f | g | o`,
//! each `H` wide (PyTorch order).
//!
//! With `f`, `g`, `h` the gate, cell and hidden activations (default sigmoid, tanh, tanh),
//! `clip` the optional gate clip (ONNX `clip`) and `cell_clip` the optional cell clip (cuDNN):
//! ```text
//! i  = f(clip(W_ii x + b_ii + W_hi h + b_hi + p_i * c))            peephole terms optional
//! f  = f(clip(W_if x + b_if + W_hf h + b_hf + p_f * c))            or f = 1 - i (input_forget)
//! g  = g(clip(W_ig x + b_ig + W_hg h + b_hg))
//! c' = cell_clip(f * c + i * g)
//! o  = f(clip(W_io x + b_io + W_ho h + b_ho + p_o * c'))           the o peephole sees c'
//! h' = W_hr (o * h(c'))                                             or o * h(c') without
//!                                                                   projection
//! ```
//! With a projection (`proj_size = P`) the recurrent state and `y` are `P` wide (`S = P`),
//! the cell state stays `H` wide. Under `input_forget` the forget-gate weights are unused and
//! get zero gradient.
//!
//! One family: [`lstm_step`] and [`lstm_step_backward`] compute one step of any variant (the
//! backward from the saved pre-activations, since not every ONNX activation can be inverted),
//! and [`super::forward`] / [`super::backward`] run them over a sequence. [`lstm_forward`] and
//! [`lstm_backward`] are thin wrappers over those two for the plain PyTorch LSTM; they refuse
//! any other configuration (with [`Error::Unsupported`]).

use crate::config::{CellKind, RnnConfig};
use crate::error::{Error, Result};

use super::activations::{activate, derivative};
use super::cell::{
    self, CellGrads, CellSpec, RefWeights, StepGrads, Trace, Upstream, check, check_cell,
    check_optional, input_gradients, input_projection, previous_states, recurrent_gradients,
};

/// Everything the forward pass computed, including what backward needs.
#[derive(Debug, Clone)]
pub struct LstmForward {
    /// `[T, B, H]`: `h_t` for every step.
    pub y: Vec<f64>,
    /// `[B, H]`: `h_{T-1}`.
    pub h_n: Vec<f64>,
    /// `[B, H]`: `c_{T-1}`.
    pub c_n: Vec<f64>,
    /// `[T, B, 4H]`: activated gates `i, f, g, o` (after sigmoid/tanh).
    pub gates: Vec<f64>,
    /// `[T, B, 4H]`: the gate pre-activations, which [`lstm_backward`] differentiates at (as
    /// the GPU's step backward does from its tape).
    pub pre: Vec<f64>,
    /// `[T, B, H]`: cell state `c_t` after every step.
    pub c: Vec<f64>,
}

/// Gradients of a loss with respect to every input and parameter.
#[derive(Debug, Clone)]
pub struct LstmGrads {
    /// `[T, B, I]`.
    pub dx: Vec<f64>,
    /// `[B, H]`.
    pub dh0: Vec<f64>,
    /// `[B, H]`.
    pub dc0: Vec<f64>,
    /// `[4H, I]`.
    pub d_weight_ih: Vec<f64>,
    /// `[4H, H]`.
    pub d_weight_hh: Vec<f64>,
    /// `[4H]` (equal to `d_bias_hh`: both biases enter the same sum).
    pub d_bias_ih: Vec<f64>,
    /// `[4H]`.
    pub d_bias_hh: Vec<f64>,
}

/// These functions are the plain PyTorch LSTM; refuse anything else rather than compute it
/// wrongly.
fn plain_lstm_only(cfg: &RnnConfig) -> Result<()> {
    if cfg.cell() != crate::config::CellKind::Lstm || !cfg.is_plain() {
        return Err(Error::Unsupported(format!(
            "cpu::lstm_* implement the plain LSTM, not {cfg:?}"
        )));
    }
    Ok(())
}

/// Full forward of the plain LSTM over `T` steps (see [`super::forward`] for the variants).
///
/// Shapes: `x [T, B, I]`, `h0`/`c0` `[B, H]` (zeros when `None`).
///
/// Errors: [`Error::Unsupported`] for anything but the plain LSTM; otherwise as
/// [`super::forward`].
pub fn lstm_forward(
    cfg: &RnnConfig,
    w: &RefWeights,
    x: &[f64],
    h0: Option<&[f64]>,
    c0: Option<&[f64]>,
    steps: usize,
    batch: usize,
) -> Result<LstmForward> {
    plain_lstm_only(cfg)?;
    let tr = cell::forward(cfg, w, x, h0, c0, steps, batch)?;
    Ok(LstmForward {
        y: tr.y,
        h_n: tr.h_n,
        c_n: tr.c_n.expect("an LSTM trace has a cell state"),
        gates: tr.gates,
        pre: tr.pre,
        c: tr.c,
    })
}

/// Backward through time of the plain LSTM for a whole sequence: [`super::backward`] on the
/// trace `fwd` holds (see there for the variants).
///
/// `dy [T, B, H]`, `dh_n`/`dc_n` `[B, H]`; any may be `None` (treated as zeros).
///
/// Errors: [`Error::Unsupported`] for anything but the plain LSTM; otherwise as
/// [`super::backward`].
#[allow(clippy::too_many_arguments)]
pub fn lstm_backward(
    cfg: &RnnConfig,
    w: &RefWeights,
    x: &[f64],
    h0: Option<&[f64]>,
    c0: Option<&[f64]>,
    fwd: &LstmForward,
    dy: Option<&[f64]>,
    dh_n: Option<&[f64]>,
    dc_n: Option<&[f64]>,
    steps: usize,
    batch: usize,
) -> Result<LstmGrads> {
    plain_lstm_only(cfg)?;
    // Without a cell clip or a projection, the unclipped cell state is `c` and `h_raw` is `y`.
    let trace = Trace {
        y: fwd.y.clone(),
        h_n: fwd.h_n.clone(),
        c_n: Some(fwd.c_n.clone()),
        pre: fwd.pre.clone(),
        gates: fwd.gates.clone(),
        c: fwd.c.clone(),
        c_unclipped: fwd.c.clone(),
        h_raw: fwd.y.clone(),
        hn: Vec::new(),
    };
    let g = cell::backward(cfg, w, x, h0, c0, &trace, dy, dh_n, dc_n, steps, batch)?;
    Ok(LstmGrads {
        dx: g.dx,
        dh0: g.dh0,
        dc0: g.dc0.expect("an LSTM's gradients include dc0"),
        d_weight_ih: g.d_weight_ih,
        d_weight_hh: g.d_weight_hh,
        d_bias_ih: g.d_bias_ih,
        d_bias_hh: g.d_bias_hh,
    })
}

/// What one LSTM step computes (any variant).
#[derive(Debug, Clone)]
pub struct LstmStepOut {
    /// `[B, S]`: `h_t` (projected when `proj_size` is set).
    pub h: Vec<f64>,
    /// `[B, H]`: `c_t` after the cell clip.
    pub c: Vec<f64>,
    /// `[B, H]`: `c_t` before the cell clip.
    pub c_unclipped: Vec<f64>,
    /// `[B, H]`: `o * h(c_t)`, before the projection.
    pub h_raw: Vec<f64>,
    /// `[B, 4H]`: the activated gates `i, f, g, o` (`f = 1 - i` under `input_forget`).
    pub gates: Vec<f64>,
    /// `[B, 4H]`: the pre-activations before the gate clip, peephole terms included.
    pub pre: Vec<f64>,
}

/// One LSTM step of any variant for the whole batch (twin of `shaders/rnn_step.wgsl`).
///
/// Shapes: `gx_t [B, 4H]` (this step's input projection, with `b_ih` only),
/// `h_prev [B, S]`, `c_prev [B, H]`, `weight_hh [4H, S]`, `bias_hh [4H]`, `peephole [3H]`
/// (exactly when `cfg.peepholes()`), `weight_hr [P, H]` (exactly when `cfg.proj_size()` is
/// set).
#[allow(clippy::too_many_arguments)]
pub fn lstm_step(
    cfg: &RnnConfig,
    gx_t: &[f64],
    h_prev: &[f64],
    c_prev: &[f64],
    weight_hh: &[f64],
    bias_hh: &[f64],
    peephole: Option<&[f64]>,
    weight_hr: Option<&[f64]>,
    batch: usize,
) -> Result<LstmStepOut> {
    check_cell(cfg, CellKind::Lstm, "lstm_step")?;
    let (h, s) = (cfg.hidden_size(), cfg.state_size());
    check("gx_t", gx_t, &[batch, 4 * h])?;
    check("h_prev", h_prev, &[batch, s])?;
    check("c_prev", c_prev, &[batch, h])?;
    check_variant_weights(cfg, weight_hh, peephole, weight_hr)?;
    check("bias_hh", bias_hh, &[4 * h])?;
    let spec = CellSpec::of(cfg);
    Ok(step(
        &spec, gx_t, h_prev, c_prev, weight_hh, bias_hh, peephole, weight_hr, batch,
    ))
}

fn check_variant_weights(
    cfg: &RnnConfig,
    weight_hh: &[f64],
    peephole: Option<&[f64]>,
    weight_hr: Option<&[f64]>,
) -> Result<()> {
    let (h, s) = (cfg.hidden_size(), cfg.state_size());
    check("weight_hh", weight_hh, &[4 * h, s])?;
    let peep = cfg.peepholes().then(|| vec![3 * h]);
    check_optional("peephole", peephole, peep.as_deref())?;
    let proj = cfg.proj_size().map(|p| vec![p, h]);
    check_optional("weight_hr", weight_hr, proj.as_deref())
}

#[allow(clippy::too_many_arguments)]
fn step(
    spec: &CellSpec,
    gx_t: &[f64],
    h_prev: &[f64],
    c_prev: &[f64],
    weight_hh: &[f64],
    bias_hh: &[f64],
    peephole: Option<&[f64]>,
    weight_hr: Option<&[f64]>,
    batch: usize,
) -> LstmStepOut {
    let (hd, s) = (spec.hidden, spec.state);
    let g4 = 4 * hd;
    let acts = spec.acts;
    let mut out = LstmStepOut {
        h: vec![0.0; batch * s],
        c: vec![0.0; batch * hd],
        c_unclipped: vec![0.0; batch * hd],
        h_raw: vec![0.0; batch * hd],
        gates: vec![0.0; batch * g4],
        pre: vec![0.0; batch * g4],
    };
    for b in 0..batch {
        let hp = &h_prev[b * s..(b + 1) * s];
        let cp = &c_prev[b * hd..(b + 1) * hd];
        let pre = &mut out.pre[b * g4..(b + 1) * g4];
        let gates = &mut out.gates[b * g4..(b + 1) * g4];
        for n in 0..g4 {
            let mut acc = gx_t[b * g4 + n] + bias_hh[n];
            for k in 0..s {
                acc += hp[k] * weight_hh[n * s + k];
            }
            pre[n] = acc;
        }
        for j in 0..hd {
            if let Some(p) = peephole {
                pre[j] += p[j] * cp[j];
                pre[hd + j] += p[hd + j] * cp[j];
            }
            let i = activate(acts.gate, spec.clip(pre[j]));
            let f = if spec.input_forget {
                1.0 - i
            } else {
                activate(acts.gate, spec.clip(pre[hd + j]))
            };
            let g = activate(acts.cell, spec.clip(pre[2 * hd + j]));
            let c_unclipped = f * cp[j] + i * g;
            let c = spec.cell_clip(c_unclipped);
            if let Some(p) = peephole {
                pre[3 * hd + j] += p[2 * hd + j] * c;
            }
            let o = activate(acts.gate, spec.clip(pre[3 * hd + j]));
            let idx = b * hd + j;
            out.c_unclipped[idx] = c_unclipped;
            out.c[idx] = c;
            out.h_raw[idx] = o * activate(acts.hidden, c);
            gates[j] = i;
            gates[hd + j] = f;
            gates[2 * hd + j] = g;
            gates[3 * hd + j] = o;
        }
        let h_raw = &out.h_raw[b * hd..(b + 1) * hd];
        let h = &mut out.h[b * s..(b + 1) * s];
        match weight_hr {
            Some(wr) => h.copy_from_slice(&cell::mat_vec(wr, h_raw)),
            None => h.copy_from_slice(h_raw),
        }
    }
    out
}

/// Backward through one LSTM step of any variant (twin of `shaders/rnn_step_backward.wgsl`,
/// which also works from the saved pre-activations).
///
/// Given `dh [B, S]` (the gradient reaching `h_t` from `y_t` and the later steps), `dc [B, H]`
/// (the gradient reaching `c_t` from the later steps), the step's `c_prev [B, H]` and its
/// saved `gates_t [B, 4H]`, `pre_t [B, 4H]`, `c_t [B, H]`, `c_unclipped_t [B, H]`, returns the
/// pre-activation gradients (`d_gx = d_gh`, `[B, 4H]`), `dh_prev [B, S]` and
/// `dc_prev [B, H]`. Weights as in [`lstm_step`].
#[allow(clippy::too_many_arguments)]
pub fn lstm_step_backward(
    cfg: &RnnConfig,
    dh: &[f64],
    dc: &[f64],
    c_prev: &[f64],
    gates_t: &[f64],
    pre_t: &[f64],
    c_t: &[f64],
    c_unclipped_t: &[f64],
    weight_hh: &[f64],
    peephole: Option<&[f64]>,
    weight_hr: Option<&[f64]>,
    batch: usize,
) -> Result<StepGrads> {
    check_cell(cfg, CellKind::Lstm, "lstm_step_backward")?;
    let (h, s) = (cfg.hidden_size(), cfg.state_size());
    check("dh", dh, &[batch, s])?;
    check("dc", dc, &[batch, h])?;
    check("c_prev", c_prev, &[batch, h])?;
    check("gates_t", gates_t, &[batch, 4 * h])?;
    check("pre_t", pre_t, &[batch, 4 * h])?;
    check("c_t", c_t, &[batch, h])?;
    check("c_unclipped_t", c_unclipped_t, &[batch, h])?;
    check_variant_weights(cfg, weight_hh, peephole, weight_hr)?;
    let saved = Saved {
        c_prev,
        gates: gates_t,
        pre: pre_t,
        c: c_t,
        c_unclipped: c_unclipped_t,
    };
    Ok(step_backward(
        &CellSpec::of(cfg),
        dh,
        dc,
        &saved,
        weight_hh,
        peephole,
        weight_hr,
        batch,
    ))
}

/// One step's saved forward values, as [`step_backward`] reads them.
struct Saved<'a> {
    /// `[B, H]`.
    c_prev: &'a [f64],
    /// `[B, 4H]`.
    gates: &'a [f64],
    /// `[B, 4H]`.
    pre: &'a [f64],
    /// `[B, H]`.
    c: &'a [f64],
    /// `[B, H]`.
    c_unclipped: &'a [f64],
}

#[allow(clippy::too_many_arguments)]
fn step_backward(
    spec: &CellSpec,
    dh: &[f64],
    dc: &[f64],
    saved: &Saved<'_>,
    weight_hh: &[f64],
    peephole: Option<&[f64]>,
    weight_hr: Option<&[f64]>,
    batch: usize,
) -> StepGrads {
    let (hd, s) = (spec.hidden, spec.state);
    let g4 = 4 * hd;
    let acts = spec.acts;
    // d act(clip(p)) / dp.
    let act_grad = |act, p: f64| derivative(act, spec.clip(p)) * spec.clip_pass(p);
    let mut d_pre = vec![0.0; batch * g4];
    let mut dh_prev = Vec::with_capacity(batch * s);
    let mut dc_prev = vec![0.0; batch * hd];
    for b in 0..batch {
        let dh_b = &dh[b * s..(b + 1) * s];
        // Back through the projection: h = W_hr h_raw.
        let dh_raw = match weight_hr {
            Some(wr) => cell::mat_t_vec(wr, dh_b, hd),
            None => dh_b.to_vec(),
        };
        let gates = &saved.gates[b * g4..(b + 1) * g4];
        let pre = &saved.pre[b * g4..(b + 1) * g4];
        let d = &mut d_pre[b * g4..(b + 1) * g4];
        for j in 0..hd {
            let idx = b * hd + j;
            let (i, f, g, o) = (
                gates[j],
                gates[hd + j],
                gates[2 * hd + j],
                gates[3 * hd + j],
            );
            let (c, cp) = (saved.c[idx], saved.c_prev[idx]);
            // h_raw = o * h(c).
            d[3 * hd + j] =
                dh_raw[j] * activate(acts.hidden, c) * act_grad(acts.gate, pre[3 * hd + j]);
            let mut dct = dc[idx] + dh_raw[j] * o * derivative(acts.hidden, c);
            if let Some(p) = peephole {
                dct += d[3 * hd + j] * p[2 * hd + j];
            }
            // c = cell_clip(f * c_prev + i * g).
            let dcu = dct * spec.cell_clip_pass(saved.c_unclipped[idx]);
            let (mut di, df, dg) = (dcu * g, dcu * cp, dcu * i);
            dc_prev[idx] = dcu * f;
            if spec.input_forget {
                // f = 1 - i: f's gradient flows to i, its own weights get none.
                di -= df;
            } else {
                d[hd + j] = df * act_grad(acts.gate, pre[hd + j]);
            }
            d[j] = di * act_grad(acts.gate, pre[j]);
            d[2 * hd + j] = dg * act_grad(acts.cell, pre[2 * hd + j]);
            if let Some(p) = peephole {
                dc_prev[idx] += d[j] * p[j] + d[hd + j] * p[hd + j];
            }
        }
        dh_prev.extend(cell::mat_t_vec(weight_hh, d, s));
    }
    StepGrads {
        d_gh: d_pre.clone(),
        d_gx: d_pre,
        dh_prev,
        dc_prev: Some(dc_prev),
    }
}

/// [`super::forward`] for an LSTM (arguments validated there).
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_sequence(
    spec: &CellSpec,
    w: &RefWeights,
    x: &[f64],
    h0: &[f64],
    c0: &[f64],
    steps: usize,
    batch: usize,
    input: usize,
) -> Result<Trace> {
    let (hd, s) = (spec.hidden, spec.state);
    let (bh, bs, bg) = (batch * hd, batch * s, batch * 4 * hd);
    let gx = input_projection(x, &w.weight_ih, &w.bias_ih, steps * batch, input)?;
    let mut tr = Trace {
        y: Vec::with_capacity(steps * bs),
        h_n: h0.to_vec(),
        c_n: Some(c0.to_vec()),
        pre: Vec::with_capacity(steps * bg),
        gates: Vec::with_capacity(steps * bg),
        c: Vec::with_capacity(steps * bh),
        c_unclipped: Vec::with_capacity(steps * bh),
        h_raw: Vec::with_capacity(steps * bh),
        hn: Vec::new(),
    };
    let mut c = c0.to_vec();
    for t in 0..steps {
        let out = step(
            spec,
            &gx[t * bg..(t + 1) * bg],
            &tr.h_n,
            &c,
            &w.weight_hh,
            &w.bias_hh,
            w.peephole.as_deref(),
            w.weight_hr.as_deref(),
            batch,
        );
        tr.y.extend_from_slice(&out.h);
        tr.pre.extend_from_slice(&out.pre);
        tr.gates.extend_from_slice(&out.gates);
        tr.c.extend_from_slice(&out.c);
        tr.c_unclipped.extend_from_slice(&out.c_unclipped);
        tr.h_raw.extend_from_slice(&out.h_raw);
        tr.h_n = out.h;
        c = out.c;
    }
    tr.c_n = Some(c);
    Ok(tr)
}

/// [`super::backward`] for an LSTM (arguments validated there).
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_sequence(
    spec: &CellSpec,
    w: &RefWeights,
    x: &[f64],
    h0: &[f64],
    c0: &[f64],
    tr: &Trace,
    up: Upstream<'_>,
    steps: usize,
    batch: usize,
    input: usize,
) -> CellGrads {
    let (hd, s) = (spec.hidden, spec.state);
    let g4 = 4 * hd;
    let (bh, bs, bg) = (batch * hd, batch * s, batch * g4);
    // `[T, B, H]`: the cell state each step starts from.
    let c_prev_all = previous_states(c0, &tr.c, steps);
    let mut dh = up.dh_n.clone();
    let mut dc = up.dc_n.clone();
    let mut d_pre = vec![0.0; steps * bg];
    // `[T, B, S]`: the full gradient reaching each `h_t`, for the projection's gradient.
    let mut dh_all = vec![0.0; steps * bs];
    for t in (0..steps).rev() {
        up.add_dy(&mut dh, t);
        dh_all[t * bs..(t + 1) * bs].copy_from_slice(&dh);
        let saved = Saved {
            c_prev: &c_prev_all[t * bh..(t + 1) * bh],
            gates: &tr.gates[t * bg..(t + 1) * bg],
            pre: &tr.pre[t * bg..(t + 1) * bg],
            c: &tr.c[t * bh..(t + 1) * bh],
            c_unclipped: &tr.c_unclipped[t * bh..(t + 1) * bh],
        };
        let g = step_backward(
            spec,
            &dh,
            &dc,
            &saved,
            &w.weight_hh,
            w.peephole.as_deref(),
            w.weight_hr.as_deref(),
            batch,
        );
        d_pre[t * bg..(t + 1) * bg].copy_from_slice(&g.d_gx);
        dh = g.dh_prev;
        dc = g.dc_prev.expect("an LSTM step carries a cell state");
    }

    let rows = steps * batch;
    let (dx, d_weight_ih, d_bias_ih) = input_gradients(&d_pre, x, &w.weight_ih, rows, input, g4);
    let h_prev = previous_states(h0, &tr.y, steps);
    let (d_weight_hh, d_bias_hh) =
        recurrent_gradients(&d_pre, rows, g4, s, |m, _| &h_prev[m * s..(m + 1) * s]);
    // Peepholes: i and f multiply c_{t-1}, o multiplies c_t.
    let d_peephole = w.peephole.as_ref().map(|_| {
        let mut dp = vec![0.0; 3 * hd];
        for m in 0..rows {
            for j in 0..hd {
                let d = &d_pre[m * g4..(m + 1) * g4];
                dp[j] += d[j] * c_prev_all[m * hd + j];
                dp[hd + j] += d[hd + j] * c_prev_all[m * hd + j];
                dp[2 * hd + j] += d[3 * hd + j] * tr.c[m * hd + j];
            }
        }
        dp
    });
    // Projection: d_weight_hr[p, k] = sum_m dh[m, p] * h_raw[m, k].
    let d_weight_hr = w.weight_hr.as_ref().map(|_| {
        let mut dw = vec![0.0; s * hd];
        for m in 0..rows {
            for p in 0..s {
                let d = dh_all[m * s + p];
                for k in 0..hd {
                    dw[p * hd + k] += d * tr.h_raw[m * hd + k];
                }
            }
        }
        dw
    });
    CellGrads {
        dx,
        dh0: dh,
        dc0: Some(dc),
        d_weight_ih,
        d_weight_hh,
        d_bias_ih,
        d_bias_hh,
        d_weight_hr,
        d_peephole,
    }
}
