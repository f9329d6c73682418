//! The automatic rollback of `apply --confirm-within`: arming it under the writer lock (the
//! state file, the watcher process), the watcher itself (the hidden `portwarden
//! __rollback-watch`), and telling a live watcher from a pid that is gone. `portwarden
//! confirm` is [`crate::cmd::confirm`]; the state file is `portwarden_netfilter::rollback`.
//!
//! The watcher is the same binary, started before any rule is written, in a session of its
//! own (setsid(2): the apply's terminal hanging up sends it nothing, SIGHUP is ignored too),
//! with its standard streams on /dev/null, in the apply's network namespace (inherited). It is
//! not waited for, so it outlives the apply however the apply ends (exit, SIGKILL). Before the
//! apply writes, the watcher reads the state file and says `armed` on a pipe; an apply whose
//! watcher does not say so within [`HANDSHAKE`] fails with nothing written.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use portwarden_netfilter::rollback::{self, Outcome, Previous, Rollback, StateFile, Status};
use portwarden_netfilter::{Backend, BackendChoice, Desired, Netfilter, Options, Plan};
use serde::Serialize;

/// How long arming, `confirm` and the watcher wait for another holder of the state file (a
/// rollback being written holds it for as long as its transactions take).
pub const STATE_WAIT: Duration = Duration::from_secs(30);

/// How long `apply` waits for the watcher it started to say it is armed.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// The hidden subcommand the watcher runs as.
pub const WATCH_COMMAND: &str = "__rollback-watch";

/// The least the watcher waits for the writer lock at its deadline (an agent's reconcile or
/// another apply may hold it), whatever the apply's `--wait`.
const WATCHER_MIN_WAIT_SECS: u32 = 60;

/// Arguments of the hidden `__rollback-watch`.
#[derive(clap::Args, Debug)]
pub struct WatchArgs {
    /// The arming this watcher serves (the state file's `id`).
    #[arg(long, value_name = "ID")]
    id: String,
}

/// What an `apply --confirm-within` asks for.
pub struct Request<'a> {
    /// `--confirm-within`, in seconds.
    pub window_secs: u64,
    /// The node applied for.
    pub node: &'a str,
    /// The backend written.
    pub backend: Backend,
    /// The apply's `--wait`.
    pub lock_wait_secs: u32,
}

/// A rollback armed by an apply. The state file stays locked until this is dropped (after the
/// apply's write), so a `confirm` cannot slip in between the arming and the write.
pub struct Armed {
    _state: StateFile,
    /// What the state file records.
    pub rollback: Rollback,
    /// The state file.
    pub path: PathBuf,
    /// Whether it replaced a pending rollback (whose previous rules it keeps).
    pub replaced: bool,
}

/// `apply -o json`'s `rollback` object.
#[derive(Serialize)]
pub struct RollbackJson {
    /// When the rollback happens unless confirmed, RFC 3339 UTC.
    deadline: String,
    /// The same, in milliseconds since the epoch.
    deadline_unix_ms: i64,
    /// `--confirm-within`, in seconds.
    window_secs: u64,
    /// The watcher's pid.
    watcher_pid: Option<u32>,
    /// The state file.
    state_file: String,
    /// The apply whose previous rules come back (the first unconfirmed one), RFC 3339 UTC.
    restores_rules_from_before: String,
    /// Whether this apply replaced a pending rollback's window.
    replaced_pending: bool,
}

impl Armed {
    /// The JSON form.
    pub fn json(&self) -> RollbackJson {
        let r = &self.rollback;
        RollbackJson {
            deadline: rfc3339(r.deadline_ms),
            deadline_unix_ms: r.deadline_ms,
            window_secs: r.window_secs,
            watcher_pid: r.watcher_pid,
            state_file: self.path.display().to_string(),
            restores_rules_from_before: rfc3339(r.first_applied_ms),
            replaced_pending: self.replaced,
        }
    }

    /// `rolls back at HH:MM:SS UTC unless ... (pid N watches)`, and what it restores when it
    /// replaced a pending rollback.
    pub fn sentence(&self) -> String {
        let r = &self.rollback;
        let mut s = format!(
            "rolls back at {} unless `portwarden confirm` is run (pid {} watches)",
            hms(r.deadline_ms),
            r.watcher_pid.unwrap_or(0)
        );
        if self.replaced {
            s.push_str(&format!(
                "; it replaced the pending rollback and restores portwarden's rules from before the unconfirmed apply at {}",
                hms(r.first_applied_ms)
            ));
        }
        s
    }
}

/// `HH:MM:SS UTC` of an instant in ms since the epoch.
pub fn hms(ms: i64) -> String {
    let t = rfc3339(ms);
    format!("{} UTC", t.get(11..19).unwrap_or(&t))
}

/// RFC 3339 (UTC, whole seconds) of an instant in ms since the epoch.
pub fn rfc3339(ms: i64) -> String {
    portwarden_policy::Timestamp::from_unix(ms.div_euclid(1000)).to_string()
}

/// Arms the rollback of the apply about to write `plan` (under the writer lock, before the
/// write): records portwarden's rules as planned — or, when a rollback is pending, keeps the
/// rules it would restore — with the deadline in the state file, and starts the watcher.
/// `None` when there is nothing to roll back (no change, nothing pending).
///
/// # Errors
/// A plan that moves rules between backends (not something a rollback restores), the state
/// file's errors, a watcher that does not start: in every case nothing was written.
pub fn arm(plan: &Plan, req: &Request<'_>) -> anyhow::Result<Option<Armed>> {
    if let Some(c) = plan.cleanup.first() {
        bail!(
            "--confirm-within cannot roll back this apply: it also removes portwarden's rules \
             from the {} backend (a move between iptables backends), which a rollback does not \
             put back; nothing was written. Apply once without --confirm-within to finish the \
             move, then apply the change with it",
            c.backend
        );
    }
    let state = StateFile::lock(STATE_WAIT)?;
    let existing = state.read()?;
    let pending = live_pending(existing.as_ref());
    if plan.is_converged() && pending.is_none() {
        return Ok(None);
    }
    let mut r = new_rollback(plan, req, pending)?;
    let started = state
        .write(Some(&r))
        .map_err(anyhow::Error::from)
        .and_then(|()| spawn_watcher(&r.id))
        .and_then(|mut child| {
            r.watcher_pid = Some(child.id());
            state.write(Some(&r)).map_err(|e| {
                let _ = child.kill();
                let _ = child.wait();
                anyhow!(e)
            })
        });
    if let Err(e) = started {
        // Put back what was there: a pending rollback keeps its own watcher.
        let _ = state.write(existing.as_ref());
        return Err(e.context("nothing was written"));
    }
    let replaced = pending.is_some();
    if let Some(old) = pending {
        stop_watcher(old);
    }
    let path = state.path().to_path_buf();
    Ok(Some(Armed {
        _state: state,
        rollback: r,
        path,
        replaced,
    }))
}

/// The pending rollback `existing` records, when its watcher still runs (one that is gone is
/// stale: a warning says so, and it is not kept).
fn live_pending(existing: Option<&Rollback>) -> Option<&Rollback> {
    let r = existing.filter(|r| r.status == Status::Pending)?;
    if watcher_alive(r) {
        return Some(r);
    }
    eprintln!(
        "warning: an earlier rollback (due at {}) never ran: its watcher (pid {}) is gone; \
         arming a new one from portwarden's rules as they are now",
        hms(r.deadline_ms),
        r.watcher_pid.unwrap_or(0)
    );
    None
}

/// The state of a new arming for `plan`: its previous rules are those of `pending` when a
/// rollback is pending (the state before the first unconfirmed apply), else the plan's.
fn new_rollback(
    plan: &Plan,
    req: &Request<'_>,
    pending: Option<&Rollback>,
) -> anyhow::Result<Rollback> {
    let now = rollback::now_ms();
    let window_ms = i64::try_from(req.window_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    Ok(Rollback {
        version: rollback::VERSION,
        id: format!("{}-{now}", std::process::id()),
        namespace: portwarden_netfilter::writer::namespace_id()?,
        status: Status::Pending,
        node: req.node.to_string(),
        backend: req.backend,
        lock_wait_secs: req.lock_wait_secs,
        command: portwarden_netfilter::lockwait::command(std::process::id()),
        first_applied_ms: pending.map_or(now, |p| p.first_applied_ms),
        applied_ms: now,
        window_secs: req.window_secs,
        deadline_ms: now.saturating_add(window_ms),
        watcher_pid: None,
        previous: match pending {
            Some(p) => p.previous.clone(),
            None => plan
                .families
                .iter()
                .map(|f| Previous::from(&f.before))
                .collect(),
        },
        confirmed_ms: None,
        outcome: None,
    })
}

/// Starts the watcher for arming `id` and waits for it to say `armed`.
fn spawn_watcher(id: &str) -> anyhow::Result<Child> {
    let exe = std::env::current_exe()
        .context("cannot find this program's own binary to start the rollback watcher")?;
    // The watcher runs from `/`: a relative lock directory is handed over made absolute.
    let dir = portwarden_netfilter::writer::lock_dir();
    let dir = std::path::absolute(&dir)
        .with_context(|| format!("cannot make the lock directory {} absolute", dir.display()))?;
    let mut cmd = Command::new(&exe);
    cmd.args([WATCH_COMMAND, "--id", id])
        .env(portwarden_netfilter::writer::LOCK_DIR_ENV, dir)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: between fork and exec the child calls only setsid(2) and signal(2), which are
    // async-signal-safe, and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            Ok(())
        });
    }
    let mut child = cmd.spawn().with_context(|| {
        format!(
            "cannot start the rollback watcher `{} {WATCH_COMMAND}`",
            exe.display()
        )
    })?;
    let stdout = child.stdout.take();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        if let Some(out) = stdout {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        let _ = tx.send(line);
    });
    let said = rx.recv_timeout(HANDSHAKE);
    match said.as_deref().map(str::trim) {
        Ok("armed") => return Ok(child),
        _ => {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    match said {
        Ok(line) if !line.trim().is_empty() => bail!(
            "the rollback watcher (pid {}) did not arm: {}",
            child.id(),
            line.trim()
        ),
        Ok(_) => bail!(
            "the rollback watcher (pid {}) exited without arming",
            child.id()
        ),
        Err(_) => bail!(
            "the rollback watcher (pid {}) did not say it was armed within {HANDSHAKE:?}; it \
             was stopped",
            child.id()
        ),
    }
}

/// Whether the watcher `r` names runs in this PID namespace: its pid's command line is
/// `... __rollback-watch --id ID` with this arming's id (a reused pid is another program).
pub fn watcher_alive(r: &Rollback) -> bool {
    let Some(pid) = r.watcher_pid else {
        return false;
    };
    let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = raw.split(|&b| b == 0).collect();
    args.contains(&WATCH_COMMAND.as_bytes()) && args.contains(&r.id.as_bytes())
}

/// Ends the watcher of `r` early (SIGTERM) when it still runs; the state file already says
/// it has nothing to do, so one that is not reached finds that out at its deadline.
pub fn stop_watcher(r: &Rollback) {
    if let Some(pid) = r.watcher_pid.filter(|_| watcher_alive(r))
        && let Ok(pid) = libc::pid_t::try_from(pid)
    {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
}

/// Warns on standard error when a rollback is pending in this network namespace: it will
/// undo this `what` too, unless confirmed.
pub fn warn_if_pending(what: &str) {
    let dir = portwarden_netfilter::writer::lock_dir();
    if let Ok(Some((r, _))) = rollback::peek(&dir)
        && r.status == Status::Pending
        && watcher_alive(&r)
    {
        eprintln!(
            "warning: a rollback is pending in this network namespace (pid {} watches): at {} \
             it restores portwarden's rules from before the apply at {}, undoing this {what} \
             too, unless `portwarden confirm` is run first",
            r.watcher_pid.unwrap_or(0),
            hms(r.deadline_ms),
            hms(r.first_applied_ms)
        );
    }
}

/// The hidden `__rollback-watch`: says `armed` once the state file names this arming, sleeps
/// until the deadline, then rolls back unless confirmed or replaced meanwhile.
pub fn watch(a: WatchArgs) -> crate::Outcome {
    let r = match armed(&a.id) {
        Ok(r) => r,
        Err(e) => {
            println!("{e:#}");
            return Ok(ExitCode::FAILURE);
        }
    };
    println!("armed");
    let _ = std::io::stdout().flush();
    detach_stdout();
    sleep_until(r.deadline_ms);
    Ok(roll_back(&a.id, &r))
}

/// The state this watcher serves, checked: the file names arming `id`, pending, for this
/// network namespace.
fn armed(id: &str) -> anyhow::Result<Rollback> {
    let dir = portwarden_netfilter::writer::lock_dir();
    let (r, path) = rollback::peek(&dir)?
        .ok_or_else(|| anyhow!("no pending-rollback state in {}", dir.display()))?;
    let ns = portwarden_netfilter::writer::namespace_id()?;
    if r.id != id || r.status != Status::Pending || r.namespace != ns {
        bail!(
            "{} names another arming ({}, {:?}, namespace {}) than this watcher's ({id}, \
             namespace {ns})",
            path.display(),
            r.id,
            r.status,
            r.namespace
        );
    }
    Ok(r)
}

/// Points standard output at /dev/null: the apply that read the handshake may be gone.
fn detach_stdout() {
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        use std::os::fd::AsRawFd as _;
        // SAFETY: dup2(2) on two open descriptors; fd 1 is replaced atomically.
        unsafe {
            libc::dup2(null.as_raw_fd(), libc::STDOUT_FILENO);
        }
    }
}

/// Sleeps until the wall clock reaches `deadline_ms` (in steps of at most a second, so that
/// a clock set forward is followed).
fn sleep_until(deadline_ms: i64) {
    loop {
        let left = deadline_ms.saturating_sub(rollback::now_ms());
        if left <= 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(left.clamp(1, 1000).unsigned_abs()));
    }
}

/// At the deadline: as the namespace's one writer, restores the previous rules unless the
/// state file says confirmed (or names another arming), and records the outcome.
fn roll_back(id: &str, r: &Rollback) -> ExitCode {
    let started_ms = rollback::now_ms();
    let nf = Netfilter::detect(&Options {
        backend: BackendChoice::Fixed(r.backend),
        lock_wait_secs: r.lock_wait_secs.max(WATCHER_MIN_WAIT_SECS),
        ..Options::default()
    });
    let done = nf.map_err(anyhow::Error::from).and_then(|nf| {
        nf.restore_gated(|| -> anyhow::Result<_> {
            let state = StateFile::lock(STATE_WAIT)?;
            match state.read()? {
                Some(r) if r.id == id && r.status == Status::Pending => {
                    let targets: Vec<Desired> = r.previous.iter().map(Previous::desired).collect();
                    Ok(Some(((state, r), targets)))
                }
                _ => Ok(None), // confirmed, or replaced by a newer arming
            }
        })
    });
    let (state, mut r, written) = match done {
        Ok(None) => return ExitCode::SUCCESS,
        Ok(Some(((state, r), written))) => (Some(state), r, written.map_err(anyhow::Error::from)),
        Err(e) => (None, r.clone(), Err(e)),
    };
    let outcome = Outcome {
        started_ms,
        finished_ms: rollback::now_ms(),
        transactions: written.as_ref().map_or(0, |(_, a)| a.transactions),
        changes: written.as_ref().map_or(0, |(_, a)| a.changes),
        error: written.as_ref().err().map(|e| format!("{e:#}")),
    };
    r.status = if outcome.error.is_none() {
        Status::RolledBack
    } else {
        Status::Failed
    };
    r.outcome = Some(outcome);
    record(id, state, &r)
}

/// Writes the outcome `r` into the state file (`state` when already held; else taken anew,
/// and only while it still names arming `id`, pending).
fn record(id: &str, state: Option<StateFile>, r: &Rollback) -> ExitCode {
    let state = match state {
        Some(s) => s,
        None => match StateFile::lock(STATE_WAIT) {
            Ok(s) => match s.read() {
                Ok(Some(now)) if now.id == id && now.status == Status::Pending => s,
                _ => return ExitCode::FAILURE,
            },
            Err(_) => return ExitCode::FAILURE,
        },
    };
    match state.write(Some(r)) {
        Ok(()) if r.status == Status::RolledBack => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portwarden_netfilter::{Cleanup, Family, Via};

    #[test]
    fn a_move_between_backends_is_refused_before_anything_is_armed() {
        let plan = Plan::reset(&[]).with_cleanup(
            vec![Cleanup {
                backend: Backend::Legacy,
                family: Family::Ipv4,
                via: Via::IptablesRestore,
                delete: vec!["iptables-legacy -X PORTWARDEN-INPUT".into()],
                script: "*filter\n-X PORTWARDEN-INPUT\nCOMMIT\n".into(),
            }],
            Vec::new(),
        );
        let req = Request {
            window_secs: 60,
            node: "n",
            backend: Backend::Nft,
            lock_wait_secs: 10,
        };
        let e = arm(&plan, &req)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("removes portwarden's rules from the legacy backend")
                && e.contains("nothing was written"),
            "{e}"
        );
    }

    #[test]
    fn instants_read_as_utc_clock_times() {
        assert_eq!(hms(1_796_157_760_886), "20:42:40 UTC");
        assert_eq!(rfc3339(1_796_157_760_886), "2026-12-01T20:42:40Z");
        let r = Rollback {
            version: rollback::VERSION,
            id: "1-2".into(),
            namespace: 1,
            status: Status::Pending,
            node: "n".into(),
            backend: Backend::Nft,
            lock_wait_secs: 10,
            command: String::new(),
            first_applied_ms: 0,
            applied_ms: 0,
            window_secs: 1,
            deadline_ms: 1000,
            watcher_pid: Some(std::process::id()),
            previous: Vec::new(),
            confirmed_ms: None,
            outcome: None,
        };
        // This test process is no watcher, whatever the file says.
        assert!(!watcher_alive(&r));
    }
}
