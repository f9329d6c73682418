//! `portwarden scan` end to end in a namespace lab: the binary runs inside the scanner
//! namespace, its JSON has CLI.md's shape with nmap's state words, its XML is accepted by
//! `ndiff`, and its states equal those of the real nmap run beside it.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::BTreeMap;

use portwarden_lab::{Lab, skip_unless_lab};

const BIN: &str = env!("CARGO_BIN_EXE_portwarden");

/// `port -> state` from nmap's normal output lines such as `8080/tcp closed http-proxy`.
fn nmap_states(out: &str) -> BTreeMap<u16, String> {
    out.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let port = f.next()?.strip_suffix("/tcp")?.parse().ok()?;
            Some((port, f.next()?.to_string()))
        })
        .collect()
}

#[test]
fn scan_json_xml_and_nmap_agree() {
    skip_unless_lab!();
    let lab = Lab::builder("cliscan")
        .nodes(1)
        .scanners(1)
        .build()
        .unwrap();
    let node = lab.node(0);
    let scanner = lab.scanner(0);
    let _listener = node.tcp_listener(80).unwrap();
    node.iptables(&[
        "-A",
        "INPUT",
        "-p",
        "tcp",
        "--dport",
        "8080",
        "-j",
        "REJECT",
        "--reject-with",
        "tcp-reset",
    ])
    .unwrap();
    node.iptables(&["-A", "INPUT", "-p", "tcp", "--dport", "9000", "-j", "DROP"])
        .unwrap();
    let target = node.v4().to_string();
    let ports = "79-81,8080,9000";

    let json = scanner
        .exec(&[BIN, "scan", &target, "-p", ports, "-o", "json"])
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let host = &v["hosts"][0];
    assert_eq!(host["address"], target.as_str());
    let ours: BTreeMap<u16, String> = host["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(p["protocol"], "tcp");
            assert!(p["reason"].is_string());
            (
                p["port"].as_u64().unwrap() as u16,
                p["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(ours.len(), 5, "JSON lists every scanned port: {json}");
    assert_eq!(ours[&80], "open");
    assert_eq!(ours[&8080], "closed");
    assert_eq!(ours[&9000], "filtered");

    let nmap = scanner
        .exec(&["nmap", "-n", "-Pn", "-sS", "-p", ports, "--reason", &target])
        .unwrap();
    let theirs = nmap_states(&nmap);
    // nmap's normal output hides nothing for five ports; compare every one.
    assert_eq!(ours, theirs, "nmap said:\n{nmap}");

    // Two XML files of the same scan: ndiff accepts both and finds no difference.
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.xml");
    let b = dir.path().join("b.xml");
    for f in [&a, &b] {
        let xml = scanner
            .exec(&[BIN, "scan", &target, "-p", ports, "-o", "xml"])
            .unwrap();
        std::fs::write(f, xml).unwrap();
    }
    let out = std::process::Command::new("ndiff")
        .args([a.to_str().unwrap(), b.to_str().unwrap()])
        .output()
        .expect("ndiff runs (installed by scripts/deps.sh)");
    // ndiff exits 0 when the scans are equal, 1 when they differ, 2 on error.
    assert_eq!(
        out.status.code(),
        Some(0),
        "ndiff: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn scan_rejects_bad_arguments() {
    for args in [
        &["scan", "not-an-ip", "-p", "80"][..],
        &["scan", "127.0.0.1", "-p", "http"],
        &["scan", "127.0.0.1", "-p", "70000"],
        &["scan", "127.0.0.1", "-p", "80", "--scan", "xmas"],
    ] {
        let out = std::process::Command::new(BIN).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
    }
}
