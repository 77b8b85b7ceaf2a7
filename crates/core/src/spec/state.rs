//! `[state]`: where the network's state lives. Checked like the rest of the spec (every problem at
//! once, located), but kept apart from the network checks it has nothing to do with.

use crate::network::{S3StateSpec, ServerSideEncryption, StateSpec};

use super::error::{Origin, SpecError, SpecErrorKind, quoted};
use super::raw::{Located, RawState};

const BACKENDS: &str = "\"local\" or \"s3\"";
const ENCRYPTIONS: &str = "\"bucket-default\", \"sse-s3\" or \"sse-kms\"";

/// Validates `[state]`; `None` (no table) is the local default.
pub(crate) fn validate(
    raw: Option<&Located<RawState>>,
    origin: Origin<'_>,
    errors: &mut Vec<SpecError>,
) -> Option<StateSpec> {
    let Some(table) = raw else { return Some(StateSpec::Local) };
    let (s, span) = (&table.value, table.span.clone());
    let before = errors.len();
    let mut invalid = |at: &Option<Located<String>>, path: &str, expected: &str| {
        let at = at.as_ref();
        errors.push(origin.error(
            at.and_then(|l| l.span.clone()).or(span.clone()),
            format!("state.{path}"),
            SpecErrorKind::Invalid {
                expected: expected.to_string(),
                found: at.map_or_else(|| "nothing".to_string(), |l| quoted(&l.value)),
            },
        ));
    };
    let backend = s.backend.as_ref().map(|b| b.value.as_str());
    match backend {
        Some("local") | None if s.bucket.is_none() && s.key.is_none() => {
            let s3_only = [
                ("region", &s.region),
                ("profile", &s.profile),
                ("encryption", &s.encryption),
                ("kms_key_id", &s.kms_key_id),
            ];
            for (name, value) in s3_only {
                if value.is_some() {
                    invalid(value, name, "no value: this option is for backend = \"s3\"");
                }
            }
            if s.client_encryption == Some(true) {
                invalid(
                    &s.backend,
                    "client_encryption",
                    "backend = \"s3\" (a local state is protected by its 0600 mode)",
                );
            }
            return (errors.len() == before).then_some(StateSpec::Local);
        }
        Some("s3") => {}
        Some(_) => {
            invalid(&s.backend, "backend", BACKENDS);
            return None;
        }
        // bucket or key without a backend: say which backend they need.
        _ => {
            invalid(&s.backend, "backend", "backend = \"s3\" (bucket and key are S3 settings)");
            return None;
        }
    }
    let bucket = s.bucket.as_ref().filter(|b| is_bucket(&b.value)).map(|b| b.value.clone());
    if bucket.is_none() {
        invalid(&s.bucket, "bucket", "an S3 bucket name (3-63 lowercase letters, digits, '.', '-')");
    }
    let key =
        s.key.as_ref().filter(|k| !k.value.is_empty() && !k.value.ends_with('/')).map(|k| k.value.clone());
    if key.is_none() {
        invalid(&s.key, "key", "an object key such as \"peerfleet/testnet.state.json\"");
    }
    let server_side = match s.encryption.as_ref().map(|e| e.value.as_str()) {
        None | Some("bucket-default") => Some(ServerSideEncryption::BucketDefault),
        Some("sse-s3") => Some(ServerSideEncryption::S3),
        Some("sse-kms") => {
            Some(ServerSideEncryption::Kms { key_id: s.kms_key_id.as_ref().map(|k| k.value.clone()) })
        }
        Some(_) => {
            invalid(&s.encryption, "encryption", ENCRYPTIONS);
            None
        }
    };
    if s.kms_key_id.is_some() && !matches!(server_side, Some(ServerSideEncryption::Kms { .. })) {
        invalid(&s.kms_key_id, "kms_key_id", "no value unless encryption = \"sse-kms\"");
    }
    if errors.len() != before {
        return None;
    }
    Some(StateSpec::S3(S3StateSpec {
        bucket: bucket?,
        key: key?,
        region: s.region.as_ref().map(|r| r.value.clone()),
        profile: s.profile.as_ref().map(|p| p.value.clone()),
        server_side: server_side?,
        client_encryption: s.client_encryption.unwrap_or(false),
    }))
}

/// S3's bucket naming rules, the parts a typo breaks.
fn is_bucket(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::network::{S3StateSpec, ServerSideEncryption, StateSpec};
    use crate::spec::parse;

    const BASE: &str = "name = \"t\"\n[chain]\ngenesis = \"genesis.json\"\n[[clusters]]\nname = \"a\"\n\
        provider = \"local\"\nregion = \"Frankfurt\"\n[[services]]\nname = \"genesis\"\nrole = \"genesis\"\n\
        [[services]]\nname = \"master\"\nrole = \"master\"\n";

    fn state_of(table: &str) -> Result<StateSpec, Vec<(Option<usize>, String, String)>> {
        let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples"));
        parse(&format!("{BASE}{table}"), Path::new("net.toml"), dir)
            .map(|n| n.state)
            .map_err(|e| e.errors().iter().map(|e| (e.line(), e.path().to_string(), e.to_string())).collect())
    }

    #[test]
    fn no_state_table_is_the_local_file() {
        assert_eq!(state_of(""), Ok(StateSpec::Local));
        assert_eq!(state_of("[state]\nbackend = \"local\"\n"), Ok(StateSpec::Local));
    }

    #[test]
    fn an_s3_state_table_is_read_whole() {
        let table = "[state]\nbackend = \"s3\"\nbucket = \"acme-state\"\nkey = \"nets/t.json\"\nregion = \"eu-central-1\"\n\
            profile = \"ops\"\nencryption = \"sse-kms\"\nkms_key_id = \"alias/peerfleet\"\nclient_encryption = true\n";
        let expected = S3StateSpec {
            region: Some("eu-central-1".into()),
            profile: Some("ops".into()),
            server_side: ServerSideEncryption::Kms { key_id: Some("alias/peerfleet".into()) },
            client_encryption: true,
            ..S3StateSpec::new("acme-state", "nets/t.json")
        };
        assert_eq!(state_of(table), Ok(StateSpec::S3(expected)));
    }

    #[test]
    fn state_table_mistakes_are_located_and_reported_together() {
        let table = "[state]\nbackend = \"s3\"\nbucket = \"Bad_Bucket\"\nencryption = \"rot13\"\n";
        let errors = state_of(table).unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|(_, p, _)| p.as_str()).collect();
        // In line order: the missing key is reported at the table's header.
        assert_eq!(paths, ["state.key", "state.bucket", "state.encryption"], "{errors:?}");
        assert_eq!(errors[1].0, Some(16), "{errors:?}");
        assert!(errors[2].2.contains("sse-kms"), "{errors:?}");
        let errors = state_of("[state]\nbackend = \"gcs\"\n").unwrap_err();
        assert!(errors[0].2.contains("\"s3\""), "{errors:?}");
        let errors = state_of("[state]\nclient_encryption = true\n").unwrap_err();
        assert_eq!(errors[0].1, "state.client_encryption", "{errors:?}");
        let errors =
            state_of("[state]\nbackend = \"s3\"\nbucket = \"b-1\"\nkey = \"k\"\nsecret_key = \"x\"\n")
                .unwrap_err();
        assert!(errors[0].2.contains("secret_key"), "unknown keys are refused: {errors:?}");
    }
}
