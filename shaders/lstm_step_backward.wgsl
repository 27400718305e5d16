// One fused LSTM timestep of backpropagation through time.
//
//   dh[b, k]  = dy[t, b, k] + (t == T-1 ? dh_n[b, k] : sum_n dG[t+1, b, n] * W_hh[n, k])
//   c_prev    = c_all[t], c = c_all[t + 1], (i, f, g, o) = gates[t, b, k]
//   dc'       = dc[b, k] + dh * o * (1 - tanh(c)^2)
//   dG[t, b, k] = (dc' * g * i(1-i),  dc' * c_prev * f(1-f),  dc' * i * (1-g^2),
//                  dh * tanh(c) * o(1-o))                       pre-activation gradients
//   dc[b, k]  = dc' * f                                         carried to step t-1
//
// The recurrent product runs over n = (unit j, gate) with W_hh^T packed as the forward pass
// uses it: the vec4 at [k, j] holds W_hh[(i|f|g|o) row of unit j, column k], so
// sum_n dG[t+1, b, n] * W_hh[n, k] = sum_j dot(dG[t+1, b, j], w_hh[k, j]).
// CPU twin: rnn_wgpu::cpu::lstm_step_backward.
//
// Bindings (group 0):
//   0 uniform  p      StepBackParams (dynamic offset: one entry per timestep)
//   1 read     gates  (T, B, H) vec4   activated gates saved by the forward pass
//   2 read     c_all  (T + 1, B, H)    cell states, slot 0 = c0
//   3 read     w_hh   (H, H) vec4      W_hh^T, gate-interleaved
//   4 read     dy     (T, B, H)        upstream gradient of y (read only when HAS_DY)
//   5 read     dh_n   (B, H)           upstream gradient of h_n (zeros when absent)
//   6 write    dG     (T, B, H) vec4   writes step t, reads step t + 1
//   7 write    dc     (B, H)           dc_n in, dc0 out; each thread owns its elements
// Dispatch: (ceil(H / 16), ceil(B / BM), 1) workgroups of 16x16 threads, BM = 16 / KSPLIT * ROWS.
// Thread (x, y) owns unit k0 + x; lanes split batch rows and the reduction exactly as in
// lstm_step.wgsl (KSPLIT <= 8 here: a slab holds 8 units).

override ROWS: u32 = 1u;
override KSPLIT: u32 = 1u;
override HAS_DY: bool = true;

struct StepBackParams {
    batch: u32,
    hidden: u32,
    t: u32,
    last: u32, // 1 when t == T - 1: dh comes from dh_n, not from dG[t + 1]
}

@group(0) @binding(0) var<uniform> p: StepBackParams;
@group(0) @binding(1) var<storage, read> gates: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> c_all: array<f32>;
@group(0) @binding(3) var<storage, read> w_hh: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read> dh_n: array<f32>;
@group(0) @binding(6) var<storage, read_write> dG: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> dc: array<f32>;

const TK: u32 = 16u;   // output units per workgroup
const SLAB: u32 = 8u;  // units j (vec4 of gates) per staged slab of the reduction
const MAX_BM: u32 = 64u;

var<workgroup> w_tile: array<vec4<f32>, 128>;  // [TK][SLAB]
var<workgroup> g_tile: array<vec4<f32>, 512>;  // [BM][SLAB]
var<workgroup> partial: array<f32, 256>;       // [16 lanes][TK], KSPLIT > 1 only

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let H = p.hidden;
    let B = p.batch;
    let lanes_per_split = 16u / KSPLIT;
    let bm = lanes_per_split * ROWS;
    let split = lid.y / lanes_per_split;
    let row0 = (lid.y % lanes_per_split) * ROWS;
    let k0 = wg.x * TK;
    let b0 = wg.y * bm;
    var acc: array<f32, 4>;

    if (p.last == 0u) {
        let next = (p.t + 1u) * B;
        for (var j0 = 0u; j0 < H; j0 += SLAB) {
            // W tile: 16 rows k x 8 units j; consecutive threads walk j along a row.
            if (li < TK * SLAB) {
                let kk = li / SLAB;
                let jj = li % SLAB;
                var w = vec4<f32>(0.0);
                if (k0 + kk < H && j0 + jj < H) {
                    w = w_hh[(k0 + kk) * H + j0 + jj];
                }
                w_tile[kk * SLAB + jj] = w;
            }
            // dG[t+1] tile: bm rows x 8 units.
            for (var e = li; e < bm * SLAB; e += 256u) {
                let r = e / SLAB;
                let jj = e % SLAB;
                var v = vec4<f32>(0.0);
                if (b0 + r < B && j0 + jj < H) {
                    v = dG[(next + b0 + r) * H + j0 + jj];
                }
                g_tile[r * SLAB + jj] = v;
            }
            workgroupBarrier();
            for (var jj = split; jj < SLAB; jj += KSPLIT) {
                let wv = w_tile[lid.x * SLAB + jj];
                for (var r = 0u; r < ROWS; r++) {
                    acc[r] += dot(g_tile[(row0 + r) * SLAB + jj], wv);
                }
            }
            workgroupBarrier();
        }
    }

    if (KSPLIT > 1u) {
        partial[lid.y * TK + lid.x] = acc[0];
        workgroupBarrier();
        if (split == 0u) {
            var total = partial[lid.y * TK + lid.x];
            for (var s = 1u; s < KSPLIT; s++) {
                total += partial[(s * lanes_per_split + lid.y) * TK + lid.x];
            }
            acc[0] = total;
        }
    }

    let k = k0 + lid.x;
    if (k >= H || split != 0u) {
        return;
    }
    for (var r = 0u; r < ROWS; r++) {
        let b = b0 + row0 + r;
        if (b >= B) {
            continue;
        }
        let idx = b * H + k;
        let at = p.t * B * H + idx;
        var dh = acc[r];
        if (p.last == 1u) {
            dh = dh_n[idx];
        }
        if (HAS_DY) {
            dh += dy[at];
        }
        let gt = gates[at];
        let i_g = gt.x;
        let f_g = gt.y;
        let g_g = gt.z;
        let o_g = gt.w;
        let c_prev = c_all[at];
        let tc = tanh_stable(c_all[at + B * H]);
        let dct = dc[idx] + dh * o_g * (1.0 - tc * tc);
        dc[idx] = dct * f_g;
        dG[at] = vec4<f32>(
            dct * g_g * i_g * (1.0 - i_g),
            dct * c_prev * f_g * (1.0 - f_g),
            dct * i_g * (1.0 - g_g * g_g),
            dh * tc * o_g * (1.0 - o_g),
        );
    }
}
