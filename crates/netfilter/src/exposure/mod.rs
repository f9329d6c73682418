//! The exposure diff of a plan: what a scanner will see change, in nmap's words, per port range
//! and source class, when the plan is applied.
//!
//! Both sides are read the same way, by [`read()`] from a filter table: *before* from the
//! rules in the kernel now (the rulesets [`crate::Netfilter::plan`] read, not the last policy
//! file), *after* from the rendered intent laid out as the table it becomes
//! ([`desired_ruleset`]); parsing the rendered rules rather than the model guarantees both
//! sides are computed alike. [`mod@diff`] compares them per port segment and source class.
//!
//! Only the `INPUT` path is read: the forward path decides DNAT'ed connections to the node's
//! addresses exactly as `INPUT` decides the same ports (see [`crate::render`]), so it adds no
//! exposure of its own. Foreign rules (above portwarden's jump, in the other backend, in
//! native nftables tables) are not part of it: plans report those separately.
//!
//! # States
//!
//! `open` (`ACCEPT`: the probe reaches the socket — nmap says open when something listens),
//! `closed` (`REJECT` with a TCP reset or a port unreachable), `filtered` (`DROP`, or a
//! `REJECT` with another ICMP error) are nmap's states for what portwarden's rules do.
//! [`Exposure::Unmanaged`] is not an nmap state: no portwarden rule decides the probe (no rule
//! covers the port, or the failsafe head returns it), so the host's own rules do, and a scan
//! shows whatever they make of it.

mod diff;
mod read;

use ipnet::IpNet;
use portwarden_policy::{PortRange, Protocol, Timestamp};
use serde::{Serialize, Serializer};

use crate::chains::HOOK_CHAIN;
use crate::place::Family;
use crate::render::{Desired, Rendered};
use crate::save::{Chain, Ruleset, SavedRule, Table};

pub use diff::changes;
pub use read::{Decision, Decisions, read};

/// What portwarden's rules make of a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Exposure {
    /// Let through (`ACCEPT`).
    Open,
    /// Answered as closed (a TCP reset, an ICMP port unreachable).
    Closed,
    /// Dropped, or answered with another ICMP error.
    Filtered,
    /// Not decided by portwarden: left to the host's rules (see the module docs).
    Unmanaged,
}

impl Exposure {
    /// `open`, `closed`, `filtered` or `unmanaged`.
    pub fn as_str(self) -> &'static str {
        match self {
            Exposure::Open => "open",
            Exposure::Closed => "closed",
            Exposure::Filtered => "filtered",
            Exposure::Unmanaged => "unmanaged",
        }
    }
}

impl std::fmt::Display for Exposure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One change a scanner will see: probes of `protocol` to `ports` from the source class
/// `source` (its addresses that no narrower source of a rule for these ports holds, before or
/// after) meet `before` now and `after` once the plan is applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExposureChange {
    /// Port ranges, sorted, written `1-21,23-255`.
    #[serde(serialize_with = "ser_ports")]
    pub ports: Vec<PortRange>,
    /// Protocol.
    #[serde(serialize_with = "crate::ser::ser_protocol")]
    pub protocol: Protocol,
    /// The source class, named by its CIDR (`0.0.0.0/0`: everyone else).
    pub source: IpNet,
    /// What probes meet now.
    pub before: Exposure,
    /// What they meet after the change.
    pub after: Exposure,
}

impl ExposureChange {
    /// The ports as nmap writes a list: `80`, `1-21,23-255`.
    pub fn ports_text(&self) -> String {
        let v: Vec<String> = self.ports.iter().map(ToString::to_string).collect();
        v.join(",")
    }
}

impl std::fmt::Display for ExposureChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} from {}: {} -> {}",
            self.ports_text(),
            self.protocol,
            self.source,
            self.before,
            self.after
        )
    }
}

fn ser_ports<S: Serializer>(p: &[PortRange], s: S) -> Result<S::Ok, S::Error> {
    let v: Vec<String> = p.iter().map(ToString::to_string).collect();
    s.serialize_str(&v.join(","))
}

/// The exposure diff of a plan and what could not be read for it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExposureDiff {
    /// The changes, IPv4 first.
    pub changes: Vec<ExposureChange>,
    /// Rules of portwarden's chains now in the kernel that could not be evaluated, each with
    /// its family (see [`Decisions::unread`]).
    pub unread: Vec<String>,
}

/// The exposure diff from `current` (each family's parsed `iptables-save`) to `rendered`, at
/// `now` (a rule whose `--datestop` has passed matches nothing).
pub fn compute(
    rendered: &Rendered,
    current: &[(Family, &Ruleset)],
    now: Timestamp,
) -> ExposureDiff {
    let mut out = ExposureDiff::default();
    for (family, rs) in current {
        let before = read(*family, rs, now);
        let after = read(*family, &desired_ruleset(rendered.family(*family)), now);
        out.changes.extend(changes(*family, &before, &after));
        out.unread
            .extend(before.unread.iter().map(|u| format!("{family} {u}")));
    }
    out
}

/// The filter table `desired` makes: its chains, and `INPUT` holding its jump.
pub fn desired_ruleset(desired: &Desired) -> Ruleset {
    let rule = |spec: &String| SavedRule {
        spec: spec.clone(),
        counters: None,
    };
    let mut chains = vec![Chain {
        name: HOOK_CHAIN.to_string(),
        policy: Some("ACCEPT".into()),
        rules: desired.jump.iter().map(rule).collect(),
    }];
    chains.extend(desired.chains.iter().map(|(name, rules)| Chain {
        name: name.clone(),
        policy: None,
        rules: rules.iter().map(rule).collect(),
    }));
    Ruleset {
        tables: vec![Table {
            name: "filter".into(),
            chains,
        }],
        incompatible: Vec::new(),
    }
}

#[cfg(test)]
mod tests;
