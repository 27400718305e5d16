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

use std::collections::HashMap;
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors, TensorView};

use crate::config::RnnConfig;
use crate::error::{Error, Result};
use crate::validate::check_len;

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
    pub fn init(cfg: &RnnConfig, seed: u64) -> Weights {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let k = 1.0 / (cfg.hidden_size() as f32).sqrt();
        let mut draw =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-k..=k)).collect() };
        let mut data: Vec<Vec<f32>> = tensor_names(cfg)
            .into_iter()
            .map(|(_, shape)| draw(shape.iter().product()))
            .collect::<Vec<_>>();
        data.reverse();
        let mut layers = Vec::new();
        for _ in 0..cfg.num_layers() * cfg.num_directions() {
            let mut next = || data.pop().expect("tensor_names lists every tensor");
            let weight_ih = next();
            let weight_hh = next();
            let (bias_ih, bias_hh) = if cfg.bias() {
                (Some(next()), Some(next()))
            } else {
                (None, None)
            };
            let weight_hr = cfg.proj_size().map(|_| next());
            let peephole = cfg.peepholes().then(&mut next);
            layers.push(LayerWeights {
                weight_ih,
                weight_hh,
                bias_ih,
                bias_hh,
                weight_hr,
                peephole,
            });
        }
        Weights {
            cfg: cfg.clone(),
            layers,
        }
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
        let shapes: HashMap<String, Vec<usize>> = tensor_names(&self.cfg).into_iter().collect();
        self.slots()
            .filter_map(|(name, data)| {
                let data = data?.as_slice();
                let shape = shapes.get(&name).cloned().unwrap_or(vec![data.len()]);
                Some((name, shape, data))
            })
            .collect()
    }

    /// Every tensor slot of every layer-direction, named, in state_dict order; `None` for an
    /// absent optional tensor.
    fn slots(&self) -> impl Iterator<Item = (String, Option<&Vec<f32>>)> {
        let dirs = self.cfg.num_directions();
        self.layers.iter().enumerate().flat_map(move |(idx, l)| {
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

    /// Check every tensor's length against the configuration.
    ///
    /// Errors: [`Error::ShapeMismatch`] naming a tensor of the wrong length (say, after
    /// [`Weights::layer_mut`] changed it); [`Error::MissingTensor`] naming a tensor the
    /// configuration needs and the weights lack; [`Error::InvalidConfig`] naming a tensor the
    /// weights hold and the configuration has no place for.
    pub fn validate(&self) -> Result<()> {
        let expected = self.cfg.num_layers() * self.cfg.num_directions();
        if self.layers.len() != expected {
            return Err(Error::ShapeMismatch {
                name: "layers".into(),
                expected: vec![expected],
                got: vec![self.layers.len()],
            });
        }
        let mut expected = tensor_names(&self.cfg).into_iter().peekable();
        for (name, data) in self.slots() {
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

    /// Read a PyTorch state_dict saved as safetensors. Tensors may be f32, f64, f16 or bf16
    /// (converted to f32); extra tensors in the file are ignored.
    pub fn from_safetensors(cfg: &RnnConfig, bytes: &[u8]) -> Result<Weights> {
        let st = SafeTensors::deserialize(bytes)?;
        let mut map: HashMap<String, Vec<f32>> = HashMap::new();
        for (name, shape) in tensor_names(cfg) {
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
            let data = view_to_f32(&name, &view)?;
            map.insert(name, data);
        }
        let mut layers = Vec::new();
        for layer in 0..cfg.num_layers() {
            for dir in 0..cfg.num_directions() {
                let s = suffix(layer, dir);
                let mut take = |n: &str| map.remove(&format!("{n}{s}"));
                let required = |t: Option<Vec<f32>>, n: &str| {
                    t.ok_or_else(|| Error::MissingTensor(format!("{n}{s}")))
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

    /// Read a safetensors state_dict from a file.
    pub fn load(cfg: &RnnConfig, path: impl AsRef<Path>) -> Result<Weights> {
        let bytes = std::fs::read(path)?;
        Weights::from_safetensors(cfg, &bytes)
    }

    /// Serialise as a safetensors state_dict (f32, PyTorch names), loadable with
    /// `safetensors.torch.load_file` and `module.load_state_dict`.
    ///
    /// Errors: as [`Weights::validate`], which runs first, so a tensor whose length
    /// [`Weights::layer_mut`] changed is named rather than written under a wrong shape.
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        self.validate()?;
        let tensors = self.named_tensors();
        let views = tensors
            .iter()
            .map(|(name, shape, data)| {
                TensorView::new(Dtype::F32, shape.clone(), bytemuck::cast_slice(data))
                    .map(|v| (name.clone(), v))
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(safetensors::serialize(views, None)?)
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
