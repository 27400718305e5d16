//! # rnn-wgpu
//!
//! Portable GPU kernels for recurrent networks, written in WGSL and run through
//! [wgpu](https://docs.rs/wgpu): Vulkan, Metal, DX12, GL and WebGPU. Every GPU result is
//! measured against a plain-loop f64 CPU reference ([`cpu`]), which is the specification.
//!
//! What runs, on the GPU and in the CPU reference, forward and training (BPTT): PyTorch's
//! `nn.LSTM`, `nn.GRU` and `nn.RNN` cells plus the ONNX/cuDNN variants (GRU reset-before,
//! peepholes, coupled gates, projection, clips, every ONNX activation); any number of layers,
//! forward, reverse or bidirectional; per-row sequence lengths with PyTorch's packed-sequence
//! semantics; seq-major or batch-first layout; dropout between layers in training; streaming
//! [`Session`]s; gradient clipping ([`gpu::clip`]) and SGD/Adam ([`gpu::optim`]) on the GPU;
//! PyTorch-layout weights with safetensors import and export, and ONNX `W/R/B/P` ([`onnx`]).
//!
//! ```no_run
//! use rnn_wgpu::{Context, HostState, Rnn, RnnConfig, RunOptions, Weights};
//! # fn main() -> Result<(), rnn_wgpu::Error> {
//! let cfg = RnnConfig::lstm(16, 32).build()?;         // nn.LSTM(16, 32)
//! let weights = Weights::init(&cfg, 0);                // or Weights::load("lstm.safetensors")?
//! let ctx = Context::new()?;                           // best adapter; RNN_WGPU_ADAPTER picks one
//! let rnn = Rnn::new(&ctx, &weights)?;                // packs and uploads once
//! let (t, b) = (20, 4);
//! let x = vec![0.5f32; t * b * 16];                    // [T, B, I], seq-major
//! let h0 = vec![0.1f32; b * 32];                       // [L*D, B, H]; c0 = 0 (may be omitted)
//! let out = rnn.forward_host(&x, t, b, HostState::h(&h0), &RunOptions::default())?;
//! assert_eq!(out.y.len(), t * b * 32);                 // y [T, B, H], h_n / c_n [1, B, H]
//! # Ok(()) }
//! ```
//!
//! Stacks, lengths and streaming:
//!
//! ```no_run
//! use rnn_wgpu::{Context, Direction, GpuTensor, Layout, Rnn, RnnConfig, RunOptions, Weights};
//! # fn main() -> Result<(), rnn_wgpu::Error> {
//! let cfg = RnnConfig::gru(16, 32)                      // nn.GRU(16, 32, num_layers=2,
//!     .num_layers(2)                                    //        bidirectional=True,
//!     .direction(Direction::Bidirectional)              //        batch_first=True)
//!     .layout(Layout::BatchFirst)
//!     .build()?;
//! let ctx = Context::new()?;
//! let rnn = Rnn::new(&ctx, &Weights::init(&cfg, 0))?;
//! let x = GpuTensor::zeros(&ctx, &[3, 10, 16])?;       // [B, T, I], padded
//! let lengths = [10, 4, 7];                             // any order (enforce_sorted=False)
//! let opts = RunOptions { lengths: Some(&lengths), ..Default::default() };
//! let out = rnn.forward_with(&x, None, &opts)?;         // y [B, T, 64], zero past each length
//! assert_eq!(out.h_n.shape(), &[4, 3, 32]);             // [layers*dirs, B, H]
//!
//! let uni = RnnConfig::lstm(16, 32).num_layers(2).build()?;
//! let lstm = Rnn::new(&ctx, &Weights::init(&uni, 0))?;
//! let mut session = lstm.session(8)?;                   // 8 independent streams
//! let y_t = session.step(&GpuTensor::zeros(&ctx, &[8, 16])?)?; // [B, H]; one submission
//! session.reset(&[false, true, false, false, false, false, false, false])?; // restart row 1
//! # Ok(()) }
//! ```
//!
//! Training: [`Rnn::forward_train`] returns the outputs and a [`Tape`] kept on the GPU;
//! [`Rnn::backward`] turns upstream gradients into [`Grads`] (one submission each). Their
//! `record_*` twins ([`Rnn::record_forward_train`], [`Rnn::record_backward`], with
//! [`gpu::clip`] and [`gpu::optim`]) record into one encoder: a whole training step is one
//! submission. A tape is refused ([`Error::StaleTape`]) once the parameters have changed.
//!
//! The GPU-resident API is [`Rnn::forward`] (takes and returns [`GpuTensor`]s, one queue
//! submission per call) and [`Rnn::record_forward`] (records into a caller's
//! `wgpu::CommandEncoder`). A framework can share its device with [`Context::from_device`]
//! and its buffers with [`GpuTensor::from_buffer`].
//!
//! ## From PyTorch
//! - [`Weights::load`] reads a safetensors state_dict (`nn.LSTM`/`GRU`/`RNN`, or a cell's) and
//!   infers the configuration from its names and shapes; [`LoadOptions`] gives what a
//!   state_dict does not record (an RNN's nonlinearity, `batch_first`, dropout).
//! - [`Cell`] steps `nn.LSTMCell`/`GRUCell`/`RNNCell`: `(x [B, I], (h [B, H], c [B, H])) →
//!   (h', c')`, forward and backward.
//! - [`HostGrads::named_parameters`], [`HostGrads::named`] and [`HostGrads::save`] give the
//!   gradients under `named_parameters()` names, plus `dx`, `dh0`, `dc0`.
//! - [`init`]: PyTorch's default, Xavier/Glorot, He/Kaiming, orthogonal recurrent blocks and a
//!   forget-gate bias, seeded ([`Weights::init_with`]).
//!
//! ```no_run
//! use rnn_wgpu::{Context, HostState, Rnn, RunOptions, Weights};
//! # fn main() -> Result<(), rnn_wgpu::Error> {
//! let weights = Weights::load("lstm.safetensors")?;   // save_file(lstm.state_dict(), ...)
//! let rnn = Rnn::new(&Context::new()?, &weights)?;     // the config comes with the weights
//! let (t, b) = (20, 4);
//! let x = vec![0.5f32; t * b * weights.config().input_size()];
//! let out = rnn.forward_host(&x, t, b, HostState::zeros(), &RunOptions::default())?;
//! # Ok(()) }
//! ```
//!
//! ## Without a GPU: the same calls on the CPU reference
//! These run anywhere (they are tested as doc tests). Loading a PyTorch file and checking it
//! against the outputs PyTorch saved beside it (`scripts/gen_fixtures.py`):
//!
//! ```
//! use rnn_wgpu::{HostState, RunOptions, Weights, cpu};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let path = "tests/fixtures/lstm_small.safetensors";   // nn.LSTM(5, 7) state_dict + x, y
//! let w = Weights::load(path)?;                          // config inferred: LSTM, I = 5, H = 7
//! let bytes = std::fs::read(path)?;
//! let file = safetensors::SafeTensors::deserialize(&bytes)?;
//! let f64s = |name: &str| -> Vec<f64> {                 // inputs are f32, outputs f64
//!     let t = file.tensor(name).unwrap();
//!     match t.dtype() {
//!         safetensors::Dtype::F64 => t.data().chunks(8)
//!             .map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect(),
//!         _ => t.data().chunks(4)
//!             .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64).collect(),
//!     }
//! };
//! let (t, b) = (6, 3);                                   // x [T, B, I]
//! let (h0, c0) = (f64s("h0"), f64s("c0"));
//! let state = HostState::hc(&h0, &c0);
//! let out = cpu::stack_forward(w.config(), &w, &f64s("x"), t, b, state, &RunOptions::default())?;
//! let torch_y = f64s("y");                               // PyTorch's y, run in f64
//! let worst = out.y.iter().zip(&torch_y).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
//! assert!(worst < 1e-9, "{worst}");   // both f64 on the same f32 values: rounding only
//! # Ok(()) }
//! ```
//!
//! Loading an ONNX file (`torch.onnx.export` of a two-layer bidirectional `nn.LSTM`) and
//! checking it against the outputs onnxruntime saved beside it:
//!
//! ```
//! use rnn_wgpu::onnx::{self, Tensor};
//! # fn main() -> Result<(), rnn_wgpu::Error> {
//! let dir = "tests/fixtures/onnx_models/torch/lstm_2layer_bidir";
//! let model = onnx::load_model(format!("{dir}/model.onnx"))?; // 2 stacked LSTM nodes -> 1 model
//! assert_eq!(model.weights().config().num_layers(), 2);
//! let x = Tensor::read_pb(format!("{dir}/test_data_set_0/input_0.pb"))?;
//! let outputs = model.run_graph_cpu(&[x])?;              // the graph's own inputs and outputs
//! let y = Tensor::read_pb(format!("{dir}/test_data_set_0/output_0.pb"))?; // onnxruntime's
//! assert_eq!(outputs[0].dims, y.dims);
//! let worst = outputs[0].as_f32()?.iter().zip(y.as_f32()?)
//!     .map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
//! assert!(worst < 1e-5, "{worst}");   // f64 reference vs onnxruntime's f32: rounding only
//! # Ok(()) }
//! ```
//!
//! One cell step (`nn.LSTMCell` semantics: a one-layer model run for one step), and a whole
//! training step: forward, backward of `loss = sum(y * dy)`, one `torch.optim.Adam` step.
//!
//! ```
//! use rnn_wgpu::cpu::{self, optim::{AdamState, adam_step}};
//! use rnn_wgpu::optim::Adam;
//! use rnn_wgpu::{HostState, RnnConfig, RunOptions, Upstream, Weights};
//! # fn main() -> Result<(), rnn_wgpu::Error> {
//! let cfg = RnnConfig::lstm(3, 4).build()?;             // nn.LSTMCell(3, 4)'s shapes
//! let mut w = Weights::init(&cfg, 0);
//! let (x, h, c) = (vec![0.5; 2 * 3], vec![0.1; 2 * 4], vec![0.0; 2 * 4]); // B = 2
//! let opts = RunOptions::default();
//! let step = cpu::stack_forward(&cfg, &w, &x, 1, 2, HostState::hc(&h, &c), &opts)?;
//! let (h1, c1) = (step.h_n, step.c_n.unwrap());          // (h', c'), each [B, H]
//! assert_eq!((h1.len(), c1.len()), (8, 8));
//!
//! let (t, b) = (5, 2);
//! let xs = vec![0.3; t * b * 3];
//! let trace = cpu::stack_forward_train(&cfg, &w, &xs, t, b, HostState::zeros(), &opts)?;
//! let dy = vec![1.0; trace.y.len()];
//! let g = cpu::stack_backward(&cfg, &w, &trace, HostState::zeros(), Upstream::dy(&dy), &opts)?;
//! let layer = w.layer(0, 0)?;
//! let as64 = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
//! let mut params = vec![as64(&layer.weight_ih), as64(&layer.weight_hh)];
//! let grads = vec![g.layers[0].d_weight_ih.clone(), g.layers[0].d_weight_hh.clone()];
//! adam_step(&Adam::new(1e-2), &mut AdamState::default(), &mut params, &grads)?;
//! let layer = w.layer_mut(0, 0)?;
//! layer.weight_ih = params[0].iter().map(|&x| x as f32).collect();
//! layer.weight_hh = params[1].iter().map(|&x| x as f32).collect();
//! # Ok(()) }
//! ```
//!
//! ## The engine
//! Data flows one way: config → weights → [`Rnn`] (packed and uploaded once) → [`Plan`] (pure
//! CPU: every dispatch of a pass over symbolic buffers, validated against the device's limits;
//! print it) → [`Workspace`] (every buffer, uniform slot and bind group of the plan, made once
//! per shape and kept in a bounded per-model cache) → `record_*` (replay into an encoder) →
//! submit. After the first call of a shape, calls create no GPU object
//! ([`Context::allocation_counts`] counts them). GPU failures come back typed:
//! [`Error::OutOfMemory`], [`Error::Validation`], [`Error::DeviceLost`], [`Error::Timeout`].
//!
//! ## How the forward pass runs
//! 1. For each layer, one tiled GEMM computes the input projection `x · W_ihᵀ + b_ih` for all
//!    timesteps at once (`shaders/gemm.wgsl`).
//! 2. One fused kernel per timestep (`shaders/rnn_step.wgsl`) computes `h_{t-1} · W_hhᵀ` for
//!    all gates of a tile of hidden units, adds the projection, and applies the activations
//!    and the cell update in registers; the two directions of a layer run each step as one
//!    dispatch where the device allows 16 storage buffers per stage (else two, side by
//!    side), and rows past their length hold their state.
//! 3. `shaders/rearrange.wgsl` moves sequences between layouts, directions and lengths on the
//!    GPU; `shaders/dropout.wgsl` drops units between layers from a counter-based hash
//!    ([`dropout`]), so backward regenerates the mask instead of storing it.
//! 4. Everything is recorded into one command encoder and submitted once.
//!
//! Every fallible call returns [`Result`]; bad shapes, zero sizes and inputs beyond the
//! device's limits are typed [`Error`]s raised before any GPU work.

#![warn(missing_docs)]

pub mod config;
pub mod cpu;
pub mod dropout;
pub mod error;
pub mod gpu;
pub mod init;
pub mod onnx;
pub mod optim;
pub mod options;
pub(crate) mod validate;
pub mod weights;

pub use config::{
    Activation, Activations, CellKind, Direction, GruReset, Layout, Nonlinearity, RnnConfig,
    RnnConfigBuilder,
};
pub use error::{Error, Result};
pub use gpu::{
    AllocationCounts, Cell, CellGrads, CellState, CellTape, Context, ContextOptions, GpuTensor,
    GradMode, Grads, HostCellGrads, HostCellState, HostGrads, HostOutput, LayerGrads, Output,
    ParamGrads, Plan, PlanMode, Readout, ReadoutBuffers, Rnn, RunOptions, Session, State, Tape,
    WeightPrecision, Workspace,
};
pub use options::{HostState, Upstream};
pub use weights::{LayerWeights, LoadOptions, Weights};
