//! The precedence model: which entry decides a packet, and the first-match rule order.
//!
//! When several entries match a packet (port in range, source in CIDR), the winner is the one
//! with the smallest [`Rule::precedence`] key: lowest policy `priority`, then longest source
//! prefix, then narrowest port range, then the more restrictive state (filtered > closed >
//! open); policy name, entry index and port are final tie-breakers so the order is total and
//! stable.
//!
//! A key design decision: because the key is a total order over rules and does not depend on the
//! packet, sorting a node's rules by it yields a first-match list (what iptables evaluates) that
//! gives exactly the per-packet answer. [`PolicySet::expected`] evaluates the key per packet (the
//! model, used by `explain` and drift), [`PolicySet::compile`] produces the sorted list (used by
//! the netfilter renderer); a property test holds them equal.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::document::{Protocol, State, Unlisted};
use crate::expiry::Timestamp;
use crate::intent::{Entry, Node, Policy, selects};
use crate::ports::PortRange;

/// One first-match rule: a port range and source of one entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    /// Priority of the policy the rule comes from.
    pub priority: u32,
    /// Name of the policy the rule comes from.
    pub policy: Arc<str>,
    /// Index of the entry in the policy's `spec.ports`.
    pub entry: usize,
    /// Protocol.
    pub protocol: Protocol,
    /// Destination ports.
    pub ports: PortRange,
    /// Source network; `None` matches any source of either family.
    pub source: Option<IpNet>,
    /// Intended state.
    pub state: State,
    /// When the rule stops matching (its entry's `expires`); `None` for a permanent rule. It is
    /// not part of the precedence key: an expiring rule decides like a permanent one until the
    /// instant, and is then as if deleted (the kernel's time match stops it).
    pub expires: Option<Timestamp>,
}

/// The sort key of [`Rule::precedence`]: smaller wins.
type PrecedenceKey<'a> = (u32, Reverse<u8>, u32, Reverse<u8>, &'a str, usize, u16);

impl Rule {
    /// The precedence key; the smallest key among matching rules decides a packet.
    pub fn precedence(&self) -> PrecedenceKey<'_> {
        (
            self.priority,
            Reverse(self.source.map_or(0, |n| n.prefix_len())),
            self.ports.width(),
            Reverse(self.state.restrictiveness()),
            &self.policy,
            self.entry,
            self.ports.start,
        )
    }

    /// Whether the rule matches a packet.
    pub fn matches(&self, protocol: Protocol, port: u16, source: IpAddr) -> bool {
        self.protocol == protocol
            && self.ports.contains(port)
            && self.source.is_none_or(|n| n.contains(&source))
    }
}

/// What one node must enforce: its rules in first-match order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeIntent {
    /// Names of the policies that select the node, sorted.
    pub policies: Vec<Arc<str>>,
    /// Rules sorted by precedence: the first matching rule decides.
    pub rules: Vec<Rule>,
    /// Whether any selected policy asks for undeclared open ports to be reported.
    pub report_unlisted: bool,
}

impl NodeIntent {
    /// This intent at a later instant `now`: without the rules expired then. Equal to the
    /// intent compiled at `now` (removing rules from a sorted list keeps it sorted), so an
    /// agent drops expired rules at a refresh without reloading its documents.
    pub fn at(&self, now: Timestamp) -> NodeIntent {
        NodeIntent {
            policies: self.policies.clone(),
            rules: self
                .rules
                .iter()
                .filter(|r| r.expires.is_none_or(|t| !t.expired_at(now)))
                .cloned()
                .collect(),
            report_unlisted: self.report_unlisted,
        }
    }

    /// Whether a rule of this intent has expired at `now` (see [`NodeIntent::at`]).
    pub fn has_expired_at(&self, now: Timestamp) -> bool {
        self.rules
            .iter()
            .any(|r| r.expires.is_some_and(|t| t.expired_at(now)))
    }

    /// The rule that decides a packet, by first match over the compiled order.
    pub fn first_match(&self, protocol: Protocol, port: u16, source: IpAddr) -> Option<&Rule> {
        self.rules
            .iter()
            .find(|r| r.matches(protocol, port, source))
    }
}

/// A validated set of policies, ready to evaluate or compile for nodes.
#[derive(Clone, Debug, Default)]
pub struct PolicySet {
    policies: Vec<Policy>,
    names: Vec<Arc<str>>,
}

impl PolicySet {
    /// Builds a set from validated policies (names are unique: the loader checks that).
    pub fn new(mut policies: Vec<Policy>) -> PolicySet {
        policies.sort_by(|a, b| a.name.cmp(&b.name));
        let names = policies
            .iter()
            .map(|p| Arc::from(p.name.as_str()))
            .collect();
        PolicySet { policies, names }
    }

    /// The policies, sorted by name.
    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// Indices of the policies that select a node with these labels.
    fn selected(&self, labels: &BTreeMap<String, String>) -> Vec<usize> {
        (0..self.policies.len())
            .filter(|&i| selects(&self.policies[i].selector, labels))
            .collect()
    }

    /// The rules of policy `i` whose entries have not expired at `now`.
    fn rules_of(&self, i: usize, now: Timestamp) -> impl Iterator<Item = Rule> + '_ {
        let p = &self.policies[i];
        let live = move |e: &&Entry| e.expires.is_none_or(|t| !t.expired_at(now));
        p.entries.iter().filter(live).flat_map(move |e| {
            let sources: Vec<Option<IpNet>> = if e.from.is_empty() {
                vec![None]
            } else {
                e.from.iter().copied().map(Some).collect()
            };
            e.ports.iter().flat_map(move |&ports| {
                sources.clone().into_iter().map(move |source| Rule {
                    priority: p.priority,
                    policy: self.names[i].clone(),
                    entry: e.index,
                    protocol: e.protocol,
                    ports,
                    source,
                    state: e.state,
                    expires: e.expires,
                })
            })
        })
    }

    /// [`PolicySet::expected_at`] the current time.
    pub fn expected(
        &self,
        labels: &BTreeMap<String, String>,
        protocol: Protocol,
        port: u16,
        source: IpAddr,
    ) -> Option<Rule> {
        self.expected_at(labels, protocol, port, source, Timestamp::now())
    }

    /// The per-packet model: the rule that decides a packet of `protocol` to `port` from
    /// `source` on a node with these labels at `now`, or `None` when no policy covers it.
    /// Entries expired at `now` are left out, as if deleted.
    pub fn expected_at(
        &self,
        labels: &BTreeMap<String, String>,
        protocol: Protocol,
        port: u16,
        source: IpAddr,
        now: Timestamp,
    ) -> Option<Rule> {
        self.selected(labels)
            .into_iter()
            .flat_map(|i| self.rules_of(i, now))
            .filter(|r| r.matches(protocol, port, source))
            .min_by(|a, b| a.precedence().cmp(&b.precedence()))
    }

    /// Every rule that matches a packet on a node with these labels, winner first: what
    /// `explain` shows to say why one entry decides and which ones it overrides. With
    /// `now`, rules expired then are left out; with `None`, every rule is in (`explain`
    /// shows the expired ones as no longer applied).
    pub fn candidates(
        &self,
        labels: &BTreeMap<String, String>,
        protocol: Protocol,
        port: u16,
        source: IpAddr,
        now: Option<Timestamp>,
    ) -> Vec<Rule> {
        let now = now.unwrap_or(Timestamp::from_unix(i64::MIN));
        let mut rules: Vec<Rule> = self
            .selected(labels)
            .into_iter()
            .flat_map(|i| self.rules_of(i, now))
            .filter(|r| r.matches(protocol, port, source))
            .collect();
        rules.sort_by(|a, b| a.precedence().cmp(&b.precedence()));
        rules
    }

    /// The entry a rule came from.
    pub fn entry(&self, rule: &Rule) -> Option<&Entry> {
        let policy = self.policies.iter().find(|p| *p.name == *rule.policy)?;
        policy.entries.iter().find(|e| e.index == rule.entry)
    }

    /// [`PolicySet::compile_at`] the current time.
    pub fn compile(&self, labels: &BTreeMap<String, String>) -> NodeIntent {
        self.compile_at(labels, Timestamp::now())
    }

    /// Compiles the first-match rule list of a node with these labels at `now`: entries
    /// expired at `now` are left out, unexpired ones carry their expiry into their rules.
    pub fn compile_at(&self, labels: &BTreeMap<String, String>, now: Timestamp) -> NodeIntent {
        self.compile_selected(&self.selected(labels), now)
    }

    fn compile_selected(&self, selected: &[usize], now: Timestamp) -> NodeIntent {
        let mut rules: Vec<Rule> = selected
            .iter()
            .flat_map(|&i| self.rules_of(i, now))
            .collect();
        rules.sort_unstable_by(|a, b| a.precedence().cmp(&b.precedence()));
        rules.dedup();
        NodeIntent {
            policies: selected.iter().map(|&i| self.names[i].clone()).collect(),
            rules,
            report_unlisted: selected
                .iter()
                .any(|&i| self.policies[i].unlisted == Unlisted::Report),
        }
    }

    /// [`PolicySet::compile_nodes_at`] the current time.
    pub fn compile_nodes(&self, nodes: &[Node]) -> BTreeMap<String, Arc<NodeIntent>> {
        self.compile_nodes_at(nodes, Timestamp::now())
    }

    /// Compiles every node's intent at `now` (see [`PolicySet::compile_at`]). Nodes selected
    /// by the same set of policies share one compiled list, so the cost grows with the number
    /// of distinct label combinations, not with the number of nodes.
    pub fn compile_nodes_at(
        &self,
        nodes: &[Node],
        now: Timestamp,
    ) -> BTreeMap<String, Arc<NodeIntent>> {
        let mut by_selection: HashMap<Vec<usize>, Arc<NodeIntent>> = HashMap::new();
        nodes
            .iter()
            .map(|n| {
                let selected = self.selected(&n.labels);
                let intent = by_selection
                    .entry(selected)
                    .or_insert_with_key(|sel| Arc::new(self.compile_selected(sel, now)))
                    .clone();
                (n.name.clone(), intent)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::LabelSelector;
    use proptest::prelude::*;

    fn policy(name: &str, priority: u32, entries: Vec<Entry>) -> Policy {
        Policy {
            name: name.into(),
            priority,
            selector: LabelSelector::default(),
            unlisted: Unlisted::Ignore,
            entries,
        }
    }

    fn entry(index: usize, ports: &[(u16, u16)], state: State, from: &[&str]) -> Entry {
        Entry {
            index,
            ports: ports
                .iter()
                .map(|&(start, end)| PortRange { start, end })
                .collect(),
            protocol: Protocol::Tcp,
            state,
            from: from.iter().map(|s| s.parse().unwrap()).collect(),
            reason: None,
            expires: None,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn seed_story() {
        let set = PolicySet::new(vec![policy(
            "quarantine",
            100,
            vec![
                entry(0, &[(8080, 8080)], State::Closed, &[]),
                entry(1, &[(80, 80)], State::Closed, &["172.16.7.80/32"]),
            ],
        )]);
        let labels = BTreeMap::new();
        let r = set
            .expected(&labels, Protocol::Tcp, 80, ip("172.16.7.80"))
            .unwrap();
        assert_eq!(
            (r.state, &*r.policy, r.entry),
            (State::Closed, "quarantine", 1)
        );
        assert!(
            set.expected(&labels, Protocol::Tcp, 80, ip("10.0.0.1"))
                .is_none()
        );
        assert!(
            set.expected(&labels, Protocol::Udp, 8080, ip("10.0.0.1"))
                .is_none()
        );
    }

    #[test]
    fn precedence_order() {
        let set = PolicySet::new(vec![
            policy(
                "a",
                1000,
                vec![
                    entry(0, &[(1, 1000)], State::Open, &[]),
                    entry(1, &[(1, 1000)], State::Filtered, &["10.0.0.0/8"]),
                    entry(2, &[(22, 22)], State::Open, &["10.0.0.0/8"]),
                    entry(3, &[(22, 22)], State::Closed, &["10.0.0.0/8"]),
                ],
            ),
            policy("b", 10, vec![entry(0, &[(443, 443)], State::Open, &[])]),
        ]);
        let l = BTreeMap::new();
        let s = |port, from| {
            let r = set.expected(&l, Protocol::Tcp, port, ip(from)).unwrap();
            (r.policy.to_string(), r.entry)
        };
        // longer prefix wins over any-source
        assert_eq!(s(80, "10.1.1.1"), ("a".into(), 1));
        assert_eq!(s(80, "192.168.1.1"), ("a".into(), 0));
        // narrower range wins at equal prefix; more restrictive wins at equal range
        assert_eq!(s(22, "10.1.1.1"), ("a".into(), 3));
        // lower priority number wins over a longer prefix
        assert_eq!(s(443, "10.1.1.1"), ("b".into(), 0));
    }

    #[test]
    fn compile_groups_nodes_by_selection() {
        let mut web = policy("web", 1000, vec![entry(0, &[(80, 80)], State::Open, &[])]);
        web.selector
            .match_labels
            .insert("role".into(), "web".into());
        let all = policy(
            "all",
            1000,
            vec![entry(0, &[(8080, 8080)], State::Closed, &[])],
        );
        let set = PolicySet::new(vec![web, all]);
        let node = |name: &str, role: &str| Node {
            name: name.into(),
            addresses: vec![],
            labels: [("role".to_string(), role.to_string())].into(),
        };
        let nodes = vec![node("w1", "web"), node("w2", "web"), node("d1", "db")];
        let c = set.compile_nodes(&nodes);
        assert!(Arc::ptr_eq(&c["w1"], &c["w2"]));
        assert_eq!(c["w1"].rules.len(), 2);
        assert_eq!(c["d1"].rules.len(), 1);
        assert_eq!(&*c["d1"].policies[0], "all");
    }

    fn arb_entry() -> impl Strategy<Value = (Vec<(u16, u16)>, u8, u8, Vec<usize>)> {
        (
            prop::collection::vec((1u16..40, 0u16..12), 1..3)
                .prop_map(|v| v.into_iter().map(|(s, w)| (s, s + w)).collect()),
            0u8..3,
            0u8..2,
            prop::collection::vec(0usize..SOURCES.len(), 0..3),
        )
    }

    const SOURCES: [&str; 8] = [
        "0.0.0.0/0",
        "10.0.0.0/8",
        "10.1.0.0/16",
        "10.1.2.3/32",
        "192.168.0.0/16",
        "::/0",
        "fd00::/8",
        "fd00::1/128",
    ];
    const PACKET_SOURCES: [&str; 5] = ["10.1.2.3", "10.9.9.9", "192.168.1.1", "fd00::1", "2001::1"];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        #[test]
        fn first_match_equals_best_key(
            policies in prop::collection::vec(
                (prop::sample::select(vec![10u32, 100, 1000]), prop::collection::vec(arb_entry(), 1..6)),
                1..4),
            packets in prop::collection::vec((0u8..2, 1u16..55, 0usize..PACKET_SOURCES.len()), 20),
        ) {
            let policies: Vec<Policy> = policies.into_iter().enumerate().map(|(pi, (prio, entries))| {
                let entries = entries.into_iter().enumerate().map(|(ei, (ports, st, proto, from))| Entry {
                    index: ei,
                    ports: crate::ports::normalize(ports.into_iter().map(|(start, end)| PortRange { start, end }).collect()),
                    protocol: if proto == 0 { Protocol::Tcp } else { Protocol::Udp },
                    state: [State::Open, State::Closed, State::Filtered][st as usize],
                    from: from.into_iter().map(|i| SOURCES[i].parse().unwrap()).collect(),
                    reason: None,
                    expires: None,
                }).collect();
                policy(&format!("p{pi}"), prio, entries)
            }).collect();
            let set = PolicySet::new(policies);
            let labels = BTreeMap::new();
            let compiled = set.compile(&labels);
            for (proto, port, src) in packets {
                let protocol = if proto == 0 { Protocol::Tcp } else { Protocol::Udp };
                let source = ip(PACKET_SOURCES[src]);
                let model = set.expected(&labels, protocol, port, source);
                let first = compiled.first_match(protocol, port, source).cloned();
                prop_assert_eq!(model, first);
            }
        }
    }

    /// An [`arb_entry`] value with an optional expiry (seconds).
    type RawEntry = ((Vec<(u16, u16)>, u8, u8, Vec<usize>), Option<i64>);

    /// Policies (priority, entries) from raw values.
    fn build(raw: Vec<(u32, Vec<RawEntry>)>) -> Vec<Policy> {
        raw.into_iter()
            .enumerate()
            .map(|(pi, (prio, entries))| {
                let entries = entries
                    .into_iter()
                    .enumerate()
                    .map(|(ei, ((ports, st, proto, from), exp))| Entry {
                        index: ei,
                        ports: crate::ports::normalize(
                            ports
                                .into_iter()
                                .map(|(start, end)| PortRange { start, end })
                                .collect(),
                        ),
                        protocol: if proto == 0 {
                            Protocol::Tcp
                        } else {
                            Protocol::Udp
                        },
                        state: [State::Open, State::Closed, State::Filtered][st as usize],
                        from: from
                            .into_iter()
                            .map(|i| SOURCES[i].parse().unwrap())
                            .collect(),
                        reason: None,
                        expires: exp.map(Timestamp::from_unix),
                    })
                    .collect();
                policy(&format!("p{pi}"), prio, entries)
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// An expired entry is as if deleted: a set with expired entries decides every packet
        /// like the same set without them (model and compiled list). And the compiled list of
        /// an earlier instant, walked as the kernel does (a rule whose expiry has passed does
        /// not match), decides like the list compiled at the later instant: the kernel's time
        /// match alone gives the fallback, no recompilation needed.
        #[test]
        fn expired_entries_are_as_if_deleted(
            policies in prop::collection::vec(
                (prop::sample::select(vec![10u32, 100, 1000]),
                 prop::collection::vec((arb_entry(), prop::option::of(90i64..110)), 1..6)),
                1..4),
            now in 95i64..105,
            later in 0i64..10,
            packets in prop::collection::vec((0u8..2, 1u16..55, 0usize..PACKET_SOURCES.len()), 20),
        ) {
            let now = Timestamp::from_unix(now);
            let later = Timestamp::from_unix(now.unix() + later);
            let with = PolicySet::new(build(policies.clone()));
            // the same set with the entries expired at `now` deleted (indices kept)
            let without = PolicySet::new(build(policies).into_iter().map(|mut p| {
                p.entries.retain(|e| e.expires.is_none_or(|t| !t.expired_at(now)));
                p
            }).collect());
            let labels = BTreeMap::new();
            let compiled = with.compile_at(&labels, now);
            let reference = without.compile_at(&labels, now);
            prop_assert!(compiled.rules.iter().all(|r| r.expires.is_none_or(|t| !t.expired_at(now))));
            let at_later = with.compile_at(&labels, later);
            // what an agent does at a refresh: the earlier list without what expired since
            prop_assert_eq!(&compiled.at(later), &at_later);
            prop_assert_eq!(compiled.has_expired_at(later), compiled.rules.len() != at_later.rules.len());
            for (proto, port, src) in packets {
                let protocol = if proto == 0 { Protocol::Tcp } else { Protocol::Udp };
                let source = ip(PACKET_SOURCES[src]);
                let want = without.expected_at(&labels, protocol, port, source, now);
                prop_assert_eq!(&with.expected_at(&labels, protocol, port, source, now), &want);
                prop_assert_eq!(compiled.first_match(protocol, port, source), want.as_ref());
                prop_assert_eq!(reference.first_match(protocol, port, source), want.as_ref());
                let kernel = compiled.rules.iter().find(|r| {
                    r.matches(protocol, port, source) && r.expires.is_none_or(|t| !t.expired_at(later))
                });
                prop_assert_eq!(kernel, at_later.first_match(protocol, port, source));
            }
        }
    }
}
