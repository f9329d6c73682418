//! The inside view: what a node's agent can see that a scanner cannot — whether portwarden's
//! rules are in place, foreign rules that shadow them, which sockets listen on the ports its
//! policies manage, and which of those ports the node forwards (DNAT) to a container or pod. The agent serves it as JSON (`GET /v1/inside`) to any host; `verify`
//! fetches it to explain drift precisely.
//!
//! A key design decision is that the view carries only what `verify` uses, because anyone who
//! can reach the agent's port can read it: listeners on ports the node's entries cover (a
//! loopback-only one too: "the service listens on 127.0.0.1 only"), and — when a policy of the
//! node says `unlisted: report`, which puts every TCP port under review — TCP listeners
//! reachable from outside (verify names the socket behind an unlisted open port). A service
//! bound to loopback on a port no entry covers is never shown: that is exactly what a scanner
//! cannot learn, and what an attacker would like to.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use portwarden_netfilter::Plan;
use portwarden_policy::{NodeIntent, Protocol};
use serde::{Deserialize, Serialize};

use crate::listeners::Listener;

/// The path the agent serves the inside view at.
pub const INSIDE_PATH: &str = "/v1/inside";

/// A foreign rule above portwarden's jump and the entries whose packets it decides first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowView {
    /// `ipv4` or `ipv6`.
    pub family: String,
    /// The chain (`INPUT`).
    pub chain: String,
    /// 1-based position in the chain.
    pub position: usize,
    /// The rule as `iptables-save` prints it.
    pub rule: String,
    /// `(policy, entry)` pairs it shadows.
    pub entries: Vec<(String, usize)>,
}

impl ShadowView {
    /// `INPUT#1 (-j DROP)`: the chain, position and the rule's matches and target.
    pub fn describe(&self) -> String {
        let prefix = format!("-A {} ", self.chain);
        let body = self.rule.strip_prefix(&prefix).unwrap_or(&self.rule);
        format!("{}#{} ({body})", self.chain, self.position)
    }
}

/// A managed port range the node's `nat` table forwards to a container or pod (see
/// [`portwarden_netfilter::forwarding`]): no socket of the node's serves it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardView {
    /// `ipv4` or `ipv6`.
    pub family: String,
    /// The protocol.
    pub protocol: Protocol,
    /// First port.
    pub start: u16,
    /// Last port.
    pub end: u16,
    /// "8080/tcp is DNAT'ed by nat DOCKER#1 to 172.17.0.2:80 (Docker-published); the policy
    /// is enforced on the forward path".
    pub description: String,
}

impl ForwardView {
    /// The views of `managed` forwards, one per (family, protocol, ports) with the first
    /// description.
    pub fn of(managed: &[portwarden_netfilter::forwarding::Managed]) -> Vec<ForwardView> {
        let mut out: Vec<ForwardView> = Vec::new();
        for m in managed {
            let v = ForwardView {
                family: m.forward.family.to_string().to_lowercase(),
                protocol: m.managed_protocol,
                start: m.managed_ports.start,
                end: m.managed_ports.end,
                description: m.description.clone(),
            };
            if !out.iter().any(|o| {
                (&o.family, o.protocol, o.start, o.end) == (&v.family, v.protocol, v.start, v.end)
            }) {
                out.push(v);
            }
        }
        out
    }
}

/// A managed port range whose new connections a base chain of another nftables table (not
/// iptables-nft's: firewalld, kube-proxy's nftables mode, a hand-written table) drops, rejects
/// or may decide otherwise than portwarden (see [`portwarden_netfilter::foreign_nft`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForeignTableView {
    /// `ipv4` or `ipv6`.
    pub family: String,
    /// The protocol.
    pub protocol: Protocol,
    /// First port.
    pub start: u16,
    /// Last port.
    pub end: u16,
    /// The policy whose entry manages the ports.
    pub policy: String,
    /// The entry.
    pub entry: usize,
    /// "table inet firewalld, chain filter_INPUT (input hook, priority filter + 10) rule 3
    /// drops tcp dport 443: a drop in another table is final: it wins over portwarden's accept".
    pub message: String,
}

impl ForeignTableView {
    /// The views of plan findings.
    pub fn of(findings: &[portwarden_netfilter::ForeignFinding]) -> Vec<ForeignTableView> {
        findings
            .iter()
            .map(|f| ForeignTableView {
                family: f.family.to_string().to_lowercase(),
                protocol: f.protocol,
                start: f.ports.start,
                end: f.ports.end,
                policy: f.policy.clone(),
                entry: f.entry,
                message: f.message.clone(),
            })
            .collect()
    }
}

/// The packets and bytes one entry's rules matched in one family, as the agent read them
/// (`iptables-save -c`) at its last refresh: the kernel's counters, which count from the moment
/// the rules were written (a rewrite starts them again from 0).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryCountView {
    /// The policy.
    pub policy: String,
    /// The entry's index in the policy.
    pub entry: usize,
    /// `ipv4` or `ipv6`.
    pub family: String,
    /// Packets matched.
    pub packets: u64,
    /// Bytes of those packets.
    pub bytes: u64,
    /// Rules the entry needs in this family.
    #[serde(default)]
    pub rules_expected: usize,
    /// How many of them are in place.
    #[serde(default)]
    pub rules_in_place: usize,
    /// When the agent last saw the entry's packet count grow between two refreshes (RFC 3339,
    /// UTC; within one refresh interval after the packet); absent when it has not since the
    /// agent started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_match: Option<String>,
}

/// At most this many [`EntryCountView`]s in one inside view (about 150 KiB).
pub const MAX_ENTRY_VIEWS: usize = 1024;

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// What the agent on a node reports about it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InsideView {
    /// The node's name.
    pub node: String,
    /// Whether the node's netfilter matches its intent (no change pending).
    pub converged: bool,
    /// Number of rule changes a reconcile would make now.
    pub pending_changes: usize,
    /// Foreign rules that shadow entries.
    pub shadowing: Vec<ShadowView>,
    /// Listening sockets of the ports the node's policies manage (see [`exposed_listeners`]).
    pub listeners: Vec<Listener>,
    /// Managed ports the node forwards to a container or pod.
    #[serde(default)]
    pub forwarded: Vec<ForwardView>,
    /// Managed ports another nftables table decides (drops, rejects, may decide).
    #[serde(default)]
    pub foreign_tables: Vec<ForeignTableView>,
    /// "iptables-legacy also holds rules: IPv4 filter INPUT (3 rules); packets meet both",
    /// when the iptables backend portwarden does not write holds rules.
    #[serde(default)]
    pub mixed_backends: Option<String>,
    /// Whether the current policy documents are invalid (the last good state stays
    /// applied). What the loader said is in the agent's log, not here: it names paths and
    /// quotes values, and any host can read this view.
    #[serde(default)]
    pub policy_invalid: bool,
    /// Whether the last apply failed, or the rules cannot be read now. iptables' words are in
    /// the agent's log, not here.
    #[serde(default)]
    pub apply_failed: bool,
    /// Per-entry packet counters from the agent's last refresh, by policy, entry and family
    /// (absent from agents older than the counters); at most [`MAX_ENTRY_VIEWS`], those that
    /// matched last and most first, so the view stays far under what `verify` fetches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<EntryCountView>,
    /// Rows left out of `entries` by the bound.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted_entries: usize,
    /// When those counters were read (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counted_at: Option<String>,
}

/// The listeners the inside view may show for a node with `intent` (none without one): those
/// on a port some entry covers, for its protocol, whatever their address; and, when the intent
/// reports unlisted ports, TCP listeners reachable from outside.
pub fn exposed_listeners(intent: Option<&NodeIntent>, listeners: Vec<Listener>) -> Vec<Listener> {
    let Some(intent) = intent else {
        return Vec::new();
    };
    listeners
        .into_iter()
        .filter(|l| {
            let managed = intent
                .rules
                .iter()
                .any(|r| r.protocol == l.protocol && r.ports.contains(l.port));
            let under_review =
                intent.report_unlisted && l.protocol == Protocol::Tcp && l.reachable_from_outside();
            managed || under_review
        })
        .collect()
}

impl InsideView {
    /// Builds the view from a fresh plan for `intent` and the node's listening sockets, of
    /// which it keeps the [`exposed_listeners`].
    pub fn new(
        node: &str,
        plan: &Plan,
        intent: &NodeIntent,
        listeners: Vec<Listener>,
    ) -> InsideView {
        InsideView {
            node: node.to_string(),
            converged: plan.is_converged(),
            pending_changes: plan.changes,
            shadowing: plan
                .shadowing
                .iter()
                .map(|s| ShadowView {
                    family: s.family.to_string(),
                    chain: s.chain.clone(),
                    position: s.position,
                    rule: s.rule.clone(),
                    entries: s
                        .entries
                        .iter()
                        .map(|e| (e.policy.to_string(), e.entry))
                        .collect(),
                })
                .collect(),
            listeners: exposed_listeners(Some(intent), listeners),
            forwarded: Vec::new(),
            foreign_tables: ForeignTableView::of(&plan.foreign_tables),
            mixed_backends: plan.mixed_backends.as_ref().map(ToString::to_string),
            policy_invalid: false,
            apply_failed: false,
            entries: Vec::new(),
            omitted_entries: 0,
            counted_at: None,
        }
    }

    /// Whether some socket reachable from outside listens on this port.
    pub fn listening(&self, protocol: Protocol, port: u16) -> Option<&Listener> {
        self.listeners
            .iter()
            .filter(|l| l.protocol == protocol && l.port == port)
            .max_by_key(|l| l.reachable_from_outside())
    }

    /// The forwarding of this port, if the node forwards it.
    pub fn forwarding(&self, protocol: Protocol, port: u16) -> Option<&ForwardView> {
        self.forwarded
            .iter()
            .find(|f| f.protocol == protocol && (f.start..=f.end).contains(&port))
    }

    /// What another nftables table decides for this port of this entry, if it does.
    pub fn foreign_table(
        &self,
        protocol: Protocol,
        port: u16,
        policy: &str,
        entry: usize,
    ) -> Option<&ForeignTableView> {
        self.foreign_tables.iter().find(|f| {
            f.protocol == protocol
                && (f.start..=f.end).contains(&port)
                && f.policy == policy
                && f.entry == entry
        })
    }

    /// The foreign rule that shadows an entry, if any.
    pub fn shadowing_entry(&self, policy: &str, entry: usize) -> Option<&ShadowView> {
        self.shadowing
            .iter()
            .find(|s| s.entries.iter().any(|(p, e)| p == policy && *e == entry))
    }
}

/// What went wrong asking an agent; see [`FetchError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchErrorKind {
    /// No TCP connection (refused, no route, ...).
    Connect,
    /// The agent did not answer within the deadline.
    Timeout,
    /// The response is larger than the cap.
    TooLarge,
    /// Sending the request or reading the response failed.
    Io,
    /// Not an HTTP response.
    Malformed,
    /// A status other than 200.
    Status,
    /// A 200 response whose body is not what was asked for.
    Invalid,
}

/// Why an agent could not be asked: the address, the kind, and the details.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("agent at {addr}: {detail}")]
pub struct FetchError {
    /// The agent's address.
    pub addr: SocketAddr,
    /// What kind of failure.
    pub kind: FetchErrorKind,
    /// What happened, for people.
    pub detail: String,
}

/// The largest response [`http_get`] reads (metrics pages of big nodes included).
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// The largest inside view [`fetch_view`] reads: 1 MiB. A view lists the listening sockets of
/// a node's managed ports and the foreign rules that shadow its entries; thousands of either
/// take a few hundred KiB at most. The cap keeps a hostile or broken agent from making
/// `verify`, or an agent's peer scan, hold much memory: at most [`MAX_INSIDE_VIEW_BYTES`] per
/// fetch, 16 fetches at once.
pub const MAX_INSIDE_VIEW_BYTES: usize = 1024 * 1024;

/// What of a non-200 answer's body goes into the error: enough for an agent's one-line reason.
const STATUS_BODY_CHARS: usize = 200;

/// A plain HTTP/1.0 GET of `path` on an agent; returns the body of a 200 response.
///
/// # Guarantees
///
/// Returns within `deadline` (plus scheduling noise): it bounds the whole exchange —
/// connect, request and the entire response — not each read, so an agent that trickles its
/// answer a byte at a time is cut off like one that says nothing. At most `max_bytes` of
/// response (headers included) are read, into one buffer that never grows beyond that; the
/// body is returned in it, not copied.
///
/// # Errors
///
/// A [`FetchError`] naming the address and what failed: [`FetchErrorKind::Timeout`] when the
/// deadline passed, [`FetchErrorKind::TooLarge`] when the response exceeds `max_bytes`, else
/// connect, I/O, HTTP syntax or status.
// Over 80 lines, kept whole: one deadline (`left`) and one error vocabulary (`fail`, `late`,
// `io`) cover the connect, the request and every read; split, each part would need them all.
pub fn get(
    addr: SocketAddr,
    path: &str,
    deadline: Duration,
    max_bytes: usize,
) -> Result<Vec<u8>, FetchError> {
    let until = Instant::now() + deadline;
    let fail = |kind, detail: String| FetchError { addr, kind, detail };
    let late = || {
        fail(
            FetchErrorKind::Timeout,
            format!(
                "did not answer within {} ms (the deadline covers connect, request and the whole response)",
                deadline.as_millis()
            ),
        )
    };
    // Time left, or the timeout error once there is none.
    let left = || {
        until
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(late)
    };
    let io = |what: &str, e: std::io::Error| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => late(),
        _ => fail(FetchErrorKind::Io, format!("{what}: {e}")),
    };
    let mut stream = TcpStream::connect_timeout(&addr, left()?).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => late(),
        _ => fail(FetchErrorKind::Connect, format!("cannot connect: {e}")),
    })?;
    stream
        .set_write_timeout(Some(left()?))
        .map_err(|e| io("socket", e))?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| io("cannot send request", e))?;
    let mut response = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        stream
            .set_read_timeout(Some(left()?))
            .map_err(|e| io("socket", e))?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) if response.len() + n > max_bytes => {
                return Err(fail(
                    FetchErrorKind::TooLarge,
                    format!("sent more than {max_bytes} bytes; not read further"),
                ));
            }
            Ok(n) => {
                if response.capacity() - response.len() < n {
                    // Doubling, but never past the cap.
                    let want = (response.capacity() * 2)
                        .max(response.len() + n)
                        .min(max_bytes);
                    response.reserve_exact(want - response.len());
                }
                response.extend_from_slice(&buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io("cannot read response", e)),
        }
    }
    let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Err(fail(
            FetchErrorKind::Malformed,
            "malformed HTTP response: no header end".into(),
        ));
    };
    let head = String::from_utf8_lossy(&response[..end]);
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        let body = String::from_utf8_lossy(&response[end + 4..]);
        let reason: String = body.trim().chars().take(STATUS_BODY_CHARS).collect();
        return Err(fail(
            FetchErrorKind::Status,
            format!("unexpected status: {status}: {reason}"),
        ));
    }
    response.drain(..end + 4);
    Ok(response)
}

/// [`get`] with the error as text and a cap of [`MAX_RESPONSE_BYTES`]; `deadline` bounds the
/// whole exchange.
///
/// # Errors
///
/// As [`get`].
pub fn http_get(addr: SocketAddr, path: &str, deadline: Duration) -> Result<String, String> {
    let body = get(addr, path, deadline, MAX_RESPONSE_BYTES).map_err(|e| e.to_string())?;
    Ok(String::from_utf8(body)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// Fetches a node's inside view from its agent, within `deadline` in all and at most
/// [`MAX_INSIDE_VIEW_BYTES`] (see [`get`]).
///
/// # Errors
///
/// As [`get`], or [`FetchErrorKind::Invalid`] when the body is not an inside view.
pub fn fetch_view(addr: SocketAddr, deadline: Duration) -> Result<InsideView, FetchError> {
    let body = get(addr, INSIDE_PATH, deadline, MAX_INSIDE_VIEW_BYTES)?;
    serde_json::from_slice(&body).map_err(|e| FetchError {
        addr,
        kind: FetchErrorKind::Invalid,
        detail: format!("invalid inside view: {e}"),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::mpsc;

    pub(crate) const HEAD_200: &[u8] = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n";

    /// A slow or talkative "agent" on `listener`: for each of `connections` clients, writes
    /// `head`, then `chunk` `count` times, `interval` apart; stops early when the client goes
    /// away. The pauses are the behaviour under test, not synchronisation.
    pub(crate) fn serve_on(
        listener: TcpListener,
        connections: usize,
        chunk: Vec<u8>,
        interval: Duration,
        count: usize,
    ) {
        std::thread::spawn(move || {
            for _ in 0..connections {
                let Ok((mut c, _)) = listener.accept() else {
                    return;
                };
                let chunk = chunk.clone();
                std::thread::spawn(move || {
                    // Read the request first: closing with it unread would reset the
                    // connection.
                    let mut request = [0u8; 1024];
                    if c.read(&mut request).is_err() || c.write_all(HEAD_200).is_err() {
                        return;
                    }
                    for _ in 0..count {
                        if c.write_all(&chunk).is_err() {
                            return;
                        }
                        std::thread::sleep(interval);
                    }
                });
            }
        });
    }

    fn serve(chunk: Vec<u8>, interval: Duration, count: usize) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        serve_on(listener, 1, chunk, interval, count);
        addr
    }

    /// Runs `f` on its own thread and fails the test when it has not returned within `bound`
    /// (generous: it only catches a call that hangs).
    pub(crate) fn within<T: Send + 'static>(
        bound: Duration,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(bound)
            .unwrap_or_else(|_| panic!("the call did not return within {bound:?}"))
    }

    #[test]
    fn a_trickling_agent_is_cut_off_at_the_deadline() {
        // One byte every 50 ms for a minute: every single read is quick, the whole is not.
        let addr = serve(b" ".to_vec(), Duration::from_millis(50), 1200);
        let e = within(Duration::from_secs(20), move || {
            fetch_view(addr, Duration::from_millis(500))
        })
        .expect_err("cut off");
        assert_eq!(e.kind, FetchErrorKind::Timeout, "{e}");
        assert!(
            e.to_string().contains("did not answer within 500 ms"),
            "{e}"
        );
    }

    #[test]
    fn an_oversized_inside_view_is_refused() {
        // 6.4 MiB as fast as the socket takes it.
        let addr = serve(vec![b' '; 64 * 1024], Duration::ZERO, 100);
        let e = within(Duration::from_secs(20), move || {
            fetch_view(addr, Duration::from_secs(10))
        })
        .expect_err("too large");
        assert_eq!(e.kind, FetchErrorKind::TooLarge, "{e}");
        assert!(e.to_string().contains("sent more than"), "{e}");
    }

    #[test]
    fn an_inside_view_over_1_mib_is_refused() {
        // 1.5 MiB: several times any real view (a few hundred KiB at most), and, with 16
        // fetches at once, what keeps a peer scan's memory bounded.
        let addr = serve(vec![b' '; 64 * 1024], Duration::ZERO, 24);
        let e = within(Duration::from_secs(20), move || {
            fetch_view(addr, Duration::from_secs(10))
        })
        .expect_err("too large");
        assert_eq!(e.kind, FetchErrorKind::TooLarge, "{e}");
        assert!(
            e.to_string().contains("sent more than 1048576 bytes"),
            "{e}"
        );
    }

    #[test]
    fn a_view_without_counters_still_reads_and_counters_round_trip() {
        // An agent from before the counters.
        let old = r#"{"node":"web-1","converged":true,"pending_changes":0,"shadowing":[],"listeners":[]}"#;
        let view: InsideView = serde_json::from_str(old).unwrap();
        assert!(view.entries.is_empty() && view.counted_at.is_none());
        assert_eq!(view.omitted_entries, 0);
        let view = InsideView {
            entries: vec![EntryCountView {
                policy: "quarantine".into(),
                entry: 0,
                family: "ipv4".into(),
                packets: 3,
                bytes: 180,
                rules_expected: 1,
                rules_in_place: 1,
                last_match: Some("2026-12-01T20:40:00Z".into()),
            }],
            counted_at: Some("2026-12-01T20:40:10Z".into()),
            ..view
        };
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(
            json["entries"][0],
            serde_json::json!({"policy": "quarantine", "entry": 0, "family": "ipv4", "packets": 3,
                "bytes": 180, "rules_expected": 1, "rules_in_place": 1,
                "last_match": "2026-12-01T20:40:00Z"})
        );
        assert!(json.get("omitted_entries").is_none());
        assert_eq!(serde_json::from_value::<InsideView>(json).unwrap(), view);
    }

    #[test]
    fn describes_foreign_rule_like_the_cli_contract() {
        let s = ShadowView {
            family: "ipv4".into(),
            chain: "INPUT".into(),
            position: 1,
            rule: "-A INPUT -j DROP".into(),
            entries: vec![("web".into(), 0)],
        };
        assert_eq!(s.describe(), "INPUT#1 (-j DROP)");
    }

    fn listener(address: &str, port: u16) -> Listener {
        Listener {
            protocol: Protocol::Tcp,
            address: address.parse().unwrap(),
            port,
        }
    }

    /// An intent with one entry per `(protocol, first port, last port)`.
    fn intent(entries: &[(Protocol, u16, u16)], report_unlisted: bool) -> NodeIntent {
        NodeIntent {
            policies: vec!["web".into()],
            rules: entries
                .iter()
                .enumerate()
                .map(|(entry, &(protocol, start, end))| portwarden_policy::Rule {
                    priority: 100,
                    policy: "web".into(),
                    entry,
                    protocol,
                    ports: portwarden_policy::PortRange { start, end },
                    source: None,
                    state: portwarden_policy::State::Closed,
                    expires: None,
                })
                .collect(),
            report_unlisted,
        }
    }

    #[test]
    fn the_view_shows_listeners_of_managed_ports_only() {
        let listeners = vec![
            listener("0.0.0.0", 80),     // managed, reachable
            listener("127.0.0.1", 8080), // managed, loopback only
            listener("127.0.0.1", 6000), // unmanaged, loopback only: secret
            listener("0.0.0.0", 7000),   // unmanaged, reachable
            listener("::", 8081),        // inside a managed range
        ];
        let ignore = intent(
            &[(Protocol::Tcp, 80, 80), (Protocol::Tcp, 8080, 8081)],
            false,
        );
        let plan = Plan::compute(&ignore, &portwarden_netfilter::Failsafe::none(), &[], &[]);
        let view = InsideView::new("n", &plan, &ignore, listeners.clone());
        let ports: Vec<u16> = view.listeners.iter().map(|l| l.port).collect();
        assert_eq!(ports, [80, 8080, 8081], "{view:?}");
        // The causes still have what they need: the loopback-only service of a managed port.
        assert!(
            !view
                .listening(Protocol::Tcp, 8080)
                .unwrap()
                .reachable_from_outside()
        );
        // A UDP entry on 6000 does not reveal the TCP socket on it.
        let udp = intent(&[(Protocol::Udp, 6000, 6000)], false);
        assert!(
            InsideView::new("n", &plan, &udp, listeners.clone())
                .listeners
                .is_empty()
        );
        // `unlisted: report` puts every TCP port under review: reachable listeners are shown
        // (verify names the socket behind an unlisted open port), loopback-only ones are not.
        let report = intent(&[(Protocol::Tcp, 80, 80)], true);
        let view = InsideView::new("n", &plan, &report, listeners.clone());
        let ports: Vec<u16> = view.listeners.iter().map(|l| l.port).collect();
        assert_eq!(ports, [80, 7000, 8081], "{view:?}");
        // Without an intent, nothing is managed: nothing is shown.
        assert!(exposed_listeners(None, listeners).is_empty());
    }

    #[test]
    fn listening_prefers_outside_reachable_sockets() {
        let v = InsideView {
            listeners: vec![
                Listener {
                    protocol: Protocol::Tcp,
                    address: "127.0.0.1".parse().unwrap(),
                    port: 80,
                },
                Listener {
                    protocol: Protocol::Tcp,
                    address: "0.0.0.0".parse().unwrap(),
                    port: 80,
                },
            ],
            ..InsideView::default()
        };
        assert!(
            v.listening(Protocol::Tcp, 80)
                .unwrap()
                .reachable_from_outside()
        );
        assert!(v.listening(Protocol::Udp, 80).is_none());
    }
}
