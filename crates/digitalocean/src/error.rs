//! DigitalOcean's errors, kept structured: HTTP status, DigitalOcean's `id`, `message` and
//! `request_id`, classified into the core's [`ErrorKind`] by status and `id`, never by message text.

use std::time::Duration;

use peerfleet_core::provider::{ErrorKind, ProviderError};

/// The provider's name in errors and messages.
pub const PROVIDER: &str = "digitalocean";

/// A failed API call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{operation}: {}{message}", self.status_and_id())]
pub struct ApiError {
    /// Classification.
    pub kind: ErrorKind,
    /// `METHOD /path` of the call (never the query or a token).
    pub operation: String,
    /// HTTP status, when the server answered.
    pub status: Option<u16>,
    /// DigitalOcean's error `id` (`not_found`, `too_many_requests`, `unprocessable_entity`, ...).
    pub id: Option<String>,
    /// DigitalOcean's `message`, or what went wrong on the way.
    pub message: String,
    /// DigitalOcean's `request_id` (body) or `x-request-id` (header).
    pub request_id: Option<String>,
}

impl ApiError {
    fn status_and_id(&self) -> String {
        match (self.status, &self.id) {
            (Some(s), Some(id)) => format!("HTTP {s} {id}: "),
            (Some(s), None) => format!("HTTP {s}: "),
            (None, _) => String::new(),
        }
    }

    /// An error answered by the server.
    pub fn from_response(
        operation: &str,
        status: u16,
        id: Option<String>,
        message: Option<String>,
        request_id: Option<String>,
        retry_after: Option<Duration>,
    ) -> Self {
        ApiError {
            kind: classify(status, id.as_deref(), retry_after),
            operation: operation.to_string(),
            status: Some(status),
            message: message.unwrap_or_else(|| "no error message".to_string()),
            id,
            request_id,
        }
    }

    /// An error without an answer (connection, timeout) or about one (unreadable body).
    pub fn local(kind: ErrorKind, operation: &str, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            operation: operation.to_string(),
            status: None,
            id: None,
            message: message.into(),
            request_id: None,
        }
    }

    /// Whether this is a `404`.
    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }
}

/// Classifies by HTTP status, refined by DigitalOcean's `id` where the status alone is ambiguous.
pub fn classify(status: u16, id: Option<&str>, retry_after: Option<Duration>) -> ErrorKind {
    match (status, id) {
        (429, _) | (_, Some("too_many_requests")) => ErrorKind::Throttled { retry_after },
        (404, _) | (_, Some("not_found")) => ErrorKind::NotFound,
        (401 | 403, _) | (_, Some("unauthorized" | "forbidden")) => ErrorKind::Unauthorized,
        (409 | 412, _) | (_, Some("conflict")) => ErrorKind::Conflict,
        (500..=599, _) => ErrorKind::Transient,
        (408, _) => ErrorKind::Transient,
        _ => ErrorKind::Invalid,
    }
}

impl From<ApiError> for ProviderError {
    fn from(e: ApiError) -> Self {
        let request_id = e.request_id.clone();
        let err = ProviderError::new(e.kind.clone(), PROVIDER, e.to_string());
        match request_id {
            Some(id) => err.with_request_id(id),
            None => err,
        }
    }
}

/// A request peerfleet refuses to send (bad spec for DigitalOcean, missing prerequisite).
pub fn invalid(message: impl Into<String>) -> ProviderError {
    ProviderError::new(ErrorKind::Invalid, PROVIDER, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_id_decide_the_kind() {
        let wait = Some(Duration::from_secs(3));
        assert_eq!(classify(404, Some("not_found"), None), ErrorKind::NotFound);
        assert_eq!(classify(401, Some("unauthorized"), None), ErrorKind::Unauthorized);
        assert_eq!(classify(403, Some("forbidden"), None), ErrorKind::Unauthorized);
        assert_eq!(
            classify(429, Some("too_many_requests"), wait),
            ErrorKind::Throttled { retry_after: wait }
        );
        assert_eq!(classify(422, Some("unprocessable_entity"), None), ErrorKind::Invalid);
        assert_eq!(classify(400, Some("bad_request"), None), ErrorKind::Invalid);
        assert_eq!(classify(409, Some("conflict"), None), ErrorKind::Conflict);
        assert_eq!(classify(500, Some("server_error"), None), ErrorKind::Transient);
        assert_eq!(classify(503, None, None), ErrorKind::Transient);
    }

    #[test]
    fn provider_errors_keep_id_message_and_request_id() {
        let e = ApiError::from_response(
            "POST /v2/droplets",
            422,
            Some("unprocessable_entity".into()),
            Some("Size is not available".into()),
            Some("req-1".into()),
            None,
        );
        let p = ProviderError::from(e);
        assert_eq!(p.kind, ErrorKind::Invalid);
        assert_eq!(p.request_id.as_deref(), Some("req-1"));
        assert_eq!(
            p.to_string(),
            "digitalocean: POST /v2/droplets: HTTP 422 unprocessable_entity: Size is not available (request ID req-1)"
        );
    }
}
