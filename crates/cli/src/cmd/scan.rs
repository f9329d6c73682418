//! `portwarden scan TARGET... -p PORTS`: an nmap-identical port scan, printed as a table, JSON
//! or nmap XML. A thin wrapper over the `portwarden-scan` crate; a progress bar on a terminal.

use std::io::IsTerminal;
use std::net::IpAddr;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use portwarden_scan::{PortList, ScanConfig, ScanError, ScanKind, Scanner, report};

use crate::Outcome;

/// Arguments of `scan`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  portwarden scan 10.213.0.11 -p-\n  portwarden scan 10.213.0.11 10.213.0.12 -p 22,80,8000-8100 --scan connect -o json\n  portwarden scan 10.213.0.11 -p 53,161 --scan udp -o xml > scan.xml   # ndiff-compatible"
)]
pub struct Args {
    /// Target IP addresses (IPv4 or IPv6).
    #[arg(value_name = "TARGET", required = true)]
    targets: Vec<String>,
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
    /// Upper bound on probes per second.
    #[arg(long, value_name = "PPS")]
    rate: Option<u32>,
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

fn parse_targets(raw: &[String]) -> anyhow::Result<Vec<IpAddr>> {
    raw.iter()
        .map(|t| {
            t.parse::<IpAddr>().with_context(|| {
                format!("target \"{t}\" is not an IP address (portwarden does not resolve names)")
            })
        })
        .collect()
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

fn scanner(a: &Args, bar: Option<ProgressBar>) -> Scanner {
    let mut config = ScanConfig::default();
    if let Some(rate) = a.rate {
        config.timing.max_rate = Some(rate);
    }
    let scanner = Scanner::new(config);
    match bar {
        Some(bar) => scanner.on_progress(move |p| {
            bar.set_length(p.total);
            bar.set_position(p.done);
            if let Some(eta) = p.eta() {
                bar.set_message(format!("ETA {:.1}s", eta.as_secs_f64()));
            }
            if p.done >= p.total {
                bar.finish_and_clear();
            }
        }),
        None => scanner,
    }
}

pub fn run(a: Args) -> Outcome {
    let targets = parse_targets(&a.targets)?;
    let ports: PortList = a.ports.parse()?;
    let kind = a.kind.map_or(ScanKind::Syn, ScanKind::from);
    let bar = progress_bar();
    let result = scanner(&a, bar.clone()).scan(&targets, &ports, kind);
    let report = match result {
        Err(ScanError::RawSocketDenied { .. }) if a.kind.is_none() => {
            eprintln!(
                "notice: raw sockets are not permitted here; using a connect scan instead (run as root or with CAP_NET_RAW for a SYN scan)"
            );
            scanner(&a, progress_bar()).scan(&targets, &ports, ScanKind::Connect)?
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
    Ok(ExitCode::SUCCESS)
}
