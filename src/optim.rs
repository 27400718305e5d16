//! Optimiser settings, shared by the GPU optimisers ([`crate::gpu::optim`]) and their CPU
//! reference ([`crate::cpu::optim`]): `torch.optim.SGD` and `torch.optim.Adam`
//! hyper-parameters and the checks both paths make on them. Neutral: it imports neither path.

use crate::error::{Error, Result};

/// `torch.optim.SGD` hyper-parameters (`maximize = False`).
///
/// Per step, with `g` the gradient and `p` the parameter:
/// `g += weight_decay * p`; with momentum, `buf = g` at the first step and
/// `buf = momentum * buf + (1 - dampening) * g` after, then `g = g + momentum * buf`
/// (Nesterov) or `g = buf`; finally `p -= lr * g`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sgd {
    /// Learning rate, `>= 0`.
    pub lr: f64,
    /// Momentum factor, `>= 0` (0 turns momentum off and keeps no buffer).
    pub momentum: f64,
    /// Dampening of the momentum's gradient term (not applied at the first step, as torch).
    pub dampening: f64,
    /// L2 penalty, `>= 0`, added to the gradient as `weight_decay * p`.
    pub weight_decay: f64,
    /// Nesterov momentum; needs `momentum > 0` and `dampening == 0`.
    pub nesterov: bool,
}

impl Default for Sgd {
    /// PyTorch's defaults: `lr = 1e-3`, everything else off.
    fn default() -> Sgd {
        Sgd {
            lr: 1e-3,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        }
    }
}

impl Sgd {
    /// Plain SGD with learning rate `lr`.
    pub fn new(lr: f64) -> Sgd {
        Sgd {
            lr,
            ..Sgd::default()
        }
    }

    /// The checks `torch.optim.SGD` makes, plus finiteness.
    ///
    /// Errors: [`Error::InvalidConfig`] naming the bad value.
    pub fn validate(&self) -> Result<()> {
        non_negative("SGD learning rate", self.lr)?;
        non_negative("SGD momentum", self.momentum)?;
        non_negative("SGD weight_decay", self.weight_decay)?;
        if !self.dampening.is_finite() {
            return Err(invalid("SGD dampening", self.dampening));
        }
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return Err(Error::InvalidConfig(format!(
                "Nesterov momentum requires a momentum and zero dampening (momentum {}, \
                 dampening {})",
                self.momentum, self.dampening
            )));
        }
        Ok(())
    }
}

/// `torch.optim.Adam` hyper-parameters (`amsgrad = False`, `maximize = False`).
///
/// Per step `t` (from 1), with `g` the gradient and `p` the parameter:
/// `g += weight_decay * p`; `m = beta1 * m + (1 - beta1) * g`;
/// `v = beta2 * v + (1 - beta2) * g^2`;
/// `denom = sqrt(v) / sqrt(1 - beta2^t) + eps`; `p -= (lr / (1 - beta1^t)) * m / denom`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adam {
    /// Learning rate, `>= 0`.
    pub lr: f64,
    /// Decay of the first moment, in `[0, 1)`.
    pub beta1: f64,
    /// Decay of the second moment, in `[0, 1)`.
    pub beta2: f64,
    /// Added to the denominator, `> 0` (torch also accepts 0, which divides 0 by 0 wherever a
    /// gradient has been exactly 0 so far; here that is an error).
    pub eps: f64,
    /// L2 penalty, `>= 0`, added to the gradient as `weight_decay * p` (Adam, not AdamW).
    pub weight_decay: f64,
}

impl Default for Adam {
    /// PyTorch's defaults: `lr = 1e-3`, `betas = (0.9, 0.999)`, `eps = 1e-8`, no decay.
    fn default() -> Adam {
        Adam {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

impl Adam {
    /// Adam with learning rate `lr` and PyTorch's other defaults.
    pub fn new(lr: f64) -> Adam {
        Adam {
            lr,
            ..Adam::default()
        }
    }

    /// The checks `torch.optim.Adam` makes, plus finiteness and `eps > 0`.
    ///
    /// Errors: [`Error::InvalidConfig`] naming the bad value.
    pub fn validate(&self) -> Result<()> {
        non_negative("Adam learning rate", self.lr)?;
        for (name, beta) in [("Adam beta1", self.beta1), ("Adam beta2", self.beta2)] {
            if !(0.0..1.0).contains(&beta) {
                return Err(Error::InvalidConfig(format!(
                    "{name} must be in [0, 1), got {beta}"
                )));
            }
        }
        if !(self.eps > 0.0 && self.eps.is_finite()) {
            return Err(Error::InvalidConfig(format!(
                "Adam eps must be positive and finite, got {}",
                self.eps
            )));
        }
        non_negative("Adam weight_decay", self.weight_decay)
    }
}

/// `v` must be finite and `>= 0` (a learning rate, a decay); the GPU optimisers check their
/// per-step learning rate with it too.
pub(crate) fn non_negative(name: &str, v: f64) -> Result<()> {
    if v >= 0.0 && v.is_finite() {
        Ok(())
    } else {
        Err(invalid(name, v))
    }
}

fn invalid(name: &str, v: f64) -> Error {
    Error::InvalidConfig(format!("invalid {name}: {v} (must be finite and >= 0)"))
}
