// The cell description shared by the two step kernels (prepended to rnn_step.wgsl and
// rnn_step_backward.wgsl by src/gpu/shaders.rs, after activations.wgsl): its override
// constants, set from the configuration by `gpu::rnn_step::cell_constants`, and the
// activation/clip helpers built on them. CPU twin: `cpu::cell::CellSpec`.

override CELL: u32 = 0u;    // 0 LSTM, 1 GRU, 2 RNN
override G: u32 = 4u;       // gates per unit: 4, 3, 1
override ACT_F: u32 = 0u;   // gate activation kind (see `activate`) and its alpha, beta
override ALPHA_F: f32 = 0.0;
override BETA_F: f32 = 0.0;
override ACT_G: u32 = 1u;   // cell activation
override ALPHA_G: f32 = 0.0;
override BETA_G: f32 = 0.0;
override ACT_H: u32 = 1u;   // hidden activation (LSTM)
override ALPHA_H: f32 = 0.0;
override BETA_H: f32 = 0.0;
override GATE_CLIP: f32 = 0.0; // 0: no gate clip
override CELL_CLIP: bool = false;
override CELL_MIN: f32 = 0.0;
override CELL_MAX: f32 = 0.0;
override PEEPHOLE: bool = false;
override INPUT_FORGET: bool = false;
override PROJ: bool = false;
override RESET_BEFORE: bool = false;

const LSTM: u32 = 0u;
const GRU: u32 = 1u;

fn clip_pre(x: f32) -> f32 {
    if (GATE_CLIP > 0.0) {
        return clamp(x, -GATE_CLIP, GATE_CLIP);
    }
    return x;
}

// d clip(x) / dx: the bounds count as inside (torch.clamp's convention, as the CPU reference).
fn clip_pass(x: f32) -> f32 {
    return select(1.0, 0.0, GATE_CLIP > 0.0 && (x < -GATE_CLIP || x > GATE_CLIP));
}

fn act_f(x: f32) -> f32 {
    return activate(ACT_F, clip_pre(x), ALPHA_F, BETA_F);
}

fn act_g(x: f32) -> f32 {
    return activate(ACT_G, clip_pre(x), ALPHA_G, BETA_G);
}

fn act_h(x: f32) -> f32 {
    return activate(ACT_H, x, ALPHA_H, BETA_H);
}

// d act(clip(x)) / dx for the gate and cell roles.
fn grad_f(x: f32) -> f32 {
    return activate_grad(ACT_F, clip_pre(x), ALPHA_F, BETA_F) * clip_pass(x);
}

fn grad_g(x: f32) -> f32 {
    return activate_grad(ACT_G, clip_pre(x), ALPHA_G, BETA_G) * clip_pass(x);
}

fn cell_clip(c: f32) -> f32 {
    if (CELL_CLIP) {
        return clamp(c, CELL_MIN, CELL_MAX);
    }
    return c;
}
