//! The classification read-out (linear layer + softmax cross-entropy): the CPU reference
//! against finite differences and analytic facts, the GPU against the CPU reference, and the
//! typed errors of bad shapes and class indices.

mod common;

use common::gpu::ctx;
use common::{assert_close, seeded};
use rnn_wgpu::cpu::{ReadoutShape, readout_backward, readout_forward, to_f64};
use rnn_wgpu::{Error, GpuTensor, Readout};

/// Seeded targets in `0..classes`.
fn targets(seed: u64, rows: usize, classes: usize) -> Vec<u32> {
    seeded(seed, rows, 1.0)
        .iter()
        .map(|&u| (((u + 1.0) / 2.0 * classes as f32) as usize).min(classes - 1) as u32)
        .collect()
}

struct Problem {
    shape: ReadoutShape,
    features: Vec<f32>,
    weight: Vec<f32>,
    bias: Vec<f32>,
    targets: Vec<u32>,
}

fn problem(seed: u64, rows: usize, features: usize, classes: usize) -> Problem {
    Problem {
        shape: ReadoutShape {
            rows,
            features,
            classes,
        },
        features: seeded(seed, rows * features, 1.0),
        // nn.Linear's default range, so logits stay O(1) as in training.
        weight: seeded(seed + 1, classes * features, 1.0 / (features as f32).sqrt()),
        bias: seeded(seed + 2, classes, 1.0 / (features as f32).sqrt()),
        targets: targets(seed + 3, rows, classes),
    }
}

/// The loss of the CPU reference as a function of all inputs (for finite differences).
fn loss(p: &Problem, f: &[f64], w: &[f64], b: &[f64]) -> f64 {
    readout_forward(p.shape, f, w, b, Some(&p.targets))
        .unwrap()
        .loss
}

#[test]
fn cpu_gradients_match_finite_differences() {
    let p = problem(1, 7, 5, 4);
    let (f, w, b) = (to_f64(&p.features), to_f64(&p.weight), to_f64(&p.bias));
    let fwd = readout_forward(p.shape, &f, &w, &b, Some(&p.targets)).unwrap();
    let g = readout_backward(p.shape, &f, &w, &fwd.probs, &p.targets).unwrap();
    // Central differences in f64: truncation error ~ EPS^2 * |f'''| ~ 1e-12 (the loss is
    // smooth with O(1) derivatives here) and rounding ~ 1e-16 / EPS ~ 1e-10, so 1e-7 leaves
    // three orders of margin while a wrong gradient (an O(1/N) error) fails by far.
    const EPS: f64 = 1e-6;
    let numeric = |which: usize, len: usize| -> Vec<f64> {
        (0..len)
            .map(|i| {
                let at = |delta: f64| {
                    let (mut f, mut w, mut b) = (f.clone(), w.clone(), b.clone());
                    [&mut f, &mut w, &mut b][which][i] += delta;
                    loss(&p, &f, &w, &b)
                };
                (at(EPS) - at(-EPS)) / (2.0 * EPS)
            })
            .collect()
    };
    assert_close(
        "grad_features",
        &g.grad_features,
        &numeric(0, f.len()),
        1e-7,
        1e-6,
    );
    assert_close(
        "grad_weight",
        &g.grad_weight,
        &numeric(1, w.len()),
        1e-7,
        1e-6,
    );
    assert_close("grad_bias", &g.grad_bias, &numeric(2, b.len()), 1e-7, 1e-6);
}

#[test]
fn cpu_reference_analytic_facts() {
    let p = problem(2, 5, 3, 6);
    let f = to_f64(&p.features);
    // Zero weights and bias: every class equally likely, loss = ln C exactly.
    let zero = readout_forward(p.shape, &f, &[0.0; 18], &[0.0; 6], Some(&p.targets)).unwrap();
    assert!(zero.probs.iter().all(|&q| (q - 1.0 / 6.0).abs() < 1e-15));
    assert!((zero.loss - 6f64.ln()).abs() < 1e-15);
    // Rows of probabilities sum to 1, and huge logits stay finite (the max is subtracted).
    let big = readout_forward(
        p.shape,
        &f,
        &[0.0; 18],
        &[1e4, -1e4, 0.0, 3.0, 1e4, 2.0],
        None,
    )
    .unwrap();
    for row in big.probs.chunks(6) {
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        assert!((row[0] - 0.5).abs() < 1e-15 && (row[4] - 0.5).abs() < 1e-15);
    }
    // The gradients of the logits of each row sum to zero, so the bias gradient does too.
    let g = readout_backward(
        p.shape,
        &f,
        &to_f64(&p.weight[..18]),
        &zero.probs,
        &p.targets,
    )
    .unwrap();
    assert!(g.grad_bias.iter().sum::<f64>().abs() < 1e-15);
}

/// Run the GPU read-out forward and backward in one submission and compare every output with
/// the CPU reference on the same f32 inputs.
fn gpu_matches_cpu(seed: u64, rows: usize, features: usize, classes: usize) {
    let Some(ctx) = ctx() else { return };
    let p = problem(seed, rows, features, classes);
    let (f, w, b) = (to_f64(&p.features), to_f64(&p.weight), to_f64(&p.bias));
    let want = readout_forward(p.shape, &f, &w, &b, Some(&p.targets)).unwrap();
    let want_g = readout_backward(p.shape, &f, &w, &want.probs, &p.targets).unwrap();

    let readout = Readout::from_host(ctx, features, classes, &p.weight, &p.bias).unwrap();
    // A [T, B, H]-like feature tensor: N rows split over two leading dimensions.
    let shape = [1, rows, features];
    let x = GpuTensor::upload(ctx, &p.features, &shape).unwrap();
    let out = readout.alloc(ctx, &shape).unwrap();
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    readout
        .record_forward(ctx, &mut enc, &x, Some(&p.targets), &out)
        .unwrap();
    readout.record_backward(ctx, &mut enc, &x, &out).unwrap();
    ctx.submit(enc.finish()).unwrap();

    // Tolerances from f32 arithmetic (unit roundoff u = 6e-8) on inputs of magnitude <= 1:
    // a logit sums H <= 64 products, |error| <= H * u * sum|f * w| <= 64 * 6e-8 * 8 = 3e-5
    // (worst case; |w| <= 1/sqrt(H) so sum|f w| <= sqrt(H) = 8), and exp/log add a few ulps;
    // probabilities <= 1 and losses O(1) inherit that absolute error, so atol 3e-5.
    let download = |t: &GpuTensor| t.download(ctx).unwrap();
    assert_close("probs", &download(out.probs()), &want.probs, 3e-5, 1e-4);
    assert_close(
        "row_loss",
        &download(out.row_loss()),
        &want.row_loss,
        3e-5,
        1e-4,
    );
    assert_close("loss", &download(out.loss()), &[want.loss], 3e-5, 1e-4);
    // Gradients: each term is (p - onehot) / N times a value of magnitude <= 1, so a sum of
    // K <= 320 terms has sum|terms| <= 2; the inherited probability error (3e-5 per p) plus
    // K * u * 2 of summation (4e-5) stays below 1e-4 absolute.
    assert_close(
        "grad_weight",
        &download(readout.grad_weight()),
        &want_g.grad_weight,
        1e-4,
        1e-4,
    );
    assert_close(
        "grad_bias",
        &download(readout.grad_bias()),
        &want_g.grad_bias,
        1e-4,
        1e-4,
    );
    assert_close(
        "grad_features",
        &download(out.grad_features()),
        &want_g.grad_features,
        1e-4,
        1e-4,
    );
}

#[test]
fn gpu_matches_cpu_single_row_single_class() {
    // C = 1: p = 1 and the loss and every gradient are exactly 0.
    gpu_matches_cpu(10, 1, 1, 1);
}

#[test]
fn gpu_matches_cpu_odd_sizes() {
    gpu_matches_cpu(11, 37, 13, 5);
}

#[test]
fn gpu_matches_cpu_per_step_sized() {
    // N = T * B = 20 * 16 rows, a character vocabulary of 61 classes; N is past one workgroup
    // (the mean's strided loop) and N * C past many.
    gpu_matches_cpu(12, 320, 64, 61);
}

#[test]
fn gpu_results_are_bit_identical_across_runs() {
    let Some(ctx) = ctx() else { return };
    let p = problem(13, 300, 24, 9);
    let readout = Readout::from_host(ctx, 24, 9, &p.weight, &p.bias).unwrap();
    let x = GpuTensor::upload(ctx, &p.features, &[300, 24]).unwrap();
    let out = readout.alloc(ctx, &[300, 24]).unwrap();
    let mut runs = Vec::new();
    for _ in 0..2 {
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        readout
            .record_forward(ctx, &mut enc, &x, Some(&p.targets), &out)
            .unwrap();
        readout.record_backward(ctx, &mut enc, &x, &out).unwrap();
        ctx.submit(enc.finish()).unwrap();
        runs.push((
            out.loss().download(ctx).unwrap(),
            readout.grad_weight().download(ctx).unwrap(),
            out.grad_features().download(ctx).unwrap(),
        ));
    }
    assert!(runs[0] == runs[1], "two runs differ");
}

#[test]
fn bad_inputs_give_typed_errors() {
    let shape = ReadoutShape {
        rows: 2,
        features: 3,
        classes: 4,
    };
    let cpu = readout_forward(shape, &[0.0; 6], &[0.0; 12], &[0.0; 4], Some(&[1, 4]));
    assert!(matches!(
        cpu,
        Err(Error::IndexOutOfRange {
            what: "class",
            index: 4,
            bound: 4
        })
    ));
    let cpu = readout_forward(shape, &[0.0; 6], &[0.0; 11], &[0.0; 4], None);
    assert!(matches!(cpu, Err(Error::ShapeMismatch { ref name, .. }) if name == "weight"));

    let Some(ctx) = ctx() else { return };
    assert!(matches!(
        Readout::new(ctx, 3, 0, 0),
        Err(Error::ZeroSize("readout classes"))
    ));
    assert!(matches!(
        Readout::from_host(ctx, 3, 4, &[0.0; 12], &[0.0; 3]),
        Err(Error::ShapeMismatch { ref name, .. }) if name == "bias"
    ));
    let readout = Readout::new(ctx, 3, 4, 0).unwrap();
    assert!(matches!(
        readout.alloc(ctx, &[2, 5]),
        Err(Error::ShapeMismatch { ref name, .. }) if name == "features"
    ));
    let out = readout.alloc(ctx, &[2, 3]).unwrap();
    let x = GpuTensor::zeros(ctx, &[2, 3]).unwrap();
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    assert!(matches!(
        readout.record_forward(ctx, &mut enc, &x, Some(&[0, 7]), &out),
        Err(Error::IndexOutOfRange {
            what: "class",
            index: 7,
            bound: 4
        })
    ));
    assert!(matches!(
        readout.record_forward(ctx, &mut enc, &x, Some(&[0]), &out),
        Err(Error::ShapeMismatch { ref name, .. }) if name == "targets"
    ));
    let wrong = GpuTensor::zeros(ctx, &[1, 2, 3]).unwrap();
    assert!(matches!(
        readout.record_forward(ctx, &mut enc, &wrong, None, &out),
        Err(Error::ShapeMismatch { ref name, .. }) if name == "features"
    ));
    // Backward needs the targets of a forward pass.
    readout
        .record_forward(ctx, &mut enc, &x, None, &out)
        .unwrap();
    assert!(matches!(
        readout.record_backward(ctx, &mut enc, &x, &out),
        Err(Error::InvalidConfig(_))
    ));
}

#[test]
fn steady_state_steps_create_no_gpu_objects() {
    // Its own context: the shared one's counters move with the tests running beside this one.
    if ctx().is_none() {
        return;
    }
    let ctx = rnn_wgpu::Context::new().unwrap();
    let p = problem(14, 48, 16, 7);
    let readout = Readout::from_host(&ctx, 16, 7, &p.weight, &p.bias).unwrap();
    let x = GpuTensor::upload(&ctx, &p.features, &[6, 8, 16]).unwrap();
    let out = readout.alloc(&ctx, &[6, 8, 16]).unwrap();
    let step = || {
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        readout
            .record_forward(&ctx, &mut enc, &x, Some(&p.targets), &out)
            .unwrap();
        readout.record_backward(&ctx, &mut enc, &x, &out).unwrap();
        ctx.submit(enc.finish()).unwrap();
    };
    step();
    let before = ctx.allocation_counts();
    step();
    step();
    let made = ctx.allocation_counts() - before;
    assert_eq!((made.buffers, made.bind_groups), (0, 0));
}
