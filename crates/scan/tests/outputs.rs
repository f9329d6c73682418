//! Output and multi-target tests in the lab: ndiff reads our XML (and finds no difference
//! between two identical scans, nor with nmap's own XML of the same scan), several targets in
//! one scan agree with nmap, and IPv4 and IPv6 targets can be mixed. Needs root.

mod common;

use std::net::IpAddr;
use std::process::Command;

use common::*;
use portwarden_lab::{Lab, Nmap, skip_unless_lab};
use portwarden_scan::{PortList, ScanConfig, ScanKind, Scanner, TargetPolicy, report};

fn ndiff(a: &str, b: &str) -> (i32, String) {
    let dir = std::env::temp_dir();
    let pa = dir.join(format!("pw-ndiff-a-{}.xml", std::process::id()));
    let pb = dir.join(format!("pw-ndiff-b-{}.xml", std::process::id()));
    std::fs::write(&pa, a).expect("write");
    std::fs::write(&pb, b).expect("write");
    let out = Command::new("ndiff")
        .arg(&pa)
        .arg(&pb)
        .output()
        .expect("ndiff runs");
    let _ = std::fs::remove_file(&pa);
    let _ = std::fs::remove_file(&pb);
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A scan configuration that may probe the lab's nodes (and nothing else).
fn lab_only(targets: &[IpAddr]) -> ScanConfig {
    ScanConfig {
        targets: TargetPolicy::only(targets.iter().copied()),
        ..ScanConfig::default()
    }
}

#[test]
fn ndiff_reads_our_xml() {
    skip_unless_lab!();
    let m = Matrix::new("ndiff", Limits::Kernel);
    let scanner = m.scanner();
    let src: IpAddr = scanner.v4().into();
    let target: IpAddr = m.node().v4().into();
    // 1-1000: enough closed ports to be collapsed into <extraports>.
    let a = ours(
        scanner,
        ScanKind::Syn,
        src,
        target,
        "1-1000",
        ScanConfig::default(),
    );
    let b = ours(
        scanner,
        ScanKind::Syn,
        src,
        target,
        "1-1000",
        ScanConfig::default(),
    );
    let xa = report::to_nmap_xml(&a, "portwarden scan -p 1-1000");
    let xb = report::to_nmap_xml(&b, "portwarden scan -p 1-1000");
    let (code, out) = ndiff(&xa, &xb);
    assert_eq!(
        code, 0,
        "ndiff sees a difference between identical scans:\n{out}"
    );

    // Our XML parses back to the same states as the report.
    assert_eq!(parse_nmap_xml(&xa), states_of(&a));

    // nmap's XML of the same scan: ndiff reports no port changes.
    let nmap_xml = Nmap::new(&["-sS", "-T4"])
        .ports("1-1000")
        .source(src)
        .target(target)
        .run(scanner)
        .expect("nmap")
        .xml;
    // ndiff also reports nmap's service names (we print none) on changed lines; compare the
    // (port, state) pairs it removes and adds: they must be the same.
    let (_, out) = ndiff(&nmap_xml, &xa);
    let pairs = |sign: char| -> Vec<(String, String)> {
        out.lines()
            .filter(|l| l.starts_with(sign) && l.contains("/tcp"))
            .map(|l| {
                let mut w = l[1..].split_whitespace();
                (
                    w.next().unwrap_or("").to_string(),
                    w.next().unwrap_or("").to_string(),
                )
            })
            .collect()
    };
    assert_eq!(pairs('-'), pairs('+'), "ndiff nmap vs ours:\n{out}");
}

#[test]
fn several_targets_in_one_scan_match_nmap() {
    skip_unless_lab!();
    let lab = Lab::builder("multi").nodes(3).build().expect("lab");
    let scanner = lab.scanner(0);
    let mut guards = Vec::new();
    for (i, n) in lab.nodes().iter().enumerate() {
        guards.push(n.tcp_listener(22 + i as u16).expect("listener"));
        let drop_port = (40 + i).to_string();
        n.iptables(&[
            "-A", "INPUT", "-p", "tcp", "--dport", &drop_port, "-j", "DROP",
        ])
        .expect("iptables");
    }
    let targets: Vec<IpAddr> = lab.nodes().iter().map(|n| n.v4().into()).collect();
    let ports = PortList::parse("1-100").expect("ports");
    let t2 = targets.clone();
    let report = scanner
        .run(move || Scanner::new(lab_only(&t2)).scan(&t2, &ports, ScanKind::Syn))
        .expect("thread")
        .expect("scan");
    assert_eq!(report.hosts.len(), 3);
    let run = Nmap::new(&["-sS", "-T4"])
        .ports("1-100")
        .targets(&targets)
        .run(scanner)
        .expect("nmap");
    for (host, addr) in report.hosts.iter().zip(&targets) {
        assert_eq!(host.address, *addr);
        let theirs = rows_to_states(run.host(*addr));
        let mine = host
            .ports
            .iter()
            .map(|p| (p.port, (p.state.to_string(), p.reason.to_string())))
            .collect();
        assert_same_states(&format!("SYN {addr}"), &theirs, &mine);
    }
}

#[test]
fn mixed_families_in_one_scan() {
    skip_unless_lab!();
    let lab = Lab::builder("mixed").build().expect("lab");
    let node = lab.node(0);
    let _l = node.tcp_listener(22).expect("listener");
    let targets: Vec<IpAddr> = vec![node.v4().into(), node.v6().into()];
    let ports = PortList::parse("21-23").expect("ports");
    let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = calls.clone();
    let report = lab
        .scanner(0)
        .run(move || {
            Scanner::new(lab_only(&targets))
                .on_progress(move |p| seen.lock().expect("lock").push((p.done, p.total)))
                .scan(&targets, &ports, ScanKind::Syn)
        })
        .expect("thread")
        .expect("scan");
    // The progress callback ran, and its last call says everything is done.
    let calls = calls.lock().expect("lock");
    assert_eq!(calls.last(), Some(&(6, 6)), "{calls:?}");
    for h in &report.hosts {
        let states: Vec<&str> = h.ports.iter().map(|p| p.state.as_str()).collect();
        assert_eq!(states, ["closed", "open", "closed"], "{}", h.address);
    }
    let json: serde_json::Value = serde_json::from_str(&report::to_json(&report)).expect("json");
    assert_eq!(json["hosts"][1]["ports"][1]["state"], "open");
}
