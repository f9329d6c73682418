//! The one nmap runner and nmap-output parser of the tests, the demo and the benchmarks:
//! [`Nmap`] builds an `nmap -n -Pn ... -oX -` command line and runs it inside a lab namespace,
//! [`parse_nmap_xml`] turns nmap's XML report into one [`NmapPort`] row per scanned port
//! (address, port, protocol, state, reason), listed `<port>`s and `<extraports>` groups alike.
//! The benchmarks run [`Nmap::argv`] under their own measuring process runner and parse its
//! output with the same parser.

use std::net::IpAddr;

use crate::{LabError, Netns, Protocol};

/// One nmap run from a lab namespace: `nmap -n -Pn FLAGS -p PORTS -oX -`, `-6` when a target
/// is IPv6, `-S SOURCE -e eth0` when a source address is given, then the targets.
#[derive(Debug, Clone, Default)]
pub struct Nmap {
    flags: Vec<String>,
    ports: String,
    source: Option<IpAddr>,
    targets: Vec<IpAddr>,
}

impl Nmap {
    /// A run with the scan's flags (`-sS`, `-sU`, `-sA`; timing such as `-T4`,
    /// `--max-retries 2`, `--reason`...), each argument its own element.
    pub fn new<S: AsRef<str>>(flags: &[S]) -> Nmap {
        Nmap {
            flags: flags.iter().map(|f| f.as_ref().to_string()).collect(),
            ..Nmap::default()
        }
    }

    /// The ports to scan, in nmap's `-p` syntax (`1-1000`, `22,80,8080`).
    #[must_use]
    pub fn ports(mut self, ports: &str) -> Nmap {
        self.ports = ports.to_string();
        self
    }

    /// Scans from `source` (`-S SOURCE -e eth0`): one of the namespace's own addresses.
    #[must_use]
    pub fn source(mut self, source: IpAddr) -> Nmap {
        self.source = Some(source);
        self
    }

    /// Adds a target.
    #[must_use]
    pub fn target(mut self, target: IpAddr) -> Nmap {
        self.targets.push(target);
        self
    }

    /// Adds targets, in order.
    #[must_use]
    pub fn targets(mut self, targets: &[IpAddr]) -> Nmap {
        self.targets.extend_from_slice(targets);
        self
    }

    /// The whole command line, `nmap` first.
    pub fn argv(&self) -> Vec<String> {
        let mut argv: Vec<String> = ["nmap", "-n", "-Pn"].map(String::from).to_vec();
        argv.extend(self.flags.iter().cloned());
        argv.extend(["-p", &self.ports, "-oX", "-"].map(String::from));
        if self.targets.iter().any(IpAddr::is_ipv6) && !self.flags.iter().any(|f| f == "-6") {
            argv.push("-6".into());
        }
        if let Some(s) = self.source {
            argv.extend([
                String::from("-S"),
                s.to_string(),
                "-e".into(),
                "eth0".into(),
            ]);
        }
        argv.extend(self.targets.iter().map(IpAddr::to_string));
        argv
    }

    /// Runs nmap inside `ns` and parses its report.
    ///
    /// # Errors
    /// As [`Netns::exec`] (nmap missing or failing), and as [`parse_nmap_xml`].
    pub fn run(&self, ns: &Netns) -> Result<NmapRun, LabError> {
        let argv = self.argv();
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        let xml = ns.exec(&args)?;
        let ports = parse_nmap_xml(&xml)?;
        Ok(NmapRun { xml, ports })
    }
}

/// What one [`Nmap::run`] printed, and its rows.
#[derive(Debug, Clone)]
pub struct NmapRun {
    /// nmap's XML report as printed (for `ndiff` and for failure messages).
    pub xml: String,
    /// One row per scanned port of every host, as [`parse_nmap_xml`] gives them.
    pub ports: Vec<NmapPort>,
}

impl NmapRun {
    /// The rows of one host.
    pub fn host(&self, address: IpAddr) -> impl Iterator<Item = &NmapPort> {
        self.ports.iter().filter(move |p| p.address == address)
    }
}

/// One scanned port in nmap's XML report, in nmap's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NmapPort {
    /// The host's address (its `<address addr=...>`).
    pub address: IpAddr,
    /// The port number.
    pub port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// `open`, `closed`, `filtered`, `open|filtered`, `unfiltered`...
    pub state: String,
    /// Why nmap says so: `syn-ack`, `reset`, `no-response`, `port-unreach`...
    pub reason: String,
}

/// Every scanned port in nmap's XML (`-oX -`): the listed `<port>`s and the ports of the
/// `<extraports>` groups (nmap lists those in `<extrareasons ports="..." proto="...">`), in
/// report order, for every `<host>` (not `<hosthint>`).
///
/// # Errors
/// [`LabError::Invalid`] when the text is not nmap XML of a finished run (`<runstats>`), so a
/// crashed or killed nmap is not taken for an empty result, or a port, protocol or port list
/// cannot be read.
pub fn parse_nmap_xml(xml: &str) -> Result<Vec<NmapPort>, LabError> {
    if !xml.contains("<nmaprun") || !xml.contains("<runstats>") {
        return Err(LabError::Invalid(format!(
            "not a finished nmap XML report (first 200 bytes: {:?})",
            xml.chars().take(200).collect::<String>()
        )));
    }
    let mut out = Vec::new();
    for host in elements(xml, "host") {
        let Some(address) = host
            .split("<address ")
            .skip(1)
            .find_map(|a| attr(a, "addr").and_then(|s| s.parse::<IpAddr>().ok()))
        else {
            continue;
        };
        listed_ports(host, address, &mut out)?;
        extra_ports(host, address, &mut out)?;
    }
    Ok(out)
}

/// The `<port>` elements of one host.
fn listed_ports(host: &str, address: IpAddr, out: &mut Vec<NmapPort>) -> Result<(), LabError> {
    for chunk in host.split("<port ").skip(1) {
        let (Some(p), Some(i)) = (attr(chunk, "portid"), chunk.find("<state ")) else {
            continue;
        };
        let state = &chunk[i..];
        out.push(NmapPort {
            address,
            port: number(p)?,
            protocol: protocol(attr(chunk, "protocol").unwrap_or_default())?,
            state: attr(state, "state").unwrap_or_default().to_string(),
            reason: attr(state, "reason").unwrap_or_default().to_string(),
        });
    }
    Ok(())
}

/// The ports of one host's `<extraports>` groups, each reason's port list in its
/// `<extrareasons>`.
fn extra_ports(host: &str, address: IpAddr, out: &mut Vec<NmapPort>) -> Result<(), LabError> {
    for chunk in host.split("<extraports ").skip(1) {
        let state = attr(chunk, "state").unwrap_or_default();
        let end = chunk.find("</extraports>").unwrap_or(chunk.len());
        for r in chunk[..end].split("<extrareasons ").skip(1) {
            let Some(ports) = attr(r, "ports") else {
                continue;
            };
            let proto = protocol(attr(r, "proto").unwrap_or("tcp"))?;
            for port in port_list(ports)? {
                out.push(NmapPort {
                    address,
                    port,
                    protocol: proto,
                    state: state.to_string(),
                    reason: attr(r, "reason").unwrap_or_default().to_string(),
                });
            }
        }
    }
    Ok(())
}

fn number(s: &str) -> Result<u16, LabError> {
    s.parse()
        .map_err(|e| LabError::Invalid(format!("nmap port number {s:?}: {e}")))
}

fn protocol(s: &str) -> Result<Protocol, LabError> {
    match s {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        other => Err(LabError::Invalid(format!("nmap protocol {other:?}"))),
    }
}

/// nmap's port list (`1-21,23,25-79`), expanded.
fn port_list(list: &str) -> Result<Vec<u16>, LabError> {
    let mut out = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let (lo, hi) = (number(lo)?, number(hi)?);
        if lo > hi {
            return Err(LabError::Invalid(format!("nmap port range {part:?}")));
        }
        out.extend(lo..=hi);
    }
    Ok(out)
}

/// The value of XML attribute `name` in `s`: the first `name="..."` that starts `s` or
/// follows white space (so `addr` does not match inside `addrtype`, nor `state` in `estate`).
fn attr<'a>(s: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("{name}=\"");
    let mut from = 0;
    while let Some(i) = s[from..].find(&key) {
        let at = from + i;
        if at == 0 || s[..at].ends_with(char::is_whitespace) {
            let start = at + key.len();
            let end = s[start..].find('"')? + start;
            return Some(&s[start..end]);
        }
        from = at + key.len();
    }
    None
}

/// The bodies of every `<tag ...>...</tag>` element in `xml` (not `<tagfoo>`: nmap has
/// `<hosthint>` and `<hostnames>` beside `<host>`).
fn elements<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = xml[from..].find(&open) {
        let start = from + i + open.len();
        from = start;
        if !xml[start..].starts_with([' ', '>', '\n', '\t']) {
            continue;
        }
        let end = xml[start..].find(&close).map_or(xml.len(), |e| start + e);
        out.push(&xml[start..end]);
        from = end;
    }
    out
}

/// A small finished nmap XML report for parser tests: host 10.213.0.11 with TCP 22 open, 70
/// closed and 1-69 in two `extraports` groups (64 filtered, the rest closed), host
/// 10.213.0.12 with UDP 53 open|filtered, and a `hosthint` (10.213.0.99) that is no host.
pub const SAMPLE_NMAP_XML: &str = r#"<?xml version="1.0"?>
<nmaprun scanner="nmap" args="nmap -n -Pn -sS -T4 -p1-70 -oX - 10.213.0.11 10.213.0.12">
<hosthint><status state="up"/><address addr="10.213.0.99" addrtype="ipv4"/></hosthint>
<host starttime="1" endtime="2"><status state="up" reason="arp-response"/>
<address addr="10.213.0.11" addrtype="ipv4"/><address addr="52:90:B6:22:20:A6" addrtype="mac"/>
<hostnames>
</hostnames>
<ports><extraports state="closed" count="67">
<extrareasons reason="reset" count="67" proto="tcp" ports="1-21,23-63,65-69"/>
</extraports>
<extraports state="filtered" count="1">
<extrareasons reason="no-response" count="1" proto="tcp" ports="64"/>
</extraports>
<port protocol="tcp" portid="22"><state state="open" reason="syn-ack" reason_ttl="64"/><service name="ssh" method="table" conf="3"/></port>
<port protocol="tcp" portid="70"><state state="closed" reason="reset" reason_ttl="64"/></port>
</ports></host>
<host><status state="up"/><address addr="10.213.0.12" addrtype="ipv4"/>
<ports><port protocol="udp" portid="53"><state state="open|filtered" reason="no-response"/></port></ports></host>
<runstats><finished time="2"/></runstats></nmaprun>"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    fn row<'a>(rows: &'a [NmapPort], addr: &str, port: u16) -> &'a NmapPort {
        rows.iter()
            .find(|r| r.address == a(addr) && r.port == port)
            .expect("row")
    }

    #[test]
    fn nmap_xml_lists_every_port_including_extraports() {
        let rows = parse_nmap_xml(SAMPLE_NMAP_XML).expect("parses");
        assert_eq!(rows.len(), 71);
        let r = row(&rows, "10.213.0.11", 22);
        assert_eq!((r.state.as_str(), r.reason.as_str()), ("open", "syn-ack"));
        assert_eq!(r.protocol, Protocol::Tcp);
        let r = row(&rows, "10.213.0.11", 64);
        assert_eq!(
            (r.state.as_str(), r.reason.as_str()),
            ("filtered", "no-response")
        );
        let r = row(&rows, "10.213.0.11", 1);
        assert_eq!((r.state.as_str(), r.reason.as_str()), ("closed", "reset"));
        assert_eq!(row(&rows, "10.213.0.11", 70).state, "closed");
        let r = row(&rows, "10.213.0.12", 53);
        assert_eq!(
            (r.state.as_str(), r.protocol),
            ("open|filtered", Protocol::Udp)
        );
        assert!(!rows.iter().any(|r| r.address == a("10.213.0.99")));
    }

    #[test]
    fn attributes_match_whole_names_only() {
        assert_eq!(
            attr(r#"addrtype="ipv4" addr="10.0.0.1""#, "addr"),
            Some("10.0.0.1")
        );
        assert_eq!(
            attr(r#"state="open" reason="syn-ack""#, "state"),
            Some("open")
        );
        assert_eq!(attr(r#"xstate="a""#, "state"), None);
    }

    #[test]
    fn unfinished_nmap_output_is_an_error() {
        assert!(parse_nmap_xml("").is_err());
        assert!(parse_nmap_xml("<nmaprun><host ").is_err());
    }

    #[test]
    fn port_lists_expand() {
        assert_eq!(port_list("1-3,5").expect("list"), [1, 2, 3, 5]);
        assert!(port_list("3-1").is_err());
        assert!(port_list("x").is_err());
    }

    #[test]
    fn command_line() {
        let v4 = Nmap::new(&["-sS", "-T4"])
            .ports("22,80")
            .source(a("10.213.1.2"))
            .target(a("10.213.0.11"));
        assert_eq!(
            v4.argv().join(" "),
            "nmap -n -Pn -sS -T4 -p 22,80 -oX - -S 10.213.1.2 -e eth0 10.213.0.11"
        );
        let v6 = Nmap::new(&["-sU"]).ports("53").target(a("fd00:213::11"));
        assert_eq!(
            v6.argv().join(" "),
            "nmap -n -Pn -sU -p 53 -oX - -6 fd00:213::11"
        );
    }
}
