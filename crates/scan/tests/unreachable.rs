//! A target the scanner has no route to is a per-target outcome, not a failed scan: the other
//! targets are scanned as usual, and the unroutable one appears in the report with its error
//! and no ports. Both families, every scan kind. Runs in a lab namespace (no default route, so
//! an address outside the lab's subnets has no route; nothing is ever sent to it).

use std::net::IpAddr;

use portwarden_lab::{Lab, skip_unless_lab};
use portwarden_scan::{PortList, ScanConfig, ScanKind, Scanner, TargetPolicy, report};

#[test]
fn an_unroutable_target_is_reported_and_the_others_are_scanned() {
    skip_unless_lab!();
    let lab = Lab::builder("unroute")
        .nodes(1)
        .scanners(1)
        .build()
        .expect("lab");
    let node = lab.node(0);
    let _open = node.tcp_listener(80).expect("listener");
    let _echo = node.udp_echo(5000).expect("udp echo");
    let reachable: Vec<IpAddr> = vec![node.v4().into(), node.v6().into()];
    let unroutable: Vec<IpAddr> = vec![
        "10.9.9.9".parse().expect("ip"),
        "fd00:9::9".parse().expect("ip"),
    ];
    let targets: Vec<IpAddr> = vec![reachable[0], unroutable[0], reachable[1], unroutable[1]];
    for (kind, ports, open) in [
        (ScanKind::Syn, "80,81", 80),
        (ScanKind::Connect, "80,81", 80),
        (ScanKind::Ack, "80,81", 80),
        (ScanKind::Udp, "5000", 5000),
    ] {
        let ports = PortList::parse(ports).expect("ports");
        let asked = targets.clone();
        let json = lab
            .scanner(0)
            .run(move || {
                let config = ScanConfig {
                    targets: TargetPolicy::Any,
                    ..ScanConfig::default()
                };
                Scanner::new(config)
                    .scan(&asked, &ports, kind)
                    .map(|r| report::to_json(&r))
            })
            .expect("in the scanner namespace")
            .unwrap_or_else(|e| panic!("{kind:?}: the whole scan failed: {e}"));
        let v: serde_json::Value = serde_json::from_str(&json).expect("json");
        let hosts = v["hosts"].as_array().expect("hosts");
        assert_eq!(hosts.len(), 4, "{kind:?}: one entry per target: {json}");
        for (h, target) in hosts.iter().zip(&targets) {
            assert_eq!(h["address"], target.to_string(), "{kind:?}: target order");
            let ports = h["ports"].as_array().expect("ports");
            if unroutable.contains(target) {
                let error = h["error"].as_str().unwrap_or_default();
                assert!(
                    error.starts_with(&format!("no route to {target}: "))
                        && error.contains("os error 101"),
                    "{kind:?} {target}: {json}"
                );
                assert!(ports.is_empty(), "{kind:?} {target}: {json}");
            } else {
                assert!(h.get("error").is_none(), "{kind:?} {target}: {json}");
                let state = ports
                    .iter()
                    .find(|p| p["port"] == open)
                    .map(|p| p["state"].as_str().unwrap_or_default().to_string());
                let want = if kind == ScanKind::Ack {
                    "unfiltered"
                } else {
                    "open"
                };
                assert_eq!(state.as_deref(), Some(want), "{kind:?} {target}: {json}");
            }
        }
    }
}
