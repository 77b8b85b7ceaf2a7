//! Building the real providers a network needs, from the environment.
//!
//! Credentials come from each ecosystem's standard place (the AWS default chain, `DIGITALOCEAN_TOKEN`,
//! Docker's `DOCKER_HOST`); endpoints can be overridden (`AWS_ENDPOINT_URL`, `DIGITALOCEAN_API_URL`),
//! which is how tests point at local stand-ins. Only providers the network (or what state remembers)
//! uses are built, so a local-only network needs no cloud credentials at all.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use peerfleet_core::network::{Network, ProviderKind};
use peerfleet_core::provider::{ErrorKind, ProviderError, Providers};
use peerfleet_core::resource::Actual;
use peerfleet_core::state::State;
use peerfleet_docker::{DockerConnector, DockerEngine, LocalNodes, NetworkCa, ReferenceImage};

/// The state secret holding the network CA's certificate.
pub const CA_CERT_SECRET: &str = "ca_cert_pem";
/// The state secret holding the network CA's key.
pub const CA_KEY_SECRET: &str = "ca_key_pem";

/// How to connect.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Whether containers will be listed or created (builds the engine connector and the reference
    /// image). `false` for `--only machines`.
    pub containers: bool,
    /// The run only reads containers (`status`): engines are connected, but the reference node image
    /// is not prepared, so a look at a live network never needs the node binary at hand.
    pub reads_only: bool,
    /// A workspace whose `cargo build --example peerfleet-node` can produce the node binary
    /// when it is not installed beside the running executable (examples pass their
    /// `CARGO_MANIFEST_DIR`).
    pub workspace_dir: Option<PathBuf>,
    /// The `peerfleet-node` binary to build the reference image from, chosen by the embedding
    /// program; `None`: found by [`peerfleet_docker::locate_node_binary`].
    pub node_binary: Option<PathBuf>,
}

/// The providers of one run, and what was built on the way.
#[derive(Clone)]
pub struct Connected {
    /// The providers.
    pub providers: Providers,
    /// The reference node image, when containers are involved.
    pub reference_image: Option<Arc<ReferenceImage>>,
    /// The local virtual nodes provider, when the network has local clusters.
    pub local: Option<Arc<LocalNodes>>,
}

/// Why providers could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The local Docker engine is needed and unreachable.
    #[error("the network has local clusters, but the Docker engine cannot be reached: {0}")]
    NoDocker(ProviderError),
    /// A provider could not be configured.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The network's CA in state does not load.
    #[error("the network CA kept in the state file does not load: {0}")]
    Ca(peerfleet_docker::Error),
    /// The reference node binary or image is not available.
    #[error("the reference node image cannot be prepared: {0}")]
    NodeImage(peerfleet_docker::Error),
    /// The network uses a provider this build of peerfleet does not include (a cargo feature).
    #[error(
        "the network uses {provider}, but this peerfleet was built without the {provider} provider: \
         build it with the cargo feature `{provider}` (on by default: `cargo install peerfleet` has it)"
    )]
    NotBuiltIn {
        /// The provider.
        provider: ProviderKind,
    },
}

/// The providers this build includes: `local` always, the clouds by cargo feature.
pub fn built_in() -> BTreeSet<ProviderKind> {
    let mut kinds = BTreeSet::from([ProviderKind::Local]);
    if cfg!(feature = "aws") {
        kinds.insert(ProviderKind::Aws);
    }
    if cfg!(feature = "digitalocean") {
        kinds.insert(ProviderKind::DigitalOcean);
    }
    kinds
}

/// Refuses, before anything connects, a run that needs a provider missing from `built`.
fn ensure_built_in(
    needed: &BTreeSet<ProviderKind>,
    built: &BTreeSet<ProviderKind>,
) -> Result<(), ConnectError> {
    match needed.difference(built).next() {
        Some(&provider) => Err(ConnectError::NotBuiltIn { provider }),
        None => Ok(()),
    }
}

/// The provider kinds a run needs: the spec's clusters plus whatever state still remembers.
pub fn kinds_needed(network: &Network, state: &State) -> BTreeSet<ProviderKind> {
    let mut kinds: BTreeSet<ProviderKind> = network.clusters.iter().map(|c| c.provider).collect();
    for r in state.resources.values() {
        if let Actual::Machine(m) = r {
            kinds.insert(m.provider);
        }
    }
    kinds
}

/// Whether the network has machines whose engines are reached over mutual TLS (cloud machines): then
/// it needs its own CA.
pub fn needs_ca(network: &Network) -> bool {
    network.clusters.iter().any(|c| c.provider.capabilities().remote_engine)
}

/// The network CA kept in `state`, if any.
pub fn ca_from_state(network: &Network, state: &State) -> Result<Option<NetworkCa>, ConnectError> {
    match (state.secrets.get(CA_CERT_SECRET), state.secrets.get(CA_KEY_SECRET)) {
        (Some(cert), Some(key)) => {
            NetworkCa::from_pem(&network.name, cert.expose(), key).map(Some).map_err(ConnectError::Ca)
        }
        _ => Ok(None),
    }
}

/// Makes the network CA and records it in `state` (the caller saves). Returns whether it was new.
pub fn ensure_ca(network: &Network, state: &mut State) -> Result<bool, ConnectError> {
    if ca_from_state(network, state)?.is_some() {
        return Ok(false);
    }
    let ca = NetworkCa::generate(&network.name).map_err(ConnectError::Ca)?;
    state.secrets.insert(CA_CERT_SECRET.into(), peerfleet_core::provider::Secret::new(ca.cert_pem()));
    state.secrets.insert(CA_KEY_SECRET.into(), ca.key_pem().clone());
    Ok(true)
}

/// Builds the providers for `network`.
pub async fn connect(
    network: &Network,
    state: &State,
    options: &ConnectOptions,
) -> Result<Connected, ConnectError> {
    let kinds = kinds_needed(network, state);
    ensure_built_in(&kinds, &built_in())?;
    let mut providers = Providers::new();
    let ca = ca_from_state(network, state)?.map(Arc::new);

    let reference_image = if options.containers && !options.reads_only {
        // Finding (maybe building) the node binary, running `ldd` on it and reading it and its
        // libraries all block: on the blocking pool, not on a runtime thread.
        let (workspace, given) = (options.workspace_dir.clone(), options.node_binary.clone());
        let prepared = tokio::task::spawn_blocking(move || {
            let binary = match given {
                Some(path) => path,
                None => peerfleet_docker::locate_node_binary(workspace.as_deref())?,
            };
            peerfleet_docker::reference_image(&binary)
        })
        .await
        .map_err(|e| {
            ConnectError::Provider(ProviderError::new(ErrorKind::Transient, "peerfleet", e.to_string()))
        })?;
        Some(Arc::new(prepared.map_err(ConnectError::NodeImage)?))
    } else {
        None
    };

    let mut local = None;
    let mut connector = DockerConnector::new(network.name.clone());
    if kinds.contains(&ProviderKind::Local) {
        let mut engine = DockerEngine::connect_local().await.map_err(ConnectError::NoDocker)?;
        if let Some(image) = &reference_image {
            engine = engine.with_reference_image(image.clone());
        }
        let engine = Arc::new(engine);
        let nodes = Arc::new(LocalNodes::new(engine.clone()));
        providers = providers.with_machines(nodes.clone());
        connector = connector.with_local_engine(engine);
        local = Some(nodes);
    }
    #[cfg(feature = "aws")]
    if kinds.contains(&ProviderKind::Aws) {
        let settings = peerfleet_aws::AwsSettings::default().with_network_profiles(network)?;
        providers = providers.with_machines(Arc::new(peerfleet_aws::AwsProvider::new(settings)));
    }
    #[cfg(feature = "digitalocean")]
    if kinds.contains(&ProviderKind::DigitalOcean) {
        providers =
            providers.with_machines(Arc::new(peerfleet_digitalocean::DigitalOceanProvider::from_env()?));
    }
    if let Some(ca) = &ca {
        connector = connector.with_client_identity(ca.client_identity().map_err(ConnectError::Ca)?);
        providers = providers.with_pki(ca.clone());
    }
    if let Some(image) = &reference_image {
        connector = connector.with_reference_image(image.clone());
    }
    if options.containers {
        providers = providers.with_engines(Arc::new(connector));
    }
    Ok(Connected { providers, reference_image, local })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_network_on_a_provider_left_out_of_the_build_is_refused_naming_the_feature() {
        let needed = BTreeSet::from([ProviderKind::Local, ProviderKind::Aws]);
        let local_only = BTreeSet::from([ProviderKind::Local]);
        let e = ensure_built_in(&needed, &local_only).unwrap_err();
        assert!(matches!(e, ConnectError::NotBuiltIn { provider: ProviderKind::Aws }), "{e:?}");
        let text = e.to_string();
        assert!(text.contains("built without the aws provider"), "{text}");
        assert!(text.contains("cargo feature `aws`"), "{text}");
        assert!(ensure_built_in(&needed, &BTreeSet::from([ProviderKind::Local, ProviderKind::Aws])).is_ok());
    }

    #[test]
    fn this_build_has_the_providers_its_features_name() {
        let built = built_in();
        assert!(built.contains(&ProviderKind::Local));
        assert_eq!(built.contains(&ProviderKind::Aws), cfg!(feature = "aws"));
        assert_eq!(built.contains(&ProviderKind::DigitalOcean), cfg!(feature = "digitalocean"));
    }
}
