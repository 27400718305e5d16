//! Host side of `shaders/column_sum.wgsl`: deterministic sums over rows (bias gradients).

use crate::gpu::dispatch::{Buf, Dispatch, Op, bytes};
use crate::gpu::shaders::Kernel;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ColumnSumParams {
    m: u32,
    n: u32,
    out_offset: u32,
    _pad: u32,
}

/// `out[out_offset + n] (+)= sum_m a[m, n]` for `a (M, N)`. CPU twin: the bias sums of
/// [`crate::cpu::backward`].
pub(crate) fn column_sum(
    a: Buf,
    out: Buf,
    out_offset: usize,
    (m, n): (usize, usize),
    accumulate: bool,
    what: &str,
) -> Op {
    Op::Dispatch(Dispatch {
        kernel: Kernel::ColumnSum,
        constants: vec![("ACCUMULATE", accumulate as u8 as f64)],
        params: bytemuck::bytes_of(&ColumnSumParams {
            m: m as u32,
            n: n as u32,
            out_offset: out_offset as u32,
            _pad: 0,
        })
        .to_vec(),
        bindings: vec![a, out],
        grid: [n.div_ceil(64) as u32, 1, 1],
        what: format!("column_sum {what} ({m} x {n})"),
        reads: bytes(m * n),
        writes: bytes(n),
        step: None,
        dropout: None,
    })
}
