//! Per-entry packet and byte counters: which of the kernel's rule counters belong to which
//! policy entry, and whether each entry's rules are in place (pure).
//!
//! [`entry_counters`] takes each family's filter table as read with counters
//! ([`crate::Netfilter::read_counters`], `iptables-save -c -t filter`), the node's intent and
//! what [`crate::render()`] made of it, and returns one [`EntryCounters`] per entry and family.
//!
//! # Attribution
//!
//! Every rule portwarden renders stands for exactly one entry ([`mod@crate::render`] merges rules
//! into a multiport rule only within one entry) and carries its comment,
//! [`chains::entry_comment`] (`web entry 3: open`). A rule in one of portwarden's chains
//! ([`chains::is_owned`]) whose comment is the one this intent's entry would get counts for that
//! entry, on whichever path it is: `INPUT`'s leaf and the forward path's leaf (connections a
//! DNAT forwards from a node address) are summed. Rules elsewhere never count, also when they
//! copy a comment. The comment names the state too, so a leftover rule from before the entry's
//! state changed (drift, or a plan not yet applied) is not counted for the new state.
//!
//! Not attributed: a rule an older version wrote for several entries at once ("web entries
//! 0,1: open" — the next apply rewrites its chain), and the rules of two policies whose names
//! are equal in the first 230-odd characters (the comment is cut to the kernel's 255 bytes, so
//! it cannot tell them apart).
//!
//! # In place
//!
//! [`EntryCounters::rules_expected`] is the number of rules `render` wants for the entry in the
//! family (both paths); [`EntryCounters::rules_in_place`] how many of them the kernel holds in
//! their chain, compared token by token as [`crate::diff()`] does, in a chain the packets
//! reach as rendered: the jump from `INPUT`/`FORWARD` is there, and so is every dispatch rule on
//! the way to the leaf. (Order inside a chain is [`crate::diff()`]'s business: a plan shows it.)
//!
//! The counters are the kernel's: they count from the moment the rule was written, and a chain
//! an apply rewrites starts again from 0.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use portwarden_policy::NodeIntent;
use serde::Serialize;

use crate::chains::{self, Path};
use crate::diff::target_of;
use crate::place::Family;
use crate::render::{Desired, Rendered};
use crate::save::{Chain, Ruleset, tokens};

/// The counters of one entry in one family.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EntryCounters {
    /// Policy name.
    pub policy: String,
    /// Entry index in the policy (0-based).
    pub entry: usize,
    /// Family.
    pub family: Family,
    /// Packets the entry's rules matched, `INPUT` and forward path summed.
    pub packets: u64,
    /// Bytes of those packets.
    pub bytes: u64,
    /// Rules `render` wants for the entry in this family (0: none here, e.g. an entry whose
    /// sources are all of the other family, or whose ports are all failsafe).
    pub rules_expected: usize,
    /// How many of them are in the kernel, where packets reach them.
    pub rules_in_place: usize,
}

impl EntryCounters {
    /// Whether every rule the entry needs in this family is in place.
    pub fn in_place(&self) -> bool {
        self.rules_in_place == self.rules_expected
    }
}

/// The counters and rule state of every entry of `intent` in every family of `current`, sorted
/// by policy, entry and family (see the module docs). `rendered` is what the intent renders to
/// on this node (`Host::render`, what plans compare with); `current` holds each family's filter
/// table read with counters (rules without counters count 0).
pub fn entry_counters(
    intent: &NodeIntent,
    rendered: &Rendered,
    current: &[(Family, Ruleset)],
) -> Vec<EntryCounters> {
    let owners = Owners::of(intent);
    let mut out = Vec::with_capacity(owners.entries.len() * current.len());
    for (family, ruleset) in current {
        let empty = Vec::new();
        let filter = ruleset.table("filter").map_or(&empty, |t| &t.chains);
        let mut rows: Vec<EntryCounters> = owners
            .entries
            .iter()
            .map(|(policy, entry)| EntryCounters {
                policy: policy.to_string(),
                entry: *entry,
                family: *family,
                packets: 0,
                bytes: 0,
                rules_expected: 0,
                rules_in_place: 0,
            })
            .collect();
        count_packets(&owners, filter, &mut rows);
        count_in_place(&owners, rendered.family(*family), filter, &mut rows);
        out.extend(rows);
    }
    out.sort_by(|a, b| (&a.policy, a.entry, a.family).cmp(&(&b.policy, b.entry, b.family)));
    out
}

/// The entries of an intent, and the comment each one's rules carry.
struct Owners {
    /// (policy, entry), sorted, each once.
    entries: Vec<(Arc<str>, usize)>,
    /// Comment -> index in `entries`; `None` when two entries would write the same comment.
    by_comment: HashMap<String, Option<usize>>,
}

impl Owners {
    fn of(intent: &NodeIntent) -> Owners {
        let mut entries: Vec<(Arc<str>, usize)> = intent
            .rules
            .iter()
            .map(|r| (r.policy.clone(), r.entry))
            .collect();
        entries.sort();
        entries.dedup();
        let mut by_comment: HashMap<String, Option<usize>> = HashMap::new();
        for r in &intent.rules {
            let Ok(i) = entries.binary_search(&(r.policy.clone(), r.entry)) else {
                continue;
            };
            let comment = chains::entry_comment(&r.policy, r.entry, r.state.as_str());
            by_comment
                .entry(comment)
                .and_modify(|owner| {
                    if *owner != Some(i) {
                        *owner = None;
                    }
                })
                .or_insert(Some(i));
        }
        Owners {
            entries,
            by_comment,
        }
    }

    /// The entry (index in `entries`) a rule with this specification stands for.
    fn owner(&self, spec: &str) -> Option<usize> {
        let comment = comment_of(spec)?;
        self.by_comment.get(&comment).copied().flatten()
    }
}

/// The argument of a rule's `--comment`, unquoted.
fn comment_of(spec: &str) -> Option<String> {
    let at = spec.find("--comment ")?;
    let mut t = tokens(&spec[at..]).into_iter();
    (t.next()? == "--comment").then_some(())?;
    t.next()
}

/// Adds the counters of every rule in portwarden's chains of `filter` to its entry's row.
fn count_packets(owners: &Owners, filter: &[Chain], rows: &mut [EntryCounters]) {
    for c in filter.iter().filter(|c| chains::is_owned(&c.name)) {
        for r in &c.rules {
            if let (Some(n), Some(i)) = (r.counters, owners.owner(&r.spec)) {
                rows[i].packets = rows[i].packets.saturating_add(n.packets);
                rows[i].bytes = rows[i].bytes.saturating_add(n.bytes);
            }
        }
    }
}

/// Counts every entry's rendered rules of `desired`, and those of them `filter` holds in a
/// reachable chain.
fn count_in_place(
    owners: &Owners,
    desired: &Desired,
    filter: &[Chain],
    rows: &mut [EntryCounters],
) {
    let kernel: HashMap<&str, &Chain> = filter
        .iter()
        .filter(|c| chains::is_owned(&c.name))
        .map(|c| (c.name.as_str(), c))
        .collect();
    let reachable = reachable(desired, filter, &kernel);
    for (name, rules) in &desired.chains {
        let mut held = kernel
            .get(name.as_str())
            .filter(|_| reachable.contains(name.as_str()))
            .map(|c| Held::new(c));
        for spec in rules {
            let Some(i) = owners.owner(spec) else {
                continue;
            };
            rows[i].rules_expected += 1;
            if held.as_mut().is_some_and(|h| h.take(spec)) {
                rows[i].rules_in_place += 1;
            }
        }
    }
}

/// The chains of `desired` that packets reach in the kernel as rendered: a path's root when its
/// jump is in its hook chain, every chain a rendered rule of such a chain jumps to when the
/// kernel holds that rule there, and (vacuously) a chain nothing jumps to in the rendering
/// either (the forward path's port dispatch of a node without addresses).
fn reachable<'a>(
    desired: &'a Desired,
    filter: &[Chain],
    kernel: &HashMap<&str, &Chain>,
) -> HashSet<&'a str> {
    let holds = |c: &Chain, spec: &str| {
        c.rules
            .iter()
            .any(|r| r.spec == spec || tokens(&r.spec) == tokens(spec))
    };
    let wanted: HashMap<&str, &[String]> = desired
        .chains
        .iter()
        .map(|(n, r)| (n.as_str(), r.as_slice()))
        .collect();
    let jumped_to: HashSet<&str> = desired
        .chains
        .iter()
        .flat_map(|(_, rules)| rules.iter().filter_map(|spec| target_of(spec)))
        .collect();
    let mut todo: Vec<&str> = Vec::new();
    for (name, _) in &desired.chains {
        let root = Path::ALL.into_iter().find(|p| p.root() == name);
        let seed = match root {
            Some(path) => {
                let hook = filter.iter().find(|c| c.name == path.hook());
                matches!((desired.jump_of(path), hook), (Some(j), Some(h)) if holds(h, j))
            }
            None => !jumped_to.contains(name.as_str()),
        };
        if seed {
            todo.push(name);
        }
    }
    let mut reached: HashSet<&str> = todo.iter().copied().collect();
    while let Some(name) = todo.pop() {
        let (Some(rules), Some(have)) = (wanted.get(name), kernel.get(name)) else {
            continue;
        };
        for spec in rules.iter() {
            let Some((&target, _)) = target_of(spec).and_then(|t| wanted.get_key_value(t)) else {
                continue;
            };
            if !reached.contains(target) && holds(have, spec) {
                reached.insert(target);
                todo.push(target);
            }
        }
    }
    reached
}

/// The rules of one kernel chain not yet matched to a rendered rule, counting duplicates:
/// byte-equal first (the common case), token by token once a rule is not found so.
struct Held<'a> {
    exact: HashMap<&'a str, usize>,
    by_tokens: Option<HashMap<Vec<String>, usize>>,
}

impl<'a> Held<'a> {
    fn new(chain: &'a Chain) -> Held<'a> {
        let mut exact: HashMap<&str, usize> = HashMap::new();
        for r in &chain.rules {
            *exact.entry(r.spec.as_str()).or_default() += 1;
        }
        Held {
            exact,
            by_tokens: None,
        }
    }

    /// Whether a rule equal to `spec` is still unmatched; if so it is matched now.
    fn take(&mut self, spec: &str) -> bool {
        if self.by_tokens.is_none() {
            if let Some(n) = self.exact.get_mut(spec).filter(|n| **n > 0) {
                *n -= 1;
                return true;
            }
            let mut by_tokens: HashMap<Vec<String>, usize> = HashMap::new();
            for (s, n) in &self.exact {
                *by_tokens.entry(tokens(s)).or_default() += n;
            }
            self.by_tokens = Some(by_tokens);
        }
        let by_tokens = self.by_tokens.get_or_insert_with(HashMap::new);
        match by_tokens.get_mut(&tokens(spec)).filter(|n| **n > 0) {
            Some(n) => {
                *n -= 1;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failsafe::Failsafe;
    use crate::render::render;
    use portwarden_policy::{Protocol, Rule, State};
    use std::fmt::Write as _;

    /// A TCP rule ([`crate::render`]'s test rule).
    fn rule(
        policy: &str,
        entry: usize,
        ports: (u16, u16),
        source: Option<&str>,
        state: State,
    ) -> Rule {
        crate::render::tests::rule(policy, entry, Protocol::Tcp, ports, source, state)
    }

    fn intent(mut rules: Vec<Rule>) -> NodeIntent {
        rules.sort_by(|a, b| a.precedence().cmp(&b.precedence()));
        NodeIntent {
            policies: vec![],
            rules,
            report_unlisted: false,
        }
    }

    /// `iptables-save -c` of `desired` as applied, with `counts(chain, spec)` as each rule's
    /// counters and the rules `drop(chain, spec)` says left out.
    fn saved(
        desired: &Desired,
        counts: impl Fn(&str, &str) -> (u64, u64),
        drop: impl Fn(&str, &str) -> bool,
    ) -> Ruleset {
        let mut s = String::from("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n");
        for (name, _) in &desired.chains {
            let _ = writeln!(s, ":{name} - [0:0]");
        }
        for (hook, jump) in [("INPUT", &desired.jump), ("FORWARD", &desired.forward_jump)] {
            if let Some(j) = jump.as_ref().filter(|j| !drop(hook, j)) {
                let _ = writeln!(s, "[0:0] -A {hook} {j}");
            }
        }
        for (name, rules) in &desired.chains {
            for spec in rules.iter().filter(|r| !drop(name, r)) {
                let (p, b) = counts(name, spec);
                let _ = writeln!(s, "[{p}:{b}] -A {name} {spec}");
            }
        }
        s.push_str("COMMIT\n");
        Ruleset::parse(&s).expect("test dump parses")
    }

    fn row<'a>(
        rows: &'a [EntryCounters],
        policy: &str,
        entry: usize,
        f: Family,
    ) -> &'a EntryCounters {
        rows.iter()
            .find(|r| r.policy == policy && r.entry == entry && r.family == f)
            .expect("row of the entry")
    }

    /// Counters that tell rules apart: 1 packet of 60 bytes per port of `--dport(s)` on INPUT,
    /// 100 packets per rule on the forward path.
    fn by_port(chain: &str, spec: &str) -> (u64, u64) {
        if chains::path_of(chain) == Some(Path::Forward) {
            return (100, 6000);
        }
        let t = tokens(spec);
        let ports = t
            .windows(2)
            .find(|w| w[0] == "--dport" || w[0] == "--dports")
            .map_or(0, |w| w[1].split(',').count() as u64);
        (ports, 60 * ports)
    }

    #[test]
    fn two_entries_in_one_leaf_each_get_their_own_counters() {
        let i = intent(vec![
            rule("web", 0, (80, 80), None, State::Open),
            rule("web", 1, (81, 81), None, State::Open),
            rule("db", 0, (82, 82), None, State::Filtered),
        ]);
        let r = render(&i, &Failsafe::none(), &[]);
        let current = vec![(
            Family::Ipv4,
            saved(
                &r.v4,
                |c, s| {
                    if s.contains("--dport 81 ") {
                        (7, 420)
                    } else if chains::path_of(c) == Some(Path::Input) {
                        (1, 60)
                    } else {
                        (0, 0)
                    }
                },
                |_, _| false,
            ),
        )];
        let rows = entry_counters(&i, &r, &current);
        assert_eq!(rows.len(), 3);
        assert_eq!(
            (
                row(&rows, "web", 1, Family::Ipv4).packets,
                row(&rows, "web", 1, Family::Ipv4).bytes
            ),
            (7, 420)
        );
        assert_eq!(row(&rows, "web", 0, Family::Ipv4).packets, 1);
        assert_eq!(row(&rows, "db", 0, Family::Ipv4).packets, 1);
        // sorted by policy, then entry
        assert_eq!(rows[0].policy, "db");
        for r in &rows {
            // one rule on INPUT, one on the forward path
            assert_eq!((r.rules_expected, r.rules_in_place), (2, 2), "{r:?}");
            assert!(r.in_place());
        }
    }

    #[test]
    fn an_entry_of_several_ranges_sums_its_rules_and_both_paths() {
        // ports in two leaves (80, 81 and 300-310): two INPUT rules, three forward rules
        let i = intent(vec![
            rule("web", 0, (80, 80), None, State::Closed),
            rule("web", 0, (81, 81), None, State::Closed),
            rule("web", 0, (300, 310), None, State::Closed),
            rule("web", 1, (8080, 8080), None, State::Open),
        ]);
        let r = render(
            &i,
            &Failsafe::none(),
            &["10.0.0.1".parse().expect("address")],
        );
        let current = vec![(Family::Ipv4, saved(&r.v4, by_port, |_, _| false))];
        let rows = entry_counters(&i, &r, &current);
        let web0 = row(&rows, "web", 0, Family::Ipv4);
        // INPUT: "80,81" is 2 ports, "300:310" 1 -> 3 packets; forward: 80:81 and 300:310 -> 200
        assert_eq!((web0.packets, web0.bytes), (3 + 200, 180 + 12_000));
        assert_eq!((web0.rules_expected, web0.rules_in_place), (4, 4));
        let web1 = row(&rows, "web", 1, Family::Ipv4);
        assert_eq!((web1.packets, web1.rules_expected), (1 + 100, 2));
    }

    #[test]
    fn both_families_are_counted_apart_and_sources_decide_the_family() {
        let i = intent(vec![
            rule("web", 0, (80, 80), Some("10.0.0.0/8"), State::Open),
            rule("web", 1, (443, 443), None, State::Open),
        ]);
        let r = render(&i, &Failsafe::none(), &[]);
        let current = vec![
            (Family::Ipv4, saved(&r.v4, |_, _| (5, 300), |_, _| false)),
            (Family::Ipv6, saved(&r.v6, |_, _| (2, 160), |_, _| false)),
        ];
        let rows = entry_counters(&i, &r, &current);
        assert_eq!(rows.len(), 4);
        assert_eq!(row(&rows, "web", 1, Family::Ipv4).packets, 10);
        assert_eq!(row(&rows, "web", 1, Family::Ipv6).packets, 4);
        // the IPv4-only entry has nothing in IPv6, and that is not "missing"
        let v6 = row(&rows, "web", 0, Family::Ipv6);
        assert_eq!(
            (v6.packets, v6.rules_expected, v6.rules_in_place),
            (0, 0, 0)
        );
        assert!(v6.in_place());
        assert_eq!(row(&rows, "web", 0, Family::Ipv4).packets, 10);
    }

    #[test]
    fn missing_rules_and_a_missing_jump_are_not_in_place() {
        let i = intent(vec![
            rule("web", 0, (80, 80), None, State::Open),
            rule("web", 1, (81, 81), None, State::Filtered),
            rule("web", 2, (5000, 5000), None, State::Filtered),
        ]);
        let r = render(&i, &Failsafe::none(), &[]);
        // entry 1's INPUT rule deleted by someone; entry 2's dispatch rule to its level-1 chain
        let current = vec![(
            Family::Ipv4,
            saved(
                &r.v4,
                |_, _| (1, 1),
                |c, s| {
                    (c == "PORTWARDEN-TCP-0-255" && s.contains("entry 1:"))
                        || (c == chains::INPUT_CHAIN && s.contains("PORTWARDEN-TCP-4096"))
                },
            ),
        )];
        let rows = entry_counters(&i, &r, &current);
        let at = |e| {
            let x = row(&rows, "web", e, Family::Ipv4);
            (x.rules_expected, x.rules_in_place)
        };
        assert_eq!(at(0), (2, 2));
        assert_eq!(at(1), (2, 1));
        assert_eq!(
            at(2),
            (2, 1),
            "the input leaf is unreachable, the forward one is fine"
        );
        assert_eq!(
            row(&rows, "web", 1, Family::Ipv4).packets,
            1,
            "the forward rule counts"
        );
        // without the INPUT jump, nothing on INPUT is in place
        let current = vec![(
            Family::Ipv4,
            saved(&r.v4, |_, _| (0, 0), |c, _| c == "INPUT"),
        )];
        let rows = entry_counters(&i, &r, &current);
        assert!(
            rows.iter()
                .all(|x| x.rules_in_place == 1 && x.rules_expected == 2),
            "{rows:?}"
        );
        // nothing applied at all: no rows lose their entry, all are missing
        let bare = Ruleset::parse("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n").expect("parses");
        let rows = entry_counters(&i, &r, &[(Family::Ipv4, bare)]);
        assert_eq!(rows.len(), 3);
        assert!(
            rows.iter()
                .all(|x| x.rules_in_place == 0 && x.packets == 0 && x.rules_expected == 2)
        );
    }

    #[test]
    fn only_portwarden_chains_count_and_stale_or_old_merged_rules_are_not_attributed() {
        let i = intent(vec![
            rule("web", 0, (80, 80), None, State::Open),
            rule("web", 1, (81, 81), None, State::Open),
        ]);
        let r = render(&i, &Failsafe::none(), &[]);
        let mut text = crate::save::to_save_text(&saved(&r.v4, |_, _| (1, 10), |_, _| false));
        let extra = [
            // a foreign rule copying the comment
            "[50:500] -A INPUT -p tcp -m tcp --dport 80 -m comment --comment \"web entry 0: open\" -j ACCEPT",
            // an older version's merged rule, and a rule of entry 0 from when it was filtered
            "[60:600] -A PORTWARDEN-TCP-0-255 -p tcp -m multiport --dports 80,81 -m comment --comment \"web entries 0,1: open\" -j ACCEPT",
            "[70:700] -A PORTWARDEN-TCP-0-255 -p tcp -m tcp --dport 80 -m comment --comment \"web entry 0: filtered\" -j DROP",
            // quoted differently from the rendered form: still entry 1's
            "[3:30] -A PORTWARDEN-TCP-0-255 -p tcp -m tcp --dport 81 -m comment --comment 'web entry 1: open' -j ACCEPT",
        ];
        let at = text.rfind("COMMIT").expect("COMMIT");
        text.insert_str(at, &format!("{}\n", extra.join("\n")));
        let rs = Ruleset::parse(&text).expect("parses");
        let rows = entry_counters(&i, &r, &[(Family::Ipv4, rs)]);
        // INPUT leaf + forward leaf, each 1 packet
        assert_eq!(row(&rows, "web", 0, Family::Ipv4).packets, 2);
        assert_eq!(row(&rows, "web", 1, Family::Ipv4).packets, 2 + 3);
    }

    #[test]
    fn a_rule_quoted_differently_is_in_place_and_duplicates_count_once() {
        let i = intent(vec![rule("web", 0, (80, 80), None, State::Open)]);
        let r = render(&i, &Failsafe::none(), &[]);
        let text = crate::save::to_save_text(&saved(&r.v4, |_, _| (0, 0), |_, _| false))
            .replace("\"web entry 0: open\"", "'web entry 0: open'");
        let rs = Ruleset::parse(&text).expect("parses");
        let rows = entry_counters(&i, &r, &[(Family::Ipv4, rs)]);
        assert_eq!((rows[0].rules_expected, rows[0].rules_in_place), (2, 2));
        let spec = "-p tcp -m tcp --dport 80 -m comment --comment \"web entry 0: open\" -j ACCEPT";
        let chain = Chain {
            name: "PORTWARDEN-TCP-0-255".into(),
            policy: None,
            rules: vec![crate::save::SavedRule {
                spec: spec.replace('"', "'"),
                counters: None,
            }],
        };
        let mut held = Held::new(&chain);
        assert!(held.take(spec));
        assert!(
            !held.take(spec),
            "one kernel rule matches one rendered rule"
        );
    }

    #[test]
    fn comments_are_read_from_any_quoting() {
        assert_eq!(
            comment_of("-p tcp -m comment --comment \"web entry 0: open\" -j ACCEPT").as_deref(),
            Some("web entry 0: open")
        );
        assert_eq!(comment_of("-p tcp -j ACCEPT"), None);
        assert_eq!(comment_of("-m comment --comment"), None);
    }
}
