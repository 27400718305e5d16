// One fused recurrent timestep for every cell kind: the recurrent GEMM for all G gates of a
// tile of hidden units, plus the step's input projection, then the activations and the state
// update in registers, without writing pre-activations to memory.
//
//   gh[b, j, g] = b_hh[j, g] + sum_k h_prev[b, k] * w_hh[k, j, g]      (recurrent part)
//   gx[b, j, g] = x · W_ih^T + b_ih, computed for all steps by gemm.wgsl (input part)
//
//   CELL = LSTM (G = 4: i, f, g, o):  c = s(f)*c + s(i)*tanh(g);  h = s(o)*tanh(c)
//   CELL = GRU  (G = 3: r, z, n):      r = s(gx_r+gh_r), z = s(gx_z+gh_z),
//                                      n = tanh(gx_n + r*gh_n);  h = (1-z)*n + z*h_prev
//   CELL = RNN  (G = 1):               h = act(gx + gh), act = tanh or relu (RELU)
//
// h_prev is y[t_global - 1] except at the first step of a time chunk, where it is h_carry
// (h0, or the last h of the previous chunk, copied there by the host schedule). Weights, gx
// and biases are gate-interleaved (column j*G + g), so one thread owns all G gates of its
// unit. Training (SAVE) writes the tape backward needs: LSTM (i, f, g, o) activated plus c_t;
// GRU (r, z, n, gh_n); RNN h.
// CPU twins: rnn_wgpu::cpu::{lstm_step, gru_step, rnn_step}.
//
// Bindings (group 0):
//   0 uniform  p        StepParams (dynamic offset: one entry per timestep)
//   1 read     gx       (Tc, B, H, G)     this chunk's input projection, b_ih included
//   2 read     w_hh     (H, H, G)         W_hh^T: row k, unit j, gate g
//   3 read     h_carry  (B, H)
//   4 read     bias     (2, H, G)         row 1 is b_hh (read only when HAS_BIAS)
//   5 write    y        (T, B, H)         also read: h_prev = y[t_global - 1]
//   6 write    c_state  (B, H)            LSTM: c_{t-1} in, c_t out (each thread owns its own)
//   7 write    tape     (T, B, H, S)      SAVE: S = 4 (LSTM, GRU) or 1 (RNN)
//   8 write    c_all    (T + 1, B, H)     SAVE: LSTM c_t, GRU h_t, at slot t + 1 (slot 0: c0/h0)
// Dispatch: (ceil(H / 16), ceil(B / BM), 1) workgroups of 16x16 threads, BM = 16 / KSPLIT * ROWS.
// Thread (x, y) owns hidden unit j0 + x. With KSPLIT = 1 it owns batch rows b0 + y*ROWS ..
// + ROWS and the whole reduction. Small batches cannot fill 16 rows, so KSPLIT > 1 splits the
// reduction instead: lane y = s * (16 / KSPLIT) + r works on row b0 + r and on every KSPLIT-th
// k of each slab (k = s, s + KSPLIT, ...); the KSPLIT partial sums are then added in a fixed
// order in workgroup memory. Every thread has work even at B = 1.

override CELL: u32 = 0u;    // 0 LSTM, 1 GRU, 2 RNN
override G: u32 = 4u;       // gates per unit: 4, 3, 1
override RELU: bool = false; // RNN: relu instead of tanh
override HAS_BIAS: bool = true;
override ROWS: u32 = 1u;    // batch rows per thread: 1, 2 or 4 (only with KSPLIT = 1)
override KSPLIT: u32 = 1u;  // lanes sharing one row's reduction: 1, 2, 4, 8 or 16
override SAVE: bool = false; // training: write the tape (bindings 7 and 8)

const LSTM: u32 = 0u;
const GRU: u32 = 1u;

struct StepParams {
    batch: u32,
    hidden: u32,
    t_local: u32,
    t_global: u32,
}

@group(0) @binding(0) var<uniform> p: StepParams;
@group(0) @binding(1) var<storage, read> gx: array<f32>;
@group(0) @binding(2) var<storage, read> w_hh: array<f32>;
@group(0) @binding(3) var<storage, read> h_carry: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;
@group(0) @binding(6) var<storage, read_write> c_state: array<f32>;
@group(0) @binding(7) var<storage, read_write> tape: array<f32>;
@group(0) @binding(8) var<storage, read_write> c_all: array<f32>;

const TJ: u32 = 16u;  // hidden units per workgroup
const BK: u32 = 16u;  // k slab staged in workgroup memory
const MAX_BM: u32 = 64u;

var<workgroup> w_tile: array<f32, 1024>;      // [BK][TJ * G]
var<workgroup> h_tile: array<f32, 1024>;      // [BK][BM]
var<workgroup> partial: array<vec4<f32>, 256>; // [16 lanes][TJ], KSPLIT > 1 only

fn h_prev(b: u32, k: u32) -> f32 {
    if (p.t_local == 0u) {
        return h_carry[b * p.hidden + k];
    }
    return y[((p.t_global - 1u) * p.batch + b) * p.hidden + k];
}

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
    let split = lid.y / lanes_per_split;            // which k subset this lane sums
    let row0 = (lid.y % lanes_per_split) * ROWS;    // first tile row this lane owns
    let j0 = wg.x * TJ;
    let b0 = wg.y * bm;
    let cols = TJ * G;                              // packed columns of this tile
    let n_all = H * G;
    var acc: array<vec4<f32>, 4>;                   // [row] -> gates in .xyzw

    for (var k0 = 0u; k0 < H; k0 += BK) {
        // W tile: 16 k x (16 units * G gates), consecutive threads on consecutive columns.
        for (var e = li; e < BK * cols; e += 256u) {
            let kw = e / cols;
            let cw = e % cols;
            var w = 0.0;
            if (k0 + kw < H && j0 * G + cw < n_all) {
                w = w_hh[(k0 + kw) * n_all + j0 * G + cw];
            }
            w_tile[kw * cols + cw] = w;
        }
        // h tile: bm rows x 16 k, consecutive threads on consecutive k.
        for (var e = li; e < bm * BK; e += 256u) {
            let r = e / BK;
            let kk = e % BK;
            var v = 0.0;
            if (b0 + r < B && k0 + kk < H) {
                v = h_prev(b0 + r, k0 + kk);
            }
            h_tile[kk * MAX_BM + r] = v;
        }
        workgroupBarrier();
        for (var kk = split; kk < BK; kk += KSPLIT) {
            var wv = vec4<f32>(0.0);
            for (var g = 0u; g < G; g++) {
                wv[g] = w_tile[kk * cols + lid.x * G + g];
            }
            for (var r = 0u; r < ROWS; r++) {
                acc[r] = fma(vec4<f32>(h_tile[kk * MAX_BM + row0 + r]), wv, acc[r]);
            }
        }
        workgroupBarrier();
    }

    if (KSPLIT > 1u) {
        partial[lid.y * TJ + lid.x] = acc[0];
        workgroupBarrier();
        if (split == 0u) {
            var total = partial[lid.y * TJ + lid.x];
            for (var s = 1u; s < KSPLIT; s++) {
                total += partial[(s * lanes_per_split + lid.y) * TJ + lid.x];
            }
            acc[0] = total;
        }
    }

    let j = j0 + lid.x;
    if (j >= H || split != 0u) {
        return;
    }
    var b_hh = vec4<f32>(0.0);
    var gx_t = vec4<f32>(0.0);
    if (HAS_BIAS) {
        for (var g = 0u; g < G; g++) {
            b_hh[g] = bias[n_all + j * G + g];
        }
    }
    for (var r = 0u; r < ROWS; r++) {
        let b = b0 + row0 + r;
        if (b >= B) {
            continue;
        }
        let gh = acc[r] + b_hh;
        let gx_at = (p.t_local * B + b) * n_all + j * G;
        for (var g = 0u; g < G; g++) {
            gx_t[g] = gx[gx_at + g];
        }
        let idx = b * H + j;
        let out = (p.t_global * B + b) * H + j;
        var h = 0.0;
        var saved = vec4<f32>(0.0);
        if (CELL == LSTM) {
            let pre = gx_t + gh;
            let i_g = sigmoid_stable(pre.x);
            let f_g = sigmoid_stable(pre.y);
            let g_g = tanh_stable(pre.z);
            let o_g = sigmoid_stable(pre.w);
            let c = f_g * c_state[idx] + i_g * g_g;
            c_state[idx] = c;
            h = o_g * tanh_stable(c);
            saved = vec4<f32>(i_g, f_g, g_g, o_g);
            if (SAVE) {
                c_all[out + B * H] = c;
            }
        } else if (CELL == GRU) {
            let r_g = sigmoid_stable(gx_t.x + gh.x);
            let z_g = sigmoid_stable(gx_t.y + gh.y);
            let n_g = tanh_stable(gx_t.z + r_g * gh.z);
            h = (1.0 - z_g) * n_g + z_g * h_prev(b, j);
            saved = vec4<f32>(r_g, z_g, n_g, gh.z);
            if (SAVE) {
                c_all[out + B * H] = h;
            }
        } else {
            let pre = gx_t.x + gh.x;
            if (RELU) {
                h = max(pre, 0.0);
            } else {
                h = tanh_stable(pre);
            }
            saved.x = h;
        }
        y[out] = h;
        if (SAVE) {
            let s = select(4u, 1u, CELL != LSTM && CELL != GRU);
            for (var q = 0u; q < s; q++) {
                tape[out * s + q] = saved[q];
            }
        }
    }
}
