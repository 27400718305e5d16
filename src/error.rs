//! The crate's one error type. Every fallible public call returns `Result<_, Error>`.

use thiserror::Error;

/// Everything that can go wrong in `rnn_wgpu`, named so a caller can match on it.
///
/// Shape errors carry the name of the offending tensor plus the expected and actual shapes;
/// limit errors carry the name of the wgpu limit, what was needed and what the adapter allows.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is out of range (zero sizes, a missing alpha, ...).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// A configuration that is valid in principle but not implemented (yet) on this path.
    #[error("unsupported: {0}")]
    Unsupported(String),

    /// A tensor has the wrong shape (or length, for flat host slices).
    #[error("shape mismatch for `{name}`: expected {expected:?}, got {got:?}")]
    ShapeMismatch {
        /// The tensor's name, e.g. `x` or `weight_ih_l0`.
        name: String,
        /// The shape the call needs.
        expected: Vec<usize>,
        /// The shape it was given.
        got: Vec<usize>,
    },

    /// A dimension that must be positive was zero (T = 0, B = 0, ...).
    #[error("`{0}` must be at least 1")]
    ZeroSize(&'static str),

    /// An index is past the end of what it indexes: a layer of a model, or a direction of a
    /// layer (`Weights::layer`).
    #[error("{what} index {index} out of range: there are {bound} (valid: 0..{bound})")]
    IndexOutOfRange {
        /// What was indexed: `"layer"` or `"direction"`.
        what: &'static str,
        /// The index given.
        index: usize,
        /// How many there are; valid indices are `0..bound`.
        bound: usize,
    },

    /// A required tensor is absent from a weight file.
    #[error("missing tensor `{0}` in weight file")]
    MissingTensor(String),

    /// The parameter tensors of a weight file fit no configuration, so none can be inferred
    /// from them (`Weights::load`): a tensor of the wrong rank, gate rows that fit no cell, two
    /// tensors that disagree, or parameters of several models in one file.
    #[error("cannot infer a configuration: `{name}` has shape {shape:?}: {why}")]
    InconsistentWeights {
        /// The tensor that does not fit, under its name in the file.
        name: String,
        /// Its shape in the file.
        shape: Vec<usize>,
        /// Why, naming the tensor (and its shape) it conflicts with.
        why: String,
    },

    /// A tensor in a weight file has an element type we cannot read.
    #[error("tensor `{name}` has dtype {got}, expected {expected}")]
    WrongDtype {
        /// The tensor's name.
        name: String,
        /// What we accept.
        expected: &'static str,
        /// What the file holds.
        got: String,
    },

    /// The safetensors container itself is malformed.
    #[error("safetensors: {0}")]
    Safetensors(#[from] safetensors::SafeTensorError),

    /// A file could not be read or written.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),

    /// A file or buffer is not a valid ONNX protobuf message (`ModelProto` for a model,
    /// `TensorProto` for a tensor file).
    #[error("ONNX decode of {what}: {why}")]
    OnnxDecode {
        /// What was being decoded: a path, or `"model bytes"` / `"tensor bytes"`.
        what: String,
        /// The protobuf decoder's message.
        why: String,
    },

    /// An ONNX graph this crate cannot take, or one that breaks the ONNX specification:
    /// `place` names the node (its name and op type), attribute, tensor or graph value.
    #[error("ONNX model: {place}: {why}")]
    OnnxModel {
        /// Where: e.g. ``node `lstm_1` (LSTM)``, ``attribute `direction` of node `lstm_1`
        /// (LSTM)``, ``tensor `W` ``, ``graph output `Y` ``.
        place: String,
        /// What is wrong, and what would be accepted.
        why: String,
    },

    /// The work needs more than a wgpu limit of this device allows, and cannot be tiled to fit.
    #[error("`{limit}` exceeded: {what} needs {needed}, the device allows {allowed}")]
    LimitExceeded {
        /// The `wgpu::Limits` field that is too small.
        limit: &'static str,
        /// What needed it (a tensor or dispatch name).
        what: String,
        /// How much was needed.
        needed: u64,
        /// The device's limit.
        allowed: u64,
    },

    /// No wgpu adapter was found (or none matched `RNN_WGPU_ADAPTER`).
    #[error("no GPU adapter found{0}")]
    NoAdapter(String),

    /// The adapter refused to create a device.
    #[error("could not create a device: {0}")]
    RequestDevice(#[from] wgpu::RequestDeviceError),

    /// A buffer handed in by the caller cannot be used (missing usage flags, too small).
    #[error("buffer `{name}` unusable: {why}")]
    BadBuffer {
        /// The tensor's name.
        name: String,
        /// What is wrong with it.
        why: String,
    },

    /// A tape handed to `backward` was recorded by another model (or is otherwise unusable).
    #[error("tape mismatch: {0}")]
    TapeMismatch(String),

    /// A tape handed to `backward` was recorded before the model's parameters last changed (an
    /// optimiser step or a weight upload): its activations belong to other weights.
    #[error(
        "stale tape: recorded at parameter version {tape_version}, the model is at version \
         {model_version} (run forward_train again after each parameter update)"
    )]
    StaleTape {
        /// The parameter version the tape was recorded at.
        tape_version: u64,
        /// The model's parameter version now.
        model_version: u64,
    },

    /// The device ran out of memory while creating `what` (`bytes` requested, when known).
    #[error("out of GPU memory creating {what} ({bytes} bytes)")]
    OutOfMemory {
        /// The buffer or call that failed.
        what: String,
        /// The bytes requested (0 when wgpu did not say).
        bytes: u64,
    },

    /// wgpu's validation rejected work this crate recorded: a bug of this crate, or a caller's
    /// buffer it could not check (a destroyed buffer, a buffer of another device).
    #[error("GPU validation error in {kernel}: {message}")]
    Validation {
        /// The call or kernel whose work failed.
        kernel: String,
        /// wgpu's message.
        message: String,
    },

    /// The device was lost (driver reset, `Device::destroy`, removal): every later call on this
    /// context fails with this error; make a new [`crate::Context`].
    #[error("GPU device lost: {reason}")]
    DeviceLost {
        /// What wgpu reported.
        reason: String,
    },

    /// Waiting for the GPU took longer than the context's timeout
    /// ([`crate::ContextOptions::timeout`]).
    #[error("timed out after {waited_ms} ms waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long the wait lasted.
        waited_ms: u64,
    },

    /// An invariant of this crate broke (a bug; please report it).
    #[error("internal error: {0}")]
    Internal(String),
}

/// `Result` with [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
