//! Replays every committed fuzz input (`fuzz/corpus/<target>/*` and `fuzz/artifacts/<target>/*`)
//! through the same target bodies the fuzzers run, so CI checks them on every `cargo test`,
//! on stable Rust, without a fuzzing build.
//!
//! A crash input found in another crate and not fixed yet is listed in [`KNOWN_FAILURES`]: it is
//! not replayed by the ordinary tests (so CI stays green) but by the ignored test
//! `known_failures_still_fail`; once the bug is fixed that test says so, and the entry goes.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

/// Crash inputs of bugs not fixed yet: (target, file name under `fuzz/artifacts/<target>/`,
/// the crate at fault and what happens).
const KNOWN_FAILURES: &[(&str, &str, &str)] = &[];

/// The fuzz project's directory.
fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// Every committed input of `target`: its corpus and its crash inputs, sorted by path.
fn inputs(target: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["corpus", "artifacts"] {
        let dir = fuzz_dir().join(dir).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("a readable directory entry").path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn is_known_failure(target: &str, path: &Path) -> bool {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    KNOWN_FAILURES
        .iter()
        .any(|(t, file, _)| *t == target && *file == name)
}

/// Runs `body` on every input of `target` but the known failures; fails naming each input
/// that panicked.
fn replay(target: &str, body: fn(&[u8])) {
    let files = inputs(target);
    assert!(
        !files.is_empty(),
        "no committed inputs for fuzz target `{target}` under {}",
        fuzz_dir().display()
    );
    let mut panicked = Vec::new();
    let mut replayed = 0;
    for path in &files {
        if is_known_failure(target, path) {
            continue;
        }
        let data = match std::fs::read(path) {
            Ok(data) => data,
            // A fuzzer running meanwhile may have replaced it with a smaller input.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("cannot read {}: {e}", path.display()),
        };
        if catch_unwind(AssertUnwindSafe(|| body(&data))).is_err() {
            panicked.push(path.display().to_string());
        }
        replayed += 1;
    }
    assert!(
        panicked.is_empty(),
        "fuzz target `{target}` panics on {} of {replayed} inputs (replay one with `cargo fuzz run {target} <file>`):\n{}",
        panicked.len(),
        panicked.join("\n")
    );
}

#[test]
fn flowfile() {
    replay("flowfile", stepflow_fuzz::flowfile::run);
}

#[test]
fn state() {
    replay("state", stepflow_fuzz::state::run);
}

#[cfg(feature = "store")]
#[test]
fn store_rows() {
    replay("store_rows", stepflow_fuzz::store_rows::run);
    stepflow_fuzz::store_rows::remove_files();
}

#[cfg(feature = "plugin")]
#[test]
fn classify() {
    replay("classify", stepflow_fuzz::classify::run);
}

/// The body of fuzz target `target`, if this build has it.
fn body(target: &str) -> Option<fn(&[u8])> {
    match target {
        "flowfile" => Some(stepflow_fuzz::flowfile::run),
        "state" => Some(stepflow_fuzz::state::run),
        #[cfg(feature = "store")]
        "store_rows" => Some(stepflow_fuzz::store_rows::run),
        #[cfg(feature = "plugin")]
        "classify" => Some(stepflow_fuzz::classify::run),
        _ => None,
    }
}

/// Each listed known failure still fails; when one does not, its bug is fixed: take it off
/// [`KNOWN_FAILURES`] so the ordinary replay checks it from then on.
#[test]
#[ignore = "replays the known failures of KNOWN_FAILURES, which panic (or abort) until fixed"]
fn known_failures_still_fail() {
    let mut fixed = Vec::new();
    for (target, file, what) in KNOWN_FAILURES {
        let Some(body) = body(target) else {
            continue;
        };
        let path = fuzz_dir().join("artifacts").join(target).join(file);
        let data = std::fs::read(&path).expect("a committed crash input");
        if catch_unwind(AssertUnwindSafe(|| body(&data))).is_ok() {
            fixed.push(format!("{target}/{file} ({what})"));
        }
    }
    assert!(
        fixed.is_empty(),
        "fixed, remove from KNOWN_FAILURES: {fixed:?}"
    );
}

/// The seeds of the `state` corpus fit their flows; `STEPFLOW_FUZZ_WRITE_SEEDS=<dir>` writes
/// them there (how `fuzz/corpus/state` was started).
#[test]
fn state_seeds() {
    let seeds = stepflow_fuzz::state::seeds();
    assert!(seeds.len() >= 30);
    for seed in &seeds {
        stepflow_fuzz::state::run(seed);
    }
    if let Some(dir) = std::env::var_os("STEPFLOW_FUZZ_WRITE_SEEDS") {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).expect("the seed directory");
        for (i, seed) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:03}")), seed).expect("a written seed");
        }
    }
}
