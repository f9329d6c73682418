//! Network-namespace labs for portwarden's tests, demo and benchmarks.
//!
//! A *lab* is a handful of Linux network namespaces — "nodes" that are scanned and
//! "scanners" that scan them — joined by veth pairs. Two namespaces are joined directly; three
//! or more are joined through a bridge that lives in its own bridge namespace. No namespace gets
//! a default route, so lab traffic can never leave the lab, and nothing in the root namespace
//! (its links, addresses or netfilter rules) is ever touched: every link is created *inside* a
//! lab namespace with `ip -n`.
//!
//! A key design decision is that cleanup is tied to ownership: [`Lab`] deletes its namespaces in
//! `Drop` (also while a failing test unwinds), [`LabChild`] kills its process in `Drop`, and the
//! listener guards stop their threads and close their sockets in `Drop`. Names embed the creating
//! process id, so parallel tests never collide and [`cleanup_stale`] can remove what a crashed
//! run left behind without touching labs of processes that are still alive.
//!
//! # API at a glance
//!
//! ```text
//! Lab::check_environment() -> Result<(), LabError>        root? `ip` present?
//! skip_unless_lab!()                                      early-return from a test when no lab
//! Lab::builder("tag").nodes(2).scanners(1)
//!     .scanner_addresses(2).build() -> Result<Lab, LabError>
//! lab.node(i) / lab.scanner(i) -> &Netns                  (also nodes(), scanners())
//! Netns { name, ipv4: Vec<Ipv4Addr>, ipv6: Vec<Ipv6Addr> } addresses on `eth0`
//! netns.exec(&["iptables", "-A", ...]) -> Result<String>  stdout, clear error on failure
//! netns.output(&[...]) -> Result<Output>                  no exit-status check
//! netns.spawn(&[...]) -> Result<LabChild>                 killed on drop
//! netns.iptables(&[...]) / netns.ip6tables(&[...])        pass-through, inside the namespace
//! netns.add_random_loss(0.05)                             iptables statistic DROP, v4 + v6
//! netns.add_netem_loss(5.0)                               tc netem on eth0
//! netns.sysctl("net.ipv4.icmp_ratelimit", "0")
//! netns.lift_icmp_rate_limits()                           no ICMP error limits (ask for it)
//! netns.tcp_listener(port) -> Result<TcpListenerGuard>    accepts and closes, v4 + v6
//! netns.udp_echo(port) / netns.udp_silent(port)           answering / silent UDP sockets
//! netns.run(|| ...) -> Result<T>                          closure on a thread inside the namespace
//! netns.enter_current_thread()                            setns(CLONE_NEWNET) for this thread
//! netns.add_native_nft_rule() / netns.nft_jumps("ip", C)  a rule iptables cannot print; jumps
//! netns.exec_stdin(&["nft", "-f", "-"], input)            a command fed on standard input
//! netns.http_get(addr, timeout) -> HttpResponse           GET / from inside the namespace
//! netns.udp_request(addr, b"x", timeout) -> Vec<u8>        one datagram, the first answer
//! netns.nmap_port_state(addr, 8080, Protocol::Tcp)        "open", "filtered"... (nmap -sS/-sU)
//! Nmap::new(&["-sS", "-T4"]).ports("1-1000").source(src).target(addr)
//!     .run(&netns) -> Result<NmapRun>                     { xml, ports: Vec<NmapPort> }
//! parse_nmap_xml(&xml) -> Result<Vec<NmapPort>>           (address, port, protocol, state, reason)
//! wait_for("what", timeout, || ...) -> Result<T>          poll a condition with a deadline
//! cleanup_stale("pw-") -> Result<usize>                   remove labs of dead processes
//! LockHolder::hold(path) -> Result<LockHolder>            a lock file held by flock(1) until drop
//! replay_corpus(target, min_files, check)                 fuzz/corpus/TARGET through a check
//!
//! // Forwarded (DNAT'ed) ports: see "Forwarded ports" below and docs/lab.md.
//! skip_unless_docker!()                                   also needs dockerd, docker, nsenter
//! DockerEngine::start(&node) -> Result<DockerEngine>      real dockerd in the node's netns
//! engine.import_base_image() -> Result<String>            rootfs tarball -> portwarden-base:lab
//! engine.run_web("web", &[PortMap::tcp(8080, 80), PortMap::udp(5353, 53)])
//!     -> Result<Container>                                { id, ipv4, ipv6, published, http_body }
//! engine.docker(&["ps"]) / engine.host() / engine.stop()  CLI, -H value, checked cleanup
//! rootfs_tarball() -> Result<PathBuf>                     scripts/image.sh --rootfs-only
//! Pod::attach(&node) -> Result<Pod>                       a pod namespace behind the node
//! pod.serve_http(80) -> Result<String>                    busybox httpd in the pod; its body
//! write_kube_proxy_rules(&pod, &[NodePort::tcp("web", 30080, 80)], Backend::Nft)
//!     -> Result<WrittenRules>                             kube-proxy 1.29+ NodePort rules, v4+v6
//! write_docker_style_rules(&pod, &[PortMap::tcp(8080, 80)], Backend::Legacy)
//! kube_proxy_rules / docker_style_rules (pod, .., ipv6)   the same, rendered only
//! node.add_firewalld_table(&[(Protocol::Tcp, 8081, Block::Reject)])  inet firewalld table
//! SubnetLease::claim() -> Result<SubnetLease>             a lab-unique 10.215/10.216.X.0/24
//! ```
//!
//! # Addresses
//!
//! All addresses live on `eth0` of their namespace, in `10.213.0.0/16` and `fd00:213::/64`:
//! node `i` has `10.213.0.(11+i)` / `fd00:213::(11+i)`, scanner `i` has `10.213.1.(2+i)` /
//! `fd00:213::1:(2+i)`, and its extra address `j` is `10.213.(1+j).(2+i)` /
//! `fd00:213::(1+j):(2+i)`. Every namespace has its own copy of these ranges, so parallel labs
//! can use the same numbers without seeing each other.
//!
//! # ICMP rate limits: the kernel's, unless a test asks
//!
//! A lab sets no ICMP sysctl: every namespace keeps what the kernel gives a fresh network
//! namespace, so a node rate-limits its ICMP errors (port-unreachable for closed UDP ports and
//! `REJECT --reject-with icmp-port-unreachable`, host-unreachable, admin-prohibited...) exactly
//! as a real, untuned node does:
//!
//! * IPv4: `net.ipv4.icmp_ratelimit=1000` — per peer address, a token bucket of about 6 errors
//!   that refills one per second (full again after about 6 s without errors to that peer);
//!   `net.ipv4.icmp_ratemask` says which types count (destination unreachable does).
//! * IPv6: `net.ipv6.icmp.ratelimit` (1000 ms on many kernels; 100 ms in a new namespace on
//!   the 6.18 kernel these labs were last measured on), scaled down by the route's prefix
//!   length: on the lab's /64 a quarter of it per peer, so IPv6 answers much faster than IPv4.
//! * Both families together: `net.ipv4.icmp_msgs_per_sec=1000` with `icmp_msgs_burst=50`, per
//!   namespace (so parallel labs do not share it).
//!
//! Each source address of a scanner is a separate peer with a bucket of its own; two tools that
//! must each start with a full bucket scan from different addresses
//! ([`LabBuilder::scanner_addresses`]). A test that wants every error answered says so with
//! [`Netns::lift_icmp_rate_limits`].
//!
//! # Forwarded ports
//!
//! Docker-published ports, NodePorts and hostPorts are DNAT'ed in nat `PREROUTING` and cross
//! filter `FORWARD`, never `INPUT`. Three real layouts put such ports on a node:
//!
//! * [`DockerEngine`]: the machine's `dockerd` run with `nsenter --net` in the node's namespace,
//!   everything of it (empty `--config-file`, data and exec roots, pidfile, API socket, log)
//!   under `/tmp/pwd-PID-N`, its bridge `10.215.X.1/24` and `fd00:215:X::/80` (IPv6 publishing
//!   with `--experimental --ip6tables`), fuse-overlayfs storage (vfs as a fallback); the image is
//!   the debootstrap rootfs tarball imported directly, never a registry; [`DockerEngine::run_web`]
//!   serves busybox httpd (TCP) and a Perl UDP echo on the published container ports. Drop
//!   removes containers, stops dockerd (SIGTERM, then SIGKILL), unmounts and removes its
//!   directory; its iptables rules die with the node's namespace.
//! * [`Pod`] + [`write_kube_proxy_rules`]: kube-proxy's (iptables mode, 1.29+) NodePort rules,
//!   DNAT to a pod namespace behind the node (`10.216.X.2`, `fd00:216:X::2`), both families,
//!   either [`Backend`].
//! * [`Pod`] + [`write_docker_style_rules`]: Docker's rules for published ports, by hand, both
//!   families and backends.
//!
//! And [`Netns::add_firewalld_table`] builds a firewalld-style `inet firewalld` table. Every
//! network number `X` is a [`SubnetLease`], so concurrent labs never share one. How to use:
//!
//! ```no_run
//! # use portwarden_lab::*;
//! # fn main() -> Result<(), LabError> {
//! let lab = Lab::builder("fwd").build()?;
//! let (node, scanner) = (lab.node(0), lab.scanner(0));
//! let mut pod = Pod::attach(node)?;
//! let body = pod.serve_http(80)?;
//! write_kube_proxy_rules(&pod, &[NodePort::tcp("web", 30080, 80)], Backend::Nft)?;
//! let to = std::net::SocketAddr::new(node.v4().into(), 30080);
//! assert_eq!(scanner.http_get(to, std::time::Duration::from_secs(5))?.body, body);
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! * `lab` — [`Lab`], [`LabBuilder`], topology, cleanup.
//! * `netns` — [`Netns`]: commands, threads and helpers inside one namespace.
//! * `listener` — TCP and UDP listeners bound inside a namespace.
//! * `lock` — [`LockHolder`]: a file lock held by another process.
//! * `nft` — native nftables state: a rule iptables cannot print, jumps counted with `nft`.
//! * `corpus` — [`replay_corpus`]: a fuzz corpus replayed as a test.
//! * `client` — [`Netns::http_get`], [`Netns::udp_request`], [`Netns::nmap_port_state`],
//!   [`wait_for`], [`Protocol`].
//! * `nmap` — [`Nmap`]: the one nmap runner of tests, demo and benchmarks, and
//!   [`parse_nmap_xml`]: nmap's XML as [`NmapPort`] rows ([`SAMPLE_NMAP_XML`] to test with).
//! * `docker` — [`DockerEngine`]: a real dockerd in a node; [`Container`], [`PortMap`].
//! * `pod` — [`Pod`]: a namespace behind a node, as a CNI plugin wires a pod.
//! * `forwarded` — kube-proxy's NodePort rules and Docker's rules, rendered and written.
//! * `firewalld` — a firewalld-style `inet firewalld` table.
//! * `subnet` — [`SubnetLease`]: lab-unique network numbers.
//! * `error` — [`LabError`].

mod client;
mod corpus;
mod docker;
mod error;
mod firewalld;
mod forwarded;
mod lab;
mod listener;
mod lock;
mod netns;
mod nft;
mod nmap;
mod pod;
mod subnet;

pub use client::{HttpResponse, Protocol, wait_for};
pub use corpus::replay_corpus;
pub use docker::{Container, DockerEngine, LAB_IMAGE, PortMap, Published, rootfs_tarball};
pub use error::LabError;
pub use firewalld::{Block, firewalld_ruleset};
pub use forwarded::{
    Backend, NodePort, WrittenRules, cluster_ip, docker_style_rules, kube_chain_hash,
    kube_proxy_rules, write_docker_style_rules, write_kube_proxy_rules,
};
pub use lab::{Lab, LabBuilder, cleanup_stale};
pub use listener::{TcpListenerGuard, UdpListenerGuard};
pub use lock::LockHolder;
pub use netns::{LIFTED_ICMP_LIMITS, LabChild, Netns};
pub use nmap::{Nmap, NmapPort, NmapRun, SAMPLE_NMAP_XML, parse_nmap_xml};
pub use pod::Pod;
pub use subnet::SubnetLease;

/// Returns early from the current test, with a message on standard error, when the machine
/// cannot run labs (not root, or `ip` missing).
///
/// When the environment variable `CI` or `PORTWARDEN_REQUIRE_LAB` is set, a missing lab is a
/// failure instead of a skip, so CI cannot silently pass without running lab tests.
#[macro_export]
macro_rules! skip_unless_lab {
    () => {
        if let Err(e) = $crate::Lab::check_environment() {
            if std::env::var_os("CI").is_some()
                || std::env::var_os("PORTWARDEN_REQUIRE_LAB").is_some()
            {
                panic!("lab required (CI or PORTWARDEN_REQUIRE_LAB set) but unavailable: {e}");
            }
            eprintln!("skipping lab test: {e}");
            return;
        }
    };
}

/// Like [`skip_unless_lab!`], and also returns early (with a message) when no lab Docker engine
/// can run here: `dockerd`, `docker` or `nsenter` missing
/// ([`DockerEngine::check_environment`]). Under `CI` or `PORTWARDEN_REQUIRE_LAB` that is a
/// failure, not a skip.
#[macro_export]
macro_rules! skip_unless_docker {
    () => {
        $crate::skip_unless_lab!();
        if let Err(e) = $crate::DockerEngine::check_environment() {
            if std::env::var_os("CI").is_some()
                || std::env::var_os("PORTWARDEN_REQUIRE_LAB").is_some()
            {
                panic!(
                    "lab Docker engine required (CI or PORTWARDEN_REQUIRE_LAB set) but \
                     unavailable: {e}"
                );
            }
            eprintln!("skipping Docker lab test: {e}");
            return;
        }
    };
}
