//! The GPU path. Data flows one way:
//!
//! ```text
//! Context ─▶ Rnn (model.rs: pack + upload once) ─▶ Plan (plan.rs, forward.rs, backward.rs:
//! pure CPU) ─▶ Workspace (workspace.rs: buffers, uniforms, bind groups, once per shape)
//! ─▶ record_* (run.rs, session.rs: replay into an encoder) ─▶ submit
//! ```
//!
//! `kernels/` holds one host module per shader, `dispatch.rs` the vocabulary they share.

mod adapter;
mod backward;
mod cell;
pub mod clip;
pub mod context;
mod dispatch;
mod forward;
mod grads;
mod kernels;
mod model;
pub mod optim;
pub mod pack;
mod packed;
mod pipelines;
mod plan;
mod plan_print;
mod precision;
pub mod readout;
mod run;
mod session;
mod shaders;
pub mod tensor;
mod train;
mod uniforms;
mod wgsl_copy;
mod workspace;

pub use adapter::{ADAPTER_ENV, ContextOptions, list_adapters};
pub use cell::{Cell, CellGrads, CellState, CellTape, HostCellGrads, HostCellState};
pub use context::{
    AllocationCounts, Context, DEFAULT_TIMEOUT, PIPELINE_CACHE_CAPACITY, STAGING_KEEP,
};
pub use grads::{GradMode, Grads, HostGrads, LayerGrads, ParamGrads, Tape};
pub use kernels::dropout::apply_dropout;
pub use kernels::{column_sum, gemm};
pub use model::{POOL_KEEP, Rnn, WORKSPACE_CACHE_SHAPES};
pub use plan::{Plan, PlanMode};
pub use precision::WeightPrecision;
pub use readout::{Readout, ReadoutBuffers};
pub use run::{HostOutput, Output, RunOptions, State};
pub use session::Session;
pub use tensor::GpuTensor;
pub use workspace::Workspace;

// A server keeps a context, a model and its sessions in one struct and hands them to threads.
// (On wasm32 wgpu's types are neither Send nor Sync, and there are no threads to hand them to.)
#[cfg(not(target_arch = "wasm32"))]
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    const fn send<T: Send>() {}
    send_sync::<Context>();
    send_sync::<Rnn>();
    send_sync::<Cell>();
    send_sync::<GpuTensor>();
    send_sync::<Tape>();
    send_sync::<Workspace>();
    send_sync::<Readout>();
    send_sync::<ReadoutBuffers>();
    send::<Session>();
};
