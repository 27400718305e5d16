//! CPU reference of gradient clipping and the optimiser steps, in f64 with plain loops.
//!
//! Mirrors the GPU's `gpu::clip` and `gpu::optim` by name and argument order:
//! [`clip_grad_value`], [`grad_norm`], [`clip_grad_norm`] ↔ `shaders/clip.wgsl`;
//! [`sgd_step`] ↔ `SgdOptimizer::step`, [`adam_step`] ↔ `AdamOptimizer::step`
//! (`shaders/optim.wgsl`), with the optimiser state in explicit structs. Each tensor is a flat
//! `Vec<f64>` (its shape does not matter to any of these functions); parameters and gradients
//! pair up by index.

use crate::error::{Error, Result};
use crate::optim::{Adam, Sgd};

/// Clamp every element to `[min, max]` in place (`torch.nn.utils.clip_grad_value_` with
/// `min = -c, max = c`). NaN stays NaN.
///
/// Errors: [`Error::InvalidConfig`] if `min > max` or either is NaN.
pub fn clip_grad_value(grads: &mut [Vec<f64>], min: f64, max: f64) -> Result<()> {
    if min.is_nan() || max.is_nan() || min > max {
        return Err(Error::InvalidConfig(format!(
            "clip_grad_value needs min <= max (neither NaN), got [{min}, {max}]"
        )));
    }
    for grad in grads.iter_mut() {
        for g in grad.iter_mut() {
            if *g < min {
                *g = min;
            }
            if *g > max {
                *g = max;
            }
        }
    }
    Ok(())
}

/// `sqrt(sum over all tensors and elements of g^2)`; 0 for no tensors.
pub fn grad_norm(grads: &[Vec<f64>]) -> f64 {
    let mut sum_squares = 0.0;
    for grad in grads {
        for &g in grad {
            sum_squares += g * g;
        }
    }
    sum_squares.sqrt()
}

/// `torch.nn.utils.clip_grad_norm_`: with `total = grad_norm(grads)` and
/// `coef = max_norm / (total + 1e-6)`, multiply every gradient by `coef` unless `coef >= 1`.
/// Returns `total` (before clipping).
///
/// Errors: [`Error::InvalidConfig`] if `max_norm` is negative or NaN.
pub fn clip_grad_norm(grads: &mut [Vec<f64>], max_norm: f64) -> Result<f64> {
    if max_norm.is_nan() || max_norm < 0.0 {
        return Err(Error::InvalidConfig(format!(
            "clip_grad_norm needs max_norm >= 0, got {max_norm}"
        )));
    }
    let total = grad_norm(grads);
    let coef = max_norm / (total + 1e-6);
    // PyTorch multiplies by clamp(coef, max = 1): the same, NaN included.
    if coef.is_nan() || coef < 1.0 {
        for grad in grads.iter_mut() {
            for g in grad.iter_mut() {
                *g *= coef;
            }
        }
    }
    Ok(total)
}

/// SGD state: one momentum buffer per parameter, created at the first step (as torch does).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SgdState {
    /// Empty before the first step, and always empty without momentum.
    pub momentum_buffers: Vec<Vec<f64>>,
}

/// Adam state: the step count and the two moments, created at the first step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AdamState {
    /// Steps taken (torch's `state["step"]`).
    pub step: u64,
    /// First moments `m`, one per parameter (empty before the first step).
    pub exp_avg: Vec<Vec<f64>>,
    /// Second moments `v`, one per parameter (empty before the first step).
    pub exp_avg_sq: Vec<Vec<f64>>,
}

/// One `torch.optim.SGD` step, in place. See [`Sgd`] for the rule.
///
/// Errors: [`Error::InvalidConfig`] from [`Sgd::validate`], [`Error::ShapeMismatch`] when the
/// counts or lengths of `params`, `grads` and the state disagree.
pub fn sgd_step(
    config: &Sgd,
    state: &mut SgdState,
    params: &mut [Vec<f64>],
    grads: &[Vec<f64>],
) -> Result<()> {
    config.validate()?;
    check_pairs(params, grads)?;
    let momentum = config.momentum != 0.0;
    // torch keeps `momentum_buffer = None` until the first step, then clones the gradient.
    let first_step = momentum && state.momentum_buffers.is_empty();
    if first_step {
        state.momentum_buffers = params.iter().map(|p| vec![0.0; p.len()]).collect();
    } else if momentum {
        check_state("momentum_buffers", &state.momentum_buffers, params)?;
    }
    for (i, (param, grad)) in params.iter_mut().zip(grads).enumerate() {
        for k in 0..param.len() {
            let mut g = grad[k];
            if config.weight_decay != 0.0 {
                g += config.weight_decay * param[k];
            }
            if momentum {
                let buf = &mut state.momentum_buffers[i][k];
                *buf = if first_step {
                    g
                } else {
                    config.momentum * *buf + (1.0 - config.dampening) * g
                };
                g = if config.nesterov {
                    g + config.momentum * *buf
                } else {
                    *buf
                };
            }
            param[k] -= config.lr * g;
        }
    }
    Ok(())
}

/// One `torch.optim.Adam` step, in place. See [`Adam`] for the rule; the bias corrections use
/// the step count after incrementing it, as torch does.
///
/// Errors: as [`sgd_step`].
pub fn adam_step(
    config: &Adam,
    state: &mut AdamState,
    params: &mut [Vec<f64>],
    grads: &[Vec<f64>],
) -> Result<()> {
    config.validate()?;
    check_pairs(params, grads)?;
    if state.step == 0 {
        state.exp_avg = params.iter().map(|p| vec![0.0; p.len()]).collect();
        state.exp_avg_sq = state.exp_avg.clone();
    }
    check_state("exp_avg", &state.exp_avg, params)?;
    check_state("exp_avg_sq", &state.exp_avg_sq, params)?;
    state.step += 1;
    let step = state.step as f64;
    let bias_correction1 = 1.0 - config.beta1.powf(step);
    let bias_correction2 = 1.0 - config.beta2.powf(step);
    let step_size = config.lr / bias_correction1;
    let bias_correction2_sqrt = bias_correction2.sqrt();
    for (i, (param, grad)) in params.iter_mut().zip(grads).enumerate() {
        let (m, v) = (&mut state.exp_avg[i], &mut state.exp_avg_sq[i]);
        for k in 0..param.len() {
            let mut g = grad[k];
            if config.weight_decay != 0.0 {
                g += config.weight_decay * param[k];
            }
            m[k] += (1.0 - config.beta1) * (g - m[k]);
            v[k] = config.beta2 * v[k] + (1.0 - config.beta2) * g * g;
            let denom = v[k].sqrt() / bias_correction2_sqrt + config.eps;
            param[k] -= step_size * (m[k] / denom);
        }
    }
    Ok(())
}

fn check_pairs(params: &[Vec<f64>], grads: &[Vec<f64>]) -> Result<()> {
    if params.len() != grads.len() {
        return Err(Error::ShapeMismatch {
            name: "grads (count)".into(),
            expected: vec![params.len()],
            got: vec![grads.len()],
        });
    }
    for (i, (p, g)) in params.iter().zip(grads).enumerate() {
        if p.len() != g.len() {
            return Err(Error::ShapeMismatch {
                name: format!("grad {i}"),
                expected: vec![p.len()],
                got: vec![g.len()],
            });
        }
    }
    Ok(())
}

fn check_state(name: &str, state: &[Vec<f64>], params: &[Vec<f64>]) -> Result<()> {
    if state.len() != params.len() {
        return Err(Error::ShapeMismatch {
            name: format!("{name} (count)"),
            expected: vec![params.len()],
            got: vec![state.len()],
        });
    }
    for (i, (s, p)) in state.iter().zip(params).enumerate() {
        if s.len() != p.len() {
            return Err(Error::ShapeMismatch {
                name: format!("{name} {i}"),
                expected: vec![p.len()],
                got: vec![s.len()],
            });
        }
    }
    Ok(())
}
