//! Property test of invalid input: `proptest` draws calls with wrong shapes and ranks, bad
//! lengths (0, > T, wrong count), tensors of another context, destroyed or unusable buffers,
//! out-of-range indices, inconsistent configurations and non-finite configuration values.
//!
//! Every call must return a typed error (of the variant its defect calls for) or, when the
//! draw happens to be valid, succeed; it must never panic; and after every case the context
//! must hold no GPU error that no call reported (`Context::wait` drains the error sink the
//! context installed on its device and returns the first error found there).
//!
//! CI runs 256 cases of each test from a fixed seed (`PROPTEST_CASES`, `PROPTEST_RNG_SEED`
//! override).

mod common;
#[path = "prop_invalid/settings.rs"]
mod settings;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::gpu::{ctx, own_ctx};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use rnn_wgpu::gpu::clip::{clip_grad_norm, clip_grad_value};
use rnn_wgpu::gpu::optim::{Adam, AdamOptimizer, Sgd, SgdOptimizer};
use rnn_wgpu::{
    Activation, Activations, CellKind, Context, Direction, Error, GpuTensor, Layout, Rnn,
    RnnConfig, RunOptions, State, Weights,
};

const CI_CASES: u32 = 256;
const CI_SEED: u64 = 0x5EED_0013;

fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn runner(salt: u64) -> TestRunner {
    let cases = env("PROPTEST_CASES").unwrap_or(CI_CASES);
    let seed = env("PROPTEST_RNG_SEED").unwrap_or(CI_SEED) ^ salt;
    TestRunner::new(Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        max_shrink_iters: 200,
        ..Config::default()
    })
}

/// What a defect must produce.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    /// The call is valid and must succeed.
    Ok,
    /// A wrong shape, rank, count or length over `T`.
    Shape,
    /// A zero `T`, `B` or length.
    Zero,
    /// A tensor this context cannot use (another context's, wrong usage).
    BadBuffer,
    /// A buffer wgpu itself refuses (destroyed, or another device's behind `from_buffer`,
    /// where the crate cannot see its origin): wgpu's validation error, returned typed.
    Validation,
}

/// `Ok` if `r` is what `want` calls for, else a failure naming the call.
/// How many calls ended in each outcome: Ok, ShapeMismatch, ZeroSize, BadBuffer, Validation,
/// anything else (so a run shows that every kind was met).
static OUTCOMES: [AtomicUsize; 6] = [const { AtomicUsize::new(0) }; 6];

fn tally(r: Result<(), &Error>) {
    let k = match r {
        Ok(()) => 0,
        Err(Error::ShapeMismatch { .. }) => 1,
        Err(Error::ZeroSize(_)) => 2,
        Err(Error::BadBuffer { .. }) => 3,
        Err(Error::Validation { .. }) => 4,
        Err(_) => 5,
    };
    OUTCOMES[k].fetch_add(1, Ordering::Relaxed);
}

fn expect(what: &str, want: Want, r: Result<(), &Error>) -> Result<(), TestCaseError> {
    tally(r);
    match fits(want, r) {
        true => Ok(()),
        false => Err(TestCaseError::fail(format!(
            "{what}: wanted {want:?}, got {r:?}"
        ))),
    }
}

/// Whether `r` is what `want` calls for.
fn fits(want: Want, r: Result<(), &Error>) -> bool {
    matches!(
        (want, &r),
        (Want::Ok, Ok(_))
            | (Want::Shape, Err(Error::ShapeMismatch { .. }))
            | (Want::Zero, Err(Error::ZeroSize(_)))
            | (Want::BadBuffer, Err(Error::BadBuffer { .. }))
            | (
                Want::Validation,
                Err(Error::Validation { .. } | Error::BadBuffer { .. })
            )
    )
}

/// After a case: no GPU error left in the context's sink, and the device is alive.
fn sink_is_clean(ctx: &Context) -> Result<(), TestCaseError> {
    ctx.wait()
        .map_err(|e| TestCaseError::fail(format!("an error left behind in the context: {e}")))
}

/// A small model of every cell and topology the tests draw from, built once.
fn models(ctx: &Context) -> &'static [Rnn] {
    static MODELS: OnceLock<Vec<Rnn>> = OnceLock::new();
    MODELS.get_or_init(|| {
        let cfgs = [
            RnnConfig::lstm(3, 5).num_layers(2),
            RnnConfig::lstm(2, 6)
                .proj_size(4)
                .direction(Direction::Bidirectional)
                .layout(Layout::BatchFirst),
            RnnConfig::gru(4, 3).direction(Direction::Reverse),
            RnnConfig::rnn(2, 4, rnn_wgpu::Nonlinearity::Relu).layout(Layout::BatchFirst),
        ];
        cfgs.into_iter()
            .map(|b| {
                let cfg = b.build().unwrap();
                Rnn::new(ctx, &Weights::init(&cfg, 1)).unwrap()
            })
            .collect()
    })
}

/// A second context: its tensors are foreign to the first.
fn other_ctx() -> &'static Context {
    static OTHER: OnceLock<Context> = OnceLock::new();
    OTHER.get_or_init(|| own_ctx().expect("the adapter opened once already"))
}

/// How a drawn tensor deviates from the shape a call needs.
#[derive(Debug, Clone, Copy)]
enum Defect {
    None,
    /// One dimension changed by `delta` (≠ 0), clamped at 0.
    Dim {
        axis: usize,
        delta: i64,
    },
    /// Rank one lower (the last two dimensions merged) or one higher (a 1 appended).
    Rank {
        higher: bool,
    },
    /// Made on the other context.
    Foreign,
    /// A buffer with `STORAGE` but not `COPY_SRC`.
    NoCopySrc,
    /// The buffer was destroyed before the call.
    Destroyed,
}

fn defect() -> impl Strategy<Value = Defect> {
    prop_oneof![
        6 => Just(Defect::None),
        6 => (0usize..3, prop_oneof![-3i64..=-1, 1i64..=3])
            .prop_map(|(axis, delta)| Defect::Dim { axis, delta }),
        2 => any::<bool>().prop_map(|higher| Defect::Rank { higher }),
        1 => Just(Defect::Foreign),
        1 => Just(Defect::NoCopySrc),
        1 => Just(Defect::Destroyed),
    ]
}

/// `shape` with the shape part of `d` applied.
fn deform(shape: &[usize], d: Defect) -> Vec<usize> {
    let mut s = shape.to_vec();
    match d {
        Defect::Dim { axis, delta } => {
            let a = axis % s.len();
            s[a] = (s[a] as i64 + delta).max(0) as usize;
        }
        Defect::Rank { higher: true } => s.push(1),
        Defect::Rank { higher: false } if s.len() > 1 => {
            let last = s.pop().unwrap();
            *s.last_mut().unwrap() *= last;
        }
        _ => {}
    }
    s
}

/// What a call must return for a tensor of `shape` (made with defect `d`) where it needs
/// `need`.
fn verdict(shape: &[usize], need: &[usize], d: Defect) -> Want {
    if shape != need {
        return Want::Shape;
    }
    match d {
        Defect::Foreign | Defect::NoCopySrc => Want::BadBuffer,
        Defect::Destroyed => Want::Validation,
        _ => Want::Ok,
    }
}

/// A tensor of `shape` with defect `d` (shape defects are already in `shape`).
fn tensor(ctx: &Context, shape: &[usize], d: Defect) -> GpuTensor {
    let n: usize = shape.iter().product();
    let data = common::seeded(n as u64, n, 1.0);
    match d {
        Defect::Foreign => GpuTensor::upload(other_ctx(), &data, shape).unwrap(),
        Defect::NoCopySrc => {
            let buf = ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("storage only"),
                size: (4 * n.max(1)) as u64,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            });
            GpuTensor::from_buffer(buf, shape).unwrap()
        }
        Defect::Destroyed => {
            let t = GpuTensor::upload(ctx, &data, shape).unwrap();
            t.buffer().destroy();
            t
        }
        _ => GpuTensor::upload(ctx, &data, shape).unwrap(),
    }
}

/// The worst of several verdicts: a call with any defect must fail, and with the first
/// defect its checks meet (they run in a fixed order, so only "some error of a defect's kind"
/// is asked when there are several).
fn combine(wants: &[Want]) -> Vec<Want> {
    let bad: Vec<Want> = wants.iter().copied().filter(|&w| w != Want::Ok).collect();
    if bad.is_empty() { vec![Want::Ok] } else { bad }
}

fn expect_any(what: &str, wants: &[Want], r: Result<(), &Error>) -> Result<(), TestCaseError> {
    if wants.iter().any(|&w| fits(w, r)) {
        tally(r);
        return Ok(());
    }
    Err(TestCaseError::fail(format!(
        "{what}: wanted one of {wants:?}, got {r:?}"
    )))
}

/// One drawn forward/backward/session call.
#[derive(Debug, Clone)]
struct CallCase {
    model: usize,
    t: usize,
    b: usize,
    x: Defect,
    h0: Option<Defect>,
    c0: Option<Defect>,
    /// Lengths: `None`, or a vector of some count with entries in `0..=T+2`.
    lengths: Option<Vec<usize>>,
    train: bool,
    dy: Option<Defect>,
    dh_n: Option<Defect>,
    dc_n: Option<Defect>,
    session_rows: usize,
    reset: Vec<bool>,
}

fn call_case() -> impl Strategy<Value = CallCase> {
    (0usize..4, 0usize..5, 0usize..5)
        .prop_flat_map(|(model, t, b)| {
            (
                Just((model, t, b)),
                defect(),
                prop::option::of(defect()),
                prop::option::of(defect()),
                prop::option::weighted(
                    0.5,
                    prop::collection::vec(0..=t + 2, b.saturating_sub(1)..=b + 1),
                ),
                any::<bool>(),
                (
                    prop::option::of(defect()),
                    prop::option::of(defect()),
                    prop::option::of(defect()),
                ),
                (0usize..4, prop::collection::vec(any::<bool>(), 0..5)),
            )
        })
        .prop_map(
            |((model, t, b), x, h0, c0, lengths, train, (dy, dh_n, dc_n), (rows, reset))| {
                CallCase {
                    model,
                    t,
                    b,
                    x,
                    h0,
                    c0,
                    lengths,
                    train,
                    dy,
                    dh_n,
                    dc_n,
                    session_rows: rows,
                    reset,
                }
            },
        )
}

/// Every defect of `lengths` for a pass over `(t, b)`.
fn lengths_verdicts(lengths: Option<&[usize]>, t: usize, b: usize) -> Vec<Want> {
    let Some(l) = lengths else {
        return vec![Want::Ok];
    };
    let mut v = vec![Want::Ok];
    if l.len() != b || l.iter().any(|&n| n > t) {
        v.push(Want::Shape);
    }
    if l.contains(&0) {
        v.push(Want::Zero);
    }
    v
}

fn check_call(ctx: &Context, c: &CallCase) -> Result<(), TestCaseError> {
    let rnn = &models(ctx)[c.model];
    let cfg = rnn.config().clone();
    let (i, h, s) = (cfg.input_size(), cfg.hidden_size(), cfg.state_size());
    let ld = cfg.num_layers() * cfg.num_directions();
    let lstm = cfg.cell() == CellKind::Lstm;
    let batch_first = cfg.layout() == Layout::BatchFirst;
    let seq = |t: usize, b: usize, f: usize| match batch_first {
        true => vec![b, t, f],
        false => vec![t, b, f],
    };

    // x defines the call's T and B (when its rank and feature size are right).
    let x_shape = deform(&seq(c.t, c.b, i), c.x);
    let x_ok = x_shape.len() == 3 && x_shape[2] == i;
    let (t, b) = match (x_ok, batch_first) {
        (false, _) => (c.t, c.b),
        (true, true) => (x_shape[1], x_shape[0]),
        (true, false) => (x_shape[0], x_shape[1]),
    };
    let x_want = match x_ok {
        false => Want::Shape,
        true if t == 0 || b == 0 => Want::Zero,
        true => verdict(&x_shape, &x_shape, c.x),
    };
    let x = tensor(ctx, &x_shape, c.x);
    let mut wants = vec![x_want];
    // States: h0 needs c0 on an LSTM and refuses one elsewhere.
    let state = c.h0.map(|hd| {
        let hs = deform(&[ld, c.b, s], hd);
        wants.push(verdict(&hs, &[ld, b, s], hd));
        let cst = c.c0.map(|cd| {
            let cs = deform(&[ld, c.b, h], cd);
            wants.push(match lstm {
                true => verdict(&cs, &[ld, b, h], cd),
                false => Want::Shape,
            });
            tensor(ctx, &cs, cd)
        });
        if lstm && cst.is_none() {
            wants.push(Want::Shape);
        }
        State {
            h: tensor(ctx, &hs, hd),
            c: cst,
        }
    });
    wants.extend(lengths_verdicts(c.lengths.as_deref(), t, b));
    let wants = combine(&wants);
    let opts = RunOptions {
        lengths: c.lengths.as_deref(),
        ..Default::default()
    };
    if !c.train {
        let r = rnn.forward_with(&x, state.as_ref(), &opts);
        expect_any("forward", &wants, r.as_ref().map(|_| ()))?;
        if let Ok(out) = r {
            out.y
                .download(ctx)
                .map_err(|e| TestCaseError::fail(format!("download: {e}")))?;
        }
    } else {
        let r = rnn.forward_train_with(&x, state.as_ref(), &opts);
        expect_any("forward_train", &wants, r.as_ref().map(|_| ()))?;
        if let Ok((_, tape)) = r {
            let mut bw = Vec::new();
            let mut up = |d: Option<Defect>, need: Vec<usize>, allowed: bool| {
                d.map(|d| {
                    let sh = deform(&need, d);
                    bw.push(match allowed {
                        true => verdict(&sh, &need, d),
                        false => Want::Shape,
                    });
                    tensor(ctx, &sh, d)
                })
            };
            let dy = up(c.dy, seq(t, b, cfg.output_size()), true);
            let dh_n = up(c.dh_n, vec![ld, b, s], true);
            let dc_n = up(c.dc_n, vec![ld, b, h], lstm);
            let r = rnn.backward(&tape, dy.as_ref(), dh_n.as_ref(), dc_n.as_ref());
            expect_any("backward", &combine(&bw), r.as_ref().map(|_| ()))?;
            if let Ok(g) = r {
                g.dx.download(ctx)
                    .map_err(|e| TestCaseError::fail(format!("download: {e}")))?;
            }
        }
    }

    // Sessions: zero rows, reverse directions, wrong x_t and reset masks.
    let r = rnn.session(c.session_rows);
    let want = match (c.session_rows, cfg.direction()) {
        (0, _) => Want::Zero,
        (_, Direction::Forward) => Want::Ok,
        _ => Want::Shape, // checked separately below: Unsupported
    };
    match (&r, want) {
        (Err(Error::Unsupported(_)), Want::Shape) => {}
        _ if want == Want::Shape => {
            return Err(TestCaseError::fail(format!(
                "session of a {:?} model: wanted Unsupported, got {:?}",
                cfg.direction(),
                r.as_ref().map(|_| ())
            )));
        }
        _ => expect("session", want, r.as_ref().map(|_| ()))?,
    }
    if let Ok(mut session) = r {
        let rows = c.session_rows;
        let xs = deform(&[rows, i], c.x);
        let xt = tensor(ctx, &xs, c.x);
        let xw = verdict(&xs, &[rows, i], c.x);
        expect("session step", xw, session.step(&xt).as_ref().map(|_| ()))?;
        let host = vec![0.25f32; xs.iter().product()];
        let hw = if host.len() == rows * i {
            Want::Ok
        } else {
            Want::Shape
        };
        expect(
            "session step_host",
            hw,
            session.step_host(&host).as_ref().map(|_| ()),
        )?;
        let rw = if c.reset.len() == rows {
            Want::Ok
        } else {
            Want::Shape
        };
        expect(
            "session reset",
            rw,
            session.reset(&c.reset).as_ref().copied(),
        )?;
    }
    sink_is_clean(ctx)
}

/// Run `f` for every case `strategy` draws; a panic anywhere is a failure that names it.
fn run_cases<S: Strategy>(
    name: &str,
    salt: u64,
    strategy: S,
    f: impl Fn(&S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let start = std::time::Instant::now();
    let cases = AtomicUsize::new(0);
    let result = runner(salt).run(&strategy, |c| {
        cases.fetch_add(1, Ordering::Relaxed);
        match catch_unwind(AssertUnwindSafe(|| f(&c))) {
            Ok(r) => r,
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Err(TestCaseError::fail(format!("PANIC: {msg}")))
            }
        }
    });
    eprintln!(
        "{name}: {} cases in {:.1} s",
        cases.load(Ordering::Relaxed),
        start.elapsed().as_secs_f64()
    );
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
}

#[test]
fn bad_calls_get_typed_errors_and_leave_no_gpu_error_behind() {
    let Some(ctx) = ctx() else { return };
    run_cases("calls", 1, call_case(), |c| check_call(ctx, c));
    let n: Vec<usize> = OUTCOMES.iter().map(|a| a.load(Ordering::Relaxed)).collect();
    eprintln!(
        "calls: outcomes Ok {}, ShapeMismatch {}, ZeroSize {}, BadBuffer {}, Validation {}, \
         other {}",
        n[0], n[1], n[2], n[3], n[4], n[5]
    );
    // Every kind of outcome was met (the draws are not all rejected at the first check).
    assert!(n[..5].iter().all(|&k| k > 0), "{n:?}");
    // The context still computes after every bad call.
    let rnn = &models(ctx)[0];
    let x = GpuTensor::zeros(ctx, &[2, 1, 3]).unwrap();
    rnn.forward(&x, None).unwrap().y.download(ctx).unwrap();
}
