//! Dropout between stacked layers on the GPU: seeded, reproducible, at rate p, applied in
//! training only, and backward sends gradient only through the kept units: checked against
//! the CPU stack reference drawing the same mask (`rnn_wgpu::dropout::mask`).

mod common;

use common::assert_close;
use common::gpu::ctx;
use rnn_wgpu::cpu::{stack_backward, stack_forward_train, to_f64};
use rnn_wgpu::gpu::apply_dropout;
use rnn_wgpu::{
    CellKind, Context, Direction, GpuTensor, HostGrads, Layout, Rnn, RnnConfig, RunOptions, State,
    Weights, dropout,
};
use rnn_wgpu::{HostState, Upstream};

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

struct Problem {
    x: GpuTensor,
    state: State,
    dy: GpuTensor,
    host: (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>),
}

fn problem(ctx: &Context, cfg: &RnnConfig, t: usize, b: usize) -> Problem {
    let (i, h, s) = (cfg.input_size(), cfg.hidden_size(), cfg.state_size());
    let ld = cfg.num_layers() * cfg.num_directions();
    let shape = |f: usize| match cfg.layout() {
        Layout::BatchFirst => vec![b, t, f],
        _ => vec![t, b, f],
    };
    let x = common::seeded(1, t * b * i, 1.0);
    let h0 = common::seeded(2, ld * b * s, 0.5);
    let c0 = common::seeded(3, ld * b * h, 0.5);
    let dy = common::seeded(4, t * b * cfg.output_size(), 1.0);
    Problem {
        x: GpuTensor::upload(ctx, &x, &shape(i)).unwrap(),
        state: State {
            h: GpuTensor::upload(ctx, &h0, &[ld, b, s]).unwrap(),
            c: (cfg.cell() == CellKind::Lstm)
                .then(|| GpuTensor::upload(ctx, &c0, &[ld, b, h]).unwrap()),
        },
        dy: GpuTensor::upload(ctx, &dy, &shape(cfg.output_size())).unwrap(),
        host: (x, h0, c0, dy),
    }
}

/// Training forward + backward on the GPU with `seed`: (y, h_n, gradients).
fn train(
    ctx: &Context,
    rnn: &Rnn,
    p: &Problem,
    lengths: Option<&[usize]>,
    seed: Option<u64>,
) -> (Vec<f32>, Vec<f32>, HostGrads) {
    let opts = RunOptions {
        lengths,
        dropout_seed: seed,
        ..Default::default()
    };
    let (out, tape) = rnn.forward_train_with(&p.x, Some(&p.state), &opts).unwrap();
    if let Some(seed) = seed {
        assert_eq!(tape.dropout_seed(), Some(seed));
    }
    let g = rnn.backward(&tape, Some(&p.dy), None, None).unwrap();
    (
        out.y.download(ctx).unwrap(),
        out.h_n.download(ctx).unwrap(),
        g.to_host(rnn).unwrap(),
    )
}

fn model(ctx: &Context, cfg: &RnnConfig) -> Rnn {
    Rnn::with_config(ctx, cfg, &Weights::init(cfg, 3)).unwrap()
}

fn lstm_l2_bi(p: f32) -> RnnConfig {
    RnnConfig::lstm(5, 8)
        .num_layers(2)
        .direction(Direction::Bidirectional)
        .layout(Layout::BatchFirst)
        .dropout(p)
        .build()
        .unwrap()
}

#[test]
fn the_same_seed_gives_the_same_result_and_another_seed_another() {
    let Some(ctx) = ctx() else { return };
    let cfg = lstm_l2_bi(0.5);
    let rnn = model(ctx, &cfg);
    let p = problem(ctx, &cfg, 6, 3);
    let a = train(ctx, &rnn, &p, None, Some(42));
    let b = train(ctx, &rnn, &p, None, Some(42));
    assert_eq!(bits(&a.0), bits(&b.0));
    assert_eq!(bits(&a.2.dx), bits(&b.2.dx));
    assert_eq!(
        bits(&a.2.params[0].weight_ih),
        bits(&b.2.params[0].weight_ih)
    );
    let c = train(ctx, &rnn, &p, None, Some(43));
    assert_ne!(bits(&a.0), bits(&c.0));
    // Without a seed, each training pass draws a fresh one.
    let (_, t1) = rnn.forward_train(&p.x, Some(&p.state)).unwrap();
    let (_, t2) = rnn.forward_train(&p.x, Some(&p.state)).unwrap();
    assert!(t1.dropout_seed().is_some());
    assert_ne!(t1.dropout_seed(), t2.dropout_seed());
}

#[test]
fn the_gpu_mask_drops_at_rate_p_and_is_the_reference_mask() {
    let Some(ctx) = ctx() else { return };
    let n = 1 << 18;
    for p in [0.1f32, 0.5, 0.8] {
        let ones = GpuTensor::upload(ctx, &vec![1.0; n], &[n]).unwrap();
        apply_dropout(ctx, &ones, 7, 1, p).unwrap();
        let got = ones.download(ctx).unwrap();
        let dropped = got.iter().filter(|v| **v == 0.0).count() as f64 / n as f64;
        // Binomial: sd = sqrt(p(1-p)/n) <= 1e-3 at n = 2^18; 5 sd.
        let sd = (p as f64 * (1.0 - p as f64) / n as f64).sqrt();
        assert!(
            (dropped - p as f64).abs() < 5.0 * sd,
            "p {p}: dropped {dropped}"
        );
        // The very mask of the CPU reference: same zeros, kept values 1/(1-p) in f32.
        let want = dropout::mask(7, 1, p, n);
        assert_close(&format!("mask p {p}"), &got, &want, 0.0, 2e-7);
        eprintln!(
            "p {p}: dropped fraction {dropped:.4} (5 sd = {:.4})",
            5.0 * sd
        );
    }
}

/// GPU training with dropout against the CPU stack reference drawing the same masks: outputs
/// and every gradient, so the gradient reaches a layer only through the units its upper
/// neighbour kept.
fn check_against_cpu(ctx: &Context, name: &str, cfg: &RnnConfig, lengths: Option<&[usize]>) {
    let (t, b) = (6, 3);
    let rnn = model(ctx, cfg);
    let p = problem(ctx, cfg, t, b);
    let seed = 1234;
    let (y, h_n, g) = train(ctx, &rnn, &p, lengths, Some(seed));
    let (x, h0, c0, dy) = &p.host;
    let lstm = cfg.cell() == CellKind::Lstm;
    let c0 = lstm.then(|| to_f64(c0));
    let w = Weights::init(cfg, 3);
    let trace = stack_forward_train(
        cfg,
        &w,
        &to_f64(x),
        t,
        b,
        HostState {
            h0: Some(&to_f64(h0)),
            c0: c0.as_deref(),
        },
        &RunOptions {
            lengths,
            dropout_seed: Some(seed),
            ..Default::default()
        },
    )
    .unwrap();
    let rg = stack_backward(
        cfg,
        &w,
        &trace,
        HostState {
            h0: Some(&to_f64(h0)),
            c0: c0.as_deref(),
        },
        Upstream {
            dy: Some(&to_f64(dy)),
            dh_n: None,
            dc_n: None,
        },
        &RunOptions {
            lengths,
            ..Default::default()
        },
    )
    .unwrap();
    // Tolerances as tests/topology_gpu.rs: f32 sums, observed ~1e-7.
    assert_close(&format!("{name}/y"), &y, &trace.y, 2e-5, 1e-4);
    assert_close(&format!("{name}/h_n"), &h_n, &trace.h_n, 2e-5, 1e-4);
    let grad = |what: &str, got: &[f32], want: &[f64]| {
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert_close(
            &format!("{name}/{what}"),
            got,
            want,
            1e-4 * scale + 1e-6,
            0.0,
        );
    };
    grad("dx", &g.dx, &rg.dx);
    grad("dh0", &g.dh0, &rg.dh0);
    for (k, (gp, r)) in g.params.iter().zip(&rg.layers).enumerate() {
        grad(&format!("dW_ih {k}"), &gp.weight_ih, &r.d_weight_ih);
        grad(&format!("dW_hh {k}"), &gp.weight_hh, &r.d_weight_hh);
        grad(
            &format!("db_ih {k}"),
            gp.bias_ih.as_ref().unwrap(),
            &r.d_bias_ih,
        );
    }
    eprintln!(
        "{name}: max |gpu - cpu| y {:.1e}, dx {:.1e}",
        common::max_abs_diff(&y, &trace.y),
        common::max_abs_diff(&g.dx, &rg.dx)
    );
}

#[test]
fn training_with_dropout_matches_the_cpu_reference_with_the_same_mask() {
    let Some(ctx) = ctx() else { return };
    check_against_cpu(
        ctx,
        "lstm l2 bi bf p0.4",
        &lstm_l2_bi(0.4),
        Some(&[6, 2, 4]),
    );
    let cfg = RnnConfig::gru(5, 7)
        .num_layers(3)
        .dropout(0.3)
        .build()
        .unwrap();
    check_against_cpu(ctx, "gru l3 p0.3", &cfg, None);
}

#[test]
fn inference_ignores_dropout() {
    let Some(ctx) = ctx() else { return };
    let with = model(ctx, &lstm_l2_bi(0.5));
    let without = model(ctx, &lstm_l2_bi(0.0));
    let p = problem(ctx, &lstm_l2_bi(0.5), 5, 2);
    let a = with
        .forward(&p.x, Some(&p.state))
        .unwrap()
        .y
        .download(ctx)
        .unwrap();
    let b = without
        .forward(&p.x, Some(&p.state))
        .unwrap()
        .y
        .download(ctx)
        .unwrap();
    assert_eq!(bits(&a), bits(&b));
    // ... while training with it changes the output.
    let (c, _, _) = train(ctx, &with, &p, None, Some(1));
    assert_ne!(bits(&a), bits(&c));
}
