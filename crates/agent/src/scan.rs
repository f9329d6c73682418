//! The agent's peer scans: the `verify` engine over the node's assigned peers, with the
//! agent's rate, confirmation budget and ledger, and the metrics of what it found.

use std::time::{Duration, Instant};

use portwarden_reconcile::report::Report;
use portwarden_reconcile::{Target, Verdict, Verification, VerifyOptions, verify_incremental};
use portwarden_scan::{PortList, ScanKind};
use tracing::{error, info};

use crate::metrics::{Metrics, PortLabels, VerdictLabels};
use crate::state::{PEER_SCAN, Shared};

/// Scans the peers and stores the report in the shared state; returns it, or `None` when there
/// are no peers (nothing is scanned or stored) or the scan failed (logged).
///
/// TCP is scanned in full; managed UDP ports are re-checked a share at a time and reported
/// from their last confirmation ([`verify_incremental`], [`portwarden_reconcile::ledger`]), so
/// a peer that rate-limits its ICMP errors is asked for no more than it answers within the
/// confirmation budget ([`crate::AgentConfig::confirm_budget`]), and its unconfirmed silence is
/// never drift.
pub fn scan_peers(shared: &Shared, peers: &[Target]) -> Option<Report> {
    if peers.is_empty() {
        return None;
    }
    let _step = shared.step(PEER_SCAN);
    let options = VerifyOptions {
        tcp_kind: ScanKind::Syn,
        rate: shared.config.scan_rate,
        rate_per_target: shared.config.scan_rate,
        failsafe: shared.config.effective_failsafe(),
        agent_port: Some(shared.config.listen.port()),
        agent_timeout: Duration::from_secs(1),
        unlisted_ports: PortList::from_ports((1..=65535).collect()),
        confirm_budget: Some(shared.config.confirm_budget()),
        ..VerifyOptions::new()
    };
    let mut ledger = shared.ledger.lock().unwrap_or_else(|p| p.into_inner());
    let started = Instant::now();
    match verify_incremental(peers, &options, &mut ledger) {
        Ok(v) => {
            record(&shared.metrics, &v, started);
            let s = v.report.summary;
            info!(
                in_sync = s.in_sync,
                drift = s.drift,
                indeterminate = s.indeterminate,
                "peer scan done"
            );
            let mut state = shared.lock();
            state.report = Some(v.report.clone());
            state.scans_completed += 1;
            Some(v.report)
        }
        Err(e) => {
            error!(error = %e, "peer scan failed");
            None
        }
    }
}

/// The metrics of a scan that started at `started`: its time and probes, the drifting ports
/// (replacing the last scan's), and the ports by verdict.
fn record(m: &Metrics, v: &Verification, started: Instant) {
    m.scan_duration.observe(started.elapsed().as_secs_f64());
    m.scan_probes
        .inc_by(v.scans.iter().map(|s| s.stats.probes_sent).sum());
    m.drift_ports.clear();
    for r in v
        .report
        .results
        .iter()
        .filter(|r| r.verdict == Verdict::Drift)
    {
        m.drift_ports
            .get_or_create(&PortLabels {
                node: r.node.clone(),
                port: r.port.to_string(),
                protocol: r.protocol.clone(),
            })
            .set(1);
    }
    let s = v.report.summary;
    for (verdict, n) in [
        ("in_sync", s.in_sync),
        ("drift", s.drift),
        ("indeterminate", s.indeterminate),
    ] {
        m.ports_by_verdict
            .get_or_create(&VerdictLabels {
                verdict: verdict.into(),
            })
            .set(n as i64);
    }
}
