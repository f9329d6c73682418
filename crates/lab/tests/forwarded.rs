//! Forwarded (DNAT'ed) ports are real in the lab: a real Docker engine in a node publishes a
//! container's ports, kube-proxy's NodePort rules and Docker's rules written by hand forward to
//! a pod behind the node (IPv4 and IPv6, both iptables backends), and a firewalld-style
//! nftables table is created. Each test shows the traffic goes through nat PREROUTING and
//! filter FORWARD — a DROP in the node's INPUT does not stop it (the bug portwarden fixes), a
//! DROP in the layout's FORWARD chain does — and that the scanner reaches only the node's
//! address. Needs root; the Docker test also needs dockerd (skipped without, failed under CI).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use portwarden_lab::{
    Backend, Block, DockerEngine, Lab, Netns, NodePort, Pod, PortMap, Protocol, skip_unless_docker,
    skip_unless_lab, write_docker_style_rules, write_kube_proxy_rules,
};

const OK: Duration = Duration::from_secs(5);
/// A blocked connection must fail within this (DROP: the connect times out).
const BLOCKED: Duration = Duration::from_secs(2);

/// Packets the node's `INPUT` rule for `dport PORT` (inserted by [`drop_in_input`]) matched.
fn input_drop_packets(node: &Netns, iptables: &str, port: u16) -> u64 {
    let out = node
        .exec(&[iptables, "-w", "-L", "INPUT", "-v", "-x", "-n"])
        .expect("list INPUT");
    let needle = format!("dpt:{port}");
    let line = out
        .lines()
        .find(|l| l.contains("DROP") && l.contains(&needle))
        .unwrap_or_else(|| panic!("no INPUT DROP for {port}:\n{out}"));
    line.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counter in {line}"))
}

/// `-I INPUT 1 -p PROTO --dport PORT -j DROP` in the node, both families, with `backend`.
fn drop_in_input(node: &Netns, backend: Backend, proto: Protocol, port: u16) {
    let p = port.to_string();
    for v6 in [false, true] {
        node.exec(&[
            backend.iptables(v6),
            "-w",
            "-I",
            "INPUT",
            "1",
            "-p",
            proto.as_str(),
            "--dport",
            &p,
            "-j",
            "DROP",
        ])
        .expect("INPUT DROP");
    }
}

fn node_addrs(node: &Netns) -> [IpAddr; 2] {
    [IpAddr::V4(node.v4()), IpAddr::V6(node.v6())]
}

/// GET through `node:port` from the scanner answers 200 with `body`, both families.
fn assert_http_through(scanner: &Netns, node: &Netns, port: u16, body: &str) {
    for a in node_addrs(node) {
        let to = SocketAddr::new(a, port);
        let r = scanner
            .http_get(to, OK)
            .unwrap_or_else(|e| panic!("GET {to} from the scanner: {e}"));
        assert_eq!(r.status, 200, "GET {to}: {r:?}");
        assert_eq!(r.body, body, "GET {to} reached the wrong server");
    }
}

/// A datagram to `node:port` from the scanner is answered with `expect(payload)`.
fn assert_udp_through(scanner: &Netns, node: &Netns, port: u16, expect: &dyn Fn(&[u8]) -> Vec<u8>) {
    for a in node_addrs(node) {
        let to = SocketAddr::new(a, port);
        let payload = format!("probe-{a}");
        let got = scanner
            .udp_request(to, payload.as_bytes(), OK)
            .unwrap_or_else(|e| panic!("UDP {to} from the scanner: {e}"));
        assert_eq!(got, expect(payload.as_bytes()), "UDP {to}");
    }
}

fn assert_http_blocked(scanner: &Netns, node: &Netns, port: u16) {
    for a in node_addrs(node) {
        let to = SocketAddr::new(a, port);
        let r = scanner.http_get(to, BLOCKED);
        assert!(
            r.is_err(),
            "GET {to} should be blocked in FORWARD, got {r:?}"
        );
    }
}

#[test]
fn a_real_docker_engine_publishes_through_dnat_and_forward_not_input() {
    skip_unless_docker!();
    let lab = Lab::builder("dockfwd").build().expect("lab");
    let (node, scanner) = (lab.node(0).clone(), lab.scanner(0).clone());

    let t0 = Instant::now();
    let mut engine = DockerEngine::start(&node).expect("dockerd in the node");
    let t_engine = t0.elapsed();
    engine.import_base_image().expect("import the rootfs");
    let t_import = t0.elapsed();
    let ports = [PortMap::tcp(8080, 80), PortMap::udp(5353, 53)];
    let web = engine.run_web("web", &ports).expect("container");
    let t_run = t0.elapsed();
    eprintln!(
        "timing: dockerd ready {:.1} s, image imported {:.1} s, container answering {:.1} s \
         (storage driver {})",
        t_engine.as_secs_f64(),
        t_import.as_secs_f64(),
        t_run.as_secs_f64(),
        engine.storage_driver()
    );

    // The container lives on the engine's lab-unique bridge and Docker published both ports in
    // both families.
    let gw = engine.gateway_v4().octets();
    assert_eq!(web.ipv4.octets()[..3], gw[..3], "{web:?}");
    let v6 = web.ipv6.expect("IPv6 address (--ipv6 --ip6tables)");
    assert_eq!(v6.segments()[..3], engine.network_v6().segments()[..3]);
    for (proto, host_port, container_port) in [(Protocol::Tcp, 8080, 80), (Protocol::Udp, 5353, 53)]
    {
        for any in ["0.0.0.0", "::"] {
            let host_ip: IpAddr = any.parse().expect("ip");
            assert!(
                web.published.iter().any(|p| p.protocol == proto
                    && p.host_port == host_port
                    && p.container_port == container_port
                    && p.host_ip == host_ip),
                "{proto:?} {any}:{host_port}->{container_port} in {:?}",
                web.published
            );
        }
    }
    // dockerd's rules: in the nft backend (the `iptables` on PATH), DNAT to the container.
    let nat = node
        .exec(&["iptables-nft-save", "-t", "nat"])
        .expect("save");
    assert!(
        nat.contains(&format!(
            "--dport 8080 -j DNAT --to-destination {}:80",
            web.ipv4
        )),
        "{nat}"
    );
    let nat6 = node
        .exec(&["ip6tables-nft-save", "-t", "nat"])
        .expect("save");
    assert!(
        nat6.contains(&format!("--dport 8080 -j DNAT --to-destination [{v6}]:80")),
        "{nat6}"
    );
    let legacy = node.exec(&["iptables-legacy-save"]).unwrap_or_default();
    assert!(
        !legacy.contains("DOCKER"),
        "dockerd wrote legacy rules:\n{legacy}"
    );

    // The scanner reaches the container's busybox httpd and UDP service through the node's
    // address only; the container's own address is not routed to the scanner.
    assert_http_through(&scanner, &node, 8080, &web.http_body);
    assert_udp_through(&scanner, &node, 5353, &|p| [b"pong:", p].concat());
    assert!(
        scanner
            .http_get(SocketAddr::new(IpAddr::V4(web.ipv4), 80), BLOCKED)
            .is_err()
    );
    for a in node_addrs(&node) {
        assert_eq!(
            scanner
                .nmap_port_state(a, 8080, Protocol::Tcp)
                .expect("nmap"),
            "open",
            "nmap -sS {a}:8080"
        );
    }

    // The bug portwarden fixes: a DROP in the node's INPUT does not close a published port,
    // and never sees its packets.
    drop_in_input(&node, Backend::Nft, Protocol::Tcp, 8080);
    drop_in_input(&node, Backend::Nft, Protocol::Udp, 5353);
    assert_http_through(&scanner, &node, 8080, &web.http_body);
    assert_udp_through(&scanner, &node, 5353, &|p| [b"pong:", p].concat());
    assert_eq!(input_drop_packets(&node, "iptables-nft", 8080), 0);
    assert_eq!(input_drop_packets(&node, "ip6tables-nft", 8080), 0);
    // What does close it: FORWARD (Docker's DOCKER-USER chain, IPv4; dockerd 20.10 has no
    // IPv6 DOCKER-USER, so IPv6 gets it at the top of FORWARD).
    node.iptables(&[
        "-I",
        "DOCKER-USER",
        "1",
        "-p",
        "tcp",
        "--dport",
        "80",
        "-j",
        "DROP",
    ])
    .expect("DOCKER-USER DROP");
    node.ip6tables(&[
        "-I", "FORWARD", "1", "-p", "tcp", "--dport", "80", "-j", "DROP",
    ])
    .expect("FORWARD DROP");
    assert_http_blocked(&scanner, &node, 8080);

    // Cleanup: containers removed, dockerd stopped, nothing mounted or running under its
    // directory, the directory gone. dockerd's rules stay in the node until the namespace goes.
    let dir = engine.dir().to_path_buf();
    let pid = engine.pid();
    engine.stop().expect("clean stop");
    assert!(!dir.exists(), "{} removed", dir.display());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mounts.contains(&*dir.to_string_lossy()), "{mounts}");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "dockerd {pid} gone"
    );
    let left = node
        .exec(&["iptables-nft-save", "-t", "nat"])
        .expect("save");
    assert!(
        left.contains("-j DOCKER"),
        "docker's rules outlive dockerd:\n{left}"
    );
    let name = node.name.clone();
    drop(lab);
    assert!(!std::path::Path::new(&format!("/run/netns/{name}")).exists());
    // Read-only look at the root namespace: none of the lab engine's rules are there.
    let root = std::process::Command::new("iptables-save")
        .output()
        .expect("iptables-save");
    let root = String::from_utf8_lossy(&root.stdout);
    let net = format!("{}.{}.{}.", gw[0], gw[1], gw[2]);
    assert!(
        !root.contains(&net),
        "root namespace mentions {net}:\n{root}"
    );
}

fn echo(p: &[u8]) -> Vec<u8> {
    p.to_vec()
}

fn kube_nodeport(backend: Backend) {
    let lab = Lab::builder("kubenp").build().expect("lab");
    let (node, scanner) = (lab.node(0).clone(), lab.scanner(0).clone());
    let mut pod = Pod::attach(&node).expect("pod");
    let body = pod.serve_http(80).expect("httpd in the pod");
    let _udp = pod.netns().udp_echo(53).expect("udp echo in the pod");
    let written = write_kube_proxy_rules(
        &pod,
        &[
            NodePort::tcp("web", 30080, 80),
            NodePort::udp("dns", 30053, 53),
        ],
        backend,
    )
    .expect("kube-proxy rules");

    // The kernel has kube-proxy's shapes, in the chosen backend.
    let nat = node
        .exec(&[backend.save(false), "-t", "nat"])
        .expect("save");
    let services: Vec<&str> = nat
        .lines()
        .filter(|l| l.starts_with("-A KUBE-SERVICES"))
        .collect();
    assert!(
        services
            .last()
            .is_some_and(|l| l.contains("-m addrtype --dst-type LOCAL -j KUBE-NODEPORTS")),
        "{nat}"
    );
    assert!(
        nat.contains(&format!("-j DNAT --to-destination {}:80", pod.v4())),
        "{nat}"
    );
    assert!(
        nat.contains("-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000"),
        "{nat}"
    );
    let nat6 = node.exec(&[backend.save(true), "-t", "nat"]).expect("save");
    assert!(
        nat6.contains(&format!("-j DNAT --to-destination [{}]:80", pod.v6())),
        "{nat6}"
    );
    assert!(
        written.v4.contains("--dport 30080 -j KUBE-EXT-"),
        "{}",
        written.v4
    );

    assert_http_through(&scanner, &node, 30080, &body);
    assert_udp_through(&scanner, &node, 30053, &echo);
    for a in [IpAddr::V4(pod.v4()), IpAddr::V6(pod.v6())] {
        assert!(
            scanner.http_get(SocketAddr::new(a, 80), BLOCKED).is_err(),
            "the scanner must not reach the pod {a} directly"
        );
    }
    assert_eq!(
        scanner
            .nmap_port_state(IpAddr::V4(node.v4()), 30080, Protocol::Tcp)
            .expect("nmap"),
        "open"
    );

    drop_in_input(&node, backend, Protocol::Tcp, 30080);
    drop_in_input(&node, backend, Protocol::Udp, 30053);
    assert_http_through(&scanner, &node, 30080, &body);
    assert_udp_through(&scanner, &node, 30053, &echo);
    assert_eq!(input_drop_packets(&node, backend.iptables(false), 30080), 0);
    assert_eq!(input_drop_packets(&node, backend.iptables(true), 30080), 0);

    // FORWARD decides: a DROP ahead of KUBE-FORWARD's mark ACCEPT closes the NodePort.
    drop_pod_port_in(&node, backend, "KUBE-FORWARD");
    assert_http_blocked(&scanner, &node, 30080);
}

#[test]
fn kube_proxy_nodeports_forward_to_the_pod_nft() {
    skip_unless_lab!();
    kube_nodeport(Backend::Nft);
}

#[test]
fn kube_proxy_nodeports_forward_to_the_pod_legacy() {
    skip_unless_lab!();
    kube_nodeport(Backend::Legacy);
}

/// `-I CHAIN 1 -p tcp --dport 80 -j DROP` in both families of `node`: the pod's web port,
/// after the DNAT, in a FORWARD chain the layout leaves to the administrator.
fn drop_pod_port_in(node: &Netns, backend: Backend, chain: &str) {
    for v6 in [false, true] {
        node.exec(&[
            backend.iptables(v6),
            "-w",
            "-I",
            chain,
            "1",
            "-p",
            "tcp",
            "--dport",
            "80",
            "-j",
            "DROP",
        ])
        .unwrap_or_else(|e| panic!("{chain} DROP: {e}"));
    }
}

fn docker_style(backend: Backend) {
    let lab = Lab::builder("dockstyle").build().expect("lab");
    let (node, scanner) = (lab.node(0).clone(), lab.scanner(0).clone());
    let mut pod = Pod::attach(&node).expect("pod");
    let body = pod.serve_http(80).expect("httpd in the pod");
    let _udp = pod.netns().udp_echo(53).expect("udp echo in the pod");
    write_docker_style_rules(
        &pod,
        &[PortMap::tcp(8080, 80), PortMap::udp(5353, 53)],
        backend,
    )
    .expect("docker-style rules");
    let filter = node
        .exec(&[backend.save(false), "-t", "filter"])
        .expect("save");
    assert!(filter.contains("-A FORWARD -j DOCKER-USER"), "{filter}");
    assert!(filter.contains(":FORWARD DROP"), "{filter}");

    assert_http_through(&scanner, &node, 8080, &body);
    assert_udp_through(&scanner, &node, 5353, &echo);
    drop_in_input(&node, backend, Protocol::Tcp, 8080);
    assert_http_through(&scanner, &node, 8080, &body);
    assert_eq!(input_drop_packets(&node, backend.iptables(false), 8080), 0);
    assert_eq!(input_drop_packets(&node, backend.iptables(true), 8080), 0);
    assert_eq!(
        scanner
            .nmap_port_state(IpAddr::V6(node.v6()), 8080, Protocol::Tcp)
            .expect("nmap"),
        "open"
    );

    // DOCKER-USER, the chain Docker leaves to the administrator, closes it (both families).
    drop_pod_port_in(&node, backend, "DOCKER-USER");
    assert_http_blocked(&scanner, &node, 8080);
}

#[test]
fn docker_style_rules_forward_to_the_pod_nft() {
    skip_unless_lab!();
    docker_style(Backend::Nft);
}

#[test]
fn docker_style_rules_forward_to_the_pod_legacy() {
    skip_unless_lab!();
    docker_style(Backend::Legacy);
}

#[test]
fn a_firewalld_style_table_is_listed_and_blocks_its_ports() {
    skip_unless_lab!();
    let lab = Lab::builder("firewalld").build().expect("lab");
    let (node, scanner) = (lab.node(0).clone(), lab.scanner(0).clone());
    let _l: Vec<_> = [8080, 8081, 8082]
        .iter()
        .map(|p| node.tcp_listener(*p).expect("listener"))
        .collect();
    node.add_firewalld_table(&[
        (Protocol::Tcp, 8081, Block::Reject),
        (Protocol::Tcp, 8082, Block::Drop),
    ])
    .expect("nft -f");
    let listed = node
        .exec(&["nft", "list", "table", "inet", "firewalld"])
        .expect("nft list table inet firewalld");
    for want in [
        "chain filter_INPUT",
        "type filter hook input priority filter + 10; policy accept;",
        "ct state { established, related } accept",
        "iifname \"lo\" accept",
        "tcp dport 8081 reject with icmpx admin-prohibited",
        "tcp dport 8082 drop",
    ] {
        assert!(listed.contains(want), "{want:?} in:\n{listed}");
    }
    for a in node_addrs(&node) {
        let ok = scanner
            .run(move || std::net::TcpStream::connect_timeout(&SocketAddr::new(a, 8080), OK));
        assert!(ok.expect("run").is_ok(), "{a}:8080 stays open");
        for port in [8081, 8082] {
            let to = SocketAddr::new(a, port);
            let r = scanner.run(move || std::net::TcpStream::connect_timeout(&to, BLOCKED));
            assert!(
                r.expect("run").is_err(),
                "{to} blocked by the firewalld table"
            );
        }
    }
}

#[test]
fn a_docker_engine_cleans_up_even_when_its_lab_is_deleted_first() {
    skip_unless_docker!();
    let lab = Lab::builder("dockorder").build().expect("lab");
    let mut engine = DockerEngine::start(lab.node(0)).expect("dockerd in the node");
    engine.import_base_image().expect("import");
    let web = engine
        .run_web("web", &[PortMap::tcp(8080, 80)])
        .expect("container");
    let pid = engine
        .docker(&["inspect", "-f", "{{.State.Pid}}", &web.id])
        .expect("inspect")
        .trim()
        .to_string();
    let dir = engine.dir().to_path_buf();
    // The namespace goes first: dockerd, containerd and the shims are killed with it, the
    // container's processes (in namespaces of their own) are not.
    drop(lab);
    drop(engine);
    // Gone, or a zombie its reaper has not collected yet: not running either way.
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let running = !state.is_empty() && !state.contains(") Z ") && !state.contains(") X ");
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    assert!(
        !(running && cgroup.contains(&web.id)),
        "container process {pid} still runs: {state}"
    );
    assert!(!dir.exists(), "{} removed", dir.display());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mounts.contains(&*dir.to_string_lossy()), "{mounts}");
}
