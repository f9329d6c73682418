//! The HTML page's section on an agent's own node ([`InsideView`]): whether its rules are in
//! place, whether its documents and its last apply are good, and what else decides its
//! managed ports (foreign rules first in a chain, forwarding, other nftables tables, the other
//! iptables backend), with the sockets listening on them. Shown by the agent's page at `/`.

use std::fmt::Write as _;

use super::esc;
use super::style::symbol;
use crate::inside::InsideView;
use crate::verdict::Verdict;

/// The section of `view`.
pub(super) fn section(out: &mut String, view: &InsideView) {
    let _ = writeln!(
        out,
        "<section id=\"inside\">\n<h2>Inside view of {}</h2>\n<ul class=\"inside\">",
        esc(&view.node)
    );
    let item = |out: &mut String, good: bool, text: &str| {
        out.push_str("<li>");
        symbol(
            out,
            if good {
                Verdict::InSync
            } else {
                Verdict::Drift
            },
        );
        let _ = writeln!(out, "{text}</li>");
    };
    let rules = if view.converged {
        "portwarden's rules are in place".to_string()
    } else {
        format!(
            "portwarden's rules are not in place: {} changes pending",
            view.pending_changes
        )
    };
    item(out, view.converged, &rules);
    let documents = if view.policy_invalid {
        "the policy documents are invalid: the last good state stays applied (the agent's log names the problems)"
    } else {
        "the policy documents are valid"
    };
    item(out, !view.policy_invalid, documents);
    let apply = if view.apply_failed {
        "the last apply failed, or the rules cannot be read (the agent's log says why)"
    } else {
        "the last apply succeeded"
    };
    item(out, !view.apply_failed, apply);
    if let Some(m) = &view.mixed_backends {
        item(out, false, &esc(m));
    }
    out.push_str("</ul>\n");
    findings(out, view);
    listeners(out, view);
    out.push_str("</section>\n");
}

/// What else decides managed ports: shadowing rules, forwarding, other tables.
fn findings(out: &mut String, view: &InsideView) {
    let mut lines: Vec<String> = Vec::new();
    for s in &view.shadowing {
        let entries: Vec<String> = s
            .entries
            .iter()
            .map(|(p, e)| format!("<code>{}</code> entry {e}", esc(p)))
            .collect();
        lines.push(format!(
            "{} {}: a foreign rule decides first for {}",
            esc(&s.family),
            esc(&s.describe()),
            entries.join(", ")
        ));
    }
    for f in &view.forwarded {
        lines.push(format!(
            "{} forwarded: {}",
            esc(&f.family),
            esc(&f.description)
        ));
    }
    for t in &view.foreign_tables {
        lines.push(format!(
            "{} <code>{}</code> entry {}: {}",
            esc(&t.family),
            esc(&t.policy),
            t.entry,
            esc(&t.message)
        ));
    }
    if lines.is_empty() {
        return;
    }
    out.push_str("<h3>What else decides managed ports</h3>\n<ul>\n");
    for l in lines {
        let _ = writeln!(out, "<li>{l}</li>");
    }
    out.push_str("</ul>\n");
}

fn listeners(out: &mut String, view: &InsideView) {
    if view.listeners.is_empty() {
        return;
    }
    out.push_str("<h3>Listening on managed ports</h3>\n<table class=\"details\">\n");
    out.push_str("<thead><tr><th>Port</th><th>Address</th></tr></thead>\n<tbody>\n");
    for l in &view.listeners {
        let _ = writeln!(
            out,
            "<tr><th class=\"port\">{}/{}</th><td>{}</td></tr>",
            l.port,
            l.protocol.as_str(),
            l.address
        );
    }
    out.push_str("</tbody>\n</table>\n");
}
