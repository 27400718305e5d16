//! The GEMM kernel (`gpu::gemm`) and the column sum (`gpu::column_sum`) on their own, against
//! f64 CPU products and sums: every transposition mode on sizes around the tiles (1, odd
//! sizes, either side of 64 and of the 16-deep K slab, row lengths that are and are not a
//! multiple of 4, so both the vec4 and the scalar loads run), each bias form and accumulation;
//! split-K against the whole product; and bit-identical results from run to run.

mod common;

use common::gpu::ctx;
use common::seeded;
use rnn_wgpu::gpu::column_sum::{column_sum_chunks, record_column_sum};
use rnn_wgpu::gpu::gemm::{GemmOptions, record_gemm_with, split_k_chunks};
use rnn_wgpu::{Context, GpuTensor};

/// `(M, N, K)` of the mode-by-mode checks.
const SIZES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 70, 33),
    (67, 1, 5),
    (65, 63, 17),
    (64, 64, 16),
    (130, 68, 48),
    (3, 129, 100),
];

/// Rounding bound of one entry: the GPU sums the `K` products in one FMA chain, then adds the
/// bias rows and (accumulating) the old `c`: at most `K + 3` roundings of partial sums no
/// larger than `mag`, the sum of the magnitudes of every term (the f64 reference is exact to
/// ~1e-16 of that). The classic bound is `(K + 3) * 2^-24 * mag`; the factor 2 covers the
/// second-order terms. A missing or doubled term shows as an error of order one term,
/// |a*b| ~ 0.25 on average, far above this.
fn bound(k: usize, mag: f64) -> f64 {
    (k + 3) as f64 * 2f64.powi(-23) * mag
}

/// The f64 reference of `c (+)= A · B (+ bias)`, with each entry's rounding bound.
struct Reference {
    want: Vec<f64>,
    tol: Vec<f64>,
}

struct Problem {
    m: usize,
    n: usize,
    k: usize,
    opts: GemmOptions,
    bias_rows: usize,
    a: Vec<f32>,
    b: Vec<f32>,
    bias: Vec<f32>,
    c0: Vec<f32>,
}

impl Problem {
    fn new(
        (m, n, k): (usize, usize, usize),
        opts: GemmOptions,
        bias_rows: usize,
        seed: u64,
    ) -> Problem {
        Problem {
            m,
            n,
            k,
            opts,
            bias_rows,
            a: seeded(seed, m * k, 1.0),
            b: seeded(seed + 1, k * n, 1.0),
            bias: seeded(seed + 2, bias_rows * n, 1.0),
            c0: seeded(seed + 3, m * n, 1.0),
        }
    }

    fn a_at(&self, i: usize, kk: usize) -> f64 {
        let at = if self.opts.trans_a {
            kk * self.m + i
        } else {
            i * self.k + kk
        };
        self.a[at] as f64
    }

    fn b_at(&self, kk: usize, j: usize) -> f64 {
        let at = if self.opts.trans_b {
            j * self.k + kk
        } else {
            kk * self.n + j
        };
        self.b[at] as f64
    }

    fn reference(&self) -> Reference {
        let (m, n, k) = (self.m, self.n, self.k);
        let mut want = vec![0.0; m * n];
        let mut tol = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                let (mut s, mut mag) = (0.0f64, 0.0f64);
                for kk in 0..k {
                    let t = self.a_at(i, kk) * self.b_at(kk, j);
                    s += t;
                    mag += t.abs();
                }
                for r in 0..self.bias_rows {
                    s += self.bias[r * n + j] as f64;
                    mag += (self.bias[r * n + j] as f64).abs();
                }
                if self.opts.accumulate {
                    s += self.c0[i * n + j] as f64;
                    mag += (self.c0[i * n + j] as f64).abs();
                }
                want[i * n + j] = s;
                tol[i * n + j] = bound(k, mag);
            }
        }
        Reference { want, tol }
    }

    /// One product on the GPU (one submission), `c` starting from `c0`.
    fn gpu(&self, ctx: &Context) -> Vec<f32> {
        let (m, n, k) = (self.m, self.n, self.k);
        let a_shape = if self.opts.trans_a { [k, m] } else { [m, k] };
        let b_shape = if self.opts.trans_b { [n, k] } else { [k, n] };
        let a = GpuTensor::upload(ctx, &self.a, &a_shape).unwrap();
        let b = GpuTensor::upload(ctx, &self.b, &b_shape).unwrap();
        let bias = match self.bias_rows {
            0 => None,
            1 => Some(GpuTensor::upload(ctx, &self.bias, &[n]).unwrap()),
            r => Some(GpuTensor::upload(ctx, &self.bias, &[r, n]).unwrap()),
        };
        let c = GpuTensor::upload(ctx, &self.c0, &[m, n]).unwrap();
        let mut enc = ctx
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        record_gemm_with(ctx, &mut enc, &a, &b, bias.as_ref(), &c, self.opts).unwrap();
        ctx.submit(enc.finish()).unwrap();
        c.download(ctx).unwrap()
    }
}

/// Every entry within its bound; a failure names the first bad index and its neighbours.
fn check(name: &str, got: &[f32], r: &Reference) {
    assert_eq!(got.len(), r.want.len(), "{name}: length");
    // A NaN error counts as a mismatch.
    let bad: Vec<usize> = (0..got.len())
        .filter(|&i| {
            let err = (got[i] as f64 - r.want[i]).abs();
            err.is_nan() || err > r.tol[i]
        })
        .collect();
    if let Some(&i) = bad.first() {
        let show: Vec<String> = (i..got.len().min(i + 4))
            .map(|e| format!("{:.6e} vs {:.6e}", got[e], r.want[e]))
            .collect();
        panic!(
            "{name}: {}/{} entries outside their rounding bound; first at index {i}: got {:.6e}, \
             want {:.6e} (bound {:.2e}); from there: [{}]",
            bad.len(),
            got.len(),
            got[i],
            r.want[i],
            r.tol[i],
            show.join(", ")
        );
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

const MODES: &[(&str, bool, bool)] = &[
    ("plain", false, false),
    ("trans_a", true, false),
    ("trans_b", false, true),
];

#[test]
fn every_mode_size_bias_and_accumulation_matches_f64() {
    let Some(ctx) = ctx() else { return };
    let mut seed = 100;
    for &(mode, trans_a, trans_b) in MODES {
        for &size in SIZES {
            for bias_rows in 0..=2 {
                for accumulate in [false, true] {
                    let opts = GemmOptions {
                        trans_a,
                        trans_b,
                        accumulate,
                        ..GemmOptions::default()
                    };
                    seed += 4;
                    let p = Problem::new(size, opts, bias_rows, seed);
                    let name = format!("{mode} {size:?} bias rows {bias_rows} acc {accumulate}");
                    check(&name, &p.gpu(ctx), &p.reference());
                }
            }
        }
    }
}

/// A caller's buffer holding `data` and `extra` bytes more.
fn padded(ctx: &Context, data: &[f32], shape: &[usize], extra: u64) -> GpuTensor {
    let buffer = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("padded operand"),
        size: 4 * data.len() as u64 + extra,
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_DST
            | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    ctx.queue()
        .write_buffer(&buffer, 0, bytemuck::cast_slice(data));
    GpuTensor::from_buffer(buffer, shape).unwrap()
}

#[test]
fn vec4_loads_read_operands_in_buffers_of_any_word_count() {
    let Some(ctx) = ctx() else { return };
    // Row lengths that are multiples of 4 (vec4 loads) in buffers 1 to 3 words longer than
    // the matrix, so their sizes are not whole vec4s: the vec4 view must still reach every
    // element of the matrix. (4, 8, 12) has K and N multiples of 4; (5, 8, 3) reads a
    // (12-byte-row) scalar A next to a vec4 B.
    for (size, extra) in [((4, 8, 12), 4), ((13, 20, 16), 8), ((5, 8, 3), 12)] {
        let p = Problem::new(size, GemmOptions::default(), 1, 3);
        let (m, n, k) = size;
        let a = padded(ctx, &p.a, &[m, k], extra);
        let b = padded(ctx, &p.b, &[k, n], extra);
        let bias = padded(ctx, &p.bias, &[n], extra);
        let c = GpuTensor::zeros(ctx, &[m, n]).unwrap();
        let mut enc = ctx
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        record_gemm_with(ctx, &mut enc, &a, &b, Some(&bias), &c, p.opts).unwrap();
        ctx.submit(enc.finish()).unwrap();
        check(
            &format!("{size:?} in buffers {extra} bytes longer"),
            &c.download(ctx).unwrap(),
            &p.reference(),
        );
    }
}

#[test]
fn split_k_matches_the_whole_product_and_repeats_bit_identically() {
    let Some(ctx) = ctx() else { return };
    // Weight-gradient shapes: a small M x N output, a long K = T*B; M odd (scalar loads of
    // the transposed A) and M a multiple of 4 (vec4 loads), K not a multiple of the slab.
    for (size, trans_a, accumulate) in [
        ((33, 70, 999), true, false),
        ((40, 72, 1000), true, true),
        ((5, 130, 700), false, true),
    ] {
        let (m, n, k) = size;
        let chunks = split_k_chunks(m, n, k);
        assert!(chunks > 1, "{size:?} should split K, got {chunks} chunk(s)");
        let whole = GemmOptions {
            trans_a,
            accumulate,
            ..GemmOptions::default()
        };
        let split = GemmOptions {
            split_k: true,
            ..whole
        };
        let p = Problem::new(size, whole, 0, 7);
        let r = p.reference();
        let unsplit = p.gpu(ctx);
        let q = Problem { opts: split, ..p };
        let first = q.gpu(ctx);
        let second = q.gpu(ctx);
        let name = format!("{size:?} split-K x{chunks}");
        check(&format!("{name} (whole)"), &unsplit, &r);
        check(&name, &first, &r);
        assert_eq!(bits(&first), bits(&second), "{name}: two runs differ");
        // Both within the bound of the f64 product, so within twice it of each other; not
        // bit-equal in general (another order of the same sums).
        for (i, (x, y)) in first.iter().zip(&unsplit).enumerate() {
            assert!(
                ((x - y) as f64).abs() <= 2.0 * r.tol[i],
                "{name}: entry {i}: split {x:e} vs whole {y:e}"
            );
        }
    }
    // A product with enough output tiles, or too short a K, runs whole.
    assert_eq!(split_k_chunks(1024, 1024, 3200), 1);
    assert_eq!(split_k_chunks(64, 64, 200), 1);
}

/// Rounding bound of a column sum of `m` terms of magnitude sum `mag`: at most `m + 1`
/// roundings (the lanes' sequential sums, two levels of fixed trees, the second level and the
/// accumulation all together stay below `m + 1` additions per path), doubled as above.
fn sum_bound(m: usize, mag: f64) -> f64 {
    (m + 1) as f64 * 2f64.powi(-23) * mag
}

#[test]
fn column_sums_match_f64_in_one_or_two_levels_bit_identically() {
    let Some(ctx) = ctx() else { return };
    for (m, n, accumulate) in [
        (1, 1, false),
        (5, 3, true),
        (64, 64, false),
        (130, 70, true),
        (700, 65, false),
        (3200, 256, true),
    ] {
        let a = seeded(m as u64, m * n, 1.0);
        let out0 = seeded(n as u64 + 1, n, 1.0);
        let mut want = vec![0.0f64; n];
        let mut tol = vec![0.0f64; n];
        for j in 0..n {
            let col = (0..m).map(|i| a[i * n + j] as f64);
            let (mut s, mut mag) = (col.clone().sum::<f64>(), col.map(f64::abs).sum::<f64>());
            if accumulate {
                s += out0[j] as f64;
                mag += (out0[j] as f64).abs();
            }
            want[j] = s;
            tol[j] = sum_bound(m, mag);
        }
        let ga = GpuTensor::upload(ctx, &a, &[m, n]).unwrap();
        let run = || {
            let out = GpuTensor::upload(ctx, &out0, &[n]).unwrap();
            let mut enc = ctx
                .device()
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            record_column_sum(ctx, &mut enc, &ga, &out, accumulate).unwrap();
            ctx.submit(enc.finish()).unwrap();
            out.download(ctx).unwrap()
        };
        let (first, second) = (run(), run());
        let name = format!(
            "column sum {m} x {n} (acc {accumulate}, {} chunks)",
            column_sum_chunks(m, n)
        );
        check(&name, &first, &Reference { want, tol });
        assert_eq!(bits(&first), bits(&second), "{name}: two runs differ");
    }
    // A tall matrix with few columns is summed in two levels.
    assert!(column_sum_chunks(3200, 256) > 1);
    assert_eq!(column_sum_chunks(64, 64), 1);
}
