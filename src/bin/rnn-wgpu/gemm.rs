//! `--gemm M,N,K`: times the crate's own GEMM (`rnn_wgpu::gpu::gemm::record_gemm`,
//! `c = a · b + bias`, plain row-major operands) on seeded random data, checks a few entries
//! against an f64 CPU product and prints one line ending in GFLOP/s (`2*M*N*K` flops).

use std::time::Instant;

use rnn_wgpu::gpu::gemm::record_gemm;
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

/// What one `--gemm` run measured.
pub struct GemmResult {
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
    warmup: usize,
    reps: usize,
    seed: u64,
) -> Result<GemmResult> {
    let (ha, hb, hbias) = (
        uniform(m * k, seed),
        uniform(k * n, seed + 1),
        uniform(n, seed + 2),
    );
    let a = GpuTensor::upload(ctx, &ha, &[m, k])?;
    let b = GpuTensor::upload(ctx, &hb, &[k, n])?;
    let bias = GpuTensor::upload(ctx, &hbias, &[n])?;
    let c = GpuTensor::zeros(ctx, &[m, n])?;
    let pass = || -> Result<()> {
        let mut enc = ctx
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("--gemm"),
            });
        record_gemm(ctx, &mut enc, &a, &b, &bias, &c)?;
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
        let want = f64::from(hbias[j])
            + (0..k)
                .map(|kk| f64::from(ha[i * k + kk]) * f64::from(hb[kk * n + j]))
                .sum::<f64>();
        max_err = max_err.max((f64::from(got[i * n + j]) - want).abs());
    }
    Ok(GemmResult {
        gflops: 2.0 * (m * n * k) as f64 / (median_ms * 1e6),
        samples_ms,
        median_ms,
        max_err,
        tol: tolerance(k),
    })
}
