//! `.onnx` model files through `onnx::load_model`, run on the CPU reference and the GPU, against
//! the fixtures of `scripts/gen_onnx_models.py` (tests/fixtures/onnx_models/<group>/<case>/:
//! `model.onnx` plus `test_data_set_0/{input,output}_<k>.pb`, the layout of ONNX's backend
//! node tests):
//!
//! - `node`: ONNX's own backend node tests for LSTM, GRU and RNN (their weights are graph
//!   inputs, bound with `load_model_with`); expected outputs from the onnx package's numpy
//!   reference, which onnxruntime matches.
//! - `attrs`: every attribute, defaults included, layout 1, lengths, constant states;
//!   expected outputs from onnxruntime.
//! - `torch`: multi-layer modules exported by `torch.onnx.export`, loaded as one stack;
//!   expected outputs from onnxruntime (which matched torch).
//! - `saved`: files written by `onnx::save_model_with`, run by onnxruntime.
//! - `bad`: graphs that must be refused with an error naming the node.

mod common;

use std::path::{Path, PathBuf};

use common::assert_close;
use rnn_wgpu::onnx::{self, OnnxInputs, OnnxModel, OnnxRunner, SaveOptions, Tensor};
use rnn_wgpu::{Activation, Activations, Direction, Error, Nonlinearity, RnnConfig, Weights};

/// CPU reference (f64 inside, rounded once to f32) against onnxruntime's / onnx's float32: the
/// fixtures are at most 7 steps of dot products of at most 8 terms over values below ~3, where
/// float32 rounding stays near 1e-6 (the generating scripts measured onnxruntime against a
/// float64 transcription at 7e-8 .. 9e-7, see tests/onnx_parity.rs). 1e-5 leaves an order of
/// magnitude of margin, while a wrong attribute, default, gate order or layout moves outputs
/// by 1e-2 and more.
const CPU_ATOL: f64 = 1e-5;
const CPU_RTOL: f64 = 1e-5;
/// The GPU in float32 against float32 results of another summation order: twice the float32
/// noise of both sides plus the GPU's own transcendental functions (the forward tests allow
/// 2e-5 against the f64 reference, tests/lstm_forward.rs).
const GPU_ATOL: f64 = 3e-5;
const GPU_RTOL: f64 = 1e-4;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx_models")
}

fn cases(group: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join(group))
        .unwrap_or_else(|e| panic!("{group}: {e}"))
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no fixtures in {group}");
    v
}

/// `(inputs, outputs)` of a case's data set, in graph order.
fn data_set(dir: &Path) -> (Vec<Tensor>, Vec<Tensor>) {
    let read = |kind: &str| {
        (0..)
            .map(|k| dir.join(format!("test_data_set_0/{kind}_{k}.pb")))
            .take_while(|p| p.exists())
            .map(|p| Tensor::read_pb(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
            .collect::<Vec<Tensor>>()
    };
    (read("input"), read("output"))
}

fn name(dir: &Path) -> String {
    let n = dir.file_name().unwrap().to_string_lossy();
    let g = dir.parent().unwrap().file_name().unwrap().to_string_lossy();
    format!("{g}/{n}")
}

/// Compare every graph output by name and shape; returns the worst absolute error.
fn compare(case: &str, path: &str, got: &[Tensor], want: &[Tensor], atol: f64, rtol: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "{case} ({path}): output count");
    let mut worst = 0.0f64;
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.name, w.name, "{case} ({path}): output order");
        assert_eq!(g.dims, w.dims, "{case} ({path}): shape of {}", g.name);
        let want: Vec<f64> = w.as_f32().unwrap().iter().map(|&v| v as f64).collect();
        let got = g.as_f32().unwrap();
        assert_close(
            &format!("{case} ({path}) {}", g.name),
            got,
            &want,
            atol,
            rtol,
        );
        worst = worst.max(common::max_abs_diff(got, &want));
    }
    worst
}

/// Load a case (binding the weights given as inputs) and run it on the CPU reference and,
/// where there is an adapter, on the GPU. Returns `(model, cpu error, gpu error)`.
fn check_case(dir: &Path, bind_weights: bool) -> (OnnxModel, f64, Option<f64>) {
    let case = name(dir);
    let (inputs, outputs) = data_set(dir);
    let (bound, feeds): (Vec<Tensor>, Vec<Tensor>) = inputs
        .into_iter()
        .partition(|t| bind_weights && ["W", "R", "B", "P"].contains(&t.name.as_str()));
    let bytes = std::fs::read(dir.join("model.onnx")).unwrap();
    let model = onnx::load_model_with(&bytes, &bound).unwrap_or_else(|e| panic!("{case}: {e}"));
    let cpu = model
        .run_graph_cpu(&feeds)
        .unwrap_or_else(|e| panic!("{case}: run_graph_cpu: {e}"));
    let cpu_err = compare(&case, "cpu", &cpu, &outputs, CPU_ATOL, CPU_RTOL);
    let gpu_err = common::gpu::ctx().map(|ctx| {
        let runner = OnnxRunner::new(ctx, &model).unwrap_or_else(|e| panic!("{case}: {e}"));
        let gpu = runner
            .run_graph(&feeds)
            .unwrap_or_else(|e| panic!("{case}: run_graph: {e}"));
        compare(&case, "gpu", &gpu, &outputs, GPU_ATOL, GPU_RTOL)
    });
    eprintln!("{case}: max |err| cpu {cpu_err:.2e}, gpu {gpu_err:?}");
    (model, cpu_err, gpu_err)
}

#[test]
fn onnx_backend_node_tests_load_and_match() {
    let all = cases("node");
    for dir in &all {
        check_case(dir, true);
    }
    // LSTM, GRU and RNN each, every direction and layout 1 among them.
    for op in ["lstm", "gru", "rnn"] {
        assert!(
            all.iter().any(|d| name(d).contains(op)),
            "no {op} node test"
        );
    }
}

#[test]
fn attribute_cases_load_and_match_onnxruntime() {
    for dir in cases("attrs") {
        let (model, ..) = check_case(&dir, false);
        let cfg = model.config();
        let n = name(&dir);
        // What each case is about must have reached the configuration.
        match n.as_str() {
            "attrs/lstm_bidir_layout1" => {
                assert_eq!(cfg.direction(), Direction::Bidirectional);
                assert_eq!(cfg.layout(), rnn_wgpu::Layout::BatchFirst);
                assert!(cfg.input_forget() && cfg.peepholes());
                assert_eq!(cfg.gate_clip(), Some(2.0));
                // No activation_alpha / beta: ONNX's defaults.
                assert_eq!(
                    cfg.activations(),
                    Activations {
                        gate: Activation::HardSigmoid {
                            alpha: 0.2,
                            beta: 0.5
                        },
                        cell: Activation::LeakyRelu { alpha: 0.01 },
                        hidden: Activation::Tanh,
                    }
                );
            }
            "attrs/gru_defaults_elu" => {
                // linear_before_reset defaults to 0: reset before, not PyTorch's form.
                assert_eq!(cfg.gru_reset(), rnn_wgpu::GruReset::Before);
                assert_eq!(cfg.activations().cell, Activation::Elu { alpha: 1.0 });
            }
            "attrs/gru_reverse_lbr_clip" => {
                assert_eq!(cfg.gru_reset(), rnn_wgpu::GruReset::After);
                assert_eq!(cfg.direction(), Direction::Reverse);
                assert_eq!(
                    cfg.activations().cell,
                    Activation::HardSigmoid {
                        alpha: 0.35,
                        beta: 0.6
                    }
                );
            }
            "attrs/lstm_reverse_const_state" => assert!(!cfg.bias()),
            _ => {}
        }
    }
}

#[test]
fn torch_exported_stacks_load_as_one_model() {
    for dir in cases("torch") {
        let (model, ..) = check_case(&dir, false);
        let n = name(&dir);
        let layers: usize = n
            .split('_')
            .find_map(|p| p.strip_suffix("layer").and_then(|d| d.parse().ok()))
            .expect("case names carry the layer count");
        assert_eq!(model.config().num_layers(), layers, "{n}");
        assert_eq!(
            model.config().direction() == Direction::Bidirectional,
            n.contains("bidir"),
            "{n}"
        );
        // One Weights of every layer, PyTorch names.
        assert!(
            model
                .weights()
                .named_tensors()
                .iter()
                .any(|(name, ..)| name == &format!("weight_hh_l{}", layers - 1)),
            "{n}"
        );
    }
}

/// Which optional inputs a saved model has, from its interface.
fn save_options(model: &OnnxModel) -> SaveOptions {
    let names = model.input_names();
    SaveOptions {
        initial_state: names.contains(&"initial_h"),
        sequence_lens: names.contains(&"sequence_lens"),
    }
}

#[test]
fn saved_models_run_in_onnxruntime_with_the_same_outputs() {
    for dir in cases("saved") {
        let (model, ..) = check_case(&dir, false);
        // The committed file is what save_model writes today for these weights (so
        // onnxruntime's outputs above are those of the current writer's files).
        let bytes = onnx::save_model_with(model.weights(), &save_options(&model)).unwrap();
        assert!(
            bytes == std::fs::read(dir.join("model.onnx")).unwrap(),
            "{}: save_model no longer writes the committed bytes; rerun scripts/gen_onnx_models.py saved",
            name(&dir)
        );
    }
}

/// The models of the `saved` group: `(case, configuration, options)`.
fn saved_cases() -> Vec<(&'static str, RnnConfig, SaveOptions)> {
    let all = SaveOptions {
        initial_state: true,
        sequence_lens: true,
    };
    vec![
        (
            "lstm_2layer_bidir_state_lens",
            RnnConfig::lstm(3, 4)
                .num_layers(2)
                .direction(Direction::Bidirectional)
                .build()
                .unwrap(),
            all,
        ),
        (
            "gru_reset_before_reverse_state",
            RnnConfig::gru(4, 5)
                .linear_before_reset(false)
                .direction(Direction::Reverse)
                .build()
                .unwrap(),
            SaveOptions {
                initial_state: true,
                sequence_lens: false,
            },
        ),
        (
            "rnn_relu_3layer",
            RnnConfig::rnn(2, 3, Nonlinearity::Relu)
                .num_layers(3)
                .build()
                .unwrap(),
            SaveOptions::default(),
        ),
        (
            "lstm_peephole_clip_activations",
            RnnConfig::lstm(3, 4)
                .peepholes(true)
                .input_forget(true)
                .gate_clip(1.5)
                .activations(Activations {
                    gate: Activation::HardSigmoid {
                        alpha: 0.25,
                        beta: 0.45,
                    },
                    cell: Activation::LeakyRelu { alpha: 0.05 },
                    hidden: Activation::ScaledTanh {
                        alpha: 1.5,
                        beta: 0.7,
                    },
                })
                .build()
                .unwrap(),
            all,
        ),
        (
            "gru_nobias_2layer_lens",
            RnnConfig::gru(3, 4)
                .bias(false)
                .num_layers(2)
                .build()
                .unwrap(),
            SaveOptions {
                initial_state: false,
                sequence_lens: true,
            },
        ),
    ]
}

/// Writes tests/fixtures/onnx_models/saved/*/model.onnx; run by scripts/gen_onnx_models.py,
/// which then records onnxruntime's outputs for them.
#[test]
#[ignore = "writes fixtures; run by scripts/gen_onnx_models.py"]
fn write_saved_models() {
    for (k, (case, cfg, opts)) in saved_cases().into_iter().enumerate() {
        let mut weights = Weights::init(&cfg, 40 + k as u64);
        if cfg.peepholes() {
            // The initialiser leaves peepholes at zero; give them values to matter.
            let p: Vec<f32> = common::seeded(90 + k as u64, 3 * cfg.hidden_size(), 0.5);
            weights.layer_mut(0, 0).unwrap().peephole = Some(p);
        }
        let dir = root().join("saved").join(case);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("model.onnx"),
            onnx::save_model_with(&weights, &opts).unwrap(),
        )
        .unwrap();
    }
}

/// Run a case whose graph interface is the operator's (inputs `X`, `sequence_lens`,
/// `initial_h`, `initial_c`; outputs `Y`, `Y_h`, `Y_c`) through `run` / `run_cpu` with
/// [`OnnxInputs`], and compare with the recorded outputs; returns the shapes it gave.
fn check_operator_level(dir: &Path) -> ([usize; 4], [usize; 3]) {
    let case = name(dir);
    let model = onnx::load_model(dir.join("model.onnx")).unwrap();
    let (inputs, outputs) = data_set(dir);
    let get = |n: &str| inputs.iter().find(|t| t.name == n);
    let x = get("X").unwrap();
    let lens = get("sequence_lens").map(|t| t.to_lengths().unwrap());
    let batch_first = model.config().layout() == rnn_wgpu::Layout::BatchFirst;
    let run = OnnxInputs {
        x: x.as_f32().unwrap(),
        steps: x.dims[usize::from(batch_first)],
        batch: x.dims[usize::from(!batch_first)],
        sequence_lens: lens.as_deref(),
        initial_h: get("initial_h").map(|t| t.as_f32().unwrap()),
        initial_c: get("initial_c").map(|t| t.as_f32().unwrap()),
    };
    let want = |n: &str| -> Vec<f64> {
        let t = outputs.iter().find(|t| t.name == n).unwrap();
        t.as_f32().unwrap().iter().map(|&v| v as f64).collect()
    };
    let out = model.run_cpu(&run).unwrap();
    assert_close(&format!("{case} Y"), &out.y, &want("Y"), CPU_ATOL, CPU_RTOL);
    assert_close(
        &format!("{case} Y_h"),
        &out.y_h,
        &want("Y_h"),
        CPU_ATOL,
        CPU_RTOL,
    );
    if let Some(y_c) = &out.y_c {
        assert_close(
            &format!("{case} Y_c"),
            y_c,
            &want("Y_c"),
            CPU_ATOL,
            CPU_RTOL,
        );
    }
    if let Some(ctx) = common::gpu::ctx() {
        let gpu = OnnxRunner::new(ctx, &model).unwrap().run(&run).unwrap();
        assert_close(
            &format!("{case} gpu Y"),
            &gpu.y,
            &want("Y"),
            GPU_ATOL,
            GPU_RTOL,
        );
        assert_close(
            &format!("{case} gpu Y_h"),
            &gpu.y_h,
            &want("Y_h"),
            GPU_ATOL,
            GPU_RTOL,
        );
        assert_eq!(gpu.y_c.is_some(), out.y_c.is_some());
    }
    (out.y_shape, out.state_shape)
}

#[test]
fn operator_level_run_takes_and_returns_onnx_layouts() {
    // Layout 1, one bidirectional node: Y [B, T, D, H], states [B, D, H].
    let shapes = check_operator_level(&root().join("attrs/lstm_bidir_layout1"));
    assert_eq!(shapes, ([3, 5, 2, 4], [3, 2, 4]));
    // Layout 0, two bidirectional layers: Y [T, D, B, H] (the last layer's), states
    // [L*D, B, H].
    let shapes = check_operator_level(&root().join("saved/lstm_2layer_bidir_state_lens"));
    assert_eq!(shapes, ([5, 2, 3, 4], [4, 3, 4]));
    // Layout 1 GRU, reverse, with lengths.
    let shapes = check_operator_level(&root().join("attrs/gru_reverse_lbr_clip"));
    assert_eq!(shapes, ([3, 5, 1, 3], [3, 1, 3]));
}

fn onnx_error(dir: &str) -> (String, String) {
    let path = root().join("bad").join(dir).join("model.onnx");
    match onnx::load_model(&path) {
        Err(Error::OnnxModel { place, why }) => (place, why),
        other => panic!("{dir}: expected Error::OnnxModel, got {other:?}"),
    }
}

#[test]
fn graphs_it_cannot_take_get_an_error_naming_the_node() {
    let (place, why) = onnx_error("readout_matmul");
    assert!(place.contains("`readout` (MatMul)"), "{place}: {why}");
    let (place, _) = onnx_error("no_recurrent_node");
    assert_eq!(place, "graph");
    let (place, why) = onnx_error("runtime_weights");
    assert!(
        place.contains("`W`") && place.contains("`lstm` (LSTM)"),
        "{place}: {why}"
    );
    let (place, why) = onnx_error("unknown_attribute");
    assert!(
        place.contains("`output_sequence`") && place.contains("`lstm`"),
        "{place}: {why}"
    );
    let (place, why) = onnx_error("bad_direction");
    assert!(
        place.contains("`direction`") && why.contains("sideways"),
        "{place}: {why}"
    );
    assert_eq!(cases("bad").len(), 5, "every bad case is checked here");

    // Bytes that are no ModelProto.
    assert!(matches!(
        onnx::load_model_from_bytes(&[0xff, 0xff, 0xff]),
        Err(Error::OnnxDecode { .. })
    ));
    // Binding a tensor the graph does not take.
    let bytes = std::fs::read(root().join("node/test_lstm_defaults/model.onnx")).unwrap();
    let stray = Tensor::from_f32("not_an_input", &[1], vec![0.0]).unwrap();
    assert!(matches!(
        onnx::load_model_with(&bytes, &[stray]),
        Err(Error::OnnxModel { place, .. }) if place.contains("not_an_input")
    ));
}

#[test]
fn run_errors_name_the_tensor() {
    let dir = root().join("torch/lstm_2layer_h0");
    let model = onnx::load_model(dir.join("model.onnx")).unwrap();
    let (inputs, _) = data_set(&dir);
    // Without h0 the graph run is missing a graph input.
    let only_x: Vec<Tensor> = inputs.iter().filter(|t| t.name == "X").cloned().collect();
    assert!(matches!(
        model.run_graph_cpu(&only_x),
        Err(Error::MissingTensor(n)) if n == "h0"
    ));
    // An X of the wrong length for its T and B.
    let run = OnnxInputs {
        x: &[0.0; 5],
        steps: 2,
        batch: 1,
        sequence_lens: None,
        initial_h: None,
        initial_c: None,
    };
    assert!(matches!(
        model.run_cpu(&run),
        Err(Error::ShapeMismatch { name, .. }) if name == "X"
    ));
    // A sequence length over T.
    let x = vec![0.0; 2 * 3];
    let run = OnnxInputs {
        x: &x,
        steps: 2,
        batch: 1,
        sequence_lens: Some(&[3]),
        ..run
    };
    assert!(matches!(
        model.run_cpu(&run),
        Err(Error::ShapeMismatch { name, .. }) if name.starts_with("sequence_lens")
    ));
}
