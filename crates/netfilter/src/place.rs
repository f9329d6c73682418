//! Where rules live: the two coordinates of every table portwarden reads or writes, an
//! address [`Family`] (its tools: `iptables`, `ip6tables`) and an iptables [`Backend`] (nft or
//! legacy). Leaf types: the error type and every module name them without depending on
//! rendering ([`mod@crate::render`]) or backend detection ([`crate::backend`]).

use std::fmt;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// An address family, with its own tables and tools.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// IPv4: `iptables`.
    Ipv4,
    /// IPv6: `ip6tables`.
    Ipv6,
}

impl Family {
    /// Both families, IPv4 first.
    pub const ALL: [Family; 2] = [Family::Ipv4, Family::Ipv6];

    /// The command name prefix: `iptables` or `ip6tables`.
    pub fn tool(self) -> &'static str {
        match self {
            Family::Ipv4 => "iptables",
            Family::Ipv6 => "ip6tables",
        }
    }

    /// Whether a source network belongs to this family.
    pub fn holds(self, net: &IpNet) -> bool {
        matches!(
            (self, net),
            (Family::Ipv4, IpNet::V4(_)) | (Family::Ipv6, IpNet::V6(_))
        )
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Ipv4 => "IPv4",
            Family::Ipv6 => "IPv6",
        })
    }
}

/// An iptables backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// iptables-nft: iptables rules stored as nftables objects.
    Nft,
    /// iptables-legacy: the x_tables kernel interface.
    Legacy,
}

impl Backend {
    /// `nft` or `legacy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Nft => "nft",
            Backend::Legacy => "legacy",
        }
    }

    /// The other backend.
    pub fn other(self) -> Backend {
        match self {
            Backend::Nft => Backend::Legacy,
            Backend::Legacy => Backend::Nft,
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
