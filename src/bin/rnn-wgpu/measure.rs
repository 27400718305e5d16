//! Time one row on the GPU and check it against the CPU reference.

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rnn_wgpu::cpu::{RefWeights, lstm_forward, to_f64};
use rnn_wgpu::{Context, GpuTensor, Result, Rnn, RnnConfig, Weights};

use crate::suite::Row;

/// How to time and check a row.
pub struct Settings {
    pub warmup: usize,
    pub reps: usize,
    /// Batch rows the CPU reference runs on; `None` skips the check.
    pub check_rows: Option<usize>,
    pub seed: u64,
}

/// What one inference row measured.
pub struct Measurement {
    /// Wall time of each timed `forward` + `wait`, in ms.
    pub samples_ms: Vec<f64>,
    pub median_ms: f64,
    /// Queue submissions made by one forward pass.
    pub submissions: u64,
    pub check: Option<Check>,
}

/// Parity with the CPU reference on the first `rows` batch rows.
pub struct Check {
    pub rows: usize,
    /// Max |gpu - ref| over `y`, `h_n` and `c_n` of those rows.
    pub max_err: f64,
    /// The reference's time on `rows` rows.
    pub cpu_ms: f64,
}

impl Check {
    /// The reference's time scaled linearly to all `batch` rows (rows are independent, so its
    /// work is linear in B).
    pub fn cpu_ms_all_rows(&self, batch: usize) -> f64 {
        self.cpu_ms * batch as f64 / self.rows as f64
    }
}

/// Model config of a row: `I = H`, one layer, forward direction.
pub fn config(row: &Row) -> Result<RnnConfig> {
    RnnConfig::lstm(row.hidden, row.hidden).build()
}

/// Seeded input `x [T, B, I]`, uniform in ±1.
fn input(row: &Row, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..row.steps * row.batch * row.hidden)
        .map(|_| rng.random_range(-1.0f32..=1.0))
        .collect()
}

/// Run an inference row: warm up, time `reps` forwards, count one forward's submissions, and
/// (optionally) check that forward's outputs against the CPU reference.
pub fn run_inference(
    ctx: &Context,
    row: &Row,
    s: &Settings,
    progress: &dyn Fn(&str),
) -> Result<Measurement> {
    let cfg = config(row)?;
    let weights = Weights::init(&cfg, s.seed);
    let rnn = Rnn::new(ctx, &cfg, &weights)?;
    let (t, b, h) = (row.steps, row.batch, row.hidden);
    let x = input(row, s.seed.wrapping_add(1));
    let x_gpu = GpuTensor::upload(ctx, &x, &[t, b, h])?;
    ctx.wait()?;

    progress(&format!("warm-up x{}", s.warmup));
    for _ in 0..s.warmup {
        rnn.forward(&x_gpu, None)?;
        ctx.wait()?;
    }

    progress(&format!("timing x{}", s.reps));
    let mut samples_ms = Vec::with_capacity(s.reps);
    for _ in 0..s.reps {
        let start = Instant::now();
        rnn.forward(&x_gpu, None)?;
        ctx.wait()?;
        samples_ms.push(start.elapsed().as_secs_f64() * 1e3);
    }

    // One more forward, untimed: its submission count, then its outputs for the check.
    let before = ctx.submission_count();
    let out = rnn.forward(&x_gpu, None)?;
    ctx.wait()?;
    let submissions = ctx.submission_count() - before;

    let check = match s.check_rows {
        None => None,
        Some(rows) => {
            let rows = rows.clamp(1, b);
            progress(&format!("CPU reference on {rows} of {b} batch rows"));
            let y = out.y.download(ctx)?;
            let h_n = out.h_n.download(ctx)?;
            let c_n = match &out.c_n {
                Some(c) => c.download(ctx)?,
                None => {
                    return Err(rnn_wgpu::Error::Gpu("LSTM forward returned no c_n".into()));
                }
            };
            Some(check(&cfg, &weights, row, &x, rows, [&y, &h_n, &c_n])?)
        }
    };
    Ok(Measurement {
        median_ms: median(&samples_ms),
        samples_ms,
        submissions,
        check,
    })
}

/// Run the f64 reference on the first `rows` batch rows of `x` and compare.
/// `gpu` is `[y [T, B, H], h_n [1, B, H], c_n [1, B, H]]`.
fn check(
    cfg: &RnnConfig,
    weights: &Weights,
    row: &Row,
    x: &[f32],
    rows: usize,
    gpu: [&[f32]; 3],
) -> Result<Check> {
    let (t, b, h) = (row.steps, row.batch, row.hidden);
    // Batch rows never interact, so rows 0..rows of x alone give rows 0..rows of every output.
    let x_sub: Vec<f32> = (0..t)
        .flat_map(|step| &x[(step * b) * h..(step * b + rows) * h])
        .copied()
        .collect();
    let ref_weights = RefWeights::new(cfg, weights.layer(0, 0));
    let x_sub = to_f64(&x_sub);
    let start = Instant::now();
    let reference = lstm_forward(cfg, &ref_weights, &x_sub, None, None, t, rows)?;
    let cpu_ms = start.elapsed().as_secs_f64() * 1e3;

    let [y, h_n, c_n] = gpu;
    let mut max_err = 0.0f64;
    let mut compare = |g: &[f32], r: &[f64]| {
        for (a, b) in g.iter().zip(r) {
            // A NaN must fail the check, and `f64::max` would drop it, so it is kept by hand.
            let e = (*a as f64 - b).abs();
            max_err = if e.is_nan() || max_err.is_nan() {
                f64::NAN
            } else {
                max_err.max(e)
            };
        }
    };
    for step in 0..t {
        compare(
            &y[step * b * h..(step * b + rows) * h],
            &reference.y[step * rows * h..(step + 1) * rows * h],
        );
    }
    compare(&h_n[..rows * h], &reference.h_n);
    compare(&c_n[..rows * h], &reference.c_n);
    Ok(Check {
        rows,
        max_err,
        cpu_ms,
    })
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
