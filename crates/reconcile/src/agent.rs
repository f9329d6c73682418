//! The standalone agent: keeps one node's netfilter equal to its intent, from a policy
//! directory (a git checkout) and an inventory, and serves what it knows over HTTP.
//!
//! A key design decision is that the loop is a plain thread that does one thing at a time —
//! reload, reconcile, scan — because every step shells out to iptables or sends probes and must
//! not interleave with another. Tokio only serves HTTP ([`crate::http`]). The loop waits on a
//! shutdown channel with a timeout, so it reacts to SIGTERM at once and never sleeps blindly.
//!
//! # Guarantees
//!
//! * A policy change (any file under the directory, or the inventory, changes size, time, or
//!   inode) is loaded, planned and applied once it has held still for one poll interval: within
//!   two polls plus the apply itself.
//! * Invalid documents never change a rule: the error is logged, counted and served, and the
//!   last good intent stays applied (and keeps being repaired).
//! * Every `refresh` the rules are re-read and repaired when they drifted (a deleted rule, a
//!   deleted or displaced jump); foreign rules are never touched.
//! * Shutdown leaves the rules in place; `portwarden reset` removes them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use portwarden_netfilter::{Failsafe, FailsafePort, Netfilter, Options as NetfilterOptions};
use portwarden_policy::{NodeIntent, PortRange, Protocol, load_paths};
use portwarden_scan::{PortList, ScanKind};
use tracing::{error, info, warn};

use crate::inside::InsideView;
use crate::listeners::read_listeners;
use crate::metrics::{Metrics, PortLabels, VerdictLabels};
use crate::report::Report;
use crate::verify::{Target, VerifyOptions, verify};

/// How the agent runs.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Directory of policy documents (read recursively).
    pub policy_dir: PathBuf,
    /// Inventory file.
    pub inventory: PathBuf,
    /// This node's name in the inventory.
    pub node: String,
    /// How often netfilter is re-read and repaired.
    pub refresh: Duration,
    /// How often peers are scanned; `None` disables peer scans.
    pub scan_interval: Option<Duration>,
    /// Upper bound on the probes per second of peer scans; `None` leaves the rate to the
    /// scanner's adaptive timing alone.
    pub scan_rate: Option<u32>,
    /// How often the policy directory is checked for changes.
    pub poll: Duration,
    /// Address of the HTTP endpoint (metrics, health, inside view, report).
    pub listen: SocketAddr,
    /// Failsafe ports; the agent adds its own HTTP port so no policy can cut it off.
    pub failsafe: Failsafe,
    /// Netfilter backend and families.
    pub netfilter: NetfilterOptions,
}

impl AgentConfig {
    /// The failsafe list including the agent's own port.
    pub fn effective_failsafe(&self) -> Failsafe {
        let mut ports = self.failsafe.ports().to_vec();
        ports.push(FailsafePort {
            protocol: Protocol::Tcp,
            ports: PortRange::single(self.listen.port()),
        });
        Failsafe::new(ports)
    }
}

/// What the loop knows, shared with the HTTP handlers.
#[derive(Default)]
pub struct State {
    /// The last good intent for this node.
    pub intent: Option<Arc<NodeIntent>>,
    /// The current policy error, if the documents are invalid.
    pub policy_error: Option<String>,
    /// The last apply error.
    pub apply_error: Option<String>,
    /// Whether the intent has been applied at least once.
    pub ready: bool,
    /// When the loop last completed an iteration.
    pub heartbeat: Option<Instant>,
    /// The last peer scan report.
    pub report: Option<Report>,
    /// Peer scans completed (a new `report` each time).
    pub scans_completed: u64,
}

/// Everything the loop and the HTTP handlers share.
pub struct Shared {
    /// The configuration.
    pub config: AgentConfig,
    /// Mutable state.
    pub state: Mutex<State>,
    /// Metrics.
    pub metrics: Metrics,
    /// The netfilter handle, once detected.
    pub netfilter: Mutex<Option<Netfilter>>,
}

impl Shared {
    /// Creates the shared state.
    pub fn new(config: AgentConfig) -> Arc<Shared> {
        Arc::new(Shared {
            config,
            state: Mutex::new(State::default()),
            metrics: Metrics::new(),
            netfilter: Mutex::new(None),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads state under the lock.
    pub fn with_state<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.lock())
    }

    /// Records that the loop is alive (`/healthz`), for loops other than [`run_loop`].
    pub fn heartbeat(&self) {
        self.lock().heartbeat = Some(Instant::now());
    }

    /// Sets the intent and the policy error from another source of policies (the Kubernetes
    /// agent in `portwarden-kube`); [`converge`] then applies it.
    pub fn set_intent(&self, intent: Option<Arc<NodeIntent>>, policy_error: Option<String>) {
        let mut state = self.lock();
        state.intent = intent;
        state.policy_error = policy_error;
    }

    fn netfilter(&self) -> Result<Netfilter, String> {
        let mut slot = self.netfilter.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(nf) = slot.as_ref() {
            return Ok(nf.clone());
        }
        let nf = Netfilter::detect(&self.config.netfilter).map_err(|e| e.to_string())?;
        info!(backend = %nf.backend(), "netfilter backend detected");
        *slot = Some(nf.clone());
        Ok(nf)
    }

    /// The inside view, computed now: a fresh plan against the kernel's rules and the
    /// listening sockets.
    pub fn inside_view(&self) -> InsideView {
        let (intent, policy_error, apply_error) = self.with_state(|s| {
            (
                s.intent.clone(),
                s.policy_error.clone(),
                s.apply_error.clone(),
            )
        });
        let listeners = read_listeners().unwrap_or_default();
        let mut view = match (intent, self.netfilter()) {
            (Some(intent), Ok(nf)) => match nf.plan(&intent, &self.config.effective_failsafe()) {
                Ok(plan) => InsideView::new(&self.config.node, &plan, listeners),
                Err(e) => InsideView {
                    node: self.config.node.clone(),
                    apply_error: Some(e.to_string()),
                    listeners,
                    ..InsideView::default()
                },
            },
            (_, Err(e)) => InsideView {
                node: self.config.node.clone(),
                apply_error: Some(e),
                listeners,
                ..InsideView::default()
            },
            (None, Ok(_)) => InsideView {
                node: self.config.node.clone(),
                listeners,
                ..InsideView::default()
            },
        };
        view.policy_error = policy_error;
        view.apply_error = view.apply_error.or(apply_error);
        view
    }
}

/// A cheap fingerprint of what [`load_paths`] would read: path, size, modification time and
/// inode of the given roots and of every policy file under them. A git checkout that swaps the
/// directory or replaces files by rename changes inodes, so it is seen too.
type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>, u64)>;

fn fingerprint(roots: &[&Path]) -> Fingerprint {
    use std::os::unix::fs::MetadataExt;
    let (files, _) = portwarden_policy::load::policy_files(roots);
    roots
        .iter()
        .map(|p| p.to_path_buf())
        .chain(files)
        .map(|p| match std::fs::metadata(&p) {
            Ok(m) => (p, m.len(), m.modified().ok(), m.ino()),
            Err(_) => (p, u64::MAX, None, 0),
        })
        .collect()
}

/// The loop. Returns when `shutdown` receives a message or its sender is dropped.
pub fn run_loop(shared: Arc<Shared>, shutdown: Receiver<()>) {
    let cfg = shared.config.clone();
    let mut last_fingerprint = None;
    let mut pending_fingerprint = None;
    let mut peers: Vec<Target> = Vec::new();
    let start = Instant::now();
    let mut next_poll = start;
    let mut next_refresh = start + cfg.refresh;
    let mut next_scan = cfg.scan_interval.map(|i| start + i);
    loop {
        let now = Instant::now();
        if now >= next_poll {
            // A change is loaded once the files have held still for one poll: an editor or a
            // copy that writes a file in several steps must not have its half-written state
            // (an empty file, say) taken for the new intent. The first load is immediate.
            let fp = fingerprint(&[&cfg.policy_dir, &cfg.inventory]);
            let settled = pending_fingerprint.as_ref() == Some(&fp) || last_fingerprint.is_none();
            if last_fingerprint.as_ref() != Some(&fp) && settled {
                last_fingerprint = Some(fp);
                pending_fingerprint = None;
                if let Some(p) = reload(&shared) {
                    peers = p;
                }
                converge(&shared, "policy change");
            } else if last_fingerprint.as_ref() != Some(&fp) {
                pending_fingerprint = Some(fp);
            }
            next_poll = now + cfg.poll;
        }
        if now >= next_refresh {
            converge(&shared, "refresh");
            next_refresh = now + cfg.refresh;
        }
        if let (Some(at), Some(interval)) = (next_scan, cfg.scan_interval)
            && now >= at
        {
            scan_peers(&shared, &peers);
            next_scan = Some(Instant::now() + interval);
        }
        shared.lock().heartbeat = Some(Instant::now());
        let next = [Some(next_poll), Some(next_refresh), next_scan]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(next_poll);
        match shutdown.recv_timeout(next.saturating_duration_since(Instant::now())) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                info!("agent loop stopped; rules stay in place (portwarden reset removes them)");
                return;
            }
        }
    }
}

/// Loads the documents. On success stores the node's intent and returns its peers; on failure
/// keeps the last good intent and records the error.
fn reload(shared: &Shared) -> Option<Vec<Target>> {
    let cfg = &shared.config;
    let result = load_paths(&[&cfg.policy_dir])
        .and_then(|policies| load_paths(&[&cfg.inventory]).map(|inventory| (policies, inventory)));
    let (policies, inventory) = match result {
        Ok(ok) => ok,
        Err(diags) => {
            for d in &diags {
                error!(problem = %d.headline(), "invalid policy documents; keeping the last good state");
            }
            let summary: Vec<String> = diags.iter().map(|d| d.headline()).collect();
            shared.metrics.policy_load_errors.inc();
            shared.metrics.policy_valid.set(0);
            shared.lock().policy_error = Some(summary.join("\n"));
            return None;
        }
    };
    if inventory.node(&cfg.node).is_none() {
        let msg = format!(
            "node \"{}\" is not in the inventory {}; keeping the last good state",
            cfg.node,
            cfg.inventory.display()
        );
        error!("{msg}");
        shared.metrics.policy_load_errors.inc();
        shared.metrics.policy_valid.set(0);
        shared.lock().policy_error = Some(msg);
        return None;
    }
    let intents: BTreeMap<String, Arc<NodeIntent>> =
        policies.policies.compile_nodes(&inventory.nodes);
    let mine = intents.get(&cfg.node).cloned();
    let peers = inventory
        .nodes
        .iter()
        .filter(|n| n.name != cfg.node)
        .flat_map(|n| {
            let intent = intents.get(&n.name).cloned().unwrap_or_default();
            n.addresses.iter().map(move |&address| Target {
                node: n.name.clone(),
                address,
                intent: intent.clone(),
            })
        })
        .collect();
    info!(
        policies = policies.policies.policies().len(),
        rules = mine.as_ref().map_or(0, |i| i.rules.len()),
        "policy documents loaded"
    );
    shared.metrics.policy_valid.set(1);
    shared
        .metrics
        .intent_rules
        .set(mine.as_ref().map_or(0, |i| i.rules.len() as i64));
    let mut state = shared.lock();
    state.policy_error = None;
    state.intent = mine;
    Some(peers)
}

/// Plans against the kernel's rules and applies when anything differs. The outcome is left in
/// the shared state (`ready`, `apply_error`) and the metrics.
pub fn converge(shared: &Shared, reason: &'static str) {
    let Some(intent) = shared.with_state(|s| s.intent.clone()) else {
        return;
    };
    let started = Instant::now();
    let result = shared.netfilter().and_then(|nf| {
        let plan = nf
            .plan(&intent, &shared.config.effective_failsafe())
            .map_err(|e| e.to_string())?;
        if plan.is_converged() {
            return Ok(None);
        }
        let applied = nf.apply(&plan).map_err(|e| e.to_string())?;
        Ok(Some((plan, applied)))
    });
    shared
        .metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(None) => {
            let mut s = shared.lock();
            s.ready = true;
            s.apply_error = None;
        }
        Ok(Some((plan, applied))) => {
            shared.metrics.rules_changed.inc_by(applied.changes as u64);
            if reason == "refresh" {
                shared.metrics.drift_repairs.inc();
                warn!(
                    changes = applied.changes,
                    added = ?plan.add,
                    deleted = ?plan.delete,
                    "repaired rule drift"
                );
            } else {
                info!(
                    changes = applied.changes,
                    transactions = applied.transactions,
                    reason,
                    "applied"
                );
            }
            for s in &plan.shadowing {
                warn!(rule = %s, "foreign rule above portwarden's jump");
            }
            let mut s = shared.lock();
            s.ready = true;
            s.apply_error = None;
        }
        Err(e) => {
            shared.metrics.reconcile_errors.inc();
            error!(error = %e, reason, "reconcile failed; will retry at the next refresh");
            shared.lock().apply_error = Some(e);
        }
    }
}

/// Scans the peers and stores the report in the shared state.
pub fn scan_peers(shared: &Shared, peers: &[Target]) {
    if peers.is_empty() {
        return;
    }
    let options = VerifyOptions {
        tcp_kind: ScanKind::Syn,
        rate: shared.config.scan_rate,
        rate_per_target: shared.config.scan_rate,
        failsafe: shared.config.effective_failsafe(),
        agent_port: Some(shared.config.listen.port()),
        agent_timeout: Duration::from_secs(1),
        unlisted_ports: PortList::from_ports((1..=65535).collect()),
    };
    let started = Instant::now();
    match verify(peers, &options) {
        Ok(v) => {
            let m = &shared.metrics;
            m.scan_duration.observe(started.elapsed().as_secs_f64());
            m.scan_probes
                .inc_by(v.scans.iter().map(|s| s.stats.probes_sent).sum());
            m.drift_ports.clear();
            for r in v
                .report
                .results
                .iter()
                .filter(|r| r.verdict == crate::Verdict::Drift)
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
            info!(
                in_sync = s.in_sync,
                drift = s.drift,
                indeterminate = s.indeterminate,
                "peer scan done"
            );
            let mut state = shared.lock();
            state.report = Some(v.report);
            state.scans_completed += 1;
        }
        Err(e) => error!(error = %e, "peer scan failed"),
    }
}

/// Runs the agent until SIGTERM or SIGINT: binds the HTTP endpoint, starts the loop, and on a
/// signal stops both. Rules stay in place.
///
/// # Errors
///
/// When the HTTP address cannot be bound or the runtime cannot start.
pub fn run(config: AgentConfig) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen).await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot listen on {}: {e}", config.listen))
        })?;
        info!(node = %config.node, listen = %config.listen, policy_dir = %config.policy_dir.display(), "agent started");
        let shared = Shared::new(config);
        let (stop_loop, stopped) = std::sync::mpsc::channel();
        let loop_shared = shared.clone();
        let worker = std::thread::Builder::new()
            .name("reconcile".into())
            .spawn(move || run_loop(loop_shared, stopped))?;
        let app = crate::http::router(shared);
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await;
        let _ = stop_loop.send(());
        if worker.join().is_err() {
            error!("reconcile loop panicked");
        }
        served
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => info!("SIGTERM: shutting down"),
                _ = int.recv() => info!("SIGINT: shutting down"),
            }
        }
        _ => {
            error!("cannot install signal handlers; stop the agent with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_sees_edits_new_files_and_swaps() {
        let dir = tempfile_dir();
        let a = dir.join("a.yaml");
        std::fs::write(&a, "x").unwrap();
        let f1 = fingerprint(&[&dir]);
        std::fs::write(&a, "xy").unwrap();
        let f2 = fingerprint(&[&dir]);
        assert_ne!(f1, f2);
        std::fs::write(dir.join("b.yml"), "z").unwrap();
        let f3 = fingerprint(&[&dir]);
        assert_ne!(f2, f3);
        // Replace a file by rename (what git does): the inode changes.
        std::fs::write(dir.join(".tmp"), "xy").unwrap();
        std::fs::rename(dir.join(".tmp"), &a).unwrap();
        assert_ne!(f3, fingerprint(&[&dir]));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("pw-agent-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn failsafe_includes_agent_port() {
        let cfg = AgentConfig {
            policy_dir: "p".into(),
            inventory: "i".into(),
            node: "n".into(),
            refresh: Duration::from_secs(10),
            scan_interval: None,
            scan_rate: None,
            poll: Duration::from_millis(200),
            listen: "0.0.0.0:9750".parse().unwrap(),
            failsafe: Failsafe::none(),
            netfilter: NetfilterOptions::default(),
        };
        let f = cfg.effective_failsafe();
        assert!(f.ranges(Protocol::Tcp).any(|r| r.contains(9750)));
    }
}
