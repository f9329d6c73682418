//! portwarden's policy layer: documents, validation with located errors, and the precedence
//! model. Pure: no I/O beyond reading the files it is asked to load.
//!
//! The pipeline is documents → intent → rules, each step a pure function:
//!
//! 1. [`yaml`] parses a file into located trees (bounded: alias bombs and deep nesting are
//!    refused), [`decode`] turns each tree into a wire [`document`] and collects every structural
//!    problem, [`validate`] checks meaning (ports, CIDRs, selectors, names) and yields
//!    [`intent`]; [`load`] does this for files and directories and reports every problem as a
//!    [`Diagnostic`] (`FILE:LINE:COL: error: ...` with a snippet).
//! 2. [`model`] decides which entry governs a packet (precedence: priority, source prefix, port
//!    range width, restrictiveness) and compiles each node's first-match rule list, which the
//!    netfilter crate renders.
//!
//! A key design decision is that documents are decoded from a located tree by hand rather than
//! by serde directly: serde stops at the first error and loses positions once a value is typed,
//! while operators expect every mistake in a file at once, each pointing at its token.
//!
//! # Layout
//!
//! * [`document`] — wire types (`PortPolicy`, `Inventory`), shared with the Kubernetes CRDs.
//! * [`yaml`], [`decode`], [`validate`], [`load`], [`diagnostic`] — reading and checking.
//! * [`ports`] — port ranges and port-list syntax.
//! * [`expiry`] — expiry instants (RFC 3339 in, seconds since the epoch, `--datestop` out).
//! * [`intent`] — checked policies, entries, nodes; label selection.
//! * [`model`] — precedence, per-packet evaluation, compiled rule order.
//! * [`text`] — control characters of untrusted text escaped for terminals.
//! * `fuzzing` — the checks of the fuzz targets (`fuzz/`) and the corpus replay test; built
//!   for tests and with the `fuzzing` feature only.

pub mod decode;
pub mod diagnostic;
pub mod document;
pub mod expiry;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod intent;
pub mod load;
pub mod model;
pub mod ports;
pub mod text;
pub mod validate;
pub mod yaml;

pub use diagnostic::{Diagnostic, Severity};
pub use document::{
    API_VERSION, Inventory, InventoryNode, LabelSelector, PortEntry, PortPolicy, PortPolicySpec,
    Protocol, State, Unlisted,
};
pub use expiry::Timestamp;
pub use intent::{Entry, Node, Policy, selects};
pub use load::{Loaded, Problems, load_paths, load_paths_with_warnings, load_source};
pub use model::{NodeIntent, PolicySet, Rule};
pub use ports::PortRange;
