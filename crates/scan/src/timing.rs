//! Timing: nmap's round-trip-time estimator (`adjust_timeouts2()` in `timing.cc`), a congestion
//! window with slow start and multiplicative back-off on loss (`ultra_timing_vals` in nmap),
//! the token bucket behind the optional rate caps ([`TargetPacer`]: the engine's `pace` uses
//! it for the total cap and for each target's), and nmap's retransmission allowance
//! (`allowedTryno`).
//!
//! Why a window rather than a fixed rate: a window self-clocks on the replies, so the engine
//! sends as fast as the path answers and no faster; the fastest loss-free rate is found by
//! growing the window until loss appears and halving it when it does (TCP's AIMD). `rate`
//! is an upper bound on top of that, never a target.

use std::time::Duration;

/// Timing knobs. [`Timing::default`] matches `nmap -T4` where nmap has a value.
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    /// Probe timeout before the first round-trip time is measured (nmap -T4: 500 ms).
    pub initial_rtt_timeout: Duration,
    /// Lower bound of the probe timeout (nmap -T4: 100 ms).
    pub min_rtt_timeout: Duration,
    /// Upper bound of the probe timeout (nmap -T4: 1250 ms).
    pub max_rtt_timeout: Duration,
    /// Most retransmissions of a silent probe (nmap -T4: 6). Two probes are sent on a lossless
    /// path; more only once loss has been seen (a retransmission that got an answer).
    pub max_retries: u8,
    /// Upper bound on probes per second, all targets together (`--rate`); `None` = no cap.
    pub max_rate: Option<u32>,
    /// Upper bound on probes per second to any one target (`--max-rate-per-target`), enforced
    /// for each target separately by a [`TargetPacer`]; `None` = no cap. Retransmissions count.
    pub max_rate_per_target: Option<u32>,
    /// Starting congestion window (probes in flight).
    pub initial_cwnd: u32,
    /// Largest congestion window.
    pub max_cwnd: u32,
    /// Smallest congestion window after back-off.
    pub min_cwnd: u32,
    /// Fraction of probes that may be lost (recent average) before loss is taken as
    /// congestion and the window is cut. Loss below it is treated as noise of the path (a
    /// lossy link, a random-drop rule) that retransmission already handles; cutting the
    /// window for it would only slow the scan without reducing the loss.
    pub loss_tolerance: f64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            initial_rtt_timeout: Duration::from_millis(500),
            min_rtt_timeout: Duration::from_millis(100),
            max_rtt_timeout: Duration::from_millis(1250),
            max_retries: 6,
            max_rate: None,
            max_rate_per_target: None,
            initial_cwnd: 10,
            max_cwnd: 4096,
            min_cwnd: 4,
            loss_tolerance: 0.10,
        }
    }
}

impl Timing {
    /// Clamps inconsistent values (min > max and the like) into a usable configuration.
    pub fn normalised(mut self) -> Self {
        if self.min_rtt_timeout > self.max_rtt_timeout {
            self.max_rtt_timeout = self.min_rtt_timeout;
        }
        // Try numbers 14 and 15 belong to confirmation rounds (see `probe::CONFIRM_TRYNO`).
        self.max_retries = self.max_retries.min(13);
        self.min_cwnd = self.min_cwnd.max(1);
        self.max_cwnd = self.max_cwnd.max(self.min_cwnd);
        self.initial_cwnd = self.initial_cwnd.clamp(self.min_cwnd, self.max_cwnd);
        self
    }
}

/// nmap's RTT estimator: srtt/rttvar in microseconds, timeout = srtt + 4·rttvar, clamped.
#[derive(Debug, Clone)]
pub struct RttEstimator {
    srtt: i64,
    rttvar: i64,
    timeout: i64,
    min: i64,
    max: i64,
}

fn us(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl RttEstimator {
    /// A fresh estimator: the timeout is `initial_rtt_timeout` until a sample arrives.
    pub fn new(t: &Timing) -> Self {
        RttEstimator {
            srtt: -1,
            rttvar: -1,
            timeout: us(t.initial_rtt_timeout),
            min: us(t.min_rtt_timeout),
            max: us(t.max_rtt_timeout),
        }
    }

    /// Feeds one round-trip sample (microseconds), as `adjust_timeouts2()`.
    pub fn sample(&mut self, delta_us: i64) {
        let delta = delta_us.max(0);
        if self.srtt < 0 {
            // "We need to initialize the sucker ..."
            if delta > 1_500_000 && delta > 3 * self.timeout {
                return;
            }
            self.srtt = delta;
            self.rttvar = 5_000.max(self.srtt.min(2_000_000));
        } else {
            if delta >= 8_000_000 && delta > 3 * self.timeout {
                return;
            }
            let rttdelta = delta - self.srtt;
            if rttdelta > 1_500_000 && rttdelta > 3 * self.srtt + 2 * self.rttvar {
                return;
            }
            self.srtt += rttdelta >> 3;
            self.rttvar += (rttdelta.abs() - self.rttvar) >> 2;
        }
        self.timeout = (self.srtt + (self.rttvar << 2)).clamp(self.min, self.max);
    }

    /// The current probe timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_micros(u64::try_from(self.timeout).unwrap_or(0))
    }

    /// Smoothed RTT in microseconds (`None` before the first sample).
    pub fn srtt_us(&self) -> Option<u64> {
        u64::try_from(self.srtt).ok()
    }
}

/// Congestion window: slow start up to `ssthresh`, then additive increase; halved on loss at
/// most once per loss event.
///
/// Every cut is also an experiment: if the loss fraction over the next
/// [`Congestion::EXPERIMENT`] answers is not clearly lower than before the cut, the loss was
/// not caused by our sending rate (a lossy link, a random-drop rule). The window is then
/// restored and the tolerance raised to that loss level, so the scan keeps the fastest rate
/// the path sustains and lets retransmission handle the path's own loss.
#[derive(Debug, Clone)]
pub struct Congestion {
    cwnd: f64,
    ssthresh: f64,
    min: f64,
    max: f64,
    /// Time (µs since scan start) of the last back-off; losses of probes sent before it are
    /// the same congestion event and do not cut again.
    last_drop_us: u64,
    drops: u64,
    /// Recent fraction of first answers that came to a retransmission (EWMA, weight 1/100).
    loss_ewma: f64,
    /// Long-run loss fraction (EWMA, weight 1/1000): the path's usual loss.
    loss_baseline: f64,
    tolerance: f64,
    /// While a cut is being evaluated: (loss before the cut, window before the cut).
    experiment: Option<(f64, f64)>,
    epoch_answers: u32,
    epoch_losses: u32,
}

impl Congestion {
    /// A window starting at `initial_cwnd`.
    pub fn new(t: &Timing) -> Self {
        Congestion {
            cwnd: f64::from(t.initial_cwnd),
            ssthresh: f64::from(t.max_cwnd),
            min: f64::from(t.min_cwnd),
            max: f64::from(t.max_cwnd),
            last_drop_us: 0,
            drops: 0,
            loss_ewma: 0.0,
            loss_baseline: 0.0,
            tolerance: t.loss_tolerance,
            experiment: None,
            epoch_answers: 0,
            epoch_losses: 0,
        }
    }

    /// Answers over which a cut is evaluated.
    pub const EXPERIMENT: u32 = 200;

    /// A probe was answered.
    pub fn ack(&mut self) {
        if self.cwnd < self.ssthresh {
            self.cwnd += 1.0;
        } else {
            self.cwnd += 1.0 / self.cwnd;
        }
        self.cwnd = self.cwnd.min(self.max);
    }

    /// A port got its first answer; `lost` when it answered a retransmission only.
    pub fn observe(&mut self, lost: bool) {
        let x = if lost { 1.0 } else { 0.0 };
        self.loss_ewma += (x - self.loss_ewma) / 100.0;
        self.loss_baseline += (x - self.loss_baseline) / 1000.0;
        let Some((before, cwnd_before)) = self.experiment else {
            return;
        };
        self.epoch_answers += 1;
        self.epoch_losses += u32::from(lost);
        if self.epoch_answers >= Self::EXPERIMENT {
            let after = f64::from(self.epoch_losses) / f64::from(self.epoch_answers);
            if after >= 0.75 * before {
                // Slowing down did not reduce the loss: it is the path's, not ours.
                self.tolerance = self.tolerance.max(after * 1.5 + 0.01);
                self.cwnd = self.cwnd.max(cwnd_before);
                self.ssthresh = self.ssthresh.max(cwnd_before);
            }
            self.experiment = None;
        }
    }

    /// The recent loss fraction.
    pub fn loss_rate(&self) -> f64 {
        self.loss_ewma
    }

    /// Loss was seen for a probe first sent at `sent_us`; `in_flight` probes were
    /// outstanding. Cuts the window once per congestion event, and only when the recent loss
    /// fraction is above the tolerance or `force` is set (loss we caused for certain, such as
    /// our own receive queue overflowing). Returns whether the window was cut.
    pub fn drop_seen(&mut self, sent_us: u64, now_us: u64, in_flight: u64, force: bool) -> bool {
        if sent_us < self.last_drop_us
            || (!force && (self.loss_ewma <= self.tolerance || self.experiment.is_some()))
        {
            return false;
        }
        if !force {
            // Judge the cut against the path's usual loss, not against the spike that
            // triggered it (a spike is usually followed by less loss anyway).
            self.experiment = Some((self.loss_baseline.max(self.tolerance / 2.0), self.cwnd));
            self.epoch_answers = 0;
            self.epoch_losses = 0;
        }
        let in_flight = in_flight as f64;
        self.ssthresh = (in_flight / 2.0).max(self.min);
        self.cwnd = (self.cwnd / 2.0).max(self.min);
        self.last_drop_us = now_us;
        self.drops += 1;
        true
    }

    /// The window, in probes.
    pub fn window(&self) -> u64 {
        self.cwnd as u64
    }

    /// Congestion events so far.
    pub fn drops(&self) -> u64 {
        self.drops
    }
}

/// A token bucket per target, shared by all send threads: at most `rate` probes per second to
/// each target, after a burst of at most [`TargetPacer::burst`] probes.
///
/// It is the generic cell rate algorithm (a token bucket written as one "theoretical arrival
/// time" per target), so taking a token is one compare-and-swap on an atomic and the send
/// threads never share a lock. Times are nanoseconds on any monotonic clock the caller
/// chooses; the engine passes time since the scan started, the tests a fake clock.
///
/// # Guarantees
/// For every target and every interval of length `T` ns, the probes granted in it number at
/// most `burst + T * rate / 1e9` (rounded up).
#[derive(Debug)]
pub struct TargetPacer {
    interval_ns: u64,
    /// How far ahead of real time a target's arrival time may run: `(burst - 1) * interval`.
    tolerance_ns: u64,
    tat: Vec<std::sync::atomic::AtomicU64>,
}

impl TargetPacer {
    /// A pacer for `targets` targets at `rate` probes per second each; `None` when there is
    /// no cap (`rate` is `None` or 0).
    pub fn new(rate: Option<u32>, targets: usize) -> Option<TargetPacer> {
        // A millisecond's worth of probes, at least one: smooth enough for a rate limiter
        // on the target's side, and the send loop need not wake for every single probe.
        Self::with_max_burst(rate, targets, 64)
    }

    /// Like [`TargetPacer::new`], with bursts of a millisecond's worth of probes up to
    /// `max_burst` (the total rate cap allows larger ones than a single target gets).
    pub(crate) fn with_max_burst(
        rate: Option<u32>,
        targets: usize,
        max_burst: u64,
    ) -> Option<TargetPacer> {
        let rate = u64::from(rate.filter(|r| *r > 0)?);
        let burst = (rate / 1000).clamp(1, max_burst.max(1));
        let interval_ns = 1_000_000_000u64.div_ceil(rate);
        Some(TargetPacer {
            interval_ns,
            tolerance_ns: (burst - 1) * interval_ns,
            tat: (0..targets)
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect(),
        })
    }

    /// The largest number of probes a target can get at once.
    pub fn burst(&self) -> u64 {
        self.tolerance_ns / self.interval_ns + 1
    }

    /// Takes a token for `target` at time `now_ns`: `0` when the probe may go now (the token
    /// is taken), else the nanoseconds to wait (nothing taken). Targets out of range are
    /// never paced.
    pub fn take(&self, target: usize, now_ns: u64) -> u64 {
        match self.take_undoable(target, now_ns) {
            Ok(_) => 0,
            Err(wait) => wait,
        }
    }

    /// Like [`TargetPacer::take`]; a granted token comes with what
    /// [`TargetPacer::put_back`] needs to return it.
    pub(crate) fn take_undoable(&self, target: usize, now_ns: u64) -> Result<Taken, u64> {
        use std::sync::atomic::Ordering;
        let Some(slot) = self.tat.get(target) else {
            return Ok(Taken {
                target,
                before: 0,
                after: 0,
            });
        };
        let mut tat = slot.load(Ordering::Acquire);
        loop {
            let from = tat.max(now_ns);
            if from > now_ns + self.tolerance_ns {
                return Err((from - self.tolerance_ns - now_ns).max(1));
            }
            let after = from + self.interval_ns;
            match slot.compare_exchange_weak(tat, after, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    return Ok(Taken {
                        target,
                        before: tat,
                        after,
                    });
                }
                Err(actual) => tat = actual,
            }
        }
    }

    /// Returns a token taken with [`TargetPacer::take_undoable`] for a probe that did not go,
    /// unless another token was taken for its target since: then it stays spent (the cap is
    /// only ever stricter for it, never looser).
    pub(crate) fn put_back(&self, taken: Taken) {
        use std::sync::atomic::Ordering;
        if let Some(slot) = self.tat.get(taken.target) {
            let _ = slot.compare_exchange(
                taken.after,
                taken.before,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }

    /// Like [`TargetPacer::take`] without taking: nanoseconds until `target` may get a probe.
    pub fn wait(&self, target: usize, now_ns: u64) -> u64 {
        let Some(slot) = self.tat.get(target) else {
            return 0;
        };
        let tat = slot.load(std::sync::atomic::Ordering::Acquire);
        tat.saturating_sub(now_ns + self.tolerance_ns)
    }
}

/// A token [`TargetPacer::take_undoable`] granted: the target's arrival time before and after.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Taken {
    target: usize,
    before: u64,
    after: u64,
}

/// nmap's retransmission allowance: the highest try number a silent probe may reach, given
/// the highest try number that ever got an answer (`max_successful_tryno`).
pub fn allowed_tryno(max_successful_tryno: u8, max_retries: u8) -> u8 {
    max_successful_tryno
        .saturating_add(1)
        .max(1)
        .min(max_retries)
}

/// What bounds a scan's duration in an [`Estimate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// UDP: each target's kernel answers closed ports with about one ICMP port-unreachable
    /// per second per source address (Linux's `net.ipv4.icmp_ratelimit`, after a burst of
    /// six; IPv6 allows about ten a second on current kernels), and the scan waits for them
    /// to tell closed ports from silent ones (see `confirm`).
    IcmpRateLimit,
    /// `max_rate`: probes per second, all targets together.
    Rate(u32),
    /// `max_rate_per_target`: probes per second to each target.
    RatePerTarget(u32),
}

/// A rough forecast of how long a scan takes: see [`estimate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    /// About the least it takes: the first tries at the rate caps, and for UDP every port
    /// past the burst answered at the kernel's default rate (IPv6 at today's faster one).
    pub duration: Duration,
    /// UDP only: about the most it takes with Linux's defaults, every port closed (IPv6 at
    /// the one-a-second rate of older kernels, plus the rounds that confirm silent ports).
    pub up_to: Option<Duration>,
    /// What makes it take that long.
    pub bound: Bound,
    /// The targets counted (duplicates once).
    pub targets: usize,
    /// The ports of each target.
    pub ports: usize,
}

/// ICMP errors Linux sends a peer at full speed before its rate limit applies.
const ICMP_BURST: f64 = 6.0;

/// Seconds between ICMP errors to one peer under Linux's defaults: IPv4's
/// `net.ipv4.icmp_ratelimit` (1000 ms), and IPv6's `net.ipv6.icmp.ratelimit` (100 ms on
/// current kernels, 1000 ms on older ones).
const ICMP_V4_INTERVAL: f64 = 1.0;
const ICMP_V6_INTERVAL: (f64, f64) = (0.1, 1.0);

/// What confirming the last silent ports and a first pass cost on top, at the most: a share
/// of the ports, plus a few seconds.
const UDP_OVERHEAD: (f64, f64) = (1.2, 5.0);

/// Forecasts a scan of `ports` ports on `targets` (duplicates count once) with `kind` and
/// `timing`, before it starts, from what bounds it: the rate caps (first tries only;
/// retransmissions add) and, for UDP, the ICMP rate limit of targets other than loopback.
///
/// # Guarantees
///
/// Pure arithmetic; nothing is sent. `None` when only the path bounds the scan (TCP without
/// rate caps: seconds on a local network, even for every port). For UDP, every scan measured
/// (see `MEASURED_UDP` in the tests) took between `duration` and `up_to`.
///
/// # Caveats
///
/// Rough: the UDP figures assume Linux's default ICMP rate limits, one source address and
/// mostly closed ports (open and silent ones cost less: no answer has to wait). Targets are
/// waited on side by side, so the slowest one decides; each extra source address
/// (`ScanConfig::extra_sources`) divides a target's share. Loopback targets cost nothing
/// (Linux does not rate-limit ICMP errors to loopback).
pub fn estimate(
    kind: crate::ScanKind,
    targets: &[std::net::IpAddr],
    ports: usize,
    timing: &Timing,
) -> Option<Estimate> {
    let mut unique = targets.to_vec();
    unique.sort_unstable();
    unique.dedup();
    let probes = (unique.len() as f64) * (ports as f64);
    let mut bounds: Vec<(f64, Bound)> = Vec::new();
    let limited: Vec<&std::net::IpAddr> = unique.iter().filter(|t| !t.is_loopback()).collect();
    let udp_limited = kind == crate::ScanKind::Udp && !limited.is_empty();
    let waited = (ports as f64 - ICMP_BURST).max(0.0);
    let (least, most) = limited.iter().fold((0.0f64, 0.0f64), |(l, m), t| {
        let (lo, hi) = if t.is_ipv4() {
            (ICMP_V4_INTERVAL, ICMP_V4_INTERVAL)
        } else {
            ICMP_V6_INTERVAL
        };
        (l.max(waited * lo), m.max(ports as f64 * hi))
    });
    if udp_limited {
        bounds.push((least, Bound::IcmpRateLimit));
    }
    if let Some(rate) = timing.max_rate.filter(|r| *r > 0) {
        bounds.push((probes / f64::from(rate), Bound::Rate(rate)));
    }
    if let Some(rate) = timing.max_rate_per_target.filter(|r| *r > 0) {
        bounds.push((ports as f64 / f64::from(rate), Bound::RatePerTarget(rate)));
    }
    let (secs, bound) = bounds.into_iter().max_by(|a, b| a.0.total_cmp(&b.0))?;
    let up_to = udp_limited
        .then(|| Duration::from_secs_f64((most * UDP_OVERHEAD.0 + UDP_OVERHEAD.1).max(secs)));
    Some(Estimate {
        duration: Duration::from_secs_f64(secs),
        up_to,
        bound,
        targets: unique.len(),
        ports,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_name_what_bounds_the_scan() {
        use crate::ScanKind;
        let t = Timing::default();
        let addrs = |list: &[&str]| -> Vec<std::net::IpAddr> {
            list.iter().map(|a| a.parse().expect("address")).collect()
        };
        let one = addrs(&["10.213.0.11"]);
        let two = addrs(&["10.213.0.11", "fd00:213::12", "10.213.0.11"]);
        // TCP without caps: only the path bounds it.
        assert_eq!(estimate(ScanKind::Syn, &one, 65535, &t), None);
        // UDP: the targets' ICMP rate limit, for every port and target; none on loopback.
        let e = estimate(ScanKind::Udp, &one, 65535, &t).expect("bounded");
        assert_eq!(e.bound, Bound::IcmpRateLimit);
        assert_eq!((e.targets, e.ports), (1, 65535));
        assert!(e.duration > Duration::from_secs(3600 * 18), "{e:?}");
        assert!(e.up_to > Some(Duration::from_secs(3600 * 21)), "{e:?}");
        // Targets are waited on side by side: the slowest (IPv4 here) decides.
        let both = estimate(ScanKind::Udp, &two, 65535, &t).expect("bounded");
        assert_eq!(both.targets, 2);
        assert_eq!(both.duration, e.duration);
        assert_eq!(
            estimate(ScanKind::Udp, &addrs(&["127.0.0.1", "::1"]), 65535, &t),
            None
        );
        // Rate caps: the tighter one decides.
        let capped = Timing {
            max_rate: Some(100),
            max_rate_per_target: Some(10),
            ..Timing::default()
        };
        let e = estimate(ScanKind::Syn, &two, 1000, &capped).expect("bounded");
        assert_eq!(
            (e.bound, e.duration, e.up_to),
            (Bound::RatePerTarget(10), Duration::from_secs(100), None)
        );
        let twenty: Vec<std::net::IpAddr> = (1..=20)
            .map(|i| format!("10.213.0.{i}").parse().expect("address"))
            .collect();
        let e = estimate(ScanKind::Connect, &twenty, 1000, &capped).expect("bounded");
        assert_eq!(
            (e.bound, e.duration),
            (Bound::Rate(100), Duration::from_secs(200))
        );
    }

    /// UDP scans on a lab node under Linux's default ICMP rate limits (kernel 6.18, release
    /// build, default timing, one source address): targets (IPv4, IPv6), ports (38 closed and 2
    /// dropped on IPv4, 40 closed on IPv6), seconds.
    const MEASURED_UDP: [(usize, usize, usize, f64); 3] =
        [(1, 0, 40, 36.9), (0, 1, 40, 3.7), (1, 1, 40, 37.0)];

    #[test]
    fn udp_estimates_hold_every_measured_scan() {
        use crate::ScanKind;
        let t = Timing::default();
        for (v4, v6, ports, secs) in MEASURED_UDP {
            let addrs: Vec<std::net::IpAddr> = (1..=v4)
                .map(|i| format!("10.213.0.{i}"))
                .chain((1..=v6).map(|i| format!("fd00:213::{i}")))
                .map(|a| a.parse().expect("address"))
                .collect();
            let e = estimate(ScanKind::Udp, &addrs, ports, &t).expect("bounded");
            let measured = Duration::from_secs_f64(secs);
            assert!(
                e.duration <= measured,
                "{v4}+{v6} x {ports}: estimated at least {:?}, measured {measured:?}",
                e.duration
            );
            assert!(
                e.up_to >= Some(measured),
                "{v4}+{v6} x {ports}: estimated up to {:?}, measured {measured:?}",
                e.up_to
            );
        }
        // Loopback answers at once and waits for nobody.
        let addrs = |list: &[&str]| -> Vec<std::net::IpAddr> {
            list.iter().map(|a| a.parse().expect("address")).collect()
        };
        let mixed = estimate(
            ScanKind::Udp,
            &addrs(&["127.0.0.1", "10.213.0.1"]),
            1000,
            &t,
        )
        .expect("bounded");
        let alone = estimate(ScanKind::Udp, &addrs(&["10.213.0.1"]), 1000, &t).expect("bounded");
        assert_eq!(mixed.duration, alone.duration, "loopback answers at once");
        assert_eq!(mixed.targets, 2);
        assert_eq!(mixed.up_to, alone.up_to, "{mixed:?}");
    }

    #[test]
    fn estimator_follows_adjust_timeouts2() {
        let t = Timing::default();
        let mut e = RttEstimator::new(&t);
        assert_eq!(e.timeout(), Duration::from_millis(500));
        e.sample(1_000);
        // srtt = 1 ms, rttvar = max(5 ms, 1 ms) = 5 ms → 21 ms, clamped to min 100 ms.
        assert_eq!(e.srtt_us(), Some(1_000));
        assert_eq!(e.timeout(), Duration::from_millis(100));
        let mut t2 = t.clone();
        t2.min_rtt_timeout = Duration::from_millis(1);
        let mut e = RttEstimator::new(&t2);
        e.sample(1_000);
        assert_eq!(e.timeout(), Duration::from_micros(21_000));
        for _ in 0..100 {
            e.sample(1_000);
        }
        // rttvar decays towards 0, srtt stays 1 ms: timeout → the 1 ms floor.
        assert!(e.timeout() < Duration::from_millis(3), "{:?}", e.timeout());
    }

    /// Most grants in any window of `window_ns` (windows starting at each grant).
    fn max_in_window(grants: &[u64], window_ns: u64) -> u64 {
        let mut best = 0;
        let mut lo = 0;
        for hi in 0..grants.len() {
            while grants[hi] - grants[lo] >= window_ns {
                lo += 1;
            }
            best = best.max((hi - lo + 1) as u64);
        }
        best
    }

    #[test]
    fn target_pacer_bounds_every_window_for_each_target() {
        // A fake clock: greedy senders ask for a token for one of three targets at irregular
        // times (a deterministic pseudo-random walk), far more often than the rate allows.
        for rate in [1u32, 50, 1_000, 20_000, 250_000] {
            let pacer = TargetPacer::new(Some(rate), 3).expect("capped");
            let mut grants: [Vec<u64>; 3] = Default::default();
            let (mut now, mut x) = (0u64, 0x2545_f491_4f6c_dd1du64);
            let mut next = || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            let horizon = 2_000_000_000u64.min(20_000 * 1_000_000_000 / u64::from(rate));
            // Requests come about 50 times as often as the rate allows, at random gaps.
            let max_gap = 2 * 1_000_000_000 / u64::from(rate) / 50 + 1;
            while now < horizon {
                let target = (next() % 3) as usize;
                if pacer.take(target, now) == 0 {
                    grants[target].push(now);
                } else {
                    assert!(pacer.wait(target, now) > 0);
                }
                now += next() % max_gap;
            }
            for (t, g) in grants.iter().enumerate() {
                for window in [1_000_000u64, 10_000_000, 100_000_000, 1_000_000_000] {
                    let bound = pacer.burst() + (window * u64::from(rate)).div_ceil(1_000_000_000);
                    let seen = max_in_window(g, window);
                    assert!(
                        seen <= bound,
                        "rate {rate}, target {t}: {seen} probes in {window} ns, bound {bound}"
                    );
                }
                // And the pacer is not stingy: over the run the target got close to the rate.
                let expected = horizon as f64 * f64::from(rate) / 1e9;
                assert!(
                    g.len() as f64 >= expected * 0.85 - 2.0,
                    "rate {rate}, target {t}: only {} probes, expected about {expected}",
                    g.len()
                );
            }
        }
        assert!(TargetPacer::new(None, 3).is_none());
        assert!(TargetPacer::new(Some(0), 3).is_none());
    }

    #[test]
    fn allowed_tries_grow_with_loss() {
        assert_eq!(allowed_tryno(0, 6), 1);
        assert_eq!(allowed_tryno(1, 6), 2);
        assert_eq!(allowed_tryno(9, 6), 6);
        assert_eq!(allowed_tryno(0, 0), 0);
    }

    #[test]
    fn window_slow_start_and_back_off() {
        let t = Timing::default();
        let mut c = Congestion::new(&t);
        for _ in 0..100 {
            c.ack();
        }
        assert_eq!(c.window(), 110);
        // Occasional loss (below the tolerance) does not cut the window.
        c.observe(true);
        assert!(!c.drop_seen(10, 20, 100, false));
        assert_eq!(c.window(), 110);
        // Sustained loss does.
        for _ in 0..20 {
            c.observe(true);
        }
        assert!(c.loss_rate() > 0.1);
        assert!(c.drop_seen(10, 20, 100, false));
        assert_eq!(c.window(), 55);
        // A probe sent before the cut is the same event.
        assert!(!c.drop_seen(15, 30, 100, false));
        assert!(c.drop_seen(25, 30, 100, true));
        assert_eq!(c.drops(), 2);
    }

    #[test]
    fn loss_that_does_not_fall_when_slowing_down_is_the_paths() {
        let t = Timing::default();
        let mut c = Congestion::new(&t);
        for _ in 0..300 {
            c.ack();
        }
        let w = c.window();
        // 20 % loss, before and after the cut: the window comes back, and the same loss no
        // longer cuts it.
        for i in 0..100 {
            c.observe(i % 5 == 0);
        }
        assert!(c.drop_seen(10, 20, w, false));
        assert!(c.window() < w);
        for i in 0..Congestion::EXPERIMENT {
            c.observe(i % 5 == 0);
        }
        assert_eq!(c.window(), w);
        assert!(!c.drop_seen(30, 40, w, false));

        // Loss that stops once we slow down is ours: the cut stays.
        let mut c = Congestion::new(&t);
        for _ in 0..300 {
            c.ack();
        }
        for i in 0..100 {
            c.observe(i % 5 == 0);
        }
        assert!(c.drop_seen(10, 20, w, false));
        let cut = c.window();
        for _ in 0..Congestion::EXPERIMENT {
            c.observe(false);
        }
        assert!(c.window() <= cut + 1);
    }
}
