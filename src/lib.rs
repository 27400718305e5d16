//! # rnn-wgpu
//!
//! Portable GPU kernels for recurrent networks, written in WGSL and run through wgpu, checked
//! against a plain-loop f64 CPU reference ([`cpu`]).
pub mod config;
pub mod cpu;
pub mod error;
pub mod gpu;
pub mod weights;

pub use config::{CellKind, Direction, Layout, RnnConfig, RnnConfigBuilder};
pub use error::{Error, Result};
pub use gpu::{Context, GpuTensor, HostOutput, Output, Rnn, State};
pub use weights::{LayerWeights, Weights};
