//! The CPU reference: the specification every GPU result is measured against.
//!
//! Plain loops, f64 everywhere (inputs are widened once, every accumulation is f64). Clarity
//! beats speed here. Functions mirror the GPU path by name and argument order:
//! [`input_projection`] ↔ `shaders/gemm.wgsl`, [`lstm_step`] ↔ `shaders/lstm_step.wgsl`,
//! [`lstm_forward`] ↔ `gpu::Rnn::forward`.

mod lstm;
pub mod optim;

pub use lstm::{
    LstmForward, LstmGrads, RefWeights, input_projection, lstm_backward, lstm_forward, lstm_step,
    lstm_step_backward,
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
