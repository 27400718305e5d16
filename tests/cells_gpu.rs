//! GRU, the plain RNN and the LSTM variants on the GPU against the f64 CPU reference: forward
//! and every gradient, on shapes that include B = 1, odd H and I, T = 1, every batch tiling of
//! the step kernels, and a long sequence; and against PyTorch's and onnxruntime's outputs.

mod common;

use common::{assert_close, gpu::ctx, max_abs_diff, seeded};
use rnn_wgpu::cpu::{self, RefWeights, to_f64};
use rnn_wgpu::{
    Activation, Activations, CellKind, Context, GpuTensor, Nonlinearity, Rnn, RnnConfig, State,
    Weights,
};
use rnn_wgpu::{HostState, RunOptions};

/// Forward: the same f32-rounding argument as tests/lstm_forward.rs (sums of K = I + H terms,
/// |w| <= 1/sqrt(H), unit inputs; tanh/sigmoid outputs bounded by 1). ReLU RNN outputs are not
/// bounded, so its errors scale with |h|: compared relative to the tensor's scale below.
const ATOL: f64 = 2e-5;
/// Gradients: relative to the largest reference magnitude of each tensor, as in
/// tests/lstm_backward.rs (f32 sums over up to T*B rows; an indexing or gate bug is O(1)).
const SCALE_RTOL: f64 = 1e-4;

fn scaled(name: &str, got: &[f32], want: &[f64]) {
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert_close(name, got, want, 1e-6 + SCALE_RTOL * scale, 0.0);
}

fn configs(i: usize, h: usize, bias: bool) -> Vec<(&'static str, RnnConfig)> {
    vec![
        ("gru", RnnConfig::gru(i, h).bias(bias).build().unwrap()),
        (
            "rnn_tanh",
            RnnConfig::rnn(i, h, Nonlinearity::Tanh)
                .bias(bias)
                .build()
                .unwrap(),
        ),
        (
            "rnn_relu",
            RnnConfig::rnn(i, h, Nonlinearity::Relu)
                .bias(bias)
                .build()
                .unwrap(),
        ),
    ]
}

/// Run forward_train + backward on the GPU and forward + backward on the CPU; compare all.
fn check(ctx: &Context, name: &str, cfg: &RnnConfig, t: usize, b: usize, seed: u64) {
    let (i, h, st) = (cfg.input_size(), cfg.hidden_size(), cfg.state_size());
    let w = Weights::init(cfg, seed);
    let rnn = Rnn::with_config(ctx, cfg, &w).unwrap();
    let lstm = cfg.cell() == CellKind::Lstm;
    let x = seeded(seed + 1, t * b * i, 1.0);
    let h0 = seeded(seed + 2, b * st, 1.0);
    let dy = seeded(seed + 3, t * b * st, 1.0);
    let dh_n = seeded(seed + 4, b * st, 1.0);
    let c0 = seeded(seed + 5, b * h, 1.0);
    let dc_n = seeded(seed + 6, b * h, 1.0);
    let up = |v: &[f32], s: &[usize]| GpuTensor::upload(ctx, v, s).unwrap();
    let state = State {
        h: up(&h0, &[1, b, st]),
        c: lstm.then(|| up(&c0, &[1, b, h])),
    };
    let (out, tape) = rnn
        .forward_train(&up(&x, &[t, b, i]), Some(&state))
        .unwrap();
    assert_eq!(out.c_n.is_some(), lstm);
    let y = out.y.download(ctx).unwrap();
    let gdc = lstm.then(|| up(&dc_n, &[1, b, h]));
    let g = rnn
        .backward(
            &tape,
            Some(&up(&dy, &[t, b, st])),
            Some(&up(&dh_n, &[1, b, st])),
            gdc.as_ref(),
        )
        .unwrap()
        .to_host(&rnn)
        .unwrap();

    let rw = RefWeights::new(cfg, w.layer(0, 0).unwrap());
    let (x64, h064, c064, dc64) = (to_f64(&x), to_f64(&h0), to_f64(&c0), to_f64(&dc_n));
    let c0r = lstm.then_some(&c064[..]);
    let r = cpu::forward(cfg, &rw, &x64, Some(&h064), c0r, t, b).unwrap();
    let rg = cpu::backward(
        cfg,
        &rw,
        &x64,
        Some(&h064),
        c0r,
        &r,
        Some(&to_f64(&dy)),
        Some(&to_f64(&dh_n)),
        lstm.then_some(&dc64[..]),
        t,
        b,
    )
    .unwrap();
    eprintln!(
        "{name}: max |err| y {:.1e} dx {:.1e} dW_hh {:.1e}",
        max_abs_diff(&y, &r.y),
        max_abs_diff(&g.dx, &rg.dx),
        max_abs_diff(&g.params[0].weight_hh, &rg.d_weight_hh)
    );
    let y_scale = r.y.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    assert_close(&format!("{name} y"), &y, &r.y, ATOL * y_scale, 1e-4);
    assert_close(
        &format!("{name} h_n"),
        &out.h_n.download(ctx).unwrap(),
        &r.h_n,
        ATOL * y_scale,
        1e-4,
    );
    scaled(&format!("{name} dx"), &g.dx, &rg.dx);
    scaled(&format!("{name} dh0"), &g.dh0, &rg.dh0);
    match (&g.dc0, &rg.dc0) {
        (Some(gc), Some(rc)) => {
            assert_close(
                &format!("{name} c_n"),
                out.c_n.as_ref().unwrap().download(ctx).unwrap().as_slice(),
                r.c_n.as_ref().unwrap(),
                ATOL * y_scale,
                1e-4,
            );
            scaled(&format!("{name} dc0"), gc, rc);
        }
        (None, None) => {}
        _ => panic!("{name}: dc0 on one side only"),
    }
    match (&g.params[0].weight_hr, &rg.d_weight_hr) {
        (Some(gw), Some(rw)) => scaled(&format!("{name} d weight_hr"), gw, rw),
        (None, None) => {}
        _ => panic!("{name}: weight_hr gradient on one side only"),
    }
    match (&g.params[0].peephole, &rg.d_peephole) {
        (Some(gp), Some(rp)) => scaled(&format!("{name} d peephole"), gp, rp),
        (None, None) => {}
        _ => panic!("{name}: peephole gradient on one side only"),
    }
    scaled(
        &format!("{name} d weight_ih"),
        &g.params[0].weight_ih,
        &rg.d_weight_ih,
    );
    scaled(
        &format!("{name} d weight_hh"),
        &g.params[0].weight_hh,
        &rg.d_weight_hh,
    );
    match (&g.params[0].bias_ih, &g.params[0].bias_hh) {
        (Some(bi), Some(bh)) => {
            scaled(&format!("{name} d bias_ih"), bi, &rg.d_bias_ih);
            scaled(&format!("{name} d bias_hh"), bh, &rg.d_bias_hh);
        }
        (None, None) => assert!(!cfg.bias()),
        _ => panic!("{name}: one bias gradient without the other"),
    }
}

#[test]
fn gru_and_rnn_match_reference() {
    let Some(ctx) = ctx() else { return };
    // (I, H, B, T, bias)
    let shapes = [
        (1, 1, 1, 1, true),
        (7, 13, 3, 50, true),
        (5, 33, 1, 20, false),
        (256, 64, 17, 10, true),
        (3, 20, 64, 5, true),
        (2, 16, 5, 200, true),
    ];
    for (n, &(i, h, b, t, bias)) in shapes.iter().enumerate() {
        for (cell, cfg) in configs(i, h, bias) {
            let name = format!("{cell} I={i} H={h} B={b} T={t} bias={bias}");
            check(ctx, &name, &cfg, t, b, 500 + 10 * n as u64);
        }
    }
}

#[test]
fn every_batch_tiling_for_gru_and_rnn() {
    let Some(ctx) = ctx() else { return };
    for b in [2, 4, 8, 9, 16, 33] {
        for (cell, cfg) in configs(3, 20, true) {
            check(ctx, &format!("{cell} B={b}"), &cfg, 4, b, 700 + b as u64);
        }
    }
}

#[test]
fn gru_and_rnn_forward_is_one_submission_and_chunks_exactly() {
    let Some(ctx) = common::gpu::own_ctx() else {
        return;
    };
    let mut cells = configs(4, 10, true);
    cells.push((
        "gru reset-before",
        RnnConfig::gru(4, 10)
            .linear_before_reset(false)
            .build()
            .unwrap(),
    ));
    for (cell, cfg) in cells {
        let w = Weights::init(&cfg, 9);
        let (t, b) = (30, 3);
        let x = seeded(10, t * b * 4, 1.0);
        let whole = Rnn::with_config(&ctx, &cfg, &w).unwrap();
        let before = ctx.submission_count();
        let out = whole
            .forward(&GpuTensor::upload(&ctx, &x, &[t, b, 4]).unwrap(), None)
            .unwrap();
        assert_eq!(ctx.submission_count() - before, 1, "{cell}");
        let y = out.y.download(&ctx).unwrap();
        let chunked = Rnn::with_config(&ctx, &cfg, &w)
            .unwrap()
            .with_max_chunk_steps(7)
            .unwrap();
        let yc = chunked
            .forward_host(&x, t, b, HostState::zeros(), &RunOptions::default())
            .unwrap()
            .y;
        assert_eq!(y, yc, "{cell}: chunked differs");
    }
}

/// One variant per line, each activation of the ONNX list in at least one role.
fn variants() -> Vec<(&'static str, RnnConfig)> {
    let acts = |gate, cell, hidden| Activations { gate, cell, hidden };
    use Activation::*;
    let lstm = || RnnConfig::lstm(5, 13);
    vec![
        ("lstm peepholes", lstm().peepholes(true).build().unwrap()),
        (
            "lstm input_forget",
            lstm().input_forget(true).build().unwrap(),
        ),
        (
            "lstm input_forget+peepholes",
            lstm().input_forget(true).peepholes(true).build().unwrap(),
        ),
        ("lstm gate_clip", lstm().gate_clip(0.7).build().unwrap()),
        ("lstm proj_size", lstm().proj_size(5).build().unwrap()),
        (
            "lstm proj_size+peepholes+clips",
            lstm()
                .proj_size(3)
                .peepholes(true)
                .gate_clip(1.2)
                .cell_clip(-0.6, 0.6)
                .build()
                .unwrap(),
        ),
        (
            "lstm cell_clip",
            lstm().cell_clip(-0.3, 0.4).build().unwrap(),
        ),
        (
            "lstm all variants",
            lstm()
                .peepholes(true)
                .gate_clip(0.9)
                .cell_clip(-0.5, 0.5)
                .build()
                .unwrap(),
        ),
        (
            "lstm HardSigmoid/LeakyRelu/ScaledTanh",
            lstm()
                .activations(acts(
                    HardSigmoid {
                        alpha: 0.2,
                        beta: 0.5,
                    },
                    LeakyRelu { alpha: 0.1 },
                    ScaledTanh {
                        alpha: 1.5,
                        beta: 0.7,
                    },
                ))
                .build()
                .unwrap(),
        ),
        (
            "lstm Softsign/Elu/Affine",
            lstm()
                .activations(acts(
                    Softsign,
                    Elu { alpha: 0.8 },
                    Affine {
                        alpha: 0.6,
                        beta: 0.1,
                    },
                ))
                .build()
                .unwrap(),
        ),
        (
            "gru Softplus + gate_clip",
            RnnConfig::gru(7, 13)
                .activations(acts(Sigmoid, Softplus, Tanh))
                .gate_clip(1.5)
                .build()
                .unwrap(),
        ),
        (
            "gru HardSigmoid/Relu",
            RnnConfig::gru(7, 13)
                .activations(acts(
                    HardSigmoid {
                        alpha: 0.25,
                        beta: 0.5,
                    },
                    Relu,
                    Tanh,
                ))
                .build()
                .unwrap(),
        ),
        (
            "rnn ThresholdedRelu",
            RnnConfig::rnn(7, 13, Nonlinearity::Tanh)
                .activations(acts(Sigmoid, ThresholdedRelu { alpha: 0.05 }, Tanh))
                .build()
                .unwrap(),
        ),
        (
            "gru reset-before",
            RnnConfig::gru(7, 13)
                .linear_before_reset(false)
                .build()
                .unwrap(),
        ),
        (
            "gru reset-before HardSigmoid/Relu + gate_clip",
            RnnConfig::gru(7, 13)
                .linear_before_reset(false)
                .activations(acts(
                    HardSigmoid {
                        alpha: 0.25,
                        beta: 0.5,
                    },
                    Relu,
                    Tanh,
                ))
                .gate_clip(1.1)
                .build()
                .unwrap(),
        ),
        (
            "rnn tanh gate_clip",
            RnnConfig::rnn(7, 13, Nonlinearity::Tanh)
                .gate_clip(0.5)
                .build()
                .unwrap(),
        ),
    ]
}

#[test]
fn lstm_variants_and_activations_match_reference() {
    let Some(ctx) = ctx() else { return };
    for (n, (name, cfg)) in variants().into_iter().enumerate() {
        for (b, t) in [(1, 1), (3, 9), (17, 5)] {
            check(
                ctx,
                &format!("{name} B={b} T={t}"),
                &cfg,
                t,
                b,
                900 + 10 * n as u64 + b as u64,
            );
        }
    }
}

#[test]
fn gpu_matches_onnxruntime_fixtures() {
    let Some(ctx) = ctx() else { return };
    for case in common::fixtures::onnx_cases() {
        let fx = common::fixtures::load_onnx(case);
        let cfg = fx.config();
        let w = rnn_wgpu::onnx::import_layer(&cfg, &fx.w, &fx.r, fx.b.as_deref(), fx.p.as_deref())
            .unwrap();
        let rnn = Rnn::with_config(ctx, &cfg, &w).unwrap();
        let out = rnn
            .forward_host(
                &fx.x,
                fx.steps,
                fx.batch,
                HostState {
                    h0: fx.initial_h.as_deref(),
                    c0: fx.initial_c.as_deref(),
                },
                &RunOptions::default(),
            )
            .unwrap();
        // onnxruntime computed in float32 (with its own sigmoid/tanh approximations in GRU):
        // the bound of tests/onnx_parity.rs, where the f64 reference sits within 8.8e-7 of it.
        let f = |v: &[f32]| to_f64(v);
        assert_close(&format!("{case} Y"), &out.y, &f(&fx.y), 1e-5, 1e-5);
        assert_close(&format!("{case} Y_h"), &out.h_n, &f(&fx.y_h), 1e-5, 1e-5);
        if let (Some(c), Some(want)) = (&out.c_n, &fx.y_c) {
            assert_close(&format!("{case} Y_c"), c, &f(want), 1e-5, 1e-5);
        }
    }
}

#[test]
fn gpu_matches_pytorch_cell_fixtures() {
    let Some(ctx) = ctx() else { return };
    // nn.GRU, nn.RNN (tanh, relu) and nn.LSTM(proj_size) from scripts/gen_fixtures.py:
    // outputs and every autograd gradient, computed by PyTorch in float64.
    for stem in common::fixtures::cell_files() {
        let fx = common::fixtures::load_file(stem);
        let cfg = &fx.cfg;
        let (t, b, i) = (fx.steps, fx.batch, cfg.input_size());
        let (h, st) = (cfg.hidden_size(), cfg.state_size());
        let lstm = fx.has_cell_state();
        let rnn = Rnn::with_config(ctx, cfg, &fx.weights).unwrap();
        let up = |v: &[f32], s: &[usize]| GpuTensor::upload(ctx, v, s).unwrap();
        let state = State {
            h: up(&fx.h0, &[1, b, st]),
            c: lstm.then(|| up(&fx.c0, &[1, b, h])),
        };
        let (out, tape) = rnn
            .forward_train(&up(&fx.x, &[t, b, i]), Some(&state))
            .unwrap();
        let gdc = lstm.then(|| up(&fx.dc_n, &[1, b, h]));
        let g = rnn
            .backward(
                &tape,
                Some(&up(&fx.dy, &[t, b, st])),
                Some(&up(&fx.dh_n, &[1, b, st])),
                gdc.as_ref(),
            )
            .unwrap()
            .to_host(&rnn)
            .unwrap();
        // Outputs are bounded by 1 except the ReLU RNN's: scale as in `check`.
        let y = fx.f64("y");
        let scale = y.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        assert_close(
            &format!("{stem} y"),
            &out.y.download(ctx).unwrap(),
            &y,
            ATOL * scale,
            1e-4,
        );
        assert_close(
            &format!("{stem} h_n"),
            &out.h_n.download(ctx).unwrap(),
            &fx.f64("h_n"),
            ATOL * scale,
            1e-4,
        );
        if lstm {
            assert_close(
                &format!("{stem} c_n"),
                &out.c_n.unwrap().download(ctx).unwrap(),
                &fx.f64("c_n"),
                ATOL * scale,
                1e-4,
            );
            scaled(
                &format!("{stem} dc0"),
                g.dc0.as_ref().unwrap(),
                &fx.f64("grad.c0"),
            );
        }
        scaled(&format!("{stem} dx"), &g.dx, &fx.f64("grad.x"));
        scaled(&format!("{stem} dh0"), &g.dh0, &fx.f64("grad.h0"));
        let p = &g.params[0];
        scaled(
            &format!("{stem} weight_ih"),
            &p.weight_ih,
            &fx.f64("grad.weight_ih_l0"),
        );
        scaled(
            &format!("{stem} weight_hh"),
            &p.weight_hh,
            &fx.f64("grad.weight_hh_l0"),
        );
        if cfg.bias() {
            scaled(
                &format!("{stem} bias_ih"),
                p.bias_ih.as_ref().unwrap(),
                &fx.f64("grad.bias_ih_l0"),
            );
            scaled(
                &format!("{stem} bias_hh"),
                p.bias_hh.as_ref().unwrap(),
                &fx.f64("grad.bias_hh_l0"),
            );
        }
        if cfg.proj_size().is_some() {
            scaled(
                &format!("{stem} weight_hr"),
                p.weight_hr.as_ref().unwrap(),
                &fx.f64("grad.weight_hr_l0"),
            );
        }
    }
}
