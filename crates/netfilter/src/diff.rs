//! Diffing the desired chains of one family against its current ruleset.
//!
//! Pure: [`diff`] compares [`Desired`] with a parsed [`Ruleset`] and produces a [`FamilyPlan`]:
//! the human-readable rule additions and deletions, and the `iptables-restore --noflush` input
//! that makes the change in one transaction. Only the chains and the jump portwarden owns (see
//! [`chains`] for the exact rule) are compared; foreign chains and rules are read — for
//! shadowing, and to report [`Lookalike`]s — but never written.
//!
//! # The transaction
//!
//! ```text
//! *filter
//! :PORTWARDEN-TCP-0-255 - [0:0]       declare = create, or flush if it exists (--noflush)
//! -A PORTWARDEN-TCP-0-255 ...         the chain's full new contents
//! -D INPUT <saved spec>               a misplaced or duplicated jump, deleted by specification
//! -I INPUT 1 <jump>                   the jump, back at position 1
//! -X PORTWARDEN-OLD                   chains no longer wanted (flushed above, then deleted)
//! COMMIT
//! ```
//!
//! Only chains whose contents differ appear, so a change to one entry rewrites one leaf chain.
//! Deleting by specification rather than by position means a foreign rule inserted between our
//! read and our write can never be deleted in our place: the delete fails instead, and the
//! whole transaction with it.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fmt::Write as _;
use std::sync::Arc;

use portwarden_policy::{NodeIntent, State};
use serde::Serialize;

use crate::chains::{self, HOOK_CHAIN, INPUT_CHAIN, Path};
use crate::foreign_rule;
pub use crate::foreign_rule::target_of;
use crate::place::Family;
use crate::render::Desired;
use crate::save::{Chain, Ruleset, tokens};

/// Where portwarden's jump from `INPUT` stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum JumpState {
    /// Present once, at position 1, as rendered.
    InPlace,
    /// Not present.
    Missing,
    /// Present, but not only once at position 1 as rendered (moved down, duplicated or edited).
    /// Foreign rules that jump into portwarden's chains are not portwarden's jump: they are
    /// [`Lookalike`]s and do not make it displaced.
    Displaced {
        /// Every jump of portwarden's, as `INPUT#POSITION` (1-based).
        positions: Vec<String>,
    },
    /// Present but not wanted (reset).
    Unwanted,
}

/// A policy entry as referred to by reports.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct EntryRef {
    /// Policy name.
    #[serde(serialize_with = "crate::ser::ser_str")]
    pub policy: Arc<str>,
    /// Entry index (0-based).
    pub entry: usize,
    /// The entry's intended state.
    #[serde(serialize_with = "crate::ser::ser_state")]
    pub state: State,
}

/// A foreign rule above portwarden's jump that decides packets an entry is meant to decide.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Shadowing {
    /// Family.
    pub family: Family,
    /// The chain (always `INPUT`).
    pub chain: String,
    /// 1-based position in the chain.
    pub position: usize,
    /// The rule as saved.
    pub rule: String,
    /// Entries whose packets it may decide first.
    pub entries: Vec<EntryRef>,
}

impl std::fmt::Display for Shadowing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entries: Vec<String> = self
            .entries
            .iter()
            .map(|e| format!("{} entry {} ({})", e.policy, e.entry, e.state))
            .collect();
        write!(
            f,
            "foreign rule {}#{} ({}) `{}` sits above portwarden's jump and shadows {}",
            self.chain,
            self.position,
            self.family,
            self.rule,
            entries.join(", ")
        )
    }
}

/// What a [`Lookalike`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LookalikeKind {
    /// A chain named `PORTWARDEN-...` that is not one of the names portwarden writes.
    Chain,
    /// A rule portwarden did not write that jumps to one of portwarden's chains (from
    /// `FORWARD`, a user chain, or `INPUT` without portwarden's comment).
    JumpToOurs,
    /// A rule that jumps to a look-alike chain.
    JumpToLookalike,
    /// In a table iptables cannot print, one of several commented `INPUT` rules to
    /// `PORTWARDEN-INPUT` whose comment `nft` cannot show (see [`crate::native`]): any of them
    /// may be foreign, so none is deleted.
    UnknownJump,
}

/// A chain or rule that looks like portwarden's but is not (see [`chains`]): reported by plans,
/// never written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Lookalike {
    /// Family.
    pub family: Family,
    /// What it is.
    pub kind: LookalikeKind,
    /// The look-alike chain, or the chain holding the rule.
    pub chain: String,
    /// 1-based position of the rule in `chain`; `None` for a chain.
    pub position: Option<usize>,
    /// The rule as saved; `None` for a chain.
    pub rule: Option<String>,
}

impl fmt::Display for Lookalike {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (rule, position) = match (&self.rule, self.position) {
            (Some(rule), Some(position)) => (rule.as_str(), position),
            _ => {
                return write!(
                    f,
                    "{} chain {}: named like portwarden's chains but not one portwarden writes; \
                     not portwarden's, left alone",
                    self.family, self.chain
                );
            }
        };
        if self.kind == LookalikeKind::UnknownJump {
            return write!(
                f,
                "{} rule {}#{position} ({rule}) jumps to {INPUT_CHAIN} with a comment nft cannot \
                 show, as another rule there does: portwarden cannot tell which one is its own, so \
                 it deletes none of them and keeps {INPUT_CHAIN}, emptied; delete the foreign one \
                 by hand (`nft delete rule ...`) to let reset finish",
                self.family, self.chain
            );
        }
        let target = target_of(rule).unwrap_or("?");
        let what = match self.kind {
            LookalikeKind::JumpToLookalike => format!("jumps to the look-alike chain {target}"),
            _ => format!(
                "jumps to portwarden's chain {target} but portwarden did not write it (its only \
                 jump is in {HOOK_CHAIN}, with the comment \"{}\")",
                chains::JUMP_COMMENT
            ),
        };
        write!(
            f,
            "{} rule {}#{position} `{rule}`: {what}; not portwarden's, left alone",
            self.family, self.chain
        )
    }
}

/// A chain of portwarden's that is no longer wanted but that a foreign rule still jumps to: the
/// kernel refuses to delete a chain in use, so it is kept, emptied (an empty chain returns every
/// packet to its caller, so the foreign jump decides nothing).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Kept {
    /// Family.
    pub family: Family,
    /// The chain.
    pub chain: String,
    /// The foreign rules that jump to it, as `CHAIN#POSITION`.
    pub referenced_by: Vec<String>,
}

impl fmt::Display for Kept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} chain {} kept, emptied, not deleted: foreign rule {} jumps to it and the kernel \
             deletes no chain in use; delete that rule, then run `portwarden reset` again",
            self.family,
            self.chain,
            self.referenced_by.join(", ")
        )
    }
}

/// The change one family needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FamilyPlan {
    /// Family.
    pub family: Family,
    /// Rules and chains to add, one per item (`iptables -A CHAIN ...`, `iptables -N CHAIN`,
    /// `iptables -I INPUT 1 ...`).
    pub add: Vec<String>,
    /// Rules and chains to delete, one per item (`iptables -D CHAIN ...`, `iptables -X CHAIN`).
    pub delete: Vec<String>,
    /// Chains created, rewritten or deleted by the transaction.
    pub chains: Vec<String>,
    /// The state of the jump from `INPUT` before the change.
    pub jump: JumpState,
    /// The state of the jump from `FORWARD` before the change.
    pub forward_jump: JumpState,
    /// Foreign rules above the jump that shadow entries.
    pub shadowing: Vec<Shadowing>,
    /// Chains and rules that look like portwarden's but are not; never written.
    pub lookalikes: Vec<Lookalike>,
    /// Chains of portwarden's that are not wanted but stay (emptied): foreign rules jump to them.
    pub kept: Vec<Kept>,
    /// The `iptables-restore --noflush` input; empty when the family is converged.
    #[serde(skip)]
    pub restore: String,
    /// What the family converges to, for the read-back check.
    #[serde(skip)]
    pub desired: Desired,
    /// portwarden's part of the family as it was when planned, to roll back to when a later
    /// family's transaction fails.
    #[serde(skip)]
    pub before: Desired,
}

impl FamilyPlan {
    /// Whether the family needs a write.
    pub fn is_converged(&self) -> bool {
        self.restore.is_empty()
    }

    /// What kinds of difference the plan repairs, each once, in [`DriftKind`] order: the
    /// labels an agent counts drift repairs by.
    pub fn drift_kinds(&self) -> Vec<DriftKind> {
        let mut kinds = Vec::new();
        for state in [&self.jump, &self.forward_jump] {
            let kind = match state {
                JumpState::InPlace => continue,
                JumpState::Missing => DriftKind::JumpMissing,
                JumpState::Displaced { .. } => DriftKind::JumpDisplaced,
                JumpState::Unwanted => DriftKind::JumpUnwanted,
            };
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        let had = |name: &str| self.before.chains.iter().any(|(n, _)| n == name);
        let wanted = |name: &str| self.desired.chains.iter().any(|(n, _)| n == name);
        let rewritten = self.chains.iter().map(String::as_str);
        if rewritten.clone().any(|c| wanted(c) && !had(c)) {
            kinds.push(DriftKind::ChainMissing);
        }
        if rewritten.clone().any(|c| wanted(c) && had(c)) {
            kinds.push(DriftKind::RulesChanged);
        }
        if rewritten.clone().any(|c| !wanted(c)) {
            kinds.push(DriftKind::ChainUnwanted);
        }
        kinds
    }
}

/// A kind of difference between portwarden's rules in the kernel and the desired ones; when an
/// agent finds one at a refresh, someone else changed the rules (a flush, a table reload, an
/// edit of our chains).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftKind {
    /// No jump to portwarden's chains (`iptables -F INPUT`, a table reload).
    JumpMissing,
    /// The jump is not (only) at `INPUT` position 1.
    JumpDisplaced,
    /// A jump exists but none is wanted.
    JumpUnwanted,
    /// A chain of portwarden's is gone (a table reload, `iptables -X`).
    ChainMissing,
    /// A chain of portwarden's holds other rules than it should.
    RulesChanged,
    /// A chain of portwarden's (by its naming grammar) that should not exist.
    ChainUnwanted,
}

impl DriftKind {
    /// The metric label: `jump_missing`, `chain_missing`, `rules_changed`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            DriftKind::JumpMissing => "jump_missing",
            DriftKind::JumpDisplaced => "jump_displaced",
            DriftKind::JumpUnwanted => "jump_unwanted",
            DriftKind::ChainMissing => "chain_missing",
            DriftKind::RulesChanged => "rules_changed",
            DriftKind::ChainUnwanted => "chain_unwanted",
        }
    }
}

impl fmt::Display for DriftKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Compares portwarden's part of `current` with `desired`; `intent` (when given) is used to
/// find foreign rules above the jump that shadow its entries.
///
/// # Guarantees
///
/// * The restore input names only chains portwarden owns ([`chains::is_owned`]), plus `-D`/`-I`
///   of portwarden's jump ([`chains::is_our_jump`]); no foreign rule or chain is written, also
///   when it looks like portwarden's (those are listed in [`FamilyPlan::lookalikes`]).
/// * A chain of portwarden's that a foreign rule jumps to is never deleted: when unwanted it is
///   emptied and listed in [`FamilyPlan::kept`].
/// * An empty restore input (and empty `add`/`delete`) exactly when portwarden's chains and jump
///   already match `desired` token for token (a kept chain counts as matching once empty).
pub fn diff(desired: &Desired, current: &Ruleset, intent: Option<&NodeIntent>) -> FamilyPlan {
    let empty = Vec::new();
    let filter_chains = current.table("filter").map_or(&empty, |t| &t.chains);
    let outside = Outside::read(desired.family, filter_chains);
    let mut change = Change::new(desired.family.tool());
    change.rewrite_wanted(desired, filter_chains);
    let kept = change.drop_unwanted(desired, filter_chains, &outside.foreign_refs);
    let jump = change.jump(desired, &outside.jumps, Path::Input);
    let forward_jump = change.jump(desired, &outside.jumps, Path::Forward);
    let shadowing = intent.map_or_else(Vec::new, |intent| {
        shadowing(desired.family, filter_chains, &outside.jumps, intent)
    });
    let restore = change.restore_text();
    FamilyPlan {
        family: desired.family,
        chains: change.flush.iter().map(|s| s.to_string()).collect(),
        add: change.add,
        delete: change.delete,
        jump,
        forward_jump,
        shadowing,
        lookalikes: outside.lookalikes,
        kept,
        restore,
        desired: desired.clone(),
        before: before(desired.family, filter_chains, &outside.jumps),
    }
}

/// One of portwarden's jumps as found: the chain holding it, its 0-based position there, and
/// its specification.
type FoundJump<'a> = (&'a str, usize, &'a str);

/// What the chains that are not portwarden's hold of interest: portwarden's jumps (normally
/// just one, at `INPUT#1`), what only looks like portwarden's, and the foreign rules that jump
/// into portwarden's chains (they keep those chains alive).
struct Outside<'a> {
    jumps: Vec<FoundJump<'a>>,
    lookalikes: Vec<Lookalike>,
    /// Chain of portwarden's -> the foreign rules jumping to it, as `CHAIN#POSITION`.
    foreign_refs: HashMap<&'a str, Vec<String>>,
}

impl<'a> Outside<'a> {
    /// Reads every chain of `filter_chains` that portwarden does not own.
    fn read(family: Family, filter_chains: &'a [Chain]) -> Outside<'a> {
        let mut outside = Outside {
            jumps: Vec::new(),
            lookalikes: Vec::new(),
            foreign_refs: HashMap::new(),
        };
        for c in filter_chains.iter().filter(|c| !chains::is_owned(&c.name)) {
            if chains::is_lookalike_chain(&c.name) {
                outside.lookalikes.push(Lookalike {
                    family,
                    kind: LookalikeKind::Chain,
                    chain: c.name.clone(),
                    position: None,
                    rule: None,
                });
            }
            for (i, r) in c.rules.iter().enumerate() {
                outside.rule(family, c, i, &r.spec);
            }
        }
        outside
    }

    /// Files rule `i` (0-based) of the foreign chain `c`, when it jumps somewhere that matters.
    fn rule(&mut self, family: Family, c: &'a Chain, i: usize, spec: &'a str) {
        let Some(target) = target_of(spec) else {
            return;
        };
        let kind = if chains::is_owned(target) {
            if chains::is_our_jump(&c.name, spec) {
                self.jumps.push((&c.name, i, spec));
                return;
            }
            self.foreign_refs
                .entry(target)
                .or_default()
                .push(format!("{}#{}", c.name, i + 1));
            LookalikeKind::JumpToOurs
        } else if chains::is_lookalike_chain(target) {
            LookalikeKind::JumpToLookalike
        } else {
            return;
        };
        self.lookalikes.push(Lookalike {
            family,
            kind,
            chain: c.name.clone(),
            position: Some(i + 1),
            rule: Some(spec.to_string()),
        });
    }
}

/// The change being built for one family: what plans show (`add`, `delete`), and the parts of
/// the restore input (see the module docs for their order).
struct Change<'a> {
    tool: &'static str,
    add: Vec<String>,
    delete: Vec<String>,
    /// Chains declared in the transaction: created, or flushed (then rewritten, emptied or
    /// deleted).
    flush: Vec<&'a str>,
    /// The rewritten chains' rules, as `-A CHAIN ...` lines.
    write_rules: String,
    /// The deletes and inserts of portwarden's jumps.
    jump_lines: String,
    /// Chains deleted (`-X`), after everything else.
    remove: Vec<&'a str>,
}

impl<'a> Change<'a> {
    fn new(tool: &'static str) -> Change<'a> {
        Change {
            tool,
            add: Vec::new(),
            delete: Vec::new(),
            flush: Vec::new(),
            write_rules: String::new(),
            jump_lines: String::new(),
            remove: Vec::new(),
        }
    }

    /// Rewrites every wanted chain whose rules differ from what `filter_chains` holds (or that
    /// is missing), showing the rules added and deleted.
    fn rewrite_wanted(&mut self, desired: &'a Desired, filter_chains: &[Chain]) {
        let tool = self.tool;
        let current_owned: HashMap<&str, &Chain> = filter_chains
            .iter()
            .filter(|c| chains::is_owned(&c.name))
            .map(|c| (c.name.as_str(), c))
            .collect();
        for (name, rules) in &desired.chains {
            let same = current_owned.get(name.as_str()).map(|c| {
                c.rules.len() == rules.len()
                    && c.rules
                        .iter()
                        .zip(rules)
                        .all(|(a, b)| same_rule(&a.spec, b))
            });
            match same {
                Some(true) => continue,
                None => {
                    self.add.push(format!("{tool} -N {name}"));
                    self.add
                        .extend(rules.iter().map(|r| format!("{tool} -A {name} {r}")));
                }
                Some(false) => {
                    let have: Vec<&str> = current_owned[name.as_str()]
                        .rules
                        .iter()
                        .map(|r| r.spec.as_str())
                        .collect();
                    self.show_rewrite(name, rules, &have);
                }
            }
            self.flush.push(name);
            for r in rules {
                let _ = writeln!(self.write_rules, "-A {name} {r}");
            }
        }
    }

    /// Shows the rewrite of chain `name` from `have` to `rules` as the rules added and deleted.
    fn show_rewrite(&mut self, name: &str, rules: &[String], have: &[&str]) {
        let tool = self.tool;
        let (plus, minus) = multiset_diff(rules, have);
        if plus.is_empty() && minus.is_empty() {
            // same rules, new order: show the whole chain as replaced
            self.delete
                .extend(have.iter().map(|r| format!("{tool} -D {name} {r}")));
            self.add
                .extend(rules.iter().map(|r| format!("{tool} -A {name} {r}")));
        } else {
            self.delete
                .extend(minus.iter().map(|r| format!("{tool} -D {name} {r}")));
            self.add
                .extend(plus.iter().map(|r| format!("{tool} -A {name} {r}")));
        }
    }

    /// Deletes every chain of portwarden's that `desired` does not want, except those a foreign
    /// rule jumps to (`foreign_refs`): the kernel would refuse `-X` (and fail the whole
    /// transaction), so they are emptied, and returned.
    fn drop_unwanted(
        &mut self,
        desired: &Desired,
        filter_chains: &'a [Chain],
        foreign_refs: &HashMap<&str, Vec<String>>,
    ) -> Vec<Kept> {
        let tool = self.tool;
        let wanted: HashSet<&str> = desired.chains.iter().map(|(n, _)| n.as_str()).collect();
        let mut kept = Vec::new();
        for c in filter_chains.iter().filter(|c| chains::is_owned(&c.name)) {
            if wanted.contains(c.name.as_str()) {
                continue;
            }
            self.delete.extend(
                c.rules
                    .iter()
                    .map(|r| format!("{tool} -D {} {}", c.name, r.spec)),
            );
            if let Some(by) = foreign_refs.get(c.name.as_str()) {
                // In use by a foreign rule: emptied, it decides nothing.
                kept.push(Kept {
                    family: desired.family,
                    chain: c.name.clone(),
                    referenced_by: by.clone(),
                });
                if !c.rules.is_empty() {
                    self.flush.push(&c.name);
                }
                continue;
            }
            self.delete.push(format!("{tool} -X {}", c.name));
            self.flush.push(&c.name);
            self.remove.push(&c.name);
        }
        kept
    }

    /// Puts portwarden's jump of `path` where `desired` wants it (once, at position 1 of its
    /// hook chain, or nowhere): unless already so, every jump of ours found there is deleted
    /// by specification and the wanted one inserted. Returns where the jump stood.
    fn jump(&mut self, desired: &Desired, jumps: &[FoundJump<'_>], path: Path) -> JumpState {
        let tool = self.tool;
        let ours: Vec<&FoundJump<'_>> = jumps
            .iter()
            .filter(|(c, _, spec)| chains::jump_path(c, spec) == Some(path))
            .collect();
        let want = desired.jump_of(path);
        let ok = match (want, ours.as_slice()) {
            (Some(want), [(_, 0, spec)]) => same_rule(spec, want),
            (None, []) => true,
            _ => false,
        };
        if !ok {
            for (chain, _, spec) in &ours {
                self.delete.push(format!("{tool} -D {chain} {spec}"));
                let _ = writeln!(self.jump_lines, "-D {chain} {spec}");
            }
            if let Some(want) = want {
                let hook = path.hook();
                self.add.push(format!("{tool} -I {hook} 1 {want}"));
                let _ = writeln!(self.jump_lines, "-I {hook} 1 {want}");
            }
        }
        match (want, ours.is_empty(), ok) {
            (_, _, true) => JumpState::InPlace,
            (Some(_), true, false) => JumpState::Missing,
            (Some(_), false, false) => JumpState::Displaced {
                positions: ours
                    .iter()
                    .map(|(c, i, _)| format!("{c}#{}", i + 1))
                    .collect(),
            },
            (None, _, false) => JumpState::Unwanted,
        }
    }

    /// The `iptables-restore --noflush` input (see the module docs); empty when nothing changes.
    fn restore_text(&self) -> String {
        let mut restore = String::new();
        if self.flush.is_empty() && self.jump_lines.is_empty() {
            return restore;
        }
        restore.push_str("*filter\n");
        for name in &self.flush {
            let _ = writeln!(restore, ":{name} - [0:0]");
        }
        restore.push_str(&self.write_rules);
        restore.push_str(&self.jump_lines);
        for name in &self.remove {
            let _ = writeln!(restore, "-X {name}");
        }
        restore.push_str("COMMIT\n");
        restore
    }
}

/// Foreign rules above the first of portwarden's jumps in `INPUT`, which decide first, that
/// shadow entries of `intent` (a foreign jump into portwarden's chains decides as they do: a
/// look-alike, not shadowing).
fn shadowing(
    family: Family,
    filter_chains: &[Chain],
    jumps: &[FoundJump<'_>],
    intent: &NodeIntent,
) -> Vec<Shadowing> {
    let first = jumps
        .iter()
        .filter(|(c, _, _)| *c == HOOK_CHAIN)
        .map(|(_, i, _)| *i)
        .min();
    let (Some(first), Some(input)) = (first, filter_chains.iter().find(|c| c.name == HOOK_CHAIN))
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, r) in input.rules[..first].iter().enumerate() {
        if target_of(&r.spec).is_some_and(chains::is_owned) {
            continue;
        }
        let entries = shadowed_entries(family, &r.spec, intent);
        if !entries.is_empty() {
            out.push(Shadowing {
                family,
                chain: HOOK_CHAIN.to_string(),
                position: i + 1,
                rule: r.spec.clone(),
                entries,
            });
        }
    }
    out
}

/// portwarden's part of `filter_chains` as found: its chains, and the first of its jumps of
/// each path (what a rollback returns the family to).
fn before(family: Family, filter_chains: &[Chain], jumps: &[FoundJump<'_>]) -> Desired {
    Desired {
        family,
        chains: filter_chains
            .iter()
            .filter(|c| chains::is_owned(&c.name))
            .map(|c| {
                (
                    c.name.clone(),
                    c.rules.iter().map(|r| r.spec.clone()).collect(),
                )
            })
            .collect(),
        jump: before_jump(jumps, Path::Input),
        forward_jump: before_jump(jumps, Path::Forward),
    }
}

/// The first of portwarden's jumps of `path` among `refs`, as found.
fn before_jump(refs: &[FoundJump<'_>], path: Path) -> Option<String> {
    refs.iter()
        .find(|(c, _, spec)| chains::jump_path(c, spec) == Some(path))
        .map(|(_, _, spec)| spec.to_string())
}

/// Whether two rule specifications are the same rule: byte-equal (the common case, since
/// rules are rendered in iptables-save's form) or equal argument by argument.
fn same_rule(a: &str, b: &str) -> bool {
    a == b || tokens(a) == tokens(b)
}

/// Rules in `want` but not `have`, and in `have` but not `want`, compared by tokens, counting
/// duplicates.
fn multiset_diff<'a>(want: &'a [String], have: &[&'a str]) -> (Vec<&'a str>, Vec<&'a str>) {
    let mut counts: HashMap<Vec<String>, isize> = HashMap::new();
    for w in want {
        *counts.entry(tokens(w)).or_default() += 1;
    }
    for h in have {
        *counts.entry(tokens(h)).or_default() -= 1;
    }
    let mut plus = Vec::new();
    for w in want {
        let c = counts.get_mut(&tokens(w));
        if let Some(c) = c.filter(|c| **c > 0) {
            *c -= 1;
            plus.push(w.as_str());
        }
    }
    let mut minus = Vec::new();
    for h in have {
        let c = counts.get_mut(&tokens(h));
        if let Some(c) = c.filter(|c| **c < 0) {
            *c += 1;
            minus.push(*h);
        }
    }
    (plus, minus)
}

/// Entries (of this family) whose packets a foreign rule above the jump decides differently
/// from the entry, each once (see [`foreign_rule::decides_differently`]).
fn shadowed_entries(family: Family, spec: &str, intent: &NodeIntent) -> Vec<EntryRef> {
    let mut out: Vec<EntryRef> = Vec::new();
    for r in foreign_rule::decides_differently(family, spec, intent) {
        let e = EntryRef {
            policy: r.policy.clone(),
            entry: r.entry,
            state: r.state,
        };
        if !out.contains(&e) {
            out.push(e);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failsafe::Failsafe;
    use crate::render::render;
    use portwarden_policy::{PortRange, Protocol, Rule};

    fn intent() -> NodeIntent {
        let r = |entry, port, state| Rule {
            priority: 100,
            policy: "web".into(),
            entry,
            protocol: Protocol::Tcp,
            ports: PortRange::single(port),
            source: None,
            state,
            expires: None,
        };
        NodeIntent {
            policies: vec!["web".into()],
            rules: vec![r(0, 80, State::Open), r(1, 8080, State::Closed)],
            report_unlisted: false,
        }
    }

    /// The text iptables-save would print after applying `desired` on top of `foreign`.
    fn saved(desired: &Desired, foreign_input: &[&str]) -> String {
        let mut s = String::from(
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:DOCKER-USER - [0:0]\n",
        );
        for (n, _) in &desired.chains {
            s.push_str(&format!(":{n} - [0:0]\n"));
        }
        if let Some(j) = &desired.jump {
            s.push_str(&format!("[3:180] -A INPUT {j}\n"));
        }
        for f in foreign_input {
            s.push_str(&format!("-A INPUT {f}\n"));
        }
        if let Some(j) = &desired.forward_jump {
            s.push_str(&format!("-A FORWARD {j}\n"));
        }
        s.push_str("-A FORWARD -j DOCKER-USER\n");
        s.push_str("-A DOCKER-USER -j RETURN\n");
        for (n, rules) in &desired.chains {
            for r in rules {
                s.push_str(&format!("[1:60] -A {n} {r}\n"));
            }
        }
        s.push_str("COMMIT\n*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n");
        s
    }

    #[test]
    fn converged_means_no_write() {
        let r = render(&intent(), &Failsafe::default(), &[]);
        let current = Ruleset::parse(&saved(&r.v4, &["-j KUBE-FIREWALL"])).unwrap();
        let p = diff(&r.v4, &current, Some(&intent()));
        assert!(p.is_converged(), "{}", p.restore);
        assert!(p.add.is_empty() && p.delete.is_empty());
        assert_eq!(p.jump, JumpState::InPlace);
    }

    #[test]
    fn empty_node_gets_everything_in_one_transaction() {
        let r = render(&intent(), &Failsafe::default(), &[]);
        let current = Ruleset::parse(include_str!("../tests/samples/foreign-nft-v4.save")).unwrap();
        let p = diff(&r.v4, &current, Some(&intent()));
        assert_eq!(p.jump, JumpState::Missing);
        assert!(
            p.restore
                .starts_with("*filter\n:PORTWARDEN-INPUT - [0:0]\n")
        );
        assert!(p.restore.ends_with(&format!(
            "-I INPUT 1 {}\n-I FORWARD 1 {}\nCOMMIT\n",
            crate::render::jump_spec(crate::chains::Path::Input),
            crate::render::jump_spec(crate::chains::Path::Forward)
        )));
        // nothing foreign is written
        for line in p.restore.lines() {
            assert!(
                line.contains("PORTWARDEN-") || line == "*filter" || line == "COMMIT",
                "{line}"
            );
            assert!(!line.starts_with(":INPUT") && !line.starts_with("-A INPUT"));
            assert!(!line.starts_with(":FORWARD") && !line.starts_with("-A FORWARD"));
        }
        assert_eq!(p.add.len(), r.v4.rule_count() + r.v4.chains.len());
        assert!(p.delete.is_empty());
    }

    #[test]
    fn drift_kinds_name_what_a_foreign_tool_did() {
        let r = render(&intent(), &Failsafe::default(), &[]);
        let kinds = |text: &str| diff(&r.v4, &Ruleset::parse(text).unwrap(), None).drift_kinds();
        let ours = saved(&r.v4, &[]);
        assert_eq!(kinds(&ours), []);
        // `iptables -F INPUT`: only the jump is gone
        let jump = format!("[3:180] -A INPUT {}\n", r.v4.jump.clone().unwrap());
        assert_eq!(kinds(&ours.replace(&jump, "")), [DriftKind::JumpMissing]);
        // a whole-table reload (firewalld, iptables-restore without --noflush): nothing of ours
        let reloaded = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\nCOMMIT\n";
        assert_eq!(
            kinds(reloaded),
            [DriftKind::JumpMissing, DriftKind::ChainMissing]
        );
        // one of our rules deleted, and a stray chain of ours (a bucket no longer wanted)
        let (name, rules) = &r.v4.chains[1];
        let edited = ours.replacen(&format!("[1:60] -A {name} {}\n", rules[0]), "", 1);
        let stray = edited.replace(
            ":DOCKER-USER - [0:0]\n",
            ":DOCKER-USER - [0:0]\n:PORTWARDEN-UDP-65280-65535 - [0:0]\n",
        );
        assert_eq!(
            kinds(&stray),
            [DriftKind::RulesChanged, DriftKind::ChainUnwanted]
        );
        // a look-alike chain is not drift
        let lookalike = ours.replace(
            ":DOCKER-USER - [0:0]\n",
            ":DOCKER-USER - [0:0]\n:PORTWARDEN-OLD - [0:0]\n",
        );
        assert_eq!(kinds(&lookalike), []);
        // our jump moved down, or duplicated, is still repaired
        let jump = r.v4.jump.clone().unwrap();
        let moved = ours.replace(
            "-A DOCKER-USER -j RETURN\n",
            &format!("-A DOCKER-USER -j RETURN\n-A INPUT {jump}\n"),
        );
        assert_eq!(kinds(&moved), [DriftKind::JumpDisplaced]);
        let p = diff(&r.v4, &Ruleset::parse(&moved).unwrap(), None);
        assert_eq!(p.delete.len(), 2, "both copies deleted: {:?}", p.delete);
        assert_eq!(p.add, [format!("iptables -I INPUT 1 {jump}")]);
        assert_eq!(DriftKind::ChainMissing.to_string(), "chain_missing");
    }

    #[test]
    fn one_changed_entry_rewrites_one_chain_per_path() {
        let before = render(&intent(), &Failsafe::default(), &[]);
        let mut changed = intent();
        changed.rules[1].state = State::Filtered;
        let after = render(&changed, &Failsafe::default(), &[]);
        let current = Ruleset::parse(&saved(&before.v4, &[])).unwrap();
        let p = diff(&after.v4, &current, Some(&changed));
        assert_eq!(
            p.chains,
            ["PORTWARDEN-TCP-7936-8191", "PORTWARDEN-FTCP-7936-8191"]
        );
        assert_eq!(p.add.len(), 2);
        assert_eq!(p.delete.len(), 2);
        assert!(
            p.add[0].starts_with("iptables -A PORTWARDEN-TCP-7936-8191 ")
                && p.add[0].ends_with("-j DROP")
        );
        assert!(
            p.add[1].starts_with(
                "iptables -A PORTWARDEN-FTCP-7936-8191 -p tcp -m conntrack --ctorigdstport 8080 "
            ) && p.add[1].ends_with("-j DROP"),
            "{}",
            p.add[1]
        );
        // *filter, a declaration and a rule per chain, COMMIT
        assert_eq!(p.restore.lines().count(), 6);
    }

    #[test]
    fn displaced_jump_is_reinserted_and_shadowing_reported() {
        let r = render(&intent(), &Failsafe::default(), &[]);
        let jump = r.v4.jump.clone().unwrap();
        let mut text = saved(
            &Desired {
                jump: None,
                ..r.v4.clone()
            },
            &[
                "-p tcp -m tcp --dport 8080 -j DROP",
                "-p icmp -j DROP",
                "-j LOG",
            ],
        );
        text = text.replace(
            "-A INPUT -j LOG\n",
            &format!("-A INPUT -j LOG\n-A INPUT {jump}\n"),
        );
        let current = Ruleset::parse(&text).unwrap();
        let p = diff(&r.v4, &current, Some(&intent()));
        assert_eq!(
            p.jump,
            JumpState::Displaced {
                positions: vec!["INPUT#4".into()]
            }
        );
        assert_eq!(p.delete, [format!("iptables -D INPUT {jump}")]);
        assert_eq!(p.add, [format!("iptables -I INPUT 1 {jump}")]);
        assert_eq!(p.shadowing.len(), 1);
        let s = &p.shadowing[0];
        assert_eq!((s.position, s.entries.len()), (1, 1));
        assert_eq!((&*s.entries[0].policy, s.entries[0].entry), ("web", 1));
        assert!(s.to_string().contains("INPUT#1"));
        assert_eq!(
            p.restore,
            format!("*filter\n-D INPUT {jump}\n-I INPUT 1 {jump}\nCOMMIT\n")
        );
    }

    #[test]
    fn reset_removes_our_chains_and_jump_and_keeps_a_chain_in_foreign_use() {
        let r = render(&intent(), &Failsafe::default(), &[]);
        let current = Ruleset::parse(&saved(&r.v4, &[])).unwrap();
        let p = diff(&Desired::empty(Family::Ipv4), &current, None);
        assert!(matches!(p.jump, JumpState::Unwanted));
        let x: Vec<&str> = p.restore.lines().filter(|l| l.starts_with("-X ")).collect();
        assert_eq!(x.len(), r.v4.chains.len());
        assert!(p.kept.is_empty() && p.lookalikes.is_empty());
        // a foreign rule jumps to PORTWARDEN-INPUT: it stays, and so does the chain, emptied
        let text = saved(&r.v4, &[]).replace(
            "-A DOCKER-USER -j RETURN\n",
            "-A DOCKER-USER -j RETURN\n-A DOCKER-USER -j PORTWARDEN-INPUT\n",
        );
        let current = Ruleset::parse(&text).unwrap();
        let p = diff(&Desired::empty(Family::Ipv4), &current, None);
        let x: Vec<&str> = p.restore.lines().filter(|l| l.starts_with("-X ")).collect();
        assert_eq!(x.len(), r.v4.chains.len() - 1);
        assert!(!p.restore.contains("DOCKER-USER"), "{}", p.restore);
        assert!(p.restore.contains(":PORTWARDEN-INPUT - [0:0]\n"));
        assert_eq!(
            p.kept,
            [Kept {
                family: Family::Ipv4,
                chain: "PORTWARDEN-INPUT".into(),
                referenced_by: vec!["DOCKER-USER#2".into()],
            }]
        );
        assert!(p.kept[0].to_string().contains("kept, emptied"));
        // once emptied, a second reset has nothing to do
        let emptied = text
            .lines()
            .filter(|l| !l.contains("-A PORTWARDEN-") && !l.contains("-A INPUT"))
            .filter(|l| !l.contains("-j PORTWARDEN-FORWARD"))
            .filter(|l| !l.starts_with(':') || !l.contains("PORTWARDEN-") || l.contains("-INPUT "))
            .map(|l| format!("{l}\n"))
            .collect::<String>();
        let p = diff(
            &Desired::empty(Family::Ipv4),
            &Ruleset::parse(&emptied).unwrap(),
            None,
        );
        assert!(p.is_converged(), "{}\n{emptied}", p.restore);
        assert_eq!(p.kept.len(), 1);
        // a clean node needs nothing
        let clean =
            Ruleset::parse(include_str!("../tests/samples/foreign-legacy-v4.save")).unwrap();
        assert!(diff(&Desired::empty(Family::Ipv4), &clean, None).is_converged());
    }

    #[test]
    fn lookalikes_are_never_written() {
        // Issue 13 item 7: a foreign chain named like ours, the foreign INPUT rule that jumps
        // to it, and foreign rules (FORWARD, a user chain, INPUT without our comment) that jump
        // into our chains are not portwarden's.
        let r = render(&intent(), &Failsafe::default(), &[]);
        let text = saved(&r.v4, &["-p tcp -m tcp --dport 9000 -j PORTWARDEN-FOO"])
            .replace(
                ":DOCKER-USER - [0:0]\n",
                ":DOCKER-USER - [0:0]\n:PORTWARDEN-FOO - [0:0]\n",
            )
            .replace(
                "-A DOCKER-USER -j RETURN\n",
                "-A DOCKER-USER -j PORTWARDEN-INPUT\n-A DOCKER-USER -j RETURN\n\
                 -A FORWARD -j PORTWARDEN-INPUT\n-A INPUT -j PORTWARDEN-TCP-0\n\
                 -A PORTWARDEN-FOO -p tcp -m tcp --dport 9000 -j ACCEPT\n",
            );
        let current = Ruleset::parse(&text).unwrap();
        let p = diff(&r.v4, &current, Some(&intent()));
        assert!(p.is_converged(), "nothing of ours differs: {}", p.restore);
        assert_eq!(p.jump, JumpState::InPlace);
        assert!(p.shadowing.is_empty(), "{:?}", p.shadowing);
        // reset: our chains and jump go; the foreign rules and chain stay, and the chains
        // they jump to are emptied, not deleted (the kernel would refuse)
        let p = diff(&Desired::empty(Family::Ipv4), &current, None);
        for line in p.restore.lines() {
            assert!(
                !line.contains("FOO")
                    && !line.contains("DOCKER-USER")
                    && !line.contains("FORWARD -j PORTWARDEN-INPUT"),
                "foreign rule written: {line}\n{}",
                p.restore
            );
        }
        assert!(
            !p.restore.contains("-X PORTWARDEN-INPUT\n"),
            "{}",
            p.restore
        );
        assert!(
            !p.restore.contains("-X PORTWARDEN-TCP-0\n"),
            "{}",
            p.restore
        );
        assert!(p.restore.contains(":PORTWARDEN-INPUT - [0:0]\n"), "emptied");
        assert!(p.restore.contains("-X PORTWARDEN-TCP-0-255\n"));
        assert!(
            p.restore.contains(&format!(
                "-D INPUT {}\n",
                crate::render::jump_spec(crate::chains::Path::Input)
            )),
            "our jump goes"
        );
        assert!(!p.delete.iter().any(|d| d.contains("-X PORTWARDEN-INPUT")));
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["lookalikes"].as_array().map(Vec::len), Some(5), "{v}");
        assert_eq!(v["kept"].as_array().map(Vec::len), Some(2), "{v}");
    }

    #[test]
    fn analysis_of_foreign_rules() {
        let i = intent();
        let f = Family::Ipv4;
        assert!(shadowed_entries(f, "-p tcp -m tcp --dport 80 -j ACCEPT", &i).is_empty());
        assert_eq!(
            shadowed_entries(f, "-p tcp -m tcp --dport 80 -j DROP", &i).len(),
            1
        );
        assert_eq!(shadowed_entries(f, "-j DROP", &i).len(), 2);
        assert_eq!(shadowed_entries(f, "-j KUBE-SERVICES", &i).len(), 2);
        assert!(shadowed_entries(f, "-p udp -j DROP", &i).is_empty());
        assert!(
            shadowed_entries(f, "-p tcp -m multiport --dports 1:79,81:8079 -j DROP", &i).is_empty()
        );
        assert_eq!(
            shadowed_entries(
                f,
                "-p tcp -m tcp --dport 8080 -j REJECT --reject-with icmp-port-unreachable",
                &i
            )
            .len(),
            1
        );
        assert!(
            shadowed_entries(
                f,
                "-p tcp -m tcp --dport 8080 -j REJECT --reject-with tcp-reset",
                &i
            )
            .is_empty()
        );
        assert_eq!(
            target_of("-m comment --comment x -j PORTWARDEN-INPUT"),
            Some("PORTWARDEN-INPUT")
        );
    }
}
