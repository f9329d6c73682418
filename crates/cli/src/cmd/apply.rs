//! `portwarden apply`: make this network namespace's netfilter say what the policies say for
//! the node — one `iptables-restore --noflush` transaction per family, read back and confirmed;
//! nothing written when already converged. See `portwarden_netfilter::Netfilter::apply` for the
//! contract (atomic per family, foreign rules untouched) and `Netfilter::converge` for the lock
//! that makes it the namespace's only writer while it runs.

use std::process::ExitCode;

use serde::Serialize;

use crate::Outcome;
use crate::args::Format;
use crate::cmd::plan::{
    IntentArgs, expiring, explain_lock_error, forwarded, print_expiring, print_findings,
    print_forwarded, warn_if_an_agent_runs,
};

/// Arguments of `apply`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example (as root, in the namespace to manage; in a lab: ip netns exec NS portwarden apply ...):\n  portwarden apply -f examples/ --inventory examples/inventory.yaml --node web-1\n\nExit codes: 0 applied (or nothing to do), 1 error (nothing changed in the failing family; also when another writer of this namespace held its lock for all of --wait)."
)]
pub struct Args {
    #[command(flatten)]
    intent: IntentArgs,
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
    // Read, plan, write and read back as the namespace's one writer.
    let (plan, applied) = r
        .netfilter
        .converge(&r.intent, &r.failsafe)
        .map_err(explain_lock_error)?;
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
            };
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Format::Table => {
            print_findings(&plan, true);
            print_forwarded(&forwarded);
            print_expiring(&expiring);
            if applied.transactions == 0 {
                println!(
                    "no changes: netfilter already says what the policies say (nothing written)"
                );
            } else {
                println!(
                    "applied {} change(s) for node {} in {} transaction(s): {}; read back and confirmed",
                    applied.changes,
                    r.node,
                    applied.transactions,
                    written(&applied, r.netfilter.backend())
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
