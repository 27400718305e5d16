//! The soak workload, shared by `examples/soak.rs` (the long run, which prints the figures)
//! and `tests/soak.rs` (CI's short run). Included by path.
//!
//! One context, one model: forward calls over a cycle of shapes (with and without per-row
//! lengths) and whole training steps (forward_train, backward, clip, Adam recorded into one
//! encoder, one submission), interleaved. Every `sample_every` forward calls it records the
//! device memory (wgpu's allocator report), the process's resident memory, the pipelines
//! cached and the GPU objects the crate has created.
#![allow(dead_code)]

use std::time::Instant;

use rnn_wgpu::gpu::clip::record_clip_grad_norm;
use rnn_wgpu::gpu::optim::{Adam, AdamOptimizer};
use rnn_wgpu::{Context, GpuTensor, GradMode, Rnn, RnnConfig, RunOptions, Weights};

/// One measurement.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub forward_calls: usize,
    pub train_steps: usize,
    /// Bytes of live device allocations (`None` where the backend gives no report, e.g. GL).
    pub device_allocated: Option<u64>,
    /// Bytes of device memory blocks reserved.
    pub device_reserved: Option<u64>,
    /// Resident set size of the process, bytes (`None` off Linux).
    pub rss: Option<u64>,
    pub pipelines: usize,
    /// Buffers and bind groups the crate has created so far.
    pub buffers: u64,
    pub bind_groups: u64,
}

pub struct Report {
    pub samples: Vec<Sample>,
    /// Index of the first sample after warm-up.
    pub warm: usize,
    pub seconds: f64,
}

/// `VmRSS` of this process in bytes.
pub fn rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn sample(ctx: &Context, forward_calls: usize, train_steps: usize) -> Sample {
    ctx.wait().expect("the GPU finished without an error");
    let report = ctx.device().generate_allocator_report();
    let counts = ctx.allocation_counts();
    Sample {
        forward_calls,
        train_steps,
        device_allocated: report.as_ref().map(|r| r.total_allocated_bytes),
        device_reserved: report.as_ref().map(|r| r.total_reserved_bytes),
        rss: rss(),
        pipelines: ctx.cached_pipelines(),
        buffers: counts.buffers,
        bind_groups: counts.bind_groups,
    }
}

fn seeded(seed: u64, n: usize) -> Vec<f32> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0f32..=1.0)).collect()
}

/// Run `forwards` forward calls and `steps` training steps (one step after every
/// `forwards / steps` forward calls), sampling every `sample_every` forward calls. The first
/// `warm_up` forward calls (and the steps among them) are the warm-up.
pub fn soak(
    ctx: &Context,
    forwards: usize,
    steps: usize,
    sample_every: usize,
    warm_up: usize,
) -> Report {
    let (i, h) = (16, 32);
    let cfg = RnnConfig::lstm(i, h).num_layers(2).build().unwrap();
    let rnn = Rnn::new(ctx, &Weights::init(&cfg, 1)).unwrap();
    // Three shapes, one of them with lengths: the workspace and output pools of each are
    // made once and reused.
    let shapes = [(8, 4), (3, 1), (12, 2)];
    let xs: Vec<GpuTensor> = shapes
        .iter()
        .enumerate()
        .map(|(k, &(t, b))| {
            GpuTensor::upload(ctx, &seeded(k as u64, t * b * i), &[t, b, i]).unwrap()
        })
        .collect();
    let lengths = [12, 5];
    // The training step's tensors, made once.
    let (tt, tb) = (10, 4);
    let tx = GpuTensor::upload(ctx, &seeded(9, tt * tb * i), &[tt, tb, i]).unwrap();
    let out = rnn.alloc_output(tt, tb).unwrap();
    let grads = rnn.alloc_grads(tt, tb).unwrap();
    let norm = GpuTensor::zeros(ctx, &[1]).unwrap();
    let params = rnn.parameters().unwrap();
    let g = grads.params.tensors();
    let mut adam = AdamOptimizer::new(ctx, Adam::new(1e-4), &params).unwrap();

    let every = (forwards / steps.max(1)).max(1);
    let start = Instant::now();
    let mut samples = vec![sample(ctx, 0, 0)];
    let mut warm = None;
    let mut done_steps = 0;
    for call in 1..=forwards {
        let k = call % shapes.len();
        let opts = RunOptions {
            lengths: (k == 2).then_some(&lengths[..]),
            ..Default::default()
        };
        let y = rnn.forward_with(&xs[k], None, &opts).unwrap().y;
        if call % 100 == 0 {
            let v = y.download(ctx).unwrap();
            assert!(
                v.iter().all(|x| x.is_finite()),
                "forward {call}: non-finite output"
            );
        }
        if call % every == 0 && done_steps < steps {
            let mut enc = ctx.device().create_command_encoder(&Default::default());
            let tape = rnn
                .record_forward_train(&mut enc, &tx, None, &RunOptions::default(), &out)
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
            record_clip_grad_norm(ctx, &mut enc, &g, 1.0, &norm).unwrap();
            adam.record_step(ctx, &mut enc, &params, &g).unwrap();
            ctx.submit(enc.finish()).unwrap();
            done_steps += 1;
        }
        // Keep the queue short: a real caller reads its results.
        if call % 50 == 0 {
            ctx.wait().unwrap();
        }
        if call % sample_every == 0 || call == forwards {
            samples.push(sample(ctx, call, done_steps));
            if call >= warm_up && warm.is_none() {
                warm = Some(samples.len() - 1);
            }
        }
    }
    let norm = norm.download(ctx).unwrap()[0];
    assert!(norm.is_finite(), "the last step's gradient norm is {norm}");
    Report {
        warm: warm.unwrap_or(samples.len() - 1),
        samples,
        seconds: start.elapsed().as_secs_f64(),
    }
}

/// Relative growth from the warm sample to the last, `(after - warm) / warm`.
pub fn growth(warm: Option<u64>, after: Option<u64>) -> Option<f64> {
    Some((after? as f64 - warm? as f64) / warm? as f64)
}

fn mib(b: Option<u64>) -> String {
    b.map_or("n/a".into(), |b| {
        format!("{:.2} MiB", b as f64 / (1 << 20) as f64)
    })
}

impl Report {
    pub fn warm(&self) -> &Sample {
        &self.samples[self.warm]
    }

    pub fn last(&self) -> &Sample {
        self.samples.last().unwrap()
    }

    /// The figures, one line each.
    pub fn summary(&self) -> String {
        let (w, l) = (self.warm(), self.last());
        let pct = |g: Option<f64>| g.map_or("n/a".into(), |g| format!("{:+.3}%", 100.0 * g));
        format!(
            "{} forward calls and {} training steps in {:.1} s\n\
             device memory allocated: {} after warm-up ({} calls), {} at the end ({})\n\
             device memory reserved:  {} after warm-up, {} at the end ({})\n\
             process RSS:             {} after warm-up, {} at the end ({})\n\
             pipelines cached: {} after warm-up, {} at the end (max {})\n\
             buffers created: {} after warm-up, {} at the end; bind groups {} / {}",
            l.forward_calls,
            l.train_steps,
            self.seconds,
            mib(w.device_allocated),
            w.forward_calls,
            mib(l.device_allocated),
            pct(growth(w.device_allocated, l.device_allocated)),
            mib(w.device_reserved),
            mib(l.device_reserved),
            pct(growth(w.device_reserved, l.device_reserved)),
            mib(w.rss),
            mib(l.rss),
            pct(growth(w.rss, l.rss)),
            w.pipelines,
            l.pipelines,
            self.samples.iter().map(|s| s.pipelines).max().unwrap(),
            w.buffers,
            l.buffers,
            w.bind_groups,
            l.bind_groups,
        )
    }

    /// `Err` naming the first bound broken: after warm-up, device memory and RSS grow by
    /// less than `max_growth`, and no pipeline, buffer or bind group is created.
    pub fn check(&self, max_growth: f64) -> Result<(), String> {
        let (w, l) = (self.warm(), self.last());
        for (what, g) in [
            (
                "device memory allocated",
                growth(w.device_allocated, l.device_allocated),
            ),
            (
                "device memory reserved",
                growth(w.device_reserved, l.device_reserved),
            ),
            ("RSS", growth(w.rss, l.rss)),
        ] {
            if g.is_some_and(|g| g >= max_growth) {
                return Err(format!(
                    "{what} grew {:.3}% after warm-up",
                    100.0 * g.unwrap()
                ));
            }
        }
        for s in &self.samples[self.warm..] {
            if (s.pipelines, s.buffers, s.bind_groups) != (w.pipelines, w.buffers, w.bind_groups) {
                return Err(format!(
                    "GPU objects created after warm-up: {s:?} vs warm {w:?}"
                ));
            }
        }
        Ok(())
    }
}
