//! Streaming inference: a server multiplexes independent streams as the rows of one batch,
//! feeds one timestep at a time through a 2-layer LSTM (state stays on the GPU), and restarts
//! a row when its stream ends. Checked against one whole-sequence forward per stream.
//!
//! Run: `cargo run --release --example streaming`

use rnn_wgpu::{Context, GpuTensor, Rnn, RnnConfig, Weights};
use rnn_wgpu::{HostState, RunOptions};

fn main() -> Result<(), rnn_wgpu::Error> {
    let (input, hidden, rows) = (8, 32, 4);
    let cfg = RnnConfig::lstm(input, hidden).num_layers(2).build()?;
    let ctx = Context::new()?;
    println!("adapter: {}", ctx.describe());
    let rnn = Rnn::new(&ctx, &Weights::init(&cfg, 0))?;
    let mut session = rnn.session(rows)?;

    // Row r carries a stream of length 3 + r; when it ends, the row starts a new stream.
    let token = |stream: usize, t: usize| -> Vec<f32> {
        (0..input)
            .map(|k| ((stream * 31 + t * 7 + k) % 17) as f32 / 8.5 - 1.0)
            .collect()
    };
    let mut started = vec![0usize; rows]; // the step each row's current stream started at
    let mut stream_id: Vec<usize> = (0..rows).collect();
    let mut last_y = vec![Vec::new(); rows];
    let start = std::time::Instant::now();
    let steps = 12;
    for step in 0..steps {
        let x: Vec<f32> = (0..rows)
            .flat_map(|r| token(stream_id[r], step - started[r]))
            .collect();
        let y = session.step(&GpuTensor::upload(&ctx, &x, &[rows, input])?)?;
        let y = y.download(&ctx)?;
        let mut ended = vec![false; rows];
        for r in 0..rows {
            last_y[r] = y[r * hidden..(r + 1) * hidden].to_vec();
            if step + 1 - started[r] == 3 + r {
                // The stream in row r is complete: check it, then restart the row.
                check(&rnn, &token, stream_id[r], 3 + r, &last_y[r])?;
                ended[r] = true;
                started[r] = step + 1;
                stream_id[r] += rows;
            }
        }
        session.reset(&ended)?;
    }
    println!(
        "{steps} steps x {rows} rows in {:.1} ms ({:.0} us/step, one submission each)",
        start.elapsed().as_secs_f64() * 1e3,
        start.elapsed().as_secs_f64() * 1e6 / steps as f64
    );
    Ok(())
}

/// Stream `id` of length `len` run alone through a whole-sequence forward must end at `y`.
fn check(
    rnn: &Rnn,
    token: &dyn Fn(usize, usize) -> Vec<f32>,
    id: usize,
    len: usize,
    y: &[f32],
) -> Result<(), rnn_wgpu::Error> {
    let x: Vec<f32> = (0..len).flat_map(|t| token(id, t)).collect();
    let out = rnn.forward_host(&x, len, 1, HostState::zeros(), &RunOptions::default())?;
    let hidden = y.len();
    let want = &out.y[(len - 1) * hidden..];
    let err = want
        .iter()
        .zip(y)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!(
        "stream {id:2} (length {len}): last output matches a whole-sequence forward, max |diff| {err:.1e}"
    );
    assert!(err < 1e-5, "stream {id}: {err}");
    Ok(())
}
