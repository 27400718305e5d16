//! Host side of `shaders/lstm_step_backward.wgsl`: one fused step of BPTT.

use std::sync::Arc;

use crate::error::Result;
use crate::gpu::context::{CachedPipeline, Context};
use crate::gpu::gemm::entry;
use crate::gpu::lstm_step::{StepTiling, step_grid};
use crate::gpu::shaders::Kernel;
use crate::gpu::uniforms::UniformSlots;

/// Per-step uniforms; one entry per timestep, addressed with dynamic offsets.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct StepBackParams {
    pub batch: u32,
    pub hidden: u32,
    pub t: u32,
    /// 1 for `t == T - 1`.
    pub last: u32,
}

/// Buffers of the reverse loop.
pub(crate) struct LstmStepBackwardBuffers<'a> {
    /// One `StepBackParams` slot per timestep.
    pub params: &'a UniformSlots,
    /// `(T, B, H, 4)` saved activated gates.
    pub gates: &'a wgpu::Buffer,
    /// `(T + 1, B, H)` saved cell states.
    pub c_all: &'a wgpu::Buffer,
    /// `(H, H, 4)` packed `W_hh^T`.
    pub w_hh: &'a wgpu::Buffer,
    /// `(T, B, H)` upstream `dy`, or `None`.
    pub dy: Option<&'a wgpu::Buffer>,
    /// `(B, H)` upstream `dh_n` (zeros when the caller gave none).
    pub dh_n: &'a wgpu::Buffer,
    /// `(T, B, H, 4)` pre-activation gradients out.
    pub d_gates: &'a wgpu::Buffer,
    /// `(B, H)` cell-state gradient, carried in place.
    pub dc: &'a wgpu::Buffer,
}

/// A bound `lstm_step_backward` pipeline, ready to dispatch any step.
pub(crate) struct LstmStepBackward {
    pipeline: Arc<CachedPipeline>,
    bind: wgpu::BindGroup,
    grid: (u32, u32),
}

impl LstmStepBackward {
    pub(crate) fn new(
        ctx: &Context,
        batch: usize,
        hidden: usize,
        bufs: &LstmStepBackwardBuffers<'_>,
    ) -> Result<LstmStepBackward> {
        // The backward reduction is staged in slabs of 8 units: at most 8 lanes can share it.
        let tiling = StepTiling::for_batch(batch, 8);
        let grid = step_grid(ctx, tiling, batch, hidden)?;
        let [rows, ksplit] = tiling.constants();
        let pipeline = ctx.pipeline(
            Kernel::LstmStepBackward,
            &[rows, ksplit, ("HAS_DY", bufs.dy.is_some() as u64)],
        );
        let bind = ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("lstm_step_backward"),
            layout: &pipeline.layout,
            entries: &[
                bufs.params.entry(0),
                entry(1, bufs.gates),
                entry(2, bufs.c_all),
                entry(3, bufs.w_hh),
                // Without dy the binding is never read; dh_n is a read-only stand-in.
                entry(4, bufs.dy.unwrap_or(bufs.dh_n)),
                entry(5, bufs.dh_n),
                entry(6, bufs.d_gates),
                entry(7, bufs.dc),
            ],
        });
        Ok(LstmStepBackward {
            pipeline,
            bind,
            grid,
        })
    }

    /// Record one reverse step whose `StepBackParams` sit at byte `params_offset`.
    /// CPU twin: [`crate::cpu::lstm_step_backward`].
    pub(crate) fn record(&self, pass: &mut wgpu::ComputePass<'_>, params_offset: u32) {
        pass.set_pipeline(&self.pipeline.pipeline);
        pass.set_bind_group(0, &self.bind, &[params_offset]);
        pass.dispatch_workgroups(self.grid.0, self.grid.1, 1);
    }
}
