//! The one schedule of every agent: repair and read the per-entry counters every `refresh`,
//! scan peers every `scan_interval`, poll the policy source when it wants to be polled, take
//! messages from outside (signals, new plans) in between, and beat the heart that `/healthz`
//! reads.
//!
//! A key design decision is that the loop is a plain thread that does one thing at a time —
//! load, reconcile, scan — because every step shells out to iptables or sends probes and must
//! not interleave with another. It waits on a channel with a timeout, so it reacts to a
//! message after the current step — at once while it waits, but a step (a peer scan can take
//! minutes) is not interrupted — and never sleeps blindly. What differs between the standalone
//! and the Kubernetes agent is the [`Driver`]: where the intent comes from, what a message
//! means, and whom a scan goes to.
//!
//! # Guarantees
//!
//! * The loop is alive (heartbeat) from its start and after every round; it never waits longer
//!   than half of [`HEARTBEAT_LIMIT`], so an idle loop stays alive whatever the intervals.
//! * Messages that queued up behind a step are handed to [`Driver::receive`] together.
//! * It returns when the driver says stop or every sender of the channel is gone; the rules
//!   stay in place.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Instant;

use tracing::info;

use crate::converge::{Reason, converge};
use crate::state::{HEARTBEAT_LIMIT, Shared};

/// What [`Driver::poll`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Polled {
    /// Go on with the round.
    Done,
    /// Start the round over (the source changed while it was read and is polled again soon).
    Again,
}

/// The part of an agent's loop that is its own: the policy source and the peers.
pub trait Driver {
    /// What arrives on the loop's channel.
    type Message;

    /// When the source wants to be polled next; `None` for a source that only sends messages.
    fn next_poll(&self) -> Option<Instant> {
        None
    }

    /// Polls the source once its [`Driver::next_poll`] has come (`now`).
    fn poll(&mut self, _shared: &Shared, _now: Instant) -> Polled {
        Polled::Done
    }

    /// The messages that arrived together, oldest first. Returns whether to stop.
    fn receive(&mut self, shared: &Shared, messages: Vec<Self::Message>) -> bool;

    /// After each refresh's reconcile and counter read.
    fn refreshed(&mut self, _shared: &Shared) {}

    /// A peer scan is due.
    fn scan(&mut self, shared: &Shared);
}

/// The loop: runs `driver` until it says stop or `control`'s senders are dropped.
pub fn run<D: Driver>(shared: &Shared, driver: &mut D, control: &Receiver<D::Message>) {
    let cfg = &shared.config;
    let start = Instant::now();
    let mut next_refresh = start + cfg.refresh;
    let mut next_scan = cfg.scan_interval.map(|i| start + i);
    // Alive from the start: the first round's steps are judged as every other's.
    shared.heartbeat();
    loop {
        let now = Instant::now();
        if driver.next_poll().is_some_and(|at| now >= at)
            && driver.poll(shared, now) == Polled::Again
        {
            continue;
        }
        if now >= next_refresh {
            let read = converge(shared, Reason::Refresh);
            crate::counters::refresh(shared, read);
            driver.refreshed(shared);
            next_refresh = now + cfg.refresh;
        }
        if let (Some(at), Some(interval)) = (next_scan, cfg.scan_interval)
            && now >= at
        {
            driver.scan(shared);
            next_scan = Some(Instant::now() + interval);
        }
        shared.heartbeat();
        let next = [driver.next_poll(), Some(next_refresh), next_scan]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(next_refresh);
        // Never longer than half the heartbeat limit: an idle loop stays alive (`/healthz`)
        // whatever the poll, refresh and scan intervals.
        let wait = next
            .saturating_duration_since(Instant::now())
            .min(HEARTBEAT_LIMIT / 2);
        let stop = match control.recv_timeout(wait) {
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
            // Everything that queued up behind it during the last step, together.
            Ok(first) => {
                let messages = std::iter::once(first).chain(control.try_iter()).collect();
                driver.receive(shared, messages)
            }
        };
        if stop {
            info!("agent loop stopped; rules stay in place (portwarden reset removes them)");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::config;

    /// Records what the loop hands it; asks for one poll, now; never stops by itself.
    struct Recorder {
        batches: Vec<Vec<u32>>,
        polls: usize,
        due: Option<Instant>,
    }

    impl Recorder {
        fn new() -> Recorder {
            Recorder {
                batches: Vec::new(),
                polls: 0,
                due: Some(Instant::now()),
            }
        }
    }

    impl Driver for Recorder {
        type Message = u32;

        fn next_poll(&self) -> Option<Instant> {
            self.due
        }

        fn poll(&mut self, _shared: &Shared, _now: Instant) -> Polled {
            self.polls += 1;
            self.due = None;
            Polled::Done
        }

        fn receive(&mut self, _shared: &Shared, messages: Vec<u32>) -> bool {
            let stop = messages.contains(&0);
            self.batches.push(messages);
            stop
        }

        fn scan(&mut self, _shared: &Shared) {}
    }

    #[test]
    fn queued_messages_come_together_and_a_stop_or_no_sender_ends_the_loop() {
        let shared = Shared::new(config("p".into(), "i".into(), "127.0.0.1:9750"));
        let (tx, rx) = std::sync::mpsc::channel();
        for m in [3, 0, 4] {
            tx.send(m).unwrap();
        }
        let mut driver = Recorder::new();
        run(&shared, &mut driver, &rx);
        assert_eq!(driver.batches, vec![vec![3, 0, 4]]);
        assert_eq!(
            driver.polls, 1,
            "polled when the driver asked, before waiting"
        );
        shared.with_state(|s| assert!(s.heartbeat.is_some()));
        // No message, every sender gone: the loop ends too.
        drop(tx);
        let mut driver = Recorder::new();
        run(&shared, &mut driver, &rx);
        assert!(driver.batches.is_empty());
    }
}
