//! Host side of `shaders/readout.wgsl` and `shaders/readout_backward.wgsl`: the classification
//! read-out every sequence model ends in, a linear layer plus softmax cross-entropy
//! (PyTorch's `nn.Linear(H, C)` then `nn.CrossEntropyLoss()`, mean over rows), forward and
//! backward, recorded into a caller's encoder.
//!
//! The rows `F [N, H]` are whatever the model gives: `h_n [1, B, H]` for a sequence classifier
//! (many-to-one, N = B) or `y [T, B, H]` for per-step outputs (many-to-many, N = T·B). The
//! gradient of the features comes back in the features' own shape, ready to hand to
//! [`Rnn::record_backward`](crate::Rnn::record_backward) as `dh_n` or `dy`. The weights are
//! [`GpuTensor`]s that [`crate::gpu::optim`] updates in place and [`crate::gpu::clip`] clips,
//! so a whole training step (RNN forward, read-out forward and backward, RNN backward, clip,
//! optimiser) is one submission.
//!
//! ```no_run
//! # fn main() -> Result<(), rnn_wgpu::Error> {
//! use rnn_wgpu::{Context, GpuTensor};
//! use rnn_wgpu::gpu::readout::Readout;
//! let ctx = Context::new()?;
//! let readout = Readout::new(&ctx, 32, 5, 0)?;           // nn.Linear(32, 5)
//! let h_n = GpuTensor::zeros(&ctx, &[1, 8, 32])?;        // N = 8 rows of H = 32
//! let out = readout.alloc(&ctx, h_n.shape())?;
//! let mut encoder = ctx.device().create_command_encoder(&Default::default());
//! readout.record_forward(&ctx, &mut encoder, &h_n, Some(&[0, 1, 2, 3, 4, 0, 1, 2]), &out)?;
//! readout.record_backward(&ctx, &mut encoder, &h_n, &out)?; // dW, db, and dF in out
//! ctx.submit(encoder.finish())?;
//! let loss = out.loss().download(&ctx)?[0];
//! # Ok(()) }
//! ```
//!
//! CPU twins: [`crate::cpu::readout_forward`], [`crate::cpu::readout_backward`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::cpu::readout::{ReadoutShape, check_len};
use crate::error::{Error, Result};
use crate::gpu::clip::{grid_2d, tensor_entry};
use crate::gpu::context::Context;
use crate::gpu::dispatch::compute_pass;
use crate::gpu::pipelines::CachedPipeline;
use crate::gpu::shaders::Kernel;
use crate::gpu::tensor::GpuTensor;
use crate::gpu::uniforms::{Bound, BoundKey, UniformSlots};

/// Threads per workgroup of both read-out kernels (their `WG`).
const WORKGROUP_SIZE: u64 = 256;

/// One dispatch's uniforms; see `ReadoutParams` in the shaders.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct ReadoutParams {
    rows: u32,
    features: u32,
    classes: u32,
    groups: u32,
    has_targets: u32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
}

/// A linear read-out `nn.Linear(H, C)` with softmax cross-entropy, its parameters and their
/// gradients on the GPU.
pub struct Readout {
    features: usize,
    classes: usize,
    /// `[C, H]`.
    weight: GpuTensor,
    /// `[C]`.
    bias: GpuTensor,
    /// `[C, H]`.
    grad_weight: GpuTensor,
    /// `[C]`.
    grad_bias: GpuTensor,
}

/// The per-shape buffers of one [`Readout`] call over `N` rows, made once by
/// [`Readout::alloc`] and reused every step.
pub struct ReadoutBuffers {
    rows: usize,
    /// The features' shape, given to [`Readout::alloc`] (last dimension H).
    feature_shape: Vec<usize>,
    /// `[N]` u32 class indices.
    targets: wgpu::Buffer,
    /// `[N, C]`.
    probs: GpuTensor,
    /// `[N]`.
    row_loss: GpuTensor,
    /// `[1]`.
    loss: GpuTensor,
    /// The features' shape (`[.., H]`, N rows).
    grad_features: GpuTensor,
    /// Whether the last recorded forward pass had targets (backward needs them).
    has_targets: AtomicBool,
}

impl ReadoutBuffers {
    /// N: rows of features.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// `[N, C]` softmax probabilities of the last forward pass.
    pub fn probs(&self) -> &GpuTensor {
        &self.probs
    }

    /// `[N]` per-row cross-entropy `-log p[n, target[n]]` (zeros without targets).
    pub fn row_loss(&self) -> &GpuTensor {
        &self.row_loss
    }

    /// `[1]` mean cross-entropy over the rows (0 without targets).
    pub fn loss(&self) -> &GpuTensor {
        &self.loss
    }

    /// The features' gradient from the last backward pass, in the features' shape (as given
    /// to [`Readout::alloc`]): an RNN's `dh_n` or `dy`.
    pub fn grad_features(&self) -> &GpuTensor {
        &self.grad_features
    }
}

impl Readout {
    /// `nn.Linear(features, classes)` with PyTorch's default initialisation: every weight and
    /// bias uniform in `[-1/sqrt(H), 1/sqrt(H)]`, drawn from a ChaCha8 stream seeded by `seed`.
    ///
    /// Errors: [`Error::ZeroSize`] for a zero size; allocation errors from the device.
    pub fn new(ctx: &Context, features: usize, classes: usize, seed: u64) -> Result<Readout> {
        shape(1, features, classes).validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let k = 1.0 / (features as f32).sqrt();
        let mut draw =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-k..=k)).collect() };
        let weight = draw(classes * features);
        let bias = draw(classes);
        Readout::from_host(ctx, features, classes, &weight, &bias)
    }

    /// A read-out with the given `weight [C, H]` and `bias [C]` (row-major, PyTorch layout).
    ///
    /// Errors: [`Error::ZeroSize`] for a zero size, [`Error::ShapeMismatch`] naming `weight`
    /// or `bias` for a wrong length; allocation errors from the device.
    pub fn from_host(
        ctx: &Context,
        features: usize,
        classes: usize,
        weight: &[f32],
        bias: &[f32],
    ) -> Result<Readout> {
        shape(1, features, classes).validate()?;
        check_len("weight", weight.len(), &[classes, features])?;
        check_len("bias", bias.len(), &[classes])?;
        check_u32("readout classes x (features + 1)", classes, features + 1)?;
        Ok(Readout {
            features,
            classes,
            weight: GpuTensor::upload(ctx, weight, &[classes, features])?,
            bias: GpuTensor::upload(ctx, bias, &[classes])?,
            grad_weight: GpuTensor::zeros(ctx, &[classes, features])?,
            grad_bias: GpuTensor::zeros(ctx, &[classes])?,
        })
    }

    /// H: features per row.
    pub fn features(&self) -> usize {
        self.features
    }

    /// C: classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// `[C, H]` weight.
    pub fn weight(&self) -> &GpuTensor {
        &self.weight
    }

    /// `[C]` bias.
    pub fn bias(&self) -> &GpuTensor {
        &self.bias
    }

    /// `[C, H]` gradient of the weight from the last backward pass.
    pub fn grad_weight(&self) -> &GpuTensor {
        &self.grad_weight
    }

    /// `[C]` gradient of the bias from the last backward pass.
    pub fn grad_bias(&self) -> &GpuTensor {
        &self.grad_bias
    }

    /// `[weight, bias]`, in the order of [`Readout::grads`] (for an optimiser).
    pub fn parameters(&self) -> Vec<&GpuTensor> {
        vec![&self.weight, &self.bias]
    }

    /// `[grad_weight, grad_bias]`, pairing with [`Readout::parameters`].
    pub fn grads(&self) -> Vec<&GpuTensor> {
        vec![&self.grad_weight, &self.grad_bias]
    }

    /// The buffers of a call over features of shape `feature_shape` (`[.., H]`; N is the
    /// product of the leading dimensions, e.g. `[1, B, H]` or `[T, B, H]`).
    ///
    /// Errors: [`Error::ShapeMismatch`] (named `features`) unless the last dimension is H,
    /// [`Error::ZeroSize`] for N = 0, [`Error::Unsupported`] when N·C or N·H exceeds u32;
    /// allocation errors from the device.
    pub fn alloc(&self, ctx: &Context, feature_shape: &[usize]) -> Result<ReadoutBuffers> {
        let rows = self.rows_of(feature_shape)?;
        shape(rows, self.features, self.classes).validate()?;
        check_u32("readout rows x classes", rows, self.classes)?;
        check_u32("readout rows x features", rows, self.features)?;
        Ok(ReadoutBuffers {
            rows,
            feature_shape: feature_shape.to_vec(),
            targets: ctx.create_buffer(
                "readout targets",
                rows as u64 * 4,
                wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            )?,
            probs: GpuTensor::zeros(ctx, &[rows, self.classes])?,
            row_loss: GpuTensor::zeros(ctx, &[rows])?,
            loss: GpuTensor::zeros(ctx, &[1])?,
            grad_features: GpuTensor::zeros(ctx, feature_shape)?,
            has_targets: AtomicBool::new(false),
        })
    }

    /// Record the forward pass over `features` (the shape given to [`Readout::alloc`]) into
    /// `encoder`: `out.probs [N, C]`, and with `targets [N]` (class indices) `out.row_loss [N]`
    /// and `out.loss [1]`. The targets are written to the GPU at once (they reach it before
    /// the encoder's submission), so one `out` holds one set of targets per submission.
    ///
    /// Errors: [`Error::ShapeMismatch`] naming `features` or `targets`,
    /// [`Error::IndexOutOfRange`] (what: `"class"`) for a target `>= C`, and
    /// [`Error::LimitExceeded`] when a grid exceeds the device's limits.
    pub fn record_forward(
        &self,
        ctx: &Context,
        encoder: &mut wgpu::CommandEncoder,
        features: &GpuTensor,
        targets: Option<&[u32]>,
        out: &ReadoutBuffers,
    ) -> Result<()> {
        self.check_features(ctx, features, out)?;
        let n = out.rows;
        if let Some(t) = targets {
            shape(n, self.features, self.classes).check_targets(t)?;
            ctx.queue()
                .write_buffer(&out.targets, 0, bytemuck::cast_slice(t));
        }
        let base = self.params(n, targets.is_some());
        let (logits_grid, logits_groups) = grid_2d(
            ctx,
            "readout logits",
            (n * self.classes) as u32,
            WORKGROUP_SIZE,
        )?;
        let (softmax_grid, softmax_groups) =
            grid_2d(ctx, "readout softmax", n as u32, WORKGROUP_SIZE)?;
        let slots = [
            ReadoutParams {
                groups: logits_groups,
                ..base
            },
            ReadoutParams {
                groups: softmax_groups,
                ..base
            },
            ReadoutParams { groups: 1, ..base },
        ];
        let pipelines = [0, 1, 2].map(|mode| pipeline(ctx, Kernel::Readout, mode));
        let pipelines = pipelines.into_iter().collect::<Result<Vec<_>>>()?;
        let buffers = [
            features,
            &self.weight,
            &self.bias,
            &out.probs,
            &out.row_loss,
            &out.loss,
        ];
        let bound = bind(ctx, "readout forward", &pipelines, &buffers, &out.targets)?;
        bound.uniforms.write(ctx, &slots);
        out.has_targets.store(targets.is_some(), Ordering::Relaxed);
        let mut pass = compute_pass(encoder, "readout forward");
        for (mode, grid) in [logits_grid, softmax_grid, (1, 1)].into_iter().enumerate() {
            pass.set_pipeline(&pipelines[mode].pipeline);
            pass.set_bind_group(0, &bound.groups[mode], &[bound.uniforms.offset(mode)]);
            pass.dispatch_workgroups(grid.0, grid.1, 1);
        }
        Ok(())
    }

    /// Record the backward pass of the last [`Readout::record_forward`] into `out` (same
    /// `features`, recorded earlier in this or a previous submission): the gradients of the
    /// mean loss, written (not accumulated) to [`Readout::grad_weight`],
    /// [`Readout::grad_bias`] and `out.grad_features` (the features' shape).
    ///
    /// Errors: [`Error::InvalidConfig`] if that forward pass had no targets, and the shape
    /// errors of [`Readout::record_forward`].
    pub fn record_backward(
        &self,
        ctx: &Context,
        encoder: &mut wgpu::CommandEncoder,
        features: &GpuTensor,
        out: &ReadoutBuffers,
    ) -> Result<()> {
        self.check_features(ctx, features, out)?;
        if !out.has_targets.load(Ordering::Relaxed) {
            return Err(Error::InvalidConfig(
                "readout backward needs a forward pass recorded with targets".into(),
            ));
        }
        let n = out.rows;
        let base = self.params(n, true);
        let (params_grid, params_groups) = grid_2d(
            ctx,
            "readout weight gradient",
            (self.classes * (self.features + 1)) as u32,
            WORKGROUP_SIZE,
        )?;
        let (input_grid, input_groups) = grid_2d(
            ctx,
            "readout feature gradient",
            (n * self.features) as u32,
            WORKGROUP_SIZE,
        )?;
        let slots = [
            ReadoutParams {
                groups: params_groups,
                ..base
            },
            ReadoutParams {
                groups: input_groups,
                ..base
            },
        ];
        let pipelines = [0, 1].map(|mode| pipeline(ctx, Kernel::ReadoutBackward, mode));
        let pipelines = pipelines.into_iter().collect::<Result<Vec<_>>>()?;
        let buffers = [
            features,
            &self.weight,
            &out.probs,
            &self.grad_weight,
            &self.grad_bias,
            &out.grad_features,
        ];
        let bound = bind(ctx, "readout backward", &pipelines, &buffers, &out.targets)?;
        bound.uniforms.write(ctx, &slots);
        let mut pass = compute_pass(encoder, "readout backward");
        for (mode, grid) in [params_grid, input_grid].into_iter().enumerate() {
            pass.set_pipeline(&pipelines[mode].pipeline);
            pass.set_bind_group(0, &bound.groups[mode], &[bound.uniforms.offset(mode)]);
            pass.dispatch_workgroups(grid.0, grid.1, 1);
        }
        Ok(())
    }

    /// [`Readout::record_forward`] in its own submission (then read `out` with
    /// [`GpuTensor::download`]).
    pub fn forward(
        &self,
        ctx: &Context,
        features: &GpuTensor,
        targets: Option<&[u32]>,
        out: &ReadoutBuffers,
    ) -> Result<()> {
        ctx.scoped("readout forward", || {
            let mut encoder = ctx.encoder("readout forward");
            self.record_forward(ctx, &mut encoder, features, targets, out)?;
            ctx.submit(encoder.finish())?;
            Ok(())
        })
    }

    fn rows_of(&self, feature_shape: &[usize]) -> Result<usize> {
        match feature_shape.split_last() {
            Some((&h, lead)) if h == self.features => Ok(lead.iter().product()),
            _ => {
                let mut expected = feature_shape.to_vec();
                match expected.last_mut() {
                    Some(last) => *last = self.features,
                    None => expected.push(self.features),
                }
                Err(Error::ShapeMismatch {
                    name: "features".into(),
                    expected,
                    got: feature_shape.to_vec(),
                })
            }
        }
    }

    fn check_features(
        &self,
        ctx: &Context,
        features: &GpuTensor,
        out: &ReadoutBuffers,
    ) -> Result<()> {
        features.check_context(ctx, "features")?;
        if features.shape() != out.feature_shape.as_slice() {
            return Err(Error::ShapeMismatch {
                name: "features".into(),
                expected: out.feature_shape.clone(),
                got: features.shape().to_vec(),
            });
        }
        Ok(())
    }

    fn params(&self, rows: usize, has_targets: bool) -> ReadoutParams {
        ReadoutParams {
            rows: rows as u32,
            features: self.features as u32,
            classes: self.classes as u32,
            has_targets: has_targets as u32,
            scale: (1.0 / rows as f64) as f32,
            ..Default::default()
        }
    }
}

fn shape(rows: usize, features: usize, classes: usize) -> ReadoutShape {
    ReadoutShape {
        rows,
        features,
        classes,
    }
}

/// Errors: [`Error::Unsupported`] unless `a * b` fits the kernels' u32 indices.
fn check_u32(what: &str, a: usize, b: usize) -> Result<()> {
    match (a as u64).checked_mul(b as u64) {
        Some(p) if p <= u32::MAX as u64 - WORKGROUP_SIZE => Ok(()),
        _ => Err(Error::Unsupported(format!(
            "{what} = {a} x {b}; the read-out kernels index with u32"
        ))),
    }
}

fn pipeline(ctx: &Context, kernel: Kernel, mode: u32) -> Result<Arc<CachedPipeline>> {
    ctx.pipeline(kernel, &[("MODE", mode as f64)])
}

/// The uniform slots and per-mode bind groups of one call, cached by the context per set of
/// buffers: `buffers` are bindings 1..=3 and 5..=7, `targets` binding 4.
fn bind(
    ctx: &Context,
    label: &'static str,
    pipelines: &[Arc<CachedPipeline>],
    buffers: &[&GpuTensor; 6],
    targets: &wgpu::Buffer,
) -> Result<Arc<Bound>> {
    let mut key_buffers: Vec<wgpu::Buffer> = buffers.iter().map(|t| t.buffer().clone()).collect();
    key_buffers.push(targets.clone());
    let key = BoundKey {
        label,
        variant: 0,
        buffers: key_buffers,
    };
    ctx.bound(key, || {
        let uniforms = UniformSlots::new::<ReadoutParams>(ctx, label, pipelines.len())?;
        let groups = pipelines
            .iter()
            .map(|p| {
                let entries = [
                    uniforms.entry(0),
                    tensor_entry(1, buffers[0]),
                    tensor_entry(2, buffers[1]),
                    tensor_entry(3, buffers[2]),
                    wgpu::BindGroupEntry {
                        binding: 4,
                        resource: targets.as_entire_binding(),
                    },
                    tensor_entry(5, buffers[3]),
                    tensor_entry(6, buffers[4]),
                    tensor_entry(7, buffers[5]),
                ];
                ctx.create_bind_group(label, &p.layout, &entries)
            })
            .collect();
        Ok(Bound {
            uniforms,
            _scratch: Vec::new(),
            groups,
        })
    })
}
