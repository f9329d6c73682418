//! The pending rollback of `apply --confirm-within`: what the state file beside the network
//! namespace's writer lock (`net-<inode>.rollback.json`, see [`crate::writer`]) records, and
//! the locked read-modify-write of that file.
//!
//! The file holds one [`Rollback`] as JSON: portwarden's own chains and jumps as they were
//! before the first unconfirmed apply ([`Previous`], from [`crate::FamilyPlan::before`]), the
//! deadline, the watcher process that rolls back at the deadline, and how it ended
//! ([`Status`], [`Outcome`]). An empty file means nothing was ever armed. Whoever changes it
//! holds it exclusively ([`StateFile::lock`]): `apply --confirm-within` while it arms (under
//! the writer lock), `portwarden confirm`, and the watcher at its deadline (under the writer
//! lock, from its decision to its outcome), so a confirm and a deadline never both win.
//!
//! The file is opened as the lock files are: never through a link, only a plain file
//! portwarden made. The lock directory is normally on a tmpfs (`/run`), so a reboot forgets
//! any pending rollback, as it forgets the rules (portwarden persists nothing).

use std::io::ErrorKind;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::place::{Backend, Family};
use crate::render::Desired;
use crate::writer::{self, Lock};

/// The state file's format version.
pub const VERSION: u32 = 1;

/// portwarden's part of one family before an apply: its chains (name and rule
/// specifications, root chain first) and its two jumps, as `iptables-save` printed them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Previous {
    /// Family.
    pub family: Family,
    /// Chain name and its rule specifications.
    pub chains: Vec<(String, Vec<String>)>,
    /// The jump from `INPUT`, if there was one.
    pub jump: Option<String>,
    /// The jump from `FORWARD`, if there was one.
    pub forward_jump: Option<String>,
}

impl From<&Desired> for Previous {
    fn from(d: &Desired) -> Previous {
        Previous {
            family: d.family,
            chains: d.chains.clone(),
            jump: d.jump.clone(),
            forward_jump: d.forward_jump.clone(),
        }
    }
}

impl Previous {
    /// What a rollback converges the family to.
    pub fn desired(&self) -> Desired {
        Desired {
            family: self.family,
            chains: self.chains.clone(),
            jump: self.jump.clone(),
            forward_jump: self.forward_jump.clone(),
        }
    }

    /// Rules and chains of portwarden's it holds (the jumps included).
    pub fn rule_count(&self) -> usize {
        self.desired().rule_count()
    }
}

/// Where a rollback stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Armed: the watcher rolls back at the deadline unless confirmed first.
    Pending,
    /// `portwarden confirm` kept the applied ruleset; nothing will be rolled back.
    Confirmed,
    /// The watcher restored the previous ruleset.
    RolledBack,
    /// The watcher tried and failed ([`Outcome::error`] says why).
    Failed,
}

/// What the watcher did at the deadline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// When it woke at the deadline to roll back, ms since the epoch.
    pub started_ms: i64,
    /// When the previous rules were written and read back (or the attempt failed), ms since
    /// the epoch.
    pub finished_ms: i64,
    /// `iptables-restore` transactions run.
    pub transactions: usize,
    /// Rules and chains added or deleted.
    pub changes: usize,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

/// A rollback armed by `apply --confirm-within`, as the state file records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollback {
    /// [`VERSION`].
    pub version: u32,
    /// This arming's identity: the watcher acts only while the file names it.
    pub id: String,
    /// The network namespace (inode of `/proc/thread-self/ns/net`).
    pub namespace: u64,
    /// Where it stands.
    pub status: Status,
    /// The node the apply was for.
    pub node: String,
    /// The backend the apply wrote (the rollback writes the same).
    pub backend: Backend,
    /// The apply's `--wait`.
    pub lock_wait_secs: u32,
    /// The apply's command line.
    pub command: String,
    /// When the first unconfirmed apply started writing (ms since the epoch): [`Self::previous`]
    /// is from before it.
    pub first_applied_ms: i64,
    /// When the latest apply started writing (ms since the epoch).
    pub applied_ms: i64,
    /// The latest apply's `--confirm-within`, in seconds.
    pub window_secs: u64,
    /// When the watcher rolls back unless confirmed (ms since the epoch).
    pub deadline_ms: i64,
    /// The watcher's pid (in the PID namespace of the apply that started it).
    pub watcher_pid: Option<u32>,
    /// portwarden's part of every managed family before the first unconfirmed apply.
    pub previous: Vec<Previous>,
    /// When `portwarden confirm` kept it (ms since the epoch).
    pub confirmed_ms: Option<i64>,
    /// What the watcher did.
    pub outcome: Option<Outcome>,
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// The state file of the calling thread's network namespace, held exclusively; released when
/// dropped (and when the process dies).
#[derive(Debug)]
pub struct StateFile {
    lock: Lock,
}

impl StateFile {
    /// Takes the state file in the lock directory ([`writer::lock_dir`]), waiting up to `wait`
    /// for another holder.
    ///
    /// # Errors
    /// [`Error::StateBusy`], and the lock directory's errors (as [`writer::Lock`]).
    pub fn lock(wait: Duration) -> Result<StateFile, Error> {
        StateFile::lock_in(&writer::lock_dir(), wait)
    }

    /// As [`StateFile::lock`], in `dir`.
    ///
    /// # Errors
    /// As [`StateFile::lock`].
    pub fn lock_in(dir: &Path, wait: Duration) -> Result<StateFile, Error> {
        Ok(StateFile {
            lock: Lock::rollback_state(dir, wait)?,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        self.lock.path()
    }

    /// What the file records; `None` when it is empty.
    ///
    /// # Errors
    /// [`Error::StateFile`] when it cannot be read or parsed.
    pub fn read(&self) -> Result<Option<Rollback>, Error> {
        parse(self.lock.file(), self.path())
    }

    /// Replaces what the file records (`None` empties it), synced to disk.
    ///
    /// # Errors
    /// [`Error::StateFile`] when it cannot be written.
    pub fn write(&self, state: Option<&Rollback>) -> Result<(), Error> {
        let problem = |e: String| Error::StateFile {
            path: self.path().to_path_buf(),
            problem: format!("cannot be written: {e}"),
        };
        let text = match state {
            Some(s) => serde_json::to_string_pretty(s).map_err(|e| problem(e.to_string()))? + "\n",
            None => String::new(),
        };
        let f = self.lock.file();
        f.set_len(0)
            .and_then(|()| f.write_all_at(text.as_bytes(), 0))
            .and_then(|()| f.sync_data())
            .map_err(|e| problem(e.to_string()))
    }
}

/// What the state file of the calling thread's network namespace in `dir` records, read
/// without its lock (a holder may be writing it: a read that cannot be parsed is worth one
/// more try), and the file's path; `None` when there is no file or it is empty.
///
/// # Errors
/// [`Error::StateFile`] when it cannot be read or parsed, and the lock directory's errors.
pub fn peek(dir: &Path) -> Result<Option<(Rollback, PathBuf)>, Error> {
    let Some((file, path)) = writer::peek_rollback_state(dir)? else {
        return Ok(None);
    };
    Ok(parse(&file, &path)?.map(|r| (r, path)))
}

/// The [`Rollback`] in `file` (at `path`), `None` when it is empty.
fn parse(file: &std::fs::File, path: &Path) -> Result<Option<Rollback>, Error> {
    let problem = |p: String| Error::StateFile {
        path: path.to_path_buf(),
        problem: p,
    };
    let mut bytes = Vec::new();
    let mut buf = vec![0; 64 * 1024];
    loop {
        let offset = bytes.len() as u64;
        match file.read_at(&mut buf, offset) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(problem(format!("cannot be read: {e}"))),
        }
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let state: Rollback =
        serde_json::from_slice(&bytes).map_err(|e| problem(format!("cannot be parsed ({e})")))?;
    if state.version != VERSION {
        return Err(problem(format!(
            "has format version {}, this portwarden reads version {VERSION}",
            state.version
        )));
    }
    Ok(Some(state))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Rollback {
        Rollback {
            version: VERSION,
            id: "1-2".into(),
            namespace: 4026531840,
            status: Status::Pending,
            node: "web-1".into(),
            backend: Backend::Nft,
            lock_wait_secs: 10,
            command: "portwarden apply".into(),
            first_applied_ms: 1,
            applied_ms: 1,
            window_secs: 60,
            deadline_ms: 60_001,
            watcher_pid: Some(42),
            previous: vec![Previous {
                family: Family::Ipv6,
                chains: vec![("PORTWARDEN-INPUT".into(), vec!["-j RETURN".into()])],
                jump: Some("-j PORTWARDEN-INPUT".into()),
                forward_jump: None,
            }],
            confirmed_ms: None,
            outcome: None,
        }
    }

    #[test]
    fn state_round_trips_and_an_empty_file_is_none() {
        let dir = std::env::temp_dir().join(format!("pw-rollback-{}", std::process::id()));
        let f = StateFile::lock_in(&dir, Duration::ZERO).unwrap();
        assert_eq!(f.read().unwrap(), None, "created empty");
        let s = sample();
        f.write(Some(&s)).unwrap();
        assert_eq!(f.read().unwrap(), Some(s.clone()));
        assert_eq!(peek(&dir).unwrap().map(|(r, _)| r), Some(s.clone()));
        // Another holder waits (a thread stands in for another process), and gives up.
        let d = dir.clone();
        let busy = std::thread::spawn(move || StateFile::lock_in(&d, Duration::ZERO).map(|_| ()))
            .join()
            .unwrap();
        assert!(matches!(busy, Err(Error::StateBusy { .. })), "{busy:?}");
        f.write(None).unwrap();
        assert_eq!(f.read().unwrap(), None);
        std::fs::write(f.path(), "{not json").unwrap();
        let e = f.read().unwrap_err().to_string();
        assert!(
            e.contains("cannot be parsed") && e.contains("remove it"),
            "{e}"
        );
        assert_eq!(s.previous[0].desired().family, Family::Ipv6);
        assert_eq!(s.previous[0].rule_count(), 2);
        drop(f);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
