//! Packet formats: building probe packets (with `pnet`'s packet types and checksums) and
//! decoding what the receive socket delivers (IPv4 or IPv6 packets, link header already
//! stripped) into the few fields the probes need.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use pnet::packet::ipv4::{self, MutableIpv4Packet};
use pnet::packet::tcp::{self, MutableTcpPacket, TcpOption};
use pnet::packet::udp::{self, MutableUdpPacket};

/// IP protocol numbers used here.
pub(crate) const PROTO_TCP: u8 = 6;
pub(crate) const PROTO_UDP: u8 = 17;
pub(crate) const PROTO_ICMP: u8 = 1;
pub(crate) const PROTO_ICMPV6: u8 = 58;

/// The transport header of a probe's packet that a reply or an ICMP error lets us see again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Quoted {
    /// Our source address as the target saw it.
    pub src: IpAddr,
    /// The target address.
    pub dst: IpAddr,
    /// 6 (TCP) or 17 (UDP).
    pub proto: u8,
    /// Our source port.
    pub sport: u16,
    /// The probed port.
    pub dport: u16,
    /// TCP sequence number (0 for UDP).
    pub seq: u32,
}

/// A decoded incoming packet that could answer a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// A TCP segment.
    Tcp {
        src: IpAddr,
        dst: IpAddr,
        sport: u16,
        dport: u16,
        seq: u32,
        ack: u32,
        flags: u8,
    },
    /// A UDP datagram.
    Udp {
        src: IpAddr,
        dst: IpAddr,
        sport: u16,
        dport: u16,
    },
    /// An ICMP or ICMPv6 error quoting one of our packets.
    Icmp {
        /// Who sent the ICMP message.
        from: IpAddr,
        v6: bool,
        icmp_type: u8,
        code: u8,
        quoted: Quoted,
    },
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
        *b.get(at + 2)?,
        *b.get(at + 3)?,
    ]))
}

/// Splits an IP packet into (src, dst, protocol, payload). Payload is bounded by the header's
/// length field and by the bytes present (ICMP quotes are truncated).
fn ip_split(b: &[u8]) -> Option<(IpAddr, IpAddr, u8, &[u8])> {
    match b.first()? >> 4 {
        4 => {
            let ihl = usize::from(b[0] & 0x0f) * 4;
            if ihl < 20 || b.len() < ihl {
                return None;
            }
            let total = usize::from(be16(b, 2)?).min(b.len()).max(ihl);
            let src = Ipv4Addr::new(b[12], b[13], b[14], b[15]);
            let dst = Ipv4Addr::new(b[16], b[17], b[18], b[19]);
            Some((src.into(), dst.into(), b[9], &b[ihl..total]))
        }
        6 => {
            if b.len() < 40 {
                return None;
            }
            let plen = usize::from(be16(b, 4)?);
            let end = (40 + plen).min(b.len());
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.copy_from_slice(&b[8..24]);
            d.copy_from_slice(&b[24..40]);
            // Extension headers are not followed: probes never carry them and replies
            // from the targets we care about do not either.
            Some((
                Ipv6Addr::from(s).into(),
                Ipv6Addr::from(d).into(),
                b[6],
                &b[40..end],
            ))
        }
        _ => None,
    }
}

/// Decodes an IPv4 or IPv6 packet. Returns `None` for anything that cannot answer a probe.
pub(crate) fn decode(b: &[u8]) -> Option<Incoming> {
    let (src, dst, proto, p) = ip_split(b)?;
    match proto {
        PROTO_TCP => Some(Incoming::Tcp {
            src,
            dst,
            sport: be16(p, 0)?,
            dport: be16(p, 2)?,
            seq: be32(p, 4)?,
            ack: be32(p, 8)?,
            flags: *p.get(13)?,
        }),
        PROTO_UDP => Some(Incoming::Udp {
            src,
            dst,
            sport: be16(p, 0)?,
            dport: be16(p, 2)?,
        }),
        PROTO_ICMP | PROTO_ICMPV6 => {
            let v6 = proto == PROTO_ICMPV6;
            let icmp_type = *p.first()?;
            let code = *p.get(1)?;
            let is_error = if v6 {
                matches!(icmp_type, 1 | 3 | 4)
            } else {
                matches!(icmp_type, 3 | 11)
            };
            if !is_error {
                return None;
            }
            // 4 bytes type/code/checksum + 4 bytes unused/MTU/pointer, then the quote.
            let (qsrc, qdst, qproto, qp) = ip_split(p.get(8..)?)?;
            if qp.len() < 8 || !matches!(qproto, PROTO_TCP | PROTO_UDP) {
                return None;
            }
            Some(Incoming::Icmp {
                from: src,
                v6,
                icmp_type,
                code,
                quoted: Quoted {
                    src: qsrc,
                    dst: qdst,
                    proto: qproto,
                    sport: be16(qp, 0)?,
                    dport: be16(qp, 2)?,
                    seq: if qproto == PROTO_TCP { be32(qp, 4)? } else { 0 },
                },
            })
        }
        _ => None,
    }
}

/// What one probe packet carries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProbeFields {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
}

/// Length of an IPv4 header as we build it.
pub(crate) const IP4_LEN: usize = 20;
/// TCP header with one MSS option, like nmap's probes.
const TCP_LEN: usize = 24;
const UDP_LEN: usize = 8;

/// Writes an IPv4 header for `payload_len` bytes of `proto` into `buf[..20]`.
pub(crate) fn ipv4_header(
    buf: &mut [u8],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    payload_len: usize,
    id: u16,
) {
    if let Some(mut ip) = MutableIpv4Packet::new(&mut buf[..IP4_LEN]) {
        ip.set_version(4);
        ip.set_header_length(5);
        ip.set_total_length(u16::try_from(IP4_LEN + payload_len).unwrap_or(u16::MAX));
        ip.set_identification(id);
        ip.set_ttl(64);
        ip.set_next_level_protocol(pnet::packet::ip::IpNextHeaderProtocol(proto));
        ip.set_source(src);
        ip.set_destination(dst);
        ip.set_checksum(0);
        let c = ipv4::checksum(&ip.to_immutable());
        ip.set_checksum(c);
    }
}

/// Builds a TCP probe. For IPv4 the result includes the IP header (sent with IP_HDRINCL);
/// for IPv6 it is the TCP header only (the kernel adds the IPv6 header). Returns the length.
pub(crate) fn build_tcp(buf: &mut [u8], f: &ProbeFields) -> usize {
    let off = if f.dst.is_ipv4() { IP4_LEN } else { 0 };
    let end = off + TCP_LEN;
    if buf.len() < end {
        return 0;
    }
    buf[..end].fill(0);
    {
        let Some(mut t) = MutableTcpPacket::new(&mut buf[off..end]) else {
            return 0;
        };
        t.set_source(f.sport);
        t.set_destination(f.dport);
        t.set_sequence(f.seq);
        t.set_acknowledgement(f.ack);
        t.set_data_offset(6);
        t.set_flags(u8::into(f.flags));
        t.set_window(1024);
        t.set_options(&[TcpOption::mss(1460)]);
        let c = match (f.src, f.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => tcp::ipv4_checksum(&t.to_immutable(), &s, &d),
            (IpAddr::V6(s), IpAddr::V6(d)) => tcp::ipv6_checksum(&t.to_immutable(), &s, &d),
            _ => 0,
        };
        t.set_checksum(c);
    }
    if let (IpAddr::V4(s), IpAddr::V4(d)) = (f.src, f.dst) {
        ipv4_header(buf, s, d, PROTO_TCP, TCP_LEN, (f.seq >> 16) as u16);
    }
    end
}

/// Builds a UDP probe carrying `payload` (IPv4: with IP header; IPv6: UDP header and payload
/// only).
pub(crate) fn build_udp(buf: &mut [u8], f: &ProbeFields, payload: &[u8]) -> usize {
    let off = if f.dst.is_ipv4() { IP4_LEN } else { 0 };
    let ulen = UDP_LEN + payload.len();
    let end = off + ulen;
    if buf.len() < end {
        return 0;
    }
    buf[..off + UDP_LEN].fill(0);
    buf[off + UDP_LEN..end].copy_from_slice(payload);
    {
        let Some(mut u) = MutableUdpPacket::new(&mut buf[off..end]) else {
            return 0;
        };
        u.set_source(f.sport);
        u.set_destination(f.dport);
        u.set_length(u16::try_from(ulen).unwrap_or(u16::MAX));
        let c = match (f.src, f.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => udp::ipv4_checksum(&u.to_immutable(), &s, &d),
            (IpAddr::V6(s), IpAddr::V6(d)) => udp::ipv6_checksum(&u.to_immutable(), &s, &d),
            _ => 0,
        };
        u.set_checksum(c);
    }
    if let (IpAddr::V4(s), IpAddr::V4(d)) = (f.src, f.dst) {
        ipv4_header(buf, s, d, PROTO_UDP, ulen, f.dport ^ f.sport);
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_probe_roundtrips_through_decode() {
        let f = ProbeFields {
            src: "10.213.1.2".parse().expect("ip"),
            dst: "10.213.0.11".parse().expect("ip"),
            sport: 40000,
            dport: 80,
            seq: 0xdead_beef,
            ack: 0,
            flags: 0x02,
        };
        let mut buf = [0u8; 64];
        let n = build_tcp(&mut buf, &f);
        assert_eq!(n, 44);
        match decode(&buf[..n]) {
            Some(Incoming::Tcp {
                src,
                dst,
                sport,
                dport,
                seq,
                flags,
                ..
            }) => {
                assert_eq!((src, dst), (f.src, f.dst));
                assert_eq!((sport, dport, seq, flags), (40000, 80, 0xdead_beef, 0x02));
            }
            other => panic!("{other:?}"),
        }
        // The same packet quoted inside an ICMP port unreachable.
        let mut icmp = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 10, 213, 0, 11, 10, 213, 1, 2,
        ];
        icmp.extend_from_slice(&[3, 3, 0, 0, 0, 0, 0, 0]);
        icmp.extend_from_slice(&buf[..IP4_LEN + 8]);
        let total = icmp.len() as u16;
        icmp[2..4].copy_from_slice(&total.to_be_bytes());
        match decode(&icmp) {
            Some(Incoming::Icmp {
                icmp_type,
                code,
                quoted,
                ..
            }) => {
                assert_eq!((icmp_type, code), (3, 3));
                assert_eq!(quoted.dport, 80);
                assert_eq!(quoted.seq, 0xdead_beef);
                assert_eq!(quoted.dst, f.dst);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn udp_probe_v6_is_header_only() {
        let f = ProbeFields {
            src: "fd00:213::1:2".parse().expect("ip"),
            dst: "fd00:213::11".parse().expect("ip"),
            sport: 40001,
            dport: 53,
            seq: 0,
            ack: 0,
            flags: 0,
        };
        let mut buf = [0u8; 128];
        assert_eq!(build_udp(&mut buf, &f, &[]), 8);
        assert_ne!(&buf[6..8], &[0, 0], "checksum set");
    }
}
