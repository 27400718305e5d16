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
