//! Concurrent writers of one network namespace (issue 13, item 1, and "two agents on one node"
//! of item 12): real `portwarden` processes in a lab node, the kernel's rules read back with
//! `iptables-save` and judged with `portwarden plan`.
//!
//! 1. `two_applies_at_once_never_mix` — two `portwarden apply` started together, 2,000 entries
//!    `closed` from one directory and the same ports `filtered` from another, several rounds
//!    from an empty ruleset, both backends. After every round: both exited 0 and said
//!    "confirmed", the kernel holds exactly one of the two intents (the same in IPv4 and IPv6:
//!    `plan` of that directory exits 0), exactly one jump in `INPUT` per family, and it is the
//!    intent of the process that finished last. One more round starts both while the writer
//!    lock is held (by `flock(1)`, standing in for another writer), so both must wait: each
//!    logs that it waits and names the holder. In every round, every holder a waiting process
//!    names is a real one (the other apply, or the test's `flock`).
//! 2. `a_hand_run_apply_beside_the_agent_warns_and_never_mixes` — an agent (refresh 1 s) keeps
//!    one intent; `apply` of the other works, warns that the agent (its pid) manages the
//!    namespace and will restore its intent at its next refresh; the kernel never holds a mix
//!    or two jumps, and the agent's intent is back at its next refresh. Both backends.
//! 3. `a_second_agent_refuses_to_start` — with an agent running, a second one (standalone, and
//!    `--kube`) exits 1 naming the running agent's pid and command; once the first is killed
//!    (SIGKILL: the kernel releases its lock) a new agent starts. nft only (the lock is the
//!    same for both backends).
//! 4. `inside_view_clients_cannot_stop_repairs` — four keep-alive clients ask for `/v1/inside`
//!    back to back (what any host can do: the port is on the failsafe list) while the jump is
//!    deleted; the agent (`--refresh 1`) must put it back well within its lock wait (10 s).
//!    The inside view once read under the shared writer lock, and overlapping reads kept it
//!    held, so reconciles waited and gave up with "another portwarden writer". Before that,
//!    with the writer lock held by `flock(1)`, `/v1/inside` must answer at once, without a
//!    lock error: it takes no lock at all. nft only.
//!
//! Every process gets a private lock directory (`PORTWARDEN_LOCK_DIR`), so nothing here
//! touches `/run/portwarden`.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use portwarden_lab::{Lab, LockHolder, Netns, skip_unless_lab};
use portwarden_netfilter::{Backend, DEFAULT_FAILSAFE, Family};
use portwarden_reconcile::DEFAULT_AGENT_PORT;
use portwarden_reconcile::inside::http_get;

const BIN: &str = env!("CARGO_BIN_EXE_portwarden");
const DEADLINE: Duration = Duration::from_secs(30);
const BACKENDS: [Backend; 2] = [Backend::Nft, Backend::Legacy];
/// Entries per policy: the size of the reproduction.
const ENTRIES: usize = 2_000;
/// Rounds of two applies started together, per backend.
const ROUNDS: usize = 3;

/// The two intents: the same ports, `closed` (A) or `filtered` (B).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Which {
    A,
    B,
}

impl Which {
    fn dir(self) -> &'static str {
        match self {
            Which::A => "a",
            Which::B => "b",
        }
    }
}

/// The failsafe list of every command here: the default plus the agent's own port, which the
/// agent adds to its list, so that `plan` judges the agent's rules and `apply`'s alike.
fn failsafe() -> String {
    format!("{DEFAULT_FAILSAFE},tcp:{DEFAULT_AGENT_PORT}")
}

/// Policies `a/` and `b/`, an inventory naming node `n`, and a private lock directory.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(node: &Netns) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        for (which, state) in [(Which::A, "closed"), (Which::B, "filtered")] {
            let d = dir.path().join(which.dir());
            std::fs::create_dir(&d).unwrap();
            let mut s = format!(
                "apiVersion: portwarden.io/v1alpha1\nkind: PortPolicy\nmetadata:\n  name: writer-{}\n\
                 spec:\n  ports:\n",
                which.dir()
            );
            for i in 0..ENTRIES {
                let _ = writeln!(
                    s,
                    "    - ports: \"{}\"\n      state: {state}",
                    20_000 + i * 7
                );
            }
            std::fs::write(d.join("policy.yaml"), s).unwrap();
        }
        std::fs::write(
            dir.path().join("inventory.yaml"),
            format!(
                "apiVersion: portwarden.io/v1alpha1\nkind: Inventory\nnodes:\n  - name: n\n    \
                 addresses: [\"{}\"]\n",
                node.v4()
            ),
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("locks")).unwrap();
        Setup { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn policies(&self, which: Which) -> String {
        self.path(which.dir()).to_string_lossy().into_owned()
    }

    /// The writer lock file of `node`'s network namespace: named by the namespace's inode.
    fn writer_lock(&self, node: &Netns) -> PathBuf {
        let ino = std::fs::metadata(format!("/run/netns/{}", node.name))
            .unwrap()
            .ino();
        self.path("locks").join(format!("net-{ino}.lock"))
    }
}

/// `ip netns exec NODE portwarden ARGS` with the private lock directory, default logging.
fn portwarden(node: &Netns, s: &Setup, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &node.name, BIN])
        .args(args)
        .env("PORTWARDEN_LOCK_DIR", s.path("locks"))
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    c
}

/// The arguments of `plan`/`apply` for intent `which`.
fn intent_args(s: &Setup, which: Which, backend: Backend) -> Vec<String> {
    [
        "-f",
        &s.policies(which),
        "--labels",
        "",
        "--node",
        "n",
        "--backend",
        backend.as_str(),
        "--failsafe",
        &failsafe(),
    ]
    .map(String::from)
    .to_vec()
}

/// A `portwarden apply` running in the background, its output going to files (so that the
/// test can read its log while it runs).
struct Apply {
    which: Which,
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Apply {
    fn start(node: &Netns, s: &Setup, backend: Backend, which: Which, tag: &str) -> Apply {
        let out = s.path(&format!("{tag}-{}.out", which.dir()));
        let err = s.path(&format!("{tag}-{}.err", which.dir()));
        let mut args = vec!["apply".to_string()];
        args.extend(intent_args(s, which, backend));
        args.extend(["--wait".to_string(), "60".to_string()]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let child = portwarden(node, s, &refs)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        Apply {
            which,
            child,
            out,
            err,
        }
    }

    /// The process id (`ip netns exec` execs portwarden, so it is portwarden's).
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }
}

impl Drop for Apply {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One finished apply: what it was, how it ended, and in which order it was seen to end.
struct Finished {
    which: Which,
    pid: u32,
    status: ExitStatus,
    stdout: String,
    stderr: String,
    /// 0 for the first seen to exit; equal for processes seen exiting in the same poll.
    order: usize,
}

/// Waits for every apply to exit, noting the order in which they are seen to.
fn finish(mut runs: Vec<Apply>) -> Vec<Finished> {
    let until = Instant::now() + Duration::from_secs(120);
    let mut done: Vec<Option<(ExitStatus, usize)>> = runs.iter().map(|_| None).collect();
    let mut poll = 0;
    while done.iter().any(Option::is_none) {
        for (i, r) in runs.iter_mut().enumerate() {
            if done[i].is_none()
                && let Some(status) = r.child.try_wait().unwrap()
            {
                done[i] = Some((status, poll));
            }
        }
        assert!(Instant::now() < until, "the applies did not finish");
        poll += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut polls: Vec<usize> = done.iter().map(|d| d.unwrap().1).collect();
    polls.sort();
    polls.dedup();
    runs.iter()
        .zip(done)
        .map(|(r, d)| {
            let (status, poll) = d.unwrap();
            Finished {
                which: r.which,
                pid: r.pid(),
                status,
                stdout: r.stdout(),
                stderr: r.stderr(),
                order: polls.iter().position(|&p| p == poll).unwrap(),
            }
        })
        .collect()
}

fn tool(backend: Backend, family: Family) -> String {
    format!("{}-{}-save", family.tool(), backend)
}

/// Jumps into portwarden's chains from `INPUT`, and rules of each intent, per family.
fn census(node: &Netns, backend: Backend) -> Vec<(Family, usize, usize, usize)> {
    Family::ALL
        .iter()
        .map(|&f| {
            let save = node.exec(&[&tool(backend, f), "-t", "filter"]).unwrap();
            let count = |pred: &dyn Fn(&str) -> bool| save.lines().filter(|l| pred(l)).count();
            (
                f,
                count(&|l| l.starts_with("-A INPUT ") && l.contains("-j PORTWARDEN-")),
                count(&|l| l.contains("\"writer-a ")),
                count(&|l| l.contains("\"writer-b ")),
            )
        })
        .collect()
}

fn show_census(c: &[(Family, usize, usize, usize)]) -> String {
    c.iter()
        .map(|(f, j, a, b)| format!("{f}: {j} jump(s), {a} rule(s) of A, {b} of B"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Which intent the kernel holds exactly, in both families (`plan` of it exits 0), if any.
fn holds(node: &Netns, s: &Setup, backend: Backend) -> Option<Which> {
    let converged = |which: Which| {
        let mut args = vec!["plan".to_string()];
        args.extend(intent_args(s, which, backend));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = portwarden(node, s, &refs).output().unwrap();
        match out.status.code() {
            Some(0) => true,
            Some(2) => false,
            _ => panic!(
                "plan failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    };
    match (converged(Which::A), converged(Which::B)) {
        (true, false) => Some(Which::A),
        (false, true) => Some(Which::B),
        _ => None,
    }
}

fn reset(node: &Netns, s: &Setup, backend: Backend) {
    let out = portwarden(node, s, &["reset", "--backend", backend.as_str()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "reset: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The checks of one round: every finished apply succeeded and said so, the kernel holds one
/// whole intent with one jump per family, and it is the last finisher's.
fn check_round(node: &Netns, s: &Setup, backend: Backend, round: &str, runs: &[Finished]) {
    let census = census(node, backend);
    let kernel = holds(node, s, backend);
    let mut problems = Vec::new();
    for r in runs {
        if !r.status.success() || !r.stdout.contains("read back and confirmed") {
            problems.push(format!(
                "apply {:?} (pid {}) ended with {}: {}{}",
                r.which,
                r.pid,
                r.status,
                r.stdout.trim(),
                r.stderr.trim()
            ));
        }
    }
    if census.iter().any(|(_, jumps, _, _)| *jumps != 1) {
        problems.push("not exactly one jump in INPUT".into());
    }
    match kernel {
        None => problems.push("the kernel holds neither intent whole (a mix)".into()),
        Some(k) => {
            let last = runs.iter().map(|r| r.order).max().unwrap();
            let lasts: Vec<&Finished> = runs.iter().filter(|r| r.order == last).collect();
            if let [last] = lasts[..]
                && last.status.success()
                && last.which != k
            {
                problems.push(format!(
                    "apply {:?} (pid {}) finished last and said \"{}\", but the kernel holds {k:?}",
                    last.which,
                    last.pid,
                    last.stdout.trim()
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{backend} {round}: {}\nkernel: {}",
        problems.join("\n"),
        show_census(&census)
    );
}

/// The writer lock held shared by `flock -s` (as `plan` holds it) while the test judges the
/// kernel's rules with several commands: no writer can change them in between.
struct Snapshot(Child);

impl Snapshot {
    fn take(lock: &Path) -> Snapshot {
        use std::io::BufRead as _;
        let mut child = Command::new("flock")
            .arg("-s")
            .arg(lock)
            .args(["-c", "echo locked; read x"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
        Snapshot(child)
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

/// Polls `ok` until it holds, or panics after [`DEADLINE`].
fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let until = Instant::now() + DEADLINE;
    while !ok() {
        assert!(Instant::now() < until, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn two_applies_at_once_never_mix() {
    skip_unless_lab!();
    for backend in BACKENDS {
        let lab = Lab::builder("wrmix").nodes(1).scanners(1).build().unwrap();
        let node = lab.node(0);
        let s = Setup::new(node);
        for round in 0..ROUNDS {
            reset(node, &s, backend);
            // Alternate who starts first; both start within microseconds of each other.
            let order = if round % 2 == 0 {
                [Which::A, Which::B]
            } else {
                [Which::B, Which::A]
            };
            let tag = format!("r{round}");
            let runs = order
                .map(|w| Apply::start(node, &s, backend, w, &tag))
                .into_iter()
                .collect();
            let runs = finish(runs);
            let round = format!("round {round}");
            check_round(node, &s, backend, &round, &runs);
            check_named_holders(backend, &round, &runs, None);
        }

        // Both start while another writer holds the lock: both wait and say for whom.
        reset(node, &s, backend);
        let holder = LockHolder::hold(&s.writer_lock(node)).unwrap();
        let named = |a: &Apply, pid: u32| {
            let err = a.stderr();
            err.contains("waiting") && err.contains(&format!("pid {pid}"))
        };
        let first = Apply::start(node, &s, backend, Which::A, "held");
        wait_until(
            &format!("{backend}: A logs that it waits for pid {}", holder.pid()),
            || named(&first, holder.pid()),
        );
        let second = Apply::start(node, &s, backend, Which::B, "held");
        wait_until(
            &format!("{backend}: B logs that it waits for pid {}", holder.pid()),
            || named(&second, holder.pid()),
        );
        let flock = holder.pid();
        drop(holder);
        let runs = finish(vec![first, second]);
        check_round(node, &s, backend, "held round", &runs);
        check_named_holders(backend, "held round", &runs, Some(flock));
    }
}

/// The pids a process's log names as holders of the writer lock it waited for.
fn named_holders(stderr: &str) -> Vec<u32> {
    stderr
        .lines()
        .filter_map(|l| {
            l.split_once("writer lock, held by pid ")?
                .1
                .split(' ')
                .next()
        })
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Every holder a waiting apply named is a real one: the other apply (it may also finish
/// between two looks and never be seen holding), or `extra` (the test's own holder).
fn check_named_holders(backend: Backend, round: &str, runs: &[Finished], extra: Option<u32>) {
    for r in runs {
        let real: Vec<u32> = runs
            .iter()
            .filter(|o| o.pid != r.pid)
            .map(|o| o.pid)
            .chain(extra)
            .collect();
        let named = named_holders(&r.stderr);
        assert!(
            named.iter().all(|p| real.contains(p)),
            "{backend} {round}: apply {:?} named holders {named:?}, but only {real:?} could hold \
             the lock:\n{}",
            r.which,
            r.stderr
        );
        if let Some(extra) = extra {
            assert!(named.contains(&extra), "{backend} {round}: {}", r.stderr);
        }
    }
}

/// A `portwarden agent` in a lab node (killed when dropped), its log in a file.
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn start(node: &Netns, s: &Setup, backend: Backend, extra: &[&str], tag: &str) -> Agent {
        Agent::start_with(node, s, backend, Which::A.dir(), extra, tag)
    }

    /// An agent of the policies in `policies` (a directory of the setup).
    fn start_with(
        node: &Netns,
        s: &Setup,
        backend: Backend,
        policies: &str,
        extra: &[&str],
        tag: &str,
    ) -> Agent {
        let log = s.path(&format!("agent-{tag}.log"));
        let mut args = vec![
            "agent",
            "--policy-dir",
            s.dir.path().join(policies).to_str().unwrap(),
            "--inventory",
            s.dir.path().join("inventory.yaml").to_str().unwrap(),
            "--node",
            "n",
            "--refresh",
            "1",
            "--backend",
            backend.as_str(),
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let child = portwarden(node, s, &refs)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Agent { child, log }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the agent to exit by itself.
    fn exit(&mut self) -> ExitStatus {
        let until = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < until,
                "the agent (pid {}) is still running after {DEADLINE:?}; its log:\n{}",
                self.pid(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_hand_run_apply_beside_the_agent_warns_and_never_mixes() {
    skip_unless_lab!();
    for backend in BACKENDS {
        let lab = Lab::builder("wragent")
            .nodes(1)
            .scanners(1)
            .build()
            .unwrap();
        let node = lab.node(0);
        let s = Setup::new(node);
        let agent = Agent::start(node, &s, backend, &[], "a");
        wait_until(&format!("{backend}: the agent applies A"), || {
            holds(node, &s, backend) == Some(Which::A)
        });
        for round in 0..3 {
            let mut args = vec!["apply".to_string()];
            args.extend(intent_args(&s, Which::B, backend));
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = portwarden(node, &s, &refs).output().unwrap();
            let (stdout, stderr) = (
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
            );
            assert!(
                out.status.success() && stdout.contains("read back and confirmed"),
                "{backend} round {round}: apply beside the agent: {stdout}{stderr}"
            );
            assert!(
                stderr.contains("warning")
                    && stderr.contains(&format!("pid {}", agent.pid()))
                    && stderr.contains("next refresh"),
                "{backend} round {round}: no warning naming the agent (pid {}): {stderr}",
                agent.pid()
            );
            // Never a mix: B whole, or A whole again if the agent already refreshed.
            let snapshot = Snapshot::take(&s.writer_lock(node));
            let census = census(node, backend);
            let kernel = holds(node, &s, backend);
            drop(snapshot);
            assert!(
                kernel.is_some() && census.iter().all(|(_, jumps, _, _)| *jumps == 1),
                "{backend} round {round}: {kernel:?}: {}",
                show_census(&census)
            );
            // The agent restores its intent at its next refresh.
            wait_until(&format!("{backend}: the agent restores A"), || {
                holds(node, &s, backend) == Some(Which::A)
            });
        }
        let census = census(node, backend);
        assert!(
            census.iter().all(|(_, jumps, _, _)| *jumps == 1),
            "{backend}: {}",
            show_census(&census)
        );
    }
}

fn http(node: &Netns, path: &'static str) -> Result<String, String> {
    http_within(node, path, Duration::from_secs(2))
}

/// `GET path` from the agent in `node`, answered within `deadline`.
fn http_within(node: &Netns, path: &'static str, deadline: Duration) -> Result<String, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], DEFAULT_AGENT_PORT));
    node.run(move || http_get(addr, path, deadline)).unwrap()
}

/// A kubeconfig naming an API server that does not exist: enough for the agent to get past
/// its client configuration.
fn kubeconfig(dir: &Path) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: http://127.0.0.1:9\n\
         users:\n- name: lab\n  user:\n    token: t\ncontexts:\n- name: lab\n  context:\n    \
         cluster: lab\n    user: lab\ncurrent-context: lab\n",
    )
    .unwrap();
    path
}

#[test]
fn a_second_agent_refuses_to_start() {
    skip_unless_lab!();
    let backend = Backend::Nft;
    let lab = Lab::builder("wrtwo").nodes(1).scanners(1).build().unwrap();
    let node = lab.node(0);
    let s = Setup::new(node);
    let mut first = Agent::start(node, &s, backend, &[], "first");
    wait_until("the first agent is ready", || {
        http(node, "/readyz").is_ok_and(|b| b.contains("ready"))
    });
    let kube = kubeconfig(s.dir.path());
    for (tag, extra) in [
        ("standalone", vec!["--metrics-addr", "127.0.0.1:9751"]),
        ("kube", vec!["--kube", "--metrics-addr", "127.0.0.1:9752"]),
    ] {
        let mut second = if tag == "kube" {
            let mut args = vec!["agent", "--node", "n", "--refresh", "1"];
            args.extend(&extra);
            let child = portwarden(node, &s, &args)
                .env("KUBECONFIG", &kube)
                .env_remove("KUBERNETES_SERVICE_HOST")
                .env_remove("KUBERNETES_SERVICE_PORT")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(s.path("agent-kube.log")).unwrap())
                .spawn()
                .unwrap();
            Agent {
                child,
                log: s.path("agent-kube.log"),
            }
        } else {
            Agent::start(node, &s, backend, &extra, tag)
        };
        let status = second.exit();
        let log = second.log();
        assert_eq!(status.code(), Some(1), "{tag}: {log}");
        assert!(
            log.contains("another portwarden agent")
                && log.contains(&format!("pid {}", first.pid()))
                && log.contains("portwarden agent --policy-dir"),
            "{tag}: the refusal does not name the running agent (pid {}): {log}",
            first.pid()
        );
    }
    assert!(
        first.child.try_wait().unwrap().is_none(),
        "the first agent must keep running: {}",
        first.log()
    );
    // SIGKILL: the kernel releases the dead agent's lock, and a new agent starts.
    drop(first);
    let _third = Agent::start(node, &s, backend, &[], "third");
    wait_until("a new agent is ready after the first one died", || {
        http(node, "/readyz").is_ok_and(|b| b.contains("ready"))
    });
}

/// One keep-alive connection to the agent asking for `/v1/inside` again and again until `stop`;
/// reconnects when the server closes it. Counts the answers in `answered`.
fn ask_inside_forever(node: Netns, stop: Arc<AtomicBool>, answered: Arc<AtomicUsize>) {
    let addr = SocketAddr::from(([127, 0, 0, 1], DEFAULT_AGENT_PORT));
    while !stop.load(Ordering::Relaxed) {
        let Ok(Ok(stream)) = node.run(move || TcpStream::connect(addr)) else {
            continue;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(15)));
        let mut reader = BufReader::new(stream);
        while !stop.load(Ordering::Relaxed) {
            let asked = reader
                .get_mut()
                .write_all(b"GET /v1/inside HTTP/1.1\r\nHost: agent\r\n\r\n");
            if asked.is_err() {
                break;
            }
            // The header, then exactly Content-Length bytes of body: the connection stays open.
            let mut length = None;
            let mut line = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    length = None;
                    break;
                }
                if line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.split_once(':')
                    && k.eq_ignore_ascii_case("content-length")
                {
                    length = v.trim().parse::<usize>().ok();
                }
            }
            let Some(length) = length else { break };
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                break;
            }
            answered.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Foreign rules in the node of `inside_view_clients_cannot_stop_repairs`.
const FOREIGN_RULES: usize = 20_000;

/// A small policy: two web ports open, one filtered.
fn web_policy() -> String {
    "apiVersion: portwarden.io/v1alpha1\nkind: PortPolicy\nmetadata:\n  name: web\nspec:\n  \
     ports:\n    - ports: \"80,443\"\n      state: open\n    - ports: \"8080\"\n      \
     state: filtered\n"
        .into()
}

/// portwarden's jumps in the IPv4 `INPUT` chain (nft backend).
fn jumps(node: &Netns) -> usize {
    census(node, Backend::Nft)[0].1
}

#[test]
fn inside_view_clients_cannot_stop_repairs() {
    skip_unless_lab!();
    let backend = Backend::Nft;
    let lab = Lab::builder("wrinside")
        .nodes(1)
        .scanners(1)
        .build()
        .unwrap();
    let node = lab.node(0);
    let s = Setup::new(node);
    // A node with many foreign rules (kube-proxy's are tens of thousands) and a small intent:
    // each inside view reads the whole table and answers little.
    let small = s.path("small");
    std::fs::create_dir(&small).unwrap();
    std::fs::write(small.join("policy.yaml"), web_policy()).unwrap();
    let mut foreign = String::from("*filter\n:PW-TEST-FOREIGN - [0:0]\n");
    for i in 0..FOREIGN_RULES {
        let _ = writeln!(
            foreign,
            "-A PW-TEST-FOREIGN -s 10.{}.{}.{}/32 -p tcp --dport 9 -j RETURN",
            i / 65536,
            (i / 256) % 256,
            i % 256
        );
    }
    foreign.push_str("COMMIT\n");
    let file = s.path("foreign.rules");
    std::fs::write(&file, foreign).unwrap();
    node.exec(&["iptables-nft-restore", "--noflush", file.to_str().unwrap()])
        .unwrap();
    let agent = Agent::start_with(node, &s, backend, "small", &[], "inside");
    wait_until("the agent applies its intent", || jumps(node) == 1);
    // The inside view does not wait for a writer: with the writer lock held by another process
    // (as by a long apply), it answers at once and without a lock error.
    let holder = LockHolder::hold(&s.writer_lock(node)).unwrap();
    let view = http_within(node, "/v1/inside", Duration::from_secs(5));
    drop(holder);
    assert!(
        view.as_ref()
            .is_ok_and(|v| v.contains("\"node\"") && !v.contains("writer")),
        "the inside view waited for the writer lock: {view:?}"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (node, stop, answered) = (node.clone(), stop.clone(), answered.clone());
            std::thread::spawn(move || ask_inside_forever(node, stop, answered))
        })
        .collect();
    wait_until("the clients get inside views", || {
        answered.load(Ordering::Relaxed) >= 8
    });
    // Someone deletes portwarden's jump (position 1 of INPUT) while the clients keep asking.
    node.exec(&["iptables-nft", "-D", "INPUT", "1"]).unwrap();
    assert_eq!(jumps(node), 0, "the jump is deleted");
    let deleted = Instant::now();
    // Well within the agent's lock wait (10 s): a reconcile that waited for the readers the
    // whole time cannot count as a repair.
    let limit = Duration::from_secs(6);
    let mut repaired = false;
    while deleted.elapsed() < limit {
        if jumps(node) == 1 {
            repaired = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let during = answered.load(Ordering::Relaxed);
    eprintln!(
        "repaired={repaired} after {:?}, {during} views",
        deleted.elapsed()
    );
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }
    assert!(
        repaired,
        "the deleted jump was not repaired within {limit:?} while {during} inside views were \
         served; agent log (pid {}):\n{}",
        agent.pid(),
        agent.log()
    );
}
