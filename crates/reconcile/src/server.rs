//! The HTTP server of every long-running command — the standalone agent, the Kubernetes agent
//! and the controller — and the signals that stop them: one accept loop over hyper's HTTP/1
//! connections ([`serve`]) with the limits that keep hostile clients from starving the reconcile
//! path, and one [`shutdown_signal`].
//!
//! A key design decision is that a connection costs a descriptor, and the reconcile path needs
//! descriptors too (iptables children and their pipes, policy files, raw sockets for peer
//! scans). The agent's port is on the failsafe list, so no policy can shield it: any host can
//! connect. So [`serve`] raises `RLIMIT_NOFILE`'s soft limit to the hard limit and caps its
//! connections so that [`Limits::reserved_descriptors`] (at most half the limit) always remain
//! for everything else, whatever clients do.
//!
//! # Guarantees
//!
//! * At most [`Limits::max_connections`] connections are open at once (fewer when the
//!   descriptor limit is low, see [`connection_budget`]), and at most
//!   [`Limits::max_per_source`] from one source: an IPv4 address, or an IPv6 /64 (one host
//!   usually has a whole /64).
//! * A connection over a cap is closed at once, never queued, and counted in
//!   `http_connections_refused_total{reason="per_source"|"total"}`.
//! * When the total cap is reached, a source holding at least two connections fewer than the
//!   heaviest source takes that source's oldest connection (closed, counted as
//!   `http_connections_closed_total{reason="evicted"}`): a flood from fewer than
//!   `max_connections / 2` addresses cannot lock out a quiet client (Prometheus, `verify`, a
//!   kubelet probe, an operator's curl).
//! * A request header must be complete within [`Limits::header_timeout`] of the connection's
//!   start, or of the end of the previous response (so that is also the keep-alive idle
//!   time); otherwise the connection is closed (`reason="timeout"`). Headers and buffers are
//!   capped at [`MAX_HEADER_BYTES`] and [`MAX_BUFFER_BYTES`].
//! * A request's handler runs at most [`Limits::request_timeout`]; then it is answered 503.
//! * A connection lives at most [`Limits::max_connection_age`]; then it is closed after its
//!   in-flight request, at the latest `request_timeout` later (`reason="max_age"`).
//! * On shutdown nothing new is accepted, open connections finish their in-flight request,
//!   and [`serve`] returns at the latest `request_timeout` after the signal.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr};
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
use tracing::{debug, error, info, warn};

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
    /// Open connections at once from one source address (IPv6: one /64).
    pub max_per_source: usize,
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
    /// 512 connections, 16 per source, 5 s for a header, 10 s per request, 60 s per
    /// connection, 256 descriptors kept for the reconcile path.
    fn default() -> Limits {
        Limits {
            max_connections: 512,
            max_per_source: 16,
            header_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_connection_age: Duration::from_secs(60),
            reserved_descriptors: 256,
        }
    }
}

/// The connection cap that fits a descriptor limit of `nofile` with `open` descriptors in use:
/// `max_connections`, lowered so that `reserved_descriptors` (at most half of `nofile`)
/// remain, and never below [`MIN_CONNECTIONS`].
///
/// # Caveats
///
/// With a limit so low that even [`MIN_CONNECTIONS`] does not fit, the reserve is not kept
/// ([`serve`] warns).
pub fn connection_budget(limits: &Limits, nofile: u64, open: usize) -> usize {
    let reserve = (limits.reserved_descriptors as u64).min(nofile / 2);
    let free = nofile.saturating_sub(open as u64).saturating_sub(reserve);
    let cap = free.min(limits.max_connections as u64);
    usize::try_from(cap)
        .unwrap_or(limits.max_connections)
        .max(MIN_CONNECTIONS)
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit (no privilege needed) and
/// returns the soft limit now in force.
///
/// # Errors
///
/// When the limit cannot be read; when it cannot be raised, the current soft limit is
/// returned (and a warning logged).
pub fn raise_descriptor_limit() -> std::io::Result<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if r.rlim_cur >= r.rlim_max {
        return Ok(r.rlim_cur);
    }
    let raised = libc::rlimit {
        rlim_cur: r.rlim_max,
        rlim_max: r.rlim_max,
    };
    // SAFETY: `raised` is a valid rlimit for the duration of the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        let e = std::io::Error::last_os_error();
        warn!(error = %e, soft = r.rlim_cur, hard = r.rlim_max, "cannot raise the descriptor limit to the hard limit; keeping the soft limit");
        return Ok(r.rlim_cur);
    }
    Ok(r.rlim_max)
}

/// Descriptors this process has open (`/proc/self/fd`), 0 when that cannot be read.
fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Resolves on SIGTERM or SIGINT (logged); calls `on_hangup` on every SIGHUP, which no longer
/// terminates the process.
///
/// # Guarantees
///
/// The handlers are installed, and a task that watches them is started, when this function is
/// called — not when the future is first polled. So call it first thing: a SIGHUP during
/// start-up is handled too, and `on_hangup` runs at once even while the caller is busy
/// elsewhere (a controller waiting for the API server before it awaits the future).
///
/// # Caveats
///
/// Must be called inside a Tokio runtime with signals enabled (it panics otherwise, as
/// `tokio::signal` and `tokio::spawn` do). When a handler cannot be installed the error is
/// logged; without SIGTERM and SIGINT handlers the future never resolves (stop the process
/// with SIGKILL).
pub fn shutdown_signal<F>(mut on_hangup: F) -> impl Future<Output = ()> + Send + 'static
where
    F: FnMut() + Send + 'static,
{
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    let hup = signal(SignalKind::hangup());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut hup = match hup {
            Ok(h) => Some(h),
            Err(e) => {
                error!(error = %e, "cannot install a SIGHUP handler; SIGHUP will terminate the process");
                None
            }
        };
        let (mut term, mut int) = match (term, int) {
            (Ok(t), Ok(i)) => (t, i),
            (Err(e), _) | (_, Err(e)) => {
                error!(error = %e, "cannot install signal handlers; stop the process with SIGKILL");
                // Keeps `stop` alive: the shutdown future never resolves.
                let _stop = stop;
                return std::future::pending().await;
            }
        };
        loop {
            tokio::select! {
                _ = term.recv() => {
                    info!("SIGTERM: shutting down");
                    break;
                }
                _ = int.recv() => {
                    info!("SIGINT: shutting down");
                    break;
                }
                Some(()) = async {
                    match hup.as_mut() {
                        Some(h) => h.recv().await,
                        None => None,
                    }
                } => on_hangup(),
            }
        }
        let _ = stop.send(());
        // Still here for later SIGHUPs, while the process shuts down.
        while let Some(h) = hup.as_mut() {
            if h.recv().await.is_none() {
                break;
            }
            on_hangup();
        }
    });
    async move {
        // An error means the runtime is going away: shut down too.
        let _ = stopped.await;
    }
}

/// Which cap refused a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    PerSource,
    Total,
}

impl Refusal {
    fn as_str(self) -> &'static str {
        match self {
            Refusal::PerSource => "per_source",
            Refusal::Total => "total",
        }
    }
}

/// The key connections are counted by: the IPv4 address (IPv4-mapped IPv6 included), or the
/// /64 of an IPv6 address.
fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

/// Open connections by source, oldest first, each with a token that closes it when taken
/// (pure bookkeeping; [`serve`] holds one behind a mutex).
#[derive(Debug)]
struct Book<T> {
    total: usize,
    per_source: usize,
    open: usize,
    next_id: u64,
    sources: HashMap<IpAddr, VecDeque<(u64, T)>>,
}

impl<T> Book<T> {
    fn new(total: usize, per_source: usize) -> Book<T> {
        Book {
            total: total.max(1),
            per_source: per_source.max(1),
            open: 0,
            next_id: 0,
            sources: HashMap::new(),
        }
    }

    /// Admits a connection from `source` (a [`source_key`]), or says which cap refuses it.
    /// Returns its id and, when the total cap was reached, the token of the connection it
    /// evicted (to be closed by the caller).
    fn admit(&mut self, source: IpAddr, token: T) -> Result<(u64, Option<T>), Refusal> {
        let held = self.sources.get(&source).map_or(0, VecDeque::len);
        if held >= self.per_source {
            return Err(Refusal::PerSource);
        }
        let mut evicted = None;
        if self.open >= self.total {
            let heaviest = self
                .sources
                .iter()
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
        self.open += 1;
        Ok((id, evicted))
    }

    fn evict(&mut self, source: IpAddr) -> Option<T> {
        let queue = self.sources.get_mut(&source)?;
        let (_, token) = queue.pop_front()?;
        if queue.is_empty() {
            self.sources.remove(&source);
        }
        self.open -= 1;
        Some(token)
    }

    /// Forgets a connection that ended (nothing when it was evicted already).
    fn release(&mut self, source: IpAddr, id: u64) {
        let Some(queue) = self.sources.get_mut(&source) else {
            return;
        };
        if let Some(pos) = queue.iter().position(|(i, _)| *i == id) {
            queue.remove(pos);
            self.open -= 1;
        }
        if queue.is_empty() {
            self.sources.remove(&source);
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

/// Serves `router` on `listener` until `shutdown` resolves, within `limits` (see the
/// [module documentation](self) for every bound), counting connections in `metrics`.
///
/// # Guarantees
///
/// See the module documentation. The descriptor limit is raised and the connection cap fitted
/// to it when this function starts; both are logged, and the caps are exported as
/// `http_connection_limit` and `http_connection_limit_per_source`.
///
/// # Caveats
///
/// HTTP/1 only (every client of these endpoints speaks it). Errors of single connections and
/// of `accept` are logged (at most every 10 s) and never end the server.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    metrics: HttpMetrics,
    shutdown: impl Future<Output = ()>,
) {
    let nofile = raise_descriptor_limit().unwrap_or_else(|e| {
        warn!(error = %e, "cannot read the descriptor limit; assuming 1024");
        1024
    });
    let open = open_descriptors();
    let total = connection_budget(&limits, nofile, open);
    let reserve = (limits.reserved_descriptors as u64).min(nofile / 2);
    if (total + open) as u64 + reserve > nofile {
        warn!(
            nofile,
            connections = total,
            "the descriptor limit is too low to keep descriptors for the reconcile path; raise it (LimitNOFILE=, ulimit -n)"
        );
    }
    info!(
        nofile,
        connections = total,
        per_source = limits.max_per_source,
        header_timeout_s = limits.header_timeout.as_secs_f64(),
        "HTTP connection limits"
    );
    metrics.connection_limit.set(total as i64);
    metrics
        .connection_limit_per_source
        .set(limits.max_per_source as i64);
    let book: SharedBook = Arc::new(Mutex::new(Book::new(total, limits.max_per_source)));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(MAX_HEADER_BYTES)
        .max_buf_size(MAX_BUFFER_BYTES)
        .keep_alive(true);
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
        let source = source_key(peer.ip());
        let (evict, evicted) = oneshot::channel();
        let admitted = {
            let mut b = lock(&book);
            let admitted = b.admit(source, evict);
            metrics.connections_open.set(b.open as i64);
            admitted
        };
        let id = match admitted {
            Ok((id, victim)) => {
                if let Some(victim) = victim {
                    let _ = victim.send(());
                    metrics.closed("evicted");
                }
                id
            }
            Err(refusal) => {
                // Dropped unread: closed at once, the kernel resets it.
                drop(stream);
                metrics.refused(refusal.as_str());
                refusals.1 += 1;
                if refusals.0.ready() {
                    warn!(
                        cap = refusal.as_str(),
                        source = %peer.ip(),
                        refused = refusals.1,
                        "HTTP connections refused over a cap (counted in http_connections_refused_total)"
                    );
                    refusals.1 = 0;
                }
                continue;
            }
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
        assert_eq!(connection_budget(&l, 1 << 20, 12), 512);
        // 512 descriptors: 256 kept, 12 in use.
        assert_eq!(connection_budget(&l, 512, 12), 244);
        // A small limit keeps half of it.
        assert_eq!(connection_budget(&l, 128, 10), 54);
        // Absurdly small: still a few connections.
        assert_eq!(connection_budget(&l, 8, 6), MIN_CONNECTIONS);
        assert_eq!(connection_budget(&l, u64::MAX, 12), 512);
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
        let mut b = Book::new(10, 2);
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
        let mut b = Book::new(4, 4);
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
        // 8 slots filled by 4 sources with 2 each: a fifth source evicts one of them.
        let mut b = Book::new(8, 4);
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

    #[tokio::test]
    async fn sighup_calls_the_hook_and_does_not_stop() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let shutdown = shutdown_signal(move || {
            let _ = tx.send(());
        });
        let pid = std::process::id().to_string();
        let waiting = tokio::spawn(shutdown);
        for _ in 0..2 {
            let kill = std::process::Command::new("kill")
                .args(["-HUP", &pid])
                .status()
                .unwrap();
            assert!(kill.success());
            tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("SIGHUP reached the hook")
                .unwrap();
        }
        assert!(!waiting.is_finished(), "SIGHUP must not stop the process");
        waiting.abort();
    }
}
