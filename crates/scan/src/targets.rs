//! Which addresses a scan may probe: the [`TargetPolicy`] every [`Scanner`](crate::Scanner)
//! checks before it opens a socket.
//!
//! A key design decision is that the guard lives in the scanner, not in its callers, and that
//! its default is the narrowest useful one. A program that builds a `ScanConfig` and forgets
//! about targets can scan this host's loopback and nothing else; to probe another machine it
//! has to name it ([`TargetPolicy::only`], the inventory or cluster nodes) or say in so many
//! words that anything goes ([`TargetPolicy::Any`], the CLI's `--any-target`). A typo in an
//! address, a stale inventory or a bug in a future caller therefore fails loudly instead of
//! probing somebody else's host.
//!
//! Loopback addresses (`127.0.0.0/8`, `::1`) are always allowed: packets to them never leave
//! the host (or the network namespace) the scan runs in, so they cannot reach anyone who did
//! not agree to be scanned, and checking one's own listeners is the most common ad-hoc use.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::ScanError;

/// Which targets a scan may probe; see the [module documentation](self).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TargetPolicy {
    /// Loopback addresses only (the default).
    #[default]
    LoopbackOnly,
    /// These addresses (inventory or cluster nodes) and loopback.
    Only(BTreeSet<IpAddr>),
    /// Any address. Only when a person asked for it explicitly.
    Any,
}

impl TargetPolicy {
    /// Allows exactly these addresses (and loopback).
    pub fn only(addresses: impl IntoIterator<Item = IpAddr>) -> TargetPolicy {
        TargetPolicy::Only(addresses.into_iter().collect())
    }

    /// Whether `target` may be probed.
    pub fn allows(&self, target: IpAddr) -> bool {
        target.is_loopback()
            || match self {
                TargetPolicy::LoopbackOnly => false,
                TargetPolicy::Only(set) => set.contains(&target),
                TargetPolicy::Any => true,
            }
    }

    /// Checks every target.
    ///
    /// # Errors
    /// [`ScanError::TargetRefused`] naming the first target the policy does not allow.
    pub fn check(&self, targets: &[IpAddr]) -> Result<(), ScanError> {
        let Some(&target) = targets.iter().find(|t| !self.allows(**t)) else {
            return Ok(());
        };
        let why = match self {
            TargetPolicy::LoopbackOnly => {
                "the scan was given no list of allowed targets, so only loopback may be probed"
                    .to_string()
            }
            TargetPolicy::Only(set) => format!(
                "it is not one of the {} allowed target address(es) (the inventory or cluster nodes)",
                set.len()
            ),
            TargetPolicy::Any => return Ok(()),
        };
        Err(ScanError::TargetRefused { target, why })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn default_allows_loopback_only() {
        let p = TargetPolicy::default();
        assert!(p.allows(ip("127.0.0.1")));
        assert!(p.allows(ip("127.1.2.3")));
        assert!(p.allows(ip("::1")));
        assert!(!p.allows(ip("10.213.0.11")));
        assert!(!p.allows(ip("fd00:213::11")));
        assert!(!p.allows(ip("0.0.0.0")));
        // An IPv4-mapped loopback address is not taken for loopback: be conservative.
        assert!(!p.allows(ip("::ffff:10.0.0.1")));
        let e = p
            .check(&[ip("127.0.0.1"), ip("10.213.0.11")])
            .expect_err("refused");
        let msg = e.to_string();
        assert!(
            msg.contains("10.213.0.11") && msg.contains("only loopback"),
            "{msg}"
        );
    }

    #[test]
    fn only_allows_the_listed_addresses_and_loopback() {
        let p = TargetPolicy::only([ip("10.213.0.11"), ip("fd00:213::11")]);
        assert!(
            p.check(&[ip("10.213.0.11"), ip("fd00:213::11"), ip("::1")])
                .is_ok()
        );
        assert!(!p.allows(ip("10.213.0.12")));
        let e = p
            .check(&[ip("10.213.0.11"), ip("fd00:213::12")])
            .expect_err("refused");
        assert!(
            matches!(e, ScanError::TargetRefused { target, .. } if target == ip("fd00:213::12"))
        );
        assert!(e.to_string().contains("not one of the 2 allowed"), "{e}");
        // An empty list allows loopback only.
        assert!(!TargetPolicy::only([]).allows(ip("10.0.0.1")));
    }

    #[test]
    fn any_allows_everything() {
        assert!(
            TargetPolicy::Any
                .check(&[ip("192.0.2.1"), ip("2001:db8::1")])
                .is_ok()
        );
    }
}
