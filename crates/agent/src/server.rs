//! The HTTP server of every long-running command — the standalone agent, the Kubernetes agent
//! and the controller: one accept loop over hyper's HTTP/1 connections ([`serve`]) with the
//! limits that keep hostile clients from starving the reconcile path. The signals that stop
//! them are [`crate::lifecycle`]'s.
//!
//! A key design decision is that a connection costs a descriptor, and the reconcile path needs
//! descriptors too (iptables children and their pipes, policy files, raw sockets for peer
//! scans). The agent's port is on the failsafe list, so no policy can shield it: any host can
//! connect. So [`fit_descriptors`], called once at start before any other thread or child,
//! sets `RLIMIT_NOFILE`'s soft limit to what serving needs — the descriptors open then, plus
//! [`Limits::max_connections`], plus [`Limits::reserved_descriptors`], within the hard limit
//! (never the hard limit itself, which can be 2^30 and which every iptables child inherits) —
//! and [`serve`] caps its connections so that the reserve (at most half the limit) stays free
//! beyond the descriptors open at that start. What the rest of the process opens later comes
//! out of the reserve; a limit so low that even [`MIN_CONNECTIONS`] do not fit keeps no
//! reserve (a warning says so).
//!
//! # Guarantees
//!
//! * At most the connection cap ([`Budget::connections`]: [`Limits::max_connections`], fewer
//!   when the descriptor limit is low) are open at once; at most [`Limits::max_per_source`]
//!   from one source: an IPv4 address, an IPv6 /64 (one host usually has a whole /64), or the
//!   node itself (loopback, all of 127.0.0.0/8 and ::1, and connections from the address they
//!   came to); and at most [`Limits::max_per_network`] from one IPv6 /48 (a site's allocation
//!   holds 65,536 /64s).
//! * [`local_slots`] of the cap are kept for the node itself: other sources together hold at
//!   most the rest, so a flood from elsewhere cannot refuse a local health probe or curl.
//! * A connection over a cap is closed at once, never queued, and counted in
//!   `http_connections_refused_total{reason="per_source"|"per_network"|"total"}`.
//! * When the slots a source may take are full, a source holding at least two connections
//!   fewer than the heaviest source takes that source's oldest connection (closed, counted as
//!   `http_connections_closed_total{reason="evicted"}`). So a quiet client (Prometheus,
//!   `verify`) is refused only while every other source holds at most one connection: a
//!   lock-out takes as many sources, each keeping a connection open, as there are slots for
//!   sources other than the node (496 by default) — that many IPv4 addresses, or IPv6 /64s
//!   from at least eight /48s.
//! * A request header must be complete within [`Limits::header_timeout`] of the connection's
//!   start, or of the end of the previous response (so that is also the keep-alive idle
//!   time); otherwise the connection is closed (`reason="timeout"`). Headers and buffers are
//!   capped at [`MAX_HEADER_BYTES`] and [`MAX_BUFFER_BYTES`].
//! * A request's handler runs at most [`Limits::request_timeout`]; then it is answered 503.
//! * A connection lives at most [`Limits::max_connection_age`]; then it is closed after its
//!   in-flight request, at the latest `request_timeout` later (`reason="max_age"`).
//! * On shutdown nothing new is accepted, open connections finish their in-flight request,
//!   and [`serve`] returns at the latest `request_timeout` after the signal.
//!
//! # Caveats
//!
//! The node's own clients are one source: a local user holding `max_per_source` connections
//! shuts out the other local clients (not remote ones), as long as the header timeout lets
//! them hold.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use hyper::server::conn::http1;
use hyper::service::{Service as _, service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::metrics::HttpMetrics;

/// Largest request header accepted (request line included); larger ones get 431.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
/// Largest read or write buffer of one connection (hyper's minimum is 8 KiB).
pub const MAX_BUFFER_BYTES: usize = 16 * 1024;
/// The connection cap never goes below this, even when the descriptor limit is tiny.
pub const MIN_CONNECTIONS: usize = 4;
/// Warnings about refused connections and accept errors are logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// What one client may hold, and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Open connections at once, all sources together.
    pub max_connections: usize,
    /// Open connections at once from one source address (IPv6: one /64; the node itself is
    /// one source).
    pub max_per_source: usize,
    /// Open connections at once from one IPv6 /48, all its /64s together.
    pub max_per_network: usize,
    /// Time to send a complete request header, from the connection's start or the end of the
    /// previous response.
    pub header_timeout: Duration,
    /// Time a handler may take; also the grace for an in-flight request at shutdown.
    pub request_timeout: Duration,
    /// A connection is closed (after its in-flight request) when it is this old.
    pub max_connection_age: Duration,
    /// Descriptors kept free for the rest of the process (at most half the limit).
    pub reserved_descriptors: usize,
}

impl Default for Limits {
    /// 512 connections, 16 per source, 64 per IPv6 /48, 5 s for a header, 10 s per request,
    /// 60 s per connection, 256 descriptors kept for the reconcile path.
    fn default() -> Limits {
        Limits {
            max_connections: 512,
            max_per_source: 16,
            max_per_network: 64,
            header_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_connection_age: Duration::from_secs(60),
            reserved_descriptors: 256,
        }
    }
}

/// The connection cap that fits a descriptor limit of `nofile` with `open` descriptors in use,
/// and the reserve it keeps: `max_connections`, lowered so that `reserved_descriptors` (at
/// most half of `nofile`) remain, and never below [`MIN_CONNECTIONS`].
///
/// # Caveats
///
/// With a limit so low that even [`MIN_CONNECTIONS`] does not fit, the reserve is not kept
/// ([`fit_descriptors`] warns).
pub fn connection_budget(limits: &Limits, nofile: u64, open: usize) -> (usize, u64) {
    let reserve = (limits.reserved_descriptors as u64).min(nofile / 2);
    let free = nofile.saturating_sub(open as u64).saturating_sub(reserve);
    let cap = free.min(limits.max_connections as u64);
    let cap = usize::try_from(cap)
        .unwrap_or(limits.max_connections)
        .max(MIN_CONNECTIONS);
    (cap, reserve)
}

/// The soft descriptor limit serving within `limits` needs with `open` descriptors in use:
/// those, the connections and the reserve, but no more than `hard`.
pub fn descriptor_target(limits: &Limits, open: usize, hard: u64) -> u64 {
    (open as u64)
        .saturating_add(limits.max_connections as u64)
        .saturating_add(limits.reserved_descriptors as u64)
        .min(hard)
}

/// The connection slots kept for the node's own clients out of a cap of `total`: as many as
/// one source may hold, at most half the cap.
pub fn local_slots(total: usize, per_source: usize) -> usize {
    per_source.min(total / 2)
}

/// What [`fit_descriptors`] settled on, for [`serve`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// The limits served within.
    pub limits: Limits,
    /// The soft `RLIMIT_NOFILE` in force.
    pub nofile: u64,
    /// Connections open at once, all sources together.
    pub connections: usize,
    /// Descriptors kept free for the rest of the process.
    pub reserve: u64,
}

/// Sets this process's soft `RLIMIT_NOFILE` to [`descriptor_target`] (up or down; no privilege
/// needed) and fits the connection cap to the limit then in force ([`connection_budget`]).
/// Logs both.
///
/// # Guarantees
///
/// Call it once, first thing, before the process starts threads that spawn children: every
/// child (iptables, nft) then inherits the same, fitted limit — not the hard limit, which
/// can be 2^30 (`LimitNOFILE=infinity`) and makes tools that walk every descriptor slow.
///
/// # Caveats
///
/// When the limit cannot be read, 1024 is assumed; when it cannot be set, the current soft
/// limit stays. Both are logged, never fatal.
pub fn fit_descriptors(limits: Limits) -> Budget {
    let open = open_descriptors();
    let nofile = match set_descriptor_limit(|hard| descriptor_target(&limits, open, hard)) {
        Ok(n) => n,
        Err(e) => {
            warn!(error = %e, "cannot read the descriptor limit; assuming 1024");
            1024
        }
    };
    let (connections, reserve) = connection_budget(&limits, nofile, open);
    if (connections + open) as u64 + reserve > nofile {
        warn!(
            nofile,
            connections,
            "the descriptor limit is too low to keep descriptors for the reconcile path; raise it (LimitNOFILE=, ulimit -n)"
        );
    }
    info!(
        nofile,
        open,
        connections,
        per_source = limits.max_per_source,
        per_network = limits.max_per_network,
        header_timeout_s = limits.header_timeout.as_secs_f64(),
        "HTTP connection limits"
    );
    Budget {
        limits,
        nofile,
        connections,
        reserve,
    }
}

/// Sets the soft `RLIMIT_NOFILE` to `target(hard)` and returns the soft limit now in force.
///
/// # Errors
///
/// When the limit cannot be read; when it cannot be set, the current soft limit is returned
/// (and a warning logged).
fn set_descriptor_limit(target: impl FnOnce(u64) -> u64) -> std::io::Result<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let soft = target(r.rlim_max);
    if soft == r.rlim_cur {
        return Ok(soft);
    }
    let fitted = libc::rlimit {
        rlim_cur: soft,
        rlim_max: r.rlim_max,
    };
    // SAFETY: `fitted` is a valid rlimit for the duration of the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &fitted) } != 0 {
        let e = std::io::Error::last_os_error();
        warn!(error = %e, soft = r.rlim_cur, hard = r.rlim_max, wanted = soft, "cannot set the descriptor limit; keeping the soft limit");
        return Ok(r.rlim_cur);
    }
    Ok(soft)
}

/// Descriptors this process has open (`/proc/self/fd`), 0 when that cannot be read.
fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Which cap refused a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    PerSource,
    PerNetwork,
    Total,
}

impl Refusal {
    fn as_str(self) -> &'static str {
        match self {
            Refusal::PerSource => "per_source",
            Refusal::PerNetwork => "per_network",
            Refusal::Total => "total",
        }
    }
}

/// The key of the node's own clients: loopback and connections from the address they came to.
const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The key connections are counted by: [`LOCAL`] for loopback (any address of 127.0.0.0/8,
/// which any local user can bind, and ::1), the IPv4 address (IPv4-mapped IPv6 included), or
/// the /64 of an IPv6 address.
fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        ip if ip.is_loopback() => LOCAL,
        IpAddr::V6(v6) => IpAddr::V6(prefix(v6, 64)),
        v4 => v4,
    }
}

/// The key of a connection from `peer` to the local address `local`: [`LOCAL`] when the two
/// are the same address (the node calling itself, as a kubelet probing a host-network pod
/// does; no other host can complete a handshake with this node's own address as its
/// source), else [`source_key`].
fn connection_key(peer: IpAddr, local: Option<IpAddr>) -> IpAddr {
    if local.is_some_and(|l| l.to_canonical() == peer.to_canonical()) {
        LOCAL
    } else {
        source_key(peer)
    }
}

/// The first `bits` bits of `ip`.
fn prefix(ip: Ipv6Addr, bits: u32) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(ip) & !(u128::MAX >> bits))
}

/// The network a [`source_key`] belongs to for [`Limits::max_per_network`]: the /48 of an
/// IPv6 source; an IPv4 source (and [`LOCAL`]) is its own network.
fn network_key(source: IpAddr) -> IpAddr {
    match source {
        IpAddr::V6(v6) => IpAddr::V6(prefix(v6, 48)),
        v4 => v4,
    }
}

/// Open connections by source, oldest first, each with a token that closes it when taken
/// (pure bookkeeping; [`serve`] holds one behind a mutex).
#[derive(Debug)]
struct Book<T> {
    total: usize,
    per_source: usize,
    per_network: usize,
    /// Slots only [`LOCAL`] may take ([`local_slots`]).
    local: usize,
    open: usize,
    /// Connections of sources other than [`LOCAL`].
    remote: usize,
    next_id: u64,
    sources: HashMap<IpAddr, VecDeque<(u64, T)>>,
    networks: HashMap<IpAddr, usize>,
}

impl<T> Book<T> {
    fn new(total: usize, per_source: usize, per_network: usize) -> Book<T> {
        let (total, per_source) = (total.max(1), per_source.max(1));
        Book {
            total,
            per_source,
            per_network: per_network.max(1),
            local: local_slots(total, per_source),
            open: 0,
            remote: 0,
            next_id: 0,
            sources: HashMap::new(),
            networks: HashMap::new(),
        }
    }

    /// Admits a connection from `source` (a [`source_key`]), or says which cap refuses it.
    /// Returns its id and, when the slots `source` may take were full, the token of the
    /// connection it evicted (to be closed by the caller).
    fn admit(&mut self, source: IpAddr, token: T) -> Result<(u64, Option<T>), Refusal> {
        let held = self.sources.get(&source).map_or(0, VecDeque::len);
        if held >= self.per_source {
            return Err(Refusal::PerSource);
        }
        let local = source == LOCAL;
        let network = network_key(source);
        if !local && self.networks.get(&network).copied().unwrap_or(0) >= self.per_network {
            return Err(Refusal::PerNetwork);
        }
        let mut evicted = None;
        // Other sources may not take the slots kept for the node: when they are at their
        // share, they make room among themselves.
        let remote_full = !local && self.remote >= self.total - self.local;
        if remote_full || self.open >= self.total {
            let heaviest = self
                .sources
                .iter()
                .filter(|(k, _)| !remote_full || **k != LOCAL)
                .max_by_key(|(_, q)| q.len())
                .map(|(k, q)| (*k, q.len()));
            match heaviest {
                Some((victim, n)) if held + 1 < n => evicted = self.evict(victim),
                _ => return Err(Refusal::Total),
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        self.sources
            .entry(source)
            .or_default()
            .push_back((id, token));
        self.count(source, true);
        Ok((id, evicted))
    }

    /// Counts a connection of `source` in (`true`) or out.
    fn count(&mut self, source: IpAddr, added: bool) {
        let step = |n: &mut usize| {
            *n = if added { *n + 1 } else { n.saturating_sub(1) };
        };
        step(&mut self.open);
        if source != LOCAL {
            step(&mut self.remote);
            let network = network_key(source);
            let n = self.networks.entry(network).or_default();
            step(n);
            if *n == 0 {
                self.networks.remove(&network);
            }
        }
    }

    fn evict(&mut self, source: IpAddr) -> Option<T> {
        let queue = self.sources.get_mut(&source)?;
        let (_, token) = queue.pop_front()?;
        if queue.is_empty() {
            self.sources.remove(&source);
        }
        self.count(source, false);
        Some(token)
    }

    /// Forgets a connection that ended (nothing when it was evicted already).
    fn release(&mut self, source: IpAddr, id: u64) {
        let Some(queue) = self.sources.get_mut(&source) else {
            return;
        };
        let found = queue.iter().position(|(i, _)| *i == id);
        if let Some(pos) = found {
            queue.remove(pos);
        }
        if queue.is_empty() {
            self.sources.remove(&source);
        }
        if found.is_some() {
            self.count(source, false);
        }
    }
}

type SharedBook = Arc<Mutex<Book<oneshot::Sender<()>>>>;

fn lock(book: &SharedBook) -> std::sync::MutexGuard<'_, Book<oneshot::Sender<()>>> {
    // Poisoned only if a thread panicked mid-update of plain counters: keep counting.
    book.lock().unwrap_or_else(|p| p.into_inner())
}

/// A connection's place in the book; released when the connection's task ends.
struct Slot {
    book: SharedBook,
    source: IpAddr,
    id: u64,
    metrics: HttpMetrics,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut book = lock(&self.book);
        book.release(self.source, self.id);
        self.metrics.connections_open.set(book.open as i64);
    }
}

/// Says `true` at most once per [`WARN_EVERY`], so a flood cannot flood the log too.
struct Throttle(Option<Instant>);

impl Throttle {
    fn ready(&mut self) -> bool {
        let now = Instant::now();
        if self.0.is_some_and(|t| now.duration_since(t) < WARN_EVERY) {
            return false;
        }
        self.0 = Some(now);
        true
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, within `budget` (see the
/// [module documentation](self) for every bound), counting connections in `metrics`.
///
/// # Guarantees
///
/// See the module documentation. The caps are exported as `http_connection_limit`,
/// `http_connection_limit_per_source` and `http_connection_limit_per_network`.
///
/// # Caveats
///
/// HTTP/1 only (every client of these endpoints speaks it). Errors of single connections and
/// of `accept` are logged (at most every 10 s) and never end the server. `budget` comes from
/// [`fit_descriptors`], called at the process's start.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    budget: Budget,
    metrics: HttpMetrics,
    shutdown: impl Future<Output = ()>,
) {
    let limits = budget.limits;
    metrics.connection_limit.set(budget.connections as i64);
    metrics
        .connection_limit_per_source
        .set(limits.max_per_source as i64);
    metrics
        .connection_limit_per_network
        .set(limits.max_per_network as i64);
    let book: SharedBook = Arc::new(Mutex::new(Book::new(
        budget.connections,
        limits.max_per_source,
        limits.max_per_network,
    )));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(MAX_HEADER_BYTES)
        .max_buf_size(MAX_BUFFER_BYTES);
    let (stop, stopped) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut refusals = (Throttle(None), 0u64);
    let mut accept_errors = Throttle(None);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    accept_failed(e, &mut accept_errors).await;
                    continue;
                }
            },
        };
        let source = connection_key(peer.ip(), stream.local_addr().ok().map(|a| a.ip()));
        let (evict, evicted) = oneshot::channel();
        let Some(id) = admit(&book, source, evict, &metrics, &mut refusals, peer.ip()) else {
            // Dropped unread: closed at once, the kernel resets it.
            drop(stream);
            continue;
        };
        let slot = Slot {
            book: book.clone(),
            source,
            id,
            metrics: metrics.clone(),
        };
        tasks.spawn(connection(
            stream,
            slot,
            evicted,
            stopped.clone(),
            http.clone(),
            router.clone(),
            limits,
        ));
    }
    let _ = stop.send(true);
    drop(listener);
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.request_timeout, drain)
        .await
        .is_err()
    {
        warn!(
            left = tasks.len(),
            "HTTP connections still open at shutdown; closing them"
        );
        tasks.abort_all();
    }
}

/// Books a connection from `source` (`peer`): its id, evicting the connection it displaces
/// (`evict` closes this one if it is displaced later), or `None` when a cap refuses it
/// (counted, and logged at most every 10 s with the refusals since).
fn admit(
    book: &SharedBook,
    source: IpAddr,
    evict: oneshot::Sender<()>,
    metrics: &HttpMetrics,
    refusals: &mut (Throttle, u64),
    peer: IpAddr,
) -> Option<u64> {
    let admitted = {
        let mut b = lock(book);
        let admitted = b.admit(source, evict);
        metrics.connections_open.set(b.open as i64);
        admitted
    };
    match admitted {
        Ok((id, victim)) => {
            if let Some(victim) = victim {
                let _ = victim.send(());
                metrics.closed("evicted");
            }
            Some(id)
        }
        Err(refusal) => {
            metrics.refused(refusal.as_str());
            refusals.1 += 1;
            if refusals.0.ready() {
                warn!(
                    cap = refusal.as_str(),
                    source = %peer,
                    refused = refusals.1,
                    "HTTP connections refused over a cap (counted in http_connections_refused_total)"
                );
                refusals.1 = 0;
            }
            None
        }
    }
}

/// Backs off after an `accept` error other than a connection that went away before it was
/// accepted (out of descriptors, out of memory), so the loop does not spin.
async fn accept_failed(e: std::io::Error, throttle: &mut Throttle) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionAborted
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionRefused
            | ErrorKind::Interrupted
    ) {
        return;
    }
    if throttle.ready() {
        warn!(error = %e, "cannot accept HTTP connections; retrying every 100 ms");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Serves one connection within the limits; closes it when `evicted` fires, when it gets too
/// old, or at shutdown (after its in-flight request).
async fn connection(
    stream: TcpStream,
    slot: Slot,
    mut evicted: oneshot::Receiver<()>,
    mut stopped: watch::Receiver<bool>,
    http: http1::Builder,
    router: Router,
    limits: Limits,
) {
    let metrics = slot.metrics.clone();
    let service = TowerToHyperService::new(router);
    let timeouts = metrics.clone();
    let bounded = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        let call = service.call(request);
        let timeouts = timeouts.clone();
        async move {
            match tokio::time::timeout(limits.request_timeout, call).await {
                Ok(response) => response,
                Err(_) => {
                    timeouts.request_timeouts.inc();
                    Ok(too_slow(limits.request_timeout))
                }
            }
        }
    });
    let conn = http.serve_connection(TokioIo::new(stream), bounded);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                if e.is_timeout() {
                    metrics.closed("timeout");
                } else {
                    debug!(error = %e, "HTTP connection ended with an error");
                }
            }
            drop(slot);
            return;
        }
        // Evicted for a quieter source: dropping the connection closes it.
        _ = &mut evicted => return,
        () = tokio::time::sleep(limits.max_connection_age) => metrics.closed("max_age"),
        _ = stopped.wait_for(|s| *s) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(limits.request_timeout, conn).await;
    drop(slot);
}

/// The answer to a request whose handler ran out of time.
fn too_slow(limit: Duration) -> Response {
    let mut r = Response::new(Body::from(format!(
        "the request took longer than {} s; try again later\n",
        limit.as_secs()
    )));
    *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn budget_keeps_descriptors_for_the_reconcile_path() {
        let l = Limits::default();
        // A generous limit: the configured cap.
        assert_eq!(connection_budget(&l, 1 << 20, 12), (512, 256));
        // 512 descriptors: 256 kept, 12 in use.
        assert_eq!(connection_budget(&l, 512, 12), (244, 256));
        // A small limit keeps half of it.
        assert_eq!(connection_budget(&l, 128, 10), (54, 64));
        // Absurdly small: still a few connections.
        assert_eq!(connection_budget(&l, 8, 6).0, MIN_CONNECTIONS);
        assert_eq!(connection_budget(&l, u64::MAX, 12), (512, 256));
    }

    #[test]
    fn the_soft_limit_is_fitted_to_what_serving_needs_within_the_hard_limit() {
        let l = Limits::default();
        // 20 open + 512 connections + 256 kept, whatever the hard limit allows beyond.
        assert_eq!(descriptor_target(&l, 20, 1 << 30), 788);
        assert_eq!(descriptor_target(&l, 20, libc::RLIM_INFINITY), 788);
        // A hard limit below that is the most there is.
        assert_eq!(descriptor_target(&l, 20, 500), 500);
        // Fitted, the cap and the reserve fit exactly.
        assert_eq!(connection_budget(&l, 788, 20), (512, 256));
    }

    #[test]
    fn ipv6_sources_are_counted_by_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(source_key(v4("2001:db8:1:2:aaaa::1")), v4("2001:db8:1:2::"));
        assert_eq!(
            source_key(v4("2001:db8:1:2:bbbb::9")),
            source_key(v4("2001:db8:1:2::1"))
        );
        assert_eq!(source_key(v4("::ffff:10.0.0.1")), v4("10.0.0.1"));
        assert_eq!(source_key(v4("10.0.0.1")), v4("10.0.0.1"));
    }

    #[test]
    fn per_source_cap_refuses_and_release_frees() {
        let mut b = Book::new(10, 2, 64);
        let a = v4("10.0.0.1");
        let (id1, _) = b.admit(a, 1).unwrap();
        b.admit(a, 2).unwrap();
        assert_eq!(b.admit(a, 3), Err(Refusal::PerSource));
        assert_eq!(b.open, 2);
        b.release(a, id1);
        assert_eq!(b.open, 1);
        assert!(b.admit(a, 4).is_ok());
        // Releasing twice (or an evicted id) changes nothing.
        b.release(a, id1);
        assert_eq!(b.open, 2);
    }

    #[test]
    fn total_cap_evicts_the_heaviest_sources_oldest_for_a_quieter_one() {
        // 8 slots, 4 of them kept for the node: other sources share 4.
        let mut b = Book::new(8, 4, 64);
        let flood = v4("10.0.0.1");
        let quiet = v4("10.0.0.2");
        for token in 0..4 {
            assert_eq!(b.admit(flood, token).unwrap().1, None);
        }
        // The flood cannot grow, and cannot evict itself.
        assert_eq!(b.admit(flood, 9), Err(Refusal::PerSource));
        // A quiet source gets in: the flood's oldest connection (token 0) is closed.
        let (_, evicted) = b.admit(quiet, 10).unwrap();
        assert_eq!(evicted, Some(0));
        assert_eq!(b.open, 4);
        // 3 vs 1: the quiet source may take one more (1 + 1 < 3) ...
        assert_eq!(b.admit(quiet, 11).unwrap().1, Some(1));
        // ... but not a third: 2 vs 2 is fair.
        assert_eq!(b.admit(quiet, 12), Err(Refusal::Total));
        assert_eq!(b.open, 4);
    }

    #[test]
    fn many_flooding_sources_leave_room_for_one_more() {
        // 8 slots (beside the 4 kept for the node) filled by 4 sources with 2 each: a fifth
        // source evicts one of them.
        let mut b = Book::new(12, 4, 64);
        for i in 0..4 {
            for t in 0..2 {
                b.admit(v4(&format!("10.0.0.{}", i + 1)), t).unwrap();
            }
        }
        let (_, evicted) = b.admit(v4("10.9.9.9"), 0).unwrap();
        assert!(evicted.is_some());
        // A flooding source at 1 cannot evict another at 2: 1 + 1 < 2 is false.
        let flooder_at_one = b
            .sources
            .iter()
            .find(|(_, q)| q.len() == 1)
            .map(|(k, _)| *k)
            .unwrap();
        assert_eq!(b.admit(flooder_at_one, 5), Err(Refusal::Total));
    }

    #[test]
    fn loopback_is_one_source_whatever_its_address() {
        // Any local user can bind any address of 127.0.0.0/8: counted apart, they would be
        // millions of sources.
        let lo = source_key(v4("127.0.0.1"));
        for other in ["127.0.0.2", "127.255.3.4", "::1", "::ffff:127.0.0.9"] {
            assert_eq!(source_key(v4(other)), lo, "{other}");
        }
    }

    #[test]
    fn a_connection_from_the_address_it_came_to_is_the_node_itself() {
        let node = v4("10.0.0.5");
        assert_eq!(connection_key(node, Some(node)), LOCAL);
        assert_eq!(connection_key(v4("::ffff:10.0.0.5"), Some(node)), LOCAL);
        assert_eq!(connection_key(v4("10.0.0.6"), Some(node)), v4("10.0.0.6"));
        assert_eq!(connection_key(v4("127.0.0.7"), Some(node)), LOCAL);
        assert_eq!(
            connection_key(v4("2001:db8::5"), Some(v4("2001:db8::5"))),
            LOCAL
        );
        assert_eq!(connection_key(node, None), node);
    }

    #[test]
    fn the_node_may_use_every_slot_and_other_sources_never_its_kept_ones() {
        // 6 slots, 3 kept for the node; 4 per source, so the node may also take one of the
        // other 3.
        let mut b = Book::new(6, 4, 64);
        assert_eq!(b.local, 3);
        for t in 0..4 {
            b.admit(LOCAL, t).unwrap();
        }
        assert_eq!(b.admit(LOCAL, 9), Err(Refusal::PerSource));
        let (x, y, z) = (v4("10.0.0.1"), v4("10.0.0.2"), v4("10.0.0.3"));
        b.admit(x, 10).unwrap();
        b.admit(y, 20).unwrap();
        assert_eq!(b.open, 6);
        // Full: a third source takes the node's oldest (4 vs 0) ...
        assert_eq!(b.admit(z, 30).unwrap().1, Some(0));
        assert_eq!((b.open, b.remote), (6, 3));
        // ... but with other sources at their 3, a fourth may not take the node's kept
        // slots, though the node holds 3 and each of them 1.
        assert_eq!(b.admit(v4("10.0.0.4"), 40), Err(Refusal::Total));
        assert_eq!(b.sources[&LOCAL].len(), 3);
    }

    #[test]
    fn a_local_user_with_many_loopback_addresses_cannot_fill_the_total_cap() {
        // One connection from each of 127.0.0.1-8 would fill 8 slots, each source at one:
        // no eviction is fair then, and every other client would be refused.
        let mut b = Book::new(8, 2, 64);
        for i in 1..=8 {
            let _ = b.admit(source_key(v4(&format!("127.0.0.{i}"))), i);
        }
        assert!(b.open <= 2, "loopback holds {} of 8 slots", b.open);
        assert!(b.admit(source_key(v4("10.0.0.1")), 0).is_ok());
    }

    #[test]
    fn remote_sources_cannot_take_the_slots_kept_for_local_clients() {
        // Every remote source at one connection: no eviction applies (it would not be fair),
        // so only slots that remote sources may not take let a loopback probe or curl in.
        let mut b = Book::new(8, 2, 64);
        for i in 1..=8 {
            let _ = b.admit(source_key(v4(&format!("10.0.0.{i}"))), i);
        }
        assert!(
            b.admit(source_key(v4("127.0.0.1")), 0).is_ok(),
            "a loopback health probe is refused"
        );
    }

    #[test]
    fn ipv6_sources_of_one_48_share_a_cap() {
        // A site's /48 holds 65,536 /64s: one connection from each of 512 of them would fill
        // the total cap, each source at one.
        let mut b = Book::new(512, 16, 64);
        let admitted = (0..512u32)
            .filter(|i| {
                b.admit(source_key(v4(&format!("2001:db8:1:{i:x}::1"))), *i)
                    .is_ok()
            })
            .count();
        assert!(admitted <= 64, "one /48 holds {admitted} of 512 slots");
    }
}
