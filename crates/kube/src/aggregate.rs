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

use crate::conditions::{self, APPLIED, Decided, IN_SYNC, Status};
use crate::crd::{Counts, PortPolicy, PortPolicyStatus, PortReport};
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

/// The status of `policy` given every node and every report.
pub fn status(
    policy: &PortPolicy,
    validated: &Result<Policy, Vec<Issue>>,
    nodes: &[NodeLabels],
    reports: &[Arc<PortReport>],
    now: &Time,
) -> PortPolicyStatus {
    let name = policy.name_any();
    let generation = policy.metadata.generation;
    let matched: Vec<&NodeLabels> = nodes
        .iter()
        .filter(|n| selects(&policy.spec.0.node_selector, &n.labels))
        .collect();
    let (silent_reports, reports): (Vec<&Arc<PortReport>>, Vec<&Arc<PortReport>>) =
        reports.iter().partition(|r| is_silent(r, now));
    let silent_nodes: BTreeSet<&str> = silent_reports
        .iter()
        .map(|r| r.spec.node.as_str())
        .collect();
    let by_node: BTreeMap<&str, &PortReport> = reports
        .iter()
        .map(|r| (r.spec.node.as_str(), r.as_ref()))
        .collect();

    let mut applied = 0u32;
    let mut failed: Vec<(&str, &str)> = Vec::new();
    let mut pending: Vec<&str> = Vec::new();
    let mut silent: Vec<&str> = Vec::new();
    for n in &matched {
        if silent_nodes.contains(n.name.as_str()) {
            silent.push(n.name.as_str());
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
            (Some(e), _) => failed.push((n.name.as_str(), e)),
            (None, true) => applied += 1,
            (None, false) => pending.push(n.name.as_str()),
        }
    }

    let mut ports = Counts::default();
    let mut drift_nodes: BTreeSet<&str> = BTreeSet::new();
    for r in &reports {
        for pc in r.spec.policies.iter().filter(|pc| pc.policy == name) {
            ports.add(&pc.counts);
            drift_nodes.extend(pc.drift_nodes.iter().map(String::as_str));
        }
    }
    let examples: Vec<String> = reports
        .iter()
        .flat_map(|r| r.spec.findings.iter())
        .filter(|f| f.policy.as_deref() == Some(name.as_str()) && f.verdict == "drift")
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
        .collect();

    let matched_n = matched.len();
    let (applied_c, in_sync_c) = match validated {
        Err(issues) => (
            Decided {
                type_: APPLIED,
                status: Status::False,
                reason: "InvalidSpec",
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
                reason: "InvalidSpec",
                message: "an invalid policy is not applied, so it is not verified".into(),
            },
        ),
        Ok(_) => {
            let applied_c = if matched_n == 0 {
                Decided {
                    type_: APPLIED,
                    status: Status::True,
                    reason: "NoMatchingNodes",
                    message: "the node selector matches no node".into(),
                }
            } else if !failed.is_empty() {
                let detail: Vec<String> = failed
                    .iter()
                    .take(3)
                    .map(|(n, e)| format!("{n}: {e}"))
                    .collect();
                Decided {
                    type_: APPLIED,
                    status: Status::False,
                    reason: "ApplyFailed",
                    message: truncate(
                        &format!(
                            "applying failed on {} of {matched_n} nodes: {}",
                            failed.len(),
                            detail.join("; ")
                        ),
                        1024,
                    ),
                }
            } else if !silent.is_empty() {
                Decided {
                    type_: APPLIED,
                    status: Status::False,
                    reason: "AgentSilent",
                    message: format!(
                        "applied on {applied} of {matched_n} matched nodes; no report for over {} min from {} (is the agent running?)",
                        SILENT_AFTER.as_secs() / 60,
                        list(&silent, 5)
                    ),
                }
            } else if pending.is_empty() {
                Decided {
                    type_: APPLIED,
                    status: Status::True,
                    reason: "Applied",
                    message: format!("applied on all {matched_n} matched nodes"),
                }
            } else {
                Decided {
                    type_: APPLIED,
                    status: Status::False,
                    reason: "Pending",
                    message: format!(
                        "applied on {applied} of {matched_n} matched nodes; waiting for {}",
                        list(&pending, 5)
                    ),
                }
            };
            let in_sync_c = if ports.drift > 0 {
                let nodes: Vec<&str> = drift_nodes.iter().copied().collect();
                Decided {
                    type_: IN_SYNC,
                    status: Status::False,
                    reason: "DriftDetected",
                    message: truncate(
                        &format!(
                            "{} port observation(s) drift on {}: {}",
                            ports.drift,
                            list(&nodes, 5),
                            examples.join("; ")
                        ),
                        1024,
                    ),
                }
            } else if ports.total() == 0 {
                Decided {
                    type_: IN_SYNC,
                    status: Status::Unknown,
                    reason: "NotScanned",
                    message: "no peer scan has covered this policy's ports yet (agents scan with --scan-interval)".into(),
                }
            } else {
                let mut message = format!("{} port observation(s) in sync", ports.in_sync);
                if ports.indeterminate > 0 {
                    message.push_str(&format!(
                        ", {} indeterminate (silent UDP services, or ports a node that rate-limits its ICMP errors did not confirm in time: see the PortReports' findings)",
                        ports.indeterminate
                    ));
                }
                Decided {
                    type_: IN_SYNC,
                    status: Status::True,
                    reason: "InSync",
                    message,
                }
            };
            (applied_c, in_sync_c)
        }
    };

    let old = policy
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    PortPolicyStatus {
        observed_generation: generation,
        matched_nodes: matched_n as u32,
        applied_nodes: applied,
        ports,
        drift_nodes: drift_nodes.iter().take(20).map(|s| s.to_string()).collect(),
        conditions: conditions::merge(old, &[applied_c, in_sync_c], generation, now),
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
    if let Some((_, reason, message)) = &new_a {
        let changed = reason_of(&old_a).as_deref() != Some(reason.as_str());
        match reason.as_str() {
            "InvalidSpec" if changed || new_generation => out.push(EventSpec {
                warning: true,
                reason: "InvalidSpec",
                action: "Validate",
                note: message.clone(),
            }),
            "ApplyFailed" if changed => out.push(EventSpec {
                warning: true,
                reason: "ApplyFailed",
                action: "Apply",
                note: message.clone(),
            }),
            "Applied" if changed => out.push(EventSpec {
                warning: false,
                reason: "Applied",
                action: "Apply",
                note: message.clone(),
            }),
            _ => {}
        }
    }
    if let Some((status, _, message)) = &new_s {
        let was = old_s.as_ref().map(|c| c.0.as_str());
        if status == "False" && was != Some("False") {
            out.push(EventSpec {
                warning: true,
                reason: "DriftDetected",
                action: "Scan",
                note: message.clone(),
            });
        } else if status == "True" && was == Some("False") {
            out.push(EventSpec {
                warning: false,
                reason: "DriftCleared",
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
