//! What one submission costs on this adapter, beside a session step and a forward step.
//!
//! `cargo run --release --example submit_floor [H]` interleaves, sample by sample, seven
//! things and prints the median of each in microseconds:
//! - an empty submission (`queue.submit` of an empty encoder, no wait);
//! - a submission of one one-workgroup dispatch of a trivial kernel (no wait);
//! - the same dispatch plus six 16-byte buffer copies (what a session step recorded before
//!   its state became resident);
//! - a 16-byte `queue.write_buffer`, the dispatch, then one 16-byte copy (what a one-layer
//!   session step from the host records now: `x_t` written in place, `y_t` copied out);
//! - a [`rnn_wgpu::Session::step`] (`x_t` on the GPU, copied in) and a
//!   [`rnn_wgpu::Session::step_host`] of an LSTM with `I = H` (default 1), `B = 1`;
//! - a forward step: a `T = 200` [`rnn_wgpu::Rnn::forward`] divided by 200.
//!
//! Each is timed as the harness times a stream row: 200 in a row, then one wait, the
//! median of 15 such blocks (interleaved kind by kind) divided by 200. The gap between the in-pass forward step
//! and one dispatch per submission is the floor that no session, which must submit each step
//! on its own, can go below on this adapter.
use std::time::Instant;

use rnn_wgpu::{Context, GpuTensor, Result, Rnn, RnnConfig, Weights};

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let h: usize = std::env::args()
        .nth(1)
        .map_or(1, |a| a.parse().expect("H: a positive integer"));
    let ctx = Context::new()?;
    println!("adapter: {}", ctx.adapter_info().name);
    let (dev, q) = (ctx.device().clone(), ctx.queue().clone());
    let module = dev.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("trivial"),
        source: wgpu::ShaderSource::Wgsl(
            "@group(0) @binding(0) var<storage, read_write> a: array<f32>;
             @compute @workgroup_size(16) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
                 if (g.x < 4u) { a[g.x] = a[g.x] * 0.5 + 1.0; }
             }"
            .into(),
        ),
    });
    let pipeline = dev.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("trivial"),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    let usage =
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
    let buffer = |label| {
        dev.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: 256,
            usage,
            mapped_at_creation: false,
        })
    };
    let (a, b) = (buffer("a"), buffer("b"));
    let group = dev.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[wgpu::BindGroupEntry {
            binding: 0,
            resource: a.as_entire_binding(),
        }],
    });
    // `copies`: 0, 6 (two before the dispatch, four after) or 1 after a queue write.
    let dispatch = |copies: usize| {
        if copies == 1 {
            q.write_buffer(&a, 64, &[0; 16]);
        }
        let mut e = dev.create_command_encoder(&Default::default());
        if copies == 6 {
            e.copy_buffer_to_buffer(&b, 0, &a, 0, 16);
            e.copy_buffer_to_buffer(&b, 16, &a, 16, 16);
        }
        {
            let mut pass = e.begin_compute_pass(&Default::default());
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &group, &[]);
            pass.dispatch_workgroups(1, 1, 1);
        }
        match copies {
            6 => (0..4).for_each(|k| e.copy_buffer_to_buffer(&a, 16 * k, &b, 16 * k, 16)),
            1 => e.copy_buffer_to_buffer(&a, 0, &b, 0, 16),
            _ => {}
        }
        q.submit([e.finish()]);
    };

    let cfg = RnnConfig::lstm(h, h).build()?;
    let rnn = Rnn::new(&ctx, &Weights::init(&cfg, 7))?;
    let x_host = vec![0.5; h];
    let x_t = GpuTensor::upload(&ctx, &x_host, &[1, h])?;
    let xs = GpuTensor::upload(&ctx, &vec![0.5; 200 * h], &[200, 1, h])?;
    let mut session = rnn.session(1)?;
    // Warm up: pipelines, workspaces.
    session.step(&x_t)?;
    rnn.forward(&xs, None)?;
    ctx.wait()?;

    // Blocks of 200 of one kind, each timed to the end of its final wait (a lone call's time
    // would also hold whatever the driver still ran of the call before), interleaved kind by
    // kind, 15 rounds; the median block per kind, divided by 200.
    let (steps, rounds) = (200, 15);
    let mut s: [Vec<f64>; 7] = Default::default();
    let mut block = |k: usize, f: &mut dyn FnMut() -> Result<()>| -> Result<()> {
        let t = Instant::now();
        for _ in 0..steps {
            f()?;
        }
        ctx.wait()?;
        s[k].push(t.elapsed().as_secs_f64() * 1e6 / steps as f64);
        Ok(())
    };
    for _ in 0..rounds {
        block(0, &mut || {
            q.submit([dev.create_command_encoder(&Default::default()).finish()]);
            Ok(())
        })?;
        for (k, copies) in [(1, 0), (2, 6), (3, 1)] {
            block(k, &mut || {
                dispatch(copies);
                Ok(())
            })?;
        }
        block(4, &mut || session.step(&x_t).map(drop))?;
        block(5, &mut || session.step_host(&x_host).map(drop))?;
        let mut once = true;
        block(6, &mut || {
            if std::mem::take(&mut once) {
                rnn.forward(&xs, None)?;
            }
            Ok(())
        })?;
    }
    let names = [
        "empty submission",
        "one dispatch per submission",
        "one dispatch + 6 copies per submission",
        "write + one dispatch + 1 copy",
        "session step (x_t on the GPU)",
        "session step_host",
        "forward step (T = 200 forward / 200)",
    ];
    let fwd = median(&mut s[6].clone());
    for (name, v) in names.iter().zip(s.iter_mut()) {
        let m = median(v);
        println!("{name:<40} {m:8.1} us  ({:.2}x the forward step)", m / fwd);
    }
    Ok(())
}
