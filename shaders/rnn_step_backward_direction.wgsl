// One direction of the fused backward step (shaders/rnn_step_backward.wgsl has the kernel's
// header: what it computes, its bindings, dispatch and bounds). src/gpu/shaders.rs appends
// this file to the shared part once (`rnn_step_backward`), or twice for
// `rnn_step_backward_pair` (both directions of a layer in one dispatch): the second copy has
// every module-scope name it declares suffixed `_d1` and its bindings moved up by 8
// (9 .. 16), and the entry point runs `step_backward` or `step_backward_d1` by
// workgroup_id.z. So each copy touches only its own direction's buffers, with the same code
// as the one-direction kernel. No override constant or workgroup memory here: both copies
// share those of the shared part.

@group(0) @binding(1) var<storage, read> tape: array<f32>;
@group(0) @binding(2) var<storage, read> c_all: array<f32>;
// Read as vec4s; parameter buffers are allocated in whole 16-byte words.
@group(0) @binding(3) var<storage, read> w_hh: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> dG: array<f32>;
@group(0) @binding(6) var<storage, read_write> dGx: array<f32>;
@group(0) @binding(7) var<storage, read_write> dc: array<f32>;
@group(0) @binding(8) var<storage, read_write> carry: array<f32>;

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

fn step_backward(wg: vec3<u32>, li: u32) {
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
    if (KSPLIT > 1u && SUBGROUPS && KSPLIT <= SG) {
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
        // With SUBGROUPS (KSPLIT > SG >= V here) the levels below SG are shuffles.
        let low = select(1u, max(SG, 1u), SUBGROUPS);
        for (var stride = KSPLIT / 2u; stride >= low; stride /= 2u) {
            if (split < stride) {
                for (var v = 0u; v < V; v++) {
                    let at = v * (WG + 1u) + li;
                    partial[at] = partial[at] + partial[at + stride];
                }
            }
            workgroupBarrier();
        }
        if (SUBGROUPS) {
            // Splits s < SG, one subgroup, hold the partial sums of the last levels; lanes of
            // the group's other subgroups shuffle values nobody reads.
            for (var v = 0u; v < V; v++) {
                var t = partial[v * (WG + 1u) + li];
                for (var stride = SG / 2u; stride > 0u; stride /= 2u) {
                    t = t + xor_shuffle(t, stride);
                }
                acc[v] = t;
            }
            sum = acc[min(split, V - 1u)];
        } else {
            // Group base li - split holds the totals; lanes s < V read value s (stride WG + 1
            // words apart: distinct banks).
            sum = partial[min(split, V - 1u) * (WG + 1u) + li - split];
        }
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

