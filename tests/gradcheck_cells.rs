//! Finite-difference check of the CPU reference's backward pass for every cell and variant,
//! in f64, through the generic `cpu::forward` / `cpu::backward`.
//!
//! For the scalar loss `L = sum(y*dy) + sum(h_n*dh_n) + sum(c_n*dc_n)` with seeded upstream
//! gradients, every entry of `dL/dx`, `dL/dh0`, `dL/dc0` and of every parameter's gradient
//! (`weight_ih`, `weight_hh`, both biases, `weight_hr`, `peephole`) must match the central
//! difference `(L(p + eps) - L(p - eps)) / (2 eps)`. Shapes are small (I = 3, H = 4, P = 2,
//! B = 2, T = 4), so every entry is checked.
//!
//! Clips and several activations have kinks, where the loss is not differentiable. Every
//! problem is therefore drawn (from a seed sequence, deterministically) until all its
//! pre-activations, cell states and clip inputs lie at least [`KINK_MARGIN`] from every kink
//! and clip bound, and, for the clip cases, until some values are actually clipped: a check
//! that never clips would pass vacuously. Also here: the structure of the outputs (`h_n` is
//! the last `y`), numerical safety at ±1e4, and typed errors for bad shapes.

mod common;

use common::{assert_close, max_abs_diff, seeded};
use rnn_wgpu::cpu::{self, CellGrads, RefWeights, Trace, to_f64};
use rnn_wgpu::{Activation, Activations, CellKind, Error, Nonlinearity, RnnConfig, Weights};

/// Step of the central difference. Truncation error is `eps^2 * L''' / 6`, ~1e-13 here;
/// rounding error is `ulp(L) / eps`, ~1e-16 * |L| / 1e-6 = 1e-10 * |L| with |L| of order 1-10.
const EPS: f64 = 1e-6;
/// `|numeric - analytic| <= ATOL + RTOL * |analytic|`. The floor covers the ~1e-9 rounding
/// noise of the difference quotient on near-zero entries; 1e-6 relative is ~1e3 times the
/// expected error, yet any real mistake in a derivative (a missing term, a wrong gate, a
/// clip mask on the wrong side) is off by far more than a part in a million.
const ATOL: f64 = 1e-8;
const RTOL: f64 = 1e-6;
/// Minimum distance of every value from a kink or clip bound. A perturbation of `EPS` moves a
/// pre-activation by at most `EPS` times its sensitivity (below 100 for these weights and
/// inputs), so 1e-3 keeps every central difference on one smooth piece with a factor of 10
/// to spare.
const KINK_MARGIN: f64 = 1e-3;
/// Seeds tried per problem before giving up on finding one clear of every kink.
const SEED_TRIES: u64 = 40;

const INPUT: usize = 3;
const HIDDEN: usize = 4;
const PROJ: usize = 2;
const BATCH: usize = 2;
const STEPS: usize = 4;

/// The ONNX activations with parameters chosen so their kinks fall inside the range of the
/// pre-activations: every piece of every function is exercised.
fn all_activations() -> Vec<Activation> {
    vec![
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Relu,
        Activation::HardSigmoid {
            alpha: 0.4,
            beta: 0.5,
        },
        Activation::LeakyRelu { alpha: 0.1 },
        Activation::ThresholdedRelu { alpha: 0.2 },
        Activation::ScaledTanh {
            alpha: 1.5,
            beta: 0.7,
        },
        Activation::Affine {
            alpha: 0.8,
            beta: -0.1,
        },
        Activation::Elu { alpha: 0.6 },
        Activation::Softsign,
        Activation::Softplus,
    ]
}

/// Where `act` is not differentiable, in pre-activation space.
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

/// Which upstream gradients the loss includes.
#[derive(Clone, Copy)]
struct Upstream {
    dy: bool,
    dh_n: bool,
    dc_n: bool,
}

const ALL_UPSTREAM: Upstream = Upstream {
    dy: true,
    dh_n: true,
    dc_n: true,
};

/// One problem: a configuration, weights, inputs and the upstream gradients of the loss.
#[derive(Clone)]
struct Problem {
    cfg: RnnConfig,
    w: RefWeights,
    /// `[T, B, I]`.
    x: Vec<f64>,
    /// `[B, S]`.
    h0: Vec<f64>,
    /// `[B, H]`, LSTM only.
    c0: Option<Vec<f64>>,
    /// `[T, B, S]`.
    dy: Option<Vec<f64>>,
    /// `[B, S]`.
    dh_n: Option<Vec<f64>>,
    /// `[B, H]`, LSTM only.
    dc_n: Option<Vec<f64>>,
}

impl Problem {
    /// Weights from PyTorch's initialiser scaled by `w_scale`, inputs uniform in
    /// `±x_scale`, states and upstream gradients uniform in `±1`.
    fn new(cfg: &RnnConfig, seed: u64, w_scale: f64, x_scale: f32, up: Upstream) -> Problem {
        let (s, h) = (cfg.state_size(), cfg.hidden_size());
        let lstm = cfg.cell() == CellKind::Lstm;
        let mut w = RefWeights::new(cfg, Weights::init(cfg, seed).layer(0, 0).unwrap());
        for v in [
            &mut w.weight_ih,
            &mut w.weight_hh,
            &mut w.bias_ih,
            &mut w.bias_hh,
        ] {
            v.iter_mut().for_each(|e| *e *= w_scale);
        }
        let draw = |k: u64, n: usize, scale: f32| to_f64(&seeded(seed * 100 + k, n, scale));
        Problem {
            w,
            x: draw(1, STEPS * BATCH * cfg.input_size(), x_scale),
            h0: draw(2, BATCH * s, 1.0),
            c0: lstm.then(|| draw(3, BATCH * h, 1.0)),
            dy: up.dy.then(|| draw(4, STEPS * BATCH * s, 1.0)),
            dh_n: up.dh_n.then(|| draw(5, BATCH * s, 1.0)),
            dc_n: (lstm && up.dc_n).then(|| draw(6, BATCH * h, 1.0)),
            cfg: cfg.clone(),
        }
    }

    fn trace(&self) -> Trace {
        cpu::forward(
            &self.cfg,
            &self.w,
            &self.x,
            Some(&self.h0),
            self.c0.as_deref(),
            STEPS,
            BATCH,
        )
        .unwrap()
    }

    fn loss(&self) -> f64 {
        let tr = self.trace();
        let dot = |a: &[f64], b: &Option<Vec<f64>>| match b {
            Some(b) => a.iter().zip(b).map(|(p, q)| p * q).sum(),
            None => 0.0,
        };
        let c_term = match &tr.c_n {
            Some(c_n) => dot(c_n, &self.dc_n),
            None => 0.0,
        };
        dot(&tr.y, &self.dy) + dot(&tr.h_n, &self.dh_n) + c_term
    }

    fn analytic(&self) -> CellGrads {
        let tr = self.trace();
        cpu::backward(
            &self.cfg,
            &self.w,
            &self.x,
            Some(&self.h0),
            self.c0.as_deref(),
            &tr,
            self.dy.as_deref(),
            self.dh_n.as_deref(),
            self.dc_n.as_deref(),
            STEPS,
            BATCH,
        )
        .unwrap()
    }

    /// The smallest distance of any value from a kink or clip bound, and how many values the
    /// gate clip and the cell clip clamp.
    fn kink_report(&self) -> KinkReport {
        let tr = self.trace();
        let cfg = &self.cfg;
        let acts = cfg.activations();
        let h = cfg.hidden_size();
        // The activation of each `H`-wide block of the pre-activations.
        let blocks = match cfg.cell() {
            CellKind::Lstm => vec![acts.gate, acts.gate, acts.cell, acts.gate],
            CellKind::Gru => vec![acts.gate, acts.gate, acts.cell],
            _ => vec![acts.cell],
        };
        let clip = cfg.gate_clip().map(f64::from);
        let mut r = KinkReport {
            margin: f64::INFINITY,
            gate_clipped: 0,
            cell_clipped: 0,
        };
        for (e, &p) in tr.pre.iter().enumerate() {
            let act = blocks[(e / h) % blocks.len()];
            let mut points = kinks(act);
            if let Some(c) = clip {
                points.extend([-c, c]);
                r.gate_clipped += usize::from(p.abs() > c);
            }
            for k in points {
                r.margin = r.margin.min((p - k).abs());
            }
        }
        if cfg.cell() == CellKind::Lstm {
            for &c in &tr.c {
                for k in kinks(acts.hidden) {
                    r.margin = r.margin.min((c - k).abs());
                }
            }
            if let Some((lo, hi)) = cfg.cell_clip() {
                let (lo, hi) = (lo as f64, hi as f64);
                for &c in &tr.c_unclipped {
                    r.margin = r.margin.min((c - lo).abs()).min((c - hi).abs());
                    r.cell_clipped += usize::from(c < lo || c > hi);
                }
            }
        }
        r
    }
}

struct KinkReport {
    margin: f64,
    gate_clipped: usize,
    cell_clipped: usize,
}

/// How a case draws its problem.
#[derive(Clone, Copy)]
struct Draw {
    /// Scale of the initialiser's weights (larger pushes pre-activations past clips and kinks).
    w_scale: f64,
    /// Range of the inputs.
    x_scale: f32,
    up: Upstream,
}

const DEFAULT_DRAW: Draw = Draw {
    w_scale: 1.0,
    x_scale: 1.0,
    up: ALL_UPSTREAM,
};

/// The first problem from seeds `seed, seed+1, ...` that is clear of every kink, clips
/// something where the configuration clips, and has no gradient tensor that vanishes (with
/// dead ThresholdedRelu or Relu gates a whole tensor can be exactly zero, and a check against
/// zero would pass vacuously).
fn draw_problem(case: &str, cfg: &RnnConfig, seed: u64, d: Draw) -> Problem {
    for s in seed..seed + SEED_TRIES {
        let p = Problem::new(cfg, s, d.w_scale, d.x_scale, d.up);
        let r = p.kink_report();
        let gate_ok = cfg.gate_clip().is_none() || r.gate_clipped > 0;
        let cell_ok = cfg.cell_clip().is_none() || r.cell_clipped > 0;
        if r.margin >= KINK_MARGIN && gate_ok && cell_ok && vanishing(&p).is_none() {
            return p;
        }
    }
    panic!(
        "{case}: no seed in {seed}..{} gives a problem clear of kinks",
        seed + SEED_TRIES
    );
}

/// Below this, a gradient tensor counts as vanishing.
const VANISHING: f64 = 1e-3;

/// The first gradient tensor of `p` whose every entry is below [`VANISHING`].
fn vanishing(p: &Problem) -> Option<&'static str> {
    checked_tensors(p, &p.analytic())
        .into_iter()
        .find(|(_, _, g)| g.iter().all(|v| v.abs() <= VANISHING))
        .map(|(name, _, _)| name)
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

/// Every tensor the loss is differentiated by, with its analytic gradient from `g`.
fn checked_tensors<'g>(p: &Problem, g: &'g CellGrads) -> Vec<(&'static str, Field, &'g [f64])> {
    let mut checks: Vec<(&str, Field, &[f64])> = vec![
        ("x", |p| &mut p.x, &g.dx),
        ("h0", |p| &mut p.h0, &g.dh0),
        ("weight_ih", |p| &mut p.w.weight_ih, &g.d_weight_ih),
        ("weight_hh", |p| &mut p.w.weight_hh, &g.d_weight_hh),
    ];
    // Without bias the model has no bias parameters (the reference holds zeros in their place).
    if p.cfg.bias() {
        checks.push(("bias_ih", |p| &mut p.w.bias_ih, &g.d_bias_ih));
        checks.push(("bias_hh", |p| &mut p.w.bias_hh, &g.d_bias_hh));
    }
    if let Some(dc0) = &g.dc0 {
        checks.push(("c0", |p| p.c0.as_mut().unwrap(), dc0));
    }
    if let Some(d) = &g.d_weight_hr {
        checks.push(("weight_hr", |p| p.w.weight_hr.as_mut().unwrap(), d));
    }
    if let Some(d) = &g.d_peephole {
        checks.push(("peephole", |p| p.w.peephole.as_mut().unwrap(), d));
    }
    checks
}

/// Check every gradient of `p`; returns the worst `|numeric - analytic|`.
fn gradcheck(case: &str, p: &Problem) -> f64 {
    let g = p.analytic();
    let cfg = &p.cfg;
    assert_eq!(g.dc0.is_some(), p.c0.is_some(), "{case}: dc0");
    assert_eq!(g.d_weight_hr.is_some(), cfg.proj_size().is_some(), "{case}");
    assert_eq!(g.d_peephole.is_some(), cfg.peepholes(), "{case}");
    // A check against an all-zero gradient would pass vacuously.
    assert_eq!(vanishing(p), None, "{case}: a gradient is (nearly) zero");
    let (mut worst, mut used) = (0.0f64, 0.0f64);
    for (name, field, analytic) in checked_tensors(p, &g) {
        let num = numeric(p, field);
        assert_close(&format!("{case}/d{name}"), &num, analytic, ATOL, RTOL);
        worst = worst.max(max_abs_diff(&num, analytic));
        for (n, a) in num.iter().zip(analytic) {
            used = used.max((n - a).abs() / (ATOL + RTOL * a.abs()));
        }
    }
    eprintln!(
        "{case}: worst |numeric - analytic| = {worst:.2e} ({:.0}% of the tolerance)",
        100.0 * used
    );
    worst
}

/// Draw a problem for `cfg` and check it.
fn check(case: &str, cfg: RnnConfig, seed: u64, d: Draw) -> f64 {
    let p = draw_problem(case, &cfg, seed, d);
    gradcheck(case, &p)
}

fn lstm() -> rnn_wgpu::RnnConfigBuilder {
    RnnConfig::lstm(INPUT, HIDDEN)
}

fn gru(reset_after: bool) -> rnn_wgpu::RnnConfigBuilder {
    RnnConfig::gru(INPUT, HIDDEN).linear_before_reset(reset_after)
}

fn rnn(nl: Nonlinearity) -> rnn_wgpu::RnnConfigBuilder {
    RnnConfig::rnn(INPUT, HIDDEN, nl)
}

// ---- plain RNN ----

#[test]
fn rnn_tanh() {
    check(
        "rnn tanh",
        rnn(Nonlinearity::Tanh).build().unwrap(),
        1,
        DEFAULT_DRAW,
    );
}

#[test]
fn rnn_relu() {
    let cfg = rnn(Nonlinearity::Relu).build().unwrap();
    check("rnn relu", cfg, 2, DEFAULT_DRAW);
    let cfg = rnn(Nonlinearity::Relu).bias(false).build().unwrap();
    check("rnn relu, no bias", cfg, 3, DEFAULT_DRAW);
}

#[test]
fn rnn_gate_clip() {
    let cfg = rnn(Nonlinearity::Tanh).gate_clip(0.5).build().unwrap();
    check("rnn tanh, clip 0.5", cfg, 4, DEFAULT_DRAW);
}

/// The RNN's one activation, every ONNX function.
#[test]
fn rnn_activations() {
    for (k, act) in all_activations().into_iter().enumerate() {
        let cfg = rnn(Nonlinearity::Tanh)
            .activations(Activations {
                cell: act,
                ..Activations::default()
            })
            .build()
            .unwrap();
        check(
            &format!("rnn {act:?}"),
            cfg,
            100 + 50 * k as u64,
            DEFAULT_DRAW,
        );
    }
}

// ---- GRU ----

#[test]
fn gru_reset_after() {
    check(
        "gru reset after",
        gru(true).build().unwrap(),
        5,
        DEFAULT_DRAW,
    );
    let cfg = gru(true).bias(false).build().unwrap();
    check("gru reset after, no bias", cfg, 6, DEFAULT_DRAW);
}

#[test]
fn gru_reset_before() {
    check(
        "gru reset before",
        gru(false).build().unwrap(),
        7,
        DEFAULT_DRAW,
    );
    let cfg = gru(false).bias(false).build().unwrap();
    check("gru reset before, no bias", cfg, 8, DEFAULT_DRAW);
}

#[test]
fn gru_gate_clip() {
    for reset_after in [true, false] {
        let cfg = gru(reset_after).gate_clip(0.4).build().unwrap();
        let case = format!("gru clip 0.4, reset after = {reset_after}");
        check(&case, cfg, 9, DEFAULT_DRAW);
    }
}

/// Every ONNX activation as the gate activation (r, z) and as the cell activation (n), in
/// both reset forms.
#[test]
fn gru_activations() {
    for reset_after in [true, false] {
        for (k, act) in all_activations().into_iter().enumerate() {
            let roles = [
                (
                    "gate",
                    Activations {
                        gate: act,
                        ..Activations::default()
                    },
                ),
                (
                    "cell",
                    Activations {
                        cell: act,
                        ..Activations::default()
                    },
                ),
            ];
            for (r, (role, acts)) in roles.into_iter().enumerate() {
                let cfg = gru(reset_after).activations(acts).build().unwrap();
                let case = format!("gru (reset after = {reset_after}) {role} {act:?}");
                check(
                    &case,
                    cfg,
                    1000 + 100 * k as u64 + 50 * r as u64,
                    DEFAULT_DRAW,
                );
            }
        }
    }
}

// ---- LSTM ----

#[test]
fn lstm_plain() {
    check("lstm plain", lstm().build().unwrap(), 10, DEFAULT_DRAW);
}

/// The plain-LSTM functions (`lstm_forward`/`lstm_backward`) are thin wrappers over the
/// generic path: they agree with it (to rounding, should they ever diverge in summation order).
#[test]
fn lstm_plain_matches_lstm_backward() {
    let cfg = lstm().build().unwrap();
    let p = draw_problem("plain", &cfg, 11, DEFAULT_DRAW);
    let c0 = p.c0.as_deref();
    let tr = p.trace();
    let fwd = cpu::lstm_forward(&cfg, &p.w, &p.x, Some(&p.h0), c0, STEPS, BATCH).unwrap();
    assert_eq!(fwd.y, tr.y);
    assert_eq!(fwd.gates, tr.gates);
    assert_eq!(Some(&fwd.c_n), tr.c_n.as_ref());
    let old = cpu::lstm_backward(
        &cfg,
        &p.w,
        &p.x,
        Some(&p.h0),
        c0,
        &fwd,
        p.dy.as_deref(),
        p.dh_n.as_deref(),
        p.dc_n.as_deref(),
        STEPS,
        BATCH,
    )
    .unwrap();
    let new = p.analytic();
    // Both sum the same terms in f64 in a different order: 1e-12 is ~1e4 ulps.
    let pairs: [(&str, &[f64], &[f64]); 7] = [
        ("dx", &new.dx, &old.dx),
        ("dh0", &new.dh0, &old.dh0),
        ("dc0", new.dc0.as_ref().unwrap(), &old.dc0),
        ("d_weight_ih", &new.d_weight_ih, &old.d_weight_ih),
        ("d_weight_hh", &new.d_weight_hh, &old.d_weight_hh),
        ("d_bias_ih", &new.d_bias_ih, &old.d_bias_ih),
        ("d_bias_hh", &new.d_bias_hh, &old.d_bias_hh),
    ];
    for (name, a, b) in pairs {
        assert_close(name, a, b, 1e-12, 1e-12);
    }
}

#[test]
fn lstm_peepholes() {
    let cfg = lstm().peepholes(true).build().unwrap();
    check("lstm peepholes", cfg, 12, DEFAULT_DRAW);
}

#[test]
fn lstm_input_forget() {
    let cfg = lstm().input_forget(true).build().unwrap();
    let p = draw_problem("lstm input_forget", &cfg, 13, DEFAULT_DRAW);
    gradcheck("lstm input_forget", &p);
    // The forget gate's weights are unused: exactly zero gradient, rows H..2H.
    let g = p.analytic();
    let h = HIDDEN;
    assert!(
        g.d_weight_ih[h * INPUT..2 * h * INPUT]
            .iter()
            .all(|&v| v == 0.0)
    );
    assert!(
        g.d_weight_hh[h * HIDDEN..2 * h * HIDDEN]
            .iter()
            .all(|&v| v == 0.0)
    );
    assert!(g.d_bias_ih[h..2 * h].iter().all(|&v| v == 0.0));
}

#[test]
fn lstm_input_forget_with_peepholes() {
    let cfg = lstm().input_forget(true).peepholes(true).build().unwrap();
    let p = draw_problem("lstm input_forget + peepholes", &cfg, 14, DEFAULT_DRAW);
    gradcheck("lstm input_forget + peepholes", &p);
    // f's peephole is unused too.
    let dp = p.analytic().d_peephole.unwrap();
    assert!(dp[HIDDEN..2 * HIDDEN].iter().all(|&v| v == 0.0));
}

#[test]
fn lstm_projection() {
    let cfg = lstm().proj_size(PROJ).build().unwrap();
    check("lstm proj_size 2", cfg, 15, DEFAULT_DRAW);
    let cfg = lstm().proj_size(PROJ).bias(false).build().unwrap();
    check("lstm proj_size 2, no bias", cfg, 16, DEFAULT_DRAW);
}

#[test]
fn lstm_gate_clip() {
    // PyTorch-scale weights and inputs in ±1.5 put the pre-activations on both sides of 0.6:
    // both the clipped (zero-gradient) and the passing path get checked.
    let d = Draw {
        x_scale: 1.5,
        ..DEFAULT_DRAW
    };
    let cfg = lstm().gate_clip(0.6).build().unwrap();
    let p = draw_problem("lstm gate clip", &cfg, 17, d);
    let (clipped, total) = (p.kink_report().gate_clipped, STEPS * BATCH * 4 * HIDDEN);
    eprintln!("lstm gate clip: {clipped} of {total} pre-activations clipped");
    assert!(clipped >= total / 8 && clipped <= total * 7 / 8);
    gradcheck("lstm gate clip 0.6", &p);
}

#[test]
fn lstm_cell_clip() {
    // c0 in ±1 and a narrow band: some cell states leave it.
    let cfg = lstm().cell_clip(-0.3, 0.4).build().unwrap();
    let p = draw_problem("lstm cell clip", &cfg, 18, DEFAULT_DRAW);
    let r = p.kink_report();
    eprintln!(
        "lstm cell clip: {} of {} cell states clipped",
        r.cell_clipped,
        STEPS * BATCH * HIDDEN
    );
    gradcheck("lstm cell clip [-0.3, 0.4]", &p);
}

/// Every ONNX activation in each LSTM role: gate (i, f, o), cell (g), hidden (h(c)).
#[test]
fn lstm_activations() {
    for (k, act) in all_activations().into_iter().enumerate() {
        let roles = [
            (
                "gate",
                Activations {
                    gate: act,
                    ..Activations::default()
                },
            ),
            (
                "cell",
                Activations {
                    cell: act,
                    ..Activations::default()
                },
            ),
            (
                "hidden",
                Activations {
                    hidden: act,
                    ..Activations::default()
                },
            ),
        ];
        for (r, (role, acts)) in roles.into_iter().enumerate() {
            let cfg = lstm().activations(acts).build().unwrap();
            let case = format!("lstm {role} {act:?}");
            check(
                &case,
                cfg,
                5000 + 100 * k as u64 + 40 * r as u64,
                DEFAULT_DRAW,
            );
        }
    }
}

/// Every LSTM variant at once, so that their interactions are covered: the o peephole sees
/// the clipped cell state, the projection feeds the recurrence, f = 1 - i under clips.
#[test]
fn lstm_all_variants_together() {
    let acts = Activations {
        gate: Activation::HardSigmoid {
            alpha: 0.4,
            beta: 0.5,
        },
        cell: Activation::Softsign,
        hidden: Activation::ScaledTanh {
            alpha: 1.5,
            beta: 0.7,
        },
    };
    let d = Draw {
        w_scale: 2.0,
        x_scale: 2.0,
        ..DEFAULT_DRAW
    };
    for input_forget in [false, true] {
        let cfg = lstm()
            .peepholes(true)
            .input_forget(input_forget)
            .proj_size(PROJ)
            .gate_clip(1.5)
            .cell_clip(-0.5, 0.6)
            .activations(acts)
            .build()
            .unwrap();
        let case = format!("lstm all variants, input_forget = {input_forget}");
        check(&case, cfg, 19, d);
    }
}

/// Losses that see only part of the outputs: many-to-one (`dh_n`), sequence (`dy`), and the
/// LSTM's cell state alone (`dc_n`).
#[test]
fn partial_losses() {
    let cells = [
        ("rnn", rnn(Nonlinearity::Tanh).build().unwrap()),
        ("gru after", gru(true).build().unwrap()),
        ("gru before", gru(false).build().unwrap()),
        (
            "lstm peep+proj",
            lstm().peepholes(true).proj_size(PROJ).build().unwrap(),
        ),
    ];
    let ups = [
        (
            "dy",
            Upstream {
                dy: true,
                dh_n: false,
                dc_n: false,
            },
        ),
        (
            "dh_n",
            Upstream {
                dy: false,
                dh_n: true,
                dc_n: false,
            },
        ),
        (
            "dc_n",
            Upstream {
                dy: false,
                dh_n: false,
                dc_n: true,
            },
        ),
    ];
    for (c, (name, cfg)) in cells.into_iter().enumerate() {
        for (u, (up_name, up)) in ups.into_iter().enumerate() {
            if up_name == "dc_n" && cfg.cell() != CellKind::Lstm {
                continue;
            }
            let d = Draw { up, ..DEFAULT_DRAW };
            check(
                &format!("{name}, {up_name} only"),
                cfg.clone(),
                300 + 10 * c as u64 + u as u64,
                d,
            );
        }
    }
}

// ---- structure, safety, errors ----

/// Every configuration exercised above, for the structural and error tests.
fn every_config() -> Vec<RnnConfig> {
    vec![
        rnn(Nonlinearity::Tanh).build().unwrap(),
        rnn(Nonlinearity::Relu).gate_clip(1.0).build().unwrap(),
        gru(true).build().unwrap(),
        gru(false).gate_clip(1.0).build().unwrap(),
        lstm().build().unwrap(),
        lstm()
            .peepholes(true)
            .input_forget(true)
            .proj_size(PROJ)
            .gate_clip(1.0)
            .cell_clip(-1.0, 1.0)
            .build()
            .unwrap(),
    ]
}

#[test]
fn final_state_is_the_last_output() {
    for cfg in every_config() {
        let p = Problem::new(&cfg, 7, 1.0, 1.0, ALL_UPSTREAM);
        let tr = p.trace();
        let bs = BATCH * cfg.state_size();
        assert_eq!(tr.y.len(), STEPS * bs);
        assert_eq!(tr.h_n, tr.y[(STEPS - 1) * bs..], "{cfg:?}");
        match cfg.cell() {
            CellKind::Lstm => {
                let bh = BATCH * HIDDEN;
                assert_eq!(tr.c_n.as_deref(), Some(&tr.c[(STEPS - 1) * bh..]));
            }
            _ => assert!(tr.c_n.is_none()),
        }
    }
}

/// Inputs of ±1e4 saturate every activation (and overflow nothing): forward and backward
/// stay finite for every function in every role.
#[test]
fn extreme_inputs_stay_finite() {
    let mut cfgs = every_config();
    for act in all_activations() {
        cfgs.push(
            lstm()
                .activations(Activations {
                    gate: act,
                    cell: act,
                    hidden: act,
                })
                .build()
                .unwrap(),
        );
        let gru_acts = Activations {
            gate: act,
            cell: act,
            ..Activations::default()
        };
        cfgs.push(gru(false).activations(gru_acts).build().unwrap());
        cfgs.push(
            rnn(Nonlinearity::Tanh)
                .activations(Activations {
                    cell: act,
                    ..Activations::default()
                })
                .build()
                .unwrap(),
        );
    }
    for cfg in cfgs {
        let mut p = Problem::new(&cfg, 8, 1.0, 1.0, ALL_UPSTREAM);
        // Alternate +1e4 and -1e4.
        for (k, v) in p.x.iter_mut().enumerate() {
            *v = if k % 2 == 0 { 1e4 } else { -1e4 };
        }
        let tr = p.trace();
        let g = p.analytic();
        let finite = |v: &[f64]| v.iter().all(|e| e.is_finite());
        assert!(finite(&tr.y) && finite(&tr.h_n), "{cfg:?}: forward");
        assert!(finite(&g.dx) && finite(&g.dh0), "{cfg:?}: backward");
        assert!(
            finite(&g.d_weight_ih) && finite(&g.d_weight_hh),
            "{cfg:?}: backward"
        );
    }
}

fn shape_error<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
    match r {
        Err(Error::ShapeMismatch { name, .. }) => name,
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }
}

#[test]
fn bad_shapes_get_typed_errors() {
    for cfg in every_config() {
        let p = Problem::new(&cfg, 9, 1.0, 1.0, ALL_UPSTREAM);
        let (s, h) = (cfg.state_size(), cfg.hidden_size());
        let c0 = p.c0.as_deref();
        let fwd = |x: &[f64], h0: &[f64], steps, batch| {
            cpu::forward(&cfg, &p.w, x, Some(h0), c0, steps, batch)
        };
        assert!(matches!(
            fwd(&p.x, &p.h0, 0, BATCH),
            Err(Error::ZeroSize(_))
        ));
        assert!(matches!(
            fwd(&p.x, &p.h0, STEPS, 0),
            Err(Error::ZeroSize(_))
        ));
        assert_eq!(shape_error(fwd(&p.x[1..], &p.h0, STEPS, BATCH)), "x");
        assert_eq!(shape_error(fwd(&p.x, &p.h0, STEPS + 1, BATCH)), "x");
        assert_eq!(
            shape_error(fwd(&p.x, &vec![0.0; BATCH * (s + 1)], STEPS, BATCH)),
            "h0"
        );
        let mut w = p.w.clone();
        w.weight_hh.pop();
        assert_eq!(
            shape_error(cpu::forward(&cfg, &w, &p.x, None, None, STEPS, BATCH)),
            "weight_hh"
        );

        let tr = p.trace();
        let bwd = |tr: &Trace, dy: &[f64], dh_n: &[f64]| {
            cpu::backward(
                &cfg,
                &p.w,
                &p.x,
                Some(&p.h0),
                c0,
                tr,
                Some(dy),
                Some(dh_n),
                None,
                STEPS,
                BATCH,
            )
        };
        let dy = p.dy.as_deref().unwrap();
        let dh_n = p.dh_n.as_deref().unwrap();
        assert!(bwd(&tr, dy, dh_n).is_ok());
        assert_eq!(shape_error(bwd(&tr, &dy[1..], dh_n)), "dy");
        assert_eq!(shape_error(bwd(&tr, dy, &dh_n[1..])), "dh_n");
        let mut short = tr.clone();
        short.pre.pop();
        assert_eq!(shape_error(bwd(&short, dy, dh_n)), "trace.pre");

        match cfg.cell() {
            CellKind::Lstm => {
                let bad_c0 = vec![0.0; BATCH * (h + 1)];
                assert_eq!(
                    shape_error(cpu::forward(
                        &cfg,
                        &p.w,
                        &p.x,
                        None,
                        Some(&bad_c0),
                        STEPS,
                        BATCH
                    )),
                    "c0"
                );
            }
            _ => {
                // A GRU or RNN has no cell state to start from or to differentiate.
                let c = vec![0.0; BATCH * h];
                let r = cpu::forward(&cfg, &p.w, &p.x, None, Some(&c), STEPS, BATCH);
                assert!(matches!(r, Err(Error::InvalidConfig(_))), "{r:?}");
                let r = cpu::backward(
                    &cfg,
                    &p.w,
                    &p.x,
                    None,
                    None,
                    &tr,
                    None,
                    None,
                    Some(&c),
                    STEPS,
                    BATCH,
                );
                assert!(matches!(r, Err(Error::InvalidConfig(_))), "{r:?}");
            }
        }
    }
}

#[test]
fn variant_tensors_must_match_the_configuration() {
    let peep = lstm().peepholes(true).build().unwrap();
    let p = Problem::new(&peep, 10, 1.0, 1.0, ALL_UPSTREAM);
    let mut w = p.w.clone();
    w.peephole = None;
    let r = cpu::forward(&peep, &w, &p.x, None, None, STEPS, BATCH);
    assert!(
        matches!(r, Err(Error::MissingTensor(ref n)) if n == "peephole"),
        "{r:?}"
    );

    let plain = lstm().build().unwrap();
    let mut w = Problem::new(&plain, 10, 1.0, 1.0, ALL_UPSTREAM).w;
    w.weight_hr = Some(vec![0.0; PROJ * HIDDEN]);
    let r = cpu::forward(&plain, &w, &p.x, None, None, STEPS, BATCH);
    assert!(matches!(r, Err(Error::InvalidConfig(_))), "{r:?}");

    // The plain-LSTM functions refuse variants instead of computing them wrongly.
    let r = cpu::lstm_forward(&peep, &p.w, &p.x, None, None, STEPS, BATCH);
    assert!(matches!(r, Err(Error::Unsupported(_))), "{r:?}");
}

#[test]
fn step_functions_check_their_arguments() {
    let g = gru(true).build().unwrap();
    let r = rnn(Nonlinearity::Tanh).build().unwrap();
    let h = HIDDEN;
    let w_gru = vec![0.1; 3 * h * h];
    let b_gru = vec![0.0; 3 * h];
    let gx = vec![0.0; BATCH * 3 * h];
    let hp = vec![0.0; BATCH * h];
    assert!(cpu::gru_step(&g, &gx, &hp, &w_gru, &b_gru, BATCH).is_ok());
    assert_eq!(
        shape_error(cpu::gru_step(&g, &gx[1..], &hp, &w_gru, &b_gru, BATCH)),
        "gx_t"
    );
    assert_eq!(
        shape_error(cpu::gru_step(&g, &gx, &hp, &w_gru[1..], &b_gru, BATCH)),
        "weight_hh"
    );
    // A step function of one cell refuses another cell's configuration.
    let wrong = cpu::gru_step(&r, &gx, &hp, &w_gru, &b_gru, BATCH);
    assert!(matches!(wrong, Err(Error::InvalidConfig(_))), "{wrong:?}");
    let w_rnn = vec![0.1; h * h];
    let b_rnn = vec![0.0; h];
    assert!(cpu::rnn_step(&r, &hp, &hp, &w_rnn, &b_rnn, BATCH).is_ok());
    assert_eq!(
        shape_error(cpu::rnn_step_backward(&r, &hp, &hp[1..], &w_rnn, BATCH)),
        "pre_t"
    );
}

/// One step of each cell recomputed here from its defining equations, element by element,
/// independently of the reference's loops: the finite differences prove that backward
/// matches forward, this pins forward to the documented semantics.
#[test]
fn one_step_follows_the_equations() {
    let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
    // HardSigmoid with the f32 parameters the configuration holds.
    let hs = |v: f64| (0.4f32 as f64 * v + 0.5f32 as f64).clamp(0.0, 1.0);
    let (i_sz, h) = (INPUT, HIDDEN);
    // `W[row] · v` for a row of a row-major matrix.
    let dot = |w: &[f64], row: usize, v: &[f64]| -> f64 {
        v.iter()
            .enumerate()
            .map(|(k, a)| a * w[row * v.len() + k])
            .sum()
    };

    // GRU, both reset forms.
    for reset_after in [true, false] {
        let cfg = gru(reset_after).build().unwrap();
        let p = Problem::new(&cfg, 21, 1.0, 1.0, ALL_UPSTREAM);
        let tr = cpu::forward(&cfg, &p.w, &p.x[..i_sz], Some(&p.h0[..h]), None, 1, 1).unwrap();
        let (x, hp, w) = (&p.x[..i_sz], &p.h0[..h], &p.w);
        let gi = |n: usize| dot(&w.weight_ih, n, x) + w.bias_ih[n];
        let gh = |n: usize| dot(&w.weight_hh, n, hp) + w.bias_hh[n];
        let r: Vec<f64> = (0..h).map(|j| sig(gi(j) + gh(j))).collect();
        for j in 0..h {
            let z = sig(gi(h + j) + gh(h + j));
            let n = if reset_after {
                (gi(2 * h + j) + r[j] * gh(2 * h + j)).tanh()
            } else {
                let rh: Vec<f64> = (0..h).map(|k| r[k] * hp[k]).collect();
                (gi(2 * h + j) + dot(&w.weight_hh, 2 * h + j, &rh) + w.bias_hh[2 * h + j]).tanh()
            };
            let want = (1.0 - z) * n + z * hp[j];
            assert!(
                (tr.y[j] - want).abs() < 1e-14,
                "gru after={reset_after} unit {j}"
            );
        }
    }

    // RNN relu.
    let cfg = rnn(Nonlinearity::Relu).build().unwrap();
    let p = Problem::new(&cfg, 22, 1.0, 1.0, ALL_UPSTREAM);
    let tr = cpu::forward(&cfg, &p.w, &p.x[..i_sz], Some(&p.h0[..h]), None, 1, 1).unwrap();
    for j in 0..h {
        let w = &p.w;
        let pre = dot(&w.weight_ih, j, &p.x[..i_sz])
            + w.bias_ih[j]
            + dot(&w.weight_hh, j, &p.h0[..h])
            + w.bias_hh[j];
        assert!((tr.y[j] - pre.max(0.0)).abs() < 1e-14, "rnn unit {j}");
    }

    // LSTM with peepholes, gate clip, cell clip, projection and a non-default gate function.
    let (clip, lo, hi) = (0.8f32, -0.3f32, 0.4f32);
    let cfg = lstm()
        .peepholes(true)
        .proj_size(PROJ)
        .gate_clip(clip)
        .cell_clip(lo, hi)
        .activations(Activations {
            gate: Activation::HardSigmoid {
                alpha: 0.4,
                beta: 0.5,
            },
            ..Activations::default()
        })
        .build()
        .unwrap();
    let p = Problem::new(&cfg, 23, 2.0, 2.0, ALL_UPSTREAM);
    let (x, hp, cp) = (&p.x[..i_sz], &p.h0[..PROJ], &p.c0.as_ref().unwrap()[..h]);
    let tr = cpu::forward(&cfg, &p.w, x, Some(hp), Some(cp), 1, 1).unwrap();
    let w = &p.w;
    let pw = w.peephole.as_ref().unwrap();
    let pre =
        |n: usize| dot(&w.weight_ih, n, x) + w.bias_ih[n] + dot(&w.weight_hh, n, hp) + w.bias_hh[n];
    let (clip, lo, hi) = (clip as f64, lo as f64, hi as f64);
    let cl = |v: f64| v.clamp(-clip, clip);
    let mut h_raw = vec![0.0; h];
    for j in 0..h {
        let i = hs(cl(pre(j) + pw[j] * cp[j]));
        let f = hs(cl(pre(h + j) + pw[h + j] * cp[j]));
        let g = cl(pre(2 * h + j)).tanh();
        let c = (f * cp[j] + i * g).clamp(lo, hi);
        let o = hs(cl(pre(3 * h + j) + pw[2 * h + j] * c));
        assert!(
            (tr.c_n.as_ref().unwrap()[j] - c).abs() < 1e-14,
            "lstm c unit {j}"
        );
        h_raw[j] = o * c.tanh();
    }
    let wr = w.weight_hr.as_ref().unwrap();
    for q in 0..PROJ {
        let want = dot(wr, q, &h_raw);
        assert!((tr.y[q] - want).abs() < 1e-14, "lstm projected unit {q}");
    }
}
