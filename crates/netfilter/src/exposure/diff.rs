//! The pure comparison of two [`Decisions`] of one family: which (port range, source class)
//! a scanner sees change.
//!
//! The port space of each protocol is cut at every range boundary of either side, so within a
//! segment every rule of both sides matches all ports or none. Per segment, the sources are cut
//! into classes: every distinct source CIDR that a rule of either side for the segment names,
//! plus the whole family (`0.0.0.0/0`, `::/0`); the class of a CIDR is its addresses that no
//! narrower one of those holds. CIDRs are nested or disjoint, so every address of a class
//! matches the same rules there, and one representative address decides for the class; a
//! class with no address of its own (its narrower CIDRs cover it) is skipped.
//!
//! Naming only the sources of a segment's own rules keeps the rows few: tightening 443 for
//! everyone is one row `443/tcp from 0.0.0.0/0`, not one more per source that some other
//! port's rule names. Work is per segment and proportional to the rules covering it, and a
//! segment whose covering rules decide alike on both sides is skipped outright.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;
use portwarden_policy::{PortRange, Protocol};

use super::read::{Decision, Decisions};
use super::{Exposure, ExposureChange};
use crate::place::Family;

/// The changes from `before` to `after` of one family: one per protocol, source class and
/// pair of exposures, its ports merged into ranges, in protocol, first port, source order.
pub fn changes(family: Family, before: &Decisions, after: &Decisions) -> Vec<ExposureChange> {
    let mut out = Vec::new();
    for protocol in [Protocol::Tcp, Protocol::Udp] {
        let b: Vec<&Decision> = of(before, protocol);
        let a: Vec<&Decision> = of(after, protocol);
        let segments = Segments::new(b.iter().chain(&a).copied());
        let (cover_b, cover_a) = (segments.cover(&b), segments.cover(&a));
        // (segment, source class) -> (before, after)
        let mut found: BTreeMap<(usize, IpNet), (Exposure, Exposure)> = BTreeMap::new();
        for i in 0..segments.starts.len() {
            let (rb, ra) = (&cover_b[i], &cover_a[i]);
            let alike =
                |x: &&Decision, y: &&Decision| (x.source, x.exposure) == (y.source, y.exposure);
            if rb.len() == ra.len() && rb.iter().zip(ra).all(|(x, y)| alike(x, y)) {
                continue;
            }
            let classes = classes(family, rb.iter().chain(ra).copied());
            for class in &classes {
                let Some(rep) = representative(*class, &classes) else {
                    continue;
                };
                let (was, now) = (first_match(rb, rep), first_match(ra, rep));
                if was != now {
                    found.insert((i, *class), (was, now));
                }
            }
        }
        out.extend(segments.rows(protocol, &found));
    }
    out
}

fn of(d: &Decisions, protocol: Protocol) -> Vec<&Decision> {
    d.rules.iter().filter(|r| r.protocol == protocol).collect()
}

/// The exposure the first of `rules` (all covering one segment, in order) that matches
/// `source` gives.
fn first_match(rules: &[&Decision], source: IpAddr) -> Exposure {
    rules
        .iter()
        .find(|r| r.source.is_none_or(|s| s.contains(&source)))
        .map_or(Exposure::Unmanaged, |r| r.exposure)
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

    /// For every segment, the rules of `rules` that cover it, in order.
    fn cover<'a>(&self, rules: &[&'a Decision]) -> Vec<Vec<&'a Decision>> {
        let mut out: Vec<Vec<&Decision>> = vec![Vec::new(); self.starts.len()];
        for r in rules {
            for p in &r.ports {
                let (lo, hi) = (
                    self.index(u32::from(p.start)),
                    self.index(u32::from(p.end) + 1),
                );
                for seg in &mut out[lo..hi] {
                    seg.push(*r);
                }
            }
        }
        out
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
