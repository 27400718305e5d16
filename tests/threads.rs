//! Several threads share one context and one model: 4 threads × 50 mixed calls (forward with
//! and without lengths, forward_train + backward, session steps with a row reset, a whole
//! training step recorded into one encoder), bit-identical to the same calls run serially;
//! and threads that compile the same new pipelines at once get the serial run's bits.

mod common;

use common::gpu::{ctx, own_ctx};
use common::seeded;
use rnn_wgpu::gpu::clip::record_clip_grad_norm;
use rnn_wgpu::gpu::optim::{Adam, AdamOptimizer};
use rnn_wgpu::{
    Context, GpuTensor, GradMode, Nonlinearity, Rnn, RnnConfig, RunOptions, State, Weights,
};

const THREADS: usize = 4;
const PER_THREAD: usize = 50;

fn bits(v: Vec<f32>) -> Vec<u32> {
    v.into_iter().map(f32::to_bits).collect()
}

/// A model a thread trains on its own (the shared model's parameters stay fixed, so the
/// shared calls are pure functions of their inputs and can be compared with a serial run).
struct Trainer {
    rnn: Rnn,
    adam: AdamOptimizer,
}

impl Trainer {
    fn new(ctx: &Context, seed: u64) -> Trainer {
        let cfg = RnnConfig::gru(3, 5).build().unwrap();
        let rnn = Rnn::new(ctx, &Weights::init(&cfg, seed)).unwrap();
        let adam = AdamOptimizer::new(ctx, Adam::new(1e-2), &rnn.parameters().unwrap()).unwrap();
        Trainer { rnn, adam }
    }

    /// One training step (forward_train, backward, clip to norm 1, Adam) recorded into one
    /// encoder and submitted once; returns the updated parameters.
    fn step(&mut self, ctx: &Context, k: usize) -> Vec<u32> {
        let (t, b) = (4, 3);
        let rnn = &self.rnn;
        let x = GpuTensor::upload(ctx, &seeded3(300 + k as u64, t * b * 3), &[t, b, 3]).unwrap();
        let out = rnn.alloc_output(t, b).unwrap();
        let grads = rnn.alloc_grads(t, b).unwrap();
        let norm = GpuTensor::zeros(ctx, &[1]).unwrap();
        let params = rnn.parameters().unwrap();
        let g = grads.params.tensors();
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        let tape = rnn
            .record_forward_train(&mut enc, &x, None, &RunOptions::default(), &out)
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
        self.adam.record_step(ctx, &mut enc, &params, &g).unwrap();
        ctx.submit(enc.finish()).unwrap();
        params
            .iter()
            .flat_map(|p| bits(p.download(ctx).unwrap()))
            .collect()
    }
}

fn seeded3(seed: u64, n: usize) -> Vec<f32> {
    seeded(seed, n, 1.0)
}

/// Call `k` of the schedule: kind `k % 5`; returns every value it produced.
fn mixed_call(ctx: &Context, rnn: &Rnn, trainer: &mut Trainer, k: usize) -> Vec<u32> {
    let (t, b) = [(4, 2), (7, 3), (2, 5)][k % 3];
    let i = rnn.config().input_size();
    let x = GpuTensor::upload(ctx, &seeded3(100 + k as u64, t * b * i), &[t, b, i]).unwrap();
    match k % 5 {
        0 => bits(rnn.forward(&x, None).unwrap().y.download(ctx).unwrap()),
        1 => {
            let lengths: Vec<usize> = (0..b).map(|r| 1 + (r + k) % t).collect();
            let cfg = rnn.config();
            let ld = cfg.num_layers() * cfg.num_directions();
            let state = State {
                h: GpuTensor::upload(ctx, &seeded3(k as u64, ld * b * 6), &[ld, b, 6]).unwrap(),
                c: Some(
                    GpuTensor::upload(ctx, &seeded3(7 + k as u64, ld * b * 6), &[ld, b, 6])
                        .unwrap(),
                ),
            };
            let opts = RunOptions {
                lengths: Some(&lengths),
                ..Default::default()
            };
            let out = rnn.forward_with(&x, Some(&state), &opts).unwrap();
            let mut v = bits(out.y.download(ctx).unwrap());
            v.extend(bits(out.c_n.unwrap().download(ctx).unwrap()));
            v
        }
        2 => {
            let (out, tape) = rnn.forward_train(&x, None).unwrap();
            let g = rnn.backward(&tape, Some(&out.y), None, None).unwrap();
            let mut v = bits(g.dx.download(ctx).unwrap());
            v.extend(bits(g.params.layers[0].w_hh.download(ctx).unwrap()));
            v
        }
        3 => {
            let mut s = rnn.session(b).unwrap();
            let mut v = Vec::new();
            for step in 0..t {
                if step == t / 2 {
                    let rows: Vec<bool> = (0..b).map(|r| (r + k).is_multiple_of(2)).collect();
                    s.reset(&rows).unwrap();
                }
                let xt = seeded3(200 + (k * 10 + step) as u64, b * i);
                v.extend(bits(s.step_host(&xt).unwrap().download(ctx).unwrap()));
            }
            v
        }
        _ => trainer.step(ctx, k),
    }
}

#[test]
fn four_threads_share_one_context_and_model_bit_identically() {
    let Some(ctx) = ctx() else { return };
    let cfg = RnnConfig::lstm(3, 6).num_layers(2).build().unwrap();
    let rnn = Rnn::new(ctx, &Weights::init(&cfg, 12)).unwrap();
    // Serial: call k runs on thread k % THREADS's trainer, in the order each thread runs them.
    let mut trainers: Vec<Trainer> = (0..THREADS)
        .map(|th| Trainer::new(ctx, th as u64))
        .collect();
    let serial: Vec<Vec<u32>> = (0..THREADS * PER_THREAD)
        .map(|k| mixed_call(ctx, &rnn, &mut trainers[k % THREADS], k))
        .collect();
    let parallel: Vec<Vec<Vec<u32>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|th| {
                let rnn = rnn.clone();
                s.spawn(move || {
                    let mut trainer = Trainer::new(ctx, th as u64);
                    (0..PER_THREAD)
                        .map(|n| mixed_call(ctx, &rnn, &mut trainer, n * THREADS + th))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut kinds = [0usize; 5];
    for (th, results) in parallel.iter().enumerate() {
        for (n, got) in results.iter().enumerate() {
            let k = n * THREADS + th;
            kinds[k % 5] += 1;
            assert!(!got.is_empty());
            assert!(
                *got == serial[k],
                "thread {th}, call {k} (kind {}) differs from the serial run",
                k % 5
            );
        }
    }
    assert_eq!(kinds.iter().sum::<usize>(), 200);
    assert!(kinds.iter().all(|&n| n == 40), "{kinds:?}");
    // Nothing went wrong unreported.
    ctx.wait().unwrap();
}

#[test]
fn threads_compiling_the_same_pipelines_at_once_get_the_serial_bits() {
    let Some(serial_ctx) = own_ctx() else { return };
    let Some(shared) = own_ctx() else { return };
    let configs = [
        RnnConfig::lstm(4, 9).build().unwrap(),
        RnnConfig::gru(4, 9).build().unwrap(),
        RnnConfig::rnn(4, 9, Nonlinearity::Tanh).build().unwrap(),
        RnnConfig::lstm(4, 9).build().unwrap(),
    ];
    let run = |ctx: &Context, cfg: &RnnConfig| -> Vec<u32> {
        let rnn = Rnn::new(ctx, &Weights::init(cfg, 21)).unwrap();
        let x = GpuTensor::upload(ctx, &seeded3(22, 5 * 2 * 4), &[5, 2, 4]).unwrap();
        let (out, tape) = rnn.forward_train(&x, None).unwrap();
        let g = rnn.backward(&tape, Some(&out.y), None, None).unwrap();
        let mut v = bits(out.y.download(ctx).unwrap());
        v.extend(bits(g.dx.download(ctx).unwrap()));
        v
    };
    let serial: Vec<Vec<u32>> = configs.iter().map(|c| run(&serial_ctx, c)).collect();
    // Four threads start on an empty pipeline cache at once; two of them need the same
    // pipelines.
    let parallel: Vec<Vec<u32>> = std::thread::scope(|s| {
        let handles: Vec<_> = configs
            .iter()
            .map(|c| {
                let shared = &shared;
                s.spawn(move || run(shared, c))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(parallel == serial, "concurrent first use differs");
    shared.wait().unwrap();
}
