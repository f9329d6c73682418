//! The raw-socket timing engine: one send thread per CPU and one receive thread, sharing flat
//! arrays.
//!
//! # Design
//!
//! Every (target, port) pair has an index `host * nports + port_position`, and a few small
//! atomics per index: the merged result (state and reason), the latest try number with an
//! "outstanding" bit, and send times. Because a reply names its target, port and try number
//! (see `probe`), the receive thread turns a packet into an index with two array reads — no
//! search through outstanding probes, no lock on the hot path except the small timing state.
//! It drains the packet socket in batches without blocking on it, so senders never pay a
//! wake-up per reply.
//!
//! Send threads take fresh probes in chunks from one shared cursor (`fresh`), in port-major
//! order (so several targets are interleaved), and send them in batches (one sendmmsg(2) per
//! batch); each owns the retransmissions and FIFOs of outstanding probes of what it sent.
//! Probes leave the congestion window when answered (the receive thread clears the
//! outstanding bit), when they time out, or when they are presumed lost because a
//! probe sent noticeably later was already answered (TCP's RACK idea) — the send thread clears
//! the bit then; exactly one side wins the compare-and-swap, so the in-flight count stays exact
//! without a shared queue. Presumed loss only speeds up retransmission: a port is called silent
//! only after its last try has waited the full nmap timeout, so the verdicts are nmap's.
//!
//! A silent probe is retransmitted until nmap's allowance (`allowedTryno`, which grows once a
//! retransmission has been answered, i.e. once loss is proven) is used up; then the port
//! gets the scan's silent state (filtered, or open|filtered for UDP). Ports called silent
//! before loss showed up on their host are reopened for the extra tries before the scan ends.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::classify::{self, Reply};
use crate::confirm;
use crate::model::{PortState, Reason, ScanKind, ScanStats};
use crate::net::{RawSender, Receiver, Sent};
use crate::packet;
use crate::probe::{CONFIRM_TRYNO, Identity, MAX_TRYNO, RawProbe};
use crate::timing::{Congestion, RttEstimator, TargetPacer, Timing, allowed_tryno};
use crate::{Progress, ProgressFn, ScanError};

const OUTSTANDING: u8 = 0x80;
const TRY_MASK: u8 = 0x7f;

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

fn encode(state: PortState, reason: Reason) -> u16 {
    (u16::from(state.code()) << 8) | u16::from(reason.code())
}

fn decode_result(v: u16) -> Option<(PortState, Reason)> {
    if v == 0 {
        return None;
    }
    Some((
        PortState::from_code((v >> 8) as u8)?,
        Reason::from_code((v & 0xff) as u8)?,
    ))
}

struct TimingState {
    rtt: RttEstimator,
    cong: Congestion,
}

/// State shared by the send and receive threads (and the connect engine).
pub(crate) struct Shared {
    kind: ScanKind,
    nports: usize,
    results: Vec<AtomicU16>,
    tries: Vec<AtomicU8>,
    sent_at: Vec<AtomicU32>,
    first_sent: Vec<AtomicU32>,
    latest_answered_sent: AtomicU64,
    max_retries: u8,
    /// nmap's scan delay (µs between probes), boosted when probes need many tries.
    scan_delay_us: AtomicU64,
    /// Earliest time (µs) the next probe may go out under the scan delay.
    next_send_us: AtomicU64,
    max_ok_tryno: Vec<AtomicU8>,
    /// Per host: highest try number sent so far, and until when (µs) retransmissions to it
    /// pause (nmap's rate-limit detection, `rld`).
    max_tryno_sent: Vec<AtomicU8>,
    rld_until: Vec<AtomicU64>,
    /// Per index: the result came from an ICMP error sent by the target itself (such a port
    /// can be the sentinel of a confirmation round; see `confirm`).
    icmp_answered: Vec<AtomicBool>,
    /// Per index: `(time µs << 4) | tryno` of the latest reply.
    reply_mark: Vec<AtomicU64>,
    /// Per host: ICMP errors from the target that answered a first try (its burst, when it
    /// rate-limits them).
    icmp_first: Vec<AtomicU32>,
    /// Per index: its silent verdict awaits the confirmation phase and is not counted done,
    /// so progress never goes backwards when the phase withdraws it.
    provisional: Vec<AtomicBool>,
    /// More than one probe in the scan (nmap only pauses then).
    several: bool,
    responded: AtomicU64,
    resolved: AtomicU64,
    replies: AtomicU64,
    sent: AtomicU64,
    expired: AtomicU64,
    drops: AtomicU64,
    stop: AtomicBool,
    /// The confirmation phase runs: few packets, paced in seconds; the receive thread naps
    /// longer.
    confirming: AtomicBool,
    sender_parked: Vec<AtomicBool>,
    abort: AtomicBool,
    timing: Mutex<TimingState>,
    /// Per-target rate cap (`Timing::max_rate_per_target`), shared by every sender.
    pacer: Option<TargetPacer>,
    start: Instant,
}

impl Shared {
    pub(crate) fn new(
        kind: ScanKind,
        nhosts: usize,
        nports: usize,
        timing: &Timing,
        nsenders: usize,
    ) -> Self {
        let n = nhosts * nports;
        Shared {
            kind,
            nports,
            results: (0..n).map(|_| AtomicU16::new(0)).collect(),
            tries: (0..n).map(|_| AtomicU8::new(0)).collect(),
            sent_at: (0..n).map(|_| AtomicU32::new(0)).collect(),
            first_sent: (0..n).map(|_| AtomicU32::new(0)).collect(),
            latest_answered_sent: AtomicU64::new(0),
            max_retries: timing.max_retries,
            scan_delay_us: AtomicU64::new(0),
            next_send_us: AtomicU64::new(0),
            max_ok_tryno: (0..nhosts).map(|_| AtomicU8::new(0)).collect(),
            max_tryno_sent: (0..nhosts).map(|_| AtomicU8::new(0)).collect(),
            rld_until: (0..nhosts).map(|_| AtomicU64::new(0)).collect(),
            icmp_answered: (0..n).map(|_| AtomicBool::new(false)).collect(),
            reply_mark: (0..n).map(|_| AtomicU64::new(0)).collect(),
            icmp_first: (0..nhosts).map(|_| AtomicU32::new(0)).collect(),
            provisional: (0..n).map(|_| AtomicBool::new(false)).collect(),
            several: n > 1,
            responded: AtomicU64::new(0),
            resolved: AtomicU64::new(0),
            replies: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            drops: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            confirming: AtomicBool::new(false),
            sender_parked: (0..nsenders.max(1))
                .map(|_| AtomicBool::new(false))
                .collect(),
            abort: AtomicBool::new(false),
            timing: Mutex::new(TimingState {
                rtt: RttEstimator::new(timing),
                cong: Congestion::new(timing),
            }),
            pacer: TargetPacer::new(timing.max_rate_per_target, nhosts),
            start: Instant::now(),
        }
    }

    pub(crate) fn now_us(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TimingState> {
        // A poisoned lock only means another thread panicked mid-update; the numbers are
        // still usable for timing.
        self.timing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// (timeout µs, window) right now.
    pub(crate) fn timing_now(&self) -> (u64, u64) {
        let t = self.lock();
        (
            u64::try_from(t.rtt.timeout().as_micros()).unwrap_or(u64::MAX),
            t.cong.window(),
        )
    }

    pub(crate) fn in_flight(&self) -> u64 {
        let sent = self.sent.load(Ordering::Acquire);
        let gone = self.responded.load(Ordering::Acquire) + self.expired.load(Ordering::Acquire);
        sent.saturating_sub(gone)
    }

    pub(crate) fn has_result(&self, idx: usize) -> bool {
        self.results[idx].load(Ordering::Acquire) != 0
    }

    /// The per-target rate cap: takes a token for `host` and returns 0 when a probe may go to
    /// it now, else the microseconds to wait (nothing taken). Without a cap it returns at once,
    /// without reading the clock: it runs once per probe in both send loops.
    pub(crate) fn pace(&self, host: usize) -> u64 {
        match &self.pacer {
            None => 0,
            Some(p) => p
                .take(host, self.now_us().saturating_mul(1_000))
                .div_ceil(1_000),
        }
    }

    /// Records that try `tryno` of `idx` is being sent now.
    pub(crate) fn mark_sent(&self, idx: usize, tryno: u8, now_us: u64) {
        if tryno == 0 {
            self.first_sent[idx].store(now_us as u32, Ordering::Release);
        }
        self.sent_at[idx].store(now_us as u32, Ordering::Release);
        self.tries[idx].store(OUTSTANDING | tryno, Ordering::Release);
        self.sent.fetch_add(1, Ordering::AcqRel);
    }

    /// Try `tryno` of `idx` is presumed lost (a later probe was answered): it leaves the
    /// congestion window, though its port keeps waiting for the full timeout.
    pub(crate) fn mark_lost(&self, idx: usize, tryno: u8) {
        let cur = self.tries[idx].load(Ordering::Acquire);
        if cur == OUTSTANDING | tryno
            && self.tries[idx]
                .compare_exchange(cur, tryno, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.expired.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// If `idx` was called silent with fewer tries than its host now allows (loss was seen
    /// after the verdict), withdraws the verdict and returns the next try number.
    pub(crate) fn reopen_if_undertried(&self, idx: usize) -> Option<u8> {
        let (s, r) = classify::silent(self.kind);
        let silent = encode(s, r);
        if self.results[idx].load(Ordering::Acquire) != silent {
            return None;
        }
        let tryno = self.tries[idx].load(Ordering::Acquire) & TRY_MASK;
        if tryno >= self.allowed_tryno(idx / self.nports) {
            return None;
        }
        self.results[idx]
            .compare_exchange(silent, 0, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        self.resolved.fetch_sub(1, Ordering::AcqRel);
        Some(tryno + 1)
    }

    /// The highest try number a silent probe of `host` may reach now (nmap's `allowedTryno`).
    pub(crate) fn allowed_tryno(&self, host: usize) -> u8 {
        let max_ok = self.max_ok_tryno[host].load(Ordering::Acquire);
        self.cap_for_confirmation(host, allowed_tryno(max_ok, self.max_retries))
    }

    /// On a UDP or connect scan of a host that answers with ICMP errors, a port silent after
    /// its first try is left to the confirmation phase (`confirm`), whose rounds are its
    /// retransmissions: they tell a withheld error from silence at the rate the host answers,
    /// where retransmissions here could only guess (they are what nmap slows down for).
    fn cap_for_confirmation(&self, host: usize, allowed: u8) -> u8 {
        if self.left_to_confirmation(host) {
            0
        } else {
            allowed.min(MAX_TRYNO)
        }
    }

    /// Whether silent ports of `host` go to the confirmation phase (see above).
    fn left_to_confirmation(&self, host: usize) -> bool {
        matches!(self.kind, ScanKind::Udp | ScanKind::Connect)
            && self.icmp_first[host].load(Ordering::Acquire) > 0
    }

    /// Ports of the scan.
    pub(crate) fn nports(&self) -> usize {
        self.nports
    }

    /// Whether `idx` was answered by an ICMP error from the target itself.
    pub(crate) fn icmp_answered(&self, idx: usize) -> bool {
        self.icmp_answered[idx].load(Ordering::Acquire)
    }

    /// ICMP errors from `host` that answered first tries.
    pub(crate) fn icmp_first(&self, host: usize) -> u32 {
        self.icmp_first[host].load(Ordering::Acquire)
    }

    /// Whether try `tryno` of `idx` was answered at or after `since_us`.
    pub(crate) fn answered_since(&self, idx: usize, tryno: u8, since_us: u64) -> bool {
        let m = self.reply_mark[idx].load(Ordering::Acquire);
        m & 0xf == u64::from(tryno & 0xf) && m >> 4 >= since_us
    }

    /// Withdraws the silent verdict of `idx` so a confirmation round can settle it; false when
    /// it has another result.
    pub(crate) fn withdraw_silent(&self, idx: usize) -> bool {
        let (s, r) = classify::silent(self.kind);
        let ok = self.results[idx]
            .compare_exchange(encode(s, r), 0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if ok && !self.provisional[idx].swap(false, Ordering::AcqRel) {
            self.resolved.fetch_sub(1, Ordering::AcqRel);
        }
        ok
    }

    /// Gives `idx` the silent state with `reason` unless an answer settled it already.
    pub(crate) fn settle_silent(&self, idx: usize, reason: Reason) {
        let (s, _) = classify::silent(self.kind);
        if self.results[idx]
            .compare_exchange(0, encode(s, reason), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.resolved.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Send time (µs) of the latest-sent probe that has been answered.
    pub(crate) fn latest_answered_sent(&self) -> u64 {
        self.latest_answered_sent.load(Ordering::Acquire)
    }

    /// Smoothed RTT in µs (0 before the first sample).
    pub(crate) fn srtt_us(&self) -> u64 {
        self.lock().rtt.srtt_us().unwrap_or(0)
    }

    /// The send timeout of try `tryno` of `idx` expired. Returns `Some(next_tryno)` when the
    /// probe should be retransmitted; otherwise the port is finished (answered, or now silent).
    pub(crate) fn on_expiry(&self, idx: usize, tryno: u8, max_retries: u8) -> Option<u8> {
        let cur = self.tries[idx].load(Ordering::Acquire);
        if cur & TRY_MASK != tryno {
            return None;
        }
        if cur & OUTSTANDING != 0
            && self.tries[idx]
                .compare_exchange(cur, cur & TRY_MASK, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.expired.fetch_add(1, Ordering::AcqRel);
        }
        if self.has_result(idx) {
            return None;
        }
        let host = idx / self.nports;
        let max_ok = self.max_ok_tryno[host].load(Ordering::Acquire);
        let allowed = self.cap_for_confirmation(host, allowed_tryno(max_ok, max_retries));
        if tryno < allowed {
            return Some(tryno + 1);
        }
        let (s, r) = classify::silent(self.kind);
        if self.results[idx]
            .compare_exchange(0, encode(s, r), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            if self.left_to_confirmation(host) {
                self.provisional[idx].store(true, Ordering::Release);
            } else {
                self.resolved.fetch_add(1, Ordering::AcqRel);
            }
        }
        None
    }

    /// A reply for try `tryno` of (host, port position) arrived.
    pub(crate) fn on_reply(&self, host: usize, pos: usize, tryno: u8, reply: Reply) {
        let Some((state, reason)) = classify::classify(self.kind, reply) else {
            return;
        };
        let idx = host * self.nports + pos;
        self.replies.fetch_add(1, Ordering::AcqRel);
        let now = self.now_us();
        self.reply_mark[idx].store((now << 4) | u64::from(tryno & 0xf), Ordering::Release);
        if reply.is_icmp_from_target() {
            self.icmp_answered[idx].store(true, Ordering::Release);
            if tryno == 0 {
                self.icmp_first[host].fetch_add(1, Ordering::AcqRel);
            }
        }
        let cur = self.tries[idx].load(Ordering::Acquire);
        let mut rtt = None;
        if cur & OUTSTANDING != 0
            && cur & TRY_MASK == tryno
            && self.tries[idx]
                .compare_exchange(cur, cur & TRY_MASK, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.responded.fetch_add(1, Ordering::AcqRel);
            let sent = u64::from(self.sent_at[idx].load(Ordering::Acquire));
            self.latest_answered_sent.fetch_max(sent, Ordering::AcqRel);
            rtt = Some(now.wrapping_sub(sent) & 0xffff_ffff);
        }
        // Merge as nmap's ultrascan_port_pspec_update(); the reason always follows the latest
        // reply (nmap calls setStateReason() after every update).
        let mut old = self.results[idx].load(Ordering::Acquire);
        let mut first_answer = false;
        loop {
            let merged = classify::merge(self.kind, decode_result(old).map(|x| x.0), state);
            match self.results[idx].compare_exchange(
                old,
                encode(merged, reason),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    if old == 0 {
                        first_answer = true;
                        self.resolved.fetch_add(1, Ordering::AcqRel);
                    }
                    break;
                }
                Err(actual) => old = actual,
            }
        }
        let mut t = self.lock();
        if let Some(r) = rtt {
            t.rtt.sample(i64::try_from(r).unwrap_or(i64::MAX));
        }
        // Answers to confirmation rounds say nothing about loss on the path: the rounds are
        // paced by the target's ICMP budget, and their probes are not retransmissions.
        if tryno < CONFIRM_TRYNO && classify::counts_for_timing(self.kind, state, tryno) {
            if first_answer {
                t.cong.observe(tryno > 0);
            }
            if tryno > 0 && first_answer {
                // The port's first answer came to a retransmission: an earlier probe or its
                // answer was lost. One back-off per loss event: losses of probes first sent
                // before the last back-off belong to the event already handled.
                let before = self.max_ok_tryno[host].fetch_max(tryno, Ordering::AcqRel);
                if tryno > 4 && tryno > before {
                    self.boost_scan_delay();
                }
                let first = u64::from(self.first_sent[idx].load(Ordering::Acquire));
                if t.cong.drop_seen(first, now, self.in_flight(), false) {
                    self.drops.fetch_add(1, Ordering::AcqRel);
                }
            } else if tryno == 0 {
                t.cong.ack();
            }
        }
    }

    /// nmap's `boostScanDelay()` (at `-T4`, triggered when a port first answers its fifth
    /// try): start at 5 ms (TCP) or 50 ms (UDP), then double, up to 10 ms (TCP) or 1 s (UDP).
    /// This is what keeps UDP scans correct against hosts that rate-limit ICMP errors.
    fn boost_scan_delay(&self) {
        let (start, max) = if self.kind == ScanKind::Udp {
            (50_000, 1_000_000)
        } else {
            (5_000, 10_000)
        };
        let _ = self
            .scan_delay_us
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| {
                Some(if d == 0 { start } else { (d * 2).min(max) })
            });
    }

    /// Microseconds until the scan delay lets the next probe go (0 = now); when 0, the
    /// slot is taken.
    pub(crate) fn scan_delay_wait(&self, now_us: u64) -> u64 {
        let delay = self.scan_delay_us.load(Ordering::Acquire);
        if delay == 0 {
            return 0;
        }
        let next = self.next_send_us.load(Ordering::Acquire);
        if now_us < next {
            return next - now_us;
        }
        match self.next_send_us.compare_exchange(
            next,
            now_us + delay,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => 0,
            Err(_) => 1,
        }
    }

    /// nmap's rate-limit detection: the first time a host is about to get try `tryno`,
    /// retransmissions to it pause for one second, so a target that rate-limits its answers
    /// (ICMP port-unreachable above all: Linux sends about one per second after a burst of six)
    /// has refilled its budget. Returns µs to wait before try `tryno` may go to `host`.
    ///
    /// nmap pauses for every scan type; we pause only once the host has answered a
    /// retransmission (loss or rate limiting is proven). A port that is simply dropped never
    /// answers, and pausing for it would only cost a second per scan; a target that withholds
    /// ICMP errors is handled by the confirmation phase (`confirm`), which measures its rate
    /// instead of assuming one.
    pub(crate) fn rld_wait(&self, host: usize, tryno: u8, now_us: u64) -> u64 {
        if tryno == 0 || !self.several {
            return 0;
        }
        let until = self.rld_until[host].load(Ordering::Acquire);
        if now_us < until {
            return until - now_us;
        }
        let applies =
            self.max_ok_tryno[host].load(Ordering::Acquire) > 0 && !self.left_to_confirmation(host);
        if applies && self.max_tryno_sent[host].fetch_max(tryno, Ordering::AcqRel) < tryno {
            self.rld_until[host].fetch_max(now_us + 1_000_000, Ordering::AcqRel);
            return 1_000_000;
        }
        0
    }

    /// Like [`Shared::scan_delay_wait`] without taking the slot.
    pub(crate) fn scan_delay_wait_peek(&self, now_us: u64) -> u64 {
        if self.scan_delay_us.load(Ordering::Acquire) == 0 {
            return 0;
        }
        self.next_send_us
            .load(Ordering::Acquire)
            .saturating_sub(now_us)
    }

    /// Loss seen outside any one probe (our receive queue overflowed).
    pub(crate) fn on_local_drop(&self) {
        let now = self.now_us();
        let mut t = self.lock();
        if t.cong.drop_seen(now, now, self.in_flight(), true) {
            self.drops.fetch_add(1, Ordering::AcqRel);
        }
    }

    pub(crate) fn progress(&self, total: u64) -> Progress {
        Progress {
            done: self.resolved.load(Ordering::Acquire),
            total,
            elapsed: self.start.elapsed(),
            probes_sent: self.sent.load(Ordering::Acquire),
            rate_limit_interval_ms: None,
            estimated_left: None,
        }
    }

    pub(crate) fn into_outcome(self, retransmissions: u64) -> Outcome {
        let t = self.lock();
        let stats = ScanStats {
            probes_sent: self.sent.load(Ordering::Acquire),
            retransmissions,
            replies: self.replies.load(Ordering::Acquire),
            drops_detected: self.drops.load(Ordering::Acquire),
            final_cwnd: u32::try_from(t.cong.window()).unwrap_or(u32::MAX),
            srtt_us: t.rtt.srtt_us().unwrap_or(0),
            timeout_us: u64::try_from(t.rtt.timeout().as_micros()).unwrap_or(0),
        };
        drop(t);
        let silent = classify::silent(self.kind);
        let results = self
            .results
            .iter()
            .map(|r| decode_result(r.load(Ordering::Acquire)).unwrap_or(silent))
            .collect();
        Outcome {
            results,
            rate_limits: Vec::new(),
            stats,
        }
    }
}

/// Paces sends to at most `rate` per second (token bucket with a small burst).
pub(crate) struct RateCap {
    rate: Option<f64>,
    burst: f64,
}

impl RateCap {
    pub(crate) fn new(rate: Option<u32>) -> Self {
        let rate = rate.filter(|r| *r > 0).map(f64::from);
        RateCap {
            rate,
            burst: rate.map(|r| (r / 1000.0).clamp(1.0, 256.0)).unwrap_or(0.0),
        }
    }

    /// Microseconds to wait before the next send may go out (0 = now).
    pub(crate) fn wait_us(&self, sent: u64, now_us: u64) -> u64 {
        let Some(rate) = self.rate else { return 0 };
        let allowed = rate * now_us as f64 / 1e6 + self.burst;
        if (sent as f64) < allowed {
            0
        } else {
            (((sent as f64 + 1.0 - self.burst) / rate * 1e6) as u64).saturating_sub(now_us)
        }
    }
}

/// Runs a raw scan (SYN, ACK or UDP) in the calling thread's network namespace.
pub(crate) fn run_raw(plan: Plan) -> Result<Outcome, ScanError> {
    let probe = match plan.kind {
        ScanKind::Syn => RawProbe::Syn,
        ScanKind::Ack => RawProbe::Ack,
        ScanKind::Udp => RawProbe::Udp,
        ScanKind::Connect => {
            return Err(ScanError::Config(
                "connect scans do not use the raw engine".into(),
            ));
        }
    };
    let kind_name = plan.kind.nmap_name();
    let want_v4 = plan.targets.iter().any(IpAddr::is_ipv4);
    let v6_source = plan.sources.iter().find_map(|s| match s {
        IpAddr::V6(a) => Some(*a),
        IpAddr::V4(_) => None,
    });
    let proto = if plan.kind == ScanKind::Udp {
        packet::PROTO_UDP
    } else {
        packet::PROTO_TCP
    };
    // Open the receive socket first: it queues packets from the moment it exists, so no
    // reply can arrive before we listen.
    let rx = Receiver::open(kind_name, plan.id.base_sport)?;
    // One sender per CPU (at most 4): on a local path most of the cost of a probe is the
    // kernel's work for it and for its answer, done in the sending thread's context.
    let nsenders = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4)
        .min(plan.targets.len() * plan.ports.len());
    let txs = (0..nsenders)
        .map(|_| RawSender::open(kind_name, want_v4, v6_source, proto))
        .collect::<Result<Vec<_>, _>>()?;

    let nhosts = plan.targets.len();
    let nports = plan.ports.len();
    let shared = Shared::new(plan.kind, nhosts, nports, &plan.timing, nsenders);
    let cursor = crate::fresh::FreshCursor::new(nhosts * nports);
    let host_index: HashMap<IpAddr, usize> = plan
        .targets
        .iter()
        .enumerate()
        .map(|(i, a)| (*a, i))
        .collect();
    let mut port_pos = vec![u32::MAX; 65536];
    for (i, p) in plan.ports.iter().enumerate() {
        port_pos[usize::from(*p)] = u32::try_from(i).unwrap_or(u32::MAX);
    }
    let mut sources: Vec<IpAddr> = plan.sources.clone();
    sources.extend(&plan.extra_sources);
    sources.sort();
    sources.dedup();

    let spawn_err = |source| ScanError::Socket {
        what: "starting a scan thread".into(),
        source,
    };
    let mut limits = Vec::new();
    let retransmissions = std::thread::scope(|scope| -> Result<u64, ScanError> {
        let mut senders = Vec::with_capacity(nsenders);
        for (k, tx) in txs.iter().enumerate() {
            let (shared, plan, cursor) = (&shared, &plan, &cursor);
            let h = std::thread::Builder::new()
                .name(format!("scan-send-{k}"))
                .spawn_scoped(scope, move || {
                    send_loop(shared, plan, tx, cursor, probe, k, nsenders)
                })
                .map_err(spawn_err)?;
            senders.push(h);
        }
        let threads: Vec<std::thread::Thread> =
            senders.iter().map(|h| h.thread().clone()).collect();
        let (shared_r, id) = (&shared, plan.id);
        let (rx, host_index, port_pos, sources) = (&rx, &host_index, &port_pos, &sources);
        let receiver = std::thread::Builder::new()
            .name("scan-recv".into())
            .spawn_scoped(scope, move || {
                receive_loop(
                    shared_r, rx, probe, &id, host_index, port_pos, sources, &threads,
                )
            });
        let mut total = 0u64;
        let mut first_err: Option<ScanError> = None;
        for h in senders {
            match h.join() {
                Ok(Ok(n)) => total += n,
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    first_err.get_or_insert(ScanError::ThreadPanicked("scan-send"));
                }
            }
            // Let the other senders finish promptly if one failed.
            if first_err.is_some() {
                shared.abort.store(true, Ordering::Release);
            }
        }
        // The receive thread keeps running for the confirmation phase (UDP only: in SYN and
        // ACK scans an ICMP error and silence give the same state).
        if first_err.is_none()
            && plan.kind == ScanKind::Udp
            && let Some(tx) = txs.first()
        {
            shared.confirming.store(true, Ordering::Release);
            let mut io = RawRounds::new(&plan, probe, tx, kind_name);
            match confirm::run(&shared, &confirm_setup(&plan), &mut io) {
                Ok(l) => limits = l,
                Err(e) => first_err = Some(e),
            }
        }
        shared.stop.store(true, Ordering::Release);
        let receiver = receiver.map_err(spawn_err)?;
        receiver
            .join()
            .map_err(|_| ScanError::ThreadPanicked("scan-recv"))?;
        match first_err {
            Some(e) => Err(e),
            None => Ok(total),
        }
    })?;
    if let Some(cb) = &plan.progress {
        cb(&shared.progress((nhosts * nports) as u64));
    }
    let mut outcome = shared.into_outcome(retransmissions);
    outcome.rate_limits = limits;
    Ok(outcome)
}

/// What the confirmation phase needs to know of a plan.
pub(crate) fn confirm_setup(plan: &Plan) -> confirm::Setup<'_> {
    confirm::Setup {
        targets: &plan.targets,
        sources: &plan.sources,
        extra_sources: &plan.extra_sources,
        budget: plan.confirm_budget,
        progress: plan.progress.as_ref(),
        total: (plan.targets.len() * plan.ports.len()) as u64,
    }
}

/// Sleeps until a probe to `host` may leave under the rate caps (total and per target).
pub(crate) fn wait_for_caps(shared: &Shared, rate: &RateCap, host: usize) {
    loop {
        let now = shared.now_us();
        let wait = rate.wait_us(shared.sent.load(Ordering::Acquire), now);
        let wait = if wait > 0 { wait } else { shared.pace(host) };
        if wait == 0 {
            return;
        }
        std::thread::sleep(Duration::from_micros(wait.min(100_000)));
    }
}

/// Confirmation rounds over raw sockets: the send socket of the first pass (IPv4 probes
/// carry their own source address), one more IPv6 socket per extra IPv6 source (the kernel
/// fills in an IPv6 raw socket's source from its binding); the receive thread hears answers.
struct RawRounds<'a> {
    plan: &'a Plan,
    probe: RawProbe,
    tx: &'a RawSender,
    kind_name: &'static str,
    v6_extra: Vec<(IpAddr, RawSender)>,
    rate: RateCap,
    batch: crate::net::SendBatch,
}

impl<'a> RawRounds<'a> {
    fn new(plan: &'a Plan, probe: RawProbe, tx: &'a RawSender, kind_name: &'static str) -> Self {
        RawRounds {
            plan,
            probe,
            tx,
            kind_name,
            v6_extra: Vec::new(),
            rate: RateCap::new(plan.timing.max_rate),
            batch: crate::net::SendBatch::new(),
        }
    }

    /// Which socket sends from `source`: `None` for the first pass's, else the extra IPv6
    /// socket at that position (opened on first use).
    fn sender_for(&mut self, source: IpAddr, host: usize) -> Result<Option<usize>, ScanError> {
        let IpAddr::V6(v6) = source else {
            return Ok(None);
        };
        if self.plan.sources[host] == source {
            return Ok(None);
        }
        let pos = match self.v6_extra.iter().position(|(a, _)| *a == source) {
            Some(p) => p,
            None => {
                let proto = if self.plan.kind == ScanKind::Udp {
                    packet::PROTO_UDP
                } else {
                    packet::PROTO_TCP
                };
                let tx = RawSender::open(self.kind_name, false, Some(v6), proto)?;
                self.v6_extra.push((source, tx));
                self.v6_extra.len() - 1
            }
        };
        Ok(Some(pos))
    }
}

impl confirm::RoundIo for RawRounds<'_> {
    fn send(
        &mut self,
        shared: &Shared,
        idx: usize,
        tryno: u8,
        source: IpAddr,
    ) -> Result<(), ScanError> {
        let nports = self.plan.ports.len();
        let (h, p) = (idx / nports, idx % nports);
        wait_for_caps(shared, &self.rate, h);
        let dst = self.plan.targets[h];
        let (probe, id, port) = (self.probe, self.plan.id, self.plan.ports[p]);
        let which = self.sender_for(source, h)?;
        let tx = match which {
            None => self.tx,
            Some(i) => &self.v6_extra[i].1,
        };
        let len = probe.build(&id, self.batch.next_buf(), source, dst, port, tryno);
        self.batch.push(len, dst, false);
        shared.mark_sent(idx, tryno, shared.now_us());
        // A probe the kernel could not take is lost like any other: its round is inconclusive
        // or leaves the port for the next round.
        tx.send_batch(&mut self.batch).map(|_| ())
    }

    fn pump(&mut self, shared: &Shared, until_us: u64) -> Result<(), ScanError> {
        // Answers are handled by the receive thread; wake on the first new one so a round
        // ends as soon as its sentinel is answered.
        let replies = shared.replies.load(Ordering::Acquire);
        loop {
            let now = shared.now_us();
            if now >= until_us || shared.replies.load(Ordering::Acquire) != replies {
                return Ok(());
            }
            std::thread::sleep(Duration::from_micros((until_us - now).min(1_000)));
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn receive_loop(
    shared: &Shared,
    rx: &Receiver,
    probe: RawProbe,
    id: &Identity,
    host_index: &HashMap<IpAddr, usize>,
    port_pos: &[u32],
    sources: &[IpAddr],
    senders: &[std::thread::Thread],
) {
    // Poll without blocking and nap when the queue is empty: a reader blocked on the socket
    // would have to be woken by the sending thread for every reply (a cross-CPU wake-up per
    // packet), which costs more than the naps.
    let mut batch = crate::net::RecvBatch::new(64);
    let mut since_check = 0u32;
    while !shared.stop.load(Ordering::Acquire) {
        let n = rx.recv_batch(&mut batch);
        since_check += 1;
        if n == 0 || since_check >= 256 {
            since_check = 0;
            if rx.drops() > 0 {
                shared.on_local_drop();
            }
        }
        if n == 0 {
            let nap = if shared.confirming.load(Ordering::Acquire) {
                500
            } else {
                100
            };
            std::thread::sleep(Duration::from_micros(nap));
            continue;
        }
        let mut any = false;
        for i in 0..n {
            let Some(pkt) = packet::decode(batch.packet(i)) else {
                continue;
            };
            let Some(m) = probe.interpret(id, &pkt, |a| sources.contains(&a)) else {
                continue;
            };
            let Some(&host) = host_index.get(&m.target) else {
                continue;
            };
            let pos = port_pos[usize::from(m.port)];
            if pos == u32::MAX {
                continue;
            }
            shared.on_reply(host, pos as usize, m.tryno, m.reply);
            any = true;
        }
        if any {
            for (k, t) in senders.iter().enumerate() {
                if shared.sender_parked[k].swap(false, Ordering::AcqRel) {
                    t.unpark();
                }
            }
        }
    }
}

/// Returns the number of retransmissions.
fn send_loop(
    shared: &Shared,
    plan: &Plan,
    tx: &RawSender,
    cursor: &crate::fresh::FreshCursor,
    probe: RawProbe,
    me: usize,
    nsenders: usize,
) -> Result<u64, ScanError> {
    let nhosts = plan.targets.len();
    let nports = plan.ports.len();
    let total_fresh = nhosts * nports;
    let total = total_fresh as u64;
    let max_retries = plan.timing.max_retries;
    let rate = RateCap::new(plan.timing.max_rate);
    let mut batch = crate::net::SendBatch::new();
    // Fresh indexes come in chunks `fresh..fresh_end` from the shared cursor; each sender
    // retransmits what it sent first.
    let (mut fresh, mut fresh_end) = (me, me);
    let mut retrans: VecDeque<(usize, u8)> = VecDeque::new();
    // Probes that may still be retransmitted, and last tries. A probe that may be retransmitted
    // is declared lost early once a probe sent `rack` later has been answered (as TCP's RACK
    // does), so a lost probe does not hold a window slot for a whole timeout. A last try always
    // waits the full timeout before the port is called silent, exactly like nmap.
    let mut outstanding: VecDeque<(usize, u8, u64)> = VecDeque::new();
    let mut last_tries: VecDeque<(usize, u8, u64)> = VecDeque::new();
    let mut lost_waiting: VecDeque<(usize, u8, u64)> = VecDeque::new();
    let mut retransmissions = 0u64;
    let mut last_progress = 0u64;
    let mut tail = crate::tail::TailProbe::new();
    loop {
        let now = shared.now_us();
        let (timeout_us, window) = shared.timing_now();
        let rack_us = (2 * shared.srtt_us()).clamp(1_000, timeout_us.max(1_000));
        let latest_answered = shared.latest_answered_sent();
        while let Some(&(idx, tryno, sent_us)) = outstanding.front() {
            // Answered probes leave the queue at once; unanswered ones when they time out or
            // are overtaken by an answered later probe.
            let lost = latest_answered > sent_us + rack_us;
            if now < sent_us + timeout_us && !shared.has_result(idx) && !lost {
                break;
            }
            outstanding.pop_front();
            if let Some(next) = shared.on_expiry(idx, tryno, max_retries) {
                retrans.push_back((idx, next));
            }
        }
        while let Some(&(idx, tryno, sent_us)) = last_tries.front() {
            if now < sent_us + timeout_us && !shared.has_result(idx) {
                if latest_answered > sent_us + rack_us {
                    // Presumed lost: out of the window, still waiting for its verdict.
                    last_tries.pop_front();
                    shared.mark_lost(idx, tryno);
                    lost_waiting.push_back((idx, tryno, sent_us));
                    continue;
                }
                break;
            }
            last_tries.pop_front();
            if let Some(next) = shared.on_expiry(idx, tryno, max_retries) {
                retrans.push_back((idx, next));
            }
        }
        while let Some(&(idx, tryno, sent_us)) = lost_waiting.front() {
            if now < sent_us + timeout_us && !shared.has_result(idx) {
                break;
            }
            lost_waiting.pop_front();
            if let Some(next) = shared.on_expiry(idx, tryno, max_retries) {
                retrans.push_back((idx, next));
            }
        }
        let mut burst = 0usize;
        let mut paced_us = 0;
        while burst < 64 {
            if shared.in_flight() >= window {
                break;
            }
            if rate.wait_us(shared.sent.load(Ordering::Acquire), shared.now_us()) > 0 {
                break;
            }
            if (!retrans.is_empty() || fresh < total_fresh)
                && shared.scan_delay_wait(shared.now_us()) > 0
            {
                break;
            }
            let rld_blocked = retrans.front().is_some_and(|&(idx, tryno)| {
                !shared.has_result(idx) && shared.rld_wait(idx / nports, tryno, shared.now_us()) > 0
            });
            let (idx, tryno, source) = if !rld_blocked && let Some(&r) = retrans.front() {
                if shared.has_result(r.0) {
                    retrans.pop_front();
                    continue;
                }
                (r.0, r.1, Source::Retransmit)
            } else if cursor.next(&mut fresh, &mut fresh_end) {
                let (h, p) = (fresh % nhosts, fresh / nhosts);
                (h * nports + p, 0, Source::Fresh)
            } else if retrans.is_empty()
                && let Some((i, t)) = tail_probe(
                    shared,
                    &tail,
                    probe,
                    outstanding.back().map(|&(_, _, s)| s),
                    rack_us,
                    shared.now_us(),
                )
            {
                (i, t, Source::Tail)
            } else {
                break;
            };
            let (h, p) = (idx / nports, idx % nports);
            // The per-target cap, in the send path itself: no probe leaves without a token
            // from its target's bucket.
            paced_us = shared.pace(h);
            if paced_us > 0 {
                break;
            }
            match source {
                Source::Retransmit => {
                    retrans.pop_front();
                }
                Source::Fresh => {
                    fresh += 1;
                    tail.note_fresh(idx);
                }
                Source::Tail => {
                    if let Some((i, t)) = tail.take_pending() {
                        shared.on_expiry(i, t, max_retries);
                    }
                    let newest = outstanding.back().map_or(0, |&(_, _, s)| s);
                    tail.sent(idx, tryno, newest);
                }
            }
            let dst = plan.targets[h];
            let len = probe.build(
                &plan.id,
                batch.next_buf(),
                plan.sources[h],
                dst,
                plan.ports[p],
                tryno,
            );
            let t = shared.now_us();
            // Marked sent before it leaves: the answer may arrive before the batch is out.
            shared.mark_sent(idx, tryno, t);
            // A tail probe waits in no queue: its port already has its verdict, and its answer
            // only has to reach the receive thread.
            if source != Source::Tail {
                let queue = if tryno < shared.allowed_tryno(h) {
                    &mut outstanding
                } else {
                    &mut last_tries
                };
                queue.push_back((idx, tryno, t));
            }
            burst += 1;
            if batch.push(len, dst, source == Source::Retransmit)
                && send_batch(shared, tx, &mut batch, &mut burst, &mut retransmissions)?
            {
                break;
            }
        }
        send_batch(shared, tx, &mut batch, &mut burst, &mut retransmissions)?;
        if me == 0
            && let Some(cb) = &plan.progress
            && now >= last_progress + 100_000
        {
            last_progress = now;
            cb(&shared.progress(total));
        }
        if shared.abort.load(Ordering::Acquire) {
            break;
        }
        if fresh >= total_fresh
            && retrans.is_empty()
            && outstanding
                .iter()
                .chain(last_tries.iter())
                .chain(lost_waiting.iter())
                .all(|&(idx, _, _)| shared.has_result(idx))
        {
            // Before finishing: ports called silent before loss was seen on their host get
            // the extra tries the host now allows (nmap would leave them filtered).
            retrans.extend(
                (me..total_fresh)
                    .step_by(nsenders)
                    .map(|i| (i % nhosts) * nports + i / nhosts)
                    .filter_map(|idx| shared.reopen_if_undertried(idx).map(|t| (idx, t))),
            );
            if retrans.is_empty() {
                break;
            }
        }
        if burst == 0 {
            // Blocked on the window, the rate cap or the next expiry. The receive thread
            // unparks us when an answer frees a slot.
            let now = shared.now_us();
            let until_expiry = outstanding
                .front()
                .into_iter()
                .chain(last_tries.front())
                .chain(lost_waiting.front())
                .map(|&(_, _, s)| (s + timeout_us).saturating_sub(now))
                .min()
                .unwrap_or(1_000);
            let until_rld = retrans
                .front()
                .map(|&(idx, _)| {
                    shared.rld_until[idx / nports]
                        .load(Ordering::Acquire)
                        .saturating_sub(now)
                })
                .unwrap_or(0);
            let until_rate = rate
                .wait_us(shared.sent.load(Ordering::Acquire), now)
                .max(shared.scan_delay_wait_peek(now))
                .max(until_rld)
                .max(paced_us);
            let wait = if until_rate > 0 {
                until_rate.min(until_expiry)
            } else {
                until_expiry
            }
            .clamp(20, 2_000);
            shared.sender_parked[me].store(true, Ordering::Release);
            std::thread::park_timeout(Duration::from_micros(wait));
            shared.sender_parked[me].store(false, Ordering::Release);
        }
    }
    if let Some((idx, tryno)) = tail.take_pending() {
        shared.on_expiry(idx, tryno, max_retries);
    }
    Ok(retransmissions)
}

/// Where the send loop's next probe comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// A retransmission of a silent probe.
    Retransmit,
    /// A port's first probe.
    Fresh,
    /// A tail probe ([`crate::tail`]).
    Tail,
}

/// A tail probe to send at `now_us`, as (index, try number), if one is due: TCP probes only,
/// no scan delay in force (nmap's back-off after heavy loss), the newest waiting first try
/// (sent at `newest_us`) older than `rack_us`, and a recently probed port of this thread that
/// answered with a RST and has no probe outstanding.
fn tail_probe(
    shared: &Shared,
    tail: &crate::tail::TailProbe,
    probe: RawProbe,
    newest_us: Option<u64>,
    rack_us: u64,
    now_us: u64,
) -> Option<(usize, u8)> {
    let rst_state = match probe {
        RawProbe::Syn => PortState::Closed,
        RawProbe::Ack => PortState::Unfiltered,
        RawProbe::Udp => return None,
    };
    if shared.scan_delay_us.load(Ordering::Acquire) > 0 || !tail.due(newest_us, now_us, rack_us) {
        return None;
    }
    tail.candidates().find_map(|idx| {
        let tries = shared.tries[idx].load(Ordering::Acquire);
        let answered = decode_result(shared.results[idx].load(Ordering::Acquire))
            .is_some_and(|(state, reason)| state == rst_state && reason == Reason::Reset);
        (answered && tries & OUTSTANDING == 0).then_some((idx, tries & TRY_MASK))
    })
}

/// Sends the probes waiting in `batch` (already marked sent and queued), counting what left
/// in `retransmissions` and taking what did not out of `burst`. Returns `true` when the
/// kernel's buffers were full: the unsent probes count as lost (they time out and are
/// retransmitted), and the window backs off.
fn send_batch(
    shared: &Shared,
    tx: &RawSender,
    batch: &mut crate::net::SendBatch,
    burst: &mut usize,
    retransmissions: &mut u64,
) -> Result<bool, ScanError> {
    if batch.is_empty() {
        return Ok(false);
    }
    let f = tx.send_batch(batch)?;
    *retransmissions += f.retransmissions;
    if f.outcome == Sent::Busy {
        shared.on_local_drop();
        *burst = burst.saturating_sub(f.unsent);
        return Ok(true);
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_cap_is_an_upper_bound() {
        let r = RateCap::new(Some(1000));
        // Burst of one probe, then one per millisecond.
        assert_eq!(r.wait_us(0, 0), 0);
        assert!(r.wait_us(1, 0) > 0);
        assert_eq!(r.wait_us(10, 10_000), 0);
        assert!(r.wait_us(20, 10_000) >= 9_000);
        let none = RateCap::new(None);
        assert_eq!(none.wait_us(1_000_000, 0), 0);
    }

    #[test]
    fn results_encode_roundtrip() {
        for s in [
            PortState::Open,
            PortState::OpenFiltered,
            PortState::Unfiltered,
        ] {
            for r in [Reason::SynAck, Reason::NoResponse, Reason::DestUnreach] {
                assert_eq!(decode_result(encode(s, r)), Some((s, r)));
            }
        }
        assert_eq!(decode_result(0), None);
    }

    #[test]
    fn expiry_retransmits_then_goes_silent() {
        let t = Timing::default();
        let sh = Shared::new(ScanKind::Syn, 1, 1, &t, 1);
        sh.mark_sent(0, 0, 0);
        // Lossless so far: one retransmission allowed.
        assert_eq!(sh.on_expiry(0, 0, t.max_retries), Some(1));
        sh.mark_sent(0, 1, 10);
        assert_eq!(sh.on_expiry(0, 1, t.max_retries), None);
        let out = sh.into_outcome(1);
        assert_eq!(out.results[0], (PortState::Filtered, Reason::NoResponse));
    }

    #[test]
    fn tail_probe_reprobes_a_closed_port_once_the_waiting_try_is_older_than_rack() {
        let t = Timing::default();
        let sh = Shared::new(ScanKind::Syn, 1, 3, &t, 1);
        let mut tail = crate::tail::TailProbe::new();
        for idx in 0..3 {
            sh.mark_sent(idx, 0, 0);
            tail.note_fresh(idx);
        }
        // Port 0 closed (RST), port 1 answered with an ICMP error, port 2 still waiting.
        sh.on_reply(0, 0, 0, Reply::Tcp { flags: 0x14 });
        sh.on_reply(
            0,
            1,
            0,
            Reply::Icmp4 {
                icmp_type: 3,
                code: 13,
                from_target: true,
            },
        );
        let due = |tail: &crate::tail::TailProbe, probe, now| {
            tail_probe(&sh, tail, probe, Some(0), 1_000, now)
        };
        // Too early, and never for UDP.
        assert_eq!(due(&tail, RawProbe::Syn, 1_000), None);
        assert_eq!(due(&tail, RawProbe::Udp, 5_000), None);
        // Only the port that answered with a RST is probed again (ICMP answers are rationed
        // by the target), with its own try number.
        assert_eq!(due(&tail, RawProbe::Syn, 5_000), Some((0, 0)));
        tail.sent(0, 0, 0);
        sh.mark_sent(0, 0, 5_000);
        assert_eq!(
            due(&tail, RawProbe::Syn, 9_000),
            None,
            "once per waiting try"
        );
        // Its answer leaves the window and dates the latest answer after the waiting try.
        sh.on_reply(0, 0, 0, Reply::Tcp { flags: 0x14 });
        assert_eq!(sh.in_flight(), 1);
        assert_eq!(sh.latest_answered_sent(), 5_000);
        let out = sh.into_outcome(0);
        assert_eq!(out.results[0], (PortState::Closed, Reason::Reset));
        assert_eq!(out.results[1].0, PortState::Filtered);
    }

    #[test]
    fn answer_to_a_retransmission_is_loss_and_allows_more_tries() {
        let t = Timing::default();
        let sh = Shared::new(ScanKind::Syn, 1, 2, &t, 1);
        sh.mark_sent(0, 0, 0);
        sh.on_expiry(0, 0, t.max_retries);
        sh.mark_sent(0, 1, 5);
        sh.on_reply(0, 0, 1, Reply::Tcp { flags: 0x14 });
        // Port 1 now gets three probes (tries 0, 1, 2) before it is declared silent.
        sh.mark_sent(1, 0, 10);
        assert_eq!(sh.on_expiry(1, 0, t.max_retries), Some(1));
        sh.mark_sent(1, 1, 20);
        assert_eq!(sh.on_expiry(1, 1, t.max_retries), Some(2));
        let out = sh.into_outcome(2);
        assert_eq!(out.results[0], (PortState::Closed, Reason::Reset));
        // One lost probe is below the loss tolerance: no back-off, but more tries.
        assert_eq!(out.stats.drops_detected, 0);
    }
}
