//! Criterion benches of single kernels: the input-projection GEMM alone, a whole LSTM, GRU
//! or plain RNN (tanh) forward (one GEMM plus T fused steps, one submission), and a whole
//! LSTM training step (`forward_train` + `backward`: T fused step-backward kernels plus the
//! gradient GEMMs, two submissions).
//!
//! Run with `cargo bench --bench kernels` (add `-- --quick` for a short run, or a name filter
//! such as `-- lstm_fwd`). Sizes are small enough for a software adapter (llvmpipe), where each
//! iteration takes well under a second; they run unchanged on a real GPU.
//!
//! Throughput is reported as `Throughput::Elements(flops)`: criterion's "elements" are FLOPs,
//! so its `Gelem/s` reads as GFLOP/s. GEMM: `2*M*N*K`; forward: `2*G*B*H*(I+H)*T`
//! ([`RnnConfig::forward_flops`]), i.e. LSTM `8*B*H*(I+H)*T`, GRU `6*B*H*(I+H)*T`, RNN
//! `2*B*H*(I+H)*T`; training step: 3x the forward, as in the harness; element-wise work not
//! counted.
//!
//! Timing: `iter_custom` records and submits `iters` runs, then waits for the device inside
//! the timed region, so the time is the GPU's work plus the host's recording, not just the
//! cost of queueing it.

use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rnn_wgpu::gpu::gemm::record_gemm;
use rnn_wgpu::{Context, GpuTensor, Nonlinearity, Rnn, RnnConfig, RnnConfigBuilder, Weights};

/// `(M, N, K)` of the GEMM benches: the input projections of `lstm_fwd_H128_B4_T50` and
/// `lstm_fwd_H256_B16_T25` (`M = T*B`, `N = 4H`, `K = I`). Wider GEMMs such as
/// `gemm_M1600_N1024_K256` (~0.4 s an iteration on an idle 2-core llvmpipe) are left out so
/// every sample stays well under a second there.
const GEMM_SIZES: &[(usize, usize, usize)] = &[(200, 512, 128), (400, 1024, 256)];

/// `(H, B, T)` of the LSTM forward benches, `I = H`.
const LSTM_SIZES: &[(usize, usize, usize)] = &[(64, 16, 25), (128, 4, 50), (256, 16, 25)];

/// `(H, B, T)` of the GRU forward benches (`nn.GRU`, reset after), `I = H`.
const GRU_SIZES: &[(usize, usize, usize)] = &[(64, 16, 25)];

/// `(H, B, T)` of the plain RNN forward benches (`nn.RNN`, tanh), `I = H`.
const RNN_SIZES: &[(usize, usize, usize)] = &[(128, 16, 25)];

/// `(H, B, T)` of the training-step benches, `I = H`: the smallest forward size (a step is
/// about 3x a forward, ~0.1 s on llvmpipe).
const TRAIN_SIZES: &[(usize, usize, usize)] = &[(64, 16, 25)];

fn uniform(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0f32..=1.0)).collect()
}

fn bench_gemm(group: &mut BenchmarkGroup<'_, WallTime>, ctx: &Context) {
    for &(m, n, k) in GEMM_SIZES {
        let a = GpuTensor::upload(ctx, &uniform(m * k, 1), &[m, k]).expect("upload a");
        let b = GpuTensor::upload(ctx, &uniform(k * n, 2), &[k, n]).expect("upload b");
        let bias = GpuTensor::upload(ctx, &uniform(n, 3), &[n]).expect("upload bias");
        let c = GpuTensor::zeros(ctx, &[m, n]).expect("alloc c");
        group.throughput(Throughput::Elements((2 * m * n * k) as u64));
        group.bench_function(format!("gemm_M{m}_N{n}_K{k}"), |bench| {
            bench.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    let mut enc =
                        ctx.device()
                            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                                label: Some("bench gemm"),
                            });
                    record_gemm(ctx, &mut enc, &a, &b, &bias, &c).expect("record gemm");
                    ctx.submit(enc.finish()).unwrap();
                }
                ctx.wait().expect("gemm ran");
                start.elapsed()
            })
        });
    }
}

/// A forward bench family: the cell's name, its `(H, B, T)` sizes, and its config builder
/// for `I = H`.
type CellBenches = (
    &'static str,
    &'static [(usize, usize, usize)],
    fn(usize) -> RnnConfigBuilder,
);

/// Forward benches of every cell, named `{cell}_fwd_H{h}_B{b}_T{t}`.
fn bench_forward(group: &mut BenchmarkGroup<'_, WallTime>, ctx: &Context) {
    let cells: [CellBenches; 3] = [
        ("lstm", LSTM_SIZES, |h| RnnConfig::lstm(h, h)),
        ("gru", GRU_SIZES, |h| RnnConfig::gru(h, h)),
        ("rnn", RNN_SIZES, |h| {
            RnnConfig::rnn(h, h, Nonlinearity::Tanh)
        }),
    ];
    for (name, sizes, builder) in cells {
        for &(h, b, t) in sizes {
            bench_one_forward(group, ctx, name, builder(h).build().expect("config"), b, t);
        }
    }
}

/// One forward bench: `forward` + the final `wait`, `forward_flops(B, T)` per iteration.
fn bench_one_forward(
    group: &mut BenchmarkGroup<'_, WallTime>,
    ctx: &Context,
    name: &str,
    cfg: RnnConfig,
    b: usize,
    t: usize,
) {
    let h = cfg.hidden_size();
    let rnn = Rnn::new(ctx, &Weights::init(&cfg, 0)).expect("model");
    let x = GpuTensor::upload(ctx, &uniform(t * b * h, 4), &[t, b, h]).expect("upload x");
    group.throughput(Throughput::Elements(cfg.forward_flops(b, t) as u64));
    group.bench_function(format!("{name}_fwd_H{h}_B{b}_T{t}"), |bench| {
        bench.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                rnn.forward(&x, None).expect("forward");
            }
            ctx.wait().expect("forward ran");
            start.elapsed()
        })
    });
}

fn bench_lstm_train(group: &mut BenchmarkGroup<'_, WallTime>, ctx: &Context) {
    for &(h, b, t) in TRAIN_SIZES {
        let cfg = RnnConfig::lstm(h, h).build().expect("config");
        let rnn = Rnn::new(ctx, &Weights::init(&cfg, 0)).expect("model");
        let x = GpuTensor::upload(ctx, &uniform(t * b * h, 4), &[t, b, h]).expect("upload x");
        let dy = GpuTensor::upload(ctx, &uniform(t * b * h, 5), &[t, b, h]).expect("upload dy");
        group.throughput(Throughput::Elements(3 * cfg.forward_flops(b, t) as u64));
        group.bench_function(format!("lstm_train_H{h}_B{b}_T{t}"), |bench| {
            bench.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    let (_out, tape) = rnn.forward_train(&x, None).expect("forward_train");
                    rnn.backward(&tape, Some(&dy), None, None)
                        .expect("backward");
                }
                ctx.wait().expect("training steps ran");
                start.elapsed()
            })
        });
    }
}

fn kernels(c: &mut Criterion) {
    let ctx = match Context::new() {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!(
                "kernels bench: no wgpu adapter, nothing benched ({e}). On Linux without a GPU, \
                 `apt-get install mesa-vulkan-drivers` provides a software Vulkan adapter."
            );
            return;
        }
    };
    eprintln!("kernels bench on {}", ctx.describe());
    let mut group = c.benchmark_group("kernels");
    // Iterations take milliseconds to a few hundred ms on a software adapter: flat sampling
    // gives every sample the same few iterations instead of criterion's linear ramp.
    group.sampling_mode(SamplingMode::Flat);
    bench_gemm(&mut group, &ctx);
    bench_forward(&mut group, &ctx);
    bench_lstm_train(&mut group, &ctx);
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = kernels
}
criterion_main!(benches);
