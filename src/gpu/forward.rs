//! The forward schedule of a whole stack, as ops of a [`crate::gpu::Plan`].
//!
//! Every layer-direction runs in its own *frame*: a plain seq-major `[T, B, ·]` sequence,
//! time-reversed within each row's length for a reverse direction. One pass:
//! 1. the caller's `x` and lengths are copied into the workspace (so its bind groups never
//!    depend on the caller's buffers);
//! 2. for each layer `l`, for each direction `d` (both recorded together):
//!    - the frame input: the layer input itself when it already is one (forward direction,
//!      seq-major), else a `rearrange` gather (batch-first, reversal, padding zeroed);
//!    - `h_carry <- h0[l*D + d]`, `c_state <- c0[l*D + d]` (zeros without a state), the row
//!      lengths beside them;
//!    - for each time chunk: `gx <- x[t0..t0+Tc] · W_ih^T + b_ih` (one GEMM over `Tc*B` rows),
//!      then the `rnn_step` dispatches of both directions interleaved step by step (or, where
//!      the device allows 16 storage buffers per stage, one `rnn_step_pair` dispatch per step
//!      for both); a row past its length holds its state and outputs zeros;
//!    - the frame output scattered into the layer output `[T, B, D*S]` (skipped when the frame
//!      *is* the layer output), `h_n` gathered from each row's last valid step, `c_n` copied;
//!    - in training, dropout on the layer output (all but the last layer);
//! 3. `y`, `h_n`, `c_n` are copied out to the caller's tensors.
//!
//! A streaming step ([`crate::PlanMode::Stream`]) keeps each layer's state in the workspace:
//! no `h0`/`c0` copied in, no `h_n`/`c_n` out. The step reads `h_prev` from `h_carry` and
//! writes its new `h` (with a projection: the projection GEMM writes it) to word 0 of a twin
//! buffer of the same layout, which is the layer's output; the plan's odd list swaps the two
//! (see [`crate::gpu::plan::ResidentState`]), so the state is never copied. `c_state` is
//! updated in place.
//!
//! Time is chunked only so the input projection `gx` (`G*H/I` times larger than `x`) fits the
//! device's storage-binding limit and a bounded scratch budget; with room, one chunk covers all
//! of `T`. CPU twin: [`crate::cpu::stack_forward`].

use crate::config::{CellKind, Direction, GruReset, Layout, RnnConfig};
use crate::error::Result;
use crate::gpu::dispatch::{Buf, Io, Op, ParamKind};
use crate::gpu::kernels::dropout::dropout;
use crate::gpu::kernels::gemm::Gemm;
use crate::gpu::kernels::rearrange::{TimeMap, View, rearrange};
use crate::gpu::kernels::rnn_step::{StepBindings, StepParams, pair_steps, rnn_step, tape_slots};
use crate::gpu::plan::{Builder, ResidentState, TapeLayout};

/// Whether direction `d` of each layer runs backward in time.
pub(crate) fn reversed(cfg: &RnnConfig, d: usize) -> bool {
    match cfg.direction() {
        Direction::Forward => false,
        Direction::Reverse => true,
        Direction::Bidirectional => d == 1,
    }
}

pub(crate) fn time_map(cfg: &RnnConfig, d: usize) -> TimeMap {
    if reversed(cfg, d) {
        TimeMap::Reverse
    } else {
        TimeMap::Same
    }
}

/// A tensor of the model's layout (input or output of the whole stack) as a [`View`].
pub(crate) fn io_view(b: &Builder<'_>, buf: Buf, features: usize) -> View {
    match b.cfg.layout() {
        Layout::SeqMajor => View::seq(buf, b.batch, features),
        Layout::BatchFirst => View {
            buf,
            step: features,
            row: b.steps * features,
            offset: 0,
        },
    }
}

/// One layer-direction's run: its frame, state buffers and (training) tape.
struct Job {
    cfg: RnnConfig,
    /// Layer-direction index `l*D + d`.
    j: usize,
    x: Buf,
    y: Buf,
    c_state: Option<Buf>,
    tape: Option<TapeLayout>,
}

/// Schedule the forward pass into `b.ops`; in training, return where each layer-direction's
/// tape lives.
pub(crate) fn schedule(b: &mut Builder<'_>, train: bool) -> Result<Vec<TapeLayout>> {
    let cfg = b.cfg;
    let (t, bt) = (b.steps, b.batch);
    let (h, st, dirs, layers) = (
        cfg.hidden_size(),
        cfg.state_size(),
        cfg.num_directions(),
        cfg.num_layers(),
    );
    let i = cfg.input_size();
    let lstm = cfg.cell() == CellKind::Lstm;
    let seq_major = cfg.layout() == Layout::SeqMajor;
    let with_dropout = train && cfg.dropout() > 0.0 && layers > 1;
    let max_x = b.limits.max_groups;

    // A one-step inference pass whose first layer reads its input as is (one forward
    // direction) copies the caller's x straight into the step's operand (see `prepare`).
    let x_in = match t == 1 && !train && dirs == 1 && !reversed(cfg, 0) {
        true => Buf::Io(Io::X),
        false => {
            let x_in = b.buffer("x", t * bt * i);
            b.load(Io::X, 0, x_in, 0, t * bt * i);
            x_in
        }
    };
    // Lengths a call may change are copied in; when every row runs T steps they are constants
    // of the workspace.
    let lengths = b.buffer("lengths", bt);
    match b.lengths {
        true => b.load(Io::Lengths, 0, lengths, 0, bt),
        false => b.init(lengths, 0, b.all_steps()),
    }
    // A streaming step's output is its last layer's new state, in that layer's state buffer.
    let y_out = (!b.resident).then(|| b.buffer("y", t * bt * dirs * st));
    // With per-row lengths h_n is gathered here; without, each frame's last step goes straight
    // to the caller's h_n, and each cell state straight to the caller's c_n.
    let h_n = b.lengths.then(|| b.buffer("h_n", layers * dirs * bt * st));

    let mut tapes = Vec::new();
    let mut layer_in = x_in;
    for l in 0..layers {
        let lcfg = b.layer_cfgs[l].clone();
        let i_l = lcfg.input_size();
        let last = l + 1 == layers;
        let dropout_here = with_dropout && !last;
        let in_view = match l {
            0 => io_view(b, layer_in, i_l),
            _ => View::seq(layer_in, bt, i_l),
        };
        let layer_out = match (b.resident, y_out) {
            // A streaming step writes each layer's new h into the state buffer the next step
            // reads (see `ResidentState`): that buffer is the layer's output.
            (true, _) => b.buffer("h_carry (odd steps)", carry_words(b, &lcfg).total),
            (false, Some(y)) if last => y,
            (false, _) => b.buffer("layer output", t * bt * dirs * st),
        };
        let out_view = match last {
            true => io_view(b, layer_out, dirs * st),
            false => View::seq(layer_out, bt, dirs * st),
        };
        // A frame may be the layer's own input or output when no move is needed. The output
        // of a layer with dropout is dropped in place, so its frame stays apart.
        let direct_out =
            dirs == 1 && !reversed(cfg, 0) && (!last || seq_major || t == 1) && !dropout_here;
        let mut jobs = Vec::with_capacity(dirs);
        for d in 0..dirs {
            // One step in batch-first layout, [B, 1, I], is laid out as [1, B, I].
            let direct_in = !reversed(cfg, d) && (l > 0 || seq_major || t == 1);
            let x = match direct_in {
                true => layer_in,
                false => {
                    let f = b.buffer("frame x", t * bt * i_l);
                    b.push(rearrange(
                        in_view,
                        View::seq(f, bt, i_l),
                        lengths,
                        time_map(cfg, d),
                        (t, bt, i_l),
                        false,
                        max_x,
                        "layer input into its frame",
                    ));
                    f
                }
            };
            let y = match direct_out {
                true => layer_out,
                false => b.buffer("frame y", t * bt * st),
            };
            let c_state = lstm.then(|| b.buffer("c_state", bt * h));
            let tape = train.then(|| tape_buffers(b, &lcfg, x, y));
            jobs.push(Job {
                cfg: lcfg.clone(),
                j: l * dirs + d,
                x,
                y,
                c_state,
                tape,
            });
        }
        schedule_layer(b, &jobs, lengths)?;
        for (d, job) in jobs.iter().enumerate() {
            if !direct_out {
                b.push(rearrange(
                    View::seq(job.y, bt, st),
                    View {
                        offset: d * st,
                        ..out_view
                    },
                    lengths,
                    time_map(cfg, d),
                    (t, bt, st),
                    false,
                    max_x,
                    "frame output into the layer output",
                ));
            }
            if let Some(h_n) = h_n {
                b.push(rearrange(
                    View::seq(job.y, bt, st),
                    View {
                        buf: h_n,
                        step: 0,
                        row: st,
                        offset: job.j * bt * st,
                    },
                    lengths,
                    TimeMap::Last,
                    (1, bt, st),
                    false,
                    max_x,
                    "h_n from each row's last step",
                ));
            } else if !b.resident {
                // Every row runs all T steps: h_n is the frame's last step.
                let dst = Buf::Io(Io::HN);
                b.copy(job.y, (t - 1) * bt * st, dst, job.j * bt * st, bt * st);
            }
        }
        if dropout_here {
            let n = t * bt * dirs * st;
            b.push(dropout(layer_out, n, l, cfg.dropout(), max_x));
        }
        if lstm && !b.resident {
            for job in &jobs {
                let c = job.c_state.expect("LSTM");
                b.copy(c, 0, Buf::Io(Io::CN), job.j * bt * h, bt * h);
            }
        }
        tapes.extend(jobs.into_iter().filter_map(|j| j.tape));
        layer_in = layer_out;
    }
    // `layer_in` is now the last layer's output.
    b.store(layer_in, t * bt * dirs * st, Io::Y);
    if let Some(h_n) = h_n {
        b.store(h_n, layers * dirs * bt * st, Io::HN);
    }
    Ok(tapes)
}

/// The tape buffers of one layer-direction whose frame is `(x, y)`.
fn tape_buffers(b: &mut Builder<'_>, cfg: &RnnConfig, x: Buf, y: Buf) -> TapeLayout {
    let (t, bt) = (b.steps, b.batch);
    let h = cfg.hidden_size();
    let pre_words = t * bt * h * tape_slots(cfg);
    let peep = if cfg.peepholes() { 3 * h } else { 0 };
    TapeLayout {
        x,
        y,
        pre: b.buffer("tape", pre_words + peep + bt),
        pre_words,
        history: match cfg.cell() {
            CellKind::Rnn => b.buffer("tape history (unused)", 1),
            _ => b.buffer("tape history", (t + 1) * bt * h),
        },
        h0: b.buffer("tape h0", bt * cfg.state_size()),
        projection: cfg.proj_size().map(|p| {
            (
                b.buffer("tape h_raw", t * bt * h),
                b.buffer("tape projected states", (t + 1) * bt * p),
            )
        }),
        reset_products: (cfg.gru_reset() == GruReset::Before)
            .then(|| b.buffer("tape r*h", t * bt * h)),
    }
}

/// One layer's directions, interleaved step by step so that their dispatches are independent
/// neighbours; where the device allows it ([`crate::gpu::plan::PlanLimits::pair_directions`]), the two
/// directions of a bidirectional layer run each step as one dispatch of the paired kernel.
fn schedule_layer(b: &mut Builder<'_>, jobs: &[Job], lengths: Buf) -> Result<()> {
    let (t_all, bt, chunk) = (b.steps, b.batch, b.chunk);
    let pair = b.limits.pair_directions;
    let prepared: Vec<Prepared> = jobs.iter().map(|job| prepare(b, job, lengths)).collect();
    for t0 in (0..t_all).step_by(chunk) {
        let tc = chunk.min(t_all - t0);
        for (job, p) in jobs.iter().zip(&prepared) {
            let h = job.cfg.hidden_size();
            if t0 > 0 && p.h_raw.is_none() {
                b.copy(job.y, (t0 - 1) * bt * h, p.h_carry, 0, bt * h);
            }
        }
        for (job, p) in jobs.iter().zip(&prepared) {
            let cfg = &job.cfg;
            let (g, h, i) = (cfg.gate_count(), cfg.hidden_size(), cfg.input_size());
            let j = job.j as u32;
            if p.bindings.fused_input {
                continue;
            }
            // input_projection: gx = x[t0..t0+tc] · W_ih^T + b_ih (the step adds b_hh, which a
            // GRU's n gate needs inside r * (...)).
            let op = Gemm {
                bias: cfg.bias().then_some((Buf::Param(j, ParamKind::Bias), 1)),
                a_row_offset: t0 * bt,
                ..Gemm::new(
                    job.x,
                    Buf::Param(j, ParamKind::WIh),
                    p.gx,
                    (tc * bt, g * h, i),
                )
            }
            .op("input projection");
            b.push_opt(op);
        }
        for t in t0..t0 + tc {
            // Each direction's dispatches of step t (a GRU with the reset gate before the
            // product needs two per step, one per phase), then its projection, if any.
            let mut steps: Vec<Vec<Op>> = jobs
                .iter()
                .zip(&prepared)
                .map(|(job, p)| {
                    let params = step_params(job, p, t, chunk, t_all, bt);
                    let phases: &[u32] = match job.cfg.gru_reset() {
                        GruReset::After => &[0],
                        GruReset::Before => &[1, 2],
                    };
                    phases
                        .iter()
                        .map(|&phase| rnn_step(&job.cfg, bt, phase, &p.bindings, params))
                        .collect()
                })
                .collect();
            if pair && steps.len() == 2 {
                // Both directions, phase by phase, one dispatch each.
                let rev = steps.pop().unwrap_or_default();
                let fwd = steps.pop().unwrap_or_default();
                for (f, r) in fwd.into_iter().zip(rev) {
                    b.push(pair_steps([f, r])?);
                }
                for (job, p) in jobs.iter().zip(&prepared) {
                    projection(b, job, p, t);
                }
            } else {
                for ((job, p), ops) in jobs.iter().zip(&prepared).zip(steps) {
                    ops.into_iter().for_each(|op| b.push(op));
                    projection(b, job, p, t);
                }
            }
        }
    }
    for (job, p) in jobs.iter().zip(&prepared) {
        if p.h_raw.is_none() || b.resident {
            continue;
        }
        let st = job.cfg.state_size();
        b.copy(p.h_carry, bt * st, job.y, 0, t_all * bt * st);
        if let Some((_, states)) = job.tape.as_ref().and_then(|tp| tp.projection) {
            b.copy(p.h_carry, 0, states, 0, (t_all + 1) * bt * st);
        }
    }
    if b.resident {
        // A streaming step keeps its state here: it read h_prev from h_carry and wrote the new
        // h to word 0 of its output, the twin buffer the next step reads; c_state is updated
        // in place.
        for (job, p) in jobs.iter().zip(&prepared) {
            b.resident_state.push(ResidentState {
                h: p.h_carry,
                twin: job.y,
                c: job.c_state,
                x_at: (job.j == 0).then_some(p.x_at),
            });
        }
    }
    Ok(())
}

/// The uniforms of `job`'s step `t` (the same for both directions of a layer: they share the
/// configuration, and their `h_carry` buffers the same layout).
fn step_params(
    job: &Job,
    p: &Prepared,
    t: usize,
    chunk: usize,
    t_all: usize,
    bt: usize,
) -> StepParams {
    let cfg = &job.cfg;
    StepParams {
        batch: bt as u32,
        hidden: cfg.hidden_size() as u32,
        t_local: (t % chunk) as u32,
        t_global: t as u32,
        state: cfg.state_size() as u32,
        steps: t_all as u32,
        len_at: p.len_at as u32,
        input: cfg.input_size() as u32,
        x_at: p.x_at as u32,
        _pad: [0; 2],
    }
}

/// With a projection: `h_t = W_hr h_raw_t`, into slot `t + 1` of `job`'s projected states
/// (a streaming step: into slot 0 of the state buffer the next step reads).
fn projection(b: &mut Builder<'_>, job: &Job, p: &Prepared, t: usize) {
    let Some(h_raw) = p.h_raw else { return };
    let (h, st, bt) = (job.cfg.hidden_size(), job.cfg.state_size(), b.batch);
    let (c, c_at) = match b.resident {
        true => (job.y, 0),
        false => (p.h_carry, (t + 1) * bt),
    };
    let op = Gemm {
        a_row_offset: t * bt,
        c_row_offset: c_at,
        ..Gemm::new(
            h_raw,
            Buf::Param(job.j as u32, ParamKind::WHr),
            c,
            (bt, st, h),
        )
    }
    .op("projection");
    b.push_opt(op);
}

/// A job's scratch buffers and step bindings.
struct Prepared {
    h_carry: Buf,
    h_raw: Option<Buf>,
    len_at: usize,
    /// Where `x_t` sits in `h_carry` when the step fuses its input projection.
    x_at: usize,
    gx: Buf,
    bindings: StepBindings,
}

/// Where things sit in a layer-direction's `h_carry` (binding 3 of the step), in words.
struct CarryWords {
    /// `h [B, H]`, or with a projection every projected state `[T + 1, B, P]`.
    state_words: usize,
    /// The row lengths, after the state and the peepholes.
    len_at: usize,
    /// A one-step pass's `x_t [B, I]`, after the lengths.
    x_at: usize,
    total: usize,
}

fn carry_words(b: &Builder<'_>, cfg: &RnnConfig) -> CarryWords {
    let (t, bt, h, st) = (b.steps, b.batch, cfg.hidden_size(), cfg.state_size());
    let state_words = match cfg.proj_size() {
        Some(_) => (t + 1) * bt * st,
        None => bt * h,
    };
    let len_at = state_words + if cfg.peepholes() { 3 * h } else { 0 };
    let x_at = len_at + bt;
    let fused = t == 1;
    CarryWords {
        state_words,
        len_at,
        x_at,
        total: x_at + if fused { bt * cfg.input_size() } else { 0 },
    }
}

/// A job's scratch buffers; schedules its initial copies.
fn prepare(b: &mut Builder<'_>, job: &Job, lengths: Buf) -> Prepared {
    let cfg = &job.cfg;
    let (g, h, st) = (cfg.gate_count(), cfg.hidden_size(), cfg.state_size());
    let (t_all, bt, j) = (b.steps, b.batch, job.j);
    let proj = cfg.proj_size().is_some();
    let peep = cfg.peepholes().then_some(3 * h);
    let tape = job.tape.as_ref();
    // Binding 3 of the step: h before a chunk's first step, or with a projection every
    // projected state [h0; h_0 .. h_{T-1}] (T + 1, B, P); then the peepholes, then the row
    // lengths.
    let CarryWords {
        state_words,
        len_at,
        x_at,
        total,
    } = carry_words(b, cfg);
    // A one-step pass fuses its input projection into the step, which reads x_t after the
    // lengths.
    let fused = t_all == 1;
    let i = cfg.input_size();
    let h_carry = b.buffer("h_carry", total);
    if fused {
        b.copy(job.x, 0, h_carry, x_at, bt * i);
    }
    // A streaming step finds h where the previous step left it (zeros at first).
    if !b.resident {
        b.load(Io::H0, j * bt * st, h_carry, 0, bt * st);
    }
    if let Some(tp) = tape {
        b.load(Io::H0, j * bt * st, tp.h0, 0, bt * st);
    }
    let peephole = Buf::Param(j as u32, ParamKind::Peephole);
    if let Some(n) = peep {
        b.copy(peephole, 0, h_carry, state_words, n);
    }
    match b.lengths {
        true => b.copy(lengths, 0, h_carry, len_at, bt),
        false => b.init(h_carry, len_at, b.all_steps()),
    }
    // A streaming step's other state buffer (its output) has the same constants.
    if b.resident {
        b.init(job.y, len_at, b.all_steps());
    }
    // The tape carries the peepholes and the lengths after the saved pre-activations, where
    // the step-backward kernel reads them.
    if let Some(tp) = tape {
        if let Some(n) = peep {
            b.copy(peephole, 0, tp.pre, tp.pre_words, n);
        }
        let at = tp.pre_words + peep.unwrap_or(0);
        match b.lengths {
            true => b.copy(lengths, 0, tp.pre, at, bt),
            false => b.init(tp.pre, at, b.all_steps()),
        }
    }
    // With a projection the step writes h_raw = o * h(c) (T, B, H) for the projection GEMM
    // (and for backward, through the tape).
    let h_raw = match (proj, tape.and_then(|tp| tp.projection)) {
        (false, _) => None,
        (true, Some((r, _))) => Some(r),
        (true, None) => Some(b.buffer("h_raw", t_all * bt * h)),
    };
    // GRU reset-before: r * h_prev of every step, the second product's input.
    let reset_products = match (cfg.gru_reset(), tape.and_then(|tp| tp.reset_products)) {
        (GruReset::After, _) => None,
        (GruReset::Before, Some(r)) => Some(r),
        (GruReset::Before, None) => Some(b.buffer("r*h", t_all * bt * h)),
    };
    if let (Some(c), false) = (job.c_state, b.resident) {
        b.load(Io::C0, j * bt * h, c, 0, bt * h);
    }
    // The tape's history starts with c0 (LSTM) or h0 (GRU).
    if let Some(tp) = tape {
        match (cfg.cell(), job.c_state) {
            (CellKind::Lstm, Some(c)) => b.copy(c, 0, tp.history, 0, bt * h),
            (CellKind::Gru, _) => b.copy(h_carry, 0, tp.history, 0, bt * h),
            _ => {}
        }
    }
    let gx = match fused {
        true => Buf::Param(j as u32, ParamKind::WIh),
        false => b.buffer("gx", b.chunk * bt * g * h),
    };
    let bindings = StepBindings {
        gx,
        fused_input: fused,
        w_hh: Buf::Param(j as u32, ParamKind::WHh),
        h_carry,
        bias: cfg.bias().then_some(Buf::Param(j as u32, ParamKind::Bias)),
        y: h_raw.unwrap_or(job.y),
        c_state: job.c_state.or(reset_products),
        tape: tape.map(|tp| (tp.pre, tp.history)),
    };
    Prepared {
        h_carry,
        h_raw,
        len_at,
        x_at,
        gx,
        bindings,
    }
}
