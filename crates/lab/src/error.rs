//! The lab's error type: every variant names the step and the namespace or command involved.

use std::io;

/// What went wrong while building, using or tearing down a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// Labs need root (CAP_NET_ADMIN and CAP_SYS_ADMIN) to create namespaces.
    #[error("network-namespace labs need root (running as uid {uid}); rerun as root")]
    NotRoot {
        /// The effective user id we run as.
        uid: u32,
    },
    /// A command-line tool the lab needs is not installed.
    #[error("`{tool}` not found on PATH; install it (apt-get install {package})")]
    ToolMissing {
        /// The missing program.
        tool: String,
        /// The Debian package that provides it.
        package: String,
    },
    /// A command could not be started at all.
    #[error("failed to start `{command}`: {source}")]
    Spawn {
        /// The command line, as typed in a shell.
        command: String,
        /// Why it could not start.
        source: io::Error,
    },
    /// A command ran and exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed {
        /// The command line, as typed in a shell.
        command: String,
        /// Its exit status.
        status: String,
        /// What it wrote on standard error (trimmed).
        stderr: String,
    },
    /// The calling thread could not join a namespace.
    #[error("failed to enter network namespace {namespace}: {source}")]
    Enter {
        /// The namespace name (under /run/netns).
        namespace: String,
        /// The error from open(2) or setns(2).
        source: io::Error,
    },
    /// A socket for a listener could not be created or bound inside a namespace.
    #[error("failed to set up {what} in namespace {namespace}: {source}")]
    Socket {
        /// Which listener, e.g. "tcp listener on port 80".
        what: String,
        /// The namespace name.
        namespace: String,
        /// The socket error.
        source: io::Error,
    },
    /// A closure run inside a namespace panicked.
    #[error("thread running inside namespace {namespace} panicked")]
    ThreadPanicked {
        /// The namespace name.
        namespace: String,
    },
    /// A condition the lab waited for did not come true in time.
    #[error("timed out after {seconds} s waiting for {what}: {last}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The deadline, in seconds.
        seconds: u64,
        /// The last failure seen while polling.
        last: String,
    },
    /// A lab Docker engine could not be started, used or stopped.
    #[error(
        "lab Docker engine: {what}; its log {log} (removed with the engine) ended with:\n{tail}"
    )]
    Docker {
        /// What went wrong.
        what: String,
        /// The engine's log file.
        log: String,
        /// The last lines of that log.
        tail: String,
    },
    /// The builder was asked for something the lab cannot do.
    #[error("invalid lab: {0}")]
    Invalid(String),
}
