//! `portwarden agent`: keep this node's rules equal to its intent, repair rule drift, scan
//! peers, and serve metrics, health and the inside view over HTTP.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::ValueEnum;
use portwarden_agent::{AgentConfig, Files, Source};
use portwarden_netfilter::{BackendChoice, DEFAULT_FAILSAFE, Failsafe, Options};
use portwarden_reconcile::DEFAULT_AGENT_PORT;

use crate::Outcome;
use crate::args::host_name;
use crate::caps::{self, Cap};

/// The agent's default `--refresh` interval, in seconds; also the window `plan` and `apply`
/// list expiries in ("before the next refresh").
pub const DEFAULT_REFRESH_SECS: u64 = 10;

/// Arguments of `agent`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example (standalone, one agent per host; as root or with CAP_NET_ADMIN and CAP_NET_RAW):\n  portwarden agent --policy-dir /etc/portwarden/policies --inventory /etc/portwarden/inventory.yaml \\\n      --refresh 10 --scan-interval 60\n\nExample (Kubernetes, from the chart's DaemonSet; NODE_NAME from the downward API):\n  portwarden agent --kube --scan-interval 60 --peers 2\n\nEndpoints on --metrics-addr: /metrics /healthz /readyz /v1/inside /v1/report"
)]
pub struct Args {
    /// Directory of policy documents, e.g. a git checkout (read recursively).
    #[arg(long, value_name = "DIR", required_unless_present = "kube")]
    policy_dir: Option<PathBuf>,
    /// The inventory file.
    #[arg(long, value_name = "FILE", required_unless_present = "kube")]
    inventory: Option<PathBuf>,
    /// Take a policy directory without any PortPolicy document as the intent: remove every
    /// rule. Without this flag that is invalid input (a render or checkout that failed): the
    /// last good state stays applied, the error is served and counted, and at the first start
    /// nothing is applied. A policy that selects no node says "nothing here" without the flag.
    #[arg(long, conflicts_with = "kube")]
    allow_empty_policy: bool,
    /// Kubernetes mode: policies are PortPolicy custom resources, the node's labels and
    /// addresses come from its Node, and results go to its PortReport.
    #[arg(long, conflicts_with_all = ["policy_dir", "inventory"])]
    kube: bool,
    /// Kubernetes mode: how many peers each node scans (each ready node is scanned by this many).
    #[arg(long, value_name = "N", default_value_t = 2, requires = "kube")]
    peers: usize,
    /// This node's name in the inventory (default: the host name).
    #[arg(long, value_name = "NAME")]
    node: Option<String>,
    /// Seconds between re-reading netfilter and repairing rule drift.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_REFRESH_SECS)]
    refresh: u64,
    /// Seconds between scans of the inventory's other nodes; 0 disables peer scans.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    scan_interval: u64,
    /// Upper bound on probes per second of peer scans, all peers together; so also to any one
    /// peer (enforced per peer too). Default: adaptive timing only. Only inventory nodes are
    /// ever scanned.
    #[arg(long, value_name = "PPS", value_parser = crate::args::parse_rate)]
    scan_rate: Option<u32>,
    /// Seconds each peer scan may spend confirming silent ports of peers that rate-limit
    /// their ICMP errors (unconfirmed ones are indeterminate, never drift); it also bounds
    /// how many UDP ports of such a peer each scan re-checks (the rest are reported from
    /// their last confirmation). Default: half of --scan-interval, at most 30.
    #[arg(long, value_name = "SECS")]
    confirm_budget: Option<u64>,
    /// Milliseconds between checks of the policy directory for changes.
    #[arg(long, value_name = "MS", default_value_t = 200)]
    poll_ms: u64,
    /// Address of the HTTP endpoint (metrics, health, inside view, report).
    #[arg(long, value_name = "ADDR", default_value_t = SocketAddr::from(([0, 0, 0, 0], DEFAULT_AGENT_PORT)))]
    metrics_addr: SocketAddr,
    /// Failsafe ports, accepted before any policy rule (the agent's own port is added).
    #[arg(long, value_name = "LIST", default_value = DEFAULT_FAILSAFE)]
    failsafe: String,
    /// iptables backend: auto, nft or legacy.
    #[arg(long, value_name = "BACKEND", default_value = "auto")]
    backend: String,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

pub(crate) fn init_logging(format: LogFormat) {
    init_logging_default(format, "info");
}

/// Whether output to a stream may carry ANSI colour: only on a terminal, and only while
/// `NO_COLOR` (<https://no-color.org>) is unset or empty. Logs to a file, a pipe, journald or a
/// container runtime stay plain text.
pub(crate) fn colour(terminal: bool) -> bool {
    terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Logs to stderr at `RUST_LOG`'s level, or `default` when it is unset; coloured only when
/// stderr is a terminal and `NO_COLOR` is unset (see [`colour`]).
pub(crate) fn init_logging_default(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour(std::io::stderr().is_terminal()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

pub fn run(a: Args) -> Outcome {
    let source = match (a.kube, a.policy_dir, a.inventory) {
        (true, _, _) => Source::Kube {
            peers_per_node: a.peers,
        },
        (false, Some(policy_dir), Some(inventory)) => Source::Files(Files {
            policy_dir,
            inventory,
            poll: Duration::from_millis(a.poll_ms.max(10)),
            allow_empty_policy: a.allow_empty_policy,
        }),
        (false, _, _) => bail!("pass --policy-dir DIR and --inventory FILE, or --kube"),
    };
    if a.refresh == 0 {
        bail!("--refresh must be at least 1 second");
    }
    let failsafe: Failsafe = a
        .failsafe
        .parse()
        .with_context(|| format!("invalid --failsafe \"{}\"", a.failsafe))?;
    let backend: BackendChoice = a
        .backend
        .parse()
        .with_context(|| format!("invalid --backend \"{}\"", a.backend))?;
    // In a DaemonSet, NODE_NAME comes from the downward API (spec.nodeName).
    let node = match a
        .node
        .or_else(|| a.kube.then(|| std::env::var("NODE_NAME").ok()).flatten())
    {
        Some(n) => n,
        None => host_name()?,
    };
    caps::require(Cap::NetAdmin, "read and write this node's netfilter rules")?;
    init_logging(a.log_format);
    if a.scan_interval > 0 && caps::has(Cap::NetRaw) == Some(false) {
        tracing::warn!(
            "missing capability CAP_NET_RAW: peer scans fall back to TCP connect scans and UDP \
             entries stay unverified; grant CAP_NET_RAW for SYN and UDP probes"
        );
    }
    let config = AgentConfig {
        source,
        node,
        refresh: Duration::from_secs(a.refresh),
        scan_interval: (a.scan_interval > 0).then(|| Duration::from_secs(a.scan_interval)),
        scan_rate: a.scan_rate,
        confirm_budget: a.confirm_budget.map(Duration::from_secs),
        listen: a.metrics_addr,
        failsafe,
        netfilter: Options {
            backend,
            ..Options::default()
        },
    };
    match config.source {
        Source::Kube { .. } => portwarden_kube::agent::run(config)?,
        Source::Files(_) => portwarden_agent::standalone::run(config)?,
    }
    Ok(ExitCode::SUCCESS)
}
