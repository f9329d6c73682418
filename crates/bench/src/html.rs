//! The HTML report at scale: the page of a drift report of 100 nodes x 100 ports, rendered by
//! the reconcile crate in process and by headless Chromium (parse, style, layout and paint of
//! a screenshot), beside Chromium on an empty page (its start-up alone). Goal from the HTML
//! report's issue: the page renders in Chromium in under 2 s.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use portwarden_reconcile::html::{self, EntryNote, EntryNotes, Page};
use portwarden_reconcile::{Report, Row as PortRow, Verdict};

use crate::Part;
use crate::process::{Job, run_here};
use crate::report::{Row, Workload, count};
use crate::suite::{Ctx, progress};

/// Nodes and managed ports per node of the page.
const SHAPE: (usize, usize) = (100, 100);

/// A report of `nodes` nodes with `ports` managed TCP ports each, seen from one vantage:
/// ports three apart (so no two collapse into a range and the matrix has a row per port),
/// every 50th drifting (a foreign DROP), every 97th indeterminate, the rest in sync.
pub fn synthetic(nodes: usize, ports: usize) -> Report {
    let from: IpAddr = [10, 213, 1, 2].into();
    let mut rows = Vec::with_capacity(nodes * ports);
    for n in 0..nodes {
        let address: IpAddr = [10, 213, (n / 250) as u8, (n % 250 + 1) as u8].into();
        for p in 0..ports {
            let i = n * ports + p;
            let (verdict, observed, cause) = match i {
                _ if i % 50 == 7 => (
                    Verdict::Drift,
                    "filtered",
                    Some("foreign rule INPUT#1 (-j DROP) matches first"),
                ),
                _ if i % 97 == 5 => (
                    Verdict::Indeterminate,
                    "unfiltered",
                    Some("an ACK scan cannot tell open from closed"),
                ),
                _ => (Verdict::InSync, "closed", None),
            };
            rows.push(PortRow {
                node: format!("node-{n}"),
                address,
                port: u16::try_from(1000 + 3 * p).unwrap_or(u16::MAX),
                protocol: "tcp".into(),
                from,
                expected: "closed".into(),
                observed: observed.into(),
                verdict,
                cause: cause.map(str::to_string),
                policy: Some(format!("policy-{}", n % 10)),
                entry: Some(p),
                confirmed_at: None,
            });
        }
    }
    Report::new(rows, Vec::new())
}

/// Notes for the entries [`synthetic`] names.
fn notes(ports: usize) -> EntryNotes {
    let mut notes = EntryNotes::new();
    for policy in 0..10 {
        for p in 0..ports {
            let note = EntryNote {
                priority: 100,
                ports: (1000 + 3 * p).to_string(),
                protocol: "tcp".into(),
                state: "closed".into(),
                from: "any".into(),
                reason: Some(format!("INC-{policy}{p}: keep it shut")),
                expires: None,
            };
            notes.insert((format!("policy-{policy}"), p), note);
        }
    }
    notes
}

/// Headless Chromium on `page`, writing a screenshot to `shot`; its wall time.
fn chromium(profile: &Path, page: &Path, shot: &Path) -> Result<f64> {
    let argv = [
        "chromium".to_string(),
        "--headless".into(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--hide-scrollbars".into(),
        "--force-device-scale-factor=1".into(),
        format!("--user-data-dir={}", profile.display()),
        format!("--screenshot={}", shot.display()),
        "--window-size=1280,2000".into(),
        format!("file://{}", page.display()),
    ];
    let _ = std::fs::remove_file(shot);
    let job = Job::new(&argv).limit(Duration::from_secs(120));
    let m = run_here(&job)
        .context("headless Chromium (scripts/deps.sh bench installs chromium)")?
        .check("chromium --screenshot")?;
    let size = std::fs::metadata(shot).map_or(0, |m| m.len());
    ensure!(
        size > 0,
        "chromium wrote no screenshot of {}",
        page.display()
    );
    Ok(m.wall)
}

/// Times the page's rendering in process and in Chromium, and Chromium's start-up.
///
/// # Errors
/// When a file cannot be written or Chromium fails.
pub fn run(ctx: &Ctx) -> Result<Part> {
    let (nodes, ports) = SHAPE;
    progress(&format!("html: {nodes} nodes x {ports} ports"));
    let dir = ctx.work.join("html");
    std::fs::create_dir_all(&dir).context("creating the page's directory")?;
    let report = synthetic(nodes, ports);
    let entries = notes(ports);
    let page = |r: &Report| {
        html::render(&Page {
            report: r,
            generated_at: "2026-12-01T12:00:00Z",
            version: html::VERSION,
            title: "portwarden verify",
            entries: &entries,
            refresh_secs: None,
            inside: None,
        })
    };
    let mut render = Vec::new();
    let mut text = String::new();
    for _ in 0..ctx.settings.runs_ours {
        let t = Instant::now();
        text = page(&report);
        render.push(t.elapsed().as_secs_f64());
    }
    let big = dir.join("report.html");
    std::fs::write(&big, &text).context("writing the page")?;
    let empty = dir.join("empty.html");
    std::fs::write(&empty, page(&Report::default())).context("writing the empty page")?;
    let (profile, shot) = (dir.join("profile"), dir.join("shot.png"));
    // A first run of each, not counted: Chromium's profile and the page cache warm up.
    chromium(&profile, &big, &shot)?;
    chromium(&profile, &empty, &shot)?;
    let (mut full, mut base) = (Vec::new(), Vec::new());
    for _ in 0..ctx.settings.runs_ours {
        full.push(chromium(&profile, &big, &shot)?);
        base.push(chromium(&profile, &empty, &shot)?);
    }
    Ok(Part {
        workloads: vec![workload(&report, text.len(), full, base, render)],
        scaling: Vec::new(),
    })
}

fn workload(
    report: &Report,
    bytes: usize,
    full: Vec<f64>,
    base: Vec<f64>,
    render: Vec<f64>,
) -> Workload {
    let (nodes, ports) = SHAPE;
    let s = &report.summary;
    let shape = format!(
        "{} compared ports ({} drift, {} indeterminate), a page of {:.1} MB",
        count(report.results.len() as f64),
        s.drift,
        s.indeterminate,
        bytes as f64 / 1e6
    );
    let command =
        "chromium --headless --no-sandbox --disable-gpu --screenshot --window-size=1280,2000";
    Workload {
        title: format!("HTML report of {nodes} nodes x {ports} ports"),
        setup: format!(
            "`verify -o html`'s page of a generated report: {nodes} nodes, {ports} managed TCP \
             ports each (three apart, so the matrix has a row per port), one vantage. Rendered \
             in process, then opened by headless Chromium, which parses and styles the whole \
             page, lays out and paints what a 1280 x 2000 window shows (node sections further \
             down are laid out when scrolled to: `content-visibility: auto`) and writes the \
             screenshot; the empty page's row is Chromium's start-up alone. Goal: under 2 s in \
             Chromium."
        ),
        rows: vec![
            Row::timed(
                "Chromium: the page",
                &format!("{command} report.html"),
                true,
                full,
            )
            .agreement(shape),
            Row::timed(
                "Chromium: an empty page (start-up)",
                &format!("{command} empty.html"),
                false,
                base,
            ),
            Row::timed(
                "render the page (in process)",
                "portwarden_reconcile::html::render",
                true,
                render,
            )
            .detail(format!("{bytes} bytes")),
        ],
        notes: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_synthetic_report_has_its_shape_and_renders_a_row_per_port() {
        let r = synthetic(3, 10);
        assert_eq!(r.results.len(), 30);
        assert_eq!((r.summary.drift, r.summary.indeterminate), (1, 1));
        let text = html::render(&Page {
            report: &r,
            generated_at: "t",
            version: "v",
            title: "t",
            entries: &notes(10),
            refresh_secs: None,
            inside: None,
        });
        assert_eq!(
            text.matches("<th class=\"port\">").count(),
            30 + 2,
            "a matrix row per port, and a line per finding"
        );
        assert!(text.contains("reason: INC-"));
    }
}
