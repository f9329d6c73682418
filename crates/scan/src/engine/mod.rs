//! The scan engines: the raw-socket engine (SYN, ACK, UDP; `raw`) and the connect engine
//! (`connect`), both on the same per-port state (`shared`), the same choice of the next probe
//! (`select`), the same rate caps (`pace`) and the same confirmation phase (`confirm`).
//!
//! # Layout
//!
//! * `plan` — [`Plan`], what a scan asks of an engine, and [`Outcome`], what it gives back.
//! * `shared` — `Shared`: per-port results and tries, timing, counters; what a reply, an
//!   expiry or a send does to them.
//! * `select` — which probe goes next (a retransmission, a first probe, in that order), and a
//!   raw sender's outstanding probes (timeouts, presumed loss).
//! * `pace` — the rate caps (`Timing::max_rate` in total, `max_rate_per_target` per target),
//!   one token-bucket implementation for both.
//! * `fresh` — dealing first probes out to the send threads in chunks.
//! * `tail` — the tail probe that ends a TCP scan's first pass one timeout sooner.
//! * `raw` — the raw engine: send threads, the receive thread, raw confirmation rounds.
//! * `connect` — the connect engine: non-blocking `connect()` attempts collected by `poll(2)`.
//! * `confirm` — after the first pass of a UDP or connect scan: proving silent ports silent on
//!   targets that rate-limit their ICMP errors, at the rate they answer.
//!
//! Why this split: both engines ask the same questions of every probe — which one goes next,
//! may it leave now, what an answer or a timeout means for its port — and those answers live
//! once, in `select`, `pace` and `shared`. What differs is only how a probe reaches the wire
//! and how its answer comes back (send threads and a packet socket, or `poll(2)` over
//! sockets), and that is all an engine module holds. The probes themselves stay one file per
//! kind under `probe/`.
//!
//! # Design
//!
//! Every (target, port) pair has an index `host * nports + port_position`, and a few small
//! atomics per index: the merged result (state and reason), the latest try number with an
//! "outstanding" bit, and send times. Because a reply names its target, port and try number
//! (see `probe`), the raw engine's receive thread turns a packet into an index with two array
//! reads — no search through outstanding probes, no lock on the hot path except the small
//! timing state. It drains the packet socket in batches without blocking on it, so senders
//! never pay a wake-up per reply.
//!
//! Send threads take fresh probes in chunks from one shared cursor (`fresh`), in port-major
//! order (so several targets are interleaved), and send them in batches (one sendmmsg(2) per
//! batch); each owns the retransmissions and FIFOs of outstanding probes of what it sent.
//! Probes leave the congestion window when answered (the receive thread clears the
//! outstanding bit), when they time out, or when they are presumed lost because a
//! probe sent noticeably later was already answered (TCP's RACK idea) — the send thread clears
//! the bit then; exactly one side wins the compare-and-swap, so the in-flight count stays exact
//! without a shared queue. Presumed loss only speeds up retransmission: a port is called silent
//! only after its last try has waited the full nmap timeout, so the verdicts are nmap's.
//!
//! A silent probe is retransmitted until nmap's allowance (`allowedTryno`, which grows once a
//! retransmission has been answered, i.e. once loss is proven) is used up; then the port
//! gets the scan's silent state (filtered, or open|filtered for UDP). Ports called silent
//! before loss showed up on their host are reopened for the extra tries before the scan ends.

mod confirm;
mod connect;
mod fresh;
mod pace;
mod plan;
mod raw;
mod select;
mod shared;
mod tail;

pub(crate) use connect::run as run_connect;
pub(crate) use plan::{Outcome, Plan};
pub(crate) use raw::run as run_raw;
