//! The standalone agent: keeps one node's netfilter equal to its intent, from a policy
//! directory (a git checkout) and an inventory, and serves what it knows over HTTP.
//!
//! A key design decision is that the loop is a plain thread that does one thing at a time —
//! reload, reconcile, scan — because every step shells out to iptables or sends probes and must
//! not interleave with another. Tokio only serves HTTP ([`crate::http`]). The loop waits on a
//! control channel with a timeout, so it reacts to SIGTERM (stop) and SIGHUP (reload) after
//! the current step — at once while it waits, but a step (a peer scan can take minutes) is not
//! interrupted — and never sleeps blindly. Signals that queued up behind a step are taken
//! together: a stop wins, any number of reloads are one.
//!
//! # Guarantees
//!
//! * A policy change (any file under the directory, or the inventory, changes size, time, or
//!   inode) is loaded, planned and applied once it has held still for one poll interval, or at
//!   the latest `debounce_max` after it was first seen even while edits keep coming (see
//!   [`Debounce`]): within `debounce_max` plus one poll plus the apply itself, whatever the
//!   rate of changes. The last state written is always loaded.
//! * Invalid documents never change a rule: the error is logged, counted and served, and the
//!   last good intent stays applied (and keeps being repaired). No PortPolicy document at all
//!   (an emptied directory, every file truncated) counts as invalid, unless
//!   [`AgentConfig::allow_empty_policy`] says an empty set is meant: otherwise a failed render
//!   would remove every rule. At the first load, too: the agent then applies nothing, and the
//!   rules a previous run left stay as they are.
//! * Warnings about the documents (a node without addresses) are logged at each load.
//! * `/healthz` fails when the loop has not completed a round for [`HEARTBEAT_LIMIT`], naming
//!   the step it is in (a load on a hung file system, a reconcile waiting for iptables):
//!   [`State::health`]. A peer scan is exempt: a long scan is not a stuck loop.
//! * The documents' and iptables' error texts (paths, quoted values, rules) go to the log and
//!   to in-process callers only; what is served to any host says what failed, not the text
//!   ([`crate::http`], [`InsideView`]).
//! * Every `refresh` the rules are re-read and repaired when they drifted (a deleted rule, a
//!   deleted or displaced jump); foreign rules are never touched.
//! * One agent per network namespace: a second one refuses to start, naming the first
//!   ([`take_agent_lock`]); every reconcile reads, plans and writes under the namespace's
//!   writer lock, so a hand-run `apply` and a reconcile never mix their rulesets.
//! * Shutdown leaves the rules in place; `portwarden reset` removes them.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use portwarden_netfilter::{Failsafe, FailsafePort, Netfilter, Options as NetfilterOptions};
use portwarden_policy::{NodeIntent, PortRange, Protocol, load_paths};
use portwarden_scan::{PortList, ScanKind};
use tracing::{error, info, warn};

use crate::inside::{InsideView, exposed_listeners};
use crate::ledger::Ledger;
use crate::listeners::read_listeners;
use crate::metrics::{DriftLabels, Metrics, PortLabels, VerdictLabels};
use crate::report::Report;
use crate::server::{Limits, Shutdown, fit_descriptors, serve, shutdown_signal};
use crate::verify::{Target, VerifyOptions, verify_incremental};

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
    /// How long each peer scan may spend confirming silent ports of peers that rate-limit
    /// their ICMP errors; `None` = [`AgentConfig::confirm_budget`]'s default. It also sizes the
    /// share of UDP ports each scan re-checks ([`crate::ledger`]).
    pub confirm_budget: Option<Duration>,
    /// How often the policy directory is checked for changes.
    pub poll: Duration,
    /// Address of the HTTP endpoint (metrics, health, inside view, report).
    pub listen: SocketAddr,
    /// Failsafe ports; the agent adds its own HTTP port so no policy can cut it off.
    pub failsafe: Failsafe,
    /// Netfilter backend and families.
    pub netfilter: NetfilterOptions,
    /// Whether a policy directory without any PortPolicy document is an intent (remove every
    /// rule) rather than invalid input (keep the last good state).
    pub allow_empty_policy: bool,
}

/// The longest default confirmation budget of a peer scan ([`AgentConfig::confirm_budget`]).
pub const MAX_DEFAULT_CONFIRM_BUDGET: Duration = Duration::from_secs(30);

impl AgentConfig {
    /// The confirmation budget of each peer scan: the configured one, else half the scan
    /// interval and at most [`MAX_DEFAULT_CONFIRM_BUDGET`] (16 UDP ports of an IPv4 peer at
    /// Linux's default limit per 10 s of it; 36 in 30 s), so a scan leaves most of its interval
    /// free and a peer that rate-limits is never asked for more than it answers in that time.
    pub fn confirm_budget(&self) -> Duration {
        self.confirm_budget.unwrap_or_else(|| {
            self.scan_interval
                .map_or(MAX_DEFAULT_CONFIRM_BUDGET, |i| i / 2)
                .min(MAX_DEFAULT_CONFIRM_BUDGET)
        })
    }

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
    /// The current policy error, if the documents are invalid (logged; never served).
    pub policy_error: Option<String>,
    /// The last apply error (logged; never served).
    pub apply_error: Option<String>,
    /// Whether the intent has been applied at least once.
    pub ready: bool,
    /// When the loop last completed an iteration.
    pub heartbeat: Option<Instant>,
    /// The last peer scan report.
    pub report: Option<Report>,
    /// Peer scans completed (a new `report` each time).
    pub scans_completed: u64,
    /// The step the loop is in (`policy load`, `reconcile`, [`PEER_SCAN`], ...) and since
    /// when; `None` between steps.
    pub step: Option<(&'static str, Instant)>,
    /// The look-alikes and kept chains last logged, so each is logged when it appears, not at
    /// every refresh.
    pub reported_lookalikes: Vec<String>,
}

/// The loop counts as alive while it has completed a round this recently (`/healthz`).
/// Far above what a round takes (milliseconds; a reconcile waiting for the xtables lock, 10 s
/// per family).
pub const HEARTBEAT_LIMIT: Duration = Duration::from_secs(60);

/// The step a peer scan is recorded as ([`State::step`]): exempt from [`HEARTBEAT_LIMIT`],
/// since scanning every port of many peers can take minutes.
pub const PEER_SCAN: &str = "peer scan";

impl State {
    /// Whether the loop is healthy at `now`: it completed a round within [`HEARTBEAT_LIMIT`],
    /// or it is in a [`PEER_SCAN`]. Otherwise why not: the step it has been in for so long,
    /// or that it is not running.
    ///
    /// # Errors
    ///
    /// The message `/healthz` answers 503 with.
    ///
    /// # Caveats
    ///
    /// What still can make a step never end is the kernel, not portwarden: a `stat` or `read`
    /// on a hung network or FUSE file system waits uninterruptibly. Loops, links and FIFOs in
    /// the policy directory no longer can (the walk visits each directory once and opens only
    /// regular files). A peer scan ends by the scanner's own timeouts and the inside views'
    /// deadlines.
    pub fn health(&self, now: Instant) -> Result<(), String> {
        let fresh = self
            .heartbeat
            .is_some_and(|h| now.saturating_duration_since(h) < HEARTBEAT_LIMIT);
        match (self.step, self.heartbeat) {
            _ if fresh => Ok(()),
            (Some((PEER_SCAN, _)), _) => Ok(()),
            (Some((what, since)), Some(_)) => Err(format!(
                "the reconcile loop is stuck: its {what} has been running for {} s (a round must complete every {} s); a hung file system, or iptables hanging?",
                now.saturating_duration_since(since).as_secs(),
                HEARTBEAT_LIMIT.as_secs()
            )),
            _ => Err("reconcile loop is not running".into()),
        }
    }
}

/// Marks a step of the loop in [`State::step`] while it lives.
struct StepGuard<'a>(&'a Shared);

impl Drop for StepGuard<'_> {
    fn drop(&mut self) {
        self.0.lock().step = None;
    }
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
    /// What the peer scans remember of the peers' UDP ports ([`crate::ledger`]); only the
    /// loop's peer scan uses it.
    pub ledger: Mutex<Ledger>,
}

impl Shared {
    /// Creates the shared state.
    pub fn new(config: AgentConfig) -> Arc<Shared> {
        Arc::new(Shared {
            config,
            state: Mutex::new(State::default()),
            metrics: Metrics::new(),
            netfilter: Mutex::new(None),
            ledger: Mutex::new(Ledger::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads state under the lock.
    pub fn with_state<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.lock())
    }

    /// Records in [`State::step`] that the loop is in step `what` until the guard is dropped.
    fn step(&self, what: &'static str) -> StepGuard<'_> {
        self.lock().step = Some((what, Instant::now()));
        StepGuard(self)
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
    /// listening sockets of the ports the intent manages ([`exposed_listeners`]). The plan
    /// is read without the writer lock ([`Netfilter::plan_unlocked`]): any host may ask for
    /// this view, and overlapping requests holding the lock shared kept reconciles out.
    pub fn inside_view(&self) -> InsideView {
        let (intent, policy_invalid, apply_failed) = self.with_state(|s| {
            (
                s.intent.clone(),
                s.policy_error.is_some(),
                s.apply_error.is_some(),
            )
        });
        let listeners = read_listeners().unwrap_or_default();
        let exposed = |listeners| exposed_listeners(intent.as_deref(), listeners);
        // Errors are not served (any host can ask): the reconcile that meets them logs them.
        let failsafe = self.config.effective_failsafe();
        let mut view = match (&intent, self.netfilter()) {
            (Some(intent), Ok(nf)) => match nf.plan_unlocked(intent, &failsafe) {
                Ok(plan) => {
                    // The packet path's other owners, for this view only: the refresh does
                    // not pay for reading them.
                    let plan = plan.with_owners(
                        &nf.foreign_tables(),
                        intent,
                        &failsafe,
                        nf.mixed_backends(),
                    );
                    let mut view = InsideView::new(&self.config.node, &plan, intent, listeners);
                    // Explanations only: a nat table that cannot be read leaves them out.
                    if let Ok(forwards) = nf.forwards() {
                        view.forwarded = crate::inside::ForwardView::of(
                            &portwarden_netfilter::forwarding::managed(&forwards, intent),
                        );
                    }
                    view
                }
                Err(_) => InsideView {
                    node: self.config.node.clone(),
                    apply_failed: true,
                    listeners: exposed(listeners),
                    ..InsideView::default()
                },
            },
            (_, Err(_)) => InsideView {
                node: self.config.node.clone(),
                apply_failed: true,
                listeners: exposed(listeners),
                ..InsideView::default()
            },
            (None, Ok(_)) => InsideView {
                node: self.config.node.clone(),
                ..InsideView::default()
            },
        };
        view.policy_invalid = policy_invalid;
        view.apply_failed |= apply_failed;
        view
    }
}

/// A cheap fingerprint of what [`load_paths`] would read: path, size, modification time,
/// inode, and mode and owner of the given roots and of every policy file under them, and the
/// problems of the walk (a FIFO, a link out of the tree: not read, but a change to report). A
/// git checkout that swaps the directory or replaces files by rename changes inodes, so it is
/// seen too; mode and owner cover a `chmod`/`chown` that makes an unreadable file readable again.
type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>, u64, (u32, u32, u32))>;

fn fingerprint(roots: &[&Path]) -> Fingerprint {
    use std::os::unix::fs::MetadataExt;
    // The walk already stat'ed every file; only the roots are stat'ed here.
    let (files, problems) = portwarden_policy::load::policy_files_with_metadata(roots);
    let roots = roots
        .iter()
        .map(|p| (p.to_path_buf(), std::fs::metadata(p).ok()));
    let problems = problems.iter().map(|d| (PathBuf::from(d.headline()), None));
    roots
        .chain(files.into_iter().map(|(p, m)| (p, Some(m))))
        .chain(problems)
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

/// While a load asked for by SIGHUP waits for a change to hold still, the files are checked at
/// least this often, however long `--poll-ms` is (an agent polling once an hour still loads
/// within a fraction of a second of the signal).
pub const ASKED_POLL: Duration = Duration::from_millis(200);

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
    /// A load was asked for ([`Debounce::force`]) and has not happened yet.
    asked: bool,
}

impl<F: PartialEq> Debounce<F> {
    /// A debounce that has loaded nothing yet: the first observation loads at once.
    pub fn new(max_wait: Duration) -> Debounce<F> {
        Debounce {
            max_wait,
            loaded: None,
            pending: None,
            asked: false,
        }
    }

    /// Asks for a load although nothing changed (SIGHUP): the next observation of an
    /// unchanged fingerprint loads. A change already pending is left alone — it loads once it
    /// holds still (or at `max_wait`), timed from its first sight as usual — so a reload asked
    /// for in the middle of a checkout does not catch it half-way. Either way the load that
    /// follows is the one asked for.
    pub fn force(&mut self) {
        self.asked = true;
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
            if std::mem::take(&mut self.asked) {
                return Step::Load {
                    first_seen: None,
                    forced: false,
                };
            }
            return Step::Unchanged;
        }
        let (settled, first_seen) = match self.pending.take() {
            Some((pending, first_seen)) => (pending == fp, first_seen),
            None => (false, now),
        };
        let forced = !settled && now.saturating_duration_since(first_seen) >= self.max_wait;
        if settled || forced {
            self.loaded = Some(fp);
            self.asked = false;
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

    /// Whether a load asked for by [`Debounce::force`] is still to come (a change it waits
    /// for has not held still yet).
    pub fn asked(&self) -> bool {
        self.asked
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

/// What the loop is told from outside (signals, via [`run`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Stop; the rules stay in place.
    Stop,
    /// Load the policy documents and the inventory after the current step, whether or not
    /// they changed (SIGHUP), then go on as before; a change still being written is loaded
    /// once it holds still ([`Debounce::force`]), checked every [`ASKED_POLL`] meanwhile.
    Reload,
}

/// The loop. Returns when `control` receives [`Control::Stop`] or its senders are dropped;
/// [`Control::Reload`] loads the documents after the current step. Messages that queued up
/// during a step are taken together: a `Stop` among them wins, `Reload`s are one.
pub fn run_loop(shared: Arc<Shared>, control: Receiver<Control>) {
    let cfg = shared.config.clone();
    let mut debounce: Debounce<Fingerprint> = Debounce::new(cfg.poll * DEBOUNCE_MAX_POLLS);
    // When the fingerprint of the last load was taken (wall clock, for the latency metric).
    let mut loaded_at = SystemTime::now();
    let mut peers: Vec<Target> = Vec::new();
    let start = Instant::now();
    let mut next_poll = start;
    let mut next_refresh = start + cfg.refresh;
    let mut next_scan = cfg.scan_interval.map(|i| start + i);
    // A load asked for by SIGHUP that waits for files to hold still checks them soon.
    let poll = |d: &Debounce<Fingerprint>| {
        if d.asked() {
            cfg.poll.min(ASKED_POLL)
        } else {
            cfg.poll
        }
    };
    // Alive from the start: the first round's steps are judged as every other's.
    shared.heartbeat();
    loop {
        let now = Instant::now();
        if now >= next_poll {
            let fp = {
                let _step = shared.step("policy poll");
                fingerprint(&[&cfg.policy_dir, &cfg.inventory])
            };
            let taken = SystemTime::now();
            // The last load's fingerprint, for the change time: copied only when this poll's
            // differs (a load can follow), not on every quiet poll.
            let old = debounce
                .loaded()
                .filter(|loaded| **loaded != fp)
                .cloned()
                .unwrap_or_default();
            let asked = debounce.asked();
            if let Step::Load { first_seen, forced } = debounce.observe(fp, now) {
                let roots = [cfg.policy_dir.as_path(), cfg.inventory.as_path()];
                // A checkout swapped in while the files were being read could mix old and new
                // files; such a read is dropped (unless forced: then the bound wins) and the
                // next poll sees the new fingerprint and loads it once it holds still.
                let unchanged = || forced || debounce.loaded() == Some(&fingerprint(&roots));
                if !load_and_apply(&shared, &mut peers, forced, unchanged) {
                    if asked {
                        // Still owed: the files changed during the read.
                        debounce.force();
                    }
                    next_poll = now + poll(&debounce);
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
            next_poll = now + poll(&debounce);
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
        // Never longer than half the heartbeat limit: an idle loop stays alive (`/healthz`)
        // whatever the poll, refresh and scan intervals.
        let wait = next
            .saturating_duration_since(Instant::now())
            .min(HEARTBEAT_LIMIT / 2);
        let stop = match control.recv_timeout(wait) {
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
            Ok(first) => {
                // Everything that queued up behind it during the last step, together.
                let stop = std::iter::once(first)
                    .chain(control.try_iter())
                    .any(|c| c == Control::Stop);
                if !stop {
                    debounce.force();
                    next_poll = Instant::now();
                }
                stop
            }
        };
        if stop {
            info!("agent loop stopped; rules stay in place (portwarden reset removes them)");
            return;
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
///
/// Invalid, besides documents the loader refuses: no PortPolicy document at all (unless
/// [`AgentConfig::allow_empty_policy`]), this node missing from the inventory, and a root that
/// is neither a directory nor a regular file (a FIFO would block the loop forever).
fn reload(shared: &Shared, unchanged: impl Fn() -> bool) -> Reload {
    let _step = shared.step("policy load");
    let cfg = &shared.config;
    if let Some(msg) = irregular_root(&[&cfg.policy_dir, &cfg.inventory]) {
        return invalid(shared, msg);
    }
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
            return invalid_logged(shared, summary.join("\n"));
        }
    };
    for w in policies.warnings.iter().chain(&inventory.warnings) {
        warn!(problem = %w.headline(), "policy documents: warning");
    }
    if policies.policies.policies().is_empty() && !cfg.allow_empty_policy {
        return invalid(
            shared,
            format!(
                "no PortPolicy documents under {} ({} files read): taken for a failed render or checkout, not for \"remove every rule\"; keeping the last good state (to mean an empty policy set, start the agent with --allow-empty-policy, or keep a policy that selects no node)",
                cfg.policy_dir.display(),
                policies.files
            ),
        );
    }
    if inventory.node(&cfg.node).is_none() {
        return invalid(
            shared,
            format!(
                "node \"{}\" is not in the inventory {}; keeping the last good state",
                cfg.node,
                cfg.inventory.display()
            ),
        );
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

/// The first of `roots` that exists but is neither a directory nor a regular file, as a
/// message: reading a FIFO nobody writes to would block the loop forever. (The walk opens only
/// regular files below a directory; a root is read whatever it is, as `validate` reads
/// `/dev/stdin`.)
fn irregular_root(roots: &[&Path]) -> Option<String> {
    roots.iter().find_map(|root| {
        let meta = std::fs::metadata(root).ok()?;
        (!meta.is_dir() && !meta.is_file()).then(|| {
            format!(
                "{}: error: not a regular file or a directory (a FIFO, socket or device); the agent does not read it, since that could block it forever",
                root.display()
            )
        })
    })
}

/// Records invalid input: `msg` logged, counted, served; the last good intent stays.
fn invalid(shared: &Shared, msg: String) -> Reload {
    error!(problem = %msg, "invalid policy documents; keeping the last good state");
    invalid_logged(shared, msg)
}

/// [`invalid`] for a message already logged.
fn invalid_logged(shared: &Shared, msg: String) -> Reload {
    shared.metrics.policy_load_errors.inc();
    shared.metrics.policy_valid.set(0);
    shared.lock().policy_error = Some(msg);
    Reload::Invalid
}

/// Plans against the kernel's rules and applies when anything differs. The outcome is left in
/// the shared state (`ready`, `apply_error`) and the metrics.
pub fn converge(shared: &Shared, reason: &'static str) {
    let Some(intent) = shared.with_state(|s| s.intent.clone()) else {
        return;
    };
    let _step = shared.step("reconcile");
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
        report_lookalikes(shared, &plan);
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
            for b in &applied.other_backends {
                warn!(
                    backend = %b,
                    "removed portwarden's rules from the {b} backend (the other backend's are written and confirmed)"
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

/// Logs the plan's look-alikes (chains and rules named like portwarden's that are not) and
/// kept chains once each, when they appear.
fn report_lookalikes(shared: &Shared, plan: &portwarden_netfilter::Plan) {
    let now: Vec<String> = plan
        .lookalikes
        .iter()
        .map(ToString::to_string)
        .chain(plan.kept.iter().map(ToString::to_string))
        .collect();
    let mut s = shared.lock();
    for l in now.iter().filter(|l| !s.reported_lookalikes.contains(l)) {
        warn!(lookalike = %l, "not portwarden's, left alone");
    }
    s.reported_lookalikes = now;
}

/// Scans the peers and stores the report in the shared state.
///
/// TCP is scanned in full; managed UDP ports are re-checked a share at a time and reported
/// from their last confirmation ([`verify_incremental`], [`crate::ledger`]), so a peer that
/// rate-limits its ICMP errors is asked for no more than it answers within the confirmation
/// budget ([`AgentConfig::confirm_budget`]), and its unconfirmed silence is never drift.
pub fn scan_peers(shared: &Shared, peers: &[Target]) {
    if peers.is_empty() {
        return;
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
/// the HTTP endpoint, starts the loop, and on a signal stops both. Rules stay in place. SIGHUP
/// reloads the policy directory and the inventory after the current step (logged), whether
/// or not they changed.
///
/// # Errors
///
/// When another agent manages this network namespace (its pid and command are named), the
/// lock directory cannot be used, the HTTP address cannot be bound or the runtime cannot start.
pub fn run(config: AgentConfig) -> std::io::Result<()> {
    let (control, commands) = std::sync::mpsc::channel();
    let hangup = control.clone();
    run_agent(
        config,
        move || {
            info!(
                "SIGHUP: reloading the policy directory and the inventory after the current step"
            );
            let _ = hangup.send(Control::Reload);
        },
        move |shared| run_loop(shared, commands),
        move |shared, shutdown| async move {
            let c = &shared.config;
            info!(node = %c.node, listen = %c.listen, policy_dir = %c.policy_dir.display(), "agent started");
            shutdown.await;
            let _ = control.send(Control::Stop);
            Ok(())
        },
    )?
}

/// The process around an agent's loop, for both agents (the standalone [`run`] and
/// `portwarden-kube`'s `agent --kube`): takes the network namespace's agent lock, starts a
/// runtime, installs the signal handlers (`on_hangup` runs on every SIGHUP), binds the HTTP
/// endpoint, fits the descriptor limit ([`fit_descriptors`]), and starts `reconcile` on a
/// thread of its own. Then it serves HTTP ([`crate::http::router`]) while `main` runs, with
/// the future that resolves on SIGTERM or SIGINT; when `main` returns the server stops and
/// the thread is joined (a panic of it is logged).
///
/// # Guarantees
///
/// The descriptor limit is fitted before `reconcile` starts, so every child it spawns
/// inherits the fitted limit.
///
/// # Caveats
///
/// `reconcile` must return once `main` has: `main` tells it (a [`Control::Stop`], or by
/// dropping the channel it waits on), or the process waits for it forever.
///
/// # Errors
///
/// The outer error: another agent manages this network namespace (named), the lock directory
/// cannot be used, the runtime or the thread cannot start, or the HTTP address cannot be
/// bound. The inner one is `main`'s.
pub fn run_agent<E, M, F>(
    config: AgentConfig,
    on_hangup: impl FnMut() + Send + 'static,
    reconcile: impl FnOnce(Arc<Shared>) + Send + 'static,
    main: M,
) -> std::io::Result<Result<(), E>>
where
    M: FnOnce(Arc<Shared>, Shutdown) -> F,
    F: Future<Output = Result<(), E>>,
{
    let _only_agent = take_agent_lock()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        // First thing: from here on a SIGHUP calls `on_hangup` instead of ending the process.
        let shutdown: Shutdown = Box::pin(shutdown_signal(on_hangup));
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot listen on {}: {e}", config.listen))
            })?;
        let budget = fit_descriptors(Limits::default());
        let shared = Shared::new(config);
        let loop_shared = shared.clone();
        let worker = std::thread::Builder::new()
            .name("reconcile".into())
            .spawn(move || reconcile(loop_shared))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = serve(
            listener,
            crate::http::router(shared.clone()),
            budget,
            shared.metrics.http.clone(),
            async {
                let _ = stopped.await;
            },
        );
        let main = async {
            let result = main(shared.clone(), shutdown).await;
            let _ = stop.send(());
            result
        };
        let ((), result) = tokio::join!(server, main);
        if worker.join().is_err() {
            error!("reconcile loop panicked");
        }
        Ok(result)
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A configuration over `policy_dir` and `inventory` for node `n`, as the tests use it
    /// (nothing runs; no netfilter is touched).
    pub(crate) fn config(policy_dir: PathBuf, inventory: PathBuf, listen: &str) -> AgentConfig {
        AgentConfig {
            policy_dir,
            inventory,
            node: "n".into(),
            refresh: Duration::from_secs(10),
            scan_interval: None,
            scan_rate: None,
            confirm_budget: None,
            poll: Duration::from_millis(200),
            listen: listen.parse().unwrap(),
            failsafe: Failsafe::none(),
            netfilter: NetfilterOptions::default(),
            allow_empty_policy: false,
        }
    }

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
        let shared = Shared::new(config(policies, inventory, "127.0.0.1:9750"));
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

    /// A policy directory with `files`, an inventory of node `n` and a peer, and the agent's
    /// shared state over them (nothing runs; tests call [`reload`] themselves).
    fn agent_on(tag: &str, files: &[(&str, &str)]) -> (PathBuf, Arc<Shared>) {
        agent_allowing_empty(tag, files, false)
    }

    /// [`agent_on`] with `--allow-empty-policy` set to `allow`.
    fn agent_allowing_empty(
        tag: &str,
        files: &[(&str, &str)],
        allow: bool,
    ) -> (PathBuf, Arc<Shared>) {
        let dir = std::env::temp_dir().join(format!("pw-agent-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let policies = dir.join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        for (name, text) in files {
            std::fs::write(policies.join(name), text).unwrap();
        }
        let inventory = dir.join("inventory.yaml");
        std::fs::write(
            &inventory,
            "apiVersion: portwarden.io/v1alpha1\nkind: Inventory\nnodes:\n  - {name: n, addresses: [10.213.0.11]}\n  - {name: peer, addresses: [10.213.0.12]}\n",
        )
        .unwrap();
        let shared = Shared::new(AgentConfig {
            allow_empty_policy: allow,
            ..config(policies, inventory, "127.0.0.1:9750")
        });
        (dir, shared)
    }

    fn web_policy(name: &str, port: u16) -> String {
        format!(
            "apiVersion: portwarden.io/v1alpha1\nkind: PortPolicy\nmetadata: {{name: {name}}}\nspec:\n  ports: [{{ports: {port}, state: closed}}]\n"
        )
    }

    #[test]
    fn an_empty_render_or_an_emptied_directory_keeps_the_last_good_intent() {
        let (web, quarantine) = (web_policy("web", 80), web_policy("quarantine", 8080));
        let (dir, shared) = agent_on(
            "empty",
            &[("web.yaml", &web), ("quarantine.yaml", &quarantine)],
        );
        let policies = shared.config.policy_dir.clone();
        assert!(matches!(reload(&shared, || true), Reload::Loaded(_)));
        let rules = || shared.with_state(|s| s.intent.as_ref().map(|i| i.rules.len()));
        assert_eq!(rules(), Some(2));
        let errors_before = shared.metrics.policy_load_errors.get();
        let refused = |what: &str, message: &str| {
            assert!(
                matches!(reload(&shared, || true), Reload::Invalid),
                "{what}: taken for the intent"
            );
            assert_eq!(rules(), Some(2), "{what}: the last good intent stays");
            let error = shared
                .with_state(|s| s.policy_error.clone())
                .unwrap_or_default();
            assert!(error.contains(message), "{what}: {error}");
            assert_eq!(shared.metrics.policy_valid.get(), 0, "{what}");
        };
        // A render that failed (`cat /nonexistent > quarantine.yaml`): one file of two empty.
        std::fs::write(policies.join("quarantine.yaml"), "").unwrap();
        refused("a truncated file", "quarantine.yaml: error: file is empty");
        // Every file emptied, then every file gone.
        std::fs::write(policies.join("web.yaml"), "").unwrap();
        refused("every file empty", "web.yaml: error: file is empty");
        std::fs::remove_file(policies.join("web.yaml")).unwrap();
        std::fs::remove_file(policies.join("quarantine.yaml")).unwrap();
        refused("an emptied directory", "no PortPolicy documents");
        assert_eq!(shared.metrics.policy_load_errors.get(), errors_before + 3);
        // A policy that selects no node is a deliberate "nothing": taken.
        std::fs::write(
            policies.join("none.yaml"),
            web.replace(
                "spec:\n",
                "spec:\n  nodeSelector: {matchLabels: {nothing: here}}\n",
            ),
        )
        .unwrap();
        assert!(matches!(reload(&shared, || true), Reload::Loaded(_)));
        assert_eq!(rules(), Some(0));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_empty_policy_set_is_the_intent_when_allowed() {
        let (dir, shared) =
            agent_allowing_empty("allowed", &[("web.yaml", &web_policy("web", 80))], true);
        assert!(matches!(reload(&shared, || true), Reload::Loaded(_)));
        std::fs::remove_file(shared.config.policy_dir.join("web.yaml")).unwrap();
        assert!(matches!(reload(&shared, || true), Reload::Loaded(_)));
        shared.with_state(|s| {
            assert_eq!(s.intent.as_ref().map(|i| i.rules.len()), Some(0));
            assert!(s.policy_error.is_none());
        });
        // An empty file is still a failed render, allowed or not.
        std::fs::write(shared.config.policy_dir.join("web.yaml"), "").unwrap();
        assert!(matches!(reload(&shared, || true), Reload::Invalid));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn health_names_the_step_of_a_loop_that_cannot_finish_a_round() {
        let t0 = Instant::now();
        let mut state = State {
            heartbeat: Some(t0),
            step: Some(("policy load", t0)),
            ..State::default()
        };
        let just_in = t0 + HEARTBEAT_LIMIT - Duration::from_secs(1);
        assert_eq!(state.health(just_in), Ok(()), "within the limit");
        assert_eq!(
            state.health(t0 + HEARTBEAT_LIMIT + Duration::from_secs(15)),
            Err("the reconcile loop is stuck: its policy load has been running for 75 s (a round must complete every 60 s); a hung file system, or iptables hanging?".into())
        );
        // Between steps, a stale heartbeat: the loop is gone.
        state.step = None;
        assert_eq!(
            state.health(t0 + HEARTBEAT_LIMIT * 2),
            Err("reconcile loop is not running".into())
        );
        state.heartbeat = None;
        assert_eq!(
            state.health(t0),
            Err("reconcile loop is not running".into())
        );
    }

    #[test]
    fn a_long_peer_scan_is_not_a_stuck_loop() {
        let t0 = Instant::now();
        let state = State {
            heartbeat: Some(t0),
            step: Some((PEER_SCAN, t0)),
            ..State::default()
        };
        assert_eq!(state.health(t0 + HEARTBEAT_LIMIT * 10), Ok(()));
    }

    #[test]
    fn a_forced_load_loads_an_unchanged_state_once() {
        let t0 = Instant::now();
        let mut d = Debounce::new(POLL * DEBOUNCE_MAX_POLLS);
        d.observe(1, t0);
        assert_eq!(d.observe(1, t0 + POLL), Step::Unchanged);
        // SIGHUP, twice before the next poll: one load, not timed (nothing changed).
        d.force();
        d.force();
        assert_eq!(
            d.observe(1, t0 + POLL * 2),
            Step::Load {
                first_seen: None,
                forced: false
            }
        );
        assert_eq!(d.observe(1, t0 + POLL * 3), Step::Unchanged);
    }

    #[test]
    fn a_forced_load_waits_for_a_pending_change_to_hold_still() {
        // A SIGHUP in the middle of a checkout: the files are still changing.
        let t0 = Instant::now();
        let mut d = Debounce::new(POLL * DEBOUNCE_MAX_POLLS);
        d.observe(1, t0);
        assert_eq!(d.observe(2, t0 + POLL), Step::Wait);
        d.force();
        assert_eq!(
            d.observe(3, t0 + POLL * 2),
            Step::Wait,
            "not caught half-way"
        );
        // Once it holds still it loads, timed from its first sight; that was the load asked
        // for, so the next quiet poll loads nothing.
        assert_eq!(
            d.observe(3, t0 + POLL * 3),
            Step::Load {
                first_seen: Some(t0 + POLL),
                forced: false
            }
        );
        assert_eq!(d.observe(3, t0 + POLL * 4), Step::Unchanged);
    }

    #[test]
    fn steps_are_recorded_while_they_run() {
        let (dir, shared) = agent_on("steps", &[("web.yaml", &web_policy("web", 80))]);
        let seen = std::cell::Cell::new(None);
        // `unchanged` runs inside the load: the step is visible from there.
        let _ = reload(&shared, || {
            seen.set(shared.with_state(|s| s.step.map(|(what, _)| what)));
            true
        });
        assert_eq!(seen.get(), Some("policy load"));
        shared.with_state(|s| assert!(s.step.is_none(), "cleared after the step"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_first_load_of_no_documents_applies_nothing() {
        let (dir, shared) = agent_on("first", &[]);
        assert!(matches!(reload(&shared, || true), Reload::Invalid));
        shared.with_state(|s| {
            assert!(s.intent.is_none(), "no intent: converge touches nothing");
            assert!(
                s.policy_error
                    .as_deref()
                    .is_some_and(|e| e.contains("no PortPolicy documents")),
                "{:?}",
                s.policy_error
            );
        });
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn mkfifo(path: &Path) {
        let made = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .unwrap();
        assert!(made.success());
    }

    #[test]
    fn a_fifo_named_as_the_inventory_is_refused_not_opened() {
        // Opening a FIFO nobody writes to blocks forever: the loop would stop repairing rules.
        let (dir, shared) = agent_on("fifo", &[("web.yaml", &web_policy("web", 80))]);
        let inventory = shared.config.inventory.clone();
        std::fs::remove_file(&inventory).unwrap();
        mkfifo(&inventory);
        let (tx, rx) = std::sync::mpsc::channel();
        let loader = shared.clone();
        std::thread::spawn(move || {
            let invalid = matches!(reload(&loader, || true), Reload::Invalid);
            let _ = tx.send(invalid);
        });
        let invalid = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the load did not finish within 20 s: the FIFO was opened");
        assert!(invalid);
        let error = shared.with_state(|s| s.policy_error.clone()).unwrap();
        assert!(error.contains("not a regular file"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fingerprint_sees_entries_the_walk_refuses() {
        // A FIFO (or a link out of the tree) is reported by the load, not read: it must still
        // change the fingerprint, or the agent would not reload and never serve the error.
        let (dir, shared) = agent_on("fp-refused", &[("web.yaml", &web_policy("web", 80))]);
        let policies = shared.config.policy_dir.clone();
        // In a subdirectory: an entry added to the root changes the root's own time already.
        std::fs::create_dir(policies.join("sub")).unwrap();
        let before = fingerprint(&[&policies]);
        mkfifo(&policies.join("sub/pipe.yaml"));
        assert_ne!(before, fingerprint(&[&policies]));
        // A link out of the tree, likewise: not followed, but reported, so it counts.
        let before = fingerprint(&[&policies]);
        std::os::unix::fs::symlink(dir.join("inventory.yaml"), policies.join("sub/out.yaml"))
            .unwrap();
        assert_ne!(before, fingerprint(&[&policies]));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_default_confirmation_budget_fits_the_interval() {
        let mut cfg = config("p".into(), "i".into(), "0.0.0.0:9750");
        let with = |interval: Option<u64>, budget: Option<u64>| AgentConfig {
            scan_interval: interval.map(Duration::from_secs),
            confirm_budget: budget.map(Duration::from_secs),
            ..cfg.clone()
        };
        assert_eq!(
            with(Some(60), None).confirm_budget(),
            Duration::from_secs(30)
        );
        assert_eq!(
            with(Some(600), None).confirm_budget(),
            Duration::from_secs(30)
        );
        assert_eq!(
            with(Some(10), None).confirm_budget(),
            Duration::from_secs(5)
        );
        assert_eq!(with(None, None).confirm_budget(), Duration::from_secs(30));
        assert_eq!(
            with(Some(10), Some(45)).confirm_budget(),
            Duration::from_secs(45)
        );
        cfg.confirm_budget = Some(Duration::ZERO);
        assert_eq!(cfg.confirm_budget(), Duration::ZERO);
    }

    #[test]
    fn failsafe_includes_agent_port() {
        let cfg = config("p".into(), "i".into(), "0.0.0.0:9750");
        let f = cfg.effective_failsafe();
        assert!(f.ranges(Protocol::Tcp).any(|r| r.contains(9750)));
    }
}
