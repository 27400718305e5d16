//! ONNX weight layout: `W`, `R`, `B`, `P` of the `LSTM`/`GRU`/`RNN` operators to and from our
//! PyTorch-layout [`Weights`].
//!
//! Gate orders (ONNX opset 14 operator docs against PyTorch's `nn.LSTM`/`nn.GRU`):
//! LSTM ONNX i, o, f, c = ours i, o, f, g; GRU ONNX z, r, h = ours z, r, n; LSTM peepholes
//! ONNX i, o, f = ours p_i, p_o, p_f. Conversions only move whole gate blocks, so every
//! round trip here is exact (`assert_eq!`, no tolerance).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rnn_wgpu::onnx::{self, OnnxWeights};
use rnn_wgpu::{Activation, Activations, Error, LayerWeights, Nonlinearity, RnnConfig, Weights};

/// Odd, distinct sizes so a transposed or mis-strided block cannot pass by accident.
const INPUT: usize = 3;
const HIDDEN: usize = 5;

/// Every weight-layout case: each cell, with and without bias, and LSTM peepholes. (Other
/// variants such as `input_forget`, clips, activations or GRU reset-before change the
/// arithmetic, not the tensors.)
fn layout_cases() -> Vec<(&'static str, RnnConfig)> {
    let build = |b: rnn_wgpu::RnnConfigBuilder| b.build().unwrap();
    vec![
        ("lstm", build(RnnConfig::lstm(INPUT, HIDDEN))),
        (
            "lstm no bias",
            build(RnnConfig::lstm(INPUT, HIDDEN).bias(false)),
        ),
        (
            "lstm peepholes",
            build(RnnConfig::lstm(INPUT, HIDDEN).peepholes(true)),
        ),
        (
            "lstm peepholes no bias",
            build(RnnConfig::lstm(INPUT, HIDDEN).peepholes(true).bias(false)),
        ),
        ("gru", build(RnnConfig::gru(INPUT, HIDDEN))),
        (
            "gru no bias",
            build(RnnConfig::gru(INPUT, HIDDEN).bias(false)),
        ),
        (
            "gru reset before",
            build(RnnConfig::gru(INPUT, HIDDEN).linear_before_reset(false)),
        ),
        (
            "rnn tanh",
            build(RnnConfig::rnn(INPUT, HIDDEN, Nonlinearity::Tanh)),
        ),
        (
            "rnn relu no bias",
            build(RnnConfig::rnn(INPUT, HIDDEN, Nonlinearity::Relu).bias(false)),
        ),
    ]
}

/// Seeded values in [-1, 1].
fn random(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0..=1.0)).collect()
}

/// `values.len()` blocks of `block` elements, block `k` filled with `values[k]`.
fn blocks(values: &[f32], block: usize) -> Vec<f32> {
    values
        .iter()
        .flat_map(|&v| std::iter::repeat_n(v, block))
        .collect()
}

fn import(cfg: &RnnConfig, o: &OnnxWeights) -> rnn_wgpu::Result<Weights> {
    onnx::import_layer(cfg, &o.w, &o.r, o.b.as_deref(), o.p.as_deref())
}

#[test]
fn export_has_onnx_shapes() {
    for (name, cfg) in layout_cases() {
        let o = onnx::export_layer(&Weights::init(&cfg, 1), 0).unwrap();
        let g = cfg.gate_count();
        assert_eq!(o.w_shape, [1, g * HIDDEN, INPUT], "{name}");
        assert_eq!(o.r_shape, [1, g * HIDDEN, HIDDEN], "{name}");
        assert_eq!(o.b_shape, [1, 2 * g * HIDDEN], "{name}");
        let p_width = if cfg.gate_count() == 4 { 3 * HIDDEN } else { 0 };
        assert_eq!(o.p_shape, [1, p_width], "{name}");
        assert_eq!(o.w.len(), o.w_shape.iter().product::<usize>(), "{name}");
        assert_eq!(o.r.len(), o.r_shape.iter().product::<usize>(), "{name}");
        assert_eq!(o.b.is_some(), cfg.bias(), "{name}");
        assert_eq!(o.p.is_some(), cfg.peepholes(), "{name}");
        if let Some(b) = &o.b {
            assert_eq!(b.len(), o.b_shape.iter().product::<usize>(), "{name}");
        }
        if let Some(p) = &o.p {
            assert_eq!(p.len(), o.p_shape.iter().product::<usize>(), "{name}");
        }
    }
}

#[test]
fn ours_to_onnx_and_back_is_exact() {
    for (seed, (name, cfg)) in layout_cases().into_iter().enumerate() {
        let weights = Weights::init(&cfg, seed as u64);
        let back = import(&cfg, &onnx::export_layer(&weights, 0).unwrap()).unwrap();
        assert_eq!(back, weights, "{name}");
    }
}

#[test]
fn onnx_to_ours_and_back_is_exact() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for (name, cfg) in layout_cases() {
        let shapes = onnx::export_layer(&Weights::init(&cfg, 0), 0).unwrap();
        let original = OnnxWeights {
            w: random(&mut rng, shapes.w.len()),
            r: random(&mut rng, shapes.r.len()),
            b: cfg
                .bias()
                .then(|| random(&mut rng, shapes.b_shape.iter().product())),
            p: cfg
                .peepholes()
                .then(|| random(&mut rng, shapes.p_shape.iter().product())),
            ..shapes
        };
        let ours = import(&cfg, &original).unwrap();
        assert_eq!(onnx::export_layer(&ours, 0).unwrap(), original, "{name}");
    }
}

#[test]
fn absent_b_and_p_import_as_zeros() {
    let cfg = RnnConfig::lstm(INPUT, HIDDEN)
        .peepholes(true)
        .build()
        .unwrap();
    let o = onnx::export_layer(&Weights::init(&cfg, 3), 0).unwrap();
    let ours = onnx::import_layer(&cfg, &o.w, &o.r, None, None).unwrap();
    let layer = ours.layer(0, 0).unwrap();
    assert_eq!(layer.bias_ih, Some(vec![0.0; 4 * HIDDEN]));
    assert_eq!(layer.bias_hh, Some(vec![0.0; 4 * HIDDEN]));
    assert_eq!(layer.peephole, Some(vec![0.0; 3 * HIDDEN]));
    let again = onnx::export_layer(&ours, 0).unwrap();
    assert_eq!((again.w, again.r), (o.w, o.r));
}

#[test]
fn all_zero_b_fits_a_model_without_bias() {
    let cfg = RnnConfig::gru(INPUT, HIDDEN).bias(false).build().unwrap();
    let o = onnx::export_layer(&Weights::init(&cfg, 4), 0).unwrap();
    let zeros = vec![0.0; o.b_shape.iter().product()];
    let ours = onnx::import_layer(&cfg, &o.w, &o.r, Some(&zeros), None).unwrap();
    assert_eq!(ours.layer(0, 0).unwrap().bias_ih, None);
    assert_eq!(ours, Weights::init(&cfg, 4));
}

/// PyTorch-layout LSTM weights where every gate block is one constant: `weight_ih` gates
/// i, f, g, o = 1, 2, 3, 4; `weight_hh` 11..14; `bias_ih` 21..24; `bias_hh` 31..34;
/// peepholes p_i, p_f, p_o = 41, 42, 43.
fn constant_gate_lstm() -> Weights {
    let cfg = RnnConfig::lstm(INPUT, HIDDEN)
        .peepholes(true)
        .build()
        .unwrap();
    let layer = LayerWeights {
        weight_ih: blocks(&[1.0, 2.0, 3.0, 4.0], HIDDEN * INPUT),
        weight_hh: blocks(&[11.0, 12.0, 13.0, 14.0], HIDDEN * HIDDEN),
        bias_ih: Some(blocks(&[21.0, 22.0, 23.0, 24.0], HIDDEN)),
        bias_hh: Some(blocks(&[31.0, 32.0, 33.0, 34.0], HIDDEN)),
        weight_hr: None,
        peephole: Some(blocks(&[41.0, 42.0, 43.0], HIDDEN)),
    };
    Weights::from_layers(&cfg, vec![layer]).unwrap()
}

#[test]
fn lstm_gates_export_in_onnx_order_i_o_f_c() {
    let o = onnx::export_layer(&constant_gate_lstm(), 0).unwrap();
    assert_eq!(o.w, blocks(&[1.0, 4.0, 2.0, 3.0], HIDDEN * INPUT));
    assert_eq!(o.r, blocks(&[11.0, 14.0, 12.0, 13.0], HIDDEN * HIDDEN));
    // Wb[iofc] then Rb[iofc].
    let b = [21.0, 24.0, 22.0, 23.0, 31.0, 34.0, 32.0, 33.0];
    assert_eq!(o.b, Some(blocks(&b, HIDDEN)));
    // Peepholes i, o, f.
    assert_eq!(o.p, Some(blocks(&[41.0, 43.0, 42.0], HIDDEN)));
}

#[test]
fn lstm_gates_import_from_onnx_order_i_o_f_c() {
    let cfg = RnnConfig::lstm(INPUT, HIDDEN)
        .peepholes(true)
        .build()
        .unwrap();
    let w = blocks(&[1.0, 4.0, 2.0, 3.0], HIDDEN * INPUT);
    let r = blocks(&[11.0, 14.0, 12.0, 13.0], HIDDEN * HIDDEN);
    let b = blocks(&[21.0, 24.0, 22.0, 23.0, 31.0, 34.0, 32.0, 33.0], HIDDEN);
    let p = blocks(&[41.0, 43.0, 42.0], HIDDEN);
    let ours = onnx::import_layer(&cfg, &w, &r, Some(&b), Some(&p)).unwrap();
    assert_eq!(ours, constant_gate_lstm());
}

#[test]
fn gru_gates_export_in_onnx_order_z_r_h() {
    let cfg = RnnConfig::gru(INPUT, HIDDEN).build().unwrap();
    // PyTorch r, z, n = 1, 2, 3 (weight_ih), 11..13 (weight_hh), 21..23, 31..33 (biases).
    let layer = LayerWeights {
        weight_ih: blocks(&[1.0, 2.0, 3.0], HIDDEN * INPUT),
        weight_hh: blocks(&[11.0, 12.0, 13.0], HIDDEN * HIDDEN),
        bias_ih: Some(blocks(&[21.0, 22.0, 23.0], HIDDEN)),
        bias_hh: Some(blocks(&[31.0, 32.0, 33.0], HIDDEN)),
        weight_hr: None,
        peephole: None,
    };
    let weights = Weights::from_layers(&cfg, vec![layer]).unwrap();
    let o = onnx::export_layer(&weights, 0).unwrap();
    assert_eq!(o.w, blocks(&[2.0, 1.0, 3.0], HIDDEN * INPUT));
    assert_eq!(o.r, blocks(&[12.0, 11.0, 13.0], HIDDEN * HIDDEN));
    let b = [22.0, 21.0, 23.0, 32.0, 31.0, 33.0];
    assert_eq!(o.b, Some(blocks(&b, HIDDEN)));
    assert_eq!(o.p, None);
    assert_eq!(import(&cfg, &o).unwrap(), weights);
}

#[test]
fn rnn_bias_is_wb_then_rb() {
    let cfg = RnnConfig::rnn(INPUT, HIDDEN, Nonlinearity::Tanh)
        .build()
        .unwrap();
    let weights = Weights::init(&cfg, 5);
    let o = onnx::export_layer(&weights, 0).unwrap();
    let layer = weights.layer(0, 0).unwrap();
    assert_eq!(o.w, layer.weight_ih);
    assert_eq!(o.r, layer.weight_hh);
    let b = [
        layer.bias_ih.clone().unwrap(),
        layer.bias_hh.clone().unwrap(),
    ]
    .concat();
    assert_eq!(o.b, Some(b));
}

/// `err` is a shape mismatch for `tensor` wanting `expected`.
fn assert_shape_error(err: Error, tensor: &str, expected: &[usize], got: usize) {
    match err {
        Error::ShapeMismatch {
            name,
            expected: e,
            got: g,
        } => {
            assert_eq!(name, tensor);
            assert_eq!(e, expected);
            assert_eq!(g, vec![got]);
        }
        other => panic!("expected a shape mismatch for {tensor}, got {other}"),
    }
}

#[test]
fn wrong_lengths_name_the_tensor() {
    let cfg = RnnConfig::lstm(INPUT, HIDDEN)
        .peepholes(true)
        .build()
        .unwrap();
    let o = onnx::export_layer(&Weights::init(&cfg, 6), 0).unwrap();
    let (b, p) = (o.b.clone().unwrap(), o.p.clone().unwrap());
    let short = |v: &[f32]| v[..v.len() - 1].to_vec();

    let err = onnx::import_layer(&cfg, &short(&o.w), &o.r, Some(&b), Some(&p)).unwrap_err();
    assert_shape_error(err, "W", &[1, 20, 3], 59);
    let err = onnx::import_layer(&cfg, &o.w, &short(&o.r), Some(&b), Some(&p)).unwrap_err();
    assert_shape_error(err, "R", &[1, 20, 5], 99);
    let err = onnx::import_layer(&cfg, &o.w, &o.r, Some(&short(&b)), Some(&p)).unwrap_err();
    assert_shape_error(err, "B", &[1, 40], 39);
    let err = onnx::import_layer(&cfg, &o.w, &o.r, Some(&b), Some(&short(&p))).unwrap_err();
    assert_shape_error(err, "P", &[1, 15], 14);
    // W and R swapped: both are [1, 20, *] but with different widths.
    let err = onnx::import_layer(&cfg, &o.r, &o.w, Some(&b), Some(&p)).unwrap_err();
    assert_shape_error(err, "W", &[1, 20, 3], 100);
}

#[test]
fn projection_is_unsupported_both_ways() {
    let cfg = RnnConfig::lstm(INPUT, HIDDEN).proj_size(2).build().unwrap();
    let err = onnx::export_layer(&Weights::init(&cfg, 0), 0).unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err}");
    let w = vec![0.0; 4 * HIDDEN * INPUT];
    let r = vec![0.0; 4 * HIDDEN * HIDDEN];
    let err = onnx::import_layer(&cfg, &w, &r, None, None).unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err}");
    let err = onnx::onnx_attributes(&cfg).unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err}");
}

#[test]
fn p_without_peepholes_is_refused() {
    for cfg in [
        RnnConfig::lstm(INPUT, HIDDEN).build().unwrap(),
        RnnConfig::gru(INPUT, HIDDEN).build().unwrap(),
    ] {
        let o = onnx::export_layer(&Weights::init(&cfg, 0), 0).unwrap();
        let p = vec![0.5; 3 * HIDDEN];
        let err = onnx::import_layer(&cfg, &o.w, &o.r, o.b.as_deref(), Some(&p)).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidConfig(m) if m.contains("`P`")),
            "{err}"
        );
    }
}

#[test]
fn nonzero_b_without_bias_is_refused() {
    let cfg = RnnConfig::lstm(INPUT, HIDDEN).bias(false).build().unwrap();
    let o = onnx::export_layer(&Weights::init(&cfg, 0), 0).unwrap();
    let mut b = vec![0.0; o.b_shape.iter().product()];
    b[7] = 1e-3;
    let err = onnx::import_layer(&cfg, &o.w, &o.r, Some(&b), None).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidConfig(m) if m.contains("`B`")),
        "{err}"
    );
}

#[test]
fn export_layer_out_of_range_is_refused() {
    let cfg = RnnConfig::gru(INPUT, HIDDEN).build().unwrap();
    let err = onnx::export_layer(&Weights::init(&cfg, 0), 1).unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
}

fn attribute<'a>(attrs: &'a [(&'static str, String)], name: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn attributes_describe_the_node() {
    let lstm = onnx::onnx_attributes(&RnnConfig::lstm(INPUT, HIDDEN).build().unwrap()).unwrap();
    assert_eq!(
        lstm,
        vec![
            ("hidden_size", "5".to_string()),
            ("direction", "forward".to_string()),
            ("layout", "0".to_string()),
            ("activations", "Sigmoid,Tanh,Tanh".to_string()),
            ("input_forget", "0".to_string()),
        ]
    );

    // PyTorch's GRU is ONNX's linear_before_reset = 1 (ONNX's default is 0, so it is always
    // written).
    let gru = onnx::onnx_attributes(&RnnConfig::gru(INPUT, HIDDEN).build().unwrap()).unwrap();
    assert_eq!(attribute(&gru, "activations"), Some("Sigmoid,Tanh"));
    assert_eq!(attribute(&gru, "linear_before_reset"), Some("1"));
    let gru_before = RnnConfig::gru(INPUT, HIDDEN)
        .linear_before_reset(false)
        .build()
        .unwrap();
    let gru_before = onnx::onnx_attributes(&gru_before).unwrap();
    assert_eq!(attribute(&gru_before, "linear_before_reset"), Some("0"));

    let relu = RnnConfig::rnn(INPUT, HIDDEN, Nonlinearity::Relu)
        .build()
        .unwrap();
    let relu = onnx::onnx_attributes(&relu).unwrap();
    assert_eq!(attribute(&relu, "activations"), Some("Relu"));
    assert_eq!(attribute(&relu, "input_forget"), None);
}

#[test]
fn attributes_list_alpha_and_beta_of_the_activations_that_take_them() {
    // onnxruntime hands each activation the next alpha (beta) only if it takes one.
    let cfg = RnnConfig::lstm(INPUT, HIDDEN)
        .activations(Activations {
            gate: Activation::HardSigmoid {
                alpha: 0.2,
                beta: 0.5,
            },
            cell: Activation::Softsign,
            hidden: Activation::LeakyRelu { alpha: 0.1 },
        })
        .input_forget(true)
        .gate_clip(3.5)
        .build()
        .unwrap();
    let attrs = onnx::onnx_attributes(&cfg).unwrap();
    assert_eq!(
        attribute(&attrs, "activations"),
        Some("HardSigmoid,Softsign,LeakyRelu")
    );
    assert_eq!(attribute(&attrs, "activation_alpha"), Some("0.2,0.1"));
    assert_eq!(attribute(&attrs, "activation_beta"), Some("0.5"));
    assert_eq!(attribute(&attrs, "clip"), Some("3.5"));
    assert_eq!(attribute(&attrs, "input_forget"), Some("1"));
}

#[test]
fn cell_clip_has_no_onnx_attribute() {
    let cfg = RnnConfig::lstm(INPUT, HIDDEN)
        .cell_clip(-2.0, 2.0)
        .build()
        .unwrap();
    let err = onnx::onnx_attributes(&cfg).unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err}");
}
