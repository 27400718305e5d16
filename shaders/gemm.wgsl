// Tiled SGEMM with optional bias, transposes, accumulation and split-K: every large matrix
// product of the forward and backward passes.
//
//   c[m, n] (+)= bias[n] + sum_k A[m, k] * B[k, n]                  m < M, n < N
//
//   bias[n] = sum over r < BIAS_ROWS of bias_rows[r * N + n]  (LSTM: b_ih and b_hh, 2 rows)
//
//   A[m, k] = a[(a_row_offset + m) * K + k]       (TRANS_A: a[(a_row_offset + k) * M + m])
//   B[k, n] = b[(b_row_offset + k) * N + n]       (TRANS_B: b[(b_row_offset + n) * K + k])
//   c[m, n] is stored at c[(c_row_offset + z * M + m) * N + n]
//
// Workgroup z sums k over [z * k_split, min(K, (z + 1) * k_split)). One z (k_split >= K) is
// the whole product; several write their partial products one under the other (split-K, with
// no bias and no accumulation) and `column_sum` adds them up in the order z = 0, 1, ...
//
// Uses (x (T*B, I), W_ih^T packed (I, 4H) gate-interleaved, dG (T*B, 4H) gate-interleaved):
//   forward  gx       = x · W_ih^T + b_ih + b_hh      CPU twin: cpu::input_projection
//   backward dx       = dG · (W_ih^T)^T               TRANS_B
//            dW_ih^T  = x^T · dG                      TRANS_A (ACCUMULATE for summed chunks)
//            dW_hh^T  = h_prev^T · dG                 TRANS_A, two calls (h0, then y[0..T-1])
//            dh0      = dG[0] · (W_hh^T)^T            TRANS_B
//
// Bindings (group 0):
//   0 uniform  p     GemmParams
//   1 read     a     see above
//   2 read     a4    the same buffer as vec4s, read only when VEC4_A (else a 16-byte stand-in)
//   3 read     b     see above (f16 pairs with F16_WEIGHTS)
//   4 read     b4    the same buffer as vec4s, read only when VEC4_B (else a 16-byte stand-in)
//   5 read     bias  (BIAS_ROWS, N), not read when BIAS_ROWS = 0
//   6 write    c     (c_row_offset + Z * M, N) row-major
// Dispatch: (ceil(N / 128), ceil(M / 64), Z) workgroups of 16x16 threads.
//
// Each workgroup owns a 64x128 tile of c; thread (x, y) owns the 4x8 block of rows 4y..4y+3
// and columns 4x..4x+3 and 64+4x..64+4x+3, so each step of its inner loop reads one vec4 of
// A (its 4 rows at k) and two of B (its 8 columns at k) from workgroup memory for 32 FMAs.
// The block is wide rather than tall because M is often small (B rows of one timestep).
//
// K is walked in slabs of 16. Both tiles are kept k-major ([16][64] and [16][128], plus 4
// floats of padding per k row), so the inner loop's vec4 reads are conflict-free: a quarter
// warp reads one broadcast vec4 of A and 8 consecutive vec4s of B.
//
// Staging a slab, each thread loads one run of A and two of B, a run being 4 consecutive
// elements along the stored matrix's contiguous axis: one vec4 load when VEC4_A / VEC4_B
// (the host sets them when that axis's length is a multiple of 4: then every run starts
// 16-byte aligned and lies wholly inside the matrix), else four scalar loads. A run that is
// already k-major (TRANS_A's A, plain B) is stored as one vec4, 16 (A) or 32 (B) threads
// covering a k row's contiguous floats; a run along k (plain A, TRANS_B's B) is transposed
// into 4 scalar stores, 4 threads covering a matrix row's 64 contiguous bytes, and the
// padding plus a swizzle of the store order keep all 32 stores of a warp in distinct banks
// (see transposed_index).
//
// The next slab's global loads are issued into registers before the current slab is
// multiplied, so their latency hides behind the FMAs (one tile buffer, two barriers a slab).
//
// The summation order over k is fixed (one FMA chain per output, k ascending), so results
// are bit-identical from run to run. Threads whose block lies wholly past M or N still stage
// tiles but skip the products: a projection of one timestep at B = 1 (M = 1) would otherwise
// do 64 rows of work for one.

// Bounds (why the kernel may run without wgpu's runtime checks): the host sizes a, b, bias
// and c for the shapes and offsets it passes (record_gemm_with checks the tensors' shapes;
// plans size their buffers). a and b are read only inside the stored matrix: rows below
// row_end (M, N or the chunk's k_end <= K) and columns below col_end (<= the row stride); a
// vec4 run is read only when the stride is a multiple of 4, so the run ends inside the
// matrix and its index at / 4 is below the vec4 view's length (floor(bytes / 16)); the
// stand-in bound to an unused vec4 view is never read. bias is read for columns below N and
// (BIAS_ROWS = 2) N + col < 2N; c is written for rows below M and columns below N of layer
// z < Z. Tile indices stay below 16 * 17 = 272 (A) and 16 * 33 = 528 (B), vector components
// below 4. The K loop steps by 16 up to k_end <= K < 2^30; no division by a runtime value.

override TRANS_A: bool = false;
override TRANS_B: bool = false;
override BIAS_ROWS: u32 = 1u;
override ACCUMULATE: bool = false;
override VEC4_A: bool = false;
override VEC4_B: bool = false;

struct GemmParams {
    m: u32,
    n: u32,
    k: u32,
    a_row_offset: u32,
    b_row_offset: u32,
    c_row_offset: u32,
    // K per workgroup z (split-K chunk); >= K for an unsplit product.
    k_split: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: GemmParams;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> a4: array<vec4<f32>>;
// Bindings 3 (b) and 4 (b4) are declared by the weight-precision snippet the host prepends
// (src/gpu/shaders.rs), with their accessors `b_read(i)` (element i as f32) and `b4_read(q)`
// (elements 4q .. 4q + 3 as one vec4): array<f32> and array<vec4<f32>>, or with F16_WEIGHTS
// (B a weight matrix stored as f16 pairs in u32 words, inference only: W_ih^T of the input
// projection, W_hr^T of the projection) array<u32> and array<vec2<u32>>, unpacked with
// unpack2x16float; the products are f32 either way.
@group(0) @binding(5) var<storage, read> bias: array<f32>;
@group(0) @binding(6) var<storage, read_write> c: array<f32>;

const BM: u32 = 64u;
const BN: u32 = 128u;
const BK: u32 = 16u;
// vec4s per k row of a tile: 64 (A) or 128 (B) floats plus 4 of padding; 68 and 132 are
// both 4 mod 32 banks.
const A_ROW4: u32 = 17u;
const B_ROW4: u32 = 33u;

var<workgroup> a_tile: array<vec4<f32>, 272>; // [BK][A_ROW4]: A[m][k] at float k * 68 + m
var<workgroup> b_tile: array<vec4<f32>, 528>; // [BK][B_ROW4]: B[k][n] at float k * 132 + n

// Elements col..col+3 (col % 4 == 0) of row `row` of the stored a, `stride` floats a row;
// zero at or past row_end / col_end.
fn a_run(row: u32, col: u32, row_end: u32, col_end: u32, stride: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    if (row < row_end) {
        let at = (p.a_row_offset + row) * stride + col;
        if (VEC4_A) {
            // stride and col_end are multiples of 4 here: a run is all in or all out.
            if (col < col_end) {
                v = a4[at / 4u];
            }
        } else {
            for (var i = 0u; i < 4u; i++) {
                if (col + i < col_end) {
                    v[i] = a[at + i];
                }
            }
        }
    }
    return v;
}

// As a_run, for the stored b.
fn b_run(row: u32, col: u32, row_end: u32, col_end: u32, stride: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    if (row < row_end) {
        let at = (p.b_row_offset + row) * stride + col;
        if (VEC4_B) {
            if (col < col_end) {
                v = b4_read(at / 4u);
            }
        } else {
            for (var i = 0u; i < 4u; i++) {
                if (col + i < col_end) {
                    v[i] = b_read(at + i);
                }
            }
        }
    }
    return v;
}

// Thread li's run of the A tile of rows row0.., slab k0.. (k < k_end).
fn load_a(li: u32, row0: u32, k0: u32, k_end: u32) -> vec4<f32> {
    if (TRANS_A) {
        // Stored (K, M): 16 threads cover one k row's 64 contiguous floats.
        return a_run(k0 + li / 16u, row0 + (li % 16u) * 4u, k_end, p.m, p.m);
    }
    // Stored (M, K): 4 threads cover one matrix row's 16 contiguous floats of the slab.
    return a_run(row0 + li / 4u, k0 + (li % 4u) * 4u, p.m, k_end, p.k);
}

// Thread li's run h (0 or 1) of the B tile of slab k0.., columns col0...
fn load_b(li: u32, h: u32, col0: u32, k0: u32, k_end: u32) -> vec4<f32> {
    if (TRANS_B) {
        // Stored (N, K): 4 threads cover one matrix row's 16 contiguous floats of the slab.
        return b_run(col0 + h * 64u + li / 4u, k0 + (li % 4u) * 4u, p.n, k_end, p.k);
    }
    // Stored (K, N): 32 threads cover one k row's 128 contiguous floats.
    return b_run(k0 + h * 8u + li / 32u, col0 + (li % 32u) * 4u, k_end, p.n, p.n);
}

// Store a run along k (4 k values of matrix row r, k = 4q..4q+3 of the slab) into a k-major
// tile of row4 vec4s a k row. Float address (4q + s) * (68 or 132) + r is 16q + 4s + r mod
// 32; a warp holds 8 rows r and all 4 q, so storing component s = j ^ (q & 2) at step j puts
// the 32 stores of a step in 32 distinct banks (the plain order s = j would pair q = 0 with 2
// and 1 with 3).
fn transposed_index(r: u32, q: u32, j: u32, row4: u32) -> vec2<u32> {
    let s = j ^ (q & 2u);
    return vec2<u32>((4u * q + s) * row4 + r / 4u, s);
}

fn store_a(li: u32, v: vec4<f32>) {
    if (TRANS_A) {
        a_tile[(li / 16u) * A_ROW4 + li % 16u] = v;
    } else {
        let r = li / 4u;
        for (var j = 0u; j < 4u; j++) {
            let at = transposed_index(r, li % 4u, j, A_ROW4);
            a_tile[at.x][r % 4u] = v[at.y];
        }
    }
}

fn store_b(li: u32, h: u32, v: vec4<f32>) {
    if (TRANS_B) {
        let n = h * 64u + li / 4u;
        for (var j = 0u; j < 4u; j++) {
            let at = transposed_index(n, li % 4u, j, B_ROW4);
            b_tile[at.x][n % 4u] = v[at.y];
        }
    } else {
        b_tile[(h * 8u + li / 32u) * B_ROW4 + li % 32u] = v;
    }
}

// Row `row` (< M) of the block: acc plus bias (plus c), for the columns below N.
fn write_row(row: u32, col: u32, z: u32, acc: vec4<f32>) {
    let at = (p.c_row_offset + z * p.m + row) * p.n;
    for (var j = 0u; j < 4u; j++) {
        if (col + j < p.n) {
            var v = acc[j];
            if (BIAS_ROWS == 1u) {
                v += bias[col + j];
            } else if (BIAS_ROWS == 2u) {
                v += bias[col + j] + bias[p.n + col + j];
            }
            if (ACCUMULATE) {
                v += c[at + col + j];
            }
            c[at + col + j] = v;
        }
    }
}

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row0 = wg.y * BM;
    let col0 = wg.x * BN;
    let k_begin = wg.z * p.k_split;
    let k_end = min(p.k, k_begin + p.k_split);
    let row = row0 + lid.y * 4u;
    let col = col0 + lid.x * 4u;
    let live = row < p.m && col < p.n;
    // acc_ij: row 4y + i, columns 4x.. (j = 0) and 64 + 4x.. (j = 1).
    var acc00 = vec4<f32>(0.0);
    var acc10 = vec4<f32>(0.0);
    var acc20 = vec4<f32>(0.0);
    var acc30 = vec4<f32>(0.0);
    var acc01 = vec4<f32>(0.0);
    var acc11 = vec4<f32>(0.0);
    var acc21 = vec4<f32>(0.0);
    var acc31 = vec4<f32>(0.0);

    var a_next = load_a(li, row0, k_begin, k_end);
    var b_next0 = load_b(li, 0u, col0, k_begin, k_end);
    var b_next1 = load_b(li, 1u, col0, k_begin, k_end);
    for (var k0 = k_begin; k0 < k_end; k0 += BK) {
        store_a(li, a_next);
        store_b(li, 0u, b_next0);
        store_b(li, 1u, b_next1);
        workgroupBarrier();
        // Prefetch the next slab; its loads are in flight during the products below.
        if (k0 + BK < k_end) {
            a_next = load_a(li, row0, k0 + BK, k_end);
            b_next0 = load_b(li, 0u, col0, k0 + BK, k_end);
            b_next1 = load_b(li, 1u, col0, k0 + BK, k_end);
        }
        if (live) {
            for (var kk = 0u; kk < BK; kk++) {
                let av = a_tile[kk * A_ROW4 + lid.y];
                let b0 = b_tile[kk * B_ROW4 + lid.x];
                let b1 = b_tile[kk * B_ROW4 + 16u + lid.x];
                acc00 = fma(vec4<f32>(av.x), b0, acc00);
                acc10 = fma(vec4<f32>(av.y), b0, acc10);
                acc20 = fma(vec4<f32>(av.z), b0, acc20);
                acc30 = fma(vec4<f32>(av.w), b0, acc30);
                acc01 = fma(vec4<f32>(av.x), b1, acc01);
                acc11 = fma(vec4<f32>(av.y), b1, acc11);
                acc21 = fma(vec4<f32>(av.z), b1, acc21);
                acc31 = fma(vec4<f32>(av.w), b1, acc31);
            }
        }
        workgroupBarrier();
    }

    let col1 = col + 64u;
    if (row < p.m) {
        write_row(row, col, wg.z, acc00);
        write_row(row, col1, wg.z, acc01);
    }
    if (row + 1u < p.m) {
        write_row(row + 1u, col, wg.z, acc10);
        write_row(row + 1u, col1, wg.z, acc11);
    }
    if (row + 2u < p.m) {
        write_row(row + 2u, col, wg.z, acc20);
        write_row(row + 2u, col1, wg.z, acc21);
    }
    if (row + 3u < p.m) {
        write_row(row + 3u, col, wg.z, acc30);
        write_row(row + 3u, col1, wg.z, acc31);
    }
}
