//! Streaming: a [`Session`] keeps every layer's recurrent state on the GPU, inside its own
//! workspace ([`PlanMode::Stream`]), and advances all layers by one timestep per
//! [`Session::step`], in one submission: a step copies in `x_t` (from the host it is written in
//! place), and out only `y_t`, and creates no GPU object. Each layer's state ping-pongs between
//! two buffers (an even step reads one and writes the other, an odd step the other way round),
//! so no step copies its state. [`Session::record_step`] records the same step into a caller's
//! encoder instead, beside the caller's own work (a read-out, other sessions' steps), so
//! several steps share one submission.

use std::sync::Arc;

use crate::config::CellKind;
use crate::error::{Error, Result};
use crate::gpu::State;
use crate::gpu::dispatch::Io;
use crate::gpu::model::{Pool, Rnn};
use crate::gpu::plan::PlanMode;
use crate::gpu::run::{check_shape, check_usage};
use crate::gpu::tensor::GpuTensor;
use crate::gpu::workspace::{Env, Pass, Workspace};

/// A stream of timesteps through an [`Rnn`] (see [`Rnn::session`]): per-row state of every
/// layer lives on the GPU, so a server can multiplex independent streams as the rows of one
/// batch and restart any of them with [`Session::reset`].
///
/// Feeding `x_0 .. x_{T-1}` one step at a time gives the same outputs, bit for bit, as one
/// [`Rnn::forward`] over the whole sequence: each step runs the same kernels on the same
/// values (tested in `tests/session.rs`). A session owns a handle to its model (no lifetime),
/// and is `Send`.
#[derive(Debug)]
pub struct Session {
    rnn: Rnn,
    batch: usize,
    /// A snapshot of the state the workspace holds, refreshed by [`Session::state`].
    state: State,
    workspace: Workspace,
    /// `y_t` tensors; one is reused while the caller holds none of them.
    outputs: Pool<GpuTensor>,
    /// Steps recorded so far: their parity says which of each layer's two state buffers the
    /// next step reads.
    steps: u64,
}

impl Rnn {
    /// Start a streaming session of `batch` rows with zero state. The session keeps a clone
    /// of this model handle.
    ///
    /// Errors: [`Error::ZeroSize`] for `batch = 0`; [`Error::Unsupported`] for a model with a
    /// reverse direction (it needs the whole sequence before its first output).
    pub fn session(&self, batch: usize) -> Result<Session> {
        // The Stream plan refuses B = 0 and reverse directions, before any allocation.
        let plan = self.plan(1, batch, PlanMode::Stream, false)?;
        let cfg = self.cfg();
        let ctx = self.ctx();
        let (l, h, st) = (cfg.num_layers(), cfg.hidden_size(), cfg.state_size());
        Ok(Session {
            rnn: self.clone(),
            batch,
            state: State {
                h: GpuTensor::zeros(ctx, &[l, batch, st])?,
                c: match cfg.cell() {
                    CellKind::Lstm => Some(GpuTensor::zeros(ctx, &[l, batch, h])?),
                    _ => None,
                },
            },
            workspace: self.workspace(&plan)?,
            outputs: Pool::default(),
            steps: 0,
        })
    }
}

impl Session {
    /// Rows of the batch.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The current state, `h [L, B, S]` and `c [L, B, H]` (LSTM), copied out of the
    /// session's workspace (where the steps keep it) into the returned tensors: one
    /// submission, no wait. Steps recorded with [`Session::record_step`] must have been
    /// submitted first.
    ///
    /// Errors: a GPU failure of the copy ([`Error::Validation`], [`Error::DeviceLost`]).
    pub fn state(&mut self) -> Result<&State> {
        let ctx = self.rnn.ctx().clone();
        let (b, h, st) = (
            self.batch as u64,
            self.rnn.cfg().hidden_size() as u64,
            self.rnn.cfg().state_size() as u64,
        );
        ctx.scoped("Session::state", || {
            let mut enc = ctx.encoder("rnn session state");
            let ws = &self.workspace;
            for (l, place) in ws.plan.resident.iter().enumerate() {
                let l = l as u64;
                let (h_words, c_words) = (b * st, b * h);
                enc.copy_buffer_to_buffer(
                    ws.scratch(place.current(self.steps)),
                    0,
                    self.state.h.buffer(),
                    l * h_words * 4,
                    h_words * 4,
                );
                if let (Some(from), Some(to)) = (place.c, &self.state.c) {
                    enc.copy_buffer_to_buffer(
                        ws.scratch(from),
                        0,
                        to.buffer(),
                        l * c_words * 4,
                        c_words * 4,
                    );
                }
            }
            ctx.submit(enc.finish())?;
            Ok(())
        })?;
        Ok(&self.state)
    }

    /// The model this session runs.
    pub fn model(&self) -> &Rnn {
        &self.rnn
    }

    /// Advance every row by one timestep through all layers: `x_t [B, I]` in, the last
    /// layer's `y_t [B, S]` out, on the GPU (download it only if you need it on the host). One
    /// command encoder, one submission; returns without waiting.
    ///
    /// Errors: [`Error::ShapeMismatch`] for `x_t` not `[B, I]`, [`Error::BadBuffer`] for one
    /// that cannot be copied from.
    pub fn step(&mut self, x_t: &GpuTensor) -> Result<GpuTensor> {
        let (b, i) = (self.batch, self.rnn.cfg().input_size());
        check_shape("x_t", x_t, &[b, i])?;
        check_usage(self.rnn.ctx(), "x_t", x_t, wgpu::BufferUsages::COPY_SRC)?;
        let x = x_t.buffer().clone();
        self.run(Some(&x), None)
    }

    /// [`Session::step`] from host memory: `x_t` (`B * I` values) is written straight where the
    /// step reads it, in the session's workspace (`queue.write_buffer`, no allocation, no
    /// copy).
    pub fn step_host(&mut self, x_t: &[f32]) -> Result<GpuTensor> {
        let (b, i) = (self.batch, self.rnn.cfg().input_size());
        if x_t.len() != b * i {
            return Err(Error::ShapeMismatch {
                name: "x_t".into(),
                expected: vec![b, i],
                got: vec![x_t.len()],
            });
        }
        let ws = &self.workspace;
        let first = ws.plan.resident.first();
        let Some((buf, at)) =
            first.and_then(|place| Some((place.current(self.steps), place.x_at?)))
        else {
            return Err(Error::Internal(
                "a Stream plan without its first layer's input place".into(),
            ));
        };
        // Queue writes land before the next submission's commands, and the last step that
        // read this buffer was submitted before this one.
        self.rnn.ctx().queue().write_buffer(
            ws.scratch(buf),
            at as u64 * 4,
            bytemuck::cast_slice(x_t),
        );
        self.run(None, Some(Io::X))
    }

    /// Record one step into the caller's `encoder` (nothing is submitted): `x_t [B, I]` in,
    /// the last layer's `y_t [B, S]` out, as [`Session::step`] but composable with a
    /// framework's own work in the same submission (for example a read-out of `y_t`, or the
    /// steps of several sessions). The state advances in recording order: submit the
    /// encoders in the order their steps were recorded, and before the session's next
    /// [`Session::step`] or [`Session::step_host`] (those submit at once, and `step_host`'s
    /// `queue.write_buffer` lands before any encoder submitted after it). Nothing is allocated
    /// after the session's first step.
    ///
    /// Errors: as [`Session::step`].
    pub fn record_step(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        x_t: &GpuTensor,
    ) -> Result<GpuTensor> {
        let (b, i) = (self.batch, self.rnn.cfg().input_size());
        check_shape("x_t", x_t, &[b, i])?;
        check_usage(self.rnn.ctx(), "x_t", x_t, wgpu::BufferUsages::COPY_SRC)?;
        let x = x_t.buffer().clone();
        let ctx = self.rnn.ctx().clone();
        ctx.scoped("Session::record_step", || {
            self.record(encoder, Some(&x), None)
        })
    }

    /// One step in its own submission (see [`Session::record`] for the arguments).
    fn run(&mut self, x: Option<&wgpu::Buffer>, preloaded: Option<Io>) -> Result<GpuTensor> {
        let ctx = self.rnn.ctx().clone();
        ctx.scoped("session step", || {
            let mut enc = ctx.encoder("rnn session step");
            let y = self.record(&mut enc, x, preloaded)?;
            ctx.submit(enc.finish())?;
            Ok(y)
        })
    }

    /// Record one step reading `x` (`[B, I]`; `None` when `preloaded` says it is in place);
    /// returns the leased `y_t`.
    fn record(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        x: Option<&wgpu::Buffer>,
        preloaded: Option<Io>,
    ) -> Result<GpuTensor> {
        let rnn = &self.rnn;
        let ctx = rnn.ctx();
        let (b, st) = (self.batch, rnn.cfg().state_size());
        let shape = [b, st];
        let y = self
            .outputs
            .take(|| GpuTensor::uninit(ctx, "session y_t", &shape))?;
        let ws = &self.workspace;
        let lengths = ws.scratch(ws.plan.full_lengths);
        // The state stays in the workspace: only x_t comes in and y_t goes out.
        let mut io = vec![(Io::Lengths, lengths), (Io::Y, y.buffer())];
        io.extend(x.map(|x| (Io::X, x)));
        let env = Env {
            params: &rnn.inner.layers,
            grads: None,
            io,
            preloaded,
        };
        let pass = match self.steps % 2 {
            0 => Pass::Forward,
            _ => Pass::ForwardOdd,
        };
        ws.record(ctx, encoder, pass, &env)?;
        self.steps += 1;
        let lease: Arc<dyn std::any::Any + Send + Sync> = y.clone();
        Ok(GpuTensor::clone(&y).with_lease(lease))
    }

    /// Zero the state of every row whose `rows` entry is true (a new stream starts there); the
    /// other rows are untouched. One submission of buffer clears.
    ///
    /// Errors: [`Error::ShapeMismatch`] for `rows` not of `B` entries.
    pub fn reset(&mut self, rows: &[bool]) -> Result<()> {
        if rows.len() != self.batch {
            return Err(Error::ShapeMismatch {
                name: "reset mask".into(),
                expected: vec![self.batch],
                got: vec![rows.len()],
            });
        }
        let cfg = self.rnn.cfg();
        let (h, st) = (cfg.hidden_size() as u64, cfg.state_size() as u64);
        let ctx = self.rnn.ctx();
        let ws = &self.workspace;
        ctx.scoped("session reset", || {
            let mut enc = ctx.encoder("rnn session reset");
            for place in &ws.plan.resident {
                for (b, _) in rows.iter().enumerate().filter(|r| *r.1) {
                    let b = b as u64;
                    let h_now = ws.scratch(place.current(self.steps));
                    enc.clear_buffer(h_now, b * st * 4, Some(st * 4));
                    if let Some(c) = place.c {
                        enc.clear_buffer(ws.scratch(c), b * h * 4, Some(h * 4));
                    }
                }
            }
            ctx.submit(enc.finish())?;
            Ok(())
        })
    }
}
