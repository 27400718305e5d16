//! The GPU stack (several layers, reverse and bidirectional directions, per-row lengths,
//! batch-first) against PyTorch and against the CPU stack reference.
//!
//! - Every `TOPOLOGY_CASES` PyTorch fixture (2-layer bidirectional LSTM and GRU, packed with
//!   `enforce_sorted=False`, batch-first, LSTM with `proj_size`): outputs and every gradient.
//! - Other topologies against `cpu::stack_forward` / `cpu::stack_backward`: reverse only, three
//!   layers, RNN and GRU reset-before cells, peepholes, B = 1, time chunking.
//! - Padding is exactly zero in `y` and `dx`; bad lengths get typed errors.

mod common;

use common::fixtures::{self, TopologyFixture};
use common::gpu::ctx;
use common::{assert_close, assert_zero_past_lengths};
use rnn_wgpu::cpu::{stack_backward, stack_forward, to_f64};
use rnn_wgpu::{
    CellKind, Context, Direction, Error, GpuTensor, GruReset, Layout, Nonlinearity, Rnn, RnnConfig,
    RunOptions, State, Weights,
};
use rnn_wgpu::{HostState, Upstream};

/// Forward outputs: f32 sums of at most (I + S) * G ≈ 100 products of O(1) terms per step over
/// a few layers; observed ~1e-7. 2e-5 absolute + 1e-4 relative leaves a wide margin while a
/// wrong index, direction or length shows as O(0.1).
const Y_ATOL: f64 = 2e-5;
const Y_RTOL: f64 = 1e-4;

/// Gradients: each tensor within 1e-4 of its own scale (max |reference|) plus 1e-6, the bound
/// used for the one-layer gradients (`tests/lstm_backward.rs`): f32 sums over T*B terms.
fn assert_grad(name: &str, got: &[f32], want: &[f64]) {
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert_close(name, got, want, 1e-4 * scale + 1e-6, 0.0);
}

fn suffix(k: usize, dirs: usize) -> String {
    let (l, d) = (k / dirs, k % dirs);
    if d == 0 {
        format!("_l{l}")
    } else {
        format!("_l{l}_reverse")
    }
}

struct GpuRun {
    y: Vec<f32>,
    y_inference: Vec<f32>,
    h_n: Vec<f32>,
    c_n: Option<Vec<f32>>,
    grads: rnn_wgpu::HostGrads,
}

/// Forward (inference and training) and backward on the GPU with every upstream gradient.
#[allow(clippy::too_many_arguments)]
fn run_gpu(
    ctx: &Context,
    rnn: &Rnn,
    x: &[f32],
    h0: &[f32],
    c0: Option<&[f32]>,
    lengths: Option<&[usize]>,
    dy: &[f32],
    dh_n: &[f32],
    dc_n: Option<&[f32]>,
    (t, b): (usize, usize),
) -> GpuRun {
    let cfg = rnn.config().clone();
    let (i, h, s) = (cfg.input_size(), cfg.hidden_size(), cfg.state_size());
    let ld = cfg.num_layers() * cfg.num_directions();
    let seq = |f: usize| match cfg.layout() {
        Layout::BatchFirst => vec![b, t, f],
        _ => vec![t, b, f],
    };
    let xt = GpuTensor::upload(ctx, x, &seq(i)).unwrap();
    let state = State {
        h: GpuTensor::upload(ctx, h0, &[ld, b, s]).unwrap(),
        c: c0.map(|c| GpuTensor::upload(ctx, c, &[ld, b, h]).unwrap()),
    };
    let opts = RunOptions {
        lengths,
        ..Default::default()
    };
    let inference = rnn.forward_with(&xt, Some(&state), &opts).unwrap();
    let (out, tape) = rnn.forward_train_with(&xt, Some(&state), &opts).unwrap();
    let dyt = GpuTensor::upload(ctx, dy, &seq(cfg.output_size())).unwrap();
    let dhn = GpuTensor::upload(ctx, dh_n, &[ld, b, s]).unwrap();
    let dcn = dc_n.map(|d| GpuTensor::upload(ctx, d, &[ld, b, h]).unwrap());
    let grads = rnn
        .backward(&tape, Some(&dyt), Some(&dhn), dcn.as_ref())
        .unwrap()
        .to_host(rnn)
        .unwrap();
    GpuRun {
        y: out.y.download(ctx).unwrap(),
        y_inference: inference.y.download(ctx).unwrap(),
        h_n: out.h_n.download(ctx).unwrap(),
        c_n: out.c_n.map(|c| c.download(ctx).unwrap()),
        grads,
    }
}

fn check_fixture(ctx: &Context, fx: &TopologyFixture) {
    let case = &fx.name;
    let cfg = &fx.cfg;
    let (t, b) = (fx.steps, fx.batch);
    let (h, s, dirs) = (cfg.hidden_size(), cfg.state_size(), cfg.num_directions());
    let ld = cfg.num_layers() * dirs;
    let seq = |f: usize| match cfg.layout() {
        Layout::BatchFirst => vec![b, t, f],
        _ => vec![t, b, f],
    };
    let rnn = Rnn::with_config(ctx, cfg, &fx.weights).unwrap();
    let lstm = fx.has_cell_state();
    let run = run_gpu(
        ctx,
        &rnn,
        &fx.x,
        &fx.h0,
        lstm.then_some(&fx.c0[..]),
        fx.lengths.as_deref(),
        &fx.dy,
        &fx.dh_n,
        lstm.then_some(&fx.dc_n[..]),
        (t, b),
    );
    let y = fx.f64_shaped("y", &seq(dirs * s));
    assert_close(&format!("{case}/y"), &run.y, &y, Y_ATOL, Y_RTOL);
    assert_close(
        &format!("{case}/y inference"),
        &run.y_inference,
        &y,
        Y_ATOL,
        Y_RTOL,
    );
    let h_n = fx.f64_shaped("h_n", &[ld, b, s]);
    assert_close(&format!("{case}/h_n"), &run.h_n, &h_n, Y_ATOL, Y_RTOL);
    if lstm {
        let c_n = fx.f64_shaped("c_n", &[ld, b, h]);
        assert_close(
            &format!("{case}/c_n"),
            run.c_n.as_ref().unwrap(),
            &c_n,
            Y_ATOL,
            Y_RTOL,
        );
    }
    let g = &run.grads;
    assert_grad(
        &format!("{case}/dx"),
        &g.dx,
        &fx.f64_shaped("grad.x", &seq(cfg.input_size())),
    );
    assert_grad(
        &format!("{case}/dh0"),
        &g.dh0,
        &fx.f64_shaped("grad.h0", &[ld, b, s]),
    );
    if lstm {
        let want = fx.f64_shaped("grad.c0", &[ld, b, h]);
        assert_grad(&format!("{case}/dc0"), g.dc0.as_ref().unwrap(), &want);
    }
    let gh = cfg.gate_count() * h;
    assert_eq!(g.params.len(), ld);
    for (k, p) in g.params.iter().enumerate() {
        let sfx = suffix(k, dirs);
        let i_l = cfg.layer_input_size(k / dirs);
        let name = |n: &str| format!("{case}/{n}{sfx}");
        let want = |n: &str, shape: &[usize]| fx.f64_shaped(&format!("grad.{n}{sfx}"), shape);
        assert_grad(
            &name("weight_ih"),
            &p.weight_ih,
            &want("weight_ih", &[gh, i_l]),
        );
        assert_grad(
            &name("weight_hh"),
            &p.weight_hh,
            &want("weight_hh", &[gh, s]),
        );
        assert_grad(
            &name("bias_ih"),
            p.bias_ih.as_ref().unwrap(),
            &want("bias_ih", &[gh]),
        );
        assert_grad(
            &name("bias_hh"),
            p.bias_hh.as_ref().unwrap(),
            &want("bias_hh", &[gh]),
        );
        if let Some(ps) = cfg.proj_size() {
            let got = p.weight_hr.as_ref().unwrap();
            assert_grad(&name("weight_hr"), got, &want("weight_hr", &[ps, h]));
        }
    }
    if let Some(lengths) = &fx.lengths {
        assert_zero_past_lengths(case, cfg, &run.y, lengths, t, b, dirs * s, "y");
        assert_zero_past_lengths(case, cfg, &g.dx, lengths, t, b, cfg.input_size(), "dx");
    }
    eprintln!(
        "{case}: max |gpu - torch| y {:.1e}, dx {:.1e}",
        common::max_abs_diff(&run.y, &y),
        common::max_abs_diff(&g.dx, &fx.f64_shaped("grad.x", &seq(cfg.input_size())))
    );
}

#[test]
fn gpu_stack_matches_pytorch_on_every_topology_fixture() {
    let Some(ctx) = ctx() else { return };
    for stem in fixtures::topology_files() {
        check_fixture(ctx, &fixtures::load_topology(stem));
    }
}

/// A random problem for `cfg` checked against the CPU stack reference.
fn check_against_cpu(
    ctx: &Context,
    name: &str,
    cfg: &RnnConfig,
    t: usize,
    b: usize,
    lengths: Option<&[usize]>,
    chunk: Option<usize>,
) {
    let w = Weights::init(cfg, 11);
    let (i, h, s) = (cfg.input_size(), cfg.hidden_size(), cfg.state_size());
    let ld = cfg.num_layers() * cfg.num_directions();
    let lstm = cfg.cell() == CellKind::Lstm;
    let x = common::seeded(1, t * b * i, 1.0);
    let h0 = common::seeded(2, ld * b * s, 0.5);
    let c0 = common::seeded(3, ld * b * h, 0.5);
    let dy = common::seeded(4, t * b * cfg.output_size(), 1.0);
    let dh_n = common::seeded(5, ld * b * s, 1.0);
    let dc_n = common::seeded(6, ld * b * h, 1.0);
    let mut rnn = Rnn::with_config(ctx, cfg, &w).unwrap();
    if let Some(c) = chunk {
        rnn = rnn.with_max_chunk_steps(c).unwrap();
    }
    let run = run_gpu(
        ctx,
        &rnn,
        &x,
        &h0,
        lstm.then_some(&c0[..]),
        lengths,
        &dy,
        &dh_n,
        lstm.then_some(&dc_n[..]),
        (t, b),
    );
    let c0d = lstm.then(|| to_f64(&c0));
    let dcd = lstm.then(|| to_f64(&dc_n));
    let trace = stack_forward(
        cfg,
        &w,
        &to_f64(&x),
        t,
        b,
        HostState {
            h0: Some(&to_f64(&h0)),
            c0: c0d.as_deref(),
        },
        &RunOptions {
            lengths,
            ..Default::default()
        },
    )
    .unwrap();
    let rg = stack_backward(
        cfg,
        &w,
        &trace,
        HostState {
            h0: Some(&to_f64(&h0)),
            c0: c0d.as_deref(),
        },
        Upstream {
            dy: Some(&to_f64(&dy)),
            dh_n: Some(&to_f64(&dh_n)),
            dc_n: dcd.as_deref(),
        },
        &RunOptions {
            lengths,
            ..Default::default()
        },
    )
    .unwrap();
    assert_close(&format!("{name}/y"), &run.y, &trace.y, Y_ATOL, Y_RTOL);
    assert_close(
        &format!("{name}/y inference"),
        &run.y_inference,
        &trace.y,
        Y_ATOL,
        Y_RTOL,
    );
    assert_close(&format!("{name}/h_n"), &run.h_n, &trace.h_n, Y_ATOL, Y_RTOL);
    if let (Some(g), Some(r)) = (&run.c_n, &trace.c_n) {
        assert_close(&format!("{name}/c_n"), g, r, Y_ATOL, Y_RTOL);
    }
    let g = &run.grads;
    assert_grad(&format!("{name}/dx"), &g.dx, &rg.dx);
    assert_grad(&format!("{name}/dh0"), &g.dh0, &rg.dh0);
    if let (Some(gc), Some(rc)) = (&g.dc0, &rg.dc0) {
        assert_grad(&format!("{name}/dc0"), gc, rc);
    }
    for (k, (p, r)) in g.params.iter().zip(&rg.layers).enumerate() {
        assert_grad(&format!("{name}/dW_ih {k}"), &p.weight_ih, &r.d_weight_ih);
        assert_grad(&format!("{name}/dW_hh {k}"), &p.weight_hh, &r.d_weight_hh);
        if let Some(bi) = &p.bias_ih {
            assert_grad(&format!("{name}/db_ih {k}"), bi, &r.d_bias_ih);
            assert_grad(
                &format!("{name}/db_hh {k}"),
                p.bias_hh.as_ref().unwrap(),
                &r.d_bias_hh,
            );
        }
        if let (Some(gp), Some(rp)) = (&p.peephole, &r.d_peephole) {
            assert_grad(&format!("{name}/dP {k}"), gp, rp);
        }
        if let (Some(gp), Some(rp)) = (&p.weight_hr, &r.d_weight_hr) {
            assert_grad(&format!("{name}/dW_hr {k}"), gp, rp);
        }
    }
    if let Some(lengths) = lengths {
        assert_zero_past_lengths(name, cfg, &run.y, lengths, t, b, cfg.output_size(), "y");
        assert_zero_past_lengths(name, cfg, &g.dx, lengths, t, b, i, "dx");
    }
    eprintln!(
        "{name}: max |gpu - cpu| y {:.1e}, dx {:.1e}",
        common::max_abs_diff(&run.y, &trace.y),
        common::max_abs_diff(&g.dx, &rg.dx)
    );
}

#[test]
fn reverse_direction_with_lengths_matches_the_cpu_reference() {
    let Some(ctx) = ctx() else { return };
    for cell in [CellKind::Lstm, CellKind::Gru, CellKind::Rnn] {
        let b = match cell {
            CellKind::Lstm => RnnConfig::lstm(5, 9),
            CellKind::Gru => RnnConfig::gru(5, 9),
            _ => RnnConfig::rnn(5, 9, Nonlinearity::Tanh),
        };
        let cfg = b.direction(Direction::Reverse).build().unwrap();
        check_against_cpu(
            ctx,
            &format!("{cell:?} reverse"),
            &cfg,
            7,
            4,
            Some(&[3, 7, 1, 5]),
            None,
        );
        check_against_cpu(
            ctx,
            &format!("{cell:?} reverse full"),
            &cfg,
            7,
            4,
            None,
            None,
        );
    }
}

#[test]
fn three_layer_bidirectional_variants_match_the_cpu_reference() {
    let Some(ctx) = ctx() else { return };
    let cases = [
        (
            "lstm peephole l3 bi bf",
            RnnConfig::lstm(4, 8).peepholes(true).num_layers(3),
            Layout::BatchFirst,
        ),
        (
            "gru reset-before l3 bi",
            RnnConfig::gru(4, 8)
                .linear_before_reset(false)
                .num_layers(3),
            Layout::SeqMajor,
        ),
        (
            "relu rnn l3 bi bf",
            RnnConfig::rnn(4, 8, Nonlinearity::Relu).num_layers(3),
            Layout::BatchFirst,
        ),
        (
            "lstm proj l3 bi",
            RnnConfig::lstm(4, 8).proj_size(3).num_layers(3),
            Layout::SeqMajor,
        ),
    ];
    for (name, builder, layout) in cases {
        let cfg = builder
            .direction(Direction::Bidirectional)
            .layout(layout)
            .build()
            .unwrap();
        check_against_cpu(ctx, name, &cfg, 6, 3, Some(&[2, 6, 4]), None);
    }
}

#[test]
fn batch_of_one_and_time_chunks_match_the_cpu_reference() {
    let Some(ctx) = ctx() else { return };
    let cfg = RnnConfig::lstm(3, 17)
        .num_layers(2)
        .direction(Direction::Bidirectional)
        .layout(Layout::BatchFirst)
        .build()
        .unwrap();
    check_against_cpu(ctx, "lstm l2 bi B=1", &cfg, 9, 1, Some(&[6]), None);
    // Chunks of 2 steps: the carried state crosses chunk boundaries in both directions.
    check_against_cpu(
        ctx,
        "lstm l2 bi chunked",
        &cfg,
        9,
        5,
        Some(&[9, 2, 5, 1, 8]),
        Some(2),
    );
    let cfg = RnnConfig::gru(3, 6).num_layers(2).build().unwrap();
    check_against_cpu(
        ctx,
        "gru l2 forward chunked",
        &cfg,
        7,
        3,
        Some(&[7, 3, 5]),
        Some(3),
    );
}

#[test]
fn gru_reset_before_uses_the_reset_variant() {
    // Guards the case above: the config really has the reset-before variant.
    let cfg = RnnConfig::gru(4, 8)
        .linear_before_reset(false)
        .build()
        .unwrap();
    assert_eq!(cfg.gru_reset(), GruReset::Before);
}

#[test]
fn bad_lengths_are_typed_errors() {
    let Some(ctx) = ctx() else { return };
    let cfg = RnnConfig::lstm(2, 4).num_layers(2).build().unwrap();
    let rnn = Rnn::new(ctx, &Weights::init(&cfg, 1)).unwrap();
    let x = GpuTensor::zeros(ctx, &[5, 3, 2]).unwrap();
    let run = |lengths: &[usize]| {
        let opts = RunOptions {
            lengths: Some(lengths),
            ..Default::default()
        };
        (
            rnn.forward_with(&x, None, &opts).unwrap_err(),
            rnn.forward_train_with(&x, None, &opts).unwrap_err(),
        )
    };
    for e in <[Error; 2]>::from(run(&[5, 0, 2])) {
        assert!(
            matches!(e, Error::ZeroSize(what) if what.contains("length")),
            "{e}"
        );
    }
    for e in <[Error; 2]>::from(run(&[5, 6, 2])) {
        assert!(
            matches!(&e, Error::ShapeMismatch { name, expected, got } if name.contains("lengths[1]") && expected == &[5] && got == &[6]),
            "{e}"
        );
    }
    for e in <[Error; 2]>::from(run(&[5, 2])) {
        assert!(
            matches!(&e, Error::ShapeMismatch { name, expected, got } if name == "lengths" && expected == &[3] && got == &[2]),
            "{e}"
        );
    }
}

#[test]
fn one_step_passes_match_the_cpu_reference() {
    let Some(ctx) = ctx() else { return };
    // T = 1 takes its own path: the step fuses its input projection (no GEMM), and a
    // batch-first [B, 1, I] tensor is used as the seq-major [1, B, I] it equals.
    let configs = [
        (
            "lstm l2 batch-first",
            RnnConfig::lstm(3, 7)
                .num_layers(2)
                .layout(Layout::BatchFirst),
        ),
        (
            "gru bi batch-first",
            RnnConfig::gru(4, 5)
                .direction(Direction::Bidirectional)
                .layout(Layout::BatchFirst),
        ),
        (
            "gru reset-before",
            RnnConfig::gru(3, 6).linear_before_reset(false),
        ),
        (
            "lstm proj peepholes",
            RnnConfig::lstm(5, 8).proj_size(3).peepholes(true),
        ),
        (
            "rnn no bias",
            RnnConfig::rnn(2, 9, rnn_wgpu::Nonlinearity::Tanh).bias(false),
        ),
    ];
    for (name, builder) in configs {
        let cfg = builder.build().unwrap();
        check_against_cpu(ctx, name, &cfg, 1, 3, None, None);
        check_against_cpu(ctx, name, &cfg, 1, 3, Some(&[1, 1, 1]), None);
    }
}
