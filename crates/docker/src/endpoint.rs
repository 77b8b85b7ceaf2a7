//! [`Endpoint`]: where a Docker engine is and how to reach it, read the way Docker's own client reads
//! `DOCKER_HOST`, `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH`.

use std::path::{Path, PathBuf};

use peerfleet_core::provider::Secret;

use crate::error::Error;
use crate::pki::ClientIdentity;

/// The engine's socket when `DOCKER_HOST` is not set.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// Where an engine is and how to reach it.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// A local Unix socket.
    Unix(PathBuf),
    /// Plain HTTP to `host:port`; only ever from an explicit `DOCKER_HOST=tcp://…` without
    /// `DOCKER_TLS_VERIFY`, as Docker's own client does.
    Http(String),
    /// HTTPS with mutual TLS to `host:port`.
    Tls {
        /// `host:port`.
        authority: String,
        /// peerfleet's certificate and key, and the CA the engine's certificate must chain to.
        identity: ClientIdentity,
        /// The name the engine's certificate must carry; `None` = the host in `authority`.
        server_name: Option<String>,
    },
}

impl Endpoint {
    /// The endpoint Docker's own client would use, from `DOCKER_HOST`, `DOCKER_TLS_VERIFY` and
    /// `DOCKER_CERT_PATH` (default `~/.docker`, holding `ca.pem`, `cert.pem`, `key.pem`).
    ///
    /// # Errors
    /// When `DOCKER_HOST` has a scheme other than `unix`, `tcp`, `http` or `https`, or the TLS files
    /// cannot be read.
    pub fn from_env() -> Result<Self, Error> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let cert_dir = var("DOCKER_CERT_PATH")
            .map(PathBuf::from)
            .or_else(|| var("HOME").map(|h| Path::new(&h).join(".docker")));
        Self::from_settings(
            var("DOCKER_HOST").as_deref(),
            var("DOCKER_TLS_VERIFY").is_some(),
            cert_dir.as_deref(),
        )
    }

    /// The endpoint for these settings (see [`Endpoint::from_env`]): `host` is a `DOCKER_HOST` value,
    /// `tls_verify` whether `DOCKER_TLS_VERIFY` is set, `cert_dir` where the TLS files are.
    ///
    /// # Errors
    /// As [`Endpoint::from_env`].
    pub fn from_settings(
        host: Option<&str>,
        tls_verify: bool,
        cert_dir: Option<&Path>,
    ) -> Result<Self, Error> {
        let Some(host) = host else {
            return Ok(Endpoint::Unix(PathBuf::from(DEFAULT_SOCKET)));
        };
        if let Some(path) = host.strip_prefix("unix://") {
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        let (scheme, rest) = host.split_once("://").ok_or_else(|| {
            Error::Endpoint(format!("DOCKER_HOST `{host}` has no scheme (unix://, tcp://)"))
        })?;
        let authority = rest.trim_end_matches('/').to_string();
        let tls = match scheme {
            "tcp" | "http" => tls_verify,
            "https" => true,
            _ => return Err(Error::Endpoint(format!("DOCKER_HOST scheme `{scheme}://` is not supported"))),
        };
        if !tls {
            return Ok(Endpoint::Http(authority));
        }
        let dir = cert_dir.ok_or_else(|| {
            Error::Endpoint("DOCKER_TLS_VERIFY is set but neither DOCKER_CERT_PATH nor HOME is".into())
        })?;
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| Error::Io { path, source })
        };
        let identity = ClientIdentity {
            ca_cert_pem: read("ca.pem")?,
            cert_pem: read("cert.pem")?,
            key_pem: Secret::new(read("key.pem")?),
        };
        Ok(Endpoint::Tls { authority, identity, server_name: None })
    }

    /// The endpoint as a person would write it (never including key material).
    pub fn describe(&self) -> String {
        match self {
            Endpoint::Unix(path) => format!("unix://{}", path.display()),
            Endpoint::Http(authority) => format!("tcp://{authority}"),
            Endpoint::Tls { authority, .. } => format!("tcp://{authority} (mutual TLS)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_host_settings_follow_dockers_conventions() {
        assert!(
            matches!(Endpoint::from_settings(None, false, None).unwrap(), Endpoint::Unix(p) if p == Path::new(DEFAULT_SOCKET))
        );
        assert!(
            matches!(Endpoint::from_settings(Some("unix:///run/d.sock"), true, None).unwrap(), Endpoint::Unix(p) if p == Path::new("/run/d.sock"))
        );
        assert!(
            matches!(Endpoint::from_settings(Some("tcp://127.0.0.1:2375/"), false, None).unwrap(), Endpoint::Http(a) if a == "127.0.0.1:2375")
        );
        assert!(Endpoint::from_settings(Some("ssh://host"), false, None).is_err());
        let missing = Endpoint::from_settings(
            Some("tcp://127.0.0.1:2376"),
            true,
            Some(Path::new("/nonexistent-peerfleet")),
        );
        assert!(matches!(missing, Err(Error::Io { .. })));
    }
}
