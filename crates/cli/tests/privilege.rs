//! Least privilege: `portwarden apply` and `portwarden agent` work as an unprivileged user
//! (nobody, uid 65534) holding only CAP_NET_ADMIN and CAP_NET_RAW — the agent converges, serves
//! its endpoints and SYN-scans its peer — on both iptables backends; without CAP_NET_ADMIN they
//! fail at once with an error naming the missing capability.
//!
//! The capabilities are set with `setpriv` (util-linux), as a systemd unit with `User=`,
//! `AmbientCapabilities=` and `CapabilityBoundingSet=` would set them (docs/least-privilege.md).
//! The legacy backend serialises on the xtables lock file; the test points iptables at a
//! private one (`XTABLES_LOCKFILE`) that the unprivileged user may open, never at the host's.
//! portwarden's own writer and agent locks go to a private directory the same way
//! (`PORTWARDEN_LOCK_DIR`, owned by the unprivileged user as systemd's `RuntimeDirectory=`
//! makes it), never to the host's `/run/portwarden`.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use portwarden_lab::{Lab, Netns, skip_unless_lab};
use portwarden_reconcile::inside::http_get;
use portwarden_reconcile::{DEFAULT_AGENT_PORT, Report, Verdict};

const BIN: &str = env!("CARGO_BIN_EXE_portwarden");
const DEADLINE: Duration = Duration::from_secs(20);
const TIMEOUT: Duration = Duration::from_secs(2);

/// `setpriv` arguments: uid/gid 65534, no groups, exactly `caps` (e.g. "+net_admin,+net_raw")
/// in the inheritable, ambient and bounding sets, so they survive the exec of portwarden and of
/// the iptables tools it runs.
fn as_nobody(caps: &str) -> Vec<String> {
    let set = format!(
        "-all{}",
        if caps.is_empty() {
            String::new()
        } else {
            format!(",{caps}")
        }
    );
    vec![
        "setpriv".into(),
        "--reuid=65534".into(),
        "--regid=65534".into(),
        "--clear-groups".into(),
        format!("--inh-caps={set}"),
        format!("--ambient-caps={set}"),
        format!("--bounding-set={set}"),
        "--".into(),
    ]
}

/// `env` setting the private xtables lock file and, beside it, the private directory of
/// portwarden's own locks (`locks/`, see [`setup`]).
fn env_lock(lock: &Path) -> Vec<String> {
    env_locks(lock, &lock.with_file_name("locks"))
}

fn env_locks(lock: &Path, dir: &Path) -> Vec<String> {
    vec![
        "env".into(),
        format!("XTABLES_LOCKFILE={}", lock.display()),
        format!("PORTWARDEN_LOCK_DIR={}", dir.display()),
    ]
}

/// Runs `portwarden ARGS` in `ns` as nobody with `caps`: (exit code, stdout, stderr).
fn run_as(ns: &Netns, lock: &Path, caps: &str, args: &[&str]) -> (Option<i32>, String, String) {
    run_with(ns, env_lock(lock), caps, args)
}

/// As [`run_as`], with `env` in front (see [`env_locks`]).
fn run_with(
    ns: &Netns,
    env: Vec<String>,
    caps: &str,
    args: &[&str],
) -> (Option<i32>, String, String) {
    let mut all: Vec<String> = env;
    all.extend(as_nobody(caps));
    all.push(BIN.into());
    all.extend(args.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let out = ns.output(&refs).unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

struct Setup {
    _dir: tempfile::TempDir,
    policies: String,
    inventory: String,
    lock: std::path::PathBuf,
}

fn setup(lab: &Lab) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    // nobody must read the documents and open the private lock file.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (a, b) = (lab.node(0), lab.node(1));
    let inventory = dir.path().join("inventory.yaml");
    std::fs::write(
        &inventory,
        format!(
            "apiVersion: portwarden.io/v1alpha1\nkind: Inventory\nnodes:\n  - name: node-a\n    \
             addresses: [\"{}\"]\n    labels: {{role: a}}\n  - name: node-b\n    \
             addresses: [\"{}\"]\n    labels: {{role: b}}\n",
            a.v4(),
            b.v4()
        ),
    )
    .unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::set_permissions(&policies, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        policies.join("a.yaml"),
        "apiVersion: portwarden.io/v1alpha1\nkind: PortPolicy\nmetadata:\n  name: node-a\nspec:\n  \
         nodeSelector:\n    matchLabels: {role: a}\n  ports:\n    - ports: \"8080\"\n      state: closed\n    \
         - ports: \"9000\"\n      state: filtered\n",
    )
    .unwrap();
    std::fs::write(
        policies.join("b.yaml"),
        "apiVersion: portwarden.io/v1alpha1\nkind: PortPolicy\nmetadata:\n  name: node-b\nspec:\n  \
         nodeSelector:\n    matchLabels: {role: b}\n  ports:\n    - ports: \"80\"\n      state: open\n    \
         - ports: \"81\"\n      state: closed\n",
    )
    .unwrap();
    for f in ["a.yaml", "b.yaml"] {
        std::fs::set_permissions(policies.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::set_permissions(&inventory, std::fs::Permissions::from_mode(0o644)).unwrap();
    let lock = dir.path().join("xtables.lock");
    std::fs::write(&lock, "").unwrap();
    std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o666)).unwrap();
    // portwarden's lock directory, nobody's own (systemd: RuntimeDirectory=portwarden).
    let locks = dir.path().join("locks");
    std::fs::create_dir(&locks).unwrap();
    std::fs::set_permissions(&locks, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&locks, Some(65534), Some(65534)).unwrap();
    Setup {
        policies: policies.to_str().unwrap().into(),
        inventory: inventory.to_str().unwrap().into(),
        lock,
        _dir: dir,
    }
}

fn get(ns: &Netns, path: &'static str) -> Result<String, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], DEFAULT_AGENT_PORT));
    ns.run(move || http_get(addr, path, TIMEOUT)).unwrap()
}

fn wait_for(what: &str, mut ok: impl FnMut() -> Result<bool, String>) {
    let until = Instant::now() + DEADLINE;
    let mut last = String::new();
    loop {
        match ok() {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => last = e,
        }
        assert!(
            Instant::now() < until,
            "{what} not within {DEADLINE:?}; last: {last}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn apply_and_agent_need_only_net_admin_and_net_raw() {
    skip_unless_lab!();
    for backend in ["nft", "legacy"] {
        let lab = Lab::builder(&format!("lp{backend}"))
            .nodes(2)
            .scanners(1)
            .build()
            .unwrap();
        let s = setup(&lab);
        let (a, b) = (lab.node(0), lab.node(1));
        let _b80 = b.tcp_listener(80).unwrap();
        let caps = "+net_admin,+net_raw";

        // B: its rules, applied by nobody.
        let (code, out, err) = run_as(
            b,
            &s.lock,
            caps,
            &[
                "apply",
                "-f",
                &s.policies,
                "--inventory",
                &s.inventory,
                "--node",
                "node-b",
                "--backend",
                backend,
            ],
        );
        assert_eq!(code, Some(0), "{backend}: apply as nobody: {out}{err}");
        let save = b
            .exec(&[&format!("iptables-{backend}-save"), "-t", "filter"])
            .unwrap();
        assert!(
            save.contains("node-b"),
            "{backend}: rules not written:\n{save}"
        );
        // plan agrees: converged, exit 0.
        let (code, out, err) = run_as(
            b,
            &s.lock,
            caps,
            &[
                "plan",
                "-f",
                &s.policies,
                "--inventory",
                &s.inventory,
                "--node",
                "node-b",
                "--backend",
                backend,
            ],
        );
        assert_eq!(code, Some(0), "{backend}: plan as nobody: {out}{err}");

        // A: the agent as nobody converges, serves, and SYN-scans B.
        let mut args = env_lock(&s.lock);
        args.extend(as_nobody(caps));
        args.extend(
            [
                BIN,
                "agent",
                "--policy-dir",
                &s.policies,
                "--inventory",
                &s.inventory,
                "--node",
                "node-a",
                "--backend",
                backend,
                "--refresh",
                "3600",
                "--scan-interval",
                "1",
            ]
            .map(String::from),
        );
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let _agent = a.spawn(&refs).unwrap();
        wait_for(&format!("{backend}: agent converged"), || {
            Ok(get(a, "/v1/inside")?.contains("\"converged\":true"))
        });
        let save = a
            .exec(&[&format!("iptables-{backend}-save"), "-t", "filter"])
            .unwrap();
        assert!(
            save.contains("node-a"),
            "{backend}: agent wrote no rules:\n{save}"
        );
        wait_for(&format!("{backend}: peer scan"), || {
            Ok(get(a, "/v1/report").is_ok())
        });
        let text = get(a, "/v1/report").unwrap();
        let report: Report = serde_json::from_str(&text).unwrap();
        let seen: Vec<(u16, &str, Verdict)> = report
            .results
            .iter()
            .map(|r| (r.port, r.observed.as_str(), r.verdict))
            .collect();
        assert_eq!(
            seen,
            vec![
                (80, "open", Verdict::InSync),
                (81, "closed", Verdict::InSync)
            ],
            "{backend}: {text}"
        );
        assert!(
            !text.contains("connect scan"),
            "{backend}: the agent fell back to a connect scan: NET_RAW not used: {text}"
        );
        // The process really is nobody with exactly these capabilities.
        let status = std::fs::read_to_string(format!("/proc/{}/status", agent_pid(a))).unwrap();
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_string())
                .unwrap()
        };
        assert!(field("Uid:").starts_with("65534"), "{status}");
        // CAP_NET_ADMIN is bit 12, CAP_NET_RAW bit 13.
        assert_eq!(field("CapEff:"), "0000000000003000", "{status}");
        assert_eq!(field("CapBnd:"), "0000000000003000", "{status}");
    }
}

/// The pid of the `portwarden agent` process running in `ns` (the `ip netns exec`, `env` and
/// `setpriv` in front of it exec it, so it is the one whose exe is our binary).
fn agent_pid(ns: &Netns) -> u32 {
    let out = ns.exec(&["ip", "netns", "pids", &ns.name]).unwrap();
    let bin = std::fs::canonicalize(BIN).unwrap();
    out.split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .find(|p| std::fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|e| e == bin))
        .unwrap_or_else(|| panic!("no portwarden process among {out}"))
}

#[test]
fn without_net_admin_the_error_names_the_capability() {
    skip_unless_lab!();
    let lab = Lab::builder("lpnocap")
        .nodes(2)
        .scanners(1)
        .build()
        .unwrap();
    let s = setup(&lab);
    let a = lab.node(0);
    for args in [
        &[
            "apply",
            "-f",
            &s.policies,
            "--inventory",
            &s.inventory,
            "--node",
            "node-a",
        ][..],
        &[
            "plan",
            "-f",
            &s.policies,
            "--inventory",
            &s.inventory,
            "--node",
            "node-a",
        ],
        &["reset"],
        &[
            "agent",
            "--policy-dir",
            &s.policies,
            "--inventory",
            &s.inventory,
            "--node",
            "node-a",
        ],
    ] {
        let (code, out, err) = run_as(a, &s.lock, "+net_raw", args);
        assert_eq!(code, Some(1), "{args:?}: {out}{err}");
        assert!(
            err.contains("CAP_NET_ADMIN") && err.contains("missing"),
            "{args:?}: the error does not name the capability: {err}"
        );
    }
    let save = a.exec(&["iptables-save", "-t", "filter"]).unwrap();
    assert!(!save.contains("PORTWARDEN"), "{save}");
}

/// Under the legacy backend iptables serialises on a lock file that root usually owns with
/// mode 0600; an unprivileged agent cannot open it. The error says so and how to fix it. The
/// nft backend does not need the lock.
/// (A private lock file stands in for /run/xtables.lock.)
#[test]
fn a_lock_file_nobody_may_open_is_explained() {
    skip_unless_lab!();
    let lab = Lab::builder("lplock").nodes(2).scanners(1).build().unwrap();
    let s = setup(&lab);
    std::fs::set_permissions(&s.lock, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, out, err) = run_as(
        lab.node(0),
        &s.lock,
        "+net_admin,+net_raw",
        &[
            "apply",
            "-f",
            &s.policies,
            "--inventory",
            &s.inventory,
            "--node",
            "node-a",
            "--backend",
            "legacy",
        ],
    );
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains("xtables lock file")
            && err.contains("0660")
            && err.contains("least-privilege.md"),
        "{err}"
    );
    // The nft backend does not use the lock: the same works there.
    let (code, out, err) = run_as(
        lab.node(0),
        &s.lock,
        "+net_admin,+net_raw",
        &[
            "apply",
            "-f",
            &s.policies,
            "--inventory",
            &s.inventory,
            "--node",
            "node-a",
            "--backend",
            "nft",
        ],
    );
    assert_eq!(code, Some(0), "nft with an unopenable lock: {out}{err}");
}

/// portwarden's own lock directory (one writer per network namespace, one agent) must be
/// usable by the user portwarden runs as. When it is root's and private, `apply`, `reset` and
/// the agent refuse with an error that names the directory and the fix, before writing
/// anything; `plan` still reads (with a warning that it reads without the lock).
#[test]
fn a_lock_directory_nobody_may_use_is_explained() {
    skip_unless_lab!();
    let lab = Lab::builder("lplockdir")
        .nodes(2)
        .scanners(1)
        .build()
        .unwrap();
    let s = setup(&lab);
    let a = lab.node(0);
    let private = s.lock.with_file_name("root-locks");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let env = || env_locks(&s.lock, &private);
    let caps = "+net_admin,+net_raw";
    // `COMMAND` on node-a's documents, nft backend.
    let node_a = |command: &str| -> Vec<String> {
        let files = if command == "agent" {
            "--policy-dir"
        } else {
            "-f"
        };
        [
            command,
            files,
            &s.policies,
            "--inventory",
            &s.inventory,
            "--node",
            "node-a",
            "--backend",
            "nft",
        ]
        .map(String::from)
        .to_vec()
    };
    let reset = ["reset", "--backend", "nft"].map(String::from).to_vec();
    for args in [node_a("apply"), reset, node_a("agent")] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out, err) = run_with(a, env(), caps, &args);
        assert_eq!(code, Some(1), "{args:?}: {out}{err}");
        assert!(
            err.contains(&private.display().to_string())
                && err.contains("Permission denied")
                && err.contains("PORTWARDEN_LOCK_DIR")
                && err.contains("RuntimeDirectory=portwarden")
                && err.contains("least-privilege.md"),
            "{args:?}: the error does not name the lock directory and the fix: {err}"
        );
    }
    let save = a.exec(&["iptables-nft-save", "-t", "filter"]).unwrap();
    assert!(!save.contains("PORTWARDEN"), "nothing written: {save}");
    let plan = node_a("plan");
    let plan: Vec<&str> = plan.iter().map(String::as_str).collect();
    let (code, out, err) = run_with(a, env(), caps, &plan);
    assert_eq!(code, Some(2), "plan reads without the lock: {out}{err}");
    assert!(err.contains("reading without the writer lock"), "{err}");
}
