// Deterministic column sums: the bias gradients of every gate over all timesteps and rows,
// and the reduce of split-K GEMMs (the sum of S stacked partial products).
//
//   out[o + z * N + n] (+)= sum over rows m of chunk z of a[m, n]      o = out_offset
//
// With ALSO (one chunk only), the same sum is also written (or added) at
// out[also_offset + n]: an LSTM's or plain RNN's d b_ih and d b_hh are both the column sums of
// one dG, which is then read once.
//
// Chunk z holds rows [z * rows_per_chunk, min(M, (z + 1) * rows_per_chunk)). One chunk is a
// whole column sum; with several, the host sums the (chunks, N) partials again with one
// chunk (a two-level reduction), so a tall matrix with few columns still spreads over many
// workgroups.
//
// CPU twin: the `d_bias` loop of rnn_wgpu::cpu::lstm_backward.
//
// Bindings (group 0):
//   0 uniform  p    ColumnSumParams
//   1 read     a    (M, N) row-major
//   2 write    out  (out_offset + chunks * N)
// Dispatch: (gx, gy, chunks) workgroups of 64x4 threads; workgroup (x, y) owns columns
// 64 * (x + y * gx) .. +63 (the column tiles folded into x and y).
//
// The 4 lanes of a column stride over the chunk's rows (lane l: rows l, l + 4, ...; the 64
// columns of a lane row are contiguous, so loads are coalesced), then the 4 partial sums are
// combined as (l0 + l1) + (l2 + l3). Every order is fixed by the shapes and there are no
// atomics, so the result is bit-identical from run to run.

// Bounds (why the kernel may run without wgpu's runtime checks): a is read at m * N + col
// for m < min(M, end of the chunk) and col < N; out is written at out_offset + z * N + col
// for col < N and z < chunks (with ALSO, at also_offset + col, z = 0), which the host sizes; `partial` is indexed below 4 * 64. The
// row loop steps by 4 up to M; no division by a runtime value.

override ACCUMULATE: bool = false;
override ALSO: bool = false;

struct ColumnSumParams {
    m: u32,
    n: u32,
    out_offset: u32,
    rows_per_chunk: u32,
    also_offset: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: ColumnSumParams;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

const COLS: u32 = 64u;
const LANES: u32 = 4u;

var<workgroup> partial: array<f32, 256>; // [LANES][COLS]

@compute @workgroup_size(64, 4, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let col = (wg.x + wg.y * groups.x) * COLS + lid.x;
    let first = wg.z * p.rows_per_chunk;
    let end = min(p.m, first + p.rows_per_chunk);
    var acc = 0.0;
    if (col < p.n) {
        for (var m = first + lid.y; m < end; m += LANES) {
            acc += a[m * p.n + col];
        }
    }
    partial[lid.y * COLS + lid.x] = acc;
    workgroupBarrier();
    if (lid.y == 0u && col < p.n) {
        var s = (partial[lid.x] + partial[COLS + lid.x]) + (partial[2u * COLS + lid.x] + partial[3u * COLS + lid.x]);
        let at = p.out_offset + wg.z * p.n + col;
        if (ALSO) {
            let also = p.also_offset + col;
            var t = s;
            if (ACCUMULATE) {
                t += out[also];
            }
            out[also] = t;
        }
        if (ACCUMULATE) {
            s += out[at];
        }
        out[at] = s;
    }
}
