//! The drift report: one shape for `verify` and the agent, and its outputs — a table for
//! people, JSON for machines, JUnit XML for CI, nmap XML for existing tooling (ndiff).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use portwarden_policy::text::printable;
use portwarden_scan::{HostReport, ScanReport, report as scan_report};
use serde::{Deserialize, Serialize};

use crate::verdict::Verdict;

/// Counts per verdict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Ports that look as intended.
    pub in_sync: usize,
    /// Ports that do not.
    pub drift: usize,
    /// Ports the scan cannot decide.
    pub indeterminate: usize,
}

/// One port of one node seen from one vantage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    /// Node name.
    pub node: String,
    /// The address scanned.
    pub address: IpAddr,
    /// Port.
    pub port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// The vantage: the source address of the probes.
    pub from: IpAddr,
    /// Intended state (`open`, `closed`, `filtered`), or `unlisted` for an open port no policy
    /// declares (with `unlisted: report`), or `-` on an address with no route to it where the
    /// state depends on the probe's source (no source exists to decide it).
    pub expected: String,
    /// nmap's word for what the scan saw.
    pub observed: String,
    /// The verdict.
    pub verdict: Verdict,
    /// Why, when not in sync.
    pub cause: Option<String>,
    /// The policy that decides the port, if any.
    pub policy: Option<String>,
    /// Its entry.
    pub entry: Option<usize>,
    /// When the observation in this row was confirmed (RFC 3339, UTC), for rows an agent
    /// reports from an earlier scan: its peer scans re-check UDP ports a share at a time and
    /// report each from its last confirmation (see [`crate::ledger`]). Absent when the row is
    /// this run's own observation (`verify`) or nothing was confirmed yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_at: Option<String>,
}

/// `time` as RFC 3339 in UTC to the second (`2026-12-01T12:51:56Z`); times before 1970 are
/// written as the epoch.
pub fn rfc3339(time: std::time::SystemTime) -> String {
    let secs = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    portwarden_policy::Timestamp::from_unix(i64::try_from(secs).unwrap_or(i64::MAX)).to_string()
}

/// A drift report.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Counts per verdict.
    pub summary: Summary,
    /// Every compared port, sorted by node, address, protocol, port.
    pub results: Vec<Row>,
    /// Remarks on the run (agents unreachable, connect scan fallback, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Report {
    /// Builds a report from rows; sorts them and counts verdicts.
    pub fn new(mut results: Vec<Row>, notes: Vec<String>) -> Report {
        results.sort_by(|a, b| {
            (&a.node, a.address, &a.protocol, a.port).cmp(&(
                &b.node,
                b.address,
                &b.protocol,
                b.port,
            ))
        });
        let mut summary = Summary::default();
        for r in &results {
            match r.verdict {
                Verdict::InSync => summary.in_sync += 1,
                Verdict::Drift => summary.drift += 1,
                Verdict::Indeterminate => summary.indeterminate += 1,
            }
        }
        Report {
            summary,
            results,
            notes,
        }
    }

    /// Whether anything drifted (exit code 2).
    pub fn has_drift(&self) -> bool {
        self.summary.drift > 0
    }
}

/// JSON, as in CLI.md's `verify -o json`.
pub fn to_json(report: &Report) -> String {
    serde_json::to_string_pretty(report).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// The table of `rows` (those not in sync), one line each with its cause, coloured by
/// `paint`, then an empty line.
fn drift_table(out: &mut String, rows: &[&Row], paint: &dyn Fn(&str, &str) -> String) {
    // The CONFIRMED column only when some row is reported from an earlier scan (an agent's
    // report): verify's own rows are all observed now.
    let dated = rows.iter().any(|r| r.confirmed_at.is_some());
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut c = vec![
                printable(&r.node).into_owned(),
                r.address.to_string(),
                printable(&format!("{}/{}", r.port, r.protocol)).into_owned(),
                r.from.to_string(),
                printable(&r.expected).into_owned(),
                printable(&r.observed).into_owned(),
                r.verdict.as_str().to_string(),
            ];
            if dated {
                c.push(printable(r.confirmed_at.as_deref().unwrap_or("-")).into_owned());
            }
            c
        })
        .collect();
    let mut header = vec![
        "NODE", "ADDRESS", "PORT", "FROM", "EXPECTED", "OBSERVED", "VERDICT",
    ];
    if dated {
        header.push("CONFIRMED");
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for c in &cells {
        for (w, cell) in widths.iter_mut().zip(c) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cols: &[String]| {
        cols.iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    let header: Vec<String> = header.iter().map(|s| s.to_string()).collect();
    let _ = writeln!(out, "{}  CAUSE", line(&header));
    for (r, c) in rows.iter().zip(&cells) {
        let text = line(c);
        let text = match r.verdict {
            Verdict::Drift => paint("31", &text),
            _ => paint("33", &text),
        };
        let _ = writeln!(
            out,
            "{text}  {}",
            printable(r.cause.as_deref().unwrap_or(""))
        );
    }
    out.push('\n');
}

/// A table of the rows that are not in sync, then a line per node and the summary. Colors
/// (ANSI) only when `color` is set, which callers do on a terminal. Node names, causes and
/// notes come from inventories, policies and agents: their control characters are escaped
/// (`text::printable`), so only the colours are ours.
pub fn to_table(report: &Report, color: bool) -> String {
    let paint = |code: &str, text: &str| {
        if color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    };
    let mut out = String::new();
    let rows: Vec<&Row> = report
        .results
        .iter()
        .filter(|r| r.verdict != Verdict::InSync)
        .collect();
    if !rows.is_empty() {
        drift_table(&mut out, &rows, &paint);
    }
    let mut per_node: BTreeMap<&str, crate::report::Summary> = BTreeMap::new();
    for r in &report.results {
        let s = per_node.entry(&r.node).or_default();
        match r.verdict {
            Verdict::InSync => s.in_sync += 1,
            Verdict::Drift => s.drift += 1,
            Verdict::Indeterminate => s.indeterminate += 1,
        }
    }
    for (node, s) in &per_node {
        let _ = writeln!(out, "{}: {}", printable(node), summary_text(s));
    }
    for n in &report.notes {
        let _ = writeln!(out, "note: {}", printable(n));
    }
    let total = summary_text(&report.summary);
    let verdict = if report.has_drift() {
        paint("1;31", "DRIFT")
    } else {
        paint("1;32", "IN SYNC")
    };
    let _ = writeln!(out, "{verdict}: {total}");
    out
}

fn summary_text(s: &Summary) -> String {
    format!(
        "{} in sync, {} drift, {} indeterminate",
        s.in_sync, s.drift, s.indeterminate
    )
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// JUnit XML: a test suite per (node, address, vantage), a test case per port; drift is a
/// failure, indeterminate is skipped.
pub fn to_junit(report: &Report) -> String {
    let mut suites: BTreeMap<(String, IpAddr, IpAddr), Vec<&Row>> = BTreeMap::new();
    for r in &report.results {
        suites
            .entry((r.node.clone(), r.address, r.from))
            .or_default()
            .push(r);
    }
    let s = &report.summary;
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"portwarden verify\" tests=\"{}\" failures=\"{}\" skipped=\"{}\">",
        report.results.len(),
        s.drift,
        s.indeterminate
    );
    for ((node, address, from), rows) in &suites {
        let failures = rows.iter().filter(|r| r.verdict == Verdict::Drift).count();
        let skipped = rows
            .iter()
            .filter(|r| r.verdict == Verdict::Indeterminate)
            .count();
        let _ = writeln!(
            out,
            "  <testsuite name=\"{} {address} from {from}\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\">",
            xml_escape(node),
            rows.len()
        );
        for r in rows {
            let name = format!("{}/{} is {}", r.port, r.protocol, r.expected);
            let _ = write!(
                out,
                "    <testcase classname=\"portwarden.{}\" name=\"{}\"",
                xml_escape(node),
                xml_escape(&name)
            );
            let cause = xml_escape(r.cause.as_deref().unwrap_or(""));
            match r.verdict {
                Verdict::InSync => out.push_str("/>\n"),
                Verdict::Drift => {
                    let _ = writeln!(
                        out,
                        ">\n      <failure message=\"observed {}: {cause}\" type=\"drift\"/>\n    </testcase>",
                        xml_escape(&r.observed)
                    );
                }
                Verdict::Indeterminate => {
                    let _ = writeln!(
                        out,
                        ">\n      <skipped message=\"observed {}: {cause}\"/>\n    </testcase>",
                        xml_escape(&r.observed)
                    );
                }
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

/// nmap-compatible XML of the scans behind the report (TCP and UDP merged per host), for
/// `ndiff` and other nmap tooling.
pub fn to_nmap_xml(scans: &[ScanReport], args: &str) -> String {
    let Some(first) = scans.first() else {
        return String::new();
    };
    let mut merged = first.clone();
    let mut hosts: BTreeMap<IpAddr, HostReport> = BTreeMap::new();
    for s in scans {
        for h in &s.hosts {
            let merged = hosts.entry(h.address).or_insert_with(|| HostReport {
                address: h.address,
                ports: Vec::new(),
                error: h.error.clone(),
                rate_limit: h.rate_limit.clone(),
            });
            merged.ports.extend(h.ports.iter().cloned());
            // Unscanned only when no scan reached it.
            if h.error.is_none() {
                merged.error = None;
            }
        }
    }
    for h in hosts.values_mut() {
        h.ports.sort_by_key(|p| (p.protocol, p.port));
    }
    merged.hosts = hosts.into_values().collect();
    scan_report::to_nmap_xml(&merged, args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(node: &str, port: u16, verdict: Verdict, cause: Option<&str>) -> Row {
        Row {
            node: node.into(),
            address: "10.213.0.11".parse().unwrap(),
            port,
            protocol: "tcp".into(),
            from: "10.213.1.2".parse().unwrap(),
            expected: "closed".into(),
            observed: if verdict == Verdict::InSync {
                "closed"
            } else {
                "filtered"
            }
            .into(),
            verdict,
            cause: cause.map(str::to_string),
            policy: Some("quarantine".into()),
            entry: Some(0),
            confirmed_at: None,
        }
    }

    fn sample() -> Report {
        Report::new(
            vec![
                row(
                    "web-1",
                    8080,
                    Verdict::Drift,
                    Some("foreign rule INPUT#1 (-j DROP) matches first"),
                ),
                row("web-1", 80, Verdict::InSync, None),
                row("db-1", 22, Verdict::Indeterminate, Some("x < y")),
            ],
            vec![],
        )
    }

    #[test]
    fn summary_and_json_shape() {
        let r = sample();
        assert_eq!(
            r.summary,
            Summary {
                in_sync: 1,
                drift: 1,
                indeterminate: 1
            }
        );
        let v: serde_json::Value = serde_json::from_str(&to_json(&r)).unwrap();
        assert_eq!(v["summary"]["drift"], 1);
        let first = &v["results"][0];
        assert_eq!(first["node"], "db-1", "sorted by node");
        for key in [
            "node", "address", "port", "protocol", "from", "expected", "observed", "verdict",
            "cause",
        ] {
            assert!(first.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["results"][2]["verdict"], "drift");
    }

    #[test]
    fn table_shows_what_is_not_in_sync() {
        let t = to_table(&sample(), false);
        assert!(
            t.contains("8080/tcp") && t.contains("foreign rule INPUT#1"),
            "{t}"
        );
        assert!(!t.contains(" 80/tcp"), "{t}");
        assert!(t.contains("web-1: 1 in sync, 1 drift, 0 indeterminate"));
        assert!(
            t.ends_with("DRIFT: 1 in sync, 1 drift, 1 indeterminate\n"),
            "{t}"
        );
        assert!(!t.contains('\x1b'));
        assert!(to_table(&sample(), true).contains("\x1b[31m"));
    }

    #[test]
    fn table_escapes_control_characters_of_names_causes_and_notes() {
        let mut r = sample();
        r.results[0].node = "db\x1b[2J-1".into();
        r.results[0].cause = Some("agent said \x1b[31mok\nforged".into());
        r.notes
            .push("web-1: inside view unavailable: \x07bell".into());
        let t = to_table(&r, false);
        assert!(!t.contains('\x1b') && !t.contains('\x07'), "{t:?}");
        assert!(t.contains("agent said \\x1b[31mok\\nforged\n"), "{t}");
        assert!(t.contains("db\\x1b[2J-1: 0 in sync"), "{t}");
        assert!(
            t.contains("note: web-1: inside view unavailable: \\x07bell"),
            "{t}"
        );
    }

    #[test]
    fn rfc3339_dates() {
        let at = |s: u64| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s);
        assert_eq!(rfc3339(at(0)), "1970-01-01T00:00:00Z");
        // 2026-12-01 12:51:56 UTC (`date -u -d @1796129516`).
        assert_eq!(rfc3339(at(1_796_129_516)), "2026-12-01T12:51:56Z");
        // A leap day.
        assert_eq!(rfc3339(at(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(at(4_107_542_399)), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn the_confirmed_column_appears_only_with_dated_rows() {
        let plain = to_table(&sample(), false);
        assert!(!plain.contains("CONFIRMED"), "{plain}");
        let mut r = sample();
        r.results[0].confirmed_at = Some("2026-12-01T12:51:56Z".into());
        let t = to_table(&r, false);
        assert!(
            t.lines()
                .next()
                .unwrap()
                .contains("  VERDICT        CONFIRMED             CAUSE"),
            "{t}"
        );
        assert!(t.contains("2026-12-01T12:51:56Z"), "{t}");
        // Rows without a date show a dash.
        assert!(
            t.lines()
                .any(|l| l.contains("8080/tcp") && l.contains(" -  ")),
            "{t}"
        );
        let v: serde_json::Value = serde_json::from_str(&to_json(&r)).unwrap();
        assert_eq!(v["results"][0]["confirmed_at"], "2026-12-01T12:51:56Z");
        assert!(v["results"][1].get("confirmed_at").is_none());
    }

    #[test]
    fn junit_counts_and_escapes() {
        let j = to_junit(&sample());
        assert!(
            j.contains("tests=\"3\" failures=\"1\" skipped=\"1\""),
            "{j}"
        );
        assert!(j.contains(
            "<failure message=\"observed filtered: foreign rule INPUT#1 (-j DROP) matches first\""
        ));
        assert!(j.contains("x &lt; y"));
    }
}
