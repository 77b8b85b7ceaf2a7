//! The network's own certificate authority.
//!
//! Cloud machines serve the Docker API on TCP with mutual TLS, and both sides trust only this CA: the
//! engine accepts clients it signed, and peerfleet accepts engines it signed. No public CA is involved,
//! so nothing about a network's engines depends on DNS or on a third party.
//!
//! A server certificate names the machine by a DNS name derived from the network and the machine's
//! address ([`node_server_name`]), plus the stable names and addresses the caller gives. peerfleet
//! dials a machine's current IP but verifies that name, so an IP change (a replaced address, a relay
//! without a stable IP) never breaks TLS.
//!
//! The CA's key is a [`Secret`]: it is never printed, and the core keeps it in the state file's secrets
//! (file mode 0600).

use std::fmt;
use std::net::IpAddr;

use peerfleet_core::Address;
use peerfleet_core::provider::{EngineTls, NodePki, ProviderError, Secret};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::error::Error;

/// How long the CA is valid. Machines live as long as their network; the CA outlives them.
const CA_VALIDITY: Duration = Duration::days(3650);
/// How long an engine's server certificate is valid (it is made once, in the machine's user data).
const SERVER_VALIDITY: Duration = Duration::days(3650);
/// How long a client certificate is valid; peerfleet issues a fresh one per run.
const CLIENT_VALIDITY: Duration = Duration::days(30);
/// Tolerance for clocks that run behind.
const CLOCK_SKEW: Duration = Duration::hours(1);

/// peerfleet's client side of mutual TLS: its certificate and key, and the CA it trusts for engines.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    /// The CA that signed the engines' server certificates (PEM).
    pub ca_cert_pem: String,
    /// The client certificate (PEM).
    pub cert_pem: String,
    /// The client key (PEM, PKCS#8).
    pub key_pem: Secret,
}

/// The DNS name an engine's server certificate carries and peerfleet verifies, whatever IP the machine
/// has: `machine-virginia-0.<network>.peerfleet`.
pub fn node_server_name(network: &str, address: &Address) -> String {
    format!("{}.{}.peerfleet", dns_label(&address.slug()), dns_label(network))
}

/// Lowercase letters, digits and `-` only, as a DNS label needs.
fn dns_label(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect()
}

/// A network's certificate authority.
pub struct NetworkCa {
    network: String,
    cert_pem: String,
    key_pem: Secret,
    issuer: Issuer<'static, KeyPair>,
}

impl NetworkCa {
    /// A new CA for `network` (ECDSA P-256), valid for ten years.
    ///
    /// # Errors
    /// When key generation or signing fails.
    pub fn generate(network: &str) -> Result<Self, Error> {
        let key = KeyPair::generate().map_err(pki_error)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(&format!("peerfleet CA for {network}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        set_validity(&mut params, CA_VALIDITY);
        let cert = params.self_signed(&key).map_err(pki_error)?;
        let key_pem = Secret::new(key.serialize_pem());
        Ok(NetworkCa {
            network: network.to_string(),
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA of `network` from its stored certificate and key.
    ///
    /// # Errors
    /// When either does not parse, the certificate is not a CA, or the key does not belong to it.
    pub fn from_pem(network: &str, cert_pem: &str, key_pem: &Secret) -> Result<Self, Error> {
        let key = KeyPair::from_pem(key_pem.expose())
            .map_err(|_| Error::Pki("the stored CA key does not parse".into()))?;
        let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
            .map_err(|_| Error::Pki("the stored CA certificate is not PEM".into()))?;
        let cert =
            pem.parse_x509().map_err(|_| Error::Pki("the stored CA certificate does not parse".into()))?;
        if !cert.is_ca() {
            return Err(Error::Pki("the stored CA certificate is not a CA certificate".into()));
        }
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(Error::Pki("the stored CA key does not belong to the stored CA certificate".into()));
        }
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(pki_error)?;
        Ok(NetworkCa {
            network: network.to_string(),
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.clone(),
            issuer,
        })
    }

    /// The network the CA belongs to.
    pub fn network(&self) -> &str {
        &self.network
    }

    /// The CA certificate (PEM); public.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA key (PEM, PKCS#8); store it only where secrets go.
    pub fn key_pem(&self) -> &Secret {
        &self.key_pem
    }

    /// The name the server certificate of the machine at `address` carries (see [`node_server_name`]).
    pub fn server_name(&self, address: &Address) -> String {
        node_server_name(&self.network, address)
    }

    /// A server certificate for the engine of the machine at `address`. Its subject alternative names
    /// are [`NetworkCa::server_name`] plus `sans`; entries that parse as IP addresses become IP SANs,
    /// the rest DNS names.
    ///
    /// # Errors
    /// When a SAN is not a valid DNS name or IP address, or signing fails.
    pub fn issue_server_cert(&self, address: &Address, sans: &[String]) -> Result<EngineTls, Error> {
        let mut names = vec![self.server_name(address)];
        for san in sans {
            if !names.contains(san) {
                names.push(san.clone());
            }
        }
        let mut params = CertificateParams::default();
        params.subject_alt_names = names.iter().map(|n| san(n)).collect::<Result<_, _>>()?;
        params.distinguished_name = distinguished_name(&names[0]);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let (cert_pem, key_pem) = self.sign_leaf(params, SERVER_VALIDITY)?;
        Ok(EngineTls {
            ca_cert_pem: self.cert_pem.clone(),
            server_cert_pem: cert_pem,
            server_key_pem: key_pem,
        })
    }

    /// A fresh client certificate for peerfleet itself, valid for 30 days, with the CA to trust.
    ///
    /// # Errors
    /// When signing fails.
    pub fn client_identity(&self) -> Result<ClientIdentity, Error> {
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(&format!("peerfleet client for {}", self.network));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let (cert_pem, key_pem) = self.sign_leaf(params, CLIENT_VALIDITY)?;
        Ok(ClientIdentity { ca_cert_pem: self.cert_pem.clone(), cert_pem, key_pem })
    }

    fn sign_leaf(
        &self,
        mut params: CertificateParams,
        validity: Duration,
    ) -> Result<(String, Secret), Error> {
        params.is_ca = IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, validity);
        let key = KeyPair::generate().map_err(pki_error)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(pki_error)?;
        Ok((cert.pem(), Secret::new(key.serialize_pem())))
    }
}

impl NodePki for NetworkCa {
    fn issue_server(&self, address: &Address, sans: &[String]) -> Result<EngineTls, ProviderError> {
        self.issue_server_cert(address, sans).map_err(ProviderError::from)
    }
}

impl fmt::Debug for NetworkCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetworkCa")
            .field("network", &self.network)
            .field("key_pem", &self.key_pem)
            .finish_non_exhaustive()
    }
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "peerfleet");
    dn.push(DnType::CommonName, common_name);
    dn
}

fn set_validity(params: &mut CertificateParams, validity: Duration) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + validity;
}

fn san(name: &str) -> Result<SanType, Error> {
    match name.parse::<IpAddr>() {
        Ok(ip) => Ok(SanType::IpAddress(ip)),
        Err(_) => name
            .to_string()
            .try_into()
            .map(SanType::DnsName)
            .map_err(|_| Error::Pki(format!("`{name}` is neither a DNS name nor an IP address"))),
    }
}

fn pki_error(e: rcgen::Error) -> Error {
    // rcgen's errors describe the operation, never key material.
    Error::Pki(e.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::server::WebPkiClientVerifier;

    use super::*;

    fn roots(ca_pem: &str) -> Arc<rustls::RootCertStore> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap()).unwrap();
        Arc::new(roots)
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn verify_server(ca_pem: &str, cert_pem: &str, name: &str) -> Result<(), rustls::Error> {
        let verifier =
            WebPkiServerVerifier::builder_with_provider(roots(ca_pem), provider()).build().unwrap();
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        let name = ServerName::try_from(name.to_string()).unwrap();
        verifier.verify_server_cert(&cert, &[], &name, &[], UnixTime::now()).map(|_| ())
    }

    #[test]
    fn server_certificate_verifies_against_the_ca_for_every_san() {
        let ca = NetworkCa::generate("testnet").unwrap();
        let address = Address::machine("virginia", 0);
        let sans = vec!["203.0.113.7".to_string(), "master.testnet.example".to_string()];
        let tls = ca.issue_server_cert(&address, &sans).unwrap();
        assert_eq!(tls.ca_cert_pem, ca.cert_pem());
        for name in ["machine-virginia-0.testnet.peerfleet", "203.0.113.7", "master.testnet.example"] {
            verify_server(ca.cert_pem(), &tls.server_cert_pem, name)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn server_certificate_does_not_verify_for_other_names_or_cas() {
        let ca = NetworkCa::generate("testnet").unwrap();
        let other = NetworkCa::generate("testnet").unwrap();
        let tls = ca.issue_server_cert(&Address::machine("virginia", 0), &[]).unwrap();
        assert!(
            verify_server(ca.cert_pem(), &tls.server_cert_pem, "machine-virginia-1.testnet.peerfleet")
                .is_err()
        );
        assert!(
            verify_server(other.cert_pem(), &tls.server_cert_pem, "machine-virginia-0.testnet.peerfleet")
                .is_err()
        );
    }

    #[test]
    fn client_certificate_verifies_against_the_ca_only() {
        let ca = NetworkCa::generate("testnet").unwrap();
        let other = NetworkCa::generate("testnet").unwrap();
        let id = ca.client_identity().unwrap();
        let cert = CertificateDer::from_pem_slice(id.cert_pem.as_bytes()).unwrap();
        let verify = |ca_pem: &str| {
            let v = WebPkiClientVerifier::builder_with_provider(roots(ca_pem), provider()).build().unwrap();
            v.verify_client_cert(&cert, &[], UnixTime::now()).map(|_| ())
        };
        verify(ca.cert_pem()).unwrap();
        assert!(verify(other.cert_pem()).is_err());
    }

    #[test]
    fn ca_round_trips_through_pem_and_keeps_signing() {
        let ca = NetworkCa::generate("testnet").unwrap();
        let back = NetworkCa::from_pem("testnet", ca.cert_pem(), ca.key_pem()).unwrap();
        let tls = back.issue_server_cert(&Address::machine("x", 2), &[]).unwrap();
        verify_server(ca.cert_pem(), &tls.server_cert_pem, "machine-x-2.testnet.peerfleet").unwrap();
    }

    #[test]
    fn ca_refuses_a_key_that_is_not_its_own() {
        let ca = NetworkCa::generate("testnet").unwrap();
        let other = NetworkCa::generate("testnet").unwrap();
        let err = NetworkCa::from_pem("testnet", ca.cert_pem(), other.key_pem()).unwrap_err();
        assert!(err.to_string().contains("does not belong"), "{err}");
    }

    #[test]
    fn debug_output_never_contains_key_material() {
        let ca = NetworkCa::generate("testnet").unwrap();
        let id = ca.client_identity().unwrap();
        let tls = ca.issue_server_cert(&Address::machine("x", 0), &[]).unwrap();
        for text in [format!("{ca:?}"), format!("{id:?}"), format!("{tls:?}")] {
            assert!(!text.contains("PRIVATE KEY"), "{text}");
        }
    }

    #[test]
    fn server_names_are_dns_safe() {
        assert_eq!(
            node_server_name("My_Net", &Address::machine("sao_paulo", 3)),
            "machine-sao-paulo-3.my-net.peerfleet"
        );
    }
}
