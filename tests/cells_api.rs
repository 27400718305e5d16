//! The cell API (`Cell`: `nn.LSTMCell` / `GRUCell` / `RNNCell` semantics) on the GPU:
//! - one step forward and backward against the f64 CPU reference run for T = 1
//!   (`cpu::forward` / `cpu::backward`, the specification), for every cell kind and the
//!   LSTM projection, with and without bias, seq-major and batch-first configurations;
//! - against PyTorch: the one-step (T = 1) fixtures of `scripts/gen_fixtures.py`. `nn.LSTM`
//!   over one step with `h0`, `c0` is `nn.LSTMCell` with the same parameters (PyTorch's cells
//!   and layers share the gate order and the `weight_ih`/`weight_hh`/`bias_*` layout), so their
//!   outputs and gradients are the cell's;
//! - a cell's own state_dict (`weight_ih`, ... without a layer suffix) loads, and two steps of
//!   a cell are a two-step sequence of the layer;
//! - bad shapes are typed errors.

mod common;

use common::fixtures;
use common::{assert_close, gpu::ctx, seeded};
use rnn_wgpu::cpu::{self, RefWeights, to_f64};
use rnn_wgpu::weights::tensor_names;
use rnn_wgpu::{
    Cell, CellKind, CellState, Context, Direction, Error, GpuTensor, HostState, Layout,
    Nonlinearity, Rnn, RnnConfig, RunOptions, Weights,
};

/// Forward outputs: one step of sums over `I + S` products of unit-scale f32 terms with
/// `|w| ≤ 1/sqrt(H)`; f32 rounding is ~1e-7 (the bound of tests/cells_gpu.rs, 2e-5 absolute,
/// leaves a wide margin while a wrong gate or index is O(0.1)). ReLU outputs are unbounded,
/// so everything is compared relative to the tensor's scale as well.
const ATOL: f64 = 2e-5;
/// Gradients: within 1e-4 of each tensor's largest reference magnitude, as in
/// tests/cells_gpu.rs (f32 sums over B rows).
const SCALE_RTOL: f64 = 1e-4;

fn scaled(name: &str, got: &[f32], want: &[f64]) {
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert_close(name, got, want, ATOL.max(SCALE_RTOL * scale), 0.0);
}

fn up(ctx: &Context, data: &[f32], shape: &[usize]) -> GpuTensor {
    GpuTensor::upload(ctx, data, shape).unwrap()
}

fn configs() -> Vec<RnnConfig> {
    vec![
        RnnConfig::lstm(5, 7).build().unwrap(),
        RnnConfig::lstm(6, 9)
            .bias(false)
            .layout(Layout::BatchFirst)
            .build()
            .unwrap(),
        RnnConfig::lstm(6, 8).proj_size(3).build().unwrap(),
        RnnConfig::gru(4, 6).build().unwrap(),
        RnnConfig::gru(3, 5).bias(false).build().unwrap(),
        RnnConfig::rnn(5, 7, Nonlinearity::Tanh).build().unwrap(),
        RnnConfig::rnn(4, 6, Nonlinearity::Relu)
            .bias(false)
            .build()
            .unwrap(),
    ]
}

#[test]
fn one_step_matches_the_cpu_reference() {
    let Some(ctx) = ctx() else { return };
    let b = 3;
    for (k, cfg) in configs().into_iter().enumerate() {
        let seed = 100 + 10 * k as u64;
        let w = Weights::init(&cfg, seed);
        let cell = Cell::new(ctx, &w).unwrap();
        let (i, s, h) = (cfg.input_size(), cfg.state_size(), cfg.hidden_size());
        let lstm = cfg.cell() == CellKind::Lstm;
        let x = seeded(seed + 1, b * i, 1.0);
        let h0 = seeded(seed + 2, b * s, 1.0);
        let c0 = seeded(seed + 3, b * h, 1.0);
        let dh = seeded(seed + 4, b * s, 1.0);
        let dc = seeded(seed + 5, b * h, 1.0);

        let state = CellState {
            h: up(ctx, &h0, &[b, s]),
            c: lstm.then(|| up(ctx, &c0, &[b, h])),
        };
        let (next, tape) = cell
            .forward_train(&up(ctx, &x, &[b, i]), Some(&state))
            .unwrap();
        assert_eq!(next.h.shape(), [b, s]);
        let dct = lstm.then(|| up(ctx, &dc, &[b, h]));
        let g = cell
            .backward(&tape, Some(&up(ctx, &dh, &[b, s])), dct.as_ref())
            .unwrap()
            .to_host(&cell)
            .unwrap();

        // The reference: one layer, T = 1; x [1, B, I] is x [B, I].
        let rw = RefWeights::new(&cfg, w.layer(0, 0).unwrap());
        let (x64, h64, c64) = (to_f64(&x), to_f64(&h0), to_f64(&c0));
        let c_in = lstm.then_some(&c64[..]);
        let trace = cpu::forward(&cfg, &rw, &x64, Some(&h64), c_in, 1, b).unwrap();
        let (dh64, dc64) = (to_f64(&dh), to_f64(&dc));
        let dc_in = lstm.then_some(&dc64[..]);
        let r = cpu::backward(
            &cfg,
            &rw,
            &x64,
            Some(&h64),
            c_in,
            &trace,
            None,
            Some(&dh64),
            dc_in,
            1,
            b,
        )
        .unwrap();

        let name = |t: &str| format!("{cfg:?}: {t}");
        scaled(&name("h'"), &next.h.download(ctx).unwrap(), &trace.h_n);
        if lstm {
            let c = next.c.as_ref().unwrap().download(ctx).unwrap();
            scaled(&name("c'"), &c, trace.c_n.as_ref().unwrap());
            scaled(&name("dc"), g.dc.as_ref().unwrap(), r.dc0.as_ref().unwrap());
        } else {
            assert!(next.c.is_none() && g.dc.is_none());
        }
        scaled(&name("dx"), &g.dx, &r.dx);
        scaled(&name("dh"), &g.dh, &r.dh0);
        let p = &g.params;
        scaled(&name("weight_ih"), &p.weight_ih, &r.d_weight_ih);
        scaled(&name("weight_hh"), &p.weight_hh, &r.d_weight_hh);
        if cfg.bias() {
            scaled(&name("bias_ih"), p.bias_ih.as_ref().unwrap(), &r.d_bias_ih);
            scaled(&name("bias_hh"), p.bias_hh.as_ref().unwrap(), &r.d_bias_hh);
        }
        if let Some(d) = &r.d_weight_hr {
            scaled(&name("weight_hr"), p.weight_hr.as_ref().unwrap(), d);
        }
        let names: Vec<String> = g.named_parameters().into_iter().map(|t| t.0).collect();
        let mut want = vec!["weight_ih", "weight_hh"];
        if cfg.bias() {
            want.extend(["bias_ih", "bias_hh"]);
        }
        if cfg.proj_size().is_some() {
            want.push("weight_hr");
        }
        assert_eq!(names, want, "{cfg:?}");
        // named(): the parameters, then dx [B, I], dh [B, S], dc [B, H] (LSTM); saved and
        // read back bit for bit.
        let named = g.named();
        let tail: Vec<(String, Vec<usize>)> = named[want.len()..]
            .iter()
            .map(|(n, s, _)| (n.clone(), s.clone()))
            .collect();
        let mut want_tail = vec![
            ("dx".to_string(), vec![b, cfg.input_size()]),
            ("dh".to_string(), vec![b, cfg.state_size()]),
        ];
        if g.dc.is_some() {
            want_tail.push(("dc".to_string(), vec![b, cfg.hidden_size()]));
        }
        assert_eq!(tail, want_tail, "{cfg:?}");
        let bytes = g.to_safetensors().unwrap();
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        for (n, shape, data) in &named {
            let t = file.tensor(n).unwrap();
            assert_eq!(t.shape(), &shape[..], "{n}");
            let back: Vec<f32> = t
                .data()
                .chunks(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            assert_eq!(&back[..], *data, "{n}");
        }

        // The host path gives the same step.
        let host = cell
            .forward_host(
                &x,
                b,
                HostState {
                    h0: Some(&h0),
                    c0: lstm.then_some(&c0[..]),
                },
            )
            .unwrap();
        assert_eq!(host.h, next.h.download(ctx).unwrap());
    }
}

/// PyTorch's one-step fixtures: outputs and every gradient. The loss of the file is
/// `sum(y*dy) + sum(h_n*dh_n) [+ sum(c_n*dc_n)]` with `y = h_n` for one step, so the gradient
/// reaching `h'` is `dy + dh_n` and the one reaching `c'` is `dc_n`.
#[test]
fn one_step_matches_pytorch() {
    let Some(ctx) = ctx() else { return };
    for stem in ["lstm_tiny", "gru_tiny", "rnn_tanh_tiny", "lstm_proj_tiny"] {
        let fx = fixtures::load_file(stem);
        assert_eq!(fx.steps, 1, "{stem}");
        let w = Weights::load(fixtures::file_path(stem)).unwrap();
        assert_eq!(w.config(), &fx.cfg);
        let cell = Cell::new(ctx, &w).unwrap();
        let (b, cfg) = (fx.batch, &fx.cfg);
        let (i, s, h) = (cfg.input_size(), cfg.state_size(), cfg.hidden_size());
        let lstm = fx.has_cell_state();
        let state = CellState {
            h: up(ctx, &fx.h0, &[b, s]),
            c: lstm.then(|| up(ctx, &fx.c0, &[b, h])),
        };
        let (next, tape) = cell
            .forward_train(&up(ctx, &fx.x, &[b, i]), Some(&state))
            .unwrap();
        scaled(
            &format!("{stem}: h'"),
            &next.h.download(ctx).unwrap(),
            &fx.f64("h_n"),
        );
        let dh: Vec<f32> = fx.dy.iter().zip(&fx.dh_n).map(|(a, b)| a + b).collect();
        let dc = lstm.then(|| up(ctx, &fx.dc_n, &[b, h]));
        let g = cell
            .backward(&tape, Some(&up(ctx, &dh, &[b, s])), dc.as_ref())
            .unwrap()
            .to_host(&cell)
            .unwrap();
        if lstm {
            let c = next.c.as_ref().unwrap().download(ctx).unwrap();
            scaled(&format!("{stem}: c'"), &c, &fx.f64("c_n"));
            scaled(
                &format!("{stem}: dc"),
                g.dc.as_ref().unwrap(),
                &fx.f64("grad.c0"),
            );
        }
        scaled(&format!("{stem}: dx"), &g.dx, &fx.f64("grad.x"));
        scaled(&format!("{stem}: dh"), &g.dh, &fx.f64("grad.h0"));
        for (name, shape, data) in g.named_parameters() {
            let file = format!("grad.{name}_l0");
            assert_eq!(fx.shape(&file), shape, "{stem}: {name}");
            scaled(&format!("{stem}: {name}"), data, &fx.f64(&file));
        }
    }
}

/// A cell's state_dict (`weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`, as `nn.LSTMCell`
/// saves it) loads, and the cell steps like the layer: two steps, the state fed back, equal the
/// layer over a two-step sequence.
#[test]
fn cell_state_dicts_load_and_steps_chain() {
    let Some(ctx) = ctx() else { return };
    for cfg in [
        RnnConfig::lstm(4, 5).build().unwrap(),
        RnnConfig::gru(4, 5).build().unwrap(),
        RnnConfig::rnn(4, 5, Nonlinearity::Tanh).build().unwrap(),
    ] {
        let w = Weights::init(&cfg, 8);
        let tensors = w.named_tensors();
        let views: Vec<_> = tensors
            .iter()
            .map(|(n, s, d)| {
                let name = n.strip_suffix("_l0").unwrap().to_string();
                let view = safetensors::tensor::TensorView::new(
                    safetensors::Dtype::F32,
                    s.clone(),
                    bytemuck::cast_slice(d),
                )
                .unwrap();
                (name, view)
            })
            .collect();
        let bytes = safetensors::serialize(views, None).unwrap();
        let loaded = Weights::from_safetensors(&bytes).unwrap();
        assert_eq!(loaded, w, "{cfg:?}");
        assert_eq!(tensor_names(loaded.config()).len(), tensors.len());

        let cell = Cell::new(ctx, &loaded).unwrap();
        let (b, i) = (2, 4);
        let x = seeded(9, 2 * b * i, 1.0);
        let s1 = cell
            .forward_host(&x[..b * i], b, HostState::zeros())
            .unwrap();
        let state = HostState {
            h0: Some(&s1.h),
            c0: s1.c.as_deref(),
        };
        let s2 = cell.forward_host(&x[b * i..], b, state).unwrap();
        let seq = Rnn::new(ctx, &w)
            .unwrap()
            .forward_host(&x, 2, b, HostState::zeros(), &RunOptions::default())
            .unwrap();
        // The same kernels on the same data: only the recording differs.
        let want: Vec<f64> = seq.h_n.iter().map(|&v| v as f64).collect();
        assert_close(
            &format!("{cfg:?}: h after two steps"),
            &s2.h,
            &want,
            1e-6,
            0.0,
        );
        if let (Some(c), Some(c_n)) = (&s2.c, &seq.c_n) {
            let want: Vec<f64> = c_n.iter().map(|&v| v as f64).collect();
            assert_close(&format!("{cfg:?}: c after two steps"), c, &want, 1e-6, 0.0);
        }
    }
}

#[test]
fn bad_cell_inputs_are_typed_errors() {
    let Some(ctx) = ctx() else { return };
    let lstm = Cell::new(
        ctx,
        &Weights::init(&RnnConfig::lstm(3, 4).build().unwrap(), 1),
    )
    .unwrap();
    let gru = Cell::new(
        ctx,
        &Weights::init(&RnnConfig::gru(3, 4).build().unwrap(), 1),
    )
    .unwrap();
    let shape_error = |r: Result<CellState, Error>| match r {
        Err(Error::ShapeMismatch { name, .. }) => name,
        other => panic!("{other:?}"),
    };
    let x = up(ctx, &[0.0; 6], &[2, 3]);
    assert_eq!(
        shape_error(lstm.forward(&up(ctx, &[0.0; 8], &[2, 4]), None)),
        "x"
    );
    assert_eq!(
        shape_error(lstm.forward(&up(ctx, &[0.0; 6], &[1, 2, 3]), None)),
        "x"
    );
    let bad_h = CellState {
        h: up(ctx, &[0.0; 6], &[2, 3]),
        c: None,
    };
    assert_eq!(shape_error(lstm.forward(&x, Some(&bad_h))), "h");
    let bad_c = CellState {
        h: up(ctx, &[0.0; 8], &[2, 4]),
        c: Some(up(ctx, &[0.0; 4], &[1, 4])),
    };
    assert_eq!(shape_error(lstm.forward(&x, Some(&bad_c))), "c");
    assert!(shape_error(gru.forward(&x, Some(&bad_c))).starts_with('c'));
    assert!(matches!(
        lstm.forward_host(&[0.0; 5], 2, HostState::zeros()),
        Err(Error::ShapeMismatch { name, .. }) if name == "x"
    ));
    let (_, tape) = lstm.forward_train(&x, None).unwrap();
    assert!(matches!(
        lstm.backward(&tape, Some(&up(ctx, &[0.0; 4], &[1, 4])), None),
        Err(Error::ShapeMismatch { name, .. }) if name == "dh"
    ));
    for cfg in [
        RnnConfig::lstm(3, 4).num_layers(2).build().unwrap(),
        RnnConfig::gru(3, 4)
            .direction(Direction::Bidirectional)
            .build()
            .unwrap(),
    ] {
        assert!(matches!(
            Cell::new(ctx, &Weights::init(&cfg, 1)),
            Err(Error::InvalidConfig(_))
        ));
    }
    // An LSTM given only h starts from c = 0, as from no state at all for h = 0.
    let zero_h = CellState {
        h: up(ctx, &[0.0; 8], &[2, 4]),
        c: None,
    };
    let x = up(ctx, &seeded(3, 6, 1.0), &[2, 3]);
    let a = lstm
        .forward(&x, Some(&zero_h))
        .unwrap()
        .h
        .download(ctx)
        .unwrap();
    let b = lstm.forward(&x, None).unwrap().h.download(ctx).unwrap();
    assert_eq!(a, b);
}
