//! The checks the fuzz targets (`fuzz/`) and the corpus replay tests run on arbitrary bytes.
//! Not part of the API. Each function panics when an invariant fails, which is how a fuzzer
//! reports it; on any input that keeps the invariants it returns normally.

use std::collections::BTreeMap;

use crate::diagnostic::Diagnostic;
use crate::load::{MAX_DIAGNOSTICS_PER_FILE, Problems, load_source_with_warnings};
use crate::ports::{self, PortRange};

/// What `portwarden validate FILE` runs on one file, then what `plan` does next (compile the
/// intent of every inventory node and of a node without labels). Invariants: every diagnostic
/// names the file, points inside it and renders; errors are errors and warnings warnings; a
/// file gives at most [`MAX_DIAGNOSTICS_PER_FILE`] located errors (plus the cross-document
/// "duplicate ..." ones) and as many located warnings, each with one count of the rest;
/// accepted entries hold sorted, disjoint port ranges.
pub fn policy_load(data: &[u8]) {
    const NAME: &str = "fuzz.yaml";
    let located = |diags: &[Diagnostic]| diags.iter().filter(|d| d.loc.is_some()).count();
    match load_source_with_warnings(NAME, data) {
        Ok(loaded) => {
            assert_warnings(&loaded.warnings, data);
            for policy in loaded.policies.policies() {
                for entry in &policy.entries {
                    assert!(!entry.ports.is_empty(), "entry without ports: {entry:?}");
                    assert_disjoint(&entry.ports);
                }
            }
            let _ = loaded.policies.compile(&BTreeMap::new());
            let _ = loaded.policies.compile_nodes(&loaded.nodes);
        }
        Err(Problems { errors, warnings }) => {
            assert!(!errors.is_empty(), "an error without diagnostics");
            assert!(errors.iter().all(Diagnostic::is_error), "{errors:?}");
            assert_warnings(&warnings, data);
            // Duplicate names and addresses are found across documents after the per-file
            // limit (their messages start with "duplicate").
            let duplicates = errors
                .iter()
                .filter(|d| d.message.starts_with("duplicate"))
                .count();
            assert!(
                located(&errors) <= MAX_DIAGNOSTICS_PER_FILE + duplicates,
                "{} located errors",
                located(&errors)
            );
            for d in &errors {
                assert_renders(d, data);
            }
        }
    }
}

/// Warnings are warnings, at most [`MAX_DIAGNOSTICS_PER_FILE`] of them located, each renders.
fn assert_warnings(warnings: &[Diagnostic], data: &[u8]) {
    assert!(!warnings.iter().any(Diagnostic::is_error), "{warnings:?}");
    let located = warnings.iter().filter(|d| d.loc.is_some()).count();
    assert!(
        located <= MAX_DIAGNOSTICS_PER_FILE,
        "{located} located warnings"
    );
    for w in warnings {
        assert_renders(w, data);
    }
}

/// `d` names the fuzzed file, points inside it (or just past its last line, at the end of the
/// input) with a snippet, and renders starting with the file name.
fn assert_renders(d: &Diagnostic, data: &[u8]) {
    const NAME: &str = "fuzz.yaml";
    let text = String::from_utf8_lossy(data);
    let lines = crate::diagnostic::yaml_lines(&text).count() + 1;
    assert_eq!(d.file, NAME);
    if let Some(loc) = d.loc {
        assert!(
            loc.line >= 1 && loc.line as usize <= lines,
            "line {} of {lines}: {d:?}",
            loc.line
        );
        assert!(loc.column >= 1, "column 0: {d:?}");
        if (loc.line as usize) < lines && !d.message.contains("UTF-8") {
            assert!(d.line_text.is_some(), "no snippet: {d:?}");
        }
    }
    let shown = d.to_string();
    assert!(shown.starts_with(NAME), "{shown}");
}

/// The policy port-list syntax (`"22,80,8000-8100"`) on `data` as text. Invariants: ranges
/// hold ports 1-65535 in order; merged ranges are sorted, disjoint and not adjacent, cover the
/// same ports, and print as a list that parses back to them.
pub fn port_list(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(ranges) = ports::parse_list(text) else {
        return;
    };
    assert!(!ranges.is_empty(), "{text:?} parsed to no ranges");
    for r in &ranges {
        assert!(
            r.start >= 1 && r.start <= r.end,
            "{text:?}: bad range {r:?}"
        );
        assert_eq!(ports::parse_range(&r.to_string()), Ok(*r));
    }
    let merged = ports::normalize(ranges.clone());
    assert_disjoint(&merged);
    for w in merged.windows(2) {
        assert!(
            u32::from(w[0].end) + 1 < u32::from(w[1].start),
            "{text:?}: adjacent ranges left unmerged: {merged:?}"
        );
    }
    // Same ports: the sorted originals tile each merged range without a gap, and none is left.
    let mut sorted = ranges;
    sorted.sort();
    let mut i = 0;
    for m in &merged {
        let mut next = u32::from(m.start);
        while let Some(r) = sorted.get(i).filter(|r| r.start <= m.end) {
            assert!(
                r.start >= m.start && r.end <= m.end,
                "{text:?}: {r:?} outside {m:?}"
            );
            assert!(u32::from(r.start) <= next, "{text:?}: a gap in {m:?}");
            next = next.max(u32::from(r.end) + 1);
            i += 1;
        }
        assert_eq!(
            next,
            u32::from(m.end) + 1,
            "{text:?}: {m:?} covers extra ports"
        );
    }
    assert_eq!(i, sorted.len(), "{text:?}: ranges lost by merging");
    let printed: Vec<String> = merged.iter().map(ToString::to_string).collect();
    let printed = printed.join(",");
    match ports::parse_list(&printed) {
        Ok(again) => assert_eq!(ports::normalize(again), merged, "{text:?} -> {printed:?}"),
        Err(e) => panic!("{text:?} -> {printed:?} does not parse: {e}"),
    }
}

fn assert_disjoint(ranges: &[PortRange]) {
    for w in ranges.windows(2) {
        assert!(
            w[0].end < w[1].start,
            "ranges overlap or are unsorted: {ranges:?}"
        );
    }
}
