//! What an agent's loop knows and shares with its HTTP handlers: the last good intent, the
//! errors (logged, never served), readiness, the heartbeat and the step the loop is in, the
//! last peer scan, the last refresh's per-entry counters, and the inside view computed on
//! request.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portwarden_netfilter::Netfilter;
use portwarden_policy::NodeIntent;
use portwarden_reconcile::html::EntryNotes;
use portwarden_reconcile::inside::{ForwardView, InsideView, exposed_listeners};
use portwarden_reconcile::ledger::Ledger;
use portwarden_reconcile::listeners::read_listeners;
use portwarden_reconcile::report::Report;
use tracing::info;

use crate::config::AgentConfig;
use crate::counters::{Counted, EntryCounts};
use crate::metrics::Metrics;

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
    /// What `explain` says of every entry of the loaded policies (its reason above all), for
    /// the page at `/`: set with the intent from the same documents.
    pub notes: Arc<EntryNotes>,
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
pub(crate) struct StepGuard<'a>(&'a Shared);

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
    /// What the peer scans remember of the peers' UDP ports ([`portwarden_reconcile::ledger`]); only the
    /// loop's peer scan uses it.
    pub ledger: Mutex<Ledger>,
    /// The per-entry counters of the last refresh ([`crate::counters`]).
    pub counts: Mutex<EntryCounts>,
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
            counts: Mutex::new(EntryCounts::default()),
        })
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn counts(&self) -> std::sync::MutexGuard<'_, EntryCounts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The last refresh's per-entry counters and when they were read (shared, not copied).
    pub fn entry_counts(&self) -> (Arc<Vec<Counted>>, Option<portwarden_policy::Timestamp>) {
        let c = self.counts();
        (c.counted.clone(), c.at)
    }

    /// Reads state under the lock.
    pub fn with_state<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.lock())
    }

    /// Records in [`State::step`] that the loop is in step `what` until the guard is dropped.
    pub(crate) fn step(&self, what: &'static str) -> StepGuard<'_> {
        self.lock().step = Some((what, Instant::now()));
        StepGuard(self)
    }

    /// Records that the loop is alive (`/healthz`): the schedule does at its start and after
    /// each round.
    pub fn heartbeat(&self) {
        self.lock().heartbeat = Some(Instant::now());
    }

    /// Sets the intent and the policy error from another source of policies (the Kubernetes
    /// agent in `portwarden-kube`); the next converge applies it.
    pub fn set_intent(&self, intent: Option<Arc<NodeIntent>>, policy_error: Option<String>) {
        let mut state = self.lock();
        state.intent = intent;
        state.policy_error = policy_error;
    }

    /// Sets the entry notes of the policies the intent came from ([`State::notes`]).
    pub fn set_notes(&self, notes: Arc<EntryNotes>) {
        self.lock().notes = notes;
    }

    /// The netfilter handle, detected at the first call.
    ///
    /// # Errors
    ///
    /// Why the backend could not be detected (retried at the next call).
    pub(crate) fn netfilter(&self) -> Result<Netfilter, portwarden_netfilter::Error> {
        let mut slot = self.netfilter.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(nf) = slot.as_ref() {
            return Ok(nf.clone());
        }
        // Plans keep what they read, with counters: a refresh that writes nothing counts the
        // packets per entry from that read (crate::counters) instead of reading again.
        let nf = Netfilter::detect(&self.config.netfilter)?.with_read_kept(true);
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
                        view.forwarded = ForwardView::of(
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
        if intent.is_some() {
            let (counted, at) = self.entry_counts();
            crate::counters::into_view(&mut view, &counted, at);
        }
        view
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
