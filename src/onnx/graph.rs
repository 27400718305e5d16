//! Reading an ONNX graph: constants, runtime inputs, and how each value is derived from a
//! recurrent node through the glue between nodes ([`super::view`]).

use std::collections::{HashMap, HashSet};

use super::attrs::{node_label, recurrent_kind};
use super::proto::{GraphProto, NodeProto};
use super::tensor::{Tensor, TensorData, from_proto};
use super::view::{Atom, Root, Sizes, View};
use crate::config::Layout;
use crate::error::{Error, Result};

/// Deepest chain of glue followed from a value back to its source; a valid graph is acyclic,
/// this only bounds the recursion on a malformed one.
const MAX_DEPTH: usize = 256;

/// Where a layer's `initial_h` / `initial_c` comes from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StateSource {
    /// Absent: zeros.
    Zeros,
    /// Every element `v` (`Expand` or `ConstantOfShape` of a constant).
    Fill(f32),
    /// A constant tensor of the node's own state shape (`[D, B, H]`, or `[B, D, H]` in layout 1).
    Const(Tensor),
    /// Rows `start..end` on the direction axis of a runtime graph input (all of it for a
    /// single node; a `Slice` per layer in exported stacks).
    Input {
        name: String,
        start: usize,
        end: Option<usize>,
    },
}

/// Where the node's `sequence_lens` comes from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum LengthsSource {
    None,
    Const(Vec<usize>),
    Input(String),
}

/// The graph with its lookups.
pub(crate) struct Graph<'a> {
    pub g: &'a GraphProto,
    producer: HashMap<&'a str, (usize, usize)>,
    consts: HashMap<String, Tensor>,
    pub runtime_inputs: HashSet<String>,
    /// Node index -> layer, for the recurrent nodes.
    pub layer_of: HashMap<usize, usize>,
    pub sizes: Sizes,
    pub layout: Layout,
}

fn bad(place: impl Into<String>, why: impl Into<String>) -> Error {
    Error::OnnxModel {
        place: place.into(),
        why: why.into(),
    }
}

impl<'a> Graph<'a> {
    /// Index the graph; `bound` gives values for graph inputs that hold weights (ONNX's node
    /// tests feed `W`, `R` and `B` as inputs rather than initializers).
    pub fn new(g: &'a GraphProto, bound: &[Tensor]) -> Result<Graph<'a>> {
        let mut consts = HashMap::new();
        for init in &g.initializer {
            let t = from_proto(init)?;
            consts.insert(t.name.clone(), t);
        }
        let mut runtime_inputs = HashSet::new();
        for input in &g.input {
            let name = input.name.clone().unwrap_or_default();
            if !consts.contains_key(&name) {
                runtime_inputs.insert(name);
            }
        }
        for t in bound {
            if !runtime_inputs.remove(&t.name) {
                return Err(bad(
                    format!("bound tensor `{}`", t.name),
                    "is not an input of the graph (or is an initializer already)",
                ));
            }
            consts.insert(t.name.clone(), t.clone());
        }
        let mut producer = HashMap::new();
        for (i, node) in g.node.iter().enumerate() {
            for (k, out) in node.output.iter().enumerate() {
                if !out.is_empty() {
                    producer.insert(out.as_str(), (i, k));
                }
            }
        }
        Ok(Graph {
            g,
            producer,
            consts,
            runtime_inputs,
            layer_of: HashMap::new(),
            sizes: Sizes {
                dirs: 1,
                hidden: 1,
                layers: 1,
            },
            layout: Layout::SeqMajor,
        })
    }

    pub fn label(&self, i: usize) -> String {
        node_label(&self.g.node[i], i)
    }

    fn producer(&self, name: &str) -> Option<(usize, &'a NodeProto, usize)> {
        self.producer
            .get(name)
            .map(|&(i, k)| (i, &self.g.node[i], k))
    }

    /// The value of `name` when it is a constant: an initializer, a bound input, the output
    /// of a `Constant` node (or an `Identity` / `Cast`-free chain of them). `None` otherwise.
    pub fn constant(&self, name: &str) -> Result<Option<Tensor>> {
        self.constant_at(name, 0)
    }

    fn constant_at(&self, name: &str, depth: usize) -> Result<Option<Tensor>> {
        if let Some(t) = self.consts.get(name) {
            return Ok(Some(t.clone()));
        }
        let Some((i, node, _)) = self.producer(name) else {
            return Ok(None);
        };
        if depth > MAX_DEPTH {
            return Err(bad(self.label(i), "constant chain too deep (a cycle?)"));
        }
        match node.op_type.as_deref() {
            Some("Constant") => constant_node(node, &self.label(i), name).map(Some),
            Some("Identity") => self.constant_at(&node.input[0], depth + 1),
            _ => Ok(None),
        }
    }

    /// A constant integer list (`Reshape`'s shape, `Squeeze`'s axes, ...) given as input `k`
    /// of node `i`; `None` when the input is absent.
    fn const_ints(&self, i: usize, k: usize) -> Result<Option<Vec<i64>>> {
        let node = &self.g.node[i];
        let Some(name) = node.input.get(k).filter(|n| !n.is_empty()) else {
            return Ok(None);
        };
        match self.constant(name)? {
            Some(t) => Ok(Some(t.to_i64()?)),
            None => Err(bad(
                self.label(i),
                format!("input {k} (`{name}`) must be a constant, not computed at run time"),
            )),
        }
    }

    fn ints_attr(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
        node.attribute
            .iter()
            .find(|a| a.name.as_deref() == Some(name))
            .map(|a| a.ints.clone())
    }

    fn int_attr(node: &NodeProto, name: &str) -> Option<i64> {
        node.attribute
            .iter()
            .find(|a| a.name.as_deref() == Some(name))
            .and_then(|a| a.i)
    }

    /// The view of value `name`: its root and how its axes are built from the root's.
    pub fn view(&self, name: &str) -> Result<View> {
        self.view_at(name, 0)
    }

    fn view_at(&self, name: &str, depth: usize) -> Result<View> {
        let sizes = &self.sizes;
        if self.runtime_inputs.contains(name) {
            let rank = self
                .g
                .input
                .iter()
                .find(|v| v.name.as_deref() == Some(name))
                .and_then(input_rank)
                .unwrap_or(3);
            return Ok(View::new(
                Root::Input(name.into()),
                (0..rank).map(|k| vec![Atom::In(k)]).collect(),
                sizes,
            ));
        }
        let Some((i, node, k)) = self.producer(name) else {
            return Err(bad(
                format!("value `{name}`"),
                "is neither a graph input nor the output of a node",
            ));
        };
        if depth > MAX_DEPTH {
            return Err(bad(self.label(i), "chain of glue too deep (a cycle?)"));
        }
        let label = self.label(i);
        if let Some(&layer) = self.layer_of.get(&i) {
            let bf = self.layout == Layout::BatchFirst;
            return Ok(match k {
                0 if bf => View::new(
                    Root::Y(layer),
                    vec![vec![Atom::B], vec![Atom::T], vec![Atom::Dir], vec![Atom::H]],
                    sizes,
                ),
                0 => View::new(
                    Root::Y(layer),
                    vec![vec![Atom::T], vec![Atom::Dir], vec![Atom::B], vec![Atom::H]],
                    sizes,
                ),
                _ => {
                    let root = Root::State {
                        c: k == 2,
                        layer: Some(layer),
                    };
                    if bf {
                        View::new(
                            root,
                            vec![vec![Atom::B], vec![Atom::Dir], vec![Atom::H]],
                            sizes,
                        )
                    } else {
                        View::new(
                            root,
                            vec![vec![Atom::Dir], vec![Atom::B], vec![Atom::H]],
                            sizes,
                        )
                    }
                }
            });
        }
        let op = node.op_type.as_deref().unwrap_or_default();
        let input = |n: usize| -> Result<View> {
            let name = node
                .input
                .get(n)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| bad(label.clone(), format!("input {n} is missing")))?;
            self.view_at(name, depth + 1)
        };
        match op {
            "Identity" => input(0),
            "Transpose" => input(0)?.transpose(Self::ints_attr(node, "perm").as_deref(), &label),
            "Squeeze" => {
                let axes = match Self::ints_attr(node, "axes") {
                    Some(a) => Some(a),
                    None => self.const_ints(i, 1)?,
                };
                input(0)?.squeeze(axes.as_deref(), &label)
            }
            "Unsqueeze" => {
                let axes = match Self::ints_attr(node, "axes") {
                    Some(a) => a,
                    None => self
                        .const_ints(i, 1)?
                        .ok_or_else(|| bad(label.clone(), "has no axes"))?,
                };
                input(0)?.unsqueeze(&axes, &label)
            }
            "Reshape" => {
                let shape = self
                    .const_ints(i, 1)?
                    .ok_or_else(|| bad(label.clone(), "has no shape input"))?;
                let allow_zero = Self::int_attr(node, "allowzero").unwrap_or(0) != 0;
                input(0)?.reshape(&shape, allow_zero, sizes, &label)
            }
            "Concat" => self.concat_states(i, node, depth),
            _ => Err(bad(
                label,
                "is not a recurrent node nor glue this loader follows between them \
                 (Identity, Transpose, Squeeze, Unsqueeze, Reshape, Concat of the layers' states)",
            )),
        }
    }

    /// `Concat` of every layer's `Y_h` (or `Y_c`), in layer order, all in the same form:
    /// the stacked state, the layer outermost on the concatenated axis.
    fn concat_states(&self, i: usize, node: &NodeProto, depth: usize) -> Result<View> {
        let label = self.label(i);
        let refuse = || {
            bad(
                label.clone(),
                "Concat is followed only where it stacks every layer's Y_h (or Y_c), \
                 layer 0 first, each in the same form",
            )
        };
        let views = node
            .input
            .iter()
            .map(|n| self.view_at(n, depth + 1))
            .collect::<Result<Vec<View>>>()?;
        if views.len() != self.sizes.layers {
            return Err(refuse());
        }
        let c = match views[0].root {
            Root::State { c, .. } => c,
            _ => return Err(refuse()),
        };
        for (l, v) in views.iter().enumerate() {
            if v.root != (Root::State { c, layer: Some(l) }) || v.axes != views[0].axes {
                return Err(refuse());
            }
        }
        let rank = views[0].axes.len() as i64;
        let axis = Self::int_attr(node, "axis").unwrap_or(0);
        let axis = if axis < 0 { axis + rank } else { axis };
        if !(0..rank).contains(&axis) {
            return Err(bad(label, format!("axis out of range for rank {rank}")));
        }
        let mut axes = views[0].axes.clone();
        axes[axis as usize].insert(0, Atom::Layer);
        Ok(View::new(Root::State { c, layer: None }, axes, &self.sizes))
    }

    /// Where a node's `initial_h` / `initial_c` (value `name`) comes from. `dir_axis` is the
    /// direction axis of the node's state layout (0, or 1 in layout 1).
    pub fn state_source(&self, name: &str, dir_axis: usize) -> Result<StateSource> {
        self.state_source_at(name, dir_axis, 0)
    }

    fn state_source_at(&self, name: &str, dir_axis: usize, depth: usize) -> Result<StateSource> {
        if name.is_empty() {
            return Ok(StateSource::Zeros);
        }
        if let Some(t) = self.constant(name)? {
            return Ok(StateSource::Const(t));
        }
        if self.runtime_inputs.contains(name) {
            return Ok(StateSource::Input {
                name: name.into(),
                start: 0,
                end: None,
            });
        }
        let Some((i, node, _)) = self.producer(name) else {
            return Err(bad(
                format!("value `{name}`"),
                "is neither a graph input nor a node output",
            ));
        };
        if depth > MAX_DEPTH {
            return Err(bad(self.label(i), "chain too deep (a cycle?)"));
        }
        let label = self.label(i);
        let uniform = |t: &Tensor| -> Option<f32> {
            let v = t.as_f32().ok()?;
            let first = *v.first()?;
            v.iter().all(|&x| x == first).then_some(first)
        };
        match node.op_type.as_deref().unwrap_or_default() {
            "Identity" => self.state_source_at(&node.input[0], dir_axis, depth + 1),
            "Expand" => match self.constant(&node.input[0])?.as_ref().and_then(uniform) {
                Some(v) => Ok(StateSource::Fill(v)),
                None => Err(bad(
                    label,
                    "expands something other than one constant value",
                )),
            },
            "ConstantOfShape" => {
                let value = node
                    .attribute
                    .iter()
                    .find(|a| a.name.as_deref() == Some("value"))
                    .and_then(|a| a.t.as_ref())
                    .map(from_proto)
                    .transpose()?;
                match value {
                    None => Ok(StateSource::Fill(0.0)),
                    Some(t) => uniform(&t)
                        .map(StateSource::Fill)
                        .ok_or_else(|| bad(label, "value is not one float")),
                }
            }
            "Slice" => {
                let (starts, ends, axes, steps) = if node.input.len() >= 3 {
                    (
                        self.const_ints(i, 1)?.unwrap_or_default(),
                        self.const_ints(i, 2)?.unwrap_or_default(),
                        self.const_ints(i, 3)?,
                        self.const_ints(i, 4)?,
                    )
                } else {
                    (
                        Self::ints_attr(node, "starts").unwrap_or_default(),
                        Self::ints_attr(node, "ends").unwrap_or_default(),
                        Self::ints_attr(node, "axes"),
                        None,
                    )
                };
                let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
                let one_step = steps.is_none_or(|s| s.iter().all(|&s| s == 1));
                if starts.len() != 1
                    || ends.len() != 1
                    || axes != [dir_axis as i64]
                    || !one_step
                    || starts[0] < 0
                    || ends[0] < 0
                {
                    return Err(bad(
                        label,
                        format!(
                            "only a Slice of whole layers along the state's direction axis \
                             ({dir_axis}) with step 1 is followed"
                        ),
                    ));
                }
                let (s, e) = (starts[0] as usize, ends[0]);
                match self.state_source_at(&node.input[0], dir_axis, depth + 1)? {
                    StateSource::Input { name, start, end } => {
                        // An end past any real size (exporters write INT_MAX) means "to the end".
                        let new_end = if e >= i32::MAX as i64 {
                            end
                        } else {
                            Some(start + e as usize)
                        };
                        Ok(StateSource::Input {
                            name,
                            start: start + s,
                            end: match (new_end, end) {
                                (Some(a), Some(b)) => Some(a.min(b)),
                                (a, b) => a.or(b),
                            },
                        })
                    }
                    fill @ (StateSource::Zeros | StateSource::Fill(_)) => Ok(fill),
                    StateSource::Const(_) => {
                        Err(bad(label, "slices a constant state; fold it first"))
                    }
                }
            }
            _ => Err(bad(
                label,
                "computes an initial state in a way this loader does not follow (it takes a \
                 graph input, a constant, a Slice of them, Expand or ConstantOfShape of a constant)",
            )),
        }
    }

    /// Where a node's `sequence_lens` (value `name`) comes from.
    pub fn lengths_source(&self, name: &str, label: &str) -> Result<LengthsSource> {
        if name.is_empty() {
            return Ok(LengthsSource::None);
        }
        if let Some(t) = self.constant(name)? {
            return Ok(LengthsSource::Const(t.to_lengths()?));
        }
        if self.runtime_inputs.contains(name) {
            return Ok(LengthsSource::Input(name.into()));
        }
        Err(bad(
            label.to_string(),
            format!("sequence_lens (`{name}`) must be a graph input or a constant"),
        ))
    }

    /// The recurrent nodes, in graph order.
    pub fn recurrent_nodes(&self) -> Vec<usize> {
        (0..self.g.node.len())
            .filter(|&i| recurrent_kind(&self.g.node[i]).is_some())
            .collect()
    }
}

fn input_rank(v: &super::proto::ValueInfoProto) -> Option<usize> {
    use super::proto::type_proto::Value;
    match v.r#type.as_ref()?.value.as_ref()? {
        Value::TensorType(t) => Some(t.shape.as_ref()?.dim.len()),
        _ => None,
    }
}

/// The tensor a `Constant` node holds (`value`, `value_float(s)`, `value_int(s)`).
fn constant_node(node: &NodeProto, label: &str, out: &str) -> Result<Tensor> {
    let a = node
        .attribute
        .first()
        .ok_or_else(|| bad(label.to_string(), "Constant without a value"))?;
    let name = out.to_string();
    Ok(match a.name.as_deref().unwrap_or_default() {
        "value" => {
            let mut t = from_proto(
                a.t.as_ref()
                    .ok_or_else(|| bad(label.to_string(), "Constant value is no tensor"))?,
            )?;
            t.name = name;
            t
        }
        "value_float" => Tensor {
            name,
            dims: vec![],
            data: TensorData::F32(vec![a.f.unwrap_or(0.0)]),
        },
        "value_floats" => Tensor {
            name,
            dims: vec![a.floats.len()],
            data: TensorData::F32(a.floats.clone()),
        },
        "value_int" => Tensor {
            name,
            dims: vec![],
            data: TensorData::I64(vec![a.i.unwrap_or(0)]),
        },
        "value_ints" => Tensor {
            name,
            dims: vec![a.ints.len()],
            data: TensorData::I64(a.ints.clone()),
        },
        other => {
            return Err(bad(
                label.to_string(),
                format!("Constant `{other}` is not a float or integer tensor"),
            ));
        }
    })
}
