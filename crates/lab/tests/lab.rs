//! Lab integration tests: topology, addresses, listeners, isolation and cleanup (needs root).

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use portwarden_lab::{Lab, cleanup_stale, skip_unless_lab};

fn ns_exists(name: &str) -> bool {
    std::path::Path::new(&format!("/run/netns/{name}")).exists()
}

#[test]
fn two_namespaces_talk_and_are_removed() {
    skip_unless_lab!();
    let lab = Lab::builder("labt")
        .scanner_addresses(2)
        .build()
        .expect("lab");
    let node = lab.node(0).clone();
    let scanner = lab.scanner(0).clone();
    assert_eq!(scanner.ipv4.len(), 2);
    assert_eq!(scanner.ipv6.len(), 2);
    assert!(lab.bridge().is_none());

    // No default route anywhere.
    for ns in [&node, &scanner] {
        let r4 = ns
            .exec(&["ip", "-4", "route", "show", "default"])
            .expect("route");
        let r6 = ns
            .exec(&["ip", "-6", "route", "show", "default"])
            .expect("route");
        assert!(r4.trim().is_empty() && r6.trim().is_empty(), "{r4} {r6}");
    }

    let _tcp = node.tcp_listener(8080).expect("listener");
    let _echo = node.udp_echo(5353).expect("udp");
    for dst in [node.addresses()[0], node.addresses()[1]] {
        let connected = scanner
            .run(move || {
                TcpStream::connect_timeout(&SocketAddr::new(dst, 8080), Duration::from_secs(5))
                    .is_ok()
            })
            .expect("run");
        assert!(connected, "connect to {dst}:8080");
        let refused = scanner
            .run(move || {
                matches!(
                    TcpStream::connect_timeout(&SocketAddr::new(dst, 8081), Duration::from_secs(5)),
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
                )
            })
            .expect("run");
        assert!(refused, "8081 refused on {dst}");
        let src = scanner.addresses()[if dst.is_ipv4() { 1 } else { 3 }];
        let echoed = scanner
            .run(move || -> std::io::Result<Vec<u8>> {
                let s = UdpSocket::bind(SocketAddr::new(src, 0))?;
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                s.send_to(b"hi", SocketAddr::new(dst, 5353))?;
                let mut buf = [0u8; 64];
                let (n, _) = s.recv_from(&mut buf)?;
                Ok(buf[..n].to_vec())
            })
            .expect("run")
            .expect("echo");
        assert_eq!(echoed, b"hi");
    }
    // Nothing of the lab appears in the root namespace (read-only check; no traffic is sent
    // from the root namespace).
    let root = std::process::Command::new("ip")
        .args(["-o", "addr"])
        .output()
        .expect("ip addr");
    let root = String::from_utf8_lossy(&root.stdout);
    assert!(
        !root.contains("10.213.") && !root.contains("fd00:213:"),
        "{root}"
    );

    let names = [node.name.clone(), scanner.name.clone()];
    drop(lab);
    for n in names {
        assert!(!ns_exists(&n), "{n} removed");
    }
}

#[test]
fn bridge_joins_many_namespaces() {
    skip_unless_lab!();
    let lab = Lab::builder("labbr")
        .nodes(3)
        .scanners(1)
        .build()
        .expect("lab");
    assert!(lab.bridge().is_some());
    let scanner = lab.scanner(0).clone();
    for node in lab.nodes() {
        let _l = node.tcp_listener(22).expect("listener");
        for dst in node.addresses() {
            let ok = scanner
                .run(move || {
                    TcpStream::connect_timeout(&SocketAddr::new(dst, 22), Duration::from_secs(5))
                        .is_ok()
                })
                .expect("run");
            assert!(ok, "{dst}:22 from scanner");
        }
    }
    let err = lab.node(0).exec(&["false"]).expect_err("false fails");
    assert!(err.to_string().contains("ip netns exec"), "{err}");
}

#[test]
fn iptables_inside_namespace_only() {
    skip_unless_lab!();
    let lab = Lab::builder("labipt").build().expect("lab");
    let node = lab.node(0);
    node.iptables(&["-A", "INPUT", "-p", "tcp", "--dport", "9", "-j", "DROP"])
        .expect("iptables");
    node.add_random_loss(0.05).expect("loss");
    let rules = node.iptables(&["-S", "INPUT"]).expect("list");
    assert!(rules.contains("--dport 9"), "{rules}");
    assert!(rules.contains("statistic"), "{rules}");
    let mut child = node.spawn(&["sleep", "600"]).expect("spawn");
    assert!(child.id() > 0);
    let _ = &mut child;
}

#[test]
fn cleanup_stale_rejects_foreign_prefix_and_spares_live_labs() {
    skip_unless_lab!();
    assert!(cleanup_stale("x").is_err());
    let lab = Lab::builder("labstale").build().expect("lab");
    cleanup_stale("pw-labstale-").expect("cleanup");
    assert!(ns_exists(&lab.node(0).name), "live lab untouched");
}

#[test]
fn cleanup_stale_removes_labs_of_dead_processes_only() {
    skip_unless_lab!();
    // A namespace in the lab's shape whose "creator" (pid 999999999) cannot exist.
    let stale = "pw-labdead-999999999-0-n0";
    let foreign = "pw-labdead-notalab";
    for n in [stale, foreign] {
        let st = std::process::Command::new("ip")
            .args(["netns", "add", n])
            .status()
            .expect("ip");
        assert!(st.success());
    }
    let removed = cleanup_stale("pw-labdead-").expect("cleanup");
    assert_eq!(removed, 1);
    assert!(!ns_exists(stale));
    assert!(ns_exists(foreign), "names in another shape are not ours");
    let _ = std::process::Command::new("ip")
        .args(["netns", "delete", foreign])
        .status();
}

/// A namespace made with plain `ip netns add`, outside any lab, deleted on drop: what the kernel
/// gives a new namespace before anyone sets a sysctl.
struct Bare(String);

impl Drop for Bare {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "delete", &self.0])
            .output();
    }
}

#[test]
fn nodes_keep_the_kernels_icmp_rate_limits_unless_a_test_lifts_them() {
    skip_unless_lab!();
    // Named in the lab's shape (pw-TAG-PID-N-ROLE), so cleanup_stale removes it after a crash.
    let bare = Bare(format!("pw-bareicmp-{}-0-x", std::process::id()));
    let made = std::process::Command::new("ip")
        .args(["netns", "add", &bare.0])
        .output()
        .expect("ip netns add");
    assert!(made.status.success(), "ip netns add {}: {made:?}", bare.0);
    let read = |ns: &str, key: &str| -> String {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", ns, "sysctl", "-n", key])
            .output()
            .expect("sysctl runs");
        assert!(out.status.success(), "sysctl -n {key} in {ns}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let lab = Lab::builder("icmpdef")
        .scanner_addresses(2)
        .build()
        .expect("lab");
    let node = lab.node(0);
    for (key, lifted) in portwarden_lab::LIFTED_ICMP_LIMITS {
        let kernel = read(&bare.0, key);
        assert_ne!(
            kernel, lifted,
            "{key}: the kernel's default is not the lifted value"
        );
        assert_eq!(read(&node.name, key), kernel, "{key}: the lab changed it");
    }
    assert_eq!(read(&node.name, "net.ipv4.icmp_ratelimit"), "1000");
    node.lift_icmp_rate_limits().expect("lift");
    for (key, lifted) in portwarden_lab::LIFTED_ICMP_LIMITS {
        assert_eq!(read(&node.name, key), lifted, "{key} after lifting");
    }
    // Lifting is per namespace: the scanner keeps the kernel's.
    assert_eq!(
        read(&lab.scanner(0).name, "net.ipv4.icmp_ratelimit"),
        "1000"
    );
}
