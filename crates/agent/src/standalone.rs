//! The standalone agent: keeps one node's netfilter equal to its intent, from a policy
//! directory (a git checkout) and an inventory ([`Files`]), and serves what it knows over
//! HTTP. Its loop is [`crate::schedule`]'s, driven by the policy files; SIGTERM stops it and
//! SIGHUP reloads ([`Control`]). Signals that queued up behind a step are taken together: a
//! stop wins, any number of reloads are one.
//!
//! # Guarantees
//!
//! * A policy change (any file under the directory, or the inventory, changes size, time, or
//!   inode) is loaded, planned and applied once it has held still for one poll interval, or at
//!   the latest `debounce_max` after it was first seen even while edits keep coming (see
//!   [`Debounce`]): within `debounce_max` plus one poll plus the apply itself, whatever the
//!   rate of changes. The last state written is always loaded.
//! * Invalid documents never change a rule: the error is logged, counted and served, and the
//!   last good intent stays applied (and keeps being repaired). No PortPolicy document at all
//!   (an emptied directory, every file truncated) counts as invalid, unless
//!   [`Files::allow_empty_policy`] says an empty set is meant: otherwise a failed render
//!   would remove every rule. At the first load, too: the agent then applies nothing, and the
//!   rules a previous run left stay as they are.
//! * Warnings about the documents (a node without addresses) are logged at each load.
//! * `/healthz` fails when the loop has not completed a round for
//!   [`crate::state::HEARTBEAT_LIMIT`], naming the step it is in (a load on a hung file
//!   system, a reconcile waiting for iptables): [`crate::state::State::health`]. A peer scan
//!   is exempt: a long scan is not a stuck loop.
//! * The documents' and iptables' error texts (paths, quoted values, rules) go to the log and
//!   to in-process callers only; what is served to any host says what failed, not the text
//!   ([`crate::http`], [`portwarden_reconcile::InsideView`]).
//! * Every `refresh` the rules are re-read and repaired when they drifted (a deleted rule, a
//!   deleted or displaced jump); foreign rules are never touched.
//! * One agent per network namespace: a second one refuses to start, naming the first
//!   ([`crate::process::take_agent_lock`]); every reconcile reads, plans and writes under the
//!   namespace's writer lock, so a hand-run `apply` and a reconcile never mix their rulesets.
//! * Shutdown leaves the rules in place; `portwarden reset` removes them.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::{Instant, SystemTime};

use portwarden_policy::{Node, NodeIntent, PolicySet, load_paths};
use portwarden_reconcile::Target;
use tracing::{error, info, warn};

use crate::config::{AgentConfig, Files, Source};
use crate::converge::{Reason, converge};
use crate::debounce::{
    ASKED_POLL, DEBOUNCE_MAX_POLLS, Debounce, Fingerprint, Step, change_time, fingerprint,
};
use crate::process::run_agent;
use crate::scan::scan_peers;
use crate::schedule::{self, Driver, Polled};
use crate::state::Shared;

/// What the loop is told from outside (signals, via [`run`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Stop; the rules stay in place.
    Stop,
    /// Load the policy documents and the inventory after the current step, whether or not
    /// they changed (SIGHUP), then go on as before; a change still being written is loaded
    /// once it holds still ([`Debounce::force`]), checked every [`ASKED_POLL`] meanwhile.
    Reload,
}

/// The standalone agent's side of the schedule: polls the files, loads them when the
/// [`Debounce`] says so, and scans the inventory's other nodes.
struct FileDriver {
    files: Files,
    debounce: Debounce<Fingerprint>,
    /// When the fingerprint of the last load was taken (wall clock, for the latency metric).
    loaded_at: SystemTime,
    peers: Vec<Target>,
    next_poll: Instant,
}

impl FileDriver {
    fn new(files: Files) -> FileDriver {
        FileDriver {
            debounce: Debounce::new(files.poll * DEBOUNCE_MAX_POLLS),
            files,
            loaded_at: SystemTime::now(),
            peers: Vec::new(),
            next_poll: Instant::now(),
        }
    }

    /// The poll interval now: a load asked for by SIGHUP that waits for files to hold still
    /// checks them soon.
    fn interval(&self) -> std::time::Duration {
        if self.debounce.asked() {
            self.files.poll.min(ASKED_POLL)
        } else {
            self.files.poll
        }
    }
}

impl Driver for FileDriver {
    type Message = Control;

    fn next_poll(&self) -> Option<Instant> {
        Some(self.next_poll)
    }

    fn poll(&mut self, shared: &Shared, now: Instant) -> Polled {
        let roots = [
            self.files.policy_dir.as_path(),
            self.files.inventory.as_path(),
        ];
        let fp = {
            let _step = shared.step("policy poll");
            fingerprint(&roots)
        };
        let taken = SystemTime::now();
        // The last load's fingerprint, for the change time: copied only when this poll's
        // differs (a load can follow), not on every quiet poll.
        let old = self
            .debounce
            .loaded()
            .filter(|loaded| **loaded != fp)
            .cloned()
            .unwrap_or_default();
        let asked = self.debounce.asked();
        if let Step::Load { first_seen, forced } = self.debounce.observe(fp, now) {
            // A checkout swapped in while the files were being read could mix old and new
            // files; such a read is dropped (unless forced: then the bound wins) and the
            // next poll sees the new fingerprint and loads it once it holds still.
            let debounce = &self.debounce;
            let unchanged = || forced || debounce.loaded() == Some(&fingerprint(&roots));
            if !load_and_apply(shared, &self.files, &mut self.peers, forced, unchanged) {
                if asked {
                    // Still owed: the files changed during the read.
                    self.debounce.force();
                }
                self.next_poll = now + self.interval();
                return Polled::Again;
            }
            let since = first_seen.zip(self.debounce.loaded()).map(|(seen, new)| {
                let ago = now.saturating_duration_since(seen);
                let seen_wall = taken.checked_sub(ago).unwrap_or(taken);
                change_time(&old, new, seen_wall, self.loaded_at)
            });
            record_applied(shared, since);
            self.loaded_at = taken;
        }
        self.next_poll = now + self.interval();
        Polled::Done
    }

    fn receive(&mut self, _shared: &Shared, messages: Vec<Control>) -> bool {
        let stop = messages.contains(&Control::Stop);
        if !stop {
            self.debounce.force();
            self.next_poll = Instant::now();
        }
        stop
    }

    fn scan(&mut self, shared: &Shared) {
        scan_peers(shared, &self.peers);
    }
}

/// The loop over `files`. Returns when `control` receives [`Control::Stop`] or its senders
/// are dropped; [`Control::Reload`] loads the documents after the current step. Messages that
/// queued up during a step are taken together: a `Stop` among them wins, `Reload`s are one.
pub fn run_loop(shared: &Shared, files: Files, control: &Receiver<Control>) {
    schedule::run(shared, &mut FileDriver::new(files), control);
}

/// Loads changed documents and converges to them (or, when they are invalid, keeps converging
/// to the last good intent).
///
/// Returns false, changing nothing, when `unchanged` says the files changed while they were
/// being read.
fn load_and_apply(
    shared: &Shared,
    files: &Files,
    peers: &mut Vec<Target>,
    forced: bool,
    unchanged: impl Fn() -> bool,
) -> bool {
    shared.metrics.policy_loads.inc();
    if forced {
        shared.metrics.policy_loads_forced.inc();
        info!(
            waited_polls = DEBOUNCE_MAX_POLLS,
            "policy files still changing; loading anyway (the next change is loaded after it)"
        );
    }
    match reload(shared, files, unchanged) {
        Reload::Loaded(p) => *peers = p,
        Reload::Invalid => {}
        Reload::ChangedWhileRead => {
            info!(
                "policy files changed while they were read; reading them again once they hold still"
            );
            return false;
        }
    }
    converge(shared, Reason::PolicyChange);
    true
}

/// What [`reload`] found.
enum Reload {
    /// Valid documents: the node's intent is stored; these are its peers.
    Loaded(Vec<Target>),
    /// Invalid documents: the last good intent stays, the error is recorded.
    Invalid,
    /// The files changed during the read: nothing was stored.
    ChangedWhileRead,
}

/// After a load: when the documents were valid and their rules are now in the kernel, records
/// when, and the time from the change (`since`; `None` for the first load) to now.
fn record_applied(shared: &Shared, since: Option<SystemTime>) {
    let applied = shared.with_state(|s| s.policy_error.is_none() && s.apply_error.is_none());
    if !applied {
        return;
    }
    let now = SystemTime::now();
    if let Some(since) = since {
        let latency = now.duration_since(since).unwrap_or_default();
        shared
            .metrics
            .policy_apply_latency
            .observe(latency.as_secs_f64());
    }
    if let Ok(t) = now.duration_since(SystemTime::UNIX_EPOCH) {
        shared.metrics.policy_applied_time.set(t.as_secs_f64());
    }
}

/// Loads the documents. On success stores the node's intent and returns its peers; on failure
/// keeps the last good intent and records the error; when `unchanged` says the files changed
/// during the read, stores nothing.
///
/// Invalid, besides documents the loader refuses: no PortPolicy document at all (unless
/// [`Files::allow_empty_policy`]), this node missing from the inventory, and a root that
/// is neither a directory nor a regular file (a FIFO would block the loop forever).
fn reload(shared: &Shared, files: &Files, unchanged: impl Fn() -> bool) -> Reload {
    let _step = shared.step("policy load");
    let (cfg, node) = (files, &shared.config.node);
    if let Some(msg) = irregular_root(&[&cfg.policy_dir, &cfg.inventory]) {
        return invalid(shared, msg);
    }
    let result = load_paths(&[&cfg.policy_dir])
        .and_then(|policies| load_paths(&[&cfg.inventory]).map(|inventory| (policies, inventory)));
    if !unchanged() {
        return Reload::ChangedWhileRead;
    }
    let (policies, inventory) = match result {
        Ok(ok) => ok,
        Err(diags) => {
            for d in &diags {
                error!(problem = %d.headline(), "invalid policy documents; keeping the last good state");
            }
            let summary: Vec<String> = diags.iter().map(|d| d.headline()).collect();
            return invalid_logged(shared, summary.join("\n"));
        }
    };
    for w in policies.warnings.iter().chain(&inventory.warnings) {
        warn!(problem = %w.headline(), "policy documents: warning");
    }
    if policies.policies.policies().is_empty() && !cfg.allow_empty_policy {
        return invalid(
            shared,
            format!(
                "no PortPolicy documents under {} ({} files read): taken for a failed render or checkout, not for \"remove every rule\"; keeping the last good state (to mean an empty policy set, start the agent with --allow-empty-policy, or keep a policy that selects no node)",
                cfg.policy_dir.display(),
                policies.files
            ),
        );
    }
    if inventory.node(node).is_none() {
        return invalid(
            shared,
            format!(
                "node \"{node}\" is not in the inventory {}; keeping the last good state",
                cfg.inventory.display()
            ),
        );
    }
    Reload::Loaded(take(shared, &policies.policies, &inventory.nodes))
}

/// Stores this node's intent compiled from valid documents (and counts it); returns the peers:
/// every other node's addresses with that node's intent.
fn take(shared: &Shared, policies: &PolicySet, nodes: &[Node]) -> Vec<Target> {
    let me = &shared.config.node;
    let intents: BTreeMap<String, Arc<NodeIntent>> = policies.compile_nodes(nodes);
    let mine = intents.get(me).cloned();
    let peers = nodes
        .iter()
        .filter(|n| &n.name != me)
        .flat_map(|n| {
            let intent = intents.get(&n.name).cloned().unwrap_or_default();
            n.addresses.iter().map(move |&address| Target {
                node: n.name.clone(),
                address,
                intent: intent.clone(),
            })
        })
        .collect();
    info!(
        policies = policies.policies().len(),
        rules = mine.as_ref().map_or(0, |i| i.rules.len()),
        "policy documents loaded"
    );
    shared.metrics.policy_valid.set(1);
    shared
        .metrics
        .intent_rules
        .set(mine.as_ref().map_or(0, |i| i.rules.len() as i64));
    let notes = Arc::new(portwarden_reconcile::html::entry_notes(policies));
    let mut state = shared.lock();
    state.policy_error = None;
    state.intent = mine;
    state.notes = notes;
    peers
}

/// The first of `roots` that exists but is neither a directory nor a regular file, as a
/// message: reading a FIFO nobody writes to would block the loop forever. (The walk opens only
/// regular files below a directory; a root is read whatever it is, as `validate` reads
/// `/dev/stdin`.)
fn irregular_root(roots: &[&Path]) -> Option<String> {
    roots.iter().find_map(|root| {
        let meta = std::fs::metadata(root).ok()?;
        (!meta.is_dir() && !meta.is_file()).then(|| {
            format!(
                "{}: error: not a regular file or a directory (a FIFO, socket or device); the agent does not read it, since that could block it forever",
                root.display()
            )
        })
    })
}

/// Records invalid input: `msg` logged, counted, served; the last good intent stays.
fn invalid(shared: &Shared, msg: String) -> Reload {
    error!(problem = %msg, "invalid policy documents; keeping the last good state");
    invalid_logged(shared, msg)
}

/// [`invalid`] for a message already logged.
fn invalid_logged(shared: &Shared, msg: String) -> Reload {
    shared.metrics.policy_load_errors.inc();
    shared.metrics.policy_valid.set(0);
    shared.lock().policy_error = Some(msg);
    Reload::Invalid
}

/// Runs the agent until SIGTERM or SIGINT: takes the network namespace's agent lock, binds
/// the HTTP endpoint, starts the loop, and on a signal stops both. Rules stay in place. SIGHUP
/// reloads the policy directory and the inventory after the current step (logged), whether
/// or not they changed.
///
/// # Errors
///
/// When `config`'s source is not [`Source::Files`], another agent manages this network
/// namespace (its pid and command are named), the lock directory cannot be used, the HTTP
/// address cannot be bound or the runtime cannot start.
pub fn run(config: AgentConfig) -> std::io::Result<()> {
    let Source::Files(files) = config.source.clone() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the standalone agent reads policy files: its source must be Source::Files",
        ));
    };
    let (control, commands) = std::sync::mpsc::channel();
    let hangup = control.clone();
    let policy_dir = files.policy_dir.clone();
    run_agent(
        config,
        move || {
            info!(
                "SIGHUP: reloading the policy directory and the inventory after the current step"
            );
            let _ = hangup.send(Control::Reload);
        },
        move |shared| run_loop(&shared, files, &commands),
        move |shared, shutdown| async move {
            let c = &shared.config;
            info!(node = %c.node, listen = %c.listen, policy_dir = %policy_dir.display(), "agent started");
            shutdown.await;
            let _ = control.send(Control::Stop);
            Ok(())
        },
    )?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::config;
    use std::path::PathBuf;
    use std::time::Duration;

    /// The files of a test's configuration.
    fn files(shared: &Shared) -> &Files {
        match &shared.config.source {
            Source::Files(files) => files,
            Source::Kube { .. } => panic!("a test agent reads files"),
        }
    }

    #[test]
    fn a_read_that_raced_a_change_stores_nothing() {
        let dir = std::env::temp_dir().join(format!("pw-agent-race-{}", std::process::id()));
        let policies = dir.join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        std::fs::write(
            policies.join("web.yaml"),
            "apiVersion: portwarden.io/v1alpha1\nkind: PortPolicy\nmetadata: {name: web}\nspec:\n  ports: [{ports: 80, state: closed}]\n",
        )
        .unwrap();
        let inventory = dir.join("inventory.yaml");
        std::fs::write(
            &inventory,
            "apiVersion: portwarden.io/v1alpha1\nkind: Inventory\nnodes:\n  - {name: n, addresses: [10.213.0.11]}\n  - {name: peer, addresses: [10.213.0.12]}\n",
        )
        .unwrap();
        let shared = Shared::new(config(policies, inventory, "127.0.0.1:9750"));
        // The files changed during the read: nothing is stored, no error either.
        assert!(matches!(
            reload(&shared, files(&shared), || false),
            Reload::ChangedWhileRead
        ));
        shared.with_state(|s| assert!(s.intent.is_none() && s.policy_error.is_none()));
        // The same read, unchanged: the intent and the peer are taken.
        let Reload::Loaded(peers) = reload(&shared, files(&shared), || true) else {
            panic!("valid documents not loaded");
        };
        assert_eq!(peers.len(), 1);
        shared.with_state(|s| assert_eq!(s.intent.as_ref().unwrap().rules.len(), 1));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A policy directory with `files`, an inventory of node `n` and a peer, and the agent's
    /// shared state over them (nothing runs; tests call [`reload`] themselves).
    fn agent_on(tag: &str, files: &[(&str, &str)]) -> (PathBuf, Arc<Shared>) {
        agent_allowing_empty(tag, files, false)
    }

    /// [`agent_on`] with `--allow-empty-policy` set to `allow`.
    fn agent_allowing_empty(
        tag: &str,
        files: &[(&str, &str)],
        allow: bool,
    ) -> (PathBuf, Arc<Shared>) {
        let dir = std::env::temp_dir().join(format!("pw-agent-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let policies = dir.join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        for (name, text) in files {
            std::fs::write(policies.join(name), text).unwrap();
        }
        let inventory = dir.join("inventory.yaml");
        std::fs::write(
            &inventory,
            "apiVersion: portwarden.io/v1alpha1\nkind: Inventory\nnodes:\n  - {name: n, addresses: [10.213.0.11]}\n  - {name: peer, addresses: [10.213.0.12]}\n",
        )
        .unwrap();
        let mut config = config(policies, inventory, "127.0.0.1:9750");
        if let Source::Files(files) = &mut config.source {
            files.allow_empty_policy = allow;
        }
        let shared = Shared::new(config);
        (dir, shared)
    }

    fn web_policy(name: &str, port: u16) -> String {
        format!(
            "apiVersion: portwarden.io/v1alpha1\nkind: PortPolicy\nmetadata: {{name: {name}}}\nspec:\n  ports: [{{ports: {port}, state: closed}}]\n"
        )
    }

    #[test]
    fn an_empty_render_or_an_emptied_directory_keeps_the_last_good_intent() {
        let (web, quarantine) = (web_policy("web", 80), web_policy("quarantine", 8080));
        let (dir, shared) = agent_on(
            "empty",
            &[("web.yaml", &web), ("quarantine.yaml", &quarantine)],
        );
        let policies = files(&shared).policy_dir.clone();
        assert!(matches!(
            reload(&shared, files(&shared), || true),
            Reload::Loaded(_)
        ));
        let rules = || shared.with_state(|s| s.intent.as_ref().map(|i| i.rules.len()));
        assert_eq!(rules(), Some(2));
        let errors_before = shared.metrics.policy_load_errors.get();
        let refused = |what: &str, message: &str| {
            assert!(
                matches!(reload(&shared, files(&shared), || true), Reload::Invalid),
                "{what}: taken for the intent"
            );
            assert_eq!(rules(), Some(2), "{what}: the last good intent stays");
            let error = shared
                .with_state(|s| s.policy_error.clone())
                .unwrap_or_default();
            assert!(error.contains(message), "{what}: {error}");
            assert_eq!(shared.metrics.policy_valid.get(), 0, "{what}");
        };
        // A render that failed (`cat /nonexistent > quarantine.yaml`): one file of two empty.
        std::fs::write(policies.join("quarantine.yaml"), "").unwrap();
        refused("a truncated file", "quarantine.yaml: error: file is empty");
        // Every file emptied, then every file gone.
        std::fs::write(policies.join("web.yaml"), "").unwrap();
        refused("every file empty", "web.yaml: error: file is empty");
        std::fs::remove_file(policies.join("web.yaml")).unwrap();
        std::fs::remove_file(policies.join("quarantine.yaml")).unwrap();
        refused("an emptied directory", "no PortPolicy documents");
        assert_eq!(shared.metrics.policy_load_errors.get(), errors_before + 3);
        // A policy that selects no node is a deliberate "nothing": taken.
        std::fs::write(
            policies.join("none.yaml"),
            web.replace(
                "spec:\n",
                "spec:\n  nodeSelector: {matchLabels: {nothing: here}}\n",
            ),
        )
        .unwrap();
        assert!(matches!(
            reload(&shared, files(&shared), || true),
            Reload::Loaded(_)
        ));
        assert_eq!(rules(), Some(0));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_empty_policy_set_is_the_intent_when_allowed() {
        let (dir, shared) =
            agent_allowing_empty("allowed", &[("web.yaml", &web_policy("web", 80))], true);
        assert!(matches!(
            reload(&shared, files(&shared), || true),
            Reload::Loaded(_)
        ));
        std::fs::remove_file(files(&shared).policy_dir.join("web.yaml")).unwrap();
        assert!(matches!(
            reload(&shared, files(&shared), || true),
            Reload::Loaded(_)
        ));
        shared.with_state(|s| {
            assert_eq!(s.intent.as_ref().map(|i| i.rules.len()), Some(0));
            assert!(s.policy_error.is_none());
        });
        // An empty file is still a failed render, allowed or not.
        std::fs::write(files(&shared).policy_dir.join("web.yaml"), "").unwrap();
        assert!(matches!(
            reload(&shared, files(&shared), || true),
            Reload::Invalid
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn steps_are_recorded_while_they_run() {
        let (dir, shared) = agent_on("steps", &[("web.yaml", &web_policy("web", 80))]);
        let seen = std::cell::Cell::new(None);
        // `unchanged` runs inside the load: the step is visible from there.
        let _ = reload(&shared, files(&shared), || {
            seen.set(shared.with_state(|s| s.step.map(|(what, _)| what)));
            true
        });
        assert_eq!(seen.get(), Some("policy load"));
        shared.with_state(|s| assert!(s.step.is_none(), "cleared after the step"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_first_load_of_no_documents_applies_nothing() {
        let (dir, shared) = agent_on("first", &[]);
        assert!(matches!(
            reload(&shared, files(&shared), || true),
            Reload::Invalid
        ));
        shared.with_state(|s| {
            assert!(s.intent.is_none(), "no intent: converge touches nothing");
            assert!(
                s.policy_error
                    .as_deref()
                    .is_some_and(|e| e.contains("no PortPolicy documents")),
                "{:?}",
                s.policy_error
            );
        });
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn mkfifo(path: &Path) {
        let made = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .unwrap();
        assert!(made.success());
    }

    #[test]
    fn a_fifo_named_as_the_inventory_is_refused_not_opened() {
        // Opening a FIFO nobody writes to blocks forever: the loop would stop repairing rules.
        let (dir, shared) = agent_on("fifo", &[("web.yaml", &web_policy("web", 80))]);
        let inventory = files(&shared).inventory.clone();
        std::fs::remove_file(&inventory).unwrap();
        mkfifo(&inventory);
        let (tx, rx) = std::sync::mpsc::channel();
        let loader = shared.clone();
        std::thread::spawn(move || {
            let invalid = matches!(reload(&loader, files(&loader), || true), Reload::Invalid);
            let _ = tx.send(invalid);
        });
        let invalid = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the load did not finish within 20 s: the FIFO was opened");
        assert!(invalid);
        let error = shared.with_state(|s| s.policy_error.clone()).unwrap();
        assert!(error.contains("not a regular file"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fingerprint_sees_entries_the_walk_refuses() {
        // A FIFO (or a link out of the tree) is reported by the load, not read: it must still
        // change the fingerprint, or the agent would not reload and never serve the error.
        let (dir, shared) = agent_on("fp-refused", &[("web.yaml", &web_policy("web", 80))]);
        let policies = files(&shared).policy_dir.clone();
        // In a subdirectory: an entry added to the root changes the root's own time already.
        std::fs::create_dir(policies.join("sub")).unwrap();
        let before = fingerprint(&[&policies]);
        mkfifo(&policies.join("sub/pipe.yaml"));
        assert_ne!(before, fingerprint(&[&policies]));
        // A link out of the tree, likewise: not followed, but reported, so it counts.
        let before = fingerprint(&[&policies]);
        std::os::unix::fs::symlink(dir.join("inventory.yaml"), policies.join("sub/out.yaml"))
            .unwrap();
        assert_ne!(before, fingerprint(&[&policies]));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
