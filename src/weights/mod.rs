//! Host weights in PyTorch's names, shapes and gate order.
//!
//! For layer `k` (suffix `_reverse` for the backward direction, later):
//! - `weight_ih_l{k}`: `[G*H, I]`, gate blocks stacked in PyTorch order (LSTM: i, f, g, o);
//! - `weight_hh_l{k}`: `[G*H, H]` (`G` = 4 for LSTM, 3 for GRU, 1 for RNN);
//! - `bias_ih_l{k}`, `bias_hh_l{k}`: `[G*H]` (absent when the config has `bias = false`);
//! - `weight_hr_l{k}`: `[P, H]`, LSTM with `proj_size = P` only (then `weight_hh` is `[4H, P]`);
//! - `peephole_l{k}`: `[3H]`, LSTM with peepholes only, blocks `p_i | p_f | p_o` (PyTorch has
//!   no peepholes; ONNX's `P` orders them i, o, f — see [`crate::onnx`]).
//!
//! All tensors are row-major `f32`. The GPU path repacks them at upload; these host copies
//! are the interchange format (safetensors state_dicts as written by
//! `safetensors.torch.save_file(model.state_dict(), ...)`).
//!
//! # Inferring the configuration
//!
//! PyTorch saves no configuration with a state_dict, but the names and shapes say most of it:
//! - the layers are the `_l{k}` suffixes (`0..L`, none missing), bidirectional when
//!   `_reverse` tensors exist (then every layer has them);
//! - `bias` is whether `bias_ih_*` / `bias_hh_*` exist, `proj_size` is the row count of
//!   `weight_hr_l0 [P, H]`, and (our extension) `peephole_l{k}` means peepholes;
//! - `I` is the column count of `weight_ih_l0 [G*H, I]`;
//! - `H` is the column count of `weight_hh_l0 [G*H, H]`, or with a projection the column
//!   count of `weight_hr_l0 [P, H]` (then `weight_hh_l0` is `[4H, P]`);
//! - the cell is `G` = rows of `weight_ih_l0` / `H`: 4 is an LSTM, 3 a GRU, 1 a plain RNN.
//!   Rows alone would be ambiguous (12 rows are an LSTM with H = 3 or a GRU with H = 4); the
//!   recurrent matrix's width fixes `H`, so no file is ambiguous between the cells.
//!
//! What names and shapes cannot say comes from [`LoadOptions`]: an RNN's `nonlinearity`,
//! `batch_first`, `dropout`, and a GRU's reset form (`linear_before_reset`). The ONNX-only
//! variants (clips, activations, coupled gates) need an explicit configuration
//! ([`crate::Weights::load_config`]).
//!
//! Cells (`nn.LSTMCell`, `nn.GRUCell`, `nn.RNNCell`) save `weight_ih`, `weight_hh`, `bias_ih`,
//! `bias_hh` without a layer suffix; such a file reads as the one-layer, one-direction model
//! whose single step is that cell.
//!
//! A state_dict of a larger module names its RNN's tensors with the submodule's path
//! (`encoder.rnn.weight_ih_l0`). The prefix is found when only one RNN is in the file, or
//! chosen with [`LoadOptions::prefix`].

use std::collections::HashMap;

use crate::config::RnnConfig;
use crate::error::{Error, Result};
use crate::validate::check_len;

mod infer;
mod io;

pub use infer::LoadOptions;
pub(crate) use io::write_safetensors;

/// One layer-direction's parameters, PyTorch layout.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerWeights {
    /// `[G*H, I_layer]`.
    pub weight_ih: Vec<f32>,
    /// `[G*H, H]`.
    pub weight_hh: Vec<f32>,
    /// `[G*H]`, `None` without bias.
    pub bias_ih: Option<Vec<f32>>,
    /// `[G*H]`, `None` without bias.
    pub bias_hh: Option<Vec<f32>>,
    /// `[P, H]`: LSTM projection (`proj_size`), else `None`.
    pub weight_hr: Option<Vec<f32>>,
    /// `[3H]`: LSTM peepholes `p_i | p_f | p_o`, else `None`.
    pub peephole: Option<Vec<f32>>,
}

/// All parameters of a model, one [`LayerWeights`] per layer and direction
/// (order: `l0`, `l0_reverse`, `l1`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct Weights {
    cfg: RnnConfig,
    layers: Vec<LayerWeights>,
}

/// `(name, shape)` of every tensor a configuration needs, in state_dict order.
pub fn tensor_names(cfg: &RnnConfig) -> Vec<(String, Vec<usize>)> {
    let gh = cfg.gate_count() * cfg.hidden_size();
    let mut out = Vec::new();
    for layer in 0..cfg.num_layers() {
        for dir in 0..cfg.num_directions() {
            let s = suffix(layer, dir);
            out.push((
                format!("weight_ih{s}"),
                vec![gh, cfg.layer_input_size(layer)],
            ));
            out.push((format!("weight_hh{s}"), vec![gh, cfg.state_size()]));
            if cfg.bias() {
                out.push((format!("bias_ih{s}"), vec![gh]));
                out.push((format!("bias_hh{s}"), vec![gh]));
            }
            if let Some(p) = cfg.proj_size() {
                out.push((format!("weight_hr{s}"), vec![p, cfg.hidden_size()]));
            }
            if cfg.peepholes() {
                out.push((format!("peephole{s}"), vec![3 * cfg.hidden_size()]));
            }
        }
    }
    out
}

fn suffix(layer: usize, dir: usize) -> String {
    if dir == 0 {
        format!("_l{layer}")
    } else {
        format!("_l{layer}_reverse")
    }
}

impl Weights {
    /// PyTorch's default initialisation: every parameter uniform in `±1/sqrt(H)`, drawn from a
    /// ChaCha8 stream seeded with `seed` (reproducible across platforms and versions), tensor
    /// by tensor in state_dict order. Peepholes (which PyTorch lacks) are drawn the same way.
    ///
    /// Other schemes (Xavier, Kaiming, orthogonal, a forget-gate bias): [`Weights::init_with`].
    pub fn init(cfg: &RnnConfig, seed: u64) -> Weights {
        Weights::init_with(cfg, &crate::init::Init::default(), seed)
            .expect("PyTorch's default scheme fits every configuration")
    }

    /// Wrap explicit tensors, checking every shape against `cfg`.
    pub fn from_layers(cfg: &RnnConfig, layers: Vec<LayerWeights>) -> Result<Weights> {
        let w = Weights {
            cfg: cfg.clone(),
            layers,
        };
        w.validate()?;
        Ok(w)
    }

    /// The configuration these weights were made for.
    pub fn config(&self) -> &RnnConfig {
        &self.cfg
    }

    /// Parameters of `layer`, direction `dir` (0 = forward, 1 = reverse).
    ///
    /// Errors: [`Error::IndexOutOfRange`] for a `layer` at or past `num_layers`, or a `dir` at
    /// or past the configuration's number of directions (1, or 2 when bidirectional).
    pub fn layer(&self, layer: usize, dir: usize) -> Result<&LayerWeights> {
        let k = self.layer_index(layer, dir)?;
        Ok(&self.layers[k])
    }

    /// Mutable access to one layer-direction (e.g. for an optimiser on the host). A change of
    /// a tensor's length, or a removed tensor the configuration needs, is refused later by
    /// [`Weights::validate`], which [`Weights::to_safetensors`], [`Weights::save`] and
    /// [`crate::onnx::export_layer`] run first.
    ///
    /// Errors: as [`Weights::layer`].
    pub fn layer_mut(&mut self, layer: usize, dir: usize) -> Result<&mut LayerWeights> {
        let k = self.layer_index(layer, dir)?;
        Ok(&mut self.layers[k])
    }

    /// The position of layer-direction `(layer, dir)` in `self.layers`.
    fn layer_index(&self, layer: usize, dir: usize) -> Result<usize> {
        let (layers, dirs) = (self.cfg.num_layers(), self.cfg.num_directions());
        if layer >= layers {
            return Err(Error::IndexOutOfRange {
                what: "layer",
                index: layer,
                bound: layers,
            });
        }
        if dir >= dirs {
            return Err(Error::IndexOutOfRange {
                what: "direction",
                index: dir,
                bound: dirs,
            });
        }
        Ok(layer * dirs + dir)
    }

    /// Every tensor by its PyTorch name, in state_dict order, with the shape the configuration
    /// gives it (`[len]` for a tensor the configuration does not list).
    ///
    /// Each name comes from the tensor's own slot, so it stays right after a
    /// [`Weights::layer_mut`] edit; the shapes do not follow such an edit, so check with
    /// [`Weights::validate`] first when lengths may have changed ([`Weights::to_safetensors`]
    /// does).
    pub fn named_tensors(&self) -> Vec<(String, Vec<usize>, &[f32])> {
        named_layer_tensors(&self.cfg, &self.layers)
    }

    /// Check every tensor's length against the configuration.
    ///
    /// Errors: [`Error::ShapeMismatch`] naming a tensor of the wrong length (say, after
    /// [`Weights::layer_mut`] changed it); [`Error::MissingTensor`] naming a tensor the
    /// configuration needs and the weights lack; [`Error::InvalidConfig`] naming a tensor the
    /// weights hold and the configuration has no place for.
    pub fn validate(&self) -> Result<()> {
        validate_layers(&self.cfg, &self.layers)
    }
}

/// The tensors of `layers` (one per layer-direction of `cfg`) by their PyTorch names, in
/// state_dict order, with the shapes `cfg` gives them (`[len]` for a tensor `cfg` does not
/// list); what [`Weights::named_tensors`] and [`crate::HostGrads::named_parameters`] return.
pub(crate) fn named_layer_tensors<'a>(
    cfg: &RnnConfig,
    layers: &'a [LayerWeights],
) -> Vec<(String, Vec<usize>, &'a [f32])> {
    let shapes: HashMap<String, Vec<usize>> = tensor_names(cfg).into_iter().collect();
    slots(cfg, layers)
        .filter_map(|(name, data)| {
            let data = data?.as_slice();
            let shape = shapes.get(&name).cloned().unwrap_or(vec![data.len()]);
            Some((name, shape, data))
        })
        .collect()
}

/// Every tensor slot of every layer-direction, named, in state_dict order; `None` for an
/// absent optional tensor.
fn slots<'a>(
    cfg: &RnnConfig,
    layers: &'a [LayerWeights],
) -> impl Iterator<Item = (String, Option<&'a Vec<f32>>)> {
    let dirs = cfg.num_directions();
    layers.iter().enumerate().flat_map(move |(idx, l)| {
        let s = suffix(idx / dirs, idx % dirs);
        [
            ("weight_ih", Some(&l.weight_ih)),
            ("weight_hh", Some(&l.weight_hh)),
            ("bias_ih", l.bias_ih.as_ref()),
            ("bias_hh", l.bias_hh.as_ref()),
            ("weight_hr", l.weight_hr.as_ref()),
            ("peephole", l.peephole.as_ref()),
        ]
        .map(|(base, data)| (format!("{base}{s}"), data))
    })
}

/// Check the tensors of `layers` against `cfg` (see [`Weights::validate`]).
pub(crate) fn validate_layers(cfg: &RnnConfig, layers: &[LayerWeights]) -> Result<()> {
    let expected = cfg.num_layers() * cfg.num_directions();
    if layers.len() != expected {
        return Err(Error::ShapeMismatch {
            name: "layers".into(),
            expected: vec![expected],
            got: vec![layers.len()],
        });
    }
    let mut expected = tensor_names(cfg).into_iter().peekable();
    for (name, data) in slots(cfg, layers) {
        let wanted = expected.next_if(|(n, _)| *n == name);
        match (wanted, data) {
            (Some((_, shape)), Some(d)) => check_len(&name, d, &shape)?,
            (Some(_), None) => return Err(Error::MissingTensor(name)),
            (None, Some(_)) => {
                return Err(Error::InvalidConfig(format!(
                    "`{name}` is given but the configuration has no such tensor"
                )));
            }
            (None, None) => {}
        }
    }
    Ok(())
}
