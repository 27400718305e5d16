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
    b_row_offset: u32,
    c_row_offset: u32,
    _pad: [u32; 2],
}

/// One product `c (M, N) (+)= A (M, K) · B (K, N) [+ bias (N)]`; see `shaders/gemm.wgsl` for
/// how `trans_a`/`trans_b` and the row offsets address the stored matrices.
pub(crate) struct Gemm<'a> {
    pub a: &'a wgpu::Buffer,
    pub b: &'a wgpu::Buffer,
    /// `(rows, N)` bias vectors summed into every row of `c`; `None`: no bias term.
    pub bias: Option<(&'a wgpu::Buffer, u32)>,
    pub c: &'a wgpu::Buffer,
    pub m: u32,
    pub n: u32,
    pub k: u32,
    /// First row of the stored `a` (rows of `(M_total, K)`, or of `(K_total, M)` transposed).
    pub a_row_offset: u32,
    /// First row of the stored `b` (rows of `(K_total, N)`, or of `(N_total, K)` transposed).
    pub b_row_offset: u32,
    /// First row of `c` written.
    pub c_row_offset: u32,
    pub trans_a: bool,
    pub trans_b: bool,
    /// Add into `c` instead of overwriting it.
    pub accumulate: bool,
}

impl<'a> Gemm<'a> {
    /// `c = a · b + bias` with plain row-major operands and no offsets.
    pub(crate) fn new(
        a: &'a wgpu::Buffer,
        b: &'a wgpu::Buffer,
        c: &'a wgpu::Buffer,
        (m, n, k): (usize, usize, usize),
    ) -> Gemm<'a> {
        Gemm {
            a,
            b,
            bias: None,
            c,
            m: m as u32,
            n: n as u32,
            k: k as u32,
            a_row_offset: 0,
            b_row_offset: 0,
            c_row_offset: 0,
            trans_a: false,
            trans_b: false,
            accumulate: false,
        }
    }
}

/// Record one GEMM into `pass`. CPU twins: [`crate::cpu::input_projection`] and the weight- and
/// input-gradient sums of [`crate::cpu::lstm_backward`].
///
/// Checks the dispatch against `max_compute_workgroups_per_dimension` and every buffer against
/// the extent the kernel will touch, so a bad call is an `Error`, never a GPU fault.
pub(crate) fn gemm(ctx: &Context, pass: &mut wgpu::ComputePass<'_>, args: &Gemm<'_>) -> Result<()> {
    let Gemm { m, n, k, .. } = *args;
    if m == 0 || n == 0 {
        return Ok(());
    }
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
    let words = |v: u64| v * 4;
    let (m64, n64, k64) = (m as u64, n as u64, k as u64);
    let a_rows = args.a_row_offset as u64 + if args.trans_a { k64 } else { m64 };
    let a_cols = if args.trans_a { m64 } else { k64 };
    let b_rows = args.b_row_offset as u64 + if args.trans_b { n64 } else { k64 };
    let b_cols = if args.trans_b { k64 } else { n64 };
    assert!(args.a.size() >= words(a_rows * a_cols), "gemm: a too small");
    assert!(args.b.size() >= words(b_rows * b_cols), "gemm: b too small");
    assert!(
        args.c.size() >= words((args.c_row_offset as u64 + m64) * n64),
        "gemm: c too small"
    );
    if let Some((bias, rows)) = args.bias {
        assert!((1..=2).contains(&rows), "gemm: 1 or 2 bias rows");
        assert!(
            bias.size() >= words(rows as u64 * n64),
            "gemm: bias too small"
        );
    }

    let params = ctx
        .device()
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("gemm params"),
            contents: bytemuck::bytes_of(&GemmParams {
                m,
                n,
                k,
                a_row_offset: args.a_row_offset,
                b_row_offset: args.b_row_offset,
                c_row_offset: args.c_row_offset,
                _pad: [0; 2],
            }),
            usage: wgpu::BufferUsages::UNIFORM,
        });
    let cached = ctx.pipeline(
        Kernel::Gemm,
        &[
            ("TRANS_A", args.trans_a as u64 as f64),
            ("TRANS_B", args.trans_b as u64 as f64),
            ("BIAS_ROWS", args.bias.map_or(0, |b| b.1) as f64),
            ("ACCUMULATE", args.accumulate as u64 as f64),
        ],
    );
    // Without a bias the binding is never read; any buffer satisfies the layout.
    let bias = args.bias.map_or(args.b, |b| b.0);
    let bind = ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("gemm"),
        layout: &cached.layout,
        entries: &[
            entry(0, &params),
            entry(1, args.a),
            entry(2, args.b),
            entry(3, bias),
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
    gemm(
        ctx,
        &mut pass,
        &Gemm {
            bias: Some((bias.buffer(), 1)),
            ..Gemm::new(a.buffer(), b.buffer(), c.buffer(), (m, n, k))
        },
    )
}
