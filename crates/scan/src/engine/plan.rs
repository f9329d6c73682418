//! What a scan asks of an engine ([`Plan`]) and what the engine gives back ([`Outcome`]).

use std::net::IpAddr;
use std::time::Duration;

use crate::ProgressFn;
use crate::model::{PortState, Reason, ScanKind, ScanStats};
use crate::probe::Identity;
use crate::timing::Timing;

/// Everything the engine needs to run one scan.
pub(crate) struct Plan {
    pub kind: ScanKind,
    pub targets: Vec<IpAddr>,
    pub sources: Vec<IpAddr>,
    pub ports: Vec<u16>,
    pub timing: Timing,
    pub id: Identity,
    pub progress: Option<ProgressFn>,
    /// More source addresses for confirming silent ports of rate-limited targets.
    pub extra_sources: Vec<IpAddr>,
    /// Time allowed for that confirmation; `None` = unbounded.
    pub confirm_budget: Option<Duration>,
}

/// Results in index order, plus counters.
#[derive(Default)]
pub(crate) struct Outcome {
    pub results: Vec<(PortState, Reason)>,
    /// Per target, what was learned of its ICMP rate limit (`None`: not limited).
    pub rate_limits: Vec<Option<crate::RateLimit>>,
    pub stats: ScanStats,
}
