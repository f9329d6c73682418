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
//! * Per-entry packet counts: at most [`MAX_ENTRY_COUNTS`] entries with packets (those that
//!   matched last, then most), the rest counted in `omittedEntries`.
//! * Deterministic: the same inputs give the same spec, so an unchanged scan is not rewritten
//!   ([`undated`]: a newer confirmation time alone is no change, nor are growing counters).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use portwarden_reconcile::{Report, Row, Verdict};

use portwarden_agent::counters::Counted;

use crate::crd::{
    AppliedPolicy, Counts, EntryCount, Finding, MAX_ENTRY_COUNTS, MAX_EXPIRED, MAX_FINDINGS,
    MAX_NOTES, MAX_PEERS, MAX_POLICY_COUNTS, NodeExpiredEntry, PolicyCounts, PortReportSpec,
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
    /// Per-entry packet counts of the last refresh, both families summed ([`entry_counts`]).
    pub entries: Vec<EntryCount>,
    /// When they were read.
    pub counted_at: Option<Time>,
}

/// The report's per-entry counts of an agent's last refresh: both families summed, the latest
/// match of either; entries without a packet left out.
pub fn entry_counts(counted: &[Counted]) -> Vec<EntryCount> {
    let mut by_entry: BTreeMap<(&str, usize), EntryCount> = BTreeMap::new();
    for c in counted.iter().filter(|c| c.counters.packets > 0) {
        let e = by_entry
            .entry((c.counters.policy.as_str(), c.counters.entry))
            .or_insert_with(|| EntryCount {
                policy: c.counters.policy.clone(),
                entry: u32::try_from(c.counters.entry).unwrap_or(u32::MAX),
                packets: 0,
                bytes: 0,
                last_match: None,
            });
        e.packets += c.counters.packets;
        e.bytes += c.counters.bytes;
        let at = c
            .last_match
            .and_then(|t| Timestamp::from_second(t.unix()).ok())
            .map(Time);
        if at
            .as_ref()
            .is_some_and(|t| e.last_match.as_ref().is_none_or(|l| t.0 > l.0))
        {
            e.last_match = at;
        }
    }
    by_entry.into_values().collect()
}

/// At most [`MAX_ENTRY_COUNTS`] of `counts`: those that matched last, then most; listed by
/// policy and entry. Returns them and how many were left out.
fn bounded_counts(counts: &[EntryCount]) -> (Vec<EntryCount>, u32) {
    let mut kept: Vec<EntryCount> = counts.to_vec();
    let omitted = kept.len().saturating_sub(MAX_ENTRY_COUNTS);
    if omitted > 0 {
        kept.sort_by(|a, b| {
            let key = |c: &EntryCount| {
                (
                    std::cmp::Reverse(c.last_match.as_ref().map(|t| t.0)),
                    std::cmp::Reverse(c.packets),
                )
            };
            key(a).cmp(&key(b))
        });
        kept.truncate(MAX_ENTRY_COUNTS);
    }
    kept.sort_by(|a, b| (&a.policy, a.entry).cmp(&(&b.policy, b.entry)));
    (kept, omitted as u32)
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
    let mut spec = applied_side(node, applied);
    if let Some(scan) = scan {
        add_scan(&mut spec, scan);
    }
    spec
}

/// The node's own side of its report: what its agent applied, the entries that expired and
/// the per-entry counts.
fn applied_side(node: &str, applied: &Applied) -> PortReportSpec {
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
    (spec.entries, spec.omitted_entries) = bounded_counts(&applied.entries);
    spec.counted_at = applied
        .counted_at
        .clone()
        .filter(|_| !applied.entries.is_empty());
    spec
}

/// The scanning side: the last peer scan's summary, per-policy counts and bounded findings.
fn add_scan(spec: &mut PortReportSpec, scan: &Scan) {
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
}

/// `spec` without what changes at every scan or refresh although nothing else did: when the
/// peers were scanned, when the report was written, when each finding was last confirmed, and
/// how many packets each listed entry matched when (only *whether* it was seen matching
/// counts). Two reports that are equal so need no write ([`crate::agent`]); the agent's
/// heartbeat rewrite refreshes those values. Traffic on an entry thus costs no API write,
/// while a new entry being hit, or being seen matching, is written at once.
pub fn undated(spec: &PortReportSpec) -> PortReportSpec {
    let mut s = PortReportSpec {
        scanned_at: None,
        reported_at: None,
        counted_at: None,
        ..spec.clone()
    };
    for f in &mut s.findings {
        f.confirmed_at = None;
    }
    for e in &mut s.entries {
        e.packets = 0;
        e.bytes = 0;
        e.last_match = e.last_match.as_ref().map(|_| Time(Timestamp::UNIX_EPOCH));
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

    fn counted(
        policy: &str,
        entry: usize,
        family: portwarden_netfilter::Family,
        packets: u64,
        last_match: Option<i64>,
    ) -> Counted {
        Counted {
            counters: portwarden_netfilter::EntryCounters {
                policy: policy.into(),
                entry,
                family,
                packets,
                bytes: packets * 60,
                rules_expected: 1,
                rules_in_place: 1,
            },
            last_match: last_match.map(portwarden_policy::Timestamp::from_unix),
        }
    }

    #[test]
    fn entry_counts_sum_the_families_and_growing_counts_are_no_change() {
        use portwarden_netfilter::Family::{Ipv4, Ipv6};
        let t = 1_798_135_200;
        let rows = |v4, v6, v6_match| {
            entry_counts(&[
                counted("quarantine", 0, Ipv4, v4, Some(t)),
                counted("quarantine", 0, Ipv6, v6, v6_match),
                counted("web", 1, Ipv4, 0, None),
            ])
        };
        let applied = |entries| Applied {
            entries,
            counted_at: Some(Time(Timestamp::from_second(t + 5).unwrap())),
            ..Applied::default()
        };
        let spec = build("web-1", &applied(rows(3, 2, Some(t + 1))), None);
        let json = serde_json::to_value(&spec).unwrap();
        // web entry 1 matched nothing: not listed.
        assert_eq!(
            json["entries"],
            serde_json::json!([{"policy": "quarantine", "entry": 0, "packets": 5, "bytes": 300,
                "lastMatch": "2026-12-24T18:00:01Z"}])
        );
        assert_eq!(json["countedAt"], "2026-12-24T18:00:05Z");
        assert!(json.get("omittedEntries").is_none());
        // More packets, a later match: no change worth a write.
        let later = build("web-1", &applied(rows(30, 20, Some(t + 60))), None);
        assert_ne!(spec, later);
        assert_eq!(undated(&spec), undated(&later));
        // An entry hit for the first time, or first seen matching, is.
        let mut hit = rows(3, 2, Some(t + 1));
        hit.extend(entry_counts(&[counted("web", 1, Ipv4, 1, None)]));
        assert_ne!(
            undated(&spec),
            undated(&build("web-1", &applied(hit), None))
        );
        let unmatched = entry_counts(&[counted("quarantine", 0, Ipv4, 5, None)]);
        let seen = entry_counts(&[counted("quarantine", 0, Ipv4, 5, Some(t))]);
        assert_ne!(
            undated(&build("web-1", &applied(unmatched), None)),
            undated(&build("web-1", &applied(seen), None))
        );
    }

    #[test]
    fn entry_counts_keep_the_latest_matches_within_the_bound() {
        use portwarden_netfilter::Family::Ipv4;
        let rows: Vec<Counted> = (0..MAX_ENTRY_COUNTS + 10)
            .map(|e| {
                // Entry 0 matched last, with the fewest packets; the others never matched.
                let last = (e == 0).then_some(1_798_135_200);
                counted("many", e, Ipv4, 1 + e as u64, last)
            })
            .collect();
        let spec = build(
            "web-1",
            &Applied {
                entries: entry_counts(&rows),
                ..Applied::default()
            },
            None,
        );
        assert_eq!(spec.entries.len(), MAX_ENTRY_COUNTS);
        assert_eq!(spec.omitted_entries, 10);
        let listed: Vec<u32> = spec.entries.iter().map(|e| e.entry).collect();
        // Entry 0, then the most packets (11..110), by entry.
        let mut expected = vec![0];
        expected.extend(11..(MAX_ENTRY_COUNTS as u32 + 10));
        assert_eq!(listed, expected);
        assert!(spec.counted_at.is_none());
        let bytes = serde_json::to_vec(&spec).unwrap().len();
        assert!(bytes < 20 * 1024, "{bytes} bytes");
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("abc", 10), "abc");
        let t = truncate(&"é".repeat(100), 10);
        assert!(t.len() <= 10 && t.ends_with("..."), "{t}");
    }
}
