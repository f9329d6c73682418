//! `verify -o html` and `verify --html FILE`: the page of a real scan of a lab node (drift,
//! its cause, the reason of the entry that expected otherwise, escaped), beside JUnit on
//! standard output; an unwritable FILE refused before anything is scanned; and the agent's
//! page at `/`, of its peer scan and its inside view.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use portwarden_lab::skip_unless_lab;
use portwarden_reconcile::DEFAULT_AGENT_PORT;
use portwarden_reconcile::inside::http_get;

const BIN: &str = env!("CARGO_BIN_EXE_portwarden");

/// Port 81 must be open (nothing listens: drift), 82 closed (in sync); the drifting entry's
/// reason is markup that must show as text.
const POLICY: &str = "apiVersion: portwarden.io/v1alpha1\nkind: PortPolicy\nmetadata:\n  name: web\nspec:\n  nodeSelector: {}\n  ports:\n    - ports: \"81\"\n      state: open\n      reason: \"<script>alert(1)</script>\"\n    - ports: \"82\"\n      state: closed\n";

/// The policy and an inventory of one node `web-1` at `address`, under `dir`.
fn setup(dir: &Path, address: &str) -> (String, String) {
    let policy = dir.join("web.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let inventory = dir.join("inventory.yaml");
    std::fs::write(
        &inventory,
        format!(
            "apiVersion: portwarden.io/v1alpha1\nkind: Inventory\nnodes:\n  - name: web-1\n    addresses: [\"{address}\"]\n"
        ),
    )
    .unwrap();
    (
        policy.to_str().unwrap().to_string(),
        inventory.to_str().unwrap().to_string(),
    )
}

#[test]
fn an_unwritable_html_file_is_refused_before_the_scan() {
    let dir = tempfile::tempdir().unwrap();
    // TEST-NET-1: never reached, because nothing is scanned.
    let (policy, inventory) = setup(dir.path(), "192.0.2.1");
    let missing = dir.path().join("no/such/dir/report.html");
    let is_dir = dir.path().to_str().unwrap().to_string();
    for (path, says) in [
        (
            missing.to_str().unwrap(),
            "cannot create a file in".to_string(),
        ),
        (is_dir.as_str(), "is a directory; give a file name".into()),
    ] {
        let out = Command::new(BIN)
            .args(["verify", "-f", &policy, "--inventory", &inventory])
            .args(["--scan", "connect", "--agent-port", "0", "--html", path])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(&format!("--html {path}: {says}")), "{err}");
        assert!(out.stdout.is_empty(), "no report: nothing was scanned");
    }
    assert!(!missing.exists());
}

#[test]
fn verify_writes_the_page_beside_junit_and_as_its_output() {
    skip_unless_lab!();
    let lab = portwarden_lab::Lab::builder("html")
        .nodes(1)
        .scanners(1)
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (policy, inventory) = setup(dir.path(), &lab.node(0).v4().to_string());
    let page = dir.path().join("exposure.html");
    let page_arg = page.to_str().unwrap();
    let verify = |extra: &[&str]| {
        let mut args = vec![BIN, "verify", "-f", &policy, "--inventory", &inventory];
        args.extend_from_slice(&["--agent-port", "0"]);
        args.extend_from_slice(extra);
        lab.scanner(0).output(&args).unwrap()
    };

    let out = verify(&["-o", "junit", "--html", page_arg]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "drift: {out:?}");
    assert!(
        stdout.starts_with("<?xml") && stdout.contains("failures=\"1\""),
        "{stdout}"
    );
    let html = std::fs::read_to_string(&page).unwrap();
    assert_page(&html, &lab.scanner(0).v4().to_string());

    let out = verify(&["-o", "html"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_page(
        &String::from_utf8_lossy(&out.stdout),
        &lab.scanner(0).v4().to_string(),
    );
}

fn assert_page(html: &str, scanner: &str) {
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    for expected in [
        "<dd id=\"count-nodes\">1</dd>",
        "<dd id=\"count-drift\">1</dd>",
        "<dd id=\"count-in_sync\">1</dd>",
        &format!("<dd id=\"vantages\">{scanner}</dd>"),
        &format!("<th>from {scanner}</th>"),
        "<tr data-verdict=\"drift\"><th class=\"port\">81/tcp</th>",
        "drift</td><td>open</td><td>closed</td><td class=\"cause\">nothing is listening",
        "policy <code>web</code>, entry 0: open 81/tcp from any",
        "reason: &lt;script&gt;alert(1)&lt;/script&gt;",
    ] {
        assert!(html.contains(expected), "no {expected} in {html}");
    }
    assert!(!html.contains("<script"));
}

#[test]
fn the_agent_serves_the_page_of_its_peer_scan_and_inside_view_at_root() {
    skip_unless_lab!();
    let lab = portwarden_lab::Lab::builder("html-agent")
        .nodes(2)
        .scanners(1)
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(policies.join("web.yaml"), POLICY).unwrap();
    let inventory = dir.path().join("inventory.yaml");
    std::fs::write(
        &inventory,
        format!(
            "apiVersion: portwarden.io/v1alpha1\nkind: Inventory\nnodes:\n  - name: web-1\n    addresses: [\"{}\"]\n  - name: web-2\n    addresses: [\"{}\"]\n",
            lab.node(0).v4(),
            lab.node(1).v4()
        ),
    )
    .unwrap();
    let (policies, inventory) = (policies.to_str().unwrap(), inventory.to_str().unwrap());
    let _agent = lab
        .node(0)
        .spawn(&[
            BIN,
            "agent",
            "--policy-dir",
            policies,
            "--inventory",
            inventory,
            "--node",
            "web-1",
            "--refresh",
            "3600",
            "--scan-interval",
            "1",
        ])
        .unwrap();
    // web-1's agent scans web-2, where nothing listens on 81: drift.
    let addr = SocketAddr::new(lab.node(0).v4().into(), DEFAULT_AGENT_PORT);
    let drift_row = "<tr data-verdict=\"drift\"><th class=\"port\">81/tcp</th>";
    let until = Instant::now() + Duration::from_secs(30);
    let page = loop {
        let got = lab
            .scanner(0)
            .run(move || http_get(addr, "/", Duration::from_secs(5)))
            .unwrap();
        if let Ok(page) = &got
            && page.contains(drift_row)
        {
            break page.clone();
        }
        assert!(
            Instant::now() < until,
            "no page with web-2's drift: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    for expected in [
        "<h1>portwarden agent on web-1</h1>",
        "<meta http-equiv=\"refresh\" content=\"5\">",
        "(page served; peers scanned every 1 s)",
        "<h2>Inside view of web-1</h2>",
        "portwarden's rules are in place",
        "data-node=\"web-2\"",
        "policy <code>web</code>, entry 0",
    ] {
        assert!(page.contains(expected), "no {expected} in {page}");
    }
    assert!(!page.contains("<script"));
}
