//! Test support for the netfilter lab tests: running the library inside a lab node, snapshots
//! of a node's rules, Docker/kube-proxy-like foreign state, and nmap from the scanner.
//!
//! Everything that touches netfilter runs inside a lab namespace: library calls through
//! [`inside`], which refuses to run on a thread that is still in the root namespace, and
//! commands through `ip netns exec` ([`Netns::exec`]).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use portwarden_lab::{Lab, Netns};
use portwarden_netfilter::{Backend, BackendChoice, Family, Netfilter, Options};
use portwarden_policy::NodeIntent;

/// Both backends, each test runs on both.
pub const BACKENDS: [Backend; 2] = [Backend::Nft, Backend::Legacy];

/// Panics unless the calling thread is in a different network namespace than the process's
/// main thread and PID 1: the last line of defence against touching the root namespace.
pub fn assert_not_root_netns() {
    let me = std::fs::read_link("/proc/thread-self/ns/net").expect("read own netns");
    // The main thread never enters a lab. PID 1 may be unreadable in a container.
    let main = std::fs::read_link("/proc/self/ns/net").expect("read the main thread's netns");
    assert_ne!(
        me, main,
        "refusing to touch netfilter outside a lab namespace"
    );
    if let Ok(init) = std::fs::read_link("/proc/1/ns/net") {
        assert_ne!(
            me, init,
            "refusing to touch netfilter outside a lab namespace"
        );
    }
}

/// Runs `f` on a thread inside `ns` (after checking it really is not the root namespace).
pub fn inside<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    ns.run(move || {
        assert_not_root_netns();
        f()
    })
    .expect("run inside the lab namespace")
}

/// A `Netfilter` for `backend`, both families, detected inside the namespace.
pub fn netfilter(backend: Backend) -> Netfilter {
    assert_not_root_netns();
    Netfilter::detect(&Options {
        backend: BackendChoice::Fixed(backend),
        ..Options::default()
    })
    .expect("detect netfilter")
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Compiles the intent of a node with `labels` from policy files (relative to the workspace
/// root).
pub fn intent(paths: &[&str], labels: &[(&str, &str)]) -> NodeIntent {
    let paths: Vec<PathBuf> = paths.iter().map(|p| root().join(p)).collect();
    let loaded = match portwarden_policy::load_paths(&paths) {
        Ok(l) => l,
        Err(diags) => panic!("fixtures must load: {diags:?}"),
    };
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    loaded.policies.compile(&labels)
}

/// A lab with one node and one scanner (two addresses per family). The node keeps the kernel's
/// ICMP rate limits (see portwarden_lab's crate documentation): the scans here send a handful
/// of UDP probes per source address, within the burst a fresh peer gets, and nmap retries what
/// the limit withholds.
pub fn lab(tag: &str) -> Lab {
    Lab::builder(tag)
        .nodes(1)
        .scanners(1)
        .scanner_addresses(2)
        .build()
        .expect("build lab")
}

/// The save tool of a backend and family, e.g. `ip6tables-legacy-save`.
pub fn tool(backend: Backend, family: Family, what: &str) -> String {
    format!("{}-{}-{what}", family.tool(), backend)
}

/// Full `iptables-save` output (all tables) of a node, with counters.
pub fn save(node: &Netns, backend: Backend, family: Family) -> String {
    node.exec(&[&tool(backend, family, "save"), "-c"])
        .expect("iptables-save in the lab")
}

/// Save output without `#` lines and counters: what "byte-identical" compares.
pub fn normalized(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let l = match l.strip_prefix('[') {
                Some(rest) => rest.split_once("] ").map_or(l, |(_, r)| r),
                None => l,
            };
            match l.rsplit_once(" [") {
                Some((head, _)) if l.starts_with(':') => head.to_string(),
                _ => l.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// [`normalized`] minus every line of portwarden's.
pub fn foreign_only(text: &str) -> String {
    normalized(text)
        .lines()
        .filter(|l| !l.contains("PORTWARDEN-"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs `iptables`/`ip6tables` of `backend` inside the node.
pub fn ipt(node: &Netns, backend: Backend, family: Family, args: &[&str]) {
    let prog = format!("{}-{}", family.tool(), backend);
    let mut v = vec![prog.as_str(), "-w"];
    v.extend_from_slice(args);
    node.exec(&v).expect("iptables in the lab");
}

/// Installs Docker- and kube-proxy-like rules (filter and nat, INPUT, FORWARD, user chains) in
/// both families.
pub fn install_foreign_state(node: &Netns, backend: Backend) {
    for family in Family::ALL {
        let (net, masq) = match family {
            Family::Ipv4 => ("192.0.2.0/24", "172.17.0.0/16"),
            Family::Ipv6 => ("2001:db8::/64", "fd17::/64"),
        };
        let run = |args: &[&str]| ipt(node, backend, family, args);
        run(&["-N", "DOCKER"]);
        run(&["-N", "DOCKER-USER"]);
        run(&["-A", "DOCKER-USER", "-j", "RETURN"]);
        run(&["-A", "FORWARD", "-j", "DOCKER-USER"]);
        run(&[
            "-A",
            "FORWARD",
            "-o",
            "docker0",
            "-m",
            "conntrack",
            "--ctstate",
            "RELATED,ESTABLISHED",
            "-j",
            "ACCEPT",
        ]);
        run(&["-A", "FORWARD", "-o", "docker0", "-j", "DOCKER"]);
        run(&["-t", "nat", "-N", "DOCKER"]);
        run(&[
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-s",
            masq,
            "!",
            "-o",
            "docker0",
            "-j",
            "MASQUERADE",
        ]);
        run(&[
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-m",
            "addrtype",
            "--dst-type",
            "LOCAL",
            "-j",
            "DOCKER",
        ]);
        run(&["-N", "KUBE-SERVICES"]);
        run(&["-N", "KUBE-FIREWALL"]);
        run(&[
            "-A",
            "KUBE-FIREWALL",
            "-m",
            "comment",
            "--comment",
            "kubernetes firewall for dropping marked packets",
            "-m",
            "mark",
            "--mark",
            "0x8000/0x8000",
            "-j",
            "DROP",
        ]);
        run(&[
            "-A",
            "INPUT",
            "-m",
            "conntrack",
            "--ctstate",
            "NEW",
            "-m",
            "comment",
            "--comment",
            "kubernetes service portals",
            "-j",
            "KUBE-SERVICES",
        ]);
        run(&["-A", "INPUT", "-j", "KUBE-FIREWALL"]);
        run(&[
            "-A", "INPUT", "-s", net, "-p", "udp", "--dport", "53", "-j", "ACCEPT",
        ]);
        run(&["-A", "OUTPUT", "-j", "KUBE-FIREWALL"]);
    }
}

/// Runs nmap from `scanner` against `target` (`-sS` or `-sU`), optionally from a given source
/// address, and returns port → state.
pub fn nmap(
    scanner: &Netns,
    scan: &str,
    target: std::net::IpAddr,
    ports: &str,
    source: Option<std::net::IpAddr>,
) -> BTreeMap<u16, String> {
    let mut run = portwarden_lab::Nmap::new(&[scan, "-T4", "--max-retries", "2"])
        .ports(ports)
        .target(target);
    if let Some(s) = source {
        run = run.source(s);
    }
    let run = run.run(scanner).expect("nmap in the scanner namespace");
    assert!(!run.ports.is_empty(), "nmap reported no ports: {}", run.xml);
    run.ports.into_iter().map(|p| (p.port, p.state)).collect()
}

/// The nmap word for an intended state on a port that has a listener.
pub fn nmap_word(
    state: portwarden_policy::State,
    protocol: portwarden_policy::Protocol,
) -> &'static str {
    use portwarden_policy::{Protocol, State};
    match (state, protocol) {
        (State::Open, _) => "open",
        (State::Closed, _) => "closed",
        (State::Filtered, Protocol::Tcp) => "filtered",
        (State::Filtered, Protocol::Udp) => "open|filtered",
    }
}

/// A UDP echo server on one exact address of `ns` (so replies leave from the address the
/// client sent to, as a stateful firewall requires), answering datagrams until dropped.
pub struct BoundEcho {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BoundEcho {
    /// Binds `addr` inside `ns` and starts echoing; returns once the socket is bound.
    pub fn start(ns: &Netns, addr: std::net::SocketAddr) -> BoundEcho {
        let (tx, rx) = std::sync::mpsc::channel();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let ns = ns.clone();
        let thread = std::thread::spawn(move || {
            ns.enter_current_thread().expect("enter scanner namespace");
            let sock = std::net::UdpSocket::bind(addr).expect("bind echo socket");
            sock.set_read_timeout(Some(std::time::Duration::from_millis(100)))
                .expect("timeout");
            tx.send(()).expect("signal bound");
            let mut buf = [0u8; 2048];
            while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(&buf[..n], from);
                }
            }
        });
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("echo socket bound");
        BoundEcho {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for BoundEcho {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
