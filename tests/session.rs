//! Streaming sessions: one step at a time equals one forward over the whole sequence, bit for
//! bit; a step is one submission; resetting a row restarts that stream and leaves the other
//! rows bit-identical.

mod common;

use common::gpu::{ctx, own_ctx};
use rnn_wgpu::{Context, GpuTensor, Layout, Nonlinearity, Rnn, RnnConfig, Weights};

fn configs() -> Vec<(&'static str, RnnConfig)> {
    vec![
        (
            "lstm l2",
            RnnConfig::lstm(5, 12).num_layers(2).build().unwrap(),
        ),
        (
            "gru l3 batch-first",
            RnnConfig::gru(5, 7)
                .num_layers(3)
                .layout(Layout::BatchFirst)
                .build()
                .unwrap(),
        ),
        (
            "lstm proj peephole l2",
            RnnConfig::lstm(5, 9)
                .proj_size(4)
                .peepholes(true)
                .num_layers(2)
                .build()
                .unwrap(),
        ),
        (
            "gru reset-before l2",
            RnnConfig::gru(5, 6)
                .linear_before_reset(false)
                .num_layers(2)
                .build()
                .unwrap(),
        ),
        (
            "rnn relu",
            RnnConfig::rnn(5, 10, Nonlinearity::Relu).build().unwrap(),
        ),
    ]
}

/// Step `t` of every row of `x` (`[T, B, I]` or `[B, T, I]`) as `[B, I]`.
fn step_of(cfg: &RnnConfig, x: &[f32], t: usize, steps: usize, batch: usize, f: usize) -> Vec<f32> {
    (0..batch)
        .flat_map(|b| {
            let at = match cfg.layout() {
                Layout::BatchFirst => (b * steps + t) * f,
                _ => (t * batch + b) * f,
            };
            x[at..at + f].to_vec()
        })
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn equivalence(ctx: &Context, name: &str, cfg: &RnnConfig) {
    let (t, b) = (6, 3);
    let (i, s) = (cfg.input_size(), cfg.state_size());
    let rnn = Rnn::with_config(ctx, cfg, &Weights::init(cfg, 5)).unwrap();
    let x = common::seeded(9, t * b * i, 1.0);
    let shape = match cfg.layout() {
        Layout::BatchFirst => [b, t, i],
        _ => [t, b, i],
    };
    let whole = rnn
        .forward(&GpuTensor::upload(ctx, &x, &shape).unwrap(), None)
        .unwrap();
    let y_whole = whole.y.download(ctx).unwrap();
    let mut session = rnn.session(b).unwrap();
    for step in 0..t {
        let x_t = step_of(cfg, &x, step, t, b, i);
        // Steps 1 and 4 (an odd and an even one) come from the host, written in place.
        let y = match step % 3 {
            1 => session.step_host(&x_t),
            _ => session.step(&GpuTensor::upload(ctx, &x_t, &[b, i]).unwrap()),
        };
        let y = y.unwrap().download(ctx).unwrap();
        assert_eq!(
            bits(&y),
            bits(&step_of(cfg, &y_whole, step, t, b, s)),
            "{name}: step {step}"
        );
    }
    let state = session.state().unwrap();
    assert_eq!(
        bits(&state.h.download(ctx).unwrap()),
        bits(&whole.h_n.download(ctx).unwrap()),
        "{name}: h"
    );
    if let (Some(c), Some(c_n)) = (&state.c, &whole.c_n) {
        assert_eq!(
            bits(&c.download(ctx).unwrap()),
            bits(&c_n.download(ctx).unwrap()),
            "{name}: c"
        );
    }
}

#[test]
fn stepping_a_session_equals_one_forward_bit_for_bit() {
    let Some(ctx) = ctx() else { return };
    for (name, cfg) in configs() {
        equivalence(ctx, name, &cfg);
    }
}

#[test]
fn a_session_step_is_one_submission() {
    let Some(ctx) = own_ctx() else { return };
    let cfg = RnnConfig::lstm(4, 8).num_layers(3).build().unwrap();
    let rnn = Rnn::new(&ctx, &Weights::init(&cfg, 1)).unwrap();
    let mut session = rnn.session(2).unwrap();
    let xt = GpuTensor::upload(&ctx, &[0.5; 8], &[2, 4]).unwrap();
    for _ in 0..3 {
        let before = ctx.submission_count();
        session.step(&xt).unwrap();
        assert_eq!(ctx.submission_count() - before, 1);
    }
    let before = ctx.submission_count();
    session.reset(&[true, false]).unwrap();
    assert_eq!(ctx.submission_count() - before, 1);
}

#[test]
fn resetting_a_row_restarts_only_that_stream() {
    let Some(ctx) = ctx() else { return };
    for (name, cfg) in configs() {
        let b = 3;
        let i = cfg.input_size();
        let rnn = Rnn::new(ctx, &Weights::init(&cfg, 2)).unwrap();
        let inputs: Vec<GpuTensor> = (0..6)
            .map(|k| GpuTensor::upload(ctx, &common::seeded(k, b * i, 1.0), &[b, i]).unwrap())
            .collect();
        let (mut reset, mut plain, mut fresh) = (
            rnn.session(b).unwrap(),
            rnn.session(b).unwrap(),
            rnn.session(b).unwrap(),
        );
        for x in &inputs[..3] {
            reset.step(x).unwrap();
            plain.step(x).unwrap();
        }
        reset.reset(&[false, true, false]).unwrap();
        // Every layer's state of row 1 is now zero, and the other rows keep theirs.
        let (st, layers) = (cfg.state_size(), cfg.num_layers());
        let h_reset = reset.state().unwrap().h.download(ctx).unwrap();
        let h_plain = plain.state().unwrap().h.download(ctx).unwrap();
        for l in 0..layers {
            for r in 0..b {
                let at = (l * b + r) * st;
                let (got, kept) = (&h_reset[at..at + st], &h_plain[at..at + st]);
                match r {
                    1 => assert!(got.iter().all(|&v| v == 0.0), "{name}: layer {l} row 1"),
                    _ => assert_eq!(bits(got), bits(kept), "{name}: layer {l} row {r}"),
                }
            }
        }
        for (k, x) in inputs[3..].iter().enumerate() {
            let y = reset.step(x).unwrap().download(ctx).unwrap();
            let y_plain = plain.step(x).unwrap().download(ctx).unwrap();
            let y_fresh = fresh.step(x).unwrap().download(ctx).unwrap();
            let s = y.len() / b;
            let row = |v: &[f32], r: usize| bits(&v[r * s..(r + 1) * s]);
            for r in [0, 2] {
                assert_eq!(row(&y, r), row(&y_plain, r), "{name}: row {r}, step {k}");
            }
            // Row 1 restarted from zero state: it is a new stream.
            assert_eq!(row(&y, 1), row(&y_fresh, 1), "{name}: reset row, step {k}");
            assert_ne!(
                row(&y, 1),
                row(&y_plain, 1),
                "{name}: the reset changed row 1"
            );
        }
    }
}

/// `record_step` records into the caller's encoder: six steps recorded into one encoder, with
/// a copy of every `y_t` recorded after its step (a framework's own op), submitted once, give
/// bit for bit the `y_t` and final state of six `step` calls on a twin session; nothing is
/// submitted while recording, and no GPU object is created after the first recorded step.
#[test]
fn recorded_steps_in_one_submission_equal_stepping() {
    let Some(ctx) = own_ctx() else { return };
    let cfg = RnnConfig::lstm(3, 7).num_layers(2).build().unwrap();
    let rnn = Rnn::new(&ctx, &Weights::init(&cfg, 5)).unwrap();
    let (b, steps) = (2, 6);
    let xs: Vec<GpuTensor> = (0..steps)
        .map(|k| {
            let x: Vec<f32> = (0..b * 3)
                .map(|e| ((k * 7 + e) as f32 * 0.37).sin())
                .collect();
            GpuTensor::upload(&ctx, &x, &[b, 3]).unwrap()
        })
        .collect();

    let mut stepped = rnn.session(b).unwrap();
    let want: Vec<Vec<f32>> = xs
        .iter()
        .map(|x| stepped.step(x).unwrap().download(&ctx).unwrap())
        .collect();

    let mut recorded = rnn.session(b).unwrap();
    // The framework's own buffer: every y_t copied out right after its step.
    let sink = GpuTensor::zeros(&ctx, &[steps, b, 7]).unwrap();
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    let (before, mut created_after_first) = (ctx.submission_count(), None);
    for (k, x) in xs.iter().enumerate() {
        let counts = ctx.allocation_counts();
        let y = recorded.record_step(&mut enc, x).unwrap();
        enc.copy_buffer_to_buffer(
            y.buffer(),
            0,
            sink.buffer(),
            (k * b * 7 * 4) as u64,
            (b * 7 * 4) as u64,
        );
        if k > 0 {
            let d = ctx.allocation_counts() - counts;
            *created_after_first.get_or_insert(0) += d.buffers + d.bind_groups;
        }
    }
    assert_eq!(ctx.submission_count(), before, "recording submits nothing");
    assert_eq!(
        created_after_first,
        Some(0),
        "GPU objects created after the first step"
    );
    ctx.submit(enc.finish()).unwrap();
    let got = sink.download(&ctx).unwrap();
    for (k, w) in want.iter().enumerate() {
        let g = &got[k * b * 7..(k + 1) * b * 7];
        assert_eq!(bits(g), bits(w), "y_t of step {k}");
    }
    let (hs, hr) = (
        stepped.state().unwrap().h.download(&ctx).unwrap(),
        recorded.state().unwrap().h.download(&ctx).unwrap(),
    );
    assert_eq!(bits(&hs), bits(&hr), "final h");
    let c = |s: &mut rnn_wgpu::Session| {
        let state = s.state().unwrap();
        state.c.as_ref().unwrap().download(&ctx).unwrap()
    };
    assert_eq!(bits(&c(&mut stepped)), bits(&c(&mut recorded)), "final c");
}

/// A `Stream` plan is one forward step of a forward model with every row live; its
/// workspace, which keeps a session's state, is refused by a forward pass.
#[test]
fn stream_plans_and_workspaces_are_for_sessions_only() {
    use rnn_wgpu::{Direction, Error, Plan, PlanMode};
    let limits = wgpu::Limits::default();
    let cfg = RnnConfig::lstm(3, 4).build().unwrap();
    let bi = RnnConfig::lstm(3, 4)
        .direction(Direction::Bidirectional)
        .build()
        .unwrap();
    for (cfg, t, lengths) in [(&cfg, 2, false), (&cfg, 1, true), (&bi, 1, false)] {
        let got = Plan::new(cfg, t, 2, PlanMode::Stream, lengths, &limits);
        assert!(
            matches!(got, Err(Error::Unsupported(_))),
            "T = {t}, lengths {lengths}: {got:?}"
        );
    }
    let Some(ctx) = ctx() else { return };
    let rnn = Rnn::new(ctx, &Weights::init(&cfg, 3)).unwrap();
    let plan = rnn.plan(1, 2, PlanMode::Stream, false).unwrap();
    let ws = rnn.workspace(&plan).unwrap();
    let x = GpuTensor::upload(ctx, &[0.25; 6], &[1, 2, 3]).unwrap();
    let out = rnn.alloc_output(1, 2).unwrap();
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    let got = rnn.record_forward_in(&ws, &mut enc, &x, None, None, &out);
    assert!(matches!(got, Err(Error::InvalidConfig(_))), "{got:?}");
}
