//! What one run measures (sizes, run counts) in its two modes, and the context every workload
//! shares: the settings, the portwarden binary, a scratch directory and the lab node's
//! inventory name.

use std::path::PathBuf;

/// The inventory's name for the lab node: the node `apply` writes its inventory for and the
/// agent of `agent` runs as (here, so both use it without importing each other).
pub const NODE: &str = "bench";

/// Sizes and run counts of one suite run.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `full` or `quick`.
    pub mode: &'static str,
    /// Runs of each portwarden measurement.
    pub runs_ours: usize,
    /// Runs of each peer measurement.
    pub runs_peer: usize,
    /// Port counts of the one-node scan (`1-N`); the largest is the full range.
    pub port_counts: Vec<u32>,
    /// Node counts of the multi-node scan (1,000 ports each); must include 10.
    pub node_counts: Vec<usize>,
    /// masscan rates (packets per second) of the full-range workload.
    pub masscan_rates: Vec<u32>,
    /// masscan rate of the port-count scaling series.
    pub masscan_scaling_rate: u32,
    /// `--min-rate` of the fast nmap peer (`-T5 --min-rate N`).
    pub nmap_min_rate: u32,
    /// Entry counts of the apply scaling series.
    pub apply_sizes: Vec<usize>,
    /// Entry counts that get a workload (table) of their own.
    pub apply_workloads: Vec<usize>,
    /// Rule counts at which one-`iptables`-call-per-rule is measured (larger sizes are
    /// extrapolated from these).
    pub per_rule_sizes: Vec<usize>,
    /// Entries of the no-op reconcile and of the agent's policy.
    pub steady_entries: usize,
    /// Refresh cycles (1 s each) of the agent's measurement window.
    pub agent_cycles: u32,
    /// Policies, entries per policy and inventory nodes of the load-and-compile workload.
    pub policy_shape: (usize, usize, usize),
    /// Runs of portwarden (each variant) and of each peer in the workloads under the kernel's
    /// ICMP rate limit, which take tens of seconds per run whoever scans.
    pub limited_runs: (usize, usize),
}

impl Settings {
    /// `make bench`: about 11 minutes on 2 cores (plus the release build), 5 of them in the
    /// workloads under the kernel's ICMP rate limit.
    pub fn full() -> Settings {
        Settings {
            mode: "full",
            runs_ours: 5,
            runs_peer: 3,
            port_counts: vec![1_000, 4_000, 16_000, 65_535],
            node_counts: vec![1, 3, 10, 30, 100],
            masscan_rates: vec![10_000, 100_000, 250_000],
            masscan_scaling_rate: 100_000,
            nmap_min_rate: 20_000,
            apply_sizes: vec![1_000, 3_000, 10_000, 30_000, 50_000],
            apply_workloads: vec![1_000, 10_000, 50_000],
            per_rule_sizes: vec![250, 500, 1_000],
            steady_entries: 10_000,
            agent_cycles: 20,
            policy_shape: (100, 100, 1_000),
            limited_runs: (3, 3),
        }
    }

    /// `make bench QUICK=1`: every workload, fewer runs and sizes; about four minutes, most of
    /// it the single runs of the workloads under the kernel's ICMP rate limit.
    pub fn quick() -> Settings {
        Settings {
            mode: "quick",
            runs_ours: 3,
            runs_peer: 1,
            port_counts: vec![1_000, 65_535],
            node_counts: vec![1, 10],
            masscan_rates: vec![100_000],
            masscan_scaling_rate: 100_000,
            nmap_min_rate: 20_000,
            apply_sizes: vec![1_000, 10_000, 50_000],
            apply_workloads: vec![1_000, 10_000, 50_000],
            per_rule_sizes: vec![100, 250],
            steady_entries: 10_000,
            agent_cycles: 3,
            policy_shape: (100, 100, 1_000),
            limited_runs: (1, 1),
        }
    }
}

/// What every workload gets.
pub struct Ctx {
    /// Sizes and runs.
    pub settings: Settings,
    /// The portwarden binary measured (the release build).
    pub bin: PathBuf,
    /// Scratch directory for policies and inventories (removed at the end).
    pub work: PathBuf,
    /// CPUs of this machine.
    pub cores: usize,
    /// 1-minute load average when the run started.
    pub load: f64,
}

impl Ctx {
    /// The binary as a string for command lines.
    pub fn bin(&self) -> String {
        self.bin.to_string_lossy().into_owned()
    }
}

/// Progress on standard error, so a long run shows where it is.
pub fn progress(msg: &str) {
    eprintln!("[bench] {msg}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_modes_cover_every_workload() {
        for s in [Settings::full(), Settings::quick()] {
            assert_eq!(s.port_counts.last(), Some(&65_535), "{}", s.mode);
            assert!(s.node_counts.contains(&10), "{}", s.mode);
            for w in [1_000, 10_000, 50_000] {
                assert!(s.apply_workloads.contains(&w) && s.apply_sizes.contains(&w));
            }
            assert!(s.apply_sizes.contains(&s.steady_entries));
            assert!(s.runs_ours >= 3 && s.runs_peer >= 1);
            assert!(!s.per_rule_sizes.is_empty() && !s.masscan_rates.is_empty());
            assert!(s.limited_runs.0 >= 1 && s.limited_runs.1 >= 1, "{}", s.mode);
        }
        let (q, f) = (Settings::quick(), Settings::full());
        assert!(q.runs_ours <= f.runs_ours && q.port_counts.len() < f.port_counts.len());
        assert!(q.limited_runs.0 <= 2 && q.limited_runs.1 <= 2);
    }
}
