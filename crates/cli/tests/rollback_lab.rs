//! `apply --confirm-within` and `portwarden confirm` (issue 17, item 4) in a namespace lab:
//! real `portwarden` processes in a lab node, portwarden's chains read back with
//! `iptables-save` of both families.
//!
//! 1. `confirm_within_the_window_keeps_the_new_rules` — confirm exits 0, the watcher ends,
//!    the new rules stay; a second confirm exits 1 ("confirmed already"); a relative
//!    `PORTWARDEN_LOCK_DIR` reaches the watcher (which runs from `/`).
//! 2. `timeout_restores_the_previous_rules_exactly` — at the deadline portwarden's chains and
//!    jumps are exactly those from before the apply (both families, both backends), foreign
//!    rules added meanwhile survive; a confirm after that exits 1 naming when; from a
//!    namespace where portwarden owned nothing, the rollback leaves nothing of portwarden's.
//!    Prints the rollback's timing (deadline to rules written and read back).
//! 3. `the_terminal_hanging_up_still_rolls_back` — apply runs in a shell on a pty (`script`);
//!    the terminal is killed, the shell dies of the hang-up, the watcher (another session)
//!    rolls back.
//! 4. `sigkill_of_the_apply_still_rolls_back` — apply SIGKILLed as soon as it said the rollback
//!    is armed (nft), and while its iptables-restore waits for a private xtables lock (legacy:
//!    surely mid-write; the orphaned child commits the new rules after the kill): the rollback
//!    still restores the rules from before.
//! 5. `confirm_with_nothing_pending_exits_1`.
//! 6. `bad_windows_are_refused_and_nothing_is_written` — `0`, negative, malformed, too long.
//! 7. `a_second_armed_apply_keeps_the_rules_from_before_the_first` — the rollback of two
//!    unconfirmed applies goes back to the state before the first.
//!
//! Every process gets a private lock directory (`PORTWARDEN_LOCK_DIR`), so nothing here
//! touches `/run/portwarden`. Windows are short (2-3 s); every wait is on a condition (the
//! state file's status, a process gone) with a deadline.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use portwarden_lab::{Lab, LockHolder, Netns, skip_unless_lab};

const BIN: &str = env!("CARGO_BIN_EXE_portwarden");
const DEADLINE: Duration = Duration::from_secs(30);

/// Policies `a/`, `b/`, `c/` (different ports and states) and a private lock directory.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let policies = [
            (
                "a",
                "    - ports: \"8080\"\n      state: closed\n    - ports: \"9000-9010\"\n      state: filtered\n",
            ),
            (
                "b",
                "    - ports: \"7000\"\n      state: closed\n    - ports: \"7100-7200\"\n      protocol: udp\n      state: filtered\n",
            ),
            ("c", "    - ports: \"6000\"\n      state: filtered\n"),
        ];
        for (name, ports) in policies {
            let d = dir.path().join(name);
            std::fs::create_dir(&d).unwrap();
            std::fs::write(
                d.join("policy.yaml"),
                format!(
                    "apiVersion: portwarden.io/v1alpha1\nkind: PortPolicy\nmetadata:\n  name: \
                     rb-{name}\nspec:\n  ports:\n{ports}"
                ),
            )
            .unwrap();
        }
        std::fs::create_dir(dir.path().join("locks")).unwrap();
        Setup { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// The state file of `node`'s network namespace: named by the namespace's inode.
    fn state_file(&self, node: &Netns) -> PathBuf {
        let ino = std::fs::metadata(format!("/run/netns/{}", node.name))
            .unwrap()
            .ino();
        self.path("locks").join(format!("net-{ino}.rollback.json"))
    }

    /// What the state file records (`Null` when there is none, or it is empty).
    fn state(&self, node: &Netns) -> serde_json::Value {
        std::fs::read(self.state_file(node))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    /// The state once it is no longer pending (the watcher rolled back, or failed).
    fn wait_settled(&self, node: &Netns) -> serde_json::Value {
        let mut last = serde_json::Value::Null;
        wait_until("the rollback to happen", || {
            last = self.state(node);
            last["status"] != "pending" && !last.is_null()
        });
        last
    }

    /// `ip netns exec NODE portwarden ARGS` with the private lock directory.
    fn command(&self, node: &Netns, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &node.name, BIN])
            .args(args)
            .env("PORTWARDEN_LOCK_DIR", self.path("locks"))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        c
    }

    fn pw(&self, node: &Netns, args: &[&str]) -> Output {
        self.command(node, args).output().unwrap()
    }

    /// The arguments of `apply` of policies `which` with `extra` after them.
    fn apply_args(&self, which: &str, backend: &str, extra: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = [
            "apply",
            "-f",
            &self.path(which).to_string_lossy(),
            "--labels",
            "",
            "--node",
            "n",
            "--backend",
            backend,
        ]
        .map(String::from)
        .to_vec();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    }

    fn apply(&self, node: &Netns, which: &str, backend: &str, extra: &[&str]) -> Output {
        let args = self.apply_args(which, backend, extra);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.pw(node, &refs)
    }
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let until = Instant::now() + DEADLINE;
    while !ok() {
        assert!(Instant::now() < until, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `iptables-save` of both families of `backend`, without banners and counters.
fn save(node: &Netns, backend: &str) -> String {
    let mut all = String::new();
    for tool in ["iptables", "ip6tables"] {
        let text = node.exec(&[&format!("{tool}-{backend}-save")]).unwrap();
        all.push_str(&format!("# {tool}\n"));
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

/// portwarden's part of both families: its chains, their rules and its jumps, in order.
fn ours(node: &Netns, backend: &str) -> String {
    save(node, backend)
        .lines()
        .filter(|l| l.starts_with("# ") || l.contains("PORTWARDEN-"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Foreign rules added to both families (what Docker or kube-proxy may write meanwhile).
fn add_foreign(node: &Netns, backend: &str) {
    node.exec(&[
        &format!("iptables-{backend}"),
        "-w",
        "-A",
        "INPUT",
        "-s",
        "198.51.100.0/24",
        "-j",
        "DROP",
    ])
    .unwrap();
    node.exec(&[&format!("ip6tables-{backend}"), "-w", "-N", "DOCKER-LIKE"])
        .unwrap();
    node.exec(&[
        &format!("ip6tables-{backend}"),
        "-w",
        "-A",
        "DOCKER-LIKE",
        "-s",
        "2001:db8:1::/48",
        "-j",
        "DROP",
    ])
    .unwrap();
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The watcher pid an apply names (`(pid N watches)`).
fn watcher_pid(said: &str) -> u32 {
    let (_, rest) = said.split_once("(pid ").expect("a watcher pid");
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

/// Whether `pid` is a live rollback watcher (a zombie or another program is not).
fn watching(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("__rollback-watch"))
        .unwrap_or(false)
}

/// Field `n` (1-based, as proc(5) counts them: 6 is the session) of `/proc/PID/stat`.
fn stat_field(pid: u32, n: usize) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(n - 3)?.parse().ok()
}

/// Prints and returns the rollback's timing from its state: ms from the deadline to the start
/// and to the rules written and read back.
fn timing(state: &serde_json::Value, what: &str) -> i64 {
    let deadline = state["deadline_ms"].as_i64().unwrap();
    let o = &state["outcome"];
    let late = o["started_ms"].as_i64().unwrap() - deadline;
    let done = o["finished_ms"].as_i64().unwrap() - deadline;
    eprintln!(
        "rollback timing ({what}): woke {late} ms after the deadline, rules restored and read \
         back {done} ms after it ({} transaction(s), {} change(s))",
        o["transactions"], o["changes"]
    );
    done
}

#[test]
fn confirm_within_the_window_keeps_the_new_rules() {
    skip_unless_lab!();
    let lab = Lab::builder("rbconf").nodes(1).build().unwrap();
    let node = lab.node(0);
    let s = Setup::new();
    assert!(s.apply(node, "a", "nft", &[]).status.success());
    let out = s.apply(node, "b", "nft", &["--confirm-within", "30s"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let said = text(&out);
    assert!(
        said.contains("read back and confirmed; rolls back at ")
            && said.contains(" UTC unless `portwarden confirm` is run (pid "),
        "{said}"
    );
    let pid = watcher_pid(&said);
    assert!(watching(pid), "the watcher runs after the apply exited");
    let new_rules = ours(node, "nft");
    let out = s.pw(node, &["confirm"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        text(&out).starts_with("confirmed: the ruleset applied at "),
        "{}",
        text(&out)
    );
    // Nothing is left to roll back: the watcher is gone, the state says confirmed.
    wait_until("the watcher to end", || !watching(pid));
    assert_eq!(s.state(node)["status"], "confirmed");
    assert_eq!(ours(node, "nft"), new_rules, "the new rules stay");
    // A relative lock directory reaches the watcher too (it runs from `/`).
    let out = s
        .command(
            node,
            &[
                "apply",
                "-f",
                "c",
                "--labels",
                "",
                "--node",
                "n",
                "--backend",
                "nft",
                "--confirm-within",
                "30s",
            ],
        )
        .current_dir(s.path(""))
        .env("PORTWARDEN_LOCK_DIR", "locks")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let relative = s
        .command(node, &["confirm"])
        .current_dir(s.path(""))
        .env("PORTWARDEN_LOCK_DIR", "locks")
        .output()
        .unwrap();
    assert_eq!(relative.status.code(), Some(0), "{relative:?}");
    wait_until("that watcher to end", || {
        !watching(watcher_pid(&text(&out)))
    });
    assert!(s.apply(node, "b", "nft", &[]).status.success());
    let plan_b = s.apply_args("b", "nft", &[]);
    let mut plan: Vec<&str> = plan_b.iter().map(String::as_str).collect();
    plan[0] = "plan";
    assert_eq!(s.pw(node, &plan).status.code(), Some(0), "still b");
    let again = s.pw(node, &["confirm"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again).contains("nothing to confirm: the ruleset applied at ")
            && text(&again).contains("was confirmed already, at "),
        "{}",
        text(&again)
    );
}

#[test]
fn timeout_restores_the_previous_rules_exactly() {
    skip_unless_lab!();
    for backend in ["nft", "legacy"] {
        let lab = Lab::builder("rbtime").nodes(1).build().unwrap();
        let node = lab.node(0);
        let s = Setup::new();
        assert!(s.apply(node, "a", backend, &[]).status.success());
        let before = ours(node, backend);
        assert!(before.contains("rb-a entry 0"), "{before}");
        let out = s.apply(node, "b", backend, &["--confirm-within", "2s"]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        assert_ne!(ours(node, backend), before, "{backend}: b applied");
        add_foreign(node, backend);
        let state = s.wait_settled(node);
        assert_eq!(state["status"], "rolled_back", "{backend}: {state}");
        assert!(state["outcome"]["error"].is_null(), "{state}");
        timing(&state, backend);
        assert_eq!(
            ours(node, backend),
            before,
            "{backend}: portwarden's chains and jumps are back exactly"
        );
        let all = save(node, backend);
        assert!(
            all.contains("-A INPUT -s 198.51.100.0/24 -j DROP")
                && all.contains(":DOCKER-LIKE")
                && all.contains("-A DOCKER-LIKE -s 2001:db8:1::/48 -j DROP"),
            "{backend}: foreign rules written meanwhile survive: {all}"
        );
        let late = s.pw(node, &["confirm"]);
        assert_eq!(late.status.code(), Some(1), "{late:?}");
        let said = text(&late);
        assert!(
            said.contains("nothing to confirm: the rollback already happened at 20")
                && said.contains("are back"),
            "{said}"
        );
    }
    // Where portwarden owned nothing, the rollback is a reset of its rules.
    let lab = Lab::builder("rbempty").nodes(1).build().unwrap();
    let node = lab.node(0);
    let s = Setup::new();
    let none = ours(node, "nft");
    assert_eq!(none, "# iptables\n# ip6tables\n");
    let out = s.apply(node, "b", "nft", &["--confirm-within", "2s"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_ne!(ours(node, "nft"), none);
    assert_eq!(s.wait_settled(node)["status"], "rolled_back");
    // (iptables-nft leaves the filter table it created, with empty base chains, as reset does)
    assert_eq!(ours(node, "nft"), none, "nothing of portwarden's is left");
}

#[test]
fn the_terminal_hanging_up_still_rolls_back() {
    skip_unless_lab!();
    let lab = Lab::builder("rbhup").nodes(1).build().unwrap();
    let node = lab.node(0);
    let s = Setup::new();
    assert!(s.apply(node, "a", "nft", &[]).status.success());
    let before = ours(node, "nft");
    // apply in a shell on a pseudo-terminal; the shell then waits on the terminal.
    let args = s.apply_args("b", "nft", &["--confirm-within", "3s"]);
    let line = format!(
        "PORTWARDEN_LOCK_DIR={} ip netns exec {} {BIN} {}; read x",
        s.path("locks").display(),
        node.name,
        args.iter()
            .map(|a| format!("'{a}'"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let log = s.path("terminal.log");
    let mut terminal = Command::new("script")
        .args(["-q", "-f", "-c", &line])
        .arg(&log)
        .env("SHELL", "/bin/sh")
        .stdin(Stdio::piped()) // held open: the shell's `read` waits on the terminal
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut said = String::new();
    wait_until("apply to print its rollback line on the terminal", || {
        said = std::fs::read_to_string(&log).unwrap_or_default();
        said.contains("(pid ") && said.contains("read back and confirmed")
    });
    let pid = watcher_pid(&said);
    // The shell on the terminal: script's child.
    let shell: u32 = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", terminal.id()))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let session = stat_field(shell, 6).unwrap();
    assert_ne!(
        stat_field(pid, 6),
        Some(session),
        "the watcher has a session of its own"
    );
    // The terminal dies: its master side closes and the kernel hangs up the session.
    terminal.kill().unwrap();
    terminal.wait().unwrap();
    wait_until("the shell to die of the hang-up", || {
        stat_field(shell, 6) != Some(session)
    });
    assert!(watching(pid), "the watcher survives the hang-up");
    let state = s.wait_settled(node);
    assert_eq!(state["status"], "rolled_back", "{state}");
    timing(&state, "after SIGHUP");
    assert_eq!(ours(node, "nft"), before);
}

#[test]
fn sigkill_of_the_apply_still_rolls_back() {
    skip_unless_lab!();
    // nft: killed as soon as it says the rollback is armed (before or while it writes).
    // legacy: killed while its iptables-restore waits for a (private) xtables lock, so the
    // kill surely lands mid-write; the orphaned child commits the new rules once the lock is
    // released, and the rollback must still take them back.
    for (backend, mid_write) in [("nft", false), ("legacy", true)] {
        let lab = Lab::builder("rbkill").nodes(1).build().unwrap();
        let node = lab.node(0);
        let s = Setup::new();
        assert!(s.apply(node, "a", backend, &[]).status.success());
        let before = ours(node, backend);
        let xtables = s.path("xtables.lock");
        std::fs::write(&xtables, "").unwrap();
        let holder = mid_write.then(|| LockHolder::hold(&xtables).unwrap());
        let args = s.apply_args("b", backend, &["--confirm-within", "5s"]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut apply = s
            .command(node, &refs)
            .env("XTABLES_LOCKFILE", &xtables)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(apply.stderr.take().unwrap()).lines();
        let armed = lines
            .find_map(|l| {
                l.ok()
                    .filter(|l| l.starts_with("rollback armed before writing"))
            })
            .expect("apply says the rollback is armed");
        if mid_write {
            lines
                .find_map(|l| {
                    l.ok()
                        .filter(|l| l.contains("waiting for the xtables lock"))
                })
                .expect("apply's iptables-restore waits for the xtables lock");
        }
        // SIGKILL (the apply is `ip netns exec`'s exec: this pid).
        apply.kill().unwrap();
        let status = apply.wait().unwrap();
        eprintln!("{backend}: apply ended: {status:?}");
        if mid_write {
            use std::os::unix::process::ExitStatusExt as _;
            assert_eq!(status.signal(), Some(9), "killed mid-write");
            drop(holder);
            wait_until("the orphaned iptables-restore to commit", || {
                ours(node, backend) != before
            });
        }
        let pid = watcher_pid(&armed);
        let state = s.wait_settled(node);
        assert_eq!(state["status"], "rolled_back", "{state}");
        assert_eq!(state["watcher_pid"], pid);
        let what = format!("{backend}, after SIGKILL of apply");
        timing(&state, &what);
        if mid_write {
            assert!(state["outcome"]["changes"].as_u64().unwrap() > 0, "{state}");
        }
        assert_eq!(
            ours(node, backend),
            before,
            "{backend}: the rules from before are back"
        );
    }
}

#[test]
fn confirm_with_nothing_pending_exits_1() {
    skip_unless_lab!();
    let lab = Lab::builder("rbnone").nodes(1).build().unwrap();
    let node = lab.node(0);
    let s = Setup::new();
    let out = s.pw(node, &["confirm"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out).contains(
            "error: nothing to confirm: no rollback is pending in this network namespace"
        ),
        "{}",
        text(&out)
    );
    // A plain apply arms nothing either.
    assert!(s.apply(node, "a", "nft", &[]).status.success());
    assert_eq!(s.pw(node, &["confirm"]).status.code(), Some(1));
}

#[test]
fn bad_windows_are_refused_and_nothing_is_written() {
    skip_unless_lab!();
    let lab = Lab::builder("rbbad").nodes(1).build().unwrap();
    let node = lab.node(0);
    let s = Setup::new();
    assert!(s.apply(node, "a", "nft", &[]).status.success());
    let before = save(node, "nft");
    let cases = [
        ("0", "is no window at all"),
        ("0s", "is no window at all"),
        ("-5s", "is negative"),
        ("1x", "unknown unit \"x\""),
        ("1.5s", "unexpected \".5s\""),
        ("1m30", "a number without a unit"),
        ("25h", "longer than the longest window, 24h"),
        ("99999999999999999999s", "longer than the longest window"),
        ("", "empty"),
    ];
    for (value, problem) in cases {
        let out = s.apply(node, "b", "nft", &["--confirm-within", value]);
        assert_eq!(out.status.code(), Some(1), "{value:?}: {out:?}");
        let said = text(&out);
        assert!(
            said.contains(&format!(
                "invalid value '{value}' for '--confirm-within <DURATION>'"
            )) && said.contains(problem),
            "{value:?}: {said}"
        );
        assert_eq!(save(node, "nft"), before, "{value:?}: nothing written");
        assert!(!s.state_file(node).exists(), "{value:?}: nothing armed");
    }
}

#[test]
fn a_second_armed_apply_keeps_the_rules_from_before_the_first() {
    skip_unless_lab!();
    let lab = Lab::builder("rbtwo").nodes(1).build().unwrap();
    let node = lab.node(0);
    let s = Setup::new();
    assert!(s.apply(node, "a", "nft", &[]).status.success());
    let before = ours(node, "nft");
    let first = s.apply(node, "b", "nft", &["--confirm-within", "30s"]);
    assert_eq!(first.status.code(), Some(0), "{first:?}");
    let first_pid = watcher_pid(&text(&first));
    let second = s.apply(node, "c", "nft", &["--confirm-within", "2s"]);
    assert_eq!(second.status.code(), Some(0), "{second:?}");
    let said = text(&second);
    assert!(
        said.contains("it replaced the pending rollback and restores portwarden's rules from before the unconfirmed apply at "),
        "{said}"
    );
    // The first watcher is stopped: only the second acts.
    wait_until("the first watcher to end", || !watching(first_pid));
    let state = s.wait_settled(node);
    assert_eq!(state["status"], "rolled_back", "{state}");
    assert_eq!(
        ours(node, "nft"),
        before,
        "back to the rules before the first unconfirmed apply"
    );
}
