// One fused timestep of backpropagation through time, for every cell kind.
//
//   dh[b, k] = dy[t, b, k] + carry[b, k] + sum_n dG[t+1, b, n] * W_hh[n, k]   (t < T-1)
//
// where n runs over (unit j, gate g) and W_hh^T is stored as the forward pass uses it,
// (H, H, G): row k is contiguous in n. `carry` holds what reaches h_{t} directly rather than
// through W_hh: dh_n at the last step (copied in by the host), and for the GRU z * dh of the
// step after. Then, from the tape the forward pass saved:
//
//   LSTM: do = dh*H(c)*F'(o~); dc' = (dc + dh*o*H'(c) + do*p_o) * [c inside the cell clip];
//         di = dc'*g*F'(i~) (minus df under INPUT_FORGET), df = dc'*c_prev*F'(f~),
//         dg = dc'*i*G'(g~); dc_{t-1} = dc'*f + di*p_i + df*p_f; carry = 0;
//         with peepholes, dGx holds the products di*c_prev | df*c_prev | do*c laid out
//         (T, B, 3, H) for their column sums
//   GRU:  dn = dh*(1-z)*G'(n~); dz = dh*(h_prev-n)*F'(z~); dr = dn*gh_n*F'(r~);
//         dGx = (dr, dz, dn) for the input side, dG = (dr, dz, dn*r) for the recurrent side;
//         carry = dh*z
//   RNN:  dG = dh * G'(pre); carry = 0
//   LSTM with projection (PROJ, state width S = P): two kernels per step around a host GEMM.
//         PHASE 1: dh[b, k] for the P state units (the sum above), written to binding 6 as
//         dh (T, B, P); the host then computes dh_raw = dh · W_hr (B, H) and binds it as dy;
//         PHASE 2: the LSTM step above per unit j < H, with dh = dh_raw (no sum, no carry).
//   GRU RESET_BEFORE (n = G(gx_n + W_hn (r*h_prev) + b_hn)): two kernels per step.
//         PHASE 3: dh as above (the sum runs over dG[t+1], whose n columns are zero); dn, dz;
//         dG gets (0, dz, 0), dGx (., dz, dn), and binding 7 (dG_n, (T, B, H, 3)) (0, 0, dn);
//         carry = dh*z. PHASE 4: d(r*h_prev) = sum_n dG_n[t, b, n] * W_hh[n, k] (the n
//         columns); dr = d(r*h_prev)*h_prev*F'(r~) into dG and dGx; carry += r*d(r*h_prev).
// where x~ is a saved pre-activation and every F', G' includes the gate clip's pass mask.
// Activated values are recomputed from the saved pre-activations.
// CPU twins: rnn_wgpu::cpu::{lstm_step_backward, gru_step_backward, rnn_step_backward}.
//
// Bindings (group 0):
//   0 uniform  p      StepBackParams (dynamic offset: one entry per timestep)
//   1 read     tape   (T, B, H, S)      pre-activations saved by the forward pass (S = 4, or 1
//                                       for RNN), then the peepholes (3, H) when PEEPHOLE,
//                                       then the row lengths (B, f32) at p.len_at
//   2 read     c_all  (T + 1, B, H)     LSTM: unclipped c (slot 0 = c0); GRU: h (slot 0 = h0)
//   3 read     w_hh   (H, H, G)         W_hh^T, gate-interleaved
//   4 read     dy     (T, B, H)         upstream gradient of y (read only when HAS_DY)
//   5 write    dG     (T, B, H, G)      recurrent-side pre-activation grads: writes t, reads t+1
//   6 write    dGx    (T, B, H, G)      GRU: input-side pre-activation grads (else unused)
//   7 write    dc     (B, H)            LSTM: dc_n in, dc0 out (each thread owns its own);
//                                       GRU RESET_BEFORE: dG_n (T, B, H, 3)
//   8 write    carry  (B, H)            dh_n in; the direct part of dh_{t-1} out
// Lengths: a step at or past row b's length (t >= lengths[b]) was never run forward; it writes
// zero gate gradients (so the step before sees no recurrent term from it) and leaves carry and
// dc alone, so dh_n / dc_n reach the row's last valid step untouched and padding gets nothing.
// Dispatch: (ceil(units / TK), ceil(B / BM), 1) workgroups of WG <= 256 threads. The host
// chooses the tiling per problem (`backward_tiling` in src/gpu/kernels/rnn_step_backward.rs):
// a workgroup owns TK = XG * UT output units and BM = RL * ROWS batch rows; its threads form
// XG * RL groups of KSPLIT, and group (rl, x) owns the UT x ROWS register tile of units
// k0 + x * UT + u and rows b0 + rl * ROWS + r (V = UT * ROWS <= 16 sums per thread).
// Thread li = (rl * XG + x) * KSPLIT + s; s is fastest, because the reduction runs along rows
// of W_hh^T (contiguous in n): the KSPLIT threads of a group read KSPLIT consecutive vec4s of
// each of their UT weight rows (coalesced), chunk n = 4 * (s + KSPLIT * i) .. + 3, and the
// same columns of dG[t+1] for each of their ROWS rows; one chunk is UT + ROWS vec4 loads for
// UT * ROWS vec4 FMAs, and a workgroup reads (TK + BM) rows of length H * G per step, so the
// host makes both tiles large while keeping enough workgroups. The next chunk's weights are
// loaded before this chunk's FMAs. The KSPLIT partial sums of each of the V outputs are added
// by a fixed-shape tree: in workgroup memory (thread li's value v at v * (WG + 1) + li; a
// level reads li and li + stride for all V values between two barriers: consecutive threads,
// consecutive words, no bank conflict), or with SUBGROUPS by the same tree of subgroup xor
// shuffles (every lane of the group ends with the same bits), so results are bit-identical
// from run to run and between the two paths. Then thread s < V of a group runs the epilogue
// of its output v = s (u = v % UT fastest, so neighbouring lanes write neighbouring units).
// No workgroup memory and no barrier in the main loop.

// Bounds (why the kernel may run without wgpu's runtime checks): the plan sizes every binding
// from (T, B, H, S, G) and checks them before any GPU work. The reduction reads weight rows
// clamped to units - 1 (S in phase 1, else H; rows past it are computed and dropped) and
// columns n < H * G (`weights` and `grads` mask the tail; the weights' buffer is allocated in
// whole vec4s), batch rows clamped to B - 1 and next <= (T - 1) * B (a step t + 1 < T, or t
// itself in phase 4). The epilogue returns for k >= units or b >= B; t < T comes from the
// plan's uniforms. `acc4`/`acc` are indexed by v < UT * ROWS <= 16. `partial` is indexed by
// v * (WG + 1) + li (+ stride) with v < V and li + stride < WG (stride < KSPLIT, the adding
// thread's split < stride), so below V * (WG + 1) <= 2064, the array's length: the host keeps
// V * WG <= 2048 and V <= 16. Loops are bounded by H * G, UT, ROWS, KSPLIT and G; no division
// by a runtime value.

override PHASE: u32 = 0u; // 0 fused; projection: 1 dh over the state, 2 the cell; GRU reset-before: 3, 4
override TK: u32 = 16u;   // output units per workgroup: XG * UT
override UT: u32 = 1u;    // output units per thread's register tile: 1, 2 or 4
override ROWS: u32 = 1u;  // batch rows per thread's register tile: 1, 2 or 4
override KSPLIT: u32 = 8u; // threads sharing one tile's reduction: a power of two >= 8, >= UT * ROWS
override HAS_DY: bool = true;
// W_hh^T rows start on a vec4 boundary (H * G is a multiple of 4), so chunks load as vec4s.
override ALIGNED: bool = false;
// Reduce the k split with subgroup shuffles instead of workgroup memory (set by the host when
// the device has subgroups and KSPLIT fits in its smallest one).
override SUBGROUPS: bool = false;

struct StepBackParams {
    batch: u32,
    hidden: u32,
    t: u32,
    steps: u32, // T; at t == T - 1 there is no recurrent term
    state: u32, // S: width of the recurrent state, P with a projection, else H
    len_at: u32, // where the row lengths (B, f32) sit in binding 1
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: StepBackParams;
@group(0) @binding(1) var<storage, read> tape: array<f32>;
@group(0) @binding(2) var<storage, read> c_all: array<f32>;
// Read as vec4s; parameter buffers are allocated in whole 16-byte words.
@group(0) @binding(3) var<storage, read> w_hh: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> dG: array<f32>;
@group(0) @binding(6) var<storage, read_write> dGx: array<f32>;
@group(0) @binding(7) var<storage, read_write> dc: array<f32>;
@group(0) @binding(8) var<storage, read_write> carry: array<f32>;

// Threads per workgroup (at most 256): XG * KSPLIT * RL, chosen by the host.
override WG: u32 = 256u;

// V values per thread, padded rows of WG + 1 words (the host keeps V * WG <= 2048).
var<workgroup> partial: array<f32, 2064>;

// Columns n .. n + 3 of row k of W_hh^T (zero past the row's n_all columns).
fn weights(k: u32, n: u32, n_all: u32) -> vec4<f32> {
    let e = k * n_all + n;
    if (ALIGNED && n + 4u <= n_all) {
        return w_hh[e / 4u];
    }
    var w = vec4<f32>(0.0);
    for (var q = 0u; q < 4u; q++) {
        if (n + q < n_all) {
            w[q] = w_hh[(e + q) / 4u][(e + q) % 4u];
        }
    }
    return w;
}

// Columns n .. n + 3 of row `row` of the gradient being reduced (dG[t+1], or dG_n[t] in
// phase 4), zero past n_all.
fn grads(row: u32, n: u32, n_all: u32) -> vec4<f32> {
    let at = row * n_all + n;
    if (n + 4u <= n_all) {
        if (PHASE == 4u) {
            return vec4<f32>(dc[at], dc[at + 1u], dc[at + 2u], dc[at + 3u]);
        }
        return vec4<f32>(dG[at], dG[at + 1u], dG[at + 2u], dG[at + 3u]);
    }
    var v = vec4<f32>(0.0);
    for (var q = 0u; q < 4u; q++) {
        if (n + q < n_all) {
            if (PHASE == 4u) {
                v[q] = dc[row * n_all + n + q];
            } else {
                v[q] = dG[row * n_all + n + q];
            }
        }
    }
    return v;
}

@compute @workgroup_size(WG, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let H = p.hidden;
    let B = p.batch;
    let n_all = H * G;
    // Output units: the state's S in phase 1, the H cell units otherwise.
    let units = select(H, p.state, PHASE == 1u);
    let xg = TK / UT;
    let lanes = WG / (xg * KSPLIT);
    let split = li % KSPLIT;
    let x = (li / KSPLIT) % xg;
    let row0 = (li / (xg * KSPLIT)) * ROWS;
    let kt = wg.x * TK + x * UT;
    let b0 = wg.y * lanes * ROWS;
    let V = UT * ROWS;
    var acc: array<f32, 16>; // [r * UT + u]

    // Phase 4 reduces this step's dG_n; every other reducing phase the next step's dG.
    if (((p.t + 1u < p.steps && PHASE != 2u) || PHASE == 4u) && kt < units) {
        let next = select((p.t + 1u) * B, p.t * B, PHASE == 4u);
        var acc4: array<vec4<f32>, 16>;
        var w: array<vec4<f32>, 4>;
        var wn: array<vec4<f32>, 4>;
        let step = 4u * KSPLIT;
        var n = 4u * split;
        for (var u = 0u; u < UT; u++) {
            w[u] = weights(min(kt + u, units - 1u), n, n_all);
        }
        while (n < n_all) {
            let nn = n + step;
            for (var u = 0u; u < UT; u++) {
                wn[u] = weights(min(kt + u, units - 1u), nn, n_all);
            }
            for (var r = 0u; r < ROWS; r++) {
                let g = grads(next + min(b0 + row0 + r, B - 1u), n, n_all);
                for (var u = 0u; u < UT; u++) {
                    acc4[r * UT + u] = fma(g, w[u], acc4[r * UT + u]);
                }
            }
            w = wn;
            n = nn;
        }
        for (var v = 0u; v < V; v++) {
            acc[v] = (acc4[v].x + acc4[v].y) + (acc4[v].z + acc4[v].w);
        }
    }

    // This thread's output: v = split (when split < V), the sum of its group's KSPLIT partials.
    var sum = 0.0;
    if (KSPLIT > 1u && SUBGROUPS) {
        // The same tree in registers: the KSPLIT threads of a group are consecutive lanes of
        // one subgroup, and each level adds the partner `stride` lanes away (a + b on one lane,
        // b + a on its partner: the same bits), so every lane ends with every total.
        for (var v = 0u; v < V; v++) {
            var t = acc[v];
            for (var stride = KSPLIT / 2u; stride > 0u; stride /= 2u) {
                t = t + xor_shuffle(t, stride);
            }
            acc[v] = t;
        }
        sum = acc[min(split, V - 1u)];
    } else if (KSPLIT > 1u) {
        for (var v = 0u; v < V; v++) {
            partial[v * (WG + 1u) + li] = acc[v];
        }
        workgroupBarrier();
        for (var stride = KSPLIT / 2u; stride > 0u; stride /= 2u) {
            if (split < stride) {
                for (var v = 0u; v < V; v++) {
                    let at = v * (WG + 1u) + li;
                    partial[at] = partial[at] + partial[at + stride];
                }
            }
            workgroupBarrier();
        }
        // Group base li - split holds the totals; lanes s < V read value s (stride WG + 1
        // words apart: distinct banks).
        sum = partial[min(split, V - 1u) * (WG + 1u) + li - split];
    } else {
        sum = acc[0];
    }

    if (split >= V) {
        return;
    }
    let k = kt + split % UT;
    let b = b0 + row0 + split / UT;
    if (k >= units || b >= B) {
        return;
    }
    if (PHASE == 1u) {
        let idx = b * units + k;
        let at = p.t * B * units + idx;
        if (p.t >= u32(tape[p.len_at + b])) {
            dGx[at] = 0.0;
            return;
        }
        var dh = sum + carry[idx];
        if (HAS_DY) {
            dh += dy[at];
        }
        dGx[at] = dh;
        carry[idx] = 0.0;
        return;
    }
    let idx = b * H + k;
    let at = p.t * B * H + idx;
    let g_at = at * G;
    if (p.t >= u32(tape[p.len_at + b])) {
        for (var g = 0u; g < G; g++) {
            dG[g_at + g] = 0.0;
            if (CELL == GRU) {
                dGx[g_at + g] = 0.0;
            }
            if (CELL == GRU && PHASE == 3u) {
                dc[g_at + g] = 0.0;
            }
        }
        if (CELL == LSTM && PEEPHOLE) {
            let row = (p.t * B + b) * 3u * H;
            dGx[row + k] = 0.0;
            dGx[row + H + k] = 0.0;
            dGx[row + 2u * H + k] = 0.0;
        }
        return;
    }
    var dh = 0.0;
    if (PHASE == 2u) {
        dh = dy[idx];
    } else {
        dh = sum + carry[idx];
        if (HAS_DY) {
            dh += dy[at];
        }
    }
    if (CELL == LSTM) {
        let pre_i = tape[at * 4u];
        let pre_f = tape[at * 4u + 1u];
        let pre_g = tape[at * 4u + 2u];
        let pre_o = tape[at * 4u + 3u];
        let i_g = act_f(pre_i);
        var f_g = act_f(pre_f);
        if (INPUT_FORGET) {
            f_g = 1.0 - i_g;
        }
        let g_g = act_g(pre_g);
        let o_g = act_f(pre_o);
        // c_prev is c0 itself at t = 0, else the clipped cell state of step t - 1.
        var c_prev = c_all[at];
        if (p.t > 0u) {
            c_prev = cell_clip(c_prev);
        }
        let c_raw = c_all[at + B * H];
        let c = cell_clip(c_raw);
        let hc = activate(ACT_H, c, ALPHA_H, BETA_H);
        let d_o = dh * hc * grad_f(pre_o);
        var dct = dc[idx] + dh * o_g * activate_grad(ACT_H, c, ALPHA_H, BETA_H);
        let peep = p.steps * B * H * 4u;
        if (PEEPHOLE) {
            dct += d_o * tape[peep + 2u * H + k];
        }
        if (CELL_CLIP && (c_raw < CELL_MIN || c_raw > CELL_MAX)) {
            dct = 0.0;
        }
        var di = dct * g_g;
        let df = dct * c_prev;
        var d_f = 0.0;
        if (INPUT_FORGET) {
            di -= df;
        } else {
            d_f = df * grad_f(pre_f);
        }
        let d_i = di * grad_f(pre_i);
        let d_g = dct * i_g * grad_g(pre_g);
        var dc_prev = dct * f_g;
        if (PEEPHOLE) {
            dc_prev += d_i * tape[peep + k] + d_f * tape[peep + H + k];
            let row = (p.t * B + b) * 3u * H;
            dGx[row + k] = d_i * c_prev;
            dGx[row + H + k] = d_f * c_prev;
            dGx[row + 2u * H + k] = d_o * c;
        }
        dc[idx] = dc_prev;
        dG[g_at] = d_i;
        dG[g_at + 1u] = d_f;
        dG[g_at + 2u] = d_g;
        dG[g_at + 3u] = d_o;
        if (PHASE == 0u) {
            carry[idx] = 0.0;
        }
    } else if (CELL == GRU && PHASE == 3u) {
        let pre_z = tape[at * 4u + 1u];
        let pre_n = tape[at * 4u + 2u];
        let z_g = act_f(pre_z);
        let n_g = act_g(pre_n);
        let dn = dh * (1.0 - z_g) * grad_g(pre_n);
        let dz = dh * (c_all[at] - n_g) * grad_f(pre_z);
        dGx[g_at + 1u] = dz;
        dGx[g_at + 2u] = dn;
        dG[g_at] = 0.0;
        dG[g_at + 1u] = dz;
        dG[g_at + 2u] = 0.0;
        dc[g_at] = 0.0;
        dc[g_at + 1u] = 0.0;
        dc[g_at + 2u] = dn;
        carry[idx] = dh * z_g;
    } else if (CELL == GRU && PHASE == 4u) {
        let pre_r = tape[at * 4u];
        let d_rh = sum;
        let dr = d_rh * c_all[at] * grad_f(pre_r);
        dGx[g_at] = dr;
        dG[g_at] = dr;
        carry[idx] += act_f(pre_r) * d_rh;
    } else if (CELL == GRU) {
        let pre_r = tape[at * 4u];
        let pre_z = tape[at * 4u + 1u];
        let pre_n = tape[at * 4u + 2u];
        let gh_n = tape[at * 4u + 3u];
        let r_g = act_f(pre_r);
        let z_g = act_f(pre_z);
        let n_g = act_g(pre_n);
        let h_prev = c_all[at];
        let dn = dh * (1.0 - z_g) * grad_g(pre_n);
        let dz = dh * (h_prev - n_g) * grad_f(pre_z);
        let dr = dn * gh_n * grad_f(pre_r);
        dGx[g_at] = dr;
        dGx[g_at + 1u] = dz;
        dGx[g_at + 2u] = dn;
        dG[g_at] = dr;
        dG[g_at + 1u] = dz;
        dG[g_at + 2u] = dn * r_g;
        carry[idx] = dh * z_g;
    } else {
        dG[g_at] = dh * grad_g(tape[at]);
        carry[idx] = 0.0;
    }
}
