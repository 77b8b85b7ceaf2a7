//! Client-side encryption of the whole state (AES-256-GCM), for stores other people can read.
//!
//! The state holds the network CA's private key and the genesis bytes. Server-side encryption (S3's
//! SSE) protects them from someone holding the disks, not from someone who may read the bucket; this
//! protects them from the bucket's readers too. The key never comes from the spec (the spec sits in
//! the repository next to the bucket's name): it comes from `PEERFLEET_STATE_KEY` (base64 of 32
//! bytes) or the file `PEERFLEET_STATE_KEY_FILE` names.
//!
//! # The envelope
//! A JSON object `{"peerfleet_encrypted_state": 1, "network", "key_id", "nonce", "ciphertext"}`. The
//! network name and the key's ID (a short hash of the key, which tells "wrong key" apart from
//! "tampered" without revealing the key) are authenticated as associated data: editing either, or one
//! byte of the ciphertext, makes decryption fail. A fresh random 96-bit nonce per write.

use std::fmt;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::StateErrorKind;

/// The environment variable holding the key (base64 of 32 random bytes).
pub const STATE_KEY_ENV: &str = "PEERFLEET_STATE_KEY";
/// The environment variable naming a file that holds the key (base64 of 32 random bytes).
pub const STATE_KEY_FILE_ENV: &str = "PEERFLEET_STATE_KEY_FILE";

/// The envelope format this build writes.
const ENVELOPE_VERSION: u32 = 1;

/// A 256-bit state encryption key. Its `Debug` shows only its ID.
#[derive(Clone)]
pub struct StateKey {
    key: [u8; 32],
}

impl fmt::Debug for StateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StateKey({})", self.id())
    }
}

/// Why a key could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Not base64 of exactly 32 bytes.
    #[error(
        "{source_name}: a state key is base64 of exactly 32 random bytes (make one with `openssl rand -base64 32`)"
    )]
    Malformed {
        /// Where it came from (the variable or file name).
        source_name: String,
    },
    /// The key file could not be read.
    #[error("cannot read the state key file {path}")]
    File {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl StateKey {
    /// A key from its base64 text (surrounding whitespace ignored); `source_name` names where the
    /// text came from, for the error.
    ///
    /// # Errors
    /// [`KeyError::Malformed`] when the text is not base64 of 32 bytes.
    pub fn from_base64(text: &str, source_name: &str) -> Result<Self, KeyError> {
        let malformed = || KeyError::Malformed { source_name: source_name.to_string() };
        let bytes = base64::engine::general_purpose::STANDARD.decode(text.trim()).map_err(|_| malformed())?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| malformed())?;
        Ok(StateKey { key })
    }

    /// A new random key (what `openssl rand -base64 32` makes), for tests and tools.
    pub fn generate() -> Self {
        StateKey { key: rand::random() }
    }

    /// The key as base64, to hand to a person once (it is never logged).
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.key)
    }

    /// The key from the environment: `PEERFLEET_STATE_KEY`, else the file `PEERFLEET_STATE_KEY_FILE`
    /// names, else `None`.
    ///
    /// # Errors
    /// A malformed key, or a key file that cannot be read.
    pub fn from_env() -> Result<Option<Self>, KeyError> {
        if let Some(text) = std::env::var(STATE_KEY_ENV).ok().filter(|t| !t.trim().is_empty()) {
            return Self::from_base64(&text, STATE_KEY_ENV).map(Some);
        }
        match std::env::var_os(STATE_KEY_FILE_ENV).filter(|p| !p.is_empty()) {
            Some(path) => Self::from_file(Path::new(&path)).map(Some),
            None => Ok(None),
        }
    }

    /// The key in the file at `path` (base64, surrounding whitespace ignored).
    ///
    /// # Errors
    /// The file cannot be read, or does not hold a key.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        // A key file is 45 bytes; a path to anything else (a FIFO, a huge file) is refused unread.
        let text = crate::input::read_regular_text(path, 4096)
            .map_err(|source| KeyError::File { path: path.display().to_string(), source })?;
        Self::from_base64(&text, &path.display().to_string())
    }

    /// A short public ID of the key (the first 8 bytes of the sha256 of a label and the key, in hex),
    /// so that "wrong key" can be told apart from "tampered" without revealing anything.
    pub fn id(&self) -> String {
        let mut hash = Sha256::new();
        hash.update(b"peerfleet state key id\0");
        hash.update(self.key);
        hex::encode(&hash.finalize()[..8])
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&self.key))
    }
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    peerfleet_encrypted_state: u32,
    network: String,
    key_id: String,
    nonce: String,
    ciphertext: String,
}

/// What the associated data of an envelope is: everything in it but the nonce and ciphertext.
fn associated_data(version: u32, network: &str, key_id: &str) -> Vec<u8> {
    format!("peerfleet-state\0{version}\0{network}\0{key_id}").into_bytes()
}

/// Encrypts `plain` (state JSON) for network `network`.
pub fn encrypt(plain: &[u8], key: &StateKey, network: &str) -> Vec<u8> {
    let nonce: [u8; 12] = rand::random();
    let key_id = key.id();
    let aad = associated_data(ENVELOPE_VERSION, network, &key_id);
    // AES-GCM fails only for messages over 64 GiB; a state is megabytes at most.
    let ciphertext = key
        .cipher()
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad: &aad })
        .unwrap_or_default();
    let b64 = base64::engine::general_purpose::STANDARD;
    let envelope = Envelope {
        peerfleet_encrypted_state: ENVELOPE_VERSION,
        network: network.to_string(),
        key_id,
        nonce: b64.encode(nonce),
        ciphertext: b64.encode(ciphertext),
    };
    let mut bytes = serde_json::to_vec_pretty(&envelope).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// Whether `bytes` are an encrypted state (an envelope), as opposed to plain state JSON.
pub fn is_encrypted(bytes: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Probe {
        peerfleet_encrypted_state: u32,
    }
    serde_json::from_slice::<Probe>(bytes).is_ok_and(|p| p.peerfleet_encrypted_state > 0)
}

/// Decrypts an envelope written for network `network`.
///
/// # Errors
/// [`StateErrorKind::Refused`] naming the reason: no key given, a key other than the one it was
/// encrypted with, another network's state, or an envelope that fails authentication (tampered).
pub fn decrypt(bytes: &[u8], key: Option<&StateKey>, network: &str) -> Result<Vec<u8>, StateErrorKind> {
    let refused = |why: String| StateErrorKind::Refused(why);
    let envelope: Envelope = serde_json::from_slice(bytes).map_err(StateErrorKind::Corrupt)?;
    if envelope.peerfleet_encrypted_state != ENVELOPE_VERSION {
        return Err(StateErrorKind::Version {
            found: envelope.peerfleet_encrypted_state,
            supported: ENVELOPE_VERSION,
        });
    }
    let Some(key) = key else {
        return Err(refused(format!(
            "the state is encrypted (key {}) and no key was given: set {STATE_KEY_ENV} or {STATE_KEY_FILE_ENV}",
            envelope.key_id
        )));
    };
    if envelope.network != network {
        return Err(refused(format!(
            "this is the state of network `{}`, not of `{network}`: check the state location",
            envelope.network
        )));
    }
    if envelope.key_id != key.id() {
        return Err(refused(format!(
            "the state is encrypted with key {}, but the key given is {}: wrong {STATE_KEY_ENV}",
            envelope.key_id,
            key.id()
        )));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let tampered = || {
        refused("the encrypted state fails authentication: it was altered after it was written".to_string())
    };
    let nonce = b64.decode(&envelope.nonce).ok().filter(|n| n.len() == 12).ok_or_else(tampered)?;
    let ciphertext = b64.decode(&envelope.ciphertext).map_err(|_| tampered())?;
    let aad = associated_data(envelope.peerfleet_encrypted_state, &envelope.network, &envelope.key_id);
    key.cipher()
        .decrypt(Nonce::from_slice(&nonce), Payload { msg: &ciphertext, aad: &aad })
        .map_err(|_| tampered())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: &[u8] = b"{\"secrets\":{\"ca_key\":\"-----BEGIN PRIVATE KEY----- abc\"}}";

    #[test]
    fn encrypted_state_round_trips_and_hides_its_content() {
        let key = StateKey::generate();
        let sealed = encrypt(PLAIN, &key, "testnet");
        assert!(is_encrypted(&sealed) && !is_encrypted(PLAIN));
        let text = String::from_utf8_lossy(&sealed);
        assert!(!text.contains("PRIVATE KEY") && !text.contains("ca_key"), "{text}");
        assert_eq!(decrypt(&sealed, Some(&key), "testnet").unwrap(), PLAIN);
        // A fresh nonce per write: the same state never encrypts to the same bytes.
        assert_ne!(encrypt(PLAIN, &key, "testnet"), sealed);
    }

    fn refusal(result: Result<Vec<u8>, StateErrorKind>) -> String {
        match result {
            Err(StateErrorKind::Refused(why)) => why,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_missing_or_wrong_key_is_named_as_such() {
        let key = StateKey::generate();
        let sealed = encrypt(PLAIN, &key, "testnet");
        let why = refusal(decrypt(&sealed, None, "testnet"));
        assert!(why.contains("no key was given") && why.contains(STATE_KEY_ENV), "{why}");
        let other = StateKey::generate();
        let why = refusal(decrypt(&sealed, Some(&other), "testnet"));
        assert!(why.contains(&key.id()) && why.contains(&other.id()) && why.contains("wrong"), "{why}");
    }

    #[test]
    fn another_networks_state_is_refused() {
        let key = StateKey::generate();
        let why = refusal(decrypt(&encrypt(PLAIN, &key, "mainnet"), Some(&key), "testnet"));
        assert!(why.contains("`mainnet`") && why.contains("`testnet`"), "{why}");
    }

    #[test]
    fn an_altered_envelope_fails_authentication() {
        let key = StateKey::generate();
        let sealed = encrypt(PLAIN, &key, "testnet");
        let mut envelope: serde_json::Value = serde_json::from_slice(&sealed).unwrap();
        // Flip one byte of the ciphertext.
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut ct = b64.decode(envelope["ciphertext"].as_str().unwrap()).unwrap();
        ct[3] ^= 1;
        envelope["ciphertext"] = b64.encode(ct).into();
        let why = refusal(decrypt(envelope.to_string().as_bytes(), Some(&key), "testnet"));
        assert!(why.contains("altered"), "{why}");
        // Relabelling the network is caught by the associated data, not just by the name check.
        let mut relabelled: serde_json::Value = serde_json::from_slice(&encrypt(PLAIN, &key, "a")).unwrap();
        relabelled["network"] = "b".into();
        let why = refusal(decrypt(relabelled.to_string().as_bytes(), Some(&key), "b"));
        assert!(why.contains("altered"), "{why}");
    }

    #[test]
    fn keys_are_base64_of_32_bytes_and_never_printed() {
        let key = StateKey::generate();
        let text = key.to_base64();
        let back = StateKey::from_base64(&format!(" {text}\n"), "test").unwrap();
        assert_eq!(back.id(), key.id());
        assert!(!format!("{key:?}").contains(&text));
        let err = StateKey::from_base64("c2hvcnQ=", STATE_KEY_ENV).unwrap_err().to_string();
        assert!(err.contains(STATE_KEY_ENV) && err.contains("32"), "{err}");
    }
}
