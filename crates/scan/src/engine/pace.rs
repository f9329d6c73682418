//! The rate caps of a scan, for both engines and the confirmation rounds: at most
//! `Timing::max_rate` probes per second in total and `Timing::max_rate_per_target` to each
//! target, retransmissions included. Both are the same token bucket ([`TargetPacer`], the
//! generic cell rate algorithm: one compare-and-swap per probe, no lock), the total cap being
//! a bucket with a single slot; a probe leaves only with a token from each.
//!
//! Both caps are upper bounds, never targets: the congestion window decides the rate below
//! them.

use crate::timing::{TargetPacer, Timing};

/// The largest burst the total cap allows (a millisecond's worth of probes up to this): the
/// send threads batch their probes, and a burst of 256 is one sendmmsg(2) call for each of
/// four threads.
const TOTAL_MAX_BURST: u64 = 256;

/// The total and per-target caps of one scan.
pub(crate) struct Pace {
    total: Option<TargetPacer>,
    per_target: Option<TargetPacer>,
}

impl Pace {
    /// The caps `timing` asks for on a scan of `targets` targets (none when it asks for none).
    pub fn new(timing: &Timing, targets: usize) -> Self {
        Pace {
            total: TargetPacer::with_max_burst(timing.max_rate, 1, TOTAL_MAX_BURST),
            per_target: TargetPacer::new(timing.max_rate_per_target, targets),
        }
    }

    /// No cap at all: the engines skip the clock.
    pub fn is_uncapped(&self) -> bool {
        self.total.is_none() && self.per_target.is_none()
    }

    /// Microseconds until the total cap lets any probe go at `now_us` (0 = now); takes
    /// nothing.
    pub fn total_wait(&self, now_us: u64) -> u64 {
        self.total.as_ref().map_or(0, |t| {
            t.wait(0, now_us.saturating_mul(1_000)).div_ceil(1_000)
        })
    }

    /// Takes a token for a probe to `host` at `now_us` from both caps: 0 when it may go now,
    /// else the microseconds to wait, with nothing taken (a total token taken before the
    /// target's bucket refused is put back).
    pub fn take(&self, host: usize, now_us: u64) -> u64 {
        let now_ns = now_us.saturating_mul(1_000);
        let total = match self.total.as_ref().map(|t| t.take_undoable(0, now_ns)) {
            Some(Err(wait_ns)) => return wait_ns.div_ceil(1_000),
            Some(Ok(taken)) => Some(taken),
            None => None,
        };
        let wait_ns = self.per_target.as_ref().map_or(0, |p| p.take(host, now_ns));
        if wait_ns > 0
            && let (Some(t), Some(taken)) = (&self.total, total)
        {
            t.put_back(taken);
        }
        wait_ns.div_ceil(1_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capped(max_rate: Option<u32>, max_rate_per_target: Option<u32>) -> Pace {
        let timing = Timing {
            max_rate,
            max_rate_per_target,
            ..Timing::default()
        };
        Pace::new(&timing, 2)
    }

    #[test]
    fn rate_cap_is_an_upper_bound() {
        let r = capped(Some(1000), None);
        // Burst of one probe, then one per millisecond.
        assert_eq!(r.take(0, 0), 0);
        assert!(r.take(1, 0) > 0);
        assert!(r.total_wait(0) > 0);
        for ms in 1..=10usize {
            assert_eq!(r.take(ms % 2, ms as u64 * 1_000), 0, "at {ms} ms");
        }
        assert!(r.take(0, 10_000) >= 900);
        let none = capped(None, None);
        assert!(none.is_uncapped());
        assert_eq!(none.take(0, 0), 0);
        assert_eq!(none.total_wait(0), 0);
    }

    #[test]
    fn a_target_refused_takes_no_total_token() {
        // 1000 per second in total, 1 per second to each target.
        let p = capped(Some(1000), Some(1));
        assert_eq!(p.take(0, 0), 0);
        // Target 0's bucket is empty: refused, and the total token is put back, so target 1
        // may go at once.
        assert!(p.take(0, 1_000) > 0);
        assert_eq!(p.take(1, 1_000), 0);
    }
}
