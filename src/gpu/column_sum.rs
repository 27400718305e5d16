//! Host side of `shaders/column_sum.wgsl`: deterministic sums over rows (bias gradients).

use wgpu::util::DeviceExt;

use crate::error::{Error, Result};
use crate::gpu::context::Context;
use crate::gpu::gemm::entry;
use crate::gpu::shaders::Kernel;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ColumnSumParams {
    m: u32,
    n: u32,
    out_offset: u32,
    _pad: u32,
}

/// Record `out[out_offset + n] (+)= sum_m a[m, n]` for `a (M, N)` into `pass`.
pub(crate) fn column_sum(
    ctx: &Context,
    pass: &mut wgpu::ComputePass<'_>,
    a: &wgpu::Buffer,
    out: &wgpu::Buffer,
    out_offset: usize,
    (m, n): (usize, usize),
    accumulate: bool,
) -> Result<()> {
    assert!(a.size() >= (m * n) as u64 * 4 && out.size() >= (out_offset + n) as u64 * 4);
    let groups = (n as u64).div_ceil(64);
    let max = ctx.limits().max_compute_workgroups_per_dimension as u64;
    if groups > max {
        return Err(Error::LimitExceeded {
            limit: "max_compute_workgroups_per_dimension",
            what: "column sum (bias gradient) columns / 64".into(),
            needed: groups,
            allowed: max,
        });
    }
    let params = ctx
        .device()
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("column_sum params"),
            contents: bytemuck::bytes_of(&ColumnSumParams {
                m: m as u32,
                n: n as u32,
                out_offset: out_offset as u32,
                _pad: 0,
            }),
            usage: wgpu::BufferUsages::UNIFORM,
        });
    let cached = ctx.pipeline(
        Kernel::ColumnSum,
        &[("ACCUMULATE", accumulate as u64 as f64)],
    );
    let bind = ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("column_sum"),
        layout: &cached.layout,
        entries: &[entry(0, &params), entry(1, a), entry(2, out)],
    });
    pass.set_pipeline(&cached.pipeline);
    pass.set_bind_group(0, &bind, &[]);
    pass.dispatch_workgroups(groups as u32, 1, 1);
    Ok(())
}
