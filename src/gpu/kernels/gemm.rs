//! Host side of `shaders/gemm.wgsl`: the batched input projection, the per-step projection of
//! an LSTM with `proj_size`, and the large products of backward. [`record_gemm`] runs the
//! kernel on its own (benchmarks, frameworks).

use crate::error::{Error, Result};
use crate::gpu::context::Context;
use crate::gpu::dispatch::{Buf, Dispatch, Op, bytes};
use crate::gpu::kernels::column_sum::ColumnSum;
use crate::gpu::shaders::Kernel;
use crate::gpu::tensor::GpuTensor;

/// Output rows per workgroup of the GEMM kernel.
pub const GEMM_TILE: u32 = 64;

/// Output columns per workgroup of the GEMM kernel.
pub const GEMM_TILE_COLS: u32 = 128;

/// K per slab of the kernel (`BK` in `shaders/gemm.wgsl`).
const SLAB: usize = 16;

/// Split-K aims for at least this many workgroups: a few per compute unit of a large GPU
/// (an H100 has 132).
const SPLIT_K_GROUPS: usize = 128;

/// At most this many K chunks: the partial products cost `S * M * N` words of scratch and a
/// reduce pass that reads them all.
const SPLIT_K_MAX: usize = 16;

/// Each K chunk keeps at least this many slabs, so that a workgroup's prologue (the first
/// slab's loads) and epilogue (its partial tile's stores) stay small next to its K loop.
const SPLIT_K_MIN_SLABS: usize = 8;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GemmParams {
    m: u32,
    n: u32,
    k: u32,
    a_row_offset: u32,
    b_row_offset: u32,
    c_row_offset: u32,
    k_split: u32,
    _pad: u32,
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
    /// A read-only buffer of at least 16 bytes, bound to the vec4 view of an operand that is
    /// read as scalars (`a4`/`b4` of the shader, which are then never read).
    pub stand_in: Buf,
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
            stand_in: Buf::Unused(0),
        }
    }

    /// Whether each operand is read as vec4s: when its stored rows (the contiguous axis) hold
    /// a multiple of 4 floats. Then every row offset is a multiple of 4 floats too, so each
    /// run of 4 the kernel loads is one 16-byte-aligned vec4 wholly inside the matrix, and the
    /// matrix ends at a multiple of 4 floats, inside the binding's whole vec4s.
    fn vec4(&self) -> (bool, bool) {
        let a_row = if self.trans_a { self.m } else { self.k };
        let b_row = if self.trans_b { self.k } else { self.n };
        (a_row % 4 == 0, b_row % 4 == 0)
    }

    /// The dispatch of `z_count` workgroup layers of `k_split` K each into `c` from row
    /// `c_row_offset` (layer z at `c_row_offset + z * M`).
    fn dispatch(&self, what: String, k_split: usize, z_count: usize) -> Dispatch {
        let (m, n, k) = (self.m, self.n, self.k);
        let params = GemmParams {
            m: m as u32,
            n: n as u32,
            k: k as u32,
            a_row_offset: self.a_row_offset as u32,
            b_row_offset: self.b_row_offset as u32,
            c_row_offset: self.c_row_offset as u32,
            k_split: k_split as u32,
            _pad: 0,
        };
        let (vec_a, vec_b) = self.vec4();
        // Without a bias the binding is never read; `b` is a read-only stand-in.
        let bias = self.bias.map_or(self.b, |b| b.0);
        Dispatch {
            kernel: Kernel::Gemm,
            constants: vec![
                ("TRANS_A", self.trans_a as u8 as f64),
                ("TRANS_B", self.trans_b as u8 as f64),
                ("BIAS_ROWS", self.bias.map_or(0, |b| b.1) as f64),
                ("ACCUMULATE", self.accumulate as u8 as f64),
                ("VEC4_A", vec_a as u8 as f64),
                ("VEC4_B", vec_b as u8 as f64),
            ],
            params: bytemuck::bytes_of(&params).to_vec(),
            bindings: vec![
                self.a,
                if vec_a { self.a } else { self.stand_in },
                self.b,
                if vec_b { self.b } else { self.stand_in },
                bias,
                self.c,
            ],
            grid: [
                n.div_ceil(GEMM_TILE_COLS as usize) as u32,
                m.div_ceil(GEMM_TILE as usize) as u32,
                z_count as u32,
            ],
            what,
            reads: bytes(m * k + k * n + if self.accumulate { m * n } else { 0 }),
            writes: bytes(z_count * m * n),
            step: None,
            dropout: None,
        }
    }

    /// The dispatch (`None` for an empty product). CPU twins: [`crate::cpu::input_projection`]
    /// and the weight- and input-gradient sums of [`crate::cpu::backward`].
    pub(crate) fn op(&self, what: &str) -> Option<Op> {
        let (m, n, k) = (self.m, self.n, self.k);
        if m == 0 || n == 0 {
            return None;
        }
        let what = format!("{what}: ({m} x {k}) · ({k} x {n})");
        Some(Op::Dispatch(self.dispatch(what, k.max(1), 1)))
    }

    /// Split-K: `(S, K per chunk)` for this product; `S = 1` runs it whole. A product without
    /// bias whose output has at most half of [`SPLIT_K_GROUPS`] tiles (the weight gradients, where
    /// `K = T*B` is large and `M x N` a weight's shape) is cut into
    /// `S = min(ceil(SPLIT_K_GROUPS / tiles), SPLIT_K_MAX, K / (SPLIT_K_MIN_SLABS * 16))`
    /// chunks of whole slabs. The rule reads only the shapes, so a given problem always sums
    /// in the same order.
    pub(crate) fn split_k(&self) -> (usize, usize) {
        let (m, n, k) = (self.m, self.n, self.k);
        let tiles = m.div_ceil(GEMM_TILE as usize) * n.div_ceil(GEMM_TILE_COLS as usize);
        // Above half the target, doubling the workgroups would not add a whole wave of them
        // (S = 2 of 100 tiles leaves the same longest queue on a 132-SM GPU) but would add
        // the partial products' writes and reads: such a product runs whole.
        if self.bias.is_some() || tiles == 0 || 2 * tiles > SPLIT_K_GROUPS {
            return (1, k);
        }
        let want = SPLIT_K_GROUPS
            .div_ceil(tiles)
            .min(SPLIT_K_MAX)
            .min(k / (SPLIT_K_MIN_SLABS * SLAB));
        if want <= 1 {
            return (1, k);
        }
        let k_split = k.div_ceil(want).next_multiple_of(SLAB);
        (k.div_ceil(k_split), k_split)
    }

    /// Words of scratch [`Gemm::split_ops`] needs (0: the product runs whole).
    pub(crate) fn split_words(&self) -> usize {
        match self.split_k() {
            (1, _) => 0,
            (s, _) => s * self.m * self.n,
        }
    }

    /// The product as split-K chooses ([`Gemm::split_k`]): one dispatch, or a dispatch writing
    /// `S` partial products into `partials` (at least [`Gemm::split_words`] words) and a
    /// column sum adding them up in the order `s = 0, 1, ..` into `c`. `max_x`: the device's
    /// workgroups per grid dimension.
    pub(crate) fn split_ops(&self, partials: Buf, max_x: u32, what: &str) -> Vec<Op> {
        let (m, n, k) = (self.m, self.n, self.k);
        let (s, k_split) = self.split_k();
        if s == 1 {
            return self.op(what).into_iter().collect();
        }
        let parts = Gemm {
            c: partials,
            c_row_offset: 0,
            accumulate: false,
            ..*self
        };
        let what = format!("{what}: ({m} x {k}) · ({k} x {n}), split-K {s} x {k_split}");
        let reduce = ColumnSum {
            a: partials,
            out: self.c,
            out_offset: self.c_row_offset * n,
            m: s,
            n: m * n,
            accumulate: self.accumulate,
            also_at: None,
        };
        debug_assert_eq!(reduce.scratch_words(), 0, "S rows need one level");
        let mut ops = vec![Op::Dispatch(parts.dispatch(what.clone(), k_split, s))];
        ops.extend(reduce.ops(partials, max_x, &format!("{what} (reduce)")));
        ops
    }
}

/// How [`record_gemm_with`] reads its operands and writes its product.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GemmOptions {
    /// `a` is stored transposed, `(K, M)`.
    pub trans_a: bool,
    /// `b` is stored transposed, `(N, K)`.
    pub trans_b: bool,
    /// Add the product into `c` instead of overwriting it.
    pub accumulate: bool,
    /// Split K as the backward pass does for its weight gradients ([`split_k_chunks`]): a
    /// dispatch of partial products into a scratch tensor made for this call, then a reduce
    /// adding them up in a fixed order. Ignored with a bias.
    pub split_k: bool,
}

/// The K chunks split-K uses for a bias-free `(M x K) · (K x N)` product (1: none): at least
/// 128 workgroups when the `M x N` output has at most 64 tiles of 64 x 128, at most 16 chunks, each of
/// at least 128 of K (8 slabs of 16). Shapes alone decide it, so a given product always sums
/// in the same order.
pub fn split_k_chunks(m: usize, n: usize, k: usize) -> usize {
    Gemm::new(Buf::Scratch(0), Buf::Scratch(1), Buf::Scratch(2), (m, n, k))
        .split_k()
        .0
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
    record_gemm_with(ctx, encoder, a, b, Some(bias), c, GemmOptions::default())
}

/// Record `c [M, N] (+)= A · B (+ bias)` into a new compute pass of `encoder`, the product the
/// forward and backward passes use: `A` is `a [M, K]` (`a [K, M]` transposed), `B` is
/// `b [K, N]` (`b [N, K]` transposed), and `bias` is `[N]` or `[2, N]` (two rows, both added,
/// as an LSTM's `b_ih` and `b_hh`). Nothing is submitted; a split-K product makes its scratch
/// tensor here.
///
/// Errors: as [`record_gemm`].
pub fn record_gemm_with(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    a: &GpuTensor,
    b: &GpuTensor,
    bias: Option<&GpuTensor>,
    c: &GpuTensor,
    opts: GemmOptions,
) -> Result<()> {
    let (&[a0, a1], &[b0, b1]) = (a.shape(), b.shape()) else {
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
    let (m, k) = if opts.trans_a { (a1, a0) } else { (a0, a1) };
    let (kb, n) = if opts.trans_b { (b1, b0) } else { (b0, b1) };
    if kb != k {
        let want = if opts.trans_b { vec![n, k] } else { vec![k, n] };
        return Err(mismatch("b", want, b.shape()));
    }
    let bias_rows = match bias.map(|t| t.shape()) {
        None => 0,
        Some(&[bn]) if bn == n => 1,
        Some(&[2, bn]) if bn == n => 2,
        Some(got) => return Err(mismatch("bias", vec![n], got)),
    };
    if c.shape() != [m, n] {
        return Err(mismatch("c", vec![m, n], c.shape()));
    }
    for (name, v) in [("M", m), ("N", n), ("K", k)] {
        if v == 0 {
            return Err(Error::ZeroSize(name));
        }
    }
    // Scratch indices: a, b, c, then bias, the vec4 stand-in and split-K's partials as needed.
    let mut tensors = vec![a, b, c];
    let bias = bias.map(|t| {
        tensors.push(t);
        (Buf::Scratch(tensors.len() as u32 - 1), bias_rows)
    });
    let gemm = Gemm {
        bias,
        trans_a: opts.trans_a,
        trans_b: opts.trans_b,
        accumulate: opts.accumulate,
        ..Gemm::new(Buf::Scratch(0), Buf::Scratch(1), Buf::Scratch(2), (m, n, k))
    };
    // An operand read as scalars binds a stand-in of at least 16 bytes to its vec4 view (never
    // read): one of the read-only operands when one is that large, else 4 zeros.
    let big = [0, 1, 3]
        .into_iter()
        .find(|&i| tensors.get(i).is_some_and(|t| t.buffer().size() >= 16));
    let small = match big {
        Some(_) => None,
        None => Some(GpuTensor::zeros(ctx, &[4])?),
    };
    let stand_in = big.unwrap_or(tensors.len());
    tensors.extend(small.as_ref());
    let gemm = Gemm {
        stand_in: Buf::Scratch(stand_in as u32),
        ..gemm
    };
    let words = if opts.split_k { gemm.split_words() } else { 0 };
    let partials = match words {
        0 => None,
        w => Some(GpuTensor::uninit(ctx, "split-K partials", &[w])?),
    };
    let ops = match &partials {
        Some(t) => {
            tensors.push(t);
            let at = Buf::Scratch(tensors.len() as u32 - 1);
            let max_x = ctx.limits().max_compute_workgroups_per_dimension;
            gemm.split_ops(at, max_x, "gemm")
        }
        None => gemm.op("gemm").into_iter().collect(),
    };
    crate::gpu::workspace::record_once(ctx, encoder, &tensors, &ops, "gemm")
}
