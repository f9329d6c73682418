//! The agent's steady state: `portwarden agent` on a lab node with the 10,000-entry policy and
//! `--refresh 1`, left to converge; then CPU over a window of whole refresh cycles and resident
//! memory, read from `/proc` — against the floor of any reconciler that re-reads the rules on
//! every refresh (one `iptables-save` per family per cycle).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use portwarden_lab::{LabChild, Netns};
use portwarden_reconcile::DEFAULT_AGENT_PORT;
use portwarden_reconcile::inside::http_get;

use crate::parse::{metric, proc_stat_ticks, proc_status_kb};
use crate::process::{Job, run_in};
use crate::report::{Row, Value, Workload, count, secs};
use crate::stats::median;
use crate::suite::{Ctx, NODE, Settings, progress};

const COUNT: &str = "portwarden_reconcile_duration_seconds_count";
const SUM: &str = "portwarden_reconcile_duration_seconds_sum";
const CHANGED: &str = "portwarden_rules_changed_total";
const ERRORS: &str = "portwarden_reconcile_errors_total";

fn get(node: &Netns, path: &'static str) -> Result<String> {
    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_AGENT_PORT);
    node.run(move || http_get(addr, path, Duration::from_secs(2)))
        .context("entering the node")?
        .map_err(|e| anyhow!(e))
}

/// Polls `check` every `every` until it returns `Some`, or fails after `limit` with the last
/// error.
fn wait_for<T>(
    limit: Duration,
    every: Duration,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let until = Instant::now() + limit;
    loop {
        let last = match check() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => "condition not reached".to_string(),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= until {
            bail!("not reached within {limit:?}: {last}");
        }
        std::thread::sleep(every);
    }
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

struct Sample {
    at: Instant,
    ticks: u64,
    count: f64,
    sum: f64,
    changed: f64,
    errors: f64,
}

fn sample(node: &Netns, pid: u32) -> Result<Sample> {
    let text = get(node, "/metrics")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat (did the agent exit?)"))?;
    Ok(Sample {
        at: Instant::now(),
        ticks: proc_stat_ticks(&stat).context("parsing /proc/PID/stat")?,
        count: metric(&text, COUNT).with_context(|| format!("{COUNT} missing from /metrics"))?,
        sum: metric(&text, SUM).unwrap_or(0.0),
        changed: metric(&text, CHANGED).unwrap_or(0.0),
        errors: metric(&text, ERRORS).unwrap_or(0.0),
    })
}

/// Starts the agent on `node` (`--refresh 1`, metrics on loopback) and waits until it is
/// ready, checking the pid is still the agent's.
fn start_agent(ctx: &Ctx, node: &Netns, policy_dir: &Path, inventory: &Path) -> Result<LabChild> {
    let listen = format!("127.0.0.1:{DEFAULT_AGENT_PORT}");
    let argv = [
        ctx.bin(),
        "agent".into(),
        "--policy-dir".into(),
        policy_dir.to_string_lossy().into_owned(),
        "--inventory".into(),
        inventory.to_string_lossy().into_owned(),
        "--node".into(),
        NODE.into(),
        "--refresh".into(),
        "1".into(),
        "--metrics-addr".into(),
        listen,
    ];
    let args: Vec<&str> = argv.iter().map(String::as_str).collect();
    let agent = node.spawn(&args).context("starting the agent")?;
    let pid = agent.id();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    wait_for(Duration::from_secs(120), Duration::from_millis(200), || {
        Ok(get(node, "/readyz").ok().map(|_| ()))
    })
    .context("waiting for the agent to apply its policy (/readyz)")?;
    let comm_now = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    ensure!(
        comm_now.trim() == "portwarden",
        "pid {pid} is {:?}, not the agent (was {:?} at start)",
        comm_now.trim(),
        comm.trim()
    );
    Ok(agent)
}

/// The samples at the two ends of the measuring window: `agent_cycles` whole refreshes, from
/// right after one has been counted.
fn window(s: &Settings, node: &Netns, pid: u32) -> Result<(Sample, Sample)> {
    // Start the window right after a refresh has been counted.
    let first = sample(node, pid)?;
    let start = wait_for(Duration::from_secs(30), Duration::from_millis(100), || {
        let x = sample(node, pid)?;
        Ok((x.count > first.count).then_some(x))
    })?;
    let cycles = f64::from(s.agent_cycles);
    let end = wait_for(
        Duration::from_secs(u64::from(s.agent_cycles) * 5 + 30),
        Duration::from_millis(100),
        || {
            let x = sample(node, pid)?;
            Ok((x.count >= start.count + cycles).then_some(x))
        },
    )?;
    Ok((start, end))
}

/// The peer's CPU per refresh: one iptables-save per family with the rules in place, the
/// median of the peer runs (at least three).
fn floor_cpu(s: &Settings, node: &Netns, backend: &str) -> Result<f64> {
    let mut floor = Vec::new();
    for _ in 0..s.runs_peer.max(3) {
        let mut c = 0.0;
        for t in ["iptables", "ip6tables"] {
            c += run_in(
                node,
                Job::new(&[format!("{t}-{backend}-save"), "-t".into(), "filter".into()]),
            )?
            .check("iptables-save")?
            .cpu();
        }
        floor.push(c);
    }
    Ok(median(&floor).unwrap_or(0.0))
}

/// Measures the agent's steady state on `node` (whose filter table is empty).
///
/// # Errors
/// When the agent does not start, converge, or report its metrics in time.
pub fn steady(
    ctx: &Ctx,
    node: &Netns,
    policy_dir: &Path,
    inventory: &Path,
    backend: &str,
) -> Result<Workload> {
    let s = &ctx.settings;
    progress("agent: steady state");
    let agent = start_agent(ctx, node, policy_dir, inventory)?;
    let pid = agent.id();
    let (start, end) = window(s, node, pid)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .context("reading the agent's status")?;
    let rss = proc_status_kb(&status, "VmRSS").context("VmRSS")? as f64 / 1024.0;
    let hwm = proc_status_kb(&status, "VmHWM").unwrap_or(0) as f64 / 1024.0;
    drop(agent);
    let wall = end.at.duration_since(start.at).as_secs_f64();
    let cpu = (end.ticks.saturating_sub(start.ticks)) as f64 / clock_ticks();
    let refreshes = end.count - start.count;
    let per_refresh = (end.sum - start.sum) / refreshes.max(1.0);
    let writes = end.changed - start.changed;
    let errors = end.errors - start.errors;

    let floor_cpu = floor_cpu(s, node, backend)?;
    let entries = count(s.steady_entries as f64);
    Ok(Workload {
        title: format!("Agent steady state at {entries} entries"),
        setup: format!(
            "`portwarden agent --refresh 1` on a lab node with the {entries}-entry policy ({backend} \
             backend), after it reported ready. CPU is user + system time of the agent and of \
             the `iptables-save` processes it runs (`/proc/PID/stat`: utime, stime, cutime, \
             cstime) over {refreshes:.0} whole refresh cycles ({:.1} s of wall time), which \
             includes answering the suite's `/metrics` polls (every 100 ms); memory is `VmRSS` \
             at the end of the window. The peer is the least any reconciler must do per refresh: one \
             `iptables-save` per family.",
            wall
        ),
        rows: vec![
            Row {
                value: Value::Text(format!("{:.1} % CPU, {rss:.1} MB RSS", cpu / wall * 100.0)),
                agreement: if writes == 0.0 && errors == 0.0 {
                    "converged: no rule written, no error in the window".into()
                } else {
                    format!("**{writes} rules written, {errors} errors in the window**")
                },
                detail: format!(
                    "{} CPU and {} reconcile time per refresh (its own histogram); peak RSS {hwm:.1} MB",
                    secs(cpu / refreshes.max(1.0)),
                    secs(per_refresh)
                ),
                ..Row::timed(
                    "portwarden agent",
                    "portwarden agent --policy-dir DIR --inventory FILE --node bench --refresh 1",
                    true,
                    vec![],
                )
            },
            Row {
                value: Value::Text(format!("{:.1} % CPU", floor_cpu * 100.0)),
                detail: format!(
                    "{} CPU per read of both families, once a second",
                    secs(floor_cpu)
                ),
                ..Row::timed(
                    "iptables-save per refresh",
                    &format!(
                        "iptables-{backend}-save -t filter; ip6tables-{backend}-save -t filter"
                    ),
                    false,
                    vec![],
                )
            },
        ],
        notes: Vec::new(),
    })
}
