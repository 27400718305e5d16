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
//   9 .. 16    rnn_step_pair only: bindings 1 .. 8 of the layer's other direction (direction
//              1, the reverse frame), the same shapes; binding 0 serves both directions (their
//              StepParams are equal: one configuration, h_carry laid out alike)
// Layout of the source: this file declares what both directions share (the overrides,
// StepParams and binding 0, workgroup memory); shaders/rnn_step_direction.wgsl holds one
// direction's bindings 3 .. 8 and code (bindings 1, 2 come from the weight snippet of
// src/gpu/shaders.rs). `rnn_step` is that once; `rnn_step_pair` is that twice, the second
// copy's names suffixed `_d1` and its bindings moved to 9 .. 16 (src/gpu/wgsl_copy.rs), so
// each direction runs exactly the one-direction kernel's code: results are bit-identical.
// Lengths: row b is active at step t while t < lengths[b] (the step index of the direction's
// own frame: the host reverses each row within its length for the reverse direction). An
// inactive row writes y = 0 (PROJ: h_raw = 0; GRU phase 1: r*h_prev = 0) and leaves its cell
// state alone, so the state after the last step is the state after each row's last valid step,
// and it saves no tape (backward skips those steps).
// Dispatch: (ceil(C / (TJ * UJ)), ceil(B / BM), Z) workgroups of WG <= 256 threads, Z = 1
// (`rnn_step`) or 2 (`rnn_step_pair`: workgroup_id.z is the direction; both directions of a
// bidirectional layer's step in one dispatch, where the device allows 16 storage buffers per
// stage, so a step pays for one barrier instead of two), C = H
// columns (PACK: ceil(H / 4)), BM = RL * ROWS where RL = WG / (TJ * KSPLIT) row lanes. The
// host chooses TJ, UJ, KSPLIT, ROWS, STAGE and WG per problem (`forward_tiling`): enough
// workgroups to fill a large GPU even at B = 1 (at least 128 whenever H >= 512), no idle
// lanes, and from B = 32 a register tile of several columns by several rows per thread.
// Thread li = (rl * KSPLIT + s) * TJ + x owns columns c0 + x + u * TJ (u < UJ, c0 = wg.x *
// TJ * UJ; a column is one hidden unit, with PACK, the plain RNN, units 4c .. 4c + 3, one
// vec4 of weights per k; x fastest, so at each u a warp's weight loads cover whole runs of
// consecutive columns: coalesced), batch rows b0 + rl * ROWS .. + ROWS, and the k subset s.
// With SUBGROUPS the split is fastest instead, li = (rl * TJ + x) * KSPLIT + s, so that the
// KSPLIT threads of a reduction are consecutive lanes of one subgroup. The host sets it where
// KSPLIT * TJ fits in the smallest subgroup (both orders then load the same addresses per
// subgroup) or 2 * KSPLIT does (a subgroup still reads 2 columns, 32 bytes, of each weight
// row; its shuffles replace a barrier per tree level).
// Two ways to run the product:
// - Register-free (STAGE = false, UJ = 1, small batch): thread s sums the 4-wide chunks
//   k = 4 * (s + KSPLIT * i) .. + 3. Per chunk it loads the 4 weight rows of its unit (all
//   gates of one row as one vec4), then for each of its rows the 4 inputs, and chains 4 vec4
//   FMAs per row (weights reused ROWS times, the next chunk's weights loaded before this
//   chunk's FMAs). No workgroup memory and no barrier in the main loop. With KSPLIT > 1 the
//   KSPLIT partial sums of a (unit, row) are then added by a fixed-shape tree in workgroup
//   memory, all rows at once (conflict-free: thread li writes and reads slots r * WG + li
//   and r * WG + li + stride * TJ, consecutive threads on consecutive vec4s; one barrier
//   per level), or with SUBGROUPS by the same tree of subgroup shuffles. The KSPLIT threads
//   then share the epilogue: split s finishes rows s, s + KSPLIT, ...
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
// uniforms. The epilogue skips columns >= C and rows >= B. `partial` is indexed by r * WG +
// li + stride * TJ < 512 (r < 512 / WG, s + stride < KSPLIT), and with STAGE by li + i * WG <
// 256 (i < 256 / WG) and kk * TJ * UJ + x + u * TJ < KS * TJ * UJ = 256; `h_tile` by
// (e % KS) * (BM / 4 + 1) + e / (4 KS) and kk * (BM / 4 + 1) + row0 / 4 + q, both < KS * (BM / 4 + 1) <= 272: the
// host keeps BM <= 64, KS * BM <= 4 * WG, TJ * UJ >= 16 (KS <= 16), 64 <= WG <= 256. Loops
// are bounded by S (in steps of 4 * KSPLIT or KS >= 8), ROWS <= 4 (STAGE: 8), UJ * ROWS <= 16, 256 / WG
// <= 4, KSPLIT, G <= 4 and I; no division by a runtime value (the host passes nonzero B, H,
// S). rnn_step_pair: workgroup_id.z < 2 only picks which copy runs; each copy indexes its own
// direction's bindings exactly as above (both directions have the same shapes, checked by
// the same plan), and the two share `partial` and `h_tile` (a workgroup runs one copy).

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
// the device has subgroups and a reduction's threads fit in its smallest one; the split is
// then the fastest thread index; see "Thread li" above).
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

// Threads per workgroup (at most 256): TJ * KSPLIT * row lanes, chosen by the host.
override WG: u32 = 256u;

// KSPLIT > 1: up to 512 / WG rows of partial sums per thread. STAGE: the weight slab, KS
// rows of TJ * UJ columns (256 vec4s).
var<workgroup> partial: array<vec4<f32>, 512>;
// STAGE: the h_prev slab, k-major: KS rows of the workgroup's BM batch rows as BM / 4
// vec4s, plus one vec4 of padding.
var<workgroup> h_tile: array<vec4<f32>, 272>;
