//! The step kernels' geometry rule, checked on plans (pure CPU, no GPU): every forward and
//! backward step dispatch has at least 128 workgroups whenever H >= 512, at any batch, so a
//! large GPU (an H100 has 132 SMs) has a workgroup for every multiprocessor even at B = 1.
//! The DeepBench rows are read from `benches/deepbench_rnn.csv`, the file the harness runs.

use rnn_wgpu::{Direction, Nonlinearity, Plan, PlanMode, RnnConfig};

/// The rule's threshold: about one workgroup per SM of an H100 (132).
const MIN_GROUPS: u64 = 128;

/// Every step dispatch line of `plan`'s printout: (kernel, workgroups, what).
fn step_dispatches(plan: &Plan) -> Vec<(String, u64, String)> {
    let text = plan.to_string();
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(kernel) = words.next() else { continue };
        // Per-dispatch lines only (the per-kernel totals have no `workgroups=`).
        if (kernel != "rnn_step" && kernel != "rnn_step_backward") || !line.contains("workgroups=")
        {
            continue;
        }
        let groups = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("workgroups="))
            .unwrap()
            .parse()
            .unwrap();
        out.push((kernel.to_string(), groups, line.to_string()));
    }
    out
}

fn check(cfg: &RnnConfig, steps: usize, batch: usize) {
    let limits = wgpu::Limits::default();
    let plan = Plan::new(cfg, steps, batch, PlanMode::Training, false, &limits).unwrap();
    let lines = step_dispatches(&plan);
    assert!(
        lines.iter().any(|l| l.0 == "rnn_step") && lines.iter().any(|l| l.0 == "rnn_step_backward"),
        "no step dispatches printed:\n{plan}"
    );
    // The rule holds from H = 512 (smaller layers print their geometry but are not held to it).
    for (kernel, groups, line) in lines.into_iter().filter(|_| cfg.hidden_size() >= 512) {
        assert!(
            groups >= MIN_GROUPS,
            "{kernel} of H = {}, B = {batch} has {groups} workgroups (< {MIN_GROUPS}): {line}",
            cfg.hidden_size()
        );
    }
}

#[test]
fn deepbench_rows_fill_a_large_gpu() {
    let csv = include_str!("../benches/deepbench_rnn.csv");
    let mut rows = 0;
    for line in csv
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("suite"))
    {
        let f: Vec<&str> = line.split(',').collect();
        let (h, b): (usize, usize) = (f[2].parse().unwrap(), f[3].parse().unwrap());
        let builder = match f[1] {
            "lstm" => RnnConfig::lstm(h, h),
            "gru" => RnnConfig::gru(h, h),
            "vanilla" => RnnConfig::rnn(h, h, Nonlinearity::Tanh),
            other => panic!("unknown cell {other}"),
        };
        // Two steps show every dispatch kind of the pass; T does not change the geometry.
        check(&builder.build().unwrap(), 2, b);
        rows += 1;
    }
    assert!(rows >= 50, "only {rows} DeepBench rows read");
}

#[test]
fn every_batch_fills_a_large_gpu_from_h_512() {
    for h in [512, 513, 600, 1000, 1024, 2048, 4096] {
        let cfgs = [
            RnnConfig::lstm(8, h).build().unwrap(),
            RnnConfig::gru(8, h).build().unwrap(),
            RnnConfig::gru(8, h)
                .linear_before_reset(false)
                .build()
                .unwrap(),
            RnnConfig::rnn(8, h, Nonlinearity::Relu).build().unwrap(),
            RnnConfig::lstm(8, h)
                .proj_size(h / 2)
                .direction(Direction::Bidirectional)
                .build()
                .unwrap(),
        ];
        for cfg in &cfgs {
            for b in [
                1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 32, 33, 64, 100, 128, 256, 1000,
            ] {
                check(cfg, 2, b);
            }
        }
    }
}

/// The forward step's geometry, as the printout gives it: the `what` of its first dispatch.
fn forward_step(cfg: &RnnConfig, batch: usize) -> String {
    let plan = Plan::new(
        cfg,
        2,
        batch,
        PlanMode::Inference,
        false,
        &wgpu::Limits::default(),
    )
    .unwrap();
    step_dispatches(&plan)
        .into_iter()
        .find(|l| l.0 == "rnn_step")
        .map(|l| l.2)
        .expect("a forward step dispatch")
}

#[test]
fn large_batches_get_a_register_tile_small_ones_a_k_split() {
    // From B = 32 (each weight feeds many rows) the forward step is a register-tiled GEMM
    // tile, 2 columns by 4 or 8 rows per thread, wherever that keeps 128 workgroups; below,
    // or where it would not fill the GPU, the k-split layout stays. The plain RNN's packed
    // layout is never staged.
    let lstm = |h| RnnConfig::lstm(h, h).build().unwrap();
    let gru = |h| RnnConfig::gru(h, h).build().unwrap();
    let staged = [
        (lstm(1024), 64, "tile=2x4"),
        (lstm(2048), 32, "tile=2x4"),
        (lstm(1024), 128, "tile=2x8"),
        (lstm(2560), 64, "tile=2x8"),
        (gru(512), 128, "tile=2x4"),
    ];
    for (cfg, b, tile) in &staged {
        let line = forward_step(cfg, *b);
        assert!(
            line.contains(tile) && line.contains("staged") && line.contains("ksplit=1"),
            "H = {}, B = {b}: {line}",
            cfg.hidden_size()
        );
    }
    let rnn = RnnConfig::rnn(2048, 2048, Nonlinearity::Relu)
        .build()
        .unwrap();
    let k_split = [
        (lstm(256), 64),
        (lstm(512), 16),
        (lstm(1024), 1),
        (lstm(128), 32),
        (lstm(4096), 16),
        (rnn, 256),
    ];
    for (cfg, b) in &k_split {
        let line = forward_step(cfg, *b);
        assert!(
            !line.contains("staged"),
            "H = {}, B = {b}: {line}",
            cfg.hidden_size()
        );
    }
}
