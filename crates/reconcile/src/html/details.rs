//! The HTML page's tables of findings: for each node, every drift and indeterminate port with
//! what was expected, what was observed, the cause, and the policy entry (and its reason)
//! that made the expectation; and, in a section of their own, the open ports no policy
//! declares. Consecutive ports alike in every column share one line.

use std::fmt::Write as _;
use std::net::IpAddr;

use super::matrix::{UNLISTED, port_label, rank, runs};
use super::style::{look, symbol};
use super::{EntryNotes, esc};
use crate::report::{Report, Row};
use crate::verdict::Verdict;

/// What makes two ports' lines alike (so a run of them is one line).
type Key<'a> = (
    u8,
    IpAddr,
    &'a str,
    IpAddr,
    &'a str,
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    Option<usize>,
    Option<&'a str>,
);

fn key(r: &Row) -> Key<'_> {
    (
        rank(r.verdict),
        r.address,
        &r.protocol,
        r.from,
        &r.expected,
        &r.observed,
        r.cause.as_deref(),
        r.policy.as_deref(),
        r.entry,
        r.confirmed_at.as_deref(),
    )
}

/// The table of a node's managed `rows` that are not in sync, drift first.
pub(super) fn differences(out: &mut String, rows: &[&Row], entries: &EntryNotes) {
    let mut off: Vec<&Row> = rows
        .iter()
        .copied()
        .filter(|r| r.verdict != Verdict::InSync)
        .collect();
    if off.is_empty() {
        return;
    }
    off.sort_by_key(|r| (rank(r.verdict), r.address, &r.protocol, r.from, r.port));
    let lines = runs(off.iter().map(|r| (key(r), r.port, *r)));
    let dated = off.iter().any(|r| r.confirmed_at.is_some());
    out.push_str("<h3>What differs</h3>\n<table class=\"details\">\n<thead><tr>");
    out.push_str("<th>Port</th><th>Address</th><th>From</th><th>Verdict</th><th>Expected</th>");
    out.push_str("<th>Observed</th><th>Cause</th><th>Expected because</th>");
    if dated {
        out.push_str("<th>Confirmed</th>");
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for run in &lines {
        line(out, run.first, &run.ports, entries, dated);
    }
    out.push_str("</tbody>\n</table>\n");
}

fn line(out: &mut String, r: &Row, ports: &[u16], entries: &EntryNotes, dated: bool) {
    let _ = write!(
        out,
        "<tr class=\"finding\" data-verdict=\"{}\"><th class=\"port\">{}</th><td>{}</td><td>{}</td><td class=\"{}\">",
        r.verdict.as_str(),
        port_label(ports, &r.protocol),
        r.address,
        r.from,
        look(r.verdict).class
    );
    symbol(out, r.verdict);
    let _ = write!(
        out,
        "{}</td><td>{}</td><td>{}</td><td class=\"cause\">{}</td><td>",
        look(r.verdict).word,
        esc(&r.expected),
        esc(&r.observed),
        esc(r.cause.as_deref().unwrap_or(""))
    );
    decided_by(out, r, entries);
    out.push_str("</td>");
    if dated {
        let _ = write!(
            out,
            "<td>{}</td>",
            esc(r.confirmed_at.as_deref().unwrap_or("-"))
        );
    }
    out.push_str("</tr>\n");
}

/// What `explain` says of the row's deciding entry: policy, entry, what it says and why.
fn decided_by(out: &mut String, r: &Row, entries: &EntryNotes) {
    let (Some(policy), Some(entry)) = (&r.policy, r.entry) else {
        out.push_str("no policy entry decides this port for this source");
        return;
    };
    let _ = write!(out, "policy <code>{}</code>, entry {entry}", esc(policy));
    let Some(n) = entries.get(&(policy.clone(), entry)) else {
        return;
    };
    let _ = write!(
        out,
        ": {} {}/{} from {} (priority {})",
        esc(&n.state),
        esc(&n.ports),
        esc(&n.protocol),
        esc(&n.from),
        n.priority
    );
    if let Some(t) = &n.expires {
        let _ = write!(out, ", expires {}", esc(t));
    }
    match &n.reason {
        Some(reason) => {
            let _ = write!(out, "<div class=\"reason\">reason: {}</div>", esc(reason));
        }
        None => out.push_str("<div class=\"reason\">no reason given</div>"),
    }
}

/// The section of open ports no policy declares (`unlisted: report`), over all nodes.
pub(super) fn unlisted(out: &mut String, report: &Report) {
    let mut rows: Vec<&Row> = report
        .results
        .iter()
        .filter(|r| r.expected == UNLISTED)
        .collect();
    rows.sort_by_key(|r| (&r.node, r.address, &r.protocol, r.from, r.port));
    out.push_str("<section id=\"unlisted\">\n<h2>Open ports no policy declares</h2>\n");
    if rows.is_empty() {
        out.push_str(
            "<p>None found. Only nodes whose policies say <code>unlisted: report</code> are searched.</p>\n</section>\n",
        );
        return;
    }
    let lines = runs(rows.iter().map(|r| {
        let k = (
            &r.node,
            r.address,
            &r.protocol,
            r.from,
            &r.observed,
            &r.cause,
        );
        (k, r.port, *r)
    }));
    out.push_str(
        "<table class=\"details\">\n<thead><tr><th>Node</th><th>Port</th><th>Address</th>",
    );
    out.push_str("<th>From</th><th>Observed</th><th>Cause</th></tr></thead>\n<tbody>\n");
    for run in &lines {
        let (r, ports) = (run.first, &run.ports);
        let _ = write!(
            out,
            "<tr class=\"finding\" data-verdict=\"{}\"><td>{}</td><th class=\"port\">{}</th><td>{}</td><td>{}</td><td class=\"{}\">",
            r.verdict.as_str(),
            esc(&r.node),
            port_label(ports, &r.protocol),
            r.address,
            r.from,
            look(r.verdict).class
        );
        symbol(out, r.verdict);
        let _ = writeln!(
            out,
            "{}</td><td class=\"cause\">{}</td></tr>",
            esc(&r.observed),
            esc(r.cause.as_deref().unwrap_or(""))
        );
    }
    out.push_str("</tbody>\n</table>\n</section>\n");
}
