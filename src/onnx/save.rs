//! Writing [`Weights`] as an ONNX model (opset 14) that onnxruntime runs.

use std::path::Path;

use prost::Message;

use super::attrs::cell_op;
use super::layer::{export_layer, onnx_attributes};
use super::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorShapeProto,
    TypeProto, ValueInfoProto,
    attribute_proto::AttributeType,
    tensor_proto::DataType,
    tensor_shape_proto::{Dimension, dimension::Value as DimValue},
    type_proto::{Tensor as TensorType, Value as TypeValue},
};
use super::tensor::{Tensor, to_proto};
use crate::config::{CellKind, Layout};
use crate::error::{Error, Result};
use crate::weights::Weights;

/// The opset written: the first with the `layout` attribute.
pub const OPSET: i64 = 14;
/// The IR version written (the one of opset 14).
const IR_VERSION: i64 = 7;

/// Options of [`save_model_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SaveOptions {
    /// Give the graph `initial_h` (and, for an LSTM, `initial_c`) inputs, `[L*D, B, H]`
    /// (`[B, L*D, H]` in layout 1). Without them the states start at zero. onnxruntime
    /// requires every declared graph input to be fed.
    pub initial_state: bool,
    /// Give the graph a `sequence_lens` input (`int32 [B]`). Without it every row runs all
    /// `T` steps.
    pub sequence_lens: bool,
}

/// Write `weights` as an ONNX model file with input `X` and outputs `Y`, `Y_h`, `Y_c`
/// (the interface of [`super::OnnxModel::from_weights`], without the optional inputs).
///
/// Errors: as [`save_model_with`], and [`Error::Io`].
pub fn save_model(weights: &Weights, path: impl AsRef<Path>) -> Result<()> {
    std::fs::write(path, save_model_with(weights, &SaveOptions::default())?)?;
    Ok(())
}

/// The bytes of an ONNX model of `weights` (opset 14): one `LSTM`/`GRU`/`RNN` node per
/// layer with its `W`, `R`, `B`, `P` as initializers and every attribute set (see
/// [`super::onnx_attributes`]), the layers joined as `torch.onnx.export` joins them
/// (`Transpose` + `Reshape` of `Y`, `Slice` of the initial states, `Concat` of the final
/// ones). Inputs: `X` `[T, B, I]` (`[B, T, I]` in layout 1), and those `opts` asks for.
/// Outputs: `Y` (the last layer's, `[T, D, B, H]` or `[B, T, D, H]`), `Y_h` and, for an LSTM,
/// `Y_c` (every layer's, `[L*D, B, H]` or `[B, L*D, H]`). `T` and `B` are symbolic.
///
/// A batch-first configuration is written with `layout = 1`, as the operator defines it;
/// onnxruntime's CPU kernels (1.32) refuse that layout, so for onnxruntime save a seq-major
/// configuration.
///
/// Errors: [`Error::Unsupported`] for what ONNX cannot express (a projection, a cell-state
/// clip); as [`Weights::validate`].
pub fn save_model_with(weights: &Weights, opts: &SaveOptions) -> Result<Vec<u8>> {
    let cfg = weights.config();
    let attrs = onnx_attributes(cfg)?
        .into_iter()
        .map(|(name, value)| attribute(name, &value))
        .collect::<Result<Vec<_>>>()?;
    let (l, d, h) = (cfg.num_layers(), cfg.num_directions(), cfg.hidden_size());
    let bf = cfg.layout() == Layout::BatchFirst;
    let lstm = cfg.cell() == CellKind::Lstm;
    let dir_axis = i64::from(bf);
    let sym = |s: &str| DimValue::DimParam(s.into());
    let fixed = |n: usize| DimValue::DimValue(n as i64);
    let (tb0, tb1) = if bf {
        (sym("B"), sym("T"))
    } else {
        (sym("T"), sym("B"))
    };
    let state_dims = |rows: usize| {
        if bf {
            vec![sym("B"), fixed(rows), fixed(h)]
        } else {
            vec![fixed(rows), sym("B"), fixed(h)]
        }
    };

    let mut graph = GraphProto {
        name: Some(format!("rnn_wgpu_{}", cfg.cell().name())),
        ..Default::default()
    };
    graph.input.push(value_info(
        "X",
        DataType::Float,
        vec![tb0, tb1, fixed(cfg.input_size())],
    ));
    if opts.sequence_lens {
        graph
            .input
            .push(value_info("sequence_lens", DataType::Int32, vec![sym("B")]));
    }
    if opts.initial_state {
        graph
            .input
            .push(value_info("initial_h", DataType::Float, state_dims(l * d)));
        if lstm {
            graph
                .input
                .push(value_info("initial_c", DataType::Float, state_dims(l * d)));
        }
    }
    let suffix = |k: usize| {
        if l == 1 {
            String::new()
        } else {
            format!("_l{k}")
        }
    };
    let mut init = |t: Tensor| {
        let name = t.name.clone();
        graph.initializer.push(to_proto(&t));
        name
    };
    let ints = |name: String, v: Vec<i64>| Tensor {
        name,
        dims: vec![v.len()],
        data: super::tensor::TensorData::I64(v),
    };
    // The glue's constants, only where there is glue (onnxruntime warns of unused ones).
    let axes_name = if l > 1 && opts.initial_state {
        init(ints("slice_axes".into(), vec![dir_axis]))
    } else {
        String::new()
    };
    let shape_name = if l > 1 {
        init(ints("features_shape".into(), vec![0, 0, -1]))
    } else {
        String::new()
    };
    let mut nodes = Vec::new();
    let (mut y_h, mut y_c) = (Vec::new(), Vec::new());
    let mut x = "X".to_string();
    for k in 0..l {
        let s = suffix(k);
        let o = export_layer(weights, k)?;
        let w = init(Tensor::from_f32(&format!("W{s}"), &o.w_shape, o.w)?);
        let r = init(Tensor::from_f32(&format!("R{s}"), &o.r_shape, o.r)?);
        let b = match o.b {
            Some(b) => init(Tensor::from_f32(&format!("B{s}"), &o.b_shape, b)?),
            None => String::new(),
        };
        let p = match o.p {
            Some(p) => init(Tensor::from_f32(&format!("P{s}"), &o.p_shape, p)?),
            None => String::new(),
        };
        let mut state_in = |name: &str| -> String {
            if !opts.initial_state {
                return String::new();
            }
            if l == 1 {
                return name.to_string();
            }
            let starts = init(ints(format!("{name}_starts{s}"), vec![(k * d) as i64]));
            let ends = init(ints(format!("{name}_ends{s}"), vec![((k + 1) * d) as i64]));
            let out = format!("{name}{s}");
            nodes.push(node(
                "Slice",
                &format!("slice_{name}{s}"),
                &[name, &starts, &ends, &axes_name],
                &[&out],
                vec![],
            ));
            out
        };
        let h0 = state_in("initial_h");
        let c0 = if lstm {
            state_in("initial_c")
        } else {
            String::new()
        };
        let seq = if opts.sequence_lens {
            "sequence_lens".to_string()
        } else {
            String::new()
        };
        let (y, yh, yc) = if l == 1 {
            ("Y".to_string(), "Y_h".to_string(), "Y_c".to_string())
        } else {
            (
                if k + 1 == l {
                    "Y".to_string()
                } else {
                    format!("Y{s}")
                },
                format!("Y_h{s}"),
                format!("Y_c{s}"),
            )
        };
        let mut inputs = vec![x.clone(), w, r, b, seq, h0, c0, p];
        while inputs.last().is_some_and(String::is_empty) {
            inputs.pop();
        }
        if !lstm {
            inputs.truncate(6);
        }
        let mut outputs = vec![y.clone(), yh.clone()];
        if lstm {
            outputs.push(yc.clone());
        }
        let input_refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let output_refs: Vec<&str> = outputs.iter().map(String::as_str).collect();
        nodes.push(node(
            cell_op(cfg.cell()),
            &format!("{}{s}", cfg.cell().name()),
            &input_refs,
            &output_refs,
            attrs.clone(),
        ));
        y_h.push(yh);
        y_c.push(yc);
        if k + 1 < l {
            // Layer k+1 reads [T, B, D*H] (or [B, T, D*H]).
            let next = format!("X_l{}", k + 1);
            let joined = if bf {
                y.clone()
            } else {
                let t = format!("Y_t{s}");
                let perm = AttributeProto {
                    name: Some("perm".into()),
                    r#type: Some(AttributeType::Ints as i32),
                    ints: vec![0, 2, 1, 3],
                    ..Default::default()
                };
                nodes.push(node(
                    "Transpose",
                    &format!("transpose{s}"),
                    &[&y],
                    &[&t],
                    vec![perm],
                ));
                t
            };
            nodes.push(node(
                "Reshape",
                &format!("reshape{s}"),
                &[&joined, &shape_name],
                &[&next],
                vec![],
            ));
            x = next;
        }
    }
    if l > 1 {
        let mut concat = |parts: &[String], out: &str| {
            let axis = AttributeProto {
                name: Some("axis".into()),
                r#type: Some(AttributeType::Int as i32),
                i: Some(dir_axis),
                ..Default::default()
            };
            let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
            nodes.push(node(
                "Concat",
                &format!("concat_{out}"),
                &refs,
                &[out],
                vec![axis],
            ));
        };
        concat(&y_h, "Y_h");
        if lstm {
            concat(&y_c, "Y_c");
        }
    }
    graph.node = nodes;
    let y_dims = if bf {
        vec![sym("B"), sym("T"), fixed(d), fixed(h)]
    } else {
        vec![sym("T"), fixed(d), sym("B"), fixed(h)]
    };
    graph.output.push(value_info("Y", DataType::Float, y_dims));
    graph
        .output
        .push(value_info("Y_h", DataType::Float, state_dims(l * d)));
    if lstm {
        graph
            .output
            .push(value_info("Y_c", DataType::Float, state_dims(l * d)));
    }
    let model = ModelProto {
        ir_version: Some(IR_VERSION),
        producer_name: Some("rnn-wgpu".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(OPSET),
        }],
        graph: Some(graph),
        ..Default::default()
    };
    Ok(model.encode_to_vec())
}

fn node(
    op: &str,
    name: &str,
    inputs: &[&str],
    outputs: &[&str],
    attribute: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        name: Some(name.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute,
        ..Default::default()
    }
}

fn value_info(name: &str, elem: DataType, dims: Vec<DimValue>) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(TypeValue::TensorType(TensorType {
                elem_type: Some(elem as i32),
                shape: Some(TensorShapeProto {
                    dim: dims
                        .into_iter()
                        .map(|v| Dimension {
                            value: Some(v),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// One attribute from [`onnx_attributes`]'s text form, typed as the operator defines it.
fn attribute(name: &str, value: &str) -> Result<AttributeProto> {
    let mut a = AttributeProto {
        name: Some(name.into()),
        ..Default::default()
    };
    let float = |s: &str| {
        s.parse::<f32>()
            .map_err(|e| Error::Internal(format!("attribute {name} = {s:?}: {e}")))
    };
    match name {
        "direction" => {
            a.r#type = Some(AttributeType::String as i32);
            a.s = Some(value.as_bytes().to_vec());
        }
        "activations" => {
            a.r#type = Some(AttributeType::Strings as i32);
            a.strings = value.split(',').map(|s| s.as_bytes().to_vec()).collect();
        }
        "activation_alpha" | "activation_beta" => {
            a.r#type = Some(AttributeType::Floats as i32);
            a.floats = value.split(',').map(float).collect::<Result<_>>()?;
        }
        "clip" => {
            a.r#type = Some(AttributeType::Float as i32);
            a.f = Some(float(value)?);
        }
        _ => {
            a.r#type = Some(AttributeType::Int as i32);
            a.i = Some(
                value
                    .parse()
                    .map_err(|e| Error::Internal(format!("attribute {name} = {value:?}: {e}")))?,
            );
        }
    }
    Ok(a)
}
