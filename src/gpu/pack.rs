//! Weight packing: PyTorch layout on the host, GPU layout in buffers.
//!
//! PyTorch stores `W [G*H, K]` with gate blocks stacked (row `g*H + j`). The kernels want
//! `W^T [K, G*H]` with the gates of one hidden unit side by side (column `j*G + g`):
//! - transposed, so the GEMMs read `k`-rows of contiguous columns (coalesced);
//! - gate-interleaved, so one thread of the step kernel owns a unit's G gates as one vector
//!   and can apply the cell update without another pass through memory.
//!
//! Every function checks its input's length first and returns [`Error::ShapeMismatch`]
//! (naming the argument) for a wrong one, so a caller's bad slice never indexes out of bounds.

#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;
use crate::validate::check_len;

/// `w [G*H, K]` (PyTorch) → `[K, H, G]` (GPU), i.e. `out[k][j*G + g] = w[g*H + j][k]`.
///
/// Errors: [`Error::ShapeMismatch`] naming `w` when it does not hold `G*H*K` values.
pub fn pack_gate_interleaved(w: &[f32], gates: usize, hidden: usize, k: usize) -> Result<Vec<f32>> {
    let n = gates.saturating_mul(hidden);
    check_len("w", w, &[n, k])?;
    let mut out = vec![0.0; n * k];
    for g in 0..gates {
        for j in 0..hidden {
            let row = &w[(g * hidden + j) * k..(g * hidden + j + 1) * k];
            for (kk, &v) in row.iter().enumerate() {
                out[kk * n + j * gates + g] = v;
            }
        }
    }
    Ok(out)
}

/// Inverse of [`pack_gate_interleaved`]: `p [K, H, G]` → `[G*H, K]`.
///
/// Errors: [`Error::ShapeMismatch`] naming `p` when it does not hold `K*H*G` values.
pub fn unpack_gate_interleaved(
    p: &[f32],
    gates: usize,
    hidden: usize,
    k: usize,
) -> Result<Vec<f32>> {
    let n = gates.saturating_mul(hidden);
    check_len("p", p, &[k, hidden, gates])?;
    let mut out = vec![0.0; n * k];
    for g in 0..gates {
        for j in 0..hidden {
            for kk in 0..k {
                out[(g * hidden + j) * k + kk] = p[kk * n + j * gates + g];
            }
        }
    }
    Ok(out)
}

/// Biases `b_ih`, `b_hh` (each `[G*H]`, PyTorch) gate-interleaved into one `[2, H, G]`
/// buffer. They stay separate parameters, as in PyTorch, so that optimisers update each
/// exactly as `torch.optim` would; the input-projection GEMM adds row 0 (`b_ih`) and the step
/// kernel adds row 1 (`b_hh`).
///
/// Errors: [`Error::ShapeMismatch`] naming `b_ih` or `b_hh` when it does not hold `G*H` values.
pub fn pack_biases(b_ih: &[f32], b_hh: &[f32], gates: usize, hidden: usize) -> Result<Vec<f32>> {
    let n = gates.saturating_mul(hidden);
    check_len("b_ih", b_ih, &[n])?;
    check_len("b_hh", b_hh, &[n])?;
    let mut out = pack_gate_interleaved(b_ih, gates, hidden, 1)?;
    out.extend(pack_gate_interleaved(b_hh, gates, hidden, 1)?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_round_trips_and_interleaves() {
        let (g, h, k) = (4, 3, 5);
        let w: Vec<f32> = (0..g * h * k).map(|v| v as f32).collect();
        let p = pack_gate_interleaved(&w, g, h, k).unwrap();
        // Gate 2 (g) of unit 1 at k = 4 is PyTorch row 2*3 + 1 = 7, column 4.
        assert_eq!(p[4 * g * h + g + 2], w[7 * k + 4]);
        assert_eq!(unpack_gate_interleaved(&p, g, h, k).unwrap(), w);
    }

    #[test]
    fn biases_stay_two_rows() {
        let bi = [1.0, 2.0, 3.0, 4.0];
        let bh = [10.0, 20.0, 30.0, 40.0];
        // G = 2, H = 2: unit 0 -> (gate0, gate1) = rows (0, 2) of each vector.
        assert_eq!(
            pack_biases(&bi, &bh, 2, 2).unwrap(),
            vec![1.0, 3.0, 2.0, 4.0, 10.0, 30.0, 20.0, 40.0]
        );
    }
}
