//! The forward step's register-tiled layout (`STAGE` in `shaders/rnn_step.wgsl`: weights and
//! states staged in workgroup memory, 2 columns by 4 or 8 rows per thread), which the plan
//! picks from B = 32 where it keeps 128 workgroups. The other GPU tests run small shapes
//! that never take it, so this file runs the smallest shapes that do (H = 512, B = 128),
//! for every cell kind it serves: forward and training (the tape) against the f64 CPU
//! reference, and a streaming session (a one-step pass with the input projection fused)
//! bit for bit against the whole-sequence forward.

mod common;

use common::{assert_close, gpu::ctx, seeded};
use rnn_wgpu::cpu::{self, RefWeights, to_f64};
use rnn_wgpu::{CellKind, Context, GpuTensor, Plan, PlanMode, Rnn, RnnConfig, State, Weights};

/// Forward: sums of K = I + H = 520 f32 terms with |w| <= 1/sqrt(H) and unit inputs, as in
/// tests/cells_gpu.rs: the f32 rounding error stays far below 2e-5 (bounded outputs).
const ATOL: f64 = 2e-5;
/// Gradients: relative to each tensor's largest reference magnitude, as in
/// tests/cells_gpu.rs (f32 sums over up to T*B rows; an indexing or gate bug is O(1)).
const SCALE_RTOL: f64 = 1e-4;

const I: usize = 8;
const H: usize = 512;
const B: usize = 128;
const T: usize = 2;

fn configs() -> Vec<(&'static str, RnnConfig)> {
    let lstm = || RnnConfig::lstm(I, H);
    vec![
        ("lstm", lstm().build().unwrap()),
        (
            "lstm peepholes+input_forget+clips",
            lstm()
                .peepholes(true)
                .input_forget(true)
                .gate_clip(1.5)
                .cell_clip(-0.5, 0.5)
                .build()
                .unwrap(),
        ),
        (
            "lstm proj_size+peepholes",
            lstm().proj_size(256).peepholes(true).build().unwrap(),
        ),
        ("lstm no bias", lstm().bias(false).build().unwrap()),
        ("gru", RnnConfig::gru(I, H).build().unwrap()),
        (
            "gru reset-before",
            RnnConfig::gru(I, H)
                .linear_before_reset(false)
                .build()
                .unwrap(),
        ),
    ]
}

/// The plan runs this shape's forward steps register-tiled (the printout says `staged`).
fn assert_staged(name: &str, cfg: &RnnConfig) {
    let plan = Plan::new(
        cfg,
        T,
        B,
        PlanMode::Training,
        false,
        &wgpu::Limits::default(),
    )
    .unwrap();
    let text = plan.to_string();
    let steps: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with("rnn_step ") && l.contains("workgroups="))
        .collect();
    assert!(!steps.is_empty(), "{name}: no step dispatch in\n{text}");
    for line in steps {
        assert!(
            line.contains("staged"),
            "{name}: not register-tiled: {line}"
        );
    }
}

fn scaled(name: &str, got: &[f32], want: &[f64]) {
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert_close(name, got, want, 1e-6 + SCALE_RTOL * scale, 0.0);
}

fn check(ctx: &Context, name: &str, cfg: &RnnConfig, seed: u64) {
    let st = cfg.state_size();
    let lstm = cfg.cell() == CellKind::Lstm;
    let w = Weights::init(cfg, seed);
    let rnn = Rnn::with_config(ctx, cfg, &w).unwrap();
    let x = seeded(seed + 1, T * B * I, 1.0);
    let h0 = seeded(seed + 2, B * st, 1.0);
    let c0 = seeded(seed + 3, B * H, 1.0);
    let dy = seeded(seed + 4, T * B * st, 1.0);
    let up = |v: &[f32], s: &[usize]| GpuTensor::upload(ctx, v, s).unwrap();
    let state = State {
        h: up(&h0, &[1, B, st]),
        c: lstm.then(|| up(&c0, &[1, B, H])),
    };
    let xg = up(&x, &[T, B, I]);

    let rw = RefWeights::new(cfg, w.layer(0, 0).unwrap());
    let (x64, h064, c064) = (to_f64(&x), to_f64(&h0), to_f64(&c0));
    let c0r = lstm.then_some(&c064[..]);
    let r = cpu::forward(cfg, &rw, &x64, Some(&h064), c0r, T, B).unwrap();

    // Inference.
    let out = rnn.forward(&xg, Some(&state)).unwrap();
    assert_close(
        &format!("{name} y"),
        &out.y.download(ctx).unwrap(),
        &r.y,
        ATOL,
        1e-4,
    );
    assert_close(
        &format!("{name} h_n"),
        &out.h_n.download(ctx).unwrap(),
        &r.h_n,
        ATOL,
        1e-4,
    );
    if let Some(c) = &out.c_n {
        let want = r.c_n.as_ref().unwrap();
        assert_close(
            &format!("{name} c_n"),
            &c.download(ctx).unwrap(),
            want,
            ATOL,
            1e-4,
        );
    }

    // Training: the tape, checked through the gradients it feeds.
    let (out, tape) = rnn.forward_train(&xg, Some(&state)).unwrap();
    assert_close(
        &format!("{name} train y"),
        &out.y.download(ctx).unwrap(),
        &r.y,
        ATOL,
        1e-4,
    );
    let g = rnn
        .backward(&tape, Some(&up(&dy, &[T, B, st])), None, None)
        .unwrap()
        .to_host(&rnn)
        .unwrap();
    let rg = cpu::backward(
        cfg,
        &rw,
        &x64,
        Some(&h064),
        c0r,
        &r,
        Some(&to_f64(&dy)),
        None,
        None,
        T,
        B,
    )
    .unwrap();
    scaled(&format!("{name} dx"), &g.dx, &rg.dx);
    scaled(&format!("{name} dh0"), &g.dh0, &rg.dh0);
    scaled(
        &format!("{name} d weight_hh"),
        &g.params[0].weight_hh,
        &rg.d_weight_hh,
    );
    scaled(
        &format!("{name} d weight_ih"),
        &g.params[0].weight_ih,
        &rg.d_weight_ih,
    );
}

/// Session steps (one-step passes, input projection fused into the step) equal the
/// whole-sequence forward bit for bit on the register-tiled layout too.
fn session_equivalence(ctx: &Context, name: &str, cfg: &RnnConfig) {
    let st = cfg.state_size();
    let rnn = Rnn::with_config(ctx, cfg, &Weights::init(cfg, 5)).unwrap();
    let x = seeded(9, T * B * I, 1.0);
    let whole = rnn
        .forward(&GpuTensor::upload(ctx, &x, &[T, B, I]).unwrap(), None)
        .unwrap();
    let y_whole = whole.y.download(ctx).unwrap();
    let mut session = rnn.session(B).unwrap();
    for t in 0..T {
        let xt = GpuTensor::upload(ctx, &x[t * B * I..(t + 1) * B * I], &[B, I]).unwrap();
        let y = session.step(&xt).unwrap().download(ctx).unwrap();
        let want = &y_whole[t * B * st..(t + 1) * B * st];
        let same = y.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{name}: session step {t} differs from the forward");
    }
}

#[test]
fn register_tiled_steps_match_the_reference() {
    let Some(ctx) = ctx() else { return };
    for (n, (name, cfg)) in configs().into_iter().enumerate() {
        assert_staged(name, &cfg);
        check(ctx, name, &cfg, 40 + 10 * n as u64);
    }
}

#[test]
fn register_tiled_session_steps_equal_the_forward() {
    let Some(ctx) = ctx() else { return };
    for (name, cfg) in configs() {
        session_equivalence(ctx, name, &cfg);
    }
}
