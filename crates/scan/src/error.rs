//! The scanner's error type. Messages say what failed, where, and what to do about it.

use std::io;

/// Why a scan could not run.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// A port list is not valid nmap syntax.
    #[error("invalid port list {spec:?}: item {item:?}: {why}")]
    PortSpec {
        /// The whole specification.
        spec: String,
        /// The offending item.
        item: String,
        /// What is wrong with it.
        why: String,
    },
    /// Raw sockets are not allowed (not root / no CAP_NET_RAW).
    #[error(
        "{kind} scan needs raw sockets ({source}); run as root or with CAP_NET_RAW, \
         or use a connect scan, which needs no privileges"
    )]
    RawSocketDenied {
        /// The scan kind that needs them, e.g. "syn".
        kind: &'static str,
        /// The socket error (EPERM).
        source: io::Error,
    },
    /// A socket operation failed.
    #[error("{what} failed: {source}")]
    Socket {
        /// Which operation, e.g. "opening the raw IPv6 send socket".
        what: String,
        /// The OS error.
        source: io::Error,
    },
    /// No source address could be found for a target (no route to it).
    #[error(
        "no route to {target}: cannot pick a source address ({source}); check the target address and routes"
    )]
    NoRoute {
        /// The target address.
        target: std::net::IpAddr,
        /// The error from the routing lookup.
        source: io::Error,
    },
    /// A target is not allowed by the scan's [`TargetPolicy`](crate::TargetPolicy).
    #[error("refusing to scan {target}: {why}; nothing was sent (allow it in ScanConfig::targets)")]
    TargetRefused {
        /// The refused address.
        target: std::net::IpAddr,
        /// Why it is not allowed.
        why: String,
    },
    /// The configuration is inconsistent.
    #[error("invalid scan configuration: {0}")]
    Config(String),
    /// A scan thread panicked (a bug).
    #[error("scan thread {0} panicked")]
    ThreadPanicked(&'static str),
    /// The engine broke one of its own promises (a bug); the scan's results are not used.
    #[error(
        "internal error in the scanner: {0}; nothing of this scan is reported (please report this)"
    )]
    Internal(String),
}
