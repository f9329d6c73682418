//! The fuzz corpora of the policy targets (`fuzz/corpus/policy_load`, `fuzz/corpus/port_list`)
//! replayed through the same checks the fuzz targets run, so every input the fuzzer kept,
//! crashes it found included, is a regression test on stable Rust in `make test`.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use portwarden_lab::replay_corpus;

#[test]
fn policy_load_corpus() {
    replay_corpus("policy_load", 10, portwarden_policy::fuzzing::policy_load);
}

#[test]
fn port_list_corpus() {
    replay_corpus("port_list", 10, portwarden_policy::fuzzing::port_list);
}

/// Found by the fuzzer: YAML ends a line at a lone `\r`, the snippet lookup did not, so a
/// syntax error's line pointed past the lines the snippet code knew (no snippet, or the wrong
/// line).
#[test]
fn lone_carriage_returns_regression() {
    let data = include_bytes!("data/lone-carriage-returns.yaml");
    portwarden_policy::fuzzing::policy_load(data);
    let d = portwarden_policy::load_source("cr.yaml", data).unwrap_err();
    let loc = d[0].loc.unwrap();
    assert_eq!((loc.line, loc.column), (27, 1), "{}", d[0]);
    assert_eq!(d[0].line_text.as_deref(), Some("PortPolicy"), "{}", d[0]);
}
