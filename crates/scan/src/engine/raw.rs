//! The raw-socket engine (SYN, ACK, UDP): one send thread per CPU (at most 4) and one receive
//! thread, on the flat per-port state of [`Shared`].
//!
//! The receive thread drains the packet socket in batches without blocking on it, so senders
//! never pay a wake-up per reply, and turns each reply into a port index with two array reads
//! (a reply names its target, port and try number; see `probe`). Each send thread takes first
//! probes in chunks from the shared cursor (`fresh`), chooses each next probe with `select`,
//! takes a token from the rate caps, and sends in batches (one sendmmsg(2) per batch); it owns
//! the retransmissions and the outstanding probes ([`Outstanding`]) of what it sent.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::thread::ScopedJoinHandle;
use std::time::Duration;

use super::confirm::{self, Setup};
use super::fresh::FreshCursor;
use super::plan::{Outcome, Plan};
use super::select::{Clock, Outstanding, Pick, Selector, Source};
use super::shared::{OUTSTANDING, Shared, TRY_MASK, decode_result};
use super::tail::TailProbe;
use crate::ScanError;
use crate::model::{PortState, RateLimit, Reason, ScanKind};
use crate::net::{RawSender, Receiver, RecvBatch, SendBatch, Sent};
use crate::packet;
use crate::probe::{Identity, RawProbe};

/// Runs a raw scan (SYN, ACK or UDP) in the calling thread's network namespace.
pub(crate) fn run(plan: Plan) -> Result<Outcome, ScanError> {
    let probe = raw_probe(plan.kind)?;
    let kind_name = plan.kind.nmap_name();
    // Open the receive socket first: it queues packets from the moment it exists, so no
    // reply can arrive before we listen.
    let rx = Receiver::open(kind_name, plan.id.base_sport)?;
    let txs = open_senders(&plan, kind_name)?;
    let nsenders = txs.len();
    let (nhosts, nports) = (plan.targets.len(), plan.ports.len());
    let shared = Shared::new(plan.kind, nhosts, nports, &plan.timing, nsenders);
    let cursor = FreshCursor::new(nhosts * nports);
    let lookup = Lookup::new(&plan);
    let mut limits = Vec::new();
    let retransmissions = std::thread::scope(|scope| -> Result<u64, ScanError> {
        let mut senders = Vec::with_capacity(nsenders);
        for (k, tx) in txs.iter().enumerate() {
            let (shared, plan, cursor) = (&shared, &plan, &cursor);
            let h = std::thread::Builder::new()
                .name(format!("scan-send-{k}"))
                .spawn_scoped(scope, move || {
                    SendLoop::new(shared, plan, tx, cursor, probe, k, nsenders).run()
                })
                .map_err(spawn_err)?;
            senders.push(h);
        }
        let threads: Vec<std::thread::Thread> =
            senders.iter().map(|h| h.thread().clone()).collect();
        let (shared_r, rx, lookup) = (&shared, &rx, &lookup);
        let receiver = std::thread::Builder::new()
            .name("scan-recv".into())
            .spawn_scoped(scope, move || {
                receive_loop(shared_r, rx, probe, lookup, &threads)
            });
        let mut result = join_senders(&shared, senders);
        // The receive thread keeps running for the confirmation phase (UDP only: in SYN and
        // ACK scans an ICMP error and silence give the same state).
        if result.is_ok()
            && plan.kind == ScanKind::Udp
            && let Some(tx) = txs.first()
        {
            match confirm_udp(&shared, &plan, probe, tx, kind_name) {
                Ok(l) => limits = l,
                Err(e) => result = Err(e),
            }
        }
        shared.stop.store(true, Ordering::Release);
        let receiver = receiver.map_err(spawn_err)?;
        receiver
            .join()
            .map_err(|_| ScanError::ThreadPanicked("scan-recv"))?;
        result
    })?;
    if let Some(cb) = &plan.progress {
        cb(&shared.progress((nhosts * nports) as u64));
    }
    let mut outcome = shared.into_outcome(retransmissions);
    outcome.rate_limits = limits;
    Ok(outcome)
}

/// The probe kind of a raw scan.
fn raw_probe(kind: ScanKind) -> Result<RawProbe, ScanError> {
    match kind {
        ScanKind::Syn => Ok(RawProbe::Syn),
        ScanKind::Ack => Ok(RawProbe::Ack),
        ScanKind::Udp => Ok(RawProbe::Udp),
        ScanKind::Connect => Err(ScanError::Config(
            "connect scans do not use the raw engine".into(),
        )),
    }
}

/// The IP protocol of a scan's probes.
fn ip_proto(kind: ScanKind) -> u8 {
    if kind == ScanKind::Udp {
        packet::PROTO_UDP
    } else {
        packet::PROTO_TCP
    }
}

/// One send socket per send thread: one per CPU (at most 4), since on a local path most of
/// the cost of a probe is the kernel's work for it and for its answer, done in the sending
/// thread's context.
fn open_senders(plan: &Plan, kind_name: &'static str) -> Result<Vec<RawSender>, ScanError> {
    let want_v4 = plan.targets.iter().any(IpAddr::is_ipv4);
    let v6_source = plan.sources.iter().find_map(|s| match s {
        IpAddr::V6(a) => Some(*a),
        IpAddr::V4(_) => None,
    });
    let proto = ip_proto(plan.kind);
    let nsenders = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4)
        .min(plan.targets.len() * plan.ports.len());
    (0..nsenders)
        .map(|_| RawSender::open(kind_name, want_v4, v6_source, proto))
        .collect()
}

fn spawn_err(source: std::io::Error) -> ScanError {
    ScanError::Socket {
        what: "starting a scan thread".into(),
        source,
    }
}

/// Waits for every send thread; the retransmissions they made, or the first error (the other
/// senders are told to stop once one failed).
fn join_senders(
    shared: &Shared,
    senders: Vec<ScopedJoinHandle<'_, Result<u64, ScanError>>>,
) -> Result<u64, ScanError> {
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
    match first_err {
        Some(e) => Err(e),
        None => Ok(total),
    }
}

/// The confirmation phase of a UDP scan, over raw sockets (the receive thread still runs).
fn confirm_udp(
    shared: &Shared,
    plan: &Plan,
    probe: RawProbe,
    tx: &RawSender,
    kind_name: &'static str,
) -> Result<Vec<Option<RateLimit>>, ScanError> {
    shared.confirming.store(true, Ordering::Release);
    let mut io = RawRounds::new(plan, probe, tx, kind_name);
    confirm::run(shared, &Setup::of(plan), &mut io)
}

/// What the receive thread needs to turn a reply into a port index.
struct Lookup {
    host_index: HashMap<IpAddr, usize>,
    /// Port → position in the scan's port list (`u32::MAX`: not scanned).
    port_pos: Vec<u32>,
    /// Our source addresses, extra ones included: replies must be addressed to one.
    sources: Vec<IpAddr>,
    id: Identity,
}

impl Lookup {
    fn new(plan: &Plan) -> Self {
        let host_index = plan
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
        Lookup {
            host_index,
            port_pos,
            sources,
            id: plan.id,
        }
    }

    /// Hands one received packet to `shared` if it answers one of our probes; whether it did.
    fn deliver(&self, shared: &Shared, probe: RawProbe, packet: &[u8]) -> bool {
        let Some(pkt) = packet::decode(packet) else {
            return false;
        };
        let Some(m) = probe.interpret(&self.id, &pkt, |a| self.sources.contains(&a)) else {
            return false;
        };
        let Some(&host) = self.host_index.get(&m.target) else {
            return false;
        };
        let pos = self.port_pos[usize::from(m.port)];
        if pos == u32::MAX {
            return false;
        }
        shared.on_reply(host, pos as usize, m.tryno, m.reply);
        true
    }
}

fn receive_loop(
    shared: &Shared,
    rx: &Receiver,
    probe: RawProbe,
    lookup: &Lookup,
    senders: &[std::thread::Thread],
) {
    // Poll without blocking and nap when the queue is empty: a reader blocked on the socket
    // would have to be woken by the sending thread for every reply (a cross-CPU wake-up per
    // packet), which costs more than the naps.
    let mut batch = RecvBatch::new(64);
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
            any |= lookup.deliver(shared, probe, batch.packet(i));
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

/// Most probes one send thread sends between two looks at its outstanding probes.
const BURST: usize = 64;

/// One send thread of a raw scan.
struct SendLoop<'a> {
    shared: &'a Shared,
    plan: &'a Plan,
    tx: &'a RawSender,
    probe: RawProbe,
    me: usize,
    nsenders: usize,
    sel: Selector<'a>,
    out: Outstanding,
    tail: TailProbe,
    batch: SendBatch,
    retransmissions: u64,
    last_progress: u64,
}

impl<'a> SendLoop<'a> {
    fn new(
        shared: &'a Shared,
        plan: &'a Plan,
        tx: &'a RawSender,
        cursor: &'a FreshCursor,
        probe: RawProbe,
        me: usize,
        nsenders: usize,
    ) -> Self {
        SendLoop {
            shared,
            plan,
            tx,
            probe,
            me,
            nsenders,
            sel: Selector::new(cursor, me, plan.targets.len(), plan.ports.len()),
            out: Outstanding::default(),
            tail: TailProbe::new(),
            batch: SendBatch::new(),
            retransmissions: 0,
            last_progress: 0,
        }
    }

    /// Sends until every probe of this thread has its verdict; returns the number of
    /// retransmissions.
    fn run(mut self) -> Result<u64, ScanError> {
        let shared = self.shared;
        loop {
            let now = shared.now_us();
            let (timeout_us, window) = shared.timing_now();
            let rack_us = (2 * shared.srtt_us()).clamp(1_000, timeout_us.max(1_000));
            let clock = Clock {
                now_us: now,
                timeout_us,
                rack_us,
                latest_answered_us: shared.latest_answered_sent(),
                max_retries: self.plan.timing.max_retries,
            };
            self.out.settle(shared, &clock, &mut self.sel);
            let (burst, paced_us) = self.send_burst(window, rack_us)?;
            self.report_progress(now);
            if shared.abort.load(Ordering::Acquire) || self.finished() {
                break;
            }
            if burst == 0 {
                self.park(timeout_us, paced_us);
            }
        }
        if let Some((idx, tryno)) = self.tail.take_pending() {
            shared.on_expiry(idx, tryno, self.plan.timing.max_retries);
        }
        Ok(self.retransmissions)
    }

    /// Sends up to [`BURST`] probes while the window, the rate caps and the scan delay allow;
    /// returns how many left and, when the per-target cap stopped it, the µs it asked to wait.
    fn send_burst(&mut self, window: u64, rack_us: u64) -> Result<(usize, u64), ScanError> {
        let shared = self.shared;
        let mut burst = 0usize;
        let mut paced_us = 0;
        while burst < BURST {
            if shared.in_flight() >= window || shared.rate_wait(shared.now_us()) > 0 {
                break;
            }
            if self.sel.has_work() && shared.scan_delay_wait(shared.now_us()) > 0 {
                break;
            }
            let Some(pick) = self.next_probe(rack_us) else {
                break;
            };
            // The rate caps, in the send path itself: no probe leaves without a token.
            paced_us = shared.pace(pick.idx / shared.nports());
            if paced_us > 0 {
                break;
            }
            self.take(&pick);
            burst += 1;
            if self.send(&pick, &mut burst)? {
                break;
            }
        }
        send_batch(
            shared,
            self.tx,
            &mut self.batch,
            &mut burst,
            &mut self.retransmissions,
        )?;
        Ok((burst, paced_us))
    }

    /// The next probe: a retransmission (unless the rate-limit pause holds it back) or a first
    /// probe (`select`), else a tail probe when nothing waits for retransmission.
    fn next_probe(&mut self, rack_us: u64) -> Option<Pick> {
        let shared = self.shared;
        let nports = shared.nports();
        let held =
            |idx: usize, tryno: u8| shared.rld_wait(idx / nports, tryno, shared.now_us()) > 0;
        if let Some(pick) = self.sel.next(shared, held) {
            return Some(pick);
        }
        if self.sel.retransmits_waiting() {
            return None;
        }
        let newest = self.out.newest_retryable();
        let (idx, tryno) = tail_probe(
            shared,
            &self.tail,
            self.probe,
            newest,
            rack_us,
            shared.now_us(),
        )?;
        Some(Pick {
            idx,
            tryno,
            source: Source::Tail,
        })
    }

    /// `pick` is on its way: it leaves its queue, and a tail probe settles the previous one.
    fn take(&mut self, pick: &Pick) {
        self.sel.take(pick);
        match pick.source {
            Source::Fresh => self.tail.note_fresh(pick.idx),
            Source::Tail => {
                if let Some((i, t)) = self.tail.take_pending() {
                    self.shared.on_expiry(i, t, self.plan.timing.max_retries);
                }
                let newest = self.out.newest_retryable().unwrap_or(0);
                self.tail.sent(pick.idx, pick.tryno, newest);
            }
            Source::Retransmit => {}
        }
    }

    /// Builds `pick`'s packet into the batch, marks it sent and queues it as outstanding;
    /// sends the batch when full. Returns `true` when the kernel's buffers were full.
    fn send(&mut self, pick: &Pick, burst: &mut usize) -> Result<bool, ScanError> {
        let (shared, plan) = (self.shared, self.plan);
        let nports = shared.nports();
        let (h, p) = (pick.idx / nports, pick.idx % nports);
        let dst = plan.targets[h];
        let len = self.probe.build(
            &plan.id,
            self.batch.next_buf(),
            plan.sources[h],
            dst,
            plan.ports[p],
            pick.tryno,
        );
        let t = shared.now_us();
        // Marked sent before it leaves: the answer may arrive before the batch is out.
        shared.mark_sent(pick.idx, pick.tryno, t);
        // A tail probe waits in no queue: its port already has its verdict, and its answer
        // only has to reach the receive thread.
        if pick.source != Source::Tail {
            let last = pick.tryno >= shared.allowed_tryno(h);
            self.out.push(pick.idx, pick.tryno, t, last);
        }
        if self.batch.push(len, dst, pick.source == Source::Retransmit) {
            return send_batch(
                shared,
                self.tx,
                &mut self.batch,
                burst,
                &mut self.retransmissions,
            );
        }
        Ok(false)
    }

    /// Thread 0 reports progress about ten times a second.
    fn report_progress(&mut self, now: u64) {
        if self.me == 0
            && let Some(cb) = &self.plan.progress
            && now >= self.last_progress + 100_000
        {
            self.last_progress = now;
            let total = (self.plan.targets.len() * self.plan.ports.len()) as u64;
            cb(&self.shared.progress(total));
        }
    }

    /// Whether this thread is done: nothing left to send and every probe in flight settled,
    /// after reopening the ports called silent before loss was seen on their host (they get
    /// the extra tries the host now allows; nmap would leave them filtered).
    fn finished(&mut self) -> bool {
        let shared = self.shared;
        if self.sel.has_work() || !self.out.all_settled(shared) {
            return false;
        }
        let (nhosts, nports) = (self.plan.targets.len(), self.plan.ports.len());
        self.sel.retransmit_all(
            (self.me..nhosts * nports)
                .step_by(self.nsenders)
                .map(|i| (i % nhosts) * nports + i / nhosts)
                .filter_map(|idx| shared.reopen_if_undertried(idx).map(|t| (idx, t))),
        );
        !self.sel.retransmits_waiting()
    }

    /// Blocked on the window, the rate caps or the next expiry: parks until the soonest of
    /// them. The receive thread unparks us when an answer frees a slot.
    fn park(&self, timeout_us: u64, paced_us: u64) {
        let shared = self.shared;
        let now = shared.now_us();
        let until_expiry = self.out.until_expiry(now, timeout_us);
        let until_rld = self
            .sel
            .oldest_retransmit()
            .map(|(idx, _)| {
                shared.rld_until[idx / shared.nports()]
                    .load(Ordering::Acquire)
                    .saturating_sub(now)
            })
            .unwrap_or(0);
        let until_rate = shared
            .rate_wait(now)
            .max(shared.scan_delay_wait_peek(now))
            .max(until_rld)
            .max(paced_us);
        let wait = if until_rate > 0 {
            until_rate.min(until_expiry)
        } else {
            until_expiry
        }
        .clamp(20, 2_000);
        shared.sender_parked[self.me].store(true, Ordering::Release);
        std::thread::park_timeout(Duration::from_micros(wait));
        shared.sender_parked[self.me].store(false, Ordering::Release);
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
    batch: SendBatch,
}

impl<'a> RawRounds<'a> {
    fn new(plan: &'a Plan, probe: RawProbe, tx: &'a RawSender, kind_name: &'static str) -> Self {
        RawRounds {
            plan,
            probe,
            tx,
            kind_name,
            v6_extra: Vec::new(),
            batch: SendBatch::new(),
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
                let proto = ip_proto(self.plan.kind);
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
        shared.wait_for_caps(h);
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

/// A tail probe to send at `now_us`, as (index, try number), if one is due: TCP probes only,
/// no scan delay in force (nmap's back-off after heavy loss), the newest waiting first try
/// (sent at `newest_us`) older than `rack_us`, and a recently probed port of this thread that
/// answered with a RST and has no probe outstanding.
fn tail_probe(
    shared: &Shared,
    tail: &TailProbe,
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
    batch: &mut SendBatch,
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
    use crate::classify::Reply;
    use crate::timing::Timing;

    #[test]
    fn tail_probe_reprobes_a_closed_port_once_the_waiting_try_is_older_than_rack() {
        let t = Timing::default();
        let sh = Shared::new(ScanKind::Syn, 1, 3, &t, 1);
        let mut tail = TailProbe::new();
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
        let due = |tail: &TailProbe, probe, now| tail_probe(&sh, tail, probe, Some(0), 1_000, now);
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
}
