//! Timing: nmap's round-trip-time estimator (`adjust_timeouts2()` in `timing.cc`), a congestion
//! window with slow start and multiplicative back-off on loss (`ultra_timing_vals` in nmap),
//! an optional rate cap, and nmap's retransmission allowance (`allowedTryno`).
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
    /// Upper bound on probes per second (`--rate`); `None` = no cap.
    pub max_rate: Option<u32>,
    /// Starting congestion window (probes in flight).
    pub initial_cwnd: u32,
    /// Largest congestion window.
    pub max_cwnd: u32,
    /// Smallest congestion window after back-off.
    pub min_cwnd: u32,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            initial_rtt_timeout: Duration::from_millis(500),
            min_rtt_timeout: Duration::from_millis(100),
            max_rtt_timeout: Duration::from_millis(1250),
            max_retries: 6,
            max_rate: None,
            initial_cwnd: 10,
            max_cwnd: 4096,
            min_cwnd: 4,
        }
    }
}

impl Timing {
    /// Clamps inconsistent values (min > max and the like) into a usable configuration.
    pub fn normalised(mut self) -> Self {
        if self.min_rtt_timeout > self.max_rtt_timeout {
            self.max_rtt_timeout = self.min_rtt_timeout;
        }
        self.max_retries = self.max_retries.min(14);
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
/// most once per round trip.
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
        }
    }

    /// A probe was answered.
    pub fn ack(&mut self) {
        if self.cwnd < self.ssthresh {
            self.cwnd += 1.0;
        } else {
            self.cwnd += 1.0 / self.cwnd;
        }
        self.cwnd = self.cwnd.min(self.max);
    }

    /// Loss was seen for a probe sent at `sent_us`; `in_flight` probes were outstanding.
    /// Returns whether the window was cut (once per congestion event).
    pub fn drop_seen(&mut self, sent_us: u64, now_us: u64, in_flight: u64) -> bool {
        if sent_us < self.last_drop_us {
            return false;
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

/// nmap's retransmission allowance: the highest try number a silent probe may reach, given
/// the highest try number that ever got an answer (`max_successful_tryno`).
pub fn allowed_tryno(max_successful_tryno: u8, max_retries: u8) -> u8 {
    max_successful_tryno
        .saturating_add(1)
        .max(1)
        .min(max_retries)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(c.drop_seen(10, 20, 100));
        assert_eq!(c.window(), 55);
        // A probe sent before the cut is the same event.
        assert!(!c.drop_seen(15, 30, 100));
        assert_eq!(c.drops(), 1);
    }
}
