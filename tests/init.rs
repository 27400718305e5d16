//! Initialisers (`Weights::init_with`): reproducible, the distributions they claim (mean and
//! variance within bounds derived below), orthogonal gate blocks, the forget-gate bias, and
//! typed errors for schemes that do not apply.
//!
//! Statistical bounds. For `n` independent draws of a distribution with variance `σ²` and
//! fourth central moment `μ4`, the sample mean has standard error `σ/√n` and the sample
//! variance `sqrt((μ4 - σ⁴)/n)` (to O(1/n)). Uniform on `±a`: `σ² = a²/3`, `μ4 = a⁴/5`, so
//! `μ4 - σ⁴ = 4a⁴/45`. Normal: `μ4 = 3σ⁴`, so `μ4 - σ⁴ = 2σ⁴`. With n in the hundreds or more
//! the central limit theorem holds well, and a bound of 5 standard errors is crossed by a
//! correct sampler with probability below 1e-6 per check. For the weight matrices here
//! (n ≥ 7680) five standard errors of the variance are about 5% of it (uniform:
//! `5·3·sqrt(4/45/n)`) or 8% (normal: `5·sqrt(2/n)`), for the 192 biases 33%; a wrong scale
//! (Xavier's `6/(fi+fo)` for Kaiming's `3/fi`, a missed gain of 2 or √2) moves the variance
//! by 60% or more, and a normal where a uniform belongs fails the support check.

use rnn_wgpu::init::{BiasInit, Fan, Init, WeightInit};
use rnn_wgpu::{Direction, Error, Nonlinearity, RnnConfig, Weights};

/// Standard errors a statistic may stray (see the module docs).
const Z: f64 = 5.0;

#[derive(Clone, Copy, Debug)]
enum Dist {
    /// Uniform on `±a`.
    Uniform(f64),
    /// Normal with this standard deviation.
    Normal(f64),
}

fn check_distribution(what: &str, data: &[f32], dist: Dist) {
    let n = data.len() as f64;
    let mean = data.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = data.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let (sigma2, excess) = match dist {
        Dist::Uniform(a) => (a * a / 3.0, 4.0 * a.powi(4) / 45.0),
        Dist::Normal(s) => (s * s, 2.0 * s.powi(4)),
    };
    let (mean_se, var_se) = ((sigma2 / n).sqrt(), (excess / n).sqrt());
    assert!(
        mean.abs() <= Z * mean_se,
        "{what}: mean {mean:.3e}, bound {:.3e} ({dist:?}, n = {n})",
        Z * mean_se
    );
    assert!(
        (var - sigma2).abs() <= Z * var_se,
        "{what}: variance {var:.4e}, expected {sigma2:.4e} ± {:.1e} ({dist:?}, n = {n})",
        Z * var_se
    );
    if let Dist::Uniform(a) = dist {
        // Drawn in f64 on [-a, a] and rounded to f32: at most half an ulp past `a`.
        let bound = a * (1.0 + f32::EPSILON as f64);
        assert!(
            data.iter().all(|v| (*v as f64).abs() <= bound),
            "{what}: support"
        );
    }
}

fn scheme(input: WeightInit, recurrent: WeightInit) -> Init {
    Init {
        input,
        recurrent,
        ..Init::default()
    }
}

/// `(I, H)` of the statistics model: `weight_ih [4H, I] = [192, 40]` (7680 draws) and
/// `weight_hh [192, 48]` (9216 draws) for an LSTM, so fans differ between the two.
const I: usize = 40;
const H: usize = 48;

#[test]
fn the_default_scheme_is_weights_init_and_seeds_reproduce() {
    for cfg in [
        RnnConfig::lstm(3, 5)
            .proj_size(2)
            .peepholes(true)
            .build()
            .unwrap(),
        RnnConfig::gru(4, 6)
            .bias(false)
            .num_layers(2)
            .build()
            .unwrap(),
        RnnConfig::rnn(2, 3, Nonlinearity::Relu)
            .direction(Direction::Bidirectional)
            .build()
            .unwrap(),
    ] {
        let init = Init {
            input: WeightInit::XavierNormal { gain: 1.0 },
            recurrent: WeightInit::Orthogonal { gain: 1.0 },
            bias: BiasInit::Zeros,
            forget_bias: None,
        };
        assert_eq!(
            Weights::init_with(&cfg, &Init::default(), 5).unwrap(),
            Weights::init(&cfg, 5)
        );
        let a = Weights::init_with(&cfg, &init, 5).unwrap();
        assert_eq!(a, Weights::init_with(&cfg, &init, 5).unwrap(), "{cfg:?}");
        assert_ne!(a, Weights::init_with(&cfg, &init, 6).unwrap(), "{cfg:?}");
        a.validate().unwrap();
    }
}

#[test]
fn pytorch_default_is_uniform_in_one_over_sqrt_h() {
    let cfg = RnnConfig::lstm(I, H).build().unwrap();
    let w = Weights::init_with(&cfg, &Init::default(), 1).unwrap();
    let a = 1.0 / (H as f64).sqrt();
    for (name, _, data) in w.named_tensors() {
        // The biases hold 4H = 192 draws only: the same bounds, derived for their n.
        check_distribution(&name, data, Dist::Uniform(a));
    }
}

#[test]
fn xavier_and_kaiming_have_their_variances() {
    let cfg = RnnConfig::lstm(I, H).build().unwrap();
    let (rows, ih_cols, hh_cols) = ((4 * H) as f64, I as f64, H as f64);
    let xavier_a = |gain: f64, fi: f64| gain * (6.0 / (fi + rows)).sqrt();
    let xavier_s = |gain: f64, fi: f64| gain * (2.0 / (fi + rows)).sqrt();
    let cases: Vec<(WeightInit, WeightInit, Dist, Dist)> = vec![
        (
            WeightInit::XavierUniform { gain: 1.0 },
            WeightInit::XavierUniform { gain: 2.0 },
            Dist::Uniform(xavier_a(1.0, ih_cols)),
            Dist::Uniform(xavier_a(2.0, hh_cols)),
        ),
        (
            WeightInit::XavierNormal { gain: 1.0 },
            WeightInit::XavierNormal { gain: 0.5 },
            Dist::Normal(xavier_s(1.0, ih_cols)),
            Dist::Normal(xavier_s(0.5, hh_cols)),
        ),
        (
            WeightInit::KaimingUniform {
                gain: 2f32.sqrt(),
                fan: Fan::In,
            },
            WeightInit::KaimingUniform {
                gain: 1.0,
                fan: Fan::Out,
            },
            Dist::Uniform(2f64.sqrt() * (3.0 / ih_cols).sqrt()),
            Dist::Uniform((3.0 / rows).sqrt()),
        ),
        (
            WeightInit::KaimingNormal {
                gain: 2f32.sqrt(),
                fan: Fan::In,
            },
            WeightInit::KaimingNormal {
                gain: 1.0,
                fan: Fan::Out,
            },
            Dist::Normal(2f64.sqrt() / ih_cols.sqrt()),
            Dist::Normal(1.0 / rows.sqrt()),
        ),
    ];
    for (k, (input, recurrent, d_ih, d_hh)) in cases.into_iter().enumerate() {
        let w = Weights::init_with(&cfg, &scheme(input, recurrent), 10 + k as u64).unwrap();
        let l = w.layer(0, 0).unwrap();
        check_distribution(&format!("{input:?} weight_ih"), &l.weight_ih, d_ih);
        check_distribution(&format!("{recurrent:?} weight_hh"), &l.weight_hh, d_hh);
        // The biases keep PyTorch's default.
        let a = 1.0 / (H as f64).sqrt();
        check_distribution("bias_ih", l.bias_ih.as_ref().unwrap(), Dist::Uniform(a));
    }
}

/// `A Aᵀ` (`transpose = false`) or `Aᵀ A` of a row-major `[rows, cols]` block, in f64.
fn gram(a: &[f32], rows: usize, cols: usize, transpose: bool) -> Vec<Vec<f64>> {
    let at = |r: usize, c: usize| a[r * cols + c] as f64;
    if transpose {
        (0..cols)
            .map(|i| {
                (0..cols)
                    .map(|j| (0..rows).map(|r| at(r, i) * at(r, j)).sum())
                    .collect()
            })
            .collect()
    } else {
        (0..rows)
            .map(|i| {
                (0..rows)
                    .map(|j| (0..cols).map(|c| at(i, c) * at(j, c)).sum())
                    .collect()
            })
            .collect()
    }
}

/// Every entry of `g` within 1e-5 of `scale * I`. The f64 factor is orthonormal to ~1e-15;
/// rounding to f32 perturbs each entry by ≤ 6e-8 relative, so a dot product of n ≤ 64 unit-
/// scale terms moves by ≤ 64 · 2 · 6e-8 ≈ 8e-6 in the worst case (typically ~1e-7).
fn assert_identity(what: &str, g: &[Vec<f64>], scale: f64) {
    for (i, row) in g.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            let want = if i == j { scale } else { 0.0 };
            assert!(
                (v - want).abs() <= 1e-5,
                "{what}: ({i}, {j}) = {v}, want {want}"
            );
        }
    }
}

#[test]
fn orthogonal_recurrent_weights_are_orthogonal_per_gate_block() {
    let orth = |gain| scheme(WeightInit::PyTorchDefault, WeightInit::Orthogonal { gain });
    for (cfg, gain) in [
        (RnnConfig::lstm(8, 16).build().unwrap(), 1.0f32),
        (RnnConfig::gru(8, 13).num_layers(2).build().unwrap(), 0.5),
        (
            RnnConfig::rnn(8, 64, Nonlinearity::Tanh)
                .direction(Direction::Bidirectional)
                .build()
                .unwrap(),
            1.0,
        ),
        (RnnConfig::lstm(8, 16).proj_size(5).build().unwrap(), 1.0),
    ] {
        let w = Weights::init_with(&cfg, &orth(gain), 3).unwrap();
        let (h, s) = (cfg.hidden_size(), cfg.state_size());
        let g2 = (gain as f64).powi(2);
        for l in 0..cfg.num_layers() {
            for d in 0..cfg.num_directions() {
                let lw = w.layer(l, d).unwrap();
                let blocks: Vec<&[f32]> = lw.weight_hh.chunks(h * s).collect();
                assert_eq!(blocks.len(), cfg.gate_count());
                for (k, block) in blocks.iter().enumerate() {
                    let what = format!("{cfg:?} l{l} d{d} gate block {k}");
                    // Square blocks: W Wᵀ = Wᵀ W = gain² I. A projected LSTM's block is
                    // [H, P] with P < H: its P columns are orthonormal (Wᵀ W = I_P).
                    if s == h {
                        assert_identity(&what, &gram(block, h, s, false), g2);
                    }
                    assert_identity(&what, &gram(block, h, s, true), g2);
                }
                if blocks.len() > 1 {
                    assert!(
                        blocks[0] != blocks[1],
                        "{cfg:?}: gate blocks are drawn apart"
                    );
                }
                if let Some(hr) = &lw.weight_hr {
                    // [P, H] with P < H: orthonormal rows (W Wᵀ = I_P).
                    assert_identity("weight_hr", &gram(hr, s, h, false), g2);
                }
            }
        }
    }
}

#[test]
fn forget_bias_sets_the_lstm_forget_gate_total() {
    let cfg = RnnConfig::lstm(3, 6).num_layers(2).build().unwrap();
    let h = 6;
    for bias in [
        BiasInit::Zeros,
        BiasInit::PyTorchDefault,
        BiasInit::Constant(0.3),
    ] {
        let init = Init {
            bias,
            forget_bias: Some(1.0),
            ..Init::default()
        };
        let plain = Weights::init_with(
            &cfg,
            &Init {
                forget_bias: None,
                ..init
            },
            2,
        )
        .unwrap();
        let w = Weights::init_with(&cfg, &init, 2).unwrap();
        for l in 0..2 {
            let (lw, lp) = (w.layer(l, 0).unwrap(), plain.layer(l, 0).unwrap());
            let (bi, bh) = (lw.bias_ih.as_ref().unwrap(), lw.bias_hh.as_ref().unwrap());
            for u in 0..h {
                // Gate order i, f, g, o: the forget block is rows H..2H; the gate sees
                // b_ih + b_hh there.
                assert_eq!(bi[h + u] + bh[h + u], 1.0, "{bias:?} l{l} unit {u}");
            }
            for r in (0..4 * h).filter(|r| !(h..2 * h).contains(r)) {
                assert_eq!(bi[r], lp.bias_ih.as_ref().unwrap()[r]);
                assert_eq!(bh[r], lp.bias_hh.as_ref().unwrap()[r]);
            }
            assert_eq!(lw.weight_ih, lp.weight_ih);
        }
        if let BiasInit::Constant(v) = bias {
            assert!(
                plain
                    .layer(0, 0)
                    .unwrap()
                    .bias_hh
                    .as_ref()
                    .unwrap()
                    .iter()
                    .all(|b| *b == v)
            );
        }
    }
    // Peepholes follow the bias scheme.
    let peep = RnnConfig::lstm(3, 6).peepholes(true).build().unwrap();
    let init = Init {
        bias: BiasInit::Zeros,
        ..Init::default()
    };
    let w = Weights::init_with(&peep, &init, 1).unwrap();
    assert!(
        w.layer(0, 0)
            .unwrap()
            .peephole
            .as_ref()
            .unwrap()
            .iter()
            .all(|p| *p == 0.0)
    );
}

#[test]
fn schemes_that_do_not_apply_are_refused() {
    let forget = Init {
        forget_bias: Some(1.0),
        ..Init::default()
    };
    for cfg in [
        RnnConfig::gru(3, 4).build().unwrap(),
        RnnConfig::rnn(3, 4, Nonlinearity::Tanh).build().unwrap(),
        RnnConfig::lstm(3, 4).bias(false).build().unwrap(),
    ] {
        assert!(
            matches!(
                Weights::init_with(&cfg, &forget, 1),
                Err(Error::InvalidConfig(m)) if m.contains("forget_bias")
            ),
            "{cfg:?}"
        );
    }
    let lstm = RnnConfig::lstm(3, 4).build().unwrap();
    for bad in [
        scheme(
            WeightInit::XavierUniform { gain: f32::NAN },
            WeightInit::PyTorchDefault,
        ),
        scheme(
            WeightInit::PyTorchDefault,
            WeightInit::Orthogonal {
                gain: f32::INFINITY,
            },
        ),
        Init {
            bias: BiasInit::Constant(f32::NAN),
            ..Init::default()
        },
        Init {
            forget_bias: Some(f32::INFINITY),
            ..Init::default()
        },
    ] {
        assert!(
            matches!(
                Weights::init_with(&lstm, &bad, 1),
                Err(Error::InvalidConfig(_))
            ),
            "{bad:?}"
        );
    }
}
