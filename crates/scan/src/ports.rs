//! Port lists in nmap's `-p` syntax: `22`, `1-1024`, `22,80,8000-8100`, `-` (1-65535),
//! open-ended `8000-` and `-1024`.

use crate::ScanError;

/// A sorted, de-duplicated list of ports.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortList {
    ports: Vec<u16>,
}

impl PortList {
    /// Parses nmap's port syntax.
    ///
    /// # Errors
    /// [`ScanError::PortSpec`] naming the offending item: empty items, non-numbers, numbers
    /// above 65535, reversed ranges.
    pub fn parse(spec: &str) -> Result<Self, ScanError> {
        let bad = |item: &str, why: &str| ScanError::PortSpec {
            spec: spec.to_string(),
            item: item.to_string(),
            why: why.to_string(),
        };
        let num = |item: &str, s: &str| -> Result<u16, ScanError> {
            s.trim()
                .parse::<u16>()
                .map_err(|_| bad(item, "expected a port number 0-65535"))
        };
        // Ranges first, expanded once merged: expanding each item would let a spec repeating
        // "-" take 128 KiB per item (gigabytes for a few thousand items).
        let mut ranges: Vec<(u16, u16)> = Vec::new();
        if spec.trim().is_empty() {
            return Err(bad(spec, "empty port list"));
        }
        for item in spec.split(',') {
            let item = item.trim();
            if item.is_empty() {
                return Err(bad(item, "empty item (two commas in a row?)"));
            }
            let (lo, hi) = match item.split_once('-') {
                None => {
                    let p = num(item, item)?;
                    (p, p)
                }
                Some((a, b)) => {
                    let lo = if a.trim().is_empty() {
                        1
                    } else {
                        num(item, a)?
                    };
                    let hi = if b.trim().is_empty() {
                        65535
                    } else {
                        num(item, b)?
                    };
                    if lo > hi {
                        return Err(bad(item, "range start is above its end"));
                    }
                    (lo, hi)
                }
            };
            ranges.push((lo, hi));
        }
        ranges.sort_unstable();
        let mut ports: Vec<u16> = Vec::new();
        for (lo, hi) in ranges {
            // Ports below the last one kept are already in the list.
            let from = match ports.last() {
                Some(&last) if last >= hi => continue,
                Some(&last) if last >= lo => last + 1,
                _ => lo,
            };
            ports.extend(from..=hi);
        }
        Ok(PortList { ports })
    }

    /// Builds a list from ports (sorted and de-duplicated here).
    pub fn from_ports(mut ports: Vec<u16>) -> Self {
        ports.sort_unstable();
        ports.dedup();
        PortList { ports }
    }

    /// The ports, ascending.
    pub fn as_slice(&self) -> &[u16] {
        &self.ports
    }

    /// Number of ports.
    pub fn len(&self) -> usize {
        self.ports.len()
    }

    /// Whether there are no ports.
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    /// nmap's compact form, e.g. `22,80,8000-8100` (as in XML `scaninfo services=`).
    pub fn to_nmap_string(&self) -> String {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.ports.len() {
            let start = self.ports[i];
            let mut end = start;
            while i + 1 < self.ports.len() && self.ports[i + 1] == end.wrapping_add(1) {
                i += 1;
                end = self.ports[i];
            }
            if start == end {
                out.push(start.to_string());
            } else {
                out.push(format!("{start}-{end}"));
            }
            i += 1;
        }
        out.join(",")
    }
}

impl std::str::FromStr for PortList {
    type Err = ScanError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PortList::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nmap_forms() {
        assert_eq!(PortList::parse("22").expect("ok").as_slice(), &[22]);
        assert_eq!(PortList::parse("1-1024").expect("ok").len(), 1024);
        let l = PortList::parse("22,80,8000-8100").expect("ok");
        assert_eq!(l.len(), 2 + 101);
        assert_eq!(l.to_nmap_string(), "22,80,8000-8100");
        let all = PortList::parse("-").expect("ok");
        assert_eq!(all.len(), 65535);
        assert_eq!(all.as_slice()[0], 1);
        assert_eq!(PortList::parse("65000-").expect("ok").len(), 536);
        assert_eq!(PortList::parse("-10").expect("ok").len(), 10);
        assert_eq!(
            PortList::parse("80,22,80").expect("ok").as_slice(),
            &[22, 80]
        );
        assert_eq!(
            PortList::parse(" 22 , 23 ").expect("ok").as_slice(),
            &[22, 23]
        );
    }

    #[test]
    fn hostile_specs_stay_small() {
        // 20,000 copies of the whole range: expanded item by item this took 2.6 GB.
        let spec = vec!["-"; 20_000].join(",");
        let l = PortList::parse(&spec).expect("ok");
        assert_eq!(l.len(), 65535);
        assert_eq!(l.to_nmap_string(), "1-65535");
        let spec: String = (0..=65535u32).rev().map(|p| format!("{p},")).collect();
        let l = PortList::parse(spec.trim_end_matches(',')).expect("ok");
        assert_eq!(l.len(), 65536);
        assert_eq!(l.to_nmap_string(), "0-65535");
        let l = PortList::parse("10-20,15-30,30,5-9,31").expect("ok");
        assert_eq!(l.to_nmap_string(), "5-31");
        crate::fuzzing::port_list(b"1-3,2,0-1,65535,-,7-");
    }

    #[test]
    fn errors_name_the_item() {
        let e = PortList::parse("22,,80").expect_err("empty");
        assert!(e.to_string().contains("empty item"), "{e}");
        let e = PortList::parse("22,http").expect_err("name");
        assert!(e.to_string().contains("\"http\""), "{e}");
        let e = PortList::parse("70000").expect_err("big");
        assert!(e.to_string().contains("0-65535"), "{e}");
        let e = PortList::parse("100-1").expect_err("reversed");
        assert!(e.to_string().contains("above"), "{e}");
        assert!(PortList::parse("").is_err());
    }
}
