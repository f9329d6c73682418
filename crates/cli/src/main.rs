//! The `portwarden` binary: a thin layer of argument parsing and printing over the library
//! crates. One module per command under [`cmd`]; shared argument groups in [`args`]; the
//! Linux capabilities the commands check before they start in [`caps`]; a report file written
//! whole after a command's work in [`report_file`].
//!
//! Exit codes (the contract in docs/cli.md): 0 success / in sync / no changes, 1 error,
//! 2 changes pending (`plan`) or drift (`verify`). Usage errors exit 1 too, not clap's default
//! 2, so that 2 always means "drift or changes".

mod args;
mod caps;
mod cmd;
mod report_file;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

const EXAMPLES: &str = "\
Examples:
  portwarden validate examples/
  portwarden explain -f examples/quarantine --inventory examples/inventory.yaml \\
      --node web-1 --port 80/tcp --from 172.16.7.80

Exit codes: 0 success, 1 error, 2 drift (verify) or changes pending (plan).";

/// Declarative port exposure: make each node's iptables say which ports look open, closed or
/// filtered to whom, then scan from outside and report drift.
#[derive(Parser)]
#[command(name = "portwarden", version, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check policy and inventory files; print every problem with file:line:column.
    Validate(cmd::validate::Args),
    /// Show which policy entry decides a port for a source on a node, and why.
    Explain(cmd::explain::Args),
    /// Scan ports the way nmap does (SYN, connect, ACK, UDP) and print nmap's states.
    Scan(cmd::scan::Args),
    /// Scan every inventory node and report drift from intent, with causes (exit 2 on drift).
    Verify(cmd::verify::Args),
    /// Run the standalone agent: apply on change, repair drift, scan peers, serve metrics.
    Agent(cmd::agent::Args),
    /// Show what `apply` would change in this namespace's netfilter (exit 2 when changes pend).
    Plan(cmd::plan::Args),
    /// Per entry of this node's policies: rules in place, packets and bytes matched, expiry, shadowing.
    Status(cmd::status::Args),
    /// Make this namespace's netfilter say what the policies say: one transaction per family.
    Apply(cmd::apply::Args),
    /// Keep the ruleset of an `apply --confirm-within`: cancel its pending rollback.
    Confirm(cmd::confirm::Args),
    /// Remove every chain and jump of portwarden's; leave everything else as it is.
    Reset(cmd::reset::Args),
    /// Kubernetes: aggregate PortReports into PortPolicy status, Events and metrics (leader-elected).
    Controller(cmd::controller::Args),
    /// Print the CustomResourceDefinitions (PortPolicy, PortReport) as YAML.
    Crd(cmd::crd::Args),
    /// Internal: the watcher an `apply --confirm-within` starts, which rolls back at the
    /// deadline unless confirmed.
    #[command(name = "__rollback-watch", hide = true)]
    RollbackWatch(cmd::rollback::WatchArgs),
}

/// What a command reports back to `main`: the process exit code.
pub type Outcome = anyhow::Result<ExitCode>;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            // Printing can only fail on a closed stdout/stderr, where there is nobody to tell.
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if matches!(
        cli.command,
        Command::Plan(_) | Command::Status(_) | Command::Apply(_) | Command::Reset(_)
    ) {
        // One-shot netfilter commands say on stderr what the library warns about (a wait for
        // the xtables lock held by another process); RUST_LOG=info shows more.
        cmd::agent::init_logging_default(cmd::agent::LogFormat::Text, "warn");
    }
    let result = match cli.command {
        Command::Validate(a) => cmd::validate::run(a),
        Command::Explain(a) => cmd::explain::run(a),
        Command::Scan(a) => cmd::scan::run(a),
        Command::Verify(a) => cmd::verify::run(a),
        Command::Agent(a) => cmd::agent::run(a),
        Command::Plan(a) => cmd::plan::run(a),
        Command::Status(a) => cmd::status::run(a),
        Command::Apply(a) => cmd::apply::run(a),
        Command::Reset(a) => cmd::reset::run(a),
        Command::Controller(a) => cmd::controller::run(a),
        Command::Crd(a) => cmd::crd::run(a),
        Command::Confirm(a) => cmd::confirm::run(a),
        Command::RollbackWatch(a) => cmd::rollback::watch(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
