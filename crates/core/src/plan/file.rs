//! The saved plan file (`plan --out`): a plan with a header that says what it is and a digest of
//! its content.
//!
//! A saved plan is executed exactly, so whatever reads one must be sure it is one: the header's
//! `kind` lets `plan --out` refuse to overwrite a file that is not a plan (a spec, a state file),
//! `format_version` is checked before the plan itself is read, and the sha256 `digest` of the plan's
//! canonical JSON catches an edited or truncated file before anything connects to a provider. The
//! digest is integrity against accidents, not authentication: whoever can write the file can
//! recompute it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{FORMAT_VERSION, Plan};

/// The `kind` every plan file declares.
pub const PLAN_FILE_KIND: &str = "peerfleet-plan";

/// The largest plan file read, in bytes: a plan for a network at the spec's limits is far smaller.
pub const MAX_PLAN_FILE_BYTES: u64 = 256 << 20;

/// Why bytes are not a plan this build can apply.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanFileError {
    /// Not a peerfleet plan file at all.
    #[error("not a peerfleet plan file (it has no \"kind\": \"{PLAN_FILE_KIND}\" header)")]
    NotAPlan,
    /// A plan file of another format.
    #[error(
        "plan format {found} is not the format this peerfleet applies ({FORMAT_VERSION}); make the plan again"
    )]
    Version {
        /// The file's format version.
        found: u32,
    },
    /// The content does not match its digest: edited or damaged since it was written.
    #[error(
        "the plan does not match its digest: it was changed after `plan --out` wrote it; make the plan again"
    )]
    Digest,
    /// The header is right but the plan does not parse.
    #[error("the plan file is damaged: {0}")]
    Corrupt(#[source] serde_json::Error),
}

#[derive(Serialize)]
struct Written<'a> {
    kind: &'static str,
    format_version: u32,
    digest: String,
    plan: &'a Plan,
}

#[derive(Deserialize)]
struct Header {
    kind: Option<String>,
    format_version: Option<u32>,
}

#[derive(Deserialize)]
struct Read {
    digest: String,
    plan: Plan,
}

/// The plan file for `plan`: pretty JSON, ending in a newline.
pub fn encode(plan: &Plan) -> Vec<u8> {
    let file =
        Written { kind: PLAN_FILE_KIND, format_version: plan.format_version, digest: digest(plan), plan };
    // A plan is strings, integers and ordered maps with string keys: serializing it cannot fail.
    let mut bytes = serde_json::to_vec_pretty(&file).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// Whether `bytes` declare themselves a plan file (whatever their version or integrity): the test
/// for whether a file may be overwritten by a new plan.
pub fn is_plan_file(bytes: &[u8]) -> bool {
    serde_json::from_slice::<Header>(bytes).is_ok_and(|h| h.kind.as_deref() == Some(PLAN_FILE_KIND))
}

/// Reads a plan file: header, version, then the plan and its digest.
///
/// # Errors
/// See [`PlanFileError`]; each is found before any provider is contacted.
pub fn decode(bytes: &[u8]) -> Result<Plan, PlanFileError> {
    let header: Header = serde_json::from_slice(bytes).map_err(|_| PlanFileError::NotAPlan)?;
    if header.kind.as_deref() != Some(PLAN_FILE_KIND) {
        return Err(PlanFileError::NotAPlan);
    }
    match header.format_version {
        Some(FORMAT_VERSION) => {}
        found => return Err(PlanFileError::Version { found: found.unwrap_or(0) }),
    }
    let read: Read = serde_json::from_slice(bytes).map_err(PlanFileError::Corrupt)?;
    if read.plan.format_version != FORMAT_VERSION {
        return Err(PlanFileError::Version { found: read.plan.format_version });
    }
    if read.digest != digest(&read.plan) {
        return Err(PlanFileError::Digest);
    }
    Ok(read.plan)
}

/// `sha256:` and the hex sha256 of the plan's compact JSON.
fn digest(plan: &Plan) -> String {
    let json = serde_json::to_vec(plan).unwrap_or_default();
    format!("sha256:{}", hex::encode(Sha256::digest(&json)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::ChainId;
    use crate::plan::PlanBase;

    fn plan() -> Plan {
        Plan {
            format_version: FORMAT_VERSION,
            network: "demo".into(),
            chain_id: ChainId::of(b"genesis"),
            only: None,
            changes: vec![],
            unchanged: 3,
            prior: vec![],
            base: PlanBase { lineage: Some("l".into()), serial: 7, actual_digest: None },
            rollouts: Default::default(),
        }
    }

    #[test]
    fn a_plan_file_round_trips() {
        let bytes = encode(&plan());
        assert!(is_plan_file(&bytes));
        assert_eq!(decode(&bytes).unwrap(), plan());
    }

    #[test]
    fn an_edited_plan_is_refused_by_its_digest() {
        let text =
            String::from_utf8(encode(&plan())).unwrap().replace("\"unchanged\": 3", "\"unchanged\": 4");
        assert!(matches!(decode(text.as_bytes()), Err(PlanFileError::Digest)));
    }

    #[test]
    fn another_format_version_is_refused_before_the_plan_is_read() {
        let text = String::from_utf8(encode(&plan())).unwrap();
        let other = text.replacen("\"format_version\": 1", "\"format_version\": 99", 1);
        assert!(matches!(decode(other.as_bytes()), Err(PlanFileError::Version { found: 99 })));
    }

    #[test]
    fn other_json_and_other_files_are_not_plans() {
        for bytes in [&b"{}"[..], b"name = \"x\"", b"{\"format_version\":1,\"serial\":3}", b""] {
            assert!(!is_plan_file(bytes));
            assert!(matches!(decode(bytes), Err(PlanFileError::NotAPlan)));
        }
    }
}
