//! Parsers for what the measured programs print: nmap's XML (rows from the lab's one nmap
//! parser), masscan's list output, `portwarden scan -o json`, and the two `/proc` files the
//! agent's CPU and memory are read from. Pure functions over text, so every format is
//! unit-tested without running anything.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use portwarden_lab::parse_nmap_xml;

/// Port states by (address, port), in nmap's words (`open`, `closed`, `filtered`, ...).
pub type States = BTreeMap<(IpAddr, u16), String>;

/// The state of every scanned port in nmap's XML (`-oX -`), by (address, port): the lab's
/// [`parse_nmap_xml`] rows (listed `<port>`s and `<extraports>` groups).
///
/// # Errors
/// A message when the text is not nmap XML with a finished run (`<runstats>`), so a crashed or
/// killed nmap is not taken for an empty result.
pub fn nmap_states(xml: &str) -> Result<States, String> {
    Ok(parse_nmap_xml(xml)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|r| ((r.address, r.port), r.state))
        .collect())
}

/// The states in `portwarden scan -o json` output (`{"hosts":[{"address","ports":[...]}]}`).
///
/// # Errors
/// A message when the text is not that JSON shape.
pub fn portwarden_states(json: &str) -> Result<States, String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("portwarden scan JSON: {e}"))?;
    let hosts = v["hosts"]
        .as_array()
        .ok_or("portwarden scan JSON has no \"hosts\" array")?;
    let mut out = States::new();
    for h in hosts {
        let addr: IpAddr = h["address"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("host without a valid address: {h}"))?;
        for p in h["ports"].as_array().into_iter().flatten() {
            let port = p["port"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| format!("port entry without a valid port: {p}"))?;
            let state = p["state"].as_str().unwrap_or_default().to_string();
            out.insert((addr, port), state);
        }
    }
    Ok(out)
}

/// What `portwarden scan -o json` says about targets that rate-limited their ICMP errors (each
/// host's `rate_limit`), one line per such host: `burst 6, 1000 ms per answer and source, 2
/// sources, confirmed in 16.2 s` (or `, N unconfirmed`). Empty when no host has one or the
/// text is not JSON.
pub fn portwarden_rate_limits(json: &str) -> Vec<String> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
        return Vec::new();
    };
    let num = |r: &serde_json::Value, k: &str| r[k].as_u64().unwrap_or(0);
    v["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h.get("rate_limit").filter(|r| r.is_object()))
        .map(|r| {
            let sources = num(r, "sources");
            let mut s = format!(
                "burst {}, {} ms per answer and source, {sources} {}, ",
                num(r, "burst"),
                num(r, "interval_ms"),
                if sources == 1 { "source" } else { "sources" }
            );
            match num(r, "unconfirmed") {
                0 => s.push_str(&format!(
                    "confirmed in {:.1} s",
                    num(r, "confirm_ms") as f64 / 1000.0
                )),
                n => s.push_str(&format!("{n} unconfirmed")),
            }
            s
        })
        .collect()
}

/// The open ports masscan reported in its list format (`-oL -`: `open tcp 22 10.0.0.1 TS`).
pub fn masscan_open(list: &str) -> BTreeSet<(IpAddr, u16)> {
    list.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                ["open", _, port, addr, ..] => Some((addr.parse().ok()?, port.parse().ok()?)),
                _ => None,
            }
        })
        .collect()
}

/// How two scans' states compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreement {
    /// Ports whose state differs, or that only one of the two reported.
    pub differ: usize,
    /// Ports either of them reported.
    pub total: usize,
}

impl Agreement {
    /// Compares `other` with `reference` port by port.
    pub fn of(reference: &States, other: &States) -> Agreement {
        let keys: BTreeSet<_> = reference.keys().chain(other.keys()).collect();
        Agreement {
            differ: keys
                .iter()
                .filter(|k| reference.get(k) != other.get(k))
                .count(),
            total: keys.len(),
        }
    }

    /// `identical (N ports)` or `K of N ports differ`.
    pub fn describe(&self) -> String {
        if self.differ == 0 {
            format!("identical ({} ports)", self.total)
        } else {
            format!("**{} of {} ports differ**", self.differ, self.total)
        }
    }
}

/// Counts of each state, for the report (`3 open, 1023 filtered, ...`), in a fixed order.
pub fn state_counts(states: &States) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for s in states.values() {
        *counts.entry(s.as_str()).or_default() += 1;
    }
    let order = [
        "open",
        "open|filtered",
        "filtered",
        "closed",
        "unfiltered",
        "closed|filtered",
    ];
    let mut parts: Vec<String> = order
        .iter()
        .filter_map(|s| counts.remove(s).map(|n| format!("{n} {s}")))
        .collect();
    parts.extend(counts.iter().map(|(s, n)| format!("{n} {s}")));
    parts.join(", ")
}

/// CPU time in clock ticks from `/proc/PID/stat`: user and system time of the process and of
/// the children it has waited for (fields 14-17: utime, stime, cutime, cstime), so the
/// `iptables-save` processes an agent runs count as its cost. Fields are counted after the
/// parenthesised command name, which may itself contain spaces and parentheses.
pub fn proc_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state), so field n is f[n - 3].
    (11..=14).try_fold(0u64, |sum, i| {
        let v: i64 = f.get(i)?.parse().ok()?;
        Some(sum + u64::try_from(v).ok()?)
    })
}

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`, ...), in kB.
pub fn proc_status_kb(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.split(':').next() == Some(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// The value of an unlabelled sample in Prometheus / OpenMetrics text (`name value`).
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        (n == name).then(|| v.split_whitespace().next()?.parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use portwarden_lab::SAMPLE_NMAP_XML as NMAP_XML;

    fn a(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn nmap_xml_lists_every_port_including_extraports() {
        let s = nmap_states(NMAP_XML).expect("parses");
        assert_eq!(s.len(), 71);
        assert_eq!(s[&(a("10.213.0.11"), 22)], "open");
        assert_eq!(s[&(a("10.213.0.11"), 64)], "filtered");
        assert_eq!(s[&(a("10.213.0.11"), 1)], "closed");
        assert_eq!(s[&(a("10.213.0.11"), 70)], "closed");
        assert_eq!(s[&(a("10.213.0.12"), 53)], "open|filtered");
        assert_eq!(
            state_counts(&s),
            "1 open, 1 open|filtered, 1 filtered, 68 closed"
        );
    }

    #[test]
    fn unfinished_nmap_output_is_an_error() {
        assert!(nmap_states("").is_err());
        assert!(nmap_states("<nmaprun><host ").is_err());
    }

    #[test]
    fn portwarden_json_rate_limits() {
        let json = r#"{"hosts":[{"address":"10.0.0.1","ports":[],"rate_limit":{"burst":6,"interval_ms":1000,"sources":2,"unconfirmed":0,"confirm_ms":16200}},{"address":"10.0.0.2","ports":[]},{"address":"10.0.0.3","ports":[],"rate_limit":{"burst":6,"interval_ms":1000,"sources":1,"unconfirmed":3,"confirm_ms":10000,"budget_ms":10000}}]}"#;
        assert_eq!(
            portwarden_rate_limits(json),
            [
                "burst 6, 1000 ms per answer and source, 2 sources, confirmed in 16.2 s",
                "burst 6, 1000 ms per answer and source, 1 source, 3 unconfirmed"
            ]
        );
        assert!(portwarden_rate_limits(r#"{"hosts":[{"ports":[]}]}"#).is_empty());
        assert!(portwarden_rate_limits("not json").is_empty());
    }

    #[test]
    fn portwarden_json_states() {
        let json = r#"{"hosts":[{"address":"10.213.0.11","ports":[
            {"port":22,"protocol":"tcp","state":"open","reason":"syn-ack"},
            {"port":64,"protocol":"tcp","state":"filtered","reason":"no-response"}]}]}"#;
        let s = portwarden_states(json).expect("parses");
        assert_eq!(s.len(), 2);
        assert_eq!(s[&(a("10.213.0.11"), 64)], "filtered");
        assert!(portwarden_states("{}").is_err());
        assert!(portwarden_states(r#"{"hosts":[{"address":"x"}]}"#).is_err());
        assert!(portwarden_states("not json").is_err());
    }

    #[test]
    fn masscan_list_output() {
        let out = "#masscan\nopen tcp 22 10.213.0.11 1795794561\nopen tcp 443 10.213.0.12 1795794562\n# end\n";
        let open = masscan_open(out);
        assert_eq!(open.len(), 2);
        assert!(open.contains(&(a("10.213.0.11"), 22)));
        assert!(masscan_open("#masscan\n# end\n").is_empty());
    }

    #[test]
    fn agreement_counts_differences_and_one_sided_ports() {
        let mut r = States::new();
        r.insert((a("10.0.0.1"), 1), "closed".into());
        r.insert((a("10.0.0.1"), 2), "open".into());
        let mut o = r.clone();
        assert_eq!(Agreement::of(&r, &o).describe(), "identical (2 ports)");
        o.insert((a("10.0.0.1"), 2), "filtered".into());
        o.insert((a("10.0.0.1"), 3), "closed".into());
        let ag = Agreement::of(&r, &o);
        assert_eq!(
            ag,
            Agreement {
                differ: 2,
                total: 3
            }
        );
        assert_eq!(ag.describe(), "**2 of 3 ports differ**");
    }

    #[test]
    fn proc_files() {
        let stat = "4242 (portwarden (x) y) S 1 4242 4242 0 -1 4194560 600 0 0 0 123 45 0 0 20 0 3 0 100 1000 200";
        assert_eq!(proc_stat_ticks(stat), Some(168));
        let with_children = "7 (a) S 1 7 7 0 -1 0 0 0 0 0 10 20 30 40 20 0 1 0";
        assert_eq!(proc_stat_ticks(with_children), Some(100));
        assert_eq!(proc_stat_ticks("garbage"), None);
        let status = "Name:\tportwarden\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(proc_status_kb(status, "VmRSS"), Some(10240));
        assert_eq!(proc_status_kb(status, "VmHWM"), Some(20480));
        assert_eq!(proc_status_kb(status, "VmSwap"), None);
    }

    #[test]
    fn prometheus_samples() {
        let text = "# HELP x y\nportwarden_reconcile_duration_seconds_sum 1.5\nportwarden_reconcile_duration_seconds_count 12\nportwarden_reconcile_duration_seconds_bucket{le=\"0.1\"} 3\n";
        assert_eq!(
            metric(text, "portwarden_reconcile_duration_seconds_count"),
            Some(12.0)
        );
        assert_eq!(
            metric(text, "portwarden_reconcile_duration_seconds_sum"),
            Some(1.5)
        );
        assert_eq!(metric(text, "portwarden_missing"), None);
    }
}
