//! `portwarden apply`: make this network namespace's netfilter say what the policies say for
//! the node — one `iptables-restore --noflush` transaction per family, read back and confirmed;
//! nothing written when already converged. See `portwarden_netfilter::Netfilter::apply` for the
//! contract (atomic per family, foreign rules untouched) and `Netfilter::converge` for the lock
//! that makes it the namespace's only writer while it runs. With `--confirm-within`, a
//! rollback is armed before the write ([`crate::cmd::rollback`]).

use std::process::ExitCode;

use serde::Serialize;

use crate::Outcome;
use crate::args::Format;
use crate::cmd::plan::{
    IntentArgs, Resolved, expiring, explain_lock_error, forwarded, print_expiring, print_findings,
    print_forwarded, warn_if_an_agent_runs,
};
use crate::cmd::rollback::{self, Armed};

/// Arguments of `apply`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example (as root, in the namespace to manage; in a lab: ip netns exec NS portwarden apply ...):\n  portwarden apply -f examples/ --inventory examples/inventory.yaml --node web-1\n  portwarden apply -f examples/ --inventory examples/inventory.yaml --node web-1 --confirm-within 2m\n  portwarden confirm    # within the 2 minutes, to keep the new rules\n\nExit codes: 0 applied (or nothing to do), 1 error (nothing changed in the failing family; also when another writer of this namespace held its lock for all of --wait)."
)]
pub struct Args {
    #[command(flatten)]
    intent: IntentArgs,
    /// Roll back automatically: unless `portwarden confirm` runs within DURATION (`90s`, `5m`,
    /// `1h30m`; a bare number is seconds; 1s to 24h), a watcher process of its own restores
    /// portwarden's rules from before this apply, both families, one transaction each. It
    /// survives this terminal and this process (SIGHUP, SIGKILL), not a reboot. While one is
    /// pending, another `--confirm-within` apply replaces its window and keeps its rules from
    /// before the first unconfirmed apply.
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true,
          value_parser = crate::args::parse_window)]
    confirm_within: Option<u64>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    output: Format,
}

#[derive(Serialize)]
struct ApplyOutput<'a> {
    node: &'a str,
    backend: &'a str,
    #[serde(flatten)]
    applied: &'a portwarden_netfilter::Applied,
    conflicts: &'a [portwarden_netfilter::Conflict],
    shadowing: &'a [portwarden_netfilter::Shadowing],
    lookalikes: &'a [portwarden_netfilter::Lookalike],
    kept: &'a [portwarden_netfilter::Kept],
    /// Managed ports the nat table forwards to a container or pod (enforced on the forward
    /// path).
    forwarded: &'a [portwarden_netfilter::forwarding::Managed],
    /// Entries whose expiry falls before the next refresh.
    expiring: &'a [crate::cmd::plan::Expiring],
    foreign_tables: &'a [portwarden_netfilter::ForeignFinding],
    foreign_tables_unread: &'a Option<String>,
    mixed_backends: &'a Option<portwarden_netfilter::MixedBackends>,
    /// What a scanner sees change, as in `plan -o json`.
    exposure: &'a Option<Vec<portwarden_netfilter::ExposureChange>>,
    /// With `--confirm-within`: the armed rollback.
    #[serde(skip_serializing_if = "Option::is_none")]
    rollback: Option<rollback::RollbackJson>,
}

/// Where an apply or reset wrote: `backend nft (IPv4, IPv6)`, then
/// `portwarden's rules removed from the legacy backend` for each other backend cleaned.
pub fn written(
    applied: &portwarden_netfilter::Applied,
    backend: portwarden_netfilter::Backend,
) -> String {
    let fams: Vec<String> = applied.families.iter().map(ToString::to_string).collect();
    let mut parts = Vec::new();
    if !fams.is_empty() {
        parts.push(format!("backend {backend} ({})", fams.join(", ")));
    }
    parts.extend(
        applied
            .other_backends
            .iter()
            .map(|b| format!("portwarden's rules removed from the {b} backend")),
    );
    parts.join("; ")
}

pub fn run(a: Args) -> Outcome {
    let mut r = a.intent.resolve()?;
    r.netfilter = r.netfilter.with_exposure(true);
    warn_if_an_agent_runs("apply");
    let (plan, armed, applied) = match a.confirm_within {
        None => {
            rollback::warn_if_pending("apply");
            // Read, plan, write and read back as the namespace's one writer.
            let (plan, applied) = r
                .netfilter
                .converge(&r.intent, &r.failsafe)
                .map_err(explain_lock_error)?;
            (plan, None, applied)
        }
        Some(window_secs) => converge_armed(&r, window_secs, a.intent.netfilter.wait)?,
    };
    let forwarded = forwarded(&r.netfilter, &r.intent);
    let expiring = expiring(&r.intent, r.now, crate::cmd::agent::DEFAULT_REFRESH_SECS);
    match a.output {
        Format::Json => {
            let out = ApplyOutput {
                node: &r.node,
                backend: r.netfilter.backend().as_str(),
                applied: &applied,
                conflicts: &plan.conflicts,
                shadowing: &plan.shadowing,
                lookalikes: &plan.lookalikes,
                kept: &plan.kept,
                forwarded: &forwarded,
                expiring: &expiring,
                foreign_tables: &plan.foreign_tables,
                foreign_tables_unread: &plan.foreign_tables_unread,
                mixed_backends: &plan.mixed_backends,
                exposure: &plan.exposure,
                rollback: armed.as_ref().map(Armed::json),
            };
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Format::Table => {
            print_findings(&plan, true);
            print_forwarded(&forwarded);
            print_expiring(&expiring);
            println!("{}", summary(&r, &applied, armed.as_ref()));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `apply --confirm-within`: as the namespace's one writer, arms the rollback between the
/// plan and the write (nothing is written when that fails), then writes. A failed write
/// leaves the rollback armed (it restores the rules from before, whatever the write left)
/// and says so.
fn converge_armed(
    r: &Resolved,
    window_secs: u64,
    lock_wait_secs: u32,
) -> anyhow::Result<(
    portwarden_netfilter::Plan,
    Option<Armed>,
    portwarden_netfilter::Applied,
)> {
    let req = rollback::Request {
        window_secs,
        node: &r.node,
        backend: r.netfilter.backend(),
        lock_wait_secs,
    };
    let (plan, armed, applied) = r.netfilter.converge_gated(&r.intent, &r.failsafe, |plan| {
        let armed = rollback::arm(plan, &req)?;
        if let Some(a) = &armed {
            eprintln!("rollback armed before writing: this apply {}", a.sentence());
        }
        Ok::<_, anyhow::Error>(armed)
    })?;
    let applied = applied
        .map_err(explain_lock_error)
        .map_err(|e| match &armed {
            Some(a) => anyhow::anyhow!(
                "{e:#}; the rollback stays armed: this apply {}",
                a.sentence()
            ),
            None => e,
        })?;
    Ok((plan, armed, applied))
}

/// The table output's last line: what was written, and the rollback when one is armed.
fn summary(r: &Resolved, applied: &portwarden_netfilter::Applied, armed: Option<&Armed>) -> String {
    let mut line = if applied.transactions == 0 {
        "no changes: netfilter already says what the policies say (nothing written)".to_string()
    } else {
        format!(
            "applied {} change(s) for node {} in {} transaction(s): {}; read back and confirmed",
            applied.changes,
            r.node,
            applied.transactions,
            written(applied, r.netfilter.backend())
        )
    };
    if let Some(a) = armed {
        line.push_str("; ");
        line.push_str(&a.sentence());
    }
    line
}
