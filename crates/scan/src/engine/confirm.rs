//! Confirming silence on targets that rate-limit their ICMP errors.
//!
//! Linux sends at most about one ICMP error per second to each peer once a burst of six is
//! spent (`net.ipv4.icmp_ratelimit`; IPv6 has its own, faster limit). A UDP port, or a TCP
//! port behind `REJECT --reject-with icmp-port-unreachable` in a connect scan, that gets no
//! answer may be closed with its answer withheld, or really silent. nmap tells them apart by
//! retrying slowly (a scan delay of up to a second per probe).
//!
//! This phase, run after the first pass on UDP and connect scans, proves silence instead.
//! Each round sends, from one source address, the probes of ports still silent and then,
//! last, a probe of a port the target already answered with an ICMP error (the sentinel). The
//! target's limiter spends its tokens in arrival order and probes that find it empty cost
//! nothing, so if the sentinel is answered, every probe before it could have been answered
//! too: the ones still silent are silent, and gain a confirmation. If the sentinel goes
//! unanswered the budget ran out mid-round: the round still settled as many closed ports as
//! the target had tokens, and the next round waits for the budget to refill at the rate
//! measured from the answers. Each source address has a budget of its own at the target, so
//! extra source addresses run rounds side by side. On a target that does not limit, the
//! sentinel answers at once and a round costs one round trip.
//!
//! A silent port needs three confirmations (four on a host where a confirmed port later
//! answered, i.e. where the path loses packets): with its first try, as many probes as nmap
//! sends once it has seen loss, and each one proven to have met an answering target. Ports left when the time budget runs out
//! keep the silent state with the reason `rate-limited`, and the host's [`RateLimit`] says
//! how many, so a verifier can call them undecided instead of drift.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::Duration;

use super::plan::Plan;
use super::shared::Shared;
use crate::model::{RateLimit, Reason};
use crate::probe::CONFIRM_TRYNO;
use crate::{Progress, ProgressFn, ScanError};

/// How a confirmation round reaches the wire: raw packets or connect() attempts.
pub(crate) trait RoundIo {
    /// Sends try `tryno` of port index `idx` (host `idx / nports`) from `source`, after
    /// recording it with [`Shared::mark_sent`].
    fn send(
        &mut self,
        shared: &Shared,
        idx: usize,
        tryno: u8,
        source: IpAddr,
    ) -> Result<(), ScanError>;
    /// Lets time pass, handling answers, until `until_us` (scan clock) at the latest; may
    /// return earlier.
    fn pump(&mut self, shared: &Shared, until_us: u64) -> Result<(), ScanError>;
}

/// Silent ports a round takes at most, beyond the tokens it expects the target to have.
const MIN_ROUND: usize = 16;
/// Longest pause between two rounds of one source.
const MAX_PAUSE_US: u64 = 5_000_000;
/// Rounds in a row without a single answer after which a source gives up on a target (its
/// sentinels stopped answering too: the target went away or changed its rules mid-scan).
const GIVE_UP_ROUNDS: u32 = 8;

/// One source address's view of one target's ICMP budget.
struct Source {
    addr: IpAddr,
    next_round_us: u64,
    round: Option<Round>,
    rounds: u32,
    /// When this source first found the budget empty, and answers counted since.
    exhausted_at_us: Option<u64>,
    answers_since: u32,
    /// Rounds in a row that got no answer at all.
    idle_rounds: u32,
    /// Time between answers measured when the last round ended, µs.
    interval_us: Option<u64>,
}

struct Round {
    /// Last probe of the round (the sentinel) left at this time.
    sent_us: u64,
    ports: Vec<usize>,
    sentinel: usize,
    tryno: u8,
}

/// One target under confirmation.
struct Host {
    host: usize,
    /// Silent ports not yet confirmed: (index, confirmations), oldest-probed first.
    pending: VecDeque<(usize, u8)>,
    needed: u8,
    sentinels: Vec<usize>,
    next_sentinel: usize,
    sources: Vec<Source>,
    limited: bool,
    /// Ports given up on without a confirmation.
    unconfirmed: usize,
    /// When its last pending port was settled.
    done_at_us: Option<u64>,
}

impl Host {
    /// Measured time between answers per source, µs, as of the sources' last rounds (None
    /// before one has seen answers refill after the budget ran out).
    fn interval_us(&self) -> Option<u64> {
        self.sources.iter().filter_map(|s| s.interval_us).min()
    }

    /// When one of its sources needs attention next: its round's timeout, or its next round
    /// while ports are pending; `None` when neither.
    fn next_wake(&self, timeout_us: u64) -> Option<u64> {
        self.sources
            .iter()
            .filter_map(|s| match &s.round {
                Some(r) => Some(r.sent_us + timeout_us),
                None if self.pending.is_empty() => None,
                None => Some(s.next_round_us),
            })
            .min()
    }

    fn in_round(&self, idx: usize) -> bool {
        self.sources
            .iter()
            .any(|s| s.round.as_ref().is_some_and(|r| r.ports.contains(&idx)))
    }
}

/// What a confirmation phase needs from the scan.
pub(crate) struct Setup<'a> {
    pub targets: &'a [IpAddr],
    /// The source of each target.
    pub sources: &'a [IpAddr],
    pub extra_sources: &'a [IpAddr],
    pub budget: Option<Duration>,
    pub progress: Option<&'a ProgressFn>,
    pub total: u64,
}

impl<'a> Setup<'a> {
    /// What the confirmation phase needs to know of `plan`.
    pub(crate) fn of(plan: &'a Plan) -> Self {
        Setup {
            targets: &plan.targets,
            sources: &plan.sources,
            extra_sources: &plan.extra_sources,
            budget: plan.confirm_budget,
            progress: plan.progress.as_ref(),
            total: (plan.targets.len() * plan.ports.len()) as u64,
        }
    }
}

/// Runs the confirmation phase; returns per target what was learned of its ICMP rate limit.
pub(crate) fn run(
    shared: &Shared,
    setup: &Setup<'_>,
    io: &mut impl RoundIo,
) -> Result<Vec<Option<RateLimit>>, ScanError> {
    let mut hosts = hosts_to_confirm(shared, setup);
    if hosts.is_empty() {
        return Ok(vec![None; setup.targets.len()]);
    }
    let start = shared.now_us();
    let deadline = setup
        .budget
        .map(|b| start.saturating_add(u64::try_from(b.as_micros()).unwrap_or(u64::MAX)));
    let out_of_time = run_rounds(shared, setup, &mut hosts, deadline, io)?;
    Ok(rate_limits(shared, setup, &mut hosts, start, out_of_time))
}

/// The targets with silent ports to confirm: those that answered some probe with an ICMP
/// error (a sentinel); their silent verdicts are withdrawn until confirmed.
fn hosts_to_confirm(shared: &Shared, setup: &Setup<'_>) -> Vec<Host> {
    let nports = shared.nports();
    let mut hosts: Vec<Host> = Vec::new();
    for (h, target) in setup.targets.iter().enumerate() {
        let range = h * nports..(h + 1) * nports;
        let sentinels: Vec<usize> = range.clone().filter(|&i| shared.icmp_answered(i)).collect();
        if sentinels.is_empty() {
            continue;
        }
        let pending: VecDeque<(usize, u8)> = range
            .filter(|&i| shared.withdraw_silent(i))
            .map(|i| (i, 0))
            .collect();
        if pending.is_empty() {
            continue;
        }
        let mut addrs = vec![setup.sources[h]];
        for s in setup.extra_sources {
            if s.is_ipv4() == target.is_ipv4() && !addrs.contains(s) {
                addrs.push(*s);
            }
        }
        hosts.push(Host {
            host: h,
            pending,
            needed: 3,
            sentinels,
            next_sentinel: 0,
            sources: addrs.into_iter().map(Source::new).collect(),
            limited: false,
            unconfirmed: 0,
            done_at_us: None,
        });
    }
    hosts
}

/// Runs rounds until every pending port is settled or `deadline` passes; returns whether it
/// did (out of time).
fn run_rounds(
    shared: &Shared,
    setup: &Setup<'_>,
    hosts: &mut [Host],
    deadline: Option<u64>,
    io: &mut impl RoundIo,
) -> Result<bool, ScanError> {
    let mut last_progress = 0u64;
    while hosts.iter().any(|h| !h.pending.is_empty()) {
        let now = shared.now_us();
        if deadline.is_some_and(|d| now >= d) {
            return Ok(true);
        }
        let (timeout_us, _) = shared.timing_now();
        // A round is over once its sentinel's answer is in (with a little grace for answers
        // the network reordered), or after a full probe timeout.
        let grace = (2 * shared.srtt_us()).clamp(1_000, timeout_us.max(1_000));
        let mut wake = now + timeout_us;
        for host in hosts.iter_mut() {
            finish_rounds(shared, host, now, timeout_us, grace);
            if host.sources.iter().all(|s| s.idle_rounds >= GIVE_UP_ROUNDS) {
                for (idx, _) in host.pending.drain(..) {
                    shared.settle_silent(idx, Reason::RateLimited);
                    host.unconfirmed += 1;
                }
            }
            if host.pending.is_empty() {
                host.done_at_us.get_or_insert(now);
            }
            start_rounds(shared, host, now, io)?;
            wake = wake.min(host.next_wake(timeout_us).unwrap_or(wake));
        }
        if let Some(cb) = setup.progress
            && now >= last_progress + 100_000
        {
            last_progress = now;
            cb(&progress(shared, hosts, setup.total));
        }
        let until = deadline.map_or(wake, |d| wake.min(d)).max(now + 50);
        io.pump(shared, until)?;
    }
    Ok(false)
}

/// Ends the phase: what is still pending keeps its silent state with the reason
/// `rate-limited`, and each limited target gets its [`RateLimit`].
fn rate_limits(
    shared: &Shared,
    setup: &Setup<'_>,
    hosts: &mut [Host],
    start: u64,
    out_of_time: bool,
) -> Vec<Option<RateLimit>> {
    let mut limits: Vec<Option<RateLimit>> = vec![None; setup.targets.len()];
    let end = shared.now_us();
    for host in hosts.iter_mut() {
        // Rounds still out when the budget ran out settle nothing.
        for s in &mut host.sources {
            s.round = None;
        }
        let unconfirmed = host.unconfirmed + if out_of_time { host.pending.len() } else { 0 };
        for &(idx, _) in &host.pending {
            shared.settle_silent(idx, Reason::RateLimited);
        }
        let done = host.done_at_us.unwrap_or(end);
        if host.limited {
            limits[host.host] = Some(RateLimit {
                burst: shared.icmp_first(host.host),
                interval_ms: host.interval_us().unwrap_or(0) / 1_000,
                sources: u32::try_from(host.sources.len()).unwrap_or(u32::MAX),
                unconfirmed: u32::try_from(unconfirmed).unwrap_or(u32::MAX),
                confirm_ms: done.saturating_sub(start) / 1_000,
                budget_ms: setup
                    .budget
                    .map(|b| u64::try_from(b.as_millis()).unwrap_or(u64::MAX)),
            });
        }
    }
    limits
}

/// Settles the rounds of `host` that are over.
fn finish_rounds(shared: &Shared, host: &mut Host, now: u64, timeout_us: u64, grace: u64) {
    for si in 0..host.sources.len() {
        let Some(r) = &host.sources[si].round else {
            continue;
        };
        let sentinel_answered = shared.answered_since(r.sentinel, r.tryno, r.sent_us);
        let over = now >= r.sent_us + timeout_us || (sentinel_answered && now >= r.sent_us + grace);
        if !over {
            continue;
        }
        let Some(r) = host.sources[si].round.take() else {
            continue;
        };
        let answered = settle_round(shared, host, &r, sentinel_answered);
        let pending = host.pending.len();
        let burst = shared.icmp_first(host.host);
        let s = &mut host.sources[si];
        if s.after_round(now, timeout_us, answered, sentinel_answered, pending, burst) {
            host.limited = true;
        }
    }
}

/// Settles the ports of round `r` that is over: answered ones leave, silent ones gain a
/// confirmation when its sentinel was answered (and are settled silent with enough); the
/// round's ports go to the back of the queue. Returns the ports of the round answered.
fn settle_round(shared: &Shared, host: &mut Host, r: &Round, sentinel_answered: bool) -> u32 {
    let mut answered = 0u32;
    let mut keep = VecDeque::with_capacity(host.pending.len());
    while let Some((idx, n)) = host.pending.pop_front() {
        if !r.ports.contains(&idx) {
            keep.push_back((idx, n));
            continue;
        }
        if shared.has_result(idx) {
            answered += 1;
            if n > 0 {
                // Confirmed silent once, answered now: the path loses packets.
                host.needed = 4;
            }
            continue;
        }
        if sentinel_answered {
            if n + 1 >= host.needed {
                shared.settle_silent(idx, Reason::NoResponse);
                continue;
            }
            keep.push_back((idx, n + 1));
        } else {
            keep.push_back((idx, n));
        }
    }
    // Ports of this round go to the back: the next round starts with the others.
    let (mut front, back): (VecDeque<_>, VecDeque<_>) =
        keep.into_iter().partition(|(i, _)| !r.ports.contains(i));
    front.extend(back);
    host.pending = front;
    answered
}

impl Source {
    fn new(addr: IpAddr) -> Self {
        Source {
            addr,
            next_round_us: 0,
            round: None,
            rounds: 0,
            exhausted_at_us: None,
            answers_since: 0,
            idle_rounds: 0,
            interval_us: None,
        }
    }

    /// Learns from a round that ended at `now` with `answered` ports answered: the refill
    /// rate, and when the next round may start (`pending` ports left on a target whose first
    /// tries drew `burst` ICMP errors). Returns `true` when this round found the budget
    /// empty for the first time (the target rate-limits).
    fn after_round(
        &mut self,
        now: u64,
        timeout_us: u64,
        mut answered: u32,
        sentinel_answered: bool,
        pending: usize,
        burst: u32,
    ) -> bool {
        self.rounds += 1;
        if answered == 0 && !sentinel_answered {
            self.idle_rounds += 1;
        } else {
            self.idle_rounds = 0;
        }
        if sentinel_answered {
            answered += 1;
        }
        let mut now_limited = false;
        // The refill rate counts the answers that came after the budget first ran out:
        // those of the round that emptied it were spent from the burst.
        match self.exhausted_at_us {
            Some(at) => {
                self.answers_since += answered;
                if self.answers_since > 0 {
                    self.interval_us = Some(now.saturating_sub(at) / u64::from(self.answers_since));
                }
            }
            None if !sentinel_answered => {
                now_limited = true;
                self.exhausted_at_us = Some(now);
            }
            None => {}
        }
        self.next_round_us = if sentinel_answered {
            now
        } else {
            // Wait until the budget should hold a few answers again.
            let tokens = u64::try_from(pending + 1)
                .unwrap_or(u64::MAX)
                .min(u64::from(burst.clamp(1, 4)));
            let since = self.exhausted_at_us.map_or(0, |at| now.saturating_sub(at));
            let pause = if self.answers_since == 0 {
                // Nothing has come back since the budget ran out: back off exponentially
                // until the first refill shows the rate.
                2 * since
            } else {
                since / u64::from(self.answers_since) * tokens
            };
            now + pause.clamp(timeout_us.min(MAX_PAUSE_US), MAX_PAUSE_US)
        };
        now_limited
    }
}

/// Starts a round on each source of `host` that is due and idle.
fn start_rounds(
    shared: &Shared,
    host: &mut Host,
    now: u64,
    io: &mut impl RoundIo,
) -> Result<(), ScanError> {
    for si in 0..host.sources.len() {
        let s = &host.sources[si];
        if s.round.is_some() || now < s.next_round_us || host.pending.is_empty() {
            continue;
        }
        let take = MIN_ROUND.max(4 * shared.icmp_first(host.host) as usize);
        let ports: Vec<usize> = host
            .pending
            .iter()
            .map(|&(i, _)| i)
            .filter(|&i| !host.in_round(i))
            .take(take)
            .collect();
        if ports.is_empty() {
            continue;
        }
        let sentinel = host.sentinels[host.next_sentinel % host.sentinels.len()];
        host.next_sentinel += 1;
        let s = &mut host.sources[si];
        let tryno = CONFIRM_TRYNO + (s.rounds % 2) as u8;
        for &idx in &ports {
            io.send(shared, idx, tryno, s.addr)?;
        }
        // The clock is read before the sentinel leaves: its answer may be in before send
        // returns.
        let sent_us = shared.now_us();
        io.send(shared, sentinel, tryno, s.addr)?;
        s.round = Some(Round {
            sent_us,
            ports,
            sentinel,
            tryno,
        });
    }
    Ok(())
}

/// Progress while confirming: why the scan is slow, and a time left from the measured rate.
fn progress(shared: &Shared, hosts: &[Host], total: u64) -> Progress {
    let mut p = shared.progress(total);
    let mut left_us = 0u64;
    for h in hosts.iter().filter(|h| h.limited && !h.pending.is_empty()) {
        if let Some(i) = h.interval_us() {
            p.rate_limit_interval_ms = Some(p.rate_limit_interval_ms.unwrap_or(0).max(i / 1_000));
            let per_source = (h.pending.len() as u64 + 1).div_ceil(h.sources.len() as u64);
            left_us = left_us.max(per_source * i);
        }
    }
    if p.rate_limit_interval_ms.is_some() {
        p.estimated_left = Some(Duration::from_micros(left_us));
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::Reply;
    use crate::model::{PortState, ScanKind};
    use crate::timing::Timing;

    /// A target behind a per-source token bucket, answering closed ports at once; a real
    /// clock (the scan's), with a fast refill so the tests take well under a second.
    struct Limited {
        closed: Vec<bool>,
        burst: f64,
        interval_us: f64,
        /// Per source: tokens and when they were counted.
        buckets: Vec<(IpAddr, f64, u64)>,
        /// Every `lose_every`-th packet is lost on the way (0 = none).
        lose_every: u64,
        packets: u64,
    }

    impl Limited {
        fn new(closed: Vec<bool>, burst: f64, interval_us: f64) -> Self {
            Limited {
                closed,
                burst,
                interval_us,
                buckets: Vec::new(),
                lose_every: 0,
                packets: 0,
            }
        }

        fn token(&mut self, src: IpAddr, now: u64) -> bool {
            let (burst, interval) = (self.burst, self.interval_us);
            let b = match self.buckets.iter_mut().find(|b| b.0 == src) {
                Some(b) => b,
                None => {
                    self.buckets.push((src, burst, now));
                    self.buckets.last_mut().expect("just pushed")
                }
            };
            b.1 = (b.1 + (now - b.2) as f64 / interval).min(burst);
            b.2 = now;
            if b.1 >= 1.0 {
                b.1 -= 1.0;
                true
            } else {
                false
            }
        }
    }

    impl RoundIo for Limited {
        fn send(
            &mut self,
            shared: &Shared,
            idx: usize,
            tryno: u8,
            source: IpAddr,
        ) -> Result<(), ScanError> {
            shared.mark_sent(idx, tryno, shared.now_us());
            self.packets += 1;
            if self.lose_every > 0 && self.packets.is_multiple_of(self.lose_every) {
                return Ok(());
            }
            if self.closed[idx] && self.token(source, shared.now_us()) {
                let icmp = Reply::Icmp4 {
                    icmp_type: 3,
                    code: 3,
                    from_target: true,
                };
                shared.on_reply(0, idx, tryno, icmp);
            }
            Ok(())
        }

        fn pump(&mut self, shared: &Shared, until_us: u64) -> Result<(), ScanError> {
            let now = shared.now_us();
            std::thread::sleep(Duration::from_micros(until_us.saturating_sub(now).min(500)));
            Ok(())
        }
    }

    const TARGET: [IpAddr; 1] = [IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1))];
    const SOURCE: [IpAddr; 1] = [IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2))];

    /// The first pass over `target` at full speed: every port probed once.
    fn first_pass(shared: &Shared, target: &mut Limited) {
        for idx in 0..target.closed.len() {
            target
                .send(shared, idx, 0, SOURCE[0])
                .expect("simulated send");
        }
        for idx in 0..target.closed.len() {
            assert_eq!(shared.on_expiry(idx, 0, 6), None, "no retransmission");
        }
    }

    fn scan(
        target: &mut Limited,
        extra: &[IpAddr],
        budget: Option<Duration>,
    ) -> (Vec<(PortState, Reason)>, Option<RateLimit>) {
        let timing = Timing {
            min_rtt_timeout: Duration::from_millis(5),
            initial_rtt_timeout: Duration::from_millis(5),
            ..Timing::default()
        };
        let shared = Shared::new(ScanKind::Udp, 1, target.closed.len(), &timing, 1);
        first_pass(&shared, target);
        let setup = Setup {
            targets: &TARGET,
            sources: &SOURCE,
            extra_sources: extra,
            budget,
            progress: None,
            total: target.closed.len() as u64,
        };
        let limits = run(&shared, &setup, target).expect("confirmation");
        (shared.into_outcome(0).results, limits[0].clone())
    }

    fn ports(n: usize, silent: &[usize]) -> Vec<bool> {
        (0..n).map(|i| !silent.contains(&i)).collect()
    }

    const CLOSED: (PortState, Reason) = (PortState::Closed, Reason::PortUnreach);
    const SILENT: (PortState, Reason) = (PortState::OpenFiltered, Reason::NoResponse);

    #[test]
    fn withheld_answers_become_closed_and_silence_is_confirmed() {
        let silent = [3, 17, 39];
        let mut target = Limited::new(ports(40, &silent), 6.0, 4_000.0);
        let (results, limit) = scan(&mut target, &[], None);
        for (i, r) in results.iter().enumerate() {
            let want = if silent.contains(&i) { SILENT } else { CLOSED };
            assert_eq!(*r, want, "port index {i}");
        }
        let limit = limit.expect("the target was seen limiting");
        assert_eq!(limit.unconfirmed, 0);
        assert_eq!(limit.burst, 6);
        assert!(limit.interval_ms <= 40, "measured {} ms", limit.interval_ms);
        // Rounds are paced by the refill, not sent every timeout: far fewer probes than
        // ports × rounds.
        assert!(target.packets < 40 * 8, "{} packets", target.packets);
    }

    #[test]
    fn a_target_that_does_not_limit_needs_no_rate_and_is_not_reported() {
        let silent = [5, 6];
        let mut target = Limited::new(ports(30, &silent), 1_000.0, 1.0);
        let (results, limit) = scan(&mut target, &[], None);
        assert_eq!(results[5], SILENT);
        assert_eq!(results[0], CLOSED);
        assert_eq!(limit, None);
    }

    #[test]
    fn a_lost_sentinel_or_probe_never_confirms_a_closed_port_silent() {
        for lose_every in [3, 7, 11] {
            let mut target = Limited::new(ports(30, &[29]), 6.0, 2_000.0);
            target.lose_every = lose_every;
            let (results, _) = scan(&mut target, &[], None);
            let wrong: Vec<usize> = (0..29).filter(|&i| results[i] != CLOSED).collect();
            assert!(wrong.is_empty(), "lose every {lose_every}: {wrong:?}");
            assert_eq!(results[29], SILENT);
        }
    }

    #[test]
    fn a_target_that_stops_answering_mid_scan_ends_the_phase_unconfirmed() {
        // Closed during the first pass, then silent for good (the node went away): without
        // a budget the phase must still end, and say the ports were not confirmed.
        let mut target = Limited::new(ports(12, &[]), 4.0, 1_000.0);
        let timing = Timing {
            min_rtt_timeout: Duration::from_millis(1),
            initial_rtt_timeout: Duration::from_millis(1),
            max_rtt_timeout: Duration::from_millis(1),
            ..Timing::default()
        };
        let shared = Shared::new(ScanKind::Udp, 1, 12, &timing, 1);
        first_pass(&shared, &mut target);
        target.closed = vec![false; 12];
        let setup = Setup {
            targets: &TARGET,
            sources: &SOURCE,
            extra_sources: &[],
            budget: None,
            progress: None,
            total: 12,
        };
        let limits = run(&shared, &setup, &mut target).expect("confirmation");
        let limit = limits[0].clone().expect("limited");
        assert_eq!(
            limit.unconfirmed, 8,
            "the 8 ports the first pass left silent"
        );
        let results = shared.into_outcome(0).results;
        assert_eq!(
            results
                .iter()
                .filter(|r| r.1 == Reason::RateLimited)
                .count(),
            8
        );
    }

    #[test]
    fn each_extra_source_brings_its_own_budget() {
        let extra = [IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 3))];
        let mut target = Limited::new(ports(40, &[]), 6.0, 20_000.0);
        let (results, limit) = scan(&mut target, &extra, None);
        assert!(results.iter().all(|r| *r == CLOSED));
        assert_eq!(limit.expect("limited").sources, 2);
        assert_eq!(target.buckets.len(), 2, "both sources were used");
    }

    #[test]
    fn ports_left_when_the_budget_runs_out_are_rate_limited_not_silent() {
        let mut target = Limited::new(ports(30, &[]), 2.0, 1_000_000.0);
        let (results, limit) = scan(&mut target, &[], Some(Duration::from_millis(30)));
        let limit = limit.expect("limited");
        let left = results
            .iter()
            .filter(|r| **r == (PortState::OpenFiltered, Reason::RateLimited))
            .count();
        assert!(left >= 20, "{left} ports left");
        assert_eq!(limit.unconfirmed as usize, left);
        assert_eq!(limit.budget_ms, Some(30));
        assert!(
            limit
                .describe()
                .contains(&format!("{left} ports not confirmed in")),
            "{}",
            limit.describe()
        );
        assert!(
            results
                .iter()
                .all(|r| *r == CLOSED || r.1 == Reason::RateLimited)
        );
    }
}
