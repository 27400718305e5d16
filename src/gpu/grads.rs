//! What training hands back: the [`Tape`] a training forward pass leaves for backward, and the
//! gradients ([`Grads`], [`ParamGrads`]) backward writes.

use std::sync::Arc;

use crate::config::{Layout, RnnConfig};
use crate::error::{Error, Result};
use crate::gpu::context::Context;
use crate::gpu::model::{LayerView, PackedLayer, Rnn};
use crate::gpu::tensor::{GpuTensor, download_optional};
use crate::gpu::workspace::Workspace;
use crate::validate::check_len;
use crate::weights::{LayerWeights, named_layer_tensors, validate_layers, write_safetensors};

/// What backward needs from a forward pass, kept on the GPU in the pass's workspace.
///
/// The tape holds that workspace: while it lives, no other pass of its model uses it. It
/// remembers the model's parameter version, and [`Rnn::backward`] refuses it
/// ([`Error::StaleTape`]) once the parameters have changed. When you record into your own
/// encoder, keep the tape until that encoder has been submitted.
#[derive(Debug, Clone)]
pub struct Tape {
    pub(crate) model: u64,
    pub(crate) version: u64,
    pub(crate) steps: usize,
    pub(crate) batch: usize,
    /// The dropout seed of the pass (`None`: no dropout).
    pub(crate) dropout_seed: Option<u64>,
    pub(crate) workspace: Arc<Workspace>,
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
    /// The model's parameter version when the pass was recorded.
    pub fn parameter_version(&self) -> u64 {
        self.version
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
    fn zeros(ctx: &Context, l: &PackedLayer) -> Result<LayerGrads> {
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

/// Parameter gradients of every layer-direction, on the GPU.
#[derive(Debug, Clone)]
pub struct ParamGrads {
    /// Per layer-direction, `l*D + d` (PyTorch's order: `l0`, `l0_reverse`, `l1`, ...).
    pub layers: Vec<LayerGrads>,
}

impl ParamGrads {
    /// Zero gradients shaped for `rnn`'s parameters (the start of an accumulation).
    pub fn zeros(rnn: &Rnn) -> Result<ParamGrads> {
        rnn.require_f32()?;
        Ok(ParamGrads {
            layers: rnn
                .inner
                .layers
                .iter()
                .map(|l| LayerGrads::zeros(rnn.ctx(), l))
                .collect::<Result<_>>()?,
        })
    }

    /// The gradient tensors, in the order of [`Rnn::parameters`].
    pub fn tensors(&self) -> Vec<&GpuTensor> {
        self.layers.iter().flat_map(LayerGrads::tensors).collect()
    }

    /// `Err` unless these gradients are shaped for `rnn`'s parameters.
    pub(crate) fn check(&self, rnn: &Rnn) -> Result<()> {
        let want = rnn.parameters()?;
        let have = self.tensors();
        if have.len() != want.len() || self.layers.len() != rnn.inner.layers.len() {
            return Err(Error::ShapeMismatch {
                name: "param grads (tensor count)".into(),
                expected: vec![want.len()],
                got: vec![have.len()],
            });
        }
        for (k, (w, g)) in want.iter().zip(&have).enumerate() {
            if w.shape() != g.shape() {
                return Err(Error::ShapeMismatch {
                    name: format!("param grads (tensor {k})"),
                    expected: w.shape().to_vec(),
                    got: g.shape().to_vec(),
                });
            }
        }
        Ok(())
    }

    /// Download and unpack to PyTorch layout (`weight_ih [G*H, I_l]`, ...), one entry per
    /// layer-direction.
    ///
    /// Errors: [`Error::ShapeMismatch`] for gradients of another model's shapes.
    pub fn to_host(&self, rnn: &Rnn) -> Result<Vec<LayerWeights>> {
        self.check(rnn)?;
        let dirs = rnn.dirs();
        self.layers
            .iter()
            .enumerate()
            .map(|(j, g)| g.view().to_host(rnn.ctx(), &rnn.inner.layer_cfgs[j / dirs]))
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
///
/// Read them by PyTorch's names with [`HostGrads::named_parameters`] (what
/// `{n: p.grad for n, p in module.named_parameters()}` holds) or [`HostGrads::named`] (plus
/// `dx`, `dh0`, `dc0`), look one up with [`HostGrads::get`], or write them as a safetensors
/// file with [`HostGrads::save`].
#[derive(Debug, Clone, PartialEq)]
pub struct HostGrads {
    /// Like `x`: `[T, B, I]`, or `[B, T, I]` batch-first.
    pub dx: Vec<f32>,
    /// `[L*D, B, S]`.
    pub dh0: Vec<f32>,
    /// `[L*D, B, H]` (LSTM).
    pub dc0: Option<Vec<f32>>,
    /// Per layer-direction (`l*D + d`): `weight_ih [G*H, I_l]`, `weight_hh`, biases, ...
    /// A tensor the model lacks (the biases of a `bias = false` model) is `None`, not zeros.
    pub params: Vec<LayerWeights>,
    /// The model's configuration: the names and shapes of the tensors.
    pub config: RnnConfig,
    /// `T` of the pass.
    pub steps: usize,
    /// `B` of the pass.
    pub batch: usize,
}

impl HostGrads {
    /// The parameter gradients under PyTorch's `named_parameters()` names, in its order
    /// (`weight_ih_l0 [G*H, I]`, `weight_hh_l0 [G*H, S]`, `bias_ih_l0 [G*H]`, `bias_hh_l0`,
    /// `weight_hr_l0 [P, H]`, then `_l0_reverse`, `_l1`, ...; our `peephole_l{k} [3H]` last in
    /// each layer-direction): the names and shapes of [`crate::Weights::named_tensors`] for
    /// the same configuration. A model without bias has no `bias_*` entries.
    pub fn named_parameters(&self) -> Vec<(String, Vec<usize>, &[f32])> {
        named_layer_tensors(&self.config, &self.params)
    }

    /// [`HostGrads::named_parameters`], then the input and state gradients: `dx` (`[T, B, I]`,
    /// or `[B, T, I]` batch-first), `dh0 [L*D, B, S]` and, for an LSTM, `dc0 [L*D, B, H]`.
    pub fn named(&self) -> Vec<(String, Vec<usize>, &[f32])> {
        let cfg = &self.config;
        let (t, b) = (self.steps, self.batch);
        let ld = cfg.num_layers() * cfg.num_directions();
        let dx_shape = match cfg.layout() {
            Layout::BatchFirst => vec![b, t, cfg.input_size()],
            _ => vec![t, b, cfg.input_size()],
        };
        let mut out = self.named_parameters();
        out.push(("dx".into(), dx_shape, &self.dx));
        out.push(("dh0".into(), vec![ld, b, cfg.state_size()], &self.dh0));
        if let Some(dc0) = &self.dc0 {
            out.push(("dc0".into(), vec![ld, b, cfg.hidden_size()], dc0));
        }
        out
    }

    /// The gradient named `name` (any name of [`HostGrads::named`]), `None` for a name the
    /// model has no tensor for.
    pub fn get(&self, name: &str) -> Option<&[f32]> {
        self.named()
            .into_iter()
            .find(|(n, ..)| n == name)
            .map(|(.., data)| data)
    }

    /// Serialise [`HostGrads::named`] as a safetensors file (f32); in Python,
    /// `safetensors.torch.load_file` gives a dict to compare with `p.grad` per name.
    ///
    /// Errors: [`Error::ShapeMismatch`] naming a tensor whose length no longer fits its shape
    /// (after an edit of the public fields), [`Error::MissingTensor`] /
    /// [`Error::InvalidConfig`] as [`crate::Weights::validate`].
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        validate_layers(&self.config, &self.params)?;
        let named = self.named();
        for (name, shape, data) in &named {
            check_len(name, data, shape)?;
        }
        write_safetensors(named)
    }

    /// Write [`HostGrads::to_safetensors`] to a file; nothing is written when it fails.
    ///
    /// Errors: as [`HostGrads::to_safetensors`], plus [`Error::Io`].
    pub fn save(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        std::fs::write(path, self.to_safetensors()?)?;
        Ok(())
    }
}

impl Grads {
    /// Download everything; parameter gradients unpacked to PyTorch layout.
    ///
    /// Errors: [`Error::ShapeMismatch`] for gradients of another model's shapes, or a `dx`
    /// that is not `[T, B, I]` / `[B, T, I]`.
    pub fn to_host(&self, rnn: &Rnn) -> Result<HostGrads> {
        let params = self.params.to_host(rnn)?;
        let config = rnn.config().clone();
        let (steps, batch) = match (self.dx.shape(), config.layout()) {
            (&[b, t, _], Layout::BatchFirst) => (t, b),
            (&[t, b, _], _) => (t, b),
            (got, _) => {
                return Err(Error::ShapeMismatch {
                    name: "dx".into(),
                    expected: vec![0, 0, config.input_size()],
                    got: got.to_vec(),
                });
            }
        };
        Ok(HostGrads {
            dx: self.dx.download(rnn.ctx())?,
            dh0: self.dh0.download(rnn.ctx())?,
            dc0: download_optional(rnn.ctx(), self.dc0.as_ref())?,
            params,
            config,
            steps,
            batch,
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
