//! Host side of `shaders/clip.wgsl`: gradient clipping on the GPU, by global L2 norm
//! (`torch.nn.utils.clip_grad_norm_`) and by value (`torch.nn.utils.clip_grad_value_`).
//!
//! The norm is reduced in two deterministic passes (per-workgroup partial sums of squares,
//! then one workgroup adds the partials in a fixed order), so two runs on one adapter return
//! bit-identical norms. Clipping by norm reads the norm straight from the GPU buffer the
//! reduction wrote: reduction and scaling need no host round trip, and the host functions make
//! exactly one queue submission (the norm's readback rides in it).
//!
//! Every function takes any number of tensors of any shapes (zero-element tensors are
//! skipped), clips them in place, and has a `record_*` twin that records into a caller's
//! `wgpu::CommandEncoder` so a whole training step can be one submission.
//! CPU twins: [`crate::cpu::optim`].

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::context::Context;
use crate::gpu::dispatch::compute_pass;
use crate::gpu::pipelines::CachedPipeline;
use crate::gpu::shaders::Kernel;
use crate::gpu::tensor::{GpuTensor, read_back, record_readback};
use crate::gpu::uniforms::{Bound, BoundKey, UniformSlots};

/// Threads per workgroup of the clip and optimiser kernels (their `WG`).
pub(crate) const WORKGROUP_SIZE: u64 = 256;
/// Elements one workgroup folds into one partial sum in the norm's first pass (`CHUNK`).
const NORM_CHUNK: u64 = 2048;

/// Kernel variants of `shaders/clip.wgsl` (its `MODE` override).
#[derive(Debug, Clone, Copy)]
enum Mode {
    SumSquares = 0,
    ReduceNorm = 1,
    Scale = 2,
    Clamp = 3,
}

/// One dispatch's uniforms; see `ClipParams` in the shader.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct ClipParams {
    len: u32,
    groups: u32,
    partial_offset: u32,
    partial_count: u32,
    lo: f32,
    hi: f32,
    max_norm: f32,
    _pad: u32,
}

/// Clamp every element of every tensor in `grads` to `[min, max]`, in place (one submission).
///
/// `torch.nn.utils.clip_grad_value_(params, c)` is `clip_grad_value(ctx, grads, -c, c)`.
/// NaN elements stay NaN. CPU twin: [`crate::cpu::optim::clip_grad_value`].
///
/// Errors: [`Error::InvalidConfig`] if `min > max`, either bound is NaN, or a tensor appears
/// twice; [`Error::LimitExceeded`] for a tensor beyond the device's binding or dispatch limits;
/// [`Error::OutOfMemory`], [`Error::Validation`] or [`Error::DeviceLost`] if wgpu reports one.
pub fn clip_grad_value(ctx: &Context, grads: &[&GpuTensor], min: f32, max: f32) -> Result<()> {
    ctx.scoped("clip_grad_value", || {
        let mut encoder = ctx.encoder("clip_grad_value");
        record_clip_grad_value(ctx, &mut encoder, grads, min, max)?;
        ctx.submit(encoder.finish())?;
        Ok(())
    })
}

/// Record [`clip_grad_value`] into `encoder` (one compute pass, nothing submitted).
pub fn record_clip_grad_value(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    grads: &[&GpuTensor],
    min: f32,
    max: f32,
) -> Result<()> {
    if min.is_nan() || max.is_nan() || min > max {
        return Err(Error::InvalidConfig(format!(
            "clip_grad_value needs min <= max (neither NaN), got [{min}, {max}]"
        )));
    }
    let lens = check_grads(ctx, grads)?;
    let mut slots = Vec::new();
    let mut work = Vec::new();
    for (grad, &len) in grads.iter().zip(&lens) {
        if len == 0 {
            continue;
        }
        let (grid, groups) = grid_2d(ctx, "clip_grad_value workgroups", len, WORKGROUP_SIZE)?;
        work.push((*grad, grid, slots.len()));
        slots.push(ClipParams {
            len,
            groups,
            lo: min,
            hi: max,
            ..Default::default()
        });
    }
    if work.is_empty() {
        return Ok(());
    }
    let pipeline = pipeline(ctx, Mode::Clamp)?;
    let key = bound_key("clip_grad_value", &lens, work.iter().map(|w| w.0));
    let bound = ctx.bound(key, || {
        let uniforms = UniformSlots::new::<ClipParams>(ctx, "clip_grad_value params", slots.len())?;
        // The clamp never touches `partials` or `norm`; the layout still wants writable buffers.
        let placeholder = placeholder_buffer(ctx, "clip unused")?;
        let groups = work
            .iter()
            .map(|w| clip_bind_group(ctx, &pipeline, &uniforms, w.0, &placeholder, &placeholder))
            .collect();
        Ok(Bound {
            uniforms,
            _scratch: vec![placeholder],
            groups,
        })
    })?;
    bound.uniforms.write(ctx, &slots);
    let mut pass = compute_pass(encoder, "clip_grad_value");
    pass.set_pipeline(&pipeline.pipeline);
    for (k, (_, grid, slot)) in work.into_iter().enumerate() {
        pass.set_bind_group(0, &bound.groups[k], &[bound.uniforms.offset(slot)]);
        pass.dispatch_workgroups(grid.0, grid.1, 1);
    }
    Ok(())
}

/// The global L2 norm `sqrt(sum over all tensors and elements of g^2)` of `grads` (one
/// submission, then a blocking readback of the norm). An empty list has norm 0.
///
/// The sum of squares is accumulated in f32 (as PyTorch does for f32 gradients on CUDA), so it
/// overflows to `inf` once the norm passes about 1.8e19. CPU twin:
/// [`crate::cpu::optim::grad_norm`].
///
/// Errors: as [`clip_grad_value`], less the bounds.
pub fn grad_norm(ctx: &Context, grads: &[&GpuTensor]) -> Result<f32> {
    ctx.scoped("grad_norm", || {
        let norm = GpuTensor::zeros(ctx, &[1])?;
        let mut encoder = ctx.encoder("grad_norm");
        record_grad_norm(ctx, &mut encoder, grads, &norm)?;
        read_norm(ctx, encoder, &norm)
    })
}

/// Record [`grad_norm`] into `encoder`, leaving the norm in `norm` (shape `[1]`) on the GPU.
///
/// Errors: [`Error::ShapeMismatch`] if `norm` is not `[1]`, [`Error::InvalidConfig`] if it
/// aliases a gradient, and those of [`grad_norm`].
pub fn record_grad_norm(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    grads: &[&GpuTensor],
    norm: &GpuTensor,
) -> Result<()> {
    NormPlan::new(ctx, grads, norm, None)?.record(ctx, encoder, grads, norm)
}

/// Clip the gradients by their global L2 norm, with `torch.nn.utils.clip_grad_norm_`
/// semantics, and return the norm before clipping (one submission, then a blocking readback).
///
/// With `total` the norm of [`grad_norm`] and `coef = max_norm / (total + 1e-6)`, every
/// gradient is multiplied by `coef` when `coef < 1` and left alone otherwise (PyTorch multiplies
/// by `clamp(coef, max = 1)`, which is the same). A NaN norm makes every gradient NaN, as in
/// PyTorch. CPU twin: [`crate::cpu::optim::clip_grad_norm`].
///
/// Errors: [`Error::InvalidConfig`] if `max_norm` is negative or NaN, and those of
/// [`grad_norm`].
pub fn clip_grad_norm(ctx: &Context, grads: &[&GpuTensor], max_norm: f32) -> Result<f32> {
    ctx.scoped("clip_grad_norm", || {
        let norm = GpuTensor::zeros(ctx, &[1])?;
        let mut encoder = ctx.encoder("clip_grad_norm");
        record_clip_grad_norm(ctx, &mut encoder, grads, max_norm, &norm)?;
        read_norm(ctx, encoder, &norm)
    })
}

/// Record [`clip_grad_norm`] into `encoder`, leaving the norm before clipping in `norm`
/// (shape `[1]`) on the GPU. The scaling reads it there: nothing waits on the host.
///
/// Errors: those of [`clip_grad_norm`] and [`record_grad_norm`].
pub fn record_clip_grad_norm(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    grads: &[&GpuTensor],
    max_norm: f32,
    norm: &GpuTensor,
) -> Result<()> {
    if max_norm.is_nan() || max_norm < 0.0 {
        return Err(Error::InvalidConfig(format!(
            "clip_grad_norm needs max_norm >= 0, got {max_norm}"
        )));
    }
    NormPlan::new(ctx, grads, norm, Some(max_norm))?.record(ctx, encoder, grads, norm)
}

/// The dispatches of one norm (and, with `max_norm`, one clip), worked out and checked before
/// anything is recorded.
struct NormPlan {
    /// Per tensor: `(grid, uniform slot)` of its sum-of-squares dispatch, and of its scale
    /// dispatch when clipping; `None` for a zero-element tensor.
    tensors: Vec<Option<TensorDispatches>>,
    /// Total slots in `partials` (at least 1, so the buffer is never empty).
    partial_count: u32,
    slots: Vec<ClipParams>,
    reduce_slot: usize,
    clip: bool,
}

struct TensorDispatches {
    sum_squares: ((u32, u32), usize),
    scale: Option<((u32, u32), usize)>,
}

impl NormPlan {
    fn new(
        ctx: &Context,
        grads: &[&GpuTensor],
        norm: &GpuTensor,
        max_norm: Option<f32>,
    ) -> Result<NormPlan> {
        if norm.shape() != [1] {
            return Err(Error::ShapeMismatch {
                name: "norm".into(),
                expected: vec![1],
                got: norm.shape().to_vec(),
            });
        }
        let lens = check_grads(ctx, grads)?;
        if grads.iter().any(|g| g.buffer() == norm.buffer()) {
            return Err(Error::InvalidConfig(
                "the norm output aliases one of the gradients".into(),
            ));
        }
        let mut slots = Vec::new();
        let mut tensors = Vec::new();
        let mut partial_offset = 0u64;
        for &len in &lens {
            if len == 0 {
                tensors.push(None);
                continue;
            }
            let (grid, groups) = grid_2d(ctx, "grad_norm workgroups", len, NORM_CHUNK)?;
            let sum_squares = (grid, slots.len());
            slots.push(ClipParams {
                len,
                groups,
                partial_offset: partial_offset as u32,
                ..Default::default()
            });
            partial_offset += groups as u64;
            let scale = match max_norm {
                Some(max_norm) => {
                    let (grid, groups) =
                        grid_2d(ctx, "clip_grad_norm workgroups", len, WORKGROUP_SIZE)?;
                    slots.push(ClipParams {
                        len,
                        groups,
                        max_norm,
                        ..Default::default()
                    });
                    Some((grid, slots.len() - 1))
                }
                None => None,
            };
            tensors.push(Some(TensorDispatches { sum_squares, scale }));
        }
        check_binding_bytes(ctx, "grad_norm partial sums", partial_offset * 4)?;
        let partial_count = u32::try_from(partial_offset).map_err(|_| Error::LimitExceeded {
            limit: "max_storage_buffer_binding_size",
            what: "grad_norm partial sums".into(),
            needed: partial_offset * 4,
            allowed: ctx.limits().max_storage_buffer_binding_size,
        })?;
        let reduce_slot = slots.len();
        slots.push(ClipParams {
            groups: 1,
            partial_count,
            ..Default::default()
        });
        Ok(NormPlan {
            tensors,
            partial_count: partial_count.max(1),
            slots,
            reduce_slot,
            clip: max_norm.is_some(),
        })
    }

    fn record(
        &self,
        ctx: &Context,
        encoder: &mut wgpu::CommandEncoder,
        grads: &[&GpuTensor],
        norm: &GpuTensor,
    ) -> Result<()> {
        let sum_squares = pipeline(ctx, Mode::SumSquares)?;
        let reduce = pipeline(ctx, Mode::ReduceNorm)?;
        let scale = pipeline(ctx, Mode::Scale)?;
        let lens: Vec<u32> = grads.iter().map(|g| g.numel() as u32).collect();
        let mut key = bound_key("grad_norm", &lens, grads.iter().copied());
        key.buffers.push(norm.buffer().clone());
        key.variant ^= self.clip as u64;
        // Bind groups in dispatch order: sums of squares, the reduction, the scalings.
        let bound = ctx.bound(key, || {
            let uniforms =
                UniformSlots::new::<ClipParams>(ctx, "grad_norm params", self.slots.len())?;
            let partials = ctx.create_buffer(
                "grad_norm partial sums",
                self.partial_count as u64 * 4,
                wgpu::BufferUsages::STORAGE,
            )?;
            let mut groups = Vec::new();
            for (grad, plan) in grads.iter().zip(&self.tensors) {
                if plan.is_some() {
                    groups.push(clip_bind_group(
                        ctx,
                        &sum_squares,
                        &uniforms,
                        grad,
                        &partials,
                        norm.buffer(),
                    ));
                }
            }
            // The reduction's grad binding is unused; `partials` stands in for it.
            groups.push(ctx.create_bind_group(
                "grad_norm reduce",
                &reduce.layout,
                &[
                    uniforms.entry(0),
                    partials.as_entire_binding_entry(1),
                    partials.as_entire_binding_entry(2),
                    norm.buffer().as_entire_binding_entry(3),
                ],
            ));
            if self.clip {
                for (grad, plan) in grads.iter().zip(&self.tensors) {
                    if plan.is_some() {
                        groups.push(clip_bind_group(
                            ctx,
                            &scale,
                            &uniforms,
                            grad,
                            &partials,
                            norm.buffer(),
                        ));
                    }
                }
            }
            Ok(Bound {
                uniforms,
                _scratch: vec![partials],
                groups,
            })
        })?;
        let uniforms = &bound.uniforms;
        uniforms.write(ctx, &self.slots);
        let mut groups = bound.groups.iter();
        let mut next = || {
            groups
                .next()
                .ok_or_else(|| Error::Internal("clip bind groups".into()))
        };
        // Dispatches in one pass run in order, each seeing the storage writes of the last.
        let mut pass = compute_pass(encoder, "grad_norm");

        // Pass 1: partials[offset_i + w] = sum of squares of chunk w of tensor i.
        pass.set_pipeline(&sum_squares.pipeline);
        for plan in self.tensors.iter().flatten() {
            let (grid, slot) = plan.sum_squares;
            pass.set_bind_group(0, next()?, &[uniforms.offset(slot)]);
            pass.dispatch_workgroups(grid.0, grid.1, 1);
        }

        // Pass 2: one workgroup, norm = sqrt(sum of all partials in a fixed order).
        pass.set_pipeline(&reduce.pipeline);
        pass.set_bind_group(0, next()?, &[uniforms.offset(self.reduce_slot)]);
        pass.dispatch_workgroups(1, 1, 1);

        // Clip: every tensor scaled by the coefficient each thread derives from `norm`.
        if self.clip {
            pass.set_pipeline(&scale.pipeline);
            for plan in self.tensors.iter().flatten() {
                if let Some((grid, slot)) = plan.scale {
                    pass.set_bind_group(0, next()?, &[uniforms.offset(slot)]);
                    pass.dispatch_workgroups(grid.0, grid.1, 1);
                }
            }
        }
        Ok(())
    }
}

/// The cache key of a call over `tensors` of `lens` elements.
pub(crate) fn bound_key<'a>(
    label: &'static str,
    lens: &[u32],
    tensors: impl Iterator<Item = &'a GpuTensor>,
) -> BoundKey {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    lens.hash(&mut h);
    BoundKey {
        label,
        variant: h.finish(),
        buffers: tensors.map(|t| t.buffer().clone()).collect(),
    }
}

/// A whole-buffer binding.
pub(crate) trait EntireBinding {
    fn as_entire_binding_entry(&self, binding: u32) -> wgpu::BindGroupEntry<'_>;
}

impl EntireBinding for wgpu::Buffer {
    fn as_entire_binding_entry(&self, binding: u32) -> wgpu::BindGroupEntry<'_> {
        wgpu::BindGroupEntry {
            binding,
            resource: self.as_entire_binding(),
        }
    }
}

fn pipeline(ctx: &Context, mode: Mode) -> Result<Arc<CachedPipeline>> {
    ctx.pipeline(Kernel::GradClip, &[("MODE", mode as u64 as f64)])
}

fn clip_bind_group(
    ctx: &Context,
    pipeline: &CachedPipeline,
    uniforms: &UniformSlots,
    grad: &GpuTensor,
    partials: &wgpu::Buffer,
    norm: &wgpu::Buffer,
) -> wgpu::BindGroup {
    ctx.create_bind_group(
        "clip",
        &pipeline.layout,
        &[
            uniforms.entry(0),
            tensor_entry(1, grad),
            partials.as_entire_binding_entry(2),
            norm.as_entire_binding_entry(3),
        ],
    )
}

/// Element counts of `grads`, after checking that no tensor appears twice (it would be
/// counted twice in the norm and clipped twice) and that each fits one binding.
fn check_grads(ctx: &Context, grads: &[&GpuTensor]) -> Result<Vec<u32>> {
    check_distinct("gradient", grads)?;
    grads
        .iter()
        .enumerate()
        .map(|(i, g)| element_count(ctx, &format!("gradient {i}"), g))
        .collect()
}

// Helpers shared with `gpu::optim`, whose kernel has the same 256-thread elementwise shape.

/// `Err` if two of `tensors` share a buffer. (Quadratic, but lists of parameters are short.)
pub(crate) fn check_distinct(what: &str, tensors: &[&GpuTensor]) -> Result<()> {
    for (i, t) in tensors.iter().enumerate() {
        if tensors[..i].iter().any(|u| u.buffer() == t.buffer()) {
            return Err(Error::InvalidConfig(format!(
                "{what} {i} shares its buffer with an earlier {what}"
            )));
        }
    }
    Ok(())
}

/// A tensor's element count as the kernels index it (u32), checked against the largest
/// storage binding the device allows.
pub(crate) fn element_count(ctx: &Context, name: &str, t: &GpuTensor) -> Result<u32> {
    check_binding_bytes(ctx, name, t.byte_size())?;
    // The kernels form indices up to `len + NORM_CHUNK - 1` (the last workgroup's span).
    let max_len = u32::MAX as u64 - NORM_CHUNK;
    if t.numel() as u64 > max_len {
        return Err(Error::Unsupported(format!(
            "`{name}` has {} elements; the clip and optimiser kernels index with u32 \
             (at most {max_len})",
            t.numel()
        )));
    }
    Ok(t.numel() as u32)
}

fn check_binding_bytes(ctx: &Context, name: &str, bytes: u64) -> Result<()> {
    let allowed = ctx.limits().max_storage_buffer_binding_size;
    if bytes > allowed {
        return Err(Error::LimitExceeded {
            limit: "max_storage_buffer_binding_size",
            what: format!("`{name}`"),
            needed: bytes,
            allowed,
        });
    }
    Ok(())
}

/// The grid for `ceil(len / per_group)` workgroups, as `((nx, ny), groups)`: one row of up to
/// `max_compute_workgroups_per_dimension` workgroups, and as many rows as needed. The kernels
/// number workgroup (x, y) as `x + y * nx` and skip numbers at or past `groups`.
pub(crate) fn grid_2d(
    ctx: &Context,
    what: &str,
    len: u32,
    per_group: u64,
) -> Result<((u32, u32), u32)> {
    let groups = (len as u64).div_ceil(per_group);
    let max = ctx.limits().max_compute_workgroups_per_dimension as u64;
    let nx = groups.min(max).max(1);
    let ny = groups.div_ceil(nx);
    if ny > max {
        return Err(Error::LimitExceeded {
            limit: "max_compute_workgroups_per_dimension",
            what: format!("{what} ({groups} in a 2-D grid)"),
            needed: ny,
            allowed: max,
        });
    }
    Ok(((nx as u32, ny as u32), groups as u32))
}

/// Binding of exactly a tensor's elements (its buffer may be longer).
pub(crate) fn tensor_entry(binding: u32, t: &GpuTensor) -> wgpu::BindGroupEntry<'_> {
    wgpu::BindGroupEntry {
        binding,
        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: t.buffer(),
            offset: 0,
            size: wgpu::BufferSize::new(t.byte_size()),
        }),
    }
}

/// A small writable buffer for bindings a kernel variant never touches.
pub(crate) fn placeholder_buffer(ctx: &Context, label: &str) -> Result<wgpu::Buffer> {
    ctx.create_buffer(label, 16, wgpu::BufferUsages::STORAGE)
}

/// Copy the one-element `norm` into a mappable buffer within `encoder`'s submission, submit,
/// and read it back.
fn read_norm(ctx: &Context, mut encoder: wgpu::CommandEncoder, norm: &GpuTensor) -> Result<f32> {
    let readback = record_readback(ctx, &mut encoder, norm.buffer(), 4)?;
    ctx.submit(encoder.finish())?;
    Ok(read_back(ctx, readback, 4, "the norm readback")?[0])
}
