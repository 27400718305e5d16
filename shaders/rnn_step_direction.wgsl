// One direction of the fused recurrent step (shaders/rnn_step.wgsl has the kernel's header:
// what it computes, its bindings, dispatch and bounds). src/gpu/shaders.rs appends this file
// to the shared part once, after the weight-precision snippet that declares bindings 1 and 2
// (`rnn_step`), or twice for `rnn_step_pair` (both directions of a layer in one dispatch):
// the second copy has every module-scope name it declares suffixed `_d1` and its bindings
// moved up by 8 (9 .. 16), and the entry point runs `step` or `step_d1` by workgroup_id.z.
// So each copy touches only its own direction's buffers, with the same code as the
// one-direction kernel.

@group(0) @binding(3) var<storage, read> h_carry: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;
@group(0) @binding(6) var<storage, read_write> c_state: array<f32>;
@group(0) @binding(7) var<storage, read_write> tape: array<f32>;
@group(0) @binding(8) var<storage, read_write> c_all: array<f32>;

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

// The step of one workgroup (the entry point's body; see the header's "Dispatch").
fn step(wg: vec3<u32>, li: u32) {
    if (STAGE) {
        staged(wg, li);
        return;
    }
    let H = p.hidden;
    let S = p.state;
    let B = p.batch;
    let lanes = WG / (TJ * KSPLIT);                 // row lanes
    // The KSPLIT threads of a (column, row group) lie `ss` lanes apart: TJ (columns fastest)
    // for the workgroup-memory tree; 1 (the split fastest) with SUBGROUPS, so they share a
    // subgroup whenever KSPLIT fits in one (see the header's "Dispatch").
    let ss = select(TJ, 1u, SUBGROUPS);
    let x = select(li % TJ, (li / KSPLIT) % TJ, SUBGROUPS);
    let split = (li / ss) % KSPLIT;                 // which k subset this thread sums
    let base = li - split * ss;                     // the group's split 0
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
        // The same tree in registers: the KSPLIT threads of a (unit, row) are consecutive
        // lanes of one subgroup, and each level adds the partner `stride` lanes away (a + b on
        // one lane, b + a on its partner: the same bits), so every lane ends with every total.
        for (var r = 0u; r < ROWS; r++) {
            var v = acc[r];
            for (var stride = KSPLIT / 2u; stride > 0u; stride /= 2u) {
                v = v + xor_shuffle4(v, stride);
            }
            acc[r] = v;
        }
    } else if (KSPLIT > 1u) {
        // The tree in workgroup memory, for `rp` rows at once (as many as `partial` holds):
        // one barrier per level and pass, not per row. Split s < stride adds split s + stride;
        // the total lands in split 0's slot, and each thread reads the rows it finishes.
        let rp = min(ROWS, 512u / WG);
        for (var r0 = 0u; r0 < ROWS; r0 += rp) {
            for (var r = 0u; r < rp; r++) {
                partial[r * WG + li] = acc[r0 + r];
            }
            workgroupBarrier();
            for (var stride = KSPLIT / 2u; stride > 0u; stride /= 2u) {
                if (split < stride) {
                    for (var r = 0u; r < rp; r++) {
                        let at = r * WG + li;
                        partial[at] = partial[at] + partial[at + stride * ss];
                    }
                }
                workgroupBarrier();
            }
            for (var r = 0u; r < rp; r++) {
                if ((r0 + r) % KSPLIT == split) {
                    acc[r0 + r] = partial[r * WG + base];
                }
            }
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
            if (r % KSPLIT == split) {
                for (var g = 0u; g < G; g++) {
                    fused[r][g] = partial[base + g * ss].x;
                }
            }
            workgroupBarrier();
        }
    }

    if (j >= H) {
        return;
    }
    // The KSPLIT threads of a (unit, row group) share its epilogue: split s finishes rows s,
    // s + KSPLIT, ...
    for (var r = split; r < ROWS; r += KSPLIT) {
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
