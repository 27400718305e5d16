// Dropout between stacked layers, in place: x[i] = keep(i) ? x[i] * SCALE : 0, with the mask a
// pure function of (key, i), so backward applies the very same mask to the gradient by running
// this kernel again on it, and nothing is stored.
//
//   keep(i) = pcg(pcg(i) ^ key) >= threshold,  threshold = floor(p * 2^32),  scale = 1 / (1 - p)
//
// i is the element's index in the seq-major [T, B, dirs*S] layer output; key comes from the
// seed and the layer (rnn_wgpu::dropout::key). CPU twin: rnn_wgpu::dropout::{pcg, keep, mask}.
//
// Bindings (group 0):
//   0 uniform  p  DropoutParams
//   1 write    x  (numel)
// Dispatch: ceil(numel / 256) workgroups of 256 threads, folded into (x, y).

// Bounds: threads with i >= numel return first; x holds numel elements (the plan's layer
// output). No loop, no division.

struct DropoutParams {
    numel: u32,
    key: u32,
    threshold: u32,
    groups_x: u32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: DropoutParams;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;

// PCG RXS-M-XS output permutation of a 32-bit LCG step (a bijection on u32).
fn pcg(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wg.y * p.groups_x + wg.x) * 256u + lid.x;
    if (i >= p.numel) {
        return;
    }
    if (pcg(pcg(i) ^ p.key) >= p.threshold) {
        x[i] = x[i] * p.scale;
    } else {
        x[i] = 0.0;
    }
}
