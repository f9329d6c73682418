//! `portwarden reset`: remove every chain and jump of portwarden's from this network
//! namespace's netfilter (IPv4 and IPv6, both iptables backends); everything else stays
//! byte-identical, look-alikes included. A chain of portwarden's that a foreign rule jumps to
//! is kept, emptied, and reported.

use std::process::ExitCode;

use crate::Outcome;
use crate::cmd::plan::NetfilterArgs;

/// Arguments of `reset`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example (as root, in the namespace to clean; in a lab: ip netns exec NS portwarden reset):\n  portwarden reset --backend auto"
)]
pub struct Args {
    #[command(flatten)]
    netfilter: NetfilterArgs,
}

pub fn run(a: Args) -> Outcome {
    let nf = a.netfilter.netfilter()?;
    crate::cmd::plan::warn_if_an_agent_runs("reset");
    crate::cmd::rollback::warn_if_pending("reset");
    let (plan, applied) = nf.reset().map_err(crate::cmd::plan::explain_lock_error)?;
    crate::cmd::plan::print_findings(&plan, false);
    if applied.transactions == 0 && !plan.kept.is_empty() {
        println!(
            "nothing to remove but the emptied chain(s) kept above for foreign rules (nothing written)"
        );
    } else if applied.transactions == 0 {
        println!("nothing to remove: no portwarden chains or jumps (nothing written)");
    } else {
        println!(
            "removed {} portwarden rule(s) and chain(s): {}; everything else untouched",
            applied.changes,
            crate::cmd::apply::written(&applied, nf.backend())
        );
    }
    Ok(ExitCode::SUCCESS)
}
