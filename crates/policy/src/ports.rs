//! Port ranges and the port-list syntax of policy entries: `"80"`, `"8000-8100"`,
//! `"22,80,443"`, a bare number, or a YAML list of any of those.

use std::fmt;

/// An inclusive range of ports, `start <= end`, both in 1..=65535.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    /// First port of the range.
    pub start: u16,
    /// Last port of the range (inclusive).
    pub end: u16,
}

impl PortRange {
    /// A range of one port.
    pub fn single(port: u16) -> PortRange {
        PortRange {
            start: port,
            end: port,
        }
    }

    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        self.start <= port && port <= self.end
    }

    /// How many ports the range holds.
    pub fn width(&self) -> u32 {
        u32::from(self.end) - u32::from(self.start) + 1
    }

    /// Whether two ranges share a port.
    pub fn overlaps(&self, other: &PortRange) -> bool {
        self.start <= other.end && other.start <= self.end
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

/// Why a port expression is invalid. The message is complete; the caller adds the location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortError(pub String);

impl fmt::Display for PortError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses one port number, 1..=65535.
pub fn parse_port(text: &str) -> Result<u16, PortError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(PortError("empty port number".into()));
    }
    if !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PortError(format!(
            "\"{t}\" is not a port number (expected 1-65535, e.g. \"80\" or \"8000-8100\")"
        )));
    }
    match t.parse::<u32>() {
        Ok(0) => Err(PortError(
            "port 0 is not a valid port (ports are 1-65535)".into(),
        )),
        Ok(p) if p <= 65535 => Ok(p as u16),
        _ => Err(PortError(format!(
            "port {t} is out of range (ports are 1-65535)"
        ))),
    }
}

/// Parses `"80"` or `"8000-8100"`.
pub fn parse_range(text: &str) -> Result<PortRange, PortError> {
    let t = text.trim();
    // `-1` is a negative number, not a range without a start: say so, with the number written.
    if let Some(digits) = t.strip_prefix('-')
        && !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(PortError(format!(
            "port {t} is out of range (ports are 1-65535)"
        )));
    }
    match t.split_once('-') {
        None => parse_port(t).map(PortRange::single),
        Some((a, b)) => {
            let start = parse_port(a)?;
            let end = parse_port(b)?;
            if start > end {
                return Err(PortError(format!(
                    "port range \"{t}\" starts after it ends (did you mean \"{end}-{start}\"?)"
                )));
            }
            Ok(PortRange { start, end })
        }
    }
}

/// Parses a comma-separated list of ports and ranges: `"22,80,8000-8100"`.
pub fn parse_list(text: &str) -> Result<Vec<PortRange>, PortError> {
    if text.trim().is_empty() {
        return Err(PortError("empty port list (give at least one port)".into()));
    }
    text.split(',').map(parse_range).collect()
}

/// Merges overlapping and adjacent ranges; the result is sorted and disjoint.
pub fn normalize(mut ranges: Vec<PortRange>) -> Vec<PortRange> {
    ranges.sort();
    let mut out: Vec<PortRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if u32::from(r.start) <= u32::from(last.end) + 1 => {
                last.end = last.end.max(r.end);
            }
            _ => out.push(r),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_range_and_list() {
        assert_eq!(parse_range("80").unwrap(), PortRange::single(80));
        assert_eq!(
            parse_range("8000-8100").unwrap(),
            PortRange {
                start: 8000,
                end: 8100
            }
        );
        assert_eq!(parse_list("22, 80,443").unwrap().len(), 3);
        assert_eq!(parse_range("1-65535").unwrap().width(), 65535);
    }

    #[test]
    fn errors_say_why() {
        assert!(parse_port("0").unwrap_err().0.contains("port 0"));
        assert!(parse_port("65536").unwrap_err().0.contains("out of range"));
        assert!(parse_port("http").unwrap_err().0.contains("not a port"));
        assert!(parse_port("-1").is_err());
        assert!(
            parse_range("90-80")
                .unwrap_err()
                .0
                .contains("did you mean \"80-90\"")
        );
        assert!(parse_range("80-").is_err());
        // A negative number (a Kubernetes object's `ports: -1` arrives as text) is one.
        assert_eq!(
            parse_list("-1").unwrap_err().0,
            "port -1 is out of range (ports are 1-65535)"
        );
        assert!(parse_list("").unwrap_err().0.contains("empty"));
        assert!(parse_list("80,,81").is_err());
    }

    #[test]
    fn normalize_merges_adjacent_and_overlapping() {
        let r = normalize(vec![
            PortRange::single(81),
            PortRange::single(80),
            PortRange { start: 85, end: 90 },
            PortRange { start: 88, end: 95 },
        ]);
        assert_eq!(
            r,
            vec![
                PortRange { start: 80, end: 81 },
                PortRange { start: 85, end: 95 }
            ]
        );
    }
}
