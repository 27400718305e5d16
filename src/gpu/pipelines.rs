//! Compiled pipelines: the cache key (kernel, override constants, shader checks, subgroup
//! path, weight precision), a bounded least-recently-used cache, and the one place kernels are compiled.

use std::collections::HashMap;
use std::sync::Arc;

use crate::gpu::shaders::{Binding, F16_WEIGHTS, Kernel};

/// A compiled pipeline and its bind group layout.
pub(crate) struct CachedPipeline {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

/// Pipelines are keyed by kernel and the values of its `override` constants. wgpu takes every
/// override as an `f64`; the key holds their bit patterns with `-0.0` folded into `0.0`, so
/// equal values share one pipeline.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct PipelineKey {
    kernel: Kernel,
    constants: Vec<(&'static str, u64)>,
    pub unchecked: bool,
    /// The subgroup size the kernel's reductions may span, 0 for none.
    pub subgroups: u32,
}

impl PipelineKey {
    pub(crate) fn new(
        kernel: Kernel,
        constants: &[(&'static str, f64)],
        unchecked: bool,
        subgroups: u32,
    ) -> PipelineKey {
        PipelineKey {
            kernel,
            constants: constants
                .iter()
                .map(|&(n, v)| (n, if v == 0.0 { 0 } else { v.to_bits() }))
                .collect(),
            unchecked,
            subgroups,
        }
    }
}

/// Compiled pipelines with their last use, evicted least recently used first.
#[derive(Default)]
pub(crate) struct PipelineCache {
    entries: HashMap<PipelineKey, (Arc<CachedPipeline>, u64)>,
    clock: u64,
}

impl PipelineCache {
    /// The cached pipeline of `key`, marked as just used.
    pub(crate) fn get(&mut self, key: &PipelineKey) -> Option<Arc<CachedPipeline>> {
        self.clock += 1;
        let now = self.clock;
        let (p, used) = self.entries.get_mut(key)?;
        *used = now;
        Some(p.clone())
    }

    /// Keep `compiled` under `key` (or the one another thread kept first), then evict the
    /// least recently used entries beyond `capacity`.
    pub(crate) fn insert(
        &mut self,
        key: PipelineKey,
        compiled: Arc<CachedPipeline>,
        capacity: usize,
    ) -> Arc<CachedPipeline> {
        self.clock += 1;
        let now = self.clock;
        let p = self.entries.entry(key).or_insert((compiled, now)).0.clone();
        if self.entries.len() > capacity {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.entries.remove(&k);
            }
        }
        p
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Whether a step kernel with these constants reduces its k split with subgroup shuffles (the
/// subgroup size it may count on, the backward kernel's `SG`, or 0 for none), given the device's
/// smallest subgroup when subgroups are on (`subgroup_min`): the KSPLIT threads that share one
/// reduction must lie in one subgroup of that size, and both kernels then make them consecutive
/// lanes. The forward kernel's workgroup-memory layout has them TJ apart instead (columns fastest:
/// the widest runs of consecutive weight columns per warp), so it takes the subgroup layout only
/// where that loads the same addresses per subgroup (`KSPLIT * TJ` fits) or still covers 2 columns
/// of each weight row (`2 * KSPLIT` fits; 32 bytes, a sector, with f32 LSTM weights). The backward
/// kernel also runs the tree's last levels as shuffles where KSPLIT is wider than the subgroup but
/// its V = UT * ROWS outputs per thread are not. This relies on a 1-D workgroup's subgroups being
/// runs of consecutive `local_invocation_index` values, as the Vulkan, Metal and D3D12 drivers lay
/// them out; `tests/engine.rs` compares both paths bit for bit on the test adapter.
pub(crate) fn subgroup_reduction(
    subgroup_min: Option<u32>,
    kernel: Kernel,
    constants: &[(&'static str, f64)],
) -> u32 {
    let Some(min) = subgroup_min else {
        return 0;
    };
    let get = |name: &str| {
        constants
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(1, |&(_, v)| v as u32)
    };
    let k = get("KSPLIT");
    let on = match kernel {
        // Either the whole (columns x split) block fits, or each subgroup still spans 2 columns
        // of every weight row it reads.
        Kernel::RnnStep | Kernel::RnnStepPair => k > 1 && (k * get("TJ") <= min || 2 * k <= min),
        Kernel::RnnStepBackward | Kernel::RnnStepBackwardPair => {
            k > 1 && (k <= min || get("UT") * get("ROWS") <= min)
        }
        _ => false,
    };
    if on { min } else { 0 }
}

/// Compile `kernel` specialised with `constants` (plus `SUBGROUPS` for the step kernels),
/// with or without wgpu's shader runtime checks. A nonzero [`F16_WEIGHTS`] pseudo-constant
/// selects the kernel's f16-weight text instead of an override (see [`Kernel::source`]); it
/// is part of the pipeline key like every constant.
pub(crate) fn compile(
    dev: &wgpu::Device,
    kernel: Kernel,
    constants: &[(&'static str, f64)],
    unchecked: bool,
    subgroups: u32,
) -> CachedPipeline {
    let f16_weights = constants.iter().any(|&(n, v)| n == F16_WEIGHTS && v != 0.0);
    let desc = wgpu::ShaderModuleDescriptor {
        label: Some(kernel.name()),
        source: wgpu::ShaderSource::Wgsl(kernel.source(subgroups > 0, f16_weights).into()),
    };
    let module = if unchecked {
        // SAFETY: wgpu's runtime checks only guard against out-of-bounds accesses,
        // unbounded loops and division by zero. Each kernel's header ("Bounds") says why
        // none of its indices leaves its bound buffers or workgroup arrays for any
        // dispatch this crate records: every dispatch comes from a `Plan`, whose shape
        // and limit checks run before any GPU work, and the kernels guard every index
        // that a grid's edge can push past a shape. Every loop is bounded by a shape or
        // an override constant, and every divisor is a nonzero shape or constant.
        unsafe { dev.create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked()) }
    } else {
        dev.create_shader_module(desc)
    };
    let entries: Vec<wgpu::BindGroupLayoutEntry> = kernel
        .bindings()
        .iter()
        .enumerate()
        .map(|(i, b)| wgpu::BindGroupLayoutEntry {
            binding: i as u32,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: match b {
                    Binding::DynamicUniform => wgpu::BufferBindingType::Uniform,
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
    let mut consts: Vec<(&str, f64)> = constants
        .iter()
        .copied()
        .filter(|&(n, _)| n != F16_WEIGHTS)
        .collect();
    match kernel {
        Kernel::RnnStep | Kernel::RnnStepPair => {
            consts.push(("SUBGROUPS", (subgroups > 0) as u8 as f64));
        }
        Kernel::RnnStepBackward | Kernel::RnnStepBackwardPair => {
            consts.push(("SUBGROUPS", (subgroups > 0) as u8 as f64));
            consts.push(("SG", subgroups as f64));
        }
        _ => {}
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn split(kernel: Kernel, min: Option<u32>, ksplit: u32, tj: u32) -> bool {
        let c = [("KSPLIT", ksplit as f64), ("TJ", tj as f64)];
        subgroup_reduction(min, kernel, &c) > 0
    }

    #[test]
    fn the_subgroup_layout_keeps_two_weight_columns_per_subgroup() {
        let fwd = Kernel::RnnStep;
        // No subgroups, or nothing to reduce.
        assert!(!split(fwd, None, 4, 4));
        assert!(!split(fwd, Some(32), 1, 16));
        // The whole block fits: the same addresses per subgroup either way.
        assert!(split(fwd, Some(32), 4, 8));
        assert!(split(fwd, Some(8), 8, 1));
        // A subgroup of 8 with a split of 4 over 4 columns: 2 columns per subgroup.
        assert!(split(fwd, Some(8), 4, 4));
        // A split of 8 over 4 columns would leave a subgroup of 8 one column: the tree.
        assert!(!split(fwd, Some(8), 8, 4));
        // Warps of 32: a split of 16 keeps 2 columns; S3's split of 32 over 8 would keep one.
        assert!(split(fwd, Some(32), 16, 4));
        assert!(!split(fwd, Some(32), 32, 8));
        assert!(split(Kernel::RnnStepPair, Some(32), 16, 4));
        // The backward kernel's splits are consecutive lanes in both layouts: the whole split
        // fits, or the tree's last levels do (V = UT * ROWS outputs per thread fit).
        let back = |kernel, min, ksplit: u32, ut: u32, rows: u32| {
            let c = [
                ("KSPLIT", ksplit as f64),
                ("UT", ut as f64),
                ("ROWS", rows as f64),
            ];
            subgroup_reduction(min, kernel, &c)
        };
        assert_eq!(back(Kernel::RnnStepBackward, Some(8), 8, 4, 2), 8);
        assert_eq!(back(Kernel::RnnStepBackward, Some(8), 16, 2, 4), 8);
        assert_eq!(back(Kernel::RnnStepBackward, Some(8), 16, 4, 4), 0);
        assert_eq!(back(Kernel::RnnStepBackward, None, 16, 1, 1), 0);
        assert_eq!(back(Kernel::RnnStepBackward, Some(32), 8, 1, 1), 32);
        assert_eq!(back(Kernel::RnnStepBackwardPair, Some(32), 64, 4, 4), 32);
        // Other kernels never reduce this way.
        assert!(!split(Kernel::Gemm, Some(32), 4, 4));
    }
}
