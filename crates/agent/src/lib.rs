//! portwarden's agent runtime: what keeps a node converged and serves what it knows, for both
//! the standalone agent (policy files) and the Kubernetes agent (`portwarden-kube`), and the
//! HTTP server and signals of every long-running command.
//!
//! A key design decision is that there is one schedule ([`schedule::run`]): repair every
//! `refresh`, scan peers every `scan_interval`, heartbeat, wait for messages. The agents differ
//! only in their [`schedule::Driver`] — where the intent comes from ([`Source`]), what a
//! message means, whom a scan reports to — so a fix to the schedule is a fix to both.
//!
//! # Layout
//!
//! * [`config`] — [`AgentConfig`] and the policy [`Source`] (files, or a cluster).
//! * [`state`] — what the loop knows and shares with the HTTP handlers ([`Shared`]).
//! * [`converge`] — one reconcile, and why it runs ([`Reason`]).
//! * [`counters`] — per-entry packet counters at each refresh, and when each entry last matched.
//! * [`scan`] — the peer scans.
//! * [`schedule`] — the one loop both agents drive.
//! * [`debounce`] — when the standalone agent loads changed files.
//! * [`standalone`] — the standalone agent: the file source and [`standalone::run`].
//! * [`process`] — the process around a loop: agent lock, runtime, signals, HTTP server.
//! * [`http`] — the agent's endpoints; [`metrics`] — the agent's and the HTTP server's metrics;
//!   [`page`] — the HTML page at `/`.
//! * [`server`] — the HTTP server of every long-running command (connection caps, timeouts,
//!   descriptors kept for the reconcile path).
//! * [`lifecycle`] — [`lifecycle::shutdown_signal`] and [`lifecycle::backoff`], shared with the
//!   controller.

pub mod config;
pub mod converge;
pub mod counters;
pub mod debounce;
pub mod http;
pub mod lifecycle;
pub mod metrics;
pub mod page;
pub mod process;
pub mod scan;
pub mod schedule;
pub mod server;
pub mod standalone;
pub mod state;

pub use config::{AgentConfig, Files, Source};
pub use converge::Reason;
pub use state::Shared;
