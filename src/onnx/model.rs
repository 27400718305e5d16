//! Loading an ONNX model file: the recurrent nodes, their attributes and initializers, into
//! one (possibly stacked) [`Weights`] and the graph's interface around it.

use std::path::Path;

use prost::Message;

use super::attrs::{NodeSpec, cell_op, parse_node, recurrent_kind};
use super::graph::{Graph, LengthsSource, StateSource};
use super::layer::import_layer_weights;
use super::proto::ModelProto;
use super::tensor::Tensor;
use super::view::{Atom, Root, Sizes, View};
use crate::config::{CellKind, Layout, Nonlinearity, RnnConfig};
use crate::error::{Error, Result};
use crate::weights::Weights;

/// An ONNX model of one recurrent network: the weights (with their [`RnnConfig`]) and how the
/// graph's inputs and outputs map onto the engine's tensors.
///
/// Made by [`load_model`] / [`load_model_from_bytes`] / [`load_model_with`] from a file, or by
/// [`OnnxModel::from_weights`]; written by [`super::save_model`]; run by
/// [`OnnxModel::run_cpu`] and [`super::OnnxRunner`].
///
/// It is one `LSTM`, `GRU` or `RNN` node, or a stack of them as `torch.onnx.export` writes a
/// multi-layer module: the layers' nodes in order, each reading the previous layer's `Y`
/// through `Squeeze` (one direction) or `Transpose` + `Reshape` (two), their initial states
/// `Slice`d from one graph input (or made by `Expand` / `ConstantOfShape` of a constant),
/// their final states joined by `Concat`, plus `Transpose`s at either end for `batch_first`.
#[derive(Debug, Clone)]
pub struct OnnxModel {
    pub(crate) weights: Weights,
    /// The graph input that feeds layer 0's `X`.
    pub(crate) x_input: String,
    /// Layer 0's `X` axis `j` is axis `x_axes[j]` of the graph input.
    pub(crate) x_axes: Vec<usize>,
    /// Per layer: where `initial_h` / `initial_c` come from.
    pub(crate) h0: Vec<StateSource>,
    pub(crate) c0: Vec<StateSource>,
    pub(crate) lengths: LengthsSource,
    /// The graph's outputs, each a view of the last layer's `Y` or of the states.
    pub(crate) outputs: Vec<(String, View)>,
}

/// Read an `.onnx` file. See [`load_model_with`].
///
/// Errors: [`Error::Io`]; as [`load_model_with`].
pub fn load_model(path: impl AsRef<Path>) -> Result<OnnxModel> {
    let path = path.as_ref();
    let bytes = std::fs::read(path)?;
    let model = ModelProto::decode(bytes.as_slice()).map_err(|e| Error::OnnxDecode {
        what: path.display().to_string(),
        why: e.to_string(),
    })?;
    OnnxModel::from_proto(&model, &[])
}

/// Read an ONNX model from the bytes of an `.onnx` file. See [`load_model_with`].
pub fn load_model_from_bytes(bytes: &[u8]) -> Result<OnnxModel> {
    load_model_with(bytes, &[])
}

/// Read an ONNX model from the bytes of an `.onnx` file, taking the graph inputs named in
/// `bound` as constants: for models that feed their weights as inputs (ONNX's own node tests
/// give `W`, `R` and `B` that way) rather than as initializers.
///
/// The attributes are read with the ONNX defaults (see the table in [`super`]); `W`, `R`, `B`
/// and `P` must be constants (initializers, `Constant` nodes, or `bound`); `sequence_lens`,
/// `initial_h` and `initial_c` may be constants or graph inputs.
///
/// Errors: [`Error::OnnxDecode`] for bytes that are no `ModelProto`; [`Error::OnnxModel`]
/// naming the node, attribute or value for a graph without a recurrent node, a node or glue
/// this loader does not take (it names the node), layers that differ in cell, direction,
/// layout or activations, weights that are not constants, or a `bound` tensor that is no
/// graph input; [`Error::ShapeMismatch`] naming the node and tensor for a weight of the
/// wrong shape; [`Error::WrongDtype`] for weights that are not `float`.
pub fn load_model_with(bytes: &[u8], bound: &[Tensor]) -> Result<OnnxModel> {
    let model = ModelProto::decode(bytes).map_err(|e| Error::OnnxDecode {
        what: "model bytes".into(),
        why: e.to_string(),
    })?;
    OnnxModel::from_proto(&model, bound)
}

fn bad(place: impl Into<String>, why: impl Into<String>) -> Error {
    Error::OnnxModel {
        place: place.into(),
        why: why.into(),
    }
}

/// Give a shape error the node's label.
fn in_node(e: Error, label: &str) -> Error {
    match e {
        Error::ShapeMismatch {
            name,
            expected,
            got,
        } => Error::ShapeMismatch {
            name: format!("{label}: {name}"),
            expected,
            got,
        },
        Error::InvalidConfig(why) | Error::Unsupported(why) => bad(label, why),
        other => other,
    }
}

impl OnnxModel {
    /// The weights, with the model's configuration ([`Weights::config`]).
    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// The configuration: cell, sizes, layers, direction, layout (ONNX `layout`), variants.
    pub fn config(&self) -> &RnnConfig {
        self.weights.config()
    }

    /// The weights, by value.
    pub fn into_weights(self) -> Weights {
        self.weights
    }

    /// The runtime graph inputs [`OnnxModel::run_graph_cpu`] reads: `X`'s first, then
    /// those that feed `sequence_lens`, `initial_h` and `initial_c`.
    pub fn input_names(&self) -> Vec<&str> {
        let mut names = vec![self.x_input.as_str()];
        if let LengthsSource::Input(n) = &self.lengths {
            names.push(n);
        }
        for s in self.h0.iter().chain(&self.c0) {
            if let StateSource::Input { name, .. } = s {
                if !names.contains(&name.as_str()) {
                    names.push(name);
                }
            }
        }
        names
    }

    /// The graph outputs, in the graph's order.
    pub fn output_names(&self) -> Vec<&str> {
        self.outputs.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// A model of `weights` with ONNX's operator interface: inputs `X`, `sequence_lens`,
    /// `initial_h`, `initial_c` (LSTM); outputs `Y` (the last layer's, `[T, D, B, H]` or
    /// `[B, T, D, H]`), `Y_h` and `Y_c` (every layer's, `[L*D, B, H]` or `[B, L*D, H]`).
    /// This is what [`super::save_model`] writes.
    ///
    /// Errors: [`Error::Unsupported`] for what ONNX cannot express: a projection
    /// (`proj_size`) or a cell-state clip; as [`Weights::validate`].
    pub fn from_weights(weights: Weights) -> Result<OnnxModel> {
        let cfg = weights.config().clone();
        super::layer::onnx_attributes(&cfg)?;
        weights.validate()?;
        let l = cfg.num_layers();
        let sizes = Sizes {
            dirs: cfg.num_directions(),
            hidden: cfg.hidden_size(),
            layers: l,
        };
        let bf = cfg.layout() == Layout::BatchFirst;
        let state = |c| {
            let axes = if bf {
                vec![vec![Atom::B], vec![Atom::Layer, Atom::Dir], vec![Atom::H]]
            } else {
                vec![vec![Atom::Layer, Atom::Dir], vec![Atom::B], vec![Atom::H]]
            };
            View::new(Root::State { c, layer: None }, axes, &sizes)
        };
        let y_axes = if bf {
            vec![vec![Atom::B], vec![Atom::T], vec![Atom::Dir], vec![Atom::H]]
        } else {
            vec![vec![Atom::T], vec![Atom::Dir], vec![Atom::B], vec![Atom::H]]
        };
        let mut outputs = vec![
            ("Y".to_string(), View::new(Root::Y(l - 1), y_axes, &sizes)),
            ("Y_h".to_string(), state(false)),
        ];
        if cfg.cell() == CellKind::Lstm {
            outputs.push(("Y_c".to_string(), state(true)));
        }
        let d = cfg.num_directions();
        let rows = |name: &str| -> Vec<StateSource> {
            (0..l)
                .map(|k| StateSource::Input {
                    name: name.into(),
                    start: k * d,
                    end: Some((k + 1) * d),
                })
                .collect()
        };
        Ok(OnnxModel {
            x_input: "X".into(),
            x_axes: vec![0, 1, 2],
            h0: rows("initial_h"),
            c0: if cfg.cell() == CellKind::Lstm {
                rows("initial_c")
            } else {
                vec![StateSource::Zeros; l]
            },
            lengths: LengthsSource::Input("sequence_lens".into()),
            outputs,
            weights,
        })
    }

    pub(crate) fn from_proto(model: &ModelProto, bound: &[Tensor]) -> Result<OnnxModel> {
        let graph = model
            .graph
            .as_ref()
            .ok_or_else(|| bad("model", "has no graph"))?;
        let mut g = Graph::new(graph, bound)?;
        let nodes = g.recurrent_nodes();
        if nodes.is_empty() {
            return Err(bad("graph", "has no LSTM, GRU or RNN node"));
        }
        let labels: Vec<String> = nodes.iter().map(|&i| g.label(i)).collect();
        let specs = nodes
            .iter()
            .zip(&labels)
            .map(|(&i, label)| {
                let node = &graph.node[i];
                let cell = recurrent_kind(node).expect("recurrent_nodes returns only these");
                parse_node(node, cell, label)
            })
            .collect::<Result<Vec<NodeSpec>>>()?;
        let first = &specs[0];
        for (spec, label) in specs.iter().zip(&labels).skip(1) {
            let differs = if spec.cell != first.cell {
                Some("op type")
            } else if spec.direction != first.direction {
                Some("direction")
            } else if spec.layout != first.layout {
                Some("layout")
            } else if spec.clip != first.clip
                || spec.input_forget != first.input_forget
                || spec.linear_before_reset != first.linear_before_reset
            {
                Some("clip, input_forget or linear_before_reset")
            } else if spec.activations != first.activations {
                Some("activations")
            } else {
                None
            };
            if let Some(what) = differs {
                return Err(bad(
                    label.clone(),
                    format!(
                        "differs from {} in {what}; the layers of one stacked model share them",
                        labels[0]
                    ),
                ));
            }
        }

        // The weights of every layer, as constants.
        let weight = |i: usize, k: usize, what: &str, label: &str| -> Result<Option<Tensor>> {
            let Some(name) = graph.node[i].input.get(k).filter(|n| !n.is_empty()) else {
                return Ok(None);
            };
            match g.constant(name)? {
                Some(t) => Ok(Some(t)),
                None => Err(bad(
                    format!("input `{what}` (`{name}`) of {label}"),
                    "is not a constant: give it as an initializer or a Constant node, or bind \
                     it with onnx::load_model_with",
                )),
            }
        };
        let mut tensors = Vec::new();
        for (&i, label) in nodes.iter().zip(&labels) {
            let w = weight(i, 1, "W", label)?.ok_or_else(|| bad(label.clone(), "has no W"))?;
            let r = weight(i, 2, "R", label)?.ok_or_else(|| bad(label.clone(), "has no R"))?;
            let b = weight(i, 3, "B", label)?;
            let p = if first.cell == CellKind::Lstm {
                weight(i, 7, "P", label)?
            } else {
                None
            };
            tensors.push((w, r, b, p));
        }
        let (w0, r0, ..) = &tensors[0];
        if w0.dims.len() != 3 || r0.dims.len() != 3 {
            return Err(Error::ShapeMismatch {
                name: format!("{}: W and R (rank 3)", labels[0]),
                expected: vec![3, 3],
                got: vec![w0.dims.len(), r0.dims.len()],
            });
        }
        let hidden = first.hidden_size.unwrap_or(r0.dims[2]);
        let input = w0.dims[2];
        let layers = nodes.len();
        let cfg = build_config(first, input, hidden, layers, &tensors)
            .map_err(|e| in_node(e, &labels[0]))?;
        let d = cfg.num_directions();
        let g_rows = cfg.gate_count() * hidden;
        let mut all = Vec::new();
        for (l, ((w, r, b, p), label)) in tensors.iter().zip(&labels).enumerate() {
            if specs[l].hidden_size.is_some_and(|h| h != hidden) {
                return Err(bad(
                    label.clone(),
                    format!("hidden_size differs from layer 0's {hidden}"),
                ));
            }
            let shape_check = |name: &str, t: &Tensor, want: Vec<usize>| -> Result<()> {
                if t.dims != want {
                    return Err(Error::ShapeMismatch {
                        name: format!("{label}: {name}"),
                        expected: want,
                        got: t.dims.clone(),
                    });
                }
                Ok(())
            };
            shape_check("W", w, vec![d, g_rows, cfg.layer_input_size(l)])?;
            shape_check("R", r, vec![d, g_rows, hidden])?;
            if let Some(b) = b {
                shape_check("B", b, vec![d, 2 * g_rows])?;
            }
            if let Some(p) = p {
                shape_check("P", p, vec![d, 3 * hidden])?;
            }
            let layer = import_layer_weights(
                &cfg,
                l,
                w.as_f32()?,
                r.as_f32()?,
                b.as_ref().map(|b| b.as_f32()).transpose()?,
                p.as_ref().map(|p| p.as_f32()).transpose()?,
            )
            .map_err(|e| in_node(e, label))?;
            all.extend(layer);
        }
        let weights = Weights::from_layers(&cfg, all)?;

        // The graph around the nodes.
        g.sizes = Sizes {
            dirs: d,
            hidden,
            layers,
        };
        g.layout = cfg.layout();
        for (l, &i) in nodes.iter().enumerate() {
            g.layer_of.insert(i, l);
        }
        let bf = cfg.layout() == Layout::BatchFirst;
        let x0 = g.view(&graph.node[nodes[0]].input[0])?;
        let (x_input, x_axes) = match (&x0.root, x0.axes.as_slice()) {
            (Root::Input(name), axes) if axes.len() == 3 => {
                let ks = axes
                    .iter()
                    .map(|a| match a.as_slice() {
                        [Atom::In(k)] => Some(*k),
                        _ => None,
                    })
                    .collect::<Option<Vec<usize>>>()
                    .ok_or_else(|| {
                        bad(
                            labels[0].clone(),
                            "X reshapes its graph input; only a Transpose is followed",
                        )
                    })?;
                (name.clone(), ks)
            }
            _ => {
                return Err(bad(
                    labels[0].clone(),
                    "X must be a graph input of rank 3 (or a Transpose of one)",
                ));
            }
        };
        for l in 1..layers {
            let x = g.view(&graph.node[nodes[l]].input[0])?;
            let features = vec![Atom::Dir, Atom::H];
            let want = if bf {
                vec![vec![Atom::B], vec![Atom::T], features]
            } else {
                vec![vec![Atom::T], vec![Atom::B], features]
            };
            if x != View::new(Root::Y(l - 1), want, &g.sizes) {
                return Err(bad(
                    labels[l].clone(),
                    format!(
                        "X is not {}'s Y with its directions joined on the feature axis \
                         ([T, B, D*H] in layout 0): the nodes do not form one stack",
                        labels[l - 1]
                    ),
                ));
            }
        }
        let dir_axis = usize::from(bf);
        let mut h0 = Vec::new();
        let mut c0 = Vec::new();
        let mut lengths = None;
        for (&i, label) in nodes.iter().zip(&labels) {
            let node = &graph.node[i];
            let input = |k: usize| node.input.get(k).map(String::as_str).unwrap_or_default();
            h0.push(g.state_source(input(5), dir_axis)?);
            c0.push(if cfg.cell() == CellKind::Lstm {
                g.state_source(input(6), dir_axis)?
            } else {
                StateSource::Zeros
            });
            let src = g.lengths_source(input(4), label)?;
            match &lengths {
                None => lengths = Some(src),
                Some(first) if *first != src => {
                    return Err(bad(label.clone(), "sequence_lens differs from layer 0's"));
                }
                _ => {}
            }
        }
        let mut outputs = Vec::new();
        for out in &graph.output {
            let name = out.name.clone().unwrap_or_default();
            let view = g.view(&name)?;
            match view.root {
                Root::Y(l) if l + 1 != layers => {
                    return Err(bad(
                        format!("graph output `{name}`"),
                        format!(
                            "is derived from the Y of {}, an inner layer, which the stacked \
                             model does not return",
                            labels[l]
                        ),
                    ));
                }
                Root::Input(_) => {
                    return Err(bad(
                        format!("graph output `{name}`"),
                        "is not computed by the recurrent nodes",
                    ));
                }
                _ => outputs.push((name, view)),
            }
        }
        Ok(OnnxModel {
            weights,
            x_input,
            x_axes,
            h0,
            c0,
            lengths: lengths.unwrap_or(LengthsSource::None),
            outputs,
        })
    }
}

type LayerTensors = (Tensor, Tensor, Option<Tensor>, Option<Tensor>);

fn build_config(
    spec: &NodeSpec,
    input: usize,
    hidden: usize,
    layers: usize,
    tensors: &[LayerTensors],
) -> Result<RnnConfig> {
    let mut b = match spec.cell {
        CellKind::Lstm => RnnConfig::lstm(input, hidden),
        CellKind::Gru => {
            RnnConfig::gru(input, hidden).linear_before_reset(spec.linear_before_reset)
        }
        CellKind::Rnn => RnnConfig::rnn(input, hidden, Nonlinearity::Tanh),
    }
    .num_layers(layers)
    .direction(spec.direction)
    .layout(spec.layout)
    .activations(spec.activations)
    .bias(tensors.iter().any(|t| t.2.is_some()));
    if spec.cell == CellKind::Lstm {
        b = b
            .input_forget(spec.input_forget)
            .peepholes(tensors.iter().any(|t| t.3.is_some()));
    }
    if let Some(c) = spec.clip {
        b = b.gate_clip(c);
    }
    b.build().map_err(|e| match e {
        Error::InvalidConfig(why) => {
            Error::InvalidConfig(format!("{} node: {why}", cell_op(spec.cell)))
        }
        other => other,
    })
}
