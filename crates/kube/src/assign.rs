//! Which peers each node scans.
//!
//! Every agent computes the same assignment from the same list of ready nodes, without talking
//! to the others: the nodes are put on a ring ordered by a stable hash of their names, and each
//! node scans the `k` nodes that follow it. So every ready node is scanned by exactly
//! `min(k, n - 1)` others, and no node scans itself.
//!
//! The hash (FNV-1a, fixed here rather than `std`'s hasher, whose output may change between Rust
//! releases) spreads neighbours by name (`web-1`, `web-2`) around the ring, so a rack or a role
//! is not only ever scanned by itself. A node joining or leaving changes the assignment of its
//! `k` ring predecessors only.
//!
//! # Caveats
//!
//! Agents decide from their own watch caches; for a moment after a node joins or leaves, two
//! agents may disagree, so a node may be scanned once more or once less for one interval.

/// FNV-1a over the name: stable across platforms, Rust versions and processes.
fn ring_key(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The names `me` scans among `ready` (which may or may not contain `me`), in ring order.
///
/// # Guarantees
///
/// * Deterministic: the same `ready` set (in any order) gives the same answer on every node.
/// * Over all nodes of `ready`, each is returned by exactly `min(count, ready.len() - 1)` others
///   and never for itself.
/// * When `me` is not ready (not in `ready`), it still scans the `count` nodes that follow its
///   place on the ring, so a node whose Ready condition flaps keeps scanning.
pub fn peers(ready: &[String], me: &str, count: usize) -> Vec<String> {
    let mut ring: Vec<(u64, &str)> = ready
        .iter()
        .map(|n| (ring_key(n), n.as_str()))
        .filter(|(_, n)| *n != me)
        .collect();
    ring.sort_unstable();
    ring.dedup();
    if ring.is_empty() || count == 0 {
        return Vec::new();
    }
    let start = ring.partition_point(|&entry| entry < (ring_key(me), me));
    (0..count.min(ring.len()))
        .map(|i| ring[(start + i) % ring.len()].1.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{i}")).collect()
    }

    #[test]
    fn every_node_is_scanned_by_exactly_k_others() {
        for n in [1, 2, 3, 7, 50] {
            for k in [0, 1, 2, 3, 10] {
                let ready = names(n);
                let mut scanned_by: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for me in &ready {
                    let p = peers(&ready, me, k);
                    assert!(!p.contains(me), "{me} scans itself");
                    let mut unique = p.clone();
                    unique.sort();
                    unique.dedup();
                    assert_eq!(unique.len(), p.len(), "duplicates in {p:?}");
                    for peer in p {
                        scanned_by.entry(peer).or_default().push(me.clone());
                    }
                }
                let want = k.min(n - 1);
                for node in &ready {
                    let got = scanned_by.get(node).map_or(0, Vec::len);
                    assert_eq!(got, want, "n={n} k={k}: {node} scanned by {got}");
                }
            }
        }
    }

    #[test]
    fn order_of_the_input_does_not_matter() {
        let ready = names(20);
        let mut shuffled = ready.clone();
        shuffled.reverse();
        shuffled.swap(3, 11);
        for me in &ready {
            assert_eq!(peers(&ready, me, 3), peers(&shuffled, me, 3));
        }
    }

    #[test]
    fn a_node_not_ready_still_scans_and_the_hash_is_stable() {
        let ready = names(5);
        assert_eq!(peers(&ready, "outsider", 2).len(), 2);
        // Pinned: every agent (and every future build) must agree on the ring.
        assert_eq!(ring_key(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(ring_key("a"), 0xaf63_dc4c_8601_ec8c);
    }
}
