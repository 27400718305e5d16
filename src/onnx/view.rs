//! Symbolic views: how a value of an ONNX graph relates to a tensor the engine has.
//!
//! The glue exporters put around recurrent nodes (`Transpose`, `Squeeze`, `Unsqueeze`,
//! `Reshape`, `Concat` of the per-layer states) never changes an element, only where it
//! lies. So a value is described as its *root* (a graph input, a layer's `Y`, the stacked
//! states) plus its axes, each axis a list of *atoms* (`T`, `B`, direction, `H`, layer) in
//! row-major order. The memory order of the value is its atoms read axis by axis. Atoms of
//! size 1 (the direction of a one-direction model, the layer of a one-layer one) are dropped,
//! since they cannot change the memory order. To produce a value, [`permute`] reorders the
//! root's data from the root's atom order to the value's.

use crate::error::{Error, Result};

/// One symbolic dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Atom {
    /// Timesteps (run time).
    T,
    /// Batch rows (run time).
    B,
    /// Directions (`D`).
    Dir,
    /// Hidden units (`H`).
    H,
    /// Layers (`L`), in stacked states.
    Layer,
    /// Axis `k` of a graph input (run time).
    In(usize),
}

/// What a view is a view of.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Root {
    /// A runtime graph input.
    Input(String),
    /// The `Y` output of layer `l`.
    Y(usize),
    /// `Y_h` (`c = false`) or `Y_c` (`c = true`) of one layer, or of all layers stacked in
    /// order (`layer = None`, after a `Concat`).
    State { c: bool, layer: Option<usize> },
}

/// A graph value as a reordering of its root.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct View {
    pub root: Root,
    pub axes: Vec<Vec<Atom>>,
}

/// The sizes known when the model loads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    pub dirs: usize,
    pub hidden: usize,
    pub layers: usize,
}

impl Sizes {
    /// The size of `a` when it is known at load time.
    pub fn known(&self, a: Atom) -> Option<usize> {
        match a {
            Atom::Dir => Some(self.dirs),
            Atom::H => Some(self.hidden),
            Atom::Layer => Some(self.layers),
            Atom::T | Atom::B | Atom::In(_) => None,
        }
    }
}

fn bad(place: &str, why: impl Into<String>) -> Error {
    Error::OnnxModel {
        place: place.into(),
        why: why.into(),
    }
}

impl View {
    /// A view with atoms of known size 1 dropped.
    pub fn new(root: Root, axes: Vec<Vec<Atom>>, sizes: &Sizes) -> View {
        let axes = axes
            .into_iter()
            .map(|axis| {
                axis.into_iter()
                    .filter(|&a| sizes.known(a) != Some(1))
                    .collect()
            })
            .collect();
        View { root, axes }
    }

    /// The atoms in memory order.
    pub fn atoms(&self) -> Vec<Atom> {
        self.axes.iter().flatten().copied().collect()
    }

    fn rank_axis(&self, axis: i64, rank: usize, place: &str) -> Result<usize> {
        let r = rank as i64;
        let a = if axis < 0 { axis + r } else { axis };
        if a < 0 || a >= r {
            return Err(bad(
                place,
                format!("axis {axis} out of range for rank {rank}"),
            ));
        }
        Ok(a as usize)
    }

    /// ONNX `Transpose` (`perm = None`: reverse the axes).
    pub fn transpose(&self, perm: Option<&[i64]>, place: &str) -> Result<View> {
        let rank = self.axes.len();
        let perm: Vec<usize> = match perm {
            None => (0..rank).rev().collect(),
            Some(p) => p
                .iter()
                .map(|&a| self.rank_axis(a, rank, place))
                .collect::<Result<_>>()?,
        };
        let mut seen = vec![false; rank];
        for &p in &perm {
            seen[p] = true;
        }
        if perm.len() != rank || seen.iter().any(|s| !s) {
            return Err(bad(
                place,
                format!("perm {perm:?} is no permutation of {rank} axes"),
            ));
        }
        Ok(View {
            root: self.root.clone(),
            axes: perm.iter().map(|&p| self.axes[p].clone()).collect(),
        })
    }

    /// ONNX `Squeeze` (`axes = None`: every axis known to be of size 1).
    pub fn squeeze(&self, axes: Option<&[i64]>, place: &str) -> Result<View> {
        let rank = self.axes.len();
        let drop: Vec<usize> = match axes {
            Some(a) => a
                .iter()
                .map(|&a| self.rank_axis(a, rank, place))
                .collect::<Result<_>>()?,
            None => {
                if self
                    .axes
                    .iter()
                    .any(|axis| !axis.is_empty() && has_runtime(axis))
                {
                    return Err(bad(
                        place,
                        "Squeeze without `axes` over a time or batch axis depends on the run's \
                         sizes; give the axes",
                    ));
                }
                (0..rank).filter(|&k| self.axes[k].is_empty()).collect()
            }
        };
        for &k in &drop {
            if !self.axes[k].is_empty() {
                return Err(bad(
                    place,
                    format!(
                        "squeezes axis {k}, which is not of size 1 ({:?})",
                        self.axes[k]
                    ),
                ));
            }
        }
        Ok(View {
            root: self.root.clone(),
            axes: (0..rank)
                .filter(|k| !drop.contains(k))
                .map(|k| self.axes[k].clone())
                .collect(),
        })
    }

    /// ONNX `Unsqueeze`: size-1 axes at `axes` of the output.
    pub fn unsqueeze(&self, axes: &[i64], place: &str) -> Result<View> {
        let out_rank = self.axes.len() + axes.len();
        let mut at: Vec<usize> = axes
            .iter()
            .map(|&a| self.rank_axis(a, out_rank, place))
            .collect::<Result<_>>()?;
        at.sort_unstable();
        at.dedup();
        if at.len() != axes.len() {
            return Err(bad(place, format!("repeated axis in {axes:?}")));
        }
        let mut rest = self.axes.iter();
        let axes = (0..out_rank)
            .map(|k| {
                if at.contains(&k) {
                    Vec::new()
                } else {
                    rest.next().cloned().unwrap_or_default()
                }
            })
            .collect();
        Ok(View {
            root: self.root.clone(),
            axes,
        })
    }

    /// ONNX `Reshape` to the constant `shape` (`allowzero = 0`: a 0 copies the input's axis).
    /// Sizes over a time, batch or graph-input axis must come from a 0 or the -1.
    pub fn reshape(
        &self,
        shape: &[i64],
        allow_zero: bool,
        sizes: &Sizes,
        place: &str,
    ) -> Result<View> {
        enum Spec {
            Copy(usize),
            Known(usize),
            Infer,
        }
        let specs: Vec<Spec> = shape
            .iter()
            .enumerate()
            .map(|(i, &s)| match s {
                -1 => Ok(Spec::Infer),
                0 if !allow_zero => {
                    if i < self.axes.len() {
                        Ok(Spec::Copy(i))
                    } else {
                        Err(bad(
                            place,
                            format!(
                                "shape {shape:?} copies axis {i} of a rank-{} value",
                                self.axes.len()
                            ),
                        ))
                    }
                }
                s if s >= 0 => Ok(Spec::Known(s as usize)),
                s => Err(bad(place, format!("invalid size {s} in shape {shape:?}"))),
            })
            .collect::<Result<_>>()?;
        let infer: Vec<usize> = (0..specs.len())
            .filter(|&i| matches!(specs[i], Spec::Infer))
            .collect();
        if infer.len() > 1 {
            return Err(bad(place, format!("shape {shape:?} has more than one -1")));
        }
        let flat = self.atoms();
        let starts: Vec<usize> = self
            .axes
            .iter()
            .scan(0, |acc, a| {
                let s = *acc;
                *acc += a.len();
                Some(s)
            })
            .collect();
        let split = infer.first().copied().unwrap_or(specs.len());
        let mut out: Vec<Vec<Atom>> = vec![Vec::new(); specs.len()];
        // Left to right up to the -1.
        let mut p = 0;
        for i in 0..split {
            let (axis, next) = take(
                &specs[i], &flat, p, true, &starts, &self.axes, sizes, shape, place,
            )?;
            out[i] = axis;
            p = next;
        }
        // Right to left after it.
        let mut q = flat.len();
        for i in (split + 1..specs.len()).rev() {
            let (axis, next) = take(
                &specs[i], &flat, q, false, &starts, &self.axes, sizes, shape, place,
            )?;
            if next < p {
                return Err(bad(
                    place,
                    format!(
                        "shape {shape:?} does not fit the value's axes {:?}",
                        self.axes
                    ),
                ));
            }
            out[i] = axis;
            q = next;
        }
        if split < specs.len() {
            out[split] = flat[p..q].to_vec();
        } else if p != flat.len() {
            return Err(bad(
                place,
                format!(
                    "shape {shape:?} does not cover the value's axes {:?}",
                    self.axes
                ),
            ));
        }

        #[allow(clippy::too_many_arguments)]
        fn take(
            spec: &Spec,
            flat: &[Atom],
            at: usize,
            forward: bool,
            starts: &[usize],
            axes: &[Vec<Atom>],
            sizes: &Sizes,
            shape: &[i64],
            place: &str,
        ) -> Result<(Vec<Atom>, usize)> {
            let misfit = || {
                bad(
                    place,
                    format!("shape {shape:?} does not fit the value's axes {axes:?}"),
                )
            };
            match *spec {
                Spec::Infer => unreachable!("the -1 is placed last"),
                Spec::Copy(i) => {
                    let (s, e) = (starts[i], starts[i] + axes[i].len());
                    if (forward && s != at) || (!forward && e != at) {
                        return Err(misfit());
                    }
                    Ok((axes[i].clone(), if forward { e } else { s }))
                }
                Spec::Known(n) => {
                    let mut product = 1usize;
                    let mut taken = Vec::new();
                    let mut k = at;
                    while product < n {
                        let atom = if forward {
                            flat.get(k)
                        } else {
                            k.checked_sub(1).and_then(|j| flat.get(j))
                        };
                        let Some(&atom) = atom else {
                            return Err(misfit());
                        };
                        let Some(size) = sizes.known(atom) else {
                            return Err(bad(
                                place,
                                format!(
                                    "shape {shape:?} fixes the size of a time, batch or input axis; \
                                     export with 0 or -1 there (dynamic axes)"
                                ),
                            ));
                        };
                        product *= size;
                        taken.push(atom);
                        k = if forward { k + 1 } else { k - 1 };
                    }
                    if product != n {
                        return Err(misfit());
                    }
                    if !forward {
                        taken.reverse();
                    }
                    Ok((taken, k))
                }
            }
        }
        Ok(View {
            root: self.root.clone(),
            axes: out,
        })
    }
}

fn has_runtime(axis: &[Atom]) -> bool {
    axis.iter()
        .any(|a| matches!(a, Atom::T | Atom::B | Atom::In(_)))
}

/// Reorder `data`, whose memory order is the atoms `from` with sizes `size`, into the memory
/// order `to` (the same atoms, reordered; atoms of size 1 may be missing on either side).
///
/// Errors: [`Error::Internal`] when `to` is no reordering of `from` (a bug of the graph
/// analysis, which checked it at load time).
pub(crate) fn permute<T: Copy>(
    data: &[T],
    from: &[Atom],
    to: &[Atom],
    size: impl Fn(Atom) -> usize,
) -> Result<Vec<T>> {
    let from: Vec<Atom> = from.iter().copied().filter(|&a| size(a) != 1).collect();
    let to: Vec<Atom> = to.iter().copied().filter(|&a| size(a) != 1).collect();
    let mismatch = || Error::Internal(format!("cannot reorder atoms {from:?} into {to:?}"));
    if from.len() != to.len() {
        return Err(mismatch());
    }
    // Stride of each atom in `from`.
    let mut strides = vec![0usize; from.len()];
    let mut s = 1;
    for k in (0..from.len()).rev() {
        strides[k] = s;
        s *= size(from[k]);
    }
    if s != data.len() {
        return Err(Error::Internal(format!(
            "{} elements for atoms {from:?} of {s}",
            data.len()
        )));
    }
    let to_strides: Vec<usize> = to
        .iter()
        .map(|a| {
            from.iter()
                .position(|b| b == a)
                .map(|k| strides[k])
                .ok_or_else(mismatch)
        })
        .collect::<Result<_>>()?;
    let dims: Vec<usize> = to.iter().map(|&a| size(a)).collect();
    let mut out = Vec::with_capacity(data.len());
    let mut idx = vec![0usize; dims.len()];
    for _ in 0..data.len() {
        let src: usize = idx.iter().zip(&to_strides).map(|(i, s)| i * s).sum();
        out.push(data[src]);
        for k in (0..dims.len()).rev() {
            idx[k] += 1;
            if idx[k] < dims[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZES: Sizes = Sizes {
        dirs: 2,
        hidden: 3,
        layers: 2,
    };

    #[test]
    fn torch_bidirectional_glue_gives_seq_major_features() {
        let y = View::new(
            Root::Y(0),
            vec![vec![Atom::T], vec![Atom::Dir], vec![Atom::B], vec![Atom::H]],
            &SIZES,
        );
        let t = y.transpose(Some(&[0, 2, 1, 3]), "t").unwrap();
        let r = t.reshape(&[0, 0, -1], false, &SIZES, "r").unwrap();
        assert_eq!(
            r.axes,
            vec![vec![Atom::T], vec![Atom::B], vec![Atom::Dir, Atom::H]]
        );
        // A fixed size over the batch axis cannot be checked at load time.
        assert!(t.reshape(&[0, 4, 6], false, &SIZES, "r").is_err());
        // Squeezing the direction axis of a two-direction value is wrong.
        assert!(y.squeeze(Some(&[1]), "s").is_err());
    }

    #[test]
    fn permute_moves_each_element_to_its_transposed_place() {
        // [T=2, B=3] -> [B, T]
        let data: Vec<u32> = (0..6).collect();
        let size = |a: Atom| match a {
            Atom::T => 2,
            Atom::B => 3,
            _ => 1,
        };
        let out = permute(
            &data,
            &[Atom::T, Atom::Dir, Atom::B],
            &[Atom::B, Atom::T],
            size,
        )
        .unwrap();
        assert_eq!(out, vec![0, 3, 1, 4, 2, 5]);
    }
}
