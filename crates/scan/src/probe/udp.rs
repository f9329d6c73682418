//! UDP scan (`-sU`): send an empty datagram; any UDP answer means open, ICMP port-unreachable
//! from the target means closed, other ICMP errors filtered, silence open|filtered. The try
//! number rides in the source port (`base + tryno`).

use std::net::IpAddr;

use super::{Identity, MAX_TRYNO, Matched};
use crate::classify::Reply;
use crate::packet::{self, Incoming, ProbeFields};

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
