//! The checks the fuzz targets (`fuzz/`) and the corpus replay test run on arbitrary bytes.
//! Not part of the API: built for tests and with the `fuzzing` feature only. Each function
//! panics when an invariant fails, which is how a fuzzer reports it; on any input that keeps
//! the invariants it returns normally.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::classify::{Reply, tcp_flags};
use crate::packet::{
    IP4_LEN, Incoming, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, ProbeFields, build_tcp,
    build_udp, decode, ipv4_header,
};
use crate::ports::PortList;
use crate::probe::{Identity, MAX_TRYNO, Matched, RawProbe};

/// The checks of the `port_list` target on `data` as text (nmap's `-p` syntax): a parsed list
/// is sorted and unique, and its nmap form parses back to the same list.
pub fn port_list(data: &[u8]) {
    let Ok(spec) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(list) = PortList::parse(spec) else {
        return;
    };
    assert!(!list.is_empty(), "{spec:?} parsed to an empty list");
    assert!(
        list.as_slice().windows(2).all(|w| w[0] < w[1]),
        "{spec:?}: ports not sorted and unique"
    );
    let compact = list.to_nmap_string();
    match PortList::parse(&compact) {
        Ok(again) => assert_eq!(again, list, "{spec:?} -> {compact:?} parses differently"),
        Err(e) => panic!("{spec:?} -> {compact:?} does not parse: {e}"),
    }
}

/// The receive path on fuzzer bytes, for the `packet` target. The first byte chooses the mode:
///
/// * even: the rest is a packet as the receive socket delivers it, run through `decode`, every
///   probe kind's matcher and [`classify`](crate::classify::classify) (no panic, try numbers in
///   range).
/// * odd: the rest describes a probe (addresses, port, try number, reply flags, ICMP type);
///   the probe is built, decoded, answered by a reply built from it and by an ICMP error
///   quoting it, and each must decode and match back to the probe's target, port and try.
pub fn packet(data: &[u8]) {
    match data.split_first() {
        Some((mode, rest)) if mode % 2 == 0 => raw(rest),
        Some((_, rest)) => round_trip(rest),
        None => {}
    }
}

const ID: Identity = Identity {
    secret: 0x5eed_f00d_cafe_d00d,
    base_sport: 40000,
};

const KINDS: [crate::ScanKind; 3] = [
    crate::ScanKind::Syn,
    crate::ScanKind::Ack,
    crate::ScanKind::Udp,
];

fn raw(data: &[u8]) {
    let Some(pkt) = decode(data) else { return };
    for probe in [RawProbe::Syn, RawProbe::Ack, RawProbe::Udp] {
        if let Some(m) = probe.interpret(&ID, &pkt, |_| true) {
            assert!(m.tryno <= MAX_TRYNO, "try number {} out of range", m.tryno);
            for kind in KINDS {
                let _ = crate::classify::classify(kind, m.reply);
            }
        }
    }
}

/// An IPv6 header in front of `payload` (the kernel adds it to what we send).
fn ip6_wrap(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(
        &u16::try_from(payload.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes(),
    );
    p.extend_from_slice(&[proto, 64]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(payload);
    p
}

/// The packet as it arrives: IPv4 packets are built whole, IPv6 ones get their header here.
fn as_received(buf: &[u8], src: IpAddr, dst: IpAddr, proto: u8) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V6(s), IpAddr::V6(d)) => ip6_wrap(s, d, proto, buf),
        _ => buf.to_vec(),
    }
}

/// The probe the round-trip mode's bytes describe.
struct Case {
    v6: bool,
    probe: RawProbe,
    tryno: u8,
    dport: u16,
    reply_flags: u8,
    icmp_type: u8,
    code: u8,
    from_target: bool,
    src: IpAddr,
    dst: IpAddr,
    router: IpAddr,
}

impl Case {
    fn new(data: &[u8]) -> Self {
        let mut b = [0u8; 48];
        let n = data.len().min(b.len());
        b[..n].copy_from_slice(&data[..n]);
        let v6 = b[0] & 1 == 1;
        let (src, dst, router): (IpAddr, IpAddr, IpAddr) = if v6 {
            let a = |at: usize| {
                let mut o = [0u8; 16];
                o.copy_from_slice(&b[at..at + 16]);
                IpAddr::V6(Ipv6Addr::from(o))
            };
            (a(9), a(25), IpAddr::V6(Ipv6Addr::LOCALHOST))
        } else {
            let a = |at: usize| IpAddr::V4(Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3]));
            (a(9), a(13), a(17))
        };
        Case {
            v6,
            probe: [RawProbe::Syn, RawProbe::Ack, RawProbe::Udp][usize::from(b[1] % 3)],
            tryno: b[2] & 0x0f,
            dport: u16::from_be_bytes([b[3], b[4]]),
            reply_flags: b[5],
            icmp_type: b[6],
            code: b[7],
            from_target: b[8] & 1 == 1,
            src,
            dst,
            router,
        }
    }

    fn proto(&self) -> u8 {
        if self.probe == RawProbe::Udp {
            PROTO_UDP
        } else {
            PROTO_TCP
        }
    }

    fn expect(&self, reply: Reply) -> Matched {
        Matched {
            target: self.dst,
            port: self.dport,
            tryno: self.tryno,
            reply,
        }
    }
}

/// What the round-trip mode needs of the probe as sent: the packet, source port, sequence and
/// acknowledgement numbers.
struct Sent {
    packet: Vec<u8>,
    sport: u16,
    seq: u32,
    ack: u32,
}

fn round_trip(data: &[u8]) {
    let case = Case::new(data);
    let sent = build_probe(&case);
    answer_matches(&case, &sent);
    if let Some(reply) = icmp_error_matches(&case, &sent) {
        for kind in KINDS {
            let _ = crate::classify::classify(kind, reply);
        }
    }
}

/// Builds the probe and decodes it as the target would see it.
fn build_probe(case: &Case) -> Sent {
    let (probe, src, dst, dport) = (case.probe, case.src, case.dst, case.dport);
    let mut buf = [0u8; 128];
    let len = probe.build(&ID, &mut buf, src, dst, dport, case.tryno);
    assert!(len > 0, "probe did not fit");
    let proto = case.proto();
    let packet = as_received(&buf[..len], src, dst, proto);
    let (sport, seq, ack) = match decode(&packet) {
        Some(Incoming::Tcp {
            src: s,
            dst: d,
            sport,
            dport: dp,
            seq,
            ack,
            ..
        }) if proto == PROTO_TCP && (s, d, dp) == (src, dst, dport) => (sport, seq, ack),
        Some(Incoming::Udp {
            src: s,
            dst: d,
            sport,
            dport: dp,
        }) if proto == PROTO_UDP && (s, d, dp) == (src, dst, dport) => (sport, 0, 0),
        other => panic!("probe {probe:?} to {dst}:{dport} decoded as {other:?}"),
    };
    Sent {
        packet,
        sport,
        seq,
        ack,
    }
}

/// The target's answer matches back to the probe.
fn answer_matches(case: &Case, sent: &Sent) {
    let probe = case.probe;
    let answer = ProbeFields {
        src: case.dst,
        dst: case.src,
        sport: case.dport,
        dport: sent.sport,
        seq: if probe == RawProbe::Ack {
            sent.ack
        } else {
            0x1234_5678
        },
        ack: sent.seq.wrapping_add(1),
        flags: match probe {
            RawProbe::Syn => case.reply_flags | tcp_flags::ACK,
            _ => case.reply_flags | tcp_flags::RST,
        },
    };
    let proto = case.proto();
    let mut rbuf = [0u8; 128];
    let rlen = if proto == PROTO_UDP {
        build_udp(&mut rbuf, &answer, &[])
    } else {
        build_tcp(&mut rbuf, &answer)
    };
    let received = as_received(&rbuf[..rlen], case.dst, case.src, proto);
    let pkt = decode(&received).unwrap_or_else(|| panic!("reply to {probe:?} not decoded"));
    let reply = if proto == PROTO_UDP {
        Reply::Udp
    } else {
        Reply::Tcp {
            flags: answer.flags,
        }
    };
    assert_eq!(
        probe.interpret(&ID, &pkt, |a| a == case.src),
        Some(case.expect(reply)),
        "reply to {probe:?} not matched: {pkt:?}"
    );
}

/// An ICMP error quoting the probe (its IP header and 8 bytes of transport header) matches
/// back to it; returns the reply it was read as (`None` for mixed address families).
fn icmp_error_matches(case: &Case, sent: &Sent) -> Option<Reply> {
    let (probe, v6, code, dst) = (case.probe, case.v6, case.code, case.dst);
    let from = if case.from_target { dst } else { case.router };
    let quote_len = if v6 { 40 + 8 } else { IP4_LEN + 8 };
    let quote = &sent.packet[..quote_len.min(sent.packet.len())];
    let icmp_type = if v6 {
        [1, 3, 4][usize::from(case.icmp_type % 3)]
    } else {
        [3, 11][usize::from(case.icmp_type % 2)]
    };
    let mut icmp = vec![icmp_type, code, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(quote);
    let error = match (from, case.src) {
        (IpAddr::V6(f), IpAddr::V6(s)) => ip6_wrap(f, s, PROTO_ICMPV6, &icmp),
        (IpAddr::V4(f), IpAddr::V4(s)) => {
            let mut p = vec![0u8; IP4_LEN];
            ipv4_header(&mut p, f, s, PROTO_ICMP, icmp.len(), 1);
            p.extend_from_slice(&icmp);
            p
        }
        _ => return None,
    };
    let pkt = decode(&error).unwrap_or_else(|| panic!("ICMP error for {probe:?} not decoded"));
    let from_target = from == dst;
    let reply = Reply::icmp(v6, icmp_type, code, from_target);
    assert_eq!(
        probe.interpret(&ID, &pkt, |a| a == case.src),
        Some(case.expect(reply)),
        "ICMP error quoting {probe:?} not matched: {pkt:?}"
    );
    Some(reply)
}
