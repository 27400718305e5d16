//! Host side of `shaders/rnn_step_backward.wgsl`: one fused step of BPTT, every cell kind.
//! A bidirectional layer's two directions' dispatches of one phase become one
//! `rnn_step_backward_pair` dispatch through [`crate::gpu::kernels::rnn_step::pair_steps`].

use crate::config::RnnConfig;
use crate::gpu::dispatch::{Buf, Dispatch, Op, bytes};
use crate::gpu::kernels::rnn_step::{MIN_STEP_WORKGROUPS, STEP_THREADS, cell_constants};
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

/// Threads that share one reduction at least: the reduction runs along rows of `W_hh^T`, so 8
/// threads read 128 contiguous bytes of each (a whole cache line).
const BACKWARD_MIN_KSPLIT: u32 = 8;

/// The fewest 4-wide chunks of a reduction one thread sums: a thinner split only adds tree
/// levels and threads that each do almost nothing.
const MIN_CHUNKS: u32 = 4;

/// Workgroup-memory words of the reduction tree the tiling may use (`partial` in the shader
/// holds `V * (WG + 1) <= 2064` words): `V * WG` at most this.
const TREE_WORDS: u32 = 2048;

/// How the backward step spreads a workgroup: groups of `ksplit` threads share the reduction
/// of one register tile of `ut` units x `rows` batch rows; `xg` groups side by side over the
/// units and `lanes` over the rows. `xg * lanes * ksplit` threads (at most 256, the WGSL
/// `WG`), `xg * ut` units (`TK`) and `lanes * rows` rows per workgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BackTiling {
    pub xg: u32,
    pub ut: u32,
    pub lanes: u32,
    pub rows: u32,
    pub ksplit: u32,
}

impl BackTiling {
    /// Threads per workgroup.
    pub(crate) fn threads(self) -> u32 {
        self.xg * self.lanes * self.ksplit
    }

    /// Output units per workgroup.
    pub(crate) fn units(self) -> u32 {
        self.xg * self.ut
    }

    /// The workgroup grid over `units` output units and `batch` rows.
    pub(crate) fn grid(self, units: usize, batch: usize) -> [u32; 3] {
        let gx = units.div_ceil(self.units() as usize);
        let gy = batch.div_ceil((self.lanes * self.rows) as usize);
        [
            gx.min(u32::MAX as usize) as u32,
            gy.min(u32::MAX as usize) as u32,
            1,
        ]
    }

    /// The override constants.
    fn constants(self) -> [(&'static str, f64); 5] {
        [
            ("WG", self.threads() as f64),
            ("TK", self.units() as f64),
            ("UT", self.ut as f64),
            ("ROWS", self.rows as f64),
            ("KSPLIT", self.ksplit as f64),
        ]
    }

    /// For plan printouts.
    fn describe(self) -> String {
        format!(
            "threads={} units/wg={} tile={}x{} ksplit={} rows/wg={}",
            self.threads(),
            self.units(),
            self.ut,
            self.rows,
            self.ksplit,
            self.lanes * self.rows
        )
    }
}

/// The backward step's tiling for `units` outputs, `batch` rows and reductions over the
/// `gates` (`H * G`) columns of `W_hh^T`.
///
/// A step is a small product `(B x HG) · (HG x units)`: each workgroup reads its `TK` weight
/// rows and its `BM` rows of `dG`, so one step moves `units * B * HG * (1/BM + 1/TK)` words
/// through the caches. Among the tilings whose grid reaches
/// [`MIN_STEP_WORKGROUPS`] (or, when no tiling can, `units * B` groups' worth of it), the rule
/// takes the least traffic, then the shortest path of one thread (its chunks' loads and FMAs,
/// `(UT + ROWS + UT * ROWS)` each, plus `UT * ROWS + 4` a tree level), then the most threads. Register tiles are 1, 2 or 4 units by 1, 2 or 4 rows; `ksplit` is a power of two,
/// at least 8 and at least the tile's size (its lanes share out the epilogue), at most what
/// leaves each thread [`MIN_CHUNKS`] chunks; threads at most 256; the tree's workgroup memory
/// `tile * threads <= 2048` words. Shapes alone decide, so the reduction order is fixed.
pub(crate) fn backward_tiling(units: usize, batch: usize, gates: usize) -> BackTiling {
    let threads_max = STEP_THREADS as u32;
    let chunks = gates.div_ceil(4).max(1) as u32;
    let most = (chunks / MIN_CHUNKS).max(1);
    let ksplit_max = (1u32 << (31 - most.leading_zeros())).max(BACKWARD_MIN_KSPLIT);
    let units_p2 = (units.max(1) as u32).next_power_of_two();
    let batch_p2 = (batch.max(1) as u32).next_power_of_two();
    let target = (MIN_STEP_WORKGROUPS as u64).min(units.max(1) as u64 * batch.max(1) as u64);
    let mut best: Option<((bool, u64, u32, i64), BackTiling)> = None;
    for ut in [1u32, 2, 4] {
        for rows in [1u32, 2, 4] {
            let v = ut * rows;
            if ut > units_p2 || rows > batch_p2 {
                continue;
            }
            for xg in [1u32, 2, 4, 8, 16] {
                for lanes in [1u32, 2, 4, 8, 16, 32, 64] {
                    if xg * ut > units_p2.max(ut) || lanes * rows > batch_p2.max(rows) {
                        continue;
                    }
                    let fit = threads_max / (xg * lanes);
                    let ksplit = fit.min(ksplit_max).min(TREE_WORDS / (v * xg * lanes));
                    if ksplit < BACKWARD_MIN_KSPLIT.max(v) || !ksplit.is_power_of_two() {
                        continue;
                    }
                    let tiling = BackTiling {
                        xg,
                        ut,
                        lanes,
                        rows,
                        ksplit,
                    };
                    let [gx, gy, _] = tiling.grid(units, batch);
                    let groups = gx as u64 * gy as u64;
                    // gx * gy * (TK + BM) rows of HG words through the caches per step.
                    let traffic = groups * (tiling.units() + lanes * rows) as u64;
                    let below = groups < target;
                    // A thread's path: its chunks' loads and FMAs, then the tree's levels
                    // (V adds and a barrier, counted as 4, each).
                    let levels = ksplit.trailing_zeros();
                    let path = chunks.div_ceil(ksplit) * (ut + rows + v) + levels * (v + 4);
                    let key = (
                        below,
                        if below { u64::MAX - groups } else { traffic },
                        path,
                        -(tiling.threads() as i64),
                    );
                    if best.as_ref().is_none_or(|(k, _)| key < *k) {
                        best = Some((key, tiling));
                    }
                }
            }
        }
    }
    best.map(|(_, t)| t)
        .expect("a 1 x 1 tile of 8 threads is always a candidate")
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
    let tiling = backward_tiling(units, batch, g * h);
    let mut constants = cell_constants(cfg);
    constants.extend(tiling.constants());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tilings_fit_the_kernel() {
        for units in [1, 3, 16, 64, 100, 128, 256, 512, 1000, 1024, 2048, 4096] {
            for batch in [1, 2, 5, 16, 32, 64, 100, 128, 256] {
                for g in [1, 3, 4] {
                    let t = backward_tiling(units, batch, g * units);
                    let v = t.ut * t.rows;
                    assert!(t.threads() <= 256, "{t:?}");
                    assert!(v * t.threads() <= TREE_WORDS, "{t:?}");
                    assert!(t.ksplit.is_power_of_two() && t.ksplit >= v.max(8), "{t:?}");
                    assert!([1, 2, 4].contains(&t.ut) && [1, 2, 4].contains(&t.rows));
                    let [gx, gy, _] = t.grid(units, batch);
                    assert!(gx as usize * t.units() as usize >= units);
                    assert!(gy as usize * (t.lanes * t.rows) as usize >= batch);
                }
            }
        }
    }
}
