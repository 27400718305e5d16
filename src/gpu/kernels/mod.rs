//! One host module per shader. Each turns its arguments into [`crate::gpu::dispatch::Op`]s
//! over symbolic buffers; none creates a GPU object.

pub mod column_sum;
pub(crate) mod dropout;
pub mod gemm;
pub(crate) mod rearrange;
pub(crate) mod rnn_step;
pub(crate) mod rnn_step_backward;
