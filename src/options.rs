//! Argument structs shared by the GPU path and the CPU reference, so that both take a pass's
//! inputs in the same shape: [`RunOptions`] (per-row lengths, dropout seed), [`HostState`]
//! (`h0`, `c0`) and [`Upstream`] (`dy`, `dh_n`, `dc_n`).
//!
//! On the GPU they appear in [`crate::Rnn::forward_host`] and [`crate::Rnn::forward_with`];
//! on the CPU in [`crate::cpu::stack_forward`], [`crate::cpu::stack_forward_train`] and
//! [`crate::cpu::stack_backward`] (with `T = f64`).

use crate::config::Layout;

/// Options of a pass beyond its tensors.
///
/// The layout (seq-major or batch-first) is first a property of the model, as `batch_first`
/// is of PyTorch's `nn.LSTM` ([`crate::RnnConfigBuilder::layout`]); `layout` overrides it for
/// one call on the host paths.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions<'a> {
    /// Valid steps of each batch row, `[B]`, each in `1..=T`, in any order (PyTorch
    /// `pack_padded_sequence(..., enforce_sorted=False)`). `None`: every row runs all `T`.
    pub lengths: Option<&'a [usize]>,
    /// Seed of the dropout masks between layers (training passes only, when the model has
    /// dropout). `None`: the GPU model draws the next seed of its own counter, so successive
    /// training steps get fresh masks; the CPU reference, which has no counter, refuses a
    /// training pass with dropout and no seed.
    pub dropout_seed: Option<u64>,
    /// The layout of this call's `x`, `y` (and `dy`, `dx`): `None` is the model's own.
    /// [`crate::Rnn::forward_host`] and the CPU reference ([`crate::cpu::stack_forward`],
    /// [`crate::cpu::stack_backward`]) honour any layout; the GPU-resident paths
    /// ([`crate::Rnn::forward_with`], [`crate::Rnn::forward_train_with`], `record_*`), whose
    /// workspaces are planned for the model's layout, refuse another one with
    /// [`crate::Error::InvalidConfig`] (build the model with that layout instead).
    pub layout: Option<Layout>,
}

impl RunOptions<'_> {
    /// The layout of this call: [`RunOptions::layout`] or the model's.
    pub fn layout_or(&self, model: Layout) -> Layout {
        self.layout.unwrap_or(model)
    }
}

/// The initial state of a pass, on the host: `h0 [L*D, B, S]` and `c0 [L*D, B, H]` (LSTM
/// only), flattened; `None` is zeros.
///
/// As with PyTorch's functional API, an LSTM may be given `h0` alone (`c0` is then zeros).
/// `T` is `f32` on the GPU path and `f64` in the CPU reference.
#[derive(Debug)]
pub struct HostState<'a, T = f32> {
    /// `[L*D, B, S]`, `S` = `proj_size` or `H`.
    pub h0: Option<&'a [T]>,
    /// `[L*D, B, H]`; LSTM only (an error for a GRU or RNN).
    pub c0: Option<&'a [T]>,
}

impl<T> HostState<'_, T> {
    /// Zeros for every state.
    pub fn zeros() -> Self {
        HostState { h0: None, c0: None }
    }
}

impl<'a, T> HostState<'a, T> {
    /// `h0` given, `c0` zeros (or absent for a GRU or RNN).
    pub fn h(h0: &'a [T]) -> Self {
        HostState {
            h0: Some(h0),
            c0: None,
        }
    }

    /// Both states given (LSTM).
    pub fn hc(h0: &'a [T], c0: &'a [T]) -> Self {
        HostState {
            h0: Some(h0),
            c0: Some(c0),
        }
    }
}

impl<T> Default for HostState<'_, T> {
    fn default() -> Self {
        HostState::zeros()
    }
}

impl<T> Clone for HostState<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for HostState<'_, T> {}

/// The upstream gradients of a backward pass, on the host; `None` is zeros:
/// `dy` shaped like the forward's `y`, `dh_n [L*D, B, S]`, `dc_n [L*D, B, H]` (LSTM only).
#[derive(Debug)]
pub struct Upstream<'a, T = f64> {
    /// Like `y`: `[T, B, D*S]` or `[B, T, D*S]`.
    pub dy: Option<&'a [T]>,
    /// `[L*D, B, S]`.
    pub dh_n: Option<&'a [T]>,
    /// `[L*D, B, H]` (LSTM only).
    pub dc_n: Option<&'a [T]>,
}

impl<'a, T> Upstream<'a, T> {
    /// A gradient on `y` only.
    pub fn dy(dy: &'a [T]) -> Self {
        Upstream {
            dy: Some(dy),
            dh_n: None,
            dc_n: None,
        }
    }
}

impl<T> Default for Upstream<'_, T> {
    fn default() -> Self {
        Upstream {
            dy: None,
            dh_n: None,
            dc_n: None,
        }
    }
}

impl<T> Clone for Upstream<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Upstream<'_, T> {}
