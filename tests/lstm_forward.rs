//! GPU LSTM forward against the f64 CPU reference.
//!
//! Every value of the acceptance grid ([`common::GRID`]) appears at least once:
//! B ∈ {1, 3, 17, 64}, H ∈ {1, 13, 64, 256}, I ∈ {1, 7, 256}, T ∈ {1, 50, 1000}.

mod common;

use common::{Case, GRID, assert_close, gpu::ctx, max_abs_diff, seeded};
use rnn_wgpu::cpu::{self, RefWeights, to_f64};
use rnn_wgpu::{Context, GpuTensor, HostOutput, Output, Rnn, RnnConfig, State, Weights};
use rnn_wgpu::{HostState, RunOptions};

/// Unit-scale inputs: `|x|, |h0|, |c0| <= 1`, weights `|w| <= 1/sqrt(H)`.
///
/// A pre-activation sums `K = I + H` f32 products. The GPU and the reference differ only by
/// f32 rounding of those sums (summation order included), about `sqrt(K) * 6e-8 * |terms|`
/// per step, and the LSTM's saturating gates keep |h| < 1 so errors do not compound over T
/// (f < 1 damps them). Observed worst error on this grid is below 1e-6; 2e-5 absolute leaves
/// a 10x+ margin while still catching any indexing or gate-order bug (those give O(0.1)).
const ATOL: f64 = 2e-5;
const RTOL: f64 = 1e-4;

/// Run GPU and reference on the same seeded inputs; `scale` multiplies x.
fn run(ctx: &Context, c: &Case, scale: f32, seed: u64) -> (HostOutput, cpu::LstmForward) {
    let cfg = RnnConfig::lstm(c.input, c.hidden)
        .bias(c.bias)
        .build()
        .unwrap();
    let w = Weights::init(&cfg, seed);
    let rnn = Rnn::with_config(ctx, &cfg, &w).unwrap();
    let (t, b, h) = (c.steps, c.batch, c.hidden);
    let x = seeded(seed + 1, t * b * c.input, scale);
    let h0 = seeded(seed + 2, b * h, 1.0);
    let c0 = seeded(seed + 3, b * h, 1.0);
    let gpu = rnn
        .forward_host(
            &x,
            t,
            b,
            HostState {
                h0: Some(&h0),
                c0: Some(&c0),
            },
            &RunOptions::default(),
        )
        .unwrap();
    let rw = RefWeights::new(&cfg, w.layer(0, 0).unwrap());
    let reference = cpu::lstm_forward(
        &cfg,
        &rw,
        &to_f64(&x),
        Some(&to_f64(&h0)),
        Some(&to_f64(&c0)),
        t,
        b,
    )
    .unwrap();
    (gpu, reference)
}

fn check(name: &str, gpu: &HostOutput, r: &cpu::LstmForward, atol: f64, rtol: f64) {
    assert_close(&format!("{name} y"), &gpu.y, &r.y, atol, rtol);
    assert_close(&format!("{name} h_n"), &gpu.h_n, &r.h_n, atol, rtol);
    assert_close(
        &format!("{name} c_n"),
        gpu.c_n.as_ref().unwrap(),
        &r.c_n,
        atol,
        rtol,
    );
}

#[test]
fn forward_matches_reference_on_the_grid() {
    let Some(ctx) = ctx() else { return };
    for (n, c) in GRID.iter().enumerate() {
        let name = format!(
            "I={} H={} B={} T={} bias={}",
            c.input, c.hidden, c.batch, c.steps, c.bias
        );
        let (gpu, r) = run(ctx, c, 1.0, 100 + n as u64);
        eprintln!("{name}: max |err| y {:.2e}", max_abs_diff(&gpu.y, &r.y));
        check(&name, &gpu, &r, ATOL, RTOL);
    }
}

#[test]
fn large_inputs_stay_finite_and_match() {
    let Some(ctx) = ctx() else { return };
    let c = Case {
        input: 7,
        hidden: 13,
        batch: 3,
        steps: 20,
        bias: true,
    };
    for (scale, atol) in [
        // |x| <= 50: pre-activations reach ~50 * I / sqrt(H) ~ 100; their f32 rounding
        // (~K * 6e-8 * 100 ~ 1.2e-4) reaches the outputs only through gates that are not
        // saturated, scaled by a derivative <= 1.
        (50.0f32, 2e-4),
        // |x| <= 1e4: the same argument with 200x larger pre-activations gives ~2.5e-2 in the
        // worst unsaturated gate; almost every gate is saturated, where the error vanishes.
        (1e4, 3e-2),
    ] {
        let (gpu, r) = run(ctx, &c, scale, 7);
        let all = gpu
            .y
            .iter()
            .chain(&gpu.h_n)
            .chain(gpu.c_n.as_ref().unwrap());
        assert!(
            all.clone().all(|v| v.is_finite()),
            "non-finite output at |x| <= {scale}"
        );
        eprintln!(
            "|x|<={scale}: max |err| y {:.2e}",
            max_abs_diff(&gpu.y, &r.y)
        );
        check(&format!("|x|<={scale}"), &gpu, &r, atol, 0.0);
    }
}

#[test]
fn time_chunking_is_bit_identical() {
    let Some(ctx) = ctx() else { return };
    let cfg = RnnConfig::lstm(5, 24).build().unwrap();
    let w = Weights::init(&cfg, 3);
    let (t, b) = (50, 6);
    let x = seeded(4, t * b * 5, 1.0);
    let whole = Rnn::with_config(ctx, &cfg, &w)
        .unwrap()
        .forward_host(&x, t, b, HostState::zeros(), &RunOptions::default())
        .unwrap();
    // 7 does not divide 50: the last chunk is short, and every chunk boundary goes through
    // the h carry copy. Each output element is summed in the same order either way.
    let chunked = Rnn::with_config(ctx, &cfg, &w)
        .unwrap()
        .with_max_chunk_steps(7)
        .unwrap()
        .forward_host(&x, t, b, HostState::zeros(), &RunOptions::default())
        .unwrap();
    assert_eq!(whole, chunked);
}

#[test]
fn one_submission_per_forward_regardless_of_t() {
    // Its own context: the shared one counts other tests' submissions too.
    let Some(ctx) = common::gpu::own_ctx() else {
        return;
    };
    let ctx = &ctx;
    let cfg = RnnConfig::lstm(8, 16).build().unwrap();
    let rnn = Rnn::new(ctx, &Weights::init(&cfg, 1))
        .unwrap()
        .with_max_chunk_steps(64)
        .unwrap();
    for t in [1usize, 10, 300] {
        let x = GpuTensor::upload(ctx, &seeded(t as u64, t * 2 * 8, 1.0), &[t, 2, 8]).unwrap();
        let before = ctx.submission_count();
        let out = rnn.forward(&x, None).unwrap();
        let after = ctx.submission_count();
        assert_eq!(after - before, 1, "T={t}: {} submissions", after - before);
        out.y.download(ctx).unwrap();
    }
}

#[test]
fn state_carries_across_calls() {
    let Some(ctx) = ctx() else { return };
    let cfg = RnnConfig::lstm(3, 10).build().unwrap();
    let rnn = Rnn::new(ctx, &Weights::init(&cfg, 9)).unwrap();
    let (b, t1, t2) = (4, 6, 9);
    let x = seeded(10, (t1 + t2) * b * 3, 1.0);
    let whole = rnn
        .forward_host(&x, t1 + t2, b, HostState::zeros(), &RunOptions::default())
        .unwrap();
    let first = rnn
        .forward_host(
            &x[..t1 * b * 3],
            t1,
            b,
            HostState::zeros(),
            &RunOptions::default(),
        )
        .unwrap();
    let second = rnn
        .forward_host(
            &x[t1 * b * 3..],
            t2,
            b,
            HostState {
                h0: Some(&first.h_n),
                c0: first.c_n.as_deref(),
            },
            &RunOptions::default(),
        )
        .unwrap();
    assert_eq!(&whole.y[t1 * b * 10..], &second.y[..]);
    assert_eq!(whole.h_n, second.h_n);
    assert_eq!(whole.c_n, second.c_n);
}

#[test]
fn framework_device_and_buffers() {
    if ctx().is_none() {
        return;
    }
    // A framework creates its own device and hands it in, with its own buffers.
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter =
        pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
            .expect("adapter");
    let (device, queue) =
        pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default())).unwrap();
    let ctx = Context::from_device(device.clone(), queue.clone());

    let cfg = RnnConfig::lstm(4, 9).build().unwrap();
    let w = Weights::init(&cfg, 5);
    let rnn = Rnn::with_config(&ctx, &cfg, &w).unwrap();
    let (t, b) = (5, 2);
    let xs = seeded(6, t * b * 4, 1.0);
    // The schedule copies its inputs into its workspace (so its bind groups never depend on
    // the caller's buffers): an input needs COPY_SRC, and one without is a typed error.
    let storage_only = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("framework x, storage only"),
        size: (xs.len() * 4) as u64,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let bad = GpuTensor::from_buffer(storage_only, &[t, b, 4]).unwrap();
    let unused = rnn.alloc_output(t, b).unwrap();
    let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
    assert!(matches!(
        rnn.record_forward(&mut enc, &bad, None, &unused),
        Err(rnn_wgpu::Error::BadBuffer { name, .. }) if name == "x"
    ));
    let buf = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("framework x"),
        size: (xs.len() * 4) as u64,
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_DST
            | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    queue.write_buffer(&buf, 0, bytemuck::cast_slice(&xs));
    let x = GpuTensor::from_buffer(buf, &[t, b, 4]).unwrap();

    // Recorded into the framework's own encoder, submitted by the framework.
    let out = Output {
        y: GpuTensor::zeros(&ctx, &[t, b, 9]).unwrap(),
        h_n: GpuTensor::zeros(&ctx, &[1, b, 9]).unwrap(),
        c_n: Some(GpuTensor::zeros(&ctx, &[1, b, 9]).unwrap()),
    };
    let state = State {
        h: GpuTensor::upload(&ctx, &seeded(7, b * 9, 1.0), &[1, b, 9]).unwrap(),
        c: Some(GpuTensor::upload(&ctx, &seeded(8, b * 9, 1.0), &[1, b, 9]).unwrap()),
    };
    let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
    rnn.record_forward(&mut enc, &x, Some(&state), &out)
        .unwrap();
    queue.submit(Some(enc.finish()));

    let rw = RefWeights::new(&cfg, w.layer(0, 0).unwrap());
    let h0 = to_f64(&state.h.download(&ctx).unwrap());
    let c0 = to_f64(&state.c.as_ref().unwrap().download(&ctx).unwrap());
    let r = cpu::lstm_forward(&cfg, &rw, &to_f64(&xs), Some(&h0), Some(&c0), t, b).unwrap();
    assert_close("y", &out.y.download(&ctx).unwrap(), &r.y, ATOL, RTOL);
    assert_close("h_n", &out.h_n.download(&ctx).unwrap(), &r.h_n, ATOL, RTOL);
    assert_close(
        "c_n",
        &out.c_n.unwrap().download(&ctx).unwrap(),
        &r.c_n,
        ATOL,
        RTOL,
    );
}

#[test]
fn every_batch_tiling_matches_reference() {
    let Some(ctx) = ctx() else { return };
    // The step kernel tiles batches by size: split reductions for B <= 8 (16, 8, 4, 2 lanes),
    // one row per thread up to 16, then 2 and 4 rows per thread. Cover each, and each edge.
    for batch in [1, 2, 3, 4, 5, 8, 9, 16, 17, 33, 65] {
        let c = Case {
            input: 3,
            hidden: 20,
            batch,
            steps: 4,
            bias: true,
        };
        let (gpu, r) = run(ctx, &c, 1.0, 300 + batch as u64);
        check(&format!("B={batch}"), &gpu, &r, ATOL, RTOL);
    }
}

/// An LSTM given `h0` alone starts from `c0 = 0`, as PyTorch's functional API allows: on the
/// host path (`HostState::h`), the GPU-resident path (`State { c: None }`) and in training
/// (forward and backward), each is bit-identical to passing an explicit zero `c0`, and the
/// host path matches the CPU reference given `c0 = None` (zeros there too).
#[test]
fn an_lstm_may_be_given_h0_alone() {
    let Some(ctx) = ctx() else { return };
    let (i, h, t, b) = (5, 9, 6, 3);
    let cfg = RnnConfig::lstm(i, h).num_layers(2).build().unwrap();
    let w = Weights::init(&cfg, 41);
    let rnn = Rnn::new(ctx, &w).unwrap();
    let x = seeded(42, t * b * i, 1.0);
    let h0 = seeded(43, 2 * b * h, 1.0);
    let zeros = vec![0.0f32; 2 * b * h];
    let opts = RunOptions::default();
    let alone = rnn
        .forward_host(&x, t, b, HostState::h(&h0), &opts)
        .unwrap();
    let explicit = rnn
        .forward_host(&x, t, b, HostState::hc(&h0, &zeros), &opts)
        .unwrap();
    assert_eq!(alone, explicit, "h0 alone vs an explicit zero c0");
    let reference = cpu::stack_forward(
        &cfg,
        &w,
        &to_f64(&x),
        t,
        b,
        HostState::h(&to_f64(&h0)),
        &opts,
    )
    .unwrap();
    // Tolerance as ATOL above (two layers of the same unit-scale sums).
    assert_close("y (h0 alone)", &alone.y, &reference.y, ATOL, RTOL);
    assert_close(
        "c_n (h0 alone)",
        alone.c_n.as_ref().unwrap(),
        reference.c_n.as_ref().unwrap(),
        ATOL,
        RTOL,
    );

    // Training: forward and backward with State { c: None } equal those with zeros.
    let xt = GpuTensor::upload(ctx, &x, &[t, b, i]).unwrap();
    let h0t = GpuTensor::upload(ctx, &h0, &[2, b, h]).unwrap();
    let c0t = GpuTensor::zeros(ctx, &[2, b, h]).unwrap();
    let dy = GpuTensor::upload(ctx, &seeded(44, t * b * h, 1.0), &[t, b, h]).unwrap();
    let mut results = Vec::new();
    for c in [None, Some(c0t.clone())] {
        let state = State { h: h0t.clone(), c };
        let (out, tape) = rnn.forward_train(&xt, Some(&state)).unwrap();
        let grads = rnn.backward(&tape, Some(&dy), None, None).unwrap();
        let host = grads.to_host(&rnn).unwrap();
        results.push((
            out.y.download(ctx).unwrap(),
            host.dx.clone(),
            host.dc0.clone(),
            format!("{:?}", host.params),
        ));
    }
    assert!(results[0] == results[1], "training with h0 alone differs");
}

/// `RunOptions::layout` overrides the model's layout for one call: `forward_host` on a
/// seq-major model given batch-first `x` equals, bit for bit, the seq-major call on the
/// transposed `x` (its `y` transposed back), with per-row lengths; the CPU reference does the
/// same; a GPU-resident call asking for another layout is a typed error.
#[test]
fn a_call_may_use_the_other_layout() {
    let Some(ctx) = ctx() else { return };
    let (i, h, t, b) = (3, 5, 4, 3);
    let cfg = RnnConfig::gru(i, h)
        .direction(rnn_wgpu::Direction::Bidirectional)
        .build()
        .unwrap();
    let w = Weights::init(&cfg, 51);
    let rnn = Rnn::new(ctx, &w).unwrap();
    let x_bf = seeded(52, b * t * i, 1.0); // [B, T, I]
    let swap = |v: &[f32], a: usize, c: usize, f: usize| -> Vec<f32> {
        let mut out = vec![0.0; v.len()];
        for p in 0..a {
            for q in 0..c {
                out[(q * a + p) * f..(q * a + p + 1) * f]
                    .copy_from_slice(&v[(p * c + q) * f..(p * c + q + 1) * f]);
            }
        }
        out
    };
    let x_sm = swap(&x_bf, b, t, i); // [T, B, I]
    let lengths = [4usize, 2, 3];
    let bf = RunOptions {
        lengths: Some(&lengths),
        layout: Some(rnn_wgpu::Layout::BatchFirst),
        ..Default::default()
    };
    let sm = RunOptions {
        lengths: Some(&lengths),
        ..Default::default()
    };
    let got = rnn
        .forward_host(&x_bf, t, b, HostState::zeros(), &bf)
        .unwrap();
    let want = rnn
        .forward_host(&x_sm, t, b, HostState::zeros(), &sm)
        .unwrap();
    assert_eq!(got.y, swap(&want.y, t, b, 2 * h), "y [B, T, 2H]");
    assert_eq!(got.h_n, want.h_n, "h_n does not depend on the layout");

    let x64 = |v: &[f32]| to_f64(v);
    let cpu_bf = cpu::stack_forward(&cfg, &w, &x64(&x_bf), t, b, HostState::zeros(), &bf).unwrap();
    let cpu_sm = cpu::stack_forward(&cfg, &w, &x64(&x_sm), t, b, HostState::zeros(), &sm).unwrap();
    let back: Vec<f64> = {
        let y32: Vec<f32> = cpu_sm.y.iter().map(|&v| v as f32).collect();
        swap(&y32, t, b, 2 * h).iter().map(|&v| v as f64).collect()
    };
    let bf32: Vec<f32> = cpu_bf.y.iter().map(|&v| v as f32).collect();
    assert_eq!(to_f64(&bf32), back, "CPU reference y");
    // GPU against CPU in the overridden layout (tolerance as ATOL above).
    assert_close("y batch-first", &got.y, &cpu_bf.y, ATOL, RTOL);

    let xt = GpuTensor::upload(ctx, &x_sm, &[t, b, i]).unwrap();
    match rnn.forward_with(&xt, None, &bf) {
        Err(rnn_wgpu::Error::InvalidConfig(m)) => assert!(m.contains("layout"), "{m}"),
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}
