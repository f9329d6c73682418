//! UTC time stamps for the report, from the system clock, without a time-zone database.

use std::time::{SystemTime, UNIX_EPOCH};

/// `YYYY-MM-DD HH:MM UTC` for `secs` seconds since the Unix epoch.
pub fn utc(secs: u64) -> String {
    // RFC 3339 (`2026-12-01T12:51:56Z`) cut to the minute.
    let t = portwarden_policy::Timestamp::from_unix(i64::try_from(secs).unwrap_or(i64::MAX));
    let text = t.to_string();
    format!("{} {} UTC", &text[..10], &text[11..16])
}

/// Now, as [`utc`].
pub fn now() -> String {
    utc(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc(1_795_794_561), "2026-11-27 15:49 UTC");
    }
}
