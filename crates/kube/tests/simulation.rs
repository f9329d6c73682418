//! Scale simulation of the controller's aggregation: 1,000 nodes, 200 policies, 1,000
//! synthetic PortReports (each agent scanning 2 peers), as `docs/scaling.md` assumes.
//!
//! It measures, and prints (it asserts correctness, never timings):
//! * the size of a report on the wire (JSON) — what every watch event carries;
//! * the memory the controller's report cache holds (bytes allocated for the 1,000 decoded
//!   reports, counted by a global allocator);
//! * the time and peak extra memory of one full resync (every policy's status computed from
//!   every report), and of one reconcile.
//!
//! Run it with `cargo test --release -p portwarden-kube --test simulation -- --nocapture` for
//! the figures in the docs (a debug build is several times slower).
#![allow(clippy::unwrap_used, missing_docs, unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use portwarden_kube::aggregate::{self, NodeLabels};
use portwarden_kube::crd::{
    AppliedPolicy, Counts, Finding, PolicyCounts, PolicySpec, PortPolicy, PortReport,
    PortReportSpec,
};
use portwarden_policy::document::{LabelSelector, PortEntry, PortPolicySpec, Ports};
use portwarden_policy::{Protocol, State, Unlisted, selects};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let now = CURRENT.fetch_add(new_size - layout.size(), Ordering::Relaxed)
                    + (new_size - layout.size());
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const NODES: usize = 1000;
const POLICIES: usize = 200;
const ROLES: usize = 50;
const ENTRIES: usize = 10;
const PEERS: usize = 2;
const GLOBAL: usize = 10;

fn role(i: usize) -> String {
    format!("role-{}", i % ROLES)
}

fn policy(i: usize) -> PortPolicy {
    let ports = (0..ENTRIES)
        .map(|e| PortEntry {
            ports: Ports::Text(format!("{}", 8000 + i * ENTRIES + e)),
            protocol: if e % 4 == 3 {
                Protocol::Udp
            } else {
                Protocol::Tcp
            },
            state: [State::Open, State::Closed, State::Filtered][e % 3],
            from: if e % 2 == 0 {
                vec![]
            } else {
                vec![format!("10.{}.0.0/16", e)]
            },
            reason: Some(format!("policy {i} entry {e}")),
            expires: None,
        })
        .collect();
    let mut p = PortPolicy::new(
        &format!("policy-{i}"),
        PolicySpec(PortPolicySpec {
            // The first GLOBAL policies select every node; the others one role each.
            node_selector: LabelSelector {
                match_labels: if i < GLOBAL {
                    BTreeMap::new()
                } else {
                    [("role".to_string(), role(i))].into()
                },
                match_expressions: vec![],
            },
            priority: 1000,
            unlisted: Unlisted::Ignore,
            ports,
        }),
    );
    p.metadata.generation = Some(1);
    p
}

fn nodes() -> Vec<NodeLabels> {
    (0..NODES)
        .map(|i| NodeLabels {
            name: format!("node-{i:04}"),
            labels: [
                ("role".to_string(), role(i)),
                (
                    "topology.kubernetes.io/zone".to_string(),
                    format!("zone-{}", i % 3),
                ),
            ]
            .into(),
        })
        .collect()
}

/// The report of node `i`: the policies selecting it applied, and the scan of its 2 peers:
/// every entry of every policy of each peer counted, 1 node in 50 with 5 drifting ports.
fn report(i: usize, nodes: &[NodeLabels], policies: &[PortPolicy]) -> PortReport {
    let mine = &nodes[i];
    let selecting = |n: &NodeLabels| -> Vec<&PortPolicy> {
        policies
            .iter()
            .filter(|p| selects(&p.spec.0.node_selector, &n.labels))
            .collect()
    };
    let mut spec = PortReportSpec {
        node: mine.name.clone(),
        applied: selecting(mine)
            .iter()
            .map(|p| AppliedPolicy {
                name: p.metadata.name.clone().unwrap(),
                generation: 1,
            })
            .collect(),
        rules: 40,
        scanned_at: Some(Time(Timestamp::UNIX_EPOCH)),
        ..PortReportSpec::default()
    };
    let mut per_policy: BTreeMap<String, PolicyCounts> = BTreeMap::new();
    for k in 1..=PEERS {
        let peer = &nodes[(i + k * 7) % NODES];
        spec.peers.push(peer.name.clone());
        let drifting = (i + k).is_multiple_of(50);
        for p in selecting(peer) {
            let name = p.metadata.name.clone().unwrap();
            let c = per_policy
                .entry(name.clone())
                .or_insert_with(|| PolicyCounts {
                    policy: name.clone(),
                    counts: Counts::default(),
                    drift_nodes: vec![],
                });
            let drift = if drifting { 5 } else { 0 };
            c.counts.in_sync += (ENTRIES - drift) as u64;
            c.counts.drift += drift as u64;
            if drifting {
                c.drift_nodes.push(peer.name.clone());
                for d in 0..drift {
                    spec.findings.push(Finding {
                        node: peer.name.clone(),
                        address: format!("10.0.{}.{}", i / 250, i % 250),
                        port: 8000 + d as u16,
                        protocol: "tcp".into(),
                        from: "10.0.0.1".into(),
                        expected: "closed".into(),
                        observed: "filtered".into(),
                        verdict: "drift".into(),
                        cause: Some("foreign rule INPUT#1 (-p tcp -m tcp --dport 8000 -j DROP) matches first".into()),
                        policy: Some(name.clone()),
                        entry: Some(d as u32),
                        confirmed_at: None,
                    });
                }
            }
        }
    }
    spec.policies = per_policy.into_values().collect();
    for pc in &spec.policies {
        spec.summary.add(&pc.counts);
    }
    PortReport::new(&mine.name, spec)
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[test]
fn aggregation_of_1000_reports_for_200_policies() {
    let nodes = nodes();
    let policies: Vec<PortPolicy> = (0..POLICIES).map(policy).collect();

    // Wire size of the reports (what a watch event carries).
    let sizes: Vec<usize> = (0..NODES)
        .map(|i| {
            serde_json::to_vec(&report(i, &nodes, &policies))
                .unwrap()
                .len()
        })
        .collect();
    let total: usize = sizes.iter().sum();
    let max = *sizes.iter().max().unwrap();

    // The controller's cache: decoded reports behind Arcs, as a reflector holds them.
    let wire: Vec<Vec<u8>> = (0..NODES)
        .map(|i| serde_json::to_vec(&report(i, &nodes, &policies)).unwrap())
        .collect();
    let before = CURRENT.load(Ordering::Relaxed);
    let reports: Vec<Arc<PortReport>> = wire
        .iter()
        .map(|w| Arc::new(serde_json::from_slice(w).unwrap()))
        .collect();
    let cache_bytes = CURRENT.load(Ordering::Relaxed) - before;
    drop(wire);

    // One full resync: every policy's status (validation included, as reconcile does).
    let now = Time(Timestamp::UNIX_EPOCH);
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let started = Instant::now();
    let statuses: Vec<_> = policies
        .iter()
        .map(|p| {
            let v = portwarden_kube::policy::validate(p);
            aggregate::status(p, &v, &nodes, &reports, &now)
        })
        .collect();
    let resync = started.elapsed();
    let peak_extra = PEAK.load(Ordering::Relaxed) - base;

    // Correctness of the aggregate: every matched node applied; each node is scanned by 2
    // peers, so each matched node's ENTRIES ports count twice.
    for (p, s) in policies.iter().zip(&statuses) {
        let matched = nodes
            .iter()
            .filter(|n| selects(&p.spec.0.node_selector, &n.labels))
            .count();
        assert_eq!(s.matched_nodes as usize, matched, "{:?}", p.metadata.name);
        assert_eq!(s.applied_nodes, s.matched_nodes);
        assert_eq!(s.ports.total() as usize, matched * ENTRIES * PEERS);
    }
    let drifting = statuses.iter().filter(|s| s.ports.drift > 0).count();
    assert!(drifting > 0);

    let one = Instant::now();
    let v = portwarden_kube::policy::validate(&policies[0]);
    let _ = aggregate::status(&policies[0], &v, &nodes, &reports, &now);
    let single = one.elapsed();

    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!(
        "simulation ({build} build): {NODES} nodes, {POLICIES} policies, {NODES} PortReports, {PEERS} peers per node"
    );
    println!(
        "  report JSON: mean {:.1} KiB, max {:.1} KiB, all {:.2} MiB",
        total as f64 / NODES as f64 / 1024.0,
        max as f64 / 1024.0,
        mib(total)
    );
    println!(
        "  controller report cache: {:.2} MiB decoded",
        mib(cache_bytes)
    );
    println!(
        "  full resync ({POLICIES} statuses): {:.1} ms, peak extra memory {:.2} MiB; one reconcile {:.2} ms",
        resync.as_secs_f64() * 1e3,
        mib(peak_extra),
        single.as_secs_f64() * 1e3
    );
    println!("  policies in drift: {drifting} of {POLICIES}");
}
