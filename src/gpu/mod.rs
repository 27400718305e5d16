//! The GPU path: context, tensors, one host module per shader, and the schedule.

pub mod clip;
mod column_sum;
pub mod context;
pub mod gemm;
pub mod optim;
pub mod pack;
mod rearrange;
mod rnn;
mod rnn_step;
mod rnn_step_backward;
mod session;
mod shaders;
pub mod tensor;
mod train;
mod uniforms;

pub use context::{ADAPTER_ENV, Context, ContextOptions, list_adapters};
pub use rearrange::apply_dropout;
pub use rnn::{HostOutput, Output, Rnn, RunOptions, State};
pub use session::Session;
pub use tensor::GpuTensor;
pub use train::{GradMode, Grads, HostGrads, LayerGrads, ParamGrads, Tape};
