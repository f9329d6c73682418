//! `verify`: scan every inventory node from here, compare with its intent for this vantage,
//! and explain drift with the agents' inside views.
//!
//! # Guarantees
//!
//! Read-only: nothing on any node changes. Only the targets' addresses are probed: the scanner
//! gets them as its `TargetPolicy` allowlist, so a probe to any other address is refused by the
//! scan crate itself (the targets come from the inventory or the cluster's Node objects, never
//! from anywhere else). Every managed (port, protocol) of every address
//! gets exactly one row; failsafe ports are left out (they are accepted before any policy rule,
//! so a policy cannot govern them — `plan` reports such entries as conflicts).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use portwarden_netfilter::Failsafe;
use portwarden_policy::{NodeIntent, Protocol};
use portwarden_scan::{
    HostReport, PortList, PortState, Reason, ScanConfig, ScanError, ScanKind, ScanReport, Scanner,
    TargetPolicy,
};

use crate::causes::{self, Inside, Symptom};
use crate::expect::{Expectation, expectations, for_any_vantage};
use crate::inside::{self, InsideView};
use crate::report::{Report, Row};
use crate::verdict::{Verdict, judge};

/// One address of one node to verify.
#[derive(Clone, Debug)]
pub struct Target {
    /// Node name.
    pub node: String,
    /// Address to scan.
    pub address: IpAddr,
    /// The node's compiled intent.
    pub intent: Arc<NodeIntent>,
}

/// How to verify.
#[derive(Clone, Debug)]
pub struct VerifyOptions {
    /// Probe type for TCP: SYN (raw) or connect.
    pub tcp_kind: ScanKind,
    /// Upper bound on probes per second, all targets together.
    pub rate: Option<u32>,
    /// Upper bound on probes per second to each target separately.
    pub rate_per_target: Option<u32>,
    /// Ports exempt from verification (accepted before any policy).
    pub failsafe: Failsafe,
    /// Port of the agents' HTTP endpoint; `None` means do not ask agents.
    pub agent_port: Option<u16>,
    /// The deadline of each inside-view fetch as a whole: connect, request and the entire
    /// response (see `inside::get`); up to 16 fetches run at once.
    pub agent_timeout: Duration,
    /// TCP ports searched for undeclared open ports on nodes whose policies say
    /// `unlisted: report`.
    pub unlisted_ports: PortList,
}

/// A finished verification: the report and the scans behind it.
#[derive(Clone, Debug)]
pub struct Verification {
    /// The drift report.
    pub report: Report,
    /// The raw scans (for nmap XML).
    pub scans: Vec<ScanReport>,
}

fn exempt(failsafe: &Failsafe) -> impl Fn(Protocol, u16) -> bool + '_ {
    move |protocol, port| failsafe.ranges(protocol).any(|r| r.contains(port))
}

/// Scans and compares.
///
/// # Guarantees
///
/// An address this host has no route to does not stop the others: its rows are
/// `indeterminate` with the cause `unreachable: no route to ADDRESS: ...`, their `from` is
/// the unspecified address (`0.0.0.0` or `::`: no source address exists), nothing is sent to
/// it, and every other address is verified as usual. Without a vantage, every port the node's
/// policies manage for some source gets a row; where what a probe must see depends on its
/// source (a `from:` entry decides first), `expected` is `-` and no policy is named.
///
/// # Errors
///
/// A scan that cannot run at all (socket failure). A SYN scan denied raw sockets falls back
/// to a connect scan, and UDP entries that cannot be scanned become indeterminate rows; both
/// are said in the report's notes.
pub fn verify(targets: &[Target], opts: &VerifyOptions) -> Result<Verification, ScanError> {
    let mut notes = Vec::new();
    let mut planned: Vec<Planned<'_>> = Vec::new();
    for t in targets {
        let (vantage, unreachable) = match portwarden_scan::source_for(t.address) {
            Ok(v) => (v, None),
            Err(ScanError::NoRoute { target, source }) => {
                let none: IpAddr = match target {
                    IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
                    IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
                };
                (none, Some(format!("no route to {target}: {source}")))
            }
            Err(e) => return Err(e),
        };
        // Without a vantage there is nothing to expect for one: the rows come from
        // `Compare::unroutable`.
        let exp = match unreachable {
            None => expectations(&t.intent, vantage, exempt(&opts.failsafe)),
            Some(_) => Vec::new(),
        };
        planned.push(Planned {
            target: t,
            vantage,
            unreachable,
            exp,
        });
    }
    // The inside views first: they must describe the nodes as the scan finds them, and an
    // agent may repair rule drift while a long scan runs.
    let insides = fetch_insides(&planned, opts, &mut notes);
    let ports_for = |t: &Target, exp: &[Expectation], protocol: Protocol| {
        let mut ports: Vec<u16> = exp
            .iter()
            .filter(|e| e.protocol == protocol)
            .map(|e| e.port)
            .collect();
        if protocol == Protocol::Tcp && t.intent.report_unlisted {
            ports.extend_from_slice(opts.unlisted_ports.as_slice());
        }
        ports.sort_unstable();
        ports.dedup();
        ports
    };
    let scanner = || Scanner::new(scan_config(targets, opts));
    let mut tcp_kind = opts.tcp_kind;
    let mut udp_denied = false;
    let mut scans: Vec<ScanReport> = Vec::new();
    let mut results: Vec<(Protocol, HostReport)> = Vec::new();
    for protocol in [Protocol::Tcp, Protocol::Udp] {
        // Targets that need the same ports are scanned together, each group once.
        // Unreachable addresses are left out: nothing can be sent to them.
        let mut groups: BTreeMap<Vec<u16>, Vec<IpAddr>> = BTreeMap::new();
        for p in planned.iter().filter(|p| p.unreachable.is_none()) {
            let ports = ports_for(p.target, &p.exp, protocol);
            if !ports.is_empty() {
                groups.entry(ports).or_default().push(p.target.address);
            }
        }
        for (ports, addresses) in groups {
            let ports = PortList::from_ports(ports);
            let report = match protocol {
                Protocol::Tcp => {
                    match scanner().scan(&addresses, &ports, tcp_kind) {
                        Err(ScanError::RawSocketDenied { .. }) if tcp_kind != ScanKind::Connect => {
                            notes.push("raw sockets are not permitted: TCP was verified with a connect scan".into());
                            tcp_kind = ScanKind::Connect;
                            scanner().scan(&addresses, &ports, tcp_kind)?
                        }
                        other => other?,
                    }
                }
                Protocol::Udp if udp_denied => continue,
                Protocol::Udp => match scanner().scan(&addresses, &ports, ScanKind::Udp) {
                    Err(ScanError::RawSocketDenied { .. }) => {
                        notes.push("raw sockets are not permitted: UDP entries could not be verified (indeterminate)".into());
                        udp_denied = true;
                        continue;
                    }
                    other => other?,
                },
            };
            results.extend(report.hosts.iter().cloned().map(|h| (protocol, h)));
            scans.push(report);
        }
    }
    let host = |protocol: Protocol, address: IpAddr| {
        results
            .iter()
            .find(|(p, h)| *p == protocol && h.address == address)
            .map(|(_, h)| h)
    };

    let mut rows = Vec::new();
    for p in &planned {
        let (t, exp) = (p.target, &p.exp);
        let inside = match insides.iter().find(|(n, _)| *n == t.node) {
            Some((_, Ok(v))) => Inside::Known(v),
            Some((_, Err(e))) => Inside::Unknown(e),
            None if opts.agent_port.is_some() => {
                Inside::Unknown("no address of the node is reachable")
            }
            None => Inside::Unknown("agents not asked (--agent-port 0)"),
        };
        let tcp = host(Protocol::Tcp, t.address);
        let udp = host(Protocol::Udp, t.address);
        let ctx = Compare {
            target: t,
            vantage: p.vantage,
            inside: &inside,
        };
        if let Some(why) = &p.unreachable {
            rows.extend(ctx.unroutable(why, &opts.failsafe));
            continue;
        }
        // The scanner's own verdict on the address counts too (a route may vanish between
        // the lookup above and the scan); the vantage is known then.
        let unreachable = tcp
            .and_then(|h| h.error.as_deref())
            .or_else(|| udp.and_then(|h| h.error.as_deref()));
        if let Some(why) = unreachable {
            rows.extend(ctx.unreachable(exp, why));
            continue;
        }
        rows.extend(ctx.rows(exp, tcp, udp));
        if t.intent.report_unlisted {
            rows.extend(ctx.unlisted(
                exp,
                tcp,
                &opts.unlisted_ports,
                &opts.failsafe,
                opts.agent_port,
            ));
        }
    }
    Ok(Verification {
        report: Report::new(rows, notes),
        scans,
    })
}

/// The scanner settings of a verification: its rate caps, and the targets' addresses as the
/// only ones the scanner may probe.
fn scan_config(targets: &[Target], opts: &VerifyOptions) -> ScanConfig {
    let mut config = ScanConfig {
        targets: TargetPolicy::only(targets.iter().map(|t| t.address)),
        ..ScanConfig::default()
    };
    config.timing.max_rate = opts.rate;
    config.timing.max_rate_per_target = opts.rate_per_target;
    config
}

/// Inside views fetched at once (one thread each): with [`inside::MAX_INSIDE_VIEW_BYTES`] per
/// answer, what hostile agents can make verify (or an agent's peer scan) hold is bounded.
const FETCH_PARALLEL: usize = 16;

/// One address to verify, with what was found out before the scan.
struct Planned<'a> {
    target: &'a Target,
    /// The probes' source address (unspecified when there is no route).
    vantage: IpAddr,
    /// Why the address cannot be probed at all (no route to it).
    unreachable: Option<String>,
    /// The intent for this vantage.
    exp: Vec<Expectation>,
}

/// Asks each node's agent (its first reachable address) for its inside view, in parallel.
fn fetch_insides(
    planned: &[Planned<'_>],
    opts: &VerifyOptions,
    notes: &mut Vec<String>,
) -> Vec<(String, Result<InsideView, String>)> {
    let Some(port) = opts.agent_port else {
        notes.push("agents were not asked: causes come from the outside view only".into());
        return Vec::new();
    };
    let mut nodes: Vec<(&str, IpAddr)> = Vec::new();
    for p in planned.iter().filter(|p| p.unreachable.is_none()) {
        let t = p.target;
        if !nodes.iter().any(|(n, _)| *n == t.node) {
            nodes.push((&t.node, t.address));
        }
    }
    // Each fetch has its own total deadline (`agent_timeout`); FETCH_PARALLEL workers take the
    // next node as soon as they are done, so slow agents hold verify up for at most
    // ceil(nodes / FETCH_PARALLEL) deadlines.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let fetch_next = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some((_, addr)) = nodes.get(i) else {
                return done;
            };
            let view = inside::fetch(SocketAddr::new(*addr, port), opts.agent_timeout);
            done.push((i, view));
        }
    };
    let mut fetched: Vec<Option<Result<InsideView, String>>> = vec![None; nodes.len()];
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..FETCH_PARALLEL.min(nodes.len()))
            .map(|_| {
                std::thread::Builder::new()
                    .name("inside-view".into())
                    .spawn_scoped(s, fetch_next)
            })
            .collect();
        let mut refused = None;
        for w in workers {
            match w {
                Ok(h) => {
                    for (i, view) in h.join().unwrap_or_default() {
                        fetched[i] = Some(view);
                    }
                }
                Err(e) => refused = Some(e),
            }
        }
        if let Some(e) = refused {
            notes.push(format!(
                "cannot start every thread to ask the agents ({e}): fewer were asked at once"
            ));
        }
    });
    let results: Vec<(String, Result<InsideView, String>)> = nodes
        .iter()
        .zip(fetched)
        .map(|((node, _), view)| {
            let view = view.unwrap_or_else(|| {
                Err("not asked: no query thread could start, or it panicked".into())
            });
            (node.to_string(), view)
        })
        .collect();
    for (node, r) in &results {
        if let Err(e) = r {
            notes.push(format!("{node}: inside view unavailable: {e}"));
        }
    }
    results
}

/// Comparison of one target's scan results with its expectations.
struct Compare<'a> {
    target: &'a Target,
    vantage: IpAddr,
    inside: &'a Inside<'a>,
}

impl Compare<'_> {
    fn row(
        &self,
        port: u16,
        protocol: Protocol,
        expected: String,
        observed: PortState,
        verdict: Verdict,
    ) -> Row {
        Row {
            node: self.target.node.clone(),
            address: self.target.address,
            port,
            protocol: protocol.as_str().to_string(),
            from: self.vantage,
            expected,
            observed: observed.as_str().to_string(),
            verdict,
            cause: None,
            policy: None,
            entry: None,
        }
    }

    /// Whether the node answered nothing at all over TCP: then it is unreachable (or down),
    /// whatever each port's intent.
    fn silent(&self, tcp: Option<&HostReport>) -> bool {
        let Some(host) = tcp else {
            return false;
        };
        !host.ports.is_empty()
            && host
                .ports
                .iter()
                .all(|p| p.state == PortState::Filtered && p.reason == Reason::NoResponse)
    }

    fn rows(
        &self,
        exp: &[Expectation],
        tcp: Option<&HostReport>,
        udp: Option<&HostReport>,
    ) -> Vec<Row> {
        let silent = self.silent(tcp);
        let lookup =
            |host: Option<&HostReport>, port: u16| host.and_then(|h| h.port(port)).map(|p| p.state);
        exp.iter()
            .map(|e| {
                let scan = match e.protocol {
                    Protocol::Tcp => tcp,
                    Protocol::Udp => udp,
                };
                let Some(observed) = lookup(scan, e.port) else {
                    let cause = "this protocol could not be scanned from here".to_string();
                    return self.not_scanned(e.port, e.protocol, Some(e), cause);
                };
                let (verdict, outside) = judge(e.protocol, e.state, observed);
                let mut r = self.row(e.port, e.protocol, e.state.to_string(), observed, verdict);
                r.policy = Some(e.policy.to_string());
                r.entry = Some(e.entry);
                if verdict != Verdict::InSync {
                    let outside = outside.unwrap_or("unexpected state");
                    r.cause = Some(if silent && e.protocol == Protocol::Tcp {
                        match self.inside {
                            Inside::Known(_) => format!("no answer on any port from {}: filtered upstream of the node (its agent answers)", self.vantage),
                            Inside::Unknown(why) => format!("node unreachable: no answer on any port, and its agent does not answer ({why})"),
                        }
                    } else {
                        causes::cause(
                            &Symptom {
                                protocol: e.protocol,
                                port: e.port,
                                expected: e.state,
                                observed,
                                policy: &e.policy,
                                entry: e.entry,
                                outside,
                            },
                            self.inside,
                        )
                    });
                }
                r
            })
            .collect()
    }

    /// Every expectation of an address that could not be probed from this vantage:
    /// indeterminate, and why.
    fn unreachable(&self, exp: &[Expectation], why: &str) -> Vec<Row> {
        exp.iter()
            .map(|e| self.not_scanned(e.port, e.protocol, Some(e), format!("unreachable: {why}")))
            .collect()
    }

    /// Every managed port of an address with no route to it, so no vantage: indeterminate,
    /// and why; the expectation only where every vantage shares it ([`for_any_vantage`]).
    fn unroutable(&self, why: &str, failsafe: &Failsafe) -> Vec<Row> {
        for_any_vantage(&self.target.intent, exempt(failsafe))
            .iter()
            .map(|(protocol, port, e)| {
                self.not_scanned(*port, *protocol, e.as_ref(), format!("unreachable: {why}"))
            })
            .collect()
    }

    /// The row of a port that was not probed: what it must show (`-` when that is not known),
    /// and why it was not probed (`cause`).
    fn not_scanned(
        &self,
        port: u16,
        protocol: Protocol,
        e: Option<&Expectation>,
        cause: String,
    ) -> Row {
        let expected = e.map_or_else(|| "-".to_string(), |e| e.state.to_string());
        let mut r = self.row(
            port,
            protocol,
            expected,
            PortState::OpenFiltered,
            Verdict::Indeterminate,
        );
        r.observed = "not scanned".into();
        r.cause = Some(cause);
        r.policy = e.map(|e| e.policy.to_string());
        r.entry = e.map(|e| e.entry);
        r
    }

    /// Open TCP ports that no entry governs, on a node with `unlisted: report`.
    fn unlisted(
        &self,
        exp: &[Expectation],
        tcp: Option<&HostReport>,
        range: &PortList,
        failsafe: &Failsafe,
        agent_port: Option<u16>,
    ) -> Vec<Row> {
        let Some(host) = tcp else {
            return Vec::new();
        };
        let governed = |port: u16| {
            exp.iter()
                .any(|e| e.protocol == Protocol::Tcp && e.port == port)
        };
        let exempt = exempt(failsafe);
        host.ports
            .iter()
            .filter(|p| {
                p.state == PortState::Open && range.as_slice().binary_search(&p.port).is_ok()
            })
            .filter(|p| {
                !governed(p.port) && !exempt(Protocol::Tcp, p.port) && Some(p.port) != agent_port
            })
            .map(|p| {
                let mut r = self.row(
                    p.port,
                    Protocol::Tcp,
                    "unlisted".into(),
                    p.state,
                    Verdict::Drift,
                );
                let listener = match self.inside {
                    Inside::Known(v) => v
                        .listening(Protocol::Tcp, p.port)
                        .map(|l| format!(" (a socket listens on {}:{})", l.address, l.port))
                        .unwrap_or_default(),
                    Inside::Unknown(_) => String::new(),
                };
                r.cause = Some(format!(
                    "open port that no policy declares (unlisted: report){listener}"
                ));
                r
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> VerifyOptions {
        VerifyOptions {
            tcp_kind: ScanKind::Connect,
            rate: Some(500),
            rate_per_target: Some(50),
            failsafe: Failsafe::default(),
            agent_port: None,
            agent_timeout: Duration::from_millis(10),
            unlisted_ports: PortList::default(),
        }
    }

    /// Listeners on one port of 127.0.0.1 to 127.0.0.`n` (a port free on all of them).
    fn loopback_listeners(n: usize) -> (u16, Vec<std::net::TcpListener>) {
        (0..20)
            .find_map(|_| {
                let first = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
                let port = first.local_addr().ok()?.port();
                let mut all = vec![first];
                for i in 2..=n {
                    all.push(std::net::TcpListener::bind(format!("127.0.0.{i}:{port}")).ok()?);
                }
                Some((port, all))
            })
            .unwrap_or_else(|| panic!("no port free on all of 127.0.0.1-{n}"))
    }

    /// Nodes `n1` to `nN` at 127.0.0.1 to 127.0.0.N, whose intents are empty (nothing is
    /// scanned), and the options that ask their agents on `port` within `deadline`.
    fn loopback_nodes(n: usize, port: u16, deadline: Duration) -> (Vec<Target>, VerifyOptions) {
        let targets = (1..=n)
            .map(|i| Target {
                node: format!("n{i}"),
                address: format!("127.0.0.{i}").parse().expect("address"),
                intent: Arc::default(),
            })
            .collect();
        let opts = VerifyOptions {
            agent_port: Some(port),
            agent_timeout: deadline,
            ..options()
        };
        (targets, opts)
    }

    /// Three nodes whose agents (on 127.0.0.1-3, one port) send a 200 header and then one
    /// byte every 50 ms for a minute: verify is done once each fetch's deadline has passed,
    /// and says why each inside view is missing. Their intents are empty, so nothing is
    /// scanned; only loopback is involved.
    #[test]
    fn several_trickling_agents_do_not_hold_verify_up() {
        use crate::inside::tests::{serve_on, within};
        let (port, listeners) = loopback_listeners(3);
        for l in listeners {
            serve_on(l, 1, b" ".to_vec(), Duration::from_millis(50), 1200);
        }
        let (targets, opts) = loopback_nodes(3, port, Duration::from_millis(300));
        let v =
            within(Duration::from_secs(20), move || verify(&targets, &opts)).expect("verify runs");
        for i in 1..=3 {
            assert!(
                v.report
                    .notes
                    .iter()
                    .any(|n| n.starts_with(&format!("n{i}: "))
                        && n.contains("did not answer within 300 ms")),
                "{:?}",
                v.report.notes
            );
        }
    }

    /// An address that cannot be probed has no vantage: a state that depends on the source
    /// address is not claimed for it, and a port only `from:` entries manage gets its row too.
    #[test]
    fn unreachable_rows_claim_no_state_that_depends_on_the_source() {
        use portwarden_policy::{PortRange, Rule, State};
        let rule = |entry, port, source: Option<&str>, state| Rule {
            priority: 100,
            policy: "web".into(),
            entry,
            protocol: Protocol::Tcp,
            ports: PortRange::single(port),
            source: source.map(|s| s.parse::<ipnet::IpNet>().expect("network")),
            state,
        };
        // 80: closed to 10.0.0.0/8, open to everyone else; 81: closed to 10.0.0.0/8 only;
        // 82: closed to everyone.
        let intent = NodeIntent {
            policies: vec!["web".into()],
            rules: vec![
                rule(0, 80, Some("10.0.0.0/8"), State::Closed),
                rule(1, 80, None, State::Open),
                rule(2, 81, Some("10.0.0.0/8"), State::Closed),
                rule(3, 82, None, State::Closed),
            ],
            report_unlisted: false,
        };
        let target = Target {
            node: "n".into(),
            address: "10.9.9.9".parse().expect("address"),
            intent: Arc::new(intent),
        };
        let vantage: IpAddr = Ipv4Addr::UNSPECIFIED.into();
        let ctx = Compare {
            target: &target,
            vantage,
            inside: &Inside::Unknown("not asked"),
        };
        let rows = ctx.unroutable("no route to 10.9.9.9", &Failsafe::none());
        let row = |port: u16| {
            rows.iter()
                .find(|r| r.port == port)
                .map(|r| (r.expected.as_str(), r.policy.as_deref(), r.entry))
        };
        assert_eq!(row(80), Some(("-", None, None)), "{rows:#?}");
        assert_eq!(row(81), Some(("-", None, None)), "{rows:#?}");
        assert_eq!(row(82), Some(("closed", Some("web"), Some(3))), "{rows:#?}");
        assert!(
            rows.iter().all(|r| r.verdict == Verdict::Indeterminate
                && r.cause.as_deref() == Some("unreachable: no route to 10.9.9.9")),
            "{rows:#?}"
        );
    }

    /// Agents (on 127.0.0.1-24, one port) that accept and then answer nothing until the test
    /// opens the gate: with the gate closed no fetch can end before its (long) deadline, so
    /// every connection accepted before the gate opens is one verify holds at once.
    #[test]
    fn at_most_16_inside_views_are_fetched_at_once() {
        use crate::inside::tests::within;
        use std::sync::{Condvar, Mutex};
        const AGENTS: usize = 24;
        let (port, listeners) = loopback_listeners(AGENTS);
        // (connections accepted, of which before the gate opened, gate open)
        let gate = Arc::new((Mutex::new((0usize, 0usize, false)), Condvar::new()));
        for l in listeners {
            let gate = gate.clone();
            std::thread::spawn(move || {
                let Ok((mut c, _)) = l.accept() else {
                    return;
                };
                // Read the request: closing with it unread would reset the connection.
                let mut request = [0u8; 1024];
                let _ = std::io::Read::read(&mut c, &mut request);
                let (lock, cv) = &*gate;
                let mut g = lock.lock().expect("gate");
                g.0 += 1;
                if !g.2 {
                    g.1 += 1;
                }
                cv.notify_all();
                while !g.2 {
                    g = cv.wait(g).expect("gate");
                }
                drop(g);
                let _ = std::io::Write::write_all(&mut c, b"HTTP/1.0 503 Busy\r\n\r\n");
            });
        }
        let (targets, opts) = loopback_nodes(AGENTS, port, Duration::from_secs(60));
        let verifying = std::thread::spawn(move || verify(&targets, &opts));
        let (lock, cv) = &*gate;
        let until = std::time::Instant::now() + Duration::from_secs(20);
        let mut g = lock.lock().expect("gate");
        while g.0 < 16 {
            let left = until
                .checked_duration_since(std::time::Instant::now())
                .unwrap_or_else(|| panic!("only {} agents asked within 20 s", g.0));
            g = cv.wait_timeout(g, left).expect("gate").0;
        }
        // Give a 17th fetch a second to show up. With the bound it never can (no fetch ends
        // while the gate is closed), so this only makes a missing bound fail reliably.
        let grace = std::time::Instant::now() + Duration::from_secs(1);
        while g.0 < AGENTS {
            let Some(left) = grace.checked_duration_since(std::time::Instant::now()) else {
                break;
            };
            g = cv.wait_timeout(g, left).expect("gate").0;
        }
        let before_the_gate = g.1;
        g.2 = true;
        cv.notify_all();
        drop(g);
        assert!(
            before_the_gate <= 16,
            "{before_the_gate} inside views fetched at once"
        );
        let v = within(Duration::from_secs(30), move || verifying.join())
            .expect("verify did not panic")
            .expect("verify runs");
        assert_eq!(
            v.report
                .notes
                .iter()
                .filter(|n| n.contains("503 Busy"))
                .count(),
            AGENTS,
            "{:?}",
            v.report.notes
        );
    }

    #[test]
    fn the_scanner_may_probe_the_targets_and_nothing_else() {
        let target = |address: &str| Target {
            node: "web-1".into(),
            address: address.parse().expect("address"),
            intent: Arc::default(),
        };
        let targets = [target("10.213.0.11"), target("fd00:213::11")];
        let config = scan_config(&targets, &options());
        assert_eq!(config.timing.max_rate, Some(500));
        assert_eq!(config.timing.max_rate_per_target, Some(50));
        for t in &targets {
            assert!(config.targets.allows(t.address));
        }
        let other: IpAddr = "10.213.0.12".parse().expect("address");
        assert!(!config.targets.allows(other));
        // The scanner itself refuses it, before any socket: no lab needed.
        let e = Scanner::new(config)
            .scan(&[other], &PortList::from_ports(vec![22]), ScanKind::Connect)
            .expect_err("refused");
        assert!(matches!(e, ScanError::TargetRefused { .. }), "{e}");
    }
}
