//! Helpers shared by the integration tests: seeded inputs, tolerance checks, fixtures, the
//! GPU context.
#![allow(dead_code)]

pub mod fixtures;
pub mod gpu;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One LSTM problem size: `input_size`, `hidden_size`, `B`, `T`, and whether it has biases.
pub struct Case {
    pub input: usize,
    pub hidden: usize,
    pub batch: usize,
    pub steps: usize,
    pub bias: bool,
}

/// The acceptance grid of the forward and backward tests: every value of
/// B ∈ {1, 3, 17, 64}, H ∈ {1, 13, 64, 256}, I ∈ {1, 7, 256}, T ∈ {1, 50, 1000} appears at
/// least once, with and without biases.
pub const GRID: &[Case] = &[
    Case {
        input: 1,
        hidden: 1,
        batch: 1,
        steps: 1,
        bias: true,
    },
    Case {
        input: 7,
        hidden: 13,
        batch: 3,
        steps: 1000,
        bias: true,
    },
    Case {
        input: 256,
        hidden: 64,
        batch: 17,
        steps: 50,
        bias: true,
    },
    Case {
        input: 7,
        hidden: 256,
        batch: 64,
        steps: 50,
        bias: true,
    },
    Case {
        input: 256,
        hidden: 256,
        batch: 1,
        steps: 50,
        bias: false,
    },
    Case {
        input: 1,
        hidden: 64,
        batch: 64,
        steps: 1000,
        bias: true,
    },
    Case {
        input: 256,
        hidden: 13,
        batch: 17,
        steps: 1,
        bias: false,
    },
    Case {
        input: 1,
        hidden: 256,
        batch: 3,
        steps: 1000,
        bias: true,
    },
];

/// `n` values uniform in `[-scale, scale]`, reproducible from `seed`.
pub fn seeded(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-scale..=scale)).collect()
}

/// Assert `|got - want| <= atol + rtol * |want|` element-wise. On failure, report the first
/// mismatching index with its values, the count of mismatches and the worst error.
#[track_caller]
pub fn assert_close<G: Copy + Into<f64>>(
    name: &str,
    got: &[G],
    want: &[f64],
    atol: f64,
    rtol: f64,
) {
    assert_eq!(
        got.len(),
        want.len(),
        "{name}: length {} vs reference {}",
        got.len(),
        want.len()
    );
    let mut first = None;
    let mut bad = 0usize;
    let mut worst = 0.0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let g: f64 = g.into();
        let err = (g - w).abs();
        // Written so that a NaN error counts as a mismatch.
        if err.is_nan() || err > atol + rtol * w.abs() {
            bad += 1;
            first.get_or_insert((i, g, w));
        }
        if err > worst || err.is_nan() {
            worst = err;
        }
    }
    if let Some((i, g, w)) = first {
        let show: Vec<String> = got
            .iter()
            .zip(want)
            .skip(i)
            .take(4)
            .map(|(&g, &w)| format!("{:.6e} vs {:.6e}", g.into(), w))
            .collect();
        panic!(
            "{name}: {bad}/{} elements outside atol={atol:e} rtol={rtol:e}; first at index {i}: \
             got {g:.6e}, want {w:.6e} (worst |err| {worst:.3e}); from there: [{}]",
            got.len(),
            show.join(", ")
        );
    }
}

/// Largest absolute difference.
pub fn max_abs_diff<G: Copy + Into<f64>>(got: &[G], want: &[f64]) -> f64 {
    got.iter()
        .zip(want)
        .map(|(&g, &w)| (g.into() - w).abs())
        .fold(0.0, f64::max)
}

/// `v` (in `cfg.layout()`, `f` features) is exactly zero at every step past its row's length.
#[allow(clippy::too_many_arguments)]
pub fn assert_zero_past_lengths<G: Copy + Into<f64>>(
    case: &str,
    cfg: &rnn_wgpu::RnnConfig,
    v: &[G],
    lengths: &[usize],
    t: usize,
    b: usize,
    f: usize,
    what: &str,
) {
    for (row, &len) in lengths.iter().enumerate() {
        for step in len..t {
            let at = match cfg.layout() {
                rnn_wgpu::Layout::BatchFirst => (row * t + step) * f,
                _ => (step * b + row) * f,
            };
            assert!(
                v[at..at + f].iter().all(|&e| e.into() == 0.0),
                "{case}: {what} at row {row}, step {step} (length {len}) is not exactly zero"
            );
        }
    }
}
