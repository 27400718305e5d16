//! Fault injection: the device destroyed in the middle of a sequence of calls (from another
//! thread, and with work in flight) gives `DeviceLost` promptly, never a hang, a panic or
//! another error; allocations beyond the device's limits and allocation failures in the
//! middle of training calls give typed errors, and the same context goes on working with
//! bit-identical results. (`tests/engine.rs` destroys an idle device between two calls, and
//! `tests/out_of_memory.rs` fails the allocations of a forward pass.)

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::gpu::{limited, own_ctx};
use common::seeded;
use rnn_wgpu::gpu::optim::{Sgd, SgdOptimizer};
use rnn_wgpu::{Context, Error, GpuTensor, Rnn, RnnConfig, Weights};

/// What a call came to.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Ok,
    Lost,
    Other(String),
}

fn outcome<T>(r: rnn_wgpu::Result<T>) -> Outcome {
    match r {
        Ok(_) => Outcome::Ok,
        Err(Error::DeviceLost { .. }) => Outcome::Lost,
        Err(e) => Outcome::Other(e.to_string()),
    }
}

/// One call of the sequence: forward + download, a training step (forward_train, backward,
/// SGD), or a session step + download.
fn call(ctx: &Context, rnn: &Rnn, k: usize) -> Outcome {
    let x = || GpuTensor::upload(ctx, &seeded(k as u64, 6 * 2 * 3, 1.0), &[6, 2, 3]);
    outcome((|| -> rnn_wgpu::Result<()> {
        match k % 3 {
            0 => {
                rnn.forward(&x()?, None)?.y.download(ctx)?;
            }
            1 => {
                let (out, tape) = rnn.forward_train(&x()?, None)?;
                let g = rnn.backward(&tape, Some(&out.y), None, None)?;
                let params = rnn.parameters().unwrap();
                SgdOptimizer::new(ctx, Sgd::new(1e-3), &params)?.step(
                    ctx,
                    &params,
                    &g.params.tensors(),
                )?;
            }
            _ => {
                let mut s = rnn.session(2)?;
                s.step_host(&seeded(k as u64, 6, 1.0))?.download(ctx)?;
            }
        }
        Ok(())
    })())
}

#[test]
fn a_device_destroyed_mid_sequence_gives_device_lost_on_every_later_call() {
    let Some(ctx) = own_ctx() else { return };
    let cfg = RnnConfig::lstm(3, 8).num_layers(2).build().unwrap();
    let rnn = Rnn::new(&ctx, &Weights::init(&cfg, 1)).unwrap();
    let done = AtomicUsize::new(0);
    let start = Instant::now();
    let outcomes = std::thread::scope(|s| {
        let worker = s.spawn(|| {
            let mut v = Vec::new();
            for k in 0..1000 {
                let o = call(&ctx, &rnn, k);
                done.fetch_add(1, Ordering::SeqCst);
                let lost = o == Outcome::Lost;
                v.push(o);
                // A few calls past the loss show it stays lost.
                if lost && v.iter().filter(|o| **o == Outcome::Lost).count() >= 6 {
                    break;
                }
            }
            v
        });
        // Destroy the device while the worker is in the middle of its calls.
        while done.load(Ordering::SeqCst) < 25 {
            std::thread::sleep(Duration::from_millis(1));
        }
        ctx.device().destroy();
        worker.join().expect("no panic in any call")
    });
    let elapsed = start.elapsed();
    let first_err = outcomes.iter().position(|o| *o != Outcome::Ok).unwrap();
    eprintln!(
        "{} calls: {first_err} Ok before the loss, then {:?}; {:.1} s",
        outcomes.len(),
        &outcomes[first_err..],
        elapsed.as_secs_f64()
    );
    assert!(first_err >= 25, "calls before the destroy succeed");
    assert!(
        outcomes[first_err..].iter().all(|o| *o == Outcome::Lost),
        "after the loss every call gives DeviceLost: {:?}",
        &outcomes[first_err..]
    );
    assert!(outcomes.len() < 1000, "the loss was noticed");
    assert!(elapsed < Duration::from_secs(60), "no hang");
    // The context says so too, at once, and a new context works.
    assert!(matches!(ctx.wait(), Err(Error::DeviceLost { .. })));
    let fresh = own_ctx().unwrap();
    let rnn = Rnn::new(&fresh, &Weights::init(&cfg, 1)).unwrap();
    assert_eq!(call(&fresh, &rnn, 0), Outcome::Ok);
}

#[test]
fn a_device_destroyed_with_work_in_flight_gives_device_lost_promptly() {
    let Some(ctx) = own_ctx() else { return };
    // About a second of work on a software adapter.
    let cfg = RnnConfig::lstm(64, 128).build().unwrap();
    let rnn = Rnn::new(&ctx, &Weights::init(&cfg, 2)).unwrap();
    let x = GpuTensor::zeros(&ctx, &[300, 16, 64]).unwrap();
    let (train_out, tape) = rnn.forward_train(&x, None).unwrap();
    let mut session = rnn.session(4).unwrap();
    ctx.wait().unwrap();
    let y = rnn.forward(&x, None).unwrap().y;
    let start = Instant::now();
    ctx.device().destroy();
    let r = y.download(&ctx);
    assert!(matches!(r, Err(Error::DeviceLost { .. })), "{r:?}");
    // Every entry point says so: a tape recorded before, a session made before.
    let r = rnn.backward(&tape, Some(&train_out.y), None, None);
    assert!(matches!(r, Err(Error::DeviceLost { .. })), "{r:?}");
    let r = session.step_host(&[0.0; 4 * 64]);
    assert!(matches!(r, Err(Error::DeviceLost { .. })), "{r:?}");
    let r = GpuTensor::zeros(&ctx, &[4]);
    assert!(matches!(r, Err(Error::DeviceLost { .. })), "{r:?}");
    let r = Rnn::new(&ctx, &Weights::init(&cfg, 2));
    assert!(matches!(r, Err(Error::DeviceLost { .. })), "{r:?}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}; the context's timeout is {:?}",
        start.elapsed(),
        ctx.timeout()
    );
}

/// Forward, training-step gradients and a session step of `rnn`, bit for bit.
fn fingerprint(ctx: &Context, rnn: &Rnn) -> Vec<u32> {
    let x = GpuTensor::upload(ctx, &seeded(5, 4 * 3 * 3, 1.0), &[4, 3, 3]).unwrap();
    let mut v = rnn.forward(&x, None).unwrap().y.download(ctx).unwrap();
    let (out, tape) = rnn.forward_train(&x, None).unwrap();
    let g = rnn.backward(&tape, Some(&out.y), None, None).unwrap();
    v.extend(g.dx.download(ctx).unwrap());
    v.extend(g.params.layers[0].w_hh.download(ctx).unwrap());
    let mut s = rnn.session(3).unwrap();
    v.extend(
        s.step_host(&seeded(6, 9, 1.0))
            .unwrap()
            .download(ctx)
            .unwrap(),
    );
    v.into_iter().map(f32::to_bits).collect()
}

#[test]
fn allocations_beyond_the_device_limits_are_typed_and_the_context_goes_on() {
    // 1 MiB buffers at most.
    let Some(ctx) = limited(|l| {
        l.max_buffer_size = 1 << 20;
        l.max_storage_buffer_binding_size = 1 << 20;
    }) else {
        return;
    };
    let cfg = RnnConfig::lstm(3, 8).num_layers(2).build().unwrap();
    let rnn = Rnn::new(&ctx, &Weights::init(&cfg, 3)).unwrap();
    let before = fingerprint(&ctx, &rnn);
    let limit = |r: rnn_wgpu::Result<()>| match r {
        Err(Error::LimitExceeded {
            needed, allowed, ..
        }) => assert!(needed > allowed),
        other => panic!("expected LimitExceeded, got {other:?}"),
    };
    // A tensor, a model's weights, a pass's outputs, a session's state: each over 1 MiB.
    limit(GpuTensor::zeros(&ctx, &[1 << 18, 2]).map(|_| ()));
    let big = RnnConfig::lstm(300, 300).build().unwrap();
    limit(Rnn::new(&ctx, &Weights::init(&big, 3)).map(|_| ()));
    let long = GpuTensor::zeros(&ctx, &[20_000, 2, 3]).unwrap();
    limit(rnn.forward(&long, None).map(|_| ()));
    limit(rnn.forward_train(&long, None).map(|_| ()));
    limit(rnn.session(40_000).map(|_| ()));
    // Nothing was left behind, and the same context and model give the same bits.
    ctx.wait().unwrap();
    assert!(fingerprint(&ctx, &rnn) == before);
}

#[test]
fn allocation_failures_in_training_calls_are_typed_and_leave_the_model_working() {
    let Some(ctx) = own_ctx() else { return };
    let cfg = RnnConfig::gru(3, 6).num_layers(2).build().unwrap();
    let rnn = Rnn::new(&ctx, &Weights::init(&cfg, 4)).unwrap();
    let reference = fingerprint(&ctx, &rnn);
    // New shapes make each call allocate; fail its n-th allocation, for every n until the
    // call needs fewer.
    let x = GpuTensor::upload(&ctx, &seeded(7, 5 * 2 * 3, 1.0), &[5, 2, 3]).unwrap();
    let calls: [(&str, &dyn Fn() -> rnn_wgpu::Result<()>); 3] = [
        ("forward_train + backward", &|| {
            let (out, tape) = rnn.forward_train(&x, None)?;
            rnn.backward(&tape, Some(&out.y), None, None).map(|_| ())
        }),
        ("session", &|| {
            let mut s = rnn.session(5)?;
            s.step_host(&seeded(8, 15, 1.0))?.download(&ctx).map(|_| ())
        }),
        ("optimizer", &|| {
            let sgd = Sgd {
                momentum: 0.9,
                ..Sgd::new(0.0)
            };
            SgdOptimizer::new(&ctx, sgd, &rnn.parameters().unwrap()).map(|_| ())
        }),
    ];
    for (name, f) in calls {
        let mut failed = 0;
        for n in 1..=64 {
            ctx.fail_allocation(n);
            let r = f();
            ctx.fail_allocation(0);
            match r {
                Err(Error::OutOfMemory { what, .. }) => {
                    assert!(what.contains("injected"), "{name}: {what}");
                    failed += 1;
                }
                Ok(()) => break,
                Err(e) => panic!("{name}, allocation {n}: expected OutOfMemory, got {e}"),
            }
            // The context and the model still work, bit for bit.
            assert!(
                fingerprint(&ctx, &rnn) == reference,
                "{name} after failing allocation {n}"
            );
        }
        assert!(failed > 0, "{name}: no allocation was failed");
        f().unwrap();
        eprintln!("{name}: failed each of its first {failed} allocations in turn");
    }
    ctx.wait().unwrap();
}
