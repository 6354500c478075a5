//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) and every
//! minimised crash input (`fuzz/regressions/<target>/`) through the same
//! checks the fuzz targets run, on stable Rust: a decoder change that
//! breaks a property a fuzzer once established fails here, in CI. See
//! FUZZING.md.
//!
//! `ROOMLET_WRITE_SEEDS=1 cargo test -p roomlet-tests --test fuzz_corpus`
//! (re)writes the seed inputs into the corpus.

#[path = "../fuzz/src/checks.rs"]
mod checks;
#[path = "../fuzz/src/seeds.rs"]
mod seeds;

use checks::Target;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `dir`, sorted; none when it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("a readable directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs every seed, corpus file and regression input of `target` through
/// its check; returns one line for each input whose check panicked.
fn replay(target: Target) -> Vec<String> {
    let corpus = files(&fuzz_dir().join("corpus").join(target.name()));
    assert!(
        !corpus.is_empty(),
        "no corpus for {} in fuzz/corpus/",
        target.name()
    );
    let regressions = files(&fuzz_dir().join("regressions").join(target.name()));
    let inputs = seeds::seeds(target)
        .into_iter()
        .map(|(name, bytes)| (format!("seed {name}"), bytes))
        .chain(corpus.iter().chain(&regressions).map(|path| {
            let bytes =
                std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            (path.display().to_string(), bytes)
        }));
    let mut failed = Vec::new();
    for (name, bytes) in inputs {
        if let Err(panic) = panic::catch_unwind(AssertUnwindSafe(|| target.check(&bytes))) {
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("a panic");
            failed.push(format!("{} {name}: {why}", target.name()));
        }
    }
    failed
}

#[test]
fn every_corpus_and_regression_input_passes_its_check() {
    let failed: Vec<String> = Target::ALL.into_iter().flat_map(replay).collect();
    assert!(
        failed.is_empty(),
        "{} inputs fail their check:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

/// The checks' reading of the input contract refuses each thing the
/// contract names, and nothing within it: a fuzzer with a blind oracle
/// finds nothing.
#[test]
fn the_contract_oracle_sees_each_breach() {
    let nested = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
    assert_eq!(
        checks::json_breach(&nested(checks::MAX_PAYLOAD_DEPTH)),
        None
    );
    assert_eq!(
        checks::json_breach(r#"{"a":[1e308,-1e-400,"\ud83d\ude00"],"b":{"a":1}}"#),
        None
    );
    for refused in [
        nested(checks::MAX_PAYLOAD_DEPTH + 1),
        "[1e400]".into(),
        r#""\ud800""#.into(),
        r#"{"a":1,"\u0061":2}"#.into(),
    ] {
        assert!(checks::json_breach(&refused).is_some(), "{refused}");
    }
    let frame = |data: &str| {
        let data: serde_json::Value = serde_json::from_str(data).expect("JSON");
        rmp_serde::to_vec_named(&serde_json::json!({"type": "message", "data": data}))
            .expect("MessagePack")
    };
    assert_eq!(
        checks::msgpack_breach(&frame(&nested(checks::MAX_PAYLOAD_DEPTH))),
        None
    );
    let mut trailing = frame("1");
    trailing.push(0xc0);
    for refused in [
        frame(&nested(checks::MAX_PAYLOAD_DEPTH + 1)),
        trailing,
        vec![0x91, 0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0],
        vec![0x91, 0xd4, 1, 2],
        vec![0x81, 0x01, 0xc0],
        vec![0x82, 0xa1, b'a', 1, 0xa1, b'a', 2],
    ] {
        assert!(checks::msgpack_breach(&refused).is_some(), "{refused:x?}");
    }
}

/// Every seed is in the committed corpus as `seed-<name>`, byte for byte,
/// so the fuzzers and the replay start from them. With
/// `ROOMLET_WRITE_SEEDS=1` the test (re)writes them first (FUZZING.md).
#[test]
fn the_seeds_are_in_the_corpus() {
    let write = std::env::var_os("ROOMLET_WRITE_SEEDS").is_some();
    for target in Target::ALL {
        let dir = fuzz_dir().join("corpus").join(target.name());
        for (name, bytes) in seeds::seeds(target) {
            let path = dir.join(format!("seed-{name}"));
            if write {
                std::fs::create_dir_all(&dir).expect("creating the corpus directory");
                std::fs::write(&path, &bytes).expect("writing a seed");
            }
            let committed = std::fs::read(&path).unwrap_or_else(|e| {
                panic!("{}: {e} (ROOMLET_WRITE_SEEDS=1 writes it)", path.display())
            });
            assert_eq!(committed, bytes, "{} is not the seed", path.display());
        }
    }
}
