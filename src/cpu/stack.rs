//! The whole model: layers × directions × per-sequence lengths × layout, built from the
//! one-layer, one-direction reference ([`forward`] / [`backward`]) with PyTorch's semantics.
//!
//! - Layer `l+1` reads layer `l`'s output; a bidirectional layer's output is
//!   `[forward | reverse]` on the feature axis (`[T, B, 2S]`).
//! - States are `[layers*dirs, B, ·]` in PyTorch's order: `l0`, `l0_reverse`, `l1`, ...
//! - With `lengths`, sequence `b` is `x[0 .. lengths[b], b]`: the forward direction runs
//!   `0 .. len-1`, the reverse direction `len-1 .. 0`; `y` past `len` is exactly zero, `h_n` /
//!   `c_n` come from the last step each direction ran, and padding gets no gradient. This is
//!   `pack_padded_sequence(enforce_sorted=False)` → module → `pad_packed_sequence`.
//!
//! How: every layer-direction is a set of *runs*. A run is some batch rows and the time
//! indices they visit, in visiting order; it is gathered into a plain `[n_t, n_b, F]`
//! sequence, handed to [`forward`] / [`backward`], and its results scattered back. Without
//! lengths there is one run (all rows, all steps); with lengths one run per row.
//!
//! Dropout between layers (PyTorch's `dropout`, training only): [`stack_forward`] is the
//! inference (eval-mode) forward and ignores it; [`stack_forward_train`] multiplies the output
//! of every layer but the last by [`crate::dropout::mask`] before it becomes the next layer's
//! input, and [`stack_forward_with_masks`] does the same with masks given by the caller. The
//! masks are kept in the [`StackTrace`], so [`stack_backward`] sends the gradient of layer
//! `l+1`'s input back through the same mask: dropped units get none.

use crate::config::{CellKind, Direction, Layout, RnnConfig};
use crate::error::{Error, Result};
use crate::options::{HostState, RunOptions, Upstream};
use crate::validate::{check_lengths, check_steps_batch, swap_leading};
use crate::weights::Weights;

use super::cell::{CellGrads, RefWeights, Trace, backward, check, forward};

/// Everything [`stack_forward`] (or a training forward: [`stack_forward_train`],
/// [`stack_forward_with_masks`]) computed: the outputs, and what [`stack_backward`] needs,
/// including the dropout masks it applied.
///
/// `D` = directions (1 or 2), `S` = state size (`P` with a projection, else `H`).
#[derive(Debug, Clone)]
pub struct StackTrace {
    /// `[T, B, D*S]` (seq-major) or `[B, T, D*S]` (batch-first): the last layer's output,
    /// zero past each sequence's length.
    pub y: Vec<f64>,
    /// `[layers*D, B, S]`: each layer-direction's final `h`.
    pub h_n: Vec<f64>,
    /// `[layers*D, B, H]`: each layer-direction's final `c` (LSTM only).
    pub c_n: Option<Vec<f64>>,
    /// Per layer: its input, seq-major `[T, B, I_l]`.
    layer_inputs: Vec<Vec<f64>>,
    /// Per layer-direction (`l*D + d`): the [`Trace`] of each run, in [`runs`] order.
    traces: Vec<Vec<Trace>>,
    /// Per layer boundary `l` (`0 .. L-1`): the dropout mask applied to layer `l`'s seq-major
    /// output `[T, B, D*S]`. Empty when no dropout was applied (inference).
    masks: Vec<Vec<f64>>,
    /// `T` and `B` of the pass.
    steps: usize,
    batch: usize,
}

impl StackTrace {
    /// `T`, the pass's timesteps.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// `B`, the pass's batch rows.
    pub fn batch(&self) -> usize {
        self.batch
    }
}

impl StackTrace {
    /// Per layer-direction (`l*D + d`, the order of [`Weights::layer`]): the one-layer
    /// [`Trace`] of each run (one run of every row without `lengths`, one run per row with
    /// them), holding every pre-activation and cell state the stack computed. Lets a caller
    /// see how close any value came to an activation's kink or a clip bound.
    pub fn layer_traces(&self) -> &[Vec<Trace>] {
        &self.traces
    }
}

/// Gradients of `sum(y*dy) + sum(h_n*dh_n) + sum(c_n*dc_n)` with respect to every input and
/// parameter of the stack.
#[derive(Debug, Clone)]
pub struct StackGrads {
    /// Like `x`: `[T, B, I]` or `[B, T, I]`; zero at padding.
    pub dx: Vec<f64>,
    /// `[layers*D, B, S]`.
    pub dh0: Vec<f64>,
    /// `[layers*D, B, H]`: LSTM only.
    pub dc0: Option<Vec<f64>>,
    /// Per layer-direction (`l*D + d`, the order of [`Weights::layer`]): its parameter
    /// gradients, plus `dx` = this direction's share of the gradient of the layer's input
    /// (seq-major `[T, B, I_l]`), `dh0 [B, S]` and `dc0 [B, H]`.
    pub layers: Vec<CellGrads>,
}

/// Inference (eval-mode) forward through every layer and direction of `cfg`: dropout, if
/// `cfg` has any, is not applied (PyTorch's `module.eval()`). For training use
/// [`stack_forward_train`].
///
/// Shapes (`L` layers, `D` directions, `S` state size, `x` in `opts.layout` or else
/// `cfg.layout()`):
/// `x [T, B, I]` or `[B, T, I]`; `state`: `h0 [L*D, B, S]` and `c0 [L*D, B, H]` (LSTM only),
/// each zeros when `None`; `opts.lengths [B]`, each in `1..=T`, or `None` for all `T`. The
/// argument structs are those of the GPU path ([`crate::Rnn::forward_host`]).
///
/// Errors: [`Error::ZeroSize`] for `T = 0`, `B = 0` or a zero length;
/// [`Error::ShapeMismatch`] for a tensor of the wrong size, a `lengths` not of `B` entries or
/// a length over `T`; [`Error::InvalidConfig`] for weights of another topology, a `c0` given
/// to a GRU or RNN.
pub fn stack_forward(
    cfg: &RnnConfig,
    w: &Weights,
    x: &[f64],
    steps: usize,
    batch: usize,
    state: HostState<'_, f64>,
    opts: &RunOptions<'_>,
) -> Result<StackTrace> {
    let cfg = &cfg.with_layout(opts.layout_or(cfg.layout()));
    let (h0, c0) = (state.h0, state.c0);
    forward_impl(cfg, w, x, h0, c0, opts.lengths, steps, batch, Vec::new())
}

/// Training forward: as [`stack_forward`], and the seq-major `[T, B, D*S]` output of every
/// layer `l < L-1` is multiplied element-wise by
/// `crate::dropout::mask(seed, l, cfg.dropout(), T*B*D*S)`, `seed` = `opts.dropout_seed` (`0` for a dropped element,
/// `1 / (1 - p)` for a kept one) before it becomes layer `l+1`'s input. The masks depend only
/// on `seed`, so for a fixed seed this is a differentiable function, and [`stack_backward`] on
/// the returned trace is its exact gradient. With `cfg.dropout() == 0` (or one layer) it is
/// [`stack_forward`]. The final `h_n` / `c_n` of every layer are not masked.
///
/// Errors: as [`stack_forward`], plus [`Error::InvalidConfig`] when the model has dropout
/// between layers and `opts.dropout_seed` is `None`.
pub fn stack_forward_train(
    cfg: &RnnConfig,
    w: &Weights,
    x: &[f64],
    steps: usize,
    batch: usize,
    state: HostState<'_, f64>,
    opts: &RunOptions<'_>,
) -> Result<StackTrace> {
    let cfg = &cfg.with_layout(opts.layout_or(cfg.layout()));
    let p = cfg.dropout();
    if p == 0.0 || cfg.num_layers() == 1 {
        return stack_forward(cfg, w, x, steps, batch, state, opts);
    }
    let Some(seed) = opts.dropout_seed else {
        return Err(Error::InvalidConfig(
            "a CPU training forward with dropout needs RunOptions::dropout_seed \
             (the reference has no seed counter of its own)"
                .into(),
        ));
    };
    let lengths = opts.lengths;
    // Validate the sizes before drawing masks of `T*B*D*S` elements from them.
    StackShape::check(cfg, w, lengths, steps, batch)?;
    check("x", x, &[steps, batch, cfg.input_size()])?;
    let numel = layer_output_len(cfg, steps, batch)?;
    let masks: Vec<Vec<f64>> = (0..cfg.num_layers().saturating_sub(1))
        .map(|l| crate::dropout::mask(seed, l, p, numel))
        .collect();
    check_masks(cfg, &masks, steps, batch)?;
    forward_impl(cfg, w, x, state.h0, state.c0, lengths, steps, batch, masks)
}

/// Training forward with caller-given dropout masks: as [`stack_forward`], and the seq-major
/// `[T, B, D*S]` output of layer `l` is multiplied element-wise by `masks[l]` before it
/// becomes layer `l+1`'s input. `masks` has `L-1` entries (none for one layer), each of
/// `T*B*D*S` values, taken as they are (`cfg.dropout()` is not consulted). [`stack_backward`]
/// on the returned trace multiplies the gradient of layer `l`'s output by the same `masks[l]`.
///
/// Errors: as [`stack_forward`], plus [`Error::ShapeMismatch`] for a `masks` not of `L-1`
/// entries or an entry not of `T*B*D*S` values.
#[allow(clippy::too_many_arguments)]
pub fn stack_forward_with_masks(
    cfg: &RnnConfig,
    w: &Weights,
    x: &[f64],
    steps: usize,
    batch: usize,
    state: HostState<'_, f64>,
    opts: &RunOptions<'_>,
    masks: &[Vec<f64>],
) -> Result<StackTrace> {
    let cfg = &cfg.with_layout(opts.layout_or(cfg.layout()));
    check_masks(cfg, masks, steps, batch)?;
    let (h0, c0, lengths) = (state.h0, state.c0, opts.lengths);
    forward_impl(cfg, w, x, h0, c0, lengths, steps, batch, masks.to_vec())
}

/// `T*B*D*S`: the length of one layer's output, saturating into a typed error.
fn layer_output_len(cfg: &RnnConfig, steps: usize, batch: usize) -> Result<usize> {
    [batch, cfg.num_directions(), cfg.state_size()]
        .iter()
        .try_fold(steps, |n, &f| n.checked_mul(f))
        .ok_or_else(|| Error::ShapeMismatch {
            name: "layer output (T*B*D*S overflows)".into(),
            expected: vec![steps, batch, cfg.num_directions() * cfg.state_size()],
            got: vec![usize::MAX],
        })
}

/// `masks` has one `[T, B, D*S]` entry per layer boundary (`L-1`), or none at all (no dropout).
fn check_masks(cfg: &RnnConfig, masks: &[Vec<f64>], steps: usize, batch: usize) -> Result<()> {
    let boundaries = cfg.num_layers().saturating_sub(1);
    if masks.len() != boundaries {
        return Err(Error::ShapeMismatch {
            name: "masks (one per layer boundary, L-1)".into(),
            expected: vec![boundaries],
            got: vec![masks.len()],
        });
    }
    let width = cfg.num_directions() * cfg.state_size();
    for (l, m) in masks.iter().enumerate() {
        check(&format!("masks[{l}]"), m, &[steps, batch, width])?;
    }
    Ok(())
}

/// The forward loop of [`stack_forward`] and the training forwards: `masks` empty (no dropout)
/// or already checked by [`check_masks`].
#[allow(clippy::too_many_arguments)]
fn forward_impl(
    cfg: &RnnConfig,
    w: &Weights,
    x: &[f64],
    h0: Option<&[f64]>,
    c0: Option<&[f64]>,
    lengths: Option<&[usize]>,
    steps: usize,
    batch: usize,
    masks: Vec<Vec<f64>>,
) -> Result<StackTrace> {
    let shape = StackShape::check(cfg, w, lengths, steps, batch)?;
    let (s, h) = (cfg.state_size(), cfg.hidden_size());
    let (layers, dirs) = (cfg.num_layers(), cfg.num_directions());
    check("x", x, &[steps, batch, cfg.input_size()])?;
    let h0 = stacked_state(cfg, "h0", h0, true, layers * dirs, batch, s)?;
    let c0 = stacked_state(cfg, "c0", c0, false, layers * dirs, batch, h)?;
    let has_c = cfg.cell() == CellKind::Lstm;

    let mut input = to_seq_major(cfg.layout(), x, steps, batch, cfg.input_size());
    let mut h_n = vec![0.0; layers * dirs * batch * s];
    let mut c_n = vec![0.0; if has_c { layers * dirs * batch * h } else { 0 }];
    let mut layer_inputs = Vec::with_capacity(layers);
    let mut traces = Vec::with_capacity(layers * dirs);
    for layer in 0..layers {
        let lc = cfg.layer_config(layer);
        let width = lc.input_size();
        // [T, B, D*S]: positions no run visits (padding) stay zero.
        let mut out = vec![0.0; steps * batch * dirs * s];
        for dir in 0..dirs {
            let k = layer * dirs + dir;
            let rw = RefWeights::new(&lc, w.layer(layer, dir)?);
            let mut dir_traces = Vec::new();
            for run in shape.runs(cfg.direction(), dir) {
                let (nt, nb) = (run.times.len(), run.rows.len());
                let xr = run.gather(&input, width, 0, width);
                let h0r = run.gather_rows(state_slice(&h0, k, batch, s), s);
                let c0r = has_c.then(|| run.gather_rows(state_slice(&c0, k, batch, h), h));
                let tr = forward(&lc, &rw, &xr, Some(&h0r), c0r.as_deref(), nt, nb)?;
                run.scatter(&mut out, dirs * s, dir * s, s, &tr.y);
                run.scatter_rows(state_slice_mut(&mut h_n, k, batch, s), s, &tr.h_n);
                if let Some(cn) = &tr.c_n {
                    run.scatter_rows(state_slice_mut(&mut c_n, k, batch, h), h, cn);
                }
                dir_traces.push(tr);
            }
            traces.push(dir_traces);
        }
        // Dropout between layers: the next layer reads the masked output (padding stays zero
        // for a finite mask).
        if let Some(mask) = masks.get(layer) {
            apply_mask(&mut out, mask);
        }
        layer_inputs.push(std::mem::replace(&mut input, out));
    }
    Ok(StackTrace {
        y: from_seq_major(cfg.layout(), &input, steps, batch, dirs * s),
        h_n,
        c_n: has_c.then_some(c_n),
        layer_inputs,
        traces,
        masks,
        steps,
        batch,
    })
}

/// `v *= mask`, element-wise.
fn apply_mask(v: &mut [f64], mask: &[f64]) {
    for (v, m) in v.iter_mut().zip(mask) {
        *v *= m;
    }
}

/// Backward through every layer and direction, for the batch `trace` was computed from (by
/// [`stack_forward`], [`stack_forward_train`] or [`stack_forward_with_masks`] with the same
/// `cfg`, `w`, `state` and `opts.lengths`; `T` and `B` come from the trace). A training trace carries its dropout
/// masks: the gradient reaching layer `l`'s output is multiplied by the mask layer `l+1`'s
/// input was made with, so dropped units get exactly zero.
///
/// `upstream` gradients, any may be `None` (zeros): `dy` shaped like `trace.y` (its values at
/// padding are ignored, as `y` is constant zero there), `dh_n [L*D, B, S]`, `dc_n
/// [L*D, B, H]` (LSTM only).
///
/// Errors: as [`stack_forward`], plus [`Error::ShapeMismatch`] for a `trace` that does not
/// fit.
#[allow(clippy::too_many_arguments)]
pub fn stack_backward(
    cfg: &RnnConfig,
    w: &Weights,
    trace: &StackTrace,
    state: HostState<'_, f64>,
    upstream: Upstream<'_, f64>,
    opts: &RunOptions<'_>,
) -> Result<StackGrads> {
    let cfg = &cfg.with_layout(opts.layout_or(cfg.layout()));
    let (steps, batch, lengths) = (trace.steps, trace.batch, opts.lengths);
    let (h0, c0) = (state.h0, state.c0);
    let (dy, dh_n, dc_n) = (upstream.dy, upstream.dh_n, upstream.dc_n);
    let shape = StackShape::check(cfg, w, lengths, steps, batch)?;
    let (s, h) = (cfg.state_size(), cfg.hidden_size());
    let (layers, dirs) = (cfg.num_layers(), cfg.num_directions());
    let n_states = layers * dirs;
    let h0 = stacked_state(cfg, "h0", h0, true, n_states, batch, s)?;
    let c0 = stacked_state(cfg, "c0", c0, false, n_states, batch, h)?;
    let dh_n = stacked_state(cfg, "dh_n", dh_n, true, n_states, batch, s)?;
    let dc_n = stacked_state(cfg, "dc_n", dc_n, false, n_states, batch, h)?;
    let has_c = cfg.cell() == CellKind::Lstm;
    if trace.layer_inputs.len() != layers || trace.traces.len() != n_states {
        return Err(Error::ShapeMismatch {
            name: "trace (layers x directions)".into(),
            expected: vec![layers, n_states],
            got: vec![trace.layer_inputs.len(), trace.traces.len()],
        });
    }
    if !trace.masks.is_empty() {
        check_masks(cfg, &trace.masks, steps, batch)?;
    }

    // The gradient reaching the current layer's output, seq-major [T, B, D*S].
    let mut d_out = match dy {
        Some(dy) => {
            check("dy", dy, &[steps, batch, dirs * s])?;
            to_seq_major(cfg.layout(), dy, steps, batch, dirs * s)
        }
        None => vec![0.0; steps * batch * dirs * s],
    };
    let mut dh0 = vec![0.0; n_states * batch * s];
    let mut dc0 = vec![0.0; if has_c { n_states * batch * h } else { 0 }];
    let mut grads: Vec<Option<CellGrads>> = vec![None; n_states];
    for layer in (0..layers).rev() {
        let lc = cfg.layer_config(layer);
        let width = lc.input_size();
        let input = &trace.layer_inputs[layer];
        check("trace.layer_inputs", input, &[steps, batch, width])?;
        let mut d_in = vec![0.0; steps * batch * width];
        for dir in 0..dirs {
            let k = layer * dirs + dir;
            let rw = RefWeights::new(&lc, w.layer(layer, dir)?);
            let runs = shape.runs(cfg.direction(), dir);
            if trace.traces[k].len() != runs.len() {
                return Err(Error::ShapeMismatch {
                    name: format!("trace.traces[{k}] (runs)"),
                    expected: vec![runs.len()],
                    got: vec![trace.traces[k].len()],
                });
            }
            let mut total = CellGrads::zeros(&lc, steps, batch);
            for (run, tr) in runs.iter().zip(&trace.traces[k]) {
                let (nt, nb) = (run.times.len(), run.rows.len());
                let xr = run.gather(input, width, 0, width);
                let h0r = run.gather_rows(state_slice(&h0, k, batch, s), s);
                let c0r = has_c.then(|| run.gather_rows(state_slice(&c0, k, batch, h), h));
                let dyr = run.gather(&d_out, dirs * s, dir * s, s);
                let dhr = run.gather_rows(state_slice(&dh_n, k, batch, s), s);
                let dcr = has_c.then(|| run.gather_rows(state_slice(&dc_n, k, batch, h), h));
                let g = backward(
                    &lc,
                    &rw,
                    &xr,
                    Some(&h0r),
                    c0r.as_deref(),
                    tr,
                    Some(&dyr),
                    Some(&dhr),
                    dcr.as_deref(),
                    nt,
                    nb,
                )?;
                run.scatter(&mut total.dx, width, 0, width, &g.dx);
                run.scatter_rows(&mut total.dh0, s, &g.dh0);
                if let (Some(dst), Some(src)) = (total.dc0.as_mut(), g.dc0.as_ref()) {
                    run.scatter_rows(dst, h, src);
                }
                total.add_parameter_grads(&g);
            }
            for (a, b) in d_in.iter_mut().zip(&total.dx) {
                *a += b;
            }
            state_slice_mut(&mut dh0, k, batch, s).copy_from_slice(&total.dh0);
            if let Some(dc) = &total.dc0 {
                state_slice_mut(&mut dc0, k, batch, h).copy_from_slice(dc);
            }
            grads[k] = Some(total);
        }
        // `d_in` is the gradient of layer `l`'s input, i.e. of layer `l-1`'s masked output.
        if let Some(mask) = layer.checked_sub(1).and_then(|l| trace.masks.get(l)) {
            apply_mask(&mut d_in, mask);
        }
        d_out = d_in;
    }
    Ok(StackGrads {
        dx: from_seq_major(cfg.layout(), &d_out, steps, batch, cfg.input_size()),
        dh0,
        dc0: has_c.then_some(dc0),
        layers: grads
            .into_iter()
            .map(|g| g.expect("every layer-direction ran"))
            .collect(),
    })
}

impl CellGrads {
    /// All zeros, for one layer-direction of `cfg` (a [`RnnConfig::layer_config`]) over
    /// `T` steps and `B` rows.
    fn zeros(cfg: &RnnConfig, steps: usize, batch: usize) -> CellGrads {
        let (h, s, i) = (cfg.hidden_size(), cfg.state_size(), cfg.input_size());
        let gh = cfg.gate_count() * h;
        let lstm = cfg.cell() == CellKind::Lstm;
        CellGrads {
            dx: vec![0.0; steps * batch * i],
            dh0: vec![0.0; batch * s],
            dc0: lstm.then(|| vec![0.0; batch * h]),
            d_weight_ih: vec![0.0; gh * i],
            d_weight_hh: vec![0.0; gh * s],
            d_bias_ih: vec![0.0; gh],
            d_bias_hh: vec![0.0; gh],
            d_weight_hr: cfg.proj_size().map(|p| vec![0.0; p * h]),
            d_peephole: cfg.peepholes().then(|| vec![0.0; 3 * h]),
        }
    }

    /// Add `g`'s parameter gradients (not `dx`, `dh0`, `dc0`) to these.
    fn add_parameter_grads(&mut self, g: &CellGrads) {
        fn add(a: &mut [f64], b: &[f64]) {
            for (a, b) in a.iter_mut().zip(b) {
                *a += b;
            }
        }
        add(&mut self.d_weight_ih, &g.d_weight_ih);
        add(&mut self.d_weight_hh, &g.d_weight_hh);
        add(&mut self.d_bias_ih, &g.d_bias_ih);
        add(&mut self.d_bias_hh, &g.d_bias_hh);
        if let (Some(a), Some(b)) = (self.d_weight_hr.as_mut(), g.d_weight_hr.as_ref()) {
            add(a, b);
        }
        if let (Some(a), Some(b)) = (self.d_peephole.as_mut(), g.d_peephole.as_ref()) {
            add(a, b);
        }
    }
}

/// The validated batch geometry shared by forward and backward.
struct StackShape<'a> {
    steps: usize,
    batch: usize,
    lengths: Option<&'a [usize]>,
}

impl<'a> StackShape<'a> {
    fn check(
        cfg: &RnnConfig,
        w: &Weights,
        lengths: Option<&'a [usize]>,
        steps: usize,
        batch: usize,
    ) -> Result<StackShape<'a>> {
        check_steps_batch(steps, batch)?;
        let wc = w.config();
        if wc.num_layers() != cfg.num_layers() || wc.num_directions() != cfg.num_directions() {
            return Err(Error::InvalidConfig(format!(
                "weights for {} layer(s) x {} direction(s), the configuration has {} x {}",
                wc.num_layers(),
                wc.num_directions(),
                cfg.num_layers(),
                cfg.num_directions()
            )));
        }
        w.validate()?;
        check_lengths(lengths, steps, batch)?;
        Ok(StackShape {
            steps,
            batch,
            lengths,
        })
    }

    /// The runs of direction `dir` (0 = forward, 1 = reverse) of a layer running `direction`.
    fn runs(&self, direction: Direction, dir: usize) -> Vec<Run> {
        let reverse = direction == Direction::Reverse || dir == 1;
        let times = |len: usize| -> Vec<usize> {
            if reverse {
                (0..len).rev().collect()
            } else {
                (0..len).collect()
            }
        };
        match self.lengths {
            None => vec![Run {
                batch: self.batch,
                rows: (0..self.batch).collect(),
                times: times(self.steps),
            }],
            Some(lengths) => lengths
                .iter()
                .enumerate()
                .map(|(b, &len)| Run {
                    batch: self.batch,
                    rows: vec![b],
                    times: times(len),
                })
                .collect(),
        }
    }
}

/// Some rows of the batch and the time indices they visit, in visiting order.
struct Run {
    /// `B` of the full batch.
    batch: usize,
    rows: Vec<usize>,
    times: Vec<usize>,
}

impl Run {
    /// `src [T, B, width]`, columns `col .. col+n` → `[n_t, n_b, n]` in visiting order.
    fn gather(&self, src: &[f64], width: usize, col: usize, n: usize) -> Vec<f64> {
        let mut out = Vec::with_capacity(self.times.len() * self.rows.len() * n);
        for &t in &self.times {
            for &b in &self.rows {
                let at = (t * self.batch + b) * width + col;
                out.extend_from_slice(&src[at..at + n]);
            }
        }
        out
    }

    /// The inverse of [`Run::gather`]: `src [n_t, n_b, n]` into `dst [T, B, width]`.
    fn scatter(&self, dst: &mut [f64], width: usize, col: usize, n: usize, src: &[f64]) {
        let mut chunks = src.chunks_exact(n);
        for &t in &self.times {
            for &b in &self.rows {
                let at = (t * self.batch + b) * width + col;
                let chunk = chunks.next().expect("src is [n_t, n_b, n]");
                dst[at..at + n].copy_from_slice(chunk);
            }
        }
    }

    /// `src [B, n]` → `[n_b, n]`.
    fn gather_rows(&self, src: &[f64], n: usize) -> Vec<f64> {
        self.rows
            .iter()
            .flat_map(|&b| &src[b * n..(b + 1) * n])
            .copied()
            .collect()
    }

    /// `src [n_b, n]` into `dst [B, n]`.
    fn scatter_rows(&self, dst: &mut [f64], n: usize, src: &[f64]) {
        for (&b, chunk) in self.rows.iter().zip(src.chunks_exact(n)) {
            dst[b * n..(b + 1) * n].copy_from_slice(chunk);
        }
    }
}

/// A `[layers*D, B, n]` state argument, zeros when absent. `every_cell`: `h`-like (all cells)
/// rather than `c`-like (LSTM only: empty for the others, and refused if given).
fn stacked_state(
    cfg: &RnnConfig,
    name: &str,
    v: Option<&[f64]>,
    every_cell: bool,
    n_states: usize,
    batch: usize,
    n: usize,
) -> Result<Vec<f64>> {
    if !every_cell && cfg.cell() != CellKind::Lstm {
        if v.is_some() {
            return Err(Error::InvalidConfig(format!(
                "`{name}` is given but a {} has no cell state",
                cfg.cell().name()
            )));
        }
        return Ok(Vec::new());
    }
    match v {
        Some(v) => {
            check(name, v, &[n_states, batch, n])?;
            Ok(v.to_vec())
        }
        None => Ok(vec![0.0; n_states * batch * n]),
    }
}

/// Layer-direction `k` of a `[layers*D, B, n]` state.
fn state_slice(v: &[f64], k: usize, batch: usize, n: usize) -> &[f64] {
    &v[k * batch * n..(k + 1) * batch * n]
}

fn state_slice_mut(v: &mut [f64], k: usize, batch: usize, n: usize) -> &mut [f64] {
    &mut v[k * batch * n..(k + 1) * batch * n]
}

/// `v` in `layout` (`[T, B, F]` or `[B, T, F]`) → seq-major `[T, B, F]`.
fn to_seq_major(layout: Layout, v: &[f64], steps: usize, batch: usize, f: usize) -> Vec<f64> {
    match layout {
        Layout::SeqMajor => v.to_vec(),
        Layout::BatchFirst => swap_leading(v, batch, steps, f),
    }
}

/// Seq-major `[T, B, F]` → `layout`.
fn from_seq_major(layout: Layout, v: &[f64], steps: usize, batch: usize, f: usize) -> Vec<f64> {
    match layout {
        Layout::SeqMajor => v.to_vec(),
        Layout::BatchFirst => swap_leading(v, steps, batch, f),
    }
}
