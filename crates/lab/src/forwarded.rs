//! Forwarded-port layouts written by hand into a lab node, in either iptables backend: the
//! rules kube-proxy's iptables mode (1.29+) writes for NodePort services, and the rules Docker
//! writes for published ports, each DNAT'ing to a [`Pod`] behind the node. Traffic to such a
//! port goes through nat `PREROUTING` and filter `FORWARD`, never `INPUT`.
//!
//! Both layouts are rendered as `iptables-restore` input ([`kube_proxy_rules`],
//! [`docker_style_rules`]) and written with `iptables-restore --noflush` /
//! `ip6tables-restore --noflush` of the chosen [`Backend`] inside the node's namespace. Both
//! set the node's filter `FORWARD` policy to `DROP`, as Docker (and most distributions'
//! firewalls) do, so only the layout's own `ACCEPT` rules let the forwarded traffic through.
//!
//! # kube-proxy (NodePort, `externalTrafficPolicy: Cluster`, one endpoint: the pod)
//!
//! The shapes are those of kube-proxy's `proxier.go` (1.29+) and its `proxier_test.go`
//! expectations: the jump rules kube-proxy prepends (`-I ... 1`, in its order) to `INPUT`,
//! `FORWARD`, `OUTPUT`, nat `PREROUTING`, `OUTPUT` and `POSTROUTING`; `KUBE-SERVICES` with the
//! cluster-IP rule and, last, `-m addrtype --dst-type LOCAL -j KUBE-NODEPORTS`;
//! `KUBE-NODEPORTS` -> `KUBE-EXT-<hash>` (`KUBE-MARK-MASQ`, then `KUBE-SVC-<hash>`) ->
//! `KUBE-SEP-<hash>` (`-j DNAT --to-destination POD:PORT`); `KUBE-MARK-MASQ`
//! (`--or-mark 0x4000`), `KUBE-POSTROUTING` (masquerade marked traffic) and in filter
//! `KUBE-FORWARD` (drop INVALID, accept mark `0x4000/0x4000`, accept RELATED,ESTABLISHED).
//! Chain hashes are kube-proxy's: the first 16 characters of base32(sha256(`ns/name:port` +
//! protocol [+ endpoint])).
//!
//! # Docker (published ports)
//!
//! What dockerd 20.10 writes for `-p HOST:CONTAINER` (read off a real engine, see
//! [`DockerEngine`](crate::DockerEngine)), with the pod's veth in the place of `docker0`: nat
//! `PREROUTING -m addrtype --dst-type LOCAL -j DOCKER`, `DOCKER ! -i IF -p tcp --dport HOST -j
//! DNAT --to-destination POD:CONTAINER`; filter `FORWARD -j DOCKER-USER` (`DOCKER-USER -j
//! RETURN`), `DOCKER-ISOLATION-STAGE-1/2`, `FORWARD -o IF -m conntrack --ctstate
//! RELATED,ESTABLISHED -j ACCEPT`, `FORWARD -o IF -j DOCKER`, `DOCKER -d POD ! -i IF -o IF -p tcp
//! --dport CONTAINER -j ACCEPT`. Both families alike (dockerd 20.10 has no `DOCKER-USER` for
//! IPv6; later versions do, and so does this layout).

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};

use crate::{LabError, Netns, Pod, PortMap, Protocol};

/// An iptables backend: which `iptables-*-restore` writes a layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `iptables-nft` (nf_tables; Debian's default, and what dockerd uses here).
    Nft,
    /// `iptables-legacy` (the x_tables kernel interface).
    Legacy,
}

impl Backend {
    /// The restore program for a family: `iptables-nft-restore`, `ip6tables-legacy-restore`...
    pub fn restore(self, ipv6: bool) -> &'static str {
        match (self, ipv6) {
            (Backend::Nft, false) => "iptables-nft-restore",
            (Backend::Nft, true) => "ip6tables-nft-restore",
            (Backend::Legacy, false) => "iptables-legacy-restore",
            (Backend::Legacy, true) => "ip6tables-legacy-restore",
        }
    }

    /// The save program for a family: `iptables-nft-save`...
    pub fn save(self, ipv6: bool) -> &'static str {
        match (self, ipv6) {
            (Backend::Nft, false) => "iptables-nft-save",
            (Backend::Nft, true) => "ip6tables-nft-save",
            (Backend::Legacy, false) => "iptables-legacy-save",
            (Backend::Legacy, true) => "ip6tables-legacy-save",
        }
    }

    /// The iptables program for a family: `iptables-nft`, `ip6tables-legacy`...
    pub fn iptables(self, ipv6: bool) -> &'static str {
        match (self, ipv6) {
            (Backend::Nft, false) => "iptables-nft",
            (Backend::Nft, true) => "ip6tables-nft",
            (Backend::Legacy, false) => "iptables-legacy",
            (Backend::Legacy, true) => "ip6tables-legacy",
        }
    }
}

/// A NodePort service with one port, whose one endpoint is the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePort {
    /// The service's Kubernetes namespace (`default`).
    pub namespace: String,
    /// The service's name.
    pub name: String,
    /// The service port's name (`http`, `dns`...).
    pub port_name: String,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The service (cluster IP) port.
    pub port: u16,
    /// The node port (30000-32767 in a real cluster).
    pub node_port: u16,
    /// The pod's port.
    pub target_port: u16,
}

impl NodePort {
    /// A service `default/NAME` with port `http` (TCP, service port 80).
    pub fn tcp(name: &str, node_port: u16, target_port: u16) -> NodePort {
        NodePort {
            namespace: "default".into(),
            name: name.into(),
            port_name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80,
            node_port,
            target_port,
        }
    }

    /// A service `default/NAME` with port `dns` (UDP, service port 53).
    pub fn udp(name: &str, node_port: u16, target_port: u16) -> NodePort {
        NodePort {
            namespace: "default".into(),
            name: name.into(),
            port_name: "dns".into(),
            protocol: Protocol::Udp,
            port: 53,
            node_port,
            target_port,
        }
    }

    /// `ns/name:port`, kube-proxy's `ServicePortName.String()`.
    pub fn service_port_name(&self) -> String {
        format!("{}/{}:{}", self.namespace, self.name, self.port_name)
    }
}

/// What a layout wrote: the restore input of each family and the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenRules {
    /// The backend written to.
    pub backend: Backend,
    /// The IPv4 `iptables-restore --noflush` input.
    pub v4: String,
    /// The IPv6 `ip6tables-restore --noflush` input.
    pub v6: String,
}

const B32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

fn base32(bytes: &[u8]) -> String {
    let mut out = String::new();
    let (mut buf, mut bits) = (0u32, 0u32);
    for b in bytes {
        buf = (buf << 8) | u32::from(*b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(B32[((buf >> bits) & 31) as usize]));
        }
        buf &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(B32[((buf << (5 - bits)) & 31) as usize]));
    }
    out
}

/// kube-proxy's chain hash: the first 16 characters of base32(sha256(`input`)). SHA-256 comes
/// from coreutils' `sha256sum`.
///
/// # Errors
/// [`LabError::Spawn`] / [`LabError::CommandFailed`] when `sha256sum` cannot run.
pub fn kube_chain_hash(input: &str) -> Result<String, LabError> {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|source| LabError::Spawn {
            command: "sha256sum".into(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|source| LabError::Spawn {
                command: "sha256sum".into(),
                source,
            })?;
    }
    let out = child.wait_with_output().map_err(|source| LabError::Spawn {
        command: "sha256sum".into(),
        source,
    })?;
    let hex = String::from_utf8_lossy(&out.stdout);
    let hex = hex.split_whitespace().next().unwrap_or_default();
    let bytes: Option<Vec<u8>> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    match bytes {
        Some(b) if b.len() == 32 => Ok(base32(&b)[..16].to_string()),
        _ => Err(LabError::CommandFailed {
            command: "sha256sum".into(),
            status: out.status.to_string(),
            stderr: format!("unexpected output {hex:?}"),
        }),
    }
}

fn endpoint(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// The cluster IP of service `i` (0-based): `10.96.0.(10+i)` / `fd00:96::(10+i)` (the lab's
/// "service CIDR"; never routed anywhere).
pub fn cluster_ip(i: usize, ipv6: bool) -> IpAddr {
    let host = u8::try_from(10 + i).unwrap_or(254);
    if ipv6 {
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, u16::from(host)))
    } else {
        IpAddr::V4(Ipv4Addr::new(10, 96, 0, host))
    }
}

/// The `iptables-restore --noflush` input kube-proxy (iptables mode, 1.29+) would write for
/// `services` with the pod as their one endpoint, for one family (the shapes: `docs/lab.md`
/// and this module's source).
///
/// # Errors
/// As [`kube_chain_hash`].
pub fn kube_proxy_rules(pod: &Pod, services: &[NodePort], ipv6: bool) -> Result<String, LabError> {
    let (pod_ip, cluster_cidr) = if ipv6 {
        (IpAddr::V6(pod.v6()), "fd00:216::/32")
    } else {
        (IpAddr::V4(pod.v4()), "10.216.0.0/16")
    };
    Ok(kube_filter_table(ipv6) + &kube_nat_table(services, pod_ip, cluster_cidr, ipv6)?)
}

/// The jumps kube-proxy (and, for KUBE-FIREWALL, kubelet before it) prepend to the filter
/// table's built-in chains, in the order they are ensured: each lands at position 1, so the
/// last one ends up first. (chain, match, comment, target).
const KUBE_FILTER_JUMPS: [(&str, &str, &str, &str); 11] = [
    ("INPUT", "", "", "KUBE-FIREWALL"),
    ("OUTPUT", "", "", "KUBE-FIREWALL"),
    (
        "INPUT",
        "-m conntrack --ctstate NEW",
        "kubernetes externally-visible service portals",
        "KUBE-EXTERNAL-SERVICES",
    ),
    (
        "FORWARD",
        "-m conntrack --ctstate NEW",
        "kubernetes externally-visible service portals",
        "KUBE-EXTERNAL-SERVICES",
    ),
    (
        "INPUT",
        "",
        "kubernetes health check service ports",
        "KUBE-NODEPORTS",
    ),
    (
        "FORWARD",
        "-m conntrack --ctstate NEW",
        "kubernetes service portals",
        "KUBE-SERVICES",
    ),
    (
        "OUTPUT",
        "-m conntrack --ctstate NEW",
        "kubernetes service portals",
        "KUBE-SERVICES",
    ),
    ("FORWARD", "", "kubernetes forwarding rules", "KUBE-FORWARD"),
    (
        "INPUT",
        "-m conntrack --ctstate NEW",
        "kubernetes load balancer firewall",
        "KUBE-PROXY-FIREWALL",
    ),
    (
        "OUTPUT",
        "-m conntrack --ctstate NEW",
        "kubernetes load balancer firewall",
        "KUBE-PROXY-FIREWALL",
    ),
    (
        "FORWARD",
        "-m conntrack --ctstate NEW",
        "kubernetes load balancer firewall",
        "KUBE-PROXY-FIREWALL",
    ),
];

/// kube-proxy's (and kubelet's) filter table: its chains, the jumps to them, and the
/// firewall and forwarding rules.
fn kube_filter_table(ipv6: bool) -> String {
    let mut f = String::from("*filter\n");
    f.push_str(":FORWARD DROP [0:0]\n");
    for c in [
        "KUBE-NODEPORTS",
        "KUBE-SERVICES",
        "KUBE-EXTERNAL-SERVICES",
        "KUBE-FIREWALL",
        "KUBE-FORWARD",
        "KUBE-PROXY-FIREWALL",
    ] {
        f.push_str(&format!(":{c} - [0:0]\n"));
    }
    for (chain, extra, comment, target) in KUBE_FILTER_JUMPS {
        let mut line = format!("-I {chain} 1");
        if !extra.is_empty() {
            line.push(' ');
            line.push_str(extra);
        }
        if !comment.is_empty() {
            line.push_str(&format!(" -m comment --comment \"{comment}\""));
        }
        f.push_str(&format!("{line} -j {target}\n"));
    }
    if !ipv6 {
        f.push_str(
            "-A KUBE-FIREWALL -m comment --comment \"block incoming localnet connections\" \
             -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT \
             -j DROP\n",
        );
    }
    f.push_str("-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n");
    f.push_str(
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" \
         -m mark --mark 0x4000/0x4000 -j ACCEPT\n",
    );
    f.push_str(
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" \
         -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n",
    );
    f.push_str("COMMIT\n");
    f
}

/// kube-proxy's nat table for `services`, the pod their one endpoint.
fn kube_nat_table(
    services: &[NodePort],
    pod_ip: IpAddr,
    cluster_cidr: &str,
    ipv6: bool,
) -> Result<String, LabError> {
    let mut chains = vec![
        "KUBE-SERVICES".to_string(),
        "KUBE-NODEPORTS".to_string(),
        "KUBE-MARK-MASQ".to_string(),
        "KUBE-POSTROUTING".to_string(),
    ];
    let mut rules = Vec::new();
    let mut services_rules = Vec::new();
    let mut nodeports = Vec::new();
    for (i, s) in services.iter().enumerate() {
        let k = kube_service(i, s, pod_ip, cluster_cidr, ipv6)?;
        chains.extend(k.chains);
        services_rules.push(k.service);
        nodeports.push(k.nodeport);
        rules.extend(k.rules);
    }
    let mut n = String::from("*nat\n");
    for c in &chains {
        n.push_str(&format!(":{c} - [0:0]\n"));
    }
    for (chain, comment, target) in [
        ("OUTPUT", "kubernetes service portals", "KUBE-SERVICES"),
        ("PREROUTING", "kubernetes service portals", "KUBE-SERVICES"),
        (
            "POSTROUTING",
            "kubernetes postrouting rules",
            "KUBE-POSTROUTING",
        ),
    ] {
        n.push_str(&format!(
            "-I {chain} 1 -m comment --comment \"{comment}\" -j {target}\n"
        ));
    }
    for r in nodeports.iter().chain(&services_rules) {
        n.push_str(r);
        n.push('\n');
    }
    n.push_str(
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be \
         the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n",
    );
    n.push_str("-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n");
    n.push_str("-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n");
    n.push_str("-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000\n");
    n.push_str(
        "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" \
         -j MASQUERADE\n",
    );
    for r in &rules {
        n.push_str(r);
        n.push('\n');
    }
    n.push_str("COMMIT\n");
    Ok(n)
}

/// One NodePort service's nat state, as kube-proxy writes it: its chains, its
/// `KUBE-SERVICES` and `KUBE-NODEPORTS` rules and the rules of its own chains.
struct KubeService {
    chains: [String; 3],
    service: String,
    nodeport: String,
    rules: Vec<String>,
}

/// The nat state of service `i` with the pod (`pod_ip`, in `cluster_cidr`) its one endpoint.
fn kube_service(
    i: usize,
    s: &NodePort,
    pod_ip: IpAddr,
    cluster_cidr: &str,
    ipv6: bool,
) -> Result<KubeService, LabError> {
    let spn = s.service_port_name();
    let proto = s.protocol.as_str();
    let hash = kube_chain_hash(&format!("{spn}{proto}"))?;
    let ep = endpoint(pod_ip, s.target_port);
    let sep = format!(
        "KUBE-SEP-{}",
        kube_chain_hash(&format!("{spn}{proto}{ep}"))?
    );
    let svc = format!("KUBE-SVC-{hash}");
    let ext = format!("KUBE-EXT-{hash}");
    let cip = cluster_ip(i, ipv6);
    let service = format!(
        "-A KUBE-SERVICES -m comment --comment \"{spn} cluster IP\" -m {proto} -p {proto} \
         -d {cip} --dport {} -j {svc}",
        s.port
    );
    let nodeport = format!(
        "-A KUBE-NODEPORTS -m comment --comment {spn} -m {proto} -p {proto} --dport {} -j {ext}",
        s.node_port
    );
    let mut rules = Vec::new();
    rules.push(format!(
        "-A {ext} -m comment --comment \"masquerade traffic for {spn} external destinations\" \
         -j KUBE-MARK-MASQ"
    ));
    rules.push(format!("-A {ext} -j {svc}"));
    rules.push(format!(
        "-A {svc} -m comment --comment \"{spn} cluster IP\" -m {proto} -p {proto} -d {cip} \
         --dport {} ! -s {cluster_cidr} -j KUBE-MARK-MASQ",
        s.port
    ));
    rules.push(format!(
        "-A {svc} -m comment --comment \"{spn} -> {ep}\" -j {sep}"
    ));
    rules.push(format!(
        "-A {sep} -m comment --comment {spn} -s {pod_ip} -j KUBE-MARK-MASQ"
    ));
    rules.push(format!(
        "-A {sep} -m comment --comment {spn} -m {proto} -p {proto} -j DNAT --to-destination {ep}"
    ));
    Ok(KubeService {
        chains: [ext, svc, sep],
        service,
        nodeport,
        rules,
    })
}

/// The `iptables-restore --noflush` input Docker would write for `ports` published by a
/// container at the pod's address, for one family. See `docs/lab.md`.
pub fn docker_style_rules(pod: &Pod, ports: &[PortMap], ipv6: bool) -> String {
    let iface = pod.node_interface();
    let (pod_ip, host_len, net, lo) = if ipv6 {
        (IpAddr::V6(pod.v6()), 128, pod.network_v6(), "::1/128")
    } else {
        (IpAddr::V4(pod.v4()), 32, pod.network_v4(), "127.0.0.0/8")
    };
    let mut n = String::from("*nat\n:DOCKER - [0:0]\n");
    n.push_str("-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n");
    n.push_str(&format!(
        "-A OUTPUT ! -d {lo} -m addrtype --dst-type LOCAL -j DOCKER\n"
    ));
    n.push_str(&format!(
        "-A POSTROUTING -s {net} ! -o {iface} -j MASQUERADE\n"
    ));
    for p in ports {
        let proto = p.protocol.as_str();
        n.push_str(&format!(
            "-A POSTROUTING -s {pod_ip}/{host_len} -d {pod_ip}/{host_len} -p {proto} -m {proto} \
             --dport {} -j MASQUERADE\n",
            p.container_port
        ));
    }
    n.push_str(&format!("-A DOCKER -i {iface} -j RETURN\n"));
    for p in ports {
        let proto = p.protocol.as_str();
        n.push_str(&format!(
            "-A DOCKER ! -i {iface} -p {proto} -m {proto} --dport {} -j DNAT --to-destination {}\n",
            p.host_port,
            endpoint(pod_ip, p.container_port)
        ));
    }
    n.push_str("COMMIT\n");
    let mut f = String::from(
        "*filter\n:FORWARD DROP [0:0]\n:DOCKER - [0:0]\n:DOCKER-ISOLATION-STAGE-1 - [0:0]\n\
         :DOCKER-ISOLATION-STAGE-2 - [0:0]\n:DOCKER-USER - [0:0]\n",
    );
    f.push_str("-A FORWARD -j DOCKER-USER\n-A FORWARD -j DOCKER-ISOLATION-STAGE-1\n");
    f.push_str(&format!(
        "-A FORWARD -o {iface} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
         -A FORWARD -o {iface} -j DOCKER\n\
         -A FORWARD -i {iface} ! -o {iface} -j ACCEPT\n\
         -A FORWARD -i {iface} -o {iface} -j ACCEPT\n"
    ));
    for p in ports {
        let proto = p.protocol.as_str();
        f.push_str(&format!(
            "-A DOCKER -d {pod_ip}/{host_len} ! -i {iface} -o {iface} -p {proto} -m {proto} \
             --dport {} -j ACCEPT\n",
            p.container_port
        ));
    }
    f.push_str(&format!(
        "-A DOCKER-ISOLATION-STAGE-1 -i {iface} ! -o {iface} -j DOCKER-ISOLATION-STAGE-2\n\
         -A DOCKER-ISOLATION-STAGE-1 -j RETURN\n\
         -A DOCKER-ISOLATION-STAGE-2 -o {iface} -j DROP\n\
         -A DOCKER-ISOLATION-STAGE-2 -j RETURN\n\
         -A DOCKER-USER -j RETURN\nCOMMIT\n"
    ));
    n + &f
}

fn write_both(
    node: &Netns,
    backend: Backend,
    v4: String,
    v6: String,
) -> Result<WrittenRules, LabError> {
    node.exec_stdin(&[backend.restore(false), "-w", "--noflush"], &v4)?;
    node.exec_stdin(&[backend.restore(true), "-w", "--noflush"], &v6)?;
    Ok(WrittenRules { backend, v4, v6 })
}

/// Writes kube-proxy's NodePort rules for `services` (endpoint: `pod`) into the node `pod`
/// hangs off, both families, with `backend`.
///
/// # Errors
/// As [`kube_proxy_rules`]; [`LabError::CommandFailed`] (with the input) when a restore fails.
pub fn write_kube_proxy_rules(
    pod: &Pod,
    services: &[NodePort],
    backend: Backend,
) -> Result<WrittenRules, LabError> {
    let v4 = kube_proxy_rules(pod, services, false)?;
    let v6 = kube_proxy_rules(pod, services, true)?;
    write_both(pod.node(), backend, v4, v6)
}

/// Writes Docker's rules for `ports` published at the pod into the node `pod` hangs off, both
/// families, with `backend`.
///
/// # Errors
/// [`LabError::CommandFailed`] (with the input) when a restore fails.
pub fn write_docker_style_rules(
    pod: &Pod,
    ports: &[PortMap],
    backend: Backend,
) -> Result<WrittenRules, LabError> {
    let v4 = docker_style_rules(pod, ports, false);
    let v6 = docker_style_rules(pod, ports, true);
    write_both(pod.node(), backend, v4, v6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_matches_rfc4648() {
        assert_eq!(base32(b""), "");
        assert_eq!(base32(b"f"), "MY");
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
    }

    #[test]
    fn chain_hashes_are_kube_proxys() {
        if Command::new("sha256sum").arg("--version").output().is_err() {
            eprintln!("sha256sum missing; skipped");
            return;
        }
        // From kube-proxy's proxier_test.go.
        assert_eq!(
            kube_chain_hash("ns1/svc1:p80tcp").expect("hash"),
            "XPGD46QRK7WJZT7O"
        );
        assert_eq!(
            kube_chain_hash("ns1/svc1:p80tcp10.180.0.1:80").expect("hash"),
            "SXIVWICOYRO3J4NJ"
        );
    }
}
