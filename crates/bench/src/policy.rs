//! Loading and compiling at scale: 100 policies x 100 entries and an inventory of 1,000 nodes,
//! in process (the policy crate's `load_paths` and `compile_nodes`). Goal from the policy
//! issue: well under a second for load and compile of every node.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, ensure};
use portwarden_policy::{Loaded, load_paths};

use crate::Part;
use crate::report::{Row, Workload, count};
use crate::suite::{Ctx, progress};

const ROLES: usize = 10;
const ZONES: usize = 3;

/// Writes `policies` policy files of `entries` entries each and an inventory of `nodes` nodes
/// into `dir`. Every policy selects one role (every fourth a zone too); entries mix single
/// ports and ranges, TCP and UDP, the three states, and sources of both families.
///
/// # Errors
/// When a file cannot be written.
pub fn write_fixture(dir: &Path, policies: usize, entries: usize, nodes: usize) -> Result<()> {
    for p in 0..policies {
        let mut y = String::new();
        let _ = writeln!(
            y,
            "apiVersion: portwarden.io/v1alpha1\nkind: PortPolicy\nmetadata:\n  name: policy-{p}\nspec:"
        );
        let _ = writeln!(
            y,
            "  priority: {}\n  nodeSelector:\n    matchLabels:\n      role: role-{}",
            100 + p % 7 * 100,
            p % ROLES
        );
        if p % 4 == 0 {
            let _ = writeln!(
                y,
                "    matchExpressions:\n      - key: zone\n        operator: In\n        values: [zone-{}]",
                p % ZONES
            );
        }
        let _ = writeln!(y, "  ports:");
        for e in 0..entries {
            let port = 1000 + (p * entries + e) % 60_000;
            let ports = if e % 5 == 0 {
                format!("\"{port}-{}\"", port + 9)
            } else {
                format!("\"{port}\"")
            };
            let state = ["open", "closed", "filtered"][e % 3];
            let proto = if e % 7 == 0 { "UDP" } else { "TCP" };
            let _ = writeln!(
                y,
                "    - ports: {ports}\n      protocol: {proto}\n      state: {state}"
            );
            match e % 4 {
                0 => {
                    let _ = writeln!(
                        y,
                        "      from: [\"10.{}.0.0/16\", \"fd00:{e}::/64\"]",
                        e % 250
                    );
                }
                1 => {
                    let _ = writeln!(y, "      from: [\"192.168.{}.7\"]", e % 250);
                }
                _ => {}
            }
        }
        std::fs::write(dir.join(format!("policy-{p}.yaml")), y).context("writing a policy")?;
    }
    let mut inv = String::from("apiVersion: portwarden.io/v1alpha1\nkind: Inventory\nnodes:\n");
    for n in 0..nodes {
        let _ = writeln!(
            inv,
            "  - name: node-{n}\n    addresses: [\"10.213.{}.{}\"]\n    labels: {{role: role-{}, zone: zone-{}}}",
            n / 250,
            n % 250 + 1,
            n % ROLES,
            n % ZONES
        );
    }
    std::fs::write(dir.join("inventory.yaml"), inv).context("writing the inventory")?;
    Ok(())
}

/// [`load_paths`], its first diagnostic as the error (`WHAT does not load: ...`).
///
/// # Errors
/// When the documents do not load.
pub fn load<P: AsRef<Path>>(paths: &[P], what: &str) -> Result<Loaded> {
    load_paths(paths).map_err(|d| {
        anyhow!(
            "{what} does not load: {}",
            d.first().map(|d| d.headline()).unwrap_or_default()
        )
    })
}

/// Times load, compile and both together.
///
/// # Errors
/// When the fixture cannot be written or does not load.
pub fn run(ctx: &Ctx) -> Result<Part> {
    let s = &ctx.settings;
    let (policies, entries, nodes) = s.policy_shape;
    progress(&format!(
        "policy: {policies} x {entries} entries, {nodes} nodes"
    ));
    let dir = ctx.work.join("policy-scale");
    std::fs::create_dir_all(&dir).context("creating the fixture directory")?;
    write_fixture(&dir, policies, entries, nodes)?;
    let load = || load(&[&dir], "fixture");
    let loaded = load()?;
    ensure!(
        loaded.policies.policies().len() == policies && loaded.nodes.len() == nodes,
        "fixture loaded partially"
    );
    let (mut l, mut c, mut both) = (Vec::new(), Vec::new(), Vec::new());
    let mut intents = 0;
    let mut rules = 0;
    for _ in 0..s.runs_ours {
        let t = Instant::now();
        let x = load()?;
        l.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let compiled = loaded.policies.compile_nodes(&loaded.nodes);
        c.push(t.elapsed().as_secs_f64());
        intents = compiled.len();
        rules = compiled.values().map(|i| i.rules.len()).max().unwrap_or(0);
        let t = Instant::now();
        let y = load()?;
        let _ = y.policies.compile_nodes(&y.nodes);
        both.push(t.elapsed().as_secs_f64());
        drop(x);
    }
    let shape = format!(
        "{policies} policies x {entries} entries, inventory of {} nodes",
        count(nodes as f64)
    );
    Ok(Part {
        workloads: vec![Workload {
            title: "Policy load and compile at 100 x 100 x 1,000".into(),
            setup: format!(
                "{shape}: every policy selects a role (every fourth a zone too); entries mix \
                 single ports and ranges, TCP and UDP, the three states, and IPv4/IPv6 sources. \
                 Measured in process with the policy crate; there is no peer tool for this, the \
                 goal is well under a second for everything."
            ),
            rows: vec![
                Row::timed(
                    "load + compile (end to end)",
                    "load_paths(dir) + compile_nodes(nodes)",
                    true,
                    both,
                )
                .agreement(format!(
                    "{} node intents, up to {} rules each",
                    count(intents as f64),
                    count(rules as f64)
                )),
                Row::timed("load (parse, validate)", "load_paths(dir)", true, l),
                Row::timed("compile for every node", "compile_nodes(nodes)", true, c),
            ],
            notes: Vec::new(),
        }],
        scaling: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_loads_with_every_policy_and_node() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_fixture(dir.path(), 4, 10, 20).expect("writes");
        let loaded = load_paths(&[dir.path()]).expect("loads");
        assert_eq!(loaded.policies.policies().len(), 4);
        assert_eq!(loaded.nodes.len(), 20);
        let compiled = loaded.policies.compile_nodes(&loaded.nodes);
        assert_eq!(compiled.len(), 20);
        assert!(compiled.values().any(|i| !i.rules.is_empty()));
    }
}
