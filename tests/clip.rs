//! Gradient clipping on the GPU (`gpu::clip`) against the f64 CPU reference (`cpu::optim`)
//! and against `torch.nn.utils.clip_grad_norm_` / `clip_grad_value_` (fixtures written by
//! `scripts/gen_optim_fixtures.py`).

mod common;

use common::fixtures::OptimFixture;
use common::gpu::{ctx, limited};
use common::{assert_close, seeded};
use rnn_wgpu::cpu::{optim as cpu, to_f64};
use rnn_wgpu::gpu::clip;
use rnn_wgpu::{Context, Error, GpuTensor};

/// Tensor lengths around every boundary of the kernels: one element, odd sizes, a workgroup
/// (256) and a norm chunk (2048) and either side of them, and 70000 (many chunks, and more
/// workgroups than the lowered-limit device allows in one row).
const LENS: &[usize] = &[1, 7, 255, 256, 1000, 2047, 2048, 2049, 70000];

/// Bound on the GPU norm's relative error. The kernels square each f32 value (one rounding, in
/// an fma) and add the squares through at most PER_THREAD = 8 sequential adds, an 8-level tree,
/// ceil(partials / 256) sequential adds (1 here: fewer than 256 partials) and another 8-level
/// tree: a depth d = 26. All terms are positive, so the sum of squares is within d * 2^-24
/// = 1.55e-6 relative of the exact sum of the same f32 inputs (which the f64 reference
/// computes to 1e-16); the square root halves that and adds half an ulp: 8.1e-7. Rounding in
/// practice is a random walk, far below the bound (the observed error is printed).
const NORM_RTOL: f64 = 8.1e-7;

/// Clipped gradients: `g * coef` in f32 where `coef = max_norm / (norm + 1e-6)` inherits the
/// norm's 8.1e-7 and adds an ulp for the add and one for the divide, and the product another
/// half ulp: 8.1e-7 + 2.5 * 6e-8 = 9.6e-7 relative. An absolute floor of 1e-30 only lets an
/// exact 0 match.
const CLIP_RTOL: f64 = 9.6e-7;
const CLIP_ATOL: f64 = 1e-30;

fn grads_for(seed: u64, lens: &[usize], scale: f32) -> Vec<Vec<f32>> {
    lens.iter()
        .enumerate()
        .map(|(i, &n)| seeded(seed + i as u64, n, scale))
        .collect()
}

fn upload(ctx: &Context, grads: &[Vec<f32>]) -> Vec<GpuTensor> {
    grads
        .iter()
        .map(|g| GpuTensor::upload(ctx, g, &[g.len()]).unwrap())
        .collect()
}

fn refs(ts: &[GpuTensor]) -> Vec<&GpuTensor> {
    ts.iter().collect()
}

fn widen(grads: &[Vec<f32>]) -> Vec<Vec<f64>> {
    grads.iter().map(|g| to_f64(g)).collect()
}

fn rel_err(got: f32, want: f64) -> f64 {
    (got as f64 - want).abs() / want.abs()
}

#[test]
fn grad_norm_matches_reference() {
    let Some(ctx) = ctx() else { return };
    // Unit-scale values, and magnitudes from 1e-3 to 1e3 in one list (the bound is relative
    // to the total and holds for any positive terms).
    for (name, grads) in [
        ("unit", grads_for(1, LENS, 1.0)),
        ("mixed", {
            let mut g = grads_for(2, LENS, 1e-3);
            g[0][0] = 1e3;
            g[5].iter_mut().for_each(|x| *x *= 1e3);
            g
        }),
    ] {
        let gpu = clip::grad_norm(ctx, &refs(&upload(ctx, &grads))).unwrap();
        let want = cpu::grad_norm(&widen(&grads));
        let err = rel_err(gpu, want);
        eprintln!("grad_norm {name}: gpu {gpu:e}, reference {want:e}, relative error {err:.2e}");
        assert!(err <= NORM_RTOL, "{name}: {gpu} vs {want} ({err:e})");
    }
}

#[test]
fn grad_norm_of_nothing_is_zero() {
    let Some(ctx) = ctx() else { return };
    assert_eq!(clip::grad_norm(ctx, &[]).unwrap(), 0.0);
    let empty = GpuTensor::zeros(ctx, &[0, 3]).unwrap();
    let one = GpuTensor::upload(ctx, &[-3.0], &[1]).unwrap();
    assert_eq!(clip::grad_norm(ctx, &[&empty]).unwrap(), 0.0);
    // A zero-element tensor among others is skipped.
    assert_eq!(clip::grad_norm(ctx, &[&empty, &one]).unwrap(), 3.0);
    assert_eq!(clip::clip_grad_norm(ctx, &[&empty], 1.0).unwrap(), 0.0);
}

#[test]
fn clip_grad_norm_scales_when_norm_exceeds_max() {
    let Some(ctx) = ctx() else { return };
    let grads = grads_for(3, LENS, 1.0);
    let mut want = widen(&grads);
    let norm_before = cpu::grad_norm(&want);
    let max_norm = (norm_before * 0.25) as f32;
    let want_norm = cpu::clip_grad_norm(&mut want, max_norm as f64).unwrap();

    let gpu = upload(ctx, &grads);
    let norm = clip::clip_grad_norm(ctx, &refs(&gpu), max_norm).unwrap();
    let err = rel_err(norm, want_norm);
    eprintln!("clip_grad_norm: returned norm relative error {err:.2e}");
    assert!(err <= NORM_RTOL);
    let mut worst = 0.0f64;
    for (i, (t, w)) in gpu.iter().zip(&want).enumerate() {
        let got = t.download(ctx).unwrap();
        assert_close(&format!("clipped grad {i}"), &got, w, CLIP_ATOL, CLIP_RTOL);
        worst = got
            .iter()
            .zip(w)
            .map(|(&g, &w)| (g as f64 - w).abs() / w.abs().max(1e-30))
            .fold(worst, f64::max);
    }
    eprintln!("clip_grad_norm: worst clipped-gradient relative error {worst:.2e}");
    // And the norm afterwards is max_norm (up to the 1e-6 in the coefficient).
    let after = cpu::grad_norm(&want);
    assert!((after - max_norm as f64).abs() <= 1e-6 * max_norm as f64 + 1e-6);
}

#[test]
fn clip_grad_norm_leaves_gradients_alone_below_max() {
    let Some(ctx) = ctx() else { return };
    let grads = grads_for(4, LENS, 1.0);
    let norm_before = cpu::grad_norm(&widen(&grads));
    let gpu = upload(ctx, &grads);
    // coef = max_norm / (norm + 1e-6) >= 1 exactly when max_norm >= norm + 1e-6; twice the norm
    // is far from that edge, and an untouched gradient is bit-identical.
    let norm = clip::clip_grad_norm(ctx, &refs(&gpu), (2.0 * norm_before) as f32).unwrap();
    assert!(rel_err(norm, norm_before) <= NORM_RTOL);
    for (t, g) in gpu.iter().zip(&grads) {
        assert_eq!(&t.download(ctx).unwrap(), g);
    }
}

#[test]
fn clip_coefficient_adds_torchs_epsilon_to_the_norm() {
    // At a norm near 1e-6 the 1e-6 in max_norm / (norm + 1e-6) halves the coefficient: a
    // kernel that left it out would be off by 2x here, not by rounding.
    let Some(ctx) = ctx() else { return };
    let grads = grads_for(10, &[7, 3], 6e-7);
    let mut want = widen(&grads);
    let norm = cpu::grad_norm(&want);
    let max_norm = (norm * 0.1) as f32;
    cpu::clip_grad_norm(&mut want, max_norm as f64).unwrap();
    let gpu = upload(ctx, &grads);
    clip::clip_grad_norm(ctx, &refs(&gpu), max_norm).unwrap();
    for (i, (t, w)) in gpu.iter().zip(&want).enumerate() {
        let got = t.download(ctx).unwrap();
        assert_close(&format!("grad {i}"), &got, w, CLIP_ATOL, CLIP_RTOL);
    }
}

#[test]
fn clip_grad_value_clamps_in_place() {
    let Some(ctx) = ctx() else { return };
    let grads = grads_for(5, LENS, 2.0);
    let (lo, hi) = (-0.75f32, 0.5f32);
    let mut want = widen(&grads);
    cpu::clip_grad_value(&mut want, lo as f64, hi as f64).unwrap();
    let gpu = upload(ctx, &grads);
    clip::clip_grad_value(ctx, &refs(&gpu), lo, hi).unwrap();
    for (i, (t, w)) in gpu.iter().zip(&want).enumerate() {
        // Clamping only selects among f32 values: exact.
        assert_close(
            &format!("clamped grad {i}"),
            &t.download(ctx).unwrap(),
            w,
            0.0,
            0.0,
        );
    }
    // min == max is allowed: everything becomes that value.
    clip::clip_grad_value(ctx, &refs(&gpu), 0.25, 0.25).unwrap();
    assert!(gpu[1].download(ctx).unwrap().iter().all(|&g| g == 0.25));
}

#[test]
fn norm_is_bit_identical_across_runs() {
    let Some(ctx) = ctx() else { return };
    let grads = grads_for(6, LENS, 1.0);
    let gpu = upload(ctx, &grads);
    let first = clip::grad_norm(ctx, &refs(&gpu)).unwrap();
    for _ in 0..3 {
        assert_eq!(
            clip::grad_norm(ctx, &refs(&gpu)).unwrap().to_bits(),
            first.to_bits()
        );
    }
    // The clip path reduces the same way.
    let clipped = clip::clip_grad_norm(ctx, &refs(&gpu), first * 0.5).unwrap();
    assert_eq!(clipped.to_bits(), first.to_bits());
    let again = upload(ctx, &grads);
    clip::clip_grad_norm(ctx, &refs(&again), first * 0.5).unwrap();
    for (a, b) in gpu.iter().zip(&again) {
        assert_eq!(a.download(ctx).unwrap(), b.download(ctx).unwrap());
    }
}

#[test]
fn each_host_call_is_one_submission() {
    let Some(ctx) = ctx() else { return };
    // A private context: other tests in this binary submit concurrently on the shared one.
    let ctx = Context::from_device(ctx.device().clone(), ctx.queue().clone());
    let gpu = upload(&ctx, &grads_for(7, LENS, 1.0));
    let before = ctx.submission_count();
    clip::grad_norm(&ctx, &refs(&gpu)).unwrap();
    assert_eq!(ctx.submission_count() - before, 1, "grad_norm");
    clip::clip_grad_norm(&ctx, &refs(&gpu), 0.1).unwrap();
    assert_eq!(ctx.submission_count() - before, 2, "clip_grad_norm");
    clip::clip_grad_value(&ctx, &refs(&gpu), -0.1, 0.1).unwrap();
    assert_eq!(ctx.submission_count() - before, 3, "clip_grad_value");
}

#[test]
fn recorded_clipping_chains_in_one_encoder() {
    let Some(ctx) = ctx() else { return };
    let grads = grads_for(8, LENS, 1.0);
    let mut want = widen(&grads);
    cpu::clip_grad_value(&mut want, -0.9, 0.9).unwrap();
    let max_norm = (cpu::grad_norm(&want) * 0.5) as f32;
    let want_norm = cpu::clip_grad_norm(&mut want, max_norm as f64).unwrap();

    let gpu = upload(ctx, &grads);
    let norm = GpuTensor::zeros(ctx, &[1]).unwrap();
    let mut enc = ctx
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
    clip::record_clip_grad_value(ctx, &mut enc, &refs(&gpu), -0.9, 0.9).unwrap();
    clip::record_clip_grad_norm(ctx, &mut enc, &refs(&gpu), max_norm, &norm).unwrap();
    ctx.submit(enc.finish()).unwrap();
    let got_norm = norm.download(ctx).unwrap()[0];
    assert!(rel_err(got_norm, want_norm) <= NORM_RTOL);
    for (i, (t, w)) in gpu.iter().zip(&want).enumerate() {
        assert_close(
            &format!("grad {i}"),
            &t.download(ctx).unwrap(),
            w,
            CLIP_ATOL,
            CLIP_RTOL,
        );
    }

    // record_grad_norm leaves the norm on the GPU without touching the gradients.
    let mut enc = ctx
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
    clip::record_grad_norm(ctx, &mut enc, &refs(&gpu), &norm).unwrap();
    ctx.submit(enc.finish()).unwrap();
    let after = norm.download(ctx).unwrap()[0];
    assert!(rel_err(after, cpu::grad_norm(&want)) <= 2.0 * NORM_RTOL);
}

#[test]
fn grids_wrap_into_two_dimensions_under_low_limits() {
    // 20 workgroups per dimension: 70000 elements need 274 elementwise workgroups (a 20 x 14
    // grid) and 35 norm chunks (20 x 2), so every kernel runs on its 2-D path.
    let Some(ctx) = limited(|l| l.max_compute_workgroups_per_dimension = 20) else {
        return;
    };
    let grads = grads_for(9, LENS, 1.0);
    let mut want = widen(&grads);
    let max_norm = (cpu::grad_norm(&want) * 0.3) as f32;
    let want_norm = cpu::clip_grad_norm(&mut want, max_norm as f64).unwrap();
    cpu::clip_grad_value(&mut want, -0.02, 0.02).unwrap();
    let gpu = upload(&ctx, &grads);
    let norm = clip::clip_grad_norm(&ctx, &refs(&gpu), max_norm).unwrap();
    assert!(rel_err(norm, want_norm) <= NORM_RTOL);
    clip::clip_grad_value(&ctx, &refs(&gpu), -0.02, 0.02).unwrap();
    for (i, (t, w)) in gpu.iter().zip(&want).enumerate() {
        assert_close(
            &format!("grad {i}"),
            &t.download(&ctx).unwrap(),
            w,
            CLIP_ATOL,
            CLIP_RTOL,
        );
    }
    // 20 x 20 workgroups of 256 cover 102400 elements; one more row is beyond the device.
    let big = GpuTensor::zeros(&ctx, &[102401]).unwrap();
    match clip::clip_grad_value(&ctx, &[&big], -1.0, 1.0) {
        Err(Error::LimitExceeded { limit, .. }) => {
            assert_eq!(limit, "max_compute_workgroups_per_dimension")
        }
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
}

#[test]
fn bad_arguments_are_typed_errors() {
    let Some(ctx) = ctx() else { return };
    let a = GpuTensor::upload(ctx, &[1.0, 2.0], &[2]).unwrap();
    let b = GpuTensor::upload(ctx, &[3.0], &[1]).unwrap();
    let invalid = |r: rnn_wgpu::Result<()>, what: &str| match r {
        Err(Error::InvalidConfig(_)) => {}
        other => panic!("{what}: expected InvalidConfig, got {other:?}"),
    };
    invalid(clip::clip_grad_value(ctx, &[&a], 1.0, -1.0), "min > max");
    invalid(clip::clip_grad_value(ctx, &[&a], f32::NAN, 1.0), "NaN min");
    invalid(clip::clip_grad_value(ctx, &[&a], -1.0, f32::NAN), "NaN max");
    invalid(
        clip::clip_grad_value(ctx, &[&a, &b, &a], -1.0, 1.0),
        "duplicate",
    );
    invalid(
        clip::clip_grad_norm(ctx, &[&a], -1.0).map(drop),
        "negative max_norm",
    );
    invalid(
        clip::clip_grad_norm(ctx, &[&a], f32::NAN).map(drop),
        "NaN max_norm",
    );
    invalid(clip::grad_norm(ctx, &[&b, &b]).map(drop), "duplicate");

    let mut enc = ctx
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
    match clip::record_grad_norm(ctx, &mut enc, &[&a], &a) {
        Err(Error::ShapeMismatch { name, .. }) => assert_eq!(name, "norm"),
        other => panic!("expected ShapeMismatch for a [2] norm, got {other:?}"),
    }
    invalid(
        clip::record_clip_grad_norm(ctx, &mut enc, &[&a, &b], 1.0, &b),
        "norm aliasing a gradient",
    );
    // Nothing was touched.
    assert_eq!(a.download(ctx).unwrap(), [1.0, 2.0]);

    // The CPU reference rejects the same inputs.
    let mut g = vec![vec![1.0, 2.0]];
    assert!(matches!(
        cpu::clip_grad_value(&mut g, 1.0, -1.0),
        Err(Error::InvalidConfig(_))
    ));
    assert!(matches!(
        cpu::clip_grad_norm(&mut g, f64::NAN),
        Err(Error::InvalidConfig(_))
    ));
}

#[test]
fn reference_follows_torch_on_non_finite_norms() {
    // PyTorch multiplies by clamp(max_norm / (nan + 1e-6), max=1) = NaN: everything turns NaN.
    // (Checked on the CPU reference only: WGSL lets implementations assume no NaN arithmetic.)
    let mut g = vec![vec![1.0, f64::NAN], vec![2.0]];
    assert!(cpu::clip_grad_norm(&mut g, 1.0).unwrap().is_nan());
    assert!(g.iter().flatten().all(|x| x.is_nan()));
    // An infinite norm gives coef 0: finite gradients become 0.
    let mut g = vec![vec![1.0, f64::INFINITY], vec![2.0]];
    assert_eq!(cpu::clip_grad_norm(&mut g, 1.0).unwrap(), f64::INFINITY);
    assert_eq!(g[1], [0.0]);
    // A NaN gradient stays NaN under value clipping (torch.clamp propagates NaN).
    let mut g = vec![vec![f64::NAN, 5.0]];
    cpu::clip_grad_value(&mut g, -1.0, 1.0).unwrap();
    assert!(g[0][0].is_nan() && g[0][1] == 1.0);
}

/// The readers of the clipping cases.
impl OptimFixture {
    fn tensor_count(&self) -> usize {
        self.meta("shapes").as_array().unwrap().len()
    }

    /// The gradients `clip_*` cases start from (`grad.0.*`).
    fn grads(&self) -> Vec<Vec<f32>> {
        (0..self.tensor_count())
            .map(|j| self.f32(&format!("grad.0.{j}")))
            .collect()
    }

    fn expected(&self, case: &str) -> Vec<Vec<f64>> {
        (0..self.tensor_count())
            .map(|j| self.f64(&format!("{case}.grad.{j}")))
            .collect()
    }
}

/// The f64 reference against torch's f64 run of the same f32 inputs: both sum ~30 squares
/// in f64 (different orders), so 1e-14 relative is hundreds of ulps of margin.
const TORCH_F64_RTOL: f64 = 1e-14;

#[test]
fn reference_matches_torch_fixtures() {
    let fx = OptimFixture::load();
    for (name, max_norm) in fx.meta("clip_norm").as_object().unwrap() {
        let case = format!("clip_norm_{name}");
        let mut grads = widen(&fx.grads());
        let norm = cpu::clip_grad_norm(&mut grads, max_norm.as_f64().unwrap()).unwrap();
        assert_close(
            &case,
            &[norm],
            &fx.f64(&format!("{case}.total_norm")),
            0.0,
            TORCH_F64_RTOL,
        );
        for (j, (g, w)) in grads.iter().zip(fx.expected(&case)).enumerate() {
            assert_close(&format!("{case} grad {j}"), g, &w, 1e-300, TORCH_F64_RTOL);
        }
    }
    let c = fx.meta("clip_value").as_f64().unwrap();
    let mut grads = widen(&fx.grads());
    cpu::clip_grad_value(&mut grads, -c, c).unwrap();
    for (j, (g, w)) in grads.iter().zip(fx.expected("clip_value")).enumerate() {
        assert_close(&format!("clip_value grad {j}"), g, &w, 0.0, 0.0);
    }
}

#[test]
fn gpu_matches_torch_fixtures() {
    let Some(ctx) = ctx() else { return };
    let fx = OptimFixture::load();
    for (name, max_norm) in fx.meta("clip_norm").as_object().unwrap() {
        let case = format!("clip_norm_{name}");
        let gpu = upload(ctx, &fx.grads());
        let norm = clip::clip_grad_norm(ctx, &refs(&gpu), max_norm.as_f64().unwrap() as f32);
        let want_norm = fx.f64(&format!("{case}.total_norm"))[0];
        // Same bounds as against the CPU reference: torch's f64 answer is the exact one.
        assert!(rel_err(norm.unwrap(), want_norm) <= NORM_RTOL, "{case}");
        for (j, (t, w)) in gpu.iter().zip(fx.expected(&case)).enumerate() {
            let got = t.download(ctx).unwrap();
            assert_close(&format!("{case} grad {j}"), &got, &w, CLIP_ATOL, CLIP_RTOL);
        }
    }
    let c = fx.meta("clip_value").as_f64().unwrap() as f32;
    let gpu = upload(ctx, &fx.grads());
    clip::clip_grad_value(ctx, &refs(&gpu), -c, c).unwrap();
    for (j, (t, w)) in gpu.iter().zip(fx.expected("clip_value")).enumerate() {
        assert_close(
            &format!("clip_value grad {j}"),
            &t.download(ctx).unwrap(),
            &w,
            0.0,
            0.0,
        );
    }
}
