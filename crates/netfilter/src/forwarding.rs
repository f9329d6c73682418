//! Which ports of the node the `nat` table forwards: the DNAT rules reachable from
//! `PREROUTING` for packets to the node's own addresses (Docker-published ports, Kubernetes
//! NodePorts, CNI hostPorts), so `plan`, `explain`, the agent's inside view and `verify` can
//! name the forwarding behind a port ("8080/tcp is DNAT'ed by nat DOCKER#1 to
//! 172.17.0.2:80 (Docker-published)").
//!
//! Pure: [`forwards`] reads one family's parsed `iptables-save -t nat`. It walks the chains
//! from `PREROUTING`, following jumps, and keeps on each path what the rules demand of a
//! packet: the protocol (`-p`), the destination ports (`--dport`, `--dports`), and whether the
//! destination is the node's (`-m addrtype --dst-type LOCAL`, or `-d` one of the node's
//! addresses). A `DNAT` at the end of a path that a packet to a node address can take is a
//! [`Forward`]. What the walk cannot see (a `-d` it cannot parse, a match it does not know) is
//! treated as "may match", so a forward is never missed; the enforcement itself does not
//! depend on this analysis (see [`crate::render`]'s forward path), only the explanations do.

use std::net::IpAddr;

use ipnet::IpNet;
use portwarden_policy::{PortRange, Protocol};
use serde::Serialize;

use crate::place::Family;
use crate::save::{Ruleset, tokens};

/// Longest jump chain followed (kube-proxy's is 5 deep: SERVICES, NODEPORTS, EXT, SVC, SEP).
const MAX_DEPTH: usize = 12;

/// Who writes a forwarding rule, told by the chain names it passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Owner {
    /// Docker's `DOCKER` chain: `docker run -p`.
    Docker,
    /// kube-proxy's `KUBE-NODEPORTS` (or another `KUBE-` chain for node addresses).
    KubernetesNodePort,
    /// The CNI portmap plugin's `CNI-HOSTPORT-DNAT` / `CNI-DN-*`: a pod's hostPort.
    CniHostPort,
    /// Any other rule.
    Other,
}

impl Owner {
    /// The words `explain` uses: `Docker-published`, `Kubernetes NodePort`, ...
    pub fn describe(self) -> &'static str {
        match self {
            Owner::Docker => "Docker-published",
            Owner::KubernetesNodePort => "Kubernetes NodePort",
            Owner::CniHostPort => "CNI hostPort",
            Owner::Other => "DNAT rule",
        }
    }

    fn of(path: &[String]) -> Owner {
        if path.iter().any(|c| c.starts_with("KUBE-")) {
            Owner::KubernetesNodePort
        } else if path
            .iter()
            .any(|c| c.starts_with("CNI-HOSTPORT") || c.starts_with("CNI-DN-"))
        {
            Owner::CniHostPort
        } else if path.iter().any(|c| c == "DOCKER") {
            Owner::Docker
        } else {
            Owner::Other
        }
    }
}

/// A DNAT rule of the `nat` table that packets to one of the node's addresses can reach.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Forward {
    /// Family.
    pub family: Family,
    /// The protocol the path demands; `None`: any.
    #[serde(serialize_with = "ser_any_protocol")]
    pub protocol: Option<Protocol>,
    /// The original destination ports the path demands (nmap's view of the node); all ports
    /// when the path names none.
    #[serde(serialize_with = "ser_ranges")]
    pub ports: Vec<PortRange>,
    /// The chain of the `DNAT` rule.
    pub chain: String,
    /// Its position in the chain (1-based, as `iptables -L --line-numbers` counts).
    pub position: usize,
    /// The chains walked from `PREROUTING` to it, `PREROUTING` first, its own last.
    pub via: Vec<String>,
    /// The rule (`CHAIN#POSITION`) that chose the port, when it is not the `DNAT` rule itself
    /// (kube-proxy's `KUBE-NODEPORTS#1`).
    pub port_rule: Option<String>,
    /// Its `--to-destination`.
    pub to: String,
    /// Who wrote it.
    pub owner: Owner,
}

fn ser_any_protocol<S: serde::Serializer>(p: &Option<Protocol>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(p.map_or("any", Protocol::as_str))
}

fn ser_ranges<S: serde::Serializer>(r: &[PortRange], s: S) -> Result<S::Ok, S::Error> {
    let text: Vec<String> = r.iter().map(ToString::to_string).collect();
    s.serialize_str(&text.join(","))
}

impl Forward {
    /// Whether packets of `protocol` to `port` take this forward.
    pub fn covers(&self, protocol: Protocol, port: u16) -> bool {
        self.protocol.is_none_or(|p| p == protocol) && self.ports.iter().any(|r| r.contains(port))
    }

    /// Whether any port of `range` takes this forward.
    pub fn overlaps(&self, protocol: Protocol, range: PortRange) -> bool {
        self.protocol.is_none_or(|p| p == protocol) && self.ports.iter().any(|r| r.overlaps(&range))
    }

    /// "8080/tcp is DNAT'ed by nat DOCKER#1 to 172.17.0.2:80 (Docker-published); the policy
    /// is enforced on the forward path", for `port`/`protocol`.
    pub fn describe(&self, protocol: Protocol, port: impl std::fmt::Display) -> String {
        let via = self
            .port_rule
            .as_ref()
            .map(|r| format!(" (via nat {r})"))
            .unwrap_or_default();
        format!(
            "{port}/{protocol} is DNAT'ed by nat {}#{}{via} to {} ({}); the policy is enforced on \
             the forward path",
            self.chain,
            self.position,
            self.to,
            self.owner.describe()
        )
    }
}

/// A forward that carries ports an entry of the intent manages: what `plan` and `verify`
/// report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Managed {
    /// The forward.
    #[serde(flatten)]
    pub forward: Forward,
    /// The entry's protocol.
    #[serde(serialize_with = "crate::ser::ser_protocol")]
    pub managed_protocol: Protocol,
    /// The ports both the forward and the entry cover.
    #[serde(serialize_with = "crate::ser::ser_range")]
    pub managed_ports: PortRange,
    /// The entry's policy.
    pub policy: String,
    /// The entry (0-based).
    pub entry: usize,
    /// The state the entry asks for.
    #[serde(serialize_with = "crate::ser::ser_state")]
    pub state: portwarden_policy::State,
    /// [`Forward::describe`] for those ports.
    pub description: String,
}

/// The forwards that carry ports `intent` manages, one per (forward, entry) pair, in intent
/// order.
pub fn managed(forwards: &[Forward], intent: &portwarden_policy::NodeIntent) -> Vec<Managed> {
    let mut out = Vec::new();
    for rule in &intent.rules {
        for f in forwards.iter().filter(|f| {
            rule.source.is_none_or(|n| f.family.holds(&n)) && f.overlaps(rule.protocol, rule.ports)
        }) {
            for r in f.ports.iter().filter(|r| r.overlaps(&rule.ports)) {
                let both = PortRange {
                    start: r.start.max(rule.ports.start),
                    end: r.end.min(rule.ports.end),
                };
                out.push(Managed {
                    forward: f.clone(),
                    managed_protocol: rule.protocol,
                    managed_ports: both,
                    policy: rule.policy.to_string(),
                    entry: rule.entry,
                    state: rule.state,
                    description: f.describe(rule.protocol, both),
                });
            }
        }
    }
    out
}

/// What a path has demanded of a packet so far.
#[derive(Clone, Debug)]
struct Demand {
    protocol: Option<Protocol>,
    ports: Vec<PortRange>,
    /// The rule that last narrowed the ports, as `CHAIN#POSITION`.
    port_rule: Option<String>,
}

const ALL_PORTS: PortRange = PortRange {
    start: 0,
    end: u16::MAX,
};

fn intersect(a: &[PortRange], b: &[PortRange]) -> Vec<PortRange> {
    let mut out = Vec::new();
    for x in a {
        for y in b {
            let (start, end) = (x.start.max(y.start), x.end.min(y.end));
            if start <= end {
                out.push(PortRange { start, end });
            }
        }
    }
    out
}

fn parse_ports(list: &str) -> Option<Vec<PortRange>> {
    list.split(',')
        .map(|r| {
            let (a, b) = r.split_once(':').unwrap_or((r, r));
            let start: u16 = if a.is_empty() {
                Some(0)
            } else {
                a.parse().ok()
            }?;
            let end: u16 = if b.is_empty() {
                Some(u16::MAX)
            } else {
                b.parse().ok()
            }?;
            (start <= end).then_some(PortRange { start, end })
        })
        .collect()
}

/// What one rule demands, or `None` when no packet to a node address can match it.
fn rule_demand(spec: &[String], before: &Demand, node: &[IpAddr]) -> Option<Demand> {
    let mut d = before.clone();
    let mut i = 0;
    while i < spec.len() {
        let negated = spec[i] == "!";
        if negated {
            i += 1;
        }
        let (flag, value) = (
            spec.get(i).map_or("", String::as_str),
            spec.get(i + 1).map_or("", String::as_str),
        );
        match (flag, negated) {
            ("-p" | "--protocol", false) => {
                let p = match value {
                    "tcp" | "6" => Some(Protocol::Tcp),
                    "udp" | "17" => Some(Protocol::Udp),
                    _ => return None, // sctp, icmp, ...: none of the node's managed ports
                };
                if d.protocol.is_some_and(|have| Some(have) != p) {
                    return None;
                }
                d.protocol = p;
            }
            ("--dport" | "--destination-port" | "--dports" | "--destination-ports", false) => {
                if let Some(ports) = parse_ports(value) {
                    d.ports = intersect(&d.ports, &ports);
                    if d.ports.is_empty() {
                        return None;
                    }
                }
            }
            ("--dst-type", false) if !value.contains("LOCAL") => return None,
            ("--dst-type", true) if value == "LOCAL" => return None,
            ("-d" | "--destination", false) => {
                if let Ok(net) = value
                    .parse::<IpNet>()
                    .or_else(|_| value.parse::<IpAddr>().map(IpNet::from))
                    && !node.iter().any(|a| net.contains(a))
                {
                    return None;
                }
            }
            _ => {}
        }
        i += 1;
    }
    Some(d)
}

fn target(spec: &[String]) -> Option<&str> {
    spec.windows(2)
        .rev()
        .find(|w| matches!(w[0].as_str(), "-j" | "--jump" | "-g" | "--goto"))
        .map(|w| w[1].as_str())
}

fn value_of<'a>(spec: &'a [String], flag: &str) -> Option<&'a str> {
    spec.windows(2)
        .find(|w| w[0] == flag)
        .map(|w| w[1].as_str())
}

/// The DNAT rules of `nat` (one family's parsed `iptables-save -t nat`) that packets to one of
/// `node` (the node's addresses) can reach from `PREROUTING`, in walk order.
///
/// # Guarantees
/// Pure. A forward is listed once per distinct path constraint; loops in the chain graph end
/// the walk. Matches the walk does not understand never hide a forward (they count as
/// "may match").
pub fn forwards(nat: &Ruleset, family: Family, node: &[IpAddr]) -> Vec<Forward> {
    let Some(table) = nat.table("nat") else {
        return Vec::new();
    };
    let node: Vec<IpAddr> = node
        .iter()
        .copied()
        .filter(|a| a.is_ipv4() == (family == Family::Ipv4))
        .collect();
    let mut out = Vec::new();
    let start = Demand {
        protocol: None,
        ports: vec![ALL_PORTS],
        port_rule: None,
    };
    let mut path = vec!["PREROUTING".to_string()];
    walk(
        table,
        "PREROUTING",
        &start,
        &node,
        family,
        &mut path,
        &mut out,
    );
    out
}

fn walk(
    table: &crate::save::Table,
    chain: &str,
    demand: &Demand,
    node: &[IpAddr],
    family: Family,
    path: &mut Vec<String>,
    out: &mut Vec<Forward>,
) {
    let Some(c) = table.chain(chain) else {
        return;
    };
    for (i, rule) in c.rules.iter().enumerate() {
        let spec = tokens(&rule.spec);
        let Some(mut d) = rule_demand(&spec, demand, node) else {
            continue;
        };
        if d.ports != demand.ports {
            d.port_rule = Some(format!("{chain}#{}", i + 1));
        }
        match target(&spec) {
            Some("DNAT") => {
                let f = Forward {
                    family,
                    protocol: d.protocol,
                    ports: d.ports.clone(),
                    chain: chain.to_string(),
                    position: i + 1,
                    via: path.clone(),
                    port_rule: d
                        .port_rule
                        .clone()
                        .filter(|r| *r != format!("{chain}#{}", i + 1)),
                    to: value_of(&spec, "--to-destination")
                        .unwrap_or("(no --to-destination)")
                        .to_string(),
                    owner: Owner::of(path),
                };
                if !out.contains(&f) {
                    out.push(f);
                }
            }
            Some(next)
                if path.len() < MAX_DEPTH
                    && !path.iter().any(|p| p == next)
                    && table.chain(next).is_some() =>
            {
                path.push(next.to_string());
                walk(table, next, &d, node, family, path, out);
                // After a goto later rules see only what it did not match, which the walk
                // cannot tell: it keeps walking them (may match).
                path.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: [&str; 2] = ["10.213.0.11", "172.17.0.1"];

    fn node() -> Vec<IpAddr> {
        NODE.iter().map(|a| a.parse().unwrap()).collect()
    }

    /// Docker 20.10's nat table for `docker run -p 8080:80` and `-p 127.0.0.1:9000:90`.
    const DOCKER: &str = "*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A DOCKER -i docker0 -j RETURN
-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80
-A DOCKER -d 127.0.0.1/32 ! -i docker0 -p tcp -m tcp --dport 9000 -j DNAT --to-destination 172.17.0.2:90
-A DOCKER ! -i docker0 -p udp -m udp --dport 5353 -j DNAT --to-destination 172.17.0.2:53
COMMIT
";

    /// kube-proxy's iptables mode: a NodePort 30080 and a ClusterIP on the same service.
    const KUBE: &str = "*nat
:PREROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-EXT-ABC - [0:0]
:KUBE-SVC-ABC - [0:0]
:KUBE-SEP-XYZ - [0:0]
:KUBE-MARK-MASQ - [0:0]
-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A KUBE-SERVICES -d 10.96.0.20/32 -p tcp -m comment --comment \"default/web:http cluster IP\" -m tcp --dport 80 -j KUBE-SVC-ABC
-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-NODEPORTS -p tcp -m comment --comment \"default/web:http\" -m tcp --dport 30080 -j KUBE-EXT-ABC
-A KUBE-EXT-ABC -m comment --comment \"masquerade traffic for default/web:http external destinations\" -j KUBE-MARK-MASQ
-A KUBE-EXT-ABC -j KUBE-SVC-ABC
-A KUBE-SVC-ABC -m comment --comment \"default/web:http -> 10.244.1.5:8080\" -j KUBE-SEP-XYZ
-A KUBE-SEP-XYZ -s 10.244.1.5/32 -m comment --comment \"default/web:http\" -j KUBE-MARK-MASQ
-A KUBE-SEP-XYZ -p tcp -m comment --comment \"default/web:http\" -m tcp -j DNAT --to-destination 10.244.1.5:8080
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
COMMIT
";

    #[test]
    fn docker_published_ports_are_found_with_their_rule() {
        let rs = Ruleset::parse(DOCKER).unwrap();
        let f = forwards(&rs, Family::Ipv4, &node());
        assert_eq!(f.len(), 2, "{f:?}");
        assert_eq!(
            f[0].describe(Protocol::Tcp, 8080),
            "8080/tcp is DNAT'ed by nat DOCKER#2 to 172.17.0.2:80 (Docker-published); the \
             policy is enforced on the forward path"
        );
        assert!(f[0].covers(Protocol::Tcp, 8080) && !f[0].covers(Protocol::Udp, 8080));
        assert!(!f[0].covers(Protocol::Tcp, 8081));
        assert!(f[1].covers(Protocol::Udp, 5353) && f[1].owner == Owner::Docker);
        // 127.0.0.1:9000 is not a node address the network reaches
        assert!(f.iter().all(|f| !f.covers(Protocol::Tcp, 9000)));
    }

    #[test]
    fn a_node_port_is_found_through_kube_proxy_chains_and_a_cluster_ip_is_not() {
        let rs = Ruleset::parse(KUBE).unwrap();
        let f = forwards(&rs, Family::Ipv4, &node());
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].owner, Owner::KubernetesNodePort);
        assert_eq!(
            f[0].ports,
            [PortRange {
                start: 30080,
                end: 30080
            }]
        );
        assert_eq!(f[0].protocol, Some(Protocol::Tcp));
        assert_eq!((f[0].chain.as_str(), f[0].position), ("KUBE-SEP-XYZ", 2));
        assert_eq!(
            f[0].describe(Protocol::Tcp, 30080),
            "30080/tcp is DNAT'ed by nat KUBE-SEP-XYZ#2 (via nat KUBE-NODEPORTS#1) to \
             10.244.1.5:8080 (Kubernetes NodePort); the policy is enforced on the forward path"
        );
        assert!(
            !f[0].covers(Protocol::Tcp, 80),
            "the ClusterIP is not the node's"
        );
    }

    #[test]
    fn loops_and_unknown_matches_neither_hang_nor_hide() {
        let text = "*nat
:PREROUTING ACCEPT [0:0]
:A - [0:0]
:B - [0:0]
-A PREROUTING -j A
-A A -j B
-A B -j A
-A B -m weird --thing 1 -j DNAT --to-destination 10.0.0.9
COMMIT
";
        let f = forwards(&Ruleset::parse(text).unwrap(), Family::Ipv4, &node());
        assert_eq!(f.len(), 1);
        assert!(f[0].covers(Protocol::Udp, 1) && f[0].covers(Protocol::Tcp, 65535));
        assert!(forwards(&Ruleset::default(), Family::Ipv4, &node()).is_empty());
    }
}
