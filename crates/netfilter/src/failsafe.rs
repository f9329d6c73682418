//! Failsafe ports: inbound ports no policy may block, so a policy can never lock operators or
//! the control plane out.
//!
//! portwarden does not decide about failsafe ports at all: `PORTWARDEN-INPUT` returns them to the
//! rest of `INPUT` before any policy rule, and they are cut out of every rendered rule. A policy
//! entry that would block one is reported as a [`Conflict`](crate::Conflict).
//!
//! A key design decision is `RETURN` rather than `ACCEPT` for failsafe ports: an `ACCEPT` at
//! `INPUT` position 1 would override the host's own restrictions on SSH or the API server (say,
//! "SSH from the bastion only") and widen exposure. `RETURN` keeps the promise that portwarden
//! never blocks them while leaving the host's own rules in charge.

use std::fmt;
use std::str::FromStr;

use portwarden_policy::{PortRange, Protocol};
use serde::Serialize;

use crate::Error;

/// One failsafe protocol and port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct FailsafePort {
    /// Protocol.
    #[serde(serialize_with = "crate::ser::ser_protocol")]
    pub protocol: Protocol,
    /// Ports.
    #[serde(serialize_with = "crate::ser::ser_range")]
    pub ports: PortRange,
}

impl fmt::Display for FailsafePort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.protocol, self.ports)
    }
}

/// The failsafe port list; see the [module documentation](self).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failsafe {
    ports: Vec<FailsafePort>,
}

/// The default list, as accepted by `--failsafe`.
pub const DEFAULT_FAILSAFE: &str = "tcp:22,tcp:6443,tcp:10250,tcp:2379-2380,udp:68";

impl Default for Failsafe {
    /// Inbound TCP 22 (SSH), 6443 (Kubernetes API), 10250 (kubelet), 2379-2380 (etcd), UDP 68
    /// (DHCP client).
    fn default() -> Failsafe {
        let tcp = |start, end| FailsafePort {
            protocol: Protocol::Tcp,
            ports: PortRange { start, end },
        };
        Failsafe::new(vec![
            tcp(22, 22),
            tcp(6443, 6443),
            tcp(10250, 10250),
            tcp(2379, 2380),
            FailsafePort {
                protocol: Protocol::Udp,
                ports: PortRange::single(68),
            },
        ])
    }
}

impl Failsafe {
    /// A list of the given ports (sorted, duplicates removed).
    pub fn new(mut ports: Vec<FailsafePort>) -> Failsafe {
        ports.sort();
        ports.dedup();
        Failsafe { ports }
    }

    /// No failsafe ports at all: policies may block everything. Only for tests and for hosts
    /// reached out of band.
    pub fn none() -> Failsafe {
        Failsafe { ports: Vec::new() }
    }

    /// The ports, sorted.
    pub fn ports(&self) -> &[FailsafePort] {
        &self.ports
    }

    /// The failsafe ranges of one protocol.
    pub fn ranges(&self, protocol: Protocol) -> impl Iterator<Item = PortRange> + '_ {
        self.ports
            .iter()
            .filter(move |p| p.protocol == protocol)
            .map(|p| p.ports)
    }
}

impl fmt::Display for Failsafe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ports.is_empty() {
            return f.write_str("none");
        }
        for (i, p) in self.ports.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl FromStr for Failsafe {
    type Err = Error;

    /// Parses `tcp:22,tcp:6443,tcp:2379-2380,udp:68` (protocol optional, default tcp), or
    /// `none`.
    ///
    /// # Errors
    /// [`Error::Failsafe`] naming the bad item.
    fn from_str(s: &str) -> Result<Failsafe, Error> {
        let s = s.trim();
        if s == "none" {
            return Ok(Failsafe::none());
        }
        let bad = |item: &str, message: String| Error::Failsafe {
            input: s.to_string(),
            item: item.to_string(),
            message,
        };
        let mut list = Vec::new();
        for item in s.split(',').map(str::trim) {
            let (proto, range) = match item.split_once(':') {
                Some((p, r)) => (p.trim(), r.trim()),
                None => ("tcp", item),
            };
            let protocol = match proto.to_ascii_lowercase().as_str() {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                other => return Err(bad(item, format!("unknown protocol {other:?}"))),
            };
            let ports = portwarden_policy::ports::parse_range(range)
                .map_err(|e| bad(item, e.to_string()))?;
            list.push(FailsafePort { protocol, ports });
        }
        Ok(Failsafe::new(list))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_round_trips_through_the_flag_syntax() {
        let parsed: Failsafe = DEFAULT_FAILSAFE.parse().unwrap();
        assert_eq!(parsed, Failsafe::default());
        let again: Failsafe = parsed.to_string().parse().unwrap();
        assert_eq!(again, parsed);
        assert_eq!("none".parse::<Failsafe>().unwrap(), Failsafe::none());
        assert_eq!("22".parse::<Failsafe>().unwrap().ports().len(), 1);
    }

    #[test]
    fn bad_items_are_named() {
        let e = "tcp:22,sctp:9".parse::<Failsafe>().unwrap_err().to_string();
        assert!(
            e.contains("sctp:9") && e.contains("unknown protocol"),
            "{e}"
        );
        let e = "tcp:0".parse::<Failsafe>().unwrap_err().to_string();
        assert!(e.contains("tcp:0"), "{e}");
    }
}
