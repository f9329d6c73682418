//! Listening sockets of this network namespace, read from `/proc/net/{tcp,tcp6,udp,udp6}`:
//! the inside evidence for "nothing is listening behind an open port".

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use portwarden_policy::Protocol;
use serde::{Deserialize, Serialize};

/// A socket that accepts connections (TCP LISTEN) or datagrams (bound UDP).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Listener {
    /// `tcp` or `udp`.
    pub protocol: Protocol,
    /// Local address (0.0.0.0 / :: for any).
    pub address: IpAddr,
    /// Local port.
    pub port: u16,
}

impl Listener {
    /// Whether remote probes can reach it (not bound to a loopback address).
    pub fn reachable_from_outside(&self) -> bool {
        !self.address.is_loopback()
    }
}

const TCP_LISTEN: &str = "0A";
const UDP_UNCONNECTED: &str = "07";

/// Parses one `/proc/net/{tcp,udp}[6]` table. Lines that do not parse are skipped (the kernel's
/// format is stable; a partial read must not fail the whole view).
pub fn parse_proc_net(text: &str, protocol: Protocol) -> Vec<Listener> {
    let wanted = match protocol {
        Protocol::Tcp => TCP_LISTEN,
        Protocol::Udp => UDP_UNCONNECTED,
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1)?;
            let state = fields.nth(1)?;
            if state != wanted {
                return None;
            }
            let (addr, port) = local.split_once(':')?;
            Some(Listener {
                protocol,
                address: parse_hex_address(addr)?,
                port: u16::from_str_radix(port, 16).ok()?,
            })
        })
        .collect()
}

/// The kernel prints addresses as 32-bit words in host (little-endian) byte order.
fn parse_hex_address(hex: &str) -> Option<IpAddr> {
    let word = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::to_le_bytes);
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(hex)?))),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(&hex[i * 8..i * 8 + 8])?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

/// Reads the listeners of the calling thread's network namespace.
pub fn read_listeners() -> std::io::Result<Vec<Listener>> {
    let mut out = Vec::new();
    for (file, protocol) in [
        ("/proc/net/tcp", Protocol::Tcp),
        ("/proc/net/tcp6", Protocol::Tcp),
        ("/proc/net/udp", Protocol::Udp),
        ("/proc/net/udp6", Protocol::Udp),
    ] {
        match std::fs::read_to_string(file) {
            Ok(text) => out.extend(parse_proc_net(&text, protocol)),
            // IPv6 may be disabled: its tables are then absent.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 100 0 0 10 0
   2: 0B00D50A:0050 0200D50A:C350 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 20 4 30 10 -1
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn tcp_listen_sockets_only() {
        let l = parse_proc_net(TCP, Protocol::Tcp);
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].address, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(l[0].port, 8080);
        assert!(!l[0].reachable_from_outside());
        assert_eq!(l[1].address, "0.0.0.0".parse::<IpAddr>().unwrap());
        assert_eq!(l[1].port, 80);
    }

    #[test]
    fn ipv6_words_are_little_endian() {
        let l = parse_proc_net(TCP6, Protocol::Tcp);
        assert_eq!(l[0].address, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(l[0].port, 443);
    }

    #[test]
    fn reads_this_namespace() {
        // Whatever the machine has, reading must work and give sorted, unique entries.
        let l = read_listeners().unwrap();
        assert!(l.windows(2).all(|w| w[0] < w[1]));
    }
}
