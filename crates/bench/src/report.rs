//! The results of one suite run and their rendering as `docs/benchmarks.md`.
//!
//! A key design decision is that this module is pure: the suite fills a [`Report`] and
//! [`render`] turns it into Markdown with a fixed layout (same sections, same order, same
//! number formats every time), so two runs differ only in their numbers and a reviewer can diff
//! them. Ratios are always *peer's median ÷ portwarden's median* from the same run.

use std::fmt::Write as _;

use crate::machine::Fact;
use crate::stats::{PowerFit, local_exponents, median, min_max, power_fit};

/// A measured value: run times in seconds, or a figure that is not a time.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// One wall time per run, in seconds.
    Seconds(Vec<f64>),
    /// Already formatted (for example CPU and memory of the agent).
    Text(String),
}

/// One program measured in a workload: portwarden or one of its peers.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Short name: `portwarden`, `nmap -sS -T4`, `masscan --rate 100000`, ...
    pub tool: String,
    /// The exact command line (targets abbreviated).
    pub command: String,
    /// Whether this row is portwarden's (the denominator of every ratio).
    pub ours: bool,
    /// The measurement.
    pub value: Value,
    /// Whether `value` is an extrapolation rather than a measurement.
    pub estimated: bool,
    /// Whether the result agreed with the reference (nmap, or the expected ruleset).
    pub agreement: String,
    /// Anything else worth a column: peak memory, CPU time, probes.
    pub detail: String,
}

impl Row {
    /// A measured row with run times.
    pub fn timed(tool: &str, command: &str, ours: bool, runs: Vec<f64>) -> Row {
        Row {
            tool: tool.into(),
            command: command.into(),
            ours,
            value: Value::Seconds(runs),
            estimated: false,
            agreement: String::new(),
            detail: String::new(),
        }
    }

    /// Sets the agreement column.
    pub fn agreement(mut self, text: impl Into<String>) -> Row {
        self.agreement = text.into();
        self
    }

    /// Sets the detail column.
    pub fn detail(mut self, text: impl Into<String>) -> Row {
        self.detail = text.into();
        self
    }

    /// The median run time, if this row holds times.
    pub fn median(&self) -> Option<f64> {
        match &self.value {
            Value::Seconds(v) => median(v),
            Value::Text(_) => None,
        }
    }

    fn shown_median(&self) -> String {
        match (&self.value, self.median()) {
            (Value::Text(t), _) => t.clone(),
            (_, Some(m)) if self.estimated => format!("≈ {} (extrapolated)", secs(m)),
            (_, Some(m)) => secs(m),
            (_, None) => "—".into(),
        }
    }

    fn shown_range(&self) -> String {
        match &self.value {
            Value::Seconds(v) if v.len() > 1 && !self.estimated => min_max(v)
                .map(|(lo, hi)| format!("{}–{}", secs(lo), secs(hi)))
                .unwrap_or_default(),
            _ => String::new(),
        }
    }

    fn runs(&self) -> String {
        match &self.value {
            Value::Seconds(v) if !self.estimated => v.len().to_string(),
            _ => "—".into(),
        }
    }
}

/// One workload: a setup and the programs measured on it, portwarden's row first.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// Heading.
    pub title: String,
    /// What the lab looked like and what was measured.
    pub setup: String,
    /// portwarden's row(s) and the peers'.
    pub rows: Vec<Row>,
    /// Bullet points under the table.
    pub notes: Vec<String>,
}

impl Workload {
    /// The median of portwarden's first timed row.
    pub fn ours_median(&self) -> Option<f64> {
        self.rows.iter().find(|r| r.ours).and_then(Row::median)
    }

    /// `row`'s median ÷ portwarden's median: how many times longer the peer took.
    pub fn ratio(&self, row: &Row) -> Option<f64> {
        if row.ours {
            return None;
        }
        let ours = self.ours_median()?;
        (ours > 0.0).then(|| row.median().map(|m| m / ours))?
    }
}

/// One point of a scaling series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Size: ports, nodes or rules.
    pub x: f64,
    /// Median wall time in seconds.
    pub y: f64,
    /// Median CPU seconds (user + system) of the measured process, when known.
    pub cpu: Option<f64>,
    /// An extrapolation, not a measurement (drawn dashed, left out of the fit).
    pub extrapolated: bool,
}

/// Times of one program at several sizes.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend name.
    pub name: String,
    /// portwarden's series (drawn first and thicker).
    pub ours: bool,
    /// The points, by size.
    pub points: Vec<Point>,
}

impl Series {
    /// The measured (not extrapolated) points as (x, y).
    pub fn measured(&self) -> Vec<(f64, f64)> {
        self.points
            .iter()
            .filter(|p| !p.extrapolated)
            .map(|p| (p.x, p.y))
            .collect()
    }

    /// The log-log least-squares fit of the measured points.
    pub fn fit(&self) -> Option<PowerFit> {
        power_fit(&self.measured())
    }
}

/// How cost grows with one dimension (ports, nodes, rules).
#[derive(Debug, Clone, PartialEq)]
pub struct Scaling {
    /// Heading.
    pub title: String,
    /// Name of the size (`ports`, `nodes`, `entries`).
    pub unit: String,
    /// One series per program.
    pub series: Vec<Series>,
    /// The chart's path relative to the report, when one was drawn.
    pub chart: Option<String>,
    /// Where it stops scaling and why, from the measurements.
    pub analysis: Vec<String>,
}

/// Everything one suite run produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// `full` or `quick`.
    pub mode: String,
    /// The command that produced it.
    pub command: String,
    /// UTC time of the run's start.
    pub generated: String,
    /// Git commit (short hash, `+dirty` when the tree had changes).
    pub commit: String,
    /// Machine facts.
    pub machine: Vec<Fact>,
    /// Load average at the start and at the end.
    pub load: (String, String),
    /// Runs of portwarden and of each peer per measurement.
    pub runs: (usize, usize),
    /// Duration of the whole run in seconds.
    pub duration: f64,
    /// The workloads, in a fixed order.
    pub workloads: Vec<Workload>,
    /// The scaling studies.
    pub scaling: Vec<Scaling>,
    /// Workloads that could not be measured, with the reason (never hidden).
    pub failures: Vec<String>,
}

/// Seconds in a readable unit with three significant digits or so.
pub fn secs(s: f64) -> String {
    if !s.is_finite() {
        return "—".into();
    }
    if s >= 100.0 {
        format!("{s:.0} s")
    } else if s >= 10.0 {
        format!("{s:.1} s")
    } else if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 0.01 {
        format!("{:.0} ms", s * 1e3)
    } else {
        format!("{:.2} ms", s * 1e3)
    }
}

/// `1,000 ports`, `1 node`: a size with its unit (a plural noun), singular for one.
pub fn sized(x: f64, unit: &str) -> String {
    let unit = if x == 1.0 {
        unit.strip_suffix('s').unwrap_or(unit)
    } else {
        unit
    };
    format!("{} {unit}", count(x))
}

/// `1 run`, `3 runs`.
pub fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A ratio as `12x`, `3.4x` or `0.42x`.
pub fn ratio(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}x")
    } else if r >= 1.0 {
        format!("{r:.1}x")
    } else {
        format!("{r:.2}x")
    }
}

/// A count with thousands separators (`65,535`).
pub fn count(n: f64) -> String {
    let n = n.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn anchor(title: &str) -> String {
    title
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            'a'..='z' | '0'..='9' | '-' | '_' => Some(c),
            ' ' => Some('-'),
            _ => None,
        })
        .collect()
}

/// Renders the report as Markdown.
pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let w = &mut o;
    let _ = writeln!(w, "# portwarden benchmarks\n");
    let _ = writeln!(
        w,
        "<!-- Generated by crates/bench (`{}`); change the generator, not this file. -->\n",
        r.command
    );
    let _ = writeln!(
        w,
        "Generated by `{}` ({} run) at {} from commit `{}`, in {}. Every figure is the median \
         of {} of portwarden and {} of each peer, all measured in this one run on the \
         same namespace lab; the ratio is the peer's median ÷ portwarden's median (above 1: \
         portwarden is faster). Numbers vary from machine to machine and run to run; compare \
         ratios within one report.\n",
        r.command,
        r.mode,
        r.generated,
        r.commit,
        duration(r.duration),
        plural(r.runs.0, "run"),
        plural(r.runs.1, "run")
    );
    machine_section(w, r);
    summary_section(w, r);
    if !r.failures.is_empty() {
        let _ = writeln!(w, "## Not measured in this run\n");
        for f in &r.failures {
            let _ = writeln!(w, "* {}", cell(f));
        }
        let _ = writeln!(w);
    }
    let _ = writeln!(w, "## Workloads\n");
    for wl in &r.workloads {
        workload_section(w, wl);
    }
    let _ = writeln!(w, "## Scaling\n");
    let _ = writeln!(
        w,
        "Each exponent is the slope of a least-squares line through (ln size, ln median time): \
         1 means the cost grows linearly with the size, below 1 that fixed costs still \
         dominate, above 1 that each unit gets dearer as the size grows. Local exponents are the \
         slopes between neighbouring sizes; where they change, the curve has a knee.\n"
    );
    for s in &r.scaling {
        scaling_section(w, s);
    }
    method_section(w);
    o
}

fn duration(s: f64) -> String {
    let s = s.round() as u64;
    if s >= 60 {
        format!("{} min {} s", s / 60, s % 60)
    } else {
        format!("{s} s")
    }
}

fn machine_section(w: &mut String, r: &Report) {
    let _ = writeln!(w, "## Machine\n\n| | |\n|---|---|");
    for (k, v) in &r.machine {
        let _ = writeln!(w, "| {} | {} |", cell(k), cell(v));
    }
    let _ = writeln!(
        w,
        "| load average (1, 5, 15 min) at start / end | {} / {} |",
        r.load.0, r.load.1
    );
    let _ = writeln!(
        w,
        "| runs per measurement | portwarden {}, each peer {} |\n",
        r.runs.0, r.runs.1
    );
}

fn summary_section(w: &mut String, r: &Report) {
    let _ = writeln!(w, "## Summary\n");
    let _ = writeln!(
        w,
        "| workload | portwarden | portwarden's agreement | peer | peer's median | ratio | peer's agreement |\n|---|---|---|---|---|---|---|"
    );
    for wl in &r.workloads {
        let Some(ours) = wl.rows.iter().find(|r| r.ours) else {
            continue;
        };
        let title = format!("[{}](#{})", wl.title, anchor(&wl.title));
        let peers: Vec<&Row> = wl.rows.iter().filter(|r| !r.ours).collect();
        if peers.is_empty() {
            let _ = writeln!(
                w,
                "| {title} | {} | {} | — | — | — | — |",
                cell(&ours.shown_median()),
                cell(&ours.agreement)
            );
        }
        for p in peers {
            let _ = writeln!(
                w,
                "| {title} | {} | {} | {} | {} | {} | {} |",
                cell(&ours.shown_median()),
                cell(&ours.agreement),
                cell(&p.tool),
                cell(&p.shown_median()),
                wl.ratio(p).map(ratio).unwrap_or_else(|| "—".into()),
                cell(&p.agreement)
            );
        }
    }
    let _ = writeln!(w);
    let charts: Vec<&Scaling> = r.scaling.iter().filter(|s| s.chart.is_some()).collect();
    for s in charts {
        if let Some(c) = &s.chart {
            let _ = writeln!(w, "![{}]({c})\n", s.title);
        }
    }
}

fn workload_section(w: &mut String, wl: &Workload) {
    let _ = writeln!(w, "### {}\n\n{}\n", wl.title, wl.setup);
    let _ = writeln!(
        w,
        "| tool | command | runs | median | min–max | ratio | agreement | details |\n|---|---|---|---|---|---|---|---|"
    );
    for row in &wl.rows {
        let tool = if row.ours {
            format!("**{}**", row.tool)
        } else {
            row.tool.clone()
        };
        let _ = writeln!(
            w,
            "| {} | `{}` | {} | {} | {} | {} | {} | {} |",
            cell(&tool),
            cell(&row.command),
            row.runs(),
            cell(&row.shown_median()),
            row.shown_range(),
            wl.ratio(row).map(ratio).unwrap_or_else(|| "—".into()),
            cell(&row.agreement),
            cell(&row.detail)
        );
    }
    let _ = writeln!(w);
    for n in &wl.notes {
        let _ = writeln!(w, "* {n}");
    }
    if !wl.notes.is_empty() {
        let _ = writeln!(w);
    }
}

fn scaling_section(w: &mut String, s: &Scaling) {
    let _ = writeln!(w, "### {}\n", s.title);
    if let Some(c) = &s.chart {
        let _ = writeln!(w, "![{}]({c})\n", s.title);
    }
    let _ = writeln!(
        w,
        "| program | {} | median times | exponent | R² | local exponents |\n|---|---|---|---|---|---|",
        s.unit
    );
    for series in &s.series {
        let measured: Vec<&Point> = series.points.iter().filter(|p| !p.extrapolated).collect();
        let sizes: Vec<String> = measured.iter().map(|p| count(p.x)).collect();
        let times: Vec<String> = measured.iter().map(|p| secs(p.y)).collect();
        let locals: Vec<String> = local_exponents(&series.measured())
            .iter()
            .map(|e| format!("{e:.2}"))
            .collect();
        let (exp, r2) = series.fit().map_or(("—".into(), "—".into()), |f| {
            (
                format!("**{:.2}**", f.exponent),
                format!("{:.3}", f.r_squared),
            )
        });
        let _ = writeln!(
            w,
            "| {} | {} | {} | {exp} | {r2} | {} |",
            cell(&series.name),
            sizes.join(", "),
            times.join(", "),
            if locals.is_empty() {
                "—".into()
            } else {
                locals.join(", ")
            }
        );
    }
    let _ = writeln!(w);
    for a in &s.analysis {
        let _ = writeln!(w, "* {a}");
    }
    if !s.analysis.is_empty() {
        let _ = writeln!(w);
    }
}

fn method_section(w: &mut String) {
    let _ = writeln!(
        w,
        "## Method\n\n\
         * `make bench` builds the release binaries and runs `portwarden-bench` (crates/bench), as \
         root; `make bench QUICK=1` (or `make bench-quick`) runs fewer runs at smaller sizes and \
         writes under the target directory, never over this file.\n\
         * Everything runs in network namespaces built by `portwarden-lab` (names `pw-*`, removed \
         at the end); nothing touches the root namespace's netfilter. Every measured program — \
         portwarden's release binary and each peer — is spawned the same way, by a thread inside \
         the namespace, and timed from spawn to exit; its CPU time and peak memory come from \
         `wait4(2)`.\n\
         * Peak memory is each program's own `ru_maxrss`: programs are started through a small \
         helper process (the suite's binary in `__measure-exec` mode) so they do not inherit the \
         suite's own high-water mark.\n\
         * Scans: portwarden's states are compared port by port with `nmap -sS -T4`'s (UDP: \
         `nmap -sU -T4`'s) from the same run; under the kernel's ICMP rate limit the reference \
         is nmap's default timing (`-T3`), since `-T4` gives up on ports whose answer the limit \
         withheld. Rate-limited workloads give every run of every tool scanner source \
         addresses no earlier run used (each address is a token bucket of its own at the \
         node), so each run starts with a full bucket. masscan only reports open ports, so its accuracy is the open ports it found \
         against the ports that really are open. masscan 1.3.2 notices the end of its `--wait` \
         only when a packet arrives, so while it runs the node sends one small UDP datagram per \
         100 ms to the scanner (otherwise it idles for up to a minute).\n\
         * Rules: after each portwarden apply the node's `iptables-save` is parsed and every \
         portwarden chain and the jump are compared with the rules portwarden's renderer \
         expects; the hand-written ruleset's chain is checked the same way against its own text.\n\
         * Agent: `portwarden agent` on a lab node with the 10,000-entry policy, `--refresh 1`; \
         after it is ready, CPU is utime+stime+cutime+cstime from `/proc/PID/stat` (the agent \
         and the `iptables-save` processes it waits for) over a window of whole refresh cycles \
         (counted by its `portwarden_reconcile_duration_seconds_count` metric), memory is \
         `VmRSS` from `/proc/PID/status` at the end of the window.\n"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        Report {
            mode: "quick".into(),
            command: "portwarden-bench --quick".into(),
            generated: "2026-11-27 17:00 UTC".into(),
            commit: "abc1234".into(),
            machine: vec![("CPUs (nproc)".into(), "2".into())],
            load: ("1.00 0.50 0.20".into(), "0.90 0.60 0.30".into()),
            runs: (3, 1),
            duration: 83.4,
            workloads: vec![
                Workload {
                    title: "Full-range SYN scan, one node".into(),
                    setup: "One node.".into(),
                    rows: vec![
                        Row::timed(
                            "portwarden",
                            "portwarden scan T -p-",
                            true,
                            vec![0.5, 0.4, 0.6],
                        )
                        .agreement("identical (65535 ports)")
                        .detail("8.6 MB"),
                        Row::timed("nmap -sS -T4", "nmap -sS -T4 -p- T", false, vec![5.0])
                            .agreement("reference"),
                    ],
                    notes: vec!["a note".into()],
                },
                Workload {
                    title: "Agent steady state".into(),
                    setup: "10k rules.".into(),
                    rows: vec![Row {
                        value: Value::Text("0.8 % CPU, 12.0 MB".into()),
                        ..Row::timed("portwarden agent", "portwarden agent ...", true, vec![])
                    }],
                    notes: vec![],
                },
            ],
            scaling: vec![Scaling {
                title: "Scan time against port count".into(),
                unit: "ports".into(),
                series: vec![Series {
                    name: "portwarden".into(),
                    ours: true,
                    points: vec![
                        Point {
                            x: 1000.0,
                            y: 0.1,
                            cpu: None,
                            extrapolated: false,
                        },
                        Point {
                            x: 10000.0,
                            y: 1.0,
                            cpu: None,
                            extrapolated: false,
                        },
                        Point {
                            x: 100000.0,
                            y: 10.0,
                            cpu: None,
                            extrapolated: true,
                        },
                    ],
                }],
                chart: Some("img/scan-ports.png".into()),
                analysis: vec!["linear".into()],
            }],
            failures: vec!["UDP: nmap missing".into()],
        }
    }

    #[test]
    fn number_formats() {
        assert_eq!(secs(123.4), "123 s");
        assert_eq!(secs(12.34), "12.3 s");
        assert_eq!(secs(1.234), "1.23 s");
        assert_eq!(secs(0.4641), "464 ms");
        assert_eq!(secs(0.00123), "1.23 ms");
        assert_eq!(secs(f64::NAN), "—");
        assert_eq!(ratio(11.94), "11.9x");
        assert_eq!(ratio(376.2), "376x");
        assert_eq!(ratio(0.421), "0.42x");
        assert_eq!(count(65535.0), "65,535");
        assert_eq!(count(1000000.0), "1,000,000");
        assert_eq!(count(999.0), "999");
        assert_eq!(duration(83.4), "1 min 23 s");
        assert_eq!(plural(1, "run"), "1 run");
        assert_eq!(sized(1.0, "nodes"), "1 node");
        assert_eq!(sized(65535.0, "ports"), "65,535 ports");
        assert_eq!(plural(5, "run"), "5 runs");
        assert_eq!(
            anchor("Full-range SYN scan, one node"),
            "full-range-syn-scan-one-node"
        );
    }

    #[test]
    fn ratio_is_peer_over_portwarden_median() {
        let r = sample();
        let wl = &r.workloads[0];
        assert_eq!(wl.ours_median(), Some(0.5));
        assert_eq!(wl.ratio(&wl.rows[1]), Some(10.0));
        assert_eq!(wl.ratio(&wl.rows[0]), None);
    }

    #[test]
    fn rendering_has_a_fixed_layout() {
        let text = render(&sample());
        let headings: Vec<&str> = text.lines().filter(|l| l.starts_with('#')).collect();
        assert_eq!(
            headings,
            [
                "# portwarden benchmarks",
                "## Machine",
                "## Summary",
                "## Not measured in this run",
                "## Workloads",
                "### Full-range SYN scan, one node",
                "### Agent steady state",
                "## Scaling",
                "### Scan time against port count",
                "## Method",
            ]
        );
        assert!(text.contains(
            "| [Full-range SYN scan, one node](#full-range-syn-scan-one-node) | 500 ms | identical (65535 ports) | nmap -sS -T4 | 5.00 s | 10.0x | reference |"
        ), "{text}");
        assert!(
            text.contains(
                "| [Agent steady state](#agent-steady-state) | 0.8 % CPU, 12.0 MB |  | — | — | — | — |"
            ),
            "{text}"
        );
        assert!(text.contains("| **portwarden** | `portwarden scan T -p-` | 3 | 500 ms | 400 ms–600 ms | — | identical (65535 ports) | 8.6 MB |"), "{text}");
        // the extrapolated point is left out of the fit and the table
        assert!(
            text.contains(
                "| portwarden | 1,000, 10,000 | 100 ms, 1.00 s | **1.00** | 1.000 | 1.00 |"
            ),
            "{text}"
        );
        assert!(text.contains("![Scan time against port count](img/scan-ports.png)"));
        assert!(text.contains("* UDP: nmap missing"));
        assert!(text.contains("in 1 min 23 s"));
        // same input, same text
        assert_eq!(text, render(&sample()));
    }

    #[test]
    fn estimated_rows_say_so() {
        let mut row = Row::timed("iptables -A per rule", "iptables -A ...", false, vec![52.0]);
        row.estimated = true;
        assert_eq!(row.shown_median(), "≈ 52.0 s (extrapolated)");
        assert_eq!(row.runs(), "—");
        assert_eq!(row.shown_range(), "");
    }
}
