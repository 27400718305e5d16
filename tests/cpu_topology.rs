//! The CPU stack reference (`cpu::stack_forward` / `cpu::stack_backward`) as the spec of the
//! topologies: several layers, bidirectional, per-sequence lengths, batch-first.
//!
//! - PyTorch parity: every `TOPOLOGY_CASES` file of `scripts/gen_fixtures.py` (2-layer
//!   bidirectional `nn.LSTM` / `nn.GRU`, packed with `enforce_sorted=False`, batch-first,
//!   LSTM with `proj_size`) matches in every output and every gradient the file holds.
//! - Padding: outputs past a sequence's end, and the input gradient there, are exactly zero.
//! - `Direction::Reverse` is the forward direction run over each sequence reversed in time.
//! - A finite-difference check of `stack_backward` on a small 2-layer bidirectional LSTM and
//!   GRU with lengths, for the inputs, the states and every parameter tensor.
//! - Bad lengths get typed errors.

mod common;

use common::assert_close;
use common::fixtures::{self, TopologyFixture};
use rnn_wgpu::cpu::{StackTrace, stack_backward, stack_forward, to_f64};
use rnn_wgpu::{CellKind, Direction, Error, Layout, RnnConfig, Weights};

/// As `tests/cpu_parity.rs`: both sides compute in f64 from the same f32 inputs, so they differ
/// by rounding only (observed: ~1e-15 relative); 1e-9 catches anything else (an f32
/// accumulation would show at ~1e-7, a wrong index or direction at ~1e-1).
const ATOL: f64 = 1e-9;
const RTOL: f64 = 1e-9;

/// PyTorch's suffix of layer-direction `k = l*D + d`: `_l{l}` or `_l{l}_reverse`.
fn suffix(k: usize, dirs: usize) -> String {
    let (l, d) = (k / dirs, k % dirs);
    if d == 0 {
        format!("_l{l}")
    } else {
        format!("_l{l}_reverse")
    }
}

fn check_fixture(fx: &TopologyFixture) {
    let case = &fx.name;
    let (cfg, t, b) = (&fx.cfg, fx.steps, fx.batch);
    let (h, s, dirs) = (cfg.hidden_size(), cfg.state_size(), cfg.num_directions());
    let n_states = cfg.num_layers() * dirs;
    let seq = |f: usize| match cfg.layout() {
        Layout::BatchFirst => vec![b, t, f],
        _ => vec![t, b, f],
    };
    let (x, h0, dy, dh_n) = (
        to_f64(&fx.x),
        to_f64(&fx.h0),
        to_f64(&fx.dy),
        to_f64(&fx.dh_n),
    );
    let c0 = fx.has_cell_state().then(|| to_f64(&fx.c0));
    let dc_n = fx.has_cell_state().then(|| to_f64(&fx.dc_n));
    let lengths = fx.lengths.as_deref();

    let trace = stack_forward(
        cfg,
        &fx.weights,
        &x,
        Some(&h0),
        c0.as_deref(),
        lengths,
        t,
        b,
    )
    .expect("stack_forward");
    let grads = stack_backward(
        cfg,
        &fx.weights,
        Some(&h0),
        c0.as_deref(),
        lengths,
        &trace,
        Some(&dy),
        Some(&dh_n),
        dc_n.as_deref(),
        t,
        b,
    )
    .expect("stack_backward");

    let mut pairs: Vec<(String, &[f64], Vec<usize>)> = vec![
        ("y".into(), &trace.y, seq(dirs * s)),
        ("h_n".into(), &trace.h_n, vec![n_states, b, s]),
        ("grad.x".into(), &grads.dx, seq(cfg.input_size())),
        ("grad.h0".into(), &grads.dh0, vec![n_states, b, s]),
    ];
    match (fx.has_cell_state(), &trace.c_n, &grads.dc0) {
        (true, Some(c_n), Some(dc0)) => {
            pairs.push(("c_n".into(), c_n, vec![n_states, b, h]));
            pairs.push(("grad.c0".into(), dc0, vec![n_states, b, h]));
        }
        (false, None, None) => {}
        _ => panic!("{case}: c_n / dc0 present exactly for an LSTM"),
    }
    assert_eq!(
        grads.layers.len(),
        n_states,
        "{case}: one CellGrads per layer-direction"
    );
    let gh = cfg.gate_count() * h;
    for (k, g) in grads.layers.iter().enumerate() {
        let sfx = suffix(k, dirs);
        let i_l = cfg.layer_input_size(k / dirs);
        pairs.push((
            format!("grad.weight_ih{sfx}"),
            &g.d_weight_ih,
            vec![gh, i_l],
        ));
        pairs.push((format!("grad.weight_hh{sfx}"), &g.d_weight_hh, vec![gh, s]));
        pairs.push((format!("grad.bias_ih{sfx}"), &g.d_bias_ih, vec![gh]));
        pairs.push((format!("grad.bias_hh{sfx}"), &g.d_bias_hh, vec![gh]));
        if let Some(p) = cfg.proj_size() {
            let d = g
                .d_weight_hr
                .as_deref()
                .expect("a projection has d_weight_hr");
            pairs.push((format!("grad.weight_hr{sfx}"), d, vec![p, h]));
        }
    }

    // Every expected tensor in the file is compared: none can be added and go unchecked.
    let mut in_file: Vec<String> = fx
        .tensor_names()
        .into_iter()
        .filter(|n| n.starts_with("grad.") || ["y", "h_n", "c_n"].contains(&n.as_str()))
        .collect();
    in_file.sort();
    let mut compared: Vec<String> = pairs.iter().map(|p| p.0.clone()).collect();
    compared.sort();
    assert_eq!(in_file, compared, "{case}: expected tensors in the file");

    let mut worst = Vec::new();
    for (name, got, shape) in &pairs {
        let want = fx.f64_shaped(name, shape);
        assert_close(&format!("{case}/{name}"), got, &want, ATOL, RTOL);
        worst.push(format!("{name} {:.1e}", common::max_abs_diff(got, &want)));
    }
    eprintln!("{case}: max |cpu - torch|: {}", worst.join(", "));

    if let Some(lengths) = lengths {
        assert_zero_past_lengths(case, cfg, &trace.y, lengths, t, b, dirs * s, "y");
        assert_zero_past_lengths(case, cfg, &grads.dx, lengths, t, b, cfg.input_size(), "dx");
    }
}

/// `v` (in `cfg.layout()`, `f` features) is exactly zero at every step past its row's length.
#[allow(clippy::too_many_arguments)]
fn assert_zero_past_lengths(
    case: &str,
    cfg: &RnnConfig,
    v: &[f64],
    lengths: &[usize],
    t: usize,
    b: usize,
    f: usize,
    what: &str,
) {
    for (row, &len) in lengths.iter().enumerate() {
        for step in len..t {
            let at = match cfg.layout() {
                Layout::BatchFirst => (row * t + step) * f,
                _ => (step * b + row) * f,
            };
            assert!(
                v[at..at + f].iter().all(|&e| e == 0.0),
                "{case}: {what} at row {row}, step {step} (length {len}) is not exactly zero"
            );
        }
    }
}

#[test]
fn stack_matches_pytorch_on_every_topology_fixture() {
    for stem in fixtures::topology_files() {
        check_fixture(&fixtures::load_topology(stem));
    }
}

/// The parity test covers exactly the files in `tests/fixtures/topology/`.
#[test]
fn every_topology_fixture_file_is_a_known_case() {
    let mut on_disk: Vec<String> = std::fs::read_dir(fixtures::topology_dir())
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".safetensors").map(str::to_string)
        })
        .collect();
    on_disk.sort();
    let mut known: Vec<String> = fixtures::topology_files()
        .iter()
        .map(|s| s.to_string())
        .collect();
    known.sort();
    assert_eq!(on_disk, known);
}

/// Seeded values in `[-scale, scale]`, widened.
fn seeded(seed: u64, n: usize, scale: f32) -> Vec<f64> {
    to_f64(&common::seeded(seed, n, scale))
}

/// Time-reverse the first `len` steps of row `row` of a seq-major `[T, B, F]` tensor into a
/// `[len, 1, F]` sequence.
fn reversed_row(v: &[f64], row: usize, len: usize, b: usize, f: usize) -> Vec<f64> {
    (0..len)
        .rev()
        .flat_map(|t| v[(t * b + row) * f..(t * b + row + 1) * f].to_vec())
        .collect()
}

#[test]
fn reverse_direction_is_forward_over_each_reversed_sequence() {
    let (i, h, t, b) = (3, 4, 5, 3);
    let lengths = [5usize, 2, 4];
    for cell in [CellKind::Lstm, CellKind::Gru] {
        let start = |d| {
            match cell {
                CellKind::Lstm => RnnConfig::lstm(i, h),
                _ => RnnConfig::gru(i, h),
            }
            .num_layers(2)
            .direction(d)
            .build()
            .unwrap()
        };
        let (rev, fwd) = (start(Direction::Reverse), start(Direction::Forward));
        let w_rev = Weights::init(&rev, 7);
        // The same tensors under the forward configuration (both name them `_l{k}`).
        let w_fwd = Weights::from_layers(&fwd, (0..2).map(|l| w_rev.layer(l, 0).clone()).collect())
            .unwrap();
        let x = seeded(1, t * b * i, 1.0);
        let h0 = seeded(2, 2 * b * h, 1.0);
        let c0 = (cell == CellKind::Lstm).then(|| seeded(3, 2 * b * h, 1.0));
        let got = stack_forward(
            &rev,
            &w_rev,
            &x,
            Some(&h0),
            c0.as_deref(),
            Some(&lengths),
            t,
            b,
        )
        .unwrap();
        for (row, &len) in lengths.iter().enumerate() {
            let pick = |v: &[f64]| -> Vec<f64> {
                (0..2)
                    .flat_map(|k| v[(k * b + row) * h..(k * b + row + 1) * h].to_vec())
                    .collect()
            };
            let xr = reversed_row(&x, row, len, b, i);
            let c0r = c0.as_deref().map(pick);
            let want = stack_forward(
                &fwd,
                &w_fwd,
                &xr,
                Some(&pick(&h0)),
                c0r.as_deref(),
                None,
                len,
                1,
            )
            .unwrap();
            let name = format!("{cell:?} row {row}");
            let y_row = reversed_row(&got.y, row, len, b, h);
            assert_close(&format!("{name} y"), &y_row, &want.y, 0.0, 0.0);
            assert_close(&format!("{name} h_n"), &pick(&got.h_n), &want.h_n, 0.0, 0.0);
            if let (Some(a), Some(c)) = (&got.c_n, &want.c_n) {
                assert_close(&format!("{name} c_n"), &pick(a), c, 0.0, 0.0);
            }
        }
    }
}

/// The scalar both sides differentiate: `sum(y*dy) + sum(h_n*dh_n) + sum(c_n*dc_n)`.
fn loss(tr: &StackTrace, dy: &[f64], dh_n: &[f64], dc_n: Option<&[f64]>) -> f64 {
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(a, b)| a * b).sum::<f64>();
    dot(&tr.y, dy)
        + dot(&tr.h_n, dh_n)
        + match (&tr.c_n, dc_n) {
            (Some(c), Some(d)) => dot(c, d),
            _ => 0.0,
        }
}

/// Element `e` of parameter `tensor` of layer `l`, direction `d`.
fn param_mut<'a>(w: &'a mut Weights, l: usize, d: usize, tensor: &str, e: usize) -> &'a mut f32 {
    let lw = w.layer_mut(l, d);
    match tensor {
        "weight_ih" => &mut lw.weight_ih[e],
        "weight_hh" => &mut lw.weight_hh[e],
        "bias_ih" => &mut lw.bias_ih.as_mut().expect("bias")[e],
        "bias_hh" => &mut lw.bias_hh.as_mut().expect("bias")[e],
        other => panic!("no parameter {other}"),
    }
}

/// Central differences of the loss against `stack_backward`, on a 2-layer bidirectional model
/// with lengths in no order (one full), batch-first.
///
/// Inputs and states are f64: step 1e-5, truncation error ~1e-10, so 1e-7 is a tight bar.
/// Parameters are f32 in `Weights`: they move by ~1e-3 (the step actually taken, after f32
/// rounding, is the divisor), truncation error ~1e-6 relative, so 1e-5 + 1e-4 relative.
fn finite_difference_check(cell: CellKind) {
    let (i, h, t, b) = (3, 3, 4, 3);
    let lengths = [2usize, 4, 1];
    let cfg = match cell {
        CellKind::Lstm => RnnConfig::lstm(i, h),
        _ => RnnConfig::gru(i, h),
    }
    .num_layers(2)
    .direction(Direction::Bidirectional)
    .layout(Layout::BatchFirst)
    .build()
    .unwrap();
    let has_c = cell == CellKind::Lstm;
    let n_states = 4;
    let mut w = Weights::init(&cfg, 11);
    let x = seeded(21, b * t * i, 1.0);
    let h0 = seeded(22, n_states * b * h, 0.8);
    let c0 = has_c.then(|| seeded(23, n_states * b * h, 0.8));
    let dy = seeded(24, b * t * 2 * h, 1.0);
    let dh_n = seeded(25, n_states * b * h, 1.0);
    let dc_n = has_c.then(|| seeded(26, n_states * b * h, 1.0));
    let lens = Some(&lengths[..]);

    let eval = |w: &Weights, x: &[f64], h0: &[f64], c0: Option<&[f64]>| -> f64 {
        let tr = stack_forward(&cfg, w, x, Some(h0), c0, lens, t, b).unwrap();
        loss(&tr, &dy, &dh_n, dc_n.as_deref())
    };
    let tr = stack_forward(&cfg, &w, &x, Some(&h0), c0.as_deref(), lens, t, b).unwrap();
    let g = stack_backward(
        &cfg,
        &w,
        Some(&h0),
        c0.as_deref(),
        lens,
        &tr,
        Some(&dy),
        Some(&dh_n),
        dc_n.as_deref(),
        t,
        b,
    )
    .unwrap();

    let eps = 1e-5;
    let numeric = |v: &[f64], f: &dyn Fn(&[f64]) -> f64| -> Vec<f64> {
        (0..v.len())
            .map(|k| {
                let (mut p, mut m) = (v.to_vec(), v.to_vec());
                p[k] += eps;
                m[k] -= eps;
                (f(&p) - f(&m)) / (2.0 * eps)
            })
            .collect()
    };
    let name = |what: &str| format!("{cell:?} fd {what}");
    let dx = numeric(&x, &|x| eval(&w, x, &h0, c0.as_deref()));
    assert_close(&name("dx"), &g.dx, &dx, 1e-7, 1e-7);
    let dh0 = numeric(&h0, &|h0| eval(&w, &x, h0, c0.as_deref()));
    assert_close(&name("dh0"), &g.dh0, &dh0, 1e-7, 1e-7);
    if let Some(c0) = &c0 {
        let dc0 = numeric(c0, &|c0| eval(&w, &x, &h0, Some(c0)));
        let got = g.dc0.as_deref().unwrap();
        assert_close(&name("dc0"), got, &dc0, 1e-7, 1e-7);
    }

    // Every parameter of every layer-direction, through `Weights::layer_mut`.
    for k in 0..n_states {
        let (l, d) = (k / 2, k % 2);
        let cg = &g.layers[k];
        let tensors: [(&str, &[f64]); 4] = [
            ("weight_ih", &cg.d_weight_ih),
            ("weight_hh", &cg.d_weight_hh),
            ("bias_ih", &cg.d_bias_ih),
            ("bias_hh", &cg.d_bias_hh),
        ];
        for (tensor, analytic) in tensors {
            let len = analytic.len();
            let mut fd = Vec::with_capacity(len);
            for e in 0..len {
                let orig = *param_mut(&mut w, l, d, tensor, e);
                let (up, down) = (orig + 1e-3, orig - 1e-3);
                *param_mut(&mut w, l, d, tensor, e) = up;
                let lp = eval(&w, &x, &h0, c0.as_deref());
                *param_mut(&mut w, l, d, tensor, e) = down;
                let lm = eval(&w, &x, &h0, c0.as_deref());
                *param_mut(&mut w, l, d, tensor, e) = orig;
                fd.push((lp - lm) / (up as f64 - down as f64));
            }
            assert_close(
                &name(&format!("{tensor}{}", suffix(k, 2))),
                analytic,
                &fd,
                1e-5,
                1e-4,
            );
        }
    }
}

#[test]
fn stack_backward_matches_finite_differences_lstm() {
    finite_difference_check(CellKind::Lstm);
}

#[test]
fn stack_backward_matches_finite_differences_gru() {
    finite_difference_check(CellKind::Gru);
}

#[test]
fn bad_lengths_get_typed_errors() {
    let cfg = RnnConfig::lstm(2, 3)
        .direction(Direction::Bidirectional)
        .build()
        .unwrap();
    let w = Weights::init(&cfg, 1);
    let (t, b) = (4, 2);
    let x = vec![0.5; t * b * 2];
    let run = |lengths: &[usize]| stack_forward(&cfg, &w, &x, None, None, Some(lengths), t, b);
    assert!(matches!(run(&[4, 0]), Err(Error::ZeroSize(_))));
    assert!(matches!(run(&[5, 1]), Err(Error::ShapeMismatch { .. })));
    assert!(matches!(run(&[4, 1, 2]), Err(Error::ShapeMismatch { .. })));
    assert!(run(&[4, 1]).is_ok());
}

#[test]
fn topology_configurations_build_and_dropout_is_validated() {
    let cfg = RnnConfig::gru(3, 4)
        .num_layers(3)
        .direction(Direction::Bidirectional)
        .layout(Layout::BatchFirst)
        .dropout(0.5)
        .build()
        .unwrap();
    assert_eq!((cfg.num_directions(), cfg.output_size()), (2, 8));
    assert_eq!(cfg.layer_input_size(1), 8);
    assert_eq!(cfg.dropout(), 0.5);
    let reverse = RnnConfig::lstm(3, 4).direction(Direction::Reverse).build();
    assert_eq!(reverse.unwrap().num_directions(), 1);
    for p in [-0.1, 1.0, f32::NAN] {
        assert!(
            matches!(
                RnnConfig::lstm(3, 4).dropout(p).build(),
                Err(Error::InvalidConfig(_))
            ),
            "dropout {p}"
        );
    }
    // The stack reference does not model dropout yet, and says so.
    let w = Weights::init(&cfg, 1);
    let x = vec![0.0; 2 * 3];
    assert!(matches!(
        stack_forward(&cfg, &w, &x, None, None, None, 2, 1),
        Err(Error::Unsupported(_))
    ));
}
