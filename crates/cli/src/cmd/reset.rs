//! `portwarden reset`: remove every chain and jump of portwarden's from this network
//! namespace's netfilter (IPv4 and IPv6); everything else stays byte-identical.

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
    let applied = nf.reset().map_err(crate::cmd::plan::explain_lock_error)?;
    if applied.transactions == 0 {
        println!("nothing to remove: no portwarden chains or jumps (nothing written)");
    } else {
        let fams: Vec<String> = applied.families.iter().map(ToString::to_string).collect();
        println!(
            "removed {} portwarden rule(s) and chain(s) ({}), backend {}; everything else untouched",
            applied.changes,
            fams.join(", "),
            nf.backend()
        );
    }
    Ok(ExitCode::SUCCESS)
}
