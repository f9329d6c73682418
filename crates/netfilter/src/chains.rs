//! Every chain name and rule comment portwarden writes, in one place: ownership is decided here.
//!
//! # Ownership
//!
//! portwarden owns exactly what it writes, recognised by its grammar — nothing is recorded on
//! the host, so a fresh process (or another node's copy of the binary) decides the same way:
//!
//! * **Chains**: the filter-table chains whose name portwarden generates ([`is_owned`]):
//!   [`INPUT_CHAIN`], a first-level bucket `PORTWARDEN-TCP-<start>` / `PORTWARDEN-UDP-<start>`
//!   (`start` a multiple of [`LEVEL1_PORTS`]) or a leaf `PORTWARDEN-TCP-<start>-<end>`
//!   (`start` a multiple of [`LEAF_PORTS`], `end = start + LEAF_PORTS - 1`), in canonical
//!   decimal. Every rule inside such a chain is portwarden's (it rewrites the whole chain, so a
//!   rule someone added there is drift, and repaired).
//! * **The jumps**: a rule in [`HOOK_CHAIN`] whose target is [`INPUT_CHAIN`] and that carries
//!   the comment [`JUMP_COMMENT`], and a rule in [`FORWARD_HOOK_CHAIN`] to [`FORWARD_CHAIN`]
//!   with [`FORWARD_JUMP_COMMENT`] ([`is_our_jump`]) — the only rules portwarden writes outside
//!   its chains. One that was moved down, duplicated or edited (same comment) is still
//!   portwarden's, and is repaired. The forward path's chains are named like `INPUT`'s with an
//!   `F`: `PORTWARDEN-FORWARD`, `PORTWARDEN-FPORTS`, `PORTWARDEN-FTCP-<start>`, ...
//!
//! Everything else is foreign and never written, even when it looks like portwarden's
//! ([`is_lookalike_chain`]): a chain `PORTWARDEN-FOO`, a rule in `FORWARD` or a user chain that
//! jumps to `PORTWARDEN-INPUT`, an `INPUT` rule without the comment that jumps there. Plans
//! report these look-alikes ([`crate::diff::Lookalike`]) and leave them byte-identical.
//!
//! A consequence: the kernel refuses to delete a chain while any rule jumps to it, so when a
//! chain of portwarden's is no longer wanted (at `reset`, or a bucket that became empty) but a
//! foreign rule still jumps to it, the chain is **kept, emptied** — an empty chain returns every
//! packet to its caller, so the foreign jump decides nothing — and the plan says so
//! ([`crate::diff::Kept`]); deleting the foreign rule and rerunning `reset` removes it.
//!
//! # Layout
//!
//! ```text
//! INPUT ─#1─> PORTWARDEN-INPUT            loopback, replies, failsafe: RETURN; then by port:
//!               ├─ -p tcp --dport 0:4095 ─> PORTWARDEN-TCP-0        (level 1: 4096 ports)
//!               │                             └─ --dport 0:255 ─> PORTWARDEN-TCP-0-255   (leaf)
//!               └─ -p udp --dport ...    ─> PORTWARDEN-UDP-...
//!
//! FORWARD ─#1─> PORTWARDEN-FORWARD        replies and connections not DNAT'ed: RETURN;
//!                 └─ --ctorigdst <each node address> ─> PORTWARDEN-FPORTS
//!                      failsafe: RETURN; then by the connection's original port:
//!                      ├─ -p tcp --ctorigdstport 0:4095 ─> PORTWARDEN-FTCP-0
//!                      │                 └─ --ctorigdstport 0:255 ─> PORTWARDEN-FTCP-0-255
//!                      └─ -p udp ...                    ─> PORTWARDEN-FUDP-...
//! ```
//!
//! The forward path ([`Path::Forward`]) is the same intent for connections the node forwards
//! after a DNAT of one of its own addresses (a Docker-published port, a NodePort, a hostPort):
//! such packets never pass `INPUT`, and in `FORWARD` their destination is the container's, so
//! its rules match conntrack's original destination instead (see [`crate::render`]).
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

/// The built-in chain that holds portwarden's jump to [`INPUT_CHAIN`], at position 1.
pub const HOOK_CHAIN: &str = "INPUT";

/// The chain `FORWARD` jumps to; the root of the forward path.
pub const FORWARD_CHAIN: &str = "PORTWARDEN-FORWARD";

/// The built-in chain that holds portwarden's jump to [`FORWARD_CHAIN`], at position 1.
pub const FORWARD_HOOK_CHAIN: &str = "FORWARD";

/// The forward path's port dispatch, entered for connections to a node address only.
pub const FORWARD_PORTS_CHAIN: &str = "PORTWARDEN-FPORTS";

/// Comment on the jump from `FORWARD`.
pub const FORWARD_JUMP_COMMENT: &str =
    "portwarden: port exposure policies on forwarded ports, managed (do not edit)";

/// Comment on the forward path's exemption of connections no DNAT of the node made.
pub const NOT_DNAT_COMMENT: &str = "portwarden: not forwarded from a node port";

/// Comment on a forward-path rule that selects connections to one of the node's addresses.
pub const NODE_ADDRESS_COMMENT: &str = "portwarden: to a node address";

/// The two ways a packet reaches what a node exposes, each with its own chains and jump.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Path {
    /// Packets to the node's own sockets: `INPUT`.
    Input,
    /// Connections to a node address that a DNAT rule forwards to a container or pod:
    /// `FORWARD`.
    Forward,
}

impl Path {
    /// Both paths, `INPUT` first.
    pub const ALL: [Path; 2] = [Path::Input, Path::Forward];

    /// The built-in chain holding the path's jump.
    pub fn hook(self) -> &'static str {
        match self {
            Path::Input => HOOK_CHAIN,
            Path::Forward => FORWARD_HOOK_CHAIN,
        }
    }

    /// The chain the jump goes to.
    pub fn root(self) -> &'static str {
        match self {
            Path::Input => INPUT_CHAIN,
            Path::Forward => FORWARD_CHAIN,
        }
    }

    /// The comment on the jump.
    pub fn jump_comment(self) -> &'static str {
        match self {
            Path::Input => JUMP_COMMENT,
            Path::Forward => FORWARD_JUMP_COMMENT,
        }
    }

    /// The path whose jump lives in the built-in chain `chain`, if any.
    pub fn of_hook(chain: &str) -> Option<Path> {
        Path::ALL.into_iter().find(|p| p.hook() == chain)
    }

    /// The bucket chains' tag for `protocol`: `TCP`, `UDP`, `FTCP`, `FUDP`.
    fn tag(self, protocol: Protocol) -> &'static str {
        match (self, protocol) {
            (Path::Input, Protocol::Tcp) => "TCP",
            (Path::Input, Protocol::Udp) => "UDP",
            (Path::Forward, Protocol::Tcp) => "FTCP",
            (Path::Forward, Protocol::Udp) => "FUDP",
        }
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Path::Input => "input",
            Path::Forward => "forward",
        })
    }
}

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

/// Whether portwarden owns a chain of this name: one of the names it generates (see the
/// module docs), not merely one that starts with [`PREFIX`].
pub fn is_owned(chain: &str) -> bool {
    let Some(rest) = chain.strip_prefix(PREFIX) else {
        return false;
    };
    if matches!(rest, "INPUT" | "FORWARD" | "FPORTS") {
        return true;
    }
    let Some(ports) = ["TCP-", "UDP-", "FTCP-", "FUDP-"]
        .iter()
        .find_map(|tag| rest.strip_prefix(tag))
    else {
        return false;
    };
    match ports.split_once('-') {
        None => port_number(ports).is_some_and(|s| s % LEVEL1_PORTS == 0),
        Some((a, b)) => match (port_number(a), port_number(b)) {
            (Some(s), Some(e)) => s % LEAF_PORTS == 0 && e == s + LEAF_PORTS - 1,
            _ => false,
        },
    }
}

/// A port number in canonical decimal (no sign, no leading zero), as the chain names print it.
fn port_number(s: &str) -> Option<u32> {
    let canonical = !s.is_empty()
        && s.len() <= 5
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    s.parse().ok().filter(|&n| canonical && n <= 65535)
}

/// The path a chain of portwarden's belongs to (`None` for any other chain).
pub fn path_of(chain: &str) -> Option<Path> {
    if !is_owned(chain) {
        return None;
    }
    let rest = chain.strip_prefix(PREFIX)?;
    let forward = ["FORWARD", "FPORTS"].contains(&rest)
        || rest.starts_with("FTCP-")
        || rest.starts_with("FUDP-");
    Some(if forward { Path::Forward } else { Path::Input })
}

/// A chain named like portwarden's ([`PREFIX`]) that portwarden does not write.
pub fn is_lookalike_chain(chain: &str) -> bool {
    chain.starts_with(PREFIX) && !is_owned(chain)
}

/// Whether the rule `spec` of chain `chain` (outside portwarden's chains) is one of
/// portwarden's jumps: in [`HOOK_CHAIN`] to [`INPUT_CHAIN`] with the comment
/// [`JUMP_COMMENT`], or in [`FORWARD_HOOK_CHAIN`] to [`FORWARD_CHAIN`] with
/// [`FORWARD_JUMP_COMMENT`].
pub fn is_our_jump(chain: &str, spec: &str) -> bool {
    jump_path(chain, spec).is_some()
}

/// The path whose jump the rule `spec` of chain `chain` is (see [`is_our_jump`]).
pub fn jump_path(chain: &str, spec: &str) -> Option<Path> {
    let path = Path::of_hook(chain)?;
    is_jump_of(path, spec).then_some(path)
}

fn is_jump_of(path: Path, spec: &str) -> bool {
    let (root, comment) = (path.root(), path.jump_comment());
    if !spec.contains(root) {
        return false;
    }
    let t = crate::save::tokens(spec);
    let after = |flags: &[&str]| {
        t.windows(2)
            .filter(|w| flags.contains(&w[0].as_str()))
            .map(|w| w[1].as_str())
            .collect::<Vec<_>>()
    };
    after(&["-j", "--jump", "-g", "--goto"]).last() == Some(&root)
        && after(&["--comment"]).contains(&comment)
}

/// The first-level chain of `path` for `protocol` covering the bucket that starts at `start`.
pub fn level1_chain(path: Path, protocol: Protocol, start: u32) -> String {
    format!("{PREFIX}{}-{start}", path.tag(protocol))
}

/// The leaf chain of `path` for `protocol` covering `start..=start + LEAF_PORTS - 1`.
pub fn leaf_chain(path: Path, protocol: Protocol, start: u32) -> String {
    format!(
        "{PREFIX}{}-{start}-{}",
        path.tag(protocol),
        start + LEAF_PORTS - 1
    )
}

/// The comment on a rule rendered from `policy`'s entry `entry` (0-based; every rendered rule
/// is of one entry, see [`crate::render`]): at most 255 bytes (the kernel's limit), restricted
/// to characters every iptables version saves and restores unchanged.
pub fn entry_comment(policy: &str, entry: usize, state: &str) -> String {
    let tail = format!(" entry {entry}: {state}");
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

/// What an entry comment says: the policy name as written in it (cleaned and possibly cut, see
/// [`entry_comment`]), the entries and the state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryComment<'a> {
    /// The policy name as the comment carries it.
    pub policy: &'a str,
    /// The entries: one for every rule rendered now; several for a rule an older version wrote
    /// for adjacent entries of one policy (`web entries 0,1: open`).
    pub entries: Vec<usize>,
    /// The state word (`open`, `closed`, `filtered`).
    pub state: &'a str,
}

/// Parses a comment [`entry_comment`] writes, and the older `POLICY entries A,B: STATE` form;
/// `None` for any other comment.
pub fn parse_entry_comment(comment: &str) -> Option<EntryComment<'_>> {
    let (head, state) = comment.rsplit_once(": ")?;
    let (policy, list) = head
        .rsplit_once(" entry ")
        .or_else(|| head.rsplit_once(" entries "))?;
    let entries = list
        .split(',')
        .map(|n| n.parse::<usize>().ok())
        .collect::<Option<Vec<usize>>>()?;
    (!policy.is_empty() && !state.is_empty() && !state.contains(' ')).then_some(EntryComment {
        policy,
        entries,
        state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_kernel_limit() {
        // xt_table chain names are at most 28 characters.
        for path in Path::ALL {
            for p in [Protocol::Tcp, Protocol::Udp] {
                let leaf = leaf_chain(path, p, 65280);
                assert!(leaf.len() <= 28, "{leaf}");
                assert!(level1_chain(path, p, 61440).len() <= 28);
            }
        }
        assert_eq!(
            leaf_chain(Path::Input, Protocol::Tcp, 0),
            "PORTWARDEN-TCP-0-255"
        );
        assert_eq!(
            leaf_chain(Path::Forward, Protocol::Udp, 256),
            "PORTWARDEN-FUDP-256-511"
        );
        for name in [INPUT_CHAIN, FORWARD_CHAIN, FORWARD_PORTS_CHAIN] {
            assert!(is_owned(name) && name.len() <= 28, "{name}");
        }
        assert!(!is_owned("INPUT") && !is_owned("DOCKER") && !is_owned("FORWARD"));
        assert_eq!(path_of(FORWARD_PORTS_CHAIN), Some(Path::Forward));
        assert_eq!(path_of("PORTWARDEN-FUDP-0-255"), Some(Path::Forward));
        assert_eq!(path_of("PORTWARDEN-TCP-0"), Some(Path::Input));
        assert_eq!(path_of(INPUT_CHAIN), Some(Path::Input));
        assert_eq!(path_of("PORTWARDEN-FOO"), None);
    }

    #[test]
    fn ownership_is_the_naming_grammar_not_the_prefix() {
        for path in Path::ALL {
            for p in [Protocol::Tcp, Protocol::Udp] {
                for start in (0..65536).step_by(LEAF_PORTS as usize) {
                    let leaf = leaf_chain(path, p, start);
                    assert!(is_owned(&leaf), "{leaf}");
                }
                for start in (0..65536).step_by(LEVEL1_PORTS as usize) {
                    assert!(is_owned(&level1_chain(path, p, start)));
                }
            }
        }
        for foreign in [
            "PORTWARDEN-FOO",
            "PORTWARDEN-",
            "PORTWARDEN-INPUT2",
            "PORTWARDEN-TCP-5",
            "PORTWARDEN-TCP-04096",
            "PORTWARDEN-TCP-65536",
            "PORTWARDEN-TCP-256-510",
            "PORTWARDEN-TCP-100-355",
            "PORTWARDEN-ICMP-0",
            "PORTWARDEN-TCP-0-255-X",
            "PORTWARDEN-TCP-+0",
            "PORTWARDEN-FTCP-5",
            "PORTWARDEN-FORWARD2",
            "PORTWARDEN-FICMP-0",
            "portwarden-input",
        ] {
            assert!(!is_owned(foreign), "{foreign}");
        }
        assert!(is_lookalike_chain("PORTWARDEN-FOO") && !is_lookalike_chain(INPUT_CHAIN));
        assert!(!is_lookalike_chain("DOCKER"));
    }

    #[test]
    fn our_jump_is_input_to_the_root_with_the_comment() {
        let jump = crate::render::jump_spec(Path::Input);
        assert!(is_our_jump(HOOK_CHAIN, &jump));
        // moved or edited, the comment still says it is ours
        assert!(is_our_jump(HOOK_CHAIN, &format!("-s 10.0.0.0/8 {jump}")));
        assert!(
            !is_our_jump("FORWARD", &jump),
            "the INPUT jump's text in FORWARD is not portwarden's"
        );
        let forward = crate::render::jump_spec(Path::Forward);
        assert_eq!(jump_path("FORWARD", &forward), Some(Path::Forward));
        assert_eq!(jump_path(HOOK_CHAIN, &jump), Some(Path::Input));
        assert!(!is_our_jump(HOOK_CHAIN, &forward));
        assert!(!is_our_jump("DOCKER-USER", &forward));
        assert!(!is_our_jump("FORWARD", "-j PORTWARDEN-FORWARD"));
        assert!(!is_our_jump(HOOK_CHAIN, "-j PORTWARDEN-INPUT"));
        assert!(!is_our_jump(
            HOOK_CHAIN,
            "-m comment --comment \"portwarden: port exposure policies, managed (do not edit)\" -j PORTWARDEN-FOO"
        ));
        assert!(!is_our_jump(
            HOOK_CHAIN,
            "-m comment --comment \"mine: -j PORTWARDEN-INPUT\" -j PORTWARDEN-INPUT"
        ));
    }

    #[test]
    fn comments_are_bounded_and_plain() {
        let long = "a".repeat(300);
        let c = entry_comment(&long, 3, "closed");
        assert!(c.len() <= 255 && c.ends_with(" entry 3: closed"));
        let c = entry_comment(&long, 10000, "open");
        assert!(c.len() <= 255 && c.ends_with(" entry 10000: open"), "{c}");
        assert_eq!(entry_comment("we\"b", 0, "open"), "we_b entry 0: open");
    }

    #[test]
    fn entry_comments_parse_back_in_the_old_merged_form_too() {
        let c = entry_comment("web.v2", 7, "filtered");
        assert_eq!(
            parse_entry_comment(&c),
            Some(EntryComment {
                policy: "web.v2",
                entries: vec![7],
                state: "filtered"
            })
        );
        let old = parse_entry_comment("q entries 0,1: filtered").expect("old form");
        assert_eq!(
            (old.policy, old.entries, old.state),
            ("q", vec![0, 1], "filtered")
        );
        for other in [
            JUMP_COMMENT.to_string(),
            REPLIES_COMMENT.to_string(),
            "web entry x: open".into(),
            "web entry 1:".into(),
            " entry 1: open".into(),
            "kubernetes service portals".into(),
        ] {
            assert_eq!(parse_entry_comment(&other), None, "{other}");
        }
    }
}
