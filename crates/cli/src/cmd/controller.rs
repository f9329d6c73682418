//! `portwarden controller`: in a cluster, aggregate the nodes' PortReports into each
//! PortPolicy's status, publish Events on drift and repair, export metrics. Several replicas may
//! run; the one holding the Lease works.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use portwarden_kube::controller::{self, ControllerConfig};

use crate::Outcome;
use crate::args::host_name;
use crate::cmd::agent::{LogFormat, init_logging};

/// Arguments of `controller`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example (in the cluster, from the Helm chart's Deployment; POD_NAME and POD_NAMESPACE from the downward API):\n  portwarden controller --metrics-addr 0.0.0.0:9751 --log-format json\n\nEndpoints on --metrics-addr: /metrics /healthz /readyz"
)]
pub struct Args {
    /// Address of the HTTP endpoint (metrics, health).
    #[arg(long, value_name = "ADDR", default_value_t = SocketAddr::from(([0, 0, 0, 0], 9751)))]
    metrics_addr: SocketAddr,
    /// Namespace of the leader Lease (default: $POD_NAMESPACE, else "portwarden").
    #[arg(long, value_name = "NS")]
    lease_namespace: Option<String>,
    /// Name of the leader Lease.
    #[arg(long, value_name = "NAME", default_value = "portwarden-controller")]
    lease_name: String,
    /// This replica's identity in the Lease (default: $POD_NAME, else the host name).
    #[arg(long, value_name = "ID")]
    identity: Option<String>,
    /// Seconds between full resyncs of every policy.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    resync: u64,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

pub fn run(a: Args) -> Outcome {
    if a.resync == 0 {
        bail!("--resync must be at least 1 second");
    }
    let identity = match a.identity.or_else(|| std::env::var("POD_NAME").ok()) {
        Some(i) => i,
        None => host_name()?,
    };
    let lease_namespace = a
        .lease_namespace
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| "portwarden".into());
    init_logging(a.log_format);
    let config = ControllerConfig {
        listen: a.metrics_addr,
        lease_namespace,
        lease_name: a.lease_name,
        identity,
        resync: Duration::from_secs(a.resync),
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(controller::run(config))?;
    Ok(ExitCode::SUCCESS)
}
