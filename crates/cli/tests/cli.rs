//! End-to-end tests of the `portwarden` binary's pure commands (`validate`, `explain`): exit
//! codes, located error messages for every fixture under `tests/fixtures/invalid/`, and the
//! JSON shapes of CLI.md.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn portwarden(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portwarden"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run portwarden")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn examples_are_valid() {
    let out = portwarden(&["validate", "examples/"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("ok: 3 policies"));
}

/// Every fixture states on its first line what must be reported: `# expect: LINE:COL: MESSAGE`.
#[test]
fn every_invalid_fixture_is_reported_at_its_token() {
    let dir = root().join("tests/fixtures/invalid");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 25, "fixtures missing: {}", files.len());
    for file in files {
        let name = format!(
            "tests/fixtures/invalid/{}",
            file.file_name().unwrap().to_str().unwrap()
        );
        let content = std::fs::read(&file).unwrap();
        let first = text(&content).lines().next().unwrap().to_string();
        let expect = first
            .strip_prefix("# expect: ")
            .unwrap_or_else(|| panic!("{name}: first line must be '# expect: LINE:COL: MESSAGE'"));
        let (loc, message) = expect.split_at(expect.find(": ").unwrap());
        let out = portwarden(&["validate", &name]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        let headline = format!("{name}:{loc}: error: {}", &message[2..]);
        assert!(
            err.contains(&headline),
            "{name}: expected\n  {headline}\ngot\n{err}"
        );
        assert!(
            out.stdout.is_empty(),
            "{name}: nothing on stdout when invalid"
        );
        if !name.contains("utf8") {
            assert!(
                err.contains(" | ") && err.contains('^'),
                "{name}: no snippet with caret:\n{err}"
            );
        }
    }
}

#[test]
fn all_problems_of_several_files_in_one_run() {
    let out = portwarden(&[
        "validate",
        "tests/fixtures/invalid/bad-state.yaml",
        "examples/",
        "tests/fixtures/invalid/cidr-host-bits.yaml",
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("bad-state.yaml:9:14"), "{err}");
    assert!(err.contains("cidr-host-bits.yaml:10:14"), "{err}");
    assert!(err.contains("did you mean \"closed\"?"), "{err}");
    assert!(
        err.contains("did you mean \"10.0.0.0/24\" (the network) or \"10.0.0.5/32\" (one host)?"),
        "{err}"
    );
    assert!(err.contains("2 problems in 2 files"), "{err}");
}

#[test]
fn warnings_are_shown_and_do_not_fail_validate() {
    // A node without addresses can be enforced by its agent but never verified: said, not
    // refused.
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("inventory.yaml");
    std::fs::write(
        &inv,
        "apiVersion: portwarden.io/v1alpha1\nkind: Inventory\nnodes:\n  - name: web-1\n    addresses: []\n",
    )
    .unwrap();
    let out = portwarden(&["validate", inv.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        text(&out.stdout).starts_with("ok: 0 policies"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        err.contains(&format!(
            "{}:5:16: warning: node \"web-1\" has no addresses",
            inv.display()
        )),
        "{err}"
    );
    // Beside an error, the warning is shown but not counted as a problem.
    let bad = root().join("tests/fixtures/invalid/bad-state.yaml");
    let out = portwarden(&["validate", inv.to_str().unwrap(), bad.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("warning: node \"web-1\""), "{err}");
    assert!(err.contains("1 problem in 1 file"), "{err}");
}

fn explain_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["explain", "-o", "json"];
    all.extend_from_slice(args);
    let out = portwarden(&all);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn explain_seed_story() {
    let base = [
        "-f",
        "examples/quarantine",
        "--inventory",
        "examples/inventory.yaml",
        "--node",
        "web-1",
    ];
    let mut a = base.to_vec();
    a.extend(["--port", "80/tcp", "--from", "172.16.7.80"]);
    let v = explain_json(&a);
    assert_eq!(v["node"], "web-1");
    assert_eq!(v["port"], 80);
    assert_eq!(v["protocol"], "tcp");
    assert_eq!(v["from"], "172.16.7.80");
    assert_eq!(v["state"], "closed");
    assert_eq!(v["policy"], "quarantine");
    assert_eq!(v["entry"], 1);
    assert_eq!(v["managed"], true);

    // Another source: the quarantine does not cover it, and no other policy is loaded.
    let mut a = base.to_vec();
    a.extend(["--port", "80/tcp", "--from", "10.213.1.2"]);
    let v = explain_json(&a);
    assert_eq!(v["state"], serde_json::Value::Null);
    assert_eq!(v["managed"], false);

    // 8080 is closed to everyone on web nodes, and not covered on the database.
    let mut a = base.to_vec();
    a.extend(["--port", "8080", "--from", "10.213.1.2"]);
    assert_eq!(explain_json(&a)["state"], "closed");
    let a = [
        "-f",
        "examples/quarantine",
        "--inventory",
        "examples/inventory.yaml",
        "--node",
        "db-1",
        "--port",
        "8080",
        "--from",
        "10.213.1.2",
    ];
    assert_eq!(explain_json(&a)["managed"], false);
}

#[test]
fn explain_with_all_examples_uses_precedence() {
    let ask = |port: &str, from: &str| {
        explain_json(&[
            "-f", "examples", "--node", "web-1", "--port", port, "--from", from,
        ])
    };
    let v = ask("80/tcp", "10.213.1.2");
    assert_eq!(
        (v["state"].as_str(), v["policy"].as_str()),
        (Some("open"), Some("web"))
    );
    let v = ask("80/tcp", "172.16.7.80");
    assert_eq!(
        (v["state"].as_str(), v["policy"].as_str()),
        (Some("closed"), Some("quarantine"))
    );
    assert_eq!(v["overrides"][0]["policy"], "web");
    assert_eq!(ask("9090", "10.213.1.2")["state"], "filtered");
    assert_eq!(ask("9090", "10.213.2.2")["state"], "open");
    assert_eq!(ask("161/udp", "10.213.1.2")["state"], "closed");
    assert_eq!(ask("161/tcp", "10.213.1.2")["managed"], false);
    // Labels instead of an inventory.
    let v = explain_json(&[
        "-f",
        "examples/web",
        "--node",
        "x",
        "--labels",
        "role=db",
        "--port",
        "80",
        "--from",
        "10.0.0.1",
    ]);
    assert_eq!(v["managed"], false);
}

#[test]
fn errors_exit_1_with_a_message() {
    let cases: &[&[&str]] = &[
        &[
            "explain", "-f", "examples", "--node", "nope", "--port", "80", "--from", "10.0.0.1",
        ],
        &[
            "explain", "-f", "examples", "--node", "web-1", "--port", "80/sctp", "--from",
            "10.0.0.1",
        ],
        &[
            "explain", "-f", "examples", "--node", "web-1", "--port", "0", "--from", "10.0.0.1",
        ],
        &[
            "explain",
            "-f",
            "examples/web",
            "--node",
            "web-1",
            "--port",
            "80",
            "--from",
            "10.0.0.1",
        ],
        &["validate", "does/not/exist"],
        &["no-such-command"],
    ];
    for args in cases {
        let out = portwarden(args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(text(&out.stderr).contains("error"), "{args:?}");
    }
    let out = portwarden(&[
        "explain", "-f", "examples", "--node", "nope", "--port", "80", "--from", "10.0.0.1",
    ]);
    assert!(text(&out.stderr).contains("known nodes: web-1, web-2, db-1"));
}

#[test]
fn help_and_version() {
    for args in [
        &["--help"][..],
        &["validate", "--help"],
        &["explain", "--help"],
        &["--version"],
    ] {
        let out = portwarden(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
    }
    assert!(text(&portwarden(&["explain", "--help"]).stdout).contains("Example:"));
}
