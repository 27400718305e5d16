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
//   9 .. 16    rnn_step_backward_pair only: bindings 1 .. 8 of the layer's other direction
//              (direction 1, the reverse frame), the same shapes; binding 0 serves both
//              directions (their StepBackParams are equal: one configuration, one step index,
//              tapes laid out alike)
// Layout of the source: this file declares what both directions share (the overrides,
// StepBackParams and binding 0, workgroup memory); shaders/rnn_step_backward_direction.wgsl
// holds one direction's bindings 1 .. 8 and code (`fn step_backward`).
// `rnn_step_backward` is that once; `rnn_step_backward_pair` is that twice, the second copy's
// names suffixed `_d1` and its bindings moved to 9 .. 16 (src/gpu/wgsl_copy.rs), so each
// direction runs exactly the one-direction kernel's code: results are bit-identical.
// Lengths: a step at or past row b's length (t >= lengths[b]) was never run forward; it writes
// zero gate gradients (so the step before sees no recurrent term from it) and leaves carry and
// dc alone, so dh_n / dc_n reach the row's last valid step untouched and padding gets nothing.
// Dispatch: (ceil(units / TK), ceil(B / BM), Z) workgroups of WG <= 256 threads, Z = 1
// (`rnn_step_backward`) or 2 (`rnn_step_backward_pair`: workgroup_id.z is the direction; both
// directions of a bidirectional layer's reverse step, phase by phase, in one dispatch, where
// the device allows 16 storage buffers per stage). The host
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
// shuffles (every lane of the group ends with the same bits). Where KSPLIT is wider than the
// subgroup (SG lanes) but V is not, the levels of stride >= SG run in workgroup memory and the
// last log2(SG) levels as shuffles within the group's first subgroup, which then holds every
// total: the same tree, fewer barriers. So results are bit-identical from run to run and
// between the paths. Then thread s < V of a group runs the epilogue of its output v = s (u = v % UT fastest, so neighbouring lanes write neighbouring units).
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
// by a runtime value. rnn_step_backward_pair: workgroup_id.z < 2 only picks which copy runs;
// each copy indexes its own direction's bindings exactly as above (both directions have the
// same shapes, checked by the same plan), and the two share `partial` (a workgroup runs one
// copy).

override PHASE: u32 = 0u; // 0 fused; projection: 1 dh over the state, 2 the cell; GRU reset-before: 3, 4
override TK: u32 = 16u;   // output units per workgroup: XG * UT
override UT: u32 = 1u;    // output units per thread's register tile: 1, 2 or 4
override ROWS: u32 = 1u;  // batch rows per thread's register tile: 1, 2 or 4
override KSPLIT: u32 = 8u; // threads sharing one tile's reduction: a power of two >= 8, >= UT * ROWS
override HAS_DY: bool = true;
// W_hh^T rows start on a vec4 boundary (H * G is a multiple of 4), so chunks load as vec4s.
override ALIGNED: bool = false;
// Reduce the k split with subgroup shuffles instead of workgroup memory (set by the host when
// the device has subgroups and KSPLIT, or else V, fits in its smallest one: SG lanes).
override SUBGROUPS: bool = false;
override SG: u32 = 0u;

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

// Threads per workgroup (at most 256): XG * KSPLIT * RL, chosen by the host.
override WG: u32 = 256u;

// V values per thread, padded rows of WG + 1 words (the host keeps V * WG <= 2048).
var<workgroup> partial: array<f32, 2064>;
