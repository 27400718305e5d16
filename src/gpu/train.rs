//! Training entry points: `record_forward_train` and `record_backward` record into a
//! caller's encoder (with clipping and an optimiser step, a whole training step is one
//! submission); `forward_train` and `backward` wrap them with pooled results.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::config::CellKind;
use crate::error::{Error, Result};
use crate::gpu::dispatch::Io;
use crate::gpu::grads::{GradMode, Grads, LayerGrads, ParamGrads, Tape};
use crate::gpu::model::Rnn;
use crate::gpu::plan::PlanMode;
use crate::gpu::run::{
    DST, GradsSlot, Output, RunOptions, SRC, State, check_shape, check_usage, leased,
};
use crate::gpu::tensor::GpuTensor;
use crate::gpu::workspace::{Env, Pass};

impl Rnn {
    /// The seed of the next training pass's dropout masks.
    fn dropout_seed(&self, given: Option<u64>) -> Option<u64> {
        let cfg = self.cfg();
        if cfg.dropout() == 0.0 || cfg.num_layers() < 2 {
            return None;
        }
        Some(given.unwrap_or_else(|| {
            let n = self.inner.dropout_draws.fetch_add(1, Ordering::Relaxed);
            crate::dropout::pcg(self.inner.id as u32) as u64 ^ (n << 32 | n)
        }))
    }

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
        let (t, b) = self.check_inputs(x, state)?;
        let out = self.pooled_output(PlanMode::Training, t, b)?;
        let ctx = self.ctx();
        let tape = ctx.scoped("forward_train", || {
            let mut enc = ctx.encoder("rnn forward_train");
            let tape = self.record_forward_train(&mut enc, x, state, opts, &out)?;
            ctx.submit(enc.finish())?;
            Ok(tape)
        })?;
        Ok((out, tape))
    }

    /// Record a training forward pass into the caller's encoder, writing into caller-provided
    /// outputs; returns the [`Tape`] for [`Rnn::record_backward`]. Keep the tape until the
    /// encoder is submitted: it holds the workspace whose uniforms carry this pass's lengths
    /// and dropout seed.
    pub fn record_forward_train(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        x: &GpuTensor,
        state: Option<&State>,
        opts: &RunOptions<'_>,
        out: &Output,
    ) -> Result<Tape> {
        let (t, b) = self.check_inputs(x, state)?;
        self.check_output(out, t, b)?;
        crate::gpu::run::check_layout(self, opts)?;
        let key = self.plan_key(t, b, PlanMode::Training, opts.lengths.is_some());
        let ws = self.cached_workspace(key)?;
        let seed = self.dropout_seed(opts.dropout_seed);
        let ctx = self.ctx();
        ctx.scoped("record_forward_train", || {
            let lengths = self.lengths_buffer(&ws, opts.lengths, t, b)?;
            if let Some(seed) = seed {
                ws.set_dropout_seed(ctx, Pass::Forward, seed);
            }
            ws.record(
                ctx,
                encoder,
                Pass::Forward,
                &self.forward_env(x, state, lengths, out),
            )
        })?;
        Ok(Tape {
            model: self.inner.id,
            version: self.parameter_version(),
            steps: t,
            batch: b,
            dropout_seed: seed,
            workspace: ws,
        })
    }

    /// Backpropagation through time for a recorded forward pass: returns `dx`, `dh0`, `dc0`
    /// and every parameter gradient (one submission). The gradients come from the model's
    /// pool: after the first call of a shape nothing is allocated while the previous
    /// gradients have been dropped.
    ///
    /// Shapes: `dy` like `y` (`[T, B, D*S]` or `[B, T, D*S]`), `dh_n [L*D, B, S]`,
    /// `dc_n [L*D, B, H]`; each may be `None` (zero), e.g. many-to-one training passes only
    /// `dh_n`. Gradients at padding (past a row's length) are ignored.
    ///
    /// Errors: [`Error::TapeMismatch`] for a tape recorded by another model,
    /// [`Error::StaleTape`] for one recorded before the parameters last changed,
    /// [`Error::ShapeMismatch`] for a wrong-shaped upstream gradient.
    pub fn backward(
        &self,
        tape: &Tape,
        dy: Option<&GpuTensor>,
        dh_n: Option<&GpuTensor>,
        dc_n: Option<&GpuTensor>,
    ) -> Result<Grads> {
        self.check_tape(tape)?;
        let key = self.plan_key(tape.steps, tape.batch, PlanMode::Training, false);
        let slot = crate::gpu::context::lock(&self.inner.cache)
            .entry(key)
            .grads
            .take(|| self.alloc_grads(tape.steps, tape.batch).map(GradsSlot))?;
        let lease: Arc<dyn std::any::Any + Send + Sync> = slot.clone();
        let g = &slot.0;
        let grads = Grads {
            dx: leased(&g.dx, &lease),
            dh0: leased(&g.dh0, &lease),
            dc0: g.dc0.as_ref().map(|c| leased(c, &lease)),
            params: ParamGrads {
                layers: g
                    .params
                    .layers
                    .iter()
                    .map(|l| LayerGrads {
                        w_ih: leased(&l.w_ih, &lease),
                        w_hh: leased(&l.w_hh, &lease),
                        bias: l.bias.as_ref().map(|t| leased(t, &lease)),
                        w_hr: l.w_hr.as_ref().map(|t| leased(t, &lease)),
                        peephole: l.peephole.as_ref().map(|t| leased(t, &lease)),
                    })
                    .collect(),
            },
        };
        let ctx = self.ctx();
        ctx.scoped("backward", || {
            let mut enc = ctx.encoder("rnn backward");
            self.record_backward(&mut enc, tape, dy, dh_n, dc_n, &grads, GradMode::Overwrite)?;
            ctx.submit(enc.finish())?;
            Ok(())
        })?;
        Ok(grads)
    }

    /// New gradients for a pass over `t` steps of `b` rows (parameter gradients zeroed), for
    /// [`Rnn::record_backward`] and [`Rnn::backward_into`] (allocate once, reuse every call).
    pub fn alloc_grads(&self, t: usize, b: usize) -> Result<Grads> {
        let cfg = self.cfg();
        let (h, i, st) = (cfg.hidden_size(), cfg.input_size(), cfg.state_size());
        let ld = cfg.num_layers() * self.dirs();
        let ctx = self.ctx();
        Ok(Grads {
            dx: GpuTensor::uninit(ctx, "dx", &self.io_shape(t, b, i))?,
            dh0: GpuTensor::uninit(ctx, "dh0", &[ld, b, st])?,
            dc0: match cfg.cell() {
                CellKind::Lstm => Some(GpuTensor::uninit(ctx, "dc0", &[ld, b, h])?),
                _ => None,
            },
            params: ParamGrads::zeros(self)?,
        })
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
        self.check_tape(tape)?;
        grads.params.check(self)?;
        let fresh = self.alloc_grads_io_if_needed(grads, tape.steps, tape.batch)?;
        if let Some((dx, dh0, dc0)) = fresh {
            grads.dx = dx;
            grads.dh0 = dh0;
            grads.dc0 = dc0;
        }
        let ctx = self.ctx();
        ctx.scoped("backward", || {
            let mut enc = ctx.encoder("rnn backward");
            self.record_backward(&mut enc, tape, dy, dh_n, dc_n, grads, mode)?;
            ctx.submit(enc.finish())?;
            Ok(())
        })
    }

    /// New `dx`, `dh0`, `dc0` when `grads` has other shapes than a pass over `(t, b)`.
    #[allow(clippy::type_complexity)]
    fn alloc_grads_io_if_needed(
        &self,
        grads: &Grads,
        t: usize,
        b: usize,
    ) -> Result<Option<(GpuTensor, GpuTensor, Option<GpuTensor>)>> {
        let cfg = self.cfg();
        let (h, i, st) = (cfg.hidden_size(), cfg.input_size(), cfg.state_size());
        let ld = cfg.num_layers() * self.dirs();
        let lstm = cfg.cell() == CellKind::Lstm;
        let ok = grads.dx.shape() == self.io_shape(t, b, i)
            && grads.dh0.shape() == [ld, b, st]
            && lstm == grads.dc0.is_some()
            && grads.dc0.as_ref().is_none_or(|c| c.shape() == [ld, b, h]);
        if ok {
            return Ok(None);
        }
        let g = self.alloc_grads_io(t, b)?;
        Ok(Some(g))
    }

    fn alloc_grads_io(
        &self,
        t: usize,
        b: usize,
    ) -> Result<(GpuTensor, GpuTensor, Option<GpuTensor>)> {
        let cfg = self.cfg();
        let (h, i, st) = (cfg.hidden_size(), cfg.input_size(), cfg.state_size());
        let ld = cfg.num_layers() * self.dirs();
        let ctx = self.ctx();
        Ok((
            GpuTensor::uninit(ctx, "dx", &self.io_shape(t, b, i))?,
            GpuTensor::uninit(ctx, "dh0", &[ld, b, st])?,
            match cfg.cell() {
                CellKind::Lstm => Some(GpuTensor::uninit(ctx, "dc0", &[ld, b, h])?),
                _ => None,
            },
        ))
    }

    /// `Err` unless this model recorded `tape` with its current parameters.
    fn check_tape(&self, tape: &Tape) -> Result<()> {
        if tape.model != self.inner.id {
            return Err(Error::TapeMismatch(
                "the tape was recorded by a different model".into(),
            ));
        }
        let now = self.parameter_version();
        if tape.version != now {
            return Err(Error::StaleTape {
                tape_version: tape.version,
                model_version: now,
            });
        }
        Ok(())
    }

    /// Record backpropagation through time for `tape` into the caller's encoder, writing `dx`,
    /// `dh0`, `dc0` and the parameter gradients of `grads` (overwritten or accumulated). With
    /// [`Rnn::record_forward_train`], clipping and an optimiser step recorded into the same
    /// encoder, a whole training step is one submission.
    ///
    /// Errors: as [`Rnn::backward`], plus [`Error::ShapeMismatch`] for gradients of other
    /// shapes and [`Error::BadBuffer`] for tensors that cannot be copied into or from.
    #[allow(clippy::too_many_arguments)]
    pub fn record_backward(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        tape: &Tape,
        dy: Option<&GpuTensor>,
        dh_n: Option<&GpuTensor>,
        dc_n: Option<&GpuTensor>,
        grads: &Grads,
        mode: GradMode,
    ) -> Result<()> {
        self.check_tape(tape)?;
        let cfg = self.cfg();
        let (t, b) = (tape.steps, tape.batch);
        let (h, i, st, dirs) = (
            cfg.hidden_size(),
            cfg.input_size(),
            cfg.state_size(),
            self.dirs(),
        );
        let ld = cfg.num_layers() * dirs;
        let lstm = cfg.cell() == CellKind::Lstm;
        let mut io = Vec::new();
        for (name, tensor, shape, which) in [
            ("dy", dy, self.io_shape(t, b, dirs * st).to_vec(), Io::Dy),
            ("dh_n", dh_n, vec![ld, b, st], Io::DhN),
        ] {
            if let Some(d) = tensor {
                check_shape(name, d, &shape)?;
                check_usage(self.ctx(), name, d, SRC)?;
                io.push((which, d.buffer()));
            }
        }
        if let Some(d) = dc_n {
            if !lstm {
                return Err(Error::ShapeMismatch {
                    name: "dc_n".into(),
                    expected: vec![],
                    got: d.shape().to_vec(),
                });
            }
            check_shape("dc_n", d, &[ld, b, h])?;
            check_usage(self.ctx(), "dc_n", d, SRC)?;
            io.push((Io::DcN, d.buffer()));
        }
        grads.params.check(self)?;
        check_shape("dx", &grads.dx, &self.io_shape(t, b, i))?;
        check_shape("dh0", &grads.dh0, &[ld, b, st])?;
        check_usage(self.ctx(), "dx", &grads.dx, DST)?;
        check_usage(self.ctx(), "dh0", &grads.dh0, DST)?;
        io.push((Io::Dx, grads.dx.buffer()));
        io.push((Io::Dh0, grads.dh0.buffer()));
        self.check_cell_state("dc0", grads.dc0.as_ref(), b)?;
        if let Some(c) = &grads.dc0 {
            check_usage(self.ctx(), "dc0", c, DST)?;
            io.push((Io::Dc0, c.buffer()));
        }
        let ws = &tape.workspace;
        let pass = Pass::Backward {
            accumulate: mode == GradMode::Accumulate,
        };
        let env = Env {
            params: &self.inner.layers,
            grads: Some(&grads.params.layers),
            io,
            preloaded: None,
        };
        let ctx = self.ctx();
        ctx.scoped("record_backward", || {
            if let Some(seed) = tape.dropout_seed {
                ws.set_dropout_seed(ctx, pass, seed);
            }
            ws.record(ctx, encoder, pass, &env)
        })
    }
}
