//! ACK scan (`-sA`): send a bare ACK; a RST back means no stateless filter is in the way
//! (unfiltered), silence or an ICMP error means filtered. The RST carries our acknowledgement
//! number as its sequence number (RFC 793), which is where the probe's identity sits.

use std::net::IpAddr;

use super::{Identity, Matched};
use crate::classify::{Reply, tcp_flags};
use crate::packet::{self, Incoming, ProbeFields};

pub(crate) fn build(
    id: &Identity,
    buf: &mut [u8],
    src: IpAddr,
    dst: IpAddr,
    dport: u16,
    tryno: u8,
) -> usize {
    let v = id.cookie(dst, dport) | u32::from(tryno);
    packet::build_tcp(
        buf,
        &ProbeFields {
            src,
            dst,
            sport: id.base_sport,
            dport,
            seq: v,
            ack: v,
            flags: tcp_flags::ACK,
        },
    )
}

pub(crate) fn interpret(
    id: &Identity,
    pkt: &Incoming,
    is_source: &impl Fn(IpAddr) -> bool,
) -> Option<Matched> {
    let Incoming::Tcp {
        src,
        dst,
        sport,
        dport,
        seq,
        flags,
        ..
    } = *pkt
    else {
        return None;
    };
    if dport != id.base_sport || !is_source(dst) || flags & tcp_flags::RST == 0 {
        return None;
    }
    let tryno = id.check(src, sport, seq)?;
    Some(Matched {
        target: src,
        port: sport,
        tryno,
        reply: Reply::Tcp { flags },
    })
}
