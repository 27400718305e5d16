//! What `tests/prop_valid.rs` draws: [`Case`]s from the strategy [`case`], as widely as
//! [`Draws`] says.

use proptest::prelude::*;
use rnn_wgpu::{Activation, Activations, Direction, Layout, Nonlinearity, RnnConfig};

/// One drawn problem.
#[derive(Debug, Clone)]
pub struct Case {
    pub cfg: RnnConfig,
    pub t: usize,
    pub b: usize,
    pub lengths: Option<Vec<usize>>,
    /// Whether `h0` (and `c0`) are given, else zeros.
    pub with_state: bool,
    /// Which of `dy`, `dh_n`, `dc_n` are given.
    pub upstream: [bool; 3],
    /// `Rnn::with_max_chunk_steps`.
    pub chunk: Option<usize>,
    pub dropout_seed: u64,
    pub data_seed: u64,
}

/// ONNX activations with parameters inside the ranges the fixed tests use. `unit` limits the
/// choice to functions with values in [0, 1] (what a GRU's gates and coupled LSTM gates need
/// to stay a convex mix), `bounded` to functions bounded by 1 (an LSTM's gates).
pub fn activation(unit: bool, bounded: bool) -> BoxedStrategy<Activation> {
    use Activation::*;
    let mut choices = vec![
        Sigmoid,
        HardSigmoid {
            alpha: 0.2,
            beta: 0.5,
        },
        HardSigmoid {
            alpha: 0.4,
            beta: 0.45,
        },
    ];
    if !unit {
        choices.extend([
            Tanh,
            Softsign,
            ScaledTanh {
                alpha: 0.9,
                beta: 0.8,
            },
        ]);
    }
    if !bounded {
        choices.extend([
            Relu,
            LeakyRelu { alpha: 0.1 },
            ThresholdedRelu { alpha: 0.2 },
            ScaledTanh {
                alpha: 1.5,
                beta: 0.7,
            },
            Affine {
                alpha: 0.6,
                beta: 0.1,
            },
            Elu { alpha: 0.8 },
            Softplus,
        ]);
    }
    proptest::sample::select(choices).boxed()
}

/// The variant part of a configuration.
#[derive(Debug, Clone)]
pub struct Variant {
    pub acts: Option<Activations>,
    pub relu: bool,
    pub proj: Option<usize>,
    pub peepholes: bool,
    pub input_forget: bool,
    pub gate_clip: Option<f32>,
    pub cell_clip: Option<(f32, f32)>,
    pub reset_before: bool,
}

pub fn variant(cell: u8, h: usize) -> BoxedStrategy<Variant> {
    let clip = prop::option::weighted(0.2, 0.5f32..3.0);
    match cell {
        // LSTM
        0 => (
            any::<(bool, bool)>(),
            prop::option::weighted(0.3, 1..h.max(2)),
            clip,
            prop::option::weighted(0.2, (-3.0f32..-0.1, 0.1f32..3.0)),
            any::<bool>(),
        )
            .prop_flat_map(move |((peep, coupled), proj, gc, cc, custom)| {
                let acts = if custom {
                    (activation(coupled, true), activation(false, false), {
                        activation(false, false)
                    })
                        .prop_map(|(gate, cell, hidden)| Some(Activations { gate, cell, hidden }))
                        .boxed()
                } else {
                    Just(None).boxed()
                };
                acts.prop_map(move |acts| Variant {
                    acts,
                    relu: false,
                    proj: proj.filter(|&p| p < h),
                    peepholes: peep,
                    input_forget: coupled,
                    gate_clip: gc,
                    cell_clip: cc,
                    reset_before: false,
                })
            })
            .boxed(),
        // GRU
        1 => (any::<(bool, bool)>(), clip)
            .prop_flat_map(|((before, custom), gc)| {
                let acts = if custom {
                    (activation(true, true), activation(false, false))
                        .prop_map(|(gate, cell)| {
                            Some(Activations {
                                gate,
                                cell,
                                hidden: Activation::Tanh,
                            })
                        })
                        .boxed()
                } else {
                    Just(None).boxed()
                };
                acts.prop_map(move |acts| Variant {
                    acts,
                    relu: false,
                    proj: None,
                    peepholes: false,
                    input_forget: false,
                    gate_clip: gc,
                    cell_clip: None,
                    reset_before: before,
                })
            })
            .boxed(),
        // RNN tanh / relu, or any activation
        _ => (
            any::<bool>(),
            prop::option::weighted(0.3, activation(false, false)),
            clip,
        )
            .prop_map(|(relu, act, gc)| Variant {
                acts: act.map(|cell| Activations {
                    cell,
                    ..Activations::default()
                }),
                relu,
                proj: None,
                peepholes: false,
                input_forget: false,
                gate_clip: gc,
                cell_clip: None,
                reset_before: false,
            })
            .boxed(),
    }
}

#[allow(clippy::too_many_arguments)]
pub fn build(
    cell: u8,
    (i, h, layers): (usize, usize, usize),
    dir: Direction,
    batch_first: bool,
    bias: bool,
    dropout: f32,
    v: &Variant,
) -> RnnConfig {
    let mut bld = match cell {
        0 => RnnConfig::lstm(i, h),
        1 => RnnConfig::gru(i, h).linear_before_reset(!v.reset_before),
        _ => RnnConfig::rnn(
            i,
            h,
            if v.relu {
                Nonlinearity::Relu
            } else {
                Nonlinearity::Tanh
            },
        ),
    };
    bld = bld
        .num_layers(layers)
        .direction(dir)
        .layout(if batch_first {
            Layout::BatchFirst
        } else {
            Layout::SeqMajor
        })
        .bias(bias)
        .dropout(dropout);
    if let Some(a) = v.acts {
        bld = bld.activations(a);
    }
    if let Some(p) = v.proj {
        bld = bld.proj_size(p);
    }
    if let Some(c) = v.gate_clip {
        bld = bld.gate_clip(c);
    }
    if let Some((lo, hi)) = v.cell_clip {
        bld = bld.cell_clip(lo, hi);
    }
    if cell == 0 {
        bld = bld.peepholes(v.peepholes).input_forget(v.input_forget);
    }
    // Every drawn configuration is valid: `build` must accept it.
    bld.build().expect("a valid drawn configuration")
}

/// How widely a run draws. Each distinct cell variant and step tiling is a shader pipeline
/// that llvmpipe compiles on first use (about a second of CPU each when Mesa's shader cache is
/// cold, as on a fresh CI machine), so CI draws from palettes that a few hundred cases reuse;
/// `RNN_WGPU_PROP=full` draws every value in range (the long run).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Draws {
    /// The cell variant, `H`, `B` and bias from [`anchors`] (twelve cell variants, `H` and
    /// `B` from [`H_PALETTE`] / [`B_PALETTE`]); `I`, `T`, layers, direction, layout,
    /// lengths, states, upstream gradients, chunking and dropout free.
    Ci,
    /// Every value free: B 1-33, H 1-70, any variant.
    Full,
}

/// Hidden sizes CI draws: 1, odd sizes that are not multiples of 4, and the largest (70).
pub const H_PALETTE: &[usize] = &[1, 6, 13, 31, 70];
/// Batch sizes CI draws: 1, one partial tile, and the largest (33, one over a power of two).
pub const B_PALETTE: &[usize] = &[1, 5, 33];

/// CI's cell variants: `(cell, variant)` with every LSTM variant, both GRU resets, both RNN
/// nonlinearities, clips, and each of the eleven ONNX activations in at least one role.
pub fn families() -> Vec<(u8, Variant)> {
    use Activation::*;
    let plain = Variant {
        acts: None,
        relu: false,
        proj: None,
        peepholes: false,
        input_forget: false,
        gate_clip: None,
        cell_clip: None,
        reset_before: false,
    };
    let acts = |gate, cell, hidden| Some(Activations { gate, cell, hidden });
    vec![
        (0, plain.clone()),
        (
            0,
            Variant {
                peepholes: true,
                proj: Some(usize::MAX),
                ..plain.clone()
            },
        ),
        (
            0,
            Variant {
                input_forget: true,
                gate_clip: Some(1.0),
                cell_clip: Some((-0.6, 0.6)),
                ..plain.clone()
            },
        ),
        (
            0,
            Variant {
                acts: acts(
                    HardSigmoid {
                        alpha: 0.2,
                        beta: 0.5,
                    },
                    LeakyRelu { alpha: 0.1 },
                    ScaledTanh {
                        alpha: 1.5,
                        beta: 0.7,
                    },
                ),
                ..plain.clone()
            },
        ),
        (
            0,
            Variant {
                acts: acts(
                    Softsign,
                    Elu { alpha: 0.8 },
                    Affine {
                        alpha: 0.6,
                        beta: 0.1,
                    },
                ),
                peepholes: true,
                ..plain.clone()
            },
        ),
        (1, plain.clone()),
        (
            1,
            Variant {
                reset_before: true,
                ..plain.clone()
            },
        ),
        (
            1,
            Variant {
                reset_before: true,
                acts: acts(
                    HardSigmoid {
                        alpha: 0.4,
                        beta: 0.45,
                    },
                    Relu,
                    Tanh,
                ),
                gate_clip: Some(1.0),
                ..plain.clone()
            },
        ),
        (
            1,
            Variant {
                acts: acts(Sigmoid, Softplus, Tanh),
                ..plain.clone()
            },
        ),
        (2, plain.clone()),
        (
            2,
            Variant {
                relu: true,
                ..plain.clone()
            },
        ),
        (
            2,
            Variant {
                acts: acts(Sigmoid, ThresholdedRelu { alpha: 0.2 }, Tanh),
                ..plain
            },
        ),
    ]
}

/// `((cell, variant), (H, B), bias)`.
pub type Anchor = ((u8, Variant), (usize, usize), bool);

/// CI's `(cell, variant)`, `(H, B)` and bias: each family with one size pair, the families
/// together covering every palette value with several cells, and both bias settings.
pub fn anchors() -> Vec<Anchor> {
    families()
        .into_iter()
        .enumerate()
        .map(|(k, (cell, mut v))| {
            let h = H_PALETTE[k % H_PALETTE.len()];
            let b = B_PALETTE[k % B_PALETTE.len()];
            // A projection takes the largest size it can (P = H - 1), none where H = 1.
            v.proj = v.proj.and(Some(h - 1)).filter(|&p| p >= 1);
            ((cell, v), (h, b), k % 4 != 3)
        })
        .collect()
}

pub fn draws() -> Draws {
    match std::env::var("RNN_WGPU_PROP").as_deref() {
        Ok("full") => Draws::Full,
        _ => Draws::Ci,
    }
}

/// `(cell, variant)`, `(H, B)` and bias.
pub fn cell_and_sizes(d: Draws) -> BoxedStrategy<Anchor> {
    match d {
        Draws::Ci => prop::sample::select(anchors()).boxed(),
        Draws::Full => (0u8..4, 1usize..=70, 1usize..=33, any::<bool>())
            .prop_flat_map(|(cell, h, b, bias)| {
                (Just(cell), variant(cell, h), Just((h, b)), Just(bias))
            })
            .prop_map(|(cell, v, hb, bias)| ((cell, v), hb, bias))
            .boxed(),
    }
}

pub fn case(d: Draws) -> impl Strategy<Value = Case> {
    (
        cell_and_sizes(d),
        (1usize..=40, 1usize..=3, 1usize..=60),
        prop::sample::select(vec![
            Direction::Forward,
            Direction::Reverse,
            Direction::Bidirectional,
        ]),
        any::<bool>(),
        prop::option::weighted(0.2, prop::sample::select(vec![0.2f32, 0.5])),
    )
        .prop_flat_map(
            |(((cell, v), (h, b), bias), (i, layers, t), dir, bf, dropout)| {
                let dropout = if layers > 1 {
                    dropout.unwrap_or(0.0)
                } else {
                    0.0
                };
                let cfg = build(cell, (i, h, layers), dir, bf, bias, dropout, &v);
                (
                    prop::option::weighted(0.4, prop::collection::vec(1..=t, b)),
                    prop::option::weighted(0.2, 1..=t),
                    any::<(bool, [bool; 3], u64, u64)>(),
                )
                    .prop_map(
                        move |(lengths, chunk, (with_state, upstream, ds, seed))| Case {
                            cfg: cfg.clone(),
                            t,
                            b,
                            lengths,
                            with_state,
                            upstream,
                            chunk,
                            dropout_seed: ds,
                            data_seed: seed >> 8,
                        },
                    )
            },
        )
}
