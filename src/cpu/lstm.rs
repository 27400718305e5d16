//! LSTM forward and backward (BPTT), PyTorch `nn.LSTM` semantics, one layer, one direction.
//!
//! Gate order inside every `[.., 4H]` row is PyTorch's: blocks `i | f | g | o`, each `H` wide.

use crate::config::RnnConfig;
use crate::error::{Error, Result};
use crate::weights::LayerWeights;

use super::{sigmoid, tanh, to_f64};

/// One layer's weights widened to f64 (PyTorch layout, see [`LayerWeights`]).
#[derive(Debug, Clone)]
pub struct RefWeights {
    /// `[4H, I]`.
    pub weight_ih: Vec<f64>,
    /// `[4H, H]`.
    pub weight_hh: Vec<f64>,
    /// `[4H]` (zeros when the model has no bias).
    pub bias_ih: Vec<f64>,
    /// `[4H]` (zeros when the model has no bias).
    pub bias_hh: Vec<f64>,
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
        }
    }
}

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

fn check(name: &str, v: &[f64], shape: &[usize]) -> Result<()> {
    let n: usize = shape.iter().product();
    if v.len() != n {
        return Err(Error::ShapeMismatch {
            name: name.into(),
            expected: shape.to_vec(),
            got: vec![v.len()],
        });
    }
    Ok(())
}

/// `gx[t*B + b, n] = sum_k x[t*B + b, k] * W_ih[n, k] + b_ih[n] + b_hh[n]` for all steps at once.
///
/// Shapes: `x [M, I]` (M = T*B), `weight_ih [4H, I]`, biases `[4H]`; returns `[M, 4H]`.
pub fn input_projection(
    x: &[f64],
    weight_ih: &[f64],
    bias_ih: &[f64],
    bias_hh: &[f64],
    rows: usize,
    input_size: usize,
) -> Vec<f64> {
    let n = bias_ih.len();
    let mut gx = vec![0.0; rows * n];
    for m in 0..rows {
        for j in 0..n {
            let mut acc = bias_ih[j] + bias_hh[j];
            for k in 0..input_size {
                acc += x[m * input_size + k] * weight_ih[j * input_size + k];
            }
            gx[m * n + j] = acc;
        }
    }
    gx
}

/// One recurrent step for the whole batch.
///
/// Shapes: `gx_t [B, 4H]` (this step's input projection, biases included), `h_prev [B, H]`,
/// `c_prev [B, H]`, `weight_hh [4H, H]`. Returns `(h [B, H], c [B, H], gates [B, 4H])`.
pub fn lstm_step(
    gx_t: &[f64],
    h_prev: &[f64],
    c_prev: &[f64],
    weight_hh: &[f64],
    batch: usize,
    hidden: usize,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let g4 = 4 * hidden;
    let mut h = vec![0.0; batch * hidden];
    let mut c = vec![0.0; batch * hidden];
    let mut gates = vec![0.0; batch * g4];
    for b in 0..batch {
        let mut pre = vec![0.0; g4];
        for n in 0..g4 {
            let mut acc = gx_t[b * g4 + n];
            for k in 0..hidden {
                acc += h_prev[b * hidden + k] * weight_hh[n * hidden + k];
            }
            pre[n] = acc;
        }
        for j in 0..hidden {
            let i = sigmoid(pre[j]);
            let f = sigmoid(pre[hidden + j]);
            let g = tanh(pre[2 * hidden + j]);
            let o = sigmoid(pre[3 * hidden + j]);
            let cn = f * c_prev[b * hidden + j] + i * g;
            c[b * hidden + j] = cn;
            h[b * hidden + j] = o * tanh(cn);
            let row = &mut gates[b * g4..(b + 1) * g4];
            row[j] = i;
            row[hidden + j] = f;
            row[2 * hidden + j] = g;
            row[3 * hidden + j] = o;
        }
    }
    (h, c, gates)
}

/// Full forward over `T` steps.
///
/// Shapes: `x [T, B, I]`, `h0`/`c0` `[B, H]` (zeros when `None`).
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
    let (input, hidden) = (cfg.input_size(), cfg.hidden_size());
    check("x", x, &[steps, batch, input])?;
    let zeros = vec![0.0; batch * hidden];
    let h0 = h0.unwrap_or(&zeros);
    let c0 = c0.unwrap_or(&zeros);
    check("h0", h0, &[batch, hidden])?;
    check("c0", c0, &[batch, hidden])?;

    let g4 = 4 * hidden;
    let gx = input_projection(
        x,
        &w.weight_ih,
        &w.bias_ih,
        &w.bias_hh,
        steps * batch,
        input,
    );
    let bh = batch * hidden;
    let mut out = LstmForward {
        y: vec![0.0; steps * bh],
        h_n: h0.to_vec(),
        c_n: c0.to_vec(),
        gates: vec![0.0; steps * batch * g4],
        c: vec![0.0; steps * bh],
    };
    for t in 0..steps {
        let gx_t = &gx[t * batch * g4..(t + 1) * batch * g4];
        let (h, c, gates) = lstm_step(gx_t, &out.h_n, &out.c_n, &w.weight_hh, batch, hidden);
        out.y[t * bh..(t + 1) * bh].copy_from_slice(&h);
        out.c[t * bh..(t + 1) * bh].copy_from_slice(&c);
        out.gates[t * batch * g4..(t + 1) * batch * g4].copy_from_slice(&gates);
        out.h_n = h;
        out.c_n = c;
    }
    Ok(out)
}

/// Backward through one step.
///
/// Given the upstream `dh [B, H]` (from `y_t` plus the later step) and `dc [B, H]`, the saved
/// `gates_t [B, 4H]`, `c_t [B, H]` and `c_prev [B, H]`, returns
/// `(dgates [B, 4H] pre-activation gradients, dh_prev [B, H], dc_prev [B, H])`.
#[allow(clippy::too_many_arguments)]
pub fn lstm_step_backward(
    dh: &[f64],
    dc: &[f64],
    gates_t: &[f64],
    c_t: &[f64],
    c_prev: &[f64],
    weight_hh: &[f64],
    batch: usize,
    hidden: usize,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let g4 = 4 * hidden;
    let mut dgates = vec![0.0; batch * g4];
    let mut dh_prev = vec![0.0; batch * hidden];
    let mut dc_prev = vec![0.0; batch * hidden];
    for b in 0..batch {
        for j in 0..hidden {
            let r = &gates_t[b * g4..(b + 1) * g4];
            let (i, f, g, o) = (r[j], r[hidden + j], r[2 * hidden + j], r[3 * hidden + j]);
            let idx = b * hidden + j;
            let tc = tanh(c_t[idx]);
            let do_ = dh[idx] * tc;
            let dct = dc[idx] + dh[idx] * o * (1.0 - tc * tc);
            let di = dct * g;
            let df = dct * c_prev[idx];
            let dg = dct * i;
            dc_prev[idx] = dct * f;
            let d = &mut dgates[b * g4..(b + 1) * g4];
            d[j] = di * i * (1.0 - i);
            d[hidden + j] = df * f * (1.0 - f);
            d[2 * hidden + j] = dg * (1.0 - g * g);
            d[3 * hidden + j] = do_ * o * (1.0 - o);
        }
        for k in 0..hidden {
            let mut acc = 0.0;
            for n in 0..g4 {
                acc += dgates[b * g4 + n] * weight_hh[n * hidden + k];
            }
            dh_prev[b * hidden + k] = acc;
        }
    }
    (dgates, dh_prev, dc_prev)
}

/// Backward through time for a whole sequence.
///
/// `dy [T, B, H]`, `dh_n`/`dc_n` `[B, H]`; any may be `None` (treated as zeros).
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
    let (input, hidden) = (cfg.input_size(), cfg.hidden_size());
    let (g4, bh) = (4 * hidden, batch * hidden);
    check("x", x, &[steps, batch, input])?;
    let zeros = vec![0.0; bh];
    let h0 = h0.unwrap_or(&zeros);
    let c0 = c0.unwrap_or(&zeros);
    check("h0", h0, &[batch, hidden])?;
    check("c0", c0, &[batch, hidden])?;
    check("fwd.gates", &fwd.gates, &[steps, batch, g4])?;
    check("fwd.c", &fwd.c, &[steps, batch, hidden])?;
    check("fwd.y", &fwd.y, &[steps, batch, hidden])?;
    if let Some(dy) = dy {
        check("dy", dy, &[steps, batch, hidden])?;
    }
    let mut dh = dh_n.unwrap_or(&zeros).to_vec();
    let mut dc = dc_n.unwrap_or(&zeros).to_vec();
    check("dh_n", &dh, &[batch, hidden])?;
    check("dc_n", &dc, &[batch, hidden])?;

    let mut dgates_all = vec![0.0; steps * batch * g4];
    for t in (0..steps).rev() {
        if let Some(dy) = dy {
            for (a, b) in dh.iter_mut().zip(&dy[t * bh..(t + 1) * bh]) {
                *a += b;
            }
        }
        let c_prev = if t == 0 {
            c0
        } else {
            &fwd.c[(t - 1) * bh..t * bh]
        };
        let (dgates, dh_prev, dc_prev) = lstm_step_backward(
            &dh,
            &dc,
            &fwd.gates[t * batch * g4..(t + 1) * batch * g4],
            &fwd.c[t * bh..(t + 1) * bh],
            c_prev,
            &w.weight_hh,
            batch,
            hidden,
        );
        dgates_all[t * batch * g4..(t + 1) * batch * g4].copy_from_slice(&dgates);
        dh = dh_prev;
        dc = dc_prev;
    }

    // Weight gradients: sums over all steps and batch rows of outer products.
    let rows = steps * batch;
    let mut g = LstmGrads {
        dx: vec![0.0; rows * input],
        dh0: dh,
        dc0: dc,
        d_weight_ih: vec![0.0; g4 * input],
        d_weight_hh: vec![0.0; g4 * hidden],
        d_bias_ih: vec![0.0; g4],
        d_bias_hh: vec![0.0; g4],
    };
    for m in 0..rows {
        let t = m / batch;
        let b = m % batch;
        let hp = if t == 0 {
            &h0[b * hidden..(b + 1) * hidden]
        } else {
            &fwd.y[((t - 1) * batch + b) * hidden..((t - 1) * batch + b + 1) * hidden]
        };
        for n in 0..g4 {
            let d = dgates_all[m * g4 + n];
            g.d_bias_ih[n] += d;
            for k in 0..input {
                g.d_weight_ih[n * input + k] += d * x[m * input + k];
                g.dx[m * input + k] += d * w.weight_ih[n * input + k];
            }
            for (k, &hk) in hp.iter().enumerate() {
                g.d_weight_hh[n * hidden + k] += d * hk;
            }
        }
    }
    g.d_bias_hh = g.d_bias_ih.clone();
    Ok(g)
}
