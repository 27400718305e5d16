//! The GPU context: adapter, device, queue, limits, and the pipeline cache.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::gpu::adapter::{ContextOptions, adapter_rank, enumerate};
use crate::gpu::pipelines::{
    CachedPipeline, PipelineCache, PipelineKey, compile, subgroup_reduction,
};
use crate::gpu::shaders::Kernel;
use crate::gpu::uniforms::{BOUND_CACHE_CAPACITY, Bound, BoundKey};

// The switches that choose kernel variants (checks, subgroups, f16, paired steps).
mod switches;

/// Compiled pipelines kept per context (least recently used evicted first). Every kernel
/// variant of one model is a handful of pipelines; 256 covers dozens of models and cell
/// variants, and bounds what a long-lived process keeps.
pub const PIPELINE_CACHE_CAPACITY: usize = 256;

/// Free download staging buffers a context keeps for reuse.
pub const STAGING_KEEP: usize = 8;

/// How long [`Context::wait`] waits for the GPU by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// A wgpu device and queue plus everything the crate caches for it.
///
/// Cheap to clone (all state is shared), `Send + Sync`. Build with [`Context::new`], which
/// picks the best adapter, or hand in a framework's own device with [`Context::from_device`].
///
/// GPU failures come back typed: every allocation and every recorded call runs inside wgpu
/// error scopes (thread-local in wgpu, so an error is attributed to the call that caused it,
/// whichever thread made it) and becomes [`Error::OutOfMemory`], [`Error::Validation`] or
/// [`Error::DeviceLost`]; waits are bounded ([`Error::Timeout`]).
#[derive(Clone)]
pub struct Context {
    inner: Arc<Inner>,
}

struct Inner {
    /// Unique per context, so tensors made here can be told from another context's.
    id: u64,
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    pipelines: Mutex<PipelineCache>,
    /// The clip and optimiser calls' bound resources, least recently used last.
    bound: Mutex<Vec<(BoundKey, Arc<Bound>)>>,
    /// Free mappable staging buffers for downloads, most recently returned last.
    staging: Mutex<Vec<wgpu::Buffer>>,
    submissions: AtomicU64,
    buffers: AtomicU64,
    uniform_buffers: AtomicU64,
    bind_groups: AtomicU64,
    timeout_ms: AtomicU64,
    /// Compile kernels without wgpu's runtime checks (see [`Context::set_unchecked_shaders`]).
    unchecked: AtomicBool,
    /// The device's smallest subgroup size when it has `SUBGROUP`, else 0.
    subgroup_min: u32,
    /// Whether the step kernels may reduce with subgroup shuffles (see
    /// [`Context::set_subgroups`]).
    use_subgroups: AtomicBool,
    /// Whether models may store f16 weights (see [`Context::set_shader_f16`]).
    use_f16: AtomicBool,
    /// Whether bidirectional layers may pair their steps (see [`Context::set_paired_steps`]).
    use_paired_steps: AtomicBool,
    /// Fault injection: the buffer creation with this 1-based count fails as out of memory
    /// (0: none). See [`Context::fail_allocation`].
    fail_at: AtomicU64,
    /// Errors wgpu reported outside any error scope, on devices this crate created.
    uncaptured: Arc<Mutex<Vec<wgpu::Error>>>,
    /// Set by the device-lost callback (our own device), or when an error says the device is
    /// gone.
    lost: Arc<Mutex<Option<String>>>,
}

static NEXT_CONTEXT_ID: AtomicU64 = AtomicU64::new(1);

/// How many GPU objects this crate has created on a context (see
/// [`Context::allocation_counts`]). Every buffer and bind group the crate makes goes through
/// one helper that counts it, so a test can show that steady-state calls create none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllocationCounts {
    /// Buffers of every kind (storage, uniform, staging).
    pub buffers: u64,
    /// Of those, uniform buffers.
    pub uniform_buffers: u64,
    /// Bind groups.
    pub bind_groups: u64,
}

impl std::ops::Sub for AllocationCounts {
    type Output = AllocationCounts;
    fn sub(self, o: AllocationCounts) -> AllocationCounts {
        AllocationCounts {
            buffers: self.buffers - o.buffers,
            uniform_buffers: self.uniform_buffers - o.uniform_buffers,
            bind_groups: self.bind_groups - o.bind_groups,
        }
    }
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
        let ctx = Self::from_adapter(&adapter)?;
        if let Some(t) = opts.timeout {
            ctx.set_timeout(t);
        }
        ctx.set_unchecked_shaders(opts.unchecked_shaders);
        Ok(ctx)
    }

    /// Open a device on `adapter` with the adapter's full limits, so large models can use
    /// all the storage-binding size the hardware offers.
    pub fn from_adapter(adapter: &wgpu::Adapter) -> Result<Context> {
        let (device, queue) =
            pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
                label: Some("rnn-wgpu"),
                // Subgroup operations where the adapter has them (the step kernels' reductions),
                // and SHADER_F16, which gates f16 weight storage (`WeightPrecision`).
                required_features: adapter.features()
                    & (wgpu::Features::SUBGROUP | wgpu::Features::SHADER_F16),
                required_limits: adapter.limits(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            }))?;
        // Our own device: collect stray errors instead of wgpu's default handler, which panics,
        // and learn of a lost device from wgpu's callback.
        let uncaptured = Arc::new(Mutex::new(Vec::new()));
        let sink = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            sink.lock().unwrap_or_else(|p| p.into_inner()).push(e);
        }));
        let lost = Arc::new(Mutex::new(None));
        let flag = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            *flag.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(format!("{reason:?}: {message}"));
        });
        Ok(Self::build(
            device,
            queue,
            adapter.get_info(),
            uncaptured,
            lost,
        ))
    }

    /// Use a device and queue created by the caller (a framework sharing its device).
    ///
    /// The framework's own uncaptured-error handler and device-lost callback are left alone:
    /// wgpu keeps one of each per device, and they are the framework's. This crate wraps all
    /// of its own work in error scopes instead, so errors caused by its calls still come back
    /// from those calls, typed; a lost device shows up as [`Error::DeviceLost`] on the next
    /// call that touches the GPU (wgpu reports work on a lost device as such), while the
    /// framework's callback hears of the loss as usual.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Context {
        let info = device.adapter_info();
        Self::build(
            device,
            queue,
            info,
            Arc::new(Mutex::new(Vec::new())),
            Arc::new(Mutex::new(None)),
        )
    }

    fn build(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: wgpu::AdapterInfo,
        uncaptured: Arc<Mutex<Vec<wgpu::Error>>>,
        lost: Arc<Mutex<Option<String>>>,
    ) -> Context {
        let limits = device.limits();
        let subgroup_min = match device.features().contains(wgpu::Features::SUBGROUP) {
            true => info.subgroup_min_size,
            false => 0,
        };
        Context {
            inner: Arc::new(Inner {
                id: NEXT_CONTEXT_ID.fetch_add(1, Ordering::Relaxed),
                device,
                queue,
                info,
                limits,
                pipelines: Mutex::new(PipelineCache::default()),
                bound: Mutex::new(Vec::new()),
                staging: Mutex::new(Vec::new()),
                submissions: AtomicU64::new(0),
                buffers: AtomicU64::new(0),
                uniform_buffers: AtomicU64::new(0),
                bind_groups: AtomicU64::new(0),
                timeout_ms: AtomicU64::new(DEFAULT_TIMEOUT.as_millis() as u64),
                unchecked: AtomicBool::new(false),
                subgroup_min,
                use_subgroups: AtomicBool::new(true),
                use_f16: AtomicBool::new(true),
                use_paired_steps: AtomicBool::new(true),
                fail_at: AtomicU64::new(0),
                uncaptured,
                lost,
            }),
        }
    }

    pub(crate) fn id(&self) -> u64 {
        self.inner.id
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

    /// Every buffer and bind group this crate has created on this context so far.
    pub fn allocation_counts(&self) -> AllocationCounts {
        AllocationCounts {
            buffers: self.inner.buffers.load(Ordering::Relaxed),
            uniform_buffers: self.inner.uniform_buffers.load(Ordering::Relaxed),
            bind_groups: self.inner.bind_groups.load(Ordering::Relaxed),
        }
    }

    /// Fault injection for tests: the `n`-th buffer this context creates from now on fails
    /// with [`Error::OutOfMemory`], as if the device were full (software adapters grant
    /// address space lazily, so a real out-of-memory error cannot be provoked on them);
    /// `n = 0` disarms it.
    #[doc(hidden)]
    pub fn fail_allocation(&self, n: u64) {
        let now = self.inner.buffers.load(Ordering::Relaxed);
        self.inner.fail_at.store(now + n, Ordering::Relaxed);
    }

    /// Compiled pipelines in the cache (at most [`PIPELINE_CACHE_CAPACITY`]).
    pub fn cached_pipelines(&self) -> usize {
        lock(&self.inner.pipelines).len()
    }

    /// The bound on every wait for the GPU.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.inner.timeout_ms.load(Ordering::Relaxed))
    }

    /// Change the bound on every wait for the GPU (shared by every clone of this context).
    pub fn set_timeout(&self, timeout: Duration) {
        let ms = timeout.as_millis().clamp(1, u64::MAX as u128) as u64;
        self.inner.timeout_ms.store(ms, Ordering::Relaxed);
    }

    /// Submit one command buffer and count it (see [`Context::submission_count`]).
    ///
    /// Errors: [`Error::DeviceLost`] when the device is known to be lost (nothing is
    /// submitted then).
    pub fn submit(&self, cmd: wgpu::CommandBuffer) -> Result<wgpu::SubmissionIndex> {
        self.check_alive()?;
        self.inner.submissions.fetch_add(1, Ordering::Relaxed);
        Ok(self.inner.queue.submit(Some(cmd)))
    }

    /// Block until all submitted work has finished, at most [`Context::timeout`].
    ///
    /// Errors: [`Error::Timeout`], [`Error::DeviceLost`], and any error wgpu reported outside
    /// a scope on this crate's own device.
    pub fn wait(&self) -> Result<()> {
        self.check_alive()?;
        let timeout = self.timeout();
        let start = Instant::now();
        let polled = self.inner.device.poll(wgpu::PollType::Wait {
            submission_index: None,
            timeout: Some(timeout),
        });
        self.check_alive()?;
        match polled {
            Ok(_) => {}
            Err(wgpu::PollError::Timeout) => {
                return Err(Error::Timeout {
                    what: "the GPU to finish submitted work".into(),
                    waited_ms: start.elapsed().as_millis() as u64,
                });
            }
            Err(e) => return Err(Error::Internal(format!("polling the device: {e}"))),
        }
        self.take_uncaptured("work outside any call")
    }

    /// [`Error::DeviceLost`] once the device is known to be gone.
    pub(crate) fn check_alive(&self) -> Result<()> {
        match lock(&self.inner.lost).as_ref() {
            Some(reason) => Err(Error::DeviceLost {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Whether the device is known to be lost, after letting wgpu notice. `Device::destroy`
    /// only marks the device invalid: wgpu calls the device-lost callback from a poll that
    /// finds the queue empty, and until then work on the device fails with errors that do not
    /// say why (a buffer created on it is "invalid"). So before such an error is called a
    /// validation error, the device is polled once (bounded by the context's timeout).
    fn lost_after_poll(&self) -> bool {
        if self.check_alive().is_err() {
            return true;
        }
        let _ = self.inner.device.poll(wgpu::PollType::Wait {
            submission_index: None,
            timeout: Some(self.timeout()),
        });
        self.check_alive().is_err()
    }

    /// Turn errors wgpu reported outside our scopes into an `Error`.
    pub(crate) fn take_uncaptured(&self, what: &str) -> Result<()> {
        let first = lock(&self.inner.uncaptured).drain(..).next();
        match first {
            None => Ok(()),
            Some(e) => Err(self.classify(what, 0, e)),
        }
    }

    /// The typed error for a wgpu error raised by `what`.
    fn classify(&self, what: &str, bytes: u64, e: wgpu::Error) -> Error {
        match e {
            wgpu::Error::OutOfMemory { .. } => Error::OutOfMemory {
                what: what.to_string(),
                bytes,
            },
            wgpu::Error::Validation { description, .. }
            | wgpu::Error::Internal { description, .. } => {
                // wgpu reports work on a destroyed or lost device as a validation error.
                if description.to_lowercase().contains("lost")
                    || description.to_lowercase().contains("destroyed device")
                    || self.lost_after_poll()
                {
                    let reason = lock(&self.inner.lost)
                        .get_or_insert_with(|| description.clone())
                        .clone();
                    Error::DeviceLost { reason }
                } else {
                    Error::Validation {
                        kernel: what.to_string(),
                        message: description,
                    }
                }
            }
        }
    }

    /// Run `f` inside out-of-memory, validation and internal error scopes; any error wgpu
    /// reports for the work `f` records comes back typed, attributed to `what`.
    pub(crate) fn scoped<T>(&self, what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        self.check_alive()?;
        let dev = &self.inner.device;
        let internal = dev.push_error_scope(wgpu::ErrorFilter::Internal);
        let oom = dev.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = dev.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        let v = pollster::block_on(validation.pop());
        let o = pollster::block_on(oom.pop());
        let i = pollster::block_on(internal.pop());
        if let Some(e) = v.or(o).or(i) {
            return Err(self.classify(what, 0, e));
        }
        self.take_uncaptured(what)?;
        out
    }

    /// A command encoder (no GPU allocation is counted: encoders are transient).
    pub(crate) fn encoder(&self, label: &str) -> wgpu::CommandEncoder {
        self.inner
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) })
    }

    /// Create (and count) a buffer of `size` bytes, checked against `max_buffer_size` first;
    /// an out-of-memory failure comes back as [`Error::OutOfMemory`] naming `label`.
    pub(crate) fn create_buffer(
        &self,
        label: &str,
        size: u64,
        usage: wgpu::BufferUsages,
    ) -> Result<wgpu::Buffer> {
        let max = self.inner.limits.max_buffer_size;
        // Whole 16-byte words: kernels may read any buffer as vec4s (see rnn_step.wgsl).
        let alloc = size.max(16).next_multiple_of(16);
        if alloc > max {
            return Err(Error::LimitExceeded {
                limit: "max_buffer_size",
                what: format!("buffer `{label}`"),
                needed: size,
                allowed: max,
            });
        }
        self.check_alive()?;
        let n = self.inner.buffers.fetch_add(1, Ordering::Relaxed) + 1;
        if self.inner.fail_at.load(Ordering::Relaxed) == n {
            return Err(Error::OutOfMemory {
                what: format!("{label} (injected)"),
                bytes: size,
            });
        }
        if usage.contains(wgpu::BufferUsages::UNIFORM) {
            self.inner.uniform_buffers.fetch_add(1, Ordering::Relaxed);
        }
        let dev = &self.inner.device;
        let oom = dev.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buffer = dev.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: alloc,
            usage,
            mapped_at_creation: false,
        });
        if let Some(e) = pollster::block_on(oom.pop()) {
            return Err(self.classify(label, size, e));
        }
        Ok(buffer)
    }

    /// Create (and count) a bind group.
    pub(crate) fn create_bind_group(
        &self,
        label: &str,
        layout: &wgpu::BindGroupLayout,
        entries: &[wgpu::BindGroupEntry<'_>],
    ) -> wgpu::BindGroup {
        self.inner.bind_groups.fetch_add(1, Ordering::Relaxed);
        self.inner
            .device
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(label),
                layout,
                entries,
            })
    }

    /// A mappable staging buffer of at least `bytes` (at most 4x as large), from the pool when
    /// one is free: repeated downloads of one size create no buffer.
    pub(crate) fn take_staging(&self, bytes: u64) -> Result<wgpu::Buffer> {
        {
            let mut pool = lock(&self.inner.staging);
            let fits = |b: &wgpu::Buffer| b.size() >= bytes && b.size() <= bytes.saturating_mul(4);
            if let Some(i) = pool.iter().rposition(fits) {
                return Ok(pool.remove(i));
            }
        }
        let usage = wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST;
        let size = bytes
            .next_power_of_two()
            .max(256)
            .min(self.inner.limits.max_buffer_size);
        self.create_buffer("download staging", size.max(bytes), usage)
    }

    /// Give a staging buffer (unmapped) back to the pool, which keeps the
    /// [`STAGING_KEEP`] most recently used.
    pub(crate) fn return_staging(&self, b: wgpu::Buffer) {
        let mut pool = lock(&self.inner.staging);
        pool.push(b);
        if pool.len() > STAGING_KEEP {
            pool.remove(0);
        }
    }

    pub(crate) fn bound_cache_get(&self, key: &BoundKey) -> Option<Arc<Bound>> {
        let mut cache = lock(&self.inner.bound);
        let i = cache.iter().position(|(k, _)| k == key)?;
        let hit = cache.remove(i);
        let b = hit.1.clone();
        cache.insert(0, hit);
        Some(b)
    }

    pub(crate) fn bound_cache_put(&self, key: BoundKey, b: Arc<Bound>) {
        let mut cache = lock(&self.inner.bound);
        cache.insert(0, (key, b));
        cache.truncate(BOUND_CACHE_CAPACITY);
    }

    /// The pipeline for `kernel` specialised with `constants`, compiled on first use.
    ///
    /// The cache lock is not held while a shader compiles (two threads may then compile the
    /// same variant once each; the first to finish is kept). A compile that fails is returned
    /// as [`Error::Validation`] and never cached.
    pub(crate) fn pipeline(
        &self,
        kernel: Kernel,
        constants: &[(&'static str, f64)],
    ) -> Result<Arc<CachedPipeline>> {
        let key = PipelineKey::new(
            kernel,
            constants,
            self.unchecked_shaders(),
            subgroup_reduction(self.subgroups(), kernel, constants),
        );
        if let Some(p) = lock(&self.inner.pipelines).get(&key) {
            return Ok(p);
        }
        let compiled = Arc::new(self.scoped(kernel.name(), || {
            Ok(compile(
                &self.inner.device,
                kernel,
                constants,
                key.unchecked,
                key.subgroups,
            ))
        })?);
        Ok(lock(&self.inner.pipelines).insert(key, compiled, PIPELINE_CACHE_CAPACITY))
    }
}

/// Lock a mutex, recovering it if a panicking thread poisoned it: every value behind this
/// crate's locks stays consistent between statements.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("adapter", &self.describe())
            .finish()
    }
}
