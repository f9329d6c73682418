//! Which probe a sender sends next, for both engines, and the raw sender's outstanding probes.
//!
//! A sender sends its own retransmissions first, oldest first (those settled meanwhile are
//! dropped, and the oldest may be held back: the raw engine's rate-limit pause), then first
//! probes dealt from the scan's shared cursor (`fresh`) in port-major order, so several
//! targets are interleaved. The caller then takes a token from the rate caps (`pace`) and
//! only then removes the probe from its queue ([`Selector::take`]): a probe refused by the
//! caps is the next one again.
//!
//! [`Outstanding`] holds what a raw sender has in flight and decides when each probe is done
//! waiting: answered, timed out, or presumed lost (RACK); the retransmissions that follow go
//! back to the [`Selector`].

use std::collections::VecDeque;

use super::fresh::FreshCursor;
use super::shared::Shared;

/// Where a probe comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// A retransmission of a silent probe.
    Retransmit,
    /// A port's first probe.
    Fresh,
    /// A tail probe (raw engine; `tail`).
    Tail,
}

/// The probe chosen to go next: port index, try number, and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pick {
    pub idx: usize,
    pub tryno: u8,
    pub source: Source,
}

/// One sender's choice of its next probe.
pub(crate) struct Selector<'a> {
    cursor: &'a FreshCursor,
    nhosts: usize,
    nports: usize,
    /// This sender's claimed first probes: `fresh..fresh_end` (scan order, host-minor).
    fresh: usize,
    fresh_end: usize,
    /// Retransmissions due, as (index, try number), oldest first.
    retrans: VecDeque<(usize, u8)>,
}

impl<'a> Selector<'a> {
    /// Sender `me`'s selector on a scan of `nhosts` × `nports` dealt by `cursor`.
    pub fn new(cursor: &'a FreshCursor, me: usize, nhosts: usize, nports: usize) -> Self {
        Selector {
            cursor,
            nhosts,
            nports,
            // Empty chunk: the first `next` claims one.
            fresh: me,
            fresh_end: me,
            retrans: VecDeque::new(),
        }
    }

    /// Try `tryno` of `idx` is due for retransmission.
    pub fn retransmit(&mut self, idx: usize, tryno: u8) {
        self.retrans.push_back((idx, tryno));
    }

    /// Retransmissions due (reopened ports at the end of a scan).
    pub fn retransmit_all(&mut self, due: impl IntoIterator<Item = (usize, u8)>) {
        self.retrans.extend(due);
    }

    /// Whether anything is left to send: a retransmission, or first probes not yet dealt.
    pub fn has_work(&self) -> bool {
        !self.retrans.is_empty() || self.fresh < self.cursor.total()
    }

    /// Whether retransmissions are waiting (perhaps held back).
    pub fn retransmits_waiting(&self) -> bool {
        !self.retrans.is_empty()
    }

    /// The oldest waiting retransmission, as (index, try number).
    pub fn oldest_retransmit(&self) -> Option<(usize, u8)> {
        self.retrans.front().copied()
    }

    /// The next probe: the oldest retransmission not settled meanwhile (settled ones are
    /// dropped) unless `hold(idx, tryno)` holds it back, else this sender's next first probe.
    /// `None` when neither is left.
    pub fn next(&mut self, shared: &Shared, hold: impl FnOnce(usize, u8) -> bool) -> Option<Pick> {
        while self
            .retrans
            .front()
            .is_some_and(|&(idx, _)| shared.has_result(idx))
        {
            self.retrans.pop_front();
        }
        if let Some(&(idx, tryno)) = self.retrans.front()
            && !hold(idx, tryno)
        {
            return Some(Pick {
                idx,
                tryno,
                source: Source::Retransmit,
            });
        }
        if self.cursor.next(&mut self.fresh, &mut self.fresh_end) {
            let (h, p) = (self.fresh % self.nhosts, self.fresh / self.nhosts);
            return Some(Pick {
                idx: h * self.nports + p,
                tryno: 0,
                source: Source::Fresh,
            });
        }
        None
    }

    /// `pick` (from [`Selector::next`]) is on its way: it leaves its queue.
    pub fn take(&mut self, pick: &Pick) {
        match pick.source {
            Source::Retransmit => {
                self.retrans.pop_front();
            }
            Source::Fresh => self.fresh += 1,
            Source::Tail => {}
        }
    }
}

/// A raw sender's probes in flight, as (index, try number, send time µs), each queue oldest
/// first.
///
/// A probe that may still be retransmitted is declared lost early once a probe sent `rack`
/// later has been answered (as TCP's RACK does), so a lost probe does not hold a window slot
/// for a whole timeout. A last try always waits the full timeout before the port is called
/// silent, exactly like nmap; presumed lost, it only leaves the window.
#[derive(Default)]
pub(crate) struct Outstanding {
    /// Probes that may still be retransmitted.
    retryable: VecDeque<(usize, u8, u64)>,
    /// Last tries, waiting for their verdict.
    last_tries: VecDeque<(usize, u8, u64)>,
    /// Last tries presumed lost: out of the window, still waiting for their verdict.
    lost_waiting: VecDeque<(usize, u8, u64)>,
}

/// What [`Outstanding::settle`] judges by at one moment.
pub(crate) struct Clock {
    pub now_us: u64,
    pub timeout_us: u64,
    pub rack_us: u64,
    /// Send time of the latest-sent probe that has been answered.
    pub latest_answered_us: u64,
    pub max_retries: u8,
}

impl Outstanding {
    /// Try `tryno` of `idx` left at `sent_us`; `last` when no retransmission may follow.
    pub fn push(&mut self, idx: usize, tryno: u8, sent_us: u64, last: bool) {
        let queue = if last {
            &mut self.last_tries
        } else {
            &mut self.retryable
        };
        queue.push_back((idx, tryno, sent_us));
    }

    /// Send time of the newest probe that may still be retransmitted.
    pub fn newest_retryable(&self) -> Option<u64> {
        self.retryable.back().map(|&(_, _, s)| s)
    }

    /// Whether every probe in flight has its port's verdict.
    pub fn all_settled(&self, shared: &Shared) -> bool {
        self.retryable
            .iter()
            .chain(self.last_tries.iter())
            .chain(self.lost_waiting.iter())
            .all(|&(idx, _, _)| shared.has_result(idx))
    }

    /// Microseconds until the oldest probe in flight times out (1 ms when none is).
    pub fn until_expiry(&self, now_us: u64, timeout_us: u64) -> u64 {
        self.retryable
            .front()
            .into_iter()
            .chain(self.last_tries.front())
            .chain(self.lost_waiting.front())
            .map(|&(_, _, s)| (s + timeout_us).saturating_sub(now_us))
            .min()
            .unwrap_or(1_000)
    }

    /// Lets go of the probes that are done waiting at `c.now_us`: answered ones at once,
    /// unanswered ones when they time out or, if they may be retransmitted, when a later probe
    /// overtook them; last tries overtaken leave the window (`Shared::mark_lost`) but keep
    /// waiting. Each expiry goes to `Shared::on_expiry`, and the retransmissions it asks for
    /// to `sel`.
    pub fn settle(&mut self, shared: &Shared, c: &Clock, sel: &mut Selector<'_>) {
        let lost = |sent_us: u64| c.latest_answered_us > sent_us + c.rack_us;
        let waiting =
            |idx: usize, sent_us: u64| c.now_us < sent_us + c.timeout_us && !shared.has_result(idx);
        let mut expire = |idx: usize, tryno: u8| {
            if let Some(next) = shared.on_expiry(idx, tryno, c.max_retries) {
                sel.retransmit(idx, next);
            }
        };
        while let Some(&(idx, tryno, sent_us)) = self.retryable.front() {
            if waiting(idx, sent_us) && !lost(sent_us) {
                break;
            }
            self.retryable.pop_front();
            expire(idx, tryno);
        }
        while let Some(&(idx, tryno, sent_us)) = self.last_tries.front() {
            if waiting(idx, sent_us) {
                if lost(sent_us) {
                    self.last_tries.pop_front();
                    shared.mark_lost(idx, tryno);
                    self.lost_waiting.push_back((idx, tryno, sent_us));
                    continue;
                }
                break;
            }
            self.last_tries.pop_front();
            expire(idx, tryno);
        }
        while let Some(&(idx, tryno, sent_us)) = self.lost_waiting.front() {
            if waiting(idx, sent_us) {
                break;
            }
            self.lost_waiting.pop_front();
            expire(idx, tryno);
        }
    }
}
