//! ONNX's activation functions and their derivatives, in f64.
//!
//! [`activate`] and [`derivative`] both take the *pre-activation* `x`: derivatives are never
//! recovered from outputs, because several functions (ThresholdedRelu, Affine, a clamped
//! HardSigmoid) cannot be inverted.
//!
//! Kinks (Relu, LeakyRelu and Elu at 0, ThresholdedRelu at `alpha`, HardSigmoid where
//! `alpha*x + beta` reaches 0 or 1) take the value PyTorch's autograd uses there:
//! - `relu'(0) = 0` (`threshold_backward` passes only `x > 0`);
//! - `leaky_relu'(0) = alpha` (`x > 0 ? 1 : alpha`);
//! - `elu'(0) = alpha` (`x > 0 ? 1 : alpha*e^x`);
//! - `thresholded_relu'(alpha) = 0` (`threshold(x, alpha, 0)` passes only `x > alpha`);
//! - `hard_sigmoid'` is `alpha` strictly inside `(0, 1)` and 0 on the boundary
//!   (`hardsigmoid_backward` uses strict bounds).
//!
//! Every function is finite for any finite input (±1e4 included).

use crate::config::Activation;

/// `act(x)` for a pre-activation `x`.
pub fn activate(act: Activation, x: f64) -> f64 {
    match act {
        Activation::Sigmoid => super::sigmoid(x),
        Activation::Tanh => super::tanh(x),
        Activation::Relu => x.max(0.0),
        Activation::HardSigmoid { alpha, beta } => (alpha as f64 * x + beta as f64).clamp(0.0, 1.0),
        Activation::LeakyRelu { alpha } => {
            if x >= 0.0 {
                x
            } else {
                alpha as f64 * x
            }
        }
        Activation::ThresholdedRelu { alpha } => {
            if x > alpha as f64 {
                x
            } else {
                0.0
            }
        }
        Activation::ScaledTanh { alpha, beta } => alpha as f64 * (beta as f64 * x).tanh(),
        Activation::Affine { alpha, beta } => alpha as f64 * x + beta as f64,
        Activation::Elu { alpha } => {
            if x >= 0.0 {
                x
            } else {
                // `exp_m1` keeps precision for small |x|; for very negative x it tends to -1.
                alpha as f64 * x.exp_m1()
            }
        }
        Activation::Softsign => x / (1.0 + x.abs()),
        Activation::Softplus => softplus(x),
    }
}

/// `act'(x)` for a pre-activation `x` (kinks as in the module docs).
pub fn derivative(act: Activation, x: f64) -> f64 {
    match act {
        Activation::Sigmoid => {
            let s = super::sigmoid(x);
            s * (1.0 - s)
        }
        Activation::Tanh => {
            let t = super::tanh(x);
            1.0 - t * t
        }
        Activation::Relu => {
            if x > 0.0 {
                1.0
            } else {
                0.0
            }
        }
        Activation::HardSigmoid { alpha, beta } => {
            let v = alpha as f64 * x + beta as f64;
            if v > 0.0 && v < 1.0 {
                alpha as f64
            } else {
                0.0
            }
        }
        Activation::LeakyRelu { alpha } => {
            if x > 0.0 {
                1.0
            } else {
                alpha as f64
            }
        }
        Activation::ThresholdedRelu { alpha } => {
            if x > alpha as f64 {
                1.0
            } else {
                0.0
            }
        }
        Activation::ScaledTanh { alpha, beta } => {
            let t = (beta as f64 * x).tanh();
            alpha as f64 * beta as f64 * (1.0 - t * t)
        }
        Activation::Affine { alpha, .. } => alpha as f64,
        Activation::Elu { alpha } => {
            if x > 0.0 {
                1.0
            } else {
                alpha as f64 * x.exp()
            }
        }
        Activation::Softsign => {
            let d = 1.0 + x.abs();
            1.0 / (d * d)
        }
        // d/dx ln(1 + e^x) = sigmoid(x).
        Activation::Softplus => super::sigmoid(x),
    }
}

/// `ln(1 + e^x)` without overflow: `max(x, 0) + ln(1 + e^-|x|)`, where `exp` only ever sees
/// a non-positive argument.
fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Activation; 11] = [
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Relu,
        Activation::HardSigmoid {
            alpha: 0.2,
            beta: 0.5,
        },
        Activation::LeakyRelu { alpha: 0.1 },
        Activation::ThresholdedRelu { alpha: 0.3 },
        Activation::ScaledTanh {
            alpha: 1.5,
            beta: 0.7,
        },
        Activation::Affine {
            alpha: 0.8,
            beta: -0.2,
        },
        Activation::Elu { alpha: 0.6 },
        Activation::Softsign,
        Activation::Softplus,
    ];

    #[test]
    fn derivatives_match_central_differences_away_from_kinks() {
        let eps = 1e-6;
        for act in ALL {
            for &x in &[-3.1, -1.7, -0.45, -0.05, 0.07, 0.61, 1.3, 2.9] {
                let num = (activate(act, x + eps) - activate(act, x - eps)) / (2.0 * eps);
                let ana = derivative(act, x);
                assert!(
                    (num - ana).abs() <= 1e-8,
                    "{act:?} at {x}: numeric {num}, analytic {ana}"
                );
            }
        }
    }

    #[test]
    fn finite_for_extreme_inputs() {
        for act in ALL {
            for &x in &[-1e4, -745.0, 0.0, 745.0, 1e4] {
                assert!(activate(act, x).is_finite(), "{act:?}({x})");
                assert!(derivative(act, x).is_finite(), "{act:?}'({x})");
            }
        }
        assert_eq!(activate(Activation::Softplus, 1e4), 1e4);
        assert_eq!(activate(Activation::Softplus, -1e4), 0.0);
    }

    #[test]
    fn kinks_follow_pytorch() {
        assert_eq!(derivative(Activation::Relu, 0.0), 0.0);
        assert_eq!(
            derivative(Activation::LeakyRelu { alpha: 0.1 }, 0.0),
            0.1f32 as f64
        );
        assert_eq!(
            derivative(Activation::Elu { alpha: 0.6 }, 0.0),
            0.6f32 as f64
        );
        assert_eq!(
            derivative(Activation::ThresholdedRelu { alpha: 0.3 }, 0.3f32 as f64),
            0.0
        );
        let hs = Activation::HardSigmoid {
            alpha: 0.5,
            beta: 0.5,
        };
        assert_eq!(derivative(hs, -1.0), 0.0);
        assert_eq!(derivative(hs, 1.0), 0.0);
        assert_eq!(derivative(hs, 0.0), 0.5);
    }
}
