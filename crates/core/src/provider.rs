//! The provider traits: the only way the core touches the world.
//!
//! The core decides *what* to do; a provider only knows *how*. Every method here is one idempotent
//! step the executor may retry (after a [`ProviderError`] whose kind is retryable) or repeat after a
//! crash, so each implementation documents how it stays safe under repetition.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::network::ProviderKind;
use crate::resource::{
    Container, ContainerSpec, Firewall, FirewallSpec, Machine, MachineSpec, StableIp, StableIpSpec,
};

/// How a provider call failed, classified from the provider's structured error (never from message text).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The object does not exist (providers turn this into `None`/`Ok` where absence is fine).
    NotFound,
    /// Rate limited; retry after the hint, or with backoff.
    Throttled {
        /// When the provider says to retry.
        retry_after: Option<Duration>,
    },
    /// The request conflicts with the object's current state (e.g. already exists, still in use).
    Conflict,
    /// Credentials missing, invalid or not allowed.
    Unauthorized,
    /// The request itself is wrong (bad size, image, region); retrying cannot help.
    Invalid,
    /// A passing failure (5xx, timeout, connection reset); retry with backoff.
    Transient,
}

/// A failed provider call.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{provider}: {message}{}", request_id.as_ref().map(|r| format!(" (request ID {r})")).unwrap_or_default())]
pub struct ProviderError {
    /// Classification.
    pub kind: ErrorKind,
    /// Which provider or engine (`aws`, `digitalocean`, `docker`, ...).
    pub provider: String,
    /// What failed, for a person; never contains credentials.
    pub message: String,
    /// The provider's request ID, when it gave one.
    pub request_id: Option<String>,
}

impl ProviderError {
    /// A new error.
    pub fn new(kind: ErrorKind, provider: impl Into<String>, message: impl Into<String>) -> Self {
        ProviderError { kind, provider: provider.into(), message: message.into(), request_id: None }
    }

    /// Attaches the provider's request ID.
    pub fn with_request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }

    /// Whether retrying the same call may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind, ErrorKind::Throttled { .. } | ErrorKind::Transient)
    }

    /// The provider's retry hint, when throttled.
    pub fn retry_after(&self) -> Option<Duration> {
        match self.kind {
            ErrorKind::Throttled { retry_after } => retry_after,
            _ => None,
        }
    }
}

pub use crate::secret::Secret;

/// TLS material a cloud machine's bootstrap installs so its Docker engine serves the API with mutual
/// TLS. Made at apply time from the network's CA; never part of a plan.
#[derive(Debug, Clone)]
pub struct EngineTls {
    /// The network CA certificate (PEM); the engine trusts clients it signed.
    pub ca_cert_pem: String,
    /// The machine's server certificate (PEM).
    pub server_cert_pem: String,
    /// The machine's server key (PEM).
    pub server_key_pem: Secret,
}

/// Issues per-machine engine TLS material from the network's CA.
pub trait NodePki: Send + Sync {
    /// Server certificate for the machine at `address`; `sans` are its stable names and addresses.
    fn issue_server(&self, address: &crate::Address, sans: &[String]) -> Result<EngineTls, ProviderError>;
}

/// What a machine create may need besides the spec.
#[derive(Clone, Default)]
pub struct CreateContext {
    /// The firewall of the machine's provider-region, when the provider has firewalls.
    pub firewall: Option<Firewall>,
    /// Issues the engine TLS material for the machine's user data (cloud providers).
    pub pki: Option<Arc<dyn NodePki>>,
}

impl fmt::Debug for CreateContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateContext").field("firewall", &self.firewall).finish_non_exhaustive()
    }
}

/// Everything of one network a provider holds in one region.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// Machines carrying the network's ownership tags, not terminated.
    pub machines: Vec<Machine>,
    /// The network's firewalls.
    pub firewalls: Vec<Firewall>,
    /// The network's stable IPs.
    pub stable_ips: Vec<StableIp>,
}

/// A machine provider: AWS, DigitalOcean, or local virtual nodes.
///
/// # Guarantees an implementation gives
/// - Every object is created **with** its ownership tags (network, address, `peer_cluster`), never tagged
///   afterwards, so a crash between create and tag cannot orphan it.
/// - `inventory` costs O(1) paginated list calls per region, never one call per object.
/// - Creates are idempotent under retry and crash: same `idempotency_key`, or a look-up by ownership
///   tags right before the create, returns the existing object instead of making a second.
/// - Deletes of an object that is already gone succeed.
///
/// # Assumptions
/// The executor never runs two steps on the same address at once.
#[async_trait]
pub trait MachineProvider: Send + Sync {
    /// Which provider this is.
    fn kind(&self) -> ProviderKind;

    /// Whether this provider retries its own failed requests (bounded by a
    /// [`RetryPolicy`](crate::retry::RetryPolicy)). The executor then makes one attempt per call,
    /// so retries never multiply ([`crate::retry`]: one retry layer per call path); otherwise
    /// (the default) the executor retries retryable errors itself.
    fn retries_requests(&self) -> bool {
        false
    }

    /// Lists what of `network` exists in `region`, by ownership tags.
    async fn inventory(&self, network: &str, region: &str) -> Result<Inventory, ProviderError>;

    /// Creates a machine and returns it once the provider has accepted it (it may still be `Pending`).
    async fn create_machine(&self, spec: &MachineSpec, ctx: &CreateContext)
    -> Result<Machine, ProviderError>;

    /// Changes what can change in place (deploy tags, size where the provider can resize).
    async fn update_machine(&self, current: &Machine, spec: &MachineSpec) -> Result<Machine, ProviderError>;

    /// Deletes a machine and waits until it is gone (or going, where the provider cannot say more).
    async fn delete_machine(&self, current: &Machine) -> Result<(), ProviderError>;

    /// Creates the network's firewall in a region.
    async fn create_firewall(&self, spec: &FirewallSpec) -> Result<Firewall, ProviderError> {
        Err(unsupported(self.kind(), &format!("firewall {}", spec.address)))
    }

    /// Replaces a firewall's rules with the spec's.
    async fn update_firewall(
        &self,
        current: &Firewall,
        spec: &FirewallSpec,
    ) -> Result<Firewall, ProviderError> {
        let _ = current;
        Err(unsupported(self.kind(), &format!("firewall {}", spec.address)))
    }

    /// Deletes a firewall.
    async fn delete_firewall(&self, current: &Firewall) -> Result<(), ProviderError> {
        Err(unsupported(self.kind(), &format!("firewall {}", current.address)))
    }

    /// Allocates a stable IP and attaches it to `machine`.
    async fn create_stable_ip(
        &self,
        spec: &StableIpSpec,
        machine: &Machine,
    ) -> Result<StableIp, ProviderError> {
        let _ = machine;
        Err(unsupported(self.kind(), &format!("stable IP {}", spec.address)))
    }

    /// Attaches an existing stable IP to `machine` (after the machine was replaced).
    async fn attach_stable_ip(
        &self,
        current: &StableIp,
        machine: &Machine,
    ) -> Result<StableIp, ProviderError> {
        let _ = machine;
        Err(unsupported(self.kind(), &format!("stable IP {}", current.address)))
    }

    /// Releases a stable IP.
    async fn delete_stable_ip(&self, current: &StableIp) -> Result<(), ProviderError> {
        Err(unsupported(self.kind(), &format!("stable IP {}", current.address)))
    }

    /// Looks up a stable IP that state remembers and [`MachineProvider::inventory`] did not list.
    ///
    /// Where stable IPs carry no ownership tags (DigitalOcean's reserved IPs), the machine they are
    /// assigned to is their only link to the network: a crash between deleting a machine and
    /// attaching its IP to the replacement leaves the IP assigned to nothing, so no inventory shows
    /// it, and without this it would be billed forever while a second one is reserved in its place.
    /// Returns it, with `machine_id: None`, while it exists and is assigned to nothing; `None` when
    /// it is gone or assigned elsewhere (then it is no longer the network's). The default, for
    /// providers whose inventory lists every stable IP of the network by its tags, is `None`.
    async fn find_stable_ip(&self, remembered: &StableIp) -> Result<Option<StableIp>, ProviderError> {
        let _ = remembered;
        Ok(None)
    }
}

fn unsupported(kind: ProviderKind, what: &str) -> ProviderError {
    ProviderError::new(ErrorKind::Invalid, kind.as_str(), format!("{what}: not supported by this provider"))
}

/// What a container create needs to know about where it lands.
#[derive(Debug, Clone)]
pub struct ContainerContext {
    /// The machine the container is placed on.
    pub node: Machine,
    /// Stable name → address, for the names in [`ContainerSpec::needs`] (engines without shared DNS
    /// write them into the container's hosts file).
    pub hosts: BTreeMap<String, String>,
    /// A start-first replace: the container of the same address this one starts beside. It keeps
    /// running until the new one is healthy, so the engine must not take it for a leftover of a crash,
    /// and must give the new one a name of its own. (Boxed: most creates have none.)
    pub beside: Option<Box<Container>>,
}

/// A Docker engine (or a stand-in) that runs containers.
///
/// # Guarantees an implementation gives
/// - Containers carry ownership labels from creation; `list_containers` is one labelled list call.
/// - `create_container` first removes a stopped container of the same name it owns (a crash may have
///   left one), so it can be repeated — except [`ContainerContext::beside`], which it leaves running.
/// - Removing a container that is already gone succeeds.
#[async_trait]
pub trait ContainerEngine: Send + Sync {
    /// Lists the network's containers on this engine.
    async fn list_containers(&self, network: &str) -> Result<Vec<Container>, ProviderError>;

    /// Creates and starts a container; returns once the engine reports it started.
    async fn create_container(
        &self,
        spec: &ContainerSpec,
        ctx: &ContainerContext,
    ) -> Result<Container, ProviderError>;

    /// Stops and removes a container.
    async fn remove_container(&self, current: &Container) -> Result<(), ProviderError>;

    /// The container's current state and health; `None` when it is gone.
    async fn inspect_container(&self, current: &Container) -> Result<Option<Container>, ProviderError>;

    /// What the engine knows beyond state and health: when the container started and what its last
    /// health check printed (the reference node's probe prints a JSON line there). Read through the
    /// same API as everything else, so `status` needs no port of its own. `None` when it is gone; the
    /// default knows nothing more.
    async fn health_detail(&self, current: &Container) -> Result<Option<HealthDetail>, ProviderError> {
        Ok(self.inspect_container(current).await?.map(|_| HealthDetail::default()))
    }
}

/// What [`ContainerEngine::health_detail`] reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthDetail {
    /// When the container started, in seconds since the Unix epoch.
    pub started_unix_s: Option<u64>,
    /// The output of the most recent health check, as the engine kept it.
    pub last_check_output: Option<String>,
}

/// Finds the engine that runs containers on a machine.
#[async_trait]
pub trait EngineConnector: Send + Sync {
    /// A key naming the engine of `machine`: machines that share an engine (local virtual nodes) share
    /// a key, so refresh lists each engine once.
    fn engine_key(&self, machine: &Machine) -> String;

    /// The engine of `machine`, connected (and cached by key).
    async fn engine_for(&self, machine: &Machine) -> Result<Arc<dyn ContainerEngine>, ProviderError>;
}

/// The providers and engines a run uses.
#[derive(Clone, Default)]
pub struct Providers {
    machines: BTreeMap<ProviderKind, Arc<dyn MachineProvider>>,
    engines: Option<Arc<dyn EngineConnector>>,
    pki: Option<Arc<dyn NodePki>>,
}

impl Providers {
    /// No providers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the machine provider for its kind (replacing any earlier one).
    pub fn with_machines(mut self, provider: Arc<dyn MachineProvider>) -> Self {
        self.machines.insert(provider.kind(), provider);
        self
    }

    /// Registers `provider` for `kind` (used by the test provider to stand in for any kind).
    pub fn with_machines_as(mut self, kind: ProviderKind, provider: Arc<dyn MachineProvider>) -> Self {
        self.machines.insert(kind, provider);
        self
    }

    /// Registers the engine connector.
    pub fn with_engines(mut self, engines: Arc<dyn EngineConnector>) -> Self {
        self.engines = Some(engines);
        self
    }

    /// Registers the PKI that issues machines' engine TLS material.
    pub fn with_pki(mut self, pki: Arc<dyn NodePki>) -> Self {
        self.pki = Some(pki);
        self
    }

    /// The machine provider of `kind`.
    pub fn machines(&self, kind: ProviderKind) -> Option<&Arc<dyn MachineProvider>> {
        self.machines.get(&kind)
    }

    /// The engine connector.
    pub fn engines(&self) -> Option<&Arc<dyn EngineConnector>> {
        self.engines.as_ref()
    }

    /// The PKI.
    pub fn pki(&self) -> Option<&Arc<dyn NodePki>> {
        self.pki.as_ref()
    }
}

impl fmt::Debug for Providers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Providers")
            .field("machines", &self.machines.keys().collect::<Vec<_>>())
            .field("engines", &self.engines.is_some())
            .finish()
    }
}
