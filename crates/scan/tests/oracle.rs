//! The correctness matrix with nmap as the oracle: for each scan kind, address family and
//! scanner source address, nmap and portwarden scan the same node from the same namespace and
//! must report the same state on every port. Needs root (skips with a message otherwise).

mod common;

use std::net::IpAddr;

use common::*;
use portwarden_lab::skip_unless_lab;
use portwarden_scan::{ScanConfig, ScanKind};

fn compare(m: &Matrix, kind: ScanKind, v6: bool, src_index: usize, ports: &str, lossy: bool) {
    let scanner = m.scanner();
    let (src, target): (IpAddr, IpAddr) = if v6 {
        (scanner.ipv6[src_index].into(), m.node().v6().into())
    } else {
        (scanner.ipv4[src_index].into(), m.node().v4().into())
    };
    // nmap's connect scan reads ICMP errors only from SO_ERROR. When the ICMP error arrives
    // while connect() still holds the socket lock (usual in a veth lab), Linux records it as a
    // soft error and reports it at the first SYN retransmission, one second later; with -T4's
    // 100 ms timeouts nmap then sometimes gives up first and says "filtered (no-response)" for
    // REJECTed ports. Longer timeouts make nmap's answer deterministic (the errno); we read the
    // socket's error queue (IP_RECVERR) and get the same answer without waiting.
    let extra: &[&str] = if kind == ScanKind::Connect {
        &[
            "--initial-rtt-timeout",
            "1500ms",
            "--min-rtt-timeout",
            "1500ms",
        ]
    } else {
        &[]
    };
    let theirs = nmap(scanner, kind, src, target, ports, extra);
    let report = ours(scanner, kind, src, target, ports, ScanConfig::default());
    let mine = states_of(&report);
    eprintln!(
        "{kind:?} {target} from {src}: {} ports in {:?}, {:?}\n  nmap: {theirs:?}\n  ours: {mine:?}",
        mine.len(),
        report.elapsed,
        report.stats
    );
    let what = format!("{kind:?} {target} from {src}");
    if lossy {
        // Under loss a late answer may change which reply counted last; states must agree.
        assert_same_states(&what, &theirs, &mine);
    } else {
        assert_same_states_and_reasons(&what, &theirs, &mine);
    }
}

fn all_sources(tag: &str, kind: ScanKind, ports: &str) {
    skip_unless_lab!();
    let m = Matrix::new(tag);
    for v6 in [false, true] {
        for src in [0, 1] {
            compare(&m, kind, v6, src, ports, false);
        }
    }
}

#[test]
fn syn_scan_matches_nmap() {
    all_sources("syn", ScanKind::Syn, TCP_PORTS);
}

#[test]
fn ack_scan_matches_nmap() {
    all_sources("ack", ScanKind::Ack, TCP_PORTS);
}

#[test]
fn connect_scan_matches_nmap() {
    all_sources("con", ScanKind::Connect, TCP_PORTS);
}

#[test]
fn udp_scan_matches_nmap() {
    all_sources("udp", ScanKind::Udp, UDP_PORTS);
}

#[test]
fn syn_and_udp_with_five_percent_loss_match_nmap() {
    skip_unless_lab!();
    let m = Matrix::new("loss");
    m.node().add_random_loss(0.05).expect("loss rule");
    for v6 in [false, true] {
        compare(&m, ScanKind::Syn, v6, 0, TCP_PORTS, true);
        compare(&m, ScanKind::Udp, v6, 0, UDP_PORTS, true);
    }
}

#[test]
fn udp_scan_against_icmp_rate_limiting_matches_nmap() {
    // Linux answers closed UDP ports with at most ~1 ICMP error per second per destination
    // after a burst of 6 (net.ipv4.icmp_ratelimit, left at its default here). nmap copes by
    // retrying and boosting its scan delay; so must we. nmap and we probe from different
    // scanner addresses so each gets its own token bucket.
    skip_unless_lab!();
    let lab = portwarden_lab::Lab::builder("udprl")
        .scanner_addresses(2)
        .build()
        .expect("lab");
    let node = lab.node(0);
    let scanner = lab.scanner(0);
    let _echo = node.udp_echo(6000).expect("udp echo");
    let target: IpAddr = node.v4().into();
    let ports = "6000-6009";
    let theirs = nmap(
        scanner,
        ScanKind::Udp,
        scanner.ipv4[0].into(),
        target,
        ports,
        &[],
    );
    let report = ours(
        scanner,
        ScanKind::Udp,
        scanner.ipv4[1].into(),
        target,
        ports,
        ScanConfig::default(),
    );
    let mine = states_of(&report);
    eprintln!(
        "rate-limited UDP: {:?} {:?}\n nmap {theirs:?}\n ours {mine:?}",
        report.elapsed, report.stats
    );
    assert_same_states("UDP under ICMP rate limiting", &theirs, &mine);
}
