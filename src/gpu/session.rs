//! Streaming: [`Session`] keeps every layer's recurrent state on the GPU between calls and
//! advances all layers by one timestep per [`Session::step`], in one submission.

use crate::config::{CellKind, Direction, Layout};
use crate::error::{Error, Result};
use crate::gpu::rnn::{Output, Rnn, State, check_shape};
use crate::gpu::tensor::GpuTensor;

/// A stream of timesteps through an [`Rnn`] (see [`Rnn::session`]): per-row state of every
/// layer lives on the GPU, so a server can multiplex independent streams as the rows of one
/// batch and restart any of them with [`Session::reset`].
///
/// Feeding `x_0 .. x_{T-1}` one step at a time gives the same outputs, bit for bit, as one
/// [`Rnn::forward`] over the whole sequence: each step runs the same kernels on the same
/// values (tested in `tests/session.rs`).
#[derive(Debug)]
pub struct Session<'r> {
    rnn: &'r Rnn,
    batch: usize,
    state: State,
    lengths: GpuTensor,
}

impl Rnn {
    /// Start a streaming session of `batch` rows with zero state.
    ///
    /// Errors: [`Error::ZeroSize`] for `batch = 0`; [`Error::Unsupported`] for a model with a
    /// reverse direction (it needs the whole sequence before its first output).
    pub fn session(&self, batch: usize) -> Result<Session<'_>> {
        if batch == 0 {
            return Err(Error::ZeroSize("B (batch)"));
        }
        if self.cfg.direction() != Direction::Forward {
            return Err(Error::Unsupported(format!(
                "a streaming session of a {:?} model: a reverse direction reads the sequence \
                 from its end, so it cannot advance one step at a time",
                self.cfg.direction()
            )));
        }
        let ctx = &self.ctx;
        let (l, h, st) = (
            self.cfg.num_layers(),
            self.cfg.hidden_size(),
            self.cfg.state_size(),
        );
        Ok(Session {
            rnn: self,
            batch,
            state: State {
                h: GpuTensor::zeros(ctx, &[l, batch, st])?,
                c: match self.cfg.cell() {
                    CellKind::Lstm => Some(GpuTensor::zeros(ctx, &[l, batch, h])?),
                    _ => None,
                },
            },
            lengths: GpuTensor::upload(ctx, &vec![1.0; batch], &[batch])?,
        })
    }
}

impl Session<'_> {
    /// Rows of the batch.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The current state: `h [L, B, S]`, `c [L, B, H]` (LSTM).
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Advance every row by one timestep through all layers: `x_t [B, I]` in, the last
    /// layer's `y_t [B, S]` out. One command encoder, one submission; returns without waiting.
    ///
    /// Errors: [`Error::ShapeMismatch`] for `x_t` not `[B, I]`.
    pub fn step(&mut self, x_t: &GpuTensor) -> Result<GpuTensor> {
        let rnn = self.rnn;
        let (b, i, st) = (self.batch, rnn.cfg.input_size(), rnn.cfg.state_size());
        check_shape("x_t", x_t, &[b, i])?;
        let shape = match rnn.cfg.layout() {
            Layout::SeqMajor => [1, b, i],
            Layout::BatchFirst => [b, 1, i],
        };
        let x = GpuTensor::from_buffer(x_t.buffer().clone(), &shape)?;
        let plan = rnn.plan(&x, Some(&self.state), None)?;
        // The state tensors are both the initial and the final state: each layer reads its
        // slot before it writes it back.
        let out = Output {
            y: GpuTensor::uninit(&rnn.ctx, "session y", &rnn.io_shape(1, b, st))?,
            h_n: self.state.h.clone(),
            c_n: self.state.c.clone(),
        };
        rnn.ctx.scoped(|| {
            let mut enc =
                rnn.ctx
                    .device()
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("rnn session step"),
                    });
            rnn.record_stack(
                &mut enc,
                &x,
                Some(&self.state),
                &out,
                &self.lengths,
                &plan,
                None,
            )?;
            rnn.ctx.submit(enc.finish());
            Ok(())
        })?;
        GpuTensor::from_buffer(out.y.buffer().clone(), &[b, st])
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
        let rnn = self.rnn;
        let (layers, h, st) = (
            rnn.cfg.num_layers(),
            rnn.cfg.hidden_size(),
            rnn.cfg.state_size(),
        );
        let mut enc = rnn
            .ctx
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("rnn session reset"),
            });
        for l in 0..layers {
            for (b, _) in rows.iter().enumerate().filter(|r| *r.1) {
                let row = l * self.batch + b;
                let hb = self.state.h.buffer();
                enc.clear_buffer(hb, (row * st) as u64 * 4, Some(st as u64 * 4));
                if let Some(c) = &self.state.c {
                    enc.clear_buffer(c.buffer(), (row * h) as u64 * 4, Some(h as u64 * 4));
                }
            }
        }
        rnn.ctx.scoped(|| {
            rnn.ctx.submit(enc.finish());
            Ok(())
        })
    }
}
