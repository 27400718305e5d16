// Stable activations shared by every cell kernel (prepended by src/gpu/shaders.rs).
// CPU twins: rnn_wgpu::cpu::{sigmoid, tanh}.
//
// Both functions only ever evaluate exp() of a non-positive argument, so exp never overflows:
// for x = ±1e4 it underflows to 0 and the result saturates cleanly to 0/1 or ±1, never NaN.
// (The textbook (e^2x - 1) / (e^2x + 1) gives inf/inf = NaN for x > ~44.)

fn sigmoid_stable(x: f32) -> f32 {
    let e = exp(-abs(x));
    let s = 1.0 / (1.0 + e);
    // For x < 0, e/(1+e) = e*s keeps full relative precision where 1 - s would cancel.
    return select(e * s, s, x >= 0.0);
}

fn tanh_stable(x: f32) -> f32 {
    let ax = abs(x);
    let e = exp(-2.0 * ax);
    var t = (1.0 - e) / (1.0 + e);
    // Near 0, 1 - e cancels; the odd Taylor series to x^5 is exact to ~1e-9 relative there.
    if (ax < 0.05) {
        let x2 = ax * ax;
        t = ax * (1.0 - x2 * (1.0 / 3.0 - x2 * (2.0 / 15.0)));
    }
    return select(-t, t, x >= 0.0);
}

// The ONNX activation functions, selected by kind (numbered as `gpu::rnn_step::activation_kind`
// on the host) with their alpha/beta. CPU twins: rnn_wgpu::cpu::{activate, derivative}.
// 0 Sigmoid, 1 Tanh, 2 Relu, 3 HardSigmoid, 4 LeakyRelu, 5 ThresholdedRelu, 6 ScaledTanh,
// 7 Affine, 8 Elu, 9 Softsign, 10 Softplus.
fn activate(kind: u32, x: f32, a: f32, b: f32) -> f32 {
    switch kind {
        case 0u: { return sigmoid_stable(x); }
        case 1u: { return tanh_stable(x); }
        case 2u: { return max(x, 0.0); }
        case 3u: { return clamp(a * x + b, 0.0, 1.0); }
        case 4u: { return select(a * x, x, x >= 0.0); }
        case 5u: { return select(0.0, x, x > a); }
        case 6u: { return a * tanh_stable(b * x); }
        case 7u: { return a * x + b; }
        case 8u: { return select(a * (exp(min(x, 0.0)) - 1.0), x, x >= 0.0); }
        case 9u: { return x / (1.0 + abs(x)); }
        // Softplus: exp only sees -|x|, so large inputs cannot overflow.
        default: { return max(x, 0.0) + log(1.0 + exp(-abs(x))); }
    }
}

// d activate / dx from the pre-activation x; at kinks the one-sided values the CPU reference
// uses (relu'(0) = 0, leaky_relu'(0) = alpha, ...).
fn activate_grad(kind: u32, x: f32, a: f32, b: f32) -> f32 {
    switch kind {
        case 0u: {
            let s = sigmoid_stable(x);
            return s * (1.0 - s);
        }
        case 1u: {
            let t = tanh_stable(x);
            return 1.0 - t * t;
        }
        case 2u: { return select(0.0, 1.0, x > 0.0); }
        case 3u: {
            let v = a * x + b;
            return select(0.0, a, v > 0.0 && v < 1.0);
        }
        case 4u: { return select(a, 1.0, x > 0.0); }
        case 5u: { return select(0.0, 1.0, x > a); }
        case 6u: {
            let t = tanh_stable(b * x);
            return a * b * (1.0 - t * t);
        }
        case 7u: { return a; }
        case 8u: { return select(a * exp(min(x, 0.0)), 1.0, x > 0.0); }
        case 9u: {
            let d = 1.0 + abs(x);
            return 1.0 / (d * d);
        }
        default: { return sigmoid_stable(x); }
    }
}
