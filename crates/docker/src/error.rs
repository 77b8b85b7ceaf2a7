//! Errors: this crate's own, and the structural classification of `bollard` errors into the core's
//! [`ErrorKind`].

use std::error::Error as StdError;
use std::path::PathBuf;

use peerfleet_core::provider::{ErrorKind, ProviderError};

/// The provider name in every [`ProviderError`] this crate returns.
pub(crate) const PROVIDER: &str = "docker";

/// What can go wrong outside an engine call: reading files, building certificates, finding the node
/// binary. Engine calls return [`ProviderError`] directly, because the core retries by its kind.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A command (`ldd`, `cargo build`) could not run or failed.
    #[error("`{command}` failed: {detail}")]
    Command {
        /// The command line, for a person.
        command: String,
        /// Its error output or exit status.
        detail: String,
    },
    /// The `peerfleet-node` binary was not found.
    #[error("cannot find the peerfleet-node binary: {0}")]
    NodeBinaryNotFound(String),
    /// A certificate or key could not be made or read.
    #[error("certificate authority: {0}")]
    Pki(String),
    /// TLS material or an engine address is unusable.
    #[error("engine connection settings: {0}")]
    Endpoint(String),
}

impl From<Error> for ProviderError {
    fn from(e: Error) -> Self {
        let kind = match e {
            Error::Io { .. } | Error::Command { .. } => ErrorKind::Transient,
            _ => ErrorKind::Invalid,
        };
        ProviderError::new(kind, PROVIDER, e.to_string())
    }
}

/// Classifies a `bollard` error by its structure: the HTTP status the engine answered with, or the kind
/// of transport failure. Message text is never looked at.
pub(crate) fn classify(err: &bollard::errors::Error) -> ErrorKind {
    use bollard::errors::Error as B;
    match err {
        B::DockerResponseServerError { status_code, .. } => classify_status(*status_code),
        B::RequestTimeoutError | B::SocketNotFoundError(_) => ErrorKind::Transient,
        // The variants are matched one by one because `IOError` is `transparent`: its own `source()`
        // would skip the error it wraps.
        B::IOError { err } => transport_kind(err),
        B::HyperResponseError { err } => transport_kind(err),
        B::HyperLegacyError { err } => transport_kind(err),
        // Malformed responses, URL and JSON problems, a failed build step: repeating cannot help.
        _ => ErrorKind::Invalid,
    }
}

/// The engine's HTTP status, as the Engine API documents it.
pub(crate) fn classify_status(status: u16) -> ErrorKind {
    match status {
        404 => ErrorKind::NotFound,
        // 409: name in use, removal in progress. 403 is what the engine answers for operations its
        // objects' state forbids (a network that still has endpoints), which is a conflict too.
        409 | 403 => ErrorKind::Conflict,
        401 => ErrorKind::Unauthorized,
        429 => ErrorKind::Throttled { retry_after: None },
        500..=599 => ErrorKind::Transient,
        _ => ErrorKind::Invalid,
    }
}

fn transport_kind(err: &(dyn StdError + 'static)) -> ErrorKind {
    if tls_rejected(err) { ErrorKind::Unauthorized } else { ErrorKind::Transient }
}

/// Whether a transport failure is TLS refusing the peer (bad certificate, unknown CA): an
/// authorization problem, not a passing one. Walks the chain of causes looking for a `rustls::Error`.
/// An `io::Error` is entered through the error it wraps, because its own `source()` skips that error
/// (and TLS connectors wrap rustls errors in one or two of them).
fn tls_rejected(err: &(dyn StdError + 'static)) -> bool {
    let mut next: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return is_certificate_failure(tls);
        }
        next = match e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(wrapped) => Some(wrapped as &(dyn StdError + 'static)),
            None => e.source(),
        };
    }
    false
}

fn is_certificate_failure(err: &rustls::Error) -> bool {
    use rustls::AlertDescription as A;
    match err {
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => true,
        rustls::Error::AlertReceived(alert) => matches!(
            alert,
            A::BadCertificate
                | A::UnsupportedCertificate
                | A::CertificateRevoked
                | A::CertificateExpired
                | A::CertificateUnknown
                | A::UnknownCA
                | A::AccessDenied
                | A::CertificateRequired
                | A::HandshakeFailure
                | A::DecryptError
        ),
        _ => false,
    }
}

/// A [`ProviderError`] for a failed engine call; `what` says which call on which object.
pub(crate) fn engine_error(err: bollard::errors::Error, what: impl std::fmt::Display) -> ProviderError {
    ProviderError::new(classify(&err), PROVIDER, format!("{what}: {err}"))
}

/// Whether the engine said the object does not exist.
pub(crate) fn is_not_found(err: &bollard::errors::Error) -> bool {
    classify(err) == ErrorKind::NotFound
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(status_code: u16) -> bollard::errors::Error {
        bollard::errors::Error::DockerResponseServerError { status_code, message: "irrelevant".into() }
    }

    #[test]
    fn engine_statuses_map_to_kinds_by_number_alone() {
        assert_eq!(classify(&server_error(404)), ErrorKind::NotFound);
        assert_eq!(classify(&server_error(409)), ErrorKind::Conflict);
        assert_eq!(classify(&server_error(400)), ErrorKind::Invalid);
        assert_eq!(classify(&server_error(500)), ErrorKind::Transient);
        assert_eq!(classify(&server_error(503)), ErrorKind::Transient);
        assert_eq!(classify(&server_error(401)), ErrorKind::Unauthorized);
    }

    #[test]
    fn message_text_does_not_change_the_kind() {
        let e = bollard::errors::Error::DockerResponseServerError {
            status_code: 500,
            message: "No such container: not found".into(),
        };
        assert_eq!(classify(&e), ErrorKind::Transient);
    }

    #[test]
    fn io_failures_are_transient_unless_tls_refused_the_certificate() {
        let reset = bollard::errors::Error::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(classify(&reset), ErrorKind::Transient);

        // As TLS connectors report it: an io::Error around an io::Error around the rustls error.
        let refused = std::io::Error::other(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA),
        ));
        assert_eq!(classify(&bollard::errors::Error::from(refused)), ErrorKind::Unauthorized);
    }
}
