//! The node's own addresses, which decide what the forward path governs: a DNAT'ed connection
//! is the node's exposure when its original destination is one of them (see
//! [`crate::render`]'s forward path).
//!
//! Read with getifaddrs(3) in the calling process's network namespace, every time a plan is
//! made, so an address added or removed (DHCP, a Docker bridge, a CNI interface) is in the
//! next plan. Loopback addresses are left out: nothing outside the node reaches them.

use std::net::IpAddr;

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
