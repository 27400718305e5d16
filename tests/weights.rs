//! Host weights: PyTorch names and shapes for every cell, and safetensors round trips.

use rnn_wgpu::weights::tensor_names;
use rnn_wgpu::{Nonlinearity, RnnConfig, Weights};

fn names(cfg: &RnnConfig) -> Vec<(String, Vec<usize>)> {
    tensor_names(cfg)
}

#[test]
fn names_and_shapes_follow_pytorch() {
    let s = |n: &str, shape: &[usize]| (n.to_string(), shape.to_vec());
    assert_eq!(
        names(&RnnConfig::gru(5, 7).build().unwrap()),
        vec![
            s("weight_ih_l0", &[21, 5]),
            s("weight_hh_l0", &[21, 7]),
            s("bias_ih_l0", &[21]),
            s("bias_hh_l0", &[21]),
        ]
    );
    assert_eq!(
        names(
            &RnnConfig::rnn(5, 7, Nonlinearity::Relu)
                .bias(false)
                .build()
                .unwrap()
        ),
        vec![s("weight_ih_l0", &[7, 5]), s("weight_hh_l0", &[7, 7])]
    );
    // nn.LSTM(5, 7, proj_size=3): weight_hh is [4H, P], weight_hr is [P, H].
    assert_eq!(
        names(
            &RnnConfig::lstm(5, 7)
                .proj_size(3)
                .peepholes(true)
                .build()
                .unwrap()
        ),
        vec![
            s("weight_ih_l0", &[28, 5]),
            s("weight_hh_l0", &[28, 3]),
            s("bias_ih_l0", &[28]),
            s("bias_hh_l0", &[28]),
            s("weight_hr_l0", &[3, 7]),
            s("peephole_l0", &[21]),
        ]
    );
}

#[test]
fn every_cell_round_trips_through_safetensors() {
    for cfg in [
        RnnConfig::lstm(4, 6).build().unwrap(),
        RnnConfig::lstm(4, 6)
            .proj_size(2)
            .peepholes(true)
            .build()
            .unwrap(),
        RnnConfig::gru(4, 6).bias(false).build().unwrap(),
        RnnConfig::rnn(4, 6, Nonlinearity::Tanh).build().unwrap(),
    ] {
        let w = Weights::init(&cfg, 3);
        w.validate().unwrap();
        let back = Weights::from_safetensors_config(&cfg, &w.to_safetensors().unwrap()).unwrap();
        assert_eq!(back, w, "{cfg:?}");
        // Every parameter is drawn from U(-1/sqrt(H), 1/sqrt(H)).
        let k = 1.0 / 6f32.sqrt();
        for (name, _, data) in w.named_tensors() {
            assert!(data.iter().all(|v| v.abs() <= k), "{name}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The configuration inferred from a state_dict's names and shapes (`Weights::load`).
// ---------------------------------------------------------------------------------------------

use rnn_wgpu::weights::LoadOptions;
use rnn_wgpu::{CellKind, Direction, Error, Layout};
use safetensors::tensor::{Dtype, TensorView};

fn fixture(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// One PyTorch module as `scripts/gen_fixtures.py` builds it: `(cell, I, H, bias, rnn
/// nonlinearity, proj_size, num_layers, bidirectional, batch_first)`.
type Module = (
    CellKind,
    usize,
    usize,
    bool,
    Nonlinearity,
    Option<usize>,
    usize,
    bool,
    bool,
);

fn config_of(m: Module) -> RnnConfig {
    let (cell, i, h, bias, nl, proj, layers, bi, bf) = m;
    let mut b = match cell {
        CellKind::Lstm => RnnConfig::lstm(i, h),
        CellKind::Gru => RnnConfig::gru(i, h),
        _ => RnnConfig::rnn(i, h, nl),
    }
    .bias(bias)
    .num_layers(layers);
    if let Some(p) = proj {
        b = b.proj_size(p);
    }
    if bi {
        b = b.direction(Direction::Bidirectional);
    }
    if bf {
        b = b.layout(Layout::BatchFirst);
    }
    b.build().unwrap()
}

/// Every PyTorch fixture, with the module `scripts/gen_fixtures.py` made it from (copied from
/// the script's `CASES`, `CELL_CASES` and `TOPOLOGY_CASES` tables, not from the files).
fn pytorch_fixtures() -> Vec<(&'static str, Module)> {
    use CellKind::{Gru, Lstm, Rnn};
    use Nonlinearity::{Relu, Tanh};
    let one = |cell, i, h, bias, nl, proj| (cell, i, h, bias, nl, proj, 1, false, false);
    let topo = |cell, i, h, proj, bf| (cell, i, h, true, Tanh, proj, 2, true, bf);
    vec![
        ("lstm_small.safetensors", one(Lstm, 5, 7, true, Tanh, None)),
        ("lstm_tiny.safetensors", one(Lstm, 1, 1, true, Tanh, None)),
        (
            "lstm_nobias.safetensors",
            one(Lstm, 8, 16, false, Tanh, None),
        ),
        ("lstm_odd.safetensors", one(Lstm, 13, 33, true, Tanh, None)),
        (
            "lstm_large_input.safetensors",
            one(Lstm, 4, 8, true, Tanh, None),
        ),
        ("gru_small.safetensors", one(Gru, 5, 7, true, Tanh, None)),
        ("gru_tiny.safetensors", one(Gru, 3, 5, true, Tanh, None)),
        ("gru_odd.safetensors", one(Gru, 13, 21, true, Tanh, None)),
        ("gru_nobias.safetensors", one(Gru, 8, 16, false, Tanh, None)),
        (
            "gru_large_input.safetensors",
            one(Gru, 4, 8, true, Tanh, None),
        ),
        (
            "rnn_tanh_small.safetensors",
            one(Rnn, 5, 7, true, Tanh, None),
        ),
        (
            "rnn_tanh_tiny.safetensors",
            one(Rnn, 1, 1, true, Tanh, None),
        ),
        (
            "rnn_tanh_odd.safetensors",
            one(Rnn, 13, 21, true, Tanh, None),
        ),
        (
            "rnn_relu_small.safetensors",
            one(Rnn, 5, 7, true, Relu, None),
        ),
        (
            "rnn_relu_odd.safetensors",
            one(Rnn, 13, 21, false, Relu, None),
        ),
        (
            "lstm_proj_small.safetensors",
            one(Lstm, 5, 7, true, Tanh, Some(3)),
        ),
        (
            "lstm_proj_tiny.safetensors",
            one(Lstm, 2, 2, true, Tanh, Some(1)),
        ),
        (
            "lstm_proj_odd.safetensors",
            one(Lstm, 13, 21, false, Tanh, Some(5)),
        ),
        (
            "topology/lstm_l2_bi.safetensors",
            topo(Lstm, 5, 6, None, false),
        ),
        (
            "topology/gru_l2_bi.safetensors",
            topo(Gru, 5, 6, None, false),
        ),
        (
            "topology/lstm_l2_bi_packed.safetensors",
            topo(Lstm, 4, 5, None, false),
        ),
        (
            "topology/gru_l2_bi_packed.safetensors",
            topo(Gru, 4, 5, None, false),
        ),
        (
            "topology/lstm_l2_bi_packed_bf.safetensors",
            topo(Lstm, 3, 5, None, true),
        ),
        (
            "topology/gru_l2_bi_packed_bf.safetensors",
            topo(Gru, 3, 5, None, true),
        ),
        (
            "topology/lstm_proj_l2_bi.safetensors",
            topo(Lstm, 5, 7, Some(3), false),
        ),
        (
            "topology/lstm_proj_l2_bi_packed_bf.safetensors",
            topo(Lstm, 4, 5, Some(2), true),
        ),
    ]
}

/// Loading a PyTorch file with no configuration gives the module it was saved from; only the
/// RNN nonlinearity and `batch_first` (which a state_dict does not record) come as options.
/// The tensors are the same as an explicit-config load reads.
#[test]
fn pytorch_fixtures_load_without_a_config() {
    for (file, module) in pytorch_fixtures() {
        let want = config_of(module);
        let mut opts = LoadOptions::default();
        if want.cell() == CellKind::Rnn && module.4 == Nonlinearity::Relu {
            opts = opts.nonlinearity(Nonlinearity::Relu);
        }
        if module.8 {
            opts = opts.batch_first(true);
        }
        let path = fixture(file);
        let w = Weights::load_with(&path, &opts).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(w.config(), &want, "{file}");
        let explicit = Weights::load_config(&want, &path).unwrap();
        assert_eq!(w, explicit, "{file}: tensors");
        if opts == LoadOptions::default() {
            assert_eq!(Weights::load(&path).unwrap(), w, "{file}: load");
        }
    }
}

fn serialize(tensors: &[(String, Vec<usize>)]) -> Vec<u8> {
    let data: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, s)| bytemuck::cast_slice(&vec![0.25f32; s.iter().product()]).to_vec())
        .collect();
    let views: Vec<_> = tensors
        .iter()
        .zip(&data)
        .map(|((n, s), d)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), d).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, None).unwrap()
}

/// The state_dict of `cfg`, each tensor renamed by `rename` (`None` drops it).
fn state_dict(cfg: &RnnConfig, rename: impl Fn(&str) -> Option<String>) -> Vec<u8> {
    let tensors: Vec<_> = tensor_names(cfg)
        .into_iter()
        .filter_map(|(n, s)| rename(&n).map(|n| (n, s)))
        .collect();
    serialize(&tensors)
}

/// Every configuration the names and shapes can express comes back from its own file,
/// including sizes where the gate rows alone would mislead (12 rows: LSTM H=3 or GRU H=4).
#[test]
fn saved_weights_load_back_with_their_configuration() {
    let bi = Direction::Bidirectional;
    for cfg in [
        RnnConfig::lstm(5, 3).build().unwrap(),
        RnnConfig::gru(5, 4).build().unwrap(),
        RnnConfig::rnn(5, 12, Nonlinearity::Tanh).build().unwrap(),
        RnnConfig::lstm(3, 6)
            .num_layers(3)
            .direction(bi)
            .build()
            .unwrap(),
        RnnConfig::gru(2, 5)
            .num_layers(2)
            .bias(false)
            .build()
            .unwrap(),
        RnnConfig::lstm(4, 6)
            .proj_size(2)
            .num_layers(2)
            .direction(bi)
            .build()
            .unwrap(),
        RnnConfig::lstm(4, 6).peepholes(true).build().unwrap(),
        RnnConfig::rnn(1, 1, Nonlinearity::Tanh)
            .num_layers(2)
            .build()
            .unwrap(),
    ] {
        let w = Weights::init(&cfg, 9);
        let back = Weights::from_safetensors(&w.to_safetensors().unwrap()).unwrap();
        assert_eq!(back, w, "{cfg:?}");
    }
}

/// `nn.LSTMCell` / `GRUCell` / `RNNCell` state_dicts (no `_l0`) read as one-layer models, and
/// a submodule's tensors are found under their prefix.
#[test]
fn cell_files_and_prefixed_files_load() {
    let cell = |n: &str| Some(n.strip_suffix("_l0").unwrap().to_string());
    for cfg in [
        RnnConfig::lstm(3, 4).build().unwrap(),
        RnnConfig::gru(3, 4).bias(false).build().unwrap(),
        RnnConfig::rnn(3, 4, Nonlinearity::Tanh).build().unwrap(),
    ] {
        let w = Weights::from_safetensors(&state_dict(&cfg, cell)).unwrap();
        assert_eq!(w.config(), &cfg);
        let w = Weights::from_safetensors_config(&cfg, &state_dict(&cfg, cell)).unwrap();
        assert_eq!(w.config(), &cfg);
    }
    let cfg = RnnConfig::gru(3, 4).num_layers(2).build().unwrap();
    let mut tensors = tensor_names(&cfg);
    tensors
        .iter_mut()
        .for_each(|t| t.0 = format!("enc.rnn.{}", t.0));
    tensors.push(("head.weight".into(), vec![2, 4]));
    tensors.push(("head.bias".into(), vec![2]));
    let bytes = serialize(&tensors);
    assert_eq!(Weights::from_safetensors(&bytes).unwrap().config(), &cfg);
    let opts = LoadOptions::default().prefix("enc.rnn.");
    assert_eq!(
        Weights::from_safetensors_with(&bytes, &opts)
            .unwrap()
            .config(),
        &cfg
    );

    // Two RNNs in one file: ambiguous without a prefix, either one with it.
    let other = RnnConfig::lstm(4, 2).build().unwrap();
    tensors.extend(
        tensor_names(&other)
            .into_iter()
            .map(|(n, s)| (format!("dec.{n}"), s)),
    );
    let bytes = serialize(&tensors);
    assert!(matches!(
        Weights::from_safetensors(&bytes),
        Err(Error::InconsistentWeights { name, why, .. })
            if name == "dec.weight_ih_l0" && why.contains("enc.rnn.weight_ih_l0")
    ));
    let dec = LoadOptions::default().prefix("dec.");
    assert_eq!(
        Weights::from_safetensors_with(&bytes, &dec)
            .unwrap()
            .config(),
        &other
    );
    let none = LoadOptions::default().prefix("nothing.");
    assert!(matches!(
        Weights::from_safetensors_with(&bytes, &none),
        Err(Error::MissingTensor(n)) if n == "nothing.weight_ih_l0"
    ));
}

/// Options set what names cannot say, and are refused where they do not apply.
#[test]
fn load_options_complete_the_configuration() {
    let rnn = RnnConfig::rnn(3, 4, Nonlinearity::Tanh).build().unwrap();
    let bytes = Weights::init(&rnn, 1).to_safetensors().unwrap();
    let opts = LoadOptions::default()
        .nonlinearity(Nonlinearity::Relu)
        .batch_first(true)
        .dropout(0.25);
    let cfg = Weights::from_safetensors_with(&bytes, &opts)
        .unwrap()
        .config()
        .clone();
    let want = RnnConfig::rnn(3, 4, Nonlinearity::Relu)
        .layout(Layout::BatchFirst)
        .dropout(0.25)
        .build()
        .unwrap();
    assert_eq!(cfg, want);

    let gru = RnnConfig::gru(3, 4).build().unwrap();
    let bytes = Weights::init(&gru, 1).to_safetensors().unwrap();
    let before = LoadOptions::default().linear_before_reset(false);
    let cfg = Weights::from_safetensors_with(&bytes, &before)
        .unwrap()
        .config()
        .clone();
    assert_eq!(
        cfg,
        RnnConfig::gru(3, 4)
            .linear_before_reset(false)
            .build()
            .unwrap()
    );
    let relu = LoadOptions::default().nonlinearity(Nonlinearity::Relu);
    assert!(matches!(
        Weights::from_safetensors_with(&bytes, &relu),
        Err(Error::InvalidConfig(m)) if m.contains("weight_ih_l0")
    ));
    let bad_dropout = LoadOptions::default().dropout(1.5);
    assert!(matches!(
        Weights::from_safetensors_with(&bytes, &bad_dropout),
        Err(Error::InvalidConfig(_))
    ));
}

/// A file that fits no configuration is refused with the tensor and both shapes named.
#[test]
fn inconsistent_files_name_the_tensor_and_shapes() {
    let t = |n: &str, s: &[usize]| (n.to_string(), s.to_vec());
    let inconsistent =
        |tensors: &[(String, Vec<usize>)]| match Weights::from_safetensors(&serialize(tensors)) {
            Err(Error::InconsistentWeights { name, shape, why }) => (name, shape, why),
            other => panic!("{tensors:?}: {other:?}"),
        };
    // 10 rows are 2 blocks of H = 5: no cell.
    let (name, shape, why) =
        inconsistent(&[t("weight_ih_l0", &[10, 3]), t("weight_hh_l0", &[10, 5])]);
    assert_eq!((name.as_str(), shape), ("weight_ih_l0", vec![10, 3]));
    assert!(
        why.contains("weight_hh_l0") && why.contains("[10, 5]"),
        "{why}"
    );
    // Rows not a multiple of H.
    let (name, ..) = inconsistent(&[t("weight_ih_l0", &[13, 3]), t("weight_hh_l0", &[13, 4])]);
    assert_eq!(name, "weight_ih_l0");
    // weight_hh's rows disagree with weight_ih's.
    let (name, _, why) = inconsistent(&[t("weight_ih_l0", &[16, 3]), t("weight_hh_l0", &[12, 4])]);
    assert_eq!(name, "weight_hh_l0");
    assert!(why.contains("[16, 3]"), "{why}");
    // A projection whose P disagrees with weight_hh's width.
    let (name, _, why) = inconsistent(&[
        t("weight_ih_l0", &[24, 3]),
        t("weight_hh_l0", &[24, 2]),
        t("weight_hr_l0", &[3, 6]),
    ]);
    assert_eq!(name, "weight_hh_l0");
    assert!(
        why.contains("weight_hr_l0") && why.contains("[3, 6]"),
        "{why}"
    );
    // A projection on a GRU.
    let (name, ..) = inconsistent(&[
        t("weight_ih_l0", &[18, 3]),
        t("weight_hh_l0", &[18, 2]),
        t("weight_hr_l0", &[2, 6]),
    ]);
    assert_eq!(name, "weight_hr_l0");
    // A weight that is not a matrix.
    let (name, shape, _) = inconsistent(&[t("weight_ih_l0", &[12]), t("weight_hh_l0", &[12, 3])]);
    assert_eq!((name.as_str(), shape), ("weight_ih_l0", vec![12]));
    // A later layer's shape is checked against what layer 0 implies.
    let cfg = RnnConfig::lstm(3, 4).num_layers(2).build().unwrap();
    let mut tensors: Vec<_> = tensor_names(&cfg);
    assert!(Weights::from_safetensors(&serialize(&tensors)).is_ok());
    assert_eq!(tensors[5].0, "weight_hh_l1");
    tensors[5].1 = vec![16, 5];
    assert!(matches!(
        Weights::from_safetensors(&serialize(&tensors)),
        Err(Error::ShapeMismatch { name, expected, got })
            if name == "weight_hh_l1" && expected == [16, 4] && got == [16, 5]
    ));
}

/// Tensors the others imply but the file lacks are named.
#[test]
fn missing_tensors_are_named() {
    let missing = |cfg: &RnnConfig, drop: &str| {
        let bytes = state_dict(cfg, |n| (n != drop).then(|| n.to_string()));
        match Weights::from_safetensors(&bytes) {
            Err(Error::MissingTensor(n)) => n,
            other => panic!("without {drop}: {other:?}"),
        }
    };
    let deep = RnnConfig::gru(3, 4)
        .num_layers(3)
        .direction(Direction::Bidirectional);
    let deep = deep.build().unwrap();
    assert_eq!(missing(&deep, "weight_ih_l1"), "weight_ih_l1");
    assert_eq!(
        missing(&deep, "weight_hh_l2_reverse"),
        "weight_hh_l2_reverse"
    );
    assert_eq!(missing(&deep, "bias_hh_l1_reverse"), "bias_hh_l1_reverse");
    let proj = RnnConfig::lstm(3, 4)
        .proj_size(2)
        .num_layers(2)
        .build()
        .unwrap();
    assert_eq!(missing(&proj, "weight_hr_l1"), "weight_hr_l1");
    assert!(matches!(
        Weights::from_safetensors(&serialize(&[("fc.weight".into(), vec![2, 2])])),
        Err(Error::MissingTensor(n)) if n == "weight_ih_l0"
    ));
}
