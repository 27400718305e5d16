//! The shared GPU context of a test binary.

use std::io::Write;
use std::sync::OnceLock;

use rnn_wgpu::Context;

/// The adapter every GPU test runs on, opened once per test binary.
///
/// A missing adapter fails the test (it is never a silent skip). Set
/// `RNN_WGPU_ALLOW_NO_ADAPTER=1` to let a machine without any adapter run only the CPU tests;
/// under `CI=true` that escape is ignored.
pub fn ctx() -> Option<&'static Context> {
    static CTX: OnceLock<Option<Context>> = OnceLock::new();
    CTX.get_or_init(|| match Context::new() {
        Ok(c) => {
            // Written straight to stderr so it shows in the log even for passing tests
            // (the test harness only captures the print macros).
            let _ = writeln!(
                std::io::stderr(),
                "rnn-wgpu tests: adapter = {}",
                c.describe()
            );
            Some(c)
        }
        Err(e) => {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            let allow = std::env::var("RNN_WGPU_ALLOW_NO_ADAPTER").is_ok_and(|v| v == "1");
            if ci || !allow {
                panic!("no GPU adapter for the GPU tests: {e}");
            }
            let _ = writeln!(
                std::io::stderr(),
                "rnn-wgpu tests: NO ADAPTER, GPU tests skipped: {e}"
            );
            None
        }
    })
    .as_ref()
}

/// A context of its own, for tests that count this context's submissions (the shared one is
/// used by tests running in parallel).
pub fn own_ctx() -> Option<Context> {
    ctx()?;
    Some(Context::new().expect("the adapter opened once already"))
}

/// A device of its own on the shared context's adapter with some limits lowered by `f`, to
/// exercise limit handling (checks, time tiling, 2-D grids) without allocating gigabytes.
/// `None` only where the GPU tests are skipped (see [`ctx`]); an adapter that opened once but
/// cannot be found again fails the test instead of letting it pass without running.
pub fn limited(f: impl FnOnce(&mut wgpu::Limits)) -> Option<Context> {
    let shared = ctx()?;
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let want = shared.adapter_info();
    let adapter = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
        .into_iter()
        .find(|a| {
            let info = a.get_info();
            info.name == want.name && info.backend == want.backend
        })
        .unwrap_or_else(|| {
            panic!(
                "the test adapter {} ({:?}) could not be opened again with lowered limits",
                want.name, want.backend
            )
        });
    let mut limits = adapter.limits();
    f(&mut limits);
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_limits: limits,
        ..Default::default()
    }))
    .unwrap();
    Some(Context::from_device(device, queue))
}
