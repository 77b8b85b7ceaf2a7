//! Wall-clock timestamps as they appear in state and lock files (`2024-05-01T12:00:00.250Z`).
//!
//! The lock lease is compared across processes (and across hosts sharing a state directory), so it is a
//! wall-clock time, not a monotonic one. RFC 3339 in UTC keeps the files readable by a person who has to
//! decide whether to `force-unlock`.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A UTC wall-clock time with millisecond precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Milliseconds since the Unix epoch.
    millis: u64,
}

impl Timestamp {
    /// Now, truncated to milliseconds (so a stamp survives a round trip through its text form).
    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    /// A timestamp from a system time (times before 1970 clamp to the epoch).
    pub fn from_system_time(t: SystemTime) -> Self {
        let millis = t.duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        Timestamp { millis: u64::try_from(millis).unwrap_or(u64::MAX) }
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_millis(self) -> u64 {
        self.millis
    }

    /// This time plus `d` (saturating).
    pub fn plus(self, d: Duration) -> Self {
        let add = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Timestamp { millis: self.millis.saturating_add(add) }
    }

    /// Parses the form [`fmt::Display`] writes: `YYYY-MM-DDTHH:MM:SS.mmmZ` (the fraction is optional).
    pub fn parse(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        let num = |from: usize, len: usize| -> Option<u64> {
            let part = s.get(from..from + len)?;
            part.bytes().all(|c| c.is_ascii_digit()).then(|| part.parse().ok())?
        };
        if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
            return None;
        }
        let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
        let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
        let millis = match &s[19..] {
            "Z" => 0,
            rest if rest.len() == 5 && rest.starts_with('.') && rest.ends_with('Z') => num(20, 3)?,
            _ => return None,
        };
        if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
            return None;
        }
        let days = days_from_civil(year, month, day)?;
        let secs = days * 86_400 + hour * 3_600 + minute * 60 + second;
        Some(Timestamp { millis: secs * 1_000 + millis })
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (years before 1970 are not representable).
fn days_from_civil(year: u64, month: u64, day: u64) -> Option<u64> {
    // Count years from March so the leap day is the last day of the counted year.
    let y = if month <= 2 { year.checked_sub(1)? } else { year };
    let era = y / 400;
    let year_of_era = y % 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    // 719_468 = days from 0000-03-01 to 1970-01-01.
    (era * 146_097 + day_of_era).checked_sub(719_468)
}

/// The date of a day count since 1970-01-01: (year, month, day).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.millis / 1_000;
        let (year, month, day) = civil_from_days(secs / 86_400);
        let in_day = secs % 86_400;
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            in_day / 3_600,
            in_day % 3_600 / 60,
            in_day % 60,
            self.millis % 1_000
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("invalid time `{s}`: expected YYYY-MM-DDTHH:MM:SS.mmmZ"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants_format_as_rfc3339_utc() {
        let at = |secs: u64, millis: u64| Timestamp { millis: secs * 1_000 + millis }.to_string();
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_709_251_199, 999), "2024-02-29T23:59:59.999Z");
        assert_eq!(at(4_102_444_800, 0), "2100-01-01T00:00:00.000Z");
    }

    #[test]
    fn timestamps_round_trip_through_text() {
        for millis in [0, 1, 951_782_400_005, 1_709_251_199_999, 1_767_225_600_123, 4_102_444_800_000] {
            let t = Timestamp { millis };
            assert_eq!(Timestamp::parse(&t.to_string()), Some(t), "{t}");
        }
        let now = Timestamp::now();
        assert_eq!(Timestamp::parse(&now.to_string()), Some(now));
        assert_eq!(
            Timestamp::parse("2024-05-01T12:00:00Z").map(|t| t.unix_millis()),
            Some(1_714_564_800_000)
        );
    }

    #[test]
    fn malformed_times_are_rejected() {
        for s in [
            "",
            "2024-05-01",
            "2024-13-01T00:00:00Z",
            "2024-05-01T24:00:00Z",
            "2024-05-01 12:00:00Z",
            "1969-12-31T23:59:59Z",
            "2024-05-01T12:00:00.5Z",
            "2024-05-01T12:00:00+02:00",
        ] {
            assert_eq!(Timestamp::parse(s), None, "{s}");
        }
    }
}
