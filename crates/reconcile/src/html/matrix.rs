//! The HTML page's node sections: per node, a matrix of its managed ports by source vantage
//! (consecutive ports that look alike from every vantage collapsed into one range, as nmap
//! writes them), drift first, then the node's table of what differs ([`super::details`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use portwarden_scan::PortList;

use super::details;
use super::style::{look, symbol};
use super::{EntryNotes, esc};
use crate::report::{Report, Row, Summary};
use crate::verdict::Verdict;

/// The `expected` of an open port no policy declares: those rows are not managed ports and
/// go to their own section.
pub(super) const UNLISTED: &str = "unlisted";

/// Drift first, then indeterminate, then in sync.
pub(super) fn rank(v: Verdict) -> u8 {
    match v {
        Verdict::Drift => 0,
        Verdict::Indeterminate => 1,
        Verdict::InSync => 2,
    }
}

/// One node as the page shows it.
pub(super) struct NodeView<'a> {
    pub name: &'a str,
    pub addresses: Vec<IpAddr>,
    /// The matrix's columns.
    pub vantages: Vec<IpAddr>,
    /// The matrix's rows, drift first.
    pub groups: Vec<Group<'a>>,
    /// The node's managed rows (not unlisted).
    pub rows: Vec<&'a Row>,
    /// Counts over all of the node's rows.
    pub summary: Summary,
}

impl NodeView<'_> {
    fn worst(&self) -> Verdict {
        if self.summary.drift > 0 {
            Verdict::Drift
        } else if self.summary.indeterminate > 0 {
            Verdict::Indeterminate
        } else {
            Verdict::InSync
        }
    }
}

/// A matrix row: a run of ports of one address and protocol that look alike from every
/// vantage; `cells[i]` is the row of vantage `i` for the first port, if it was compared.
pub(super) struct Group<'a> {
    pub address: IpAddr,
    pub protocol: &'a str,
    pub ports: Vec<u16>,
    pub cells: Vec<Option<&'a Row>>,
}

impl Group<'_> {
    fn worst(&self) -> u8 {
        self.cells
            .iter()
            .flatten()
            .map(|r| rank(r.verdict))
            .min()
            .unwrap_or(u8::MAX)
    }
}

/// A run of consecutive ports alike: their ports and what the first of them carried.
pub(super) struct Run<T> {
    pub ports: Vec<u16>,
    pub first: T,
}

/// Runs of consecutive ports with equal keys, in the order given: an item `(key, port,
/// payload)` joins the last run when its key equals the run's and its port follows the
/// run's last port; a run keeps its first item's payload.
pub(super) fn runs<K: PartialEq, T>(items: impl IntoIterator<Item = (K, u16, T)>) -> Vec<Run<T>> {
    let mut out: Vec<(K, Run<T>)> = Vec::new();
    for (key, port, payload) in items {
        match out.last_mut() {
            Some((k, run))
                if *k == key
                    && run
                        .ports
                        .last()
                        .is_some_and(|&p| u32::from(p) + 1 == u32::from(port)) =>
            {
                run.ports.push(port);
            }
            _ => out.push((
                key,
                Run {
                    ports: vec![port],
                    first: payload,
                },
            )),
        }
    }
    out.into_iter().map(|(_, run)| run).collect()
}

/// `ports` as nmap writes a list (`8000-8100`), then the protocol.
pub(super) fn port_label(ports: &[u16], protocol: &str) -> String {
    format!(
        "{}/{}",
        PortList::from_ports(ports.to_vec()).to_nmap_string(),
        esc(protocol)
    )
}

/// The report's nodes, those with drift first, then those with indeterminate ports, each
/// group by name.
pub(super) fn nodes(report: &Report) -> Vec<NodeView<'_>> {
    let mut by_node: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
    for r in &report.results {
        by_node.entry(&r.node).or_default().push(r);
    }
    let mut nodes: Vec<NodeView> = by_node
        .into_iter()
        .map(|(name, rows)| node(name, &rows))
        .collect();
    nodes.sort_by_key(|n| rank(n.worst()));
    nodes
}

fn node<'a>(name: &'a str, all: &[&'a Row]) -> NodeView<'a> {
    let mut summary = Summary::default();
    for r in all {
        match r.verdict {
            Verdict::InSync => summary.in_sync += 1,
            Verdict::Drift => summary.drift += 1,
            Verdict::Indeterminate => summary.indeterminate += 1,
        }
    }
    let rows: Vec<&Row> = all
        .iter()
        .copied()
        .filter(|r| r.expected != UNLISTED)
        .collect();
    let addresses: BTreeSet<IpAddr> = all.iter().map(|r| r.address).collect();
    let vantages: Vec<IpAddr> = rows
        .iter()
        .map(|r| r.from)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let column = |from: IpAddr| vantages.iter().position(|&v| v == from).unwrap_or(0);
    let mut ports: BTreeMap<(IpAddr, &str, u16), Vec<Option<&Row>>> = BTreeMap::new();
    for r in &rows {
        let cells = ports
            .entry((r.address, r.protocol.as_str(), r.port))
            .or_insert_with(|| vec![None; vantages.len()]);
        cells[column(r.from)] = Some(r);
    }
    // Ports look alike when every vantage saw the same, expected the same and judged alike.
    let sig = |cells: &[Option<&Row>]| -> Vec<Option<(Verdict, String, String)>> {
        cells
            .iter()
            .map(|c| c.map(|r| (r.verdict, r.observed.clone(), r.expected.clone())))
            .collect()
    };
    let keyed = ports.iter().map(|(&(address, protocol, port), cells)| {
        (
            (address, protocol, sig(cells)),
            port,
            (address, protocol, cells),
        )
    });
    let mut groups: Vec<Group> = runs(keyed)
        .into_iter()
        .map(|run| Group {
            address: run.first.0,
            protocol: run.first.1,
            cells: run.first.2.clone(),
            ports: run.ports,
        })
        .collect();
    groups.sort_by_key(Group::worst);
    NodeView {
        name,
        addresses: addresses.into_iter().collect(),
        vantages,
        groups,
        rows,
        summary,
    }
}

fn counts(s: &Summary) -> String {
    format!(
        "{} drift, {} indeterminate, {} in sync",
        s.drift, s.indeterminate, s.in_sync
    )
}

/// A list of the nodes with their counts, linking to their sections (when there are several).
pub(super) fn index(out: &mut String, nodes: &[NodeView]) {
    if nodes.len() < 2 {
        return;
    }
    out.push_str("<nav>\n<h2>Nodes</h2>\n<ul>\n");
    for (i, n) in nodes.iter().enumerate() {
        out.push_str("<li>");
        symbol(out, n.worst());
        let _ = writeln!(
            out,
            "<a href=\"#n{i}\">{}</a>: {}</li>",
            esc(n.name),
            counts(&n.summary)
        );
    }
    out.push_str("</ul>\n</nav>\n");
}

/// The section of node number `i`: heading, counts, matrix, what differs.
pub(super) fn section(out: &mut String, i: usize, n: &NodeView, entries: &EntryNotes) {
    let addresses: Vec<String> = n.addresses.iter().map(ToString::to_string).collect();
    let _ = writeln!(
        out,
        "<section class=\"node\" id=\"n{i}\" data-node=\"{}\" style=\"contain-intrinsic-size: auto {}px\">\n<h2>",
        esc(n.name),
        likely_height(n)
    );
    symbol(out, n.worst());
    let _ = writeln!(
        out,
        "{} <small>{}</small></h2>\n<p class=\"node-counts\">{}</p>",
        esc(n.name),
        addresses.join(", "),
        counts(&n.summary)
    );
    if n.groups.is_empty() {
        out.push_str("<p>No managed port was compared on this node.</p>\n");
    } else {
        table(out, n);
    }
    details::differences(out, &n.rows, entries);
    out.push_str("</section>\n");
}

/// About how tall a node's section is, in pixels, for the browser to size it before laying it
/// out: the heading, a line per matrix row (two for those not in sync), a table line per
/// finding.
fn likely_height(n: &NodeView) -> usize {
    let off = |v: Verdict| v != Verdict::InSync;
    let rows: usize = n
        .groups
        .iter()
        .map(|g| {
            if g.cells.iter().flatten().any(|r| off(r.verdict)) {
                38
            } else {
                22
            }
        })
        .sum();
    let findings = n.rows.iter().filter(|r| off(r.verdict)).count();
    140 + rows + 48 * findings
}

fn table(out: &mut String, n: &NodeView) {
    let several = n.addresses.len() > 1;
    out.push_str("<table class=\"matrix\">\n<thead><tr><th>Port</th>");
    if several {
        out.push_str("<th>Address</th>");
    }
    for v in &n.vantages {
        // verify's rows of an address it has no route to have no source.
        if v.is_unspecified() {
            out.push_str("<th>no route: no source</th>");
        } else {
            let _ = write!(out, "<th>from {v}</th>");
        }
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for g in &n.groups {
        let worst = g
            .cells
            .iter()
            .flatten()
            .map(|r| r.verdict)
            .min_by_key(|&v| rank(v));
        let _ = write!(
            out,
            "<tr data-verdict=\"{}\"><th class=\"port\">{}</th>",
            worst.map_or("none", Verdict::as_str),
            port_label(&g.ports, g.protocol)
        );
        if several {
            let _ = write!(out, "<td>{}</td>", g.address);
        }
        for c in &g.cells {
            cell(out, *c);
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n");
}

/// One cell: the verdict's colour, symbol and the observed state in nmap's words; the
/// expectation too when it was not met.
fn cell(out: &mut String, row: Option<&Row>) {
    let Some(r) = row else {
        out.push_str("<td class=\"none\">—</td>");
        return;
    };
    let l = look(r.verdict);
    let observed = esc(&r.observed);
    let expected = esc(&r.expected);
    let _ = write!(
        out,
        "<td class=\"{}\" title=\"{}: expected {expected}, observed {observed}\">",
        l.class, l.word
    );
    symbol(out, r.verdict);
    out.push_str(&observed);
    if r.verdict != Verdict::InSync {
        let _ = write!(out, "<small>expected {expected}</small>");
    }
    out.push_str("</td>");
}
