//! WGSL sources, composed once: every kernel gets `shaders/common/activations.wgsl`
//! prepended, and the two step kernels `shaders/common/cell.wgsl` too. The forward step is
//! `shaders/rnn_step.wgsl` (shared declarations) plus one direction's bindings and code
//! (`shaders/rnn_step_direction.wgsl`), or two renamed copies of it for the paired kernel
//! (see [`wgsl_copy`]); the backward step likewise (`shaders/rnn_step_backward.wgsl` plus
//! `shaders/rnn_step_backward_direction.wgsl`, once or twice).

use crate::gpu::wgsl_copy::wgsl_copy;

/// How a kernel binds each slot of group 0, in binding order
/// (uniforms, then read-only inputs, then outputs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Binding {
    /// The kernel's uniform struct, one slot of a buffer of many, picked by a dynamic offset.
    DynamicUniform,
    Read,
    ReadWrite,
}

const ACTIVATIONS: &str = include_str!("../../shaders/common/activations.wgsl");
const CELL: &str = include_str!("../../shaders/common/cell.wgsl");
const GRAD_CLIP: &str = include_str!("../../shaders/clip.wgsl");
const OPTIMIZER_STEP: &str = include_str!("../../shaders/optim.wgsl");
const GEMM: &str = include_str!("../../shaders/gemm.wgsl");
const RNN_STEP: &str = include_str!("../../shaders/rnn_step.wgsl");
const RNN_STEP_DIRECTION: &str = include_str!("../../shaders/rnn_step_direction.wgsl");
const RNN_STEP_BACKWARD: &str = include_str!("../../shaders/rnn_step_backward.wgsl");
const RNN_STEP_BACKWARD_DIRECTION: &str =
    include_str!("../../shaders/rnn_step_backward_direction.wgsl");
const COLUMN_SUM: &str = include_str!("../../shaders/column_sum.wgsl");
const REARRANGE: &str = include_str!("../../shaders/rearrange.wgsl");
const DROPOUT: &str = include_str!("../../shaders/dropout.wgsl");
const READOUT: &str = include_str!("../../shaders/readout.wgsl");
const READOUT_BACKWARD: &str = include_str!("../../shaders/readout_backward.wgsl");

/// `xor_shuffle(v, m)`: lane `i` gets lane `i ^ m`'s value, within one subgroup.
/// (Naga takes subgroup builtins without WGSL's `enable subgroups;`, which it does not parse
/// yet; the device's `SUBGROUP` feature allows them.)
const SUBGROUP_SHUFFLE: &str =
    "fn xor_shuffle(v: f32, m: u32) -> f32 { return subgroupShuffleXor(v, m); }
fn xor_shuffle4(v: vec4<f32>, m: u32) -> vec4<f32> { return subgroupShuffleXor(v, m); }";
const NO_SUBGROUP_SHUFFLE: &str = "fn xor_shuffle(v: f32, m: u32) -> f32 { return v; }
fn xor_shuffle4(v: vec4<f32>, m: u32) -> vec4<f32> { return v; }";

/// The pseudo-constant that selects a kernel's f16-weight text (see [`Kernel::source`]): it
/// travels among a dispatch's override constants, so the pipeline cache keys on it, and
/// [`crate::gpu::pipelines::compile`] takes it out before wgpu sees the constants (it is not
/// a WGSL `override`: the bindings' types differ).
pub(crate) const F16_WEIGHTS: &str = "F16_WEIGHTS";

/// The step kernel's bindings 1 and 2 with f32 weights: gx (or fused W_ih^T) and W_hh^T.
const STEP_WEIGHTS_F32: &str = "@group(0) @binding(1) var<storage, read> gx: array<f32>;
@group(0) @binding(2) var<storage, read> w_hh: array<vec4<f32>>;
fn gx_read(i: u32) -> f32 { return gx[i]; }
fn w_hh4(q: u32) -> vec4<f32> { return w_hh[q]; }";

/// The same with f16 weights: W_hh^T (and W_ih^T when FUSED_INPUT) as f16 pairs in u32 words,
/// element 2w in the low half of word w. Without FUSED_INPUT binding 1 is the GEMM's f32 gx,
/// read as its bits.
const STEP_WEIGHTS_F16: &str = "@group(0) @binding(1) var<storage, read> gx: array<u32>;
@group(0) @binding(2) var<storage, read> w_hh: array<vec2<u32>>;
fn gx_read(i: u32) -> f32 {
    if (FUSED_INPUT) {
        return unpack2x16float(gx[i / 2u])[i % 2u];
    }
    return bitcast<f32>(gx[i]);
}
fn w_hh4(q: u32) -> vec4<f32> {
    let w = w_hh[q];
    return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));
}";

/// The forward step's entry point: one direction, `step` of `shaders/rnn_step_direction.wgsl`.
const STEP_ENTRY: &str = "@compute @workgroup_size(WG, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    step(wg, li);
}";

/// The paired forward step's entry point: `workgroup_id.z` picks the direction. It is the same
/// for every invocation of a workgroup, so the barriers inside either branch stay in uniform
/// control flow.
const STEP_PAIR_ENTRY: &str = "@compute @workgroup_size(WG, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    if (wg.z == 0u) {
        step(wg, li);
    } else {
        step_d1(wg, li);
    }
}";

/// The backward step's entry point: one direction, `step_backward` of
/// `shaders/rnn_step_backward_direction.wgsl`.
const STEP_BACKWARD_ENTRY: &str = "@compute @workgroup_size(WG, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    step_backward(wg, li);
}";

/// The paired backward step's entry point: `workgroup_id.z` picks the direction (uniform per
/// workgroup, so the barriers and subgroup shuffles inside either branch stay in uniform
/// control flow).
const STEP_BACKWARD_PAIR_ENTRY: &str = "@compute @workgroup_size(WG, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    if (wg.z == 0u) {
        step_backward(wg, li);
    } else {
        step_backward_d1(wg, li);
    }
}";

/// What the second direction's copy of the step's per-direction code appends to every name it
/// declares, and how far its bindings move (past the first direction's 1 ..= 8).
const SECOND_DIRECTION_SUFFIX: &str = "_d1";
const SECOND_DIRECTION_BINDINGS: u32 = 8;

/// The GEMM's B operand (bindings 3 and 4) as f32s.
const GEMM_B_F32: &str = "@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read> b4: array<vec4<f32>>;
fn b_read(i: u32) -> f32 { return b[i]; }
fn b4_read(q: u32) -> vec4<f32> { return b4[q]; }";

/// The GEMM's B operand as f16 pairs in u32 words (a weight matrix of an f16 model).
const GEMM_B_F16: &str = "@group(0) @binding(3) var<storage, read> b: array<u32>;
@group(0) @binding(4) var<storage, read> b4: array<vec2<u32>>;
fn b_read(i: u32) -> f32 { return unpack2x16float(b[i / 2u])[i % 2u]; }
fn b4_read(q: u32) -> vec4<f32> {
    let w = b4[q];
    return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));
}";

/// Every compute kernel of the crate. Names, not strings, select pipelines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kernel {
    /// `shaders/clip.wgsl`: gradient norm (two passes), clip by norm, clip by value.
    GradClip,
    /// `shaders/optim.wgsl`: in-place SGD or Adam step of one parameter tensor.
    OptimizerStep,
    /// `shaders/gemm.wgsl`: tiled `C = A·B + bias`.
    Gemm,
    /// `shaders/rnn_step.wgsl`: one fused timestep of any cell (optionally saving the tape).
    RnnStep,
    /// The same for both directions of a bidirectional layer in one dispatch: grid z = 2,
    /// `workgroup_id.z` is the direction, bindings 1 ..= 8 are direction 0's and 9 ..= 16
    /// direction 1's (16 storage buffers: only where the device allows that many per stage).
    RnnStepPair,
    /// `shaders/rnn_step_backward.wgsl`: one fused timestep of BPTT, any cell.
    RnnStepBackward,
    /// The same for both directions of a bidirectional layer in one dispatch (one phase of
    /// one reverse step each): grid z = 2, `workgroup_id.z` is the direction, bindings 1 ..= 8
    /// are direction 0's and 9 ..= 16 direction 1's (16 storage buffers).
    RnnStepBackwardPair,
    /// `shaders/column_sum.wgsl`: deterministic sum over the rows of a matrix (bias grads).
    ColumnSum,
    /// `shaders/rearrange.wgsl`: layouts, directions, lengths and `h_n` of a stacked model.
    Rearrange,
    /// `shaders/dropout.wgsl`: in-place dropout between layers, mask regenerated from a hash.
    Dropout,
    /// `shaders/readout.wgsl`: linear read-out, softmax and cross-entropy (forward).
    Readout,
    /// `shaders/readout_backward.wgsl`: the read-out's weight, bias and feature gradients.
    ReadoutBackward,
}

impl Kernel {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kernel::GradClip => "clip",
            Kernel::OptimizerStep => "optim",
            Kernel::Gemm => "gemm",
            Kernel::RnnStep => "rnn_step",
            Kernel::RnnStepPair => "rnn_step_pair",
            Kernel::RnnStepBackward => "rnn_step_backward",
            Kernel::RnnStepBackwardPair => "rnn_step_backward_pair",
            Kernel::ColumnSum => "column_sum",
            Kernel::Rearrange => "rearrange",
            Kernel::Dropout => "dropout",
            Kernel::Readout => "readout",
            Kernel::ReadoutBackward => "readout_backward",
        }
    }

    /// Full WGSL: the shared snippets, then the kernel's own file. With `subgroups` (step
    /// kernels only, on a device with `SUBGROUP`), `xor_shuffle` is `subgroupShuffleXor`;
    /// otherwise a stand-in that the kernels never call (their `SUBGROUPS` is false then).
    /// `f16_weights` (the forward step and the GEMM only) declares the weight bindings as f16
    /// pairs in u32 words, unpacked to f32 on load (see [`F16_WEIGHTS`]); the other kernels
    /// never see f16 weights (training refuses f16 models).
    pub(crate) fn source(self, subgroups: bool, f16_weights: bool) -> String {
        let body = match self {
            Kernel::GradClip => GRAD_CLIP,
            Kernel::OptimizerStep => OPTIMIZER_STEP,
            Kernel::Gemm => GEMM,
            Kernel::RnnStep | Kernel::RnnStepPair => RNN_STEP,
            Kernel::RnnStepBackward | Kernel::RnnStepBackwardPair => RNN_STEP_BACKWARD,
            Kernel::ColumnSum => COLUMN_SUM,
            Kernel::Rearrange => REARRANGE,
            Kernel::Dropout => DROPOUT,
            Kernel::Readout => READOUT,
            Kernel::ReadoutBackward => READOUT_BACKWARD,
        };
        match self {
            // The step kernels share the cell description (its constants and helpers).
            Kernel::RnnStep
            | Kernel::RnnStepPair
            | Kernel::RnnStepBackward
            | Kernel::RnnStepBackwardPair => {
                let shuffle = match subgroups {
                    true => SUBGROUP_SHUFFLE,
                    false => NO_SUBGROUP_SHUFFLE,
                };
                let weights = match f16_weights {
                    false => STEP_WEIGHTS_F32,
                    true => STEP_WEIGHTS_F16,
                };
                let direction = format!("{weights}\n{RNN_STEP_DIRECTION}");
                let step = match self {
                    Kernel::RnnStep => format!("{direction}\n{STEP_ENTRY}"),
                    Kernel::RnnStepPair => {
                        let second = wgsl_copy(
                            &direction,
                            SECOND_DIRECTION_SUFFIX,
                            SECOND_DIRECTION_BINDINGS,
                        );
                        format!("{direction}\n{second}\n{STEP_PAIR_ENTRY}")
                    }
                    Kernel::RnnStepBackward => {
                        format!("{RNN_STEP_BACKWARD_DIRECTION}\n{STEP_BACKWARD_ENTRY}")
                    }
                    _ => {
                        let second = wgsl_copy(
                            RNN_STEP_BACKWARD_DIRECTION,
                            SECOND_DIRECTION_SUFFIX,
                            SECOND_DIRECTION_BINDINGS,
                        );
                        format!(
                            "{RNN_STEP_BACKWARD_DIRECTION}\n{second}\n{STEP_BACKWARD_PAIR_ENTRY}"
                        )
                    }
                };
                format!("{shuffle}\n{ACTIVATIONS}\n{CELL}\n{body}\n{step}")
            }
            Kernel::Gemm => {
                let b = match f16_weights {
                    false => GEMM_B_F32,
                    true => GEMM_B_F16,
                };
                format!("{ACTIVATIONS}\n{b}\n{body}")
            }
            _ => format!("{ACTIVATIONS}\n{body}"),
        }
    }

    pub(crate) fn bindings(self) -> &'static [Binding] {
        use Binding::*;
        match self {
            Kernel::GradClip => &[DynamicUniform, ReadWrite, ReadWrite, ReadWrite],
            Kernel::OptimizerStep => &[DynamicUniform, Read, ReadWrite, ReadWrite, ReadWrite],
            // a and b twice each: as f32s and as vec4s (see shaders/gemm.wgsl).
            Kernel::Gemm => &[DynamicUniform, Read, Read, Read, Read, Read, ReadWrite],
            Kernel::ColumnSum => &[DynamicUniform, Read, ReadWrite],
            Kernel::Rearrange => &[DynamicUniform, Read, Read, ReadWrite],
            Kernel::Dropout => &[DynamicUniform, ReadWrite],
            // 4 inputs, then 3 outputs (7 storage bindings: within WebGPU's default 8).
            Kernel::Readout | Kernel::ReadoutBackward => &[
                DynamicUniform,
                Read,
                Read,
                Read,
                Read,
                ReadWrite,
                ReadWrite,
                ReadWrite,
            ],
            // Both step kernels: 4 read-only inputs, then 4 outputs (8 storage bindings, the
            // WebGPU default of max_storage_buffers_per_shader_stage).
            Kernel::RnnStep | Kernel::RnnStepBackward => &[
                DynamicUniform,
                Read,
                Read,
                Read,
                Read,
                ReadWrite,
                ReadWrite,
                ReadWrite,
                ReadWrite,
            ],
            // Both directions' 8, one after the other (16 storage bindings).
            Kernel::RnnStepPair | Kernel::RnnStepBackwardPair => &[
                DynamicUniform,
                Read,
                Read,
                Read,
                Read,
                ReadWrite,
                ReadWrite,
                ReadWrite,
                ReadWrite,
                Read,
                Read,
                Read,
                Read,
                ReadWrite,
                ReadWrite,
                ReadWrite,
                ReadWrite,
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wgpu::naga;

    /// The per-direction parts (forward and backward) hold no override constant (a renamed
    /// copy would be a new, never-set constant) and no workgroup memory (the copies share it:
    /// the plan counts it once).
    #[test]
    fn the_direction_part_declares_no_constant_or_workgroup_memory() {
        for line in RNN_STEP_DIRECTION
            .lines()
            .chain(RNN_STEP_BACKWARD_DIRECTION.lines())
        {
            let code = line.split("//").next().unwrap_or("").trim_start();
            assert!(!code.starts_with("override"), "{line}");
            assert!(!code.contains("var<workgroup>"), "{line}");
        }
    }

    /// The workgroup memory the plan's limit check assumes for each kernel
    /// ([`kernel_geometry`]) is what its WGSL declares (naga's layout of every `var<workgroup>`).
    #[test]
    fn the_plan_knows_each_kernels_workgroup_memory() {
        use crate::gpu::dispatch::kernel_geometry;
        for kernel in [
            Kernel::GradClip,
            Kernel::OptimizerStep,
            Kernel::Gemm,
            Kernel::RnnStep,
            Kernel::RnnStepPair,
            Kernel::RnnStepBackward,
            Kernel::RnnStepBackwardPair,
            Kernel::ColumnSum,
            Kernel::Rearrange,
            Kernel::Dropout,
            Kernel::Readout,
            Kernel::ReadoutBackward,
        ] {
            let src = kernel.source(false, false);
            let module = naga::front::wgsl::parse_str(&src)
                .unwrap_or_else(|e| panic!("{kernel:?}: {}", e.emit_to_string(&src)));
            let mut layouter = naga::proc::Layouter::default();
            layouter.update(module.to_ctx()).unwrap();
            let declared: u64 = module
                .global_variables
                .iter()
                .filter(|(_, v)| v.space == naga::AddressSpace::WorkGroup)
                .map(|(_, v)| layouter[v.ty].size as u64)
                .sum();
            assert_eq!(kernel_geometry(kernel).1, declared, "{kernel:?}");
        }
    }

    /// Every variant of the step kernels (forward and backward, one direction and paired,
    /// f32 and f16 weights, with and without subgroups) parses and validates (naga, as wgpu
    /// compiles it), and declares exactly the bindings the host's layout has, with the same
    /// access: the paired kernels' second copy really sits at bindings 9 ..= 16.
    #[test]
    fn step_kernels_declare_the_bindings_of_their_layout() {
        for kernel in [
            Kernel::RnnStep,
            Kernel::RnnStepPair,
            Kernel::RnnStepBackward,
            Kernel::RnnStepBackwardPair,
        ] {
            for (f16, subgroups) in [(false, false), (true, false), (false, true)] {
                let src = kernel.source(subgroups, f16);
                let module = naga::front::wgsl::parse_str(&src)
                    .unwrap_or_else(|e| panic!("{kernel:?}: {}", e.emit_to_string(&src)));
                naga::valid::Validator::new(
                    naga::valid::ValidationFlags::all(),
                    naga::valid::Capabilities::all(),
                )
                .validate(&module)
                .unwrap_or_else(|e| panic!("{kernel:?} f16 = {f16} {subgroups}: {e:?}"));
                let mut declared: Vec<(u32, Binding)> = module
                    .global_variables
                    .iter()
                    .filter_map(|(_, v)| {
                        let b = v.binding.as_ref()?;
                        assert_eq!(b.group, 0);
                        let kind = match v.space {
                            naga::AddressSpace::Uniform => Binding::DynamicUniform,
                            naga::AddressSpace::Storage { access }
                                if access.contains(naga::StorageAccess::STORE) =>
                            {
                                Binding::ReadWrite
                            }
                            _ => Binding::Read,
                        };
                        Some((b.binding, kind))
                    })
                    .collect();
                declared.sort_by_key(|d| d.0);
                let want: Vec<(u32, Binding)> = kernel
                    .bindings()
                    .iter()
                    .enumerate()
                    .map(|(i, &b)| (i as u32, b))
                    .collect();
                assert_eq!(declared, want, "{kernel:?} f16 = {f16}");
            }
        }
    }
}
