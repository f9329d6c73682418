//! portwarden's verdicts: from intent and scans to drift reports with causes. The agents that
//! run this loop on a node are `portwarden-agent`'s.
//!
//! A key design decision is that the expected state of a port is evaluated *per vantage*: a
//! scan from source V is compared with the node's first-match rules evaluated for V, so
//! source-specific entries (close 80 to one attacker, open 9090 to the bastion) are verified
//! exactly, from wherever the scan runs.
//!
//! # Layout
//!
//! * [`expect`] — expected state per (node, vantage, port).
//! * [`verdict`] — observed nmap state vs intended state → in sync / drift / indeterminate.
//! * [`causes`] — why a port drifted, refined by the agent's [`inside`] view.
//! * [`listeners`] — listening sockets from `/proc/net`.
//! * [`report`] — the report shape and its table, JSON, JUnit and nmap XML outputs.
//! * [`html`] — the report as one self-contained HTML page.
//! * [`verify`] — scan, compare, explain: the `verify` command's engine.
//! * [`ledger`] — the agent's peer scans: which UDP ports each re-checks, and the last
//!   confirmed observation of every one.
//! * [`inside`] — the inside view an agent serves and `verify` asks for, and the client that
//!   asks for it.

pub mod causes;
pub mod expect;
pub mod html;
pub mod inside;
pub mod ledger;
pub mod listeners;
pub mod report;
pub mod verdict;
pub mod verify;

/// The agent's default HTTP port (metrics, health, inside view, report).
pub const DEFAULT_AGENT_PORT: u16 = 9750;

pub use inside::InsideView;
pub use ledger::Ledger;
pub use report::{Report, Row, Summary};
pub use verdict::Verdict;
pub use verify::{Target, Verification, VerifyOptions, compare, verify, verify_incremental};
