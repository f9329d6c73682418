//! The `status` workload: `portwarden status` (release binary, a fresh process: load, compile,
//! detect the backend, read both families with counters, render, attribute, print JSON) on the
//! lab node with the steady-state policy applied, against the floor of anything that shows
//! per-rule counters: a bare `iptables-save -c` and `ip6tables-save -c`. Measured side by side,
//! run for run, on the apply lab's node (called from [`crate::apply`], inside its namespace).

use std::path::Path;

use anyhow::{Context, Result, ensure};

use crate::process::{Job, run_here};
use crate::report::{Row, Workload, count};
use crate::stats::median;
use crate::suite::{NODE, Settings, progress};

/// The goal: `status` within this many times the floor.
pub const GOAL: f64 = 2.0;

/// The runs of one status measurement.
#[derive(Default, Debug, Clone)]
pub struct Status {
    /// `portwarden status` wall times.
    pub ours: Vec<f64>,
    /// `iptables-save -c` + `ip6tables-save -c` wall times (run one after the other).
    pub floor: Vec<f64>,
    /// What the first run's JSON said: entries listed and in place.
    pub agree: String,
}

/// The `portwarden status -o json` job for the bench node.
fn status_job(bin: &str, policy: &Path, inventory: &Path) -> Job {
    Job::new(&[
        bin.to_string(),
        "status".into(),
        "-f".into(),
        policy.to_string_lossy().into_owned(),
        "--inventory".into(),
        inventory.to_string_lossy().into_owned(),
        "--node".into(),
        NODE.into(),
        "-o".into(),
        "json".into(),
    ])
}

/// Checks the first run's JSON: every one of the `n` entries listed, every one in place.
fn check(stdout: &str, n: usize) -> Result<String> {
    let v: serde_json::Value = serde_json::from_str(stdout).context("status -o json")?;
    let entries = v["entries"]
        .as_array()
        .context("status -o json: no entries")?;
    let in_place = entries.iter().filter(|e| e["in_place"] == true).count();
    ensure!(
        entries.len() == n && in_place == n,
        "status listed {} entries, {in_place} in place; expected {n}, all in place",
        entries.len()
    );
    Ok(format!("{} entries, all in place", count(n as f64)))
}

/// Measures `status` and the floor, alternating, on a node where `policy` (`n` entries) is
/// applied; `backend` is the backend the node uses (for the floor's tool names).
///
/// # Errors
/// When a program fails or the status output does not list every entry in place.
pub fn measure(
    s: &Settings,
    bin: &str,
    (policy, inventory): (&Path, &Path),
    n: usize,
    backend: &str,
) -> Result<Status> {
    progress(&format!("status: {} entries", count(n as f64)));
    let mut out = Status::default();
    // The floor is cheap, and a ratio against one run of it is noise: as many runs as ours.
    for i in 0..s.runs_ours {
        let m = run_here(&status_job(bin, policy, inventory))?.check("portwarden status")?;
        if i == 0 {
            out.agree = check(&m.stdout, n)?;
        }
        out.ours.push(m.wall);
        let mut wall = 0.0;
        for tool in ["iptables", "ip6tables"] {
            let m = run_here(&Job::new(&[format!("{tool}-{backend}-save"), "-c".into()]))?
                .check("iptables-save -c")?;
            wall += m.wall;
        }
        out.floor.push(wall);
    }
    Ok(out)
}

/// The workload table: `status` against the floor, and the ratio against the goal.
pub fn workload(s: &Settings, r: &Status, backend: &str) -> Workload {
    let steady = count(s.steady_entries as f64);
    let times = match (median(&r.ours), median(&r.floor)) {
        (Some(ours), Some(floor)) if floor > 0.0 => ours / floor,
        _ => f64::NAN,
    };
    Workload {
        title: format!("status on {steady} entries"),
        setup: format!(
            "The {steady}-entry policy applied (both families, the forward path included). A \
             fresh `portwarden status -o json` process (load and compile the policy, detect \
             the backend, read both families' filter tables with counters, render, attribute \
             every rule's counters to its entry, check each entry's rules, print) against the \
             floor of anything that shows per-rule counters: `iptables-save -c` and \
             `ip6tables-save -c`, one after the other. Run side by side, alternating."
        ),
        rows: vec![
            Row::timed(
                "portwarden status (fresh process)",
                &format!(
                    "portwarden status -f policy.yaml --inventory inventory.yaml --node {NODE} -o json"
                ),
                true,
                r.ours.clone(),
            )
            .agreement(r.agree.clone()),
            Row::timed(
                "iptables-save -c, both families",
                &format!("iptables-{backend}-save -c; ip6tables-{backend}-save -c"),
                false,
                r.floor.clone(),
            ),
        ],
        notes: vec![format!(
            "status took {times:.2}x the floor's median (goal: within {GOAL}x). Both reads \
             of status run concurrently; the floor's two run one after the other."
        )],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_wants_every_entry_in_place() {
        let ok = r#"{"entries": [{"in_place": true}, {"in_place": true}]}"#;
        assert_eq!(check(ok, 2).unwrap(), "2 entries, all in place");
        let many = format!(
            "{{\"entries\": [{}]}}",
            vec![r#"{"in_place": true}"#; 1500].join(",")
        );
        assert_eq!(check(&many, 1500).unwrap(), "1,500 entries, all in place");
        let missing = r#"{"entries": [{"in_place": true}, {"in_place": false}]}"#;
        assert!(check(missing, 2).is_err());
        assert!(check(ok, 3).is_err());
        assert!(check("not json", 1).is_err());
    }

    #[test]
    fn the_note_gives_the_ratio_to_the_floor() {
        let r = Status {
            ours: vec![0.3, 0.2, 0.4],
            floor: vec![0.2],
            agree: "x".into(),
        };
        let w = workload(&Settings::quick(), &r, "nft");
        assert!(
            w.notes[0].starts_with("status took 1.50x"),
            "{}",
            w.notes[0]
        );
        assert_eq!(w.rows.len(), 2);
        assert!(w.rows[0].ours && !w.rows[1].ours);
    }
}
