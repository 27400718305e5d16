//! The CPU reference against onnxruntime: every fixture made by
//! `scripts/gen_onnx_fixtures.py` (a single ONNX `LSTM`/`GRU`/`RNN` node run by onnxruntime)
//! is imported with `onnx::import_layer`, configured from the node's attributes, run through
//! `cpu::forward`, and must reproduce `Y`, `Y_h` and `Y_c`. These cover what PyTorch lacks:
//! peepholes, the coupled input/forget gate, the gate clip, every ONNX activation with its
//! alpha/beta, and the "reset before" GRU.
//!
//! Also: the weights and attributes the crate exports for the imported model are exactly the
//! ones that were fed to onnxruntime (the layout and the attribute conventions, both ways).

mod common;

use common::assert_close;
use common::fixtures::{self, OnnxFixture};
use rnn_wgpu::cpu::{RefWeights, forward, to_f64};
use rnn_wgpu::{CellKind, Weights, onnx};

/// onnxruntime runs these operators in float32 only (there is no float64 kernel), with MLAS's
/// vectorised sigmoid/tanh and, in its GRU, a rational approximation of both: a few ulp per
/// operation, carried through at most 7 steps of dot products of at most 16 terms over values
/// of magnitude < 3. The generating script measured the float32 results against its own
/// float64 transcription of the ONNX equations at 7e-8 .. 9e-7 (worst: the GRU with Softplus,
/// whose unbounded candidate grows largest). 1e-5 absolute leaves an order of magnitude above
/// that, while every semantic error the fixtures target moves some output by more than 0.1
/// (the script checks that each attribute, the clip order and the alpha/beta alignment
/// change the output by at least 1e-3, and measures 0.16 and up).
const ORT_ATOL: f64 = 1e-5;
const ORT_RTOL: f64 = 1e-5;

/// The same outputs from the script's float64 transcription (validated against onnxruntime
/// above): both sides are f64 on the same f32 inputs, so only rounding separates them, as in
/// `tests/cpu_parity.rs`. This catches a semantic slip too small to stand out of float32
/// noise.
const F64_ATOL: f64 = 1e-9;
const F64_RTOL: f64 = 1e-9;

fn import(fx: &OnnxFixture) -> Weights {
    let cfg = fx.config();
    onnx::import_layer(&cfg, &fx.w, &fx.r, fx.b.as_deref(), fx.p.as_deref())
        .unwrap_or_else(|e| panic!("onnx_{}: import_layer: {e}", fx.name))
}

/// Run the reference on the node's inputs and compare with onnxruntime and with the float64
/// transcription; returns the worst absolute error against onnxruntime per output.
fn check_case(case: &str) -> Vec<(String, f64)> {
    let fx = fixtures::load_onnx(case);
    let cfg = fx.config();
    let weights = import(&fx);
    let w = RefWeights::new(&cfg, weights.layer(0, 0).unwrap());
    let x = to_f64(&fx.x);
    let h0 = fx.initial_h.as_deref().map(to_f64);
    let c0 = fx.initial_c.as_deref().map(to_f64);
    let trace = forward(
        &cfg,
        &w,
        &x,
        h0.as_deref(),
        c0.as_deref(),
        fx.steps,
        fx.batch,
    )
    .unwrap_or_else(|e| panic!("onnx_{case}: forward: {e}"));

    // (name, cpu, onnxruntime, float64 transcription)
    type Compared<'a> = (&'a str, &'a [f64], &'a [f32], &'a [f64]);
    let mut outputs: Vec<Compared> = vec![
        ("Y", &trace.y, &fx.y, &fx.reference_y),
        ("Y_h", &trace.h_n, &fx.y_h, &fx.reference_y_h),
    ];
    match (&trace.c_n, &fx.y_c, &fx.reference_y_c) {
        (Some(c_n), Some(y_c), Some(reference)) => outputs.push(("Y_c", c_n, y_c, reference)),
        (None, None, None) => {}
        _ => panic!("onnx_{case}: c_n and Y_c do not match up"),
    }

    let (mut worst, mut worst_f64) = (Vec::new(), 0.0f64);
    for (name, got, ort, reference) in outputs {
        let ort = to_f64(ort);
        assert_close(
            &format!("onnx_{case}/{name} vs onnxruntime"),
            got,
            &ort,
            ORT_ATOL,
            ORT_RTOL,
        );
        assert_close(
            &format!("onnx_{case}/{name} vs float64 transcription"),
            got,
            reference,
            F64_ATOL,
            F64_RTOL,
        );
        worst.push((name.to_string(), common::max_abs_diff(got, &ort)));
        worst_f64 = worst_f64.max(common::max_abs_diff(got, reference));
    }
    let line: Vec<String> = worst.iter().map(|(n, e)| format!("{n} {e:.1e}")).collect();
    eprintln!(
        "onnx_{case}: max |cpu - onnxruntime {}|: {} (the script's float64 transcription: \
         {:.1e} from onnxruntime, {worst_f64:.1e} from cpu)",
        fx.onnxruntime_version,
        line.join(", "),
        fx.ort_vs_f64_max_abs
    );
    worst
}

/// ONNX `P`: the i and f gates see `c_{t-1}`, the o gate sees `c_t`.
#[test]
fn lstm_peepholes_match_onnxruntime() {
    check_case("lstm_peephole");
}

/// `input_forget = 1`: `f = 1 - i`.
#[test]
fn lstm_coupled_input_forget_matches_onnxruntime() {
    check_case("lstm_input_forget");
}

/// `clip = 1.5` with about a third of the pre-activations beyond it.
#[test]
fn lstm_gate_clip_matches_onnxruntime() {
    check_case("lstm_clip");
}

/// The clip bounds the whole pre-activation, peephole term included.
#[test]
fn lstm_gate_clip_with_peepholes_matches_onnxruntime() {
    check_case("lstm_clip_peephole");
}

/// HardSigmoid gates, LeakyRelu cell input, ScaledTanh output: `activation_alpha` has three
/// entries and `activation_beta` two, read in order by the activations that take them.
#[test]
fn lstm_hardsigmoid_leakyrelu_scaledtanh_match_onnxruntime() {
    check_case("lstm_activations_a");
}

/// Softsign gates, Elu cell input, Affine output.
#[test]
fn lstm_softsign_elu_affine_match_onnxruntime() {
    check_case("lstm_activations_b");
}

/// ThresholdedRelu gates, Softplus candidate (reset after).
#[test]
fn gru_thresholdedrelu_softplus_match_onnxruntime() {
    check_case("gru_activations_c");
}

/// HardSigmoid gates, Relu candidate (reset before).
#[test]
fn gru_hardsigmoid_relu_match_onnxruntime() {
    check_case("gru_activations_d");
}

/// `linear_before_reset = 0`: `n = tanh(W_in x + b_in + W_hn (r*h) + b_hn)`.
#[test]
fn gru_reset_before_matches_onnxruntime() {
    check_case("gru_reset_before");
}

/// `linear_before_reset = 1` (PyTorch's form) through the ONNX layout.
#[test]
fn gru_reset_after_matches_onnxruntime() {
    check_case("gru_reset_after");
}

/// `clip = 0.8` on a reset-before GRU, about half the pre-activations beyond it.
#[test]
fn gru_gate_clip_matches_onnxruntime() {
    check_case("gru_clip");
}

#[test]
fn rnn_tanh_matches_onnxruntime() {
    check_case("rnn_tanh");
}

/// No `B` and no `initial_h`: zero biases and a zero initial state.
#[test]
fn rnn_relu_without_bias_or_initial_state_matches_onnxruntime() {
    check_case("rnn_relu");
}

/// The tests above cover exactly the `onnx_*` files on disk.
#[test]
fn every_onnx_fixture_file_is_a_known_case() {
    let dir = fixtures::onnx_path("x").parent().unwrap().to_path_buf();
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            let case = name.strip_prefix("onnx_")?.strip_suffix(".safetensors")?;
            Some(case.to_string())
        })
        .collect();
    on_disk.sort();
    let mut known: Vec<String> = fixtures::onnx_cases()
        .iter()
        .map(|s| s.to_string())
        .collect();
    known.sort();
    assert_eq!(on_disk, known);
}

/// The other direction: exporting the imported weights gives back exactly the `W`, `R`,
/// `B`, `P` that onnxruntime ran, bit for bit.
#[test]
fn exported_weights_are_the_ones_fed_to_onnxruntime() {
    for case in fixtures::onnx_cases() {
        let fx = fixtures::load_onnx(case);
        let g = fx.cell.gate_count();
        let (i, h) = (fx.input_size, fx.hidden_size);
        let o = onnx::export_layer(&import(&fx), 0).expect("export_layer");
        assert_eq!(o.w_shape, [1, g * h, i], "{case}: W shape");
        assert_eq!(o.r_shape, [1, g * h, h], "{case}: R shape");
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&o.w), bits(&fx.w), "{case}: W");
        assert_eq!(bits(&o.r), bits(&fx.r), "{case}: R");
        assert_eq!(
            o.b.as_deref().map(bits),
            fx.b.as_deref().map(bits),
            "{case}: B"
        );
        assert_eq!(
            o.p.as_deref().map(bits),
            fx.p.as_deref().map(bits),
            "{case}: P"
        );
    }
}

/// The attributes the crate writes for each configuration are the node's: activation names,
/// `activation_alpha` / `activation_beta` in onnxruntime's order, `clip`, `input_forget`,
/// `linear_before_reset`.
#[test]
fn exported_attributes_are_the_ones_fed_to_onnxruntime() {
    for case in fixtures::onnx_cases() {
        let fx = fixtures::load_onnx(case);
        let attrs = onnx::onnx_attributes(&fx.config()).expect("onnx_attributes");
        let get = |key: &str| {
            attrs
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.as_str())
        };
        let floats = |key: &str| -> Vec<f32> {
            get(key)
                .map(|v| v.split(',').map(|x| x.parse().expect("a float")).collect())
                .unwrap_or_default()
        };
        let names: Vec<&str> = fx.activations.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(get("activations"), Some(names.join(",").as_str()), "{case}");
        assert_eq!(floats("activation_alpha"), fx.activation_alpha, "{case}");
        assert_eq!(floats("activation_beta"), fx.activation_beta, "{case}");
        assert_eq!(
            get("hidden_size"),
            Some(fx.hidden_size.to_string().as_str())
        );
        assert_eq!(
            get("clip").map(|c| c.parse::<f32>().expect("a float")),
            fx.clip,
            "{case}: clip"
        );
        let flag = |on: bool| if on { "1" } else { "0" };
        match fx.cell {
            CellKind::Lstm => {
                assert_eq!(get("input_forget"), Some(flag(fx.input_forget)), "{case}")
            }
            CellKind::Gru => assert_eq!(
                get("linear_before_reset"),
                fx.linear_before_reset.map(flag),
                "{case}"
            ),
            _ => {}
        }
    }
}
