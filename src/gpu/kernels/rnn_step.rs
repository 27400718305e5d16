//! Host side of `shaders/rnn_step.wgsl`: the fused recurrent step of every cell kind, and the
//! cell description both step kernels share.

use crate::config::{Activation, CellKind, GruReset, RnnConfig};
use crate::error::{Error, Result};
use crate::gpu::dispatch::{Buf, Dispatch, Op, bytes};
use crate::gpu::shaders::Kernel;

/// Threads per workgroup of both step kernels.
pub(crate) const STEP_THREADS: usize = 256;

/// Workgroups a step dispatch should have to fill a large GPU: about one per streaming
/// multiprocessor of an H100 (132). Geometry is chosen so that every step dispatch reaches it
/// whenever `H >= 512`, at any batch.
pub(crate) const MIN_STEP_WORKGROUPS: usize = 128;

/// The fewest 4-wide chunks of a reduction one thread sums: a thinner split only adds tree
/// levels and threads that each do almost nothing.
const MIN_CHUNKS: u32 = 4;

/// Per-step uniforms; one slot per timestep, bound with dynamic offsets.
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
    /// `I`, with the input projection fused into the step.
    pub input: u32,
    /// Element offset of `x_t` (`[B, I]`) in the `h_carry` binding, fused.
    pub x_at: u32,
    pub _pad: [u32; 2],
}

/// How a step kernel spreads a workgroup's threads: `units` output units per workgroup,
/// `ksplit` threads sharing each (unit, row)'s reduction, and `lanes` row lanes of `rows`
/// batch rows each; `units * ksplit * lanes` threads in all (at most 256, the WGSL `WG`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StepTiling {
    pub units: u32,
    pub ksplit: u32,
    pub lanes: u32,
    pub rows: u32,
}

impl StepTiling {
    /// The tiling of a step over `units` outputs and `batch` rows whose reductions are
    /// `reduction` long, for a kernel that wants at least `min_units` outputs per workgroup
    /// and `min_ksplit` threads per reduction (the backward kernel's coalescing runs along
    /// its reduction, the forward kernel's along the units).
    ///
    /// The rule: rows per thread grow with the batch (1 up to B = 16, 2 up to 32, then 4) so
    /// each loaded weight is reused; row lanes cover the batch (a power of two, no idle
    /// lanes); the reduction is split over as many threads as fit in 256, but never below
    /// [`MIN_CHUNKS`] chunks of 4 per thread (smaller workgroups then, rather than threads
    /// with nothing to do). Each count of outputs per workgroup (16, 8, 4, 2, 1) gives a
    /// candidate. Among those whose grid reaches [`MIN_STEP_WORKGROUPS`], the one with the
    /// fewest row groups (each re-reads the weights), then the most outputs per workgroup
    /// wins; when none reaches it, the one with the most workgroups.
    pub(crate) fn choose(
        units: usize,
        batch: usize,
        reduction: usize,
        min_units: u32,
        min_ksplit: u32,
    ) -> Self {
        let rows: u32 = match batch {
            0..=16 => 1,
            17..=32 => 2,
            _ => 4,
        };
        let lanes_wanted = (batch.div_ceil(rows as usize).max(1) as u32).next_power_of_two();
        let threads = STEP_THREADS as u32;
        let chunks = reduction.div_ceil(4).max(1) as u32;
        // At least MIN_CHUNKS chunks per thread: the largest power of two not above.
        let most = (chunks / MIN_CHUNKS).max(1);
        let max_ksplit = (1u32 << (31 - most.leading_zeros())).max(min_ksplit);
        let mut best: Option<((bool, i64, i64), StepTiling)> = None;
        for (order, per_group) in [16u32, 8, 4, 2, 1].into_iter().enumerate() {
            if per_group < min_units || per_group * min_ksplit > threads {
                continue;
            }
            let lanes = lanes_wanted.min(threads / (per_group * min_ksplit));
            let ksplit = (threads / (per_group * lanes)).min(max_ksplit);
            let tiling = StepTiling {
                units: per_group,
                ksplit,
                lanes,
                rows,
            };
            let [gx, gy, _] = tiling.grid(units, batch);
            let groups = gx as u64 * gy as u64;
            let key = match groups >= MIN_STEP_WORKGROUPS as u64 {
                true => (false, gy as i64, order as i64),
                false => (true, -(groups as i64), order as i64),
            };
            if best.as_ref().is_none_or(|(k, _)| key < *k) {
                best = Some((key, tiling));
            }
        }
        best.map(|(_, t)| t)
            .expect("1 unit per group is always a candidate")
    }

    /// Threads per workgroup.
    pub(crate) fn threads(self) -> u32 {
        self.units * self.ksplit * self.lanes
    }

    /// Batch rows one workgroup covers.
    pub(crate) fn rows_per_group(self) -> usize {
        (self.lanes * self.rows) as usize
    }

    /// The workgroup grid over `units` output units and `batch` rows.
    pub(crate) fn grid(self, units: usize, batch: usize) -> [u32; 3] {
        let gx = units.div_ceil(self.units as usize);
        let gy = batch.div_ceil(self.rows_per_group());
        [
            gx.min(u32::MAX as usize) as u32,
            gy.min(u32::MAX as usize) as u32,
            1,
        ]
    }

    /// The tiling's override constants (`units_name`: the kernel's name for units per group).
    pub(crate) fn constants(self, units_name: &'static str) -> [(&'static str, f64); 4] {
        [
            ("WG", self.threads() as f64),
            (units_name, self.units as f64),
            ("ROWS", self.rows as f64),
            ("KSPLIT", self.ksplit as f64),
        ]
    }
}

/// The forward step's tiling: the layout of [`StepTiling`] (whose `units` count thread
/// columns), and `per_thread` columns per thread, so a thread's register tile is
/// `per_thread` columns (all G gates of each) by `rows` batch rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ForwardTiling {
    pub base: StepTiling,
    pub per_thread: u32,
    pub stage: bool,
}

impl ForwardTiling {
    /// The workgroup grid over `columns` (units, or groups of 4 with `PACK`) and `batch` rows.
    pub(crate) fn grid(self, columns: usize, batch: usize) -> [u32; 3] {
        let per_group = (self.base.units * self.per_thread) as usize;
        let [_, gy, gz] = self.base.grid(columns, batch);
        [
            columns.div_ceil(per_group).min(u32::MAX as usize) as u32,
            gy,
            gz,
        ]
    }

    /// The override constants of `shaders/rnn_step.wgsl`.
    pub(crate) fn constants(self) -> [(&'static str, f64); 6] {
        let [a, b, c, d] = self.base.constants("TJ");
        [
            a,
            b,
            c,
            d,
            ("UJ", self.per_thread as f64),
            ("STAGE", self.stage as u8 as f64),
        ]
    }

    /// For plan printouts: `threads=.. columns/wg=.. ksplit=.. rows=..`, and for the
    /// register-tiled layout `tile=<columns>x<rows> staged` (per thread).
    pub(crate) fn describe(self) -> String {
        let tile = match self.stage {
            true => format!(" tile={}x{} staged", self.per_thread, self.base.rows),
            false => String::new(),
        };
        format!(
            "threads={} columns/wg={} ksplit={} rows={}{tile}",
            self.base.threads(),
            self.base.units * self.per_thread,
            self.base.ksplit,
            self.base.rows
        )
    }
}

/// The forward step's tiling for `columns` columns (units, or groups of 4 units with
/// `PACK`), `batch` rows and a state `state` wide; `min_units`: the fewest columns per
/// workgroup of the register-free layout (4 units of G gates, or 1 packed column: 64 or 16
/// contiguous bytes of a weight row).
///
/// At small batch (or where the grid would be too small) the step is the register-free
/// layout of [`StepTiling::choose`]: one column by up to 4 rows per thread, the reduction
/// split over threads, every load from global memory (at B <= 16 a weight is used by at
/// most a few rows anyway, and the k split is what fills the GPU). From B = 32, where each
/// weight feeds many rows, the step is a register-tiled GEMM tile instead (`STAGE`): a
/// thread owns 2 columns by 8 (or 4) rows, 16 (or 8) gate vec4s, and reads both operands
/// from workgroup memory, where a workgroup stages each k slab of W_hh^T and h_prev once.
/// It is taken only when its grid still has [`MIN_STEP_WORKGROUPS`] workgroups; among those
/// tilings, the largest register tile, then the largest workgroup tile (the fewest
/// re-reads of weights and states), then the fewest padded rows win. The plain RNN's packed
/// layout (`pack`) keeps the register-free layout: its 4 units per column already make each
/// weight vec4 useful, and its grid has a quarter of the columns.
fn choose_forward(
    columns: usize,
    batch: usize,
    state: usize,
    min_units: u32,
    pack: bool,
) -> ForwardTiling {
    let legacy = ForwardTiling {
        base: StepTiling::choose(columns, batch, state, min_units, 1),
        per_thread: 1,
        stage: false,
    };
    let mut best: Option<((u32, u32, i64), ForwardTiling)> = None;
    if batch >= 32 && !pack {
        for rows in [8u32, 4] {
            for per_group in [16u32, 8] {
                for lanes in [16u32, 8, 4, 2, 1] {
                    let t = ForwardTiling {
                        base: StepTiling {
                            units: per_group,
                            ksplit: 1,
                            lanes,
                            rows,
                        },
                        per_thread: STAGE_COLUMNS,
                        stage: true,
                    };
                    let (threads, bm) = (per_group * lanes, (lanes * rows) as usize);
                    let ks = STAGE_WEIGHTS / (per_group * STAGE_COLUMNS);
                    // The kernel's staging shapes: 64 to 256 threads, at most 4 staged
                    // states per thread, 64 rows; and no tile taller than the batch.
                    if !(64..=256).contains(&threads)
                        || ks as usize * bm > 4 * threads as usize
                        || bm > 64
                        || bm > batch
                    {
                        continue;
                    }
                    let [gx, gy, _] = t.grid(columns, batch);
                    if (gx as u64 * gy as u64) < MIN_STEP_WORKGROUPS as u64 {
                        continue;
                    }
                    let padded = gy as i64 * bm as i64 - batch as i64;
                    let key = (
                        rows * STAGE_COLUMNS,
                        per_group * STAGE_COLUMNS * bm as u32,
                        -padded,
                    );
                    if best.as_ref().is_none_or(|(k, _)| key > *k) {
                        best = Some((key, t));
                    }
                }
            }
        }
    }
    best.map_or(legacy, |(_, t)| t)
}

/// Columns per thread of the register-tiled (`STAGE`) step.
const STAGE_COLUMNS: u32 = 2;

/// Gate vec4s of W_hh^T one staged slab holds (the kernel's `partial`): `KS` rows of k.
const STAGE_WEIGHTS: u32 = 256;

/// The forward step's tiling for `h` units, `batch` rows and a state `state` wide.
pub(crate) fn forward_tiling(h: usize, batch: usize, state: usize) -> ForwardTiling {
    choose_forward(h, batch, state, 4, false)
}

/// The forward step of a plain RNN (G = 1) packs 4 units per thread (the kernel's `PACK`): its
/// tiling runs over `ceil(H / 4)` columns of units, and a column's 16 bytes per weight row are
/// enough for a sector, so any number of columns per workgroup will do. Never staged.
fn packed_tiling(h: usize, batch: usize, state: usize) -> ForwardTiling {
    choose_forward(h.div_ceil(4), batch, state, 1, true)
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

/// What one layer-direction's steps bind (see the shader's header for shapes).
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepBindings {
    /// `(Tc, B, H, G)` this chunk's input projection, `b_ih` included; fused: `W_ih^T`.
    pub gx: Buf,
    /// The step computes its own input projection (one-step passes).
    pub fused_input: bool,
    /// `(S, H, G)` packed `W_hh^T`.
    pub w_hh: Buf,
    /// `(B, S)` `h` before the chunk, then peepholes and lengths.
    pub h_carry: Buf,
    /// `(2, H, G)` packed biases, `None` without bias.
    pub bias: Option<Buf>,
    /// `(T, B, H)` outputs (`h_raw` with a projection).
    pub y: Buf,
    /// LSTM `(B, H)` cell state; GRU reset-before `r * h_prev` `(T, B, H)`; else `None`.
    pub c_state: Option<Buf>,
    /// Training: `(T, B, H, S)` tape and `(T + 1, B, H)` history.
    pub tape: Option<(Buf, Buf)>,
}

/// One timestep's dispatch (`phase`: the GRU reset-before half, else 0).
/// CPU twins: [`crate::cpu::lstm_step`] and the GRU/RNN steps.
pub(crate) fn rnn_step(
    cfg: &RnnConfig,
    batch: usize,
    phase: u32,
    bufs: &StepBindings,
    params: StepParams,
) -> Op {
    let (g, h, st) = (cfg.gate_count(), cfg.hidden_size(), cfg.state_size());
    let pack = cfg.cell() == CellKind::Rnn;
    // Columns the grid covers: units, or groups of 4 units with PACK.
    let (tiling, columns) = match pack {
        true => (packed_tiling(h, batch, st), h.div_ceil(4)),
        false => (forward_tiling(h, batch, st), h),
    };
    let mut constants = cell_constants(cfg);
    constants.extend(tiling.constants());
    constants.extend([
        ("PACK", pack as u8 as f64),
        ("HAS_BIAS", bufs.bias.is_some() as u8 as f64),
        ("SAVE", bufs.tape.is_some() as u8 as f64),
        ("FPHASE", phase as f64),
        ("FUSED_INPUT", bufs.fused_input as u8 as f64),
    ]);
    let (tape, c_all) = bufs.tape.unwrap_or((Buf::Unused(1), Buf::Unused(2)));
    let saved = bufs.tape.map_or(0, |_| batch * h * (tape_slots(cfg) + 1));
    Op::Dispatch(Dispatch {
        kernel: Kernel::RnnStep,
        constants,
        params: bytemuck::bytes_of(&params).to_vec(),
        bindings: vec![
            bufs.gx,
            bufs.w_hh,
            bufs.h_carry,
            // Without bias the binding is never read; w_hh is a read-only stand-in.
            bufs.bias.unwrap_or(bufs.w_hh),
            bufs.y,
            bufs.c_state.unwrap_or(Buf::Unused(0)),
            tape,
            c_all,
        ],
        grid: tiling.grid(columns, batch),
        what: format!(
            "rnn_step t={} (H={h}, B={batch}, {})",
            params.t_global,
            tiling.describe()
        ),
        reads: bytes(
            st * g * h
                + batch * st
                + match bufs.fused_input {
                    true => params.input as usize * g * h + batch * params.input as usize,
                    false => batch * g * h,
                },
        ),
        writes: bytes(batch * h + saved),
        step: Some(params.t_global as usize),
        dropout: None,
    })
}

/// Both directions' dispatches of one timestep (`dirs[d]`: direction `d`'s op from
/// [`rnn_step`], or from [`crate::gpu::kernels::rnn_step_backward::rnn_step_backward`], the
/// same phase) as one dispatch of the paired kernel (`rnn_step_pair`, or
/// `rnn_step_backward_pair`): the same constants, uniforms and tiling, grid z = 2
/// (`workgroup_id.z` is the direction), direction 0's bindings then direction 1's (its
/// [`Buf::Unused`] placeholders moved past direction 0's, so no two bindings alias). `Err`
/// (internal) if the two differ in anything but buffers.
pub(crate) fn pair_steps(dirs: [Op; 2]) -> Result<Op> {
    let [Op::Dispatch(a), Op::Dispatch(b)] = dirs else {
        return Err(Error::Internal(
            "pairing an op that is not a dispatch".into(),
        ));
    };
    // The paired kernel, and how many placeholders direction 0's op may use.
    let (paired, unused) = match a.kernel {
        Kernel::RnnStep => (Kernel::RnnStepPair, 3),
        Kernel::RnnStepBackward => (Kernel::RnnStepBackwardPair, 2),
        other => {
            return Err(Error::Internal(format!(
                "`{}` has no paired kernel",
                other.name()
            )));
        }
    };
    let same = b.kernel == a.kernel
        && a.constants == b.constants
        && a.params == b.params
        && a.grid == b.grid
        && a.grid[2] == 1
        && a.step == b.step;
    if !same {
        return Err(Error::Internal(format!(
            "the directions' steps differ beyond their buffers: `{}` and `{}`",
            a.what, b.what
        )));
    }
    let second = b.bindings.iter().map(|&buf| match buf {
        Buf::Unused(k) => Buf::Unused(k + unused),
        other => other,
    });
    Ok(Op::Dispatch(Dispatch {
        kernel: paired,
        bindings: a.bindings.iter().copied().chain(second).collect(),
        grid: [a.grid[0], a.grid[1], 2],
        what: format!("{}, both directions (z)", a.what),
        reads: a.reads + b.reads,
        writes: a.writes + b.writes,
        ..a
    }))
}
