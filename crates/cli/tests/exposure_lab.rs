//! `portwarden plan`'s exposure diff end to end in a namespace lab, on both iptables backends:
//! after policy A is applied, planning policy B names what a scanner will see change (from the
//! rules in the kernel, read back), a change of rules alone says "no change in exposure", and
//! a rule deleted by hand shows as the drift it is; `apply -o json` reports its change alike.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::Path;
use std::process::Output;

use portwarden_lab::{Lab, Netns, skip_unless_lab};

const BIN: &str = env!("CARGO_BIN_EXE_portwarden");

const HEAD: &str = "apiVersion: portwarden.io/v1alpha1\nkind: PortPolicy\nmetadata:\n  name: web\nspec:\n  ports:\n";

/// Policy A: 443 and 8080 open.
const A: &str = "    - ports: 443\n      state: open\n    - ports: 8080\n      state: open\n";
/// Policy B: 443 filtered, 8080 closed to one address.
const B: &str = "    - ports: 443\n      state: filtered\n    - ports: 8080\n      state: open\n    - ports: 8080\n      state: closed\n      from: [172.16.7.80/32]\n";
/// A's entries in the other order: every rule's comment changes, no decision does.
const A_REORDERED: &str =
    "    - ports: 8080\n      state: open\n    - ports: 443\n      state: open\n";

fn run(node: &Netns, dir: &Path, body: &str, cmd: &str, backend: &str, json: bool) -> Output {
    let file = dir.join("web.yaml");
    std::fs::write(&file, format!("{HEAD}{body}")).unwrap();
    let file = file.to_str().unwrap();
    let mut v = vec![
        BIN,
        cmd,
        "-f",
        file,
        "--labels",
        "role=web",
        "--backend",
        backend,
    ];
    if json {
        v.extend(["-o", "json"]);
    }
    node.output(&v).unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The exposure rows of a `plan -o json`, as `PORTS/PROTO from SOURCE: BEFORE -> AFTER`.
fn rows(out: &Output) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["exposure"]
        .as_array()
        .unwrap_or_else(|| panic!("no exposure in {v}"))
        .iter()
        .map(|c| {
            format!(
                "{}/{} from {}: {} -> {}",
                c["ports"].as_str().unwrap(),
                c["protocol"].as_str().unwrap(),
                c["source"].as_str().unwrap(),
                c["before"].as_str().unwrap(),
                c["after"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn plan_shows_the_exposure_a_scanner_will_see_change() {
    skip_unless_lab!();
    for backend in ["nft", "legacy"] {
        let dir = tempfile::tempdir().unwrap();
        let lab = Lab::builder("cliexpo").nodes(1).build().unwrap();
        let node = lab.node(0);
        // portwarden manages IPv6 wherever the kernel has it (see Netfilter::detect)
        let ipv6 = Path::new("/proc/sys/net/ipv6").exists();

        // nothing applied yet: everything A decides is unmanaged now
        let out = run(node, dir.path(), A, "plan", backend, true);
        assert_eq!(out.status.code(), Some(2), "{backend}: {}", text(&out));
        assert!(
            rows(&out).contains(&"443,8080/tcp from 0.0.0.0/0: unmanaged -> open".to_string()),
            "{backend}: {:?}",
            rows(&out)
        );

        let out = run(node, dir.path(), A, "apply", backend, false);
        assert_eq!(out.status.code(), Some(0), "{backend}: {}", text(&out));

        // B against the kernel's A
        let out = run(node, dir.path(), B, "plan", backend, true);
        assert_eq!(out.status.code(), Some(2), "{backend}: {}", text(&out));
        let mut want = vec![
            "443/tcp from 0.0.0.0/0: open -> filtered".to_string(),
            "8080/tcp from 172.16.7.80/32: open -> closed".to_string(),
        ];
        if ipv6 {
            want.push("443/tcp from ::/0: open -> filtered".into());
        }
        assert_eq!(rows(&out), want, "{backend}");
        let out = run(node, dir.path(), B, "plan", backend, false);
        let table = text(&out);
        assert!(
            table.contains("\nexposure (what a scanner will see change; unmanaged: left to the host's rules):\n  443/tcp from 0.0.0.0/0: open -> filtered\n  8080/tcp from 172.16.7.80/32: open -> closed\n"),
            "{backend}: {table}"
        );

        // rules change, exposure does not
        let out = run(node, dir.path(), A_REORDERED, "plan", backend, true);
        assert_eq!(out.status.code(), Some(2), "{backend}: {}", text(&out));
        assert_eq!(rows(&out), Vec::<String>::new(), "{backend}");
        let changes = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["changes"]
            .as_u64()
            .unwrap();
        assert!(changes > 0);
        let out = run(node, dir.path(), A_REORDERED, "plan", backend, false);
        assert!(
            text(&out).contains(&format!(
                "\n{changes} rule changes, no change in exposure\n"
            )),
            "{backend}: {}",
            text(&out)
        );

        // converged: no exposure line at all
        let out = run(node, dir.path(), A, "plan", backend, false);
        assert_eq!(out.status.code(), Some(0), "{backend}: {}", text(&out));
        assert!(
            !text(&out).contains("exposure"),
            "{backend}: {}",
            text(&out)
        );

        // "before" is the kernel's, not the file's: a leaf rule deleted by hand is unmanaged now
        let leaf = "PORTWARDEN-TCP-256-511";
        node.exec(&[&format!("iptables-{backend}"), "-w", "-F", leaf])
            .unwrap();
        let out = run(node, dir.path(), A, "plan", backend, true);
        assert_eq!(
            rows(&out),
            ["443/tcp from 0.0.0.0/0: unmanaged -> open"],
            "{backend}"
        );

        // apply -o json reports what it changed the same way
        let out = run(node, dir.path(), A, "apply", backend, false);
        assert_eq!(out.status.code(), Some(0), "{backend}: {}", text(&out));
        let out = run(node, dir.path(), B, "apply", backend, true);
        assert_eq!(out.status.code(), Some(0), "{backend}: {}", text(&out));
        assert_eq!(rows(&out), want, "{backend}");
    }
}
