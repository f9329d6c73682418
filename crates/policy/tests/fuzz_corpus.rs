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

/// 101 nodes without addresses fill the file's share of diagnostics with warnings; the address
/// errors found after it (a node listing one address twice, two nodes sharing one) broke the
/// fuzz target's bound on located diagnostics, which allowed only "duplicate ..." messages
/// beyond the share.
#[test]
fn address_errors_after_a_file_full_of_warnings_regression() {
    let twice = include_bytes!("data/capped-warnings-then-address-twice.yaml");
    portwarden_policy::fuzzing::policy_load(twice);
    let d = portwarden_policy::load_source("twice.yaml", twice).unwrap_err();
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(
        d[0].headline(),
        "twice.yaml:105:42: error: duplicate address 1.1.1.1: listed twice for node \"twice\" (first as item 0)"
    );
    let shared = include_bytes!("data/capped-warnings-then-shared-address.yaml");
    portwarden_policy::fuzzing::policy_load(shared);
    let d = portwarden_policy::load_source("shared.yaml", shared).unwrap_err();
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(
        d[0].headline(),
        "shared.yaml:106:27: error: duplicate address 1.1.1.2: also an address of node \"a\" (shared.yaml:105:27)"
    );
}
