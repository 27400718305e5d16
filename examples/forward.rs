//! The smallest complete use of the crate: an LSTM forward pass on the best GPU adapter,
//! checked against the CPU reference.
//!
//! Run: `cargo run --release --example forward [-- path/to/state_dict.safetensors]`
//! (with a path, the weights are a PyTorch `nn.LSTM(16, 32).state_dict()` saved with
//! `safetensors.torch.save_file`; without one, PyTorch's default initialisation, seeded).

use rnn_wgpu::{Context, Rnn, RnnConfig, Weights, cpu};
use rnn_wgpu::{HostState, RunOptions};

fn main() -> Result<(), rnn_wgpu::Error> {
    let (input, hidden, steps, batch) = (16, 32, 20, 4);
    let cfg = RnnConfig::lstm(input, hidden).build()?;
    let weights = match std::env::args().nth(1) {
        Some(path) => Weights::load_config(&cfg, path)?,
        None => Weights::init(&cfg, 0),
    };

    let ctx = Context::new()?;
    println!("adapter: {}", ctx.describe());
    let rnn = Rnn::new(&ctx, &weights)?;

    // x is [T, B, I], seq-major like PyTorch's default.
    let x: Vec<f32> = (0..steps * batch * input)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    let out = rnn.forward_host(&x, steps, batch, HostState::zeros(), &RunOptions::default())?;
    println!(
        "y: [{steps}, {batch}, {hidden}], h_n[0][..4] = {:?}",
        &out.h_n[..4]
    );

    let reference = cpu::lstm_forward(
        &cfg,
        &cpu::RefWeights::new(&cfg, weights.layer(0, 0)?),
        &cpu::to_f64(&x),
        None,
        None,
        steps,
        batch,
    )?;
    let err = out
        .y
        .iter()
        .zip(&reference.y)
        .map(|(g, r)| (*g as f64 - r).abs())
        .fold(0.0, f64::max);
    println!("max |gpu - cpu reference| over y: {err:.2e}");
    Ok(())
}
