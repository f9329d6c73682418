//! Per-entry packet counters at each refresh: the kernel's rule counters of both families (from
//! the refresh's own read when it wrote nothing, [`portwarden_netfilter::Plan::read`], else
//! read again with [`Netfilter::read_counters`]; attributed to entries by
//! [`portwarden_netfilter::entry_counters`]), tracks when each entry last matched, and keeps
//! the snapshot that `/metrics` ([`crate::metrics::EntryMetrics`]), the inside view and the
//! Kubernetes agent's PortReport show.
//!
//! A key design decision is that "last matched" is the agent's observation, not the kernel's:
//! the kernel counts packets, not when they came, so [`MatchTracker`] compares each refresh's
//! packet count with the previous one's. A count that grew is a match at this refresh; an
//! unchanged one keeps the old time; one that went down means the rules were rewritten (an
//! apply rewrites a chain, which starts its counters from 0) and is only a new baseline, as is
//! the first count the agent sees (those packets may be from before it started).
//!
//! # Caveats
//!
//! * The time is the refresh's, so a match is dated up to one refresh interval late.
//! * The counters are a second read per family per refresh (`iptables-save -c`, without the
//!   writer lock), besides the reconcile's own: the reconcile's read happens inside
//!   [`Netfilter::converge`], which does not hand its rulesets back.
//! * An entry whose rules were partly rewritten between two refreshes while its other rules
//!   matched can show a smaller total: then that refresh's matches are taken for a baseline.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use portwarden_netfilter::{EntryCounters, Family, Netfilter, Ruleset};
use portwarden_policy::{NodeIntent, Timestamp};
use portwarden_reconcile::inside::{EntryCountView, InsideView, MAX_ENTRY_VIEWS};
use tracing::warn;

use crate::metrics::EntrySample;
use crate::state::Shared;

/// One entry's counters in one family, with when the agent last saw it match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counted {
    /// The kernel's counters, attributed.
    pub counters: EntryCounters,
    /// When the entry's packet count last grew between two refreshes (in any family).
    pub last_match: Option<Timestamp>,
}

impl Counted {
    /// The family as the views spell it.
    pub fn family(&self) -> String {
        self.counters.family.to_string().to_lowercase()
    }
}

/// When each entry last matched, from the packet counts of successive refreshes.
#[derive(Clone, Debug, Default)]
pub struct MatchTracker {
    /// The packet count at the last refresh, per (policy, entry, family).
    packets: HashMap<(String, usize, portwarden_netfilter::Family), u64>,
    /// When each (policy, entry) was last seen matching.
    last_match: HashMap<(String, usize), Timestamp>,
}

impl MatchTracker {
    /// Takes one refresh's counters read at `now`, and returns them with each entry's last
    /// match. Entries no longer in `rows` are forgotten.
    pub fn observe(&mut self, rows: Vec<EntryCounters>, now: Timestamp) -> Vec<Counted> {
        let mut packets = HashMap::with_capacity(rows.len());
        for r in &rows {
            let key = (r.policy.clone(), r.entry, r.family);
            // None: first sight, a baseline. Less: rewritten, a baseline. Equal: no match.
            if self.packets.get(&key).is_some_and(|&old| r.packets > old) {
                self.last_match.insert((r.policy.clone(), r.entry), now);
            }
            packets.insert(key, r.packets);
        }
        self.packets = packets;
        let present: HashSet<(&str, usize)> =
            rows.iter().map(|r| (r.policy.as_str(), r.entry)).collect();
        self.last_match
            .retain(|(p, e), _| present.contains(&(p.as_str(), *e)));
        rows.into_iter()
            .map(|counters| Counted {
                last_match: self
                    .last_match
                    .get(&(counters.policy.clone(), counters.entry))
                    .copied(),
                counters,
            })
            .collect()
    }
}

/// What the last refresh counted, and what the next one needs.
#[derive(Default)]
pub struct EntryCounts {
    tracker: MatchTracker,
    /// The last refresh's counters, by policy, entry and family.
    pub counted: Arc<Vec<Counted>>,
    /// When they were read.
    pub at: Option<Timestamp>,
}

/// Reads the counters of `intent`'s entries at `now`.
///
/// # Errors
///
/// What could not be read: the rules (`*-save -c`), or the node's addresses.
fn read(
    shared: &Shared,
    intent: &Arc<NodeIntent>,
    read: Option<Vec<(Family, Ruleset)>>,
) -> Result<Vec<EntryCounters>, String> {
    let nf: Netfilter = shared.netfilter().map_err(|e| e.to_string())?;
    let current = match read {
        Some(current) => current,
        None => nf.read_counters().map_err(|e| e.to_string())?,
    };
    // The handle's render, which the refresh's plan has just made (and memoised).
    let rendered = nf
        .rendered(intent, &shared.config.effective_failsafe())
        .map_err(|e| e.to_string())?;
    Ok(portwarden_netfilter::entry_counters(
        intent, &rendered, &current,
    ))
}

/// Reads the counters at a refresh, tracks the matches and publishes the snapshot (metrics,
/// inside view). `read` is what the refresh's reconcile read when it wrote nothing (counted
/// from as is); `None` reads the counters now. A failed read is logged and keeps the last
/// snapshot.
pub fn refresh(shared: &Shared, read: Option<Vec<(Family, Ruleset)>>) {
    let Some(intent) = shared.with_state(|s| s.intent.clone()) else {
        return;
    };
    let _step = shared.step("counter read");
    let now = Timestamp::now();
    let mut counts = shared.counts();
    match self::read(shared, &intent, read) {
        Ok(rows) => {
            let counted = counts.tracker.observe(rows, now);
            shared.metrics.entries.set(samples(&counted));
            counts.counted = Arc::new(counted);
            counts.at = Some(now);
        }
        Err(e) => {
            warn!(error = %e, "per-entry counters not read; the last ones stay published")
        }
    }
}

/// The metric samples of a snapshot.
pub fn samples(counted: &[Counted]) -> Vec<EntrySample> {
    counted
        .iter()
        .map(|c| EntrySample {
            policy: c.counters.policy.clone(),
            entry: c.counters.entry,
            family: c.family(),
            packets: c.counters.packets,
            bytes: c.counters.bytes,
            last_match: c.last_match.map(Timestamp::unix),
        })
        .collect()
}

/// Puts a snapshot into an inside view: at most [`MAX_ENTRY_VIEWS`] rows, those that matched
/// last, then those with most packets, shown by policy, entry and family.
pub fn into_view(view: &mut InsideView, counted: &[Counted], at: Option<Timestamp>) {
    let mut rows: Vec<&Counted> = counted.iter().collect();
    if rows.len() > MAX_ENTRY_VIEWS {
        rows.sort_by_key(|c| {
            (
                std::cmp::Reverse(c.last_match),
                std::cmp::Reverse(c.counters.packets),
            )
        });
        view.omitted_entries = rows.len() - MAX_ENTRY_VIEWS;
        rows.truncate(MAX_ENTRY_VIEWS);
        rows.sort_by(|a, b| {
            let key = |c: &Counted| {
                (
                    c.counters.policy.clone(),
                    c.counters.entry,
                    c.counters.family,
                )
            };
            key(a).cmp(&key(b))
        });
    }
    view.entries = rows
        .into_iter()
        .map(|c| EntryCountView {
            policy: c.counters.policy.clone(),
            entry: c.counters.entry,
            family: c.family(),
            packets: c.counters.packets,
            bytes: c.counters.bytes,
            rules_expected: c.counters.rules_expected,
            rules_in_place: c.counters.rules_in_place,
            last_match: c.last_match.map(|t| t.to_string()),
        })
        .collect();
    view.counted_at = at.map(|t| t.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;
    use portwarden_netfilter::Family;

    fn row(policy: &str, entry: usize, family: Family, packets: u64) -> EntryCounters {
        EntryCounters {
            policy: policy.into(),
            entry,
            family,
            packets,
            bytes: packets * 60,
            rules_expected: 1,
            rules_in_place: 1,
        }
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_unix(secs)
    }

    fn last(counted: &[Counted]) -> Vec<Option<i64>> {
        counted
            .iter()
            .map(|c| c.last_match.map(Timestamp::unix))
            .collect()
    }

    #[test]
    fn a_growing_count_is_a_match_an_unchanged_one_keeps_it_a_smaller_one_is_a_baseline() {
        let mut t = MatchTracker::default();
        let q = |packets| vec![row("quarantine", 0, Family::Ipv4, packets)];
        // First sight: packets from before the agent looked are no match.
        assert_eq!(last(&t.observe(q(5), at(100))), vec![None]);
        // Unchanged: still none.
        assert_eq!(last(&t.observe(q(5), at(110))), vec![None]);
        // Grew: a match now.
        assert_eq!(last(&t.observe(q(7), at(120))), vec![Some(120)]);
        // Unchanged: the time stays.
        assert_eq!(last(&t.observe(q(7), at(130))), vec![Some(120)]);
        // Went down: the rules were rewritten. A baseline, not a match, the old time stays.
        assert_eq!(last(&t.observe(q(2), at(140))), vec![Some(120)]);
        // Grows from the new baseline: a match.
        assert_eq!(last(&t.observe(q(3), at(150))), vec![Some(150)]);
    }

    #[test]
    fn an_entry_matches_in_either_family_and_a_removed_entry_is_forgotten() {
        let mut t = MatchTracker::default();
        let rows = |v4, v6| {
            vec![
                row("quarantine", 0, Family::Ipv4, v4),
                row("quarantine", 0, Family::Ipv6, v6),
                row("web", 1, Family::Ipv4, 0),
            ]
        };
        t.observe(rows(1, 1), at(100));
        // IPv6 grew: the entry's time, on both families' rows; web did not match.
        assert_eq!(
            last(&t.observe(rows(1, 2), at(110))),
            vec![Some(110), Some(110), None]
        );
        // The entry leaves the intent, then comes back: its history is gone.
        t.observe(vec![row("web", 1, Family::Ipv4, 0)], at(120));
        assert_eq!(
            last(&t.observe(rows(1, 2), at(130))),
            vec![None, None, None]
        );
    }

    #[test]
    fn the_view_keeps_the_latest_matches_when_there_are_too_many_rows() {
        let counted: Vec<Counted> = (0..MAX_ENTRY_VIEWS + 5)
            .map(|e| Counted {
                counters: row("many", e, Family::Ipv4, e as u64),
                // The five highest entries matched; the others not.
                last_match: (e >= MAX_ENTRY_VIEWS).then_some(at(1_798_135_200)),
            })
            .collect();
        let mut view = InsideView::default();
        into_view(&mut view, &counted, Some(at(1_798_135_210)));
        assert_eq!(view.entries.len(), MAX_ENTRY_VIEWS);
        assert_eq!(view.omitted_entries, 5);
        // The omitted ones are the five with fewest packets that never matched: 0..5.
        assert_eq!(view.entries[0].entry, 5);
        let last = view.entries.last().unwrap();
        assert_eq!(
            (last.entry, last.last_match.as_deref()),
            (MAX_ENTRY_VIEWS + 4, Some("2026-12-24T18:00:00Z"))
        );
        assert_eq!(view.counted_at.as_deref(), Some("2026-12-24T18:00:10Z"));
        assert_eq!(view.entries[0].family, "ipv4");
    }
}
