//! The backward schedule (BPTT) of a whole stack, as ops of a training [`crate::gpu::Plan`].
//!
//! One pass, layers top-down, the directions of a layer scheduled together:
//! 1. the caller's `dy`, `dh_n`, `dc_n` are copied into the workspace (zeros where not given);
//!    each direction's `dy` is gathered into its own frame when the layout, the direction or
//!    the concatenation needs it; `carry <- dh_n`, `dc <- dc_n`;
//! 2. for t = T-1 .. 0: one fused `rnn_step_backward` dispatch per direction (per phase):
//!    `dh_t = dy_t + dG_{t+1}·W_hh`, the gate gradients `dG_t` from the saved activations, and
//!    `dc_{t-1}`; a step past a row's length passes `dh`, `dc` through untouched. Where the
//!    device allows 16 storage buffers per stage, a bidirectional layer runs both directions'
//!    dispatch of each phase as one `rnn_step_backward_pair` dispatch (grid z = 2); a
//!    projection's `dh_raw` GEMM between the phases stays per direction;
//! 3. then large GEMMs over all steps at once: `dh0 = dG_0·W_hh`, `dx = dG·W_ih`,
//!    `dW_ih^T = xᵀ·dG`, `dW_hh^T = [h0; y_0..y_{T-2}]ᵀ·dG`, and column sums for the biases;
//! 4. each direction's `dx` scattered (and the two summed) into the gradient of the layer's
//!    input, times the layer below's dropout mask: the next layer's `dy`;
//! 5. `dx`, `dh0`, `dc0` are copied out to the caller's tensors; parameter gradients are
//!    written (or accumulated) in place in the caller's [`crate::gpu::ParamGrads`].
//!
//! Every reduction has a fixed order and no atomics, so two runs give bit-identical
//! gradients. CPU twin: [`crate::cpu::stack_backward`].

use crate::config::{CellKind, Layout, RnnConfig};
use crate::error::Result;
use crate::gpu::dispatch::{Buf, Io, Op, ParamKind};
use crate::gpu::forward::{io_view, reversed, time_map};
use crate::gpu::kernels::column_sum::ColumnSum;
use crate::gpu::kernels::dropout::dropout;
use crate::gpu::kernels::gemm::Gemm;
use crate::gpu::kernels::rearrange::{View, rearrange};
use crate::gpu::kernels::rnn_step::pair_steps;
use crate::gpu::kernels::rnn_step_backward::{
    StepBackParams, StepBackwardBindings, rnn_step_backward,
};
use crate::gpu::plan::{Builder, TapeLayout};

/// What one layer-direction's backward reads and writes.
struct BackJob<'a> {
    cfg: &'a RnnConfig,
    tape: &'a TapeLayout,
    /// `[T, B, S]` upstream gradient of the frame output.
    dy: Buf,
    /// Layer-direction index `l*D + d`: its `[B, ·]` slot in `dh_n`, `dc_n`, `dh0`, `dc0`.
    j: usize,
    /// `[T, B, I_l]` the frame input's gradient out.
    dx: Buf,
}

/// Schedule the backward pass into `b.ops` (parameter gradients overwritten, or with
/// `accumulate` added to).
pub(crate) fn schedule(b: &mut Builder<'_>, tapes: &[TapeLayout], accumulate: bool) -> Result<()> {
    let cfg = b.cfg;
    let (t, bt) = (b.steps, b.batch);
    let (h, i, st) = (cfg.hidden_size(), cfg.input_size(), cfg.state_size());
    let (dirs, layers) = (cfg.num_directions(), cfg.num_layers());
    let ld = layers * dirs;
    let lstm = cfg.cell() == CellKind::Lstm;
    let seq_major = cfg.layout() == Layout::SeqMajor;
    let with_dropout = cfg.dropout() > 0.0 && layers > 1;
    let max_x = b.limits.max_groups;

    let lengths = b.buffer("backward lengths", bt);
    // The tape's first pre-activation buffer ends with the lengths the forward pass ran with.
    let len_at = tapes[0].pre_words + if cfg.peepholes() { 3 * h } else { 0 };
    b.copy(tapes[0].pre, len_at, lengths, 0, bt);
    let dy_in = b.buffer("dy", t * bt * dirs * st);
    b.load(Io::Dy, 0, dy_in, 0, t * bt * dirs * st);
    let dx_out = b.buffer("dx", t * bt * i);
    let dh0 = b.buffer("dh0", ld * bt * st);
    let dc0 = lstm.then(|| b.buffer("dc0", ld * bt * h));

    // The gradient of the current layer's output: the caller's dy, then each layer's input
    // gradient.
    let mut upper = dy_in;
    for l in (0..layers).rev() {
        let lcfg = b.layer_cfgs[l].clone();
        let i_l = lcfg.input_size();
        let last = l + 1 == layers;
        let upper_view = match last {
            true => io_view(b, upper, dirs * st),
            false => View::seq(upper, bt, dirs * st),
        };
        let mut dys = Vec::with_capacity(dirs);
        for d in 0..dirs {
            dys.push(
                match dirs == 1 && !reversed(cfg, d) && (!last || seq_major) {
                    true => upper,
                    false => {
                        let f = b.buffer("frame dy", t * bt * st);
                        b.push(rearrange(
                            View {
                                offset: d * st,
                                ..upper_view
                            },
                            View::seq(f, bt, st),
                            lengths,
                            time_map(cfg, d),
                            (t, bt, st),
                            false,
                            max_x,
                            "dy into its frame",
                        ));
                        f
                    }
                },
            );
        }
        // This layer's input gradient: the caller's dx for the first layer.
        let d_in = match l {
            0 => dx_out,
            _ => b.buffer("layer input grad", t * bt * i_l),
        };
        let in_view = match l {
            0 => io_view(b, d_in, i_l),
            _ => View::seq(d_in, bt, i_l),
        };
        let direct = |d: usize| d == 0 && !reversed(cfg, d) && (l > 0 || seq_major);
        let dxs: Vec<Buf> = (0..dirs)
            .map(|d| match direct(d) {
                true => d_in,
                false => b.buffer("frame dx", t * bt * i_l),
            })
            .collect();
        let jobs: Vec<BackJob<'_>> = (0..dirs)
            .map(|d| BackJob {
                cfg: &lcfg,
                tape: &tapes[l * dirs + d],
                dy: dys[d],
                j: l * dirs + d,
                dx: dxs[d],
            })
            .collect();
        schedule_layer(b, &jobs, dh0, dc0, accumulate)?;
        for (d, &dx) in dxs.iter().enumerate() {
            if !direct(d) {
                b.push(rearrange(
                    View::seq(dx, bt, i_l),
                    in_view,
                    lengths,
                    time_map(cfg, d),
                    (t, bt, i_l),
                    d > 0,
                    max_x,
                    "frame dx into the layer input grad",
                ));
            }
        }
        if with_dropout && l > 0 {
            b.push(dropout(d_in, t * bt * i_l, l - 1, cfg.dropout(), max_x));
        }
        upper = d_in;
    }
    b.store(dx_out, t * bt * i, Io::Dx);
    b.store(dh0, ld * bt * st, Io::Dh0);
    if let Some(dc0) = dc0 {
        b.store(dc0, ld * bt * h, Io::Dc0);
    }
    Ok(())
}

/// One layer: its directions' reverse loops interleaved step by step (phase by phase), then
/// each direction's GEMMs and column sums. Where the device allows it
/// ([`crate::gpu::plan::PlanLimits::pair_directions`]), the two directions of a bidirectional
/// layer run each phase of each reverse step as one dispatch of the paired kernel.
fn schedule_layer(
    b: &mut Builder<'_>,
    jobs: &[BackJob<'_>],
    dh0: Buf,
    dc0: Option<Buf>,
    accumulate: bool,
) -> Result<()> {
    let (t, bt) = (b.steps, b.batch);
    let pair = b.limits.pair_directions;
    let prepared: Vec<BackPrepared> = jobs.iter().map(|job| BackPrepared::new(b, job)).collect();
    for (job, p) in jobs.iter().zip(&prepared) {
        let (h, st) = (job.cfg.hidden_size(), job.cfg.state_size());
        if let Some(dc) = p.dc {
            b.load(Io::DcN, job.j * bt * h, dc, 0, bt * h);
        }
        b.load(Io::DhN, job.j * bt * st, p.carry, 0, bt * st);
    }
    for s in (0..t).rev() {
        let mut steps: Vec<Vec<(Option<Op>, Op)>> = jobs
            .iter()
            .zip(&prepared)
            .map(|(job, p)| p.step_ops(job, bt, t, s))
            .collect();
        if pair && steps.len() == 2 {
            // Phase by phase: both directions' GEMMs before it (the projection's dh_raw), then
            // both directions' step as one dispatch.
            let rev = steps.pop().unwrap_or_default();
            let fwd = steps.pop().unwrap_or_default();
            for ((gf, f), (gr, r)) in fwd.into_iter().zip(rev) {
                b.push_opt(gf);
                b.push_opt(gr);
                b.push(pair_steps([f, r])?);
            }
        } else {
            for ops in steps {
                for (gemm, op) in ops {
                    b.push_opt(gemm);
                    b.push(op);
                }
            }
        }
    }
    for (job, p) in jobs.iter().zip(&prepared) {
        // dh0 = carry + dG_0 · W_hh (the carry is the GRU's z * dh; zero for the others).
        let (h, st) = (job.cfg.hidden_size(), job.cfg.state_size());
        b.copy(p.carry, 0, dh0, job.j * bt * st, bt * st);
        if let (Some(dc), Some(dc0)) = (p.dc, dc0) {
            b.copy(dc, 0, dc0, job.j * bt * h, bt * h);
        }
    }
    for (job, p) in jobs.iter().zip(&prepared) {
        p.schedule_gemms(b, job, dh0, accumulate);
    }
    Ok(())
}

/// A [`BackJob`]'s scratch buffers and step bindings.
struct BackPrepared {
    /// `[B, S]` what reaches h directly rather than through W_hh: dh_n to start with.
    carry: Buf,
    /// `[B, H]` LSTM: dc_n in, dc0 out.
    dc: Option<Buf>,
    len_at: usize,
    d_gates: Buf,
    d_gates_x: Option<Buf>,
    peephole_terms: Option<Buf>,
    dh_hist: Buf,
    dh_raw: Buf,
    d_gates_n: Option<Buf>,
    /// The step's phases and their bindings.
    phases: Vec<(u32, StepBackwardBindings)>,
}

impl BackPrepared {
    fn new(b: &mut Builder<'_>, job: &BackJob<'_>) -> BackPrepared {
        let cfg = job.cfg;
        let (t, bt) = (b.steps, b.batch);
        let (g, h, st) = (cfg.gate_count(), cfg.hidden_size(), cfg.state_size());
        let hg = g * h;
        let j = job.j as u32;
        let gru = cfg.cell() == CellKind::Gru;
        let tp = job.tape;
        let carry = b.buffer("dh carry", bt * st);
        let dc = (cfg.cell() == CellKind::Lstm).then(|| b.buffer("dc", bt * h));
        let len_at = tp.pre_words + if cfg.peepholes() { 3 * h } else { 0 };
        let d_gates = b.buffer("dG", t * bt * hg);
        // A GRU's input side sees dn where its recurrent side sees r * dn; an LSTM with
        // peepholes writes their per-step products (T, B, 3, H) in the same binding.
        let d_gates_x = gru.then(|| b.buffer("dGx", t * bt * hg));
        let peephole_terms = cfg
            .peepholes()
            .then(|| b.buffer("peephole terms", t * bt * 3 * h));
        // With a projection each step is: dh over the P state units (phase 1, into dh_hist),
        // dh_raw = dh · W_hr (a GEMM), then the cell (phase 2, reading dh_raw as its dy).
        let dh_hist = b.buffer("dh history", t * bt * st);
        let dh_raw = b.buffer("dh_raw", bt * h);
        // A GRU with the reset gate before W_hn: phase 3 (dz, dn; dn into dG_n, which the
        // dc binding carries), then phase 4 (dr through r * h_prev).
        let d_gates_n = tp.reset_products.map(|_| b.buffer("dG_n", t * bt * hg));
        let bufs = StepBackwardBindings {
            tape: tp.pre,
            history: (cfg.cell() != CellKind::Rnn).then_some(tp.history),
            w_hh: Buf::Param(j, ParamKind::WHh),
            dy: Some(job.dy),
            d_gates,
            d_gates_x: d_gates_x.or(peephole_terms),
            dc,
            carry,
        };
        let phases = match (cfg.proj_size().is_some(), d_gates_n) {
            (false, Some(dgn)) => {
                let bufs = StepBackwardBindings {
                    dc: Some(dgn),
                    ..bufs
                };
                vec![(3, bufs), (4, bufs)]
            }
            (false, None) => vec![(0, bufs)],
            (true, _) => vec![
                (
                    1,
                    StepBackwardBindings {
                        d_gates_x: Some(dh_hist),
                        ..bufs
                    },
                ),
                (
                    2,
                    StepBackwardBindings {
                        dy: Some(dh_raw),
                        ..bufs
                    },
                ),
            ],
        };
        BackPrepared {
            carry,
            dc,
            len_at,
            d_gates,
            d_gates_x,
            peephole_terms,
            dh_hist,
            dh_raw,
            d_gates_n,
            phases,
        }
    }

    /// Reverse step `s` of `t` (batch `bt`): each phase's dispatch, after the GEMM (if any)
    /// that must run before it.
    fn step_ops(&self, job: &BackJob<'_>, bt: usize, t: usize, s: usize) -> Vec<(Option<Op>, Op)> {
        let cfg = job.cfg;
        let (h, st) = (cfg.hidden_size(), cfg.state_size());
        let params = StepBackParams {
            batch: bt as u32,
            hidden: h as u32,
            t: s as u32,
            steps: t as u32,
            state: st as u32,
            len_at: self.len_at as u32,
            _pad: [0; 2],
        };
        let mut ops = Vec::with_capacity(self.phases.len());
        for (k, (phase, bufs)) in self.phases.iter().enumerate() {
            let mut gemm = None;
            if k == 1 && cfg.proj_size().is_some() {
                // dh_raw = dh_t · W_hr, with W_hr^T stored (H, P).
                gemm = Gemm {
                    trans_b: true,
                    a_row_offset: s * bt,
                    ..Gemm::new(
                        self.dh_hist,
                        Buf::Param(job.j as u32, ParamKind::WHr),
                        self.dh_raw,
                        (bt, h, st),
                    )
                }
                .op("dh_raw (projection backward)");
            }
            ops.push((gemm, rnn_step_backward(cfg, bt, *phase, bufs, params)));
        }
        ops
    }

    /// The GEMMs and column sums over all steps at once. Products with a small output and a
    /// long K (the weight gradients, K = T*B) run split-K ([`Gemm::split_k`]) and tall bias
    /// sums in two levels; both share one scratch buffer for their partial sums (the
    /// dispatches run one after another).
    fn schedule_gemms(&self, b: &mut Builder<'_>, job: &BackJob<'_>, dh0: Buf, accumulate: bool) {
        let cfg = job.cfg;
        let (t, bt) = (b.steps, b.batch);
        let (g, h, i) = (cfg.gate_count(), cfg.hidden_size(), cfg.input_size());
        let hg = g * h;
        let st = cfg.state_size();
        let tp = job.tape;
        let j = job.j as u32;
        let grad = |k| Buf::Grad(j, k);
        let dg = self.d_gates;
        let dgx = self.d_gates_x.unwrap_or(dg);
        let w_hh = Buf::Param(j, ParamKind::WHh);
        let w_ih = Buf::Param(j, ParamKind::WIh);
        let mut products: Vec<(Gemm, &str)> = Vec::new();
        // W_hh^T is stored (S, H*G), i.e. transposed for this product.
        products.push((
            Gemm {
                trans_b: true,
                accumulate: true,
                c_row_offset: job.j * bt,
                ..Gemm::new(dg, w_hh, dh0, (bt, st, hg))
            },
            "dh0 += dG_0 · W_hh",
        ));
        products.push((
            Gemm {
                trans_b: true,
                ..Gemm::new(dgx, w_ih, job.dx, (t * bt, i, hg))
            },
            "dx = dGx · W_ih",
        ));
        products.push((
            Gemm {
                trans_a: true,
                accumulate,
                ..Gemm::new(tp.x, dgx, grad(ParamKind::WIh), (i, hg, t * bt))
            },
            "dW_ih^T = x^T · dGx",
        ));
        match tp.projection {
            // dW_hh^T = [h0; h_0 .. h_{T-2}]^T · dG over the projected states, and
            // dW_hr^T = h_raw^T · dh.
            Some((h_raw, states)) => {
                products.push((
                    Gemm {
                        trans_a: true,
                        accumulate,
                        ..Gemm::new(states, dg, grad(ParamKind::WHh), (st, hg, t * bt))
                    },
                    "dW_hh^T = states^T · dG",
                ));
                products.push((
                    Gemm {
                        trans_a: true,
                        accumulate,
                        ..Gemm::new(h_raw, self.dh_hist, grad(ParamKind::WHr), (h, st, t * bt))
                    },
                    "dW_hr^T = h_raw^T · dh",
                ));
            }
            // dW_hh^T = h0^T · dG_0 + y[0..T-1]^T · dG[1..T].
            None => {
                products.push((
                    Gemm {
                        trans_a: true,
                        accumulate,
                        ..Gemm::new(tp.h0, dg, grad(ParamKind::WHh), (h, hg, bt))
                    },
                    "dW_hh^T = h0^T · dG_0",
                ));
                if t > 1 {
                    products.push((
                        Gemm {
                            trans_a: true,
                            accumulate: true,
                            b_row_offset: bt,
                            ..Gemm::new(tp.y, dg, grad(ParamKind::WHh), (h, hg, (t - 1) * bt))
                        },
                        "dW_hh^T += y^T · dG[1..]",
                    ));
                }
            }
        }
        // GRU reset-before: W_hn multiplied r * h_prev, not h_prev, and dG kept n's columns
        // zero; they come from dG_n.
        if let (Some(rh), Some(dgn)) = (tp.reset_products, self.d_gates_n) {
            products.push((
                Gemm {
                    trans_a: true,
                    accumulate: true,
                    ..Gemm::new(rh, dgn, grad(ParamKind::WHh), (h, hg, t * bt))
                },
                "dW_hh^T += (r*h)^T · dG_n",
            ));
        }
        let rows = t * bt;
        let sum = |a, out, out_offset, n, accumulate| ColumnSum {
            a,
            out,
            out_offset,
            m: rows,
            n,
            accumulate,
            also_at: None,
        };
        let mut sums: Vec<(ColumnSum, &str)> = Vec::new();
        // d b_ih sums the input side, d b_hh the recurrent side (equal but for a GRU's n): one
        // sum writes both when they are the same dG (LSTM, RNN).
        if cfg.bias() {
            let bias = grad(ParamKind::Bias);
            if self.d_gates_x.is_none() {
                let both = ColumnSum {
                    also_at: Some(hg),
                    ..sum(dg, bias, 0, hg, accumulate)
                };
                sums.push((both, "d b_ih and d b_hh"));
            } else {
                sums.push((sum(dgx, bias, 0, hg, accumulate), "d b_ih"));
                sums.push((sum(dg, bias, hg, hg, accumulate), "d b_hh"));
            }
            // ... and d b_hn too (after the sums above, which may overwrite).
            if let Some(dgn) = self.d_gates_n {
                sums.push((sum(dgn, bias, hg, hg, true), "d b_hn"));
            }
        }
        if let Some(terms) = self.peephole_terms {
            sums.push((
                sum(terms, grad(ParamKind::Peephole), 0, 3 * h, accumulate),
                "d peepholes",
            ));
        }
        let words = products
            .iter()
            .map(|(p, _)| p.split_words())
            .chain(sums.iter().map(|(s, _)| s.scratch_words()))
            .max()
            .unwrap_or(0);
        let partials = if words > 0 {
            b.buffer("partial sums", words)
        } else {
            Buf::Unused(0)
        };
        let max_x = b.limits.max_groups;
        for (p, what) in products {
            b.ops.extend(p.split_ops(partials, max_x, what));
        }
        for (s, what) in sums {
            b.ops.extend(s.ops(partials, max_x, what));
        }
    }
}
