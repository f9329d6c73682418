//! Probe types, one module per kind behind an enum (the shape of mini-redis's commands).
//!
//! Every raw probe encodes its identity in the packet so a reply is matched without looking up
//! a table of outstanding probes:
//!
//! * TCP probes (SYN, ACK) use one source port per scan; the sequence number is a keyed hash of
//!   (target address, port) whose low 4 bits carry the try number. A SYN/ACK or RST to a SYN
//!   acknowledges `seq + 1`, a RST to an ACK carries our acknowledgement number as its
//!   sequence number, and an ICMP error quotes our sequence number — each gives back the try
//!   number and proves the packet answers our probe.
//! * UDP probes carry the try number in the source port (`base + tryno`).
//!
//! Connect probes are ordinary sockets; see [`connect`].

pub(crate) mod ack;
pub(crate) mod connect;
pub(crate) mod syn;
pub(crate) mod udp;

use std::net::IpAddr;

use crate::classify::Reply;
use crate::packet::Incoming;

/// Highest try number that fits the encodings (4 bits).
pub(crate) const MAX_TRYNO: u8 = 15;

/// Try numbers from here up are confirmation rounds (`confirm`), not retransmissions: the
/// rounds alternate between 14 and 15 so a late answer to one round is never taken for an
/// answer to the next. Retransmissions stop below (`Timing::max_retries` is at most 13).
pub(crate) const CONFIRM_TRYNO: u8 = 14;

/// Per-scan secret and source port that identify our probes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Identity {
    pub secret: u64,
    pub base_sport: u16,
}

impl Identity {
    /// The keyed cookie of (target, port), low 4 bits cleared for the try number.
    pub fn cookie(&self, dst: IpAddr, dport: u16) -> u32 {
        let a: u128 = match dst {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a),
        };
        let mut x = self.secret ^ (a as u64) ^ ((a >> 64) as u64).rotate_left(17);
        x ^= u64::from(dport) << 32 | u64::from(dport);
        // splitmix64 finaliser
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        (x as u32) & !0xF
    }

    /// `Some(tryno)` when `value` is the cookie of (dst, dport) with a try number.
    pub fn check(&self, dst: IpAddr, dport: u16, value: u32) -> Option<u8> {
        (value & !0xF == self.cookie(dst, dport)).then_some((value & 0xF) as u8)
    }
}

/// A reply matched to a probe: which target, which port, which try, and what it said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Matched {
    pub target: IpAddr,
    pub port: u16,
    pub tryno: u8,
    pub reply: Reply,
}

/// The raw-socket probe kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RawProbe {
    Syn,
    Ack,
    Udp,
}

impl RawProbe {
    /// Writes the probe for (src → dst:dport, tryno) into `buf`; returns its length.
    pub fn build(
        self,
        id: &Identity,
        buf: &mut [u8],
        src: IpAddr,
        dst: IpAddr,
        dport: u16,
        tryno: u8,
    ) -> usize {
        match self {
            RawProbe::Syn => syn::build(id, buf, src, dst, dport, tryno),
            RawProbe::Ack => ack::build(id, buf, src, dst, dport, tryno),
            RawProbe::Udp => udp::build(id, buf, src, dst, dport, tryno),
        }
    }

    /// Matches an incoming packet to one of our probes. `is_source` tells whether an address
    /// is one of ours (replies must be addressed to us).
    pub fn interpret(
        self,
        id: &Identity,
        pkt: &Incoming,
        is_source: impl Fn(IpAddr) -> bool,
    ) -> Option<Matched> {
        match *pkt {
            Incoming::Icmp {
                from,
                v6,
                icmp_type,
                code,
                quoted,
            } => {
                if !is_source(quoted.src) {
                    return None;
                }
                let tryno = match self {
                    RawProbe::Syn | RawProbe::Ack => {
                        if quoted.proto != crate::packet::PROTO_TCP || quoted.sport != id.base_sport
                        {
                            return None;
                        }
                        id.check(quoted.dst, quoted.dport, quoted.seq)?
                    }
                    RawProbe::Udp => {
                        if quoted.proto != crate::packet::PROTO_UDP {
                            return None;
                        }
                        udp::tryno_of(id, quoted.sport)?
                    }
                };
                let reply = Reply::icmp(v6, icmp_type, code, from == quoted.dst);
                Some(Matched {
                    target: quoted.dst,
                    port: quoted.dport,
                    tryno,
                    reply,
                })
            }
            _ => match self {
                RawProbe::Syn => syn::interpret(id, pkt, &is_source),
                RawProbe::Ack => ack::interpret(id, pkt, &is_source),
                RawProbe::Udp => udp::interpret(id, pkt, &is_source),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_carries_tryno_and_rejects_others() {
        let id = Identity {
            secret: 42,
            base_sport: 40000,
        };
        let dst: IpAddr = "10.213.0.11".parse().expect("ip");
        let c = id.cookie(dst, 80);
        assert_eq!(c & 0xF, 0);
        assert_eq!(id.check(dst, 80, c | 3), Some(3));
        assert_eq!(id.check(dst, 81, c | 3), None);
        assert_eq!(id.check("10.213.0.12".parse().expect("ip"), 80, c), None);
    }
}
