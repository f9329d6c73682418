//! Verdicts: does an observed nmap state satisfy an intended state?
//!
//! The table follows DESIGN.md's "Intent → rule → what a scanner sees". UDP has one genuinely
//! undecidable case: an `open` UDP port whose service stays silent looks `open|filtered`, the
//! same as a dropped probe, so it is `indeterminate`, never `in_sync`.

use portwarden_policy::{Protocol, State};
use portwarden_scan::PortState;
use serde::{Deserialize, Serialize};

/// The outcome of comparing one port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The port looks as intended.
    InSync,
    /// The port does not look as intended.
    Drift,
    /// The scan cannot tell (a silent UDP service, an ACK-scan state).
    Indeterminate,
}

impl Verdict {
    /// `in_sync`, `drift` or `indeterminate`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::InSync => "in_sync",
            Verdict::Drift => "drift",
            Verdict::Indeterminate => "indeterminate",
        }
    }
}

/// Judges one port: the verdict and, when it is not in sync, what the outside view alone says
/// about why (the agent's inside view refines it; see `causes`).
pub fn judge(
    protocol: Protocol,
    expected: State,
    observed: PortState,
) -> (Verdict, Option<&'static str>) {
    use PortState as O;
    use State as E;
    use Verdict::*;
    match (protocol, expected, observed) {
        (_, E::Open, O::Open)
        | (_, E::Closed, O::Closed)
        | (Protocol::Tcp, E::Filtered, O::Filtered) => (InSync, None),
        (Protocol::Udp, E::Filtered, O::OpenFiltered | O::Filtered) => (InSync, None),
        (Protocol::Udp, E::Open, O::OpenFiltered) => (
            Indeterminate,
            Some("no UDP answer: the service may be silent, or the probe is dropped"),
        ),
        (_, E::Open, O::Closed) => (Drift, Some("nothing is listening")),
        (_, E::Open, O::Filtered) => (
            Drift,
            Some("probes are dropped before they reach a listener"),
        ),
        (_, E::Closed | E::Filtered, O::Open) => {
            (Drift, Some("a service answers: the port is reachable"))
        }
        (Protocol::Tcp, E::Closed, O::Filtered) => (
            Drift,
            Some("probes are dropped instead of answered with a reset"),
        ),
        (Protocol::Udp, E::Closed, O::OpenFiltered | O::Filtered) => (
            Drift,
            Some("no port-unreachable comes back: probes are dropped"),
        ),
        (_, E::Filtered, O::Closed) => (
            Drift,
            Some("the port answers with a reset or port-unreachable instead of silence"),
        ),
        (Protocol::Tcp, E::Filtered, O::OpenFiltered) => (InSync, None),
        (_, _, O::Unfiltered | O::ClosedFiltered | O::OpenFiltered) => (
            Indeterminate,
            Some("this probe type cannot tell the intended state apart"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn design_table() {
        let t = Protocol::Tcp;
        let u = Protocol::Udp;
        assert_eq!(judge(t, State::Open, PortState::Open).0, Verdict::InSync);
        assert_eq!(
            judge(t, State::Open, PortState::Closed),
            (Verdict::Drift, Some("nothing is listening"))
        );
        assert_eq!(
            judge(t, State::Closed, PortState::Closed).0,
            Verdict::InSync
        );
        assert_eq!(
            judge(t, State::Closed, PortState::Filtered).0,
            Verdict::Drift
        );
        assert_eq!(
            judge(t, State::Filtered, PortState::Filtered).0,
            Verdict::InSync
        );
        assert_eq!(
            judge(t, State::Filtered, PortState::Closed).0,
            Verdict::Drift
        );
        assert_eq!(judge(u, State::Open, PortState::Open).0, Verdict::InSync);
        assert_eq!(
            judge(u, State::Open, PortState::OpenFiltered).0,
            Verdict::Indeterminate
        );
        assert_eq!(
            judge(u, State::Closed, PortState::Closed).0,
            Verdict::InSync
        );
        assert_eq!(
            judge(u, State::Closed, PortState::OpenFiltered).0,
            Verdict::Drift
        );
        assert_eq!(
            judge(u, State::Filtered, PortState::OpenFiltered).0,
            Verdict::InSync
        );
        assert_eq!(
            judge(u, State::Filtered, PortState::Closed).0,
            Verdict::Drift
        );
        assert_eq!(
            judge(t, State::Open, PortState::Unfiltered).0,
            Verdict::Indeterminate
        );
    }
}
