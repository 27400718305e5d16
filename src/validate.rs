//! Validation that the CPU reference and the GPU path share, so both refuse the same input with
//! the same [`Error`]. Neither path's module is imported here: `cpu/` and `gpu/` both depend
//! on this one, never on each other.

use crate::error::{Error, Result};

/// `data` must hold `shape.iter().product()` elements. A shape whose product overflows `usize`
/// describes no slice at all, so it is refused as a mismatch too (instead of wrapping to a
/// small number that might happen to match).
///
/// Errors: [`Error::ShapeMismatch`] naming `name`, with the expected shape and the length got.
pub(crate) fn check_len<T>(name: &str, data: &[T], shape: &[usize]) -> Result<()> {
    let numel = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    if numel != Some(data.len()) {
        return Err(Error::ShapeMismatch {
            name: name.to_string(),
            expected: shape.to_vec(),
            got: vec![data.len()],
        });
    }
    Ok(())
}

/// `T` and `B` must be positive.
///
/// Errors: [`Error::ZeroSize`] naming the zero one.
pub(crate) fn check_steps_batch(steps: usize, batch: usize) -> Result<()> {
    if steps == 0 {
        return Err(Error::ZeroSize("T (timesteps)"));
    }
    if batch == 0 {
        return Err(Error::ZeroSize("B (batch)"));
    }
    Ok(())
}

/// Lengths, when given, must have one entry per batch row, each in `1..=T`. The CPU stack
/// reference and the GPU plan both validate with this function.
///
/// Errors: [`Error::ShapeMismatch`] for a `lengths` not of `B` entries or an entry over `T`;
/// [`Error::ZeroSize`] for a zero entry.
pub(crate) fn check_lengths(lengths: Option<&[usize]>, steps: usize, batch: usize) -> Result<()> {
    let Some(lengths) = lengths else {
        return Ok(());
    };
    if lengths.len() != batch {
        return Err(Error::ShapeMismatch {
            name: "lengths".into(),
            expected: vec![batch],
            got: vec![lengths.len()],
        });
    }
    for (b, &len) in lengths.iter().enumerate() {
        if len == 0 {
            return Err(Error::ZeroSize("lengths[b] (a sequence length)"));
        }
        if len > steps {
            return Err(Error::ShapeMismatch {
                name: format!("lengths[{b}] (at most T)"),
                expected: vec![steps],
                got: vec![len],
            });
        }
    }
    Ok(())
}

/// `[a, b, f]` → `[b, a, f]` (seq-major ↔ batch-first), for the CPU reference and the GPU
/// host paths alike.
pub(crate) fn swap_leading<T: Copy + Default>(v: &[T], a: usize, b: usize, f: usize) -> Vec<T> {
    let mut out = vec![T::default(); v.len()];
    for i in 0..a {
        for j in 0..b {
            let src = (i * b + j) * f;
            let dst = (j * a + i) * f;
            out[dst..dst + f].copy_from_slice(&v[src..src + f]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_len_refuses_an_overflowing_shape() {
        let err = check_len("w", &[0.0f32; 4], &[usize::MAX, 2]).unwrap_err();
        assert!(
            matches!(&err, Error::ShapeMismatch { name, got, .. } if name == "w" && *got == [4]),
            "{err}"
        );
        assert!(check_len("w", &[0.0f32; 6], &[2, 3]).is_ok());
    }
}
