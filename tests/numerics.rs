//! Numerics on the GPU:
//! - inputs up to ±1e4 give finite outputs and gradients for every cell and every activation
//!   in every role, matching the f64 reference (whose values stay far inside f32's range over
//!   these few steps, so finiteness is owed);
//! - a NaN in one batch row shows up in that row's outputs and nowhere else: every other row's
//!   outputs, final states and input gradients are bit-identical to a run where that row is
//!   finite.

mod common;

use common::gpu::ctx;
use common::seeded;
use rnn_wgpu::cpu::{stack_backward, stack_forward, to_f64};
use rnn_wgpu::{
    Activation, Activations, CellKind, Context, Direction, GpuTensor, HostState, Layout,
    Nonlinearity, Rnn, RnnConfig, RunOptions, State, Upstream, Weights,
};

/// Every ONNX activation, with the parameters the other tests use.
fn activations() -> Vec<Activation> {
    use Activation::*;
    vec![
        Sigmoid,
        Tanh,
        Relu,
        HardSigmoid {
            alpha: 0.2,
            beta: 0.5,
        },
        LeakyRelu { alpha: 0.1 },
        ThresholdedRelu { alpha: 0.2 },
        ScaledTanh {
            alpha: 1.5,
            beta: 0.7,
        },
        Affine {
            alpha: 0.6,
            beta: 0.1,
        },
        Elu { alpha: 0.8 },
        Softsign,
        Softplus,
    ]
}

/// Each activation in each role of each cell, plus the cells' defaults and the LSTM and GRU
/// variants.
fn configs() -> Vec<(String, RnnConfig)> {
    let (i, h) = (5, 7);
    let mut out = vec![
        ("lstm".into(), RnnConfig::lstm(i, h).build().unwrap()),
        (
            "lstm peepholes proj clips".into(),
            RnnConfig::lstm(i, h)
                .peepholes(true)
                .proj_size(3)
                .gate_clip(5.0)
                .cell_clip(-20.0, 20.0)
                .build()
                .unwrap(),
        ),
        (
            "lstm input_forget".into(),
            RnnConfig::lstm(i, h).input_forget(true).build().unwrap(),
        ),
        ("gru".into(), RnnConfig::gru(i, h).build().unwrap()),
        (
            "gru reset-before".into(),
            RnnConfig::gru(i, h)
                .linear_before_reset(false)
                .build()
                .unwrap(),
        ),
    ];
    // Every activation in every role of every cell, in as few models as that takes (each
    // model is a set of pipelines to compile): model k uses activation k in the first role and
    // others further down the list in the other roles. An unbounded gate (ReLU, ELU, ...)
    // feeding an unbounded output activation can make the exact result overflow f32 within
    // three steps of 1e4 inputs (no finite f32 answer exists then), so the two pairs of the
    // rotation that would do that take the default there, and one more model each carries
    // the displaced activation.
    let acts = activations();
    let n = acts.len();
    let elu_gate = |a: Activation| matches!(a, Activation::Elu { .. });
    let leaky_gate = |a: Activation| matches!(a, Activation::LeakyRelu { .. });
    let d = Activations::default();
    let mut lstm_sets = Vec::new();
    let mut gru_sets = Vec::new();
    for k in 0..n {
        lstm_sets.push(Activations {
            gate: acts[k],
            cell: acts[(k + 3) % n],
            hidden: if elu_gate(acts[k]) {
                d.hidden
            } else {
                acts[(k + 7) % n]
            },
        });
        gru_sets.push(Activations {
            gate: acts[k],
            cell: if leaky_gate(acts[k]) {
                d.cell
            } else {
                acts[(k + 4) % n]
            },
            ..d
        });
    }
    lstm_sets.push(Activations {
        hidden: Activation::LeakyRelu { alpha: 0.1 },
        ..d
    });
    gru_sets.push(Activations {
        cell: Activation::Elu { alpha: 0.8 },
        ..d
    });
    for a in lstm_sets {
        out.push((
            format!("lstm {a:?}"),
            RnnConfig::lstm(i, h).activations(a).build().unwrap(),
        ));
    }
    for a in gru_sets {
        out.push((
            format!("gru {a:?}"),
            RnnConfig::gru(i, h).activations(a).build().unwrap(),
        ));
    }
    for &a in &acts {
        let rnn = Activations { cell: a, ..d };
        out.push((
            format!("rnn {a:?}"),
            RnnConfig::rnn(i, h, Nonlinearity::Tanh)
                .activations(rnn)
                .build()
                .unwrap(),
        ));
    }
    out
}

fn scale(v: &[f64]) -> f64 {
    v.iter().fold(0.0f64, |m, x| m.max(x.abs()))
}

/// Within `1e-4` of the tensor's scale (plus `1e-6`): inputs of 1e4 make every sum 1e4 times
/// larger, and f32 rounding with it; relative to the scale, the rounding argument of
/// `tests/topology_gpu.rs` holds unchanged. Every GPU value must be finite.
fn check(name: &str, got: &[f32], want: &[f64]) {
    assert!(
        want.iter().all(|v| v.abs() < 1e30),
        "{name}: the reference leaves f32's range ({:e}); the check would be vacuous",
        scale(want)
    );
    if let Some(k) = got.iter().position(|v| !v.is_finite()) {
        panic!("{name}: element {k} is {} (reference {})", got[k], want[k]);
    }
    common::assert_close(name, got, want, 1e-4 * scale(want) + 1e-6, 0.0);
}

#[test]
fn inputs_up_to_1e4_give_finite_outputs_and_gradients_for_every_activation() {
    let Some(ctx) = ctx() else { return };
    let (t, b) = (3, 4);
    let mut out_of_range = Vec::new();
    let configs = configs();
    for (k, (name, cfg)) in configs.iter().enumerate() {
        let (i, s) = (cfg.input_size(), cfg.state_size());
        let w = Weights::init(cfg, 40 + k as u64);
        let rnn = Rnn::new(ctx, &w).unwrap();
        // Uniform in ±1e4, with the extremes themselves in the first row.
        let mut x = seeded(41 + k as u64, t * b * i, 1e4);
        x[..i].iter_mut().enumerate().for_each(|(j, v)| {
            *v = if j % 2 == 0 { 1e4 } else { -1e4 };
        });
        let dy = seeded(42, t * b * s, 1.0);
        let up = |v: &[f32], sh: &[usize]| GpuTensor::upload(ctx, v, sh).unwrap();
        let (out, tape) = rnn.forward_train(&up(&x, &[t, b, i]), None).unwrap();
        let g = rnn
            .backward(&tape, Some(&up(&dy, &[t, b, s])), None, None)
            .unwrap()
            .to_host(&rnn)
            .unwrap();
        let x64 = to_f64(&x);
        let opts = RunOptions::default();
        let r = stack_forward(cfg, &w, &x64, t, b, HostState::zeros(), &opts).unwrap();
        let dy64 = to_f64(&dy);
        let rg =
            stack_backward(cfg, &w, &r, HostState::zeros(), Upstream::dy(&dy64), &opts).unwrap();
        let y = out.y.download(ctx).unwrap();
        if !(scale(&r.y) < 1e30 && scale(&rg.dx) < 1e30) {
            out_of_range.push(name.clone());
            continue;
        }
        check(&format!("{name} y"), &y, &r.y);
        check(
            &format!("{name} h_n"),
            &out.h_n.download(ctx).unwrap(),
            &r.h_n,
        );
        if let (Some(c), Some(rc)) = (&out.c_n, &r.c_n) {
            check(&format!("{name} c_n"), &c.download(ctx).unwrap(), rc);
        }
        // Gradients: finite wherever the reference is in range. Their values are not compared:
        // with inputs of 1e4 most gates saturate, and a saturated gate's derivative `s(1-s)`
        // computed in f32 keeps only the bits of `1-s` above 2^-24 (none at all once
        // |pre| > 17), while `dW_ih = sum dgate * x` multiplies those by 1e4. That is f32's
        // precision (PyTorch's f32 cells compute the same products), not an error of the
        // kernels; tests/topology_gpu.rs and tests/prop_valid.rs compare gradients at unit
        // scale.
        for (what, got, want) in [
            ("dx", &g.dx, &rg.dx),
            ("dW_hh", &g.params[0].weight_hh, &rg.layers[0].d_weight_hh),
            ("dW_ih", &g.params[0].weight_ih, &rg.layers[0].d_weight_ih),
        ] {
            assert!(
                want.iter().all(|v| v.abs() < 1e30),
                "{name} {what}: reference out of range"
            );
            if let Some(k) = got.iter().position(|v| !v.is_finite()) {
                panic!(
                    "{name} {what}: element {k} is {} (reference {})",
                    got[k], want[k]
                );
            }
        }
    }
    eprintln!(
        "{} of {} models checked; exact result beyond f32's range: {out_of_range:?}",
        configs.len() - out_of_range.len(),
        configs.len()
    );
    // `configs` keeps every model's exact result inside f32's range, so finite is owed.
    assert!(
        out_of_range.is_empty(),
        "exact result beyond f32: {out_of_range:?}"
    );
}

/// `y`, `h_n`, `c_n`, `dx`, `dh0`, `dc0` of one GPU run, on the host.
struct Run {
    y: Vec<f32>,
    h_n: Vec<f32>,
    c_n: Option<Vec<f32>>,
    dx: Vec<f32>,
    dh0: Vec<f32>,
    dc0: Option<Vec<f32>>,
}

fn run(ctx: &Context, rnn: &Rnn, x: &[f32], (t, b): (usize, usize)) -> Run {
    let cfg = rnn.config();
    let (i, s, h) = (cfg.input_size(), cfg.state_size(), cfg.hidden_size());
    let ld = cfg.num_layers() * cfg.num_directions();
    let lstm = cfg.cell() == CellKind::Lstm;
    let seq = |f: usize| match cfg.layout() {
        Layout::BatchFirst => vec![b, t, f],
        _ => vec![t, b, f],
    };
    let up = |v: &[f32], sh: &[usize]| GpuTensor::upload(ctx, v, sh).unwrap();
    let state = State {
        h: up(&seeded(51, ld * b * s, 0.5), &[ld, b, s]),
        c: lstm.then(|| up(&seeded(52, ld * b * h, 0.5), &[ld, b, h])),
    };
    let (out, tape) = rnn.forward_train(&up(x, &seq(i)), Some(&state)).unwrap();
    let dy = up(
        &seeded(53, t * b * cfg.output_size(), 1.0),
        &seq(cfg.output_size()),
    );
    let dh_n = up(&seeded(54, ld * b * s, 1.0), &[ld, b, s]);
    let g = rnn.backward(&tape, Some(&dy), Some(&dh_n), None).unwrap();
    Run {
        y: out.y.download(ctx).unwrap(),
        h_n: out.h_n.download(ctx).unwrap(),
        c_n: out.c_n.map(|c| c.download(ctx).unwrap()),
        dx: g.dx.download(ctx).unwrap(),
        dh0: g.dh0.download(ctx).unwrap(),
        dc0: g.dc0.map(|c| c.download(ctx).unwrap()),
    }
}

#[test]
fn a_nan_in_one_batch_row_stays_in_that_row() {
    let Some(ctx) = ctx() else { return };
    let (t, b) = (6, 5);
    let cases = [
        (
            "lstm l2 bi",
            RnnConfig::lstm(4, 6)
                .num_layers(2)
                .direction(Direction::Bidirectional),
        ),
        (
            "lstm proj peep batch-first",
            RnnConfig::lstm(4, 6)
                .proj_size(3)
                .peepholes(true)
                .layout(Layout::BatchFirst),
        ),
        ("gru l2", RnnConfig::gru(4, 6).num_layers(2)),
        (
            "gru reset-before reverse",
            RnnConfig::gru(4, 6)
                .linear_before_reset(false)
                .direction(Direction::Reverse),
        ),
        (
            "rnn relu bi batch-first",
            RnnConfig::rnn(4, 6, Nonlinearity::Relu)
                .direction(Direction::Bidirectional)
                .layout(Layout::BatchFirst),
        ),
    ];
    for (name, builder) in cases {
        let cfg = builder.build().unwrap();
        let rnn = Rnn::new(ctx, &Weights::init(&cfg, 50)).unwrap();
        let i = cfg.input_size();
        let x = seeded(55, t * b * i, 1.0);
        let clean = run(ctx, &rnn, &x, (t, b));
        for row in [0, 3] {
            // NaN in one feature of `row` at step 2.
            let at = match cfg.layout() {
                Layout::BatchFirst => (row * t + 2) * i + 1,
                _ => (2 * b + row) * i + 1,
            };
            let mut bad = x.clone();
            bad[at] = f32::NAN;
            let dirty = run(ctx, &rnn, &bad, (t, b));
            let pairs: Vec<(&str, &[f32], &[f32], bool)> = vec![
                ("y", &clean.y, &dirty.y, true),
                ("dx", &clean.dx, &dirty.dx, true),
                ("h_n", &clean.h_n, &dirty.h_n, false),
                ("dh0", &clean.dh0, &dirty.dh0, false),
            ];
            let mut pairs = pairs;
            if let (Some(a), Some(d)) = (&clean.c_n, &dirty.c_n) {
                pairs.push(("c_n", a, d, false));
            }
            if let (Some(a), Some(d)) = (&clean.dc0, &dirty.dc0) {
                pairs.push(("dc0", a, d, false));
            }
            for (what, a, d, seq) in pairs {
                let mask = row_mask(&cfg, seq, (t, b), a.len(), row);
                let mut nan_in_row = false;
                for (e, (&va, &vd)) in a.iter().zip(d).enumerate() {
                    if mask[e] {
                        nan_in_row |= vd.is_nan();
                    } else {
                        assert!(
                            va.to_bits() == vd.to_bits(),
                            "{name}: {what}[{e}] of another row than {row} changed: {va} -> {vd}"
                        );
                    }
                }
                // The NaN reaches its own row's outputs and states, except through a ReLU:
                // `max(NaN, 0)` is 0 in WGSL as in the f64 reference (Rust's `f64::max`).
                if what != "dx" && cfg.activations().cell != Activation::Relu {
                    assert!(nan_in_row, "{name}: {what} of row {row} shows no NaN");
                }
            }
        }
    }
}

/// Which elements of a tensor of `len` elements belong to batch row `row`: a sequence tensor
/// (`seq`: `[T, B, F]`, or `[B, T, F]` batch-first) or a state tensor (`[L*D, B, F]`).
fn row_mask(
    cfg: &RnnConfig,
    seq: bool,
    (t, b): (usize, usize),
    len: usize,
    row: usize,
) -> Vec<bool> {
    (0..len)
        .map(|e| {
            if seq {
                let f = len / (t * b);
                let vector = e / f;
                match cfg.layout() {
                    Layout::BatchFirst => vector / t == row,
                    _ => vector % b == row,
                }
            } else {
                let ld = cfg.num_layers() * cfg.num_directions();
                let f = len / (ld * b);
                (e / f) % b == row
            }
        })
        .collect()
}
