//! Fault injection at the apply level, on the real kernel and both iptables backends (issue 9):
//!
//! 1. `killed_restore_leaves_the_old_or_the_new_ruleset` — a real `iptables-restore` fed the
//!    transaction from a small ruleset A to a 10,000-entry ruleset B is SIGKILLed at many points
//!    (before any input, a quarter, half, three quarters, all but `COMMIT`, all of it, and at
//!    several moments after all of it); each time the node holds exactly A or exactly B.
//! 2. `a_killed_restore_child_is_reported_and_the_next_apply_finishes` — the `iptables-restore`
//!    that `Netfilter` runs (a fault-injecting wrapper in front of the real one, chosen with
//!    `Options::tool_dir`) dies by SIGKILL halfway: `apply` returns `Error::Killed`, the rules
//!    are still A, and the next apply reaches B.
//! 3. `apply_waits_for_the_xtables_lock_and_then_succeeds` — legacy: another process holds a
//!    private xtables lock (`XTABLES_LOCKFILE`, never `/run/xtables.lock`); the apply waits,
//!    blocked on that lock, and completes once it is released. nft: iptables-nft takes no lock,
//!    the same apply completes while the lock is held.
//!
//! Everything runs inside lab namespaces; see `support`.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use portwarden_lab::{LockHolder, Netns, skip_unless_lab};
use portwarden_netfilter::{
    Backend, BackendChoice, Desired, Error, Failsafe, Family, Netfilter, Options,
};
use portwarden_policy::NodeIntent;
use support::*;

const DEADLINE: Duration = Duration::from_secs(30);

/// A scratch directory under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("pw-faults-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The intent of a policy with `n` single-port entries cycling through the three states.
fn big_intent(dir: &Path, n: u32) -> NodeIntent {
    let mut s = String::from(
        "apiVersion: portwarden.io/v1alpha1\nkind: PortPolicy\nmetadata:\n  name: big\nspec:\n  ports:\n",
    );
    for i in 0..n {
        let state = ["open", "closed", "filtered"][(i % 3) as usize];
        let _ = writeln!(s, "    - ports: \"{}\"\n      state: {state}", 10_000 + i);
    }
    let file = dir.join("big.yaml");
    std::fs::write(&file, s).unwrap();
    let loaded = portwarden_policy::load_paths(&[&file]).unwrap_or_else(|d| panic!("{d:?}"));
    loaded.policies.compile(&BTreeMap::new())
}

/// What a plan made in `node` knows of it (addresses, forwarding): what to render for it.
fn host(node: &Netns) -> portwarden_netfilter::addresses::Host {
    node.run(portwarden_netfilter::addresses::Host::read)
        .unwrap()
        .unwrap()
}

/// portwarden's part of a family as `-A` lines (its chains' rules and every rule jumping into
/// them), sorted: what "exactly A" and "exactly B" compare.
fn ours_in(save: &str) -> Vec<String> {
    let mut v: Vec<String> = normalized(save)
        .lines()
        .filter(|l| l.starts_with("-A ") && l.contains("PORTWARDEN-"))
        .map(String::from)
        .collect();
    v.sort();
    v
}

/// The same lines for a desired state.
fn ours_wanted(d: &Desired) -> Vec<String> {
    let mut v: Vec<String> = d
        .chains
        .iter()
        .flat_map(|(name, rules)| rules.iter().map(move |r| format!("-A {name} {r}")))
        .chain(d.jump.iter().map(|j| format!("-A INPUT {j}")))
        .chain(d.forward_jump.iter().map(|j| format!("-A FORWARD {j}")))
        .collect();
    v.sort();
    v
}

#[derive(Debug, PartialEq, Eq)]
enum Seen {
    A,
    B,
}

/// Which of the two states a family of the node holds; panics on anything else (a mix).
fn which(
    node: &Netns,
    backend: Backend,
    family: Family,
    a: &[String],
    b: &[String],
    at: &str,
) -> Seen {
    let now = ours_in(
        &node
            .exec(&[&tool(backend, family, "save"), "-t", "filter"])
            .unwrap(),
    );
    if now == a {
        Seen::A
    } else if now == b {
        Seen::B
    } else {
        let from_a = now.iter().filter(|l| a.contains(l)).count();
        let from_b = now.iter().filter(|l| b.contains(l)).count();
        panic!(
            "{backend} {family}: killed at {at}: a mix — {} of our rules, {from_a} of A's {} \
             and {from_b} of B's {}",
            now.len(),
            a.len(),
            b.len()
        );
    }
}

/// Runs the real `iptables-restore --noflush` of `backend` inside `node` on `input`, writes
/// `cut` bytes of it, then (when `kill_after` is given) waits that long and SIGKILLs it.
/// Returns how the process ended.
fn restore_killed(
    node: &Netns,
    backend: Backend,
    family: Family,
    input: String,
    cut: usize,
    kill_after: Option<Duration>,
) -> std::process::ExitStatus {
    let program = tool(backend, family, "restore");
    inside(node, move || {
        let mut child = Command::new(&program)
            .args(["--noflush", "--wait=10"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        // The pipe holds 64 KiB: once this returns, the tool has parsed all but that much.
        stdin.write_all(&input.as_bytes()[..cut]).unwrap();
        match kill_after {
            Some(d) => {
                if !d.is_zero() {
                    std::thread::sleep(d); // a kill point, not a synchronisation
                }
                let _ = child.kill();
                drop(stdin);
            }
            None => drop(stdin),
        }
        child.wait().unwrap()
    })
}

#[test]
fn killed_restore_leaves_the_old_or_the_new_ruleset() {
    skip_unless_lab!();
    let scratch = Scratch::new("kill");
    let big = big_intent(&scratch.0, 10_000);
    let small = intent(&["examples/web", "examples/quarantine"], &[("role", "web")]);
    for backend in BACKENDS {
        let lab = lab("fkill");
        let node = lab.node(0).clone();
        install_foreign_state(&node, backend);
        let host = host(&node);
        let (a, b) = (
            host.render(&small, &Failsafe::default()),
            host.render(&big, &Failsafe::default()),
        );
        let apply_a = {
            let small = small.clone();
            let node = node.clone();
            move || {
                let small = small.clone();
                inside(&node, move || {
                    let nf = netfilter(backend);
                    nf.apply(&nf.plan(&small, &Failsafe::default()).unwrap())
                        .unwrap();
                })
            }
        };
        apply_a();
        let foreign: Vec<String> = Family::ALL
            .iter()
            .map(|&f| foreign_only(&save(&node, backend, f)))
            .collect();
        let big2 = big.clone();
        let plan = inside(&node, move || {
            netfilter(backend)
                .plan(&big2, &Failsafe::default())
                .unwrap()
        });
        let mut outcomes = Vec::new();
        for fp in &plan.families {
            let family = fp.family;
            let (want_a, want_b) = (ours_wanted(a.family(family)), ours_wanted(b.family(family)));
            eprintln!(
                "{backend} {family}: A has {} rules of ours, B {}, the transaction {} bytes",
                want_a.len(),
                want_b.len(),
                fp.restore.len()
            );
            assert!(
                want_b.len() > 10 * want_a.len(),
                "{backend} {family}: B is the big one"
            );
            let input = fp.restore.clone();
            let commit = input.len() - "COMMIT\n".len();
            assert!(input[commit..].starts_with("COMMIT"));
            let mut points: Vec<(String, usize, Option<Duration>)> = vec![
                ("no input".into(), 0, Some(Duration::ZERO)),
                (
                    "1/4 of the input".into(),
                    input.len() / 4,
                    Some(Duration::ZERO),
                ),
                (
                    "1/2 of the input".into(),
                    input.len() / 2,
                    Some(Duration::ZERO),
                ),
                (
                    "3/4 of the input".into(),
                    input.len() * 3 / 4,
                    Some(Duration::ZERO),
                ),
                ("all but COMMIT".into(), commit, Some(Duration::ZERO)),
            ];
            for ms in [0u64, 1, 2, 5, 10, 20, 50] {
                points.push((
                    format!("{ms} ms after all the input"),
                    input.len(),
                    Some(Duration::from_millis(ms)),
                ));
            }
            points.push(("never (runs to the end)".into(), input.len(), None));
            for (at, cut, kill_after) in points {
                let status = restore_killed(&node, backend, family, input.clone(), cut, kill_after);
                let seen = which(&node, backend, family, &want_a, &want_b, &at);
                if cut < input.len() {
                    // COMMIT never arrived: nothing may have been written.
                    assert_eq!(seen, Seen::A, "{backend} {family}: killed at {at}");
                }
                if kill_after.is_none() {
                    assert!(status.success(), "{backend} {family}: {status:?}");
                    assert_eq!(seen, Seen::B, "{backend} {family}: a complete run");
                }
                eprintln!("{backend} {family}: killed at {at}: {status:?} -> {seen:?}");
                outcomes.push((family, at, seen == Seen::B));
                // The other family and everything foreign are untouched by any of it.
                let other = Family::ALL.into_iter().find(|&f| f != family).unwrap();
                assert_eq!(
                    which(
                        &node,
                        backend,
                        other,
                        &ours_wanted(a.family(other)),
                        &[],
                        "-"
                    ),
                    Seen::A
                );
                for (i, &f) in Family::ALL.iter().enumerate() {
                    assert_eq!(
                        foreign_only(&save(&node, backend, f)),
                        foreign[i],
                        "{backend} {f}: foreign rules"
                    );
                }
                if seen == Seen::B {
                    apply_a(); // back to A for the next kill
                }
            }
        }
        eprintln!(
            "{backend}: {} kills, {} after COMMIT landed",
            outcomes.len(),
            outcomes.iter().filter(|o| o.2).count()
        );
    }
}

/// Bytes of its input the fault-injecting wrapper passes on before the kill.
const KILL_AT: usize = 50_000;

/// A tool directory whose tools of `backend` are shell scripts in front of the real ones.
/// With `kill`, a `*-restore` script armed by deleting its `NAME.fired` marker (they start
/// disarmed) passes [`KILL_AT`] bytes of its input to the real tool, then SIGKILLs it and
/// itself, once. With `lock`, every tool runs with `XTABLES_LOCKFILE` pointing there.
fn tool_dir(scratch: &Path, backend: Backend, kill: bool, lock: Option<&Path>) -> PathBuf {
    let dir = scratch.join(format!("tools-{backend}"));
    std::fs::create_dir_all(&dir).unwrap();
    let env = lock.map_or(String::new(), |l| {
        format!(
            "XTABLES_LOCKFILE={}\nexport XTABLES_LOCKFILE\n",
            l.display()
        )
    });
    for family in Family::ALL {
        for what in ["save", "restore"] {
            let name = tool(backend, family, what);
            let real = portwarden_netfilter::backend::find_program(&name, None).unwrap();
            let fault = if kill && what == "restore" {
                format!(
                    "if [ ! -e \"$0.fired\" ]; then\n\
                     \x20 : > \"$0.fired\"\n\
                     \x20 fifo=\"$0.fifo\"; rm -f \"$fifo\"; mkfifo \"$fifo\"\n\
                     \x20 \"{real}\" \"$@\" < \"$fifo\" & pid=$!\n\
                     \x20 exec 3> \"$fifo\"\n\
                     \x20 head -c {half} >&3\n\
                     \x20 kill -KILL $pid; wait $pid; rm -f \"$fifo\"\n\
                     \x20 kill -KILL $$\n\
                     fi\n",
                    real = real.display(),
                    half = KILL_AT,
                )
            } else {
                String::new()
            };
            let script = format!(
                "#!/bin/sh\n# fault injection in front of {real}\n{env}{fault}exec \"{real}\" \"$@\"\n",
                real = real.display()
            );
            let path = dir.join(&name);
            std::fs::write(&path, script).unwrap();
            std::fs::write(dir.join(format!("{name}.fired")), "").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    dir
}

fn netfilter_in(backend: Backend, dir: &Path) -> Netfilter {
    assert_not_root_netns();
    Netfilter::detect(&Options {
        backend: BackendChoice::Fixed(backend),
        tool_dir: Some(dir.to_path_buf()),
        ..Options::default()
    })
    .unwrap()
}

#[test]
fn a_killed_restore_child_is_reported_and_the_next_apply_finishes() {
    skip_unless_lab!();
    let scratch = Scratch::new("child");
    let big = big_intent(&scratch.0, 10_000);
    let small = intent(&["examples/web", "examples/quarantine"], &[("role", "web")]);
    for backend in BACKENDS {
        let lab = lab("fchild");
        let node = lab.node(0).clone();
        let host = host(&node);
        let (a, b) = (
            host.render(&small, &Failsafe::default()),
            host.render(&big, &Failsafe::default()),
        );
        let dir = tool_dir(&scratch.0, backend, true, None);
        let (s2, b2, d2) = (small.clone(), big.clone(), dir.clone());
        let (first, second) = inside(&node, move || {
            let nf = netfilter_in(backend, &d2);
            nf.apply(&nf.plan(&s2, &Failsafe::default()).unwrap())
                .unwrap();
            // A applied; arm the IPv4 wrapper: the big change's first transaction dies halfway
            std::fs::remove_file(d2.join(format!("iptables-{backend}-restore.fired"))).unwrap();
            let plan = nf.plan(&b2, &Failsafe::default()).unwrap();
            let len = plan.families[0].restore.len();
            assert!(len > 2 * KILL_AT, "the kill is mid-input: {len} bytes");
            (nf.apply(&plan), nf)
        });
        let err = first.unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(
                err,
                Error::Killed {
                    family: Family::Ipv4,
                    signal: 9,
                    ..
                }
            ),
            "{backend}: {msg}"
        );
        assert!(
            msg.contains("never a mix") && msg.contains("next apply"),
            "{msg}"
        );
        for f in Family::ALL {
            assert_eq!(
                which(
                    &node,
                    backend,
                    f,
                    &ours_wanted(a.family(f)),
                    &ours_wanted(b.family(f)),
                    "halfway"
                ),
                Seen::A,
                "{backend} {f}: still A after the killed transaction"
            );
        }
        // the next apply (a reconcile) finishes the change
        let big = big.clone();
        let applied = inside(&node, move || {
            second
                .apply(&second.plan(&big, &Failsafe::default()).unwrap())
                .unwrap()
        });
        assert_eq!(applied.transactions, 2);
        for f in Family::ALL {
            assert_eq!(
                which(
                    &node,
                    backend,
                    f,
                    &ours_wanted(a.family(f)),
                    &ours_wanted(b.family(f)),
                    "-"
                ),
                Seen::B,
                "{backend} {f}"
            );
        }
    }
}

/// Processes blocked on the lock of the file with inode `ino`, per `/proc/locks`.
fn waiters(ino: u64) -> Vec<u32> {
    let suffix = format!(":{ino}");
    std::fs::read_to_string("/proc/locks")
        .unwrap()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(1) == Some(&"->") && f.get(6).is_some_and(|d| d.ends_with(&suffix)))
                .then(|| f.get(5).and_then(|p| p.parse().ok()))
                .flatten()
        })
        .collect()
}

#[test]
fn apply_waits_for_the_xtables_lock_and_then_succeeds() {
    skip_unless_lab!();
    let scratch = Scratch::new("lock");
    let small = intent(&["examples/web", "examples/quarantine"], &[("role", "web")]);
    for backend in BACKENDS {
        let lab = lab("flock");
        let node = lab.node(0).clone();
        let want = host(&node).render(&small, &Failsafe::default());
        // a private lock: never /run/xtables.lock, which the host's own tools use
        let lock = scratch.0.join(format!("xtables-{backend}.lock"));
        std::fs::write(&lock, "").unwrap();
        let ino = std::fs::metadata(&lock).unwrap().ino();
        let dir = tool_dir(&scratch.0, backend, false, Some(&lock));
        let holder = LockHolder::hold(&lock).expect("hold the private xtables lock");
        let (done, finished) = mpsc::channel();
        let (n2, s2) = (node.clone(), small.clone());
        let worker = std::thread::spawn(move || {
            let r = inside(&n2, move || {
                let nf = netfilter_in(backend, &dir);
                nf.apply(&nf.plan(&s2, &Failsafe::default()).unwrap())
                    .map(|a| a.transactions)
                    .map_err(|e| e.to_string())
            });
            let _ = done.send(r);
        });
        match backend {
            Backend::Legacy => {
                // the apply blocks on our lock, and does not fail while it is held
                let until = Instant::now() + DEADLINE;
                while waiters(ino).is_empty() {
                    assert!(
                        Instant::now() < until,
                        "no iptables-restore waits for the lock"
                    );
                    assert!(
                        finished.try_recv().is_err(),
                        "apply finished while the lock was held"
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
                assert!(
                    finished.try_recv().is_err(),
                    "apply finished while the lock was held"
                );
                assert_eq!(
                    which(&node, backend, Family::Ipv4, &[], &[], "-"),
                    Seen::A,
                    "nothing written while waiting"
                );
                let waited = Instant::now();
                drop(holder);
                let r = finished.recv_timeout(DEADLINE).unwrap();
                assert_eq!(r, Ok(2), "{backend}");
                eprintln!(
                    "legacy: apply completed {:?} after the lock was released",
                    waited.elapsed()
                );
            }
            Backend::Nft => {
                // iptables-nft has no lock: the apply completes while it is held
                let r = finished.recv_timeout(DEADLINE).unwrap();
                assert_eq!(r, Ok(2), "{backend}");
                assert!(waiters(ino).is_empty());
                drop(holder);
            }
        }
        worker.join().unwrap();
        for f in Family::ALL {
            assert_eq!(
                which(&node, backend, f, &[], &ours_wanted(want.family(f)), "-"),
                Seen::B,
                "{backend} {f}: applied"
            );
        }
    }
}
