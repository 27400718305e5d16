// Moves sequences between the layouts of a stacked model, honouring per-row lengths:
// batch-first <-> seq-major, one direction's columns of a bidirectional [T, B, 2S] tensor, the
// time reversal of the reverse direction, and the last valid step of each row (h_n).
//
//   for every destination element (t, b, f), t < T, b < B, f < F:
//     len  = lengths[b]
//     src_t = t (MODE 0), len - 1 - t (MODE 1, reverse within the row's length), len - 1 (MODE 2)
//     v = (MODE == 2 || t < len) ? src[src_t * ST + b * SB + SO + f] : 0
//     dst[t * DT + b * DB + DO + f] = v          (ACCUMULATE: += v)
//
// so padding (t >= len) is written as exact zeros. Strides and offsets are in elements. The
// reverse map is its own inverse, so the same call gathers a reverse direction's input into
// its own time frame and scatters its output back.
// CPU twin: `runs` in rnn_wgpu::cpu::stack (which gathers per row with the same rules).
//
// Bindings (group 0):
//   0 uniform  p        RearrangeParams
//   1 read     src
//   2 read     lengths  (B) f32, whole numbers
//   3 write    dst
// Dispatch: ceil(T*B*F / 256) workgroups of 256 threads, folded into (x, y) under the
// per-dimension limit; thread i handles element i of the destination in (t, b, f) order.

// Bounds: threads past T*B*F return first. The host checks every length to lie in 1..=T
// (`validate::check_lengths`; whole rows of T otherwise), so src_t = t, len - 1 - t (for
// t < len) or len - 1 stays in 0..T, and the plan sizes src and dst for the strides and
// offsets it passes. Divisions are by F and B, both nonzero (checked shapes).

override ACCUMULATE: bool = false;

struct RearrangeParams {
    steps: u32,
    batch: u32,
    features: u32,
    mode: u32,
    src_t: u32,
    src_b: u32,
    src_off: u32,
    groups_x: u32,
    dst_t: u32,
    dst_b: u32,
    dst_off: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: RearrangeParams;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> lengths: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wg.y * p.groups_x + wg.x) * 256u + lid.x;
    if (i >= p.steps * p.batch * p.features) {
        return;
    }
    let f = i % p.features;
    let b = (i / p.features) % p.batch;
    let t = i / (p.features * p.batch);
    let len = u32(lengths[b]);
    var v = 0.0;
    if (p.mode == 2u || t < len) {
        var st = t;
        if (p.mode == 1u) {
            st = len - 1u - t;
        } else if (p.mode == 2u) {
            st = len - 1u;
        }
        v = src[st * p.src_t + b * p.src_b + p.src_off + f];
    }
    let at = t * p.dst_t + b * p.dst_b + p.dst_off + f;
    if (ACCUMULATE) {
        v += dst[at];
    }
    dst[at] = v;
}
