//! The tail probe of a TCP raw scan (TCP's tail loss probe, RFC 8985 §7, applied to a scan).
//!
//! A probe that may still be retransmitted is presumed lost, and retransmitted at once, when a
//! probe sent noticeably later (`rack`) has been answered. At the end of a send thread's first
//! pass there is no later probe: the last silent ports before the end (in the benchmark lab,
//! the filtered port 65,472 is 63 ports before the end of the range) wait the full timeout
//! for their first try and again for their last, two timeouts (2 x 100 ms at nmap's `-T4`)
//! where every other silent port costs one.
//!
//! So when a thread has nothing left to send but first tries waiting to be judged, and the
//! newest of them is older than `rack`, it probes again one port that has already answered
//! with a RST (closed for SYN, unfiltered for ACK): the answer comes back within a round trip,
//! is later than the waiting tries by more than `rack`, and lets them be retransmitted at once.
//! One probe per batch of waiting tries; it changes no verdict (a port is still called silent
//! only after its last try has waited the full timeout, and the probed port answers as it did,
//! the merge keeping its state), only when the retransmissions leave. Not for UDP: a closed
//! UDP port answers with ICMP, which targets rate-limit, and the answer is needed elsewhere.

/// Fresh indexes a send thread remembers as candidates for a tail probe.
const RECENT: usize = 64;

/// One send thread's tail-probe state.
pub(crate) struct TailProbe {
    /// The last [`RECENT`] indexes this thread probed first, oldest first from `next`.
    recent: [usize; RECENT],
    filled: usize,
    next: usize,
    /// Send time (µs) of the newest waiting try the last tail probe was sent for.
    covered_us: Option<u64>,
    /// The last tail probe, (index, try number), until it is settled.
    pending: Option<(usize, u8)>,
}

impl TailProbe {
    pub fn new() -> Self {
        TailProbe {
            recent: [0; RECENT],
            filled: 0,
            next: 0,
            covered_us: None,
            pending: None,
        }
    }

    /// This thread sent the first probe of `idx`.
    pub fn note_fresh(&mut self, idx: usize) {
        self.recent[self.next] = idx;
        self.next = (self.next + 1) % RECENT;
        self.filled = (self.filled + 1).min(RECENT);
    }

    /// Whether a tail probe is due now (`now_us`): the newest waiting first try was sent at
    /// `newest_us`, more than `rack_us` ago, and no tail probe was sent for it yet.
    pub fn due(&self, newest_us: Option<u64>, now_us: u64, rack_us: u64) -> bool {
        newest_us.is_some_and(|n| {
            now_us > n.saturating_add(rack_us) && self.covered_us.is_none_or(|c| n > c)
        })
    }

    /// The remembered indexes, newest first.
    pub fn candidates(&self) -> impl Iterator<Item = usize> + '_ {
        (1..=self.filled).map(move |k| self.recent[(self.next + RECENT - k) % RECENT])
    }

    /// A tail probe for (`idx`, `tryno`) is being sent on behalf of the waiting tries up to
    /// `newest_us`. The previous one must have been settled first ([`TailProbe::take_pending`]).
    pub fn sent(&mut self, idx: usize, tryno: u8, newest_us: u64) {
        self.covered_us = Some(newest_us);
        self.pending = Some((idx, tryno));
    }

    /// The last tail probe, to be settled before the next one and when the thread finishes
    /// (an unanswered one must leave the in-flight count).
    pub fn take_pending(&mut self) -> Option<(usize, u8)> {
        self.pending.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_the_newest_fresh_indexes_first() {
        let mut t = TailProbe::new();
        assert_eq!(t.candidates().count(), 0);
        for i in 0..100 {
            t.note_fresh(i);
        }
        let c: Vec<usize> = t.candidates().collect();
        assert_eq!(c.len(), RECENT);
        assert_eq!(c[0], 99);
        assert_eq!(c[RECENT - 1], 100 - RECENT);
    }

    #[test]
    fn due_once_per_batch_of_waiting_tries_and_only_after_rack() {
        let mut t = TailProbe::new();
        // Nothing waiting, or the newest try too young.
        assert!(!t.due(None, 10_000, 1_000));
        assert!(!t.due(Some(9_500), 10_000, 1_000));
        assert!(t.due(Some(8_000), 10_000, 1_000));
        t.sent(5, 0, 8_000);
        // Sent for those tries: not again for them.
        assert!(!t.due(Some(8_000), 50_000, 1_000));
        // Newer tries waiting (retransmissions that may still be retried): due again.
        assert!(t.due(Some(20_000), 50_000, 1_000));
        assert_eq!(t.take_pending(), Some((5, 0)));
        t.sent(6, 1, 20_000);
        assert_eq!(t.take_pending(), Some((6, 1)));
        assert_eq!(t.take_pending(), None);
    }
}
