//! PyTorch fixtures (tests/fixtures/*.safetensors), loaded for the parity tests.
//!
//! `scripts/gen_optim_fixtures.py` writes `optim.safetensors`, read through [`OptimFixture`]
//! by the clipping and optimiser tests.
//!
//! `scripts/gen_fixtures.py` writes one file per LSTM case, `lstm_<case>.safetensors`, holding:
//! - F32 parameters under their state_dict names (`weight_ih_l0`, ...), loadable by
//!   [`Weights::from_safetensors`];
//! - F32 inputs `x [T, B, I]`, `h0`, `c0 [B, H]` and upstream gradients `dy [T, B, H]`,
//!   `dh_n`, `dc_n [B, H]`;
//! - F64 expected outputs `y`, `h_n`, `c_n` and gradients `grad.<name>` of
//!   `sum(y*dy) + sum(h_n*dh_n) + sum(c_n*dc_n)` for `x`, `h0`, `c0` and every parameter;
//! - metadata `input_size`, `hidden_size`, `batch`, `steps`, `bias`, `torch_version`.
//!
//! A malformed fixture panics: these are test helpers.

use std::path::PathBuf;

use rnn_wgpu::{RnnConfig, Weights};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

/// Every fixture case `scripts/gen_fixtures.py` writes.
pub fn all_cases() -> Vec<&'static str> {
    vec!["small", "tiny", "nobias", "odd", "large_input"]
}

/// One loaded case.
pub struct Fixture {
    /// The case name (`small`, `odd`, ...).
    pub name: String,
    /// The LSTM configuration from the file's metadata.
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
    /// `[B, H]`.
    pub h0: Vec<f32>,
    /// `[B, H]`.
    pub c0: Vec<f32>,
    /// `[T, B, H]`: upstream gradient of `y`.
    pub dy: Vec<f32>,
    /// `[B, H]`: upstream gradient of `h_n`.
    pub dh_n: Vec<f32>,
    /// `[B, H]`: upstream gradient of `c_n`.
    pub dc_n: Vec<f32>,
    /// The whole file, for tensors read by name.
    pub bytes: Vec<u8>,
}

/// Path of a case's file.
pub fn path(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(format!("lstm_{case}.safetensors"))
}

/// Load `tests/fixtures/lstm_<case>.safetensors`.
pub fn load(case: &str) -> Fixture {
    let p = path(case);
    let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .unwrap_or_else(|e| panic!("{}: bad safetensors header: {e}", p.display()));
    let meta = header
        .metadata()
        .clone()
        .unwrap_or_else(|| panic!("{}: no metadata", p.display()));
    let get = |key: &str| -> &str {
        meta.get(key)
            .unwrap_or_else(|| panic!("{}: metadata lacks `{key}`", p.display()))
    };
    let size = |key: &str| -> usize {
        get(key)
            .parse()
            .unwrap_or_else(|e| panic!("{}: metadata `{key}`: {e}", p.display()))
    };
    let bias = match get("bias") {
        "true" => true,
        "false" => false,
        other => panic!("{}: metadata `bias` is {other:?}", p.display()),
    };
    let cfg = RnnConfig::lstm(size("input_size"), size("hidden_size"))
        .bias(bias)
        .build()
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let weights = Weights::from_safetensors(&cfg, &bytes)
        .unwrap_or_else(|e| panic!("{}: weights: {e}", p.display()));
    let (t, b, i, h) = (
        size("steps"),
        size("batch"),
        cfg.input_size(),
        cfg.hidden_size(),
    );
    let st = SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let input = |name: &str, shape: &[usize]| -> Vec<f32> {
        let view = view(&st, case, name, Dtype::F32);
        assert_eq!(view.shape(), shape, "fixture {case}: shape of `{name}`");
        le_f32(view.data())
    };
    let (x, h0, c0) = (
        input("x", &[t, b, i]),
        input("h0", &[b, h]),
        input("c0", &[b, h]),
    );
    let (dy, dh_n, dc_n) = (
        input("dy", &[t, b, h]),
        input("dh_n", &[b, h]),
        input("dc_n", &[b, h]),
    );
    Fixture {
        name: case.to_string(),
        batch: b,
        steps: t,
        torch_version: get("torch_version").to_string(),
        cfg,
        weights,
        x,
        h0,
        c0,
        dy,
        dh_n,
        dc_n,
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
