// Gradient clipping: the global L2 norm of a list of gradient tensors, found in two
// deterministic passes, then clipping by norm (torch.nn.utils.clip_grad_norm_) or by value
// (torch.nn.utils.clip_grad_value_). One dispatch handles one tensor; MODE picks the variant:
//
//   MODE 0  sum_squares  partials[partial_offset + w] = sum_{i in chunk w} grad[i]^2
//                        chunk w = elements [w * CHUNK, (w + 1) * CHUNK) of this tensor
//   MODE 1  reduce_norm  norm[0] = sqrt(sum_{j < partial_count} partials[j])   (one workgroup)
//   MODE 2  scale        grad[i] *= coef,  coef = max_norm / (norm[0] + 1e-6),  if !(coef >= 1)
//   MODE 3  clamp        grad[i] = clamp(grad[i], lo, hi)
//
// Determinism: no atomics, and every sum has a fixed order that depends only on the tensor
// lengths (never on the grid shape or the scheduling of workgroups), so two runs on one
// adapter give bit-identical norms. Accuracy: all squares are positive (no cancellation), and
// each is added through at most PER_THREAD sequential adds plus a log2(WG) = 8-level tree in
// pass 1, then ceil(partials / WG) sequential adds plus another 8-level tree in pass 2. For a
// 4M-element tensor that is a depth of about 32 additions: relative error ~ 32 * 6e-8 on the
// sum of squares, half that on the norm.
//
// NaN and inf follow PyTorch: a NaN norm gives a NaN coefficient, and `!(coef >= 1)` is then
// true, so every gradient becomes NaN (torch multiplies by clamp(NaN, max=1) = NaN); clamping
// is written with comparisons so a NaN gradient stays NaN (WGSL's min/max may drop NaNs).
//
// CPU twins: rnn_wgpu::cpu::optim::{grad_norm (MODE 0 + 1), clip_grad_norm (0 + 1 + 2),
// clip_grad_value (3)}.
//
// Bindings (group 0):
//   0 uniform     p         ClipParams (dynamic offset: one slot per dispatch)
//   1 read_write  grad      (len)             read by MODE 0, updated in place by MODE 2 and 3
//   2 read_write  partials  (partial_count)   written by MODE 0, read by MODE 1
//   3 read_write  norm      (1)               written by MODE 1, read by MODE 2
// Dispatch: MODE 0: `groups` = ceil(len / CHUNK) workgroups; MODE 2 and 3: `groups` =
// ceil(len / WG). Both are laid out as a 2-D grid (nx, ny) with nx, ny within
// max_compute_workgroups_per_dimension; workgroup (x, y) is number x + y * nx, and numbers
// >= groups return at once. MODE 1: exactly one workgroup. All of WG = 256 threads.

// Bounds: grad holds len elements and every read or write of it is guarded by i < p.len;
// partials are written at partial_offset + group < partial_count (the host sizes partials as
// the sum of every tensor's chunk count) and read for j < partial_count; `sums` is indexed by
// li and li + stride < WG. Loops run to PER_THREAD, partial_count and log2(WG).

override MODE: u32 = 0u;

struct ClipParams {
    len: u32,            // elements of this tensor
    groups: u32,         // workgroups that carry work (the grid may overshoot)
    partial_offset: u32, // MODE 0: this tensor's first slot in `partials`
    partial_count: u32,  // MODE 1: slots of all tensors
    lo: f32,             // MODE 3
    hi: f32,             // MODE 3
    max_norm: f32,       // MODE 2
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: ClipParams;
@group(0) @binding(1) var<storage, read_write> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> partials: array<f32>;
@group(0) @binding(3) var<storage, read_write> norm: array<f32>;

const WG: u32 = 256u;
const PER_THREAD: u32 = 8u;
const CHUNK: u32 = 2048u; // WG * PER_THREAD

var<workgroup> sums: array<f32, 256>;

// sums[0] = sum of sums[0..WG], as a fixed binary tree. Called by the whole workgroup.
fn tree_sum(li: u32) {
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (li < stride) {
            sums[li] += sums[li + stride];
        }
        workgroupBarrier();
    }
}

fn sum_squares(group: u32, li: u32) {
    // Thread li reads elements li, li + WG, ...: neighbouring threads, neighbouring addresses.
    let base = group * CHUNK + li;
    var acc = 0.0;
    for (var k = 0u; k < PER_THREAD; k++) {
        let i = base + k * WG;
        if (i < p.len) {
            let g = grad[i];
            acc = fma(g, g, acc);
        }
    }
    sums[li] = acc;
    tree_sum(li);
    if (li == 0u) {
        partials[p.partial_offset + group] = sums[0];
    }
}

fn reduce_norm(li: u32) {
    // Thread li adds slots li, li + WG, ... in order; the tree then adds the threads.
    var acc = 0.0;
    for (var j = li; j < p.partial_count; j += WG) {
        acc += partials[j];
    }
    sums[li] = acc;
    tree_sum(li);
    if (li == 0u) {
        norm[0] = sqrt(sums[0]);
    }
}

fn scale(i: u32) {
    // The same f32 expression as clip_coef in torch.nn.utils.clip_grad_norm_, evaluated by
    // every thread from the norm pass 1 + 2 left on the GPU: no host round trip.
    let coef = p.max_norm / (norm[0] + 1e-6);
    // Written as !(coef >= 1) rather than coef < 1 so that a NaN coefficient scales (see top).
    if (i < p.len && !(coef >= 1.0)) {
        grad[i] = grad[i] * coef;
    }
}

fn clamp_value(i: u32) {
    if (i < p.len) {
        var g = grad[i];
        if (g < p.lo) {
            g = p.lo;
        }
        if (g > p.hi) {
            g = p.hi;
        }
        grad[i] = g;
    }
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
    switch MODE {
        case 0u: {
            sum_squares(group, li);
        }
        case 1u: {
            reduce_norm(li);
        }
        case 2u: {
            scale(group * WG + li);
        }
        default: {
            clamp_value(group * WG + li);
        }
    }
}
