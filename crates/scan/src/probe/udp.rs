//! UDP scan (`-sU`): send a datagram; any UDP answer means open, ICMP port-unreachable from
//! the target means closed, other ICMP errors filtered, silence open|filtered. The try number
//! rides in the source port (`base + tryno`).
//!
//! Most ports get an empty datagram, as with nmap. Services that ignore an empty datagram but
//! answer a well-formed request get one (like nmap's `nmap-payloads`, written here from the
//! protocol specifications): DNS (53, a query for the root's NS records), NTP (123, a
//! client-mode request) — so a real DNS or NTP server shows "open" as it does in nmap.

use std::net::IpAddr;

use super::{Identity, MAX_TRYNO, Matched};
use crate::classify::Reply;
use crate::packet::{self, Incoming, ProbeFields};

/// DNS: id 0x7077, RD set, one question: ". IN NS" (RFC 1035).
const DNS_QUERY: [u8; 17] = [
    0x70, 0x77, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00,
    0x01,
];

/// NTP: version 4, mode 3 (client), 48 bytes (RFC 5905).
const NTP_REQUEST: [u8; 48] = {
    let mut p = [0u8; 48];
    p[0] = 0x23;
    p
};

/// The payload sent to `port`.
pub(crate) fn payload(port: u16) -> &'static [u8] {
    match port {
        53 => &DNS_QUERY,
        123 => &NTP_REQUEST,
        _ => &[],
    }
}

pub(crate) fn build(
    id: &Identity,
    buf: &mut [u8],
    src: IpAddr,
    dst: IpAddr,
    dport: u16,
    tryno: u8,
) -> usize {
    packet::build_udp(
        buf,
        &ProbeFields {
            src,
            dst,
            sport: id.base_sport.wrapping_add(u16::from(tryno)),
            dport,
            seq: 0,
            ack: 0,
            flags: 0,
        },
        payload(dport),
    )
}

/// The try number encoded in one of our source ports.
pub(crate) fn tryno_of(id: &Identity, sport: u16) -> Option<u8> {
    let t = sport.wrapping_sub(id.base_sport);
    (t <= u16::from(MAX_TRYNO)).then_some(t as u8)
}

pub(crate) fn interpret(
    id: &Identity,
    pkt: &Incoming,
    is_source: &impl Fn(IpAddr) -> bool,
) -> Option<Matched> {
    let Incoming::Udp {
        src,
        dst,
        sport,
        dport,
    } = *pkt
    else {
        return None;
    };
    if !is_source(dst) {
        return None;
    }
    let tryno = tryno_of(id, dport)?;
    Some(Matched {
        target: src,
        port: sport,
        tryno,
        reply: Reply::Udp,
    })
}
