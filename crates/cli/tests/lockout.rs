//! Lockout matrix: no policy that validation accepts can cut a node's failsafe ports, the
//! agent's own HTTP port, or the traffic the node itself starts (peer scans, the Kubernetes
//! agent's API-server connection), on IPv4 or IPv6, and established connections survive.
//!
//! One lab, every case in turn. The cases are generated: state (filtered, closed) × protocol
//! (TCP, UDP) × sources (any, `0.0.0.0/0`, `::/0`, both, the scanner's `/32`, its `/128`) ×
//! ports (`1-65535`, a list covering every port), at priorities 0 and 1, then several of them
//! combined. Port syntaxes that cover port 0 or nothing (`-`, `0-65535`) are not valid policy
//! syntax: those cases check that validation refuses them and nothing is applied. Each case is
//! applied with `portwarden apply`, and a selection again through a running agent. `validate`,
//! `plan` and `apply` must each report every accepted case as a conflict (DESIGN.md: "a policy
//! that tries is reported as a conflict"). A control applies the first case with `--failsafe
//! none` and expects SSH to be cut, so the checks can fail. Failure messages name the case.
//!
//! Node A (node 0) gets the hostile policies and runs listeners on every failsafe port; node B
//! (node 1) is A's peer; the scanner namespace plays the operator and the API server.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use portwarden_lab::{Lab, Netns, skip_unless_lab};
use portwarden_reconcile::inside::http_get;
use portwarden_reconcile::{DEFAULT_AGENT_PORT, Report, Verdict};

const BIN: &str = env!("CARGO_BIN_EXE_portwarden");
const TIMEOUT: Duration = Duration::from_secs(2);
const DEADLINE: Duration = Duration::from_secs(20);
/// Failsafe TCP ports of the default list (2380 is served by the established-connection echo).
const FAILSAFE_TCP: [u16; 5] = [22, 6443, 10250, 2379, 2380];
/// A port no failsafe list covers, with a listener behind it: proves a case took effect.
const PLAIN_PORT: u16 = 8080;

/// One hostile policy set.
#[derive(Clone, Debug)]
struct Case {
    name: String,
    /// The YAML documents.
    yaml: String,
    /// Whether validation must accept it.
    valid: bool,
    /// TCP entries that close `PLAIN_PORT` to the scanner's IPv4 / IPv6 address (then a
    /// connection is refused at once: a cheap proof that the rules are in force).
    closes_plain: [bool; 2],
}

fn entry(state: &str, proto: &str, ports: &str, from: &[&str]) -> String {
    let from: Vec<String> = from.iter().map(|f| format!("\"{f}\"")).collect();
    format!(
        "    - ports: {ports}\n      protocol: {proto}\n      state: {state}\n      from: [{}]\n",
        from.join(", ")
    )
}

fn policy(name: &str, priority: u32, entries: &[String]) -> String {
    format!(
        "apiVersion: portwarden.io/v1alpha1\nkind: PortPolicy\nmetadata:\n  name: {name}\nspec:\n  \
         nodeSelector:\n    matchLabels: {{role: a}}\n  priority: {priority}\n  ports:\n{}",
        entries.concat()
    )
}

/// The matrix. `v4`/`v6` are the scanner's addresses.
fn cases(v4: IpAddr, v6: IpAddr) -> Vec<Case> {
    let host4 = format!("{v4}/32");
    let host6 = format!("{v6}/128");
    let sources: Vec<(&str, Vec<&str>)> = vec![
        ("any", vec![]),
        ("v4-all", vec!["0.0.0.0/0"]),
        ("v6-all", vec!["::/0"]),
        ("both-all", vec!["0.0.0.0/0", "::/0"]),
        ("scanner-32", vec![host4.as_str()]),
        ("scanner-128", vec![host6.as_str()]),
    ];
    let ports = [
        ("1-65535", "\"1-65535\""),
        ("list", "[\"1-1024\", 1025, \"1026-65535\"]"),
    ];
    let mut out = Vec::new();
    let mut n = 0;
    for state in ["filtered", "closed"] {
        for proto in ["TCP", "UDP"] {
            for (sname, from) in &sources {
                for (pname, p) in ports {
                    n += 1;
                    let name = format!("c{n}-{state}-{}-{sname}-{pname}", proto.to_lowercase());
                    let priority = n % 2;
                    let e = entry(state, proto, p, from);
                    let covers = |fam: usize| {
                        from.is_empty()
                            || from.iter().any(|f| {
                                let net: ipnet::IpNet = f.parse().unwrap();
                                net.contains(&if fam == 0 { v4 } else { v6 })
                            })
                    };
                    let closes = state == "closed" && proto == "TCP";
                    out.push(Case {
                        yaml: policy(&name, priority, &[e]),
                        name,
                        valid: true,
                        closes_plain: [closes && covers(0), closes && covers(1)],
                    });
                }
            }
        }
    }
    // Several at once, each at the lowest priority, with an open entry that loses to them.
    let all = [
        policy(
            "combo-tcp-filtered",
            0,
            &[entry("filtered", "TCP", "\"1-65535\"", &[])],
        ),
        policy(
            "combo-tcp-closed",
            0,
            &[
                entry("closed", "TCP", "\"1-65535\"", &["0.0.0.0/0", "::/0"]),
                entry("closed", "TCP", "\"22\"", &[host4.as_str(), host6.as_str()]),
            ],
        ),
        policy(
            "combo-udp",
            0,
            &[
                entry("filtered", "UDP", "\"1-65535\"", &[]),
                entry("closed", "UDP", "\"68\"", &["0.0.0.0/0", "::/0"]),
            ],
        ),
        policy("combo-open", 5, &[entry("open", "TCP", "\"22,6443\"", &[])]),
    ];
    out.push(Case {
        name: "combined".into(),
        yaml: all.join("---\n"),
        valid: true,
        closes_plain: [false, false],
    });
    // Syntaxes that would cover port 0 or are empty are refused, and nothing changes.
    for (i, p) in ["\"-\"", "\"0-65535\"", "0", "\"\""].iter().enumerate() {
        let name = format!("invalid{i}");
        out.push(Case {
            yaml: policy(&name, 0, &[entry("filtered", "TCP", p, &[])]),
            name,
            valid: false,
            closes_plain: [false, false],
        });
    }
    out
}

/// A TCP echo server (one line back per line) bound to `[::]:port` inside a namespace, both
/// families; stops when dropped.
struct Echo {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Echo {
    fn start(ns: &Netns, port: u16) -> Echo {
        let listener = ns
            .run(move || TcpListener::bind(("::", port)))
            .unwrap()
            .unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        std::thread::spawn(move || {
                            let mut w = s.try_clone().unwrap();
                            for line in BufReader::new(s).lines() {
                                let Ok(line) = line else { break };
                                if writeln!(w, "{line}").is_err() {
                                    break;
                                }
                            }
                        });
                    }
                    // Nothing pending: look again shortly (and notice `stop`).
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Echo {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn connect(from: &Netns, to: SocketAddr) -> Result<TcpStream, String> {
    from.run(move || TcpStream::connect_timeout(&to, TIMEOUT))
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("connect {to}: {e}"))
}

/// One round trip on an established connection.
fn echo(stream: &TcpStream, what: &str) -> Result<(), String> {
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut w = stream.try_clone().unwrap();
    writeln!(w, "{what}").map_err(|e| format!("{what}: write: {e}"))?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|e| format!("{what}: read: {e}"))?;
    if line.trim_end() != what {
        return Err(format!("{what}: echoed {line:?}"));
    }
    Ok(())
}

fn udp_round_trip(from: &Netns, to: SocketAddr) -> Result<(), String> {
    from.run(move || -> Result<(), String> {
        let bind = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        let s = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(TIMEOUT))
            .map_err(|e| e.to_string())?;
        s.send_to(b"ping", to)
            .map_err(|e| format!("send to {to}: {e}"))?;
        let mut buf = [0u8; 16];
        let (n, _) = s
            .recv_from(&mut buf)
            .map_err(|e| format!("no answer from {to}: {e}"))?;
        (&buf[..n] == b"ping")
            .then_some(())
            .ok_or(format!("{to} answered {:?}", &buf[..n]))
    })
    .map_err(|e| e.to_string())?
}

/// Runs the binary in a namespace: (exit code, stdout, stderr).
fn run(ns: &Netns, args: &[&str]) -> (Option<i32>, String, String) {
    let mut all = vec![BIN];
    all.extend_from_slice(args);
    let out = ns.output(&all).unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn rules(ns: &Netns) -> String {
    let mut s = String::new();
    for tool in ["iptables-save", "ip6tables-save"] {
        let out = ns.exec(&[tool, "-t", "filter"]).unwrap();
        s.extend(
            out.lines()
                .filter(|l| !l.starts_with('#') && !l.starts_with(':'))
                .map(|l| format!("{l}\n")),
        );
    }
    s
}

/// What every accepted case must leave working.
struct World<'a> {
    lab: &'a Lab,
    /// Scanner → A connections opened before the first case (to failsafe port 2380).
    inbound: Vec<TcpStream>,
    /// A → scanner connections opened before the first case ("the API server", port 6443).
    outbound: Vec<TcpStream>,
}

impl World<'_> {
    fn a(&self) -> &Netns {
        self.lab.node(0)
    }

    fn scanner(&self) -> &Netns {
        self.lab.scanner(0)
    }

    /// Every check; the first failure is returned, naming what failed.
    fn check(&self, case: &Case, agent: bool) -> Result<(), String> {
        let a = self.a();
        let targets: [IpAddr; 2] = [a.v4().into(), a.v6().into()];
        for (fam, addr) in targets.iter().enumerate() {
            for port in FAILSAFE_TCP {
                connect(self.scanner(), SocketAddr::new(*addr, port))
                    .map_err(|e| format!("failsafe TCP {port} from the scanner: {e}"))?;
            }
            udp_round_trip(self.scanner(), SocketAddr::new(*addr, 68))
                .map_err(|e| format!("failsafe UDP 68 from the scanner: {e}"))?;
            if case.closes_plain[fam] {
                // The policy is in force: a port it closes refuses at once.
                match connect(self.scanner(), SocketAddr::new(*addr, PLAIN_PORT)) {
                    Err(e) if e.contains("refused") => {}
                    other => {
                        return Err(format!(
                            "the case does not seem applied: {addr}:{PLAIN_PORT} gave {other:?}"
                        ));
                    }
                }
            }
            // New connections the node opens (the Kubernetes agent to its API server on 443 or
            // 6443): the replies come back to an ephemeral port every case blocks.
            for port in [443, 6443] {
                let s = self.scanner();
                let api = SocketAddr::new(
                    if fam == 0 {
                        s.v4().into()
                    } else {
                        s.v6().into()
                    },
                    port,
                );
                let c = connect(a, api).map_err(|e| format!("node → API server: {e}"))?;
                echo(&c, "new-outbound").map_err(|e| format!("node → API server {api}: {e}"))?;
            }
        }
        for (i, c) in self.inbound.iter().enumerate() {
            echo(c, "ssh-session").map_err(|e| format!("established inbound #{i}: {e}"))?;
        }
        for (i, c) in self.outbound.iter().enumerate() {
            echo(c, "api-watch").map_err(|e| format!("established outbound #{i}: {e}"))?;
        }
        if agent {
            for (who, from) in [("scanner", self.scanner()), ("peer B", self.lab.node(1))] {
                for addr in targets {
                    let url = SocketAddr::new(addr, DEFAULT_AGENT_PORT);
                    from.run(move || http_get(url, "/healthz", TIMEOUT))
                        .map_err(|e| e.to_string())?
                        .map_err(|e| format!("agent HTTP port from {who}: {e}"))?;
                }
            }
        }
        Ok(())
    }
}

fn write_case(dir: &Path, case: &Case) -> PathBuf {
    let path = dir.join("case.yaml");
    std::fs::write(&path, &case.yaml).unwrap();
    path
}

#[test]
fn no_accepted_policy_locks_the_node_out() {
    skip_unless_lab!();
    let lab = Lab::builder("lockout")
        .nodes(2)
        .scanners(1)
        .build()
        .unwrap();
    let (a, b, scanner) = (lab.node(0), lab.node(1), lab.scanner(0));
    // Listeners on A: every failsafe port, one plain port, DHCP's UDP 68.
    let _l: Vec<_> = [22, 6443, 10250, 2379, PLAIN_PORT]
        .iter()
        .map(|p| a.tcp_listener(*p).unwrap())
        .collect();
    let _ssh_echo = Echo::start(a, 2380);
    let _dhcp = a.udp_echo(68).unwrap();
    // The "API server" in the scanner namespace.
    let _api = [Echo::start(scanner, 6443), Echo::start(scanner, 443)];
    // B: a peer with a policy of its own, applied once, and a listener behind its open port.
    let _b80 = b.tcp_listener(80).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let inventory = dir.path().join("inventory.yaml");
    std::fs::write(
        &inventory,
        format!(
            "apiVersion: portwarden.io/v1alpha1\nkind: Inventory\nnodes:\n  - name: node-a\n    \
             addresses: [\"{}\", \"{}\"]\n    labels: {{role: a}}\n  - name: node-b\n    \
             addresses: [\"{}\"]\n    labels: {{role: b}}\n",
            a.v4(),
            a.v6(),
            b.v4()
        ),
    )
    .unwrap();
    let inventory = inventory.to_str().unwrap().to_string();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(
        policies.join("peer-b.yaml"),
        "apiVersion: portwarden.io/v1alpha1\nkind: PortPolicy\nmetadata:\n  name: peer-b\nspec:\n  \
         nodeSelector:\n    matchLabels: {role: b}\n  ports:\n    - ports: \"80\"\n      state: open\n    \
         - ports: \"81\"\n      state: closed\n",
    )
    .unwrap();
    let peer_b = policies.join("peer-b.yaml");
    let (code, _, err) = run(
        b,
        &[
            "apply",
            "-f",
            peer_b.to_str().unwrap(),
            "--inventory",
            &inventory,
            "--node",
            "node-b",
        ],
    );
    assert_eq!(code, Some(0), "apply on B: {err}");

    // Established before the first case: an operator's session to A (failsafe 2380, both
    // families) and A's long-lived connections to the API server.
    let world = World {
        lab: &lab,
        inbound: [IpAddr::from(a.v4()), IpAddr::from(a.v6())]
            .iter()
            .map(|addr| connect(scanner, SocketAddr::new(*addr, 2380)).unwrap())
            .collect(),
        outbound: [IpAddr::from(scanner.v4()), IpAddr::from(scanner.v6())]
            .iter()
            .map(|addr| connect(a, SocketAddr::new(*addr, 6443)).unwrap())
            .collect(),
    };
    world
        .check(&cases(scanner.v4().into(), scanner.v6().into())[0], false)
        .unwrap_or_else(|e| panic!("before any policy: {e}"));

    let all = cases(scanner.v4().into(), scanner.v6().into());
    assert!(all.len() >= 50, "{} cases", all.len());
    let case_dir = tempfile::tempdir().unwrap();
    for case in &all {
        let file = write_case(case_dir.path(), case);
        let file = file.to_str().unwrap();
        let (code, _, verr) = run(scanner, &["validate", file]);
        if !case.valid {
            assert_eq!(code, Some(1), "case {}: validate accepted it", case.name);
            let before = rules(a);
            let (code, _, _) = run(
                a,
                &[
                    "apply", "-f", file, "--node", "node-a", "--labels", "role=a",
                ],
            );
            assert_eq!(code, Some(1), "case {}: apply accepted it", case.name);
            assert_eq!(
                rules(a),
                before,
                "case {}: a refused policy changed rules",
                case.name
            );
            continue;
        }
        assert_eq!(
            code,
            Some(0),
            "case {}: validate refused it: {verr}",
            case.name
        );
        assert!(
            verr.contains("conflict:") && verr.contains("never blocks"),
            "case {}: validate did not report the conflict: {verr}",
            case.name
        );
        let (code, out, err) = run(
            a,
            &[
                "plan", "-f", file, "--node", "node-a", "--labels", "role=a", "-o", "json",
            ],
        );
        assert_eq!(code, Some(2), "case {}: plan: {err}", case.name);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert!(
            !v["conflicts"].as_array().unwrap().is_empty(),
            "case {}: plan reported no conflict: {out}",
            case.name
        );
        let (code, out, err) = run(
            a,
            &[
                "apply", "-f", file, "--node", "node-a", "--labels", "role=a", "-o", "json",
            ],
        );
        assert_eq!(code, Some(0), "case {}: apply failed: {err}", case.name);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert!(
            !v["conflicts"].as_array().unwrap().is_empty(),
            "case {}: apply reported no conflict: {out}",
            case.name
        );
        world
            .check(case, false)
            .unwrap_or_else(|e| panic!("case {} (apply): {e}", case.name));
    }
    // The control: without a failsafe list the first case does lock SSH out, so the checks
    // above can fail.
    let control = &all[0];
    let file = write_case(case_dir.path(), control);
    let (code, _, err) = run(
        a,
        &[
            "apply",
            "-f",
            file.to_str().unwrap(),
            "--node",
            "node-a",
            "--labels",
            "role=a",
            "--failsafe",
            "none",
        ],
    );
    assert_eq!(code, Some(0), "control apply: {err}");
    let e = world
        .check(control, false)
        .expect_err("with --failsafe none the node must be locked out");
    assert!(e.contains("failsafe TCP 22"), "{e}");
    let (code, _, err) = run(a, &["reset"]);
    assert_eq!(code, Some(0), "reset: {err}");

    // The same through the agent, for a selection: the agent adds its own HTTP port to the
    // failsafe list, and its peer scans of B must still see B as B is.
    let agent_dir = policies.to_str().unwrap().to_string();
    let _agent = a
        .spawn(&[
            BIN,
            "agent",
            "--policy-dir",
            &agent_dir,
            "--inventory",
            &inventory,
            "--node",
            "node-a",
            "--refresh",
            "3600",
            "--scan-interval",
            "1",
            "--poll-ms",
            "50",
            // Both families (the default address is IPv4 only).
            "--metrics-addr",
            &format!("[::]:{DEFAULT_AGENT_PORT}"),
        ])
        .unwrap();
    let selection: Vec<&Case> = all
        .iter()
        .filter(|c| c.valid)
        .filter(|c| {
            c.name == "combined"
                || c.name.contains("-tcp-any-")
                || (c.name.contains("-udp-both-all-") && c.name.ends_with("1-65535"))
                || c.name.contains("-tcp-scanner-128-list")
        })
        .collect();
    assert!(selection.len() >= 6, "{selection:?}");
    let mut previous = String::from("peer-b");
    for case in selection {
        std::fs::write(policies.join("case.yaml"), &case.yaml).unwrap();
        let first_policy = case
            .yaml
            .lines()
            .find_map(|l| l.strip_prefix("  name: "))
            .unwrap()
            .to_string();
        let until = Instant::now() + DEADLINE;
        loop {
            let r = rules(a);
            let inside = a
                .run(|| {
                    http_get(
                        SocketAddr::from(([127, 0, 0, 1], DEFAULT_AGENT_PORT)),
                        "/v1/inside",
                        TIMEOUT,
                    )
                })
                .unwrap();
            let converged = inside
                .as_deref()
                .is_ok_and(|t| t.contains("\"converged\":true"));
            if r.contains(&first_policy)
                && (previous == "peer-b" || !r.contains(&format!("{previous} entr")))
                && converged
            {
                break;
            }
            assert!(
                Instant::now() < until,
                "case {} (agent): not applied within {DEADLINE:?}; inside: {inside:?}\n{r}",
                case.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        previous = first_policy;
        world
            .check(case, true)
            .unwrap_or_else(|e| panic!("case {} (agent): {e}", case.name));
        // Two peer scans that started after the policy was in force: B is seen as B is.
        let scans = |a: &Netns| -> f64 {
            let text = a
                .run(|| {
                    http_get(
                        SocketAddr::from(([127, 0, 0, 1], DEFAULT_AGENT_PORT)),
                        "/metrics",
                        TIMEOUT,
                    )
                })
                .unwrap()
                .unwrap();
            text.lines()
                .find_map(|l| l.strip_prefix("portwarden_scan_duration_seconds_count "))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0)
        };
        let start = scans(a);
        let until = Instant::now() + DEADLINE;
        while scans(a) < start + 2.0 {
            assert!(
                Instant::now() < until,
                "case {} (agent): no peer scan",
                case.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let text = a
            .run(|| {
                http_get(
                    SocketAddr::from(([127, 0, 0, 1], DEFAULT_AGENT_PORT)),
                    "/v1/report",
                    TIMEOUT,
                )
            })
            .unwrap()
            .unwrap();
        let report: Report = serde_json::from_str(&text).unwrap();
        let seen: Vec<(u16, &str, Verdict)> = report
            .results
            .iter()
            .filter(|r| r.node == "node-b")
            .map(|r| (r.port, r.observed.as_str(), r.verdict))
            .collect();
        assert_eq!(
            seen,
            vec![
                (80, "open", Verdict::InSync),
                (81, "closed", Verdict::InSync)
            ],
            "case {} (agent): peer scan of B: {text}",
            case.name
        );
    }
}
