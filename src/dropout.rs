//! Dropout between stacked layers: the counter-based mask both the GPU kernel
//! (`shaders/dropout.wgsl`) and the CPU reference draw from.
//!
//! PyTorch semantics: in training only, every element of layer `l`'s output (for `l` below the
//! last layer) is zeroed with probability `p` and the kept ones are scaled by `1 / (1 - p)`.
//! The mask is a pure function of `(seed, layer, index)`, where `index` is the element's
//! position in the seq-major `[T, B, dirs*H]` layer output (whatever the model's layout), so
//! the GPU never stores it: backward regenerates the same mask from the seed kept in the tape,
//! and the CPU reference reproduces it bit for bit ([`mask`]).
//!
//! The hash is PCG's RXS-M-XS output permutation (O'Neill 2014; the `pcg_hash` of Jarzynski
//! and Olano, "Hash Functions for GPU Rendering", JCGT 2020), applied twice with a per-layer key.

/// PCG RXS-M-XS 32-bit hash (a bijection on `u32`). WGSL twin: `pcg` in `shaders/dropout.wgsl`.
pub const fn pcg(v: u32) -> u32 {
    let state = v.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
    let word = ((state >> ((state >> 28) + 4)) ^ state).wrapping_mul(277_803_737);
    (word >> 22) ^ word
}

/// The per-layer key the kernel mixes into every index.
pub fn key(seed: u64, layer: usize) -> u32 {
    let lo = seed as u32;
    let hi = (seed >> 32) as u32;
    pcg(pcg(pcg(layer as u32) ^ lo) ^ hi)
}

/// `floor(p * 2^32)`: an element is dropped when its hash is below this.
pub fn threshold(p: f32) -> u32 {
    ((p as f64) * 4_294_967_296.0)
        .floor()
        .clamp(0.0, u32::MAX as f64) as u32
}

/// Whether element `index` is kept. WGSL twin: `keep` in `shaders/dropout.wgsl`.
pub fn keep(key: u32, threshold: u32, index: u32) -> bool {
    pcg(pcg(index) ^ key) >= threshold
}

/// The dropout mask of layer `layer`'s output, `numel` elements in seq-major order: `0` for a
/// dropped element, `1 / (1 - p)` for a kept one.
pub fn mask(seed: u64, layer: usize, p: f32, numel: usize) -> Vec<f64> {
    let (k, th) = (key(seed, layer), threshold(p));
    let scale = 1.0 / (1.0 - p as f64);
    (0..numel)
        .map(|i| if keep(k, th, i as u32) { scale } else { 0.0 })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcg_is_injective_on_a_range() {
        // A permutation of u32: no two of the first 2^16 indices collide.
        let mut seen: Vec<u32> = (0..1u32 << 16).map(pcg).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 1 << 16);
    }

    #[test]
    fn threshold_edges() {
        assert_eq!(threshold(0.0), 0);
        assert_eq!(threshold(0.5), 1 << 31);
        assert!(threshold(0.999_999) > u32::MAX - 5000);
    }

    #[test]
    fn mask_rate_is_close_to_p() {
        for p in [0.1f32, 0.5, 0.9] {
            let m = mask(7, 0, p, 100_000);
            let dropped = m.iter().filter(|v| **v == 0.0).count() as f64 / m.len() as f64;
            // Binomial standard deviation at n = 1e5 is at most 1.6e-3; 5 sigma is 8e-3.
            assert!(
                (dropped - p as f64).abs() < 8e-3,
                "p {p}: dropped {dropped}"
            );
        }
    }

    #[test]
    fn layers_and_seeds_give_different_masks() {
        let a = mask(1, 0, 0.5, 256);
        assert_ne!(a, mask(1, 1, 0.5, 256));
        assert_ne!(a, mask(2, 0, 0.5, 256));
        assert_eq!(a, mask(1, 0, 0.5, 256));
    }
}
