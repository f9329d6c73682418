//! Report serializers: JSON (CLI.md's `scan -o json` shape, every port listed), nmap-compatible
//! XML (`nmaprun`/`host`/`address`/`ports`/`port`/`state`, readable by `ndiff`), and a table for
//! people in nmap's layout with large groups of uninteresting ports collapsed into
//! "Not shown: N closed tcp ports (reset)".

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::model::{HostReport, PortState, ScanReport};

/// nmap hides a state (other than open) when more than this many ports share it.
const COLLAPSE_OVER: usize = 25;

/// `{"hosts": [{"address": "...", "ports": [{"port", "protocol", "state", "reason"}]}]}`,
/// compact, every scanned port listed.
pub fn to_json(report: &ScanReport) -> String {
    serde_json::to_string(report).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// As [`to_json`], indented.
pub fn to_json_pretty(report: &ScanReport) -> String {
    serde_json::to_string_pretty(report).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// States hidden in the output of one host, with their counts and reasons, as nmap groups
/// them; in nmap's order (largest group first).
/// A hidden state: the state, how many ports, and the ports per reason word.
type Hidden = (PortState, usize, BTreeMap<&'static str, Vec<u16>>);

fn collapsed(host: &HostReport) -> Vec<Hidden> {
    let mut by_state: BTreeMap<PortState, BTreeMap<&'static str, Vec<u16>>> = BTreeMap::new();
    for p in &host.ports {
        by_state
            .entry(p.state)
            .or_default()
            .entry(p.reason.as_str())
            .or_default()
            .push(p.port);
    }
    let mut out: Vec<_> = by_state
        .into_iter()
        .filter(|(s, _)| *s != PortState::Open)
        .map(|(s, r)| (s, r.values().map(Vec::len).sum::<usize>(), r))
        .filter(|(_, n, _)| *n > COLLAPSE_OVER)
        .collect();
    out.sort_by_key(|h| std::cmp::Reverse(h.1));
    out
}

fn compact(ports: &[u16]) -> String {
    crate::PortList::from_ports(ports.to_vec()).to_nmap_string()
}

/// nmap-compatible XML. `args` is recorded as the command line (`nmaprun args=`).
pub fn to_nmap_xml(report: &ScanReport, args: &str) -> String {
    let mut x = String::new();
    xml_header(&mut x, report, args);
    for h in &report.hosts {
        xml_host(&mut x, report, h);
    }
    xml_runstats(&mut x, report);
    x
}

/// The XML declaration, `<nmaprun>` and `<scaninfo>` (every port scanned on some host).
fn xml_header(x: &mut String, report: &ScanReport, args: &str) {
    let proto = report.kind.protocol().as_str();
    let start = report.started_unix;
    let mut services: Vec<u16> = report
        .hosts
        .iter()
        .flat_map(|h| h.ports.iter().map(|p| p.port))
        .collect();
    services.sort_unstable();
    services.dedup();
    let _ = writeln!(x, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
    let _ = writeln!(x, "<!DOCTYPE nmaprun>");
    let _ = writeln!(
        x,
        "<nmaprun scanner=\"portwarden\" args=\"{}\" start=\"{start}\" version=\"{}\" xmloutputversion=\"1.05\">",
        xml_escape(args),
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(
        x,
        "<scaninfo type=\"{}\" protocol=\"{proto}\" numservices=\"{}\" services=\"{}\"/>",
        report.kind.nmap_name(),
        services.len(),
        compact(&services)
    );
}

/// One `<host>`: status, address and ports.
fn xml_host(x: &mut String, report: &ScanReport, h: &HostReport) {
    let start = report.started_unix;
    let end = start + report.elapsed.as_secs();
    let addrtype = if h.address.is_ipv4() { "ipv4" } else { "ipv6" };
    let _ = writeln!(x, "<host starttime=\"{start}\" endtime=\"{end}\">");
    // A target that could not be scanned is "down" with nmap's reason word for a missing
    // route, and has no ports.
    let (state, reason) = if h.error.is_some() {
        ("down", "no-route")
    } else {
        ("up", "user-set")
    };
    let _ = writeln!(
        x,
        "<status state=\"{state}\" reason=\"{reason}\" reason_ttl=\"0\"/>"
    );
    let _ = writeln!(
        x,
        "<address addr=\"{}\" addrtype=\"{addrtype}\"/>",
        h.address
    );
    let _ = writeln!(x, "<hostnames>\n</hostnames>");
    xml_ports(x, report.kind.protocol().as_str(), h);
    let _ = writeln!(x, "</host>");
}

/// A host's `<ports>`: the collapsed states as `<extraports>`, then every other port.
fn xml_ports(x: &mut String, proto: &str, h: &HostReport) {
    let _ = writeln!(x, "<ports>");
    let hidden = collapsed(h);
    for (state, count, reasons) in &hidden {
        let _ = writeln!(x, "<extraports state=\"{state}\" count=\"{count}\">");
        for (reason, ports) in reasons {
            let _ = writeln!(
                x,
                "<extrareasons reason=\"{reason}\" count=\"{}\" proto=\"{proto}\" ports=\"{}\"/>",
                ports.len(),
                compact(ports)
            );
        }
        let _ = writeln!(x, "</extraports>");
    }
    for p in &h.ports {
        if hidden.iter().any(|(s, _, _)| *s == p.state) {
            continue;
        }
        let _ = writeln!(
            x,
            "<port protocol=\"{}\" portid=\"{}\"><state state=\"{}\" reason=\"{}\" reason_ttl=\"0\"/></port>",
            p.protocol, p.port, p.state, p.reason
        );
    }
    let _ = writeln!(x, "</ports>");
}

/// `<runstats>` and the end of `<nmaprun>`.
fn xml_runstats(x: &mut String, report: &ScanReport) {
    let end = report.started_unix + report.elapsed.as_secs();
    let n = report.hosts.len();
    let down = report.unscanned().count();
    let up = n - down;
    let _ = writeln!(
        x,
        "<runstats><finished time=\"{end}\" elapsed=\"{:.2}\" summary=\"portwarden done: {n} IP address(es) ({up} host(s) up) scanned in {:.2} seconds\" exit=\"success\"/><hosts up=\"{up}\" down=\"{down}\" total=\"{n}\"/>",
        report.elapsed.as_secs_f64(),
        report.elapsed.as_secs_f64()
    );
    let _ = writeln!(x, "</runstats>");
    let _ = writeln!(x, "</nmaprun>");
}

/// A table for people, one block per host, nmap's layout:
///
/// ```text
/// Scan report for 10.213.0.11
/// Not shown: 65534 closed tcp ports (reset)
/// PORT   STATE SERVICE
/// 22/tcp open  syn-ack
/// ```
pub fn to_table(report: &ScanReport) -> String {
    let proto = report.kind.protocol().as_str();
    let mut out = String::new();
    for (i, h) in report.hosts.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(out, "Scan report for {}", h.address);
        if let Some(e) = &h.error {
            let _ = writeln!(out, "Not scanned: {e}");
            continue;
        }
        let hidden = collapsed(h);
        if !hidden.is_empty() {
            let parts: Vec<String> = hidden
                .iter()
                .map(|(s, n, reasons)| {
                    let rs: Vec<String> = reasons
                        .iter()
                        .map(|(r, p)| {
                            if reasons.len() == 1 {
                                (*r).to_string()
                            } else {
                                format!("{} {r}", p.len())
                            }
                        })
                        .collect();
                    format!("{n} {s} {proto} ports ({})", rs.join(", "))
                })
                .collect();
            let _ = writeln!(out, "Not shown: {}", parts.join(", "));
        }
        let rows: Vec<(String, &str, &str)> = h
            .ports
            .iter()
            .filter(|p| !hidden.iter().any(|(s, _, _)| *s == p.state))
            .map(|p| {
                (
                    format!("{}/{}", p.port, p.protocol),
                    p.state.as_str(),
                    p.reason.as_str(),
                )
            })
            .collect();
        if rows.is_empty() {
            if hidden.is_empty() {
                let _ = writeln!(out, "No ports scanned.");
            } else {
                let _ = writeln!(out, "All {} scanned ports are hidden above.", h.ports.len());
            }
            continue;
        }
        let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(4).max(4);
        let w1 = rows.iter().map(|r| r.1.len()).max().unwrap_or(5).max(5);
        let _ = writeln!(out, "{:<w0$} {:<w1$} REASON", "PORT", "STATE");
        for (p, s, r) in rows {
            let _ = writeln!(out, "{p:<w0$} {s:<w1$} {r}");
        }
    }
    let _ = writeln!(
        out,
        "\n{} host(s) scanned in {:.2} seconds",
        report.hosts.len(),
        report.elapsed.as_secs_f64()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PortResult, Reason, ScanKind, ScanStats};
    use std::time::Duration;

    fn sample() -> ScanReport {
        let mut ports: Vec<PortResult> = (1..=100)
            .map(|p| PortResult {
                port: p,
                protocol: "tcp",
                state: PortState::Closed,
                reason: Reason::Reset,
            })
            .collect();
        ports[21].state = PortState::Open;
        ports[21].reason = Reason::SynAck;
        ports[79].state = PortState::Filtered;
        ports[79].reason = Reason::NoResponse;
        ScanReport {
            kind: ScanKind::Syn,
            hosts: vec![
                HostReport {
                    address: "10.213.0.11".parse().expect("ip"),
                    ports,
                    error: None,
                    rate_limit: None,
                },
                HostReport::unscanned(
                    "10.9.9.9".parse().expect("ip"),
                    "no route to 10.9.9.9: Network is unreachable (os error 101)".into(),
                ),
            ],
            started_unix: 1_700_000_000,
            elapsed: Duration::from_millis(120),
            stats: ScanStats::default(),
        }
    }

    #[test]
    fn json_has_cli_shape_and_every_port() {
        let v: serde_json::Value = serde_json::from_str(&to_json(&sample())).expect("json");
        let ports = &v["hosts"][0]["ports"];
        assert_eq!(v["hosts"][0]["address"], "10.213.0.11");
        assert_eq!(ports.as_array().map(Vec::len), Some(100));
        assert_eq!(ports[21]["port"], 22);
        assert_eq!(ports[21]["protocol"], "tcp");
        assert_eq!(ports[21]["state"], "open");
        assert_eq!(ports[21]["reason"], "syn-ack");
        assert_eq!(ports[0]["state"], "closed");
        assert_eq!(ports[0]["reason"], "reset");
    }

    #[test]
    fn table_collapses_closed_like_nmap() {
        let t = to_table(&sample());
        assert!(t.contains("Not shown: 98 closed tcp ports (reset)"), "{t}");
        assert!(t.contains("22/tcp open     syn-ack"), "{t}");
        assert!(t.contains("80/tcp filtered no-response"), "{t}");
    }

    #[test]
    fn an_unscanned_target_is_reported_in_every_format() {
        let r = sample();
        let v: serde_json::Value = serde_json::from_str(&to_json(&r)).expect("json");
        assert!(v["hosts"][0].get("error").is_none());
        assert_eq!(
            v["hosts"][1]["error"],
            "no route to 10.9.9.9: Network is unreachable (os error 101)"
        );
        assert_eq!(v["hosts"][1]["ports"].as_array().map(Vec::len), Some(0));
        let t = to_table(&r);
        assert!(
            t.contains("Scan report for 10.9.9.9\nNot scanned: no route to 10.9.9.9"),
            "{t}"
        );
        let x = to_nmap_xml(&r, "portwarden scan");
        assert!(
            x.contains("<status state=\"down\" reason=\"no-route\""),
            "{x}"
        );
        assert!(
            x.contains("<hosts up=\"1\" down=\"1\" total=\"2\"/>"),
            "{x}"
        );
    }

    #[test]
    fn xml_has_nmaprun_structure() {
        let x = to_nmap_xml(&sample(), "portwarden scan -p 1-100 10.213.0.11");
        assert!(x.contains("<nmaprun scanner=\"portwarden\""));
        assert!(x.contains("<address addr=\"10.213.0.11\" addrtype=\"ipv4\"/>"));
        assert!(x.contains("<extraports state=\"closed\" count=\"98\">"));
        assert!(x.contains(
            "<port protocol=\"tcp\" portid=\"22\"><state state=\"open\" reason=\"syn-ack\""
        ));
        assert!(!x.contains("portid=\"1\""));
    }
}
