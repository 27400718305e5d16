//! A short soak (the long one is `cargo run --release --example soak`): 1,000 forward calls
//! and 100 training steps on one context and model. After a warm-up of 200 calls, device
//! memory (wgpu's allocator report) and process RSS grow by under 1%, and no pipeline, buffer
//! or bind group is created.

mod common;

#[path = "common/soak.rs"]
mod soak;

#[test]
fn memory_and_caches_stay_flat_over_a_thousand_calls() {
    // A context of its own: other tests' allocations would blur the figures.
    let Some(ctx) = common::gpu::own_ctx() else {
        return;
    };
    let report = soak::soak(&ctx, 1000, 100, 100, 200);
    eprintln!("{}", report.summary());
    assert_eq!(report.last().forward_calls, 1000);
    assert_eq!(report.last().train_steps, 100);
    if let Err(e) = report.check(0.01) {
        panic!("{e}\n{}", report.summary());
    }
}
