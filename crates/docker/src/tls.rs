//! The mutual-TLS transport under `bollard`.
//!
//! bollard's own TLS connector reads the client key from files on every handshake and relies on a
//! process-wide rustls crypto provider, which is ambiguous (and panics) in a binary that also links the
//! AWS SDK's provider. This transport takes the identity from memory, pins the `ring` provider, and
//! trusts only the network's CA — never the system's roots.

use std::sync::Arc;
use std::time::Duration;

use bollard::{API_DEFAULT_VERSION, BollardRequest, Docker};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::error::Error;
use crate::pki::ClientIdentity;

/// How long a TCP connect to an engine may take before the call fails (and may be retried).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Names the body type of bollard's requests, which bollard does not export by name.
trait RequestBody {
    type Body;
}

impl<B> RequestBody for http::Request<B> {
    type Body = B;
}

type Body = <BollardRequest as RequestBody>::Body;

/// A bollard client for `https://{authority}` that presents `identity` and verifies the engine's
/// certificate against `identity`'s CA for `server_name` (or, when `None`, the host in `authority`).
pub(crate) fn connect(
    authority: &str,
    identity: &ClientIdentity,
    server_name: Option<&str>,
    timeout_secs: u64,
) -> Result<Docker, Error> {
    let config = client_config(identity)?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config).https_only();
    let builder = match server_name {
        Some(name) => {
            let name = ServerName::try_from(name.to_string())
                .map_err(|_| Error::Endpoint(format!("`{name}` is not a valid TLS server name")))?;
            builder.with_server_name_resolver(FixedServerNameResolver::new(name))
        }
        None => builder,
    };
    let https: HttpsConnector<HttpConnector> = builder.enable_http1().wrap_connector(http);
    let client: Client<_, Body> = Client::builder(TokioExecutor::new()).build(https);
    let client = Arc::new(client);
    let transport = move |req: BollardRequest| {
        let client = Arc::clone(&client);
        async move { client.request(req).await.map_err(bollard::errors::Error::from) }
    };
    Docker::connect_with_custom_transport(
        transport,
        Some(format!("https://{authority}")),
        timeout_secs,
        API_DEFAULT_VERSION,
    )
    .map_err(|e| Error::Endpoint(e.to_string()))
}

fn client_config(identity: &ClientIdentity) -> Result<rustls::ClientConfig, Error> {
    let bad = |what: &str| Error::Endpoint(format!("the {what} is not valid PEM"));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(identity.ca_cert_pem.as_bytes()) {
        roots.add(cert.map_err(|_| bad("CA certificate"))?).map_err(|_| bad("CA certificate"))?;
    }
    if roots.is_empty() {
        return Err(bad("CA certificate"));
    }
    let chain = CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad("client certificate"))?;
    let key =
        PrivateKeyDer::from_pem_slice(identity.key_pem.expose().as_bytes()).map_err(|_| bad("client key"))?;
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Endpoint(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| Error::Endpoint(format!("client certificate and key do not match: {e}")))
}
