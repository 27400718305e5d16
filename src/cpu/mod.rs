//! The CPU reference: the specification every GPU result is measured against.
//!
//! Plain loops, f64 everywhere (inputs are widened once, every accumulation is f64). Clarity
//! beats speed here. Functions mirror the GPU path by name and argument order, and the whole
//! model's entry points take the GPU path's argument structs ([`crate::options`]):
//! [`input_projection`] (adds `b_ih`) ↔ `shaders/gemm.wgsl`; [`lstm_step`], [`gru_step`],
//! [`rnn_step`] (add `b_hh`) ↔ `shaders/rnn_step.wgsl`; their `_backward` twins ↔
//! `shaders/rnn_step_backward.wgsl`; [`forward`] / [`backward`] ↔ `gpu::Rnn::forward` /
//! `gpu::Rnn::backward`.
//!
//! Every cell and variant of [`crate::RnnConfig`] (LSTM with peepholes, coupled gates,
//! projection, gate and cell clips, ONNX activations; GRU reset after and before; the plain
//! RNN) runs through [`forward`] and [`backward`], built from the per-step functions
//! [`lstm_step`], [`gru_step`], [`rnn_step`] and their `_backward` twins.
//! [`lstm_forward`] / [`lstm_backward`] are thin wrappers over them for the plain LSTM only.
//!
//! [`stack_forward`] / [`stack_backward`] run the whole model on top of those: several layers,
//! forward, reverse or bidirectional, per-sequence lengths and either layout, with PyTorch's
//! semantics (see the `stack` module); [`stack_forward_train`] / [`stack_forward_with_masks`]
//! add dropout between layers (training mode), which [`stack_backward`] then follows.
//!
//! [`readout_forward`] / [`readout_backward`] (the `readout` module) are the classification
//! read-out on top of a model: linear layer plus softmax cross-entropy ↔ `gpu::readout`.

pub mod activations;
mod cell;
mod gru;
mod lstm;
pub mod optim;
pub mod readout;
mod rnn;
mod stack;

pub use activations::{activate, derivative};
pub use cell::{CellGrads, RefWeights, StepGrads, Trace, backward, forward, input_projection};
pub use gru::{GruStepOut, gru_step, gru_step_backward};
pub use lstm::{
    LstmForward, LstmGrads, LstmStepOut, lstm_backward, lstm_forward, lstm_step, lstm_step_backward,
};
pub use readout::{ReadoutForward, ReadoutGrads, ReadoutShape, readout_backward, readout_forward};
pub use rnn::{RnnStepOut, rnn_step, rnn_step_backward};
pub use stack::{
    StackGrads, StackTrace, stack_backward, stack_forward, stack_forward_train,
    stack_forward_with_masks,
};

/// Widen an `f32` slice to `f64`.
pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Logistic sigmoid, stable for any finite input: `exp` only ever sees `-|x|`.
pub fn sigmoid(x: f64) -> f64 {
    let e = (-x.abs()).exp();
    if x >= 0.0 {
        1.0 / (1.0 + e)
    } else {
        e / (1.0 + e)
    }
}

/// Hyperbolic tangent (Rust's `tanh` is already stable for any finite input).
pub fn tanh(x: f64) -> f64 {
    x.tanh()
}
