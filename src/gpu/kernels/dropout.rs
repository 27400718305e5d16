//! Host side of `shaders/dropout.wgsl`: dropout between layers, in place, from a counter-based
//! hash, so backward regenerates the mask instead of storing it.

use crate::error::{Error, Result};
use crate::gpu::context::Context;
use crate::gpu::dispatch::{Buf, Dispatch, Op, bytes, fold_grid};
use crate::gpu::shaders::Kernel;
use crate::gpu::tensor::GpuTensor;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct DropoutParams {
    numel: u32,
    key: u32,
    threshold: u32,
    groups_x: u32,
    scale: f32,
    _pad: [u32; 3],
}

impl DropoutParams {
    /// The uniforms of the mask of `(seed, layer)` with probability `p` over `numel` elements
    /// and `groups_x` workgroups per grid row.
    pub(crate) fn new(numel: u32, groups_x: u32, seed: u64, layer: usize, p: f32) -> Self {
        DropoutParams {
            numel,
            key: crate::dropout::key(seed, layer),
            threshold: crate::dropout::threshold(p),
            groups_x,
            scale: (1.0 / (1.0 - p as f64)) as f32,
            _pad: [0; 3],
        }
    }

    /// Elements and grid row width.
    pub(crate) fn extent(&self) -> (u32, u32) {
        (self.numel, self.groups_x)
    }
}

/// Dropout of layer `layer`'s output, in place on the first `numel` elements of `buf` (the mask
/// of [`crate::dropout::mask`]). The seed written now is a placeholder: the dispatch is marked
/// with its layer, and every call writes that call's seed into its uniform slot.
pub(crate) fn dropout(buf: Buf, numel: usize, layer: usize, p: f32, max_x: u32) -> Op {
    let grid = fold_grid(numel as u64, 256, max_x);
    let params = DropoutParams::new(numel as u32, grid[0], 0, layer, p);
    Op::Dispatch(Dispatch {
        kernel: Kernel::Dropout,
        constants: vec![],
        params: bytemuck::bytes_of(&params).to_vec(),
        bindings: vec![buf],
        grid,
        what: format!("dropout after layer {layer} ({numel} elements, p = {p})"),
        reads: bytes(numel),
        writes: bytes(numel),
        step: None,
        dropout: Some((layer, p)),
    })
}

/// Apply the dropout mask of `(seed, layer)` with probability `p` to `x` in place, as the
/// training forward pass does to layer `layer`'s seq-major output (one submission). Lets a
/// caller inspect the mask the GPU draws: apply it to ones.
///
/// Errors: [`Error::InvalidConfig`] for `p` outside `[0, 1)`.
pub fn apply_dropout(ctx: &Context, x: &GpuTensor, seed: u64, layer: usize, p: f32) -> Result<()> {
    if !(0.0..1.0).contains(&p) {
        return Err(Error::InvalidConfig(format!(
            "dropout {p} is outside [0, 1)"
        )));
    }
    if x.numel() > u32::MAX as usize {
        return Err(Error::LimitExceeded {
            limit: "dropout index (u32)",
            what: "elements of `x`".into(),
            needed: x.numel() as u64,
            allowed: u32::MAX as u64,
        });
    }
    let max_x = ctx.limits().max_compute_workgroups_per_dimension;
    let mut op = dropout(Buf::Scratch(0), x.numel(), layer, p, max_x);
    if let Op::Dispatch(d) = &mut op {
        let params = DropoutParams::new(x.numel() as u32, d.grid[0], seed, layer, p);
        d.params = bytemuck::bytes_of(&params).to_vec();
    }
    ctx.scoped("apply_dropout", || {
        let mut enc = ctx.encoder("dropout");
        crate::gpu::workspace::record_once(ctx, &mut enc, &[x], &[op], "dropout")?;
        ctx.submit(enc.finish())?;
        Ok(())
    })
}
