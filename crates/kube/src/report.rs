//! A drift report ([`portwarden_reconcile::Report`]) → a bounded [`PortReportSpec`].
//!
//! # Guarantees
//!
//! * Counts are exact: every compared port is counted in `summary` and under the policy that
//!   decides it, however many there are.
//! * Listed detail is bounded: at most [`MAX_FINDINGS`] not-in-sync ports (drift before
//!   indeterminate, then by node, protocol, port), the rest counted in `omittedFindings`; at most
//!   [`MAX_POLICY_COUNTS`] policies, [`MAX_PEERS`] peers, [`MAX_NOTES`] notes, [`MAX_EXPIRED`]
//!   expired entries (the rest counted in `omittedExpiredEntries`), and causes and notes cut at
//!   512 bytes. A report is therefore tens of KiB at most.
//! * Deterministic: the same inputs give the same spec, so an unchanged scan is not rewritten
//!   ([`undated`]: a newer confirmation time alone is no change).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use portwarden_reconcile::{Report, Row, Verdict};

use crate::crd::{
    AppliedPolicy, Counts, Finding, MAX_EXPIRED, MAX_FINDINGS, MAX_NOTES, MAX_PEERS,
    MAX_POLICY_COUNTS, NodeExpiredEntry, PolicyCounts, PortReportSpec,
};

/// The node's own side: what its agent applied.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Applied {
    /// Policies that select the node, at the generation applied.
    pub policies: Vec<AppliedPolicy>,
    /// Rules in the node's intent.
    pub rules: u32,
    /// The last apply error.
    pub error: Option<String>,
    /// Entries of those policies that had expired at the agent's last refresh.
    pub expired: Vec<NodeExpiredEntry>,
}

/// The scanning side: the last peer scan.
#[derive(Clone, Debug, PartialEq)]
pub struct Scan {
    /// The drift report.
    pub report: Report,
    /// When the scan finished.
    pub at: Time,
    /// The peers scanned.
    pub peers: Vec<String>,
    /// For each peer, the policies with `unlisted: report` that select it: an undeclared open
    /// port on that peer counts against them.
    pub unlisted: BTreeMap<String, Vec<String>>,
}

/// Cuts a string at `max` bytes on a character boundary, marking the cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// The policies a row counts against: the deciding policy, or for an undeclared open port the
/// `unlisted: report` policies of its node.
fn owners<'a>(row: &'a Row, unlisted: &'a BTreeMap<String, Vec<String>>) -> Vec<&'a str> {
    match &row.policy {
        Some(p) => vec![p.as_str()],
        None if row.expected == "unlisted" => unlisted
            .get(&row.node)
            .map(|ps| ps.iter().map(String::as_str).collect())
            .unwrap_or_default(),
        None => Vec::new(),
    }
}

/// An unchanged report is rewritten (for its `reportedAt`) at most this often, so the
/// controller tells a live agent from a dead one (it calls a report silent after
/// `aggregate::SILENT_AFTER`).
pub const REPORT_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(600);

/// The finding of a row that is not in sync, its texts within the report's bounds.
fn finding(r: &Row, unlisted: &BTreeMap<String, Vec<String>>) -> Finding {
    Finding {
        node: r.node.clone(),
        address: r.address.to_string(),
        port: r.port,
        protocol: r.protocol.clone(),
        from: r.from.to_string(),
        expected: r.expected.clone(),
        observed: r.observed.clone(),
        verdict: r.verdict.as_str().to_string(),
        cause: r.cause.as_deref().map(|c| truncate(c, 512)),
        policy: owners(r, unlisted).first().map(|p| p.to_string()),
        entry: r.entry.map(|e| e as u32),
        confirmed_at: r
            .confirmed_at
            .as_deref()
            .and_then(|t| t.parse::<Timestamp>().ok())
            .map(Time),
    }
}

/// Builds the spec of `node`'s report.
pub fn build(node: &str, applied: &Applied, scan: Option<&Scan>) -> PortReportSpec {
    let mut spec = PortReportSpec {
        node: node.to_string(),
        applied: applied.policies.clone(),
        rules: applied.rules,
        apply_error: applied.error.as_deref().map(|e| truncate(e, 1024)),
        ..PortReportSpec::default()
    };
    spec.applied.sort();
    spec.applied.truncate(1024);
    let mut expired = applied.expired.clone();
    expired.sort();
    spec.omitted_expired_entries = expired.len().saturating_sub(MAX_EXPIRED) as u32;
    expired.truncate(MAX_EXPIRED);
    spec.expired_entries = expired;
    let Some(scan) = scan else {
        return spec;
    };
    spec.scanned_at = Some(scan.at.clone());
    spec.peers = scan.peers.iter().take(MAX_PEERS).cloned().collect();
    spec.notes = scan
        .report
        .notes
        .iter()
        .take(MAX_NOTES)
        .map(|n| truncate(n, 512))
        .collect();

    let mut per_policy: BTreeMap<&str, PolicyCounts> = BTreeMap::new();
    let mut findings: Vec<&Row> = Vec::new();
    for row in &scan.report.results {
        let mut one = Counts::default();
        match row.verdict {
            Verdict::InSync => one.in_sync = 1,
            Verdict::Drift => one.drift = 1,
            Verdict::Indeterminate => one.indeterminate = 1,
        }
        spec.summary.add(&one);
        for p in owners(row, &scan.unlisted) {
            let entry = per_policy.entry(p).or_insert_with(|| PolicyCounts {
                policy: p.to_string(),
                counts: Counts::default(),
                drift_nodes: Vec::new(),
            });
            entry.counts.add(&one);
            if row.verdict == Verdict::Drift
                && !entry.drift_nodes.contains(&row.node)
                && entry.drift_nodes.len() < 8
            {
                entry.drift_nodes.push(row.node.clone());
            }
        }
        if row.verdict != Verdict::InSync {
            findings.push(row);
        }
    }
    spec.policies = per_policy.into_values().take(MAX_POLICY_COUNTS).collect();
    for p in &mut spec.policies {
        p.drift_nodes.sort();
    }
    findings.sort_by_key(|r| {
        (
            r.verdict != Verdict::Drift,
            &r.node,
            &r.protocol,
            r.port,
            r.address,
        )
    });
    spec.omitted_findings = findings.len().saturating_sub(MAX_FINDINGS) as u32;
    spec.findings = findings
        .into_iter()
        .take(MAX_FINDINGS)
        .map(|r| finding(r, &scan.unlisted))
        .collect();
    spec
}

/// `spec` without what changes at every scan although nothing else did: when the peers were
/// scanned, when the report was written, and when each finding was last confirmed. Two
/// reports that are equal so need no write ([`crate::agent`]); the agent's heartbeat rewrite
/// refreshes those times.
pub fn undated(spec: &PortReportSpec) -> PortReportSpec {
    let mut s = PortReportSpec {
        scanned_at: None,
        reported_at: None,
        ..spec.clone()
    };
    for f in &mut s.findings {
        f.confirmed_at = None;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn row(node: &str, port: u16, policy: Option<&str>, verdict: Verdict) -> Row {
        Row {
            node: node.into(),
            address: "10.0.0.1".parse().unwrap(),
            port,
            protocol: "tcp".into(),
            from: "10.0.0.2".parse().unwrap(),
            expected: if policy.is_some() {
                "closed"
            } else {
                "unlisted"
            }
            .into(),
            observed: "filtered".into(),
            verdict,
            cause: Some("x".repeat(2000)),
            policy: policy.map(Into::into),
            entry: policy.map(|_| 0),
            confirmed_at: None,
        }
    }

    #[test]
    fn bounded_however_many_ports_drift() {
        let rows: Vec<Row> = (1..=5000)
            .map(|p| row("web-1", p, Some("quarantine"), Verdict::Drift))
            .chain((1..=10).map(|p| row("web-2", p, Some("web"), Verdict::InSync)))
            .collect();
        let scan = Scan {
            report: Report::new(rows, vec!["n".repeat(4000); 100]),
            at: Time(Timestamp::UNIX_EPOCH),
            peers: vec!["web-1".into(), "web-2".into()],
            unlisted: BTreeMap::new(),
        };
        let spec = build("db-1", &Applied::default(), Some(&scan));
        assert_eq!(spec.summary.drift, 5000);
        assert_eq!(spec.summary.in_sync, 10);
        assert_eq!(spec.findings.len(), MAX_FINDINGS);
        assert_eq!(spec.omitted_findings as usize, 5000 - MAX_FINDINGS);
        assert_eq!(spec.notes.len(), MAX_NOTES);
        assert!(
            spec.findings
                .iter()
                .all(|f| f.cause.as_ref().unwrap().len() <= 512)
        );
        let q = spec
            .policies
            .iter()
            .find(|p| p.policy == "quarantine")
            .unwrap();
        assert_eq!(
            (q.counts.drift, q.drift_nodes.clone()),
            (5000, vec!["web-1".to_string()])
        );
        let bytes = serde_json::to_vec(&spec).unwrap().len();
        assert!(bytes < 100 * 1024, "report is {bytes} bytes");
    }

    #[test]
    fn unlisted_ports_count_against_the_report_policies_of_their_node() {
        let scan = Scan {
            report: Report::new(vec![row("db-1", 4444, None, Verdict::Drift)], vec![]),
            at: Time(Timestamp::UNIX_EPOCH),
            peers: vec!["db-1".into()],
            unlisted: [("db-1".to_string(), vec!["db".to_string()])].into(),
        };
        let spec = build("web-1", &Applied::default(), Some(&scan));
        assert_eq!(spec.policies.len(), 1);
        assert_eq!(spec.policies[0].policy, "db");
        assert_eq!(spec.policies[0].counts.drift, 1);
        assert_eq!(spec.findings[0].policy.as_deref(), Some("db"));
    }

    #[test]
    fn findings_say_when_they_were_confirmed_and_newer_times_alone_are_no_change() {
        let mut r = row("web-1", 5000, Some("udp"), Verdict::Indeterminate);
        r.protocol = "udp".into();
        r.confirmed_at = Some("2026-12-01T12:51:56Z".into());
        let scan = |rows: Vec<Row>| Scan {
            report: Report::new(rows, vec![]),
            at: Time(Timestamp::UNIX_EPOCH),
            peers: vec!["web-1".into()],
            unlisted: BTreeMap::new(),
        };
        let spec = build("db-1", &Applied::default(), Some(&scan(vec![r.clone()])));
        let at = spec.findings[0].confirmed_at.as_ref().unwrap();
        assert_eq!(at.0.to_string(), "2026-12-01T12:51:56Z");
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["findings"][0]["confirmedAt"], "2026-12-01T12:51:56Z");
        r.confirmed_at = Some("2026-12-01T13:00:00Z".into());
        let later = build("db-1", &Applied::default(), Some(&scan(vec![r.clone()])));
        assert_ne!(spec, later);
        assert_eq!(undated(&spec), undated(&later));
        // A different verdict is a change.
        r.verdict = Verdict::Drift;
        let drift = build("db-1", &Applied::default(), Some(&scan(vec![r])));
        assert_ne!(undated(&spec), undated(&drift));
    }

    #[test]
    fn expired_entries_are_sorted_and_bounded() {
        let expired = |policy: &str, entry: u32| NodeExpiredEntry {
            policy: policy.into(),
            entry: crate::crd::ExpiredEntry {
                entry,
                ports: "8080".into(),
                protocol: "tcp".into(),
                expires: Time(Timestamp::from_second(1_798_135_200).unwrap()),
            },
        };
        let applied = Applied {
            expired: (0..150).rev().map(|e| expired("quarantine", e)).collect(),
            ..Applied::default()
        };
        let spec = build("web-1", &applied, None);
        assert_eq!(spec.expired_entries.len(), MAX_EXPIRED);
        assert_eq!(spec.omitted_expired_entries, 50);
        assert_eq!(spec.expired_entries[0], expired("quarantine", 0));
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            json["expiredEntries"][0],
            serde_json::json!({"policy": "quarantine", "entry": 0, "ports": "8080", "protocol": "tcp", "expires": "2026-12-24T18:00:00Z"})
        );
        assert_eq!(json["omittedExpiredEntries"], 50);
        // None expired: neither field is written.
        let json = serde_json::to_value(build("web-1", &Applied::default(), None)).unwrap();
        assert!(
            json.get("expiredEntries").is_none() && json.get("omittedExpiredEntries").is_none()
        );
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("abc", 10), "abc");
        let t = truncate(&"é".repeat(100), 10);
        assert!(t.len() <= 10 && t.ends_with("..."), "{t}");
    }
}
