//! The entry points of a model: `record_*` functions that only record into a caller's
//! encoder, and thin wrappers (`forward`, `forward_train`, `backward`, host-slice
//! conveniences) that take a cached workspace and pooled results, record, and submit once.

use std::sync::Arc;

use crate::config::{CellKind, Layout};
use crate::error::{Error, Result};
use crate::gpu::dispatch::Io;
use crate::gpu::grads::Grads;
use crate::gpu::model::Rnn;
use crate::gpu::plan::{PlanMode, io_shape};
use crate::gpu::tensor::{GpuTensor, download_optional};
use crate::gpu::workspace::{Env, Pass, Workspace};
pub use crate::options::{HostState, RunOptions};
use crate::validate::{check_len, swap_leading};

/// Recurrent state of every layer and direction, in PyTorch's order (`l0`, `l0_reverse`,
/// `l1`, ...).
///
/// Shapes: `h` is `[layers*dirs, B, S]` (`S` = `proj_size` or `H`), `c` is
/// `[layers*dirs, B, H]` (LSTM only).
#[derive(Debug, Clone)]
pub struct State {
    /// Hidden state.
    pub h: GpuTensor,
    /// Cell state (LSTM); `None` for an LSTM is zeros (as PyTorch's functional API allows
    /// `h0` alone).
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

/// A pooled [`Output`] (see [`GpuTensor`] on pooling).
pub(crate) struct OutputSlot(Output);

/// A pooled [`Grads`].
pub(crate) struct GradsSlot(pub(crate) Grads);

pub(crate) fn leased(t: &GpuTensor, lease: &Arc<dyn std::any::Any + Send + Sync>) -> GpuTensor {
    t.clone().with_lease(lease.clone())
}

/// `Err` unless `t` has `usage` (the schedule copies into or out of it) and was not made on
/// another context.
pub(crate) fn check_usage(
    ctx: &crate::gpu::Context,
    name: &str,
    t: &GpuTensor,
    usage: wgpu::BufferUsages,
) -> Result<()> {
    t.check_context(ctx, name)?;
    if !t.buffer().usage().contains(usage) {
        return Err(Error::BadBuffer {
            name: name.into(),
            why: format!("usage {:?} lacks {usage:?}", t.buffer().usage()),
        });
    }
    Ok(())
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

pub(crate) const SRC: wgpu::BufferUsages = wgpu::BufferUsages::COPY_SRC;
pub(crate) const DST: wgpu::BufferUsages = wgpu::BufferUsages::COPY_DST;

impl Rnn {
    /// `[T, B, F]` or `[B, T, F]` in the model's layout.
    pub(crate) fn io_shape(&self, steps: usize, batch: usize, features: usize) -> [usize; 3] {
        io_shape(self.cfg(), steps, batch, features)
    }

    /// Validate a pass's inputs; returns `(T, B)`.
    pub(crate) fn check_inputs(
        &self,
        x: &GpuTensor,
        state: Option<&State>,
    ) -> Result<(usize, usize)> {
        let cfg = self.cfg();
        let i = cfg.input_size();
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
        let (t, b) = match cfg.layout() {
            crate::config::Layout::SeqMajor => (shape[0], shape[1]),
            crate::config::Layout::BatchFirst => (shape[1], shape[0]),
        };
        if t == 0 {
            return Err(Error::ZeroSize("T (timesteps)"));
        }
        if b == 0 {
            return Err(Error::ZeroSize("B (batch)"));
        }
        check_usage(self.ctx(), "x", x, SRC)?;
        let ld = cfg.num_layers() * self.dirs();
        if let Some(s) = state {
            check_shape("h0", &s.h, &[ld, b, cfg.state_size()])?;
            check_usage(self.ctx(), "h0", &s.h, SRC)?;
            // An LSTM given h0 alone starts from c0 = 0 (PyTorch's functional API allows it).
            let h_only = s.c.is_none() && cfg.cell() == CellKind::Lstm;
            if !h_only {
                self.check_cell_state("c0", s.c.as_ref(), b)?;
            }
            if let Some(c) = &s.c {
                check_usage(self.ctx(), "c0", c, SRC)?;
            }
        }
        Ok((t, b))
    }

    /// An LSTM needs a cell-state tensor `[L*D, B, H]`; other cells have none, and one given
    /// is an error rather than silently ignored.
    pub(crate) fn check_cell_state(
        &self,
        name: &str,
        c: Option<&GpuTensor>,
        b: usize,
    ) -> Result<()> {
        let cfg = self.cfg();
        let ld = cfg.num_layers() * self.dirs();
        let lstm = cfg.cell() == CellKind::Lstm;
        match c {
            Some(c) if lstm => check_shape(name, c, &[ld, b, cfg.hidden_size()]),
            None if !lstm => Ok(()),
            c => Err(Error::ShapeMismatch {
                name: name.into(),
                expected: if lstm {
                    vec![ld, b, cfg.hidden_size()]
                } else {
                    vec![]
                },
                got: c.map(|c| c.shape().to_vec()).unwrap_or_default(),
            }),
        }
    }

    /// `Err` unless `out` has the shapes of a pass over `(t, b)` and can be copied into.
    pub(crate) fn check_output(&self, out: &Output, t: usize, b: usize) -> Result<()> {
        let cfg = self.cfg();
        let st = cfg.state_size();
        let ld = cfg.num_layers() * self.dirs();
        check_shape("y", &out.y, &self.io_shape(t, b, self.dirs() * st))?;
        check_shape("h_n", &out.h_n, &[ld, b, st])?;
        check_usage(self.ctx(), "y", &out.y, DST)?;
        check_usage(self.ctx(), "h_n", &out.h_n, DST)?;
        self.check_cell_state("c_n", out.c_n.as_ref(), b)?;
        match &out.c_n {
            Some(c) => check_usage(self.ctx(), "c_n", c, DST),
            None => Ok(()),
        }
    }

    /// Validate host lengths and write them into `ws`'s upload buffer; returns the buffer the
    /// pass reads its lengths from.
    pub(crate) fn lengths_buffer<'w>(
        &self,
        ws: &'w Workspace,
        lengths: Option<&[usize]>,
        t: usize,
        b: usize,
    ) -> Result<&'w wgpu::Buffer> {
        crate::validate::check_lengths(lengths, t, b)?;
        Ok(match lengths {
            Some(l) => {
                let v: Vec<f32> = l.iter().map(|&n| n as f32).collect();
                let buf = ws.scratch(ws.plan.lengths_upload);
                self.ctx()
                    .queue()
                    .write_buffer(buf, 0, bytemuck::cast_slice(&v));
                buf
            }
            None => ws.scratch(ws.plan.full_lengths),
        })
    }

    /// The boundary buffers of a forward pass.
    pub(crate) fn forward_env<'a>(
        &'a self,
        x: &'a GpuTensor,
        state: Option<&'a State>,
        lengths: &'a wgpu::Buffer,
        out: &'a Output,
    ) -> Env<'a> {
        let mut io = vec![
            (Io::X, x.buffer()),
            (Io::Lengths, lengths),
            (Io::Y, out.y.buffer()),
            (Io::HN, out.h_n.buffer()),
        ];
        io.extend(out.c_n.as_ref().map(|c| (Io::CN, c.buffer())));
        if let Some(s) = state {
            io.push((Io::H0, s.h.buffer()));
            io.extend(s.c.as_ref().map(|c| (Io::C0, c.buffer())));
        }
        Env {
            params: &self.inner.layers,
            grads: None,
            io,
            preloaded: None,
        }
    }

    /// Outputs for a pass over `(t, b)`, pooled per shape.
    pub(crate) fn pooled_output(&self, mode: PlanMode, t: usize, b: usize) -> Result<Output> {
        let key = self.plan_key(t, b, mode, false);
        let slot = crate::gpu::context::lock(&self.inner.cache)
            .entry(key)
            .outputs
            .take(|| self.alloc_output(t, b).map(OutputSlot))?;
        let lease: Arc<dyn std::any::Any + Send + Sync> = slot.clone();
        let o = &slot.0;
        Ok(Output {
            y: leased(&o.y, &lease),
            h_n: leased(&o.h_n, &lease),
            c_n: o.c_n.as_ref().map(|c| leased(c, &lease)),
        })
    }

    /// New output tensors for a pass over `t` steps of `b` rows, for the `record_*` functions
    /// (allocate once, reuse every call).
    pub fn alloc_output(&self, t: usize, b: usize) -> Result<Output> {
        let cfg = self.cfg();
        let (h, st, ld) = (
            cfg.hidden_size(),
            cfg.state_size(),
            cfg.num_layers() * self.dirs(),
        );
        let ctx = self.ctx();
        Ok(Output {
            y: GpuTensor::uninit(ctx, "y", &self.io_shape(t, b, self.dirs() * st))?,
            h_n: GpuTensor::uninit(ctx, "h_n", &[ld, b, st])?,
            c_n: match cfg.cell() {
                CellKind::Lstm => Some(GpuTensor::uninit(ctx, "c_n", &[ld, b, h])?),
                _ => None,
            },
        })
    }

    /// Forward pass over a whole sequence (inference: no dropout), recorded into one command
    /// encoder and submitted once. Returns without waiting; [`GpuTensor::download`] waits.
    ///
    /// Shapes (`L` layers, `D` directions, `S` state size): `x [T, B, I]` (`[B, T, I]`
    /// batch-first); `state.h [L*D, B, S]`, `state.c [L*D, B, H]` (zeros when `state` or `c`
    /// is `None`). Returns `y [T, B, D*S]` (or `[B, T, D*S]`), `h_n [L*D, B, S]`,
    /// `c_n [L*D, B, H]`. After the first call of a shape, a call creates no GPU object: the
    /// workspace and the output tensors come from the model's pools.
    ///
    /// Errors: [`Error::ZeroSize`] for `T = 0` or `B = 0`, [`Error::ShapeMismatch`],
    /// [`Error::BadBuffer`] for a tensor that cannot be copied from, [`Error::LimitExceeded`]
    /// when a sequence exceeds a device limit, [`Error::OutOfMemory`], [`Error::Validation`],
    /// [`Error::DeviceLost`] if wgpu reports one.
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
        check_layout(self, opts)?;
        let (t, b) = self.check_inputs(x, state)?;
        let key = self.plan_key(t, b, PlanMode::Inference, opts.lengths.is_some());
        let ws = self.cached_workspace(key)?;
        let out = self.pooled_output(PlanMode::Inference, t, b)?;
        let ctx = self.ctx();
        // The workspace stays ours until the submission: its uploaded lengths are this call's.
        ctx.scoped("forward", || {
            let lengths = self.lengths_buffer(&ws, opts.lengths, t, b)?;
            let mut enc = ctx.encoder("rnn forward");
            ws.record(
                ctx,
                &mut enc,
                Pass::Forward,
                &self.forward_env(x, state, lengths, &out),
            )?;
            ctx.submit(enc.finish())?;
            Ok(())
        })?;
        Ok(out)
    }

    /// Record a forward pass into the caller's encoder (nothing is submitted), writing into
    /// caller-provided outputs of the shapes [`Rnn::forward`] returns. The model's cached
    /// workspace of this shape is used; nothing is allocated after the first call of a shape.
    pub fn record_forward(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        x: &GpuTensor,
        state: Option<&State>,
        out: &Output,
    ) -> Result<()> {
        let (t, b) = self.check_inputs(x, state)?;
        let ws = self.cached_workspace(self.plan_key(t, b, PlanMode::Inference, false))?;
        self.record_forward_in(&ws, encoder, x, state, None, out)
    }

    /// [`Rnn::record_forward`] in a workspace the caller owns ([`Rnn::workspace`]), with row
    /// lengths on the GPU (`[B]` f32 whole numbers, each in `1..=T`; `None`: all `T`).
    ///
    /// Errors as [`Rnn::forward`], plus [`Error::ShapeMismatch`] for a workspace planned for
    /// another shape or mode.
    pub fn record_forward_in(
        &self,
        ws: &Workspace,
        encoder: &mut wgpu::CommandEncoder,
        x: &GpuTensor,
        state: Option<&State>,
        lengths: Option<&GpuTensor>,
        out: &Output,
    ) -> Result<()> {
        let (t, b) = self.check_inputs(x, state)?;
        self.check_output(out, t, b)?;
        self.check_workspace(ws, t, b, None)?;
        let lengths = match lengths {
            Some(_) if !ws.plan.key.lengths => {
                return Err(Error::InvalidConfig(
                    "per-row lengths given to a workspace planned without them \
                     (Rnn::plan with variable_lengths = true)"
                        .into(),
                ));
            }
            Some(l) => {
                check_shape("lengths", l, &[b])?;
                check_usage(self.ctx(), "lengths", l, SRC)?;
                l.buffer()
            }
            None => ws.scratch(ws.plan.full_lengths),
        };
        let ctx = self.ctx();
        ctx.scoped("record_forward", || {
            ws.record(
                ctx,
                encoder,
                Pass::Forward,
                &self.forward_env(x, state, lengths, out),
            )
        })
    }

    fn check_workspace(
        &self,
        ws: &Workspace,
        t: usize,
        b: usize,
        mode: Option<PlanMode>,
    ) -> Result<()> {
        let k = ws.plan.key;
        if k.mode == PlanMode::Stream {
            return Err(Error::InvalidConfig(
                "a workspace planned for PlanMode::Stream keeps a session's state between \
                 steps; a forward pass needs one planned for Inference or Training"
                    .into(),
            ));
        }
        let mode_ok = mode.is_none_or(|m| m == k.mode);
        if k.steps != t || k.batch != b || !mode_ok {
            return Err(Error::ShapeMismatch {
                name: "workspace (T, B)".into(),
                expected: vec![t, b],
                got: vec![k.steps, k.batch],
            });
        }
        Ok(())
    }

    /// Blocking convenience on host slices: upload, forward ([`Rnn::forward_with`]),
    /// download.
    ///
    /// Shapes: `x [T, B, I]` (or `[B, T, I]` for a batch-first model) flattened; `state`:
    /// `h0 [L*D, B, S]`, `c0 [L*D, B, H]` flattened, each zeros when `None` (an LSTM may be
    /// given `h0` alone, as PyTorch's functional API allows); `opts`: per-row lengths, and the
    /// layout of `x` and `y` when it is not the model's (transposed on the host).
    ///
    /// Errors as [`Rnn::forward_with`], naming `x`, `h0` or `c0` for a slice of the wrong
    /// length, and `c0` given to a GRU or RNN.
    pub fn forward_host(
        &self,
        x: &[f32],
        steps: usize,
        batch: usize,
        state: HostState<'_>,
        opts: &RunOptions<'_>,
    ) -> Result<HostOutput> {
        let cfg = self.cfg();
        let (i, h, st) = (cfg.input_size(), cfg.hidden_size(), cfg.state_size());
        if steps == 0 {
            return Err(Error::ZeroSize("T (timesteps)"));
        }
        if batch == 0 {
            return Err(Error::ZeroSize("B (batch)"));
        }
        let ld = cfg.num_layers() * self.dirs();
        let ctx = self.ctx();
        // A call in the other layout is transposed here, on the host.
        let swap = opts.layout_or(cfg.layout()) != cfg.layout();
        let x_model;
        let x = match swap {
            false => x,
            true => {
                check_len("x", x, &[steps * batch * i])?;
                x_model = match cfg.layout() {
                    // x is batch-first [B, T, I]; the model wants [T, B, I], and vice versa.
                    Layout::SeqMajor => swap_leading(x, batch, steps, i),
                    Layout::BatchFirst => swap_leading(x, steps, batch, i),
                };
                &x_model
            }
        };
        let xt = GpuTensor::upload(ctx, x, &self.io_shape(steps, batch, i))
            .map_err(|e| rename(e, "x"))?;
        let h_state = state
            .h0
            .map(|h0| GpuTensor::upload(ctx, h0, &[ld, batch, st]).map_err(|e| rename(e, "h0")))
            .transpose()?;
        let c_state = match (cfg.cell(), state.c0) {
            (_, None) => None,
            (CellKind::Lstm, Some(c0)) => {
                Some(GpuTensor::upload(ctx, c0, &[ld, batch, h]).map_err(|e| rename(e, "c0"))?)
            }
            (_, Some(c0)) => {
                return Err(Error::ShapeMismatch {
                    name: format!("c0 (a {:?} has no cell state)", cfg.cell()),
                    expected: vec![],
                    got: vec![c0.len()],
                });
            }
        };
        // A missing h0 beside a given c0 is zeros; a missing c0 is zeros (not bound).
        let state = match (h_state, c_state) {
            (None, None) => None,
            (h_given, c) => Some(State {
                h: match h_given {
                    Some(h) => h,
                    None => GpuTensor::zeros(ctx, &[ld, batch, st])?,
                },
                c,
            }),
        };
        let model_opts = RunOptions {
            layout: None,
            ..*opts
        };
        let out = self.forward_with(&xt, state.as_ref(), &model_opts)?;
        let y = out.y.download(ctx)?;
        let y = match swap {
            false => y,
            true => match cfg.layout() {
                Layout::SeqMajor => swap_leading(&y, steps, batch, self.dirs() * st),
                Layout::BatchFirst => swap_leading(&y, batch, steps, self.dirs() * st),
            },
        };
        Ok(HostOutput {
            y,
            h_n: out.h_n.download(ctx)?,
            c_n: download_optional(ctx, out.c_n.as_ref())?,
        })
    }
}

/// `Err` when a GPU-resident call asks for a layout other than the model's (its workspaces are
/// planned for the model's layout).
pub(crate) fn check_layout(rnn: &Rnn, opts: &RunOptions<'_>) -> Result<()> {
    match opts.layout {
        Some(l) if l != rnn.cfg().layout() => Err(Error::InvalidConfig(format!(
            "RunOptions::layout {l:?} on a GPU-resident call of a {:?} model: its workspaces \
             are planned for the model's layout; build the model with .layout({l:?}), or use \
             forward_host, which transposes on the host",
            rnn.cfg().layout()
        ))),
        _ => Ok(()),
    }
}
