//! portwarden's netfilter layer: makes a node's iptables rules say exactly what its compiled
//! intent says, and nothing else of the node's rules changes.
//!
//! The pipeline is pure until the last step, like the policy crate's:
//!
//! 1. [`render()`] turns a [`NodeIntent`](portwarden_policy::NodeIntent) and the [`Failsafe`]
//!    ports into the [`Desired`] chains of each family, in the exact text `iptables-save`
//!    prints, and reports [`Conflict`]s (entries that would block a failsafe port).
//! 2. [`Ruleset::parse`] reads `iptables-save` output of either backend.
//! 3. [`diff()`] / [`Plan::compute`] compare the two for portwarden's chains only and produce a
//!    [`Plan`]: the rules to add and delete, the `iptables-restore --noflush` transaction per
//!    family, and foreign rules that [shadow](Shadowing) an entry.
//! 4. [`Netfilter`] is the I/O edge: detects the backend, reads, applies one transaction per
//!    family, reads back to confirm, resets. [`Netfilter::converge`] and [`Netfilter::reset`]
//!    do their read, plan, write and read-back under the namespace's [`writer`] lock, so two
//!    portwarden processes never mix their rulesets.
//!
//! A key design decision is that desired rules are rendered in `iptables-save`'s own canonical
//! form and compared token by token with what the kernel reports. That makes "converged" a
//! plain equality — no write at all when nothing changed, which matters for an agent that
//! reconciles every few seconds — and makes every difference (a deleted rule, an edited chain,
//! a jump pushed down by another program) visible as drift. The chain layout that keeps a
//! one-entry change to a one-chain rewrite is described in [`chains`].
//!
//! # Ownership
//!
//! portwarden owns exactly what it writes: the filter-table chains whose names its grammar
//! generates (`PORTWARDEN-INPUT`, `PORTWARDEN-TCP-0`, `PORTWARDEN-TCP-0-255`, ...; IPv4 and
//! IPv6; the forward path's `PORTWARDEN-FORWARD`, `PORTWARDEN-FPORTS`, `PORTWARDEN-FTCP-0`, ...)
//! and its two jumps, the `INPUT` rule to `PORTWARDEN-INPUT` and the `FORWARD` rule to
//! `PORTWARDEN-FORWARD`, each carrying its comment — see
//! [`chains`]. It never edits, reorders or deletes anything else, also not what merely looks
//! like its own (a chain `PORTWARDEN-FOO`, a foreign jump to `PORTWARDEN-INPUT`): plans report
//! those as [`Lookalike`]s. It finds its rules in either iptables backend and moves them to the
//! one in use ([`backend`]); it refuses a table `iptables-save` cannot print ([`save`]). See
//! [`Netfilter::apply`] for the exact contract.
//!
//! One exception: in a table only `nft` can list, `nft` does not show an iptables comment, so
//! `reset` takes the only commented `INPUT` rule to `PORTWARDEN-INPUT` for portwarden's jump
//! even when it is a foreign one (portwarden's being gone); with several it deletes none
//! ([`native`]).
//!
//! # Layout
//!
//! * `place` — [`Family`] and [`Backend`]: the address family and iptables backend of a table.
//! * [`chains`] — every chain name and comment; ownership test; bucket layout; the two paths.
//! * [`addresses`] — the node's own addresses, for the forward path.
//! * [`failsafe`] — failsafe ports and the `--failsafe` syntax.
//! * [`forwarding`] — which node ports the `nat` table DNATs elsewhere, for explanations (pure).
//! * [`mod@render`] — intent → desired chains (pure).
//! * [`save`] — `iptables-save` parser, argument quoting (pure).
//! * [`mod@diff`] — desired vs current → per-family change and restore input (pure).
//! * [`counters`] — the kernel's rule counters per policy entry and family, and whether each
//!   entry's rules are in place (pure; read with [`Netfilter::read_counters`]).
//! * `foreign_rule` — what a foreign iptables rule matches and decides, for the shadowing
//!   [`mod@diff`] reports (pure).
//! * [`exposure`] — what a scanner sees change when a plan is applied: the decisions of
//!   portwarden's `INPUT` path read back from a filter table, now and as rendered, compared
//!   per port range and source class (pure).
//! * [`plan`] — [`Plan`], the serializable result.
//! * [`backend`] — nft vs legacy detection, tool lookup.
//! * [`lockwait`] — is our `iptables-restore` waiting for the xtables lock, and for whom.
//! * [`native`] — removing portwarden's objects with `nft` from a table iptables cannot print.
//! * [`foreign_nft`] — the other owners of the packet path: native nftables tables that are not
//!   iptables-nft's (firewalld, kube-proxy's and Docker's nftables modes, hand-written tables),
//!   their base chains, and what each decides for a new connection to a port (pure, and
//!   [`foreign_nft::read`]).
//! * [`mixed`] — both iptables backends holding rules (pure).
//! * [`writer`] — one writer per network namespace at a time (a lock held across read, plan,
//!   write and read-back), and one agent.
//! * [`rollback`] — the pending rollback of `apply --confirm-within`: its state file beside the
//!   writer lock (portwarden's previous chains and jumps, the deadline, the outcome).
//! * `netfilter` — [`Netfilter`]: read, apply, reset (I/O).
//! * `error` — [`Error`], and the [`ErrorKind`] a caller may act on.
//! * `fuzzing` — the checks of the `iptables_save` fuzz target and its corpus replay (feature
//!   `fuzzing`; not part of the API).
//! * `ser` — how policy types (names, protocols, states, port ranges) are written in plans'
//!   JSON.

pub mod addresses;
pub mod backend;
pub mod chains;
pub mod counters;
pub mod diff;
mod error;
pub mod exposure;
pub mod failsafe;
pub mod foreign_nft;
mod foreign_rule;
pub mod forwarding;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod lockwait;
pub mod mixed;
pub mod native;
mod netfilter;
mod place;
pub mod plan;
pub mod render;
pub mod rollback;
pub mod save;
mod ser;
pub mod writer;

pub use backend::{Backend, BackendChoice, Detection};
pub use counters::{EntryCounters, entry_counters};
pub use diff::{
    DriftKind, EntryRef, FamilyPlan, JumpState, Kept, Lookalike, LookalikeKind, Shadowing, diff,
};
pub use error::{Error, ErrorKind};
pub use exposure::{Exposure, ExposureChange};
pub use failsafe::{DEFAULT_FAILSAFE, Failsafe, FailsafePort};
pub use foreign_nft::{
    ForeignDecision, ForeignFinding, ForeignRead, ForeignTables, Hook, Packet, Verdict,
};
pub use mixed::{BackendHolding, HeldChain, MixedBackends};
pub use netfilter::{Applied, Netfilter, Options};
pub use plan::{Cleanup, Plan, Unread, Via};
pub use render::{Conflict, Desired, Family, Rendered, render};
pub use save::Ruleset;
