//! The loader fuzz targets and a seeded, structure-aware mutator, shared by the fuzzer
//! (`examples/fuzz_loaders.rs`, the long runs) and the corpus replay (`tests/fuzz_corpus.rs`,
//! CI). Included by path, not through `tests/common/mod.rs`, so other test binaries do not
//! build it.
//!
//! A target is one function `fn(&[u8]) -> String`: it feeds the bytes to a loader and returns
//! a label of the outcome (`ok`, or the error's variant and the words of its message), and it
//! panics only where the crate does (the harness catches that and reports a crash). Adding a
//! loader is one such function, one line in [`TARGETS`] and a seed corpus directory
//! `tests/fixtures/fuzz/<name>/`.
#![allow(dead_code)]

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rnn_wgpu::{Direction, Error, RnnConfig, Weights};

/// A fuzz target: its name (also its corpus directory) and the function that runs one input.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]) -> String,
    /// Header-aware mutations for this format (byte-level ones apply to every target).
    pub mutate: fn(&mut ChaCha8Rng, &mut Vec<u8>),
}

/// Every target the fuzzer and the corpus replay know.
pub const TARGETS: &[Target] = &[
    Target {
        name: "safetensors",
        run: safetensors,
        mutate: mutate_safetensors_header,
    },
    Target {
        name: "onnx_model",
        run: onnx_model,
        mutate: mutate_protobuf,
    },
];

/// The configurations a safetensors input is also read for (besides inferring one): a plain
/// LSTM, a two-layer bidirectional LSTM with projection and peepholes, a GRU without bias, a
/// plain RNN. The seed corpus holds a valid file of each.
pub fn safetensors_configs() -> Vec<RnnConfig> {
    vec![
        RnnConfig::lstm(3, 5).build().unwrap(),
        RnnConfig::lstm(2, 4)
            .num_layers(2)
            .direction(Direction::Bidirectional)
            .proj_size(3)
            .peepholes(true)
            .build()
            .unwrap(),
        RnnConfig::gru(3, 2).bias(false).build().unwrap(),
        RnnConfig::rnn(2, 3, rnn_wgpu::Nonlinearity::Tanh)
            .build()
            .unwrap(),
    ]
}

/// The variant name of an error (`ShapeMismatch`, `Safetensors(InvalidOffset)`, ...) and the
/// first words of its message without digits, names or quotes: which check refused the input,
/// not with which numbers.
pub fn label(e: &Error) -> String {
    let cut = |s: &str| {
        s.find(['(', ' ', '{'])
            .map_or(s.to_string(), |i| s[..i].to_string())
    };
    let variant = match e {
        Error::Safetensors(inner) => format!("Safetensors({})", cut(&format!("{inner:?}"))),
        _ => cut(&format!("{e:?}")),
    };
    let words: Vec<String> = e
        .to_string()
        .split_whitespace()
        .filter(|w| !w.contains(|c: char| c.is_ascii_digit() || c == '`' || c == '"'))
        .take(6)
        .map(str::to_string)
        .collect();
    format!("{variant}[{}]", words.join(" "))
}

/// The f32 bits of every tensor of `w`, in name order.
fn bits(w: &Weights) -> Vec<u32> {
    w.named_tensors()
        .iter()
        .flat_map(|(_, _, d)| d.iter().map(|v| v.to_bits()))
        .collect()
}

/// `Weights::from_safetensors` (configuration inferred from the file), then
/// `Weights::from_safetensors_config` for every config of [`safetensors_configs`]. A file that
/// loads must hold valid weights, and must survive `to_safetensors` → load bit for bit (and,
/// inferred, with the same configuration).
pub fn safetensors(data: &[u8]) -> String {
    let mut labels = Vec::new();
    match Weights::from_safetensors(data) {
        Ok(w) => {
            w.validate().expect("loaded weights validate");
            let again = Weights::from_safetensors(&w.to_safetensors().unwrap())
                .expect("a saved file loads");
            assert_eq!(again.config(), w.config(), "save/load changed the config");
            assert!(bits(&w) == bits(&again), "save/load changed the weights");
            labels.push("ok".to_string());
        }
        Err(e) => labels.push(label(&e)),
    }
    for cfg in safetensors_configs() {
        match Weights::from_safetensors_config(&cfg, data) {
            Ok(w) => {
                w.validate().expect("loaded weights validate");
                let again = Weights::from_safetensors_config(&cfg, &w.to_safetensors().unwrap())
                    .expect("a saved file loads");
                assert!(bits(&w) == bits(&again), "save/load changed the weights");
                labels.push("ok".to_string());
            }
            Err(e) => labels.push(label(&e)),
        }
    }
    labels.join(",")
}

/// `onnx::load_model_from_bytes`. A model that loads must hold valid weights of its own
/// configuration, and must survive `save_model_with` → load bit for bit.
pub fn onnx_model(data: &[u8]) -> String {
    use rnn_wgpu::onnx::{SaveOptions, load_model_from_bytes, save_model_with};
    match load_model_from_bytes(data) {
        Ok(m) => {
            let w = m.weights();
            w.validate().expect("loaded weights validate");
            assert_eq!(
                w.config(),
                m.config(),
                "the weights carry the model's config"
            );
            let bytes = save_model_with(w, &SaveOptions::default()).expect("a model saves");
            let again = load_model_from_bytes(&bytes).expect("a saved model loads");
            assert!(
                bits(w) == bits(again.weights()),
                "save/load changed the weights"
            );
            "ok".to_string()
        }
        Err(e) => label(&e),
    }
}

/// Protobuf-aware edits for ONNX: overwrite or insert a varint (tags, lengths and integer
/// fields are all varints) with an interesting value, or cut the message at a random point.
pub fn mutate_protobuf(rng: &mut ChaCha8Rng, data: &mut Vec<u8>) {
    let varint = |mut v: u64| {
        let mut out = Vec::new();
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    };
    let at = rng.random_range(0..=data.len());
    let value = match rng.random_range(0..3) {
        0 => INTERESTING[rng.random_range(0..INTERESTING.len())],
        1 => rng.random_range(0..256),
        // A field tag: field 1-20 with a wire type 0-5.
        _ => (rng.random_range(1..=20u64) << 3) | rng.random_range(0..6u64),
    };
    let bytes = varint(value);
    // Replace the varint that starts here (up to its last byte), or insert.
    let mut end = at;
    if rng.random_bool(0.7) {
        while end < data.len() && data[end] & 0x80 != 0 {
            end += 1;
        }
        end = (end + 1).min(data.len());
    }
    data.splice(at..end, bytes);
}

/// Interesting numbers for sizes and offsets: edges of every integer width.
const INTERESTING: &[u64] = &[
    0,
    1,
    2,
    3,
    4,
    7,
    8,
    16,
    255,
    256,
    4095,
    65535,
    65536,
    (1 << 31) - 1,
    1 << 31,
    u32::MAX as u64,
    1 << 32,
    1 << 53,
    i64::MAX as u64,
    u64::MAX,
];

/// Apply 1-4 random mutations to `data`: byte-level ones for every target, plus the target's
/// header-aware ones.
pub fn mutate(rng: &mut ChaCha8Rng, target: &Target, data: &mut Vec<u8>, other: &[u8]) {
    for _ in 0..rng.random_range(1..=4) {
        match rng.random_range(0..10) {
            0..=3 => (target.mutate)(rng, data),
            4 => flip_bit(rng, data),
            5 => {
                if !data.is_empty() {
                    let i = rng.random_range(0..data.len());
                    data[i] = rng.random();
                }
            }
            6 => {
                // Truncate.
                let n = rng.random_range(0..=data.len());
                data.truncate(n);
            }
            7 => {
                // Insert or append random bytes.
                let at = rng.random_range(0..=data.len());
                let n = rng.random_range(1..=16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                data.splice(at..at, bytes);
            }
            8 => {
                // Delete or duplicate a range.
                if data.len() > 1 {
                    let a = rng.random_range(0..data.len());
                    let b = rng.random_range(a..=data.len().min(a + 64));
                    if rng.random_bool(0.5) {
                        data.drain(a..b);
                    } else {
                        let chunk = data[a..b].to_vec();
                        data.splice(b..b, chunk);
                    }
                }
            }
            _ => {
                // Splice with another corpus entry.
                if !other.is_empty() && !data.is_empty() {
                    let a = rng.random_range(0..data.len());
                    let b = rng.random_range(0..other.len());
                    data.truncate(a);
                    data.extend_from_slice(&other[b..]);
                }
            }
        }
    }
}

fn flip_bit(rng: &mut ChaCha8Rng, data: &mut [u8]) {
    if !data.is_empty() {
        let i = rng.random_range(0..data.len());
        data[i] ^= 1 << rng.random_range(0..8);
    }
}

/// The safetensors layout: an 8-byte little-endian header length `N`, `N` bytes of JSON
/// (`{"name": {"dtype": "F32", "shape": [..], "data_offsets": [a, b]}, "__metadata__": ..}`),
/// then the data. Mutates the length, or a number, a dtype, a key or the structure of the JSON
/// (re-encoded with the right length unless the length itself is the mutation).
pub fn mutate_safetensors_header(rng: &mut ChaCha8Rng, data: &mut Vec<u8>) {
    if data.len() < 8 {
        data.resize(8, 0);
    }
    let n = u64::from_le_bytes(data[..8].try_into().unwrap());
    if rng.random_bool(0.15) {
        // The length field itself.
        let v = match rng.random_range(0..3) {
            0 => INTERESTING[rng.random_range(0..INTERESTING.len())],
            1 => n.wrapping_add(rng.random_range(1..=8)),
            _ => n.wrapping_sub(rng.random_range(1..=8)),
        };
        data[..8].copy_from_slice(&v.to_le_bytes());
        return;
    }
    let end = n.saturating_add(8).min(data.len() as u64) as usize;
    let Ok(mut header) = serde_json::from_slice::<serde_json::Value>(&data[8..end]) else {
        // Not JSON (any more): mutate the header bytes as text.
        flip_bit(rng, &mut data[8..end.max(8)]);
        return;
    };
    mutate_json(rng, &mut header, 0);
    let text = serde_json::to_vec(&header).unwrap();
    let rest = data[end..].to_vec();
    data.clear();
    data.extend_from_slice(&(text.len() as u64).to_le_bytes());
    data.extend_from_slice(&text);
    data.extend_from_slice(&rest);
}

const DTYPES: &[&str] = &[
    "F32", "F16", "BF16", "F64", "I32", "I64", "U8", "I8", "BOOL", "F8_E4M3", "F8_E5M2", "U64",
    "C64", "f32", "", "F3",
];

const NAMES: &[&str] = &[
    "weight_ih_l0",
    "weight_hh_l0",
    "bias_ih_l0",
    "bias_hh_l0",
    "weight_hr_l0",
    "peephole_l0",
    "weight_ih_l0_reverse",
    "weight_ih_l1",
    "weight_hh_l1_reverse",
    "__metadata__",
    "",
];

fn interesting_json(rng: &mut ChaCha8Rng) -> serde_json::Value {
    use serde_json::Value;
    match rng.random_range(0..8) {
        0 => Value::from(INTERESTING[rng.random_range(0..INTERESTING.len())]),
        1 => Value::from(-(rng.random_range(1..=4) as i64)),
        2 => Value::from(1.5),
        3 => Value::from(DTYPES[rng.random_range(0..DTYPES.len())]),
        4 => Value::Null,
        5 => Value::Array(vec![]),
        6 => Value::Object(Default::default()),
        _ => Value::from(rng.random_range(0..64u64)),
    }
}

/// Change one node of `v`: a number nudged or replaced, a string swapped for a dtype or a
/// tensor name, an entry removed, duplicated under another name, or replaced by a stray value.
fn mutate_json(rng: &mut ChaCha8Rng, v: &mut serde_json::Value, depth: usize) {
    use serde_json::Value;
    match v {
        Value::Object(map) if !map.is_empty() && depth < 4 && rng.random_bool(0.8) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            let key = keys[rng.random_range(0..keys.len())].clone();
            match rng.random_range(0..6) {
                0 => {
                    map.remove(&key);
                }
                1 => {
                    // Rename (a tensor under another tensor's name).
                    let val = map.remove(&key).unwrap();
                    map.insert(NAMES[rng.random_range(0..NAMES.len())].to_string(), val);
                }
                2 => {
                    let val = map[&key].clone();
                    map.insert(format!("{key}_copy"), val);
                }
                3 => {
                    map.insert(key, interesting_json(rng));
                }
                _ => mutate_json(rng, map.get_mut(&key).unwrap(), depth + 1),
            }
        }
        Value::Array(items) if !items.is_empty() && rng.random_bool(0.8) => {
            let i = rng.random_range(0..items.len());
            match rng.random_range(0..5) {
                0 => {
                    items.remove(i);
                }
                1 => {
                    let x = items[i].clone();
                    items.insert(i, x);
                }
                2 => items[i] = interesting_json(rng),
                _ => mutate_json(rng, &mut items[i], depth + 1),
            }
        }
        Value::Number(n) => {
            let x = n.as_u64().unwrap_or(0);
            *v = match rng.random_range(0..4) {
                0 => Value::from(x.wrapping_add(rng.random_range(1..=4))),
                1 => Value::from(x.saturating_sub(rng.random_range(1..=4))),
                2 => Value::from(x.wrapping_mul(2)),
                _ => interesting_json(rng),
            };
        }
        Value::String(_) => {
            *v = match rng.random_bool(0.5) {
                true => Value::from(DTYPES[rng.random_range(0..DTYPES.len())]),
                false => Value::from(NAMES[rng.random_range(0..NAMES.len())]),
            };
        }
        _ => *v = interesting_json(rng),
    }
}

/// A seeded generator for the fuzzer.
pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Every file of the corpus directory of `target` (sorted by name).
pub fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fuzz")
        .join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    files.sort();
    files
}

thread_local! {
    /// Set while a target runs: [`quiet_panics_in_targets`]'s hook stays silent then.
    static IN_TARGET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Install a panic hook that does not print panics inside a target (the harness reports them
/// itself) and prints every other panic as usual.
pub fn quiet_panics_in_targets() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !IN_TARGET.with(|c| c.get()) {
            default(info);
        }
    }));
}

/// Run `target` on `data`, catching a panic: `Ok(label)` or `Err(panic message)`.
pub fn run_caught(target: &Target, data: &[u8]) -> Result<String, String> {
    IN_TARGET.with(|c| c.set(true));
    let r = std::panic::catch_unwind(|| (target.run)(data));
    IN_TARGET.with(|c| c.set(false));
    r.map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic with a non-string payload".into())
    })
}
