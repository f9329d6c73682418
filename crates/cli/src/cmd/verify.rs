//! `portwarden verify`: scan every inventory node from here and report drift with causes.
//! Exit 0 when everything is in sync, 2 on drift, 1 on error. Only the inventory's node
//! addresses are probed (the scanner refuses any other).

use std::io::IsTerminal;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::ValueEnum;
use portwarden_netfilter::{DEFAULT_FAILSAFE, Failsafe};
use portwarden_policy::{Loaded, PolicySet, Timestamp};
use portwarden_reconcile::{
    DEFAULT_AGENT_PORT, Target, Verification, VerifyOptions, html, report, verify,
};
use portwarden_scan::{PortList, ScanKind};

use crate::Outcome;
use crate::args;
use crate::report_file::ReportFile;

/// Arguments of `verify`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  portwarden verify -f examples --inventory examples/inventory.yaml\n  portwarden verify -f policies/ --inventory inventory.yaml -o junit --html exposure.html > portwarden.xml\n  portwarden verify -f policies/ --inventory inventory.yaml -S 10.0.0.5 -S 10.0.0.6 --confirm-budget 120\n\nExit codes: 0 in sync, 2 drift, 1 error."
)]
pub struct Args {
    /// Policy files or directories.
    #[arg(short = 'f', long = "file", value_name = "PATH", required = true, num_args = 1..)]
    files: Vec<PathBuf>,
    /// The inventory (nodes, addresses, labels); an Inventory among the -f files also works.
    #[arg(long, value_name = "FILE")]
    inventory: Option<PathBuf>,
    /// TCP probe type: syn (raw; falls back to connect when not permitted) or connect.
    #[arg(long = "scan", value_enum, default_value_t = TcpScan::Syn)]
    scan: TcpScan,
    /// Upper bound on probes per second, all targets together.
    #[arg(long, value_name = "PPS", value_parser = args::parse_rate)]
    rate: Option<u32>,
    /// Upper bound on probes per second to each node address separately.
    #[arg(long, value_name = "PPS", value_parser = args::parse_rate)]
    max_rate_per_target: Option<u32>,
    /// Failsafe ports (never enforced, so not verified), as the agents use them.
    #[arg(long, value_name = "LIST", default_value = DEFAULT_FAILSAFE)]
    failsafe: String,
    /// Port of the agents' HTTP endpoint for the inside view; 0 to not ask agents.
    #[arg(long, value_name = "PORT", default_value_t = DEFAULT_AGENT_PORT)]
    agent_port: u16,
    /// Deadline of each agent's inside view, in milliseconds: connect, request and the whole
    /// answer (at most 4 MiB); a slower or larger answer is dropped and the outside view
    /// reported.
    #[arg(long, value_name = "MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..))]
    agent_timeout_ms: u64,
    /// Source address to send from (repeat it to give several, as nmap's -S). The first of
    /// each family is the vantage: the intent is evaluated for it. The others are used to
    /// confirm silent ports of nodes that rate-limit their ICMP errors (each address has its
    /// own budget there), unless a `from:` entry expects other states from them. Each must be
    /// an address of this host.
    #[arg(short = 'S', long = "source", value_name = "ADDR")]
    sources: Vec<IpAddr>,
    /// Seconds each scan may spend confirming silent ports of nodes that rate-limit their
    /// ICMP errors (Linux answers about one closed port per second after a burst of six);
    /// ports still unconfirmed then are indeterminate, never drift.
    #[arg(long, value_name = "SECS",
          default_value_t = portwarden_reconcile::verify::DEFAULT_CONFIRM_BUDGET.as_secs())]
    confirm_budget: u64,
    /// TCP ports searched for undeclared open ports when a policy says `unlisted: report`.
    #[arg(
        long,
        value_name = "PORTS",
        default_value = "-",
        allow_hyphen_values = true
    )]
    unlisted_ports: String,
    /// Output format on standard output. `html` is one self-contained page (no script, nothing
    /// fetched): the summary, a matrix per node of its ports by vantage, drift first, each
    /// drift with its cause and the policy entry that expected otherwise.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Also write the HTML page to FILE, beside the -o output (keep JUnit for CI and publish
    /// the page). Checked before the scan; written whole after it.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum TcpScan {
    Syn,
    Connect,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    Table,
    Json,
    Junit,
    Xml,
    Html,
}

pub fn run(a: Args) -> Outcome {
    let loaded = args::load(&a.files)?;
    // Before the scan: a path that cannot be written fails now, not minutes later.
    let html_file = a
        .html
        .as_deref()
        .map(|path| ReportFile::create("--html", path))
        .transpose()?;
    let targets = targets(&a, &loaded)?;
    let options = options(&a)?;
    let started = Timestamp::now();
    let v = verify(&targets, &options)?;
    let page = || page(&v, &loaded.policies, started);
    match a.output {
        Output::Table => print!(
            "{}",
            report::to_table(
                &v.report,
                crate::cmd::agent::colour(std::io::stdout().is_terminal())
            )
        ),
        Output::Json => println!("{}", report::to_json(&v.report)),
        Output::Junit => print!("{}", report::to_junit(&v.report)),
        Output::Xml => {
            let args: Vec<String> = std::env::args().collect();
            print!("{}", report::to_nmap_xml(&v.scans, &args.join(" ")));
        }
        Output::Html => print!("{}", page()),
    }
    if let Some(file) = html_file {
        file.commit(&page())
            .context("the report above was printed; the HTML page was not written")?;
    }
    Ok(if v.report.has_drift() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// Every address of every inventory node, with the node's compiled intent.
fn targets(a: &Args, loaded: &Loaded) -> anyhow::Result<Vec<Target>> {
    let inventory = match &a.inventory {
        Some(path) => args::load_inventory(path)?.nodes,
        None if loaded.inventories > 0 => loaded.nodes.clone(),
        None => bail!("verify needs an inventory: pass --inventory FILE"),
    };
    let intents = loaded.policies.compile_nodes(&inventory);
    let targets: Vec<Target> = inventory
        .iter()
        .flat_map(|n| {
            let intent = Arc::clone(&intents[&n.name]);
            n.addresses.iter().map(move |&address| Target {
                node: n.name.clone(),
                address,
                intent: Arc::clone(&intent),
            })
        })
        .collect();
    if targets.is_empty() {
        bail!("the inventory has no node addresses to scan");
    }
    Ok(targets)
}

fn options(a: &Args) -> anyhow::Result<VerifyOptions> {
    let failsafe: Failsafe = a
        .failsafe
        .parse()
        .with_context(|| format!("invalid --failsafe \"{}\"", a.failsafe))?;
    let sources = args::scan_sources(&a.sources);
    Ok(VerifyOptions {
        tcp_kind: match a.scan {
            TcpScan::Syn => ScanKind::Syn,
            TcpScan::Connect => ScanKind::Connect,
        },
        rate: a.rate,
        rate_per_target: a.max_rate_per_target,
        failsafe,
        agent_port: (a.agent_port != 0).then_some(a.agent_port),
        agent_timeout: Duration::from_millis(a.agent_timeout_ms),
        unlisted_ports: a.unlisted_ports.parse::<PortList>()?,
        source_v4: sources.source_v4,
        source_v6: sources.source_v6,
        extra_sources: sources.extra_sources,
        confirm_budget: Some(Duration::from_secs(a.confirm_budget)),
    })
}

/// The HTML page of a verification: dated when its first scan started (`started`, the clock
/// before the scans, when there was none), each drift with its entry's reason.
fn page(v: &Verification, policies: &PolicySet, started: Timestamp) -> String {
    let at = v
        .scans
        .iter()
        .map(|s| s.started_unix)
        .min()
        .and_then(|t| i64::try_from(t).ok())
        .map_or(started, Timestamp::from_unix);
    let entries = html::entry_notes(policies);
    html::render(&html::Page {
        report: &v.report,
        generated_at: &at.to_string(),
        version: html::VERSION,
        title: "portwarden verify",
        entries: &entries,
        refresh_secs: None,
        inside: None,
    })
}
