//! nmap-identical port scanning for portwarden, usable on its own: no policy knowledge.
//!
//! ```no_run
//! use portwarden_scan::{PortList, ScanConfig, ScanKind, Scanner, TargetPolicy, report};
//!
//! let ports: PortList = "22,80,8000-8100".parse()?;
//! let targets = ["10.213.0.11".parse()?];
//! // Only these addresses may be probed (the default allows loopback only).
//! let config = ScanConfig { targets: TargetPolicy::only(targets), ..ScanConfig::default() };
//! let report = Scanner::new(config)
//!     .on_progress(|p| eprintln!("{}/{}", p.done, p.total))
//!     .scan(&targets, &ports, ScanKind::Syn)?;
//! print!("{}", report::to_table(&report));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A key design decision is that **classification is copied from nmap, not re-derived**: the
//! tables in [`classify`] follow `get_pcap_result()` (`scan_engine_raw.cc`),
//! `handleConnectResult()` (`scan_engine_connect.cc`) and `ultrascan_port_pspec_update()`
//! (`scan_engine.cc`) branch by branch, and the integration tests run the real `nmap` beside
//! us in a namespace lab and require the same state on every port.
//!
//! The second is that **speed comes from not looking things up**: each probe carries its
//! identity (target, port, try number) in the packet, so the receive thread maps a reply to a
//! flat array slot in O(1), while the send threads (one per CPU) pace themselves with nmap's
//! RTT estimator and a congestion window that grows until loss appears — loss the sending
//! rate causes, not the path's own random loss, which retransmission handles (see `engine`
//! and [`timing`]). Figures and command lines: `crates/scan/BENCHMARKS.md`.
//!
//! # API at a glance
//!
//! ```text
//! PortList::parse("22,80,8000-8100" | "1-1024" | "-") -> Result<PortList, ScanError>
//! Scanner::new(ScanConfig { timing, source_v4, source_v6, source_port, targets })
//!     .on_progress(|p: &Progress| ...)              done/total/elapsed/eta()
//!     .scan(&[IpAddr], &PortList, ScanKind::{Syn, Connect, Ack, Udp})
//!         -> Result<ScanReport, ScanError>          hosts[] {address, ports[] {port, protocol,
//!                                                   state, reason}, error (unroutable)}
//! report::to_json / to_json_pretty / to_nmap_xml(&report, args) / to_table
//! classify::{classify, merge, silent}               nmap's tables as pure functions
//! source_for(IpAddr) -> Result<IpAddr>              the source address a target is reached from
//! estimate(kind, &[IpAddr], nports, &Timing) -> Option<Estimate>  a rough duration, before a scan
//! ```
//!
//! # Layout
//!
//! * [`ports`] — nmap's `-p` syntax ([`PortList`]).
//! * [`model`] — [`ScanKind`], [`PortState`], [`Reason`], [`ScanReport`], [`Progress`].
//! * [`classify`] — reply → (state, reason) and conflict rules; pure, unit-tested.
//! * `probe/` — one module per probe kind: SYN, ACK and UDP packets behind an enum, and the
//!   connect probe (one non-blocking `connect()`).
//! * `packet` — building probes with `pnet`, decoding replies.
//! * `fuzzing` — the checks of the fuzz targets (`fuzz/`) and the corpus replay test; built
//!   for tests and with the `fuzzing` feature only.
//! * `net` — raw send sockets (batched sendmmsg), the packet receive socket, source selection.
//! * `engine/` — the two engines on one per-port state:
//!   * `raw` (SYN, ACK, UDP: send threads and a receive thread) and `connect` (`poll(2)` over
//!     connect attempts);
//!   * `plan` — what a scan asks of an engine and what it gives back;
//!   * `shared` — per-port results, tries and timing, and what replies and expiries do to them;
//!   * `select` — the next probe (retransmission, then first probe) and outstanding probes;
//!   * `pace` — the rate caps, total and per target, as one token bucket;
//!   * `fresh` — dealing first probes out to the send threads in chunks;
//!   * `tail` — the tail probe that ends a TCP scan's first pass one timeout sooner;
//!   * `confirm` — after the first pass of a UDP or connect scan: proving silent ports silent
//!     on targets that rate-limit their ICMP errors, at the rate they answer.
//! * [`timing`] — [`Timing`] knobs, RTT estimator, congestion window, the token bucket
//!   ([`timing::TargetPacer`]) and [`estimate`].
//! * [`report`] — JSON, nmap XML and table output.
//! * `scanner` — [`Scanner`], [`ScanConfig`].
//! * `error` — [`ScanError`].
//! * `targets` — [`TargetPolicy`]: which addresses a scan may probe (loopback only unless
//!   told), checked by [`Scanner::scan`] before any socket is opened.
//!
//! # Privileges and namespaces
//!
//! SYN, ACK and UDP scans need CAP_NET_RAW; without it [`Scanner::scan`] returns
//! [`ScanError::RawSocketDenied`], and [`ScanKind::Connect`] works unprivileged. All sockets
//! are opened by the calling thread, so a scan runs in that thread's network namespace.

pub mod classify;
mod engine;
mod error;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod model;
mod net;
mod packet;
pub mod ports;
mod probe;
pub mod report;
mod scanner;
mod targets;
pub mod timing;

pub use error::ScanError;
pub use model::{
    HostReport, PortResult, PortState, Progress, ProgressFn, Protocol, RateLimit, Reason, ScanKind,
    ScanReport, ScanStats,
};
pub use net::source_for;
pub use ports::PortList;
pub use scanner::{ScanConfig, Scanner};
pub use targets::TargetPolicy;
pub use timing::{Bound, Estimate, Timing, estimate};
