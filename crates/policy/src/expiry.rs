//! Expiry instants of port entries: RFC 3339 in, seconds since the epoch (UTC) inside,
//! iptables' `-m time --datestop` out.
//!
//! A key design decision: an expiring entry is enforced by the kernel, not by a process. Its
//! rules carry a time match that stops matching at the instant, so the next entry in precedence
//! order decides even when no portwarden process runs, exactly as if the entry were deleted.
//! iptables' time match counts whole seconds in UTC and matches while the packet's second is at
//! or before `--datestop`, so an entry expiring at `T` is rendered with `--datestop T - 1s`:
//! it matches through `T - 1s` and stops at `T`, which is what the model ([`Timestamp`]
//! comparison, `now >= T` is expired) says. Fractions of a second are dropped (an expiry is
//! kept to the second).
//!
//! The time match holds dates from 1970 to 2038-12-31T23:59:59 (iptables refuses a later
//! `--datestop`), so later expiries are refused by validation.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// An instant, in whole seconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

/// The earliest expiry the kernel's time match can express (its `--datestop` is then the epoch).
pub const EARLIEST: Timestamp = Timestamp(1);

/// The latest expiry iptables' time match can express: `--datestop 2038-12-31T23:59:59` is the
/// last date it accepts.
pub const LATEST: Timestamp = Timestamp(2_177_452_800);

impl Timestamp {
    /// The instant `secs` seconds after the epoch.
    pub const fn from_unix(secs: i64) -> Timestamp {
        Timestamp(secs)
    }

    /// Seconds since the epoch.
    pub const fn unix(self) -> i64 {
        self.0
    }

    /// The current wall-clock time (the kernel's time match reads the same clock).
    pub fn now() -> Timestamp {
        let secs = match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
        };
        Timestamp(secs)
    }

    /// Whether an entry expiring at `self` is no longer applied at `now`.
    pub fn expired_at(self, now: Timestamp) -> bool {
        now >= self
    }

    /// The `--datestop` value of a rule expiring at `self`, in exactly the form `iptables-save`
    /// prints it (`YYYY-MM-DDTHH:MM:SS`, UTC): the last second in which the rule still matches.
    pub fn datestop(self) -> String {
        let (date, time) = civil(self.0 - 1);
        format!("{date}T{time}")
    }

    /// Parses an RFC 3339 date-time with an offset (`2026-12-24T18:00:00Z`,
    /// `2026-12-24T19:00:00+01:00`, fractions of a second allowed and dropped).
    ///
    /// # Errors
    ///
    /// What is wrong, and a fix when one is obvious: a time without an offset, a date without a
    /// time, fields out of range.
    pub fn parse_rfc3339(text: &str) -> Result<Timestamp, (String, Option<String>)> {
        let shape = || {
            (
                format!(
                    "invalid time \"{text}\" (expected RFC 3339 with an offset, such as 2026-12-24T18:00:00Z)"
                ),
                None,
            )
        };
        let b = text.as_bytes();
        let digits = |range: std::ops::Range<usize>| digits_at(b, range);
        let sep = |i: usize, c: u8| b.get(i) == Some(&c);
        let (Some(year), Some(month), Some(day)) = (digits(0..4), digits(5..7), digits(8..10))
        else {
            return Err(shape());
        };
        if !sep(4, b'-') || !sep(7, b'-') {
            return Err(shape());
        }
        if b.len() == 10 {
            return Err((
                format!("\"{text}\" is a date without a time of day and UTC offset"),
                Some(format!("write an instant, e.g. \"{text}T00:00:00Z\"")),
            ));
        }
        if !matches!(b.get(10), Some(b'T' | b't')) {
            return Err(shape());
        }
        let (Some(hour), Some(minute), Some(second)) =
            (digits(11..13), digits(14..16), digits(17..19))
        else {
            return Err(shape());
        };
        if !sep(13, b':') || !sep(16, b':') {
            return Err(shape());
        }
        let i = after_fraction(b, 19).ok_or_else(shape)?;
        let offset = offset_at(text, i)?.ok_or_else(shape)?;
        if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
            return Err((format!("no such date in \"{text}\""), None));
        }
        if hour > 23 || minute > 59 || second > 59 {
            return Err((format!("no such time of day in \"{text}\""), None));
        }
        let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
            - offset;
        Ok(Timestamp(secs))
    }
}

/// The number in `b[range]`, if every byte there is a digit.
fn digits_at(b: &[u8], range: std::ops::Range<usize>) -> Option<i64> {
    let s = b.get(range)?;
    if s.iter().all(u8::is_ascii_digit) {
        std::str::from_utf8(s).ok()?.parse().ok()
    } else {
        None
    }
}

/// Where the text goes on after the seconds at `i`: past a fraction (`.` and at least one
/// digit) if there is one; `None` for a `.` without digits.
fn after_fraction(b: &[u8], mut i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'.') {
        return Some(i);
    }
    i += 1;
    let start = i;
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    (i > start).then_some(i)
}

/// The UTC offset in seconds that ends `text` at byte `i` (`Z` or `+HH:MM` / `-HH:MM`);
/// `Ok(None)` when what stands there has the wrong shape.
///
/// # Errors
///
/// No offset at all, or one out of range: what is wrong and, for a missing one, the fix.
fn offset_at(text: &str, i: usize) -> Result<Option<i64>, (String, Option<String>)> {
    let b = text.as_bytes();
    match b.get(i) {
        None => Err((
            format!(
                "time \"{text}\" has no UTC offset, so it means a different instant on every node"
            ),
            Some(format!(
                "add \"Z\" for UTC (\"{text}Z\") or an offset such as \"+01:00\""
            )),
        )),
        Some(b'Z' | b'z') if b.len() == i + 1 => Ok(Some(0)),
        Some(&s @ (b'+' | b'-')) if b.len() == i + 6 && b.get(i + 3) == Some(&b':') => {
            let (Some(h), Some(m)) = (digits_at(b, i + 1..i + 3), digits_at(b, i + 4..i + 6))
            else {
                return Ok(None);
            };
            if h > 23 || m > 59 {
                return Err((format!("invalid UTC offset in \"{text}\""), None));
            }
            let o = h * 3600 + m * 60;
            Ok(Some(if s == b'-' { -o } else { o }))
        }
        Some(_) => Ok(None),
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC: `2026-12-24T18:00:00Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (date, time) = civil(self.0);
        write!(f, "{date}T{time}Z")
    }
}

/// A span of seconds for people: `42s`, `5 min`, `3h12m`, `2d3h`.
pub fn human_span(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `("YYYY-MM-DD", "HH:MM:SS")` of an instant, UTC.
fn civil(secs: i64) -> (String, String) {
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        format!("{y:04}-{m:02}-{d:02}"),
        format!("{:02}:{:02}:{:02}", tod / 3600, tod % 3600 / 60, tod % 60),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn known_instants() {
        assert_eq!(parse("1970-01-01T00:00:00Z").unix(), 0);
        assert_eq!(parse("2026-12-24T18:00:00Z").unix(), 1_798_135_200);
        assert_eq!(
            parse("2026-12-24T19:00:00+01:00"),
            parse("2026-12-24T18:00:00Z")
        );
        assert_eq!(
            parse("2026-12-24T13:30:00-04:30"),
            parse("2026-12-24T18:00:00Z")
        );
        assert_eq!(
            parse("2026-12-24t18:00:00.999z"),
            parse("2026-12-24T18:00:00Z")
        );
        assert_eq!(parse("2024-02-29T00:00:00Z").unix(), 1_709_164_800);
        assert_eq!(parse("2039-01-01T00:00:00Z"), LATEST);
        assert_eq!(
            parse("2026-12-24T18:00:00Z").to_string(),
            "2026-12-24T18:00:00Z"
        );
    }

    #[test]
    fn datestop_is_the_last_matching_second() {
        assert_eq!(
            parse("2026-12-24T18:00:00Z").datestop(),
            "2026-12-24T17:59:59"
        );
        assert_eq!(
            parse("2026-12-24T19:00:30+01:00").datestop(),
            "2026-12-24T18:00:29"
        );
        assert_eq!(LATEST.datestop(), "2038-12-31T23:59:59");
        assert_eq!(EARLIEST.datestop(), "1970-01-01T00:00:00");
    }

    #[test]
    fn malformed_times_say_what_is_wrong() {
        let err = |s: &str| Timestamp::parse_rfc3339(s).unwrap_err();
        let (m, h) = err("2026-12-24T18:00:00");
        assert!(m.contains("has no UTC offset"), "{m}");
        assert_eq!(
            h.as_deref(),
            Some("add \"Z\" for UTC (\"2026-12-24T18:00:00Z\") or an offset such as \"+01:00\"")
        );
        assert!(err("2026-12-24").0.contains("without a time of day"));
        for bad in [
            "",
            "tomorrow",
            "2026-12-24 18:00:00Z",
            "2026-12-24T18:00Z",
            "2026-12-24T18:00:00.Z",
            "2026-12-24T18:00:00+0100",
            "2026-12-24T18:00:00+01:00x",
            "2026-12-24T18:00:00ZZ",
            "26-12-24T18:00:00Z",
            "２026-12-24T18:00:00Z",
        ] {
            assert!(err(bad).0.contains("invalid time"), "{bad}: {:?}", err(bad));
        }
        for bad in [
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
        ] {
            assert!(err(bad).0.contains("no such date"), "{bad}");
        }
        for bad in [
            "2026-12-24T24:00:00Z",
            "2026-12-24T18:60:00Z",
            "2026-12-24T18:00:60Z",
        ] {
            assert!(err(bad).0.contains("no such time"), "{bad}");
        }
        assert!(err("2026-12-24T18:00:00+24:00").0.contains("offset"));
    }

    #[test]
    fn human_spans() {
        assert_eq!(human_span(42), "42s");
        assert_eq!(human_span(300), "5 min");
        assert_eq!(human_span(3 * 3600 + 12 * 60 + 5), "3h12m");
        assert_eq!(human_span(2 * 86_400 + 3 * 3600), "2d3h");
        assert_eq!(human_span(-5), "0s");
    }

    #[test]
    fn expiry_is_at_the_instant() {
        let t = parse("2026-12-24T18:00:00Z");
        assert!(!t.expired_at(Timestamp::from_unix(t.unix() - 1)));
        assert!(t.expired_at(t));
    }

    proptest! {
        #[test]
        fn display_parses_back(secs in 0i64..4_000_000_000) {
            let t = Timestamp::from_unix(secs);
            prop_assert_eq!(Timestamp::parse_rfc3339(&t.to_string()).unwrap(), t);
        }
    }
}
