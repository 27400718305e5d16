//! Choosing an adapter: what `RNN_WGPU_ADAPTER`, `WGPU_BACKEND` and [`ContextOptions`] select,
//! and how adapters rank.

use std::time::Duration;

/// Environment variable naming (a case-insensitive substring of) the adapter to use.
pub const ADAPTER_ENV: &str = "RNN_WGPU_ADAPTER";

/// How [`crate::Context::with_options`] chooses an adapter.
#[derive(Debug, Clone, Default)]
pub struct ContextOptions {
    /// Case-insensitive substring of the adapter name (`RNN_WGPU_ADAPTER`); `None` takes the
    /// best-ranked adapter.
    pub adapter: Option<String>,
    /// How long [`crate::Context::wait`] (and every blocking call) waits for the GPU before
    /// [`crate::Error::Timeout`]; `None`: [`crate::gpu::DEFAULT_TIMEOUT`].
    pub timeout: Option<Duration>,
    /// Compile kernels without wgpu's shader runtime checks
    /// (see [`crate::Context::set_unchecked_shaders`]); off by default.
    pub unchecked_shaders: bool,
}

impl ContextOptions {
    /// Options from `RNN_WGPU_ADAPTER` (an empty value counts as unset).
    pub fn from_env() -> ContextOptions {
        ContextOptions {
            adapter: std::env::var(ADAPTER_ENV).ok().filter(|s| !s.is_empty()),
            timeout: None,
            unchecked_shaders: false,
        }
    }
}

/// A device's ranking when choosing among adapters: discrete before integrated before
/// virtual before software, and among equals the native API before GL.
pub(crate) fn adapter_rank(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let ty = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    };
    let api = match info.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        wgpu::Backend::BrowserWebGpu => 1,
        _ => 2,
    };
    (ty, api)
}

/// Every adapter wgpu can see with the backends allowed by `WGPU_BACKEND` (all by default).
pub fn list_adapters() -> Vec<wgpu::AdapterInfo> {
    enumerate().into_iter().map(|a| a.get_info()).collect()
}

pub(crate) fn enumerate() -> Vec<wgpu::Adapter> {
    let desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    let backends = desc.backends;
    let instance = wgpu::Instance::new(desc);
    pollster::block_on(instance.enumerate_adapters(backends))
}
