//! Weight storage precision: f16 weight matrices for inference ([`WeightPrecision`]), their
//! packing (pairs of f16 in u32 words) and the plan specialisation that reads them.

use crate::error::{Error, Result};
use crate::gpu::context::Context;
use crate::gpu::dispatch::{Buf, Op, ParamKind};
use crate::gpu::plan::Plan;
use crate::gpu::shaders::{F16_WEIGHTS, Kernel};

/// How a model stores its weight matrices on the GPU (chosen with
/// [`crate::Rnn::with_precision`]; [`crate::Rnn::new`] stores f32).
///
/// This is cuDNN's "pseudo half" configuration (half data, float math), not PyTorch's
/// `model.half()`: with [`WeightPrecision::F16`] the matrices `W_ih`, `W_hh` and `W_hr` are
/// rounded to f16 (round to nearest even) once at upload, which halves the weight bytes every
/// step reads, while inputs, states, outputs, biases and peepholes stay f32 and every product
/// accumulates in f32. The result is what the f32 model computes with f16-rounded weights.
///
/// f16 storage is for inference: training calls (`forward_train`, `backward`, optimiser steps
/// through [`crate::Rnn::parameters`], [`crate::ParamGrads::zeros`]) on an f16 model return
/// [`Error::Unsupported`]. [`crate::Rnn::weights`] returns the f16-rounded values, as f32.
///
/// f16 storage is offered where the device has wgpu's `SHADER_F16` feature
/// ([`Context::shader_f16`]). The kernels convert with WGSL's core `unpack2x16float`, which
/// needs no feature, but the gate is kept: it is the device's statement that half precision
/// is a supported (and not emulated) path, and it leaves the kernels free to move to native
/// `f16` loads without changing which devices accept f16 models.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum WeightPrecision {
    /// f32 weights (the default): results match the CPU reference's arithmetic.
    #[default]
    F32,
    /// f16 weight matrices with f32 accumulation; [`Error::Unsupported`] when the device
    /// lacks `SHADER_F16`, or a weight overflows f16 (`|w| > 65504`).
    F16,
    /// f16 where the device has `SHADER_F16`, else f32.
    Auto,
}

impl WeightPrecision {
    /// The storage a model on `ctx` gets: `F32` or `F16`, never `Auto`.
    ///
    /// Errors: [`Error::Unsupported`] for `F16` on a device without `SHADER_F16`.
    pub(crate) fn resolve(self, ctx: &Context) -> Result<WeightPrecision> {
        match (self, ctx.shader_f16()) {
            (WeightPrecision::F32, _) | (WeightPrecision::Auto, false) => Ok(WeightPrecision::F32),
            (WeightPrecision::F16 | WeightPrecision::Auto, true) => Ok(WeightPrecision::F16),
            (WeightPrecision::F16, false) => Err(Error::Unsupported(format!(
                "f16 weight storage needs the device feature SHADER_F16, which `{}` does not \
                 offer (or Context::set_shader_f16(false) switched off); use \
                 WeightPrecision::Auto to fall back to f32",
                ctx.describe()
            ))),
        }
    }

    /// Whether a parameter of this kind is stored as f16 under this precision.
    pub(crate) fn is_f16(self, kind: ParamKind) -> bool {
        self == WeightPrecision::F16
            && matches!(kind, ParamKind::WIh | ParamKind::WHh | ParamKind::WHr)
    }
}

/// u32 words of `n` f16 values stored whole 4-element (8-byte) groups, the kernels' vec4
/// reads: `2 * ceil(n / 4)`, at least 2.
pub(crate) fn f16_words(n: usize) -> usize {
    (2 * n.div_ceil(4)).max(2)
}

/// `data` rounded to f16 (nearest even) and packed in pairs, element `2w` in the low half of
/// word `w`, zero-padded to [`f16_words`] words.
///
/// Errors: [`Error::Unsupported`] naming `name` and the element when a finite weight
/// overflows f16 (`|w| > 65504`; it would become infinite).
pub(crate) fn pack_f16(name: &str, data: &[f32]) -> Result<Vec<u32>> {
    let mut words = vec![0u32; f16_words(data.len())];
    for (i, &v) in data.iter().enumerate() {
        let h = half::f16::from_f32(v);
        if v.is_finite() && h.is_infinite() {
            return Err(Error::Unsupported(format!(
                "f16 weight storage: `{name}` element {i} = {v} overflows f16 (|w| > 65504)"
            )));
        }
        words[i / 2] |= (h.to_bits() as u32) << (16 * (i % 2));
    }
    Ok(words)
}

/// The first `n` f16 values of `words` (as [`pack_f16`] packs them), as f32.
pub(crate) fn unpack_f16(words: &[u32], n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let bits = (words[i / 2] >> (16 * (i % 2))) as u16;
            half::f16::from_bits(bits).to_f32()
        })
        .collect()
}

/// A downloaded f16-packed parameter (its words as the f32 bit patterns `download` returns),
/// unpacked to its `n` values.
pub(crate) fn unpack_downloaded(raw: &[f32], n: usize) -> Result<Vec<f32>> {
    let words: &[u32] = bytemuck::cast_slice(raw);
    if words.len() < f16_words(n) {
        return Err(Error::Internal(format!(
            "f16 parameter of {n} values downloaded as {} words",
            words.len()
        )));
    }
    Ok(unpack_f16(words, n))
}

/// Specialise an inference plan for f16 weights: every dispatch that binds `W_ih`, `W_hh` or
/// `W_hr` gets the [`F16_WEIGHTS`] pseudo-constant (its pipeline variant reads f16 pairs).
/// Only the forward step (W_hh, and W_ih when fused) and the GEMM's B operand (the input
/// projection's W_ih, the projection's W_hr) know the f16 layout; any other use, or a copy of
/// such a tensor, is an internal error rather than a silent misread.
pub(crate) fn specialise_f16(plan: &mut Plan) -> Result<()> {
    if plan.backward.is_some() {
        return Err(training_refused());
    }
    let f16_param = |b: &Buf| matches!(b, Buf::Param(_, k) if WeightPrecision::F16.is_f16(*k));
    let forward = std::iter::once(&mut plan.forward).chain(plan.forward_odd.iter_mut());
    for op in forward.flatten() {
        match op {
            Op::Copy(c) if f16_param(&c.src) || f16_param(&c.dst) => {
                return Err(Error::Internal(format!(
                    "a plan copies an f16 weight tensor ({c:?})"
                )));
            }
            Op::Copy(_) => {}
            Op::Dispatch(d) => {
                let used: Vec<usize> = (0..d.bindings.len())
                    .filter(|&i| f16_param(&d.bindings[i]))
                    .collect();
                if used.is_empty() {
                    continue;
                }
                // Bindings (from 1) that may hold an f16 matrix: the step's gx (fused W_ih)
                // and w_hh, and its bias slot, which a bias-free model fills with w_hh
                // unread; the GEMM's b, b4, and its bias slot (b, unread, without bias).
                let allowed: &[usize] = match d.kernel {
                    Kernel::RnnStep => &[0, 1, 3],
                    // Both directions' (bindings 9 .. 16 are direction 1's 1 .. 8).
                    Kernel::RnnStepPair => &[0, 1, 3, 8, 9, 11],
                    Kernel::Gemm => &[2, 3, 4],
                    _ => &[],
                };
                if let Some(&i) = used.iter().find(|i| !allowed.contains(i)) {
                    return Err(Error::Internal(format!(
                        "`{}` binds an f16 weight tensor at binding {}",
                        d.what,
                        i + 1
                    )));
                }
                d.constants.push((F16_WEIGHTS, 1.0));
                d.what.push_str(" [f16 weights]");
            }
        }
    }
    Ok(())
}

/// The error of a training call on an f16 model.
pub(crate) fn training_refused() -> Error {
    Error::Unsupported(
        "training with f16 weight storage (WeightPrecision::F16 is for inference: build the \
         model with WeightPrecision::F32 to train)"
            .into(),
    )
}
