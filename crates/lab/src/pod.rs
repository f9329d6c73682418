//! A "pod": a network namespace behind a lab node, wired to it by a veth pair the way a CNI
//! plugin wires a Kubernetes pod (or Docker a container), so the node can DNAT and forward
//! traffic to it. The scanner never sees the pod's addresses: it has no route to them.
//!
//! Addresses come from a [`SubnetLease`] `X`: the pod has `10.216.X.2/24` and
//! `fd00:216:X::2/64` on its `eth0`; the node has `10.216.X.1/24` and `fd00:216:X::1/64` on
//! its end of the pair, `pwpodX` (the connected routes are the node's routes to the pod). The
//! pod routes only the lab's range back through the node (`10.213.0.0/16`, `fd00:213::/64`),
//! never a default route, so a reply to a scanner whose address no rule masqueraded finds its
//! way and nothing else can leave. [`Pod::attach`] enables `net.ipv4.ip_forward` and
//! `net.ipv6.conf.all.forwarding` in the node's namespace (only there).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::client::wait_for;
use crate::netns::run_checked;
use crate::{LabChild, LabError, Netns, SubnetLease};

/// A pod namespace attached to a node; deleted (with its processes and the veth pair) on drop.
#[derive(Debug)]
pub struct Pod {
    ns: Netns,
    node: Netns,
    node_if: String,
    lease: SubnetLease,
    httpd: Vec<LabChild>,
    www: PathBuf,
}

impl Pod {
    /// Creates a pod namespace `NODE-NAMEpX` (the lab's name shape, so
    /// [`cleanup_stale`](crate::cleanup_stale) removes it after a crash), wires it to `node`
    /// and turns on forwarding in `node`.
    ///
    /// # Errors
    /// [`LabError::CommandFailed`] when an `ip` or `sysctl` command fails; everything created
    /// before the failure is removed again.
    pub fn attach(node: &Netns) -> Result<Pod, LabError> {
        let lease = SubnetLease::claim()?;
        let x = lease.index();
        let name = format!("{}p{x}", node.name);
        let [a, b, c, _] = lease.pod_v4().octets();
        let v6 = lease.pod_v6().segments();
        let pod_v6 = Ipv6Addr::new(v6[0], v6[1], v6[2], 0, 0, 0, 0, 2);
        let node_v6 = Ipv6Addr::new(v6[0], v6[1], v6[2], 0, 0, 0, 0, 1);
        let ns = Netns {
            name: name.clone(),
            ipv4: vec![Ipv4Addr::new(a, b, c, 2)],
            ipv6: vec![pod_v6],
        };
        run_checked("ip", &["netns", "add", &name])?;
        let pod = Pod {
            ns,
            node: node.clone(),
            node_if: format!("pwpod{x}"),
            lease,
            httpd: Vec::new(),
            www: PathBuf::from(format!("/tmp/pwp-{}-{x}", std::process::id())),
        };
        // On error, `pod` is dropped and deletes the namespace.
        pod.wire(Ipv4Addr::new(a, b, c, 1), node_v6)?;
        Ok(pod)
    }

    fn wire(&self, node_v4: Ipv4Addr, node_v6: Ipv6Addr) -> Result<(), LabError> {
        let p = self.ns.name.as_str();
        let n = self.node.name.as_str();
        for (k, v) in [
            ("net.ipv6.conf.all.accept_dad", "0"),
            ("net.ipv6.conf.default.accept_dad", "0"),
            ("net.ipv6.conf.all.accept_ra", "0"),
            ("net.ipv6.conf.default.accept_ra", "0"),
        ] {
            self.ns.sysctl(k, v)?;
        }
        run_checked("ip", &["-n", p, "link", "set", "lo", "up"])?;
        // Created in the pod, peer placed straight into the node: nothing in the root namespace.
        run_checked(
            "ip",
            &[
                "-n",
                p,
                "link",
                "add",
                "eth0",
                "type",
                "veth",
                "peer",
                "name",
                &self.node_if,
                "netns",
                n,
            ],
        )?;
        let pod_v4 = format!("{}/24", self.ns.v4());
        let pod_v6 = format!("{}/64", self.ns.v6());
        let gw4 = format!("{node_v4}/24");
        let gw6 = format!("{node_v6}/64");
        run_checked("ip", &["-n", p, "addr", "add", &pod_v4, "dev", "eth0"])?;
        run_checked(
            "ip",
            &["-n", p, "addr", "add", &pod_v6, "dev", "eth0", "nodad"],
        )?;
        run_checked("ip", &["-n", n, "addr", "add", &gw4, "dev", &self.node_if])?;
        run_checked(
            "ip",
            &["-n", n, "addr", "add", &gw6, "dev", &self.node_if, "nodad"],
        )?;
        run_checked("ip", &["-n", p, "link", "set", "eth0", "up"])?;
        run_checked("ip", &["-n", n, "link", "set", &self.node_if, "up"])?;
        let via4 = node_v4.to_string();
        let via6 = node_v6.to_string();
        run_checked(
            "ip",
            &["-n", p, "route", "add", "10.213.0.0/16", "via", &via4],
        )?;
        run_checked(
            "ip",
            &["-n", p, "-6", "route", "add", "fd00:213::/64", "via", &via6],
        )?;
        self.node.sysctl("net.ipv4.ip_forward", "1")?;
        self.node.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        Ok(())
    }

    /// The pod's namespace (addresses: `ipv4[0]` = `10.216.X.2`, `ipv6[0]` = `fd00:216:X::2`).
    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    /// The pod's IPv4 address.
    pub fn v4(&self) -> Ipv4Addr {
        self.ns.v4()
    }

    /// The pod's IPv6 address.
    pub fn v6(&self) -> Ipv6Addr {
        self.ns.v6()
    }

    /// The pod's IPv4 network, `10.216.X.0/24`.
    pub fn network_v4(&self) -> String {
        format!("{}/24", self.lease.pod_v4())
    }

    /// The pod's IPv6 network, `fd00:216:X::/64`.
    pub fn network_v6(&self) -> String {
        format!("{}/64", self.lease.pod_v6())
    }

    /// The node's end of the veth pair (`pwpodX`), as `-o`/`-i` in the node's rules name it.
    pub fn node_interface(&self) -> &str {
        &self.node_if
    }

    /// The node the pod hangs off.
    pub fn node(&self) -> &Netns {
        &self.node
    }

    /// Starts `busybox httpd` on `port` (IPv4 and IPv6) in the pod and returns the body it
    /// answers `GET /` with (it names the pod); returns once the node gets that answer.
    ///
    /// # Errors
    /// [`LabError::ToolMissing`] without busybox, [`LabError::Timeout`] when the server does
    /// not answer within 10 s.
    pub fn serve_http(&mut self, port: u16) -> Result<String, LabError> {
        if !["/bin/busybox", "/usr/bin/busybox"]
            .iter()
            .any(|p| std::path::Path::new(p).is_file())
        {
            return Err(LabError::ToolMissing {
                tool: "busybox".into(),
                package: "busybox-static".into(),
            });
        }
        let body = format!("portwarden lab pod {} port {port}\n", self.ns.name);
        let dir = self.www.join(port.to_string());
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(dir.join("index.html"), &body))
            .map_err(|e| LabError::Invalid(format!("cannot write {}: {e}", dir.display())))?;
        let d = dir.to_string_lossy().into_owned();
        let p = port.to_string();
        self.httpd.push(
            self.ns
                .spawn(&["busybox", "httpd", "-f", "-p", &p, "-h", &d])?,
        );
        let node = self.node.clone();
        for addr in [IpAddr::V4(self.v4()), IpAddr::V6(self.v6())] {
            let to = SocketAddr::new(addr, port);
            wait_for(
                &format!("busybox httpd on {to} in {}", self.ns.name),
                Duration::from_secs(10),
                || match node.http_get(to, Duration::from_secs(2)) {
                    Ok(r) if r.status == 200 && r.body == body => Ok(()),
                    Ok(r) => Err(format!("answered {r:?}")),
                    Err(e) => Err(e.to_string()),
                },
            )?;
        }
        Ok(body)
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        self.httpd.clear();
        // Deleting the namespace deletes the veth pair, the node's end with it.
        crate::lab::delete_ns(&self.ns.name);
        let _ = std::fs::remove_dir_all(&self.www);
    }
}
