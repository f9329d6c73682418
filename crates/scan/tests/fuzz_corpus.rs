//! The fuzz corpora of the scanner's targets (`fuzz/corpus/packet`, `fuzz/corpus/port_list`)
//! replayed through the same checks the fuzz targets run, so every input the fuzzer kept,
//! crashes it found included, is a regression test on stable Rust in `make test`.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::{Path, PathBuf};

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 10, "{}: corpus missing", dir.display());
    files
}

fn replay(target: &str, check: impl Fn(&[u8])) {
    for file in corpus(target) {
        let data = std::fs::read(&file).unwrap();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&data)));
        assert!(outcome.is_ok(), "{}: check failed", file.display());
    }
}

#[test]
fn packet_corpus() {
    replay("packet", portwarden_scan::fuzz_packet);
}

#[test]
fn port_list_corpus() {
    replay("port_list", |data| {
        if let Ok(text) = std::str::from_utf8(data) {
            portwarden_scan::ports::fuzz_check(text);
        }
    });
}
