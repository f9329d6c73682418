//! Both iptables backends holding rules: the classic silent duplication.
//!
//! iptables-legacy (x_tables) and iptables-nft (nf_tables) are separate rule stores, and the
//! kernel runs both: a packet meets legacy's `INPUT` and nft's `INPUT`, and a drop in either is
//! final. A host where one program (an old Docker, a CNI plugin, a hand-run `iptables-legacy`)
//! writes one backend and everything else the other shows only half of its rules to either
//! `iptables` command. portwarden writes the backend it detects ([`crate::backend`]) and moves
//! its own rules out of the other one; the other backend's *foreign* rules it never touches —
//! this module names them, so a plan can say so.
//!
//! Pure: [`BackendHolding::of`] counts what one backend's rulesets hold (every table and chain
//! with rules, or with a policy other than `ACCEPT`; portwarden's own chains and jump are left
//! out, since apply moves them), and [`MixedBackends::of`] reports both when the backend not in
//! use holds anything.

use std::fmt;

use serde::Serialize;

use crate::chains;
use crate::place::Backend;
use crate::place::Family;
use crate::save::Ruleset;

/// A chain that decides something: it has rules, or a policy other than `ACCEPT`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HeldChain {
    /// Family.
    pub family: Family,
    /// Table (`filter`, `nat`, ...).
    pub table: String,
    /// Chain.
    pub chain: String,
    /// Its rules (portwarden's jump not counted).
    pub rules: usize,
    /// Its policy, when it is a built-in chain whose policy is not `ACCEPT`.
    pub policy: Option<String>,
}

impl fmt::Display for HeldChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.family, self.table, self.chain)?;
        let rules = match self.rules {
            0 => String::new(),
            1 => "1 rule".into(),
            n => format!("{n} rules"),
        };
        match (&self.policy, rules.is_empty()) {
            (Some(p), true) => write!(f, " (policy {p})"),
            (Some(p), false) => write!(f, " ({rules}, policy {p})"),
            (None, _) => write!(f, " ({rules})"),
        }
    }
}

/// What one backend holds apart from portwarden's own rules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackendHolding {
    /// The backend.
    pub backend: Backend,
    /// Its chains that decide something, by family, table and chain in listing order.
    pub chains: Vec<HeldChain>,
}

impl BackendHolding {
    /// What `rulesets` (one backend's `*-save` of every table, per family) hold: every chain
    /// with rules or a policy other than `ACCEPT`, portwarden's chains and jump left out.
    pub fn of(backend: Backend, rulesets: &[(Family, &Ruleset)]) -> BackendHolding {
        let mut held = Vec::new();
        for (family, rs) in rulesets {
            for t in &rs.tables {
                let filter = t.name == "filter";
                for c in &t.chains {
                    if filter && chains::is_owned(&c.name) {
                        continue;
                    }
                    let rules = c
                        .rules
                        .iter()
                        .filter(|r| !(filter && chains::is_our_jump(&c.name, &r.spec)))
                        .count();
                    let policy = c.policy.clone().filter(|p| p != "ACCEPT");
                    if rules > 0 || policy.is_some() {
                        held.push(HeldChain {
                            family: *family,
                            table: t.name.clone(),
                            chain: c.name.clone(),
                            rules,
                            policy,
                        });
                    }
                }
            }
        }
        BackendHolding {
            backend,
            chains: held,
        }
    }

    /// Rules held, all chains together.
    pub fn rule_count(&self) -> usize {
        self.chains.iter().map(|c| c.rules).sum()
    }

    fn list(&self) -> String {
        self.chains
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Both backends hold rules: packets meet both.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MixedBackends {
    /// The backend portwarden writes.
    pub in_use: BackendHolding,
    /// The other one, which holds foreign rules.
    pub other: BackendHolding,
}

impl MixedBackends {
    /// The report when `other` (the backend not in use) holds anything; `None` otherwise.
    pub fn of(in_use: BackendHolding, other: BackendHolding) -> Option<MixedBackends> {
        (!other.chains.is_empty()).then_some(MixedBackends { in_use, other })
    }
}

impl fmt::Display for MixedBackends {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "iptables-{} also holds rules: {}; packets meet both backends' rules (a drop in \
             either is final), and `iptables` shows only one of them",
            self.other.backend,
            self.other.list()
        )?;
        if self.in_use.chains.is_empty() {
            write!(
                f,
                " (iptables-{}, which portwarden writes, holds nothing else)",
                self.in_use.backend
            )
        } else {
            write!(
                f,
                " (iptables-{}, which portwarden writes, holds: {})",
                self.in_use.backend,
                self.in_use.list()
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_what_each_backend_holds_without_portwarden_or_empty_defaults() {
        let jump = crate::render::jump_spec(crate::chains::Path::Input);
        let nft = Ruleset::parse(&format!(
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
             :PORTWARDEN-INPUT - [0:0]\n-A INPUT {jump}\n-A INPUT -i lo -j ACCEPT\n\
             -A PORTWARDEN-INPUT -j RETURN\nCOMMIT\n"
        ))
        .unwrap();
        let legacy = Ruleset::parse(
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n\
             :EMPTY - [0:0]\n-A INPUT -p tcp --dport 1 -j DROP\n-A INPUT -p tcp --dport 2 -j DROP\n\
             -A INPUT -p tcp --dport 3 -j DROP\nCOMMIT\n*nat\n:PREROUTING ACCEPT [0:0]\n\
             :DOCKER - [0:0]\n-A DOCKER -i docker0 -j RETURN\n-A DOCKER -j RETURN\nCOMMIT\n",
        )
        .unwrap();
        let in_use = BackendHolding::of(Backend::Nft, &[(Family::Ipv4, &nft)]);
        assert_eq!(in_use.chains.len(), 1, "{:?}", in_use.chains);
        assert_eq!(
            in_use.chains[0].rules, 1,
            "portwarden's jump is not counted"
        );
        let other = BackendHolding::of(Backend::Legacy, &[(Family::Ipv4, &legacy)]);
        assert_eq!(other.rule_count(), 5);
        let m = MixedBackends::of(in_use.clone(), other).unwrap();
        let text = m.to_string();
        assert!(
            text.starts_with(
                "iptables-legacy also holds rules: IPv4 filter INPUT (3 rules), IPv4 filter \
                 FORWARD (policy DROP), IPv4 nat DOCKER (2 rules); packets meet both"
            ),
            "{text}"
        );
        assert!(
            text.ends_with("holds: IPv4 filter INPUT (1 rule))"),
            "{text}"
        );
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["other"]["backend"], "legacy");
        assert_eq!(v["other"]["chains"][2]["chain"], "DOCKER");
        // Only portwarden's rules (or nothing) in the other backend: no report.
        let ours_only = BackendHolding::of(Backend::Legacy, &[(Family::Ipv4, &nft)]);
        assert_eq!(ours_only.rule_count(), 1);
        let empty = Ruleset::parse("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n").unwrap();
        let none = BackendHolding::of(Backend::Legacy, &[(Family::Ipv6, &empty)]);
        assert!(MixedBackends::of(in_use, none).is_none());
    }
}
