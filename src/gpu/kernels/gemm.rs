//! Host side of `shaders/gemm.wgsl`: the batched input projection, the per-step projection of
//! an LSTM with `proj_size`, and the large products of backward. [`record_gemm`] runs the
//! kernel on its own (benchmarks, frameworks).

use crate::error::{Error, Result};
use crate::gpu::context::Context;
use crate::gpu::dispatch::{Buf, Dispatch, Op, bytes};
use crate::gpu::shaders::Kernel;
use crate::gpu::tensor::GpuTensor;

/// Output tile edge of the GEMM kernel (rows and columns per workgroup).
pub const GEMM_TILE: u32 = 64;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GemmParams {
    m: u32,
    n: u32,
    k: u32,
    a_row_offset: u32,
    b_row_offset: u32,
    c_row_offset: u32,
    _pad: [u32; 2],
}

/// One product `c (M, N) (+)= A (M, K) · B (K, N) [+ bias (N)]`; see `shaders/gemm.wgsl` for
/// how `trans_a`/`trans_b` and the row offsets address the stored matrices.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Gemm {
    pub a: Buf,
    pub b: Buf,
    /// `(rows, N)` bias vectors summed into every row of `c`; `None`: no bias term.
    pub bias: Option<(Buf, u32)>,
    pub c: Buf,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// First row of the stored `a` (rows of `(M_total, K)`, or of `(K_total, M)` transposed).
    pub a_row_offset: usize,
    /// First row of the stored `b` (rows of `(K_total, N)`, or of `(N_total, K)` transposed).
    pub b_row_offset: usize,
    /// First row of `c` written.
    pub c_row_offset: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    /// Add into `c` instead of overwriting it.
    pub accumulate: bool,
}

impl Gemm {
    /// `c = a · b` with plain row-major operands and no offsets.
    pub(crate) fn new(a: Buf, b: Buf, c: Buf, (m, n, k): (usize, usize, usize)) -> Gemm {
        Gemm {
            a,
            b,
            bias: None,
            c,
            m,
            n,
            k,
            a_row_offset: 0,
            b_row_offset: 0,
            c_row_offset: 0,
            trans_a: false,
            trans_b: false,
            accumulate: false,
        }
    }

    /// The dispatch (`None` for an empty product). CPU twins: [`crate::cpu::input_projection`]
    /// and the weight- and input-gradient sums of [`crate::cpu::backward`].
    pub(crate) fn op(&self, what: &str) -> Option<Op> {
        let (m, n, k) = (self.m, self.n, self.k);
        if m == 0 || n == 0 {
            return None;
        }
        let tile = GEMM_TILE as usize;
        let params = GemmParams {
            m: m as u32,
            n: n as u32,
            k: k as u32,
            a_row_offset: self.a_row_offset as u32,
            b_row_offset: self.b_row_offset as u32,
            c_row_offset: self.c_row_offset as u32,
            _pad: [0; 2],
        };
        // Without a bias the binding is never read; `b` is a read-only stand-in.
        let bias = self.bias.map_or(self.b, |b| b.0);
        Some(Op::Dispatch(Dispatch {
            kernel: Kernel::Gemm,
            constants: vec![
                ("TRANS_A", self.trans_a as u8 as f64),
                ("TRANS_B", self.trans_b as u8 as f64),
                ("BIAS_ROWS", self.bias.map_or(0, |b| b.1) as f64),
                ("ACCUMULATE", self.accumulate as u8 as f64),
            ],
            params: bytemuck::bytes_of(&params).to_vec(),
            bindings: vec![self.a, self.b, bias, self.c],
            grid: [n.div_ceil(tile) as u32, m.div_ceil(tile) as u32, 1],
            what: format!("{what}: ({m} x {k}) · ({k} x {n})"),
            reads: bytes(m * k + k * n + if self.accumulate { m * n } else { 0 }),
            writes: bytes(m * n),
            step: None,
            dropout: None,
        }))
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
    a: &GpuTensor,
    b: &GpuTensor,
    bias: &GpuTensor,
    c: &GpuTensor,
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
    let op = Gemm {
        bias: Some((Buf::Scratch(2), 1)),
        ..Gemm::new(Buf::Scratch(0), Buf::Scratch(1), Buf::Scratch(3), (m, n, k))
    }
    .op("gemm")
    .expect("non-empty product");
    crate::gpu::workspace::record_once(ctx, encoder, &[a, b, bias, c], &[op], "gemm")
}
