//! portwarden's benchmark suite (`make bench`): one driver that builds namespace labs, runs
//! portwarden's release binary and its peers (nmap, masscan, iptables, iptables-restore) side by
//! side as subprocesses inside them, and writes `docs/benchmarks.md` with medians, ratios,
//! agreement checks, scaling exponents and PNG charts.
//!
//! A key design decision is the split between measuring and reporting: the workload modules
//! only run programs and collect numbers into a [`report::Report`]; everything that turns
//! numbers into text or pictures — medians, the log-log fit, the knee, the Markdown, the charts
//! — is pure and unit-tested, so the report's format is deterministic and only its numbers
//! change between runs.
//!
//! # Layout
//!
//! * [`suite`] — the two modes' sizes and run counts, the shared context, the node's name.
//! * [`process`] — spawn a program inside a namespace and measure wall, CPU and peak memory.
//! * [`scan`] — full-range, port-count, node-count and UDP scans against nmap and masscan.
//! * [`apply`] — apply 1k/10k/50k entries and the no-op reconcile against iptables.
//! * [`status`] — `portwarden status` on 10k entries against `iptables-save -c`.
//! * [`agent`] — the agent's steady-state CPU and memory.
//! * [`policy`] — policy load and compile at 100 x 100 x 1,000.
//! * [`html`] — the HTML report of 100 nodes x 100 ports, in process and in Chromium.
//! * [`parse`] — nmap XML, masscan lists, portwarden JSON, `/proc` and metrics text.
//! * [`stats`] — median, power-law fit, local exponents.
//! * [`analysis`] — the "where it stops scaling and why" sentences.
//! * [`report`] — the result model and its Markdown.
//! * [`plot`] — the PNG charts (embedded font, no system font needed).
//! * [`machine`] — what the report says about the machine.
//! * [`clock`] — UTC time stamps without a time-zone database.

pub mod agent;
pub mod analysis;
pub mod apply;
pub mod clock;
pub mod html;
pub mod machine;
pub mod parse;
pub mod plot;
pub mod policy;
pub mod process;
pub mod report;
pub mod scan;
pub mod stats;
pub mod status;
pub mod suite;

/// What one workload module contributes to the report.
#[derive(Debug, Default)]
pub struct Part {
    /// Workload tables.
    pub workloads: Vec<report::Workload>,
    /// Scaling studies.
    pub scaling: Vec<report::Scaling>,
}
