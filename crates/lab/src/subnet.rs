//! Lab-unique subnet numbers: [`SubnetLease`] claims one index `X` (0-255) for as long as it
//! lives, so concurrently running labs — threads of one test binary or other processes — never
//! hand out the same `10.215.X.0/24` (a Docker engine's bridge), `10.216.X.0/24` (a pod) or
//! their IPv6 twins.
//!
//! A lease is a file `/run/portwarden-lab/leases/X` created with `O_EXCL` and holding the
//! claiming process id; it is removed on drop. A lease whose process is gone (a killed run) is
//! taken over. Indices whose networks the root namespace routes (read with `ip route`, never
//! changed) are skipped, so nothing a lab makes shadows a real network of the machine.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::LabError;
use crate::netns::run_checked;

/// Where leases live (a tmpfs on every systemd machine; removed by a reboot).
const LEASE_DIR: &str = "/run/portwarden-lab/leases";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// One claimed subnet index `X`, released on drop: a file in `/run/portwarden-lab/leases`
/// holding the claiming process id (a dead process's lease is taken over).
#[derive(Debug)]
pub struct SubnetLease {
    index: u8,
    path: PathBuf,
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Networks the root namespace routes, as (address, prefix) pairs — read-only.
fn root_routes_v4() -> Vec<(Ipv4Addr, u8)> {
    let out = run_checked("ip", &["-4", "route", "show", "table", "all"]).unwrap_or_default();
    out.split_whitespace()
        .filter_map(|w| {
            let (a, p) = w.split_once('/').unwrap_or((w, "32"));
            Some((a.parse().ok()?, p.parse().ok()?))
        })
        .collect()
}

fn overlaps(a: Ipv4Addr, pa: u8, b: Ipv4Addr, pb: u8) -> bool {
    let p = pa.min(pb);
    if p == 0 {
        return false; // a default route overlaps everything and says nothing
    }
    let mask = u32::MAX << (32 - u32::from(p));
    (u32::from(a) & mask) == (u32::from(b) & mask)
}

impl SubnetLease {
    /// Claims a free index, starting at one derived from the process id and a per-process
    /// counter.
    ///
    /// # Errors
    /// [`LabError::Invalid`] when all 256 indices are taken or the lease directory cannot be
    /// written.
    pub fn claim() -> Result<SubnetLease, LabError> {
        std::fs::create_dir_all(LEASE_DIR)
            .map_err(|e| LabError::Invalid(format!("cannot create {LEASE_DIR}: {e}")))?;
        let pid = std::process::id();
        let start = pid
            .wrapping_mul(31)
            .wrapping_add(NEXT.fetch_add(1, Ordering::SeqCst).wrapping_mul(7));
        let routes = root_routes_v4();
        for i in 0..256u32 {
            let Ok(index) = u8::try_from((start.wrapping_add(i)) % 256) else {
                continue;
            };
            let ours = [
                Ipv4Addr::new(10, 215, index, 0),
                Ipv4Addr::new(10, 216, index, 0),
            ];
            if routes
                .iter()
                .any(|(r, p)| ours.iter().any(|o| overlaps(*o, 24, *r, *p)))
            {
                continue;
            }
            let path = PathBuf::from(format!("{LEASE_DIR}/{index}"));
            for _attempt in 0..2 {
                match OpenOptions::new().write(true).create_new(true).open(&path) {
                    Ok(mut f) => {
                        let _ = writeln!(f, "{pid}");
                        return Ok(SubnetLease { index, path });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        let holder = std::fs::read_to_string(&path)
                            .ok()
                            .and_then(|s| s.trim().parse::<u32>().ok());
                        match holder {
                            // A lease of a dead process, or one being written right now
                            // (empty) that we leave alone.
                            Some(h) if !pid_alive(h) => {
                                let _ = std::fs::remove_file(&path);
                            }
                            _ => break,
                        }
                    }
                    Err(e) => {
                        return Err(LabError::Invalid(format!(
                            "cannot create lease {}: {e}",
                            path.display()
                        )));
                    }
                }
            }
        }
        Err(LabError::Invalid(format!(
            "all 256 lab subnets are leased (see {LEASE_DIR}); are many labs running?"
        )))
    }

    /// The index `X`.
    pub fn index(&self) -> u8 {
        self.index
    }

    /// `10.215.X.0` — a Docker engine's bridge network (/24).
    pub fn docker_v4(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 215, self.index, 0)
    }

    /// `fd00:215:X::` — a Docker engine's IPv6 network (/80 of it is used).
    pub fn docker_v6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0x215, u16::from(self.index), 0, 0, 0, 0, 0)
    }

    /// `10.216.X.0` — a pod network (/24).
    pub fn pod_v4(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 216, self.index, 0)
    }

    /// `fd00:216:X::` — a pod network (/64).
    pub fn pod_v6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0x216, u16::from(self.index), 0, 0, 0, 0, 0)
    }
}

impl Drop for SubnetLease {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_rules() {
        let a = Ipv4Addr::new(10, 215, 3, 0);
        assert!(overlaps(a, 24, Ipv4Addr::new(10, 215, 3, 7), 32));
        assert!(overlaps(a, 24, Ipv4Addr::new(10, 0, 0, 0), 8));
        assert!(!overlaps(a, 24, Ipv4Addr::new(10, 215, 4, 0), 24));
        assert!(!overlaps(a, 24, Ipv4Addr::UNSPECIFIED, 0));
    }
}
