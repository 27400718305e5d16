//! Training: the forward pass that records a [`Tape`], and backpropagation through time.
//!
//! Schedule of one backward pass (one command encoder, one submission), layers top-down, the
//! directions of a layer recorded together:
//! 1. each direction's `dy` in its own frame (gathered from the layer output's gradient when
//!    the layout, the direction or the concatenation needs it); `dh <- dh_n`, `dc <- dc_n`;
//! 2. for t = T-1 .. 0: one fused `rnn_step_backward` dispatch per direction:
//!    `dh_t = dy_t + dG_{t+1}·W_hh`, the gate gradients `dG_t` from the saved activations, and
//!    `dc_{t-1}`; a step past a row's length passes `dh`, `dc` through untouched;
//! 3. then large GEMMs over all steps at once: `dh0 = dG_0·W_hh`, `dx = dG·W_ih`,
//!    `dW_ih^T = xᵀ·dG`, `dW_hh^T = [h0; y_0..y_{T-2}]ᵀ·dG`, and column sums for the biases;
//! 4. each direction's `dx` scattered (and the two summed) into the gradient of the layer's
//!    input, times the layer below's dropout mask: the next layer's `dy`.
//!
//! Every reduction has a fixed order and no atomics, so two runs give bit-identical
//! gradients. Gradients live in the packed layout of the parameters (see
//! [`crate::gpu::pack`]); [`Grads::to_host`] unpacks them to PyTorch's.

use crate::config::{CellKind, GruReset, Layout};
use crate::error::{Error, Result};
use crate::gpu::column_sum::column_sum;
use crate::gpu::gemm::{GEMM_TILE, Gemm, gemm};
use crate::gpu::rearrange::{View, rearrange, record_dropout};
use crate::gpu::rnn::{
    Frame, LayerView, Output, PackedLayer, Rnn, RunOptions, State, TapeBuffers, binding_limit,
    check_shape, compute_pass,
};
use crate::gpu::rnn_step::tape_slots;
use crate::gpu::rnn_step_backward::{RnnStepBackward, StepBackParams, StepBackwardBuffers};
use crate::gpu::tensor::{GpuTensor, download_optional};
use crate::gpu::uniforms::UniformSlots;
use crate::{RnnConfig, weights::LayerWeights};

/// What backward needs from a forward pass, kept on the GPU.
///
/// The first layer's frame may alias the forward's input `x`: leave it unchanged until
/// backward has been recorded (as with PyTorch's saved tensors).
#[derive(Debug, Clone)]
pub struct Tape {
    model: u64,
    steps: usize,
    batch: usize,
    /// `[B]` f32 row lengths.
    lengths: GpuTensor,
    /// The dropout seed of the pass (`None`: no dropout).
    dropout_seed: Option<u64>,
    /// Per layer-direction (`l*D + d`).
    layers: Vec<LayerTape>,
}

/// One layer-direction's saved tensors, in its frame (see [`crate::gpu::Rnn`]).
#[derive(Debug, Clone)]
struct LayerTape {
    /// `[T, B, I_l]` input and `[T, B, S]` output.
    frame: Frame,
    /// `[B, S]` the initial hidden state (a copy).
    h0: GpuTensor,
    /// `[T, B, H, S]` pre-activations: LSTM (i, f, g, o); GRU (r, z, n, W_hn h + b_hn); RNN
    /// the one; then the peepholes, then the row lengths.
    gates: GpuTensor,
    /// `[T + 1, B, H]`: LSTM cell states (slot 0 is `c0`), GRU hidden states (slot 0 is
    /// `h0`); a placeholder for the plain RNN.
    c_all: GpuTensor,
    /// With a projection: `h_raw [T, B, H]` (before `W_hr`) and the projected states
    /// `[h0; h_0 .. h_{T-1}]`, `[T + 1, B, P]`.
    projection: Option<(GpuTensor, GpuTensor)>,
    /// GRU reset-before: `r * h_prev` of every step, `[T, B, H]` (what `W_hn` multiplies).
    reset_products: Option<GpuTensor>,
}

impl Tape {
    /// `T` of the recorded pass.
    pub fn steps(&self) -> usize {
        self.steps
    }
    /// `B` of the recorded pass.
    pub fn batch(&self) -> usize {
        self.batch
    }
    /// The seed of the dropout masks the pass drew (`None` without dropout).
    pub fn dropout_seed(&self) -> Option<u64> {
        self.dropout_seed
    }
}

/// One layer-direction's parameter gradients on the GPU, in the packed layout of
/// [`Rnn::parameters`].
#[derive(Debug, Clone)]
pub struct LayerGrads {
    /// `[I_l, H*G]`: `dW_ih^T`, gate-interleaved.
    pub w_ih: GpuTensor,
    /// `[S, H*G]`: `dW_hh^T`, gate-interleaved.
    pub w_hh: GpuTensor,
    /// `[2, H*G]`: `d b_ih` and `d b_hh` (equal but for a GRU's `n`), gate-interleaved;
    /// `None` without bias.
    pub bias: Option<GpuTensor>,
    /// `[H, P]`: `dW_hr^T` of the LSTM projection; `None` without `proj_size`.
    pub w_hr: Option<GpuTensor>,
    /// `[3H]`: LSTM peephole gradients `p_i | p_f | p_o`; `None` without peepholes.
    pub peephole: Option<GpuTensor>,
}

impl LayerGrads {
    fn zeros(ctx: &crate::Context, l: &PackedLayer) -> Result<LayerGrads> {
        let like = |t: Option<&GpuTensor>| t.map(|t| GpuTensor::zeros(ctx, t.shape())).transpose();
        Ok(LayerGrads {
            w_ih: GpuTensor::zeros(ctx, l.w_ih.shape())?,
            w_hh: GpuTensor::zeros(ctx, l.w_hh.shape())?,
            bias: like(l.bias.as_ref())?,
            w_hr: like(l.w_hr.as_ref())?,
            peephole: like(l.peephole.as_ref())?,
        })
    }

    /// The gradient tensors of one layer-direction: `W_ih`, `W_hh`, then the biases, `W_hr`
    /// and peepholes the model has (its slice of [`Rnn::parameters`]).
    pub fn tensors(&self) -> Vec<&GpuTensor> {
        self.view().tensors()
    }

    fn view(&self) -> LayerView<'_> {
        LayerView {
            w_ih: &self.w_ih,
            w_hh: &self.w_hh,
            bias: self.bias.as_ref(),
            w_hr: self.w_hr.as_ref(),
            peephole: self.peephole.as_ref(),
        }
    }
}

/// Parameter gradients of every layer-direction, on the GPU.
#[derive(Debug, Clone)]
pub struct ParamGrads {
    /// Per layer-direction, `l*D + d` (PyTorch's order: `l0`, `l0_reverse`, `l1`, ...).
    pub layers: Vec<LayerGrads>,
}

impl ParamGrads {
    /// Zero gradients shaped for `rnn`'s parameters (the start of an accumulation).
    pub fn zeros(rnn: &Rnn) -> Result<ParamGrads> {
        Ok(ParamGrads {
            layers: rnn
                .layers
                .iter()
                .map(|l| LayerGrads::zeros(&rnn.ctx, l))
                .collect::<Result<_>>()?,
        })
    }

    /// The gradient tensors, in the order of [`Rnn::parameters`].
    pub fn tensors(&self) -> Vec<&GpuTensor> {
        self.layers.iter().flat_map(LayerGrads::tensors).collect()
    }

    /// Download and unpack to PyTorch layout (`weight_ih [G*H, I_l]`, ...), one entry per
    /// layer-direction.
    pub fn to_host(&self, rnn: &Rnn) -> Result<Vec<LayerWeights>> {
        let dirs = rnn.dirs();
        self.layers
            .iter()
            .enumerate()
            .map(|(j, g)| g.view().to_host(&rnn.ctx, &rnn.layer_cfgs[j / dirs]))
            .collect()
    }
}

/// Every gradient of one backward pass, on the GPU.
#[derive(Debug, Clone)]
pub struct Grads {
    /// Like `x`: `[T, B, I]` (or `[B, T, I]`); zero at padding.
    pub dx: GpuTensor,
    /// `[L*D, B, S]`.
    pub dh0: GpuTensor,
    /// `[L*D, B, H]` (LSTM).
    pub dc0: Option<GpuTensor>,
    /// Parameter gradients.
    pub params: ParamGrads,
}

/// [`Grads`] downloaded, parameters in PyTorch layout.
#[derive(Debug, Clone, PartialEq)]
pub struct HostGrads {
    /// Like `x`.
    pub dx: Vec<f32>,
    /// `[L*D, B, S]`.
    pub dh0: Vec<f32>,
    /// `[L*D, B, H]` (LSTM).
    pub dc0: Option<Vec<f32>>,
    /// Per layer-direction (`l*D + d`): `weight_ih [G*H, I_l]`, `weight_hh`, biases, ...
    pub params: Vec<LayerWeights>,
}

impl Grads {
    /// Download everything; parameter gradients unpacked to PyTorch layout.
    pub fn to_host(&self, rnn: &Rnn) -> Result<HostGrads> {
        Ok(HostGrads {
            dx: self.dx.download(&rnn.ctx)?,
            dh0: self.dh0.download(&rnn.ctx)?,
            dc0: download_optional(&rnn.ctx, self.dc0.as_ref())?,
            params: self.params.to_host(rnn)?,
        })
    }
}

/// Whether [`Rnn::backward_into`] overwrites or adds to the parameter gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GradMode {
    /// `grads = d loss / d params`.
    Overwrite,
    /// `grads += d loss / d params` (truncated BPTT over chunks, gradient accumulation).
    Accumulate,
}

/// What one layer-direction's backward reads and writes.
struct BackJob<'a> {
    cfg: &'a RnnConfig,
    layer: &'a PackedLayer,
    tape: &'a LayerTape,
    /// `[T, B, S]` upstream gradient of the frame output, or none.
    dy: Option<&'a GpuTensor>,
    /// This job's state index `l*D + d`: its `[B, ·]` slot in `dh_n`, `dc_n`, `dh0`, `dc0`.
    slot: usize,
    /// `[T, B, I_l]` the frame input's gradient out.
    dx: &'a GpuTensor,
    grads: &'a LayerGrads,
}

impl Rnn {
    /// Forward pass that also records the [`Tape`] backward needs (gate activations and cell
    /// states, on the GPU), with dropout between layers when the model has it. Same shapes,
    /// errors and single submission as [`Rnn::forward`].
    pub fn forward_train(&self, x: &GpuTensor, state: Option<&State>) -> Result<(Output, Tape)> {
        self.forward_train_with(x, state, &RunOptions::default())
    }

    /// [`Rnn::forward_train`] with per-row lengths and a dropout seed (see [`RunOptions`]).
    pub fn forward_train_with(
        &self,
        x: &GpuTensor,
        state: Option<&State>,
        opts: &RunOptions<'_>,
    ) -> Result<(Output, Tape)> {
        let plan = self.plan(x, state, opts.lengths)?;
        let (t, b) = (plan.steps, plan.batch);
        self.check_tape_fits(t, b)?;
        let ctx = &self.ctx;
        let out = self.alloc_output(&plan)?;
        let lengths = self.lengths_tensor(&plan, opts.lengths)?;
        let seed = self.dropout_seed(opts.dropout_seed);
        let (h, st) = (self.cfg.hidden_size(), self.cfg.state_size());
        let slots = tape_slots(&self.cfg);
        struct Parts {
            h0: GpuTensor,
            gates: GpuTensor,
            c_all: GpuTensor,
            projection: Option<(GpuTensor, GpuTensor)>,
            reset_products: Option<GpuTensor>,
        }
        let parts = self
            .layers
            .iter()
            .map(|l| {
                let history_steps = match self.cfg.cell() {
                    CellKind::Rnn => 0,
                    _ => t + 1,
                };
                Ok(Parts {
                    h0: GpuTensor::zeros(ctx, &[b, st])?,
                    gates: GpuTensor::uninit(
                        ctx,
                        "tape",
                        &[t * b * h * slots + l.peephole.as_ref().map_or(0, |_| 3 * h) + b],
                    )?,
                    c_all: GpuTensor::uninit(ctx, "tape history", &[history_steps, b, h])?,
                    projection: match self.cfg.proj_size() {
                        Some(p) => Some((
                            GpuTensor::uninit(ctx, "tape h_raw", &[t, b, h])?,
                            GpuTensor::uninit(ctx, "tape projected states", &[t + 1, b, p])?,
                        )),
                        None => None,
                    },
                    reset_products: match self.cfg.gru_reset() {
                        GruReset::Before => Some(GpuTensor::uninit(ctx, "tape r*h", &[t, b, h])?),
                        GruReset::After => None,
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let saves: Vec<TapeBuffers<'_>> = parts
            .iter()
            .map(|p| TapeBuffers {
                pre: &p.gates,
                tape_words: t * b * h * slots,
                history: &p.c_all,
                h0: &p.h0,
                projection: p.projection.as_ref().map(|(r, s)| (r, s)),
                reset_products: p.reset_products.as_ref(),
            })
            .collect();
        let frames = ctx.scoped(|| {
            let mut enc = ctx
                .device()
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("rnn forward_train"),
                });
            let frames = self.record_stack(
                &mut enc,
                x,
                state,
                &out,
                &lengths,
                &plan,
                Some((&saves, seed)),
            )?;
            ctx.submit(enc.finish());
            Ok(frames)
        })?;
        drop(saves);
        let layers = parts
            .into_iter()
            .zip(frames)
            .map(|(p, frame)| LayerTape {
                frame,
                h0: p.h0,
                gates: p.gates,
                c_all: p.c_all,
                projection: p.projection,
                reset_products: p.reset_products,
            })
            .collect();
        Ok((
            out,
            Tape {
                model: self.id,
                steps: t,
                batch: b,
                lengths,
                dropout_seed: seed,
                layers,
            },
        ))
    }

    /// Backpropagation through time for a recorded forward pass: returns `dx`, `dh0`, `dc0`
    /// and every parameter gradient (one submission).
    ///
    /// Shapes: `dy` like `y` (`[T, B, D*S]` or `[B, T, D*S]`), `dh_n [L*D, B, S]`,
    /// `dc_n [L*D, B, H]`; each may be `None` (zero), e.g. many-to-one training passes only
    /// `dh_n`. Gradients at padding (past a row's length) are ignored.
    ///
    /// Errors: [`Error::TapeMismatch`] for a tape recorded by another model,
    /// [`Error::ShapeMismatch`] for a wrong-shaped upstream gradient, [`Error::LimitExceeded`].
    pub fn backward(
        &self,
        tape: &Tape,
        dy: Option<&GpuTensor>,
        dh_n: Option<&GpuTensor>,
        dc_n: Option<&GpuTensor>,
    ) -> Result<Grads> {
        let mut grads = self.empty_grads(tape)?;
        self.backward_into(tape, dy, dh_n, dc_n, &mut grads, GradMode::Overwrite)?;
        Ok(grads)
    }

    /// [`Rnn::backward`] into existing gradients. `dx`, `dh0`, `dc0` are always overwritten
    /// (reallocated if the tape's `T` or `B` differs); parameter gradients are overwritten or,
    /// with [`GradMode::Accumulate`], added to (truncated BPTT over chunks).
    pub fn backward_into(
        &self,
        tape: &Tape,
        dy: Option<&GpuTensor>,
        dh_n: Option<&GpuTensor>,
        dc_n: Option<&GpuTensor>,
        grads: &mut Grads,
        mode: GradMode,
    ) -> Result<()> {
        let ctx = &self.ctx;
        let (h, i) = (self.cfg.hidden_size(), self.cfg.input_size());
        let (t, b) = (tape.steps, tape.batch);
        if tape.model != self.id {
            return Err(Error::TapeMismatch(
                "the tape was recorded by a different model".into(),
            ));
        }
        let (st, dirs, layers) = (self.cfg.state_size(), self.dirs(), self.cfg.num_layers());
        let ld = layers * dirs;
        if let Some(dy) = dy {
            check_shape("dy", dy, &self.io_shape(t, b, dirs * st))?;
        }
        if let Some(d) = dh_n {
            check_shape("dh_n", d, &[ld, b, st])?;
        }
        let lstm = self.cfg.cell() == CellKind::Lstm;
        if let Some(d) = dc_n {
            if !lstm {
                return Err(Error::ShapeMismatch {
                    name: "dc_n".into(),
                    expected: vec![],
                    got: d.shape().to_vec(),
                });
            }
            check_shape("dc_n", d, &[ld, b, h])?;
        }
        if grads.params.tensors().len() != self.parameters().len() {
            return Err(Error::ShapeMismatch {
                name: "param grads".into(),
                expected: vec![self.parameters().len()],
                got: vec![grads.params.tensors().len()],
            });
        }
        for (want, have) in self.parameters().iter().zip(grads.params.tensors()) {
            check_shape("param grads", have, want.shape())?;
        }
        self.check_tape_fits(t, b)?;
        let x_shape = self.io_shape(t, b, i);
        if grads.dx.shape() != x_shape {
            grads.dx = GpuTensor::uninit(ctx, "dx", &x_shape)?;
        }
        if grads.dh0.shape() != [ld, b, st] {
            grads.dh0 = GpuTensor::uninit(ctx, "dh0", &[ld, b, st])?;
        }
        if !lstm {
            grads.dc0 = None;
        } else if grads.dc0.as_ref().is_none_or(|c| c.shape() != [ld, b, h]) {
            grads.dc0 = Some(GpuTensor::uninit(ctx, "dc0", &[ld, b, h])?);
        }
        let accumulate = mode == GradMode::Accumulate;
        let seq_major = self.cfg.layout() == Layout::SeqMajor;
        let plan = crate::gpu::rnn::Plan::for_tape(t, b);

        ctx.scoped(|| {
            let mut enc = ctx
                .device()
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("rnn backward"),
                });
            let lens = tape.lengths.buffer();
            // The gradient of the current layer's output: the caller's dy, then each layer's
            // input gradient.
            let mut upper: Option<GpuTensor> = dy.cloned();
            for l in (0..layers).rev() {
                let lcfg = &self.layer_cfgs[l];
                let i_l = lcfg.input_size();
                let last = l + 1 == layers;
                let upper_view = |buf| match last {
                    true => self.io_view(buf, &plan, dirs * st),
                    false => View::seq(buf, b, dirs * st),
                };
                let mut p = compute_pass(&mut enc, "rnn backward dy");
                let mut dys = Vec::with_capacity(dirs);
                for d in 0..dirs {
                    dys.push(match &upper {
                        None => None,
                        Some(u) if dirs == 1 && !self.reversed(d) && (!last || seq_major) => {
                            Some(u.clone())
                        }
                        Some(u) => {
                            let f = GpuTensor::uninit(ctx, "frame dy", &[t, b, st])?;
                            rearrange(
                                ctx,
                                &mut p,
                                View {
                                    offset: d * st,
                                    ..upper_view(u.buffer())
                                },
                                View::seq(f.buffer(), b, st),
                                lens,
                                self.time_map(d),
                                (t, b, st),
                                false,
                            )?;
                            Some(f)
                        }
                    });
                }
                drop(p);
                // This layer's input gradient: the caller's dx for the first layer.
                let d_in = match l {
                    0 => grads.dx.clone(),
                    _ => GpuTensor::uninit(ctx, "layer input grad", &[t, b, i_l])?,
                };
                let in_view = match l {
                    0 => self.io_view(d_in.buffer(), &plan, i_l),
                    _ => View::seq(d_in.buffer(), b, i_l),
                };
                let direct = |d: usize| d == 0 && !self.reversed(d) && (l > 0 || seq_major);
                let dxs = (0..dirs)
                    .map(|d| match direct(d) {
                        true => Ok(d_in.clone()),
                        false => GpuTensor::uninit(ctx, "frame dx", &[t, b, i_l]),
                    })
                    .collect::<Result<Vec<_>>>()?;
                let jobs: Vec<BackJob<'_>> = (0..dirs)
                    .map(|d| {
                        let j = l * dirs + d;
                        BackJob {
                            cfg: lcfg,
                            layer: &self.layers[j],
                            tape: &tape.layers[j],
                            dy: dys[d].as_ref(),
                            slot: j,
                            dx: &dxs[d],
                            grads: &grads.params.layers[j],
                        }
                    })
                    .collect();
                self.record_layer_backward(
                    &mut enc,
                    &jobs,
                    tape,
                    dh_n,
                    dc_n,
                    &grads.dh0,
                    grads.dc0.as_ref(),
                    accumulate,
                )?;
                drop(jobs);
                let mut p = compute_pass(&mut enc, "rnn backward dx");
                for (d, dx) in dxs.iter().enumerate() {
                    if !direct(d) {
                        rearrange(
                            ctx,
                            &mut p,
                            View::seq(dx.buffer(), b, i_l),
                            in_view,
                            lens,
                            self.time_map(d),
                            (t, b, i_l),
                            d > 0,
                        )?;
                    }
                }
                if let (Some(seed), true) = (tape.dropout_seed, l > 0) {
                    let n = t * b * i_l;
                    let p_drop = self.cfg.dropout();
                    record_dropout(ctx, &mut p, d_in.buffer(), n, seed, l - 1, p_drop)?;
                }
                drop(p);
                upper = Some(d_in);
            }
            ctx.submit(enc.finish());
            Ok(())
        })
    }

    /// Record the backward pass of one layer: its directions' reverse loops interleaved step
    /// by step, then each direction's GEMMs and column sums.
    #[allow(clippy::too_many_arguments)]
    fn record_layer_backward(
        &self,
        enc: &mut wgpu::CommandEncoder,
        jobs: &[BackJob<'_>],
        tape: &Tape,
        dh_n: Option<&GpuTensor>,
        dc_n: Option<&GpuTensor>,
        dh0: &GpuTensor,
        dc0: Option<&GpuTensor>,
        accumulate: bool,
    ) -> Result<()> {
        let ctx = &self.ctx;
        let (t, b) = (tape.steps, tape.batch);
        let prepared = jobs
            .iter()
            .map(|job| BackPrepared::new(ctx, job, t, b))
            .collect::<Result<Vec<_>>>()?;
        for (job, p) in jobs.iter().zip(&prepared) {
            let (h, st) = (job.cfg.hidden_size(), job.cfg.state_size());
            let (bh_bytes, bs_bytes) = ((b * h) as u64 * 4, (b * st) as u64 * 4);
            let slot = job.slot as u64;
            if let Some(dc) = &p.dc {
                match dc_n {
                    Some(d) => enc.copy_buffer_to_buffer(
                        d.buffer(),
                        slot * bh_bytes,
                        dc.buffer(),
                        0,
                        bh_bytes,
                    ),
                    None => enc.clear_buffer(dc.buffer(), 0, Some(bh_bytes)),
                }
            }
            match dh_n {
                Some(d) => enc.copy_buffer_to_buffer(
                    d.buffer(),
                    slot * bs_bytes,
                    p.carry.buffer(),
                    0,
                    bs_bytes,
                ),
                None => enc.clear_buffer(p.carry.buffer(), 0, Some(bs_bytes)),
            }
        }
        let mut pass = compute_pass(enc, "rnn backward steps");
        for s in (0..t).rev() {
            for (job, p) in jobs.iter().zip(&prepared) {
                p.record_step(ctx, &mut pass, job, s, b)?;
            }
        }
        drop(pass);
        for (job, p) in jobs.iter().zip(&prepared) {
            let st = job.cfg.state_size();
            let h = job.cfg.hidden_size();
            // dh0 = carry + dG_0 · W_hh (the carry is the GRU's z * dh; zero for the others).
            let (bh_bytes, bs_bytes) = ((b * h) as u64 * 4, (b * st) as u64 * 4);
            let slot = job.slot as u64;
            enc.copy_buffer_to_buffer(p.carry.buffer(), 0, dh0.buffer(), slot * bs_bytes, bs_bytes);
            if let (Some(dc), Some(dc0)) = (&p.dc, dc0) {
                enc.copy_buffer_to_buffer(dc.buffer(), 0, dc0.buffer(), slot * bh_bytes, bh_bytes);
            }
        }
        let mut pass = compute_pass(enc, "rnn backward gemms");
        for (job, p) in jobs.iter().zip(&prepared) {
            p.record_gemms(ctx, &mut pass, job, dh0, t, b, accumulate)?;
        }
        Ok(())
    }

    /// Gradients shaped for `tape`, parameter gradients zeroed.
    fn empty_grads(&self, tape: &Tape) -> Result<Grads> {
        let (h, i, st) = (
            self.cfg.hidden_size(),
            self.cfg.input_size(),
            self.cfg.state_size(),
        );
        let (t, b) = (tape.steps, tape.batch);
        let ld = self.cfg.num_layers() * self.dirs();
        Ok(Grads {
            dx: GpuTensor::uninit(&self.ctx, "dx", &self.io_shape(t, b, i))?,
            dh0: GpuTensor::uninit(&self.ctx, "dh0", &[ld, b, st])?,
            dc0: match self.cfg.cell() {
                CellKind::Lstm => Some(GpuTensor::uninit(&self.ctx, "dc0", &[ld, b, h])?),
                _ => None,
            },
            params: ParamGrads::zeros(self)?,
        })
    }

    /// The tape and the backward GEMMs are not chunked over time: check they fit the device.
    fn check_tape_fits(&self, t: usize, b: usize) -> Result<()> {
        let (g, h) = (self.cfg.gate_count(), self.cfg.hidden_size());
        let widest_in = (0..self.cfg.num_layers())
            .map(|l| self.cfg.layer_input_size(l))
            .max()
            .unwrap_or(0);
        let lim = binding_limit(&self.ctx);
        let bytes = (t * b * g * h) as u64 * 4;
        if bytes > lim.1 {
            return Err(Error::LimitExceeded {
                limit: lim.0,
                what: "training tape (T x B x G*H)".into(),
                needed: bytes,
                allowed: lim.1,
            });
        }
        let max = self.ctx.limits().max_compute_workgroups_per_dimension as u64;
        let tile = GEMM_TILE as u64;
        for (what, n) in [
            ("backward dx rows (T*B / 64)", (t * b) as u64),
            ("weight-gradient rows (I / 64)", widest_in as u64),
            ("weight-gradient columns (G*H / 64)", (g * h) as u64),
        ] {
            let groups = n.div_ceil(tile);
            if groups > max {
                return Err(Error::LimitExceeded {
                    limit: "max_compute_workgroups_per_dimension",
                    what: what.into(),
                    needed: groups,
                    allowed: max,
                });
            }
        }
        Ok(())
    }
}

/// A [`BackJob`]'s scratch buffers and bound kernels.
struct BackPrepared {
    /// `[B, S]` what reaches h directly rather than through W_hh: dh_n to start with.
    carry: GpuTensor,
    /// `[B, H]` LSTM: dc_n in, dc0 out.
    dc: Option<GpuTensor>,
    params: UniformSlots,
    d_gates: GpuTensor,
    d_gates_x: Option<GpuTensor>,
    peephole_terms: Option<GpuTensor>,
    dh_hist: GpuTensor,
    dh_raw: GpuTensor,
    d_gates_n: Option<GpuTensor>,
    steps: (RnnStepBackward, Option<RnnStepBackward>),
}

impl BackPrepared {
    fn new(ctx: &crate::Context, job: &BackJob<'_>, t: usize, b: usize) -> Result<BackPrepared> {
        let cfg = job.cfg;
        let (g, h) = (cfg.gate_count(), cfg.hidden_size());
        let hg = g * h;
        let st = cfg.state_size();
        let gru = cfg.cell() == CellKind::Gru;
        let tp = job.tape;
        let carry = GpuTensor::uninit(ctx, "dh carry", &[b, st])?;
        let dc = match cfg.cell() {
            CellKind::Lstm => Some(GpuTensor::uninit(ctx, "dc", &[b, h])?),
            _ => None,
        };
        let len_at = t * b * h * tape_slots(cfg) + job.layer.peephole.as_ref().map_or(0, |_| 3 * h);
        let params: Vec<StepBackParams> = (0..t)
            .map(|step| StepBackParams {
                batch: b as u32,
                hidden: h as u32,
                t: step as u32,
                steps: t as u32,
                state: st as u32,
                len_at: len_at as u32,
                _pad: [0; 2],
            })
            .collect();
        let params = UniformSlots::new(ctx, "rnn_step_backward params", &params);
        let d_gates = GpuTensor::uninit(ctx, "dG", &[t, b, hg])?;
        // A GRU's input side sees dn where its recurrent side sees r * dn; an LSTM with
        // peepholes writes their per-step products (T, B, 3, H) in the same binding.
        let d_gates_x = match gru {
            true => Some(GpuTensor::uninit(ctx, "dGx", &[t, b, hg])?),
            false => None,
        };
        let peephole_terms = match &job.layer.peephole {
            Some(_) => Some(GpuTensor::uninit(ctx, "peephole terms", &[t, b, 3 * h])?),
            None => None,
        };
        // With a projection each step is: dh over the P state units (phase 1, into dh_hist),
        // dh_raw = dh · W_hr (a GEMM), then the cell (phase 2, reading dh_raw as its dy).
        let dh_hist = GpuTensor::uninit(ctx, "dh history", &[t, b, st])?;
        let dh_raw = GpuTensor::uninit(ctx, "dh_raw", &[b, h])?;
        // A GRU with the reset gate before W_hn: phase 3 (dz, dn; dn into dG_n, which the
        // dc binding carries), then phase 4 (dr through r * h_prev).
        let d_gates_n = match tp.reset_products {
            Some(_) => Some(GpuTensor::uninit(ctx, "dG_n", &[t, b, hg])?),
            None => None,
        };
        let bufs = StepBackwardBuffers {
            params: &params,
            tape: tp.gates.buffer(),
            history: (cfg.cell() != CellKind::Rnn).then(|| tp.c_all.buffer()),
            w_hh: job.layer.w_hh.buffer(),
            dy: job.dy.map(|d| d.buffer()),
            d_gates: d_gates.buffer(),
            d_gates_x: d_gates_x
                .as_ref()
                .or(peephole_terms.as_ref())
                .map(GpuTensor::buffer),
            dc: dc.as_ref().map(GpuTensor::buffer),
            carry: carry.buffer(),
        };
        let proj = job.layer.w_hr.is_some();
        let steps = match (proj, &d_gates_n) {
            (false, Some(dgn)) => {
                let bufs = StepBackwardBuffers {
                    dc: Some(dgn.buffer()),
                    ..bufs
                };
                (
                    RnnStepBackward::new(ctx, cfg, b, 3, &bufs)?,
                    Some(RnnStepBackward::new(ctx, cfg, b, 4, &bufs)?),
                )
            }
            (false, None) => (RnnStepBackward::new(ctx, cfg, b, 0, &bufs)?, None),
            (true, _) => (
                RnnStepBackward::new(
                    ctx,
                    cfg,
                    b,
                    1,
                    &StepBackwardBuffers {
                        d_gates_x: Some(dh_hist.buffer()),
                        ..bufs
                    },
                )?,
                Some(RnnStepBackward::new(
                    ctx,
                    cfg,
                    b,
                    2,
                    &StepBackwardBuffers {
                        dy: Some(dh_raw.buffer()),
                        ..bufs
                    },
                )?),
            ),
        };
        Ok(BackPrepared {
            carry,
            dc,
            params,
            d_gates,
            d_gates_x,
            peephole_terms,
            dh_hist,
            dh_raw,
            d_gates_n,
            steps,
        })
    }

    /// Record reverse step `s`.
    fn record_step(
        &self,
        ctx: &crate::Context,
        pass: &mut wgpu::ComputePass<'_>,
        job: &BackJob<'_>,
        s: usize,
        b: usize,
    ) -> Result<()> {
        self.steps.0.record(pass, self.params.offset(s));
        match (&self.steps.1, &job.layer.w_hr) {
            (Some(second), None) => second.record(pass, self.params.offset(s)),
            (Some(cell_step), Some(w_hr)) => {
                let (h, st) = (job.cfg.hidden_size(), job.cfg.state_size());
                // dh_raw = dh_t · W_hr, with W_hr^T stored (H, P).
                gemm(
                    ctx,
                    pass,
                    &Gemm {
                        trans_b: true,
                        a_row_offset: (s * b) as u32,
                        ..Gemm::new(
                            self.dh_hist.buffer(),
                            w_hr.buffer(),
                            self.dh_raw.buffer(),
                            (b, h, st),
                        )
                    },
                )?;
                cell_step.record(pass, self.params.offset(s));
            }
            (None, _) => {}
        }
        Ok(())
    }

    /// The GEMMs and column sums over all steps at once.
    #[allow(clippy::too_many_arguments)]
    fn record_gemms(
        &self,
        ctx: &crate::Context,
        pass: &mut wgpu::ComputePass<'_>,
        job: &BackJob<'_>,
        dh0: &GpuTensor,
        t: usize,
        b: usize,
        accumulate: bool,
    ) -> Result<()> {
        let cfg = job.cfg;
        let (g, h, i) = (cfg.gate_count(), cfg.hidden_size(), cfg.input_size());
        let hg = g * h;
        let st = cfg.state_size();
        let tp = job.tape;
        let pg = job.grads;
        let dg = self.d_gates.buffer();
        let dgx = self.d_gates_x.as_ref().map_or(dg, GpuTensor::buffer);
        let w_hh = job.layer.w_hh.buffer();
        let w_ih = job.layer.w_ih.buffer();
        // W_hh^T is stored (S, H*G), i.e. transposed for this product.
        gemm(
            ctx,
            pass,
            &Gemm {
                trans_b: true,
                accumulate: true,
                c_row_offset: (job.slot * b) as u32,
                ..Gemm::new(dg, w_hh, dh0.buffer(), (b, st, hg))
            },
        )?;
        // dx = dGx · W_ih, all steps at once.
        gemm(
            ctx,
            pass,
            &Gemm {
                trans_b: true,
                ..Gemm::new(dgx, w_ih, job.dx.buffer(), (t * b, i, hg))
            },
        )?;
        // dW_ih^T = x^T · dGx.
        gemm(
            ctx,
            pass,
            &Gemm {
                trans_a: true,
                accumulate,
                ..Gemm::new(tp.frame.x.buffer(), dgx, pg.w_ih.buffer(), (i, hg, t * b))
            },
        )?;
        match &tp.projection {
            // dW_hh^T = [h0; h_0 .. h_{T-2}]^T · dG over the projected states, and
            // dW_hr^T = h_raw^T · dh.
            Some((h_raw, states)) => {
                gemm(
                    ctx,
                    pass,
                    &Gemm {
                        trans_a: true,
                        accumulate,
                        ..Gemm::new(states.buffer(), dg, pg.w_hh.buffer(), (st, hg, t * b))
                    },
                )?;
                let d_w_hr = pg.w_hr.as_ref().expect("shape-checked above");
                gemm(
                    ctx,
                    pass,
                    &Gemm {
                        trans_a: true,
                        accumulate,
                        ..Gemm::new(
                            h_raw.buffer(),
                            self.dh_hist.buffer(),
                            d_w_hr.buffer(),
                            (h, st, t * b),
                        )
                    },
                )?;
            }
            // dW_hh^T = h0^T · dG_0 + y[0..T-1]^T · dG[1..T].
            None => {
                gemm(
                    ctx,
                    pass,
                    &Gemm {
                        trans_a: true,
                        accumulate,
                        ..Gemm::new(tp.h0.buffer(), dg, pg.w_hh.buffer(), (h, hg, b))
                    },
                )?;
                if t > 1 {
                    gemm(
                        ctx,
                        pass,
                        &Gemm {
                            trans_a: true,
                            accumulate: true,
                            b_row_offset: b as u32,
                            ..Gemm::new(
                                tp.frame.y.buffer(),
                                dg,
                                pg.w_hh.buffer(),
                                (h, hg, (t - 1) * b),
                            )
                        },
                    )?;
                }
            }
        }
        // GRU reset-before: W_hn multiplied r * h_prev, not h_prev, and dG kept n's columns
        // zero; they come from dG_n.
        if let (Some(rh), Some(dgn)) = (&tp.reset_products, &self.d_gates_n) {
            gemm(
                ctx,
                pass,
                &Gemm {
                    trans_a: true,
                    accumulate: true,
                    ..Gemm::new(rh.buffer(), dgn.buffer(), pg.w_hh.buffer(), (h, hg, t * b))
                },
            )?;
        }
        // d b_ih sums the input side, d b_hh the recurrent side (equal but for a GRU's n).
        if let Some(bias) = &pg.bias {
            for (side, offset) in [(dgx, 0), (dg, hg)] {
                column_sum(
                    ctx,
                    pass,
                    side,
                    bias.buffer(),
                    offset,
                    (t * b, hg),
                    accumulate,
                )?;
            }
        }
        // ... and d b_hn too (after the sums above, which may overwrite).
        if let (Some(dgn), Some(bias)) = (&self.d_gates_n, &pg.bias) {
            column_sum(
                ctx,
                pass,
                dgn.buffer(),
                bias.buffer(),
                hg,
                (t * b, hg),
                true,
            )?;
        }
        if let (Some(terms), Some(dp)) = (&self.peephole_terms, &pg.peephole) {
            column_sum(
                ctx,
                pass,
                terms.buffer(),
                dp.buffer(),
                0,
                (t * b, 3 * h),
                accumulate,
            )?;
        }
        Ok(())
    }
}
