//! `Plan`: what one pass of a model over a `(T, B)` batch will do, decided on the CPU.
//!
//! From the configuration, the shapes and the device limits a plan validates every shape,
//! cuts time into chunks that fit, chooses each kernel's tiling and grid, and lists every op
//! of the pass (dispatches, copies, clears) over symbolic buffers. It touches no GPU object,
//! so it can be built, inspected and printed anywhere; a [`crate::gpu::Workspace`] turns it
//! into buffers and bind groups once, and every later call of the same shape replays it.

use crate::config::RnnConfig;
use crate::error::{Error, Result};
use crate::gpu::dispatch::{Buf, BufferCopy, BufferSpec, Io, Op, bytes, dispatch_geometry};
use crate::gpu::kernels::gemm::GEMM_TILE;
use crate::gpu::{backward, forward};

/// Scratch budget for one chunk of the input projection. Large enough that every DeepBench
/// row runs in a single chunk; small enough to leave room beside the model on 4 GB devices.
const GX_BUDGET_BYTES: u64 = 256 << 20;

/// What a pass computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PlanMode {
    /// A forward pass (inference: no dropout, no tape).
    Inference,
    /// A forward pass that saves the tape, dropout between layers, and the backward pass.
    Training,
    /// One inference step (`T = 1`, forward direction) of a [`crate::Session`], whose
    /// recurrent state stays in the workspace between calls: the step reads `h` and `c` where
    /// the previous step left them, and copies out only `y_t`. No initial or final state
    /// travels through the caller's tensors.
    Stream,
}

/// The shape of a pass: what a plan (and the workspace built from it) is specific to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct PlanKey {
    pub steps: usize,
    pub batch: usize,
    pub mode: PlanMode,
    /// Rows may end before `T` (per-row lengths): `h_n` is then gathered from each row's last
    /// step instead of copied from step `T - 1`.
    pub lengths: bool,
    /// The model's cap on time-chunk length ([`crate::Rnn::with_max_chunk_steps`]).
    pub chunk_cap: Option<usize>,
}

/// Storage buffers the paired step kernels bind (both directions' 8).
pub(crate) const PAIR_STORAGE_BUFFERS: u32 = 16;

/// The device limits a plan is made against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PlanLimits {
    pub max_buffer: u64,
    pub max_binding: u64,
    pub binding_limit_name: &'static str,
    pub max_groups: u32,
    pub max_workgroup_bytes: u64,
    pub max_invocations: u32,
    pub uniform_align: u64,
    /// `max_storage_buffers_per_shader_stage`: every kernel binds only storage buffers besides
    /// its uniform.
    pub max_storage_buffers: u32,
    /// Both directions of a bidirectional layer run each step (each phase of it) as one
    /// dispatch of the paired step kernel (`rnn_step_pair` forward, `rnn_step_backward_pair`
    /// backward, 16 storage bindings): where the device allows 16 storage buffers per stage,
    /// unless [`crate::Context::set_paired_steps`] switched it off.
    pub pair_directions: bool,
}

impl PlanLimits {
    pub(crate) fn of(l: &wgpu::Limits) -> PlanLimits {
        let (binding_limit_name, max_binding) =
            if l.max_storage_buffer_binding_size <= l.max_buffer_size {
                (
                    "max_storage_buffer_binding_size",
                    l.max_storage_buffer_binding_size,
                )
            } else {
                ("max_buffer_size", l.max_buffer_size)
            };
        PlanLimits {
            max_buffer: l.max_buffer_size,
            max_binding,
            binding_limit_name,
            max_groups: l.max_compute_workgroups_per_dimension,
            max_workgroup_bytes: l.max_compute_workgroup_storage_size as u64,
            max_invocations: l.max_compute_invocations_per_workgroup,
            uniform_align: l.min_uniform_buffer_offset_alignment as u64,
            max_storage_buffers: l.max_storage_buffers_per_shader_stage,
            pair_directions: l.max_storage_buffers_per_shader_stage >= PAIR_STORAGE_BUFFERS,
        }
    }

    /// The limits of `ctx`'s device, with its choice of paired steps
    /// ([`crate::Context::set_paired_steps`]).
    pub(crate) fn of_context(ctx: &crate::Context) -> PlanLimits {
        let mut lim = PlanLimits::of(ctx.limits());
        lim.pair_directions &= ctx.paired_steps();
        lim
    }

    /// `Err` when a dispatch's grid exceeds `max_compute_workgroups_per_dimension`.
    pub(crate) fn fits_grid(&self, d: &crate::gpu::dispatch::Dispatch) -> Result<()> {
        for (axis, &n) in d.grid.iter().enumerate() {
            if n > self.max_groups {
                return Err(Error::LimitExceeded {
                    limit: "max_compute_workgroups_per_dimension",
                    what: format!("{} (grid axis {axis})", d.what),
                    needed: n as u64,
                    allowed: self.max_groups as u64,
                });
            }
        }
        Ok(())
    }

    /// `Err` when `bytes` of `what` do not fit one storage binding.
    pub(crate) fn fits_binding(&self, what: &str, bytes: u64) -> Result<()> {
        if bytes > self.max_binding {
            return Err(Error::LimitExceeded {
                limit: self.binding_limit_name,
                what: what.into(),
                needed: bytes,
                allowed: self.max_binding,
            });
        }
        Ok(())
    }
}

/// Where a layer-direction's frame and tape live in a training plan (indices of scratch
/// buffers), for the backward schedule.
#[derive(Debug, Clone)]
pub(crate) struct TapeLayout {
    /// `[T, B, I_l]` frame input.
    pub x: Buf,
    /// `[T, B, S]` frame output.
    pub y: Buf,
    /// `[T, B, H, S]` pre-activations, then the peepholes, then the lengths.
    pub pre: Buf,
    /// Words of `pre` before the peepholes.
    pub pre_words: usize,
    /// `[T + 1, B, H]` LSTM c / GRU h history (a placeholder for the plain RNN).
    pub history: Buf,
    /// `[B, S]` the initial state.
    pub h0: Buf,
    /// With a projection: `h_raw [T, B, H]` and the projected states `[T + 1, B, P]`.
    pub projection: Option<(Buf, Buf)>,
    /// GRU reset-before: `r * h_prev`, `[T, B, H]`.
    pub reset_products: Option<Buf>,
}

/// A validated, fully scheduled pass. Print it (`{}`) to see every dispatch of one step and
/// the totals of the whole pass.
#[derive(Debug, Clone)]
pub struct Plan {
    pub(crate) key: PlanKey,
    /// Timesteps per chunk of the input projection.
    pub(crate) chunk: usize,
    pub(crate) buffers: Vec<BufferSpec>,
    /// The forward pass (saving the tape in training).
    pub(crate) forward: Vec<Op>,
    /// Training: the backward pass, overwriting and accumulating parameter gradients.
    pub(crate) backward: Option<[Vec<Op>; 2]>,
    /// `[B]` lengths a call uploads from the host.
    pub(crate) lengths_upload: Buf,
    /// `[B]` all `T`: the lengths when the caller gives none.
    pub(crate) full_lengths: Buf,
    /// Constant contents written once when the workspace is made: `(buffer, word offset,
    /// values)` (the lengths of a plan whose rows all run `T` steps).
    pub(crate) inits: Vec<(Buf, usize, Vec<f32>)>,
    /// Bytes of the uniform slots of every op list together.
    pub(crate) uniform_bytes: u64,
    /// [`PlanMode::Stream`]: per layer, where its recurrent state lives between steps.
    pub(crate) resident: Vec<ResidentState>,
    /// [`PlanMode::Stream`]: the odd steps' list, `forward` with each layer's two state
    /// buffers swapped (see [`ResidentState`]).
    pub(crate) forward_odd: Option<Vec<Op>>,
}

/// Where one layer's recurrent state lives in a [`PlanMode::Stream`] workspace. The state
/// ping-pongs between two buffers of the same layout (`h [B, S]` at word 0, then the step's
/// constants and its input): an even step reads `h_prev` from `h` and writes its new `h` to
/// word 0 of `twin`, an odd step the other way round (the plan's `forward_odd` list), so no
/// step copies its state. An LSTM's `c [B, H]` stays at word 0 of `c` (each thread updates its
/// own cells in place).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResidentState {
    pub h: Buf,
    pub twin: Buf,
    pub c: Option<Buf>,
    /// Layer 0: the word where an even step's fused input projection reads `x_t [B, I]` in
    /// `h` (in `twin` for an odd step). `None` above layer 0.
    pub x_at: Option<usize>,
}

impl ResidentState {
    /// The buffer holding the state that step number `steps` (counted from 0) reads.
    pub(crate) fn current(&self, steps: u64) -> Buf {
        match steps % 2 {
            0 => self.h,
            _ => self.twin,
        }
    }
}

/// Builds one plan's buffer list and op lists.
pub(crate) struct Builder<'a> {
    pub cfg: &'a RnnConfig,
    pub layer_cfgs: &'a [RnnConfig],
    pub steps: usize,
    pub batch: usize,
    pub chunk: usize,
    pub limits: PlanLimits,
    /// Rows may end before `T`.
    pub lengths: bool,
    pub buffers: Vec<BufferSpec>,
    pub ops: Vec<Op>,
    pub inits: Vec<(Buf, usize, Vec<f32>)>,
    /// [`PlanMode::Stream`]: the state stays in the workspace (no `h0`/`c0` in, no
    /// `h_n`/`c_n` out); each layer's place is pushed to `resident_state`.
    pub resident: bool,
    pub resident_state: Vec<ResidentState>,
}

impl Builder<'_> {
    /// A new scratch buffer of `words` f32 values.
    pub(crate) fn buffer(&mut self, name: &'static str, words: usize) -> Buf {
        self.buffers.push(BufferSpec {
            name,
            words: (words as u64).max(1),
        });
        Buf::Scratch(self.buffers.len() as u32 - 1)
    }

    /// Write `values` at word `at` of `buf` once, when the workspace is made.
    pub(crate) fn init(&mut self, buf: Buf, at: usize, values: Vec<f32>) {
        self.inits.push((buf, at, values));
    }

    /// The row lengths of a pass whose rows all run `T` steps.
    pub(crate) fn all_steps(&self) -> Vec<f32> {
        vec![self.steps as f32; self.batch]
    }

    pub(crate) fn push(&mut self, op: Op) {
        self.ops.push(op);
    }

    pub(crate) fn push_opt(&mut self, op: Option<Op>) {
        self.ops.extend(op);
    }

    /// `words` from word `at` of the caller's `io` into word `dst_at` of `dst` (zeros when the
    /// caller gave no such tensor).
    pub(crate) fn load(&mut self, io: Io, at: usize, dst: Buf, dst_at: usize, words: usize) {
        self.copy(Buf::Io(io), at, dst, dst_at, words);
    }

    /// `words` of `src` into the caller's `io` (skipped when the caller wants none).
    pub(crate) fn store(&mut self, src: Buf, words: usize, io: Io) {
        self.copy(src, 0, Buf::Io(io), 0, words);
    }

    /// `n` words from word `src_at` of `src` to word `dst_at` of `dst`.
    pub(crate) fn copy(&mut self, src: Buf, src_at: usize, dst: Buf, dst_at: usize, n: usize) {
        self.push(Op::Copy(BufferCopy {
            src,
            src_at: bytes(src_at),
            dst,
            dst_at: bytes(dst_at),
            bytes: bytes(n),
        }));
    }
}

/// `[T, B, F]` or `[B, T, F]` in `cfg`'s layout.
pub(crate) fn io_shape(cfg: &RnnConfig, t: usize, b: usize, features: usize) -> [usize; 3] {
    match cfg.layout() {
        crate::config::Layout::SeqMajor => [t, b, features],
        crate::config::Layout::BatchFirst => [b, t, features],
    }
}

impl Plan {
    /// The plan of a pass of a `cfg` model over `steps` x `batch` (with per-row lengths when
    /// `variable_lengths`) on a device with `limits`:
    /// pure CPU work, no GPU needed (pass `wgpu::Limits::default()` to judge a design against
    /// WebGPU's defaults, or another device's limits). [`crate::Rnn::plan`] does the same for
    /// a model's own device.
    ///
    /// Errors: [`Error::ZeroSize`], [`Error::LimitExceeded`] naming the limit a shape exceeds.
    pub fn new(
        cfg: &RnnConfig,
        steps: usize,
        batch: usize,
        mode: PlanMode,
        variable_lengths: bool,
        limits: &wgpu::Limits,
    ) -> Result<Plan> {
        let layer_cfgs: Vec<RnnConfig> =
            (0..cfg.num_layers()).map(|l| cfg.layer_config(l)).collect();
        let key = PlanKey {
            steps,
            batch,
            mode,
            lengths: variable_lengths,
            chunk_cap: None,
        };
        Plan::build(cfg, &layer_cfgs, key, PlanLimits::of(limits))
    }

    /// Validate a pass of `cfg` over `steps` x `batch` against `limits` and schedule it.
    pub(crate) fn build(
        cfg: &RnnConfig,
        layer_cfgs: &[RnnConfig],
        key: PlanKey,
        limits: PlanLimits,
    ) -> Result<Plan> {
        let chunk = check_shapes(cfg, key, &limits)?;
        let mut b = Builder {
            cfg,
            layer_cfgs,
            steps: key.steps,
            batch: key.batch,
            chunk,
            limits,
            lengths: key.lengths,
            buffers: Vec::new(),
            ops: Vec::new(),
            inits: Vec::new(),
            resident: key.mode == PlanMode::Stream,
            resident_state: Vec::new(),
        };
        let lengths_upload = b.buffer("lengths (uploaded)", key.batch);
        let full_lengths = b.buffer("lengths (all T)", key.batch);
        b.init(full_lengths, 0, b.all_steps());
        let train = key.mode == PlanMode::Training;
        let tapes = forward::schedule(&mut b, train)?;
        let forward = std::mem::take(&mut b.ops);
        // A streaming step's odd list: the same ops with each layer's state buffers swapped.
        let forward_odd = b.resident.then(|| {
            let swap = |x: Buf| {
                b.resident_state.iter().fold(x, |x, r| match x {
                    x if x == r.h => r.twin,
                    x if x == r.twin => r.h,
                    x => x,
                })
            };
            forward.iter().map(|op| op.map_bufs(swap)).collect()
        });
        let backward = match train {
            true => {
                // Both schedules allocate the same scratch buffers in the same order: the
                // accumulating one reuses the overwriting one's.
                let before = b.buffers.len();
                backward::schedule(&mut b, &tapes, false)?;
                let overwrite = std::mem::take(&mut b.ops);
                let after = b.buffers.len();
                b.buffers.truncate(before);
                backward::schedule(&mut b, &tapes, true)?;
                debug_assert_eq!(b.buffers.len(), after);
                Some([overwrite, std::mem::take(&mut b.ops)])
            }
            false => None,
        };
        let mut plan = Plan {
            key,
            chunk,
            buffers: b.buffers,
            forward,
            backward,
            lengths_upload,
            full_lengths,
            inits: b.inits,
            uniform_bytes: 0,
            resident: b.resident_state,
            forward_odd,
        };
        plan.check_ops(&limits)?;
        Ok(plan)
    }

    /// Every op list of the plan.
    pub(crate) fn op_lists(&self) -> impl Iterator<Item = &Vec<Op>> {
        std::iter::once(&self.forward)
            .chain(self.forward_odd.iter())
            .chain(self.backward.iter().flatten())
    }

    /// The backstop: every dispatch fits the device (grid, workgroup size and memory, bound
    /// buffer sizes) and the uniform slots fit one buffer. The schedules choose chunks and
    /// tiles to fit; what cannot fit is refused here, before any GPU work.
    fn check_ops(&mut self, limits: &PlanLimits) -> Result<()> {
        for (i, spec) in self.buffers.iter().enumerate() {
            if bytes(spec.words as usize) > limits.max_buffer {
                return Err(Error::LimitExceeded {
                    limit: "max_buffer_size",
                    what: format!("scratch buffer {i} `{}`", spec.name),
                    needed: spec.words * 4,
                    allowed: limits.max_buffer,
                });
            }
        }
        let mut slots = 0u64;
        for op in self.op_lists().flatten() {
            let Op::Dispatch(d) = op else { continue };
            slots += 1;
            limits.fits_grid(d)?;
            let (threads, shared) = dispatch_geometry(d);
            if threads > limits.max_invocations {
                return Err(Error::LimitExceeded {
                    limit: "max_compute_invocations_per_workgroup",
                    what: d.what.clone(),
                    needed: threads as u64,
                    allowed: limits.max_invocations as u64,
                });
            }
            if shared > limits.max_workgroup_bytes {
                return Err(Error::LimitExceeded {
                    limit: "max_compute_workgroup_storage_size",
                    what: d.what.clone(),
                    needed: shared,
                    allowed: limits.max_workgroup_bytes,
                });
            }
            // Every binding after the uniform is a storage buffer.
            if d.bindings.len() as u64 > limits.max_storage_buffers as u64 {
                return Err(Error::LimitExceeded {
                    limit: "max_storage_buffers_per_shader_stage",
                    what: d.what.clone(),
                    needed: d.bindings.len() as u64,
                    allowed: limits.max_storage_buffers as u64,
                });
            }
            for b in &d.bindings {
                if let Buf::Scratch(i) = b {
                    let spec = &self.buffers[*i as usize];
                    limits.fits_binding(
                        &format!("`{}` bound by {}", spec.name, d.what),
                        spec.words * 4,
                    )?;
                }
            }
        }
        // One slot per dispatch, each at the dynamic-offset alignment (every uniform struct is
        // at most 64 bytes, well under any alignment).
        let stride = 64u64.next_multiple_of(limits.uniform_align.max(1));
        self.uniform_bytes = slots.max(1) * stride;
        if self.uniform_bytes > limits.max_buffer {
            return Err(Error::LimitExceeded {
                limit: "max_buffer_size",
                what: format!(
                    "uniform slots of {slots} dispatches (T = {})",
                    self.key.steps
                ),
                needed: self.uniform_bytes,
                allowed: limits.max_buffer,
            });
        }
        Ok(())
    }

    /// Timesteps `T`.
    pub fn steps(&self) -> usize {
        self.key.steps
    }
    /// Batch rows `B`.
    pub fn batch(&self) -> usize {
        self.key.batch
    }
    /// Inference or training.
    pub fn mode(&self) -> PlanMode {
        self.key.mode
    }
    /// Timesteps per chunk of the input projection (`T` when one chunk fits).
    pub fn chunk_steps(&self) -> usize {
        self.chunk
    }
    /// Dispatches of the forward pass.
    pub fn forward_dispatches(&self) -> usize {
        count_dispatches(&self.forward)
    }
    /// Dispatches of the backward pass (0 for inference).
    pub fn backward_dispatches(&self) -> usize {
        self.backward
            .as_ref()
            .map_or(0, |b| count_dispatches(&b[0]))
    }
    /// Bytes of every scratch buffer of the workspace this plan needs, uniforms included.
    pub fn workspace_bytes(&self) -> u64 {
        self.buffers.iter().map(|b| b.words * 4).sum::<u64>() + self.uniform_bytes
    }
}

fn count_dispatches(ops: &[Op]) -> usize {
    ops.iter().filter(|o| matches!(o, Op::Dispatch(_))).count()
}

/// Validate the shapes of a pass and choose the time chunk.
fn check_shapes(cfg: &RnnConfig, key: PlanKey, lim: &PlanLimits) -> Result<usize> {
    let (t, b) = (key.steps, key.batch);
    let (i, h, g, st) = (
        cfg.input_size(),
        cfg.hidden_size(),
        cfg.gate_count(),
        cfg.state_size(),
    );
    if t == 0 {
        return Err(Error::ZeroSize("T (timesteps)"));
    }
    if b == 0 {
        return Err(Error::ZeroSize("B (batch)"));
    }
    if key.mode == PlanMode::Stream {
        if cfg.direction() != crate::config::Direction::Forward {
            return Err(Error::Unsupported(format!(
                "a streaming session of a {:?} model: a reverse direction reads the sequence \
                 from its end, so it cannot advance one step at a time",
                cfg.direction()
            )));
        }
        if t != 1 || key.lengths {
            return Err(Error::Unsupported(format!(
                "a Stream plan over T = {t}{}: a streaming step is one timestep, every row live",
                if key.lengths {
                    ", with per-row lengths"
                } else {
                    ""
                },
            )));
        }
    }
    // Lengths and step indices travel as f32 whole numbers.
    if t > 1 << 24 {
        return Err(Error::LimitExceeded {
            limit: "2^24 timesteps (lengths are exact f32 integers)",
            what: "T (timesteps)".into(),
            needed: t as u64,
            allowed: 1 << 24,
        });
    }
    let words =
        |dims: &[usize]| -> u64 { dims.iter().fold(4u64, |n, &d| n.saturating_mul(d as u64)) };
    let widest_in = (0..cfg.num_layers())
        .map(|l| cfg.layer_input_size(l))
        .max()
        .unwrap_or(i);
    let dirs = cfg.num_directions();
    lim.fits_binding("x", words(&[t, b, i]))?;
    lim.fits_binding("a layer's input", words(&[t, b, widest_in]))?;
    lim.fits_binding("y", words(&[t, b, h.max(st), dirs]))?;
    if cfg.proj_size().is_some() {
        // The projected states [h0; y] beside the peepholes and lengths.
        lim.fits_binding(
            "projected states",
            words(&[t + 1, b, st]).saturating_add(words(&[3 * h + b])),
        )?;
    }
    let gx_step = words(&[b, g, h]);
    lim.fits_binding("one timestep of the input projection (B x G*H)", gx_step)?;
    if key.mode == PlanMode::Training {
        lim.fits_binding("training tape (T x B x G*H)", words(&[t, b, g, h]))?;
    }
    let max_wg = lim.max_groups as u64;
    let tile = GEMM_TILE as u64;
    let rows_fit = max_wg * tile / b as u64;
    if rows_fit == 0 {
        return Err(Error::LimitExceeded {
            limit: "max_compute_workgroups_per_dimension",
            what: "input projection rows for one timestep (B / 64)".into(),
            needed: (b as u64).div_ceil(tile),
            allowed: max_wg,
        });
    }
    let mem_fit = lim.max_binding.min(GX_BUDGET_BYTES).max(gx_step) / gx_step;
    let chunk = (t as u64)
        .min(mem_fit)
        .min(rows_fit)
        .min(key.chunk_cap.unwrap_or(usize::MAX) as u64) as usize;
    Ok(chunk.max(1))
}
