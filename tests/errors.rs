//! Every bad input gets its typed error, before any GPU work.

mod common;

use common::gpu::{ctx, limited};
use common::seeded;
use rnn_wgpu::cpu::{self, RefWeights, to_f64};
use rnn_wgpu::{
    Context, Direction, Error, GpuTensor, LayerWeights, Layout, Rnn, RnnConfig, State, Weights,
    gpu::ContextOptions,
};
use rnn_wgpu::{HostState, RunOptions};
use safetensors::tensor::{Dtype, TensorView};

fn lstm(i: usize, h: usize) -> RnnConfig {
    RnnConfig::lstm(i, h).build().unwrap()
}

#[test]
fn config_rejects_zero_sizes_and_bad_topology_values() {
    assert!(matches!(
        RnnConfig::lstm(0, 4).build(),
        Err(Error::ZeroSize("input_size"))
    ));
    assert!(matches!(
        RnnConfig::lstm(4, 0).build(),
        Err(Error::ZeroSize("hidden_size"))
    ));
    assert!(matches!(
        RnnConfig::lstm(4, 4).num_layers(0).build(),
        Err(Error::ZeroSize("num_layers"))
    ));
    // Topologies are valid configurations (the GPU's `Rnn::new` refuses what it cannot run).
    assert!(RnnConfig::lstm(4, 4).num_layers(2).build().is_ok());
    assert!(
        RnnConfig::lstm(4, 4)
            .direction(Direction::Bidirectional)
            .build()
            .is_ok()
    );
    assert!(
        RnnConfig::lstm(4, 4)
            .layout(Layout::BatchFirst)
            .build()
            .is_ok()
    );
    for p in [-0.1, 1.0, f32::NAN] {
        assert!(matches!(
            RnnConfig::lstm(4, 4).dropout(p).build(),
            Err(Error::InvalidConfig(_))
        ));
    }
    assert!(matches!(
        RnnConfig::lstm(1 << 20, 1 << 12).build(),
        Err(Error::InvalidConfig(_))
    ));
}

#[test]
fn weights_with_wrong_shapes_are_named() {
    let cfg = lstm(3, 5);
    let mut l = Weights::init(&cfg, 1).layer(0, 0).unwrap().clone();
    l.weight_ih.pop();
    match Weights::from_layers(&cfg, vec![l]) {
        Err(Error::ShapeMismatch { name, expected, .. }) => {
            assert_eq!(name, "weight_ih_l0");
            assert_eq!(expected, vec![20, 3]);
        }
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }
    let nobias = LayerWeights {
        bias_ih: None,
        bias_hh: None,
        ..Weights::init(&cfg, 1).layer(0, 0).unwrap().clone()
    };
    assert!(matches!(
        Weights::from_layers(&cfg, vec![nobias]),
        Err(Error::MissingTensor(_))
    ));
}

/// A safetensors file holding `tensors` (name, dtype, shape, raw little-endian bytes).
fn file(tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(views, None).unwrap()
}

fn f32_bytes(n: usize) -> Vec<u8> {
    bytemuck::cast_slice(&vec![0.5f32; n]).to_vec()
}

#[test]
fn safetensors_errors_name_the_tensor() {
    let cfg = lstm(3, 5);
    let good = |name: &'static str, shape: Vec<usize>| {
        let n = shape.iter().product();
        (name, Dtype::F32, shape, f32_bytes(n))
    };
    let all = vec![
        good("weight_ih_l0", vec![20, 3]),
        good("weight_hh_l0", vec![20, 5]),
        good("bias_ih_l0", vec![20]),
        good("bias_hh_l0", vec![20]),
    ];
    assert!(Weights::from_safetensors_config(&cfg, &file(&all)).is_ok());

    let missing = file(&all[..3]);
    assert!(matches!(
        Weights::from_safetensors_config(&cfg, &missing),
        Err(Error::MissingTensor(n)) if n == "bias_hh_l0"
    ));

    let mut wrong_shape = all.clone();
    wrong_shape[1] = good("weight_hh_l0", vec![20, 4]);
    assert!(matches!(
        Weights::from_safetensors_config(&cfg, &file(&wrong_shape)),
        Err(Error::ShapeMismatch { name, .. }) if name == "weight_hh_l0"
    ));

    let mut wrong_dtype = all.clone();
    wrong_dtype[0] = ("weight_ih_l0", Dtype::I32, vec![20, 3], vec![0u8; 240]);
    assert!(matches!(
        Weights::from_safetensors_config(&cfg, &file(&wrong_dtype)),
        Err(Error::WrongDtype { name, .. }) if name == "weight_ih_l0"
    ));

    assert!(matches!(
        Weights::from_safetensors_config(&cfg, b"not a safetensors file"),
        Err(Error::Safetensors(_))
    ));
    assert!(matches!(
        Weights::load_config(&cfg, "/nonexistent/dir/weights.safetensors"),
        Err(Error::Io(_))
    ));
}

#[test]
fn model_rejects_weights_of_another_config() {
    let Some(ctx) = ctx() else { return };
    let w = Weights::init(&lstm(3, 6), 1);
    assert!(matches!(
        Rnn::with_config(ctx, &lstm(3, 5), &w),
        Err(Error::InvalidConfig(_))
    ));
}

#[test]
fn forward_rejects_bad_shapes_and_empty_sizes() {
    let Some(ctx) = ctx() else { return };
    let cfg = lstm(3, 5);
    let rnn = Rnn::new(ctx, &Weights::init(&cfg, 1)).unwrap();
    let shape_err = |r: rnn_wgpu::Result<rnn_wgpu::Output>| match r {
        Err(Error::ShapeMismatch { name, .. }) => name,
        other => panic!("expected ShapeMismatch, got {other:?}"),
    };
    let x = |shape: &[usize]| GpuTensor::zeros(ctx, shape).unwrap();

    assert_eq!(shape_err(rnn.forward(&x(&[4, 2, 4]), None)), "x");
    assert_eq!(shape_err(rnn.forward(&x(&[8, 3]), None)), "x");
    assert!(matches!(
        rnn.forward(&x(&[0, 2, 3]), None),
        Err(Error::ZeroSize(_))
    ));
    assert!(matches!(
        rnn.forward(&x(&[4, 0, 3]), None),
        Err(Error::ZeroSize(_))
    ));

    let state = |hb: usize, c: Option<usize>| State {
        h: GpuTensor::zeros(ctx, &[1, hb, 5]).unwrap(),
        c: c.map(|cb| GpuTensor::zeros(ctx, &[1, cb, 5]).unwrap()),
    };
    assert_eq!(
        shape_err(rnn.forward(&x(&[4, 2, 3]), Some(&state(3, Some(2))))),
        "h0"
    );
    assert_eq!(
        shape_err(rnn.forward(&x(&[4, 2, 3]), Some(&state(2, Some(1))))),
        "c0"
    );
    // An LSTM given h0 alone runs from c0 = 0 (tests/lstm_forward.rs checks the values).
    assert!(rnn.forward(&x(&[4, 2, 3]), Some(&state(2, None))).is_ok());

    // Host convenience: the flat slice must match T*B*I.
    match rnn.forward_host(&[0.0; 10], 4, 2, HostState::zeros(), &RunOptions::default()) {
        Err(Error::ShapeMismatch { name, .. }) => assert_eq!(name, "x"),
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }
    assert!(matches!(
        rnn.forward_host(&[], 0, 2, HostState::zeros(), &RunOptions::default()),
        Err(Error::ZeroSize(_))
    ));
    assert!(matches!(
        Rnn::new(ctx, &Weights::init(&cfg, 1))
            .unwrap()
            .with_max_chunk_steps(0),
        Err(Error::ZeroSize(_))
    ));

    // Outputs handed to the low-level recorder are checked too.
    let bad_out = rnn_wgpu::Output {
        y: GpuTensor::zeros(ctx, &[4, 2, 6]).unwrap(),
        h_n: GpuTensor::zeros(ctx, &[1, 2, 5]).unwrap(),
        c_n: Some(GpuTensor::zeros(ctx, &[1, 2, 5]).unwrap()),
    };
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    match rnn.record_forward(&mut enc, &x(&[4, 2, 3]), None, &bad_out) {
        Err(Error::ShapeMismatch { name, .. }) => assert_eq!(name, "y"),
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }
}

#[test]
fn external_buffers_are_checked() {
    let Some(ctx) = ctx() else { return };
    let buf = |usage, size| {
        ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage,
            mapped_at_creation: false,
        })
    };
    let not_storage = buf(
        wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
        64,
    );
    assert!(matches!(
        GpuTensor::from_buffer(not_storage, &[4, 4]),
        Err(Error::BadBuffer { .. })
    ));
    let small = buf(wgpu::BufferUsages::STORAGE, 32);
    assert!(matches!(
        GpuTensor::from_buffer(small, &[4, 4]),
        Err(Error::BadBuffer { .. })
    ));
    let no_copy = GpuTensor::from_buffer(buf(wgpu::BufferUsages::STORAGE, 64), &[4, 4]).unwrap();
    assert!(matches!(
        no_copy.download(ctx),
        Err(Error::BadBuffer { .. })
    ));
}

#[test]
fn unknown_adapter_name_is_no_adapter() {
    let opts = ContextOptions {
        adapter: Some("no such adapter, surely".into()),
        ..Default::default()
    };
    assert!(matches!(
        Context::with_options(&opts),
        Err(Error::NoAdapter(_))
    ));
}

fn limit_name<T: std::fmt::Debug>(r: rnn_wgpu::Result<T>) -> &'static str {
    match r {
        Err(Error::LimitExceeded { limit, .. }) => limit,
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
}

/// A forward pass of an `lstm(5, 13)` over `(T, B)` that the schedule must tile into time
/// chunks to fit `ctx`'s lowered limits, against the CPU reference. Weights come from `seed`,
/// the input from `seed + 1`.
fn chunked_forward_matches_reference(ctx: &Context, seed: u64, (t, b): (usize, usize)) {
    let cfg = lstm(5, 13);
    let w = Weights::init(&cfg, seed);
    let rnn = Rnn::with_config(ctx, &cfg, &w).unwrap();
    let x = seeded(seed + 1, t * b * 5, 1.0);
    let out = rnn
        .forward_host(&x, t, b, HostState::zeros(), &RunOptions::default())
        .unwrap();
    let r = cpu::lstm_forward(
        &cfg,
        &RefWeights::new(&cfg, w.layer(0, 0).unwrap()),
        &to_f64(&x),
        None,
        None,
        t,
        b,
    )
    .unwrap();
    // Same tolerance and reasoning as tests/lstm_forward.rs.
    common::assert_close("y (chunked to fit)", &out.y, &r.y, 2e-5, 1e-4);
}

#[test]
fn storage_binding_limit_is_checked_or_tiled() {
    let Some(ctx) = limited(|l| l.max_storage_buffer_binding_size = 1 << 16) else {
        return;
    };
    // Weights of 4*80*80 floats = 100 KiB do not fit a 64 KiB binding.
    let big = lstm(8, 80);
    assert_eq!(
        limit_name(Rnn::new(&ctx, &Weights::init(&big, 1))),
        "max_storage_buffer_binding_size"
    );
    // An input of 1000*3*8 floats = 94 KiB does not either.
    let cfg = lstm(8, 8);
    let rnn = Rnn::new(&ctx, &Weights::init(&cfg, 1)).unwrap();
    let x = GpuTensor::zeros(&ctx, &[1000, 3, 8]).unwrap();
    assert_eq!(
        limit_name(rnn.forward(&x, None)),
        "max_storage_buffer_binding_size"
    );

    // The input projection of 300 steps (300*3*4*13 floats = 183 KiB) is larger than a
    // binding, but it is intermediate: the schedule tiles time into chunks that fit.
    chunked_forward_matches_reference(&ctx, 2, (300, 3));
}

#[test]
fn workgroup_count_limit_is_checked_or_tiled() {
    let Some(ctx) = limited(|l| l.max_compute_workgroups_per_dimension = 4) else {
        return;
    };
    // 100 hidden units need 7 step workgroups along x (16 units each): refused.
    let wide = lstm(1, 100);
    let rnn = Rnn::new(&ctx, &Weights::init(&wide, 1)).unwrap();
    let x = GpuTensor::zeros(&ctx, &[2, 1, 1]).unwrap();
    assert_eq!(
        limit_name(rnn.forward(&x, None)),
        "max_compute_workgroups_per_dimension"
    );

    // T*B = 850 rows need 14 GEMM row-tiles of 64, more than 4: tiled into time chunks of
    // 15 steps (15*17 = 255 rows = 4 tiles) instead.
    chunked_forward_matches_reference(&ctx, 4, (50, 17));
}

#[test]
fn config_rejects_invalid_cell_variants() {
    use rnn_wgpu::{Activation, Activations, Nonlinearity};
    let invalid = |r: rnn_wgpu::Result<RnnConfig>| matches!(r, Err(Error::InvalidConfig(_)));
    assert!(invalid(RnnConfig::gru(4, 8).proj_size(4).build()));
    assert!(invalid(
        RnnConfig::rnn(4, 8, Nonlinearity::Tanh)
            .peepholes(true)
            .build()
    ));
    assert!(invalid(RnnConfig::gru(4, 8).input_forget(true).build()));
    assert!(invalid(
        RnnConfig::rnn(4, 8, Nonlinearity::Relu)
            .cell_clip(-1.0, 1.0)
            .build()
    ));
    assert!(invalid(
        RnnConfig::lstm(4, 8).linear_before_reset(false).build()
    ));
    assert!(invalid(RnnConfig::lstm(4, 8).proj_size(8).build()));
    assert!(invalid(RnnConfig::lstm(4, 8).proj_size(0).build()));
    assert!(invalid(RnnConfig::lstm(4, 8).gate_clip(0.0).build()));
    assert!(invalid(RnnConfig::lstm(4, 8).cell_clip(1.0, -1.0).build()));
    let nan_alpha = Activations {
        gate: Activation::LeakyRelu { alpha: f32::NAN },
        ..Default::default()
    };
    assert!(invalid(
        RnnConfig::lstm(4, 8).activations(nan_alpha).build()
    ));
    // An activation that needs alpha (and beta) with no ONNX default, given without it.
    assert!(matches!(
        Activation::from_onnx("ThresholdedRelu", None, None),
        Err(Error::InvalidConfig(_))
    ));
    assert!(matches!(
        Activation::from_onnx("ScaledTanh", Some(0.2), None),
        Err(Error::InvalidConfig(_))
    ));
    // Where the ONNX operator of that name has defaults, they are taken.
    assert_eq!(
        Activation::from_onnx("HardSigmoid", Some(0.3), None).unwrap(),
        Activation::HardSigmoid {
            alpha: 0.3,
            beta: 0.5
        }
    );
    assert_eq!(
        Activation::from_onnx("LeakyRelu", None, None).unwrap(),
        Activation::LeakyRelu { alpha: 0.01 }
    );
    assert!(matches!(
        Activation::from_onnx("Swish", None, None),
        Err(Error::InvalidConfig(_))
    ));
    assert_eq!(
        Activation::from_onnx("HardSigmoid", Some(0.2), Some(0.5)).unwrap(),
        Activation::HardSigmoid {
            alpha: 0.2,
            beta: 0.5
        }
    );
}

#[test]
fn streaming_sessions_refuse_reverse_directions_and_bad_shapes() {
    let Some(ctx) = ctx() else { return };
    // A reverse direction needs the sequence's end before its first output.
    for direction in [Direction::Reverse, Direction::Bidirectional] {
        let cfg = RnnConfig::lstm(4, 8).direction(direction).build().unwrap();
        let rnn = Rnn::new(ctx, &Weights::init(&cfg, 1)).unwrap();
        assert!(
            matches!(rnn.session(2), Err(Error::Unsupported(_))),
            "{direction:?}"
        );
    }
    let cfg = RnnConfig::gru(4, 8)
        .num_layers(2)
        .layout(Layout::BatchFirst)
        .build()
        .unwrap();
    let rnn = Rnn::new(ctx, &Weights::init(&cfg, 1)).unwrap();
    assert!(matches!(rnn.session(0), Err(Error::ZeroSize(_))));
    let mut s = rnn.session(3).unwrap();
    let x = GpuTensor::zeros(ctx, &[2, 4]).unwrap();
    assert!(matches!(
        s.step(&x),
        Err(Error::ShapeMismatch { name, expected, got }) if name == "x_t" && expected == [3, 4] && got == [2, 4]
    ));
    assert!(matches!(
        s.reset(&[true, false]),
        Err(Error::ShapeMismatch { name, .. }) if name == "reset mask"
    ));
}

#[test]
fn absurd_shapes_are_errors_not_wraparounds() {
    let Some(ctx) = ctx() else { return };
    // Sizes whose products overflow are refused at config time...
    assert!(matches!(
        RnnConfig::lstm(usize::MAX, usize::MAX).build(),
        Err(Error::InvalidConfig(_))
    ));
    // ... and an element count that overflows usize is a typed error, not a small buffer.
    assert!(matches!(
        GpuTensor::zeros(ctx, &[usize::MAX, 3]),
        Err(Error::LimitExceeded {
            limit: "max_buffer_size",
            ..
        })
    ));
    let buf = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 64,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    assert!(matches!(
        GpuTensor::from_buffer(buf, &[usize::MAX / 2, 4]),
        Err(Error::BadBuffer { .. })
    ));
}

#[test]
fn config_bounds_num_layers() {
    use rnn_wgpu::config::MAX_LAYERS;
    assert!(RnnConfig::lstm(4, 4).num_layers(MAX_LAYERS).build().is_ok());
    for layers in [MAX_LAYERS + 1, usize::MAX] {
        match RnnConfig::gru(4, 4).num_layers(layers).build() {
            Err(Error::InvalidConfig(m)) => assert!(m.contains("MAX_LAYERS = 64"), "{m}"),
            other => panic!("{layers} layers: expected InvalidConfig, got {other:?}"),
        }
    }
}

#[test]
fn weights_layer_index_out_of_range_is_typed() {
    let out_of_range = |r: rnn_wgpu::Result<&LayerWeights>| match r {
        Err(Error::IndexOutOfRange { what, index, bound }) => (what, index, bound),
        other => panic!("expected IndexOutOfRange, got {other:?}"),
    };
    let mut one = Weights::init(&lstm(3, 5), 1);
    assert!(one.layer(0, 0).is_ok());
    assert_eq!(out_of_range(one.layer(1, 0)), ("layer", 1, 1));
    // A unidirectional model has no direction 1 (it used to alias the next layer's weights).
    assert_eq!(out_of_range(one.layer(0, 1)), ("direction", 1, 1));
    assert!(matches!(
        one.layer_mut(usize::MAX, 0),
        Err(Error::IndexOutOfRange {
            what: "layer",
            index: usize::MAX,
            bound: 1
        })
    ));
    assert!(matches!(
        one.layer_mut(0, 1),
        Err(Error::IndexOutOfRange {
            what: "direction",
            index: 1,
            bound: 1
        })
    ));

    let cfg = RnnConfig::gru(3, 5)
        .num_layers(2)
        .direction(Direction::Bidirectional)
        .build()
        .unwrap();
    let two = Weights::init(&cfg, 1);
    assert!(two.layer(1, 1).is_ok());
    assert_eq!(out_of_range(two.layer(2, 0)), ("layer", 2, 2));
    assert_eq!(out_of_range(two.layer(1, 2)), ("direction", 2, 2));
}

/// A path in the temporary directory, unique to this process and `what`.
fn temp_path(what: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("rnn_wgpu_errors_{}_{what}", std::process::id()))
}

#[test]
fn save_after_layer_mut_changed_a_tensor_names_it() {
    let cfg = RnnConfig::lstm(3, 5).num_layers(2).build().unwrap();

    let mut shorter = Weights::init(&cfg, 1);
    shorter.layer_mut(1, 0).unwrap().weight_hh.pop();
    match shorter.to_safetensors() {
        Err(Error::ShapeMismatch {
            name,
            expected,
            got,
        }) => {
            assert_eq!(name, "weight_hh_l1");
            assert_eq!(expected, vec![20, 5]);
            assert_eq!(got, vec![99]);
        }
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }
    let path = temp_path("shorter.safetensors");
    assert!(matches!(
        shorter.save(&path),
        Err(Error::ShapeMismatch { name, .. }) if name == "weight_hh_l1"
    ));
    assert!(!path.exists(), "nothing is written for invalid weights");

    // Removing a tensor the configuration needs: named, and the names of the tensors that
    // remain do not shift onto their neighbours.
    let mut no_bias_ih = Weights::init(&cfg, 1);
    no_bias_ih.layer_mut(0, 0).unwrap().bias_ih = None;
    let path = temp_path("no_bias_ih.safetensors");
    assert!(matches!(
        no_bias_ih.save(&path),
        Err(Error::MissingTensor(name)) if name == "bias_ih_l0"
    ));
    assert!(!path.exists(), "nothing is written for invalid weights");
    let tensors = no_bias_ih.named_tensors();
    let bias_hh = no_bias_ih.layer(0, 0).unwrap().bias_hh.clone().unwrap();
    let (_, _, labelled) = tensors
        .iter()
        .find(|(name, _, _)| name == "bias_hh_l0")
        .unwrap();
    assert_eq!(*labelled, bias_hh.as_slice());
    assert!(!tensors.iter().any(|(name, _, _)| name == "bias_ih_l0"));

    // A tensor the configuration has no place for.
    let mut extra = Weights::init(&cfg, 1);
    extra.layer_mut(0, 0).unwrap().peephole = Some(vec![0.0; 15]);
    assert!(matches!(
        extra.to_safetensors(),
        Err(Error::InvalidConfig(m)) if m.contains("peephole_l0")
    ));
}

#[test]
fn onnx_export_after_layer_mut_changed_a_tensor_names_it() {
    use rnn_wgpu::onnx;
    let cfg = RnnConfig::gru(3, 5).build().unwrap();
    let mut shorter = Weights::init(&cfg, 1);
    shorter.layer_mut(0, 0).unwrap().weight_ih.truncate(10);
    match onnx::export_layer(&shorter, 0) {
        Err(Error::ShapeMismatch {
            name,
            expected,
            got,
        }) => {
            assert_eq!(name, "weight_ih_l0");
            assert_eq!(expected, vec![15, 3]);
            assert_eq!(got, vec![10]);
        }
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }

    let peep = RnnConfig::lstm(3, 5).peepholes(true).build().unwrap();
    let mut no_bias_hh = Weights::init(&peep, 1);
    no_bias_hh.layer_mut(0, 0).unwrap().bias_hh = None;
    assert!(matches!(
        onnx::export_layer(&no_bias_hh, 0),
        Err(Error::MissingTensor(name)) if name == "bias_hh_l0"
    ));
    let mut no_peephole = Weights::init(&peep, 1);
    no_peephole.layer_mut(0, 0).unwrap().peephole = None;
    assert!(matches!(
        onnx::export_layer(&no_peephole, 0),
        Err(Error::MissingTensor(name)) if name == "peephole_l0"
    ));
    let mut longer = Weights::init(&peep, 1);
    longer
        .layer_mut(0, 0)
        .unwrap()
        .peephole
        .as_mut()
        .unwrap()
        .push(0.0);
    assert!(matches!(
        onnx::export_layer(&longer, 0),
        Err(Error::ShapeMismatch { name, got, .. }) if name == "peephole_l0" && got == [16]
    ));
}

#[test]
fn gpu_pack_functions_refuse_wrong_lengths() {
    use rnn_wgpu::gpu::pack::{pack_biases, pack_gate_interleaved, unpack_gate_interleaved};
    let shape = |r: rnn_wgpu::Result<Vec<f32>>| match r {
        Err(Error::ShapeMismatch {
            name,
            expected,
            got,
        }) => (name, expected, got),
        other => panic!("expected ShapeMismatch, got {other:?}"),
    };
    let (g, h, k) = (4, 3, 5);
    let w = vec![0.5f32; g * h * k];
    let packed = pack_gate_interleaved(&w, g, h, k).unwrap();
    assert_eq!(unpack_gate_interleaved(&packed, g, h, k).unwrap(), w);
    assert_eq!(
        shape(pack_gate_interleaved(&w[1..], g, h, k)),
        ("w".to_string(), vec![12, 5], vec![59])
    );
    assert_eq!(
        shape(unpack_gate_interleaved(&packed[..50], g, h, k)),
        ("p".to_string(), vec![5, 3, 4], vec![50])
    );
    // Sizes whose product overflows are a mismatch, not a wrapped-around length.
    assert_eq!(shape(pack_gate_interleaved(&w, usize::MAX, 2, 2)).0, "w");
    assert_eq!(shape(unpack_gate_interleaved(&w, 2, usize::MAX, 2)).0, "p");

    let b = vec![0.5f32; g * h];
    assert_eq!(pack_biases(&b, &b, g, h).unwrap().len(), 2 * g * h);
    assert_eq!(
        shape(pack_biases(&b[..11], &b, g, h)),
        ("b_ih".to_string(), vec![12], vec![11])
    );
    assert_eq!(
        shape(pack_biases(&b, &[], g, h)),
        ("b_hh".to_string(), vec![12], vec![0])
    );
}

/// Calls `f` with every argument of the right length (it must succeed), then once per argument
/// with that one a value short, and checks that the [`Error::ShapeMismatch`] names it.
fn each_short_argument_is_named(
    what: &str,
    args: &[(&str, usize)],
    f: impl Fn(&[Vec<f64>]) -> rnn_wgpu::Result<()>,
) {
    let whole: Vec<Vec<f64>> = args
        .iter()
        .enumerate()
        .map(|(i, &(_, n))| seeded(i as u64, n, 0.5).iter().map(|&v| v as f64).collect())
        .collect();
    if let Err(e) = f(&whole) {
        panic!("{what} with every length right: {e}");
    }
    for (i, &(name, _)) in args.iter().enumerate() {
        let mut short = whole.clone();
        short[i].pop();
        match f(&short) {
            Err(Error::ShapeMismatch { name: got, .. }) => assert_eq!(got, name, "{what}"),
            other => panic!("{what} with `{name}` short: expected ShapeMismatch, got {other:?}"),
        }
    }
}

#[test]
fn cpu_step_functions_refuse_wrong_lengths() {
    use rnn_wgpu::Nonlinearity;
    let (b, h, i) = (2, 3, 4);
    each_short_argument_is_named(
        "input_projection",
        &[("x", b * i), ("weight_ih", 4 * h * i), ("bias_ih", 4 * h)],
        |a| cpu::input_projection(&a[0], &a[1], &a[2], b, i).map(drop),
    );
    // Every variant tensor present: peepholes and a projection (S = P = 2).
    let p = 2;
    let variant = RnnConfig::lstm(i, h)
        .peepholes(true)
        .proj_size(p)
        .build()
        .unwrap();
    each_short_argument_is_named(
        "lstm_step",
        &[
            ("gx_t", b * 4 * h),
            ("h_prev", b * p),
            ("c_prev", b * h),
            ("weight_hh", 4 * h * p),
            ("bias_hh", 4 * h),
            ("peephole", 3 * h),
            ("weight_hr", p * h),
        ],
        |a| {
            cpu::lstm_step(
                &variant,
                &a[0],
                &a[1],
                &a[2],
                &a[3],
                &a[4],
                Some(&a[5]),
                Some(&a[6]),
                b,
            )
            .map(drop)
        },
    );
    each_short_argument_is_named(
        "lstm_step_backward",
        &[
            ("dh", b * p),
            ("dc", b * h),
            ("c_prev", b * h),
            ("gates_t", b * 4 * h),
            ("pre_t", b * 4 * h),
            ("c_t", b * h),
            ("c_unclipped_t", b * h),
            ("weight_hh", 4 * h * p),
            ("peephole", 3 * h),
            ("weight_hr", p * h),
        ],
        |a| {
            cpu::lstm_step_backward(
                &variant,
                &a[0],
                &a[1],
                &a[2],
                &a[3],
                &a[4],
                &a[5],
                &a[6],
                &a[7],
                Some(&a[8]),
                Some(&a[9]),
                b,
            )
            .map(drop)
        },
    );

    // Sizes whose products overflow are refused, not wrapped.
    let plain = lstm(i, h);
    let (w_hh, b_hh) = (vec![0.0; 4 * h * h], vec![0.0; 4 * h]);
    assert!(matches!(
        cpu::lstm_step(&plain, &[], &[], &[], &w_hh, &b_hh, None, None, usize::MAX),
        Err(Error::ShapeMismatch { name, .. }) if name == "gx_t"
    ));
    assert!(matches!(
        cpu::input_projection(&[], &[], &[], usize::MAX, usize::MAX),
        Err(Error::ShapeMismatch { name, .. }) if name == "x"
    ));

    let gru = RnnConfig::gru(i, h).build().unwrap();
    each_short_argument_is_named(
        "gru_step",
        &[
            ("gx_t", b * 3 * h),
            ("h_prev", b * h),
            ("weight_hh", 3 * h * h),
            ("bias_hh", 3 * h),
        ],
        |a| cpu::gru_step(&gru, &a[0], &a[1], &a[2], &a[3], b).map(drop),
    );
    each_short_argument_is_named(
        "gru_step_backward",
        &[
            ("dh", b * h),
            ("h_prev", b * h),
            ("gates_t", b * 3 * h),
            ("pre_t", b * 3 * h),
            ("hn_t", b * h),
            ("weight_hh", 3 * h * h),
        ],
        |a| cpu::gru_step_backward(&gru, &a[0], &a[1], &a[2], &a[3], &a[4], &a[5], b).map(drop),
    );

    let rnn = RnnConfig::rnn(i, h, Nonlinearity::Relu).build().unwrap();
    each_short_argument_is_named(
        "rnn_step",
        &[
            ("gx_t", b * h),
            ("h_prev", b * h),
            ("weight_hh", h * h),
            ("bias_hh", h),
        ],
        |a| cpu::rnn_step(&rnn, &a[0], &a[1], &a[2], &a[3], b).map(drop),
    );
    each_short_argument_is_named(
        "rnn_step_backward",
        &[("dh", b * h), ("pre_t", b * h), ("weight_hh", h * h)],
        |a| cpu::rnn_step_backward(&rnn, &a[0], &a[1], &a[2], b).map(drop),
    );
}

#[test]
fn gradients_of_another_model_are_typed_errors() {
    let Some(ctx) = ctx() else { return };
    let small = lstm(3, 4);
    let big = RnnConfig::lstm(3, 4).num_layers(2).build().unwrap();
    let a = Rnn::new(ctx, &Weights::init(&small, 1)).unwrap();
    let b = Rnn::new(ctx, &Weights::init(&big, 1)).unwrap();
    let x = GpuTensor::zeros(ctx, &[2, 1, 3]).unwrap();
    let (out, tape) = b.forward_train(&x, None).unwrap();
    let grads = b.backward(&tape, Some(&out.y), None, None).unwrap();
    // Two layers' gradients unpacked for a one-layer model: named, not a panic.
    assert!(matches!(
        grads.params.to_host(&a),
        Err(Error::ShapeMismatch { name, .. }) if name.starts_with("param grads")
    ));
    assert!(matches!(
        grads.to_host(&a),
        Err(Error::ShapeMismatch { .. })
    ));
    // Same layer count, other sizes.
    let wide = lstm(3, 6);
    let c = Rnn::new(ctx, &Weights::init(&wide, 1)).unwrap();
    let g = rnn_wgpu::ParamGrads::zeros(&c).unwrap();
    assert!(matches!(
        g.to_host(&a),
        Err(Error::ShapeMismatch { name, .. }) if name.starts_with("param grads")
    ));
    // And a tape of one model refused by another.
    assert!(matches!(
        a.backward(&tape, None, None, None),
        Err(Error::TapeMismatch(_))
    ));
}

/// The CPU reference has no dropout-seed counter: a training forward with dropout between
/// layers and no `RunOptions::dropout_seed` is a typed error that names the option, and a
/// GRU given a `c0` is refused on the host path.
#[test]
fn cpu_training_with_dropout_needs_a_seed_and_a_gru_has_no_c0() {
    let cfg = RnnConfig::gru(3, 4)
        .num_layers(2)
        .dropout(0.5)
        .build()
        .unwrap();
    let w = Weights::init(&cfg, 1);
    let x = vec![0.1f64; 2 * 3];
    let err = cpu::stack_forward_train(
        &cfg,
        &w,
        &x,
        2,
        1,
        HostState::zeros(),
        &RunOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidConfig(m) if m.contains("dropout_seed")),
        "{err}"
    );
    let seeded_opts = RunOptions {
        dropout_seed: Some(7),
        ..Default::default()
    };
    cpu::stack_forward_train(&cfg, &w, &x, 2, 1, HostState::zeros(), &seeded_opts).unwrap();

    let Some(ctx) = ctx() else { return };
    let rnn = Rnn::new(ctx, &w).unwrap();
    let c0 = vec![0.0f32; 2 * 4];
    let xf = vec![0.1f32; 2 * 3];
    let err = rnn
        .forward_host(&xf, 2, 1, HostState::hc(&c0, &c0), &RunOptions::default())
        .unwrap_err();
    assert!(
        matches!(&err, Error::ShapeMismatch { name, .. } if name.contains("c0")),
        "{err}"
    );
}
