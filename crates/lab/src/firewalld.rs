//! A firewalld-style nftables table in a lab node: `table inet firewalld` with the base chain
//! `filter_INPUT` (`type filter hook input priority filter + 10; policy accept;`) that, like
//! firewalld's, accepts established/related and DNAT'ed connections and loopback, drops
//! invalid packets, and then blocks the given ports. Created with `nft -f` (one atomic batch);
//! only the builder — reading such a table is portwarden's job.

use crate::{LabError, Netns, Protocol};

/// What the table does to a blocked port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// `drop` (the port looks filtered).
    Drop,
    /// `reject with icmpx admin-prohibited`, firewalld's reject.
    Reject,
}

/// The `nft -f` input for a firewalld-style table blocking `ports`.
pub fn firewalld_ruleset(ports: &[(Protocol, u16, Block)]) -> String {
    let mut s = String::from(
        "table inet firewalld {\n\
         \tchain filter_INPUT {\n\
         \t\ttype filter hook input priority filter + 10; policy accept;\n\
         \t\tct state { established, related } accept\n\
         \t\tct status dnat accept\n\
         \t\tiifname \"lo\" accept\n\
         \t\tct state invalid drop\n",
    );
    for (proto, port, block) in ports {
        let verdict = match block {
            Block::Drop => "drop",
            Block::Reject => "reject with icmpx admin-prohibited",
        };
        s.push_str(&format!("\t\t{} dport {port} {verdict}\n", proto.as_str()));
    }
    s.push_str("\t}\n}\n");
    s
}

impl Netns {
    /// Creates the firewalld-style table `inet firewalld` in this namespace (`chain
    /// filter_INPUT` at `priority filter + 10`, policy accept, established/related, DNAT'ed and
    /// loopback accepted, invalid dropped, then the blocks) and returns the input it gave `nft -f`.
    ///
    /// # Errors
    /// [`LabError::Spawn`] when `nft` cannot start, [`LabError::CommandFailed`] (with the
    /// input) when nft refuses it.
    pub fn add_firewalld_table(
        &self,
        ports: &[(Protocol, u16, Block)],
    ) -> Result<String, LabError> {
        let input = firewalld_ruleset(ports);
        self.exec_stdin(&["nft", "-f", "-"], &input)?;
        Ok(input)
    }
}
