//! `portwarden status`: the inside view for a person on the node. For every entry of the
//! node's policies: what it asks for (ports, protocol, sources, state), whether its rules are
//! in place in each family, the packets and bytes they matched (the kernel's counters, read with
//! `iptables-save -c`), its expiry, and foreign rules that shadow it. Read-only, takes no lock;
//! exit 0 whatever it finds.
//!
//! The counters are the kernel's: they count since each rule was written, so a chain that an
//! apply rewrote (any change to an entry whose ports fall in it) starts again from 0.

use std::collections::HashMap;
use std::process::ExitCode;

use anyhow::Context;
use portwarden_netfilter::addresses::Host;
use portwarden_netfilter::{
    BackendChoice, EntryCounters, Failsafe, Family, Netfilter, Options, Plan, Ruleset, Shadowing,
    entry_counters,
};
use portwarden_policy::expiry::human_span;
use portwarden_policy::{Entry, NodeIntent, Timestamp, text};
use serde::Serialize;

use crate::Outcome;
use crate::args::Format;
use crate::cmd::plan::IntentArgs;

/// What the table and `since` in the JSON say about the counters.
const COUNTERS_SINCE: &str = "since each rule was written: a chain rewritten by apply (a change to an entry whose ports fall in it) starts again from 0";

/// Arguments of `status`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example (in a lab namespace: ip netns exec NS portwarden status ...):\n  portwarden status -f examples/ --inventory examples/inventory.yaml --node web-1 -o json\n\nPackets and bytes are the kernel's counters since each rule was written (a chain rewritten\nby apply starts again from 0). Read-only; takes no lock (--wait is not used).\n\nExit codes: 0 status shown, 1 error."
)]
pub struct Args {
    #[command(flatten)]
    intent: IntentArgs,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    output: Format,
}

/// `status -o json` (the shape docs/cli.md documents).
#[derive(Serialize)]
struct StatusOutput<'a> {
    node: &'a str,
    backend: &'a str,
    /// The managed families, `ipv4` first.
    families: Vec<Family>,
    /// What the counters count from.
    counters_since: &'static str,
    entries: Vec<EntryStatus>,
    /// Foreign rules above portwarden's jump that shadow entries, as `plan` reports them.
    shadowing: &'a [Shadowing],
}

/// One entry of the node's policies.
#[derive(Serialize)]
struct EntryStatus {
    policy: String,
    entry: usize,
    protocol: &'static str,
    /// `80,8000-8100`.
    ports: String,
    /// Source networks; empty: any source (both families).
    sources: Vec<String>,
    /// The intended state.
    state: &'static str,
    /// Whether the entry applies now (false once it has expired).
    applied: bool,
    /// Whether every rule it needs is in place, in every family (false when expired).
    in_place: bool,
    /// Packets matched, both families.
    packets: u64,
    /// Bytes matched, both families.
    bytes: u64,
    /// Per managed family.
    per_family: Vec<FamilyStatus>,
    /// RFC 3339, UTC; `null` for a permanent entry.
    expires: Option<String>,
    /// Seconds from now (negative once expired); `null` for a permanent entry.
    expires_in_seconds: Option<i64>,
    /// The foreign rules that shadow it, as `CHAIN#POSITION (family)`.
    shadowed_by: Vec<String>,
}

/// One entry in one family.
#[derive(Serialize)]
struct FamilyStatus {
    family: Family,
    /// Rules portwarden renders for it here (0: none, e.g. sources of the other family only).
    rules_expected: usize,
    /// How many of them are in the kernel, where packets reach them.
    rules_in_place: usize,
    packets: u64,
    bytes: u64,
}

pub fn run(a: Args) -> Outcome {
    let failsafe: Failsafe = a
        .intent
        .failsafe
        .parse()
        .with_context(|| format!("invalid --failsafe \"{}\"", a.intent.failsafe))?;
    let (loaded, node) = a.intent.policy.load()?;
    let now = Timestamp::now();
    let intent = loaded.policies.compile_at(&node.labels, now);
    // Every entry, the expired ones too: their rules may still be in the kernel (stopped by
    // the time match) until the next apply or refresh removes them.
    let every = loaded
        .policies
        .compile_at(&node.labels, Timestamp::from_unix(i64::MIN));
    let (netfilter, current) = detect_and_read(&a.intent.netfilter)?;
    let host = Host::read().context("cannot list this network namespace's addresses")?;
    let rendered = host.render(&intent, &failsafe);
    let counters = entry_counters(&every, &rendered, &current);
    let refs: Vec<(Family, &Ruleset)> = current.iter().map(|(f, rs)| (*f, rs)).collect();
    let plan = Plan::from_rendered(&rendered, &intent, &refs);
    let families: Vec<Family> = current.iter().map(|(f, _)| *f).collect();
    let entries = entry_rows(&loaded.policies, &every, &counters, &plan.shadowing, now);
    let out = StatusOutput {
        node: &node.name,
        backend: netfilter.backend().as_str(),
        families,
        counters_since: COUNTERS_SINCE,
        entries,
        shadowing: &plan.shadowing,
    };
    match a.output {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&out).context("cannot encode JSON")?
        ),
        Format::Table => print!("{}", table(&out)),
    }
    Ok(ExitCode::SUCCESS)
}

/// The backend (as `plan` picks it) and both families' filter tables with their counters: with
/// `--backend auto`, taken from detection's own reads (one `*-save -c` per family and backend,
/// all concurrent) rather than read twice.
fn detect_and_read(
    args: &crate::cmd::plan::NetfilterArgs,
) -> anyhow::Result<(Netfilter, Vec<(Family, Ruleset)>)> {
    crate::caps::require(
        crate::caps::Cap::NetAdmin,
        "read the rules and their counters",
    )?;
    let backend: BackendChoice = args
        .backend
        .parse()
        .with_context(|| format!("invalid --backend \"{}\"", args.backend))?;
    let options = Options {
        backend,
        lock_wait_secs: args.wait,
        ..Options::default()
    };
    Netfilter::detect_reading_counters(&options).context(
        "cannot read the filter tables with their counters (`iptables-save -c`, \
         `ip6tables-save -c`); status needs CAP_NET_ADMIN in this network namespace",
    )
}

/// One row per entry of the policies `every` was compiled from, in policy and entry order.
fn entry_rows(
    policies: &portwarden_policy::PolicySet,
    every: &NodeIntent,
    counters: &[EntryCounters],
    shadowing: &[Shadowing],
    now: Timestamp,
) -> Vec<EntryStatus> {
    let mut by_entry: HashMap<(&str, usize), Vec<&EntryCounters>> = HashMap::new();
    for c in counters {
        by_entry.entry((&c.policy, c.entry)).or_default().push(c);
    }
    let mut shadowed: HashMap<(&str, usize), Vec<String>> = HashMap::new();
    for s in shadowing {
        for e in &s.entries {
            shadowed
                .entry((&e.policy, e.entry))
                .or_default()
                .push(format!("{}#{} ({})", s.chain, s.position, s.family));
        }
    }
    let mut rows = Vec::new();
    for p in policies
        .policies()
        .iter()
        .filter(|p| every.policies.iter().any(|n| **n == *p.name))
    {
        for e in &p.entries {
            let key = (p.name.as_str(), e.index);
            let fams = by_entry.get(&key).map_or(&[][..], Vec::as_slice);
            let shadows = shadowed.remove(&key).unwrap_or_default();
            rows.push(entry_row(&p.name, e, fams, shadows, now));
        }
    }
    rows
}

fn entry_row(
    policy: &str,
    e: &Entry,
    fams: &[&EntryCounters],
    shadowed_by: Vec<String>,
    now: Timestamp,
) -> EntryStatus {
    let applied = e.expires.is_none_or(|t| !t.expired_at(now));
    let per_family: Vec<FamilyStatus> = fams
        .iter()
        .map(|c| FamilyStatus {
            family: c.family,
            rules_expected: c.rules_expected,
            rules_in_place: c.rules_in_place,
            packets: c.packets,
            bytes: c.bytes,
        })
        .collect();
    let ports: Vec<String> = e.ports.iter().map(ToString::to_string).collect();
    EntryStatus {
        policy: policy.to_string(),
        entry: e.index,
        protocol: e.protocol.as_str(),
        ports: ports.join(","),
        sources: e.from.iter().map(ToString::to_string).collect(),
        state: e.state.as_str(),
        applied,
        in_place: applied && fams.iter().all(|c| c.in_place()),
        packets: fams.iter().map(|c| c.packets).sum(),
        bytes: fams.iter().map(|c| c.bytes).sum(),
        per_family,
        expires: e.expires.map(|t| t.to_string()),
        expires_in_seconds: e.expires.map(|t| t.unix() - now.unix()),
        shadowed_by,
    }
}

/// The RULES cell: `in place`, what is missing per family, or why there is nothing.
fn rules_cell(e: &EntryStatus) -> String {
    if !e.applied {
        return "expired".into();
    }
    let rendered: Vec<&FamilyStatus> = e
        .per_family
        .iter()
        .filter(|f| f.rules_expected > 0)
        .collect();
    if rendered.is_empty() {
        return "none needed (failsafe ports, or sources of an unmanaged family)".into();
    }
    let missing: Vec<String> = rendered
        .iter()
        .filter(|f| f.rules_in_place < f.rules_expected)
        .map(|f| {
            format!(
                "{} {} of {} missing",
                short(f.family),
                f.rules_expected - f.rules_in_place,
                f.rules_expected
            )
        })
        .collect();
    if missing.is_empty() {
        "in place".into()
    } else {
        missing.join(", ")
    }
}

fn short(f: Family) -> &'static str {
    match f {
        Family::Ipv4 => "v4",
        Family::Ipv6 => "v6",
    }
}

/// `12 (v4 12, v6 0)`: the sum, then each managed family.
fn split_cell(total: u64, e: &EntryStatus, of: impl Fn(&FamilyStatus) -> u64) -> String {
    if e.per_family.len() < 2 {
        return total.to_string();
    }
    let parts: Vec<String> = e
        .per_family
        .iter()
        .map(|f| format!("{} {}", short(f.family), of(f)))
        .collect();
    format!("{total} ({})", parts.join(", "))
}

/// The EXPIRES cell, in `explain`'s words.
fn expires_cell(e: &EntryStatus) -> String {
    match (e.expires_in_seconds, e.applied) {
        (None, _) => "-".into(),
        (Some(secs), true) => format!("expires in {}", human_span(secs)),
        (Some(secs), false) => format!("expired {} ago, no longer applied", human_span(-secs)),
    }
}

/// The table for people: a heading, one aligned line per entry, the shadowing foreign rules.
/// Names and foreign rules' text are printed with control characters escaped.
fn table(out: &StatusOutput<'_>) -> String {
    let mut s = format!(
        "node {}, backend {}: {} entries; packets and bytes are counted {}\n",
        text::printable(out.node),
        out.backend,
        out.entries.len(),
        COUNTERS_SINCE
    );
    if out.entries.is_empty() {
        s.push_str("no policy selects this node: nothing is managed here\n");
        return s;
    }
    let header = [
        "POLICY",
        "ENTRY",
        "PORTS",
        "PROTO",
        "SOURCES",
        "STATE",
        "RULES",
        "PACKETS",
        "BYTES",
        "EXPIRES",
        "SHADOWED BY",
    ];
    let cells: Vec<Vec<String>> = out
        .entries
        .iter()
        .map(|e| {
            let sources = if e.sources.is_empty() {
                "any".to_string()
            } else {
                e.sources.join(",")
            };
            let shadows = if e.shadowed_by.is_empty() {
                "-".to_string()
            } else {
                e.shadowed_by.join(", ")
            };
            vec![
                text::printable(&e.policy).into_owned(),
                e.entry.to_string(),
                e.ports.clone(),
                e.protocol.to_string(),
                sources,
                e.state.to_string(),
                rules_cell(e),
                split_cell(e.packets, e, |f| f.packets),
                split_cell(e.bytes, e, |f| f.bytes),
                expires_cell(e),
                shadows,
            ]
        })
        .collect();
    s.push_str(&aligned(&header, &cells));
    for sh in out.shadowing {
        s.push_str(&text::printable(&format!("shadowed: {sh}")));
        s.push('\n');
    }
    s
}

/// Columns padded to their widest cell, two spaces apart (the last one not padded).
fn aligned(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: &[String]| {
        let last = cols.len().saturating_sub(1);
        let mut l = String::new();
        for (i, (c, w)) in cols.iter().zip(&widths).enumerate() {
            if i == last {
                l.push_str(c);
            } else {
                l.push_str(&format!("{c:<w$}  "));
            }
        }
        l.push('\n');
        l
    };
    let mut s = line(&header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    for r in rows {
        s.push_str(&line(r));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(applied: bool, fams: &[(Family, usize, usize, u64)]) -> EntryStatus {
        EntryStatus {
            policy: "web".into(),
            entry: 0,
            protocol: "tcp",
            ports: "80".into(),
            sources: vec![],
            state: "open",
            applied,
            in_place: false,
            packets: fams.iter().map(|f| f.3).sum(),
            bytes: 0,
            per_family: fams
                .iter()
                .map(
                    |&(family, rules_expected, rules_in_place, packets)| FamilyStatus {
                        family,
                        rules_expected,
                        rules_in_place,
                        packets,
                        bytes: 0,
                    },
                )
                .collect(),
            expires: None,
            expires_in_seconds: if applied { Some(11_520) } else { Some(-300) },
            shadowed_by: vec![],
        }
    }

    #[test]
    fn cells_say_what_is_missing_counted_and_expiring() {
        let both = row(true, &[(Family::Ipv4, 2, 2, 12), (Family::Ipv6, 2, 1, 3)]);
        assert_eq!(rules_cell(&both), "v6 1 of 2 missing");
        assert_eq!(
            split_cell(both.packets, &both, |f| f.packets),
            "15 (v4 12, v6 3)"
        );
        assert_eq!(expires_cell(&both), "expires in 3h12m");
        let ok = row(true, &[(Family::Ipv4, 2, 2, 0), (Family::Ipv6, 0, 0, 0)]);
        assert_eq!(rules_cell(&ok), "in place");
        let cut = row(true, &[(Family::Ipv4, 0, 0, 0)]);
        assert!(rules_cell(&cut).starts_with("none needed"));
        assert_eq!(split_cell(7, &cut, |f| f.packets), "7");
        let gone = row(false, &[(Family::Ipv4, 0, 0, 4)]);
        assert_eq!(rules_cell(&gone), "expired");
        assert_eq!(expires_cell(&gone), "expired 5 min ago, no longer applied");
    }

    #[test]
    fn columns_line_up() {
        let t = aligned(
            &["A", "BB", "C"],
            &[vec!["xxx".into(), "y".into(), "z".into()]],
        );
        assert_eq!(t, "A    BB  C\nxxx  y   z\n");
    }
}
