//! Fault injection at the agent level (issue 9): a real `portwarden agent` in a lab node, its
//! log (JSON) in a file, its state read over HTTP, the kernel's rules read with iptables-save.
//!
//! 1. `foreign_flush_and_table_reload_are_repaired` — `iptables -F INPUT`, then an
//!    `iptables-restore` without `--noflush` of a foreign ruleset (what firewalld does): our
//!    jump and chains come back at the next refresh, the foreign rules stay, the repair is
//!    logged and counted by kind. Both backends.
//! 2. `agent_killed_mid_apply_converges_without_duplicates` — the agent SIGKILLed while its
//!    IPv4 `iptables-restore`, its IPv6 one, or its read-back runs, then restarted: it
//!    converges, and every rule of ours is in the kernel exactly once. Both backends.
//! 3. `a_dying_iptables_restore_is_an_error_and_the_next_reconcile_repairs` — the agent's
//!    reconcile (in process) runs an `iptables-restore` that is SIGKILLed halfway (a
//!    fault-injecting wrapper, `Options::tool_dir`): the error is recorded, served and counted,
//!    nothing was written, and the next reconcile applies everything. Both backends.
//! 4. `xtables_lock_held_by_another_process_is_waited_for_and_logged` — legacy (iptables-nft
//!    has no lock): the agent's first apply waits while another process holds the (private)
//!    xtables lock, logs that it waits and for whom, and completes after the release.
//! 5. `symlinked_policy_dir_swaps_apply_each_change_once` — the policy directory is a symlink
//!    swapped atomically to new checkouts (git-sync style); each swap is loaded and applied
//!    once, no other rule count is ever loaded.
//! 6. `full_disk_or_unreadable_policy_keeps_the_last_good_state` — a file cut short by a real
//!    ENOSPC (an 8 KiB tmpfs in the agent's private mount namespace), then a file the agent
//!    cannot read (the agent runs without CAP_DAC_OVERRIDE): rules kept, error served and
//!    counted, recovery once fixed (also by a chmod alone).
//! 7. `an_empty_render_or_an_emptied_directory_keeps_the_last_good_state` — a policy file
//!    truncated to nothing (a failed render), then every file removed, then a restart on the
//!    empty directory: the rules stay as they were (a quarantined port stays closed to the
//!    scanner), the error is logged, served and counted; `--allow-empty-policy` does remove
//!    every rule.
//! 8. `an_http_flood_from_many_sources_does_not_stop_enforcement` — thousands of silent
//!    partial-header connections from 24 addresses to an agent limited to 512 descriptors:
//!    repairs and policy loads go on, `/healthz` answers a quiet source, the caps refuse and
//!    count, the header timeout closes the rest.
//! 9. `the_inside_view_shows_listeners_of_managed_ports_only` — `/v1/inside` hides sockets on
//!    ports no policy manages (loopback-only or not).
//! 10. `sighup_reloads_the_policy_directory_and_the_agent_keeps_running` — SIGHUP reloads at
//!     once, is logged, and does not stop the agent.
//! 11. `sighups_queued_behind_a_step_are_one_reload_and_sigterm_is_not_kept_waiting` — five
//!     SIGHUPs and a SIGTERM sent while a reconcile waits for the xtables lock: at most one
//!     load, then the stop.
//! 12. `the_descriptor_limit_is_fitted_once_before_the_loop_not_raised_to_the_hard_limit` —
//!     the soft descriptor limit is what serving needs, not the hard limit, and every iptables
//!     child runs with it.
//! 13. `the_inside_view_and_readyz_carry_no_error_text` — the loader's message (a path, a
//!     quoted value) is logged, not served.
//! 14. `the_agent_counts_packets_per_entry_and_dates_the_last_match` — a connection attempt
//!     to a closed entry shows in `/metrics` and `/v1/inside` as packets and a last match.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use portwarden_lab::{Lab, LabChild, LockHolder, Netns, skip_unless_lab};
use portwarden_netfilter::{Backend, Family};
use portwarden_reconcile::inside::http_get;
use portwarden_reconcile::{DEFAULT_AGENT_PORT, InsideView};

const BIN: &str = env!("CARGO_BIN_EXE_portwarden");
const DEADLINE: Duration = Duration::from_secs(30);
const BACKENDS: [Backend; 2] = [Backend::Nft, Backend::Legacy];

fn lab(tag: &str) -> Lab {
    Lab::builder(tag).nodes(1).scanners(1).build().unwrap()
}

/// A policy directory, inventory and log file for one agent.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(node: &Netns) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let inventory = format!(
            "apiVersion: portwarden.io/v1alpha1\nkind: Inventory\nnodes:\n  - name: n1\n    \
             addresses: [\"{}\"]\n    labels: {{role: web}}\n",
            node.v4()
        );
        std::fs::write(dir.path().join("inventory.yaml"), inventory).unwrap();
        std::fs::create_dir_all(dir.path().join("policies")).unwrap();
        Setup { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
}

/// A policy document with one entry per `(port, state)`, optionally from a source network.
fn policy(name: &str, entries: &[(u32, &str, Option<String>)]) -> String {
    let mut s = format!(
        "apiVersion: portwarden.io/v1alpha1\nkind: PortPolicy\nmetadata:\n  name: {name}\nspec:\n  \
         nodeSelector:\n    matchLabels: {{role: web}}\n  ports:\n"
    );
    for (port, state, from) in entries {
        let _ = writeln!(s, "    - ports: \"{port}\"\n      state: {state}");
        if let Some(f) = from {
            let _ = writeln!(s, "      from: [\"{f}\"]");
        }
    }
    s
}

/// A running agent; killed (SIGKILL) when dropped.
struct Agent {
    child: Option<LabChild>,
    log: PathBuf,
    node: Netns,
}

impl Agent {
    /// Starts `portwarden agent` in `node` with JSON logs appended to `log`. `wrap` goes in
    /// front of the command (`env X=Y`, `setpriv ...`), each program exec'ing the next, so the
    /// child's pid is the agent's.
    fn start(
        node: &Netns,
        s: &Setup,
        policy_dir: &Path,
        backend: Backend,
        refresh: u64,
        wrap: &[&str],
    ) -> Agent {
        Agent::start_with(node, s, policy_dir, backend, refresh, wrap, 100, &[])
    }

    /// [`Agent::start`], checking the policy directory every `poll_ms` milliseconds, with
    /// `extra` arguments after the agent's own.
    #[allow(clippy::too_many_arguments)]
    fn start_with(
        node: &Netns,
        s: &Setup,
        policy_dir: &Path,
        backend: Backend,
        refresh: u64,
        wrap: &[&str],
        poll_ms: u64,
        extra: &[&str],
    ) -> Agent {
        let log = s.path("agent.log");
        let script = format!("exec \"$@\" 2>>'{}'", log.display());
        let policy_dir = policy_dir.to_string_lossy().into_owned();
        let inventory = s.path("inventory.yaml").to_string_lossy().into_owned();
        let refresh = refresh.to_string();
        let poll_ms = poll_ms.to_string();
        let mut args: Vec<&str> = wrap.to_vec();
        args.extend([
            "sh",
            "-c",
            &script,
            "sh",
            BIN,
            "agent",
            "--policy-dir",
            &policy_dir,
            "--inventory",
            &inventory,
            "--node",
            "n1",
            "--refresh",
            &refresh,
            "--poll-ms",
            &poll_ms,
            "--backend",
            backend.as_str(),
            "--log-format",
            "json",
        ]);
        args.extend_from_slice(extra);
        Agent {
            child: Some(node.spawn(&args).unwrap()),
            log,
            node: node.clone(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn kill(&mut self) {
        // LabChild kills with SIGKILL and reaps on drop
        self.child = None;
    }

    fn get(&self, path: &str) -> Result<String, String> {
        let path = path.to_string();
        let addr = SocketAddr::from(([127, 0, 0, 1], DEFAULT_AGENT_PORT));
        self.node
            .run(move || http_get(addr, &path, Duration::from_secs(5)))
            .map_err(|e| e.to_string())?
    }

    fn inside(&self) -> Result<InsideView, String> {
        serde_json::from_str(&self.get("/v1/inside")?).map_err(|e| e.to_string())
    }

    /// Waits until the inside view satisfies `ok`.
    fn wait_for(&self, what: &str, ok: impl Fn(&InsideView) -> bool) -> InsideView {
        wait(what, || self.inside().ok().filter(&ok))
    }

    fn metric(&self, name: &str) -> f64 {
        let text = self.get("/metrics").unwrap();
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// The agent's log events (one JSON object per line).
    fn events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits for an "invalid policy documents" event, past the first `mark` events of the log,
    /// whose problem contains `text`; returns the problem. (The inside view only says that the
    /// documents are invalid: any host can read it.)
    fn problem_logged(&self, mark: usize, text: &str) -> String {
        wait(&format!("a problem logged with {text:?}"), || {
            self.events().into_iter().skip(mark).find_map(|e| {
                let invalid = e["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("invalid policy documents"));
                let problem = e["fields"]["problem"].as_str()?.to_string();
                (invalid && problem.contains(text)).then_some(problem)
            })
        })
    }

    /// Log events whose message contains `text`.
    fn logged(&self, text: &str) -> Vec<serde_json::Value> {
        self.events()
            .into_iter()
            .filter(|e| {
                e["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(text))
            })
            .collect()
    }
}

/// Polls `f` until it returns `Some`, or panics after [`DEADLINE`].
fn wait<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    wait_explained(what, String::new, f)
}

/// As [`wait`]; the panic message ends with what `explain` says then.
fn wait_explained<T>(
    what: &str,
    explain: impl Fn() -> String,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let until = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < until,
            "timed out waiting for: {what}{}",
            explain()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn tool(backend: Backend, family: Family, what: &str) -> String {
    format!("{}-{}-{what}", family.tool(), backend)
}

/// `iptables-save -t filter` of a family, without comments and counters.
fn save(node: &Netns, backend: Backend, family: Family) -> String {
    node.exec(&[&tool(backend, family, "save"), "-t", "filter"])
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| match l.split_once("] ") {
            Some((c, rest)) if c.starts_with('[') => rest.to_string(),
            _ => l.split(" [").next().unwrap_or(l).to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Our `-A` lines (rules of our chains and rules jumping into them), sorted.
fn ours(save: &str) -> Vec<String> {
    let mut v: Vec<String> = save
        .lines()
        .filter(|l| l.starts_with("-A ") && l.contains("PORTWARDEN-"))
        .map(String::from)
        .collect();
    v.sort();
    v
}

/// The rules of `INPUT`, in order.
fn input_chain(save: &str) -> Vec<String> {
    save.lines()
        .filter(|l| l.starts_with("-A INPUT "))
        .map(String::from)
        .collect()
}

fn ipt(node: &Netns, backend: Backend, family: Family, args: &[&str]) {
    let prog = format!("{}-{}", family.tool(), backend);
    let mut v = vec![prog.as_str(), "-w"];
    v.extend_from_slice(args);
    node.exec(&v).unwrap();
}

/// Feeds `input` to a restore tool inside `node` (`--noflush` or not).
fn restore(node: &Netns, program: &str, noflush: bool, input: &str) {
    let mut args = vec!["ip", "netns", "exec", &node.name, program];
    if noflush {
        args.push("--noflush");
    }
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "{program}");
}

fn web_policy() -> String {
    policy(
        "web",
        &[
            (80, "open", None),
            (443, "open", None),
            (8080, "closed", None),
            (9090, "filtered", None),
        ],
    )
}

/// A one-node lab whose agent setup holds [`web_policy`].
fn web_lab(tag: &str) -> (Lab, Netns, Setup) {
    let lab = lab(tag);
    let node = lab.node(0).clone();
    let s = Setup::new(&node);
    std::fs::write(s.path("policies/web.yaml"), web_policy()).unwrap();
    (lab, node, s)
}

/// Whether our jump is the first rule of INPUT, exactly once, and our rules are those of
/// `reference`.
fn intact(save: &str, reference: &[String]) -> bool {
    let input = input_chain(save);
    let jumps = input.iter().filter(|l| l.contains("PORTWARDEN-")).count();
    jumps == 1 && input[0].contains("-j PORTWARDEN-INPUT") && ours(save) == reference
}

#[test]
fn foreign_flush_and_table_reload_are_repaired() {
    skip_unless_lab!();
    for backend in BACKENDS {
        let lab = lab("fflush");
        let node = lab.node(0).clone();
        let s = Setup::new(&node);
        std::fs::write(s.path("policies/web.yaml"), web_policy()).unwrap();
        // a foreign rule in INPUT and a foreign chain, before the agent starts
        ipt(&node, backend, Family::Ipv4, &["-N", "FOREIGN"]);
        ipt(
            &node,
            backend,
            Family::Ipv4,
            &[
                "-A", "FOREIGN", "-p", "udp", "--dport", "53", "-j", "ACCEPT",
            ],
        );
        ipt(
            &node,
            backend,
            Family::Ipv4,
            &["-A", "INPUT", "-s", "192.0.2.0/24", "-j", "FOREIGN"],
        );
        let agent = Agent::start(&node, &s, &s.path("policies"), backend, 1, &[]);
        agent.wait_for("converged", |v| v.converged);
        let reference: Vec<Vec<String>> = Family::ALL
            .iter()
            .map(|&f| ours(&save(&node, backend, f)))
            .collect();
        let v6_before = save(&node, backend, Family::Ipv6);
        assert!(intact(&save(&node, backend, Family::Ipv4), &reference[0]));
        let foreign_rule = "-A INPUT -s 192.0.2.0/24 -j FOREIGN";

        // (1) a foreign tool flushes INPUT, then puts its own rule back
        ipt(&node, backend, Family::Ipv4, &["-F", "INPUT"]);
        ipt(
            &node,
            backend,
            Family::Ipv4,
            &["-A", "INPUT", "-s", "192.0.2.0/24", "-j", "FOREIGN"],
        );
        let flushed = Instant::now();
        let repaired = wait("jump back after -F INPUT", || {
            let now = save(&node, backend, Family::Ipv4);
            intact(&now, &reference[0]).then_some(now)
        });
        eprintln!(
            "{backend}: -F INPUT repaired after {:?} (refresh 1 s)",
            flushed.elapsed()
        );
        assert_eq!(
            input_chain(&repaired)[1..],
            [foreign_rule.to_string()],
            "{backend}: the foreign rule stays, below our jump"
        );
        assert!(repaired.contains("-A FOREIGN -p udp -m udp --dport 53 -j ACCEPT"));
        let event = wait("repair logged", || {
            agent.logged("repaired rule drift").pop()
        });
        assert_eq!(event["level"], "WARN", "{event}");
        assert_eq!(event["fields"]["kinds"], "jump_missing", "{event}");
        wait("jump_missing counted", || {
            (agent.metric("portwarden_rule_drift_total{kind=\"jump_missing\"}") >= 1.0)
                .then_some(())
        });

        // (2) a whole-table reload without --noflush (firewalld, iptables-restore): our chains go
        let reload = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                      :FOREIGN - [0:0]\n-A INPUT -s 192.0.2.0/24 -j FOREIGN\n\
                      -A FOREIGN -p udp -m udp --dport 53 -j ACCEPT\n\
                      -A FOREIGN -p tcp -m tcp --dport 2222 -j ACCEPT\nCOMMIT\n";
        restore(
            &node,
            &tool(backend, Family::Ipv4, "restore"),
            false,
            reload,
        );
        let gone = save(&node, backend, Family::Ipv4);
        assert!(
            !gone.contains("PORTWARDEN"),
            "{backend}: the reload removed our chains"
        );
        let reloaded = Instant::now();
        let repaired = wait("chains back after a table reload", || {
            let now = save(&node, backend, Family::Ipv4);
            intact(&now, &reference[0]).then_some(now)
        });
        eprintln!(
            "{backend}: table reload repaired after {:?} (refresh 1 s)",
            reloaded.elapsed()
        );
        assert_eq!(input_chain(&repaired)[1..], [foreign_rule.to_string()]);
        assert!(repaired.contains("-A FOREIGN -p tcp -m tcp --dport 2222 -j ACCEPT"));
        let event = wait("reload repair logged", || {
            agent
                .logged("repaired rule drift")
                .into_iter()
                .find(|e| e["fields"]["kinds"] == "jump_missing,chain_missing")
        });
        assert!(event["fields"]["added"].as_u64().unwrap() > 5, "{event}");
        wait("chain_missing counted", || {
            (agent.metric("portwarden_rule_drift_total{kind=\"chain_missing\"}") >= 1.0)
                .then_some(())
        });
        assert!(agent.metric("portwarden_rule_drift_repairs_total") >= 2.0);
        // IPv6 was never touched by any of it
        assert_eq!(save(&node, backend, Family::Ipv6), v6_before, "{backend}");
        assert_eq!(agent.metric("portwarden_reconcile_errors_total"), 0.0);
    }
}

/// A point to kill the agent at: a name, and whether its children (pid, command line) show
/// it was reached (with a flag to remember an earlier child by).
type KillPoint = (&'static str, fn(&[(u32, String)], &mut bool) -> bool);

/// The pids of the agent's children (every thread's), with their command lines.
fn children(pid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        for k in kids
            .split_whitespace()
            .filter_map(|k| k.parse::<u32>().ok())
        {
            let cmd = std::fs::read(format!("/proc/{k}/cmdline")).unwrap_or_default();
            out.push((k, String::from_utf8_lossy(&cmd).replace('\0', " ")));
        }
    }
    out
}

#[test]
fn agent_killed_mid_apply_converges_without_duplicates() {
    skip_unless_lab!();
    // 10,000 entries, each from its own source (so nothing merges): about 5,000 rules a family
    let entries: Vec<(u32, &str, Option<String>)> = (0..10_000u32)
        .map(|i| {
            let from = if i % 2 == 0 {
                format!("10.{}.{}.0/24", 100 + i / 256 % 100, i % 256)
            } else {
                format!("fd00:{:x}::/64", i)
            };
            (
                20_000 + i,
                ["open", "closed", "filtered"][(i % 3) as usize],
                Some(from),
            )
        })
        .collect();
    // where the agent is killed: which child of its apply is running
    let points: [KillPoint; 3] = [
        ("during the IPv4 iptables-restore", |kids, _| {
            kids.iter()
                .any(|(_, c)| c.contains("/iptables-") && c.contains("-restore"))
        }),
        ("during the IPv6 iptables-restore", |kids, _| {
            kids.iter()
                .any(|(_, c)| c.contains("/ip6tables-") && c.contains("-restore"))
        }),
        ("during the read-back", |kids, seen| {
            if kids
                .iter()
                .any(|(_, c)| c.contains("ip6tables-") && c.contains("-restore"))
            {
                *seen = true;
            }
            *seen && kids.iter().any(|(_, c)| c.contains("-save"))
        }),
    ];
    for backend in BACKENDS {
        let lab = lab("fsigkill");
        let node = lab.node(0).clone();
        let s = Setup::new(&node);
        std::fs::write(s.path("policies/big.yaml"), policy("big", &entries)).unwrap();
        // the reference: an undisturbed agent's rules
        let mut agent = Agent::start(&node, &s, &s.path("policies"), backend, 1, &[]);
        agent.wait_for("converged", |v| v.converged);
        let reference: Vec<Vec<String>> = Family::ALL
            .iter()
            .map(|&f| ours(&save(&node, backend, f)))
            .collect();
        assert!(
            reference[0].len() > 4_000 && reference[1].len() > 4_000,
            "{}",
            reference[0].len()
        );
        eprintln!(
            "{backend}: {} IPv4 and {} IPv6 rules of ours",
            reference[0].len(),
            reference[1].len()
        );
        agent.kill();
        for (point, reached) in points {
            // from a node without our rules, so that the agent's first reconcile applies them all
            let out = node
                .exec(&[BIN, "reset", "--backend", backend.as_str()])
                .unwrap();
            assert!(out.contains("removed"), "{out}");
            let mut agent = Agent::start(&node, &s, &s.path("policies"), backend, 1, &[]);
            let pid = agent.pid();
            let mut seen = false;
            let kids = wait(point, || {
                let kids = children(pid);
                reached(&kids, &mut seen).then_some(kids)
            });
            agent.kill();
            eprintln!("{backend}: agent killed {point}; its children: {kids:?}");
            let agent = Agent::start(&node, &s, &s.path("policies"), backend, 1, &[]);
            agent.wait_for("converged after the restart", |v| {
                v.converged && !v.apply_failed
            });
            for (i, &f) in Family::ALL.iter().enumerate() {
                let now = save(&node, backend, f);
                let mine = ours(&now);
                let mut unique = mine.clone();
                unique.dedup();
                assert_eq!(
                    unique.len(),
                    mine.len(),
                    "{backend} {f} after a kill {point}: duplicates"
                );
                assert!(
                    intact(&now, &reference[i]),
                    "{backend} {f} after a kill {point}"
                );
            }
        }
    }
}

/// Holds a private xtables lock (never /run/xtables.lock) from another process; returns the
/// holder, the lock's path and the `XTABLES_LOCKFILE=` setting that points iptables at it.
fn hold_private_xtables_lock(s: &Setup) -> (LockHolder, PathBuf, String) {
    let lock = s.path("xtables.lock");
    std::fs::write(&lock, "").unwrap();
    let holder = LockHolder::hold(&lock).expect("hold the private xtables lock");
    let env = format!("XTABLES_LOCKFILE={}", lock.display());
    (holder, lock, env)
}

#[test]
fn xtables_lock_held_by_another_process_is_waited_for_and_logged() {
    skip_unless_lab!();
    // Legacy only: iptables-nft takes no lock (crates/netfilter/tests/faults.rs shows an nft
    // apply completing while the lock is held).
    let backend = Backend::Legacy;
    let lab = lab("fxlock");
    let node = lab.node(0).clone();
    let s = Setup::new(&node);
    std::fs::write(s.path("policies/web.yaml"), web_policy()).unwrap();
    let (holder, lock, env) = hold_private_xtables_lock(&s);
    let agent = Agent::start(
        &node,
        &s,
        &s.path("policies"),
        backend,
        3600,
        &["env", &env],
    );
    let event = wait("the wait logged", || {
        agent.logged("waiting for the xtables lock").pop()
    });
    assert_eq!(event["level"], "WARN", "{event}");
    assert_eq!(event["fields"]["holder_pid"], holder.pid(), "{event}");
    // The holder's command line (`flock LOCK -c ...`), as the writer lock's waits name theirs.
    assert!(
        event["fields"]["holder"]
            .as_str()
            .is_some_and(|h| h.starts_with(&format!("flock {}", lock.display()))),
        "{event}"
    );
    assert_eq!(
        event["fields"]["lock"],
        lock.to_string_lossy().as_ref(),
        "{event}"
    );
    // still waiting, not failed: nothing applied, no error
    let ready = agent.get("/readyz");
    assert!(
        ready
            .as_ref()
            .is_err_and(|e| e.contains("intent not applied yet")),
        "{ready:?}"
    );
    assert!(!save(&node, backend, Family::Ipv4).contains("PORTWARDEN"));
    assert_eq!(agent.metric("portwarden_reconcile_errors_total"), 0.0);
    drop(holder);
    wait("ready after the release", || agent.get("/readyz").ok());
    assert!(save(&node, backend, Family::Ipv4).contains("-j PORTWARDEN-INPUT"));
    let over = wait("end of the wait logged", || {
        agent.logged("xtables lock wait over").pop()
    });
    assert_eq!(over["fields"]["ok"], true, "{over}");
    assert_eq!(agent.metric("portwarden_reconcile_errors_total"), 0.0);
}

/// `rules` values of the agent's "policy documents loaded" events, in order.
fn loads(agent: &Agent) -> Vec<u64> {
    agent
        .logged("policy documents loaded")
        .iter()
        .map(|e| e["fields"]["rules"].as_u64().unwrap())
        .collect()
}

#[test]
fn symlinked_policy_dir_swaps_apply_each_change_once() {
    skip_unless_lab!();
    // The policy directory does not touch iptables differently per backend: nft only.
    let backend = Backend::Nft;
    let lab = lab("fswap");
    let node = lab.node(0).clone();
    let s = Setup::new(&node);
    // Two versions of a two-file checkout. Any mix of their files has another rule count:
    // v1 = a1 (3) + b (2) = 5, v2 = a2 (4) + c (3) = 7; a2+b = 6, a1+c = 6, a1 = 3, a2 = 4, ...
    let version = |v: u32| -> Vec<(&'static str, String)> {
        let e = |ports: &[u32]| -> Vec<(u32, &str, Option<String>)> {
            ports.iter().map(|&p| (p, "closed", None)).collect()
        };
        match v {
            1 => vec![
                ("a.yaml", policy("a", &e(&[1001, 1003, 1005]))),
                ("b.yaml", policy("b", &e(&[2001, 2003]))),
            ],
            _ => vec![
                ("a.yaml", policy("a", &e(&[1001, 1003, 1005, 1007]))),
                ("c.yaml", policy("c", &e(&[3001, 3003, 3005]))),
            ],
        }
    };
    // a rule only that version has (its comment names the policy)
    let marker = |v: u32| {
        if v == 1 { "\"b entr" } else { "\"c entr" }
    };
    let checkout = |rev: u32, v: u32| -> PathBuf {
        let dir = s.path(&format!("checkouts/rev-{rev}"));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in version(v) {
            std::fs::write(dir.join(name), text).unwrap();
        }
        dir
    };
    let link = s.path("policy");
    std::os::unix::fs::symlink(checkout(0, 1), &link).unwrap();
    let agent = Agent::start(&node, &s, &link, backend, 3600, &[]);
    agent.wait_for("converged", |v| v.converged);
    let counts = loads(&agent);
    assert_eq!(counts.len(), 1, "{counts:?}");
    let (v1_rules, mut expected) = (counts[0], counts.clone());
    let mut v2_rules = None;
    for rev in 1..=4u32 {
        let v = if rev % 2 == 1 { 2 } else { 1 };
        // git-sync: a new checkout beside the old one, then one rename(2) of a new link over
        // the old link (`ln -s rev-N policy.tmp && mv -T policy.tmp policy`)
        let dir = checkout(rev, v);
        let tmp = s.path("policy.tmp");
        std::os::unix::fs::symlink(&dir, &tmp).unwrap();
        std::fs::rename(&tmp, &link).unwrap();
        wait(&format!("rev {rev} (v{v}) applied"), || {
            save(&node, backend, Family::Ipv4)
                .contains(marker(v))
                .then_some(())
        });
        let counts = wait("the load logged", || {
            let c = loads(&agent);
            (c.len() == expected.len() + 1).then_some(c)
        });
        let n = *counts.last().unwrap();
        match v {
            1 => assert_eq!(n, v1_rules),
            _ => assert_eq!(*v2_rules.get_or_insert(n), n),
        }
        expected.push(n);
        // the old checkout is deleted, as git-sync does
        std::fs::remove_dir_all(s.path(&format!("checkouts/rev-{}", rev - 1))).unwrap();
    }
    agent.wait_for("converged at the end", |v| v.converged && !v.policy_invalid);
    // one load and one apply per swap, nothing in between, no error on the way
    let counts = loads(&agent);
    assert_eq!(counts, expected, "loads: {counts:?}");
    assert_eq!(counts.len(), 5);
    assert_ne!(Some(v1_rules), v2_rules);
    // The inside view reads without the writer lock, so it can say "converged" while the
    // agent still reads its last write back: wait for that apply's log line.
    let applies = || {
        agent
            .logged("applied")
            .iter()
            .filter(|e| e["fields"]["reason"] == "policy change")
            .count()
    };
    wait("the last apply logged", || (applies() >= 5).then_some(()));
    assert_eq!(applies(), 5, "{:?}", agent.events());
    assert_eq!(agent.metric("portwarden_policy_load_errors_total"), 0.0);
    assert_eq!(agent.metric("portwarden_reconcile_errors_total"), 0.0);
}

/// Whether a TCP connection from `from` to `to` is refused (the port looks closed), rather
/// than accepted (open) or unanswered (filtered).
fn refused(from: &Netns, to: SocketAddr) -> bool {
    let r = from
        .run(move || std::net::TcpStream::connect_timeout(&to, Duration::from_secs(2)))
        .unwrap();
    matches!(r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
}

#[test]
fn an_empty_render_or_an_emptied_directory_keeps_the_last_good_state() {
    skip_unless_lab!();
    // What the policy files hold does not depend on the backend: nft only.
    let backend = Backend::Nft;
    let lab = lab("fempty");
    let node = lab.node(0).clone();
    let scanner = lab.scanner(0).clone();
    let s = Setup::new(&node);
    // 8080 is quarantined (closed) while a service listens on it: were the rules removed, the
    // scanner would see it open.
    let _service = node.tcp_listener(8080).unwrap();
    let quarantined = SocketAddr::from((node.v4(), 8080));
    let web = policy("web", &[(80, "open", None), (443, "open", None)]);
    let quarantine = policy("quarantine", &[(8080, "closed", None)]);
    std::fs::write(s.path("policies/web.yaml"), &web).unwrap();
    std::fs::write(s.path("policies/quarantine.yaml"), &quarantine).unwrap();
    let policies = s.path("policies");
    let mut agent = Agent::start(&node, &s, &policies, backend, 1, &[]);
    agent.wait_for("converged", |v| v.converged && !v.policy_invalid);
    assert!(refused(&scanner, quarantined), "8080 closed by the policy");
    let rules = || {
        Family::ALL
            .iter()
            .map(|&f| save(&node, backend, f))
            .collect::<Vec<_>>()
    };
    let good = rules();
    assert!(good[0].contains("\"quarantine entr"), "{}", good[0]);
    let errors = std::cell::Cell::new(0.0);
    // `mark`: the log's length before the change
    let kept = |agent: &Agent, what: &str, message: &str, mark: usize| {
        agent.wait_for(what, |v| v.policy_invalid);
        eprintln!(
            "{what}: logged as {:?}",
            agent.problem_logged(mark, message)
        );
        errors.set(wait("load error counted", || {
            let n = agent.metric("portwarden_policy_load_errors_total");
            (n > errors.get()).then_some(n)
        }));
        assert_eq!(agent.metric("portwarden_policy_valid"), 0.0, "{what}");
        assert_eq!(rules(), good, "{what}: rules unchanged");
        assert!(refused(&scanner, quarantined), "{what}: 8080 still closed");
    };

    // (1) a render that failed: `cat /nonexistent > quarantine.yaml` leaves it empty
    let mark = agent.events().len();
    std::fs::File::create(s.path("policies/quarantine.yaml")).unwrap();
    kept(
        &agent,
        "a truncated file",
        "quarantine.yaml: error: file is empty",
        mark,
    );
    // (2) the directory emptied (every file removed)
    let mark = agent.events().len();
    std::fs::remove_file(s.path("policies/quarantine.yaml")).unwrap();
    std::fs::remove_file(s.path("policies/web.yaml")).unwrap();
    kept(
        &agent,
        "an emptied directory",
        "no PortPolicy documents",
        mark,
    );

    // (3) the agent restarted on the empty directory: its first load applies nothing, so the
    // rules of the last run stay, and it is not ready
    agent.kill();
    let mark = agent.events().len();
    let mut agent = Agent::start(&node, &s, &policies, backend, 1, &[]);
    errors.set(0.0);
    kept(
        &agent,
        "first start with no documents",
        "no PortPolicy documents",
        mark,
    );
    let ready = agent.get("/readyz").unwrap_err();
    assert!(
        ready.contains(" 503 ") && ready.contains("no valid policy yet"),
        "{ready}"
    );

    // (4) said explicitly: an empty policy set is the intent, and every rule goes
    agent.kill();
    let agent = Agent::start_with(
        &node,
        &s,
        &policies,
        backend,
        1,
        &[],
        100,
        &["--allow-empty-policy"],
    );
    agent.wait_for("converged on nothing", |v| v.converged && !v.policy_invalid);
    let left = ours(&save(&node, backend, Family::Ipv4));
    assert!(
        !left
            .iter()
            .any(|l| l.contains("\"web entr") || l.contains("\"quarantine entr")),
        "no policy rule left: {left:#?}"
    );
    wait("8080 open once the rules are gone", || {
        (!refused(&scanner, quarantined)).then_some(())
    });
}

/// Runs `script` (`sh -c`) in the agent's mount namespace, where its policy directory is a
/// small tmpfs, with `input` on standard input.
fn in_agent_mounts(agent: &Agent, script: &str, input: &str) -> std::process::Output {
    let pid = agent.pid().to_string();
    let mut child = Command::new("nsenter")
        .args(["-t", &pid, "-m", "--", "sh", "-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nsenter (util-linux)");
    // a write error means the script stopped reading; its status says why
    let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    child.wait_with_output().unwrap()
}

#[test]
fn full_disk_or_unreadable_policy_keeps_the_last_good_state() {
    skip_unless_lab!();
    // What a policy file looks like to the agent does not depend on the backend: nft only.
    let backend = Backend::Nft;
    let lab = lab("fdisk");
    let node = lab.node(0).clone();
    let s = Setup::new(&node);
    let good = web_policy();
    std::fs::write(s.path("policies/web.yaml"), &good).unwrap();
    // The agent's policy directory is an 8 KiB tmpfs in a private mount namespace of its own
    // (nothing is mounted where anyone else sees it); the agent runs without
    // CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, so file modes bind it like a non-root agent
    // with CAP_NET_ADMIN.
    let mnt = s.path("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let (mnt_s, src) = (
        mnt.display().to_string(),
        s.path("policies").display().to_string(),
    );
    let setup = format!(
        "mount -t tmpfs -o size=8k pw-faults '{mnt_s}' && cp '{src}/web.yaml' '{mnt_s}/' && exec \"$@\""
    );
    let wrap = [
        "setpriv",
        "--bounding-set",
        "-dac_override,-dac_read_search",
        "--",
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        &setup,
        "sh",
    ];
    let agent = Agent::start(&node, &s, &mnt, backend, 1, &wrap);
    agent.wait_for("converged", |v| v.converged && !v.policy_invalid);
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
    let eff = status.lines().find(|l| l.starts_with("CapEff:")).unwrap();
    let caps = u64::from_str_radix(eff.split_whitespace().nth(1).unwrap(), 16).unwrap();
    assert_eq!(
        caps & 0b110,
        0,
        "CAP_DAC_OVERRIDE/READ_SEARCH dropped: {eff}"
    );
    let df = in_agent_mounts(&agent, &format!("df -k '{mnt_s}' | tail -1"), "");
    assert!(
        String::from_utf8_lossy(&df.stdout).starts_with("pw-faults "),
        "{df:?}"
    );

    let rules = || {
        Family::ALL
            .iter()
            .map(|&f| save(&node, backend, f))
            .collect::<Vec<_>>()
    };
    let mut errors = 0.0;
    // `mark`: the log's length before the change
    let mut check_kept = |what: &str, message: &str, last_good: &[String], mark: usize| {
        let view = agent.wait_for(what, |v| v.policy_invalid);
        let error = agent.problem_logged(mark, message);
        assert!(error.contains("web.yaml"), "{what}: {error}");
        eprintln!("{what}: logged as {error:?}");
        assert!(
            view.converged,
            "{what}: the last good rules are still applied"
        );
        assert_eq!(rules(), last_good, "{what}: rules kept");
        errors = wait("load error counted", || {
            let n = agent.metric("portwarden_policy_load_errors_total");
            (n > errors).then_some(n)
        });
        assert_eq!(agent.metric("portwarden_policy_valid"), 0.0);
        // still ready: the last good state is applied; /v1/inside says the documents are
        // invalid, the log says why
        assert_eq!(agent.get("/readyz").unwrap(), "ready\n");
    };

    // (1) the disk fills up while a new version is written in place (as `git checkout` and
    // `cat >` do): the write fails with ENOSPC and leaves the file cut at 8 KiB. The new
    // version is written in YAML's flow style, so a cut anywhere leaves it unterminated. (A
    // cut that happens to leave a valid document is indistinguishable from an edit.)
    let last_good = rules();
    let mark = agent.events().len();
    let mut big = String::from(
        "apiVersion: portwarden.io/v1alpha1\nkind: PortPolicy\nmetadata: {name: web}\n\
         spec: {nodeSelector: {matchLabels: {role: web}}, ports: [\n",
    );
    for p in 0..600 {
        let _ = writeln!(big, "  {{ports: \"{}\", state: closed}},", 30_000 + p);
    }
    big.push_str("]}\n");
    let out = in_agent_mounts(&agent, &format!("cat > '{mnt_s}/web.yaml'"), &big);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("No space left on device"),
        "{out:?}"
    );
    let size = in_agent_mounts(&agent, &format!("wc -c < '{mnt_s}/web.yaml'"), "");
    let size: usize = String::from_utf8_lossy(&size.stdout)
        .trim()
        .parse()
        .unwrap();
    assert!(
        size > 0 && size < big.len(),
        "cut at {size} of {}",
        big.len()
    );
    eprintln!("ENOSPC left {size} of {} bytes", big.len());
    check_kept(
        "a file cut short by a full disk",
        "web.yaml",
        &last_good,
        mark,
    );
    // fixed: space freed, the file written whole (a new entry, visible in the rules)
    let fixed = good.replace(
        "      state: filtered\n",
        "      state: filtered\n    - ports: \"7777\"\n      state: closed\n",
    );
    let out = in_agent_mounts(&agent, &format!("cat > '{mnt_s}/web.yaml'"), &fixed);
    assert!(out.status.success(), "{out:?}");
    wait("the fixed file applied", || {
        save(&node, backend, Family::Ipv4)
            .contains("--dport 7777 ")
            .then_some(())
    });
    agent.wait_for("error cleared", |v| !v.policy_invalid && v.converged);
    assert_eq!(agent.metric("portwarden_policy_valid"), 1.0);

    // (2) unreadable: the file is replaced by one with mode 000 (a checkout by another user
    // with a strict umask)
    let last_good = rules();
    let mark = agent.events().len();
    let replace = format!(
        "cd '{mnt_s}' && cat > .web.yaml.tmp && chmod 000 .web.yaml.tmp && mv .web.yaml.tmp web.yaml"
    );
    let out = in_agent_mounts(&agent, &replace, &good.replace("9090", "9191"));
    assert!(out.status.success(), "{out:?}");
    check_kept("an unreadable file", "Permission denied", &last_good, mark);
    // fixed by a chmod alone (no new content, no new inode)
    let out = in_agent_mounts(&agent, &format!("chmod 644 '{mnt_s}/web.yaml'"), "");
    assert!(out.status.success(), "{out:?}");
    wait("the readable file applied", || {
        save(&node, backend, Family::Ipv4)
            .contains("--dport 9191 ")
            .then_some(())
    });
    agent.wait_for("error cleared", |v| !v.policy_invalid && v.converged);
    let logged = agent.logged("invalid policy documents");
    assert!(logged.len() >= 2, "{logged:?}");
    // nothing of the tmpfs is visible outside the agent's mount namespace
    assert_eq!(std::fs::read_dir(&mnt).unwrap().count(), 0);
}

/// A tool directory for `backend`: the real save and restore tools (symlinks; xtables-multi
/// goes by its name), except `iptables-*-restore`, a script whose first run passes 1,000 bytes
/// of its input to the real tool, then SIGKILLs it and itself.
fn dying_restore_tools(dir: &Path, backend: Backend) -> PathBuf {
    let dir = dir.join(format!("tools-{backend}"));
    std::fs::create_dir_all(&dir).unwrap();
    for family in Family::ALL {
        for what in ["save", "restore"] {
            let name = tool(backend, family, what);
            let real = portwarden_netfilter::backend::find_program(&name, None).unwrap();
            let path = dir.join(&name);
            if family == Family::Ipv4 && what == "restore" {
                let script = format!(
                    "#!/bin/sh\n# fault injection in front of {real}\n\
                     if [ ! -e \"$0.fired\" ]; then\n\
                     \x20 : > \"$0.fired\"\n\
                     \x20 fifo=\"$0.fifo\"; rm -f \"$fifo\"; mkfifo \"$fifo\"\n\
                     \x20 \"{real}\" \"$@\" < \"$fifo\" & pid=$!\n\
                     \x20 exec 3> \"$fifo\"\n\
                     \x20 head -c 1000 >&3\n\
                     \x20 kill -KILL $pid; wait $pid; rm -f \"$fifo\"\n\
                     \x20 kill -KILL $$\n\
                     fi\n\
                     exec \"{real}\" \"$@\"\n",
                    real = real.display()
                );
                std::fs::write(&path, script).unwrap();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            } else {
                std::os::unix::fs::symlink(&real, &path).unwrap();
            }
        }
    }
    dir
}

#[test]
fn a_dying_iptables_restore_is_an_error_and_the_next_reconcile_repairs() {
    use portwarden_agent::converge::{Reason, converge};
    use portwarden_agent::{AgentConfig, Files, Shared, Source};
    use portwarden_netfilter::{BackendChoice, Failsafe, Options};
    skip_unless_lab!();
    for backend in BACKENDS {
        let lab = lab("fdying");
        let node = lab.node(0).clone();
        let s = Setup::new(&node);
        std::fs::write(s.path("policies/web.yaml"), web_policy()).unwrap();
        let loaded = portwarden_policy::load_paths(&[s.path("policies")]).unwrap();
        let labels = [("role".to_string(), "web".to_string())].into();
        let intent = std::sync::Arc::new(loaded.policies.compile(&labels));
        let shared = Shared::new(AgentConfig {
            source: Source::Files(Files {
                policy_dir: s.path("policies"),
                inventory: s.path("inventory.yaml"),
                poll: Duration::from_millis(100),
                allow_empty_policy: false,
            }),
            node: "n1".into(),
            refresh: Duration::from_secs(1),
            scan_interval: None,
            scan_rate: None,
            confirm_budget: None,
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_AGENT_PORT)),
            failsafe: Failsafe::default(),
            netfilter: Options {
                backend: BackendChoice::Fixed(backend),
                tool_dir: Some(dying_restore_tools(s.dir.path(), backend)),
                ..Options::default()
            },
        });
        shared.set_intent(Some(intent), None);
        let sh = shared.clone();
        let first = node
            .run(move || {
                converge(&sh, Reason::PolicyChange);
                sh.with_state(|st| (st.ready, st.apply_error.clone()))
            })
            .unwrap();
        let error = first.1.unwrap_or_default();
        assert!(!first.0, "{backend}: not ready after a failed apply");
        assert!(
            error.contains("IPv4 transaction was interrupted") && error.contains("signal 9"),
            "{backend}: {error}"
        );
        // The inside view, served to any host, says that the apply failed, not iptables'
        // words (they are in the log and in `apply_error`).
        let sh = shared.clone();
        let view = node.run(move || sh.inside_view()).unwrap();
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["apply_failed"], true, "{backend}: {json}");
        assert!(
            !json.to_string().contains("interrupted") && !json.to_string().contains("signal"),
            "{backend}: {json}"
        );
        let text = shared.metrics.encode();
        assert!(
            text.contains("portwarden_reconcile_errors_total 1\n"),
            "{text}"
        );
        for f in Family::ALL {
            assert!(
                !save(&node, backend, f).contains("PORTWARDEN"),
                "{backend} {f}: nothing written"
            );
        }
        // the next reconcile (the agent's next refresh) runs the real tool and applies it all
        let sh = shared.clone();
        let second = node
            .run(move || {
                converge(&sh, Reason::Refresh);
                sh.with_state(|st| (st.ready, st.apply_error.clone()))
            })
            .unwrap();
        assert_eq!(second, (true, None), "{backend}");
        let text = shared.metrics.encode();
        assert!(
            text.contains("portwarden_rule_drift_repairs_total 0\n"),
            "finishing our own change is not drift: {text}"
        );
        for f in Family::ALL {
            let now = save(&node, backend, f);
            assert!(
                input_chain(&now)[0].contains("-j PORTWARDEN-INPUT"),
                "{backend} {f}"
            );
        }
        let sh = shared.clone();
        let view = node.run(move || sh.inside_view()).unwrap();
        assert!(view.converged && !view.apply_failed, "{view:?}");
    }
}

// --- hostile HTTP clients and signals (issue 13, items 6, 11 and 12) ---

/// The agent's descriptor limit in the flood test: low, so that a flood is cheap.
const AGENT_NOFILE: u64 = 512;
/// Source addresses of the flood: more than the total connection cap divided by the
/// per-source cap, so both caps are reached.
const FLOOD_SOURCES: usize = 24;
/// Connections each flooding source tries to hold at once.
const FLOOD_HOLD: usize = 100;

/// Raises this test process's soft descriptor limit to its hard limit: the flood holds a few
/// thousand sockets.
fn raise_own_nofile_limit() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid, writable rlimit for the duration of both calls.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut r), 0);
        r.rlim_cur = r.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &r), 0);
    }
}

/// Descriptors the process `pid` has open.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Connects from `source` and sends the start of a request header that never ends.
fn connect_partial(source: Ipv4Addr, target: SocketAddr) -> Option<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).ok()?;
    s.bind(&SocketAddr::new(source.into(), 0).into()).ok()?;
    s.connect_timeout(&target.into(), Duration::from_millis(500))
        .ok()?;
    let mut s: TcpStream = s.into();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: flood\r\nX-Slow: ")
        .ok()?;
    s.set_nonblocking(true).ok()?;
    Some(s)
}

/// Whether the other end has not closed a (non-blocking) connection.
fn still_open(s: &TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.peek(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// The flood: round after round, each of `sources` in turn tops up to [`FLOOD_HOLD`] silent
/// partial-header connections (those the agent closed are replaced), until `stop`. One
/// thread, so every source gets its turn (parallel connectors would starve each other in the
/// listen backlog) and the caps are met in a known order: the first sources reach the
/// per-source cap, later ones the total. Returns the connections still held and how many
/// were opened in all.
fn flood(
    sources: &[Ipv4Addr],
    target: SocketAddr,
    stop: &AtomicBool,
    rounds: &AtomicUsize,
    opened: &AtomicUsize,
) -> Vec<TcpStream> {
    let mut held: Vec<Vec<TcpStream>> = sources.iter().map(|_| Vec::new()).collect();
    while !stop.load(Ordering::Relaxed) {
        for (&source, held) in sources.iter().zip(&mut held) {
            held.retain(still_open);
            while held.len() < FLOOD_HOLD && !stop.load(Ordering::Relaxed) {
                match connect_partial(source, target) {
                    Some(s) => {
                        held.push(s);
                        opened.fetch_add(1, Ordering::Relaxed);
                    }
                    None => break,
                }
            }
        }
        rounds.fetch_add(1, Ordering::Relaxed);
        // Pacing of the attack (a round four times a second at most), not a synchronisation.
        std::thread::sleep(Duration::from_millis(250));
    }
    held.into_iter().flatten().collect()
}

/// Issue 13 item 6: thousands of silent partial-header connections from 24 source addresses
/// to an agent limited to 512 descriptors. While the flood goes on, a deleted INPUT jump is
/// repaired, a new policy file is applied, `/healthz` answers from a source that is not
/// flooding, and no descriptor error is logged; connections over the caps are refused and
/// counted by reason; after the header timeout the agent has closed every flood connection
/// the scanner still holds.
#[test]
fn an_http_flood_from_many_sources_does_not_stop_enforcement() {
    skip_unless_lab!();
    raise_own_nofile_limit();
    let backend = Backend::Nft;
    let lab = Lab::builder("fflood")
        .nodes(1)
        .scanners(1)
        .scanner_addresses(FLOOD_SOURCES)
        .build()
        .unwrap();
    let node = lab.node(0).clone();
    let scanner = lab.scanner(0).clone();
    let s = Setup::new(&node);
    std::fs::write(s.path("policies/web.yaml"), web_policy()).unwrap();
    let nofile = format!("--nofile={AGENT_NOFILE}");
    let agent = Agent::start(
        &node,
        &s,
        &s.path("policies"),
        backend,
        1,
        &["prlimit", &nofile],
    );
    agent.wait_for("converged", |v| v.converged);
    let baseline = open_fds(agent.pid());

    let target = SocketAddr::new(node.v4().into(), DEFAULT_AGENT_PORT);
    let stop = Arc::new(AtomicBool::new(false));
    let sources = scanner.ipv4.clone();
    assert_eq!(sources.len(), FLOOD_SOURCES);
    let rounds = Arc::new(AtomicUsize::new(0));
    let opened = Arc::new(AtomicUsize::new(0));
    let flooding = {
        let (stop, rounds, opened) = (stop.clone(), rounds.clone(), opened.clone());
        std::thread::spawn(move || {
            scanner
                .run(move || flood(&sources, target, &stop, &rounds, &opened))
                .unwrap()
        })
    };
    let flooded = wait("a first round of the flood, held by the agent", || {
        let n = open_fds(agent.pid());
        (rounds.load(Ordering::Relaxed) >= 1 && n > baseline + 150).then_some(n)
    });
    eprintln!("flooded: the agent holds {flooded} descriptors (baseline {baseline})");

    // While flooded: a deleted jump is repaired at the next refresh (1 s).
    let before = save(&node, backend, Family::Ipv4);
    assert!(input_chain(&before)[0].contains("-j PORTWARDEN-INPUT"));
    ipt(&node, backend, Family::Ipv4, &["-D", "INPUT", "1"]);
    let deleted = Instant::now();
    let last_error = || {
        let errors = agent.logged("reconcile failed");
        format!("; last reconcile error: {:?}", errors.last())
    };
    wait_explained(
        "the deleted jump repaired while flooded",
        last_error,
        || {
            let now = save(&node, backend, Family::Ipv4);
            input_chain(&now)
                .first()
                .is_some_and(|l| l.contains("-j PORTWARDEN-INPUT"))
                .then_some(())
        },
    );
    eprintln!("jump repaired {:?} after its deletion", deleted.elapsed());
    // ... a new policy file is loaded and applied ...
    std::fs::write(
        s.path("policies/extra.yaml"),
        policy("extra", &[(7001, "closed", None)]),
    )
    .unwrap();
    let written = Instant::now();
    wait_explained("the new policy applied while flooded", last_error, || {
        save(&node, backend, Family::Ipv4)
            .contains("--dport 7001")
            .then_some(())
    });
    eprintln!(
        "new policy applied {:?} after it was written",
        written.elapsed()
    );
    // ... and a source that is not flooding (the node's loopback) is served.
    assert_eq!(agent.get("/healthz").as_deref(), Ok("ok\n"));
    let metrics = agent.get("/metrics").unwrap();
    let value = |name: &str| common::metric_value(&metrics, name).unwrap_or(0.0);
    let limit = value("portwarden_http_connection_limit");
    let open = value("portwarden_http_connections_open");
    assert!(
        limit >= 8.0 && limit + 64.0 < AGENT_NOFILE as f64,
        "descriptors are kept for the reconcile path: {metrics}"
    );
    assert!(open <= limit, "{metrics}");
    for reason in ["per_source", "total"] {
        let name = format!("portwarden_http_connections_refused_total{{reason=\"{reason}\"}}");
        assert!(
            value(&name) > 0.0,
            "no refusal counted as {reason}: {metrics}"
        );
    }
    let evicted = "portwarden_http_connections_closed_total{reason=\"evicted\"}";
    assert!(
        value(evicted) > 0.0,
        "later sources took the place of the heaviest: {metrics}"
    );
    assert!(open_fds(agent.pid()) < AGENT_NOFILE as usize);

    // The flood stops sending (the scanner keeps its sockets) once it has opened at least a
    // full hold from every source (refused and evicted connections are opened again, so the
    // count grows round by round): the agent then closes them all.
    wait("the flood opened a full hold from every source", || {
        (opened.load(Ordering::Relaxed) >= FLOOD_SOURCES * FLOOD_HOLD).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    let holding = flooding.join().unwrap();
    let opened = opened.load(Ordering::Relaxed);
    eprintln!(
        "the flood opened {opened} connections from {FLOOD_SOURCES} sources; {} still open \
         when it stopped",
        holding.iter().filter(|s| still_open(s)).count()
    );
    let stopped = Instant::now();
    wait("every idle flood connection closed by the agent", || {
        holding.iter().all(|s| !still_open(s)).then_some(())
    });
    eprintln!(
        "idle connections closed {:?} after the flood stopped",
        stopped.elapsed()
    );
    wait("the agent's descriptors back to the baseline", || {
        (open_fds(agent.pid()) <= baseline + 2).then_some(())
    });
    let log = std::fs::read_to_string(&agent.log).unwrap();
    assert!(
        !log.contains("Too many open files") && !log.contains("os error 24"),
        "the agent ran out of descriptors: {log}"
    );
    assert_eq!(agent.metric("portwarden_reconcile_errors_total"), 0.0);
    assert!(agent.metric("portwarden_http_connections_closed_total{reason=\"timeout\"}") > 0.0);
}

/// Issue 13 item 11: the inside view lists the sockets of the ports the node's policies manage
/// (a loopback-only one included: verify's "listens on 127.0.0.1 only"), and nothing else —
/// neither a loopback-only service on another port nor one on all addresses.
#[test]
fn the_inside_view_shows_listeners_of_managed_ports_only() {
    skip_unless_lab!();
    let (lab, node, s) = web_lab("finside");
    let _web = node.tcp_listener(80).unwrap();
    let _unmanaged = node.tcp_listener(7000).unwrap();
    let loopback = |port: u16| {
        node.run(move || std::net::TcpListener::bind(("127.0.0.1", port)))
            .unwrap()
            .unwrap()
    };
    let _managed_loopback = loopback(8080);
    let _secret = loopback(6000);
    let agent = Agent::start(&node, &s, &s.path("policies"), Backend::Nft, 3600, &[]);
    agent.wait_for("converged", |v| v.converged);
    // Asked from the scanner, as verify asks.
    let addr = SocketAddr::new(node.v4().into(), DEFAULT_AGENT_PORT);
    let body = lab
        .scanner(0)
        .run(move || http_get(addr, "/v1/inside", Duration::from_secs(5)))
        .unwrap()
        .unwrap();
    let view: InsideView = serde_json::from_str(&body).unwrap();
    let shown = |port: u16, outside: bool| {
        view.listeners
            .iter()
            .any(|l| l.port == port && l.reachable_from_outside() == outside)
    };
    assert!(shown(80, true), "{body}");
    assert!(
        shown(8080, false),
        "the loopback-only service of 8080: {body}"
    );
    for hidden in [6000, 7000, DEFAULT_AGENT_PORT] {
        assert!(
            view.listeners.iter().all(|l| l.port != hidden),
            "port {hidden} is managed by no policy, yet its listener is shown: {body}"
        );
    }
}

/// Issue 13 item 12: SIGHUP makes the standalone agent reload its policy directory at once
/// (here it polls once an hour, so only the signal can make it see a new file), logged; the
/// agent keeps running.
#[test]
fn sighup_reloads_the_policy_directory_and_the_agent_keeps_running() {
    skip_unless_lab!();
    let backend = Backend::Nft;
    let (_lab, node, s) = web_lab("fhup");
    let agent = Agent::start_with(
        &node,
        &s,
        &s.path("policies"),
        backend,
        3600,
        &[],
        3_600_000,
        &[],
    );
    agent.wait_for("converged", |v| v.converged);
    std::fs::write(
        s.path("policies/extra.yaml"),
        policy("extra", &[(7001, "closed", None)]),
    )
    .unwrap();
    for round in 1..=2 {
        let status = Command::new("kill")
            .args(["-HUP", &agent.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let event = wait("SIGHUP logged", || {
            let mut events = agent.logged("SIGHUP");
            (events.len() >= round).then(|| events.pop().unwrap())
        });
        assert_eq!(event["level"], "INFO", "{event}");
        // The signal is logged before the reload it causes; wait for that reload itself
        // (in round 2 the file is already applied, so the rules alone cannot tell).
        wait("the reload after this SIGHUP", || {
            (loads(&agent).len() > round).then_some(())
        });
        wait("the new file applied after SIGHUP", || {
            save(&node, backend, Family::Ipv4)
                .contains("--dport 7001")
                .then_some(())
        });
        assert_eq!(
            agent.get("/healthz").as_deref(),
            Ok("ok\n"),
            "round {round}"
        );
    }
    assert_eq!(
        loads(&agent),
        vec![4, 5, 5],
        "one load at start, one per SIGHUP"
    );
}

/// Waits until the process `pid` (a child of this test, not yet reaped) has exited.
fn wait_exited(pid: u32, what: &str) {
    wait(what, || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The state follows the command in parentheses; a child not yet reaped is a zombie.
        let state = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next());
        matches!(state, None | Some('Z') | Some('X')).then_some(())
    });
}

/// `kill -SIGNAL pid`.
fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} {pid}");
}

/// Review of item 12: SIGHUPs that arrive while the loop is busy (its first reconcile waits
/// for a held xtables lock, legacy backend) make one reload in all, not one each, and a
/// SIGTERM sent after them is not kept waiting behind them.
#[test]
fn sighups_queued_behind_a_step_are_one_reload_and_sigterm_is_not_kept_waiting() {
    skip_unless_lab!();
    let backend = Backend::Legacy;
    let (_lab, node, s) = web_lab("fhupq");
    let (holder, _, env) = hold_private_xtables_lock(&s);
    let agent = Agent::start_with(
        &node,
        &s,
        &s.path("policies"),
        backend,
        3600,
        &["env", &env],
        3_600_000,
        &[],
    );
    wait("the first reconcile waits for the lock", || {
        agent.logged("waiting for the xtables lock").pop()
    });
    assert_eq!(loads(&agent).len(), 1);
    // One at a time: signals sent faster than the handler runs are merged (by the kernel and
    // by tokio), and each logged one is a reload asked for.
    for i in 1..=5 {
        signal(agent.pid(), "HUP");
        wait("the SIGHUP logged (a reload asked for)", || {
            (agent.logged("SIGHUP").len() >= i).then_some(())
        });
    }
    signal(agent.pid(), "TERM");
    wait("SIGTERM logged", || agent.logged("SIGTERM").pop());
    drop(holder);
    wait_exited(agent.pid(), "the agent exits after SIGTERM");
    let n = loads(&agent);
    assert!(
        n.len() <= 2,
        "the start's load and at most one for five SIGHUPs, then the stop: {n:?}"
    );
}

/// `(soft, hard)` descriptor limits of process `pid`.
fn nofile_limits(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (v[0], v[1])
}

/// Review of item 6: the agent fits its soft descriptor limit once, before its loop starts,
/// to what it uses (its open descriptors, the connection cap and the reserve), not to the
/// hard limit (2^30 under `LimitNOFILE=infinity` in some container runtimes): every iptables
/// child inherits it, and some tools walk every descriptor up to it.
#[test]
fn the_descriptor_limit_is_fitted_once_before_the_loop_not_raised_to_the_hard_limit() {
    skip_unless_lab!();
    let backend = Backend::Nft;
    let (_lab, node, s) = web_lab("fnofile");
    // In front of iptables-nft-save (found through PATH): a script that records the soft
    // limit it runs with.
    let tools = s.path("wrapped");
    std::fs::create_dir_all(&tools).unwrap();
    let name = tool(backend, Family::Ipv4, "save");
    let real = portwarden_netfilter::backend::find_program(&name, None).unwrap();
    let record = s.path("child-nofile");
    let script = tools.join(&name);
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nulimit -n >> '{}'\nexec '{}' \"$@\"\n",
            record.display(),
            real.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "PATH={}:{}",
        tools.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // The hard limit this test runs with (raising it needs CAP_SYS_RESOURCE).
    let hard = nofile_limits(std::process::id()).1;
    assert!(
        hard > 4096,
        "a hard descriptor limit of {hard} cannot tell a fitted limit from the hard one"
    );
    let nofile = format!("--nofile=256:{hard}");
    let agent = Agent::start(
        &node,
        &s,
        &s.path("policies"),
        backend,
        1,
        &["env", &path, "prlimit", &nofile],
    );
    let log = || {
        let text = std::fs::read_to_string(&agent.log).unwrap_or_default();
        format!("; the agent's log: {text}")
    };
    wait_explained("converged", log, || {
        agent.inside().ok().filter(|v| v.converged)
    });
    // the first reconcile and two refreshes
    let children = wait("three iptables-nft-save runs recorded", || {
        let text = std::fs::read_to_string(&record).unwrap_or_default();
        (text.lines().count() >= 3).then_some(text)
    });
    let (soft, agent_hard) = nofile_limits(agent.pid());
    assert_eq!(agent_hard, hard, "the hard limit is left alone");
    let metrics = agent.get("/metrics").unwrap();
    let cap = common::metric_value(&metrics, "portwarden_http_connection_limit").unwrap();
    assert!(
        soft >= cap as u64 + 256 && soft < 2048,
        "soft limit {soft} for {cap} connections and 256 reserved"
    );
    let seen: Vec<&str> = children.lines().collect();
    assert!(
        seen.iter().all(|l| *l == soft.to_string()),
        "every iptables child runs with the agent's limit {soft}: {seen:?}"
    );
    eprintln!("soft limit {soft} (hard {hard}), {cap} connections; children: {seen:?}");
}

/// Review of item 11: `/v1/inside` and `/readyz` are served to any host, so they say that the
/// documents are invalid, not what the loader said about them (paths, quoted values): that
/// goes to the log.
#[test]
fn the_inside_view_and_readyz_carry_no_error_text() {
    skip_unless_lab!();
    let (lab, node, s) = web_lab("fquiet");
    std::fs::write(
        s.path("policies/web.yaml"),
        web_policy().replace("state: closed", "state: \"s3cret-value\""),
    )
    .unwrap();
    let agent = Agent::start(&node, &s, &s.path("policies"), Backend::Nft, 3600, &[]);
    let logged = wait("the error logged", || {
        agent.logged("invalid policy documents").pop()
    });
    assert!(logged.to_string().contains("s3cret-value"), "{logged}");
    let addr = SocketAddr::new(node.v4().into(), DEFAULT_AGENT_PORT);
    let ask = |path: &'static str| {
        lab.scanner(0)
            .run(move || http_get(addr, path, Duration::from_secs(5)))
            .unwrap()
    };
    // (the view's `policy_error` used to be the text itself)
    let inside = wait("the inside view says the documents are invalid", || {
        let body = ask("/v1/inside").ok()?;
        let view: serde_json::Value = serde_json::from_str(&body).ok()?;
        (view["policy_invalid"] == true || view["policy_error"].is_string()).then_some(body)
    });
    let ready = ask("/readyz").unwrap_err();
    assert!(
        ready.contains(" 503 ") && ready.contains("no valid policy yet"),
        "{ready}"
    );
    let dir = s.path("policies").display().to_string();
    for (what, text) in [("/v1/inside", &inside), ("/readyz", &ready)] {
        assert!(
            !text.contains("s3cret") && !text.contains(&dir) && !text.contains("web.yaml"),
            "{what} tells any host what the loader said: {text}"
        );
    }
    let view: serde_json::Value = serde_json::from_str(&inside).unwrap();
    assert_eq!(view["policy_invalid"], true, "{inside}");
}

/// Issue 17 part 2: the agent counts packets per entry at every refresh. A connection attempt
/// from the scanner to the closed 8080 (web entry 2) shows in `/metrics` and the inside view,
/// dated as a match because the count grew after a refresh had seen it at 0; entry 0 (80,
/// nothing sent) keeps no last match.
#[test]
fn the_agent_counts_packets_per_entry_and_dates_the_last_match() {
    skip_unless_lab!();
    let (lab, node, s) = web_lab("fcount");
    let agent = Agent::start(&node, &s, &s.path("policies"), Backend::Nft, 1, &[]);
    let row = |v: &InsideView, entry: usize| {
        v.entries
            .iter()
            .find(|r| r.policy == "web" && r.entry == entry && r.family == "ipv4")
            .cloned()
    };
    // A refresh has read the counters, before any traffic: the baseline.
    agent.wait_for("the counters read once", |v| {
        v.converged && v.counted_at.is_some() && row(v, 2).is_some_and(|r| r.packets == 0)
    });
    let target = SocketAddr::new(node.v4().into(), 8080);
    let refused = lab
        .scanner(0)
        .run(move || TcpStream::connect_timeout(&target, Duration::from_secs(2)))
        .unwrap();
    assert!(refused.is_err(), "8080 is closed: {refused:?}");
    let view = agent.wait_for("web entry 2 seen matching", |v| {
        row(v, 2).is_some_and(|r| r.packets >= 1 && r.last_match.is_some())
    });
    let matched = row(&view, 2).unwrap();
    assert!(matched.bytes >= 40, "{matched:?}");
    // Its rules on the input path (and the forward path where the node forwards) are in place.
    assert!(
        matched.rules_expected >= 1 && matched.rules_in_place == matched.rules_expected,
        "{matched:?}"
    );
    assert!(
        row(&view, 0).is_some_and(|r| r.last_match.is_none()),
        "{view:?}"
    );
    let text = agent.get("/metrics").unwrap();
    let packets =
        agent.metric("portwarden_entry_packets_total{policy=\"web\",entry=\"2\",family=\"ipv4\"}");
    assert!(packets >= 1.0, "{text}");
    assert!(
        agent.metric("portwarden_entry_last_match_timestamp_seconds{policy=\"web\",entry=\"2\"}")
            > 1.7e9,
        "{text}"
    );
    assert!(
        !text.contains("portwarden_entry_last_match_timestamp_seconds{policy=\"web\",entry=\"0\"}"),
        "{text}"
    );
}
