//! `portwarden-bench`: runs the whole benchmark suite and writes the report and its charts.
//! `make bench` (full, into docs/) and `make bench QUICK=1` (quick, under the target
//! directory). Needs root (namespace labs), nmap and masscan (`scripts/deps.sh bench`).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use portwarden_bench::report::{Report, render};
use portwarden_bench::suite::{Ctx, Settings, progress};
use portwarden_bench::{Part, apply, clock, html, machine, plot, policy, process, scan};
use portwarden_lab::Lab;

/// Runs portwarden's benchmark suite on a namespace lab and writes a Markdown report with PNG
/// charts.
#[derive(Parser, Debug)]
#[command(
    name = "portwarden-bench",
    after_help = "Examples (as root, after scripts/deps.sh bench):\n  portwarden-bench --out docs/benchmarks.md\n  portwarden-bench --quick --out target/bench-quick/benchmarks.md\n  portwarden-bench --quick --only apply,policy --out /tmp/b/benchmarks.md"
)]
struct Args {
    /// Fewer runs and sizes, every workload: about four minutes (one run of each tool in the
    /// workloads under the kernel's ICMP rate limit, tens of seconds each).
    #[arg(long)]
    quick: bool,
    /// The report to write; charts go to an `img/` directory beside it.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// The portwarden binary to measure (default: `portwarden` beside this program).
    #[arg(long, value_name = "FILE")]
    portwarden: Option<PathBuf>,
    /// Only these parts: scan-one, scan-nodes, scan-limited, apply, policy, html
    /// (comma-separated).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    only: Vec<String>,
}

const PARTS: [&str; 6] = [
    "scan-one",
    "scan-nodes",
    "scan-limited",
    "apply",
    "policy",
    "html",
];

fn commit() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(h)
            if git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty()) =>
        {
            format!("{h}+dirty")
        }
        Some(h) => h,
        None => "unknown".into(),
    }
}

fn check_tools(names: &[&str]) -> Result<()> {
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|t| Command::new(t).arg("--version").output().is_err())
        .collect();
    if !missing.is_empty() {
        bail!(
            "missing {}: run `scripts/deps.sh bench` (as root) first",
            missing.join(", ")
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(process::HELPER_FLAG) {
        let code = process::helper_main(&argv[2..]);
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portwarden-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    check_parts(&args.only)?;
    Lab::check_environment().context("the suite runs on namespace labs")?;
    check_tools(&["nmap", "masscan", "iptables", "ip6tables"])?;
    let bin = portwarden_bin(args.portwarden.clone())?;
    process::use_helper(std::env::current_exe().context("locating this program")?);
    let settings = if args.quick {
        Settings::quick()
    } else {
        Settings::full()
    };
    let work = tempfile::Builder::new()
        .prefix("pw-bench-")
        .tempdir()
        .context("creating a scratch directory")?;
    let load_start = machine::load_average();
    let ctx = Ctx {
        settings: settings.clone(),
        bin,
        work: work.path().to_path_buf(),
        cores: std::thread::available_parallelism().map_or(1, usize::from),
        load: load_start
            .split_whitespace()
            .next()
            .and_then(|l| l.parse().ok())
            .unwrap_or(0.0),
    };
    let started = Instant::now();
    let generated = clock::now();
    progress(&format!(
        "{} run, portwarden = {}",
        settings.mode,
        ctx.bin.display()
    ));

    let parts = run_parts(&ctx, &args.only);
    let mut report = Report {
        mode: settings.mode.into(),
        command: if args.quick {
            "make bench QUICK=1".into()
        } else {
            "make bench".into()
        },
        generated,
        commit: commit(),
        machine: machine::facts(),
        load: (load_start, machine::load_average()),
        runs: (settings.runs_ours, settings.runs_peer),
        duration: 0.0,
        workloads: Vec::new(),
        scaling: Vec::new(),
        failures: Vec::new(),
    };
    collect(&mut report, parts);
    order(&mut report);
    draw_charts(&mut report, &args.out)?;
    report.duration = started.elapsed().as_secs_f64();
    std::fs::write(&args.out, render(&report))
        .with_context(|| format!("writing {}", args.out.display()))?;
    progress(&format!(
        "wrote {} ({} workloads, {} charts) in {:.0} s",
        args.out.display(),
        report.workloads.len(),
        report.scaling.iter().filter(|s| s.chart.is_some()).count(),
        report.duration
    ));
    if !report.failures.is_empty() {
        bail!(
            "{} part(s) failed; see the report's \"Not measured\" section",
            report.failures.len()
        );
    }
    Ok(())
}

/// Every `--only` name is a part.
fn check_parts(only: &[String]) -> Result<()> {
    for p in only {
        if !PARTS.contains(&p.as_str()) {
            bail!(
                "unknown part {p:?} in --only (expected some of {})",
                PARTS.join(", ")
            );
        }
    }
    Ok(())
}

/// Puts each part's workloads and scaling studies into the report, or its failure.
fn collect(report: &mut Report, parts: Vec<(&str, Result<Part>)>) {
    for (name, part) in parts {
        match part {
            Ok(p) => {
                report.workloads.extend(p.workloads);
                report.scaling.extend(p.scaling);
            }
            Err(e) => {
                eprintln!("portwarden-bench: {name} failed: {e:#}");
                report.failures.push(format!("{name}: {e:#}"));
            }
        }
    }
}

/// The portwarden binary to measure: `--portwarden`, or `portwarden` beside this program.
fn portwarden_bin(given: Option<PathBuf>) -> Result<PathBuf> {
    let bin = match given {
        Some(b) => b,
        None => std::env::current_exe()
            .context("locating this program")?
            .with_file_name("portwarden"),
    };
    if !bin.is_file() {
        bail!(
            "portwarden binary {} not found: build it first (cargo build --release -p portwarden) or pass --portwarden",
            bin.display()
        );
    }
    bin.canonicalize()
        .context("resolving the portwarden binary")
}

/// Runs the parts `--only` names (all when it names none), in the report's order; a part's
/// failure is kept for the report's "Not measured" section.
fn run_parts(ctx: &Ctx, only: &[String]) -> Vec<(&'static str, Result<Part>)> {
    let wanted = |p: &str| only.is_empty() || only.iter().any(|o| o == p);
    let mut parts: Vec<(&'static str, Result<Part>)> = Vec::new();
    if wanted("scan-one") {
        parts.push((
            "Scans of one node (full range, port counts, UDP)",
            scan::one_node(ctx),
        ));
    }
    if wanted("scan-nodes") {
        parts.push(("Scans of several nodes", scan::nodes(ctx)));
    }
    if wanted("scan-limited") {
        parts.push((
            "UDP scans under the kernel's ICMP rate limit",
            scan::rate_limited(ctx),
        ));
    }
    if wanted("apply") {
        parts.push(("Apply, no-op reconcile and agent", apply::run_all(ctx)));
    }
    if wanted("policy") {
        parts.push(("Policy load and compile", policy::run(ctx)));
    }
    if wanted("html") {
        parts.push(("HTML report in Chromium", html::run(ctx)));
    }
    parts
}

/// Draws each scaling study's chart into `img/` beside the report; a chart that fails is a
/// failure in the report, not an error.
fn draw_charts(report: &mut Report, out: &Path) -> Result<()> {
    let out_dir = out
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let img = out_dir.join("img");
    std::fs::create_dir_all(&img).with_context(|| format!("creating {}", img.display()))?;
    for s in &mut report.scaling {
        let name = chart_name(&s.title);
        match plot::draw(s, &img.join(&name)) {
            Ok(()) => s.chart = Some(format!("img/{name}")),
            Err(e) => report.failures.push(format!("chart {name}: {e:#}")),
        }
    }
    Ok(())
}

/// Workloads in the order, whatever order the parts ran in.
fn order(r: &mut Report) {
    let rank = |title: &str| -> usize {
        const ORDER: [&str; 9] = [
            "Full-range",
            "1,000 ports",
            "UDP",
            "Apply",
            "No-op",
            "Policy",
            "Agent",
            "HTML",
            "",
        ];
        ORDER
            .iter()
            .position(|p| title.starts_with(p))
            .unwrap_or(ORDER.len())
    };
    r.workloads.sort_by_key(|w| rank(&w.title));
    r.scaling.sort_by_key(|s| {
        ["port count", "node count", "rule count"]
            .iter()
            .position(|k| s.title.contains(k))
            .unwrap_or(3)
    });
}

fn chart_name(title: &str) -> String {
    let slug: String = title
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!(
        "bench-{}.png",
        slug.split('-')
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("-")
    )
}
