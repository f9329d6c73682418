//! End to end on a lab of namespaces: agents apply the examples, `verify` judges from the
//! scanner, things break, causes are named, agents repair; the agent follows policy edits,
//! keeps the last good state on invalid ones, restarts without writing, and serves Prometheus
//! text. Every scenario of `make demo` is asserted here from the JSON report. Nodes keep the
//! kernel's default ICMP rate limits: `verify` and the agents' peer scans never report drift
//! from the silence those limits cause.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use portwarden_demo::Scenario;
use portwarden_lab::skip_unless_lab;
use portwarden_reconcile::inside::http_get;
use portwarden_reconcile::{DEFAULT_AGENT_PORT, Report, Verdict};

use common::metric_value;

const BIN: &str = env!("CARGO_BIN_EXE_portwarden");
/// Long enough that no periodic refresh happens during a test: repairs are triggered on purpose.
const NO_REFRESH: u64 = 3600;
const DEADLINE: Duration = Duration::from_secs(20);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn drift(report: &Report) -> Vec<(String, u16, String)> {
    report
        .results
        .iter()
        .filter(|r| r.verdict == Verdict::Drift)
        .map(|r| (r.node.clone(), r.port, r.cause.clone().unwrap_or_default()))
        .collect()
}

/// The node's filter table without packet counters, for byte-for-byte comparisons.
fn rules(s: &Scenario, node: &str) -> String {
    let save = s
        .node(node)
        .unwrap()
        .exec(&["iptables-save", "-t", "filter"])
        .unwrap();
    save.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| match l.split_once("] ") {
            Some((counters, rest)) if counters.starts_with('[') => rest,
            _ => l.split(" [").next().unwrap_or(l),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn metrics(s: &Scenario, node: &str) -> String {
    let addr = SocketAddr::new(s.address(node).unwrap(), DEFAULT_AGENT_PORT);
    s.scanner()
        .run(move || http_get(addr, "/metrics", Duration::from_secs(2)))
        .unwrap()
        .unwrap()
}

#[test]
fn demo_scenarios_from_the_json_report() {
    skip_unless_lab!();
    let root = root();
    let mut s = Scenario::new(Path::new(BIN), &root, &root.join("examples")).unwrap();
    s.start_agents(NO_REFRESH).unwrap();
    s.wait_converged(DEADLINE).unwrap();

    // Everything in sync, every managed port of every node judged from the scanner.
    let (code, report) = s.verify_report().unwrap();
    assert_eq!(code, 0, "{report:#?}");
    assert_eq!(report.summary.drift, 0);
    assert_eq!(report.summary.in_sync, 12, "{report:#?}");
    let row = |r: &Report, node: &str, port: u16, proto: &str| {
        r.results
            .iter()
            .find(|x| x.node == node && x.port == port && x.protocol == proto)
            .cloned()
            .unwrap_or_else(|| panic!("no row for {node} {port}/{proto}"))
    };
    let admin = row(&report, "web-1", 9090, "tcp");
    assert_eq!(
        (admin.expected.as_str(), admin.observed.as_str()),
        ("filtered", "filtered")
    );
    assert_eq!(admin.from.to_string(), "10.213.1.2");
    let quarantined = row(&report, "web-2", 8080, "tcp");
    assert_eq!(
        quarantined.observed, "closed",
        "a listener runs on 8080, the policy makes it look closed"
    );
    assert_eq!(row(&report, "web-1", 161, "udp").observed, "closed");
    assert_eq!(row(&report, "db-1", 5432, "tcp").observed, "filtered");

    // Metrics parse as Prometheus text and say what the agent did.
    let text = metrics(&s, "web-1");
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    assert!(
        scrape
            .samples
            .iter()
            .any(|m| m.metric == "portwarden_reconcile_duration_seconds_count")
    );
    assert!(
        metric_value(&text, "portwarden_rules_changed_total").unwrap() > 0.0,
        "{text}"
    );
    assert_eq!(metric_value(&text, "portwarden_policy_valid"), Some(1.0));

    // Break things the way life does.
    let web1_before = rules(&s, "web-1");
    s.insert_foreign_drop("web-1").unwrap();
    s.stop_service("web-2", 80).unwrap();
    let deleted = s.delete_own_rule("db-1").unwrap();
    let (code, report) = s.verify_report().unwrap();
    assert_eq!(code, 2);
    assert_eq!(
        drift(&report),
        vec![
            (
                "db-1".into(),
                5432,
                "portwarden's rules are missing or stale on the node (1 change pending)".into()
            ),
            (
                "web-1".into(),
                443,
                "foreign rule INPUT#1 (-p tcp -m tcp --dport 443 -j DROP) matches first".into()
            ),
            ("web-2".into(), 80, "nothing is listening on 80/tcp".into()),
        ],
        "deleted {deleted}"
    );

    // Restarting the agents repairs rule drift (they converge at start); the foreign rule
    // stays, below portwarden's jump, and only the genuine drift remains.
    s.start_agents(NO_REFRESH).unwrap();
    s.wait_converged(DEADLINE).unwrap();
    let (code, report) = s.verify_report().unwrap();
    assert_eq!(code, 2);
    assert_eq!(
        drift(&report),
        vec![("web-2".into(), 80, "nothing is listening on 80/tcp".into())]
    );
    let web1_after = rules(&s, "web-1");
    assert!(
        web1_after.contains("-A INPUT -p tcp -m tcp --dport 443 -j DROP"),
        "{web1_after}"
    );
    let first_input = web1_after
        .lines()
        .find(|l| l.starts_with("-A INPUT"))
        .unwrap();
    assert!(
        first_input.contains("PORTWARDEN"),
        "jump back at position 1: {web1_after}"
    );
    assert_eq!(
        web1_after.replace("-A INPUT -p tcp -m tcp --dport 443 -j DROP\n", ""),
        web1_before,
        "only the foreign rule differs"
    );

    // A restart of a converged agent writes nothing.
    let before = rules(&s, "web-2");
    s.start_agent("web-2", NO_REFRESH).unwrap();
    s.wait_for("web-2", DEADLINE, |v| v.converged).unwrap();
    let until = Instant::now() + DEADLINE;
    let text = loop {
        let text = metrics(&s, "web-2");
        if metric_value(&text, "portwarden_reconcile_duration_seconds_count").unwrap_or(0.0) >= 1.0
        {
            break text;
        }
        assert!(
            Instant::now() < until,
            "the restarted agent never reconciled: {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        metric_value(&text, "portwarden_rules_changed_total"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(rules(&s, "web-2"), before);
}

#[test]
fn agent_follows_edits_keeps_last_good_state_and_repairs_on_refresh() {
    skip_unless_lab!();
    let root = root();
    let dir = tempfile::tempdir().unwrap();
    for sub in ["quarantine", "web", "db"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        for entry in std::fs::read_dir(root.join("examples").join(sub)).unwrap() {
            let p = entry.unwrap().path();
            std::fs::copy(&p, dir.path().join(sub).join(p.file_name().unwrap())).unwrap();
        }
    }
    let mut s = Scenario::new(Path::new(BIN), &root, dir.path()).unwrap();
    s.start_agent("db-1", 1).unwrap();
    s.wait_for("db-1", DEADLINE, |v| v.converged).unwrap();

    // A policy edit reaches the kernel: 6379 closed -> filtered.
    let db = dir.path().join("db/db.yaml");
    let text = std::fs::read_to_string(&db).unwrap();
    let edited = text.replace(
        "    - ports: \"6379\"\n      state: closed",
        "    - ports: \"6379\"\n      state: filtered",
    );
    assert_ne!(text, edited);
    let started = Instant::now();
    std::fs::write(&db, &edited).unwrap();
    loop {
        let r = rules(&s, "db-1");
        if r.lines()
            .any(|l| l.contains("--dport 6379") && l.ends_with("-j DROP"))
        {
            break;
        }
        assert!(started.elapsed() < DEADLINE, "edit not applied: {r}");
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("policy edit -> rule in the kernel: {:?}", started.elapsed());

    // An invalid edit changes nothing and is reported; the last good state stays.
    let good = rules(&s, "db-1");
    std::fs::write(&db, edited.replace("state: filtered", "state: blocked")).unwrap();
    // (The inside view says that the documents are invalid, the agent's log says why:
    // faults.rs checks the logged problems.)
    let view = s.wait_for("db-1", DEADLINE, |v| v.policy_invalid).unwrap();
    assert!(view.converged, "the last good intent is still applied");
    assert_eq!(rules(&s, "db-1"), good);
    let text = metrics(&s, "db-1");
    assert_eq!(
        metric_value(&text, "portwarden_policy_valid"),
        Some(0.0),
        "{text}"
    );
    assert!(metric_value(&text, "portwarden_policy_load_errors_total").unwrap() >= 1.0);

    // Rule drift is repaired at the next refresh (every second here), even while the
    // documents are invalid.
    let started = Instant::now();
    s.delete_own_rule("db-1").unwrap();
    let deleted_at = Instant::now();
    s.wait_for("db-1", DEADLINE, |v| v.converged).unwrap();
    let repaired = loop {
        if rules(&s, "db-1") == good {
            break deleted_at.elapsed();
        }
        assert!(started.elapsed() < DEADLINE, "not repaired");
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!("deleted rule -> repaired (refresh 1 s): {repaired:?}");
    let text = metrics(&s, "db-1");
    assert!(
        metric_value(&text, "portwarden_rule_drift_repairs_total").unwrap() >= 1.0,
        "{text}"
    );

    // Fixing the document clears the error.
    std::fs::write(&db, &edited).unwrap();
    s.wait_for("db-1", DEADLINE, |v| !v.policy_invalid).unwrap();
}

#[test]
fn backdoors_upstream_filtering_unreachable_nodes_and_peer_scans() {
    skip_unless_lab!();
    let root = root();
    let mut s = Scenario::new(Path::new(BIN), &root, &root.join("examples")).unwrap();
    s.start_agents(NO_REFRESH).unwrap();
    s.start_agent_with("db-1", NO_REFRESH, &["--scan-interval", "1"])
        .unwrap();
    s.wait_converged(DEADLINE).unwrap();
    assert_eq!(s.agent_get("web-1", "/healthz").unwrap(), "ok\n");
    assert_eq!(s.agent_get("web-1", "/readyz").unwrap(), "ready\n");

    // A backdoor listener on the database, whose policy says `unlisted: report`.
    s.start_service("db-1", 31337).unwrap();
    let (code, report) = s.verify_report().unwrap();
    assert_eq!(code, 2);
    let backdoor = report
        .results
        .iter()
        .find(|r| r.node == "db-1" && r.port == 31337)
        .expect("backdoor reported");
    assert_eq!(
        (backdoor.expected.as_str(), backdoor.observed.as_str()),
        ("unlisted", "open")
    );
    let cause = backdoor.cause.clone().unwrap();
    assert!(
        cause.starts_with("open port that no policy declares (unlisted: report)"),
        "{cause}"
    );
    assert!(cause.contains("a socket listens on"), "{cause}");
    assert_eq!(drift(&report).len(), 1, "{report:#?}");

    // The db-1 agent scans its peers and serves the report.
    let until = Instant::now() + DEADLINE;
    let peer_report: Report = loop {
        if let Ok(body) = s.agent_get("db-1", "/v1/report") {
            break serde_json::from_str(&body).unwrap();
        }
        assert!(Instant::now() < until, "no peer report");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!peer_report.results.is_empty());
    assert!(
        peer_report
            .results
            .iter()
            .all(|r| r.node == "web-1" || r.node == "web-2")
    );
    assert!(
        peer_report
            .results
            .iter()
            .all(|r| r.from.to_string() == "10.213.0.13")
    );
    assert_eq!(peer_report.summary.drift, 0, "{peer_report:#?}");
    let text = metrics(&s, "db-1");
    assert!(
        metric_value(&text, "portwarden_scan_probes_total").unwrap() > 0.0,
        "{text}"
    );

    // Filtering between scanner and node: the node's own rules would let the probe in.
    let web2 = s.address("web-2").unwrap().to_string();
    let upstream = [
        "OUTPUT", "-d", &web2, "-p", "tcp", "--dport", "443", "-j", "DROP",
    ];
    let mut add = vec!["-A"];
    add.extend_from_slice(&upstream);
    s.scanner().iptables(&add).unwrap();
    let (_, report) = s.verify_report().unwrap();
    let row = report
        .results
        .iter()
        .find(|r| r.node == "web-2" && r.port == 443)
        .unwrap();
    assert_eq!(row.verdict, Verdict::Drift);
    let cause = row.cause.clone().unwrap();
    assert!(
        cause.starts_with("filtered upstream of the node: its own rules would let the probe in"),
        "{cause}"
    );
    let mut del = vec!["-D"];
    del.extend_from_slice(&upstream);
    s.scanner().iptables(&del).unwrap();

    // SIGTERM stops the agent and leaves its rules in place.
    let before = rules(&s, "web-2");
    let status = s.terminate_agent("web-2").unwrap();
    assert!(status.success(), "agent exit: {status:?}");
    assert_eq!(rules(&s, "web-2"), before);

    // A node that answers nothing, whose agent does not answer either: unreachable.
    s.node("web-2")
        .unwrap()
        .iptables(&["-I", "INPUT", "1", "-j", "DROP"])
        .unwrap();
    let (_, report) = s.verify_report().unwrap();
    let tcp_rows: Vec<_> = report
        .results
        .iter()
        .filter(|r| r.node == "web-2" && r.protocol == "tcp" && r.verdict == Verdict::Drift)
        .collect();
    assert!(!tcp_rows.is_empty());
    for r in tcp_rows {
        let cause = r.cause.as_deref().unwrap();
        assert!(
            cause.starts_with(
                "node unreachable: no answer on any port, and its agent does not answer"
            ),
            "{cause}"
        );
    }
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.starts_with("web-2: inside view unavailable")),
        "{:?}",
        report.notes
    );
}

/// Writes `policy` (one PortPolicy document) as `policies/NAME.yaml` and an inventory of
/// `nodes` (name, addresses) under `dir`; returns their paths.
fn write_setup(
    dir: &Path,
    name: &str,
    policy: &str,
    nodes: &[(&str, Vec<String>)],
) -> (String, String) {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(policies.join(format!("{name}.yaml")), policy).unwrap();
    let mut inventory =
        String::from("apiVersion: portwarden.io/v1alpha1\nkind: Inventory\nnodes:\n");
    for (node, addresses) in nodes {
        let quoted: Vec<String> = addresses.iter().map(|a| format!("\"{a}\"")).collect();
        inventory.push_str(&format!(
            "  - name: {node}\n    addresses: [{}]\n",
            quoted.join(", ")
        ));
    }
    let path = dir.join("inventory.yaml");
    std::fs::write(&path, inventory).unwrap();
    (
        policies.to_str().unwrap().to_string(),
        path.to_str().unwrap().to_string(),
    )
}

/// `portwarden agent --policy-dir POLICIES --inventory INVENTORY --node NODE --refresh 3600
/// EXTRA...` in `ns`: no periodic refresh, repairs are triggered on purpose.
fn spawn_agent(
    ns: &portwarden_lab::Netns,
    policies: &str,
    inventory: &str,
    node: &str,
    extra: &[&str],
) -> portwarden_lab::LabChild {
    let refresh = NO_REFRESH.to_string();
    let mut args = vec![
        BIN,
        "agent",
        "--policy-dir",
        policies,
        "--inventory",
        inventory,
        "--node",
        node,
        "--refresh",
        &refresh,
    ];
    args.extend_from_slice(extra);
    ns.spawn(&args).unwrap()
}

/// `portwarden verify -f POLICIES --inventory INVENTORY -o json EXTRA...` from `scanner`: its
/// exit code and report.
fn verify_json(
    scanner: &portwarden_lab::Netns,
    policies: &str,
    inventory: &str,
    extra: &[&str],
) -> (Option<i32>, Report) {
    let mut args = vec![
        BIN,
        "verify",
        "-f",
        policies,
        "--inventory",
        inventory,
        "-o",
        "json",
    ];
    args.extend_from_slice(extra);
    let out = scanner.output(&args).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report: Report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("verify printed no report ({e}): {stderr}"));
    (out.status.code(), report)
}

/// A policy for every node (81/tcp and 5000/udp closed) and an inventory of two lab nodes
/// `a` and `b` plus `c`, whose addresses (IPv4 and IPv6) the lab has no route to.
fn unroutable_setup(lab: &portwarden_lab::Lab, dir: &Path) -> (String, String) {
    write_setup(
        dir,
        "all",
        "apiVersion: portwarden.io/v1alpha1\nkind: PortPolicy\nmetadata:\n  name: all\nspec:\n  nodeSelector: {}\n  ports:\n    - ports: \"81\"\n      state: closed\n    - ports: \"5000\"\n      protocol: UDP\n      state: closed\n",
        &[
            ("a", vec![lab.node(0).v4().to_string()]),
            ("b", vec![lab.node(1).v4().to_string()]),
            ("c", vec!["10.9.9.9".into(), "fd00:9::9".into()]),
        ],
    )
}

/// The rows of node `c` (no route to either of its addresses) are indeterminate with the
/// routing error as their cause; the others are verified as usual.
fn assert_unroutable_rows(report: &Report, from: &str) {
    let c: Vec<_> = report.results.iter().filter(|r| r.node == "c").collect();
    assert_eq!(c.len(), 4, "{from}: 2 addresses x 2 ports: {report:#?}");
    for r in c {
        let cause = r.cause.as_deref().unwrap_or_default();
        assert_eq!(r.verdict, Verdict::Indeterminate, "{from}: {r:?}");
        assert!(
            cause.starts_with("unreachable: ")
                && cause.contains(&format!(
                    "no route to {}: Network is unreachable",
                    r.address
                )),
            "{from}: {cause}"
        );
    }
}

#[test]
fn an_unroutable_node_is_indeterminate_and_the_others_are_verified() {
    skip_unless_lab!();
    let lab = portwarden_lab::Lab::builder("unroutable")
        .nodes(2)
        .scanners(1)
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (policies, inventory) = unroutable_setup(&lab, dir.path());
    let _agent = spawn_agent(
        lab.node(0),
        &policies,
        &inventory,
        "a",
        &["--scan-interval", "1", "--log-format", "json"],
    );
    let verify = || verify_json(lab.scanner(0), &policies, &inventory, &[]);

    // verify from the scanner: every node has rows; nothing drifts, so exit 0.
    let (code, report) = verify();
    assert_unroutable_rows(&report, "verify");
    for node in ["a", "b"] {
        let rows: Vec<_> = report.results.iter().filter(|r| r.node == node).collect();
        assert_eq!(rows.len(), 2, "{node}: {report:#?}");
        assert!(
            rows.iter().all(|r| r.verdict == Verdict::InSync),
            "{rows:#?}"
        );
    }
    assert_eq!(code, Some(0), "{report:#?}");

    // The agent of `a` scans its peers `b` and `c` and serves the report.
    let addr = SocketAddr::new(lab.node(0).v4().into(), DEFAULT_AGENT_PORT);
    let until = Instant::now() + DEADLINE;
    let peer_report: Report = loop {
        let got = lab
            .scanner(0)
            .run(move || http_get(addr, "/v1/report", Duration::from_secs(2)))
            .unwrap();
        if let Ok(body) = got {
            break serde_json::from_str(&body).unwrap();
        }
        assert!(Instant::now() < until, "no peer report: {got:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_unroutable_rows(&peer_report, "the agent's peer scan");
    let b: Vec<_> = peer_report
        .results
        .iter()
        .filter(|r| r.node == "b")
        .collect();
    assert_eq!(b.len(), 2, "{peer_report:#?}");
    assert!(b.iter().all(|r| r.verdict == Verdict::InSync), "{b:#?}");

    // Drift elsewhere still gives exit 2.
    let _listener = lab.node(1).tcp_listener(81).unwrap();
    let (code, report) = verify();
    assert_unroutable_rows(&report, "verify with drift on b");
    let drifted: Vec<(String, u16)> = drift(&report)
        .into_iter()
        .map(|(node, port, _)| (node, port))
        .collect();
    assert_eq!(drifted, vec![("b".to_string(), 81)], "{report:#?}");
    assert_eq!(code, Some(2), "{report:#?}");
}

/// The agent's text logs, with stderr to a pipe (a file, journald, a container log), carry
/// no ANSI colour codes.
#[test]
fn agent_logs_carry_no_colour_when_stderr_is_not_a_terminal() {
    skip_unless_lab!();
    let lab = portwarden_lab::Lab::builder("nocolour")
        .nodes(2)
        .scanners(1)
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (policies, inventory) = unroutable_setup(&lab, dir.path());
    let err = common::stderr_until(
        BIN,
        lab.node(0),
        &[
            "agent",
            "--policy-dir",
            &policies,
            "--inventory",
            &inventory,
            "--node",
            "a",
            "--refresh",
            "3600",
        ],
        DEADLINE,
        |l| l.contains("agent started"),
    );
    assert!(err.contains("INFO"), "the agent logged nothing: {err:?}");
    assert!(!err.contains('\x1b'), "colour in logs to a pipe: {err:?}");
}

/// Issue 14's case: a policy `ports: "5000-5029", protocol: UDP, state: closed` for nodes `a`
/// and `b` (IPv4 and IPv6), with the kernel's default ICMP rate limits (lab nodes keep them).
fn rate_limited_udp_setup(lab: &portwarden_lab::Lab, dir: &Path) -> (String, String) {
    let both = |n: &portwarden_lab::Netns| vec![n.v4().to_string(), n.v6().to_string()];
    write_setup(
        dir,
        "udp",
        "apiVersion: portwarden.io/v1alpha1\nkind: PortPolicy\nmetadata:\n  name: udp-closed\nspec:\n  nodeSelector: {}\n  ports:\n    - ports: \"5000-5029\"\n      protocol: UDP\n      state: closed\n",
        &[("a", both(lab.node(0))), ("b", both(lab.node(1)))],
    )
}

/// Every row not in sync is a port whose silence the rate limit left unconfirmed, and says so.
fn assert_only_rate_limited_indeterminates(report: &Report, what: &str) {
    for r in report
        .results
        .iter()
        .filter(|r| r.verdict != Verdict::InSync)
    {
        let cause = r.cause.as_deref().unwrap_or_default();
        assert!(
            r.verdict == Verdict::Indeterminate
                && (cause.starts_with("ICMP rate limit: ")
                    || cause.starts_with("not re-checked yet: ")),
            "{what}: {r:#?}"
        );
    }
}

/// `portwarden verify` of nodes whose own `closed` rules answer with port-unreachables the
/// kernel rate-limits: exit 0 and no drift, whatever the budget; with the default budget
/// (60 s; 30 ports need about 25 s at 1 answer/s) every port is confirmed closed; with a
/// budget of 1 s the unconfirmed ones are indeterminate with the measured limit as their
/// cause. Before the scanner confirms silent ports (issue 14, item 1) this fails the way the
/// issue describes: exit 2, `expected closed, observed open|filtered`.
#[test]
fn verify_reports_no_drift_from_a_nodes_icmp_rate_limit() {
    skip_unless_lab!();
    let lab = portwarden_lab::Lab::builder("udprl")
        .nodes(2)
        .scanners(1)
        .scanner_addresses(2)
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (policies, inventory) = rate_limited_udp_setup(&lab, dir.path());
    for (i, name) in ["a", "b"].iter().enumerate() {
        let out = lab
            .node(i)
            .output(&[
                BIN,
                "apply",
                "-f",
                &policies,
                "--inventory",
                &inventory,
                "--node",
                name,
            ])
            .unwrap();
        assert!(
            out.status.success(),
            "apply on {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let verify = |extra: &[&str]| {
        let mut args = vec!["--agent-port", "0"];
        args.extend_from_slice(extra);
        verify_json(lab.scanner(0), &policies, &inventory, &args)
    };

    // The default budget: everything confirmed closed.
    let (code, report) = verify(&[]);
    assert_eq!(
        report.results.len(),
        120,
        "2 nodes x 2 addresses x 30 ports"
    );
    assert_eq!(drift(&report), vec![], "{report:#?}");
    assert_eq!(code, Some(0), "{report:#?}");
    assert_only_rate_limited_indeterminates(&report, "default budget");
    assert_eq!(report.summary.in_sync, 120, "{report:#?}");
    assert!(
        report.notes.iter().any(|n| n.contains("ICMP rate limit: ")),
        "the measured limit is a note: {:?}",
        report.notes
    );

    // A budget too short to confirm them: indeterminate, never drift.
    let (code, report) = verify(&["--confirm-budget", "1"]);
    assert_eq!(drift(&report), vec![], "{report:#?}");
    assert_eq!(code, Some(0), "{report:#?}");
    assert_only_rate_limited_indeterminates(&report, "1 s budget");
    assert!(report.summary.indeterminate > 0, "{report:#?}");

    // Two source addresses of the scanner per family, the route's own given last: the first
    // of each family is the vantage, the other confirms.
    let mut scanner = lab.scanner(0).addresses();
    scanner.reverse();
    scanner.sort_by_key(|a| a.is_ipv6());
    let mut sources = Vec::new();
    for a in &scanner {
        sources.push("-S".to_string());
        sources.push(a.to_string());
    }
    let sources: Vec<&str> = sources.iter().map(String::as_str).collect();
    let (code, report) = verify(&sources);
    assert_eq!(drift(&report), vec![], "{report:#?}");
    assert_eq!(code, Some(0), "{report:#?}");
    assert_only_rate_limited_indeterminates(&report, "two sources");
    let vantages: std::collections::BTreeSet<String> =
        report.results.iter().map(|r| r.from.to_string()).collect();
    let firsts: std::collections::BTreeSet<String> = [
        scanner.iter().find(|a| a.is_ipv4()),
        scanner.iter().find(|a| a.is_ipv6()),
    ]
    .into_iter()
    .flatten()
    .map(ToString::to_string)
    .collect();
    assert_ne!(
        firsts,
        [
            lab.scanner(0).v4().to_string(),
            lab.scanner(0).v6().to_string()
        ]
        .into(),
        "the vantage is not the route's source"
    );
    assert_eq!(vantages, firsts, "{report:#?}");
}

/// The agent of `a` scans `b` every second with a 2 s budget: a share of b's UDP ports at a
/// time (about 8 per address at 1 answer/s after a burst of 6), never a drift, until every
/// port has been confirmed in sync, each row saying when. Needs the scanner's confirmation
/// of silent ports (issue 14, item 1) to pass.
#[test]
fn agent_peer_scans_recheck_udp_ports_within_the_peers_rate_limit() {
    skip_unless_lab!();
    let lab = portwarden_lab::Lab::builder("udpag")
        .nodes(2)
        .scanners(1)
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (policies, inventory) = rate_limited_udp_setup(&lab, dir.path());
    let agent = |i: usize, name: &str, extra: &[&str]| {
        spawn_agent(lab.node(i), &policies, &inventory, name, extra)
    };
    let _b = agent(1, "b", &[]);
    let _a = agent(0, "a", &["--scan-interval", "1", "--confirm-budget", "2"]);
    let addr = SocketAddr::new(lab.node(0).v4().into(), DEFAULT_AGENT_PORT);
    // Generous: 30 ports x 2 addresses at about 8 per scan and address take 4 scans.
    let until = Instant::now() + Duration::from_secs(180);
    let mut shares_seen = false;
    let mut reports = 0;
    loop {
        let got = lab
            .scanner(0)
            .run(move || http_get(addr, "/v1/report", Duration::from_secs(2)))
            .unwrap();
        if let Ok(body) = got {
            let report: Report = serde_json::from_str(&body).unwrap();
            reports += 1;
            assert_eq!(drift(&report), vec![], "{report:#?}");
            assert_only_rate_limited_indeterminates(&report, "peer scan");
            shares_seen |= report
                .notes
                .iter()
                .any(|n| n.contains(" of 30 managed UDP ports re-checked in this scan"));
            let b: Vec<_> = report.results.iter().filter(|r| r.node == "b").collect();
            assert_eq!(b.len(), 60, "{report:#?}");
            if b.iter()
                .all(|r| r.verdict == Verdict::InSync && r.confirmed_at.is_some())
            {
                break;
            }
        }
        assert!(
            Instant::now() < until,
            "b's UDP ports not all confirmed in sync within 180 s ({reports} reports)"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        shares_seen,
        "every scan re-checked every port: the rate limit was never measured"
    );
}

/// Issue 15 item 2: a port the node forwards (Docker's layout, DNAT to a pod) that drifts is
/// explained by the forwarding, never by the node's missing listener: 8080 is published to a
/// pod port nothing listens on (the pod answers with a reset), the policy wants it open. The
/// agent applies the forward path, so 8081 (published to the pod's web server, policy
/// `closed`) is in sync.
#[test]
fn verify_names_the_forwarding_behind_a_drifting_published_port() {
    use portwarden_lab::{Pod, PortMap};
    skip_unless_lab!();
    let lab = portwarden_lab::Lab::builder("e2efwd").build().unwrap();
    let (node, scanner) = (lab.node(0).clone(), lab.scanner(0).clone());
    let mut pod = Pod::attach(&node).unwrap();
    pod.serve_http(80).unwrap();
    portwarden_lab::write_docker_style_rules(
        &pod,
        &[PortMap::tcp(8080, 81), PortMap::tcp(8081, 80)],
        portwarden_lab::Backend::Nft,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (policies, inventory) = write_setup(
        dir.path(),
        "published",
        "apiVersion: portwarden.io/v1alpha1\nkind: PortPolicy\nmetadata:\n  name: published\nspec:\n  ports:\n    - ports: \"8080\"\n      state: open\n    - ports: \"8081\"\n      state: closed\n",
        &[("n", vec![node.v4().to_string()])],
    );
    let _agent = spawn_agent(&node, &policies, &inventory, "n", &["--log-format", "json"]);
    let addr = SocketAddr::new(node.v4().into(), DEFAULT_AGENT_PORT);
    let until = Instant::now() + DEADLINE;
    loop {
        let body = scanner
            .run(move || http_get(addr, "/v1/inside", Duration::from_secs(2)))
            .unwrap();
        if let Ok(body) = &body
            && body.contains("\"converged\":true")
            && body.contains("DNAT'ed")
        {
            break;
        }
        assert!(
            Instant::now() < until,
            "the agent never converged: {body:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, report) = verify_json(&scanner, &policies, &inventory, &[]);
    let row = |port: u16| {
        report
            .results
            .iter()
            .find(|r| r.port == port)
            .unwrap_or_else(|| panic!("no row for {port}: {report:#?}"))
    };
    assert_eq!(row(8081).verdict, Verdict::InSync, "{report:#?}");
    let drifted = row(8080);
    assert_eq!(drifted.verdict, Verdict::Drift, "{report:#?}");
    let cause = drifted.cause.clone().unwrap_or_default();
    assert!(
        cause.starts_with("8080/tcp is DNAT'ed by nat DOCKER#")
            && cause.contains("(Docker-published)")
            && !cause.contains("nothing is listening"),
        "{cause}"
    );
    assert_eq!(code, Some(2), "{report:#?}");
}
