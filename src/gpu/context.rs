//! The GPU context: adapter, device, queue, limits, and the pipeline cache.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::gpu::shaders::{Binding, Kernel};

/// Environment variable naming (a case-insensitive substring of) the adapter to use.
pub const ADAPTER_ENV: &str = "RNN_WGPU_ADAPTER";

/// A wgpu device and queue plus everything the crate caches for it.
///
/// Cheap to clone (all state is shared). Build with [`Context::new`], which picks the best
/// adapter, or hand in a framework's own device with [`Context::from_device`].
#[derive(Clone)]
pub struct Context {
    inner: Arc<Inner>,
}

struct Inner {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    pipelines: Mutex<HashMap<PipelineKey, Arc<CachedPipeline>>>,
    submissions: AtomicU64,
    /// Errors wgpu reported outside any error scope, on devices this crate created.
    uncaptured: Arc<Mutex<Vec<String>>>,
}

/// A compiled pipeline and its bind group layout.
pub(crate) struct CachedPipeline {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

/// Pipelines are keyed by kernel and the values of its `override` constants (as `f64` bit
/// patterns: wgpu takes every override value as an `f64`).
#[derive(Clone, PartialEq, Eq, Hash)]
struct PipelineKey {
    kernel: Kernel,
    constants: Vec<(&'static str, u64)>,
}

/// How [`Context::with_options`] chooses an adapter.
#[derive(Debug, Clone, Default)]
pub struct ContextOptions {
    /// Case-insensitive substring of the adapter name (`RNN_WGPU_ADAPTER`); `None` takes the
    /// best-ranked adapter.
    pub adapter: Option<String>,
}

impl ContextOptions {
    /// Options from `RNN_WGPU_ADAPTER` (an empty value counts as unset).
    pub fn from_env() -> ContextOptions {
        ContextOptions {
            adapter: std::env::var(ADAPTER_ENV).ok().filter(|s| !s.is_empty()),
        }
    }
}

/// A device's ranking when choosing among adapters: discrete before integrated before
/// virtual before software, and among equals the native API before GL.
fn adapter_rank(info: &wgpu::AdapterInfo) -> (u8, u8) {
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

fn enumerate() -> Vec<wgpu::Adapter> {
    let desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    let backends = desc.backends;
    let instance = wgpu::Instance::new(desc);
    pollster::block_on(instance.enumerate_adapters(backends))
}

impl Context {
    /// Open the best adapter: the one whose name contains `RNN_WGPU_ADAPTER` if that is set,
    /// else the highest-ranked (discrete GPU first, software rasterisers last). `WGPU_BACKEND`
    /// (e.g. `vulkan`, `gl`) restricts the backends searched.
    ///
    /// Errors: [`Error::NoAdapter`] (with the names that were found, and how to get a software
    /// adapter), [`Error::RequestDevice`].
    pub fn new() -> Result<Context> {
        Self::with_options(&ContextOptions::from_env())
    }

    /// Like [`Context::new`], with the adapter choice given explicitly instead of read from
    /// the environment.
    pub fn with_options(opts: &ContextOptions) -> Result<Context> {
        let adapters = enumerate();
        let found: Vec<String> = adapters
            .iter()
            .map(|a| {
                let i = a.get_info();
                format!("{} ({:?})", i.name, i.backend)
            })
            .collect();
        let wanted = opts.adapter.as_deref().map(str::to_lowercase);
        let adapter = adapters
            .into_iter()
            .filter(|a| match &wanted {
                Some(sub) => a.get_info().name.to_lowercase().contains(sub),
                None => true,
            })
            .min_by_key(|a| adapter_rank(&a.get_info()));
        let Some(adapter) = adapter else {
            return Err(Error::NoAdapter(match &opts.adapter {
                Some(sub) => format!(" with a name containing {sub:?}; found {found:?}"),
                None => " (on Linux without a GPU, install Mesa's software Vulkan driver: \
                          `apt-get install mesa-vulkan-drivers`)"
                    .to_string(),
            }));
        };
        Self::from_adapter(&adapter)
    }

    /// Open a device on `adapter` with the adapter's full limits, so large models can use
    /// all the storage-binding size the hardware offers.
    pub fn from_adapter(adapter: &wgpu::Adapter) -> Result<Context> {
        let (device, queue) =
            pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
                label: Some("rnn-wgpu"),
                required_features: wgpu::Features::empty(),
                required_limits: adapter.limits(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            }))?;
        // Our own device: collect stray errors instead of wgpu's default handler, which panics.
        let uncaptured = Arc::new(Mutex::new(Vec::new()));
        let sink = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            sink.lock().expect("error sink").push(e.to_string());
        }));
        Ok(Self::build(device, queue, adapter.get_info(), uncaptured))
    }

    /// Use a device and queue created by the caller (a framework sharing its device).
    /// The caller's uncaptured-error handler is left alone; this crate wraps its own work in
    /// error scopes.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Context {
        let info = device.adapter_info();
        Self::build(device, queue, info, Arc::new(Mutex::new(Vec::new())))
    }

    fn build(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: wgpu::AdapterInfo,
        uncaptured: Arc<Mutex<Vec<String>>>,
    ) -> Context {
        let limits = device.limits();
        Context {
            inner: Arc::new(Inner {
                device,
                queue,
                info,
                limits,
                pipelines: Mutex::new(HashMap::new()),
                submissions: AtomicU64::new(0),
                uncaptured,
            }),
        }
    }

    /// The wgpu device.
    pub fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }
    /// The wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }
    /// Name, backend and type of the adapter.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.inner.info
    }
    /// The device's limits (what every chunking decision is made against).
    pub fn limits(&self) -> &wgpu::Limits {
        &self.inner.limits
    }
    /// `"name (Backend, DeviceType)"`, for logs and tables.
    pub fn describe(&self) -> String {
        let i = &self.inner.info;
        format!("{} ({:?}, {:?})", i.name, i.backend, i.device_type)
    }

    /// Number of queue submissions this crate has made on this context (downloads included).
    /// Lets tests and the harness show that a forward pass is one submission.
    pub fn submission_count(&self) -> u64 {
        self.inner.submissions.load(Ordering::Relaxed)
    }

    /// Submit one command buffer and count it (see [`Context::submission_count`]).
    pub fn submit(&self, cmd: wgpu::CommandBuffer) -> wgpu::SubmissionIndex {
        self.inner.submissions.fetch_add(1, Ordering::Relaxed);
        self.inner.queue.submit(Some(cmd))
    }

    /// Block until all submitted work has finished.
    pub fn wait(&self) -> Result<()> {
        self.inner
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(e.to_string()))?;
        self.take_uncaptured()
    }

    /// Turn errors wgpu reported outside our scopes into an `Error`.
    pub(crate) fn take_uncaptured(&self) -> Result<()> {
        let mut errs = self.inner.uncaptured.lock().expect("error sink");
        if errs.is_empty() {
            Ok(())
        } else {
            let msg = errs.join("; ");
            errs.clear();
            Err(Error::Gpu(msg))
        }
    }

    /// Run `f` inside a validation + out-of-memory error scope; any error wgpu reports for the
    /// recorded work becomes `Error::Gpu` instead of a panic.
    pub(crate) fn scoped<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let dev = &self.inner.device;
        let oom = dev.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = dev.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        let v = pollster::block_on(validation.pop());
        let o = pollster::block_on(oom.pop());
        if let Some(e) = v.or(o) {
            return Err(Error::Gpu(e.to_string()));
        }
        self.take_uncaptured()?;
        out
    }

    /// The pipeline for `kernel` specialised with `constants`, compiled on first use.
    pub(crate) fn pipeline(
        &self,
        kernel: Kernel,
        constants: &[(&'static str, f64)],
    ) -> Arc<CachedPipeline> {
        let key = PipelineKey {
            kernel,
            constants: constants.iter().map(|&(n, v)| (n, v.to_bits())).collect(),
        };
        let mut cache = self.inner.pipelines.lock().expect("pipeline cache");
        if let Some(p) = cache.get(&key) {
            return p.clone();
        }
        let p = Arc::new(self.compile(kernel, constants));
        cache.insert(key, p.clone());
        p
    }

    fn compile(&self, kernel: Kernel, constants: &[(&'static str, f64)]) -> CachedPipeline {
        let dev = &self.inner.device;
        let module = dev.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(kernel.name()),
            source: wgpu::ShaderSource::Wgsl(kernel.source().into()),
        });
        let entries: Vec<wgpu::BindGroupLayoutEntry> = kernel
            .bindings()
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupLayoutEntry {
                binding: i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: match b {
                        Binding::Uniform | Binding::DynamicUniform => {
                            wgpu::BufferBindingType::Uniform
                        }
                        Binding::Read => wgpu::BufferBindingType::Storage { read_only: true },
                        Binding::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
                    },
                    has_dynamic_offset: matches!(b, Binding::DynamicUniform),
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let layout = dev.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(kernel.name()),
            entries: &entries,
        });
        let pipeline_layout = dev.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(kernel.name()),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let consts: Vec<(&str, f64)> = constants.to_vec();
        let pipeline = dev.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(kernel.name()),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some("main"),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &consts,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        CachedPipeline { pipeline, layout }
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("adapter", &self.describe())
            .finish()
    }
}
