//! What a foreign iptables rule matches and decides, as far as portwarden's entries go (pure):
//! its `-j`/`-g` target ([`target_of`]), and which rules of an intent it decides differently
//! when it sits above portwarden's jump ([`decides_differently`]), for the shadowing
//! [`crate::diff`] reports. Only ports, protocol, source, loopback and connection state are
//! understood; a rule with other matches counts as matching, so a shadowing is reported rather
//! than missed.

use std::net::IpAddr;

use ipnet::IpNet;
use portwarden_policy::{NodeIntent, PortRange, Protocol, Rule, State};

use crate::place::Family;
use crate::save::tokens;

/// The `-j`/`-g` target of a rule specification.
pub fn target_of(spec: &str) -> Option<&str> {
    let mut it = spec.split_whitespace();
    let mut found = None;
    while let Some(t) = it.next() {
        if t == "-j" || t == "-g" || t == "--jump" || t == "--goto" {
            found = it.next();
        }
    }
    found
}

/// Targets that never decide a packet's fate.
const NON_TERMINATING: &[&str] = &[
    "LOG",
    "NFLOG",
    "ULOG",
    "MARK",
    "CONNMARK",
    "CT",
    "NOTRACK",
    "TRACE",
    "AUDIT",
    "CLASSIFY",
    "TCPMSS",
    "DSCP",
    "TOS",
    "TTL",
    "HL",
    "SECMARK",
    "CONNSECMARK",
    "IDLETIMER",
    "LED",
];

/// What a foreign rule's matches say, as far as ports and sources go.
#[derive(Debug, Default)]
struct ForeignMatch {
    protocol: Option<Protocol>,
    /// `None`: any (or not understood) port.
    ports: Option<Vec<PortRange>>,
    source: Option<IpNet>,
    target: Option<String>,
    reject_with: Option<String>,
    /// A protocol other than tcp/udp (e.g. icmp): can never hit an entry.
    other_protocol: bool,
    /// Matches only loopback (`-i lo`), which portwarden does not govern.
    loopback_only: bool,
    /// Matches only packets of existing connections (`--ctstate`/`--state` of ESTABLISHED
    /// and/or RELATED): never a probe or a new connection.
    existing_only: bool,
}

fn parse_ports(list: &str) -> Option<Vec<PortRange>> {
    list.split(',')
        .map(|p| {
            let (a, b) = p.split_once(':').unwrap_or((p, p));
            let start = if a.is_empty() { 0 } else { a.parse().ok()? };
            let end = if b.is_empty() { 65535 } else { b.parse().ok()? };
            Some(PortRange { start, end })
        })
        .collect()
}

fn analyse(spec: &str) -> ForeignMatch {
    let t = tokens(spec);
    let mut m = ForeignMatch::default();
    let mut i = 0;
    while i < t.len() {
        let negated = i > 0 && t[i - 1] == "!";
        let next = t.get(i + 1).map(String::as_str);
        match (t[i].as_str(), next) {
            ("-p" | "--protocol", Some(p)) if !negated => match p {
                "tcp" | "6" => m.protocol = Some(Protocol::Tcp),
                "udp" | "17" => m.protocol = Some(Protocol::Udp),
                "all" | "0" => {}
                _ => m.other_protocol = true,
            },
            ("-s" | "--source", Some(s)) if !negated => {
                m.source = s
                    .parse()
                    .ok()
                    .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from));
            }
            ("--dport" | "--destination-port" | "--dports" | "--destination-ports", Some(p))
                if !negated =>
            {
                m.ports = parse_ports(p);
            }
            ("-i" | "--in-interface", Some("lo")) if !negated => m.loopback_only = true,
            ("--ctstate" | "--state", Some(states)) if !negated => {
                m.existing_only = states
                    .split(',')
                    .all(|s| s == "ESTABLISHED" || s == "RELATED");
            }
            ("-j" | "-g" | "--jump" | "--goto", Some(j)) => m.target = Some(j.to_string()),
            ("--reject-with", Some(r)) => m.reject_with = Some(r.to_string()),
            _ => {}
        }
        i += 1;
    }
    m
}

/// The rules of `intent` (of this family) whose packets the foreign rule `spec`, placed before
/// them, decides differently from the rule, as far as its ports, protocol and source tell, in
/// `intent`'s order. A rule with matches this does not understand counts as matching (reported
/// rather than missed).
pub(crate) fn decides_differently<'i>(
    family: Family,
    spec: &str,
    intent: &'i NodeIntent,
) -> Vec<&'i Rule> {
    let m = analyse(spec);
    let Some(target) = m.target.as_deref() else {
        return Vec::new();
    };
    if NON_TERMINATING.contains(&target) || m.other_protocol || m.loopback_only || m.existing_only {
        return Vec::new();
    }
    let effect = |protocol: Protocol| -> Option<State> {
        match target {
            "ACCEPT" => Some(State::Open),
            "DROP" => Some(State::Filtered),
            "REJECT" => match (protocol, m.reject_with.as_deref()) {
                (Protocol::Tcp, Some("tcp-reset")) => Some(State::Closed),
                (
                    Protocol::Udp,
                    None | Some("icmp-port-unreachable" | "icmp6-port-unreachable"),
                ) => Some(State::Closed),
                _ => Some(State::Filtered),
            },
            _ => None, // a jump to another chain: may decide anything
        }
    };
    let mut out = Vec::new();
    for r in &intent.rules {
        if r.source.is_some_and(|n| !family.holds(&n)) {
            continue;
        }
        let proto_ok = m.protocol.is_none_or(|p| p == r.protocol);
        let ports_ok = m
            .ports
            .as_ref()
            .is_none_or(|ps| ps.iter().any(|p| p.overlaps(&r.ports)));
        let source_ok = match (m.source, r.source) {
            (Some(a), Some(b)) => a.contains(&b.network()) || b.contains(&a.network()),
            _ => true,
        };
        if proto_ok && ports_ok && source_ok && effect(r.protocol) != Some(r.state) {
            out.push(r);
        }
    }
    out
}
