//! Weight packing: PyTorch layout on the host, GPU layout in buffers.
//!
//! PyTorch stores `W [G*H, K]` with gate blocks stacked (row `g*H + j`). The kernels want
//! `W^T [K, G*H]` with the gates of one hidden unit side by side (column `j*G + g`):
//! - transposed, so the GEMMs read `k`-rows of contiguous columns (coalesced);
//! - gate-interleaved, so one thread of the step kernel owns a unit's G gates as one vector
//!   and can apply the cell update without another pass through memory.

/// `w [G*H, K]` (PyTorch) → `[K, H, G]` (GPU), i.e. `out[k][j*G + g] = w[g*H + j][k]`.
pub fn pack_gate_interleaved(w: &[f32], gates: usize, hidden: usize, k: usize) -> Vec<f32> {
    debug_assert_eq!(w.len(), gates * hidden * k);
    let n = gates * hidden;
    let mut out = vec![0.0; n * k];
    for g in 0..gates {
        for j in 0..hidden {
            let row = &w[(g * hidden + j) * k..(g * hidden + j + 1) * k];
            for (kk, &v) in row.iter().enumerate() {
                out[kk * n + j * gates + g] = v;
            }
        }
    }
    out
}

/// Inverse of [`pack_gate_interleaved`].
pub fn unpack_gate_interleaved(p: &[f32], gates: usize, hidden: usize, k: usize) -> Vec<f32> {
    let n = gates * hidden;
    let mut out = vec![0.0; n * k];
    for g in 0..gates {
        for j in 0..hidden {
            for kk in 0..k {
                out[(g * hidden + j) * k + kk] = p[kk * n + j * gates + g];
            }
        }
    }
    out
}

/// `b_ih + b_hh` (both `[G*H]`, PyTorch) gate-interleaved to `[H, G]`; zeros without bias.
/// Summed once at upload: both biases only ever enter the same pre-activation sum.
pub fn pack_bias(
    b_ih: Option<&[f32]>,
    b_hh: Option<&[f32]>,
    gates: usize,
    hidden: usize,
) -> Vec<f32> {
    let mut out = vec![0.0; gates * hidden];
    for g in 0..gates {
        for j in 0..hidden {
            let at = |b: Option<&[f32]>| b.map_or(0.0, |b| b[g * hidden + j]);
            out[j * gates + g] = at(b_ih) + at(b_hh);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_round_trips_and_interleaves() {
        let (g, h, k) = (4, 3, 5);
        let w: Vec<f32> = (0..g * h * k).map(|v| v as f32).collect();
        let p = pack_gate_interleaved(&w, g, h, k);
        // Gate 2 (g) of unit 1 at k = 4 is PyTorch row 2*3 + 1 = 7, column 4.
        assert_eq!(p[4 * g * h + g + 2], w[7 * k + 4]);
        assert_eq!(unpack_gate_interleaved(&p, g, h, k), w);
    }

    #[test]
    fn bias_sums_both_vectors() {
        let bi = [1.0, 2.0, 3.0, 4.0];
        let bh = [10.0, 20.0, 30.0, 40.0];
        // G = 2, H = 2: unit 0 -> (gate0, gate1) = rows (0, 2).
        assert_eq!(
            pack_bias(Some(&bi), Some(&bh), 2, 2),
            vec![11.0, 33.0, 22.0, 44.0]
        );
        assert_eq!(pack_bias(None, None, 2, 2), vec![0.0; 4]);
    }
}
