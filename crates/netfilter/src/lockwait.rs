//! Telling that an `iptables-restore` child is waiting for the xtables lock, and who holds it.
//!
//! The legacy backend serialises every iptables program on one `flock(2)` lock
//! (`/run/xtables.lock`, or `$XTABLES_LOCKFILE`); with `--wait=N` a blocked
//! `iptables-restore` waits silently for up to N seconds. iptables-nft takes no lock at all.
//! So that a slow apply is not a mystery, [`Netfilter`](crate::Netfilter) asks the kernel's
//! lock table (`/proc/locks`, read-only) whether its child is a blocked waiter and logs the
//! holder. Nothing here takes or tests a lock; [`crate::writer`] uses [`holder_of`] to name the
//! holder of portwarden's own writer lock, and both name processes with [`command`].

/// Another process's lock that a process is waiting for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// The holder's process id (as this process's PID namespace sees it; 0 when unknown).
    pub pid: u32,
    /// The lock type (`FLOCK`, `POSIX`, `OFDLCK`).
    pub kind: String,
    /// `major:minor:inode` of the locked file, as `/proc/locks` prints it.
    pub file: String,
}

/// The fields of the `/proc/locks` lines that hold (not wait for) a lock on `file`
/// (`major:minor:inode`): "2: FLOCK  ADVISORY  WRITE 18100 fe:00:10010915 0 EOF".
fn held<'a>(locks: &'a str, file: &'a str) -> impl Iterator<Item = Vec<&'a str>> {
    locks
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(move |f| f.get(1).is_some_and(|a| *a != "->") && f.get(5) == Some(&file))
}

/// The holder a `/proc/locks` line names.
fn holder(fields: &[&str], file: &str) -> Holder {
    Holder {
        pid: fields.get(4).and_then(|p| p.parse().ok()).unwrap_or(0),
        kind: fields.get(1).copied().unwrap_or_default().to_string(),
        file: file.to_string(),
    }
}

/// In the text of `/proc/locks`, the lock `pid` is blocked on (a `->` line with its pid) and
/// the process holding that lock (the line with the same number, without `->`).
pub fn blocked_on(locks: &str, pid: u32) -> Option<Holder> {
    // "7: -> FLOCK  ADVISORY  WRITE 18134 fe:00:10010915 0 EOF"
    let waiting: Vec<&str> = locks
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(1) == Some(&"->") && f.get(5).and_then(|p| p.parse().ok()) == Some(pid))?;
    let (number, file) = (*waiting.first()?, *waiting.get(6)?);
    Some(
        match held(locks, file).find(|f| f.first() == Some(&number)) {
            Some(h) => holder(&h, file),
            None => Holder {
                pid: 0,
                kind: waiting.get(2).copied().unwrap_or_default().to_string(),
                file: file.to_string(),
            },
        },
    )
}

/// In the text of `/proc/locks`, the processes holding a lock (not waiting for one) on the
/// file `file` (`major:minor:inode`, see [`file_id`]), in the table's order: one for an
/// exclusive lock, one or more for a shared one. Holders this process's PID namespace cannot
/// see are left out of the table by the kernel (or shown with pid 0 by old kernels).
pub fn holders(locks: &str, file: &str) -> Vec<Holder> {
    held(locks, file).map(|f| holder(&f, file)).collect()
}

/// How `/proc/locks` names a file: `major:minor:inode` of its `st_dev` and `st_ino`, the
/// device numbers in two-digit hex.
pub fn file_id(dev: u64, ino: u64) -> String {
    // glibc's encoding of dev_t (what stat(2) returns on Linux).
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    format!("{major:02x}:{minor:02x}:{ino}")
}

/// [`blocked_on`] for the live `/proc/locks`; `None` when `pid` waits for no lock (or the
/// table cannot be read).
pub fn lock_holder(pid: u32) -> Option<Holder> {
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    blocked_on(&locks, pid)
}

/// [`holders`] of the file with `st_dev` `dev` and `st_ino` `ino` in the live `/proc/locks`:
/// the first one this PID namespace can see, `None` when none (or the table cannot be read).
pub fn holder_of(dev: u64, ino: u64) -> Option<u32> {
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    holders(&locks, &file_id(dev, ino))
        .into_iter()
        .map(|h| h.pid)
        .find(|&p| p != 0)
}

/// Longest command line [`command`] returns.
const COMMAND_MAX: usize = 400;

/// A process's command line from `/proc/PID/cmdline` (arguments joined by spaces, control
/// characters blanked, at most [`COMMAND_MAX`] characters), or its name (`/proc/PID/comm`)
/// when that is empty, or `?` when the process is gone.
pub fn command(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let line = raw
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(" ");
    let line = if line.is_empty() {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "?".into())
    } else {
        line
    };
    shorten(&line)
}

/// `line` without control characters (logs, terminals), cut at [`COMMAND_MAX`] characters.
fn shorten(line: &str) -> String {
    let mut short: String = line
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(COMMAND_MAX)
        .collect();
    if line.chars().count() > COMMAND_MAX {
        short.push('…');
    }
    short
}

/// The lock file iptables uses: `$XTABLES_LOCKFILE` when set and not empty, else
/// `/run/xtables.lock` (as iptables 1.8 decides).
pub fn lock_file() -> String {
    std::env::var("XTABLES_LOCKFILE")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "/run/xtables.lock".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCKS: &str = "\
1: POSIX  ADVISORY  WRITE 18143 fe:00:382078 0 EOF
2: FLOCK  ADVISORY  WRITE 18100 fe:00:10010915 0 EOF
2: -> FLOCK  ADVISORY  WRITE 18134 fe:00:10010915 0 EOF
2: -> FLOCK  ADVISORY  WRITE 18135 fe:00:10010915 0 EOF
3: OFDLCK ADVISORY  READ -1 00:06:3 0 EOF
";

    #[test]
    fn finds_the_holder_of_a_blocked_waiter() {
        let h = blocked_on(LOCKS, 18135).unwrap();
        assert_eq!(
            h,
            Holder {
                pid: 18100,
                kind: "FLOCK".into(),
                file: "fe:00:10010915".into()
            }
        );
        assert_eq!(blocked_on(LOCKS, 18134).unwrap().pid, 18100);
    }

    #[test]
    fn holders_of_a_file_are_listed() {
        let h = holders(LOCKS, "fe:00:10010915");
        assert_eq!(h.len(), 1);
        assert_eq!((h[0].pid, h[0].kind.as_str()), (18100, "FLOCK"));
        assert!(holders(LOCKS, "fe:00:1").is_empty());
        // The lock file of this test's own lock, as the kernel prints it.
        use std::os::unix::fs::MetadataExt;
        let path = std::env::temp_dir().join(format!("pw-lockwait-{}", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        file.lock().unwrap();
        let m = file.metadata().unwrap();
        let table = std::fs::read_to_string("/proc/locks").unwrap();
        let ours = holders(&table, &file_id(m.dev(), m.ino()));
        assert!(
            ours.iter().any(|h| h.pid == std::process::id()),
            "{} not in {table}",
            file_id(m.dev(), m.ino())
        );
        drop(file);
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn commands_are_named_in_one_clean_line() {
        assert!(command(std::process::id()).contains("netfilter"));
        assert_eq!(command(u32::MAX), "?");
        let long = "x".repeat(COMMAND_MAX + 10);
        assert_eq!(shorten(&long).chars().count(), COMMAND_MAX + 1);
        assert_eq!(shorten("a\u{1b}[31mb"), "a [31mb");
    }

    #[test]
    fn holders_and_strangers_wait_for_nothing() {
        assert_eq!(blocked_on(LOCKS, 18100), None);
        assert_eq!(blocked_on(LOCKS, 18143), None);
        assert_eq!(blocked_on(LOCKS, 1), None);
        assert_eq!(blocked_on("", 1), None);
        // a waiter whose holder line vanished between the two reads of the kernel
        let h = blocked_on("4: -> FLOCK  ADVISORY  WRITE 7 fe:00:1 0 EOF\n", 7).unwrap();
        assert_eq!((h.pid, h.kind.as_str()), (0, "FLOCK"));
    }
}
