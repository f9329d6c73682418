//! [`Lab`]: creating the namespaces, wiring them together, and removing them again.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::netns::run_checked;
use crate::{LabError, Netns};

/// Counts labs made by this process, so names are unique within it; the pid makes them unique
/// across processes.
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Configures a [`Lab`]; see [`Lab::builder`].
#[derive(Debug, Clone)]
pub struct LabBuilder {
    tag: String,
    nodes: usize,
    scanners: usize,
    scanner_addresses: usize,
}

impl LabBuilder {
    /// Number of node namespaces (default 1).
    pub fn nodes(mut self, n: usize) -> Self {
        self.nodes = n;
        self
    }

    /// Number of scanner namespaces (default 1).
    pub fn scanners(mut self, n: usize) -> Self {
        self.scanners = n;
        self
    }

    /// Number of addresses per scanner and family (default 1), so one scanner can probe from
    /// several source addresses.
    pub fn scanner_addresses(mut self, n: usize) -> Self {
        self.scanner_addresses = n;
        self
    }

    /// Creates the namespaces, links and addresses.
    ///
    /// # Guarantees
    /// Every namespace created before a failure is deleted again before this returns the error.
    /// No namespace has a default route.
    ///
    /// # Errors
    /// [`LabError::NotRoot`] / [`LabError::ToolMissing`] when the environment cannot run labs,
    /// [`LabError::Invalid`] for impossible sizes, [`LabError::CommandFailed`] when an `ip`
    /// command fails.
    pub fn build(self) -> Result<Lab, LabError> {
        Lab::check_environment()?;
        if self.nodes + self.scanners < 2 {
            return Err(LabError::Invalid(
                "a lab needs at least two namespaces (nodes + scanners)".into(),
            ));
        }
        if self.nodes > 200 || self.scanners > 200 || !(1..=200).contains(&self.scanner_addresses) {
            return Err(LabError::Invalid(
                "at most 200 nodes, 200 scanners and 1-200 addresses per scanner".into(),
            ));
        }
        // Remove what killed runs with this tag left behind (their processes are gone).
        let _ = cleanup_stale(&format!("pw-{}-", self.tag));
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("pw-{}-{}-{}", self.tag, std::process::id(), n);
        let mut lab = Lab {
            name: name.clone(),
            nodes: Vec::new(),
            scanners: Vec::new(),
            bridge: None,
            created: Vec::new(),
        };
        // On error, `lab` is dropped here and deletes whatever was created.
        lab.wire(&self)?;
        Ok(lab)
    }
}

/// A set of lab namespaces; deletes them all when dropped.
///
/// See the [crate documentation](crate) for addresses and an overview.
#[derive(Debug)]
pub struct Lab {
    name: String,
    nodes: Vec<Netns>,
    scanners: Vec<Netns>,
    bridge: Option<String>,
    created: Vec<String>,
}

fn v6(a: u8, b: u8) -> Ipv6Addr {
    // 10.213.a.b <-> fd00:213::a:b, digits read as hex so the numbers look alike.
    let hex = |x: u8| u16::from_str_radix(&x.to_string(), 16).unwrap_or(u16::from(x));
    Ipv6Addr::new(0xfd00, 0x213, 0, 0, 0, 0, hex(a), hex(b))
}

impl Lab {
    /// Starts configuring a lab whose namespace names start with `pw-TAG-PID-N`. `tag` is
    /// reduced to ASCII letters and digits.
    pub fn builder(tag: &str) -> LabBuilder {
        let tag: String = tag
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(16)
            .collect();
        LabBuilder {
            tag: if tag.is_empty() { "lab".into() } else { tag },
            nodes: 1,
            scanners: 1,
            scanner_addresses: 1,
        }
    }

    /// Checks that labs can run here: effective uid 0 and `ip` on PATH.
    ///
    /// # Errors
    /// [`LabError::NotRoot`] or [`LabError::ToolMissing`].
    pub fn check_environment() -> Result<(), LabError> {
        // SAFETY: geteuid(2) has no preconditions and cannot fail.
        let uid = unsafe { libc::geteuid() };
        if uid != 0 {
            return Err(LabError::NotRoot { uid });
        }
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join("ip").is_file()))
            .unwrap_or(false);
        if !found {
            return Err(LabError::ToolMissing {
                tool: "ip".into(),
                package: "iproute2".into(),
            });
        }
        Ok(())
    }

    /// The lab's name; every namespace name starts with it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Node `i`.
    ///
    /// # Panics
    /// When `i` is out of range (a test bug).
    pub fn node(&self, i: usize) -> &Netns {
        &self.nodes[i]
    }

    /// Scanner `i`.
    ///
    /// # Panics
    /// When `i` is out of range (a test bug).
    pub fn scanner(&self, i: usize) -> &Netns {
        &self.scanners[i]
    }

    /// All nodes.
    pub fn nodes(&self) -> &[Netns] {
        &self.nodes
    }

    /// All scanners.
    pub fn scanners(&self) -> &[Netns] {
        &self.scanners
    }

    /// The bridge namespace, when the lab has more than two namespaces.
    pub fn bridge(&self) -> Option<&str> {
        self.bridge.as_deref()
    }

    fn add_ns(&mut self, name: &str) -> Result<(), LabError> {
        run_checked("ip", &["netns", "add", name])?;
        self.created.push(name.to_string());
        let ns = Netns {
            name: name.to_string(),
            ipv4: vec![],
            ipv6: vec![],
        };
        // Addresses are usable at once (no duplicate address detection); there is no router.
        for (k, v) in [
            ("net.ipv6.conf.all.accept_dad", "0"),
            ("net.ipv6.conf.default.accept_dad", "0"),
            ("net.ipv6.conf.all.accept_ra", "0"),
            ("net.ipv6.conf.default.accept_ra", "0"),
        ] {
            ns.sysctl(k, v)?;
        }
        run_checked("ip", &["-n", name, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// Creates the namespaces, joins them and gives them their addresses.
    fn wire(&mut self, b: &LabBuilder) -> Result<(), LabError> {
        self.add_members(b)?;
        let members: Vec<Netns> = self.nodes.iter().chain(&self.scanners).cloned().collect();
        self.link(&members)?;
        address(&members)
    }

    /// Creates the node and scanner namespaces with the addresses they will get.
    fn add_members(&mut self, b: &LabBuilder) -> Result<(), LabError> {
        for i in 0..b.nodes {
            let name = format!("{}-n{i}", self.name);
            self.add_ns(&name)?;
            let host = u8::try_from(11 + i).unwrap_or(254);
            self.nodes.push(Netns {
                name,
                ipv4: vec![Ipv4Addr::new(10, 213, 0, host)],
                ipv6: vec![v6(0, host)],
            });
        }
        for i in 0..b.scanners {
            let name = format!("{}-s{i}", self.name);
            self.add_ns(&name)?;
            let host = u8::try_from(2 + i).unwrap_or(254);
            let nets = (0..b.scanner_addresses).map(|j| u8::try_from(1 + j).unwrap_or(254));
            self.scanners.push(Netns {
                name,
                ipv4: nets
                    .clone()
                    .map(|net| Ipv4Addr::new(10, 213, net, host))
                    .collect(),
                ipv6: nets.map(|net| v6(net, host)).collect(),
            });
        }
        Ok(())
    }

    /// Joins the members: one veth pair for two, a bridge namespace for more.
    fn link(&mut self, members: &[Netns]) -> Result<(), LabError> {
        if let [a, b] = members {
            // Created inside `a`, peer placed directly into `b`: nothing appears in the root
            // namespace, not even for a moment.
            run_checked(
                "ip",
                &[
                    "-n", &a.name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
                    "netns", &b.name,
                ],
            )?;
        } else {
            let br = format!("{}-br", self.name);
            self.add_ns(&br)?;
            self.bridge = Some(br.clone());
            run_checked("ip", &["-n", &br, "link", "add", "br0", "type", "bridge"])?;
            run_checked("ip", &["-n", &br, "link", "set", "br0", "up"])?;
            for (k, m) in members.iter().enumerate() {
                let port = format!("p{k}");
                run_checked(
                    "ip",
                    &[
                        "-n", &m.name, "link", "add", "eth0", "type", "veth", "peer", "name",
                        &port, "netns", &br,
                    ],
                )?;
                run_checked(
                    "ip",
                    &["-n", &br, "link", "set", &port, "master", "br0", "up"],
                )?;
            }
        }
        Ok(())
    }
}

/// Kills the processes inside `ns` and deletes it; errors are ignored (best effort).
pub(crate) fn delete_ns(ns: &str) {
    if let Ok(pids) = run_checked("ip", &["netns", "pids", ns]) {
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    let _ = run_checked("ip", &["netns", "delete", ns]);
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            delete_ns(ns);
        }
    }
}

/// Deletes lab namespaces whose name starts with `prefix` (which must start with `pw-`), has
/// the lab's shape `pw-TAG-PID-N-ROLE`, and whose creating process is no longer alive — what a killed test run left behind. Labs of
/// running processes (parallel tests) are left alone. Returns how many were deleted.
///
/// # Errors
/// [`LabError::Invalid`] when `prefix` does not start with `pw-`;
/// [`LabError::CommandFailed`] when `ip netns list` fails.
pub fn cleanup_stale(prefix: &str) -> Result<usize, LabError> {
    if !prefix.starts_with("pw-") {
        return Err(LabError::Invalid(format!(
            "cleanup_stale prefix {prefix:?} must start with \"pw-\""
        )));
    }
    let list = run_checked("ip", &["netns", "list"])?;
    let mut deleted = 0;
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if !name.starts_with(prefix) {
            continue;
        }
        // pw-TAG-PID-N-ROLE; names in any other shape are not ours and are left alone.
        let fields: Vec<&str> = name.split('-').collect();
        let (Some(pid), Some(_n)) = (
            fields.get(2).and_then(|p| p.parse::<u32>().ok()),
            fields.get(3).and_then(|n| n.parse::<u32>().ok()),
        ) else {
            continue;
        };
        if fields.len() != 5 {
            continue;
        }
        if !Path::new(&format!("/proc/{pid}")).exists() {
            delete_ns(name);
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// Puts each member's addresses on its `eth0` (IPv6 without duplicate address detection) and
/// brings the link up.
fn address(members: &[Netns]) -> Result<(), LabError> {
    for m in members {
        let v4 = m.ipv4.iter().map(|a| (format!("{a}/16"), None));
        let v6 = m.ipv6.iter().map(|a| (format!("{a}/64"), Some("nodad")));
        for (a, nodad) in v4.chain(v6) {
            let mut args = vec!["-n", &m.name, "addr", "add", &a, "dev", "eth0"];
            args.extend(nodad);
            run_checked("ip", &args)?;
        }
        run_checked("ip", &["-n", &m.name, "link", "set", "eth0", "up"])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v6_mirrors_v4_digits() {
        assert_eq!(v6(0, 11).to_string(), "fd00:213::11");
        assert_eq!(v6(1, 2).to_string(), "fd00:213::1:2");
    }

    #[test]
    fn builder_sanitises_tag() {
        let b = Lab::builder("a-b c!");
        assert_eq!(b.tag, "abc");
    }
}
