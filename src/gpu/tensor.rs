//! `GpuTensor`: a storage buffer plus its shape.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use crate::error::{Error, Result};
use crate::gpu::context::Context;

/// Usages every tensor buffer this crate creates carries: bindable as storage, and copyable
/// both ways (upload, download, state carries between time chunks).
pub const TENSOR_USAGES: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// A dense row-major `f32` tensor in a wgpu storage buffer.
///
/// Cloning is cheap and aliases the same buffer.
///
/// Tensors that a model returns from its pools (the outputs of [`crate::Rnn::forward`], the
/// gradients of [`crate::Rnn::backward`], a session's `y_t`) keep their pool slot busy while any
/// clone of them is alive; once every clone is dropped, the next call of the same shape reuses
/// the buffer instead of allocating. A raw `wgpu::Buffer` taken with [`GpuTensor::buffer`] does
/// not count: keep the `GpuTensor` while you use its contents.
#[derive(Clone)]
pub struct GpuTensor {
    buffer: wgpu::Buffer,
    shape: Vec<usize>,
    /// Keeps a pool slot busy while this tensor (or a clone) lives.
    lease: Option<Arc<dyn Any + Send + Sync>>,
    /// A model's parameter version, bumped by every update of this tensor (optimiser steps),
    /// so a tape recorded before the update is refused.
    version: Option<Arc<AtomicU64>>,
    /// The context that made the buffer (`None`: a caller's buffer, origin unknown).
    origin: Option<u64>,
}

impl std::fmt::Debug for GpuTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuTensor")
            .field("shape", &self.shape)
            .field("bytes", &self.buffer.size())
            .finish()
    }
}

/// Elements of `shape`, saturating: an absurd shape then fails the size checks with a typed
/// error instead of wrapping around to a small buffer.
fn numel(shape: &[usize]) -> usize {
    shape.iter().fold(1usize, |n, &d| n.saturating_mul(d))
}

fn byte_len(ctx: &Context, name: &str, shape: &[usize]) -> Result<u64> {
    let bytes = (numel(shape) as u64).saturating_mul(4);
    let max = ctx.limits().max_buffer_size;
    if bytes > max {
        return Err(Error::LimitExceeded {
            limit: "max_buffer_size",
            what: format!("tensor `{name}` of shape {shape:?}"),
            needed: bytes,
            allowed: max,
        });
    }
    // wgpu buffers may not be empty when bound; a zero-element tensor still owns one word.
    Ok(bytes.max(4))
}

impl GpuTensor {
    /// Copy `data` (row-major, `shape`) to a new buffer.
    pub fn upload(ctx: &Context, data: &[f32], shape: &[usize]) -> Result<GpuTensor> {
        if data.len() != numel(shape) {
            return Err(Error::ShapeMismatch {
                name: "data".into(),
                expected: shape.to_vec(),
                got: vec![data.len()],
            });
        }
        let t = Self::uninit(ctx, "data", shape)?;
        if !data.is_empty() {
            ctx.queue()
                .write_buffer(&t.buffer, 0, bytemuck::cast_slice(data));
        }
        Ok(t)
    }

    /// A zero-filled tensor.
    pub fn zeros(ctx: &Context, shape: &[usize]) -> Result<GpuTensor> {
        // wgpu zero-initialises new buffers.
        Self::uninit(ctx, "zeros", shape)
    }

    pub(crate) fn uninit(ctx: &Context, name: &str, shape: &[usize]) -> Result<GpuTensor> {
        let size = byte_len(ctx, name, shape)?;
        let buffer = ctx.create_buffer(name, size, TENSOR_USAGES)?;
        let mut t = GpuTensor::wrap(buffer, shape);
        t.origin = Some(ctx.id());
        Ok(t)
    }

    /// A tensor over a buffer this crate made.
    pub(crate) fn wrap(buffer: wgpu::Buffer, shape: &[usize]) -> GpuTensor {
        GpuTensor {
            buffer,
            shape: shape.to_vec(),
            lease: None,
            version: None,
            origin: None,
        }
    }

    /// `Err` naming the tensor when it was made on another context (another device: wgpu
    /// cannot use it here).
    pub(crate) fn check_context(&self, ctx: &Context, name: &str) -> Result<()> {
        match self.origin {
            Some(id) if id != ctx.id() => Err(Error::BadBuffer {
                name: name.into(),
                why: "it was created on another Context (another device)".into(),
            }),
            _ => Ok(()),
        }
    }

    /// The parameter version this tensor belongs to, if it is a model parameter.
    pub(crate) fn version_counter(&self) -> Option<&Arc<AtomicU64>> {
        self.version.as_ref()
    }

    /// This tensor, keeping `lease` alive as long as it or a clone lives.
    pub(crate) fn with_lease(mut self, lease: Arc<dyn Any + Send + Sync>) -> GpuTensor {
        self.lease = Some(lease);
        self
    }

    /// This tensor, tied to a model's parameter version.
    pub(crate) fn with_version(mut self, version: Arc<AtomicU64>) -> GpuTensor {
        self.version = Some(version);
        self
    }

    /// Wrap a caller's buffer (a framework's activation, say) without copying. The buffer must
    /// have `STORAGE` usage (plus `COPY_SRC` to be downloaded, `COPY_DST` to be written by
    /// copies) and hold at least `4 * numel(shape)` bytes; only that prefix is used.
    pub fn from_buffer(buffer: wgpu::Buffer, shape: &[usize]) -> Result<GpuTensor> {
        let name = buffer_name(&buffer, shape);
        if !buffer.usage().contains(wgpu::BufferUsages::STORAGE) {
            return Err(Error::BadBuffer {
                name,
                why: format!("usage {:?} lacks STORAGE", buffer.usage()),
            });
        }
        let need = (numel(shape) as u64).saturating_mul(4);
        if buffer.size() < need {
            return Err(Error::BadBuffer {
                name,
                why: format!("{} bytes, shape {shape:?} needs {need}", buffer.size()),
            });
        }
        Ok(GpuTensor::wrap(buffer, shape))
    }

    /// The underlying buffer.
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }
    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// Number of elements.
    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }
    /// Bytes of the tensor's elements (may be less than the buffer's size).
    pub fn byte_size(&self) -> u64 {
        (self.numel() as u64).saturating_mul(4)
    }

    /// The same buffer seen with another shape of as many elements (like `torch.reshape` of a
    /// contiguous tensor): no copy; a pooled result stays leased while either view lives.
    ///
    /// Errors: [`Error::ShapeMismatch`] (named `reshape`, expected `shape`, got the tensor's
    /// own) when `shape` has another element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<GpuTensor> {
        if numel(shape) != self.numel() {
            return Err(Error::ShapeMismatch {
                name: "reshape".into(),
                expected: shape.to_vec(),
                got: self.shape.clone(),
            });
        }
        Ok(GpuTensor {
            shape: shape.to_vec(),
            ..self.clone()
        })
    }

    /// Copy the tensor back to the host (one submission, blocking until the GPU is done).
    pub fn download(&self, ctx: &Context) -> Result<Vec<f32>> {
        if !self.buffer.usage().contains(wgpu::BufferUsages::COPY_SRC) {
            return Err(Error::BadBuffer {
                name: buffer_name(&self.buffer, &self.shape),
                why: "usage lacks COPY_SRC, cannot download".into(),
            });
        }
        let bytes = self.byte_size();
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let staging = ctx.scoped("download", || {
            let mut enc = ctx.encoder("download");
            let staging = record_readback(ctx, &mut enc, &self.buffer, bytes)?;
            ctx.submit(enc.finish())?;
            Ok(staging)
        })?;
        read_back(ctx, staging, bytes, "download buffer")
    }
}

/// [`GpuTensor::download`] of an optional tensor (such as `c_n`); `None` stays `None`.
pub(crate) fn download_optional(ctx: &Context, t: Option<&GpuTensor>) -> Result<Option<Vec<f32>>> {
    t.map(|t| t.download(ctx)).transpose()
}

/// Record a copy of the first `bytes` bytes of `src` into a mappable staging buffer (from the
/// context's pool), so the readback travels in the same submission as the work that produced
/// it.
pub(crate) fn record_readback(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    src: &wgpu::Buffer,
    bytes: u64,
) -> Result<wgpu::Buffer> {
    let staging = ctx.take_staging(bytes)?;
    encoder.copy_buffer_to_buffer(src, 0, &staging, 0, bytes);
    Ok(staging)
}

/// Wait for the queue, then map a buffer from [`record_readback`], read its first `bytes` as
/// `f32`s and hand it back to the context's pool. `what` names the buffer in errors.
pub(crate) fn read_back(
    ctx: &Context,
    staging: wgpu::Buffer,
    bytes: u64,
    what: &str,
) -> Result<Vec<f32>> {
    let (tx, rx) = std::sync::mpsc::channel();
    staging.map_async(wgpu::MapMode::Read, .., move |r| {
        let _ = tx.send(r);
    });
    let start = std::time::Instant::now();
    ctx.wait()?;
    // Another thread's poll may be the one running our callback: wait for it, boundedly.
    let left = ctx.timeout().saturating_sub(start.elapsed());
    let mapped = rx.recv_timeout(left).map_err(|_| Error::Timeout {
        what: format!("mapping {what}"),
        waited_ms: start.elapsed().as_millis() as u64,
    })?;
    if let Err(e) = mapped {
        ctx.check_alive()?;
        return Err(Error::Validation {
            kernel: format!("mapping {what}"),
            message: e.to_string(),
        });
    }
    let data = {
        let view = staging
            .get_mapped_range(..bytes)
            .map_err(|e| Error::Validation {
                kernel: format!("reading {what}"),
                message: e.to_string(),
            })?;
        bytemuck::cast_slice::<u8, f32>(&view).to_vec()
    };
    staging.unmap();
    ctx.return_staging(staging);
    Ok(data)
}

/// How errors name a caller's buffer (wgpu does not expose labels).
fn buffer_name(b: &wgpu::Buffer, shape: &[usize]) -> String {
    format!("external buffer of {} bytes for shape {shape:?}", b.size())
}
