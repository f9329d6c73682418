//! Semantic validation: wire documents in, checked intent out.
//!
//! This is the one place that decides whether a document means something. The YAML loader runs
//! it (and points each issue at its token through the located tree); the Kubernetes layer runs
//! it on custom resources the API server admitted. Every issue in a document is collected, not
//! only the first.
//!
//! [`failsafe_conflicts`] finds the valid entries that try to close or filter a failsafe port
//! (one portwarden never blocks, so a policy cannot lock operators or the control plane out).
//! Such an entry is not an error — the rest of it is enforced — but `validate` and `plan`
//! report it as a conflict, so its author learns that part of it has no effect.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::document::{
    API_VERSION, Inventory, LabelSelector, PortEntry, PortItem, PortPolicy, Ports, Protocol,
    SelectorOperator, State,
};
use crate::expiry::{self, Timestamp};
use crate::intent::{Entry, Node, Policy};
use crate::ports::{self, PortRange};
use crate::yaml::PathSegment;

/// One semantic problem, at a path inside its document.
#[derive(Clone, Debug, PartialEq)]
pub struct Issue {
    /// Where in the document (e.g. `spec.ports[1].from[0]`).
    pub path: Vec<PathSegment>,
    /// What is wrong.
    pub message: String,
    /// A suggested fix, when one is obvious.
    pub help: Option<String>,
}

/// Most issues collected for one document; the rest are counted in one last issue (at the
/// document's root). Bounds the memory of a document full of mistakes.
pub const MAX_ISSUES: usize = 40;

/// Collects issues under a moving path.
struct Checker {
    path: Vec<PathSegment>,
    issues: Vec<Issue>,
    more: usize,
}

impl Checker {
    fn at<R>(&mut self, segment: PathSegment, f: impl FnOnce(&mut Checker) -> R) -> R {
        self.path.push(segment);
        let r = f(self);
        self.path.pop();
        r
    }
    fn key<R>(&mut self, key: &str, f: impl FnOnce(&mut Checker) -> R) -> R {
        self.at(PathSegment::Key(key.to_string()), f)
    }
    fn index<R>(&mut self, i: usize, f: impl FnOnce(&mut Checker) -> R) -> R {
        self.at(PathSegment::Index(i), f)
    }
    fn error(&mut self, message: impl Into<String>, help: Option<String>) {
        if self.issues.len() >= MAX_ISSUES {
            self.more += 1;
            return;
        }
        self.issues.push(Issue {
            path: self.path.clone(),
            message: message.into(),
            help,
        });
    }

    fn new() -> Checker {
        Checker {
            path: Vec::new(),
            issues: Vec::new(),
            more: 0,
        }
    }

    /// The issues, with the count of those left out as a last one.
    fn into_issues(mut self) -> Vec<Issue> {
        if self.more > 0 {
            self.issues.push(Issue {
                path: Vec::new(),
                message: crate::diagnostic::more_in_document(self.more),
                help: Some(crate::diagnostic::NOT_SHOWN_HELP.into()),
            });
        }
        self.issues
    }
}

/// Checks a policy and compiles it to intent.
///
/// # Errors
///
/// Every issue found: bad apiVersion/kind, names, ports (syntax, range, empty), sources (syntax,
/// host bits set), label selectors, empty entry lists.
pub fn policy(doc: &PortPolicy) -> Result<Policy, Vec<Issue>> {
    let mut c = Checker::new();
    c.key("apiVersion", |c| check_api_version(c, &doc.api_version));
    c.key("kind", |c| check_kind(c, &doc.kind, "PortPolicy"));
    c.key("metadata", |c| {
        c.key("name", |c| check_object_name(c, &doc.metadata.name))
    });
    c.key("spec", |c| {
        c.key("nodeSelector", |c| {
            check_selector(c, &doc.spec.node_selector)
        });
        c.key("ports", |c| {
            if doc.spec.ports.is_empty() {
                c.error(
                    "policy has no port entries",
                    Some("add at least one entry under spec.ports, or delete the policy".into()),
                );
            }
        });
    });
    let entries: Vec<Option<Entry>> = doc
        .spec
        .ports
        .iter()
        .enumerate()
        .map(|(i, e)| {
            c.key("spec", |c| {
                c.key("ports", |c| c.index(i, |c| check_entry(c, i, e)))
            })
        })
        .collect();
    if !c.issues.is_empty() {
        return Err(c.into_issues());
    }
    Ok(Policy {
        name: doc.metadata.name.clone(),
        priority: doc.spec.priority,
        selector: doc.spec.node_selector.clone(),
        unlisted: doc.spec.unlisted,
        entries: entries.into_iter().flatten().collect(),
    })
}

/// Checks an inventory and returns its nodes.
///
/// # Errors
///
/// Every issue found: bad apiVersion/kind, node names (empty, duplicate), addresses (invalid, or
/// listed twice for one node; one address of two nodes is found across documents by the
/// loader), labels.
pub fn inventory(doc: &Inventory) -> Result<Vec<Node>, Vec<Issue>> {
    let mut c = Checker::new();
    c.key("apiVersion", |c| check_api_version(c, &doc.api_version));
    c.key("kind", |c| check_kind(c, &doc.kind, "Inventory"));
    let mut nodes = Vec::with_capacity(doc.nodes.len());
    let mut first_index: HashMap<&str, usize> = HashMap::new();
    c.key("nodes", |c| {
        for (i, n) in doc.nodes.iter().enumerate() {
            c.index(i, |c| {
                c.key("name", |c| {
                    check_object_name(c, &n.name);
                    if let Some(&first) = first_index.get(n.name.as_str()) {
                        c.error(
                            format!("duplicate node name \"{}\" (also node {first})", n.name),
                            None,
                        );
                    } else {
                        first_index.insert(&n.name, i);
                    }
                });
                let addresses: Vec<IpAddr> = c.key("addresses", |c| {
                    let mut first: HashMap<IpAddr, usize> = HashMap::new();
                    n.addresses
                        .iter()
                        .enumerate()
                        .filter_map(|(j, a)| {
                            c.index(j, |c| {
                                let addr = check_address(c, a)?;
                                match first.get(&addr) {
                                    Some(k) => {
                                        c.error(
                                            format!(
                                                "duplicate address {addr}: listed twice for node \"{}\" (first as item {k})",
                                                n.name
                                            ),
                                            Some("remove one of them".into()),
                                        );
                                        None
                                    }
                                    None => {
                                        first.insert(addr, j);
                                        Some(addr)
                                    }
                                }
                            })
                        })
                        .collect()
                });
                c.key("labels", |c| check_labels(c, &n.labels));
                nodes.push(Node {
                    name: n.name.clone(),
                    addresses,
                    labels: n.labels.clone(),
                });
            })
        }
    });
    if c.issues.is_empty() {
        Ok(nodes)
    } else {
        Err(c.into_issues())
    }
}

/// What is valid in an inventory but worth a warning: a node without addresses. Its agent
/// enforces its rules, but `verify` and peer scans have nowhere to probe it. The paths point at
/// each node's `addresses` (or at the node, when the field is missing).
pub fn inventory_warnings(doc: &Inventory) -> Vec<Issue> {
    doc.nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.addresses.is_empty())
        .map(|(i, n)| Issue {
            path: vec![
                PathSegment::Key("nodes".into()),
                PathSegment::Index(i),
                PathSegment::Key("addresses".into()),
            ],
            message: format!(
                "node \"{}\" has no addresses: its agent enforces its rules, but verify and peer scans cannot check it",
                n.name
            ),
            help: Some("add the node's addresses so that it can be verified".into()),
        })
        .collect()
}

/// A policy entry that asks to close or filter failsafe ports; see [`failsafe_conflicts`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailsafeConflict {
    /// Policy name.
    pub policy: String,
    /// Entry index in `spec.ports` (0-based).
    pub entry: usize,
    /// The entry's protocol.
    pub protocol: Protocol,
    /// The blocking state the entry asks for.
    pub state: State,
    /// The failsafe ranges it covers (whole or in part), as given.
    pub failsafe: Vec<PortRange>,
}

impl std::fmt::Display for FailsafeConflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ports: Vec<String> = self
            .failsafe
            .iter()
            .map(|r| format!("{}:{r}", self.protocol.to_string().to_ascii_lowercase()))
            .collect();
        write!(
            f,
            "policy {} entry {} (spec.ports[{}]) would make failsafe {} {}; portwarden never blocks \
             failsafe ports, so that part of the entry has no effect (remove those ports from \
             the entry, or change the agents' --failsafe list)",
            self.policy,
            self.entry,
            self.entry,
            ports.join(","),
            self.state
        )
    }
}

/// The entries of `policies` that would close or filter a port of `failsafe` (protocol and
/// port ranges; the agents' `--failsafe` list). Open entries never conflict, whatever their
/// sources: failsafe ports are accepted anyway.
pub fn failsafe_conflicts(
    policies: &[Policy],
    failsafe: &[(Protocol, PortRange)],
) -> Vec<FailsafeConflict> {
    let mut out = Vec::new();
    for p in policies {
        for e in &p.entries {
            if e.state == State::Open {
                continue;
            }
            let hit: Vec<PortRange> = failsafe
                .iter()
                .filter(|(proto, f)| *proto == e.protocol && e.ports.iter().any(|r| r.overlaps(f)))
                .map(|(_, f)| *f)
                .collect();
            if !hit.is_empty() {
                out.push(FailsafeConflict {
                    policy: p.name.clone(),
                    entry: e.index,
                    protocol: e.protocol,
                    state: e.state,
                    failsafe: hit,
                });
            }
        }
    }
    out
}

fn check_api_version(c: &mut Checker, v: &str) {
    if v != API_VERSION {
        c.error(
            format!("unsupported apiVersion \"{v}\""),
            Some(format!("use \"{API_VERSION}\"")),
        );
    }
}

fn check_kind(c: &mut Checker, v: &str, expected: &str) {
    if v != expected {
        c.error(format!("kind is \"{v}\", expected \"{expected}\""), None);
    }
}

/// Names follow Kubernetes' DNS-subdomain rule so the same documents work as custom resources.
fn check_object_name(c: &mut Checker, name: &str) {
    if name.is_empty() {
        c.error("name must not be empty", None);
        return;
    }
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    let ok_ends = name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    if !ok_chars || !ok_ends || name.len() > 253 {
        let suggestion: String = name
            .to_ascii_lowercase()
            .chars()
            .map(|ch| {
                if ch.is_ascii_alphanumeric() || ch == '.' {
                    ch
                } else {
                    '-'
                }
            })
            .collect();
        let suggestion = suggestion.trim_matches(|ch| ch == '-' || ch == '.');
        c.error(
            format!(
                "invalid name \"{name}\": use lower-case letters, digits, '-' and '.', starting and ending with a letter or digit (at most 253 characters)"
            ),
            (!suggestion.is_empty()).then(|| format!("did you mean \"{suggestion}\"?")),
        );
    }
}

fn check_entry(c: &mut Checker, index: usize, e: &PortEntry) -> Option<Entry> {
    let ranges = c.key("ports", |c| check_ports(c, &e.ports));
    let from: Vec<Option<IpNet>> = c.key("from", |c| {
        e.from
            .iter()
            .enumerate()
            .map(|(j, s)| c.index(j, |c| check_source(c, s)))
            .collect()
    });
    let expires = match &e.expires {
        None => Some(None),
        Some(t) => c.key("expires", |c| check_expires(c, t)).map(Some),
    };
    let ranges = ranges?;
    let from: Option<Vec<IpNet>> = from.into_iter().collect();
    Some(Entry {
        index,
        ports: ranges,
        protocol: e.protocol,
        state: e.state,
        from: from?,
        reason: e.reason.clone(),
        expires: expires?,
    })
}

/// Parses `expires`: RFC 3339 with an offset, within what iptables' time match can hold.
fn check_expires(c: &mut Checker, text: &str) -> Option<Timestamp> {
    match Timestamp::parse_rfc3339(text) {
        Ok(t) if t < expiry::EARLIEST => {
            c.error(format!("expiry {t} is before 1970"), None);
            None
        }
        Ok(t) if t > expiry::LATEST => {
            c.error(
                format!(
                    "expiry {t} is after {}, the last instant iptables' time match can hold",
                    expiry::LATEST
                ),
                Some("choose an earlier expiry, or leave \"expires\" out".into()),
            );
            None
        }
        Ok(t) => Some(t),
        Err((message, help)) => {
            c.error(message, help);
            None
        }
    }
}

/// What is valid in a policy but worth a warning: an entry that has already expired at `now`
/// (it is as if deleted: its rules are no longer applied). The paths point at each `expires`.
pub fn policy_warnings(policy: &Policy, now: Timestamp) -> Vec<Issue> {
    policy
        .entries
        .iter()
        .filter_map(|e| {
            let t = e.expires?;
            t.expired_at(now).then(|| Issue {
                path: vec![
                    PathSegment::Key("spec".into()),
                    PathSegment::Key("ports".into()),
                    PathSegment::Index(e.index),
                    PathSegment::Key("expires".into()),
                ],
                message: format!(
                    "entry {} of policy \"{}\" expired at {t} ({} ago): it is no longer applied",
                    e.index,
                    policy.name,
                    expiry::human_span(now.unix() - t.unix())
                ),
                help: Some("remove the entry, or move its expiry into the future".into()),
            })
        })
        .collect()
}

/// Parses the `ports` field into sorted, disjoint ranges.
fn check_ports(c: &mut Checker, p: &Ports) -> Option<Vec<PortRange>> {
    let number = |c: &mut Checker, n: u32| match ports::parse_port(&n.to_string()) {
        Ok(p) => Some(vec![PortRange::single(p)]),
        Err(e) => {
            c.error(e.0, None);
            None
        }
    };
    let text = |c: &mut Checker, t: &str| match ports::parse_list(t) {
        Ok(r) => Some(r),
        Err(e) => {
            c.error(e.0, None);
            None
        }
    };
    let ranges = match p {
        Ports::Number(n) => number(c, *n)?,
        Ports::Text(t) => text(c, t)?,
        Ports::List(items) => {
            if items.is_empty() {
                c.error(
                    "empty port list (give at least one port)",
                    Some("for every port write \"1-65535\"".into()),
                );
                return None;
            }
            let parts: Vec<Option<Vec<PortRange>>> = items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    c.index(i, |c| match item {
                        PortItem::Number(n) => number(c, *n),
                        PortItem::Text(t) => text(c, t),
                    })
                })
                .collect();
            let parts: Option<Vec<Vec<PortRange>>> = parts.into_iter().collect();
            parts?.concat()
        }
    };
    Some(ports::normalize(ranges))
}

/// When `t` is an IPv4-mapped IPv6 address or network (`::ffff:10.0.0.1`, `::ffff:10.0.0.0/104`):
/// the message (`why` says what it breaks) and the IPv4 form as the fix.
///
/// Such a value is refused, not rewritten: the kernel hands IPv4 packets to iptables, so in a
/// source it matches nothing (it only ever reached ip6tables), and as a node address it names
/// the IPv4 host in a form scanners cannot use. Kubernetes' CEL `isIP`/`isCIDR` refuse it too,
/// so a file and a custom resource mean the same; and a located error with the fix costs one
/// edit, where a silent rewrite would leave the file saying something else than what is enforced.
fn ipv4_mapped(t: &str, why: &str) -> Option<(String, Option<String>)> {
    let (addr, prefix) = match t.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (t, None),
    };
    let IpAddr::V6(v6) = addr.parse::<IpAddr>().ok()? else {
        return None;
    };
    let v4 = v6.to_ipv4_mapped()?;
    let fix = match prefix.map(str::parse::<u8>) {
        None => Some(v4.to_string()),
        Some(Ok(p)) if (96..=128).contains(&p) => Some(format!("{v4}/{}", p - 96)),
        Some(_) => None,
    };
    let kind = if prefix.is_some() {
        "network"
    } else {
        "address"
    };
    Some((
        format!("\"{t}\" is an IPv4-mapped IPv6 {kind}: {why}"),
        Some(match fix {
            Some(f) => format!("write the IPv4 form: \"{f}\""),
            None => "write the network in IPv4 form (a.b.c.d/N)".into(),
        }),
    ))
}

/// Parses a source: a CIDR, or a bare address meaning one host. Host bits set is an error
/// because it usually hides a typo (`10.0.0.5/24` meant `10.0.0.0/24` or `10.0.0.5/32`?); an
/// IPv4-mapped IPv6 source is one because IPv4 packets never match it (see `ipv4_mapped`).
pub(crate) fn parse_source(s: &str) -> Result<IpNet, (String, Option<String>)> {
    let t = s.trim();
    if let Some(refused) = ipv4_mapped(
        t,
        "IPv4 packets never match it (only ip6tables would see it)",
    ) {
        return Err(refused);
    }
    if let Ok(addr) = t.parse::<IpAddr>() {
        return Ok(IpNet::from(addr));
    }
    match t.parse::<IpNet>() {
        Ok(net) if net.addr() != net.network() => Err((
            format!("host bits are set in \"{t}\""),
            Some(format!(
                "did you mean \"{}\" (the network) or \"{}/{}\" (one host)?",
                net.trunc(),
                net.addr(),
                net.max_prefix_len()
            )),
        )),
        Ok(net) => Ok(net),
        Err(_) => Err((
            format!("\"{t}\" is not an IP address or CIDR"),
            Some("write an IPv4 or IPv6 network such as \"10.0.0.0/8\" or \"2001:db8::/32\", or an address".into()),
        )),
    }
}

fn check_source(c: &mut Checker, s: &str) -> Option<IpNet> {
    match parse_source(s) {
        Ok(net) => Some(net),
        Err((msg, help)) => {
            c.error(msg, help);
            None
        }
    }
}

fn check_address(c: &mut Checker, a: &str) -> Option<IpAddr> {
    if let Some((message, help)) = ipv4_mapped(
        a.trim(),
        "the node is reached over IPv4, at its IPv4 address",
    ) {
        c.error(message, help);
        return None;
    }
    match a.trim().parse::<IpAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            c.error(
                format!("\"{a}\" is not an IP address"),
                Some("node addresses are plain IPv4 or IPv6 addresses, without a prefix".into()),
            );
            None
        }
    }
}

fn check_selector(c: &mut Checker, s: &LabelSelector) {
    c.key("matchLabels", |c| check_labels(c, &s.match_labels));
    c.key("matchExpressions", |c| {
        for (i, r) in s.match_expressions.iter().enumerate() {
            c.index(i, |c| {
                c.key("key", |c| check_label_key(c, &r.key));
                c.key("values", |c| {
                    match r.operator {
                        SelectorOperator::In | SelectorOperator::NotIn if r.values.is_empty() => c
                            .error(
                                format!("operator {:?} needs at least one value", r.operator),
                                None,
                            ),
                        SelectorOperator::Exists | SelectorOperator::DoesNotExist
                            if !r.values.is_empty() =>
                        {
                            c.error(
                                format!("operator {:?} takes no values", r.operator),
                                Some("remove `values`".into()),
                            )
                        }
                        _ => {}
                    }
                    for (j, v) in r.values.iter().enumerate() {
                        c.index(j, |c| check_label_value(c, v));
                    }
                });
            })
        }
    });
}

fn check_labels(c: &mut Checker, labels: &std::collections::BTreeMap<String, String>) {
    for (k, v) in labels {
        c.at(PathSegment::KeyName(k.clone()), |c| check_label_key(c, k));
        c.key(k, |c| check_label_value(c, v));
    }
}

/// Kubernetes label keys: an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// characters of alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric.
fn check_label_key(c: &mut Checker, key: &str) {
    if let Some((message, hint)) = label_key_problem(key) {
        c.error(message, Some(hint));
    }
}

fn check_label_value(c: &mut Checker, value: &str) {
    if let Some((message, hint)) = label_value_problem(value) {
        c.error(message, Some(hint));
    }
}

/// Why `key` is not a Kubernetes label key (an optional DNS-subdomain prefix and `/`, then a
/// name of at most 63 characters of alphanumerics, `-`, `_`, `.`, starting and ending
/// alphanumeric): the message and a hint; `None` when it is one. The check policy documents
/// get, for callers that take labels from elsewhere (the command line).
pub fn label_key_problem(key: &str) -> Option<(String, String)> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    });
    (!prefix_ok || !is_label_name(name) || name.is_empty()).then(|| {
        (
            format!("invalid label key \"{key}\""),
            "label keys are [prefix/]name: name at most 63 characters of letters, digits, '-', '_', '.'".into(),
        )
    })
}

/// Why `value` is not a Kubernetes label value (empty, or at most 63 characters of
/// alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric): the message and a hint;
/// `None` when it is one.
pub fn label_value_problem(value: &str) -> Option<(String, String)> {
    (!value.is_empty() && !is_label_name(value)).then(|| {
        (
            format!("invalid label value \"{value}\""),
            "label values are at most 63 characters of letters, digits, '-', '_', '.', starting and ending with a letter or digit".into(),
        )
    })
}

fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|&x| x.is_ascii_alphanumeric() || x == b'-' || x == b'_' || x == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::{Metadata, PortPolicySpec, Protocol, State, Unlisted};

    fn entry(ports: Ports, from: &[&str]) -> PortEntry {
        PortEntry {
            ports,
            protocol: Protocol::Tcp,
            state: State::Closed,
            from: from.iter().map(|s| s.to_string()).collect(),
            reason: None,
            expires: None,
        }
    }

    fn expiring(text: &str) -> PortEntry {
        let mut e = entry(Ports::Number(8080), &[]);
        e.expires = Some(text.into());
        e
    }

    #[test]
    fn expiries_are_parsed_and_carried_into_the_entry() {
        let p = policy(&doc(vec![
            expiring("2026-12-24T19:00:00+01:00"),
            entry(Ports::Number(80), &[]),
        ]))
        .unwrap();
        assert_eq!(
            p.entries[0].expires,
            Some(Timestamp::from_unix(1_798_135_200))
        );
        assert_eq!(p.entries[1].expires, None);
    }

    #[test]
    fn malformed_expiries_are_issues_at_the_field() {
        let m = messages(&doc(vec![
            expiring("2026-12-24T18:00:00"),
            expiring("next tuesday"),
            expiring("2039-01-01T00:00:01Z"),
            expiring("1969-12-31T23:59:59Z"),
        ]));
        assert_eq!(m.len(), 4, "{m:?}");
        assert!(
            m[0].starts_with(
                ".spec.ports[0].expires: time \"2026-12-24T18:00:00\" has no UTC offset"
            ),
            "{}",
            m[0]
        );
        assert!(
            m[1].starts_with(".spec.ports[1].expires: invalid time \"next tuesday\""),
            "{}",
            m[1]
        );
        assert!(m[2].contains("after 2039-01-01T00:00:00Z"), "{}", m[2]);
        assert!(m[3].contains("before 1970"), "{}", m[3]);
    }

    #[test]
    fn expired_entries_are_warned_about() {
        let p = policy(&doc(vec![
            expiring("2026-12-24T18:00:00Z"),
            expiring("2026-12-24T20:00:00Z"),
        ]))
        .unwrap();
        let now = Timestamp::from_unix(1_798_135_200 + 300);
        let w = policy_warnings(&p, now);
        assert_eq!(w.len(), 1, "{w:?}");
        let path: String = w[0].path.iter().map(|s| s.to_string()).collect();
        assert_eq!(path, ".spec.ports[0].expires");
        assert_eq!(
            w[0].message,
            "entry 0 of policy \"p\" expired at 2026-12-24T18:00:00Z (5 min ago): it is no longer applied"
        );
        assert!(policy_warnings(&p, Timestamp::from_unix(0)).is_empty());
    }

    fn doc(entries: Vec<PortEntry>) -> PortPolicy {
        PortPolicy {
            api_version: API_VERSION.into(),
            kind: "PortPolicy".into(),
            metadata: Metadata {
                name: "p".into(),
                labels: Default::default(),
            },
            spec: PortPolicySpec {
                node_selector: Default::default(),
                priority: 1000,
                unlisted: Unlisted::Ignore,
                ports: entries,
            },
        }
    }

    fn messages(d: &PortPolicy) -> Vec<String> {
        policy(d)
            .unwrap_err()
            .into_iter()
            .map(|i| {
                let p: String = i.path.iter().map(|s| s.to_string()).collect();
                format!("{p}: {}", i.message)
            })
            .collect()
    }

    #[test]
    fn valid_policy_compiles() {
        let p = policy(&doc(vec![entry(
            Ports::List(vec![
                PortItem::Number(80),
                PortItem::Text("8000-8100".into()),
            ]),
            &["172.16.7.80", "10.0.0.0/8", "2001:db8::/32"],
        )]))
        .unwrap();
        assert_eq!(p.entries[0].ports.len(), 2);
        assert_eq!(p.entries[0].from[0].to_string(), "172.16.7.80/32");
    }

    #[test]
    fn every_issue_is_reported_with_its_path() {
        let m = messages(&doc(vec![
            entry(Ports::Text("0".into()), &[]),
            entry(Ports::Number(70000), &["10.0.0.5/24", "bogus"]),
        ]));
        assert_eq!(m.len(), 4, "{m:?}");
        assert!(m[0].starts_with(".spec.ports[0].ports: port 0"));
        assert!(m[1].starts_with(".spec.ports[1].ports: port 70000 is out of range"));
        assert!(m[2].starts_with(".spec.ports[1].from[0]: host bits"));
        assert!(m[3].starts_with(".spec.ports[1].from[1]: \"bogus\""));
    }

    #[test]
    fn host_bits_suggest_network_and_host() {
        let (msg, help) = parse_source("10.0.0.5/24").unwrap_err();
        assert!(msg.contains("host bits"));
        let help = help.unwrap();
        assert!(
            help.contains("10.0.0.0/24") && help.contains("10.0.0.5/32"),
            "{help}"
        );
        let (_, help) = parse_source("2001:db8::1/64").unwrap_err();
        assert!(help.unwrap().contains("2001:db8::/64"));
    }

    #[test]
    fn ipv4_mapped_ipv6_sources_are_refused_with_the_ipv4_form() {
        // `::ffff:10.240.1.2` compiled only into ip6tables: the IPv4 host it names never matched.
        for (source, suggestion) in [
            ("::ffff:10.240.1.2", "10.240.1.2"),
            ("::FFFF:10.240.1.2/128", "10.240.1.2/32"),
            ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
            ("::ffff:0:0/96", "0.0.0.0/0"),
        ] {
            let (msg, help) = parse_source(source).unwrap_err();
            assert!(msg.contains("IPv4-mapped IPv6"), "{source}: {msg}");
            assert_eq!(
                help.as_deref(),
                Some(format!("write the IPv4 form: \"{suggestion}\"").as_str()),
                "{source}"
            );
        }
        // Other IPv6 sources are untouched, including networks that contain the mapped range.
        for ok in ["::/0", "::1", "2001:db8::ffff:1", "::ffff:0:0:0/96"] {
            assert!(parse_source(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn ipv4_mapped_inventory_addresses_are_refused() {
        use crate::document::InventoryNode;
        let inv = Inventory {
            api_version: API_VERSION.into(),
            kind: "Inventory".into(),
            metadata: None,
            nodes: vec![InventoryNode {
                name: "web-1".into(),
                addresses: vec!["::ffff:10.213.0.11".into(), "fd00::11".into()],
                labels: Default::default(),
            }],
        };
        let issues = inventory(&inv).unwrap_err();
        assert_eq!(issues.len(), 1, "{issues:?}");
        let path: String = issues[0].path.iter().map(|s| s.to_string()).collect();
        assert_eq!(path, ".nodes[0].addresses[0]");
        assert!(issues[0].message.contains("IPv4-mapped"), "{issues:?}");
        assert_eq!(
            issues[0].help.as_deref(),
            Some("write the IPv4 form: \"10.213.0.11\"")
        );
    }

    #[test]
    fn empty_lists_are_errors() {
        assert!(messages(&doc(vec![]))[0].contains("no port entries"));
        assert!(
            messages(&doc(vec![entry(Ports::List(vec![]), &[])]))[0].contains("empty port list")
        );
        assert!(
            messages(&doc(vec![entry(Ports::Text(" ".into()), &[])]))[0]
                .contains("empty port list")
        );
    }

    #[test]
    fn names_and_versions() {
        let mut d = doc(vec![entry(Ports::Number(80), &[])]);
        d.metadata.name = "Web_Policy".into();
        d.api_version = "v1".into();
        d.kind = "PortPolicies".into();
        let m = messages(&d);
        assert!(m.iter().any(|s| s.contains("apiVersion")));
        assert!(m.iter().any(|s| s.contains("kind is")));
        assert!(m.iter().any(|s| s.contains("invalid name")));
        let issues = policy(&d).unwrap_err();
        let name_issue = issues
            .iter()
            .find(|i| i.message.contains("invalid name"))
            .unwrap();
        assert_eq!(
            name_issue.help.as_deref(),
            Some("did you mean \"web-policy\"?")
        );
    }

    #[test]
    fn selector_rules() {
        use crate::document::LabelSelectorRequirement;
        let mut d = doc(vec![entry(Ports::Number(80), &[])]);
        d.spec
            .node_selector
            .match_labels
            .insert("bad key!".into(), "x".into());
        d.spec
            .node_selector
            .match_labels
            .insert("role".into(), "-web".into());
        d.spec.node_selector.match_expressions = vec![
            LabelSelectorRequirement {
                key: "zone".into(),
                operator: SelectorOperator::In,
                values: vec![],
            },
            LabelSelectorRequirement {
                key: "gpu".into(),
                operator: SelectorOperator::Exists,
                values: vec!["yes".into()],
            },
        ];
        let m = messages(&d);
        assert_eq!(m.len(), 4, "{m:?}");
        assert!(
            m.iter()
                .any(|s| s.contains("invalid label key \"bad key!\""))
        );
        assert!(m.iter().any(|s| s.contains("invalid label value \"-web\"")));
        assert!(m.iter().any(|s| s.contains("In needs at least one value")));
        assert!(m.iter().any(|s| s.contains("Exists takes no values")));
    }

    #[test]
    fn entries_that_block_failsafe_ports_are_conflicts() {
        let failsafe = [
            (Protocol::Tcp, PortRange::single(22)),
            (
                Protocol::Tcp,
                PortRange {
                    start: 2379,
                    end: 2380,
                },
            ),
            (Protocol::Udp, PortRange::single(68)),
        ];
        let mut all = entry(Ports::Text("1-65535".into()), &["0.0.0.0/0", "::/0"]);
        all.state = State::Filtered;
        let mut udp = entry(Ports::Text("1-65535".into()), &[]);
        udp.protocol = Protocol::Udp;
        let mut open = entry(Ports::Number(22), &[]);
        open.state = State::Open;
        let clear = entry(Ports::Text("80,443".into()), &[]);
        // an expiring entry conflicts exactly as a permanent one
        let mut etcd = entry(Ports::Number(2380), &["10.0.0.5"]);
        etcd.expires = Some("2026-12-24T18:00:00Z".into());
        let p = policy(&doc(vec![all, udp, open, clear, etcd])).unwrap();
        let c = failsafe_conflicts(std::slice::from_ref(&p), &failsafe);
        let got: Vec<(usize, Vec<PortRange>)> =
            c.iter().map(|c| (c.entry, c.failsafe.clone())).collect();
        assert_eq!(
            got,
            vec![
                (0, vec![failsafe[0].1, failsafe[1].1]),
                (1, vec![failsafe[2].1]),
                (4, vec![failsafe[1].1]),
            ]
        );
        let text = c[0].to_string();
        assert!(
            text.contains("policy p entry 0")
                && text.contains("tcp:22,tcp:2379-2380 filtered")
                && text.contains("never blocks"),
            "{text}"
        );
        assert!(failsafe_conflicts(&[p], &[]).is_empty());
    }

    #[test]
    fn inventory_rules() {
        use crate::document::InventoryNode;
        let node = |name: &str, addr: &str| InventoryNode {
            name: name.into(),
            addresses: vec![addr.into()],
            labels: Default::default(),
        };
        let inv = Inventory {
            api_version: API_VERSION.into(),
            kind: "Inventory".into(),
            metadata: None,
            nodes: vec![
                node("web-1", "10.0.0.1"),
                node("web-1", "10.0.0.2/32"),
                InventoryNode {
                    addresses: vec!["fd00::1".into(), "10.0.0.3".into(), "fd00:0::1".into()],
                    ..node("web-2", "")
                },
            ],
        };
        let issues = inventory(&inv).unwrap_err();
        assert_eq!(issues.len(), 3, "{issues:?}");
        assert!(issues[0].message.contains("duplicate node name"));
        assert!(issues[1].message.contains("not an IP address"));
        // One address twice for one node, however it is spelt.
        assert_eq!(
            issues[2].message,
            "duplicate address fd00::1: listed twice for node \"web-2\" (first as item 0)"
        );
        assert_eq!(
            issues[2].path,
            [
                PathSegment::Key("nodes".into()),
                PathSegment::Index(2),
                PathSegment::Key("addresses".into()),
                PathSegment::Index(2)
            ]
        );
    }
}
