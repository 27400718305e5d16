//! `Rnn`: packed weights on the GPU and the forward schedule of the whole stack.
//!
//! Every layer-direction runs in its own *frame*: a plain seq-major `[T, B, ·]` sequence,
//! time-reversed within each row's length for a reverse direction. Schedule of one forward
//! pass (one command encoder, one submission):
//! 1. for each layer `l`, for each direction `d` (both recorded together, so the GPU can
//!    overlap them):
//!    - the frame input: the layer input itself when it already is one (forward direction,
//!      seq-major), else a `rearrange` gather (batch-first, reversal, padding zeroed);
//!    - `h_carry <- h0[l*D + d]`, `c_state <- c0[l*D + d]`, row lengths beside them;
//!    - for each time chunk: `gx <- x[t0..t0+Tc] · W_ih^T + b` (one GEMM over `Tc*B` rows),
//!      then the `rnn_step` dispatches of both directions interleaved step by step; a row past
//!      its length holds its state and outputs zeros;
//!    - the frame output scattered into the layer output `[T, B, D*S]` (skipped when the frame
//!      *is* the layer output), `h_n` gathered from each row's last valid step, `c_n` copied;
//!    - in training, dropout on the layer output (all but the last layer).
//!
//! Time is chunked only so the input projection `gx` (`G*H/I` times larger than `x`) fits the
//! device's storage-binding limit and a bounded scratch budget; with room, one chunk covers all
//! of `T`.

use crate::config::{CellKind, Direction, GruReset, Layout, RnnConfig};
use crate::error::{Error, Result};
use crate::gpu::context::Context;
use crate::gpu::gemm::{GEMM_TILE, Gemm, gemm};
use crate::gpu::pack::{pack_biases, pack_gate_interleaved, unpack_gate_interleaved};
use crate::gpu::rearrange::{TimeMap, View, rearrange, record_dropout};
use crate::gpu::rnn_step::{RnnStep, StepBuffers, StepParams, StepTiling, step_grid};
use crate::gpu::tensor::{GpuTensor, download_optional};
use crate::gpu::uniforms::UniformSlots;
use crate::weights::{LayerWeights, Weights};
use std::sync::atomic::{AtomicU64, Ordering};

/// Scratch budget for one chunk of the input projection. Large enough that every DeepBench
/// row runs in a single chunk; small enough to leave room beside the model on 4 GB devices.
const GX_BUDGET_BYTES: u64 = 256 << 20;

/// Recurrent state of every layer and direction, in PyTorch's order (`l0`, `l0_reverse`,
/// `l1`, ...).
///
/// Shapes: `h` is `[layers*dirs, B, S]` (`S` = `proj_size` or `H`), `c` is
/// `[layers*dirs, B, H]` (LSTM only).
#[derive(Debug, Clone)]
pub struct State {
    /// Hidden state.
    pub h: GpuTensor,
    /// Cell state (LSTM).
    pub c: Option<GpuTensor>,
}

/// Results of a forward pass, all on the GPU.
#[derive(Debug, Clone)]
pub struct Output {
    /// `[T, B, dirs*S]` (or `[B, T, dirs*S]` batch-first): the last layer's `h_t` for every
    /// step, both directions concatenated on the feature axis; exactly zero past a row's length.
    pub y: GpuTensor,
    /// `[layers*dirs, B, S]`: final hidden state (each row's last valid step).
    pub h_n: GpuTensor,
    /// `[layers*dirs, B, H]`: final cell state (LSTM).
    pub c_n: Option<GpuTensor>,
}

/// Results of [`Rnn::forward_host`], on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostOutput {
    /// `[T, B, dirs*S]` (or batch-first).
    pub y: Vec<f32>,
    /// `[layers*dirs, B, S]`.
    pub h_n: Vec<f32>,
    /// `[layers*dirs, B, H]` (LSTM).
    pub c_n: Option<Vec<f32>>,
}

/// Options of a forward pass beyond its tensors.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions<'a> {
    /// Valid steps of each batch row, `[B]`, each in `1..=T`, in any order (PyTorch
    /// `pack_padded_sequence(..., enforce_sorted=False)`). `None`: every row runs all `T`.
    pub lengths: Option<&'a [usize]>,
    /// Seed of the dropout masks between layers ([`Rnn::forward_train_with`] only, when the
    /// model has dropout). `None`: the model draws the next seed of its own counter, so
    /// successive training steps get fresh masks.
    pub dropout_seed: Option<u64>,
}

/// One layer-direction's parameters in GPU layout (see [`crate::gpu::pack`]). Gradients use
/// the same layout, so optimisers update parameters element-wise.
pub(crate) struct PackedLayer {
    /// `[I, H*G]`: `W_ih^T`, gate-interleaved.
    pub w_ih: GpuTensor,
    /// `[S, H*G]`: `W_hh^T`, gate-interleaved.
    pub w_hh: GpuTensor,
    /// `[2, H*G]`: `b_ih` and `b_hh`, gate-interleaved (`None` without bias).
    pub bias: Option<GpuTensor>,
    /// `[H, P]`: `W_hr^T`, the LSTM projection (`None` without `proj_size`).
    pub w_hr: Option<GpuTensor>,
    /// `[3H]`: LSTM peepholes `p_i | p_f | p_o`, PyTorch-like layout (`None` without).
    pub peephole: Option<GpuTensor>,
}

impl PackedLayer {
    pub(crate) fn view(&self) -> LayerView<'_> {
        LayerView {
            w_ih: &self.w_ih,
            w_hh: &self.w_hh,
            bias: self.bias.as_ref(),
            w_hr: self.w_hr.as_ref(),
            peephole: self.peephole.as_ref(),
        }
    }
}

/// One layer-direction's packed tensors, borrowed: the parameters ([`PackedLayer`]) and their
/// gradients ([`crate::gpu::LayerGrads`]) share this layout, order and unpacking.
pub(crate) struct LayerView<'a> {
    pub w_ih: &'a GpuTensor,
    pub w_hh: &'a GpuTensor,
    pub bias: Option<&'a GpuTensor>,
    pub w_hr: Option<&'a GpuTensor>,
    pub peephole: Option<&'a GpuTensor>,
}

impl<'a> LayerView<'a> {
    /// The tensors in the order of [`Rnn::parameters`]: `W_ih`, `W_hh`, then the biases,
    /// `W_hr` and peepholes the layer has.
    pub(crate) fn tensors(&self) -> Vec<&'a GpuTensor> {
        let mut v = vec![self.w_ih, self.w_hh];
        v.extend(self.bias);
        v.extend(self.w_hr);
        v.extend(self.peephole);
        v
    }

    /// Download and unpack to PyTorch layout, for the layer `cfg` describes.
    pub(crate) fn to_host(&self, ctx: &Context, cfg: &RnnConfig) -> Result<LayerWeights> {
        let (g, h, i) = (cfg.gate_count(), cfg.hidden_size(), cfg.input_size());
        let (bias_ih, bias_hh) = match self.bias {
            Some(b) => {
                let (bi, bh) = unpack_biases(&b.download(ctx)?, g, h)?;
                (Some(bi), Some(bh))
            }
            None => (None, None),
        };
        Ok(LayerWeights {
            weight_ih: unpack_gate_interleaved(&self.w_ih.download(ctx)?, g, h, i)?,
            weight_hh: unpack_gate_interleaved(&self.w_hh.download(ctx)?, g, h, cfg.state_size())?,
            bias_ih,
            bias_hh,
            weight_hr: match self.w_hr {
                Some(w) => Some(transpose(&w.download(ctx)?, h, w.shape()[1])),
                None => None,
            },
            peephole: match self.peephole {
                Some(p) => Some(p.download(ctx)?),
                None => None,
            },
        })
    }
}

/// Unique id of each model, so a tape can be matched to the model that recorded it.
static NEXT_MODEL_ID: AtomicU64 = AtomicU64::new(1);

/// A recurrent network whose weights live on the GPU: any cell of [`RnnConfig`], any number of
/// layers, forward, reverse or bidirectional, seq-major or batch-first.
pub struct Rnn {
    pub(crate) ctx: Context,
    pub(crate) cfg: RnnConfig,
    /// Per layer-direction, `l*D + d`.
    pub(crate) layers: Vec<PackedLayer>,
    /// Per layer: its one-layer, one-direction, seq-major configuration (input size `I_l`).
    pub(crate) layer_cfgs: Vec<RnnConfig>,
    pub(crate) id: u64,
    max_chunk_steps: Option<usize>,
    dropout_draws: AtomicU64,
}

impl std::fmt::Debug for Rnn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rnn")
            .field("cfg", &self.cfg)
            .field("ctx", &self.ctx)
            .finish_non_exhaustive()
    }
}

/// How a forward pass is cut into time chunks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    pub steps: usize,
    pub batch: usize,
    chunk: usize,
}

impl Plan {
    /// The plan of a recorded pass (backward does not chunk time).
    pub(crate) fn for_tape(steps: usize, batch: usize) -> Plan {
        Plan {
            steps,
            batch,
            chunk: steps,
        }
    }
}

/// One layer-direction's frame: its input and output as plain seq-major sequences.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    /// `[T, B, I_l]`.
    pub x: GpuTensor,
    /// `[T, B, S]`: `h_t` (projected with `proj_size`), zero past each row's length.
    pub y: GpuTensor,
}

/// What one layer-direction run reads and writes (see [`Rnn::record_layer`]).
struct Job<'a> {
    cfg: &'a RnnConfig,
    layer: &'a PackedLayer,
    frame: &'a Frame,
    /// `[B, S]` initial state at this byte offset, or zeros.
    h0: Option<(&'a wgpu::Buffer, u64)>,
    /// `[B, H]` initial cell state at this byte offset, or zeros (LSTM).
    c0: Option<(&'a wgpu::Buffer, u64)>,
    /// `[B, H]` the LSTM cell state, updated in place.
    c_state: Option<&'a GpuTensor>,
    lengths: &'a GpuTensor,
    save: Option<TapeBuffers<'a>>,
}

/// A [`Job`] with its scratch buffers and bound kernels.
struct Prepared<'a> {
    job: &'a Job<'a>,
    h_carry: GpuTensor,
    h_raw: Option<GpuTensor>,
    params: UniformSlots,
    gx: GpuTensor,
    steps: Vec<RnnStep>,
}

pub(crate) fn compute_pass<'e>(
    enc: &'e mut wgpu::CommandEncoder,
    label: &str,
) -> wgpu::ComputePass<'e> {
    enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some(label),
        timestamp_writes: None,
    })
}

impl Rnn {
    /// Validate `weights` against `cfg` and the device limits, pack and upload them once.
    ///
    /// Errors: [`Error::ShapeMismatch`]/[`Error::MissingTensor`] for weights that do not fit
    /// `cfg`; [`Error::LimitExceeded`] when a packed weight matrix exceeds
    /// `max_storage_buffer_binding_size`.
    pub fn new(ctx: &Context, cfg: &RnnConfig, weights: &Weights) -> Result<Rnn> {
        if weights.config() != cfg {
            return Err(Error::InvalidConfig(format!(
                "weights were made for {:?}, model configured as {:?}",
                weights.config(),
                cfg
            )));
        }
        weights.validate()?;
        let lim = binding_limit(ctx);
        let (g, h, st) = (cfg.gate_count(), cfg.hidden_size(), cfg.state_size());
        let dirs = cfg.num_directions();
        let mut layers = Vec::with_capacity(cfg.num_layers() * dirs);
        let mut layer_cfgs = Vec::with_capacity(cfg.num_layers());
        for l in 0..cfg.num_layers() {
            let lcfg = cfg.layer_config(l);
            let i = lcfg.input_size();
            for (name, words) in [
                (format!("weight_ih_l{l}"), g * h * i),
                (format!("weight_hh_l{l}"), g * h * st),
            ] {
                let bytes = words as u64 * 4;
                if bytes > lim.1 {
                    return Err(Error::LimitExceeded {
                        limit: lim.0,
                        what: format!("packed `{name}`"),
                        needed: bytes,
                        allowed: lim.1,
                    });
                }
            }
            for d in 0..dirs {
                let w = weights.layer(l, d)?;
                layers.push(ctx.scoped(|| pack_layer(ctx, &lcfg, w))?);
            }
            layer_cfgs.push(lcfg);
        }
        Ok(Rnn {
            ctx: ctx.clone(),
            cfg: cfg.clone(),
            layers,
            layer_cfgs,
            id: NEXT_MODEL_ID.fetch_add(1, Ordering::Relaxed),
            max_chunk_steps: None,
            dropout_draws: AtomicU64::new(0),
        })
    }

    /// The parameters on the GPU, in the packed layout gradients share (see
    /// [`crate::gpu::pack`]): for each layer-direction in PyTorch's order (`l0`, `l0_reverse`,
    /// `l1`, ...): `W_ih^T (I_l, H*G)`, `W_hh^T (S, H*G)`, biases `(2, H*G)`, `W_hr^T (H, P)`,
    /// peepholes `(3H)`, the last three only when the model has them. Same order as
    /// [`crate::gpu::ParamGrads::tensors`], so an optimiser can pair them up.
    pub fn parameters(&self) -> Vec<&GpuTensor> {
        self.layers
            .iter()
            .flat_map(|l| l.view().tensors())
            .collect()
    }

    /// Download the current parameters in PyTorch layout (e.g. after training).
    pub fn weights(&self) -> Result<Weights> {
        let layers = self
            .layers
            .iter()
            .enumerate()
            .map(|(j, l)| {
                l.view()
                    .to_host(&self.ctx, &self.layer_cfgs[j / self.dirs()])
            })
            .collect::<Result<Vec<_>>>()?;
        Weights::from_layers(&self.cfg, layers)
    }

    /// Cap the number of timesteps per chunk of the input projection (default: as many as
    /// fit the device). Lower it to trade scratch memory for one extra GEMM dispatch per chunk.
    pub fn with_max_chunk_steps(mut self, steps: usize) -> Result<Rnn> {
        if steps == 0 {
            return Err(Error::ZeroSize("max_chunk_steps"));
        }
        self.max_chunk_steps = Some(steps);
        Ok(self)
    }

    /// The configuration.
    pub fn config(&self) -> &RnnConfig {
        &self.cfg
    }
    /// The context the weights live on.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    pub(crate) fn dirs(&self) -> usize {
        self.cfg.num_directions()
    }

    /// Whether direction `d` of each layer runs backward in time.
    pub(crate) fn reversed(&self, d: usize) -> bool {
        match self.cfg.direction() {
            Direction::Forward => false,
            Direction::Reverse => true,
            Direction::Bidirectional => d == 1,
        }
    }

    pub(crate) fn time_map(&self, d: usize) -> TimeMap {
        if self.reversed(d) {
            TimeMap::Reverse
        } else {
            TimeMap::Same
        }
    }

    /// `[T, B, F]` or `[B, T, F]` in the model's layout.
    pub(crate) fn io_shape(&self, steps: usize, batch: usize, features: usize) -> [usize; 3] {
        match self.cfg.layout() {
            Layout::SeqMajor => [steps, batch, features],
            Layout::BatchFirst => [batch, steps, features],
        }
    }

    /// A tensor of the model's layout (input or output of the whole stack) as a [`View`].
    pub(crate) fn io_view<'a>(
        &self,
        buf: &'a wgpu::Buffer,
        plan: &Plan,
        features: usize,
    ) -> View<'a> {
        match self.cfg.layout() {
            Layout::SeqMajor => View::seq(buf, plan.batch, features),
            Layout::BatchFirst => View {
                buf,
                step: features,
                row: plan.steps * features,
                offset: 0,
            },
        }
    }

    /// The seed of the next training pass's dropout masks.
    pub(crate) fn dropout_seed(&self, given: Option<u64>) -> Option<u64> {
        if self.cfg.dropout() == 0.0 || self.cfg.num_layers() < 2 {
            return None;
        }
        Some(given.unwrap_or_else(|| {
            let n = self.dropout_draws.fetch_add(1, Ordering::Relaxed);
            crate::dropout::pcg(self.id as u32) as u64 ^ (n << 32 | n)
        }))
    }

    /// Forward pass over a whole sequence (inference: no dropout), recorded into one command
    /// encoder and submitted once. Returns without waiting; [`GpuTensor::download`] waits.
    ///
    /// Shapes (`L` layers, `D` directions, `S` state size): `x [T, B, I]` (`[B, T, I]`
    /// batch-first); `state.h [L*D, B, S]`, `state.c [L*D, B, H]` (zeros when `state` is
    /// `None`). Returns `y [T, B, D*S]` (or `[B, T, D*S]`), `h_n [L*D, B, S]`,
    /// `c_n [L*D, B, H]`.
    ///
    /// Errors: [`Error::ZeroSize`] for `T = 0` or `B = 0`, [`Error::ShapeMismatch`],
    /// [`Error::LimitExceeded`] when a sequence exceeds `max_storage_buffer_binding_size` or a
    /// dispatch would exceed `max_compute_workgroups_per_dimension`, [`Error::Gpu`] if wgpu
    /// reports an error anyway.
    pub fn forward(&self, x: &GpuTensor, state: Option<&State>) -> Result<Output> {
        self.forward_with(x, state, &RunOptions::default())
    }

    /// [`Rnn::forward`] with per-row lengths (see [`RunOptions`]): outputs past a row's length
    /// are exactly zero, `h_n`/`c_n` come from each row's last valid step, and the reverse
    /// direction starts at each row's own last step.
    ///
    /// Errors as [`Rnn::forward`], plus [`Error::ShapeMismatch`] for `lengths` not of `B`
    /// entries or an entry over `T`, and [`Error::ZeroSize`] for a zero entry.
    pub fn forward_with(
        &self,
        x: &GpuTensor,
        state: Option<&State>,
        opts: &RunOptions<'_>,
    ) -> Result<Output> {
        let plan = self.plan(x, state, opts.lengths)?;
        let out = self.alloc_output(&plan)?;
        let lengths = self.lengths_tensor(&plan, opts.lengths)?;
        self.ctx.scoped(|| {
            let mut enc =
                self.ctx
                    .device()
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("rnn forward"),
                    });
            self.record_stack(&mut enc, x, state, &out, &lengths, &plan, None)?;
            self.ctx.submit(enc.finish());
            Ok(())
        })?;
        Ok(out)
    }

    pub(crate) fn alloc_output(&self, plan: &Plan) -> Result<Output> {
        let (t, b) = (plan.steps, plan.batch);
        let (h, st, ld) = (
            self.cfg.hidden_size(),
            self.cfg.state_size(),
            self.cfg.num_layers() * self.dirs(),
        );
        Ok(Output {
            y: GpuTensor::uninit(&self.ctx, "y", &self.io_shape(t, b, self.dirs() * st))?,
            h_n: GpuTensor::uninit(&self.ctx, "h_n", &[ld, b, st])?,
            c_n: match self.cfg.cell() {
                CellKind::Lstm => Some(GpuTensor::uninit(&self.ctx, "c_n", &[ld, b, h])?),
                _ => None,
            },
        })
    }

    /// Row lengths as the kernels read them: `[B]` f32 (whole numbers; `T` when not given).
    pub(crate) fn lengths_tensor(
        &self,
        plan: &Plan,
        lengths: Option<&[usize]>,
    ) -> Result<GpuTensor> {
        let v: Vec<f32> = match lengths {
            Some(l) => l.iter().map(|&n| n as f32).collect(),
            None => vec![plan.steps as f32; plan.batch],
        };
        GpuTensor::upload(&self.ctx, &v, &[plan.batch])
    }

    /// Record a forward pass into the caller's encoder (nothing is submitted), writing into
    /// caller-provided outputs of the shapes [`Rnn::forward`] returns.
    pub fn record_forward(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        x: &GpuTensor,
        state: Option<&State>,
        out: &Output,
    ) -> Result<()> {
        let plan = self.plan(x, state, None)?;
        self.check_output(out, &plan)?;
        let lengths = self.lengths_tensor(&plan, None)?;
        self.record_stack(encoder, x, state, out, &lengths, &plan, None)
            .map(|_| ())
    }

    pub(crate) fn check_output(&self, out: &Output, plan: &Plan) -> Result<()> {
        let (t, b) = (plan.steps, plan.batch);
        let st = self.cfg.state_size();
        let ld = self.cfg.num_layers() * self.dirs();
        check_shape("y", &out.y, &self.io_shape(t, b, self.dirs() * st))?;
        check_shape("h_n", &out.h_n, &[ld, b, st])?;
        self.check_cell_state("c_n", out.c_n.as_ref(), b)
    }

    /// Blocking convenience on host slices: upload, forward, download.
    ///
    /// Shapes: `x [T, B, I]` (or `[B, T, I]`) flattened, `h0 [L*D, B, S]`, `c0 [L*D, B, H]`
    /// flattened (zeros when `None`).
    pub fn forward_host(
        &self,
        x: &[f32],
        steps: usize,
        batch: usize,
        h0: Option<&[f32]>,
        c0: Option<&[f32]>,
    ) -> Result<HostOutput> {
        let (i, h) = (self.cfg.input_size(), self.cfg.hidden_size());
        if steps == 0 {
            return Err(Error::ZeroSize("T (timesteps)"));
        }
        if batch == 0 {
            return Err(Error::ZeroSize("B (batch)"));
        }
        let ld = self.cfg.num_layers() * self.dirs();
        let xt = GpuTensor::upload(&self.ctx, x, &self.io_shape(steps, batch, i))
            .map_err(|e| rename(e, "x"))?;
        let state = match (h0, c0) {
            (None, None) => None,
            (h0, c0) => {
                let st = self.cfg.state_size();
                let zeros = vec![0.0; ld * batch * h.max(st)];
                let h0 = GpuTensor::upload(
                    &self.ctx,
                    h0.unwrap_or(&zeros[..ld * batch * st]),
                    &[ld, batch, st],
                )
                .map_err(|e| rename(e, "h0"))?;
                let c0 = match (self.cfg.cell(), c0) {
                    (CellKind::Lstm, c0) => Some(
                        GpuTensor::upload(
                            &self.ctx,
                            c0.unwrap_or(&zeros[..ld * batch * h]),
                            &[ld, batch, h],
                        )
                        .map_err(|e| rename(e, "c0"))?,
                    ),
                    (_, None) => None,
                    (_, Some(c0)) => {
                        return Err(Error::ShapeMismatch {
                            name: "c0".into(),
                            expected: vec![],
                            got: vec![c0.len()],
                        });
                    }
                };
                Some(State { h: h0, c: c0 })
            }
        };
        let out = self.forward(&xt, state.as_ref())?;
        Ok(HostOutput {
            y: out.y.download(&self.ctx)?,
            h_n: out.h_n.download(&self.ctx)?,
            c_n: download_optional(&self.ctx, out.c_n.as_ref())?,
        })
    }

    /// An LSTM needs a cell-state tensor `[L*D, B, H]`; other cells have none, and one given
    /// is an error rather than silently ignored.
    pub(crate) fn check_cell_state(
        &self,
        name: &str,
        c: Option<&GpuTensor>,
        b: usize,
    ) -> Result<()> {
        let h = self.cfg.hidden_size();
        let ld = self.cfg.num_layers() * self.dirs();
        match (self.cfg.cell(), c) {
            (CellKind::Lstm, Some(c)) => check_shape(name, c, &[ld, b, h]),
            (_, None) if self.cfg.cell() != CellKind::Lstm => Ok(()),
            (_, c) => Err(Error::ShapeMismatch {
                name: name.into(),
                expected: if self.cfg.cell() == CellKind::Lstm {
                    vec![ld, b, h]
                } else {
                    vec![]
                },
                got: c.map(|c| c.shape().to_vec()).unwrap_or_default(),
            }),
        }
    }

    /// Validate the inputs and cut time into chunks that fit the device.
    pub(crate) fn plan(
        &self,
        x: &GpuTensor,
        state: Option<&State>,
        lengths: Option<&[usize]>,
    ) -> Result<Plan> {
        let (i, h, g) = (
            self.cfg.input_size(),
            self.cfg.hidden_size(),
            self.cfg.gate_count(),
        );
        let shape = x.shape();
        if shape.len() != 3 || shape[2] != i {
            return Err(Error::ShapeMismatch {
                name: "x".into(),
                expected: vec![
                    shape.first().copied().unwrap_or(0),
                    shape.get(1).copied().unwrap_or(0),
                    i,
                ],
                got: shape.to_vec(),
            });
        }
        let (t, b) = match self.cfg.layout() {
            Layout::SeqMajor => (shape[0], shape[1]),
            Layout::BatchFirst => (shape[1], shape[0]),
        };
        if t == 0 {
            return Err(Error::ZeroSize("T (timesteps)"));
        }
        if b == 0 {
            return Err(Error::ZeroSize("B (batch)"));
        }
        let st = self.cfg.state_size();
        let ld = self.cfg.num_layers() * self.dirs();
        if let Some(s) = state {
            check_shape("h0", &s.h, &[ld, b, st])?;
            self.check_cell_state("c0", s.c.as_ref(), b)?;
        }
        crate::cpu::check_lengths(lengths, t, b)?;
        // Lengths and step indices travel as f32 whole numbers.
        if t > 1 << 24 {
            return Err(Error::LimitExceeded {
                limit: "2^24 timesteps (lengths are exact f32 integers)",
                what: "T (timesteps)".into(),
                needed: t as u64,
                allowed: 1 << 24,
            });
        }
        let lim = binding_limit(&self.ctx);
        let too_big = |what: &str, bytes: u64| {
            if bytes > lim.1 {
                Err(Error::LimitExceeded {
                    limit: lim.0,
                    what: what.into(),
                    needed: bytes,
                    allowed: lim.1,
                })
            } else {
                Ok(())
            }
        };
        let widest_in = (0..self.cfg.num_layers())
            .map(|l| self.cfg.layer_input_size(l))
            .max()
            .unwrap_or(i);
        too_big("x", (t * b * i) as u64 * 4)?;
        too_big("a layer's input", (t * b * widest_in) as u64 * 4)?;
        too_big("y", (t * b * h.max(st) * self.dirs()) as u64 * 4)?;
        if self.cfg.proj_size().is_some() {
            // The projected states [h0; y] and, for the projection GEMMs, h_raw.
            too_big(
                "projected states",
                ((t + 1) * b * st + 3 * h + b) as u64 * 4,
            )?;
        }
        let gx_step_bytes = (b * g * h) as u64 * 4;
        too_big(
            "one timestep of the input projection (B x 4H)",
            gx_step_bytes,
        )?;
        step_grid(&self.ctx, StepTiling::for_batch(b, 16), b, h)?;
        let max_wg = self.ctx.limits().max_compute_workgroups_per_dimension as u64;
        let gemm_cols = ((g * h) as u64).div_ceil(GEMM_TILE as u64);
        if gemm_cols > max_wg {
            return Err(Error::LimitExceeded {
                limit: "max_compute_workgroups_per_dimension",
                what: "input projection columns (4H / 64)".into(),
                needed: gemm_cols,
                allowed: max_wg,
            });
        }
        let rows_fit = max_wg * GEMM_TILE as u64 / b as u64;
        if rows_fit == 0 {
            return Err(Error::LimitExceeded {
                limit: "max_compute_workgroups_per_dimension",
                what: "input projection rows for one timestep (B / 64)".into(),
                needed: (b as u64).div_ceil(GEMM_TILE as u64),
                allowed: max_wg,
            });
        }
        let mem_fit = lim.1.min(GX_BUDGET_BYTES).max(gx_step_bytes) / gx_step_bytes;
        let chunk = (t as u64)
            .min(mem_fit)
            .min(rows_fit)
            .min(self.max_chunk_steps.unwrap_or(usize::MAX) as u64) as usize;
        Ok(Plan {
            steps: t,
            batch: b,
            chunk,
        })
    }

    /// Record the forward schedule of the whole stack (module docs). `train`: the tape buffers
    /// of every layer-direction (`l*D + d`) and the dropout seed. Returns every
    /// layer-direction's frame, which a training pass keeps for backward.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record_stack(
        &self,
        enc: &mut wgpu::CommandEncoder,
        x: &GpuTensor,
        state: Option<&State>,
        out: &Output,
        lengths: &GpuTensor,
        plan: &Plan,
        train: Option<(&[TapeBuffers<'_>], Option<u64>)>,
    ) -> Result<Vec<Frame>> {
        let ctx = &self.ctx;
        let (t, b) = (plan.steps, plan.batch);
        let (h, st, dirs, layers) = (
            self.cfg.hidden_size(),
            self.cfg.state_size(),
            self.dirs(),
            self.cfg.num_layers(),
        );
        let lstm = self.cfg.cell() == CellKind::Lstm;
        let seq_major = self.cfg.layout() == Layout::SeqMajor;
        let seed = train.and_then(|t| t.1);
        let mut frames: Vec<Frame> = Vec::with_capacity(layers * dirs);
        let mut layer_in = x.clone();
        for l in 0..layers {
            let lcfg = &self.layer_cfgs[l];
            let i_l = lcfg.input_size();
            let last = l + 1 == layers;
            let dropout = seed.is_some() && !last;
            let in_view = match l {
                0 => self.io_view(layer_in.buffer(), plan, i_l),
                _ => View::seq(layer_in.buffer(), b, i_l),
            };
            let layer_out = match last {
                true => out.y.clone(),
                false => GpuTensor::uninit(ctx, "layer output", &[t, b, dirs * st])?,
            };
            let out_view = match last {
                true => self.io_view(layer_out.buffer(), plan, dirs * st),
                false => View::seq(layer_out.buffer(), b, dirs * st),
            };
            // A frame may be the layer's own input or output when no move is needed. The
            // output of a layer with dropout is dropped in place, so its frame stays apart.
            let direct_out = dirs == 1 && !self.reversed(0) && (!last || seq_major) && !dropout;
            let mut pass_in = compute_pass(enc, "rnn layer input");
            let mut c_states = Vec::with_capacity(dirs);
            for d in 0..dirs {
                let direct_in = !self.reversed(d) && (l > 0 || seq_major);
                let fx = match direct_in {
                    true => layer_in.clone(),
                    false => {
                        let f = GpuTensor::uninit(ctx, "frame x", &[t, b, i_l])?;
                        rearrange(
                            ctx,
                            &mut pass_in,
                            in_view,
                            View::seq(f.buffer(), b, i_l),
                            lengths.buffer(),
                            self.time_map(d),
                            (t, b, i_l),
                            false,
                        )?;
                        f
                    }
                };
                let fy = match direct_out {
                    true => layer_out.clone(),
                    false => GpuTensor::uninit(ctx, "frame y", &[t, b, st])?,
                };
                frames.push(Frame { x: fx, y: fy });
                c_states.push(match lstm {
                    true => Some(GpuTensor::uninit(ctx, "c_state", &[b, h])?),
                    false => None,
                });
            }
            drop(pass_in);
            let jobs: Vec<Job<'_>> = (0..dirs)
                .map(|d| {
                    let j = l * dirs + d;
                    Job {
                        cfg: lcfg,
                        layer: &self.layers[j],
                        frame: &frames[j],
                        h0: state.map(|s| (s.h.buffer(), (j * b * st) as u64 * 4)),
                        c0: state
                            .and_then(|s| s.c.as_ref())
                            .map(|c| (c.buffer(), (j * b * h) as u64 * 4)),
                        c_state: c_states[d].as_ref(),
                        lengths,
                        save: train.map(|t| t.0[j]),
                    }
                })
                .collect();
            self.record_layer(enc, &jobs, plan)?;
            drop(jobs);
            let mut pass_out = compute_pass(enc, "rnn layer output");
            for d in 0..dirs {
                let j = l * dirs + d;
                let fy = frames[j].y.buffer();
                if !direct_out {
                    rearrange(
                        ctx,
                        &mut pass_out,
                        View::seq(fy, b, st),
                        View {
                            offset: d * st,
                            ..out_view
                        },
                        lengths.buffer(),
                        self.time_map(d),
                        (t, b, st),
                        false,
                    )?;
                }
                rearrange(
                    ctx,
                    &mut pass_out,
                    View::seq(fy, b, st),
                    View {
                        buf: out.h_n.buffer(),
                        step: 0,
                        row: st,
                        offset: j * b * st,
                    },
                    lengths.buffer(),
                    TimeMap::Last,
                    (1, b, st),
                    false,
                )?;
            }
            if let (true, Some(seed)) = (dropout, seed) {
                let n = t * b * dirs * st;
                let p = self.cfg.dropout();
                record_dropout(ctx, &mut pass_out, layer_out.buffer(), n, seed, l, p)?;
            }
            drop(pass_out);
            if let Some(c_n) = &out.c_n {
                for (d, c) in c_states.iter().enumerate() {
                    let c = c.as_ref().expect("LSTM");
                    let at = ((l * dirs + d) * b * h) as u64 * 4;
                    enc.copy_buffer_to_buffer(c.buffer(), 0, c_n.buffer(), at, c.byte_size());
                }
            }
            layer_in = layer_out;
        }
        Ok(frames)
    }

    /// Record one layer: the runs of its directions (one or two [`Job`]s), interleaved step
    /// by step so that the two directions' dispatches are independent neighbours.
    fn record_layer(
        &self,
        enc: &mut wgpu::CommandEncoder,
        jobs: &[Job<'_>],
        plan: &Plan,
    ) -> Result<()> {
        let prepared = jobs
            .iter()
            .map(|job| self.prepare(enc, job, plan))
            .collect::<Result<Vec<_>>>()?;
        let ctx = &self.ctx;
        let (t_all, b) = (plan.steps, plan.batch);
        for t0 in (0..t_all).step_by(plan.chunk) {
            let tc = plan.chunk.min(t_all - t0);
            for p in &prepared {
                let (h, proj) = (p.job.cfg.hidden_size(), p.job.layer.w_hr.is_some());
                if t0 > 0 && !proj {
                    let bh_bytes = (b * h) as u64 * 4;
                    let last = (t0 - 1) as u64 * bh_bytes;
                    let y = p.job.frame.y.buffer();
                    enc.copy_buffer_to_buffer(y, last, p.h_carry.buffer(), 0, bh_bytes);
                }
            }
            let mut pass = compute_pass(enc, "rnn chunk");
            for p in &prepared {
                let (cfg, layer) = (p.job.cfg, p.job.layer);
                let (g, h, i) = (cfg.gate_count(), cfg.hidden_size(), cfg.input_size());
                // input_projection: gx = x[t0..t0+tc] · W_ih^T + b_ih (the step adds b_hh,
                // which a GRU's n gate needs inside r * (...)).
                gemm(
                    ctx,
                    &mut pass,
                    &Gemm {
                        bias: layer.bias.as_ref().map(|b| (b.buffer(), 1)),
                        a_row_offset: (t0 * b) as u32,
                        ..Gemm::new(
                            p.job.frame.x.buffer(),
                            layer.w_ih.buffer(),
                            p.gx.buffer(),
                            (tc * b, g * h, i),
                        )
                    },
                )?;
            }
            for t in t0..t0 + tc {
                for p in &prepared {
                    for step in &p.steps {
                        step.record(&mut pass, p.params.offset(t));
                    }
                    if let (Some(w_hr), Some(h_raw)) = (&p.job.layer.w_hr, &p.h_raw) {
                        // h_t = W_hr h_raw_t, into slot t + 1 of the projected states.
                        let (h, st) = (p.job.cfg.hidden_size(), p.job.cfg.state_size());
                        gemm(
                            ctx,
                            &mut pass,
                            &Gemm {
                                a_row_offset: (t * b) as u32,
                                c_row_offset: ((t + 1) * b) as u32,
                                ..Gemm::new(
                                    h_raw.buffer(),
                                    w_hr.buffer(),
                                    p.h_carry.buffer(),
                                    (b, st, h),
                                )
                            },
                        )?;
                    }
                }
            }
        }
        for p in &prepared {
            if p.job.layer.w_hr.is_none() {
                continue;
            }
            let st = p.job.cfg.state_size();
            let bs_bytes = (b * st) as u64 * 4;
            let ys = (t_all * b * st) as u64 * 4;
            let states = p.h_carry.buffer();
            enc.copy_buffer_to_buffer(states, bs_bytes, p.job.frame.y.buffer(), 0, ys);
            if let Some((_, y_proj)) = p.job.save.and_then(|s| s.projection) {
                enc.copy_buffer_to_buffer(states, 0, y_proj.buffer(), 0, ys + bs_bytes);
            }
        }
        Ok(())
    }

    /// A job's scratch buffers and bound step kernels; records its initial copies.
    fn prepare<'a>(
        &self,
        enc: &mut wgpu::CommandEncoder,
        job: &'a Job<'a>,
        plan: &Plan,
    ) -> Result<Prepared<'a>> {
        let ctx = &self.ctx;
        let cfg = job.cfg;
        let (g, h) = (cfg.gate_count(), cfg.hidden_size());
        let (t_all, b) = (plan.steps, plan.batch);
        let st = cfg.state_size();
        let bh_bytes = (b * h) as u64 * 4;
        let bs_bytes = (b * st) as u64 * 4;
        let proj = job.layer.w_hr.as_ref();
        let peep = job.layer.peephole.as_ref();
        let save = job.save;

        // Binding 3 of the step: h before a chunk's first step, or with a projection every
        // projected state [h0; h_0 .. h_{T-1}] (T + 1, B, P); then the peepholes, then the
        // row lengths.
        let state_words = match proj {
            Some(_) => (t_all + 1) * b * st,
            None => b * h,
        };
        let len_at = state_words + peep.map_or(0, |_| 3 * h);
        let h_carry = GpuTensor::uninit(ctx, "h_carry", &[len_at + b])?;
        if let Some((h0, at)) = job.h0 {
            enc.copy_buffer_to_buffer(h0, at, h_carry.buffer(), 0, bs_bytes);
            if let Some(s) = save {
                enc.copy_buffer_to_buffer(h0, at, s.h0.buffer(), 0, bs_bytes);
            }
        }
        if let Some(p) = peep {
            let at = state_words as u64 * 4;
            enc.copy_buffer_to_buffer(p.buffer(), 0, h_carry.buffer(), at, p.byte_size());
        }
        let lens = job.lengths;
        let len_bytes = lens.byte_size();
        enc.copy_buffer_to_buffer(
            lens.buffer(),
            0,
            h_carry.buffer(),
            len_at as u64 * 4,
            len_bytes,
        );
        // The tape carries the peepholes and the lengths after the saved pre-activations,
        // where the step-backward kernel reads them.
        if let Some(s) = save {
            let at = s.tape_words as u64 * 4;
            if let Some(p) = peep {
                enc.copy_buffer_to_buffer(p.buffer(), 0, s.pre.buffer(), at, p.byte_size());
            }
            let at = at + peep.map_or(0, |p| p.byte_size());
            enc.copy_buffer_to_buffer(lens.buffer(), 0, s.pre.buffer(), at, len_bytes);
        }
        // With a projection the step writes h_raw = o * h(c) (T, B, H) for the projection GEMM
        // (and for backward, through the tape).
        let h_raw = match (proj, save.and_then(|s| s.projection)) {
            (None, _) => None,
            (Some(_), Some((r, _))) => Some(r.clone()),
            (Some(_), None) => Some(GpuTensor::uninit(ctx, "h_raw", &[t_all, b, h])?),
        };
        // GRU reset-before: r * h_prev of every step, the second product's input.
        let reset_products = match (cfg.gru_reset(), save.and_then(|s| s.reset_products)) {
            (GruReset::After, _) => None,
            (GruReset::Before, Some(r)) => Some(r.clone()),
            (GruReset::Before, None) => Some(GpuTensor::uninit(ctx, "r*h", &[t_all, b, h])?),
        };
        if let Some(c_state) = job.c_state {
            match job.c0 {
                Some((c0, at)) => enc.copy_buffer_to_buffer(c0, at, c_state.buffer(), 0, bh_bytes),
                None => enc.clear_buffer(c_state.buffer(), 0, Some(bh_bytes)),
            }
        }
        // The tape's history starts with c0 (LSTM) or h0 (GRU).
        if let Some(s) = save {
            match (cfg.cell(), job.c_state) {
                (CellKind::Lstm, Some(c)) => {
                    enc.copy_buffer_to_buffer(c.buffer(), 0, s.history.buffer(), 0, bh_bytes)
                }
                (CellKind::Gru, _) => {
                    enc.copy_buffer_to_buffer(h_carry.buffer(), 0, s.history.buffer(), 0, bh_bytes)
                }
                _ => {}
            }
        }

        let params: Vec<StepParams> = (0..t_all)
            .map(|t| StepParams {
                batch: b as u32,
                hidden: h as u32,
                t_local: (t % plan.chunk) as u32,
                t_global: t as u32,
                state: st as u32,
                steps: t_all as u32,
                len_at: len_at as u32,
                _pad: 0,
            })
            .collect();
        let params = UniformSlots::new(ctx, "rnn_step params", &params);
        let gx = GpuTensor::uninit(ctx, "gx", &[plan.chunk, b, g * h])?;
        let bufs = StepBuffers {
            params: &params,
            gx: gx.buffer(),
            w_hh: job.layer.w_hh.buffer(),
            h_carry: h_carry.buffer(),
            bias: job.layer.bias.as_ref().map(GpuTensor::buffer),
            y: h_raw.as_ref().unwrap_or(&job.frame.y).buffer(),
            c_state: job
                .c_state
                .or(reset_products.as_ref())
                .map(GpuTensor::buffer),
            tape: save.map(|s| (s.pre.buffer(), s.history.buffer())),
        };
        // A GRU with the reset gate before the product needs two dispatches per step.
        let steps = match cfg.gru_reset() {
            GruReset::After => vec![RnnStep::new(ctx, cfg, b, 0, &bufs)?],
            GruReset::Before => vec![
                RnnStep::new(ctx, cfg, b, 1, &bufs)?,
                RnnStep::new(ctx, cfg, b, 2, &bufs)?,
            ],
        };
        Ok(Prepared {
            job,
            h_carry,
            h_raw,
            params,
            gx,
            steps,
        })
    }
}

/// Pack and upload one layer-direction's PyTorch-layout weights.
fn pack_layer(ctx: &Context, cfg: &RnnConfig, w: &LayerWeights) -> Result<PackedLayer> {
    let (g, h, i, st) = (
        cfg.gate_count(),
        cfg.hidden_size(),
        cfg.input_size(),
        cfg.state_size(),
    );
    Ok(PackedLayer {
        w_ih: GpuTensor::upload(
            ctx,
            &pack_gate_interleaved(&w.weight_ih, g, h, i)?,
            &[i, g * h],
        )?,
        w_hh: GpuTensor::upload(
            ctx,
            &pack_gate_interleaved(&w.weight_hh, g, h, st)?,
            &[st, g * h],
        )?,
        bias: match (&w.bias_ih, &w.bias_hh) {
            (Some(bi), Some(bh)) => Some(GpuTensor::upload(
                ctx,
                &pack_biases(bi, bh, g, h)?,
                &[2, g * h],
            )?),
            _ => None,
        },
        w_hr: match (&w.weight_hr, cfg.proj_size()) {
            // PyTorch's [P, H] transposed to [H, P]: h = h_raw · W_hr^T is a plain GEMM.
            (Some(wr), Some(p)) => Some(GpuTensor::upload(ctx, &transpose(wr, p, h), &[h, p])?),
            _ => None,
        },
        peephole: match &w.peephole {
            Some(p) => Some(GpuTensor::upload(ctx, p, &[3 * h])?),
            None => None,
        },
    })
}

/// Where a training forward pass saves one layer-direction's tape (see [`crate::gpu::Tape`]).
#[derive(Clone, Copy)]
pub(crate) struct TapeBuffers<'a> {
    /// `[T, B, H, S]` pre-activations, then the peepholes, then the row lengths.
    pub pre: &'a GpuTensor,
    /// Words of `pre` before the peepholes: `T * B * H * S`.
    pub tape_words: usize,
    /// `[T + 1, B, H]` LSTM c / GRU h history.
    pub history: &'a GpuTensor,
    /// `[B, S]` a copy of the initial state.
    pub h0: &'a GpuTensor,
    /// With a projection: `h_raw [T, B, H]` and the projected states `[T + 1, B, P]`.
    pub projection: Option<(&'a GpuTensor, &'a GpuTensor)>,
    /// GRU reset-before: `r * h_prev` of every step, `[T, B, H]`.
    pub reset_products: Option<&'a GpuTensor>,
}

/// `m [rows, cols]` row-major, transposed to `[cols, rows]`.
pub(crate) fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; m.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = m[r * cols + c];
        }
    }
    out
}

/// Split a packed `[2, H*G]` bias buffer into PyTorch-layout `b_ih`, `b_hh`.
pub(crate) fn unpack_biases(
    packed: &[f32],
    gates: usize,
    hidden: usize,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let (bi, bh) = packed.split_at(packed.len() / 2);
    Ok((
        unpack_gate_interleaved(bi, gates, hidden, 1)?,
        unpack_gate_interleaved(bh, gates, hidden, 1)?,
    ))
}

/// The tighter of the two limits a bound buffer must respect, with its name.
pub(crate) fn binding_limit(ctx: &Context) -> (&'static str, u64) {
    let l = ctx.limits();
    if l.max_storage_buffer_binding_size <= l.max_buffer_size {
        (
            "max_storage_buffer_binding_size",
            l.max_storage_buffer_binding_size,
        )
    } else {
        ("max_buffer_size", l.max_buffer_size)
    }
}

pub(crate) fn check_shape(name: &str, t: &GpuTensor, expected: &[usize]) -> Result<()> {
    if t.shape() != expected {
        return Err(Error::ShapeMismatch {
            name: name.into(),
            expected: expected.to_vec(),
            got: t.shape().to_vec(),
        });
    }
    Ok(())
}

/// Give an upload's shape error the name of the argument it came from.
fn rename(e: Error, name: &str) -> Error {
    match e {
        Error::ShapeMismatch { expected, got, .. } => Error::ShapeMismatch {
            name: name.into(),
            expected,
            got,
        },
        other => other,
    }
}
