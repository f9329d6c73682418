//! The Linux capabilities portwarden needs, checked up front so that a missing one is named in
//! the error instead of surfacing as a puzzling failure of an iptables tool.
//!
//! * `CAP_NET_ADMIN` — read and write netfilter rules (`iptables-save`/`-restore`, both
//!   backends): `plan`, `apply`, `reset` and the agent cannot work without it.
//! * `CAP_NET_RAW` — raw sockets for SYN, ACK and UDP probes; without it scans fall back to
//!   connect scans (TCP) or cannot run (UDP), which the scan commands already say.
//!
//! Nothing else is needed: see docs/least-privilege.md.

use anyhow::bail;

/// A capability portwarden uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cap {
    /// `CAP_NET_ADMIN` (bit 12).
    NetAdmin,
    /// `CAP_NET_RAW` (bit 13).
    NetRaw,
}

impl Cap {
    fn bit(self) -> u32 {
        match self {
            Cap::NetAdmin => 12,
            Cap::NetRaw => 13,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Cap::NetAdmin => "CAP_NET_ADMIN",
            Cap::NetRaw => "CAP_NET_RAW",
        }
    }
}

/// The effective capability set from `/proc/self/status` text, or `None` when it cannot be
/// read (then nothing is checked and the tools' own errors speak).
fn effective(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

fn has_in(status: &str, cap: Cap) -> Option<bool> {
    effective(status).map(|set| set & (1u64 << cap.bit()) != 0)
}

/// Whether this process holds `cap` in its effective set (`None` when unknown).
pub fn has(cap: Cap) -> Option<bool> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    has_in(&status, cap)
}

/// Fails with an error naming `cap` and what it is needed for when this process lacks it.
///
/// # Errors
/// The capability is known to be missing.
pub fn require(cap: Cap, purpose: &str) -> anyhow::Result<()> {
    check(has(cap), cap, purpose)
}

fn check(held: Option<bool>, cap: Cap, purpose: &str) -> anyhow::Result<()> {
    if held == Some(false) {
        bail!(
            "missing capability {name}: portwarden needs it to {purpose}; run as root, or grant \
             exactly CAP_NET_ADMIN and CAP_NET_RAW (systemd: AmbientCapabilities=CAP_NET_ADMIN \
             CAP_NET_RAW; docker: --cap-add NET_ADMIN --cap-add NET_RAW; see \
             docs/least-privilege.md)",
            name = cap.name()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_are_read_from_the_effective_set() {
        let both = "Name:\tportwarden\nCapInh:\t0000000000003000\nCapEff:\t0000000000003000\n";
        assert_eq!(has_in(both, Cap::NetAdmin), Some(true));
        assert_eq!(has_in(both, Cap::NetRaw), Some(true));
        let raw_only = "CapEff:\t0000000000002000\n";
        assert_eq!(has_in(raw_only, Cap::NetAdmin), Some(false));
        assert_eq!(has_in(raw_only, Cap::NetRaw), Some(true));
        let root = "CapEff:\t000001ffffffffff\n";
        assert_eq!(has_in(root, Cap::NetAdmin), Some(true));
        assert_eq!(has_in("Name:\tx\n", Cap::NetAdmin), None);
    }

    #[test]
    fn the_error_names_the_capability_and_the_fix() {
        let e = check(Some(false), Cap::NetAdmin, "write netfilter rules")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("missing capability CAP_NET_ADMIN")
                && e.contains("write netfilter rules")
                && e.contains("--cap-add NET_ADMIN"),
            "{e}"
        );
        assert!(check(Some(true), Cap::NetAdmin, "x").is_ok());
        assert!(check(None, Cap::NetAdmin, "x").is_ok());
    }
}
