//! `--gemm M,N,K`: times the crate's own GEMM (`rnn_wgpu::gpu::gemm::record_gemm_with`) on
//! seeded random data, checks a few entries against an f64 CPU product and prints one line
//! ending in GFLOP/s (`2*M*N*K` flops). `--gemm-mode plain` is the input projection
//! (`c = a · b + bias`, what `record_gemm` does); `trans-a` (the weight gradients,
//! `a` stored `(K, M)`) and `trans-b` (the data gradients, `b` stored `(N, K)`) have no bias,
//! and `--gemm-split-k` lets them split K as the backward pass does.

use std::time::Instant;

use rnn_wgpu::gpu::gemm::{GemmOptions, record_gemm_with, split_k_chunks};
use rnn_wgpu::{Context, GpuTensor, Result};

use crate::measure::{median, uniform};

/// Entries of `c` checked against the f64 product (the four corners and a few inside).
const CHECKED: usize = 16;

/// Largest allowed `|gpu - ref|` of a checked entry. With `|a|, |b|, |bias| <= 1` each entry
/// is a sum of `K + 1` terms of magnitude <= 1, so its f32 rounding error stays below
/// `K * 2^-23` (and grows like `sqrt(K) * 2^-24` in practice), while a wrong index or a lost
/// slab gives errors of order `sqrt(K)`.
fn tolerance(k: usize) -> f64 {
    k as f64 * f64::from(f32::EPSILON)
}

/// Parse `M,N,K` (each at least 1).
pub fn parse_shape(spec: &str) -> std::result::Result<(usize, usize, usize), String> {
    let dims: Vec<usize> = spec
        .split(',')
        .map(|s| s.trim().parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| format!("--gemm {spec:?}: {e} (expected M,N,K)"))?;
    match dims[..] {
        [m, n, k] if m > 0 && n > 0 && k > 0 => Ok((m, n, k)),
        _ => Err(format!(
            "--gemm {spec:?}: expected three positive sizes M,N,K"
        )),
    }
}

/// Which product `--gemm` times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GemmMode {
    /// `c = a (M, K) · b (K, N) + bias (N)`: the input projection.
    Plain,
    /// `c = a^T · b` with `a` stored `(K, M)`, no bias: the weight gradients.
    TransA,
    /// `c = a · b^T` with `b` stored `(N, K)`, no bias: the data gradients.
    TransB,
}

/// What one `--gemm` run measured.
pub struct GemmResult {
    /// K chunks of the product (1: not split).
    pub splits: usize,
    pub samples_ms: Vec<f64>,
    pub median_ms: f64,
    pub gflops: f64,
    pub max_err: f64,
    pub tol: f64,
}

/// Warm up, time `reps` products (one submission each, then a wait) and check `CHECKED`
/// entries of the last one against an f64 product.
pub fn run(
    ctx: &Context,
    (m, n, k): (usize, usize, usize),
    (mode, split_k): (GemmMode, bool),
    warmup: usize,
    reps: usize,
    seed: u64,
) -> Result<GemmResult> {
    let opts = GemmOptions {
        trans_a: mode == GemmMode::TransA,
        trans_b: mode == GemmMode::TransB,
        split_k,
        ..GemmOptions::default()
    };
    let with_bias = mode == GemmMode::Plain;
    let (ha, hb) = (uniform(m * k, seed), uniform(k * n, seed + 1));
    let hbias = if with_bias {
        uniform(n, seed + 2)
    } else {
        vec![0.0; n]
    };
    let a_shape = if opts.trans_a { [k, m] } else { [m, k] };
    let b_shape = if opts.trans_b { [n, k] } else { [k, n] };
    let a = GpuTensor::upload(ctx, &ha, &a_shape)?;
    let b = GpuTensor::upload(ctx, &hb, &b_shape)?;
    let bias = GpuTensor::upload(ctx, &hbias, &[n])?;
    let c = GpuTensor::zeros(ctx, &[m, n])?;
    let pass = || -> Result<()> {
        let mut enc = ctx
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("--gemm"),
            });
        let bias = with_bias.then_some(&bias);
        record_gemm_with(ctx, &mut enc, &a, &b, bias, &c, opts)?;
        ctx.submit(enc.finish())?;
        ctx.wait()
    };
    for _ in 0..warmup {
        pass()?;
    }
    let mut samples_ms = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        pass()?;
        samples_ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let median_ms = median(&samples_ms);

    let got = c.download(ctx)?;
    let mut max_err = 0.0f64;
    for s in 0..CHECKED {
        // Corners first, then entries spread over the matrix (a fixed stride walk).
        let (i, j) = match s {
            0 => (0, 0),
            1 => (0, n - 1),
            2 => (m - 1, 0),
            3 => (m - 1, n - 1),
            _ => ((s * 7919) % m, (s * 104_729) % n),
        };
        let a_at = |kk: usize| if opts.trans_a { kk * m + i } else { i * k + kk };
        let b_at = |kk: usize| if opts.trans_b { j * k + kk } else { kk * n + j };
        let want = f64::from(hbias[j])
            + (0..k)
                .map(|kk| f64::from(ha[a_at(kk)]) * f64::from(hb[b_at(kk)]))
                .sum::<f64>();
        max_err = max_err.max((f64::from(got[i * n + j]) - want).abs());
    }
    Ok(GemmResult {
        splits: if split_k && !with_bias {
            split_k_chunks(m, n, k)
        } else {
            1
        },
        gflops: 2.0 * (m * n * k) as f64 / (median_ms * 1e6),
        samples_ms,
        median_ms,
        max_err,
        tol: tolerance(k),
    })
}
