//! Per-dispatch uniforms packed into one buffer and selected with dynamic offsets: the
//! per-timestep parameters of the step kernels, and the per-tensor parameters of the clip and
//! optimiser kernels.

use wgpu::util::DeviceExt;

use crate::gpu::context::Context;

/// One uniform struct per dispatch, packed in one buffer at the device's dynamic-offset
/// alignment (`min_uniform_buffer_offset_alignment`) and bound with a dynamic offset, so a
/// schedule makes one buffer and one bind group, not one per dispatch.
pub(crate) struct UniformSlots {
    buffer: wgpu::Buffer,
    /// Bytes from one slot to the next: `size_of::<T>()` rounded up to the alignment.
    stride: u64,
    /// `size_of::<T>()`: the bound window at each offset.
    size: u64,
}

impl UniformSlots {
    /// Upload `slots` as one uniform buffer, each slot zero-padded to the stride. An empty list
    /// still makes one (zeroed) slot, as wgpu buffers may not be empty when bound.
    pub(crate) fn new<T: bytemuck::Pod>(ctx: &Context, label: &str, slots: &[T]) -> UniformSlots {
        let size = std::mem::size_of::<T>() as u64;
        let align = ctx.limits().min_uniform_buffer_offset_alignment as u64;
        let stride = size.next_multiple_of(align);
        let mut bytes = vec![0u8; (stride * slots.len().max(1) as u64) as usize];
        for (i, slot) in slots.iter().enumerate() {
            let at = i * stride as usize;
            bytes[at..at + size as usize].copy_from_slice(bytemuck::bytes_of(slot));
        }
        let buffer = ctx
            .device()
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: &bytes,
                usage: wgpu::BufferUsages::UNIFORM,
            });
        UniformSlots {
            buffer,
            stride,
            size,
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
