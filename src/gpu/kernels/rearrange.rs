//! Host side of `shaders/rearrange.wgsl`: the element-wise moves of a stacked model (layouts,
//! directions, lengths, `h_n`).

use crate::gpu::dispatch::{Buf, Dispatch, Op, bytes, fold_grid};
use crate::gpu::shaders::Kernel;

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
pub(crate) struct View {
    pub buf: Buf,
    pub step: usize,
    pub row: usize,
    pub offset: usize,
}

impl View {
    /// A plain seq-major `[T, B, F]` buffer.
    pub(crate) fn seq(buf: Buf, batch: usize, features: usize) -> View {
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

/// `dst[t, b, f] (+)= src[map(t, b), b, f]` for `t < steps, b < batch, f < features`, zero past
/// each row's length (`lengths`: `[B]` f32). CPU twin: the row gathers of [`crate::cpu::stack`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn rearrange(
    src: View,
    dst: View,
    lengths: Buf,
    map: TimeMap,
    (steps, batch, features): (usize, usize, usize),
    accumulate: bool,
    max_x: u32,
    what: &str,
) -> Op {
    let n = steps * batch * features;
    let grid = fold_grid(n as u64, 256, max_x);
    let params = RearrangeParams {
        steps: steps as u32,
        batch: batch as u32,
        features: features as u32,
        mode: map as u32,
        src_t: src.step as u32,
        src_b: src.row as u32,
        src_off: src.offset as u32,
        groups_x: grid[0],
        dst_t: dst.step as u32,
        dst_b: dst.row as u32,
        dst_off: dst.offset as u32,
        _pad: 0,
    };
    Op::Dispatch(Dispatch {
        kernel: Kernel::Rearrange,
        constants: vec![("ACCUMULATE", accumulate as u8 as f64)],
        params: bytemuck::bytes_of(&params).to_vec(),
        bindings: vec![src.buf, lengths, dst.buf],
        grid,
        what: format!("rearrange {what} ({steps} x {batch} x {features}, {map:?})"),
        reads: bytes(n + batch + if accumulate { n } else { 0 }),
        writes: bytes(n),
        step: None,
        dropout: None,
    })
}
