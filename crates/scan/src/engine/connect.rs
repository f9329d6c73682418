//! The connect engine (`-sT`): many non-blocking `connect()` attempts at once (the probe is
//! `probe::connect`), completions collected by `poll(2)`. Needs no privileges, so it is the
//! fallback when raw sockets are not allowed. It chooses its probes with `select` and paces
//! them with `pace`, as the raw engine does; attempts that neither complete nor fail within
//! the probe timeout are closed and retransmitted, then reported filtered. Afterwards the
//! confirmation phase (`confirm`) proves the silent ports of rate-limiting targets silent.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use socket2::Socket;

use super::confirm::{self, Setup};
use super::fresh::FreshCursor;
use super::plan::{Outcome, Plan};
use super::select::Selector;
use super::shared::Shared;
use crate::ScanError;
use crate::classify::Reply;
use crate::probe::connect::{outcome, start};

/// Most simultaneous connection attempts (file descriptors).
const MAX_PARALLEL: u64 = 512;

/// A connection attempt in progress.
struct Attempt {
    sock: Socket,
    idx: usize,
    tryno: u8,
    sent_us: u64,
}

/// Attempts in progress, and the `poll(2)` array reused for them.
#[derive(Default)]
struct Attempts {
    active: Vec<Attempt>,
    pollfds: Vec<libc::pollfd>,
}

/// Runs a connect scan in the calling thread's network namespace.
pub(crate) fn run(plan: Plan) -> Result<Outcome, ScanError> {
    let (nhosts, nports) = (plan.targets.len(), plan.ports.len());
    let total = (nhosts * nports) as u64;
    let shared = Shared::new(plan.kind, nhosts, nports, &plan.timing, 1);
    let cursor = FreshCursor::new(nhosts * nports);
    let mut sel = Selector::new(&cursor, 0, nhosts, nports);
    let mut attempts = Attempts::default();
    let mut retransmissions = 0u64;
    let mut last_progress = 0u64;
    loop {
        let now = shared.now_us();
        let (timeout_us, window) = shared.timing_now();
        attempts.expire(&shared, &mut sel, now, timeout_us, plan.timing.max_retries);
        let paced_us = start_attempts(
            &shared,
            &plan,
            &mut sel,
            &mut attempts,
            window,
            &mut retransmissions,
        )?;
        if let Some(cb) = &plan.progress
            && now >= last_progress + 100_000
        {
            last_progress = now;
            cb(&shared.progress(total));
        }
        if attempts.active.is_empty() && !sel.has_work() {
            break;
        }
        // Wait for completions, at most until the oldest attempt expires.
        let now = shared.now_us();
        let wait_us = attempts
            .active
            .iter()
            .map(|a| (a.sent_us + timeout_us).saturating_sub(now))
            .min()
            .unwrap_or(1_000)
            .min(if paced_us > 0 { paced_us } else { u64::MAX });
        attempts.complete(&shared, wait_us);
    }
    // Then prove the silent ports of targets that rate-limit their ICMP errors silent.
    let mut rounds = ConnectRounds {
        plan: &plan,
        attempts,
    };
    let limits = confirm::run(&shared, &Setup::of(&plan), &mut rounds)?;
    if let Some(cb) = &plan.progress {
        cb(&shared.progress(total));
    }
    let mut outcome = shared.into_outcome(retransmissions);
    outcome.rate_limits = limits;
    Ok(outcome)
}

/// Starts attempts while the window (at most [`MAX_PARALLEL`]) and the rate caps allow,
/// counting retransmissions; returns the µs the per-target cap asked to wait (0: it did not
/// stop them).
fn start_attempts(
    shared: &Shared,
    plan: &Plan,
    sel: &mut Selector<'_>,
    attempts: &mut Attempts,
    window: u64,
    retransmissions: &mut u64,
) -> Result<u64, ScanError> {
    let window = window.min(MAX_PARALLEL);
    let nports = shared.nports();
    let mut paced_us = 0;
    while (attempts.active.len() as u64) < window && shared.rate_wait(shared.now_us()) == 0 {
        let Some(pick) = sel.next(shared, |_, _| false) else {
            break;
        };
        let (h, p) = (pick.idx / nports, pick.idx % nports);
        // The rate caps: no connection attempt without a token.
        paced_us = shared.pace(h);
        if paced_us > 0 {
            break;
        }
        sel.take(&pick);
        if pick.tryno > 0 {
            *retransmissions += 1;
        }
        let dst = SocketAddr::new(plan.targets[h], plan.ports[p]);
        attempts.start(shared, pick.idx, pick.tryno, plan.sources[h], dst)?;
    }
    Ok(paced_us)
}

impl Attempts {
    /// Starts try `tryno` of `idx` from `src` to `dst`, after recording it as sent; an
    /// attempt that fails at once is answered at once.
    fn start(
        &mut self,
        shared: &Shared,
        idx: usize,
        tryno: u8,
        src: IpAddr,
        dst: SocketAddr,
    ) -> Result<(), ScanError> {
        let t = shared.now_us();
        shared.mark_sent(idx, tryno, t);
        match start(src, dst)? {
            Ok(sock) => self.active.push(Attempt {
                sock,
                idx,
                tryno,
                sent_us: t,
            }),
            Err(errno) => {
                let nports = shared.nports();
                let reply = Reply::Connect { errno, icmp: false };
                shared.on_reply(idx / nports, idx % nports, tryno, reply);
            }
        }
        Ok(())
    }

    /// Closes the attempts that took longer than `timeout_us`; their retransmissions go to
    /// `sel`.
    fn expire(
        &mut self,
        shared: &Shared,
        sel: &mut Selector<'_>,
        now: u64,
        timeout_us: u64,
        max_retries: u8,
    ) {
        let mut i = 0;
        while i < self.active.len() {
            if now >= self.active[i].sent_us + timeout_us {
                let a = self.active.swap_remove(i);
                if let Some(next) = shared.on_expiry(a.idx, a.tryno, max_retries) {
                    sel.retransmit(a.idx, next);
                }
            } else {
                i += 1;
            }
        }
    }

    /// Waits up to `wait_us` (rounded up to whole milliseconds, at most 50) for attempts to
    /// finish, and hands each finished one's outcome to `shared`.
    fn complete(&mut self, shared: &Shared, wait_us: u64) {
        let pollfds = &mut self.pollfds;
        pollfds.clear();
        pollfds.extend(self.active.iter().map(|a| libc::pollfd {
            fd: a.sock.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        }));
        let wait_ms = wait_us.div_ceil(1_000).clamp(1, 50);
        // SAFETY: `pollfds` is a valid, initialised array of `len` pollfd structs.
        let n = unsafe {
            libc::poll(
                pollfds.as_mut_ptr(),
                pollfds.len() as libc::nfds_t,
                wait_ms as libc::c_int,
            )
        };
        if n <= 0 {
            return;
        }
        let nports = shared.nports();
        // Walk backwards so swap_remove keeps the remaining pollfd indexes valid.
        for k in (0..pollfds.len()).rev() {
            if pollfds[k].revents == 0 {
                continue;
            }
            let a = self.active.swap_remove(k);
            let (h, p) = (a.idx / nports, a.idx % nports);
            shared.on_reply(h, p, a.tryno, outcome(&a.sock));
        }
    }
}

/// Confirmation rounds as connect() attempts (see `confirm`).
struct ConnectRounds<'a> {
    plan: &'a Plan,
    attempts: Attempts,
}

impl confirm::RoundIo for ConnectRounds<'_> {
    fn send(
        &mut self,
        shared: &Shared,
        idx: usize,
        tryno: u8,
        source: IpAddr,
    ) -> Result<(), ScanError> {
        let nports = shared.nports();
        let (h, p) = (idx / nports, idx % nports);
        shared.wait_for_caps(h);
        let dst = SocketAddr::new(self.plan.targets[h], self.plan.ports[p]);
        self.attempts.start(shared, idx, tryno, source, dst)
    }

    fn pump(&mut self, shared: &Shared, until_us: u64) -> Result<(), ScanError> {
        let (timeout_us, _) = shared.timing_now();
        let now = shared.now_us();
        // Attempts of rounds that are over are abandoned; the round already counted them.
        self.attempts
            .active
            .retain(|a| now < a.sent_us + timeout_us);
        self.attempts.complete(shared, until_us.saturating_sub(now));
        Ok(())
    }
}
