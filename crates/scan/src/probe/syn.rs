//! SYN scan (`-sS`): send SYN, SYN/ACK means open, RST means closed. The kernel of the
//! scanning host answers the target's SYN/ACK with a RST (no socket owns our source port);
//! that RST travels scanner → target and never reaches our receive path as a reply, so it
//! cannot disturb classification.

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
    packet::build_tcp(
        buf,
        &ProbeFields {
            src,
            dst,
            sport: id.base_sport,
            dport,
            seq: id.cookie(dst, dport) | u32::from(tryno),
            ack: 0,
            flags: tcp_flags::SYN,
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
        ack,
        flags,
        ..
    } = *pkt
    else {
        return None;
    };
    if dport != id.base_sport || !is_source(dst) {
        return None;
    }
    // SYN/ACK and RST|ACK acknowledge seq + 1. A bare SYN (split handshake) carries no ack;
    // nmap accepts it on ports alone, and so do we with try 0.
    let tryno = if flags & tcp_flags::ACK != 0 {
        id.check(src, sport, ack.wrapping_sub(1))?
    } else if flags & tcp_flags::SYN != 0 {
        0
    } else {
        return None;
    };
    Some(Matched {
        target: src,
        port: sport,
        tryno,
        reply: Reply::Tcp { flags },
    })
}
