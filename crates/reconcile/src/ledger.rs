//! The agent's memory of its peers' UDP ports: which of them each peer scan re-checks (a
//! rotating share, as many as the peer can answer), and the last confirmed observation of
//! every one, with its time, that the peer report is made from.
//!
//! Why: a closed UDP port answers with an ICMP port-unreachable, and Linux sends those to
//! any one peer at about one per second after a burst of six (`net.ipv4.icmp_ratelimit`;
//! IPv6 about ten a second on current kernels). Re-probing forty managed UDP ports of a peer every
//! interval would take 35 s of confirmation each time, or leave most of them unconfirmed and
//! so `indeterminate`. Instead each scan probes a share sized to what the peer answered last
//! time within the confirmation budget, the least recently probed ports first, and every port
//! is reported from its last confirmed observation, which says when it was made.
//!
//! # Guarantees
//!
//! * A share is never larger than what the last measured rate limit lets the peer answer in
//!   the budget ([`capacity`]): `burst + budget / interval × sources` ports, at least one.
//!   With no limit measured (a peer not seen limiting, or never scanned) every managed port is
//!   in the share; the scan's confirmation budget still bounds its retries.
//! * Rotation: the share is the least recently probed ports (never probed first; among ports
//!   probed as long ago, unconfirmed ones first), so each of `n` managed ports is probed at
//!   least once every `ceil(n / share)` scans.
//! * Only a confirmed observation (any reason but
//!   [`Reason::RateLimited`](portwarden_scan::Reason::RateLimited)) replaces the last
//!   confirmed one; an unconfirmed probe leaves the earlier confirmation in place.
//! * A measured limit is kept until a scan measures it again, or until a scan gets more ICMP
//!   answers than the limit's burst without being limited (the limit was lifted): a share
//!   small enough to fit in the burst shows no limit, and must not make the next share
//!   "everything".

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use portwarden_scan::{HostReport, PortResult, PortState, RateLimit, Reason};

/// The last confirmed observation of one UDP port of one peer address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Confirmed {
    /// What the scan saw.
    pub state: PortState,
    /// Why.
    pub reason: Reason,
    /// When the scan that confirmed it finished.
    pub at: SystemTime,
}

/// What is remembered of one peer address.
#[derive(Clone, Debug, Default)]
struct Peer {
    /// The last confirmed observation of each port.
    confirmed: BTreeMap<u16, Confirmed>,
    /// The round in which each port was last probed, confirmed or not.
    probed: BTreeMap<u16, u64>,
    /// The peer's ICMP rate limit as last measured.
    rate_limit: Option<RateLimit>,
}

/// The agent's memory of its peers' UDP ports, across peer scans.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    peers: BTreeMap<IpAddr, Peer>,
    /// Peer scans begun ([`Ledger::begin_round`]).
    round: u64,
}

/// How many ports a peer can answer in `budget`, from its last measured rate limit: its
/// burst plus one answer per measured interval for each source address, at least 1. `None`
/// when no limit was measured: then every port can be probed.
pub fn capacity(rate_limit: Option<&RateLimit>, budget: Option<Duration>) -> Option<usize> {
    let (rl, budget) = (rate_limit?, budget?);
    let ms = u64::try_from(budget.as_millis()).unwrap_or(u64::MAX);
    // Limited, but no answer after the burst was timed (interval 0): count on the burst alone.
    let refill = ms
        .saturating_mul(u64::from(rl.sources.max(1)))
        .checked_div(rl.interval_ms)
        .unwrap_or(0);
    let n = u64::from(rl.burst).saturating_add(refill).max(1);
    Some(usize::try_from(n).unwrap_or(usize::MAX))
}

/// Whether a reason is an ICMP error from the target (what its rate limit holds back).
fn icmp_answer(reason: Reason) -> bool {
    matches!(
        reason,
        Reason::NetUnreach
            | Reason::HostUnreach
            | Reason::ProtoUnreach
            | Reason::PortUnreach
            | Reason::NetProhibited
            | Reason::HostProhibited
            | Reason::AdminProhibited
            | Reason::TimeExceeded
            | Reason::NoRoute
            | Reason::BeyondScope
            | Reason::RejectRoute
            | Reason::DestUnreach
    )
}

impl Ledger {
    /// Starts a peer scan: the probes recorded from now on belong to a new round.
    pub fn begin_round(&mut self) {
        self.round += 1;
    }

    /// The UDP ports of `ports` (sorted, managed on every one of `addresses`) to probe in this
    /// round on all of `addresses` together: every one when no limit is known for any of
    /// them, else the least recently probed ones, as many as the most limited address can
    /// answer in `budget` ([`capacity`]). Sorted.
    pub fn share(&self, addresses: &[IpAddr], ports: &[u16], budget: Option<Duration>) -> Vec<u16> {
        let limit = addresses
            .iter()
            .filter_map(|a| capacity(self.peers.get(a)?.rate_limit.as_ref(), budget))
            .min();
        let Some(limit) = limit.filter(|&n| n < ports.len()) else {
            return ports.to_vec();
        };
        // A port's age is its oldest probe among the addresses (never probed: oldest of all);
        // among ports probed as long ago, the least recently confirmed (never: first) go first,
        // so ports a scan left unconfirmed come up before ones it confirmed.
        let oldest = |port: u16| {
            let probed = addresses
                .iter()
                .map(|a| self.peers.get(a).and_then(|p| p.probed.get(&port).copied()))
                .min()
                .flatten();
            let confirmed = addresses
                .iter()
                .map(|a| self.confirmed_at(*a, port))
                .min()
                .flatten();
            (probed, confirmed, port)
        };
        let mut by_age: Vec<(Option<u64>, Option<SystemTime>, u16)> =
            ports.iter().map(|&p| oldest(p)).collect();
        by_age.sort_unstable();
        let mut share: Vec<u16> = by_age.into_iter().take(limit).map(|(_, _, p)| p).collect();
        share.sort_unstable();
        share
    }

    /// Records what one UDP scan of `host.address` saw on the ports it probed, at `now`:
    /// each port counts as probed in this round; a confirmed observation replaces the last
    /// one; the rate limit is updated as the module documentation says. A host that could
    /// not be scanned (`error`) changes nothing.
    pub fn record(&mut self, host: &HostReport, now: SystemTime) {
        if host.error.is_some() {
            return;
        }
        let round = self.round;
        let peer = self.peers.entry(host.address).or_default();
        for p in &host.ports {
            peer.probed.insert(p.port, round);
            if p.reason != Reason::RateLimited {
                peer.confirmed.insert(
                    p.port,
                    Confirmed {
                        state: p.state,
                        reason: p.reason,
                        at: now,
                    },
                );
            }
        }
        match (&host.rate_limit, &peer.rate_limit) {
            (Some(measured), _) => peer.rate_limit = Some(measured.clone()),
            (None, Some(known)) => {
                let answers = host.ports.iter().filter(|p| icmp_answer(p.reason)).count();
                if answers > known.burst as usize {
                    peer.rate_limit = None;
                }
            }
            (None, None) => {}
        }
    }

    /// The UDP results of `fresh` (this round's scan of its address) completed from the
    /// ledger, for every port of `managed`: the last confirmed observation when there is one,
    /// else this round's unconfirmed result, else nothing (not probed yet). Call after
    /// [`Ledger::record`]. The rate limit is this round's, or the last measured one.
    pub fn merged(&self, fresh: &HostReport, managed: &[u16]) -> HostReport {
        let peer = self.peers.get(&fresh.address);
        let confirmed = |port: u16| peer.and_then(|p| p.confirmed.get(&port));
        let mut ports: Vec<PortResult> = managed
            .iter()
            .filter_map(|&port| match confirmed(port) {
                Some(c) => Some(PortResult {
                    port,
                    protocol: "udp",
                    state: c.state,
                    reason: c.reason,
                }),
                None => fresh.port(port).cloned(),
            })
            .collect();
        ports.sort_by_key(|p| p.port);
        ports.dedup_by_key(|p| p.port);
        HostReport {
            address: fresh.address,
            ports,
            error: fresh.error.clone(),
            rate_limit: fresh
                .rate_limit
                .clone()
                .or_else(|| peer.and_then(|p| p.rate_limit.clone())),
        }
    }

    /// When the observation of `port` on `address` that [`Ledger::merged`] reports was
    /// confirmed; `None` when none was.
    pub fn confirmed_at(&self, address: IpAddr, port: u16) -> Option<SystemTime> {
        Some(self.peers.get(&address)?.confirmed.get(&port)?.at)
    }

    /// The last measured rate limit of `address`.
    pub fn rate_limit(&self, address: IpAddr) -> Option<&RateLimit> {
        self.peers.get(&address)?.rate_limit.as_ref()
    }

    /// Forgets addresses and ports that are no longer managed: `managed` lists each peer
    /// address's managed UDP ports.
    pub fn retain(&mut self, managed: &BTreeMap<IpAddr, Vec<u16>>) {
        self.peers.retain(|address, peer| {
            let Some(ports) = managed.get(address) else {
                return false;
            };
            let keep = |port: &u16| ports.binary_search(port).is_ok();
            peer.confirmed.retain(|p, _| keep(p));
            peer.probed.retain(|p, _| keep(p));
            true
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "10.213.0.12";

    fn limit(burst: u32, interval_ms: u64, unconfirmed: u32) -> RateLimit {
        RateLimit {
            burst,
            interval_ms,
            sources: 1,
            unconfirmed,
            confirm_ms: 10_000,
            budget_ms: Some(10_000),
        }
    }

    fn result(port: u16, state: PortState, reason: Reason) -> PortResult {
        PortResult {
            port,
            protocol: "udp",
            state,
            reason,
        }
    }

    /// A scan of `ports` where the first `confirmed` are closed (port unreachable) and the
    /// rest silent and unconfirmed (rate-limited), with `rate_limit`.
    fn scan(ports: &[u16], confirmed: usize, rate_limit: Option<RateLimit>) -> HostReport {
        HostReport {
            address: A.parse().unwrap(),
            ports: ports
                .iter()
                .enumerate()
                .map(|(i, &p)| {
                    if i < confirmed {
                        result(p, PortState::Closed, Reason::PortUnreach)
                    } else {
                        result(p, PortState::OpenFiltered, Reason::RateLimited)
                    }
                })
                .collect(),
            error: None,
            rate_limit,
        }
    }

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn capacity_is_what_the_peer_answers_in_the_budget() {
        let budget = Some(Duration::from_secs(10));
        // IPv4 default: a burst of 6, then 1/s: 16 in 10 s.
        assert_eq!(capacity(Some(&limit(6, 1000, 0)), budget), Some(16));
        // IPv6 on a /64: 4/s.
        assert_eq!(capacity(Some(&limit(6, 250, 0)), budget), Some(46));
        // Two source addresses: each has its own budget at the peer.
        let two = RateLimit {
            sources: 2,
            ..limit(6, 1000, 0)
        };
        assert_eq!(capacity(Some(&two), budget), Some(26));
        // Refill not measured: the burst alone, and never nothing.
        assert_eq!(capacity(Some(&limit(6, 0, 0)), budget), Some(6));
        assert_eq!(capacity(Some(&limit(0, 0, 0)), budget), Some(1));
        // No limit known, or no budget: no bound from here.
        assert_eq!(capacity(None, budget), None);
        assert_eq!(capacity(Some(&limit(6, 1000, 0)), None), None);
    }

    /// 30 managed ports on a peer that answers 1/s after a burst of 6, a 4 s budget: the
    /// first scan probes all (no limit known yet) and confirms 10; from then on each scan
    /// probes at most 10, oldest first, so every port is probed again within 3 scans and every
    /// port ends up confirmed, each with the time of its own confirmation.
    #[test]
    fn shares_rotate_within_the_capacity_and_confirmations_are_kept() {
        let address: IpAddr = A.parse().unwrap();
        let managed: Vec<u16> = (5000..5030).collect();
        let budget = Some(Duration::from_secs(4));
        let mut l = Ledger::default();

        l.begin_round();
        let share = l.share(&[address], &managed, budget);
        assert_eq!(share, managed, "no limit known yet: everything");
        let first = scan(&share, 10, Some(limit(6, 1000, 20)));
        l.record(&first, at(100));
        assert_eq!(capacity(l.rate_limit(address), budget), Some(10));

        let mut seen_in: BTreeMap<u16, Vec<u64>> = BTreeMap::new();
        for round in 2..=7u64 {
            l.begin_round();
            let share = l.share(&[address], &managed, budget);
            assert_eq!(share.len(), 10, "round {round}: {share:?}");
            for p in &share {
                seen_in.entry(*p).or_default().push(round);
            }
            // The peer answers what the capacity says: the burst at once, the rest paced, so
            // the scan measures the limit again and confirms all of the share.
            l.record(
                &scan(&share, share.len(), Some(limit(6, 1000, 0))),
                at(100 * round),
            );
            assert_eq!(capacity(l.rate_limit(address), budget), Some(10));
        }
        // All were probed in round 1: rounds 2 and 3 take the 20 it left unconfirmed, round 4
        // the 10 it confirmed, and so on: every port comes up once every 3 rounds.
        assert_eq!(seen_in[&5010], vec![2, 5]);
        assert_eq!(seen_in[&5020], vec![3, 6]);
        assert_eq!(seen_in[&5000], vec![4, 7]);
        for p in &managed {
            let rounds = &seen_in[p];
            assert_eq!(rounds.len(), 2, "{p}: {rounds:?}");
            assert_eq!(rounds[1] - rounds[0], 3, "{p}: {rounds:?}");
        }
        // Every port confirmed, with the time of the round that confirmed it last.
        for p in &managed {
            let when = l.confirmed_at(address, *p).unwrap();
            let last = *seen_in[p].last().unwrap();
            assert_eq!(when, at(100 * last), "{p}");
        }
    }

    #[test]
    fn an_unconfirmed_probe_keeps_the_last_confirmation() {
        let address: IpAddr = A.parse().unwrap();
        let mut l = Ledger::default();
        l.begin_round();
        l.record(&scan(&[5000, 5001], 2, None), at(10));
        l.begin_round();
        // Both probed again; neither confirmed this time.
        l.record(&scan(&[5000, 5001], 0, Some(limit(6, 1000, 2))), at(20));
        let fresh = scan(&[5000, 5001], 0, Some(limit(6, 1000, 2)));
        let merged = l.merged(&fresh, &[5000, 5001, 5002]);
        assert_eq!(
            merged.ports,
            vec![
                result(5000, PortState::Closed, Reason::PortUnreach),
                result(5001, PortState::Closed, Reason::PortUnreach),
            ],
            "from the confirmation at 10 s; 5002 was never probed"
        );
        assert_eq!(l.confirmed_at(address, 5000), Some(at(10)));
        assert_eq!(merged.rate_limit, Some(limit(6, 1000, 2)));
        // A port never confirmed is reported from this round's unconfirmed probe.
        let merged = l.merged(&scan(&[5003], 0, None), &[5003]);
        assert_eq!(merged.ports[0].reason, Reason::RateLimited);
        assert_eq!(l.confirmed_at(address, 5003), None);
    }

    #[test]
    fn a_lifted_limit_is_forgotten_a_small_share_is_not_proof() {
        let address: IpAddr = A.parse().unwrap();
        let budget = Some(Duration::from_secs(4));
        let managed: Vec<u16> = (5000..5040).collect();
        let mut l = Ledger::default();
        l.begin_round();
        l.record(&scan(&managed, 10, Some(limit(6, 1000, 30))), at(1));
        // Six answers unlimited: no more than the burst, so nothing is proven.
        l.begin_round();
        l.record(&scan(&managed[..6], 6, None), at(2));
        assert!(l.rate_limit(address).is_some());
        // Seven: more than the burst came back unlimited, so the limit is gone.
        l.begin_round();
        l.record(&scan(&managed[..7], 7, None), at(3));
        assert!(l.rate_limit(address).is_none());
        assert_eq!(l.share(&[address], &managed, budget), managed);
    }

    #[test]
    fn a_group_shares_the_most_limited_capacity_and_the_oldest_ports() {
        let (a, b): (IpAddr, IpAddr) = (A.parse().unwrap(), "fd00:213::12".parse().unwrap());
        let budget = Some(Duration::from_secs(4));
        let managed: Vec<u16> = (5000..5030).collect();
        let mut l = Ledger::default();
        l.begin_round();
        l.record(&scan(&managed, 30, Some(limit(6, 1000, 0))), at(1));
        let mut v6 = scan(&managed[..5], 5, Some(limit(6, 250, 0)));
        v6.address = b;
        l.record(&v6, at(1));
        l.begin_round();
        let share = l.share(&[a, b], &managed, budget);
        // a can answer 10 in 4 s, b 22: 10; b never saw 5005.. probed, so those first.
        assert_eq!(share, (5005..5015).collect::<Vec<u16>>());
    }

    #[test]
    fn unmanaged_ports_and_gone_peers_are_forgotten() {
        let address: IpAddr = A.parse().unwrap();
        let mut l = Ledger::default();
        l.begin_round();
        l.record(&scan(&[5000, 5001], 2, None), at(1));
        l.retain(&[(address, vec![5001])].into());
        assert_eq!(l.confirmed_at(address, 5000), None);
        assert_eq!(l.confirmed_at(address, 5001), Some(at(1)));
        l.retain(&BTreeMap::new());
        assert_eq!(l.confirmed_at(address, 5001), None);
    }

    #[test]
    fn an_unscanned_host_records_nothing() {
        let address: IpAddr = A.parse().unwrap();
        let mut l = Ledger::default();
        l.begin_round();
        l.record(&HostReport::unscanned(address, "no route".into()), at(1));
        assert!(l.peers.is_empty());
    }
}
