//! The lab scenario behind `make demo` and the end-to-end tests.
//!
//! Three nodes — `web-1`, `web-2`, `db-1`, the nodes of `examples/inventory.yaml` at
//! 10.213.0.11-13 — and one scanner (10.213.1.2, with a second address 10.213.2.2 on the
//! bastion network), joined by a bridge; services listening on every node; one
//! `portwarden agent` per node on `examples/`; and the three ways life breaks things:
//! a foreign DROP inserted above portwarden's jump, a service that stops, and one of
//! portwarden's own rules deleted.
//!
//! Everything is torn down when the [`Scenario`] is dropped, also when a test fails.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use portwarden_lab::{Lab, LabChild, Netns, TcpListenerGuard, UdpListenerGuard};
use portwarden_reconcile::{DEFAULT_AGENT_PORT, InsideView, Report, inside};

/// The inventory names of the lab's nodes, in lab order.
pub const NODES: [&str; 3] = ["web-1", "web-2", "db-1"];

/// The host the seed story's attack came from: `examples/quarantine` closes port 80 to it.
pub const ATTACKER: Ipv4Addr = Ipv4Addr::new(172, 16, 7, 80);

/// The line of `examples/quarantine/quarantine.yaml` that ends the entry quarantining the
/// attack source; [`examples_with_expiry`] adds the expiry after it.
const ATTACK_SOURCE_REASON: &str = "      reason: \"INC-1234: attack source\"\n";

/// Copies `root/examples` to `dir` (recursively) with the quarantine of the attack source
/// given `expires: EXPIRES`, as an SRE would write it during an incident: the block lifts by
/// itself when the investigation's window ends. Returns the copy's path.
///
/// # Errors
/// A message naming the file that could not be read or written, or the quarantine file that
/// no longer has the entry this edits.
pub fn examples_with_expiry(root: &Path, dir: &Path, expires: &str) -> Result<PathBuf> {
    let copy = dir.join("examples");
    copy_tree(&root.join("examples"), &copy)?;
    let file = copy.join("quarantine/quarantine.yaml");
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    if !text.contains(ATTACK_SOURCE_REASON) {
        return Err(format!(
            "{}: the entry for the attack source (reason \"INC-1234: attack source\") is gone",
            file.display()
        ));
    }
    let edited = text.replace(
        ATTACK_SOURCE_REASON,
        &format!("{ATTACK_SOURCE_REASON}      expires: \"{expires}\"\n"),
    );
    std::fs::write(&file, edited).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(copy)
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    let entries = std::fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", from.display()))?;
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .map_err(|e| format!("{}: {e}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Errors of the scenario: a message that says which step failed.
pub type Result<T> = std::result::Result<T, String>;

fn lab_err(step: &str) -> impl Fn(portwarden_lab::LabError) -> String + '_ {
    move |e| format!("{step}: {e}")
}

/// Services of one node, kept alive while the guard is held.
pub struct Services {
    tcp: Vec<(u16, TcpListenerGuard)>,
    _udp: Vec<UdpListenerGuard>,
}

/// A running lab with agents.
pub struct Scenario {
    /// The lab (namespaces; removed on drop).
    pub lab: Lab,
    /// The `portwarden` binary.
    pub bin: PathBuf,
    /// The repository root (where `examples/` is).
    pub root: PathBuf,
    /// The policy directory the agents watch.
    pub policy_dir: PathBuf,
    services: Vec<Services>,
    agents: Vec<Option<LabChild>>,
}

/// TCP ports each node serves: the web tier everything its policies mention (the quarantined
/// 8080 service is still running — the policy hides it), the database PostgreSQL.
fn tcp_ports(node: &str) -> &'static [u16] {
    match node {
        "db-1" => &[5432],
        _ => &[80, 443, 8080, 9090],
    }
}

impl Scenario {
    /// Builds the lab and starts the services; agents are started by [`Scenario::start_agents`].
    ///
    /// `policy_dir` is what the agents watch (the tests pass a copy they can edit).
    pub fn new(bin: &Path, root: &Path, policy_dir: &Path) -> Result<Scenario> {
        let lab = Lab::builder("demo")
            .nodes(NODES.len())
            .scanners(1)
            .scanner_addresses(2)
            .build()
            .map_err(lab_err("building the lab"))?;
        let mut services = Vec::new();
        for (i, name) in NODES.iter().enumerate() {
            let ns = lab.node(i);
            let mut tcp = Vec::new();
            for &port in tcp_ports(name) {
                tcp.push((
                    port,
                    ns.tcp_listener(port)
                        .map_err(lab_err("starting a listener"))?,
                ));
            }
            let udp = vec![
                ns.udp_silent(161)
                    .map_err(lab_err("starting a UDP socket"))?,
            ];
            services.push(Services { tcp, _udp: udp });
        }
        Ok(Scenario {
            lab,
            bin: bin.to_path_buf(),
            root: root.to_path_buf(),
            policy_dir: policy_dir.to_path_buf(),
            services,
            agents: (0..NODES.len()).map(|_| None).collect(),
        })
    }

    /// The lab index of an inventory name.
    ///
    /// # Errors
    /// A message naming the unknown node and the lab's nodes.
    fn index(name: &str) -> Result<usize> {
        NODES.iter().position(|n| *n == name).ok_or_else(|| {
            format!(
                "unknown node {name:?}: the lab's nodes are {}",
                NODES.join(", ")
            )
        })
    }

    /// The node namespace of an inventory name.
    ///
    /// # Errors
    /// A message naming the unknown node and the lab's nodes.
    pub fn node(&self, name: &str) -> Result<&Netns> {
        Ok(self.lab.node(Self::index(name)?))
    }

    /// The scanner namespace.
    pub fn scanner(&self) -> &Netns {
        self.lab.scanner(0)
    }

    fn inventory(&self) -> PathBuf {
        self.root.join("examples/inventory.yaml")
    }

    /// Starts (or restarts) the agent of one node, with a short refresh so repairs are quick.
    pub fn start_agent(&mut self, name: &str, refresh_secs: u64) -> Result<()> {
        self.start_agent_with(name, refresh_secs, &[])
    }

    /// Starts (or restarts) the agent of one node with extra arguments.
    pub fn start_agent_with(
        &mut self,
        name: &str,
        refresh_secs: u64,
        extra: &[&str],
    ) -> Result<()> {
        let i = Self::index(name)?;
        self.agents[i] = None; // stop the old one first
        let bin = self.bin.to_string_lossy().into_owned();
        let policy_dir = self.policy_dir.to_string_lossy().into_owned();
        let inventory = self.inventory().to_string_lossy().into_owned();
        let refresh = refresh_secs.to_string();
        let mut args = vec![
            bin.as_str(),
            "agent",
            "--policy-dir",
            &policy_dir,
            "--inventory",
            &inventory,
            "--node",
            name,
            "--refresh",
            &refresh,
            "--log-format",
            "json",
        ];
        args.extend_from_slice(extra);
        let child = self
            .lab
            .node(i)
            .spawn(&args)
            .map_err(lab_err("starting an agent"))?;
        self.agents[i] = Some(child);
        Ok(())
    }

    /// Sends SIGTERM to a node's agent and waits for it to exit; returns its exit status.
    pub fn terminate_agent(&mut self, name: &str) -> Result<std::process::ExitStatus> {
        let i = Self::index(name)?;
        let child = self.agents[i].as_mut().ok_or("agent not running")?;
        let pid = child.id().to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .map_err(|e| format!("kill: {e}"))?;
        if !status.success() {
            return Err(format!("kill -TERM {pid} failed"));
        }
        let exit = child
            .wait()
            .map_err(|e| format!("waiting for the agent: {e}"))?;
        self.agents[i] = None;
        Ok(exit)
    }

    /// Starts every node's agent.
    pub fn start_agents(&mut self, refresh_secs: u64) -> Result<()> {
        for name in NODES {
            self.start_agent(name, refresh_secs)?;
        }
        Ok(())
    }

    /// The address of a node.
    ///
    /// # Errors
    /// A message naming the unknown node and the lab's nodes.
    pub fn address(&self, name: &str) -> Result<IpAddr> {
        Ok(IpAddr::V4(self.node(name)?.v4()))
    }

    /// A plain GET of `path` on a node's agent, from the scanner namespace.
    pub fn agent_get(&self, name: &str, path: &str) -> Result<String> {
        let addr = SocketAddr::new(self.address(name)?, DEFAULT_AGENT_PORT);
        let path = path.to_string();
        self.scanner()
            .run(move || inside::http_get(addr, &path, Duration::from_secs(2)))
            .map_err(lab_err("asking an agent"))?
    }

    /// Asks a node's agent for its inside view, from the scanner namespace.
    pub fn inside(&self, name: &str) -> Result<InsideView> {
        let addr = SocketAddr::new(self.address(name)?, DEFAULT_AGENT_PORT);
        self.scanner()
            .run(move || {
                inside::fetch_view(addr, Duration::from_millis(500)).map_err(|e| e.to_string())
            })
            .map_err(lab_err("asking an agent"))?
    }

    /// Waits until `ready(view)` holds for the node's agent, or the deadline passes.
    pub fn wait_for(
        &self,
        name: &str,
        deadline: Duration,
        ready: impl Fn(&InsideView) -> bool,
    ) -> Result<InsideView> {
        let until = Instant::now() + deadline;
        let mut last;
        loop {
            match self.inside(name) {
                Ok(v) if ready(&v) => return Ok(v),
                Ok(v) => last = format!("{v:?}"),
                Err(e) => last = e,
            }
            if Instant::now() >= until {
                return Err(format!(
                    "{name}: condition not reached within {deadline:?}; last: {last}"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every agent has applied its intent.
    pub fn wait_converged(&self, deadline: Duration) -> Result<()> {
        for name in NODES {
            self.wait_for(name, deadline, |v| v.converged && !v.policy_invalid)?;
        }
        Ok(())
    }

    /// Runs `portwarden verify` from the scanner; returns (exit code, stdout, stderr).
    pub fn verify(&self, format: &str) -> Result<(i32, String, String)> {
        self.verify_with(format, &[])
    }

    /// [`Scenario::verify`] with more arguments (`--html FILE`).
    pub fn verify_with(&self, format: &str, extra: &[&str]) -> Result<(i32, String, String)> {
        let bin = self.bin.to_string_lossy().into_owned();
        let policy_dir = self.policy_dir.to_string_lossy().into_owned();
        let inventory = self.inventory().to_string_lossy().into_owned();
        let mut args = vec![
            bin.as_str(),
            "verify",
            "-f",
            &policy_dir,
            "--inventory",
            &inventory,
            "-o",
            format,
        ];
        args.extend_from_slice(extra);
        let out = self
            .scanner()
            .output(&args)
            .map_err(lab_err("running verify"))?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// `verify -o json`, parsed.
    pub fn verify_report(&self) -> Result<(i32, Report)> {
        let (code, out, err) = self.verify("json")?;
        let report =
            serde_json::from_str(&out).map_err(|e| format!("verify JSON: {e}; stderr: {err}"))?;
        Ok((code, report))
    }

    /// Runs `portwarden ARGS` inside a node's namespace; returns (exit code, stdout, stderr).
    pub fn portwarden_on(&self, name: &str, args: &[&str]) -> Result<(i32, String, String)> {
        let bin = self.bin.to_string_lossy().into_owned();
        let mut argv = vec![bin.as_str()];
        argv.extend_from_slice(args);
        let out = self
            .node(name)?
            .output(&argv)
            .map_err(lab_err("running portwarden on a node"))?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// The policy directory and inventory as arguments: `-f DIR --inventory FILE`.
    pub fn policy_args(&self) -> [String; 4] {
        [
            "-f".into(),
            self.policy_dir.to_string_lossy().into_owned(),
            "--inventory".into(),
            self.inventory().to_string_lossy().into_owned(),
        ]
    }

    /// Gives the scanner the attacker's address ([`ATTACKER`]) as well, and `name` a route
    /// back to it over the lab bridge (no node has a default route).
    pub fn add_attacker(&self, name: &str) -> Result<()> {
        let host = format!("{ATTACKER}/32");
        self.scanner()
            .exec(&["ip", "addr", "add", &host, "dev", "eth0"])
            .map_err(lab_err("giving the scanner the attacker's address"))?;
        self.node(name)?
            .exec(&["ip", "route", "add", &host, "dev", "eth0"])
            .map_err(lab_err("routing the attacker's address"))?;
        Ok(())
    }

    /// `count` TCP connection attempts from `source` (an address of the scanner) to `port` of
    /// `name`, one SYN each; returns how many connected.
    pub fn knock(&self, source: IpAddr, name: &str, port: u16, count: usize) -> Result<usize> {
        let to = SocketAddr::new(self.address(name)?, port);
        let mut connected = 0;
        for _ in 0..count {
            if self
                .scanner()
                .tcp_knock(source, to, Duration::from_secs(2))
                .map_err(lab_err("knocking"))?
            {
                connected += 1;
            }
        }
        Ok(connected)
    }

    // --- the ways life breaks things ---

    /// A foreign tool inserts a DROP for 443 above portwarden's jump on `name`.
    pub fn insert_foreign_drop(&self, name: &str) -> Result<()> {
        self.node(name)?
            .iptables(&[
                "-I", "INPUT", "1", "-p", "tcp", "--dport", "443", "-j", "DROP",
            ])
            .map(|_| ())
            .map_err(lab_err("inserting a foreign rule"))
    }

    /// A new service starts listening on `port` of `name` (a backdoor, say).
    pub fn start_service(&mut self, name: &str, port: u16) -> Result<()> {
        let i = Self::index(name)?;
        let guard = self
            .lab
            .node(i)
            .tcp_listener(port)
            .map_err(lab_err("starting a listener"))?;
        self.services[i].tcp.push((port, guard));
        Ok(())
    }

    /// The service on `port` of `name` stops.
    ///
    /// # Errors
    /// A message naming the unknown node and the lab's nodes.
    pub fn stop_service(&mut self, name: &str, port: u16) -> Result<()> {
        let i = Self::index(name)?;
        self.services[i].tcp.retain(|(p, _)| *p != port);
        Ok(())
    }

    /// Someone deletes portwarden's DROP for 5432 on `name`.
    pub fn delete_own_rule(&self, name: &str) -> Result<String> {
        let ns = self.node(name)?;
        let save = ns
            .exec(&["iptables-save", "-t", "filter"])
            .map_err(lab_err("reading rules"))?;
        let rule = save
            .lines()
            .find(|l| {
                l.starts_with("-A PORTWARDEN")
                    && l.contains("--dport 5432")
                    && l.ends_with("-j DROP")
            })
            .ok_or("no portwarden DROP rule for 5432 found")?
            .to_string();
        let mut args: Vec<String> = vec!["-D".into()];
        args.extend(split_rule(&rule[3..]));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ns.iptables(&args).map_err(lab_err("deleting a rule"))?;
        Ok(rule)
    }
}

/// Splits an `iptables-save` rule into arguments, honouring double quotes.
fn split_rule(rule: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in rule.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_split_like_a_shell() {
        assert_eq!(
            split_rule(
                "PORTWARDEN-TCP-0 -p tcp -m comment --comment \"db entry 0: filtered\" -j DROP"
            ),
            vec![
                "PORTWARDEN-TCP-0",
                "-p",
                "tcp",
                "-m",
                "comment",
                "--comment",
                "db entry 0: filtered",
                "-j",
                "DROP"
            ]
        );
    }

    #[test]
    fn a_mistyped_node_is_an_error_naming_the_known_ones() {
        assert_eq!(Scenario::index("db-1"), Ok(2));
        assert_eq!(
            Scenario::index("web-3"),
            Err("unknown node \"web-3\": the lab's nodes are web-1, web-2, db-1".to_string())
        );
    }
}
