//! Making a new genesis document.
//!
//! The chain ID is the sha256 of the genesis bytes, so two chains made from the same name at the same
//! second must still differ: the document carries 32 bytes from the operating system's random source.

use std::time::{SystemTime, UNIX_EPOCH};

use rand::TryRngCore;
use rand::rngs::OsRng;
use serde_json::json;

/// The `format` field of genesis documents made by [`new_genesis`].
pub const FORMAT: &str = "peerfleet-genesis/1";

/// A fresh genesis JSON document for a chain called `chain_name`: its name, the genesis time
/// (RFC 3339, UTC, whole seconds) and 32 bytes of OS entropy in hex, so every new chain gets its own ID.
///
/// # Panics
/// If the operating system's random source fails, which on supported systems does not happen once
/// the system has booted; a chain must never be created with guessable entropy.
pub fn new_genesis(chain_name: &str) -> Vec<u8> {
    let mut entropy = [0u8; 32];
    OsRng.try_fill_bytes(&mut entropy).expect("invariant: the OS random source is available");
    let document = json!({
        "format": FORMAT,
        "chain_name": chain_name,
        "genesis_time": rfc3339_utc(SystemTime::now()),
        "entropy": hex::encode(entropy),
    });
    let mut bytes =
        serde_json::to_vec_pretty(&document).expect("invariant: a JSON value of strings always serialises");
    bytes.push(b'\n');
    bytes
}

/// Formats a time as RFC 3339 in UTC with whole seconds (`2026-01-31T12:00:00Z`).
///
/// Hand-written (days-to-civil-date conversion) so the node needs no date library.
pub fn rfc3339_utc(time: SystemTime) -> String {
    // Times before 1970 do not occur for a genesis made now; clamp rather than fail.
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Converts days since 1970-01-01 to a proleptic Gregorian (year, month, day).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Count from 0000-03-01 so the leap day is the last day of a "year"; eras are 400-year cycles.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ChainId;

    fn at(secs: u64) -> String {
        rfc3339_utc(UNIX_EPOCH + Duration::from_secs(secs))
    }

    #[test]
    fn rfc3339_matches_known_instants_including_leap_days() {
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(at(1_735_689_600), "2025-01-01T00:00:00Z");
        assert_eq!(at(4_107_542_400), "2100-03-01T00:00:00Z");
    }

    #[test]
    fn new_genesis_names_the_chain_and_differs_every_time() {
        let a = new_genesis("testnet");
        let b = new_genesis("testnet");
        assert_ne!(ChainId::of(&a), ChainId::of(&b));
        let doc: serde_json::Value = serde_json::from_slice(&a).expect("genesis is JSON");
        assert_eq!(doc["chain_name"], "testnet");
        assert_eq!(doc["format"], FORMAT);
        assert_eq!(doc["entropy"].as_str().map(str::len), Some(64));
        let time = doc["genesis_time"].as_str().expect("genesis_time is a string");
        assert!(time.len() == 20 && time.ends_with('Z'), "{time}");
    }
}
