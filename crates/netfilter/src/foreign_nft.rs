//! The other owners of a node's packet path: native nftables tables that are not iptables-nft's
//! (firewalld's `inet firewalld`, Docker's and kube-proxy's nftables modes, `ip kube-proxy`,
//! hand-written `nft -f` tables), and what each of their base chains decides for a new
//! connection to a port. Read-only: nothing here writes, and portwarden never modifies another
//! table.
//!
//! # Why it matters
//!
//! Every table registers its own base chains on the netfilter hooks, and the kernel runs all of
//! them in priority order. An `accept` ends only the base chain that says it; a `drop` (or
//! `reject`) in *any* of them is final. So a port portwarden opens in `PORTWARDEN-INPUT` is still
//! closed by firewalld's `filter_INPUT` (priority `filter + 10`, after iptables' `INPUT` at
//! `filter`) rejecting it, and a drop at an earlier priority (or an earlier hook: netdev
//! `ingress`, `prerouting`) decides before portwarden's rules are even reached.
//!
//! # Pipeline
//!
//! 1. [`ForeignTables::parse`] reads `nft -j list ruleset` (or `nft -j list table ...`) output
//!    and keeps the tables that are not iptables-nft's ([`is_iptables_table`]), their sets,
//!    maps, chains and rules, and their base chains at the hooks a packet to this host passes:
//!    netdev/inet `ingress`, `prerouting`, `input`, and `forward` (families `ip`, `ip6`, `inet`,
//!    `netdev`), with priority ([`BaseChain::priority`], and nft's own spelling
//!    [`priority_name`]: `filter + 10`, `dstnat - 10`, `-110`) and policy.
//! 2. [`ForeignTables::decide`] / [`ForeignTables::decide_at`] walk each base chain for a NEW
//!    [`Packet`] (family, protocol, port, optional source and destination) and return one
//!    [`ForeignDecision`] per base chain. [`ForeignDecision::effect`] and
//!    [`ForeignDecision::describe`] say what that means beside portwarden's own verdict.
//! 3. [`findings`] does this for every managed port range of a node's intent (pure), grouping
//!    ports that the foreign chains treat alike into ranges: what [`crate::Plan::foreign_tables`]
//!    holds.
//! 4. [`read`] is the I/O edge: `nft -j list tables`, then one `nft -j list table` per foreign
//!    table (none when there is none, so a host without other owners pays one cheap call). It
//!    never fails: without `nft` it says "not read: nft missing (apt-get install nftables)".
//!
//! # Evaluation
//!
//! Three-valued: each match of a rule is true, false or unknown for the packet. Understood:
//! `tcp dport`, `udp dport`, `th dport` (values, ranges `1000-2000`, anonymous sets `{ 22, 80 }`,
//! named sets `@name`, `!=`, `<`, `<=`, `>`, `>=`), `meta l4proto`, `ip protocol`,
//! `ip6 nexthdr`, `meta nfproto`, `meta protocol`, `ip saddr`/`ip6 saddr` (addresses, prefixes,
//! ranges, sets; against the packet's source network, unknown when it has none), `ip daddr`/
//! `ip6 daddr` (unknown unless the packet names its destination), `ct state` (a NEW packet:
//! `established,related accept` does not match), `ct status` (a packet to this host that no
//! NAT rewrote has none of `dnat`, `snat`, ...), `ct direction`, `iifname "lo"` (false:
//! loopback is not governed; any other interface is unknown), concatenations (`ip daddr .
//! meta l4proto . th dport`) in sets and verdict maps (`vmap`), `jump`/`goto`/`return` to
//! regular chains of the same table, and the verdicts `accept`, `drop`, `reject` and the chain
//! policy. Statements that do not decide (`counter`, `log`, `mark` setting, set updates) are
//! passed. Everything else — `fib`, `limit`, `meter`, `socket`, marks, xt extensions, `queue`,
//! an unknown expression — is unknown, never skipped: a rule that may match makes its verdict
//! *possible* ([`ForeignDecision::certain`] false), and a rule whose verdict is unknown (a
//! `queue`, `dnat`, a verdict map that cannot be evaluated) reports [`Verdict::Unknown`] or
//! [`Verdict::Nat`].
//!
//! A walk is linear: after the first rule that *may* match, every later outcome is only
//! possible; the chain's result is the first outcome that could matter to portwarden (a drop,
//! reject or unknown verdict), certain only when no other outcome was possible.
//!
//! # Which tables are iptables-nft's
//!
//! iptables-nft writes only the tables `filter`, `nat`, `mangle`, `raw` and `security` of the
//! families `ip` and `ip6`, with base chains named after the built-in chains (`INPUT`, ...).
//! Those tables are read through `iptables-save` ([`crate::save`]; [`crate::diff`]'s
//! shadowing), so they are left out here ([`is_iptables_table`]). A native table that an
//! administrator named like one of them (`nft add table ip filter`) is rare, and is iptables'
//! table in the kernel's eyes too: iptables-nft adds its chains to it, and a native rule there
//! makes `iptables-save` call the table incompatible, which plan and apply refuse. One case is
//! still seen here: a base chain in such a table whose name is not a built-in chain's (a
//! lowercase `input`) cannot have been written by iptables, so it is treated as foreign. (nft
//! itself tells iptables-nft's tables by their xt expressions — "table ip filter is managed by
//! iptables-nft, do not touch!" — which a table of iptables-nft's holding only natively
//! translated matches does not have, so the name is the better test.)
//!
//! # Why not the `nftables` crate
//!
//! The `nftables` crate (0.6.3) models nftables' JSON schema as typed, untagged enums: any
//! object it does not model fails the whole listing. On real nft 1.0.6 output it fails on
//! kube-proxy's verdict maps keyed by a concatenation (`"type": ["ipv4_addr", "inet_proto",
//! "inet_service"]`, elements `[{"concat": [...]}, {"goto": ...}]`), so one kube-proxy table
//! would hide every other owner. An evaluator must also report what it does not understand
//! rather than refuse it, so this module reads `serde_json::Value`, as [`crate::native`] does.
//!
//! # Caveats
//!
//! * The node's own address is unknown unless the caller gives it ([`Packet::destination`]):
//!   `ip daddr` matches are unknown otherwise (kube-proxy's checks are keyed by destination).
//! * The interface a packet arrives on is unknown (only `lo` is known to be not it).
//! * Named sets are evaluated with the elements listed at the time of reading; sets that
//!   programs update (blocklists, meters) can differ a moment later.
//! * netdev `ingress` chains are bound to one device (nft 1.0.6's JSON does not say which):
//!   their decisions apply to packets arriving there.
//! * Rejects look like what they send: `reject with tcp reset` makes a TCP port closed; an ICMP
//!   port-unreachable makes a UDP port closed; every other reject makes the port filtered to a
//!   scanner ([`Verdict::apparent`]).

use std::collections::{BTreeSet, HashMap};
use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use portwarden_policy::{NodeIntent, PortRange, Protocol, Rule, State};
use serde::Serialize;
use serde_json::Value;

use crate::failsafe::Failsafe;
use crate::place::Family;

/// The table names iptables-nft writes (in families `ip` and `ip6`).
pub const IPTABLES_TABLES: [&str; 5] = ["filter", "nat", "mangle", "raw", "security"];

/// The built-in chain names of iptables' tables.
pub const IPTABLES_CHAINS: [&str; 5] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];

/// Whether the table `family name` is one of iptables-nft's (see the module docs).
pub fn is_iptables_table(family: &str, name: &str) -> bool {
    matches!(family, "ip" | "ip6") && IPTABLES_TABLES.contains(&name)
}

/// Whether a base chain `chain` of table `family table` belongs to iptables-nft.
fn is_iptables_chain(family: &str, table: &str, chain: &str) -> bool {
    is_iptables_table(family, table) && IPTABLES_CHAINS.contains(&chain)
}

/// A netfilter hook on the way of a packet to (or through) this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Hook {
    /// netdev (or inet) `ingress`: first of all, per device.
    Ingress,
    /// `prerouting`: before the routing decision (and before `input`).
    Prerouting,
    /// `input`: packets to this host; iptables' `INPUT` (and portwarden's rules) run here.
    Input,
    /// `forward`: packets routed through this host (DNAT to a container, a pod).
    Forward,
}

impl Hook {
    /// nft's name of the hook.
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Ingress => "ingress",
            Hook::Prerouting => "prerouting",
            Hook::Input => "input",
            Hook::Forward => "forward",
        }
    }

    fn parse(s: &str) -> Option<Hook> {
        Some(match s {
            "ingress" => Hook::Ingress,
            "prerouting" => Hook::Prerouting,
            "input" => Hook::Input,
            "forward" => Hook::Forward,
            _ => return None,
        })
    }

    /// The hooks a packet to this host passes, in order.
    pub const TO_HOST: [Hook; 3] = [Hook::Ingress, Hook::Prerouting, Hook::Input];
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// nftables' standard priorities, as nft names them.
const STD_PRIOS: [(&str, i32); 6] = [
    ("raw", -300),
    ("mangle", -150),
    ("dstnat", -100),
    ("filter", 0),
    ("security", 50),
    ("srcnat", 100),
];

/// The priority the way `nft list` prints it: a standard name when within 10 of one that the
/// family and hook allow (`filter + 10`, `dstnat - 10`, `raw`), else the number (`-110` at
/// `input`, where `dstnat` is not allowed). Mirrors nftables 1.0's `prio2str`.
pub fn priority_name(family: &str, hook: Hook, prio: i32) -> String {
    for (name, std) in STD_PRIOS {
        if (prio - std).abs() > 10 {
            continue;
        }
        let allowed = match (family, name) {
            ("netdev", n) => n == "filter",
            (_, "dstnat") => hook == Hook::Prerouting,
            (_, "srcnat") => hook == Hook::Input,
            _ => true,
        };
        if !allowed {
            break;
        }
        let off = prio - std;
        return match off.cmp(&0) {
            std::cmp::Ordering::Equal => name.to_string(),
            std::cmp::Ordering::Greater => format!("{name} + {off}"),
            std::cmp::Ordering::Less => format!("{name} - {}", -off),
        };
    }
    prio.to_string()
}

/// A base chain of a foreign table at one of the [`Hook`]s.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BaseChain {
    /// The table, `FAMILY NAME` (`inet firewalld`).
    pub table: String,
    /// The chain.
    pub chain: String,
    /// Its type: `filter`, `nat`, `route`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The hook.
    pub hook: Hook,
    /// The priority, numeric (lower runs first; iptables' chains run at 0).
    pub priority: i32,
    /// The priority as nft prints it ([`priority_name`]).
    pub priority_name: String,
    /// The policy: `accept` or `drop`.
    pub policy: String,
}

/// The packet asked about: the first packet of a new connection to this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Address family.
    pub family: Family,
    /// Transport protocol.
    pub protocol: Protocol,
    /// Destination port.
    pub port: u16,
    /// Where it comes from: `None` for any source (source matches are then unknown), a /32 or
    /// /128 for one address, or a network (a match is true when the whole network matches).
    pub source: Option<IpNet>,
    /// The node's address it is sent to, when known (else `ip daddr` matches are unknown).
    pub destination: Option<IpAddr>,
}

/// What a foreign base chain does with the packet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// `accept`: ends this base chain only; other chains at the hook still run.
    Accept,
    /// `drop`: final.
    Drop,
    /// `reject`: final; the packet is answered.
    Reject {
        /// nft's `with` clause: `tcp reset`, `icmpx admin-prohibited`, or `icmp
        /// port-unreachable` for a plain `reject`.
        with: String,
    },
    /// No rule decided: the chain's policy (`accept` or `drop`).
    Policy {
        /// `accept` or `drop`.
        policy: String,
    },
    /// A NAT statement (`dnat`, `redirect`) ends the chain and rewrites the destination: the
    /// packet may no longer reach this port (see the forward path).
    Nat {
        /// The statement.
        what: String,
    },
    /// A verdict that cannot be told (`queue`, an xt target, a verdict map whose key cannot
    /// be evaluated, a loop of jumps).
    Unknown {
        /// What it is.
        what: String,
    },
}

impl Verdict {
    /// Whether it lets the packet on (to the next chain at the hook).
    pub fn accepts(&self) -> bool {
        match self {
            Verdict::Accept => true,
            Verdict::Policy { policy } => policy == "accept",
            _ => false,
        }
    }

    /// How a port looks to a scanner when this verdict decides it: `Some(Filtered)` for a drop,
    /// `Some(Closed)` for a reject that answers as a closed port does (a TCP reset, an ICMP
    /// port-unreachable to UDP), `Some(Filtered)` for another reject; `None` for accept and
    /// for verdicts that cannot be told.
    pub fn apparent(&self, protocol: Protocol) -> Option<State> {
        match self {
            Verdict::Drop => Some(State::Filtered),
            Verdict::Policy { policy } if policy == "drop" => Some(State::Filtered),
            Verdict::Reject { with } => {
                let closed = match protocol {
                    Protocol::Tcp => with == "tcp reset",
                    Protocol::Udp => with.ends_with("port-unreachable"),
                };
                Some(if closed {
                    State::Closed
                } else {
                    State::Filtered
                })
            }
            _ => None,
        }
    }

    /// `drops`, `rejects (with tcp reset)`, ...
    fn verb(&self, certain: bool) -> String {
        let may = if certain { "" } else { "may " };
        let s = |third: &str, base: &str| if certain { third } else { base }.to_string();
        match self {
            Verdict::Accept => format!("{may}{}", s("accepts", "accept")),
            Verdict::Drop => format!("{may}{}", s("drops", "drop")),
            Verdict::Reject { with } => {
                format!("{may}{} (with {with})", s("rejects", "reject"))
            }
            Verdict::Policy { policy } => format!(
                "{may}{} by its policy",
                s(
                    if policy == "drop" { "drops" } else { "accepts" },
                    if policy == "drop" { "drop" } else { "accept" },
                )
            ),
            Verdict::Nat { what } => format!("{may}{} ({what})", s("rewrites", "rewrite")),
            Verdict::Unknown { what } => format!("may decide ({what})"),
        }
    }
}

/// Where in a table a decision was made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleAt {
    /// The chain holding the rule (the base chain, or a regular chain it jumped to).
    pub chain: String,
    /// 1-based position in that chain, in nft's listing order.
    pub index: usize,
    /// nft's rule handle (`nft -a list ...`).
    pub handle: Option<u64>,
}

/// What one foreign base chain decides for a [`Packet`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ForeignDecision {
    /// The table, `FAMILY NAME`.
    pub table: String,
    /// The base chain.
    pub chain: String,
    /// Its hook.
    pub hook: Hook,
    /// Its priority, numeric.
    pub priority: i32,
    /// Its priority as nft prints it.
    pub priority_name: String,
    /// The deciding rule; `None` when the policy decided.
    pub rule: Option<RuleAt>,
    /// Regular chains jumped to on the way, in order.
    pub via: Vec<String>,
    /// The verdict.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// Whether this is what happens to every such packet; false when an earlier rule may
    /// decide otherwise, or this rule may not match (see `unsure`).
    pub certain: bool,
    /// The deciding rule's matches, in nft's syntax (`tcp dport 443`); empty for the policy.
    pub matched: String,
    /// What could not be evaluated on the way (`fib saddr . mark . iif oif`, `limit`, ...).
    pub unsure: Vec<String>,
}

/// What a foreign decision means beside portwarden's verdict for the same packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// It changes the packet's fate: the port does not look as the intent says.
    Wins,
    /// It may (the decision is not certain, its verdict cannot be told, or the two chains
    /// run at the same priority in no fixed order).
    May,
}

/// Whether a base chain runs before iptables' `INPUT` (and portwarden's rules).
fn runs_before_ours(hook: Hook, priority: i32) -> Option<bool> {
    match hook {
        Hook::Ingress | Hook::Prerouting => Some(true),
        Hook::Input | Hook::Forward => match priority.cmp(&0) {
            std::cmp::Ordering::Less => Some(true),
            std::cmp::Ordering::Greater => Some(false),
            std::cmp::Ordering::Equal => None,
        },
    }
}

fn state_verb(s: State) -> &'static str {
    match s {
        State::Open => "accept",
        State::Closed => "reject",
        State::Filtered => "drop",
    }
}

impl ForeignDecision {
    /// What this decision does to a packet portwarden's rules give `ours`, for `protocol`;
    /// `None` when it changes nothing (an accept, a drop where portwarden drops first, ...).
    pub fn effect(&self, ours: State, protocol: Protocol) -> Option<Effect> {
        if self.verdict.accepts() {
            return None;
        }
        let Some(theirs) = self.verdict.apparent(protocol) else {
            return Some(Effect::May);
        };
        let differs = theirs != ours;
        let sure = |e| {
            if self.certain { e } else { Effect::May }
        };
        if ours == State::Open {
            // After portwarden's accept, or before it: a drop is final either way.
            return Some(sure(Effect::Wins));
        }
        match runs_before_ours(self.hook, self.priority) {
            Some(true) if differs => Some(sure(Effect::Wins)),
            None if differs => Some(Effect::May),
            _ => None,
        }
    }

    /// `table inet firewalld, chain filter_INPUT (input hook, priority filter + 10) rule 6 of
    /// filter_IN_public_deny drops tcp dport 8443`: the decision, without its consequence.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "table {}, chain {} ({} hook, priority {})",
            self.table, self.chain, self.hook, self.priority_name
        );
        match &self.rule {
            Some(r) if r.chain == self.chain => {
                let _ = write!(s, " rule {}", r.index);
            }
            Some(r) => {
                let _ = write!(s, " rule {} of {}", r.index, r.chain);
            }
            None => {}
        }
        let _ = write!(s, " {}", self.verdict.verb(self.certain));
        if !self.matched.is_empty() {
            let _ = write!(s, " {}", self.matched);
        }
        if !self.unsure.is_empty() {
            let _ = write!(s, " (cannot evaluate: {})", self.unsure.join("; "));
        }
        s
    }

    /// [`ForeignDecision::summary`] and what it means beside portwarden's `ours` (for
    /// `protocol`): `...: a drop in another table wins over portwarden's accept`.
    pub fn describe(&self, ours: State, protocol: Protocol) -> String {
        let theirs = self.verdict.apparent(protocol);
        let kind = match &self.verdict {
            Verdict::Reject { .. } => "reject",
            _ => "drop",
        };
        let mine = state_verb(ours);
        let tail = match (self.effect(ours, protocol), theirs) {
            _ if self.verdict.accepts() => format!(
                "an accept ends only that table's chain, so portwarden's {mine} still applies"
            ),
            (Some(_), None) => {
                format!("portwarden cannot tell whether the packet still meets portwarden's {mine}")
            }
            (Some(e), Some(_)) if ours == State::Open => format!(
                "a {kind} in another table is final: it {}wins over portwarden's accept",
                if e == Effect::May { "may " } else { "" }
            ),
            (Some(Effect::Wins), Some(t)) => format!(
                "it decides before portwarden's rules are reached: the port looks {t}, not {ours}"
            ),
            (Some(Effect::May), Some(t)) => match runs_before_ours(self.hook, self.priority) {
                None => format!(
                    "it runs at the same priority as iptables' INPUT, in no fixed order: the \
                     port may look {t}, not {ours}"
                ),
                _ => format!("the port may look {t}, not {ours}"),
            },
            (None, _) => format!("portwarden's {mine} decides first or agrees"),
        };
        format!("{}: {tail}", self.summary())
    }
}

/// Three-valued truth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tri {
    True,
    False,
    Unknown,
}

impl Tri {
    fn of(b: bool) -> Tri {
        if b { Tri::True } else { Tri::False }
    }
    fn not(self) -> Tri {
        match self {
            Tri::True => Tri::False,
            Tri::False => Tri::True,
            Tri::Unknown => Tri::Unknown,
        }
    }
    fn and(self, o: Tri) -> Tri {
        match (self, o) {
            (Tri::False, _) | (_, Tri::False) => Tri::False,
            (Tri::True, Tri::True) => Tri::True,
            _ => Tri::Unknown,
        }
    }
    fn or(self, o: Tri) -> Tri {
        match (self, o) {
            (Tri::True, _) | (_, Tri::True) => Tri::True,
            (Tri::False, Tri::False) => Tri::False,
            _ => Tri::Unknown,
        }
    }
}

/// The value of a match's left side for the packet.
#[derive(Clone, Debug)]
enum Key {
    /// A port.
    Port(u16),
    /// An IP protocol number.
    Proto(u8),
    /// The packet's source (or destination), maybe a network.
    Addr(IpNet),
    /// A word (`ipv4`, `ip`, `original`).
    Word(&'static str),
    /// ct state of a new connection.
    CtNew,
    /// A set of flags that is empty (ct status of a packet no NAT rewrote).
    NoFlags,
    /// An interface that is not `lo`.
    NotLoopback,
    /// The expression's dependency fails (`tcp dport` of a UDP packet, `ip saddr` of IPv6):
    /// the match is false whatever it compares.
    Mismatch,
    /// Cannot be evaluated.
    Unknown,
    /// A concatenation.
    Concat(Vec<Key>),
}

fn proto_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
    }
}

fn proto_by_name(s: &str) -> Option<u8> {
    Some(match s {
        "icmp" => 1,
        "igmp" => 2,
        "tcp" => 6,
        "udp" => 17,
        "ipv6-icmp" | "icmpv6" => 58,
        "gre" => 47,
        "esp" => 50,
        "ah" => 51,
        "sctp" => 132,
        "udplite" => 136,
        "dccp" => 33,
        "comp" => 108,
        _ => return None,
    })
}

/// Transport headers nft knows; a payload of one that is not the packet's is a mismatch.
const TRANSPORTS: [&str; 11] = [
    "tcp", "udp", "udplite", "sctp", "dccp", "icmp", "icmpv6", "esp", "ah", "comp", "igmp",
];

fn family_word(f: Family) -> (&'static str, &'static str) {
    match f {
        Family::Ipv4 => ("ipv4", "ip"),
        Family::Ipv6 => ("ipv6", "ip6"),
    }
}

impl Packet {
    fn key(&self, left: &Value) -> Key {
        if let Some(p) = left.get("payload") {
            let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("");
            let field = p.get("field").and_then(Value::as_str).unwrap_or("");
            let ours = self.protocol.as_str();
            return match (proto, field) {
                ("th", "dport") => Key::Port(self.port),
                ("th", _) => Key::Unknown,
                (t, "dport") if t == ours => Key::Port(self.port),
                (t, _) if t == ours => Key::Unknown,
                (t, _) if TRANSPORTS.contains(&t) => Key::Mismatch,
                ("ip" | "ip6", _) if proto != family_word(self.family).1 => Key::Mismatch,
                ("ip" | "ip6", "saddr") => self.source.map_or(Key::Unknown, Key::Addr),
                ("ip" | "ip6", "daddr") => self
                    .destination
                    .map_or(Key::Unknown, |a| Key::Addr(IpNet::from(a))),
                ("ip", "protocol") | ("ip6", "nexthdr") => Key::Proto(proto_number(self.protocol)),
                ("arp", _) => Key::Mismatch,
                _ => Key::Unknown,
            };
        }
        if let Some(m) = left.get("meta") {
            let key = m.get("key").and_then(Value::as_str).unwrap_or("");
            return match key {
                "l4proto" => Key::Proto(proto_number(self.protocol)),
                "nfproto" => Key::Word(family_word(self.family).0),
                "protocol" => Key::Word(family_word(self.family).1),
                "iifname" | "iif" => Key::NotLoopback,
                _ => Key::Unknown,
            };
        }
        if let Some(c) = left.get("ct") {
            if c.get("dir").is_some() {
                return Key::Unknown;
            }
            return match c.get("key").and_then(Value::as_str).unwrap_or("") {
                "state" => Key::CtNew,
                "status" => Key::NoFlags,
                "direction" => Key::Word("original"),
                _ => Key::Unknown,
            };
        }
        if let Some(parts) = left.get("concat").and_then(Value::as_array) {
            return Key::Concat(parts.iter().map(|p| self.key(p)).collect());
        }
        Key::Unknown
    }
}

fn addr_of(v: &Value) -> Option<IpNet> {
    if let Some(s) = v.as_str() {
        return s.parse::<IpAddr>().ok().map(IpNet::from);
    }
    let p = v.get("prefix")?;
    let addr: IpAddr = p.get("addr")?.as_str()?.parse().ok()?;
    let len = u8::try_from(p.get("len")?.as_u64()?).ok()?;
    IpNet::new(addr, len).ok()
}

/// Whether the (packet's) network `n` lies in `elem`: true when wholly, false when not at all.
fn net_in(n: IpNet, elem: IpNet) -> Tri {
    if elem.contains(&n) {
        Tri::True
    } else if n.contains(&elem) {
        Tri::Unknown
    } else {
        Tri::False
    }
}

fn range_of(v: &Value) -> Option<(&Value, &Value)> {
    let r = v.get("range")?.as_array()?;
    match r.as_slice() {
        [a, b] => Some((a, b)),
        _ => None,
    }
}

/// A set element without its decoration (`{"elem": {"val": X, "timeout": ...}}`).
fn elem_val(v: &Value) -> &Value {
    v.get("elem").and_then(|e| e.get("val")).unwrap_or(v)
}

/// Whether `key` equals (or lies in) the element `v`.
fn eq_elem(key: &Key, v: &Value) -> Tri {
    let v = elem_val(v);
    match key {
        Key::Mismatch => Tri::False,
        Key::Unknown => Tri::Unknown,
        Key::Port(p) => {
            let p = u64::from(*p);
            if let Some(n) = v.as_u64() {
                return Tri::of(n == p);
            }
            if let Some((a, b)) = range_of(v)
                && let (Some(a), Some(b)) = (a.as_u64(), b.as_u64())
            {
                return Tri::of(a <= p && p <= b);
            }
            Tri::Unknown
        }
        Key::Proto(n) => {
            let n = u64::from(*n);
            if let Some(x) = v.as_u64() {
                return Tri::of(x == n);
            }
            match v.as_str().and_then(proto_by_name) {
                Some(x) => Tri::of(u64::from(x) == n),
                None => Tri::Unknown,
            }
        }
        Key::Addr(n) => {
            if let Some(e) = addr_of(v) {
                return net_in(*n, e);
            }
            if let Some((a, b)) = range_of(v)
                && let (Some(a), Some(b)) = (addr_of(a), addr_of(b))
            {
                let (lo, hi) = (a.addr(), b.addr());
                let (first, last) = (n.network(), n.broadcast());
                if lo <= first && last <= hi {
                    return Tri::True;
                }
                if last < lo || first > hi {
                    return Tri::False;
                }
            }
            Tri::Unknown
        }
        Key::Word(w) => match v.as_str() {
            Some(s) => Tri::of(s == *w),
            None => Tri::Unknown,
        },
        Key::CtNew => match v.as_str() {
            Some(s) => Tri::of(s == "new"),
            None => Tri::Unknown,
        },
        Key::NoFlags => Tri::False,
        Key::NotLoopback => match v.as_str() {
            Some("lo") => Tri::False,
            _ => Tri::Unknown,
        },
        Key::Concat(keys) => {
            let Some(parts) = v.get("concat").and_then(Value::as_array) else {
                return Tri::Unknown;
            };
            if parts.len() != keys.len() {
                return Tri::Unknown;
            }
            keys.iter()
                .zip(parts)
                .fold(Tri::True, |acc, (k, p)| acc.and(eq_elem(k, p)))
        }
    }
}

/// A parsed table.
#[derive(Clone, Debug, Default)]
struct TableData {
    chains: HashMap<String, Vec<RuleData>>,
    /// Set and map elements by name (a map's elements are `[key, value]` pairs).
    sets: HashMap<String, Vec<Value>>,
}

#[derive(Clone, Debug)]
struct RuleData {
    handle: Option<u64>,
    expr: Vec<Value>,
}

/// The foreign tables of a listing.
#[derive(Clone, Debug, Default)]
pub struct ForeignTables {
    /// Every foreign table, `FAMILY NAME`, in listing order.
    pub tables: Vec<String>,
    /// Their base chains at the [`Hook`]s, in listing order.
    pub base_chains: Vec<BaseChain>,
    data: HashMap<String, TableData>,
}

/// A rule outcome that ends a walk (or might).
#[derive(Clone, Debug)]
struct Step {
    verdict: Verdict,
    sure: bool,
    rule: Option<RuleAt>,
    via: Vec<String>,
    matched: String,
    unsure: Vec<String>,
}

/// How a chain walk ended.
enum End {
    /// A terminal verdict was certainly reached.
    Decided,
    /// The chain ended (fell through, `return`): the caller goes on.
    Continue,
}

/// Walk context.
struct Walk<'a> {
    table: &'a TableData,
    packet: &'a Packet,
    steps: Vec<Step>,
    /// Everything unknown met on the way so far.
    unsure: Vec<String>,
}

const MAX_DEPTH: usize = 32;

/// What one statement of a nftables rule does for a packet ([`Walk::statement`]).
enum Statement {
    /// Nothing that decides (a counter, a log, a comment, ...).
    Ignored,
    /// A match: whether it holds, and its text (an unknown one is also recorded as unsure).
    Match(Tri, String),
    /// The rule's action, ending the rule, with the text it adds to the rule's matches.
    Act(Option<String>, Action),
}

/// What a rule's statements do when its matches hold.
enum Action {
    Verdict(Verdict),
    Jump(String),
    Goto(String),
    Return,
    /// Several possible verdict-map outcomes: (truth, action).
    Map(Vec<(Tri, Action)>),
}

fn verdict_action(v: &Value) -> Option<Action> {
    let obj = v.as_object()?;
    let (k, inner) = obj.iter().next()?;
    Some(match k.as_str() {
        "accept" => Action::Verdict(Verdict::Accept),
        "drop" => Action::Verdict(Verdict::Drop),
        "return" => Action::Return,
        "jump" => Action::Jump(inner.get("target")?.as_str()?.to_string()),
        "goto" => Action::Goto(inner.get("target")?.as_str()?.to_string()),
        "queue" => Action::Verdict(Verdict::Unknown {
            what: "queue to a userspace program".into(),
        }),
        _ => return None,
    })
}

impl<'a> Walk<'a> {
    fn set_elems(&self, name: &str) -> Option<&'a [Value]> {
        self.table.sets.get(name).map(Vec::as_slice)
    }

    /// Whether `key` is in the right side `right` of a match (a value, a set, a named set).
    fn member(&self, key: &Key, right: &Value) -> Tri {
        if let Some(name) = right.as_str().and_then(|s| s.strip_prefix('@')) {
            return match self.set_elems(name) {
                Some(elems) => elems
                    .iter()
                    .fold(Tri::False, |acc, e| acc.or(eq_elem(key, e))),
                None => Tri::Unknown,
            };
        }
        if let Some(elems) = right.get("set").and_then(Value::as_array) {
            return elems
                .iter()
                .fold(Tri::False, |acc, e| acc.or(eq_elem(key, e)));
        }
        if let Some(list) = right.as_array() {
            // flags listed (`ct state established,related`)
            return list
                .iter()
                .fold(Tri::False, |acc, e| acc.or(eq_elem(key, e)));
        }
        eq_elem(key, right)
    }

    fn compare(&self, op: &str, key: &Key, right: &Value) -> Tri {
        match key {
            Key::Mismatch => return Tri::False,
            Key::Unknown => return Tri::Unknown,
            _ => {}
        }
        match op {
            "==" | "in" => self.member(key, right),
            "!=" => self.member(key, right).not(),
            "<" | "<=" | ">" | ">=" => {
                let n = match key {
                    Key::Port(p) => u64::from(*p),
                    Key::Proto(p) => u64::from(*p),
                    _ => return Tri::Unknown,
                };
                let Some(r) = right.as_u64() else {
                    return Tri::Unknown;
                };
                Tri::of(match op {
                    "<" => n < r,
                    "<=" => n <= r,
                    ">" => n > r,
                    _ => n >= r,
                })
            }
            _ => Tri::Unknown,
        }
    }

    /// A verdict map's possible outcomes.
    fn vmap(&self, vmap: &Value) -> Action {
        let key = self.packet.key(vmap.get("key").unwrap_or(&Value::Null));
        let data = vmap.get("data").unwrap_or(&Value::Null);
        let elems: Vec<&Value> = if let Some(name) = data.as_str().and_then(|s| s.strip_prefix('@'))
        {
            match self.set_elems(name) {
                Some(e) => e.iter().collect(),
                None => {
                    return Action::Verdict(Verdict::Unknown {
                        what: format!("verdict map @{name} not listed"),
                    });
                }
            }
        } else if let Some(e) = data.get("set").and_then(Value::as_array) {
            e.iter().collect()
        } else {
            return Action::Verdict(Verdict::Unknown {
                what: format!("verdict map {}", text(data)),
            });
        };
        let mut out = Vec::new();
        for e in elems {
            let Some([k, v]) = e.as_array().map(Vec::as_slice) else {
                continue;
            };
            let t = eq_elem(&key, k);
            if t == Tri::False {
                continue;
            }
            let action = verdict_action(v).unwrap_or(Action::Verdict(Verdict::Unknown {
                what: format!("verdict {}", text(v)),
            }));
            out.push((t, action));
            if t == Tri::True {
                break;
            }
        }
        Action::Map(out)
    }

    /// The rule's action and whether its matches hold, with the text of its matches.
    fn rule(&self, r: &RuleData, unsure: &mut Vec<String>) -> (Tri, Option<Action>, String) {
        let mut truth = Tri::True;
        let mut matched = Vec::new();
        let mut action = None;
        for e in &r.expr {
            let Some((name, inner)) = e.as_object().and_then(|o| o.iter().next()) else {
                continue;
            };
            match self.statement(name, inner, e) {
                Statement::Ignored => {}
                Statement::Match(t, shown) => {
                    if t == Tri::Unknown {
                        unsure.push(shown.clone());
                    }
                    matched.push(shown);
                    truth = truth.and(t);
                }
                Statement::Act(shown, a) => {
                    matched.extend(shown);
                    action = Some(a);
                    break;
                }
            }
            if truth == Tri::False {
                return (Tri::False, None, String::new());
            }
        }
        (truth, action, matched.join(" "))
    }

    /// What the statement `e` (`{name: inner}`) of a rule does for this packet.
    fn statement(&self, name: &str, inner: &Value, e: &Value) -> Statement {
        match name {
            "match" => {
                let op = inner.get("op").and_then(Value::as_str).unwrap_or("==");
                let left = inner.get("left").unwrap_or(&Value::Null);
                let right = inner.get("right").unwrap_or(&Value::Null);
                let t = self.compare(op, &self.packet.key(left), right);
                let shown = if op == "==" || op == "in" {
                    format!("{} {}", text(left), text(right))
                } else {
                    format!("{} {op} {}", text(left), text(right))
                };
                Statement::Match(t, shown)
            }
            "counter" | "log" | "mangle" | "set" | "notrack" | "ct helper" | "ct timeout"
            | "ct expectation" | "dup" | "meta" | "comment" | "continue" => Statement::Ignored,
            "limit" | "quota" | "meter" | "xt" | "synproxy" | "ct count" | "last" => {
                let shown = match name {
                    "xt" => format!(
                        "an iptables {} `{}` nft cannot show",
                        inner
                            .get("type")
                            .and_then(Value::as_str)
                            .unwrap_or("extension"),
                        inner.get("name").and_then(Value::as_str).unwrap_or("?")
                    ),
                    n => n.to_string(),
                };
                let is_target = inner.get("type").and_then(Value::as_str) == Some("target");
                if name == "xt" && is_target {
                    return Statement::Act(None, Action::Verdict(Verdict::Unknown { what: shown }));
                }
                Statement::Match(Tri::Unknown, shown)
            }
            "reject" => {
                let with = reject_with(inner, self.packet.family);
                Statement::Act(None, Action::Verdict(Verdict::Reject { with }))
            }
            "vmap" => Statement::Act(
                Some(format!(
                    "{} vmap {}",
                    text(inner.get("key").unwrap_or(&Value::Null)),
                    text(inner.get("data").unwrap_or(&Value::Null))
                )),
                self.vmap(inner),
            ),
            "dnat" | "redirect" | "tproxy" => {
                let to = match (inner.get("addr"), inner.get("port")) {
                    (Some(a), Some(p)) => format!(" to {}:{}", text(a), text(p)),
                    (Some(a), None) => format!(" to {}", text(a)),
                    (None, Some(p)) => format!(" to :{}", text(p)),
                    (None, None) => String::new(),
                };
                Statement::Act(
                    None,
                    Action::Verdict(Verdict::Nat {
                        what: format!("{name}{to}"),
                    }),
                )
            }
            "snat" | "masquerade" => Statement::Act(None, Action::Verdict(Verdict::Accept)),
            _ => match verdict_action(e) {
                Some(a) => Statement::Act(None, a),
                None => Statement::Match(Tri::Unknown, format!("statement {}", text(e))),
            },
        }
    }

    /// Walks `chain`. `main` is whether this walk is on the main path: the one on which every
    /// rule that *may* match did not (a rule that may match is followed too, with `main`
    /// false, and what it does is recorded as possible).
    fn walk(&mut self, chain: &str, main: bool, via: &mut Vec<String>, depth: usize) -> End {
        let problem = if !self.table.chains.contains_key(chain) {
            Some(format!("jump to chain {chain}, which is not listed"))
        } else if depth > MAX_DEPTH {
            Some(format!("jumps nested deeper than {MAX_DEPTH} at {chain}"))
        } else {
            None
        };
        let (Some(rules), None) = (self.table.chains.get(chain), problem.as_ref()) else {
            self.steps.push(Step {
                verdict: Verdict::Unknown {
                    what: problem.unwrap_or_default(),
                },
                sure: false,
                rule: None,
                via: via.clone(),
                matched: String::new(),
                unsure: self.unsure.clone(),
            });
            return End::Continue;
        };
        for (i, r) in rules.iter().enumerate() {
            let mut unsure = Vec::new();
            let (truth, action, matched) = self.rule(r, &mut unsure);
            let Some(action) = action.filter(|_| truth != Tri::False) else {
                continue; // no match, or matches without a verdict: decides nothing
            };
            let at = RuleAt {
                chain: chain.to_string(),
                index: i + 1,
                handle: r.handle,
            };
            let taken = truth == Tri::True;
            let mut all_unsure = self.unsure.clone();
            all_unsure.extend(unsure.iter().cloned());
            let end = self.act(
                action,
                main && taken,
                &at,
                &matched,
                &all_unsure,
                via,
                depth,
            );
            if !taken {
                self.unsure.extend(unsure);
                continue;
            }
            if let Some(end) = end {
                return end;
            }
        }
        End::Continue
    }

    /// Carries out `action` of a rule at `at` (`main`: on the main path, the rule's matches
    /// all true). `Some(End)` when the rule ends the chain (a verdict, a goto, a return),
    /// `None` when the chain goes on.
    #[allow(clippy::too_many_arguments)]
    fn act(
        &mut self,
        action: Action,
        main: bool,
        at: &RuleAt,
        matched: &str,
        unsure: &[String],
        via: &mut Vec<String>,
        depth: usize,
    ) -> Option<End> {
        match action {
            Action::Verdict(verdict) => {
                self.steps.push(Step {
                    verdict,
                    sure: main,
                    rule: Some(at.clone()),
                    via: via.clone(),
                    matched: matched.to_string(),
                    unsure: unsure.to_vec(),
                });
                Some(End::Decided)
            }
            Action::Return => Some(End::Continue),
            Action::Jump(target) | Action::Goto(target) if via.contains(&target) => {
                self.steps.push(Step {
                    verdict: Verdict::Unknown {
                        what: format!("a loop of jumps through {target}"),
                    },
                    sure: false,
                    rule: Some(at.clone()),
                    via: via.clone(),
                    matched: matched.to_string(),
                    unsure: unsure.to_vec(),
                });
                Some(End::Decided)
            }
            Action::Jump(target) => {
                via.push(target.clone());
                let end = self.walk(&target, main, via, depth + 1);
                via.pop();
                match end {
                    End::Decided => Some(End::Decided),
                    End::Continue => None,
                }
            }
            Action::Goto(target) => {
                via.push(target.clone());
                let end = self.walk(&target, main, via, depth + 1);
                via.pop();
                Some(end)
            }
            Action::Map(options) => {
                let mut ended = None;
                for (t, a) in options {
                    let end = self.act(a, main && t == Tri::True, at, matched, unsure, via, depth);
                    if t == Tri::True {
                        ended = end;
                    }
                }
                ended
            }
        }
    }
}

fn reject_with(inner: &Value, family: Family) -> String {
    let ty = inner.get("type").and_then(Value::as_str);
    let expr = inner.get("expr").and_then(Value::as_str);
    match (ty, expr) {
        (Some("tcp reset"), _) => "tcp reset".into(),
        (Some(t), Some(e)) => format!("{t} {e}"),
        (Some(t), None) => t.to_string(),
        (None, _) => match family {
            Family::Ipv4 => "icmp port-unreachable".into(),
            Family::Ipv6 => "icmpv6 port-unreachable".into(),
        },
    }
}

/// nft-like text of an expression (for messages; not parsed back).
///
/// Kept whole (a little over 80 lines): one match arm per kind of nft JSON expression, each a
/// one-line formatting rule; split up, the table of kinds would be spread over several
/// functions with nothing of their own.
fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Bool(b) => if *b { "exists" } else { "missing" }.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(","),
        Value::Object(map) => {
            let Some((k, inner)) = map.iter().next() else {
                return String::new();
            };
            match k.as_str() {
                "payload" => format!(
                    "{} {}",
                    inner.get("protocol").map(text).unwrap_or_default(),
                    inner.get("field").map(text).unwrap_or_default()
                ),
                "meta" => {
                    let key = inner.get("key").map(text).unwrap_or_default();
                    if matches!(key.as_str(), "iifname" | "oifname" | "iif" | "oif" | "mark") {
                        key
                    } else {
                        format!("meta {key}")
                    }
                }
                "ct" => format!("ct {}", inner.get("key").map(text).unwrap_or_default()),
                "prefix" => format!(
                    "{}/{}",
                    inner.get("addr").map(text).unwrap_or_default(),
                    inner.get("len").map(text).unwrap_or_default()
                ),
                "range" => match inner.as_array().map(Vec::as_slice) {
                    Some([a, b]) => format!("{}-{}", text(a), text(b)),
                    _ => inner.to_string(),
                },
                "set" => match inner.as_array() {
                    Some(items) => format!(
                        "{{ {} }}",
                        items
                            .iter()
                            .map(|i| text(elem_val(i)))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    None => inner.to_string(),
                },
                "concat" => match inner.as_array() {
                    Some(items) => items.iter().map(text).collect::<Vec<_>>().join(" . "),
                    None => inner.to_string(),
                },
                "fib" => format!(
                    "fib {} {}",
                    inner
                        .get("flags")
                        .and_then(Value::as_array)
                        .map(|f| f.iter().map(text).collect::<Vec<_>>().join(" . "))
                        .unwrap_or_default(),
                    inner.get("result").map(text).unwrap_or_default()
                ),
                "jump" | "goto" => {
                    format!("{k} {}", inner.get("target").map(text).unwrap_or_default())
                }
                _ => {
                    let body = match inner {
                        Value::Object(o) => o
                            .iter()
                            .map(|(k, v)| format!("{k} {}", text(v)))
                            .collect::<Vec<_>>()
                            .join(" "),
                        Value::Null => String::new(),
                        other => text(other),
                    };
                    if body.is_empty() {
                        k.clone()
                    } else {
                        format!("{k} {body}")
                    }
                }
            }
        }
    }
}

impl ForeignTables {
    /// Reads the foreign tables of an `nft -j list ruleset` (or `list table`) listing.
    ///
    /// # Errors
    /// A message when `json` is not nft's JSON listing.
    pub fn parse(json: &str) -> Result<ForeignTables, String> {
        let mut out = ForeignTables::default();
        out.add(json)?;
        Ok(out)
    }

    /// Adds the foreign tables of another listing (one `nft -j list table` each).
    ///
    /// # Errors
    /// As [`ForeignTables::parse`].
    pub fn add(&mut self, json: &str) -> Result<(), String> {
        let doc: Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
        let items = doc
            .get("nftables")
            .and_then(Value::as_array)
            .ok_or("no \"nftables\" array")?;
        let str_of = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        for item in items {
            let Some((kind, v)) = item.as_object().and_then(|o| o.iter().next()) else {
                continue;
            };
            let (Some(family), Some(table)) = (
                str_of(v, "family"),
                str_of(v, if kind == "table" { "name" } else { "table" }),
            ) else {
                continue;
            };
            let id = format!("{family} {table}");
            match kind.as_str() {
                "table" => {
                    if !is_iptables_table(&family, &table) && !self.tables.contains(&id) {
                        self.tables.push(id.clone());
                    }
                    self.data.entry(id).or_default();
                }
                "set" | "map" => {
                    let name = str_of(v, "name").ok_or("set without a name")?;
                    let elems = v
                        .get("elem")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    self.data.entry(id).or_default().sets.insert(name, elems);
                }
                "chain" => self.add_chain(v, &family, &table, id)?,
                "rule" => {
                    let chain = str_of(v, "chain").ok_or("rule without a chain")?;
                    let expr = v
                        .get("expr")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    self.data
                        .entry(id)
                        .or_default()
                        .chains
                        .entry(chain)
                        .or_default()
                        .push(RuleData {
                            handle: v.get("handle").and_then(Value::as_u64),
                            expr,
                        });
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Adds a chain of the listing (`v`, of table `id` = `family table`): every chain, for the
    /// walks that jump to it, and a foreign base chain also to [`ForeignTables::base_chains`].
    fn add_chain(
        &mut self,
        v: &Value,
        family: &str,
        table: &str,
        id: String,
    ) -> Result<(), String> {
        let str_of = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let name = str_of(v, "name").ok_or("chain without a name")?;
        self.data
            .entry(id.clone())
            .or_default()
            .chains
            .entry(name.clone())
            .or_default();
        let Some(hook) = str_of(v, "hook").as_deref().and_then(Hook::parse) else {
            return Ok(());
        };
        if is_iptables_chain(family, table, &name)
            || !matches!(family, "ip" | "ip6" | "inet" | "netdev")
        {
            return Ok(());
        }
        if is_iptables_table(family, table) && !self.tables.contains(&id) {
            self.tables.push(id.clone());
        }
        let priority = v
            .get("prio")
            .and_then(Value::as_i64)
            .and_then(|p| i32::try_from(p).ok())
            .unwrap_or(0);
        self.base_chains.push(BaseChain {
            priority_name: priority_name(family, hook, priority),
            table: id,
            chain: name,
            kind: str_of(v, "type").unwrap_or_else(|| "filter".into()),
            hook,
            priority,
            policy: str_of(v, "policy").unwrap_or_else(|| "accept".into()),
        });
        Ok(())
    }

    /// Whether no foreign base chain is at any [`Hook`].
    pub fn is_empty(&self) -> bool {
        self.base_chains.is_empty()
    }

    /// What every foreign base chain at `hook` that sees `packet`'s family decides for it, in
    /// the order the kernel runs them (priority, then listing order).
    pub fn decide_at(&self, packet: &Packet, hook: Hook) -> Vec<ForeignDecision> {
        let mut chains: Vec<&BaseChain> = self
            .base_chains
            .iter()
            .filter(|c| c.hook == hook && sees(&c.table, packet.family))
            .collect();
        chains.sort_by_key(|c| c.priority);
        chains
            .into_iter()
            .filter_map(|c| self.decide_chain(c, packet))
            .collect()
    }

    /// [`ForeignTables::decide_at`] for every hook a packet to this host passes
    /// ([`Hook::TO_HOST`]), in order.
    pub fn decide(&self, packet: &Packet) -> Vec<ForeignDecision> {
        Hook::TO_HOST
            .iter()
            .flat_map(|&h| self.decide_at(packet, h))
            .collect()
    }

    fn decide_chain(&self, c: &BaseChain, packet: &Packet) -> Option<ForeignDecision> {
        let table = self.data.get(&c.table)?;
        let mut w = Walk {
            table,
            packet,
            steps: Vec::new(),
            unsure: Vec::new(),
        };
        if let End::Continue = w.walk(&c.chain, true, &mut Vec::new(), 0) {
            w.steps.push(Step {
                verdict: Verdict::Policy {
                    policy: c.policy.clone(),
                },
                sure: true,
                rule: None,
                via: Vec::new(),
                matched: String::new(),
                unsure: w.unsure.clone(),
            });
        }
        let steps = w.steps;
        let all_accept = steps.iter().all(|s| s.verdict.accepts());
        let pick = if all_accept {
            steps.iter().find(|s| s.sure).or(steps.first())
        } else {
            steps.iter().find(|s| !s.verdict.accepts())
        }?;
        let certain = all_accept
            || steps.iter().all(|s| s.verdict == pick.verdict)
            || (steps.len() == 1 && pick.sure);
        Some(ForeignDecision {
            table: c.table.clone(),
            chain: c.chain.clone(),
            hook: c.hook,
            priority: c.priority,
            priority_name: c.priority_name.clone(),
            rule: pick.rule.clone(),
            via: pick.via.clone(),
            verdict: pick.verdict.clone(),
            certain,
            matched: pick.matched.clone(),
            unsure: if certain {
                Vec::new()
            } else {
                let mut u = pick.unsure.clone();
                u.dedup();
                u
            },
        })
    }

    /// Every number up to 65535 in the rules and sets of the tables with a base chain at the
    /// hooks: the ports where a chain's decision can change (see [`findings`]).
    fn port_cuts(&self) -> BTreeSet<u32> {
        fn walk(v: &Value, out: &mut BTreeSet<u32>) {
            match v {
                Value::Number(n) => {
                    if let Some(n) = n.as_u64().filter(|&n| n <= 65535) {
                        let n = n as u32;
                        out.insert(n);
                        out.insert(n + 1);
                    }
                }
                Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
                Value::Object(o) => o.values().for_each(|x| walk(x, out)),
                _ => {}
            }
        }
        let mut out = BTreeSet::new();
        for t in self.data.values() {
            for rules in t.chains.values() {
                for r in rules {
                    r.expr.iter().for_each(|e| walk(e, &mut out));
                }
            }
            for elems in t.sets.values() {
                elems.iter().for_each(|e| walk(e, &mut out));
            }
        }
        out
    }
}

/// Whether a table of `table` (`FAMILY NAME`) sees packets of `family`.
fn sees(table: &str, family: Family) -> bool {
    match table.split_once(' ').map(|(f, _)| f) {
        Some("ip") => family == Family::Ipv4,
        Some("ip6") => family == Family::Ipv6,
        _ => true,
    }
}

/// A foreign decision over a managed port range, for a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ForeignFinding {
    /// Family.
    pub family: Family,
    /// Protocol.
    #[serde(serialize_with = "crate::ser::ser_protocol")]
    pub protocol: Protocol,
    /// The ports it applies to (a part of one entry's range).
    #[serde(serialize_with = "crate::ser::ser_range")]
    pub ports: PortRange,
    /// The entry's source, when it has one.
    pub source: Option<IpNet>,
    /// What portwarden's rules give these ports.
    #[serde(serialize_with = "crate::ser::ser_state")]
    pub state: State,
    /// The policy and entry (0-based) whose ports these are.
    pub policy: String,
    /// The entry index.
    pub entry: usize,
    /// The decision, evaluated at the first port of `ports` (every port of the range gets the
    /// same one).
    pub decision: ForeignDecision,
    /// What it does beside portwarden's verdict.
    pub effect: Effect,
    /// [`ForeignDecision::describe`] with the ports.
    pub message: String,
}

impl fmt::Display for ForeignFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let src = self
            .source
            .map(|s| format!(" from {s}"))
            .unwrap_or_default();
        write!(
            f,
            "{} {}/{}{} ({} by {} entry {}): {}",
            self.family,
            self.ports,
            self.protocol,
            src,
            self.state,
            self.policy,
            self.entry,
            self.message
        )
    }
}

/// `range` minus `cuts` (sorted, disjoint ranges).
fn subtract(range: PortRange, cuts: &[PortRange]) -> Vec<PortRange> {
    let mut out = vec![(u32::from(range.start), u32::from(range.end))];
    for c in cuts {
        let (cs, ce) = (u32::from(c.start), u32::from(c.end));
        out = out
            .into_iter()
            .flat_map(|(s, e)| {
                let mut v = Vec::new();
                if ce < s || cs > e {
                    v.push((s, e));
                } else {
                    if cs > s {
                        v.push((s, cs - 1));
                    }
                    if ce < e {
                        v.push((ce + 1, e));
                    }
                }
                v
            })
            .collect();
    }
    out.into_iter()
        .map(|(s, e)| PortRange {
            start: s as u16,
            end: e as u16,
        })
        .collect()
}

/// The foreign decisions that matter for a node's intent (pure): for every managed port range
/// of every entry (less the failsafe ports, which portwarden leaves to the host's rules, and
/// ports a higher-precedence entry for the same or a wider source already decides), in each
/// family the entry covers, the foreign base chains at [`Hook::TO_HOST`] that drop, reject or
/// may decide its packets differently from portwarden. Ports the chains treat alike are grouped
/// into one finding per range.
pub fn findings(
    tables: &ForeignTables,
    intent: &NodeIntent,
    failsafe: &Failsafe,
) -> Vec<ForeignFinding> {
    if tables.is_empty() {
        return Vec::new();
    }
    let cuts = tables.port_cuts();
    let mut out: Vec<ForeignFinding> = Vec::new();
    for (i, rule) in intent.rules.iter().enumerate() {
        let taken = taken_ports(intent, i, failsafe);
        let families: Vec<Family> = match rule.source {
            Some(IpNet::V4(_)) => vec![Family::Ipv4],
            Some(IpNet::V6(_)) => vec![Family::Ipv6],
            None => Family::ALL.to_vec(),
        };
        for part in subtract(rule.ports, &taken) {
            // Pieces of `part` within which no rule constant changes.
            let mut starts = vec![u32::from(part.start)];
            if part.end > part.start {
                starts.extend(
                    cuts.range(u32::from(part.start) + 1..=u32::from(part.end))
                        .copied(),
                );
            }
            for &family in &families {
                out.extend(part_findings(tables, rule, family, &starts, part.end));
            }
        }
    }
    out
}

/// The ports of rule `i` of `intent` that it does not decide: the failsafe ports, and those of
/// an earlier rule for every source this one has; sorted by start.
fn taken_ports(intent: &NodeIntent, i: usize, failsafe: &Failsafe) -> Vec<PortRange> {
    let rule = &intent.rules[i];
    let mut taken: Vec<PortRange> = failsafe.ranges(rule.protocol).collect();
    taken.extend(
        intent.rules[..i]
            .iter()
            .filter(|e| {
                e.protocol == rule.protocol
                    && match (e.source, rule.source) {
                        (None, _) => true,
                        (Some(a), Some(b)) => a.contains(&b),
                        (Some(_), None) => false,
                    }
            })
            .map(|e| e.ports),
    );
    taken.sort_by_key(|r| r.start);
    taken
}

/// The findings of `rule` in `family` over one part of its ports, split at `starts` (pieces
/// within which no foreign rule's constant changes; the last ends at `end`): one finding per
/// foreign decision, extended over the pieces where it stays the same.
fn part_findings(
    tables: &ForeignTables,
    rule: &Rule,
    family: Family,
    starts: &[u32],
    end: u16,
) -> Vec<ForeignFinding> {
    let mut out = Vec::new();
    let mut open: Vec<(ForeignFinding, String)> = Vec::new();
    for (k, &s) in starts.iter().enumerate() {
        let e = starts.get(k + 1).map_or(u32::from(end), |n| n - 1);
        let now = piece_findings(tables, rule, family, s as u16, e as u16);
        // Extend the findings that continue; close the others.
        let mut next = Vec::new();
        for (f, key) in now {
            if let Some(pos) = open.iter().position(|(_, k)| *k == key) {
                let (mut prev, k) = open.remove(pos);
                prev.ports.end = e as u16;
                next.push((prev, k));
            } else {
                next.push((f, key));
            }
        }
        out.extend(open.drain(..).map(|(f, _)| f));
        open = next;
    }
    out.extend(open.into_iter().map(|(f, _)| f));
    out
}

/// The findings of `rule` in `family` for the ports `start..=end` (decided alike), each with
/// the key that tells whether the next piece continues it.
fn piece_findings(
    tables: &ForeignTables,
    rule: &Rule,
    family: Family,
    start: u16,
    end: u16,
) -> Vec<(ForeignFinding, String)> {
    let packet = Packet {
        family,
        protocol: rule.protocol,
        port: start,
        source: rule.source,
        destination: None,
    };
    let mut now = Vec::new();
    for d in tables.decide(&packet) {
        let Some(effect) = d.effect(rule.state, rule.protocol) else {
            continue;
        };
        let key = format!("{}|{}|{:?}", d.table, d.chain, d);
        now.push((
            ForeignFinding {
                family,
                protocol: rule.protocol,
                ports: PortRange { start, end },
                source: rule.source,
                state: rule.state,
                policy: rule.policy.to_string(),
                entry: rule.entry,
                message: d.describe(rule.state, rule.protocol),
                decision: d,
                effect,
            },
            key,
        ));
    }
    now
}

/// What [`read`] found.
#[derive(Clone, Debug)]
pub enum ForeignRead {
    /// The foreign tables (maybe none).
    Read(ForeignTables),
    /// Why they could not be read (the rest goes on).
    NotRead(String),
}

/// Reads the foreign tables of the calling thread's network namespace with `nft` (at `nft`;
/// `None` when it is not installed): `nft -j list tables`, then `nft -j list table` for each
/// table that is not iptables-nft's. Never fails: what goes wrong is [`ForeignRead::NotRead`].
pub fn read(nft: Option<&Path>) -> ForeignRead {
    let Some(nft) = nft else {
        return ForeignRead::NotRead("not read: nft missing (apt-get install nftables)".into());
    };
    let run = |args: &[&str]| -> Result<String, String> {
        let (out, command) = crate::backend::run(nft, args).map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "`{command}` exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let listed = (|| -> Result<ForeignTables, String> {
        let tables = ForeignTables::parse(&run(&["-j", "list", "tables"])?)?;
        let mut all = ForeignTables::default();
        let mut names: Vec<String> = tables.tables.clone();
        // A table of iptables-nft's name may still hold a foreign base chain: look only when
        // the listing of tables cannot say, i.e. never for the common case. (They are listed
        // by iptables-save; see the module docs.)
        names.retain(|t| {
            let (f, n) = t.split_once(' ').unwrap_or((t, ""));
            !is_iptables_table(f, n)
        });
        for t in names {
            let (f, n) = t.split_once(' ').unwrap_or((&t, ""));
            all.add(&run(&["-j", "list", "table", f, n])?)?;
        }
        Ok(all)
    })();
    match listed {
        Ok(t) => ForeignRead::Read(t),
        Err(e) => ForeignRead::NotRead(format!("not read: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `nft -j list ruleset` (nft 1.0.6) of a lab namespace holding the firewalld-style,
    /// kube-proxy-style and hand-written tables of `tests/fixtures/nft/*.nft` and a few
    /// iptables-nft rules (`capture.sh` regenerates it).
    const RULESET: &str = include_str!("../tests/fixtures/nft/ruleset.json");

    fn tables() -> ForeignTables {
        ForeignTables::parse(RULESET).unwrap()
    }

    fn v4(protocol: Protocol, port: u16, source: Option<&str>) -> Packet {
        Packet {
            family: Family::Ipv4,
            protocol,
            port,
            source: source.map(|s| s.parse().unwrap()),
            destination: None,
        }
    }

    fn v6(protocol: Protocol, port: u16, source: Option<&str>) -> Packet {
        Packet {
            family: Family::Ipv6,
            ..v4(protocol, port, source)
        }
    }

    /// The decision of `table`'s chain `chain` for `p` at `hook`.
    fn one(t: &ForeignTables, p: &Packet, hook: Hook, chain: &str) -> ForeignDecision {
        let all = t.decide_at(p, hook);
        all.iter()
            .find(|d| d.chain == chain)
            .cloned()
            .unwrap_or_else(|| panic!("no decision of {chain} at {hook}: {all:#?}"))
    }

    #[test]
    fn iptables_nft_tables_are_left_out() {
        let t = tables();
        assert_eq!(
            t.tables,
            [
                "inet firewalld",
                "ip kube-proxy",
                "ip6 handmade",
                "netdev edge"
            ]
        );
        assert!(
            t.base_chains
                .iter()
                .all(|c| !IPTABLES_CHAINS.contains(&c.chain.as_str())),
            "{:?}",
            t.base_chains
        );
        let names: Vec<String> = t
            .base_chains
            .iter()
            .map(|c| format!("{} {} {} {}", c.table, c.chain, c.hook, c.priority_name))
            .collect();
        assert!(names.contains(&"inet firewalld filter_INPUT input filter + 10".to_string()));
        assert!(names.contains(&"ip kube-proxy filter-input input -110".to_string()));
        assert!(names.contains(&"ip kube-proxy filter-prerouting prerouting dstnat - 10".into()));
        assert!(names.contains(&"ip kube-proxy nat-prerouting prerouting dstnat".into()));
        assert!(names.contains(&"ip6 handmade input input filter - 5".into()));
        assert!(names.contains(&"netdev edge ingress ingress -500".into()));
        // output hooks are not on the way in
        assert!(
            !names.iter().any(|n| n.contains("filter-output")),
            "{names:?}"
        );
        // iptables-nft's tables alone: nothing foreign
        let ipt: Value = serde_json::from_str(RULESET).unwrap();
        let only: Vec<&Value> = ipt["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| {
                let v = o.as_object().unwrap().values().next().unwrap();
                let name = v.get("table").or(v.get("name")).and_then(Value::as_str);
                matches!(name, Some("filter" | "nat" | "raw")) || o.get("metainfo").is_some()
            })
            .collect();
        assert!(only.len() > 5);
        let t = ForeignTables::parse(&serde_json::json!({ "nftables": only }).to_string()).unwrap();
        assert!(t.is_empty() && t.tables.is_empty(), "{:?}", t.tables);
        // a native base chain nft added to `ip filter` is not iptables' own
        let native = r#"{"nftables": [{"table": {"family": "ip", "name": "filter", "handle": 1}},
            {"chain": {"family": "ip", "table": "filter", "name": "input", "handle": 2, "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}}]}"#;
        let t = ForeignTables::parse(native).unwrap();
        assert_eq!(t.base_chains.len(), 1);
        assert_eq!(
            t.decide(&v4(Protocol::Tcp, 80, None))[0]
                .verdict
                .apparent(Protocol::Tcp),
            Some(State::Filtered)
        );
        assert!(ForeignTables::parse("[]").is_err() && ForeignTables::parse("{").is_err());
    }

    #[test]
    fn firewalld_drops_rejects_and_accepts_by_port() {
        let t = tables();
        let tcp = Protocol::Tcp;
        // an explicit drop, in a chain reached by jump and goto
        let d = one(&t, &v4(tcp, 8443, None), Hook::Input, "filter_INPUT");
        assert_eq!(d.verdict, Verdict::Drop);
        assert!(d.certain, "{d:#?}");
        assert_eq!(d.rule.as_ref().unwrap().chain, "filter_IN_public_deny");
        assert_eq!(d.rule.as_ref().unwrap().index, 1);
        assert_eq!(d.matched, "tcp dport 8443");
        assert_eq!(
            d.via,
            [
                "filter_INPUT_ZONES",
                "filter_IN_public",
                "filter_IN_public_deny"
            ]
        );
        assert_eq!(
            d.describe(State::Open, tcp),
            "table inet firewalld, chain filter_INPUT (input hook, priority filter + 10) rule 1 \
             of filter_IN_public_deny drops tcp dport 8443: a drop in another table is final: \
             it wins over portwarden's accept"
        );
        assert_eq!(d.effect(State::Open, tcp), Some(Effect::Wins));
        // after iptables' INPUT: portwarden's drop or reject decides first
        assert_eq!(d.effect(State::Filtered, tcp), None);
        assert_eq!(d.effect(State::Closed, tcp), None);
        // allowed ports: accepted (the accept ends only firewalld's chain)
        for port in [443, 80] {
            let d = one(&t, &v4(tcp, port, None), Hook::Input, "filter_INPUT");
            assert_eq!(
                (d.verdict.clone(), d.certain),
                (Verdict::Accept, true),
                "{d:#?}"
            );
            assert_eq!(d.effect(State::Filtered, tcp), None);
            assert!(d.describe(State::Filtered, tcp).ends_with(
                "an accept ends only that table's chain, so portwarden's drop still applies"
            ));
        }
        // th dport ranges hold for UDP too
        let d = one(
            &t,
            &v6(Protocol::Udp, 5005, None),
            Hook::Input,
            "filter_INPUT",
        );
        assert_eq!(d.verdict, Verdict::Accept);
        // everything else: the final reject of filter_INPUT
        let d = one(&t, &v4(tcp, 12345, None), Hook::Input, "filter_INPUT");
        assert_eq!(
            d.verdict,
            Verdict::Reject {
                with: "icmpx admin-prohibited".into()
            }
        );
        assert!(d.certain);
        assert_eq!(
            (
                d.rule.as_ref().unwrap().chain.as_str(),
                d.rule.as_ref().unwrap().index
            ),
            ("filter_INPUT", 6)
        );
        assert_eq!(d.verdict.apparent(tcp), Some(State::Filtered));
        assert_eq!(d.effect(State::Open, tcp), Some(Effect::Wins));
    }

    #[test]
    fn sources_decide_only_when_the_packet_says_where_it_comes_from() {
        let t = tables();
        let tcp = Protocol::Tcp;
        let at = |p: Packet| one(&t, &p, Hook::Input, "filter_INPUT");
        // 22 is rejected with a reset for 203.0.113.0/24, accepted for others
        let d = at(v4(tcp, 22, Some("203.0.113.9/32")));
        assert_eq!(
            d.verdict,
            Verdict::Reject {
                with: "tcp reset".into()
            }
        );
        assert!(d.certain);
        assert_eq!(d.verdict.apparent(tcp), Some(State::Closed));
        assert_eq!(
            at(v4(tcp, 22, Some("198.51.100.0/24"))).verdict,
            Verdict::Accept
        );
        let d = at(v4(tcp, 22, None));
        assert_eq!(
            d.verdict,
            Verdict::Reject {
                with: "tcp reset".into()
            }
        );
        assert!(!d.certain, "some sources only: {d:#?}");
        assert!(
            d.unsure.iter().any(|u| u == "ip saddr 203.0.113.0/24"),
            "{:?}",
            d.unsure
        );
        assert!(
            d.summary().contains(" may reject (with tcp reset) "),
            "{}",
            d.summary()
        );
        assert_eq!(d.effect(State::Open, tcp), Some(Effect::May));
        // a network wholly inside 203.0.113.0/24 is rejected; one overlapping it may be
        assert!(at(v4(tcp, 22, Some("203.0.113.128/25"))).certain);
        assert!(!at(v4(tcp, 22, Some("203.0.0.0/16"))).certain);
        // IPv6 packets never match `ip saddr`
        assert_eq!(at(v6(tcp, 22, None)).verdict, Verdict::Accept);
        // a named interval set
        let d = at(v4(tcp, 9050, Some("192.0.2.77/32")));
        assert_eq!((d.verdict, d.certain), (Verdict::Accept, true));
        assert_eq!(
            at(v4(tcp, 9050, Some("198.51.100.7/32"))).verdict,
            Verdict::Accept
        );
        let d = at(v4(tcp, 9050, Some("10.0.0.0/8")));
        assert!(
            matches!(d.verdict, Verdict::Reject { .. }) && d.certain,
            "{d:#?}"
        );
        let d = at(v4(tcp, 9050, None));
        assert!(
            matches!(d.verdict, Verdict::Reject { .. }) && !d.certain,
            "{d:#?}"
        );
        assert!(
            d.unsure.iter().any(|u| u == "ip saddr @allowed_src_v4"),
            "{:?}",
            d.unsure
        );
    }

    #[test]
    fn what_cannot_be_evaluated_may_decide() {
        let t = tables();
        let tcp = Protocol::Tcp;
        // firewalld's IPv6 reverse-path filter: fib cannot be evaluated
        let d = one(
            &t,
            &v6(tcp, 443, None),
            Hook::Prerouting,
            "filter_PREROUTING",
        );
        assert_eq!(d.verdict, Verdict::Drop);
        assert!(!d.certain);
        assert!(
            d.unsure[0].starts_with("fib saddr . mark . iif oif"),
            "{:?}",
            d.unsure
        );
        assert_eq!(d.effect(State::Open, tcp), Some(Effect::May));
        // ... and does not apply to IPv4 (meta nfproto ipv6 is false)
        let d = one(
            &t,
            &v4(tcp, 443, None),
            Hook::Prerouting,
            "filter_PREROUTING",
        );
        assert_eq!(
            (d.verdict, d.certain),
            (
                Verdict::Policy {
                    policy: "accept".into()
                },
                true
            )
        );
        // kube-proxy: a NodePort without endpoints is rejected on the node's NodePort address
        let d = one(&t, &v4(tcp, 30080, None), Hook::Input, "filter-input");
        assert_eq!(
            d.verdict,
            Verdict::Reject {
                with: "icmp port-unreachable".into()
            }
        );
        assert!(!d.certain, "the destination is not known");
        assert_eq!(d.rule.as_ref().unwrap().chain, "reject-chain");
        assert_eq!(d.priority_name, "-110");
        let mut p = v4(tcp, 30080, None);
        p.destination = Some("10.0.0.2".parse().unwrap());
        let d = one(&t, &p, Hook::Input, "filter-input");
        assert!(
            d.certain && d.via == ["nodeport-endpoints-check", "reject-chain"],
            "{d:#?}"
        );
        // an ICMP port-unreachable makes a TCP port look filtered: closed ports change
        assert_eq!(
            d.effect(State::Closed, tcp),
            Some(Effect::Wins),
            "before iptables' INPUT"
        );
        assert_eq!(d.effect(State::Filtered, tcp), None);
        p.destination = Some("10.0.0.3".parse().unwrap());
        assert!(one(&t, &p, Hook::Input, "filter-input").verdict.accepts());
        // other ports: the vmap has no element for them
        let d = one(&t, &v4(tcp, 30081, None), Hook::Input, "filter-input");
        assert!(d.verdict.accepts() && d.certain, "{d:#?}");
        // a dnat rewrites: may decide
        let d = one(&t, &v4(tcp, 443, None), Hook::Prerouting, "nat-prerouting");
        assert!(
            matches!(&d.verdict, Verdict::Nat { what } if what.contains("10.0.0.2")),
            "{d:#?}"
        );
        assert_eq!(d.effect(State::Open, tcp), Some(Effect::May));
        // no kube-proxy chain for IPv6
        assert!(
            t.decide(&v6(tcp, 30080, None))
                .iter()
                .all(|d| d.table != "ip kube-proxy")
        );
        // a limit cannot be evaluated: the policy drop may follow
        let d = one(&t, &v6(Protocol::Udp, 53, None), Hook::Input, "input");
        assert_eq!(
            d.verdict,
            Verdict::Policy {
                policy: "drop".into()
            }
        );
        assert!(
            !d.certain && d.unsure.contains(&"limit".to_string()),
            "{d:#?}"
        );
        assert!(
            d.describe(State::Closed, Protocol::Udp)
                .contains("may drop by its policy")
        );
        // netdev ingress decides first of all
        let d = one(&t, &v4(tcp, 6666, None), Hook::Ingress, "ingress");
        assert_eq!((d.verdict.clone(), d.certain), (Verdict::Drop, true));
        assert_eq!(d.effect(State::Closed, tcp), Some(Effect::Wins));
        assert!(d.describe(State::Closed, tcp).ends_with(
            "it decides before portwarden's rules are reached: the port looks filtered, not closed"
        ));
    }

    #[test]
    fn the_hand_written_table_with_a_drop_policy() {
        let t = tables();
        let tcp = Protocol::Tcp;
        let at = |p: Packet| one(&t, &p, Hook::Input, "input");
        // `!=` with a set, an IPv6 prefix set
        let d = at(v6(tcp, 80, Some("2001:db8:1::5/128")));
        assert_eq!((d.verdict, d.certain), (Verdict::Accept, true));
        let d = at(v6(tcp, 22, Some("2001:db8:2::1/128")));
        assert_eq!(
            d.verdict,
            Verdict::Reject {
                with: "tcp reset".into()
            },
            "`<` 1024"
        );
        let d = at(v6(tcp, 8000, Some("2001:db8:3::1/128")));
        assert_eq!(
            (d.verdict, d.certain),
            (
                Verdict::Policy {
                    policy: "drop".into()
                },
                true
            )
        );
        let d = at(v6(tcp, 7050, None));
        assert!(
            !d.certain && d.unsure.iter().any(|u| u == "meter"),
            "{d:#?}"
        );
        // at priority filter - 5, before iptables' INPUT: a drop changes a closed port
        let d = at(v6(tcp, 8000, Some("2001:db8:3::1/128")));
        assert_eq!(d.effect(State::Closed, tcp), Some(Effect::Wins));
        assert_eq!(d.effect(State::Filtered, tcp), None);
    }

    #[test]
    fn findings_group_the_managed_ranges_a_foreign_chain_decides() {
        use portwarden_policy::Rule;
        let t = tables();
        let rule = |entry, start, end, source: Option<&str>, state| Rule {
            priority: 1,
            policy: "web".into(),
            entry,
            protocol: Protocol::Tcp,
            ports: PortRange { start, end },
            source: source.map(|s| s.parse().unwrap()),
            state,
            expires: None,
        };
        let intent = NodeIntent {
            policies: vec!["web".into()],
            rules: vec![
                rule(0, 8440, 8450, Some("192.0.2.0/24"), State::Open),
                rule(1, 443, 443, Some("192.0.2.0/24"), State::Open),
                rule(2, 20, 30, Some("192.0.2.0/24"), State::Open),
            ],
            report_unlisted: false,
        };
        let f = findings(&t, &intent, &Failsafe::default());
        let fw: Vec<String> = f
            .iter()
            .filter(|f| f.decision.chain == "filter_INPUT")
            .map(|f| format!("{} {:?} {}", f.ports, f.decision.verdict, f.entry))
            .collect();
        assert_eq!(
            fw,
            [
                "8440-8442 Reject { with: \"icmpx admin-prohibited\" } 0",
                "8443 Drop 0",
                "8444-8450 Reject { with: \"icmpx admin-prohibited\" } 0",
                "20-21 Reject { with: \"icmpx admin-prohibited\" } 2",
                "23-30 Reject { with: \"icmpx admin-prohibited\" } 2",
            ],
            "443 is accepted: nothing; 22 is a failsafe port"
        );
        assert!(f.iter().all(|f| f.family == Family::Ipv4), "a v4 source");
        // kube-proxy's ClusterIP dnat of 443 may apply: the destination is not known
        let others: Vec<&ForeignFinding> = f
            .iter()
            .filter(|f| f.decision.chain != "filter_INPUT")
            .collect();
        assert_eq!(others.len(), 1, "{others:#?}");
        assert_eq!(others[0].effect, Effect::May);
        assert!(
            others[0].message.contains(
                "chain nat-prerouting (prerouting hook, priority dstnat) rule 1 of services may \
                 rewrite (dnat to 10.0.0.2:6443) ip daddr 10.96.0.1 tcp dport 443"
            ),
            "{}",
            others[0].message
        );
        assert!(
            f.iter()
                .filter(|f| f.decision.chain == "filter_INPUT")
                .all(|f| f.effect == Effect::Wins)
        );
        let shown = f[1].to_string();
        assert!(
            shown.starts_with(
                "IPv4 8443/tcp from 192.0.2.0/24 (open by web entry 0): table inet firewalld"
            ),
            "{shown}"
        );
        let v = serde_json::to_value(&f[1]).unwrap();
        assert_eq!(v["ports"], "8443");
        assert_eq!(v["decision"]["verdict"], "drop");
        assert_eq!(v["decision"]["priority_name"], "filter + 10");
        assert_eq!(v["decision"]["rule"]["chain"], "filter_IN_public_deny");
        assert_eq!(v["effect"], "wins");
        // a higher-precedence entry for the same source decides its ports
        let mut shadowed = intent.clone();
        shadowed
            .rules
            .insert(0, rule(9, 8443, 8443, None, State::Filtered));
        let f = findings(&t, &shadowed, &Failsafe::default());
        assert!(
            f.iter()
                .all(|f| !(f.entry == 0 && f.ports.start <= 8443 && 8443 <= f.ports.end))
        );
        // filtered everywhere: firewalld's later reject and drop change nothing
        let quiet = NodeIntent {
            rules: vec![rule(0, 8000, 9000, Some("192.0.2.0/24"), State::Filtered)],
            ..intent
        };
        let f = findings(&t, &quiet, &Failsafe::default());
        assert!(f.is_empty(), "{f:#?}");
        assert!(findings(&ForeignTables::default(), &shadowed, &Failsafe::default()).is_empty());
    }

    #[test]
    fn without_nft_the_tables_are_not_read_and_nothing_stops() {
        match read(None) {
            ForeignRead::NotRead(why) => {
                assert_eq!(why, "not read: nft missing (apt-get install nftables)");
            }
            ForeignRead::Read(t) => panic!("read without nft: {t:?}"),
        }
        let plan = crate::Plan::compute(&NodeIntent::default(), &Failsafe::default(), &[], &[])
            .with_owners(
                &read(None),
                &NodeIntent::default(),
                &Failsafe::default(),
                None,
            );
        let v = serde_json::to_value(&plan).unwrap();
        assert_eq!(
            v["foreign_tables_unread"],
            "not read: nft missing (apt-get install nftables)"
        );
        assert!(v["foreign_tables"].as_array().unwrap().is_empty());
        assert!(v["mixed_backends"].is_null());
    }

    #[test]
    fn priorities_are_named_as_nft_names_them() {
        assert_eq!(priority_name("inet", Hook::Input, 10), "filter + 10");
        assert_eq!(priority_name("inet", Hook::Prerouting, -140), "mangle + 10");
        assert_eq!(priority_name("ip", Hook::Prerouting, -110), "dstnat - 10");
        assert_eq!(priority_name("ip", Hook::Input, -110), "-110");
        assert_eq!(priority_name("ip", Hook::Prerouting, -100), "dstnat");
        assert_eq!(priority_name("ip", Hook::Prerouting, -300), "raw");
        assert_eq!(priority_name("ip6", Hook::Input, -5), "filter - 5");
        assert_eq!(priority_name("netdev", Hook::Ingress, -500), "-500");
        assert_eq!(priority_name("netdev", Hook::Ingress, -150), "-150");
        assert_eq!(priority_name("inet", Hook::Input, 100), "srcnat");
        assert_eq!(priority_name("inet", Hook::Forward, 100), "100");
    }

    #[test]
    fn subtracting_ranges() {
        let r = |s, e| PortRange { start: s, end: e };
        assert_eq!(
            subtract(r(1, 100), &[r(22, 22), r(50, 200)]),
            [r(1, 21), r(23, 49)]
        );
        assert_eq!(subtract(r(1, 100), &[r(0, 65535)]), []);
        assert_eq!(subtract(r(5, 5), &[]), [r(5, 5)]);
    }
}
