//! The CPU reference against PyTorch: every fixture made by `scripts/gen_fixtures.py`
//! (`nn.LSTM`, `nn.LSTM(proj_size=P)`, `nn.GRU`, `nn.RNN` with tanh and relu, run in float64,
//! gradients from autograd) must match `cpu::forward` and `cpu::backward` in every output and
//! every gradient the file holds. Also: the fixtures' weights survive a `Weights` safetensors
//! round trip bit for bit.

mod common;

use common::assert_close;
use common::fixtures::{self, Fixture};
use rnn_wgpu::cpu::{RefWeights, backward, forward, to_f64};
use rnn_wgpu::{CellKind, Weights};

/// Both sides compute in f64 from the same f32 inputs, so they differ only by summation order
/// and libm's `exp`/`tanh` (an ulp or so each), carried through at most 20 steps of a
/// contracting recurrence: the observed worst is a few 1e-14 absolute on weight gradients of
/// magnitude ~36 (1e-15 relative). 1e-9 leaves four orders of margin for other platforms' libm
/// while catching anything that is not rounding: an f32 accumulation anywhere would show up at
/// ~1e-7, a wrong gate or index at ~1e-1. (The bar is 1e-5 absolute; this is far
/// inside it.)
const ATOL: f64 = 1e-9;
const RTOL: f64 = 1e-9;

/// Run the reference on a fixture's inputs and compare every output and gradient; returns the
/// worst absolute error per tensor.
fn check(fx: &Fixture) -> Vec<(String, f64)> {
    let case = &fx.name;
    let (cfg, t, b) = (&fx.cfg, fx.steps, fx.batch);
    let (i, h, s) = (cfg.input_size(), cfg.hidden_size(), cfg.state_size());
    let gh = cfg.gate_count() * h;
    let w = RefWeights::new(cfg, fx.weights.layer(0, 0).unwrap());
    let (x, h0) = (to_f64(&fx.x), to_f64(&fx.h0));
    let (dy, dh_n) = (to_f64(&fx.dy), to_f64(&fx.dh_n));
    let c0 = fx.has_cell_state().then(|| to_f64(&fx.c0));
    let dc_n = fx.has_cell_state().then(|| to_f64(&fx.dc_n));

    let trace = forward(cfg, &w, &x, Some(&h0), c0.as_deref(), t, b).expect("forward");
    let grads = backward(
        cfg,
        &w,
        &x,
        Some(&h0),
        c0.as_deref(),
        &trace,
        Some(&dy),
        Some(&dh_n),
        dc_n.as_deref(),
        t,
        b,
    )
    .expect("backward");

    let mut pairs: Vec<(&str, &[f64], Vec<usize>)> = vec![
        ("y", &trace.y, vec![t, b, s]),
        ("h_n", &trace.h_n, vec![b, s]),
        ("grad.x", &grads.dx, vec![t, b, i]),
        ("grad.h0", &grads.dh0, vec![b, s]),
        ("grad.weight_ih_l0", &grads.d_weight_ih, vec![gh, i]),
        ("grad.weight_hh_l0", &grads.d_weight_hh, vec![gh, s]),
    ];
    if fx.has_cell_state() {
        let c_n = trace.c_n.as_deref().expect("an LSTM returns c_n");
        let dc0 = grads.dc0.as_deref().expect("an LSTM returns dc0");
        pairs.push(("c_n", c_n, vec![b, h]));
        pairs.push(("grad.c0", dc0, vec![b, h]));
    } else {
        assert!(trace.c_n.is_none(), "{case}: c_n from a cell without one");
        assert!(grads.dc0.is_none(), "{case}: dc0 from a cell without one");
    }
    if cfg.bias() {
        pairs.push(("grad.bias_ih_l0", &grads.d_bias_ih, vec![gh]));
        pairs.push(("grad.bias_hh_l0", &grads.d_bias_hh, vec![gh]));
    }
    match (cfg.proj_size(), grads.d_weight_hr.as_deref()) {
        (Some(p), Some(d_weight_hr)) => pairs.push(("grad.weight_hr_l0", d_weight_hr, vec![p, h])),
        (None, None) => {}
        (p, d) => panic!(
            "{case}: proj_size {p:?} but d_weight_hr is {}",
            if d.is_some() { "Some" } else { "None" }
        ),
    }
    assert!(
        grads.d_peephole.is_none(),
        "{case}: PyTorch has no peepholes"
    );

    // Every gradient in the file is compared: none can be added to the script and go
    // unchecked.
    let (_, header) = safetensors::SafeTensors::read_metadata(&fx.bytes).unwrap();
    let mut in_file: Vec<String> = header
        .tensors()
        .into_keys()
        .filter(|n| n.starts_with("grad.") || ["y", "h_n", "c_n"].contains(&n.as_str()))
        .collect();
    in_file.sort();
    let mut compared: Vec<String> = pairs.iter().map(|p| p.0.to_string()).collect();
    compared.sort();
    assert_eq!(in_file, compared, "{case}: expected tensors in the file");

    let mut worst = Vec::new();
    for (name, got, shape) in pairs {
        let want = fx.f64_shaped(name, &shape);
        assert_close(&format!("{case}/{name}"), got, &want, ATOL, RTOL);
        worst.push((name.to_string(), common::max_abs_diff(got, &want)));
    }
    worst
}

fn report(file: &str, worst: &[(String, f64)]) {
    let line: Vec<String> = worst.iter().map(|(n, e)| format!("{n} {e:.1e}")).collect();
    eprintln!("{file}: max |cpu - torch|: {}", line.join(", "));
}

fn check_lstm_case(case: &str) {
    report(&format!("lstm_{case}"), &check(&fixtures::load(case)));
}

fn check_file(stem: &str) {
    report(stem, &check(&fixtures::load_file(stem)));
}

#[test]
fn small_matches_pytorch() {
    check_lstm_case("small");
}

#[test]
fn tiny_matches_pytorch() {
    check_lstm_case("tiny");
}

#[test]
fn nobias_matches_pytorch() {
    check_lstm_case("nobias");
}

#[test]
fn odd_sizes_match_pytorch() {
    check_lstm_case("odd");
}

#[test]
fn saturated_gates_match_pytorch() {
    check_lstm_case("large_input");
}

#[test]
fn gru_small_matches_pytorch() {
    check_file("gru_small");
}

/// B = 1, T = 1.
#[test]
fn gru_single_step_single_row_matches_pytorch() {
    check_file("gru_tiny");
}

#[test]
fn gru_odd_sizes_match_pytorch() {
    check_file("gru_odd");
}

#[test]
fn gru_nobias_matches_pytorch() {
    check_file("gru_nobias");
}

#[test]
fn gru_saturated_gates_match_pytorch() {
    check_file("gru_large_input");
}

#[test]
fn rnn_tanh_small_matches_pytorch() {
    check_file("rnn_tanh_small");
}

/// I = H = B = T = 1.
#[test]
fn rnn_tanh_tiny_matches_pytorch() {
    check_file("rnn_tanh_tiny");
}

/// Odd I and H, B = 1.
#[test]
fn rnn_tanh_odd_sizes_match_pytorch() {
    check_file("rnn_tanh_odd");
}

#[test]
fn rnn_relu_small_matches_pytorch() {
    check_file("rnn_relu_small");
}

/// Odd I and H, B = 1, no bias.
#[test]
fn rnn_relu_odd_sizes_nobias_match_pytorch() {
    check_file("rnn_relu_odd");
}

#[test]
fn lstm_projection_small_matches_pytorch() {
    check_file("lstm_proj_small");
}

/// H = 2, P = 1, B = T = 1.
#[test]
fn lstm_projection_tiny_matches_pytorch() {
    check_file("lstm_proj_tiny");
}

/// Odd I, H and P, B = 1, no bias.
#[test]
fn lstm_projection_odd_sizes_nobias_match_pytorch() {
    check_file("lstm_proj_odd");
}

/// Every torch fixture, as a `Fixture`: the plain LSTM cases and the other cells.
fn every_fixture() -> Vec<Fixture> {
    let lstm = fixtures::all_cases().into_iter().map(fixtures::load);
    lstm.chain(fixtures::cell_files().into_iter().map(fixtures::load_file))
        .collect()
}

/// The tests above cover exactly the torch files on disk, so a newly generated fixture cannot
/// go unchecked. (`onnx_*` files belong to `tests/onnx_parity.rs`, `optim` to the optimiser
/// tests.)
#[test]
fn every_fixture_file_is_a_known_case() {
    let dir = fixtures::path("small").parent().unwrap().to_path_buf();
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            let stem = name.strip_suffix(".safetensors")?;
            (stem != "optim" && !stem.starts_with("onnx_")).then(|| stem.to_string())
        })
        .collect();
    on_disk.sort();
    let mut known: Vec<String> = fixtures::all_cases()
        .iter()
        .map(|c| format!("lstm_{c}"))
        .chain(fixtures::cell_files().iter().map(|s| s.to_string()))
        .collect();
    known.sort();
    assert_eq!(on_disk, known);
}

/// The fixtures themselves are consistent: `h_n` is the last step of `y`, the metadata
/// describes the cell the name says, and the two bias gradients are equal wherever both
/// biases enter the same sum (everywhere but a GRU's `n` block, where `b_hn` sits behind the
/// reset gate).
#[test]
fn fixtures_are_self_consistent() {
    for fx in every_fixture() {
        let case = &fx.name;
        let bs = fx.batch * fx.cfg.state_size();
        let y = fx.f64("y");
        assert_eq!(
            &y[(fx.steps - 1) * bs..],
            fx.f64("h_n").as_slice(),
            "{case}: h_n"
        );
        let cell = match fx.cfg.cell() {
            CellKind::Lstm => "lstm_",
            CellKind::Gru => "gru_",
            CellKind::Rnn => "rnn_",
            other => panic!("{case}: unexpected cell {other:?}"),
        };
        let stem = match fixtures::all_cases().contains(&case.as_str()) {
            true => format!("lstm_{case}"),
            false => case.to_string(),
        };
        assert!(stem.starts_with(cell), "{stem}: metadata says {cell}");
        assert_eq!(
            stem.starts_with("lstm_proj_"),
            fx.cfg.proj_size().is_some(),
            "{case}: proj_size"
        );
        if fx.cfg.bias() {
            let h = fx.cfg.hidden_size();
            let same = match fx.cfg.cell() {
                CellKind::Gru => 2 * h,
                _ => fx.cfg.gate_count() * h,
            };
            assert_close(
                &format!("{case}: grad.bias_ih vs grad.bias_hh"),
                &fx.f64("grad.bias_ih_l0")[..same],
                &fx.f64("grad.bias_hh_l0")[..same],
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

/// `Weights::from_safetensors_config` reads exactly the stored tensors, and
/// `to_safetensors` → `from_safetensors_config` gives them back bit for bit.
#[test]
fn weights_round_trip_through_safetensors() {
    for fx in every_fixture() {
        let case = &fx.name;
        let gh = fx.cfg.gate_count() * fx.cfg.hidden_size();

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
        if fx.cfg.proj_size().is_some() {
            expected.push("weight_hr_l0");
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
        let layer = fx.weights.layer(0, 0).unwrap();
        assert_eq!(layer.weight_ih.len(), gh * fx.cfg.input_size());
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
        let back = Weights::from_safetensors_config(&fx.cfg, &bytes).expect("from_safetensors");
        assert_same_weights(case, &fx.weights, &back);
        assert_eq!(back, fx.weights, "{case}: PartialEq after round trip");
        assert_eq!(
            back.to_safetensors().expect("second to_safetensors"),
            bytes,
            "{case}: serialising twice gives different bytes"
        );
    }
}
