//! What the forward path needs to know of the node: its own addresses (a DNAT'ed connection
//! is the node's exposure when its original destination is one of them) and whether it
//! forwards packets at all, per family (see [`crate::render`]'s forward path).
//!
//! Both are read in the calling thread's network namespace every time a plan is made, so an
//! address added or removed (DHCP, a Docker bridge, a CNI interface) or forwarding switched on
//! (Docker and kubelet do it when they start) is in the next plan. Loopback addresses are left
//! out: nothing outside the node reaches them.

use std::net::IpAddr;

use crate::place::Family;

/// What the forward path needs to know of the node, read in the calling thread's network
/// namespace ([`Host::read`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Host {
    /// Its addresses ([`node_addresses`]).
    pub addresses: Vec<IpAddr>,
    /// Whether it forwards IPv4, IPv6 ([`forwarding`]).
    pub forwarding: [bool; 2],
}

impl Host {
    /// Reads this network namespace's addresses and forwarding settings.
    ///
    /// # Errors
    /// As [`node_addresses`].
    pub fn read() -> std::io::Result<Host> {
        Ok(Host {
            addresses: node_addresses()?,
            forwarding: Family::ALL.map(forwarding),
        })
    }

    /// Whether the host forwards `family`.
    pub fn forwards(&self, family: Family) -> bool {
        match family {
            Family::Ipv4 => self.forwarding[0],
            Family::Ipv6 => self.forwarding[1],
        }
    }

    /// [`crate::render()`] for this host: both paths, without the forward path of a family
    /// the host does not forward (it has no forwarded port; the path comes with the first plan
    /// after forwarding is switched on).
    pub fn render(
        &self,
        intent: &portwarden_policy::NodeIntent,
        failsafe: &crate::Failsafe,
    ) -> crate::Rendered {
        let mut r = crate::render(intent, failsafe, &self.addresses);
        if !self.forwards(Family::Ipv4) {
            r.v4 = r.v4.without_forward_path();
        }
        if !self.forwards(Family::Ipv6) {
            r.v6 = r.v6.without_forward_path();
        }
        r
    }
}

/// Whether this network namespace forwards packets of `family`
/// (`net.ipv4.ip_forward`, `net.ipv6.conf.all.forwarding`). With forwarding off no packet of
/// that family reaches `FORWARD` after a DNAT to another host or namespace, so there is no
/// forwarded port to govern; when the setting cannot be read, forwarding is assumed.
pub fn forwarding(family: Family) -> bool {
    let path = match family {
        Family::Ipv4 => "/proc/sys/net/ipv4/ip_forward",
        Family::Ipv6 => "/proc/sys/net/ipv6/conf/all/forwarding",
    };
    std::fs::read_to_string(path).map_or(true, |v| v.trim() != "0")
}

/// Every address of every interface of this network namespace, loopback excluded, sorted.
///
/// # Errors
/// When getifaddrs(3) fails (out of memory, or of descriptors for its netlink socket).
pub fn node_addresses() -> std::io::Result<Vec<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list it allocated into `head`; freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: a non-null ifa_addr points to a sockaddr whose family says its real type.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        let addr = match family {
            libc::AF_INET => {
                // SAFETY: AF_INET: the sockaddr is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                IpAddr::from(sin.sin_addr.s_addr.to_ne_bytes())
            }
            libc::AF_INET6 => {
                // SAFETY: AF_INET6: the sockaddr is a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                IpAddr::from(sin6.sin6_addr.s6_addr)
            }
            _ => continue,
        };
        if !addr.is_loopback() {
            out.push(addr);
        }
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_no_loopback_and_no_duplicates() {
        let a = node_addresses().unwrap();
        assert!(a.iter().all(|a| !a.is_loopback()), "{a:?}");
        let mut d = a.clone();
        d.dedup();
        assert_eq!(a, d);
    }
}
