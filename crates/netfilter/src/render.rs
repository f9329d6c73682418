//! Rendering a node's compiled intent into the chains portwarden wants, per address family.
//!
//! Pure: [`render`] maps a [`NodeIntent`], a [`Failsafe`] list and the node's own addresses to
//! [`Desired`] chains (rule specifications in exactly the form `iptables-save` prints them, so
//! a converged node compares equal) and the [`Conflict`]s found on the way. See
//! [`crate::chains`] for the chain layout.
//!
//! # Intent → rule
//!
//! | intent | TCP | UDP (IPv4 / IPv6) |
//! |---|---|---|
//! | open | `ACCEPT` | `ACCEPT` |
//! | closed | `REJECT --reject-with tcp-reset` | `REJECT --reject-with icmp-port-unreachable` / `icmp6-port-unreachable` |
//! | filtered | `DROP` | `DROP` |
//!
//! A rule of an entry with `expires` carries `-m time --datestop YYYY-MM-DDTHH:MM:SS` (UTC, the
//! last second it matches: see [`portwarden_policy::expiry`]) after its port match, the form
//! `iptables-save` prints back on both backends, so a converged node compares equal. At the
//! instant the kernel stops matching it and the next rule in first-match order decides, with
//! no process running. Rules of different expiries never merge into one multiport rule; the
//! failsafe cut and its conflicts are those of a permanent rule.
//!
//! # One entry per rule
//!
//! Adjacent rules merge into one multiport rule only when they are of the same entry (one
//! policy, one entry index: an entry of several port ranges) with the same source, state and
//! expiry; rules of different entries never do, even when adjacent with the same action. So
//! every rendered rule stands for exactly one entry, and its comment names it (`web entry 3:
//! open`, [`chains::entry_comment`]): the kernel's packet counters of a rule are that entry's
//! ([`crate::counters`]). Older versions merged adjacent entries of one policy ("web entries
//! 0,1: open"); such a rule is rewritten at the next apply. The price is paid by policies of
//! many adjacent single-port entries with one action: one rule per entry where there was one
//! per fifteen ports (the bench's 10,000 entries write twice the rules; docs/benchmarks.md).
//!
//! Block rules must only hit traffic the remote side initiated, or a filtered range that overlaps
//! the ephemeral port range would eat the replies to the node's own connections. Instead of a
//! `-m conntrack --ctdir ORIGINAL` on every rule, `PORTWARDEN-INPUT` returns packets in the
//! `REPLY` direction once, before any policy rule: the same meaning, one rule instead of N, and
//! packets conntrack cannot classify (`INVALID`, e.g. a FIN scan) still meet the policy, so a
//! filtered port looks filtered to every probe type. Loopback is returned as well: portwarden
//! governs what the network sees, and blocking `lo` would break node-local services.
//!
//! # The forward path
//!
//! A key design decision: a port the node *forwards* (a DNAT in `nat PREROUTING` of one of its
//! addresses to a container or pod: Docker's `-p 8080:80`, a NodePort, a CNI hostPort) must
//! look to a scanner exactly as the same port served by the node itself. Such packets never
//! pass `INPUT`, and in `FORWARD` their destination is already the container's, so the same
//! intent is rendered a second time for `FORWARD` ([`Path::Forward`](crate::chains::Path)),
//! matching what conntrack remembers of the connection instead of the header, as Docker's
//! documentation recommends for `DOCKER-USER`:
//!
//! * only connections in the `ORIGINAL` direction that a DNAT rewrote (`--ctstate DNAT`) and
//!   whose original destination is one of the node's own addresses (`--ctorigdst`, one rule per
//!   address, given to [`render`]); routed traffic, pod-to-pod traffic and connections to
//!   Service IPs that are not the node's are returned untouched;
//! * the port is the original one (`--ctorigdstport`), so the policy's `8080` is the port the
//!   scanner probed, whatever port the container listens on;
//! * the verdicts are INPUT's (`REJECT` is valid in `FORWARD`: a closed port answers with a
//!   reset or a port-unreachable from the node, as nmap expects).
//!
//! Every rule is in the `filter` table, so the forward path changes in the same
//! `iptables-restore` transaction as `INPUT`'s. conntrack's port match takes one range per rule
//! (no `multiport`), so a forward leaf has one rule per range where `INPUT`'s leaf has one per
//! up to fifteen; contiguous ranges of one rule are joined first.
//!
//! [`render`] renders the forward path for both families; [`crate::addresses::Host::render`]
//! (what [`crate::Netfilter`] plans with) leaves it out of a family the node does not forward,
//! where no DNAT'ed packet can reach `FORWARD`.
//!
//! Limits: packets that never meet netfilter's `FORWARD` (an eBPF dataplane such as Cilium's
//! kube-proxy replacement, or XDP) are outside what iptables can enforce; a DNAT to a local
//! address (`REDIRECT`) lands in `INPUT` with the translated port.
//!
//! # Caveats
//!
//! The reply rule needs connection tracking: applying loads `nf_conntrack` for the namespace if
//! nothing had yet. Packets of flows exempted from tracking (`-t raw ... -j NOTRACK`/`CT
//! --notrack`) are never "replies", so they meet the policy like any inbound packet.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use portwarden_policy::{NodeIntent, PortRange, Protocol, Rule, State};
use serde::Serialize;

use crate::chains::{
    self, FORWARD_CHAIN, FORWARD_PORTS_CHAIN, INPUT_CHAIN, LEAF_PORTS, LEVEL1_PORTS, Path,
};
use crate::failsafe::{Failsafe, FailsafePort};
pub use crate::place::Family;
use crate::save::quote;

/// A policy entry that tries to block a failsafe port. The failsafe ports are cut out of the
/// rendered rules; the rest of the entry is enforced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Conflict {
    /// Policy name.
    #[serde(serialize_with = "crate::ser::ser_str")]
    pub policy: Arc<str>,
    /// Entry index in the policy (0-based).
    pub entry: usize,
    /// Protocol of the entry.
    #[serde(serialize_with = "crate::ser::ser_protocol")]
    pub protocol: Protocol,
    /// The entry's port range.
    #[serde(serialize_with = "crate::ser::ser_range")]
    pub ports: PortRange,
    /// The blocking state it asks for.
    #[serde(serialize_with = "crate::ser::ser_state")]
    pub state: State,
    /// Source, when the entry has one.
    pub source: Option<IpNet>,
    /// The failsafe ports it overlaps.
    pub failsafe: Vec<FailsafePort>,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let overlapped: Vec<String> = self.failsafe.iter().map(ToString::to_string).collect();
        write!(
            f,
            "policy {} entry {} would make {}/{} {} but that covers failsafe {}; \
             those ports are left to the host's own rules (remove them from the entry or \
             change --failsafe)",
            self.policy,
            self.entry,
            self.ports,
            self.protocol,
            self.state,
            overlapped.join(",")
        )
    }
}

/// The chains portwarden wants in one family, in the order they are written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    /// Family.
    pub family: Family,
    /// Chain name and its rule specifications (after `-A CHAIN `), root chain first.
    pub chains: Vec<(String, Vec<String>)>,
    /// The specification of the jump from `INPUT` (after `-I INPUT 1 `); `None` when nothing
    /// is wanted (reset).
    pub jump: Option<String>,
    /// The specification of the jump from `FORWARD` (after `-I FORWARD 1 `); `None` when
    /// nothing is wanted.
    pub forward_jump: Option<String>,
}

impl Desired {
    /// Nothing of portwarden's: what [`reset`](crate::Netfilter::reset) converges to.
    pub fn empty(family: Family) -> Desired {
        Desired {
            family,
            chains: Vec::new(),
            jump: None,
            forward_jump: None,
        }
    }

    /// This family without its forward path (chains and jump): what a node that does not
    /// forward this family needs ([`crate::addresses::forwarding`]).
    pub fn without_forward_path(mut self) -> Desired {
        self.chains
            .retain(|(name, _)| chains::path_of(name) != Some(Path::Forward));
        self.forward_jump = None;
        self
    }

    /// The wanted jump of `path`.
    pub fn jump_of(&self, path: Path) -> Option<&String> {
        match path {
            Path::Input => self.jump.as_ref(),
            Path::Forward => self.forward_jump.as_ref(),
        }
    }

    /// Number of rules, the jumps included.
    pub fn rule_count(&self) -> usize {
        self.chains.iter().map(|(_, r)| r.len()).sum::<usize>()
            + usize::from(self.jump.is_some())
            + usize::from(self.forward_jump.is_some())
    }
}

/// What [`render`] produces: both families' chains and the conflicts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// IPv4 chains.
    pub v4: Desired,
    /// IPv6 chains.
    pub v6: Desired,
    /// Entries that would block failsafe ports.
    pub conflicts: Vec<Conflict>,
}

impl Rendered {
    /// The chains of one family.
    pub fn family(&self, family: Family) -> &Desired {
        match family {
            Family::Ipv4 => &self.v4,
            Family::Ipv6 => &self.v6,
        }
    }
}

/// One rule inside a leaf chain, before rendering: ranges of one entry (`rule.policy`,
/// `rule.entry`).
#[derive(Clone, Debug)]
struct LeafRule<'a> {
    rule: &'a Rule,
    ranges: Vec<PortRange>,
}

impl LeafRule<'_> {
    /// Same policy, entry, source, state and expiry (the protocol is the leaf's): the two rules
    /// differ only in ports, so when adjacent they can be one multiport rule. Rules of different
    /// entries never merge, even with the same action, so every rule's packet counters belong
    /// to one entry ([`crate::counters`]); rules that expire at different instants never merge
    /// either: each must stop matching at its own.
    fn same_action(&self, other: &LeafRule<'_>) -> bool {
        self.rule.policy == other.rule.policy
            && self.rule.entry == other.rule.entry
            && self.rule.state == other.rule.state
            && self.rule.source == other.rule.source
            && self.rule.expires == other.rule.expires
    }
}

/// Ports that a multiport match can hold: a single port takes one slot, a range two.
const MULTIPORT_SLOTS: usize = 15;

fn slots(ranges: &[PortRange]) -> usize {
    ranges
        .iter()
        .map(|r| if r.start == r.end { 1 } else { 2 })
        .sum()
}

/// `range` minus every range in `cut`, in order.
fn subtract(range: PortRange, cut: &[PortRange]) -> Vec<PortRange> {
    if !cut.iter().any(|c| c.overlaps(&range)) {
        return vec![range];
    }
    let mut out = vec![range];
    for c in cut {
        out = out
            .into_iter()
            .flat_map(|r| {
                if !r.overlaps(c) {
                    return vec![r];
                }
                let mut pieces = Vec::new();
                if r.start < c.start {
                    pieces.push(PortRange {
                        start: r.start,
                        end: c.start - 1,
                    });
                }
                if r.end > c.end {
                    pieces.push(PortRange {
                        start: c.end + 1,
                        end: r.end,
                    });
                }
                pieces
            })
            .collect();
    }
    out
}

/// Renders a node's intent for both families.
///
/// # Guarantees
///
/// * Pure and deterministic: the same input gives byte-identical output.
/// * First-match equivalence: for every packet the first matching rendered rule belongs to the
///   entry that [`NodeIntent::first_match`] picks, except for failsafe ports, loopback and
///   replies to connections the node opened, which are always returned to the rest of `INPUT`.
/// * Rules without a source go to both families; IPv4 sources only to IPv4, IPv6 only to IPv6.
/// * Every policy rule carries a comment naming its policy and entry.
/// * The forward path decides a DNAT'ed connection to one of `node_addresses` exactly as
///   `INPUT` decides a packet to the same (original) port; connections not DNAT'ed or to other
///   addresses are returned untouched. Loopback addresses are ignored.
pub fn render(intent: &NodeIntent, failsafe: &Failsafe, node_addresses: &[IpAddr]) -> Rendered {
    let mut conflicts: Vec<Conflict> = Vec::new();
    // (family, protocol) -> leaf start -> rules in first-match order
    let mut leaves: Leaves<'_> = BTreeMap::new();
    let cut_tcp: Vec<PortRange> = failsafe.ranges(Protocol::Tcp).collect();
    let cut_udp: Vec<PortRange> = failsafe.ranges(Protocol::Udp).collect();
    for rule in &intent.rules {
        let cut = match rule.protocol {
            Protocol::Tcp => &cut_tcp,
            Protocol::Udp => &cut_udp,
        };
        let ranges = subtract(rule.ports, cut);
        if let Some(c) = failsafe_conflict(rule, &ranges, failsafe)
            && !conflicts.contains(&c)
        {
            conflicts.push(c);
        }
        if ranges.is_empty() {
            continue;
        }
        for family in Family::ALL {
            if rule.source.is_some_and(|n| !family.holds(&n)) {
                continue;
            }
            add_to_leaves(
                leaves.entry((family, rule.protocol)).or_default(),
                rule,
                &ranges,
            );
        }
    }
    Rendered {
        v4: family_chains(Family::Ipv4, &leaves, failsafe, node_addresses),
        v6: family_chains(Family::Ipv6, &leaves, failsafe, node_addresses),
        conflicts,
    }
}

/// The conflict of a blocking `rule` whose ports lost failsafe ports to the cut (`ranges` is
/// what is left of them); `None` when it is open or nothing was cut.
fn failsafe_conflict(rule: &Rule, ranges: &[PortRange], failsafe: &Failsafe) -> Option<Conflict> {
    if rule.state == State::Open || ranges == [rule.ports] {
        return None;
    }
    let overlapped: Vec<FailsafePort> = failsafe
        .ports()
        .iter()
        .filter(|f| f.protocol == rule.protocol && f.ports.overlaps(&rule.ports))
        .copied()
        .collect();
    Some(Conflict {
        policy: rule.policy.clone(),
        entry: rule.entry,
        protocol: rule.protocol,
        ports: rule.ports,
        state: rule.state,
        source: rule.source,
        failsafe: overlapped,
    })
}

/// Adds `rule` (its failsafe-cut `ranges`, in order) to the leaves of its family and protocol
/// (`buckets`: leaf start -> rules), split at leaf boundaries.
fn add_to_leaves<'a>(
    buckets: &mut BTreeMap<u32, Vec<LeafRule<'a>>>,
    rule: &'a Rule,
    ranges: &[PortRange],
) {
    let first = u32::from(ranges[0].start) / LEAF_PORTS;
    let last = u32::from(ranges[ranges.len() - 1].end) / LEAF_PORTS;
    for b in first..=last {
        let lo = b * LEAF_PORTS;
        let hi = lo + LEAF_PORTS - 1;
        let clipped: Vec<PortRange> = ranges
            .iter()
            .filter(|r| u32::from(r.start) <= hi && u32::from(r.end) >= lo)
            .map(|r| PortRange {
                start: r.start.max(lo as u16),
                end: r.end.min(hi as u16),
            })
            .collect();
        if clipped.is_empty() {
            continue;
        }
        let list = buckets.entry(lo).or_default();
        let next = LeafRule {
            rule,
            ranges: clipped,
        };
        // Adjacent rules of one entry with the same source and action (an entry of several
        // port ranges) merge into one multiport rule: first-match order is unchanged because
        // nothing sits between them, and the rule count (restore time, per-packet walk) drops
        // up to 15x.
        if let Some(prev) = list.last_mut()
            && prev.same_action(&next)
            && slots(&prev.ranges) + slots(&next.ranges) <= MULTIPORT_SLOTS
        {
            prev.ranges.extend(next.ranges);
            continue;
        }
        list.push(next);
    }
}

/// Family `f`'s chains: the input path (after the failsafe head), then the forward path with
/// its head (`FORWARD_CHAIN`) before its port dispatch, and both jumps.
fn family_chains(
    f: Family,
    leaves: &Leaves<'_>,
    failsafe: &Failsafe,
    node_addresses: &[IpAddr],
) -> Desired {
    let mut chains = path_chains(Path::Input, f, leaves, head_rules(failsafe));
    let forward_head = forward_head(f, node_addresses);
    chains.extend(path_chains(Path::Forward, f, leaves, Vec::new()));
    chains.insert(
        chains
            .iter()
            .position(|(n, _)| n == FORWARD_PORTS_CHAIN)
            .unwrap_or(chains.len()),
        (FORWARD_CHAIN.to_string(), forward_head),
    );
    Desired {
        family: f,
        chains,
        jump: Some(jump_spec(Path::Input)),
        forward_jump: Some(jump_spec(Path::Forward)),
    }
}

/// Leaf rules in first-match order, per (family, protocol) and leaf start.
type Leaves<'a> = BTreeMap<(Family, Protocol), BTreeMap<u32, Vec<LeafRule<'a>>>>;

/// The chains of one path in one family: its port dispatch (after `head`), first-level
/// buckets and leaves, dispatch chain first.
fn path_chains(
    path: Path,
    f: Family,
    leaves: &Leaves<'_>,
    mut root: Vec<String>,
) -> Vec<(String, Vec<String>)> {
    let mut chains: Vec<(String, Vec<String>)> = Vec::new();
    for protocol in [Protocol::Tcp, Protocol::Udp] {
        let Some(buckets) = leaves.get(&(f, protocol)) else {
            continue;
        };
        let mut level1: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        let mut leaf_chains = Vec::new();
        for (&lo, rules) in buckets {
            let l1 = lo / LEVEL1_PORTS * LEVEL1_PORTS;
            let leaf = chains::leaf_chain(path, protocol, lo);
            level1.entry(l1).or_default().push(format!(
                "{} -j {leaf}",
                dispatch_match(path, protocol, lo, lo + LEAF_PORTS - 1)
            ));
            let specs: Vec<String> = match path {
                Path::Input => rules.iter().map(|r| leaf_rule(f, r)).collect(),
                Path::Forward => rules
                    .iter()
                    .flat_map(|r| forward_leaf_rules(f, r))
                    .collect(),
            };
            leaf_chains.push((l1, leaf, specs));
        }
        for (l1, jumps) in level1 {
            let name = chains::level1_chain(path, protocol, l1);
            root.push(format!(
                "{} -j {name}",
                dispatch_match(path, protocol, l1, l1 + LEVEL1_PORTS - 1)
            ));
            chains.push((name, jumps));
            chains.extend(
                leaf_chains
                    .iter()
                    .filter(|(l, _, _)| *l == l1)
                    .map(|(_, n, s)| (n.clone(), s.clone())),
            );
        }
    }
    let dispatch = match path {
        Path::Input => INPUT_CHAIN,
        Path::Forward => FORWARD_PORTS_CHAIN,
    };
    chains.insert(0, (dispatch.to_string(), root));
    chains
}

/// The match of a dispatch rule to the bucket `lo..=hi`: the header's port on `INPUT`, the
/// connection's original port on the forward path.
fn dispatch_match(path: Path, protocol: Protocol, lo: u32, hi: u32) -> String {
    match path {
        Path::Input => format!("-p {p} -m {p} --dport {lo}:{hi}", p = protocol.as_str()),
        Path::Forward => format!(
            "-p {} -m conntrack --ctorigdstport {lo}:{hi}",
            protocol.as_str()
        ),
    }
}

/// `PORTWARDEN-FORWARD`: replies and connections no DNAT rewrote go back to `FORWARD`; a
/// connection whose original destination is one of the node's addresses of this family goes
/// on to the port dispatch.
fn forward_head(f: Family, node_addresses: &[IpAddr]) -> Vec<String> {
    let mut v = vec![
        format!(
            "-m conntrack --ctdir REPLY -m comment --comment {} -j RETURN",
            quote(chains::REPLIES_COMMENT)
        ),
        format!(
            "-m conntrack ! --ctstate DNAT -m comment --comment {} -j RETURN",
            quote(chains::NOT_DNAT_COMMENT)
        ),
    ];
    let mut own: Vec<IpAddr> = node_addresses
        .iter()
        .copied()
        .filter(|a| a.is_ipv4() == (f == Family::Ipv4) && !a.is_loopback() && !a.is_unspecified())
        .collect();
    own.sort();
    own.dedup();
    v.extend(own.iter().map(|a| {
        format!(
            "-m conntrack --ctorigdst {a} -m comment --comment {} -j {FORWARD_PORTS_CHAIN}",
            quote(chains::NODE_ADDRESS_COMMENT)
        )
    }));
    v
}

/// The specification of the jump of `path` (from `INPUT` or `FORWARD`).
pub fn jump_spec(path: Path) -> String {
    format!(
        "-m comment --comment {} -j {}",
        quote(path.jump_comment()),
        path.root()
    )
}

/// The fixed head of `PORTWARDEN-INPUT`: loopback, replies, failsafe.
fn head_rules(failsafe: &Failsafe) -> Vec<String> {
    let mut v = vec![
        format!(
            "-i lo -m comment --comment {} -j RETURN",
            quote(chains::LOOPBACK_COMMENT)
        ),
        format!(
            "-m conntrack --ctdir REPLY -m comment --comment {} -j RETURN",
            quote(chains::REPLIES_COMMENT)
        ),
    ];
    for protocol in [Protocol::Tcp, Protocol::Udp] {
        let ranges: Vec<PortRange> = failsafe.ranges(protocol).collect();
        let mut chunk: Vec<PortRange> = Vec::new();
        let mut flush = |chunk: &mut Vec<PortRange>| {
            if !chunk.is_empty() {
                v.push(format!(
                    "-p {} {} -m comment --comment {} -j RETURN",
                    protocol.as_str(),
                    port_match(protocol, chunk),
                    quote(chains::FAILSAFE_COMMENT)
                ));
                chunk.clear();
            }
        };
        for r in ranges {
            if slots(&chunk) + slots(&[r]) > MULTIPORT_SLOTS {
                flush(&mut chunk);
            }
            chunk.push(r);
        }
        flush(&mut chunk);
    }
    v
}

/// `-m tcp --dport 80`, `-m tcp --dport 8000:8100` or `-m multiport --dports 80,443,8000:8100`.
fn port_match(protocol: Protocol, ranges: &[PortRange]) -> String {
    match ranges {
        [r] => format!(
            "-m {p} --dport {}",
            iptables_ports(r),
            p = protocol.as_str()
        ),
        _ => {
            let list: Vec<String> = ranges.iter().map(iptables_ports).collect();
            format!("-m multiport --dports {}", list.join(","))
        }
    }
}

/// `80` or `8000:8100`: a port range as iptables writes it.
fn iptables_ports(r: &PortRange) -> String {
    if r.start == r.end {
        r.start.to_string()
    } else {
        format!("{}:{}", r.start, r.end)
    }
}

/// The iptables target for a state.
pub fn target(family: Family, protocol: Protocol, state: State) -> &'static str {
    match (state, protocol, family) {
        (State::Open, _, _) => "ACCEPT",
        (State::Closed, Protocol::Tcp, _) => "REJECT --reject-with tcp-reset",
        (State::Closed, Protocol::Udp, Family::Ipv4) => {
            "REJECT --reject-with icmp-port-unreachable"
        }
        (State::Closed, Protocol::Udp, Family::Ipv6) => {
            "REJECT --reject-with icmp6-port-unreachable"
        }
        (State::Filtered, _, _) => "DROP",
    }
}

fn leaf_rule(family: Family, r: &LeafRule<'_>) -> String {
    leaf_spec(family, r, &port_match(r.rule.protocol, &r.ranges))
}

/// The forward path's rules for one leaf rule: one per range of original ports (conntrack's
/// match takes one range), contiguous ranges joined.
fn forward_leaf_rules(family: Family, r: &LeafRule<'_>) -> Vec<String> {
    let mut ranges = r.ranges.clone();
    ranges.sort_by_key(|p| p.start);
    let mut joined: Vec<PortRange> = Vec::with_capacity(ranges.len());
    for p in ranges {
        match joined.last_mut() {
            Some(last) if u32::from(p.start) <= u32::from(last.end) + 1 => {
                last.end = last.end.max(p.end);
            }
            _ => joined.push(p),
        }
    }
    joined
        .iter()
        .map(|p| {
            let ports = iptables_ports(p);
            leaf_spec(family, r, &format!("-m conntrack --ctorigdstport {ports}"))
        })
        .collect()
}

/// `[-s SOURCE] -p PROTO <ports> [-m time --datestop YYYY-MM-DDTHH:MM:SS] -m comment --comment
/// "..." -j TARGET`: the order `iptables-save` prints the matches in (checked on both backends
/// and families by the lab tests).
fn leaf_spec(family: Family, r: &LeafRule<'_>, ports: &str) -> String {
    let rule = r.rule;
    let mut s = String::with_capacity(128);
    if let Some(net) = rule.source.map(|n| n.trunc())
        && net.prefix_len() > 0
    {
        s.push_str("-s ");
        s.push_str(&net.to_string());
        s.push(' ');
    }
    s.push_str("-p ");
    s.push_str(rule.protocol.as_str());
    s.push(' ');
    s.push_str(ports);
    if let Some(t) = rule.expires {
        // Stops matching at the instant, with no process running (see portwarden_policy::expiry).
        s.push_str(" -m time --datestop ");
        s.push_str(&t.datestop());
    }
    s.push_str(" -m comment --comment ");
    s.push_str(&quote(&chains::entry_comment(
        &rule.policy,
        rule.entry,
        rule.state.as_str(),
    )));
    s.push_str(" -j ");
    s.push_str(target(family, rule.protocol, rule.state));
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn rule(
        policy: &str,
        entry: usize,
        proto: Protocol,
        ports: (u16, u16),
        source: Option<&str>,
        state: State,
    ) -> Rule {
        Rule {
            priority: 100,
            policy: policy.into(),
            entry,
            protocol: proto,
            ports: PortRange {
                start: ports.0,
                end: ports.1,
            },
            source: source.map(|s| s.parse().unwrap()),
            state,
            expires: None,
        }
    }

    fn intent(rules: Vec<Rule>) -> NodeIntent {
        NodeIntent {
            policies: vec![],
            rules,
            report_unlisted: false,
        }
    }

    fn chain<'a>(d: &'a Desired, name: &str) -> &'a [String] {
        &d.chains.iter().find(|(n, _)| n == name).unwrap().1
    }

    #[test]
    fn seed_story_renders_the_article_rules() {
        let i = intent(vec![
            rule(
                "quarantine",
                1,
                Protocol::Tcp,
                (80, 80),
                Some("172.16.7.80/32"),
                State::Closed,
            ),
            rule(
                "quarantine",
                0,
                Protocol::Tcp,
                (8080, 8080),
                None,
                State::Closed,
            ),
        ]);
        let r = render(&i, &Failsafe::default(), &[]);
        assert!(r.conflicts.is_empty());
        assert_eq!(
            chain(&r.v4, "PORTWARDEN-TCP-0-255"),
            [
                "-s 172.16.7.80/32 -p tcp -m tcp --dport 80 -m comment --comment \"quarantine entry 1: closed\" -j REJECT --reject-with tcp-reset"
            ]
        );
        assert_eq!(
            chain(&r.v4, "PORTWARDEN-TCP-4096"),
            ["-p tcp -m tcp --dport 7936:8191 -j PORTWARDEN-TCP-7936-8191"]
        );
        // the v4-only source stays out of IPv6; the any-source entry goes to both
        assert!(r.v6.chains.iter().all(|(n, _)| n != "PORTWARDEN-TCP-0-255"));
        assert_eq!(chain(&r.v6, "PORTWARDEN-TCP-7936-8191").len(), 1);
        let root = chain(&r.v4, INPUT_CHAIN);
        assert_eq!(
            root,
            [
                "-i lo -m comment --comment \"portwarden: loopback is not governed\" -j RETURN",
                "-m conntrack --ctdir REPLY -m comment --comment \"portwarden: replies to connections this node opened\" -j RETURN",
                "-p tcp -m multiport --dports 22,2379:2380,6443,10250 -m comment --comment \"portwarden failsafe: left to the host rules\" -j RETURN",
                "-p udp -m udp --dport 68 -m comment --comment \"portwarden failsafe: left to the host rules\" -j RETURN",
                "-p tcp -m tcp --dport 0:4095 -j PORTWARDEN-TCP-0",
                "-p tcp -m tcp --dport 4096:8191 -j PORTWARDEN-TCP-4096",
            ]
        );
        assert_eq!(
            r.v4.jump.as_deref(),
            Some(jump_spec(crate::chains::Path::Input).as_str())
        );
    }

    #[test]
    fn targets_per_state_protocol_and_family() {
        let i = intent(vec![
            rule("p", 0, Protocol::Udp, (161, 161), None, State::Closed),
            rule("p", 1, Protocol::Udp, (162, 162), None, State::Filtered),
            rule("p", 2, Protocol::Tcp, (443, 443), None, State::Open),
        ]);
        let r = render(&i, &Failsafe::none(), &[]);
        let v4 = chain(&r.v4, "PORTWARDEN-UDP-0-255");
        let v6 = chain(&r.v6, "PORTWARDEN-UDP-0-255");
        assert!(v4[0].ends_with("-j REJECT --reject-with icmp-port-unreachable"));
        assert!(v6[0].ends_with("-j REJECT --reject-with icmp6-port-unreachable"));
        assert!(v4[1].ends_with("-j DROP"));
        assert!(chain(&r.v4, "PORTWARDEN-TCP-256-511")[0].ends_with("-j ACCEPT"));
        // no failsafe: no failsafe rule in the head
        assert_eq!(chain(&r.v4, INPUT_CHAIN).len(), 2 + 2);
    }

    #[test]
    fn blocking_a_failsafe_port_is_a_conflict_and_is_cut_out() {
        let i = intent(vec![rule(
            "lockdown",
            0,
            Protocol::Tcp,
            (1, 65535),
            None,
            State::Filtered,
        )]);
        let r = render(&i, &Failsafe::default(), &[]);
        assert_eq!(r.conflicts.len(), 1);
        let c = &r.conflicts[0];
        assert_eq!((&*c.policy, c.entry, c.failsafe.len()), ("lockdown", 0, 4));
        assert!(c.to_string().contains("tcp:22"), "{c}");
        let low = chain(&r.v4, "PORTWARDEN-TCP-0-255");
        assert_eq!(
            low,
            [
                "-p tcp -m multiport --dports 1:21,23:255 -m comment --comment \"lockdown entry 0: filtered\" -j DROP"
            ]
        );
        // the forward path cuts the failsafe port out the same way, one range per rule
        assert_eq!(
            chain(&r.v4, "PORTWARDEN-FTCP-0-255"),
            [
                "-p tcp -m conntrack --ctorigdstport 1:21 -m comment --comment \"lockdown entry 0: filtered\" -j DROP",
                "-p tcp -m conntrack --ctorigdstport 23:255 -m comment --comment \"lockdown entry 0: filtered\" -j DROP",
            ]
        );
        // every leaf of the range exists on both paths, none of them mentions port 22
        for prefix in ["PORTWARDEN-TCP-", "PORTWARDEN-FTCP-"] {
            let leaves =
                r.v4.chains
                    .iter()
                    .filter(|(n, _)| n.starts_with(prefix) && n.matches('-').count() == 3)
                    .count();
            assert_eq!(leaves, 256, "{prefix}");
        }
        // an open entry on a failsafe port is no conflict
        let i = intent(vec![rule(
            "ssh",
            0,
            Protocol::Tcp,
            (22, 22),
            None,
            State::Open,
        )]);
        let r = render(&i, &Failsafe::default(), &[]);
        assert!(r.conflicts.is_empty());
        let names: Vec<&str> = r.v4.chains.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, [INPUT_CHAIN, FORWARD_CHAIN, FORWARD_PORTS_CHAIN]);
    }

    #[test]
    fn adjacent_rules_of_one_entry_merge_and_order_is_kept() {
        let i = intent(vec![
            rule("web", 0, Protocol::Tcp, (80, 80), None, State::Open),
            rule("web", 0, Protocol::Tcp, (81, 81), None, State::Open),
            rule(
                "web",
                1,
                Protocol::Tcp,
                (1, 255),
                Some("10.0.0.0/8"),
                State::Filtered,
            ),
            rule("web", 0, Protocol::Tcp, (90, 90), None, State::Open),
        ]);
        let r = render(&i, &Failsafe::none(), &[]);
        let leaf = chain(&r.v4, "PORTWARDEN-TCP-0-255");
        assert_eq!(leaf.len(), 3);
        assert!(leaf[0].contains("--dports 80,81 "), "{}", leaf[0]);
        assert!(leaf[1].starts_with("-s 10.0.0.0/8 -p tcp -m tcp --dport 1:255 "));
        assert!(leaf[2].contains("--dport 90 "));
        // without the IPv4-only rule between them, IPv6 merges all three ports
        let v6 = chain(&r.v6, "PORTWARDEN-TCP-0-255");
        assert_eq!(v6.len(), 1);
        assert!(v6[0].contains("--dports 80,81,90 "), "{}", v6[0]);
    }

    #[test]
    fn adjacent_entries_with_the_same_action_stay_apart() {
        // Two entries of one policy, same source and state, adjacent in first-match order:
        // one rule each, so each rule's counters are one entry's.
        let i = intent(vec![
            rule("web", 0, Protocol::Tcp, (80, 80), None, State::Open),
            rule("web", 1, Protocol::Tcp, (81, 81), None, State::Open),
            rule("web", 1, Protocol::Tcp, (82, 82), None, State::Open),
        ]);
        let r = render(&i, &Failsafe::none(), &["10.0.0.1".parse().unwrap()]);
        assert_eq!(
            chain(&r.v4, "PORTWARDEN-TCP-0-255"),
            [
                "-p tcp -m tcp --dport 80 -m comment --comment \"web entry 0: open\" -j ACCEPT",
                "-p tcp -m multiport --dports 81,82 -m comment --comment \"web entry 1: open\" -j ACCEPT",
            ]
        );
        assert_eq!(
            chain(&r.v4, "PORTWARDEN-FTCP-0-255"),
            [
                "-p tcp -m conntrack --ctorigdstport 80 -m comment --comment \"web entry 0: open\" -j ACCEPT",
                "-p tcp -m conntrack --ctorigdstport 81:82 -m comment --comment \"web entry 1: open\" -j ACCEPT",
            ]
        );
        for (_, rules) in r.v4.chains.iter().chain(&r.v6.chains) {
            for spec in rules {
                assert!(!spec.contains(" entries "), "{spec}");
            }
        }
    }

    #[test]
    fn ranges_are_clipped_to_buckets_and_sources_normalised() {
        let i = intent(vec![
            rule(
                "w",
                0,
                Protocol::Tcp,
                (250, 260),
                Some("10.1.2.3/8"),
                State::Closed,
            ),
            rule(
                "w",
                1,
                Protocol::Tcp,
                (65535, 65535),
                Some("0.0.0.0/0"),
                State::Closed,
            ),
            rule(
                "w",
                2,
                Protocol::Tcp,
                (1000, 1000),
                Some("fd00::1/64"),
                State::Closed,
            ),
        ]);
        let r = render(&i, &Failsafe::none(), &[]);
        assert!(
            chain(&r.v4, "PORTWARDEN-TCP-0-255")[0]
                .starts_with("-s 10.0.0.0/8 -p tcp -m tcp --dport 250:255 ")
        );
        assert!(chain(&r.v4, "PORTWARDEN-TCP-256-511")[0].contains("--dport 256:260 "));
        assert!(
            chain(&r.v4, "PORTWARDEN-TCP-65280-65535")[0]
                .starts_with("-p tcp -m tcp --dport 65535 ")
        );
        assert!(chain(&r.v6, "PORTWARDEN-TCP-768-1023")[0].starts_with("-s fd00::/64 -p tcp"));
        assert!(
            r.v6.chains
                .iter()
                .all(|(n, _)| n != "PORTWARDEN-TCP-65280-65535")
        );
    }

    /// A tiny model of iptables evaluating the rendered chains for one incoming packet that is
    /// not on loopback and not a reply: the verdict as a state, or `None` when portwarden
    /// returns the packet to the rest of INPUT.
    fn evaluate(
        d: &Desired,
        protocol: Protocol,
        port: u16,
        source: std::net::IpAddr,
        now: i64,
    ) -> Option<State> {
        walk(d, INPUT_CHAIN, protocol, port, source, None, now, 0).flatten()
    }

    /// As [`evaluate`] for a forwarded packet of a connection a DNAT rewrote (`dnat`) from
    /// `dest:port`, or one no DNAT touched.
    fn evaluate_forward(
        d: &Desired,
        protocol: Protocol,
        port: u16,
        source: std::net::IpAddr,
        dest: std::net::IpAddr,
        dnat: bool,
        now: i64,
    ) -> Option<State> {
        walk(
            d,
            FORWARD_CHAIN,
            protocol,
            port,
            source,
            Some((dest, dnat)),
            now,
            0,
        )
        .flatten()
    }

    // The packet's fields and the clock, spelled out: a test model, read beside iptables.
    #[allow(clippy::too_many_arguments)]
    fn walk(
        d: &Desired,
        chain: &str,
        protocol: Protocol,
        port: u16,
        source: std::net::IpAddr,
        forwarded: Option<(std::net::IpAddr, bool)>,
        now: i64,
        depth: u8,
    ) -> Option<Option<State>> {
        assert!(depth < 5, "chain nesting too deep");
        let rules = &d
            .chains
            .iter()
            .find(|(n, _)| n == chain)
            .expect("jump to a missing chain")
            .1;
        let in_ports = |list: &str| {
            list.split(',').any(|r| {
                let (a, b) = r.split_once(':').unwrap_or((r, r));
                (a.parse::<u16>().unwrap()..=b.parse::<u16>().unwrap()).contains(&port)
            })
        };
        'rule: for spec in rules {
            let t = crate::save::tokens(spec);
            let mut target = None;
            let mut negate = false;
            let mut i = 0;
            while i < t.len() {
                let next = t.get(i + 1).map(String::as_str).unwrap_or("");
                let ok = match t[i].as_str() {
                    "!" => {
                        negate = true;
                        i += 1;
                        continue;
                    }
                    "-i" => next != "lo",
                    "--ctdir" => next != "REPLY",
                    "-p" => next == protocol.as_str(),
                    "-s" => next.parse::<IpNet>().unwrap().contains(&source),
                    "--dport" | "--dports" => {
                        assert!(
                            forwarded.is_none(),
                            "a header port match on the forward path"
                        );
                        in_ports(next)
                    }
                    "--ctorigdstport" => {
                        assert!(forwarded.is_some(), "a conntrack port match on INPUT");
                        in_ports(next)
                    }
                    "--ctstate" => {
                        assert_eq!(next, "DNAT");
                        forwarded.is_some_and(|(_, dnat)| dnat)
                    }
                    // the kernel's time match: on or before the last second
                    "--datestop" => {
                        let stop = portwarden_policy::Timestamp::parse_rfc3339(&format!("{next}Z"))
                            .unwrap();
                        now <= stop.unix()
                    }
                    "--ctorigdst" => forwarded
                        .is_some_and(|(dest, _)| dest == next.parse::<std::net::IpAddr>().unwrap()),
                    "-j" => {
                        target = Some(next.to_string());
                        true
                    }
                    _ => true,
                };
                if ok == negate {
                    continue 'rule;
                }
                negate = false;
                i += 1;
            }
            match target.as_deref() {
                Some("RETURN") => return Some(None),
                Some("ACCEPT") => return Some(Some(State::Open)),
                Some("DROP") => return Some(Some(State::Filtered)),
                Some("REJECT") => return Some(Some(State::Closed)),
                Some(c) => {
                    if let Some(v) = walk(d, c, protocol, port, source, forwarded, now, depth + 1) {
                        return Some(v);
                    }
                }
                None => {}
            }
        }
        None
    }

    const NODE_ADDRESSES: [&str; 3] = ["10.213.0.11", "fd00:213::11", "127.0.0.1"];

    const SOURCES: [&str; 6] = [
        "10.0.0.0/8",
        "10.1.2.3/32",
        "192.168.0.0/16",
        "fd00::/8",
        "fd00::1/128",
        "0.0.0.0/0",
    ];
    const PACKETS: [&str; 5] = ["10.1.2.3", "10.9.9.9", "192.168.1.1", "fd00::1", "2001::1"];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]
        /// The rendered chains decide every packet as the policy model's first match does, at
        /// every instant: an expiring rule stops matching at its expiry and the next decides.
        #[test]
        fn rendered_chains_decide_like_the_model(
            raw in proptest::collection::vec((0u8..2, 1u16..1200, 0u16..700, 0u8..3, proptest::option::of(0usize..SOURCES.len())), 1..40),
            expiries in proptest::collection::vec(proptest::option::of(1_000_000_100i64..1_000_000_104), 40),
            now in 1_000_000_098i64..1_000_000_106,
            packets in proptest::collection::vec((0u8..2, 1u16..2000, 0usize..PACKETS.len()), 60),
        ) {
            // Rules compiled before any expiry, some expiring; the chains are walked at `now`,
            // as the kernel's time match does: the first rule not yet expired then decides.
            let mut rules: Vec<Rule> = raw.iter().enumerate().map(|(i, &(p, start, width, st, src))| {
                let protocol = if p == 0 { Protocol::Tcp } else { Protocol::Udp };
                let state = [State::Open, State::Closed, State::Filtered][st as usize];
                let end = start.saturating_add(width);
                let mut r = rule(&format!("p{}", i % 3), i, protocol, (start, end), src.map(|s| SOURCES[s]), state);
                r.expires = expiries[i].map(portwarden_policy::Timestamp::from_unix);
                r
            }).collect();
            let live = |r: &&Rule| r.expires.is_none_or(|t| !t.expired_at(portwarden_policy::Timestamp::from_unix(now)));
            rules.sort_by(|a, b| a.precedence().cmp(&b.precedence()));
            let i = intent(rules);
            let failsafe: Failsafe = "tcp:22,tcp:1000-1010,udp:68".parse().unwrap();
            let r = render(&i, &failsafe, &NODE_ADDRESSES.map(|a| a.parse().unwrap()));
            for (p, port, src) in packets {
                let protocol = if p == 0 { Protocol::Tcp } else { Protocol::Udp };
                let source: std::net::IpAddr = PACKETS[src].parse().unwrap();
                let family = if source.is_ipv4() { &r.v4 } else { &r.v6 };
                let fs = failsafe.ranges(protocol).any(|f| f.contains(port));
                let first = i.rules.iter().filter(live).find(|r| r.matches(protocol, port, source));
                let want = if fs { None } else { first.map(|r| r.state) };
                proptest::prop_assert_eq!(evaluate(family, protocol, port, source, now), want, "{} {}/{} from {}", family.family, port, protocol, source);
                // Forwarded after a DNAT of a node address: the same verdict; of another
                // address, or not DNAT'ed at all: untouched.
                let (node, other) = if source.is_ipv4() { ("10.213.0.11", "10.96.0.10") } else { ("fd00:213::11", "fd00:96::10") };
                let (node, other) = (node.parse().unwrap(), other.parse().unwrap());
                proptest::prop_assert_eq!(evaluate_forward(family, protocol, port, source, node, true, now), want, "forwarded {}/{} from {}", port, protocol, source);
                proptest::prop_assert_eq!(evaluate_forward(family, protocol, port, source, other, true, now), None);
                proptest::prop_assert_eq!(evaluate_forward(family, protocol, port, source, node, false, now), None);
            }
        }
    }

    #[test]
    fn forward_path_selects_dnat_to_node_addresses_by_original_port() {
        let i = intent(vec![
            rule("web", 0, Protocol::Tcp, (8080, 8080), None, State::Filtered),
            rule("web", 0, Protocol::Tcp, (8081, 8081), None, State::Filtered),
            rule("web", 1, Protocol::Udp, (53, 53), None, State::Closed),
        ]);
        let addresses: Vec<IpAddr> = ["10.213.0.11", "127.0.0.1", "fd00:213::11", "172.17.0.1"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let r = render(&i, &Failsafe::none(), &addresses);
        let head = |d: &Desired| chain(d, FORWARD_CHAIN).to_vec();
        let comment = "-m comment --comment \"portwarden: to a node address\" -j PORTWARDEN-FPORTS";
        assert_eq!(
            head(&r.v4),
            [
                "-m conntrack --ctdir REPLY -m comment --comment \"portwarden: replies to connections this node opened\" -j RETURN".to_string(),
                "-m conntrack ! --ctstate DNAT -m comment --comment \"portwarden: not forwarded from a node port\" -j RETURN".into(),
                format!("-m conntrack --ctorigdst 10.213.0.11 {comment}"),
                format!("-m conntrack --ctorigdst 172.17.0.1 {comment}"),
            ]
        );
        assert_eq!(
            head(&r.v6)[2..],
            [format!("-m conntrack --ctorigdst fd00:213::11 {comment}")]
        );
        assert_eq!(
            chain(&r.v4, FORWARD_PORTS_CHAIN),
            [
                "-p tcp -m conntrack --ctorigdstport 4096:8191 -j PORTWARDEN-FTCP-4096",
                "-p udp -m conntrack --ctorigdstport 0:4095 -j PORTWARDEN-FUDP-0",
            ]
        );
        // adjacent ports of one rule become one range
        assert_eq!(
            chain(&r.v4, "PORTWARDEN-FTCP-7936-8191"),
            [
                "-p tcp -m conntrack --ctorigdstport 8080:8081 -m comment --comment \"web entry 0: filtered\" -j DROP"
            ]
        );
        assert_eq!(
            chain(&r.v6, "PORTWARDEN-FUDP-0-255"),
            [
                "-p udp -m conntrack --ctorigdstport 53 -m comment --comment \"web entry 1: closed\" -j REJECT --reject-with icmp6-port-unreachable"
            ]
        );
        assert_eq!(
            r.v4.forward_jump.as_deref(),
            Some(jump_spec(Path::Forward).as_str())
        );
    }

    #[test]
    fn expiring_rules_carry_the_time_match_and_never_merge_across_expiries() {
        let at = |t: &str| Some(portwarden_policy::Timestamp::parse_rfc3339(t).unwrap());
        let mut rules = vec![
            rule("q", 0, Protocol::Tcp, (8080, 8080), None, State::Filtered),
            rule("q", 1, Protocol::Tcp, (8081, 8081), None, State::Filtered),
            rule("q", 2, Protocol::Tcp, (8082, 8082), None, State::Filtered),
            rule("q", 3, Protocol::Tcp, (8083, 8083), None, State::Filtered),
            rule("q", 4, Protocol::Tcp, (8080, 8080), None, State::Closed),
        ];
        rules[0].expires = at("2026-12-24T18:00:00Z");
        rules[1].expires = at("2026-12-24T19:00:00+01:00");
        rules[2].expires = at("2026-12-24T18:30:00Z");
        let mut forwarding = rules.clone();
        let r = render(
            &intent(rules),
            &Failsafe::none(),
            &["10.0.0.1".parse().unwrap()],
        );
        let comment = |e: &str| format!("-m comment --comment \"q {e}: filtered\" -j DROP");
        let stop = "-m time --datestop 2026-12-24T17:59:59";
        for d in [&r.v4, &r.v6] {
            assert_eq!(
                chain(d, "PORTWARDEN-TCP-7936-8191"),
                [
                    format!("-p tcp -m tcp --dport 8080 {stop} {}", comment("entry 0")),
                    format!("-p tcp -m tcp --dport 8081 {stop} {}", comment("entry 1")),
                    format!(
                        "-p tcp -m tcp --dport 8082 -m time --datestop 2026-12-24T18:29:59 {}",
                        comment("entry 2")
                    ),
                    format!("-p tcp -m tcp --dport 8083 {}", comment("entry 3")),
                    "-p tcp -m tcp --dport 8080 -m comment --comment \"q entry 4: closed\" -j REJECT --reject-with tcp-reset".into(),
                ]
            );
        }
        // one entry per rule on the forward path too: adjacent ports of two entries stay apart
        assert_eq!(
            chain(&r.v4, "PORTWARDEN-FTCP-7936-8191")[..2],
            [
                format!(
                    "-p tcp -m conntrack --ctorigdstport 8080 {stop} {}",
                    comment("entry 0")
                ),
                format!(
                    "-p tcp -m conntrack --ctorigdstport 8081 {stop} {}",
                    comment("entry 1")
                ),
            ]
        );
        // an expiring entry that blocks a failsafe port is the same conflict as a permanent one
        forwarding.truncate(1);
        forwarding[0].ports = PortRange { start: 1, end: 100 };
        let expiring = render(&intent(forwarding.clone()), &Failsafe::default(), &[]);
        forwarding[0].expires = None;
        let permanent = render(&intent(forwarding), &Failsafe::default(), &[]);
        assert_eq!(expiring.conflicts.len(), 1);
        assert_eq!(expiring.conflicts, permanent.conflicts);
        assert!(
            chain(&expiring.v4, "PORTWARDEN-TCP-0-255")[0]
                .starts_with("-p tcp -m multiport --dports 1:21,23:100 -m time --datestop ")
        );
    }

    #[test]
    fn subtract_ranges() {
        let p = |start, end| PortRange { start, end };
        assert_eq!(
            subtract(p(1, 100), &[p(22, 22), p(50, 60)]),
            [p(1, 21), p(23, 49), p(61, 100)]
        );
        assert_eq!(subtract(p(22, 22), &[p(22, 22)]), []);
        assert_eq!(subtract(p(1, 5), &[p(10, 20)]), [p(1, 5)]);
    }
}
