//! One reconcile: plan against the kernel's rules, apply when anything differs, and say what
//! was done and why ([`Reason`]). Both agents converge through [`converge`].

use std::time::Instant;

use portwarden_netfilter::{Applied, Family, Plan, Ruleset};
use tracing::{error, info, warn};

use crate::metrics::DriftLabels;
use crate::state::Shared;

/// Why a reconcile runs; logged with it, and what decides whether changes found are drift.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The intent changed (new documents, a new plan from the cluster): changes are ours.
    PolicyChange,
    /// The periodic re-read: changes found are someone else's, repaired as rule drift.
    Refresh,
    /// A refresh after a failed apply: what it finds is our own unfinished change, not drift.
    /// [`converge`] turns a [`Reason::Refresh`] into this one by itself.
    Retry,
}

impl Reason {
    /// The words of the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::PolicyChange => "policy change",
            Reason::Refresh => "refresh",
            Reason::Retry => "retry after a failed apply",
        }
    }
}

/// What one reconcile did.
enum Pass {
    /// It changed rules.
    Written(Box<(Plan, Applied)>),
    /// Nothing differed: the rulesets the plan read (empty unless the handle keeps them).
    Unchanged(Vec<(Family, Ruleset)>),
}

/// Plans against the kernel's rules and applies when anything differs. The outcome is left in
/// the shared state (`ready`, `apply_error`) and the metrics. Returns the rulesets the plan
/// read (with their counters) when it wrote nothing, so a refresh counts packets from them
/// ([`crate::counters::refresh`]); `None` after a write or an error.
pub fn converge(shared: &Shared, reason: Reason) -> Option<Vec<(Family, Ruleset)>> {
    let mut intent = shared.with_state(|s| s.intent.clone())?;
    let _step = shared.step("reconcile");
    // Entries that expired since the intent was compiled: the kernel's time match already
    // stopped their rules; they are removed now, as an intent change (not drift).
    let now = portwarden_policy::Timestamp::now();
    let mut reason = reason;
    if intent.has_expired_at(now) {
        let live = std::sync::Arc::new(intent.at(now));
        info!(
            expired = intent.rules.len() - live.rules.len(),
            "expired entries: removing their rules"
        );
        {
            // unless a reload stored a newer intent meanwhile
            let mut s = shared.lock();
            if s.intent
                .as_ref()
                .is_some_and(|i| std::sync::Arc::ptr_eq(i, &intent))
            {
                s.intent = Some(live.clone());
            }
        }
        intent = live;
        reason = Reason::PolicyChange;
    }
    // After a failed apply, what the next refresh finds is our own unfinished change, not
    // someone else's drift.
    let retry = shared.with_state(|s| s.apply_error.is_some());
    let reason = if retry && reason == Reason::Refresh {
        Reason::Retry
    } else {
        reason
    };
    let started = Instant::now();
    let result = shared.netfilter().and_then(|nf| {
        // Read, plan, write and read back under the namespace's writer lock: a hand-run
        // `apply` waits for this reconcile, or this one for it, never a mix of the two.
        let (mut plan, applied) = nf.converge(&intent, &shared.config.effective_failsafe())?;
        report_lookalikes(shared, &plan);
        if plan.is_converged() && applied.transactions == 0 {
            return Ok(Pass::Unchanged(std::mem::take(&mut plan.read)));
        }
        Ok(Pass::Written(Box::new((plan, applied))))
    });
    shared
        .metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    let unchanged_read = match result {
        Ok(outcome) => {
            let read = match outcome {
                Pass::Written(written) => {
                    let (plan, applied) = *written;
                    report_changes(shared, reason, &plan, &applied);
                    None
                }
                Pass::Unchanged(read) => Some(read),
            };
            let mut s = shared.lock();
            s.ready = true;
            s.apply_error = None;
            read
        }
        Err(e) => {
            shared.metrics.reconcile_errors.inc();
            error!(error = %e, reason = reason.as_str(), "reconcile failed; will retry at the next refresh");
            shared.lock().apply_error = Some(e.to_string());
            None
        }
    };
    unchanged_read.filter(|read| !read.is_empty())
}

/// Counts and logs an apply that changed rules: as repaired drift after a [`Reason::Refresh`],
/// else as applied; and what it removed from the other backend and the foreign rules that
/// shadow portwarden's jump.
fn report_changes(shared: &Shared, reason: Reason, plan: &Plan, applied: &Applied) {
    shared.metrics.rules_changed.inc_by(applied.changes as u64);
    if reason == Reason::Refresh {
        report_drift(shared, plan, applied);
    } else {
        info!(
            changes = applied.changes,
            transactions = applied.transactions,
            reason = reason.as_str(),
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
}

/// Someone else changed our rules since the last reconcile: say what, not every rule (a table
/// reload brings back thousands), and count it by kind.
fn report_drift(shared: &Shared, plan: &Plan, applied: &Applied) {
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
}

/// Logs the plan's look-alikes (chains and rules named like portwarden's that are not) and
/// kept chains once each, when they appear.
fn report_lookalikes(shared: &Shared, plan: &Plan) {
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
