//! Both directions of a bidirectional layer in one step dispatch (`rnn_step_pair` forward,
//! `rnn_step_backward_pair` backward: grid z = 2, `workgroup_id.z` picks the direction), where
//! the device allows its 16 storage buffers per stage, against the fallback of one dispatch per
//! direction (`Context::set_paired_steps(false)`, or a device limited to WebGPU's 8) and
//! against the f64 CPU reference:
//! - the plan: one paired dispatch per step, forward and backward (per phase: the GRU
//!   reset-before form has two both ways, the projection two backward) and none of the
//!   one-direction kernels, grid z = 2; no pairing at 8 storage buffers;
//! - LSTM (plain, projection + peepholes, batch-first), GRU (reset after and before), the
//!   plain RNN, two layers, with and without per-row lengths: inference, training forward and
//!   every gradient (the paired backward steps) bit for bit equal to the fallback, and the
//!   outputs within tolerance of the CPU reference;
//! - the split-reduction and register-tiled layouts of the step (larger H and B), and f16
//!   weights, bit for bit.

mod common;

use common::gpu::{ctx, limited, own_ctx};
use common::{assert_close, seeded};
use rnn_wgpu::cpu::{stack_forward, to_f64};
use rnn_wgpu::{
    CellKind, Context, Direction, GpuTensor, HostState, Layout, Nonlinearity, Plan, PlanMode, Rnn,
    RnnConfig, RunOptions, State, WeightPrecision, Weights,
};

/// Forward outputs against the f64 reference: f32 sums of at most (I + S) * G ≈ 100 products
/// of O(1) terms per step over two layers (the bound of tests/topology_gpu.rs, where ~1e-7 is
/// observed); a wrong direction, index or length shows as O(0.1).
const Y_ATOL: f64 = 2e-5;
const Y_RTOL: f64 = 1e-4;

/// Everything a forward, a training forward and a backward pass return, as host vectors.
#[derive(Debug)]
struct Run {
    y: Vec<f32>,
    h_n: Vec<f32>,
    c_n: Option<Vec<f32>>,
    y_train: Vec<f32>,
    /// Every gradient (dx, dh0, dc0, then every parameter), from the training tape.
    grads: Vec<(String, Vec<f32>)>,
}

/// Bit-for-bit equality, reporting the first differing element.
fn assert_bits(name: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{name}: lengths differ");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!("{name}: element {i} differs: {} vs {}", got[i], want[i]);
    }
}

/// How many step dispatches of each kind `plan`'s per-kernel totals of `pass` ("forward" or
/// "backward") count: (paired, one direction), i.e. (`rnn_step_pair`, `rnn_step`) or
/// (`rnn_step_backward_pair`, `rnn_step_backward`).
fn step_counts(plan: &Plan, pass: &str) -> (usize, usize) {
    let text = plan.to_string();
    let totals = text
        .split(&format!("{pass}: whole pass"))
        .nth(1)
        .unwrap_or_else(|| panic!("the plan prints no {pass} totals:\n{text}"));
    let totals = totals.split("backward:").next().unwrap_or(totals);
    let kernel = match pass {
        "forward" => "rnn_step",
        _ => "rnn_step_backward",
    };
    let count = |kernel: &str| {
        totals
            .lines()
            .find_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some(kernel)).then(|| w.next().unwrap().parse().unwrap())
            })
            .unwrap_or(0)
    };
    (count(&format!("{kernel}_pair")), count(kernel))
}

fn forward_step_counts(plan: &Plan) -> (usize, usize) {
    step_counts(plan, "forward")
}

/// Whether `rnn`'s plans of `(t, b)` pair their steps: the inference plan's forward, and (f32
/// models, which can train) the training plan's forward and backward, all or none.
fn pairs(rnn: &Rnn, t: usize, b: usize, lengths: bool) -> bool {
    let plan = rnn.plan(t, b, PlanMode::Inference, lengths).unwrap();
    let forward = forward_step_counts(&plan).0 > 0;
    if rnn.precision() != WeightPrecision::F16 {
        let train = rnn.plan(t, b, PlanMode::Training, lengths).unwrap();
        let trains = (
            forward_step_counts(&train).0 > 0,
            step_counts(&train, "backward").0 > 0,
        );
        assert_eq!(trains, (forward, forward), "{train}");
    }
    forward
}

fn run(
    ctx: &Context,
    rnn: &Rnn,
    x: &[f32],
    h0: &[f32],
    c0: &[f32],
    lengths: Option<&[usize]>,
    (t, b): (usize, usize),
) -> Run {
    let cfg = rnn.config();
    let (i, h, s) = (cfg.input_size(), cfg.hidden_size(), cfg.state_size());
    let ld = cfg.num_layers() * cfg.num_directions();
    let lstm = cfg.cell() == CellKind::Lstm;
    let seq = |f: usize| match cfg.layout() {
        Layout::BatchFirst => vec![b, t, f],
        _ => vec![t, b, f],
    };
    let up = |v: &[f32], shape: &[usize]| GpuTensor::upload(ctx, v, shape).unwrap();
    let xt = up(x, &seq(i));
    let state = State {
        h: up(h0, &[ld, b, s]),
        c: lstm.then(|| up(c0, &[ld, b, h])),
    };
    let opts = RunOptions {
        lengths,
        ..Default::default()
    };
    let out = rnn.forward_with(&xt, Some(&state), &opts).unwrap();
    let mut grads = Vec::new();
    let mut y_train = Vec::new();
    if rnn.precision() != WeightPrecision::F16 {
        let (train, tape) = rnn.forward_train_with(&xt, Some(&state), &opts).unwrap();
        y_train = train.y.download(ctx).unwrap();
        let dy = up(
            &seeded(4, t * b * cfg.output_size(), 1.0),
            &seq(cfg.output_size()),
        );
        let g = rnn
            .backward(&tape, Some(&dy), None, None)
            .unwrap()
            .to_host(rnn)
            .unwrap();
        grads.push(("dx".to_string(), g.dx.clone()));
        grads.push(("dh0".to_string(), g.dh0.clone()));
        if let Some(dc0) = &g.dc0 {
            grads.push(("dc0".to_string(), dc0.clone()));
        }
        for (name, _, v) in g.named_parameters() {
            grads.push((name, v.to_vec()));
        }
    }
    Run {
        y: out.y.download(ctx).unwrap(),
        h_n: out.h_n.download(ctx).unwrap(),
        c_n: out.c_n.map(|c| c.download(ctx).unwrap()),
        y_train,
        grads,
    }
}

/// `cfg` on the paired context and on the fallback: plans as expected, results bit for bit
/// equal, and (f32) within tolerance of the CPU reference.
#[allow(clippy::too_many_arguments)]
fn check(
    paired: &Context,
    fallback: &Context,
    name: &str,
    cfg: &RnnConfig,
    precision: WeightPrecision,
    (t, b): (usize, usize),
    lengths: Option<&[usize]>,
) {
    let started = std::time::Instant::now();
    let w = Weights::init(cfg, 21);
    let (i, h, s) = (cfg.input_size(), cfg.hidden_size(), cfg.state_size());
    let ld = cfg.num_layers() * cfg.num_directions();
    let x = seeded(1, t * b * i, 1.0);
    let h0 = seeded(2, ld * b * s, 0.5);
    let c0 = seeded(3, ld * b * h, 0.5);
    let rnn_p = Rnn::with_precision(paired, &w, precision).unwrap();
    let rnn_f = Rnn::with_precision(fallback, &w, precision).unwrap();
    // The comparison is only worth something where the paired context does pair (a device
    // with fewer than 16 storage buffers per stage runs the fallback on both).
    assert_eq!(
        pairs(&rnn_p, t, b, lengths.is_some()),
        paired.paired_steps(),
        "{name}"
    );
    assert!(!pairs(&rnn_f, t, b, lengths.is_some()), "{name}");
    let got = run(paired, &rnn_p, &x, &h0, &c0, lengths, (t, b));
    let want = run(fallback, &rnn_f, &x, &h0, &c0, lengths, (t, b));
    assert_bits(&format!("{name} y"), &got.y, &want.y);
    assert_bits(&format!("{name} h_n"), &got.h_n, &want.h_n);
    if let (Some(g), Some(w)) = (&got.c_n, &want.c_n) {
        assert_bits(&format!("{name} c_n"), g, w);
    }
    assert_bits(&format!("{name} train y"), &got.y_train, &want.y_train);
    assert_eq!(got.grads.len(), want.grads.len());
    for ((n, g), (_, w)) in got.grads.iter().zip(&want.grads) {
        assert_bits(&format!("{name} {n}"), g, w);
    }
    if precision == WeightPrecision::F16 {
        // The f16 model's own accuracy is tests/f16_weights.rs's; here only the pairing.
        eprintln!("{name}: paired = {}, bit-identical", paired.paired_steps());
        return;
    }
    let lstm = cfg.cell() == CellKind::Lstm;
    let c0d = lstm.then(|| to_f64(&c0));
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
    assert_close(&format!("{name} y"), &got.y, &trace.y, Y_ATOL, Y_RTOL);
    assert_close(
        &format!("{name} train y"),
        &got.y_train,
        &trace.y,
        Y_ATOL,
        Y_RTOL,
    );
    assert_close(&format!("{name} h_n"), &got.h_n, &trace.h_n, Y_ATOL, Y_RTOL);
    if let (Some(g), Some(r)) = (&got.c_n, &trace.c_n) {
        assert_close(&format!("{name} c_n"), g, r, Y_ATOL, Y_RTOL);
    }
    eprintln!(
        "{name}: paired = {}, max |gpu - cpu| y {:.1e} ({:.1} s)",
        paired.paired_steps(),
        common::max_abs_diff(&got.y, &trace.y),
        started.elapsed().as_secs_f64()
    );
}

/// A context that never pairs (the option switched off).
fn fallback_ctx() -> Option<Context> {
    let c = own_ctx()?;
    c.set_paired_steps(false);
    assert!(!c.paired_steps());
    Some(c)
}

fn bidirectional(b: rnn_wgpu::RnnConfigBuilder) -> RnnConfig {
    b.direction(Direction::Bidirectional).build().unwrap()
}

/// Every cell kind, two layers (the second's input is both directions' output), with and
/// without per-row lengths.
#[test]
fn paired_steps_equal_the_fallback_and_match_the_reference() {
    let Some(paired) = ctx() else { return };
    let fallback = fallback_ctx().unwrap();
    eprintln!(
        "max_storage_buffers_per_shader_stage = {}, paired steps: {}",
        paired.limits().max_storage_buffers_per_shader_stage,
        paired.paired_steps()
    );
    let cases = [
        ("lstm", RnnConfig::lstm(5, 9).num_layers(2)),
        (
            "lstm proj+peepholes batch-first",
            RnnConfig::lstm(5, 9)
                .num_layers(2)
                .proj_size(4)
                .peepholes(true)
                .layout(Layout::BatchFirst),
        ),
        ("gru", RnnConfig::gru(5, 9).num_layers(2)),
        (
            "gru reset-before",
            RnnConfig::gru(5, 9)
                .num_layers(2)
                .linear_before_reset(false),
        ),
        (
            "rnn tanh",
            RnnConfig::rnn(5, 9, Nonlinearity::Tanh).num_layers(2),
        ),
    ];
    let (t, b) = (6, 3);
    for (name, builder) in cases {
        let cfg = bidirectional(builder);
        let f32s = WeightPrecision::F32;
        check(
            paired,
            &fallback,
            name,
            &cfg,
            f32s,
            (t, b),
            Some(&[2, 6, 4]),
        );
        let full = format!("{name} full length");
        check(paired, &fallback, &full, &cfg, f32s, (t, b), None);
    }
}

/// The split reduction (KSPLIT > 1, through subgroups where the device has them) at H = 64,
/// and the register-tiled layout (STAGE: weights and states staged in workgroup memory, with
/// barriers inside each direction's branch) at H = 512, B = 128, the smallest shape that
/// takes it (tests/step_tiles.rs); and f16 weights where the device has SHADER_F16.
#[test]
fn paired_steps_equal_the_fallback_on_every_step_layout() {
    let Some(paired) = ctx() else { return };
    let fallback = fallback_ctx().unwrap();
    let f32s = WeightPrecision::F32;
    let split = bidirectional(RnnConfig::lstm(8, 64));
    check(
        paired,
        &fallback,
        "lstm H=64",
        &split,
        f32s,
        (4, 5),
        Some(&[4, 1, 3, 2, 4]),
    );
    let gru = bidirectional(RnnConfig::gru(8, 64).linear_before_reset(false));
    check(
        paired,
        &fallback,
        "gru reset-before H=64",
        &gru,
        f32s,
        (4, 5),
        None,
    );
    let staged = bidirectional(RnnConfig::lstm(8, 512));
    let plan = Plan::new(&staged, 2, 128, PlanMode::Training, false, paired.limits()).unwrap();
    assert!(
        plan.to_string().contains("staged"),
        "not register-tiled:\n{plan}"
    );
    check(
        paired,
        &fallback,
        "lstm H=512 B=128",
        &staged,
        f32s,
        (2, 128),
        None,
    );
    if paired.shader_f16() {
        let f16 = WeightPrecision::F16;
        check(
            paired,
            &fallback,
            "lstm H=64 f16",
            &split,
            f16,
            (4, 5),
            Some(&[4, 1, 3, 2, 4]),
        );
    }
}

/// A device limited to WebGPU's 8 storage buffers per stage cannot bind the pair: it runs the
/// fallback, with the same results.
#[test]
fn eight_storage_buffers_run_the_fallback() {
    let Some(paired) = ctx() else { return };
    let small = limited(|l| l.max_storage_buffers_per_shader_stage = 8).unwrap();
    assert!(!small.paired_steps());
    let cfg = bidirectional(RnnConfig::gru(5, 9).num_layers(2));
    check(
        paired,
        &small,
        "gru at 8 storage buffers",
        &cfg,
        WeightPrecision::F32,
        (5, 2),
        None,
    );
}

/// The plan (pure CPU): with 16 storage buffers per stage every step of a bidirectional layer
/// is one `rnn_step_pair` dispatch with grid z = 2 (two per step for the GRU reset-before
/// form), and no `rnn_step`; every reverse step one `rnn_step_backward_pair` per phase (two for
/// the GRU reset-before form and the projection) and no `rnn_step_backward`; with WebGPU's
/// default 8, two one-direction dispatches for each.
#[test]
fn a_bidirectional_plan_has_one_step_dispatch_per_step() {
    let sixteen = wgpu::Limits {
        max_storage_buffers_per_shader_stage: 16,
        ..Default::default()
    };
    let eight = wgpu::Limits::default();
    assert_eq!(eight.max_storage_buffers_per_shader_stage, 8);
    let (t, b, layers) = (50, 16, 2);
    // (config, forward phases, backward phases)
    for (builder, phases, back_phases) in [
        (RnnConfig::lstm(32, 256), 1, 1),
        (RnnConfig::lstm(32, 256).proj_size(64), 1, 2),
        (RnnConfig::gru(32, 256).linear_before_reset(false), 2, 2),
        (RnnConfig::gru(32, 256), 1, 1),
        (RnnConfig::rnn(32, 256, Nonlinearity::Relu), 1, 1),
    ] {
        let cfg = bidirectional(builder.num_layers(layers));
        for mode in [PlanMode::Inference, PlanMode::Training] {
            let plan = Plan::new(&cfg, t, b, mode, true, &sixteen).unwrap();
            assert_eq!(
                forward_step_counts(&plan),
                (layers * t * phases, 0),
                "{:?} {mode:?}:\n{plan}",
                cfg.cell()
            );
            let text = plan.to_string();
            let first = text
                .lines()
                .find(|l| l.trim_start().starts_with("rnn_step_pair "))
                .unwrap_or_else(|| panic!("no paired step printed:\n{text}"));
            let grid = first.split_whitespace().nth(1).unwrap();
            assert!(grid.ends_with("x2"), "grid {grid}: {first}");
            let apart = Plan::new(&cfg, t, b, mode, true, &eight).unwrap();
            assert_eq!(forward_step_counts(&apart), (0, 2 * layers * t * phases));
            assert_eq!(
                apart.forward_dispatches() - plan.forward_dispatches(),
                layers * t * phases
            );
            if mode == PlanMode::Training {
                let back = layers * t * back_phases;
                assert_eq!(
                    step_counts(&plan, "backward"),
                    (back, 0),
                    "{:?}:\n{plan}",
                    cfg.cell()
                );
                let first = text
                    .lines()
                    .find(|l| l.trim_start().starts_with("rnn_step_backward_pair "))
                    .unwrap_or_else(|| panic!("no paired backward step printed:\n{text}"));
                let grid = first.split_whitespace().nth(1).unwrap();
                assert!(grid.ends_with("x2"), "grid {grid}: {first}");
                assert_eq!(step_counts(&apart, "backward"), (0, 2 * back));
                assert_eq!(
                    apart.backward_dispatches() - plan.backward_dispatches(),
                    back
                );
            }
        }
    }
    // A one-direction model never pairs.
    let fwd = RnnConfig::lstm(32, 256).build().unwrap();
    let plan = Plan::new(&fwd, t, b, PlanMode::Training, false, &sixteen).unwrap();
    assert_eq!(forward_step_counts(&plan), (0, t));
    assert_eq!(step_counts(&plan, "backward"), (0, t));
}
