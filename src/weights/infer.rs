//! The configuration a PyTorch state_dict implies (rules in [`crate::weights`]), and
//! [`LoadOptions`] for what it cannot say.

use std::collections::BTreeMap;

use safetensors::SafeTensors;

use crate::config::{CellKind, Layout, Nonlinearity, RnnConfig};
use crate::error::{Error, Result};

/// What a state_dict's names and shapes cannot say, for [`crate::Weights::load_with`] and
/// [`crate::Weights::from_safetensors_with`]. The defaults are PyTorch's constructor defaults.
///
/// ```
/// use rnn_wgpu::weights::LoadOptions;
/// use rnn_wgpu::Nonlinearity;
/// // nn.RNN(..., nonlinearity="relu", batch_first=True), saved inside a bigger module as `rnn.*`
/// let opts = LoadOptions::default()
///     .nonlinearity(Nonlinearity::Relu)
///     .batch_first(true)
///     .prefix("rnn.");
/// # let _ = opts;
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct LoadOptions {
    prefix: Option<String>,
    nonlinearity: Option<Nonlinearity>,
    batch_first: bool,
    dropout: f32,
    linear_before_reset: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            prefix: None,
            nonlinearity: None,
            batch_first: false,
            dropout: 0.0,
            linear_before_reset: true,
        }
    }
}

impl LoadOptions {
    /// The plain RNN's nonlinearity (PyTorch `nn.RNN(nonlinearity=...)`; default tanh, as
    /// PyTorch). A state_dict does not record it: pass `Relu` for a relu RNN. Given for a file
    /// that holds an LSTM or GRU, loading fails with [`Error::InvalidConfig`].
    pub fn nonlinearity(mut self, nonlinearity: Nonlinearity) -> Self {
        self.nonlinearity = Some(nonlinearity);
        self
    }

    /// `batch_first=True`: `x` and `y` are `[B, T, F]` instead of `[T, B, F]` (default false).
    pub fn batch_first(mut self, yes: bool) -> Self {
        self.batch_first = yes;
        self
    }

    /// Dropout between layers in training (PyTorch `dropout`, default 0); must lie in `[0, 1)`.
    pub fn dropout(mut self, p: f32) -> Self {
        self.dropout = p;
        self
    }

    /// GRU only: `false` for the ONNX/Keras "reset before" form (ONNX `linear_before_reset =
    /// 0`); the default `true` is PyTorch's GRU. `false` for another cell fails with
    /// [`Error::InvalidConfig`].
    pub fn linear_before_reset(mut self, yes: bool) -> Self {
        self.linear_before_reset = yes;
        self
    }

    /// Read the RNN whose tensors are named `{prefix}weight_ih_l0`, ... (say `"rnn."` for
    /// `model.rnn`). Without it, unprefixed names are taken when present, else the one prefix
    /// under which the file holds an RNN.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }
}

/// How a file names the parameters of the model being read, relative to the canonical
/// `weight_ih_l0` names of [`crate::weights::tensor_names`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct FileNames {
    /// Prepended to every name (a submodule path such as `rnn.`).
    pub prefix: String,
    /// `nn.LSTMCell`-style names: `weight_ih` for `weight_ih_l0` (one layer, one direction).
    pub cell: bool,
}

/// The parameter tensors a cell's state_dict holds (their module names add `_l0`).
const CELL_BASES: [&str; 4] = ["weight_ih", "weight_hh", "bias_ih", "bias_hh"];
/// Every parameter tensor's base name, in state_dict order.
const BASES: [&str; 6] = [
    "weight_ih",
    "weight_hh",
    "bias_ih",
    "bias_hh",
    "weight_hr",
    "peephole",
];

impl FileNames {
    /// The name in the file of the canonical tensor `canonical` (`weight_ih_l0`, ...).
    pub fn file_name(&self, canonical: &str) -> String {
        let base = match self.cell {
            true => canonical.strip_suffix("_l0").unwrap_or(canonical),
            false => canonical,
        };
        format!("{}{base}", self.prefix)
    }

    /// Find how `st` names its RNN's parameters.
    ///
    /// Errors: [`Error::MissingTensor`] when no `weight_ih_l0` (or cell `weight_ih`) is found
    /// under the requested or any prefix; [`Error::InconsistentWeights`] when several RNNs (or
    /// a cell and a module) could be meant.
    pub fn detect(st: &SafeTensors<'_>, opts: &LoadOptions) -> Result<FileNames> {
        let mut found: Vec<(FileNames, String)> = Vec::new();
        for name in st.names() {
            for (anchor, cell) in [("weight_ih_l0", false), ("weight_ih", true)] {
                if let Some(prefix) = name.strip_suffix(anchor) {
                    if prefix.is_empty() || prefix.ends_with('.') {
                        let names = FileNames {
                            prefix: prefix.to_string(),
                            cell,
                        };
                        found.push((names, name.to_string()));
                    }
                }
            }
        }
        found.sort_by(|a, b| a.1.cmp(&b.1));
        let wanted: Vec<_> = match &opts.prefix {
            Some(p) => found.into_iter().filter(|f| f.0.prefix == *p).collect(),
            None if found.iter().any(|f| f.0.prefix.is_empty()) => found
                .into_iter()
                .filter(|f| f.0.prefix.is_empty())
                .collect(),
            None => found,
        };
        match wanted.as_slice() {
            [] => Err(Error::MissingTensor(format!(
                "{}weight_ih_l0",
                opts.prefix.as_deref().unwrap_or("")
            ))),
            [one] => Ok(one.0.clone()),
            [a, b, ..] => Err(Error::InconsistentWeights {
                name: a.1.clone(),
                shape: shape_of(st, &a.1),
                why: format!(
                    "`{}` {:?} starts another model in the same file; choose one with \
                     LoadOptions::prefix",
                    b.1,
                    shape_of(st, &b.1)
                ),
            }),
        }
    }
}

fn shape_of(st: &SafeTensors<'_>, name: &str) -> Vec<usize> {
    st.tensor(name)
        .map(|v| v.shape().to_vec())
        .unwrap_or_default()
}

/// One parameter tensor of the file: `(layer, reverse, base)`.
type Key = (usize, bool, &'static str);

/// Split a canonical parameter name (`weight_hh_l1_reverse`) into its key.
fn parse_canonical(name: &str) -> Option<Key> {
    let (rest, reverse) = match name.strip_suffix("_reverse") {
        Some(r) => (r, true),
        None => (name, false),
    };
    let (base, layer) = rest.rsplit_once("_l")?;
    let base = BASES.into_iter().find(|b| *b == base)?;
    if layer.is_empty() || !layer.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some((layer.parse().ok()?, reverse, base))
}

/// The canonical name of `key`.
fn canonical((layer, reverse, base): Key) -> String {
    let dir = if reverse { "_reverse" } else { "" };
    format!("{base}_l{layer}{dir}")
}

/// Infer the configuration of the parameters `names` picks out of `st` (see the module docs
/// for the rules), completed by `opts`.
///
/// Errors: [`Error::MissingTensor`] for a layer, direction or tensor that the other tensors
/// imply but the file lacks; [`Error::InconsistentWeights`] for a tensor whose rank or shape
/// fits no cell or contradicts another; [`Error::InvalidConfig`] for an option that does not
/// apply to the inferred cell, and the errors of [`crate::RnnConfigBuilder::build`].
pub(crate) fn infer_config(
    st: &SafeTensors<'_>,
    names: &FileNames,
    opts: &LoadOptions,
) -> Result<RnnConfig> {
    let mut params: BTreeMap<Key, Vec<usize>> = BTreeMap::new();
    for name in st.names() {
        let Some(local) = name.strip_prefix(names.prefix.as_str()) else {
            continue;
        };
        let key = match names.cell {
            true => CELL_BASES
                .into_iter()
                .find(|b| *b == local)
                .map(|b| (0, false, b)),
            false => parse_canonical(local),
        };
        if let Some(key) = key {
            params.insert(key, shape_of(st, name));
        }
    }
    let file = |key: Key| names.file_name(&canonical(key));
    let layers = 1 + params.keys().map(|k| k.0).max().unwrap_or(0);
    let bidirectional = params.keys().any(|k| k.1);
    let has = |base: &str| params.keys().any(|k| k.2 == base);
    let (bias, proj, peepholes) = (
        has("bias_ih") || has("bias_hh"),
        has("weight_hr"),
        has("peephole"),
    );
    for layer in 0..layers {
        for reverse in [false, true] {
            if reverse && !bidirectional {
                continue;
            }
            for base in ["weight_ih", "weight_hh"] {
                if !params.contains_key(&(layer, reverse, base)) {
                    return Err(Error::MissingTensor(file((layer, reverse, base))));
                }
            }
        }
    }

    let matrix = |base: &'static str| -> Result<(String, Vec<usize>)> {
        let key = (0, false, base);
        let (name, shape) = match params.get(&key) {
            Some(shape) => (file(key), shape.clone()),
            None => return Err(Error::MissingTensor(file(key))),
        };
        if shape.len() != 2 || shape.contains(&0) {
            return Err(Error::InconsistentWeights {
                name,
                shape,
                why: "a weight matrix has two non-zero dimensions".into(),
            });
        }
        Ok((name, shape))
    };
    let (ih_name, ih) = matrix("weight_ih")?;
    let (hh_name, hh) = matrix("weight_hh")?;
    let hidden = if proj {
        let (hr_name, hr) = matrix("weight_hr")?;
        if hr[0] != hh[1] {
            return Err(Error::InconsistentWeights {
                name: hh_name,
                shape: hh,
                why: format!(
                    "its {} columns should be the projection size P = {}, the rows of \
                     `{hr_name}` {hr:?}",
                    hr[1], hr[0]
                ),
            });
        }
        hr[1]
    } else {
        hh[1]
    };
    let width = if proj { "`weight_hr_l0`'s" } else { "its" };
    if hh[0] != ih[0] {
        return Err(Error::InconsistentWeights {
            name: hh_name,
            shape: hh,
            why: format!(
                "its rows should equal the G*H = {} rows of `{ih_name}` {ih:?}",
                ih[0]
            ),
        });
    }
    let cell = match (ih[0] % hidden == 0).then_some(ih[0] / hidden) {
        Some(4) => CellKind::Lstm,
        Some(3) => CellKind::Gru,
        Some(1) => CellKind::Rnn,
        _ => {
            return Err(Error::InconsistentWeights {
                name: ih_name,
                shape: ih.clone(),
                why: format!(
                    "its {} rows are no 4 (LSTM), 3 (GRU) or 1 (RNN) gate blocks of H = {hidden} \
                     ({width} columns in `{hh_name}` {hh:?})",
                    ih[0]
                ),
            });
        }
    };
    if cell != CellKind::Lstm && (proj || peepholes) {
        let what = if proj { "weight_hr" } else { "peephole" };
        let key = *params.keys().find(|k| k.2 == what).expect("present");
        return Err(Error::InconsistentWeights {
            name: file(key),
            shape: params[&key].clone(),
            why: format!(
                "it belongs to an LSTM, but `{ih_name}` {ih:?} holds {} gate block(s) of H = \
                 {hidden} (a {})",
                cell.gate_count(),
                cell.name()
            ),
        });
    }

    let mut builder = match cell {
        CellKind::Rnn => RnnConfig::rnn(ih[1], hidden, opts.nonlinearity.unwrap_or_default()),
        _ if opts.nonlinearity.is_some() => {
            return Err(Error::InvalidConfig(format!(
                "nonlinearity applies to a plain RNN; `{ih_name}` {ih:?} is an {}",
                cell.name()
            )));
        }
        CellKind::Gru => RnnConfig::gru(ih[1], hidden),
        _ => RnnConfig::lstm(ih[1], hidden),
    };
    builder = builder
        .num_layers(layers)
        .bias(bias)
        .dropout(opts.dropout)
        .linear_before_reset(opts.linear_before_reset)
        .peepholes(peepholes);
    if proj {
        builder = builder.proj_size(hh[1]);
    }
    if bidirectional {
        builder = builder.direction(crate::Direction::Bidirectional);
    }
    if opts.batch_first {
        builder = builder.layout(Layout::BatchFirst);
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_names_parse() {
        assert_eq!(
            parse_canonical("weight_ih_l0"),
            Some((0, false, "weight_ih"))
        );
        assert_eq!(
            parse_canonical("weight_hh_l12_reverse"),
            Some((12, true, "weight_hh"))
        );
        assert_eq!(parse_canonical("peephole_l3"), Some((3, false, "peephole")));
        for other in [
            "weight_ih",
            "weight_ih_l",
            "weight_ih_lx",
            "fc.weight",
            "weight_ho_l0",
        ] {
            assert_eq!(parse_canonical(other), None, "{other}");
        }
        assert_eq!(canonical((2, true, "bias_hh")), "bias_hh_l2_reverse");
    }

    #[test]
    fn cell_names_drop_the_layer_suffix() {
        let cell = FileNames {
            prefix: "cell.".into(),
            cell: true,
        };
        assert_eq!(cell.file_name("bias_hh_l0"), "cell.bias_hh");
        let module = FileNames::default();
        assert_eq!(module.file_name("bias_hh_l0"), "bias_hh_l0");
    }
}
