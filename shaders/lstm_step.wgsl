// One fused LSTM timestep: recurrent GEMM for all four gates, plus the step's input
// projection, then the activations and the cell update, without writing pre-activations.
//
//   pre[b, j, :] = gx[t_local, b, j, :] + sum_k h_prev[b, k] * w_hh[k, j, :]    (i, f, g, o)
//   c[b, j]      = sigmoid(f) * c[b, j] + sigmoid(i) * tanh(g)
//   h[b, j]      = sigmoid(o) * tanh(c[b, j])          -> y[t_global, b, j]
//
// h_prev is y[t_global - 1] except at the first step of a time chunk, where it is h_carry
// (h0, or the last h of the previous chunk, copied there by the host schedule).
// Weights and gx are gate-interleaved: the vec4 at hidden unit j holds gates (i, f, g, o), so
// one thread owns all four gates of its unit and can apply the cell update in registers.
// Training (SAVE = true) also writes the tape backward needs: the activated gates and c_t.
// CPU twin: rnn_wgpu::cpu::lstm_step.
//
// Bindings (group 0):
//   0 uniform  p        StepParams (dynamic offset: one entry per timestep)
//   1 read     gx       (Tc, B, H) vec4    this chunk's input projection, biases included
//   2 read     w_hh     (H, H) vec4        W_hh^T, row k, unit j -> 4 gates
//   3 read     h_carry  (B, H)
//   4 write    y        (T, B, H)          also read: h_prev = y[t_global - 1]
//   5 write    c_state  (B, H)             c_{t-1} in, c_t out (each thread owns its elements)
//   6 write    gates    (T, B, H) vec4     SAVE only: sigmoid(i), sigmoid(f), tanh(g), sigmoid(o)
//   7 write    c_all    (T + 1, B, H)      SAVE only: c_t at slot t + 1 (slot 0 holds c0)
// Dispatch: (ceil(H / 16), ceil(B / BM), 1) workgroups of 16x16 threads, BM = 16 / KSPLIT * ROWS.
// Thread (x, y) owns hidden unit j0 + x. With KSPLIT = 1 it owns batch rows b0 + y*ROWS ..
// + ROWS and the whole reduction. Small batches cannot fill 16 rows, so KSPLIT > 1 splits the
// reduction instead: lane y = s * (16 / KSPLIT) + r works on row b0 + r and on every KSPLIT-th
// k of each slab (k = s, s + KSPLIT, ...); the KSPLIT partial sums are then added in a fixed
// order in workgroup memory. Every thread has work even at B = 1.

override ROWS: u32 = 1u;   // batch rows per thread: 1, 2 or 4 (only with KSPLIT = 1)
override KSPLIT: u32 = 1u; // lanes sharing one row's reduction: 1, 2, 4, 8 or 16
override SAVE: bool = false; // training: write the tape (bindings 6 and 7)

struct StepParams {
    batch: u32,
    hidden: u32,
    t_local: u32,
    t_global: u32,
}

@group(0) @binding(0) var<uniform> p: StepParams;
@group(0) @binding(1) var<storage, read> gx: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> w_hh: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> h_carry: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read_write> c_state: array<f32>;
@group(0) @binding(6) var<storage, read_write> gates: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> c_all: array<f32>;

const TJ: u32 = 16u;  // hidden units per workgroup
const BK: u32 = 16u;  // k slab staged in workgroup memory
const MAX_BM: u32 = 64u;

var<workgroup> w_tile: array<vec4<f32>, 256>; // [BK][TJ]
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
    var acc: array<vec4<f32>, 4>;

    for (var k0 = 0u; k0 < H; k0 += BK) {
        // W tile: 16 k x 16 units, one vec4 per thread, consecutive threads on consecutive units.
        let kw = li / TJ;
        let jw = li % TJ;
        var w = vec4<f32>(0.0);
        if (k0 + kw < H && j0 + jw < H) {
            w = w_hh[(k0 + kw) * H + j0 + jw];
        }
        w_tile[kw * TJ + jw] = w;
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
            let wv = w_tile[kk * TJ + lid.x];
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
    for (var r = 0u; r < ROWS; r++) {
        let b = b0 + row0 + r;
        if (b < B) {
            let pre = acc[r] + gx[(p.t_local * B + b) * H + j];
            let i_g = sigmoid_stable(pre.x);
            let f_g = sigmoid_stable(pre.y);
            let g_g = tanh_stable(pre.z);
            let o_g = sigmoid_stable(pre.w);
            let idx = b * H + j;
            let c = f_g * c_state[idx] + i_g * g_g;
            c_state[idx] = c;
            let out = (p.t_global * B + b) * H + j;
            y[out] = o_g * tanh_stable(c);
            if (SAVE) {
                gates[out] = vec4<f32>(i_g, f_g, g_g, o_g);
                c_all[out + B * H] = c;
            }
        }
    }
}
