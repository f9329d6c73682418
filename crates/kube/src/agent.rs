//! `portwarden agent --kube`: the node agent in a cluster. Policies are `PortPolicy` objects,
//! the node's labels and addresses come from its `Node`, peers from the node list, and the
//! outcome goes to the node's `PortReport`.
//!
//! A key design decision is that the netfilter side is exactly the standalone agent's: the same
//! [`Shared`] state, [`converge`] and [`scan_peers`] from `portwarden-agent`, driven by the
//! same schedule ([`schedule::run`]) on a plain thread that does one thing at a time, and the
//! same HTTP endpoints. Only the *source* differs:
//! a tokio task keeps kube-runtime reflectors of PortPolicies and Nodes (the watcher lists,
//! watches, restarts with backoff and relists after `410 Gone`), recomputes the node's plan
//! with the pure [`plan_node`] on every change, and hands the thread a new plan only when it
//! differs. The thread hands back outcomes (applied, scanned), and the task writes them to the
//! `PortReport` by server-side apply ([`apply_report`]) when the report's content changed.
//!
//! # Guarantees
//!
//! * A policy that the schema admitted but [`portwarden_policy::validate`] refuses is never
//!   applied, not even in part. If an earlier generation of it was valid, that generation stays
//!   applied (a typo does not lift a quarantine); the report's `applied` list keeps the old
//!   generation, so the controller shows the policy as not applied at its current generation.
//! * Nothing is applied before both watches have listed once (an empty cache is not "no
//!   policies"), nor while the node's own Node object is unknown.
//! * Peers are those [`crate::assign::peers`] gives over the ready nodes; each peer's expected
//!   state is its own intent evaluated for this node's address (the vantage), as in `verify`.
//! * One agent per network namespace: a second one (standalone or `--kube`) refuses to start,
//!   naming the first (`portwarden_agent::process::take_agent_lock`).
//! * Shutdown leaves the rules in place.
//!
//! # Caveats
//!
//! Every agent watches every Node (labels and addresses of its peers); `docs/scaling.md`
//! estimates what that costs at 1,000 nodes.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::mpsc::Receiver;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use portwarden_agent::converge::converge;
use portwarden_agent::lifecycle::backoff;
use portwarden_agent::process::run_agent;
use portwarden_agent::scan::scan_peers;
use portwarden_agent::schedule::{self, Driver};
use portwarden_agent::{AgentConfig, Reason, Shared, Source};
use portwarden_policy::{API_VERSION, NodeIntent, Policy, PolicySet, Unlisted};
use portwarden_reconcile::Target;
use prometheus_client::metrics::counter::Counter;
use tracing::{info, warn};

use crate::crd::{AppliedPolicy, PortPolicy, PortReport, PortReportSpec};
use crate::policy::{issues_text, validate};
use crate::report::{self, Applied, REPORT_HEARTBEAT, Scan};
use crate::{AGENT_MANAGER, Error};

/// What the agent needs of a Node.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeInfo {
    /// Name.
    pub name: String,
    /// UID (for the PortReport's owner reference).
    pub uid: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// `InternalIP` addresses, or `ExternalIP` ones when it has none.
    pub addresses: Vec<IpAddr>,
    /// Whether its `Ready` condition is `True`.
    pub ready: bool,
}

/// Reads the parts of a Node the agent uses.
pub fn node_info(n: &Node) -> NodeInfo {
    let status = n.status.as_ref();
    let addresses_of = |kind: &str| -> Vec<IpAddr> {
        status
            .and_then(|s| s.addresses.as_ref())
            .map(|a| {
                a.iter()
                    .filter(|a| a.type_ == kind)
                    .filter_map(|a| a.address.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut addresses = addresses_of("InternalIP");
    if addresses.is_empty() {
        addresses = addresses_of("ExternalIP");
    }
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    NodeInfo {
        name: n.name_any(),
        uid: n.metadata.uid.clone(),
        labels: n.labels().clone(),
        addresses,
        ready,
    }
}

/// The last good version of every policy, and the problems of the current ones.
#[derive(Clone, Debug, Default)]
pub struct PolicyCache {
    good: BTreeMap<String, (i64, Policy)>,
    invalid: BTreeMap<String, String>,
}

impl PolicyCache {
    /// Brings the cache in line with the current objects: a valid object replaces its entry,
    /// an invalid one keeps the last good version (if any) and is recorded as invalid, a
    /// vanished one is dropped.
    pub fn update(&mut self, objects: &[Arc<PortPolicy>]) {
        let mut invalid = BTreeMap::new();
        let mut good = BTreeMap::new();
        for o in objects {
            let name = o.name_any();
            let generation = o.metadata.generation.unwrap_or_default();
            match validate(o) {
                Ok(p) => {
                    good.insert(name, (generation, p));
                }
                Err(issues) => {
                    if let Some(previous) = self.good.remove(&name) {
                        good.insert(name.clone(), previous);
                    }
                    invalid.insert(name, issues_text(&issues));
                }
            }
        }
        self.good = good;
        self.invalid = invalid;
    }

    /// Names of invalid policies with their problems.
    pub fn invalid(&self) -> &BTreeMap<String, String> {
        &self.invalid
    }
}

/// What the node must do: its intent, and whom to scan with what expectations.
#[derive(Clone, Debug, Default)]
pub struct NodePlan {
    /// The node's intent; `None` while its Node object is unknown.
    pub intent: Option<Arc<NodeIntent>>,
    /// The policies in the intent, with their generations.
    pub applied: Vec<AppliedPolicy>,
    /// Invalid policies, one line each (kept out of the intent).
    pub policy_error: Option<String>,
    /// The peers' addresses with their intents.
    pub peers: Vec<Target>,
    /// The peers' names.
    pub peer_names: Vec<String>,
    /// For each peer, its `unlisted: report` policies.
    pub unlisted: BTreeMap<String, Vec<String>>,
    /// The node's UID, for the report's owner reference.
    pub uid: Option<String>,
    /// Every entry with an expiry of the policies in the intent, passed or not: each
    /// refresh reports those passed by then ([`crate::expired::passed`]).
    pub expiring: Vec<crate::crd::NodeExpiredEntry>,
    /// What `explain` says of every entry of the valid policies (their reasons), for the
    /// agent's page (a policy's reason changes with its generation, which `applied` holds).
    pub notes: Arc<portwarden_reconcile::html::EntryNotes>,
}

impl NodePlan {
    /// Whether two plans would make the loop do the same thing.
    fn same_as(&self, other: &NodePlan) -> bool {
        let targets = |p: &NodePlan| -> Vec<(String, IpAddr, Arc<NodeIntent>)> {
            p.peers
                .iter()
                .map(|t| (t.node.clone(), t.address, t.intent.clone()))
                .collect()
        };
        self.intent == other.intent
            && self.applied == other.applied
            && self.policy_error == other.policy_error
            && targets(self) == targets(other)
            && self.unlisted == other.unlisted
            && self.expiring == other.expiring
    }
}

/// The addresses of the peers `names` with their intents (evaluated as `wanted` and
/// `intents` say), and for each peer its `unlisted: report` policies.
fn peer_targets(
    set: &PolicySet,
    intents: &BTreeMap<String, Arc<NodeIntent>>,
    wanted: &[portwarden_policy::Node],
    peer_names: &[String],
) -> (Vec<Target>, BTreeMap<String, Vec<String>>) {
    let report_policies: Vec<&str> = set
        .policies()
        .iter()
        .filter(|p| p.unlisted == Unlisted::Report)
        .map(|p| p.name.as_str())
        .collect();
    let mut peers = Vec::new();
    let mut unlisted = BTreeMap::new();
    for name in peer_names {
        let Some(node) = wanted.iter().find(|n| &n.name == name) else {
            continue;
        };
        let peer_intent = intents.get(name).cloned().unwrap_or_default();
        let u: Vec<String> = peer_intent
            .policies
            .iter()
            .filter(|p| report_policies.contains(&&***p))
            .map(|p| p.to_string())
            .collect();
        if !u.is_empty() {
            unlisted.insert(name.clone(), u);
        }
        peers.extend(node.addresses.iter().map(|&address| Target {
            node: name.clone(),
            address,
            intent: peer_intent.clone(),
        }));
    }
    (peers, unlisted)
}

/// The plan of node `me`: its intent from the cached policies and its Node's labels, and its
/// assigned ready peers with their intents.
pub fn plan_node(
    me: &str,
    cache: &PolicyCache,
    nodes: &[NodeInfo],
    peers_per_node: usize,
) -> NodePlan {
    let policy_error = (!cache.invalid.is_empty()).then(|| {
        cache
            .invalid
            .iter()
            .map(|(n, e)| format!("PortPolicy {n}: {e}"))
            .collect::<Vec<_>>()
            .join("\n")
    });
    let Some(own) = nodes.iter().find(|n| n.name == me) else {
        return NodePlan {
            policy_error,
            ..NodePlan::default()
        };
    };
    let generations: BTreeMap<&str, i64> = cache
        .good
        .iter()
        .map(|(n, (g, _))| (n.as_str(), *g))
        .collect();
    let set = PolicySet::new(cache.good.values().map(|(_, p)| p.clone()).collect());
    let ready: Vec<String> = nodes
        .iter()
        .filter(|n| n.ready)
        .map(|n| n.name.clone())
        .collect();
    let peer_names = crate::assign::peers(&ready, me, peers_per_node);
    let wanted: Vec<portwarden_policy::Node> = nodes
        .iter()
        .filter(|n| n.name == me || peer_names.contains(&n.name))
        .map(|n| portwarden_policy::Node {
            name: n.name.clone(),
            addresses: n.addresses.clone(),
            labels: n.labels.clone(),
        })
        .collect();
    let intents = set.compile_nodes(&wanted);
    let intent = intents.get(me).cloned().unwrap_or_default();
    let (peers, unlisted) = peer_targets(&set, &intents, &wanted, &peer_names);
    let expiring = crate::expired::expiring(
        set.policies()
            .iter()
            .filter(|p| intent.policies.iter().any(|n| **n == *p.name)),
    );
    NodePlan {
        notes: Arc::new(portwarden_reconcile::html::entry_notes(&set)),
        expiring,
        applied: intent
            .policies
            .iter()
            .map(|p| AppliedPolicy {
                name: p.to_string(),
                generation: generations.get(&**p).copied().unwrap_or_default(),
            })
            .collect(),
        intent: Some(intent),
        policy_error,
        peers,
        peer_names,
        unlisted,
        uid: own.uid.clone(),
    }
}

/// The server-side apply body of a node's report: the whole spec, owned by the node (so the
/// report goes when the Node goes).
pub fn report_object(spec: &PortReportSpec, node_uid: Option<&str>) -> serde_json::Value {
    let mut metadata = serde_json::json!({ "name": spec.node });
    if let Some(uid) = node_uid {
        let owner = OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: spec.node.clone(),
            uid: uid.into(),
            ..OwnerReference::default()
        };
        metadata["ownerReferences"] = serde_json::json!([owner]);
    }
    serde_json::json!({
        "apiVersion": API_VERSION,
        "kind": "PortReport",
        "metadata": metadata,
        "spec": spec,
    })
}

/// Writes a node's report by server-side apply with the agent's field manager, creating it if
/// needed.
///
/// # Errors
///
/// [`Error::ApplyReport`] when the API server refuses or cannot be reached.
pub async fn apply_report(
    api: &Api<PortReport>,
    spec: &PortReportSpec,
    node_uid: Option<&str>,
) -> Result<PortReport, Error> {
    let params = PatchParams::apply(AGENT_MANAGER).force();
    api.patch(
        &spec.node,
        &params,
        &Patch::Apply(report_object(spec, node_uid)),
    )
    .await
    .map_err(|source| Error::ApplyReport {
        name: spec.node.clone(),
        source,
    })
}

/// What the reconcile thread tells the watch task.
#[derive(Debug)]
enum Outcome {
    Applied(Applied),
    Scanned(Scan),
}

/// The Kubernetes agent's side of the schedule ([`schedule::run`]): applies each new plan the
/// watch task sends, tells it what was applied after every apply and refresh, and scans the
/// plan's peers. The loop returns when the plan sender is dropped.
struct PlanDriver {
    plan: Option<NodePlan>,
    outcomes: tokio::sync::mpsc::UnboundedSender<Outcome>,
}

impl PlanDriver {
    /// Tells the watch task what `plan` applied, whether the last apply failed, which of its
    /// entries have expired by now, and the last refresh's per-entry counts.
    fn send_applied(&self, shared: &Shared, plan: &NodePlan) {
        // The shared intent, not the plan's: a refresh drops the rules of expired entries.
        let (error, rules) = shared.with_state(|s| {
            let rules = s.intent.as_ref().or(plan.intent.as_ref());
            (
                s.apply_error.clone(),
                rules.map_or(0, |i| i.rules.len() as u32),
            )
        });
        let (counted, counted_at) = shared.entry_counts();
        let _ = self.outcomes.send(Outcome::Applied(Applied {
            policies: plan.applied.clone(),
            rules,
            error,
            expired: crate::expired::passed(&plan.expiring, &Time(Timestamp::now())),
            entries: report::entry_counts(&counted),
            counted_at: counted_at
                .and_then(|t| Timestamp::from_second(t.unix()).ok())
                .map(Time),
        }));
    }
}

impl Driver for PlanDriver {
    type Message = NodePlan;

    fn receive(&mut self, shared: &Shared, plans: Vec<NodePlan>) -> bool {
        for p in plans {
            shared.set_intent(p.intent.clone(), p.policy_error.clone());
            shared.set_notes(p.notes.clone());
            if let Some(e) = &p.policy_error {
                warn!(problems = %e, "invalid PortPolicies are not applied (their last good generation stays)");
            }
            shared
                .metrics
                .policy_valid
                .set(i64::from(p.policy_error.is_none()));
            shared
                .metrics
                .intent_rules
                .set(p.intent.as_ref().map_or(0, |i| i.rules.len() as i64));
            converge(shared, Reason::PolicyChange);
            self.send_applied(shared, &p);
            self.plan = Some(p);
        }
        false
    }

    fn refreshed(&mut self, shared: &Shared) {
        if let Some(p) = &self.plan {
            self.send_applied(shared, p);
        }
    }

    fn scan(&mut self, shared: &Shared) {
        let Some(p) = &self.plan else {
            return;
        };
        let report = if p.peers.is_empty() {
            Some(portwarden_reconcile::Report::default())
        } else {
            scan_peers(shared, &p.peers)
        };
        if let Some(report) = report {
            let _ = self.outcomes.send(Outcome::Scanned(Scan {
                report,
                at: Time(Timestamp::now()),
                peers: p.peer_names.clone(),
                unlisted: p.unlisted.clone(),
            }));
        }
    }
}

/// The reconcile thread: applies each new plan, repairs every `refresh`, scans every
/// `scan_interval`. Returns when the plan sender is dropped.
fn reconcile_loop(
    shared: &Shared,
    plans: &Receiver<NodePlan>,
    outcomes: tokio::sync::mpsc::UnboundedSender<Outcome>,
) {
    let mut driver = PlanDriver {
        plan: None,
        outcomes,
    };
    schedule::run(shared, &mut driver, plans);
}

/// Which watch an event came from, and whether it completed a (re)list.
enum Change {
    Policies(bool),
    Nodes(bool),
    Failed(String),
}

fn change<K>(r: Result<Event<K>, watcher::Error>, tag: fn(bool) -> Change) -> Change {
    match r {
        Ok(Event::InitDone) => tag(true),
        Ok(_) => tag(false),
        Err(e) => Change::Failed(e.to_string()),
    }
}

/// Runs the agent until SIGTERM or SIGINT. SIGHUP is logged and ignored: the policies come
/// from the API server's watch, there is nothing to reload. The process around the loop —
/// agent lock, signals, descriptor limit, HTTP server — is the standalone agent's
/// ([`run_agent`]).
///
/// # Errors
///
/// When `cfg`'s source is not [`Source::Kube`], no Kubernetes client can be configured,
/// another agent manages this network namespace (it is named), the HTTP address cannot be
/// bound, or the runtime cannot start. API errors while running are retried, not returned.
pub fn run(cfg: AgentConfig) -> Result<(), Error> {
    let Source::Kube { peers_per_node } = cfg.source else {
        return Err(Error::Start(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the Kubernetes agent watches the cluster: its source must be Source::Kube",
        )));
    };
    let (plan_tx, plan_rx) = std::sync::mpsc::channel();
    let (out_tx, out_rx) = tokio::sync::mpsc::unbounded_channel();
    let (me, listen) = (cfg.node.clone(), cfg.listen);
    run_agent(
        cfg,
        || info!("SIGHUP ignored: in Kubernetes mode policies come from the API server's watch, there is nothing to reload"),
        move |shared| reconcile_loop(&shared, &plan_rx, out_tx),
        move |shared, shutdown| async move {
            let client = Client::try_default().await.map_err(Error::Client)?;
            info!(node = %me, listen = %listen, "agent started in Kubernetes mode");
            let counters = (
                shared.metrics.report_writes.clone(),
                shared.metrics.report_write_errors.clone(),
            );
            // Returns on SIGTERM or SIGINT, dropping `plan_tx`: that stops the loop.
            watch_and_report(client, counters, (me, peers_per_node), plan_tx, out_rx, shutdown)
                .await;
            Ok(())
        },
    )
    .map_err(Error::Start)?
}

/// The watch task: reflectors in, plans to the loop, reports out. Returns when `shutdown`
/// completes (dropping `plans`, which stops the loop).
async fn watch_and_report(
    client: Client,
    (writes, write_errors): (Counter, Counter),
    (me, peers_per_node): (String, usize),
    plans: std::sync::mpsc::Sender<NodePlan>,
    mut outcomes: tokio::sync::mpsc::UnboundedReceiver<Outcome>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let reports: Api<PortReport> = Api::all(client.clone());
    let (policies, policy_writer) = reflector::store::<PortPolicy>();
    let (nodes, node_writer) = reflector::store::<Node>();
    let policy_events = reflector::reflector(
        policy_writer,
        watcher::watcher(
            Api::<PortPolicy>::all(client.clone()),
            watcher::Config::default().any_semantic(),
        ),
    )
    .default_backoff()
    .map(|r| change(r, Change::Policies));
    // Managed fields and images are most of a Node's bytes and none of our business.
    // Without peer scans the agent needs its own Node only: one object instead of all of them.
    let node_config = if peers_per_node == 0 {
        watcher::Config::default().fields(&format!("metadata.name={me}"))
    } else {
        watcher::Config::default()
    };
    let node_events = reflector::reflector(
        node_writer,
        watcher::watcher(Api::<Node>::all(client), node_config).modify(|n: &mut Node| {
            n.managed_fields_mut().clear();
            if let Some(s) = n.status.as_mut() {
                s.images = None;
            }
        }),
    )
    .default_backoff()
    .map(|r| change(r, Change::Nodes));
    let mut changes = std::pin::pin!(futures::stream::select(policy_events, node_events));
    let mut state = AgentState::new(me, peers_per_node);
    state.writes = writes;
    state.write_errors = write_errors;
    let mut retry: Option<tokio::time::Instant> = None;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            Some(c) = changes.next() => {
                if let Some(plan) = state.on_change(c, &policies, &nodes)
                    && plans.send(plan).is_err()
                {
                    return;
                }
            }
            Some(o) = outcomes.recv() => {
                state.on_outcome(o);
                retry = Some(tokio::time::Instant::now());
            }
            _ = tokio::time::sleep_until(retry.unwrap_or_else(tokio::time::Instant::now)), if retry.is_some() => {
                retry = state.write(&reports, Time(Timestamp::now())).await;
            }
        }
    }
}

/// The watch task's state: readiness, the policy cache, the last plan, and the report.
struct AgentState {
    me: String,
    peers_per_node: usize,
    policies_listed: bool,
    nodes_listed: bool,
    cache: PolicyCache,
    last: Option<NodePlan>,
    applied: Applied,
    scan: Option<Scan>,
    written: Option<PortReportSpec>,
    failures: u32,
    writes: Counter,
    write_errors: Counter,
}

impl AgentState {
    fn new(me: String, peers_per_node: usize) -> AgentState {
        AgentState {
            me,
            peers_per_node,
            policies_listed: false,
            nodes_listed: false,
            cache: PolicyCache::default(),
            last: None,
            applied: Applied::default(),
            scan: None,
            written: None,
            failures: 0,
            writes: Counter::default(),
            write_errors: Counter::default(),
        }
    }

    /// A watch event: recompute the plan; return it when it differs from the last one.
    fn on_change(
        &mut self,
        c: Change,
        policies: &Store<PortPolicy>,
        nodes: &Store<Node>,
    ) -> Option<NodePlan> {
        match c {
            Change::Policies(done) => self.policies_listed |= done,
            Change::Nodes(done) => self.nodes_listed |= done,
            Change::Failed(e) => {
                warn!(error = %e, "watch failed; retrying with backoff");
                return None;
            }
        }
        if !(self.policies_listed && self.nodes_listed) {
            return None;
        }
        self.cache.update(&policies.state());
        let infos: Vec<NodeInfo> = nodes.state().iter().map(|n| node_info(n)).collect();
        let plan = plan_node(&self.me, &self.cache, &infos, self.peers_per_node);
        if plan.intent.is_none() {
            warn!(node = %self.me, "this node's Node object is not in the cluster (yet); nothing applied");
        }
        if self.last.as_ref().is_some_and(|l| l.same_as(&plan)) {
            return None;
        }
        self.last = Some(plan.clone());
        Some(plan)
    }

    fn on_outcome(&mut self, o: Outcome) {
        match o {
            Outcome::Applied(a) => self.applied = a,
            Outcome::Scanned(s) => self.scan = Some(s),
        }
    }

    /// Writes the report (stamped `reportedAt: now`) if its content changed, or if the written
    /// one is older than [`REPORT_HEARTBEAT`]; returns when to retry after a failure.
    ///
    /// A scan that sees what the last one saw therefore costs no API write (at 1,000 nodes
    /// scanning every minute that is 17 writes/s saved, and as many controller reconciles),
    /// while `reportedAt` still tells a live agent from a dead one (the controller calls a
    /// report older than [`crate::aggregate::SILENT_AFTER`] silent).
    async fn write(&mut self, api: &Api<PortReport>, now: Time) -> Option<tokio::time::Instant> {
        let mut spec = report::build(&self.me, &self.applied, self.scan.as_ref());
        if let Some(written) = &self.written {
            let heartbeat = k8s_openapi::jiff::SignedDuration::try_from(REPORT_HEARTBEAT)
                .unwrap_or(k8s_openapi::jiff::SignedDuration::MAX);
            let fresh = written
                .reported_at
                .as_ref()
                .is_none_or(|old| now.0.duration_since(old.0) < heartbeat);
            if fresh && report::undated(written) == report::undated(&spec) {
                return None;
            }
        }
        spec.reported_at = Some(now);
        let uid = self.last.as_ref().and_then(|p| p.uid.clone());
        match apply_report(api, &spec, uid.as_deref()).await {
            Ok(_) => {
                self.writes.inc();
                self.failures = 0;
                self.written = Some(spec);
                None
            }
            Err(e) => {
                self.failures += 1;
                self.write_errors.inc();
                let delay = backoff(self.failures);
                warn!(error = %e, retry_in = ?delay, "PortReport not written");
                Some(tokio::time::Instant::now() + delay)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{node, policy};
    use portwarden_reconcile::Verdict;
    use std::time::Duration;

    fn infos(nodes: &[Node]) -> Vec<NodeInfo> {
        nodes.iter().map(node_info).collect()
    }

    #[test]
    fn node_info_reads_addresses_labels_and_readiness() {
        let n = node("web-1", "web", "10.0.0.11", true);
        let i = node_info(&n);
        assert_eq!(i.addresses, vec!["10.0.0.11".parse::<IpAddr>().unwrap()]);
        assert_eq!(i.labels["role"], "web");
        assert!(i.ready);
        assert!(!node_info(&node("x", "web", "10.0.0.9", false)).ready);
    }

    #[test]
    fn plan_uses_own_labels_and_peer_intents_for_this_vantage() {
        let mut cache = PolicyCache::default();
        cache.update(&[
            Arc::new(policy("quarantine", 4, "web")),
            Arc::new(policy("db", 1, "db")),
        ]);
        let nodes = infos(&[
            node("web-1", "web", "10.0.0.11", true),
            node("web-2", "web", "10.0.0.12", true),
            node("db-1", "db", "10.0.0.13", true),
        ]);
        let plan = plan_node("web-1", &cache, &nodes, 2);
        let intent = plan.intent.as_ref().unwrap();
        assert_eq!(
            intent
                .policies
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>(),
            vec!["quarantine"]
        );
        assert_eq!(
            plan.applied,
            vec![AppliedPolicy {
                name: "quarantine".into(),
                generation: 4
            }]
        );
        assert_eq!(plan.peer_names.len(), 2);
        assert!(!plan.peer_names.contains(&"web-1".to_string()));
        for t in &plan.peers {
            let expected_policy = if t.node == "db-1" { "db" } else { "quarantine" };
            assert_eq!(&*t.intent.policies[0], expected_policy);
        }
        // Not in the cluster yet: no intent, nothing applied.
        assert!(plan_node("ghost", &cache, &nodes, 2).intent.is_none());
    }

    #[test]
    fn an_invalid_edit_keeps_the_last_good_generation() {
        let mut cache = PolicyCache::default();
        let good = policy("quarantine", 1, "web");
        cache.update(&[Arc::new(good.clone())]);
        let mut bad = good.clone();
        bad.metadata.generation = Some(2);
        bad.spec.0.ports[0].ports = portwarden_policy::document::Ports::Text("99999".into());
        cache.update(&[Arc::new(bad)]);
        let nodes = infos(&[node("web-1", "web", "10.0.0.11", true)]);
        let plan = plan_node("web-1", &cache, &nodes, 1);
        assert_eq!(
            plan.applied,
            vec![AppliedPolicy {
                name: "quarantine".into(),
                generation: 1
            }]
        );
        assert!(
            plan.policy_error
                .as_deref()
                .unwrap()
                .contains("PortPolicy quarantine: spec.ports[0].ports")
        );
        assert_eq!(plan.intent.unwrap().rules.len(), 2);
        // A policy that was never valid contributes nothing.
        let mut never = policy("never", 1, "web");
        never.spec.0.ports[0].from = vec!["10.0.0.5/24".into()];
        cache.update(&[Arc::new(never)]);
        let plan = plan_node("web-1", &cache, &nodes, 1);
        assert!(plan.applied.is_empty());
        assert!(plan.intent.unwrap().rules.is_empty());
    }

    /// An entry that has expired is not in the intent, but the plan keeps it (with the ones
    /// still to come) so each refresh reports the ones passed by then.
    #[test]
    fn plan_keeps_the_expiring_entries_of_the_nodes_policies() {
        let mut q = policy("quarantine", 1, "web");
        q.spec.0.ports[0].expires = Some("2020-01-01T00:00:00Z".into());
        q.spec.0.ports[1].expires = Some("2038-01-01T00:00:00Z".into());
        let mut other = policy("db", 1, "db");
        other.spec.0.ports[0].expires = Some("2020-01-01T00:00:00Z".into());
        let mut cache = PolicyCache::default();
        cache.update(&[Arc::new(q), Arc::new(other)]);
        let nodes = infos(&[node("web-1", "web", "10.0.0.11", true)]);
        let plan = plan_node("web-1", &cache, &nodes, 1);
        assert_eq!(plan.intent.as_ref().unwrap().rules.len(), 1);
        let kept: Vec<(&str, u32)> = plan
            .expiring
            .iter()
            .map(|e| (e.policy.as_str(), e.entry.entry))
            .collect();
        assert_eq!(kept, vec![("quarantine", 0), ("quarantine", 1)]);
        let passed = crate::expired::passed(&plan.expiring, &Time(Timestamp::now()));
        assert_eq!(passed.len(), 1);
        assert_eq!(
            passed[0].entry.expires.0.to_string(),
            "2020-01-01T00:00:00Z"
        );
    }

    /// The report goes out by server-side apply with the agent's field manager and the Node as
    /// owner; an unchanged report is not rewritten; a refused write is retried with backoff.
    #[tokio::test]
    async fn report_is_applied_once_per_change_and_retried_on_errors() {
        let (client, server) = crate::fixtures::ApiServer::new();
        let api: Api<PortReport> = Api::all(client);
        let mut state = AgentState::new("web-1".into(), 2);
        state.last = Some(NodePlan {
            uid: Some("uid-web-1".into()),
            ..NodePlan::default()
        });
        state.on_outcome(Outcome::Applied(Applied {
            policies: vec![AppliedPolicy {
                name: "quarantine".into(),
                generation: 3,
            }],
            rules: 2,
            error: None,
            expired: vec![crate::crd::NodeExpiredEntry {
                policy: "quarantine".into(),
                entry: crate::crd::ExpiredEntry {
                    entry: 1,
                    ports: "80".into(),
                    protocol: "tcp".into(),
                    expires: Time(Timestamp::from_second(3).unwrap()),
                },
            }],
            ..Applied::default()
        }));
        let at = |secs: i64| Time(Timestamp::from_second(secs).unwrap());
        let script = server.run(|mut s| async move {
            s.refuse_report_apply("web-1", 503).await;
            let body = s.expect_report_apply("web-1").await;
            assert_eq!(
                body,
                serde_json::json!({
                    "apiVersion": "portwarden.io/v1alpha1",
                    "kind": "PortReport",
                    "metadata": {
                        "name": "web-1",
                        "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "web-1", "uid": "uid-web-1"}]
                    },
                    "spec": {
                        "node": "web-1",
                        "applied": [{"name": "quarantine", "generation": 3}],
                        "rules": 2,
                        "expiredEntries": [{"policy": "quarantine", "entry": 1, "ports": "80", "protocol": "tcp", "expires": "1970-01-01T00:00:03Z"}],
                        "summary": {"inSync": 0, "drift": 0, "indeterminate": 0},
                        "omittedFindings": 0,
                        "reportedAt": "1970-01-01T00:00:10Z"
                    }
                })
            );
            s
        });
        assert!(
            state.write(&api, at(5)).await.is_some(),
            "a refused write is retried"
        );
        assert_eq!(state.failures, 1);
        assert!(state.write(&api, at(10)).await.is_none());
        assert_eq!(state.failures, 0);
        assert_eq!((state.writes.get(), state.write_errors.get()), (1, 1));
        let server = script.await.unwrap();
        // Nothing changed: no request.
        assert!(state.write(&api, at(20)).await.is_none());
        // A scan that saw nothing new a minute later: still no request.
        let scan = |secs: i64| Scan {
            report: portwarden_reconcile::Report::default(),
            at: Time(Timestamp::from_second(secs).unwrap()),
            peers: vec!["web-2".into()],
            unlisted: BTreeMap::new(),
        };
        state.on_outcome(Outcome::Scanned(scan(1_000)));
        let script = server.run(|mut s| async move {
            let body = s.expect_report_apply("web-1").await;
            assert_eq!(body["spec"]["scannedAt"], "1970-01-01T00:16:40Z");
            assert_eq!(body["spec"]["reportedAt"], "1970-01-01T00:16:41Z");
            let body = s.expect_report_apply("web-1").await;
            assert_eq!(body["spec"]["scannedAt"], "1970-01-01T00:27:40Z");
            assert_eq!(body["spec"]["reportedAt"], "1970-01-01T00:27:41Z");
            s
        });
        assert!(
            state.write(&api, at(1_001)).await.is_none(),
            "new peers: written"
        );
        state.on_outcome(Outcome::Scanned(scan(1_060)));
        assert!(
            state.write(&api, at(1_061)).await.is_none(),
            "same content: not written"
        );
        state.on_outcome(Outcome::Scanned(scan(1_000 + 660)));
        assert!(
            state.write(&api, at(1_661)).await.is_none(),
            "heartbeat: written"
        );
        script.await.unwrap().done().await;
    }

    /// The agent's whole watch task over the scripted API server: it lists and watches
    /// PortPolicies and Nodes, sends the loop (played by the test) the node's plan, and writes
    /// the loop's outcome to the node's PortReport by server-side apply.
    #[tokio::test]
    async fn watch_task_plans_and_reports() {
        let (client, server) = crate::fixtures::ApiServer::new();
        let server = tokio::spawn(server.serve_until_apply(
            vec![policy("quarantine", 3, "web")],
            vec![],
            vec![
                node("web-1", "web", "10.0.0.11", true),
                node("web-2", "web", "10.0.0.12", true),
            ],
        ));
        let (plan_tx, plan_rx) = std::sync::mpsc::channel::<NodePlan>();
        let (out_tx, out_rx) = tokio::sync::mpsc::unbounded_channel();
        // The loop's part: take the plan, answer with what it applied.
        let looper = std::thread::spawn(move || {
            let plan = plan_rx.recv().unwrap();
            out_tx
                .send(Outcome::Applied(Applied {
                    policies: plan.applied.clone(),
                    rules: plan.intent.as_ref().map_or(0, |i| i.rules.len() as u32),
                    error: None,
                    ..Applied::default()
                }))
                .unwrap();
            plan
        });
        let task = watch_and_report(
            client,
            (Counter::default(), Counter::default()),
            ("web-1".into(), 1),
            plan_tx,
            out_rx,
            std::future::pending(),
        );
        let (body, seen) = tokio::select! {
            _ = task => panic!("the watch task stopped"),
            r = server => r.unwrap(),
        };
        let plan = looper.join().unwrap();
        assert_eq!(plan.peer_names, vec!["web-2".to_string()]);
        assert_eq!(body["metadata"]["name"], "web-1");
        assert_eq!(body["metadata"]["ownerReferences"][0]["uid"], "uid-web-1");
        assert_eq!(
            body["spec"]["applied"],
            serde_json::json!([{"name": "quarantine", "generation": 3}])
        );
        assert_eq!(body["spec"]["rules"], 2);
        let lists = seen.iter().filter(|l| l.contains("limit=500")).count();
        assert_eq!(lists, 2, "{seen:#?}");
        assert!(
            seen.last()
                .unwrap()
                .starts_with("PATCH /apis/portwarden.io/v1alpha1/portreports/web-1?")
        );
    }

    /// kube-runtime's real watcher over the scripted API server: the initial list, a watch
    /// stream with an add, a modify and a delete, the stream ending (the watcher re-watches from
    /// the last resourceVersion), `410 Gone` (it relists), and the relist that drops an object
    /// deleted meanwhile. Each step reaches the node's plan.
    #[tokio::test]
    async fn real_watcher_add_modify_delete_restart_and_relist() {
        let (client, server) = crate::fixtures::ApiServer::new();
        let list = |items: Vec<PortPolicy>, rv: &str| {
            serde_json::to_vec(&serde_json::json!({
                "apiVersion": "portwarden.io/v1alpha1", "kind": "PortPolicyList",
                "metadata": {"resourceVersion": rv}, "items": items,
            }))
            .unwrap()
        };
        let at = |mut p: PortPolicy, rv: &str| {
            p.metadata.resource_version = Some(rv.into());
            p
        };
        let events = |evs: Vec<(&str, PortPolicy)>| {
            let mut out = Vec::new();
            for (t, o) in evs {
                out.extend(
                    serde_json::to_vec(&serde_json::json!({"type": t, "object": o})).unwrap(),
                );
                out.push(b'\n');
            }
            out
        };
        const BASE: &str = "/apis/portwarden.io/v1alpha1/portpolicies";
        let base = BASE;
        let watch = move |rv: &str| {
            format!(
                "{base}?&watch=true&timeoutSeconds=290&allowWatchBookmarks=true&resourceVersion={rv}"
            )
        };
        let script = server.run(move |mut s| async move {
            s.expect_get(
                &format!("{base}?&limit=500"),
                list(vec![at(policy("quarantine", 1, "web"), "10")], "10"),
            )
            .await;
            s.expect_get(
                &watch("10"),
                events(vec![
                    ("ADDED", at(policy("web", 1, "web"), "11")),
                    ("MODIFIED", at(policy("web", 2, "web"), "12")),
                    ("DELETED", at(policy("web", 2, "web"), "13")),
                ]),
            )
            .await;
            let gone = serde_json::json!({"type": "ERROR", "object": {
                "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410,
                "reason": "Expired", "message": "too old resource version: 13 (20)"}});
            s.expect_get(&watch("13"), serde_json::to_vec(&gone).unwrap())
                .await;
            s.expect_get(&format!("{base}?&limit=500"), list(vec![], "20"))
                .await;
            s
        });
        let (policies, writer) = reflector::store::<PortPolicy>();
        let (nodes, mut nw) = reflector::store::<Node>();
        nw.apply_watcher_event(&Event::Init);
        nw.apply_watcher_event(&Event::InitApply(node("web-1", "web", "10.0.0.11", true)));
        nw.apply_watcher_event(&Event::InitDone);
        let mut state = AgentState::new("web-1".into(), 1);
        state.on_change(Change::Nodes(true), &policies, &nodes);
        let stream = reflector::reflector(
            writer,
            watcher::watcher(
                Api::<PortPolicy>::all(client),
                watcher::Config::default().any_semantic(),
            ),
        );
        let mut stream = std::pin::pin!(stream);
        let mut plans: Vec<Vec<AppliedPolicy>> = Vec::new();
        let mut errors = 0;
        while plans.len() < 5 {
            let c = change(
                stream.next().await.expect("the watch goes on"),
                Change::Policies,
            );
            if matches!(c, Change::Failed(_)) {
                errors += 1;
            }
            if let Some(plan) = state.on_change(c, &policies, &nodes) {
                plans.push(plan.applied);
            }
        }
        let p = |n: &str, g| AppliedPolicy {
            name: n.into(),
            generation: g,
        };
        assert_eq!(
            plans,
            vec![
                vec![p("quarantine", 1)],
                vec![p("quarantine", 1), p("web", 1)],
                vec![p("quarantine", 1), p("web", 2)],
                vec![p("quarantine", 1)],
                vec![],
            ]
        );
        assert_eq!(errors, 1, "the 410 surfaces once, then the watcher relists");
        script.await.unwrap().done().await;
    }

    /// The cluster-mode loop for real, in a lab: node 0 gets a plan from `plan_node`, applies
    /// it to its own netfilter (inside its network namespace, never the root one), reports what
    /// it applied, scans node 1 with node 1's intent for node 0's address, and the report
    /// carries the verdicts. Node 1 runs no agent, so its "filtered" port shows as drift.
    #[test]
    fn lab_loop_applies_scans_and_reports() {
        portwarden_lab::skip_unless_lab!();
        let lab = portwarden_lab::Lab::builder("kubeagent")
            .nodes(2)
            .build()
            .unwrap();
        let (n0, n1) = (lab.node(0).clone(), lab.node(1).clone());
        let mut p = policy("quarantine", 1, "web");
        p.spec.0.ports.push(portwarden_policy::PortEntry {
            ports: portwarden_policy::document::Ports::Text("9090".into()),
            protocol: portwarden_policy::Protocol::Tcp,
            state: portwarden_policy::State::Filtered,
            from: vec![],
            reason: None,
            expires: None,
        });
        let mut cache = PolicyCache::default();
        cache.update(&[Arc::new(p)]);
        let nodes = infos(&[
            node("n0", "web", &n0.v4().to_string(), true),
            node("n1", "web", &n1.v4().to_string(), true),
        ]);
        let plan = plan_node("n0", &cache, &nodes, 1);
        assert_eq!(plan.peer_names, vec!["n1".to_string()]);

        let config = AgentConfig {
            source: Source::Kube { peers_per_node: 1 },
            node: "n0".into(),
            refresh: Duration::from_secs(3600),
            scan_interval: Some(Duration::from_millis(50)),
            scan_rate: None,
            confirm_budget: None,
            listen: "127.0.0.1:9750".parse().unwrap(),
            failsafe: portwarden_netfilter::Failsafe::default(),
            netfilter: portwarden_netfilter::Options::default(),
        };
        let shared = Shared::new(config);
        let (plan_tx, plan_rx) = std::sync::mpsc::channel();
        let (out_tx, mut out_rx) = tokio::sync::mpsc::unbounded_channel();
        plan_tx.send(plan).unwrap();
        let ns = n0.clone();
        let worker = std::thread::spawn(move || {
            ns.enter_current_thread().unwrap();
            reconcile_loop(&shared, &plan_rx, out_tx);
        });
        let Some(Outcome::Applied(applied)) = out_rx.blocking_recv() else {
            panic!("first outcome is the apply");
        };
        assert_eq!(applied.error, None);
        assert_eq!(
            applied.policies,
            vec![AppliedPolicy {
                name: "quarantine".into(),
                generation: 1
            }]
        );
        assert_eq!(applied.rules, 3);
        let rules = n0.exec(&["iptables-save", "-t", "filter"]).unwrap();
        assert!(rules.contains("-j PORTWARDEN"), "{rules}");
        assert!(rules.contains("quarantine"), "{rules}");
        let scan = loop {
            match out_rx.blocking_recv() {
                Some(Outcome::Scanned(s)) => break s,
                Some(Outcome::Applied(_)) => continue,
                None => panic!("the loop ended before scanning"),
            }
        };
        drop(plan_tx);
        worker.join().unwrap();
        let rows: Vec<(u16, &str, &str, Verdict)> = scan
            .report
            .results
            .iter()
            .map(|r| (r.port, r.expected.as_str(), r.observed.as_str(), r.verdict))
            .collect();
        assert!(
            rows.contains(&(8080, "closed", "closed", Verdict::InSync)),
            "{rows:?}"
        );
        assert!(
            rows.contains(&(9090, "filtered", "closed", Verdict::Drift)),
            "{rows:?}"
        );
        assert!(
            scan.report
                .results
                .iter()
                .all(|r| r.node == "n1" && r.from == IpAddr::from(n0.v4()))
        );
        let spec = report::build("n0", &applied, Some(&scan));
        assert_eq!(spec.peers, vec!["n1".to_string()]);
        assert_eq!(spec.policies[0].policy, "quarantine");
        assert_eq!(spec.policies[0].counts.drift, 1);
        assert_eq!(spec.findings[0].port, 9090);
    }

    /// Watch events as the reflector sees them: the initial list, an add, a modify, a delete,
    /// and a relist (after a `410 Gone`) that no longer holds an object.
    #[test]
    fn watch_events_add_modify_delete_relist() {
        let (policies, mut pw) = reflector::store::<PortPolicy>();
        let (nodes, mut nw) = reflector::store::<Node>();
        let mut state = AgentState::new("web-1".into(), 1);
        let mut feed_p = |e: Event<PortPolicy>, state: &mut AgentState| {
            pw.apply_watcher_event(&e);
            state.on_change(
                Change::Policies(matches!(e, Event::InitDone)),
                &policies,
                &nodes,
            )
        };
        // Nothing before both lists complete.
        assert!(feed_p(Event::Init, &mut state).is_none());
        assert!(feed_p(Event::InitApply(policy("quarantine", 1, "web")), &mut state).is_none());
        assert!(feed_p(Event::InitDone, &mut state).is_none());
        for e in [
            Event::Init,
            Event::InitApply(node("web-1", "web", "10.0.0.11", true)),
            Event::InitApply(node("web-2", "web", "10.0.0.12", true)),
        ] {
            nw.apply_watcher_event(&e);
            assert!(
                state
                    .on_change(Change::Nodes(false), &policies, &nodes)
                    .is_none()
            );
        }
        nw.apply_watcher_event(&Event::InitDone);
        let first = state
            .on_change(Change::Nodes(true), &policies, &nodes)
            .expect("first plan");
        assert_eq!(first.applied.len(), 1);
        // A status-only update changes nothing the node does: no new plan.
        let mut with_status = policy("quarantine", 1, "web");
        with_status.status = Some(Default::default());
        assert!(feed_p(Event::Apply(with_status), &mut state).is_none());
        // Add.
        let added = feed_p(Event::Apply(policy("web", 1, "web")), &mut state).expect("add");
        assert_eq!(added.applied.len(), 2);
        // Modify (new generation).
        let modified = feed_p(Event::Apply(policy("web", 2, "web")), &mut state).expect("modify");
        assert!(modified.applied.contains(&AppliedPolicy {
            name: "web".into(),
            generation: 2
        }));
        // Delete.
        let deleted = feed_p(Event::Delete(policy("web", 2, "web")), &mut state).expect("delete");
        assert_eq!(deleted.applied.len(), 1);
        // Relist without "quarantine" (deleted while the watch was down): it goes.
        assert!(feed_p(Event::Init, &mut state).is_none());
        let relisted = feed_p(Event::InitDone, &mut state).expect("relist");
        assert!(relisted.applied.is_empty());
        assert!(relisted.intent.unwrap().rules.is_empty());
    }
}
