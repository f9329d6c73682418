//! Turns scaling measurements into the report's "where it stops scaling and why" sentences.
//! Every claim is computed from the points (local exponents, throughput, CPU use, the share of
//! time spent in the kernel's own `iptables-restore`), so the text changes with the numbers.
//! Pure functions.

use crate::report::{Point, Series, count, ratio, secs};

/// `1,000 ports`, `1 node`: a size with its unit, singular for one.
fn sized(x: f64, unit: &str) -> String {
    let unit = if x == 1.0 {
        unit.strip_suffix('s').unwrap_or(unit)
    } else {
        unit
    };
    format!("{} {unit}", count(x))
}
use crate::stats::local_exponents;

/// A local exponent at or above this means each size step costs about proportionally: the
/// curve has left its fixed-cost regime and throughput no longer improves.
pub const LINEAR: f64 = 0.85;

/// The first size from which every further step is at least linear (throughput stops
/// improving), or `None` when throughput still improves at the largest size.
pub fn knee(points: &[(f64, f64)]) -> Option<f64> {
    let mut p = points.to_vec();
    p.sort_by(|a, b| a.0.total_cmp(&b.0));
    let locals = local_exponents(&p);
    let first = locals
        .iter()
        .enumerate()
        .rev()
        .take_while(|(_, e)| **e >= LINEAR)
        .last()
        .map(|(i, _)| i)?;
    Some(p[first].0)
}

fn measured(s: &Series) -> Vec<&Point> {
    let mut v: Vec<&Point> = s.points.iter().filter(|p| !p.extrapolated).collect();
    v.sort_by(|a, b| a.x.total_cmp(&b.x));
    v
}

fn fit_sentence(s: &Series, unit: &str) -> Option<String> {
    let f = s.fit()?;
    let pts = measured(s);
    let (lo, hi) = (pts.first()?, pts.last()?);
    Some(format!(
        "{}: time grows as {unit}^**{:.2}** (R² {:.3}) from {} to {} ({} → {}).",
        s.name,
        f.exponent,
        f.r_squared,
        count(lo.x),
        sized(hi.x, unit),
        secs(lo.y),
        secs(hi.y)
    ))
}

/// Analysis of a scan scaling study (`unit` = ports or nodes, `per` = ports per unit for the
/// throughput). `cores` is the machine's CPU count, `load` its 1-minute load average when the
/// run started (other processes competing for the cores).
pub fn scan(series: &[Series], unit: &str, per: f64, cores: usize, load: f64) -> Vec<String> {
    let mut out = Vec::new();
    let Some(ours) = series.iter().find(|s| s.ours) else {
        return out;
    };
    out.extend(fit_sentence(ours, unit));
    let pts = measured(ours);
    let (Some(lo), Some(hi)) = (pts.first(), pts.last()) else {
        return out;
    };
    let rate = |p: &Point| p.x * per / p.y;
    let xy: Vec<(f64, f64)> = pts.iter().map(|p| (p.x, p.y)).collect();
    let mut s = format!(
        "Throughput goes from {} ports/s at {} to {} ports/s at {}",
        count(rate(lo)),
        sized(lo.x, unit),
        count(rate(hi)),
        sized(hi.x, unit)
    );
    let used = hi.cpu.map(|c| c / hi.y);
    let cpu_bound = used.is_some_and(|u| u >= 0.7 * cores as f64);
    match knee(&xy) {
        Some(k) if k < hi.x => s.push_str(&format!(
            "; from {} on each step costs about proportionally (local exponent ≥ {LINEAR}), \
             so that is where it stops scaling on this machine",
            sized(k, unit)
        )),
        _ if cpu_bound => s.push_str(&format!(
            "; it still rises only because the fixed waits are shared by more ports: the scan \
             is already CPU-bound at {} (below), so about {} ports/s is this machine's ceiling \
             — that is where it stops scaling",
            sized(hi.x, unit),
            count(rate(hi))
        )),
        _ => s.push_str(
            "; it still improves at the largest size measured, so the limit lies beyond it",
        ),
    }
    s.push('.');
    out.push(s);
    if let Some(used) = used {
        out.extend(cpu_sentences(hi, unit, used, cpu_bound, cores, load));
    }
    out.extend(peer_sentences(series, &pts));
    out
}

/// What the scan's CPU use at its largest size says: CPU-bound or waiting, and a warning when
/// other processes kept the machine busy.
fn cpu_sentences(
    hi: &Point,
    unit: &str,
    used: f64,
    cpu_bound: bool,
    cores: usize,
    load: f64,
) -> Vec<String> {
    let why = if cpu_bound {
        format!(
            "At {} the scan keeps {used:.2} of the {cores} cores busy (user + system \
             CPU ÷ wall time): it is CPU-bound, and most of that is kernel work per probe \
             (the SYN's trip through the veth, the node's RST, the reply's receive), which no \
             scanner avoids; more cores or fewer probes are the only ways further.",
            sized(hi.x, unit)
        )
    } else {
        format!(
            "At {} the scan keeps only {used:.2} of the {cores} cores busy: it is not \
             CPU-bound; the rest is waiting — the timeouts before silent (filtered) ports are \
             called filtered (nmap's -T4 timing, retransmitted once) and the wait for late \
             replies at the end — a fixed cost that larger scans amortise.",
            sized(hi.x, unit)
        )
    };
    let mut out = vec![why];
    if load >= 0.75 * cores as f64 {
        out.push(format!(
            "Other processes kept this machine busy during the run (load average {load:.1} \
             on {cores} cores), so no scanner got all the cores; absolute times here are \
             pessimistic for every tool, the ratios less so."
        ));
    }
    out
}

/// Each peer's exponent and its time against portwarden's at every measured size.
fn peer_sentences(series: &[Series], pts: &[&Point]) -> Vec<String> {
    let mut out = Vec::new();
    for peer in series.iter().filter(|s| !s.ours) {
        let Some(f) = peer.fit() else { continue };
        let r: Vec<String> = measured(peer)
            .iter()
            .filter_map(|p| {
                let o = pts.iter().find(|o| o.x == p.x)?;
                Some(ratio(p.y / o.y))
            })
            .collect();
        out.push(format!(
            "{}: exponent {:.2}; its time ÷ portwarden's at each size: {}.",
            peer.name,
            f.exponent,
            r.join(", ")
        ));
    }
    out
}

/// Analysis of the apply scaling study. `kernel` names the series that replays portwarden's
/// own transactions with a bare `iptables-restore` (the floor for the same rules).
pub fn apply(series: &[Series], kernel: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Some(ours) = series.iter().find(|s| s.ours) else {
        return out;
    };
    out.extend(fit_sentence(ours, "entries"));
    let pts = measured(ours);
    let (Some(lo), Some(hi)) = (pts.first(), pts.last()) else {
        return out;
    };
    out.push(format!(
        "Per entry: {:.1} µs at {} entries, {:.1} µs at {} entries.",
        lo.y / lo.x * 1e6,
        count(lo.x),
        hi.y / hi.x * 1e6,
        count(hi.x)
    ));
    let xy: Vec<(f64, f64)> = pts.iter().map(|p| (p.x, p.y)).collect();
    let locals = local_exponents(&xy);
    let top = locals.last().copied();
    if let Some(k) = series.iter().find(|s| s.name == kernel) {
        let share = |p: &Point| {
            k.points
                .iter()
                .find(|q| q.x == p.x && !q.extrapolated)
                .map(|q| q.y / p.y)
        };
        if let (Some(a), Some(b)) = (share(lo), share(hi)) {
            let mut s = format!(
                "The bare `iptables-restore` of portwarden's own rules takes {:.0} % of its apply \
                 time at {} entries and {:.0} % at {}",
                a * 100.0,
                count(lo.x),
                b * 100.0,
                count(hi.x)
            );
            s.push_str(if b > a + 0.1 {
                ": as the ruleset grows the kernel's side (iptables-restore and the netfilter \
                 commit) takes over, so that is what limits it at the top of the range."
            } else {
                ": the rest — loading and compiling the YAML, reading the rules before and after \
                 — grows as fast as the kernel's part, so neither alone limits it."
            });
            out.push(s);
        }
    }
    match top {
        Some(e) if e > 1.15 => out.push(format!(
            "It stops scaling linearly at the top of the range: the last step's local exponent \
             is {e:.2} (cost per entry grows with the table)."
        )),
        Some(e) => out.push(format!(
            "No knee in the measured range: the last step's local exponent is {e:.2}, so up to \
             {} entries the cost per entry does not grow.",
            count(hi.x)
        )),
        None => {}
    }
    for peer in series.iter().filter(|s| !s.ours) {
        if let Some(f) = peer.fit() {
            let extra = if peer.points.iter().any(|p| p.extrapolated) {
                " (fitted on the measured sizes; larger sizes extrapolated with it)"
            } else {
                ""
            };
            out.push(format!("{}: exponent {:.2}{extra}.", peer.name, f.exponent));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, ours: bool, pts: &[(f64, f64, Option<f64>)]) -> Series {
        Series {
            name: name.into(),
            ours,
            points: pts
                .iter()
                .map(|&(x, y, cpu)| Point {
                    x,
                    y,
                    cpu,
                    extrapolated: false,
                })
                .collect(),
        }
    }

    #[test]
    fn knee_is_where_steps_turn_linear() {
        // fixed cost, then linear
        let p = [(1e3, 0.2), (4e3, 0.21), (16e3, 0.4), (64e3, 1.6)];
        assert_eq!(knee(&p), Some(16e3));
        // still sublinear at the top
        assert_eq!(knee(&[(1.0, 1.0), (2.0, 1.1), (4.0, 1.2)]), None);
        // linear everywhere
        assert_eq!(knee(&[(1.0, 1.0), (2.0, 2.0), (4.0, 4.0)]), Some(1.0));
    }

    #[test]
    fn scan_analysis_names_the_knee_and_the_cpu_bound() {
        let ours = series(
            "portwarden",
            true,
            &[
                (1e3, 0.2, Some(0.05)),
                (16e3, 0.4, Some(0.5)),
                (64e3, 1.6, Some(3.0)),
            ],
        );
        let nmap = series(
            "nmap -sS -T4",
            false,
            &[(1e3, 0.5, None), (64e3, 5.0, None)],
        );
        let text = scan(&[ours, nmap], "ports", 1.0, 2, 0.5).join("\n");
        assert!(!text.contains("Other processes"), "{text}");
        assert!(
            text.contains("portwarden: time grows as ports^**"),
            "{text}"
        );
        assert!(text.contains("from 16,000 ports on"), "{text}");
        assert!(text.contains("keeps 1.88 of the 2 cores busy"), "{text}");
        assert!(text.contains("CPU-bound"), "{text}");
        assert!(
            text.contains(
                "nmap -sS -T4: exponent 0.55; its time ÷ portwarden's at each size: 2.5x, 3.1x."
            ),
            "{text}"
        );
    }

    #[test]
    fn a_cpu_bound_scan_without_a_knee_has_reached_its_ceiling() {
        let ours = series(
            "portwarden",
            true,
            &[
                (1.0, 0.2, Some(0.1)),
                (10.0, 0.4, Some(0.5)),
                (100.0, 1.0, Some(1.6)),
            ],
        );
        let text = scan(&[ours], "nodes", 1000.0, 2, 0.5).join("\n");
        assert!(text.contains("already CPU-bound at 100 nodes"), "{text}");
        assert!(
            text.contains("about 100,000 ports/s is this machine's ceiling"),
            "{text}"
        );
        assert!(!text.contains("limit lies beyond"), "{text}");
    }

    #[test]
    fn scan_analysis_of_a_waiting_scan() {
        let ours = series(
            "portwarden",
            true,
            &[(1.0, 0.3, Some(0.01)), (10.0, 0.35, Some(0.05))],
        );
        let text = scan(&[ours], "nodes", 1000.0, 2, 4.0).join("\n");
        assert!(text.contains("load average 4.0 on 2 cores"), "{text}");
        assert!(text.contains("not CPU-bound"), "{text}");
        assert!(text.contains("the limit lies beyond it"), "{text}");
        assert!(text.contains("3,333 ports/s at 1 node to"), "{text}");
    }

    #[test]
    fn apply_analysis_reports_the_kernel_share_and_superlinearity() {
        let ours = series(
            "portwarden",
            true,
            &[(1e3, 0.05, None), (1e4, 0.3, None), (5e4, 2.5, None)],
        );
        let kernel = series(
            "restore own",
            false,
            &[(1e3, 0.01, None), (1e4, 0.1, None), (5e4, 1.5, None)],
        );
        let text = apply(&[ours, kernel], "restore own").join("\n");
        assert!(
            text.contains("takes 20 % of its apply time at 1,000 entries and 60 % at 50,000"),
            "{text}"
        );
        assert!(text.contains("the kernel's side"), "{text}");
        assert!(
            text.contains("last step's local exponent is 1.32"),
            "{text}"
        );
        assert!(
            text.contains("Per entry: 50.0 µs at 1,000 entries, 50.0 µs at 50,000 entries."),
            "{text}"
        );
    }
}
