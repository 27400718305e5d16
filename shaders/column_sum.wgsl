// Deterministic column sums: the bias gradients of every gate over all timesteps and rows.
//
//   out[o + n] = sum_m a[m, n]          (ACCUMULATE: out[o + n] += ...), o = out_offset
//
// CPU twin: the `d_bias` loop of rnn_wgpu::cpu::lstm_backward.
//
// Bindings (group 0):
//   0 uniform  p    ColumnSumParams
//   1 read     a    (M, N) row-major
//   2 write    out  (out_offset + N)
// Dispatch: (ceil(N / 64), 1, 1) workgroups of 64x4 threads.
//
// Each workgroup owns 64 columns; its 4 lanes per column stride over the rows (coalesced
// loads across the 64 columns), then the 4 partial sums are combined in a fixed order.
// No atomics anywhere, so the result is bit-identical from run to run.

override ACCUMULATE: bool = false;

struct ColumnSumParams {
    m: u32,
    n: u32,
    out_offset: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: ColumnSumParams;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

const COLS: u32 = 64u;
const LANES: u32 = 4u;

var<workgroup> partial: array<f32, 256>; // [LANES][COLS]

@compute @workgroup_size(64, 4, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let col = wg.x * COLS + lid.x;
    var acc = 0.0;
    if (col < p.n) {
        for (var m = lid.y; m < p.m; m += LANES) {
            acc += a[m * p.n + col];
        }
    }
    partial[lid.y * COLS + lid.x] = acc;
    workgroupBarrier();
    if (lid.y == 0u && col < p.n) {
        var s = (partial[lid.x] + partial[COLS + lid.x]) + (partial[2u * COLS + lid.x] + partial[3u * COLS + lid.x]);
        if (ACCUMULATE) {
            s += out[p.out_offset + col];
        }
        out[p.out_offset + col] = s;
    }
}
