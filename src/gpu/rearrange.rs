//! Host side of `shaders/rearrange.wgsl` and `shaders/dropout.wgsl`: the element-wise moves
//! of a stacked model (layouts, directions, lengths, `h_n`) and dropout between layers.

use wgpu::util::DeviceExt;

use crate::error::{Error, Result};
use crate::gpu::context::Context;
use crate::gpu::gemm::entry;
use crate::gpu::shaders::Kernel;
use crate::gpu::tensor::GpuTensor;

/// Which source step a destination step `t` of row `b` reads (see `shaders/rearrange.wgsl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeMap {
    /// `t`, zero past the row's length.
    Same = 0,
    /// `len - 1 - t`, zero past the row's length: into and out of a reverse direction's frame.
    Reverse = 1,
    /// `len - 1` (the destination has one step): the last valid step, for `h_n`.
    Last = 2,
}

/// Where a `[T, B, F]` view sits in a buffer: element strides of a step and of a row, and the
/// offset of its first column.
#[derive(Debug, Clone, Copy)]
pub(crate) struct View<'a> {
    pub buf: &'a wgpu::Buffer,
    pub step: usize,
    pub row: usize,
    pub offset: usize,
}

impl<'a> View<'a> {
    /// A plain seq-major `[T, B, F]` buffer.
    pub(crate) fn seq(buf: &'a wgpu::Buffer, batch: usize, features: usize) -> View<'a> {
        View {
            buf,
            step: batch * features,
            row: features,
            offset: 0,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct RearrangeParams {
    steps: u32,
    batch: u32,
    features: u32,
    mode: u32,
    src_t: u32,
    src_b: u32,
    src_off: u32,
    groups_x: u32,
    dst_t: u32,
    dst_b: u32,
    dst_off: u32,
    _pad: u32,
}

/// Fold `n` threads (256 per workgroup) into an `(x, y)` grid under the per-dimension limit.
fn grid(ctx: &Context, n: usize, what: &str) -> Result<(u32, u32)> {
    let groups = (n as u64).div_ceil(256).max(1);
    let max = ctx.limits().max_compute_workgroups_per_dimension as u64;
    let gx = groups.min(max);
    let gy = groups.div_ceil(gx);
    if gy > max {
        return Err(Error::LimitExceeded {
            limit: "max_compute_workgroups_per_dimension",
            what: what.into(),
            needed: gy,
            allowed: max,
        });
    }
    Ok((gx as u32, gy as u32))
}

/// Record `dst[t, b, f] (+)= src[map(t, b), b, f]` for `t < steps, b < batch, f < features`,
/// zero past each row's length (`lengths`: `[B]` f32).
#[allow(clippy::too_many_arguments)]
pub(crate) fn rearrange(
    ctx: &Context,
    pass: &mut wgpu::ComputePass<'_>,
    src: View<'_>,
    dst: View<'_>,
    lengths: &wgpu::Buffer,
    map: TimeMap,
    (steps, batch, features): (usize, usize, usize),
    accumulate: bool,
) -> Result<()> {
    let (gx, gy) = grid(
        ctx,
        steps * batch * features,
        "sequence rearrangement (T*B*F / 256)",
    )?;
    let params = RearrangeParams {
        steps: steps as u32,
        batch: batch as u32,
        features: features as u32,
        mode: map as u32,
        src_t: src.step as u32,
        src_b: src.row as u32,
        src_off: src.offset as u32,
        groups_x: gx,
        dst_t: dst.step as u32,
        dst_b: dst.row as u32,
        dst_off: dst.offset as u32,
        _pad: 0,
    };
    let params = ctx
        .device()
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("rearrange params"),
            contents: bytemuck::bytes_of(&params),
            usage: wgpu::BufferUsages::UNIFORM,
        });
    let cached = ctx.pipeline(
        Kernel::Rearrange,
        &[("ACCUMULATE", accumulate as u8 as f64)],
    );
    let bind = ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("rearrange"),
        layout: &cached.layout,
        entries: &[
            entry(0, &params),
            entry(1, src.buf),
            entry(2, lengths),
            entry(3, dst.buf),
        ],
    });
    pass.set_pipeline(&cached.pipeline);
    pass.set_bind_group(0, &bind, &[]);
    pass.dispatch_workgroups(gx, gy, 1);
    Ok(())
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct DropoutParams {
    numel: u32,
    key: u32,
    threshold: u32,
    groups_x: u32,
    scale: f32,
    _pad: [u32; 3],
}

/// Record dropout of layer `layer`'s output, in place on the first `numel` elements of `buf`
/// (the mask of [`crate::dropout::mask`]).
pub(crate) fn record_dropout(
    ctx: &Context,
    pass: &mut wgpu::ComputePass<'_>,
    buf: &wgpu::Buffer,
    numel: usize,
    seed: u64,
    layer: usize,
    p: f32,
) -> Result<()> {
    if numel > u32::MAX as usize {
        return Err(Error::LimitExceeded {
            limit: "dropout index (u32)",
            what: "layer output elements".into(),
            needed: numel as u64,
            allowed: u32::MAX as u64,
        });
    }
    let (gx, gy) = grid(ctx, numel, "dropout elements / 256")?;
    let params = DropoutParams {
        numel: numel as u32,
        key: crate::dropout::key(seed, layer),
        threshold: crate::dropout::threshold(p),
        groups_x: gx,
        scale: (1.0 / (1.0 - p as f64)) as f32,
        _pad: [0; 3],
    };
    let params = ctx
        .device()
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("dropout params"),
            contents: bytemuck::bytes_of(&params),
            usage: wgpu::BufferUsages::UNIFORM,
        });
    let cached = ctx.pipeline(Kernel::Dropout, &[]);
    let bind = ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("dropout"),
        layout: &cached.layout,
        entries: &[entry(0, &params), entry(1, buf)],
    });
    pass.set_pipeline(&cached.pipeline);
    pass.set_bind_group(0, &bind, &[]);
    pass.dispatch_workgroups(gx, gy, 1);
    Ok(())
}

/// Apply the dropout mask of `(seed, layer)` with probability `p` to `x` in place, as the
/// training forward pass does to layer `layer`'s seq-major output (one submission). Lets a
/// caller inspect the mask the GPU draws: apply it to ones.
///
/// Errors: [`Error::InvalidConfig`] for `p` outside `[0, 1)`.
pub fn apply_dropout(ctx: &Context, x: &GpuTensor, seed: u64, layer: usize, p: f32) -> Result<()> {
    if !(0.0..1.0).contains(&p) {
        return Err(Error::InvalidConfig(format!(
            "dropout {p} is outside [0, 1)"
        )));
    }
    ctx.scoped(|| {
        let mut enc = ctx
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("dropout"),
            });
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("dropout"),
            timestamp_writes: None,
        });
        record_dropout(ctx, &mut pass, x.buffer(), x.numel(), seed, layer, p)?;
        drop(pass);
        ctx.submit(enc.finish());
        Ok(())
    })
}
