//! Removing portwarden's chains and jump through nftables' own `nft` tool, for the tables that
//! iptables-nft cannot print (see [`crate::save`]): when a native nftables rule sits in
//! iptables-nft's `ip filter` table, `iptables-nft-save` shows nothing of it, so this is the only
//! way `reset` still sees — and removes — what portwarden wrote there.
//!
//! Pure: [`removal`] reads the output of `nft -j list table ip filter` (or `ip6 filter`) and
//! returns the `nft -f -` script that removes portwarden's objects in one transaction (an `nft`
//! batch is atomic, like `iptables-restore`). Ownership is [`crate::chains`]'s, read from the
//! nftables objects: chains by name, the jump as a rule of `INPUT` to `PORTWARDEN-INPUT` that
//! carries a comment.
//!
//! # Caveats
//!
//! iptables-nft 1.8.9 stores `-m comment` as an xtables match, whose text `nft` 1.0 does not
//! show (`{"xt": {"type": "match", "name": "comment"}}`). A rule of `INPUT` to
//! `PORTWARDEN-INPUT` counts as portwarden's jump when its comment, stored the nftables way (a
//! rule `comment`), is portwarden's, or when it is the only commented rule of `INPUT` jumping
//! there; several whose comments cannot be shown cannot be told apart, so none of them is
//! deleted: they are reported ([`LookalikeKind::UnknownJump`]) and `PORTWARDEN-INPUT` stays,
//! emptied. Foreign rules jumping into portwarden's chains keep those chains, emptied, as in
//! [`crate::diff`].

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::Value;

use crate::chains::{self, Path};
use crate::diff::{Kept, Lookalike, LookalikeKind};
use crate::place::Family;

/// nftables' name of the family of iptables-nft's tables: `ip` or `ip6`.
pub fn nft_family(family: Family) -> &'static str {
    match family {
        Family::Ipv4 => "ip",
        Family::Ipv6 => "ip6",
    }
}

/// What removes portwarden's objects from one `filter` table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Removal {
    /// What is removed, one `nft` command per item.
    pub delete: Vec<String>,
    /// Chains of portwarden's that foreign rules jump to: emptied, not deleted.
    pub kept: Vec<Kept>,
    /// Jumps that may or may not be portwarden's (see the module docs): left alone.
    pub lookalikes: Vec<Lookalike>,
    /// The `nft -f -` input; empty when there is nothing of portwarden's.
    pub script: String,
}

/// A rule of the listing.
struct Rule<'a> {
    chain: &'a str,
    handle: u64,
    value: &'a Value,
}

/// Every `jump`/`goto` target anywhere in `v` (also inside verdict maps).
fn targets<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(map) => {
            for (k, inner) in map {
                if (k == "jump" || k == "goto")
                    && let Some(t) = inner.get("target").and_then(Value::as_str)
                {
                    out.push(t);
                } else {
                    targets(inner, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| targets(i, out)),
        _ => {}
    }
}

/// What a commented rule of `INPUT` to `PORTWARDEN-INPUT` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Comment {
    /// portwarden's comment, shown the nftables way.
    Ours,
    /// A comment match whose text nft cannot show.
    Unshown,
    /// Another comment, or none.
    Foreign,
}

fn comment(rule: &Value, path: Path) -> Comment {
    if let Some(c) = rule.get("comment").and_then(Value::as_str) {
        return if c == path.jump_comment() {
            Comment::Ours
        } else {
            Comment::Foreign
        };
    }
    let unshown = rule.get("expr").and_then(Value::as_array).is_some_and(|e| {
        e.iter().any(|x| {
            x.get("xt")
                .is_some_and(|xt| xt["type"] == "match" && xt["name"] == "comment")
        })
    });
    if unshown {
        Comment::Unshown
    } else {
        Comment::Foreign
    }
}

/// The removal of portwarden's chains and jump from `nft -j list table FAMILY filter` output
/// (`json`; empty text for a table that does not exist).
///
/// # Guarantees
/// The script names only chains [`chains::is_owned`] accepts and rules of `INPUT` (`FORWARD`)
/// that jump to [`chains::INPUT_CHAIN`] ([`chains::FORWARD_CHAIN`]) with portwarden's comment, or with the only comment nft cannot show (by
/// handle; see the module docs); chains a foreign rule jumps to are flushed but not deleted;
/// nothing else of the table is touched.
///
/// # Errors
/// A message when `json` is not nft's JSON listing.
pub fn removal(family: Family, json: &str) -> Result<Removal, String> {
    if json.trim().is_empty() {
        return Ok(Removal::default());
    }
    let doc: Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    let items = doc
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or("no \"nftables\" array")?;
    let (owned, rules) = listing(items)?;
    let mut out = Removal::default();
    let (non_empty, foreign_refs) = remove_jumps(family, &rules, &mut out);
    remove_chains(family, &owned, &non_empty, &foreign_refs, &mut out);
    Ok(out)
}

/// The chains of portwarden's (each once) and every rule of a listing's `items`.
///
/// # Errors
/// A message when a rule has no chain or handle.
fn listing(items: &[Value]) -> Result<(Vec<&str>, Vec<Rule<'_>>), String> {
    let mut owned: Vec<&str> = Vec::new();
    let mut rules: Vec<Rule<'_>> = Vec::new();
    for item in items {
        if let Some(c) = item.get("chain") {
            if let Some(name) = c.get("name").and_then(Value::as_str)
                && chains::is_owned(name)
                && !owned.contains(&name)
            {
                owned.push(name);
            }
        } else if let Some(r) = item.get("rule") {
            let chain = r
                .get("chain")
                .and_then(Value::as_str)
                .ok_or("rule without chain")?;
            let handle = r
                .get("handle")
                .and_then(Value::as_u64)
                .ok_or("rule without handle")?;
            rules.push(Rule {
                chain,
                handle,
                value: r,
            });
        }
    }
    Ok((owned, rules))
}

/// Adds to `out` the deletion of portwarden's jumps among `rules` (and the look-alikes among
/// them); returns the chains of portwarden's that hold rules, and the foreign rules (as
/// `CHAIN#POSITION`) that jump to each chain of portwarden's.
fn remove_jumps<'a>(
    family: Family,
    rules: &[Rule<'a>],
    out: &mut Removal,
) -> (Vec<&'a str>, HashMap<&'a str, Vec<String>>) {
    let fam = nft_family(family);
    // How many rules of INPUT to PORTWARDEN-INPUT (FORWARD to PORTWARDEN-FORWARD) carry a
    // comment: an unshown one is ours only when it is the only one.
    let to_our_root = |r: &Rule<'_>, path: Path| {
        let mut to = Vec::new();
        targets(r.value, &mut to);
        r.chain == path.hook() && to.contains(&path.root())
    };
    let commented = |path: Path| {
        rules
            .iter()
            .filter(|r| to_our_root(r, path) && comment(r.value, path) != Comment::Foreign)
            .count()
    };
    let commented = [commented(Path::Input), commented(Path::Forward)];
    let mut non_empty: Vec<&str> = Vec::new();
    let mut foreign_refs: HashMap<&str, Vec<String>> = HashMap::new();
    let mut position: HashMap<&str, usize> = HashMap::new();
    for r in rules {
        let n = position.entry(r.chain).or_default();
        *n += 1;
        if chains::is_owned(r.chain) {
            if !non_empty.contains(&r.chain) {
                non_empty.push(r.chain);
            }
            continue;
        }
        let mut to = Vec::new();
        targets(r.value, &mut to);
        for t in to.into_iter().filter(|t| chains::is_owned(t)) {
            let path = Path::of_hook(r.chain).filter(|p| p.root() == t);
            let kind = path.map_or(Comment::Foreign, |p| comment(r.value, p));
            let only = path.is_some_and(|p| commented[p as usize] == 1);
            if path.is_some() && (kind == Comment::Ours || kind == Comment::Unshown && only) {
                let cmd = format!("delete rule {fam} filter {} handle {}", r.chain, r.handle);
                let _ = writeln!(out.script, "{cmd}");
                out.delete.push(format!("nft {cmd}"));
            } else {
                if path.is_some() && kind == Comment::Unshown {
                    out.lookalikes.push(Lookalike {
                        family,
                        kind: LookalikeKind::UnknownJump,
                        chain: r.chain.into(),
                        position: Some(*n),
                        rule: Some(format!("nft handle {}", r.handle)),
                    });
                }
                foreign_refs
                    .entry(t)
                    .or_default()
                    .push(format!("{}#{n}", r.chain));
            }
        }
    }
    (non_empty, foreign_refs)
}

/// Adds to `out` the flush of portwarden's `non_empty` chains, then the deletion of every chain
/// of portwarden's (`owned`) that no foreign rule jumps to (`foreign_refs`); the others are
/// kept.
fn remove_chains(
    family: Family,
    owned: &[&str],
    non_empty: &[&str],
    foreign_refs: &HashMap<&str, Vec<String>>,
    out: &mut Removal,
) {
    let fam = nft_family(family);
    for c in owned {
        if non_empty.contains(c) {
            let cmd = format!("flush chain {fam} filter {c}");
            let _ = writeln!(out.script, "{cmd}");
            out.delete.push(format!("nft {cmd}"));
        }
    }
    for c in owned {
        if let Some(by) = foreign_refs.get(c) {
            out.kept.push(Kept {
                family,
                chain: c.to_string(),
                referenced_by: by.clone(),
            });
            continue;
        }
        let cmd = format!("delete chain {fam} filter {c}");
        let _ = writeln!(out.script, "{cmd}");
        out.delete.push(format!("nft {cmd}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `nft -j list table ip filter` after a portwarden apply on iptables-nft 1.8.9, a foreign
    /// FORWARD jump to PORTWARDEN-INPUT, and a native meter rule (trimmed).
    const LISTING: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
      {"table": {"family": "ip", "name": "filter", "handle": 1}},
      {"chain": {"family": "ip", "table": "filter", "name": "PORTWARDEN-INPUT", "handle": 1}},
      {"chain": {"family": "ip", "table": "filter", "name": "PORTWARDEN-TCP-0", "handle": 2}},
      {"chain": {"family": "ip", "table": "filter", "name": "PORTWARDEN-FOO", "handle": 9}},
      {"chain": {"family": "ip", "table": "filter", "name": "INPUT", "handle": 3, "type": "filter", "hook": "input", "prio": 0, "policy": "accept"}},
      {"chain": {"family": "ip", "table": "filter", "name": "FORWARD", "handle": 5, "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}},
      {"rule": {"family": "ip", "table": "filter", "chain": "PORTWARDEN-INPUT", "handle": 4, "expr": [{"match": {"op": "<=", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 4095}}, {"counter": {"packets": 0, "bytes": 0}}, {"jump": {"target": "PORTWARDEN-TCP-0"}}]}},
      {"rule": {"family": "ip", "table": "filter", "chain": "INPUT", "handle": 6, "expr": [{"xt": {"type": "match", "name": "comment"}}, {"counter": {"packets": 0, "bytes": 0}}, {"jump": {"target": "PORTWARDEN-INPUT"}}]}},
      {"rule": {"family": "ip", "table": "filter", "chain": "INPUT", "handle": 7, "expr": [{"xt": {"type": "match", "name": "comment"}}, {"counter": {"packets": 0, "bytes": 0}}, {"jump": {"target": "PORTWARDEN-INPUT"}}]}},
      {"rule": {"family": "ip", "table": "filter", "chain": "INPUT", "handle": 8, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 5}}, {"meter": {"key": {"payload": {"protocol": "ip", "field": "saddr"}}, "stmt": {"limit": {"rate": 5, "burst": 5, "per": "second"}}, "size": 65535, "name": "m1"}}, {"accept": null}]}},
      {"rule": {"family": "ip", "table": "filter", "chain": "INPUT", "handle": 10, "expr": [{"counter": {"packets": 0, "bytes": 0}}, {"jump": {"target": "PORTWARDEN-FOO"}}]}},
      {"rule": {"family": "ip", "table": "filter", "chain": "FORWARD", "handle": 11, "expr": [{"counter": {"packets": 0, "bytes": 0}}, {"jump": {"target": "PORTWARDEN-INPUT"}}]}}
    ]}"#;

    /// [`LISTING`] with one commented jump (handle 6) instead of two.
    fn one_jump() -> String {
        LISTING
            .lines()
            .filter(|l| !l.contains("\"handle\": 7,"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn removes_our_jumps_and_chains_and_keeps_what_foreign_rules_need() {
        let r = removal(Family::Ipv4, &one_jump()).unwrap();
        assert_eq!(
            r.script,
            "delete rule ip filter INPUT handle 6\n\
             flush chain ip filter PORTWARDEN-INPUT\n\
             delete chain ip filter PORTWARDEN-TCP-0\n"
        );
        assert_eq!(
            r.kept,
            [Kept {
                family: Family::Ipv4,
                chain: "PORTWARDEN-INPUT".into(),
                referenced_by: vec!["FORWARD#1".into()],
            }]
        );
        assert_eq!(r.delete.len(), 3);
        assert!(r.delete[0].starts_with("nft delete rule ip filter INPUT handle 6"));
    }

    /// nft cannot show an iptables comment: with two commented INPUT jumps to
    /// PORTWARDEN-INPUT, either may be a foreign one, so neither is deleted.
    #[test]
    fn commented_jumps_nft_cannot_tell_apart_are_left_alone() {
        let r = removal(Family::Ipv4, LISTING).unwrap();
        assert_eq!(
            r.script,
            "flush chain ip filter PORTWARDEN-INPUT\n\
             delete chain ip filter PORTWARDEN-TCP-0\n",
            "a jump that may be foreign was deleted"
        );
        assert_eq!(
            r.kept,
            [Kept {
                family: Family::Ipv4,
                chain: "PORTWARDEN-INPUT".into(),
                referenced_by: vec!["INPUT#1".into(), "INPUT#2".into(), "FORWARD#1".into()],
            }]
        );
        let looks: Vec<String> = r.lookalikes.iter().map(ToString::to_string).collect();
        assert_eq!(looks.len(), 2, "{looks:?}");
        assert!(
            looks[0].starts_with("IPv4 rule INPUT#1 (nft handle 6)")
                && looks[0].contains("cannot tell which one is its own"),
            "{looks:?}"
        );
        // portwarden's comment shown the nftables way is its own, whatever else is there.
        let shown = LISTING.replace(
            r#""handle": 7, "expr": [{"xt": {"type": "match", "name": "comment"}}, "#,
            &format!(
                r#""handle": 7, "comment": "{}", "expr": ["#,
                chains::JUMP_COMMENT
            ),
        );
        let r = removal(Family::Ipv4, &shown).unwrap();
        assert!(
            r.script
                .starts_with("delete rule ip filter INPUT handle 7\nflush chain"),
            "{}",
            r.script
        );
        assert_eq!(r.kept[0].referenced_by, ["INPUT#1", "FORWARD#1"]);
        assert_eq!(r.lookalikes.len(), 1);
    }

    #[test]
    fn a_missing_table_or_a_clean_one_needs_nothing() {
        assert_eq!(removal(Family::Ipv6, "").unwrap(), Removal::default());
        let clean = r#"{"nftables": [{"table": {"family": "ip6", "name": "filter", "handle": 1}},
            {"chain": {"family": "ip6", "table": "filter", "name": "INPUT", "handle": 1}},
            {"rule": {"family": "ip6", "table": "filter", "chain": "INPUT", "handle": 2, "comment": "mine", "expr": [{"jump": {"target": "PORTWARDEN-INPUT"}}]}}]}"#;
        let r = removal(Family::Ipv6, clean).unwrap();
        assert!(r.script.is_empty(), "{}", r.script);
        assert!(removal(Family::Ipv4, "[]").is_err());
        assert!(removal(Family::Ipv4, "{").is_err());
    }
}
