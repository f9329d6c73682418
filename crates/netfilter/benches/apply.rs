//! End-to-end netfilter benchmarks on a lab node, for both backends (`make bench`, or
//! `cargo bench -p portwarden-netfilter --bench apply`). Needs root; skips otherwise.
//!
//! Every figure is the median of several runs measured in the same process, each against the
//! baseline it is compared with:
//!
//! * **apply 10,000 entries** to an empty node, everything included (load the YAML, compile,
//!   detect, read, render, diff, one `iptables-restore` per family, read-back) vs a bare
//!   `iptables-restore --noflush` of 10,000 hand-written rules per family, vs 1,000 `iptables -A`
//!   calls (one process per rule, the way the `iptables` crate works).
//! * **no-op reconcile** with those rules in place (read, render, diff, zero writes) vs a bare
//!   `iptables-save` of both families.
//! * **one entry changed** among 10,000: which chains the transaction rewrites, and its time.
//!
//! Set `PW_BENCH_RUNS` to change the number of runs (default 5).

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use portwarden_lab::Lab;
use portwarden_netfilter::{Backend, BackendChoice, Failsafe, Family, Netfilter, Options};

const ENTRIES: u16 = 10_000;
const PER_RULE_CALLS: u16 = 1_000;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

/// A policy with `ENTRIES` single-port entries cycling through the three states.
fn policy_yaml(changed: Option<u16>) -> String {
    let mut s = String::from(
        "apiVersion: portwarden.io/v1alpha1\nkind: PortPolicy\nmetadata:\n  name: bench\nspec:\n  ports:\n",
    );
    for i in 0..ENTRIES {
        let mut state = ["open", "closed", "filtered"][usize::from(i % 3)];
        if changed == Some(i) {
            state = if state == "filtered" {
                "open"
            } else {
                "filtered"
            };
        }
        let _ = writeln!(
            s,
            "    - ports: \"{}\"\n      state: {state}",
            10_000 + u32::from(i)
        );
    }
    s
}

/// 10,000 hand-written rules in one chain, as a person would write them.
fn bare_rules(family: Family) -> String {
    let mut s = String::from("*filter\n:BENCH - [0:0]\n-I INPUT 1 -j BENCH\n");
    for i in 0..ENTRIES {
        let target = match (i % 3, family) {
            (0, _) => "ACCEPT",
            (1, _) => "REJECT --reject-with tcp-reset",
            _ => "DROP",
        };
        let _ = writeln!(
            s,
            "-A BENCH -p tcp -m tcp --dport {} -m comment --comment \"bench entry {i}\" -j {target}",
            10_000 + u32::from(i)
        );
    }
    s.push_str("COMMIT\n");
    s
}

fn tool(backend: Backend, family: Family, what: &str) -> String {
    format!("{}-{}-{what}", family.tool(), backend)
}

fn run(program: &str, args: &[&str], stdin: Option<&str>) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn");
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).expect("write stdin");
    }
    assert!(
        child.wait().expect("wait").success(),
        "{program} {args:?} failed"
    );
}

/// Empties the filter table of both families (inside the lab namespace only).
fn clear(backend: Backend) {
    for f in Family::ALL {
        run(
            &tool(backend, f, "restore"),
            &[],
            Some(
                "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n",
            ),
        );
    }
}

fn in_lab_thread() {
    let me = std::fs::read_link("/proc/thread-self/ns/net").expect("netns");
    let main = std::fs::read_link("/proc/self/ns/net").expect("netns");
    assert_ne!(me, main, "benchmarks run inside a lab namespace only");
}

fn bench(backend: Backend, runs: usize, dir: &std::path::Path) -> String {
    in_lab_thread();
    let policy = dir.join("bench.yaml");
    let changed = dir.join("changed").join("bench.yaml");
    let options = Options {
        backend: BackendChoice::Fixed(backend),
        ..Options::default()
    };
    let labels = Default::default();
    let full_apply = |path: &std::path::Path| {
        let loaded = portwarden_policy::load_paths(&[path]).expect("bench policy loads");
        let intent = loaded.policies.compile(&labels);
        let nf = Netfilter::detect(&options).expect("detect");
        let plan = nf.plan(&intent, &Failsafe::default()).expect("plan");
        nf.apply(&plan).expect("apply")
    };

    let (mut ours, mut bare_v4, mut bare_both, mut per_rule) = (vec![], vec![], vec![], vec![]);
    let (mut noop, mut noop_loaded, mut save, mut change) = (vec![], vec![], vec![], vec![]);
    let (mut same_rules, mut pure, mut noop_cold) = (vec![], vec![], vec![]);
    let mut rewritten = String::new();
    let bare = [bare_rules(Family::Ipv4), bare_rules(Family::Ipv6)];
    let mut rules_written = 0;
    for _ in 0..runs {
        // bare restore, IPv4 alone and both families
        clear(backend);
        let t = Instant::now();
        run(
            &tool(backend, Family::Ipv4, "restore"),
            &["--noflush"],
            Some(&bare[0]),
        );
        bare_v4.push(t.elapsed());
        clear(backend);
        let t = Instant::now();
        for (f, text) in Family::ALL.iter().zip(&bare) {
            run(&tool(backend, *f, "restore"), &["--noflush"], Some(text));
        }
        bare_both.push(t.elapsed());

        // 1,000 per-rule calls
        clear(backend);
        let ipt = format!("iptables-{backend}");
        let t = Instant::now();
        for i in 0..PER_RULE_CALLS {
            let port = (10_000 + u32::from(i)).to_string();
            run(
                &ipt,
                &[
                    "-w", "-A", "INPUT", "-p", "tcp", "--dport", &port, "-j", "DROP",
                ],
                None,
            );
        }
        per_rule.push(t.elapsed());

        // portwarden's own transactions for an empty node, replayed bare: the same rules
        clear(backend);
        let own: Vec<(Family, String)> = {
            let loaded = portwarden_policy::load_paths(&[&policy]).expect("loads");
            let intent = loaded.policies.compile(&labels);
            let nf = Netfilter::detect(&options).expect("detect");
            let plan = nf.plan(&intent, &Failsafe::default()).expect("plan");
            plan.families
                .iter()
                .map(|f| (f.family, f.restore.clone()))
                .collect()
        };
        let t = Instant::now();
        for (f, text) in &own {
            run(&tool(backend, *f, "restore"), &["--noflush"], Some(text));
        }
        same_rules.push(t.elapsed());

        // portwarden, everything included
        clear(backend);
        let t = Instant::now();
        let applied = full_apply(&policy);
        ours.push(t.elapsed());
        assert_eq!(applied.transactions, 2);
        rules_written = applied.changes;

        // bare iptables-save of both families, with the rules in place
        let t = Instant::now();
        for f in Family::ALL {
            run(&tool(backend, f, "save"), &[], None);
        }
        save.push(t.elapsed());

        // no-op reconcile: intent already compiled (the agent's refresh loop)...
        let loaded = portwarden_policy::load_paths(&[&policy]).expect("loads");
        let intent = loaded.policies.compile(&labels);
        let nf = Netfilter::detect(&options).expect("detect");
        let t = Instant::now();
        let plan = nf.plan(&intent, &Failsafe::default()).expect("plan");
        let applied = nf.apply(&plan).expect("apply");
        noop_cold.push(t.elapsed());
        assert_eq!(
            (plan.changes, applied.transactions),
            (0, 0),
            "no-op must not write"
        );
        // the agent's refresh: same handle, same intent, rendering reused
        let t = Instant::now();
        let plan = nf.plan(&intent, &Failsafe::default()).expect("plan");
        let applied = nf.apply(&plan).expect("apply");
        noop.push(t.elapsed());
        assert_eq!(
            (plan.changes, applied.transactions),
            (0, 0),
            "no-op must not write"
        );
        // the pure part of it: render and diff against rulesets already read
        let current = nf.read_all().expect("read");
        let refs: Vec<(Family, &portwarden_netfilter::Ruleset)> =
            current.iter().map(|(f, r)| (*f, r)).collect();
        let t = Instant::now();
        let plan = portwarden_netfilter::Plan::compute(&intent, &Failsafe::default(), &refs);
        pure.push(t.elapsed());
        assert!(plan.is_converged());
        // ...and with loading and compiling the YAML included
        let t = Instant::now();
        let applied = full_apply(&policy);
        noop_loaded.push(t.elapsed());
        assert_eq!(applied.transactions, 0);

        // one entry changed
        let loaded = portwarden_policy::load_paths(&[&changed]).expect("loads");
        let intent2 = loaded.policies.compile(&labels);
        let t = Instant::now();
        let plan = nf.plan(&intent2, &Failsafe::default()).expect("plan");
        nf.apply(&plan).expect("apply");
        change.push(t.elapsed());
        let chains: Vec<String> = plan
            .families
            .iter()
            .flat_map(|f| f.chains.clone())
            .collect();
        let lines: usize = plan
            .families
            .iter()
            .map(|f| f.restore.lines().count())
            .sum();
        rewritten = format!(
            "{} chain(s) rewritten ({}), {} restore lines, {} add / {} delete",
            chains.len(),
            chains.join(", "),
            lines,
            plan.add.len(),
            plan.delete.len()
        );
    }
    clear(backend);
    let (same, pure, cold) = (median(same_rules), median(pure), median(noop_cold));
    let (o, b4, b2, p, n, nl, s, c) = (
        median(ours),
        median(bare_v4),
        median(bare_both),
        median(per_rule),
        median(noop),
        median(noop_loaded),
        median(save),
        median(change),
    );
    let per_rule_10k = p * u32::from(ENTRIES / PER_RULE_CALLS);
    let mut out = String::new();
    let _ = writeln!(out, "### backend: {backend} (median of {runs} runs)\n");
    let _ = writeln!(out, "| measurement | time | ratio |\n|---|---|---|");
    let _ = writeln!(
        out,
        "| portwarden apply, 10,000 entries, both families, all included ({rules_written} rules+chains) | {} | {:.2}x bare restore (both families) |",
        secs(o),
        o.as_secs_f64() / b2.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "| bare `iptables-restore --noflush` of portwarden's own transactions (the same rules) | {} | portwarden = {:.2}x this |",
        secs(same),
        o.as_secs_f64() / same.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "| bare `iptables-restore --noflush`, 10,000 rules, IPv4 | {} | |",
        secs(b4)
    );
    let _ = writeln!(
        out,
        "| bare `iptables-restore --noflush`, 10,000 rules, IPv4 + IPv6 | {} | |",
        secs(b2)
    );
    let _ = writeln!(
        out,
        "| 1,000 `iptables -A` calls (IPv4) | {} | x10 = {} for 10,000 (lower bound): {:.0}x slower than portwarden |",
        secs(p),
        secs(per_rule_10k),
        per_rule_10k.as_secs_f64() / o.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "| no-op reconcile, agent refresh (read both families, diff, no write; rendering reused) | {} | {:.2}x bare save |",
        secs(n),
        n.as_secs_f64() / s.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "| no-op reconcile, fresh handle (read, render, diff, no write) | {} | {:.2}x bare save |",
        secs(cold),
        cold.as_secs_f64() / s.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "| of which render + diff (pure, both families) | {} | |",
        secs(pure)
    );
    let _ = writeln!(
        out,
        "| no-op reconcile incl. YAML load + compile | {} | {:.2}x bare save |",
        secs(nl),
        nl.as_secs_f64() / s.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "| bare `iptables-save` IPv4 + IPv6 with the rules in place | {} | |",
        secs(s)
    );
    let _ = writeln!(
        out,
        "| one entry changed among 10,000 (plan + apply + read-back) | {} | {rewritten} |",
        secs(c)
    );
    out
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if let Err(e) = Lab::check_environment() {
        eprintln!("skipping netfilter benchmarks: {e}");
        return;
    }
    let runs: usize = std::env::var("PW_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let dir = std::env::temp_dir().join(format!("pw-nf-bench-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("changed")).expect("temp dir");
    std::fs::write(dir.join("bench.yaml"), policy_yaml(None)).expect("write policy");
    std::fs::write(
        dir.join("changed").join("bench.yaml"),
        policy_yaml(Some(4321)),
    )
    .expect("write policy");
    let mut report = String::new();
    for backend in [Backend::Nft, Backend::Legacy] {
        let lab = Lab::builder("nfbench")
            .nodes(1)
            .scanners(1)
            .build()
            .expect("lab");
        let node = lab.node(0).clone();
        let dir2 = dir.clone();
        let section = node
            .run(move || bench(backend, runs, &dir2))
            .expect("bench inside the lab");
        println!("{section}");
        report.push_str(&section);
        report.push('\n');
    }
    let _ = std::fs::remove_dir_all(&dir);
    if let Ok(path) = std::env::var("PW_BENCH_OUT") {
        std::fs::write(path, report).expect("write report");
    }
}
