//! `tests/prop_invalid.rs`, continued: configurations with bad or non-finite values, and
//! out-of-range indices, wrong layer counts, bad optimiser and clip settings.

use super::*;

/// A configuration drawn with possibly bad values, and what `build` must say.
#[derive(Debug, Clone)]
struct ConfigCase {
    cell: u8,
    input: usize,
    hidden: usize,
    layers: usize,
    dropout: f32,
    gate_clip: Option<f32>,
    cell_clip: Option<(f32, f32)>,
    proj: Option<usize>,
    peepholes: bool,
    input_forget: bool,
    reset_before: bool,
    alpha: f32,
    beta: f32,
    act: usize,
}

/// Floats that are mostly ordinary, with NaN, infinities, zero, negatives and huge values.
fn float() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => -2.0f32..2.0,
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => Just(f32::NEG_INFINITY),
        1 => Just(0.0f32),
        1 => Just(f32::MAX),
        1 => Just(-1e-30f32),
    ]
}

/// Mostly a value in `lo..hi`, sometimes any of [`float`]'s.
fn mostly(lo: f32, hi: f32) -> impl Strategy<Value = f32> {
    prop_oneof![3 => lo..hi, 1 => float()]
}

fn config_case() -> impl Strategy<Value = ConfigCase> {
    (
        (0u8..3, 0usize..6, 0usize..6, 0usize..4),
        prop_oneof![2 => Just(0.0f32), 1 => mostly(0.0, 0.9)],
        prop::option::weighted(0.3, mostly(0.1, 3.0)),
        prop::option::weighted(0.3, (mostly(-3.0, -0.1), mostly(0.1, 3.0))),
        prop::option::weighted(0.3, 0usize..7),
        prop::sample::select(vec![
            (false, false, false),
            (false, false, false),
            (true, false, false),
            (false, true, false),
            (false, false, true),
            (true, true, true),
        ]),
        (mostly(0.05, 1.0), mostly(0.0, 1.0), 0usize..11),
    )
        .prop_map(
            |((cell, input, hidden, layers), dropout, gc, cc, proj, flags, (alpha, beta, act))| {
                ConfigCase {
                    cell,
                    input,
                    hidden,
                    layers,
                    dropout,
                    gate_clip: gc,
                    cell_clip: cc,
                    proj,
                    peepholes: flags.0,
                    input_forget: flags.1,
                    reset_before: flags.2,
                    alpha,
                    beta,
                    act,
                }
            },
        )
}

fn activation(k: usize, alpha: f32, beta: f32) -> Activation {
    use Activation::*;
    [
        Sigmoid,
        Tanh,
        Relu,
        HardSigmoid { alpha, beta },
        LeakyRelu { alpha },
        ThresholdedRelu { alpha },
        ScaledTanh { alpha, beta },
        Affine { alpha, beta },
        Elu { alpha },
        Softsign,
        Softplus,
    ][k]
}

/// Whether `build` must accept `c` (the rules of `RnnConfigBuilder::build`'s docs).
fn config_is_valid(c: &ConfigCase) -> bool {
    let lstm = c.cell == 0;
    let act = activation(c.act, c.alpha, c.beta);
    let (a, b) = act.params();
    c.input > 0
        && c.hidden > 0
        && c.layers > 0
        && (0.0..1.0).contains(&c.dropout)
        && c.gate_clip.is_none_or(|g| g > 0.0 && g.is_finite())
        && c.cell_clip
            .is_none_or(|(lo, hi)| lo.is_finite() && hi.is_finite() && lo < hi)
        && (lstm || (c.cell_clip.is_none() && c.proj.is_none()))
        && (lstm || (!c.peepholes && !c.input_forget))
        && (c.cell == 1 || !c.reset_before)
        && c.proj.is_none_or(|p| p >= 1 && p < c.hidden)
        && a.is_finite()
        && b.is_finite()
}

fn check_config(ctx: &Context, c: &ConfigCase) -> Result<(), TestCaseError> {
    let mut b = match c.cell {
        0 => RnnConfig::lstm(c.input, c.hidden),
        1 => RnnConfig::gru(c.input, c.hidden).linear_before_reset(!c.reset_before),
        _ => RnnConfig::rnn(c.input, c.hidden, rnn_wgpu::Nonlinearity::Tanh),
    };
    // An RNN's builder takes reset-before only through the GRU builder method; ask for it on
    // every cell to see it refused elsewhere.
    if c.reset_before && c.cell != 1 {
        b = b.linear_before_reset(false);
    }
    b = b
        .num_layers(c.layers)
        .dropout(c.dropout)
        .peepholes(c.peepholes)
        .input_forget(c.input_forget)
        .activations(Activations {
            cell: activation(c.act, c.alpha, c.beta),
            ..Activations::default()
        });
    if let Some(g) = c.gate_clip {
        b = b.gate_clip(g);
    }
    if let Some((lo, hi)) = c.cell_clip {
        b = b.cell_clip(lo, hi);
    }
    if let Some(p) = c.proj {
        b = b.proj_size(p);
    }
    let r = b.build();
    let valid = config_is_valid(c);
    match (&r, valid) {
        (Ok(_), true) => {}
        (Err(Error::ZeroSize(_) | Error::InvalidConfig(_)), false) => {}
        _ => {
            return Err(TestCaseError::fail(format!(
                "build: valid = {valid}, got {r:?}"
            )));
        }
    }
    // A valid configuration gives weights and a model (running it is `tests/prop_valid.rs`'s
    // business: each activation parameter is a pipeline of its own to compile).
    if let Ok(cfg) = r {
        let w = Weights::init(&cfg, 3);
        Rnn::new(ctx, &w).map_err(|e| TestCaseError::fail(format!("Rnn::new: {e}")))?;
        // The model of another config is refused.
        let other = RnnConfig::lstm(cfg.input_size() + 1, cfg.hidden_size())
            .build()
            .unwrap();
        let r = Rnn::with_config(ctx, &other, &w);
        if !matches!(r, Err(Error::InvalidConfig(_))) {
            return Err(TestCaseError::fail(format!(
                "Rnn::with_config with weights of another config: {:?}",
                r.map(|_| ())
            )));
        }
    }
    sink_is_clean(ctx)
}

#[test]
fn bad_configurations_are_refused_by_build() {
    let Some(ctx) = ctx() else { return };
    let valid = AtomicUsize::new(0);
    run_cases("configs", 2, config_case(), |c| {
        if config_is_valid(c) {
            valid.fetch_add(1, Ordering::Relaxed);
        }
        check_config(ctx, c)
    });
    eprintln!("configs: {} valid", valid.into_inner());
}

/// Out-of-range layer and direction indices, weights of another topology, bad optimiser and
/// clip settings.
#[derive(Debug, Clone)]
struct IndexCase {
    model: usize,
    layer: usize,
    dir: usize,
    drop_layer: bool,
    lr: f64,
    max_norm: f32,
    min: f32,
    max: f32,
}

fn index_case() -> impl Strategy<Value = IndexCase> {
    let f64s = prop_oneof![
        3 => 0.0f64..1.0,
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(-0.5f64),
    ];
    (
        (0usize..4, 0usize..5, 0usize..4, any::<bool>()),
        f64s,
        float(),
        (float(), float()),
    )
        .prop_map(
            |((model, layer, dir, drop_layer), lr, max_norm, (min, max))| IndexCase {
                model,
                layer,
                dir,
                drop_layer,
                lr,
                max_norm,
                min,
                max,
            },
        )
}

fn check_index(ctx: &Context, c: &IndexCase) -> Result<(), TestCaseError> {
    let rnn = &models(ctx)[c.model];
    let cfg = rnn.config().clone();
    let mut w = Weights::init(&cfg, 5);
    let in_range = c.layer < cfg.num_layers() && c.dir < cfg.num_directions();
    let r = w.layer(c.layer, c.dir).map(|_| ());
    match (&r, in_range) {
        (Ok(()), true) | (Err(Error::IndexOutOfRange { .. }), false) => {}
        _ => {
            return Err(TestCaseError::fail(format!(
                "layer({}, {}): in range = {in_range}, got {r:?}",
                c.layer, c.dir
            )));
        }
    }
    let r = w.layer_mut(c.layer, c.dir).map(|_| ());
    if r.is_ok() != in_range {
        return Err(TestCaseError::fail(format!("layer_mut: got {r:?}")));
    }
    // Weights of the wrong number of layer-directions.
    let mut layers: Vec<_> = (0..cfg.num_layers())
        .flat_map(|l| (0..cfg.num_directions()).map(move |d| (l, d)))
        .map(|(l, d)| w.layer(l, d).unwrap().clone())
        .collect();
    if c.drop_layer {
        layers.pop();
    } else {
        layers.push(layers[0].clone());
    }
    let r = Weights::from_layers(&cfg, layers);
    if !matches!(
        r,
        Err(Error::ShapeMismatch { .. } | Error::InvalidConfig(_))
    ) {
        return Err(TestCaseError::fail(format!(
            "from_layers with a wrong count: {:?}",
            r.map(|_| ())
        )));
    }
    // Optimiser and clip settings.
    let params = rnn.parameters().unwrap();
    let lr_ok = c.lr >= 0.0 && c.lr.is_finite();
    let r = SgdOptimizer::new(ctx, Sgd::new(c.lr), &params).map(|_| ());
    if r.is_ok() != lr_ok || matches!(r, Err(ref e) if !matches!(e, Error::InvalidConfig(_))) {
        return Err(TestCaseError::fail(format!("Sgd lr {}: {r:?}", c.lr)));
    }
    let r = AdamOptimizer::new(ctx, Adam::new(c.lr), &params).map(|_| ());
    if r.is_ok() != lr_ok || matches!(r, Err(ref e) if !matches!(e, Error::InvalidConfig(_))) {
        return Err(TestCaseError::fail(format!("Adam lr {}: {r:?}", c.lr)));
    }
    // Clips on a copy of the first parameter (the model's own stay untouched).
    let p0 = params[0].download(ctx).unwrap();
    let g = GpuTensor::upload(ctx, &p0, params[0].shape()).unwrap();
    // torch's rules: max_norm >= 0 (infinity included); min <= max, neither NaN.
    let r = clip_grad_norm(ctx, &[&g], c.max_norm);
    let norm_ok = c.max_norm >= 0.0;
    if r.is_ok() != norm_ok || matches!(r, Err(ref e) if !matches!(e, Error::InvalidConfig(_))) {
        return Err(TestCaseError::fail(format!(
            "clip_grad_norm {}: {r:?}",
            c.max_norm
        )));
    }
    let r = clip_grad_value(ctx, &[&g], c.min, c.max);
    let value_ok = c.min <= c.max;
    if r.is_ok() != value_ok || matches!(r, Err(ref e) if !matches!(e, Error::InvalidConfig(_))) {
        return Err(TestCaseError::fail(format!(
            "clip_grad_value [{}, {}]: {r:?}",
            c.min, c.max
        )));
    }
    sink_is_clean(ctx)
}

#[test]
fn bad_indices_counts_and_settings_are_typed_errors() {
    let Some(ctx) = ctx() else { return };
    run_cases("indices", 3, index_case(), |c| check_index(ctx, c));
}
