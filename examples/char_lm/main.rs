//! One-to-many: a character-level language model, trained on the GPU, then generating text
//! one character at a time by feeding each sampled character back in.
//!
//! The corpus is `genesis.txt` beside this file: Genesis 1–24 of the King James Version (1611,
//! public domain; see `README.md` here for where it came from). 90 % trains, the last 10 %
//! is held out.
//!
//! Training: an LSTM over one-hot characters `x [T, B, V]`, then the crate's classification
//! read-out ([`rnn_wgpu::Readout`]: linear layer + softmax cross-entropy) over every step,
//! `y [T, B, H]` as `T·B` rows, predicting the next character. One training step is one
//! submission: LSTM `record_forward_train`, read-out forward and backward, LSTM
//! `record_backward` with `dy`, global-norm clipping and Adam over both.
//!
//! Generation: a streaming [`rnn_wgpu::Session`] of one stream (`rnn.session(1)`) keeps the
//! LSTM state on the GPU; each `session.step_host(one_hot)` advances it one character, the
//! read-out turns `y_t` into next-character probabilities, and the sampled character is the
//! next input. Samples are printed before and after training.
//!
//! Run: `cargo run --release --example char_lm` (sized so llvmpipe finishes in two or three
//! minutes).

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rnn_wgpu::gpu::clip::record_clip_grad_norm;
use rnn_wgpu::gpu::optim::{Adam, AdamOptimizer};
use rnn_wgpu::{Context, GpuTensor, GradMode, Readout, Rnn, RnnConfig, RunOptions, Weights};

const TEXT: &str = include_str!("genesis.txt");
/// BPTT window, hidden size, batch, training iterations.
const T: usize = 32;
const H: usize = 64;
const B: usize = 32;
const ITERS: usize = 400;
/// Held-out windows scored at each evaluation.
const EVAL_B: usize = 64;
const PROMPT: &str = "And God said";
const SAMPLE_CHARS: usize = 200;
const TEMPERATURE: f64 = 0.7;

/// The text as character indices, and the sorted vocabulary.
struct Corpus {
    vocab: Vec<char>,
    ids: Vec<u32>,
}

impl Corpus {
    fn new(text: &str) -> Corpus {
        let mut vocab: Vec<char> = text.chars().collect();
        vocab.sort_unstable();
        vocab.dedup();
        let ids = text.chars().map(|c| id_of(&vocab, c)).collect();
        Corpus { vocab, ids }
    }
}

fn id_of(vocab: &[char], c: char) -> u32 {
    vocab.binary_search(&c).expect("character of the corpus") as u32
}

/// `B` windows of `T + 1` characters starting at `starts`: one-hot inputs `x [T, B, V]` and
/// next-character targets `[T, B]`.
fn windows(ids: &[u32], starts: &[usize], v: usize) -> (Vec<f32>, Vec<u32>) {
    let b = starts.len();
    let mut x = vec![0.0f32; T * b * v];
    let mut targets = vec![0u32; T * b];
    for (row, &s) in starts.iter().enumerate() {
        for step in 0..T {
            x[(step * b + row) * v + ids[s + step] as usize] = 1.0;
            targets[step * b + row] = ids[s + step + 1];
        }
    }
    (x, targets)
}

/// Generate `n` characters after `prompt` with a fresh one-stream session: each step's
/// probabilities (sharpened by `TEMPERATURE`) pick the next character, which is fed back.
fn sample(
    ctx: &Context,
    rnn: &Rnn,
    readout: &Readout,
    vocab: &[char],
    n: usize,
    rng: &mut ChaCha8Rng,
) -> Result<String, rnn_wgpu::Error> {
    let v = vocab.len();
    let mut session = rnn.session(1)?;
    let head = readout.alloc(ctx, &[1, H])?;
    let one_hot = |c: char| {
        let mut x = vec![0.0f32; v];
        x[id_of(vocab, c) as usize] = 1.0;
        x
    };
    let mut y = None;
    for c in PROMPT.chars() {
        y = Some(session.step_host(&one_hot(c))?);
    }
    let mut out = String::from(PROMPT);
    for _ in 0..n {
        let y_t = y.take().expect("the prompt is not empty");
        readout.forward(ctx, &y_t, None, &head)?;
        let probs = head.probs().download(ctx)?;
        let weights: Vec<f64> = probs
            .iter()
            .map(|&p| (p as f64).powf(1.0 / TEMPERATURE))
            .collect();
        let mut u = rng.random::<f64>() * weights.iter().sum::<f64>();
        let mut next = v - 1;
        for (i, w) in weights.iter().enumerate() {
            if u < *w {
                next = i;
                break;
            }
            u -= w;
        }
        out.push(vocab[next]);
        y = Some(session.step_host(&one_hot(vocab[next]))?);
    }
    Ok(out)
}

fn main() -> Result<(), rnn_wgpu::Error> {
    let corpus = Corpus::new(TEXT);
    let v = corpus.vocab.len();
    let split = corpus.ids.len() * 9 / 10;
    let (train, held_out) = corpus.ids.split_at(split);
    // Baselines: a uniform guess, and the unigram (character frequency) entropy of the
    // training text, in nats per character.
    let mut counts = vec![0usize; v];
    for &c in train {
        counts[c as usize] += 1;
    }
    let unigram: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / train.len() as f64;
            -p * p.ln()
        })
        .sum();

    let ctx = Context::new()?;
    println!("adapter: {}", ctx.describe());
    println!(
        "one-to-many: character LSTM on KJV Genesis 1-24 ({} characters, vocabulary {v}); \
         T = {T}, H = {H}, B = {B}",
        corpus.ids.len()
    );
    println!(
        "baselines (nats/char): uniform ln {v} = {:.3}, unigram entropy {unigram:.3}",
        (v as f64).ln()
    );

    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let cfg = RnnConfig::lstm(v, H).build()?;
    let rnn = Rnn::new(&ctx, &Weights::init(&cfg, 0))?;
    let readout = Readout::new(&ctx, H, v, 1)?;
    let mut sample_rng = ChaCha8Rng::seed_from_u64(7);
    println!(
        "\nsample before training:\n{}\n",
        sample(
            &ctx,
            &rnn,
            &readout,
            &corpus.vocab,
            SAMPLE_CHARS,
            &mut sample_rng
        )?
    );

    let mut params = rnn.parameters()?;
    params.extend(readout.parameters());
    let mut adam = AdamOptimizer::new(&ctx, Adam::new(1e-2), &params)?;
    let norm = GpuTensor::zeros(&ctx, &[1])?;

    // Buffers made once; each step writes its batch into them and records one encoder.
    let x = GpuTensor::zeros(&ctx, &[T, B, v])?;
    let out = rnn.alloc_output(T, B)?;
    let grads = rnn.alloc_grads(T, B)?;
    let head = readout.alloc(&ctx, out.y.shape())?; // N = T * B rows
    let mut g = grads.params.tensors();
    g.extend(readout.grads());

    // Fixed held-out windows, evenly spaced over the last 10 %.
    let eval_starts: Vec<usize> = (0..EVAL_B)
        .map(|i| i * (held_out.len() - T - 1) / EVAL_B)
        .collect();
    let (eval_x, eval_targets) = windows(held_out, &eval_starts, v);
    let eval_x = GpuTensor::upload(&ctx, &eval_x, &[T, EVAL_B, v])?;
    let eval_head = readout.alloc(&ctx, &[T, EVAL_B, H])?;
    let evaluate = || -> Result<f64, rnn_wgpu::Error> {
        let y = rnn.forward(&eval_x, None)?.y;
        readout.forward(&ctx, &y, Some(&eval_targets), &eval_head)?;
        Ok(eval_head.loss().download(&ctx)?[0] as f64)
    };

    let start = Instant::now();
    let mut curve = Vec::new();
    for it in 0..ITERS {
        let starts: Vec<usize> = (0..B)
            .map(|_| rng.random_range(0..train.len() - T - 1))
            .collect();
        let (xs, targets) = windows(train, &starts, v);
        ctx.queue()
            .write_buffer(x.buffer(), 0, bytemuck::cast_slice(&xs));
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        let tape = rnn.record_forward_train(&mut enc, &x, None, &RunOptions::default(), &out)?;
        readout.record_forward(&ctx, &mut enc, &out.y, Some(&targets), &head)?;
        readout.record_backward(&ctx, &mut enc, &out.y, &head)?;
        let dy = Some(head.grad_features());
        rnn.record_backward(&mut enc, &tape, dy, None, None, &grads, GradMode::Overwrite)?;
        record_clip_grad_norm(&ctx, &mut enc, &g, 1.0, &norm)?;
        adam.record_step(&ctx, &mut enc, &params, &g)?;
        ctx.submit(enc.finish())?;
        drop(tape);
        if it % 25 == 0 || it + 1 == ITERS {
            let train_loss = head.loss().download(&ctx)?[0] as f64;
            let eval_loss = evaluate()?;
            println!(
                "iter {it:4}  train loss {train_loss:.3}  held-out loss {eval_loss:.3} nats/char \
                 ({:.2} bits/char)",
                eval_loss / std::f64::consts::LN_2
            );
            curve.push((it, train_loss, eval_loss));
        }
    }
    ctx.wait()?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{ITERS} iterations in {secs:.1} s ({:.0} characters/s, incl. evaluation)",
        (ITERS * B * T) as f64 / secs
    );
    println!("loss curve (iteration, train loss, held-out loss; nats/char):");
    for (it, train, eval) in &curve {
        println!("  {it:4}  {train:.3}  {eval:.3}");
    }
    let eval_loss = evaluate()?;
    println!(
        "final held-out loss {eval_loss:.3} nats/char ({:.2} bits/char); uniform {:.3}, \
         unigram {unigram:.3}",
        eval_loss / std::f64::consts::LN_2,
        (v as f64).ln()
    );
    println!(
        "\nsample after training (temperature {TEMPERATURE}):\n{}",
        sample(
            &ctx,
            &rnn,
            &readout,
            &corpus.vocab,
            SAMPLE_CHARS,
            &mut sample_rng
        )?
    );
    Ok(())
}
