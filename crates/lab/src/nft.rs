//! Native nftables state inside a lab namespace: a rule iptables-nft cannot print, and counting
//! jumps with `nft` (which still lists a table that iptables calls incompatible).

use crate::{LabError, Netns};

impl Netns {
    /// Adds to iptables-nft's `ip filter` table, chain `INPUT`, a rule only nftables can express
    /// (a per-source `meter`): from then on `iptables-nft-save` prints the table as
    /// "incompatible" instead of its rules.
    ///
    /// # Errors
    /// As [`Netns::exec`] (`nft` missing, or no `ip filter` table with an `INPUT` chain yet).
    pub fn add_native_nft_rule(&self) -> Result<(), LabError> {
        self.exec(&[
            "nft",
            "add",
            "rule",
            "ip",
            "filter",
            "INPUT",
            "tcp",
            "dport",
            "5",
            "meter",
            "m1",
            "{ ip saddr limit rate 5/second }",
            "accept",
        ])
        .map(drop)
    }

    /// How many rules of the `INPUT` chain of nftables' table `FAMILY filter` (`ip` or `ip6`)
    /// jump to `target`, read with `nft`; 0 when there is no such chain.
    pub fn nft_jumps(&self, family: &str, target: &str) -> usize {
        let jump = format!("jump {target}");
        self.exec(&["nft", "list", "chain", family, "filter", "INPUT"])
            .unwrap_or_default()
            .lines()
            .filter(|l| l.trim_end().ends_with(&jump) || l.contains(&format!("{jump} ")))
            .count()
    }
}
