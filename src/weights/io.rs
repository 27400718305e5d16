//! Safetensors state_dicts in and out: with the configuration inferred from the file
//! ([`Weights::load`]) or given ([`Weights::load_config`]).

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors, TensorView};

use super::infer::{FileNames, LoadOptions, infer_config};
use super::{LayerWeights, Weights, suffix, tensor_names};
use crate::config::RnnConfig;
use crate::error::{Error, Result};

impl Weights {
    /// Read a PyTorch state_dict saved as safetensors
    /// (`safetensors.torch.save_file(model.state_dict(), path)`), with the configuration
    /// inferred from its names and shapes: cell, `I`, `H`, layers, directions, `proj_size`
    /// and bias (rules in [`crate::weights`]). The rest takes PyTorch's defaults
    /// (tanh RNN, seq-major, no dropout); [`Weights::load_with`] sets them.
    ///
    /// Reads `nn.LSTM`/`nn.GRU`/`nn.RNN` files (`weight_ih_l0`, ...) and `nn.LSTMCell`/
    /// `nn.GRUCell`/`nn.RNNCell` files (`weight_ih`, ...; a one-layer model). Tensors may be
    /// f32, f64, f16 or bf16 (converted to f32); tensors that are no RNN parameter are ignored.
    ///
    /// ```no_run
    /// use rnn_wgpu::{CellKind, Weights};
    /// # fn main() -> Result<(), rnn_wgpu::Error> {
    /// let weights = Weights::load("lstm.safetensors")?; // nn.LSTM(16, 32, num_layers=2)
    /// assert_eq!(weights.config().cell(), CellKind::Lstm);
    /// assert_eq!(weights.config().num_layers(), 2);
    /// # Ok(()) }
    /// ```
    ///
    /// Errors: [`Error::Io`]; [`Error::Safetensors`] for a malformed file;
    /// [`Error::MissingTensor`] naming the first tensor that the names imply and the file
    /// lacks (`weight_ih_l0` when there is no RNN at all); [`Error::InconsistentWeights`]
    /// naming a tensor whose shape contradicts another (both shapes in the message) or fits no
    /// cell; [`Error::ShapeMismatch`] naming a tensor of a later layer or a bias whose shape
    /// differs from what layer 0 implies; [`Error::WrongDtype`].
    pub fn load(path: impl AsRef<Path>) -> Result<Weights> {
        Weights::load_with(path, &LoadOptions::default())
    }

    /// [`Weights::load`], with what the names and shapes cannot say given in `opts`
    /// (an RNN's nonlinearity, `batch_first`, dropout, GRU reset form, a submodule prefix).
    ///
    /// ```no_run
    /// use rnn_wgpu::weights::LoadOptions;
    /// use rnn_wgpu::{Nonlinearity, Weights};
    /// # fn main() -> Result<(), rnn_wgpu::Error> {
    /// // nn.RNN(8, 16, nonlinearity="relu", batch_first=True)
    /// let opts = LoadOptions::default().nonlinearity(Nonlinearity::Relu).batch_first(true);
    /// let weights = Weights::load_with("rnn.safetensors", &opts)?;
    /// # Ok(()) }
    /// ```
    ///
    /// Errors: as [`Weights::load`], plus [`Error::InvalidConfig`] for an option that does not
    /// apply to the cell the file holds.
    pub fn load_with(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<Weights> {
        Weights::from_safetensors_with(&std::fs::read(path)?, opts)
    }

    /// Read a safetensors state_dict made for `cfg`, checking every tensor `cfg` needs against
    /// the file (the explicit form, and the one for configurations the names cannot express:
    /// ONNX clips, activations, coupled gates). Tensors `cfg` has no place for are ignored.
    ///
    /// Errors: [`Error::Io`], and as [`Weights::from_safetensors_config`].
    pub fn load_config(cfg: &RnnConfig, path: impl AsRef<Path>) -> Result<Weights> {
        Weights::from_safetensors_config(cfg, &std::fs::read(path)?)
    }

    /// [`Weights::load`] from the bytes of a safetensors file.
    ///
    /// Errors: as [`Weights::load`], but for [`Error::Io`].
    pub fn from_safetensors(bytes: &[u8]) -> Result<Weights> {
        Weights::from_safetensors_with(bytes, &LoadOptions::default())
    }

    /// [`Weights::load_with`] from the bytes of a safetensors file.
    ///
    /// Errors: as [`Weights::load_with`], but for [`Error::Io`].
    pub fn from_safetensors_with(bytes: &[u8], opts: &LoadOptions) -> Result<Weights> {
        let st = SafeTensors::deserialize(bytes)?;
        let names = FileNames::detect(&st, opts)?;
        let cfg = infer_config(&st, &names, opts)?;
        read_tensors(&st, &names, &cfg)
    }

    /// [`Weights::load_config`] from the bytes of a safetensors file.
    ///
    /// Errors: [`Error::Safetensors`] for a malformed file; [`Error::MissingTensor`],
    /// [`Error::ShapeMismatch`] and [`Error::WrongDtype`] naming the tensor (under its name in
    /// the file) that is absent, of another shape than `cfg` gives it, or not a float type.
    pub fn from_safetensors_config(cfg: &RnnConfig, bytes: &[u8]) -> Result<Weights> {
        let st = SafeTensors::deserialize(bytes)?;
        let names = match FileNames::detect(&st, &LoadOptions::default()) {
            Ok(names) => names,
            Err(Error::MissingTensor(_)) => FileNames::default(),
            Err(e) => return Err(e),
        };
        read_tensors(&st, &names, cfg)
    }

    /// Serialise as a safetensors state_dict (f32, PyTorch names), loadable with
    /// `safetensors.torch.load_file` and `module.load_state_dict`.
    ///
    /// Errors: as [`Weights::validate`], which runs first, so a tensor whose length
    /// [`Weights::layer_mut`] changed is named rather than written under a wrong shape.
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        self.validate()?;
        let tensors = self.named_tensors();
        write_safetensors(tensors.iter().map(|(n, s, d)| (n.clone(), s.clone(), *d)))
    }

    /// Write a safetensors state_dict to a file. Nothing is written when the weights do not
    /// fit their configuration.
    ///
    /// Errors: as [`Weights::to_safetensors`], plus [`Error::Io`].
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        std::fs::write(path, self.to_safetensors()?)?;
        Ok(())
    }
}

/// Serialise named f32 tensors `(name, shape, data)` as a safetensors file.
///
/// Errors: [`Error::Safetensors`] for a shape that does not match its data.
pub(crate) fn write_safetensors<'a>(
    tensors: impl IntoIterator<Item = (String, Vec<usize>, &'a [f32])>,
) -> Result<Vec<u8>> {
    let views = tensors
        .into_iter()
        .map(|(name, shape, data)| {
            TensorView::new(Dtype::F32, shape, bytemuck::cast_slice(data)).map(|v| (name, v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(safetensors::serialize(views, None)?)
}

/// Read every tensor `cfg` needs from `st`, named per `names`, checking shapes.
fn read_tensors(st: &SafeTensors<'_>, names: &FileNames, cfg: &RnnConfig) -> Result<Weights> {
    let mut map: HashMap<String, Vec<f32>> = HashMap::new();
    for (canonical, shape) in tensor_names(cfg) {
        let name = names.file_name(&canonical);
        let view = match st.tensor(&name) {
            Ok(v) => v,
            Err(SafeTensorError::TensorNotFound(_)) => return Err(Error::MissingTensor(name)),
            Err(e) => return Err(e.into()),
        };
        if view.shape() != shape.as_slice() {
            return Err(Error::ShapeMismatch {
                name,
                expected: shape,
                got: view.shape().to_vec(),
            });
        }
        map.insert(canonical, view_to_f32(&name, &view)?);
    }
    let mut layers = Vec::new();
    for layer in 0..cfg.num_layers() {
        for dir in 0..cfg.num_directions() {
            let s = suffix(layer, dir);
            let mut take = |n: &str| map.remove(&format!("{n}{s}"));
            let required = |t: Option<Vec<f32>>, n: &str| {
                t.ok_or_else(|| Error::MissingTensor(names.file_name(&format!("{n}{s}"))))
            };
            layers.push(LayerWeights {
                weight_ih: required(take("weight_ih"), "weight_ih")?,
                weight_hh: required(take("weight_hh"), "weight_hh")?,
                bias_ih: take("bias_ih"),
                bias_hh: take("bias_hh"),
                weight_hr: take("weight_hr"),
                peephole: take("peephole"),
            });
        }
    }
    Weights::from_layers(cfg, layers)
}

/// Convert a tensor view of a float dtype to `f32`, little-endian as safetensors stores it.
pub(crate) fn view_to_f32(name: &str, view: &TensorView<'_>) -> Result<Vec<f32>> {
    let d = view.data();
    let out = match view.dtype() {
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F64 => d
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8-byte chunk")) as f32)
            .collect(),
        Dtype::F16 => d
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => d
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => {
            return Err(Error::WrongDtype {
                name: name.to_string(),
                expected: "F32, F64, F16 or BF16",
                got: format!("{other:?}"),
            });
        }
    };
    Ok(out)
}
