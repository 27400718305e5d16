//! A model's parameters on the GPU: one layer-direction's packed tensors ([`PackedLayer`]),
//! their borrowed view ([`LayerView`], shared with the gradients), and packing, upload and
//! download in either weight precision.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use crate::config::RnnConfig;
use crate::error::{Error, Result};
use crate::gpu::context::Context;
use crate::gpu::dispatch::ParamKind;
use crate::gpu::pack::{pack_biases, pack_gate_interleaved, unpack_gate_interleaved};
use crate::gpu::precision::{WeightPrecision, pack_f16, unpack_downloaded};
use crate::gpu::tensor::GpuTensor;
use crate::weights::LayerWeights;

/// One layer-direction's parameters in GPU layout (see [`crate::gpu::pack`]). Gradients use
/// the same layout, so optimisers update parameters element-wise.
#[derive(Debug)]
pub(crate) struct PackedLayer {
    /// `[I, H*G]`: `W_ih^T`, gate-interleaved.
    pub w_ih: GpuTensor,
    /// `[S, H*G]`: `W_hh^T`, gate-interleaved.
    pub w_hh: GpuTensor,
    /// `[2, H*G]`: `b_ih` and `b_hh`, gate-interleaved (`None` without bias).
    pub bias: Option<GpuTensor>,
    /// `[H, P]`: `W_hr^T`, the LSTM projection (`None` without `proj_size`).
    pub w_hr: Option<GpuTensor>,
    /// `[3H]`: LSTM peepholes `p_i | p_f | p_o`, PyTorch-like layout (`None` without).
    pub peephole: Option<GpuTensor>,
}

impl PackedLayer {
    pub(crate) fn view(&self) -> LayerView<'_> {
        LayerView {
            w_ih: &self.w_ih,
            w_hh: &self.w_hh,
            bias: self.bias.as_ref(),
            w_hr: self.w_hr.as_ref(),
            peephole: self.peephole.as_ref(),
        }
    }
}

/// One layer-direction's packed tensors, borrowed: the parameters ([`PackedLayer`]) and their
/// gradients ([`crate::gpu::LayerGrads`]) share this layout, order and unpacking.
pub(crate) struct LayerView<'a> {
    pub w_ih: &'a GpuTensor,
    pub w_hh: &'a GpuTensor,
    pub bias: Option<&'a GpuTensor>,
    pub w_hr: Option<&'a GpuTensor>,
    pub peephole: Option<&'a GpuTensor>,
}

impl<'a> LayerView<'a> {
    /// The tensors in the order of [`Rnn::parameters`]: `W_ih`, `W_hh`, then the biases,
    /// `W_hr` and peepholes the layer has.
    pub(crate) fn tensors(&self) -> Vec<&'a GpuTensor> {
        let mut v = vec![self.w_ih, self.w_hh];
        v.extend(self.bias);
        v.extend(self.w_hr);
        v.extend(self.peephole);
        v
    }

    /// One tensor by kind.
    pub(crate) fn get(&self, kind: ParamKind) -> Option<&'a GpuTensor> {
        match kind {
            ParamKind::WIh => Some(self.w_ih),
            ParamKind::WHh => Some(self.w_hh),
            ParamKind::Bias => self.bias,
            ParamKind::WHr => self.w_hr,
            ParamKind::Peephole => self.peephole,
        }
    }

    /// Download and unpack to PyTorch layout, for the layer `cfg` describes (f32 tensors).
    pub(crate) fn to_host(&self, ctx: &Context, cfg: &RnnConfig) -> Result<LayerWeights> {
        self.to_host_as(ctx, cfg, WeightPrecision::F32)
    }

    /// [`LayerView::to_host`] of tensors stored in `precision` (f16 matrices are unpacked).
    pub(crate) fn to_host_as(
        &self,
        ctx: &Context,
        cfg: &RnnConfig,
        precision: WeightPrecision,
    ) -> Result<LayerWeights> {
        let (g, h, i) = (cfg.gate_count(), cfg.hidden_size(), cfg.input_size());
        let (st, p) = (cfg.state_size(), cfg.proj_size().unwrap_or(0));
        // A matrix of `n` values, unpacked from f16 pairs when stored so.
        let matrix = |t: &GpuTensor, kind: ParamKind, n: usize| -> Result<Vec<f32>> {
            let raw = t.download(ctx)?;
            match precision.is_f16(kind) {
                true => unpack_downloaded(&raw, n),
                false => Ok(raw),
            }
        };
        let (bias_ih, bias_hh) = match self.bias {
            Some(b) => {
                let (bi, bh) = unpack_biases(&b.download(ctx)?, g, h)?;
                (Some(bi), Some(bh))
            }
            None => (None, None),
        };
        Ok(LayerWeights {
            weight_ih: unpack_gate_interleaved(
                &matrix(self.w_ih, ParamKind::WIh, i * g * h)?,
                g,
                h,
                i,
            )?,
            weight_hh: unpack_gate_interleaved(
                &matrix(self.w_hh, ParamKind::WHh, st * g * h)?,
                g,
                h,
                st,
            )?,
            bias_ih,
            bias_hh,
            weight_hr: match self.w_hr {
                Some(w) => Some(transpose(&matrix(w, ParamKind::WHr, h * p)?, h, p)),
                None => None,
            },
            peephole: match self.peephole {
                Some(p) => Some(p.download(ctx)?),
                None => None,
            },
        })
    }
}

impl PackedLayer {
    /// Tie every tensor to the model's parameter version.
    pub(crate) fn versioned(self, v: &Arc<AtomicU64>) -> PackedLayer {
        let tag = |t: GpuTensor| t.with_version(v.clone());
        PackedLayer {
            w_ih: tag(self.w_ih),
            w_hh: tag(self.w_hh),
            bias: self.bias.map(tag),
            w_hr: self.w_hr.map(tag),
            peephole: self.peephole.map(tag),
        }
    }
}

/// One layer-direction's PyTorch-layout weights packed for the GPU (f32), in the order of
/// [`LayerView::tensors`], each with its kind.
pub(crate) fn host_packed(cfg: &RnnConfig, w: &LayerWeights) -> Result<Vec<(ParamKind, Vec<f32>)>> {
    let (g, h, i, st) = (
        cfg.gate_count(),
        cfg.hidden_size(),
        cfg.input_size(),
        cfg.state_size(),
    );
    let mut v = vec![
        (
            ParamKind::WIh,
            pack_gate_interleaved(&w.weight_ih, g, h, i)?,
        ),
        (
            ParamKind::WHh,
            pack_gate_interleaved(&w.weight_hh, g, h, st)?,
        ),
    ];
    if let (Some(bi), Some(bh)) = (&w.bias_ih, &w.bias_hh) {
        v.push((ParamKind::Bias, pack_biases(bi, bh, g, h)?));
    }
    if let (Some(wr), Some(p)) = (&w.weight_hr, cfg.proj_size()) {
        // PyTorch's [P, H] transposed to [H, P]: h = h_raw · W_hr^T is a plain GEMM.
        v.push((ParamKind::WHr, transpose(wr, p, h)));
    }
    if let Some(p) = &w.peephole {
        v.push((ParamKind::Peephole, p.clone()));
    }
    Ok(v)
}

/// A packed parameter's words as stored under `precision`: its f32 values, or f16 pairs
/// (their bits carried as f32 words, see [`pack_f16`]).
pub(crate) fn encode(
    kind: ParamKind,
    data: &[f32],
    precision: WeightPrecision,
) -> Result<Vec<f32>> {
    match precision.is_f16(kind) {
        true => Ok(bytemuck::cast_slice(&pack_f16(&format!("{kind:?}"), data)?).to_vec()),
        false => Ok(data.to_vec()),
    }
}

/// Pack and upload one layer-direction's PyTorch-layout weights, the matrices in
/// `precision` (an f16 matrix is a 1-D tensor of its [`f16_words`] words).
pub(crate) fn pack_layer(
    ctx: &Context,
    cfg: &RnnConfig,
    w: &LayerWeights,
    precision: WeightPrecision,
) -> Result<PackedLayer> {
    let (g, h, i, st) = (
        cfg.gate_count(),
        cfg.hidden_size(),
        cfg.input_size(),
        cfg.state_size(),
    );
    let mut host = host_packed(cfg, w)?.into_iter();
    let mut next = |shape: &[usize]| -> Result<GpuTensor> {
        let (kind, data) = host
            .next()
            .ok_or_else(|| Error::Internal("packing".into()))?;
        let stored = encode(kind, &data, precision)?;
        match precision.is_f16(kind) {
            true => GpuTensor::upload(ctx, &stored, &[stored.len()]),
            false => GpuTensor::upload(ctx, &stored, shape),
        }
    };
    Ok(PackedLayer {
        w_ih: next(&[i, g * h])?,
        w_hh: next(&[st, g * h])?,
        bias: match (&w.bias_ih, &w.bias_hh) {
            (Some(_), Some(_)) => Some(next(&[2, g * h])?),
            _ => None,
        },
        w_hr: match (&w.weight_hr, cfg.proj_size()) {
            (Some(_), Some(p)) => Some(next(&[h, p])?),
            _ => None,
        },
        peephole: match &w.peephole {
            Some(_) => Some(next(&[3 * h])?),
            None => None,
        },
    })
}

/// `m [rows, cols]` row-major, transposed to `[cols, rows]`.
pub(crate) fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; m.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = m[r * cols + c];
        }
    }
    out
}

/// Split a packed `[2, H*G]` bias buffer into PyTorch-layout `b_ih`, `b_hh`.
pub(crate) fn unpack_biases(
    packed: &[f32],
    gates: usize,
    hidden: usize,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let (bi, bh) = packed.split_at(packed.len() / 2);
    Ok((
        unpack_gate_interleaved(bi, gates, hidden, 1)?,
        unpack_gate_interleaved(bh, gates, hidden, 1)?,
    ))
}
