//! EC2 errors, classified into the core's [`ErrorKind`] from the SDK's structured error codes.
//!
//! The code (`ProvideErrorMetadata::code()`) decides the kind, never the message text. Every error
//! names the operation and the region; authorization failures also name the partition and the
//! credentials profile that failed, because with two partitions (`aws`, `aws-cn`) "access denied" is
//! usually "wrong account for this region". The request ID is kept for AWS support.

use std::error::Error as StdError;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::operation::RequestId;
use peerfleet_core::provider::{ErrorKind, ProviderError};

use crate::settings::Partition;

/// The provider name errors carry.
pub(crate) const PROVIDER: &str = "aws";

/// Where a request went: region, and the credentials profile used there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub region: String,
    pub profile: Option<String>,
}

impl Target {
    pub fn partition(&self) -> Partition {
        Partition::of(&self.region)
    }

    /// "profile `china`" or "the default credentials chain".
    fn credentials(&self) -> String {
        match &self.profile {
            Some(p) => format!("profile `{p}`"),
            None => "the default credentials chain (no profile named)".to_string(),
        }
    }

    /// What a person needs to fix an authorization failure in this region.
    fn auth_hint(&self) -> String {
        let partition = self.partition();
        let mut hint = format!(
            "credentials for partition {partition} (region {}) from {} were missing or refused",
            self.region,
            self.credentials()
        );
        if partition != Partition::Aws {
            hint.push_str(&format!(
                "; {} is in the separate {partition} partition with its own accounts and credentials: \
                 name a profile for it (the cluster's `profile`)",
                self.region
            ));
        }
        hint
    }
}

/// The kind an EC2 error code (and HTTP status) stands for.
pub(crate) fn kind_of(code: Option<&str>, status: u16) -> ErrorKind {
    match code {
        Some(
            "RequestLimitExceeded"
            | "Throttling"
            | "ThrottlingException"
            | "RequestThrottled"
            | "EC2ThrottledException"
            | "BandwidthLimitExceeded",
        ) => ErrorKind::Throttled { retry_after: None },
        Some(
            "AuthFailure"
            | "UnauthorizedOperation"
            | "InvalidClientTokenId"
            | "SignatureDoesNotMatch"
            | "MissingAuthenticationToken"
            | "ExpiredToken"
            | "RequestExpired"
            | "OptInRequired"
            | "Blocked"
            | "PendingVerification"
            | "AccessDenied"
            | "AccessDeniedException",
        ) => ErrorKind::Unauthorized,
        Some(c) if c.ends_with(".NotFound") => ErrorKind::NotFound,
        Some(
            "DependencyViolation"
            | "IncorrectState"
            | "IncorrectInstanceState"
            | "InvalidGroup.Duplicate"
            | "InvalidGroup.InUse"
            | "InvalidPermission.Duplicate"
            | "IdempotentParameterMismatch"
            | "Resource.AlreadyAssociated"
            | "InvalidIPAddress.InUse",
        ) => ErrorKind::Conflict,
        Some(
            "InternalError"
            | "InternalFailure"
            | "ServiceUnavailable"
            | "Unavailable"
            | "InsufficientInstanceCapacity"
            | "InsufficientAddressCapacity",
        ) => ErrorKind::Transient,
        _ if status >= 500 => ErrorKind::Transient,
        _ => ErrorKind::Invalid,
    }
}

/// Whether the error (or anything it was caused by) is a credentials-provider failure.
fn is_credentials_failure(err: &(dyn StdError + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if e.is::<CredentialsError>() {
            return true;
        }
        cur = e.source();
    }
    false
}

/// Classifies a failed SDK call of operation `op` against `target`.
pub(crate) fn classify<E>(op: &str, target: &Target, err: SdkError<E, HttpResponse>) -> ProviderError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    let region = &target.region;
    match &err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            let status = service.raw().status().as_u16();
            let kind = kind_of(e.code(), status);
            let code = e.code().unwrap_or("(no error code)");
            let detail = e.message().unwrap_or("");
            let mut message = format!("{op} in {region} failed: {code} (HTTP {status}): {detail}");
            if kind == ErrorKind::Unauthorized {
                message.push_str(&format!(" — {}", target.auth_hint()));
            } else if let Some(next) = next_step(e.code(), region) {
                message.push_str(&format!(" — {next}"));
            }
            // The SDK reads request IDs from headers only; EC2 puts them in the error body.
            let request_id = e
                .meta()
                .request_id()
                .or_else(|| err.request_id())
                .map(str::to_string)
                .or_else(|| service.raw().body().bytes().and_then(request_id_in_body));
            let error = ProviderError::new(kind, PROVIDER, message);
            match request_id {
                Some(id) => error.with_request_id(id),
                None => error,
            }
        }
        _ if is_credentials_failure(&err) => ProviderError::new(
            ErrorKind::Unauthorized,
            PROVIDER,
            format!("{op} in {region} was not sent: {}: {}", target.auth_hint(), source_text(&err)),
        ),
        SdkError::ConstructionFailure(_) => ProviderError::new(
            ErrorKind::Invalid,
            PROVIDER,
            format!("{op} in {region} could not be built: {}", source_text(&err)),
        ),
        // Timeouts, connection failures and unparseable responses pass; the request may be retried.
        _ => ProviderError::new(
            ErrorKind::Transient,
            PROVIDER,
            format!("{op} in {region} failed in transit: {}", source_text(&err)),
        ),
    }
}

/// What a person does about an error code that is not an authorization failure, when that is clear:
/// AMI IDs are per region, so an image copied from another region's spec is the usual cause.
fn next_step(code: Option<&str>, region: &str) -> Option<String> {
    match code? {
        "InvalidAMIID.NotFound" | "InvalidAMIID.Unavailable" | "InvalidAMIID.Malformed" => Some(format!(
            "the cluster's `image` is not an image available in {region} (AMI IDs differ per region): \
             set it to one that is, or remove it for the region's default image"
        )),
        _ => None,
    }
}

/// The `<RequestID>` of an EC2 error document.
fn request_id_in_body(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("<RequestID>")? + "<RequestID>".len();
    let len = text[start..].find("</RequestID>")?;
    let id = text[start..start + len].trim();
    (!id.is_empty()).then(|| id.to_string())
}

/// The innermost cause's text: the SDK's outer layers say only "dispatch failure".
fn source_text(err: &(dyn StdError + 'static)) -> String {
    let mut parts = Vec::new();
    let mut cur = err.source();
    while let Some(e) = cur {
        parts.push(e.to_string());
        cur = e.source();
    }
    if parts.is_empty() { err.to_string() } else { parts.join(": ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_codes_are_throttled() {
        for code in ["RequestLimitExceeded", "Throttling"] {
            assert_eq!(kind_of(Some(code), 503), ErrorKind::Throttled { retry_after: None }, "{code}");
        }
    }

    #[test]
    fn auth_codes_are_unauthorized() {
        for code in ["AuthFailure", "UnauthorizedOperation", "InvalidClientTokenId", "OptInRequired"] {
            assert_eq!(kind_of(Some(code), 403), ErrorKind::Unauthorized, "{code}");
        }
    }

    #[test]
    fn any_not_found_code_is_not_found() {
        for code in ["InvalidInstanceID.NotFound", "InvalidAllocationID.NotFound", "InvalidGroup.NotFound"] {
            assert_eq!(kind_of(Some(code), 400), ErrorKind::NotFound, "{code}");
        }
    }

    #[test]
    fn state_conflicts_are_conflicts() {
        for code in ["DependencyViolation", "IncorrectState", "IncorrectInstanceState"] {
            assert_eq!(kind_of(Some(code), 400), ErrorKind::Conflict, "{code}");
        }
    }

    #[test]
    fn server_errors_pass_and_the_rest_is_invalid() {
        assert_eq!(kind_of(Some("InternalError"), 500), ErrorKind::Transient);
        assert_eq!(kind_of(None, 502), ErrorKind::Transient);
        assert_eq!(kind_of(Some("InvalidParameterValue"), 400), ErrorKind::Invalid);
        assert_eq!(kind_of(None, 400), ErrorKind::Invalid);
    }

    #[test]
    fn an_image_missing_in_the_region_says_to_set_or_remove_the_clusters_image() {
        for code in ["InvalidAMIID.NotFound", "InvalidAMIID.Unavailable", "InvalidAMIID.Malformed"] {
            let next = next_step(Some(code), "sa-east-1").unwrap_or_default();
            assert!(next.contains("`image`") && next.contains("sa-east-1"), "{code}: {next}");
        }
        assert_eq!(next_step(Some("InvalidParameterValue"), "sa-east-1"), None);
        assert_eq!(next_step(None, "sa-east-1"), None);
    }

    #[test]
    fn request_ids_are_read_from_ec2_error_documents() {
        let body = b"<Response><Errors><Error><Code>X</Code></Error></Errors><RequestID>ab-12</RequestID></Response>";
        assert_eq!(request_id_in_body(body).as_deref(), Some("ab-12"));
        assert_eq!(request_id_in_body(b"<Response></Response>"), None);
    }

    #[test]
    fn china_auth_hint_names_partition_and_profile() {
        let t = Target { region: "cn-north-1".into(), profile: None };
        let hint = t.auth_hint();
        assert!(hint.contains("aws-cn"), "{hint}");
        assert!(hint.contains("default credentials chain"), "{hint}");
        assert!(hint.contains("name a profile"), "{hint}");
        let t = Target { region: "us-east-1".into(), profile: Some("ops".into()) };
        let hint = t.auth_hint();
        assert!(hint.contains("partition aws ") && hint.contains("profile `ops`"), "{hint}");
    }

    #[test]
    fn credentials_errors_are_found_anywhere_in_the_cause_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] CredentialsError);
        let inner = CredentialsError::not_loaded("no profile `china` in the config files");
        assert!(is_credentials_failure(&Outer(inner)));
        assert!(!is_credentials_failure(&std::io::Error::other("refused")));
    }
}
