//! Fixtures (tests/fixtures/*.safetensors), loaded for the parity tests.
//!
//! `scripts/gen_optim_fixtures.py` writes `optim.safetensors`, read through [`OptimFixture`]
//! by the clipping and optimiser tests.
//!
//! `scripts/gen_fixtures.py` writes one file per PyTorch case, read through [`Fixture`]:
//! `lstm_<case>.safetensors` ([`all_cases`], loaded by [`load`]) and the other cells,
//! `gru_*`, `rnn_tanh_*`, `rnn_relu_*`, `lstm_proj_*` ([`cell_files`], loaded by
//! [`load_file`]). Each holds (`S` = the size of `h`: `P` with a projection, else `H`):
//! - F32 parameters under their state_dict names (`weight_ih_l0`, ..., `weight_hr_l0` with a
//!   projection), loadable by [`Weights::from_safetensors`] (configuration inferred);
//! - F32 inputs `x [T, B, I]`, `h0 [B, S]` and upstream gradients `dy [T, B, S]`,
//!   `dh_n [B, S]`; LSTM only: `c0`, `dc_n [B, H]`;
//! - F64 expected outputs `y`, `h_n` (LSTM: `c_n`) and gradients `grad.<name>` of
//!   `sum(y*dy) + sum(h_n*dh_n) [+ sum(c_n*dc_n)]` for `x`, `h0` (LSTM: `c0`) and every
//!   parameter;
//! - metadata `input_size`, `hidden_size`, `batch`, `steps`, `bias`, `torch_version`, and
//!   (all but the five original `lstm_<case>` files, which mean "lstm") `cell`, with
//!   `nonlinearity` for rnn and `proj_size` for a projected LSTM.
//!
//! `scripts/gen_onnx_fixtures.py` writes `onnx_<case>.safetensors`, onnxruntime's forward
//! results for single ONNX nodes, read through [`OnnxFixture`].
//!
//! A malformed fixture panics: these are test helpers.

use std::collections::HashMap;
use std::path::PathBuf;

use rnn_wgpu::{Activation, Activations, CellKind, Nonlinearity, RnnConfig, Weights};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

/// Every plain-LSTM case `scripts/gen_fixtures.py` writes (`lstm_<case>.safetensors`).
pub fn all_cases() -> Vec<&'static str> {
    vec!["small", "tiny", "nobias", "odd", "large_input"]
}

/// Every other file `scripts/gen_fixtures.py` writes, by file stem: GRU, RNN (tanh and relu)
/// and LSTM with a projection.
pub fn cell_files() -> Vec<&'static str> {
    vec![
        "gru_small",
        "gru_tiny",
        "gru_odd",
        "gru_nobias",
        "gru_large_input",
        "rnn_tanh_small",
        "rnn_tanh_tiny",
        "rnn_tanh_odd",
        "rnn_relu_small",
        "rnn_relu_odd",
        "lstm_proj_small",
        "lstm_proj_tiny",
        "lstm_proj_odd",
    ]
}

/// Every case `scripts/gen_onnx_fixtures.py` writes (`onnx_<case>.safetensors`).
pub fn onnx_cases() -> Vec<&'static str> {
    vec![
        "lstm_peephole",
        "lstm_input_forget",
        "lstm_clip",
        "lstm_clip_peephole",
        "lstm_activations_a",
        "lstm_activations_b",
        "gru_activations_c",
        "gru_activations_d",
        "gru_reset_before",
        "gru_reset_after",
        "gru_clip",
        "rnn_tanh",
        "rnn_relu",
    ]
}

/// One loaded PyTorch case.
pub struct Fixture {
    /// The case name: `small`, `odd`, ... for [`load`]; the file stem (`gru_small`, ...) for
    /// [`load_file`].
    pub name: String,
    /// The configuration from the file's metadata.
    pub cfg: RnnConfig,
    /// `B`.
    pub batch: usize,
    /// `T`.
    pub steps: usize,
    /// The model's parameters, read by the crate's own loader.
    pub weights: Weights,
    /// The PyTorch version that produced the file.
    pub torch_version: String,
    /// `[T, B, I]`.
    pub x: Vec<f32>,
    /// `[B, S]`.
    pub h0: Vec<f32>,
    /// `[B, H]`; empty for GRU and RNN, which have no cell state (see
    /// [`Fixture::has_cell_state`]).
    pub c0: Vec<f32>,
    /// `[T, B, S]`: upstream gradient of `y`.
    pub dy: Vec<f32>,
    /// `[B, S]`: upstream gradient of `h_n`.
    pub dh_n: Vec<f32>,
    /// `[B, H]`: upstream gradient of `c_n`; empty for GRU and RNN.
    pub dc_n: Vec<f32>,
    /// The whole file, for tensors read by name.
    pub bytes: Vec<u8>,
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
}

/// Path of a plain-LSTM case's file.
pub fn path(case: &str) -> PathBuf {
    file_path(&format!("lstm_{case}"))
}

/// Path of `tests/fixtures/<stem>.safetensors`.
pub fn file_path(stem: &str) -> PathBuf {
    fixture_dir().join(format!("{stem}.safetensors"))
}

/// Load `tests/fixtures/lstm_<case>.safetensors`.
pub fn load(case: &str) -> Fixture {
    load_named(&format!("lstm_{case}"), case)
}

/// Load `tests/fixtures/<stem>.safetensors`, any cell.
pub fn load_file(stem: &str) -> Fixture {
    load_named(stem, stem)
}

/// The file's metadata, with typed getters that panic naming the file.
struct Meta {
    file: String,
    map: HashMap<String, String>,
}

impl Meta {
    fn read(file: &str, bytes: &[u8]) -> Meta {
        let (_, header) = SafeTensors::read_metadata(bytes)
            .unwrap_or_else(|e| panic!("{file}: bad safetensors header: {e}"));
        let map = header
            .metadata()
            .clone()
            .unwrap_or_else(|| panic!("{file}: no metadata"));
        Meta {
            file: file.to_string(),
            map,
        }
    }

    fn get(&self, key: &str) -> &str {
        self.map
            .get(key)
            .unwrap_or_else(|| panic!("{}: metadata lacks `{key}`", self.file))
    }

    fn opt(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(String::as_str)
    }

    fn parse<T: std::str::FromStr>(&self, key: &str) -> T
    where
        T::Err: std::fmt::Display,
    {
        self.get(key)
            .parse()
            .unwrap_or_else(|e| panic!("{}: metadata `{key}`: {e}", self.file))
    }

    fn flag(&self, key: &str) -> bool {
        match self.get(key) {
            "true" | "1" => true,
            "false" | "0" => false,
            other => panic!("{}: metadata `{key}` is {other:?}", self.file),
        }
    }

    fn json(&self, key: &str) -> serde_json::Value {
        serde_json::from_str(self.get(key))
            .unwrap_or_else(|e| panic!("{}: metadata `{key}`: {e}", self.file))
    }

    fn cell(&self) -> CellKind {
        match self.opt("cell").unwrap_or("lstm") {
            "lstm" => CellKind::Lstm,
            "gru" => CellKind::Gru,
            "rnn" => CellKind::Rnn,
            other => panic!("{}: metadata `cell` is {other:?}", self.file),
        }
    }
}

fn load_named(stem: &str, name: &str) -> Fixture {
    let p = file_path(stem);
    let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
    let meta = Meta::read(stem, &bytes);
    let (i, h) = (meta.parse("input_size"), meta.parse("hidden_size"));
    let builder = match meta.cell() {
        CellKind::Lstm => {
            let b = RnnConfig::lstm(i, h);
            match meta.opt("proj_size") {
                Some(_) => b.proj_size(meta.parse("proj_size")),
                None => b,
            }
        }
        CellKind::Gru => RnnConfig::gru(i, h),
        CellKind::Rnn => {
            let nonlinearity = match meta.get("nonlinearity") {
                "tanh" => Nonlinearity::Tanh,
                "relu" => Nonlinearity::Relu,
                other => panic!("{stem}: metadata `nonlinearity` is {other:?}"),
            };
            RnnConfig::rnn(i, h, nonlinearity)
        }
        other => panic!("{stem}: no fixture loader for {other:?}"),
    };
    let cfg = builder
        .bias(meta.flag("bias"))
        .build()
        .unwrap_or_else(|e| panic!("{stem}: {e}"));
    let weights = Weights::from_safetensors_config(&cfg, &bytes)
        .unwrap_or_else(|e| panic!("{stem}: weights: {e}"));
    let (t, b, s) = (meta.parse("steps"), meta.parse("batch"), cfg.state_size());
    let has_c = cfg.cell() == CellKind::Lstm;
    let st = SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{stem}: {e}"));
    let input = |tensor: &str, shape: &[usize]| -> Vec<f32> {
        let view = view(&st, stem, tensor, Dtype::F32);
        assert_eq!(view.shape(), shape, "fixture {stem}: shape of `{tensor}`");
        le_f32(view.data())
    };
    // The cell state only exists for LSTM; a GRU/RNN file must not carry one either.
    let cell_input = |tensor: &str| -> Vec<f32> {
        if has_c {
            input(tensor, &[b, h])
        } else {
            assert!(
                st.tensor(tensor).is_err(),
                "fixture {stem}: a {:?} has no `{tensor}`",
                cfg.cell()
            );
            Vec::new()
        }
    };
    Fixture {
        name: name.to_string(),
        batch: b,
        steps: t,
        torch_version: meta.get("torch_version").to_string(),
        x: input("x", &[t, b, i]),
        h0: input("h0", &[b, s]),
        c0: cell_input("c0"),
        dy: input("dy", &[t, b, s]),
        dh_n: input("dh_n", &[b, s]),
        dc_n: cell_input("dc_n"),
        cfg,
        weights,
        bytes,
    }
}

fn view<'a>(st: &SafeTensors<'a>, case: &str, name: &str, dtype: Dtype) -> TensorView<'a> {
    let view = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("fixture {case}: tensor `{name}`: {e}"));
    assert_eq!(view.dtype(), dtype, "fixture {case}: dtype of `{name}`");
    view
}

fn le_f32(data: &[u8]) -> Vec<f32> {
    data.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4-byte chunk")))
        .collect()
}

fn le_f64(data: &[u8]) -> Vec<f64> {
    data.chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("8-byte chunk")))
        .collect()
}

impl Fixture {
    /// Whether the cell has a cell state (LSTM): then `c0`, `dc_n`, `c_n` and `grad.c0`
    /// exist.
    pub fn has_cell_state(&self) -> bool {
        self.cfg.cell() == CellKind::Lstm
    }

    /// An F32 tensor by name, flattened row-major.
    pub fn f32(&self, name: &str) -> Vec<f32> {
        le_f32(view(&self.tensors(), &self.name, name, Dtype::F32).data())
    }

    /// An F64 tensor by name, flattened row-major.
    pub fn f64(&self, name: &str) -> Vec<f64> {
        le_f64(view(&self.tensors(), &self.name, name, Dtype::F64).data())
    }

    /// An F64 tensor, checked against the shape the caller expects.
    pub fn f64_shaped(&self, name: &str, shape: &[usize]) -> Vec<f64> {
        assert_eq!(
            self.shape(name),
            shape,
            "fixture {}: shape of `{name}`",
            self.name
        );
        self.f64(name)
    }

    /// A tensor's shape.
    pub fn shape(&self, name: &str) -> Vec<usize> {
        self.tensors()
            .tensor(name)
            .map(|v| v.shape().to_vec())
            .unwrap_or_else(|e| panic!("fixture {}: tensor `{name}`: {e}", self.name))
    }

    /// Whether the file holds a tensor called `name`.
    pub fn has(&self, name: &str) -> bool {
        self.tensors().tensor(name).is_ok()
    }

    fn tensors(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes)
            .unwrap_or_else(|e| panic!("fixture {}: {e}", self.name))
    }
}

/// One activation of an ONNX node as onnxruntime applied it: the name and the alpha/beta it
/// read (`None` where the function takes none).
#[derive(Debug, Clone, PartialEq)]
pub struct OnnxActivationSpec {
    /// ONNX spelling (`HardSigmoid`, ...).
    pub name: String,
    /// The alpha it read.
    pub alpha: Option<f32>,
    /// The beta it read.
    pub beta: Option<f32>,
}

impl OnnxActivationSpec {
    /// The crate's activation.
    pub fn activation(&self) -> Activation {
        Activation::from_onnx(&self.name, self.alpha, self.beta)
            .unwrap_or_else(|e| panic!("activation {self:?}: {e}"))
    }
}

/// One `onnx_<case>.safetensors` (see `scripts/gen_onnx_fixtures.py`): the inputs of a single
/// ONNX `LSTM`/`GRU`/`RNN` node exactly as fed to onnxruntime, its attributes, and
/// onnxruntime's float32 outputs. Shapes use `H` (ONNX has no projection) and drop the
/// direction axis of the states and outputs (one direction).
pub struct OnnxFixture {
    /// The case name (`lstm_peephole`, ...).
    pub name: String,
    /// The operator.
    pub cell: CellKind,
    /// `I`.
    pub input_size: usize,
    /// `H`.
    pub hidden_size: usize,
    /// `B`.
    pub batch: usize,
    /// `T`.
    pub steps: usize,
    /// Whether the node had a `B` input.
    pub bias: bool,
    /// Per role (f; g; h for LSTM), what onnxruntime applied.
    pub activations: Vec<OnnxActivationSpec>,
    /// The node's `activation_alpha` attribute as written (empty: not set).
    pub activation_alpha: Vec<f32>,
    /// The node's `activation_beta` attribute as written (empty: not set).
    pub activation_beta: Vec<f32>,
    /// `clip`, if set.
    pub clip: Option<f32>,
    /// LSTM `input_forget` (false for the other cells).
    pub input_forget: bool,
    /// GRU `linear_before_reset` (`None` for the other cells).
    pub linear_before_reset: Option<bool>,
    /// Whether the LSTM node had a `P` input.
    pub peepholes: bool,
    /// `W [1, G*H, I]`, ONNX gate order.
    pub w: Vec<f32>,
    /// `R [1, G*H, H]`.
    pub r: Vec<f32>,
    /// `B [1, 2*G*H]`, if given.
    pub b: Option<Vec<f32>>,
    /// `P [1, 3H]`, if given.
    pub p: Option<Vec<f32>>,
    /// `X [T, B, I]`.
    pub x: Vec<f32>,
    /// `initial_h [B, H]`, if given (else zeros).
    pub initial_h: Option<Vec<f32>>,
    /// `initial_c [B, H]`, if given (LSTM; else zeros).
    pub initial_c: Option<Vec<f32>>,
    /// onnxruntime's `Y [T, B, H]`.
    pub y: Vec<f32>,
    /// onnxruntime's `Y_h [B, H]`.
    pub y_h: Vec<f32>,
    /// onnxruntime's `Y_c [B, H]` (LSTM).
    pub y_c: Option<Vec<f32>>,
    /// The script's float64 transcription of the ONNX equations: `Y`, `Y_h`, `Y_c`.
    pub reference_y: Vec<f64>,
    /// See `reference_y`.
    pub reference_y_h: Vec<f64>,
    /// See `reference_y`.
    pub reference_y_c: Option<Vec<f64>>,
    /// Largest `|onnxruntime - reference|` the script measured over all outputs.
    pub ort_vs_f64_max_abs: f64,
    /// The onnxruntime version that produced the file.
    pub onnxruntime_version: String,
}

/// Path of an ONNX case's file.
pub fn onnx_path(case: &str) -> PathBuf {
    file_path(&format!("onnx_{case}"))
}

/// Load `tests/fixtures/onnx_<case>.safetensors`.
pub fn load_onnx(case: &str) -> OnnxFixture {
    let stem = format!("onnx_{case}");
    let p = onnx_path(case);
    let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
    let meta = Meta::read(&stem, &bytes);
    let cell = meta.cell();
    let (i, h): (usize, usize) = (meta.parse("input_size"), meta.parse("hidden_size"));
    let (t, b): (usize, usize) = (meta.parse("steps"), meta.parse("batch"));
    let g = cell.gate_count();

    let floats = |key: &str| -> Vec<f32> {
        let list = meta.json(key);
        let list = list
            .as_array()
            .unwrap_or_else(|| panic!("{stem}: `{key}` is not a list"));
        list.iter()
            .map(|v| v.as_f64().expect("a number") as f32)
            .collect()
    };
    let (activation_alpha, activation_beta) =
        (floats("activation_alpha"), floats("activation_beta"));
    let params = meta.json("activation_params");
    let activations: Vec<OnnxActivationSpec> = params
        .as_array()
        .unwrap_or_else(|| panic!("{stem}: `activation_params` is not a list"))
        .iter()
        .map(|entry| {
            let number = |v: &serde_json::Value| v.as_f64().map(|x| x as f32);
            OnnxActivationSpec {
                name: entry[0].as_str().expect("activation name").to_string(),
                alpha: number(&entry[1]),
                beta: number(&entry[2]),
            }
        })
        .collect();
    let roles = match cell {
        CellKind::Lstm => 3,
        CellKind::Gru => 2,
        _ => 1,
    };
    assert_eq!(activations.len(), roles, "{stem}: one activation per role");
    // The resolved parameters are the node's lists read in order by the activations that
    // take them (onnxruntime's rule); check the file agrees with itself.
    let used_alphas: Vec<f32> = activations.iter().filter_map(|a| a.alpha).collect();
    let used_betas: Vec<f32> = activations.iter().filter_map(|a| a.beta).collect();
    assert_eq!(used_alphas, activation_alpha, "{stem}: activation_alpha");
    assert_eq!(used_betas, activation_beta, "{stem}: activation_beta");

    let st = SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{stem}: {e}"));
    let tensor = |name: &str, dtype: Dtype, shape: &[usize]| -> Option<TensorView<'_>> {
        let v = st.tensor(name).ok()?;
        assert_eq!(v.dtype(), dtype, "{stem}: dtype of `{name}`");
        assert_eq!(v.shape(), shape, "{stem}: shape of `{name}`");
        Some(v)
    };
    let f32s =
        |name: &str, shape: &[usize]| tensor(name, Dtype::F32, shape).map(|v| le_f32(v.data()));
    let f64s =
        |name: &str, shape: &[usize]| tensor(name, Dtype::F64, shape).map(|v| le_f64(v.data()));
    let need = |name: &str| -> ! { panic!("{stem}: tensor `{name}` missing") };
    let lstm = cell == CellKind::Lstm;
    let only_lstm = |v: Option<Vec<f32>>, name: &str| {
        assert_eq!(v.is_some(), lstm, "{stem}: `{name}` is there iff LSTM");
        v
    };

    let bias = meta.flag("bias");
    let peepholes = lstm && meta.flag("peepholes");
    let b_tensor = f32s("B", &[1, 2 * g * h]);
    let p_tensor = f32s("P", &[1, 3 * h]);
    assert_eq!(b_tensor.is_some(), bias, "{stem}: `B` vs metadata `bias`");
    assert_eq!(
        p_tensor.is_some(),
        peepholes,
        "{stem}: `P` vs metadata `peepholes`"
    );
    let initial_c = f32s("initial_c", &[b, h]);
    assert!(
        lstm || initial_c.is_none(),
        "{stem}: `initial_c` without LSTM"
    );
    let clip = match meta.get("clip") {
        "none" => None,
        _ => Some(meta.parse::<f32>("clip")),
    };
    OnnxFixture {
        name: case.to_string(),
        cell,
        input_size: i,
        hidden_size: h,
        batch: b,
        steps: t,
        bias,
        activations,
        activation_alpha,
        activation_beta,
        clip,
        input_forget: lstm && meta.flag("input_forget"),
        linear_before_reset: (cell == CellKind::Gru).then(|| meta.flag("linear_before_reset")),
        peepholes,
        w: f32s("W", &[1, g * h, i]).unwrap_or_else(|| need("W")),
        r: f32s("R", &[1, g * h, h]).unwrap_or_else(|| need("R")),
        b: b_tensor,
        p: p_tensor,
        x: f32s("X", &[t, b, i]).unwrap_or_else(|| need("X")),
        initial_h: f32s("initial_h", &[b, h]),
        initial_c,
        y: f32s("Y", &[t, b, h]).unwrap_or_else(|| need("Y")),
        y_h: f32s("Y_h", &[b, h]).unwrap_or_else(|| need("Y_h")),
        y_c: only_lstm(f32s("Y_c", &[b, h]), "Y_c"),
        reference_y: f64s("reference.Y", &[t, b, h]).unwrap_or_else(|| need("reference.Y")),
        reference_y_h: f64s("reference.Y_h", &[b, h]).unwrap_or_else(|| need("reference.Y_h")),
        reference_y_c: f64s("reference.Y_c", &[b, h]),
        ort_vs_f64_max_abs: meta.parse("ort_vs_f64_max_abs"),
        onnxruntime_version: meta.get("onnxruntime_version").to_string(),
    }
}

impl OnnxFixture {
    /// The crate configuration of this node: the cell, sizes, bias, activations per role
    /// (ONNX f → gate, g → cell, h → hidden; the RNN's only activation is its cell
    /// activation), `clip`, `input_forget`, `linear_before_reset` and peepholes.
    pub fn config(&self) -> RnnConfig {
        let (i, h) = (self.input_size, self.hidden_size);
        let act = |role: usize| self.activations[role].activation();
        let builder = match self.cell {
            CellKind::Lstm => RnnConfig::lstm(i, h)
                .activations(Activations {
                    gate: act(0),
                    cell: act(1),
                    hidden: act(2),
                })
                .input_forget(self.input_forget)
                .peepholes(self.peepholes),
            CellKind::Gru => RnnConfig::gru(i, h)
                .activations(Activations {
                    gate: act(0),
                    cell: act(1),
                    ..Activations::default()
                })
                .linear_before_reset(self.linear_before_reset.expect("GRU")),
            CellKind::Rnn => match act(0) {
                Activation::Tanh => RnnConfig::rnn(i, h, Nonlinearity::Tanh),
                Activation::Relu => RnnConfig::rnn(i, h, Nonlinearity::Relu),
                other => RnnConfig::rnn(i, h, Nonlinearity::Tanh).activations(Activations {
                    cell: other,
                    ..Activations::default()
                }),
            },
            other => panic!("{}: no configuration for {other:?}", self.name),
        };
        let builder = match self.clip {
            Some(c) => builder.gate_clip(c),
            None => builder,
        };
        builder
            .bias(self.bias)
            .build()
            .unwrap_or_else(|e| panic!("onnx_{}: configuration: {e}", self.name))
    }
}

/// `tests/fixtures/optim.safetensors` (see `scripts/gen_optim_fixtures.py`): gradients,
/// parameters and torch's results for the clipping and optimiser cases, with JSON metadata
/// (`shapes`, `steps`, `clip_norm`, `clip_value`, `optimizers`). Each test file reads the
/// tensors it needs by name.
pub struct OptimFixture {
    bytes: Vec<u8>,
}

impl OptimFixture {
    /// Read the file (panics if it is missing).
    pub fn load() -> OptimFixture {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/optim.safetensors"
        );
        OptimFixture {
            bytes: std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}")),
        }
    }

    /// A metadata entry, parsed as JSON.
    pub fn meta(&self, key: &str) -> serde_json::Value {
        let (_, header) = SafeTensors::read_metadata(&self.bytes).unwrap();
        let raw = &header.metadata().as_ref().unwrap()[key];
        serde_json::from_str(raw).unwrap_or_else(|e| panic!("metadata {key}: {e}"))
    }

    /// An F32 tensor by name, flattened row-major.
    pub fn f32(&self, name: &str) -> Vec<f32> {
        le_f32(view(&self.tensors(), "optim", name, Dtype::F32).data())
    }

    /// An F64 tensor by name, flattened row-major.
    pub fn f64(&self, name: &str) -> Vec<f64> {
        le_f64(view(&self.tensors(), "optim", name, Dtype::F64).data())
    }

    fn tensors(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).unwrap()
    }
}

/// Every multi-layer file `scripts/gen_fixtures.py` writes (`TOPOLOGY_CASES`, under
/// [`topology_dir`]), by file stem:
/// two layers, bidirectional, with and without per-sequence lengths and batch-first, LSTM
/// (with and without projection) and GRU. Loaded by [`load_topology`].
pub fn topology_files() -> Vec<&'static str> {
    vec![
        "lstm_l2_bi",
        "gru_l2_bi",
        "lstm_l2_bi_packed",
        "gru_l2_bi_packed",
        "lstm_l2_bi_packed_bf",
        "gru_l2_bi_packed_bf",
        "lstm_proj_l2_bi",
        "lstm_proj_l2_bi_packed_bf",
    ]
}

/// One loaded multi-layer PyTorch case. `L` layers, `D` directions, `S` the size of `h`;
/// `x`, `dy` (and the expected `y`, `grad.x`) are `[B, T, F]` when `cfg.layout()` is
/// batch-first, else `[T, B, F]`.
pub struct TopologyFixture {
    /// The file stem.
    pub name: String,
    /// The configuration from the file's metadata (layers, direction, layout included).
    pub cfg: RnnConfig,
    /// `B`.
    pub batch: usize,
    /// `T`.
    pub steps: usize,
    /// Per-sequence lengths (`pack_padded_sequence`), `None` when every sequence is `T` long.
    pub lengths: Option<Vec<usize>>,
    /// Every layer-direction's parameters, read by the crate's own loader.
    pub weights: Weights,
    /// `[T, B, I]` or `[B, T, I]`.
    pub x: Vec<f32>,
    /// `[L*D, B, S]`.
    pub h0: Vec<f32>,
    /// `[L*D, B, H]`; empty for GRU.
    pub c0: Vec<f32>,
    /// Like `y`: `[T, B, D*S]` or `[B, T, D*S]`.
    pub dy: Vec<f32>,
    /// `[L*D, B, S]`.
    pub dh_n: Vec<f32>,
    /// `[L*D, B, H]`; empty for GRU.
    pub dc_n: Vec<f32>,
    /// The whole file, for tensors read by name.
    pub bytes: Vec<u8>,
}

/// `tests/fixtures/topology/`, where the [`topology_files`] live (apart from the single-layer
/// files that `tests/cpu_parity.rs` enumerates).
pub fn topology_dir() -> PathBuf {
    fixture_dir().join("topology")
}

/// Load `tests/fixtures/topology/<stem>.safetensors`, a [`topology_files`] case.
pub fn load_topology(stem: &str) -> TopologyFixture {
    let p = topology_dir().join(format!("{stem}.safetensors"));
    let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
    let meta = Meta::read(stem, &bytes);
    let (i, h): (usize, usize) = (meta.parse("input_size"), meta.parse("hidden_size"));
    let builder = match meta.cell() {
        CellKind::Lstm => {
            let b = RnnConfig::lstm(i, h);
            match meta.opt("proj_size") {
                Some(_) => b.proj_size(meta.parse("proj_size")),
                None => b,
            }
        }
        CellKind::Gru => RnnConfig::gru(i, h),
        other => panic!("{stem}: no topology fixture loader for {other:?}"),
    };
    let direction = if meta.flag("bidirectional") {
        rnn_wgpu::Direction::Bidirectional
    } else {
        rnn_wgpu::Direction::Forward
    };
    let layout = if meta.flag("batch_first") {
        rnn_wgpu::Layout::BatchFirst
    } else {
        rnn_wgpu::Layout::SeqMajor
    };
    let cfg = builder
        .bias(meta.flag("bias"))
        .num_layers(meta.parse("num_layers"))
        .direction(direction)
        .layout(layout)
        .build()
        .unwrap_or_else(|e| panic!("{stem}: {e}"));
    let weights = Weights::from_safetensors_config(&cfg, &bytes)
        .unwrap_or_else(|e| panic!("{stem}: weights: {e}"));
    let (t, b, s) = (meta.parse("steps"), meta.parse("batch"), cfg.state_size());
    let lengths = meta.opt("lengths").map(|_| {
        meta.json("lengths")
            .as_array()
            .unwrap_or_else(|| panic!("{stem}: `lengths` is not a list"))
            .iter()
            .map(|v| v.as_u64().expect("a length") as usize)
            .collect()
    });
    let n_states = cfg.num_layers() * cfg.num_directions();
    let seq = |f: usize| match layout {
        rnn_wgpu::Layout::BatchFirst => vec![b, t, f],
        _ => vec![t, b, f],
    };
    let has_c = cfg.cell() == CellKind::Lstm;
    let st = SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{stem}: {e}"));
    let input = |tensor: &str, shape: &[usize]| -> Vec<f32> {
        let view = view(&st, stem, tensor, Dtype::F32);
        assert_eq!(view.shape(), shape, "fixture {stem}: shape of `{tensor}`");
        le_f32(view.data())
    };
    let cell_input = |tensor: &str| -> Vec<f32> {
        if has_c {
            input(tensor, &[n_states, b, h])
        } else {
            assert!(
                st.tensor(tensor).is_err(),
                "fixture {stem}: a GRU has no `{tensor}`"
            );
            Vec::new()
        }
    };
    TopologyFixture {
        name: stem.to_string(),
        batch: b,
        steps: t,
        lengths,
        x: input("x", &seq(i)),
        h0: input("h0", &[n_states, b, s]),
        c0: cell_input("c0"),
        dy: input("dy", &seq(cfg.output_size())),
        dh_n: input("dh_n", &[n_states, b, s]),
        dc_n: cell_input("dc_n"),
        cfg,
        weights,
        bytes,
    }
}

impl TopologyFixture {
    /// Whether the cell has a cell state (LSTM).
    pub fn has_cell_state(&self) -> bool {
        self.cfg.cell() == CellKind::Lstm
    }

    /// An F64 tensor, checked against the shape the caller expects.
    pub fn f64_shaped(&self, name: &str, shape: &[usize]) -> Vec<f64> {
        let st = SafeTensors::deserialize(&self.bytes)
            .unwrap_or_else(|e| panic!("fixture {}: {e}", self.name));
        let v = view(&st, &self.name, name, Dtype::F64);
        assert_eq!(v.shape(), shape, "fixture {}: shape of `{name}`", self.name);
        le_f64(v.data())
    }

    /// Every tensor name in the file.
    pub fn tensor_names(&self) -> Vec<String> {
        let (_, header) = SafeTensors::read_metadata(&self.bytes)
            .unwrap_or_else(|e| panic!("fixture {}: {e}", self.name));
        header.tensors().into_keys().collect()
    }
}
