//! Wall-clock timestamps as they appear in state and lock files (`2024-05-01T12:00:00.250Z`).
//!
//! The lock lease is compared across processes (and across hosts sharing a state directory), so it is a
//! wall-clock time, not a monotonic one. RFC 3339 in UTC keeps the files readable by a person who has to
//! decide whether to `force-unlock`.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::FormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

/// The written form, milliseconds always present.
const WITH_MILLIS: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
/// The same without the fraction, also accepted when reading.
const WHOLE_SECONDS: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");

/// The last millisecond of 9999-12-31, the latest time the written form can hold; later times (a
/// saturated `plus`) clamp to it, so every timestamp can be written.
const MAX_MILLIS: u64 = 253_402_300_799_999;

/// A UTC wall-clock time with millisecond precision, from 1970 to the end of 9999.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Milliseconds since the Unix epoch, at most [`MAX_MILLIS`].
    millis: u64,
}

impl Timestamp {
    /// Now, truncated to milliseconds (so a stamp survives a round trip through its text form).
    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    /// A timestamp from a system time (times before 1970 clamp to the epoch, after 9999 to its end).
    pub fn from_system_time(t: SystemTime) -> Self {
        let millis = t.duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        Self::clamped(u64::try_from(millis).unwrap_or(u64::MAX))
    }

    fn clamped(millis: u64) -> Self {
        Timestamp { millis: millis.min(MAX_MILLIS) }
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_millis(self) -> u64 {
        self.millis
    }

    /// This time plus `d` (saturating).
    pub fn plus(self, d: Duration) -> Self {
        let add = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self::clamped(self.millis.saturating_add(add))
    }

    /// Parses the form [`fmt::Display`] writes: `YYYY-MM-DDTHH:MM:SS.mmmZ` (the fraction is optional).
    /// Dates that do not exist (`2024-02-31`) and times before 1970 are refused.
    pub fn parse(s: &str) -> Option<Self> {
        let at = PrimitiveDateTime::parse(s, WITH_MILLIS)
            .or_else(|_| PrimitiveDateTime::parse(s, WHOLE_SECONDS))
            .ok()?
            .assume_utc();
        let millis = u64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()?;
        Some(Self::clamped(millis))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Invariant: `millis` is at most MAX_MILLIS, which the calendar and the format both hold.
        let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.millis) * 1_000_000)
            .map_err(|_| fmt::Error)?;
        f.write_str(&at.format(WITH_MILLIS).map_err(|_| fmt::Error)?)
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
    fn dates_that_do_not_exist_are_refused() {
        for s in [
            "2024-02-30T00:00:00Z",
            "2024-02-31T00:00:00.000Z",
            "2023-02-29T00:00:00Z",
            "2024-04-31T12:00:00Z",
        ] {
            assert_eq!(Timestamp::parse(s), None, "{s}");
        }
        assert!(Timestamp::parse("2024-02-29T00:00:00Z").is_some(), "a leap day exists");
    }

    #[test]
    fn the_far_future_clamps_to_a_time_that_can_be_written() {
        let end = Timestamp::now().plus(Duration::MAX);
        assert_eq!(end.to_string(), "9999-12-31T23:59:59.999Z");
        assert_eq!(Timestamp::parse(&end.to_string()), Some(end));
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
