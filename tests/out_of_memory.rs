//! An out-of-memory error is typed, names what failed, and leaves the context and the model
//! usable: a failure in the middle of building a workspace leaves nothing half-made behind.
//!
//! Software adapters grant address space lazily (llvmpipe created a 1 GiB buffer with the
//! process's address space capped 256 MiB above its use), so the failure is injected at the
//! crate's one allocation helper, where a device's real out-of-memory error also arrives.

mod common;

use common::gpu::own_ctx;
use common::seeded;
use rnn_wgpu::{Error, GpuTensor, Rnn, RnnConfig, Weights};

#[test]
fn an_allocation_failure_is_typed_and_the_context_stays_usable() {
    let Some(ctx) = own_ctx() else { return };
    let cfg = RnnConfig::lstm(3, 8).num_layers(2).build().unwrap();
    let rnn = Rnn::new(&ctx, &Weights::init(&cfg, 1)).unwrap();
    let x = GpuTensor::upload(&ctx, &seeded(1, 12, 1.0), &[2, 2, 3]).unwrap();
    let want = rnn.forward(&x, None).unwrap().y.download(&ctx).unwrap();
    let x2 = GpuTensor::upload(&ctx, &seeded(2, 15, 1.0), &[5, 1, 3]).unwrap();
    // Fail the 1st, 2nd, ... 12th buffer of a new shape's workspace and outputs in turn.
    for n in 1..=12 {
        ctx.fail_allocation(n);
        match rnn.forward(&x2, None) {
            Err(Error::OutOfMemory { what, bytes }) => {
                assert!(what.contains("injected"), "{what}");
                assert!(bytes > 0);
            }
            other => panic!("allocation {n}: expected OutOfMemory, got {other:?}"),
        }
        ctx.fail_allocation(0);
        // The context and the model still work, for the old shape and the new one.
        assert_eq!(
            rnn.forward(&x, None).unwrap().y.download(&ctx).unwrap(),
            want
        );
    }
    let y2 = rnn.forward(&x2, None).unwrap().y.download(&ctx).unwrap();
    assert!(y2.iter().all(|v| v.is_finite()) && y2.iter().any(|&v| v != 0.0));
}
