//! Seals: the form a sensitive value takes wherever it is stored, compared or shown.
//!
//! A container gets its secrets in clear, but everything that records a container — the Docker label
//! refresh reads its spec back from, plan files, state, plan text — keeps a *seal* instead: an
//! HMAC-SHA256 of the value under a random key of the network's own, kept in the state's secrets
//! ([`STATE_SECRET`]). Equal values under one key give equal seals, so a changed secret still shows as
//! drift and replaces its container; without the key a seal cannot be tested against guesses, which an
//! unkeyed hash of a weak password could (the form labels used before, `sha256:<hex>`, is still
//! recognised so that upgrading replaces nothing).
//!
//! Which values are sensitive: those the spec declares (`{ from_env = "...", secret = true }`), and, as
//! a second line for specs that declare nothing, those whose variable name looks like a secret
//! ([`is_secret_name`]).
//!
//! A network that was never applied has no key: its plans carry [`UNKEYED`], which says nothing about
//! the value. The first apply makes the key before it plans.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::provider::Secret;

/// The name of the seal key in [`crate::state::State::secrets`].
pub const STATE_SECRET: &str = "seal_key";
/// What a value is sealed as while the network has no key (before its first apply).
pub const UNKEYED: &str = "sealed";
const PREFIX: &str = "hmac-sha256:";
const LEGACY_PREFIX: &str = "sha256:";

/// Environment variable names whose values are sealed even when the spec does not declare them
/// secret: the heuristic second line under declarations (it misses names like `DATABASE_URL`, which
/// is why secrets are declared).
pub fn is_secret_name(name: &str) -> bool {
    let k = name.to_ascii_uppercase();
    ["TOKEN", "SECRET", "PASSWORD", "PRIVATE", "KEY"].iter().any(|w| k.contains(w))
}

/// A network's seal key: 32 random bytes. Its `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct SealKey([u8; 32]);

impl SealKey {
    /// A new random key.
    pub fn generate() -> Self {
        SealKey(rand::random())
    }

    /// The key stored in state as hex; `None` when it is not 64 hex digits (a hand-edited state).
    pub fn from_secret(secret: &Secret) -> Option<Self> {
        let bytes = hex::decode(secret.expose()).ok()?;
        Some(SealKey(bytes.try_into().ok()?))
    }

    /// The key as state stores it.
    pub fn to_secret(&self) -> Secret {
        Secret::new(hex::encode(self.0))
    }

    /// The seal of `value`: `hmac-sha256:<hex>`.
    pub fn seal(&self, value: &str) -> String {
        // Invariant: HMAC accepts keys of any length.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(value.as_bytes());
        format!("{PREFIX}{}", hex::encode(mac.finalize().into_bytes()))
    }
}

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(<redacted>)")
    }
}

/// The seal of `value` under `key`, or [`UNKEYED`] when the network has no key yet.
pub fn seal(key: Option<&SealKey>, value: &str) -> String {
    key.map_or_else(|| UNKEYED.to_string(), |k| k.seal(value))
}

/// Whether `value` is a seal (of any form) rather than a value: what plan text shows as sensitive.
pub fn is_seal(value: &str) -> bool {
    value == UNKEYED || value.starts_with(PREFIX) || value.starts_with(LEGACY_PREFIX)
}

/// Whether a container created with the `stored` form of a variable still has the value whose seal
/// is `sealed` and clear form is `clear`. A label written before seals were keyed holds the unkeyed
/// `sha256:<hex>`, compared as such.
pub fn stored_matches(stored: &str, sealed: &str, clear: &str) -> bool {
    if stored.starts_with(LEGACY_PREFIX) {
        return stored == format!("{LEGACY_PREFIX}{}", hex::encode(Sha256::digest(clear.as_bytes())));
    }
    stored == sealed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_key_gives_one_seal_and_another_key_another() {
        let (a, b) = (SealKey::generate(), SealKey::generate());
        assert_eq!(a.seal("hunter2"), a.seal("hunter2"));
        assert_ne!(a.seal("hunter2"), b.seal("hunter2"), "a network's seals do not match another's");
        assert_ne!(a.seal("hunter2"), a.seal("hunter3"), "a changed secret changes its seal");
        assert!(!a.seal("hunter2").contains("hunter2"));
        assert!(is_seal(&a.seal("hunter2")));
    }

    #[test]
    fn seal_of_a_weak_secret_is_not_its_plain_hash() {
        let key = SealKey::generate();
        let plain = hex::encode(Sha256::digest(b"1234"));
        assert!(!key.seal("1234").contains(&plain), "an unkeyed hash can be looked up in a table");
    }

    #[test]
    fn key_survives_state_and_never_prints() {
        let key = SealKey::generate();
        let stored = key.to_secret();
        assert_eq!(SealKey::from_secret(&stored), Some(key.clone()));
        assert_eq!(format!("{key:?}"), "SealKey(<redacted>)");
        assert_eq!(SealKey::from_secret(&Secret::new("not hex")), None);
        assert_eq!(SealKey::from_secret(&Secret::new("abcd")), None, "too short");
    }

    #[test]
    fn legacy_labels_still_compare_so_upgrading_replaces_nothing() {
        let key = SealKey::generate();
        let legacy = format!("sha256:{}", hex::encode(Sha256::digest(b"s3cret")));
        assert!(stored_matches(&legacy, &key.seal("s3cret"), "s3cret"));
        assert!(!stored_matches(&legacy, &key.seal("other"), "other"));
        assert!(stored_matches(&key.seal("s3cret"), &key.seal("s3cret"), "s3cret"));
        assert!(!stored_matches(UNKEYED, &key.seal("s3cret"), "s3cret"));
    }

    #[test]
    fn names_that_look_secret_are_recognised() {
        assert!(is_secret_name("API_TOKEN") && is_secret_name("db_password") && is_secret_name("SSH_KEY"));
        assert!(!is_secret_name("LOG_LEVEL") && !is_secret_name("DATABASE_URL"));
    }
}
