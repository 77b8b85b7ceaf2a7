//! Resources: what is desired (specs, computed from the network) and what exists (read by refresh).
//!
//! Desired and actual are separate types on purpose: a spec has no provider ID and no runtime status;
//! an actual object has both, plus whatever the provider reports. The planner compares the two field by
//! field and records every difference as a [`crate::plan::Reason`].

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::address::Address;
use crate::network::{ChainId, HealthCheck, ProviderKind, Region, RestartPolicy, Role};

/// The version of the machine bootstrap (user data) peerfleet generates. Raising it replaces machines,
/// because user data only runs at first boot.
pub const BOOTSTRAP_VERSION: u32 = 1;

/// A desired machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineSpec {
    /// `machine.CLUSTER[SLOT]`.
    pub address: Address,
    /// Network name (ownership).
    pub network: String,
    /// Provider.
    pub provider: ProviderKind,
    /// Region.
    pub region: Region,
    /// Provider size.
    pub size: String,
    /// Image; `None` = provider default.
    pub image: Option<String>,
    /// Deploy tags (always includes the cluster's tags).
    pub tags: BTreeSet<String>,
    /// Credentials profile.
    pub profile: Option<String>,
    /// Bootstrap (user data) version.
    pub bootstrap: u32,
    /// Set when this machine hosts the genesis server.
    pub chain_id: Option<ChainId>,
    /// Incremented on every replace, so a replacement never reuses its predecessor's idempotency key.
    pub generation: u32,
    /// Deterministic key for this create (EC2 `ClientToken`): network + address + generation + lineage.
    pub idempotency_key: String,
    /// The firewall of its provider-region, when the provider has firewalls.
    pub firewall: Option<Address>,
}

/// Where a machine is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MachineStatus {
    /// Booting.
    Pending,
    /// Up.
    Running,
    /// Stopping or stopped.
    Stopped,
    /// Being deleted.
    ShuttingDown,
}

/// A machine that exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// Provider's ID (`i-...`, droplet ID, Docker network ID).
    pub id: String,
    /// Address, from its ownership tags.
    pub address: Address,
    /// Provider.
    pub provider: ProviderKind,
    /// Region slug.
    pub region: String,
    /// Size.
    pub size: String,
    /// Image the machine was created from.
    pub image: String,
    /// Deploy tags (ownership tags excluded).
    pub tags: BTreeSet<String>,
    /// Chain ID tag, on the genesis host.
    pub chain_id: Option<ChainId>,
    /// Generation tag.
    pub generation: u32,
    /// Bootstrap version tag.
    pub bootstrap: u32,
    /// Status.
    pub status: MachineStatus,
    /// Public address, when it has one (never connected to in tests against stand-ins).
    pub public_ip: Option<String>,
    /// Private address.
    pub private_ip: Option<String>,
}

/// Protocol of a firewall rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// One inbound rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FirewallRule {
    /// Protocol.
    pub protocol: Protocol,
    /// Port.
    pub port: u16,
    /// Source CIDRs.
    pub sources: Vec<String>,
}

impl FirewallRule {
    /// `rules` in their one canonical form: one rule per (protocol, port), in that order, its sources
    /// sorted and without repeats, rules without sources dropped. Two rule lists that grant the same
    /// access are equal in this form, whatever order a spec or a provider's API wrote them in; every
    /// provider reads its firewalls into it, and the planner compares nothing else.
    pub fn canonical(rules: &[FirewallRule]) -> Vec<FirewallRule> {
        let mut by_port: BTreeMap<(Protocol, u16), BTreeSet<&str>> = BTreeMap::new();
        for rule in rules {
            by_port
                .entry((rule.protocol, rule.port))
                .or_default()
                .extend(rule.sources.iter().map(String::as_str));
        }
        by_port
            .into_iter()
            .filter(|(_, sources)| !sources.is_empty())
            .map(|((protocol, port), sources)| FirewallRule {
                protocol,
                port,
                sources: sources.into_iter().map(str::to_string).collect(),
            })
            .collect()
    }
}

/// A desired firewall (AWS security group, DigitalOcean firewall) for one provider-region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirewallSpec {
    /// `firewall.PROVIDER.REGION`.
    pub address: Address,
    /// Network name.
    pub network: String,
    /// Provider.
    pub provider: ProviderKind,
    /// Region slug.
    pub region: String,
    /// Inbound rules, sorted.
    pub rules: Vec<FirewallRule>,
}

/// A firewall that exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Firewall {
    /// Provider's ID.
    pub id: String,
    /// Address.
    pub address: Address,
    /// Inbound rules, sorted.
    pub rules: Vec<FirewallRule>,
}

/// A desired stable address for the machine hosting genesis or master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StableIpSpec {
    /// `ip.CLUSTER[SLOT]`.
    pub address: Address,
    /// Network name.
    pub network: String,
    /// The machine it is attached to.
    pub machine: Address,
    /// Provider.
    pub provider: ProviderKind,
    /// Region slug.
    pub region: String,
}

/// A stable address that exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StableIp {
    /// Provider's ID (allocation ID; for DigitalOcean the IP itself).
    pub id: String,
    /// Address.
    pub address: Address,
    /// The IP.
    pub ip: String,
    /// Provider ID of the machine it is attached to.
    pub machine_id: Option<String>,
    /// The provider holding it, so that one which lost its machine (a crash between deleting the old
    /// machine and attaching the IP to the new one) can still be looked up, attached or released.
    /// States written before it was recorded read `None`: the machine's provider is used then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ProviderKind>,
}

/// A desired container.
///
/// Its `Debug` shows the [`ContainerSpec::sealed`] form: a sensitive value never reaches a log.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// `container.SERVICE[SLOT]`.
    pub address: Address,
    /// Network name.
    pub network: String,
    /// Service name.
    pub service: String,
    /// Role.
    pub role: Role,
    /// Stable name: `SERVICE-N` (N = slot + 1); the engine's container name prefixes the network.
    pub name: String,
    /// DNS names the container answers to on the network: its stable name and the service name.
    pub aliases: Vec<String>,
    /// The machine it is placed on.
    pub node: Address,
    /// Resolved image reference (the reference node's content tag, or the named image).
    pub image: String,
    /// Full environment (role environment plus the service's own).
    pub env: BTreeMap<String, String>,
    /// Published ports.
    pub ports: Vec<u16>,
    /// Restart policy.
    pub restart: RestartPolicy,
    /// Health check.
    pub health: HealthCheck,
    /// Stable names this container must resolve (`genesis`, `master`); engines without shared DNS
    /// map them to the hosting machines' stable addresses at apply time.
    pub needs: Vec<String>,
    /// The pinned chain ID, on the genesis container.
    pub chain_id: Option<ChainId>,
    /// The seal of every sensitive value in `env` (declared secret, or a name that looks secret), by
    /// variable (see [`crate::seal`]). Empty in the sealed form, whose `env` holds the seals instead.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub seals: BTreeMap<String, String>,
}

impl ContainerSpec {
    /// Every name the container answers to in `needs` and the hosts file: its service, its role and
    /// its aliases.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        [self.service.as_str(), self.role.as_str()].into_iter().chain(self.aliases.iter().map(String::as_str))
    }

    /// The form everything but the container itself keeps (its Docker label, plan files, state): each
    /// sensitive value replaced by its seal. Sealing a sealed spec changes nothing.
    pub fn sealed(&self) -> ContainerSpec {
        let mut sealed = self.clone();
        for (key, seal) in std::mem::take(&mut sealed.seals) {
            sealed.env.insert(key, seal);
        }
        sealed
    }
}

impl std::fmt::Debug for ContainerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Through JSON so that a field added later is shown (and sealed) without touching this.
        let json = serde_json::to_string(&self.sealed()).map_err(|_| std::fmt::Error)?;
        write!(f, "ContainerSpec {json}")
    }
}

/// A container's run state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerState {
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Restarting.
    Restarting,
    /// Exited (stopped, killed, crashed).
    Exited,
    /// Paused.
    Paused,
    /// Dead or unknown.
    Dead,
}

impl ContainerState {
    /// The state's name as people and the JSON formats read it (`running`, `exited`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Restarting => "restarting",
            ContainerState::Exited => "exited",
            ContainerState::Paused => "paused",
            ContainerState::Dead => "dead",
        }
    }
}

/// A container's health as the engine reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// No health check.
    None,
    /// Checks not passed yet.
    Starting,
    /// Healthy.
    Healthy,
    /// Failing.
    Unhealthy,
}

/// A container that exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    /// Engine's ID.
    pub id: String,
    /// Address, from its labels.
    pub address: Address,
    /// The spec it was created from, read back from its labels (`None` if unreadable).
    pub spec: Option<ContainerSpec>,
    /// Run state.
    pub state: ContainerState,
    /// Health.
    pub health: Health,
    /// Chain ID label, on the genesis container.
    pub chain_id: Option<ChainId>,
}

/// A desired resource of any kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Desired {
    /// A firewall.
    Firewall(FirewallSpec),
    /// A machine.
    Machine(MachineSpec),
    /// A stable IP.
    StableIp(StableIpSpec),
    /// A container.
    Container(ContainerSpec),
}

impl Desired {
    /// The resource's address.
    pub fn address(&self) -> &Address {
        match self {
            Desired::Firewall(s) => &s.address,
            Desired::Machine(s) => &s.address,
            Desired::StableIp(s) => &s.address,
            Desired::Container(s) => &s.address,
        }
    }
}

/// An existing resource of any kind.
// Containers dominate every real network, so boxing the largest variant would add an allocation to
// the most common case to save space in the rare ones.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Actual {
    /// A firewall.
    Firewall(Firewall),
    /// A machine.
    Machine(Machine),
    /// A stable IP.
    StableIp(StableIp),
    /// A container.
    Container(Container),
}

impl Actual {
    /// The resource's address.
    pub fn address(&self) -> &Address {
        match self {
            Actual::Firewall(s) => &s.address,
            Actual::Machine(s) => &s.address,
            Actual::StableIp(s) => &s.address,
            Actual::Container(s) => &s.address,
        }
    }

    /// The provider's or engine's ID.
    pub fn id(&self) -> &str {
        match self {
            Actual::Firewall(s) => &s.id,
            Actual::Machine(s) => &s.id,
            Actual::StableIp(s) => &s.id,
            Actual::Container(s) => &s.id,
        }
    }
}
