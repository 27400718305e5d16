//! Gradients by PyTorch's names (`HostGrads::named_parameters`, `named`, `get`, `save`).
//!
//! - Against PyTorch: for fixtures of `scripts/gen_fixtures.py` (several layers, reverse
//!   directions, a projection, lengths, batch-first, no bias), the names are exactly the
//!   `grad.<name>` tensors the script wrote from `module.named_parameters()`, with their shapes
//!   and values; `dx`, `dh0`, `dc0` match `grad.x`, `grad.h0`, `grad.c0`.
//! - Against the crate: names and shapes are those of `Weights::named_tensors` for the same
//!   configuration, and the values are the index-based `HostGrads::params`, bit for bit.
//! - A model without bias has no bias gradients; the safetensors file reads back by name.

mod common;

use common::fixtures::{self, TopologyFixture};
use common::gpu::ctx;
use common::{assert_close, seeded};
use rnn_wgpu::weights::LoadOptions;
use rnn_wgpu::{
    CellKind, Context, Direction, Error, GpuTensor, HostGrads, Layout, Nonlinearity, Rnn,
    RnnConfig, RunOptions, State, Weights,
};
use safetensors::SafeTensors;

/// Each gradient within 1e-4 of its own scale (max |reference|) plus 1e-6: the bound of
/// `tests/topology_gpu.rs` for the same fixtures (f32 sums over T*B terms against f64).
fn assert_grad(name: &str, got: &[f32], want: &[f64]) {
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert_close(name, got, want, 1e-4 * scale + 1e-6, 0.0);
}

/// Forward (training) and backward on the GPU with the given inputs and upstream gradients.
struct Inputs<'a> {
    x: &'a [f32],
    h0: &'a [f32],
    c0: Option<&'a [f32]>,
    lengths: Option<&'a [usize]>,
    dy: &'a [f32],
    dh_n: &'a [f32],
    dc_n: Option<&'a [f32]>,
    steps: usize,
    batch: usize,
}

fn gpu_grads(ctx: &Context, w: &Weights, inp: &Inputs<'_>) -> HostGrads {
    let rnn = Rnn::new(ctx, w).unwrap();
    let cfg = w.config();
    let (t, b) = (inp.steps, inp.batch);
    let (h, s) = (cfg.hidden_size(), cfg.state_size());
    let ld = cfg.num_layers() * cfg.num_directions();
    let seq = |f: usize| match cfg.layout() {
        Layout::BatchFirst => vec![b, t, f],
        _ => vec![t, b, f],
    };
    let up = |data: &[f32], shape: &[usize]| GpuTensor::upload(ctx, data, shape).unwrap();
    let x = up(inp.x, &seq(cfg.input_size()));
    let state = State {
        h: up(inp.h0, &[ld, b, s]),
        c: inp.c0.map(|c| up(c, &[ld, b, h])),
    };
    let opts = RunOptions {
        lengths: inp.lengths,
        ..Default::default()
    };
    let (_, tape) = rnn.forward_train_with(&x, Some(&state), &opts).unwrap();
    let dy = up(inp.dy, &seq(cfg.output_size()));
    let dh_n = up(inp.dh_n, &[ld, b, s]);
    let dc_n = inp.dc_n.map(|d| up(d, &[ld, b, h]));
    let grads = rnn.backward(&tape, Some(&dy), Some(&dh_n), dc_n.as_ref());
    grads.unwrap().to_host(&rnn).unwrap()
}

/// The parameter names of a fixture: its `grad.<name>` tensors but for the inputs'.
fn pytorch_parameter_names(all: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut names: Vec<String> = all
        .into_iter()
        .filter_map(|n| n.strip_prefix("grad.").map(str::to_string))
        .filter(|n| !["x", "h0", "c0"].contains(&n.as_str()))
        .collect();
    names.sort();
    names
}

fn sorted_names(g: &HostGrads) -> Vec<String> {
    let mut names: Vec<String> = g.named_parameters().into_iter().map(|t| t.0).collect();
    names.sort();
    names
}

/// Multi-layer fixtures: a 2-layer bidirectional LSTM with a projection, packed and
/// batch-first, and a 2-layer bidirectional GRU. The configuration is inferred from the file.
#[test]
fn topology_gradients_carry_pytorch_names() {
    let Some(ctx) = ctx() else { return };
    for stem in ["lstm_proj_l2_bi_packed_bf", "gru_l2_bi"] {
        let fx: TopologyFixture = fixtures::load_topology(stem);
        let path = fixtures::topology_dir().join(format!("{stem}.safetensors"));
        let opts = LoadOptions::default().batch_first(fx.cfg.layout() == Layout::BatchFirst);
        let w = Weights::load_with(&path, &opts).unwrap();
        assert_eq!(w.config(), &fx.cfg, "{stem}");
        let lstm = fx.has_cell_state();
        let inputs = Inputs {
            x: &fx.x,
            h0: &fx.h0,
            c0: lstm.then_some(&fx.c0[..]),
            lengths: fx.lengths.as_deref(),
            dy: &fx.dy,
            dh_n: &fx.dh_n,
            dc_n: lstm.then_some(&fx.dc_n[..]),
            steps: fx.steps,
            batch: fx.batch,
        };
        let g = gpu_grads(ctx, &w, &inputs);
        assert_eq!(
            sorted_names(&g),
            pytorch_parameter_names(fx.tensor_names()),
            "{stem}"
        );
        for (name, shape, data) in g.named() {
            let want = match name.as_str() {
                "dx" => fx.f64_shaped("grad.x", &shape),
                "dh0" => fx.f64_shaped("grad.h0", &shape),
                "dc0" => fx.f64_shaped("grad.c0", &shape),
                _ => fx.f64_shaped(&format!("grad.{name}"), &shape),
            };
            assert_grad(&format!("{stem}: {name}"), data, &want);
        }
        assert_eq!(g.get("dc0").is_some(), lstm, "{stem}");
    }
}

/// Single-layer fixtures without bias (an LSTM and a relu RNN): no bias gradients at all.
#[test]
fn a_model_without_bias_has_no_bias_gradients() {
    let Some(ctx) = ctx() else { return };
    for (stem, opts) in [
        ("lstm_nobias", LoadOptions::default()),
        (
            "rnn_relu_odd",
            LoadOptions::default().nonlinearity(Nonlinearity::Relu),
        ),
    ] {
        let fx = fixtures::load_file(stem);
        let w = Weights::load_with(fixtures::file_path(stem), &opts).unwrap();
        assert_eq!(w.config(), &fx.cfg, "{stem}");
        assert!(!w.config().bias());
        let lstm = fx.has_cell_state();
        let inputs = Inputs {
            x: &fx.x,
            h0: &fx.h0,
            c0: lstm.then_some(&fx.c0[..]),
            lengths: None,
            dy: &fx.dy,
            dh_n: &fx.dh_n,
            dc_n: lstm.then_some(&fx.dc_n[..]),
            steps: fx.steps,
            batch: fx.batch,
        };
        let g = gpu_grads(ctx, &w, &inputs);
        let all: Vec<String> = g.named().into_iter().map(|t| t.0).collect();
        let mut want = vec!["weight_ih_l0", "weight_hh_l0", "dx", "dh0"];
        if lstm {
            want.push("dc0");
        }
        assert_eq!(all, want, "{stem}");
        assert!(g.get("bias_ih_l0").is_none() && g.get("bias_hh_l0").is_none());
        assert!(g.params[0].bias_ih.is_none() && g.params[0].bias_hh.is_none());
        // The file's states are [B, S] (one layer-direction); ours are [1, B, S].
        for (name, _, data) in g.named() {
            let file = match name.as_str() {
                "dx" => "grad.x".to_string(),
                "dh0" => "grad.h0".to_string(),
                "dc0" => "grad.c0".to_string(),
                _ => format!("grad.{name}"),
            };
            assert_grad(&format!("{stem}: {name}"), data, &fx.f64(&file));
        }
    }
}

/// Configurations beyond the fixtures (peepholes, reverse-only, relu RNN, three layers):
/// names and shapes are `Weights::named_tensors`'s, values the index-based gradients.
#[test]
fn names_follow_the_weights_and_values_the_indexed_gradients() {
    let Some(ctx) = ctx() else { return };
    let bi = Direction::Bidirectional;
    for cfg in [
        RnnConfig::lstm(3, 5).peepholes(true).direction(bi).build(),
        RnnConfig::lstm(4, 6).proj_size(2).num_layers(2).build(),
        RnnConfig::gru(3, 4).bias(false).num_layers(3).build(),
        RnnConfig::rnn(2, 5, Nonlinearity::Relu)
            .direction(Direction::Reverse)
            .layout(Layout::BatchFirst)
            .build(),
    ] {
        let cfg = cfg.unwrap();
        let w = Weights::init(&cfg, 4);
        let (t, b) = (3, 2);
        let ld = cfg.num_layers() * cfg.num_directions();
        let (s, h) = (cfg.state_size(), cfg.hidden_size());
        let lstm = cfg.cell() == CellKind::Lstm;
        let (c0, dc_n) = (seeded(3, ld * b * h, 1.0), seeded(6, ld * b * h, 1.0));
        let inputs = Inputs {
            x: &seeded(1, t * b * cfg.input_size(), 1.0),
            h0: &seeded(2, ld * b * s, 1.0),
            c0: lstm.then_some(&c0[..]),
            lengths: None,
            dy: &seeded(4, t * b * cfg.output_size(), 1.0),
            dh_n: &seeded(5, ld * b * s, 1.0),
            dc_n: lstm.then_some(&dc_n[..]),
            steps: t,
            batch: b,
        };
        let g = gpu_grads(ctx, &w, &inputs);
        let want: Vec<_> = w
            .named_tensors()
            .into_iter()
            .map(|(n, s, _)| (n, s))
            .collect();
        let named = g.named_parameters();
        let got: Vec<_> = named
            .iter()
            .map(|(n, s, _)| (n.clone(), s.clone()))
            .collect();
        assert_eq!(got, want, "{cfg:?}");

        // Walk the index-based gradients in state_dict order: layer-direction k = l*D + d.
        let mut indexed: Vec<&[f32]> = Vec::new();
        for p in &g.params {
            indexed.push(&p.weight_ih);
            indexed.push(&p.weight_hh);
            let optional = [&p.bias_ih, &p.bias_hh, &p.weight_hr, &p.peephole];
            indexed.extend(optional.into_iter().flatten().map(Vec::as_slice));
        }
        assert_eq!(named.len(), indexed.len());
        for ((name, _, data), want) in named.iter().zip(indexed) {
            assert_eq!(*data, want, "{name}");
        }

        let x_shape = match cfg.layout() {
            Layout::BatchFirst => vec![b, t, cfg.input_size()],
            _ => vec![t, b, cfg.input_size()],
        };
        let all = g.named();
        let tail: Vec<_> = all[named.len()..]
            .iter()
            .map(|(n, s, d)| (n.as_str(), s.clone(), d.to_vec()))
            .collect();
        let mut expected = vec![
            ("dx", x_shape, g.dx.clone()),
            ("dh0", vec![ld, b, s], g.dh0.clone()),
        ];
        if let Some(dc0) = &g.dc0 {
            expected.push(("dc0", vec![ld, b, h], dc0.clone()));
        }
        assert_eq!(tail, expected, "{cfg:?}");
        assert_eq!(g.get("weight_hh_l0"), Some(&g.params[0].weight_hh[..]));
        assert_eq!(g.get("weight_hh_l9"), None);
    }
}

/// `save` / `to_safetensors` write every named gradient under its name and shape; a tensor
/// whose length was edited is named instead of written.
#[test]
fn gradients_save_and_read_back_by_name() {
    let Some(ctx) = ctx() else { return };
    let cfg = RnnConfig::lstm(3, 4)
        .num_layers(2)
        .direction(Direction::Bidirectional)
        .build()
        .unwrap();
    let (t, b, ld, h) = (2, 3, 4, 4);
    let c0 = seeded(3, ld * b * h, 1.0);
    let inputs = Inputs {
        x: &seeded(1, t * b * 3, 1.0),
        h0: &seeded(2, ld * b * h, 1.0),
        c0: Some(&c0),
        lengths: None,
        dy: &seeded(4, t * b * 2 * h, 1.0),
        dh_n: &seeded(5, ld * b * h, 1.0),
        dc_n: None,
        steps: t,
        batch: b,
    };
    let g = gpu_grads(ctx, &Weights::init(&cfg, 1), &inputs);
    let path = std::env::temp_dir().join(format!("rnn_wgpu_grads_{}.st", std::process::id()));
    g.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(bytes, g.to_safetensors().unwrap());
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let named = g.named();
    assert_eq!(st.len(), named.len());
    for (name, shape, data) in named {
        let v = st.tensor(&name).unwrap();
        assert_eq!(v.shape(), shape.as_slice(), "{name}");
        let back: Vec<f32> = bytemuck::pod_collect_to_vec(v.data());
        assert_eq!(back, data, "{name}");
    }
    assert!(st.tensor("weight_ih_l1_reverse").is_ok());

    let mut edited = g.clone();
    edited.params[1].weight_ih.pop();
    assert!(matches!(
        edited.to_safetensors(),
        Err(Error::ShapeMismatch { name, .. }) if name == "weight_ih_l0_reverse"
    ));
    let mut edited = g.clone();
    edited.dh0.push(0.0);
    assert!(matches!(
        edited.to_safetensors(),
        Err(Error::ShapeMismatch { name, .. }) if name == "dh0"
    ));
}
