//! The plain RNN (PyTorch `nn.RNN`, ONNX `RNN`), one layer, one direction:
//! `h_t = g(clip(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh))`, with `g` the configuration's cell
//! activation (tanh or relu for PyTorch's `nonlinearity`, any ONNX activation) and `clip` the
//! optional gate clip.

use crate::config::{CellKind, RnnConfig};
use crate::error::Result;

use super::activations::{activate, derivative};
use super::cell::{
    CellGrads, CellSpec, RefWeights, StepGrads, Trace, Upstream, check, check_cell,
    input_gradients, input_projection, mat_t_vec, previous_states, recurrent_gradients,
};

/// What one RNN step computes.
#[derive(Debug, Clone)]
pub struct RnnStepOut {
    /// `[B, H]`: `h_t`.
    pub h: Vec<f64>,
    /// `[B, H]`: the pre-activation, before the gate clip (saved for backward).
    pub pre: Vec<f64>,
}

/// One RNN step for the whole batch.
///
/// Shapes: `gx_t [B, H]` (this step's input projection, with `b_ih` only),
/// `h_prev [B, H]`, `weight_hh [H, H]`, `bias_hh [H]`.
pub fn rnn_step(
    cfg: &RnnConfig,
    gx_t: &[f64],
    h_prev: &[f64],
    weight_hh: &[f64],
    bias_hh: &[f64],
    batch: usize,
) -> Result<RnnStepOut> {
    check_cell(cfg, CellKind::Rnn, "rnn_step")?;
    let h = cfg.hidden_size();
    check("gx_t", gx_t, &[batch, h])?;
    check("h_prev", h_prev, &[batch, h])?;
    check("weight_hh", weight_hh, &[h, h])?;
    check("bias_hh", bias_hh, &[h])?;
    Ok(step(
        &CellSpec::of(cfg),
        gx_t,
        h_prev,
        weight_hh,
        bias_hh,
        batch,
    ))
}

fn step(
    spec: &CellSpec,
    gx_t: &[f64],
    h_prev: &[f64],
    weight_hh: &[f64],
    bias_hh: &[f64],
    batch: usize,
) -> RnnStepOut {
    let hd = spec.hidden;
    let mut out = RnnStepOut {
        h: vec![0.0; batch * hd],
        pre: vec![0.0; batch * hd],
    };
    for b in 0..batch {
        let hp = &h_prev[b * hd..(b + 1) * hd];
        for n in 0..hd {
            let mut acc = gx_t[b * hd + n] + bias_hh[n];
            for k in 0..hd {
                acc += hp[k] * weight_hh[n * hd + k];
            }
            out.pre[b * hd + n] = acc;
            out.h[b * hd + n] = activate(spec.acts.cell, spec.clip(acc));
        }
    }
    out
}

/// Backward through one RNN step.
///
/// Given `dh [B, H]` (the gradient reaching `h_t` from `y_t` and the later steps) and the saved
/// `pre_t [B, H]`, returns the pre-activation gradients (`d_gx = d_gh`, `[B, H]`) and
/// `dh_prev [B, H]`.
pub fn rnn_step_backward(
    cfg: &RnnConfig,
    dh: &[f64],
    pre_t: &[f64],
    weight_hh: &[f64],
    batch: usize,
) -> Result<StepGrads> {
    check_cell(cfg, CellKind::Rnn, "rnn_step_backward")?;
    let h = cfg.hidden_size();
    check("dh", dh, &[batch, h])?;
    check("pre_t", pre_t, &[batch, h])?;
    check("weight_hh", weight_hh, &[h, h])?;
    Ok(step_backward(
        &CellSpec::of(cfg),
        dh,
        pre_t,
        weight_hh,
        batch,
    ))
}

fn step_backward(
    spec: &CellSpec,
    dh: &[f64],
    pre_t: &[f64],
    weight_hh: &[f64],
    batch: usize,
) -> StepGrads {
    let hd = spec.hidden;
    let mut d_pre = vec![0.0; batch * hd];
    let mut dh_prev = Vec::with_capacity(batch * hd);
    for b in 0..batch {
        let row = &mut d_pre[b * hd..(b + 1) * hd];
        for (j, d) in row.iter_mut().enumerate() {
            let p = pre_t[b * hd + j];
            *d = dh[b * hd + j] * derivative(spec.acts.cell, spec.clip(p)) * spec.clip_pass(p);
        }
        dh_prev.extend(mat_t_vec(weight_hh, row, hd));
    }
    StepGrads {
        d_gh: d_pre.clone(),
        d_gx: d_pre,
        dh_prev,
        dc_prev: None,
    }
}

/// [`super::forward`] for an RNN (arguments validated there).
pub(crate) fn forward_sequence(
    spec: &CellSpec,
    w: &RefWeights,
    x: &[f64],
    h0: &[f64],
    steps: usize,
    batch: usize,
    input: usize,
) -> Result<Trace> {
    let bh = batch * spec.hidden;
    let gx = input_projection(x, &w.weight_ih, &w.bias_ih, steps * batch, input)?;
    let mut tr = Trace {
        y: Vec::with_capacity(steps * bh),
        h_n: h0.to_vec(),
        c_n: None,
        pre: Vec::with_capacity(steps * bh),
        gates: Vec::with_capacity(steps * bh),
        c: Vec::new(),
        c_unclipped: Vec::new(),
        h_raw: Vec::new(),
        hn: Vec::new(),
    };
    for t in 0..steps {
        let out = step(
            spec,
            &gx[t * bh..(t + 1) * bh],
            &tr.h_n,
            &w.weight_hh,
            &w.bias_hh,
            batch,
        );
        tr.y.extend_from_slice(&out.h);
        tr.gates.extend_from_slice(&out.h);
        tr.pre.extend_from_slice(&out.pre);
        tr.h_n = out.h;
    }
    Ok(tr)
}

/// [`super::backward`] for an RNN (arguments validated there).
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_sequence(
    spec: &CellSpec,
    w: &RefWeights,
    x: &[f64],
    h0: &[f64],
    tr: &Trace,
    up: Upstream<'_>,
    steps: usize,
    batch: usize,
    input: usize,
) -> CellGrads {
    let hd = spec.hidden;
    let bh = batch * hd;
    let mut dh = up.dh_n.clone();
    let mut d_pre = vec![0.0; steps * bh];
    for t in (0..steps).rev() {
        up.add_dy(&mut dh, t);
        let g = step_backward(
            spec,
            &dh,
            &tr.pre[t * bh..(t + 1) * bh],
            &w.weight_hh,
            batch,
        );
        d_pre[t * bh..(t + 1) * bh].copy_from_slice(&g.d_gx);
        dh = g.dh_prev;
    }
    let rows = steps * batch;
    let (dx, d_weight_ih, d_bias_ih) = input_gradients(&d_pre, x, &w.weight_ih, rows, input, hd);
    let h_prev = previous_states(h0, &tr.y, steps);
    let (d_weight_hh, d_bias_hh) =
        recurrent_gradients(&d_pre, rows, hd, hd, |m, _| &h_prev[m * hd..(m + 1) * hd]);
    CellGrads {
        dx,
        dh0: dh,
        dc0: None,
        d_weight_ih,
        d_weight_hh,
        d_bias_ih,
        d_bias_hh,
        d_weight_hr: None,
        d_peephole: None,
    }
}
