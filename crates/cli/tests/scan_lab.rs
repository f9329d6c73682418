//! `portwarden scan` end to end in a namespace lab: the binary runs inside the scanner
//! namespace, its JSON has docs/cli.md's shape with nmap's state words, its XML is accepted by
//! `ndiff`, and its states equal those of the real nmap run beside it. Also: targets outside
//! the inventory are refused unless `--any-target` is given, and `--max-rate-per-target` holds
//! for each target as the target's own kernel measures it.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use portwarden_lab::{Lab, Nmap, Protocol, skip_unless_lab};

use common::stderr_until;

const BIN: &str = env!("CARGO_BIN_EXE_portwarden");

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
    let dir = tempfile::tempdir().unwrap();
    let inventory = write_inventory(dir.path(), &[("web-1", &target)]);

    // By node name, through the inventory.
    let json = scanner
        .exec(&[
            BIN,
            "scan",
            "--inventory",
            &inventory,
            "web-1",
            "-p",
            ports,
            "-o",
            "json",
        ])
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

    let run = Nmap::new(&["-sS", "--reason"])
        .ports(ports)
        .target(node.v4().into())
        .run(scanner)
        .unwrap();
    let nmap = &run.xml;
    let theirs: BTreeMap<u16, String> = run
        .ports
        .iter()
        .filter(|p| p.protocol == Protocol::Tcp)
        .map(|p| (p.port, p.state.clone()))
        .collect();
    // nmap's report lists all five ports; compare every one.
    assert_eq!(ours, theirs, "nmap said:\n{nmap}");

    // Two XML files of the same scan: ndiff accepts both and finds no difference. The
    // address is not given through an inventory this time: --any-target says so explicitly.
    let a = dir.path().join("a.xml");
    let b = dir.path().join("b.xml");
    for f in [&a, &b] {
        let xml = scanner
            .exec(&[
                BIN,
                "scan",
                "--any-target",
                &target,
                "-p",
                ports,
                "-o",
                "xml",
            ])
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

/// Writes an inventory of `(name, address)` nodes; returns its path.
fn write_inventory(dir: &Path, nodes: &[(&str, &str)]) -> String {
    let mut text = String::from("apiVersion: portwarden.io/v1alpha1\nkind: Inventory\nnodes:\n");
    for (name, address) in nodes {
        text.push_str(&format!(
            "  - name: {name}\n    addresses: [\"{address}\"]\n"
        ));
    }
    let path = dir.join("inventory.yaml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// Targets outside an inventory are refused before anything is sent; the message names the
/// target, the reason and the flags. Loopback needs no flag. (No lab: nothing is sent.)
#[test]
fn scan_refuses_targets_outside_the_inventory() {
    let dir = tempfile::tempdir().unwrap();
    let inventory = write_inventory(dir.path(), &[("web-1", "10.213.0.11")]);
    let run = |args: &[&str]| {
        let out = std::process::Command::new(BIN).args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, err) = run(&["scan", "192.0.2.7", "-p", "80", "--scan", "connect"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("refusing to scan 192.0.2.7")
            && err.contains("not in an inventory")
            && err.contains("--inventory FILE")
            && err.contains("--any-target"),
        "{err}"
    );
    let (code, err) = run(&[
        "scan",
        "--inventory",
        &inventory,
        "10.213.0.12",
        "-p",
        "80",
        "--scan",
        "connect",
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("refusing to scan 10.213.0.12")
            && err.contains("inventory.yaml")
            && err.contains("--any-target"),
        "{err}"
    );
    let (code, err) = run(&["scan", "--inventory", &inventory, "web-9", "-p", "80"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("neither a node of"), "{err}");
    // --inventory and --any-target contradict each other.
    let (code, _) = run(&[
        "scan",
        "--inventory",
        &inventory,
        "--any-target",
        "web-1",
        "-p",
        "80",
    ]);
    assert_eq!(code, Some(1));
    // Loopback is allowed without flags: its packets never leave this host.
    let (code, err) = run(&[
        "scan",
        "127.0.0.1",
        "::1",
        "-p",
        "1",
        "--scan",
        "connect",
        "-o",
        "json",
    ]);
    assert_eq!(code, Some(0), "{err}");
}

/// SYN counters in one node's INPUT: (within the kernel's own limit, over it).
fn syn_counters(node: &portwarden_lab::Netns) -> (u64, u64) {
    let out = node
        .exec(&["iptables", "-L", "INPUT", "-v", "-x", "-n"])
        .unwrap();
    let counts: Vec<u64> = out
        .lines()
        .filter(|l| l.contains("pw-rate"))
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(counts.len(), 2, "{out}");
    (counts[0], counts[1])
}

/// The per-target cap measured where it matters, at each target: every node counts the SYNs
/// it receives with the kernel's own token bucket (`-m limit`, twice our cap, a burst of 20)
/// and counts those over it separately. With `--max-rate-per-target` nothing is ever over the
/// kernel's limit at either node, though both are scanned at once and no total `--rate` is
/// set; every probe arrives (the totals add up). Without the cap the same scan overruns the
/// limit at once, which shows the measurement can fail.
#[test]
fn max_rate_per_target_holds_at_each_target() {
    skip_unless_lab!();
    const CAP: u32 = 100;
    const PORTS: &str = "1001-1200";
    let lab = Lab::builder("pertarget")
        .nodes(2)
        .scanners(1)
        .build()
        .unwrap();
    let scanner = lab.scanner(0);
    let limit = format!("{}/second", 2 * CAP);
    for node in lab.nodes() {
        node.iptables(&[
            "-A",
            "INPUT",
            "-p",
            "tcp",
            "--syn",
            "-m",
            "limit",
            "--limit",
            &limit,
            "--limit-burst",
            "20",
            "-m",
            "comment",
            "--comment",
            "pw-rate-within",
            "-j",
            "ACCEPT",
        ])
        .unwrap();
        node.iptables(&[
            "-A",
            "INPUT",
            "-p",
            "tcp",
            "--syn",
            "-m",
            "comment",
            "--comment",
            "pw-rate-over",
            "-j",
            "ACCEPT",
        ])
        .unwrap();
    }
    let targets: Vec<String> = lab.nodes().iter().map(|n| n.v4().to_string()).collect();
    let scan = |extra: &[&str]| {
        let mut args = vec![BIN, "scan", "--any-target"];
        args.extend(targets.iter().map(String::as_str));
        args.extend(["-p", PORTS, "-o", "json"]);
        args.extend_from_slice(extra);
        let json = scanner.exec(&args).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        for host in v["hosts"].as_array().unwrap() {
            let ports = host["ports"].as_array().unwrap();
            assert_eq!(ports.len(), 200);
            assert!(ports.iter().all(|p| p["state"] == "closed"), "{json}");
        }
    };
    let cap = CAP.to_string();
    scan(&["--max-rate-per-target", &cap]);
    for (i, node) in lab.nodes().iter().enumerate() {
        let (within, over) = syn_counters(node);
        assert!(within >= 200, "node {i}: only {within} probes arrived");
        assert_eq!(
            over, 0,
            "node {i}: {over} SYNs came faster than {limit} (burst 20) with a cap of {CAP}/s"
        );
    }
    for node in lab.nodes() {
        node.exec(&["iptables", "-Z", "INPUT"]).unwrap();
    }
    scan(&[]);
    let overs: Vec<u64> = lab.nodes().iter().map(|n| syn_counters(n).1).collect();
    assert!(
        overs.iter().any(|&o| o > 0),
        "without a cap the scan should overrun {limit} at a node: {overs:?}"
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

/// A target without a route is reported (JSON `error`, a table line, a message on stderr),
/// the others are scanned; the exit code is 1 because not everything asked for was scanned.
#[test]
fn scan_reports_an_unroutable_target_and_scans_the_others() {
    skip_unless_lab!();
    let lab = Lab::builder("scanunroute")
        .nodes(1)
        .scanners(1)
        .build()
        .unwrap();
    let node = lab.node(0);
    let _listener = node.tcp_listener(80).unwrap();
    let (v4, v6) = (node.v4().to_string(), node.v6().to_string());
    for output in ["json", "table"] {
        let out = lab
            .scanner(0)
            .output(&[
                BIN,
                "scan",
                "--any-target",
                &v4,
                "10.9.9.9",
                &v6,
                "fd00:9::9",
                "-p",
                "80",
                "-o",
                output,
            ])
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert_eq!(out.status.code(), Some(1), "{output}: {stdout}{stderr}");
        for bad in ["10.9.9.9", "fd00:9::9"] {
            assert!(
                stderr.contains(&format!(
                    "error: {bad} was not scanned: no route to {bad}: Network is unreachable (os error 101)"
                )),
                "{output}: {stderr}"
            );
        }
        if output == "json" {
            let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
            let hosts = v["hosts"].as_array().unwrap();
            assert_eq!(hosts.len(), 4, "{stdout}");
            assert_eq!(hosts[0]["ports"][0]["state"], "open", "{stdout}");
            assert_eq!(hosts[2]["ports"][0]["state"], "open", "{stdout}");
            assert!(
                hosts[1]["error"]
                    .as_str()
                    .unwrap()
                    .starts_with("no route to 10.9.9.9"),
                "{stdout}"
            );
        } else {
            assert!(
                stdout.contains(
                    "Scan report for 10.9.9.9\nNot scanned: no route to 10.9.9.9: Network is unreachable (os error 101)"
                ),
                "{stdout}"
            );
            assert!(stdout.contains("80/tcp open"), "{stdout}");
        }
    }
}

/// A UDP scan of every port would run for hours (each target's kernel answers about one
/// closed port per second); `scan` says so before it starts, and how to shorten it. No
/// progress bar when stderr is not a terminal. The scan is killed once the warning is out.
#[test]
fn a_long_udp_scan_is_announced_with_an_estimate() {
    skip_unless_lab!();
    let lab = Lab::builder("udpwarn")
        .nodes(1)
        .scanners(1)
        .build()
        .unwrap();
    let target = lab.node(0).v4().to_string();
    let err = stderr_until(
        BIN,
        lab.scanner(0),
        &["scan", "--any-target", &target, "-p", "-", "--scan", "udp"],
        std::time::Duration::from_secs(20),
        |l| l.starts_with("warning:"),
    );
    let warning = err
        .lines()
        .find(|l| l.starts_with("warning:"))
        .unwrap_or_else(|| panic!("no warning before the scan: {err:?}"));
    for want in [
        "warning: this scan may take about ",
        "65535 UDP ports on 1 target",
        "about one ICMP port-unreachable per second",
        "scan fewer ports",
    ] {
        assert!(warning.contains(want), "{want:?} missing in {warning:?}");
    }
    assert!(!err.contains('\r') && !err.contains('\x1b'), "{err:?}");
}

#[test]
fn a_udp_scan_on_a_terminal_says_it_waits_on_the_nodes_icmp_rate_limit() {
    // The node keeps the kernel's ICMP limits: its 40 closed UDP ports answer six at once,
    // then one a second. On a terminal the progress bar must say why the scan is slow, with
    // the measured rate and a time left, and the scan must still find every port closed.
    skip_unless_lab!();
    use std::io::Read;
    let lab = Lab::builder("udpbar").nodes(1).scanners(1).build().unwrap();
    let target = lab.node(0).v4().to_string();
    let command = format!("{BIN} scan --any-target {target} -p 5000-5039 --scan udp");
    // script(1) gives the scan a pseudo-terminal; what it draws comes back on our pipe.
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.scanner(0).name])
        .args(["script", "-qfec", &command, "/dev/null"])
        .env("TERM", "xterm")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = out.read_to_end(&mut all);
        String::from_utf8_lossy(&all).into_owned()
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the scan did not finish in 180 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let shown = reader.join().unwrap();
    let tail: String = shown
        .chars()
        .rev()
        .take(600)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    assert!(status.success(), "{tail}");
    for want in ["waiting on the node's ICMP rate limit, ~1/s", "ETA "] {
        assert!(
            shown.contains(want),
            "{want:?} never shown; the end: {tail:?}"
        );
    }
    assert!(shown.contains("Not shown: 40 closed udp ports"), "{tail}");
    // The count of settled ports only grows.
    let done: Vec<u32> = shown
        .split(" ports")
        .filter_map(|s| s.rsplit(' ').next()?.split('/').next()?.parse().ok())
        .collect();
    assert!(done.len() > 10, "{tail}");
    assert!(
        done.windows(2).all(|w| w[0] <= w[1]),
        "went backwards: {done:?}"
    );
}
