//! Host side of `shaders/optim.wgsl`: in-place optimiser steps on the GPU with `torch.optim`
//! semantics, so a training step never leaves the device.
//!
//! - [`Sgd`] / [`SgdOptimizer`]: `torch.optim.SGD` (momentum, dampening, Nesterov, L2 weight
//!   decay; the momentum buffer starts as the first gradient).
//! - [`Adam`] / [`AdamOptimizer`]: `torch.optim.Adam` (L2 weight decay added to the gradient,
//!   bias correction, PyTorch's update order).
//!
//! An optimiser owns its state tensors on the GPU (momentum buffers, first and second
//! moments), shaped like the parameters it was built for. `step` updates every parameter in
//! place in one queue submission; `record_step` records the same work into a caller's encoder
//! (after, say, backward and [`crate::gpu::clip::record_clip_grad_norm`]). Hyper-parameters are
//! `f64`, as PyTorch's are Python floats; scalars derived from them (bias corrections, `1 -
//! beta`) are computed in f64 on the host, and the per-element arithmetic runs in f32.
//! Not covered: `maximize`, `amsgrad`, decoupled weight decay (AdamW), per-group settings.
//! CPU twins: [`crate::cpu::optim::sgd_step`], [`crate::cpu::optim::adam_step`].

use crate::error::{Error, Result};
use crate::gpu::clip::{
    EntireBinding, WORKGROUP_SIZE, bound_key, check_distinct, element_count, grid_2d,
    placeholder_buffer, tensor_entry,
};
use crate::gpu::context::Context;
use crate::gpu::dispatch::compute_pass;
use crate::gpu::shaders::Kernel;
use crate::gpu::tensor::GpuTensor;
use crate::gpu::uniforms::{Bound, UniformSlots};
use crate::optim::non_negative;
pub use crate::optim::{Adam, Sgd};

/// Values of the shader's `OPTIMIZER` override.
const SGD: u64 = 0;
const ADAM: u64 = 1;

/// One dispatch's uniforms; see `OptimParams` in the shader.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct OptimParams {
    len: u32,
    groups: u32,
    first_step: u32,
    _pad: u32,
    lr: f32,
    weight_decay: f32,
    momentum: f32,
    one_minus_dampening: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    eps: f32,
    step_size: f32,
    bias_correction2_sqrt: f32,
    _pad2: [u32; 2],
}

/// SGD over a fixed list of parameter tensors, its momentum buffers on the GPU.
#[derive(Debug)]
pub struct SgdOptimizer {
    config: Sgd,
    shapes: Vec<Vec<usize>>,
    /// One per parameter when `momentum != 0`, else empty.
    momentum_buffers: Vec<GpuTensor>,
    steps: u64,
    placeholder: wgpu::Buffer,
}

impl SgdOptimizer {
    /// An optimiser for `params` (their shapes are fixed from here on). Momentum buffers are
    /// allocated now and filled at the first step.
    ///
    /// Errors: [`Error::InvalidConfig`] from [`Sgd::validate`] or when a tensor is listed
    /// twice, [`Error::LimitExceeded`] when a parameter exceeds the device's binding size.
    pub fn new(ctx: &Context, config: Sgd, params: &[&GpuTensor]) -> Result<SgdOptimizer> {
        config.validate()?;
        let shapes = check_params(ctx, params)?;
        let momentum_buffers = if config.momentum != 0.0 {
            zeros_like(ctx, &shapes)?
        } else {
            Vec::new()
        };
        Ok(SgdOptimizer {
            config,
            shapes,
            momentum_buffers,
            steps: 0,
            placeholder: placeholder_buffer(ctx, "sgd unused state")?,
        })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &Sgd {
        &self.config
    }

    /// Change the learning rate (a schedule); the next step uses it.
    ///
    /// Errors: [`Error::InvalidConfig`] if `lr` is negative or not finite.
    pub fn set_lr(&mut self, lr: f64) -> Result<()> {
        non_negative("SGD learning rate", lr)?;
        self.config.lr = lr;
        Ok(())
    }

    /// Steps recorded so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The momentum buffers, one per parameter (empty without momentum). Meaningful after the
    /// first step.
    pub fn momentum_buffers(&self) -> &[GpuTensor] {
        &self.momentum_buffers
    }

    /// Update every parameter in place from its gradient: one submission.
    ///
    /// `params` and `grads` pair up by index and must have the shapes given to
    /// [`SgdOptimizer::new`]. Errors: [`Error::ShapeMismatch`] for a wrong count or shape,
    /// [`Error::InvalidConfig`] when a gradient aliases a parameter or a tensor is listed twice,
    /// [`Error::OutOfMemory`], [`Error::Validation`] or [`Error::DeviceLost`] if wgpu reports one.
    pub fn step(
        &mut self,
        ctx: &Context,
        params: &[&GpuTensor],
        grads: &[&GpuTensor],
    ) -> Result<()> {
        submit_step(ctx, "sgd step", |encoder| {
            self.record_step(ctx, encoder, params, grads)
        })
    }

    /// Record [`SgdOptimizer::step`] into `encoder` (one compute pass). The step counter
    /// advances now, so the encoder must be submitted before the next step is recorded.
    pub fn record_step(
        &mut self,
        ctx: &Context,
        encoder: &mut wgpu::CommandEncoder,
        params: &[&GpuTensor],
        grads: &[&GpuTensor],
    ) -> Result<()> {
        let c = &self.config;
        let uniforms = OptimParams {
            first_step: (self.steps == 0) as u32,
            lr: c.lr as f32,
            weight_decay: c.weight_decay as f32,
            momentum: c.momentum as f32,
            one_minus_dampening: (1.0 - c.dampening) as f32,
            ..Default::default()
        };
        let momentum = !self.momentum_buffers.is_empty();
        let constants = [
            ("OPTIMIZER", SGD as f64),
            ("MOMENTUM", momentum as u8 as f64),
            ("NESTEROV", c.nesterov as u8 as f64),
        ];
        let state = momentum.then_some(&self.momentum_buffers[..]);
        record_update(
            ctx,
            encoder,
            &Update {
                label: "sgd step",
                constants: &constants,
                uniforms,
                shapes: &self.shapes,
                state,
                state2: None,
                placeholder: &self.placeholder,
            },
            params,
            grads,
        )?;
        self.steps += 1;
        Ok(())
    }
}

/// Adam over a fixed list of parameter tensors, its moments on the GPU.
#[derive(Debug)]
pub struct AdamOptimizer {
    config: Adam,
    shapes: Vec<Vec<usize>>,
    exp_avg: Vec<GpuTensor>,
    exp_avg_sq: Vec<GpuTensor>,
    steps: u64,
    placeholder: wgpu::Buffer,
}

impl AdamOptimizer {
    /// An optimiser for `params` (their shapes are fixed from here on), with zeroed moments.
    ///
    /// Errors: [`Error::InvalidConfig`] from [`Adam::validate`] or when a tensor is listed
    /// twice, [`Error::LimitExceeded`] when a parameter exceeds the device's binding size.
    pub fn new(ctx: &Context, config: Adam, params: &[&GpuTensor]) -> Result<AdamOptimizer> {
        config.validate()?;
        let shapes = check_params(ctx, params)?;
        Ok(AdamOptimizer {
            config,
            exp_avg: zeros_like(ctx, &shapes)?,
            exp_avg_sq: zeros_like(ctx, &shapes)?,
            shapes,
            steps: 0,
            placeholder: placeholder_buffer(ctx, "adam unused state")?,
        })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &Adam {
        &self.config
    }

    /// Change the learning rate (a schedule); the next step uses it.
    ///
    /// Errors: [`Error::InvalidConfig`] if `lr` is negative or not finite.
    pub fn set_lr(&mut self, lr: f64) -> Result<()> {
        non_negative("Adam learning rate", lr)?;
        self.config.lr = lr;
        Ok(())
    }

    /// Steps recorded so far (PyTorch's `state["step"]`).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// First moments (`exp_avg`), one per parameter.
    pub fn exp_avg(&self) -> &[GpuTensor] {
        &self.exp_avg
    }

    /// Second moments (`exp_avg_sq`), one per parameter.
    pub fn exp_avg_sq(&self) -> &[GpuTensor] {
        &self.exp_avg_sq
    }

    /// Update every parameter in place from its gradient: one submission.
    ///
    /// `params` and `grads` pair up by index and must have the shapes given to
    /// [`AdamOptimizer::new`]. Errors: as [`SgdOptimizer::step`].
    pub fn step(
        &mut self,
        ctx: &Context,
        params: &[&GpuTensor],
        grads: &[&GpuTensor],
    ) -> Result<()> {
        submit_step(ctx, "adam step", |encoder| {
            self.record_step(ctx, encoder, params, grads)
        })
    }

    /// Record [`AdamOptimizer::step`] into `encoder` (one compute pass). The step counter
    /// advances now, so the encoder must be submitted before the next step is recorded.
    pub fn record_step(
        &mut self,
        ctx: &Context,
        encoder: &mut wgpu::CommandEncoder,
        params: &[&GpuTensor],
        grads: &[&GpuTensor],
    ) -> Result<()> {
        let c = &self.config;
        // As torch.optim.Adam computes them, in double precision on the host.
        let step = (self.steps + 1) as f64;
        let bias_correction1 = 1.0 - c.beta1.powf(step);
        let bias_correction2 = 1.0 - c.beta2.powf(step);
        let uniforms = OptimParams {
            weight_decay: c.weight_decay as f32,
            one_minus_beta1: (1.0 - c.beta1) as f32,
            beta2: c.beta2 as f32,
            one_minus_beta2: (1.0 - c.beta2) as f32,
            eps: c.eps as f32,
            step_size: (c.lr / bias_correction1) as f32,
            bias_correction2_sqrt: bias_correction2.sqrt() as f32,
            ..Default::default()
        };
        record_update(
            ctx,
            encoder,
            &Update {
                label: "adam step",
                constants: &[("OPTIMIZER", ADAM as f64)],
                uniforms,
                shapes: &self.shapes,
                state: Some(&self.exp_avg),
                state2: Some(&self.exp_avg_sq),
                placeholder: &self.placeholder,
            },
            params,
            grads,
        )?;
        self.steps += 1;
        Ok(())
    }
}

/// Everything one optimiser step needs besides the tensors.
struct Update<'a> {
    label: &'static str,
    constants: &'a [(&'static str, f64)],
    /// The uniforms every parameter shares; `len` and `groups` are filled per parameter.
    uniforms: OptimParams,
    /// The parameter shapes the optimiser was built for.
    shapes: &'a [Vec<usize>],
    state: Option<&'a [GpuTensor]>,
    state2: Option<&'a [GpuTensor]>,
    placeholder: &'a wgpu::Buffer,
}

/// Run `record` on a new encoder and submit it: the `step` of both optimisers.
fn submit_step(
    ctx: &Context,
    label: &str,
    record: impl FnOnce(&mut wgpu::CommandEncoder) -> Result<()>,
) -> Result<()> {
    ctx.scoped(label, || {
        let mut encoder = ctx.encoder(label);
        record(&mut encoder)?;
        ctx.submit(encoder.finish())?;
        Ok(())
    })
}

/// Check `params` and `grads` against the optimiser's shapes, then record one dispatch of
/// `shaders/optim.wgsl` per non-empty parameter, all in one compute pass: the `record_step` of
/// both optimisers, less the uniforms and state each brings.
fn record_update(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    u: &Update<'_>,
    params: &[&GpuTensor],
    grads: &[&GpuTensor],
) -> Result<()> {
    let lens = check_step(ctx, u.shapes, params, grads)?;
    let mut slots = Vec::new();
    let mut work = Vec::new();
    for (i, &len) in lens.iter().enumerate() {
        if len == 0 {
            continue;
        }
        let (grid, groups) = grid_2d(ctx, "optimiser step workgroups", len, WORKGROUP_SIZE)?;
        work.push((i, grid, slots.len()));
        slots.push(OptimParams {
            len,
            groups,
            ..u.uniforms
        });
    }
    if work.is_empty() {
        return Ok(());
    }
    let pipeline = ctx.pipeline(Kernel::OptimizerStep, u.constants)?;
    let mut key = bound_key(u.label, &lens, grads.iter().chain(params).copied());
    for &(i, ..) in &work {
        for s in [u.state, u.state2] {
            key.buffers
                .push(s.map_or(u.placeholder, |s| s[i].buffer()).clone());
        }
    }
    let bound = ctx.bound(key, || {
        let uniforms = UniformSlots::new::<OptimParams>(ctx, u.label, slots.len())?;
        let groups = work
            .iter()
            .map(|&(i, ..)| {
                ctx.create_bind_group(
                    u.label,
                    &pipeline.layout,
                    &[
                        uniforms.entry(0),
                        tensor_entry(1, grads[i]),
                        tensor_entry(2, params[i]),
                        state_entry(3, u.state, i, u.placeholder),
                        state_entry(4, u.state2, i, u.placeholder),
                    ],
                )
            })
            .collect();
        Ok(Bound {
            uniforms,
            _scratch: Vec::new(),
            groups,
        })
    })?;
    bound.uniforms.write(ctx, &slots);
    let mut pass = compute_pass(encoder, u.label);
    pass.set_pipeline(&pipeline.pipeline);
    for (k, (_, grid, slot)) in work.into_iter().enumerate() {
        pass.set_bind_group(0, &bound.groups[k], &[bound.uniforms.offset(slot)]);
        pass.dispatch_workgroups(grid.0, grid.1, 1);
    }
    // Each model whose parameters this step updates moves to a new version (once per step):
    // tapes recorded before it go stale.
    let mut bumped: Vec<&std::sync::Arc<std::sync::atomic::AtomicU64>> = Vec::new();
    for v in params.iter().filter_map(|p| p.version_counter()) {
        if !bumped.iter().any(|b| std::sync::Arc::ptr_eq(b, v)) {
            v.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            bumped.push(v);
        }
    }
    Ok(())
}

/// Binding of parameter `i`'s optimiser state, or of the placeholder when the variant has none.
fn state_entry<'a>(
    binding: u32,
    state: Option<&'a [GpuTensor]>,
    i: usize,
    placeholder: &'a wgpu::Buffer,
) -> wgpu::BindGroupEntry<'a> {
    match state {
        Some(s) => tensor_entry(binding, &s[i]),
        None => placeholder.as_entire_binding_entry(binding),
    }
}

/// The parameters' shapes, after checking they are distinct and each fits one binding.
fn check_params(ctx: &Context, params: &[&GpuTensor]) -> Result<Vec<Vec<usize>>> {
    check_distinct("parameter", params)?;
    for (i, p) in params.iter().enumerate() {
        element_count(ctx, &format!("parameter {i}"), p)?;
    }
    Ok(params.iter().map(|p| p.shape().to_vec()).collect())
}

fn zeros_like(ctx: &Context, shapes: &[Vec<usize>]) -> Result<Vec<GpuTensor>> {
    shapes.iter().map(|s| GpuTensor::zeros(ctx, s)).collect()
}

/// Element counts of a step's tensors, after checking counts, shapes and aliasing against the
/// shapes the optimiser was built for.
fn check_step(
    ctx: &Context,
    shapes: &[Vec<usize>],
    params: &[&GpuTensor],
    grads: &[&GpuTensor],
) -> Result<Vec<u32>> {
    for (name, got) in [
        ("params (count)", params.len()),
        ("grads (count)", grads.len()),
    ] {
        if got != shapes.len() {
            return Err(Error::ShapeMismatch {
                name: name.into(),
                expected: vec![shapes.len()],
                got: vec![got],
            });
        }
    }
    for (i, shape) in shapes.iter().enumerate() {
        for (name, t) in [("param", params[i]), ("grad", grads[i])] {
            if t.shape() != shape.as_slice() {
                return Err(Error::ShapeMismatch {
                    name: format!("{name} {i}"),
                    expected: shape.clone(),
                    got: t.shape().to_vec(),
                });
            }
        }
    }
    check_distinct("parameter", params)?;
    // A gradient read after its buffer was updated as a parameter would be silently wrong.
    if let Some(i) =
        (0..grads.len()).find(|&i| params.iter().any(|p| p.buffer() == grads[i].buffer()))
    {
        return Err(Error::InvalidConfig(format!(
            "grad {i} shares its buffer with a parameter"
        )));
    }
    params
        .iter()
        .enumerate()
        .map(|(i, p)| element_count(ctx, &format!("parameter {i}"), p))
        .collect()
}
