//! The output model: what a scan found, per host and port, in nmap's own words, and the
//! [`Progress`] a running scan reports.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Serialize, Serializer};

/// Transport protocol of a scanned port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP (SYN, connect and ACK scans).
    Tcp,
    /// UDP (UDP scan).
    Udp,
}

impl Protocol {
    /// `"tcp"` or `"udp"`, as nmap writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// How ports are probed. Each kind lives in its own module under `probe/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScanKind {
    /// Half-open SYN scan over a raw socket (`nmap -sS`); needs CAP_NET_RAW.
    Syn,
    /// Full TCP connect() scan (`nmap -sT`); needs no privileges.
    Connect,
    /// ACK scan (`nmap -sA`): tells filtered from unfiltered; needs CAP_NET_RAW.
    Ack,
    /// UDP scan (`nmap -sU`); needs CAP_NET_RAW.
    Udp,
}

impl ScanKind {
    /// The protocol this kind probes.
    pub fn protocol(self) -> Protocol {
        match self {
            ScanKind::Udp => Protocol::Udp,
            ScanKind::Syn | ScanKind::Connect | ScanKind::Ack => Protocol::Tcp,
        }
    }

    /// nmap's name for the scan type in XML (`scaninfo type=`).
    pub fn nmap_name(self) -> &'static str {
        match self {
            ScanKind::Syn => "syn",
            ScanKind::Connect => "connect",
            ScanKind::Ack => "ack",
            ScanKind::Udp => "udp",
        }
    }

    /// The equivalent nmap flag, e.g. `-sS`.
    pub fn nmap_flag(self) -> &'static str {
        match self {
            ScanKind::Syn => "-sS",
            ScanKind::Connect => "-sT",
            ScanKind::Ack => "-sA",
            ScanKind::Udp => "-sU",
        }
    }

    /// Whether this kind needs raw sockets (CAP_NET_RAW).
    pub fn needs_raw(self) -> bool {
        !matches!(self, ScanKind::Connect)
    }
}

impl std::str::FromStr for ScanKind {
    type Err = crate::ScanError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "syn" => Ok(ScanKind::Syn),
            "connect" => Ok(ScanKind::Connect),
            "ack" => Ok(ScanKind::Ack),
            "udp" => Ok(ScanKind::Udp),
            other => Err(crate::ScanError::Config(format!(
                "unknown scan kind {other:?} (expected syn, connect, ack or udp)"
            ))),
        }
    }
}

/// nmap's six port states. `Display` writes exactly nmap's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PortState {
    /// An application accepts connections or answers datagrams.
    Open,
    /// Reachable, but nothing listens (RST, or ICMP port-unreachable for UDP).
    Closed,
    /// No answer after retransmission, or an ICMP error: something filters.
    Filtered,
    /// ACK scan: a RST came back, so no stateless filter is in the way.
    Unfiltered,
    /// Cannot tell open from filtered (UDP without an answer).
    OpenFiltered,
    /// Cannot tell closed from filtered (idle scan; never produced here).
    ClosedFiltered,
}

impl PortState {
    /// nmap's word: `open`, `closed`, `filtered`, `unfiltered`, `open|filtered`,
    /// `closed|filtered`.
    pub fn as_str(self) -> &'static str {
        match self {
            PortState::Open => "open",
            PortState::Closed => "closed",
            PortState::Filtered => "filtered",
            PortState::Unfiltered => "unfiltered",
            PortState::OpenFiltered => "open|filtered",
            PortState::ClosedFiltered => "closed|filtered",
        }
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            PortState::Open => 1,
            PortState::Closed => 2,
            PortState::Filtered => 3,
            PortState::Unfiltered => 4,
            PortState::OpenFiltered => 5,
            PortState::ClosedFiltered => 6,
        }
    }

    pub(crate) fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            1 => PortState::Open,
            2 => PortState::Closed,
            3 => PortState::Filtered,
            4 => PortState::Unfiltered,
            5 => PortState::OpenFiltered,
            6 => PortState::ClosedFiltered,
            _ => return None,
        })
    }
}

impl fmt::Display for PortState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for PortState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Why a port got its state, with nmap's reason words (`reason.cc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// SYN/ACK answered a SYN, or connect() succeeded (nmap: `syn-ack`).
    SynAck,
    /// A bare SYN answered a SYN (TCP split handshake; nmap: `split-handshake-syn`).
    Syn,
    /// RST (nmap: `reset`).
    Reset,
    /// connect() got ECONNREFUSED (nmap: `conn-refused`).
    ConnRefused,
    /// A UDP datagram came back (nmap: `udp-response`).
    UdpResponse,
    /// Nothing came back after retransmission (nmap: `no-response`).
    NoResponse,
    /// ICMP net unreachable (type 3 code 0).
    NetUnreach,
    /// ICMP host unreachable (type 3 code 1; ICMPv6 address unreachable).
    HostUnreach,
    /// ICMP protocol unreachable (type 3 code 2).
    ProtoUnreach,
    /// ICMP port unreachable (type 3 code 3; ICMPv6 code 4).
    PortUnreach,
    /// ICMP net administratively prohibited (type 3 code 9).
    NetProhibited,
    /// ICMP host administratively prohibited (type 3 code 10).
    HostProhibited,
    /// ICMP communication administratively prohibited (type 3 code 13; ICMPv6 codes 1, 5).
    AdminProhibited,
    /// ICMP time exceeded (type 11).
    TimeExceeded,
    /// ICMPv6 no route to destination (code 0).
    NoRoute,
    /// ICMPv6 beyond scope of source address (code 2).
    BeyondScope,
    /// ICMPv6 reject route to destination (code 6).
    RejectRoute,
    /// Another ICMP destination-unreachable code (nmap: `dest-unreach`).
    DestUnreach,
    /// Nothing came back, but the target was rate-limiting its ICMP errors and the scan's
    /// confirmation budget ran out before the silence could be told apart from a withheld
    /// error (`rate-limited`; not an nmap word: nmap has no budget and would keep trying).
    /// See [`HostReport::rate_limit`].
    RateLimited,
}

impl Reason {
    /// nmap's reason word, as in `<state reason="...">`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::SynAck => "syn-ack",
            Reason::Syn => "split-handshake-syn",
            Reason::Reset => "reset",
            Reason::ConnRefused => "conn-refused",
            Reason::UdpResponse => "udp-response",
            Reason::NoResponse => "no-response",
            Reason::NetUnreach => "net-unreach",
            Reason::HostUnreach => "host-unreach",
            Reason::ProtoUnreach => "proto-unreach",
            Reason::PortUnreach => "port-unreach",
            Reason::NetProhibited => "net-prohibited",
            Reason::HostProhibited => "host-prohibited",
            Reason::AdminProhibited => "admin-prohibited",
            Reason::TimeExceeded => "time-exceeded",
            Reason::NoRoute => "no-route",
            Reason::BeyondScope => "beyond-scope",
            Reason::RejectRoute => "reject-route",
            Reason::DestUnreach => "dest-unreach",
            Reason::RateLimited => "rate-limited",
        }
    }

    const ALL: [Reason; 19] = [
        Reason::SynAck,
        Reason::Syn,
        Reason::Reset,
        Reason::ConnRefused,
        Reason::UdpResponse,
        Reason::NoResponse,
        Reason::NetUnreach,
        Reason::HostUnreach,
        Reason::ProtoUnreach,
        Reason::PortUnreach,
        Reason::NetProhibited,
        Reason::HostProhibited,
        Reason::AdminProhibited,
        Reason::TimeExceeded,
        Reason::NoRoute,
        Reason::BeyondScope,
        Reason::RejectRoute,
        Reason::DestUnreach,
        Reason::RateLimited,
    ];

    pub(crate) fn code(self) -> u8 {
        Reason::ALL
            .iter()
            .position(|r| *r == self)
            .and_then(|p| u8::try_from(p).ok())
            .unwrap_or(0)
    }

    pub(crate) fn from_code(c: u8) -> Option<Self> {
        Reason::ALL.get(usize::from(c)).copied()
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One scanned port of one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PortResult {
    /// Port number.
    pub port: u16,
    /// Protocol.
    pub protocol: &'static str,
    /// nmap's state word.
    pub state: PortState,
    /// nmap's reason word.
    pub reason: Reason,
}

/// Every scanned port of one target address, sorted by port; or, for a target that could not
/// be scanned at all, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostReport {
    /// The target address.
    pub address: IpAddr,
    /// One entry per scanned port, ascending; empty when `error` is set.
    pub ports: Vec<PortResult>,
    /// Why nothing was sent to this target, e.g. `no route to 10.9.9.9: Network is
    /// unreachable (os error 101)`; `None` when it was scanned. The other targets of the same
    /// scan are not affected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Set when the target was seen rate-limiting the ICMP errors that tell closed from
    /// silent ports (Linux sends about one per second per peer after a burst of six): what
    /// was measured, and whether every silent port could be confirmed within the budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
}

/// What a scan learned about a target that rate-limits its ICMP errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RateLimit {
    /// Errors the target answered at full speed before it started withholding them.
    pub burst: u32,
    /// Measured time between answers once the burst was spent, per source address, in
    /// milliseconds (Linux's default: 1000 for IPv4, 250 for IPv6 on a /64).
    pub interval_ms: u64,
    /// Source addresses the confirmation spread over (each has its own budget at the target).
    pub sources: u32,
    /// Silent ports still unconfirmed when the budget ran out: their reason is
    /// [`Reason::RateLimited`]. 0 when every port was confirmed.
    pub unconfirmed: u32,
    /// Time spent confirming silent ports after the first pass, milliseconds.
    pub confirm_ms: u64,
    /// The confirmation budget, milliseconds, when one was set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_ms: Option<u64>,
}

impl RateLimit {
    /// One line for people: "ICMP rate limit: 1 answer/s from this node; 12 ports not
    /// confirmed in 10 s", or, when all were confirmed, how long it took.
    pub fn describe(&self) -> String {
        let rate = if self.interval_ms == 0 {
            "a burst of answers".to_string()
        } else {
            let per_s = 1000.0 * f64::from(self.sources.max(1)) / self.interval_ms as f64;
            if per_s >= 10.0 || per_s.fract() < 0.05 {
                format!("{per_s:.0} answer/s")
            } else {
                format!("{per_s:.1} answer/s")
            }
        };
        let secs = |ms: u64| {
            let s = ms as f64 / 1000.0;
            if s >= 10.0 {
                format!("{s:.0} s")
            } else {
                format!("{s:.1} s")
            }
        };
        if self.unconfirmed > 0 {
            let plural = if self.unconfirmed == 1 {
                "port"
            } else {
                "ports"
            };
            format!(
                "ICMP rate limit: {rate} from this node; {} {plural} not confirmed in {}",
                self.unconfirmed,
                secs(self.budget_ms.unwrap_or(self.confirm_ms))
            )
        } else {
            format!(
                "ICMP rate limit: {rate} from this node; every silent port confirmed in {}",
                secs(self.confirm_ms)
            )
        }
    }
}

impl HostReport {
    /// The report of a target that could not be scanned: no ports, and the reason.
    pub fn unscanned(address: IpAddr, error: String) -> HostReport {
        HostReport {
            address,
            ports: Vec::new(),
            error: Some(error),
            rate_limit: None,
        }
    }

    /// The result for `port`, if it was scanned.
    pub fn port(&self, port: u16) -> Option<&PortResult> {
        self.ports
            .binary_search_by_key(&port, |p| p.port)
            .ok()
            .map(|i| &self.ports[i])
    }
}

/// Counters describing how a scan went (for benchmarks, progress and debugging).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ScanStats {
    /// Probes sent, retransmissions included.
    pub probes_sent: u64,
    /// Retransmitted probes.
    pub retransmissions: u64,
    /// Replies matched to a probe.
    pub replies: u64,
    /// Loss events detected (a retransmission answered, or receive-buffer drops).
    pub drops_detected: u64,
    /// The congestion window when the scan ended.
    pub final_cwnd: u32,
    /// Smoothed round-trip time at the end, microseconds (0 if never measured).
    pub srtt_us: u64,
    /// The probe timeout at the end, microseconds.
    pub timeout_us: u64,
}

/// The result of [`Scanner::scan`](crate::Scanner::scan).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScanReport {
    /// How ports were probed.
    #[serde(skip)]
    pub kind: ScanKind,
    /// One entry per target, in the order given.
    pub hosts: Vec<HostReport>,
    /// Unix time the scan started, seconds.
    #[serde(skip)]
    pub started_unix: u64,
    /// Wall-clock duration.
    #[serde(skip)]
    pub elapsed: Duration,
    /// Engine counters.
    #[serde(skip)]
    pub stats: ScanStats,
}

impl ScanReport {
    /// The report of `address`, if it was a target.
    pub fn host(&self, address: IpAddr) -> Option<&HostReport> {
        self.hosts.iter().find(|h| h.address == address)
    }

    /// The targets that could not be scanned, with the reason (see [`HostReport::error`]).
    pub fn unscanned(&self) -> impl Iterator<Item = (IpAddr, &str)> {
        self.hosts
            .iter()
            .filter_map(|h| h.error.as_deref().map(|e| (h.address, e)))
    }
}

/// How far a scan has come; passed to the progress callback about ten times a second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Ports with a final state.
    pub done: u64,
    /// Ports to scan (targets × ports).
    pub total: u64,
    /// Time since the scan started.
    pub elapsed: Duration,
    /// Probes sent so far, retransmissions included.
    pub probes_sent: u64,
    /// While the scan waits on a target that rate-limits its ICMP errors: the measured time
    /// between its answers, per source address, in milliseconds (the reason the scan is slow).
    pub rate_limit_interval_ms: Option<u64>,
    /// The engine's own estimate of the time left, when it has a better one than a linear
    /// extrapolation (while confirming silent ports of a rate-limited target).
    pub estimated_left: Option<Duration>,
}

impl Progress {
    /// The time left: the engine's estimate when it has one, else a linear one once
    /// something is done.
    pub fn eta(&self) -> Option<Duration> {
        if self.done >= self.total {
            return None;
        }
        if let Some(left) = self.estimated_left {
            return Some(left);
        }
        if self.done == 0 {
            return None;
        }
        let per = self.elapsed.as_secs_f64() / self.done as f64;
        Some(Duration::from_secs_f64(
            per * (self.total - self.done) as f64,
        ))
    }
}

/// The progress callback type.
pub type ProgressFn = std::sync::Arc<dyn Fn(&Progress) + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eta_is_linear() {
        let p = Progress {
            done: 25,
            total: 100,
            elapsed: Duration::from_secs(1),
            probes_sent: 30,
            rate_limit_interval_ms: None,
            estimated_left: None,
        };
        assert_eq!(p.eta(), Some(Duration::from_secs(3)));
        assert_eq!(Progress { done: 0, ..p }.eta(), None);
    }
}
