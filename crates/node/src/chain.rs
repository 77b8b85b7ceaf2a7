//! The chain ID: the lowercase hex sha256 of the genesis bytes.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A chain ID: 64 lowercase hex characters, the sha256 of a genesis document.
///
/// The node keeps its own copy of this type instead of depending on `peerfleet-core`, so the node
/// binary (shipped in a container image) stays free of the core's spec and planning dependencies.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ChainId(String);

impl ChainId {
    /// The chain ID of these genesis bytes.
    pub fn of(genesis: &[u8]) -> ChainId {
        ChainId(hex::encode(Sha256::digest(genesis)))
    }

    /// Parses a chain ID; uppercase hex is accepted and normalised to lowercase.
    pub fn parse(s: &str) -> Option<ChainId> {
        let s = s.trim();
        (s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| ChainId(s.to_ascii_lowercase()))
    }

    /// The 64 hex characters.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ChainId {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        ChainId::parse(&s).ok_or_else(|| format!("not a chain ID (64 hex characters): {s:?}"))
    }
}

impl From<ChainId> for String {
    fn from(id: ChainId) -> String {
        id.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_id_is_sha256_hex_of_the_bytes() {
        // sha256("") is a well-known constant.
        assert_eq!(
            ChainId::of(b"").as_str(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn parse_normalises_case_and_rejects_wrong_length_or_non_hex() {
        let upper = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";
        assert_eq!(ChainId::parse(upper), Some(ChainId::of(b"")));
        assert_eq!(ChainId::parse(&upper[1..]), None);
        assert_eq!(ChainId::parse(&format!("{}g", &upper[1..])), None);
    }
}
