//! Verdicts: does an observed nmap state satisfy an intended state?
//!
//! The table follows DESIGN.md's "Intent → rule → what a scanner sees". UDP has one genuinely
//! undecidable case: an `open` UDP port whose service stays silent looks `open|filtered`, the
//! same as a dropped probe, so it is `indeterminate`, never `in_sync`.
//!
//! A target that rate-limits its ICMP errors (every Linux host does, about one per second per
//! peer after a burst of six) adds another: a port the scan could not confirm in its budget
//! ([`Reason::RateLimited`](portwarden_scan::Reason::RateLimited)) may be silent, or may have
//! answered with an error the target withheld. [`judge_unconfirmed`] keeps a verdict only when
//! it holds whichever it was, so the rate limit never makes a drift.

use portwarden_policy::{Protocol, State};
use portwarden_scan::{PortState, ScanKind};
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

/// Judges a port whose silence is not confirmed: the target was rate-limiting its ICMP errors
/// and the scan's budget ran out ([`Reason::RateLimited`](portwarden_scan::Reason::RateLimited)).
///
/// The port may be as silent as it looks (`observed`), or it may have answered with an ICMP
/// error the target withheld: to a UDP or connect probe that reads `closed` (port
/// unreachable) or `filtered` (any other code), to a SYN or ACK probe `filtered` whatever the
/// code. The verdict of `observed` stands only when every reading gives it (an `open` TCP
/// port is drift either way: it would have answered with a SYN/ACK, which no ICMP limit holds
/// back; so is a `closed` one under a SYN scan, whose reset is no ICMP error either);
/// otherwise the port is `indeterminate`.
pub fn judge_unconfirmed(
    kind: ScanKind,
    expected: State,
    observed: PortState,
) -> (Verdict, Option<&'static str>) {
    let protocol = match kind {
        ScanKind::Udp => Protocol::Udp,
        ScanKind::Syn | ScanKind::Connect | ScanKind::Ack => Protocol::Tcp,
    };
    let withheld: &[PortState] = match kind {
        ScanKind::Udp | ScanKind::Connect => &[PortState::Closed, PortState::Filtered],
        ScanKind::Syn | ScanKind::Ack => &[PortState::Filtered],
    };
    let seen = judge(protocol, expected, observed);
    if withheld
        .iter()
        .all(|&w| judge(protocol, expected, w).0 == seen.0)
    {
        seen
    } else {
        (Verdict::Indeterminate, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Silence a rate limit may explain is never drift, and never in sync either, except where
    /// every reading agrees.
    #[test]
    fn unconfirmed_silence_is_drift_only_when_every_reading_drifts() {
        use ScanKind::{Connect, Syn, Udp};
        let cases = [
            (
                Udp,
                State::Closed,
                PortState::OpenFiltered,
                Verdict::Indeterminate,
            ),
            (
                Udp,
                State::Filtered,
                PortState::OpenFiltered,
                Verdict::Indeterminate,
            ),
            (
                Udp,
                State::Open,
                PortState::OpenFiltered,
                Verdict::Indeterminate,
            ),
            (
                Connect,
                State::Closed,
                PortState::Filtered,
                Verdict::Indeterminate,
            ),
            (
                Connect,
                State::Filtered,
                PortState::Filtered,
                Verdict::Indeterminate,
            ),
            // Whatever the withheld answer, an open TCP port would have sent a SYN/ACK.
            (Connect, State::Open, PortState::Filtered, Verdict::Drift),
            (Syn, State::Open, PortState::Filtered, Verdict::Drift),
            // A SYN probe reads any ICMP error as filtered, and a reset is not limited.
            (Syn, State::Closed, PortState::Filtered, Verdict::Drift),
            (Syn, State::Filtered, PortState::Filtered, Verdict::InSync),
        ];
        for (kind, expected, observed, verdict) in cases {
            assert_eq!(
                judge_unconfirmed(kind, expected, observed).0,
                verdict,
                "{kind:?} expected {expected}, observed {observed}"
            );
        }
        let (u, t) = (Protocol::Udp, Protocol::Tcp);
        // The plain table would have called the first and the fourth drift.
        assert_eq!(
            judge(u, State::Closed, PortState::OpenFiltered).0,
            Verdict::Drift
        );
        assert_eq!(
            judge(t, State::Closed, PortState::Filtered).0,
            Verdict::Drift
        );
    }

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
