//! # rnn-wgpu
//!
//! Portable GPU kernels for recurrent networks, written in WGSL and run through
//! [wgpu](https://docs.rs/wgpu): Vulkan, Metal, DX12, GL and WebGPU. Every GPU result is
//! measured against a plain-loop f64 CPU reference ([`cpu`]), which is the specification.
//!
//! Implemented so far: a single-layer, unidirectional LSTM with PyTorch `nn.LSTM` semantics
//! (gates i, f, g, o): the forward pass, training (backpropagation through time into every
//! weight, bias, input and initial state, with gradient accumulation), gradient clipping by
//! value and by global norm ([`gpu::clip`]) and SGD/Adam steps ([`gpu::optim`]) on the GPU;
//! PyTorch-layout weights with safetensors import and export; and the CPU reference of all of
//! it.
//!
//! ```no_run
//! use rnn_wgpu::{Context, Rnn, RnnConfig, Weights};
//! # fn main() -> Result<(), rnn_wgpu::Error> {
//! let cfg = RnnConfig::lstm(16, 32).build()?;         // nn.LSTM(16, 32)
//! let weights = Weights::init(&cfg, 0);                // or Weights::load(&cfg, "lstm.safetensors")?
//! let ctx = Context::new()?;                           // best adapter; RNN_WGPU_ADAPTER picks one
//! let rnn = Rnn::new(&ctx, &cfg, &weights)?;           // packs and uploads once
//! let (t, b) = (20, 4);
//! let x = vec![0.5f32; t * b * 16];                    // [T, B, I], seq-major
//! let out = rnn.forward_host(&x, t, b, None, None)?;   // y [T, B, H], h_n / c_n [1, B, H]
//! assert_eq!(out.y.len(), t * b * 32);
//! # Ok(()) }
//! ```
//!
//! Training: [`Rnn::forward_train`] returns the outputs and a [`Tape`] kept on the GPU;
//! [`Rnn::backward`] turns upstream gradients into [`Grads`] (one submission each).
//!
//! The GPU-resident API is [`Rnn::forward`] (takes and returns [`GpuTensor`]s, one queue
//! submission per call) and [`Rnn::record_forward`] (records into a caller's
//! `wgpu::CommandEncoder`). A framework can share its device with [`Context::from_device`]
//! and its buffers with [`GpuTensor::from_buffer`].
//!
//! ## How the forward pass runs
//! 1. One tiled GEMM computes the input projection `x · W_ihᵀ + b_ih + b_hh` for all
//!    timesteps at once (`shaders/gemm.wgsl`).
//! 2. One fused kernel per timestep computes `h_{t-1} · W_hhᵀ` for the four gates of a tile of
//!    hidden units, adds the projection, and applies the activations and the cell update in
//!    registers (`shaders/lstm_step.wgsl`).
//! 3. Everything is recorded into one command encoder and submitted once.
//!
//! Every fallible call returns [`Result`]; bad shapes, zero sizes and inputs beyond the
//! device's limits are typed [`Error`]s raised before any GPU work.

pub mod config;
pub mod cpu;
pub mod dropout;
pub mod error;
pub mod gpu;
pub mod onnx;
pub mod weights;

pub use config::{
    Activation, Activations, CellKind, Direction, GruReset, Layout, Nonlinearity, RnnConfig,
    RnnConfigBuilder,
};
pub use error::{Error, Result};
pub use gpu::{
    Context, ContextOptions, GpuTensor, GradMode, Grads, HostGrads, HostOutput, LayerGrads, Output,
    ParamGrads, Rnn, RunOptions, Session, State, Tape,
};
pub use weights::{LayerWeights, Weights};
