//! The pure comparison of two [`Decisions`] of one family: which (port range, source class)
//! a scanner sees change.
//!
//! The port space of each protocol is cut at every range boundary of either side, so within a
//! segment every rule of both sides matches all ports or none. The sources are cut into
//! classes: every distinct source CIDR of either side's rules of that protocol, plus the whole
//! family (`0.0.0.0/0`, `::/0`); the class of a CIDR is its addresses that no narrower listed
//! CIDR holds. CIDRs are nested or disjoint, so every address of a class matches the same
//! rules, and one representative address decides for the class; a class with no address of its
//! own (its narrower CIDRs cover it) is skipped.
//!
//! A change is reported under the narrowest source that a rule *for that segment* names (or
//! the whole family): a class whose own CIDR no rule for those ports names decides there as
//! that enclosing source does, so `443/tcp from 0.0.0.0/0` is one row, not one per source some
//! other port's rule names. A row's source therefore means its addresses that no narrower
//! source of a rule for those ports holds.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;
use portwarden_policy::{PortRange, Protocol};

use super::read::{Decision, Decisions};
use super::{Exposure, ExposureChange};
use crate::place::Family;

/// The changes from `before` to `after` of one family: one per protocol, source and pair of
/// exposures, its ports merged into ranges, in protocol, first port, source order.
pub fn changes(family: Family, before: &Decisions, after: &Decisions) -> Vec<ExposureChange> {
    let mut out = Vec::new();
    for protocol in [Protocol::Tcp, Protocol::Udp] {
        let b: Vec<&Decision> = of(before, protocol);
        let a: Vec<&Decision> = of(after, protocol);
        let segments = Segments::new(b.iter().chain(&a).copied());
        let classes = classes(family, b.iter().chain(&a).copied());
        let named = segments.named(b.iter().chain(&a).copied());
        // (segment, the source it is reported under) -> (before, after)
        let mut found: BTreeMap<(usize, IpNet), (Exposure, Exposure)> = BTreeMap::new();
        for class in &classes {
            let Some(rep) = representative(*class, &classes) else {
                continue;
            };
            let was = segments.paint(&b, rep);
            let now = segments.paint(&a, rep);
            let mut enclosing: Vec<IpNet> = classes
                .iter()
                .filter(|m| m.contains(class))
                .copied()
                .collect();
            enclosing.sort_by_key(|m| std::cmp::Reverse(m.prefix_len()));
            for i in (0..was.len()).filter(|&i| was[i] != now[i]) {
                let owner = enclosing
                    .iter()
                    .find(|m| m.prefix_len() == 0 || named.get(*m).is_some_and(|v| covers(v, i)))
                    .copied()
                    .unwrap_or(*class);
                found.insert((i, owner), (was[i], now[i]));
            }
        }
        out.extend(segments.rows(protocol, &found));
    }
    out
}

/// Whether the sorted, disjoint segment intervals `v` (`[lo, hi)`) hold segment `i`.
fn covers(v: &[(usize, usize)], i: usize) -> bool {
    let k = v.partition_point(|&(lo, _)| lo <= i);
    k > 0 && i < v[k - 1].1
}

fn of(d: &Decisions, protocol: Protocol) -> Vec<&Decision> {
    d.rules.iter().filter(|r| r.protocol == protocol).collect()
}

/// The source classes: the distinct sources and the whole family, sorted.
fn classes<'a>(family: Family, rules: impl Iterator<Item = &'a Decision>) -> Vec<IpNet> {
    let all = match family {
        Family::Ipv4 => IpNet::V4(ipnet::Ipv4Net::default()),
        Family::Ipv6 => IpNet::V6(ipnet::Ipv6Net::default()),
    };
    let mut v: Vec<IpNet> = rules
        .filter_map(|r| r.source)
        .filter(|n| family.holds(n))
        .map(|n| n.trunc())
        .chain([all])
        .collect();
    v.sort();
    v.dedup();
    v
}

/// An address of `class` that no narrower CIDR of `listed` holds; `None` when they cover it.
pub(super) fn representative(class: IpNet, listed: &[IpNet]) -> Option<IpAddr> {
    let inner: Vec<IpNet> = listed
        .iter()
        .filter(|m| m.prefix_len() > class.prefix_len() && class.contains(*m))
        .copied()
        .collect();
    uncovered(class, &inner)
}

/// An address of `net` outside every CIDR of `inner` (all overlap `net`).
fn uncovered(net: IpNet, inner: &[IpNet]) -> Option<IpAddr> {
    if inner.is_empty() {
        return Some(net.network());
    }
    if inner.iter().any(|m| m.contains(&net)) {
        return None;
    }
    // Some CIDR of `inner` is strictly narrower than `net`, so `net` has halves.
    let halves = net.subnets(net.prefix_len() + 1).ok()?;
    for half in halves {
        let within: Vec<IpNet> = inner
            .iter()
            .filter(|m| half.contains(*m) || m.contains(&half))
            .copied()
            .collect();
        if let Some(a) = uncovered(half, &within) {
            return Some(a);
        }
    }
    None
}

/// The port space of one protocol cut at every boundary: segment `i` is
/// `starts[i]..starts[i + 1]` (the last one ends at 65535).
struct Segments {
    starts: Vec<u32>,
}

impl Segments {
    fn new<'a>(rules: impl Iterator<Item = &'a Decision>) -> Segments {
        let mut starts: Vec<u32> = vec![0];
        for r in rules {
            for p in &r.ports {
                starts.push(u32::from(p.start));
                starts.push(u32::from(p.end) + 1);
            }
        }
        starts.retain(|&s| s <= 65535);
        starts.sort_unstable();
        starts.dedup();
        Segments { starts }
    }

    /// The index of the segment starting at `port` (every range start is one).
    fn index(&self, port: u32) -> usize {
        self.starts.partition_point(|&s| s < port)
    }

    /// The exposure of every segment for a probe from `source`, by first match over `rules`:
    /// each rule paints the segments no earlier rule has, skipping painted runs.
    fn paint(&self, rules: &[&Decision], source: IpAddr) -> Vec<Exposure> {
        let n = self.starts.len();
        let mut out = vec![Exposure::Unmanaged; n];
        // next[i]: the first unpainted segment at or after i (n: none)
        let mut next: Vec<usize> = (0..=n).collect();
        for r in rules
            .iter()
            .filter(|r| r.source.is_none_or(|s| s.contains(&source)))
        {
            for p in &r.ports {
                let end = self.index(u32::from(p.end) + 1);
                let mut i = find(&mut next, self.index(u32::from(p.start)));
                while i < end {
                    out[i] = r.exposure;
                    next[i] = i + 1;
                    i = find(&mut next, i + 1);
                }
            }
        }
        out
    }

    /// For every source some rule names, the segments its rules cover, as sorted, joined
    /// `[lo, hi)` intervals of segment indices.
    fn named<'a>(
        &self,
        rules: impl Iterator<Item = &'a Decision>,
    ) -> HashMap<IpNet, Vec<(usize, usize)>> {
        let mut m: HashMap<IpNet, Vec<(usize, usize)>> = HashMap::new();
        for r in rules {
            let Some(source) = r.source else { continue };
            let v = m.entry(source.trunc()).or_default();
            v.extend(r.ports.iter().map(|p| {
                (
                    self.index(u32::from(p.start)),
                    self.index(u32::from(p.end) + 1),
                )
            }));
        }
        for v in m.values_mut() {
            v.sort_unstable();
            let mut joined: Vec<(usize, usize)> = Vec::with_capacity(v.len());
            for &(lo, hi) in v.iter() {
                match joined.last_mut() {
                    Some(last) if lo <= last.1 => last.1 = last.1.max(hi),
                    _ => joined.push((lo, hi)),
                }
            }
            *v = joined;
        }
        m
    }

    /// The rows of `found` ((segment, source) -> (before, after)): per source and pair of
    /// exposures, the segments merged into port ranges, in first port, source order.
    fn rows(
        &self,
        protocol: Protocol,
        found: &BTreeMap<(usize, IpNet), (Exposure, Exposure)>,
    ) -> Vec<ExposureChange> {
        let mut rows: Vec<ExposureChange> = Vec::new();
        let mut index: HashMap<(IpNet, Exposure, Exposure), usize> = HashMap::new();
        for (&(i, source), &(before, after)) in found {
            let start = self.starts[i] as u16;
            let end = self.starts.get(i + 1).map_or(65535, |&s| (s - 1) as u16);
            let range = PortRange { start, end };
            match index.get(&(source, before, after)) {
                Some(&k) => match rows[k].ports.last_mut() {
                    Some(last) if u32::from(last.end) + 1 == u32::from(start) => last.end = end,
                    _ => rows[k].ports.push(range),
                },
                None => {
                    index.insert((source, before, after), rows.len());
                    rows.push(ExposureChange {
                        ports: vec![range],
                        protocol,
                        source,
                        before,
                        after,
                    });
                }
            }
        }
        rows.sort_by(|x, y| {
            (x.ports[0].start, x.source.prefix_len(), x.source.network()).cmp(&(
                y.ports[0].start,
                y.source.prefix_len(),
                y.source.network(),
            ))
        });
        rows
    }
}

/// The root of `i` in the skip list `next`, with path halving.
fn find(next: &mut [usize], mut i: usize) -> usize {
    while next[i] != i {
        next[i] = next[next[i]];
        i = next[i];
    }
    i
}
