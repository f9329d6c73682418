//! The controller's decisions, pure: PortReports and Nodes → a PortPolicy's status, and the
//! status transitions → Events.
//!
//! # Guarantees
//!
//! * [`status`] reads only its arguments; the same snapshot gives the same status (with
//!   `lastTransitionTime` kept from the old status while a condition's status holds), so an
//!   unchanged cluster produces no status write.
//! * An invalid policy (admitted by the schema, refused by [`portwarden_policy::validate`]) gets
//!   `Applied=False, reason InvalidSpec` with every problem in the message, and
//!   `InSync=Unknown`; nothing about it can crash the controller.
//!
//! # Caveats
//!
//! Port counts are the sum over the latest report of every scanning node, so a port scanned by
//! `k` peers counts `k` times: the counts measure observations, the conditions say whether any
//! observation disagrees with the policy.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use portwarden_policy::validate::Issue;
use portwarden_policy::{Policy, selects};
use portwarden_reconcile::Verdict;

use crate::conditions::{self, APPLIED, Decided, IN_SYNC, Status, reason};
use crate::crd::{Counts, MAX_STATUS_EXPIRED, PortPolicy, PortPolicyStatus, PortReport};
use crate::expired;
use crate::policy::issues_text;
use crate::report::truncate;

/// A report whose `reportedAt` is older than this is silent: its agent is gone (it confirms its
/// report at least every [`crate::report::REPORT_HEARTBEAT`]), so its node counts as not
/// applied and its observations are not counted.
pub const SILENT_AFTER: std::time::Duration = std::time::Duration::from_secs(1800);

/// Whether a report is silent at `now`.
pub fn is_silent(report: &PortReport, now: &Time) -> bool {
    let limit = k8s_openapi::jiff::SignedDuration::try_from(SILENT_AFTER)
        .unwrap_or(k8s_openapi::jiff::SignedDuration::MAX);
    report
        .spec
        .reported_at
        .as_ref()
        .is_some_and(|at| now.0.duration_since(at.0) > limit)
}

/// A node as the controller needs it: name and labels.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeLabels {
    /// The node's name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

/// Names, at most `max`, then "and N more".
fn list(names: &[&str], max: usize) -> String {
    let shown: Vec<&str> = names.iter().take(max).copied().collect();
    let mut s = shown.join(", ");
    if names.len() > max {
        s.push_str(&format!(" and {} more", names.len() - max));
    }
    s
}

/// What the reports say about one policy: where it is applied, and what the scans saw.
struct Tally<'a> {
    /// Nodes the policy's selector matches.
    matched: usize,
    /// Matched nodes that applied the policy's current generation.
    applied: u32,
    /// Matched nodes whose last apply failed, with the error.
    failed: Vec<(&'a str, &'a str)>,
    /// Matched nodes that have not applied the current generation yet.
    pending: Vec<&'a str>,
    /// Matched nodes whose report is silent ([`SILENT_AFTER`]).
    silent: Vec<&'a str>,
    /// Port observations of the policy, summed over the live reports.
    ports: Counts,
    /// Nodes on which a scan saw the policy's ports drift.
    drift_nodes: BTreeSet<&'a str>,
    /// Up to three drifting observations, for the message.
    examples: Vec<String>,
}

impl<'a> Tally<'a> {
    /// Counts `policy` (named `name`) over `nodes` and `reports` at `now`.
    fn of(
        policy: &PortPolicy,
        name: &str,
        nodes: &'a [NodeLabels],
        reports: &'a [Arc<PortReport>],
        now: &Time,
    ) -> Tally<'a> {
        let matched: Vec<&NodeLabels> = nodes
            .iter()
            .filter(|n| selects(&policy.spec.0.node_selector, &n.labels))
            .collect();
        let (silent_reports, live): (Vec<&Arc<PortReport>>, Vec<&Arc<PortReport>>) =
            reports.iter().partition(|r| is_silent(r, now));
        let mut tally = Tally {
            matched: matched.len(),
            applied: 0,
            failed: Vec::new(),
            pending: Vec::new(),
            silent: Vec::new(),
            ports: Counts::default(),
            drift_nodes: BTreeSet::new(),
            examples: drift_examples(name, &live),
        };
        tally.count_applied(
            &matched,
            &silent_reports,
            &live,
            name,
            policy.metadata.generation,
        );
        for r in &live {
            for pc in r.spec.policies.iter().filter(|pc| pc.policy == name) {
                tally.ports.add(&pc.counts);
                tally
                    .drift_nodes
                    .extend(pc.drift_nodes.iter().map(String::as_str));
            }
        }
        tally
    }

    /// Sorts the matched nodes into silent, failed, applied (at `generation`) and pending.
    fn count_applied(
        &mut self,
        matched: &[&'a NodeLabels],
        silent_reports: &[&'a Arc<PortReport>],
        live: &[&'a Arc<PortReport>],
        name: &str,
        generation: Option<i64>,
    ) {
        let silent_nodes: BTreeSet<&str> = silent_reports
            .iter()
            .map(|r| r.spec.node.as_str())
            .collect();
        let by_node: BTreeMap<&str, &'a PortReport> = live
            .iter()
            .map(|&r| (r.spec.node.as_str(), r.as_ref()))
            .collect();
        for n in matched {
            if silent_nodes.contains(n.name.as_str()) {
                self.silent.push(n.name.as_str());
                continue;
            }
            let report = by_node.get(n.name.as_str());
            let has = report.is_some_and(|r| {
                r.spec
                    .applied
                    .iter()
                    .any(|a| a.name == name && Some(a.generation) == generation)
            });
            match (report.and_then(|r| r.spec.apply_error.as_deref()), has) {
                (Some(e), _) => self.failed.push((n.name.as_str(), e)),
                (None, true) => self.applied += 1,
                (None, false) => self.pending.push(n.name.as_str()),
            }
        }
    }
}

/// Up to three drifting observations of policy `name` in `reports`, one line each.
fn drift_examples(name: &str, reports: &[&Arc<PortReport>]) -> Vec<String> {
    reports
        .iter()
        .flat_map(|r| r.spec.findings.iter())
        .filter(|f| f.policy.as_deref() == Some(name) && f.verdict == Verdict::Drift.as_str())
        .take(3)
        .map(|f| {
            let mut s = format!(
                "{} {}/{} from {}: expected {}, observed {}",
                f.node, f.port, f.protocol, f.from, f.expected, f.observed
            );
            if let Some(c) = &f.cause {
                s.push_str(&format!(" ({c})"));
            }
            s
        })
        .collect()
}

/// The conditions of an invalid policy: not applied anywhere, so not verified either.
fn invalid_conditions(issues: &[Issue]) -> [Decided; 2] {
    [
        Decided {
            type_: APPLIED,
            status: Status::False,
            reason: reason::INVALID_SPEC,
            message: truncate(
                &format!(
                    "the policy is not applied anywhere: {}",
                    issues_text(issues)
                ),
                1024,
            ),
        },
        Decided {
            type_: IN_SYNC,
            status: Status::Unknown,
            reason: reason::INVALID_SPEC,
            message: "an invalid policy is not applied, so it is not verified".into(),
        },
    ]
}

/// The `Applied` condition of a valid policy: the first of no matching node, a failed apply,
/// a silent agent, and a pending node that holds, else applied.
fn applied_condition(t: &Tally<'_>) -> Decided {
    let matched = t.matched;
    let (status, reason, message) = if matched == 0 {
        (
            Status::True,
            reason::NO_MATCHING_NODES,
            "the node selector matches no node".into(),
        )
    } else if !t.failed.is_empty() {
        let detail: Vec<String> = t
            .failed
            .iter()
            .take(3)
            .map(|(n, e)| format!("{n}: {e}"))
            .collect();
        let message = format!(
            "applying failed on {} of {matched} nodes: {}",
            t.failed.len(),
            detail.join("; ")
        );
        (
            Status::False,
            reason::APPLY_FAILED,
            truncate(&message, 1024),
        )
    } else if !t.silent.is_empty() {
        (
            Status::False,
            reason::AGENT_SILENT,
            format!(
                "applied on {} of {matched} matched nodes; no report for over {} min from {} (is the agent running?)",
                t.applied,
                SILENT_AFTER.as_secs() / 60,
                list(&t.silent, 5)
            ),
        )
    } else if t.pending.is_empty() {
        (
            Status::True,
            reason::APPLIED,
            format!("applied on all {matched} matched nodes"),
        )
    } else {
        (
            Status::False,
            reason::PENDING,
            format!(
                "applied on {} of {matched} matched nodes; waiting for {}",
                t.applied,
                list(&t.pending, 5)
            ),
        )
    };
    Decided {
        type_: APPLIED,
        status,
        reason,
        message,
    }
}

/// The `InSync` condition of a valid policy: drift seen, nothing scanned yet, or in sync.
fn in_sync_condition(t: &Tally<'_>) -> Decided {
    let ports = &t.ports;
    let (status, reason, message) = if ports.drift > 0 {
        let nodes: Vec<&str> = t.drift_nodes.iter().copied().collect();
        let message = format!(
            "{} port observation(s) drift on {}: {}",
            ports.drift,
            list(&nodes, 5),
            t.examples.join("; ")
        );
        (
            Status::False,
            reason::DRIFT_DETECTED,
            truncate(&message, 1024),
        )
    } else if ports.total() == 0 {
        (
            Status::Unknown,
            reason::NOT_SCANNED,
            "no peer scan has covered this policy's ports yet (agents scan with --scan-interval)"
                .into(),
        )
    } else {
        let mut message = format!("{} port observation(s) in sync", ports.in_sync);
        if ports.indeterminate > 0 {
            message.push_str(&format!(
                ", {} indeterminate (silent UDP services, or ports a node that rate-limits its ICMP errors did not confirm in time: see the PortReports' findings)",
                ports.indeterminate
            ));
        }
        (Status::True, reason::IN_SYNC, message)
    };
    Decided {
        type_: IN_SYNC,
        status,
        reason,
        message,
    }
}

/// The status of `policy` given every node and every report, with its entries expired at `now`.
pub fn status(
    policy: &PortPolicy,
    validated: &Result<Policy, Vec<Issue>>,
    nodes: &[NodeLabels],
    reports: &[Arc<PortReport>],
    now: &Time,
) -> PortPolicyStatus {
    let name = policy.name_any();
    let generation = policy.metadata.generation;
    let tally = Tally::of(policy, &name, nodes, reports, now);
    let decided = match validated {
        Err(issues) => invalid_conditions(issues),
        Ok(_) => [applied_condition(&tally), in_sync_condition(&tally)],
    };
    let mut expired_entries = validated
        .as_ref()
        .map(|p| expired::of_policy(p, expired::model_time(now)))
        .unwrap_or_default();
    expired_entries.truncate(MAX_STATUS_EXPIRED);
    let old = policy
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    PortPolicyStatus {
        observed_generation: generation,
        matched_nodes: tally.matched as u32,
        applied_nodes: tally.applied,
        drift_nodes: tally
            .drift_nodes
            .iter()
            .take(20)
            .map(|s| s.to_string())
            .collect(),
        ports: tally.ports,
        expired_entries,
        conditions: conditions::merge(old, &decided, generation, now),
    }
}

/// An Event to publish about a policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventSpec {
    /// `true` for Warning, `false` for Normal.
    pub warning: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// CamelCase action.
    pub action: &'static str,
    /// The message.
    pub note: String,
}

/// The Events that the change from `old` to `new` deserves: drift appearing (Warning
/// `DriftDetected`) and clearing (Normal `DriftCleared`), an invalid spec (Warning
/// `InvalidSpec`, once per generation), applying failing (Warning `ApplyFailed`) and
/// completing (Normal `Applied`).
pub fn events(old: Option<&PortPolicyStatus>, new: &PortPolicyStatus) -> Vec<EventSpec> {
    let cond = |s: Option<&PortPolicyStatus>, t: &str| {
        s.and_then(|s| conditions::find(&s.conditions, t))
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    let mut out = Vec::new();
    let (old_a, new_a) = (cond(old, APPLIED), cond(Some(new), APPLIED));
    let (old_s, new_s) = (cond(old, IN_SYNC), cond(Some(new), IN_SYNC));
    let reason_of = |c: &Option<(String, String, String)>| c.as_ref().map(|c| c.1.clone());
    let new_generation = old.and_then(|o| o.observed_generation) != new.observed_generation;
    if let Some((_, why, message)) = &new_a {
        let changed = reason_of(&old_a).as_deref() != Some(why.as_str());
        match why.as_str() {
            reason::INVALID_SPEC if changed || new_generation => out.push(EventSpec {
                warning: true,
                reason: reason::INVALID_SPEC,
                action: "Validate",
                note: message.clone(),
            }),
            reason::APPLY_FAILED if changed => out.push(EventSpec {
                warning: true,
                reason: reason::APPLY_FAILED,
                action: "Apply",
                note: message.clone(),
            }),
            reason::APPLIED if changed => out.push(EventSpec {
                warning: false,
                reason: reason::APPLIED,
                action: "Apply",
                note: message.clone(),
            }),
            _ => {}
        }
    }
    if let Some((status, _, message)) = &new_s {
        let was = old_s.as_ref().map(|c| c.0.as_str());
        let (true_, false_) = (Status::True.as_str(), Status::False.as_str());
        if status == false_ && was != Some(false_) {
            out.push(EventSpec {
                warning: true,
                reason: reason::DRIFT_DETECTED,
                action: "Scan",
                note: message.clone(),
            });
        } else if status == true_ && was == Some(false_) {
            out.push(EventSpec {
                warning: false,
                reason: reason::DRIFT_CLEARED,
                action: "Scan",
                note: message.clone(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{policy, report};
    use k8s_openapi::jiff::Timestamp;

    fn now(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    fn nodes() -> Vec<NodeLabels> {
        ["web-1", "web-2", "db-1"]
            .iter()
            .map(|n| NodeLabels {
                name: n.to_string(),
                labels: [(
                    "role".to_string(),
                    n.trim_end_matches(|c: char| c == '-' || c.is_ascii_digit())
                        .to_string(),
                )]
                .into(),
            })
            .collect()
    }

    fn cond<'a>(s: &'a PortPolicyStatus, t: &str) -> (&'a str, &'a str) {
        let c = conditions::find(&s.conditions, t).unwrap();
        (c.status.as_str(), c.reason.as_str())
    }

    #[test]
    fn applied_pending_failed_and_in_sync() {
        let p = policy("quarantine", 2, "web");
        let v = crate::policy::validate(&p);
        // web-1 applied generation 2 and saw drift on web-2; web-2 applied generation 1.
        let reports = vec![
            Arc::new(report(
                "web-1",
                &[("quarantine", 2)],
                &[("quarantine", 3, 1, "web-2")],
            )),
            Arc::new(report("web-2", &[("quarantine", 1)], &[])),
        ];
        let s = status(&p, &v, &nodes(), &reports, &now(10));
        assert_eq!((s.matched_nodes, s.applied_nodes), (2, 1));
        assert_eq!(cond(&s, APPLIED), ("False", "Pending"));
        assert_eq!(cond(&s, IN_SYNC), ("False", "DriftDetected"));
        assert_eq!(s.ports.drift, 1);
        assert_eq!(s.drift_nodes, vec!["web-2".to_string()]);
        let msg = &conditions::find(&s.conditions, IN_SYNC).unwrap().message;
        assert!(
            msg.contains("web-2 8080/tcp from 10.0.0.2: expected closed, observed filtered"),
            "{msg}"
        );

        let reports = vec![
            Arc::new(report(
                "web-1",
                &[("quarantine", 2)],
                &[("quarantine", 4, 0, "")],
            )),
            Arc::new(report("web-2", &[("quarantine", 2)], &[])),
        ];
        let s2 = status(&p, &v, &nodes(), &reports, &now(20));
        assert_eq!(cond(&s2, APPLIED), ("True", "Applied"));
        assert_eq!(cond(&s2, IN_SYNC), ("True", "InSync"));
        let ev: Vec<&str> = events(Some(&s), &s2).iter().map(|e| e.reason).collect();
        assert_eq!(ev, vec!["Applied", "DriftCleared"]);
        assert!(events(Some(&s2), &s2).is_empty(), "no change, no event");

        let mut failing = report("web-2", &[("quarantine", 2)], &[]);
        failing.spec.apply_error = Some("iptables-restore: line 3 failed".into());
        let reports = vec![Arc::new(failing)];
        let s3 = status(&p, &v, &nodes(), &reports, &now(30));
        assert_eq!(cond(&s3, APPLIED), ("False", "ApplyFailed"));
        assert_eq!(cond(&s3, IN_SYNC), ("Unknown", "NotScanned"));
    }

    #[test]
    fn invalid_policy_is_reported_never_applied() {
        let mut p = policy("bad", 3, "web");
        p.spec.0.ports[0].ports = portwarden_policy::document::Ports::Text("9000-8000".into());
        let v = crate::policy::validate(&p);
        assert!(v.is_err());
        let s = status(&p, &v, &nodes(), &[], &now(1));
        assert_eq!(cond(&s, APPLIED), ("False", "InvalidSpec"));
        assert_eq!(cond(&s, IN_SYNC), ("Unknown", "InvalidSpec"));
        let msg = &conditions::find(&s.conditions, APPLIED).unwrap().message;
        assert!(msg.contains("spec.ports[0].ports"), "{msg}");
        let ev = events(None, &s);
        assert_eq!(ev.len(), 1);
        assert!(ev[0].warning && ev[0].reason == "InvalidSpec");
        // The same generation again: no repeated Event.
        assert!(events(Some(&s), &s).is_empty());
    }

    #[test]
    fn a_silent_agent_is_not_counted_as_applied() {
        let p = policy("quarantine", 2, "web");
        let v = crate::policy::validate(&p);
        let mut old = report(
            "web-1",
            &[("quarantine", 2)],
            &[("quarantine", 3, 1, "web-2")],
        );
        old.spec.reported_at = Some(now(0));
        let mut fresh = report("web-2", &[("quarantine", 2)], &[("quarantine", 4, 0, "")]);
        fresh.spec.reported_at = Some(now(3_000));
        let reports = vec![Arc::new(old), Arc::new(fresh)];
        // 50 minutes after web-1's last word: silent; its drift observation is not counted.
        let s = status(&p, &v, &nodes(), &reports, &now(3_000));
        assert_eq!(cond(&s, APPLIED), ("False", "AgentSilent"));
        assert_eq!((s.applied_nodes, s.ports.drift, s.ports.in_sync), (1, 0, 4));
        let msg = &conditions::find(&s.conditions, APPLIED).unwrap().message;
        assert!(msg.contains("web-1 (is the agent running?)"), "{msg}");
        // 10 minutes after: still alive.
        let s = status(&p, &v, &nodes(), &reports, &now(600));
        assert_eq!(cond(&s, APPLIED), ("True", "Applied"));
    }

    /// The issue's case end to end: `ports: "5000-5029", protocol: UDP, state: closed` on
    /// web-2, scanned by web-1's agent while web-2 rate-limits its port-unreachables; 12
    /// ports are not confirmed within the budget. No drift is counted, the condition stays
    /// InSync, no DriftDetected Event; the same silence confirmed is drift and does raise one.
    #[test]
    fn silence_a_rate_limit_explains_raises_no_drift_detected() {
        use crate::report::{Applied, Scan, build};
        use portwarden_policy::document::{PortEntry, Ports};
        use portwarden_policy::{PolicySet, Protocol, State};
        use portwarden_reconcile::{Target, VerifyOptions, compare};
        use portwarden_scan::{HostReport, PortResult, PortState, RateLimit, Reason, ScanKind};

        let mut p = policy("udp-closed", 1, "web");
        p.spec.0.ports = vec![PortEntry {
            ports: Ports::Text("5000-5029".into()),
            protocol: Protocol::Udp,
            state: State::Closed,
            from: vec![],
            reason: None,
            expires: None,
        }];
        let v = crate::policy::validate(&p);
        let set = PolicySet::new(vec![v.clone().unwrap()]);
        let labels = [("role".to_string(), "web".to_string())].into();
        let target = Target {
            node: "web-2".into(),
            address: "10.0.0.12".parse().unwrap(),
            intent: Arc::new(set.compile(&labels)),
        };
        let scan = |reason_of_silence: Reason| HostReport {
            address: target.address,
            ports: (5000..5030u16)
                .map(|port| {
                    let (state, reason) = if port < 5018 {
                        (PortState::Closed, Reason::PortUnreach)
                    } else {
                        (PortState::OpenFiltered, reason_of_silence)
                    };
                    PortResult {
                        port,
                        protocol: "udp",
                        state,
                        reason,
                    }
                })
                .collect(),
            error: None,
            rate_limit: (reason_of_silence == Reason::RateLimited).then_some(RateLimit {
                burst: 6,
                interval_ms: 1000,
                sources: 1,
                unconfirmed: 12,
                confirm_ms: 10_000,
                budget_ms: Some(10_000),
            }),
        };
        let status_after = |reason_of_silence: Reason| {
            let results = [(ScanKind::Udp, scan(reason_of_silence))];
            let report = compare(
                std::slice::from_ref(&target),
                "10.0.0.11".parse().unwrap(),
                &results,
                &VerifyOptions::new(),
                None,
            );
            let spec = build(
                "web-1",
                &Applied {
                    policies: vec![crate::crd::AppliedPolicy {
                        name: "udp-closed".into(),
                        generation: 1,
                    }],
                    rules: 1,
                    error: None,
                    ..Applied::default()
                },
                Some(&Scan {
                    report,
                    at: now(5),
                    peers: vec!["web-2".into()],
                    unlisted: BTreeMap::new(),
                }),
            );
            let mut web2 = report_of("web-2");
            web2.spec.applied = spec.applied.clone();
            let reports = vec![Arc::new(PortReport::new("web-1", spec)), Arc::new(web2)];
            status(&p, &v, &nodes(), &reports, &now(10))
        };

        let s = status_after(Reason::RateLimited);
        assert_eq!(
            (s.ports.in_sync, s.ports.drift, s.ports.indeterminate),
            (18, 0, 12)
        );
        assert_eq!(cond(&s, IN_SYNC), ("True", "InSync"));
        let reasons: Vec<&str> = events(None, &s).iter().map(|e| e.reason).collect();
        assert!(!reasons.contains(&"DriftDetected"), "{reasons:?}");
        let message = &conditions::find(&s.conditions, IN_SYNC).unwrap().message;
        assert!(message.contains("12 indeterminate"), "{message}");

        let confirmed = status_after(Reason::NoResponse);
        assert_eq!(confirmed.ports.drift, 12);
        let reasons: Vec<&str> = events(Some(&s), &confirmed)
            .iter()
            .map(|e| e.reason)
            .collect();
        assert_eq!(reasons, vec!["DriftDetected"]);
    }

    /// A report of `node` with nothing applied and nothing scanned.
    fn report_of(node: &str) -> PortReport {
        report(node, &[], &[])
    }

    #[test]
    fn no_matching_nodes() {
        let p = policy("lonely", 1, "nothing");
        let s = status(&p, &crate::policy::validate(&p), &nodes(), &[], &now(1));
        assert_eq!(s.matched_nodes, 0);
        assert_eq!(cond(&s, APPLIED), ("True", "NoMatchingNodes"));
    }
}
