// One fused recurrent timestep for every cell kind: the recurrent GEMM for all G gates of a
// tile of hidden units, plus the step's input projection, then the activations and the state
// update in registers, without writing pre-activations to memory.
//
//   gh[b, j, g] = b_hh[j, g] + sum_k h_prev[b, k] * w_hh[k, j, g]      (recurrent part)
//   gx[b, j, g] = x · W_ih^T + b_ih, computed for all steps by gemm.wgsl (input part)
//
//   CELL = LSTM (G = 4: i, f, g, o):  c = F(f)*c + F(i)*Gc(g);  h = F(o)*Hc(c)
//       optional: peepholes (i, f see c_{t-1}, o sees c_t), f = 1 - i (INPUT_FORGET),
//       c clamped to [CELL_MIN, CELL_MAX] (CELL_CLIP)
//   CELL = GRU  (G = 3: r, z, n):      r = F(gx_r+gh_r), z = F(gx_z+gh_z),
//                                      n = Gc(gx_n + r*gh_n);  h = (1-z)*n + z*h_prev
//       RESET_BEFORE (ONNX linear_before_reset = 0): n = Gc(gx_n + W_hn (r*h_prev) + b_hn),
//       two dispatches per step: FPHASE 1 computes r, z from h_prev and writes r*h_prev to
//       binding 6 (T, B, H) and z to y[t]; FPHASE 2 runs the product over r*h_prev and
//       finishes n and h (its r and z columns are computed and ignored)
//   CELL = RNN  (G = 1):               h = Gc(gx + gh)
//       with PROJ (PyTorch proj_size = P): the step writes h_raw = F(o)*Hc(c) (H wide) to
//       binding 5, the host's GEMM then writes h = W_hr h_raw (P wide), and the recurrent
//       input is that projected h: K = P (p.state) instead of H
// F, Gc, Hc are the gate, cell and hidden activations (ONNX f, g, h; `activate` kinds with
// their alpha/beta; see shaders/common/cell.wgsl), applied after the optional gate clip (every pre-activation clamped to
// [-GATE_CLIP, GATE_CLIP] when GATE_CLIP > 0).
//
// h_prev is y[t_global - 1] except at the first step of a time chunk, where it is h_carry
// (h0, or the last h of the previous chunk, copied there by the host schedule). Weights, gx
// and biases are gate-interleaved (column j*G + g), so one thread owns all G gates of its
// unit. Training (SAVE) writes the tape backward needs: the pre-activations as they enter the
// gate clip (LSTM i, f, g, o with peephole terms; GRU r, z, n and gh_n; RNN the one), and the
// LSTM's c_t before the cell clip / the GRU's h_t.
// CPU twins: rnn_wgpu::cpu::{lstm_step, gru_step, rnn_step}.
//
// Bindings (group 0):
//   0 uniform  p        StepParams (dynamic offset: one entry per timestep)
//   1 read     gx       (Tc, B, H, G)     this chunk's input projection, b_ih included;
//                       FUSED_INPUT: W_ih^T (I, H, G) instead, and x_t (B, I) sits in
//                       binding 3 at p.x_at
//   2 read     w_hh     (S, H, G)         W_hh^T: row k, unit j, gate g (S = P or H)
//   3 read     h_carry  (B, H), then the peepholes (3, H) = p_i | p_f | p_o when PEEPHOLE,
//                       then the row lengths (B, f32) at p.len_at;
//                       PROJ: the projected states (T + 1, B, P), slot 0 = h0, then as above
//   4 read     bias     (2, H, G)         row 1 is b_hh (read only when HAS_BIAS)
//   5 write    y        (T, B, H)         also read: h_prev = y[t_global - 1]; PROJ: h_raw
//   6 write    c_state  (B, H)            LSTM: c_{t-1} in, c_t out (each thread owns its own);
//                                         GRU RESET_BEFORE: r*h_prev, (T, B, H)
//   7 write    tape     (T, B, H, S)      SAVE: S = 4 (LSTM, GRU) or 1 (RNN)
//   8 write    c_all    (T + 1, B, H)     SAVE: LSTM c_t (unclipped), GRU h_t, at slot t + 1
//                                         (slot 0: c0/h0)
// Lengths: row b is active at step t while t < lengths[b] (the step index of the direction's
// own frame: the host reverses each row within its length for the reverse direction). An
// inactive row writes y = 0 (PROJ: h_raw = 0; GRU phase 1: r*h_prev = 0) and leaves its cell
// state alone, so the state after the last step is the state after each row's last valid step,
// and it saves no tape (backward skips those steps).
// Dispatch: (ceil(H / 16), ceil(B / BM), 1) workgroups of 16x16 threads, BM = 16 / KSPLIT * ROWS.
// Thread (x, y) owns hidden unit j0 + x. With KSPLIT = 1 it owns batch rows b0 + y*ROWS ..
// + ROWS and the whole reduction. Small batches cannot fill 16 rows, so KSPLIT > 1 splits the
// reduction instead: lane y = s * (16 / KSPLIT) + r works on row b0 + r and on every KSPLIT-th
// k of each slab (k = s, s + KSPLIT, ...); the KSPLIT partial sums are then added in a fixed
// order in workgroup memory. Every thread has work even at B = 1.

override FPHASE: u32 = 0u; // GRU RESET_BEFORE: 1 (r, z) or 2 (n, h); else 0
override HAS_BIAS: bool = true;
override ROWS: u32 = 1u;    // batch rows per thread: 1, 2 or 4 (only with KSPLIT = 1)
override KSPLIT: u32 = 1u;  // lanes sharing one row's reduction: 1, 2, 4, 8 or 16
override SAVE: bool = false; // training: write the tape (bindings 7 and 8)
// A one-step pass (a streaming session step): the step computes its own input projection
// x_t · W_ih^T + b_ih instead of reading a GEMM's, in the GEMM's exact arithmetic (one fma
// chain over k = 0..I-1 from zero, then + b_ih), so the result is bit-identical to the
// batched path and a session step needs one dispatch instead of two.
override FUSED_INPUT: bool = false;

struct StepParams {
    batch: u32,
    hidden: u32,
    t_local: u32,
    t_global: u32,
    state: u32, // S: the recurrent state's width, P with PROJ, else H
    steps: u32, // T
    len_at: u32, // where the row lengths (B, f32) sit in binding 3
    input: u32, // I (FUSED_INPUT)
    x_at: u32, // where x_t (B, I) sits in binding 3 (FUSED_INPUT)
    _pad0: u32,
    _pad1: u32,
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

// The vector the recurrent product runs over: h_prev, or r*h_prev in FPHASE 2.
fn gemm_input(b: u32, k: u32) -> f32 {
    if (FPHASE == 2u) {
        return c_state[(p.t_global * p.batch + b) * p.hidden + k];
    }
    return h_prev(b, k);
}

fn h_prev(b: u32, k: u32) -> f32 {
    if (PROJ) {
        return h_carry[(p.t_global * p.batch + b) * p.state + k];
    }
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
    let S = p.state;
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

    for (var k0 = 0u; k0 < S; k0 += BK) {
        // W tile: 16 k x (16 units * G gates), consecutive threads on consecutive columns.
        for (var e = li; e < BK * cols; e += 256u) {
            let kw = e / cols;
            let cw = e % cols;
            var w = 0.0;
            if (k0 + kw < S && j0 * G + cw < n_all) {
                w = w_hh[(k0 + kw) * n_all + j0 * G + cw];
            }
            w_tile[kw * cols + cw] = w;
        }
        // h tile: bm rows x 16 k, consecutive threads on consecutive k.
        for (var e = li; e < bm * BK; e += 256u) {
            let r = e / BK;
            let kk = e % BK;
            var v = 0.0;
            if (b0 + r < B && k0 + kk < S) {
                v = gemm_input(b0 + r, k0 + kk);
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
        let out = (p.t_global * B + b) * H + j;
        if (p.t_global >= u32(h_carry[p.len_at + b])) {
            y[out] = 0.0;
            if (CELL == GRU && FPHASE == 1u) {
                c_state[out] = 0.0;
            }
            continue;
        }
        let gh = acc[r] + b_hh;
        if (FUSED_INPUT) {
            let x_row = p.x_at + b * p.input;
            for (var g = 0u; g < G; g++) {
                var a = 0.0;
                for (var k = 0u; k < p.input; k++) {
                    a = fma(h_carry[x_row + k], gx[k * n_all + j * G + g], a);
                }
                if (HAS_BIAS) {
                    a += bias[j * G + g];
                }
                gx_t[g] = a;
            }
        } else {
            let gx_at = (p.t_local * B + b) * n_all + j * G;
            for (var g = 0u; g < G; g++) {
                gx_t[g] = gx[gx_at + g];
            }
        }
        let idx = b * H + j;
        var h = 0.0;
        var saved = vec4<f32>(0.0);
        if (CELL == LSTM) {
            var pre = gx_t + gh;
            let c_prev = c_state[idx];
            // The peepholes follow the recurrent-state input in binding 3.
            let peep = select(B * H, (p.steps + 1u) * B * S, PROJ);
            if (PEEPHOLE) {
                pre.x += h_carry[peep + j] * c_prev;
                pre.y += h_carry[peep + H + j] * c_prev;
            }
            let i_g = act_f(pre.x);
            var f_g = act_f(pre.y);
            if (INPUT_FORGET) {
                f_g = 1.0 - i_g;
            }
            let g_g = act_g(pre.z);
            let c_raw = f_g * c_prev + i_g * g_g;
            var c = c_raw;
            if (CELL_CLIP) {
                c = clamp(c_raw, CELL_MIN, CELL_MAX);
            }
            if (PEEPHOLE) {
                pre.w += h_carry[peep + 2u * H + j] * c;
            }
            let o_g = act_f(pre.w);
            c_state[idx] = c;
            h = o_g * act_h(c);
            saved = pre;
            if (SAVE) {
                c_all[out + B * H] = c_raw;
            }
        } else if (CELL == GRU && FPHASE == 1u) {
            let pre_r = gx_t.x + gh.x;
            let pre_z = gx_t.y + gh.y;
            let r_g = act_f(pre_r);
            c_state[out] = r_g * h_prev(b, j);
            y[out] = act_f(pre_z);
            if (SAVE) {
                tape[out * 4u] = pre_r;
                tape[out * 4u + 1u] = pre_z;
            }
            continue;
        } else if (CELL == GRU && FPHASE == 2u) {
            let pre_n = gx_t.z + gh.z;
            let n_g = act_g(pre_n);
            let z_g = y[out];
            h = (1.0 - z_g) * n_g + z_g * h_prev(b, j);
            y[out] = h;
            if (SAVE) {
                tape[out * 4u + 2u] = pre_n;
                tape[out * 4u + 3u] = 0.0;
                c_all[out + B * H] = h;
            }
            continue;
        } else if (CELL == GRU) {
            let pre_r = gx_t.x + gh.x;
            let pre_z = gx_t.y + gh.y;
            let r_g = act_f(pre_r);
            let z_g = act_f(pre_z);
            let pre_n = gx_t.z + r_g * gh.z;
            let n_g = act_g(pre_n);
            h = (1.0 - z_g) * n_g + z_g * h_prev(b, j);
            saved = vec4<f32>(pre_r, pre_z, pre_n, gh.z);
            if (SAVE) {
                c_all[out + B * H] = h;
            }
        } else {
            let pre = gx_t.x + gh.x;
            h = act_g(pre);
            saved.x = pre;
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
