//! Every chain name and rule comment portwarden writes, in one place: ownership is decided here.
//!
//! portwarden owns exactly the filter-table chains whose name starts with [`PREFIX`], and the
//! rules (in chains it does not own) whose target is one of those chains — in practice the one
//! jump from `INPUT` to [`INPUT_CHAIN`]. Everything else is foreign and never written.
//!
//! # Layout
//!
//! ```text
//! INPUT ─#1─> PORTWARDEN-INPUT            loopback, replies, failsafe: RETURN; then by port:
//!               ├─ -p tcp --dport 0:4095 ─> PORTWARDEN-TCP-0        (level 1: 4096 ports)
//!               │                             └─ --dport 0:255 ─> PORTWARDEN-TCP-0-255   (leaf)
//!               └─ -p udp --dport ...    ─> PORTWARDEN-UDP-...
//! ```
//!
//! A key design decision is the two-level, fixed-size port bucketing. The first-match order of a
//! node's rules is global (precedence), so chains cannot be cut per policy; but a packet to port
//! `p` can only match rules whose range contains `p`, so the rules overlapping a port bucket, in
//! global order, decide exactly as the whole list does for packets in that bucket. Fixed buckets
//! keep chain names stable: changing one entry rewrites only the leaf chains its ports fall in
//! (about 256 ports' worth of rules), and a packet walks at most 16 + 16 dispatch rules before its
//! leaf instead of the whole list.

use portwarden_policy::Protocol;

/// Prefix of every chain portwarden owns.
pub const PREFIX: &str = "PORTWARDEN-";

/// The chain `INPUT` jumps to; the root of everything portwarden evaluates.
pub const INPUT_CHAIN: &str = "PORTWARDEN-INPUT";

/// The built-in chain that holds portwarden's only jump, at position 1.
pub const HOOK_CHAIN: &str = "INPUT";

/// Ports per first-level bucket.
pub const LEVEL1_PORTS: u32 = 4096;

/// Ports per leaf bucket.
pub const LEAF_PORTS: u32 = 256;

/// Comment on the jump from `INPUT`.
pub const JUMP_COMMENT: &str = "portwarden: port exposure policies, managed (do not edit)";

/// Comment on the loopback exemption.
pub const LOOPBACK_COMMENT: &str = "portwarden: loopback is not governed";

/// Comment on the rule that leaves replies to the node's own connections alone.
pub const REPLIES_COMMENT: &str = "portwarden: replies to connections this node opened";

/// Comment on failsafe rules.
pub const FAILSAFE_COMMENT: &str = "portwarden failsafe: left to the host rules";

/// Whether portwarden owns a chain of this name.
pub fn is_owned(chain: &str) -> bool {
    chain.starts_with(PREFIX)
}

/// The first-level chain for `protocol` covering the bucket that starts at `start`.
pub fn level1_chain(protocol: Protocol, start: u32) -> String {
    format!("{PREFIX}{}-{start}", proto_tag(protocol))
}

/// The leaf chain for `protocol` covering `start..=start + LEAF_PORTS - 1`.
pub fn leaf_chain(protocol: Protocol, start: u32) -> String {
    format!(
        "{PREFIX}{}-{start}-{}",
        proto_tag(protocol),
        start + LEAF_PORTS - 1
    )
}

fn proto_tag(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
    }
}

/// The comment on a rule rendered from `policy`'s entries `entries` (0-based; several when
/// adjacent entries of one policy with the same action share a multiport rule): at most 255
/// bytes (the kernel's limit), restricted to characters every iptables version saves and
/// restores unchanged.
pub fn entry_comment(policy: &str, entries: &[usize], state: &str) -> String {
    let list: Vec<String> = entries.iter().map(ToString::to_string).collect();
    let word = if entries.len() == 1 {
        "entry"
    } else {
        "entries"
    };
    let tail = format!(" {word} {}: {state}", list.join(","));
    let clean: String = policy
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(255usize.saturating_sub(tail.len()))
        .collect();
    format!("{clean}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_kernel_limit() {
        // xt_table chain names are at most 28 characters.
        for p in [Protocol::Tcp, Protocol::Udp] {
            assert!(leaf_chain(p, 65280).len() <= 28, "{}", leaf_chain(p, 65280));
            assert!(level1_chain(p, 61440).len() <= 28);
        }
        assert_eq!(leaf_chain(Protocol::Tcp, 0), "PORTWARDEN-TCP-0-255");
        assert!(is_owned(INPUT_CHAIN) && !is_owned("INPUT") && !is_owned("DOCKER"));
    }

    #[test]
    fn comments_are_bounded_and_plain() {
        let long = "a".repeat(300);
        let c = entry_comment(&long, &[3], "closed");
        assert!(c.len() <= 255 && c.ends_with(" entry 3: closed"));
        let c = entry_comment(&long, &[10000, 10003, 10006], "open");
        assert!(
            c.len() <= 255 && c.ends_with(" entries 10000,10003,10006: open"),
            "{c}"
        );
        assert!(c.len() <= 255);
        assert_eq!(entry_comment("we\"b", &[0], "open"), "we_b entry 0: open");
    }
}
