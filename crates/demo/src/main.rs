//! `make demo`: the whole job on a lab of namespaces, narrated.
//!
//! 1. A lab of three nodes and a scanner; services on every node.
//! 2. One `portwarden agent` per node on `examples/`; wait until every node has applied.
//! 3. `portwarden verify` from the scanner: everything in sync.
//! 4. Break things the way life does: a foreign DROP above portwarden's jump on web-1, the
//!    web server on web-2 stops, one of portwarden's rules deleted on db-1.
//! 5. `verify` again: drift, with causes, exit code 2; its HTML page is written to
//!    `target/demo/drift-report.html` (`PORTWARDEN_DEMO_REPORT` to choose).
//! 6. The agents repair rule drift at their next refresh; `verify` shows only the genuine
//!    drift left (the stopped service).
//! 7. The incident: the quarantine of the attack source expires by itself (`expires:`, shown
//!    by `explain` before the lab starts); the attacker knocks on web-1's port 80 and
//!    `portwarden status` counts its packets on that entry.
//!
//! The lab is removed on exit, also on failure. Colors only on a terminal.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use portwarden_demo::{ATTACKER, NODES, Result, Scenario, examples_with_expiry};
use portwarden_policy::Timestamp;

struct Narrator {
    color: bool,
    started: Instant,
}

impl Narrator {
    fn step(&self, text: &str) {
        let t = self.started.elapsed().as_secs_f64();
        if self.color {
            println!("\n\x1b[1;36m==> {text}\x1b[0m \x1b[2m({t:.1}s)\x1b[0m");
        } else {
            println!("\n==> {text} ({t:.1}s)");
        }
    }
    fn say(&self, text: &str) {
        if self.color {
            println!("\x1b[2m{text}\x1b[0m");
        } else {
            println!("{text}");
        }
    }
}

/// Where the drift scan's HTML page goes: `PORTWARDEN_DEMO_REPORT`, or
/// `target/demo/drift-report.html` under the repository (its directory made).
fn report_page(root: &Path) -> Result<PathBuf> {
    let page = std::env::var_os("PORTWARDEN_DEMO_REPORT")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/demo/drift-report.html"));
    let page = if page.is_absolute() {
        page
    } else {
        root.join(page)
    };
    if let Some(dir) = page.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {} for the report page: {e}", dir.display()))?;
    }
    Ok(page)
}

/// Waits (30 s at most) until the only drift `verify` reports is the stopped web server on
/// web-2: the agents have repaired the rule drift.
fn wait_for_repair(s: &Scenario) -> Result<()> {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, report) = s.verify_report()?;
        let drifting: Vec<String> = report
            .results
            .iter()
            .filter(|r| r.verdict == portwarden_reconcile::Verdict::Drift)
            .map(|r| format!("{} {}/{}", r.node, r.port, r.protocol))
            .collect();
        if drifting == ["web-2 80/tcp"] {
            break;
        }
        if Instant::now() > until {
            return Err(format!(
                "agents did not repair in time; still drifting: {drifting:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(())
}

/// A scratch directory removed when dropped (also when the demo fails).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The policies the lab runs on: `examples/`, with the quarantine of the attack source
/// expiring four hours from now, as it would be written during the incident.
fn incident_policies(n: &Narrator, bin: &Path, root: &Path, scratch: &Scratch) -> Result<PathBuf> {
    let expires = Timestamp::from_unix(Timestamp::now().unix() / 60 * 60 + 4 * 3600);
    let dir = examples_with_expiry(root, &scratch.0, &expires.to_string())?;
    n.say(&format!(
        "the lab runs examples/ with the quarantine of the attack source ending by itself: \
         `expires: \"{expires}\"` (the kernel stops matching the rule then)"
    ));
    let out = std::process::Command::new(bin)
        .arg("explain")
        .arg("-f")
        .arg(&dir)
        .args([
            "--node",
            "web-1",
            "--port",
            "80/tcp",
            "--from",
            &ATTACKER.to_string(),
        ])
        .output()
        .map_err(|e| format!("running explain: {e}"))?;
    print!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(dir)
}

/// Connection attempts the attacker makes in the demo.
const KNOCKS: usize = 5;

/// The attacker (the scanner, given [`ATTACKER`]'s address) tries web-1's port 80
/// [`KNOCKS`] times; `portwarden status` on web-1 counts exactly those SYNs on the quarantine
/// entry that closes 80 to it.
fn knock_and_count(n: &Narrator, s: &Scenario) -> Result<()> {
    s.add_attacker("web-1")?;
    let connected = s.knock(ATTACKER.into(), "web-1", 80, KNOCKS)?;
    n.say(&format!(
        "{ATTACKER} tries web-1:80 {KNOCKS} times: {} refused (the quarantine answers with a reset)",
        KNOCKS - connected
    ));
    if connected != 0 {
        return Err(format!(
            "the attacker connected to web-1:80 {connected} time(s)"
        ));
    }
    let args = s.policy_args();
    let mut argv: Vec<&str> = vec!["status"];
    argv.extend(args.iter().map(String::as_str));
    argv.extend(["--node", "web-1"]);
    let (code, out, err) = s.portwarden_on("web-1", &argv)?;
    print!("{out}{err}");
    argv.extend(["-o", "json"]);
    let (json_code, json, err) = s.portwarden_on("web-1", &argv)?;
    if code != 0 || json_code != 0 {
        return Err(format!("status failed (exit {code}/{json_code}): {err}"));
    }
    let counted = attack_source_packets(&json)?;
    n.say(&format!(
        "quarantine entry 1 (80/tcp closed to {ATTACKER}) counted {counted} packets: yes, still knocking"
    ));
    if counted != KNOCKS as u64 {
        return Err(format!(
            "status counted {counted} packets for the attack source, expected {KNOCKS}"
        ));
    }
    Ok(())
}

/// The packets `status -o json` counts for quarantine entry 1.
fn attack_source_packets(json: &str) -> Result<u64> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("status JSON: {e}"))?;
    v["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["policy"] == "quarantine" && e["entry"] == 1)
        .and_then(|e| e["packets"].as_u64())
        .ok_or_else(|| format!("status JSON has no packets for quarantine entry 1: {json}"))
}

fn demo(n: &Narrator, bin: PathBuf, root: PathBuf) -> Result<()> {
    n.step("The incident's quarantine expires by itself");
    let scratch =
        Scratch(std::env::temp_dir().join(format!("portwarden-demo-{}", std::process::id())));
    let policy_dir = incident_policies(n, &bin, &root, &scratch)?;

    n.step("Build a lab: web-1, web-2, db-1 and a scanner, in network namespaces");
    let mut s = Scenario::new(&bin, &root, &policy_dir)?;
    let nodes = NODES
        .iter()
        .map(|name| Ok(format!("{name}={}", s.address(name)?)))
        .collect::<Result<Vec<_>>>()?;
    n.say(&format!(
        "nodes {} · scanner {} (and {} on the bastion network) · no default route anywhere",
        nodes.join(" "),
        s.scanner().v4(),
        s.scanner()
            .ipv4
            .get(1)
            .map(|a| a.to_string())
            .unwrap_or_default()
    ));

    n.step("Start one agent per node on examples/ (refresh every 5 s)");
    s.start_agents(5)?;
    s.wait_converged(Duration::from_secs(20))?;
    n.say("every node applied its intent");

    n.step("portwarden verify (from the scanner)");
    let (code, out, err) = s.verify("table")?;
    print!("{out}{err}");
    if code != 0 {
        return Err(format!(
            "expected everything in sync (exit 0), got exit {code}"
        ));
    }

    n.step("Break things the way life does");
    s.insert_foreign_drop("web-1")?;
    n.say("web-1: a foreign tool inserts `iptables -I INPUT 1 -p tcp --dport 443 -j DROP`");
    s.stop_service("web-2", 80)?;
    n.say("web-2: the web server on port 80 stops");
    let rule = s.delete_own_rule("db-1")?;
    n.say(&format!("db-1: someone deletes portwarden's rule `{rule}`"));

    n.step("portwarden verify: drift, with causes (and the same as a page: --html FILE)");
    let page = report_page(&root)?;
    let page_arg = page.to_string_lossy().into_owned();
    let (code, out, err) = s.verify_with("table", &["--html", &page_arg])?;
    print!("{out}{err}");
    println!("(exit code {code})");
    if code != 2 {
        return Err(format!("expected drift (exit 2), got exit {code}"));
    }
    n.say(&format!(
        "the report of this scan as one HTML page (no script, nothing fetched): {}",
        page.display()
    ));

    n.step("Wait for the agents to repair rule drift (next refresh)");
    wait_for_repair(&s)?;
    n.say("the jump is back at INPUT position 1 on web-1 and the deleted rule is back on db-1");

    n.step("portwarden verify: only the genuine drift remains");
    let (code, out, err) = s.verify("table")?;
    print!("{out}{err}");
    println!("(exit code {code})");

    n.step("Is the attacker still knocking? portwarden status on web-1");
    knock_and_count(n, &s)?;

    n.step("Tear down the lab");
    drop(s);
    n.say(&format!(
        "done in {:.1}s",
        n.started.elapsed().as_secs_f64()
    ));
    Ok(())
}

fn main() -> ExitCode {
    let bin = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/release/portwarden"));
    let root = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let bin = if bin.is_absolute() {
        bin
    } else {
        root.join(bin)
    };
    let n = Narrator {
        color: std::io::stdout().is_terminal(),
        started: Instant::now(),
    };
    if let Err(e) = portwarden_lab::Lab::check_environment() {
        eprintln!("demo: cannot build a lab here: {e}\n(run `make demo` as root on Linux)");
        return ExitCode::from(1);
    }
    match demo(&n, bin, root) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::from(1)
        }
    }
}
