//! `portwarden confirm`: keep the ruleset of an `apply --confirm-within` in this network
//! namespace, cancelling its pending rollback; or say why there is nothing to confirm (exit 1):
//! nothing was armed, it was confirmed already, or the rollback already happened (or failed).

use std::process::ExitCode;

use anyhow::{anyhow, bail};
use portwarden_netfilter::rollback::{self, Rollback, StateFile, Status};

use crate::Outcome;
use crate::cmd::rollback::{STATE_WAIT, hms, rfc3339, stop_watcher, watcher_alive};

/// Arguments of `confirm`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example (in the namespace the apply ran in; in a lab: ip netns exec NS portwarden confirm):\n  portwarden apply -f examples/ --inventory examples/inventory.yaml --node web-1 --confirm-within 2m\n  portwarden confirm\n\nExit codes: 0 confirmed (the applied rules stay), 1 nothing to confirm (none pending, confirmed already, rolled back already: the message says when) or error."
)]
pub struct Args {}

pub fn run(_a: Args) -> Outcome {
    let nothing = || {
        anyhow!(
            "nothing to confirm: no rollback is pending in this network namespace (no `apply \
             --confirm-within` armed one)"
        )
    };
    // Looked at first without the lock, so that nothing is created where nothing was armed
    // (a read that fails, as one racing a write may, is settled under the lock below).
    if matches!(
        rollback::peek(&portwarden_netfilter::writer::lock_dir()),
        Ok(None)
    ) {
        return Err(nothing());
    }
    let state = StateFile::lock(STATE_WAIT)?;
    let Some(mut r) = state.read()? else {
        return Err(nothing());
    };
    match r.status {
        Status::Pending => {}
        Status::Confirmed => bail!(
            "nothing to confirm: the ruleset applied at {} was confirmed already, at {}",
            rfc3339(r.applied_ms),
            rfc3339(r.confirmed_ms.unwrap_or(r.applied_ms))
        ),
        Status::RolledBack | Status::Failed => bail!("nothing to confirm: {}", too_late(&r)),
    }
    let now = rollback::now_ms();
    let alive = watcher_alive(&r);
    r.status = Status::Confirmed;
    r.confirmed_ms = Some(now);
    state.write(Some(&r))?;
    if alive {
        stop_watcher(&r);
    } else if now >= r.deadline_ms {
        eprintln!(
            "warning: the rollback due at {} never ran: its watcher (pid {}) is gone (killed, or \
             the machine rebooted); the rules applied then stayed, and now stay for good",
            hms(r.deadline_ms),
            r.watcher_pid.unwrap_or(0)
        );
    }
    println!(
        "confirmed: the ruleset applied at {} stays (the rollback due at {} is cancelled{})",
        rfc3339(r.applied_ms),
        hms(r.deadline_ms),
        if alive {
            format!("; its watcher, pid {}, stopped", r.watcher_pid.unwrap_or(0))
        } else {
            String::new()
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// Why a confirm of `r` comes too late: when the rollback happened, or how it failed.
fn too_late(r: &Rollback) -> String {
    let o = r.outcome.as_ref();
    let at = o.map_or(r.deadline_ms, |o| o.finished_ms);
    match (r.status, o.and_then(|o| o.error.as_deref())) {
        (Status::Failed, Some(e)) => format!(
            "the rollback due at {} was tried at {} and failed: {e}; the rules applied at {} may \
             still be in place, wholly or in part: run `portwarden plan` to see",
            hms(r.deadline_ms),
            rfc3339(at),
            rfc3339(r.applied_ms)
        ),
        _ => format!(
            "the rollback already happened at {} (window {}s from the apply at {} ran out): \
             portwarden's rules from before the apply at {} are back ({} change(s)); apply again \
             to have the new ruleset",
            rfc3339(at),
            r.window_secs,
            rfc3339(r.applied_ms),
            rfc3339(r.first_applied_ms),
            o.map_or(0, |o| o.changes)
        ),
    }
}
