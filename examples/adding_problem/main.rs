//! The adding problem (Hochreiter & Schmidhuber, 1997): a long-term-dependency task, trained
//! end to end on the GPU.
//!
//! Each sequence has `T` steps of two channels: a value uniform in [0, 1), and a marker that
//! is 1 at exactly two steps (one in each half of the sequence) and 0 elsewhere. The target is
//! the sum of the two marked values. Predicting the mean (1.0) scores MSE = 1/6 ≈ 0.167; a
//! model must carry the first marked value across ≥ T/2 steps to beat it.
//!
//! The model is an LSTM plus a linear read-out of `h_n`. One training step is: `forward_train`
//! (1 submission), the read-out's forward + MSE + backward (`readout.wgsl`, an op of this
//! example's own on the crate's wgpu device: 1 submission), LSTM `backward` with only `dh_n`
//! (many-to-one; 1 submission), then global-norm gradient clipping and Adam over all
//! parameters (1 submission). Nothing returns to the host but the loss, read every few steps.
//!
//! Run: `cargo run --release --example adding_problem` (sized so llvmpipe finishes in a few
//! minutes); `-- --full` for T = 200, H = 128, B = 128 on a real GPU.

use std::time::Instant;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rnn_wgpu::gpu::clip::record_clip_grad_norm;
use rnn_wgpu::gpu::optim::{Adam, AdamOptimizer};
use rnn_wgpu::{Context, GpuTensor, GradMode, Rnn, RnnConfig, RunOptions, Weights};

#[derive(Parser, Debug)]
#[command(about = "Train an LSTM on the adding problem on the GPU")]
struct Args {
    /// Sequence length T.
    #[arg(long, default_value_t = 100)]
    steps: usize,
    /// Hidden size H.
    #[arg(long, default_value_t = 32)]
    hidden: usize,
    /// Batch size B.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Training iterations.
    #[arg(long, default_value_t = 1500)]
    iters: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-2)]
    lr: f64,
    /// Clip the global gradient norm to this.
    #[arg(long, default_value_t = 1.0)]
    clip: f32,
    /// Stop early once the evaluation MSE is below this.
    #[arg(long, default_value_t = 0.005)]
    target_mse: f64,
    /// The full size for a real GPU: T = 200, H = 128, B = 128.
    #[arg(long)]
    full: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// A batch of the adding problem: `x [T, B, 2]`, `target [B]`.
fn batch(rng: &mut ChaCha8Rng, t: usize, b: usize) -> (Vec<f32>, Vec<f32>) {
    let mut x = vec![0.0f32; t * b * 2];
    let mut target = vec![0.0f32; b];
    for row in 0..b {
        for step in 0..t {
            x[(step * b + row) * 2] = rng.random::<f32>();
        }
        let first = rng.random_range(0..t / 2);
        let second = rng.random_range(t / 2..t);
        for m in [first, second] {
            x[(m * b + row) * 2 + 1] = 1.0;
            target[row] += x[(m * b + row) * 2];
        }
    }
    (x, target)
}

/// The example's read-out op: pipeline and persistent buffers.
struct Readout {
    pipeline: wgpu::ComputePipeline,
    params: wgpu::Buffer,
    /// `[H + 1]`: `w_out`, then `b_out`.
    w: GpuTensor,
    dw: GpuTensor,
    pred: GpuTensor,
    dh: GpuTensor,
    loss: GpuTensor,
}

impl Readout {
    fn new(ctx: &Context, hidden: usize, batch: usize, rng: &mut ChaCha8Rng) -> Readout {
        let dev = ctx.device();
        let module = dev.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("readout"),
            source: wgpu::ShaderSource::Wgsl(include_str!("readout.wgsl").into()),
        });
        let pipeline = dev.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("readout"),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        let params = dev.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readout params"),
            size: 8,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        ctx.queue().write_buffer(
            &params,
            0,
            bytemuck::cast_slice(&[batch as u32, hidden as u32]),
        );
        let k = 1.0 / (hidden as f32).sqrt();
        let mut w: Vec<f32> = (0..hidden).map(|_| rng.random_range(-k..k)).collect();
        w.push(0.0);
        let zeros = |shape: &[usize]| GpuTensor::zeros(ctx, shape).expect("alloc");
        Readout {
            pipeline,
            params,
            w: GpuTensor::upload(ctx, &w, &[hidden + 1]).expect("alloc"),
            dw: zeros(&[hidden + 1]),
            pred: zeros(&[batch]),
            dh: zeros(&[1, batch, hidden]),
            loss: zeros(&[1]),
        }
    }

    /// Record the loss, `dw` and `dh` (the LSTM's `dh_n`) for `h_n` against `target` into
    /// `enc`. The bind group is made once by the caller ([`Readout::bind`]).
    fn record(&self, enc: &mut wgpu::CommandEncoder, bind: &wgpu::BindGroup) {
        let mut pass = enc.begin_compute_pass(&Default::default());
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, bind, &[]);
        pass.dispatch_workgroups(1, 1, 1);
    }

    /// The bind group of [`Readout::record`] over fixed `h_n` and `target` buffers.
    fn bind(&self, ctx: &Context, h_n: &GpuTensor, target: &GpuTensor) -> wgpu::BindGroup {
        ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("readout"),
            layout: &self.pipeline.get_bind_group_layout(0),
            entries: &[
                (0, &self.params),
                (1, h_n.buffer()),
                (2, target.buffer()),
                (3, self.w.buffer()),
                (4, self.pred.buffer()),
                (5, self.dw.buffer()),
                (6, self.dh.buffer()),
                (7, self.loss.buffer()),
            ]
            .map(|(binding, b)| wgpu::BindGroupEntry {
                binding,
                resource: b.as_entire_binding(),
            }),
        })
    }
}

fn main() -> Result<(), rnn_wgpu::Error> {
    let mut args = Args::parse();
    if args.full {
        (args.steps, args.hidden, args.batch) = (200, 128, 128);
    }
    assert!(
        args.steps >= 2 && args.batch <= 1024,
        "need T >= 2 and B <= 1024"
    );
    let (t, h, b) = (args.steps, args.hidden, args.batch);
    let ctx = Context::new()?;
    println!("adapter: {}", ctx.describe());
    println!(
        "adding problem: T = {t}, H = {h}, B = {b}, Adam lr = {}, clip = {}",
        args.lr, args.clip
    );

    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let cfg = RnnConfig::lstm(2, h).build()?;
    let rnn = Rnn::new(&ctx, &Weights::init(&cfg, args.seed))?;
    let readout = Readout::new(&ctx, h, b, &mut rng);
    let mut params = rnn.parameters()?;
    params.push(&readout.w);
    let mut adam = AdamOptimizer::new(&ctx, Adam::new(args.lr), &params)?;
    let norm = GpuTensor::zeros(&ctx, &[1])?;

    // A fixed evaluation set, scored on the host from the GPU's h_n.
    let mut eval_rng = ChaCha8Rng::seed_from_u64(args.seed + 1_000_000);
    let eval_b = 512;
    let (eval_x, eval_target) = batch(&mut eval_rng, t, eval_b);
    let eval_x = GpuTensor::upload(&ctx, &eval_x, &[t, eval_b, 2])?;
    let evaluate = |w: &[f32]| -> Result<f64, rnn_wgpu::Error> {
        let h_n = rnn.forward(&eval_x, None)?.h_n.download(&ctx)?;
        let mse = (0..eval_b)
            .map(|row| {
                let pred: f32 = (0..h).map(|j| h_n[row * h + j] * w[j]).sum::<f32>() + w[h];
                ((pred - eval_target[row]) as f64).powi(2)
            })
            .sum::<f64>()
            / eval_b as f64;
        Ok(mse)
    };

    let start = Instant::now();
    let bar = ProgressBar::new(args.iters as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} [{elapsed_precise}] {msg}")
            .expect("template"),
    );
    let mut curve = Vec::new();
    let mut last_eval = f64::NAN;
    let mut done_iters = 0;
    // Everything one training step touches lives in buffers made once: the batch is written
    // into them, and the step records into one encoder (one submission).
    let x = GpuTensor::zeros(&ctx, &[t, b, 2])?;
    let target = GpuTensor::zeros(&ctx, &[b])?;
    let out = rnn.alloc_output(t, b)?;
    let grads = rnn.alloc_grads(t, b)?;
    let readout_bind = readout.bind(&ctx, &out.h_n, &target);
    let mut g = grads.params.tensors();
    g.push(&readout.dw);
    // GPU objects the crate creates in training steps after the first (evaluation excluded).
    let mut created = rnn_wgpu::AllocationCounts::default();
    let mut submissions_per_step = 0;
    for it in 0..args.iters {
        let (xs, ts) = batch(&mut rng, t, b);
        ctx.queue()
            .write_buffer(x.buffer(), 0, bytemuck::cast_slice(&xs));
        ctx.queue()
            .write_buffer(target.buffer(), 0, bytemuck::cast_slice(&ts));
        let allocations = ctx.allocation_counts();
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        let tape = rnn.record_forward_train(&mut enc, &x, None, &RunOptions::default(), &out)?;
        readout.record(&mut enc, &readout_bind);
        rnn.record_backward(
            &mut enc,
            &tape,
            None,
            Some(&readout.dh),
            None,
            &grads,
            GradMode::Overwrite,
        )?;
        record_clip_grad_norm(&ctx, &mut enc, &g, args.clip, &norm)?;
        adam.record_step(&ctx, &mut enc, &params, &g)?;
        let before = ctx.submission_count();
        ctx.submit(enc.finish())?;
        submissions_per_step = ctx.submission_count() - before;
        drop(tape);
        if it > 0 {
            let step = ctx.allocation_counts() - allocations;
            created.buffers += step.buffers;
            created.bind_groups += step.bind_groups;
        }
        if it == 0 {
            // After the first step every buffer and bind group exists.
            println!("submissions per training step: {submissions_per_step}");
        }
        done_iters = it + 1;

        if it % 25 == 0 || it + 1 == args.iters {
            let loss = readout.loss.download(&ctx)?[0] as f64;
            last_eval = evaluate(&readout.w.download(&ctx)?)?;
            curve.push((it, loss, last_eval));
            let line = format!(
                "iter {it:5}  train MSE {loss:.4}  eval MSE {last_eval:.4}  |grad| {:.3}",
                norm.download(&ctx)?[0]
            );
            // A hidden bar (output not a terminal) swallows its println: print plainly then.
            if bar.is_hidden() {
                println!("{line}");
            } else {
                bar.println(line);
            }
            bar.set_message(format!("eval MSE {last_eval:.4}"));
            if last_eval < args.target_mse {
                bar.set_position(done_iters as u64);
                break;
            }
        }
        bar.inc(1);
    }
    bar.finish();
    ctx.wait()?;
    println!(
        "submissions per training step: {submissions_per_step}; GPU objects the crate created \
         in training steps after the first: {} buffers, {} bind groups",
        created.buffers, created.bind_groups
    );
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{done_iters} iterations in {secs:.1} s: {:.0} samples/s (incl. periodic evaluation)",
        (done_iters * b) as f64 / secs
    );
    println!("loss curve (iteration, train MSE, eval MSE):");
    for (it, loss, eval) in &curve {
        println!("  {it:5}  {loss:.4}  {eval:.4}");
    }
    let solved = last_eval < 0.01;
    println!(
        "final eval MSE {last_eval:.4} (predict-the-mean baseline 0.167): {}",
        if solved {
            "solved (< 0.01)"
        } else {
            "NOT solved"
        }
    );
    if !solved {
        std::process::exit(1);
    }
    Ok(())
}
