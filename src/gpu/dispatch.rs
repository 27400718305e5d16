//! The vocabulary of a schedule, written once: symbolic buffers, the three kinds of op
//! (dispatch, copy, clear), grids, and the one helper that replays ops into an encoder.
//!
//! A [`crate::gpu::Plan`] is a list of [`Op`]s over symbolic [`Buf`]s, built on the CPU with no
//! GPU object in sight; a [`crate::gpu::Workspace`] gives every `Buf` a real buffer and every
//! dispatch its pipeline, uniform slot and bind group, once; recording replays the list.

use crate::gpu::shaders::Kernel;

/// One of a layer-direction's packed parameter tensors (see [`crate::gpu::pack`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ParamKind {
    /// `[I_l, H*G]` `W_ih^T`.
    WIh,
    /// `[S, H*G]` `W_hh^T`.
    WHh,
    /// `[2, H*G]` `b_ih`, `b_hh`.
    Bias,
    /// `[H, P]` `W_hr^T`.
    WHr,
    /// `[3H]` peepholes.
    Peephole,
}

/// A caller's tensor at the boundary of a schedule. Schedules only copy into or out of these
/// (never bind them), so the bind groups of a workspace never depend on the caller's buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Io {
    /// `x` (model layout).
    X,
    /// `[L*D, B, S]` initial hidden state.
    H0,
    /// `[L*D, B, H]` initial cell state.
    C0,
    /// `[B]` f32 row lengths.
    Lengths,
    /// `y` (model layout).
    Y,
    /// `[L*D, B, S]`.
    HN,
    /// `[L*D, B, H]`.
    CN,
    /// Upstream gradient of `y`.
    Dy,
    /// Upstream gradient of `h_n`.
    DhN,
    /// Upstream gradient of `c_n`.
    DcN,
    /// Gradient of `x`.
    Dx,
    /// Gradient of `h0`.
    Dh0,
    /// Gradient of `c0`.
    Dc0,
}

/// A buffer as a schedule names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Buf {
    /// Workspace scratch buffer `i` (an index into the plan's buffer list).
    Scratch(u32),
    /// Model parameter of layer-direction `j`.
    Param(u32, ParamKind),
    /// Gradient of that parameter (the caller's [`crate::gpu::ParamGrads`]).
    Grad(u32, ParamKind),
    /// A caller's tensor: only in copies. Copying from one the caller did not give clears the
    /// destination instead (zero initial state, zero upstream gradient); copying into one the
    /// caller did not ask for is skipped.
    Io(Io),
    /// A small writable placeholder for a binding a kernel variant never touches; `0..6`
    /// ([`UNUSED_BINDINGS`]), so that two such bindings of one dispatch never alias (the
    /// paired forward step has both directions' three, the paired backward step two each).
    Unused(u8),
}

/// How many distinct [`Buf::Unused`] placeholders a workspace holds.
pub(crate) const UNUSED_BINDINGS: u8 = 6;

/// A scratch buffer of a plan.
#[derive(Debug, Clone)]
pub(crate) struct BufferSpec {
    pub name: &'static str,
    /// Size in 4-byte words (at least 1).
    pub words: u64,
}

/// One compute dispatch, fully described on the CPU.
#[derive(Debug, Clone)]
pub(crate) struct Dispatch {
    pub kernel: Kernel,
    /// Values of the kernel's `override` constants (its pipeline variant).
    pub constants: Vec<(&'static str, f64)>,
    /// The bytes of the uniform struct at binding 0 (a multiple of 16).
    pub params: Vec<u8>,
    /// Bindings `1..`, in the kernel's order.
    pub bindings: Vec<Buf>,
    pub grid: [u32; 3],
    /// What this dispatch does, for the plan's printout.
    pub what: String,
    /// Global memory it must read and write at least, in bytes (the plan's traffic model).
    pub reads: u64,
    pub writes: u64,
    /// The timestep of a recurrent step's dispatch (`None` for the others).
    pub step: Option<usize>,
    /// A dropout dispatch `(layer, p)`, whose uniforms change on every call (the mask's key).
    pub dropout: Option<(usize, f32)>,
}

/// Copy `bytes` from byte `src_at` of `src` to byte `dst_at` of `dst` (see [`Buf::Io`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct BufferCopy {
    pub src: Buf,
    pub src_at: u64,
    pub dst: Buf,
    pub dst_at: u64,
    pub bytes: u64,
}

/// One step of a schedule.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    Dispatch(Dispatch),
    Copy(BufferCopy),
}

impl Op {
    /// This op with every buffer it names replaced by `f` of it.
    pub(crate) fn map_bufs(&self, f: impl Fn(Buf) -> Buf) -> Op {
        match self {
            Op::Dispatch(d) => Op::Dispatch(Dispatch {
                bindings: d.bindings.iter().map(|&b| f(b)).collect(),
                ..d.clone()
            }),
            Op::Copy(c) => Op::Copy(BufferCopy {
                src: f(c.src),
                dst: f(c.dst),
                ..*c
            }),
        }
    }
}

/// Bytes of `words` f32 values.
pub(crate) fn bytes(words: usize) -> u64 {
    words as u64 * 4
}

/// The grid of `ceil(n / per_group)` workgroups folded into `(x, y)` with at most `max_x`
/// per row: the 1-D kernels number workgroup `(x, y)` as `x + y * groups_x`. The plan checks
/// `y` against the device limit.
pub(crate) fn fold_grid(n: u64, per_group: u64, max_x: u32) -> [u32; 3] {
    let groups = n.div_ceil(per_group).max(1);
    let gx = groups.min(max_x as u64).max(1);
    let gy = groups.div_ceil(gx);
    [gx as u32, gy.min(u32::MAX as u64) as u32, 1]
}

/// Threads in one workgroup and workgroup-memory bytes of a dispatch: its `WG` override when
/// it sets one (the step kernels), else the kernel's fixed size (from its WGSL).
pub(crate) fn dispatch_geometry(d: &Dispatch) -> (u32, u64) {
    let (threads, shared) = kernel_geometry(d.kernel);
    match d.constants.iter().find(|(name, _)| *name == "WG") {
        Some(&(_, wg)) => (wg as u32, shared),
        None => (threads, shared),
    }
}

/// Threads in one workgroup (the most, for kernels with a `WG` override) and
/// workgroup-memory bytes of each kernel (from its WGSL), for the plan's limit checks.
pub(crate) fn kernel_geometry(kernel: Kernel) -> (u32, u64) {
    match kernel {
        Kernel::Gemm => (256, (272 + 528) * 16),
        // partial (512 vec4s) and h_tile (272 vec4s), see shaders/rnn_step.wgsl.
        Kernel::RnnStep | Kernel::RnnStepPair => (256, (512 + 272) * 16),
        // partial (2064 f32s, shared by both directions' copies in the pair).
        Kernel::RnnStepBackward | Kernel::RnnStepBackwardPair => (256, 2064 * 4),
        Kernel::ColumnSum => (256, 256 * 4),
        Kernel::GradClip => (256, 256 * 4),
        Kernel::Rearrange | Kernel::Dropout | Kernel::OptimizerStep => (256, 0),
        Kernel::Readout => (256, 256 * 4),
        Kernel::ReadoutBackward => (256, 0),
    }
}

/// One compute pass of `encoder`, the one way this crate opens them.
pub(crate) fn compute_pass<'e>(
    encoder: &'e mut wgpu::CommandEncoder,
    label: &str,
) -> wgpu::ComputePass<'e> {
    encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some(label),
        timestamp_writes: None,
    })
}
