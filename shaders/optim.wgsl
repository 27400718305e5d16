// In-place optimiser step for one parameter tensor, with torch.optim semantics (single-tensor
// path, maximize = False, amsgrad = False). OPTIMIZER picks the rule:
//
// OPTIMIZER 0, SGD (torch.optim.SGD):
//   g = grad[i] + weight_decay * param[i]                          (if weight_decay != 0)
//   MOMENTUM:  buf = g at the first step, else momentum * buf + (1 - dampening) * g
//              g   = g + momentum * buf  (NESTEROV)  or  g = buf
//   param[i] -= lr * g
// OPTIMIZER 1, Adam (torch.optim.Adam, L2 weight decay added to the gradient, not AdamW):
//   g = grad[i] + weight_decay * param[i]                          (if weight_decay != 0)
//   m = m + (1 - beta1) * (g - m)                                  (torch: exp_avg.lerp_)
//   v = beta2 * v + (1 - beta2) * g * g
//   denom = sqrt(v) / sqrt(bias_correction2) + eps
//   param[i] -= (lr / bias_correction1) * (m / denom)
// with bias_correction{1,2} = 1 - beta{1,2}^step. The host computes every scalar that does not
// depend on i (1 - dampening, 1 - beta, lr / bias_correction1, sqrt(bias_correction2)) in f64,
// as torch does in Python, and hands them over as f32; the per-element arithmetic is f32.
//
// CPU twins: rnn_wgpu::cpu::optim::{sgd_step, adam_step}.
//
// Bindings (group 0):
//   0 uniform     p      OptimParams (dynamic offset: one slot per parameter tensor)
//   1 read        grad   (len)
//   2 read_write  param  (len)   updated in place
//   3 read_write  state  (len)   SGD: momentum buffer (MOMENTUM only); Adam: exp_avg (m)
//   4 read_write  state2 (len)   Adam: exp_avg_sq (v); unused by SGD
// Unused state bindings get a small placeholder buffer; the code never touches them.
// Dispatch: `groups` = ceil(len / 256) workgroups of 256 threads, as a 2-D grid (nx, ny)
// with nx, ny within max_compute_workgroups_per_dimension; workgroup (x, y) is number
// x + y * nx, owns elements [256 * number, 256 * (number + 1)), and numbers >= groups return
// at once (so no index past len + 255 is ever formed).

// Bounds: workgroups numbered >= groups return, and element indices i < len are the only ones
// read or written (the host checks grad, param and the state buffers to hold len elements);
// a placeholder state binding is never touched (MOMENTUM / Adam only). No loop, no division.

override OPTIMIZER: u32 = 0u; // 0 = SGD, 1 = Adam
override MOMENTUM: bool = false; // SGD: momentum != 0
override NESTEROV: bool = false; // SGD: Nesterov momentum

struct OptimParams {
    len: u32,
    groups: u32,            // workgroups that carry work (the grid may overshoot)
    first_step: u32,        // SGD: 1 when the momentum buffer starts as the gradient
    _pad: u32,
    lr: f32,                // SGD
    weight_decay: f32,
    momentum: f32,          // SGD
    one_minus_dampening: f32, // SGD
    one_minus_beta1: f32,   // Adam
    beta2: f32,             // Adam
    one_minus_beta2: f32,   // Adam
    eps: f32,               // Adam
    step_size: f32,         // Adam: lr / bias_correction1
    bias_correction2_sqrt: f32, // Adam: sqrt(bias_correction2)
    _pad2: u32,
    _pad3: u32,
}

@group(0) @binding(0) var<uniform> p: OptimParams;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> param: array<f32>;
@group(0) @binding(3) var<storage, read_write> state: array<f32>;
@group(0) @binding(4) var<storage, read_write> state2: array<f32>;

const WG: u32 = 256u;

fn sgd(i: u32) {
    let w = param[i];
    var g = grad[i];
    if (p.weight_decay != 0.0) {
        g = g + p.weight_decay * w;
    }
    if (MOMENTUM) {
        var buf = g;
        if (p.first_step == 0u) {
            buf = state[i] * p.momentum + p.one_minus_dampening * g;
        }
        state[i] = buf;
        if (NESTEROV) {
            g = g + p.momentum * buf;
        } else {
            g = buf;
        }
    }
    param[i] = w - p.lr * g;
}

fn adam(i: u32) {
    let w = param[i];
    var g = grad[i];
    if (p.weight_decay != 0.0) {
        g = g + p.weight_decay * w;
    }
    var m = state[i];
    m = m + p.one_minus_beta1 * (g - m);
    let v = state2[i] * p.beta2 + p.one_minus_beta2 * g * g;
    state[i] = m;
    state2[i] = v;
    let denom = sqrt(v) / p.bias_correction2_sqrt + p.eps;
    param[i] = w - p.step_size * (m / denom);
}

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let group = wg.x + wg.y * nwg.x;
    let i = group * WG + li;
    if (group >= p.groups || i >= p.len) {
        return;
    }
    if (OPTIMIZER == 0u) {
        sgd(i);
    } else {
        adam(i);
    }
}
