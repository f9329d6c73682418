//! The checks the `iptables_save` fuzz target (`fuzz/`) and the corpus replay test
//! (`tests/save_fuzz.rs`) run on arbitrary bytes. Not part of the API: compiled only with the
//! `fuzzing` feature. Each function panics when an invariant fails, which is how a fuzzer
//! reports it; on any input that keeps the invariants it returns normally.

use crate::chains::{is_our_jump, is_owned};
use crate::save::{MAX_QUOTED_CHARS, Ruleset, to_save_text};
use crate::{Error, Failsafe, Family, Plan};

/// The `iptables_save` target on one input. Invariants: a parse error is located (1-based
/// line) and quotes at most `save::MAX_QUOTED_CHARS` characters of the line; a parsed dump printed
/// again ([`to_save_text`]) parses to the same ruleset; planning against it (for a fixture
/// policy, and a reset) completes and writes nothing but portwarden's own chains and jump
/// (look-alikes are never written).
pub fn iptables_save(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let rs = match Ruleset::parse(text) {
        Ok(rs) => rs,
        Err(e) => {
            let Error::Parse {
                line, text: quoted, ..
            } = &e
            else {
                panic!("parse error of another kind: {e}");
            };
            assert!(*line >= 1, "line numbers are 1-based: {e}");
            assert!(
                quoted.chars().count() <= MAX_QUOTED_CHARS + 3,
                "error quotes {} chars",
                quoted.chars().count()
            );
            return;
        }
    };
    let printed = to_save_text(&rs);
    match Ruleset::parse(&printed) {
        Ok(again) => assert_eq!(again, rs, "printed as:\n{printed}"),
        Err(e) => panic!("printed ruleset does not parse: {e}\n{printed}"),
    }
    let intent = fuzz_intent();
    let current = [(Family::Ipv4, &rs), (Family::Ipv6, &rs)];
    let plan = Plan::compute(
        intent,
        &Failsafe::default(),
        &[std::net::IpAddr::from([10, 0, 0, 1])],
        &current,
    );
    assert_eq!(plan.changes, plan.add.len() + plan.delete.len());
    let reset = Plan::reset(&current);
    for fp in plan.families.iter().chain(&reset.families) {
        writes_only_ours(&fp.restore);
    }
}

/// Panics unless every line of a restore input touches only portwarden's chains and jumps.
fn writes_only_ours(restore: &str) {
    for line in restore.lines() {
        let ok = match line.split_once(' ') {
            _ if line == "*filter" || line == "COMMIT" => true,
            Some((decl, "- [0:0]")) => decl.strip_prefix(':').is_some_and(is_owned),
            Some(("-X", chain)) => is_owned(chain),
            Some((op @ ("-A" | "-D" | "-I"), rest)) => {
                let (chain, spec) = rest.split_once(' ').unwrap_or((rest, ""));
                let spec = match op {
                    "-I" => spec.strip_prefix("1 ").unwrap_or(spec),
                    _ => spec,
                };
                match op {
                    "-A" => is_owned(chain),
                    _ => is_owned(chain) || is_our_jump(chain, spec),
                }
            }
            _ => false,
        };
        assert!(
            ok,
            "a plan writes what is not portwarden's: {line}\n{restore}"
        );
    }
}

/// The compiled intent of `tests/fixtures/mixed.yaml`, for [`iptables_save`].
fn fuzz_intent() -> &'static portwarden_policy::NodeIntent {
    static INTENT: std::sync::OnceLock<portwarden_policy::NodeIntent> = std::sync::OnceLock::new();
    INTENT.get_or_init(|| {
        let loaded = portwarden_policy::load::load_source(
            "mixed.yaml",
            include_bytes!("../tests/fixtures/mixed.yaml"),
        )
        .expect("fixture policy loads");
        loaded.policies.compile(&Default::default())
    })
}
