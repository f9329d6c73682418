//! Shared helpers for the lab tests: the port matrix on a node (under the kernel's ICMP rate
//! limits or with them lifted, as each test chooses), running the real nmap from the scanner
//! namespace, running our scanner there, and comparing the two.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use portwarden_lab::{Lab, Netns, Nmap, NmapPort, TcpListenerGuard, UdpListenerGuard};
use portwarden_scan::{PortList, ScanConfig, ScanKind, ScanReport, Scanner, TargetPolicy};

/// TCP ports of the matrix and what is behind them.
pub const TCP_OPEN: u16 = 22; // listener, accepted
pub const TCP_CLOSED: u16 = 23; // no listener
pub const TCP_DROP: u16 = 24;
pub const TCP_RESET: u16 = 25; // REJECT --reject-with tcp-reset
pub const TCP_PORT_UNREACH: u16 = 26;
pub const TCP_HOST_UNREACH: u16 = 27;
pub const TCP_ADMIN: u16 = 28;
pub const TCP_NET_UNREACH: u16 = 29;
pub const TCP_SRC_DROP: u16 = 30; // listener; DROP from the scanner's second address only
pub const TCP_SRC_RESET: u16 = 31; // listener; tcp-reset from the scanner's first address only
pub const TCP_PORTS: &str = "22-31";
/// 40 ports behind a plain `-j REJECT` (ICMP port-unreachable, the common hand-written rule):
/// more than the burst a node's ICMP rate limit allows, so under the kernel's limits most of
/// them are answered only when the bucket refills (nmap -sT: closed, conn-refused).
pub const TCP_ICMP_REJECT: (u16, u16) = (2000, 2039);
/// The matrix plus the ICMP-rejected range.
pub const TCP_PORTS_WIDE: &str = "22-31,2000-2039";

pub const UDP_ECHO: u16 = 5000;
pub const UDP_SILENT: u16 = 5001;
pub const UDP_CLOSED: u16 = 5002;
pub const UDP_DROP: u16 = 5003;
pub const UDP_HOST_UNREACH: u16 = 5004;
pub const UDP_ADMIN: u16 = 5005;
pub const UDP_SRC_DROP: u16 = 5006; // echo; DROP from the second address only
pub const UDP_DNS: u16 = 53; // echo; probed with a DNS query payload
pub const UDP_PORTS: &str = "53,5000-5006";
/// 25 more closed ports with nothing behind them (the kernel answers port-unreachable) ...
pub const UDP_KERNEL_CLOSED: (u16, u16) = (5100, 5124);
/// ... and 15 behind `REJECT --reject-with icmp(6)-port-unreachable`: with UDP_CLOSED, 41
/// closed ports, more than the burst a node's ICMP rate limit allows.
pub const UDP_REJECTED: (u16, u16) = (5125, 5139);
/// The matrix plus both closed ranges.
pub const UDP_PORTS_WIDE: &str = "53,5000-5006,5100-5139";

/// Whether the matrix's node keeps the kernel's ICMP rate limits or has them lifted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limits {
    /// What the kernel gives a new namespace (the lab sets nothing): after a burst of about 6,
    /// one ICMP error per second to each peer address (IPv4), a few per second (IPv6).
    Kernel,
    /// `Netns::lift_icmp_rate_limits`: every closed or rejected port answers at once.
    Lifted,
}

/// Source addresses per role: each scan that must start with a full ICMP token bucket at the
/// node (nmap's, ours, one per scan kind...) takes a slot of its own.
pub const SLOTS: usize = 4;

/// A lab with the matrix applied to node 0; listeners live as long as this.
pub struct Matrix {
    pub lab: Lab,
    _tcp: Vec<TcpListenerGuard>,
    _udp: Vec<UdpListenerGuard>,
}

/// The rules of the matrix for one family; `second` are the scanner's addresses in the second
/// role (what the per-source rules single out).
fn rules(ns: &Netns, v6: bool, second: &[String]) {
    let run = |args: &[&str]| {
        if v6 {
            ns.ip6tables(args).expect("ip6tables");
        } else {
            ns.iptables(args).expect("iptables");
        }
    };
    let (port_unreach, host_unreach, admin, net_unreach) = if v6 {
        (
            "icmp6-port-unreachable",
            "icmp6-addr-unreachable",
            "icmp6-adm-prohibited",
            "icmp6-no-route",
        )
    } else {
        (
            "icmp-port-unreachable",
            "icmp-host-unreachable",
            "icmp-admin-prohibited",
            "icmp-net-unreachable",
        )
    };
    let s = |p: u16| p.to_string();
    run(&[
        "-A",
        "INPUT",
        "-p",
        "tcp",
        "--dport",
        &s(TCP_DROP),
        "-j",
        "DROP",
    ]);
    run(&[
        "-A",
        "INPUT",
        "-p",
        "tcp",
        "--dport",
        &s(TCP_RESET),
        "-j",
        "REJECT",
        "--reject-with",
        "tcp-reset",
    ]);
    for (p, with) in [
        (TCP_PORT_UNREACH, port_unreach),
        (TCP_HOST_UNREACH, host_unreach),
        (TCP_ADMIN, admin),
        (TCP_NET_UNREACH, net_unreach),
    ] {
        run(&[
            "-A",
            "INPUT",
            "-p",
            "tcp",
            "--dport",
            &s(p),
            "-j",
            "REJECT",
            "--reject-with",
            with,
        ]);
    }
    let range = |(lo, hi): (u16, u16)| format!("{lo}:{hi}");
    // Plain REJECT: ICMP (or ICMPv6) port-unreachable.
    run(&[
        "-A",
        "INPUT",
        "-p",
        "tcp",
        "--dport",
        &range(TCP_ICMP_REJECT),
        "-j",
        "REJECT",
    ]);
    for scanner2 in second {
        run(&[
            "-A",
            "INPUT",
            "-p",
            "tcp",
            "-s",
            scanner2,
            "--dport",
            &s(TCP_SRC_DROP),
            "-j",
            "DROP",
        ]);
        // Accepted here, so the reset below is for the first role's addresses only.
        run(&[
            "-A",
            "INPUT",
            "-p",
            "tcp",
            "-s",
            scanner2,
            "--dport",
            &s(TCP_SRC_RESET),
            "-j",
            "ACCEPT",
        ]);
    }
    run(&[
        "-A",
        "INPUT",
        "-p",
        "tcp",
        "--dport",
        &s(TCP_SRC_RESET),
        "-j",
        "REJECT",
        "--reject-with",
        "tcp-reset",
    ]);
    run(&[
        "-A",
        "INPUT",
        "-p",
        "udp",
        "--dport",
        &s(UDP_DROP),
        "-j",
        "DROP",
    ]);
    run(&[
        "-A",
        "INPUT",
        "-p",
        "udp",
        "--dport",
        &s(UDP_HOST_UNREACH),
        "-j",
        "REJECT",
        "--reject-with",
        host_unreach,
    ]);
    run(&[
        "-A",
        "INPUT",
        "-p",
        "udp",
        "--dport",
        &s(UDP_ADMIN),
        "-j",
        "REJECT",
        "--reject-with",
        admin,
    ]);
    run(&[
        "-A",
        "INPUT",
        "-p",
        "udp",
        "--dport",
        &range(UDP_REJECTED),
        "-j",
        "REJECT",
        "--reject-with",
        port_unreach,
    ]);
    for scanner2 in second {
        run(&[
            "-A",
            "INPUT",
            "-p",
            "udp",
            "-s",
            scanner2,
            "--dport",
            &s(UDP_SRC_DROP),
            "-j",
            "DROP",
        ]);
    }
}

impl Matrix {
    /// The matrix on node 0 of a new lab whose scanner has `2 * SLOTS` addresses per family
    /// (see [`Matrix::source`]); `limits` says whether the node keeps the kernel's ICMP rate
    /// limits.
    pub fn new(tag: &str, limits: Limits) -> Matrix {
        let lab = Lab::builder(tag)
            .scanner_addresses(2 * SLOTS)
            .build()
            .expect("lab");
        let node = lab.node(0).clone();
        let scanner = lab.scanner(0).clone();
        if limits == Limits::Lifted {
            node.lift_icmp_rate_limits()
                .expect("lifting the ICMP rate limits");
        }
        let second =
            |all: Vec<String>| -> Vec<String> { all.into_iter().skip(1).step_by(2).collect() };
        rules(
            &node,
            false,
            &second(scanner.ipv4.iter().map(Ipv4Addr::to_string).collect()),
        );
        rules(
            &node,
            true,
            &second(scanner.ipv6.iter().map(Ipv6Addr::to_string).collect()),
        );
        let tcp = [TCP_OPEN, TCP_SRC_DROP, TCP_SRC_RESET]
            .iter()
            .map(|p| node.tcp_listener(*p).expect("tcp listener"))
            .collect();
        let udp = vec![
            node.udp_echo(UDP_ECHO).expect("udp echo"),
            node.udp_silent(UDP_SILENT).expect("udp silent"),
            node.udp_echo(UDP_SRC_DROP).expect("udp echo"),
            node.udp_echo(UDP_DNS).expect("udp echo"),
        ];
        Matrix {
            lab,
            _tcp: tcp,
            _udp: udp,
        }
    }

    pub fn node(&self) -> &Netns {
        self.lab.node(0)
    }

    pub fn scanner(&self) -> &Netns {
        self.lab.scanner(0)
    }

    /// The scanner's address of `role` (0: the first address's role, 1: the second's, which
    /// the per-source rules single out) in `slot` (0..SLOTS): every slot of a role is treated
    /// alike by the node, and each is a peer with its own ICMP token bucket there.
    pub fn source(&self, v6: bool, role: usize, slot: usize) -> IpAddr {
        assert!(role < 2 && slot < SLOTS, "role {role}, slot {slot}");
        let i = role + 2 * slot;
        if v6 {
            self.scanner().ipv6[i].into()
        } else {
            self.scanner().ipv4[i].into()
        }
    }

    /// The node's address in the family.
    pub fn target(&self, v6: bool) -> IpAddr {
        if v6 {
            self.node().v6().into()
        } else {
            self.node().v4().into()
        }
    }
}

/// Per-port (state, reason) of one host.
pub type States = BTreeMap<u16, (String, String)>;

/// Per-port (state, reason) of nmap's XML, through the lab's parser (listed ports and
/// `extraports` groups), every host's rows together.
pub fn parse_nmap_xml(xml: &str) -> States {
    rows_to_states(&portwarden_lab::parse_nmap_xml(xml).expect("nmap XML"))
}

/// Per-port (state, reason) of parsed nmap rows.
pub fn rows_to_states<'a>(rows: impl IntoIterator<Item = &'a NmapPort>) -> States {
    rows.into_iter()
        .map(|r| (r.port, (r.state.clone(), r.reason.clone())))
        .collect()
}

/// Runs nmap in the scanner namespace from `src` against `target`, with the timing template
/// `-T4` unless `extra` names another (`-T3`: nmap's default).
pub fn nmap(
    scanner: &Netns,
    kind: ScanKind,
    src: IpAddr,
    target: IpAddr,
    ports: &str,
    extra: &[&str],
) -> States {
    let template = extra
        .iter()
        .copied()
        .find(|a| a.starts_with("-T"))
        .unwrap_or("-T4");
    let mut flags = vec![kind.nmap_flag(), template];
    flags.extend(extra.iter().copied().filter(|a| !a.starts_with("-T")));
    let run = Nmap::new(&flags)
        .ports(ports)
        .source(src)
        .target(target)
        .run(scanner)
        .expect("nmap runs");
    let states = rows_to_states(&run.ports);
    assert!(!states.is_empty(), "nmap produced no ports: {}", run.xml);
    states
}

/// Runs our scanner in the scanner namespace from `src`.
pub fn ours(
    scanner: &Netns,
    kind: ScanKind,
    src: IpAddr,
    target: IpAddr,
    ports: &str,
    config: ScanConfig,
) -> ScanReport {
    let ports = PortList::parse(ports).expect("ports");
    scanner
        .run(move || {
            // The lab's node is the one target this helper may probe.
            let mut config = ScanConfig {
                targets: TargetPolicy::only([target]),
                ..config
            };
            match src {
                IpAddr::V4(a) => config.source_v4 = Some(a),
                IpAddr::V6(a) => config.source_v6 = Some(a),
            }
            Scanner::new(config).scan(&[target], &ports, kind)
        })
        .expect("scanner thread")
        .expect("scan")
}

pub fn states_of(report: &ScanReport) -> States {
    report.hosts[0]
        .ports
        .iter()
        .map(|p| (p.port, (p.state.to_string(), p.reason.to_string())))
        .collect()
}

/// Asserts identical states and reasons on every port.
pub fn assert_same_states_and_reasons(what: &str, nmap: &States, ours: &States) {
    assert_same_states(what, nmap, ours);
    assert_eq!(nmap, ours, "{what}: reasons differ");
}

/// Asserts identical states on every port (and prints reasons on mismatch).
pub fn assert_same_states(what: &str, nmap: &States, ours: &States) {
    let n: BTreeMap<u16, &str> = nmap.iter().map(|(p, (s, _))| (*p, s.as_str())).collect();
    let o: BTreeMap<u16, &str> = ours.iter().map(|(p, (s, _))| (*p, s.as_str())).collect();
    assert_eq!(
        n, o,
        "{what}: states differ\n nmap: {nmap:?}\n ours: {ours:?}"
    );
}

/// Asserts identical states on every port, and identical reasons on the ports whose state is
/// decided by an answer (open, closed, unfiltered): under an ICMP rate limit a filtered port's
/// reason depends on whether its ICMP error was withheld (no-response) or came
/// (port-unreach...), which differs from run to run for nmap too.
pub fn assert_same_states_and_decisive_reasons(what: &str, nmap: &States, ours: &States) {
    assert_same_states(what, nmap, ours);
    let decisive = |s: &States| -> States {
        s.iter()
            .filter(|(_, (st, _))| matches!(st.as_str(), "open" | "closed" | "unfiltered"))
            .map(|(p, v)| (*p, v.clone()))
            .collect()
    };
    assert_eq!(
        decisive(nmap),
        decisive(ours),
        "{what}: reasons differ on answered ports"
    );
}

/// Ports `lo..=hi`.
pub fn range((lo, hi): (u16, u16)) -> impl Iterator<Item = u16> {
    lo..=hi
}
