//! Many-to-one: classify a whole sequence from the RNN's last state `h_n`, trained on the GPU.
//!
//! Each sequence is `T` noisy samples of a sine wave whose period is one of `K = 4` classes
//! (4, 6, 8 or 12 steps), with a random phase and amplitude. Chance is 1/K = 25 %; the
//! class cannot be read from any single step, so the GRU has to integrate the whole sequence.
//!
//! The model is a GRU followed by the crate's classification read-out
//! ([`rnn_wgpu::Readout`]: linear layer + softmax cross-entropy) over `h_n [1, B, H]`. One
//! training step is one submission: GRU `record_forward_train`, read-out forward and backward,
//! GRU `record_backward` with only `dh_n`, global-norm clipping and Adam over both.
//!
//! Run: `cargo run --release --example classify` (sized so llvmpipe finishes in a minute or
//! two).

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rnn_wgpu::gpu::clip::record_clip_grad_norm;
use rnn_wgpu::gpu::optim::{Adam, AdamOptimizer};
use rnn_wgpu::{Context, GpuTensor, GradMode, Readout, Rnn, RnnConfig, RunOptions, Weights};

/// Sequence length, hidden size, batch, classes, training iterations.
const T: usize = 32;
const H: usize = 32;
const B: usize = 64;
const PERIODS: [f32; 4] = [4.0, 6.0, 8.0, 12.0];
const ITERS: usize = 400;
const EVAL_B: usize = 512;

/// A batch: `x [T, B, 1]` and the class of each row `[B]`.
fn batch(rng: &mut ChaCha8Rng, b: usize) -> (Vec<f32>, Vec<u32>) {
    let mut x = vec![0.0f32; T * b];
    let mut labels = Vec::with_capacity(b);
    for row in 0..b {
        let class = rng.random_range(0..PERIODS.len());
        let phase = rng.random_range(0.0..std::f32::consts::TAU);
        let amplitude = rng.random_range(0.5..1.5);
        for step in 0..T {
            let angle = std::f32::consts::TAU * step as f32 / PERIODS[class] + phase;
            // Uniform noise of standard deviation 0.3 on top of the wave.
            let noise = rng.random_range(-0.52..0.52);
            x[step * b + row] = amplitude * angle.sin() + noise;
        }
        labels.push(class as u32);
    }
    (x, labels)
}

/// The arg-max class of each row of `probs [N, C]`.
fn predictions(probs: &[f32], classes: usize) -> Vec<u32> {
    probs
        .chunks(classes)
        .map(|row| {
            (0..classes)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap_or(0) as u32
        })
        .collect()
}

fn accuracy(pred: &[u32], labels: &[u32]) -> f64 {
    pred.iter().zip(labels).filter(|(p, l)| p == l).count() as f64 / labels.len() as f64
}

fn main() -> Result<(), rnn_wgpu::Error> {
    let k = PERIODS.len();
    let ctx = Context::new()?;
    println!("adapter: {}", ctx.describe());
    println!(
        "many-to-one: which of {k} periods {PERIODS:?} is a noisy sine? GRU, T = {T}, H = {H}, \
         B = {B}; chance accuracy {:.1} %",
        100.0 / k as f64
    );

    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let cfg = RnnConfig::gru(1, H).build()?;
    let rnn = Rnn::new(&ctx, &Weights::init(&cfg, 0))?;
    let readout = Readout::new(&ctx, H, k, 1)?;
    let mut params = rnn.parameters()?;
    params.extend(readout.parameters());
    let mut adam = AdamOptimizer::new(&ctx, Adam::new(1e-2), &params)?;
    let norm = GpuTensor::zeros(&ctx, &[1])?;

    // Buffers made once; each step writes its batch into them and records one encoder.
    let x = GpuTensor::zeros(&ctx, &[T, B, 1])?;
    let out = rnn.alloc_output(T, B)?;
    let grads = rnn.alloc_grads(T, B)?;
    let head = readout.alloc(&ctx, out.h_n.shape())?;
    let mut g = grads.params.tensors();
    g.extend(readout.grads());

    // A fixed evaluation set.
    let mut eval_rng = ChaCha8Rng::seed_from_u64(1_000_000);
    let (eval_x, eval_labels) = batch(&mut eval_rng, EVAL_B);
    let eval_x = GpuTensor::upload(&ctx, &eval_x, &[T, EVAL_B, 1])?;
    let eval_head = readout.alloc(&ctx, &[1, EVAL_B, H])?;
    let evaluate = || -> Result<(f64, f64), rnn_wgpu::Error> {
        let h_n = rnn.forward(&eval_x, None)?.h_n;
        readout.forward(&ctx, &h_n, Some(&eval_labels), &eval_head)?;
        let probs = eval_head.probs().download(&ctx)?;
        let loss = eval_head.loss().download(&ctx)?[0] as f64;
        Ok((loss, accuracy(&predictions(&probs, k), &eval_labels)))
    };

    let (loss0, acc0) = evaluate()?;
    println!(
        "before training: eval loss {loss0:.4} (ln K = {:.4}), accuracy {:.1} %",
        (k as f64).ln(),
        acc0 * 100.0
    );
    let start = Instant::now();
    let mut curve = Vec::new();
    for it in 0..ITERS {
        if it == ITERS / 2 {
            // A lower learning rate for the second half settles the last few errors.
            adam.set_lr(2e-3)?;
        }
        let (xs, labels) = batch(&mut rng, B);
        ctx.queue()
            .write_buffer(x.buffer(), 0, bytemuck::cast_slice(&xs));
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        let tape = rnn.record_forward_train(&mut enc, &x, None, &RunOptions::default(), &out)?;
        readout.record_forward(&ctx, &mut enc, &out.h_n, Some(&labels), &head)?;
        readout.record_backward(&ctx, &mut enc, &out.h_n, &head)?;
        let dh_n = Some(head.grad_features());
        rnn.record_backward(
            &mut enc,
            &tape,
            None,
            dh_n,
            None,
            &grads,
            GradMode::Overwrite,
        )?;
        record_clip_grad_norm(&ctx, &mut enc, &g, 1.0, &norm)?;
        adam.record_step(&ctx, &mut enc, &params, &g)?;
        ctx.submit(enc.finish())?;
        drop(tape);
        if it % 25 == 0 || it + 1 == ITERS {
            let train_loss = head.loss().download(&ctx)?[0] as f64;
            let (eval_loss, acc) = evaluate()?;
            println!(
                "iter {it:4}  train loss {train_loss:.4}  eval loss {eval_loss:.4}  eval accuracy {:5.1} %",
                acc * 100.0
            );
            curve.push((it, train_loss, eval_loss, acc));
        }
    }
    ctx.wait()?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{ITERS} iterations in {secs:.1} s ({:.0} sequences/s, incl. evaluation)",
        (ITERS * B) as f64 / secs
    );
    println!("loss curve (iteration, train loss, eval loss, eval accuracy):");
    for (it, train, eval, acc) in &curve {
        println!("  {it:4}  {train:.4}  {eval:.4}  {:5.1} %", acc * 100.0);
    }
    let (_, acc) = evaluate()?;
    println!(
        "final eval accuracy {:.1} % on {EVAL_B} held-out sequences (chance {:.1} %)",
        acc * 100.0,
        100.0 / k as f64
    );
    Ok(())
}
