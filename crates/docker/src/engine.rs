//! [`DockerEngine`]: one Docker engine, as the core's [`ContainerEngine`].
//!
//! # How containers are made
//! A container is named `<network>-<spec.name>` and carries, from creation, the labels of
//! [`crate::labels`]: network, address, chain ID (genesis only) and the whole spec as JSON with secret
//! env values hashed. Refresh is then one labelled list call that needs nothing else.
//!
//! Where it lands decides how it is wired:
//! - on a **local virtual node** (a machine of `provider = "local"`), it joins the node's bridge network
//!   and the network's shared "internet" network, where its [`ContainerSpec::aliases`] resolve through
//!   Docker's embedded DNS; it publishes no ports, so nothing is exposed on the host;
//! - on a **cloud machine** (its own engine, reached with mutual TLS), it publishes its ports on the
//!   machine (host port = container port) and finds the stable names it needs through `ExtraHosts`.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bollard::Docker;
use bollard::models::{EndpointSettings, NetworkConnectRequest};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder, StartContainerOptions,
};
use peerfleet_core::provider::{ContainerContext, ContainerEngine, ErrorKind, HealthDetail, ProviderError};
use peerfleet_core::resource::{Container, ContainerSpec};
use peerfleet_core::state::Timestamp;
use tokio::sync::Mutex;

use crate::container::{container_body, container_from_inspect, container_from_summary, is_local};
use crate::endpoint::Endpoint;
use crate::error::{PROVIDER, engine_error, is_not_found};
use crate::image::{ReferenceImage, ensure_image};
use crate::labels;
use crate::networks;

/// How long one engine request may take (image builds upload the whole context in one request).
const REQUEST_TIMEOUT_SECS: u64 = 120;

/// What an engine says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineVersion {
    /// The engine's version (`20.10.24`).
    pub version: String,
    /// The API version the engine speaks at most (`1.41`).
    pub api_version: String,
}

/// A connected Docker engine.
///
/// Clones share the connection and the lock that serialises making the internet network, so a clone
/// with another reference image (see [`DockerEngine::with_reference_image`]) is as safe to use
/// alongside the original as the original itself.
#[derive(Clone)]
pub struct DockerEngine {
    docker: Docker,
    endpoint: String,
    reference: Option<Arc<ReferenceImage>>,
    /// Set once the reference image is known to be on the engine; the lock also keeps two creates from
    /// building it at the same time.
    reference_ready: Arc<Mutex<bool>>,
    /// Serialises creating the shared internet network: the Engine API at 1.41 allows two networks of
    /// the same name, so two concurrent first creates would make two.
    internet: Arc<Mutex<()>>,
}

impl DockerEngine {
    /// Connects to the engine at `endpoint` and negotiates the API version (the engine may be older
    /// than the version bollard speaks by default).
    ///
    /// # Errors
    /// When the engine cannot be reached ([`ErrorKind::Transient`]), refuses the TLS identity
    /// ([`ErrorKind::Unauthorized`]) or the endpoint is unusable ([`ErrorKind::Invalid`]).
    pub async fn connect(endpoint: &Endpoint) -> Result<Self, ProviderError> {
        let unusable = |e| engine_error(e, format!("engine at {}", endpoint.describe()));
        let docker = match endpoint {
            Endpoint::Unix(path) => Docker::connect_with_unix(
                &path.to_string_lossy(),
                REQUEST_TIMEOUT_SECS,
                bollard::API_DEFAULT_VERSION,
            )
            .map_err(unusable)?,
            Endpoint::Http(authority) => {
                Docker::connect_with_http(authority, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
                    .map_err(unusable)?
            }
            Endpoint::Tls { authority, identity, server_name } => {
                crate::tls::connect(authority, identity, server_name.as_deref(), REQUEST_TIMEOUT_SECS)?
            }
        };
        Self::negotiate(docker, endpoint).await
    }

    async fn negotiate(docker: Docker, endpoint: &Endpoint) -> Result<Self, ProviderError> {
        let described = endpoint.describe();
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| engine_error(e, format!("engine at {described}")))?;
        Ok(DockerEngine {
            docker,
            endpoint: described,
            reference: None,
            reference_ready: Arc::new(Mutex::new(false)),
            internet: Arc::new(Mutex::new(())),
        })
    }

    /// Connects to the engine Docker's own client would use ([`Endpoint::from_env`]).
    ///
    /// # Errors
    /// As [`DockerEngine::connect`].
    pub async fn connect_local() -> Result<Self, ProviderError> {
        Self::connect(&Endpoint::from_env().map_err(ProviderError::from)?).await
    }

    /// Makes sure `image` is on this engine before creating a container whose image is its tag, so a
    /// remote engine builds it where it runs.
    pub fn with_reference_image(mut self, image: Arc<ReferenceImage>) -> Self {
        self.reference = Some(image);
        self.reference_ready = Arc::new(Mutex::new(false));
        self
    }

    /// The underlying `bollard` client, for calls this type does not wrap.
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// Where the engine is, for messages.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The engine's version.
    ///
    /// # Errors
    /// When the engine cannot be reached.
    pub async fn version(&self) -> Result<EngineVersion, ProviderError> {
        let v = self.docker.version().await.map_err(|e| engine_error(e, "engine version"))?;
        Ok(EngineVersion {
            version: v.version.unwrap_or_default(),
            api_version: v.api_version.unwrap_or_default(),
        })
    }

    /// The engine's name for a container: `<network>-<stable name>`.
    pub fn container_name(spec: &ContainerSpec) -> String {
        format!("{}-{}", spec.network, spec.name)
    }

    /// The name for a new container of `spec`: [`Self::container_name`], unless the container it starts
    /// beside (a start-first replace) holds that name; then the other of two names, so replaces
    /// alternate between them and never take the running one for a leftover.
    async fn free_name(
        &self,
        spec: &ContainerSpec,
        beside: Option<&Container>,
    ) -> Result<String, ProviderError> {
        let base = Self::container_name(spec);
        let Some(old) = beside else { return Ok(base) };
        let held = match self.docker.inspect_container(&old.id, None::<InspectContainerOptions>).await {
            Ok(c) => c.name.map(|n| n.trim_start_matches('/').to_string()),
            Err(e) if is_not_found(&e) => None,
            Err(e) => return Err(engine_error(e, format!("container {}", old.id))),
        };
        Ok(if held.as_deref() == Some(base.as_str()) { format!("{base}-next") } else { base })
    }

    async fn ensure_reference_for(&self, image: &str) -> Result<(), ProviderError> {
        let Some(reference) = self.reference.as_ref().filter(|r| r.tag == image) else {
            return Ok(());
        };
        let mut ready = self.reference_ready.lock().await;
        if !*ready {
            ensure_image(&self.docker, reference).await?;
            *ready = true;
        }
        Ok(())
    }

    /// Removes a container left under `name` by an earlier, interrupted create — only if it is ours.
    async fn remove_leftover(&self, name: &str, network: &str) -> Result<(), ProviderError> {
        let existing = match self.docker.inspect_container(name, None::<InspectContainerOptions>).await {
            Ok(c) => c,
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => return Err(engine_error(e, format!("container {name}"))),
        };
        let owner =
            existing.config.as_ref().and_then(|c| c.labels.as_ref()).and_then(|l| l.get(labels::NETWORK));
        if owner.map(String::as_str) != Some(network) {
            return Err(ProviderError::new(
                ErrorKind::Conflict,
                PROVIDER,
                format!(
                    "a container named {name} exists that is not peerfleet's for network {network}; remove or rename it"
                ),
            ));
        }
        let id = existing.id.unwrap_or_else(|| name.to_string());
        tracing::info!(container = name, "removing a container left by an interrupted create");
        self.remove_by_id(&id).await
    }

    async fn remove_by_id(&self, id: &str) -> Result<(), ProviderError> {
        let options = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => {
                let mut err = engine_error(e, format!("removing container {id}"));
                // A forced remove only conflicts with a removal already under way: it will be gone.
                if err.kind == ErrorKind::Conflict {
                    err.kind = ErrorKind::Transient;
                }
                Err(err)
            }
        }
    }

    async fn join_internet(&self, id: &str, spec: &ContainerSpec) -> Result<(), ProviderError> {
        let request = || NetworkConnectRequest {
            container: id.to_string(),
            endpoint_config: Some(EndpointSettings {
                aliases: Some(spec.aliases.clone()),
                ..Default::default()
            }),
        };
        // The last node's delete may remove the internet network between our ensure and connect;
        // ensuring again once covers that.
        for attempt in 0..2 {
            let internet = {
                let _guard = self.internet.lock().await;
                networks::ensure_internet(&self.docker, &spec.network).await?
            };
            match self.docker.connect_network(&internet, request()).await {
                Ok(()) => return Ok(()),
                Err(e) if attempt == 0 && is_not_found(&e) => continue,
                Err(e) => {
                    return Err(engine_error(e, format!("joining {} to the internet network", spec.name)));
                }
            }
        }
        Ok(())
    }

    async fn create_and_start(
        &self,
        spec: &ContainerSpec,
        ctx: &ContainerContext,
        id: &str,
    ) -> Result<Container, ProviderError> {
        if is_local(ctx) {
            self.join_internet(id, spec).await?;
        }
        self.docker
            .start_container(id, None::<StartContainerOptions>)
            .await
            .map_err(|e| engine_error(e, format!("starting container {}", spec.name)))?;
        self.inspect_by_id(id).await?.ok_or_else(|| {
            ProviderError::new(
                ErrorKind::Transient,
                PROVIDER,
                format!("container {} vanished right after it started", spec.name),
            )
        })
    }

    async fn inspect_by_id(&self, id: &str) -> Result<Option<Container>, ProviderError> {
        match self.docker.inspect_container(id, None::<InspectContainerOptions>).await {
            Ok(c) => Ok(container_from_inspect(c)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(engine_error(e, format!("inspecting container {id}"))),
        }
    }
}

impl std::fmt::Debug for DockerEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerEngine").field("endpoint", &self.endpoint).finish_non_exhaustive()
    }
}

#[async_trait]
impl ContainerEngine for DockerEngine {
    /// One list call, filtered by the network label, stopped containers included.
    async fn list_containers(&self, network: &str) -> Result<Vec<Container>, ProviderError> {
        let filters = HashMap::from([("label", vec![format!("{}={network}", labels::NETWORK)])]);
        let options = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| engine_error(e, format!("listing containers of {network}")))?;
        let mut containers: Vec<Container> =
            summaries.into_iter().filter_map(container_from_summary).collect();
        containers.sort_by(|a, b| a.address.cmp(&b.address).then_with(|| a.id.cmp(&b.id)));
        Ok(containers)
    }

    /// # Guarantees
    /// Repeatable: a container of the same name that is ours (left by a crash) is removed first. If a
    /// step after the engine made the container fails, the container is removed again (best effort; a
    /// later create removes what is left).
    async fn create_container(
        &self,
        spec: &ContainerSpec,
        ctx: &ContainerContext,
    ) -> Result<Container, ProviderError> {
        self.ensure_reference_for(&spec.image).await?;
        let name = self.free_name(spec, ctx.beside.as_deref()).await?;
        self.remove_leftover(&name, &spec.network).await?;
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = self
            .docker
            .create_container(Some(options), container_body(spec, ctx))
            .await
            .map_err(|e| engine_error(e, format!("creating container {name}")))?;
        match self.create_and_start(spec, ctx, &created.id).await {
            Ok(container) => Ok(container),
            Err(err) => {
                if let Err(cleanup) = self.remove_by_id(&created.id).await {
                    tracing::warn!(container = %name, error = %cleanup, "could not remove a half-made container");
                }
                Err(err)
            }
        }
    }

    async fn remove_container(&self, current: &Container) -> Result<(), ProviderError> {
        self.remove_by_id(&current.id).await
    }

    async fn inspect_container(&self, current: &Container) -> Result<Option<Container>, ProviderError> {
        self.inspect_by_id(&current.id).await
    }

    async fn health_detail(&self, current: &Container) -> Result<Option<HealthDetail>, ProviderError> {
        let inspected =
            match self.docker.inspect_container(&current.id, None::<InspectContainerOptions>).await {
                Ok(c) => c,
                Err(e) if is_not_found(&e) => return Ok(None),
                Err(e) => return Err(engine_error(e, format!("container {}", current.id))),
            };
        let state = inspected.state.as_ref();
        // Docker writes nanoseconds; whole seconds are all an uptime needs.
        let started_unix_s = state
            .and_then(|s| s.started_at.as_deref())
            .and_then(|t| Timestamp::parse(&format!("{}Z", t.get(..19)?)))
            .map(|t| t.unix_millis() / 1000);
        let last_check_output = state
            .and_then(|s| s.health.as_ref())
            .and_then(|h| h.log.as_ref())
            .and_then(|log| log.last())
            .and_then(|entry| entry.output.clone());
        Ok(Some(HealthDetail { started_unix_s, last_check_output }))
    }
}
