//! One layer of [`Weights`] (PyTorch layout) to and from an ONNX node's `W`, `R`, `B`, `P`
//! (see the table in [`super`]).

use crate::config::{Activation, CellKind, Direction, GruReset, Layout, RnnConfig};
use crate::error::{Error, Result};
use crate::validate::check_len;
use crate::weights::{LayerWeights, Weights};

/// One layer's weights as the inputs of an ONNX `LSTM`, `GRU` or `RNN` node. Row-major `f32`.
#[derive(Debug, Clone, PartialEq)]
pub struct OnnxWeights {
    /// `W`: `[dirs, G*H, I]`, input weights, ONNX gate order.
    pub w: Vec<f32>,
    /// `R`: `[dirs, G*H, H]`, recurrent weights, ONNX gate order.
    pub r: Vec<f32>,
    /// `B`: `[dirs, 2*G*H]`, `Wb` then `Rb` per direction; `None` for a configuration without
    /// bias (leave the node's `B` input empty).
    pub b: Option<Vec<f32>>,
    /// `P`: `[dirs, 3*H]`, LSTM peepholes i, o, f; `None` without peepholes (leave `P` empty).
    pub p: Option<Vec<f32>>,
    /// Shape of `w`.
    pub w_shape: [usize; 3],
    /// Shape of `r`.
    pub r_shape: [usize; 3],
    /// Shape `B` has (when present).
    pub b_shape: [usize; 2],
    /// Shape `P` has (when present): `[dirs, 3*H]` for LSTM, `[dirs, 0]` for GRU and RNN,
    /// which have no `P` input.
    pub p_shape: [usize; 2],
}

/// Export layer `layer` of `weights` (all its directions, forward first) in ONNX layout.
///
/// The weights are checked against their configuration first ([`Weights::validate`]), so a
/// tensor that [`Weights::layer_mut`] shortened or removed is named, never exported under
/// another gate's label.
///
/// Errors: [`Error::Unsupported`] for a configuration with a projection (`proj_size`);
/// [`Error::InvalidConfig`] for a layer index out of range; as [`Weights::validate`]
/// ([`Error::ShapeMismatch`], [`Error::MissingTensor`]) for weights that do not fit their
/// configuration.
pub fn export_layer(weights: &Weights, layer: usize) -> Result<OnnxWeights> {
    let cfg = weights.config();
    check_layer_index(cfg, layer)?;
    let geometry = OnnxGeometry::of_layer(cfg, layer)?;
    weights.validate()?;
    let directions = (0..geometry.dirs)
        .map(|d| weights.layer(layer, d))
        .collect::<Result<Vec<&LayerWeights>>>()?;
    export_directions(&geometry, &directions)
}

/// Import an ONNX node's `W`, `R` and optional `B`, `P` (flat, row-major) as the weights of
/// a single-layer configuration `cfg`.
///
/// `B = None` gives zero biases (or none, with `bias = false`); `P = None` gives zero
/// peepholes (or none, without peepholes). For several layers, import each with
/// [`import_layer_weights`] and join them with [`Weights::from_layers`].
///
/// Errors: [`Error::ShapeMismatch`] naming `W`, `R`, `B` or `P` when a length is wrong;
/// [`Error::Unsupported`] with a projection; [`Error::InvalidConfig`] for `P` without
/// peepholes in `cfg`, for a nonzero `B` with `bias = false`, or for a `cfg` of several
/// layers.
pub fn import_layer(
    cfg: &RnnConfig,
    w: &[f32],
    r: &[f32],
    b: Option<&[f32]>,
    p: Option<&[f32]>,
) -> Result<Weights> {
    if cfg.num_layers() != 1 {
        return Err(Error::InvalidConfig(format!(
            "import_layer builds a single-layer model but the configuration has {} layers; \
             use import_layer_weights per layer and Weights::from_layers",
            cfg.num_layers()
        )));
    }
    Weights::from_layers(cfg, import_layer_weights(cfg, 0, w, r, b, p)?)
}

/// Import one ONNX node as layer `layer` of `cfg`: one [`LayerWeights`] per direction,
/// forward first (the order [`Weights::from_layers`] expects within a layer).
///
/// Errors: as [`import_layer`], and [`Error::InvalidConfig`] for a layer index out of range.
pub fn import_layer_weights(
    cfg: &RnnConfig,
    layer: usize,
    w: &[f32],
    r: &[f32],
    b: Option<&[f32]>,
    p: Option<&[f32]>,
) -> Result<Vec<LayerWeights>> {
    check_layer_index(cfg, layer)?;
    let geometry = OnnxGeometry::of_layer(cfg, layer)?;
    import_directions(&geometry, w, r, b, p)
}

/// The attributes of an ONNX node that runs `cfg` (one layer of it), as `(name, value)`
/// pairs in text: integers and floats as numbers, lists comma-separated
/// (`activations = "Sigmoid,Tanh,Tanh"`). Emitted: `hidden_size`, `direction`, `layout`,
/// `activations` (one list per direction, as ONNX wants), `activation_alpha` and
/// `activation_beta` when an activation takes them (listed in the order of the activations
/// that use them, which is how onnxruntime reads them), `clip` when set, and
/// `input_forget` (LSTM) or `linear_before_reset` (GRU).
///
/// Errors: [`Error::Unsupported`] for what ONNX cannot express: a projection (`proj_size`)
/// or a cell-state clip (`cell_clip`).
pub fn onnx_attributes(cfg: &RnnConfig) -> Result<Vec<(&'static str, String)>> {
    refuse_projection(cfg)?;
    if let Some((lo, hi)) = cfg.cell_clip() {
        return Err(Error::Unsupported(format!(
            "cell_clip [{lo}, {hi}] has no ONNX attribute (ONNX's clip bounds the gate \
             pre-activations only)"
        )));
    }
    let join = |items: Vec<String>| items.join(",");
    let direction = match cfg.direction() {
        Direction::Forward => "forward",
        Direction::Reverse => "reverse",
        Direction::Bidirectional => "bidirectional",
    };
    let layout = match cfg.layout() {
        Layout::SeqMajor => "0",
        Layout::BatchFirst => "1",
    };
    let acts = cfg.activations();
    // ONNX's roles: f (gates), g (LSTM cell input, GRU candidate, the RNN's only one), h.
    let roles: &[Activation] = match cfg.cell() {
        CellKind::Lstm => &[acts.gate, acts.cell, acts.hidden],
        CellKind::Gru => &[acts.gate, acts.cell],
        CellKind::Rnn => &[acts.cell],
    };
    let per_node: Vec<OnnxActivation> = (0..cfg.num_directions())
        .flat_map(|_| roles.iter().map(|&a| onnx_activation(a)))
        .collect();

    let mut attrs = vec![
        ("hidden_size", cfg.hidden_size().to_string()),
        ("direction", direction.to_string()),
        ("layout", layout.to_string()),
        (
            "activations",
            join(per_node.iter().map(|a| a.name.to_string()).collect()),
        ),
    ];
    let alphas: Vec<String> = per_node
        .iter()
        .filter_map(|a| a.alpha)
        .map(|v| v.to_string())
        .collect();
    if !alphas.is_empty() {
        attrs.push(("activation_alpha", join(alphas)));
    }
    let betas: Vec<String> = per_node
        .iter()
        .filter_map(|a| a.beta)
        .map(|v| v.to_string())
        .collect();
    if !betas.is_empty() {
        attrs.push(("activation_beta", join(betas)));
    }
    if let Some(clip) = cfg.gate_clip() {
        attrs.push(("clip", clip.to_string()));
    }
    match cfg.cell() {
        CellKind::Lstm => attrs.push(("input_forget", u8::from(cfg.input_forget()).to_string())),
        CellKind::Gru => attrs.push((
            "linear_before_reset",
            u8::from(cfg.gru_reset() == GruReset::After).to_string(),
        )),
        CellKind::Rnn => {}
    }
    Ok(attrs)
}

/// An activation as ONNX names it, with the parameters it reads from `activation_alpha` and
/// `activation_beta`.
struct OnnxActivation {
    name: &'static str,
    alpha: Option<f32>,
    beta: Option<f32>,
}

fn onnx_activation(a: Activation) -> OnnxActivation {
    let (name, alpha, beta) = match a {
        Activation::Sigmoid => ("Sigmoid", None, None),
        Activation::Tanh => ("Tanh", None, None),
        Activation::Relu => ("Relu", None, None),
        Activation::HardSigmoid { alpha, beta } => ("HardSigmoid", Some(alpha), Some(beta)),
        Activation::LeakyRelu { alpha } => ("LeakyRelu", Some(alpha), None),
        Activation::ThresholdedRelu { alpha } => ("ThresholdedRelu", Some(alpha), None),
        Activation::ScaledTanh { alpha, beta } => ("ScaledTanh", Some(alpha), Some(beta)),
        Activation::Affine { alpha, beta } => ("Affine", Some(alpha), Some(beta)),
        Activation::Elu { alpha } => ("Elu", Some(alpha), None),
        Activation::Softsign => ("Softsign", None, None),
        Activation::Softplus => ("Softplus", None, None),
    };
    OnnxActivation { name, alpha, beta }
}

/// For each ONNX gate block, the index of the same gate in PyTorch's order.
fn onnx_gate_order(cell: CellKind) -> &'static [usize] {
    match cell {
        // ONNX i, o, f, c from PyTorch i (0), f (1), g (2), o (3).
        CellKind::Lstm => &[0, 3, 1, 2],
        // ONNX z, r, h from PyTorch r (0), z (1), n (2).
        CellKind::Gru => &[1, 0, 2],
        CellKind::Rnn => &[0],
    }
}

/// ONNX peepholes i, o, f from ours p_i (0), p_f (1), p_o (2).
const ONNX_PEEPHOLE_ORDER: [usize; 3] = [0, 2, 1];

/// Append `ours` (equal gate blocks in PyTorch order) to `onnx` with its blocks in ONNX
/// `order`.
fn push_in_onnx_order(onnx: &mut Vec<f32>, ours: &[f32], order: &[usize]) {
    let block = ours.len() / order.len();
    for &gate in order {
        onnx.extend_from_slice(&ours[gate * block..(gate + 1) * block]);
    }
}

/// The inverse of [`push_in_onnx_order`]: one direction's `onnx` blocks back in PyTorch order.
fn from_onnx_order(onnx: &[f32], order: &[usize]) -> Vec<f32> {
    let block = onnx.len() / order.len();
    let mut ours = vec![0.0; onnx.len()];
    for (k, &gate) in order.iter().enumerate() {
        ours[gate * block..(gate + 1) * block].copy_from_slice(&onnx[k * block..(k + 1) * block]);
    }
    ours
}

/// Everything the ONNX layout of one layer depends on. Kept apart from [`RnnConfig`] so the
/// direction stacking can be exercised for any `dirs`.
#[derive(Debug, Clone, Copy)]
struct OnnxGeometry {
    cell: CellKind,
    dirs: usize,
    hidden: usize,
    input: usize,
    bias: bool,
    peepholes: bool,
}

impl OnnxGeometry {
    fn of_layer(cfg: &RnnConfig, layer: usize) -> Result<OnnxGeometry> {
        refuse_projection(cfg)?;
        Ok(OnnxGeometry {
            cell: cfg.cell(),
            dirs: cfg.num_directions(),
            hidden: cfg.hidden_size(),
            input: cfg.layer_input_size(layer),
            bias: cfg.bias(),
            peepholes: cfg.peepholes(),
        })
    }

    /// `G*H`: rows of one direction's `W` and `R`.
    fn gate_rows(&self) -> usize {
        self.cell.gate_count() * self.hidden
    }

    fn w_shape(&self) -> [usize; 3] {
        [self.dirs, self.gate_rows(), self.input]
    }

    fn r_shape(&self) -> [usize; 3] {
        [self.dirs, self.gate_rows(), self.hidden]
    }

    fn b_shape(&self) -> [usize; 2] {
        [self.dirs, 2 * self.gate_rows()]
    }

    fn p_shape(&self) -> [usize; 2] {
        let per_dir = match self.cell {
            CellKind::Lstm => 3 * self.hidden,
            CellKind::Gru | CellKind::Rnn => 0,
        };
        [self.dirs, per_dir]
    }
}

/// `directions` (PyTorch-layout tensors, forward first) in ONNX layout. Every length is
/// checked here too, so no tensor is split into gate blocks of the wrong size.
fn export_directions(geometry: &OnnxGeometry, directions: &[&LayerWeights]) -> Result<OnnxWeights> {
    if directions.len() != geometry.dirs {
        return Err(Error::ShapeMismatch {
            name: "directions (one LayerWeights per direction)".into(),
            expected: vec![geometry.dirs],
            got: vec![directions.len()],
        });
    }
    let [_, rows, input] = geometry.w_shape();
    let order = onnx_gate_order(geometry.cell);
    let mut w = Vec::with_capacity(geometry.w_shape().iter().product());
    let mut r = Vec::with_capacity(geometry.r_shape().iter().product());
    let mut b = geometry
        .bias
        .then(|| Vec::with_capacity(geometry.b_shape().iter().product()));
    let mut p = geometry
        .peepholes
        .then(|| Vec::with_capacity(geometry.p_shape().iter().product()));
    for dir in directions {
        let weight_ih = required(Some(&dir.weight_ih), "weight_ih", &[rows, input])?;
        let weight_hh = required(Some(&dir.weight_hh), "weight_hh", &[rows, geometry.hidden])?;
        push_in_onnx_order(&mut w, weight_ih, order);
        push_in_onnx_order(&mut r, weight_hh, order);
        if let Some(b) = b.as_mut() {
            push_in_onnx_order(
                b,
                required(dir.bias_ih.as_ref(), "bias_ih", &[rows])?,
                order,
            );
            push_in_onnx_order(
                b,
                required(dir.bias_hh.as_ref(), "bias_hh", &[rows])?,
                order,
            );
        }
        if let Some(p) = p.as_mut() {
            let peephole = required(dir.peephole.as_ref(), "peephole", &[3 * geometry.hidden])?;
            push_in_onnx_order(p, peephole, &ONNX_PEEPHOLE_ORDER);
        }
    }
    Ok(OnnxWeights {
        w,
        r,
        b,
        p,
        w_shape: geometry.w_shape(),
        r_shape: geometry.r_shape(),
        b_shape: geometry.b_shape(),
        p_shape: geometry.p_shape(),
    })
}

/// A tensor an export needs: present, and of `shape`.
fn required<'a>(t: Option<&'a Vec<f32>>, name: &str, shape: &[usize]) -> Result<&'a [f32]> {
    let t = t.ok_or_else(|| Error::MissingTensor(name.into()))?;
    check_len(name, t, shape)?;
    Ok(t)
}

/// ONNX `W`, `R`, `B`, `P` (flat) as one [`LayerWeights`] per direction, forward first.
fn import_directions(
    geometry: &OnnxGeometry,
    w: &[f32],
    r: &[f32],
    b: Option<&[f32]>,
    p: Option<&[f32]>,
) -> Result<Vec<LayerWeights>> {
    check_len("W", w, &geometry.w_shape())?;
    check_len("R", r, &geometry.r_shape())?;
    if let Some(b) = b {
        check_len("B", b, &geometry.b_shape())?;
        // An all-zero B is what ONNX means by an absent one, so it fits a bias-free model.
        if !geometry.bias && b.iter().any(|&v| v != 0.0) {
            return Err(Error::InvalidConfig(
                "`B` has nonzero biases but the configuration has bias = false; \
                 build it with .bias(true)"
                    .into(),
            ));
        }
    }
    if let Some(p) = p {
        if !geometry.peepholes {
            return Err(Error::InvalidConfig(format!(
                "`P` (peepholes) is given but the {} configuration has no peepholes{}",
                geometry.cell.name(),
                if geometry.cell == CellKind::Lstm {
                    "; build it with .peepholes(true)"
                } else {
                    ""
                }
            )));
        }
        check_len("P", p, &geometry.p_shape())?;
    }

    let order = onnx_gate_order(geometry.cell);
    let [_, rows, _] = geometry.w_shape();
    let directions = (0..geometry.dirs)
        .map(|d| {
            let (bias_ih, bias_hh) = match (geometry.bias, b) {
                (false, _) => (None, None),
                (true, Some(b)) => {
                    let (wb, rb) = direction_of(b, geometry.dirs, d).split_at(rows);
                    (
                        Some(from_onnx_order(wb, order)),
                        Some(from_onnx_order(rb, order)),
                    )
                }
                (true, None) => (Some(vec![0.0; rows]), Some(vec![0.0; rows])),
            };
            let peephole = match (geometry.peepholes, p) {
                (false, _) => None,
                (true, Some(p)) => Some(from_onnx_order(
                    direction_of(p, geometry.dirs, d),
                    &ONNX_PEEPHOLE_ORDER,
                )),
                (true, None) => Some(vec![0.0; 3 * geometry.hidden]),
            };
            LayerWeights {
                weight_ih: from_onnx_order(direction_of(w, geometry.dirs, d), order),
                weight_hh: from_onnx_order(direction_of(r, geometry.dirs, d), order),
                bias_ih,
                bias_hh,
                weight_hr: None,
                peephole,
            }
        })
        .collect();
    Ok(directions)
}

/// Direction `d` of a tensor whose leading axis is the direction.
fn direction_of(data: &[f32], dirs: usize, d: usize) -> &[f32] {
    let n = data.len() / dirs;
    &data[d * n..(d + 1) * n]
}

fn refuse_projection(cfg: &RnnConfig) -> Result<()> {
    match cfg.proj_size() {
        Some(p) => Err(Error::Unsupported(format!(
            "ONNX's LSTM has no projection (proj_size = {p})"
        ))),
        None => Ok(()),
    }
}

fn check_layer_index(cfg: &RnnConfig, layer: usize) -> Result<()> {
    if layer >= cfg.num_layers() {
        return Err(Error::InvalidConfig(format!(
            "layer {layer} out of range: the configuration has {} layer(s)",
            cfg.num_layers()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Direction stacking for `dirs = 2`, on raw tensors: `RnnConfig::build` refuses
    //! bidirectional models for now, so the geometry is built by hand.

    use super::*;

    /// `values.len()` blocks of `block` elements, block `k` filled with `values[k]`.
    fn blocks(values: &[f32], block: usize) -> Vec<f32> {
        values
            .iter()
            .flat_map(|&v| std::iter::repeat_n(v, block))
            .collect()
    }

    /// One direction's LSTM tensors with every gate block a constant: gate `k` (PyTorch
    /// order) holds `base + k + 1` in `weight_ih`, `base + 10 + k + 1` in `weight_hh`,
    /// `base + 20 + ...` in `bias_ih`, `base + 30 + ...` in `bias_hh` and
    /// `base + 40 + ...` in the peepholes.
    fn lstm_direction(base: f32, hidden: usize, input: usize) -> LayerWeights {
        let gates = |offset: f32| [1.0, 2.0, 3.0, 4.0].map(|g| base + offset + g);
        LayerWeights {
            weight_ih: blocks(&gates(0.0), hidden * input),
            weight_hh: blocks(&gates(10.0), hidden * hidden),
            bias_ih: Some(blocks(&gates(20.0), hidden)),
            bias_hh: Some(blocks(&gates(30.0), hidden)),
            weight_hr: None,
            peephole: Some(blocks(&gates(40.0)[..3], hidden)),
        }
    }

    #[test]
    fn bidirectional_stacks_forward_then_reverse_each_in_onnx_gate_order() {
        let (hidden, input) = (3, 2);
        let geometry = OnnxGeometry {
            cell: CellKind::Lstm,
            dirs: 2,
            hidden,
            input,
            bias: true,
            peepholes: true,
        };
        let forward = lstm_direction(0.0, hidden, input);
        let reverse = lstm_direction(100.0, hidden, input);
        let onnx = export_directions(&geometry, &[&forward, &reverse]).unwrap();

        assert_eq!(onnx.w_shape, [2, 12, 2]);
        assert_eq!(onnx.r_shape, [2, 12, 3]);
        assert_eq!(onnx.b_shape, [2, 24]);
        assert_eq!(onnx.p_shape, [2, 9]);
        // i, o, f, c = PyTorch blocks 1, 4, 2, 3; the reverse direction follows the forward.
        let w = [1.0, 4.0, 2.0, 3.0, 101.0, 104.0, 102.0, 103.0];
        assert_eq!(onnx.w, blocks(&w, hidden * input));
        let r = [11.0, 14.0, 12.0, 13.0, 111.0, 114.0, 112.0, 113.0];
        assert_eq!(onnx.r, blocks(&r, hidden * hidden));
        // Per direction: Wb[iofc] then Rb[iofc].
        let b = [
            21.0, 24.0, 22.0, 23.0, 31.0, 34.0, 32.0, 33.0, //
            121.0, 124.0, 122.0, 123.0, 131.0, 134.0, 132.0, 133.0,
        ];
        assert_eq!(onnx.b, Some(blocks(&b, hidden)));
        // Peepholes i, o, f.
        let p = [41.0, 43.0, 42.0, 141.0, 143.0, 142.0];
        assert_eq!(onnx.p, Some(blocks(&p, hidden)));

        let back = import_directions(
            &geometry,
            &onnx.w,
            &onnx.r,
            onnx.b.as_deref(),
            onnx.p.as_deref(),
        )
        .unwrap();
        assert_eq!(back, vec![forward, reverse]);
    }

    #[test]
    fn bidirectional_gru_without_bias_round_trips_and_checks_lengths() {
        let (hidden, input) = (2, 5);
        let geometry = OnnxGeometry {
            cell: CellKind::Gru,
            dirs: 2,
            hidden,
            input,
            bias: false,
            peepholes: false,
        };
        let direction = |base: f32| LayerWeights {
            weight_ih: blocks(&[base + 1.0, base + 2.0, base + 3.0], hidden * input),
            weight_hh: blocks(&[base + 4.0, base + 5.0, base + 6.0], hidden * hidden),
            bias_ih: None,
            bias_hh: None,
            weight_hr: None,
            peephole: None,
        };
        let (forward, reverse) = (direction(0.0), direction(10.0));
        let onnx = export_directions(&geometry, &[&forward, &reverse]).unwrap();
        // z, r, h = PyTorch blocks 2, 1, 3.
        assert_eq!(
            onnx.w,
            blocks(&[2.0, 1.0, 3.0, 12.0, 11.0, 13.0], hidden * input)
        );
        assert_eq!(onnx.b, None);
        assert_eq!(onnx.p_shape, [2, 0]);
        let back = import_directions(&geometry, &onnx.w, &onnx.r, None, None).unwrap();
        assert_eq!(back, vec![forward, reverse]);

        // One direction's worth of W is too short for a bidirectional node.
        let err = import_directions(&geometry, &onnx.w[..30], &onnx.r, None, None).unwrap_err();
        assert!(
            matches!(&err, Error::ShapeMismatch { name, expected, got }
                if name == "W" && *expected == vec![2, 6, 5] && *got == vec![30]),
            "{err}"
        );
    }
}
