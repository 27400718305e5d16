// One fused timestep of backpropagation through time, for every cell kind.
//
//   dh[b, k] = dy[t, b, k] + carry[b, k] + sum_n dG[t+1, b, n] * W_hh[n, k]   (t < T-1)
//
// where n runs over (unit j, gate g) and W_hh^T is stored as the forward pass uses it,
// (H, H, G): row k is contiguous in n. `carry` holds what reaches h_{t} directly rather than
// through W_hh: dh_n at the last step (copied in by the host), and for the GRU z * dh of the
// step after. Then, from the tape the forward pass saved:
//
//   LSTM: dc' = dc + dh*o*(1-tanh(c)^2); dG = (dc'*g*i(1-i), dc'*c_prev*f(1-f),
//         dc'*i*(1-g^2), dh*tanh(c)*o(1-o)); dc = dc'*f; carry = 0
//   GRU:  dn = dh*(1-z)*(1-n^2); dz = dh*(h_prev-n)*z(1-z); dr = dn*gh_n*r(1-r);
//         dGx = (dr, dz, dn) for the input side, dG = (dr, dz, dn*r) for the recurrent side;
//         carry = dh*z
//   RNN:  dG = dh * act'(h) (tanh: 1-h^2, relu: h > 0); carry = 0
// CPU twins: rnn_wgpu::cpu::{lstm_step_backward, gru_step_backward, rnn_step_backward}.
//
// Bindings (group 0):
//   0 uniform  p      StepBackParams (dynamic offset: one entry per timestep)
//   1 read     tape   (T, B, H, S)      saved by the forward pass (S = 4, or 1 for RNN)
//   2 read     c_all  (T + 1, B, H)     LSTM: cell states (slot 0 = c0); GRU: h (slot 0 = h0)
//   3 read     w_hh   (H, H, G)         W_hh^T, gate-interleaved
//   4 read     dy     (T, B, H)         upstream gradient of y (read only when HAS_DY)
//   5 write    dG     (T, B, H, G)      recurrent-side pre-activation grads: writes t, reads t+1
//   6 write    dGx    (T, B, H, G)      GRU: input-side pre-activation grads (else unused)
//   7 write    dc     (B, H)            LSTM: dc_n in, dc0 out (each thread owns its own)
//   8 write    carry  (B, H)            dh_n in; the direct part of dh_{t-1} out
// Dispatch: (ceil(H / 16), ceil(B / BM), 1) workgroups of 16x16 threads, BM = 16 / KSPLIT * ROWS;
// lanes split batch rows and the reduction exactly as in rnn_step.wgsl.

override CELL: u32 = 0u;    // 0 LSTM, 1 GRU, 2 RNN
override G: u32 = 4u;
override RELU: bool = false;
override ROWS: u32 = 1u;
override KSPLIT: u32 = 1u;
override HAS_DY: bool = true;

const LSTM: u32 = 0u;
const GRU: u32 = 1u;

struct StepBackParams {
    batch: u32,
    hidden: u32,
    t: u32,
    last: u32, // 1 when t == T - 1: no recurrent term
}

@group(0) @binding(0) var<uniform> p: StepBackParams;
@group(0) @binding(1) var<storage, read> tape: array<f32>;
@group(0) @binding(2) var<storage, read> c_all: array<f32>;
@group(0) @binding(3) var<storage, read> w_hh: array<f32>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> dG: array<f32>;
@group(0) @binding(6) var<storage, read_write> dGx: array<f32>;
@group(0) @binding(7) var<storage, read_write> dc: array<f32>;
@group(0) @binding(8) var<storage, read_write> carry: array<f32>;

const TK: u32 = 16u;   // output units per workgroup
const SLAB: u32 = 32u; // columns n of the reduction per staged slab
const MAX_BM: u32 = 64u;

var<workgroup> w_tile: array<f32, 512>;   // [TK][SLAB]
var<workgroup> g_tile: array<f32, 2048>;  // [BM][SLAB]
var<workgroup> partial: array<f32, 256>;  // [16 lanes][TK], KSPLIT > 1 only

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let H = p.hidden;
    let B = p.batch;
    let n_all = H * G;
    let lanes_per_split = 16u / KSPLIT;
    let bm = lanes_per_split * ROWS;
    let split = lid.y / lanes_per_split;
    let row0 = (lid.y % lanes_per_split) * ROWS;
    let k0 = wg.x * TK;
    let b0 = wg.y * bm;
    var acc: array<f32, 4>;

    if (p.last == 0u) {
        let next = (p.t + 1u) * B;
        for (var n0 = 0u; n0 < n_all; n0 += SLAB) {
            // W tile: 16 rows k x 32 columns n; consecutive threads walk n along a row.
            for (var e = li; e < TK * SLAB; e += 256u) {
                let kk = e / SLAB;
                let nn = e % SLAB;
                var w = 0.0;
                if (k0 + kk < H && n0 + nn < n_all) {
                    w = w_hh[(k0 + kk) * n_all + n0 + nn];
                }
                w_tile[kk * SLAB + nn] = w;
            }
            // dG[t+1] tile: bm rows x 32 columns.
            for (var e = li; e < bm * SLAB; e += 256u) {
                let r = e / SLAB;
                let nn = e % SLAB;
                var v = 0.0;
                if (b0 + r < B && n0 + nn < n_all) {
                    v = dG[(next + b0 + r) * n_all + n0 + nn];
                }
                g_tile[r * SLAB + nn] = v;
            }
            workgroupBarrier();
            for (var nn = split; nn < SLAB; nn += KSPLIT) {
                let w = w_tile[lid.x * SLAB + nn];
                for (var r = 0u; r < ROWS; r++) {
                    acc[r] = fma(g_tile[(row0 + r) * SLAB + nn], w, acc[r]);
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
        var dh = acc[r] + carry[idx];
        if (HAS_DY) {
            dh += dy[at];
        }
        let g_at = at * G;
        if (CELL == LSTM) {
            let i_g = tape[at * 4u];
            let f_g = tape[at * 4u + 1u];
            let g_g = tape[at * 4u + 2u];
            let o_g = tape[at * 4u + 3u];
            let c_prev = c_all[at];
            let tc = tanh_stable(c_all[at + B * H]);
            let dct = dc[idx] + dh * o_g * (1.0 - tc * tc);
            dc[idx] = dct * f_g;
            dG[g_at] = dct * g_g * i_g * (1.0 - i_g);
            dG[g_at + 1u] = dct * c_prev * f_g * (1.0 - f_g);
            dG[g_at + 2u] = dct * i_g * (1.0 - g_g * g_g);
            dG[g_at + 3u] = dh * tc * o_g * (1.0 - o_g);
            carry[idx] = 0.0;
        } else if (CELL == GRU) {
            let r_g = tape[at * 4u];
            let z_g = tape[at * 4u + 1u];
            let n_g = tape[at * 4u + 2u];
            let gh_n = tape[at * 4u + 3u];
            let h_prev = c_all[at];
            let dn = dh * (1.0 - z_g) * (1.0 - n_g * n_g);
            let dz = dh * (h_prev - n_g) * z_g * (1.0 - z_g);
            let dr = dn * gh_n * r_g * (1.0 - r_g);
            dGx[g_at] = dr;
            dGx[g_at + 1u] = dz;
            dGx[g_at + 2u] = dn;
            dG[g_at] = dr;
            dG[g_at + 1u] = dz;
            dG[g_at + 2u] = dn * r_g;
            carry[idx] = dh * z_g;
        } else {
            let h = tape[at];
            var d = dh * (1.0 - h * h);
            if (RELU) {
                d = select(0.0, dh, h > 0.0);
            }
            dG[g_at] = d;
            carry[idx] = 0.0;
        }
    }
}
