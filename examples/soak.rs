//! Soak: many forward calls and training steps on one context and model, with device memory
//! (wgpu's allocator report), process RSS, cached pipelines and created GPU objects sampled
//! along the way. Prints the figures and checks that after warm-up memory grows by under 1%
//! and no pipeline, buffer or bind group is created.
//!
//! ```text
//! cargo run --release --example soak                      # 10,000 forwards, 1,000 steps
//! cargo run --release --example soak -- 2000 200          # shorter
//! ```
//! The workload is `tests/common/soak.rs`; CI runs a short version (`tests/soak.rs`).

#[path = "../tests/common/soak.rs"]
mod soak;

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<usize>().expect("a count"));
    let forwards = args.next().unwrap_or(10_000);
    let steps = args.next().unwrap_or(1_000);
    let ctx = rnn_wgpu::Context::new().expect("a GPU adapter");
    println!("adapter: {}", ctx.describe());
    // Warm-up: the first tenth of the forward calls (every shape, pool and cache is made).
    let report = soak::soak(&ctx, forwards, steps, (forwards / 20).max(1), forwards / 10);
    for s in &report.samples {
        println!(
            "  after {:>6} forwards, {:>5} steps: device {:>12} bytes allocated, {:>12} \
             reserved, RSS {:>12} bytes, {} pipelines, {} buffers created",
            s.forward_calls,
            s.train_steps,
            s.device_allocated.map_or("n/a".into(), |b| b.to_string()),
            s.device_reserved.map_or("n/a".into(), |b| b.to_string()),
            s.rss.map_or("n/a".into(), |b| b.to_string()),
            s.pipelines,
            s.buffers
        );
    }
    println!("{}", report.summary());
    match report.check(0.01) {
        Ok(()) => println!("OK: growth after warm-up under 1%, no GPU object created"),
        Err(e) => {
            println!("FAILED: {e}");
            std::process::exit(1);
        }
    }
}
