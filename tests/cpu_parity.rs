//! The CPU reference against PyTorch: every fixture made by `scripts/gen_fixtures.py`
//! (`nn.LSTM` run in float64, gradients from autograd) must match `cpu::lstm_forward` and
//! `cpu::lstm_backward` in every output and every gradient. Also: the fixtures' weights survive
//! a `Weights` safetensors round trip bit for bit.

mod common;

use common::assert_close;
use common::fixtures::{self, Fixture};
use rnn_wgpu::Weights;
use rnn_wgpu::cpu::{RefWeights, lstm_backward, lstm_forward, to_f64};

/// Both sides compute in f64 from the same f32 inputs, so they differ only by summation order
/// and libm's `exp`/`tanh` (an ulp or so each), carried through at most 20 steps of a
/// contracting recurrence: the observed worst is 3e-14 absolute on a weight gradient of
/// magnitude ~36 (1e-15 relative). 1e-9 leaves four orders of margin for other platforms' libm
/// while catching anything that is not rounding: an f32 accumulation anywhere would show up at
/// ~1e-7, a wrong gate or index at ~1e-1. (The bar is 1e-5 absolute; this is far
/// inside it.)
const ATOL: f64 = 1e-9;
const RTOL: f64 = 1e-9;

/// Run the reference on a fixture's inputs and compare every output and gradient; returns the
/// worst absolute error per tensor.
fn check_case(case: &str) -> Vec<(String, f64)> {
    let fx = fixtures::load(case);
    let (cfg, t, b) = (&fx.cfg, fx.steps, fx.batch);
    let (i, h) = (cfg.input_size(), cfg.hidden_size());
    let g4 = 4 * h;
    let w = RefWeights::new(cfg, fx.weights.layer(0, 0));
    let (x, h0, c0) = (to_f64(&fx.x), to_f64(&fx.h0), to_f64(&fx.c0));
    let (dy, dh_n, dc_n) = (to_f64(&fx.dy), to_f64(&fx.dh_n), to_f64(&fx.dc_n));

    let fwd = lstm_forward(cfg, &w, &x, Some(&h0), Some(&c0), t, b).expect("forward");
    let grads = lstm_backward(
        cfg,
        &w,
        &x,
        Some(&h0),
        Some(&c0),
        &fwd,
        Some(&dy),
        Some(&dh_n),
        Some(&dc_n),
        t,
        b,
    )
    .expect("backward");

    let mut pairs: Vec<(&str, &[f64], Vec<usize>)> = vec![
        ("y", &fwd.y, vec![t, b, h]),
        ("h_n", &fwd.h_n, vec![b, h]),
        ("c_n", &fwd.c_n, vec![b, h]),
        ("grad.x", &grads.dx, vec![t, b, i]),
        ("grad.h0", &grads.dh0, vec![b, h]),
        ("grad.c0", &grads.dc0, vec![b, h]),
        ("grad.weight_ih_l0", &grads.d_weight_ih, vec![g4, i]),
        ("grad.weight_hh_l0", &grads.d_weight_hh, vec![g4, h]),
    ];
    if cfg.bias() {
        pairs.push(("grad.bias_ih_l0", &grads.d_bias_ih, vec![g4]));
        pairs.push(("grad.bias_hh_l0", &grads.d_bias_hh, vec![g4]));
    } else {
        assert!(!fx.has("grad.bias_ih_l0") && !fx.has("grad.bias_hh_l0"));
    }

    let mut worst = Vec::new();
    for (name, got, shape) in pairs {
        let want = fx.f64_shaped(name, &shape);
        assert_close(&format!("{case}/{name}"), got, &want, ATOL, RTOL);
        worst.push((name.to_string(), common::max_abs_diff(got, &want)));
    }
    worst
}

fn report(case: &str, worst: &[(String, f64)]) {
    let line: Vec<String> = worst.iter().map(|(n, e)| format!("{n} {e:.1e}")).collect();
    eprintln!("lstm_{case}: max |cpu - torch|: {}", line.join(", "));
}

#[test]
fn small_matches_pytorch() {
    report("small", &check_case("small"));
}

#[test]
fn tiny_matches_pytorch() {
    report("tiny", &check_case("tiny"));
}

#[test]
fn nobias_matches_pytorch() {
    report("nobias", &check_case("nobias"));
}

#[test]
fn odd_sizes_match_pytorch() {
    report("odd", &check_case("odd"));
}

#[test]
fn saturated_gates_match_pytorch() {
    report("large_input", &check_case("large_input"));
}

/// The per-case tests above cover exactly the files on disk, so a newly generated fixture
/// cannot go unchecked.
#[test]
fn every_fixture_file_is_a_known_case() {
    let dir = fixtures::path("small").parent().unwrap().to_path_buf();
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            let case = name.strip_prefix("lstm_")?.strip_suffix(".safetensors")?;
            Some(case.to_string())
        })
        .collect();
    on_disk.sort();
    let mut known: Vec<String> = fixtures::all_cases()
        .iter()
        .map(|s| s.to_string())
        .collect();
    known.sort();
    assert_eq!(on_disk, known);
}

/// The fixtures themselves are consistent: `h_n` is the last step of `y`, and the two bias
/// gradients are equal (both biases enter the same sum).
#[test]
fn fixtures_are_self_consistent() {
    for case in fixtures::all_cases() {
        let fx = fixtures::load(case);
        let bh = fx.batch * fx.cfg.hidden_size();
        let y = fx.f64("y");
        assert_eq!(
            &y[(fx.steps - 1) * bh..],
            fx.f64("h_n").as_slice(),
            "{case}: h_n"
        );
        if fx.cfg.bias() {
            assert_close(
                &format!("{case}: grad.bias_ih vs grad.bias_hh"),
                &fx.f64("grad.bias_ih_l0"),
                &fx.f64("grad.bias_hh_l0"),
                1e-12,
                1e-12,
            );
        }
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn assert_same_weights(case: &str, a: &Weights, b: &Weights) {
    let (ta, tb) = (a.named_tensors(), b.named_tensors());
    assert_eq!(ta.len(), tb.len(), "{case}: tensor count");
    for ((na, sa, da), (nb, sb, db)) in ta.iter().zip(&tb) {
        assert_eq!((na, sa), (nb, sb), "{case}: tensor name/shape");
        assert_eq!(bits(da), bits(db), "{case}: {na} bits");
    }
}

/// `Weights::from_safetensors` reads exactly the stored tensors, and
/// `to_safetensors` → `from_safetensors` gives them back bit for bit.
#[test]
fn weights_round_trip_through_safetensors() {
    for case in fixtures::all_cases() {
        let fx: Fixture = fixtures::load(case);
        let g4 = 4 * fx.cfg.hidden_size();

        let names: Vec<String> = fx
            .weights
            .named_tensors()
            .into_iter()
            .map(|t| t.0)
            .collect();
        let mut expected = vec!["weight_ih_l0", "weight_hh_l0"];
        if fx.cfg.bias() {
            expected.extend(["bias_ih_l0", "bias_hh_l0"]);
        }
        assert_eq!(names, expected, "{case}: tensor names");

        for (name, shape, data) in fx.weights.named_tensors() {
            assert_eq!(fx.shape(&name), shape, "{case}: {name} shape");
            assert_eq!(
                bits(data),
                bits(&fx.f32(&name)),
                "{case}: {name} differs from the file"
            );
        }
        let layer = fx.weights.layer(0, 0);
        assert_eq!(layer.weight_ih.len(), g4 * fx.cfg.input_size());
        assert_eq!(
            layer.bias_ih.is_some(),
            fx.cfg.bias(),
            "{case}: bias_ih presence"
        );
        assert_eq!(
            layer.bias_hh.is_some(),
            fx.cfg.bias(),
            "{case}: bias_hh presence"
        );

        let bytes = fx.weights.to_safetensors().expect("to_safetensors");
        let back = Weights::from_safetensors(&fx.cfg, &bytes).expect("from_safetensors");
        assert_same_weights(case, &fx.weights, &back);
        assert_eq!(back, fx.weights, "{case}: PartialEq after round trip");
        assert_eq!(
            back.to_safetensors().expect("second to_safetensors"),
            bytes,
            "{case}: serialising twice gives different bytes"
        );
    }
}
