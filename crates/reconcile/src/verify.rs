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
//!
//! Never a drift from silence a rate limit explains: a port the scanner could not confirm
//! before its budget ran out ([`Reason::RateLimited`]: the target was withholding ICMP errors)
//! is judged by [`judge_unconfirmed`], so it is `indeterminate` unless every reading of it
//! drifts, with the target's measured limit ([`RateLimit::describe`]) as its cause.
//!
//! [`verify_incremental`] is the agents' variant: UDP ports are re-checked a share at a time
//! and reported from their last confirmation ([`crate::ledger`]).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use portwarden_netfilter::Failsafe;
use portwarden_policy::{NodeIntent, Protocol};
use portwarden_scan::{
    HostReport, PortList, PortState, RateLimit, Reason, ScanConfig, ScanError, ScanKind,
    ScanReport, Scanner, TargetPolicy,
};

use crate::causes::{self, Inside, Symptom};
use crate::expect::{Expectation, expectations, for_any_vantage};
use crate::inside::{self, FetchError, InsideView};
use crate::ledger::Ledger;
use crate::report::{Report, Row, rfc3339};
use crate::verdict::{Verdict, judge, judge_unconfirmed};

/// `verify`'s default confirmation budget ([`VerifyOptions::confirm_budget`]): long enough for
/// 60 closed UDP ports of an IPv4 node at Linux's default ICMP rate limit (a burst of 6, then
/// one answer per second: the 30 of a `5000-5029` entry take about 25 s), short enough that a
/// verify of a node with thousands finishes within a minute and a half of scanning.
pub const DEFAULT_CONFIRM_BUDGET: Duration = Duration::from_secs(60);

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
    /// The source address of probes to IPv4 targets; `None` = the route's. It is the vantage
    /// the intent is evaluated for.
    pub source_v4: Option<Ipv4Addr>,
    /// The same for IPv6 targets.
    pub source_v6: Option<Ipv6Addr>,
    /// More addresses of this host the scanner may confirm silent ports of rate-limited
    /// targets from (each has its own budget at the target). One whose expected states differ
    /// from the vantage's on some target (a `from:` entry tells them apart) is not used:
    /// its answers would not say what the vantage sees. The report's notes name it.
    pub extra_sources: Vec<IpAddr>,
    /// How long each scan may spend confirming silent ports of targets that rate-limit their
    /// ICMP errors ([`ScanConfig::confirm_budget`]); ports not confirmed in time are
    /// `indeterminate`. `None` = as long as it takes.
    pub confirm_budget: Option<Duration>,
}

impl VerifyOptions {
    /// Options with the defaults of `portwarden verify`: SYN probes, adaptive rate, the
    /// default failsafe ports, agents asked on their default port within 1 s, no unlisted
    /// ports searched, the routes' source addresses, [`DEFAULT_CONFIRM_BUDGET`].
    pub fn new() -> VerifyOptions {
        VerifyOptions {
            tcp_kind: ScanKind::Syn,
            rate: None,
            rate_per_target: None,
            failsafe: Failsafe::default(),
            agent_port: Some(crate::DEFAULT_AGENT_PORT),
            agent_timeout: Duration::from_secs(1),
            unlisted_ports: PortList::default(),
            source_v4: None,
            source_v6: None,
            extra_sources: Vec::new(),
            confirm_budget: Some(DEFAULT_CONFIRM_BUDGET),
        }
    }

    /// The configured source address for `target`'s family, if any.
    fn source_for(&self, target: IpAddr) -> Option<IpAddr> {
        match target {
            IpAddr::V4(_) => self.source_v4.map(IpAddr::V4),
            IpAddr::V6(_) => self.source_v6.map(IpAddr::V6),
        }
    }
}

impl Default for VerifyOptions {
    fn default() -> VerifyOptions {
        VerifyOptions::new()
    }
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
/// A target seen rate-limiting its ICMP errors gets a note with what was measured
/// ([`RateLimit::describe`]); its ports not confirmed within
/// [`VerifyOptions::confirm_budget`] are `indeterminate` (see the module documentation).
///
/// # Errors
///
/// A scan that cannot run at all (socket failure). A SYN scan denied raw sockets falls back
/// to a connect scan, and UDP entries that cannot be scanned become indeterminate rows; both
/// are said in the report's notes.
pub fn verify(targets: &[Target], opts: &VerifyOptions) -> Result<Verification, ScanError> {
    run(targets, opts, None)
}

/// [`verify`] for scans that repeat (the agents' peer scans): each call re-checks a share of
/// every address's managed UDP ports, as many as the address can answer within
/// [`VerifyOptions::confirm_budget`] at its last measured ICMP rate limit, least recently
/// probed first, and reports every managed UDP port from its last confirmed observation in
/// `ledger`, with its time in [`Row::confirmed_at`] (see [`crate::ledger`]). TCP is scanned in
/// full every time. A port not probed yet is `indeterminate` (`not scanned`), with a cause
/// saying it is still to come.
///
/// # Errors
///
/// As [`verify`].
pub fn verify_incremental(
    targets: &[Target],
    opts: &VerifyOptions,
    ledger: &mut Ledger,
) -> Result<Verification, ScanError> {
    run(targets, opts, Some(ledger))
}

/// Compares finished scans with the targets' intents as [`verify`] does once it has scanned,
/// for probes sent from `vantage`, without asking any agent (causes from the outside view
/// only) and, when `ledger` is given, with UDP rows dated and completed as
/// [`verify_incremental`] does. Pure: for scans made elsewhere and for tests with synthetic
/// ones. `results` holds each address's TCP and UDP host reports, each with the probe type
/// that produced it (what a withheld ICMP error would have read as depends on it).
pub fn compare(
    targets: &[Target],
    vantage: IpAddr,
    results: &[(ScanKind, HostReport)],
    opts: &VerifyOptions,
    ledger: Option<&Ledger>,
) -> Report {
    let planned: Vec<Planned<'_>> = targets
        .iter()
        .map(|t| Planned {
            target: t,
            vantage,
            unreachable: None,
            exp: expectations(&t.intent, vantage, exempt(&opts.failsafe)),
        })
        .collect();
    let mut notes = rate_limit_notes(&planned, results);
    let rows = compare_planned(&planned, &[], false, results, opts, ledger);
    notes.push("agents were not asked: causes come from the outside view only".into());
    Report::new(rows, notes)
}

/// Each target with its vantage (the probes' source address) and what it expects from there;
/// an address without a route is planned as unreachable.
///
/// # Errors
///
/// A failure to find a source address other than a missing route.
fn plan<'a>(targets: &'a [Target], opts: &VerifyOptions) -> Result<Vec<Planned<'a>>, ScanError> {
    let mut planned: Vec<Planned<'_>> = Vec::new();
    for t in targets {
        let (vantage, unreachable) = match portwarden_scan::source_for(t.address) {
            Ok(v) => (opts.source_for(t.address).unwrap_or(v), None),
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
    Ok(planned)
}

/// Scans `addresses` for `ports` of `protocol`: TCP with `tcp_kind`, falling back to a connect
/// scan (for this and every later group) when raw sockets are denied; UDP unless raw sockets
/// were denied before (`udp_denied`, then `None`). Each fallback leaves a note.
///
/// # Errors
///
/// The scanner's, but for the denied raw sockets it falls back from.
fn scan_group(
    scanner: impl Fn() -> Scanner,
    protocol: Protocol,
    (addresses, ports): (&[IpAddr], &PortList),
    (tcp_kind, udp_denied): (&mut ScanKind, &mut bool),
    notes: &mut Vec<String>,
) -> Result<Option<ScanReport>, ScanError> {
    let report = match protocol {
        Protocol::Tcp => match scanner().scan(addresses, ports, *tcp_kind) {
            Err(ScanError::RawSocketDenied { .. }) if *tcp_kind != ScanKind::Connect => {
                notes.push(
                    "raw sockets are not permitted: TCP was verified with a connect scan".into(),
                );
                *tcp_kind = ScanKind::Connect;
                scanner().scan(addresses, ports, *tcp_kind)?
            }
            other => other?,
        },
        Protocol::Udp if *udp_denied => return Ok(None),
        Protocol::Udp => match scanner().scan(addresses, ports, ScanKind::Udp) {
            Err(ScanError::RawSocketDenied { .. }) => {
                notes.push("raw sockets are not permitted: UDP entries could not be verified (indeterminate)".into());
                *udp_denied = true;
                return Ok(None);
            }
            other => other?,
        },
    };
    Ok(Some(report))
}

/// Starts a round of the ledger over the planned addresses' managed UDP ports (forgetting
/// the ones no longer managed).
fn begin_round(ledger: &mut Ledger, planned: &[Planned<'_>], opts: &VerifyOptions) {
    let managed: BTreeMap<IpAddr, Vec<u16>> = planned
        .iter()
        .map(|p| (p.target.address, ports_for(p, Protocol::Udp, opts)))
        .collect();
    ledger.retain(&managed);
    ledger.begin_round();
}

/// A scan's hosts, each with the scan's kind.
fn hosts_of(report: &ScanReport) -> Vec<(ScanKind, HostReport)> {
    report
        .hosts
        .iter()
        .cloned()
        .map(|h| (report.kind, h))
        .collect()
}

/// The targets with their intents at `now` (without the rules expired then), or `None` when
/// no rule of theirs has expired.
fn unexpired(targets: &[Target], now: portwarden_policy::Timestamp) -> Option<Vec<Target>> {
    targets
        .iter()
        .any(|t| t.intent.has_expired_at(now))
        .then(|| {
            targets
                .iter()
                .map(|t| Target {
                    intent: Arc::new(t.intent.at(now)),
                    ..t.clone()
                })
                .collect()
        })
}

fn run(
    targets: &[Target],
    opts: &VerifyOptions,
    mut ledger: Option<&mut Ledger>,
) -> Result<Verification, ScanError> {
    // Entries that expired since the intents were compiled (an agent's peers, compiled at
    // load) are as if deleted: the kernel's time match has stopped their rules.
    let current = unexpired(targets, portwarden_policy::Timestamp::now());
    let targets = current.as_deref().unwrap_or(targets);
    let mut notes = Vec::new();
    let planned = plan(targets, opts)?;
    let extra = usable_extra_sources(&planned, opts, &mut notes);
    // The inside views first: they must describe the nodes as the scan finds them, and an
    // agent may repair rule drift while a long scan runs.
    let insides = fetch_insides(&planned, opts, &mut notes);
    if let Some(ledger) = ledger.as_deref_mut() {
        begin_round(ledger, &planned, opts);
    }
    let scanner = || Scanner::new(scan_config(targets, opts, &extra));
    let mut tcp_kind = opts.tcp_kind;
    let mut udp_denied = false;
    let mut scans: Vec<ScanReport> = Vec::new();
    let mut results: Vec<(ScanKind, HostReport)> = Vec::new();
    for protocol in [Protocol::Tcp, Protocol::Udp] {
        for (managed, addresses) in scan_groups(&planned, protocol, opts) {
            let probe = match (protocol, ledger.as_deref()) {
                (Protocol::Udp, Some(l)) => l.share(&addresses, &managed, opts.confirm_budget),
                _ => managed.clone(),
            };
            if probe.len() < managed.len() {
                notes.push(share_note(&addresses, probe.len(), managed.len(), opts));
            }
            let ports = PortList::from_ports(probe);
            let Some(report) = scan_group(
                scanner,
                protocol,
                (&addresses, &ports),
                (&mut tcp_kind, &mut udp_denied),
                &mut notes,
            )?
            else {
                continue;
            };
            let fresh = hosts_of(&report);
            notes.extend(rate_limit_notes(&planned, &fresh));
            let finished = SystemTime::now();
            for (kind, host) in fresh {
                let host = match (protocol, ledger.as_deref_mut()) {
                    (Protocol::Udp, Some(l)) => {
                        l.record(&host, finished);
                        l.merged(&host, &managed)
                    }
                    _ => host,
                };
                results.push((kind, host));
            }
            scans.push(report);
        }
    }
    let rows = compare_planned(
        &planned,
        &insides,
        opts.agent_port.is_some(),
        &results,
        opts,
        ledger.as_deref(),
    );
    Ok(Verification {
        report: Report::new(rows, notes),
        scans,
    })
}

/// The addresses to scan for `protocol`, grouped by the ports they need: targets that need the
/// same ports are scanned together, each group once. Unreachable addresses are left out:
/// nothing can be sent to them.
fn scan_groups(
    planned: &[Planned<'_>],
    protocol: Protocol,
    opts: &VerifyOptions,
) -> BTreeMap<Vec<u16>, Vec<IpAddr>> {
    let mut groups: BTreeMap<Vec<u16>, Vec<IpAddr>> = BTreeMap::new();
    for p in planned.iter().filter(|p| p.unreachable.is_none()) {
        let ports = ports_for(p, protocol, opts);
        if !ports.is_empty() {
            groups.entry(ports).or_default().push(p.target.address);
        }
    }
    groups
}

/// The ports to probe on one planned address for `protocol`: the managed ones, and for TCP on
/// a node with `unlisted: report` the unlisted search range; sorted.
fn ports_for(p: &Planned<'_>, protocol: Protocol, opts: &VerifyOptions) -> Vec<u16> {
    let mut ports: Vec<u16> = p
        .exp
        .iter()
        .filter(|e| e.protocol == protocol)
        .map(|e| e.port)
        .collect();
    if protocol == Protocol::Tcp && p.target.intent.report_unlisted {
        ports.extend_from_slice(opts.unlisted_ports.as_slice());
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The note of a UDP scan that re-checks only a share of a group's managed ports.
fn share_note(addresses: &[IpAddr], share: usize, managed: usize, opts: &VerifyOptions) -> String {
    let list: Vec<String> = addresses.iter().map(ToString::to_string).collect();
    let budget = opts
        .confirm_budget
        .map_or_else(String::new, |b| format!(" in {} s", b.as_secs()));
    format!(
        "{}: {share} of {managed} managed UDP ports re-checked in this scan, as many as its ICMP rate limit lets it answer{budget}; the others are reported from their last confirmation",
        list.join(", ")
    )
}

/// A note for each host report with a measured ICMP rate limit: which node, which protocol,
/// and what was measured.
fn rate_limit_notes(planned: &[Planned<'_>], results: &[(ScanKind, HostReport)]) -> Vec<String> {
    results
        .iter()
        .filter_map(|(kind, h)| {
            let protocol = protocol_of(*kind);
            let rl = h.rate_limit.as_ref()?;
            let node = planned
                .iter()
                .find(|p| p.target.address == h.address)
                .map_or("?", |p| p.target.node.as_str());
            Some(format!(
                "{node} {} ({protocol}): {}",
                h.address,
                rl.describe()
            ))
        })
        .collect()
}

/// The extra source addresses that may confirm for the vantage: each of them must expect the
/// same states as the vantage on every reachable target of its family.
fn usable_extra_sources(
    planned: &[Planned<'_>],
    opts: &VerifyOptions,
    notes: &mut Vec<String>,
) -> Vec<IpAddr> {
    let mut usable = Vec::new();
    for &extra in &opts.extra_sources {
        let differs = planned
            .iter()
            .filter(|p| p.unreachable.is_none() && p.target.address.is_ipv4() == extra.is_ipv4())
            .find(|p| expectations(&p.target.intent, extra, exempt(&opts.failsafe)) != p.exp);
        match differs {
            Some(p) => notes.push(format!(
                "source {extra} not used: {}'s policies expect other states from it than from {} (a from: entry), so its answers cannot confirm what {} sees",
                p.target.node, p.vantage, p.vantage
            )),
            None => usable.push(extra),
        }
    }
    usable
}

/// The protocol a probe type scans.
fn protocol_of(kind: ScanKind) -> Protocol {
    match kind {
        ScanKind::Udp => Protocol::Udp,
        ScanKind::Syn | ScanKind::Connect | ScanKind::Ack => Protocol::Tcp,
    }
}

/// The rows of every planned address from the scans' `results`.
fn compare_planned(
    planned: &[Planned<'_>],
    insides: &[(String, Result<InsideView, String>)],
    asked: bool,
    results: &[(ScanKind, HostReport)],
    opts: &VerifyOptions,
    ledger: Option<&Ledger>,
) -> Vec<Row> {
    let host = |protocol: Protocol, address: IpAddr| {
        results
            .iter()
            .find(|(k, h)| protocol_of(*k) == protocol && h.address == address)
    };
    let mut rows = Vec::new();
    for p in planned {
        let (t, exp) = (p.target, &p.exp);
        let inside = match insides.iter().find(|(n, _)| *n == t.node) {
            Some((_, Ok(v))) => Inside::Known(v),
            Some((_, Err(e))) => Inside::Unknown(e),
            None if asked => Inside::Unknown("no address of the node is reachable"),
            None => Inside::Unknown("agents not asked (--agent-port 0)"),
        };
        let tcp_scan = host(Protocol::Tcp, t.address);
        let tcp = tcp_scan.map(|(_, h)| h);
        let udp = host(Protocol::Udp, t.address).map(|(_, h)| h);
        let ctx = Compare {
            target: t,
            vantage: p.vantage,
            inside: &inside,
            ledger,
            tcp_kind: tcp_scan.map_or(opts.tcp_kind, |(k, _)| *k),
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
    rows
}

/// The scanner settings of a verification: its rate caps, sources and confirmation budget,
/// and the targets' addresses as the only ones the scanner may probe.
fn scan_config(targets: &[Target], opts: &VerifyOptions, extra: &[IpAddr]) -> ScanConfig {
    let mut config = ScanConfig {
        targets: TargetPolicy::only(targets.iter().map(|t| t.address)),
        source_v4: opts.source_v4,
        source_v6: opts.source_v6,
        extra_sources: extra.to_vec(),
        confirm_budget: opts.confirm_budget,
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
            let view = inside::fetch_view(SocketAddr::new(*addr, port), opts.agent_timeout);
            done.push((i, view));
        }
    };
    let mut fetched: Vec<Option<Result<InsideView, FetchError>>> = vec![None; nodes.len()];
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
            // The error's words from here on: they become the notes and the causes' text.
            let view = match view {
                Some(fetched) => fetched.map_err(|e| e.to_string()),
                None => Err("not asked: no query thread could start, or it panicked".into()),
            };
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
    /// The agent's ledger, whose UDP observations the results were completed from.
    ledger: Option<&'a Ledger>,
    /// The probe type of the TCP results.
    tcp_kind: ScanKind,
}

/// The cause of a port whose silence the target's ICMP rate limit leaves unconfirmed.
fn rate_limited_cause(rate_limit: Option<&RateLimit>) -> String {
    let what = "its silence may be an ICMP error the node withheld (a longer --confirm-budget confirms more ports)";
    match rate_limit {
        Some(rl) => format!("{}; {what}", rl.describe()),
        None => format!(
            "the node rate-limits its ICMP errors and the scan's confirmation budget ran out before this port: {what}"
        ),
    }
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
            confirmed_at: None,
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
        let lookup = |host: Option<&HostReport>, port: u16| {
            host.and_then(|h| h.port(port)).map(|p| (p.state, p.reason))
        };
        exp.iter()
            .map(|e| {
                let scan = match e.protocol {
                    Protocol::Tcp => tcp,
                    Protocol::Udp => udp,
                };
                let Some((observed, reason)) = lookup(scan, e.port) else {
                    let cause = match (e.protocol, self.ledger, scan) {
                        // Scanned, but this port's turn in the rotation has not come yet.
                        (Protocol::Udp, Some(_), Some(h)) => format!(
                            "not re-checked yet: this node's UDP ports are re-checked a share at a time, as many per scan as its ICMP rate limit lets it answer{}",
                            h.rate_limit
                                .as_ref()
                                .map_or_else(String::new, |rl| format!(" ({})", rl.describe()))
                        ),
                        _ => "this protocol could not be scanned from here".to_string(),
                    };
                    return self.not_scanned(e.port, e.protocol, Some(e), cause);
                };
                let unconfirmed = reason == Reason::RateLimited;
                let (verdict, outside) = if unconfirmed {
                    let kind = match e.protocol {
                        Protocol::Tcp => self.tcp_kind,
                        Protocol::Udp => ScanKind::Udp,
                    };
                    judge_unconfirmed(kind, e.state, observed)
                } else {
                    judge(e.protocol, e.state, observed)
                };
                let mut r = self.row(e.port, e.protocol, e.state.to_string(), observed, verdict);
                r.policy = Some(e.policy.to_string());
                r.entry = Some(e.entry);
                if e.protocol == Protocol::Udp {
                    r.confirmed_at = self
                        .ledger
                        .and_then(|l| l.confirmed_at(self.target.address, e.port))
                        .map(rfc3339);
                }
                if verdict == Verdict::Indeterminate && unconfirmed {
                    r.cause = Some(rate_limited_cause(scan.and_then(|h| h.rate_limit.as_ref())));
                } else if verdict != Verdict::InSync {
                    r.cause = Some(self.drift_cause(e, observed, outside, silent, unconfirmed, scan));
                }
                r
            })
            .collect()
    }

    /// Why the expectation `e` does not hold: the node as a whole is silent (`silent`; filtered
    /// upstream, or unreachable), or what [`causes::cause`] makes of the port and the inside
    /// view; for an `unconfirmed` port (the node withheld ICMP errors) with that said too.
    fn drift_cause(
        &self,
        e: &Expectation,
        observed: PortState,
        outside: Option<&str>,
        silent: bool,
        unconfirmed: bool,
        scan: Option<&HostReport>,
    ) -> String {
        let outside = outside.unwrap_or("unexpected state");
        let mut cause = if silent && e.protocol == Protocol::Tcp {
            match self.inside {
                Inside::Known(_) => format!(
                    "no answer on any port from {}: filtered upstream of the node (its agent answers)",
                    self.vantage
                ),
                Inside::Unknown(why) => format!(
                    "node unreachable: no answer on any port, and its agent does not answer ({why})"
                ),
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
        };
        if unconfirmed {
            // Drift whichever way (an open TCP port that does not answer): only
            // whether it is dropped or rejected is unknown.
            let measured = scan
                .and_then(|h| h.rate_limit.as_ref())
                .map_or_else(String::new, |rl| format!(": {}", rl.describe()));
            cause.push_str(&format!(
                " (the node rate-limits its ICMP errors, so the probes may be rejected rather than dropped{measured})"
            ));
        }
        cause
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
            ..VerifyOptions::new()
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

    /// A peer's intent compiled before one of its entries expired is verified as if the entry
    /// were deleted: the next entry is what a scan must see.
    #[test]
    fn expired_entries_of_a_peer_are_not_expected() {
        use portwarden_policy::{PortRange, Rule, State, Timestamp};
        let rule = |entry, state, expires: Option<i64>| Rule {
            priority: 100,
            policy: "incident".into(),
            entry,
            protocol: Protocol::Tcp,
            ports: PortRange::single(8080),
            source: None,
            state,
            expires: expires.map(Timestamp::from_unix),
        };
        let target = Target {
            node: "web-1".into(),
            address: "10.213.0.11".parse().expect("address"),
            intent: Arc::new(NodeIntent {
                policies: vec!["incident".into()],
                rules: vec![
                    rule(0, State::Filtered, Some(100)),
                    rule(1, State::Closed, None),
                ],
                report_unlisted: false,
            }),
        };
        let targets = [target];
        assert!(unexpired(&targets, Timestamp::from_unix(99)).is_none());
        let later = unexpired(&targets, Timestamp::from_unix(100)).expect("one expired");
        assert_eq!(later[0].intent.rules, [rule(1, State::Closed, None)]);
        assert_eq!(
            (later[0].node.as_str(), later[0].address),
            ("web-1", targets[0].address)
        );
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
            expires: None,
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
            ledger: None,
            tcp_kind: ScanKind::Syn,
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
        let extra: IpAddr = "10.213.1.3".parse().expect("address");
        let opts = VerifyOptions {
            source_v4: Some("10.213.1.2".parse().expect("address")),
            confirm_budget: Some(Duration::from_secs(7)),
            ..options()
        };
        let config = scan_config(&targets, &opts, &[extra]);
        assert_eq!(config.source_v4, opts.source_v4);
        assert_eq!(config.extra_sources, vec![extra]);
        assert_eq!(config.confirm_budget, Some(Duration::from_secs(7)));
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

    use crate::ledger::Ledger;
    use portwarden_policy::{PortRange, Rule, State};
    use portwarden_scan::PortResult;

    const NODE: &str = "10.213.0.12";
    const VANTAGE: &str = "10.213.1.2";

    /// A node whose policy says `ports: "5000-5029", protocol: UDP, state: closed` (entry 0)
    /// and `8080/tcp open` (entry 1).
    fn udp_closed_node() -> Target {
        let rule = |entry, protocol, start, end, state| Rule {
            priority: 100,
            policy: "udp".into(),
            entry,
            protocol,
            ports: PortRange { start, end },
            source: None,
            state,
            expires: None,
        };
        Target {
            node: "web-2".into(),
            address: NODE.parse().expect("address"),
            intent: Arc::new(NodeIntent {
                policies: vec!["udp".into()],
                rules: vec![
                    rule(0, Protocol::Udp, 5000, 5029, State::Closed),
                    rule(1, Protocol::Tcp, 8080, 8080, State::Open),
                ],
                report_unlisted: false,
            }),
        }
    }

    fn result(port: u16, protocol: &'static str, state: PortState, reason: Reason) -> PortResult {
        PortResult {
            port,
            protocol,
            state,
            reason,
        }
    }

    /// What the lead's engine reports for the case under a budget of 10 s: the burst
    /// of 6 answered, 12 more confirmed closed at 1/s... and 12 not confirmed in time.
    fn udp_scan(closed: usize, unconfirmed: u32) -> HostReport {
        HostReport {
            address: NODE.parse().expect("address"),
            ports: (5000..5030u16)
                .enumerate()
                .map(|(i, p)| {
                    if i < closed {
                        result(p, "udp", PortState::Closed, Reason::PortUnreach)
                    } else {
                        result(p, "udp", PortState::OpenFiltered, Reason::RateLimited)
                    }
                })
                .collect(),
            error: None,
            rate_limit: Some(RateLimit {
                burst: 6,
                interval_ms: 1000,
                sources: 1,
                unconfirmed,
                confirm_ms: 10_000,
                budget_ms: Some(10_000),
            }),
        }
    }

    fn tcp_scan(state: PortState, reason: Reason) -> HostReport {
        HostReport {
            address: NODE.parse().expect("address"),
            ports: vec![result(8080, "tcp", state, reason)],
            error: None,
            rate_limit: None,
        }
    }

    fn vantage() -> IpAddr {
        VANTAGE.parse().expect("address")
    }

    #[test]
    fn unconfirmed_silence_of_a_rate_limited_node_is_indeterminate_not_drift() {
        let target = udp_closed_node();
        let results = [
            (ScanKind::Syn, tcp_scan(PortState::Open, Reason::SynAck)),
            (ScanKind::Udp, udp_scan(18, 12)),
        ];
        let report = compare(&[target], vantage(), &results, &options(), None);
        assert_eq!(
            (
                report.summary.in_sync,
                report.summary.drift,
                report.summary.indeterminate
            ),
            (19, 0, 12),
            "{report:#?}"
        );
        assert!(!report.has_drift());
        let unconfirmed: Vec<&Row> = report
            .results
            .iter()
            .filter(|r| r.verdict == Verdict::Indeterminate)
            .collect();
        assert!(
            unconfirmed
                .iter()
                .all(|r| r.port >= 5018 && r.observed == "open|filtered")
        );
        for r in unconfirmed {
            let cause = r.cause.as_deref().unwrap_or_default();
            assert!(
                cause.starts_with(
                    "ICMP rate limit: 1 answer/s from this node; 12 ports not confirmed in 10 s; "
                ),
                "{cause}"
            );
            assert!(cause.contains("--confirm-budget"), "{cause}");
        }
        // The measured limit is a note too: it is why the scan was slow.
        assert!(
            report.notes.iter().any(|n| n
                == "web-2 10.213.0.12 (udp): ICMP rate limit: 1 answer/s from this node; 12 ports not confirmed in 10 s"),
            "{:?}",
            report.notes
        );
        // Without the rate-limited reason the same silence is drift, as before.
        let mut silent = udp_scan(18, 12);
        for p in &mut silent.ports {
            if p.reason == Reason::RateLimited {
                p.reason = Reason::NoResponse;
            }
        }
        silent.rate_limit = None;
        let results = [(ScanKind::Udp, silent)];
        let report = compare(&[udp_closed_node()], vantage(), &results, &options(), None);
        assert_eq!(report.summary.drift, 12, "{report:#?}");
    }

    #[test]
    fn an_open_tcp_port_that_stays_silent_drifts_even_when_unconfirmed() {
        let results = [(
            ScanKind::Connect,
            HostReport {
                rate_limit: udp_scan(0, 1).rate_limit,
                ..tcp_scan(PortState::Filtered, Reason::RateLimited)
            },
        )];
        let report = compare(&[udp_closed_node()], vantage(), &results, &options(), None);
        let row = report
            .results
            .iter()
            .find(|r| r.port == 8080)
            .expect("8080 row");
        assert_eq!(row.verdict, Verdict::Drift, "{row:#?}");
        let cause = row.cause.as_deref().unwrap_or_default();
        assert!(
            cause.contains("may be rejected rather than dropped: ICMP rate limit: 1 answer/s"),
            "{cause}"
        );
    }

    /// The agent's bookkeeping end to end, without a network: three rounds of a peer that
    /// answers 10 ports per budget; the report always has all 30 rows, never a drift, each
    /// confirmed one dated with its own round, and the rest say they are still to come.
    #[test]
    fn incremental_rows_come_from_the_last_confirmation_with_its_time() {
        let target = udp_closed_node();
        let managed: Vec<u16> = (5000..5030).collect();
        let address: IpAddr = NODE.parse().expect("address");
        let budget = Some(Duration::from_secs(4));
        let opts = VerifyOptions {
            confirm_budget: budget,
            ..options()
        };
        let mut ledger = Ledger::default();
        let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        // Round 1: everything probed (no limit known yet); 10 confirmed.
        ledger.begin_round();
        assert_eq!(ledger.share(&[address], &managed, budget), managed);
        let first = udp_scan(10, 20);
        ledger.record(&first, at(1_000));
        let merged = ledger.merged(&first, &managed);
        let report = compare(
            std::slice::from_ref(&target),
            vantage(),
            &[(ScanKind::Udp, merged)],
            &opts,
            Some(&ledger),
        );
        assert_eq!(report.summary.drift, 0, "{report:#?}");
        assert_eq!(report.summary.in_sync, 10);
        let dated = |r: &Report, port: u16| {
            r.results
                .iter()
                .find(|x| x.port == port && x.protocol == "udp")
                .map(|x| (x.verdict, x.confirmed_at.clone()))
        };
        assert_eq!(
            dated(&report, 5000),
            Some((Verdict::InSync, Some("1970-01-01T00:16:40Z".into())))
        );
        assert_eq!(dated(&report, 5029), Some((Verdict::Indeterminate, None)));

        // Round 2: a share of 10 (burst 6 + 4 s at 1/s), the unconfirmed ones first; the
        // peer confirms all of it. The share's scan has only those ports.
        ledger.begin_round();
        let share = ledger.share(&[address], &managed, budget);
        assert_eq!(share, (5010..5020).collect::<Vec<u16>>());
        let mut second = udp_scan(30, 0);
        second.ports.retain(|p| share.contains(&p.port));
        ledger.record(&second, at(2_000));
        let merged = ledger.merged(&second, &managed);
        let report = compare(
            std::slice::from_ref(&target),
            vantage(),
            &[(ScanKind::Udp, merged)],
            &opts,
            Some(&ledger),
        );
        assert_eq!(report.summary.in_sync, 20, "{report:#?}");
        assert_eq!(report.summary.drift, 0);
        assert_eq!(
            dated(&report, 5000).and_then(|d| d.1),
            Some("1970-01-01T00:16:40Z".into()),
            "still from round 1"
        );
        assert_eq!(
            dated(&report, 5010).and_then(|d| d.1),
            Some("1970-01-01T00:33:20Z".into())
        );
        // 5020-5029 were probed in round 1 but not confirmed: their row is that probe's.
        assert_eq!(dated(&report, 5025), Some((Verdict::Indeterminate, None)));
        assert_eq!(report.results.len(), 31, "every managed port has its row");
    }

    #[test]
    fn a_port_not_probed_yet_says_so() {
        let target = udp_closed_node();
        let mut ledger = Ledger::default();
        ledger.begin_round();
        let mut only_five = udp_scan(30, 0);
        only_five.ports.truncate(5);
        ledger.record(&only_five, SystemTime::UNIX_EPOCH);
        let managed: Vec<u16> = (5000..5030).collect();
        let merged = ledger.merged(&only_five, &managed);
        let report = compare(
            &[target],
            vantage(),
            &[(ScanKind::Udp, merged)],
            &options(),
            Some(&ledger),
        );
        let row = report
            .results
            .iter()
            .find(|r| r.port == 5010)
            .expect("5010 row");
        assert_eq!(
            (row.verdict, row.observed.as_str()),
            (Verdict::Indeterminate, "not scanned")
        );
        let cause = row.cause.as_deref().unwrap_or_default();
        assert!(cause.starts_with("not re-checked yet: "), "{cause}");
        assert!(cause.contains("(ICMP rate limit: 1 answer/s"), "{cause}");
    }

    #[test]
    fn an_extra_source_that_a_from_entry_tells_apart_is_not_used() {
        let mut target = udp_closed_node();
        let mut rules = target.intent.rules.clone();
        rules.insert(
            0,
            Rule {
                priority: 100,
                policy: "udp".into(),
                entry: 2,
                protocol: Protocol::Udp,
                ports: PortRange::single(5000),
                source: Some("10.213.1.3/32".parse().expect("network")),
                state: State::Open,
                expires: None,
            },
        );
        target.intent = Arc::new(NodeIntent {
            rules,
            ..(*target.intent).clone()
        });
        let planned = [Planned {
            target: &target,
            vantage: vantage(),
            unreachable: None,
            exp: expectations(&target.intent, vantage(), |_, _| false),
        }];
        let opts = VerifyOptions {
            extra_sources: vec![
                "10.213.1.3".parse().expect("address"),
                "10.213.1.4".parse().expect("address"),
                "fd00:213:1::4".parse().expect("address"),
            ],
            failsafe: Failsafe::none(),
            ..options()
        };
        let mut notes = Vec::new();
        let usable = usable_extra_sources(&planned, &opts, &mut notes);
        assert_eq!(
            usable,
            vec![
                "10.213.1.4".parse::<IpAddr>().expect("address"),
                "fd00:213:1::4".parse().expect("address")
            ]
        );
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].starts_with("source 10.213.1.3 not used: web-2's policies expect other states from it than from 10.213.1.2"),
            "{notes:?}"
        );
    }
}
