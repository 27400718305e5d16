//! GPU backward (BPTT) against the f64 CPU reference and against PyTorch autograd.
//!
//! The same shape grid as the forward tests ([`common::GRID`]): every one of
//! B ∈ {1, 3, 17, 64}, H ∈ {1, 13, 64, 256}, I ∈ {1, 7, 256}, T ∈ {1, 50, 1000} appears.

mod common;

use common::fixtures::{self, all_cases};
use common::{Case, GRID, assert_close, gpu::ctx, max_abs_diff, seeded};
use rnn_wgpu::cpu::{self, RefWeights, to_f64};
use rnn_wgpu::{Context, Error, GpuTensor, GradMode, HostGrads, Rnn, RnnConfig, State, Weights};

/// Gradient tolerance, relative to the largest magnitude of the reference tensor.
///
/// Every gradient is a sum of f32 products: over `4H` terms for `dx`/`dh`, and over all
/// `T*B` rows for the weight gradients (up to 64 000 here). f32 summation error grows like
/// `sqrt(n) * 6e-8` relative to the sum of magnitudes, and BPTT feeds each step's rounding
/// into the next through `W_hh` (damped by f < 1). We therefore compare against the tensor's
/// scale: `|gpu - ref| <= 1e-4 * max|ref| + 1e-6`. An indexing, gate-order or
/// missing-term bug gives errors of order max|ref| itself.
const SCALE_RTOL: f64 = 1e-4;
const ATOL: f64 = 1e-6;

fn check_scaled(name: &str, got: &[f32], want: &[f64]) {
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert_close(name, got, want, ATOL + SCALE_RTOL * scale, 0.0);
}

/// Inputs of one seeded problem.
struct Problem {
    cfg: RnnConfig,
    w: Weights,
    t: usize,
    b: usize,
    x: Vec<f32>,
    h0: Vec<f32>,
    c0: Vec<f32>,
    dy: Vec<f32>,
    dh_n: Vec<f32>,
    dc_n: Vec<f32>,
}

impl Problem {
    fn new(c: &Case, seed: u64) -> Problem {
        let cfg = RnnConfig::lstm(c.input, c.hidden)
            .bias(c.bias)
            .build()
            .unwrap();
        let (t, b, h) = (c.steps, c.batch, c.hidden);
        Problem {
            w: Weights::init(&cfg, seed),
            x: seeded(seed + 1, t * b * c.input, 1.0),
            h0: seeded(seed + 2, b * h, 1.0),
            c0: seeded(seed + 3, b * h, 1.0),
            dy: seeded(seed + 4, t * b * h, 1.0),
            dh_n: seeded(seed + 5, b * h, 1.0),
            dc_n: seeded(seed + 6, b * h, 1.0),
            cfg,
            t,
            b,
        }
    }

    /// GPU forward_train + backward with all three upstream gradients.
    fn gpu(&self, ctx: &Context, rnn: &Rnn) -> HostGrads {
        let (t, b, h, i) = (
            self.t,
            self.b,
            self.cfg.hidden_size(),
            self.cfg.input_size(),
        );
        let up = |v: &[f32], s: &[usize]| GpuTensor::upload(ctx, v, s).unwrap();
        let x = up(&self.x, &[t, b, i]);
        let state = State {
            h: up(&self.h0, &[1, b, h]),
            c: Some(up(&self.c0, &[1, b, h])),
        };
        let (_, tape) = rnn.forward_train(&x, Some(&state)).unwrap();
        let dy = up(&self.dy, &[t, b, h]);
        let dh_n = up(&self.dh_n, &[1, b, h]);
        let dc_n = up(&self.dc_n, &[1, b, h]);
        rnn.backward(&tape, Some(&dy), Some(&dh_n), Some(&dc_n))
            .unwrap()
            .to_host(rnn)
            .unwrap()
    }

    fn reference(&self) -> cpu::LstmGrads {
        let rw = RefWeights::new(&self.cfg, self.w.layer(0, 0).unwrap());
        let (x, h0, c0) = (to_f64(&self.x), to_f64(&self.h0), to_f64(&self.c0));
        let fwd =
            cpu::lstm_forward(&self.cfg, &rw, &x, Some(&h0), Some(&c0), self.t, self.b).unwrap();
        cpu::lstm_backward(
            &self.cfg,
            &rw,
            &x,
            Some(&h0),
            Some(&c0),
            &fwd,
            Some(&to_f64(&self.dy)),
            Some(&to_f64(&self.dh_n)),
            Some(&to_f64(&self.dc_n)),
            self.t,
            self.b,
        )
        .unwrap()
    }
}

fn compare(name: &str, g: &HostGrads, r: &cpu::LstmGrads, bias: bool) {
    check_scaled(&format!("{name} dx"), &g.dx, &r.dx);
    check_scaled(&format!("{name} dh0"), &g.dh0, &r.dh0);
    check_scaled(&format!("{name} dc0"), g.dc0.as_ref().unwrap(), &r.dc0);
    check_scaled(
        &format!("{name} d weight_ih"),
        &g.params[0].weight_ih,
        &r.d_weight_ih,
    );
    check_scaled(
        &format!("{name} d weight_hh"),
        &g.params[0].weight_hh,
        &r.d_weight_hh,
    );
    if bias {
        check_scaled(
            &format!("{name} d bias_ih"),
            g.params[0].bias_ih.as_ref().unwrap(),
            &r.d_bias_ih,
        );
        check_scaled(
            &format!("{name} d bias_hh"),
            g.params[0].bias_hh.as_ref().unwrap(),
            &r.d_bias_hh,
        );
    } else {
        assert!(g.params[0].bias_ih.is_none() && g.params[0].bias_hh.is_none());
    }
}

#[test]
fn gradients_match_reference_on_the_grid() {
    let Some(ctx) = ctx() else { return };
    for (n, c) in GRID.iter().enumerate() {
        let name = format!(
            "I={} H={} B={} T={} bias={}",
            c.input, c.hidden, c.batch, c.steps, c.bias
        );
        let p = Problem::new(c, 200 + n as u64);
        let rnn = Rnn::with_config(ctx, &p.cfg, &p.w).unwrap();
        let g = p.gpu(ctx, &rnn);
        let r = p.reference();
        eprintln!(
            "{name}: max |err| dx {:.1e} dW_ih {:.1e} dW_hh {:.1e} dh0 {:.1e}",
            max_abs_diff(&g.dx, &r.dx),
            max_abs_diff(&g.params[0].weight_ih, &r.d_weight_ih),
            max_abs_diff(&g.params[0].weight_hh, &r.d_weight_hh),
            max_abs_diff(&g.dh0, &r.dh0),
        );
        compare(&name, &g, &r, c.bias);
    }
}

#[test]
fn gradients_match_pytorch_autograd() {
    let Some(ctx) = ctx() else { return };
    for case in all_cases() {
        let fx = fixtures::load(case);
        let (t, b, h, i) = (
            fx.steps,
            fx.batch,
            fx.cfg.hidden_size(),
            fx.cfg.input_size(),
        );
        let rnn = Rnn::with_config(ctx, &fx.cfg, &fx.weights).unwrap();
        let up = |v: &[f32], s: &[usize]| GpuTensor::upload(ctx, v, s).unwrap();
        let state = State {
            h: up(&fx.h0, &[1, b, h]),
            c: Some(up(&fx.c0, &[1, b, h])),
        };
        let (_, tape) = rnn
            .forward_train(&up(&fx.x, &[t, b, i]), Some(&state))
            .unwrap();
        let g = rnn
            .backward(
                &tape,
                Some(&up(&fx.dy, &[t, b, h])),
                Some(&up(&fx.dh_n, &[1, b, h])),
                Some(&up(&fx.dc_n, &[1, b, h])),
            )
            .unwrap()
            .to_host(&rnn)
            .unwrap();
        eprintln!(
            "{case}: max |gpu - torch| dx {:.1e}",
            max_abs_diff(&g.dx, &fx.f64("grad.x"))
        );
        check_scaled(&format!("{case} dx"), &g.dx, &fx.f64("grad.x"));
        check_scaled(&format!("{case} dh0"), &g.dh0, &fx.f64("grad.h0"));
        check_scaled(
            &format!("{case} dc0"),
            g.dc0.as_ref().unwrap(),
            &fx.f64("grad.c0"),
        );
        let p = &g.params[0];
        check_scaled(
            &format!("{case} weight_ih"),
            &p.weight_ih,
            &fx.f64("grad.weight_ih_l0"),
        );
        check_scaled(
            &format!("{case} weight_hh"),
            &p.weight_hh,
            &fx.f64("grad.weight_hh_l0"),
        );
        if fx.cfg.bias() {
            check_scaled(
                &format!("{case} bias_ih"),
                p.bias_ih.as_ref().unwrap(),
                &fx.f64("grad.bias_ih_l0"),
            );
            check_scaled(
                &format!("{case} bias_hh"),
                p.bias_hh.as_ref().unwrap(),
                &fx.f64("grad.bias_hh_l0"),
            );
        }
    }
}

#[test]
fn gradients_are_bit_identical_across_runs() {
    let Some(ctx) = ctx() else { return };
    let p = Problem::new(
        &Case {
            input: 9,
            hidden: 40,
            batch: 5,
            steps: 30,
            bias: true,
        },
        7,
    );
    let rnn = Rnn::with_config(ctx, &p.cfg, &p.w).unwrap();
    let first = p.gpu(ctx, &rnn);
    let second = p.gpu(ctx, &rnn);
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&first.dx), bits(&second.dx));
    assert_eq!(
        bits(&first.params[0].weight_ih),
        bits(&second.params[0].weight_ih)
    );
    assert_eq!(
        bits(&first.params[0].weight_hh),
        bits(&second.params[0].weight_hh)
    );
    assert_eq!(
        bits(first.params[0].bias_ih.as_ref().unwrap()),
        bits(second.params[0].bias_ih.as_ref().unwrap())
    );
    assert_eq!(first, second);
}

#[test]
fn absent_upstream_gradients_are_zero() {
    let Some(ctx) = ctx() else { return };
    let c = Case {
        input: 4,
        hidden: 6,
        batch: 3,
        steps: 7,
        bias: true,
    };
    let p = Problem::new(&c, 11);
    let rnn = Rnn::with_config(ctx, &p.cfg, &p.w).unwrap();
    let (t, b, h, i) = (p.t, p.b, c.hidden, c.input);
    let up = |v: &[f32], s: &[usize]| GpuTensor::upload(ctx, v, s).unwrap();
    let (_, tape) = rnn.forward_train(&up(&p.x, &[t, b, i]), None).unwrap();
    let rw = RefWeights::new(&p.cfg, p.w.layer(0, 0).unwrap());
    let x = to_f64(&p.x);
    let fwd = cpu::lstm_forward(&p.cfg, &rw, &x, None, None, t, b).unwrap();
    let (dy, dh_n, dc_n) = (to_f64(&p.dy), to_f64(&p.dh_n), to_f64(&p.dc_n));
    // Many-to-one (only dh_n), sequence loss (only dy), only dc_n.
    let cases: [(&str, bool, bool, bool); 3] = [
        ("dh_n only", false, true, false),
        ("dy only", true, false, false),
        ("dc_n only", false, false, true),
    ];
    for (name, use_dy, use_dh, use_dc) in cases {
        let gdy = use_dy.then(|| up(&p.dy, &[t, b, h]));
        let gdh = use_dh.then(|| up(&p.dh_n, &[1, b, h]));
        let gdc = use_dc.then(|| up(&p.dc_n, &[1, b, h]));
        let g = rnn
            .backward(&tape, gdy.as_ref(), gdh.as_ref(), gdc.as_ref())
            .unwrap()
            .to_host(&rnn)
            .unwrap();
        let r = cpu::lstm_backward(
            &p.cfg,
            &rw,
            &x,
            None,
            None,
            &fwd,
            use_dy.then_some(&dy[..]),
            use_dh.then_some(&dh_n[..]),
            use_dc.then_some(&dc_n[..]),
            t,
            b,
        )
        .unwrap();
        compare(name, &g, &r, true);
    }
}

#[test]
fn accumulation_adds_parameter_gradients() {
    let Some(ctx) = ctx() else { return };
    let c = Case {
        input: 5,
        hidden: 12,
        batch: 4,
        steps: 10,
        bias: true,
    };
    let (p1, p2) = (Problem::new(&c, 21), Problem::new(&c, 22));
    let rnn = Rnn::with_config(ctx, &p1.cfg, &p1.w).unwrap();
    let (t, b, h, i) = (c.steps, c.batch, c.hidden, c.input);
    let up = |v: &[f32], s: &[usize]| GpuTensor::upload(ctx, v, s).unwrap();
    let run = |p: &Problem| {
        let (_, tape) = rnn.forward_train(&up(&p.x, &[t, b, i]), None).unwrap();
        (tape, up(&p.dy, &[t, b, h]))
    };
    let (tape1, dy1) = run(&p1);
    let (tape2, dy2) = run(&p2);
    let g1 = rnn.backward(&tape1, Some(&dy1), None, None).unwrap();
    let g2 = rnn
        .backward(&tape2, Some(&dy2), None, None)
        .unwrap()
        .to_host(&rnn)
        .unwrap();
    let mut acc = g1.clone();
    let g1 = g1.to_host(&rnn).unwrap();
    rnn.backward_into(
        &tape2,
        Some(&dy2),
        None,
        None,
        &mut acc,
        GradMode::Accumulate,
    )
    .unwrap();
    let acc = acc.to_host(&rnn).unwrap();
    let sum = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x + y) as f64)
            .collect::<Vec<f64>>()
    };
    // One f32 addition apart (the GPU adds its partial products to the old value in a
    // different order than `g1 + g2`): a few ulps of the larger operand.
    let ulps = |v: &[f64]| 4.0 * f32::EPSILON as f64 * v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    for (name, a, want) in [
        (
            "weight_ih",
            &acc.params[0].weight_ih,
            sum(&g1.params[0].weight_ih, &g2.params[0].weight_ih),
        ),
        (
            "weight_hh",
            &acc.params[0].weight_hh,
            sum(&g1.params[0].weight_hh, &g2.params[0].weight_hh),
        ),
        (
            "bias_ih",
            acc.params[0].bias_ih.as_ref().unwrap(),
            sum(
                g1.params[0].bias_ih.as_ref().unwrap(),
                g2.params[0].bias_ih.as_ref().unwrap(),
            ),
        ),
    ] {
        assert_close(name, a, &want, ulps(&want), 0.0);
    }
    // dx belongs to the latest call only.
    assert_eq!(acc.dx, g2.dx);
}

#[test]
fn backward_is_one_submission() {
    // Its own context: the shared one counts other tests' submissions too.
    let Some(ctx) = common::gpu::own_ctx() else {
        return;
    };
    let ctx = &ctx;
    let cfg = RnnConfig::lstm(3, 8).build().unwrap();
    let rnn = Rnn::new(ctx, &Weights::init(&cfg, 1)).unwrap();
    for t in [1usize, 40] {
        let x = GpuTensor::upload(ctx, &seeded(1, t * 2 * 3, 1.0), &[t, 2, 3]).unwrap();
        let (_, tape) = rnn.forward_train(&x, None).unwrap();
        let dh = GpuTensor::upload(ctx, &seeded(2, 16, 1.0), &[1, 2, 8]).unwrap();
        let before = ctx.submission_count();
        let g = rnn.backward(&tape, None, Some(&dh), None).unwrap();
        assert_eq!(ctx.submission_count() - before, 1, "T={t}");
        g.dx.download(ctx).unwrap();
    }
}

#[test]
fn bad_upstream_gradients_and_foreign_tapes_are_errors() {
    let Some(ctx) = ctx() else { return };
    let cfg = RnnConfig::lstm(3, 8).build().unwrap();
    let rnn = Rnn::new(ctx, &Weights::init(&cfg, 1)).unwrap();
    let other = Rnn::new(ctx, &Weights::init(&cfg, 2)).unwrap();
    let x = GpuTensor::zeros(ctx, &[5, 2, 3]).unwrap();
    let (_, tape) = rnn.forward_train(&x, None).unwrap();
    let z = |s: &[usize]| GpuTensor::zeros(ctx, s).unwrap();
    let name = |r: rnn_wgpu::Result<rnn_wgpu::Grads>| match r {
        Err(Error::ShapeMismatch { name, .. }) => name,
        other => panic!("expected ShapeMismatch, got {other:?}"),
    };
    assert_eq!(
        name(rnn.backward(&tape, Some(&z(&[5, 2, 9])), None, None)),
        "dy"
    );
    assert_eq!(
        name(rnn.backward(&tape, Some(&z(&[4, 2, 8])), None, None)),
        "dy"
    );
    assert_eq!(
        name(rnn.backward(&tape, None, Some(&z(&[1, 3, 8])), None)),
        "dh_n"
    );
    assert_eq!(
        name(rnn.backward(&tape, None, None, Some(&z(&[2, 8])))),
        "dc_n"
    );
    assert!(matches!(
        other.backward(&tape, None, None, None),
        Err(Error::TapeMismatch(_))
    ));
    // Gradients for another architecture cannot be accumulated into.
    let cfg2 = RnnConfig::lstm(3, 9).build().unwrap();
    let rnn2 = Rnn::new(ctx, &Weights::init(&cfg2, 1)).unwrap();
    let (_, tape2) = rnn2.forward_train(&z(&[5, 2, 3]), None).unwrap();
    let mut g2 = rnn2.backward(&tape2, None, None, None).unwrap();
    assert!(matches!(
        rnn.backward_into(&tape, None, None, None, &mut g2, GradMode::Accumulate),
        Err(Error::ShapeMismatch { .. })
    ));
}

#[test]
fn every_batch_tiling_matches_reference() {
    let Some(ctx) = ctx() else { return };
    // As in tests/lstm_forward.rs: each batch tiling of the step-backward kernel (reductions
    // split 8, 8, 4, 2 ways for B <= 8, then 1, 2 and 4 rows per thread).
    for batch in [1, 2, 3, 4, 5, 8, 9, 16, 17, 33, 65] {
        let c = Case {
            input: 3,
            hidden: 20,
            batch,
            steps: 4,
            bias: true,
        };
        let p = Problem::new(&c, 400 + batch as u64);
        let rnn = Rnn::with_config(ctx, &p.cfg, &p.w).unwrap();
        compare(
            &format!("B={batch}"),
            &p.gpu(ctx, &rnn),
            &p.reference(),
            true,
        );
    }
}
