//! `portwarden plan` / `apply` / `reset` end to end in a namespace lab: the binary runs inside
//! the node namespace (`ip netns exec`), on both iptables backends. Exit codes follow
//! docs/cli.md: plan 2 while changes are pending, 0 once converged; apply writes nothing the second time;
//! reset restores the node's own rules byte for byte; bad input changes nothing and exits 1.
//! Issue 13: plan names look-alike chains and rules and portwarden's rules left in the other
//! backend; an agent facing a table iptables cannot print refuses at every refresh and never
//! adds a jump. Other owners: `plan`, `apply` and `explain` warn about a firewalld-style
//! nftables table that rejects or drops managed ports, and name rules in the other backend.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::net::SocketAddr;
use std::process::Output;
use std::time::{Duration, Instant};

use portwarden_lab::{Lab, Netns, skip_unless_lab};
use portwarden_reconcile::DEFAULT_AGENT_PORT;
use portwarden_reconcile::inside::http_get;

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_portwarden");

fn root() -> String {
    format!("{}/../..", env!("CARGO_MANIFEST_DIR"))
}

fn pw(node: &Netns, args: &[&str]) -> Output {
    let mut v = vec![BIN];
    v.extend_from_slice(args);
    node.output(&v).unwrap()
}

fn save(node: &Netns, backend: &str) -> String {
    let mut all = String::new();
    for tool in ["iptables", "ip6tables"] {
        let text = node.exec(&[&format!("{tool}-{backend}-save")]).unwrap();
        // without banners and chain counters (packets keep flowing)
        all.extend(text.lines().filter(|l| !l.starts_with('#')).map(|l| {
            let l = match l.rsplit_once(" [") {
                Some((head, _)) if l.starts_with(':') => head,
                _ => l,
            };
            format!("{l}\n")
        }));
    }
    all
}

#[test]
fn plan_apply_reset_exit_codes_and_output() {
    skip_unless_lab!();
    let examples = format!("{}/examples", root());
    let inventory = format!("{}/examples/inventory.yaml", root());
    for backend in ["nft", "legacy"] {
        let lab = Lab::builder("clinf").nodes(1).scanners(1).build().unwrap();
        let node = lab.node(0);
        // the node's own rules, which must survive everything below
        node.exec(&[
            &format!("iptables-{backend}"),
            "-w",
            "-A",
            "INPUT",
            "-s",
            "192.0.2.0/24",
            "-j",
            "DROP",
        ])
        .unwrap();
        node.exec(&[
            &format!("ip6tables-{backend}"),
            "-w",
            "-A",
            "INPUT",
            "-s",
            "2001:db8::/32",
            "-j",
            "DROP",
        ])
        .unwrap();
        let before = save(node, backend);
        let common = [
            "-f",
            &examples,
            "--inventory",
            &inventory,
            "--node",
            "web-1",
            "--backend",
            backend,
        ];

        let mut plan_json = vec!["plan", "-o", "json"];
        plan_json.extend_from_slice(&common);
        let out = pw(node, &plan_json);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{backend}: changes pending: {out:?}"
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let adds = v["add"].as_array().unwrap();
        assert_eq!(v["changes"].as_u64().unwrap() as usize, adds.len());
        assert!(
            adds.iter()
                .any(|a| a.as_str().unwrap().contains("quarantine entry 0: closed"))
        );
        assert_eq!(v["backend"], backend);
        assert_eq!(save(node, backend), before, "{backend}: plan wrote nothing");

        let mut apply = vec!["apply"];
        apply.extend_from_slice(&common);
        let out = pw(node, &apply);
        assert_eq!(out.status.code(), Some(0), "{backend}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("read back and confirmed"));
        let after = save(node, backend);
        assert!(after.contains("-A INPUT -m comment --comment \"portwarden: port exposure policies, managed (do not edit)\" -j PORTWARDEN-INPUT\n-A INPUT -s 192.0.2.0/24 -j DROP"), "{backend}: jump first, own rule kept: {after}");

        let mut plan = vec!["plan"];
        plan.extend_from_slice(&common);
        let out = pw(node, &plan);
        assert_eq!(out.status.code(), Some(0), "{backend}: converged: {out:?}");
        let out = pw(node, &apply);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("nothing written"),
            "{out:?}"
        );

        // bad input: exit 1, nothing changed
        let out = pw(
            node,
            &[
                "apply",
                "-f",
                &examples,
                "--labels",
                "role=web",
                "--failsafe",
                "tcp:0",
                "--backend",
                backend,
            ],
        );
        assert_eq!(out.status.code(), Some(1));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("invalid --failsafe"),
            "{out:?}"
        );
        assert_eq!(save(node, backend), after);

        let out = pw(node, &["reset", "--backend", backend]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        assert_eq!(
            save(node, backend),
            before,
            "{backend}: reset restores the node's own rules exactly"
        );
    }
}

/// `portwarden CMD --backend BACKEND` for node web-1 of the examples.
fn pw_web1(node: &Netns, cmd: &str, backend: &str) -> Output {
    pw_examples(node, cmd, &["--backend", backend])
}

/// `portwarden CMD -f examples --inventory examples/inventory.yaml --node web-1 EXTRA...`.
fn pw_examples(node: &Netns, cmd: &str, extra: &[&str]) -> Output {
    let examples = format!("{}/examples", root());
    let inventory = format!("{}/examples/inventory.yaml", root());
    let mut args = vec![
        cmd,
        "-f",
        &examples,
        "--inventory",
        &inventory,
        "--node",
        "web-1",
    ];
    args.extend_from_slice(extra);
    pw(node, &args)
}

#[test]
fn plan_reports_lookalikes_and_rules_left_in_the_other_backend() {
    skip_unless_lab!();
    let lab = Lab::builder("clilook").nodes(1).build().unwrap();
    let node = lab.node(0);
    // A new namespace inherits IPv4 forwarding from the host: set it, so the forward path
    // (and its FORWARD jump) is there whatever the host says.
    for key in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
        node.exec(&["sysctl", "-qw", key]).unwrap();
    }
    let with = |cmd: &str, backend: &str| pw_web1(node, cmd, backend);
    let out = with("apply", "nft");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // a foreign chain named like ours, and a foreign jump into ours
    node.exec(&["iptables-legacy", "-w", "-N", "PORTWARDEN-FOO"])
        .unwrap();
    node.exec(&[
        "iptables-nft",
        "-w",
        "-A",
        "FORWARD",
        "-j",
        "PORTWARDEN-INPUT",
    ])
    .unwrap();
    let out = with("plan", "legacy");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stdout.contains("portwarden's rules also live in the nft backend: they will be removed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("look-alike") && stdout.contains("PORTWARDEN-FOO"),
        "{stdout}"
    );
    // FORWARD#1 is portwarden's own forward-path jump (the node forwards, set above); the
    // foreign one comes after it.
    assert!(stdout.contains("FORWARD#2"), "{stdout}");
    let out = with("apply", "legacy");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stdout.contains("nft"), "the move is reported: {stdout}");
    let nft = node.exec(&["iptables-nft-save"]).unwrap();
    assert!(
        nft.contains("-A FORWARD -j PORTWARDEN-INPUT") && nft.contains(":PORTWARDEN-INPUT"),
        "the foreign jump stays, and so does the (emptied) chain it needs: {nft}"
    );
    let out = pw(node, &["reset", "--backend", "legacy"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        stdout.contains("kept") && stdout.contains("PORTWARDEN-INPUT"),
        "reset says why a chain stays: {stdout}"
    );
    let legacy = node.exec(&["iptables-legacy-save"]).unwrap();
    assert!(
        legacy.contains(":PORTWARDEN-FOO") && !legacy.contains("PORTWARDEN-INPUT"),
        "{legacy}"
    );
}

#[test]
fn an_agent_never_adds_a_jump_to_a_table_iptables_cannot_print() {
    skip_unless_lab!();
    let examples = format!("{}/examples", root());
    let inventory = format!("{}/examples/inventory.yaml", root());
    let lab = Lab::builder("cliincompat").nodes(1).build().unwrap();
    let node = lab.node(0);
    assert_eq!(pw_web1(node, "apply", "nft").status.code(), Some(0));
    assert_eq!(node.nft_jumps("ip", "PORTWARDEN-INPUT"), 1);
    node.add_native_nft_rule().unwrap();
    let out = pw_web1(node, "apply", "nft");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "apply refuses: {out:?}");
    assert!(
        stderr.contains("nft list table ip filter"),
        "says what to do: {stderr}"
    );
    assert_eq!(
        node.nft_jumps("ip", "PORTWARDEN-INPUT"),
        1,
        "a refused apply adds no jump"
    );

    let _agent = node
        .spawn(&[
            BIN,
            "agent",
            "--policy-dir",
            &examples,
            "--inventory",
            &inventory,
            "--node",
            "web-1",
            "--refresh",
            "1",
            "--backend",
            "nft",
        ])
        .unwrap();
    let metric = |name: &str| -> f64 {
        let addr = SocketAddr::from(([127, 0, 0, 1], DEFAULT_AGENT_PORT));
        node.run(move || http_get(addr, "/metrics", Duration::from_secs(2)))
            .ok()
            .and_then(Result::ok)
            .and_then(|text| common::metric_value(&text, name))
            .unwrap_or(0.0)
    };
    // the first reconcile and at least three refreshes, each of them refused
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric("portwarden_reconcile_errors_total") < 4.0 {
        assert!(
            Instant::now() < deadline,
            "the agent did not reconcile 4 times in 30 s"
        );
        assert_eq!(
            node.nft_jumps("ip", "PORTWARDEN-INPUT"),
            1,
            "the agent added a jump"
        );
        std::thread::sleep(Duration::from_millis(50)); // poll interval, not a synchronisation
    }
    assert_eq!(
        node.nft_jumps("ip", "PORTWARDEN-INPUT"),
        1,
        "no jump added over four reconciles"
    );

    // reset removes portwarden's chains and jump through nft; the native rule stays
    drop(_agent);
    let out = pw(node, &["reset", "--backend", "nft"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let table = node
        .exec(&["nft", "list", "table", "ip", "filter"])
        .unwrap();
    assert!(
        !table.contains("PORTWARDEN") && table.contains("meter m1"),
        "{table}"
    );
}

/// `plan` prints foreign rules that shadow an entry; their text is the node's, not ours, so
/// control characters in it (here in a rule comment) are shown escaped.
#[test]
fn plan_escapes_control_characters_of_foreign_rules() {
    skip_unless_lab!();
    let lab = Lab::builder("clinfesc")
        .nodes(1)
        .scanners(1)
        .build()
        .unwrap();
    let node = lab.node(0);
    let examples = format!("{}/examples", root());
    let inventory = format!("{}/examples/inventory.yaml", root());
    let args = [
        "-f",
        &examples,
        "--inventory",
        &inventory,
        "--node",
        "web-1",
    ];
    let applied = pw(node, &[&["apply"][..], &args].concat());
    assert_eq!(applied.status.code(), Some(0), "{applied:?}");
    // A foreign rule above portwarden's jump.
    node.iptables(&[
        "-I",
        "INPUT",
        "1",
        "-p",
        "tcp",
        "--dport",
        "80",
        "-m",
        "comment",
        "--comment",
        "\x1b[31mred\x1b[0m",
        "-j",
        "DROP",
    ])
    .unwrap();
    let out = pw(node, &[&["plan"][..], &args].concat());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shadowed = stdout
        .lines()
        .find(|l| l.starts_with("shadowed:"))
        .unwrap_or_else(|| panic!("no shadowing reported: {stdout}"));
    assert!(shadowed.contains("\\x1b[31mred\\x1b[0m"), "{shadowed:?}");
    assert!(!stdout.contains('\x1b'), "{stdout:?}");
}

#[test]
fn plan_apply_and_explain_warn_about_other_owners() {
    skip_unless_lab!();
    let lab = Lab::builder("cliowners").nodes(1).build().unwrap();
    let node = lab.node(0);
    let table = format!(
        "{}/crates/netfilter/tests/fixtures/nft/firewalld-lab.nft",
        root()
    );
    node.exec(&["nft", "-f", &table]).unwrap();
    let listed = || {
        node.exec(&["nft", "list", "table", "inet", "firewalld"])
            .unwrap()
    };
    let before = listed();
    // web-1 opens 80 and 443 (firewalld accepts them) and 9090 to 10.213.2.0/24 (firewalld
    // rejects every port it does not list)
    let out = pw_web1(node, "plan", "nft");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let warned: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("warning: another table decides: "))
        .collect();
    assert!(
        warned.iter().any(|l| l.starts_with(
            "warning: another table decides: IPv4 9090/tcp from 10.213.2.0/24 (open by web \
             entry 2): table inet firewalld, chain filter_INPUT (input hook, priority filter + \
             10) rule 6 rejects (with icmpx admin-prohibited): a reject in another table is \
             final: it wins over portwarden's accept"
        )),
        "{stdout}"
    );
    assert!(
        !warned
            .iter()
            .any(|l| l.contains(" 80/tcp") || l.contains(" 443/tcp")),
        "firewalld accepts 80 and 443: {stdout}"
    );
    let json = pw_examples(node, "plan", &["--backend", "nft", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(
        v["foreign_tables"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["ports"] == "9090" && f["decision"]["table"] == "inet firewalld"),
        "{v}"
    );
    assert!(
        v["foreign_tables_unread"].is_null() && v["mixed_backends"].is_null(),
        "{v}"
    );
    // apply warns too (on stderr), goes ahead, and leaves the table as it was
    node.exec(&[
        "iptables-legacy",
        "-w",
        "-A",
        "INPUT",
        "-p",
        "tcp",
        "--dport",
        "3",
        "-j",
        "DROP",
    ])
    .unwrap();
    let out = pw_web1(node, "apply", "nft");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        stderr.contains("warning: another table decides: IPv4 9090/tcp"),
        "{stderr}"
    );
    assert!(
        stderr.contains("warning: iptables-legacy also holds rules: IPv4 filter INPUT (1 rule)"),
        "{stderr}"
    );
    assert_eq!(listed(), before, "apply changed another table");
    // explain, for the port firewalld drops
    let out = pw_examples(node, "explain", &["--port", "8443", "--from", "10.213.2.7"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "warning: another table decides: table inet firewalld, chain filter_INPUT (input \
             hook, priority filter + 10) rule 1 of filter_IN_public_deny drops tcp dport 8443"
        ),
        "{stdout}"
    );
    let out = pw(node, &["reset", "--backend", "nft"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(listed(), before, "reset changed another table");
}

#[test]
fn plan_and_apply_list_the_expiries_before_the_next_refresh() {
    skip_unless_lab!();
    let at = |secs: i64| {
        portwarden_policy::Timestamp::from_unix(portwarden_policy::Timestamp::now().unix() + secs)
    };
    let (soon, later) = (at(6), at(3600));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("q.yaml"),
        format!(
            "apiVersion: portwarden.io/v1alpha1\nkind: PortPolicy\nmetadata:\n  name: incident\nspec:\n  ports:\n    - ports: 8080\n      state: filtered\n      expires: \"{soon}\"\n    - ports: 9090\n      state: closed\n      expires: \"{later}\"\n    - ports: 8080\n      state: closed\n"
        ),
    )
    .unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    let lab = Lab::builder("cliexp").nodes(1).build().unwrap();
    let node = lab.node(0);
    let args = |cmd: &'static str, json: bool| {
        let mut v = vec![cmd, "-f", &path, "--labels", "role=web", "--backend", "nft"];
        if json {
            v.extend(["-o", "json"]);
        }
        pw(node, &v)
    };
    let out = args("plan", false);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let listed: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("expires: "))
        .collect();
    // within the agent's default refresh (10 s): the 8080 entry only
    assert_eq!(listed.len(), 1, "{stdout}");
    assert!(
        listed[0].starts_with(&format!(
            "expires: policy incident entry 0 (8080/tcp filtered) at {soon}, in "
        )) && listed[0].ends_with(
            ": the kernel stops matching its rules then and the next entry decides; the next refresh removes them"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("-m time --datestop {} ", soon.datestop())),
        "{stdout}"
    );
    let out = args("plan", true);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["expiring"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["expiring"][0]["entry"], 0);
    assert_eq!(v["expiring"][0]["expires"], soon.to_string());
    let out = args("apply", false);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("expires: policy incident entry 0 (8080/tcp filtered)"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // converged: nothing pending while the entry runs out
    let out = args("plan", false);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn an_agent_removes_the_rules_of_an_expired_entry_at_its_next_refresh() {
    skip_unless_lab!();
    let lab = Lab::builder("cliexpagent").nodes(1).build().unwrap();
    let node = lab.node(0);
    let expires =
        portwarden_policy::Timestamp::from_unix(portwarden_policy::Timestamp::now().unix() + 4);
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(
        policies.join("q.yaml"),
        format!(
            "apiVersion: portwarden.io/v1alpha1\nkind: PortPolicy\nmetadata:\n  name: incident\nspec:\n  ports:\n    - ports: 8080\n      state: filtered\n      expires: \"{expires}\"\n    - ports: 8080\n      state: closed\n"
        ),
    )
    .unwrap();
    let inventory = dir.path().join("inventory.yaml");
    std::fs::write(
        &inventory,
        format!(
            "apiVersion: portwarden.io/v1alpha1\nkind: Inventory\nnodes:\n  - name: n1\n    addresses: [\"{}\"]\n",
            node.v4()
        ),
    )
    .unwrap();
    let _agent = node
        .spawn(&[
            BIN,
            "agent",
            "--policy-dir",
            policies.to_str().unwrap(),
            "--inventory",
            inventory.to_str().unwrap(),
            "--node",
            "n1",
            "--refresh",
            "1",
            "--backend",
            "nft",
        ])
        .unwrap();
    let timed = || {
        save(node, "nft")
            .lines()
            .filter(|l| l.contains("-m time --datestop"))
            .count()
    };
    let closed = || {
        save(node, "nft")
            .matches("incident entry 1: closed")
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while timed() == 0 {
        assert!(
            Instant::now() < deadline,
            "the agent never applied the expiring entry"
        );
        std::thread::sleep(Duration::from_millis(50)); // poll interval, not a synchronisation
    }
    assert!(
        portwarden_policy::Timestamp::now() < expires,
        "the agent took too long to apply to prove anything"
    );
    // past the instant, the next refresh (1 s) removes the expired entry's rules
    while timed() > 0 {
        assert!(
            Instant::now() < deadline,
            "the expired entry's rules are still there: {}",
            save(node, "nft")
        );
        std::thread::sleep(Duration::from_millis(50)); // poll interval, not a synchronisation
    }
    assert!(
        portwarden_policy::Timestamp::now() >= expires,
        "removed before it expired"
    );
    assert!(
        closed() >= 2,
        "the fallback entry stays (INPUT of both families, and the forward path where the node forwards): {}",
        save(node, "nft")
    );
}
