//! Host side of `shaders/column_sum.wgsl`: deterministic sums over rows (bias gradients, and
//! the reduce of split-K products).

use crate::error::{Error, Result};
use crate::gpu::context::Context;
use crate::gpu::dispatch::{Buf, Dispatch, Op, bytes, fold_grid};
use crate::gpu::shaders::Kernel;
use crate::gpu::tensor::GpuTensor;

/// Columns per workgroup (`COLS` in the shader).
const COLS: usize = 64;

/// The first level aims for at least this many workgroups (a few per compute unit of a large
/// GPU) ...
const TARGET_GROUPS: usize = 128;

/// ... while each of its row chunks keeps at least this many rows (16 per lane), so that the
/// second level stays a small fraction of the work.
const MIN_CHUNK_ROWS: usize = 64;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ColumnSumParams {
    m: u32,
    n: u32,
    out_offset: u32,
    rows_per_chunk: u32,
    also_offset: u32,
    _pad: [u32; 3],
}

/// `out[out_offset + n] (+)= sum_m a[m, n]` for `a (M, N)`. CPU twin: the bias sums of
/// [`crate::cpu::backward`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ColumnSum {
    pub a: Buf,
    pub out: Buf,
    pub out_offset: usize,
    pub m: usize,
    pub n: usize,
    /// Add into `out` instead of overwriting it.
    pub accumulate: bool,
    /// A second offset into `out` that gets (or, accumulating, adds) the same sums.
    pub also_at: Option<usize>,
}

impl ColumnSum {
    /// Row chunks of the first level: `min(ceil(TARGET_GROUPS / column tiles),
    /// ceil(M / MIN_CHUNK_ROWS))`, at least 1; then `ceil(M / chunks)` rows each. One chunk
    /// sums in one dispatch. Shapes alone decide, so the order of every sum is fixed.
    fn chunks(&self) -> (usize, usize) {
        let tiles = self.n.div_ceil(COLS).max(1);
        let chunks = TARGET_GROUPS
            .div_ceil(tiles)
            .min(self.m.div_ceil(MIN_CHUNK_ROWS))
            .max(1);
        let rows = self.m.div_ceil(chunks).max(1);
        (self.m.div_ceil(rows).max(1), rows)
    }

    /// Words of scratch [`ColumnSum::ops`] needs for the first level's partial sums (0: one
    /// level).
    pub(crate) fn scratch_words(&self) -> usize {
        match self.chunks() {
            (1, _) => 0,
            (chunks, _) => chunks * self.n,
        }
    }

    /// The dispatches: one, or the first level into `scratch` (at least
    /// [`ColumnSum::scratch_words`] words; unused with one level) and the second level adding
    /// the chunks' partial sums in chunk order. `max_x`: the device's workgroups per grid
    /// dimension.
    pub(crate) fn ops(&self, scratch: Buf, max_x: u32, what: &str) -> Vec<Op> {
        let (m, n) = (self.m, self.n);
        if n == 0 {
            return Vec::new();
        }
        let (chunks, rows) = self.chunks();
        let what = format!("column_sum {what} ({m} x {n})");
        if chunks == 1 {
            return vec![level(self, rows, 1, max_x, what)];
        }
        let first = ColumnSum {
            out: scratch,
            out_offset: 0,
            accumulate: false,
            also_at: None,
            ..*self
        };
        let second = ColumnSum {
            a: scratch,
            m: chunks,
            ..*self
        };
        vec![
            level(
                &first,
                rows,
                chunks,
                max_x,
                format!("{what}, {chunks} chunks of {rows} rows"),
            ),
            level(&second, chunks, 1, max_x, format!("{what}, the chunks")),
        ]
    }
}

/// One dispatch: `chunks` chunks of `rows` rows of `s.a` into `s.out`.
fn level(s: &ColumnSum, rows: usize, chunks: usize, max_x: u32, what: String) -> Op {
    let [gx, gy, _] = fold_grid(s.n as u64, COLS as u64, max_x);
    Op::Dispatch(Dispatch {
        kernel: Kernel::ColumnSum,
        constants: vec![
            ("ACCUMULATE", s.accumulate as u8 as f64),
            ("ALSO", s.also_at.is_some() as u8 as f64),
        ],
        params: bytemuck::bytes_of(&ColumnSumParams {
            m: s.m as u32,
            n: s.n as u32,
            out_offset: s.out_offset as u32,
            rows_per_chunk: rows as u32,
            also_offset: s.also_at.unwrap_or(0) as u32,
            _pad: [0; 3],
        })
        .to_vec(),
        bindings: vec![s.a, s.out],
        grid: [gx, gy, chunks as u32],
        what,
        reads: bytes(s.m * s.n + if s.accumulate { s.n } else { 0 }),
        writes: bytes(chunks * s.n + if s.also_at.is_some() { s.n } else { 0 }),
        step: None,
        dropout: None,
    })
}

/// Record `out [N] (+)= sum_m a [M, N]` (the bias-gradient sum on its own) into a new compute
/// pass of `encoder`; `accumulate` adds into `out`. Nothing is submitted; a tall `a` makes its
/// scratch tensor for the first level here.
///
/// Errors: [`Error::ShapeMismatch`] when `a` is not 2-D or `out` is not `[N]`,
/// [`Error::ZeroSize`] for an empty `a`, [`Error::LimitExceeded`] for a grid beyond the device.
pub fn record_column_sum(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    a: &GpuTensor,
    out: &GpuTensor,
    accumulate: bool,
) -> Result<()> {
    let &[m, n] = a.shape() else {
        return Err(Error::ShapeMismatch {
            name: "a (2-D)".into(),
            expected: vec![2],
            got: vec![a.shape().len()],
        });
    };
    if out.shape() != [n] {
        return Err(Error::ShapeMismatch {
            name: "out".into(),
            expected: vec![n],
            got: out.shape().to_vec(),
        });
    }
    for (name, v) in [("M", m), ("N", n)] {
        if v == 0 {
            return Err(Error::ZeroSize(name));
        }
    }
    let sum = ColumnSum {
        a: Buf::Scratch(0),
        out: Buf::Scratch(1),
        out_offset: 0,
        m,
        n,
        accumulate,
        also_at: None,
    };
    let scratch = match sum.scratch_words() {
        0 => None,
        w => Some(GpuTensor::uninit(ctx, "column-sum partials", &[w])?),
    };
    let mut tensors = vec![a, out];
    tensors.extend(scratch.as_ref());
    let max_x = ctx.limits().max_compute_workgroups_per_dimension;
    let ops = sum.ops(Buf::Scratch(2), max_x, "column sum");
    crate::gpu::workspace::record_once(ctx, encoder, &tensors, &ops, "column sum")
}

/// The row chunks `record_column_sum` sums `a [M, N]` in (1: one level, no scratch).
pub fn column_sum_chunks(m: usize, n: usize) -> usize {
    ColumnSum {
        a: Buf::Scratch(0),
        out: Buf::Scratch(1),
        out_offset: 0,
        m,
        n,
        accumulate: false,
        also_at: None,
    }
    .chunks()
    .0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(m: usize, n: usize) -> ColumnSum {
        ColumnSum {
            a: Buf::Scratch(0),
            out: Buf::Scratch(1),
            out_offset: 0,
            m,
            n,
            accumulate: false,
            also_at: None,
        }
    }

    #[test]
    fn chunks_cover_every_row_once() {
        for (m, n) in [
            (1, 1),
            (63, 5),
            (64, 64),
            (65, 64),
            (3200, 2048),
            (3200, 256),
            (7, 1 << 20),
        ] {
            let (chunks, rows) = sum(m, n).chunks();
            assert!(chunks >= 1 && rows >= 1, "{m} x {n}");
            assert!(
                chunks * rows >= m && (chunks - 1) * rows < m,
                "{m} x {n}: {chunks} x {rows}"
            );
        }
        // A tall, narrow matrix spreads over many workgroups; a short one stays one level.
        assert_eq!(sum(3200, 256).chunks(), (32, 100));
        assert_eq!(sum(16, 1 << 20).chunks().0, 1);
    }
}
