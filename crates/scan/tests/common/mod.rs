//! Shared helpers for the lab tests: the port matrix on a node, running the real nmap from the
//! scanner namespace, running our scanner there, and comparing the two.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::IpAddr;

use portwarden_lab::{Lab, Netns, TcpListenerGuard, UdpListenerGuard};
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

pub const UDP_ECHO: u16 = 5000;
pub const UDP_SILENT: u16 = 5001;
pub const UDP_CLOSED: u16 = 5002;
pub const UDP_DROP: u16 = 5003;
pub const UDP_HOST_UNREACH: u16 = 5004;
pub const UDP_ADMIN: u16 = 5005;
pub const UDP_SRC_DROP: u16 = 5006; // echo; DROP from the second address only
pub const UDP_DNS: u16 = 53; // echo; probed with a DNS query payload
pub const UDP_PORTS: &str = "53,5000-5006";

/// A lab with the matrix applied to node 0; listeners live as long as this.
pub struct Matrix {
    pub lab: Lab,
    _tcp: Vec<TcpListenerGuard>,
    _udp: Vec<UdpListenerGuard>,
}

fn rules(ns: &Netns, v6: bool, scanner2: &str) {
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
    run(&[
        "-A",
        "INPUT",
        "-p",
        "tcp",
        "!",
        "-s",
        scanner2,
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
        "-s",
        scanner2,
        "--dport",
        &s(UDP_SRC_DROP),
        "-j",
        "DROP",
    ]);
}

impl Matrix {
    pub fn new(tag: &str) -> Matrix {
        let lab = Lab::builder(tag).scanner_addresses(2).build().expect("lab");
        let node = lab.node(0).clone();
        let scanner = lab.scanner(0).clone();
        // ICMP errors are rate limited per destination by default (1/s after a burst of 6);
        // both scanners would race for the tokens. Lift the limit inside the lab node.
        node.sysctl("net.ipv4.icmp_ratelimit", "0").expect("sysctl");
        node.sysctl("net.ipv6.icmp.ratelimit", "0").expect("sysctl");
        node.sysctl("net.ipv4.icmp_msgs_per_sec", "100000")
            .expect("sysctl");
        rules(&node, false, &scanner.ipv4[1].to_string());
        rules(&node, true, &scanner.ipv6[1].to_string());
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
}

/// Per-port (state, reason) of one host.
pub type States = BTreeMap<u16, (String, String)>;

fn attr<'a>(s: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("{name}=\"");
    let start = s.find(&key)? + key.len();
    let end = s[start..].find('"')? + start;
    Some(&s[start..end])
}

/// Parses nmap's XML: listed ports plus `extraports` groups (with their `extrareasons`
/// port lists).
pub fn parse_nmap_xml(xml: &str) -> States {
    let mut out = States::new();
    for chunk in xml.split("<port ").skip(1) {
        let (Some(port), Some(state_el)) = (attr(chunk, "portid"), chunk.find("<state ")) else {
            continue;
        };
        let st = &chunk[state_el..];
        let port: u16 = port.parse().expect("portid");
        out.insert(
            port,
            (
                attr(st, "state").unwrap_or("").to_string(),
                attr(st, "reason").unwrap_or("").to_string(),
            ),
        );
    }
    for chunk in xml.split("<extraports ").skip(1) {
        let state = attr(chunk, "state").unwrap_or("").to_string();
        let end = chunk.find("</extraports>").unwrap_or(chunk.len());
        for r in chunk[..end].split("<extrareasons ").skip(1) {
            let reason = attr(r, "reason").unwrap_or("").to_string();
            if let Some(ports) = attr(r, "ports") {
                for p in PortList::parse(ports)
                    .expect("extrareasons ports")
                    .as_slice()
                {
                    out.insert(*p, (state.clone(), reason.clone()));
                }
            }
        }
    }
    out
}

/// Runs nmap in the scanner namespace from `src` against `target`.
pub fn nmap(
    scanner: &Netns,
    kind: ScanKind,
    src: IpAddr,
    target: IpAddr,
    ports: &str,
    extra: &[&str],
) -> States {
    let src = src.to_string();
    let target = target.to_string();
    let mut args = vec![
        "nmap",
        "-n",
        "-Pn",
        kind.nmap_flag(),
        "-T4",
        "-S",
        &src,
        "-e",
        "eth0",
        "-p",
        ports,
        "-oX",
        "-",
    ];
    if target.contains(':') {
        args.push("-6");
    }
    args.extend_from_slice(extra);
    args.push(&target);
    let xml = scanner.exec(&args).expect("nmap runs");
    let states = parse_nmap_xml(&xml);
    assert!(!states.is_empty(), "nmap produced no ports: {xml}");
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
