// Classification read-out, backward: gradients of the mean softmax cross-entropy of
// shaders/readout.wgsl. With d[n, c] = (probs[n, c] - [c == target[n]]) * scale, scale = 1/N
// (dloss/dlogits, formed on the fly from the saved probabilities, never stored):
//
//   MODE 0  dW[c, h] = sum_n d[n, c] * F[n, h],  db[c] = sum_n d[n, c]
//                    one thread per (c, h) of C x (H + 1); column h = H is the bias
//   MODE 1  dF[n, h] = sum_c d[n, c] * W[c, h]  one thread per (n, h)
//
// Each thread sums in a fixed order (no atomics): gradients are bit-identical run to run.
// Gradients are overwritten, not accumulated.
//
// CPU twin: rnn_wgpu::cpu::readout::readout_backward. Host: src/gpu/readout.rs.
//
// Bindings (group 0):
//   0 uniform     p              ReadoutParams (dynamic offset: one slot per dispatch)
//   1 read        features       (N, H)
//   2 read        weight         (C, H)
//   3 read        probs          (N, C)   from the forward pass
//   4 read        targets        (N) u32, each < C (checked on the host)
//   5 read_write  grad_weight    (C, H)
//   6 read_write  grad_bias      (C)
//   7 read_write  grad_features  (N, H)
// Dispatch: MODE 0: ceil(C * (H + 1) / WG) workgroups, MODE 1: ceil(N * H / WG), as a 2-D
// grid (nx, ny) within max_compute_workgroups_per_dimension, workgroup (x, y) numbered
// x + y * nx; numbers >= p.groups return at once. WG = 256 threads.
//
// Bounds: MODE 0 handles i < C * (H + 1) and reads probs[n * C + c], F[n * H + k] with n < N,
// k < H; MODE 1 handles i < N * H and reads W[c * H + k], probs[n * C + c] with c < C. The
// host checks that N * C, N * H and C * (H + 1) fit u32.

override MODE: u32 = 0u;

struct ReadoutParams {
    rows: u32,
    features: u32,
    classes: u32,
    groups: u32,
    has_targets: u32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: ReadoutParams;
@group(0) @binding(1) var<storage, read> features: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> probs: array<f32>;
@group(0) @binding(4) var<storage, read> targets: array<u32>;
@group(0) @binding(5) var<storage, read_write> grad_weight: array<f32>;
@group(0) @binding(6) var<storage, read_write> grad_bias: array<f32>;
@group(0) @binding(7) var<storage, read_write> grad_features: array<f32>;

const WG: u32 = 256u;

// dloss/dlogits[n, c].
fn dlogit(n: u32, c: u32) -> f32 {
    let hot = select(0.0, 1.0, targets[n] == c);
    return (probs[n * p.classes + c] - hot) * p.scale;
}

fn grad_params(i: u32) {
    let width = p.features + 1u;
    if (i >= p.classes * width) {
        return;
    }
    let c = i / width;
    let k = i % width;
    var s = 0.0;
    if (k == p.features) {
        for (var n = 0u; n < p.rows; n++) {
            s += dlogit(n, c);
        }
        grad_bias[c] = s;
    } else {
        for (var n = 0u; n < p.rows; n++) {
            s += dlogit(n, c) * features[n * p.features + k];
        }
        grad_weight[c * p.features + k] = s;
    }
}

fn grad_input(i: u32) {
    if (i >= p.rows * p.features) {
        return;
    }
    let n = i / p.features;
    let k = i % p.features;
    var s = 0.0;
    for (var c = 0u; c < p.classes; c++) {
        s += dlogit(n, c) * weight[c * p.features + k];
    }
    grad_features[i] = s;
}

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let group = wg.x + wg.y * nwg.x;
    if (group >= p.groups) {
        return;
    }
    let i = group * WG + li;
    if (MODE == 0u) {
        grad_params(i);
    } else {
        grad_input(i);
    }
}
