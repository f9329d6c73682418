//! The HTML report in a real browser: headless Chromium (Debian's `chromium`, installed by
//! `scripts/deps.sh test`) renders a generated report. Its DOM (`--dump-dom`) has the drift
//! rows, their causes and the counts, and no element made of a policy's markup; its screenshot
//! (`--screenshot`) is not blank and the drift cells' pixels carry the drift colour.
//!
//! Without Chromium the tests are skipped with a message, except under `CI`, where that is a
//! failure (as the lab tests do), so CI cannot pass without running them.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use portwarden_reconcile::html::{self, EntryNotes, Page};
use portwarden_reconcile::{Report, Row, Verdict};

/// How long one Chromium run may take before it is killed and the test fails.
const DEADLINE: Duration = Duration::from_secs(90);

const POLICY: &str = r#"
apiVersion: portwarden.io/v1alpha1
kind: PortPolicy
metadata:
  name: quarantine
spec:
  priority: 100
  ports:
    - ports: "8080"
      state: closed
      reason: "<script>alert(1)</script>"
    - ports: "8000-8079,8081-8100"
      state: closed
      reason: "build ports stay shut"
"#;

/// Chromium's path: `$PORTWARDEN_CHROMIUM`, or `chromium` / `chromium-browser` on `PATH`.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PORTWARDEN_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| [d.join("chromium"), d.join("chromium-browser")])
        .find(|p| p.is_file())
}

/// Chromium, or `None` after saying why the test is skipped; under `CI` its absence fails.
fn chromium_or_skip() -> Option<PathBuf> {
    let found = chromium();
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "Chromium required under CI but not found: run scripts/deps.sh test (Debian package chromium) or set PORTWARDEN_CHROMIUM"
        );
        eprintln!("skipping browser test: chromium not found (scripts/deps.sh test installs it)");
    }
    found
}

/// Runs headless Chromium on `page` with `args`, in its own process group, killed whole when
/// it has not exited within [`DEADLINE`] (then the test fails).
fn run_chromium(bin: &Path, profile: &Path, page: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .args([
            "--force-device-scale-factor=1",
            "--force-color-profile=srgb",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let pid = i32::try_from(child.id()).unwrap();
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let timed_out = stopped.recv_timeout(DEADLINE).is_err();
        if timed_out {
            // SAFETY: kill(2) of the process group led by our own child, not yet reaped (the
            // main thread reaps it only after this thread has been told to stop or has fired).
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        timed_out
    });
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let stderr = child.stderr.take().unwrap();
    let err_reader =
        std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    // Both pipes close when Chromium and its helpers exit: then it is safe to reap.
    let out = reader.join().unwrap();
    let err = err_reader.join().unwrap();
    let _ = stop.send(());
    let killed = watchdog.join().unwrap();
    let status = child.wait().unwrap();
    assert!(
        !killed,
        "Chromium did not finish within {DEADLINE:?}: {err}"
    );
    assert!(status.success(), "Chromium failed ({status}): {err}");
    Output {
        status,
        stdout: out.into_bytes(),
        stderr: err.into_bytes(),
    }
}

fn row(node: &str, port: u16, verdict: Verdict, observed: &str, cause: Option<&str>) -> Row {
    Row {
        node: node.into(),
        address: "10.213.0.11".parse().unwrap(),
        port,
        protocol: "tcp".into(),
        from: "10.213.1.2".parse().unwrap(),
        expected: "closed".into(),
        observed: observed.into(),
        verdict,
        cause: cause.map(str::to_string),
        policy: Some("quarantine".into()),
        entry: Some(usize::from(port != 8080)),
        confirmed_at: None,
    }
}

/// Two nodes: `web-1` with 8000-8100/tcp closed but 8080 filtered by a foreign rule (drift)
/// and an open port no policy declares; `db-1` in sync but for one undecided port. With
/// `drift` false, the same ports all in sync (the screenshot's control).
fn report(drift: bool) -> Report {
    let mut rows = Vec::new();
    for port in 8000..=8100 {
        let r = if port == 8080 && drift {
            let cause = "foreign rule INPUT#1 (-j DROP) matches first";
            row("web-1", port, Verdict::Drift, "filtered", Some(cause))
        } else {
            row("web-1", port, Verdict::InSync, "closed", None)
        };
        rows.push(r);
        rows.push(row("db-1", port, Verdict::InSync, "closed", None));
    }
    if drift {
        rows.push(Row {
            expected: "unlisted".into(),
            policy: None,
            entry: None,
            ..row(
                "web-1",
                31337,
                Verdict::Drift,
                "open",
                Some("open port that no policy declares (unlisted: report)"),
            )
        });
    }
    rows.push(row(
        "db-1",
        9999,
        Verdict::Indeterminate,
        "unfiltered",
        Some("an ACK scan cannot tell open from closed"),
    ));
    Report::new(
        rows,
        vec!["db-1: inside view unavailable <b>timeout</b>".into()],
    )
}

fn write_page(dir: &Path, name: &str, report: &Report) -> PathBuf {
    let loaded = portwarden_policy::load_source("q.yaml", POLICY.as_bytes()).unwrap();
    let entries: EntryNotes = html::entry_notes(&loaded.policies);
    let text = html::render(&Page {
        report,
        generated_at: "2026-12-01T12:51:56Z",
        version: html::VERSION,
        title: "portwarden verify",
        entries: &entries,
        refresh_secs: None,
        inside: None,
    });
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn chromium_renders_the_drift_rows_causes_and_counts() {
    let Some(bin) = chromium_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let page = write_page(dir.path(), "report.html", &report(true));
    let out = run_chromium(&bin, &dir.path().join("profile"), &page, &["--dump-dom"]);
    let dom = String::from_utf8(out.stdout).unwrap();
    assert!(dom.contains("<html lang=\"en\">"), "no document: {dom}");
    for (id, n) in [
        ("nodes", 2),
        ("ports", 204),
        ("in_sync", 201),
        ("drift", 2),
        ("indeterminate", 1),
    ] {
        let dd = format!("<dd id=\"count-{id}\">{n}</dd>");
        assert!(dom.contains(&dd), "no {dd} in {dom}");
    }
    assert_eq!(
        dom.matches("class=\"finding\" data-verdict=\"drift\"")
            .count(),
        2
    );
    assert_eq!(
        dom.matches("class=\"finding\" data-verdict=\"indeterminate\"")
            .count(),
        1
    );
    for text in [
        "<td class=\"cause\">foreign rule INPUT#1 (-j DROP) matches first</td>",
        "<td class=\"cause\">open port that no policy declares (unlisted: report)</td>",
        "<td class=\"cause\">an ACK scan cannot tell open from closed</td>",
        "<th class=\"port\">8000-8079/tcp</th>",
        "<th class=\"port\">31337/tcp</th>",
        "reason: &lt;script&gt;alert(1)&lt;/script&gt;",
        "db-1: inside view unavailable &lt;b&gt;timeout&lt;/b&gt;",
    ] {
        assert!(dom.contains(text), "no {text} in {dom}");
    }
    // The browser made no element of a policy's or an agent's markup.
    assert!(!dom.contains("<script") && !dom.contains("<b>"), "{dom}");
    // Drift first: web-1's section comes before db-1's.
    let at = |s: &str| dom.find(s).unwrap();
    assert!(at("data-node=\"web-1\"") < at("data-node=\"db-1\""));
}

/// An RGB screenshot.
struct Shot {
    width: usize,
    pixels: Vec<[u8; 3]>,
}

fn decode(path: &Path) -> Shot {
    let decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.bit_depth, png::BitDepth::Eight, "{info:?}");
    let step = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("unexpected PNG colour type {other:?}"),
    };
    let pixels = buf[..info.buffer_size()]
        .chunks_exact(step)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    Shot {
        width: info.width as usize,
        pixels,
    }
}

/// How many pixels are `#rrggbb` (within a little, for the edges' blending).
fn count(shot: &Shot, hex: &str) -> usize {
    let c: Vec<u8> = (0..3)
        .map(|i| u8::from_str_radix(&hex[1 + 2 * i..3 + 2 * i], 16).unwrap())
        .collect();
    shot.pixels
        .iter()
        .filter(|p| p.iter().zip(&c).all(|(a, b)| a.abs_diff(*b) <= 4))
        .count()
}

fn screenshot(bin: &Path, dir: &Path, name: &str, report: &Report) -> Shot {
    let page = write_page(dir, &format!("{name}.html"), report);
    let png_path = dir.join(format!("{name}.png"));
    let shot_arg = format!("--screenshot={}", png_path.display());
    let profile = dir.join(format!("profile-{name}"));
    run_chromium(
        bin,
        &profile,
        &page,
        &[&shot_arg, "--window-size=1280,1400"],
    );
    decode(&png_path)
}

#[test]
fn chromium_paints_drift_cells_in_the_drift_colour() {
    let Some(bin) = chromium_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let drifted = screenshot(&bin, dir.path(), "drift", &report(true));
    let calm = screenshot(&bin, dir.path(), "calm", &report(false));
    assert_eq!(drifted.width, 1280);
    let look = |v| html::look(v).colour;
    // Not blank: the page is drawn, in sync cells in their colour.
    let white = count(&drifted, "#ffffff");
    assert!(
        white < drifted.pixels.len() * 95 / 100,
        "{white} of {} pixels white: a blank page",
        drifted.pixels.len()
    );
    assert!(count(&drifted, look(Verdict::InSync)) > 10_000);
    assert!(count(&drifted, look(Verdict::Indeterminate)) > 1_000);
    // The drift colour is the drift cells': the same page without drift has the legend's
    // swatch of it and no more; the drift page has its cells besides (one matrix cell is at
    // least 110 x 20 pixels; there are two, and two in the table of what differs).
    let (with, without) = (
        count(&drifted, look(Verdict::Drift)),
        count(&calm, look(Verdict::Drift)),
    );
    assert!(
        with >= without + 4_000,
        "drift colour: {with} pixels with drift, {without} without"
    );
}
