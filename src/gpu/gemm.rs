//! Host side of `shaders/gemm.wgsl`: the batched input projection, and [`record_gemm`] to
//! run the kernel on its own (benchmarks, frameworks).

use wgpu::util::DeviceExt;

use crate::error::{Error, Result};
use crate::gpu::context::Context;
use crate::gpu::shaders::Kernel;

/// Output tile edge of the GEMM kernel (rows and columns per workgroup).
pub const GEMM_TILE: u32 = 64;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GemmParams {
    m: u32,
    n: u32,
    k: u32,
    a_row_offset: u32,
}

/// Buffers of one projection: `c (M, N) = a[a_row_offset..][..M] (·, K) · b (K, N) + bias (N)`.
pub(crate) struct InputProjection<'a> {
    pub a: &'a wgpu::Buffer,
    pub b: &'a wgpu::Buffer,
    pub bias: &'a wgpu::Buffer,
    pub c: &'a wgpu::Buffer,
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub a_row_offset: u32,
}

/// Record `input_projection` into `pass`. CPU twin: [`crate::cpu::input_projection`].
///
/// Checks the dispatch against `max_compute_workgroups_per_dimension` and every buffer against
/// the extent the kernel will touch, so a bad call is an `Error`, never a GPU fault.
pub(crate) fn input_projection(
    ctx: &Context,
    pass: &mut wgpu::ComputePass<'_>,
    args: &InputProjection<'_>,
) -> Result<()> {
    let InputProjection {
        m,
        n,
        k,
        a_row_offset,
        ..
    } = *args;
    let grid = (n.div_ceil(GEMM_TILE), m.div_ceil(GEMM_TILE));
    let max = ctx.limits().max_compute_workgroups_per_dimension;
    for (what, count) in [("gemm columns", grid.0), ("gemm rows", grid.1)] {
        if count > max {
            return Err(Error::LimitExceeded {
                limit: "max_compute_workgroups_per_dimension",
                what: what.into(),
                needed: count as u64,
                allowed: max as u64,
            });
        }
    }
    let need = |words: u64| words * 4;
    assert!(args.a.size() >= need((a_row_offset as u64 + m as u64) * k as u64));
    assert!(args.b.size() >= need(k as u64 * n as u64));
    assert!(args.bias.size() >= need(n as u64));
    assert!(args.c.size() >= need(m as u64 * n as u64));

    let params = ctx
        .device()
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("gemm params"),
            contents: bytemuck::bytes_of(&GemmParams {
                m,
                n,
                k,
                a_row_offset,
            }),
            usage: wgpu::BufferUsages::UNIFORM,
        });
    let cached = ctx.pipeline(Kernel::Gemm, &[]);
    let bind = ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("gemm"),
        layout: &cached.layout,
        entries: &[
            entry(0, &params),
            entry(1, args.a),
            entry(2, args.b),
            entry(3, args.bias),
            entry(4, args.c),
        ],
    });
    pass.set_pipeline(&cached.pipeline);
    pass.set_bind_group(0, &bind, &[]);
    pass.dispatch_workgroups(grid.0, grid.1, 1);
    Ok(())
}

/// A whole-buffer binding.
pub(crate) fn entry(binding: u32, buffer: &wgpu::Buffer) -> wgpu::BindGroupEntry<'_> {
    wgpu::BindGroupEntry {
        binding,
        resource: buffer.as_entire_binding(),
    }
}

/// Record `c [M, N] = a [M, K] · b [K, N] + bias [N]` (the input-projection GEMM on its own)
/// into a new compute pass of `encoder`. Nothing is submitted.
///
/// Errors: [`Error::ShapeMismatch`] when the shapes do not chain, [`Error::ZeroSize`] for an
/// empty dimension, [`Error::LimitExceeded`] for a grid beyond
/// `max_compute_workgroups_per_dimension`.
pub fn record_gemm(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    a: &crate::gpu::GpuTensor,
    b: &crate::gpu::GpuTensor,
    bias: &crate::gpu::GpuTensor,
    c: &crate::gpu::GpuTensor,
) -> Result<()> {
    let (&[m, k], &[kb, n]) = (a.shape(), b.shape()) else {
        return Err(Error::ShapeMismatch {
            name: "a/b (2-D)".into(),
            expected: vec![2],
            got: vec![a.shape().len(), b.shape().len()],
        });
    };
    let mismatch = |name: &str, expected: Vec<usize>, got: &[usize]| Error::ShapeMismatch {
        name: name.into(),
        expected,
        got: got.to_vec(),
    };
    if kb != k {
        return Err(mismatch("b", vec![k, n], b.shape()));
    }
    if bias.shape() != [n] {
        return Err(mismatch("bias", vec![n], bias.shape()));
    }
    if c.shape() != [m, n] {
        return Err(mismatch("c", vec![m, n], c.shape()));
    }
    for (name, v) in [("M", m), ("N", n), ("K", k)] {
        if v == 0 {
            return Err(Error::ZeroSize(name));
        }
    }
    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some("gemm"),
        timestamp_writes: None,
    });
    input_projection(
        ctx,
        &mut pass,
        &InputProjection {
            a: a.buffer(),
            b: b.buffer(),
            bias: bias.buffer(),
            c: c.buffer(),
            m: m as u32,
            n: n as u32,
            k: k as u32,
            a_row_offset: 0,
        },
    )
}
