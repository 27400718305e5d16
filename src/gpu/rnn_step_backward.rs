//! Host side of `shaders/rnn_step_backward.wgsl`: one fused step of BPTT, every cell kind.

use std::sync::Arc;

use crate::config::RnnConfig;
use crate::error::Result;
use crate::gpu::context::{CachedPipeline, Context};
use crate::gpu::gemm::entry;
use crate::gpu::rnn_step::{StepTiling, cell_constants, step_grid, unused_storage};
use crate::gpu::shaders::Kernel;
use crate::gpu::uniforms::UniformSlots;

/// Per-step uniforms; one entry per timestep, addressed with dynamic offsets.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct StepBackParams {
    pub batch: u32,
    pub hidden: u32,
    pub t: u32,
    /// `T`.
    pub steps: u32,
    /// Width of the recurrent state: `P` with a projection, else `H`.
    pub state: u32,
    /// Element offset of the row lengths (`[B]`, f32) in the tape binding.
    pub len_at: u32,
    pub _pad: [u32; 2],
}

/// Buffers of the reverse loop.
#[derive(Clone, Copy)]
pub(crate) struct StepBackwardBuffers<'a> {
    /// One `StepBackParams` slot per timestep.
    pub params: &'a UniformSlots,
    /// `(T, B, H, S)` the forward pass's tape.
    pub tape: &'a wgpu::Buffer,
    /// `(T + 1, B, H)` LSTM cell states / GRU hidden states; `None` for the plain RNN.
    pub history: Option<&'a wgpu::Buffer>,
    /// `(H, H, G)` packed `W_hh^T`.
    pub w_hh: &'a wgpu::Buffer,
    /// `(T, B, H)` upstream `dy`, or `None`.
    pub dy: Option<&'a wgpu::Buffer>,
    /// `(T, B, H, G)` recurrent-side pre-activation gradients out.
    pub d_gates: &'a wgpu::Buffer,
    /// `(T, B, H, G)` GRU input-side pre-activation gradients out (`None` for other cells,
    /// whose two sides are equal).
    pub d_gates_x: Option<&'a wgpu::Buffer>,
    /// `(B, H)` LSTM cell-state gradient, carried in place.
    pub dc: Option<&'a wgpu::Buffer>,
    /// `(B, H)` the part of `dh` that skips `W_hh`; holds `dh_n` before the first dispatch.
    pub carry: &'a wgpu::Buffer,
}

/// A bound `rnn_step_backward` pipeline, ready to dispatch any step.
pub(crate) struct RnnStepBackward {
    pipeline: Arc<CachedPipeline>,
    bind: wgpu::BindGroup,
    grid: (u32, u32),
}

impl RnnStepBackward {
    pub(crate) fn new(
        ctx: &Context,
        cfg: &RnnConfig,
        batch: usize,
        phase: u32,
        bufs: &StepBackwardBuffers<'_>,
    ) -> Result<RnnStepBackward> {
        let tiling = StepTiling::for_batch(batch, 16);
        // Phase 1 (projection) produces dh for the state's P units; every other phase works on
        // the H cell units.
        let units = if phase == 1 {
            cfg.state_size()
        } else {
            cfg.hidden_size()
        };
        let grid = step_grid(ctx, tiling, batch, units)?;
        let [rows, ksplit] = tiling.constants();
        let mut constants = cell_constants(cfg);
        constants.extend([
            rows,
            ksplit,
            ("HAS_DY", bufs.dy.is_some() as u8 as f64),
            ("PHASE", phase as f64),
        ]);
        let pipeline = ctx.pipeline(Kernel::RnnStepBackward, &constants);
        let unused_dgx = unused_storage(ctx, "rnn_step_backward unused dGx");
        let unused_dc = unused_storage(ctx, "rnn_step_backward unused dc");
        let bind = ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("rnn_step_backward"),
            layout: &pipeline.layout,
            entries: &[
                bufs.params.entry(0),
                entry(1, bufs.tape),
                // Unread bindings get read-only stand-ins (the tape).
                entry(2, bufs.history.unwrap_or(bufs.tape)),
                entry(3, bufs.w_hh),
                entry(4, bufs.dy.unwrap_or(bufs.tape)),
                entry(5, bufs.d_gates),
                entry(6, bufs.d_gates_x.unwrap_or(&unused_dgx)),
                entry(7, bufs.dc.unwrap_or(&unused_dc)),
                entry(8, bufs.carry),
            ],
        });
        Ok(RnnStepBackward {
            pipeline,
            bind,
            grid,
        })
    }

    /// Record one reverse step whose `StepBackParams` sit at byte `params_offset`.
    /// CPU twins: [`crate::cpu::lstm_step_backward`] and the GRU/RNN steps.
    pub(crate) fn record(&self, pass: &mut wgpu::ComputePass<'_>, params_offset: u32) {
        pass.set_pipeline(&self.pipeline.pipeline);
        pass.set_bind_group(0, &self.bind, &[params_offset]);
        pass.dispatch_workgroups(self.grid.0, self.grid.1, 1);
    }
}
