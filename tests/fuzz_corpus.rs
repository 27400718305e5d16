//! The loader fuzz corpus (`tests/fixtures/fuzz/<target>/`) replayed as ordinary tests: no
//! input panics a target, and the valid seed files load. The corpus is the seed files
//! (safetensors: `valid-*`, `invalid-*`, written by `cargo run --release --example
//! fuzz_loaders -- --write-seeds`; onnx_model: `seed-*`, copies of the small models of
//! `tests/fixtures/onnx_models/`) plus mutants that reached a new outcome in a fuzz run
//! (`outcome-*`). A short seeded fuzz run follows, so the mutator and the targets stay
//! exercised.

#[path = "common/fuzz.rs"]
mod fuzz;

#[test]
fn every_corpus_input_is_handled_without_a_panic() {
    fuzz::quiet_panics_in_targets();
    for target in fuzz::TARGETS {
        let corpus = fuzz::corpus(target.name);
        assert!(corpus.len() >= 10, "{}: corpus too small", target.name);
        let mut crashes = Vec::new();
        for (name, data) in &corpus {
            match fuzz::run_caught(target, data) {
                Ok(label) => {
                    // `valid-config{k}-...` must load for config k (label k + 1; label 0 is
                    // the inferred configuration's).
                    if let Some(k) = name
                        .strip_prefix("valid-config")
                        .and_then(|r| r[..1].parse::<usize>().ok())
                    {
                        let got = label.split(',').nth(k + 1);
                        assert_eq!(got, Some("ok"), "{}/{name}: {label}", target.name);
                    }
                }
                Err(msg) => crashes.push(format!("{name}: {msg}")),
            }
        }
        assert!(crashes.is_empty(), "{}: {crashes:#?}", target.name);
        eprintln!("{}: {} corpus inputs, no panic", target.name, corpus.len());
    }
}

#[test]
fn a_short_seeded_fuzz_run_finds_no_crash() {
    use rand::Rng;
    fuzz::quiet_panics_in_targets();
    for target in fuzz::TARGETS {
        let corpus: Vec<Vec<u8>> = fuzz::corpus(target.name)
            .into_iter()
            .map(|(_, d)| d)
            .collect();
        let mut rng = fuzz::rng(12);
        let mut labels = std::collections::HashSet::new();
        for exec in 0..10_000 {
            let mut input = corpus[rng.random_range(0..corpus.len())].clone();
            let other = &corpus[rng.random_range(0..corpus.len())];
            fuzz::mutate(&mut rng, target, &mut input, other);
            match fuzz::run_caught(target, &input) {
                Ok(label) => {
                    labels.insert(label);
                }
                Err(msg) => panic!("{}: execution {exec} panicked: {msg}", target.name),
            }
        }
        // The mutants reach many outcomes, not one error over and over.
        assert!(labels.len() >= 10, "{}: {labels:?}", target.name);
        eprintln!("{}: 10000 mutants, {} outcomes", target.name, labels.len());
    }
}
