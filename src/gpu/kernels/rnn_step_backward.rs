//! Host side of `shaders/rnn_step_backward.wgsl`: one fused step of BPTT, every cell kind.

use crate::config::RnnConfig;
use crate::gpu::dispatch::{Buf, Dispatch, Op, bytes};
use crate::gpu::kernels::rnn_step::{StepTiling, cell_constants};
use crate::gpu::shaders::Kernel;

/// Per-step uniforms; one slot per timestep, bound with dynamic offsets.
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

/// What the reverse loop binds (see the shader's header for shapes).
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepBackwardBindings {
    /// `(T, B, H, S)` the forward pass's tape, then peepholes and lengths.
    pub tape: Buf,
    /// `(T + 1, B, H)` LSTM cell states / GRU hidden states; `None` for the plain RNN.
    pub history: Option<Buf>,
    /// `(S, H, G)` packed `W_hh^T`.
    pub w_hh: Buf,
    /// `(T, B, H)` upstream `dy`, or `None`.
    pub dy: Option<Buf>,
    /// `(T, B, H, G)` recurrent-side pre-activation gradients out.
    pub d_gates: Buf,
    /// GRU input-side gradients, peephole terms, or the projection's dh history.
    pub d_gates_x: Option<Buf>,
    /// `(B, H)` LSTM cell-state gradient (GRU reset-before: `dG_n`).
    pub dc: Option<Buf>,
    /// `(B, S)` the part of `dh` that skips `W_hh`.
    pub carry: Buf,
}

/// Threads that share one output's reduction at least: the reduction runs along a row of
/// `W_hh^T`, so 8 threads read 128 contiguous bytes of it (a whole cache line).
const BACKWARD_MIN_KSPLIT: u32 = 8;

/// The backward step's tiling for `units` outputs and `batch` rows.
pub(crate) fn backward_tiling(units: usize, batch: usize) -> StepTiling {
    StepTiling::choose(units, batch, 1, BACKWARD_MIN_KSPLIT)
}

/// One reverse step's dispatch. CPU twins: [`crate::cpu::lstm_step_backward`] and the GRU/RNN
/// steps.
pub(crate) fn rnn_step_backward(
    cfg: &RnnConfig,
    batch: usize,
    phase: u32,
    bufs: &StepBackwardBindings,
    params: StepBackParams,
) -> Op {
    let (g, h, st) = (cfg.gate_count(), cfg.hidden_size(), cfg.state_size());
    // Phase 1 (projection) produces dh for the state's P units; every other phase works on
    // the H cell units.
    let units = if phase == 1 { st } else { h };
    let tiling = backward_tiling(units, batch);
    let mut constants = cell_constants(cfg);
    constants.extend(tiling.constants("TK"));
    constants.extend([
        ("ALIGNED", ((g * h) % 4 == 0) as u8 as f64),
        ("HAS_DY", bufs.dy.is_some() as u8 as f64),
        ("PHASE", phase as f64),
    ]);
    Op::Dispatch(Dispatch {
        kernel: Kernel::RnnStepBackward,
        constants,
        params: bytemuck::bytes_of(&params).to_vec(),
        bindings: vec![
            bufs.tape,
            // Unread bindings get read-only stand-ins (the tape).
            bufs.history.unwrap_or(bufs.tape),
            bufs.w_hh,
            bufs.dy.unwrap_or(bufs.tape),
            bufs.d_gates,
            bufs.d_gates_x.unwrap_or(Buf::Unused(0)),
            bufs.dc.unwrap_or(Buf::Unused(1)),
            bufs.carry,
        ],
        grid: tiling.grid(units, batch),
        what: format!(
            "rnn_step_backward t={} phase {phase} (units={units}, B={batch}, {})",
            params.t,
            tiling.describe()
        ),
        reads: bytes(st * g * h + batch * g * h * 2 + batch * h * 2),
        writes: bytes(batch * g * h * 2 + batch * h * 2),
        step: Some(params.t as usize),
        dropout: None,
    })
}
