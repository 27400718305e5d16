//! f16 weight storage ([`WeightPrecision::F16`]): W_ih, W_hh and W_hr stored as f16 pairs,
//! f32 accumulation.
//!
//! The GPU forward of an f16 model is checked against the f64 CPU reference fed the SAME
//! f16-rounded weights (rounded on the host with `half::f16::from_f32(..).to_f32()`, the
//! rounding the upload uses), over every cell (LSTM with projection and peepholes, GRU with
//! both reset variants, RNN with and without bias), T = 1 (the step's fused input projection)
//! and T > 1 (the GEMM path), several layers and both directions. The error against the
//! f32-weight model is measured and printed for a unit-scale case (the README's figures).
//! Without `SHADER_F16` an explicit F16 request is a typed error and Auto stores f32; f16
//! models refuse training and the parameter-tensor paths, and give their weights back exactly.

mod common;

use common::{assert_close, gpu::ctx, gpu::own_ctx, max_abs_diff, seeded};
use rnn_wgpu::cpu::{stack_forward, to_f64};
use rnn_wgpu::{
    CellKind, Context, Direction, Error, GpuTensor, HostOutput, HostState, Nonlinearity,
    ParamGrads, PlanMode, Rnn, RnnConfig, RnnConfigBuilder, RunOptions, WeightPrecision, Weights,
};

/// GPU (f16-stored weights, f32 math) against the f64 reference with the same f16-rounded
/// weights: both compute the same function of the same numbers, so they differ only by the
/// GPU's f32 rounding of each pre-activation's sum of at most (I + S) * G ≈ 100 products of
/// O(1) terms, a few 1e-7 per step, which the saturating gates keep from growing over T and
/// layers (the same reasoning as tests/lstm_forward.rs and tests/topology_gpu.rs, whose
/// tolerances these are; observed here: at most 3e-7). Results computed with the unrounded
/// f32 weights differ from these by 1.7e-5 to 3e-4 on these shapes (printed below), and an
/// indexing or packing bug by O(0.1).
const ATOL: f64 = 2e-5;
const RTOL: f64 = 1e-4;

/// `w` with every W_ih, W_hh and W_hr rounded to f16 (nearest even) and back, as the GPU
/// stores them; biases and peepholes stay f32, as on the GPU.
fn rounded(w: &Weights) -> Weights {
    let cfg = w.config().clone();
    let mut r = w.clone();
    let round = |v: &mut Vec<f32>| {
        for x in v.iter_mut() {
            *x = half::f16::from_f32(*x).to_f32();
        }
    };
    for l in 0..cfg.num_layers() {
        for d in 0..cfg.num_directions() {
            let lw = r.layer_mut(l, d).unwrap();
            round(&mut lw.weight_ih);
            round(&mut lw.weight_hh);
            if let Some(wr) = lw.weight_hr.as_mut() {
                round(wr);
            }
        }
    }
    r
}

/// Random x, h0, c0 (unit scale) for `cfg` at `t` x `b`.
fn inputs(cfg: &RnnConfig, t: usize, b: usize) -> (Vec<f32>, Vec<f32>, Option<Vec<f32>>) {
    let ld = cfg.num_layers() * cfg.num_directions();
    let x = seeded(1, t * b * cfg.input_size(), 1.0);
    let h0 = seeded(2, ld * b * cfg.state_size(), 0.5);
    let c0 = (cfg.cell() == CellKind::Lstm).then(|| seeded(3, ld * b * cfg.hidden_size(), 0.5));
    (x, h0, c0)
}

fn gpu_forward(rnn: &Rnn, t: usize, b: usize) -> HostOutput {
    let (x, h0, c0) = inputs(rnn.config(), t, b);
    rnn.forward_host(
        &x,
        t,
        b,
        HostState {
            h0: Some(&h0),
            c0: c0.as_deref(),
        },
        &RunOptions::default(),
    )
    .unwrap()
}

/// An f16 model on `ctx` (which must offer f16), checked against the reference with rounded
/// weights at `t` x `b`; returns max |y_f16 - y_f32| for the printout.
fn check(ctx: &Context, name: &str, cfg: &RnnConfig, t: usize, b: usize) -> f64 {
    let w = Weights::init(cfg, 7);
    let rnn = Rnn::with_precision(ctx, &w, WeightPrecision::F16).unwrap();
    assert_eq!(rnn.precision(), WeightPrecision::F16, "{name}");
    let got = gpu_forward(&rnn, t, b);
    let (x, h0, c0) = inputs(cfg, t, b);
    let c0d = c0.as_deref().map(to_f64);
    let want = stack_forward(
        cfg,
        &rounded(&w),
        &to_f64(&x),
        t,
        b,
        HostState {
            h0: Some(&to_f64(&h0)),
            c0: c0d.as_deref(),
        },
        &RunOptions::default(),
    )
    .unwrap();
    assert_close(&format!("{name} y"), &got.y, &want.y, ATOL, RTOL);
    assert_close(&format!("{name} h_n"), &got.h_n, &want.h_n, ATOL, RTOL);
    if let (Some(g), Some(r)) = (&got.c_n, &want.c_n) {
        assert_close(&format!("{name} c_n"), g, r, ATOL, RTOL);
    }
    let f32_model = gpu_forward(&Rnn::new(ctx, &w).unwrap(), t, b);
    let against_f32 = max_abs_diff(&got.y, &to_f64(&f32_model.y));
    eprintln!(
        "{name}: max |gpu f16 - cpu (f16-rounded weights)| y {:.1e}; max |y f16 - y f32| {:.1e}",
        max_abs_diff(&got.y, &want.y),
        against_f32
    );
    against_f32
}

/// The shared context when it offers f16 storage; a note otherwise (the f16 kernels cannot
/// run there; the refusal test below still runs). Under `CI=true` a missing `SHADER_F16` is a
/// failure, not a silent pass: CI's adapter (Mesa 25's llvmpipe on Vulkan) has it.
fn f16_ctx() -> Option<&'static Context> {
    let ctx = ctx()?;
    if !ctx.shader_f16() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(
            !ci,
            "CI=true: adapter {} lacks SHADER_F16, the f16 kernels would not be tested",
            ctx.describe()
        );
        eprintln!(
            "adapter {} lacks SHADER_F16: f16 kernels not run",
            ctx.describe()
        );
        return None;
    }
    Some(ctx)
}

fn configs() -> Vec<(&'static str, RnnConfigBuilder)> {
    vec![
        // W_hr^T is [H, P]: P = 6 takes the GEMM's scalar B loads, the 2-layer P = 8 its vec4s.
        (
            "lstm proj=6 peepholes",
            RnnConfig::lstm(5, 12).proj_size(6).peepholes(true),
        ),
        (
            "lstm 2 layers bi proj=8",
            RnnConfig::lstm(8, 16)
                .num_layers(2)
                .proj_size(8)
                .direction(Direction::Bidirectional),
        ),
        (
            "lstm 2 layers bi",
            RnnConfig::lstm(12, 32)
                .num_layers(2)
                .direction(Direction::Bidirectional),
        ),
        // GRU: 3H = 21 columns (scalar f16 loads, G = 3 weight reads), then 3H = 48.
        ("gru reset-after", RnnConfig::gru(6, 7)),
        (
            "gru reset-before bi",
            RnnConfig::gru(9, 16)
                .linear_before_reset(false)
                .direction(Direction::Bidirectional),
        ),
        (
            "gru reset-before 2 layers",
            RnnConfig::gru(4, 7)
                .linear_before_reset(false)
                .num_layers(2),
        ),
        // RNN: 4 units per thread (H = 12), and a ragged H = 9 without bias (the bias slot
        // then holds the f16 W_hh, unread).
        (
            "rnn tanh 2 layers",
            RnnConfig::rnn(10, 12, Nonlinearity::Tanh).num_layers(2),
        ),
        (
            "rnn relu no bias bi",
            RnnConfig::rnn(3, 9, Nonlinearity::Relu)
                .bias(false)
                .direction(Direction::Bidirectional),
        ),
    ]
}

#[test]
fn f16_forward_matches_the_reference_with_rounded_weights() {
    let Some(ctx) = f16_ctx() else { return };
    for (name, builder) in configs() {
        let cfg = builder.build().unwrap();
        // T = 1: the step computes its own input projection from the f16 W_ih (fused path);
        // T = 6: the GEMM projects all steps, reading the f16 W_ih as its B operand.
        for (t, b) in [(1, 3), (6, 3)] {
            check(ctx, &format!("{name} T={t} B={b}"), &cfg, t, b);
        }
    }
}

#[test]
fn error_against_f32_weights() {
    let Some(ctx) = f16_ctx() else { return };
    // Unit scale: x, h0 in [-1, 1], weights PyTorch's U(-1/sqrt(H), 1/sqrt(H)). Rounding a
    // weight to f16 moves it by at most 2^-11 of itself, so a pre-activation moves by at most
    // 2^-11 * sum |w x| <= 2^-11 * (I + H) / sqrt(H) ≈ 0.03 at I = 64, H = 128 (the bound of
    // all errors aligned), typically sqrt(I + H) / sqrt(H) * 2^-11 / sqrt(3) ≈ 3e-4 (random
    // signs), and gates have slope <= 1. Bound 1e-2: far above the typical effect, far below
    // the O(0.1) of a layout bug. The lower bound shows the model really reads f16 weights.
    let (t, b) = (20, 4);
    for (name, builder) in [
        ("lstm I=64 H=128", RnnConfig::lstm(64, 128)),
        ("gru I=64 H=128", RnnConfig::gru(64, 128)),
        (
            "rnn tanh I=64 H=128",
            RnnConfig::rnn(64, 128, Nonlinearity::Tanh),
        ),
        (
            "lstm I=64 H=128 proj=64",
            RnnConfig::lstm(64, 128).proj_size(64),
        ),
    ] {
        let cfg = builder.build().unwrap();
        let err = check(ctx, &format!("{name} T={t} B={b}"), &cfg, t, b);
        assert!(
            err > ATOL && err < 1e-2,
            "{name}: max |y f16 - y f32| = {err:.2e}, expected in ({ATOL:.0e}, 1e-2)"
        );
    }
}

#[test]
fn explicit_f16_without_the_feature_is_refused_and_auto_stores_f32() {
    let Some(ctx) = own_ctx() else { return };
    let cfg = RnnConfig::lstm(4, 8).build().unwrap();
    let w = Weights::init(&cfg, 3);
    let has_f16 = ctx.shader_f16();
    let auto = Rnn::with_precision(&ctx, &w, WeightPrecision::Auto).unwrap();
    assert_eq!(
        auto.precision(),
        match has_f16 {
            true => WeightPrecision::F16,
            false => WeightPrecision::F32,
        }
    );
    // As if the device lacked SHADER_F16.
    ctx.set_shader_f16(false);
    assert!(!ctx.shader_f16());
    match Rnn::with_precision(&ctx, &w, WeightPrecision::F16) {
        Err(Error::Unsupported(msg)) => assert!(msg.contains("SHADER_F16"), "{msg}"),
        other => panic!("explicit F16 without SHADER_F16: {other:?}"),
    }
    let auto = Rnn::with_precision(&ctx, &w, WeightPrecision::Auto).unwrap();
    assert_eq!(auto.precision(), WeightPrecision::F32);
    // Auto's f32 model is the default model, bit for bit.
    let (t, b) = (3, 2);
    assert_eq!(
        gpu_forward(&auto, t, b).y,
        gpu_forward(&Rnn::new(&ctx, &w).unwrap(), t, b).y
    );
    assert_eq!(
        Rnn::with_precision(&ctx, &w, WeightPrecision::F32)
            .unwrap()
            .precision(),
        WeightPrecision::F32
    );
}

#[test]
fn f16_models_refuse_training_and_give_their_weights_back_exactly() {
    let Some(ctx) = f16_ctx() else { return };
    let cfg = RnnConfig::lstm(5, 6).proj_size(3).build().unwrap();
    let w = Weights::init(&cfg, 5);
    let rnn = Rnn::with_precision(ctx, &w, WeightPrecision::F16).unwrap();
    let unsupported = |what: &str, r: rnn_wgpu::Result<()>| match r {
        Err(Error::Unsupported(_)) => {}
        other => panic!("{what} on an f16 model: {other:?}"),
    };
    let x = GpuTensor::upload(ctx, &seeded(1, 2 * 5, 1.0), &[2, 1, 5]).unwrap();
    unsupported("forward_train", rnn.forward_train(&x, None).map(|_| ()));
    unsupported("parameters", rnn.parameters().map(|_| ()));
    unsupported("ParamGrads::zeros", ParamGrads::zeros(&rnn).map(|_| ()));
    unsupported(
        "a training plan",
        rnn.plan(2, 1, PlanMode::Training, false).map(|_| ()),
    );
    // The inference plan says which dispatches read f16 weights.
    let plan = format!("{}", rnn.plan(2, 1, PlanMode::Inference, false).unwrap());
    assert!(plan.contains("[f16 weights]"), "{plan}");
    // Downloads unpack the f16 values: exactly the host-rounded weights.
    let want = rounded(&w);
    assert_eq!(rnn.weights().unwrap(), want);
    // set_weights packs as f16 too.
    let w2 = Weights::init(&cfg, 6);
    rnn.set_weights(&w2).unwrap();
    assert_eq!(rnn.weights().unwrap(), rounded(&w2));
    // A weight beyond f16's range is refused (it would become infinite), naming the tensor.
    let mut big = w.clone();
    big.layer_mut(0, 0).unwrap().weight_hh[4] = 1e5;
    match Rnn::with_precision(ctx, &big, WeightPrecision::F16) {
        Err(Error::Unsupported(msg)) => assert!(msg.contains("WHh"), "{msg}"),
        other => panic!("overflowing f16 weight: {other:?}"),
    }
}

#[test]
fn f16_session_steps_equal_the_whole_sequence_bit_for_bit() {
    let Some(ctx) = f16_ctx() else { return };
    // A session step fuses its input projection (the f16 W_ih read by the step kernel) in the
    // GEMM's exact order, so streaming T steps equals one T-step pass over the f16 weights
    // bit for bit, as it does with f32 weights (tests/session.rs).
    let (t, b) = (5, 2);
    for cfg in [
        RnnConfig::lstm(6, 8).proj_size(4).build().unwrap(),
        RnnConfig::gru(5, 7)
            .linear_before_reset(false)
            .build()
            .unwrap(),
        RnnConfig::rnn(3, 9, Nonlinearity::Tanh).build().unwrap(),
    ] {
        let rnn = Rnn::with_precision(ctx, &Weights::init(&cfg, 4), WeightPrecision::F16).unwrap();
        let (i, s) = (cfg.input_size(), cfg.state_size());
        let x = seeded(9, t * b * i, 1.0);
        let whole = rnn
            .forward(&GpuTensor::upload(ctx, &x, &[t, b, i]).unwrap(), None)
            .unwrap()
            .y
            .download(ctx)
            .unwrap();
        let mut session = rnn.session(b).unwrap();
        for step in 0..t {
            let xt = &x[step * b * i..(step + 1) * b * i];
            let y = session.step_host(xt).unwrap().download(ctx).unwrap();
            let want = &whole[step * b * s..(step + 1) * b * s];
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&y), bits(want), "{cfg:?} step {step}");
        }
    }
}
