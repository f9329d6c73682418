//! The `iptables-save` parser on bad input: the fuzz corpus (`fuzz/corpus/iptables_save`)
//! replayed through the same check the fuzz target runs, and hostile dumps (huge lines, a
//! million rules, many chains) that must parse or fail with a short, located error quickly.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use portwarden_netfilter::Ruleset;
use portwarden_netfilter::fuzzing;
use portwarden_netfilter::save::to_save_text;

#[test]
fn iptables_save_corpus() {
    portwarden_lab::replay_corpus("iptables_save", 5, fuzzing::iptables_save);
}

#[test]
fn a_huge_line_gives_a_short_error() {
    let text = format!(
        "*filter\n:INPUT ACCEPT [0:0]\n-A NOPE {}\nCOMMIT\n",
        "x".repeat(10 << 20)
    );
    let e = Ruleset::parse(&text).unwrap_err().to_string();
    assert!(
        e.contains("line 3") && e.contains("not declared"),
        "{}",
        &e[..200]
    );
    assert!(e.len() < 500, "error of {} bytes", e.len());
    // A huge valid rule is kept verbatim.
    let text = format!(
        "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT {}\nCOMMIT\n",
        "y".repeat(10 << 20)
    );
    let rs = Ruleset::parse(&text).unwrap();
    assert_eq!(rs.tables[0].chains[0].rules[0].spec.len(), 10 << 20);
}

#[test]
fn a_million_rules_and_many_chains_parse() {
    // 100,000 chains, then a million rules all for the first one: with a chain looked up by
    // scanning the declarations this took 10^11 comparisons.
    let mut text = String::from("*filter\n:INPUT ACCEPT [0:0]\n");
    for i in 0..100_000 {
        text.push_str(&format!(":C{i} - [0:0]\n"));
    }
    for i in 0..1_000_000 {
        text.push_str(&format!(
            "[{i}:{i}] -A INPUT -p tcp --dport {} -j C{}\n",
            i % 65535 + 1,
            i % 100_000
        ));
    }
    text.push_str("COMMIT\n");
    let rs = Ruleset::parse(&text).unwrap();
    assert_eq!(rs.rule_count(), 1_000_000);
    assert_eq!(rs.tables[0].chains.len(), 100_001);
    assert_eq!(Ruleset::parse(&to_save_text(&rs)).unwrap(), rs);
}

#[test]
fn a_chain_declared_twice_is_refused() {
    // Found by the fuzzer: with two declarations, rules went to the last one while
    // `Table::chain` (and so the diff) saw the first; iptables-save never prints a chain twice.
    let e = Ruleset::parse("*filter\n:X - [0:0]\n-A X -j DROP\n:X - [0:0]\nCOMMIT\n").unwrap_err();
    assert!(
        e.to_string().contains("line 4") && e.to_string().contains("declared twice"),
        "{e}"
    );
    let crash = include_bytes!("data/iptables-save-chain-declared-twice");
    fuzzing::iptables_save(crash);
    assert!(Ruleset::parse(std::str::from_utf8(crash).unwrap()).is_err());
    // The same name in two tables is fine, and a table's chains are not visible from the next.
    let rs = Ruleset::parse(
        "*filter\n:X - [0:0]\n-A X -j DROP\nCOMMIT\n*nat\n:X - [0:0]\n-A X -j RETURN\nCOMMIT\n",
    )
    .unwrap();
    assert_eq!(rs.tables[1].chains[0].rules[0].spec, "-j RETURN");
    let e =
        Ruleset::parse("*filter\n:X - [0:0]\nCOMMIT\n*nat\n-A X -j DROP\nCOMMIT\n").unwrap_err();
    assert!(e.to_string().contains("line 5"), "{e}");
}
