//! Classification tables: reply → (state, reason), and how a new reply combines with what a
//! port already showed. Pure functions, each following a named place in nmap's source so the
//! two can be compared line by line:
//!
//! * replies: `get_pcap_result()` in `scan_engine_raw.cc` (TCP flags, UDP, ICMP type 3 by
//!   code, type 11, ICMPv6 type 1 by code);
//! * reasons: `icmpv4_to_reason()` / `icmpv6_to_reason()` in `reason.cc`;
//! * connect(): `handleConnectResult()` in `scan_engine_connect.cc` (errno → state);
//! * conflicting replies: `ultrascan_port_pspec_update()` in `scan_engine.cc`;
//! * silence after the last retransmission: the scan's default state (filtered, or
//!   open|filtered for UDP where "no response means open" — nmap's `noresp_open_scan`).

use crate::model::{PortState, Reason, ScanKind};

/// TCP flag bits.
pub mod tcp_flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// What came back for a probe, already matched to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// A TCP segment from the target port, with its flags.
    Tcp {
        /// TCP flags byte.
        flags: u8,
    },
    /// A UDP datagram from the target port.
    Udp,
    /// An ICMPv4 error quoting the probe.
    Icmp4 {
        /// ICMP type (3 destination unreachable, 11 time exceeded).
        icmp_type: u8,
        /// ICMP code.
        code: u8,
        /// Whether the ICMP message came from the target itself (not a router).
        from_target: bool,
    },
    /// An ICMPv6 error quoting the probe.
    Icmp6 {
        /// ICMPv6 type (1 destination unreachable, 4 parameter problem).
        icmp_type: u8,
        /// ICMPv6 code.
        code: u8,
        /// Whether the ICMPv6 message came from the target itself.
        from_target: bool,
    },
    /// connect() finished with this errno (0 = connected).
    Connect {
        /// The SO_ERROR / connect() errno.
        errno: i32,
        /// The error came from an ICMP message (queued by IP_RECVERR), not a reset.
        icmp: bool,
    },
}

impl Reply {
    /// An ICMP error (ICMPv6 when `v6`) of `icmp_type` and `code`, quoting the probe; sent by
    /// the target itself or by a router on the way.
    pub(crate) fn icmp(v6: bool, icmp_type: u8, code: u8, from_target: bool) -> Reply {
        if v6 {
            Reply::Icmp6 {
                icmp_type,
                code,
                from_target,
            }
        } else {
            Reply::Icmp4 {
                icmp_type,
                code,
                from_target,
            }
        }
    }

    /// Whether this is an ICMP error the target itself sent: the answers Linux rate-limits
    /// per peer (a reset or a service's datagram never is).
    pub fn is_icmp_from_target(&self) -> bool {
        match *self {
            Reply::Icmp4 { from_target, .. } | Reply::Icmp6 { from_target, .. } => from_target,
            Reply::Connect { icmp, .. } => icmp,
            Reply::Tcp { .. } | Reply::Udp => false,
        }
    }
}

/// Classifies one reply for a scan kind, as nmap's `get_pcap_result()` /
/// `handleConnectResult()` do. `None` means nmap ignores the reply (unexpected flags or codes).
pub fn classify(kind: ScanKind, reply: Reply) -> Option<(PortState, Reason)> {
    use PortState::*;
    match reply {
        Reply::Tcp { flags } => {
            let syn = flags & tcp_flags::SYN != 0;
            let ack = flags & tcp_flags::ACK != 0;
            let rst = flags & tcp_flags::RST != 0;
            match kind {
                // "if (USI->scantype == SYN_SCAN && (tcp->th_flags & (TH_SYN | TH_ACK)) == ..."
                ScanKind::Syn if syn && ack => Some((Open, Reason::SynAck)),
                ScanKind::Syn if rst => Some((Closed, Reason::Reset)),
                // TCP split handshake: a bare SYN means open.
                ScanKind::Syn if syn => Some((Open, Reason::Syn)),
                ScanKind::Ack if rst => Some((Unfiltered, Reason::Reset)),
                _ => None,
            }
        }
        Reply::Udp => match kind {
            ScanKind::Udp => Some((Open, Reason::UdpResponse)),
            _ => None,
        },
        Reply::Icmp4 {
            icmp_type,
            code,
            from_target,
        } => {
            let reason = icmp4_reason(icmp_type, code);
            match (icmp_type, code) {
                (3, 0 | 1 | 2 | 9 | 10 | 13) => Some((Filtered, reason)),
                // Port unreachable: closed only for UDP and only from the target itself.
                (3, 3) if kind == ScanKind::Udp && from_target => Some((Closed, reason)),
                (3, 3) => Some((Filtered, reason)),
                (11, _) => Some((Filtered, reason)),
                _ => None,
            }
        }
        Reply::Icmp6 {
            icmp_type,
            code,
            from_target,
        } => {
            let reason = icmp6_reason(icmp_type, code);
            match (icmp_type, code) {
                (1, 4) if kind == ScanKind::Udp && from_target => Some((Closed, reason)),
                (1, 0..=6) => Some((Filtered, reason)),
                // Parameter problem: "erroneous header field" means understood → open;
                // "unrecognised next header" → filtered (outside an IP protocol scan).
                (4, 0) => Some((Open, reason)),
                (4, 1) => Some((Filtered, reason)),
                _ => None,
            }
        }
        Reply::Connect { errno, .. } => classify_errno(errno),
    }
}

/// `handleConnectResult()`: connect()'s errno → state and reason.
pub fn classify_errno(errno: i32) -> Option<(PortState, Reason)> {
    use PortState::*;
    Some(match errno {
        0 => (Open, Reason::SynAck),
        libc::EACCES => (Filtered, Reason::AdminProhibited),
        libc::ECONNREFUSED => (Closed, Reason::ConnRefused),
        libc::ENOPROTOOPT => (Filtered, Reason::ProtoUnreach),
        libc::EHOSTUNREACH => (Filtered, Reason::HostUnreach),
        libc::ETIMEDOUT | libc::EHOSTDOWN => (Filtered, Reason::NoResponse),
        libc::ENETUNREACH => (Filtered, Reason::NetUnreach),
        libc::ENONET => (Filtered, Reason::DestUnreach),
        _ => return None,
    })
}

/// `icmpv4_to_reason()`.
pub fn icmp4_reason(icmp_type: u8, code: u8) -> Reason {
    match (icmp_type, code) {
        (3, 0) => Reason::NetUnreach,
        (3, 1) => Reason::HostUnreach,
        (3, 2) => Reason::ProtoUnreach,
        (3, 3) => Reason::PortUnreach,
        (3, 9) => Reason::NetProhibited,
        (3, 10) => Reason::HostProhibited,
        (3, 13) => Reason::AdminProhibited,
        (11, _) => Reason::TimeExceeded,
        _ => Reason::DestUnreach,
    }
}

/// `icmpv6_to_reason()`.
pub fn icmp6_reason(icmp_type: u8, code: u8) -> Reason {
    match (icmp_type, code) {
        (1, 0) => Reason::NoRoute,
        (1, 1) | (1, 5) => Reason::AdminProhibited,
        (1, 2) => Reason::BeyondScope,
        (1, 3) => Reason::HostUnreach,
        (1, 4) => Reason::PortUnreach,
        (1, 6) => Reason::RejectRoute,
        (3, _) => Reason::TimeExceeded,
        _ => Reason::DestUnreach,
    }
}

/// The state of a port that never answered, after the last retransmission.
pub fn silent(kind: ScanKind) -> (PortState, Reason) {
    match kind {
        ScanKind::Udp => (PortState::OpenFiltered, Reason::NoResponse),
        ScanKind::Syn | ScanKind::Connect | ScanKind::Ack => {
            (PortState::Filtered, Reason::NoResponse)
        }
    }
}

/// Combines a port's current state with a newly classified one, exactly as
/// `ultrascan_port_pspec_update()` does. `old = None` is nmap's `PORT_TESTING`.
///
/// nmap's `noresp_open_scan` is true for UDP here: there, silence means "open", so a later
/// answer may override an earlier "open".
pub fn merge(kind: ScanKind, old: Option<PortState>, new: PortState) -> PortState {
    use PortState::*;
    let noresp_open = kind == ScanKind::Udp;
    let Some(old) = old else {
        return new;
    };
    match old {
        Open if new != Open && noresp_open => new,
        Open => Open,
        Closed if new != Closed && !noresp_open && new != Filtered => new,
        Closed => Closed,
        Filtered if new != Filtered && (!noresp_open || new != Open) => new,
        Filtered => Filtered,
        Unfiltered if matches!(new, Open | Closed) => new,
        Unfiltered => Unfiltered,
        OpenFiltered => new,
        // Never produced by these scan kinds; take the new information.
        ClosedFiltered => new,
    }
}

/// Whether a reply classified as `state` counts for congestion control. nmap ignores
/// "filtered" answers to retransmissions when adjusting timing: ICMP errors are often rate
/// limited or come from routers (`ultrascan_port_probe_update()`).
pub fn counts_for_timing(kind: ScanKind, state: PortState, tryno: u8) -> bool {
    !(state == PortState::Filtered && kind != ScanKind::Udp && tryno > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use PortState::*;
    use ScanKind::*;

    fn icmp4(t: u8, c: u8) -> Reply {
        Reply::Icmp4 {
            icmp_type: t,
            code: c,
            from_target: true,
        }
    }

    #[test]
    fn syn_scan_tcp_replies() {
        // scan_engine_raw.cc get_pcap_result(): SYN|ACK → open, RST → closed, SYN → open.
        let synack = Reply::Tcp {
            flags: tcp_flags::SYN | tcp_flags::ACK,
        };
        let rst = Reply::Tcp {
            flags: tcp_flags::RST | tcp_flags::ACK,
        };
        assert_eq!(classify(Syn, synack), Some((Open, Reason::SynAck)));
        assert_eq!(classify(Syn, rst), Some((Closed, Reason::Reset)));
        assert_eq!(
            classify(
                Syn,
                Reply::Tcp {
                    flags: tcp_flags::SYN
                }
            ),
            Some((Open, Reason::Syn))
        );
        assert_eq!(
            classify(
                Syn,
                Reply::Tcp {
                    flags: tcp_flags::ACK
                }
            ),
            None
        );
    }

    #[test]
    fn ack_scan_rst_is_unfiltered() {
        let rst = Reply::Tcp {
            flags: tcp_flags::RST,
        };
        assert_eq!(classify(Ack, rst), Some((Unfiltered, Reason::Reset)));
        assert_eq!(classify(Ack, icmp4(3, 13)).map(|x| x.0), Some(Filtered));
    }

    #[test]
    fn icmp_unreachable_codes() {
        // case 0,1,2,9,10,13 → PORT_FILTERED; case 3 → closed only for UDP from the target.
        for (code, reason) in [
            (0, Reason::NetUnreach),
            (1, Reason::HostUnreach),
            (2, Reason::ProtoUnreach),
            (9, Reason::NetProhibited),
            (10, Reason::HostProhibited),
            (13, Reason::AdminProhibited),
        ] {
            for kind in [Syn, Ack, Udp] {
                assert_eq!(classify(kind, icmp4(3, code)), Some((Filtered, reason)));
            }
        }
        assert_eq!(
            classify(Syn, icmp4(3, 3)),
            Some((Filtered, Reason::PortUnreach))
        );
        assert_eq!(
            classify(Udp, icmp4(3, 3)),
            Some((Closed, Reason::PortUnreach))
        );
        let from_router = Reply::Icmp4 {
            icmp_type: 3,
            code: 3,
            from_target: false,
        };
        assert_eq!(
            classify(Udp, from_router),
            Some((Filtered, Reason::PortUnreach))
        );
        // Unexpected code (4, fragmentation needed): nmap ignores it.
        assert_eq!(classify(Syn, icmp4(3, 4)), None);
        // Time exceeded → filtered.
        assert_eq!(
            classify(Udp, icmp4(11, 0)),
            Some((Filtered, Reason::TimeExceeded))
        );
    }

    #[test]
    fn icmpv6_unreachable_codes() {
        let r = |c, ft| Reply::Icmp6 {
            icmp_type: 1,
            code: c,
            from_target: ft,
        };
        assert_eq!(classify(Syn, r(0, true)), Some((Filtered, Reason::NoRoute)));
        assert_eq!(
            classify(Syn, r(1, true)),
            Some((Filtered, Reason::AdminProhibited))
        );
        assert_eq!(
            classify(Syn, r(3, true)),
            Some((Filtered, Reason::HostUnreach))
        );
        assert_eq!(
            classify(Syn, r(4, true)),
            Some((Filtered, Reason::PortUnreach))
        );
        assert_eq!(
            classify(Udp, r(4, true)),
            Some((Closed, Reason::PortUnreach))
        );
        assert_eq!(
            classify(Udp, r(4, false)),
            Some((Filtered, Reason::PortUnreach))
        );
        assert_eq!(
            classify(Syn, r(6, true)),
            Some((Filtered, Reason::RejectRoute))
        );
    }

    #[test]
    fn udp_reply_is_open() {
        assert_eq!(classify(Udp, Reply::Udp), Some((Open, Reason::UdpResponse)));
        assert_eq!(silent(Udp), (OpenFiltered, Reason::NoResponse));
        assert_eq!(silent(Syn), (Filtered, Reason::NoResponse));
    }

    #[test]
    fn connect_errnos() {
        // scan_engine_connect.cc handleConnectResult().
        assert_eq!(classify_errno(0), Some((Open, Reason::SynAck)));
        assert_eq!(
            classify_errno(libc::ECONNREFUSED),
            Some((Closed, Reason::ConnRefused))
        );
        assert_eq!(
            classify_errno(libc::EHOSTUNREACH),
            Some((Filtered, Reason::HostUnreach))
        );
        assert_eq!(
            classify_errno(libc::ENETUNREACH),
            Some((Filtered, Reason::NetUnreach))
        );
        assert_eq!(
            classify_errno(libc::EACCES),
            Some((Filtered, Reason::AdminProhibited))
        );
        assert_eq!(
            classify_errno(libc::ETIMEDOUT),
            Some((Filtered, Reason::NoResponse))
        );
    }

    #[test]
    fn conflicting_replies_follow_ultrascan_port_pspec_update() {
        // TCP: open wins over anything later.
        assert_eq!(merge(Syn, Some(Open), Closed), Open);
        assert_eq!(merge(Syn, Some(Open), Filtered), Open);
        // TCP: closed is replaced by open, not by filtered.
        assert_eq!(merge(Syn, Some(Closed), Open), Open);
        assert_eq!(merge(Syn, Some(Closed), Filtered), Closed);
        // TCP: filtered (ICMP) is replaced by a later RST or SYN/ACK.
        assert_eq!(merge(Syn, Some(Filtered), Closed), Closed);
        assert_eq!(merge(Syn, Some(Filtered), Open), Open);
        // ACK: unfiltered sticks against filtered.
        assert_eq!(merge(Ack, Some(Unfiltered), Filtered), Unfiltered);
        assert_eq!(merge(Ack, Some(Filtered), Unfiltered), Unfiltered);
        // UDP (noresp_open_scan): open is replaced; filtered is not replaced by open.
        assert_eq!(merge(Udp, Some(Open), Closed), Closed);
        assert_eq!(merge(Udp, Some(Filtered), Open), Filtered);
        assert_eq!(merge(Udp, Some(Filtered), Closed), Closed);
        assert_eq!(merge(Udp, Some(Closed), Open), Closed);
        assert_eq!(merge(Udp, Some(OpenFiltered), Open), Open);
        assert_eq!(merge(Udp, None, Closed), Closed);
    }

    #[test]
    fn icmp_filtered_retransmissions_do_not_drive_timing() {
        assert!(!counts_for_timing(Syn, Filtered, 1));
        assert!(counts_for_timing(Syn, Filtered, 0));
        assert!(counts_for_timing(Syn, Closed, 1));
    }
}
