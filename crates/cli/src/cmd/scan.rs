//! `portwarden scan TARGET... -p PORTS`: an nmap-identical port scan, printed as a table, JSON
//! or nmap XML. A thin wrapper over the `portwarden-scan` crate; a progress bar on a terminal.
//!
//! # Which targets
//!
//! portwarden scans the machines it manages, not the Internet: a target must be a node of the
//! inventory given with `--inventory FILE` (by name or address), or a loopback address (which
//! never leaves this host), unless `--any-target` says explicitly that anything goes. The same
//! rule is passed down to the scanner as its `TargetPolicy`, which checks it again before any
//! packet is sent.

use std::io::IsTerminal;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use portwarden_policy::Node;
use portwarden_scan::{
    Bound, PortList, ScanConfig, ScanError, ScanKind, Scanner, TargetPolicy, Timing, report,
};

use crate::Outcome;
use crate::args;

/// Arguments of `scan`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  portwarden scan --inventory inv.yaml web-1 -p-\n  portwarden scan --inventory inv.yaml 10.213.0.11 web-2 -p 22,80,8000-8100 --scan connect -o json\n  portwarden scan --inventory inv.yaml web-1 -p 53,161 --scan udp -o xml > scan.xml  # for ndiff\n  portwarden scan 127.0.0.1 -p 1-1024\n  portwarden scan --any-target 192.0.2.10 -p 443 --max-rate-per-target 100\n\nTargets: nodes of the --inventory (by name or address) and loopback addresses; anything\nelse is refused (exit 1, nothing sent) unless --any-target is given. Loopback needs no flag:\nits packets never leave this host.\n\nRates: --rate caps probes per second in total, --max-rate-per-target caps them for each\ntarget separately (retransmissions included); both are upper bounds, never targets, and at\nleast 1. A scan expected to take over a minute (UDP is slow: each target answers about one\nclosed port per second) is announced on stderr with a rough duration.\n\nRate-limited targets: a target that withholds ICMP errors (Linux does, after a burst of six)\nis measured, and its silent ports are re-probed at the rate it answers until each silence\nis proven; the progress bar says so. Each -S ADDR given adds an address the target answers\nseparately; --confirm-budget SECS bounds the wait (ports left: reason rate-limited).\n\nExit codes: 0 scanned, 1 error or a target not scanned (no route to it; the others are\nprinted)."
)]
pub struct Args {
    /// Targets: IP addresses (IPv4 or IPv6), or node names of the --inventory.
    #[arg(value_name = "TARGET", required = true)]
    targets: Vec<String>,
    /// Inventory whose nodes may be scanned (targets may then be node names); other targets
    /// are refused.
    #[arg(long, value_name = "FILE", conflicts_with = "any_target")]
    inventory: Option<PathBuf>,
    /// Scan targets that are not in an inventory (anything but loopback needs --inventory or
    /// this flag).
    #[arg(long)]
    any_target: bool,
    /// Ports, in nmap's syntax: 22 | 1-1024 | 22,80,8000-8100 | - (all 65535).
    #[arg(
        short = 'p',
        long = "ports",
        value_name = "PORTS",
        allow_hyphen_values = true
    )]
    ports: String,
    /// Probe type: syn (raw; the default when allowed), connect (no privileges), ack, udp.
    #[arg(long = "scan", value_enum)]
    kind: Option<Kind>,
    /// Upper bound on probes per second, all targets together.
    #[arg(long, value_name = "PPS", value_parser = args::parse_rate)]
    rate: Option<u32>,
    /// Upper bound on probes per second to each target separately.
    #[arg(long, value_name = "PPS", value_parser = args::parse_rate)]
    max_rate_per_target: Option<u32>,
    /// Source address to send from (repeat it to give several, as nmap's -S): the first of
    /// each family is the source, the others are used too when a target rate-limits its
    /// ICMP errors, since each address has its own budget there. Each must be an address of
    /// this host.
    #[arg(short = 'S', long = "source", value_name = "ADDR")]
    sources: Vec<IpAddr>,
    /// Seconds the scan may spend confirming silent ports of targets that rate-limit their
    /// ICMP errors; ports still unconfirmed then are reported with the reason rate-limited.
    /// Default: as long as it takes (as nmap).
    #[arg(long, value_name = "SECS")]
    confirm_budget: Option<u32>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
    output: Output,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Syn,
    Connect,
    Ack,
    Udp,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    Table,
    Json,
    Xml,
}

impl From<Kind> for ScanKind {
    fn from(k: Kind) -> ScanKind {
        match k {
            Kind::Syn => ScanKind::Syn,
            Kind::Connect => ScanKind::Connect,
            Kind::Ack => ScanKind::Ack,
            Kind::Udp => ScanKind::Udp,
        }
    }
}

/// Turns the command line's targets into addresses and the scanner's target policy.
///
/// With an inventory, a target is a node name (all its addresses) or one of the nodes'
/// addresses; without one, an address. Loopback is always allowed; anything else needs the
/// inventory or `any_target`.
fn resolve_targets(
    raw: &[String],
    inventory: Option<(&Path, &[Node])>,
    any_target: bool,
) -> anyhow::Result<(Vec<IpAddr>, TargetPolicy)> {
    let mut targets = Vec::new();
    for t in raw {
        if let Some((_, nodes)) = inventory
            && let Some(node) = nodes.iter().find(|n| n.name == *t)
        {
            if node.addresses.is_empty() {
                bail!("node \"{t}\" has no addresses in the inventory; nothing to scan");
            }
            targets.extend_from_slice(&node.addresses);
            continue;
        }
        let address = t.parse::<IpAddr>().with_context(|| match inventory {
            Some((path, _)) => format!(
                "target \"{t}\" is neither a node of {} nor an IP address (portwarden does not resolve names)",
                path.display()
            ),
            None => format!(
                "target \"{t}\" is not an IP address (portwarden does not resolve names; pass --inventory FILE to scan nodes by name)"
            ),
        })?;
        targets.push(address);
    }
    let policy = match inventory {
        _ if any_target => TargetPolicy::Any,
        Some((_, nodes)) => TargetPolicy::only(nodes.iter().flat_map(|n| n.addresses.clone())),
        None => TargetPolicy::LoopbackOnly,
    };
    if let Some(refused) = targets.iter().find(|a| !policy.allows(**a)) {
        match inventory {
            Some((path, _)) => bail!(
                "refusing to scan {refused}: it is not an address of any node in {} (portwarden scans only the nodes it manages, so a typo cannot probe somebody else's host); add the node to the inventory, or pass --any-target to scan it anyway",
                path.display()
            ),
            None => bail!(
                "refusing to scan {refused}: it is not in an inventory (portwarden scans only the nodes it manages, so a typo cannot probe somebody else's host); pass --inventory FILE listing the node, or --any-target to scan it anyway (loopback addresses need neither)"
            ),
        }
    }
    Ok((targets, policy))
}

/// Scans expected to take longer than this are announced before they start.
const LONG_SCAN: Duration = Duration::from_secs(60);

/// `5 h 28 min`, `3 min 20 s`, `45 s`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        3600.. => format!("{} h {} min", s / 3600, s % 3600 / 60),
        60.. => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{s} s"),
    }
}

/// The warning for a scan that will take long (see `portwarden_scan::estimate`), naming what
/// makes it long and how to shorten it; `None` for a short one.
fn long_scan_warning(
    a: &Args,
    kind: ScanKind,
    targets: &[IpAddr],
    ports: &PortList,
) -> Option<String> {
    let e = portwarden_scan::estimate(kind, targets, ports.len(), &timing(a))?;
    if e.duration <= LONG_SCAN {
        return None;
    }
    let n = e.targets;
    let plural = if n == 1 { "target" } else { "targets" };
    let why = match e.bound {
        Bound::IcmpRateLimit => format!(
            "{} UDP ports on {n} {plural}, and each target answers closed UDP ports with about one ICMP port-unreachable per second per source address (Linux's net.ipv4.icmp_ratelimit; IPv6 allows more), which the scan must wait for to tell closed ports from silent ones; scan fewer ports to shorten it (the UDP services you mean to check, e.g. -p 53,67,123,161,500), or give more addresses of this host with -S, each of which the target answers separately",
            e.ports
        ),
        Bound::Rate(r) => format!(
            "{} probes at --rate {r} per second; raise --rate or scan fewer ports to shorten it",
            n * e.ports
        ),
        Bound::RatePerTarget(r) => format!(
            "{} probes per target at --max-rate-per-target {r} per second; raise --max-rate-per-target or scan fewer ports to shorten it",
            e.ports
        ),
    };
    let how_long = match e.up_to {
        Some(up_to) if up_to > e.duration => {
            format!("{} to {}", human(e.duration), human(up_to))
        }
        _ => human(e.duration),
    };
    Some(format!(
        "warning: this scan may take about {how_long}: {why}"
    ))
}

fn progress_bar() -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(0);
    let style = ProgressStyle::with_template("{bar:40} {pos}/{len} ports  {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    Some(bar)
}

/// The default timing with the command line's rate caps.
fn timing(a: &Args) -> Timing {
    Timing {
        max_rate: a.rate,
        max_rate_per_target: a.max_rate_per_target,
        ..Timing::default()
    }
}

fn scanner(a: &Args, policy: &TargetPolicy, bar: Option<ProgressBar>) -> Scanner {
    let scanner = Scanner::new(ScanConfig {
        targets: policy.clone(),
        timing: timing(a),
        confirm_budget: a.confirm_budget.map(|s| Duration::from_secs(u64::from(s))),
        ..args::scan_sources(&a.sources)
    });
    match bar {
        Some(bar) => scanner.on_progress(move |p| {
            bar.set_length(p.total);
            bar.set_position(p.done);
            bar.set_message(progress_message(p));
            if p.done >= p.total {
                bar.finish_and_clear();
            }
        }),
        None => scanner,
    }
}

/// The progress bar's message: the time left and, while the scan waits on a target's ICMP
/// rate limit, that it does and how fast the target answers.
fn progress_message(p: &portwarden_scan::Progress) -> String {
    let eta = p
        .eta()
        .map(|eta| format!("ETA {}", human(eta)))
        .unwrap_or_default();
    match p.rate_limit_interval_ms {
        Some(ms) if ms > 0 => {
            let per_s = 1000.0 / ms as f64;
            let rate = if per_s >= 2.0 {
                format!("~{per_s:.0}/s")
            } else {
                format!("~1 per {:.1} s", ms as f64 / 1000.0)
            };
            let rate = if (0.9..1.1).contains(&per_s) {
                "~1/s".to_string()
            } else {
                rate
            };
            format!("waiting on the node's ICMP rate limit, {rate}  {eta}")
        }
        _ => eta,
    }
}

pub fn run(a: Args) -> Outcome {
    let inventory = match &a.inventory {
        Some(path) => Some((path.as_path(), args::load_inventory(path)?.nodes)),
        None => None,
    };
    let (targets, policy) = resolve_targets(
        &a.targets,
        inventory.as_ref().map(|(p, n)| (*p, n.as_slice())),
        a.any_target,
    )?;
    let ports: PortList = a.ports.parse()?;
    let kind = a.kind.map_or(ScanKind::Syn, ScanKind::from);
    if let Some(warning) = long_scan_warning(&a, kind, &targets, &ports) {
        eprintln!("{warning}");
    }
    let bar = progress_bar();
    let result = scanner(&a, &policy, bar.clone()).scan(&targets, &ports, kind);
    let report = match result {
        Err(ScanError::RawSocketDenied { .. }) if a.kind.is_none() => {
            eprintln!(
                "notice: raw sockets are not permitted here; using a connect scan instead (run as root or with CAP_NET_RAW for a SYN scan)"
            );
            scanner(&a, &policy, progress_bar()).scan(&targets, &ports, ScanKind::Connect)?
        }
        other => other?,
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if report.hosts.is_empty() {
        bail!("no host was scanned");
    }
    match a.output {
        Output::Table => print!("{}", report::to_table(&report)),
        Output::Json => println!("{}", report::to_json_pretty(&report)),
        Output::Xml => {
            let args: Vec<String> = std::env::args().collect();
            print!("{}", report::to_nmap_xml(&report, &args.join(" ")));
        }
    }
    // A target that could not be scanned (no route to it) is in the report, and fails the
    // command: not everything asked for was scanned.
    let mut unscanned = 0;
    for (address, why) in report.unscanned() {
        eprintln!("error: {address} was not scanned: {why}");
        unscanned += 1;
    }
    Ok(if unscanned > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, addresses: &[&str]) -> Node {
        Node {
            name: name.into(),
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
            labels: Default::default(),
        }
    }

    fn raw(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_scan_waiting_on_a_rate_limit_says_so_with_an_eta() {
        let p = portwarden_scan::Progress {
            done: 10,
            total: 40,
            elapsed: Duration::from_secs(3),
            probes_sent: 60,
            rate_limit_interval_ms: Some(1_030),
            estimated_left: Some(Duration::from_secs(31)),
        };
        assert_eq!(
            progress_message(&p),
            "waiting on the node's ICMP rate limit, ~1/s  ETA 31 s"
        );
        let fast = portwarden_scan::Progress {
            rate_limit_interval_ms: Some(100),
            ..p
        };
        assert!(
            progress_message(&fast).contains("~10/s"),
            "{}",
            progress_message(&fast)
        );
        let plain = portwarden_scan::Progress {
            rate_limit_interval_ms: None,
            estimated_left: None,
            ..p
        };
        assert_eq!(progress_message(&plain), "ETA 9 s");
    }

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(human(Duration::from_secs(45)), "45 s");
        assert_eq!(human(Duration::from_secs(200)), "3 min 20 s");
        assert_eq!(human(Duration::from_secs(19_680)), "5 h 28 min");
    }

    #[test]
    fn without_an_inventory_only_loopback_is_allowed() {
        let (t, p) = resolve_targets(&raw(&["127.0.0.1", "::1"]), None, false).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(p, TargetPolicy::LoopbackOnly);
        let e = resolve_targets(&raw(&["127.0.0.1", "10.213.0.11"]), None, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("refusing to scan 10.213.0.11")
                && e.contains("not in an inventory")
                && e.contains("--inventory FILE")
                && e.contains("--any-target"),
            "{e}"
        );
        let (t, p) = resolve_targets(&raw(&["10.213.0.11"]), None, true).unwrap();
        assert_eq!((t.len(), p), (1, TargetPolicy::Any));
        let e = resolve_targets(&raw(&["web-1"]), None, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--inventory FILE"), "{e}");
    }

    #[test]
    fn with_an_inventory_names_and_node_addresses_are_allowed() {
        let nodes = [
            node("web-1", &["10.213.0.11", "fd00:213::11"]),
            node("db-1", &["10.213.0.13"]),
        ];
        let inv = Some((Path::new("inv.yaml"), &nodes[..]));
        let (t, p) = resolve_targets(&raw(&["web-1", "10.213.0.13", "::1"]), inv, false).unwrap();
        assert_eq!(
            t,
            ["10.213.0.11", "fd00:213::11", "10.213.0.13", "::1"]
                .map(|a| a.parse::<IpAddr>().unwrap())
        );
        assert!(p.allows("10.213.0.13".parse().unwrap()));
        assert!(!p.allows("10.213.0.12".parse().unwrap()));
        let e = resolve_targets(&raw(&["10.213.0.12"]), inv, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("refusing to scan 10.213.0.12")
                && e.contains("inv.yaml")
                && e.contains("--any-target"),
            "{e}"
        );
        let e = resolve_targets(&raw(&["web-9"]), inv, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("neither a node of inv.yaml"), "{e}");
    }
}
