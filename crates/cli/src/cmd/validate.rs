//! `portwarden validate PATH...`: check documents, print every problem, exit 1 on any. Entries
//! that try to block a failsafe port are valid but reported as conflicts (on standard error).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use portwarden_netfilter::{DEFAULT_FAILSAFE, Failsafe};
use portwarden_policy::validate::failsafe_conflicts;

use crate::Outcome;
use crate::args;

/// Arguments of `validate`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example:\n  portwarden validate examples/ tests/fixtures/invalid/bad-state.yaml"
)]
pub struct Args {
    /// Files or directories of YAML documents (directories are read recursively).
    #[arg(value_name = "PATH", required = true)]
    paths: Vec<PathBuf>,
    /// Failsafe ports the agents use (`tcp:22,udp:68,...` or `none`): entries that would
    /// block one are reported as conflicts.
    #[arg(long, value_name = "LIST", default_value = DEFAULT_FAILSAFE)]
    failsafe: String,
}

pub fn run(a: Args) -> Outcome {
    let failsafe: Failsafe = a
        .failsafe
        .parse()
        .with_context(|| format!("invalid --failsafe \"{}\"", a.failsafe))?;
    let loaded = args::load(&a.paths)?;
    let policies = loaded.policies.policies().len();
    if policies == 0 && loaded.inventories == 0 {
        anyhow::bail!(
            "no PortPolicy or Inventory documents found in {} file(s) under the given paths",
            loaded.files
        );
    }
    let entries: usize = loaded
        .policies
        .policies()
        .iter()
        .map(|p| p.entries.len())
        .sum();
    println!(
        "ok: {policies} {} ({entries} entries), {} {} ({} nodes) in {} {}",
        if policies == 1 { "policy" } else { "policies" },
        loaded.inventories,
        if loaded.inventories == 1 {
            "inventory"
        } else {
            "inventories"
        },
        loaded.nodes.len(),
        loaded.files,
        if loaded.files == 1 { "file" } else { "files" },
    );
    let ranges: Vec<_> = failsafe
        .ports()
        .iter()
        .map(|f| (f.protocol, f.ports))
        .collect();
    for c in failsafe_conflicts(loaded.policies.policies(), &ranges) {
        eprintln!("conflict: {c}");
    }
    Ok(ExitCode::SUCCESS)
}
