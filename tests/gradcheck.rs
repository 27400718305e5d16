//! Finite-difference check of the CPU reference's backward pass, in f64.
//!
//! For a scalar loss `L = sum(y*dy) + sum(h_n*dh_n) + sum(c_n*dc_n)` with seeded random `dy`,
//! `dh_n`, `dc_n` (any of them may be absent), every entry of `dL/dx`, `dL/dh0`, `dL/dc0` and
//! of every parameter's gradient from `cpu::lstm_backward` must match the central difference
//! `(L(p + eps) - L(p - eps)) / (2 eps)` of `cpu::lstm_forward`. Shapes are small enough to
//! check every entry.

mod common;

use common::{assert_close, seeded};
use rnn_wgpu::cpu::{LstmGrads, RefWeights, lstm_backward, lstm_forward, to_f64};
use rnn_wgpu::{RnnConfig, Weights};

/// Step of the central difference. Its truncation error is `eps^2 * L''' / 6`, ~1e-13 here;
/// its rounding error is `ulp(L) / eps`, ~1e-16 * |L| / 1e-6 = 1e-10 * |L| with |L| of order
/// 1-10. A larger step trades rounding for truncation; 1e-6 keeps both far below the tolerance.
const EPS: f64 = 1e-6;
/// `|numeric - analytic| <= ATOL + RTOL * |analytic|`. The floor covers the ~1e-9 rounding
/// noise of the difference quotient on near-zero entries; 1e-6 relative is ~1e3 times the
/// expected error, yet any real mistake in a derivative (a missing term, a wrong gate) is off by
/// far more than a part in a million.
const ATOL: f64 = 1e-8;
const RTOL: f64 = 1e-6;

/// One LSTM problem: weights, inputs and the upstream gradients that define the loss.
#[derive(Clone)]
struct Problem {
    cfg: RnnConfig,
    steps: usize,
    batch: usize,
    w: RefWeights,
    /// `[T, B, I]`.
    x: Vec<f64>,
    /// `[B, H]`.
    h0: Vec<f64>,
    /// `[B, H]`.
    c0: Vec<f64>,
    /// `[T, B, H]`.
    dy: Option<Vec<f64>>,
    /// `[B, H]`.
    dh_n: Option<Vec<f64>>,
    /// `[B, H]`.
    dc_n: Option<Vec<f64>>,
}

/// Which upstream gradients the loss includes.
struct Upstream {
    dy: bool,
    dh_n: bool,
    dc_n: bool,
}

impl Problem {
    fn new(bias: bool, upstream: Upstream, seed: u64) -> Problem {
        let (input, hidden, batch, steps) = (3, 4, 2, 5);
        let cfg = RnnConfig::lstm(input, hidden).bias(bias).build().unwrap();
        let weights = Weights::init(&cfg, seed);
        let w = RefWeights::new(&cfg, weights.layer(0, 0).unwrap());
        let bh = batch * hidden;
        let draw = |k: u64, n: usize| to_f64(&seeded(seed * 100 + k, n, 1.0));
        Problem {
            steps,
            batch,
            w,
            x: draw(1, steps * batch * input),
            h0: draw(2, bh),
            c0: draw(3, bh),
            dy: upstream.dy.then(|| draw(4, steps * bh)),
            dh_n: upstream.dh_n.then(|| draw(5, bh)),
            dc_n: upstream.dc_n.then(|| draw(6, bh)),
            cfg,
        }
    }

    fn loss(&self) -> f64 {
        let fwd = lstm_forward(
            &self.cfg,
            &self.w,
            &self.x,
            Some(&self.h0),
            Some(&self.c0),
            self.steps,
            self.batch,
        )
        .unwrap();
        let dot = |a: &[f64], b: &Option<Vec<f64>>| match b {
            Some(b) => a.iter().zip(b).map(|(p, q)| p * q).sum(),
            None => 0.0,
        };
        dot(&fwd.y, &self.dy) + dot(&fwd.h_n, &self.dh_n) + dot(&fwd.c_n, &self.dc_n)
    }

    fn analytic(&self) -> LstmGrads {
        let fwd = lstm_forward(
            &self.cfg,
            &self.w,
            &self.x,
            Some(&self.h0),
            Some(&self.c0),
            self.steps,
            self.batch,
        )
        .unwrap();
        lstm_backward(
            &self.cfg,
            &self.w,
            &self.x,
            Some(&self.h0),
            Some(&self.c0),
            &fwd,
            self.dy.as_deref(),
            self.dh_n.as_deref(),
            self.dc_n.as_deref(),
            self.steps,
            self.batch,
        )
        .unwrap()
    }
}

/// A tensor of the problem that the loss is differentiated by.
type Field = fn(&mut Problem) -> &mut Vec<f64>;

/// Central differences of the loss with respect to every entry of `field`.
fn numeric(p: &Problem, field: Field) -> Vec<f64> {
    let mut q = p.clone();
    let n = field(&mut q).len();
    (0..n)
        .map(|k| {
            let orig = field(&mut q)[k];
            field(&mut q)[k] = orig + EPS;
            let plus = q.loss();
            field(&mut q)[k] = orig - EPS;
            let minus = q.loss();
            field(&mut q)[k] = orig;
            (plus - minus) / (2.0 * EPS)
        })
        .collect()
}

/// Check every gradient of `p`; returns the worst `|numeric - analytic|`.
fn gradcheck(case: &str, p: &Problem) -> f64 {
    let g = p.analytic();
    let mut checks: Vec<(&str, Field, &[f64])> = vec![
        ("x", |p| &mut p.x, &g.dx),
        ("h0", |p| &mut p.h0, &g.dh0),
        ("c0", |p| &mut p.c0, &g.dc0),
        ("weight_ih", |p| &mut p.w.weight_ih, &g.d_weight_ih),
        ("weight_hh", |p| &mut p.w.weight_hh, &g.d_weight_hh),
    ];
    // Without bias the model has no bias parameters (the reference holds zeros in their place).
    if p.cfg.bias() {
        checks.push(("bias_ih", |p| &mut p.w.bias_ih, &g.d_bias_ih));
        checks.push(("bias_hh", |p| &mut p.w.bias_hh, &g.d_bias_hh));
    }
    let mut worst = 0.0f64;
    for (name, field, analytic) in checks {
        // A check against an all-zero gradient would pass vacuously.
        let largest = analytic.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(
            largest > 1e-3,
            "{case}/{name}: gradient is (nearly) zero: {largest:e}"
        );
        let num = numeric(p, field);
        assert_close(&format!("{case}/d{name}"), &num, analytic, ATOL, RTOL);
        worst = worst.max(common::max_abs_diff(&num, analytic));
    }
    eprintln!("{case}: worst |numeric - analytic| = {worst:.2e}");
    worst
}

#[test]
fn all_upstream_gradients_with_bias() {
    let up = Upstream {
        dy: true,
        dh_n: true,
        dc_n: true,
    };
    gradcheck("bias, dy+dh_n+dc_n", &Problem::new(true, up, 1));
}

#[test]
fn all_upstream_gradients_without_bias() {
    let up = Upstream {
        dy: true,
        dh_n: true,
        dc_n: true,
    };
    gradcheck("no bias, dy+dh_n+dc_n", &Problem::new(false, up, 2));
}

/// Many-to-one: only the final hidden state feeds the loss.
#[test]
fn final_hidden_state_only() {
    let up = Upstream {
        dy: false,
        dh_n: true,
        dc_n: false,
    };
    gradcheck("bias, dh_n only", &Problem::new(true, up, 3));
}

/// Sequence-to-sequence: only the per-step outputs feed the loss.
#[test]
fn outputs_only() {
    let up = Upstream {
        dy: true,
        dh_n: false,
        dc_n: false,
    };
    gradcheck("bias, dy only", &Problem::new(true, up, 4));
}

/// Only the final cell state feeds the loss: the path that never passes through `o * tanh`
/// at the last step.
#[test]
fn final_cell_state_only() {
    let up = Upstream {
        dy: false,
        dh_n: false,
        dc_n: true,
    };
    gradcheck("no bias, dc_n only", &Problem::new(false, up, 5));
}
