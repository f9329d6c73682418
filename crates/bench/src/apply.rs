//! The rule workloads: applying 1k/10k/50k entries to an empty lab node and the no-op
//! reconcile at 10k — portwarden (its release binary, everything included: load the YAML,
//! compile, detect the backend, read, render, diff, one `iptables-restore` per family, read
//! back) against a bare `iptables-restore --noflush` of the same entries written by hand (one
//! rule each, both families), a bare restore of portwarden's own transactions (the kernel's
//! floor for exactly its rules), and one `iptables -A` process per rule.
//!
//! Agreement: after portwarden's apply the node's `iptables-save` is parsed and every
//! portwarden chain and the jump are compared with what the renderer expects; the hand-written
//! chain and the per-rule chain are compared with the hand-written text.
//!
//! Everything here runs on one thread that has entered the lab node's namespace (checked
//! before the first write), so every `iptables*` process it starts acts on the lab node only.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail, ensure};
use portwarden_lab::{Lab, Netns};
use portwarden_netfilter::save::tokens;
use portwarden_netfilter::{
    Backend, DEFAULT_FAILSAFE, Failsafe, Family, Netfilter, Options, Rendered, Ruleset, render,
};
use portwarden_policy::NodeIntent;

use crate::Part;
use crate::agent;
use crate::analysis;
use crate::process::{Job, Measured, run_here};
use crate::report::{Point, Row, Scaling, Series, Workload, count};
use crate::stats::{median, power_fit};
use crate::suite::{Ctx, NODE, Settings, progress};

/// First port of the generated entries (entry `i` is port `FIRST_PORT + i`).
pub const FIRST_PORT: u32 = 10_000;
/// The chain the hand-written rules go to.
pub const HAND_CHAIN: &str = "BENCH";

/// A policy of `n` single-port TCP entries cycling through open, closed and filtered, for
/// every node and any source (so both families get rules).
pub fn policy_yaml(n: usize) -> String {
    let mut s = String::from(
        "apiVersion: portwarden.io/v1alpha1\nkind: PortPolicy\nmetadata:\n  name: bench\nspec:\n  ports:\n",
    );
    for i in 0..n {
        let state = ["open", "closed", "filtered"][i % 3];
        let _ = writeln!(
            s,
            "    - ports: \"{}\"\n      state: {state}",
            FIRST_PORT + i as u32
        );
    }
    s
}

/// The inventory with the one lab node.
pub fn inventory_yaml(address: &str) -> String {
    format!(
        "apiVersion: portwarden.io/v1alpha1\nkind: Inventory\nnodes:\n  - name: {NODE}\n    addresses: [\"{address}\"]\n    labels: {{role: bench}}\n"
    )
}

/// The rule arguments of hand-written entry `i` (after `-A BENCH`), as a person would write
/// them: one rule per entry with a comment.
pub fn hand_rule(i: usize) -> Vec<String> {
    let target = match i % 3 {
        0 => "ACCEPT",
        1 => "REJECT --reject-with tcp-reset",
        _ => "DROP",
    };
    let mut v: Vec<String> = ["-p", "tcp", "-m", "tcp", "--dport"]
        .map(String::from)
        .to_vec();
    v.push((FIRST_PORT + i as u32).to_string());
    v.extend(["-m", "comment", "--comment"].map(String::from));
    v.push(format!("bench entry {i}"));
    v.push("-j".into());
    v.extend(target.split(' ').map(String::from));
    v
}

/// `iptables-restore --noflush` input with `n` hand-written rules in [`HAND_CHAIN`], jumped
/// to from `INPUT`.
pub fn hand_restore(n: usize) -> String {
    let mut s = format!("*filter\n:{HAND_CHAIN} - [0:0]\n-I INPUT 1 -j {HAND_CHAIN}\n");
    for i in 0..n {
        let args: Vec<String> = hand_rule(i)
            .iter()
            .map(|a| portwarden_netfilter::save::quote(a))
            .collect();
        let _ = writeln!(s, "-A {HAND_CHAIN} {}", args.join(" "));
    }
    s.push_str("COMMIT\n");
    s
}

/// How many of the expected rules differ from what the kernel holds: every chain portwarden
/// renders, the jump at `INPUT` position 1, and any other portwarden chain (which should not
/// exist). Returns (rules that differ, rules expected).
pub fn compare_expected(expected: &Rendered, current: &[(Family, Ruleset)]) -> (usize, usize) {
    let (mut differ, mut total) = (0, 0);
    for (family, ruleset) in current {
        let want = expected.family(*family);
        let empty = portwarden_netfilter::save::Table {
            name: "filter".into(),
            chains: Vec::new(),
        };
        let table = ruleset.table("filter").unwrap_or(&empty);
        for (name, rules) in &want.chains {
            total += rules.len();
            let have: Vec<Vec<String>> = table
                .chain(name)
                .map(|c| c.rules.iter().map(|r| tokens(&r.spec)).collect())
                .unwrap_or_default();
            differ += rules
                .iter()
                .enumerate()
                .filter(|(i, r)| have.get(*i) != Some(&tokens(r)))
                .count();
            differ += have.len().saturating_sub(rules.len());
        }
        for (hook, jump) in [("INPUT", &want.jump), ("FORWARD", &want.forward_jump)] {
            let Some(jump) = jump else { continue };
            total += 1;
            let first = table
                .chain(hook)
                .and_then(|c| c.rules.first())
                .map(|r| tokens(&r.spec));
            if first != Some(tokens(jump)) {
                differ += 1;
            }
        }
        for c in &table.chains {
            if c.name.starts_with(portwarden_netfilter::chains::PREFIX)
                && !want.chains.iter().any(|(n, _)| *n == c.name)
            {
                differ += c.rules.len().max(1);
            }
        }
    }
    (differ, total)
}

/// How many of the first `n` hand-written rules differ from the kernel's [`HAND_CHAIN`].
pub fn compare_hand(ruleset: &Ruleset, n: usize) -> usize {
    let have: Vec<Vec<String>> = ruleset
        .table("filter")
        .and_then(|t| t.chain(HAND_CHAIN))
        .map(|c| c.rules.iter().map(|r| tokens(&r.spec)).collect())
        .unwrap_or_default();
    (0..n)
        .filter(|&i| have.get(i) != Some(&hand_rule(i)))
        .count()
        + have.len().saturating_sub(n)
}

fn tool(backend: Backend, family: Family, what: &str) -> String {
    format!("{}-{}-{what}", family.tool(), backend)
}

fn run(job: Job, what: &str) -> Result<Measured> {
    run_here(&job)?.check(what)
}

/// Empties the filter table of both families (of the lab node: see [`in_lab`]).
fn clear(backend: Backend) -> Result<()> {
    for f in Family::ALL {
        run(
            Job::new(&[tool(backend, f, "restore")]).stdin(
                "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n".into(),
            ),
            "clearing the lab node's filter table",
        )?;
    }
    Ok(())
}

/// Refuses to write unless this thread is in another network namespace than the process.
fn in_lab() -> Result<()> {
    let me =
        std::fs::read_link("/proc/thread-self/ns/net").context("reading this thread's netns")?;
    let main = std::fs::read_link("/proc/self/ns/net").context("reading the process's netns")?;
    ensure!(
        me != main,
        "refusing to touch netfilter outside a lab namespace"
    );
    Ok(())
}

/// Times of one size, every tool.
#[derive(Default, Debug, Clone)]
struct Size {
    n: usize,
    ours: Vec<f64>,
    hand: Vec<f64>,
    own: Vec<f64>,
    rules_written: usize,
    ours_agree: String,
    hand_agree: String,
}

#[derive(Default, Debug, Clone)]
struct PerRule {
    n: usize,
    times: Vec<f64>,
    differ: usize,
}

#[derive(Default, Debug, Clone)]
struct Noop {
    refresh: Vec<f64>,
    fresh: Vec<f64>,
    save: Vec<f64>,
}

#[derive(Default, Debug, Clone)]
struct Results {
    backend: String,
    sizes: Vec<Size>,
    per_rule: Vec<PerRule>,
    noop: Noop,
    status: crate::status::Status,
}

struct Input {
    settings: Settings,
    bin: String,
    policies: Vec<(usize, PathBuf)>,
    inventory: PathBuf,
}

fn intent(policy: &Path, inventory: &Path) -> Result<NodeIntent> {
    let loaded = crate::policy::load(&[policy, inventory], "bench policy")?;
    let node = loaded
        .node(NODE)
        .ok_or_else(|| anyhow!("node {NODE} missing from the bench inventory"))?;
    Ok(loaded.policies.compile(&node.labels))
}

fn apply_job(input: &Input, policy: &Path) -> Job {
    Job::new(&[
        input.bin.clone(),
        "apply".into(),
        "-f".into(),
        policy.to_string_lossy().into_owned(),
        "--inventory".into(),
        input.inventory.to_string_lossy().into_owned(),
        "--node".into(),
        NODE.into(),
        "-o".into(),
        "json".into(),
    ])
}

fn measure(input: &Input) -> Result<Results> {
    in_lab()?;
    let s = &input.settings;
    let nf = Netfilter::detect(&Options::default()).context("detecting the iptables backend")?;
    let backend = nf.backend();
    let failsafe: Failsafe = DEFAULT_FAILSAFE
        .parse()
        .map_err(|e| anyhow!("default failsafe: {e}"))?;
    let mut out = Results {
        backend: backend.to_string(),
        ..Results::default()
    };
    for (n, policy) in &input.policies {
        progress(&format!("apply: {} entries", count(*n as f64)));
        let intent = intent(policy, &input.inventory)?;
        let size = measure_size(input, &nf, &failsafe, &intent, *n, policy)?;
        if *n == s.steady_entries {
            out.noop = noop(input, policy, &nf, &intent, &failsafe, backend)?;
            // still converged on the steady-state policy: what `status` reads
            out.status = crate::status::measure(
                s,
                &input.bin,
                (policy, &input.inventory),
                *n,
                &out.backend,
            )?;
        }
        out.sizes.push(size);
    }
    for &n in &s.per_rule_sizes {
        out.per_rule.push(measure_per_rule(s, &nf, n)?);
    }
    clear(backend)?;
    Ok(out)
}

/// One apply size, every run: the hand-written iptables-restore and the replay of
/// portwarden's own transaction (the peers), then `portwarden apply`, each on an empty filter
/// table; the first run of each is checked against the expected rules.
fn measure_size(
    input: &Input,
    nf: &Netfilter,
    failsafe: &Failsafe,
    intent: &NodeIntent,
    n: usize,
    policy: &Path,
) -> Result<Size> {
    let s = &input.settings;
    let backend = nf.backend();
    let addresses = portwarden_netfilter::addresses::node_addresses()
        .context("listing the lab node's addresses")?;
    let expected = render(intent, failsafe, &addresses);
    let hand = hand_restore(n);
    clear(backend)?;
    let own: Vec<(Family, String)> = nf
        .plan(intent, failsafe)
        .context("planning on an empty node")?
        .families
        .iter()
        .map(|f| (f.family, f.restore.clone()))
        .collect();
    let mut size = Size {
        n,
        ..Size::default()
    };
    for i in 0..s.runs_ours.max(s.runs_peer) {
        if i < s.runs_peer {
            measure_peers(nf, &hand, &own, i == 0, &mut size)?;
        }
        if i < s.runs_ours {
            clear(backend)?;
            let m = run(apply_job(input, policy), "portwarden apply")?;
            size.ours.push(m.wall);
            let v: serde_json::Value =
                serde_json::from_str(&m.stdout).context("portwarden apply -o json output")?;
            size.rules_written = v["changes"].as_u64().unwrap_or(0) as usize;
            if i == 0 {
                let (differ, total) = compare_expected(&expected, &nf.read_all()?);
                size.ours_agree = if differ == 0 {
                    format!(
                        "iptables-save = expected ruleset ({} rules)",
                        count(total as f64)
                    )
                } else {
                    format!(
                        "**{differ} of {} rules differ from the expected ruleset**",
                        count(total as f64)
                    )
                };
            }
        }
    }
    Ok(size)
}

/// One run of the two peers of an apply size on an empty filter table: the hand-written
/// iptables-restore (checked against its text when `first`) and the replay of portwarden's
/// own transaction.
fn measure_peers(
    nf: &Netfilter,
    hand: &str,
    own: &[(Family, String)],
    first: bool,
    size: &mut Size,
) -> Result<()> {
    let backend = nf.backend();
    let n = size.n;
    clear(backend)?;
    let t = Instant::now();
    for f in Family::ALL {
        run(
            Job::new(&[tool(backend, f, "restore"), "--noflush".into()]).stdin(hand.to_string()),
            "hand-written iptables-restore",
        )?;
    }
    size.hand.push(t.elapsed().as_secs_f64());
    if first {
        let differ: usize = nf.read_all()?.iter().map(|(_, r)| compare_hand(r, n)).sum();
        size.hand_agree = if differ == 0 {
            format!("all {} rules in place (x2 families)", count(n as f64))
        } else {
            format!("**{differ} rules differ from the text**")
        };
    }
    clear(backend)?;
    let t = Instant::now();
    for (f, text) in own {
        run(
            Job::new(&[tool(backend, *f, "restore"), "--noflush".into()]).stdin(text.clone()),
            "replaying portwarden's transaction",
        )?;
    }
    size.own.push(t.elapsed().as_secs_f64());
    Ok(())
}

/// `n` rules added one `iptables -A` call each (IPv4), every peer run on an empty table; the
/// first run is checked against the hand-written text.
fn measure_per_rule(s: &Settings, nf: &Netfilter, n: usize) -> Result<PerRule> {
    let backend = nf.backend();
    progress(&format!("apply: {n} iptables -A calls"));
    let ipt = format!("{}-{backend}", Family::Ipv4.tool());
    let mut pr = PerRule {
        n,
        ..PerRule::default()
    };
    for i in 0..s.runs_peer {
        clear(backend)?;
        run(
            Job::new(&[ipt.clone(), "-w".into(), "-N".into(), HAND_CHAIN.into()]),
            "iptables -N",
        )?;
        let t = Instant::now();
        for r in 0..n {
            let mut argv = vec![ipt.clone(), "-w".into(), "-A".into(), HAND_CHAIN.into()];
            argv.extend(hand_rule(r));
            run(Job::new(&argv), "iptables -A")?;
        }
        pr.times.push(t.elapsed().as_secs_f64());
        if i == 0 {
            pr.differ = compare_hand(&nf.read(Family::Ipv4)?, n);
        }
    }
    Ok(pr)
}

fn noop(
    input: &Input,
    policy: &Path,
    nf: &Netfilter,
    intent: &NodeIntent,
    failsafe: &Failsafe,
    backend: Backend,
) -> Result<Noop> {
    let s = &input.settings;
    progress("apply: no-op reconcile");
    // The rules are in place from the last apply; the agent's handle (`nf`) renders once,
    // then reuses the rendering while the intent stays the same.
    if !nf.plan(intent, failsafe)?.is_converged() {
        bail!("the node is not converged after portwarden apply");
    }
    let mut out = Noop::default();
    for i in 0..s.runs_ours.max(s.runs_peer) {
        if i < s.runs_ours {
            let t = Instant::now();
            let plan = nf.plan(intent, failsafe)?;
            out.refresh.push(t.elapsed().as_secs_f64());
            ensure!(
                plan.is_converged(),
                "no-op refresh found changes: {:?}",
                plan.add
            );
            let m = run(apply_job(input, policy), "portwarden apply (no-op)")?;
            let v: serde_json::Value = serde_json::from_str(&m.stdout).context("apply -o json")?;
            ensure!(
                v["transactions"].as_u64() == Some(0),
                "a no-op apply wrote: {}",
                m.stdout
            );
            out.fresh.push(m.wall);
        }
        if i < s.runs_peer {
            let t = Instant::now();
            for f in Family::ALL {
                run(
                    Job::new(&[tool(backend, f, "save"), "-t".into(), "filter".into()]),
                    "iptables-save",
                )?;
            }
            out.save.push(t.elapsed().as_secs_f64());
        }
    }
    Ok(out)
}

/// Writes the policies, builds the lab, measures, then runs the agent workload on the same
/// node with the steady-state policy.
pub fn run_all(ctx: &Ctx) -> Result<Part> {
    let s = ctx.settings.clone();
    let lab = Lab::builder("bapply")
        .build()
        .context("building the apply lab")?;
    let node: Netns = lab.node(0).clone();
    // The node forwards both families, as a Docker or Kubernetes node does: portwarden's
    // forward path (FORWARD, for DNAT'ed ports) is part of every apply measured here.
    for key in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
        node.exec(&["sysctl", "-qw", key])
            .with_context(|| format!("sysctl {key} in the apply lab"))?;
    }
    let inventory = ctx.work.join("inventory.yaml");
    std::fs::write(&inventory, inventory_yaml(&node.v4().to_string()))
        .context("writing the bench inventory")?;
    let mut policies = Vec::new();
    for &n in &s.apply_sizes {
        let dir = ctx.work.join(format!("policy-{n}"));
        std::fs::create_dir_all(&dir).context("creating a policy directory")?;
        let file = dir.join("bench.yaml");
        std::fs::write(&file, policy_yaml(n)).context("writing a bench policy")?;
        policies.push((n, file));
    }
    let input = Input {
        settings: s.clone(),
        bin: ctx.bin(),
        policies: policies.clone(),
        inventory: inventory.clone(),
    };
    let results = node
        .run(move || measure(&input))
        .context("measuring inside the lab node")??;
    let mut part = build(&s, &results);
    let steady_dir = ctx.work.join(format!("policy-{}", s.steady_entries));
    part.workloads.push(agent::steady(
        ctx,
        &node,
        &steady_dir,
        &inventory,
        &results.backend,
    )?);
    drop(lab);
    Ok(part)
}

fn per_rule_estimate(per_rule: &[PerRule], n: usize) -> Option<(f64, bool, f64)> {
    if let Some(p) = per_rule.iter().find(|p| p.n == n) {
        return Some((median(&p.times)?, false, 1.0));
    }
    let pts: Vec<(f64, f64)> = per_rule
        .iter()
        .filter_map(|p| Some((p.n as f64, median(&p.times)?)))
        .collect();
    let largest = pts.iter().copied().max_by(|a, b| a.0.total_cmp(&b.0))?;
    // Growth is at least linear (every call forks a process and reads the chain); use the
    // measured exponent when it is larger.
    let k = power_fit(&pts).map_or(1.0, |f| f.exponent.max(1.0));
    Some((largest.1 * (n as f64 / largest.0).powf(k), true, k))
}

/// The apply part of the report: one workload per size that gets a table, the no-op
/// reconcile, and the scaling study.
fn build(s: &Settings, r: &Results) -> Part {
    let mut part = Part::default();
    for size in r.sizes.iter().filter(|z| s.apply_workloads.contains(&z.n)) {
        part.workloads.push(size_workload(r, size));
    }
    part.workloads.push(noop_workload(s, r));
    part.workloads
        .push(crate::status::workload(s, &r.status, &r.backend));
    part.scaling.push(scaling(r));
    part
}

/// The workload of one apply size: portwarden apply against hand-written iptables-restore,
/// the replay of portwarden's own transaction and one `iptables -A` per rule.
fn size_workload(r: &Results, size: &Size) -> Workload {
    let n = count(size.n as f64);
    let restore = format!("iptables-{}-restore", r.backend);
    let mut rows = vec![
        Row::timed(
            "portwarden apply",
            &format!("portwarden apply -f policy.yaml --inventory inventory.yaml --node {NODE}"),
            true,
            size.ours.clone(),
        )
        .agreement(size.ours_agree.clone())
        .detail(format!(
            "{} rules and chains written",
            count(size.rules_written as f64)
        )),
        Row::timed(
            "hand-written iptables-restore",
            &format!("{restore} --noflush < hand.rules (+ ip6tables)"),
            false,
            size.hand.clone(),
        )
        .agreement(size.hand_agree.clone())
        .detail(format!("{n} rules per family, one per entry")),
        Row::timed(
            "iptables-restore of portwarden's rules",
            &format!("{restore} --noflush < portwarden's transaction (+ ip6tables)"),
            false,
            size.own.clone(),
        )
        .agreement("the same rules")
        .detail("the kernel's floor for exactly these rules"),
    ];
    rows.extend(per_rule_row(r, size, &n));
    Workload {
        title: format!("Apply {n} entries"),
        setup: format!(
            "One policy of {n} single-port TCP entries (ports {}-{}, states cycling open, \
             closed, filtered, any source, so IPv4 and IPv6 both get rules) applied to a lab \
             node with an empty filter table ({} backend) that forwards both families, as a \
             Docker or Kubernetes node does, so every entry is rendered for INPUT and for \
             the forward path (FORWARD, one rule per port: conntrack's original-port match \
             takes one range per rule). portwarden's time includes \
             process start, loading and compiling the YAML, detecting the backend, reading \
             the rules, rendering, diffing, one transaction per family and the read-back.",
            FIRST_PORT,
            FIRST_PORT + size.n as u32 - 1,
            r.backend
        ),
        rows,
        notes: Vec::new(),
    }
}

/// The one-`iptables -A`-per-rule row of an apply workload: measured at this size, or
/// extrapolated from the measured sizes (None when nothing was measured).
fn per_rule_row(r: &Results, size: &Size, n: &str) -> Option<Row> {
    let ipt = format!("iptables-{}", r.backend);
    let (t, estimated, k) = per_rule_estimate(&r.per_rule, size.n)?;
    let mut row = Row::timed(
        "one iptables -A per rule",
        &format!("{ipt} -w -A {HAND_CHAIN} <rule>, x {n} (IPv4 only)"),
        false,
        if estimated {
            vec![t]
        } else {
            r.per_rule
                .iter()
                .find(|p| p.n == size.n)
                .map(|p| p.times.clone())
                .unwrap_or_default()
        },
    );
    row.estimated = estimated;
    let measured = r
        .per_rule
        .iter()
        .map(|p| count(p.n as f64))
        .collect::<Vec<_>>()
        .join(", ");
    let differ: usize = r.per_rule.iter().map(|p| p.differ).sum();
    row = if estimated {
        row.agreement(if differ == 0 {
            format!("same rules as the hand-written text (checked at {measured} calls)")
        } else {
            format!("**{differ} rules differ at the measured sizes**")
        })
        .detail(format!("measured at {measured} calls, extrapolated as calls^{k:.2}; IPv4 only, so a lower bound"))
    } else {
        let differ = r
            .per_rule
            .iter()
            .find(|p| p.n == size.n)
            .map_or(0, |p| p.differ);
        row.agreement(if differ == 0 {
            "same rules as the hand-written text".to_string()
        } else {
            format!("**{differ} rules differ**")
        })
        .detail("IPv4 only: a lower bound for both families")
    };
    Some(row)
}

/// The no-op reconcile workload: the agent's refresh and a fresh apply against
/// `iptables-save`.
fn noop_workload(s: &Settings, r: &Results) -> Workload {
    let steady = count(s.steady_entries as f64);
    Workload {
        title: format!("No-op reconcile at {steady} entries"),
        setup: format!(
            "The {steady}-entry policy already applied; nothing to change. The agent's refresh \
             (in process: read both families, diff against the rendering it keeps while the \
             intent is unchanged) and a fresh `portwarden apply` process (load, compile, read, \
             render, diff) against the floor of any reconciler that re-reads the rules: \
             `iptables-save` of both families."
        ),
        rows: vec![
            Row::timed(
                "portwarden agent refresh",
                "Netfilter::plan on the agent's handle (library)",
                true,
                r.noop.refresh.clone(),
            )
            .agreement("converged: 0 changes, 0 writes"),
            Row::timed(
                "portwarden apply (fresh process)",
                &format!(
                    "portwarden apply -f policy.yaml --inventory inventory.yaml --node {NODE}"
                ),
                true,
                r.noop.fresh.clone(),
            )
            .agreement("0 transactions"),
            Row::timed(
                "iptables-save, both families",
                &format!(
                    "iptables-{0}-save -t filter; ip6tables-{0}-save -t filter",
                    r.backend
                ),
                false,
                r.noop.save.clone(),
            ),
        ],
        notes: Vec::new(),
    }
}

/// Apply time against entries, each series' median per size (one `iptables -A` per rule
/// extrapolated past the largest measured size).
fn scaling(r: &Results) -> Scaling {
    let pts = |f: &dyn Fn(&Size) -> &Vec<f64>| -> Vec<Point> {
        r.sizes
            .iter()
            .filter_map(|z| {
                Some(Point {
                    x: z.n as f64,
                    y: median(f(z))?,
                    cpu: None,
                    extrapolated: false,
                })
            })
            .collect()
    };
    let own_name = "iptables-restore of portwarden's rules";
    let mut per_rule_points: Vec<Point> = r
        .per_rule
        .iter()
        .filter_map(|p| {
            Some(Point {
                x: p.n as f64,
                y: median(&p.times)?,
                cpu: None,
                extrapolated: false,
            })
        })
        .collect();
    let largest = r.per_rule.iter().map(|p| p.n).max().unwrap_or(0);
    for z in r.sizes.iter().filter(|z| z.n > largest) {
        if let Some((t, true, _)) = per_rule_estimate(&r.per_rule, z.n) {
            per_rule_points.push(Point {
                x: z.n as f64,
                y: t,
                cpu: None,
                extrapolated: true,
            });
        }
    }
    let series = vec![
        Series {
            name: "portwarden apply".into(),
            ours: true,
            points: pts(&|z| &z.ours),
        },
        Series {
            name: "hand-written iptables-restore".into(),
            ours: false,
            points: pts(&|z| &z.hand),
        },
        Series {
            name: own_name.into(),
            ours: false,
            points: pts(&|z| &z.own),
        },
        Series {
            name: "one iptables -A per rule (IPv4)".into(),
            ours: false,
            points: per_rule_points,
        },
    ];
    let analysis = analysis::apply(&series, own_name);
    Scaling {
        title: "Apply time against rule count".into(),
        unit: "entries".into(),
        series,
        chart: None,
        analysis,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The intent the generated `n`-entry policy and the inventory compile to.
    fn generated_intent(n: usize) -> NodeIntent {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("bench.yaml");
        let inv = dir.path().join("inventory.yaml");
        std::fs::write(&p, policy_yaml(n)).expect("write");
        std::fs::write(&inv, inventory_yaml("10.213.0.11")).expect("write");
        intent(&p, &inv).expect("loads")
    }

    #[test]
    fn generated_policy_loads_and_compiles_every_entry() {
        let intent = generated_intent(30);
        assert_eq!(intent.rules.len(), 30);
        let failsafe: Failsafe = DEFAULT_FAILSAFE.parse().expect("failsafe");
        let r = render(&intent, &failsafe, &[]);
        assert!(r.v4.rule_count() > 0 && r.v6.rule_count() > 0);
    }

    #[test]
    fn hand_rules_round_trip_through_the_save_parser() {
        let text = hand_restore(3);
        assert!(text.contains("-A BENCH -p tcp -m tcp --dport 10001 -m comment --comment \"bench entry 1\" -j REJECT --reject-with tcp-reset"), "{text}");
        // What iptables-save prints for these rules is what compare_hand expects.
        let saved = text.replace(
            "-I INPUT 1 -j BENCH\n",
            ":INPUT ACCEPT [0:0]\n-A INPUT -j BENCH\n",
        );
        let rs = Ruleset::parse(&saved).expect("parses");
        assert_eq!(compare_hand(&rs, 3), 0);
        assert_eq!(compare_hand(&rs, 4), 1);
        assert_eq!(compare_hand(&rs, 2), 1);
    }

    #[test]
    fn expected_ruleset_comparison_counts_missing_and_foreign_rules() {
        let failsafe: Failsafe = DEFAULT_FAILSAFE.parse().expect("failsafe");
        let node: std::net::IpAddr = [10, 213, 0, 11].into();
        let want = render(&generated_intent(5), &failsafe, &[node]);
        // Build the iptables-save text the kernel would print for exactly these rules.
        let save = |d: &portwarden_netfilter::Desired, drop_last: bool, extra: bool| {
            let mut s = String::from("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n");
            for (c, _) in &d.chains {
                let _ = writeln!(s, ":{c} - [0:0]");
            }
            if extra {
                s.push_str(":PORTWARDEN-STALE - [0:0]\n-A PORTWARDEN-STALE -j DROP\n");
            }
            if let Some(j) = &d.jump {
                let _ = writeln!(s, "-A INPUT {j}");
            }
            if let Some(j) = &d.forward_jump {
                let _ = writeln!(s, "-A FORWARD {j}");
            }
            for (c, rules) in &d.chains {
                let keep = if drop_last {
                    rules.len().saturating_sub(1)
                } else {
                    rules.len()
                };
                for r in &rules[..keep] {
                    let _ = writeln!(s, "-A {c} {r}");
                }
            }
            s.push_str("COMMIT\n");
            Ruleset::parse(&s).expect("parses")
        };
        let exact = vec![
            (Family::Ipv4, save(&want.v4, false, false)),
            (Family::Ipv6, save(&want.v6, false, false)),
        ];
        let (differ, total) = compare_expected(&want, &exact);
        assert_eq!(differ, 0);
        assert_eq!(total, want.v4.rule_count() + want.v6.rule_count());
        let broken = vec![
            (Family::Ipv4, save(&want.v4, true, true)),
            (Family::Ipv6, save(&want.v6, false, false)),
        ];
        let (differ, _) = compare_expected(&want, &broken);
        assert_eq!(differ, want.v4.chains.len() + 1);
    }

    fn measured(points: &[(usize, f64)]) -> Vec<PerRule> {
        points
            .iter()
            .map(|&(n, t)| PerRule {
                n,
                times: vec![t],
                differ: 0,
            })
            .collect()
    }

    #[test]
    fn per_rule_extrapolation_is_at_least_linear() {
        let pr = measured(&[(100, 1.0), (200, 2.0)]);
        assert_eq!(per_rule_estimate(&pr, 100), Some((1.0, false, 1.0)));
        let (t, est, k) = per_rule_estimate(&pr, 1000).expect("estimate");
        assert!(est && (k - 1.0).abs() < 1e-9 && (t - 10.0).abs() < 1e-9);
        // sublinear measurements are extrapolated linearly (a lower bound)
        let (t, _, k) =
            per_rule_estimate(&measured(&[(100, 1.0), (400, 2.0)]), 800).expect("estimate");
        assert_eq!(k, 1.0);
        assert!((t - 4.0).abs() < 1e-9);
        // superlinear ones with their exponent
        let (t, _, k) =
            per_rule_estimate(&measured(&[(100, 1.0), (200, 4.0)]), 400).expect("estimate");
        assert!((k - 2.0).abs() < 1e-9 && (t - 16.0).abs() < 1e-6);
    }
}
