//! [`DockerConnector`]: which engine runs a machine's containers, connected once and cached.
//!
//! Local virtual nodes all share the one local engine (key `local`), so refresh lists it once for
//! every node. A cloud machine runs its own engine on `tcp://<public IP>:2376`, reached with mutual
//! TLS: peerfleet presents the network CA's client certificate and accepts only an engine whose
//! certificate the same CA signed for that machine's name ([`crate::pki::node_server_name`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use peerfleet_core::network::{ProviderKind, ports};
use peerfleet_core::provider::{ContainerEngine, EngineConnector, ErrorKind, ProviderError};
use peerfleet_core::resource::Machine;
use tokio::sync::OnceCell;

use crate::endpoint::Endpoint;
use crate::engine::DockerEngine;
use crate::error::PROVIDER;
use crate::image::ReferenceImage;
use crate::pki::{ClientIdentity, node_server_name};

/// The engine key of the local engine.
pub const LOCAL_KEY: &str = "local";

/// Finds the engine of a machine.
pub struct DockerConnector {
    network: String,
    local: Local,
    identity: Option<ClientIdentity>,
    reference: Option<Arc<ReferenceImage>>,
    engines: Mutex<HashMap<String, Arc<OnceCell<Arc<DockerEngine>>>>>,
}

enum Local {
    Endpoint(Endpoint),
    Engine(Arc<DockerEngine>),
    /// Docker's environment variables name no usable engine; said when a local node needs one.
    Unusable(String),
}

impl DockerConnector {
    /// A connector for `network`'s machines; the local engine is the one Docker's environment
    /// variables name (see [`Endpoint::from_env`]), connected on first use.
    pub fn new(network: impl Into<String>) -> Self {
        // An error is reported when the local engine is first needed, which a cloud-only network
        // never does.
        let local = Endpoint::from_env().map_or_else(|e| Local::Unusable(e.to_string()), Local::Endpoint);
        DockerConnector {
            network: network.into(),
            local,
            identity: None,
            reference: None,
            engines: Mutex::new(HashMap::new()),
        }
    }

    /// Uses `endpoint` for the local engine.
    pub fn with_local_endpoint(mut self, endpoint: Endpoint) -> Self {
        self.local = Local::Endpoint(endpoint);
        self
    }

    /// Uses an engine already connected as the local engine (e.g. the one [`crate::LocalNodes`] uses).
    /// The reference image given to [`DockerConnector::with_reference_image`] applies to it as well.
    pub fn with_local_engine(mut self, engine: Arc<DockerEngine>) -> Self {
        self.local = Local::Engine(engine);
        self
    }

    /// The client identity for cloud machines' engines (from [`crate::NetworkCa::client_identity`]).
    pub fn with_client_identity(mut self, identity: ClientIdentity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// The reference node image every engine this connector connects should have before it creates a
    /// container from it.
    pub fn with_reference_image(mut self, image: Arc<ReferenceImage>) -> Self {
        self.reference = Some(image);
        self
    }

    /// How the engine of a cloud `machine` is reached: mutual TLS to its public IP on the Docker TLS
    /// port, verifying the machine's certificate name.
    ///
    /// # Errors
    /// [`ErrorKind::Transient`] while the machine has no public IP yet; [`ErrorKind::Unauthorized`]
    /// when no client identity was given.
    pub fn remote_endpoint(&self, machine: &Machine) -> Result<Endpoint, ProviderError> {
        let ip = machine.public_ip.as_deref().ok_or_else(|| {
            ProviderError::new(
                ErrorKind::Transient,
                PROVIDER,
                format!("{} has no public IP yet, so its engine cannot be reached", machine.address),
            )
        })?;
        let identity = self.identity.clone().ok_or_else(|| {
            ProviderError::new(
                ErrorKind::Unauthorized,
                PROVIDER,
                format!("no client certificate to reach the engine of {}", machine.address),
            )
        })?;
        Ok(Endpoint::Tls {
            authority: authority(ip, ports::DOCKER_TLS),
            identity,
            server_name: Some(node_server_name(&self.network, &machine.address)),
        })
    }

    async fn connect(&self, machine: &Machine) -> Result<Arc<DockerEngine>, ProviderError> {
        let engine = if machine.provider == ProviderKind::Local {
            match &self.local {
                Local::Engine(engine) if self.reference.is_none() => return Ok(Arc::clone(engine)),
                Local::Engine(engine) => DockerEngine::clone(engine),
                Local::Endpoint(endpoint) => DockerEngine::connect(endpoint).await?,
                Local::Unusable(why) => {
                    return Err(ProviderError::new(
                        ErrorKind::Invalid,
                        PROVIDER,
                        format!("local engine: {why}"),
                    ));
                }
            }
        } else {
            DockerEngine::connect(&self.remote_endpoint(machine)?).await?
        };
        Ok(Arc::new(match &self.reference {
            Some(image) => engine.with_reference_image(Arc::clone(image)),
            None => engine,
        }))
    }
}

fn authority(ip: &str, port: u16) -> String {
    if ip.contains(':') { format!("[{ip}]:{port}") } else { format!("{ip}:{port}") }
}

impl std::fmt::Debug for DockerConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerConnector")
            .field("network", &self.network)
            .field("client_identity", &self.identity.is_some())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl EngineConnector for DockerConnector {
    fn engine_key(&self, machine: &Machine) -> String {
        match (machine.provider, machine.public_ip.as_deref()) {
            (ProviderKind::Local, _) => LOCAL_KEY.to_string(),
            (_, Some(ip)) => format!("tcp://{}", authority(ip, ports::DOCKER_TLS)),
            // No address yet: a key of its own, so it is never mistaken for another machine's engine.
            (provider, None) => format!("{provider}:{}", machine.id),
        }
    }

    /// Connects on first use per key; a failed connect is not cached, so the next call tries again.
    async fn engine_for(&self, machine: &Machine) -> Result<Arc<dyn ContainerEngine>, ProviderError> {
        let key = self.engine_key(machine);
        let cell = {
            // A poisoned lock only means another task panicked mid-insert; the map is still usable.
            let mut engines = self.engines.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(engines.entry(key).or_default())
        };
        let engine = cell.get_or_try_init(|| self.connect(machine)).await?;
        Ok(Arc::clone(engine) as Arc<dyn ContainerEngine>)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use peerfleet_core::Address;
    use peerfleet_core::resource::MachineStatus;

    use super::*;
    use crate::pki::NetworkCa;

    fn machine(provider: ProviderKind, ip: Option<&str>) -> Machine {
        Machine {
            id: "m-1".into(),
            address: Address::machine("virginia", 0),
            provider,
            region: "r".into(),
            size: "s".into(),
            image: "i".into(),
            tags: BTreeSet::new(),
            chain_id: None,
            generation: 0,
            bootstrap: 1,
            status: MachineStatus::Running,
            public_ip: ip.map(str::to_string),
            private_ip: None,
        }
    }

    #[test]
    fn local_nodes_share_one_engine_key_and_cloud_machines_have_their_own() {
        let c = DockerConnector::new("testnet");
        assert_eq!(c.engine_key(&machine(ProviderKind::Local, None)), "local");
        assert_eq!(c.engine_key(&machine(ProviderKind::Aws, Some("203.0.113.9"))), "tcp://203.0.113.9:2376");
        assert_eq!(
            c.engine_key(&machine(ProviderKind::DigitalOcean, Some("2001:db8::1"))),
            "tcp://[2001:db8::1]:2376"
        );
        assert_eq!(c.engine_key(&machine(ProviderKind::Aws, None)), "aws:m-1");
    }

    #[test]
    fn cloud_engines_are_reached_by_ip_but_verified_by_the_machines_name() {
        let ca = NetworkCa::generate("testnet").unwrap();
        let c = DockerConnector::new("testnet").with_client_identity(ca.client_identity().unwrap());
        match c.remote_endpoint(&machine(ProviderKind::Aws, Some("203.0.113.9"))).unwrap() {
            Endpoint::Tls { authority, server_name, .. } => {
                assert_eq!(authority, "203.0.113.9:2376");
                assert_eq!(server_name.as_deref(), Some("machine-virginia-0.testnet.peerfleet"));
            }
            other => panic!("expected TLS, got {other:?}"),
        }
    }

    #[test]
    fn cloud_engine_without_ip_or_identity_is_a_classified_error() {
        let c = DockerConnector::new("testnet");
        assert_eq!(
            c.remote_endpoint(&machine(ProviderKind::Aws, None)).unwrap_err().kind,
            ErrorKind::Transient
        );
        let err = c.remote_endpoint(&machine(ProviderKind::Aws, Some("203.0.113.9"))).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unauthorized);
    }
}
