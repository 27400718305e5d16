//! The GRU, one layer, one direction. Gate blocks `r | z | n`, each `H` wide (PyTorch order).
//!
//! With `f` the gate activation, `g` the cell activation and `clip` the optional gate clip:
//! ```text
//! r  = f(clip(W_ir x + b_ir + W_hr h + b_hr))
//! z  = f(clip(W_iz x + b_iz + W_hz h + b_hz))
//! n  = g(clip(W_in x + b_in + r * (W_hn h + b_hn)))      reset after (PyTorch, cuDNN,
//!                                                          ONNX linear_before_reset = 1)
//! n  = g(clip(W_in x + b_in + W_hn (r * h) + b_hn))      reset before (ONNX default, Keras
//!                                                          reset_after = False)
//! h' = (1 - z) * n + z * h
//! ```
//! The input projection carries `b_ih` only; the step adds `b_hh` (as for every cell, and as
//! on the GPU), which the reset-after form needs there: `b_hn` sits behind the reset gate.

use crate::config::{CellKind, GruReset, RnnConfig};
use crate::error::Result;

use super::activations::{activate, derivative};
use super::cell::{
    CellGrads, CellSpec, RefWeights, StepGrads, Trace, Upstream, check, check_cell,
    input_gradients, input_projection, mat_t_vec, mat_vec, previous_states, recurrent_gradients,
};

/// What one GRU step computes.
#[derive(Debug, Clone)]
pub struct GruStepOut {
    /// `[B, H]`: `h_t`.
    pub h: Vec<f64>,
    /// `[B, 3H]`: the activated gates `r, z, n`.
    pub gates: Vec<f64>,
    /// `[B, 3H]`: the pre-activations of `r, z, n` before the gate clip.
    pub pre: Vec<f64>,
    /// `[B, H]`: the hidden-side term of `n`, `W_hn h + b_hn` (reset after) or
    /// `W_hn (r*h) + b_hn` (reset before).
    pub hn: Vec<f64>,
}

/// One GRU step for the whole batch.
///
/// Shapes: `gx_t [B, 3H]` (this step's input projection with `b_ih` only), `h_prev [B, H]`,
/// `weight_hh [3H, H]`, `bias_hh [3H]`.
pub fn gru_step(
    cfg: &RnnConfig,
    gx_t: &[f64],
    h_prev: &[f64],
    weight_hh: &[f64],
    bias_hh: &[f64],
    batch: usize,
) -> Result<GruStepOut> {
    check_cell(cfg, CellKind::Gru, "gru_step")?;
    let h = cfg.hidden_size();
    check("gx_t", gx_t, &[batch, 3 * h])?;
    check("h_prev", h_prev, &[batch, h])?;
    check("weight_hh", weight_hh, &[3 * h, h])?;
    check("bias_hh", bias_hh, &[3 * h])?;
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
) -> GruStepOut {
    let hd = spec.hidden;
    let g3 = 3 * hd;
    let (f_act, g_act) = (spec.acts.gate, spec.acts.cell);
    let w_rz = &weight_hh[..2 * hd * hd];
    let w_n = &weight_hh[2 * hd * hd..];
    let mut out = GruStepOut {
        h: vec![0.0; batch * hd],
        gates: vec![0.0; batch * g3],
        pre: vec![0.0; batch * g3],
        hn: vec![0.0; batch * hd],
    };
    for b in 0..batch {
        let hp = &h_prev[b * hd..(b + 1) * hd];
        let gx = &gx_t[b * g3..(b + 1) * g3];
        let pre = &mut out.pre[b * g3..(b + 1) * g3];
        let gates = &mut out.gates[b * g3..(b + 1) * g3];
        // r and z: both projections plus both biases.
        let gh_rz = mat_vec(w_rz, hp);
        for n in 0..2 * hd {
            pre[n] = gx[n] + gh_rz[n] + bias_hh[n];
            gates[n] = activate(f_act, spec.clip(pre[n]));
        }
        let (r, z) = (&gates[..hd], &gates[hd..2 * hd]);
        // The hidden-side term of n, with the reset gate before or after the projection.
        let hn = match spec.reset {
            GruReset::After => mat_vec(w_n, hp),
            GruReset::Before => {
                let rh: Vec<f64> = r.iter().zip(hp).map(|(r, h)| r * h).collect();
                mat_vec(w_n, &rh)
            }
        };
        let mut n_gate = vec![0.0; hd];
        for j in 0..hd {
            let hn_j = hn[j] + bias_hh[2 * hd + j];
            out.hn[b * hd + j] = hn_j;
            let p = match spec.reset {
                GruReset::After => gx[2 * hd + j] + r[j] * hn_j,
                GruReset::Before => gx[2 * hd + j] + hn_j,
            };
            pre[2 * hd + j] = p;
            n_gate[j] = activate(g_act, spec.clip(p));
            out.h[b * hd + j] = (1.0 - z[j]) * n_gate[j] + z[j] * hp[j];
        }
        gates[2 * hd..].copy_from_slice(&n_gate);
    }
    out
}

/// Backward through one GRU step.
///
/// Given `dh [B, H]` (the gradient reaching `h_t` from `y_t` and the later steps), the step's
/// `h_prev [B, H]` and its saved `gates_t [B, 3H]`, `pre_t [B, 3H]`, `hn_t [B, H]`, returns
/// `d_gx [B, 3H]` (input side), `d_gh [B, 3H]` (hidden side: in the `n` block `r * d_pre_n`
/// for reset after, `d_pre_n` for reset before, whose `W_hn` multiplies `r*h`) and
/// `dh_prev [B, H]`.
#[allow(clippy::too_many_arguments)]
pub fn gru_step_backward(
    cfg: &RnnConfig,
    dh: &[f64],
    h_prev: &[f64],
    gates_t: &[f64],
    pre_t: &[f64],
    hn_t: &[f64],
    weight_hh: &[f64],
    batch: usize,
) -> Result<StepGrads> {
    check_cell(cfg, CellKind::Gru, "gru_step_backward")?;
    let h = cfg.hidden_size();
    check("dh", dh, &[batch, h])?;
    check("h_prev", h_prev, &[batch, h])?;
    check("gates_t", gates_t, &[batch, 3 * h])?;
    check("pre_t", pre_t, &[batch, 3 * h])?;
    check("hn_t", hn_t, &[batch, h])?;
    check("weight_hh", weight_hh, &[3 * h, h])?;
    Ok(step_backward(
        &CellSpec::of(cfg),
        dh,
        h_prev,
        gates_t,
        pre_t,
        hn_t,
        weight_hh,
        batch,
    ))
}

#[allow(clippy::too_many_arguments)]
fn step_backward(
    spec: &CellSpec,
    dh: &[f64],
    h_prev: &[f64],
    gates_t: &[f64],
    pre_t: &[f64],
    hn_t: &[f64],
    weight_hh: &[f64],
    batch: usize,
) -> StepGrads {
    let hd = spec.hidden;
    let g3 = 3 * hd;
    let (f_act, g_act) = (spec.acts.gate, spec.acts.cell);
    let w_rz = &weight_hh[..2 * hd * hd];
    let w_n = &weight_hh[2 * hd * hd..];
    // d act(clip(p)) / dp.
    let act_grad = |act, p: f64| derivative(act, spec.clip(p)) * spec.clip_pass(p);
    let mut out = StepGrads {
        d_gx: vec![0.0; batch * g3],
        d_gh: vec![0.0; batch * g3],
        dh_prev: vec![0.0; batch * hd],
        dc_prev: None,
    };
    for b in 0..batch {
        let hp = &h_prev[b * hd..(b + 1) * hd];
        let gates = &gates_t[b * g3..(b + 1) * g3];
        let pre = &pre_t[b * g3..(b + 1) * g3];
        let (r, z, n) = (&gates[..hd], &gates[hd..2 * hd], &gates[2 * hd..]);
        let d_gx = &mut out.d_gx[b * g3..(b + 1) * g3];
        let d_gh = &mut out.d_gh[b * g3..(b + 1) * g3];
        let dh_prev = &mut out.dh_prev[b * hd..(b + 1) * hd];
        // h' = (1-z)*n + z*h: through n, z, and straight to h.
        let mut d_pre_n = vec![0.0; hd];
        for j in 0..hd {
            let d = dh[b * hd + j];
            dh_prev[j] = d * z[j];
            d_pre_n[j] = d * (1.0 - z[j]) * act_grad(g_act, pre[2 * hd + j]);
            d_gx[hd + j] = d * (hp[j] - n[j]) * act_grad(f_act, pre[hd + j]);
            d_gx[2 * hd + j] = d_pre_n[j];
        }
        // The reset gate, and n's hidden-side term.
        match spec.reset {
            GruReset::After => {
                // pre_n = gx_n + r * hn: hn's gradient is r*d_pre_n, r's is hn*d_pre_n.
                for j in 0..hd {
                    d_gh[2 * hd + j] = r[j] * d_pre_n[j];
                    d_gx[j] = hn_t[b * hd + j] * d_pre_n[j] * act_grad(f_act, pre[j]);
                }
                let through_n = mat_t_vec(w_n, &d_gh[2 * hd..], hd);
                for (a, v) in dh_prev.iter_mut().zip(through_n) {
                    *a += v;
                }
            }
            GruReset::Before => {
                // pre_n = gx_n + W_hn (r*h) + b_hn: (r*h)'s gradient is W_hn^T d_pre_n.
                d_gh[2 * hd..].copy_from_slice(&d_pre_n);
                let d_rh = mat_t_vec(w_n, &d_pre_n, hd);
                for j in 0..hd {
                    d_gx[j] = d_rh[j] * hp[j] * act_grad(f_act, pre[j]);
                    dh_prev[j] += d_rh[j] * r[j];
                }
            }
        }
        // r and z see h through W_hr, W_hz with both biases: d_gh = d_gx there.
        d_gh[..2 * hd].copy_from_slice(&d_gx[..2 * hd]);
        let through_rz = mat_t_vec(w_rz, &d_gh[..2 * hd], hd);
        for (a, v) in dh_prev.iter_mut().zip(through_rz) {
            *a += v;
        }
    }
    out
}

/// [`super::forward`] for a GRU (arguments validated there).
pub(crate) fn forward_sequence(
    spec: &CellSpec,
    w: &RefWeights,
    x: &[f64],
    h0: &[f64],
    steps: usize,
    batch: usize,
    input: usize,
) -> Result<Trace> {
    let hd = spec.hidden;
    let (bh, bg) = (batch * hd, batch * 3 * hd);
    let gx = input_projection(x, &w.weight_ih, &w.bias_ih, steps * batch, input)?;
    let mut tr = Trace {
        y: Vec::with_capacity(steps * bh),
        h_n: h0.to_vec(),
        c_n: None,
        pre: Vec::with_capacity(steps * bg),
        gates: Vec::with_capacity(steps * bg),
        c: Vec::new(),
        c_unclipped: Vec::new(),
        h_raw: Vec::new(),
        hn: Vec::with_capacity(steps * bh),
    };
    for t in 0..steps {
        let gx_t = &gx[t * bg..(t + 1) * bg];
        let out = step(spec, gx_t, &tr.h_n, &w.weight_hh, &w.bias_hh, batch);
        tr.y.extend_from_slice(&out.h);
        tr.gates.extend_from_slice(&out.gates);
        tr.pre.extend_from_slice(&out.pre);
        tr.hn.extend_from_slice(&out.hn);
        tr.h_n = out.h;
    }
    Ok(tr)
}

/// [`super::backward`] for a GRU (arguments validated there).
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
    let g3 = 3 * hd;
    let (bh, bg) = (batch * hd, batch * g3);
    let h_prev = previous_states(h0, &tr.y, steps);
    let mut dh = up.dh_n.clone();
    let mut d_gx = vec![0.0; steps * bg];
    let mut d_gh = vec![0.0; steps * bg];
    for t in (0..steps).rev() {
        up.add_dy(&mut dh, t);
        let g = step_backward(
            spec,
            &dh,
            &h_prev[t * bh..(t + 1) * bh],
            &tr.gates[t * bg..(t + 1) * bg],
            &tr.pre[t * bg..(t + 1) * bg],
            &tr.hn[t * bh..(t + 1) * bh],
            &w.weight_hh,
            batch,
        );
        d_gx[t * bg..(t + 1) * bg].copy_from_slice(&g.d_gx);
        d_gh[t * bg..(t + 1) * bg].copy_from_slice(&g.d_gh);
        dh = g.dh_prev;
    }
    let rows = steps * batch;
    let (dx, d_weight_ih, d_bias_ih) = input_gradients(&d_gx, x, &w.weight_ih, rows, input, g3);
    // W_hn multiplies r*h in the reset-before form, h everywhere else.
    let rh: Vec<f64> = match spec.reset {
        GruReset::After => Vec::new(),
        GruReset::Before => (0..rows * hd)
            .map(|e| tr.gates[(e / hd) * g3 + e % hd] * h_prev[e])
            .collect(),
    };
    let (d_weight_hh, d_bias_hh) = recurrent_gradients(&d_gh, rows, g3, hd, |m, n| {
        if spec.reset == GruReset::Before && n >= 2 * hd {
            &rh[m * hd..(m + 1) * hd]
        } else {
            &h_prev[m * hd..(m + 1) * hd]
        }
    });
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
