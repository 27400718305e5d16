// Linear read-out + mean-squared error, forward and backward in one dispatch, for
// examples/adding_problem. A framework's own op sharing the crate's wgpu device.
//
//   pred[b]   = sum_j h[b, j] * w[j] + w[H]            w = [w_out (H), b_out (1)]
//   loss      = mean_b (pred[b] - goal[b])^2
//   dpred[b]  = 2 (pred[b] - goal[b]) / B
//   dw[j]     = sum_b h[b, j] * dpred[b],  dw[H] = sum_b dpred[b]
//   dh[b, j]  = dpred[b] * w[j]                         (the LSTM's upstream dh_n)
//
// Bindings (group 0):
//   0 uniform  p       { batch, hidden }
//   1 read     h       (B, H)      h_n of the LSTM
//   2 read     goal  (B)
//   3 read     w       (H + 1)
//   4 write    pred    (B)
//   5 write    dw      (H + 1)
//   6 write    dh      (B, H)
//   7 write    loss    (1)
// Dispatch: (1, 1, 1): one workgroup of 256 threads; B <= 1024 and H are small here.

struct Params {
    batch: u32,
    hidden: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> h: array<f32>;
@group(0) @binding(2) var<storage, read> goal: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<f32>;
@group(0) @binding(4) var<storage, read_write> pred: array<f32>;
@group(0) @binding(5) var<storage, read_write> dw: array<f32>;
@group(0) @binding(6) var<storage, read_write> dh: array<f32>;
@group(0) @binding(7) var<storage, read_write> loss: array<f32>;

var<workgroup> dpred: array<f32, 1024>;
var<workgroup> sq: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) t: u32) {
    let B = p.batch;
    let H = p.hidden;
    var s = 0.0;
    for (var b = t; b < B; b += 256u) {
        var y = w[H];
        for (var j = 0u; j < H; j++) {
            y += h[b * H + j] * w[j];
        }
        pred[b] = y;
        let e = y - goal[b];
        dpred[b] = 2.0 * e / f32(B);
        s += e * e;
    }
    sq[t] = s;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride /= 2u) {
        if (t < stride) {
            sq[t] += sq[t + stride];
        }
        workgroupBarrier();
    }
    if (t == 0u) {
        loss[0] = sq[0] / f32(B);
    }
    for (var j = t; j <= H; j += 256u) {
        var g = 0.0;
        if (j == H) {
            for (var b = 0u; b < B; b++) {
                g += dpred[b];
            }
        } else {
            for (var b = 0u; b < B; b++) {
                g += h[b * H + j] * dpred[b];
            }
        }
        dw[j] = g;
    }
    for (var i = t; i < B * H; i += 256u) {
        dh[i] = dpred[i / H] * w[i % H];
    }
}
