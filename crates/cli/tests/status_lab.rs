//! `portwarden status` in a namespace lab, on both iptables backends: a policy is applied, a
//! scanner namespace connects a known number of times to one entry's port over IPv4 and IPv6,
//! and `status -o json` counts exactly those packets for that entry, in each family, and none
//! for the other entry; every rule is in place, and an expired entry says so.
//!
//! The probed entry is `closed` (a TCP reset): every connect is one SYN and one refusal, so the
//! number of packets the entry's rule sees is the number of attempts, with no retransmission.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::Output;
use std::time::Duration;

use portwarden_lab::{Lab, Netns, skip_unless_lab};

const BIN: &str = env!("CARGO_BIN_EXE_portwarden");

fn pw(node: &Netns, args: &[&str]) -> Output {
    let mut v = vec![BIN];
    v.extend_from_slice(args);
    node.output(&v).unwrap()
}

/// `n` TCP connects from `from` to `addr`, each refused by the node's reset.
fn knock(from: &Netns, addr: SocketAddr, n: usize) {
    from.run(move || {
        for i in 0..n {
            let e = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                .map(|_| ())
                .expect_err("the closed entry must refuse the connection");
            assert_eq!(
                e.kind(),
                std::io::ErrorKind::ConnectionRefused,
                "attempt {i} to {addr}: {e}"
            );
        }
    })
    .unwrap();
}

const POLICY: &str = "apiVersion: portwarden.io/v1alpha1
kind: PortPolicy
metadata:
  name: knock
spec:
  priority: 100
  ports:
    - ports: \"8080\"
      state: closed
    - ports: \"9090\"
      state: closed
    - ports: \"7070\"
      state: filtered
      expires: \"2020-01-01T00:00:00Z\"
";

fn entry(v: &serde_json::Value, i: u64) -> &serde_json::Value {
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["policy"] == "knock" && e["entry"] == i)
        .unwrap_or_else(|| panic!("entry {i} in {v}"))
}

fn family<'a>(e: &'a serde_json::Value, f: &str) -> &'a serde_json::Value {
    e["per_family"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["family"] == f)
        .unwrap_or_else(|| panic!("{f} in {e}"))
}

#[test]
fn status_counts_exactly_the_probes_of_one_entry() {
    skip_unless_lab!();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("knock.yaml"), POLICY).unwrap();
    let policy = dir.path().to_string_lossy().into_owned();
    for backend in ["nft", "legacy"] {
        let lab = Lab::builder("clistat")
            .nodes(1)
            .scanners(1)
            .build()
            .unwrap();
        let (node, scanner) = (lab.node(0), lab.scanner(0));
        let args = [
            "-f",
            &policy,
            "--labels",
            "",
            "--node",
            "n1",
            "--backend",
            backend,
        ];
        let mut apply = vec!["apply"];
        apply.extend_from_slice(&args);
        let out = pw(node, &apply);
        assert_eq!(out.status.code(), Some(0), "{backend}: {out:?}");

        knock(scanner, SocketAddr::new(IpAddr::V4(node.v4()), 8080), 5);
        knock(scanner, SocketAddr::new(IpAddr::V6(node.v6()), 8080), 3);

        let mut status = vec!["status", "-o", "json"];
        status.extend_from_slice(&args);
        let out = pw(node, &status);
        assert_eq!(out.status.code(), Some(0), "{backend}: {out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["backend"], backend);
        assert!(
            v["counters_since"]
                .as_str()
                .unwrap()
                .contains("since each rule was written")
        );
        let probed = entry(&v, 0);
        assert_eq!(probed["packets"], 5 + 3, "{backend}: {probed}");
        assert_eq!(family(probed, "ipv4")["packets"], 5, "{backend}: {probed}");
        assert_eq!(family(probed, "ipv6")["packets"], 3, "{backend}: {probed}");
        // a SYN is 60 bytes over IPv4 (20 + 40 with options) and 80 over IPv6: at least 40 each
        assert!(probed["bytes"].as_u64().unwrap() >= 8 * 40, "{probed}");
        assert_eq!(probed["in_place"], true, "{backend}: {probed}");
        assert_eq!(probed["ports"], "8080");
        assert_eq!(probed["state"], "closed");
        let quiet = entry(&v, 1);
        assert_eq!((&quiet["packets"], &quiet["bytes"]), (&0.into(), &0.into()));
        assert_eq!(quiet["in_place"], true, "{backend}: {quiet}");
        let expired = entry(&v, 2);
        assert_eq!(expired["applied"], false, "{expired}");
        assert!(expired["expires_in_seconds"].as_i64().unwrap() < 0);

        // automatic detection (which reads both backends anyway, and status takes its reads)
        // finds the same backend and the same counts
        let out = pw(
            node,
            &[
                "status", "-o", "json", "-f", &policy, "--labels", "", "--node", "n1",
            ],
        );
        assert_eq!(out.status.code(), Some(0), "{backend}: {out:?}");
        let auto: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(auto["backend"], backend, "{auto}");
        assert_eq!(
            auto["entries"], v["entries"],
            "{backend}: auto and fixed differ"
        );

        // the table says the same for people
        let mut table = vec!["status"];
        table.extend_from_slice(&args);
        let out = pw(node, &table);
        assert_eq!(out.status.code(), Some(0), "{backend}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = |port: &str| {
            text.lines()
                .find(|l| l.starts_with("knock") && l.contains(port))
                .unwrap_or_else(|| panic!("a line for {port}: {text}"))
                .to_string()
        };
        assert!(
            line("8080").contains("in place") && line("8080").contains("8 (v4 5, v6 3)"),
            "{text}"
        );
        assert!(
            line("7070").contains("expired") && line("7070").contains("no longer applied"),
            "{text}"
        );
        assert!(text.contains("since each rule was written"), "{text}");

        // Someone else's rule above the jump shadows entry 1 (IPv4), and entry 1's IPv6 INPUT
        // leaf is flushed: status says both, and still exits 0.
        node.exec(&[
            &format!("iptables-{backend}"),
            "-w",
            "-I",
            "INPUT",
            "1",
            "-p",
            "tcp",
            "--dport",
            "9090",
            "-j",
            "ACCEPT",
        ])
        .unwrap();
        node.exec(&[
            &format!("ip6tables-{backend}"),
            "-w",
            "-F",
            "PORTWARDEN-TCP-8960-9215",
        ])
        .unwrap();
        let out = pw(node, &status);
        assert_eq!(out.status.code(), Some(0), "{backend}: {out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let hit = entry(&v, 1);
        assert_eq!(
            hit["shadowed_by"],
            serde_json::json!(["INPUT#1 (IPv4)"]),
            "{hit}"
        );
        assert_eq!(hit["in_place"], false, "{hit}");
        // (one rule fewer: the INPUT one; a forward-path one too when the lab forwards IPv6)
        let v6 = family(hit, "ipv6");
        let want = v6["rules_expected"].as_u64().unwrap();
        assert!(want >= 1, "{hit}");
        assert_eq!(v6["rules_in_place"].as_u64(), Some(want - 1), "{hit}");
        let v4 = family(hit, "ipv4");
        assert_eq!(v4["rules_in_place"], v4["rules_expected"], "{hit}");
        assert_eq!(
            entry(&v, 0)["packets"],
            8,
            "counters of untouched chains stay"
        );
        assert_eq!(v["shadowing"].as_array().unwrap().len(), 1, "{v}");
        let out = pw(node, &table);
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().find(|l| l.contains("9090")).unwrap();
        assert!(
            line.contains(&format!("v6 1 of {want} missing")) && line.contains("INPUT#1 (IPv4)"),
            "{text}"
        );
        assert!(
            text.contains("shadowed: foreign rule INPUT#1 (IPv4)"),
            "{text}"
        );
    }
}
