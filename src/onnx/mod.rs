//! ONNX: `.onnx` model files in and out, and the `LSTM` / `GRU` / `RNN` weight layout.
//!
//! ## Model files
//! [`load_model`] reads an `.onnx` file (protobuf, decoded with `prost`) into an
//! [`OnnxModel`]: the recurrent node (or the stack of them `torch.onnx.export` writes for a
//! multi-layer module), every attribute with the operator's defaults, and every initializer,
//! as one [`Weights`](crate::Weights) with its [`crate::RnnConfig`]. Any other graph gets an
//! [`Error::OnnxModel`](crate::Error::OnnxModel) naming the node it cannot take.
//! [`OnnxRunner`] (GPU) and [`OnnxModel::run_cpu`] (CPU reference) run it with the
//! operator's own tensors and layouts ([`OnnxInputs`] → [`OnnxOutputs`], shapes in
//! [`runner`]); [`OnnxRunner::run_graph`] / [`OnnxModel::run_graph_cpu`] take and return the
//! graph's own inputs and outputs by name. [`save_model`] writes weights as a model
//! onnxruntime runs.
//!
//! ```
//! use rnn_wgpu::{RnnConfig, Weights, onnx};
//! # fn main() -> Result<(), rnn_wgpu::Error> {
//! let cfg = RnnConfig::gru(3, 4).build()?;
//! let bytes = onnx::save_model_with(&Weights::init(&cfg, 0), &Default::default())?;
//! let model = onnx::load_model_from_bytes(&bytes)?;   // or onnx::load_model("gru.onnx")?
//! let (t, b) = (5, 2);
//! let x = vec![0.5f32; t * b * 3];                      // X [T, B, I]
//! let out = model.run_cpu(&onnx::OnnxInputs {
//!     x: &x, steps: t, batch: b, sequence_lens: None, initial_h: None, initial_c: None,
//! })?;                                                  // or onnx::OnnxRunner on the GPU
//! assert_eq!(out.y_shape, [t, 1, b, 4]);                // Y [T, D, B, H]
//! assert_eq!(out.state_shape, [1, b, 4]);               // Y_h [D, B, H]
//! # Ok(()) }
//! ```
//!
//! ## Weight layout
//! ONNX (opset 14) runs one layer per operator, with the directions stacked on the leading
//! axis (forward, then reverse). For `dirs` directions, `H = hidden_size`, `I` the layer's
//! input size and `G` gates:
//!
//! | input | shape            | LSTM (G = 4)               | GRU (G = 3)              | RNN (G = 1) |
//! |-------|------------------|----------------------------|--------------------------|-------------|
//! | `W`   | `[dirs, G*H, I]` | gates i, o, f, c           | gates z, r, h            | one block   |
//! | `R`   | `[dirs, G*H, H]` | gates i, o, f, c           | gates z, r, h            | one block   |
//! | `B`   | `[dirs, 2*G*H]`  | `Wb[iofc]` then `Rb[iofc]` | `Wb[zrh]` then `Rb[zrh]` | `Wb`, `Rb`  |
//! | `P`   | `[dirs, 3*H]`    | peepholes i, o, f          | (none)                   | (none)      |
//!
//! Ours (PyTorch) orders the LSTM gates i, f, g, o (`g` is ONNX's `c`), the GRU gates r, z, n
//! (`n` is ONNX's `h`) and the peepholes i, f, o. ONNX's `Wb` is our `bias_ih` and `Rb` our
//! `bias_hh`. Converting only permutes whole gate blocks of `H` rows (a block never changes
//! inside), so both directions of conversion are exact.
//!
//! Absent inputs: without `B` the biases are zero and without `P` the peepholes are zero, as
//! ONNX defines them. ONNX has no projection, so a configuration with `proj_size` is refused
//! ([`Error::Unsupported`](crate::Error::Unsupported)) both ways.
//!
//! ```
//! use rnn_wgpu::{RnnConfig, Weights, onnx};
//! # fn main() -> Result<(), rnn_wgpu::Error> {
//! let cfg = RnnConfig::lstm(3, 5).build()?;
//! let weights = Weights::init(&cfg, 0);
//! let o = onnx::export_layer(&weights, 0)?;
//! assert_eq!(o.w_shape, [1, 20, 3]);
//! let back = onnx::import_layer(&cfg, &o.w, &o.r, o.b.as_deref(), o.p.as_deref())?;
//! assert_eq!(back, weights);
//! # Ok(()) }
//! ```

mod attrs;
mod graph;
mod layer;
mod model;
mod proto;
pub mod runner;
mod save;
mod tensor;
mod view;

pub use layer::{OnnxWeights, export_layer, import_layer, import_layer_weights, onnx_attributes};
pub use model::{OnnxModel, load_model, load_model_from_bytes, load_model_with};
pub use runner::{OnnxInputs, OnnxOutputs, OnnxRunner};
pub use save::{OPSET, SaveOptions, save_model, save_model_with};
pub use tensor::{Tensor, TensorData};
