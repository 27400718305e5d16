//! Many-to-many: tag every step of a sequence, trained on the GPU.
//!
//! The input is a stream of random bits; the tag of step `t` is the number of ones seen so
//! far (step `t` included) modulo 3. A tag depends on the whole past, not on the current bit,
//! so the LSTM has to keep a three-state counter. The three tags are about equally frequent:
//! chance accuracy is 1/3 per step, and (1/3)^T for a whole sequence.
//!
//! The model is an LSTM followed by the crate's classification read-out
//! ([`rnn_wgpu::Readout`]: linear layer + softmax cross-entropy) over every step,
//! `y [T, B, H]` read as `T·B` rows. One training step is one submission: LSTM
//! `record_forward_train`, read-out forward and backward, LSTM `record_backward` with `dy`,
//! global-norm clipping and Adam over both.
//!
//! Run: `cargo run --release --example tagging` (sized so llvmpipe finishes in a minute or
//! two).

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rnn_wgpu::gpu::clip::record_clip_grad_norm;
use rnn_wgpu::gpu::optim::{Adam, AdamOptimizer};
use rnn_wgpu::{Context, GpuTensor, GradMode, Readout, Rnn, RnnConfig, RunOptions, Weights};

/// Sequence length, hidden size, batch, tags, training iterations.
const T: usize = 40;
const H: usize = 32;
const B: usize = 32;
const TAGS: usize = 3;
const ITERS: usize = 600;
const EVAL_B: usize = 256;

/// A batch: bits `x [t, b, 1]` and the tag of every step `[t, b]` (seq-major, like `y`).
fn batch(rng: &mut ChaCha8Rng, t: usize, b: usize) -> (Vec<f32>, Vec<u32>) {
    let mut x = vec![0.0f32; t * b];
    let mut tags = vec![0u32; t * b];
    for row in 0..b {
        let mut ones = 0;
        for step in 0..t {
            let bit = rng.random_bool(0.5);
            ones += bit as u32;
            x[step * b + row] = bit as u8 as f32;
            tags[step * b + row] = ones % TAGS as u32;
        }
    }
    (x, tags)
}

/// The arg-max tag of each row of `probs [N, C]`.
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

/// Per-step accuracy, and the share of sequences (`b` rows of `t` steps) whose every tag is
/// right.
fn accuracy(pred: &[u32], tags: &[u32], t: usize, b: usize) -> (f64, f64) {
    let steps = pred.iter().zip(tags).filter(|(p, t)| p == t).count() as f64 / tags.len() as f64;
    let whole = (0..b)
        .filter(|&row| (0..t).all(|step| pred[step * b + row] == tags[step * b + row]))
        .count() as f64
        / b as f64;
    (steps, whole)
}

fn main() -> Result<(), rnn_wgpu::Error> {
    let ctx = Context::new()?;
    println!("adapter: {}", ctx.describe());
    println!(
        "many-to-many: tag each step with (ones so far) mod {TAGS}; LSTM, T = {T}, H = {H}, \
         B = {B}; chance accuracy {:.1} % per step",
        100.0 / TAGS as f64
    );

    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let cfg = RnnConfig::lstm(1, H).build()?;
    let rnn = Rnn::new(&ctx, &Weights::init(&cfg, 0))?;
    let readout = Readout::new(&ctx, H, TAGS, 1)?;
    let mut params = rnn.parameters()?;
    params.extend(readout.parameters());
    let mut adam = AdamOptimizer::new(&ctx, Adam::new(1e-2), &params)?;
    let norm = GpuTensor::zeros(&ctx, &[1])?;

    // Buffers made once; each step writes its batch into them and records one encoder.
    let x = GpuTensor::zeros(&ctx, &[T, B, 1])?;
    let out = rnn.alloc_output(T, B)?;
    let grads = rnn.alloc_grads(T, B)?;
    let head = readout.alloc(&ctx, out.y.shape())?; // N = T * B rows
    let mut g = grads.params.tensors();
    g.extend(readout.grads());

    // A fixed evaluation set.
    let mut eval_rng = ChaCha8Rng::seed_from_u64(1_000_000);
    let (eval_x, eval_tags) = batch(&mut eval_rng, T, EVAL_B);
    let eval_x = GpuTensor::upload(&ctx, &eval_x, &[T, EVAL_B, 1])?;
    let eval_head = readout.alloc(&ctx, &[T, EVAL_B, H])?;
    let evaluate = || -> Result<(f64, f64, f64), rnn_wgpu::Error> {
        let y = rnn.forward(&eval_x, None)?.y;
        readout.forward(&ctx, &y, Some(&eval_tags), &eval_head)?;
        let probs = eval_head.probs().download(&ctx)?;
        let loss = eval_head.loss().download(&ctx)?[0] as f64;
        let (steps, whole) = accuracy(&predictions(&probs, TAGS), &eval_tags, T, EVAL_B);
        Ok((loss, steps, whole))
    };

    let (loss0, acc0, _) = evaluate()?;
    println!(
        "before training: eval loss {loss0:.4} (ln 3 = {:.4}), per-step accuracy {:.1} %",
        (TAGS as f64).ln(),
        acc0 * 100.0
    );
    let start = Instant::now();
    let mut curve = Vec::new();
    for it in 0..ITERS {
        let (xs, tags) = batch(&mut rng, T, B);
        ctx.queue()
            .write_buffer(x.buffer(), 0, bytemuck::cast_slice(&xs));
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        let tape = rnn.record_forward_train(&mut enc, &x, None, &RunOptions::default(), &out)?;
        readout.record_forward(&ctx, &mut enc, &out.y, Some(&tags), &head)?;
        readout.record_backward(&ctx, &mut enc, &out.y, &head)?;
        let dy = Some(head.grad_features());
        rnn.record_backward(&mut enc, &tape, dy, None, None, &grads, GradMode::Overwrite)?;
        record_clip_grad_norm(&ctx, &mut enc, &g, 1.0, &norm)?;
        adam.record_step(&ctx, &mut enc, &params, &g)?;
        ctx.submit(enc.finish())?;
        drop(tape);
        if it % 50 == 0 || it + 1 == ITERS {
            let train_loss = head.loss().download(&ctx)?[0] as f64;
            let (eval_loss, steps, whole) = evaluate()?;
            println!(
                "iter {it:4}  train loss {train_loss:.4}  eval loss {eval_loss:.4}  \
                 per-step accuracy {:5.1} %  whole sequences {:5.1} %",
                steps * 100.0,
                whole * 100.0
            );
            curve.push((it, train_loss, eval_loss, steps, whole));
        }
    }
    ctx.wait()?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{ITERS} iterations in {secs:.1} s ({:.0} sequences/s, incl. evaluation)",
        (ITERS * B) as f64 / secs
    );
    println!("loss curve (iteration, train loss, eval loss, per-step / whole-sequence accuracy):");
    for (it, train, eval, steps, whole) in &curve {
        println!(
            "  {it:4}  {train:.4}  {eval:.4}  {:5.1} %  {:5.1} %",
            steps * 100.0,
            whole * 100.0
        );
    }
    let (_, steps, whole) = evaluate()?;
    println!(
        "final eval per-step accuracy {:.1} % (chance {:.1} %), whole sequences of {T} tags \
         right: {:.1} % of {EVAL_B}",
        steps * 100.0,
        100.0 / TAGS as f64,
        whole * 100.0
    );

    // Does the counter generalise? Sequences 4x longer than any seen in training (the model
    // runs any T; only the buffers of this evaluation are new).
    let long = 4 * T;
    let (long_x, long_tags) = batch(&mut eval_rng, long, EVAL_B);
    let long_x = GpuTensor::upload(&ctx, &long_x, &[long, EVAL_B, 1])?;
    let long_head = readout.alloc(&ctx, &[long, EVAL_B, H])?;
    let y = rnn.forward(&long_x, None)?.y;
    readout.forward(&ctx, &y, Some(&long_tags), &long_head)?;
    let probs = long_head.probs().download(&ctx)?;
    let pred = predictions(&probs, TAGS);
    let (steps, whole) = accuracy(&pred, &long_tags, long, EVAL_B);
    println!(
        "on {EVAL_B} sequences of T = {long} (4x the training length): per-step accuracy \
         {:.1} %, whole sequences right {:.1} %",
        steps * 100.0,
        whole * 100.0
    );
    Ok(())
}
