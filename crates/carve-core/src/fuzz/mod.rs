//! The bounded fuzzing tier: property tests (proptest; cargo-fuzz needs a
//! nightly toolchain) over every parser that reads input carve does not
//! control, each also replaying the corpus kept in the repository under
//! `fuzz/corpus/<target>/` (inputs that once mattered: real tool output,
//! edge cases, past failures). The seed is printed, and
//! `CARVE_FUZZ_SEED=<n>` replays a run exactly; `CARVE_FUZZ_CASES` scales
//! the cases per property (CI uses the default).

use std::path::PathBuf;
use std::sync::OnceLock;

use proptest::test_runner::{Config, RngSeed};

/// The seed of this test process's properties: `CARVE_FUZZ_SEED`, or one
/// drawn from the clock, printed once either way.
pub fn seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| {
        let seed = std::env::var("CARVE_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        eprintln!("fuzz seed: {seed} (replay with CARVE_FUZZ_SEED={seed})");
        seed
    })
}

/// `cases` cases (times `CARVE_FUZZ_CASES` / 256 when set), seeded by
/// [`seed`], without writing regression files into the source tree (the
/// corpus is curated by hand).
pub fn config(cases: u32) -> Config {
    let scale = std::env::var("CARVE_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .map_or(1.0, |n| n as f64 / 256.0);
    Config {
        cases: ((cases as f64 * scale) as u32).max(1),
        rng_seed: RngSeed::Fixed(seed()),
        failure_persistence: None,
        ..Config::default()
    }
}

/// The corpus of `target`: every file under `fuzz/corpus/<target>/`, by
/// name. A target with no corpus is an error, not an empty loop.
pub fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("fuzz corpus {}: {e}", dir.display()))
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "fuzz corpus {} is empty", dir.display());
    files
}

#[cfg(test)]
mod targets;
