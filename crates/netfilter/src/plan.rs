//! [`Plan`]: what `portwarden plan` shows and `portwarden apply` executes.

use portwarden_policy::NodeIntent;
use serde::Serialize;
use std::net::IpAddr;

use crate::diff::{DriftKind, FamilyPlan, Kept, Lookalike, Shadowing, diff};
use crate::exposure::{ExposureChange, ExposureDiff};
use crate::failsafe::Failsafe;
use crate::foreign_nft::{self, ForeignFinding, ForeignRead};
use crate::mixed::MixedBackends;
use crate::place::Backend;
use crate::render::{Conflict, Desired, Family, Rendered, render};
use crate::save::Ruleset;

/// The changes that bring a node's netfilter to its intent, per family.
///
/// Serializes to the `plan -o json` shape of CLI.md, `{"changes": N, "add": [...], "delete":
/// [...]}`, plus `conflicts`, `shadowing`, `lookalikes`, `kept`, `cleanup`, the other owners
/// of the packet path (`foreign_tables`, `foreign_tables_unread`, `mixed_backends`) and a
/// per-family breakdown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Number of items in `add` and `delete`; 0 when the node is converged.
    pub changes: usize,
    /// Everything added, one iptables rule or chain per item, IPv4 first.
    pub add: Vec<String>,
    /// Everything deleted, one iptables rule or chain per item, IPv4 first.
    pub delete: Vec<String>,
    /// Entries that would block failsafe ports (not enforced on those ports).
    pub conflicts: Vec<Conflict>,
    /// Foreign rules above the jump that shadow entries (the jump is moved back to position 1;
    /// the foreign rules themselves are never touched).
    pub shadowing: Vec<Shadowing>,
    /// Chains and rules that look like portwarden's but are not (never written).
    pub lookalikes: Vec<Lookalike>,
    /// Chains of portwarden's that stay, emptied, because foreign rules jump to them.
    pub kept: Vec<Kept>,
    /// portwarden's rules outside the families' transactions, removed after them: in the
    /// backend not in use (a backend switch), or in a table only `nft` can edit (reset).
    pub cleanup: Vec<Cleanup>,
    /// Places that may hold portwarden's rules but could not be read (left as they are):
    /// `plan` exits 1 naming them, `apply` and `reset` do everything else, then fail naming
    /// them.
    pub unread: Vec<Unread>,
    /// Native nftables base chains of other tables (firewalld, kube-proxy, ...) that drop,
    /// reject or may decide packets of managed port ranges differently from portwarden, one per
    /// chain and range (see [`crate::foreign_nft`]); never written. Filled by
    /// [`crate::Netfilter::plan`] when [`crate::Options::owners`] is set.
    pub foreign_tables: Vec<ForeignFinding>,
    /// Why the nftables tables were not read, when they were not (`not read: nft missing
    /// (apt-get install nftables)`); nothing else depends on them.
    pub foreign_tables_unread: Option<String>,
    /// Rules the iptables backend not in use holds (packets meet both backends'); never
    /// written (see [`crate::mixed`]).
    pub mixed_backends: Option<MixedBackends>,
    /// What a scanner will see change once the plan is applied ([`crate::exposure`]), IPv4
    /// first; `None` when not asked for ([`crate::Netfilter::with_exposure`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exposure: Option<Vec<ExposureChange>>,
    /// Rules of portwarden's chains in the kernel that the exposure diff could not evaluate
    /// (left out of its "before"), each with its family, chain, position, rule and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exposure_unread: Vec<String>,
    /// Per-family detail.
    pub families: Vec<FamilyPlan>,
    /// Whether this plan removes everything of portwarden's ([`Plan::reset`]).
    #[serde(skip)]
    pub reset: bool,
    /// The rulesets [`crate::Netfilter::plan`] computed this plan from, with their rules'
    /// counters, when the handle keeps them ([`crate::Netfilter::with_read_kept`]); empty
    /// otherwise. The agent takes its per-entry counters from them when the plan writes
    /// nothing, instead of a second `iptables-save` per family.
    #[serde(skip)]
    pub read: Vec<(Family, Ruleset)>,
}

/// How a [`Cleanup`] is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Via {
    /// One `iptables-restore --noflush` transaction of that backend.
    IptablesRestore,
    /// One `nft -f -` transaction (the table cannot be printed by iptables).
    Nft,
}

/// Removing portwarden's rules from one family of a place the main transactions do not write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Cleanup {
    /// The backend holding them.
    pub backend: Backend,
    /// Family.
    pub family: Family,
    /// How they are removed.
    pub via: Via,
    /// What is removed, one command per item (`iptables-nft -D INPUT ...`, `nft delete ...`).
    pub delete: Vec<String>,
    /// The transaction's input (never empty).
    #[serde(skip)]
    pub script: String,
}

/// A place (one family's filter table of a backend) that could not be read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Unread {
    /// The backend.
    pub backend: Backend,
    /// Family.
    pub family: Family,
    /// Why it could not be read.
    pub error: String,
}

impl std::fmt::Display for Unread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the {} backend's {} filter table ({})",
            self.backend, self.family, self.error
        )
    }
}

impl Cleanup {
    /// The removal of everything of portwarden's that `fp` (a reset plan of `backend`) deletes,
    /// its commands named with the backend (`iptables-nft -D ...`); `None` when converged.
    pub fn from_reset(backend: Backend, fp: &FamilyPlan) -> Option<Cleanup> {
        if fp.is_converged() {
            return None;
        }
        let tool = fp.family.tool();
        let qualified = format!("{tool}-{backend}");
        Some(Cleanup {
            backend,
            family: fp.family,
            via: Via::IptablesRestore,
            delete: fp
                .delete
                .iter()
                .map(|d| match d.strip_prefix(tool) {
                    Some(rest) => format!("{qualified}{rest}"),
                    None => d.clone(),
                })
                .collect(),
            script: fp.restore.clone(),
        })
    }
}

impl Plan {
    /// Computes a plan from the current rulesets (pure).
    ///
    /// `current` holds each family's parsed `iptables-save`; families that are not listed are
    /// left out of the plan. `node_addresses` are the node's own addresses, whose forwarded
    /// ports the forward path governs ([`crate::addresses`]).
    pub fn compute(
        intent: &NodeIntent,
        failsafe: &Failsafe,
        node_addresses: &[IpAddr],
        current: &[(Family, &Ruleset)],
    ) -> Plan {
        Plan::from_rendered(&render(intent, failsafe, node_addresses), intent, current)
    }

    /// As [`Plan::compute`], with `rendered` = `render(intent, failsafe, node_addresses)`
    /// already at hand.
    pub fn from_rendered(
        rendered: &Rendered,
        intent: &NodeIntent,
        current: &[(Family, &Ruleset)],
    ) -> Plan {
        let families = current
            .iter()
            .map(|(f, rs)| diff(rendered.family(*f), rs, Some(intent)))
            .collect();
        Plan::from_families(families, rendered.conflicts.clone())
    }

    /// A plan that removes everything of portwarden's (pure).
    pub fn reset(current: &[(Family, &Ruleset)]) -> Plan {
        let families = current
            .iter()
            .map(|(f, rs)| diff(&Desired::empty(*f), rs, None))
            .collect();
        Plan {
            reset: true,
            ..Plan::from_families(families, Vec::new())
        }
    }

    /// A plan that puts portwarden's part of each family back to `target` (pure): its chains
    /// and jumps become exactly the target's, foreign rules and chains stay as they are. What
    /// a rollback of `apply --confirm-within` runs ([`crate::Netfilter::restore_gated`]).
    pub fn back_to(current: &[(&Desired, &Ruleset)]) -> Plan {
        let families = current
            .iter()
            .map(|(target, rs)| diff(target, rs, None))
            .collect();
        Plan::from_families(families, Vec::new())
    }

    fn from_families(families: Vec<FamilyPlan>, conflicts: Vec<Conflict>) -> Plan {
        let add: Vec<String> = families.iter().flat_map(|f| f.add.clone()).collect();
        let delete: Vec<String> = families.iter().flat_map(|f| f.delete.clone()).collect();
        Plan {
            changes: add.len() + delete.len(),
            add,
            delete,
            conflicts,
            shadowing: families.iter().flat_map(|f| f.shadowing.clone()).collect(),
            lookalikes: families.iter().flat_map(|f| f.lookalikes.clone()).collect(),
            kept: families.iter().flat_map(|f| f.kept.clone()).collect(),
            cleanup: Vec::new(),
            unread: Vec::new(),
            foreign_tables: Vec::new(),
            foreign_tables_unread: None,
            mixed_backends: None,
            exposure: None,
            exposure_unread: Vec::new(),
            families,
            reset: false,
            read: Vec::new(),
        }
    }

    /// Adds removals outside the families' transactions (and chains they keep), counted in
    /// `changes` and listed in `delete`.
    pub fn with_cleanup(mut self, cleanup: Vec<Cleanup>, kept: Vec<Kept>) -> Plan {
        for c in &cleanup {
            self.delete.extend(c.delete.iter().cloned());
        }
        self.changes = self.add.len() + self.delete.len();
        self.cleanup.extend(cleanup);
        self.kept.extend(kept);
        self
    }

    /// Adds the other owners of the packet path (pure): the foreign nftables decisions over
    /// `intent`'s managed port ranges ([`foreign_nft::findings`]) or why they were not read,
    /// and the rules of the backend not in use.
    pub fn with_owners(
        mut self,
        foreign: &ForeignRead,
        intent: &NodeIntent,
        failsafe: &Failsafe,
        mixed: Option<MixedBackends>,
    ) -> Plan {
        match foreign {
            ForeignRead::Read(tables) => {
                self.foreign_tables = foreign_nft::findings(tables, intent, failsafe);
            }
            ForeignRead::NotRead(why) => self.foreign_tables_unread = Some(why.clone()),
        }
        self.mixed_backends = mixed;
        self
    }

    /// Adds the exposure diff ([`crate::exposure::compute`] of the same rendering and rulesets).
    pub fn with_exposure(mut self, diff: ExposureDiff) -> Plan {
        self.exposure = Some(diff.changes);
        self.exposure_unread = diff.unread;
        self
    }

    /// The backends other than `current` that [`Plan::cleanup`] removes portwarden's rules
    /// from, each once.
    pub fn other_backends(&self, current: Backend) -> Vec<Backend> {
        let mut v: Vec<Backend> = self
            .cleanup
            .iter()
            .map(|c| c.backend)
            .filter(|&b| b != current)
            .collect();
        v.dedup();
        v
    }

    /// Whether nothing needs writing.
    pub fn is_converged(&self) -> bool {
        self.families.iter().all(FamilyPlan::is_converged) && self.cleanup.is_empty()
    }

    /// The kinds of difference of every family, each once, in [`DriftKind`] order.
    pub fn drift_kinds(&self) -> Vec<DriftKind> {
        let mut kinds: Vec<DriftKind> = self
            .families
            .iter()
            .flat_map(FamilyPlan::drift_kinds)
            .collect();
        kinds.sort();
        kinds.dedup();
        kinds
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portwarden_policy::{PortRange, Protocol, Rule, State};

    #[test]
    fn json_has_the_cli_shape() {
        let intent = NodeIntent {
            policies: vec!["q".into()],
            rules: vec![Rule {
                priority: 1,
                policy: "q".into(),
                entry: 0,
                protocol: Protocol::Tcp,
                ports: PortRange { start: 1, end: 100 },
                source: None,
                state: State::Filtered,
                expires: None,
            }],
            report_unlisted: false,
        };
        let empty = Ruleset::default();
        let plan = Plan::compute(
            &intent,
            &Failsafe::default(),
            &[],
            &[(Family::Ipv4, &empty), (Family::Ipv6, &empty)],
        );
        let v = serde_json::to_value(&plan).unwrap();
        assert_eq!(v["changes"], plan.add.len());
        assert!(
            v["add"][0]
                .as_str()
                .unwrap()
                .starts_with("iptables -N PORTWARDEN-INPUT")
        );
        assert!(v["delete"].as_array().unwrap().is_empty());
        assert_eq!(v["conflicts"][0]["ports"], "1-100");
        assert_eq!(v["conflicts"][0]["failsafe"][0]["protocol"], "tcp");
        assert_eq!(v["families"][1]["family"], "ipv6");
        assert!(
            plan.add
                .iter()
                .any(|a| a.starts_with("ip6tables -I INPUT 1 "))
        );
        assert!(!plan.is_converged());
        assert!(Plan::reset(&[(Family::Ipv4, &empty)]).is_converged());
    }
}
