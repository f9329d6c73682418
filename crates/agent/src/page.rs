//! The agent's page at `/`: `verify`'s HTML report of the agent's last peer scan, with the
//! agent's inside view of its own node, reloading itself with a plain
//! `<meta http-equiv="refresh">` (no script). Read-only like the other endpoints, and with
//! nothing in it the other endpoints do not already serve (`/v1/report`, `/v1/inside`).

use std::time::Duration;

use portwarden_policy::Timestamp;
use portwarden_reconcile::html::{self, EntryNotes, Page};
use portwarden_reconcile::{InsideView, Report};

/// Reload every this many seconds without peer scans, and at most this often with them.
const DEFAULT_REFRESH: u64 = 30;
/// The slowest reload, whatever the scan interval.
const SLOWEST_REFRESH: u64 = 600;

/// How often the page reloads: every peer scan (between 5 s and 10 min), or every 30 s when
/// the agent does not scan its peers (its inside view still changes).
pub fn refresh_secs(scan_interval: Option<Duration>) -> u32 {
    let secs = scan_interval.map_or(DEFAULT_REFRESH, |d| d.as_secs().clamp(5, SLOWEST_REFRESH));
    u32::try_from(secs).unwrap_or(u32::MAX)
}

/// The page of the agent on `node` at `now`: its last peer scan (`report`, `None` before the
/// first), its inside view, and what `explain` says of the entries that decide the rows
/// (`notes`, from the documents the agent loaded: their reasons).
pub fn render(
    node: &str,
    scan_interval: Option<Duration>,
    report: Option<&Report>,
    inside: Option<&InsideView>,
    notes: &EntryNotes,
    now: Timestamp,
) -> String {
    let empty;
    let report = match report {
        Some(r) => r,
        None => {
            let why = match scan_interval {
                Some(_) => "no peer scan has finished yet; this page reloads itself",
                None => "this agent does not scan its peers (start it with --scan-interval SECS)",
            };
            empty = Report::new(Vec::new(), vec![why.to_string()]);
            &empty
        }
    };
    let when = match scan_interval {
        Some(d) => format!("{now} (page served; peers scanned every {} s)", d.as_secs()),
        None => format!("{now} (page served)"),
    };
    html::render(&Page {
        report,
        generated_at: &when,
        version: html::VERSION,
        title: &format!("portwarden agent on {node}"),
        entries: notes,
        refresh_secs: Some(refresh_secs(scan_interval)),
        inside,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use portwarden_reconcile::{Row, Verdict};

    #[test]
    fn it_reloads_with_the_scans_within_bounds() {
        assert_eq!(refresh_secs(None), 30);
        assert_eq!(refresh_secs(Some(Duration::from_secs(1))), 5);
        assert_eq!(refresh_secs(Some(Duration::from_secs(60))), 60);
        assert_eq!(refresh_secs(Some(Duration::from_secs(86_400))), 600);
    }

    #[test]
    fn the_page_shows_the_peer_scan_and_the_inside_view() {
        let row = Row {
            node: "<i>web-2</i>".into(),
            address: "10.213.0.12".parse().unwrap(),
            port: 8080,
            protocol: "tcp".into(),
            from: "10.213.0.11".parse().unwrap(),
            expected: "closed".into(),
            observed: "filtered".into(),
            verdict: Verdict::Drift,
            cause: Some("probes are dropped".into()),
            policy: Some("quarantine".into()),
            entry: Some(0),
            confirmed_at: None,
        };
        let report = Report::new(vec![row], vec![]);
        let view = InsideView {
            node: "web-1".into(),
            converged: true,
            ..InsideView::default()
        };
        let now = Timestamp::from_unix(1_796_129_516);
        let notes = EntryNotes::from([(
            ("quarantine".to_string(), 0),
            html::EntryNote {
                priority: 100,
                ports: "8080".into(),
                protocol: "tcp".into(),
                state: "closed".into(),
                from: "any".into(),
                reason: Some("INC-1234 <b>suspected</b>".into()),
                expires: None,
            },
        )]);
        let page = render(
            "web-1",
            Some(Duration::from_secs(60)),
            Some(&report),
            Some(&view),
            &notes,
            now,
        );
        assert!(
            page.contains("INC-1234 &lt;b&gt;suspected&lt;/b&gt;"),
            "the entry's reason, escaped: {page}"
        );
        assert!(page.contains("<meta http-equiv=\"refresh\" content=\"60\">"));
        assert!(page.contains("<h1>portwarden agent on web-1</h1>"));
        assert!(page.contains("2026-12-01T12:51:56Z (page served; peers scanned every 60 s)"));
        assert!(page.contains("&lt;i&gt;web-2&lt;/i&gt;") && !page.contains("<i>"));
        assert!(page.contains("policy <code>quarantine</code>, entry 0"));
        assert!(page.contains("portwarden's rules are in place"), "{page}");
        assert!(!page.contains("<script"));
    }

    #[test]
    fn before_a_peer_scan_the_page_says_why_it_has_none() {
        let now = Timestamp::from_unix(0);
        let page = render("web-1", None, None, None, &EntryNotes::new(), now);
        assert!(
            page.contains(
                "this agent does not scan its peers (start it with --scan-interval SECS)"
            )
        );
        assert!(page.contains("<meta http-equiv=\"refresh\" content=\"30\">"));
        let page = render(
            "web-1",
            Some(Duration::from_secs(10)),
            None,
            None,
            &EntryNotes::new(),
            now,
        );
        assert!(page.contains("no peer scan has finished yet"));
    }
}
