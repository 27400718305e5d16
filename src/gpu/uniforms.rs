//! Per-dispatch uniforms of the clip and optimiser kernels packed into one buffer and selected
//! with dynamic offsets, and the context's cache of their bound resources, so a steady training
//! loop creates no buffer or bind group in these steps either.

use std::sync::Arc;

use crate::error::Result;
use crate::gpu::context::Context;

/// One uniform struct per dispatch, packed in one buffer at the device's dynamic-offset
/// alignment (`min_uniform_buffer_offset_alignment`) and bound with a dynamic offset, so a
/// step makes one buffer and one bind group per tensor, not one buffer per dispatch.
pub(crate) struct UniformSlots {
    buffer: wgpu::Buffer,
    /// Bytes from one slot to the next: `size_of::<T>()` rounded up to the alignment.
    stride: u64,
    /// `size_of::<T>()`: the bound window at each offset.
    size: u64,
}

impl UniformSlots {
    /// Room for `count` slots of `T` (at least one: wgpu buffers may not be empty when bound).
    pub(crate) fn new<T: bytemuck::Pod>(ctx: &Context, label: &str, count: usize) -> Result<Self> {
        let size = std::mem::size_of::<T>() as u64;
        let align = ctx.limits().min_uniform_buffer_offset_alignment as u64;
        let stride = size.next_multiple_of(align);
        let usage = wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST;
        let buffer = ctx.create_buffer(label, stride * count.max(1) as u64, usage)?;
        Ok(UniformSlots {
            buffer,
            stride,
            size,
        })
    }

    /// Write `slots` (this call's values) into the buffer; they reach the GPU before the next
    /// submission.
    pub(crate) fn write<T: bytemuck::Pod>(&self, ctx: &Context, slots: &[T]) {
        let mut bytes = vec![0u8; (self.stride * slots.len() as u64) as usize];
        for (i, slot) in slots.iter().enumerate() {
            let at = i * self.stride as usize;
            bytes[at..at + self.size as usize].copy_from_slice(bytemuck::bytes_of(slot));
        }
        if !bytes.is_empty() {
            ctx.queue().write_buffer(&self.buffer, 0, &bytes);
        }
    }

    /// The bind group entry; pick the slot with [`UniformSlots::offset`] at `set_bind_group`.
    pub(crate) fn entry(&self, binding: u32) -> wgpu::BindGroupEntry<'_> {
        wgpu::BindGroupEntry {
            binding,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &self.buffer,
                offset: 0,
                size: wgpu::BufferSize::new(self.size),
            }),
        }
    }

    /// The dynamic offset of slot `i`.
    pub(crate) fn offset(&self, i: usize) -> u32 {
        (i as u64 * self.stride) as u32
    }
}

/// The resources one clip or optimiser call binds: its uniform slots, any scratch buffers and
/// its bind groups (in dispatch order).
pub(crate) struct Bound {
    pub uniforms: UniformSlots,
    /// Buffers only the bind groups use (the norm's partial sums), owned with them.
    pub _scratch: Vec<wgpu::Buffer>,
    pub groups: Vec<wgpu::BindGroup>,
}

/// What a [`Bound`] was made for: the call, its variant, and every buffer it binds.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct BoundKey {
    pub label: &'static str,
    pub variant: u64,
    pub buffers: Vec<wgpu::Buffer>,
}

/// Calls whose bound resources a context keeps (least recently used out): a training loop
/// clips and steps the same tensors every iteration.
pub(crate) const BOUND_CACHE_CAPACITY: usize = 32;

impl Context {
    /// The resources of `key`, made by `make` on first use.
    pub(crate) fn bound(
        &self,
        key: BoundKey,
        make: impl FnOnce() -> Result<Bound>,
    ) -> Result<Arc<Bound>> {
        if let Some(b) = self.bound_cache_get(&key) {
            return Ok(b);
        }
        let b = Arc::new(make()?);
        self.bound_cache_put(key, b.clone());
        Ok(b)
    }
}
