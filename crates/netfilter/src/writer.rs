//! One writer per network namespace at a time, and one agent: the lock every portwarden writer
//! holds across read, plan, write and read-back, and the agent's lifetime lock.
//!
//! Two portwarden processes writing the same namespace's netfilter at once (two `apply`s, an
//! agent and a hand-run `apply`, two agents) interleave their reads and transactions: IPv4 ends
//! with one ruleset and IPv6 with the other, the jump into `PORTWARDEN-INPUT` is inserted
//! twice, and a process can confirm rules the other one has already replaced. [`Lock`]
//! serialises them.
//!
//! # Design
//!
//! * **A lock of portwarden's own, not the xtables lock.** iptables-nft takes no lock at all,
//!   and under iptables-legacy every `iptables-restore --wait` we run takes the xtables lock
//!   itself: holding it across the whole sequence would make our own transaction wait for us
//!   (a deadlock until `--wait` runs out), and would stall kube-proxy and the CNI for as long
//!   as we read and plan.
//! * **flock(2) on one file per network namespace**, `net-<inode>.lock`, in the lock directory
//!   ([`lock_dir`]: `$PORTWARDEN_LOCK_DIR`, default [`DEFAULT_LOCK_DIR`], created mode 0700).
//!   The inode of `/proc/thread-self/ns/net` names the namespace of the *calling thread*, the
//!   one whose iptables children write: a thread that entered a namespace with setns(2) locks
//!   that namespace, not its process's. A pod with `hostNetwork` and a process on the host
//!   see the same inode, so they share the lock when they share the directory (the Helm chart
//!   mounts the host's). The kernel drops a flock when its holder exits, however it dies: no
//!   stale lock, nothing to clean up. The descriptor is close-on-exec, so the iptables children
//!   do not inherit it.
//! * **Who holds it.** The holder writes a record into the file (pid, PID namespace, process
//!   start time, since when, command line) and empties it before it lets go; a waiter reads the
//!   record and asks the kernel's lock table (`/proc/locks`, via [`crate::lockwait`]) which
//!   process holds the lock as its own PID namespace sees it. The kernel's answer wins: a
//!   record from a holder that was killed before it could empty it names a process that is
//!   gone (or another one by now), and is not believed.
//! * **Readers take it shared.** `plan` reads under a shared lock, so it sees a namespace
//!   before or after a write, never between its IPv4 and IPv6 transactions; readers do not
//!   exclude each other.
//! * **Re-entrant for its thread.** The thread that holds the writer lock may take it again,
//!   as writer or reader, at no cost (a guard that releases nothing): `plan`, `converge` or
//!   `reset` called under [`crate::Netfilter::lock`] run under it instead of waiting for
//!   themselves. Other threads of the same process wait like other processes; a [`Lock`]
//!   cannot move to another thread.
//! * **Bounded waits.** A writer retries every [`POLL`] for up to the wait it was given
//!   (`--wait`, 10 s by default, as `iptables --wait`), logs whom it waits for once (and again
//!   if the holder changes), then gives up with [`Error::WriterBusy`] naming the holder:
//!   never a mixed result, and never an endless hang behind a stuck process.
//! * **The agent's lock**, `net-<inode>.agent.lock` beside it, is held exclusively for the
//!   agent's whole life: a second agent in the namespace refuses to start
//!   ([`Error::AgentRunning`]), and a hand-run writer can tell that an agent will undo its
//!   change ([`running_agent`]).
//!
//! # Caveats
//!
//! * The lock is advisory and only portwarden takes it. Other programs that edit portwarden's
//!   chains are still caught by the read-back ([`Error::Verify`]) and the agent's drift repair.
//! * Whoever may open a file in the lock directory can hold the lock and stall portwarden's
//!   writers (each gives up after its wait, naming the holder): keep the directory root's, or
//!   root's and portwarden's group's (mode 0770).
//! * Processes share the lock only when they share the directory: a container must mount the
//!   host's (`/run/portwarden`), as the Helm chart does.

use std::cell::RefCell;
use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::ErrorKind;
use std::marker::PhantomData;
use std::os::unix::fs::{DirBuilderExt as _, FileExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use tracing::{info, warn};

use crate::Error;
use crate::lockwait;

/// The environment variable that moves the lock directory.
pub const LOCK_DIR_ENV: &str = "PORTWARDEN_LOCK_DIR";

/// Where the locks live unless [`LOCK_DIR_ENV`] says otherwise.
pub const DEFAULT_LOCK_DIR: &str = "/run/portwarden";

/// How often a waiting writer tries the lock again.
pub const POLL: Duration = Duration::from_millis(25);

/// How long a starting agent retries before it concludes that another agent holds the lock:
/// a hand-run writer's [`running_agent`] check holds it shared for a few microseconds.
const AGENT_GRACE: Duration = Duration::from_secs(1);

/// A holder that has not written its record yet is described from `/proc` after this long.
const DESCRIBE_AFTER: Duration = Duration::from_millis(500);

/// Longest command line a record keeps.
const COMMAND_MAX: usize = 400;

thread_local! {
    /// The writer lock files this thread holds exclusively.
    static HELD: RefCell<Vec<PathBuf>> = const { RefCell::new(Vec::new()) };
}

/// The lock directory: `$PORTWARDEN_LOCK_DIR` when set and not empty, else
/// [`DEFAULT_LOCK_DIR`].
pub fn lock_dir() -> PathBuf {
    std::env::var_os(LOCK_DIR_ENV)
        .filter(|s| !s.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_LOCK_DIR), PathBuf::from)
}

/// The identity of the calling thread's network namespace: the inode of
/// `/proc/thread-self/ns/net` (what `ip netns identify` and `lsns` show).
///
/// # Errors
/// [`Error::Namespace`] when the link cannot be read (no `/proc`).
pub fn namespace_id() -> Result<u64, Error> {
    ns_inode("/proc/thread-self/ns/net").map_err(|source| Error::Namespace { source })
}

/// `N` of a `/proc/.../ns/*` link reading `type:[N]`.
fn ns_inode(link: &str) -> std::io::Result<u64> {
    let target = std::fs::read_link(link)?;
    let text = target.to_string_lossy();
    text.split_once('[')
        .and_then(|(_, rest)| rest.strip_suffix(']'))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("{link} reads {text:?}, not type:[inode]")))
}

/// Which of the two locks of a namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Held by every writer across read, plan, write and read-back (shared by readers).
    Writer,
    /// Held by an agent for its whole life.
    Agent,
}

impl Role {
    /// The lock file's name for network namespace `ns`.
    pub fn file_name(self, ns: u64) -> String {
        match self {
            Role::Writer => format!("net-{ns}.lock"),
            Role::Agent => format!("net-{ns}.agent.lock"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Exclusive,
    Shared,
}

/// A held lock of this network namespace; released when dropped (and when the process dies).
/// It stays on the thread that took it (not `Send`): the thread is what may re-enter it.
#[derive(Debug)]
pub struct Lock {
    /// `None` for a re-entry by the thread that already holds the writer lock.
    file: Option<File>,
    path: PathBuf,
    recorded: bool,
    /// Registered in [`HELD`] (an exclusive writer lock).
    registered: bool,
    _thread: PhantomData<*const ()>,
}

impl Lock {
    /// Takes the writer lock of the calling thread's network namespace, waiting up to `wait`
    /// for another writer (or a reader) to finish.
    ///
    /// # Guarantees
    /// * While the returned lock lives, no other portwarden writer of this namespace (sharing
    ///   `dir`) holds it, and no `plan` reads.
    /// * A wait is logged once with the holder (pid, command line, since when), again if the
    ///   holder changes, and when it is over.
    /// * The lock file records this process until the lock is dropped.
    /// * When this thread already holds it, returns at once (a guard that releases nothing).
    ///
    /// # Errors
    /// [`Error::WriterBusy`] naming the holder when it is still held after `wait`;
    /// [`Error::LockDir`] when `dir` or the file cannot be created or opened;
    /// [`Error::Namespace`] when the namespace cannot be told.
    pub fn writer(dir: &Path, wait: Duration) -> Result<Lock, Error> {
        acquire(dir, Role::Writer, Mode::Exclusive, wait)
    }

    /// Takes the writer lock shared, for a consistent read: waits, as [`Lock::writer`], for a
    /// writer to finish; other readers do not exclude it. When this thread holds the writer
    /// lock, returns at once (its reads are consistent already).
    ///
    /// # Errors
    /// As [`Lock::writer`].
    pub fn reader(dir: &Path, wait: Duration) -> Result<Lock, Error> {
        acquire(dir, Role::Writer, Mode::Shared, wait)
    }

    /// Takes the agent lock of the calling thread's network namespace, for the agent's life.
    ///
    /// # Errors
    /// [`Error::AgentRunning`] naming the agent that holds it; [`Error::LockDir`],
    /// [`Error::Namespace`] as [`Lock::writer`].
    pub fn agent(dir: &Path) -> Result<Lock, Error> {
        acquire(dir, Role::Agent, Mode::Exclusive, AGENT_GRACE)
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this guard holds the lock itself (not a re-entry of this thread's lock).
    pub fn is_outermost(&self) -> bool {
        self.file.is_some()
    }

    /// Writes this process's record into the lock file (when it could be opened for writing).
    fn record(&mut self) {
        let Some(file) = &self.file else { return };
        let record = Record::this_process().to_text();
        let written = file
            .set_len(0)
            .and_then(|()| file.write_all_at(record.as_bytes(), 0));
        // Without a record a waiter still finds the holder in /proc/locks.
        self.recorded = written.is_ok();
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if self.registered {
            HELD.with(|h| h.borrow_mut().retain(|p| *p != self.path));
        }
        // Empty the record before the lock goes with the descriptor: a waiter that reads an
        // empty file looks again.
        if self.recorded
            && let Some(file) = &self.file
        {
            let _ = file.set_len(0);
        }
    }
}

/// Whether this thread holds the writer lock in `path`.
fn held_here(path: &Path) -> bool {
    HELD.with(|h| h.borrow().iter().any(|p| p == path))
}

fn acquire(dir: &Path, role: Role, mode: Mode, wait: Duration) -> Result<Lock, Error> {
    let path = dir.join(role.file_name(namespace_id()?));
    if role == Role::Writer && held_here(&path) {
        return Ok(Lock {
            file: None,
            path,
            recorded: false,
            registered: false,
            _thread: PhantomData,
        });
    }
    let started = Instant::now();
    let mut logged: Option<Holder> = None;
    let (file, writable) = loop {
        // Opened anew each time: the file at `path` is the lock, not one unlinked meanwhile.
        let (file, writable) = open(dir, &path)?;
        let tried = match mode {
            Mode::Exclusive => file.try_lock(),
            Mode::Shared => file.try_lock_shared(),
        };
        match tried {
            Ok(()) if still_at(&file, &path) => break (file, writable),
            Ok(()) => continue,
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(source)) => {
                return Err(Error::LockDir {
                    path,
                    action: "lock",
                    source,
                });
            }
        }
        let holder = describe(&file);
        let waited = started.elapsed();
        if role == Role::Agent {
            // A running agent's record is there; an empty one is a probe or a starting agent.
            if waited >= wait || holder.recorded {
                return Err(Error::AgentRunning {
                    lock: path,
                    holder: holder.to_string(),
                });
            }
        } else {
            let changed = logged.as_ref().is_none_or(|l| !l.same_process(&holder));
            if changed && (holder.is_known() || waited >= DESCRIBE_AFTER) {
                let reading = mode == Mode::Shared;
                warn!(
                    lock = %path.display(),
                    holder_pid = holder.pid.unwrap_or(0),
                    wait_secs = wait.as_secs_f64(),
                    "waiting for this network namespace's writer lock, held by {holder}: {} \
                     (giving up after {wait:?})",
                    if reading {
                        "reading once that write is over, so as not to see it half-way"
                    } else {
                        "one writer at a time, so that two rulesets cannot mix"
                    }
                );
                logged = Some(holder.clone());
            }
            if waited >= wait {
                return Err(Error::WriterBusy {
                    lock: path,
                    holder: holder.to_string(),
                    waited: wait,
                });
            }
        }
        std::thread::sleep(
            POLL.min(wait.saturating_sub(waited))
                .max(Duration::from_millis(1)),
        );
    };
    if let Some(h) = logged {
        info!(
            lock = %path.display(),
            holder_pid = h.pid.unwrap_or(0),
            after_ms = started.elapsed().as_millis() as u64,
            "writer lock wait over"
        );
    }
    let registered = role == Role::Writer && mode == Mode::Exclusive;
    if registered {
        HELD.with(|h| h.borrow_mut().push(path.clone()));
    }
    let mut lock = Lock {
        file: Some(file),
        path,
        recorded: false,
        registered,
        _thread: PhantomData,
    };
    if mode == Mode::Exclusive && writable {
        lock.record();
    }
    Ok(lock)
}

/// Opens (creating it and its directory `dir` when missing) the lock file `path`: read-write
/// when allowed, else read-only (flock works on either; only the record needs writing).
/// Never follows a link and never blocks on a FIFO; a file portwarden did not make is
/// refused ([`checked`]).
fn open(dir: &Path, path: &Path) -> Result<(File, bool), Error> {
    ensure_dir(dir)?;
    let lock_dir_error = |action, source| Error::LockDir {
        path: path.to_path_buf(),
        action,
        source,
    };
    match OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o660)
        .open(path)
    {
        Ok(file) => {
            adopt(&file, dir);
            return Ok((file, true));
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(lock_dir_error("create", e)),
    }
    let existing = |write| {
        OpenOptions::new()
            .read(true)
            .write(write)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
    };
    let (file, writable) = match existing(true) {
        Ok(file) => (file, true),
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {
            (existing(false).map_err(|e| open_error(path, e))?, false)
        }
        Err(e) => return Err(open_error(path, e)),
    };
    checked(file, dir, path).map(|f| (f, writable))
}

/// The error of opening an existing lock file: a symbolic link is refused as planted.
fn open_error(path: &Path, e: std::io::Error) -> Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        return Error::LockFile {
            path: path.to_path_buf(),
            problem: "it is a symbolic link".into(),
        };
    }
    Error::LockDir {
        path: path.to_path_buf(),
        action: "open",
        source: e,
    }
}

/// `file` (opened from `path` in `dir`) when it is one portwarden may have made: a regular
/// file with one link, owned by root, by the directory's owner, by this process's user, or by
/// a member of the directory's group when the group may write the directory. Anything else
/// (a hard link to another file, a FIFO, a stranger's file) was put there by someone else.
fn checked(file: File, dir: &Path, path: &Path) -> Result<File, Error> {
    let refuse = |problem: String| Error::LockFile {
        path: path.to_path_buf(),
        problem,
    };
    let (m, d) = match (file.metadata(), std::fs::metadata(dir)) {
        (Ok(m), Ok(d)) => (m, d),
        (Err(source), _) | (_, Err(source)) => {
            return Err(Error::LockDir {
                path: path.to_path_buf(),
                action: "inspect",
                source,
            });
        }
    };
    if !m.file_type().is_file() {
        return Err(refuse("it is not a regular file".into()));
    }
    if m.nlink() != 1 {
        return Err(refuse(format!(
            "it has {} links (a hard link to another file?)",
            m.nlink()
        )));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let group_may_write = d.mode() & 0o020 != 0 && m.gid() == d.gid();
    if m.uid() != 0 && m.uid() != d.uid() && m.uid() != me && !group_may_write {
        return Err(refuse(format!(
            "it belongs to uid {}, neither root nor the directory's owner (uid {}) nor a member \
             of its group",
            m.uid(),
            d.uid()
        )));
    }
    Ok(file)
}

/// Whether `file` is still the file at `path`: a lock taken on a file that was unlinked or
/// replaced meanwhile is not the lock the next writer takes.
fn still_at(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// Creates the lock directory (mode 0700) when missing.
fn ensure_dir(dir: &Path) -> Result<(), Error> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| Error::LockDir {
            path: dir.to_path_buf(),
            action: "create the directory",
            source,
        })?;
    if let Ok(m) = std::fs::metadata(dir)
        && m.mode() & 0o002 != 0
    {
        warn!(
            dir = %dir.display(),
            "the lock directory is writable by every user: any of them can hold portwarden's \
             writer lock and make writers wait; make it root's (0700) or root's and portwarden's \
             group's (0770)"
        );
    }
    Ok(())
}

/// A lock file just created: group-writable whatever the umask, and owned like its directory
/// (a root-run `apply` creating it in the directory of an agent running as another user must
/// not lock that agent out of it). Best effort: without the right to chown it stays ours.
fn adopt(file: &File, dir: &Path) {
    let _ = file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o660));
    if let (Ok(d), Ok(f)) = (std::fs::metadata(dir), file.metadata())
        && (d.uid(), d.gid()) != (f.uid(), f.gid())
    {
        let _ = std::os::unix::fs::fchown(file, Some(d.uid()), Some(d.gid()));
    }
}

/// Whether an agent holds the agent lock of the calling thread's namespace (in `dir`), and
/// which. `None` when none does or that cannot be told (no lock file, no directory).
///
/// # Caveats
/// The check holds the agent lock shared for an instant; an agent starting at that instant
/// retries for a second before it gives up.
pub fn running_agent(dir: &Path) -> Option<Holder> {
    let path = dir.join(Role::Agent.file_name(namespace_id().ok()?));
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .ok()?;
    let file = checked(file, dir, &path).ok()?;
    match file.try_lock_shared() {
        Ok(()) => None,
        Err(TryLockError::WouldBlock) => Some(describe(&file)),
        Err(TryLockError::Error(_)) => None,
    }
}

/// The process that holds a lock, as far as this process can tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// Its pid as this process's PID namespace sees it (from `/proc/locks`, or its record when
    /// it is in the same PID namespace).
    pub pid: Option<u32>,
    /// Its pid in its own PID namespace, when that is not ours (a container).
    pub foreign_pid: Option<u32>,
    /// Its command line.
    pub command: Option<String>,
    /// Since when it holds the lock.
    pub since: Option<SystemTime>,
    /// Whether the lock file holds a (believed) record of it.
    pub recorded: bool,
}

impl Holder {
    fn is_known(&self) -> bool {
        self.pid.is_some() || self.foreign_pid.is_some()
    }

    fn same_process(&self, other: &Holder) -> bool {
        (self.pid, self.foreign_pid) == (other.pid, other.foreign_pid)
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.pid, self.foreign_pid) {
            (Some(pid), Some(theirs)) => {
                write!(f, "pid {pid} (pid {theirs} in its own PID namespace)")?
            }
            (Some(pid), None) => write!(f, "pid {pid}")?,
            (None, Some(theirs)) => {
                write!(f, "pid {theirs} of another PID namespace (a container?)")?
            }
            (None, None) => {
                return f.write_str(
                    "a process this PID namespace cannot see, which left no record in the lock \
                     file",
                );
            }
        }
        if let Some(c) = &self.command {
            write!(f, " `{c}`")?;
        }
        if let Some(since) = self.since
            && let Ok(d) = SystemTime::now().duration_since(since)
        {
            write!(f, ", lock held for {:.1} s", d.as_secs_f64())?;
        }
        Ok(())
    }
}

/// Describes the holder of the lock on `file`: its record, checked against the kernel's lock
/// table and `/proc`.
fn describe(file: &File) -> Holder {
    let mut text = vec![0; 4096];
    let n = file.read_at(&mut text, 0).unwrap_or(0);
    let record = Record::parse(&String::from_utf8_lossy(&text[..n]));
    let kernel = file.metadata().ok().and_then(|m| {
        let locks = std::fs::read_to_string("/proc/locks").ok()?;
        lockwait::holders(&locks, &lockwait::file_id(m.dev(), m.ino()))
            .into_iter()
            .map(|h| h.pid)
            .find(|&p| p != 0)
    });
    let our_ns = ns_inode("/proc/self/ns/pid").ok();
    // A record from our PID namespace is believed only while its process lives (the same
    // process: same start time) and, when the kernel names the holder, is that process.
    let record = record.filter(|r| {
        if Some(r.pid_ns) != our_ns {
            return true;
        }
        process_start(r.pid) == Some(r.start) && kernel.is_none_or(|k| k == r.pid)
    });
    match record {
        Some(r) if Some(r.pid_ns) == our_ns => Holder {
            pid: Some(r.pid),
            foreign_pid: None,
            command: Some(r.command),
            since: Some(r.since),
            recorded: true,
        },
        Some(r) => Holder {
            pid: kernel,
            foreign_pid: Some(r.pid),
            command: Some(r.command),
            since: Some(r.since),
            recorded: true,
        },
        None => Holder {
            pid: kernel,
            foreign_pid: None,
            command: kernel.map(command_line),
            since: None,
            recorded: false,
        },
    }
}

/// A process's command line from `/proc/PID/cmdline` (arguments joined by spaces, shortened),
/// or its name when that is empty or unreadable.
pub fn command_line(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let line = raw
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    if line.is_empty() {
        return lockwait::command_name(pid);
    }
    shorten(&line)
}

fn shorten(line: &str) -> String {
    // No control characters in logs or on a terminal.
    let clean: String = line
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.chars().count() <= COMMAND_MAX {
        return clean;
    }
    let mut short: String = clean.chars().take(COMMAND_MAX).collect();
    short.push('…');
    short
}

/// A process's start time (clock ticks after boot, field 22 of `/proc/PID/stat`).
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name (field 2) is in parentheses and may hold anything: count after the last one.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// What a holder writes into the lock file.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Record {
    pid: u32,
    pid_ns: u64,
    start: u64,
    since: SystemTime,
    command: String,
}

impl Record {
    fn this_process() -> Record {
        let pid = std::process::id();
        Record {
            pid,
            pid_ns: ns_inode("/proc/self/ns/pid").unwrap_or(0),
            start: process_start(pid).unwrap_or(0),
            since: SystemTime::now(),
            command: command_line(pid),
        }
    }

    fn to_text(&self) -> String {
        let since = self
            .since
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        format!(
            "pid={}\npidns={}\nstart={}\nsince_ms={since}\ncommand={}\n",
            self.pid,
            self.pid_ns,
            self.start,
            self.command.replace('\n', " ")
        )
    }

    /// The record in `text`, or `None` when it is empty or incomplete (being written).
    fn parse(text: &str) -> Option<Record> {
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
        };
        let number = |k: &str| field(k).and_then(|v| v.parse::<u64>().ok());
        Some(Record {
            pid: u32::try_from(number("pid")?).ok()?,
            pid_ns: number("pidns")?,
            start: number("start")?,
            since: SystemTime::UNIX_EPOCH + Duration::from_millis(number("since_ms")?),
            command: field("command")?.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portwarden_lab::{Lab, LockHolder, skip_unless_lab};
    use std::os::unix::fs::PermissionsExt as _;

    fn dir() -> tempfile_dir::Dir {
        tempfile_dir::Dir::new()
    }

    /// A private lock directory, removed on drop (the crate has no tempfile dependency).
    mod tempfile_dir {
        use std::path::{Path, PathBuf};
        use std::sync::atomic::{AtomicUsize, Ordering};

        pub struct Dir(PathBuf);

        impl Dir {
            pub fn new() -> Dir {
                static N: AtomicUsize = AtomicUsize::new(0);
                let p = std::env::temp_dir().join(format!(
                    "pw-writer-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::SeqCst)
                ));
                Dir(p)
            }
            pub fn path(&self) -> &Path {
                &self.0
            }
        }

        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn lock_file(d: &Path, role: Role) -> PathBuf {
        d.join(role.file_name(namespace_id().unwrap()))
    }

    #[test]
    fn held_excludes_and_released_admits() {
        let d = dir();
        let held = Lock::writer(d.path(), Duration::ZERO).unwrap();
        // The directory is created private, the file records us while held.
        let mode = std::fs::metadata(d.path()).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let text = std::fs::read_to_string(held.path()).unwrap();
        assert!(
            text.contains(&format!("pid={}\n", std::process::id())),
            "{text}"
        );
        // Another thread (as another process) is kept out, writer and reader alike.
        let dir_path = d.path().to_path_buf();
        let (writer, reader) = std::thread::spawn(move || {
            (
                Lock::writer(&dir_path, Duration::ZERO).map(|_| ()),
                Lock::reader(&dir_path, Duration::ZERO).map(|_| ()),
            )
        })
        .join()
        .unwrap();
        let e = writer.unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::WriterBusy { .. }), "{msg}");
        assert!(
            msg.contains(&format!("pid {} `", std::process::id()))
                && msg.contains("lock held for")
                && msg.contains("--wait"),
            "{msg}"
        );
        assert!(
            matches!(reader, Err(Error::WriterBusy { .. })),
            "{reader:?}"
        );
        let path = held.path().to_path_buf();
        drop(held);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "",
            "record emptied"
        );
        let again = Lock::writer(d.path(), Duration::ZERO).unwrap();
        drop(again);
    }

    #[test]
    fn readers_share_and_exclude_writers() {
        let d = dir();
        let r1 = Lock::reader(d.path(), Duration::ZERO).unwrap();
        let r2 = Lock::reader(d.path(), Duration::ZERO).unwrap();
        assert!(matches!(
            Lock::writer(d.path(), Duration::ZERO),
            Err(Error::WriterBusy { .. })
        ));
        drop((r1, r2));
        Lock::writer(d.path(), Duration::ZERO).unwrap();
    }

    #[test]
    fn a_holder_in_another_process_is_named_from_the_kernel() {
        let d = dir();
        ensure_dir(d.path()).unwrap();
        let path = lock_file(d.path(), Role::Writer);
        // A stale record of a process that is gone: not believed.
        let stale = Record {
            pid: u32::MAX - 1,
            pid_ns: ns_inode("/proc/self/ns/pid").unwrap(),
            start: 1,
            since: SystemTime::UNIX_EPOCH,
            command: "portwarden apply --long-gone".into(),
        };
        std::fs::write(&path, stale.to_text()).unwrap();
        let holder = LockHolder::hold(&path).unwrap();
        let started = Instant::now();
        let wait = Duration::from_millis(200);
        let e = Lock::writer(d.path(), wait).unwrap_err();
        // The wait is bounded, and was waited.
        assert!(started.elapsed() >= wait);
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("pid {} `flock", holder.pid()))
                && !msg.contains("long-gone")
                && msg.contains("200ms"),
            "{msg}"
        );
        drop(holder);
        Lock::writer(d.path(), Duration::from_secs(5)).unwrap();
    }

    #[test]
    fn a_wait_ends_when_the_holder_lets_go() {
        let d = dir();
        let held = Lock::writer(d.path(), Duration::ZERO).unwrap();
        let path = d.path().to_path_buf();
        let waiter = std::thread::spawn(move || {
            Lock::writer(&path, Duration::from_secs(30))
                .map(|l| std::fs::read_to_string(l.path()).unwrap_or_default())
        });
        drop(held);
        let record = waiter.join().unwrap().unwrap();
        assert!(record.contains("pid="), "{record}");
    }

    #[test]
    fn the_holding_thread_re_enters_and_other_threads_wait() {
        let d = dir();
        let held = Lock::writer(d.path(), Duration::ZERO).unwrap();
        assert!(held.is_outermost());
        // This thread reads and writes under its own lock without waiting for itself.
        let read = Lock::reader(d.path(), Duration::ZERO).unwrap();
        let nested = Lock::writer(d.path(), Duration::ZERO).unwrap();
        assert!(!read.is_outermost() && !nested.is_outermost());
        drop((read, nested));
        // Dropping the re-entries released nothing: another thread still waits.
        let path = d.path().to_path_buf();
        let other = std::thread::spawn(move || {
            matches!(
                Lock::reader(&path, Duration::ZERO),
                Err(Error::WriterBusy { .. })
            )
        });
        assert!(
            other.join().unwrap(),
            "another thread must wait for this one"
        );
        drop(held);
        // Released: this thread takes it for real again.
        assert!(
            Lock::reader(d.path(), Duration::ZERO)
                .unwrap()
                .is_outermost()
        );
    }

    /// Whoever may write the lock directory (the agent's user, under `RuntimeDirectory=`) must
    /// not make a root-run writer write through a planted link, or lock another program's lock
    /// file (the xtables lock: our own `iptables-restore --wait` would wait for us).
    #[test]
    fn a_planted_link_or_foreign_file_is_refused_and_left_alone() {
        let d = dir();
        ensure_dir(d.path()).unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, "root:x:0:0::/root:/bin/sh\n").unwrap();
        let path = lock_file(d.path(), Role::Writer);
        let refused = |what: &str| {
            let r = Lock::writer(d.path(), Duration::ZERO).map(|l| l.path().to_path_buf());
            assert_eq!(
                std::fs::read_to_string(&victim).unwrap(),
                "root:x:0:0::/root:/bin/sh\n",
                "{what}: written through"
            );
            let msg = r.map_err(|e| e.to_string()).unwrap_err();
            assert!(
                msg.contains(&path.display().to_string()) && msg.contains("remove it"),
                "{what}: {msg}"
            );
            msg
        };
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        assert!(refused("a symbolic link").contains("symbolic link"));
        std::fs::remove_file(&path).unwrap();
        std::fs::hard_link(&victim, &path).unwrap();
        assert!(refused("a hard link").contains("2 links"));
        std::fs::remove_file(&path).unwrap();
        // A FIFO is refused, not waited on.
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(refused("a FIFO").contains("not a regular file"));
        std::fs::remove_file(&path).unwrap();
        // Nothing of the above was followed: the lock works once the file is gone.
        Lock::writer(d.path(), Duration::ZERO).unwrap();
    }

    /// A lock file must be made by someone who may create files in the directory: root, its
    /// owner, or (when the directory is group-writable) a member of its group.
    #[test]
    fn a_lock_file_of_a_stranger_is_refused() {
        skip_unless_lab!(); // chown needs root
        let d = dir();
        ensure_dir(d.path()).unwrap();
        let path = lock_file(d.path(), Role::Writer);
        std::fs::write(&path, "").unwrap();
        std::os::unix::fs::chown(&path, Some(4242), Some(4242)).unwrap();
        let msg = Lock::writer(d.path(), Duration::ZERO)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("uid 4242") && msg.contains("remove it"),
            "{msg}"
        );
        // tmpfiles' `d /run/portwarden 0770 root portwarden`: a file of the group's agent.
        std::os::unix::fs::chown(d.path(), Some(0), Some(4242)).unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o770)).unwrap();
        Lock::writer(d.path(), Duration::ZERO).unwrap();
    }

    /// The lock file replaced while a writer waits on the old one: the waiter must not take
    /// the old inode's lock while another writer holds the new one's.
    #[test]
    fn a_replaced_lock_file_is_not_a_second_lock() {
        let d = dir();
        let first = Lock::writer(d.path(), Duration::ZERO).unwrap();
        let path = first.path().to_path_buf();
        let old = std::fs::metadata(&path).unwrap().ino();
        let dir_path = d.path().to_path_buf();
        let waiter = std::thread::spawn(move || {
            Lock::writer(&dir_path, Duration::from_secs(2)).map(|l| l.path().to_path_buf())
        });
        // Until the waiter has the old file open (its descriptor shows in /proc/self/fd).
        let open_on_old = || {
            std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .filter_map(|e| std::fs::metadata(e.ok()?.path()).ok())
                .filter(|m| m.ino() == old)
                .count()
        };
        let until = Instant::now() + Duration::from_secs(3);
        while open_on_old() < 2 {
            assert!(
                Instant::now() < until,
                "the waiter never opened the lock file"
            );
            std::thread::yield_now();
        }
        std::fs::remove_file(&path).unwrap();
        // Another writer (another process) creates the file anew and holds it.
        let second = LockHolder::hold(&path).unwrap();
        assert_ne!(std::fs::metadata(&path).unwrap().ino(), old);
        drop(first);
        let got = waiter.join().unwrap();
        assert!(
            matches!(got, Err(Error::WriterBusy { .. })),
            "the waiter took the replaced file's lock while another writer holds the new one: \
             {got:?}"
        );
        drop(second);
    }

    #[test]
    fn the_agent_lock_admits_one_agent_and_answers_who() {
        let d = dir();
        assert_eq!(running_agent(d.path()), None, "no lock file: no agent");
        let agent = Lock::agent(d.path()).unwrap();
        let e = Lock::agent(d.path()).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(e, Error::AgentRunning { .. })
                && msg.contains(&format!("pid {}", std::process::id()))
                && msg.contains("another portwarden agent"),
            "{msg}"
        );
        let seen = running_agent(d.path()).unwrap();
        assert_eq!(seen.pid, Some(std::process::id()));
        assert!(seen.recorded && seen.command.is_some(), "{seen:?}");
        // The writer lock is another file: an agent does not stop a writer.
        Lock::writer(d.path(), Duration::ZERO).unwrap();
        drop(agent);
        assert_eq!(running_agent(d.path()), None);
        Lock::agent(d.path()).unwrap();
    }

    #[test]
    fn an_unusable_directory_is_explained() {
        let d = dir();
        ensure_dir(d.path()).unwrap();
        let file = d.path().join("not-a-dir");
        std::fs::write(&file, "").unwrap();
        let e = Lock::writer(&file.join("locks"), Duration::ZERO).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(e, Error::LockDir { .. })
                && msg.contains("not-a-dir/locks")
                && msg.contains(LOCK_DIR_ENV)
                && msg.contains("least-privilege.md"),
            "{msg}"
        );
    }

    #[test]
    fn records_round_trip_and_partial_ones_are_none() {
        let r = Record {
            pid: 42,
            pid_ns: 4026531836,
            start: 777,
            since: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            command: "portwarden apply -f a".into(),
        };
        assert_eq!(Record::parse(&r.to_text()), Some(r.clone()));
        let text = r.to_text();
        assert_eq!(Record::parse(&text[..text.len() / 2]), None);
        assert_eq!(Record::parse(""), None);
        let long = "x".repeat(COMMAND_MAX + 10);
        assert_eq!(shorten(&long).chars().count(), COMMAND_MAX + 1);
        assert_eq!(shorten("a\u{1b}[31mb"), "a [31mb");
    }

    #[test]
    fn the_key_is_the_calling_threads_network_namespace() {
        skip_unless_lab!();
        let lab = Lab::builder("wrkey").nodes(1).scanners(1).build().unwrap();
        let node = lab.node(0).clone();
        let here = namespace_id().unwrap();
        let ino = std::fs::metadata(format!("/run/netns/{}", node.name))
            .unwrap()
            .ino();
        let d = dir();
        let held_here = Lock::writer(d.path(), Duration::ZERO).unwrap();
        let path = d.path().to_path_buf();
        let (there, lock) = node
            .run(move || {
                let lock = Lock::writer(&path, Duration::ZERO).map(|l| l.path().to_path_buf());
                (namespace_id().unwrap(), lock)
            })
            .unwrap();
        assert_ne!(here, there);
        assert_eq!(there, ino, "the namespace's inode, as ip netns sees it");
        // Another namespace's writer does not wait for this one's.
        let lock = lock.unwrap();
        assert_ne!(lock, held_here.path());
        assert!(lock.ends_with(format!("net-{ino}.lock")));
    }
}
