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
//! * **Only files portwarden made.** The directory may belong to the agent's user, so a lock
//!   file is opened without following links (nor blocking on a FIFO) and must be a plain file
//!   with one link, owned by root, the directory's owner or its group
//!   ([`Error::LockFile`] otherwise): a planted link cannot make a root-run writer write
//!   through it, or lock the xtables lock. A lock is kept only while its file is still the one
//!   at the path (same inode after the flock), so a file replaced meanwhile is not a second
//!   lock.
//! * **Who holds it.** In this PID namespace the kernel's lock table (`/proc/locks`, via
//!   [`crate::lockwait`]) names the holder, and `/proc/PID/cmdline` its command line. For a
//!   holder the table cannot show (another PID namespace: a container), a writer writes one
//!   line into the file when it has the lock, `PID COMMAND LINE`, and empties it before it
//!   lets go; the file's modification time says since when.
//! * **Readers take it shared.** `plan` reads under a shared lock, so it sees a namespace
//!   before or after a write, never between its IPv4 and IPv6 transactions; readers do not
//!   exclude each other. The agent's inside view, which any host may ask for, takes no lock
//!   (see [`crate::Netfilter::plan_unlocked`]): overlapping readers could keep writers out.
//! * **Taken once, by the crate.** `plan`, `apply`, `converge` and `reset` each take the lock
//!   themselves and call nothing under it that takes it again; nobody outside the crate can
//!   hold it (writer or reader) around such a call, which would make the call wait for
//!   itself until `--wait` runs out.
//! * **Bounded waits.** A writer retries every [`POLL`] for up to the wait it was given
//!   (`--wait`, 10 s by default, as `iptables --wait`), logs whom it waits for once (and again
//!   if the holder changes), then gives up with [`Error::WriterBusy`] naming the holder:
//!   never a mixed result, and never an endless hang behind a stuck process.
//! * **The agent's lock**, `net-<inode>.agent.lock` beside it, is held exclusively for the
//!   agent's whole life: a second agent in the namespace refuses to start
//!   ([`Error::AgentRunning`]), and a hand-run writer can tell that an agent will undo its
//!   change ([`running_agent`]).
//! * **The pending-rollback state** of `apply --confirm-within`, `net-<inode>.rollback.json`
//!   beside it, is opened with the same checks (only files portwarden made) and locked
//!   exclusively for each read-modify-write; the file holds the state itself (see
//!   [`crate::rollback`]). Lock order: the writer lock first, then the state file, never the
//!   other way round.
//!
//! Outside the crate nobody can hold the writer lock around a call that takes it again:
//!
//! ```compile_fail
//! use portwarden_netfilter::writer::{Lock, lock_dir};
//! let _reading = Lock::reader(&lock_dir(), std::time::Duration::ZERO);
//! ```
//!
//! ```compile_fail
//! fn hold(nf: &portwarden_netfilter::Netfilter) {
//!     let _writing = nf.lock();
//! }
//! ```
//!
//! # Caveats
//!
//! * The lock is advisory and only portwarden takes it. Other programs that edit portwarden's
//!   chains are still caught by the read-back ([`Error::Verify`]) and the agent's drift repair.
//! * Whoever may write the lock directory can hold the lock and stall portwarden's writers
//!   (each gives up after its wait, naming the holder), and can unlink the file while a writer
//!   holds it: the next writer then locks a new file beside the held one. Keep the directory
//!   root's, or root's and portwarden's group's (mode 0770); systemd's `RuntimeDirectory=`
//!   needs `RuntimeDirectoryPreserve=yes`, or stopping the agent deletes it the same way.
//! * A holder killed by SIGKILL leaves its line in the file; it is believed only while the
//!   kernel names no holder in this PID namespace.
//! * Processes share the lock only when they share the directory: a container must mount the
//!   host's (`/run/portwarden`), as the Helm chart does.

use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::ErrorKind;
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

/// A holder nobody can name yet (it let go, or has not written its line) is logged as unknown
/// only after this long.
const DESCRIBE_AFTER: Duration = Duration::from_millis(500);

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
    let link = "/proc/thread-self/ns/net";
    let target = std::fs::read_link(link).map_err(|source| Error::Namespace { source })?;
    let text = target.to_string_lossy();
    text.split_once('[')
        .and_then(|(_, rest)| rest.strip_suffix(']'))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| Error::Namespace {
            source: std::io::Error::other(format!("{link} reads {text:?}, not net:[inode]")),
        })
}

/// Which lock, and how it is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// The writer lock, exclusively: `apply`, `reset`, a reconcile.
    Write,
    /// The writer lock, shared: a consistent read (`plan`).
    Read,
    /// The agent lock, exclusively, for the agent's life.
    Agent,
    /// The pending-rollback state file, exclusively, for one read-modify-write (see
    /// [`crate::rollback`]).
    Rollback,
}

impl Kind {
    /// The lock file's name for network namespace `ns`.
    fn file_name(self, ns: u64) -> String {
        match self {
            Kind::Write | Kind::Read => format!("net-{ns}.lock"),
            Kind::Agent => format!("net-{ns}.agent.lock"),
            Kind::Rollback => format!("net-{ns}.rollback.json"),
        }
    }
}

/// A held lock of this network namespace; released when dropped (and when the process dies).
#[derive(Debug)]
pub struct Lock {
    file: File,
    path: PathBuf,
    /// Whether this holder's line is in the file (to empty it when letting go).
    recorded: bool,
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
    /// * The lock file names this process until the lock is dropped (when it may be written).
    ///
    /// # Errors
    /// [`Error::WriterBusy`] naming the holder when it is still held after `wait`;
    /// [`Error::LockDir`] when `dir` or the file cannot be created or opened;
    /// [`Error::LockFile`] when the file is not one portwarden made;
    /// [`Error::Namespace`] when the namespace cannot be told.
    pub(crate) fn writer(dir: &Path, wait: Duration) -> Result<Lock, Error> {
        take(dir, Kind::Write, wait)
    }

    /// Takes the writer lock shared, for a consistent read: waits, as [`Lock::writer`], for a
    /// writer to finish; other readers do not exclude it.
    ///
    /// # Errors
    /// As [`Lock::writer`].
    pub(crate) fn reader(dir: &Path, wait: Duration) -> Result<Lock, Error> {
        take(dir, Kind::Read, wait)
    }

    /// Takes the agent lock of the calling thread's network namespace, for the agent's life.
    ///
    /// # Errors
    /// [`Error::AgentRunning`] naming the agent that holds it; [`Error::LockDir`],
    /// [`Error::LockFile`], [`Error::Namespace`] as [`Lock::writer`].
    pub fn agent(dir: &Path) -> Result<Lock, Error> {
        take(dir, Kind::Agent, AGENT_GRACE)
    }

    /// Takes the pending-rollback state file of the calling thread's network namespace
    /// (`net-<inode>.rollback.json`, created empty when missing) exclusively, waiting up to
    /// `wait` for another holder (an `apply --confirm-within`, a `confirm`, a rollback
    /// watcher). The file itself holds the state (see [`crate::rollback`]); no holder line is
    /// written into it.
    ///
    /// # Errors
    /// [`Error::StateBusy`] naming the holder when it is still held after `wait`;
    /// [`Error::LockDir`], [`Error::LockFile`], [`Error::Namespace`] as [`Lock::writer`].
    pub(crate) fn rollback_state(dir: &Path, wait: Duration) -> Result<Lock, Error> {
        take(dir, Kind::Rollback, wait)
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open lock file (for a lock whose file holds data: [`Lock::rollback_state`]).
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Writes this process's line into the lock file, for waiters of other PID namespaces.
    fn record(&mut self) {
        let pid = std::process::id();
        let line = format!("{pid} {}\n", lockwait::command(pid));
        let written = self
            .file
            .set_len(0)
            .and_then(|()| self.file.write_all_at(line.as_bytes(), 0));
        // Without it a waiter of this PID namespace still finds the holder in /proc/locks.
        self.recorded = written.is_ok();
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Empty the line before the lock goes with the descriptor.
        if self.recorded {
            let _ = self.file.set_len(0);
        }
    }
}

/// Takes the `kind` lock in `dir`, trying every [`POLL`] for up to `wait`.
fn take(dir: &Path, kind: Kind, wait: Duration) -> Result<Lock, Error> {
    let path = dir.join(kind.file_name(namespace_id()?));
    let started = Instant::now();
    let mut logged: Option<Holder> = None;
    loop {
        // Opened anew at each try: the file at `path` is the lock, not one unlinked meanwhile.
        let (file, writable) = open(dir, &path)?;
        let tried = match kind {
            Kind::Read => file.try_lock_shared(),
            Kind::Write | Kind::Agent | Kind::Rollback => file.try_lock(),
        };
        match tried {
            Ok(()) if still_at(&file, &path) => {
                if let Some(h) = logged {
                    info!(
                        lock = %path.display(),
                        holder_pid = h.pid.unwrap_or(0),
                        after_ms = started.elapsed().as_millis() as u64,
                        "writer lock wait over"
                    );
                }
                let mut lock = Lock {
                    file,
                    path,
                    recorded: false,
                };
                if matches!(kind, Kind::Write | Kind::Agent) && writable {
                    lock.record();
                }
                return Ok(lock);
            }
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
        let holder = Holder::of(&file);
        let waited = started.elapsed();
        if waited >= wait {
            return Err(match kind {
                Kind::Agent => Error::AgentRunning {
                    lock: path,
                    holder: holder.to_string(),
                },
                Kind::Rollback => Error::StateBusy {
                    path,
                    holder: holder.to_string(),
                    waited: wait,
                },
                Kind::Write | Kind::Read => Error::WriterBusy {
                    lock: path,
                    holder: holder.to_string(),
                    waited: wait,
                },
            });
        }
        let new = logged.as_ref().is_none_or(|l| l.pid != holder.pid);
        if matches!(kind, Kind::Write | Kind::Read)
            && new
            && (holder.pid.is_some() || waited >= DESCRIBE_AFTER)
        {
            warn!(
                lock = %path.display(),
                holder_pid = holder.pid.unwrap_or(0),
                wait_secs = wait.as_secs_f64(),
                "waiting for this network namespace's writer lock, held by {holder}: {} \
                 (giving up after {wait:?})",
                if kind == Kind::Read {
                    "reading once that write is over, so as not to see it half-way"
                } else {
                    "one writer at a time, so that two rulesets cannot mix"
                }
            );
            logged = Some(holder);
        }
        std::thread::sleep(POLL.min(wait - waited).max(Duration::from_millis(1)));
    }
}

/// Opens (creating it and its directory `dir` when missing) the lock file `path`: read-write
/// when allowed, else read-only (flock works on either; only the record needs writing).
/// Never follows a link and never blocks on a FIFO; a file portwarden did not make is
/// refused ([`checked`]).
fn open(dir: &Path, path: &Path) -> Result<(File, bool), Error> {
    ensure_dir(dir)?;
    let created = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o660)
        .open(path);
    let (file, writable, action) = match created {
        Ok(file) => {
            adopt(&file, dir);
            return Ok((file, true));
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => match open_existing(path, true) {
            Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                (open_existing(path, false), false, "open")
            }
            other => (other, true, "open"),
        },
        Err(e) => (Err(e), true, "create"),
    };
    let file = file.map_err(|source| match source.raw_os_error() {
        Some(libc::ELOOP) => Error::LockFile {
            path: path.to_path_buf(),
            problem: "it is a symbolic link".into(),
        },
        _ => Error::LockDir {
            path: path.to_path_buf(),
            action,
            source,
        },
    })?;
    Ok((checked(file, dir, path)?, writable))
}

/// The pending-rollback state file of the calling thread's network namespace in `dir`,
/// opened read-only without its lock (for a reader that must not wait for the holder), when
/// it exists and is one portwarden made; `None` when there is none.
///
/// # Errors
/// [`Error::LockFile`] for a file portwarden did not make, [`Error::LockDir`] when it cannot
/// be opened, [`Error::Namespace`].
pub(crate) fn peek_rollback_state(dir: &Path) -> Result<Option<(File, PathBuf)>, Error> {
    let path = dir.join(Kind::Rollback.file_name(namespace_id()?));
    match open_existing(&path, false) {
        Ok(file) => Ok(Some((checked(file, dir, &path)?, path))),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) if source.raw_os_error() == Some(libc::ELOOP) => Err(Error::LockFile {
            path,
            problem: "it is a symbolic link".into(),
        }),
        Err(source) => Err(Error::LockDir {
            path,
            action: "open",
            source,
        }),
    }
}

/// Opens the existing file `path` without following a link or blocking on a FIFO.
fn open_existing(path: &Path, write: bool) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
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
    let inspect = |source| Error::LockDir {
        path: path.to_path_buf(),
        action: "inspect",
        source,
    };
    let m = file.metadata().map_err(inspect)?;
    let d = std::fs::metadata(dir).map_err(inspect)?;
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
/// which. `None` when none does or that cannot be told (no lock file, no directory, a file
/// portwarden did not make).
///
/// # Caveats
/// The check holds the agent lock shared for an instant; an agent starting at that instant
/// retries for a second before it gives up.
pub fn running_agent(dir: &Path) -> Option<Holder> {
    let path = dir.join(Kind::Agent.file_name(namespace_id().ok()?));
    let file = checked(open_existing(&path, false).ok()?, dir, &path).ok()?;
    match file.try_lock_shared() {
        Ok(()) => None,
        Err(TryLockError::WouldBlock) => Some(Holder::of(&file)),
        Err(TryLockError::Error(_)) => None,
    }
}

/// The process that holds a lock, as far as this process can tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// Its pid: as this PID namespace sees it (the kernel's lock table), or, for a holder the
    /// table does not show, as its own PID namespace sees it (its line in the lock file).
    pub pid: Option<u32>,
    /// Whether `pid` is another PID namespace's (from the lock file, not the kernel).
    pub foreign: bool,
    /// Its command line.
    pub command: Option<String>,
    /// Since when it holds the lock (when it wrote its line).
    pub since: Option<SystemTime>,
}

impl Holder {
    /// The holder of the lock on `file`.
    fn of(file: &File) -> Holder {
        let mut text = vec![0; 4096];
        let n = file.read_at(&mut text, 0).unwrap_or(0);
        let meta = file.metadata().ok();
        let kernel = meta
            .as_ref()
            .and_then(|m| lockwait::holder_of(m.dev(), m.ino()));
        Holder::from_parts(
            kernel,
            &String::from_utf8_lossy(&text[..n]),
            meta.and_then(|m| m.modified().ok()),
            lockwait::command,
        )
    }

    /// The holder, from the pid the kernel names (`kernel`), the lock file's text and
    /// modification time, and a way to name a process of this PID namespace.
    fn from_parts(
        kernel: Option<u32>,
        text: &str,
        modified: Option<SystemTime>,
        command: impl Fn(u32) -> String,
    ) -> Holder {
        // "PID COMMAND LINE\n"; anything else is empty or still being written.
        let line = text
            .strip_suffix('\n')
            .and_then(|l| l.split_once(' '))
            .and_then(|(pid, c)| Some((pid.parse::<u32>().ok()?, c)));
        match (kernel, line) {
            (Some(pid), line) => Holder {
                pid: Some(pid),
                foreign: false,
                command: Some(command(pid)),
                // The line and its time are this holder's only when they name it.
                since: line.filter(|(p, _)| *p == pid).and(modified),
            },
            (None, Some((pid, c))) => Holder {
                pid: Some(pid),
                foreign: true,
                command: Some(c.to_string()),
                since: modified,
            },
            (None, None) => Holder {
                pid: None,
                foreign: false,
                command: None,
                since: None,
            },
        }
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(pid) = self.pid else {
            return f.write_str(
                "a process this PID namespace cannot see, which left no line in the lock file",
            );
        };
        write!(f, "pid {pid}")?;
        if self.foreign {
            f.write_str(" of another PID namespace (a container?)")?;
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

    fn lock_file(d: &Path, kind: Kind) -> PathBuf {
        d.join(kind.file_name(namespace_id().unwrap()))
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
            text.starts_with(&format!("{} ", std::process::id())) && text.ends_with('\n'),
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
        let path = lock_file(d.path(), Kind::Write);
        // A stale line of a process that is gone: not believed.
        std::fs::write(&path, "4294967294 portwarden apply --long-gone\n").unwrap();
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
        assert!(
            record.starts_with(&format!("{} ", std::process::id())),
            "{record}"
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
        let path = lock_file(d.path(), Kind::Write);
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
        let path = lock_file(d.path(), Kind::Write);
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
        assert!(
            !seen.foreign && seen.command.is_some() && seen.since.is_some(),
            "{seen:?}"
        );
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
                && msg.contains("RuntimeDirectoryPreserve=yes")
                && msg.contains("least-privilege.md"),
            "{msg}"
        );
    }

    #[test]
    fn holders_are_named_by_the_kernel_or_else_by_their_line() {
        let name = |pid: u32| format!("cmd-of-{pid}");
        let t = Some(SystemTime::UNIX_EPOCH);
        // The kernel's word wins; the line's time counts only when it names the same process.
        let h = Holder::from_parts(Some(7), "7 portwarden apply\n", t, name);
        assert_eq!((h.pid, h.foreign, h.since), (Some(7), false, t));
        assert_eq!(h.command.as_deref(), Some("cmd-of-7"));
        let stale = Holder::from_parts(Some(7), "12 portwarden apply\n", t, name);
        assert_eq!((stale.pid, stale.since), (Some(7), None));
        // A holder the kernel does not show: another PID namespace's, named by its line.
        let h = Holder::from_parts(None, "12 portwarden agent --kube\n", t, name);
        assert_eq!((h.pid, h.foreign), (Some(12), true));
        assert!(
            h.to_string()
                .starts_with("pid 12 of another PID namespace (a container?) `portwarden agent --kube`, lock held for"),
            "{h}"
        );
        // A line being written, or none: nobody known.
        for text in ["", "12", "12 portwarden ag"] {
            let h = Holder::from_parts(None, text, t, name);
            assert_eq!(h.pid, None, "{text:?}");
            assert!(h.to_string().contains("cannot see"), "{h}");
        }
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
