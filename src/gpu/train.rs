//! Training: the forward pass that records a [`Tape`], and backpropagation through time.
//!
//! Schedule of one backward pass (one command encoder, one submission):
//! 1. `dc <- dc_n` (or zeros);
//! 2. for t = T-1 .. 0: one fused `lstm_step_backward` dispatch: `dh_t = dy_t + dG_{t+1}·W_hh`,
//!    the gate gradients `dG_t` from the saved activations, and `dc_{t-1}`;
//! 3. then large GEMMs over all steps at once: `dh0 = dG_0·W_hh`, `dx = dG·W_ih`,
//!    `dW_ih^T = xᵀ·dG`, `dW_hh^T = [h0; y_0..y_{T-2}]ᵀ·dG`, and column sums for the biases.
//!
//! Every reduction has a fixed order and no atomics, so two runs give bit-identical
//! gradients. Gradients live in the packed layout of the parameters (see
//! [`crate::gpu::pack`]); [`Grads::to_host`] unpacks them to PyTorch's.

use crate::config::{CellKind, GruReset};
use crate::error::{Error, Result};
use crate::gpu::column_sum::column_sum;
use crate::gpu::gemm::{GEMM_TILE, Gemm, gemm};
use crate::gpu::pack::unpack_gate_interleaved;
use crate::gpu::rnn::{
    Output, Rnn, State, TapeBuffers, binding_limit, check_shape, transpose, unpack_biases,
};
use crate::gpu::rnn_step::tape_slots;
use crate::gpu::rnn_step_backward::{RnnStepBackward, StepBackParams, StepBackwardBuffers};
use crate::gpu::tensor::{GpuTensor, download_optional};
use crate::gpu::uniforms::UniformSlots;
use crate::weights::LayerWeights;

/// What backward needs from a forward pass, kept on the GPU.
///
/// `x` and `y` alias the forward's input and output: leave them unchanged until backward
/// has been recorded (as with PyTorch's saved tensors).
#[derive(Debug, Clone)]
pub struct Tape {
    model: u64,
    steps: usize,
    batch: usize,
    /// `[T, B, I]` the input.
    x: GpuTensor,
    /// `[1, B, H]` the initial hidden state (a copy).
    h0: GpuTensor,
    /// `[T, B, H]` the outputs, i.e. `h_t`.
    y: GpuTensor,
    /// `[T, B, H, S]`: LSTM activated gates (i, f, g, o); GRU (r, z, n, W_hn h + b_hn); RNN h.
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
}

/// Parameter gradients on the GPU, in the packed layout of [`Rnn::parameters`] and in the
/// same order.
#[derive(Debug, Clone)]
pub struct ParamGrads {
    /// `[I, H*G]`: `dW_ih^T`, gate-interleaved.
    pub w_ih: GpuTensor,
    /// `[H, H*G]`: `dW_hh^T`, gate-interleaved.
    pub w_hh: GpuTensor,
    /// `[2, H*G]`: `d b_ih` and `d b_hh` (equal but for a GRU's `n`), gate-interleaved;
    /// `None` without bias.
    pub bias: Option<GpuTensor>,
    /// `[H, P]`: `dW_hr^T` of the LSTM projection; `None` without `proj_size`.
    pub w_hr: Option<GpuTensor>,
    /// `[3H]`: LSTM peephole gradients `p_i | p_f | p_o`; `None` without peepholes.
    pub peephole: Option<GpuTensor>,
}

impl ParamGrads {
    /// Zero gradients shaped for `rnn`'s parameters (the start of an accumulation).
    pub fn zeros(rnn: &Rnn) -> Result<ParamGrads> {
        let l = &rnn.layer;
        let like =
            |t: Option<&GpuTensor>| t.map(|t| GpuTensor::zeros(&rnn.ctx, t.shape())).transpose();
        Ok(ParamGrads {
            w_ih: GpuTensor::zeros(&rnn.ctx, l.w_ih.shape())?,
            w_hh: GpuTensor::zeros(&rnn.ctx, l.w_hh.shape())?,
            bias: like(l.bias.as_ref())?,
            w_hr: like(l.w_hr.as_ref())?,
            peephole: like(l.peephole.as_ref())?,
        })
    }

    /// The gradient tensors, in the order of [`Rnn::parameters`].
    pub fn tensors(&self) -> Vec<&GpuTensor> {
        let mut v = vec![&self.w_ih, &self.w_hh];
        v.extend(self.bias.as_ref());
        v.extend(self.w_hr.as_ref());
        v.extend(self.peephole.as_ref());
        v
    }

    /// Download and unpack to PyTorch layout (`weight_ih [4H, I]`, ...).
    pub fn to_host(&self, rnn: &Rnn) -> Result<LayerWeights> {
        let cfg = &rnn.cfg;
        let (g, h, i) = (cfg.gate_count(), cfg.hidden_size(), cfg.input_size());
        let (bias_ih, bias_hh) = match &self.bias {
            Some(b) => {
                let (bi, bh) = unpack_biases(&b.download(&rnn.ctx)?, g, h);
                (Some(bi), Some(bh))
            }
            None => (None, None),
        };
        Ok(LayerWeights {
            weight_ih: unpack_gate_interleaved(&self.w_ih.download(&rnn.ctx)?, g, h, i),
            weight_hh: unpack_gate_interleaved(
                &self.w_hh.download(&rnn.ctx)?,
                g,
                h,
                cfg.state_size(),
            ),
            bias_ih,
            bias_hh,
            weight_hr: match &self.w_hr {
                Some(w) => Some(transpose(&w.download(&rnn.ctx)?, h, w.shape()[1])),
                None => None,
            },
            peephole: match &self.peephole {
                Some(p) => Some(p.download(&rnn.ctx)?),
                None => None,
            },
        })
    }
}

/// Every gradient of one backward pass, on the GPU.
#[derive(Debug, Clone)]
pub struct Grads {
    /// `[T, B, I]`.
    pub dx: GpuTensor,
    /// `[1, B, H]`.
    pub dh0: GpuTensor,
    /// `[1, B, H]` (LSTM).
    pub dc0: Option<GpuTensor>,
    /// Parameter gradients.
    pub params: ParamGrads,
}

/// [`Grads`] downloaded, parameters in PyTorch layout.
#[derive(Debug, Clone, PartialEq)]
pub struct HostGrads {
    /// `[T, B, I]`.
    pub dx: Vec<f32>,
    /// `[1, B, H]`.
    pub dh0: Vec<f32>,
    /// `[1, B, H]` (LSTM).
    pub dc0: Option<Vec<f32>>,
    /// `weight_ih [4H, I]`, `weight_hh [4H, H]`, `bias_ih`, `bias_hh [4H]`.
    pub params: LayerWeights,
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

impl Rnn {
    /// Forward pass that also records the [`Tape`] backward needs (gate activations and cell
    /// states, on the GPU). Same shapes, errors and single submission as [`Rnn::forward`].
    pub fn forward_train(&self, x: &GpuTensor, state: Option<&State>) -> Result<(Output, Tape)> {
        let plan = self.plan(x, state)?;
        let h = self.cfg.hidden_size();
        let (t, b) = (plan.steps, plan.batch);
        self.check_tape_fits(t, b)?;
        let ctx = &self.ctx;
        let lstm = self.cfg.cell() == CellKind::Lstm;
        let st = self.cfg.state_size();
        let out = Output {
            y: GpuTensor::uninit(ctx, "y", &[t, b, st])?,
            h_n: GpuTensor::uninit(ctx, "h_n", &[1, b, st])?,
            c_n: match lstm {
                true => Some(GpuTensor::uninit(ctx, "c_n", &[1, b, h])?),
                false => None,
            },
        };
        let history_steps = match self.cfg.cell() {
            CellKind::Rnn => 0,
            _ => t + 1,
        };
        let tape = Tape {
            model: self.id,
            steps: t,
            batch: b,
            x: x.clone(),
            h0: GpuTensor::zeros(ctx, &[1, b, st])?,
            y: out.y.clone(),
            // The peepholes ride at the tape's end: the step-backward kernel reads them there.
            gates: GpuTensor::uninit(
                ctx,
                "tape",
                &[t * b * h * tape_slots(&self.cfg)
                    + self.layer.peephole.as_ref().map_or(0, |_| 3 * h)],
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
        };
        ctx.scoped(|| {
            let mut enc = ctx
                .device()
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("rnn forward_train"),
                });
            if let Some(s) = state {
                enc.copy_buffer_to_buffer(
                    s.h.buffer(),
                    0,
                    tape.h0.buffer(),
                    0,
                    tape.h0.byte_size(),
                );
            }
            if let Some(p) = &self.layer.peephole {
                let at = (t * b * h * tape_slots(&self.cfg)) as u64 * 4;
                enc.copy_buffer_to_buffer(p.buffer(), 0, tape.gates.buffer(), at, p.byte_size());
            }
            self.record(
                &mut enc,
                x,
                state,
                &out,
                &plan,
                Some(TapeBuffers {
                    pre: &tape.gates,
                    history: &tape.c_all,
                    projection: tape.projection.as_ref().map(|(r, s)| (r, s)),
                    reset_products: tape.reset_products.as_ref(),
                }),
            )?;
            ctx.submit(enc.finish());
            Ok(())
        })?;
        Ok((out, tape))
    }

    /// Backpropagation through time for a recorded forward pass: returns `dx`, `dh0`, `dc0`
    /// and every parameter gradient (one submission).
    ///
    /// Shapes: `dy [T, B, H]`, `dh_n`, `dc_n` `[1, B, H]`; each may be `None` (zero), e.g.
    /// many-to-one training passes only `dh_n`.
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
        let (g, h, i) = (
            self.cfg.gate_count(),
            self.cfg.hidden_size(),
            self.cfg.input_size(),
        );
        let hg = g * h;
        let (t, b) = (tape.steps, tape.batch);
        if tape.model != self.id {
            return Err(Error::TapeMismatch(
                "the tape was recorded by a different model".into(),
            ));
        }
        let st = self.cfg.state_size();
        if let Some(dy) = dy {
            check_shape("dy", dy, &[t, b, st])?;
        }
        if let Some(d) = dh_n {
            check_shape("dh_n", d, &[1, b, st])?;
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
            check_shape("dc_n", d, &[1, b, h])?;
        }
        for (want, have) in self.parameters().iter().zip(grads.params.tensors()) {
            check_shape("param grads", have, want.shape())?;
        }
        if grads.params.tensors().len() != self.parameters().len() {
            return Err(Error::ShapeMismatch {
                name: "param grads".into(),
                expected: vec![self.parameters().len()],
                got: vec![grads.params.tensors().len()],
            });
        }
        self.check_tape_fits(t, b)?;
        if grads.dx.shape() != [t, b, i] {
            grads.dx = GpuTensor::uninit(ctx, "dx", &[t, b, i])?;
        }
        if grads.dh0.shape() != [1, b, st] {
            grads.dh0 = GpuTensor::uninit(ctx, "dh0", &[1, b, st])?;
        }
        if !lstm {
            grads.dc0 = None;
        } else if grads.dc0.as_ref().is_none_or(|c| c.shape() != [1, b, h]) {
            grads.dc0 = Some(GpuTensor::uninit(ctx, "dc0", &[1, b, h])?);
        }
        let dc = grads.dc0.as_ref().map(GpuTensor::buffer);
        let gru = self.cfg.cell() == CellKind::Gru;
        let bh_bytes = (b * h) as u64 * 4;
        let bs_bytes = (b * st) as u64 * 4;
        let accumulate = mode == GradMode::Accumulate;
        let proj = self.layer.w_hr.as_ref().zip(tape.projection.as_ref());

        ctx.scoped(|| {
            // What reaches h directly rather than through W_hh: dh_n to start with.
            let carry = GpuTensor::uninit(ctx, "dh carry", &[b, st])?;
            let params: Vec<StepBackParams> = (0..t)
                .map(|step| StepBackParams {
                    batch: b as u32,
                    hidden: h as u32,
                    t: step as u32,
                    steps: t as u32,
                    state: st as u32,
                    _pad: [0; 3],
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
            let peephole_terms = match &self.layer.peephole {
                Some(_) => Some(GpuTensor::uninit(ctx, "peephole terms", &[t, b, 3 * h])?),
                None => None,
            };
            let bufs = StepBackwardBuffers {
                params: &params,
                tape: tape.gates.buffer(),
                history: (self.cfg.cell() != CellKind::Rnn).then(|| tape.c_all.buffer()),
                w_hh: self.layer.w_hh.buffer(),
                dy: dy.map(|d| d.buffer()),
                d_gates: d_gates.buffer(),
                d_gates_x: d_gates_x
                    .as_ref()
                    .or(peephole_terms.as_ref())
                    .map(GpuTensor::buffer),
                dc,
                carry: carry.buffer(),
            };
            // With a projection each step is: dh over the P state units (phase 1, into dh_hist),
            // dh_raw = dh · W_hr (a GEMM), then the cell (phase 2, reading dh_raw as its dy).
            let dh_hist = GpuTensor::uninit(ctx, "dh history", &[t, b, st])?;
            let dh_raw = GpuTensor::uninit(ctx, "dh_raw", &[b, h])?;
            // A GRU with the reset gate before W_hn: phase 3 (dz, dn; dn into dG_n, which the
            // dc binding carries), then phase 4 (dr through r * h_prev).
            let d_gates_n = match tape.reset_products {
                Some(_) => Some(GpuTensor::uninit(ctx, "dG_n", &[t, b, hg])?),
                None => None,
            };
            let steps = match (proj, &d_gates_n) {
                (None, Some(dgn)) => {
                    let bufs = StepBackwardBuffers {
                        dc: Some(dgn.buffer()),
                        ..bufs
                    };
                    (
                        RnnStepBackward::new(ctx, &self.cfg, b, 3, &bufs)?,
                        Some(RnnStepBackward::new(ctx, &self.cfg, b, 4, &bufs)?),
                    )
                }
                (None, None) => (RnnStepBackward::new(ctx, &self.cfg, b, 0, &bufs)?, None),
                (Some(_), _) => (
                    RnnStepBackward::new(
                        ctx,
                        &self.cfg,
                        b,
                        1,
                        &StepBackwardBuffers {
                            d_gates_x: Some(dh_hist.buffer()),
                            ..bufs
                        },
                    )?,
                    Some(RnnStepBackward::new(
                        ctx,
                        &self.cfg,
                        b,
                        2,
                        &StepBackwardBuffers {
                            dy: Some(dh_raw.buffer()),
                            ..bufs
                        },
                    )?),
                ),
            };

            let mut enc = ctx
                .device()
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("rnn backward"),
                });
            if let Some(dc) = dc {
                match dc_n {
                    Some(d) => enc.copy_buffer_to_buffer(d.buffer(), 0, dc, 0, bh_bytes),
                    None => enc.clear_buffer(dc, 0, Some(bh_bytes)),
                }
            }
            match dh_n {
                Some(d) => enc.copy_buffer_to_buffer(d.buffer(), 0, carry.buffer(), 0, bs_bytes),
                None => enc.clear_buffer(carry.buffer(), 0, Some(bs_bytes)),
            }
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("rnn backward"),
                timestamp_writes: None,
            });
            for s in (0..t).rev() {
                steps.0.record(&mut pass, params.offset(s));
                if let (Some(second), None) = (&steps.1, proj) {
                    second.record(&mut pass, params.offset(s));
                }
                if let (Some(cell_step), Some((w_hr, _))) = (&steps.1, proj) {
                    // dh_raw = dh_t · W_hr, with W_hr^T stored (H, P).
                    gemm(
                        ctx,
                        &mut pass,
                        &Gemm {
                            trans_b: true,
                            a_row_offset: (s * b) as u32,
                            ..Gemm::new(
                                dh_hist.buffer(),
                                w_hr.buffer(),
                                dh_raw.buffer(),
                                (b, h, st),
                            )
                        },
                    )?;
                    cell_step.record(&mut pass, params.offset(s));
                }
            }
            drop(pass);
            // dh0 = carry + dG_0 · W_hh (the carry is the GRU's z * dh; zero for the others).
            enc.copy_buffer_to_buffer(carry.buffer(), 0, grads.dh0.buffer(), 0, bs_bytes);
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("rnn backward gemms"),
                timestamp_writes: None,
            });
            let dg = d_gates.buffer();
            let dgx = d_gates_x.as_ref().map_or(dg, GpuTensor::buffer);
            let w_hh = self.layer.w_hh.buffer();
            let w_ih = self.layer.w_ih.buffer();
            // W_hh^T is stored (H, H*G), i.e. transposed for this product.
            gemm(
                ctx,
                &mut pass,
                &Gemm {
                    trans_b: true,
                    accumulate: true,
                    ..Gemm::new(dg, w_hh, grads.dh0.buffer(), (b, st, hg))
                },
            )?;
            // dx = dGx · W_ih, all steps at once.
            gemm(
                ctx,
                &mut pass,
                &Gemm {
                    trans_b: true,
                    ..Gemm::new(dgx, w_ih, grads.dx.buffer(), (t * b, i, hg))
                },
            )?;
            // dW_ih^T = x^T · dGx.
            gemm(
                ctx,
                &mut pass,
                &Gemm {
                    trans_a: true,
                    accumulate,
                    ..Gemm::new(
                        tape.x.buffer(),
                        dgx,
                        grads.params.w_ih.buffer(),
                        (i, hg, t * b),
                    )
                },
            )?;
            match proj {
                // dW_hh^T = [h0; h_0 .. h_{T-2}]^T · dG over the projected states, and
                // dW_hr^T = h_raw^T · dh.
                Some((_, (h_raw, states))) => {
                    gemm(
                        ctx,
                        &mut pass,
                        &Gemm {
                            trans_a: true,
                            accumulate,
                            ..Gemm::new(
                                states.buffer(),
                                dg,
                                grads.params.w_hh.buffer(),
                                (st, hg, t * b),
                            )
                        },
                    )?;
                    let d_w_hr = grads.params.w_hr.as_ref().expect("shape-checked above");
                    gemm(
                        ctx,
                        &mut pass,
                        &Gemm {
                            trans_a: true,
                            accumulate,
                            ..Gemm::new(
                                h_raw.buffer(),
                                dh_hist.buffer(),
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
                        &mut pass,
                        &Gemm {
                            trans_a: true,
                            accumulate,
                            ..Gemm::new(
                                tape.h0.buffer(),
                                dg,
                                grads.params.w_hh.buffer(),
                                (h, hg, b),
                            )
                        },
                    )?;
                    if t > 1 {
                        gemm(
                            ctx,
                            &mut pass,
                            &Gemm {
                                trans_a: true,
                                accumulate: true,
                                b_row_offset: b as u32,
                                ..Gemm::new(
                                    tape.y.buffer(),
                                    dg,
                                    grads.params.w_hh.buffer(),
                                    (h, hg, (t - 1) * b),
                                )
                            },
                        )?;
                    }
                }
            }
            // GRU reset-before: W_hn multiplied r * h_prev, not h_prev, and dG kept n's columns
            // zero; they come from dG_n.
            if let (Some(rh), Some(dgn)) = (&tape.reset_products, &d_gates_n) {
                gemm(
                    ctx,
                    &mut pass,
                    &Gemm {
                        trans_a: true,
                        accumulate: true,
                        ..Gemm::new(
                            rh.buffer(),
                            dgn.buffer(),
                            grads.params.w_hh.buffer(),
                            (h, hg, t * b),
                        )
                    },
                )?;
            }
            // d b_ih sums the input side, d b_hh the recurrent side (equal but for a GRU's n).
            if let Some(bias) = &grads.params.bias {
                for (side, offset) in [(dgx, 0), (dg, hg)] {
                    column_sum(
                        ctx,
                        &mut pass,
                        side,
                        bias.buffer(),
                        offset,
                        (t * b, hg),
                        accumulate,
                    )?;
                }
            }
            // ... and d b_hn too (after the sums above, which may overwrite).
            if let (Some(dgn), Some(bias)) = (&d_gates_n, &grads.params.bias) {
                column_sum(
                    ctx,
                    &mut pass,
                    dgn.buffer(),
                    bias.buffer(),
                    hg,
                    (t * b, hg),
                    true,
                )?;
            }
            if let (Some(terms), Some(dp)) = (&peephole_terms, &grads.params.peephole) {
                column_sum(
                    ctx,
                    &mut pass,
                    terms.buffer(),
                    dp.buffer(),
                    0,
                    (t * b, 3 * h),
                    accumulate,
                )?;
            }
            drop(pass);
            ctx.submit(enc.finish());
            Ok(())
        })
    }

    /// Gradients shaped for `tape`, parameter gradients zeroed.
    fn empty_grads(&self, tape: &Tape) -> Result<Grads> {
        let (h, i) = (self.cfg.hidden_size(), self.cfg.input_size());
        let (t, b) = (tape.steps, tape.batch);
        Ok(Grads {
            dx: GpuTensor::uninit(&self.ctx, "dx", &[t, b, i])?,
            dh0: GpuTensor::uninit(&self.ctx, "dh0", &[1, b, h])?,
            dc0: match self.cfg.cell() {
                CellKind::Lstm => Some(GpuTensor::uninit(&self.ctx, "dc0", &[1, b, h])?),
                _ => None,
            },
            params: ParamGrads::zeros(self)?,
        })
    }

    /// The tape and the backward GEMMs are not chunked over time: check they fit the device.
    fn check_tape_fits(&self, t: usize, b: usize) -> Result<()> {
        let (g, h, i) = (
            self.cfg.gate_count(),
            self.cfg.hidden_size(),
            self.cfg.input_size(),
        );
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
            ("weight-gradient rows (I / 64)", i as u64),
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
