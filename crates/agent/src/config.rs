//! How an agent runs: the settings both agents share, and where their policies come from
//! ([`Source`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use portwarden_netfilter::{Failsafe, FailsafePort, Options as NetfilterOptions};
use portwarden_policy::{PortRange, Protocol};

/// Where an agent's policies come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A policy directory (a git checkout) and an inventory: the standalone agent
    /// ([`crate::standalone`]).
    Files(Files),
    /// `PortPolicy` and `Node` objects of a cluster: `portwarden-kube`'s agent.
    Kube {
        /// How many peers each node scans (each ready node is scanned by this many others).
        peers_per_node: usize,
    },
}

/// The standalone agent's policy files, and how they are watched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Files {
    /// Directory of policy documents (read recursively).
    pub policy_dir: PathBuf,
    /// Inventory file.
    pub inventory: PathBuf,
    /// How often the policy directory is checked for changes.
    pub poll: Duration,
    /// Whether a policy directory without any PortPolicy document is an intent (remove every
    /// rule) rather than invalid input (keep the last good state).
    pub allow_empty_policy: bool,
}

/// How the agent runs.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Where the policies come from.
    pub source: Source,
    /// This node's name (in the inventory, or its Node's).
    pub node: String,
    /// How often netfilter is re-read and repaired.
    pub refresh: Duration,
    /// How often peers are scanned; `None` disables peer scans.
    pub scan_interval: Option<Duration>,
    /// Upper bound on the probes per second of peer scans; `None` leaves the rate to the
    /// scanner's adaptive timing alone.
    pub scan_rate: Option<u32>,
    /// How long each peer scan may spend confirming silent ports of peers that rate-limit
    /// their ICMP errors; `None` = [`AgentConfig::confirm_budget`]'s default. It also sizes the
    /// share of UDP ports each scan re-checks ([`portwarden_reconcile::ledger`]).
    pub confirm_budget: Option<Duration>,
    /// Address of the HTTP endpoint (metrics, health, inside view, report).
    pub listen: SocketAddr,
    /// Failsafe ports; the agent adds its own HTTP port so no policy can cut it off.
    pub failsafe: Failsafe,
    /// Netfilter backend and families.
    pub netfilter: NetfilterOptions,
}

/// The longest default confirmation budget of a peer scan ([`AgentConfig::confirm_budget`]).
pub const MAX_DEFAULT_CONFIRM_BUDGET: Duration = Duration::from_secs(30);

impl AgentConfig {
    /// The confirmation budget of each peer scan: the configured one, else half the scan
    /// interval and at most [`MAX_DEFAULT_CONFIRM_BUDGET`] (16 UDP ports of an IPv4 peer at
    /// Linux's default limit per 10 s of it; 36 in 30 s), so a scan leaves most of its interval
    /// free and a peer that rate-limits is never asked for more than it answers in that time.
    pub fn confirm_budget(&self) -> Duration {
        self.confirm_budget.unwrap_or_else(|| {
            self.scan_interval
                .map_or(MAX_DEFAULT_CONFIRM_BUDGET, |i| i / 2)
                .min(MAX_DEFAULT_CONFIRM_BUDGET)
        })
    }

    /// The failsafe list including the agent's own port.
    pub fn effective_failsafe(&self) -> Failsafe {
        let mut ports = self.failsafe.ports().to_vec();
        ports.push(FailsafePort {
            protocol: Protocol::Tcp,
            ports: PortRange::single(self.listen.port()),
        });
        Failsafe::new(ports)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A configuration over `policy_dir` and `inventory` for node `n`, as the tests use it
    /// (nothing runs; no netfilter is touched).
    pub(crate) fn config(policy_dir: PathBuf, inventory: PathBuf, listen: &str) -> AgentConfig {
        AgentConfig {
            source: Source::Files(Files {
                policy_dir,
                inventory,
                poll: Duration::from_millis(200),
                allow_empty_policy: false,
            }),
            node: "n".into(),
            refresh: Duration::from_secs(10),
            scan_interval: None,
            scan_rate: None,
            confirm_budget: None,
            listen: listen.parse().unwrap(),
            failsafe: Failsafe::none(),
            netfilter: NetfilterOptions::default(),
        }
    }

    #[test]
    fn the_default_confirmation_budget_fits_the_interval() {
        let mut cfg = config("p".into(), "i".into(), "0.0.0.0:9750");
        let with = |interval: Option<u64>, budget: Option<u64>| AgentConfig {
            scan_interval: interval.map(Duration::from_secs),
            confirm_budget: budget.map(Duration::from_secs),
            ..cfg.clone()
        };
        assert_eq!(
            with(Some(60), None).confirm_budget(),
            Duration::from_secs(30)
        );
        assert_eq!(
            with(Some(600), None).confirm_budget(),
            Duration::from_secs(30)
        );
        assert_eq!(
            with(Some(10), None).confirm_budget(),
            Duration::from_secs(5)
        );
        assert_eq!(with(None, None).confirm_budget(), Duration::from_secs(30));
        assert_eq!(
            with(Some(10), Some(45)).confirm_budget(),
            Duration::from_secs(45)
        );
        cfg.confirm_budget = Some(Duration::ZERO);
        assert_eq!(cfg.confirm_budget(), Duration::ZERO);
    }

    #[test]
    fn failsafe_includes_agent_port() {
        let cfg = config("p".into(), "i".into(), "0.0.0.0:9750");
        let f = cfg.effective_failsafe();
        assert!(f.ranges(Protocol::Tcp).any(|r| r.contains(9750)));
    }
}
