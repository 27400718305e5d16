//! Optimiser steps on the GPU (`gpu::optim`) against the f64 CPU reference (`cpu::optim`) and
//! against `torch.optim.SGD` / `torch.optim.Adam` (fixtures written by
//! `scripts/gen_optim_fixtures.py`).

mod common;

use common::fixtures::OptimFixture;
use common::gpu::{ctx, limited};
use common::{assert_close, max_abs_diff, seeded};
use rnn_wgpu::cpu::optim::{self as cpu, AdamState, SgdState};
use rnn_wgpu::cpu::to_f64;
use rnn_wgpu::gpu::clip;
use rnn_wgpu::gpu::optim::{Adam, AdamOptimizer, Sgd, SgdOptimizer};
use rnn_wgpu::{Context, Error, GpuTensor};

/// Parameter shapes of odd sizes: 1, 7, 1000, 70000 (274 workgroups) and 105 elements.
const SHAPES: &[&[usize]] = &[&[1], &[7], &[10, 100], &[70000], &[3, 5, 7]];
const STEPS: usize = 5;

/// GPU against the f64 reference over STEPS steps, parameters and gradients in [-1, 1].
///
/// Every step the GPU rounds the new parameter to f32 (half an ulp of |p| <= ~2: 1.2e-7) and
/// computes the update with 3 to 9 f32 operations on quantities no larger than that (lr *
/// momentum buffer <= lr / (1 - momentum) = 1 for the largest case here, Adam's update is
/// at most lr * ~3), each off by half an ulp: together under 4e-7 per step. Errors carried in
/// the momentum buffer or Adam's moments enter later steps scaled by lr (< 1), so they do not
/// grow faster than the step count: 5 steps x 4e-7 = 2e-6. Observed on llvmpipe: at most
/// 2.8e-7 for SGD and 6.9e-7 for Adam with weight decay (parameters that grow past 1, where an
/// ulp is 2.4e-7); any wrong rule or index gives errors of order lr * |g| >= 1e-3.
const ATOL: f64 = 2e-6;
const RTOL: f64 = 0.0;

/// Moments and momentum buffers are sums of gradients (|g| <= 1, plus weight decay * |p|)
/// weighted by at most 1/(1 - momentum) = 10 in total: their f32 rounding stays within
/// 10 * STEPS ulps of 1 (3e-6), and the second moment (g^2 scale) far less.
const STATE_ATOL: f64 = 3e-6;

struct Problem {
    shapes: Vec<Vec<usize>>,
    params: Vec<Vec<f32>>,
    /// `[step][tensor]`.
    grads: Vec<Vec<Vec<f32>>>,
}

impl Problem {
    fn seeded(seed: u64, shapes: &[&[usize]], steps: usize) -> Problem {
        let numel = |s: &[usize]| s.iter().product::<usize>();
        Problem {
            shapes: shapes.iter().map(|s| s.to_vec()).collect(),
            params: shapes
                .iter()
                .enumerate()
                .map(|(j, s)| seeded(seed * 1000 + j as u64, numel(s), 1.0))
                .collect(),
            grads: (0..steps)
                .map(|t| {
                    shapes
                        .iter()
                        .enumerate()
                        .map(|(j, s)| {
                            seeded(seed * 1000 + 100 * (t + 1) as u64 + j as u64, numel(s), 1.0)
                        })
                        .collect()
                })
                .collect(),
        }
    }

    fn upload_params(&self, ctx: &Context) -> Vec<GpuTensor> {
        upload(ctx, &self.params, &self.shapes)
    }
}

fn upload(ctx: &Context, data: &[Vec<f32>], shapes: &[Vec<usize>]) -> Vec<GpuTensor> {
    data.iter()
        .zip(shapes)
        .map(|(d, s)| GpuTensor::upload(ctx, d, s).unwrap())
        .collect()
}

fn refs(ts: &[GpuTensor]) -> Vec<&GpuTensor> {
    ts.iter().collect()
}

fn widen(v: &[Vec<f32>]) -> Vec<Vec<f64>> {
    v.iter().map(|x| to_f64(x)).collect()
}

fn download(ctx: &Context, ts: &[GpuTensor]) -> Vec<Vec<f32>> {
    ts.iter().map(|t| t.download(ctx).unwrap()).collect()
}

/// Either optimiser, for tests that run both.
enum Gpu {
    Sgd(SgdOptimizer),
    Adam(AdamOptimizer),
}

#[derive(Clone, Copy, Debug)]
enum Config {
    Sgd(Sgd),
    Adam(Adam),
}

impl Gpu {
    fn new(ctx: &Context, config: Config, params: &[&GpuTensor]) -> rnn_wgpu::Result<Gpu> {
        Ok(match config {
            Config::Sgd(c) => Gpu::Sgd(SgdOptimizer::new(ctx, c, params)?),
            Config::Adam(c) => Gpu::Adam(AdamOptimizer::new(ctx, c, params)?),
        })
    }

    fn step(&mut self, ctx: &Context, p: &[&GpuTensor], g: &[&GpuTensor]) -> rnn_wgpu::Result<()> {
        match self {
            Gpu::Sgd(o) => o.step(ctx, p, g),
            Gpu::Adam(o) => o.step(ctx, p, g),
        }
    }

    /// Momentum buffers, or Adam's two moments.
    fn state(&self) -> Vec<&[GpuTensor]> {
        match self {
            Gpu::Sgd(o) if o.momentum_buffers().is_empty() => vec![],
            Gpu::Sgd(o) => vec![o.momentum_buffers()],
            Gpu::Adam(o) => vec![o.exp_avg(), o.exp_avg_sq()],
        }
    }
}

/// The f64 reference's state, for either optimiser.
enum Reference {
    Sgd(Sgd, SgdState),
    Adam(Adam, AdamState),
}

impl Reference {
    fn new(config: Config) -> Reference {
        match config {
            Config::Sgd(c) => Reference::Sgd(c, SgdState::default()),
            Config::Adam(c) => Reference::Adam(c, AdamState::default()),
        }
    }

    fn step(&mut self, params: &mut [Vec<f64>], grads: &[Vec<f64>]) -> rnn_wgpu::Result<()> {
        match self {
            Reference::Sgd(c, s) => cpu::sgd_step(c, s, params, grads),
            Reference::Adam(c, s) => cpu::adam_step(c, s, params, grads),
        }
    }

    fn state(&self) -> Vec<&[Vec<f64>]> {
        match self {
            Reference::Sgd(_, s) if s.momentum_buffers.is_empty() => vec![],
            Reference::Sgd(_, s) => vec![&s.momentum_buffers],
            Reference::Adam(_, s) => vec![&s.exp_avg, &s.exp_avg_sq],
        }
    }
}

/// Run `config` on the GPU and on the reference for every step of `problem`; compare the
/// parameters after every step and the state at the end. Returns the worst parameter error.
fn check_against_reference(ctx: &Context, name: &str, config: Config, problem: &Problem) -> f64 {
    let params = problem.upload_params(ctx);
    let mut gpu = Gpu::new(ctx, config, &refs(&params)).unwrap();
    let mut reference = Reference::new(config);
    let mut want = widen(&problem.params);
    let mut worst = 0.0f64;
    for (t, grads) in problem.grads.iter().enumerate() {
        let g = upload(ctx, grads, &problem.shapes);
        gpu.step(ctx, &refs(&params), &refs(&g)).unwrap();
        reference.step(&mut want, &widen(grads)).unwrap();
        for (j, (got, w)) in download(ctx, &params).iter().zip(&want).enumerate() {
            assert_close(&format!("{name}: step {t}, param {j}"), got, w, ATOL, RTOL);
            worst = worst.max(max_abs_diff(got, w));
        }
    }
    let (gs, rs) = (gpu.state(), reference.state());
    assert_eq!(gs.len(), rs.len(), "{name}: state tensors");
    for (k, (g, r)) in gs.iter().zip(&rs).enumerate() {
        for (j, (t, w)) in g.iter().zip(r.iter()).enumerate() {
            let got = t.download(ctx).unwrap();
            assert_close(
                &format!("{name}: state {k} of param {j}"),
                &got,
                w,
                STATE_ATOL,
                0.0,
            );
        }
    }
    eprintln!(
        "{name}: worst parameter error over {} steps {worst:.2e}",
        problem.grads.len()
    );
    worst
}

#[test]
fn sgd_matches_reference() {
    let Some(ctx) = ctx() else { return };
    let problem = Problem::seeded(1, SHAPES, STEPS);
    let cases = [
        ("plain", Sgd::new(0.1)),
        (
            "momentum + dampening",
            Sgd {
                lr: 0.1,
                momentum: 0.9,
                dampening: 0.1,
                ..Sgd::default()
            },
        ),
        (
            "nesterov + weight decay",
            Sgd {
                lr: 0.05,
                momentum: 0.8,
                weight_decay: 0.01,
                nesterov: true,
                ..Sgd::default()
            },
        ),
        (
            "momentum + weight decay",
            Sgd {
                lr: 0.2,
                momentum: 0.5,
                weight_decay: 0.3,
                ..Sgd::default()
            },
        ),
        (
            "weight decay only",
            Sgd {
                lr: 0.1,
                weight_decay: 0.05,
                ..Sgd::default()
            },
        ),
    ];
    for (name, config) in cases {
        check_against_reference(ctx, &format!("sgd {name}"), Config::Sgd(config), &problem);
    }
}

#[test]
fn adam_matches_reference() {
    let Some(ctx) = ctx() else { return };
    let mut problem = Problem::seeded(2, SHAPES, STEPS);
    // Tensor 1's gradients near 1e-7: sqrt(v) is then comparable to eps = 1e-8 .. 1e-6, so the
    // check sees where eps enters the denominator.
    for grads in &mut problem.grads {
        grads[1].iter_mut().for_each(|g| *g *= 1e-7);
    }
    let cases = [
        ("defaults", Adam::new(1e-2)),
        (
            "weight decay",
            Adam {
                lr: 2e-2,
                beta1: 0.8,
                beta2: 0.99,
                eps: 1e-6,
                weight_decay: 0.1,
            },
        ),
        (
            "beta1 = 0",
            Adam {
                beta1: 0.0,
                ..Adam::new(1e-2)
            },
        ),
    ];
    for (name, config) in cases {
        check_against_reference(ctx, &format!("adam {name}"), Config::Adam(config), &problem);
    }
}

#[test]
fn steps_are_one_submission_each_and_deterministic() {
    let Some(shared) = ctx() else { return };
    // A private context: other tests in this binary submit concurrently on the shared one.
    let ctx = &Context::from_device(shared.device().clone(), shared.queue().clone());
    let problem = Problem::seeded(3, SHAPES, 3);
    let mut runs = Vec::new();
    for config in [
        Config::Sgd(Sgd {
            momentum: 0.9,
            ..Sgd::new(0.1)
        }),
        Config::Adam(Adam::default()),
    ] {
        for _ in 0..2 {
            let params = problem.upload_params(ctx);
            let mut opt = Gpu::new(ctx, config, &refs(&params)).unwrap();
            let grads: Vec<Vec<GpuTensor>> = problem
                .grads
                .iter()
                .map(|g| upload(ctx, g, &problem.shapes))
                .collect();
            for g in &grads {
                let before = ctx.submission_count();
                opt.step(ctx, &refs(&params), &refs(g)).unwrap();
                assert_eq!(ctx.submission_count() - before, 1, "{config:?}");
            }
            runs.push(download(ctx, &params));
        }
    }
    assert_eq!(runs[0], runs[1], "SGD: two runs differ");
    assert_eq!(runs[2], runs[3], "Adam: two runs differ");
}

#[test]
fn a_whole_update_records_into_one_encoder() {
    // clip_grad_norm then an Adam step, recorded together and submitted once: the step reads
    // the gradients the clip wrote, and the norm never visits the host.
    let Some(ctx) = ctx() else { return };
    let problem = Problem::seeded(4, SHAPES, 2);
    let config = Adam {
        weight_decay: 0.01,
        ..Adam::new(1e-2)
    };
    let params = problem.upload_params(ctx);
    let mut opt = AdamOptimizer::new(ctx, config, &refs(&params)).unwrap();
    let mut state = AdamState::default();
    let mut want = widen(&problem.params);
    let norm = GpuTensor::zeros(ctx, &[1]).unwrap();
    for grads in &problem.grads {
        let g = upload(ctx, grads, &problem.shapes);
        let mut enc = ctx
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        clip::record_clip_grad_norm(ctx, &mut enc, &refs(&g), 10.0, &norm).unwrap();
        opt.record_step(ctx, &mut enc, &refs(&params), &refs(&g))
            .unwrap();
        ctx.submit(enc.finish()).unwrap();

        let mut wg = widen(grads);
        cpu::clip_grad_norm(&mut wg, 10.0).unwrap();
        cpu::adam_step(&config, &mut state, &mut want, &wg).unwrap();
    }
    assert_eq!(opt.steps(), 2);
    for (j, (got, w)) in download(ctx, &params).iter().zip(&want).enumerate() {
        assert_close(&format!("param {j}"), got, w, ATOL, RTOL);
    }
}

#[test]
fn learning_rate_changes_apply_to_the_next_step() {
    let Some(ctx) = ctx() else { return };
    let p = GpuTensor::upload(ctx, &[1.0, -2.0], &[2]).unwrap();
    let g = GpuTensor::upload(ctx, &[0.5, 0.25], &[2]).unwrap();
    let mut opt = SgdOptimizer::new(ctx, Sgd::new(1.0), &[&p]).unwrap();
    opt.step(ctx, &[&p], &[&g]).unwrap();
    opt.set_lr(2.0).unwrap();
    opt.step(ctx, &[&p], &[&g]).unwrap();
    // 1 - 0.5 - 1.0 and -2 - 0.25 - 0.5: exact in f32.
    assert_eq!(p.download(ctx).unwrap(), [-0.5, -2.75]);
    assert!(matches!(opt.set_lr(-1.0), Err(Error::InvalidConfig(_))));
    assert_eq!(opt.config().lr, 2.0);
}

#[test]
fn zero_element_parameters_are_skipped() {
    let Some(ctx) = ctx() else { return };
    let empty = GpuTensor::zeros(ctx, &[0, 4]).unwrap();
    let empty_grad = GpuTensor::zeros(ctx, &[0, 4]).unwrap();
    let p = GpuTensor::upload(ctx, &[1.0], &[1]).unwrap();
    let g = GpuTensor::upload(ctx, &[1.0], &[1]).unwrap();
    let mut opt = AdamOptimizer::new(ctx, Adam::new(0.5), &[&empty, &p]).unwrap();
    opt.step(ctx, &[&empty, &p], &[&empty_grad, &g]).unwrap();
    // First Adam step: m / denom = g / (|g| + eps), so p moves by lr to within eps.
    let got = p.download(ctx).unwrap()[0];
    assert!((got - 0.5).abs() < 1e-6, "{got}");
}

#[test]
fn grids_wrap_into_two_dimensions_under_low_limits() {
    // 20 workgroups per dimension: the 70000-element parameter needs 274 (a 20 x 14 grid).
    let Some(ctx) = limited(|l| l.max_compute_workgroups_per_dimension = 20) else {
        return;
    };
    let problem = Problem::seeded(5, SHAPES, 2);
    let sgd = Sgd {
        momentum: 0.9,
        nesterov: true,
        ..Sgd::new(0.1)
    };
    check_against_reference(&ctx, "sgd, low limits", Config::Sgd(sgd), &problem);
    check_against_reference(
        &ctx,
        "adam, low limits",
        Config::Adam(Adam::new(1e-2)),
        &problem,
    );
    let big = GpuTensor::zeros(&ctx, &[20 * 20 * 256 + 1]).unwrap();
    let big_grad = GpuTensor::zeros(&ctx, &[20 * 20 * 256 + 1]).unwrap();
    let mut opt = SgdOptimizer::new(&ctx, Sgd::new(0.1), &[&big]).unwrap();
    match opt.step(&ctx, &[&big], &[&big_grad]) {
        Err(Error::LimitExceeded { limit, .. }) => {
            assert_eq!(limit, "max_compute_workgroups_per_dimension")
        }
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
    assert_eq!(opt.steps(), 0, "a failed step does not count");
}

#[test]
fn bad_hyper_parameters_are_rejected() {
    let bad_sgd = [
        Sgd::new(-0.1),
        Sgd::new(f64::NAN),
        Sgd::new(f64::INFINITY),
        Sgd {
            momentum: -0.5,
            ..Sgd::default()
        },
        Sgd {
            weight_decay: -1e-4,
            ..Sgd::default()
        },
        Sgd {
            dampening: f64::NAN,
            ..Sgd::default()
        },
        // torch: "Nesterov momentum requires a momentum and zero dampening".
        Sgd {
            nesterov: true,
            ..Sgd::default()
        },
        Sgd {
            nesterov: true,
            momentum: 0.9,
            dampening: 0.1,
            ..Sgd::default()
        },
    ];
    let bad_adam = [
        Adam::new(-1e-3),
        Adam {
            beta1: 1.0,
            ..Adam::default()
        },
        Adam {
            beta1: -0.1,
            ..Adam::default()
        },
        Adam {
            beta2: 1.0,
            ..Adam::default()
        },
        Adam {
            beta2: f64::NAN,
            ..Adam::default()
        },
        // torch accepts eps = 0; it divides 0 by 0 for a gradient that has only been 0.
        Adam {
            eps: 0.0,
            ..Adam::default()
        },
        Adam {
            eps: -1e-8,
            ..Adam::default()
        },
        Adam {
            weight_decay: -0.1,
            ..Adam::default()
        },
    ];
    let invalid = |r: rnn_wgpu::Result<()>, what: String| match r {
        Err(Error::InvalidConfig(_)) => {}
        other => panic!("{what}: expected InvalidConfig, got {other:?}"),
    };
    let mut p = vec![vec![1.0]];
    let g = vec![vec![1.0]];
    for c in bad_sgd {
        invalid(c.validate(), format!("{c:?}"));
        invalid(
            cpu::sgd_step(&c, &mut SgdState::default(), &mut p, &g),
            format!("cpu {c:?}"),
        );
    }
    for c in bad_adam {
        invalid(c.validate(), format!("{c:?}"));
        invalid(
            cpu::adam_step(&c, &mut AdamState::default(), &mut p, &g),
            format!("cpu {c:?}"),
        );
    }
    // Edge values torch accepts.
    Sgd {
        lr: 0.0,
        momentum: 0.9,
        nesterov: true,
        ..Sgd::default()
    }
    .validate()
    .unwrap();
    Adam {
        lr: 0.0,
        beta1: 0.0,
        beta2: 0.0,
        ..Adam::default()
    }
    .validate()
    .unwrap();

    let Some(ctx) = ctx() else { return };
    let t = GpuTensor::zeros(ctx, &[3]).unwrap();
    for c in bad_sgd {
        invalid(
            SgdOptimizer::new(ctx, c, &[&t]).map(drop),
            format!("gpu {c:?}"),
        );
    }
    for c in bad_adam {
        invalid(
            AdamOptimizer::new(ctx, c, &[&t]).map(drop),
            format!("gpu {c:?}"),
        );
    }
}

#[test]
fn mismatched_steps_are_typed_errors() {
    let Some(ctx) = ctx() else { return };
    let p0 = GpuTensor::upload(ctx, &[1.0, 2.0, 3.0], &[3]).unwrap();
    let p1 = GpuTensor::upload(ctx, &[4.0; 6], &[2, 3]).unwrap();
    let g0 = GpuTensor::upload(ctx, &[1.0; 3], &[3]).unwrap();
    let g1 = GpuTensor::upload(ctx, &[1.0; 6], &[2, 3]).unwrap();
    let g1_flat = GpuTensor::upload(ctx, &[1.0; 6], &[6]).unwrap();
    let q0 = GpuTensor::upload(ctx, &[5.0; 3], &[3]).unwrap();
    for config in [
        Config::Sgd(Sgd {
            momentum: 0.9,
            ..Sgd::new(0.1)
        }),
        Config::Adam(Adam::default()),
    ] {
        let mut opt = Gpu::new(ctx, config, &[&p0, &p1]).unwrap();
        let shape_error = |r: rnn_wgpu::Result<()>| match r {
            Err(Error::ShapeMismatch { name, .. }) => name,
            other => panic!("{config:?}: expected ShapeMismatch, got {other:?}"),
        };
        assert_eq!(shape_error(opt.step(ctx, &[&p0], &[&g0])), "params (count)");
        assert_eq!(
            shape_error(opt.step(ctx, &[&p0, &p1], &[&g0])),
            "grads (count)"
        );
        // Same element count, different shape: still an error.
        assert_eq!(
            shape_error(opt.step(ctx, &[&p0, &p1], &[&g0, &g1_flat])),
            "grad 1"
        );
        assert_eq!(
            shape_error(opt.step(ctx, &[&p1, &p0], &[&g1, &g0])),
            "param 0"
        );
        let invalid = |r: rnn_wgpu::Result<()>, what: &str| match r {
            Err(Error::InvalidConfig(_)) => {}
            other => panic!("{config:?} {what}: expected InvalidConfig, got {other:?}"),
        };
        // A gradient that is also a parameter would be read after being updated.
        invalid(
            opt.step(ctx, &[&p0, &p1], &[&p0, &g1]),
            "grad aliasing its param",
        );
        invalid(
            Gpu::new(ctx, config, &[&p0, &p0]).map(drop),
            "duplicate at new",
        );
        let mut pair = Gpu::new(ctx, config, &[&p0, &q0]).unwrap();
        invalid(pair.step(ctx, &[&p0, &p0], &[&g0, &g0]), "same param twice");
        invalid(
            pair.step(ctx, &[&p0, &q0], &[&q0, &g0]),
            "grad aliasing another param",
        );
        // Nothing ran.
        assert_eq!(p0.download(ctx).unwrap(), [1.0, 2.0, 3.0]);
        assert_eq!(q0.download(ctx).unwrap(), [5.0; 3]);
        match &opt {
            Gpu::Sgd(o) => assert_eq!(o.steps(), 0),
            Gpu::Adam(o) => assert_eq!(o.steps(), 0),
        }
    }

    // The reference checks counts and lengths too.
    let mut p = vec![vec![1.0; 3], vec![1.0; 6]];
    let mismatch = |r: rnn_wgpu::Result<()>| matches!(r, Err(Error::ShapeMismatch { .. }));
    let c = Sgd::new(0.1);
    assert!(mismatch(cpu::sgd_step(
        &c,
        &mut SgdState::default(),
        &mut p,
        &[vec![1.0; 3]]
    )));
    assert!(mismatch(cpu::sgd_step(
        &c,
        &mut SgdState::default(),
        &mut p,
        &[vec![1.0; 3], vec![1.0; 5]]
    )));
    let mut state = AdamState::default();
    let a = Adam::default();
    cpu::adam_step(&a, &mut state, &mut p, &[vec![1.0; 3], vec![1.0; 6]]).unwrap();
    let mut other = vec![vec![1.0; 3]];
    assert!(mismatch(cpu::adam_step(
        &a,
        &mut state,
        &mut other,
        &[vec![1.0; 3]]
    )));
}

/// The readers of the optimiser cases.
impl OptimFixture {
    fn shapes(&self) -> Vec<Vec<usize>> {
        serde_json::from_value(self.meta("shapes")).unwrap()
    }

    fn problem(&self) -> Problem {
        let n = self.shapes().len();
        let steps: usize = self.meta("steps").as_u64().unwrap() as usize;
        Problem {
            shapes: self.shapes(),
            params: (0..n).map(|j| self.f32(&format!("param.{j}"))).collect(),
            grads: (0..steps)
                .map(|s| (0..n).map(|j| self.f32(&format!("grad.{s}.{j}"))).collect())
                .collect(),
        }
    }

    /// Every optimiser case, with its configuration read from the metadata.
    fn cases(&self) -> Vec<(String, Config)> {
        let all = self.meta("optimizers");
        all.as_object()
            .unwrap()
            .iter()
            .map(|(name, c)| {
                let f = |k: &str| c[k].as_f64().unwrap_or_else(|| panic!("{name}: {k}"));
                let config = match c["kind"].as_str().unwrap() {
                    "sgd" => Config::Sgd(Sgd {
                        lr: f("lr"),
                        momentum: f("momentum"),
                        dampening: f("dampening"),
                        weight_decay: f("weight_decay"),
                        nesterov: c["nesterov"].as_bool().unwrap(),
                    }),
                    "adam" => Config::Adam(Adam {
                        lr: f("lr"),
                        beta1: c["betas"][0].as_f64().unwrap(),
                        beta2: c["betas"][1].as_f64().unwrap(),
                        eps: f("eps"),
                        weight_decay: f("weight_decay"),
                    }),
                    other => panic!("unknown optimiser kind {other}"),
                };
                (name.clone(), config)
            })
            .collect()
    }

    /// The state torch kept at the end, in the order `Reference::state` lists it.
    fn final_state(&self, case: &str, config: Config, n: usize) -> Vec<Vec<Vec<f64>>> {
        let names: &[&str] = match config {
            Config::Sgd(c) if c.momentum == 0.0 => &[],
            Config::Sgd(_) => &["momentum_buffer"],
            Config::Adam(_) => &["exp_avg", "exp_avg_sq"],
        };
        names
            .iter()
            .map(|s| {
                (0..n)
                    .map(|j| self.f64(&format!("{case}.{s}.{j}")))
                    .collect()
            })
            .collect()
    }
}

/// The f64 reference against torch's f64 run of the same f32 inputs: a handful of f64
/// operations per step and element, 3 steps, values O(1) (Adam's update ratio m / denom is
/// well conditioned, also where eps matters): a few ulps, 1e-13 absolute is a wide margin.
const TORCH_F64_ATOL: f64 = 1e-13;

#[test]
fn reference_matches_torch_fixtures() {
    let fx = OptimFixture::load();
    let problem = fx.problem();
    let cases = fx.cases();
    assert_eq!(cases.len(), 6, "fixture cases");
    for (case, config) in cases {
        let mut reference = Reference::new(config);
        let mut params = widen(&problem.params);
        for (s, grads) in problem.grads.iter().enumerate() {
            reference.step(&mut params, &widen(grads)).unwrap();
            for (j, p) in params.iter().enumerate() {
                let want = fx.f64(&format!("{case}.step{s}.param.{j}"));
                assert_close(
                    &format!("{case} step {s} param {j}"),
                    p,
                    &want,
                    TORCH_F64_ATOL,
                    0.0,
                );
            }
        }
        let want = fx.final_state(&case, config, problem.shapes.len());
        let got = reference.state();
        assert_eq!(got.len(), want.len(), "{case}: state tensors");
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            for (j, (g, w)) in g.iter().zip(w).enumerate() {
                assert_close(
                    &format!("{case} state {k} param {j}"),
                    g,
                    w,
                    TORCH_F64_ATOL,
                    0.0,
                );
            }
        }
    }
}

#[test]
fn gpu_matches_torch_fixtures() {
    let Some(ctx) = ctx() else { return };
    let fx = OptimFixture::load();
    let problem = fx.problem();
    let mut worst = 0.0f64;
    for (case, config) in fx.cases() {
        let params = problem.upload_params(ctx);
        let mut gpu = Gpu::new(ctx, config, &refs(&params)).unwrap();
        for (s, grads) in problem.grads.iter().enumerate() {
            let g = upload(ctx, grads, &problem.shapes);
            gpu.step(ctx, &refs(&params), &refs(&g)).unwrap();
            for (j, got) in download(ctx, &params).iter().enumerate() {
                let want = fx.f64(&format!("{case}.step{s}.param.{j}"));
                // The same f32-versus-exact bound as against the CPU reference.
                assert_close(
                    &format!("{case} step {s} param {j}"),
                    got,
                    &want,
                    ATOL,
                    RTOL,
                );
                worst = worst.max(max_abs_diff(got, &want));
            }
        }
        let want = fx.final_state(&case, config, problem.shapes.len());
        for (k, (g, w)) in gpu.state().iter().zip(&want).enumerate() {
            for (j, (t, w)) in g.iter().zip(w).enumerate() {
                let got = t.download(ctx).unwrap();
                assert_close(
                    &format!("{case} state {k} param {j}"),
                    &got,
                    w,
                    STATE_ATOL,
                    0.0,
                );
            }
        }
    }
    eprintln!("torch fixtures: worst GPU parameter error {worst:.2e}");
}
