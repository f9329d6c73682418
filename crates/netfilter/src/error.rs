//! The crate's error type: every variant says what failed, where, and what to do; and
//! [`ErrorKind`], the few causes a caller may act on without reading the message.

use std::io;

use crate::place::Family;

/// What went wrong while reading, planning or writing netfilter rules.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An iptables tool the chosen backend needs is not installed.
    #[error(
        "`{tool}` not found (searched PATH and /usr/sbin, /sbin): portwarden needs it to \
         {purpose}; install the iptables package (Debian/Ubuntu: apt-get install iptables) or \
         choose another backend with --backend nft|legacy"
    )]
    ToolMissing {
        /// The program looked for.
        tool: String,
        /// What it is needed for.
        purpose: &'static str,
    },
    /// A tool could not be started.
    #[error("failed to start `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        source: io::Error,
    },
    /// Reading the ruleset failed.
    #[error(
        "failed to read the {family} ruleset: `{command}` exited with {status}: {stderr} \
         (portwarden must run as root, or with CAP_NET_ADMIN, in the network namespace to manage)"
    )]
    Read {
        /// Family.
        family: Family,
        /// The command line.
        command: String,
        /// Exit status.
        status: String,
        /// Its standard error.
        stderr: String,
    },
    /// `iptables-save` printed something this parser does not understand.
    #[error("failed to parse iptables-save output at line {line} ({text:?}): {message}")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
        /// What is wrong with it.
        message: String,
    },
    /// The restore transaction was refused; the family's ruleset is unchanged.
    #[error(
        "the {family} transaction was rejected by `{command}`, so nothing in {family} was \
         changed{failed_line}: {stderr}{earlier}"
    )]
    Restore {
        /// Family.
        family: Family,
        /// The command line.
        command: String,
        /// What it wrote on standard error.
        stderr: String,
        /// ` (line N: TEXT)` when the tool named the failing line of the transaction.
        failed_line: String,
        /// What happened to families written before this one (rolled back or not).
        earlier: String,
    },
    /// The `iptables-restore` child was killed by a signal (the OOM killer, an operator, a
    /// supervisor's timeout) before it exited.
    #[error(
        "the {family} transaction was interrupted: `{command}` was killed by signal {signal}; \
         iptables-restore commits a table in one step, so {family} holds either its previous \
         rules or the new ones, never a mix{earlier}; the next apply (the agent's next \
         reconcile) reads the rules back and finishes the change"
    )]
    Killed {
        /// Family.
        family: Family,
        /// The command line.
        command: String,
        /// The signal number (9 for SIGKILL).
        signal: i32,
        /// Families written before this one (left applied).
        earlier: String,
    },
    /// The transaction succeeded but reading back shows a different state.
    #[error(
        "applied the {family} transaction, but reading it back differs in {pending} place(s), \
         first: {first}; another program may be editing portwarden's chains at the same time, \
         or this iptables version prints rules differently (run `portwarden plan` to see)"
    )]
    Verify {
        /// Family.
        family: Family,
        /// How many adds/deletes remain.
        pending: usize,
        /// The first of them.
        first: String,
    },
    /// `*-save` said it cannot print the filter table (a native nftables rule is in it): its
    /// rules are unknown, so nothing was written.
    #[error(
        "`{command}` cannot print the {family} filter table (it says \"Table `filter' is \
         incompatible, use 'nft' tool\"): nftables' table `{nft_family} filter` holds something \
         added with nftables' own `nft` tool (a meter, a set, another native statement) that \
         iptables can neither show nor safely edit, so portwarden wrote nothing; find the native \
         rule with `nft list table {nft_family} filter` and move it to a table of its own (or \
         delete it), then run portwarden again{hint}"
    )]
    Incompatible {
        /// Family.
        family: Family,
        /// The save command.
        command: String,
        /// nftables' family name of the table: `ip` or `ip6`.
        nft_family: &'static str,
        /// What `reset` can still do, or what it needs.
        hint: &'static str,
    },
    /// A filter table iptables cannot print must be read, and `nft` is not installed.
    #[error(
        "`{command}` cannot print the {family} filter table (a native nftables rule is in it), \
         and nftables' `nft` tool, which can, is not installed (Debian/Ubuntu: apt-get install \
         nftables)"
    )]
    NftMissing {
        /// Family.
        family: Family,
        /// The save command.
        command: String,
    },
    /// `nft -j` printed something that is not the JSON this crate reads.
    #[error("failed to read the output of `{command}`: {message}")]
    NftJson {
        /// The command line.
        command: String,
        /// What is wrong with it.
        message: String,
    },
    /// Removing portwarden's rules from a place the main transactions do not write (the other
    /// backend after a backend switch, or a table only `nft` can edit) failed.
    #[error(
        "removing portwarden's rules from the {backend} backend ({family}) failed{written}: \
         {source}"
    )]
    Cleanup {
        /// The backend cleaned.
        backend: crate::place::Backend,
        /// Family.
        family: Family,
        /// What was written before (`; the legacy backend's rules ... confirmed ...`), or empty.
        written: String,
        /// Why it failed.
        source: Box<Error>,
    },
    /// Places that may hold portwarden's rules could not be read; everything else was done.
    #[error(
        "{done}, but could not read {places}; portwarden's rules there, if any, were left as \
         they are and may still decide packets: fix that and run again"
    )]
    Unread {
        /// What was done where portwarden could read.
        done: String,
        /// The places, each with why.
        places: String,
    },
    /// The network namespace's lock directory or lock file cannot be created or opened.
    #[error(
        "cannot {action} {path}: {source}; every portwarden writer of a network namespace takes \
         a lock there, so that two never mix their rulesets. Run as root, or create the \
         directory for portwarden's user beforehand (systemd: RuntimeDirectory=portwarden with \
         RuntimeDirectoryPreserve=yes, since systemd otherwise deletes it when the agent stops \
         and a writer still holding the old file no longer excludes the next one; or tmpfiles \
         `d /run/portwarden 0770 root portwarden`), or point PORTWARDEN_LOCK_DIR at a \
         directory this user may write — the same one for every portwarden of this host; see \
         docs/least-privilege.md"
    )]
    LockDir {
        /// The directory or file.
        path: std::path::PathBuf,
        /// What failed: `create the directory`, `create`, `open`, `lock`.
        action: &'static str,
        /// Why.
        source: io::Error,
    },
    /// A lock file that portwarden did not make: a link, not a plain file, or a stranger's.
    #[error(
        "refusing the lock file {}: {problem}. portwarden makes its lock files itself (plain \
         files with one link, owned by root, by the lock directory's owner or its group) and \
         never writes through anything else; someone who may write the lock directory put this \
         one there: look at it (`ls -l`), remove it, and keep the directory writable only by \
         root and portwarden's user or group",
        path.display()
    )]
    LockFile {
        /// The lock file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The calling thread's network namespace cannot be told.
    #[error(
        "cannot tell this thread's network namespace from /proc/thread-self/ns/net: {source} \
         (is /proc mounted?)"
    )]
    Namespace {
        /// Why.
        source: io::Error,
    },
    /// The node's own addresses (which the forward path needs) cannot be listed.
    #[error(
        "cannot list this network namespace's addresses with getifaddrs: {source}; without \
         them forwarded ports cannot be governed, so nothing was written"
    )]
    Addresses {
        /// Why.
        source: io::Error,
    },
    /// Another portwarden writer kept this network namespace's writer lock for the whole wait.
    #[error(
        "another portwarden writer is changing this network namespace's rules: {holder} holds \
         {} and did not let go within {waited:?}; nothing was read or written, so the two \
         cannot mix. Let it finish and run again (or wait longer: --wait SECS); if that process \
         is stuck, stop it",
        lock.display()
    )]
    WriterBusy {
        /// The lock file.
        lock: std::path::PathBuf,
        /// Who holds it (pid, command line, since when).
        holder: String,
        /// How long this writer waited.
        waited: std::time::Duration,
    },
    /// Another process kept this network namespace's pending-rollback state file locked for
    /// the whole wait.
    #[error(
        "the pending-rollback state {} is held by {holder} (an apply --confirm-within, a \
         confirm or a rollback in progress) and was not let go within {waited:?}; nothing was \
         changed. Run again once it is done; if that process is stuck, stop it",
        path.display()
    )]
    StateBusy {
        /// The state file.
        path: std::path::PathBuf,
        /// Who holds it.
        holder: String,
        /// How long this process waited.
        waited: std::time::Duration,
    },
    /// The pending-rollback state file cannot be read, parsed or written.
    #[error(
        "the pending-rollback state {} {problem}; it is portwarden's own file (one per network \
         namespace, beside the writer lock): if no `apply --confirm-within` is pending, remove it",
        path.display()
    )]
    StateFile {
        /// The state file.
        path: std::path::PathBuf,
        /// What is wrong (`cannot be parsed: ...`, `cannot be written: ...`).
        problem: String,
    },
    /// Another agent already manages this network namespace.
    #[error(
        "another portwarden agent already manages this network namespace: {holder} (lock {}); \
         two agents would undo each other's rules at every refresh. Stop that agent first, or \
         run this one in another network namespace",
        lock.display()
    )]
    AgentRunning {
        /// The agent lock file.
        lock: std::path::PathBuf,
        /// Who holds it.
        holder: String,
    },
    /// A `--failsafe` list could not be parsed.
    #[error(
        "invalid failsafe port list {input:?}: item {item:?}: {message} (expected e.g. tcp:22,tcp:6443,tcp:2379-2380,udp:68, or none)"
    )]
    Failsafe {
        /// The whole flag value.
        input: String,
        /// The bad item.
        item: String,
        /// What is wrong with it.
        message: String,
    },
    /// A `--backend` value could not be parsed.
    #[error("unknown iptables backend {0:?} (expected nft, legacy or auto)")]
    Backend(String),
}

/// A cause of an [`Error`] that a caller may want to act on (add advice, pick an exit code)
/// without matching the message text; see [`Error::kind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An iptables tool could not open the xtables lock file (`Fatal: can't open lock file
    /// /run/xtables.lock: Permission denied`): under the legacy backend every iptables writer
    /// serialises on it, and it is usually root's with mode 0600.
    XtablesLockDenied,
    /// Anything else.
    Other,
}

impl Error {
    /// What caused this error, as far as a caller may act on it. An error that wraps others
    /// ([`Error::Cleanup`], or [`Error::Unread`] naming places that could not be read) has the
    /// kind of what it wraps.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Read { stderr, .. } | Error::Restore { stderr, .. } => {
                kind_of_tool_output(stderr)
            }
            Error::Cleanup { source, .. } => source.kind(),
            // The places are each with its error's text (the errors themselves are not kept).
            Error::Unread { places, .. } => kind_of_tool_output(places),
            _ => ErrorKind::Other,
        }
    }
}

/// The kind of failure an iptables tool's standard error reports.
fn kind_of_tool_output(stderr: &str) -> ErrorKind {
    // iptables' xshared.c: "Fatal: can't open lock file %s: %s" with strerror(EACCES).
    if stderr.contains("lock file") && stderr.contains("Permission denied") {
        ErrorKind::XtablesLockDenied
    } else {
        ErrorKind::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unopenable_xtables_lock_is_told_by_kind() {
        let restore = |stderr: &str| Error::Restore {
            family: Family::Ipv4,
            command: "iptables-legacy-restore --noflush --wait=10".into(),
            stderr: stderr.into(),
            failed_line: String::new(),
            earlier: String::new(),
        };
        let denied = restore("Fatal: can't open lock file /run/xtables.lock: Permission denied");
        assert_eq!(denied.kind(), ErrorKind::XtablesLockDenied);
        assert_eq!(
            restore("iptables-restore: line 3 failed").kind(),
            ErrorKind::Other
        );
        let wrapped = Error::Cleanup {
            backend: crate::place::Backend::Legacy,
            family: Family::Ipv4,
            written: String::new(),
            source: Box::new(denied),
        };
        assert_eq!(wrapped.kind(), ErrorKind::XtablesLockDenied);
        assert_eq!(Error::Backend("x".into()).kind(), ErrorKind::Other);
    }
}
