//! The GPU path: context, tensors, one host module per shader, and the schedule.

pub mod context;
pub mod gemm;
mod lstm_step;
pub mod pack;
mod rnn;
mod shaders;
pub mod tensor;

pub use context::{ADAPTER_ENV, Context, ContextOptions, list_adapters};
pub use rnn::{HostOutput, Output, Rnn, State};
pub use tensor::GpuTensor;
