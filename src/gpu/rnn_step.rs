//! Host side of `shaders/rnn_step.wgsl`: the fused recurrent step of every cell kind.

use std::sync::Arc;

use crate::config::{Activation, CellKind, GruReset, RnnConfig};
use crate::error::{Error, Result};
use crate::gpu::context::{CachedPipeline, Context};
use crate::gpu::gemm::entry;
use crate::gpu::shaders::Kernel;
use crate::gpu::uniforms::UniformSlots;

/// Hidden units per workgroup (the kernel's `TJ`).
const UNITS_PER_GROUP: u32 = 16;

/// Per-step uniforms; one entry per timestep in a buffer addressed with dynamic offsets.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct StepParams {
    pub batch: u32,
    pub hidden: u32,
    pub t_local: u32,
    pub t_global: u32,
    /// Width of the recurrent state: `P` with a projection, else `H`.
    pub state: u32,
    /// `T`.
    pub steps: u32,
    /// Element offset of the row lengths (`[B]`, f32) in the `h_carry` binding.
    pub len_at: u32,
    pub _pad: u32,
}

/// How a step kernel spreads one workgroup's 16x16 threads over batch rows and the
/// reduction: `16 / ksplit` lanes of batch rows, each lane `rows` rows deep, and `ksplit` lanes
/// sharing each row's reduction (small batches would otherwise leave most threads idle).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StepTiling {
    pub ksplit: u32,
    pub rows: u32,
}

impl StepTiling {
    /// The tiling for `batch` rows, splitting the reduction at most `max_ksplit` ways.
    /// Large batches give each thread several rows so every loaded weight is reused.
    pub(crate) fn for_batch(batch: usize, max_ksplit: u32) -> StepTiling {
        let (ksplit, rows) = match batch {
            1 => (16, 1),
            2 => (8, 1),
            3..=4 => (4, 1),
            5..=8 => (2, 1),
            9..=16 => (1, 1),
            17..=32 => (1, 2),
            _ => (1, 4),
        };
        StepTiling {
            ksplit: ksplit.min(max_ksplit),
            rows,
        }
    }

    /// Batch rows one workgroup covers.
    pub(crate) fn rows_per_group(self) -> u32 {
        16 / self.ksplit * self.rows
    }

    /// The override constants of both step kernels.
    pub(crate) fn constants(self) -> [(&'static str, f64); 2] {
        [("ROWS", self.rows as f64), ("KSPLIT", self.ksplit as f64)]
    }
}

/// Workgroup grid for a step over `batch` rows and `hidden` units.
pub(crate) fn step_grid(
    ctx: &Context,
    tiling: StepTiling,
    batch: usize,
    hidden: usize,
) -> Result<(u32, u32)> {
    let gx = (hidden as u64).div_ceil(UNITS_PER_GROUP as u64);
    let gy = (batch as u64).div_ceil(tiling.rows_per_group() as u64);
    let max = ctx.limits().max_compute_workgroups_per_dimension as u64;
    for (what, count) in [("lstm_step hidden units", gx), ("lstm_step batch rows", gy)] {
        if count > max {
            return Err(Error::LimitExceeded {
                limit: "max_compute_workgroups_per_dimension",
                what: what.into(),
                needed: count,
                allowed: max,
            });
        }
    }
    Ok((gx as u32, gy as u32))
}

/// `activate`'s number for an activation (see `shaders/common/activations.wgsl`), with its
/// alpha and beta.
pub(crate) fn activation_constants(act: Activation) -> (f64, f64, f64) {
    let kind = match act {
        Activation::Sigmoid => 0,
        Activation::Tanh => 1,
        Activation::Relu => 2,
        Activation::HardSigmoid { .. } => 3,
        Activation::LeakyRelu { .. } => 4,
        Activation::ThresholdedRelu { .. } => 5,
        Activation::ScaledTanh { .. } => 6,
        Activation::Affine { .. } => 7,
        Activation::Elu { .. } => 8,
        Activation::Softsign => 9,
        Activation::Softplus => 10,
    };
    let (alpha, beta) = act.params();
    (kind as f64, alpha as f64, beta as f64)
}

/// The override constants that describe the cell to both step kernels: kind, gate count,
/// activations, clips, peepholes, coupled gates.
pub(crate) fn cell_constants(cfg: &RnnConfig) -> Vec<(&'static str, f64)> {
    let cell = match cfg.cell() {
        CellKind::Lstm => 0.0,
        CellKind::Gru => 1.0,
        CellKind::Rnn => 2.0,
    };
    let acts = cfg.activations();
    let (f, fa, fb) = activation_constants(acts.gate);
    let (g, ga, gb) = activation_constants(acts.cell);
    let (h, ha, hb) = activation_constants(acts.hidden);
    let (cell_min, cell_max) = cfg.cell_clip().unwrap_or((0.0, 0.0));
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    vec![
        ("CELL", cell),
        ("G", cfg.gate_count() as f64),
        ("ACT_F", f),
        ("ALPHA_F", fa),
        ("BETA_F", fb),
        ("ACT_G", g),
        ("ALPHA_G", ga),
        ("BETA_G", gb),
        ("ACT_H", h),
        ("ALPHA_H", ha),
        ("BETA_H", hb),
        ("GATE_CLIP", cfg.gate_clip().unwrap_or(0.0) as f64),
        ("CELL_CLIP", flag(cfg.cell_clip().is_some())),
        ("CELL_MIN", cell_min as f64),
        ("CELL_MAX", cell_max as f64),
        ("PEEPHOLE", flag(cfg.peepholes())),
        ("INPUT_FORGET", flag(cfg.input_forget())),
        ("PROJ", flag(cfg.proj_size().is_some())),
        ("RESET_BEFORE", flag(cfg.gru_reset() == GruReset::Before)),
    ]
}

/// Values saved per unit and step in the training tape: LSTM (i, f, g, o), GRU (r, z, n, gh_n),
/// RNN h.
pub(crate) fn tape_slots(cfg: &RnnConfig) -> usize {
    match cfg.cell() {
        CellKind::Rnn => 1,
        _ => 4,
    }
}

/// A small storage buffer for bindings a cell or mode never touches (wgpu's layout still wants
/// one, writable and aliasing no other binding of the dispatch).
pub(crate) fn unused_storage(ctx: &Context, label: &str) -> wgpu::Buffer {
    ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: 16,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    })
}

/// Buffers of a run of steps over one time chunk.
pub(crate) struct StepBuffers<'a> {
    /// One `StepParams` slot per timestep.
    pub params: &'a UniformSlots,
    /// `(Tc, B, H, G)` this chunk's input projection, `b_ih` included.
    pub gx: &'a wgpu::Buffer,
    /// `(H, H, G)` packed `W_hh^T`.
    pub w_hh: &'a wgpu::Buffer,
    /// `(B, H)` `h` before the chunk's first step.
    pub h_carry: &'a wgpu::Buffer,
    /// `(2, H, G)` packed biases (`b_hh` is row 1), `None` without bias.
    pub bias: Option<&'a wgpu::Buffer>,
    /// `(T, B, H)` outputs.
    pub y: &'a wgpu::Buffer,
    /// `(B, H)` LSTM cell state, updated in place; GRU reset-before: `r * h_prev` `(T, B, H)`;
    /// `None` for other cells.
    pub c_state: Option<&'a wgpu::Buffer>,
    /// Training only: `(T, B, H, S)` tape and `(T + 1, B, H)` LSTM c / GRU h history.
    pub tape: Option<(&'a wgpu::Buffer, &'a wgpu::Buffer)>,
}

/// A bound `rnn_step` pipeline, ready to dispatch any step of one chunk.
pub(crate) struct RnnStep {
    pipeline: Arc<CachedPipeline>,
    bind: wgpu::BindGroup,
    grid: (u32, u32),
}

impl RnnStep {
    pub(crate) fn new(
        ctx: &Context,
        cfg: &RnnConfig,
        batch: usize,
        phase: u32,
        bufs: &StepBuffers<'_>,
    ) -> Result<RnnStep> {
        let tiling = StepTiling::for_batch(batch, 16);
        let grid = step_grid(ctx, tiling, batch, cfg.hidden_size())?;
        let [rows, ksplit] = tiling.constants();
        let mut constants = cell_constants(cfg);
        constants.extend([
            ("HAS_BIAS", bufs.bias.is_some() as u8 as f64),
            rows,
            ksplit,
            ("SAVE", bufs.tape.is_some() as u8 as f64),
            ("FPHASE", phase as f64),
        ]);
        let pipeline = ctx.pipeline(Kernel::RnnStep, &constants);
        let unused_c = unused_storage(ctx, "rnn_step unused c");
        let unused_tape = unused_storage(ctx, "rnn_step unused tape");
        let unused_hist = unused_storage(ctx, "rnn_step unused history");
        let (tape, c_all) = bufs.tape.unwrap_or((&unused_tape, &unused_hist));
        let bind = ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("rnn_step"),
            layout: &pipeline.layout,
            entries: &[
                bufs.params.entry(0),
                entry(1, bufs.gx),
                entry(2, bufs.w_hh),
                entry(3, bufs.h_carry),
                // Without bias the binding is never read; w_hh is a read-only stand-in.
                entry(4, bufs.bias.unwrap_or(bufs.w_hh)),
                entry(5, bufs.y),
                entry(6, bufs.c_state.unwrap_or(&unused_c)),
                entry(7, tape),
                entry(8, c_all),
            ],
        });
        Ok(RnnStep {
            pipeline,
            bind,
            grid,
        })
    }

    /// Record one timestep whose `StepParams` sit at byte `params_offset`.
    /// CPU twins: [`crate::cpu::lstm_step`] and the GRU/RNN steps.
    pub(crate) fn record(&self, pass: &mut wgpu::ComputePass<'_>, params_offset: u32) {
        pass.set_pipeline(&self.pipeline.pipeline);
        pass.set_bind_group(0, &self.bind, &[params_offset]);
        pass.dispatch_workgroups(self.grid.0, self.grid.1, 1);
    }
}
