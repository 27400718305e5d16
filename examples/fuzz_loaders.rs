//! Fuzz the weight loaders: mutate a committed corpus with a seeded generator and feed every
//! mutant to each target under `catch_unwind`. A panic is a crash: its input is written to
//! `--crashes` and the run exits non-zero.
//!
//! ```text
//! cargo run --release --example fuzz_loaders -- --execs 1000000 --seed 1
//! cargo run --release --example fuzz_loaders -- --write-seeds   # regenerate the seed files
//! ```
//!
//! Why not `cargo fuzz`: it needs a nightly toolchain (libFuzzer's sanitizer flags), and
//! AFL++ or honggfuzz need their C toolchains plus an instrumented rebuild of wgpu. This
//! fuzzer runs on stable Rust in-process. It is not coverage-guided; it knows the format
//! instead: besides byte flips, truncations, insertions and splices, it edits the
//! safetensors header (its length field, every number, dtype string and tensor name of the
//! JSON) and the varints of ONNX's protobuf (tags, lengths, integers), and it keeps a mutant
//! whose outcome (`ok`, or which check refused it) is new, so later mutations start from
//! inputs that reach other branches of the loader.
//! The targets live in `tests/common/fuzz.rs`; `tests/fuzz_corpus.rs` replays the corpus in CI.

#[path = "../tests/common/fuzz.rs"]
mod fuzz;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use rand::Rng;
use safetensors::tensor::{Dtype, TensorView};

#[derive(Parser)]
struct Args {
    /// Target name (see `tests/common/fuzz.rs`); all targets when omitted.
    #[arg(long)]
    target: Option<String>,
    /// Executions per target.
    #[arg(long, default_value_t = 1_000_000)]
    execs: u64,
    /// Seed of the mutation generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where crashing inputs are written.
    #[arg(long, default_value = "target/fuzz-crashes")]
    crashes: PathBuf,
    /// Also write each mutant with a new outcome here (candidates for the corpus).
    #[arg(long)]
    save: Option<PathBuf>,
    /// Write the seed files of the safetensors corpus and exit.
    #[arg(long)]
    write_seeds: bool,
}

/// Most entries the in-memory corpus grows to.
const CORPUS_CAP: usize = 4096;

fn main() {
    let args = Args::parse();
    if args.write_seeds {
        write_safetensors_seeds();
        return;
    }
    // The harness reports a target's panics itself.
    fuzz::quiet_panics_in_targets();
    let mut crashed = 0;
    for target in fuzz::TARGETS {
        if args.target.as_deref().is_some_and(|t| t != target.name) {
            continue;
        }
        crashed += run(target, &args);
    }
    if crashed > 0 {
        std::process::exit(1);
    }
}

/// Fuzz one target; returns the crashes found.
fn run(target: &fuzz::Target, args: &Args) -> u64 {
    let mut rng = fuzz::rng(args.seed);
    let mut corpus: Vec<Vec<u8>> = fuzz::corpus(target.name)
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    let mut seen: HashSet<String> = HashSet::new();
    for d in &corpus {
        if let Ok(l) = fuzz::run_caught(target, d) {
            seen.insert(l);
        }
    }
    let start = Instant::now();
    let (mut crashes, mut oks) = (0u64, 0u64);
    for exec in 1..=args.execs {
        let base = rng.random_range(0..corpus.len());
        let other = rng.random_range(0..corpus.len());
        let mut input = corpus[base].clone();
        fuzz::mutate(&mut rng, target, &mut input, &corpus[other]);
        match fuzz::run_caught(target, &input) {
            Ok(label) => {
                oks += u64::from(label.contains("ok"));
                if seen.insert(label.clone()) {
                    if let Some(dir) = &args.save {
                        save(dir, target.name, &format!("{:08}", seen.len()), &input);
                    }
                    if corpus.len() < CORPUS_CAP {
                        corpus.push(input);
                    }
                }
            }
            Err(msg) => {
                crashes += 1;
                let name = format!("crash-{exec}");
                save(&args.crashes, target.name, &name, &input);
                println!("{}: CRASH at execution {exec}: {msg}", target.name);
            }
        }
        if exec % 200_000 == 0 {
            println!(
                "{}: {exec} executions, {:.0}/s, {} distinct outcomes, corpus {}, crashes {crashes}",
                target.name,
                exec as f64 / start.elapsed().as_secs_f64(),
                seen.len(),
                corpus.len()
            );
        }
    }
    println!(
        "{}: {} executions in {:.1} s (seed {}), {crashes} crashes, {} distinct outcomes, \
         {oks} inputs loaded for some config",
        target.name,
        args.execs,
        start.elapsed().as_secs_f64(),
        args.seed,
        seen.len()
    );
    crashes
}

fn save(dir: &std::path::Path, target: &str, name: &str, data: &[u8]) {
    let dir = dir.join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), data).unwrap();
}

/// The seed files: a valid file of each config (f32, as `Weights::save` writes them), config
/// 0 in f64, f16 and bf16, one with metadata and an extra tensor, and one with a tensor of an
/// unsupported dtype.
fn write_safetensors_seeds() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz/safetensors");
    std::fs::create_dir_all(&dir).unwrap();
    let configs = fuzz::safetensors_configs();
    for (k, cfg) in configs.iter().enumerate() {
        let w = rnn_wgpu::Weights::init(cfg, k as u64);
        let bytes = w.to_safetensors().unwrap();
        std::fs::write(dir.join(format!("valid-config{k}-f32.safetensors")), bytes).unwrap();
    }
    let w = rnn_wgpu::Weights::init(&configs[0], 0);
    let tensors = w.named_tensors();
    let encode = |dtype: Dtype, v: f32| -> Vec<u8> {
        match dtype {
            Dtype::F64 => (v as f64).to_le_bytes().to_vec(),
            Dtype::F16 => half::f16::from_f32(v).to_le_bytes().to_vec(),
            Dtype::BF16 => half::bf16::from_f32(v).to_le_bytes().to_vec(),
            _ => v.to_le_bytes().to_vec(),
        }
    };
    let file = |dtype: Dtype, extra: bool, metadata: bool| -> Vec<u8> {
        let data: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
            .iter()
            .map(|(n, s, d)| {
                let bytes = d.iter().flat_map(|&v| encode(dtype, v)).collect();
                (n.clone(), s.clone(), bytes)
            })
            .collect();
        let mut views: Vec<(String, TensorView<'_>)> = data
            .iter()
            .map(|(n, s, b)| (n.clone(), TensorView::new(dtype, s.clone(), b).unwrap()))
            .collect();
        let junk = [7u8; 8];
        if extra {
            views.push((
                "num_batches_tracked".into(),
                TensorView::new(Dtype::I64, vec![1], &junk).unwrap(),
            ));
        }
        let meta = metadata.then(|| {
            [("format".to_string(), "pt".to_string())]
                .into_iter()
                .collect()
        });
        safetensors::serialize(views, meta).unwrap()
    };
    for (dtype, name) in [
        (Dtype::F64, "f64"),
        (Dtype::F16, "f16"),
        (Dtype::BF16, "bf16"),
    ] {
        let path = dir.join(format!("valid-config0-{name}.safetensors"));
        std::fs::write(path, file(dtype, false, false)).unwrap();
    }
    std::fs::write(
        dir.join("valid-config0-extra-tensor-and-metadata.safetensors"),
        file(Dtype::F32, true, true),
    )
    .unwrap();
    std::fs::write(
        dir.join("invalid-config0-i32.safetensors"),
        file(Dtype::I32, false, false),
    )
    .unwrap();
    println!("seed files written to {}", dir.display());
}
