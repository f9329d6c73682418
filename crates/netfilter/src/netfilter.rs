//! [`Netfilter`]: the I/O edge. Reads with `iptables-save`, writes with one
//! `iptables-restore --noflush` transaction per family, reads back to confirm.
//!
//! Two places outside the chosen backend's readable filter tables are handled here too: the
//! other backend, when portwarden's rules are there (a backend switch, see [`crate::backend`]),
//! and a filter table `iptables-save` cannot print (see [`crate::save`]): `plan`/`apply` refuse
//! it ([`Error::Incompatible`]), `reset` removes portwarden's objects from it with `nft`
//! ([`crate::native`]).

use std::io::Write as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use portwarden_policy::NodeIntent;
use serde::Serialize;
use tracing::{info, warn};

use crate::Error;
use crate::backend::{self, Backend, BackendChoice, Detection, Tools};
use crate::diff::{DriftKind, FamilyPlan, Kept, Lookalike, diff};
use crate::failsafe::Failsafe;
use crate::foreign_nft::{self, ForeignDecision, ForeignRead, Packet};
use crate::lockwait;
use crate::mixed::{BackendHolding, MixedBackends};
use crate::native;
use crate::plan::{Cleanup, Plan, Unread, Via};
use crate::render::{Desired, Family, Rendered};
use crate::save::Ruleset;
use crate::writer::{self, Lock};

/// How long an `iptables-restore` child runs before the lock table is consulted (most
/// transactions are done by then and pay nothing for the check).
const LOCK_CHECK: Duration = Duration::from_millis(200);

/// How to drive netfilter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Backend: detect, or a fixed one.
    pub backend: BackendChoice,
    /// Families to manage (both by default).
    pub families: Vec<Family>,
    /// Seconds to wait for a lock held by another program: the namespace's portwarden writer
    /// lock (see [`writer`]), and the xtables lock `iptables-restore` waits for (legacy).
    pub lock_wait_secs: u32,
    /// Look for the iptables tools only in this directory (default: PATH, then /usr/sbin,
    /// /sbin, /usr/local/sbin).
    pub tool_dir: Option<PathBuf>,
    /// Also look at the packet path's other owners in every plan ([`Netfilter::plan`],
    /// [`Netfilter::converge`]): native nftables tables ([`crate::foreign_nft`]: one
    /// `nft -j list tables`, plus one `nft -j list table` per foreign table) and the rules of
    /// the iptables backend not in use ([`crate::mixed`]: one `*-save` of every table per
    /// family and backend). Off by default, so an agent's no-op refresh reads only its own
    /// tables; `portwarden plan` and `apply` turn it on.
    pub owners: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            backend: BackendChoice::Auto,
            families: Family::ALL.to_vec(),
            lock_wait_secs: 10,
            tool_dir: None,
            owners: false,
        }
    }
}

/// The result of [`Netfilter::apply`] or [`Netfilter::reset`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Applied {
    /// `iptables-restore` transactions run (0 when already converged).
    pub transactions: usize,
    /// Rules and chains added or deleted.
    pub changes: usize,
    /// Families written, in order.
    pub families: Vec<Family>,
    /// Other backends portwarden's rules were removed from (a move after a backend switch, or
    /// a reset of both).
    pub other_backends: Vec<Backend>,
}

/// The last rendering, reused while the intent and failsafe list stay the same.
#[derive(Debug)]
struct Memo {
    intent: NodeIntent,
    failsafe: Failsafe,
    host: crate::addresses::Host,
    rendered: Arc<Rendered>,
}

/// A handle on the netfilter of the network namespace this process (thread) runs in.
///
/// The handle remembers its last rendering: an agent that plans the same intent every refresh
/// only reads and compares (rendering 10,000 entries costs about as much as reading them).
#[derive(Clone, Debug)]
pub struct Netfilter {
    detection: Detection,
    families: Vec<(Family, Tools)>,
    /// The other backend's tools, for the managed families whose tools are installed.
    other: Vec<(Family, Tools)>,
    /// Whether the other backend held portwarden's rules at the last look: only then does
    /// [`Netfilter::plan`] read it (cleared once nothing of ours is there), so the agent's no-op
    /// refresh reads one backend.
    stray: Arc<AtomicBool>,
    /// nftables' `nft`, for filter tables iptables cannot print (reset only).
    nft: Option<PathBuf>,
    lock_wait_secs: u32,
    /// [`Options::owners`].
    owners: bool,
    /// Whether plans carry the exposure diff ([`Netfilter::with_exposure`]).
    exposure: bool,
    keep_read: bool,
    memo: Arc<Mutex<Option<Memo>>>,
}

impl Netfilter {
    /// Picks the backend (see [`backend::detect`]) and finds its tools for every family.
    /// IPv6 is left out (and [`Detection::reason`] says so) when the kernel has IPv6 disabled.
    ///
    /// # Errors
    /// [`Error::ToolMissing`] when a needed `*-save` or `*-restore` program is not installed:
    /// portwarden refuses to run rather than fall back to per-rule `iptables` calls.
    pub fn detect(options: &Options) -> Result<Netfilter, Error> {
        Netfilter::detect_with(
            options,
            backend::detect(options.backend, options.tool_dir.as_deref())?,
        )
    }

    /// [`Netfilter::detect`] and [`Netfilter::read_counters`] at once: with automatic backend
    /// detection, which reads every table of both backends anyway, the chosen backend's filter
    /// tables are taken from those reads (made with counters) instead of being read again —
    /// what a one-shot command such as `portwarden status` wants. With a fixed backend the
    /// families are read as [`Netfilter::read_counters`] does.
    ///
    /// # Errors
    /// As [`Netfilter::detect`] and [`Netfilter::read_counters`].
    pub fn detect_reading_counters(
        options: &Options,
    ) -> Result<(Netfilter, Vec<(Family, Ruleset)>), Error> {
        let (detection, mut read) =
            backend::detect_reading(options.backend, options.tool_dir.as_deref())?;
        let nf = Netfilter::detect_with(options, detection)?;
        let mut out = Vec::new();
        for family in nf.families() {
            // A family detection could not read (its tool failed there): read them all now.
            let Some(i) = read.iter().position(|(f, _)| *f == family) else {
                let current = nf.read_counters()?;
                return Ok((nf, current));
            };
            let (_, rs) = read.swap_remove(i);
            if let Some(t) = nf.tools(family)
                && rs.is_incompatible("filter")
            {
                return Err(nf.incompatible(family, t));
            }
            out.push((family, rs));
        }
        Ok((nf, out))
    }

    /// The handle for `detection`'s backend (see [`Netfilter::detect`]).
    fn detect_with(options: &Options, mut detection: Detection) -> Result<Netfilter, Error> {
        let dir = options.tool_dir.as_deref();
        // A kernel without IPv6 has nothing to expose over it, and ip6tables cannot run there.
        let ipv6 = std::path::Path::new("/proc/sys/net/ipv6").exists();
        if !ipv6 && options.families.contains(&Family::Ipv6) {
            detection
                .reason
                .push_str("; IPv6 skipped: this kernel has IPv6 disabled");
        }
        let managed = || {
            options
                .families
                .iter()
                .copied()
                .filter(|&f| f == Family::Ipv4 || ipv6)
        };
        let families = managed()
            .map(|f| backend::tools(detection.backend, f, dir).map(|t| (f, t)))
            .collect::<Result<_, _>>()?;
        let other = managed()
            .filter_map(|f| {
                backend::tools(detection.backend.other(), f, dir)
                    .ok()
                    .map(|t| (f, t))
            })
            .collect();
        Ok(Netfilter {
            stray: Arc::new(AtomicBool::new(detection.ours_elsewhere.is_some())),
            detection,
            families,
            other,
            nft: backend::find_program("nft", dir),
            lock_wait_secs: options.lock_wait_secs,
            owners: options.owners,
            exposure: false,
            keep_read: false,
            memo: Arc::new(Mutex::new(None)),
        })
    }

    /// This handle, with (`true`) or without the exposure diff in every plan
    /// ([`Plan::exposure`], [`crate::exposure`]): computed from the rulesets the plan reads and
    /// its rendering, at the time of the read. Off by default: it costs time in proportion to
    /// port boundaries times distinct sources, which an agent's refresh has no use for;
    /// `portwarden plan` turns it on.
    pub fn with_exposure(mut self, on: bool) -> Netfilter {
        self.exposure = on;
        self
    }

    /// This handle, with (`true`) or without every plan keeping the rulesets it was computed
    /// from ([`Plan::read`]), read with their counters (`*-save -c`, which costs the read
    /// nothing measurable): what the agent counts packets per entry from after a refresh that
    /// wrote nothing. Off by default.
    pub fn with_read_kept(mut self, on: bool) -> Netfilter {
        self.keep_read = on;
        self
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.detection.backend
    }

    /// How the backend was chosen.
    pub fn detection(&self) -> &Detection {
        &self.detection
    }

    /// The managed families.
    pub fn families(&self) -> Vec<Family> {
        self.families.iter().map(|(f, _)| *f).collect()
    }

    fn tools(&self, family: Family) -> Option<&Tools> {
        self.families
            .iter()
            .find(|(f, _)| *f == family)
            .map(|(_, t)| t)
    }

    /// Reads the filter table of one family (one `iptables-save -t filter` run).
    ///
    /// # Errors
    /// [`Error::Read`] when the tool fails (typically: not root), [`Error::Parse`] when its
    /// output cannot be parsed, [`Error::Incompatible`] when the tool says it cannot print the
    /// table (its contents are unknown: nothing may be planned against it).
    pub fn read(&self, family: Family) -> Result<Ruleset, Error> {
        self.read_filter_of(family, false)
    }

    /// [`Netfilter::read`], with the rules' packet and byte counters (`*-save -c -t filter`)
    /// when `counters`.
    fn read_filter_of(&self, family: Family, counters: bool) -> Result<Ruleset, Error> {
        let Some(t) = self.tools(family) else {
            return Ok(Ruleset::default());
        };
        let rs = if counters {
            backend::read_save(t, family, &["-c", "-t", "filter"])?
        } else {
            read_filter(t, family)?
        };
        if rs.is_incompatible("filter") {
            return Err(self.incompatible(family, t));
        }
        Ok(rs)
    }

    /// Every managed family's filter table with its rules' packet and byte counters
    /// (`iptables-save -c -t filter`, `ip6tables-save -c -t filter`, concurrently), for
    /// [`crate::counters::entry_counters`].
    ///
    /// # Guarantees
    /// Read-only, and takes no lock (like [`Netfilter::plan_unlocked`]): no number of callers
    /// can keep a writer out, nor wait for one.
    ///
    /// # Errors
    /// As [`Netfilter::read`].
    ///
    /// # Caveats
    /// A read while another portwarden writes can see that write half-way (one family new, the
    /// other old); counters of a chain a write rewrote start again from 0.
    pub fn read_counters(&self) -> Result<Vec<(Family, Ruleset)>, Error> {
        self.read_families(&self.families(), true)
    }

    /// The node ports the `nat` table forwards elsewhere (DNAT to a container or pod), both
    /// managed families, from one `*-save -t nat` run each (see [`crate::forwarding`]); under
    /// the legacy backend only where the kernel has a `nat` table, which reading would
    /// otherwise create. For explanations only: the forward path enforces the intent whatever
    /// this finds.
    ///
    /// # Errors
    /// As [`Netfilter::read`] for the `nat` table, and [`Error::Addresses`].
    pub fn forwards(&self) -> Result<Vec<crate::forwarding::Forward>, Error> {
        let host = crate::addresses::Host::read().map_err(|source| Error::Addresses { source })?;
        let mut out = Vec::new();
        for (family, t) in &self.families {
            // A family the node does not forward has no forwarded port. Asking legacy for a
            // table it does not have would create it: no table, no DNAT.
            if !host.forwards(*family)
                || self.backend() == Backend::Legacy
                    && !backend::legacy_table_exists(*family, "nat")
            {
                continue;
            }
            let nat = backend::read_save(t, *family, &["-t", "nat"])?;
            out.extend(crate::forwarding::forwards(&nat, *family, &host.addresses));
        }
        Ok(out)
    }

    /// The refusal of a filter table that `t`'s save tool cannot print.
    fn incompatible(&self, family: Family, t: &Tools) -> Error {
        Error::Incompatible {
            family,
            command: format!("{} -t filter", t.save.display()),
            nft_family: native::nft_family(family),
            hint: if self.nft.is_some() {
                "; `portwarden reset` can still remove portwarden's own chains from it (with `nft`)"
            } else {
                "; install nftables' `nft` tool to let `portwarden reset` remove portwarden's own \
                 chains from it"
            },
        }
    }

    /// Reads every managed family once.
    ///
    /// # Errors
    /// As [`Netfilter::read`].
    pub fn read_all(&self) -> Result<Vec<(Family, Ruleset)>, Error> {
        self.read_many(&self.families())
    }

    /// Reads these families, concurrently: the `*-save` runs overlap, which halves the wall
    /// time of a reconcile on a multi-core host. (Threads inherit the calling thread's network
    /// namespace, so this is also right inside `ip netns exec` or a setns(2) thread.)
    fn read_many(&self, families: &[Family]) -> Result<Vec<(Family, Ruleset)>, Error> {
        self.read_families(families, false)
    }

    /// [`Netfilter::read_many`], with counters when `counters`.
    fn read_families(
        &self,
        families: &[Family],
        counters: bool,
    ) -> Result<Vec<(Family, Ruleset)>, Error> {
        let read = |f: Family| self.read_filter_of(f, counters);
        match families {
            [] => Ok(Vec::new()),
            [f] => Ok(vec![(*f, read(*f)?)]),
            [first, rest @ ..] => std::thread::scope(|scope| {
                let others: Vec<_> = rest
                    .iter()
                    .map(|&f| scope.spawn(move || read(f).map(|r| (f, r))))
                    .collect();
                let mut out = vec![(*first, read(*first)?)];
                for h in others {
                    // A panic in a reader thread is a bug; surface it rather than hide it.
                    let r = h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
                    out.push(r?);
                }
                Ok(out)
            }),
        }
    }

    /// What it takes to make this namespace's netfilter say `intent`: the chosen backend's
    /// changes, and (in [`Plan::cleanup`]) the removal of portwarden's rules from the other
    /// backend when they are there.
    ///
    /// # Guarantees
    /// * Read-only: one `iptables-save` per family, nothing written. The other backend is read
    ///   too (one more `*-save` per family) while it holds (or may hold) portwarden's rules,
    ///   and when portwarden's chains or jump are missing here: another portwarden (a hand-run
    ///   `apply --backend`) may have moved them there since this handle was made.
    /// * A place of the other backend that cannot be read (a table iptables cannot print,
    ///   without `nft`) does not stop the plan: it is listed in [`Plan::unread`].
    /// * Never half-way through another portwarden's write: the families are read under the
    ///   namespace's writer lock taken shared, waiting up to `lock_wait_secs` for a writer to
    ///   finish.
    ///
    /// # Errors
    /// As [`Netfilter::read`]; [`Error::WriterBusy`] when a writer holds the lock for the
    /// whole wait.
    ///
    /// # Caveats
    /// When the lock directory cannot be used (a user who may not open it), the plan is read
    /// without the lock, with a warning. Readers do not give way to a waiting writer: plans
    /// run back to back without pause can keep a writer waiting (up to its `--wait`).
    pub fn plan(&self, intent: &NodeIntent, failsafe: &Failsafe) -> Result<Plan, Error> {
        let _reading = self.read_lock()?;
        self.plan_unlocked(intent, failsafe)
    }

    /// [`Netfilter::plan`] without the lock: for diagnostics that must neither wait for a
    /// writer nor delay one, such as the agent's inside view (which any host may ask for).
    ///
    /// # Guarantees
    /// Read-only, as [`Netfilter::plan`]; takes no lock, so no number of concurrent callers can
    /// keep a writer out.
    ///
    /// # Errors
    /// As [`Netfilter::plan`], [`Error::WriterBusy`] and the lock directory's errors aside.
    ///
    /// # Caveats
    /// A read at the moment another portwarden writes can see that write half-way (IPv4 new,
    /// IPv6 old): a difference that is gone at the next read.
    pub fn plan_unlocked(&self, intent: &NodeIntent, failsafe: &Failsafe) -> Result<Plan, Error> {
        let plan = self.plan_own(intent, failsafe)?;
        if !self.owners {
            return Ok(plan);
        }
        Ok(plan.with_owners(
            &self.foreign_tables(),
            intent,
            failsafe,
            self.mixed_backends(),
        ))
    }

    /// The native nftables tables of this namespace that are not iptables-nft's, read with
    /// `nft` ([`foreign_nft::read`]); never an error: without `nft`, or when it fails,
    /// [`ForeignRead::NotRead`] says why.
    pub fn foreign_tables(&self) -> ForeignRead {
        foreign_nft::read(self.nft.as_deref())
    }

    /// What every foreign nftables base chain on the way in decides for `packet`
    /// ([`foreign_nft::ForeignTables::decide`]), for callers that explain one port (the agent's inside
    /// view, verify's causes); at one hook (`forward`, say), read [`Netfilter::foreign_tables`]
    /// once and call [`foreign_nft::ForeignTables::decide_at`].
    ///
    /// # Errors
    /// Why the tables could not be read ([`ForeignRead::NotRead`]'s text).
    pub fn foreign_decisions(&self, packet: &Packet) -> Result<Vec<ForeignDecision>, String> {
        match self.foreign_tables() {
            ForeignRead::Read(t) => Ok(t.decide(packet)),
            ForeignRead::NotRead(why) => Err(why),
        }
    }

    /// What both iptables backends hold apart from portwarden's rules, when the one not in use
    /// holds anything ([`MixedBackends::of`]): every table of every managed family of each
    /// backend, read with its `*-save` (a legacy family only when the kernel already has a
    /// legacy table for it: reading would create one). A family that cannot be read is left
    /// out (this is a warning, not a plan).
    pub fn mixed_backends(&self) -> Option<MixedBackends> {
        let read = |backend: Backend, tools: &[(Family, Tools)]| {
            let sets: Vec<(Family, Ruleset)> = tools
                .iter()
                .filter(|(f, _)| backend == Backend::Nft || backend::legacy_tables_exist(*f))
                .filter_map(|(f, t)| backend::read_save(t, *f, &[]).ok().map(|rs| (*f, rs)))
                .collect();
            let refs: Vec<(Family, &Ruleset)> = sets.iter().map(|(f, r)| (*f, r)).collect();
            BackendHolding::of(backend, &refs)
        };
        let other = read(self.backend().other(), &self.other);
        if other.chains.is_empty() {
            return None;
        }
        MixedBackends::of(read(self.backend(), &self.families), other)
    }

    /// [`Netfilter::plan_unlocked`] without the other owners.
    fn plan_own(&self, intent: &NodeIntent, failsafe: &Failsafe) -> Result<Plan, Error> {
        let current = if self.keep_read {
            self.read_counters()?
        } else {
            self.read_all()?
        };
        let refs: Vec<(Family, &Ruleset)> = current.iter().map(|(f, r)| (*f, r)).collect();
        let rendered = self.rendered(intent, failsafe)?;
        let mut plan = Plan::from_rendered(&rendered, intent, &refs);
        if self.exposure {
            let now = portwarden_policy::Timestamp::now();
            plan = plan.with_exposure(crate::exposure::compute(&rendered, &refs, now));
        }
        // Gone from here: maybe moved to the other backend behind this handle's back.
        let gone = plan
            .drift_kinds()
            .iter()
            .any(|k| matches!(k, DriftKind::JumpMissing | DriftKind::ChainMissing));
        if self.keep_read {
            plan.read = current;
        }
        if !gone && !self.stray.load(Ordering::Relaxed) {
            return Ok(plan);
        }
        let mut places = Places::default();
        self.other_places(&mut places);
        // Keep looking there while anything of ours is, or may be, there.
        self.stray
            .store(places.holds_something(), Ordering::Relaxed);
        Ok(places.into_plan(plan))
    }

    /// Adds the removal of portwarden's rules from every family of the other backend.
    fn other_places(&self, places: &mut Places) {
        let other = self.backend().other();
        for (family, t) in &self.other {
            if other == Backend::Legacy && !backend::legacy_filter_exists(*family) {
                continue; // no legacy table at all (reading one would create it)
            }
            places.remove_from(other, *family, self.read_place(*family, t));
        }
    }

    /// One family's filter table read with `t`: as iptables prints it, or, when it cannot,
    /// what removes portwarden's objects from it with `nft`.
    fn read_place(&self, family: Family, t: &Tools) -> Result<Place, Error> {
        let rs = read_filter(t, family)?;
        if !rs.is_incompatible("filter") {
            return Ok(Place::Printed(rs));
        }
        self.native_removal(family, t).map(Place::Native)
    }

    /// [`native::removal`] of the family's `filter` table, listed with `nft -j`.
    fn native_removal(&self, family: Family, t: &Tools) -> Result<native::Removal, Error> {
        let Some(nft) = &self.nft else {
            return Err(Error::NftMissing {
                family,
                command: format!("{} -t filter", t.save.display()),
            });
        };
        let fam = native::nft_family(family);
        let (out, command) = backend::run(nft, &["-j", "list", "table", fam, "filter"])?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            if stderr.contains("No such file or directory") {
                return Ok(native::Removal::default()); // no such table
            }
            return Err(backend::read_error(family, command, &out));
        }
        native::removal(family, &String::from_utf8_lossy(&out.stdout))
            .map_err(|message| Error::NftJson { command, message })
    }

    /// [`Host::render`](crate::addresses::Host::render) of this namespace, reused from the
    /// previous call while the intent, failsafe list and host are equal. The host is read
    /// afresh every time (see [`crate::addresses`]).
    ///
    /// # Errors
    /// [`Error::Addresses`] when the node's addresses cannot be read.
    pub fn rendered(
        &self,
        intent: &NodeIntent,
        failsafe: &Failsafe,
    ) -> Result<Arc<Rendered>, Error> {
        let host = crate::addresses::Host::read().map_err(|source| Error::Addresses { source })?;
        // A poisoned lock only means another thread panicked mid-render: render afresh.
        let mut memo = self.memo.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = memo.as_ref()
            && m.failsafe == *failsafe
            && m.host == host
            && m.intent == *intent
        {
            return Ok(m.rendered.clone());
        }
        let rendered = Arc::new(host.render(intent, failsafe));
        *memo = Some(Memo {
            intent: intent.clone(),
            failsafe: failsafe.clone(),
            host,
            rendered: rendered.clone(),
        });
        Ok(rendered)
    }

    /// How long to wait for a lock another program holds.
    fn lock_wait(&self) -> Duration {
        Duration::from_secs(self.lock_wait_secs.into())
    }

    /// Takes this network namespace's writer lock (see [`writer`]), waiting up to
    /// `lock_wait_secs` for another portwarden writer; the lock is released when dropped.
    /// Only [`Netfilter::apply`], [`Netfilter::converge`] and [`Netfilter::reset`] take it,
    /// each once, so no caller can hold it around a call that would wait for it.
    fn lock(&self) -> Result<Lock, Error> {
        Lock::writer(&writer::lock_dir(), self.lock_wait())
    }

    /// The shared lock of a read, or `None` (with a warning) when the lock directory cannot be
    /// used by this user.
    fn read_lock(&self) -> Result<Option<Lock>, Error> {
        match Lock::reader(&writer::lock_dir(), self.lock_wait()) {
            Ok(lock) => Ok(Some(lock)),
            Err(e @ Error::WriterBusy { .. }) => Err(e),
            Err(e) => {
                warn!(
                    error = %e,
                    "reading without the writer lock: if another portwarden writes at this \
                     moment, this read can see its change half-way"
                );
                Ok(None)
            }
        }
    }

    /// Makes this namespace's netfilter say `intent`, as one writer: takes the namespace's
    /// writer lock, reads, plans and applies ([`Netfilter::apply`]) under it, and returns the
    /// plan and what was written (no transaction when already converged).
    ///
    /// # Guarantees
    /// * As [`Netfilter::apply`].
    /// * **One writer at a time**: no other portwarden `apply`, `reset` or agent of this
    ///   network namespace reads, plans or writes between this read and this read-back, so
    ///   two writers never mix their rulesets, never insert the jump twice, and a confirmed
    ///   apply is what the kernel holds when it returns. A wait for another writer is logged
    ///   with the holder (pid, command line, since when) and bounded by `lock_wait_secs`.
    ///
    /// # Errors
    /// As [`Netfilter::plan`] and [`Netfilter::apply`].
    pub fn converge(
        &self,
        intent: &NodeIntent,
        failsafe: &Failsafe,
    ) -> Result<(Plan, Applied), Error> {
        let writing = self.lock()?;
        let plan = self.plan_unlocked(intent, failsafe)?;
        let applied = self.apply_locked(&writing, &plan)?;
        Ok((plan, applied))
    }

    /// [`Netfilter::converge`] with a `gate` run under the writer lock between the plan and
    /// the write: `apply --confirm-within` records portwarden's rules as planned
    /// ([`FamilyPlan::before`]) and starts its rollback watcher there. A gate that fails stops
    /// everything before a single write. Returns the plan, what the gate returned, and the
    /// write's outcome (the gate's work stands either way).
    ///
    /// # Guarantees
    /// As [`Netfilter::converge`]; nothing is written unless `gate` succeeds.
    ///
    /// # Errors
    /// The lock's and the plan's errors, and the gate's.
    ///
    /// # Caveats
    /// `gate` must not call a method of this crate that takes the writer lock: it would wait
    /// for itself until `lock_wait_secs` runs out.
    #[allow(clippy::type_complexity)]
    pub fn converge_gated<G, E: From<Error>>(
        &self,
        intent: &NodeIntent,
        failsafe: &Failsafe,
        gate: impl FnOnce(&Plan) -> Result<G, E>,
    ) -> Result<(Plan, G, Result<Applied, Error>), E> {
        let writing = self.lock()?;
        let plan = self.plan_unlocked(intent, failsafe)?;
        let g = gate(&plan)?;
        let applied = self.apply_locked(&writing, &plan);
        Ok((plan, g, applied))
    }

    /// Puts portwarden's own chains and jumps back to earlier ones, as one writer: takes the
    /// writer lock, asks `gate` (under it) whether to go on and to what — `None` stops here,
    /// nothing written — then reads every managed family and writes, in one transaction per
    /// family that differs, what makes portwarden's part of it exactly the target (a family
    /// the target does not name gets nothing of portwarden's), and reads it back
    /// ([`Plan::back_to`], [`Netfilter::apply`]). What the rollback of `apply
    /// --confirm-within` runs.
    ///
    /// # Guarantees
    /// As [`Netfilter::apply`]: foreign rules, chains and tables (Docker's, kube-proxy's,
    /// rules added since) stay as they are; only portwarden's chains and its two jumps change.
    ///
    /// # Errors
    /// The lock's errors and the gate's; the read's and the write's are returned beside the
    /// gate's value, so that the caller can record them.
    ///
    /// # Caveats
    /// As [`Netfilter::converge_gated`]; a jump comes back at position 1 of its chain.
    #[allow(clippy::type_complexity)]
    pub fn restore_gated<G, E: From<Error>>(
        &self,
        gate: impl FnOnce() -> Result<Option<(G, Vec<Desired>)>, E>,
    ) -> Result<Option<(G, Result<(Plan, Applied), Error>)>, E> {
        let writing = self.lock()?;
        let Some((g, targets)) = gate()? else {
            return Ok(None);
        };
        let written = self.read_all().and_then(|current| {
            let targets: Vec<Desired> = current
                .iter()
                .map(|(f, _)| {
                    targets
                        .iter()
                        .find(|t| t.family == *f)
                        .cloned()
                        .unwrap_or_else(|| Desired::empty(*f))
                })
                .collect();
            let refs: Vec<(&Desired, &Ruleset)> =
                targets.iter().zip(current.iter().map(|(_, r)| r)).collect();
            let plan = Plan::back_to(&refs);
            let applied = self.apply_locked(&writing, &plan)?;
            Ok((plan, applied))
        });
        Ok(Some((g, written)))
    }

    /// What it takes to remove everything of portwarden's, from both backends: the chosen
    /// backend's families as [`Plan::families`], a table iptables cannot print and the other
    /// backend (when its tools are installed) as [`Plan::cleanup`].
    ///
    /// # Guarantees
    /// Each place (a family of a backend) is read once. One that cannot be read (a table
    /// iptables cannot print when `nft` is not installed, a tool that fails) is listed in
    /// [`Plan::unread`] and the others are planned as usual.
    pub fn plan_reset(&self) -> Plan {
        let mut readable = Vec::new();
        let mut places = Places::default();
        for (family, t) in &self.families {
            match self.read_place(*family, t) {
                Ok(Place::Printed(rs)) => readable.push((*family, rs)),
                place => places.remove_from(self.backend(), *family, place),
            }
        }
        self.other_places(&mut places);
        let refs: Vec<(Family, &Ruleset)> = readable.iter().map(|(f, r)| (*f, r)).collect();
        places.into_plan(Plan::reset(&refs))
    }

    /// Executes a plan: one `iptables-restore --noflush --wait` transaction per family that
    /// needs one, each read back and compared with the plan's target.
    ///
    /// # Guarantees
    /// * **Zero writes when converged**: a family whose plan is empty is not touched at all
    ///   (no `iptables-restore` runs; counters and rule handles stay as they are).
    /// * **Atomic per family**: each family's change is a single transaction of the filter
    ///   table; it applies completely or not at all.
    /// * **Only portwarden's rules**: the transaction declares only portwarden's chains (by
    ///   their naming grammar, see [`crate::chains`]) and deletes/inserts only its jump; other
    ///   chains, rules, tables and counters are untouched (`--noflush`), look-alikes
    ///   (`PORTWARDEN-FOO`, a foreign jump to `PORTWARDEN-INPUT`) included. Rules to delete are
    ///   named by specification, not position, so a foreign rule that appeared since the plan
    ///   was made cannot be hit.
    /// * **Lock waits are logged**: when the xtables lock (legacy backend) is held by another
    ///   program, the transaction waits up to `lock_wait_secs` and a warning names the holder.
    /// * **Confirmed**: after the transactions every family written is read back (one
    ///   `iptables-save` each) and must match the plan's target exactly.
    /// * **All families or none**: when a family's transaction fails after an earlier family's
    ///   succeeded, the earlier one is rolled back to portwarden's rules as they were at plan
    ///   time (one more transaction), and the error says so.
    /// * **Moves, never orphans**: the plan's [`cleanup`](Plan::cleanup) — portwarden's rules in
    ///   the other backend, or (reset) in a table only `nft` can edit — runs only after every
    ///   family's transaction is written and confirmed, one transaction per family, each read
    ///   back; so after a backend switch the old rules go only once the new ones decide.
    ///
    /// # Errors
    /// * [`Error::Restore`] when a transaction is refused (a rule the kernel rejects, the
    ///   xtables lock not released within the wait, a stale plan whose deletes no longer
    ///   match): that family is exactly as before. The message quotes the failing line.
    /// * [`Error::Killed`] when an `iptables-restore` child dies by a signal: that family is
    ///   as before or fully applied, never a mix; earlier families stay applied.
    /// * [`Error::Verify`] when the read-back differs (someone else edited our chains at the
    ///   same moment).
    /// * [`Error::Spawn`], [`Error::Read`], [`Error::Parse`] from running the tools.
    /// * [`Error::Cleanup`] when a cleanup fails: the families' transactions stay applied (the
    ///   error says so), the rest of the cleanup is not run; the next apply finishes it.
    /// * [`Error::WriterBusy`], [`Error::LockDir`], [`Error::LockFile`], [`Error::Namespace`]
    ///   from the writer lock: nothing was written.
    ///
    /// # Caveats
    /// Families are written one after the other (IPv4 first), so for a moment IPv4 can be new
    /// while IPv6 is old. A rollback restores portwarden's chains exactly but puts the jump at
    /// position 1 even if it had been pushed down. The writes and the read-back run under the
    /// namespace's writer lock, but the plan was read before it: another portwarden writer
    /// can have changed the rules in between (its deletes, named by specification, then fail
    /// rather than hit another rule). [`Netfilter::converge`] (what the CLI and the agent use)
    /// reads, plans and applies under one lock.
    pub fn apply(&self, plan: &Plan) -> Result<Applied, Error> {
        let writing = self.lock()?;
        self.apply_locked(&writing, plan)
    }

    /// [`Netfilter::apply`] by a caller that holds the writer lock (`_writing`).
    fn apply_locked(&self, _writing: &Lock, plan: &Plan) -> Result<Applied, Error> {
        let mut applied = Applied::default();
        let mut done: Vec<&FamilyPlan> = Vec::new();
        for fp in &plan.families {
            if fp.is_converged() {
                continue;
            }
            let Some(t) = self.tools(fp.family) else {
                continue;
            };
            if let Err(e) = self.restore(fp.family, t, &fp.restore) {
                return Err(self.roll_back(e, &done));
            }
            done.push(fp);
            applied.transactions += 1;
            applied.changes += fp.add.len() + fp.delete.len();
            applied.families.push(fp.family);
        }
        // Read back every family written (concurrently) and compare with the plan's target.
        for (family, back) in self.read_many(&applied.families)? {
            let Some(fp) = done.iter().find(|fp| fp.family == family) else {
                continue;
            };
            let check = diff(&fp.desired, &back, None);
            if !check.is_converged() {
                return Err(Error::Verify {
                    family,
                    pending: check.add.len() + check.delete.len(),
                    first: check
                        .add
                        .first()
                        .or(check.delete.first())
                        .cloned()
                        .unwrap_or_else(|| format!("jump {:?}", check.jump)),
                });
            }
        }
        let transactions = applied.transactions;
        for c in &plan.cleanup {
            self.run_cleanup(c).map_err(|e| Error::Cleanup {
                backend: c.backend,
                family: c.family,
                written: written_before(self.backend(), transactions, plan, c),
                source: Box::new(e),
            })?;
            applied.transactions += 1;
            applied.changes += c.delete.len();
            if c.backend == self.backend() {
                if !applied.families.contains(&c.family) {
                    applied.families.push(c.family);
                }
            } else if !applied.other_backends.contains(&c.backend) {
                applied.other_backends.push(c.backend);
            }
        }
        let other = self.backend().other();
        if !applied.other_backends.is_empty() && plan.unread.iter().all(|u| u.backend != other) {
            self.stray.store(false, Ordering::Relaxed);
        }
        if !plan.unread.is_empty() {
            return Err(Error::Unread {
                done: done_where_readable(plan, &applied),
                places: plan
                    .unread
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            });
        }
        Ok(applied)
    }

    /// Runs one [`Cleanup`] transaction and reads it back: nothing of portwarden's may remain
    /// there (chains kept for foreign rules aside, emptied).
    fn run_cleanup(&self, c: &Cleanup) -> Result<(), Error> {
        let tools = if c.backend == self.backend() {
            &self.families
        } else {
            &self.other
        };
        let Some((_, t)) = tools.iter().find(|(f, _)| *f == c.family) else {
            return Err(Error::ToolMissing {
                tool: format!("{}-{}-restore", c.family.tool(), c.backend),
                purpose: "remove portwarden's rules",
            });
        };
        let (left, first) = match c.via {
            Via::IptablesRestore => {
                self.restore(c.family, t, &c.script)?;
                let back = read_filter(t, c.family)?;
                let check = diff(&Desired::empty(c.family), &back, None);
                let first = check.delete.first().cloned();
                (check.add.len() + check.delete.len(), first)
            }
            Via::Nft => {
                self.nft_batch(c.family, &c.script)?;
                let check = self.native_removal(c.family, t)?;
                let first = check.delete.first().cloned();
                (check.delete.len(), first)
            }
        };
        match first {
            None => Ok(()),
            Some(first) => Err(Error::Verify {
                family: c.family,
                pending: left,
                first,
            }),
        }
    }

    /// Runs `script` as one `nft -f -` transaction (an nft batch is atomic).
    fn nft_batch(&self, family: Family, script: &str) -> Result<(), Error> {
        let Some(nft) = &self.nft else {
            return Err(Error::ToolMissing {
                tool: "nft".into(),
                purpose: "edit a table iptables cannot print",
            });
        };
        let (mut child, command) = spawn_writer(nft, &["-f", "-"])?;
        if let Some(mut stdin) = child.stdin.take() {
            // A write error means nft exited early; its status and stderr say why.
            let _ = stdin.write_all(script.as_bytes());
        }
        let out = child.wait_with_output().map_err(|source| Error::Spawn {
            command: command.clone(),
            source,
        })?;
        if out.status.success() {
            return Ok(());
        }
        Err(Error::Restore {
            family,
            command,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            failed_line: String::new(),
            earlier: String::new(),
        })
    }

    /// After a failed transaction, returns the families already written to how they were
    /// (one more transaction each), and says in the error what happened to them.
    ///
    /// A child killed by a signal is different: its family may hold the new rules (a table is
    /// committed in one step, and the kill may have come after it), so the earlier families are
    /// left applied — going forward, not back — and the error says which they are.
    fn roll_back(&self, error: Error, done: &[&FamilyPlan]) -> Error {
        let (family, command, stderr, failed_line) = match error {
            Error::Restore {
                family,
                command,
                stderr,
                failed_line,
                ..
            } => (family, command, stderr, failed_line),
            Error::Killed {
                family,
                command,
                signal,
                ..
            } => {
                return Error::Killed {
                    family,
                    command,
                    signal,
                    earlier: done
                        .iter()
                        .map(|fp| format!("; {} was applied", fp.family))
                        .collect(),
                };
            }
            other => return other,
        };
        let mut notes = Vec::new();
        for fp in done.iter().rev() {
            notes.push(match self.roll_back_family(fp) {
                Ok(()) => format!("{} was rolled back to its previous rules", fp.family),
                Err(why) => format!(
                    "{} was applied and could not be rolled back ({why}); rerun apply once the \
                     cause is fixed",
                    fp.family
                ),
            });
        }
        Error::Restore {
            family,
            command,
            stderr,
            failed_line,
            earlier: notes.iter().map(|n| format!("; {n}")).collect(),
        }
    }

    /// Returns one family already written to portwarden's part of it as planned (`fp.before`):
    /// read it again, and write the difference back in one transaction.
    ///
    /// # Errors
    /// Why it could not: the family's tools are gone, or the read or the transaction failed.
    fn roll_back_family(&self, fp: &FamilyPlan) -> Result<(), Error> {
        let Some(t) = self.tools(fp.family) else {
            return Err(Error::ToolMissing {
                tool: format!("{}-restore", fp.family.tool()),
                purpose: "roll back a family already written",
            });
        };
        let now = self.read(fp.family)?;
        let back = diff(&fp.before, &now, None);
        if back.is_converged() {
            return Ok(());
        }
        self.restore(fp.family, t, &back.restore)
    }

    /// Removes every chain of portwarden's and its jump, in every managed family of both
    /// backends: [`Netfilter::plan_reset`] then [`Netfilter::apply`], under the namespace's
    /// writer lock (as [`Netfilter::converge`]); returns the plan (for its findings: kept
    /// chains, look-alikes) and what was written.
    ///
    /// # Guarantees
    /// As [`Netfilter::apply`]; everything that is not portwarden's stays byte-identical
    /// (counters aside, which keep counting), look-alikes included; a chain of portwarden's
    /// that a foreign rule jumps to stays, emptied ([`Plan::kept`]). No write when nothing of
    /// ours is there. A filter table iptables cannot print is cleaned with `nft` when it is
    /// installed (see [`crate::native`]).
    ///
    /// # Errors
    /// As [`Netfilter::apply`].
    pub fn reset(&self) -> Result<(Plan, Applied), Error> {
        let writing = self.lock()?;
        let plan = self.plan_reset();
        let applied = self.apply_locked(&writing, &plan)?;
        Ok((plan, applied))
    }

    /// Runs one `iptables-restore --noflush --wait` transaction. Its standard input is written
    /// from a second thread so that a child blocked on the xtables lock (before it reads all of
    /// a large input) cannot block this one; meanwhile, once the child has run for
    /// [`LOCK_CHECK`], the kernel's lock table is consulted and a child waiting for the lock is
    /// logged with the holder, once, and again when it got through.
    fn restore(&self, family: Family, t: &Tools, input: &str) -> Result<(), Error> {
        let wait = format!("--wait={}", self.lock_wait_secs);
        let (child, command) = spawn_writer(&t.restore, &["--noflush", &wait])?;
        let started = Instant::now();
        let (out, waited_for) =
            self.feed_and_wait(family, child, input)
                .map_err(|source| Error::Spawn {
                    command: command.clone(),
                    source,
                })?;
        if let Some(h) = waited_for {
            info!(
                %family,
                holder_pid = h.pid,
                after_ms = started.elapsed().as_millis() as u64,
                ok = out.status.success(),
                "xtables lock wait over"
            );
        }
        if let Some(signal) = out.status.signal() {
            return Err(Error::Killed {
                family,
                command,
                signal,
                earlier: String::new(),
            });
        }
        if out.status.success() {
            return Ok(());
        }
        Err(restore_error(family, command, &out, input))
    }

    /// Writes `input` to `child`'s standard input from a second thread and waits for it to
    /// exit; meanwhile, every [`LOCK_CHECK`], logs (once) the holder of the xtables lock when
    /// the child waits for it. Returns its output and the holder it waited for, if any.
    fn feed_and_wait(
        &self,
        family: Family,
        mut child: std::process::Child,
        input: &str,
    ) -> std::io::Result<(std::process::Output, Option<lockwait::Holder>)> {
        let pid = child.id();
        let stdin = child.stdin.take();
        std::thread::scope(|scope| {
            let (done, finished) = mpsc::channel();
            scope.spawn(move || {
                if let Some(mut stdin) = stdin {
                    // A write error means the tool exited early; its status and stderr say why.
                    let _ = stdin.write_all(input.as_bytes());
                }
                let _ = done.send(child.wait_with_output());
            });
            let mut waited_for: Option<lockwait::Holder> = None;
            loop {
                match finished.recv_timeout(LOCK_CHECK) {
                    Ok(out) => break out,
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        break Err(std::io::Error::other("the waiting thread ended early"));
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if waited_for.is_none()
                            && let Some(h) = lockwait::lock_holder(pid)
                        {
                            warn!(
                                %family,
                                holder_pid = h.pid,
                                holder = %lockwait::command(h.pid),
                                lock = %lockwait::lock_file(),
                                wait_secs = self.lock_wait_secs,
                                "waiting for the xtables lock held by another process (iptables-restore gives up after wait_secs)"
                            );
                            waited_for = Some(h);
                        }
                    }
                }
            }
            .map(|out| (out, waited_for))
        })
    }
}

/// The [`Error::Restore`] of a transaction (`input`) that `command` refused with `out`: its
/// standard error (warnings left out), and the failing line of `input` when the tool names it.
fn restore_error(
    family: Family,
    command: String,
    out: &std::process::Output,
    input: &str,
) -> Error {
    let stderr = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.starts_with("# Warning"))
        .collect::<Vec<_>>()
        .join(" ")
        .trim()
        .to_string();
    let failed_line = failing_line(&stderr)
        .and_then(|n| input.lines().nth(n - 1).map(|l| (n, l)))
        .map(|(n, l)| {
            if l == "COMMIT" {
                format!(
                    " (line {n}: the kernel refused the table at COMMIT; `dmesg` names the \
                     rejected rule)"
                )
            } else {
                format!(" (line {n}: {l})")
            }
        })
        .unwrap_or_default();
    Error::Restore {
        family,
        command,
        stderr: if stderr.is_empty() {
            format!("exit status {}", out.status)
        } else {
            stderr
        },
        failed_line,
        earlier: String::new(),
    }
}

/// Reads the filter table of one family with `t` (one `*-save -t filter` run), as printed
/// (an unprintable table is listed in [`Ruleset::incompatible`]).
fn read_filter(t: &Tools, family: Family) -> Result<Ruleset, Error> {
    backend::read_save(t, family, &["-t", "filter"])
}

/// One family's filter table of a backend, as [`Netfilter::read_place`] found it.
enum Place {
    /// A table iptables prints.
    Printed(Ruleset),
    /// A table only `nft` can list: what removes portwarden's objects from it.
    Native(native::Removal),
}

/// What the places outside the chosen backend's printable tables hold of portwarden's: their
/// removals and findings, and the places that could not be read.
#[derive(Default)]
struct Places {
    cleanup: Vec<Cleanup>,
    kept: Vec<Kept>,
    lookalikes: Vec<Lookalike>,
    unread: Vec<Unread>,
}

impl Places {
    /// Adds what removes portwarden's rules from one family of `backend`, read as `place`.
    fn remove_from(&mut self, backend: Backend, family: Family, place: Result<Place, Error>) {
        match place {
            Ok(Place::Printed(rs)) => {
                let fp = diff(&Desired::empty(family), &rs, None);
                self.cleanup.extend(Cleanup::from_reset(backend, &fp));
                self.kept.extend(fp.kept);
            }
            Ok(Place::Native(r)) => {
                if !r.script.is_empty() {
                    self.cleanup.push(Cleanup {
                        backend,
                        family,
                        via: Via::Nft,
                        delete: r.delete,
                        script: r.script,
                    });
                }
                self.kept.extend(r.kept);
                self.lookalikes.extend(r.lookalikes);
            }
            Err(e) => self.unread.push(Unread {
                backend,
                family,
                error: e.to_string(),
            }),
        }
    }

    /// Whether any place holds, or may hold, something of portwarden's.
    fn holds_something(&self) -> bool {
        !self.cleanup.is_empty() || !self.unread.is_empty()
    }

    fn into_plan(self, plan: Plan) -> Plan {
        let mut plan = plan.with_cleanup(self.cleanup, self.kept);
        plan.lookalikes.extend(self.lookalikes);
        plan.unread.extend(self.unread);
        plan
    }
}

/// What [`Error::Unread`] says was done where portwarden could read.
fn done_where_readable(plan: &Plan, applied: &Applied) -> String {
    match (plan.reset, applied.transactions) {
        (true, 0) => "found nothing of portwarden's to remove where it could read".into(),
        (true, _) => format!(
            "removed {} portwarden rule(s) and chain(s) where it could read",
            applied.changes
        ),
        (false, 0) => "nothing needed writing where it could read".into(),
        (false, n) => format!(
            "applied {} change(s) in {n} transaction(s), read back and confirmed",
            applied.changes
        ),
    }
}

/// Starts a writing tool that reads its transaction on standard input (stderr captured,
/// stdout discarded): the child and its command line.
fn spawn_writer(
    program: &std::path::Path,
    args: &[&str],
) -> Result<(std::process::Child, String), Error> {
    let command = backend::command_text(program, args);
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn {
            command: command.clone(),
            source,
        })?;
    Ok((child, command))
}

/// What [`Error::Cleanup`] says was written before cleanup `c` of `plan` failed, after
/// `transactions` transactions of the `current` backend.
fn written_before(current: Backend, transactions: usize, plan: &Plan, c: &Cleanup) -> String {
    // Only a move writes one backend's rules and then removes the other's; a reset writes
    // removals, and a cleanup of the backend in use (a table only nft can edit) moves nothing.
    if transactions > 0 && c.backend != current && !plan.reset {
        format!(
            "; the {current} backend's rules were written and confirmed first, so both decide \
             until the next apply (or reset) removes the old ones"
        )
    } else {
        String::new()
    }
}

/// The first `line N` an iptables-restore error message mentions.
fn failing_line(stderr: &str) -> Option<usize> {
    let i = stderr.find("line ")?;
    let digits: String = stderr[i + 5..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok().filter(|&n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cleanup of `backend`'s IPv4 (one delete).
    fn cleanup(backend: Backend) -> Cleanup {
        Cleanup {
            backend,
            family: Family::Ipv4,
            via: Via::IptablesRestore,
            delete: vec!["iptables -X PORTWARDEN-INPUT".into()],
            script: "*filter\n-X PORTWARDEN-INPUT\nCOMMIT\n".into(),
        }
    }

    #[test]
    fn a_failed_cleanup_says_both_decide_only_after_a_move() {
        let ours =
            Ruleset::parse("*filter\n:INPUT ACCEPT [0:0]\n:PORTWARDEN-INPUT - [0:0]\nCOMMIT\n")
                .unwrap();
        let move_plan = Plan::compute(&NodeIntent::default(), &Failsafe::default(), &[], &[])
            .with_cleanup(vec![cleanup(Backend::Nft)], Vec::new());
        let said = written_before(Backend::Legacy, 1, &move_plan, &move_plan.cleanup[0]);
        assert!(
            said.contains(
                "legacy backend's rules were written and confirmed first, so both decide"
            ),
            "{said}"
        );
        assert_eq!(
            written_before(Backend::Legacy, 0, &move_plan, &move_plan.cleanup[0]),
            "",
            "nothing written"
        );
        // A reset writes removals, and a cleanup of the backend in use moves nothing.
        let reset = Plan::reset(&[(Family::Ipv4, &ours)])
            .with_cleanup(vec![cleanup(Backend::Nft)], Vec::new());
        let said = written_before(Backend::Legacy, 1, &reset, &reset.cleanup[0]);
        assert_eq!(said, "", "a reset: {said}");
        let same = Plan::reset(&[]).with_cleanup(vec![cleanup(Backend::Legacy)], Vec::new());
        let said = written_before(Backend::Legacy, 1, &same, &same.cleanup[0]);
        assert_eq!(said, "", "the same backend: {said}");
    }

    #[test]
    fn failing_line_from_both_backends() {
        assert_eq!(
            failing_line(
                "iptables-nft-restore v1.8.9 (nf_tables): line 4: RULE_APPEND failed (Invalid argument): rule in chain X"
            ),
            Some(4)
        );
        assert_eq!(failing_line("iptables-restore: line 6 failed"), Some(6));
        assert_eq!(
            failing_line("Another app is currently holding the xtables lock"),
            None
        );
    }
}
