//! One recurrent step with PyTorch's cell semantics: `nn.LSTMCell`, `nn.GRUCell`,
//! `nn.RNNCell`.
//!
//! A [`Cell`] is a one-layer, one-direction model run as a one-step sequence: the same packed
//! weights, plans and kernels as [`Rnn`], with the `[T = 1]` axis added and removed for the
//! caller. Its state_dict (`weight_ih [G*H, I]`, `weight_hh [G*H, H]`, `bias_ih [G*H]`,
//! `bias_hh [G*H]`) loads with [`Weights::load`]; PyTorch's names without a layer suffix are
//! read as layer 0.
//!
//! ```no_run
//! use rnn_wgpu::{Cell, Context, HostState, Weights};
//! # fn main() -> Result<(), rnn_wgpu::Error> {
//! let ctx = Context::new()?;
//! // torch: cell = nn.LSTMCell(16, 32); save_file(cell.state_dict(), "cell.safetensors")
//! let cell = Cell::new(&ctx, &Weights::load("cell.safetensors")?)?;
//! let (b, x) = (4, vec![0.5f32; 4 * 16]);                     // x [B, I]
//! let s1 = cell.forward_host(&x, b, HostState::zeros())?;    // (h', c') = cell(x)
//! let c1 = s1.c.as_deref().unwrap_or_default();
//! let s2 = cell.forward_host(&x, b, HostState::hc(&s1.h, c1))?; // cell(x, (h', c'))
//! assert_eq!(s2.h.len(), b * 32);
//! # Ok(()) }
//! ```

use crate::config::{CellKind, Direction, RnnConfig};
use crate::error::{Error, Result};
use crate::gpu::context::Context;
use crate::gpu::grads::{ParamGrads, Tape};
use crate::gpu::model::Rnn;
use crate::gpu::run::State;
use crate::gpu::tensor::{GpuTensor, download_optional};
use crate::options::HostState;
use crate::weights::{LayerWeights, Weights};

/// A recurrent cell on the GPU, stepped one timestep per call (see the module docs).
///
/// Shapes: `x [B, I]`, `h [B, S]`, `c [B, H]` (LSTM only); `S` is `H`, or `P` for an LSTM
/// with `proj_size`. Any one-layer, one-direction configuration is a cell, the ONNX variants
/// included.
#[derive(Debug, Clone)]
pub struct Cell {
    rnn: Rnn,
}

/// A cell's state on the GPU: what a step returns and the next step takes.
#[derive(Debug, Clone)]
pub struct CellState {
    /// `[B, S]`.
    pub h: GpuTensor,
    /// `[B, H]`: LSTM only (`None` for GRU and RNN).
    pub c: Option<GpuTensor>,
}

/// A cell's state on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostCellState {
    /// `[B, S]`.
    pub h: Vec<f32>,
    /// `[B, H]`: LSTM only.
    pub c: Option<Vec<f32>>,
}

/// What [`Cell::backward`] needs from [`Cell::forward_train`], kept on the GPU.
#[derive(Debug, Clone)]
pub struct CellTape {
    tape: Tape,
}

/// The gradients of one cell step, on the GPU.
#[derive(Debug, Clone)]
pub struct CellGrads {
    /// `[B, I]`.
    pub dx: GpuTensor,
    /// `[B, S]`: the gradient reaching the input state `h`.
    pub dh: GpuTensor,
    /// `[B, H]`: the gradient reaching the input state `c` (LSTM only).
    pub dc: Option<GpuTensor>,
    /// The parameter gradients, in the packed layout of [`Rnn::parameters`] (one
    /// layer-direction).
    pub params: ParamGrads,
}

/// [`CellGrads`] downloaded; parameters in PyTorch layout.
#[derive(Debug, Clone, PartialEq)]
pub struct HostCellGrads {
    /// `[B, I]`.
    pub dx: Vec<f32>,
    /// `[B, S]`.
    pub dh: Vec<f32>,
    /// `[B, H]` (LSTM only).
    pub dc: Option<Vec<f32>>,
    /// `weight_ih [G*H, I]`, `weight_hh [G*H, S]`, `bias_ih`/`bias_hh [G*H]` (`None` without
    /// bias), ...
    pub params: LayerWeights,
    config: RnnConfig,
}

impl HostCellGrads {
    /// The parameter gradients under `nn.LSTMCell`'s `named_parameters()` names (`weight_ih`,
    /// `weight_hh`, `bias_ih`, `bias_hh`; our `weight_hr`, `peephole` for those variants),
    /// with their shapes. A cell without bias has no `bias_*` entries.
    pub fn named_parameters(&self) -> Vec<(String, Vec<usize>, &[f32])> {
        crate::weights::named_layer_tensors(&self.config, std::slice::from_ref(&self.params))
            .into_iter()
            .map(|(name, shape, data)| {
                let base = name.strip_suffix("_l0").unwrap_or(&name).to_string();
                (base, shape, data)
            })
            .collect()
    }

    /// [`HostCellGrads::named_parameters`], then the input and state gradients: `dx [B, I]`,
    /// `dh [B, S]` and, for an LSTM cell, `dc [B, H]`.
    pub fn named(&self) -> Vec<(String, Vec<usize>, &[f32])> {
        let cfg = &self.config;
        let b = self.dx.len() / cfg.input_size().max(1);
        let mut out = self.named_parameters();
        out.push(("dx".into(), vec![b, cfg.input_size()], &self.dx));
        out.push(("dh".into(), vec![b, cfg.state_size()], &self.dh));
        if let Some(dc) = &self.dc {
            out.push(("dc".into(), vec![b, cfg.hidden_size()], dc));
        }
        out
    }

    /// Serialise [`HostCellGrads::named`] as a safetensors file (f32).
    ///
    /// Errors: [`Error::ShapeMismatch`] naming a tensor whose length no longer fits its shape
    /// (after an edit of the public fields), [`Error::MissingTensor`] /
    /// [`Error::InvalidConfig`] as [`crate::Weights::validate`].
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        crate::weights::validate_layers(&self.config, std::slice::from_ref(&self.params))?;
        let named = self.named();
        for (name, shape, data) in &named {
            crate::validate::check_len(name, data, shape)?;
        }
        crate::weights::write_safetensors(named)
    }

    /// Write [`HostCellGrads::to_safetensors`] to a file; nothing is written when it fails.
    ///
    /// Errors: as [`HostCellGrads::to_safetensors`], plus [`Error::Io`].
    pub fn save(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        std::fs::write(path, self.to_safetensors()?)?;
        Ok(())
    }
}

impl Cell {
    /// Pack and upload a cell's weights (any [`Weights`] of one layer and one direction, such
    /// as [`Weights::load`] gives for an `nn.LSTMCell` state_dict).
    ///
    /// Errors: [`Error::InvalidConfig`] for weights of several layers or two directions;
    /// otherwise as [`Rnn::new`].
    pub fn new(ctx: &Context, weights: &Weights) -> Result<Cell> {
        let cfg = weights.config();
        if cfg.num_layers() != 1 || cfg.direction() == Direction::Bidirectional {
            return Err(Error::InvalidConfig(format!(
                "a cell has one layer and one direction; these weights have {} layer(s), \
                 direction {:?} (use Rnn for a stack)",
                cfg.num_layers(),
                cfg.direction()
            )));
        }
        Ok(Cell {
            rnn: Rnn::new(ctx, weights)?,
        })
    }

    /// The configuration (one layer, one direction).
    pub fn config(&self) -> &RnnConfig {
        self.rnn.config()
    }

    /// The one-step model underneath: its parameters, optimisers and clipping work as for any
    /// [`Rnn`] ([`Rnn::parameters`], [`Rnn::set_weights`], ...).
    pub fn rnn(&self) -> &Rnn {
        &self.rnn
    }

    /// `(h', c') = cell(x, (h, c))`: one step, one submission. `state` `None` is zeros, as
    /// is a missing `c` of an LSTM.
    ///
    /// Shapes: `x [B, I]`, `state.h [B, S]`, `state.c [B, H]` in; the same out.
    ///
    /// Errors: [`Error::ShapeMismatch`] naming `x`, `h` or `c` when not of those shapes (or a
    /// `c` given to a GRU or RNN); [`Error::ZeroSize`] for `B = 0`; as [`Rnn::forward`].
    pub fn forward(&self, x: &GpuTensor, state: Option<&CellState>) -> Result<CellState> {
        let (x, state) = self.sequence_inputs(x, state)?;
        let out = self.rnn.forward(&x, state.as_ref())?;
        self.cell_state(out.h_n, out.c_n)
    }

    /// [`Cell::forward`] keeping what [`Cell::backward`] needs.
    ///
    /// Errors: as [`Cell::forward`].
    pub fn forward_train(
        &self,
        x: &GpuTensor,
        state: Option<&CellState>,
    ) -> Result<(CellState, CellTape)> {
        let (x, state) = self.sequence_inputs(x, state)?;
        let (out, tape) = self.rnn.forward_train(&x, state.as_ref())?;
        Ok((self.cell_state(out.h_n, out.c_n)?, CellTape { tape }))
    }

    /// Gradients of a loss `L` through one step: given `dh = dL/dh' [B, S]` and (LSTM)
    /// `dc = dL/dc' [B, H]` (each `None` = zeros), returns `dL/dx [B, I]`, `dL/dh [B, S]`,
    /// `dL/dc [B, H]` and every parameter gradient. One submission.
    ///
    /// Errors: [`Error::ShapeMismatch`] for a wrong-shaped `dh` or `dc`; as [`Rnn::backward`]
    /// (a tape of another cell, or one recorded before the parameters changed).
    pub fn backward(
        &self,
        tape: &CellTape,
        dh: Option<&GpuTensor>,
        dc: Option<&GpuTensor>,
    ) -> Result<CellGrads> {
        let b = tape.tape.batch();
        let dh = self.state_tensor("dh", dh, b, self.config().state_size())?;
        let dc = match (self.config().cell(), dc) {
            (CellKind::Lstm, dc) => self.state_tensor("dc", dc, b, self.config().hidden_size())?,
            (_, None) => None,
            (_, Some(dc)) => return Err(no_cell_state("dc", dc)),
        };
        let g = self
            .rnn
            .backward(&tape.tape, None, dh.as_ref(), dc.as_ref())?;
        let (i, s, h) = self.sizes();
        Ok(CellGrads {
            dx: g.dx.reshape(&[b, i])?,
            dh: g.dh0.reshape(&[b, s])?,
            dc: g.dc0.map(|c| c.reshape(&[b, h])).transpose()?,
            params: g.params,
        })
    }

    /// [`Cell::forward`] on host slices: `x [B, I]`, and the state as for [`Rnn::forward_host`]
    /// with one layer-direction: `state.h0 [B, S]`, `state.c0 [B, H]` (LSTM; each `None` =
    /// zeros).
    ///
    /// Errors: as [`Cell::forward`], with the slice lengths checked (named `x`, `h`, `c`).
    pub fn forward_host(
        &self,
        x: &[f32],
        batch: usize,
        state: HostState<'_>,
    ) -> Result<HostCellState> {
        let (h, c) = (state.h0, state.c0);
        let ctx = self.rnn.ctx();
        let (i, s, hs) = self.sizes();
        if batch == 0 {
            return Err(Error::ZeroSize("B (batch)"));
        }
        let x = upload(ctx, "x", x, &[batch, i])?;
        let state = match (h, c) {
            (None, None) => None,
            (h, c) => Some(CellState {
                h: match h {
                    Some(h) => upload(ctx, "h", h, &[batch, s])?,
                    None => GpuTensor::zeros(ctx, &[batch, s])?,
                },
                c: c.map(|c| upload(ctx, "c", c, &[batch, hs])).transpose()?,
            }),
        };
        let out = self.forward(&x, state.as_ref())?;
        Ok(HostCellState {
            h: out.h.download(ctx)?,
            c: download_optional(ctx, out.c.as_ref())?,
        })
    }

    /// `x [B, I]` and the state as the one-step sequence the model runs: `x` as `[1, B, I]`
    /// (or `[B, 1, I]`: the same memory), states as `[1, B, ·]`.
    fn sequence_inputs(
        &self,
        x: &GpuTensor,
        state: Option<&CellState>,
    ) -> Result<(GpuTensor, Option<State>)> {
        let (i, s, h) = self.sizes();
        let b = match x.shape() {
            &[b, xi] if xi == i => b,
            other => {
                return Err(Error::ShapeMismatch {
                    name: "x".into(),
                    expected: vec![other.first().copied().unwrap_or(0), i],
                    got: other.to_vec(),
                });
            }
        };
        if b == 0 {
            return Err(Error::ZeroSize("B (batch)"));
        }
        let x = x.reshape(&self.rnn.io_shape(1, b, i))?;
        let Some(state) = state else {
            return Ok((x, None));
        };
        let h_seq = self
            .state_tensor("h", Some(&state.h), b, s)?
            .expect("given");
        let c_seq = match (self.config().cell(), &state.c) {
            (CellKind::Lstm, None) => Some(GpuTensor::zeros(self.rnn.ctx(), &[1, b, h])?),
            (CellKind::Lstm, c) => self.state_tensor("c", c.as_ref(), b, h)?,
            (_, None) => None,
            (_, Some(c)) => return Err(no_cell_state("c", c)),
        };
        Ok((x, Some(State { h: h_seq, c: c_seq })))
    }

    /// A `[B, n]` state tensor as `[1, B, n]`, checked.
    fn state_tensor(
        &self,
        name: &str,
        t: Option<&GpuTensor>,
        b: usize,
        n: usize,
    ) -> Result<Option<GpuTensor>> {
        let Some(t) = t else { return Ok(None) };
        if t.shape() != [b, n] {
            return Err(Error::ShapeMismatch {
                name: name.into(),
                expected: vec![b, n],
                got: t.shape().to_vec(),
            });
        }
        Ok(Some(t.reshape(&[1, b, n])?))
    }

    /// `h_n [1, B, S]`, `c_n [1, B, H]` as a [`CellState`].
    fn cell_state(&self, h_n: GpuTensor, c_n: Option<GpuTensor>) -> Result<CellState> {
        let (b, s, h) = (h_n.shape()[1], self.config().state_size(), self.sizes().2);
        Ok(CellState {
            h: h_n.reshape(&[b, s])?,
            c: c_n.map(|c| c.reshape(&[b, h])).transpose()?,
        })
    }

    /// `(I, S, H)`.
    fn sizes(&self) -> (usize, usize, usize) {
        let cfg = self.config();
        (cfg.input_size(), cfg.state_size(), cfg.hidden_size())
    }
}

impl CellGrads {
    /// Download; parameter gradients unpacked to PyTorch layout.
    ///
    /// Errors: [`Error::ShapeMismatch`] for gradients of another cell's shapes.
    pub fn to_host(&self, cell: &Cell) -> Result<HostCellGrads> {
        let ctx = cell.rnn.ctx();
        let mut params = self.params.to_host(&cell.rnn)?;
        let params = params
            .pop()
            .ok_or_else(|| Error::Internal("a cell's gradients hold one layer-direction".into()))?;
        Ok(HostCellGrads {
            dx: self.dx.download(ctx)?,
            dh: self.dh.download(ctx)?,
            dc: download_optional(ctx, self.dc.as_ref())?,
            params,
            config: cell.config().clone(),
        })
    }
}

fn upload(ctx: &Context, name: &str, data: &[f32], shape: &[usize]) -> Result<GpuTensor> {
    let n: usize = shape.iter().product();
    if data.len() != n {
        return Err(Error::ShapeMismatch {
            name: name.into(),
            expected: shape.to_vec(),
            got: vec![data.len()],
        });
    }
    GpuTensor::upload(ctx, data, shape)
}

fn no_cell_state(name: &str, t: &GpuTensor) -> Error {
    Error::ShapeMismatch {
        name: format!("{name} (only an LSTM has a cell state)"),
        expected: vec![],
        got: t.shape().to_vec(),
    }
}
