//! The attributes of one ONNX `LSTM` / `GRU` / `RNN` node, read with the operator's defaults
//! (opset 14; the older opsets' attributes are the same, less `layout`).
//!
//! | attribute             | default                                  | ours                     |
//! |-----------------------|------------------------------------------|--------------------------|
//! | `direction`           | `"forward"`                              | [`Direction`]            |
//! | `layout`              | 0 (`[T, B, ·]`)                          | [`Layout`]               |
//! | `hidden_size`         | (from `R`'s shape when absent)           | `H`                      |
//! | `clip`                | none                                     | `gate_clip`              |
//! | `input_forget`        | 0 (LSTM only)                            | `input_forget`           |
//! | `linear_before_reset` | 0 (GRU only): reset *before*, not PyTorch | [`crate::GruReset`]     |
//! | `activations`         | LSTM Sigmoid, Tanh, Tanh; GRU Sigmoid, Tanh; RNN Tanh | [`Activations`] |
//! | `activation_alpha/beta` | per function, see [`Activation::from_onnx`] | in the activation    |
//!
//! `activation_alpha` / `activation_beta` are consumed in the order of the activations that
//! take them (an activation without alpha takes no slot; the two lists advance independently),
//! which is how onnxruntime reads them. A bidirectional node lists the forward direction's
//! functions then the reverse's; both must be the same here (one [`Activations`] per model),
//! and a list of one direction's worth is taken for both.

use super::proto::{AttributeProto, NodeProto, attribute_proto::AttributeType};
use crate::config::{Activation, Activations, CellKind, Direction, Layout};
use crate::error::{Error, Result};

/// Everything the attributes of one recurrent node say.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NodeSpec {
    pub cell: CellKind,
    pub direction: Direction,
    pub layout: Layout,
    pub hidden_size: Option<usize>,
    pub clip: Option<f32>,
    pub input_forget: bool,
    pub linear_before_reset: bool,
    pub activations: Activations,
}

/// `name (op)` of a node, for error messages: its name, or `#index` when it has none.
pub(crate) fn node_label(node: &NodeProto, index: usize) -> String {
    let name = node.name.as_deref().unwrap_or_default();
    let op = node.op_type.as_deref().unwrap_or_default();
    if name.is_empty() {
        format!("node #{index} ({op})")
    } else {
        format!("node `{name}` ({op})")
    }
}

/// The cell kind of a node in the default (`ai.onnx`) domain, or `None` for any other node.
pub(crate) fn recurrent_kind(node: &NodeProto) -> Option<CellKind> {
    let domain = node.domain.as_deref().unwrap_or_default();
    if !(domain.is_empty() || domain == "ai.onnx") {
        return None;
    }
    match node.op_type.as_deref()? {
        "LSTM" => Some(CellKind::Lstm),
        "GRU" => Some(CellKind::Gru),
        "RNN" => Some(CellKind::Rnn),
        _ => None,
    }
}

fn attr_error(label: &str, attr: &str, why: impl Into<String>) -> Error {
    Error::OnnxModel {
        place: format!("attribute `{attr}` of {label}"),
        why: why.into(),
    }
}

fn expect_type(a: &AttributeProto, label: &str, want: AttributeType) -> Result<()> {
    let name = a.name.as_deref().unwrap_or_default();
    // IR versions before 0.0.2 leave `type` unset; everything since sets it.
    match a.r#type {
        Some(t) if t == want as i32 => Ok(()),
        None | Some(0) => Ok(()),
        Some(t) => Err(attr_error(
            label,
            name,
            format!(
                "has type {}, expected {}",
                AttributeType::try_from(t)
                    .map(|t| t.as_str_name())
                    .unwrap_or("unknown"),
                want.as_str_name()
            ),
        )),
    }
}

fn int_attr(a: &AttributeProto, label: &str) -> Result<i64> {
    expect_type(a, label, AttributeType::Int)?;
    Ok(a.i.unwrap_or(0))
}

fn flag_attr(a: &AttributeProto, label: &str) -> Result<bool> {
    match int_attr(a, label)? {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(attr_error(
            label,
            a.name.as_deref().unwrap_or_default(),
            format!("must be 0 or 1, got {v}"),
        )),
    }
}

fn string_attr(a: &AttributeProto, label: &str) -> Result<String> {
    expect_type(a, label, AttributeType::String)?;
    Ok(String::from_utf8_lossy(a.s.as_deref().unwrap_or_default()).into_owned())
}

/// Parse the attributes of recurrent node `node` (`label` names it in errors).
///
/// Errors: [`Error::OnnxModel`] naming the attribute for an unknown attribute, a value out of
/// range, a wrong attribute type, activations the model cannot express (different per
/// direction, a wrong count, an unknown name) or alpha/beta values left over.
pub(crate) fn parse_node(node: &NodeProto, cell: CellKind, label: &str) -> Result<NodeSpec> {
    let mut spec = NodeSpec {
        cell,
        direction: Direction::Forward,
        layout: Layout::SeqMajor,
        hidden_size: None,
        clip: None,
        input_forget: false,
        linear_before_reset: false,
        activations: Activations::default(),
    };
    let mut names: Option<Vec<String>> = None;
    let mut alphas: Vec<f32> = Vec::new();
    let mut betas: Vec<f32> = Vec::new();
    for a in &node.attribute {
        let name = a.name.as_deref().unwrap_or_default();
        match name {
            "direction" => {
                spec.direction = match string_attr(a, label)?.as_str() {
                    "forward" => Direction::Forward,
                    "reverse" => Direction::Reverse,
                    "bidirectional" => Direction::Bidirectional,
                    other => {
                        return Err(attr_error(
                            label,
                            name,
                            format!("{other:?} is not forward, reverse or bidirectional"),
                        ));
                    }
                }
            }
            "layout" => {
                spec.layout = match int_attr(a, label)? {
                    0 => Layout::SeqMajor,
                    1 => Layout::BatchFirst,
                    v => return Err(attr_error(label, name, format!("must be 0 or 1, got {v}"))),
                }
            }
            "hidden_size" => {
                let v = int_attr(a, label)?;
                spec.hidden_size =
                    Some(usize::try_from(v).ok().filter(|&h| h > 0).ok_or_else(|| {
                        attr_error(label, name, format!("must be >= 1, got {v}"))
                    })?);
            }
            "clip" => {
                expect_type(a, label, AttributeType::Float)?;
                let c = a.f.unwrap_or(0.0);
                if !(c > 0.0 && c.is_finite()) {
                    return Err(attr_error(
                        label,
                        name,
                        format!("must be positive and finite, got {c}"),
                    ));
                }
                spec.clip = Some(c);
            }
            "input_forget" if cell == CellKind::Lstm => spec.input_forget = flag_attr(a, label)?,
            "linear_before_reset" if cell == CellKind::Gru => {
                spec.linear_before_reset = flag_attr(a, label)?
            }
            "activations" => {
                expect_type(a, label, AttributeType::Strings)?;
                names = Some(
                    a.strings
                        .iter()
                        .map(|s| String::from_utf8_lossy(s).into_owned())
                        .collect(),
                );
            }
            "activation_alpha" => {
                expect_type(a, label, AttributeType::Floats)?;
                alphas = a.floats.clone();
            }
            "activation_beta" => {
                expect_type(a, label, AttributeType::Floats)?;
                betas = a.floats.clone();
            }
            other => {
                return Err(attr_error(
                    label,
                    other,
                    format!("is not an attribute of ONNX's {} operator", cell_op(cell)),
                ));
            }
        }
    }
    if let Some(names) = names {
        spec.activations = parse_activations(cell, spec.direction, &names, &alphas, &betas, label)?;
    } else if !alphas.is_empty() || !betas.is_empty() {
        return Err(attr_error(
            label,
            if alphas.is_empty() {
                "activation_beta"
            } else {
                "activation_alpha"
            },
            "is given without `activations` (the default functions take no parameters)",
        ));
    }
    Ok(spec)
}

/// ONNX's op type of a cell kind.
pub(crate) fn cell_op(cell: CellKind) -> &'static str {
    match cell {
        CellKind::Lstm => "LSTM",
        CellKind::Gru => "GRU",
        CellKind::Rnn => "RNN",
    }
}

/// Whether onnxruntime gives the function an `activation_alpha` / `activation_beta` slot.
fn takes_params(name: &str) -> (bool, bool) {
    match name.to_ascii_lowercase().as_str() {
        "affine" | "scaledtanh" | "hardsigmoid" => (true, true),
        "leakyrelu" | "thresholdedrelu" | "elu" => (true, false),
        _ => (false, false),
    }
}

fn parse_activations(
    cell: CellKind,
    direction: Direction,
    names: &[String],
    alphas: &[f32],
    betas: &[f32],
    label: &str,
) -> Result<Activations> {
    let roles = match cell {
        CellKind::Lstm => 3,
        CellKind::Gru => 2,
        CellKind::Rnn => 1,
    };
    let dirs = if direction == Direction::Bidirectional {
        2
    } else {
        1
    };
    if names.len() != roles * dirs && names.len() != roles {
        return Err(attr_error(
            label,
            "activations",
            format!(
                "has {} functions; a {}-direction {} node takes {} per direction ({} or {})",
                names.len(),
                dirs,
                cell_op(cell),
                roles,
                roles,
                roles * dirs
            ),
        ));
    }
    let (mut ai, mut bi) = (0, 0);
    let mut parsed = Vec::with_capacity(names.len());
    for name in names {
        let (ta, tb) = takes_params(name);
        let alpha = if ta { alphas.get(ai).copied() } else { None };
        let beta = if tb { betas.get(bi).copied() } else { None };
        ai += usize::from(ta);
        bi += usize::from(tb);
        parsed.push(
            Activation::from_onnx(name, alpha, beta)
                .map_err(|e| attr_error(label, "activations", e.to_string()))?,
        );
    }
    for (attr, given, used) in [
        ("activation_alpha", alphas.len(), ai),
        ("activation_beta", betas.len(), bi),
    ] {
        if given > used {
            return Err(attr_error(
                label,
                attr,
                format!("has {given} values but the activations take only {used}"),
            ));
        }
    }
    if parsed.len() == roles * 2 && parsed[..roles] != parsed[roles..] {
        return Err(attr_error(
            label,
            "activations",
            format!(
                "differ between the directions ({:?} forward, {:?} reverse); one model has one \
                 set of activations",
                &parsed[..roles],
                &parsed[roles..]
            ),
        ));
    }
    let d = Activations::default();
    Ok(match cell {
        CellKind::Lstm => Activations {
            gate: parsed[0],
            cell: parsed[1],
            hidden: parsed[2],
        },
        CellKind::Gru => Activations {
            gate: parsed[0],
            cell: parsed[1],
            hidden: d.hidden,
        },
        CellKind::Rnn => Activations {
            cell: parsed[0],
            ..d
        },
    })
}
