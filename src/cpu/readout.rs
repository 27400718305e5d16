//! CPU reference of the classification read-out: a linear layer and softmax cross-entropy over
//! rows of features, forward and backward, in f64 with plain loops.
//!
//! Mirrors `gpu::readout` (`shaders/readout.wgsl`, `shaders/readout_backward.wgsl`) by name
//! and argument order. The loss is PyTorch's `nn.CrossEntropyLoss()` (mean over rows) of
//! `nn.Linear(H, C)` applied to each row:
//!
//! ```text
//! logits[n, c] = b[c] + sum_h F[n, h] * W[c, h]           F [N, H], W [C, H], b [C]
//! p[n, c]      = softmax_c(logits[n, :])
//! row_loss[n]  = -log p[n, target[n]]
//! loss         = mean_n row_loss[n]
//! ```
//!
//! and with `d[n, c] = (p[n, c] - [c == target[n]]) / N` (dloss/dlogits):
//!
//! ```text
//! dW[c, h] = sum_n d[n, c] * F[n, h]     db[c] = sum_n d[n, c]     dF[n, h] = sum_c d[n, c] * W[c, h]
//! ```

use crate::error::{Error, Result};

/// The sizes of one read-out call: `rows` N, `features` H, `classes` C.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadoutShape {
    /// N: rows of features (B for a sequence classifier, T·B for per-step outputs).
    pub rows: usize,
    /// H: features per row (the RNN's output width).
    pub features: usize,
    /// C: classes.
    pub classes: usize,
}

impl ReadoutShape {
    /// Errors: [`Error::ZeroSize`] if any size is zero.
    pub fn validate(&self) -> Result<()> {
        if self.rows == 0 {
            return Err(Error::ZeroSize("readout rows"));
        }
        if self.features == 0 {
            return Err(Error::ZeroSize("readout features"));
        }
        if self.classes == 0 {
            return Err(Error::ZeroSize("readout classes"));
        }
        Ok(())
    }

    /// Check that `targets` holds one class index below C per row.
    ///
    /// Errors: [`Error::ShapeMismatch`] (named `targets`) for a wrong length,
    /// [`Error::IndexOutOfRange`] (what: `"class"`) for an index `>= C`.
    pub fn check_targets(&self, targets: &[u32]) -> Result<()> {
        check_len("targets", targets.len(), &[self.rows])?;
        match targets.iter().find(|&&t| t as usize >= self.classes) {
            Some(&t) => Err(Error::IndexOutOfRange {
                what: "class",
                index: t as usize,
                bound: self.classes,
            }),
            None => Ok(()),
        }
    }
}

/// Errors: [`Error::ShapeMismatch`] named `name` if `len` is not the product of `shape`.
pub(crate) fn check_len(name: &str, len: usize, shape: &[usize]) -> Result<()> {
    if len != shape.iter().product::<usize>() {
        return Err(Error::ShapeMismatch {
            name: name.into(),
            expected: shape.to_vec(),
            got: vec![len],
        });
    }
    Ok(())
}

/// What [`readout_forward`] computes.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadoutForward {
    /// `[N, C]` pre-softmax scores.
    pub logits: Vec<f64>,
    /// `[N, C]` softmax of each row of `logits`.
    pub probs: Vec<f64>,
    /// `[N]`: `-log p[n, target[n]]`; empty without targets.
    pub row_loss: Vec<f64>,
    /// Mean of `row_loss` (`nn.CrossEntropyLoss()`); NaN without targets.
    pub loss: f64,
}

/// What [`readout_backward`] computes: gradients of the mean loss.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadoutGrads {
    /// `[C, H]`.
    pub grad_weight: Vec<f64>,
    /// `[C]`.
    pub grad_bias: Vec<f64>,
    /// `[N, H]`: the upstream gradient of the features (an RNN's `dy` or `dh_n`).
    pub grad_features: Vec<f64>,
}

/// Linear layer plus softmax (and, given `targets [N]`, cross-entropy) over `features [N, H]`
/// with `weight [C, H]` and `bias [C]`. The softmax subtracts each row's maximum, so any
/// finite logits give finite probabilities and losses.
///
/// Errors: those of [`ReadoutShape::validate`] and [`ReadoutShape::check_targets`], and
/// [`Error::ShapeMismatch`] naming `features`, `weight` or `bias` for a wrong length.
pub fn readout_forward(
    shape: ReadoutShape,
    features: &[f64],
    weight: &[f64],
    bias: &[f64],
    targets: Option<&[u32]>,
) -> Result<ReadoutForward> {
    let ReadoutShape {
        rows: n,
        features: h,
        classes: c,
    } = shape;
    check_inputs(shape, features, weight)?;
    check_len("bias", bias.len(), &[c])?;
    if let Some(t) = targets {
        shape.check_targets(t)?;
    }
    let mut logits = vec![0.0; n * c];
    for row in 0..n {
        for class in 0..c {
            let mut s = bias[class];
            for k in 0..h {
                s += features[row * h + k] * weight[class * h + k];
            }
            logits[row * c + class] = s;
        }
    }
    let mut probs = vec![0.0; n * c];
    let mut row_loss = Vec::new();
    for row in 0..n {
        let l = &logits[row * c..(row + 1) * c];
        let max = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = l.iter().map(|&v| (v - max).exp()).sum();
        for class in 0..c {
            probs[row * c + class] = (l[class] - max).exp() / sum;
        }
        if let Some(t) = targets {
            // -log softmax = logsumexp - logit, without forming a probability that may be 0.
            row_loss.push(sum.ln() + max - l[t[row] as usize]);
        }
    }
    let loss = match targets {
        Some(_) => row_loss.iter().sum::<f64>() / n as f64,
        None => f64::NAN,
    };
    Ok(ReadoutForward {
        logits,
        probs,
        row_loss,
        loss,
    })
}

/// Gradients of [`readout_forward`]'s mean loss, from its `probs [N, C]` and the same
/// `targets [N]`, `features [N, H]` and `weight [C, H]`.
///
/// Errors: as [`readout_forward`], plus [`Error::ShapeMismatch`] naming `probs`.
pub fn readout_backward(
    shape: ReadoutShape,
    features: &[f64],
    weight: &[f64],
    probs: &[f64],
    targets: &[u32],
) -> Result<ReadoutGrads> {
    let ReadoutShape {
        rows: n,
        features: h,
        classes: c,
    } = shape;
    check_inputs(shape, features, weight)?;
    check_len("probs", probs.len(), &[n, c])?;
    shape.check_targets(targets)?;
    let mut dlogits = vec![0.0; n * c];
    for row in 0..n {
        for class in 0..c {
            let hot = if targets[row] as usize == class {
                1.0
            } else {
                0.0
            };
            dlogits[row * c + class] = (probs[row * c + class] - hot) / n as f64;
        }
    }
    let mut grad_weight = vec![0.0; c * h];
    let mut grad_bias = vec![0.0; c];
    let mut grad_features = vec![0.0; n * h];
    for row in 0..n {
        for class in 0..c {
            let d = dlogits[row * c + class];
            grad_bias[class] += d;
            for k in 0..h {
                grad_weight[class * h + k] += d * features[row * h + k];
                grad_features[row * h + k] += d * weight[class * h + k];
            }
        }
    }
    Ok(ReadoutGrads {
        grad_weight,
        grad_bias,
        grad_features,
    })
}

fn check_inputs(shape: ReadoutShape, features: &[f64], weight: &[f64]) -> Result<()> {
    shape.validate()?;
    check_len("features", features.len(), &[shape.rows, shape.features])?;
    check_len("weight", weight.len(), &[shape.classes, shape.features])
}
