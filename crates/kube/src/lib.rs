//! portwarden on Kubernetes: the `PortPolicy` and `PortReport` custom resources, the agent's
//! cluster mode and the leader-elected controller.
//!
//! A key design decision is that everything that decides something is a pure function over
//! snapshots of the watched objects, and the I/O around it is thin and scripted in tests:
//!
//! * the agent's [`agent::plan_node`] turns (policies, nodes, this node) into the node's intent,
//!   its assigned peers and their intents; [`report::build`] turns a drift report into a bounded
//!   `PortReport`; [`agent::apply_report`] writes it by server-side apply;
//! * the controller's [`aggregate::status`] turns (policy, nodes, reports) into the policy's
//!   status, and [`aggregate::events`] the transitions into Events; [`controller::reconcile`]
//!   patches the status subresource and publishes the Events.
//!
//! Watching (list, watch, restarts with backoff, relists after `410 Gone`) is kube-runtime's
//! `watcher` and `reflector`; leader election is `kube-lease-manager` on a `Lease`.
//!
//! # RBAC
//!
//! What each side needs (the chart's ClusterRoles):
//!
//! * agent: `get`, `list`, `watch` on `portpolicies.portwarden.io` and `nodes`; `get`, `create`,
//!   `patch` on `portreports.portwarden.io` (server-side apply creates or patches).
//! * controller: `get`, `list`, `watch` on `portpolicies`, `portreports` and `nodes` (metadata);
//!   `patch` on `portpolicies/status`; `create`, `patch` on `events.k8s.io` `events` in
//!   `default` (where Events of cluster-scoped objects live); `get`, `create`, `patch`,
//!   `update` on `coordination.k8s.io` `leases` in its own namespace.
//!
//! # Layout
//!
//! * [`crd`] — the resources, their schema (with CEL rules) and `portwarden crd`'s output.
//! * [`policy`] — a `PortPolicy` object as a document, validated by the files' rules.
//! * [`assign`] — which peers each node scans.
//! * [`agent`] — `portwarden agent --kube`.
//! * [`report`] — drift report → bounded `PortReport`.
//! * [`conditions`] — conditions per the Kubernetes API conventions.
//! * [`expired`] — which entries have expired (status, reports) and when the next one will.
//! * [`aggregate`] — reports → policy status and Events.
//! * [`controller`] — `portwarden controller`; [`metrics`] — its metrics.
//! * `error` — the crate's [`Error`]; `fixtures` (tests only) — the objects the tests script.

pub mod agent;
pub mod aggregate;
pub mod assign;
pub mod conditions;
pub mod controller;
pub mod crd;
mod error;
pub mod expired;
pub mod metrics;
pub mod policy;
pub mod report;

#[cfg(test)]
mod fixtures;

pub use crd::{
    PolicySpec, PortPolicy, PortPolicyStatus, PortReport, PortReportSpec, crds, crds_yaml,
};
pub use error::Error;

/// The field manager of the agents' server-side applies.
pub const AGENT_MANAGER: &str = "portwarden-agent";

/// The field manager of the controller's status applies.
pub const CONTROLLER_MANAGER: &str = "portwarden-controller";
