// Classification read-out, forward: a linear layer and softmax cross-entropy over rows of
// features (PyTorch's nn.Linear(H, C) then nn.CrossEntropyLoss(), mean over rows).
// MODE picks the dispatch; a forward pass is MODE 0, 1, 2 in order:
//
//   MODE 0  logits   probs[n, c] = b[c] + sum_h F[n, h] * W[c, h]       one thread per (n, c)
//   MODE 1  softmax  m = max_c probs[n, :], s = sum_c exp(probs[n, c] - m)
//                    probs[n, c] = exp(probs[n, c] - m) / s                one thread per row
//                    row_loss[n] = log(s) + m - logit[n, target[n]]   (0 without targets)
//   MODE 2  mean     loss[0] = sum_n row_loss[n] / N      one workgroup, fixed-order tree sum
//
// The softmax subtracts the row maximum, so any finite logits give finite probabilities, and
// the loss is formed as logsumexp - logit (never log of a probability that underflowed to 0).
// No atomics: every sum has a fixed order, so results are bit-identical from run to run.
//
// CPU twin: rnn_wgpu::cpu::readout::readout_forward. Host: src/gpu/readout.rs.
//
// Bindings (group 0):
//   0 uniform     p         ReadoutParams (dynamic offset: one slot per dispatch)
//   1 read        features  (N, H)
//   2 read        weight    (C, H)
//   3 read        bias      (C)
//   4 read        targets   (N) u32 class indices, each < C (checked on the host)
//   5 read_write  probs     (N, C)   logits after MODE 0, probabilities after MODE 1
//   6 read_write  row_loss  (N)
//   7 read_write  loss      (1)
// Dispatch: MODE 0: ceil(N * C / WG) workgroups, MODE 1: ceil(N / WG), as a 2-D grid (nx, ny)
// within max_compute_workgroups_per_dimension, workgroup (x, y) numbered x + y * nx; numbers
// >= p.groups return at once. MODE 2: exactly one workgroup. WG = 256 threads.
//
// Bounds: MODE 0 writes probs[i] for i < N * C and reads F[n * H + k] (n < N, k < H) and
// W[c * H + k] (c < C); MODE 1 touches probs[n * C + c] and row_loss[n] for n < N, and reads
// targets[n] clamped below C; MODE 2 reads row_loss[n] for n < N and indexes `sums` below WG.
// The host checks that N * C, N * H and C * (H + 1) fit u32.

override MODE: u32 = 0u;

struct ReadoutParams {
    rows: u32,        // N
    features: u32,    // H
    classes: u32,     // C
    groups: u32,      // workgroups that carry work (the grid may overshoot)
    has_targets: u32, // 0: probabilities only (row_loss and loss are 0)
    scale: f32,       // 1 / N (the mean's factor), from the host in f64
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: ReadoutParams;
@group(0) @binding(1) var<storage, read> features: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> targets: array<u32>;
@group(0) @binding(5) var<storage, read_write> probs: array<f32>;
@group(0) @binding(6) var<storage, read_write> row_loss: array<f32>;
@group(0) @binding(7) var<storage, read_write> loss: array<f32>;

const WG: u32 = 256u;

var<workgroup> sums: array<f32, 256>;

fn logits(i: u32) {
    if (i >= p.rows * p.classes) {
        return;
    }
    let n = i / p.classes;
    let c = i % p.classes;
    var s = bias[c];
    for (var k = 0u; k < p.features; k++) {
        s += features[n * p.features + k] * weight[c * p.features + k];
    }
    probs[i] = s;
}

fn softmax(n: u32) {
    if (n >= p.rows) {
        return;
    }
    let row = n * p.classes;
    var m = probs[row];
    for (var c = 1u; c < p.classes; c++) {
        m = max(m, probs[row + c]);
    }
    var target_logit = 0.0;
    let label = min(targets[n], p.classes - 1u);
    var s = 0.0;
    for (var c = 0u; c < p.classes; c++) {
        let l = probs[row + c];
        if (c == label) {
            target_logit = l;
        }
        let e = exp(l - m);
        probs[row + c] = e;
        s += e;
    }
    let inv = 1.0 / s;
    for (var c = 0u; c < p.classes; c++) {
        probs[row + c] *= inv;
    }
    if (p.has_targets != 0u) {
        row_loss[n] = log(s) + m - target_logit;
    } else {
        row_loss[n] = 0.0;
    }
}

fn mean_loss(li: u32) {
    var s = 0.0;
    for (var n = li; n < p.rows; n += WG) {
        s += row_loss[n];
    }
    sums[li] = s;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (li < stride) {
            sums[li] += sums[li + stride];
        }
        workgroupBarrier();
    }
    if (li == 0u) {
        loss[0] = sums[0] * p.scale;
    }
}

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    if (MODE == 2u) {
        mean_loss(li);
        return;
    }
    let group = wg.x + wg.y * nwg.x;
    if (group >= p.groups) {
        return;
    }
    let i = group * WG + li;
    if (MODE == 0u) {
        logits(i);
    } else {
        softmax(i);
    }
}
