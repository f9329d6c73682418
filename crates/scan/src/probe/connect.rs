//! Connect scan (`-sT`): an ordinary non-blocking `connect()` per probe, many at once, with
//! completions collected by `poll(2)`. Needs no privileges, so it is the fallback when raw
//! sockets are not allowed. The errno of each attempt is classified as nmap's
//! `handleConnectResult()` does; attempts that neither complete nor fail within the probe
//! timeout are closed and retransmitted, then reported filtered. Sockets close with
//! `SO_LINGER` 0, so an open port gets a RST instead of a four-way close (as nmap does).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::ScanError;
use crate::classify::Reply;
use crate::engine::{Outcome, Plan, RateCap, Shared};

/// Most simultaneous connection attempts (file descriptors).
const MAX_PARALLEL: u64 = 512;

struct Attempt {
    sock: Socket,
    idx: usize,
    tryno: u8,
    sent_us: u64,
}

fn start(src: IpAddr, dst: SocketAddr) -> Result<Result<Socket, i32>, ScanError> {
    let domain = if dst.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let sock = Socket::new(domain, Type::STREAM, Some(Protocol::TCP)).map_err(|source| {
        ScanError::Socket {
            what: "opening a TCP socket for a connect probe (too many open files? raise ulimit -n)"
                .into(),
            source,
        }
    })?;
    let _ = sock.set_linger(Some(Duration::ZERO));
    // Queue ICMP errors on the socket's error queue. Without it, an ICMP error that arrives
    // while connect() still holds the socket lock (common on a fast path) is only a "soft"
    // error, acted on at the kernel's first SYN retransmission a second later.
    let (level, name) = if dst.is_ipv4() {
        (libc::SOL_IP, libc::IP_RECVERR)
    } else {
        (libc::SOL_IPV6, libc::IPV6_RECVERR)
    };
    let _ = crate::net::setsockopt_int(&sock, level, name, 1);
    sock.set_nonblocking(true)
        .map_err(|source| ScanError::Socket {
            what: "making a connect probe non-blocking".into(),
            source,
        })?;
    if !src.is_unspecified() {
        sock.bind(&SockAddr::from(SocketAddr::new(src, 0)))
            .map_err(|source| ScanError::Socket {
                what: format!("binding a connect probe to source address {src}"),
                source,
            })?;
    }
    match sock.connect(&SockAddr::from(dst)) {
        Ok(()) => Ok(Err(0)),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(Ok(sock)),
        Err(e) => Ok(Err(e.raw_os_error().unwrap_or(libc::EIO))),
    }
}

/// The errno of the first ICMP error queued on the socket (IP_RECVERR), if any.
fn queued_errno(s: &Socket) -> Option<i32> {
    let mut data = [0u8; 256];
    let mut control = [0u64; 64];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: `msg` describes valid buffers.
    let n = unsafe {
        libc::recvmsg(
            s.as_raw_fd(),
            &mut msg,
            libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return None;
    }
    // SAFETY: walking the control buffer the kernel filled, with the libc CMSG helpers.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let h = &*c;
            if (h.cmsg_level == libc::SOL_IP && h.cmsg_type == libc::IP_RECVERR)
                || (h.cmsg_level == libc::SOL_IPV6 && h.cmsg_type == libc::IPV6_RECVERR)
            {
                let ee = libc::CMSG_DATA(c)
                    .cast::<libc::sock_extended_err>()
                    .read_unaligned();
                return i32::try_from(ee.ee_errno).ok();
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    None
}

/// Runs a connect scan in the calling thread's network namespace.
pub(crate) fn run(plan: Plan) -> Result<Outcome, ScanError> {
    let nhosts = plan.targets.len();
    let nports = plan.ports.len();
    let total_fresh = nhosts * nports;
    let shared = Shared::new(plan.kind, nhosts, nports, &plan.timing, 1);
    let rate = RateCap::new(plan.timing.max_rate);
    let max_retries = plan.timing.max_retries;
    let mut fresh = 0usize;
    let mut retrans: VecDeque<(usize, u8)> = VecDeque::new();
    let mut active: Vec<Attempt> = Vec::new();
    let mut pollfds: Vec<libc::pollfd> = Vec::new();
    let mut retransmissions = 0u64;
    let mut last_progress = 0u64;
    loop {
        let now = shared.now_us();
        let (timeout_us, window) = shared.timing_now();
        let window = window.min(MAX_PARALLEL);
        // Expire attempts that took too long.
        let mut i = 0;
        while i < active.len() {
            if now >= active[i].sent_us + timeout_us {
                let a = active.swap_remove(i);
                if let Some(next) = shared.on_expiry(a.idx, a.tryno, max_retries) {
                    retrans.push_back((a.idx, next));
                }
            } else {
                i += 1;
            }
        }
        // Start new attempts.
        let mut paced_us = 0;
        while (active.len() as u64) < window
            && rate.wait_us(shared.progress(0).probes_sent, shared.now_us()) == 0
        {
            let (idx, tryno, retransmit) = if let Some(&r) = retrans.front() {
                if shared.has_result(r.0) {
                    retrans.pop_front();
                    continue;
                }
                (r.0, r.1, true)
            } else if fresh < total_fresh {
                let (h, p) = (fresh % nhosts, fresh / nhosts);
                (h * nports + p, 0, false)
            } else {
                break;
            };
            let (h, p) = (idx / nports, idx % nports);
            // Per-target cap: no connection attempt without a token from its target's bucket.
            paced_us = shared.pace(h);
            if paced_us > 0 {
                break;
            }
            if retransmit {
                retrans.pop_front();
            } else {
                fresh += 1;
            }
            let dst = SocketAddr::new(plan.targets[h], plan.ports[p]);
            let t = shared.now_us();
            shared.mark_sent(idx, tryno, t);
            if tryno > 0 {
                retransmissions += 1;
            }
            match start(plan.sources[h], dst)? {
                Ok(sock) => active.push(Attempt {
                    sock,
                    idx,
                    tryno,
                    sent_us: t,
                }),
                Err(errno) => shared.on_reply(h, p, tryno, Reply::Connect { errno, icmp: false }),
            }
        }
        if let Some(cb) = &plan.progress
            && now >= last_progress + 100_000
        {
            last_progress = now;
            cb(&shared.progress(total_fresh as u64));
        }
        if active.is_empty() && retrans.is_empty() && fresh >= total_fresh {
            break;
        }
        // Wait for completions, at most until the oldest attempt expires.
        let now = shared.now_us();
        let wait_us = active
            .iter()
            .map(|a| (a.sent_us + timeout_us).saturating_sub(now))
            .min()
            .unwrap_or(1_000)
            .min(if paced_us > 0 { paced_us } else { u64::MAX });
        complete(&shared, &mut active, &mut pollfds, wait_us);
    }
    // Then prove the silent ports of targets that rate-limit their ICMP errors silent.
    let mut rounds = ConnectRounds {
        plan: &plan,
        rate,
        active,
        pollfds,
    };
    let limits = crate::confirm::run(&shared, &crate::engine::confirm_setup(&plan), &mut rounds)?;
    if let Some(cb) = &plan.progress {
        cb(&shared.progress(total_fresh as u64));
    }
    let mut outcome = shared.into_outcome(retransmissions);
    outcome.rate_limits = limits;
    Ok(outcome)
}

/// Waits up to `wait_us` (rounded up to whole milliseconds, at most 50) for attempts to
/// finish, and hands each finished one's errno to `shared`, with whether an ICMP error caused
/// it (an error queued by IP_RECVERR; a reset queues nothing).
fn complete(
    shared: &Shared,
    active: &mut Vec<Attempt>,
    pollfds: &mut Vec<libc::pollfd>,
    wait_us: u64,
) {
    pollfds.clear();
    pollfds.extend(active.iter().map(|a| libc::pollfd {
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
        let a = active.swap_remove(k);
        let pending = a.sock.take_error();
        let queued = queued_errno(&a.sock);
        let errno = match pending {
            Ok(None) => queued.unwrap_or(0),
            Ok(Some(e)) => e.raw_os_error().unwrap_or(libc::EIO),
            Err(e) => e.raw_os_error().unwrap_or(libc::EIO),
        };
        let (h, p) = (a.idx / nports, a.idx % nports);
        let icmp = queued.is_some();
        shared.on_reply(h, p, a.tryno, Reply::Connect { errno, icmp });
    }
}

/// Confirmation rounds as connect() attempts (see `confirm`).
struct ConnectRounds<'a> {
    plan: &'a Plan,
    rate: RateCap,
    active: Vec<Attempt>,
    pollfds: Vec<libc::pollfd>,
}

impl crate::confirm::RoundIo for ConnectRounds<'_> {
    fn send(
        &mut self,
        shared: &Shared,
        idx: usize,
        tryno: u8,
        source: IpAddr,
    ) -> Result<(), ScanError> {
        let nports = shared.nports();
        let (h, p) = (idx / nports, idx % nports);
        crate::engine::wait_for_caps(shared, &self.rate, h);
        let dst = SocketAddr::new(self.plan.targets[h], self.plan.ports[p]);
        let t = shared.now_us();
        shared.mark_sent(idx, tryno, t);
        match start(source, dst)? {
            Ok(sock) => self.active.push(Attempt {
                sock,
                idx,
                tryno,
                sent_us: t,
            }),
            Err(errno) => shared.on_reply(h, p, tryno, Reply::Connect { errno, icmp: false }),
        }
        Ok(())
    }

    fn pump(&mut self, shared: &Shared, until_us: u64) -> Result<(), ScanError> {
        let (timeout_us, _) = shared.timing_now();
        let now = shared.now_us();
        // Attempts of rounds that are over are abandoned; the round already counted them.
        self.active.retain(|a| now < a.sent_us + timeout_us);
        complete(
            shared,
            &mut self.active,
            &mut self.pollfds,
            until_us.saturating_sub(now),
        );
        Ok(())
    }
}
