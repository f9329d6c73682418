//! [`Shared`]: the per-port state both engines work on, in flat arrays of small atomics indexed
//! `host * nports + port_position` (see the engine's design notes), and what a reply, an
//! expiry, a send or a confirmation round does to it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::pace::Pace;
use super::plan::Outcome;
use crate::Progress;
use crate::classify::{self, Reply};
use crate::model::{PortState, Reason, ScanKind, ScanStats};
use crate::probe::{CONFIRM_TRYNO, MAX_TRYNO};
use crate::timing::{Congestion, RttEstimator, Timing, allowed_tryno};

/// The `tries` bit of a probe in flight; the low bits are its try number.
pub(super) const OUTSTANDING: u8 = 0x80;
pub(super) const TRY_MASK: u8 = 0x7f;

pub(super) fn encode(state: PortState, reason: Reason) -> u16 {
    (u16::from(state.code()) << 8) | u16::from(reason.code())
}

pub(super) fn decode_result(v: u16) -> Option<(PortState, Reason)> {
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

/// The per-port state of one scan, shared by the threads of either engine and by the
/// confirmation phase.
///
/// Fields marked `pub(super)` are read directly by the engines' loops (flags, wake-ups, the
/// tail probe's look at a port), the rest only through the methods below.
pub(crate) struct Shared {
    kind: ScanKind,
    nports: usize,
    pub(super) results: Vec<AtomicU16>,
    pub(super) tries: Vec<AtomicU8>,
    sent_at: Vec<AtomicU32>,
    first_sent: Vec<AtomicU32>,
    latest_answered_sent: AtomicU64,
    max_retries: u8,
    /// nmap's scan delay (µs between probes), boosted when probes need many tries.
    pub(super) scan_delay_us: AtomicU64,
    /// Earliest time (µs) the next probe may go out under the scan delay.
    next_send_us: AtomicU64,
    max_ok_tryno: Vec<AtomicU8>,
    /// Per host: highest try number sent so far, and until when (µs) retransmissions to it
    /// pause (nmap's rate-limit detection, `rld`).
    max_tryno_sent: Vec<AtomicU8>,
    pub(super) rld_until: Vec<AtomicU64>,
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
    pub(super) replies: AtomicU64,
    sent: AtomicU64,
    expired: AtomicU64,
    drops: AtomicU64,
    pub(super) stop: AtomicBool,
    /// The confirmation phase runs: few packets, paced in seconds; the receive thread naps
    /// longer.
    pub(super) confirming: AtomicBool,
    pub(super) sender_parked: Vec<AtomicBool>,
    pub(super) abort: AtomicBool,
    timing: Mutex<TimingState>,
    /// The rate caps (total and per target), shared by every sender.
    pace: Pace,
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
            pace: Pace::new(timing, nhosts),
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

    /// The rate caps: takes a token for a probe to `host` and returns 0 when it may go now,
    /// else the microseconds to wait (nothing taken). Without caps it returns at once, without
    /// reading the clock: it runs once per probe in both engines.
    pub(crate) fn pace(&self, host: usize) -> u64 {
        if self.pace.is_uncapped() {
            return 0;
        }
        self.pace.take(host, self.now_us())
    }

    /// Microseconds until the total rate cap lets any probe go at `now_us` (0 = now); takes
    /// nothing.
    pub(crate) fn rate_wait(&self, now_us: u64) -> u64 {
        self.pace.total_wait(now_us)
    }

    /// Sleeps until a probe to `host` may leave under the rate caps, and takes its token.
    pub(crate) fn wait_for_caps(&self, host: usize) {
        loop {
            let wait = self.pace(host);
            if wait == 0 {
                return;
            }
            std::thread::sleep(Duration::from_micros(wait.min(100_000)));
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

#[cfg(test)]
mod tests {
    use super::*;

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
