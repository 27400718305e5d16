// Tiled GEMM with bias: the input projection of every timestep at once.
//
//   c[m, n] = bias[n] + sum_k a[a_row_offset + m, k] * b[k, n]      m < M, n < N
//
// Used as `gx = x · W_ih^T + (b_ih + b_hh)` for a chunk of timesteps: a = x viewed as
// (T*B, I), b = W_ih packed transposed and gate-interleaved (I, 4H), c = gx (Tc*B, 4H).
// CPU twin: rnn_wgpu::cpu::input_projection.
//
// Bindings (group 0):
//   0 uniform  p     GemmParams
//   1 read     a     (a_row_offset + M, K) row-major
//   2 read     b     (K, N) row-major
//   3 read     bias  (N)
//   4 write    c     (M, N) row-major
// Dispatch: (ceil(N / 64), ceil(M / 64), 1) workgroups of 16x16 threads.
//
// Each workgroup owns a 64x64 tile of c; each thread a 4x4 micro-tile whose columns are
// strided by 16, so neighbouring threads load and store neighbouring addresses (coalesced).
// K is walked in slabs of 16 staged through workgroup memory.

struct GemmParams {
    m: u32,
    n: u32,
    k: u32,
    a_row_offset: u32,
}

@group(0) @binding(0) var<uniform> p: GemmParams;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;

const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;
const THREADS: u32 = 256u;

var<workgroup> a_tile: array<f32, 1024>; // [BK][BM], transposed so a row of k is contiguous
var<workgroup> b_tile: array<f32, 1024>; // [BK][BN]

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row0 = wg.y * BM;
    let col0 = wg.x * BN;
    var acc: array<array<f32, 4>, 4>;

    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        for (var i = 0u; i < 4u; i++) {
            let e = li + i * THREADS;
            // a: consecutive threads walk k, the contiguous axis of a row.
            let r = e / BK;
            let kk = e % BK;
            var v = 0.0;
            if (row0 + r < p.m && k0 + kk < p.k) {
                v = a[(p.a_row_offset + row0 + r) * p.k + k0 + kk];
            }
            a_tile[kk * BM + r] = v;
            // b: consecutive threads walk n.
            let kb = e / BN;
            let cb = e % BN;
            var w = 0.0;
            if (k0 + kb < p.k && col0 + cb < p.n) {
                w = b[(k0 + kb) * p.n + col0 + cb];
            }
            b_tile[kb * BN + cb] = w;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            var av: array<f32, 4>;
            var bv: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                av[i] = a_tile[kk * BM + lid.y * 4u + i];
                bv[i] = b_tile[kk * BN + lid.x + i * 16u];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i][j] = fma(av[i], bv[j], acc[i][j]);
                }
            }
        }
        workgroupBarrier();
    }

    for (var i = 0u; i < 4u; i++) {
        let row = row0 + lid.y * 4u + i;
        for (var j = 0u; j < 4u; j++) {
            let col = col0 + lid.x + j * 16u;
            if (row < p.m && col < p.n) {
                c[row * p.n + col] = acc[i][j] + bias[col];
            }
        }
    }
}
