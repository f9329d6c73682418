//! Load: one agent in a lab node under a stream of policy changes — one every 300 ms (200 a
//! minute), each editing one file of a large policy set the way editors and git do (write a
//! temporary file and rename it; every fourth change in place: truncate, half, pause, rest).
//!
//! What is measured from the outside, without trusting the agent:
//!
//! * **Latency** of every change, from its write to its rules being in the kernel. The last
//!   entry of each file is a *marker*: TCP port `60000 + file` from source `192.168.S/32`,
//!   where `S` encodes the number of the change that last wrote the file. An observer thread
//!   inside the node lists the one leaf chain that holds every marker (`iptables -S`) every
//!   [`OBSERVE_EVERY`]; change `n` to file `k` is applied when the kernel first shows marker
//!   `k` at `n` or later (later changes to the same file may coalesce with it).
//! * **Final state**: once the changes stop, every marker shows the last change, and
//!   `portwarden plan` on the final files (the agent's failsafe list) exits 0 — the kernel says
//!   exactly what the files say.
//! * **Memory and CPU** of the agent, from `/proc/PID/status` (VmRSS) and `/proc/PID/stat`.
//!
//! `make test` runs a short version ([`agent_keeps_up_with_200_changes_per_minute`]);
//! `make soak-load` (scripts/soak-load.sh) runs [`soak_agent_under_load`]: 10 minutes,
//! 10 000 rules by default (`PW_LOAD_SECONDS`, `PW_LOAD_RULES`).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portwarden_lab::{Lab, LabChild, Netns, skip_unless_lab};
use portwarden_netfilter::DEFAULT_FAILSAFE;
use portwarden_reconcile::DEFAULT_AGENT_PORT;
use portwarden_reconcile::inside::http_get;

use common::metric_value;

const BIN: &str = env!("CARGO_BIN_EXE_portwarden");
/// 200 changes a minute.
const CHANGE_EVERY: Duration = Duration::from_millis(300);
/// The agent's policy poll (its default).
const POLL: Duration = Duration::from_millis(200);
/// How often the observer lists the marker chain: the resolution of the latencies.
const OBSERVE_EVERY: Duration = Duration::from_millis(50);
/// How often the agent's memory and CPU are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// Marker ports: `MARKER_PORT + file`, all in one leaf chain (256 ports, starting at 59904).
const MARKER_PORT: u16 = 60000;
const MARKER_CHAIN: &str = "PORTWARDEN-TCP-59904-60159";
/// Files whose marker port stays inside [`MARKER_CHAIN`].
const MAX_FILES: usize = 160;
const _: () = assert!(MARKER_PORT >= 59904 && MARKER_PORT as usize + MAX_FILES - 1 <= 60159);
/// Entries per policy file (the rest of the rule count comes from the number of files).
const ENTRIES_PER_FILE: usize = 100;

/// One run's shape.
struct LoadConfig {
    files: usize,
    entries: usize,
    /// One change this often.
    every: Duration,
    /// Every fourth change written in place (truncate, half, pause, rest) rather than renamed.
    in_place: bool,
    /// Stop after this many changes, or after `duration`, whichever comes first.
    changes: usize,
    duration: Duration,
    /// After the last change, the final state must be in the kernel within this.
    settle: Duration,
    /// Memory bound: the largest RSS of the second half of the run may exceed the largest of
    /// the first half by at most this fraction (plus 8 MiB for small processes).
    rss_growth: f64,
}

// --- the policy set ---------------------------------------------------------------------

/// A tiny deterministic generator (xorshift), so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[derive(Clone)]
struct Entry {
    port: u16,
    /// 0 for a single port, else a range `port-(port+span)`.
    span: u16,
    udp: bool,
    state: usize,
    /// `None`: any source (both families); else a /32 (IPv4 only).
    source: Option<[u8; 4]>,
}

const STATES: [&str; 3] = ["open", "closed", "filtered"];

/// Ports of ordinary entries: 10300..59299, clear of the failsafe ports, the agent's port and
/// the marker chain.
fn port_of(index: usize) -> u16 {
    (10_300 + index % 49_000) as u16
}

/// A realistic mix: mostly single TCP ports from one address, some UDP, some ranges, some
/// open to any source.
fn entry(file: usize, j: usize) -> Entry {
    let index = file * 1000 + j;
    Entry {
        port: port_of(index * 4),
        span: if j % 7 == 3 { 3 } else { 0 },
        udp: j % 10 == 9,
        state: (file + j) % 3,
        source: (j % 5 != 4).then_some([172, 16 + (file / 256) as u8, (file % 256) as u8, j as u8]),
    }
}

struct PolicyFile {
    file: usize,
    entries: Vec<Entry>,
    /// The change that last wrote this file (0: the initial state).
    marker: u32,
}

fn marker_source(change: u32) -> String {
    format!("192.168.{}.{}/32", change >> 8, change & 255)
}

impl PolicyFile {
    fn new(file: usize, entries: usize) -> PolicyFile {
        PolicyFile {
            file,
            entries: (0..entries).map(|j| entry(file, j)).collect(),
            marker: 0,
        }
    }

    fn name(&self) -> String {
        format!("load-{:03}.yaml", self.file)
    }

    /// One change: an entry moves to another port and changes state; the marker records the
    /// change's number.
    fn mutate(&mut self, change: u32, rng: &mut Rng) {
        let j = rng.below(self.entries.len());
        let e = &mut self.entries[j];
        e.port = port_of(rng.below(49_000));
        e.state = (e.state + 1) % 3;
        self.marker = change;
    }

    fn yaml(&self) -> String {
        let mut y = format!(
            "apiVersion: portwarden.io/v1alpha1\nkind: PortPolicy\nmetadata:\n  name: load-{:03}\nspec:\n  nodeSelector:\n    matchLabels: {{role: load}}\n  priority: {}\n  ports:\n",
            self.file,
            100 + self.file
        );
        for e in &self.entries {
            let ports = if e.span == 0 {
                e.port.to_string()
            } else {
                format!("{}-{}", e.port, e.port + e.span)
            };
            let _ = writeln!(y, "    - ports: \"{ports}\"");
            if e.udp {
                y.push_str("      protocol: UDP\n");
            }
            let _ = writeln!(y, "      state: {}", STATES[e.state]);
            if let Some([a, b, c, d]) = e.source {
                let _ = writeln!(y, "      from: [\"{a}.{b}.{c}.{d}/32\"]");
            }
        }
        // The marker comes last: a file written half-way never shows the new one.
        let _ = write!(
            y,
            "    - ports: \"{}\"\n      state: filtered\n      from: [\"{}\"]\n      reason: \"load change {}\"\n",
            MARKER_PORT + self.file as u16,
            marker_source(self.marker),
            self.marker
        );
        y
    }

    /// Writes the file as git or an editor does: a temporary file renamed into place.
    fn write_renamed(&self, dir: &Path) {
        let tmp = dir.join(format!(".{}.tmp", self.name()));
        std::fs::write(&tmp, self.yaml()).unwrap();
        std::fs::rename(&tmp, dir.join(self.name())).unwrap();
    }

    /// Writes the file in place in two halves with a pause between: a reader can catch it
    /// empty or half-written.
    fn write_in_place(&self, dir: &Path) {
        let text = self.yaml();
        let (a, b) = text.split_at(text.len() / 2);
        let mut f = std::fs::File::create(dir.join(self.name())).unwrap();
        f.write_all(a.as_bytes()).unwrap();
        f.flush().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        f.write_all(b.as_bytes()).unwrap();
    }
}

const INVENTORY: &str = "apiVersion: portwarden.io/v1alpha1\nkind: Inventory\nnodes:\n  - name: load-1\n    addresses: [\"10.213.0.11\"]\n    labels: {role: load}\n";

// --- observing the kernel ---------------------------------------------------------------

/// Marker chain listings: when the kernel first showed each (file, change).
#[derive(Default)]
struct Observed {
    /// (time, file, change) whenever a file's marker changed.
    events: Vec<(Instant, usize, u32)>,
    current: BTreeMap<usize, u32>,
    listings: usize,
    errors: usize,
}

/// The markers in an `iptables -S MARKER_CHAIN` listing: file -> change.
fn parse_markers(listing: &str) -> BTreeMap<usize, u32> {
    let mut out = BTreeMap::new();
    for line in listing.lines().filter(|l| l.starts_with("-A ")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let after = |flag: &str| {
            words
                .iter()
                .position(|w| *w == flag)
                .and_then(|i| words.get(i + 1))
        };
        let (Some(src), Some(port)) = (after("-s"), after("--dport")) else {
            continue;
        };
        let Some(file) = port
            .parse::<u16>()
            .ok()
            .and_then(|p| p.checked_sub(MARKER_PORT))
        else {
            continue;
        };
        let octets: Vec<u32> = src
            .trim_end_matches("/32")
            .split('.')
            .filter_map(|o| o.parse().ok())
            .collect();
        if let [192, 168, hi, lo] = octets[..] {
            out.insert(usize::from(file), hi << 8 | lo);
        }
    }
    out
}

/// Lists the marker chain inside the node every [`OBSERVE_EVERY`] until `stop`.
fn observe(node: Netns, observed: Arc<Mutex<Observed>>, stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        node.enter_current_thread().unwrap();
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            let out = std::process::Command::new("iptables")
                .args(["-w", "-S", MARKER_CHAIN])
                .output();
            let at = Instant::now();
            let mut o = observed.lock().unwrap();
            o.listings += 1;
            match out {
                Ok(out) if out.status.success() => {
                    let markers = parse_markers(&String::from_utf8_lossy(&out.stdout));
                    for (&file, &change) in &markers {
                        if o.current.get(&file) != Some(&change) {
                            o.events.push((at, file, change));
                        }
                    }
                    o.current = markers;
                }
                // Before the first apply the chain does not exist yet.
                _ => o.errors += 1,
            }
            drop(o);
            std::thread::sleep(OBSERVE_EVERY.saturating_sub(started.elapsed()));
        }
    });
}

// --- the agent process ------------------------------------------------------------------

/// One sample of the agent's resource use.
struct Sample {
    at: Duration,
    rss_kib: u64,
    cpu_ticks: u64,
    /// CPU of the agent's children that have exited (iptables-save, iptables-restore).
    child_ticks: u64,
}

fn sample(pid: u32, start: Instant) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14,
    // stime 15, cutime 16, cstime 17.
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let field = |n: usize| rest.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some(Sample {
        at: start.elapsed(),
        rss_kib,
        cpu_ticks: field(14)? + field(15)?,
        child_ticks: field(16)? + field(17)?,
    })
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn agent_metrics(node: &Netns) -> Result<String, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], DEFAULT_AGENT_PORT));
    node.run(move || http_get(addr, "/metrics", Duration::from_secs(5)))
        .map_err(|e| e.to_string())?
}

/// The agent's failsafe list: the default plus its own HTTP port, as the agent adds it.
fn agent_failsafe() -> String {
    format!("{DEFAULT_FAILSAFE},tcp:{DEFAULT_AGENT_PORT}")
}

/// `portwarden plan` on the files inside the node: exit code and output.
fn plan(node: &Netns, dir: &Path, inventory: &Path) -> (i32, String) {
    let failsafe = agent_failsafe();
    let out = node
        .output(&[
            BIN,
            "plan",
            "-f",
            dir.to_str().unwrap(),
            "--inventory",
            inventory.to_str().unwrap(),
            "--node",
            "load-1",
            "--failsafe",
            &failsafe,
        ])
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

fn kernel_rules(node: &Netns) -> usize {
    ["iptables-save", "ip6tables-save"]
        .iter()
        .map(|tool| {
            node.exec(&[tool, "-t", "filter"])
                .unwrap()
                .lines()
                .filter(|l| l.starts_with("-A PORTWARDEN"))
                .count()
        })
        .sum()
}

fn wait_until<T>(deadline: Duration, what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let until = Instant::now() + deadline;
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() >= until => panic!("{what}: not within {deadline:?}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

// --- the run ----------------------------------------------------------------------------

/// What a run's callers check beyond what [`run_load`] asserts itself.
struct Outcome {
    /// Loads the agent made while the files were still changing (metric).
    forced_loads: f64,
    /// Changes the kernel showed while the stream of changes was still going on.
    applied_during_stream: usize,
}

fn run_load(cfg: &LoadConfig) -> Outcome {
    assert!(
        (1..=MAX_FILES).contains(&cfg.files),
        "1 to {MAX_FILES} files of {ENTRIES_PER_FILE} entries: lower PW_LOAD_RULES"
    );
    let lab = Lab::builder("load").nodes(1).scanners(1).build().unwrap();
    let node = lab.node(0).clone();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("policies");
    std::fs::create_dir_all(&dir).unwrap();
    let inventory = work.path().join("inventory.yaml");
    std::fs::write(&inventory, INVENTORY).unwrap();
    let mut files: Vec<PolicyFile> = (0..cfg.files)
        .map(|k| PolicyFile::new(k, cfg.entries))
        .collect();
    for f in &files {
        f.write_renamed(&dir);
    }

    // The agent, its log kept for a failure report; `exec` keeps the pid ours to sample.
    let log = work.path().join("agent.log");
    let command = format!(
        "exec {BIN} agent --policy-dir {} --inventory {} --node load-1 --log-format json 2>{}",
        dir.display(),
        inventory.display(),
        log.display()
    );
    let agent: LabChild = node.spawn(&["sh", "-c", &command]).unwrap();
    let pid = agent.id();
    let started = Instant::now();
    let initial = wait_until(Duration::from_secs(120), "initial apply", || {
        let (code, out) = plan(&node, &dir, &inventory);
        if code == 0 {
            Ok(started.elapsed())
        } else {
            Err(format!("plan exit {code}: {}", tail_str(&out, 3)))
        }
    });
    let rules = kernel_rules(&node);

    // Observe the kernel and the agent, then change one file every 300 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let observed = Arc::new(Mutex::new(Observed::default()));
    observe(node.clone(), observed.clone(), stop.clone());
    let samples = Arc::new(Mutex::new(Vec::new()));
    let run_start = Instant::now();
    {
        let (samples, stop) = (samples.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(s) = sample(pid, run_start) {
                    samples.lock().unwrap().push(s);
                }
                std::thread::sleep(SAMPLE_EVERY);
            }
        });
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut writes: Vec<(u32, usize, Instant)> = Vec::new();
    let mut in_place = 0;
    let mut next = Instant::now();
    for n in 1..=cfg.changes as u32 {
        if run_start.elapsed() >= cfg.duration {
            break;
        }
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        next += cfg.every;
        let k = rng.below(files.len());
        files[k].mutate(n, &mut rng);
        if cfg.in_place && n % 4 == 0 {
            files[k].write_in_place(&dir);
            in_place += 1;
        } else {
            files[k].write_renamed(&dir);
        }
        writes.push((n, k, Instant::now()));
    }
    let changing = run_start.elapsed();
    let stream_end = Instant::now();

    // The final state: every marker at its file's last change, and nothing left to plan.
    let last: BTreeMap<usize, u32> = files.iter().map(|f| (f.file, f.marker)).collect();
    let quiet = Instant::now();
    wait_until(cfg.settle, "final markers in the kernel", || {
        let o = observed.lock().unwrap();
        let missing: Vec<_> = last
            .iter()
            .filter(|(k, n)| o.current.get(k) != Some(n))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} files behind, e.g. {:?}; agent log:\n{}",
                missing.len(),
                &missing[..missing.len().min(5)],
                tail(&log, 20)
            ))
        }
    });
    let final_after = quiet.elapsed();
    let (code, out) = plan(&node, &dir, &inventory);
    assert_eq!(
        code,
        0,
        "the kernel differs from the final files: {}\nagent log:\n{}",
        tail_str(&out, 20),
        tail(&log, 20)
    );
    stop.store(true, Ordering::Relaxed);
    let metrics = agent_metrics(&node).unwrap();
    assert!(
        sample(pid, run_start).is_some(),
        "the agent exited: {}",
        tail(&log, 20)
    );
    assert_eq!(
        metric_value(&metrics, "portwarden_policy_valid"),
        Some(1.0),
        "{metrics}"
    );
    for name in [
        "portwarden_policy_loads_total",
        "portwarden_policy_apply_latency_seconds_count",
        "portwarden_policy_applied_timestamp_seconds",
    ] {
        assert!(
            metric_value(&metrics, name).is_some_and(|v| v > 0.0),
            "{name}: {metrics}"
        );
    }

    // Latency of every change: write -> first listing that shows its file at it or later.
    let o = observed.lock().unwrap();
    let mut latencies: Vec<Duration> = writes
        .iter()
        .map(|&(n, k, at)| {
            o.events
                .iter()
                .find(|&&(seen, file, change)| file == k && change >= n && seen >= at)
                .map(|&(seen, _, _)| seen - at)
                .unwrap_or_else(|| panic!("change {n} (file {k}) never reached the kernel"))
        })
        .collect();
    latencies.sort();
    let applied_states = o.events.iter().filter(|e| e.0 >= run_start).count();
    let applied_during_stream = o
        .events
        .iter()
        .filter(|&&(at, _, change)| change > 0 && at < stream_end)
        .count();

    // Memory: no growth from the first half of the run to the second.
    let samples = samples.lock().unwrap();
    let half = changing / 2;
    let max_rss = |first: bool| {
        samples
            .iter()
            .filter(|s| (s.at < half) == first && s.at <= changing)
            .map(|s| s.rss_kib)
            .max()
            .unwrap_or(0)
    };
    let (first_half, second_half) = (max_rss(true), max_rss(false));
    let min_rss = samples.iter().map(|s| s.rss_kib).min().unwrap_or(0);
    let (cpu, child_cpu) = match (samples.first(), samples.last()) {
        (Some(a), Some(b)) if b.at > a.at => {
            let per_cent =
                |ticks: u64| ticks as f64 / clock_ticks() / (b.at - a.at).as_secs_f64() * 100.0;
            (
                per_cent(b.cpu_ticks - a.cpu_ticks),
                per_cent(b.child_ticks - a.child_ticks),
            )
        }
        _ => (0.0, 0.0),
    };
    let m = |name: &str| metric_value(&metrics, name).unwrap_or(-1.0);
    let mut report = String::new();
    let _ = writeln!(report, "load: agent under policy changes");
    let _ = writeln!(
        report,
        "  policy set            {} files x {} entries, {} rules in the kernel (v4+v6)",
        cfg.files, cfg.entries, rules
    );
    let _ = writeln!(report, "  initial apply         {}", ms(initial));
    let _ = writeln!(
        report,
        "  changes               {} in {:.0} s (one every {}; {} in place, rest renamed)",
        writes.len(),
        changing.as_secs_f64(),
        ms(cfg.every),
        in_place
    );
    let _ = writeln!(
        report,
        "  applies               agent: {} loads of changed files ({} forced by the debounce bound), {} load errors (files caught half-written), {} reconcile errors; {applied_states} marker changes seen in the kernel",
        m("portwarden_policy_loads_total"),
        m("portwarden_policy_loads_forced_total"),
        m("portwarden_policy_load_errors_total"),
        m("portwarden_reconcile_errors_total"),
    );
    let _ = writeln!(
        report,
        "  latency write->kernel p50 {}  p90 {}  p99 {}  max {}  (observed every {})",
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 90.0)),
        ms(percentile(&latencies, 99.0)),
        ms(percentile(&latencies, 100.0)),
        ms(OBSERVE_EVERY)
    );
    let count = m("portwarden_policy_apply_latency_seconds_count");
    let _ = writeln!(
        report,
        "  agent's own latency   mean {} over {count} applies (portwarden_policy_apply_latency_seconds)",
        ms(Duration::from_secs_f64(
            (m("portwarden_policy_apply_latency_seconds_sum") / count.max(1.0)).max(0.0)
        ))
    );
    let reconciles = m("portwarden_reconcile_duration_seconds_count");
    let _ = writeln!(
        report,
        "  reconcile (plan+apply) mean {} over {reconciles} reconciles, refreshes included",
        ms(Duration::from_secs_f64(
            (m("portwarden_reconcile_duration_seconds_sum") / reconciles.max(1.0)).max(0.0)
        ))
    );
    let _ = writeln!(
        report,
        "  final state           in the kernel {} after the last change; plan: 0 changes",
        ms(final_after)
    );
    let _ = writeln!(
        report,
        "  RSS                   min {} KiB, max first half {} KiB, max second half {} KiB ({} samples)",
        min_rss,
        first_half,
        second_half,
        samples.len()
    );
    let _ = writeln!(
        report,
        "  CPU                   agent {cpu:.1}% of one core, its iptables children {child_cpu:.1}% (mean over the run); {} marker listings",
        o.listings
    );
    eprintln!("{report}");
    if let Ok(path) = std::env::var("PW_LOAD_REPORT") {
        std::fs::write(path, &report).unwrap();
    }
    let bound = (first_half as f64 * (1.0 + cfg.rss_growth)) as u64 + 8 * 1024;
    assert!(
        second_half <= bound,
        "memory grew: max RSS {first_half} KiB in the first half, {second_half} KiB in the second (bound {bound} KiB)"
    );
    drop(agent);
    Outcome {
        forced_loads: m("portwarden_policy_loads_forced_total"),
        applied_during_stream,
    }
}

fn tail_str(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The short version for `make test`: 100 changes at the soak's pace on 2 000 entries.
#[test]
fn agent_keeps_up_with_200_changes_per_minute() {
    skip_unless_lab!();
    let _ = run_load(&LoadConfig {
        files: 20,
        entries: ENTRIES_PER_FILE,
        every: CHANGE_EVERY,
        in_place: true,
        changes: 100,
        duration: Duration::from_secs(60),
        settle: Duration::from_secs(30),
        rss_growth: 0.5,
    });
}

/// A stream of changes faster than the agent's poll (one every 100 ms, poll 200 ms): every
/// poll sees the files changing, so "held still for one poll" alone would never load. The
/// debounce's bound (10 polls) loads the latest state anyway, several times while the stream
/// lasts, and the final state once it stops.
#[test]
fn a_stream_faster_than_the_poll_is_still_applied_while_it_lasts() {
    skip_unless_lab!();
    let bound = POLL * portwarden_agent::debounce::DEBOUNCE_MAX_POLLS;
    let out = run_load(&LoadConfig {
        files: 5,
        entries: 20,
        every: POLL / 2,
        in_place: false,
        changes: 100,
        duration: Duration::from_secs(60),
        settle: Duration::from_secs(30),
        rss_growth: 0.5,
    });
    // 10 s of changes, five times the bound: loads happen during the stream, not only after.
    assert!(
        out.forced_loads >= 1.0,
        "no forced load in 10 s (bound {bound:?})"
    );
    assert!(
        out.applied_during_stream >= 1,
        "nothing reached the kernel while the changes went on"
    );
}

/// The long version (`make soak-load`): `PW_LOAD_SECONDS` (600) of changes on `PW_LOAD_RULES`
/// (10 000) entries, in files of 100.
#[test]
#[ignore = "long: run by make soak-load"]
fn soak_agent_under_load() {
    skip_unless_lab!();
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let seconds = env("PW_LOAD_SECONDS", 600);
    let rules = env("PW_LOAD_RULES", 10_000) as usize;
    let _ = run_load(&LoadConfig {
        files: rules.div_ceil(ENTRIES_PER_FILE).max(1),
        entries: ENTRIES_PER_FILE,
        every: CHANGE_EVERY,
        in_place: true,
        changes: usize::MAX,
        duration: Duration::from_secs(seconds),
        settle: Duration::from_secs(60),
        rss_growth: 0.25,
    });
}

#[test]
fn markers_parse_from_an_iptables_listing() {
    let listing = "-N PORTWARDEN-TCP-59904-60159\n\
        -A PORTWARDEN-TCP-59904-60159 -s 192.168.1.2/32 -p tcp -m tcp --dport 60003 -m conntrack --ctdir ORIGINAL -m comment --comment \"load-003 entry 100: filtered\" -j DROP\n\
        -A PORTWARDEN-TCP-59904-60159 -s 192.168.0.7/32 -p tcp -m tcp --dport 60000 -j DROP\n\
        -A PORTWARDEN-TCP-59904-60159 -s 172.16.0.1/32 -p tcp -m tcp --dport 60001 -j DROP\n";
    let m = parse_markers(listing);
    assert_eq!(m, BTreeMap::from([(3, 258), (0, 7)]));
    // A file's YAML ends with its marker, and every file's marker is in the one chain.
    let mut f = PolicyFile::new(99, 3);
    f.mutate(258, &mut Rng(1));
    assert!(f.yaml().ends_with(
        "    - ports: \"60099\"\n      state: filtered\n      from: [\"192.168.1.2/32\"]\n      reason: \"load change 258\"\n"
    ));
}
