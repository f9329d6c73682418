//! Replaying a fuzz corpus (`fuzz/corpus/TARGET`) through the check its fuzz target runs, so
//! every input the fuzzer kept, crashes it found included, is a regression test on stable Rust.

use std::path::{Path, PathBuf};

/// Runs `check` on every file of `fuzz/corpus/<target>` (in name order) and panics, naming
/// the file, when a check panics.
///
/// # Panics
/// When the corpus directory cannot be read, holds fewer than `min_files` files (the corpus
/// is missing), or a check fails.
pub fn replay_corpus(target: &str, min_files: usize, check: impl Fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            e.unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .path()
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= min_files,
        "{}: corpus missing",
        dir.display()
    );
    for file in files {
        let data = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&data)));
        assert!(outcome.is_ok(), "{}: check failed", file.display());
    }
}
