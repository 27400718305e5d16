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
// Dispatch: (ceil(C / (TJ * UJ)), ceil(B / BM), 1) workgroups of WG <= 256 threads, C = H
// columns (PACK: ceil(H / 4)), BM = RL * ROWS where RL = WG / (TJ * KSPLIT) row lanes. The
// host chooses TJ, UJ, KSPLIT, ROWS, STAGE and WG per problem (`forward_tiling`): enough
// workgroups to fill a large GPU even at B = 1 (at least 128 whenever H >= 512), no idle
// lanes, and from B = 32 a register tile of several columns by several rows per thread.
// Thread li = (rl * KSPLIT + s) * TJ + x owns columns c0 + x + u * TJ (u < UJ, c0 = wg.x *
// TJ * UJ; a column is one hidden unit, with PACK, the plain RNN, units 4c .. 4c + 3, one
// vec4 of weights per k; x fastest, so at each u a warp's weight loads cover whole runs of
// consecutive columns: coalesced), batch rows b0 + rl * ROWS .. + ROWS, and the k subset s.
// Two ways to run the product:
// - Register-free (STAGE = false, UJ = 1, small batch): thread s sums the 4-wide chunks
//   k = 4 * (s + KSPLIT * i) .. + 3. Per chunk it loads the 4 weight rows of its unit (all
//   gates of one row as one vec4), then for each of its rows the 4 inputs, and chains 4 vec4
//   FMAs per row (weights reused ROWS times, the next chunk's weights loaded before this
//   chunk's FMAs). No workgroup memory and no barrier in the main loop. With KSPLIT > 1 the
//   KSPLIT partial sums of a (unit, row) are then added by a fixed-shape tree in workgroup
//   memory (conflict-free: thread li writes and reads slot li and li + stride * TJ,
//   consecutive threads on consecutive vec4s), or with SUBGROUPS by the same tree of
//   subgroup shuffles.
// - Register-tiled (STAGE, KSPLIT = 1, UJ = 2, ROWS = 4 or 8; B >= 32): a GEMM tile. k runs
//   in slabs of KS = 256 / (TJ * UJ) rows. Each slab of W_hh^T (KS rows of the workgroup's
//   TJ * UJ columns: 256 gate vec4s, in `partial`, row-major, so a warp's reads are
//   consecutive vec4s) and of h_prev (KS rows of its BM batch rows, k-major, BM / 4 vec4s per
//   row plus one of padding, in `h_tile`) is staged once by the whole workgroup (weights as
//   vec4 loads along a weight row, states 8 or 16 threads along a state row: coalesced; the
//   transposed state stores land in distinct banks thanks to the padding), the next slab's
//   global loads issued into registers before this slab's FMAs. Per k a thread reads UJ
//   weight vec4s and ROWS / 4 state vec4s (4 rows each; broadcast to the threads of a row
//   lane) and runs UJ * ROWS vec4 FMAs: 16 (or 8) accumulators, each weight read from
//   workgroup memory feeding ROWS FMAs and each state vec4 UJ * 4.
// Either way each (unit, row) is one fma chain over k ascending (per k subset, then the
// fixed tree), so results are bit-identical from run to run, and a one-step pass (a session
// step) of the same B and H runs the same tiling, so the same arithmetic.

// Bounds (why the kernel may run without wgpu's runtime checks): the plan sizes every binding
// from (T, B, H, S, G, I) and checks them before any GPU work. Weights are read only for
// columns < C (threads whose column is past C skip the register-free loop; STAGE's staged
// columns are clamped to C - 1) and k < S (`weights` returns
// zero past S), and their buffer is allocated in whole vec4s. Inputs are read for k < S
// (`input_at`) and rows clamped to B - 1; t_global < T and t_local < Tc come from the plan's
// uniforms. The epilogue skips columns >= C and rows >= B. `partial` is indexed by li and
// li + stride * TJ < 256 (stride < KSPLIT), and with STAGE by li + i * WG < 256 (i < 256 /
// WG) and kk * TJ * UJ + x + u * TJ < KS * TJ * UJ = 256; `h_tile` by (e % KS) * (BM / 4 + 1)
// + e / (4 KS) and kk * (BM / 4 + 1) + row0 / 4 + q, both < KS * (BM / 4 + 1) <= 272: the
// host keeps BM <= 64, KS * BM <= 4 * WG, TJ * UJ >= 16 (KS <= 16), 64 <= WG <= 256. Loops
// are bounded by S (in steps of 4 * KSPLIT or KS >= 8), ROWS <= 4 (STAGE: 8), UJ * ROWS <= 16, 256 / WG
// <= 4, KSPLIT, G <= 4 and I; no division by a runtime value (the host passes nonzero B, H,
// S).

override FPHASE: u32 = 0u; // GRU RESET_BEFORE: 1 (r, z) or 2 (n, h); else 0
override HAS_BIAS: bool = true;
override TJ: u32 = 16u;     // thread columns per workgroup: 1 to 16
override KSPLIT: u32 = 1u;  // threads sharing one unit's reduction: a power of two
override ROWS: u32 = 1u;    // batch rows per thread: 1, 2, 4 or 8 (STAGE: 4 or 8)
override UJ: u32 = 1u;      // columns (units, or PACK groups of 4) per thread: 1 (STAGE: 2)
// Stage the slabs of weights and h_prev in workgroup memory (KSPLIT = 1 only).
override STAGE: bool = false;
// STAGE: k rows per slab, so that a weight slab is 256 vec4s.
override KS: u32 = 256u / (TJ * UJ);
override SAVE: bool = false; // training: write the tape (bindings 7 and 8)
// A one-step pass (a streaming session step): the step computes its own input projection
// x_t · W_ih^T + b_ih instead of reading a GEMM's, in the GEMM's exact arithmetic (one fma
// chain over k = 0..I-1 from zero, then + b_ih), so the result is bit-identical to the
// batched path and a session step needs one dispatch instead of two.
override FUSED_INPUT: bool = false;
// Reduce the k split with subgroup shuffles instead of workgroup memory (set by the host when
// the device has subgroups and a reduction's KSPLIT * TJ threads fit in its smallest one).
override SUBGROUPS: bool = false;
// The plain RNN (G = 1): each thread owns 4 consecutive units, whose weights at one k are one
// vec4, instead of one unit whose vec4 would be 3/4 empty. TJ then counts groups of 4 units.
override PACK: bool = false;
override UNIT_SPAN: u32 = select(1u, 4u, PACK);

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
// Bindings 1 (gx) and 2 (w_hh) are declared by the weight-precision snippet the host
// prepends (src/gpu/shaders.rs), with their accessors: `gx_read(i)`, element i of binding 1
// as f32, and `w_hh4(q)`, elements 4q .. 4q + 3 of W_hh^T as one vec4 (with G = 4 the gates
// of one unit at one k). f32 weights: gx is array<f32>, w_hh array<vec4<f32>>. f16 weights
// (F16_WEIGHTS, inference only): W_hh^T and, with FUSED_INPUT, W_ih^T hold f16 pairs in u32
// words (element 2w in the low half of word w; unpack2x16float, f32 from then on), so w_hh
// is array<vec2<u32>> and gx array<u32> (f32 bits of the GEMM's gx when not fused).
// Parameter buffers are allocated in whole 16-byte (f32) or 8-byte (f16) vec4 words, so the
// last vec4 is always in the buffer.
@group(0) @binding(3) var<storage, read> h_carry: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;
@group(0) @binding(6) var<storage, read_write> c_state: array<f32>;
@group(0) @binding(7) var<storage, read_write> tape: array<f32>;
@group(0) @binding(8) var<storage, read_write> c_all: array<f32>;

// Threads per workgroup (at most 256): TJ * KSPLIT * row lanes, chosen by the host.
override WG: u32 = 256u;

// KSPLIT > 1: one per thread. STAGE: the weight slab, KS rows of TJ * UJ columns.
var<workgroup> partial: array<vec4<f32>, 256>;
// STAGE: the h_prev slab, k-major: KS rows of the workgroup's BM batch rows as BM / 4
// vec4s, plus one vec4 of padding.
var<workgroup> h_tile: array<vec4<f32>, 272>;

// The G gate weights of unit j at row k of W_hh^T; zero past the state (k >= S).
// PACK (the plain RNN, G = 1): the weights of units j .. j + 3 instead, zero past H.
fn weights(k: u32, j: u32) -> vec4<f32> {
    if (k >= p.state) {
        return vec4<f32>(0.0);
    }
    if (PACK) {
        let e = k * p.hidden + j;
        if (p.hidden % 4u == 0u) {
            return w_hh4(e / 4u);
        }
        var w = vec4<f32>(0.0);
        for (var u = 0u; u < 4u; u++) {
            if (j + u < p.hidden) {
                w[u] = w_hh4((e + u) / 4u)[(e + u) % 4u];
            }
        }
        return w;
    }
    let e = (k * p.hidden + j) * G;
    if (G == 4u) {
        return w_hh4(e / 4u);
    }
    var w = vec4<f32>(0.0);
    for (var g = 0u; g < G; g++) {
        let q = e + g;
        w[g] = w_hh4(q / 4u)[q % 4u];
    }
    return w;
}

// Where row b of the vector the product runs over starts, and in which binding (0: y,
// 1: h_carry, 2: c_state): h_prev, or r*h_prev in FPHASE 2.
fn input_row(b: u32) -> vec2<u32> {
    if (FPHASE == 2u) {
        return vec2<u32>((p.t_global * p.batch + b) * p.hidden, 2u);
    }
    return state_row(b);
}

// Where row b of h_prev starts, and in which binding.
fn state_row(b: u32) -> vec2<u32> {
    if (PROJ) {
        return vec2<u32>((p.t_global * p.batch + b) * p.state, 1u);
    }
    if (p.t_local == 0u) {
        return vec2<u32>(b * p.hidden, 1u);
    }
    return vec2<u32>(((p.t_global - 1u) * p.batch + b) * p.hidden, 0u);
}

fn input_at(row: vec2<u32>, k: u32) -> f32 {
    if (k >= p.state) {
        return 0.0;
    }
    switch (row.y) {
        case 0u: {
            return y[row.x + k];
        }
        case 1u: {
            return h_carry[row.x + k];
        }
        default: {
            return c_state[row.x + k];
        }
    }
}

// Inputs k .. k + 3 of a row: one branch on the (uniform) source per chunk, and no bounds
// test for a whole chunk inside the state.
fn inputs4(row: vec2<u32>, k: u32) -> vec4<f32> {
    if (k + 4u > p.state) {
        return vec4<f32>(input_at(row, k), input_at(row, k + 1u), input_at(row, k + 2u),
                         input_at(row, k + 3u));
    }
    let at = row.x + k;
    switch (row.y) {
        case 0u: {
            return vec4<f32>(y[at], y[at + 1u], y[at + 2u], y[at + 3u]);
        }
        case 1u: {
            return vec4<f32>(h_carry[at], h_carry[at + 1u], h_carry[at + 2u], h_carry[at + 3u]);
        }
        default: {
            return vec4<f32>(c_state[at], c_state[at + 1u], c_state[at + 2u], c_state[at + 3u]);
        }
    }
}

fn h_prev(b: u32, k: u32) -> f32 {
    return input_at(state_row(b), k);
}
@compute @workgroup_size(WG, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    if (STAGE) {
        staged(wg, li);
        return;
    }
    let H = p.hidden;
    let S = p.state;
    let B = p.batch;
    let lanes = WG / (TJ * KSPLIT);                 // row lanes
    let x = li % TJ;
    let split = (li / TJ) % KSPLIT;                 // which k subset this thread sums
    let row0 = (li / (TJ * KSPLIT)) * ROWS;         // first tile row this thread owns
    let j0 = wg.x * TJ;
    let b0 = wg.y * lanes * ROWS;
    let n_all = H * G;
    let j = (j0 + x) * UNIT_SPAN;                   // first unit of this thread
    var acc: array<vec4<f32>, 4>;                   // [row] -> gates in .xyzw

    if (j < H) {
        var rows: array<vec2<u32>, 4>;
        for (var r = 0u; r < ROWS; r++) {
            rows[r] = input_row(min(b0 + row0 + r, B - 1u));
        }
        let step = 4u * KSPLIT;
        var k = 4u * split;
        var w = array<vec4<f32>, 4>(weights(k, j), weights(k + 1u, j), weights(k + 2u, j),
                                    weights(k + 3u, j));
        while (k < S) {
            // Prefetch the next chunk's weights before this chunk's FMAs.
            let kn = k + step;
            let wn = array<vec4<f32>, 4>(weights(kn, j), weights(kn + 1u, j),
                                         weights(kn + 2u, j), weights(kn + 3u, j));
            for (var r = 0u; r < ROWS; r++) {
                let h = inputs4(rows[r], k);
                var a = acc[r];
                a = fma(vec4<f32>(h.x), w[0], a);
                a = fma(vec4<f32>(h.y), w[1], a);
                a = fma(vec4<f32>(h.z), w[2], a);
                a = fma(vec4<f32>(h.w), w[3], a);
                acc[r] = a;
            }
            w = wn;
            k = kn;
        }
    }

    if (KSPLIT > 1u && SUBGROUPS) {
        // The same tree in registers: the KSPLIT threads of a (unit, row) lie in one subgroup,
        // TJ lanes apart, and each level adds the partner stride * TJ lanes away.
        for (var r = 0u; r < ROWS; r++) {
            var v = acc[r];
            for (var stride = KSPLIT / 2u; stride > 0u; stride /= 2u) {
                v = v + xor_shuffle4(v, stride * TJ);
            }
            acc[r] = v;
        }
    } else if (KSPLIT > 1u) {
        for (var r = 0u; r < ROWS; r++) {
            partial[li] = acc[r];
            workgroupBarrier();
            for (var stride = KSPLIT / 2u; stride > 0u; stride /= 2u) {
                if (split < stride) {
                    partial[li] = partial[li] + partial[li + stride * TJ];
                }
                workgroupBarrier();
            }
            acc[r] = partial[li];
            workgroupBarrier();
        }
    }

    // A fused input projection (a session step) spreads its G gate chains over the first G
    // threads of each unit's k split, one chain each, in the GEMM's exact order (k ascending
    // from zero, then + b_ih), and meets in workgroup memory: bit-identical to the batched
    // path, G times shorter than one thread running all of them.
    var fused: array<vec4<f32>, 4>;
    if (FUSED_INPUT && G > 1u && KSPLIT >= G) {
        for (var r = 0u; r < ROWS; r++) {
            let b = b0 + row0 + r;
            var a = 0.0;
            if (j < H && split < G && b < B) {
                let x_row = p.x_at + b * p.input;
                for (var k = 0u; k < p.input; k++) {
                    a = fma(h_carry[x_row + k], gx_read(k * n_all + j * G + split), a);
                }
                if (HAS_BIAS) {
                    a += bias[j * G + split];
                }
            }
            partial[li] = vec4<f32>(a, 0.0, 0.0, 0.0);
            workgroupBarrier();
            if (split == 0u) {
                for (var g = 0u; g < G; g++) {
                    fused[r][g] = partial[li + g * TJ].x;
                }
            }
            workgroupBarrier();
        }
    }

    if (j >= H || split != 0u) {
        return;
    }
    for (var r = 0u; r < ROWS; r++) {
        let b = b0 + row0 + r;
        if (b >= B) {
            continue;
        }
        if (PACK) {
            finish_packed(j, b, acc[r]);
        } else {
            finish(j, b, acc[r], fused[r]);
        }
    }
}

// The register-tiled product (STAGE, KSPLIT = 1): a GEMM tile. Slabs of KS rows of W_hh^T
// (the workgroup's TJ * UJ columns) and of h_prev (its BM rows) are staged in workgroup
// memory, the next slab's global loads issued before this slab's FMAs; thread x owns columns
// c0 + x + u * TJ (u < UJ; at each u a warp's reads are consecutive vec4s) and rows
// b0 + row0 .. + ROWS.
fn staged(wg: vec3<u32>, li: u32) {
    let S = p.state;
    let B = p.batch;
    let lanes = WG / TJ;                            // row lanes
    let x = li % TJ;
    let row0 = (li / TJ) * ROWS;
    let bm = lanes * ROWS;
    let b0 = wg.y * bm;
    let nc = TJ * UJ;
    let c0 = wg.x * nc;
    let columns = (p.hidden + UNIT_SPAN - 1u) / UNIT_SPAN;
    let hp = bm / 4u + 1u;                          // h_tile row pitch in vec4s
    let w_per = 256u / WG;                          // weight vec4s each thread stages
    let h_per = (KS * bm + WG - 1u) / WG;           // h_prev values each thread stages
    var acc: array<vec4<f32>, 16>;                  // [u * ROWS + r] -> gates in .xyzw
    var wn: array<vec4<f32>, 4>;
    var hn: array<f32, 4>;
    for (var i = 0u; i < w_per; i++) {
        let e = li + i * WG;
        wn[i] = weights(e / nc, min(c0 + e % nc, columns - 1u) * UNIT_SPAN);
    }
    for (var i = 0u; i < h_per; i++) {
        let e = li + i * WG;
        hn[i] = input_at(input_row(min(b0 + e / KS, B - 1u)), e % KS);
    }
    for (var k0 = 0u; k0 < S; k0 += KS) {
        workgroupBarrier();
        for (var i = 0u; i < w_per; i++) {
            partial[li + i * WG] = wn[i];
        }
        for (var i = 0u; i < h_per; i++) {
            let e = li + i * WG;
            let b = e / KS;
            if (e < KS * bm) {
                h_tile[(e % KS) * hp + b / 4u][b % 4u] = hn[i];
            }
        }
        workgroupBarrier();
        let kn = k0 + KS;
        for (var i = 0u; i < w_per; i++) {
            let e = li + i * WG;
            wn[i] = weights(kn + e / nc, min(c0 + e % nc, columns - 1u) * UNIT_SPAN);
        }
        for (var i = 0u; i < h_per; i++) {
            let e = li + i * WG;
            hn[i] = input_at(input_row(min(b0 + e / KS, B - 1u)), kn + e % KS);
        }
        for (var kk = 0u; kk < KS; kk++) {
            var wv: array<vec4<f32>, 4>;
            for (var u = 0u; u < UJ; u++) {
                wv[u] = partial[kk * nc + x + u * TJ];
            }
            for (var q = 0u; q < ROWS / 4u; q++) {
                let h = h_tile[kk * hp + row0 / 4u + q];
                for (var u = 0u; u < UJ; u++) {
                    let a = u * ROWS + 4u * q;
                    acc[a] = fma(vec4<f32>(h.x), wv[u], acc[a]);
                    acc[a + 1u] = fma(vec4<f32>(h.y), wv[u], acc[a + 1u]);
                    acc[a + 2u] = fma(vec4<f32>(h.z), wv[u], acc[a + 2u]);
                    acc[a + 3u] = fma(vec4<f32>(h.w), wv[u], acc[a + 3u]);
                }
            }
        }
    }
    for (var u = 0u; u < UJ; u++) {
        let col = c0 + x + u * TJ;
        for (var r = 0u; r < ROWS; r++) {
            let b = b0 + row0 + r;
            if (col >= columns || b >= B) {
                continue;
            }
            if (PACK) {
                finish_packed(col * 4u, b, acc[u * ROWS + r]);
            } else {
                finish(col, b, acc[u * ROWS + r], vec4<f32>(0.0));
            }
        }
    }
}

// The plain RNN, four units per thread: `sums[u]` is unit j + u's recurrent sum for row b.
fn finish_packed(j: u32, b: u32, sums: vec4<f32>) {
    let H = p.hidden;
    let B = p.batch;
    let n_all = H * G;
    let live = p.t_global < u32(h_carry[p.len_at + b]);
    for (var u = 0u; u < 4u && j + u < H; u++) {
        let ju = j + u;
        let out = (p.t_global * B + b) * H + ju;
        if (!live) {
            y[out] = 0.0;
            continue;
        }
        var gx_u = 0.0;
        if (FUSED_INPUT) {
            let x_row = p.x_at + b * p.input;
            for (var k = 0u; k < p.input; k++) {
                gx_u = fma(h_carry[x_row + k], gx_read(k * n_all + ju), gx_u);
            }
            if (HAS_BIAS) {
                gx_u += bias[ju];
            }
        } else {
            gx_u = gx_read((p.t_local * B + b) * n_all + ju);
        }
        var gh = sums[u];
        if (HAS_BIAS) {
            gh += bias[n_all + ju];
        }
        let pre = gx_u + gh;
        y[out] = act_g(pre);
        if (SAVE) {
            tape[out] = pre;
        }
    }
}

// Unit j of row b from its G recurrent sums `sum`: the gates, the cell update and the
// outputs. `fused`: the input projection when the k split computed it (FUSED_INPUT).
fn finish(j: u32, b: u32, sum: vec4<f32>, fused: vec4<f32>) {
    let H = p.hidden;
    let B = p.batch;
    let S = p.state;
    let n_all = H * G;
    let out = (p.t_global * B + b) * H + j;
    if (p.t_global >= u32(h_carry[p.len_at + b])) {
        y[out] = 0.0;
        if (CELL == GRU && FPHASE == 1u) {
            c_state[out] = 0.0;
        }
        return;
    }
    var b_hh = vec4<f32>(0.0);
    if (HAS_BIAS) {
        for (var g = 0u; g < G; g++) {
            b_hh[g] = bias[n_all + j * G + g];
        }
    }
    let gh = sum + b_hh;
    var gx_t = vec4<f32>(0.0);
    if (FUSED_INPUT && G > 1u && KSPLIT >= G) {
        gx_t = fused;
    } else if (FUSED_INPUT) {
        let x_row = p.x_at + b * p.input;
        for (var g = 0u; g < G; g++) {
            var a = 0.0;
            for (var k = 0u; k < p.input; k++) {
                a = fma(h_carry[x_row + k], gx_read(k * n_all + j * G + g), a);
            }
            if (HAS_BIAS) {
                a += bias[j * G + g];
            }
            gx_t[g] = a;
        }
    } else {
        let gx_at = (p.t_local * B + b) * n_all + j * G;
        for (var g = 0u; g < G; g++) {
            gx_t[g] = gx_read(gx_at + g);
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
        return;
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
        return;
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
