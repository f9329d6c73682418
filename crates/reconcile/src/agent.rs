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
//!   inode) is loaded, planned and applied once it has held still for one poll interval, or at
//!   the latest `debounce_max` after it was first seen even while edits keep coming (see
//!   [`Debounce`]): within `debounce_max` plus one poll plus the apply itself, whatever the
//!   rate of changes. The last state written is always loaded.
//! * Invalid documents never change a rule: the error is logged, counted and served, and the
//!   last good intent stays applied (and keeps being repaired).
//! * Every `refresh` the rules are re-read and repaired when they drifted (a deleted rule, a
//!   deleted or displaced jump); foreign rules are never touched.
//! * One agent per network namespace: a second one refuses to start, naming the first
//!   ([`take_agent_lock`]); every reconcile reads, plans and writes under the namespace's
//!   writer lock, so a hand-run `apply` and a reconcile never mix their rulesets.
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
use crate::metrics::{DriftLabels, Metrics, PortLabels, VerdictLabels};
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

/// A cheap fingerprint of what [`load_paths`] would read: path, size, modification time,
/// inode, and mode and owner of the given roots and of every policy file under them. A git
/// checkout that swaps the directory or replaces files by rename changes inodes, so it is seen
/// too; mode and owner cover a `chmod`/`chown` that makes an unreadable file readable again.
type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>, u64, (u32, u32, u32))>;

fn fingerprint(roots: &[&Path]) -> Fingerprint {
    use std::os::unix::fs::MetadataExt;
    // The walk already stat'ed every file; only the roots are stat'ed here.
    let (files, _) = portwarden_policy::load::policy_files_with_metadata(roots);
    let roots = roots
        .iter()
        .map(|p| (p.to_path_buf(), std::fs::metadata(p).ok()));
    roots
        .chain(files.into_iter().map(|(p, m)| (p, Some(m))))
        .map(|(p, m)| match m {
            Some(m) => (
                p,
                m.len(),
                m.modified().ok(),
                m.ino(),
                (m.mode(), m.uid(), m.gid()),
            ),
            None => (p, u64::MAX, None, 0, (0, 0, 0)),
        })
        .collect()
}

/// A pending change is loaded at the latest this many poll intervals after it was first seen,
/// even while edits keep coming (a CI job rewriting files every few hundred milliseconds, a
/// slow copy): 2 s with the default 200 ms poll.
pub const DEBOUNCE_MAX_POLLS: u32 = 10;

/// What [`Debounce::observe`] decided for one poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing changed since the last load.
    Unchanged,
    /// A change is pending; the files have not held still yet.
    Wait,
    /// Load the documents now.
    Load {
        /// When the oldest change of this load was first seen (`None` for the first load).
        first_seen: Option<Instant>,
        /// The files were still changing: loaded because the change waited `max_wait`.
        forced: bool,
    },
}

/// When to load a changed policy directory: once its fingerprint held still for one poll, so
/// that an editor or a copy that writes a file in several steps is not caught half-way — or,
/// when edits keep coming faster than the poll, once the oldest unloaded change has waited
/// `max_wait`, so that a stream of changes cannot postpone loading forever.
///
/// A forced load can catch a file half-written. That is harmless: a half-written document is
/// invalid (the last good state stays, see [`reload`]) or, if it happens to parse, is
/// replaced by the complete one at the next load — the completed write changes the fingerprint
/// again, so the last state written is always loaded.
///
/// Pure: the caller passes the fingerprint and the time, so tests drive it without sleeping.
#[derive(Debug)]
pub struct Debounce<F> {
    max_wait: Duration,
    loaded: Option<F>,
    /// The fingerprint of the last poll that saw a change, and when the oldest unloaded
    /// change was first seen.
    pending: Option<(F, Instant)>,
}

impl<F: PartialEq> Debounce<F> {
    /// A debounce that has loaded nothing yet: the first observation loads at once.
    pub fn new(max_wait: Duration) -> Debounce<F> {
        Debounce {
            max_wait,
            loaded: None,
            pending: None,
        }
    }

    /// Records the fingerprint seen at `now` and says whether to load. After
    /// [`Step::Load`] the fingerprint counts as loaded.
    pub fn observe(&mut self, fp: F, now: Instant) -> Step {
        let Some(loaded) = &self.loaded else {
            self.loaded = Some(fp);
            return Step::Load {
                first_seen: None,
                forced: false,
            };
        };
        if *loaded == fp {
            // Unchanged, or changed and changed back before it was loaded.
            self.pending = None;
            return Step::Unchanged;
        }
        let (settled, first_seen) = match self.pending.take() {
            Some((pending, first_seen)) => (pending == fp, first_seen),
            None => (false, now),
        };
        let forced = !settled && now.saturating_duration_since(first_seen) >= self.max_wait;
        if settled || forced {
            self.loaded = Some(fp);
            return Step::Load {
                first_seen: Some(first_seen),
                forced,
            };
        }
        self.pending = Some((fp, first_seen));
        Step::Wait
    }

    /// The fingerprint of the last load.
    pub fn loaded(&self) -> Option<&F> {
        self.loaded.as_ref()
    }
}

/// When the oldest change from `old` to `new` was made, for the change-to-applied latency:
/// the oldest modification time among the files that are new or changed, but no later than
/// `first_seen` (a rename or a deletion can be older than its file's time) and no earlier than
/// `floor` (when `old` was read: a file copied with its old time, `rsync -t` say, changed
/// after that).
fn change_time(
    old: &Fingerprint,
    new: &Fingerprint,
    first_seen: SystemTime,
    floor: SystemTime,
) -> SystemTime {
    new.iter()
        .filter(|entry| !old.contains(entry))
        .filter_map(|(_, _, mtime, _, _)| *mtime)
        .chain([first_seen])
        .min()
        .unwrap_or(first_seen)
        .max(floor)
}

/// The loop. Returns when `shutdown` receives a message or its sender is dropped.
pub fn run_loop(shared: Arc<Shared>, shutdown: Receiver<()>) {
    let cfg = shared.config.clone();
    let mut debounce: Debounce<Fingerprint> = Debounce::new(cfg.poll * DEBOUNCE_MAX_POLLS);
    // When the fingerprint of the last load was taken (wall clock, for the latency metric).
    let mut loaded_at = SystemTime::now();
    let mut peers: Vec<Target> = Vec::new();
    let start = Instant::now();
    let mut next_poll = start;
    let mut next_refresh = start + cfg.refresh;
    let mut next_scan = cfg.scan_interval.map(|i| start + i);
    loop {
        let now = Instant::now();
        if now >= next_poll {
            let fp = fingerprint(&[&cfg.policy_dir, &cfg.inventory]);
            let taken = SystemTime::now();
            // The last load's fingerprint, for the change time: copied only when this poll's
            // differs (a load can follow), not on every quiet poll.
            let old = debounce
                .loaded()
                .filter(|loaded| **loaded != fp)
                .cloned()
                .unwrap_or_default();
            if let Step::Load { first_seen, forced } = debounce.observe(fp, now) {
                let roots = [cfg.policy_dir.as_path(), cfg.inventory.as_path()];
                // A checkout swapped in while the files were being read could mix old and new
                // files; such a read is dropped (unless forced: then the bound wins) and the
                // next poll sees the new fingerprint and loads it once it holds still.
                let unchanged = || forced || debounce.loaded() == Some(&fingerprint(&roots));
                if !load_and_apply(&shared, &mut peers, forced, unchanged) {
                    next_poll = now + cfg.poll;
                    continue;
                }
                let since = first_seen.zip(debounce.loaded()).map(|(seen, new)| {
                    let ago = now.saturating_duration_since(seen);
                    let seen_wall = taken.checked_sub(ago).unwrap_or(taken);
                    change_time(&old, new, seen_wall, loaded_at)
                });
                record_applied(&shared, since);
                loaded_at = taken;
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

/// Loads changed documents and converges to them (or, when they are invalid, keeps converging
/// to the last good intent).
///
/// Returns false, changing nothing, when `unchanged` says the files changed while they were
/// being read.
fn load_and_apply(
    shared: &Shared,
    peers: &mut Vec<Target>,
    forced: bool,
    unchanged: impl Fn() -> bool,
) -> bool {
    shared.metrics.policy_loads.inc();
    if forced {
        shared.metrics.policy_loads_forced.inc();
        info!(
            waited_polls = DEBOUNCE_MAX_POLLS,
            "policy files still changing; loading anyway (the next change is loaded after it)"
        );
    }
    match reload(shared, unchanged) {
        Reload::Loaded(p) => *peers = p,
        Reload::Invalid => {}
        Reload::ChangedWhileRead => {
            info!(
                "policy files changed while they were read; reading them again once they hold still"
            );
            return false;
        }
    }
    converge(shared, "policy change");
    true
}

/// What [`reload`] found.
enum Reload {
    /// Valid documents: the node's intent is stored; these are its peers.
    Loaded(Vec<Target>),
    /// Invalid documents: the last good intent stays, the error is recorded.
    Invalid,
    /// The files changed during the read: nothing was stored.
    ChangedWhileRead,
}

/// After a load: when the documents were valid and their rules are now in the kernel, records
/// when, and the time from the change (`since`; `None` for the first load) to now.
fn record_applied(shared: &Shared, since: Option<SystemTime>) {
    let applied = shared.with_state(|s| s.policy_error.is_none() && s.apply_error.is_none());
    if !applied {
        return;
    }
    let now = SystemTime::now();
    if let Some(since) = since {
        let latency = now.duration_since(since).unwrap_or_default();
        shared
            .metrics
            .policy_apply_latency
            .observe(latency.as_secs_f64());
    }
    if let Ok(t) = now.duration_since(SystemTime::UNIX_EPOCH) {
        shared.metrics.policy_applied_time.set(t.as_secs_f64());
    }
}

/// Loads the documents. On success stores the node's intent and returns its peers; on failure
/// keeps the last good intent and records the error; when `unchanged` says the files changed
/// during the read, stores nothing.
fn reload(shared: &Shared, unchanged: impl Fn() -> bool) -> Reload {
    let cfg = &shared.config;
    let result = load_paths(&[&cfg.policy_dir])
        .and_then(|policies| load_paths(&[&cfg.inventory]).map(|inventory| (policies, inventory)));
    if !unchanged() {
        return Reload::ChangedWhileRead;
    }
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
            return Reload::Invalid;
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
        return Reload::Invalid;
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
    Reload::Loaded(peers)
}

/// Plans against the kernel's rules and applies when anything differs. The outcome is left in
/// the shared state (`ready`, `apply_error`) and the metrics.
pub fn converge(shared: &Shared, reason: &'static str) {
    let Some(intent) = shared.with_state(|s| s.intent.clone()) else {
        return;
    };
    // After a failed apply, what the next refresh finds is our own unfinished change, not
    // someone else's drift.
    let retry = shared.with_state(|s| s.apply_error.is_some());
    let reason = if retry && reason == "refresh" {
        "retry after a failed apply"
    } else {
        reason
    };
    let started = Instant::now();
    let result = shared.netfilter().and_then(|nf| {
        // Read, plan, write and read back under the namespace's writer lock: a hand-run
        // `apply` waits for this reconcile, or this one for it, never a mix of the two.
        let (plan, applied) = nf
            .converge(&intent, &shared.config.effective_failsafe())
            .map_err(|e| e.to_string())?;
        Ok((!plan.is_converged()).then_some((plan, applied)))
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
                // Someone else changed our rules since the last reconcile: say what, not every
                // rule (a table reload brings back thousands).
                let kinds = plan.drift_kinds();
                shared.metrics.drift_repairs.inc();
                for k in &kinds {
                    shared
                        .metrics
                        .drift_by_kind
                        .get_or_create(&DriftLabels {
                            kind: k.as_str().into(),
                        })
                        .inc();
                }
                let kinds: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
                warn!(
                    kinds = %kinds.join(","),
                    changes = applied.changes,
                    added = plan.add.len(),
                    deleted = plan.delete.len(),
                    first_added = plan.add.first().map_or("", String::as_str),
                    first_deleted = plan.delete.first().map_or("", String::as_str),
                    "repaired rule drift: portwarden's rules were changed by someone else"
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

/// Runs the agent until SIGTERM or SIGINT: takes the network namespace's agent lock, binds
/// the HTTP endpoint, starts the loop, and on a signal stops both. Rules stay in place.
///
/// # Errors
///
/// When another agent manages this network namespace (its pid and command are named), the
/// lock directory cannot be used, the HTTP address cannot be bound or the runtime cannot start.
pub fn run(config: AgentConfig) -> std::io::Result<()> {
    let _only_agent = take_agent_lock()?;
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

/// The agent lock of this network namespace, held for the agent's life: a second agent here
/// would undo this one's rules at every refresh, so it refuses to start
/// ([`portwarden_netfilter::writer::Lock::agent`]). Also the Kubernetes agent's.
///
/// # Errors
/// The lock's error (naming the running agent), as an I/O error.
pub fn take_agent_lock() -> std::io::Result<portwarden_netfilter::writer::Lock> {
    let lock = portwarden_netfilter::writer::Lock::agent(&portwarden_netfilter::writer::lock_dir())
        .map_err(std::io::Error::other)?;
    info!(lock = %lock.path().display(), "agent lock held: the only agent of this network namespace");
    Ok(lock)
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
        let f4 = fingerprint(&[&dir]);
        assert_ne!(f3, f4);
        // A chmod alone (an unreadable file made readable) changes no size, time or inode.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_ne!(f4, fingerprint(&[&dir]));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    const POLL: Duration = Duration::from_millis(200);

    fn load(forced: bool) -> impl Fn(&Step) -> bool {
        move |s| matches!(s, Step::Load { forced: f, .. } if *f == forced)
    }

    #[test]
    fn debounce_loads_the_first_state_at_once_then_waits_for_one_quiet_poll() {
        let t0 = Instant::now();
        let mut d = Debounce::new(POLL * DEBOUNCE_MAX_POLLS);
        assert_eq!(
            d.observe(1, t0),
            Step::Load {
                first_seen: None,
                forced: false
            }
        );
        assert_eq!(d.observe(1, t0 + POLL), Step::Unchanged);
        // A change is seen, then holds still for one poll: loaded, timed from the first sight.
        assert_eq!(d.observe(2, t0 + POLL * 2), Step::Wait);
        assert_eq!(
            d.observe(2, t0 + POLL * 3),
            Step::Load {
                first_seen: Some(t0 + POLL * 2),
                forced: false
            }
        );
        assert_eq!(d.loaded(), Some(&2));
        assert_eq!(d.observe(2, t0 + POLL * 4), Step::Unchanged);
    }

    #[test]
    fn debounce_ignores_a_change_reverted_before_it_settled() {
        let t0 = Instant::now();
        let mut d = Debounce::new(POLL * DEBOUNCE_MAX_POLLS);
        d.observe(1, t0);
        assert_eq!(d.observe(2, t0 + POLL), Step::Wait);
        assert_eq!(d.observe(1, t0 + POLL * 2), Step::Unchanged);
        // A later change starts a fresh wait: its first sight is its own.
        assert_eq!(d.observe(3, t0 + POLL * 3), Step::Wait);
        assert_eq!(
            d.observe(3, t0 + POLL * 4),
            Step::Load {
                first_seen: Some(t0 + POLL * 3),
                forced: false
            }
        );
    }

    #[test]
    fn debounce_bounds_the_wait_under_a_stream_of_changes() {
        // Every poll sees a new state: with "held still for one poll" alone nothing would
        // ever load. The oldest change waits at most max_wait, then the latest state loads.
        let t0 = Instant::now();
        let max_wait = POLL * DEBOUNCE_MAX_POLLS;
        let mut d = Debounce::new(max_wait);
        d.observe(0u32, t0);
        let mut loads = Vec::new();
        for i in 1..=100u32 {
            let now = t0 + POLL * i;
            let step = d.observe(i, now);
            if let Step::Load { first_seen, forced } = step {
                assert!(forced, "poll {i}: {step:?}");
                let first_seen = first_seen.unwrap();
                assert_eq!(now - first_seen, max_wait, "poll {i}");
                assert_eq!(d.loaded(), Some(&i), "the latest state is the one loaded");
                loads.push(i);
            } else {
                assert_eq!(step, Step::Wait, "poll {i}");
            }
        }
        // One load per max_wait + one poll (the poll after a load starts the next wait).
        let period = DEBOUNCE_MAX_POLLS + 1;
        let expected: Vec<u32> = (1..=100).filter(|i| i % period == 0).collect();
        assert_eq!(loads, expected);
        // When the stream stops, the final state loads one quiet poll later.
        let last = t0 + POLL * 100;
        let settle = d.observe(100, last + POLL);
        assert!(load(false)(&settle), "{settle:?}");
        assert_eq!(d.loaded(), Some(&100));
        assert_eq!(d.observe(100, last + POLL * 2), Step::Unchanged);
    }

    #[test]
    fn debounce_bound_counts_time_not_polls() {
        // Polls are late when an apply takes long: the bound is still the time since the
        // change was first seen.
        let t0 = Instant::now();
        let mut d = Debounce::new(Duration::from_secs(2));
        d.observe(0, t0);
        assert_eq!(d.observe(1, t0 + Duration::from_millis(100)), Step::Wait);
        let step = d.observe(2, t0 + Duration::from_millis(2100));
        assert!(load(true)(&step), "{step:?}");
    }

    #[test]
    fn change_time_is_the_oldest_changed_file_within_bounds() {
        let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let entry = |name: &str, size: u64, t: u64| {
            (PathBuf::from(name), size, Some(at(t)), 1, (0o100644, 0, 0))
        };
        let old = vec![entry("a", 1, 10), entry("b", 1, 10), entry("c", 1, 10)];
        let new = vec![entry("a", 2, 105), entry("b", 1, 10), entry("c", 3, 103)];
        // c changed first (103), a later (105); both after the last load (100).
        assert_eq!(change_time(&old, &new, at(107), at(100)), at(103));
        // A file renamed into place with an old time: no earlier than the last load.
        let copied = vec![entry("a", 2, 50), entry("b", 1, 10), entry("c", 1, 10)];
        assert_eq!(change_time(&old, &copied, at(107), at(100)), at(100));
        // Only a deletion: when it was first seen.
        let deleted = vec![entry("a", 1, 10), entry("b", 1, 10)];
        assert_eq!(change_time(&old, &deleted, at(107), at(100)), at(107));
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("pw-agent-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_read_that_raced_a_change_stores_nothing() {
        let dir = std::env::temp_dir().join(format!("pw-agent-race-{}", std::process::id()));
        let policies = dir.join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        std::fs::write(
            policies.join("web.yaml"),
            "apiVersion: portwarden.io/v1alpha1\nkind: PortPolicy\nmetadata: {name: web}\nspec:\n  ports: [{ports: 80, state: closed}]\n",
        )
        .unwrap();
        let inventory = dir.join("inventory.yaml");
        std::fs::write(
            &inventory,
            "apiVersion: portwarden.io/v1alpha1\nkind: Inventory\nnodes:\n  - {name: n, addresses: [10.213.0.11]}\n  - {name: peer, addresses: [10.213.0.12]}\n",
        )
        .unwrap();
        let shared = Shared::new(AgentConfig {
            policy_dir: policies,
            inventory,
            node: "n".into(),
            refresh: Duration::from_secs(10),
            scan_interval: None,
            scan_rate: None,
            poll: Duration::from_millis(200),
            listen: "127.0.0.1:9750".parse().unwrap(),
            failsafe: Failsafe::none(),
            netfilter: NetfilterOptions::default(),
        });
        // The files changed during the read: nothing is stored, no error either.
        assert!(matches!(
            reload(&shared, || false),
            Reload::ChangedWhileRead
        ));
        shared.with_state(|s| assert!(s.intent.is_none() && s.policy_error.is_none()));
        // The same read, unchanged: the intent and the peer are taken.
        let Reload::Loaded(peers) = reload(&shared, || true) else {
            panic!("valid documents not loaded");
        };
        assert_eq!(peers.len(), 1);
        shared.with_state(|s| assert_eq!(s.intent.as_ref().unwrap().rules.len(), 1));
        std::fs::remove_dir_all(&dir).unwrap();
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
