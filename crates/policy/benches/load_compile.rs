//! Loading and compiling at scale: 100 policies x 100 entries, an inventory of 1,000 nodes.
//! Issue goal: well under a second for load + compile of every node.

#![allow(clippy::unwrap_used, missing_docs)] // benchmark code

use std::fmt::Write as _;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use portwarden_policy::load_paths;

const POLICIES: usize = 100;
const ENTRIES: usize = 100;
const NODES: usize = 1000;
const ROLES: usize = 10;
const ZONES: usize = 3;

/// Writes the policy files and the inventory; every policy selects one role (and some a zone
/// too), entries mix single ports, ranges, protocols, states and sources of both families.
fn write_fixture(dir: &Path) {
    for p in 0..POLICIES {
        let mut y = String::new();
        writeln!(y, "apiVersion: portwarden.io/v1alpha1\nkind: PortPolicy\nmetadata:\n  name: policy-{p}\nspec:").unwrap();
        writeln!(
            y,
            "  priority: {}\n  nodeSelector:\n    matchLabels:\n      role: role-{}",
            100 + p % 7 * 100,
            p % ROLES
        )
        .unwrap();
        if p % 4 == 0 {
            writeln!(y, "    matchExpressions:\n      - key: zone\n        operator: In\n        values: [zone-{}]", p % ZONES).unwrap();
        }
        writeln!(y, "  ports:").unwrap();
        for e in 0..ENTRIES {
            let port = 1000 + p * ENTRIES + e;
            let ports = if e % 5 == 0 {
                format!("\"{port}-{}\"", port + 9)
            } else {
                format!("\"{port}\"")
            };
            let state = ["open", "closed", "filtered"][e % 3];
            let proto = if e % 7 == 0 { "UDP" } else { "TCP" };
            writeln!(
                y,
                "    - ports: {ports}\n      protocol: {proto}\n      state: {state}"
            )
            .unwrap();
            match e % 4 {
                0 => writeln!(
                    y,
                    "      from: [\"10.{}.0.0/16\", \"fd00:{e}::/64\"]",
                    e % 250
                )
                .unwrap(),
                1 => writeln!(y, "      from: [\"192.168.{}.7\"]", e % 250).unwrap(),
                _ => {}
            }
        }
        std::fs::write(dir.join(format!("policy-{p}.yaml")), y).unwrap();
    }
    let mut inv = String::from("apiVersion: portwarden.io/v1alpha1\nkind: Inventory\nnodes:\n");
    for n in 0..NODES {
        writeln!(
            inv,
            "  - name: node-{n}\n    addresses: [\"10.213.{}.{}\"]\n    labels: {{role: role-{}, zone: zone-{}}}",
            n / 250,
            n % 250 + 1,
            n % ROLES,
            n % ZONES
        )
        .unwrap();
    }
    std::fs::write(dir.join("inventory.yaml"), inv).unwrap();
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    write_fixture(dir.path());
    let loaded = load_paths(&[dir.path()]).unwrap();
    assert_eq!(loaded.policies.policies().len(), POLICIES);
    assert_eq!(loaded.nodes.len(), NODES);

    let mut g = c.benchmark_group("policy");
    g.sample_size(10);
    g.bench_function("load 100x100 + inventory 1000", |b| {
        b.iter(|| load_paths(&[dir.path()]).unwrap())
    });
    g.bench_function("compile 1000 nodes", |b| {
        b.iter(|| loaded.policies.compile_nodes(&loaded.nodes))
    });
    g.bench_function("load + compile (end to end)", |b| {
        b.iter(|| {
            let l = load_paths(&[dir.path()]).unwrap();
            l.policies.compile_nodes(&l.nodes)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
