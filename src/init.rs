//! Seeded, reproducible weight initialisers ([`Weights::init_with`]).
//!
//! An [`Init`] says how each kind of tensor is drawn: the input weights `weight_ih`, the
//! recurrent weights `weight_hh` (and an LSTM projection's `weight_hr`), the biases (and
//! peepholes), plus an optional LSTM forget-gate bias. Every draw comes from one ChaCha8
//! stream seeded with the caller's seed, tensor by tensor in state_dict order, so a seed gives
//! the same weights on every platform.
//!
//! The fans follow `torch.nn.init` applied to a whole tensor `[rows, cols]`: `fan_in = cols`,
//! `fan_out = rows` (so `weight_ih_l0 [G*H, I]` has `fan_in = I`, `fan_out = G*H`), as
//! `nn.init.xavier_uniform_(lstm.weight_ih_l0)` would use. [`WeightInit::Orthogonal`] instead
//! works per gate block (see there).
//!
//! ```
//! use rnn_wgpu::init::{BiasInit, Init, WeightInit};
//! use rnn_wgpu::{RnnConfig, Weights};
//! # fn main() -> Result<(), rnn_wgpu::Error> {
//! let cfg = RnnConfig::lstm(16, 32).build()?;
//! // Keras' LSTM defaults: Glorot-uniform input weights, orthogonal recurrent weights,
//! // zero biases and a forget-gate bias of 1.
//! let init = Init {
//!     input: WeightInit::XavierUniform { gain: 1.0 },
//!     recurrent: WeightInit::Orthogonal { gain: 1.0 },
//!     bias: BiasInit::Zeros,
//!     forget_bias: Some(1.0),
//! };
//! let w = Weights::init_with(&cfg, &init, 7)?;
//! assert_eq!(w.layer(0, 0)?.bias_ih.as_ref().unwrap()[32], 1.0); // forget block: rows H..2H
//! # Ok(()) }
//! ```

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use crate::config::{CellKind, RnnConfig};
use crate::error::{Error, Result};
use crate::weights::{LayerWeights, Weights, tensor_names};

/// How a weight matrix `[rows, cols]` is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum WeightInit {
    /// PyTorch's `nn.LSTM`/`GRU`/`RNN` default: uniform in `±1/sqrt(H)`.
    PyTorchDefault,
    /// Glorot/Xavier uniform (`nn.init.xavier_uniform_`): uniform in `±a`,
    /// `a = gain * sqrt(6 / (fan_in + fan_out))`.
    XavierUniform {
        /// Scale (`nn.init.calculate_gain`; 1 for sigmoid/tanh).
        gain: f32,
    },
    /// Glorot/Xavier normal (`nn.init.xavier_normal_`): `N(0, std²)`,
    /// `std = gain * sqrt(2 / (fan_in + fan_out))`.
    XavierNormal {
        /// Scale (`nn.init.calculate_gain`).
        gain: f32,
    },
    /// He/Kaiming uniform (`nn.init.kaiming_uniform_`): uniform in `±gain * sqrt(3 / fan)`.
    KaimingUniform {
        /// `sqrt(2)` for relu, `sqrt(2 / (1 + a²))` for leaky relu of slope `a`, 1 for linear.
        gain: f32,
        /// Which fan the variance keeps (`mode="fan_in"` or `"fan_out"`).
        fan: Fan,
    },
    /// He/Kaiming normal (`nn.init.kaiming_normal_`): `N(0, std²)`, `std = gain / sqrt(fan)`.
    KaimingNormal {
        /// As for [`WeightInit::KaimingUniform`].
        gain: f32,
        /// Which fan the variance keeps.
        fan: Fan,
    },
    /// Orthogonal (`nn.init.orthogonal_`, Saxe et al. 2014), drawn per gate block: each
    /// `[H, cols]` block of a `[G*H, cols]` matrix (and a projection's whole `[P, H]`) is
    /// `gain` times a Haar-random matrix with orthonormal rows when `rows <= cols` (`W Wᵀ =
    /// gain² I`) and orthonormal columns when `rows >= cols` (`Wᵀ W = gain² I`): square
    /// `W_hh` blocks are orthogonal; with `proj_size = P` a `W_hh` block `[H, P]` has
    /// orthonormal columns and `W_hr [P, H]` orthonormal rows. Computed in f64 (Gram-Schmidt
    /// twice on a Gaussian matrix), then rounded to f32.
    Orthogonal {
        /// Scale of the orthonormal matrix.
        gain: f32,
    },
}

/// The fan a Kaiming initialiser keeps the variance of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fan {
    /// `cols`: the variance of the forward pass (PyTorch's default).
    #[default]
    In,
    /// `rows`: the variance of the backward pass.
    Out,
}

/// How the biases (and an LSTM's peepholes) are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum BiasInit {
    /// PyTorch's default: uniform in `±1/sqrt(H)`.
    PyTorchDefault,
    /// All zero (Keras' default).
    Zeros,
    /// Every element `value`.
    Constant(f32),
}

/// A complete initialisation scheme. The default is PyTorch's (what [`Weights::init`] does).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Init {
    /// `weight_ih_l{k}` `[G*H, I_l]`.
    pub input: WeightInit,
    /// `weight_hh_l{k}` `[G*H, S]` and an LSTM projection's `weight_hr_l{k}` `[P, H]`.
    pub recurrent: WeightInit,
    /// `bias_ih_l{k}`, `bias_hh_l{k}` `[G*H]` and an LSTM's `peephole_l{k}` `[3H]`.
    pub bias: BiasInit,
    /// LSTM only: after the biases are drawn, set the forget block (rows `H..2H`) of
    /// `bias_ih` to this value and of `bias_hh` to zero, so the forget gate's total bias is
    /// exactly this value (Jozefowicz et al. 2015 use 1.0; Keras' `unit_forget_bias`). A GRU
    /// has no forget gate (its update gate `z` interpolates instead) and a plain RNN no gate
    /// at all, so [`Weights::init_with`] refuses it there, and without biases.
    pub forget_bias: Option<f32>,
}

impl Default for Init {
    fn default() -> Self {
        Init {
            input: WeightInit::PyTorchDefault,
            recurrent: WeightInit::PyTorchDefault,
            bias: BiasInit::PyTorchDefault,
            forget_bias: None,
        }
    }
}

impl Init {
    /// Errors: see [`Weights::init_with`].
    fn check(&self, cfg: &RnnConfig) -> Result<()> {
        for (role, w) in [("input", self.input), ("recurrent", self.recurrent)] {
            let gain = match w {
                WeightInit::PyTorchDefault => 1.0,
                WeightInit::XavierUniform { gain }
                | WeightInit::XavierNormal { gain }
                | WeightInit::KaimingUniform { gain, .. }
                | WeightInit::KaimingNormal { gain, .. }
                | WeightInit::Orthogonal { gain } => gain,
            };
            if !gain.is_finite() {
                return Err(Error::InvalidConfig(format!(
                    "{role} initialiser {w:?}: the gain must be finite"
                )));
            }
        }
        if let BiasInit::Constant(v) = self.bias {
            if !v.is_finite() {
                return Err(Error::InvalidConfig(format!(
                    "bias initialiser Constant({v}) must be finite"
                )));
            }
        }
        if let Some(v) = self.forget_bias {
            if cfg.cell() != CellKind::Lstm {
                return Err(Error::InvalidConfig(format!(
                    "forget_bias applies to an LSTM's forget gate; a {} has none",
                    cfg.cell().name()
                )));
            }
            if !cfg.bias() {
                return Err(Error::InvalidConfig(
                    "forget_bias needs biases, and the configuration has bias = false".into(),
                ));
            }
            if !v.is_finite() {
                return Err(Error::InvalidConfig(format!(
                    "forget_bias must be finite, got {v}"
                )));
            }
        }
        Ok(())
    }
}

impl Weights {
    /// Weights for `cfg` drawn by `init` from a ChaCha8 stream seeded with `seed` (the same
    /// weights on every platform). `Init::default()` gives exactly [`Weights::init`].
    ///
    /// Errors: [`Error::InvalidConfig`] for a non-finite gain or constant, or a
    /// `forget_bias` on a GRU or RNN or on a model without biases.
    pub fn init_with(cfg: &RnnConfig, init: &Init, seed: u64) -> Result<Weights> {
        init.check(cfg)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let h = cfg.hidden_size();
        let k = 1.0 / (h as f32).sqrt();
        let mut tensors = Vec::new();
        for (name, shape) in tensor_names(cfg) {
            let base = name.split("_l").next().unwrap_or_default();
            let data = match (base, shape.as_slice()) {
                ("weight_ih", &[rows, cols]) => draw_matrix(&mut rng, init.input, rows, cols, h, k),
                ("weight_hh", &[rows, cols]) => {
                    draw_matrix(&mut rng, init.recurrent, rows, cols, h, k)
                }
                // One block: the projection is not gated.
                ("weight_hr", &[rows, cols]) => {
                    draw_matrix(&mut rng, init.recurrent, rows, cols, rows, k)
                }
                (_, &[n]) => match init.bias {
                    BiasInit::PyTorchDefault => uniform(&mut rng, n, k),
                    BiasInit::Zeros => vec![0.0; n],
                    BiasInit::Constant(v) => vec![v; n],
                },
                _ => return Err(Error::Internal(format!("{name}: shape {shape:?}"))),
            };
            tensors.push((base.to_string(), data));
        }
        let mut tensors = tensors.into_iter().peekable();
        let mut layers = Vec::new();
        for _ in 0..cfg.num_layers() * cfg.num_directions() {
            let mut next = |base: &str| tensors.next_if(|t| t.0 == base).map(|t| t.1);
            let mut layer = LayerWeights {
                weight_ih: next("weight_ih").unwrap_or_default(),
                weight_hh: next("weight_hh").unwrap_or_default(),
                bias_ih: next("bias_ih"),
                bias_hh: next("bias_hh"),
                weight_hr: next("weight_hr"),
                peephole: next("peephole"),
            };
            if let (Some(v), Some(bi), Some(bh)) =
                (init.forget_bias, &mut layer.bias_ih, &mut layer.bias_hh)
            {
                // PyTorch's LSTM gate order is i, f, g, o: the forget block is rows H..2H.
                bi[h..2 * h].fill(v);
                bh[h..2 * h].fill(0.0);
            }
            layers.push(layer);
        }
        Weights::from_layers(cfg, layers)
    }
}

/// `n` draws uniform in `[-k, k]` (PyTorch's default; the exact stream [`Weights::init`] has
/// always drawn).
fn uniform(rng: &mut ChaCha8Rng, n: usize, k: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-k..=k)).collect()
}

/// A `[rows, cols]` matrix of `blocks = rows / block_rows` stacked gate blocks, drawn per
/// `init` (`k` is PyTorch's default bound `1/sqrt(H)`).
fn draw_matrix(
    rng: &mut ChaCha8Rng,
    init: WeightInit,
    rows: usize,
    cols: usize,
    block_rows: usize,
    k: f32,
) -> Vec<f32> {
    let n = rows * cols;
    let (fan_in, fan_out) = (cols as f64, rows as f64);
    let normal = |rng: &mut ChaCha8Rng, std: f64| -> Vec<f32> {
        (0..n)
            .map(|_| (std * rng.sample::<f64, _>(StandardNormal)) as f32)
            .collect()
    };
    let bounded = |rng: &mut ChaCha8Rng, a: f64| -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-a..=a) as f32).collect()
    };
    let fan = |f: Fan| match f {
        Fan::In => fan_in,
        Fan::Out => fan_out,
    };
    match init {
        WeightInit::PyTorchDefault => uniform(rng, n, k),
        WeightInit::XavierUniform { gain } => {
            bounded(rng, gain as f64 * (6.0 / (fan_in + fan_out)).sqrt())
        }
        WeightInit::XavierNormal { gain } => {
            normal(rng, gain as f64 * (2.0 / (fan_in + fan_out)).sqrt())
        }
        WeightInit::KaimingUniform { gain, fan: f } => {
            bounded(rng, gain as f64 * (3.0 / fan(f)).sqrt())
        }
        WeightInit::KaimingNormal { gain, fan: f } => normal(rng, gain as f64 / fan(f).sqrt()),
        WeightInit::Orthogonal { gain } => {
            let mut out = Vec::with_capacity(n);
            for _ in 0..rows / block_rows {
                let q = orthogonal(rng, block_rows, cols);
                out.extend(q.iter().map(|v| (gain as f64 * v) as f32));
            }
            out
        }
    }
}

/// A Haar-random `[rows, cols]` matrix (row-major) with orthonormal rows (`rows <= cols`) or
/// columns (`rows >= cols`), in f64.
///
/// The `tall` matrix `[m, n]` (`m >= n`, the transpose when `rows < cols`) starts Gaussian;
/// classical Gram-Schmidt run twice per column ("twice is enough", Giraud et al. 2005) makes
/// its columns orthonormal to ~1e-15, as a QR decomposition would. Its `R` has a positive
/// diagonal by construction, which is the sign fix that makes `Q` Haar-distributed (what
/// `nn.init.orthogonal_` does with `sign(diag(R))`). Twenty lines do not warrant a linear-
/// algebra dependency in the library.
fn orthogonal(rng: &mut ChaCha8Rng, rows: usize, cols: usize) -> Vec<f64> {
    let (m, n) = (rows.max(cols), rows.min(cols));
    // Column j of the tall matrix is `q[j*m..(j+1)*m]`.
    let mut q: Vec<f64> = (0..m * n).map(|_| rng.sample(StandardNormal)).collect();
    for j in 0..n {
        for _pass in 0..2 {
            for p in 0..j {
                let dot: f64 = (0..m).map(|r| q[p * m + r] * q[j * m + r]).sum();
                for r in 0..m {
                    q[j * m + r] -= dot * q[p * m + r];
                }
            }
        }
        let norm = (0..m).map(|r| q[j * m + r].powi(2)).sum::<f64>().sqrt();
        // A Gaussian column lies in the span of the others with probability 0; were the norm
        // ever 0, the column stays 0 rather than turning into NaN.
        let scale = if norm > 0.0 { 1.0 / norm } else { 0.0 };
        q[j * m..(j + 1) * m].iter_mut().for_each(|v| *v *= scale);
    }
    // Tall `[m, n]` row-major has element (r, c) at q[c*m + r]; when rows < cols we want its
    // transpose `[n, m]`, element (c, r) at row c: exactly the column-major storage.
    if rows >= cols {
        (0..m * n).map(|i| q[(i % n) * m + i / n]).collect()
    } else {
        q
    }
}
