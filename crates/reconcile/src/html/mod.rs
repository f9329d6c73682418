//! The drift report as one self-contained HTML page: `verify -o html`, `verify --html FILE`
//! and the agent's page at `/`. This module owns the page's skeleton (head, summary, notes)
//! and its public API; [`matrix`] draws the per-node matrices, [`details`] the tables of what
//! differs and of unlisted open ports, [`inside`] an agent's view of its own node, [`style`]
//! the stylesheet, palette and symbols.
//!
//! # Guarantees
//!
//! * Self-contained: inline CSS and an inline SVG chart only; no script, no font, image or style
//!   fetched from anywhere (the page's Content-Security-Policy forbids them too, so a browser
//!   would refuse even one that slipped in). Readable offline, safe to attach to a ticket.
//! * Every string from a policy, an inventory, an agent or the network goes through [`esc`]:
//!   HTML-escaped, control characters shown as escapes (`text::printable`).
//! * Pure and deterministic: the time and version are given in [`Page`], never read here, so
//!   one report renders to the same bytes every time.
//! * Colour is never the only signal: every cell has a symbol of its own shape and the
//!   observed state in words; the palette is Okabe and Ito's, safe for colour-blind readers.

mod details;
mod inside;
mod matrix;
mod style;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use portwarden_policy::PolicySet;
use portwarden_policy::text::printable;

use crate::inside::InsideView;
use crate::report::{Report, Summary};
use crate::verdict::Verdict;

pub use style::{Look, look};

/// portwarden's version, for [`Page::version`].
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What `explain` says of a policy entry: the page shows it beside every row the entry
/// decides that is not in sync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryNote {
    /// The policy's priority (lower wins).
    pub priority: u32,
    /// The entry's ports, as in the policy (`22,8000-8100`).
    pub ports: String,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// The intended state.
    pub state: String,
    /// Its sources (`10.0.0.0/8, 192.0.2.7/32`), or `any`.
    pub from: String,
    /// Why the entry exists, when the policy says.
    pub reason: Option<String>,
    /// When it stops applying (RFC 3339), for an expiring entry.
    pub expires: Option<String>,
}

/// Entry notes by (policy name, entry index), the keys of [`crate::Row::policy`] and
/// [`crate::Row::entry`].
pub type EntryNotes = BTreeMap<(String, usize), EntryNote>;

/// The notes of every entry of every policy in `policies`.
pub fn entry_notes(policies: &PolicySet) -> EntryNotes {
    let mut notes = EntryNotes::new();
    for p in policies.policies() {
        for e in &p.entries {
            let ports: Vec<String> = e.ports.iter().map(ToString::to_string).collect();
            let from: Vec<String> = e.from.iter().map(ToString::to_string).collect();
            let note = EntryNote {
                priority: p.priority,
                ports: ports.join(","),
                protocol: e.protocol.as_str().to_string(),
                state: e.state.as_str().to_string(),
                from: if from.is_empty() {
                    "any".into()
                } else {
                    from.join(", ")
                },
                reason: e.reason.clone(),
                expires: e.expires.map(|t| t.to_string()),
            };
            notes.insert((p.name.clone(), e.index), note);
        }
    }
    notes
}

/// A page to render: the report and the context it does not carry.
#[derive(Clone, Copy, Debug)]
pub struct Page<'a> {
    /// The report.
    pub report: &'a Report,
    /// When the scan behind it ran (RFC 3339, perhaps with a remark: the agent's page says it
    /// was served then); shown, never read from the clock here.
    pub generated_at: &'a str,
    /// portwarden's version ([`VERSION`]).
    pub version: &'a str,
    /// The page's heading (`portwarden verify`, `portwarden agent on web-1`).
    pub title: &'a str,
    /// Notes of the policy entries the rows name; an entry without one is shown by name.
    pub entries: &'a EntryNotes,
    /// Reload the page every this many seconds (a `<meta http-equiv="refresh">`, no script);
    /// `None` for a static report.
    pub refresh_secs: Option<u32>,
    /// An agent's view of its own node, shown after the summary (the agent's page).
    pub inside: Option<&'a InsideView>,
}

/// The page's Content-Security-Policy: nothing fetched, nothing run, only its own inline
/// style. A server of the page sends it as a header too.
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:";

/// `s` safe inside HTML text and attribute values: `& < > " '` escaped, control characters
/// shown as escapes (so a bidirectional override cannot reorder what the reader sees).
pub fn esc(s: &str) -> Cow<'_, str> {
    let s = printable(s);
    if !s.contains(['&', '<', '>', '"', '\'']) {
        return s;
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The page, as one HTML document.
pub fn render(page: &Page) -> String {
    let report = page.report;
    // About 100 bytes per compared port: one allocation for most pages.
    let mut out = String::with_capacity(4096 + report.results.len() * 100);
    head(&mut out, page);
    summary(&mut out, page);
    if let Some(view) = page.inside {
        inside::section(&mut out, view);
    }
    let nodes = matrix::nodes(report);
    matrix::index(&mut out, &nodes);
    for (i, n) in nodes.iter().enumerate() {
        matrix::section(&mut out, i, n, page.entries);
    }
    details::unlisted(&mut out, report);
    notes(&mut out, report);
    out.push_str("</main>\n</body>\n</html>\n");
    out
}

fn head(out: &mut String, page: &Page) {
    let title = esc(page.title);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    // Nothing may be fetched or run, even if something slipped past the escaping.
    let _ = writeln!(
        out,
        "<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">"
    );
    if let Some(secs) = page.refresh_secs {
        let _ = writeln!(out, "<meta http-equiv=\"refresh\" content=\"{secs}\">");
    }
    let verdict = if page.report.has_drift() {
        "DRIFT"
    } else {
        "in sync"
    };
    let _ = writeln!(out, "<title>{verdict} · {title}</title>");
    let _ = writeln!(out, "<style>{}</style>", style::CSS);
    out.push_str("</head>\n<body>\n");
    let _ = writeln!(out, "<main>\n<h1>{title}</h1>");
}

/// The counts, the stacked bar of verdicts, when, from where, which version, the legend.
fn summary(out: &mut String, page: &Page) {
    let r = page.report;
    let nodes: BTreeSet<&str> = r.results.iter().map(|x| x.node.as_str()).collect();
    // Rows of an address with no route to it have no source (the unspecified address).
    let vantages: BTreeSet<IpAddr> = r
        .results
        .iter()
        .map(|x| x.from)
        .filter(|a| !a.is_unspecified())
        .collect();
    let vantages: Vec<String> = vantages.iter().map(ToString::to_string).collect();
    let s = &r.summary;
    let (class, word) = if r.has_drift() {
        ("v-drift", "Drift")
    } else if s.indeterminate > 0 {
        ("v-indeterminate", "No drift; some ports undecided")
    } else {
        ("v-in_sync", "In sync")
    };
    let _ = writeln!(
        out,
        "<section id=\"summary\">\n<p class=\"verdict {class}\" data-verdict=\"{}\">{word}</p>",
        overall(r).as_str()
    );
    out.push_str("<dl class=\"counts\">\n");
    let mut item = |key: &str, id: &str, value: String| {
        let _ = writeln!(out, "<div><dt>{key}</dt><dd id=\"{id}\">{value}</dd></div>");
    };
    item("Nodes", "count-nodes", nodes.len().to_string());
    item("Ports checked", "count-ports", r.results.len().to_string());
    item("In sync", "count-in_sync", s.in_sync.to_string());
    item("Drift", "count-drift", s.drift.to_string());
    item(
        "Indeterminate",
        "count-indeterminate",
        s.indeterminate.to_string(),
    );
    item("When", "when", esc(page.generated_at).into_owned());
    item("From", "vantages", vantages.join(", "));
    item("portwarden", "version", esc(page.version).into_owned());
    out.push_str("</dl>\n");
    bar(out, s);
    style::legend(out);
    out.push_str("</section>\n");
}

/// The worst verdict of the report.
fn overall(r: &Report) -> Verdict {
    if r.summary.drift > 0 {
        Verdict::Drift
    } else if r.summary.indeterminate > 0 {
        Verdict::Indeterminate
    } else {
        Verdict::InSync
    }
}

/// A bar of the verdicts' shares (inline SVG); the counts beside it say the same in text.
fn bar(out: &mut String, s: &Summary) {
    let total = s.in_sync + s.drift + s.indeterminate;
    if total == 0 {
        return;
    }
    out.push_str(
        "<svg class=\"bar\" viewBox=\"0 0 1000 24\" preserveAspectRatio=\"none\" role=\"img\" aria-label=\"share of ports per verdict\">",
    );
    let mut x = 0usize;
    for (v, n) in [
        (Verdict::Drift, s.drift),
        (Verdict::Indeterminate, s.indeterminate),
        (Verdict::InSync, s.in_sync),
    ] {
        if n == 0 {
            continue;
        }
        let w = (n * 1000).div_ceil(total);
        let l = look(v);
        let _ = write!(
            out,
            "<rect x=\"{x}\" y=\"0\" width=\"{w}\" height=\"24\" fill=\"{}\"><title>{n} {}</title></rect>",
            l.colour, l.word
        );
        x += w;
    }
    out.push_str("</svg>\n");
}

fn notes(out: &mut String, r: &Report) {
    if r.notes.is_empty() {
        return;
    }
    out.push_str("<section id=\"notes\">\n<h2>Notes</h2>\n<ul>\n");
    for n in &r.notes {
        let _ = writeln!(out, "<li>{}</li>", esc(n));
    }
    out.push_str("</ul>\n</section>\n");
}

#[cfg(test)]
mod tests;
