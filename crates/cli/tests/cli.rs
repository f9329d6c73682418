//! End-to-end tests of the `portwarden` binary's pure commands (`validate`, `explain`): exit
//! codes, located error messages for every fixture under `tests/fixtures/invalid/`, and the
//! JSON shapes of docs/cli.md.

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

/// A rate of 0 would mean "no cap" to the engine, the opposite of what it says: every rate
/// flag refuses it, naming the flag. (Each case fails before anything runs; the agent and
/// verify cases carry a second mistake that stops them before they touch anything, should
/// the rate ever be accepted again.)
#[test]
fn a_rate_of_zero_is_refused() {
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "scan",
                "127.0.0.1",
                "-p",
                "80",
                "--scan",
                "connect",
                "--rate",
                "0",
            ],
            "--rate",
        ),
        (
            &[
                "scan",
                "127.0.0.1",
                "-p",
                "80",
                "--scan",
                "connect",
                "--max-rate-per-target",
                "0",
            ],
            "--max-rate-per-target",
        ),
        (&["verify", "-f", "does/not/exist", "--rate", "0"], "--rate"),
        (
            &[
                "verify",
                "-f",
                "does/not/exist",
                "--max-rate-per-target",
                "0",
            ],
            "--max-rate-per-target",
        ),
        (
            &[
                "agent",
                "--policy-dir",
                "does/not/exist",
                "--inventory",
                "does/not/exist",
                "--refresh",
                "0",
                "--scan-rate",
                "0",
            ],
            "--scan-rate",
        ),
    ];
    for (args, flag) in cases {
        let out = portwarden(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(&format!("invalid value '0' for '{flag} <PPS>'"))
                && err.contains("at least 1 probe per second"),
            "{args:?}: {err}"
        );
    }
    // 1 is a rate.
    let out = portwarden(&[
        "scan",
        "127.0.0.1",
        "-p",
        "1",
        "--scan",
        "connect",
        "--rate",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

/// `--labels` says which label is wrong: a key given twice (the last one used to win
/// silently), or a key or value Kubernetes would refuse.
#[test]
fn bad_labels_are_refused_at_the_offending_label() {
    let explain = |labels: &str| {
        portwarden(&[
            "explain",
            "-f",
            "examples/web",
            "--node",
            "x",
            "--labels",
            labels,
            "--port",
            "80",
            "--from",
            "10.0.0.1",
        ])
    };
    for (labels, want) in [
        (
            "role=web,role=db",
            "duplicate label key \"role\" in \"role=db\"",
        ),
        ("bad label=x", "invalid label key \"bad label\""),
        ("role=we b", "invalid label value \"we b\""),
        ("role=-web", "invalid label value \"-web\""),
        ("example.com/=x", "invalid label key \"example.com/\""),
    ] {
        let out = explain(labels);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{labels}: {err}");
        assert!(err.contains(want), "{labels}: {err}");
    }
    for good in ["role=web,zone=a", "example.com/role=web", "role=", ""] {
        let out = explain(good);
        assert_eq!(out.status.code(), Some(0), "{good}: {}", text(&out.stderr));
    }
}

/// `explain` prints text from policies; control characters in it (an ANSI escape, a line
/// break) are shown escaped, so a policy cannot repaint or forge the terminal's output.
#[test]
fn explain_escapes_control_characters_from_policies() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        "apiVersion: portwarden.io/v1alpha1\nkind: PortPolicy\nmetadata:\n  name: web\nspec:\n  nodeSelector: {}\n  ports:\n    - ports: \"80\"\n      state: open\n      reason: \"INC-1 \\e[31mred\\nforged line\"\n",
    )
    .unwrap();
    let out = portwarden(&[
        "explain",
        "-f",
        dir.path().to_str().unwrap(),
        "--node",
        "x",
        "--labels",
        "",
        "--port",
        "80",
        "--from",
        "10.0.0.1",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!stdout.contains('\x1b'), "{stdout:?}");
    assert!(
        stdout.contains("  reason: INC-1 \\x1b[31mred\\nforged line\n"),
        "{stdout:?}"
    );
    assert!(
        !stdout.lines().any(|l| l.starts_with("forged")),
        "{stdout:?}"
    );
    // JSON keeps the text as it is (JSON escapes it).
    let out = portwarden(&[
        "explain",
        "-f",
        dir.path().to_str().unwrap(),
        "--node",
        "x",
        "--labels",
        "",
        "--port",
        "80",
        "--from",
        "10.0.0.1",
        "-o",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["reason"], "INC-1 \x1b[31mred\nforged line");
}

/// Logs go to stderr; they carry ANSI colour only when stderr is a terminal and NO_COLOR is
/// unset. The controller logs at trace level while it looks for a cluster (none here: it
/// fails before any connection), which makes it a command that logs without a lab.
#[test]
fn logs_are_coloured_only_on_a_terminal_without_no_color() {
    let home = tempfile::tempdir().unwrap();
    let controller = |no_color: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_portwarden"));
        c.args(["controller", "--metrics-addr", "127.0.0.1:0"])
            .env("RUST_LOG", "trace")
            .env("HOME", home.path())
            .env_remove("KUBECONFIG")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("NO_COLOR");
        if no_color {
            c.env("NO_COLOR", "1");
        }
        c
    };
    // stderr to a pipe: no colour.
    let out = controller(false).output().unwrap();
    let err = text(&out.stderr);
    assert!(
        err.contains("TRACE"),
        "the controller logged nothing: {err}"
    );
    assert!(!err.contains('\x1b'), "colour in logs to a pipe: {err:?}");

    // On a terminal (script(1) gives the command a pseudo-terminal): colour, unless NO_COLOR.
    let on_terminal = |no_color: bool| {
        let c = controller(no_color);
        let line = std::iter::once(c.get_program().to_string_lossy().into_owned())
            .chain(c.get_args().map(|a| a.to_string_lossy().into_owned()))
            .collect::<Vec<_>>()
            .join(" ");
        let mut s = Command::new("script");
        s.args(["-qec", &line, "/dev/null"]);
        for (k, v) in c.get_envs() {
            match v {
                Some(v) => s.env(k, v),
                None => s.env_remove(k),
            };
        }
        text(&s.output().expect("script(1) from util-linux").stdout)
    };
    let tty = on_terminal(false);
    assert!(tty.contains("TRACE") && tty.contains('\x1b'), "{tty:?}");
    let tty = on_terminal(true);
    assert!(tty.contains("TRACE") && !tty.contains('\x1b'), "{tty:?}");
}

/// A policy file with one entry per `(state, from, expires)`, all on 8080/tcp, in a fresh
/// directory.
fn expiring_policy(entries: &[(&str, &str, String)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from(
        "apiVersion: portwarden.io/v1alpha1\nkind: PortPolicy\nmetadata:\n  name: quarantine\nspec:\n  priority: 100\n  ports:\n",
    );
    for (state, from, expires) in entries {
        text.push_str(&format!("    - ports: 8080\n      state: {state}\n"));
        if !from.is_empty() {
            text.push_str(&format!("      from: [\"{from}\"]\n"));
        }
        if !expires.is_empty() {
            text.push_str(&format!("      expires: \"{expires}\"\n"));
        }
    }
    std::fs::write(dir.path().join("q.yaml"), text).unwrap();
    dir
}

/// The instant `secs` seconds from now, RFC 3339.
fn from_now(secs: i64) -> String {
    portwarden_policy::Timestamp::from_unix(portwarden_policy::Timestamp::now().unix() + secs)
        .to_string()
}

#[test]
fn explain_shows_when_entries_expire_and_which_have_expired() {
    let dir = expiring_policy(&[
        ("filtered", "", from_now(3 * 3600 + 12 * 60 + 30)),
        ("closed", "172.16.7.80", from_now(-(5 * 60 + 10))),
        ("closed", "", String::new()),
    ]);
    let path = dir.path().to_str().unwrap();
    let args = [
        "explain",
        "-f",
        path,
        "--labels",
        "role=web",
        "--port",
        "8080",
        "--from",
        "172.16.7.80",
    ];
    let out = portwarden(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0], "8080/tcp on vm from 172.16.7.80: filtered",
        "{table}"
    );
    assert!(
        lines[2].starts_with("  expires in 3h12m (")
            && lines[2].ends_with("); the next entry decides then"),
        "{table}"
    );
    assert!(
        table.contains("  quarantine, entry 1: closed (priority 100, source 172.16.7.80/32, ports 8080) expired 5 min ago ("),
        "{table}"
    );
    assert!(table.contains("), no longer applied"), "{table}");
    // the expired entry is also warned about at its token
    assert!(
        text(&out.stderr)
            .contains("q.yaml:14:16: warning: entry 1 of policy \"quarantine\" expired at "),
        "{}",
        text(&out.stderr)
    );
    let mut json = args.to_vec();
    json.extend(["-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&portwarden(&json).stdout).unwrap();
    assert_eq!(v["entry"], 0);
    assert!(v["expires_in_seconds"].as_i64().unwrap() > 3 * 3600);
    assert_eq!(v["overrides"][0]["entry"], 2);
    assert_eq!(v["expired"][0]["entry"], 1);
    assert!(v["expired"][0]["seconds_ago"].as_i64().unwrap() >= 310);
    // another source: the expired /32 entry does not match it, so it is not listed
    let v = explain_json(&[
        "-f", path, "--labels", "role=web", "--port", "8080", "--from", "10.0.0.1",
    ]);
    assert_eq!(v["expired"].as_array().unwrap().len(), 0);
}

#[test]
fn validate_warns_about_an_expired_entry_and_accepts_it() {
    let dir = expiring_policy(&[("filtered", "", "2020-01-01T00:00:00+01:00".into())]);
    let out = portwarden(&["validate", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains(
            ":10:16: warning: entry 0 of policy \"quarantine\" expired at 2019-12-31T23:00:00Z ("
        ),
        "{err}"
    );
}
