//! The host engine: plans are pure and printable, workspaces make steady-state calls allocate
//! nothing, a training step is one submission, stale tapes are refused, GPU failures are
//! typed. (Several threads on one context and model: `tests/threads.rs`.)

mod common;

use std::time::{Duration, Instant};

use common::gpu::{ctx, own_ctx};
use common::seeded;
use rnn_wgpu::gpu::clip::record_clip_grad_norm;
use rnn_wgpu::gpu::optim::{Adam, AdamOptimizer};
use rnn_wgpu::{
    AllocationCounts, Context, Error, GpuTensor, GradMode, Nonlinearity, Plan, PlanMode, Rnn,
    RnnConfig, RunOptions, Session, Weights,
};

const CALLS: usize = 100;

/// What `f` creates over `CALLS` calls after its first one (which may create everything).
fn created_after_first(
    ctx: &Context,
    mut f: impl FnMut(usize),
) -> (AllocationCounts, AllocationCounts) {
    let start = ctx.allocation_counts();
    f(0);
    let warm = ctx.allocation_counts();
    for k in 1..=CALLS {
        f(k);
    }
    ctx.wait().unwrap();
    (warm - start, ctx.allocation_counts() - warm)
}

fn none() -> AllocationCounts {
    AllocationCounts::default()
}

/// A 2-layer LSTM with dropout and a GRU reset-before: every schedule feature that owns
/// scratch (frames, dropout, tape, reset products) is exercised.
fn models(ctx: &Context) -> Vec<Rnn> {
    let lstm = RnnConfig::lstm(3, 8)
        .num_layers(2)
        .dropout(0.25)
        .build()
        .unwrap();
    let gru = RnnConfig::gru(3, 5)
        .linear_before_reset(false)
        .direction(rnn_wgpu::Direction::Bidirectional)
        .build()
        .unwrap();
    [lstm, gru]
        .iter()
        .map(|c| Rnn::with_config(ctx, c, &Weights::init(c, 1)).unwrap())
        .collect()
}

#[test]
fn steady_state_calls_create_no_buffer_or_bind_group() {
    let Some(ctx) = own_ctx() else { return };
    let (t, b) = (6, 2);
    for rnn in models(&ctx) {
        let name = format!("{:?}", rnn.config().cell());
        let x = GpuTensor::upload(&ctx, &seeded(1, t * b * 3, 1.0), &[t, b, 3]).unwrap();
        let lengths = [6, 4];
        let opts = RunOptions {
            lengths: Some(&lengths),
            ..Default::default()
        };

        let (first, rest) = created_after_first(&ctx, |_| {
            rnn.forward_with(&x, None, &opts).unwrap();
        });
        assert!(
            first.buffers > 0,
            "{name}: the first forward builds its workspace"
        );
        assert_eq!(rest, none(), "{name}: forward after the first call");

        let (_, rest) = created_after_first(&ctx, |_| {
            rnn.forward_train_with(&x, None, &opts).unwrap();
        });
        assert_eq!(rest, none(), "{name}: forward_train after the first call");

        let (_, rest) = created_after_first(&ctx, |_| {
            let (out, tape) = rnn.forward_train(&x, None).unwrap();
            rnn.backward(&tape, Some(&out.y), None, None).unwrap();
        });
        assert_eq!(
            rest,
            none(),
            "{name}: forward_train + backward after the first call"
        );
    }
}

#[test]
fn a_training_step_is_one_submission_and_allocates_nothing_after_the_first() {
    let Some(ctx) = own_ctx() else { return };
    let (t, b) = (5, 3);
    for rnn in models(&ctx) {
        let name = format!("{:?}", rnn.config().cell());
        let i = rnn.config().input_size();
        let x = GpuTensor::upload(&ctx, &seeded(2, t * b * i, 1.0), &[t, b, i]).unwrap();
        let out = rnn.alloc_output(t, b).unwrap();
        let grads = rnn.alloc_grads(t, b).unwrap();
        let params = rnn.parameters().unwrap();
        let g = grads.params.tensors();
        let mut adam = AdamOptimizer::new(&ctx, Adam::new(1e-3), &params).unwrap();
        let norm = GpuTensor::zeros(&ctx, &[1]).unwrap();
        let mut subs = Vec::new();
        let (_, rest) = created_after_first(&ctx, |_| {
            let mut enc = ctx.device().create_command_encoder(&Default::default());
            let opts = RunOptions::default();
            let tape = rnn
                .record_forward_train(&mut enc, &x, None, &opts, &out)
                .unwrap();
            rnn.record_backward(
                &mut enc,
                &tape,
                Some(&out.y),
                None,
                None,
                &grads,
                GradMode::Overwrite,
            )
            .unwrap();
            record_clip_grad_norm(&ctx, &mut enc, &g, 1.0, &norm).unwrap();
            adam.record_step(&ctx, &mut enc, &params, &g).unwrap();
            let before = ctx.submission_count();
            ctx.submit(enc.finish()).unwrap();
            subs.push(ctx.submission_count() - before);
        });
        assert!(subs.iter().all(|&s| s == 1), "{name}: submissions {subs:?}");
        assert_eq!(rest, none(), "{name}: a full training step after the first");
        assert_eq!(
            rnn.parameter_version(),
            CALLS as u64 + 1,
            "{name}: one bump per step"
        );
    }
}

#[test]
fn session_steps_create_nothing_after_the_first() {
    let Some(ctx) = own_ctx() else { return };
    let cfg = RnnConfig::lstm(4, 16).num_layers(2).build().unwrap();
    let rnn = Rnn::new(&ctx, &Weights::init(&cfg, 3)).unwrap();
    let mut session: Session = rnn.session(3).unwrap();
    let xt = GpuTensor::upload(&ctx, &seeded(3, 12, 1.0), &[3, 4]).unwrap();
    let host = seeded(4, 12, 1.0);
    let (_, rest) = created_after_first(&ctx, |k| {
        if k % 2 == 0 {
            session.step(&xt).unwrap();
        } else {
            session.step_host(&host).unwrap();
        }
    });
    assert_eq!(rest, none(), "Session::step after the first call");
    // Reading y_t back after every step reuses the context's staging buffers.
    let (_, rest) = created_after_first(&ctx, |_| {
        session.step(&xt).unwrap().download(&ctx).unwrap();
    });
    assert_eq!(
        rest,
        none(),
        "Session::step + download after the first call"
    );
    // A y_t the caller still holds is never overwritten: the next step writes another buffer.
    let held = session.step(&xt).unwrap();
    let want = held.download(&ctx).unwrap();
    let next = session.step(&xt).unwrap();
    assert_ne!(held.buffer(), next.buffer());
    assert_eq!(held.download(&ctx).unwrap(), want);
}

#[test]
fn held_results_are_never_overwritten() {
    let Some(ctx) = ctx() else { return };
    let cfg = RnnConfig::gru(2, 4).build().unwrap();
    let rnn = Rnn::new(ctx, &Weights::init(&cfg, 5)).unwrap();
    let x1 = GpuTensor::upload(ctx, &seeded(5, 8, 1.0), &[2, 2, 2]).unwrap();
    let x2 = GpuTensor::upload(ctx, &seeded(6, 8, 1.0), &[2, 2, 2]).unwrap();
    let a = rnn.forward(&x1, None).unwrap().y;
    let a_host = a.download(ctx).unwrap();
    let b = rnn.forward(&x2, None).unwrap().y;
    assert_ne!(a.buffer(), b.buffer(), "a held output is not reused");
    assert_eq!(a.download(ctx).unwrap(), a_host);
    assert_ne!(b.download(ctx).unwrap(), a_host);
}

#[test]
fn a_tape_is_refused_after_the_parameters_change() {
    let Some(ctx) = ctx() else { return };
    let cfg = RnnConfig::lstm(2, 4).build().unwrap();
    let w = Weights::init(&cfg, 6);
    let rnn = Rnn::with_config(ctx, &cfg, &w).unwrap();
    let x = GpuTensor::upload(ctx, &seeded(7, 12, 1.0), &[3, 2, 2]).unwrap();

    // An optimiser step on the model's parameters.
    let (out, tape) = rnn.forward_train(&x, None).unwrap();
    let grads = rnn.backward(&tape, Some(&out.y), None, None).unwrap();
    let params = rnn.parameters().unwrap();
    let mut sgd =
        rnn_wgpu::gpu::optim::SgdOptimizer::new(ctx, rnn_wgpu::gpu::optim::Sgd::new(0.1), &params)
            .unwrap();
    sgd.step(ctx, &params, &grads.params.tensors()).unwrap();
    assert!(matches!(
        rnn.backward(&tape, Some(&out.y), None, None),
        Err(Error::StaleTape {
            tape_version: 0,
            model_version: 1
        })
    ));

    // A weight upload.
    let (out, tape) = rnn.forward_train(&x, None).unwrap();
    rnn.set_weights(&w).unwrap();
    assert!(matches!(
        rnn.backward(&tape, Some(&out.y), None, None),
        Err(Error::StaleTape { .. })
    ));
    // A fresh tape is accepted.
    let (out, tape) = rnn.forward_train(&x, None).unwrap();
    rnn.backward(&tape, Some(&out.y), None, None).unwrap();
}

#[test]
fn a_buffer_over_the_device_limit_is_refused_before_any_gpu_work() {
    let Some(ctx) = own_ctx() else { return };
    let max = ctx.limits().max_buffer_size;
    let before = (ctx.submission_count(), ctx.allocation_counts());
    let words = (max / 4 + 1) as usize;
    match GpuTensor::zeros(&ctx, &[words]) {
        Err(Error::LimitExceeded {
            limit: "max_buffer_size",
            needed,
            allowed,
            ..
        }) => assert!(needed > allowed),
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
    assert_eq!(before, (ctx.submission_count(), ctx.allocation_counts()));
    // A sequence so long that its per-step uniform slots outgrow one buffer is refused by the
    // plan, on the CPU.
    let cfg = RnnConfig::rnn(1, 1, rnn_wgpu::Nonlinearity::Tanh)
        .build()
        .unwrap();
    let limits = wgpu::Limits {
        max_buffer_size: 1 << 20,
        ..wgpu::Limits::default()
    };
    match Plan::new(&cfg, 1 << 14, 1, PlanMode::Inference, false, &limits) {
        Err(Error::LimitExceeded { limit, what, .. }) => {
            assert_eq!(limit, "max_buffer_size");
            assert!(what.contains("uniform slots"), "{what}");
        }
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
}

#[test]
fn a_destroyed_device_gives_device_lost_promptly() {
    let Some(ctx) = own_ctx() else { return };
    let cfg = RnnConfig::lstm(3, 8).build().unwrap();
    let rnn = Rnn::new(&ctx, &Weights::init(&cfg, 8)).unwrap();
    let x = GpuTensor::upload(&ctx, &seeded(8, 12, 1.0), &[2, 2, 3]).unwrap();
    rnn.forward(&x, None).unwrap().y.download(&ctx).unwrap();
    ctx.device().destroy();
    let start = Instant::now();
    let r = rnn.forward(&x, None).and_then(|o| o.y.download(&ctx));
    assert!(matches!(r, Err(Error::DeviceLost { .. })), "{r:?}");
    let r = rnn.forward_train(&x, None).map(|_| ());
    assert!(matches!(r, Err(Error::DeviceLost { .. })), "{r:?}");
    assert!(matches!(ctx.wait(), Err(Error::DeviceLost { .. })));
    assert!(start.elapsed() < Duration::from_secs(10), "no hang");
}

#[test]
fn a_buffer_of_another_device_is_a_typed_error() {
    let Some(ctx) = own_ctx() else { return };
    let Some(other) = own_ctx() else { return };
    let cfg = RnnConfig::gru(2, 4).build().unwrap();
    let rnn = Rnn::new(&ctx, &Weights::init(&cfg, 9)).unwrap();
    let foreign = GpuTensor::upload(&other, &seeded(9, 8, 1.0), &[2, 2, 2]).unwrap();
    let r = rnn.forward(&foreign, None);
    assert!(
        matches!(&r, Err(Error::BadBuffer { name, .. }) if name == "x"),
        "{r:?}"
    );
    // The context still works.
    let x = GpuTensor::upload(&ctx, &seeded(9, 8, 1.0), &[2, 2, 2]).unwrap();
    rnn.forward(&x, None).unwrap().y.download(&ctx).unwrap();
}

#[test]
fn a_plan_is_pure_and_prints_every_dispatch_of_a_step() {
    let cfg = RnnConfig::lstm(16, 32).num_layers(2).build().unwrap();
    let limits = wgpu::Limits::default();
    let plan = Plan::new(&cfg, 10, 4, PlanMode::Training, false, &limits).unwrap();
    assert_eq!(plan.steps(), 10);
    assert_eq!(plan.chunk_steps(), 10);
    // Per layer: one input projection and 10 steps (without per-row lengths h_n is a copy of
    // the last step; with them, one gather per layer-direction).
    assert_eq!(plan.forward_dispatches(), 2 * (1 + 10));
    let with_lengths = Plan::new(&cfg, 10, 4, PlanMode::Inference, true, &limits).unwrap();
    assert_eq!(with_lengths.forward_dispatches(), 2 * (1 + 10 + 1));
    assert!(plan.backward_dispatches() > 2 * 10);
    let text = plan.to_string();
    for needle in [
        "gemm",
        "rnn_step",
        "rnn_step_backward",
        "column_sum",
        "wg bytes",
        "workgroups",
    ] {
        assert!(
            text.contains(needle),
            "plan printout lacks {needle}:\n{text}"
        );
    }
    // Shapes are validated on the CPU.
    assert!(matches!(
        Plan::new(&cfg, 0, 4, PlanMode::Inference, false, &limits),
        Err(Error::ZeroSize(_))
    ));
}

#[test]
fn the_caches_are_bounded() {
    let Some(ctx) = own_ctx() else { return };
    let cfg = RnnConfig::rnn(2, 3, rnn_wgpu::Nonlinearity::Relu)
        .build()
        .unwrap();
    let rnn = Rnn::new(&ctx, &Weights::init(&cfg, 11)).unwrap();
    for t in 1..=3 * rnn_wgpu::gpu::WORKSPACE_CACHE_SHAPES {
        let x = GpuTensor::zeros(&ctx, &[t, 1, 2]).unwrap();
        rnn.forward(&x, None).unwrap();
        assert!(rnn.cached_shapes() <= rnn_wgpu::gpu::WORKSPACE_CACHE_SHAPES);
    }
    assert!(ctx.cached_pipelines() <= rnn_wgpu::gpu::PIPELINE_CACHE_CAPACITY);
}

#[test]
fn engine_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Context>();
    send_sync::<Rnn>();
    send_sync::<GpuTensor>();
    send_sync::<rnn_wgpu::Tape>();
    send_sync::<Plan>();
    send::<Session>();
}

/// One mixed call: `(kind, T, B)` picks forward, a training step's gradients, or a session
/// run; returns every value it produced. (The thread tests are in `tests/threads.rs`.)
fn mixed_call(ctx: &Context, rnn: &Rnn, k: usize) -> Vec<u32> {
    let (t, b) = [(4, 2), (7, 3), (2, 5)][k % 3];
    let i = rnn.config().input_size();
    let x = GpuTensor::upload(ctx, &seeded(100 + k as u64, t * b * i, 1.0), &[t, b, i]).unwrap();
    let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
    match k % 4 {
        0 | 1 => bits(rnn.forward(&x, None).unwrap().y.download(ctx).unwrap()),
        2 => {
            let (out, tape) = rnn.forward_train(&x, None).unwrap();
            let g = rnn.backward(&tape, Some(&out.y), None, None).unwrap();
            let mut v = bits(g.dx.download(ctx).unwrap());
            v.extend(bits(g.params.layers[0].w_hh.download(ctx).unwrap()));
            v
        }
        _ => {
            let mut s = rnn.session(b).unwrap();
            let mut v = Vec::new();
            for step in 0..t {
                let xt = GpuTensor::upload(
                    ctx,
                    &seeded(200 + (k * 10 + step) as u64, b * i, 1.0),
                    &[b, i],
                )
                .unwrap();
                v.extend(bits(s.step(&xt).unwrap().download(ctx).unwrap()));
            }
            v
        }
    }
}

#[test]
fn waits_are_bounded_by_the_context_timeout() {
    let Some(ctx) = own_ctx() else { return };
    // About a second of work on a software adapter, far more than a millisecond anywhere.
    let cfg = RnnConfig::lstm(128, 128).build().unwrap();
    let rnn = Rnn::new(&ctx, &Weights::init(&cfg, 13)).unwrap();
    let x = GpuTensor::zeros(&ctx, &[400, 16, 128]).unwrap();
    rnn.forward(&x, None).unwrap();
    ctx.wait().unwrap();
    ctx.set_timeout(Duration::from_micros(1));
    let start = Instant::now();
    rnn.forward(&x, None).unwrap();
    // wgpu's GL backend runs a submission before `submit` returns: nothing is left to wait
    // for there, and the wait must succeed. Vulkan (llvmpipe included) runs it asynchronously.
    let pending = !matches!(
        ctx.device().poll(wgpu::PollType::Poll),
        Ok(status) if status.is_queue_empty()
    );
    let r = ctx.wait();
    ctx.set_timeout(rnn_wgpu::gpu::DEFAULT_TIMEOUT);
    if ctx.adapter_info().backend == wgpu::Backend::Vulkan {
        assert!(
            pending,
            "a second of work finished within its own submit call"
        );
    }
    match pending {
        true => assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}"),
        false => assert!(r.is_ok(), "{r:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(60));
    // The work itself finishes, and the context goes on.
    ctx.wait().unwrap();
    rnn.forward(&x, None).unwrap().y.download(&ctx).unwrap();
}

#[test]
fn pools_let_go_of_results_no_longer_held() {
    let Some(ctx) = own_ctx() else { return };
    let cfg = RnnConfig::gru(2, 3).build().unwrap();
    let rnn = Rnn::new(&ctx, &Weights::init(&cfg, 14)).unwrap();
    let x = GpuTensor::zeros(&ctx, &[2, 1, 2]).unwrap();
    // Twenty results held at once: twenty output sets.
    let held: Vec<_> = (0..20).map(|_| rnn.forward(&x, None).unwrap()).collect();
    assert_eq!(rnn.pooled_results(), 20);
    drop(held);
    // Once they are free, the next call lets all but a few go, and steady calls reuse one.
    rnn.forward(&x, None).unwrap();
    assert!(
        rnn.pooled_results() <= rnn_wgpu::gpu::POOL_KEEP,
        "{}",
        rnn.pooled_results()
    );
    let before = ctx.allocation_counts();
    for _ in 0..10 {
        rnn.forward(&x, None).unwrap();
    }
    assert_eq!(
        ctx.allocation_counts() - before,
        AllocationCounts::default()
    );
}

#[test]
fn unchecked_shaders_compute_what_checked_ones_do() {
    let Some(ctx) = own_ctx() else { return };
    let models = [
        RnnConfig::lstm(3, 5)
            .proj_size(4)
            .num_layers(2)
            .build()
            .unwrap(),
        RnnConfig::gru(3, 6)
            .linear_before_reset(false)
            .build()
            .unwrap(),
        RnnConfig::rnn(3, 7, rnn_wgpu::Nonlinearity::Relu)
            .build()
            .unwrap(),
    ];
    for cfg in &models {
        // A model's workspaces keep the pipelines they were built with, so each setting gets
        // a model of its own.
        let run = |ctx: &Context| -> Vec<f32> {
            let rnn = Rnn::with_config(ctx, cfg, &Weights::init(cfg, 15)).unwrap();
            (0..8)
                .flat_map(|k| mixed_call(ctx, &rnn, k))
                .map(f32::from_bits)
                .collect()
        };
        ctx.set_unchecked_shaders(false);
        let checked = run(&ctx);
        let before = ctx.cached_pipelines();
        ctx.set_unchecked_shaders(true);
        let unchecked = run(&ctx);
        ctx.set_unchecked_shaders(false);
        // The unchecked kernels were compiled anew (pipelines are cached per setting).
        assert!(ctx.cached_pipelines() > before);
        assert_eq!(checked.len(), unchecked.len());
        // The same WGSL with the same explicit fma chains; only the driver's freedom to
        // contract a plain `a * b + c` differently without the bounds clamps could change a
        // bit, one rounding (~6e-8 relative) per operation, far below 1e-5 after these few
        // small steps.
        for (i, (a, b)) in checked.iter().zip(&unchecked).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + a.abs()),
                "{:?}: value {i}: checked {a}, unchecked {b}",
                cfg.cell()
            );
        }
    }
}

#[test]
fn subgroup_reductions_give_the_same_bits_as_workgroup_memory() {
    let Some(ctx) = own_ctx() else { return };
    let Some(min) = ctx.subgroups() else {
        // wgpu's GL backend has no subgroups; llvmpipe's Vulkan driver has them, so there the
        // comparison must run.
        assert_ne!(
            ctx.adapter_info().backend,
            wgpu::Backend::Vulkan,
            "llvmpipe's Vulkan adapter offers SUBGROUP; the context should have requested it"
        );
        return;
    };
    eprintln!("smallest subgroup: {min}");
    let models = [
        // H = 128, B = 128: the forward step splits each reduction over 2 threads and gives
        // each thread 4 rows (the workgroup-memory tree then runs 2 passes of 2 rows, and
        // the 2 threads share the epilogue); the backward step splits over 8.
        (RnnConfig::lstm(16, 128).build().unwrap(), 3, 128),
        // H = 64, B = 16: the forward step splits over 4 threads of 4 columns each (16 lanes,
        // more than llvmpipe's subgroup of 8: the subgroup layout puts the split fastest);
        // H * G = 192: the backward step's reductions are 48 chunks, split over 8.
        (RnnConfig::gru(8, 64).build().unwrap(), 2, 16),
        // H = 64, B = 16: the backward step splits each reduction over 16 threads, one
        // output each: with subgroups of 8 the tree's first level runs in workgroup memory,
        // its last three as shuffles.
        (RnnConfig::lstm(8, 64).build().unwrap(), 2, 16),
        // The plain RNN's packed columns: 8 threads per reduction, 4 rows each.
        (
            RnnConfig::rnn(8, 128, Nonlinearity::Tanh).build().unwrap(),
            2,
            128,
        ),
    ];
    for (cfg, t, b) in &models {
        let i = cfg.input_size();
        let x = GpuTensor::upload(&ctx, &seeded(17, t * b * i, 1.0), &[*t, *b, i]).unwrap();
        // A model's workspaces keep the pipelines they were built with: one model per setting.
        let run = || -> Vec<u32> {
            let rnn = Rnn::with_config(&ctx, cfg, &Weights::init(cfg, 16)).unwrap();
            let (out, tape) = rnn.forward_train(&x, None).unwrap();
            let g = rnn.backward(&tape, Some(&out.y), None, None).unwrap();
            let mut v: Vec<f32> = out.y.download(&ctx).unwrap();
            v.extend(g.dx.download(&ctx).unwrap());
            v.extend(g.params.layers[0].w_hh.download(&ctx).unwrap());
            v.into_iter().map(f32::to_bits).collect()
        };
        ctx.set_subgroups(true);
        let with = run();
        let before = ctx.cached_pipelines();
        ctx.set_subgroups(false);
        let without = run();
        ctx.set_subgroups(true);
        // Some step kernel took the subgroup path: switching it off compiled new variants.
        assert!(
            ctx.cached_pipelines() > before,
            "{:?}: no subgroup variant",
            cfg.cell()
        );
        // Both paths add the same partial sums in the same tree order.
        assert!(
            with == without,
            "{:?}: subgroup and workgroup-memory results differ",
            cfg.cell()
        );
    }
}
