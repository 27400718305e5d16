//! `Rnn`: packed weights on the GPU and the forward schedule.
//!
//! Schedule of one forward pass (one command encoder, one submission):
//! 1. `h_carry <- h0`, `c_state <- c0` (buffer copies, or clears when no state is given);
//! 2. for each time chunk `[t0, t0 + Tc)`:
//!    - `gx <- x[t0..t0+Tc] · W_ih^T + b` — one GEMM over all `Tc*B` rows (`input_projection`);
//!    - `Tc` dispatches of `rnn_step`, each reading `y[t-1]` (or `h_carry`) and writing `y[t]`;
//!    - `h_carry <- y[t0 + Tc - 1]` for the next chunk;
//! 3. `h_n <- y[T-1]`; `c_n` is `c_state`.
//!
//! Time is chunked only so the input projection `gx` (`4H/I` times larger than `x`) fits the
//! device's storage-binding limit and a bounded scratch budget; with room, one chunk covers all
//! of `T`.

use crate::config::CellKind;
use crate::config::RnnConfig;
use crate::error::{Error, Result};
use crate::gpu::context::Context;
use crate::gpu::gemm::{GEMM_TILE, Gemm, gemm};
use crate::gpu::pack::{pack_biases, pack_gate_interleaved, unpack_gate_interleaved};
use crate::gpu::rnn_step::{RnnStep, StepBuffers, StepParams, StepTiling, step_grid};
use crate::gpu::tensor::{GpuTensor, download_optional};
use crate::gpu::uniforms::UniformSlots;
use crate::weights::{LayerWeights, Weights};
use std::sync::atomic::{AtomicU64, Ordering};

/// Scratch budget for one chunk of the input projection. Large enough that every DeepBench
/// row runs in a single chunk; small enough to leave room beside the model on 4 GB devices.
const GX_BUDGET_BYTES: u64 = 256 << 20;

/// Recurrent state of every layer and direction.
///
/// Shapes: `h` is `[layers*dirs, B, H]`, `c` is `[layers*dirs, B, H]` (LSTM only).
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
    /// `[T, B, H*dirs]`: the last layer's `h_t` for every step.
    pub y: GpuTensor,
    /// `[layers*dirs, B, H]`: final hidden state.
    pub h_n: GpuTensor,
    /// `[layers*dirs, B, H]`: final cell state (LSTM).
    pub c_n: Option<GpuTensor>,
}

/// Results of [`Rnn::forward_host`], on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostOutput {
    /// `[T, B, H*dirs]`.
    pub y: Vec<f32>,
    /// `[layers*dirs, B, H]`.
    pub h_n: Vec<f32>,
    /// `[layers*dirs, B, H]` (LSTM).
    pub c_n: Option<Vec<f32>>,
}

/// One layer-direction's parameters in GPU layout (see [`crate::gpu::pack`]). Gradients use
/// the same layout, so optimisers update parameters element-wise.
pub(crate) struct PackedLayer {
    /// `[I, H*G]`: `W_ih^T`, gate-interleaved.
    pub w_ih: GpuTensor,
    /// `[H, H*G]`: `W_hh^T`, gate-interleaved.
    pub w_hh: GpuTensor,
    /// `[2, H*G]`: `b_ih` and `b_hh`, gate-interleaved (`None` without bias).
    pub bias: Option<GpuTensor>,
    /// `[H, P]`: `W_hr^T`, the LSTM projection (`None` without `proj_size`).
    pub w_hr: Option<GpuTensor>,
    /// `[3H]`: LSTM peepholes `p_i | p_f | p_o`, PyTorch-like layout (`None` without).
    pub peephole: Option<GpuTensor>,
}

/// Unique id of each model, so a tape can be matched to the model that recorded it.
static NEXT_MODEL_ID: AtomicU64 = AtomicU64::new(1);

/// A recurrent network whose weights live on the GPU.
pub struct Rnn {
    pub(crate) ctx: Context,
    pub(crate) cfg: RnnConfig,
    pub(crate) layer: PackedLayer,
    pub(crate) id: u64,
    max_chunk_steps: Option<usize>,
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
        if cfg.num_layers() != 1
            || cfg.direction() != crate::config::Direction::Forward
            || cfg.layout() != crate::config::Layout::SeqMajor
        {
            return Err(Error::Unsupported(format!(
                "the GPU path runs one forward layer in seq-major layout so far, not {} \
                 layers, {:?}, {:?}",
                cfg.num_layers(),
                cfg.direction(),
                cfg.layout()
            )));
        }
        weights.validate()?;
        let (g, h, i) = (cfg.gate_count(), cfg.hidden_size(), cfg.input_size());
        let lim = binding_limit(ctx);
        let st = cfg.state_size();
        for (name, words) in [("weight_ih_l0", g * h * i), ("weight_hh_l0", g * h * st)] {
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
        let w = weights.layer(0, 0);
        let layer = ctx.scoped(|| {
            Ok(PackedLayer {
                w_ih: GpuTensor::upload(
                    ctx,
                    &pack_gate_interleaved(&w.weight_ih, g, h, i),
                    &[i, g * h],
                )?,
                w_hh: GpuTensor::upload(
                    ctx,
                    &pack_gate_interleaved(&w.weight_hh, g, h, cfg.state_size()),
                    &[cfg.state_size(), g * h],
                )?,
                bias: match (&w.bias_ih, &w.bias_hh) {
                    (Some(bi), Some(bh)) => Some(GpuTensor::upload(
                        ctx,
                        &pack_biases(bi, bh, g, h),
                        &[2, g * h],
                    )?),
                    _ => None,
                },
                w_hr: match (&w.weight_hr, cfg.proj_size()) {
                    // PyTorch's [P, H] transposed to [H, P]: h = h_raw · W_hr^T is a plain GEMM.
                    (Some(wr), Some(p)) => {
                        Some(GpuTensor::upload(ctx, &transpose(wr, p, h), &[h, p])?)
                    }
                    _ => None,
                },
                peephole: match &w.peephole {
                    Some(p) => Some(GpuTensor::upload(ctx, p, &[3 * h])?),
                    None => None,
                },
            })
        })?;
        Ok(Rnn {
            ctx: ctx.clone(),
            cfg: cfg.clone(),
            layer,
            id: NEXT_MODEL_ID.fetch_add(1, Ordering::Relaxed),
            max_chunk_steps: None,
        })
    }

    /// The parameters on the GPU, in the packed layout gradients share (see
    /// [`crate::gpu::pack`]): `[W_ih^T (I, H*G), W_hh^T (H, H*G), biases (2, H*G),
    /// peepholes (3H)]`, the last two only when the model has them. Same order as
    /// [`crate::gpu::ParamGrads::tensors`], so an optimiser can pair them up.
    pub fn parameters(&self) -> Vec<&GpuTensor> {
        let mut v = vec![&self.layer.w_ih, &self.layer.w_hh];
        v.extend(self.layer.bias.as_ref());
        v.extend(self.layer.w_hr.as_ref());
        v.extend(self.layer.peephole.as_ref());
        v
    }

    /// Download the current parameters in PyTorch layout (e.g. after training).
    pub fn weights(&self) -> Result<Weights> {
        let (g, h, i) = (
            self.cfg.gate_count(),
            self.cfg.hidden_size(),
            self.cfg.input_size(),
        );
        let l = &self.layer;
        let (bias_ih, bias_hh) = match &l.bias {
            Some(b) => {
                let (bi, bh) = unpack_biases(&b.download(&self.ctx)?, g, h);
                (Some(bi), Some(bh))
            }
            None => (None, None),
        };
        Weights::from_layers(
            &self.cfg,
            vec![LayerWeights {
                weight_ih: unpack_gate_interleaved(&l.w_ih.download(&self.ctx)?, g, h, i),
                weight_hh: unpack_gate_interleaved(
                    &l.w_hh.download(&self.ctx)?,
                    g,
                    h,
                    self.cfg.state_size(),
                ),
                bias_ih,
                bias_hh,
                weight_hr: match &l.w_hr {
                    Some(w) => Some(transpose(&w.download(&self.ctx)?, h, w.shape()[1])),
                    None => None,
                },
                peephole: match &l.peephole {
                    Some(p) => Some(p.download(&self.ctx)?),
                    None => None,
                },
            }],
        )
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

    /// Forward pass over a whole sequence, recorded into one command encoder and submitted
    /// once. Returns without waiting; [`GpuTensor::download`] waits.
    ///
    /// Shapes: `x [T, B, I]`; `state.h`, `state.c` `[1, B, H]` (zeros when `state` is `None`).
    /// Returns `y [T, B, H]`, `h_n [1, B, H]`, `c_n [1, B, H]`.
    ///
    /// Errors: [`Error::ZeroSize`] for `T = 0` or `B = 0`, [`Error::ShapeMismatch`],
    /// [`Error::LimitExceeded`] when `x` or `y` exceed `max_storage_buffer_binding_size` or a
    /// dispatch would exceed `max_compute_workgroups_per_dimension`, [`Error::Gpu`] if wgpu
    /// reports an error anyway.
    pub fn forward(&self, x: &GpuTensor, state: Option<&State>) -> Result<Output> {
        let plan = self.plan(x, state)?;
        let (t, b, h) = (plan.steps, plan.batch, self.cfg.hidden_size());
        let st = self.cfg.state_size();
        let out = Output {
            y: GpuTensor::uninit(&self.ctx, "y", &[t, b, st])?,
            h_n: GpuTensor::uninit(&self.ctx, "h_n", &[1, b, st])?,
            c_n: match self.cfg.cell() {
                CellKind::Lstm => Some(GpuTensor::uninit(&self.ctx, "c_n", &[1, b, h])?),
                _ => None,
            },
        };
        self.ctx.scoped(|| {
            let mut enc =
                self.ctx
                    .device()
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("rnn forward"),
                    });
            self.record(&mut enc, x, state, &out, &plan, None)?;
            self.ctx.submit(enc.finish());
            Ok(())
        })?;
        Ok(out)
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
        let plan = self.plan(x, state)?;
        let (t, b) = (plan.steps, plan.batch);
        let st = self.cfg.state_size();
        check_shape("y", &out.y, &[t, b, st])?;
        check_shape("h_n", &out.h_n, &[1, b, st])?;
        self.check_cell_state("c_n", out.c_n.as_ref(), b)?;
        self.record(encoder, x, state, out, &plan, None)
    }

    /// Blocking convenience on host slices: upload, forward, download.
    ///
    /// Shapes: `x [T, B, I]` flattened, `h0`/`c0` `[1, B, H]` flattened (zeros when `None`).
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
        let xt = GpuTensor::upload(&self.ctx, x, &[steps, batch, i]).map_err(|e| rename(e, "x"))?;
        let state = match (h0, c0) {
            (None, None) => None,
            (h0, c0) => {
                let zeros = vec![0.0; batch * h];
                let st = self.cfg.state_size();
                let h0 = GpuTensor::upload(
                    &self.ctx,
                    h0.unwrap_or(&zeros[..batch * st]),
                    &[1, batch, st],
                )
                .map_err(|e| rename(e, "h0"))?;
                let c0 = match (self.cfg.cell(), c0) {
                    (CellKind::Lstm, c0) => Some(
                        GpuTensor::upload(&self.ctx, c0.unwrap_or(&zeros), &[1, batch, h])
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

    /// An LSTM needs a cell-state tensor `[1, B, H]`; other cells have none, and one given is
    /// an error rather than silently ignored.
    fn check_cell_state(&self, name: &str, c: Option<&GpuTensor>, b: usize) -> Result<()> {
        let h = self.cfg.hidden_size();
        match (self.cfg.cell(), c) {
            (CellKind::Lstm, Some(c)) => check_shape(name, c, &[1, b, h]),
            (_, None) if self.cfg.cell() != CellKind::Lstm => Ok(()),
            (_, c) => Err(Error::ShapeMismatch {
                name: name.into(),
                expected: if self.cfg.cell() == CellKind::Lstm {
                    vec![1, b, h]
                } else {
                    vec![]
                },
                got: c.map(|c| c.shape().to_vec()).unwrap_or_default(),
            }),
        }
    }

    /// Validate the inputs and cut time into chunks that fit the device.
    pub(crate) fn plan(&self, x: &GpuTensor, state: Option<&State>) -> Result<Plan> {
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
        let (t, b) = (shape[0], shape[1]);
        if t == 0 {
            return Err(Error::ZeroSize("T (timesteps)"));
        }
        if b == 0 {
            return Err(Error::ZeroSize("B (batch)"));
        }
        if let Some(s) = state {
            check_shape("h0", &s.h, &[1, b, self.cfg.state_size()])?;
            self.check_cell_state("c0", s.c.as_ref(), b)?;
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
        too_big("x", (t * b * i) as u64 * 4)?;
        too_big("y", (t * b * h) as u64 * 4)?;
        if self.cfg.proj_size().is_some() {
            // The projected states [h0; y] and, for the projection GEMMs, h_raw.
            too_big(
                "projected states",
                ((t + 1) * b * self.cfg.state_size() + 3 * h) as u64 * 4,
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

    /// Record the forward schedule; with `save` the step kernels also write the tape backward
    /// needs: pre-activations, the c/h history and, with a projection, `h_raw` and the
    /// projected states `[h0; h_0 .. h_{T-1}]`.
    pub(crate) fn record(
        &self,
        enc: &mut wgpu::CommandEncoder,
        x: &GpuTensor,
        state: Option<&State>,
        out: &Output,
        plan: &Plan,
        save: Option<TapeBuffers<'_>>,
    ) -> Result<()> {
        let tape = save.map(|s| (s.pre, s.history));
        let projected = save.and_then(|s| s.projection).map(|p| p.0);
        let tape_states = save.and_then(|s| s.projection).map(|p| p.1);
        // GRU reset-before: r * h_prev of every step, the second product's input.
        let reset_before = self.cfg.gru_reset() == crate::config::GruReset::Before;
        let rh_own;
        let reset_products = match (reset_before, save.and_then(|s| s.reset_products)) {
            (false, _) => None,
            (true, Some(r)) => Some(r),
            (true, None) => {
                let hidden = self.cfg.hidden_size();
                rh_own = GpuTensor::uninit(&self.ctx, "r*h", &[plan.steps, plan.batch, hidden])?;
                Some(&rh_own)
            }
        };
        let ctx = &self.ctx;
        let (g, h, i) = (
            self.cfg.gate_count(),
            self.cfg.hidden_size(),
            self.cfg.input_size(),
        );
        let (t_all, b) = (plan.steps, plan.batch);
        let st = self.cfg.state_size();
        let bh_bytes = (b * h) as u64 * 4;
        let bs_bytes = (b * st) as u64 * 4;
        let c_state = out.c_n.as_ref().map(GpuTensor::buffer);
        let proj = self.layer.w_hr.as_ref();

        // Binding 3 of the step: h before a chunk's first step, or with a projection every
        // projected state [h0; h_0 .. h_{T-1}] (T + 1, B, P); then the peepholes.
        let peep = self.layer.peephole.as_ref();
        let state_words = match proj {
            Some(_) => (t_all + 1) * b * st,
            None => b * h,
        };
        let h_carry =
            GpuTensor::uninit(ctx, "h_carry", &[state_words + peep.map_or(0, |_| 3 * h)])?;
        if let Some(s) = state {
            enc.copy_buffer_to_buffer(s.h.buffer(), 0, h_carry.buffer(), 0, bs_bytes);
        }
        if let Some(p) = peep {
            let at = state_words as u64 * 4;
            enc.copy_buffer_to_buffer(p.buffer(), 0, h_carry.buffer(), at, p.byte_size());
        }
        // With a projection the step writes h_raw = o * h(c) (T, B, H) for the projection GEMM
        // (and for backward, through the tape).
        let h_raw_own;
        let h_raw = match (proj, projected) {
            (None, _) => None,
            (Some(_), Some(r)) => Some(r),
            (Some(_), None) => {
                h_raw_own = GpuTensor::uninit(ctx, "h_raw", &[t_all, b, h])?;
                Some(&h_raw_own)
            }
        };
        // h_carry is fresh (zeroed by wgpu); c_n may be a reused caller buffer.
        if let Some(c_state) = c_state {
            match state.and_then(|s| s.c.as_ref()) {
                Some(c0) => enc.copy_buffer_to_buffer(c0.buffer(), 0, c_state, 0, bh_bytes),
                None => enc.clear_buffer(c_state, 0, Some(bh_bytes)),
            }
        }
        // The tape's history starts with c0 (LSTM) or h0 (GRU).
        if let Some((_, history)) = tape {
            match (self.cfg.cell(), c_state) {
                (CellKind::Lstm, Some(c)) => {
                    enc.copy_buffer_to_buffer(c, 0, history.buffer(), 0, bh_bytes)
                }
                (CellKind::Gru, _) => {
                    enc.copy_buffer_to_buffer(h_carry.buffer(), 0, history.buffer(), 0, bh_bytes)
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
                _pad: [0; 2],
            })
            .collect();
        let params = UniformSlots::new(ctx, "rnn_step params", &params);
        let gx = GpuTensor::uninit(ctx, "gx", &[plan.chunk, b, g * h])?;
        let bufs = StepBuffers {
            params: &params,
            gx: gx.buffer(),
            w_hh: self.layer.w_hh.buffer(),
            h_carry: h_carry.buffer(),
            bias: self.layer.bias.as_ref().map(GpuTensor::buffer),
            y: h_raw.unwrap_or(&out.y).buffer(),
            c_state: c_state.or(reset_products.map(GpuTensor::buffer)),
            tape: tape.map(|(g, c)| (g.buffer(), c.buffer())),
        };
        // A GRU with the reset gate before the product needs two dispatches per step.
        let steps = match reset_before {
            false => vec![RnnStep::new(ctx, &self.cfg, b, 0, &bufs)?],
            true => vec![
                RnnStep::new(ctx, &self.cfg, b, 1, &bufs)?,
                RnnStep::new(ctx, &self.cfg, b, 2, &bufs)?,
            ],
        };

        for t0 in (0..t_all).step_by(plan.chunk) {
            let tc = plan.chunk.min(t_all - t0);
            if t0 > 0 && proj.is_none() {
                let last = (t0 - 1) as u64 * bh_bytes;
                enc.copy_buffer_to_buffer(out.y.buffer(), last, h_carry.buffer(), 0, bh_bytes);
            }
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("rnn chunk"),
                timestamp_writes: None,
            });
            // input_projection: gx = x[t0..t0+tc] · W_ih^T + b_ih (the step adds b_hh, which
            // a GRU's n gate needs inside r * (...)).
            gemm(
                ctx,
                &mut pass,
                &Gemm {
                    bias: self.layer.bias.as_ref().map(|b| (b.buffer(), 1)),
                    a_row_offset: (t0 * b) as u32,
                    ..Gemm::new(
                        x.buffer(),
                        self.layer.w_ih.buffer(),
                        gx.buffer(),
                        (tc * b, g * h, i),
                    )
                },
            )?;
            for t in t0..t0 + tc {
                for step in &steps {
                    step.record(&mut pass, params.offset(t));
                }
                if let (Some(w_hr), Some(h_raw)) = (proj, h_raw) {
                    // h_t = W_hr h_raw_t, into slot t + 1 of the projected states.
                    gemm(
                        ctx,
                        &mut pass,
                        &Gemm {
                            a_row_offset: (t * b) as u32,
                            c_row_offset: ((t + 1) * b) as u32,
                            ..Gemm::new(h_raw.buffer(), w_hr.buffer(), h_carry.buffer(), (b, st, h))
                        },
                    )?;
                }
            }
        }
        match proj {
            Some(_) => {
                let ys = (t_all * b * st) as u64 * 4;
                enc.copy_buffer_to_buffer(h_carry.buffer(), bs_bytes, out.y.buffer(), 0, ys);
                enc.copy_buffer_to_buffer(h_carry.buffer(), ys, out.h_n.buffer(), 0, bs_bytes);
                if let Some(y_proj) = tape_states {
                    enc.copy_buffer_to_buffer(
                        h_carry.buffer(),
                        0,
                        y_proj.buffer(),
                        0,
                        ys + bs_bytes,
                    );
                }
            }
            None => {
                let last = (t_all - 1) as u64 * bh_bytes;
                enc.copy_buffer_to_buffer(out.y.buffer(), last, out.h_n.buffer(), 0, bh_bytes);
            }
        }
        Ok(())
    }
}

/// Where a training forward pass saves its tape (see [`crate::gpu::Tape`]).
#[derive(Clone, Copy)]
pub(crate) struct TapeBuffers<'a> {
    /// `[T, B, H, S]` pre-activations (then the peepholes).
    pub pre: &'a GpuTensor,
    /// `[T + 1, B, H]` LSTM c / GRU h history.
    pub history: &'a GpuTensor,
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
pub(crate) fn unpack_biases(packed: &[f32], gates: usize, hidden: usize) -> (Vec<f32>, Vec<f32>) {
    let (bi, bh) = packed.split_at(gates * hidden);
    (
        unpack_gate_interleaved(bi, gates, hidden, 1),
        unpack_gate_interleaved(bh, gates, hidden, 1),
    )
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
