//! Reading the decisions portwarden's `INPUT` path makes out of one family's filter table.
//!
//! [`read`] walks the rules a probe meets from portwarden's jump in `INPUT` on: the head of
//! `PORTWARDEN-INPUT` (loopback and replies never match a scanner's probe; a failsafe `RETURN`
//! hands its ports back to the host's rules), the port dispatch and the leaf chains, and
//! flattens them into one first-match list of [`Decision`]s. It depends only on what the rules
//! match and do, never on their comments, so it reads any merging of entries alike.
//!
//! A rule it cannot evaluate for a probe from the network (a negation, an interface other than
//! `lo`, a module it does not know, a `RETURN` below `PORTWARDEN-INPUT`, a jump to a chain that
//! is not there) is left out and named in [`Decisions::unread`]: portwarden rewrites such a rule
//! (it is drift), and the exposure before the change is then approximate for its packets.

use ipnet::IpNet;
use portwarden_policy::{PortRange, Protocol, Timestamp};

use crate::chains::{self, HOOK_CHAIN, INPUT_CHAIN};
use crate::place::Family;
use crate::save::{Ruleset, Table, tokens};

use super::Exposure;

/// How deep jumps may nest before the walk gives up (iptables forbids loops; a hostile dump may
/// still hold one). portwarden's own chains nest three deep.
const MAX_DEPTH: usize = 8;

/// One rule of the flattened first-match list: packets of `protocol` to one of `ports` from
/// `source` (any source when `None`) get `exposure`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Source network; `None` for any source of the family.
    pub source: Option<IpNet>,
    /// Protocol.
    pub protocol: Protocol,
    /// Destination ports, sorted, not overlapping.
    pub ports: Vec<PortRange>,
    /// What the packets meet.
    pub exposure: Exposure,
}

impl Decision {
    /// Whether the decision applies to a probe of `protocol` to `port` from `source`.
    pub fn matches(&self, protocol: Protocol, port: u16, source: std::net::IpAddr) -> bool {
        self.protocol == protocol
            && self.ports.iter().any(|r| r.contains(port))
            && self.source.is_none_or(|n| n.contains(&source))
    }
}

/// What portwarden's rules of one family decide, first match first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decisions {
    /// The flattened rules; a probe no rule matches is [`Exposure::Unmanaged`].
    pub rules: Vec<Decision>,
    /// Rules that could not be evaluated and were left out, each as `CHAIN#N \`SPEC\`: why`.
    pub unread: Vec<String>,
}

impl Decisions {
    /// The first-match decision for a probe.
    pub fn decide(&self, protocol: Protocol, port: u16, source: std::net::IpAddr) -> Exposure {
        self.rules
            .iter()
            .find(|d| d.matches(protocol, port, source))
            .map_or(Exposure::Unmanaged, |d| d.exposure)
    }
}

/// What a rule selects, as far as a probe is concerned: `None` fields match anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Selection {
    protocol: Option<Protocol>,
    ports: Option<Vec<PortRange>>,
    source: Option<IpNet>,
}

/// What a rule does with what it selects.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    Accept,
    Drop,
    /// `REJECT` with its `--reject-with` (iptables-save always prints it).
    Reject(String),
    Return,
    Jump(String),
    /// No `-j`: the rule only counts.
    None,
}

/// A rule as read: it never matches a probe (loopback, replies, expired), or it selects and
/// acts.
enum Parsed {
    Never,
    Rule(Selection, Target),
}

/// The decisions of `family`'s filter table `ruleset` at `now` (an expired `--datestop` no
/// longer matches). Without portwarden's jump in `INPUT` nothing is decided (every probe is
/// [`Exposure::Unmanaged`]). Foreign rules in `INPUT` above the jump are not considered: the
/// plan reports those as shadowing.
pub fn read(family: Family, ruleset: &Ruleset, now: Timestamp) -> Decisions {
    let mut out = Decisions::default();
    let Some(table) = ruleset.table("filter") else {
        return out;
    };
    let Some(hook) = table.chain(HOOK_CHAIN) else {
        return out;
    };
    let Some(jump) = hook
        .rules
        .iter()
        .find(|r| chains::is_our_jump(HOOK_CHAIN, &r.spec))
    else {
        return out;
    };
    let mut walk = Walk {
        family,
        table,
        now,
        out: &mut out,
    };
    walk.rule(HOOK_CHAIN, 0, &jump.spec, &Selection::default(), 0);
    out
}

/// One walk through a table's chains.
struct Walk<'a> {
    family: Family,
    table: &'a Table,
    now: Timestamp,
    out: &'a mut Decisions,
}

impl Walk<'_> {
    /// Every rule of `chain` for packets `outer` selects.
    fn chain(&mut self, chain: &str, outer: &Selection, depth: usize) {
        let Some(c) = self.table.chain(chain) else {
            return;
        };
        for (i, r) in c.rules.iter().enumerate() {
            self.rule(chain, i + 1, &r.spec, outer, depth);
        }
    }

    /// The rule at `position` of `chain`, for packets `outer` selects; one that cannot be
    /// evaluated is named in [`Decisions::unread`].
    fn rule(&mut self, chain: &str, position: usize, spec: &str, outer: &Selection, depth: usize) {
        if let Err(why) = self.try_rule(chain, spec, outer, depth) {
            let line = format!("{chain}#{position} `{spec}`: {why}");
            self.out.unread.push(line);
        }
    }

    fn try_rule(
        &mut self,
        chain: &str,
        spec: &str,
        outer: &Selection,
        depth: usize,
    ) -> Result<(), String> {
        let (selection, target) = match parse(spec, self.now)? {
            Parsed::Never => return Ok(()),
            Parsed::Rule(s, t) => (s, t),
        };
        let Some(selection) = intersect(outer, &selection) else {
            return Ok(());
        };
        let exposure = match target {
            Target::None => return Ok(()),
            Target::Jump(to) => {
                if !chains::is_owned(&to) || self.table.chain(&to).is_none() {
                    return Err("a jump to a chain that is not portwarden's or not there".into());
                }
                if depth >= MAX_DEPTH {
                    return Err("jumps nested too deep".into());
                }
                self.chain(&to, &selection, depth + 1);
                return Ok(());
            }
            Target::Return if chain == INPUT_CHAIN => Exposure::Unmanaged,
            Target::Return => return Err("a RETURN below PORTWARDEN-INPUT".into()),
            Target::Accept => Exposure::Open,
            Target::Drop => Exposure::Filtered,
            Target::Reject(with) => {
                self.reject(&selection, &with);
                return Ok(());
            }
        };
        self.push(&selection, |_| exposure);
        Ok(())
    }

    /// A `REJECT --reject-with WITH`: closed where nmap sees the answer as closed (a reset to a
    /// TCP probe, a port unreachable to a UDP one), filtered for every other ICMP error.
    fn reject(&mut self, selection: &Selection, with: &str) {
        let port_unreachable = match self.family {
            Family::Ipv4 => "icmp-port-unreachable",
            Family::Ipv6 => "icmp6-port-unreachable",
        };
        self.push(selection, |protocol| {
            let closed = match protocol {
                Protocol::Tcp => with == "tcp-reset",
                Protocol::Udp => with == port_unreachable,
            };
            if closed {
                Exposure::Closed
            } else {
                Exposure::Filtered
            }
        });
    }

    /// Appends the decision for `selection`, one per protocol it covers.
    fn push(&mut self, selection: &Selection, exposure: impl Fn(Protocol) -> Exposure) {
        let protocols = match selection.protocol {
            Some(p) => vec![p],
            None => vec![Protocol::Tcp, Protocol::Udp],
        };
        for protocol in protocols {
            self.out.rules.push(Decision {
                source: selection.source,
                protocol,
                ports: selection.ports.clone().unwrap_or_else(|| {
                    vec![PortRange {
                        start: 0,
                        end: 65535,
                    }]
                }),
                exposure: exposure(protocol),
            });
        }
    }
}

/// What both selections select; `None` when nothing.
fn intersect(a: &Selection, b: &Selection) -> Option<Selection> {
    let protocol = match (a.protocol, b.protocol) {
        (Some(x), Some(y)) if x != y => return None,
        (x, y) => x.or(y),
    };
    let source = match (a.source, b.source) {
        (Some(x), Some(y)) if x.contains(&y) => Some(y),
        (Some(x), Some(y)) if y.contains(&x) => Some(x),
        (Some(_), Some(_)) => return None,
        (x, y) => x.or(y),
    };
    let ports = match (&a.ports, &b.ports) {
        (Some(x), Some(y)) => {
            let both = intersect_ranges(x, y);
            if both.is_empty() {
                return None;
            }
            Some(both)
        }
        (x, y) => x.clone().or_else(|| y.clone()),
    };
    Some(Selection {
        protocol,
        ports,
        source,
    })
}

/// The ports in both lists, sorted and joined.
fn intersect_ranges(a: &[PortRange], b: &[PortRange]) -> Vec<PortRange> {
    let mut out: Vec<PortRange> = a
        .iter()
        .flat_map(|x| {
            b.iter().filter(|y| x.overlaps(y)).map(|y| PortRange {
                start: x.start.max(y.start),
                end: x.end.min(y.end),
            })
        })
        .collect();
    normalize(&mut out);
    out
}

/// Sorts `ranges` and joins overlapping and adjacent ones.
pub(crate) fn normalize(ranges: &mut Vec<PortRange>) {
    ranges.sort_by_key(|r| r.start);
    let mut joined: Vec<PortRange> = Vec::with_capacity(ranges.len());
    for r in ranges.drain(..) {
        match joined.last_mut() {
            Some(last) if u32::from(r.start) <= u32::from(last.end) + 1 => {
                last.end = last.end.max(r.end);
            }
            _ => joined.push(r),
        }
    }
    *ranges = joined;
}

/// Reads one rule specification; `Err` says why it cannot be evaluated for a probe.
fn parse(spec: &str, now: Timestamp) -> Result<Parsed, String> {
    let t = tokens(spec);
    let mut selection = Selection::default();
    let mut target = Target::None;
    let mut never = false;
    let mut i = 0;
    while i < t.len() {
        let flag = t[i].as_str();
        let value = t.get(i + 1).map(String::as_str);
        let Some(value) = value else {
            return Err(format!("`{flag}` without a value"));
        };
        match flag {
            "!" => return Err("a negated match".into()),
            "-s" | "--source" => selection.source = Some(source(value)?),
            "-p" | "--protocol" => match value {
                "tcp" => selection.protocol = Some(Protocol::Tcp),
                "udp" => selection.protocol = Some(Protocol::Udp),
                "all" => {}
                // another protocol: no TCP or UDP probe matches
                _ => never = true,
            },
            "-m" | "--match" => {
                if !["tcp", "udp", "multiport", "comment", "time", "conntrack"].contains(&value) {
                    return Err(format!("the match module `{value}`"));
                }
            }
            "--dport" | "--destination-port" | "--dports" | "--destination-ports" => {
                selection.ports = Some(port_list(value)?);
            }
            "--comment" => {}
            "--datestop" => never |= expired(value, now)?,
            "--ctdir" => match value {
                "REPLY" => never = true,
                "ORIGINAL" => {}
                _ => return Err(format!("--ctdir {value}")),
            },
            "-i" | "--in-interface" if value == "lo" => never = true,
            "-j" | "--jump" => target = target_of(value),
            "--reject-with" => target = Target::Reject(value.to_string()),
            _ => return Err(format!("`{flag} {value}`")),
        }
        i += 2;
    }
    Ok(if never {
        Parsed::Never
    } else {
        Parsed::Rule(selection, target)
    })
}

fn target_of(name: &str) -> Target {
    match name {
        "ACCEPT" => Target::Accept,
        "DROP" => Target::Drop,
        // the kernel's default; iptables-save prints --reject-with after it
        "REJECT" => Target::Reject("icmp-port-unreachable".into()),
        "RETURN" => Target::Return,
        other => Target::Jump(other.to_string()),
    }
}

/// `-s` as iptables-save prints it (`10.0.0.0/8`, `10.1.2.3/32`), or a bare address.
fn source(value: &str) -> Result<IpNet, String> {
    value
        .parse::<IpNet>()
        .or_else(|_| value.parse::<std::net::IpAddr>().map(IpNet::from))
        .map(|n| n.trunc())
        .map_err(|_| format!("the source `{value}`"))
}

/// `80`, `8000:8100` or `80,443,8000:8100`.
fn port_list(value: &str) -> Result<Vec<PortRange>, String> {
    let bad = || format!("the port list `{value}`");
    let mut v = value
        .split(',')
        .map(|r| {
            let (a, b) = r.split_once(':').unwrap_or((r, r));
            let start: u16 = a.parse().map_err(|_| bad())?;
            let end: u16 = b.parse().map_err(|_| bad())?;
            if start > end {
                return Err(bad());
            }
            Ok(PortRange { start, end })
        })
        .collect::<Result<Vec<_>, String>>()?;
    normalize(&mut v);
    Ok(v)
}

/// Whether a `--datestop` (UTC, the last second matched) lies before `now`.
fn expired(value: &str, now: Timestamp) -> Result<bool, String> {
    let stop = Timestamp::parse_rfc3339(&format!("{value}Z"))
        .map_err(|_| format!("the --datestop `{value}`"))?;
    Ok(now.unix() > stop.unix())
}
