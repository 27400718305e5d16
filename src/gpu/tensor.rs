//! `GpuTensor`: a storage buffer plus its shape.

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
#[derive(Debug, Clone)]
pub struct GpuTensor {
    buffer: wgpu::Buffer,
    shape: Vec<usize>,
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
        let buffer = ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some(name),
            size,
            usage: TENSOR_USAGES,
            mapped_at_creation: false,
        });
        Ok(GpuTensor {
            buffer,
            shape: shape.to_vec(),
        })
    }

    /// Wrap a caller's buffer (a framework's activation, say) without copying. The buffer must
    /// have `STORAGE` usage (plus `COPY_SRC` to be downloaded, `COPY_DST` to be written by
    /// copies) and hold at least `4 * numel(shape)` bytes; only that prefix is used.
    pub fn from_buffer(buffer: wgpu::Buffer, shape: &[usize]) -> Result<GpuTensor> {
        let name = buffer_name(&buffer);
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
        Ok(GpuTensor {
            buffer,
            shape: shape.to_vec(),
        })
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

    /// Copy the tensor back to the host (one submission, blocking until the GPU is done).
    pub fn download(&self, ctx: &Context) -> Result<Vec<f32>> {
        if !self.buffer.usage().contains(wgpu::BufferUsages::COPY_SRC) {
            return Err(Error::BadBuffer {
                name: buffer_name(&self.buffer),
                why: "usage lacks COPY_SRC, cannot download".into(),
            });
        }
        let bytes = self.byte_size();
        if bytes == 0 {
            return Ok(Vec::new());
        }
        ctx.scoped(|| {
            let mut enc = ctx
                .device()
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("download"),
                });
            let staging = record_readback(ctx, &mut enc, &self.buffer, bytes, "download");
            ctx.submit(enc.finish());
            read_back(ctx, &staging, "download buffer")
        })
    }
}

/// [`GpuTensor::download`] of an optional tensor (such as `c_n`); `None` stays `None`.
pub(crate) fn download_optional(ctx: &Context, t: Option<&GpuTensor>) -> Result<Option<Vec<f32>>> {
    t.map(|t| t.download(ctx)).transpose()
}

/// Record a copy of the first `bytes` bytes of `src` into a new mappable buffer, so the
/// readback travels in the same submission as the work that produced it.
pub(crate) fn record_readback(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    src: &wgpu::Buffer,
    bytes: u64,
    label: &str,
) -> wgpu::Buffer {
    let staging = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: bytes,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    encoder.copy_buffer_to_buffer(src, 0, &staging, 0, bytes);
    staging
}

/// Wait for the queue, then map a buffer from [`record_readback`] and read it as `f32`s.
/// `what` names the buffer in errors.
pub(crate) fn read_back(ctx: &Context, staging: &wgpu::Buffer, what: &str) -> Result<Vec<f32>> {
    let (tx, rx) = std::sync::mpsc::channel();
    staging.map_async(wgpu::MapMode::Read, .., move |r| {
        let _ = tx.send(r);
    });
    ctx.wait()?;
    rx.recv()
        .map_err(|_| Error::Gpu("buffer map callback never ran".into()))?
        .map_err(|e| Error::Gpu(format!("mapping {what}: {e}")))?;
    let data = {
        let view = staging
            .get_mapped_range(..)
            .map_err(|e| Error::Gpu(format!("reading {what}: {e}")))?;
        bytemuck::cast_slice::<u8, f32>(&view).to_vec()
    };
    staging.unmap();
    Ok(data)
}

fn buffer_name(_b: &wgpu::Buffer) -> String {
    "external buffer".to_string()
}
