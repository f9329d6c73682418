//! `portwarden controller`: aggregates the nodes' `PortReport`s into each `PortPolicy`'s status,
//! publishes Events when drift appears and clears, and exports metrics. One replica works at a
//! time: the one holding the `Lease` (kube-lease-manager).
//!
//! A key design decision is that [`reconcile`] is thin — validate, [`aggregate::status`],
//! [`aggregate::events`], publish, patch — and the decisions are pure functions, so the tests
//! script the API server and assert the exact requests (method, path, query, body, field
//! manager) while the aggregation is tested on plain values.
//!
//! # Guarantees
//!
//! * The status is written by server-side apply on the status subresource with the field
//!   manager [`CONTROLLER_MANAGER`], and only when it changed: a quiet cluster costs no writes.
//! * An Event is published once per transition (not per reconcile): the previous status the
//!   controller wrote is remembered, so a stale watch cache cannot repeat an Event.
//! * API errors requeue the policy with exponential backoff ([`backoff`]: 1 s doubling to
//!   5 min), reset on success; every policy is also resynced every `resync`, and at each of
//!   its entries' expiries (so `expiredEntries` changes at the instant, without a spec edit).
//! * Watches restart by themselves (kube-runtime's watcher with its default backoff, relisting
//!   after `410 Gone`); reconciles start only after the report and node caches have listed once.
//! * Losing the Lease stops the controller at once; gaining it starts a fresh one.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use portwarden_agent::http::metrics_response;
use portwarden_agent::lifecycle::{backoff, shutdown_signal};
use portwarden_agent::server::{Limits, fit_descriptors, serve};
use portwarden_policy::API_VERSION;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::aggregate::{self, NodeLabels};
use crate::conditions::Status;
use crate::crd::{PortPolicy, PortPolicyStatus, PortReport};
use crate::metrics::{ConditionLabels, ControllerMetrics, EventLabels, PolicyLabels};
use crate::{CONTROLLER_MANAGER, Error};

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// Address of `/metrics`, `/healthz`, `/readyz`.
    pub listen: SocketAddr,
    /// Namespace of the leader Lease (the controller's own).
    pub lease_namespace: String,
    /// Name of the leader Lease.
    pub lease_name: String,
    /// This replica's identity in the Lease (the pod name).
    pub identity: String,
    /// Every policy is reconciled at least this often.
    pub resync: Duration,
}

/// What every reconcile shares.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Every PortReport, from a reflector.
    pub reports: Store<PortReport>,
    /// Every Node's metadata (labels), from a reflector.
    pub nodes: Store<PartialObjectMeta<Node>>,
    /// Publishes Events.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Arc<ControllerMetrics>,
    /// Consecutive failures per policy, for the backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// The last status this replica wrote per policy (the watch cache may lag behind it).
    written: Mutex<HashMap<String, PortPolicyStatus>>,
    /// How often every policy is reconciled.
    resync: Duration,
    /// The controller's own cache of policies, to forget the deleted ones.
    policies: Option<Store<PortPolicy>>,
    /// The clock the status is computed at ([`Timestamp::now`]; tests set their own).
    clock: fn() -> Timestamp,
}

impl Context {
    /// A context over these caches.
    pub fn new(
        client: Client,
        reports: Store<PortReport>,
        nodes: Store<PartialObjectMeta<Node>>,
        metrics: Arc<ControllerMetrics>,
        identity: &str,
        resync: Duration,
    ) -> Context {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: CONTROLLER_MANAGER.into(),
                instance: Some(identity.to_string()),
            },
        );
        Context {
            client,
            reports,
            nodes,
            recorder,
            metrics,
            failures: Mutex::new(HashMap::new()),
            written: Mutex::new(HashMap::new()),
            resync,
            policies: None,
            clock: Timestamp::now,
        }
    }

    /// Computes statuses at the instants `clock` gives instead of the wall clock's.
    pub fn with_clock(mut self, clock: fn() -> Timestamp) -> Context {
        self.clock = clock;
        self
    }

    /// Uses the controller's cache of policies to forget deleted ones.
    pub fn with_policies(mut self, policies: Store<PortPolicy>) -> Context {
        self.policies = Some(policies);
        self
    }

    /// Forgets every remembered policy for which `exists` is false: its remembered status, its
    /// failure count, and its metric series (so a deleted policy does not stay on dashboards as
    /// drifting).
    pub fn forget_deleted(&self, exists: impl Fn(&str) -> bool) {
        let mut gone = Vec::new();
        lock(&self.written).retain(|name, _| {
            let keep = exists(name);
            if !keep {
                gone.push(name.clone());
            }
            keep
        });
        for name in gone {
            lock(&self.failures).remove(&name);
            let policy = PolicyLabels {
                policy: name.clone(),
            };
            self.metrics.policy_drift.remove(&policy);
            self.metrics.policy_nodes.remove(&policy);
            for condition in [crate::conditions::APPLIED, crate::conditions::IN_SYNC] {
                for status in Status::ALL {
                    self.metrics.policy_condition.remove(&ConditionLabels {
                        policy: name.clone(),
                        condition: condition.into(),
                        status: status.as_str().into(),
                    });
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reconciles one policy: computes its status from the caches, publishes the Events its
/// transitions deserve, and writes the status if it changed.
///
/// # Errors
///
/// [`Error::PatchStatus`] when the status write fails; the caller requeues with backoff. A
/// failed Event is logged and counted, not an error (the status carries the same facts).
pub async fn reconcile(policy: Arc<PortPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let name = policy.name_any();
    ctx.metrics.reconciles.inc();
    if let Some(store) = &ctx.policies {
        // A lookup per remembered policy in the cache's index, not a copy of the cache.
        ctx.forget_deleted(|name| store.get(&ObjectRef::new(name)).is_some());
    }
    let validated = crate::policy::validate(&policy);
    let nodes: Vec<NodeLabels> = ctx
        .nodes
        .state()
        .iter()
        .map(|n| NodeLabels {
            name: n.name_any(),
            labels: n.labels().clone(),
        })
        .collect();
    let reports = ctx.reports.state();
    let now = Time((ctx.clock)());
    let previous = lock(&ctx.written)
        .get(&name)
        .cloned()
        .or_else(|| policy.status.clone());
    let mut base = (*policy).clone();
    base.status = previous.clone();
    let status = aggregate::status(&base, &validated, &nodes, &reports, &now);

    publish_events(&ctx, &policy, aggregate::events(previous.as_ref(), &status)).await;

    if policy.status.as_ref() != Some(&status) {
        let api: Api<PortPolicy> = Api::all(ctx.client.clone());
        let body = serde_json::json!({
            "apiVersion": API_VERSION,
            "kind": "PortPolicy",
            "status": status,
        });
        api.patch_status(
            &name,
            &PatchParams::apply(CONTROLLER_MANAGER).force(),
            &Patch::Apply(body),
        )
        .await
        .map_err(|source| Error::PatchStatus {
            name: name.clone(),
            source,
        })?;
        ctx.metrics.status_patches.inc();
    }
    record_metrics(&ctx.metrics, &name, &status);
    lock(&ctx.written).insert(name.clone(), status);
    lock(&ctx.failures).remove(&name);
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    Ok(Action::requeue(requeue_after(
        validated.as_ref().ok(),
        &now,
        ctx.resync,
    )))
}

/// When to reconcile a policy again: after `resync`, or at its next entry expiry if that
/// comes sooner, so `expiredEntries` changes at the instant without a spec edit.
fn requeue_after(
    policy: Option<&portwarden_policy::Policy>,
    now: &Time,
    resync: Duration,
) -> Duration {
    let now = crate::expired::model_time(now);
    policy
        .and_then(|p| crate::expired::next_expiry(p, now))
        // Whole seconds from the rounded-down `now`: never before the instant.
        .map(|t| Duration::from_secs(u64::try_from(t.unix() - now.unix()).unwrap_or(0)))
        .map_or(resync, |d| d.min(resync))
}

/// Publishes the Events of a policy's transition; a failed one is logged and counted, not an
/// error (the status carries the same facts).
async fn publish_events(ctx: &Context, policy: &PortPolicy, events: Vec<aggregate::EventSpec>) {
    let name = policy.name_any();
    for e in events {
        let event = Event {
            type_: if e.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: e.reason.into(),
            note: Some(crate::report::truncate(&e.note, 1024)),
            action: e.action.into(),
            secondary: None,
        };
        match ctx.recorder.publish(&event, &policy.object_ref(&())).await {
            Ok(()) => {
                ctx.metrics
                    .events
                    .get_or_create(&EventLabels {
                        reason: e.reason.into(),
                    })
                    .inc();
            }
            Err(err) => {
                ctx.metrics.event_errors.inc();
                warn!(policy = %name, reason = e.reason, error = %err, "failed to publish Event");
            }
        }
    }
}

fn record_metrics(m: &ControllerMetrics, name: &str, status: &PortPolicyStatus) {
    let policy = PolicyLabels {
        policy: name.to_string(),
    };
    m.policy_drift
        .get_or_create(&policy)
        .set(status.ports.drift as i64);
    m.policy_nodes
        .get_or_create(&policy)
        .set(i64::from(status.matched_nodes));
    for c in &status.conditions {
        for s in Status::ALL.map(Status::as_str) {
            m.policy_condition
                .get_or_create(&ConditionLabels {
                    policy: name.to_string(),
                    condition: c.type_.clone(),
                    status: s.into(),
                })
                .set(i64::from(c.status == s));
        }
    }
}

/// Requeues a failed policy with exponential backoff.
pub fn error_policy(policy: Arc<PortPolicy>, error: &Error, ctx: Arc<Context>) -> Action {
    let name = policy.name_any();
    let failures = {
        let mut f = lock(&ctx.failures);
        let n = f.entry(name.clone()).or_insert(0);
        *n += 1;
        *n
    };
    let delay = backoff(failures);
    ctx.metrics.reconcile_errors.inc();
    warn!(policy = %name, error = %error, failures, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// The policies a report speaks about: a change to it may change their status.
pub fn policies_of(report: &PortReport) -> Vec<ObjectRef<PortPolicy>> {
    let mut names: Vec<&str> = report
        .spec
        .applied
        .iter()
        .map(|a| a.name.as_str())
        .chain(report.spec.policies.iter().map(|p| p.policy.as_str()))
        .collect();
    names.sort_unstable();
    names.dedup();
    names.into_iter().map(ObjectRef::new).collect()
}

/// Runs the controller until `stop` completes: report and node reflectors, then the
/// kube-runtime `Controller` over PortPolicies, triggered by their changes, by the reports
/// that mention them, and every `resync`.
pub async fn run_controller(
    client: Client,
    metrics: Arc<ControllerMetrics>,
    identity: String,
    resync: Duration,
) {
    let policies: Api<PortPolicy> = Api::all(client.clone());
    let reports: Api<PortReport> = Api::all(client.clone());
    // Metadata only: the controller needs the nodes' labels, not their status.
    let nodes: Api<PartialObjectMeta<Node>> = Api::all(client.clone());
    let (report_store, report_writer) = reflector::store();
    let (node_store, node_writer) = reflector::store();
    let report_cache = reflector::reflector(
        report_writer,
        watcher::watcher(reports.clone(), watcher::Config::default()),
    )
    .default_backoff()
    .for_each(|r| {
        if let Err(e) = r {
            warn!(error = %e, "PortReport watch failed; retrying with backoff");
        }
        std::future::ready(())
    });
    let node_cache = reflector::reflector(
        node_writer,
        // Labels are all the controller reads; managed fields are most of the bytes.
        watcher::watcher(nodes, watcher::Config::default())
            .modify(|n: &mut PartialObjectMeta<Node>| n.managed_fields_mut().clear()),
    )
    .default_backoff()
    .for_each(|r| {
        if let Err(e) = r {
            warn!(error = %e, "Node watch failed; retrying with backoff");
        }
        std::future::ready(())
    });
    let ctx = Context::new(
        client,
        report_store.clone(),
        node_store.clone(),
        metrics,
        &identity,
        resync,
    );
    let controller = async move {
        if report_store.wait_until_ready().await.is_err()
            || node_store.wait_until_ready().await.is_err()
        {
            return;
        }
        info!("caches ready; reconciling PortPolicies");
        let controller = Controller::new(policies, watcher::Config::default().any_semantic());
        let ctx = Arc::new(ctx.with_policies(controller.store()));
        controller
            .with_config(
                kube::runtime::controller::Config::default().debounce(Duration::from_secs(1)),
            )
            .watches(reports, watcher::Config::default(), |r| policies_of(&r))
            .run(reconcile, error_policy, ctx)
            .for_each(|r| {
                if let Err(e) = r {
                    warn!(error = %e, "controller");
                }
                std::future::ready(())
            })
            .await;
    };
    tokio::select! {
        _ = report_cache => {}
        _ = node_cache => {}
        _ = controller => {}
    }
}

/// Runs `work` while `leader` says `true`: starts it when leadership is gained, drops it (at its
/// next await point) as soon as leadership is lost, and starts a fresh one when it is gained
/// again. Returns when `stop` completes or the leadership channel closes.
pub async fn while_leader<F, Fut>(
    mut leader: watch::Receiver<bool>,
    mut work: F,
    stop: impl Future<Output = ()>,
    metrics: Arc<ControllerMetrics>,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    tokio::pin!(stop);
    loop {
        metrics.leader.set(0);
        tokio::select! {
            _ = &mut stop => return,
            r = leader.wait_for(|l| *l) => if r.is_err() { return },
        }
        info!("leader: starting the controller");
        metrics.leader.set(1);
        let job = work();
        tokio::pin!(job);
        tokio::select! {
            _ = &mut stop => { metrics.leader.set(0); return }
            r = leader.wait_for(|l| !*l) => {
                warn!("lost the leader Lease: stopping the controller");
                if r.is_err() { metrics.leader.set(0); return }
            }
            _ = &mut job => {
                error!("the controller stopped by itself; waiting for leadership again");
            }
        }
    }
}

/// HTTP: `/metrics`, `/healthz` (the process serves), `/readyz` (ready to take over: always,
/// since a standby is useful; leadership is the `portwarden_controller_leader` metric).
fn router(metrics: Arc<ControllerMetrics>) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move { metrics_response(m.encode()) }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ready\n" }))
}

/// Runs `portwarden controller` until SIGTERM or SIGINT. SIGHUP is logged and ignored
/// (there is no file to reload; every policy is resynced every `resync` anyway).
///
/// # Errors
///
/// When no client can be configured, the HTTP address cannot be bound, or the Lease manager
/// cannot start. Errors while running are retried.
pub async fn run(cfg: ControllerConfig) -> Result<(), Error> {
    // First thing: from here on a SIGHUP is logged instead of terminating the process.
    let shutdown = shutdown_signal(|| {
        info!("SIGHUP ignored: the controller has no file to reload (it watches the API server)")
    });
    // Before anything else starts: every later thread and child shares the fitted limit.
    let budget = fit_descriptors(Limits::default());
    let client = Client::try_default().await.map_err(Error::Client)?;
    let metrics = Arc::new(ControllerMetrics::new());
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| Error::Serve {
            addr: cfg.listen,
            source,
        })?;
    let app = router(metrics.clone());
    // Serves until the runtime stops, after the Lease is released.
    tokio::spawn(serve(
        listener,
        app,
        budget,
        metrics.http.clone(),
        std::future::pending(),
    ));
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &cfg.lease_name)
        .with_namespace(&cfg.lease_namespace)
        .with_identity(&cfg.identity)
        .with_field_manager(format!("{CONTROLLER_MANAGER}-lease"))
        .with_duration(15)
        .with_grace(5)
        .build()
        .await
        .map_err(|source| Error::LeaderElection {
            namespace: cfg.lease_namespace.clone(),
            name: cfg.lease_name.clone(),
            source,
        })?;
    let (leader, lease_task) = manager.watch().await;
    info!(identity = %cfg.identity, lease = %format!("{}/{}", cfg.lease_namespace, cfg.lease_name), "waiting for the leader Lease");
    let identity = cfg.identity.clone();
    while_leader(
        leader,
        || {
            run_controller(
                client.clone(),
                metrics.clone(),
                identity.clone(),
                cfg.resync,
            )
        },
        shutdown,
        metrics.clone(),
    )
    .await;
    // `while_leader` dropped the channel: the lease task releases the Lease (so a standby
    // takes over at once instead of after the lease expires) and ends.
    match tokio::time::timeout(Duration::from_secs(5), lease_task).await {
        Ok(Ok(Ok(_))) => info!("released the leader Lease"),
        Ok(Ok(Err(e))) => {
            warn!(error = %e, "could not release the leader Lease; it expires by itself")
        }
        Ok(Err(e)) => warn!(error = %e, "the lease task failed"),
        Err(_) => warn!("the Lease was not released within 5 s; it expires by itself"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{ApiServer, node, node_meta, policy, report};

    #[test]
    fn reports_map_to_the_policies_they_mention() {
        let r = report(
            "web-1",
            &[("web", 1), ("quarantine", 2)],
            &[("quarantine", 1, 0, "")],
        );
        let names: Vec<String> = policies_of(&r).into_iter().map(|o| o.name).collect();
        assert_eq!(names, vec!["quarantine", "web"]);
    }

    fn stores(
        reports: Vec<PortReport>,
        nodes: Vec<PartialObjectMeta<Node>>,
    ) -> (Store<PortReport>, Store<PartialObjectMeta<Node>>) {
        let (rs, mut rw) = reflector::store();
        for r in reports {
            rw.apply_watcher_event(&watcher::Event::Apply(r));
        }
        let (ns, mut nw) = reflector::store();
        for n in nodes {
            nw.apply_watcher_event(&watcher::Event::Apply(n));
        }
        (rs, ns)
    }

    /// Drift appears: one Warning Event, then the status by server-side apply on /status with
    /// the controller's field manager. Reconciling the same state again writes nothing.
    #[tokio::test]
    async fn drift_publishes_an_event_and_applies_the_status() {
        let (client, server) = ApiServer::new();
        let (reports, nodes) = stores(
            vec![
                report(
                    "web-1",
                    &[("quarantine", 2)],
                    &[("quarantine", 0, 1, "web-2")],
                ),
                report("web-2", &[("quarantine", 2)], &[]),
            ],
            vec![
                node_meta("web-1", "web"),
                node_meta("web-2", "web"),
                node_meta("db-1", "db"),
            ],
        );
        let ctx = Arc::new(Context::new(
            client,
            reports,
            nodes,
            Arc::new(ControllerMetrics::new()),
            "controller-0",
            Duration::from_secs(300),
        ));
        let p = Arc::new(policy("quarantine", 2, "web"));
        let script = server.run(|mut s| async move {
            s.expect_event_post("Applied", "Normal", "quarantine").await;
            let event = s
                .expect_event_post("DriftDetected", "Warning", "quarantine")
                .await;
            assert!(event["note"].as_str().unwrap().contains("web-2 8080/tcp"));
            let status = s.expect_status_apply("quarantine").await;
            assert_eq!(status["matchedNodes"], 2);
            assert_eq!(status["appliedNodes"], 2);
            assert_eq!(status["ports"]["drift"], 1);
            assert_eq!(status["observedGeneration"], 2);
            let conds = status["conditions"].as_array().unwrap();
            assert_eq!(conds[0]["type"], "Applied");
            assert_eq!(conds[0]["status"], "True");
            assert_eq!(conds[1]["type"], "InSync");
            assert_eq!(conds[1]["status"], "False");
            assert_eq!(conds[1]["reason"], "DriftDetected");
            assert_eq!(conds[1]["observedGeneration"], 2);
            assert!(conds[1]["lastTransitionTime"].is_string());
            s
        });
        let action = reconcile(p.clone(), ctx.clone()).await.unwrap();
        assert_eq!(action, Action::requeue(Duration::from_secs(300)));
        let server = script.await.unwrap();
        // The watch cache now shows what we wrote: same state, no request at all.
        let mut written = (*p).clone();
        written.status = lock(&ctx.written).get("quarantine").cloned();
        reconcile(Arc::new(written), ctx.clone()).await.unwrap();
        server.done().await;
        let text = ctx.metrics.encode();
        assert!(
            text.contains("portwarden_controller_events_total{reason=\"DriftDetected\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("portwarden_controller_status_patches_total 1"),
            "{text}"
        );
    }

    /// An entry's expiry passes without a spec edit: the first reconcile lists the entry that
    /// has expired and requeues at the next expiry (sooner than the resync); at that instant
    /// the status lists both, and then the resync applies again.
    #[tokio::test]
    async fn expired_entries_reach_the_status_and_the_next_expiry_requeues() {
        use std::sync::atomic::{AtomicI64, Ordering};
        const T0: i64 = 1_798_135_200; // 2026-12-24T18:00:00Z
        static NOW: AtomicI64 = AtomicI64::new(T0);
        fn clock() -> Timestamp {
            Timestamp::from_second(NOW.load(Ordering::SeqCst)).unwrap()
        }
        let (client, server) = ApiServer::new();
        let (reports, nodes) = stores(
            vec![report(
                "web-1",
                &[("quarantine", 2)],
                &[("quarantine", 1, 0, "")],
            )],
            vec![node_meta("web-1", "web")],
        );
        let ctx = Arc::new(
            Context::new(
                client,
                reports,
                nodes,
                Arc::new(ControllerMetrics::new()),
                "controller-0",
                Duration::from_secs(300),
            )
            .with_clock(clock),
        );
        let mut p = policy("quarantine", 2, "web");
        p.spec.0.ports[0].expires = Some("2026-12-24T17:00:00Z".into());
        p.spec.0.ports[1].expires = Some("2026-12-24T19:01:30+01:00".into());
        let script = server.run(|mut s| async move {
            s.expect_event_post("Applied", "Normal", "quarantine").await;
            let status = s.expect_status_apply("quarantine").await;
            assert_eq!(
                status["expiredEntries"],
                serde_json::json!([
                    {"entry": 0, "ports": "8080", "protocol": "tcp", "expires": "2026-12-24T17:00:00Z"}
                ])
            );
            assert_eq!(status["conditions"][0]["reason"], "Applied");
            s
        });
        let action = reconcile(Arc::new(p.clone()), ctx.clone()).await.unwrap();
        assert_eq!(action, Action::requeue(Duration::from_secs(90)));
        let server = script.await.unwrap();

        // The requeue fires at the expiry; the watch cache shows the status written before.
        NOW.store(T0 + 90, Ordering::SeqCst);
        p.status = lock(&ctx.written).get("quarantine").cloned();
        let script = server.run(|mut s| async move {
            let status = s.expect_status_apply("quarantine").await;
            assert_eq!(
                status["expiredEntries"],
                serde_json::json!([
                    {"entry": 0, "ports": "8080", "protocol": "tcp", "expires": "2026-12-24T17:00:00Z"},
                    {"entry": 1, "ports": "80", "protocol": "tcp", "expires": "2026-12-24T18:01:30Z"}
                ])
            );
            s
        });
        let action = reconcile(Arc::new(p), ctx.clone()).await.unwrap();
        assert_eq!(action, Action::requeue(Duration::from_secs(300)));
        script.await.unwrap().done().await;
    }

    #[test]
    fn requeue_comes_at_the_next_expiry_never_before_it() {
        let mut p = policy("quarantine", 1, "web");
        p.spec.0.ports[0].expires = Some("2026-12-24T18:00:00Z".into());
        let p = crate::policy::validate(&p).unwrap();
        let resync = Duration::from_secs(300);
        let at = |s, ns| Time(Timestamp::new(s, ns).unwrap());
        // 0.9 s before the instant: a whole second, so the requeue lands at or after it.
        assert_eq!(
            requeue_after(Some(&p), &at(1_798_135_199, 100_000_000), resync),
            Duration::from_secs(1)
        );
        assert_eq!(
            requeue_after(Some(&p), &at(1_798_135_200 - 3600, 0), resync),
            resync
        );
        assert_eq!(
            requeue_after(Some(&p), &at(1_798_135_200, 0), resync),
            resync
        );
        assert_eq!(requeue_after(None, &at(0, 0), resync), resync);
    }

    /// A policy the schema admits but the validator refuses: status and a Warning Event, no crash.
    #[tokio::test]
    async fn invalid_policy_gets_status_and_event() {
        let (client, server) = ApiServer::new();
        let (reports, nodes) = stores(vec![], vec![node_meta("web-1", "web")]);
        let ctx = Arc::new(Context::new(
            client,
            reports,
            nodes,
            Arc::new(ControllerMetrics::new()),
            "controller-0",
            Duration::from_secs(300),
        ));
        let mut p = policy("bad", 7, "web");
        p.spec.0.ports[0].ports = portwarden_policy::document::Ports::Text("9000-8000".into());
        let script = server.run(|mut s| async move {
            let event = s.expect_event_post("InvalidSpec", "Warning", "bad").await;
            assert!(
                event["note"]
                    .as_str()
                    .unwrap()
                    .contains("spec.ports[0].ports"),
                "{event}"
            );
            let status = s.expect_status_apply("bad").await;
            assert_eq!(status["conditions"][0]["reason"], "InvalidSpec");
            assert_eq!(status["conditions"][0]["status"], "False");
            assert_eq!(status["conditions"][1]["status"], "Unknown");
            s
        });
        reconcile(Arc::new(p), ctx).await.unwrap();
        script.await.unwrap().done().await;
    }

    /// The API server refuses the status write: the error names the step, and the policy is
    /// requeued with a growing delay.
    #[tokio::test]
    async fn api_errors_requeue_with_backoff() {
        let (client, server) = ApiServer::new();
        let (reports, nodes) = stores(vec![], vec![]);
        let ctx = Arc::new(Context::new(
            client,
            reports,
            nodes,
            Arc::new(ControllerMetrics::new()),
            "controller-0",
            Duration::from_secs(300),
        ));
        let p = Arc::new(policy("lonely", 1, "web"));
        let script = server.run(|mut s| async move {
            s.refuse_status_apply("lonely", 500).await;
            s
        });
        let err = reconcile(p.clone(), ctx.clone()).await.unwrap_err();
        assert!(
            err.to_string()
                .starts_with("failed to patch the status of PortPolicy lonely"),
            "{err}"
        );
        script.await.unwrap().done().await;
        assert_eq!(
            error_policy(p.clone(), &err, ctx.clone()),
            Action::requeue(Duration::from_secs(1))
        );
        assert_eq!(
            error_policy(p.clone(), &err, ctx.clone()),
            Action::requeue(Duration::from_secs(2))
        );
        assert_eq!(
            error_policy(p, &err, ctx),
            Action::requeue(Duration::from_secs(4))
        );
    }

    /// A deleted policy's remembered status and metric series go at the next reconcile.
    #[tokio::test]
    async fn deleted_policies_are_forgotten() {
        let (client, _server) = ApiServer::new();
        let (reports, nodes) = stores(vec![], vec![]);
        let metrics = Arc::new(ControllerMetrics::new());
        let ctx = Context::new(
            client,
            reports,
            nodes,
            metrics.clone(),
            "controller-0",
            Duration::from_secs(300),
        );
        let status = aggregate::status(
            &policy("gone", 1, "web"),
            &crate::policy::validate(&policy("gone", 1, "web")),
            &[],
            &[],
            &Time(Timestamp::UNIX_EPOCH),
        );
        record_metrics(&metrics, "gone", &status);
        lock(&ctx.written).insert("gone".into(), status);
        assert!(metrics.encode().contains("policy=\"gone\""));
        ctx.forget_deleted(|name| name == "other");
        assert!(lock(&ctx.written).is_empty());
        assert!(
            !metrics.encode().contains("policy=\"gone\""),
            "{}",
            metrics.encode()
        );
    }

    /// The whole controller wiring over the scripted API server: the report and node caches
    /// list first, the Controller lists and watches PortPolicies, reconciles the policy, and
    /// applies its status.
    #[tokio::test]
    async fn run_controller_lists_watches_and_applies_status() {
        let (client, server) = ApiServer::new();
        let server = tokio::spawn(server.serve_until_apply(
            vec![policy("quarantine", 1, "web")],
            vec![report(
                "web-1",
                &[("quarantine", 1)],
                &[("quarantine", 2, 0, "")],
            )],
            vec![
                node("web-1", "web", "10.0.0.11", true),
                node("db-1", "db", "10.0.0.13", true),
            ],
        ));
        let metrics = Arc::new(ControllerMetrics::new());
        let run = run_controller(
            client,
            metrics.clone(),
            "controller-0".into(),
            Duration::from_secs(300),
        );
        let (body, seen) = tokio::select! {
            _ = run => panic!("the controller stopped"),
            r = server => r.unwrap(),
        };
        let status = &body["status"];
        assert_eq!(status["matchedNodes"], 1);
        assert_eq!(status["appliedNodes"], 1);
        assert_eq!(status["conditions"][0]["reason"], "Applied");
        assert_eq!(status["conditions"][1]["reason"], "InSync");
        let lists = |path: &str| {
            seen.iter()
                .filter(|l| l.starts_with(&format!("GET {path}?&limit=")))
                .count()
        };
        assert!(
            lists("/apis/portwarden.io/v1alpha1/portreports") >= 1,
            "{seen:#?}"
        );
        assert_eq!(lists("/api/v1/nodes"), 1, "{seen:#?}");
        assert_eq!(
            lists("/apis/portwarden.io/v1alpha1/portpolicies"),
            1,
            "{seen:#?}"
        );
        assert!(
            seen.iter()
                .any(|l| l.starts_with("POST /apis/events.k8s.io/v1/namespaces/default/events")),
            "{seen:#?}"
        );
        assert!(
            seen.last()
                .unwrap()
                .starts_with("PATCH /apis/portwarden.io/v1alpha1/portpolicies/quarantine/status?")
        );
    }

    #[tokio::test]
    async fn leadership_starts_and_stops_the_work() {
        let (tx, rx) = watch::channel(false);
        let metrics = Arc::new(ControllerMetrics::new());
        let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
        let (dropped_tx, mut dropped) = tokio::sync::mpsc::unbounded_channel::<()>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        struct Guard(tokio::sync::mpsc::UnboundedSender<()>);
        impl Drop for Guard {
            fn drop(&mut self) {
                let _ = self.0.send(());
            }
        }
        let m = metrics.clone();
        let task = tokio::spawn(while_leader(
            rx,
            move || {
                let started = started_tx.clone();
                let dropped = dropped_tx.clone();
                async move {
                    let _guard = Guard(dropped);
                    let _ = started.send(());
                    std::future::pending::<()>().await;
                }
            },
            async move {
                let _ = stop_rx.await;
            },
            m,
        ));
        tx.send(true).unwrap();
        started.recv().await.unwrap();
        assert_eq!(metrics.leader.get(), 1);
        tx.send(false).unwrap();
        dropped.recv().await.unwrap();
        tx.send(true).unwrap();
        started.recv().await.unwrap();
        stop_tx.send(()).unwrap();
        task.await.unwrap();
        dropped.recv().await.unwrap();
        assert_eq!(metrics.leader.get(), 0);
    }
}
