//! The context's switches that choose kernel variants and schedules: shader runtime checks,
//! subgroup reductions, f16 weights and paired bidirectional steps. Each applies to what is
//! compiled or planned afterwards.

use std::sync::atomic::Ordering;

use super::Context;

impl Context {
    /// Whether kernels compiled from now on skip wgpu's shader runtime checks.
    pub fn unchecked_shaders(&self) -> bool {
        self.inner.unchecked.load(Ordering::Relaxed)
    }

    /// Compile the crate's kernels without wgpu's shader runtime checks (bounds-check
    /// clamping, loop bounding, guarded division: `ShaderRuntimeChecks::unchecked()`), or with
    /// them again (the default). Pipelines are cached per setting, so both can be timed on one
    /// context (the harness's `--unchecked-shaders`).
    ///
    /// It applies to pipelines compiled afterwards: a model's workspaces keep the pipelines
    /// they were built with, so set it before building models (or build a new [`crate::Rnn`]).
    ///
    /// The crate vouches for its own kernels: every dispatch comes from a plan whose shape and
    /// limit checks run before any GPU work, and each kernel's header says why its indices
    /// stay inside its buffers. It stays off by default until a GPU measurement shows a gain.
    pub fn set_unchecked_shaders(&self, unchecked: bool) {
        self.inner.unchecked.store(unchecked, Ordering::Relaxed);
    }

    /// The smallest subgroup size of the device when the step kernels may reduce with
    /// subgroup shuffles (the device has `SUBGROUP`, requested by [`Context::new`] where the
    /// adapter offers it, and [`Context::set_subgroups`] did not switch them off); `None`
    /// otherwise.
    pub fn subgroups(&self) -> Option<u32> {
        let on = self.inner.use_subgroups.load(Ordering::Relaxed);
        (self.inner.subgroup_min > 0 && on).then_some(self.inner.subgroup_min)
    }

    /// Let the step kernels reduce a split reduction with subgroup shuffles where the device
    /// has them (the default), or always through workgroup memory. Both add the partial sums
    /// in the same fixed order, so results are bit-identical either way; pipelines are cached
    /// per setting. Like [`Context::set_unchecked_shaders`], it applies to workspaces built
    /// afterwards.
    pub fn set_subgroups(&self, on: bool) {
        self.inner.use_subgroups.store(on, Ordering::Relaxed);
    }

    /// Whether models on this context may store their weights as f16
    /// ([`crate::WeightPrecision::F16`]): the device has `SHADER_F16` (requested by
    /// [`Context::new`] where the adapter offers it) and [`Context::set_shader_f16`] did not
    /// switch it off.
    pub fn shader_f16(&self) -> bool {
        self.inner
            .device
            .features()
            .contains(wgpu::Features::SHADER_F16)
            && self.inner.use_f16.load(Ordering::Relaxed)
    }

    /// Allow f16 weight storage where the device has `SHADER_F16` (the default), or act as
    /// if it had not: then [`crate::WeightPrecision::F16`] is refused and
    /// [`crate::WeightPrecision::Auto`] stores f32. Applies to models built afterwards.
    pub fn set_shader_f16(&self, on: bool) {
        self.inner.use_f16.store(on, Ordering::Relaxed);
    }

    /// Whether plans made from now on run a bidirectional layer's two directions as one
    /// dispatch per timestep (`rnn_step_pair` forward, `rnn_step_backward_pair` backward: one
    /// per phase of a step): the device allows the 16 storage buffers per shader stage they
    /// bind (WebGPU's default is 8) and [`Context::set_paired_steps`] did not switch it off.
    pub fn paired_steps(&self) -> bool {
        self.inner.limits.max_storage_buffers_per_shader_stage
            >= crate::gpu::plan::PAIR_STORAGE_BUFFERS
            && self.inner.use_paired_steps.load(Ordering::Relaxed)
    }

    /// Pair the directions' step dispatches, forward and backward, where the device allows it
    /// (the default), or always record one per direction. Each direction runs the same code
    /// either way, so results are bit-identical. Like [`Context::set_subgroups`], it applies
    /// to plans and workspaces made afterwards (set it before building models).
    pub fn set_paired_steps(&self, on: bool) {
        self.inner.use_paired_steps.store(on, Ordering::Relaxed);
    }
}
