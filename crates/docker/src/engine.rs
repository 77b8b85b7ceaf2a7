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
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummary,
    ContainerSummaryHealthStatusEnum, ContainerSummaryStateEnum, EndpointSettings, HealthConfig,
    HealthStatusEnum, HostConfig, NetworkConnectRequest, PortBinding, RestartPolicy as DockerRestart,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder, StartContainerOptions,
};
use peerfleet_core::network::{ChainId, RestartPolicy};
use peerfleet_core::provider::{ContainerContext, ContainerEngine, ErrorKind, ProviderError, Secret};
use peerfleet_core::resource::{Container, ContainerSpec, ContainerState, Health};
use tokio::sync::Mutex;

use crate::error::{Error, PROVIDER, engine_error, is_not_found};
use crate::image::{ReferenceImage, ensure_image};
use crate::labels;
use crate::local;
use crate::pki::ClientIdentity;

/// The engine's socket when `DOCKER_HOST` is not set.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// How long one engine request may take (image builds upload the whole context in one request).
const REQUEST_TIMEOUT_SECS: u64 = 120;

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
            ensure_image(self, reference).await?;
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
                local::ensure_internet(&self.docker, &spec.network).await?
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
}

/// Whether the container lands on a local virtual node (shared engine, networks instead of machines).
fn is_local(ctx: &ContainerContext) -> bool {
    !ctx.node.provider.capabilities().remote_engine
}

/// The labels a container is created with.
pub(crate) fn container_labels(spec: &ContainerSpec) -> HashMap<String, String> {
    let mut l = HashMap::from([
        (labels::NETWORK.to_string(), spec.network.clone()),
        (labels::ADDRESS.to_string(), spec.address.to_string()),
        (labels::SPEC.to_string(), labels::encode_spec(spec)),
    ]);
    if let Some(chain_id) = &spec.chain_id {
        l.insert(labels::CHAIN_ID.to_string(), chain_id.to_string());
    }
    l
}

/// The create request for `spec` placed as `ctx` says (see the module documentation).
pub(crate) fn container_body(spec: &ContainerSpec, ctx: &ContainerContext) -> ContainerCreateBody {
    let local = is_local(ctx);
    let mut host = HostConfig { restart_policy: Some(restart_policy(spec.restart)), ..Default::default() };
    let mut exposed = None;
    if local {
        // The node's network is the machine; its ID is the machine's provider ID.
        host.network_mode = Some(ctx.node.id.clone());
    } else {
        let key = |p: &u16| format!("{p}/tcp");
        exposed = Some(spec.ports.iter().map(key).collect());
        host.port_bindings = Some(
            spec.ports
                .iter()
                .map(|p| {
                    let binding =
                        PortBinding { host_ip: Some("0.0.0.0".into()), host_port: Some(p.to_string()) };
                    (key(p), Some(vec![binding]))
                })
                .collect(),
        );
        host.extra_hosts = Some(ctx.hosts.iter().map(|(name, ip)| format!("{name}:{ip}")).collect());
    }
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        hostname: Some(spec.name.clone()),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: Some(container_labels(spec)),
        healthcheck: Some(health_config(&spec.health)),
        exposed_ports: exposed,
        host_config: Some(host),
        ..Default::default()
    }
}

fn restart_policy(policy: RestartPolicy) -> DockerRestart {
    let name = match policy {
        RestartPolicy::Off => RestartPolicyNameEnum::NO,
        RestartPolicy::OnFailure => RestartPolicyNameEnum::ON_FAILURE,
        RestartPolicy::Always => RestartPolicyNameEnum::ALWAYS,
    };
    DockerRestart { name: Some(name), maximum_retry_count: None }
}

/// Docker's health check; its durations are nanoseconds and must be 0 or at least 1 ms.
fn health_config(check: &peerfleet_core::network::HealthCheck) -> HealthConfig {
    if check.command.is_empty() {
        // Explicitly none, so a health check baked into the image does not apply either.
        return HealthConfig { test: Some(vec!["NONE".into()]), ..Default::default() };
    }
    let nanos = |ms: u64| i64::try_from(ms.max(1).saturating_mul(1_000_000)).unwrap_or(i64::MAX);
    let mut test = vec!["CMD".to_string()];
    test.extend(check.command.iter().cloned());
    HealthConfig {
        test: Some(test),
        interval: Some(nanos(check.interval_ms)),
        timeout: Some(nanos(check.timeout_ms)),
        retries: Some(i64::from(check.retries)),
        ..Default::default()
    }
}

/// A container from what labels and state say; `None` when it carries no readable address (then it is
/// not something peerfleet can act on).
fn decode(
    id: String,
    labels: Option<&HashMap<String, String>>,
    state: ContainerState,
    health: Health,
) -> Option<Container> {
    let labels = labels?;
    let address = match labels.get(labels::ADDRESS).map(|a| a.parse()) {
        Some(Ok(address)) => address,
        _ => {
            tracing::warn!(container = %id, "ignoring a container with the network label but no readable address");
            return None;
        }
    };
    Some(Container {
        id,
        address,
        spec: labels::decode_spec(labels.get(labels::SPEC)),
        state,
        health,
        chain_id: labels.get(labels::CHAIN_ID).and_then(|c| ChainId::parse(c)),
    })
}

fn container_from_summary(s: ContainerSummary) -> Option<Container> {
    let state = match s.state {
        Some(ContainerSummaryStateEnum::CREATED) => ContainerState::Created,
        Some(ContainerSummaryStateEnum::RUNNING | ContainerSummaryStateEnum::STOPPING) => {
            ContainerState::Running
        }
        Some(ContainerSummaryStateEnum::RESTARTING) => ContainerState::Restarting,
        Some(ContainerSummaryStateEnum::EXITED) => ContainerState::Exited,
        Some(ContainerSummaryStateEnum::PAUSED) => ContainerState::Paused,
        _ => ContainerState::Dead,
    };
    let health = match s.health.and_then(|h| h.status) {
        Some(ContainerSummaryHealthStatusEnum::HEALTHY) => Health::Healthy,
        Some(ContainerSummaryHealthStatusEnum::UNHEALTHY) => Health::Unhealthy,
        Some(ContainerSummaryHealthStatusEnum::STARTING) => Health::Starting,
        Some(_) => Health::None,
        None => health_from_status(s.status.as_deref().unwrap_or_default()),
    };
    decode(s.id?, s.labels.as_ref(), state, health)
}

/// Health from a list entry's status line, for engines older than API 1.52, whose list entries have
/// no health field. The engine itself formats the suffix — `(healthy)`, `(unhealthy)`,
/// `(health: starting)` — after the uptime of a running container with a health check.
fn health_from_status(status: &str) -> Health {
    if status.ends_with("(healthy)") {
        Health::Healthy
    } else if status.ends_with("(unhealthy)") {
        Health::Unhealthy
    } else if status.ends_with("(health: starting)") {
        Health::Starting
    } else {
        Health::None
    }
}

fn container_from_inspect(c: ContainerInspectResponse) -> Option<Container> {
    let state = c.state.as_ref();
    let run_state = match state.and_then(|s| s.status) {
        Some(ContainerStateStatusEnum::CREATED) => ContainerState::Created,
        Some(ContainerStateStatusEnum::RUNNING) => ContainerState::Running,
        Some(ContainerStateStatusEnum::RESTARTING) => ContainerState::Restarting,
        Some(ContainerStateStatusEnum::EXITED) => ContainerState::Exited,
        Some(ContainerStateStatusEnum::PAUSED) => ContainerState::Paused,
        _ => ContainerState::Dead,
    };
    let health = match state.and_then(|s| s.health.as_ref()).and_then(|h| h.status) {
        Some(HealthStatusEnum::HEALTHY) => Health::Healthy,
        Some(HealthStatusEnum::UNHEALTHY) => Health::Unhealthy,
        Some(HealthStatusEnum::STARTING) => Health::Starting,
        _ => Health::None,
    };
    decode(c.id?, c.config.as_ref().and_then(|cfg| cfg.labels.as_ref()), run_state, health)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use peerfleet_core::Address;
    use peerfleet_core::network::{HealthCheck, ProviderKind, Role};
    use peerfleet_core::resource::{Machine, MachineStatus};

    use super::*;

    fn spec() -> ContainerSpec {
        ContainerSpec {
            address: Address::container("relay", 0),
            network: "testnet".into(),
            service: "relay".into(),
            role: Role::Relay,
            name: "relay-1".into(),
            aliases: vec!["relay".into(), "relay-1".into()],
            node: Address::machine("virginia", 0),
            image: "peerfleet-node:0123456789abcdef".into(),
            env: BTreeMap::from([
                ("CHAIN_ID".to_string(), "abc".to_string()),
                ("API_TOKEN".to_string(), "hunter2".to_string()),
            ]),
            ports: vec![26656, 26657],
            restart: RestartPolicy::OnFailure,
            health: HealthCheck {
                command: vec!["/peerfleet-node".into(), "probe".into()],
                interval_ms: 500,
                timeout_ms: 0,
                retries: 3,
            },
            needs: vec!["master".into()],
            chain_id: None,
        }
    }

    fn ctx(provider: ProviderKind) -> ContainerContext {
        ContainerContext {
            node: Machine {
                id: "net-id-1".into(),
                address: Address::machine("virginia", 0),
                provider,
                region: "us-east-1".into(),
                size: "small".into(),
                image: "local".into(),
                tags: BTreeSet::new(),
                chain_id: None,
                generation: 0,
                bootstrap: 1,
                status: MachineStatus::Running,
                public_ip: None,
                private_ip: None,
            },
            hosts: BTreeMap::from([("master".to_string(), "198.51.100.4".to_string())]),
            beside: None,
        }
    }

    #[test]
    fn container_on_a_local_node_joins_its_network_and_publishes_nothing() {
        let body = container_body(&spec(), &ctx(ProviderKind::Local));
        let host = body.host_config.unwrap();
        assert_eq!(host.network_mode.as_deref(), Some("net-id-1"));
        assert!(host.port_bindings.is_none());
        assert!(host.extra_hosts.is_none());
        assert!(body.exposed_ports.is_none());
    }

    #[test]
    fn container_on_a_cloud_machine_publishes_its_ports_and_maps_needed_names() {
        let body = container_body(&spec(), &ctx(ProviderKind::Aws));
        let host = body.host_config.unwrap();
        let bindings = host.port_bindings.unwrap();
        let b = bindings["26657/tcp"].as_ref().unwrap();
        assert_eq!(b[0].host_port.as_deref(), Some("26657"));
        assert_eq!(b[0].host_ip.as_deref(), Some("0.0.0.0"));
        assert_eq!(host.extra_hosts.unwrap(), vec!["master:198.51.100.4".to_string()]);
        assert_eq!(host.network_mode, None);
    }

    #[test]
    fn restart_policies_map_to_dockers_names() {
        for (ours, theirs) in [
            (RestartPolicy::Off, RestartPolicyNameEnum::NO),
            (RestartPolicy::OnFailure, RestartPolicyNameEnum::ON_FAILURE),
            (RestartPolicy::Always, RestartPolicyNameEnum::ALWAYS),
        ] {
            assert_eq!(restart_policy(ours).name, Some(theirs));
        }
    }

    #[test]
    fn health_durations_are_nanoseconds_and_never_below_a_millisecond() {
        let h = health_config(&spec().health);
        assert_eq!(h.test.unwrap(), vec!["CMD", "/peerfleet-node", "probe"]);
        assert_eq!(h.interval, Some(500_000_000));
        assert_eq!(h.timeout, Some(1_000_000));
        assert_eq!(h.retries, Some(3));
    }

    #[test]
    fn secret_env_reaches_the_container_but_only_its_hash_the_label() {
        let body = container_body(&spec(), &ctx(ProviderKind::Local));
        assert!(body.env.unwrap().contains(&"API_TOKEN=hunter2".to_string()));
        let labels = body.labels.unwrap();
        assert!(!labels.values().any(|v| v.contains("hunter2")));
        let stored = labels::decode_spec(labels.get(labels::SPEC)).unwrap();
        assert_eq!(
            stored.env["API_TOKEN"],
            "sha256:f52fbd32b2b3b86ff88ef6c490628285f482af15ddcb29541f94bcf526a3f6c7"
        );
        assert_eq!(stored.env["CHAIN_ID"], "abc");
    }

    #[test]
    fn health_is_read_from_the_engines_status_suffix() {
        assert_eq!(health_from_status("Up 3 seconds (healthy)"), Health::Healthy);
        assert_eq!(health_from_status("Up 1 minute (unhealthy)"), Health::Unhealthy);
        assert_eq!(health_from_status("Up 1 second (health: starting)"), Health::Starting);
        assert_eq!(health_from_status("Exited (1) 2 seconds ago"), Health::None);
        assert_eq!(health_from_status("Up 5 seconds"), Health::None);
    }

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
