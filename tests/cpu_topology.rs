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
//! - Dropout between layers (`stack_forward_train` / `stack_forward_with_masks`): the same
//!   finite-difference check with p = 0.4 on 2- and 3-layer bidirectional LSTMs and GRUs
//!   (seq-major, and packed + batch-first); the trained model decomposes into its layers
//!   joined by exactly `dropout::mask`, forward and backward, so gradients flow only through
//!   kept units; eval mode ignores dropout and p = 0 training is eval, bit for bit; masks of
//!   the wrong shape get typed errors.
//! - Bad lengths get typed errors.

mod common;

use common::fixtures::{self, TopologyFixture};
use common::{assert_close, assert_zero_past_lengths};
use rnn_wgpu::cpu::{
    StackGrads, StackTrace, stack_backward, stack_forward, stack_forward_train,
    stack_forward_with_masks, to_f64,
};
use rnn_wgpu::dropout;
use rnn_wgpu::{CellKind, Direction, Error, Layout, RnnConfig, RnnConfigBuilder, Weights};
use rnn_wgpu::{HostState, RunOptions, Upstream};

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
        t,
        b,
        HostState {
            h0: Some(&h0),
            c0: c0.as_deref(),
        },
        &RunOptions {
            lengths,
            ..Default::default()
        },
    )
    .expect("stack_forward");
    let grads = stack_backward(
        cfg,
        &fx.weights,
        &trace,
        HostState {
            h0: Some(&h0),
            c0: c0.as_deref(),
        },
        Upstream {
            dy: Some(&dy),
            dh_n: Some(&dh_n),
            dc_n: dc_n.as_deref(),
        },
        &RunOptions {
            lengths,
            ..Default::default()
        },
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
        let w_fwd = Weights::from_layers(
            &fwd,
            (0..2).map(|l| w_rev.layer(l, 0).unwrap().clone()).collect(),
        )
        .unwrap();
        let x = seeded(1, t * b * i, 1.0);
        let h0 = seeded(2, 2 * b * h, 1.0);
        let c0 = (cell == CellKind::Lstm).then(|| seeded(3, 2 * b * h, 1.0));
        let got = stack_forward(
            &rev,
            &w_rev,
            &x,
            t,
            b,
            HostState {
                h0: Some(&h0),
                c0: c0.as_deref(),
            },
            &RunOptions {
                lengths: Some(&lengths),
                ..Default::default()
            },
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
                len,
                1,
                HostState {
                    h0: Some(&pick(&h0)),
                    c0: c0r.as_deref(),
                },
                &RunOptions::default(),
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
    let lw = w.layer_mut(l, d).unwrap();
    match tensor {
        "weight_ih" => &mut lw.weight_ih[e],
        "weight_hh" => &mut lw.weight_hh[e],
        "bias_ih" => &mut lw.bias_ih.as_mut().expect("bias")[e],
        "bias_hh" => &mut lw.bias_hh.as_mut().expect("bias")[e],
        other => panic!("no parameter {other}"),
    }
}

/// One finite-difference case: a bidirectional `cell` of `layers` layers in `layout`, with
/// `lengths` (packed) or not, and dropout `p` between layers (trained through
/// `stack_forward_train` with [`DROPOUT_SEED`] when `p > 0`, else `stack_forward`).
struct FdCase<'a> {
    cell: CellKind,
    layers: usize,
    layout: Layout,
    lengths: Option<&'a [usize]>,
    dropout: f32,
}

/// The seed of every dropout mask in these tests.
const DROPOUT_SEED: u64 = 0x5eed_d20b;

/// Central differences of the loss against `stack_backward`, on a small bidirectional model.
/// With dropout the masks are fixed by the seed, so the loss is a smooth function of every
/// input and parameter, and the same check applies.
///
/// Inputs and states are f64: step 1e-5, truncation error ~1e-10, so 1e-7 is a tight bar.
/// Parameters are f32 in `Weights`: they move by ~1e-3 (the step actually taken, after f32
/// rounding, is the divisor), truncation error ~1e-6 relative, so 1e-5 + 1e-4 relative.
/// Returns the worst `|analytic - numeric|` of the inputs/states and of the parameters.
fn finite_difference_check(case: &FdCase) -> (f64, f64) {
    let FdCase {
        cell,
        layers,
        layout,
        lengths,
        dropout: p,
    } = *case;
    let (i, h, t, b) = (3, 3, 4, 3);
    let cfg = match cell {
        CellKind::Lstm => RnnConfig::lstm(i, h),
        _ => RnnConfig::gru(i, h),
    }
    .num_layers(layers)
    .direction(Direction::Bidirectional)
    .layout(layout)
    .dropout(p)
    .build()
    .unwrap();
    let label = format!("{cell:?} {layers} layers {layout:?} lengths {lengths:?} dropout {p}",);
    let has_c = cell == CellKind::Lstm;
    let n_states = layers * 2;
    if p > 0.0 {
        assert_masks_drop_and_keep(&label, layers, p, lengths, t, b, 2 * h);
    }
    let mut w = Weights::init(&cfg, 11);
    let x = seeded(21, b * t * i, 1.0);
    let h0 = seeded(22, n_states * b * h, 0.8);
    let c0 = has_c.then(|| seeded(23, n_states * b * h, 0.8));
    let dy = seeded(24, b * t * 2 * h, 1.0);
    let dh_n = seeded(25, n_states * b * h, 1.0);
    let dc_n = has_c.then(|| seeded(26, n_states * b * h, 1.0));

    let run = |w: &Weights, x: &[f64], h0: &[f64], c0: Option<&[f64]>| -> StackTrace {
        if p > 0.0 {
            stack_forward_train(
                &cfg,
                w,
                x,
                t,
                b,
                HostState { h0: Some(h0), c0 },
                &RunOptions {
                    lengths,
                    dropout_seed: Some(DROPOUT_SEED),
                    ..Default::default()
                },
            )
            .unwrap()
        } else {
            stack_forward(
                &cfg,
                w,
                x,
                t,
                b,
                HostState { h0: Some(h0), c0 },
                &RunOptions {
                    lengths,
                    ..Default::default()
                },
            )
            .unwrap()
        }
    };
    let eval = |w: &Weights, x: &[f64], h0: &[f64], c0: Option<&[f64]>| -> f64 {
        loss(&run(w, x, h0, c0), &dy, &dh_n, dc_n.as_deref())
    };
    let tr = run(&w, &x, &h0, c0.as_deref());
    let g = stack_backward(
        &cfg,
        &w,
        &tr,
        HostState {
            h0: Some(&h0),
            c0: c0.as_deref(),
        },
        Upstream {
            dy: Some(&dy),
            dh_n: Some(&dh_n),
            dc_n: dc_n.as_deref(),
        },
        &RunOptions {
            lengths,
            ..Default::default()
        },
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
    let name = |what: &str| format!("{label} fd {what}");
    let (mut worst_in, mut worst_param) = (0.0f64, 0.0f64);
    let dx = numeric(&x, &|x| eval(&w, x, &h0, c0.as_deref()));
    assert_close(&name("dx"), &g.dx, &dx, 1e-7, 1e-7);
    worst_in = worst_in.max(common::max_abs_diff(&g.dx, &dx));
    let dh0 = numeric(&h0, &|h0| eval(&w, &x, h0, c0.as_deref()));
    assert_close(&name("dh0"), &g.dh0, &dh0, 1e-7, 1e-7);
    worst_in = worst_in.max(common::max_abs_diff(&g.dh0, &dh0));
    if let Some(c0) = &c0 {
        let dc0 = numeric(c0, &|c0| eval(&w, &x, &h0, Some(c0)));
        let got = g.dc0.as_deref().unwrap();
        assert_close(&name("dc0"), got, &dc0, 1e-7, 1e-7);
        worst_in = worst_in.max(common::max_abs_diff(got, &dc0));
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
            worst_param = worst_param.max(common::max_abs_diff(analytic, &fd));
        }
    }
    eprintln!(
        "{label}: max |analytic - fd|: inputs/states {worst_in:.1e}, parameters {worst_param:.1e}"
    );
    (worst_in, worst_param)
}

/// Every dropout mask of the case drops some element and keeps some element inside the
/// sequences (not only at padding), so the check exercises both.
fn assert_masks_drop_and_keep(
    label: &str,
    layers: usize,
    p: f32,
    lengths: Option<&[usize]>,
    t: usize,
    b: usize,
    f: usize,
) {
    for l in 0..layers - 1 {
        let m = dropout::mask(DROPOUT_SEED, l, p, t * b * f);
        let inside = |at: usize| {
            let (step, row) = (at / f / b, at / f % b);
            lengths.is_none_or(|len| step < len[row])
        };
        let dropped = (0..m.len()).filter(|&a| inside(a) && m[a] == 0.0).count();
        let kept = (0..m.len()).filter(|&a| inside(a) && m[a] != 0.0).count();
        assert!(
            dropped > 0 && kept > 0,
            "{label}: mask {l} drops {dropped}, keeps {kept} inside the sequences"
        );
    }
}

/// 2-layer bidirectional, lengths in no order (one full), batch-first; no dropout.
const FD_LENGTHS: [usize; 3] = [2, 4, 1];

#[test]
fn stack_backward_matches_finite_differences_lstm() {
    finite_difference_check(&FdCase {
        cell: CellKind::Lstm,
        layers: 2,
        layout: Layout::BatchFirst,
        lengths: Some(&FD_LENGTHS),
        dropout: 0.0,
    });
}

#[test]
fn stack_backward_matches_finite_differences_gru() {
    finite_difference_check(&FdCase {
        cell: CellKind::Gru,
        layers: 2,
        layout: Layout::BatchFirst,
        lengths: Some(&FD_LENGTHS),
        dropout: 0.0,
    });
}

/// Dropout p = 0.4 between the layers of a 2- and a 3-layer bidirectional model, seq-major,
/// full-length sequences.
fn finite_differences_with_dropout(cell: CellKind) {
    for layers in [2, 3] {
        finite_difference_check(&FdCase {
            cell,
            layers,
            layout: Layout::SeqMajor,
            lengths: None,
            dropout: 0.4,
        });
    }
}

#[test]
fn stack_backward_with_dropout_matches_finite_differences_lstm() {
    finite_differences_with_dropout(CellKind::Lstm);
}

#[test]
fn stack_backward_with_dropout_matches_finite_differences_gru() {
    finite_differences_with_dropout(CellKind::Gru);
}

/// Dropout with lengths (packed, in no order) and batch-first: the mask is indexed seq-major
/// whatever the layout, and padding stays zero.
#[test]
fn stack_backward_with_dropout_packed_batch_first_matches_finite_differences() {
    for cell in [CellKind::Lstm, CellKind::Gru] {
        for layers in [2, 3] {
            finite_difference_check(&FdCase {
                cell,
                layers,
                layout: Layout::BatchFirst,
                lengths: Some(&FD_LENGTHS),
                dropout: 0.4,
            });
        }
    }
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
    let run = |lengths: &[usize]| {
        stack_forward(
            &cfg,
            &w,
            &x,
            t,
            b,
            HostState::zeros(),
            &RunOptions {
                lengths: Some(lengths),
                ..Default::default()
            },
        )
    };
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
    // The stack reference's inference forward runs a model with dropout (and ignores it).
    let w = Weights::init(&cfg, 1);
    let x = vec![0.0; 2 * 3];
    assert!(
        stack_forward(
            &cfg,
            &w,
            &x,
            2,
            1,
            HostState::zeros(),
            &RunOptions::default()
        )
        .is_ok()
    );
}

/// `a` and `b` are the same bits, element for element.
#[track_caller]
fn assert_bits(name: &str, a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len(), "{name}: length");
    for (e, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(x.to_bits(), y.to_bits(), "{name}[{e}]: {x:e} vs {y:e}");
    }
}

/// `y`, `h_n` and `c_n` of two traces are the same bits.
#[track_caller]
fn assert_same_outputs(name: &str, a: &StackTrace, b: &StackTrace) {
    assert_bits(&format!("{name} y"), &a.y, &b.y);
    assert_bits(&format!("{name} h_n"), &a.h_n, &b.h_n);
    assert_eq!(a.c_n.is_some(), b.c_n.is_some(), "{name}: c_n present");
    if let (Some(x), Some(y)) = (&a.c_n, &b.c_n) {
        assert_bits(&format!("{name} c_n"), x, y);
    }
}

/// Every tensor of `g` by name: the input and state gradients, then each layer-direction's
/// parameter gradients.
fn grad_tensors(g: &StackGrads) -> Vec<(String, &[f64])> {
    let mut v: Vec<(String, &[f64])> = vec![("dx".into(), &g.dx), ("dh0".into(), &g.dh0)];
    if let Some(dc0) = &g.dc0 {
        v.push(("dc0".into(), dc0));
    }
    for (k, cg) in g.layers.iter().enumerate() {
        v.push((format!("layers[{k}].d_weight_ih"), &cg.d_weight_ih));
        v.push((format!("layers[{k}].d_weight_hh"), &cg.d_weight_hh));
        v.push((format!("layers[{k}].d_bias_ih"), &cg.d_bias_ih));
        v.push((format!("layers[{k}].d_bias_hh"), &cg.d_bias_hh));
    }
    v
}

/// Every gradient of `a` and `b` is the same bits.
#[track_caller]
fn assert_same_grads(name: &str, a: &StackGrads, b: &StackGrads) {
    let (ga, gb) = (grad_tensors(a), grad_tensors(b));
    assert_eq!(ga.len(), gb.len(), "{name}: tensor count");
    for ((n, x), (_, y)) in ga.iter().zip(&gb) {
        assert_bits(&format!("{name} {n}"), x, y);
    }
}

/// A bidirectional `cell` of `layers` layers.
fn bidirectional(cell: CellKind, i: usize, h: usize, layers: usize) -> RnnConfigBuilder {
    match cell {
        CellKind::Lstm => RnnConfig::lstm(i, h),
        _ => RnnConfig::gru(i, h),
    }
    .num_layers(layers)
    .direction(Direction::Bidirectional)
}

/// Inputs, states and upstream gradients of one small problem (`n_states` layer-directions).
struct Problem {
    x: Vec<f64>,
    h0: Vec<f64>,
    c0: Option<Vec<f64>>,
    dy: Vec<f64>,
    dh_n: Vec<f64>,
    dc_n: Option<Vec<f64>>,
}

impl Problem {
    fn new(cfg: &RnnConfig, t: usize, b: usize, seed: u64) -> Problem {
        let (h, n_states) = (cfg.hidden_size(), cfg.num_layers() * cfg.num_directions());
        let has_c = cfg.cell() == CellKind::Lstm;
        Problem {
            x: seeded(seed, t * b * cfg.input_size(), 1.0),
            h0: seeded(seed + 1, n_states * b * h, 0.8),
            c0: has_c.then(|| seeded(seed + 2, n_states * b * h, 0.8)),
            dy: seeded(seed + 3, t * b * cfg.output_size(), 1.0),
            dh_n: seeded(seed + 4, n_states * b * h, 1.0),
            dc_n: has_c.then(|| seeded(seed + 5, n_states * b * h, 1.0)),
        }
    }

    /// `stack_backward` of `trace` under this problem's upstream gradients.
    fn backward(
        &self,
        cfg: &RnnConfig,
        w: &Weights,
        lengths: Option<&[usize]>,
        trace: &StackTrace,
    ) -> StackGrads {
        stack_backward(
            cfg,
            w,
            trace,
            HostState {
                h0: Some(&self.h0),
                c0: self.c0.as_deref(),
            },
            Upstream {
                dy: Some(&self.dy),
                dh_n: Some(&self.dh_n),
                dc_n: self.dc_n.as_deref(),
            },
            &RunOptions {
                lengths,
                ..Default::default()
            },
        )
        .unwrap()
    }
}

/// Training applies exactly `dropout::mask(seed, l, p, T*B*D*S)`; inference ignores dropout;
/// p = 0 training is inference. Forward and backward, bit for bit, with lengths and
/// batch-first (the mask is indexed seq-major whatever the layout).
#[test]
fn dropout_applies_in_training_only_with_the_seeded_mask() {
    let (i, h, t, b) = (3, 4, 5, 3);
    let lengths = [5usize, 2, 4];
    let lens = Some(&lengths[..]);
    let p = 0.4f32;
    for cell in [CellKind::Lstm, CellKind::Gru] {
        for layers in [1, 2, 3] {
            let start = || bidirectional(cell, i, h, layers).layout(Layout::BatchFirst);
            let cfg_p = start().dropout(p).build().unwrap();
            let cfg_0 = start().build().unwrap();
            let w = Weights::init(&cfg_p, 3);
            let pr = Problem::new(&cfg_p, t, b, 40);
            let (x, h0, c0) = (&pr.x, Some(&pr.h0[..]), pr.c0.as_deref());
            let name = format!("{cell:?} {layers} layers");
            let both = |cfg: &RnnConfig, tr: StackTrace| {
                let g = pr.backward(cfg, &w, lens, &tr);
                (tr, g)
            };

            // Inference ignores dropout: the p = 0.4 model evaluates as the p = 0 one.
            let eval_p = both(
                &cfg_p,
                stack_forward(
                    &cfg_p,
                    &w,
                    x,
                    t,
                    b,
                    HostState { h0, c0 },
                    &RunOptions {
                        lengths: lens,
                        ..Default::default()
                    },
                )
                .unwrap(),
            );
            let eval_0 = both(
                &cfg_0,
                stack_forward(
                    &cfg_0,
                    &w,
                    x,
                    t,
                    b,
                    HostState { h0, c0 },
                    &RunOptions {
                        lengths: lens,
                        ..Default::default()
                    },
                )
                .unwrap(),
            );
            assert_same_outputs(&format!("{name} eval p vs p=0"), &eval_p.0, &eval_0.0);
            assert_same_grads(&format!("{name} eval p vs p=0"), &eval_p.1, &eval_0.1);

            // Training with p = 0 is inference.
            let train_0 = stack_forward_train(
                &cfg_0,
                &w,
                x,
                t,
                b,
                HostState { h0, c0 },
                &RunOptions {
                    lengths: lens,
                    dropout_seed: Some(DROPOUT_SEED),
                    ..Default::default()
                },
            );
            let train_0 = both(&cfg_0, train_0.unwrap());
            assert_same_outputs(&format!("{name} train p=0 vs eval"), &train_0.0, &eval_0.0);
            assert_same_grads(&format!("{name} train p=0 vs eval"), &train_0.1, &eval_0.1);

            // Training draws exactly `dropout::mask` per layer boundary.
            let train = |seed| {
                stack_forward_train(
                    &cfg_p,
                    &w,
                    x,
                    t,
                    b,
                    HostState { h0, c0 },
                    &RunOptions {
                        lengths: lens,
                        dropout_seed: Some(seed),
                        ..Default::default()
                    },
                )
            };
            let train_p = both(&cfg_p, train(DROPOUT_SEED).unwrap());
            let numel = t * b * cfg_p.output_size();
            let with = |masks: &[Vec<f64>]| {
                let tr = stack_forward_with_masks(
                    &cfg_p,
                    &w,
                    x,
                    t,
                    b,
                    HostState { h0, c0 },
                    &RunOptions {
                        lengths: lens,
                        ..Default::default()
                    },
                    masks,
                );
                both(&cfg_p, tr.unwrap())
            };
            let seeded_masks: Vec<Vec<f64>> = (0..layers - 1)
                .map(|l| dropout::mask(DROPOUT_SEED, l, p, numel))
                .collect();
            let explicit = with(&seeded_masks);
            assert_same_outputs(
                &format!("{name} train vs its masks"),
                &train_p.0,
                &explicit.0,
            );
            assert_same_grads(
                &format!("{name} train vs its masks"),
                &train_p.1,
                &explicit.1,
            );

            // Masks of ones are inference, bit for bit: the mask is the only difference.
            let ones = with(&vec![vec![1.0; numel]; layers - 1]);
            assert_same_outputs(&format!("{name} ones vs eval"), &ones.0, &eval_p.0);
            assert_same_grads(&format!("{name} ones vs eval"), &ones.1, &eval_p.1);

            if layers == 1 {
                // No layer boundary: nothing to drop.
                assert_same_outputs(&format!("{name} train vs eval"), &train_p.0, &eval_p.0);
                assert_same_grads(&format!("{name} train vs eval"), &train_p.1, &eval_p.1);
                continue;
            }
            // With a boundary, dropping changes the output: against inference, against
            // keeping every unit (scaled), and against another seed.
            let scaled = with(&vec![vec![1.0 / (1.0 - p as f64); numel]; layers - 1]);
            let other_seed = train(DROPOUT_SEED + 1).unwrap();
            for (what, y) in [
                ("eval", &eval_p.0.y),
                ("all kept", &scaled.0.y),
                ("another seed", &other_seed.y),
            ] {
                assert_ne!(&train_p.0.y, y, "{name}: training y equals {what}");
            }
            // The last layer's output itself is never masked: padding stays zero.
            let s2 = cfg_p.output_size();
            assert_zero_past_lengths(&name, &cfg_p, &train_p.0.y, &lengths, t, b, s2, "y");
            assert_zero_past_lengths(&name, &cfg_p, &train_p.1.dx, &lengths, t, b, i, "dx");
        }
    }
}

/// Split a `[n_states, B, n]` state after its first `k` layer-directions.
fn split_states(v: &[f64], k: usize, b: usize, n: usize) -> (Vec<f64>, Vec<f64>) {
    let (a, c) = v.split_at(k * b * n);
    (a.to_vec(), c.to_vec())
}

/// Gradients flow only through kept units: a 2-layer model trained with dropout is, forward
/// and backward, layer 0 and layer 1 run as separate 1-layer models joined by exactly
/// `dropout::mask(seed, 0, p, ·)`: layer 1's input is layer 0's output times the mask, and
/// the gradient reaching layer 0's output is the gradient of layer 1's input times the same
/// mask (exactly zero at dropped units, though layer 1 sends gradient there).
#[test]
fn dropout_gradients_flow_only_through_kept_units() {
    let (i, h, t, b) = (3, 4, 5, 3);
    let lengths = [3usize, 5, 1];
    let lens = Some(&lengths[..]);
    let p = 0.4f32;
    for cell in [CellKind::Lstm, CellKind::Gru] {
        let has_c = cell == CellKind::Lstm;
        let cfg = bidirectional(cell, i, h, 2).dropout(p).build().unwrap();
        let cfg_a = bidirectional(cell, i, h, 1).build().unwrap();
        let cfg_b = bidirectional(cell, 2 * h, h, 1).build().unwrap();
        let w = Weights::init(&cfg, 9);
        let layer = |cfg: &RnnConfig, l: usize| {
            Weights::from_layers(
                cfg,
                vec![
                    w.layer(l, 0).unwrap().clone(),
                    w.layer(l, 1).unwrap().clone(),
                ],
            )
            .unwrap()
        };
        let (w_a, w_b) = (layer(&cfg_a, 0), layer(&cfg_b, 1));
        let pr = Problem::new(&cfg, t, b, 60);
        let split = |v: &Option<Vec<f64>>| match v {
            Some(v) => {
                let (a, c) = split_states(v, 2, b, h);
                (Some(a), Some(c))
            }
            None => (None, None),
        };
        let (h0_a, h0_b) = split_states(&pr.h0, 2, b, h);
        let (c0_a, c0_b) = split(&pr.c0);
        let (dh_a, dh_b) = split_states(&pr.dh_n, 2, b, h);
        let (dc_a, dc_b) = split(&pr.dc_n);
        let mask = dropout::mask(DROPOUT_SEED, 0, p, t * b * 2 * h);
        let name = format!("{cell:?}");

        let tr = stack_forward_train(
            &cfg,
            &w,
            &pr.x,
            t,
            b,
            HostState {
                h0: Some(&pr.h0),
                c0: pr.c0.as_deref(),
            },
            &RunOptions {
                lengths: lens,
                dropout_seed: Some(DROPOUT_SEED),
                ..Default::default()
            },
        )
        .unwrap();
        let g = pr.backward(&cfg, &w, lens, &tr);

        // Forward: layer 1 reads layer 0's output times the mask.
        let tr_a = stack_forward(
            &cfg_a,
            &w_a,
            &pr.x,
            t,
            b,
            HostState {
                h0: Some(&h0_a),
                c0: c0_a.as_deref(),
            },
            &RunOptions {
                lengths: lens,
                ..Default::default()
            },
        );
        let tr_a = tr_a.unwrap();
        let mid: Vec<f64> = tr_a.y.iter().zip(&mask).map(|(y, m)| y * m).collect();
        let tr_b = stack_forward(
            &cfg_b,
            &w_b,
            &mid,
            t,
            b,
            HostState {
                h0: Some(&h0_b),
                c0: c0_b.as_deref(),
            },
            &RunOptions {
                lengths: lens,
                ..Default::default()
            },
        );
        let tr_b = tr_b.unwrap();
        assert_bits(&format!("{name} y"), &tr.y, &tr_b.y);
        assert_bits(
            &format!("{name} h_n"),
            &tr.h_n,
            &[&tr_a.h_n[..], &tr_b.h_n].concat(),
        );
        if has_c {
            let c_n = [tr_a.c_n.as_deref().unwrap(), tr_b.c_n.as_deref().unwrap()].concat();
            assert_bits(&format!("{name} c_n"), tr.c_n.as_ref().unwrap(), &c_n);
        }

        // Backward: layer 1 alone gives the gradient of its input ...
        let g_b = stack_backward(
            &cfg_b,
            &w_b,
            &tr_b,
            HostState {
                h0: Some(&h0_b),
                c0: c0_b.as_deref(),
            },
            Upstream {
                dy: Some(&pr.dy),
                dh_n: Some(&dh_b),
                dc_n: dc_b.as_deref(),
            },
            &RunOptions {
                lengths: lens,
                ..Default::default()
            },
        )
        .unwrap();
        // ... which does reach dropped units ...
        let blocked = (0..mask.len())
            .filter(|&e| mask[e] == 0.0 && g_b.dx[e] != 0.0)
            .count();
        assert!(
            blocked > 0,
            "{name}: no gradient at a dropped unit to block"
        );
        // ... and layer 0 gets it through the mask only.
        let d_mid: Vec<f64> = g_b.dx.iter().zip(&mask).map(|(d, m)| d * m).collect();
        let back_a = |dy: &[f64]| {
            stack_backward(
                &cfg_a,
                &w_a,
                &tr_a,
                HostState {
                    h0: Some(&h0_a),
                    c0: c0_a.as_deref(),
                },
                Upstream {
                    dy: Some(dy),
                    dh_n: Some(&dh_a),
                    dc_n: dc_a.as_deref(),
                },
                &RunOptions {
                    lengths: lens,
                    ..Default::default()
                },
            )
            .unwrap()
        };
        let g_a = back_a(&d_mid);
        let joined = StackGrads {
            dx: g_a.dx.clone(),
            dh0: [g_a.dh0.clone(), g_b.dh0.clone()].concat(),
            dc0: has_c.then(|| [g_a.dc0.clone().unwrap(), g_b.dc0.clone().unwrap()].concat()),
            layers: g_a.layers.iter().chain(&g_b.layers).cloned().collect(),
        };
        for ((n, got), (_, want)) in grad_tensors(&g).iter().zip(&grad_tensors(&joined)) {
            assert_close(&format!("{name} {n}"), got, want, 0.0, 0.0);
        }
        // Without the mask on the way back, layer 0's gradients would differ.
        let unmasked = back_a(&g_b.dx);
        assert_ne!(
            unmasked.layers[0].d_weight_ih, g.layers[0].d_weight_ih,
            "{name}: the mask changes nothing on the way back"
        );
    }
}

/// A mask that drops every unit of layer 0's output cuts layer 0 off: the output does not
/// depend on `x`, and with no upstream gradient on layer 0's own final states, layer 0's
/// inputs, states and parameters get exactly zero gradient. Layer 1 reads zeros, so its
/// `weight_ih` gets exactly zero too; its other parameters and its states do not.
#[test]
fn an_all_dropped_layer_gets_no_gradient() {
    let (i, h, t, b) = (3, 4, 5, 2);
    for cell in [CellKind::Lstm, CellKind::Gru] {
        let cfg = bidirectional(cell, i, h, 2).dropout(0.4).build().unwrap();
        let w = Weights::init(&cfg, 13);
        let mut pr = Problem::new(&cfg, t, b, 80);
        let n_a = 2 * b * h;
        pr.dh_n[..n_a].fill(0.0);
        if let Some(dc) = pr.dc_n.as_mut() {
            dc[..n_a].fill(0.0);
        }
        let masks = vec![vec![0.0; t * b * 2 * h]];
        let run = |x: &[f64]| {
            stack_forward_with_masks(
                &cfg,
                &w,
                x,
                t,
                b,
                HostState {
                    h0: Some(&pr.h0),
                    c0: pr.c0.as_deref(),
                },
                &RunOptions::default(),
                &masks,
            )
            .unwrap()
        };
        let tr = run(&pr.x);
        let other_x = seeded(99, pr.x.len(), 1.0);
        assert_bits(&format!("{cell:?} y vs another x"), &tr.y, &run(&other_x).y);
        let g = pr.backward(&cfg, &w, None, &tr);
        let zero = |v: &[f64]| v.iter().all(|&e| e == 0.0);
        for (n, v) in grad_tensors(&g) {
            let layer_0 = n.starts_with("layers[0]") || n.starts_with("layers[1]");
            if n == "dx" || layer_0 || n.ends_with("d_weight_ih") {
                assert!(zero(v), "{cell:?} {n} is not exactly zero");
            } else if n.starts_with("layers[") {
                assert!(!zero(v), "{cell:?} {n} is all zero");
            }
        }
        assert!(zero(&g.dh0[..n_a]) && !zero(&g.dh0[n_a..]), "{cell:?} dh0");
        if let Some(dc0) = &g.dc0 {
            assert!(zero(&dc0[..n_a]) && !zero(&dc0[n_a..]), "{cell:?} dc0");
        }
    }
}

#[test]
fn dropout_masks_of_the_wrong_shape_get_typed_errors() {
    let (t, b, h) = (4, 2, 3);
    let cfg = bidirectional(CellKind::Lstm, 2, h, 3)
        .dropout(0.5)
        .build()
        .unwrap();
    let w = Weights::init(&cfg, 1);
    let x = vec![0.5; t * b * 2];
    let numel = t * b * 2 * h;
    let run = |masks: &[Vec<f64>]| {
        stack_forward_with_masks(
            &cfg,
            &w,
            &x,
            t,
            b,
            HostState::zeros(),
            &RunOptions::default(),
            masks,
        )
    };
    let mismatch = |r: rnn_wgpu::Result<StackTrace>| matches!(r, Err(Error::ShapeMismatch { .. }));
    assert!(mismatch(run(&[])), "no masks for 3 layers");
    assert!(
        mismatch(run(&vec![vec![1.0; numel]; 1])),
        "1 mask for 3 layers"
    );
    assert!(
        mismatch(run(&vec![vec![1.0; numel]; 3])),
        "3 masks for 3 layers"
    );
    assert!(
        mismatch(run(&[vec![1.0; numel], vec![1.0; numel - 1]])),
        "short mask"
    );
    assert!(
        mismatch(run(&[vec![1.0; numel + 1], vec![1.0; numel]])),
        "long mask"
    );
    assert!(run(&vec![vec![1.0; numel]; 2]).is_ok());
    // One layer: no boundary, no mask.
    let one = bidirectional(CellKind::Gru, 2, h, 1).build().unwrap();
    let w1 = Weights::init(&one, 1);
    let run1 = |masks: &[Vec<f64>]| {
        stack_forward_with_masks(
            &one,
            &w1,
            &x,
            t,
            b,
            HostState::zeros(),
            &RunOptions::default(),
            masks,
        )
    };
    assert!(run1(&[]).is_ok());
    assert!(mismatch(run1(&[vec![1.0; numel]])));
    // The seeded forward validates like the others.
    let train = stack_forward_train(
        &cfg,
        &w,
        &x[1..],
        t,
        b,
        HostState::zeros(),
        &RunOptions {
            dropout_seed: Some(7),
            ..Default::default()
        },
    );
    assert!(mismatch(train));
    let train = stack_forward_train(
        &cfg,
        &w,
        &x,
        0,
        b,
        HostState::zeros(),
        &RunOptions {
            dropout_seed: Some(7),
            ..Default::default()
        },
    );
    assert!(matches!(train, Err(Error::ZeroSize(_))));
}
