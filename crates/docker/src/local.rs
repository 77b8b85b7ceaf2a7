//! Local virtual nodes: machines that are Docker bridge networks on the local engine.
//!
//! A node of a local cluster is the bridge network `<network>-<cluster>-<slot>`, labelled with what a
//! cloud machine's tags would say (ownership, region, city, deploy tags, generation, bootstrap
//! version, size, chain ID). Containers placed on it join that network, plus one network per peer
//! network, `<network>-internet`, that stands for the internet between nodes: there every container
//! answers to its stable names (`relay`, `relay-1`, `master`, `genesis`) through Docker's embedded DNS.
//!
//! The internet network is made on demand by the engine when the first container joins it
//! ([`crate::DockerEngine`]), and removed by [`LocalNodes`] when the network's last node is deleted
//! (and by [`LocalNodes::cleanup`], which a destroy may call to be sure).
//!
//! Docker cannot change a network's labels, so a node's tags, size, region or generation cannot change
//! in place: [`LocalNodes::update_machine`] accepts only an update that changes nothing it stores, and
//! refuses anything else with [`ErrorKind::Invalid`], naming the fields — the plan must replace the
//! node instead.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::models::{NetworkCreateRequest, NetworkDisconnectRequest};
use bollard::query_parameters::{InspectContainerOptions, InspectNetworkOptions};
use peerfleet_core::Address;
use peerfleet_core::network::{ChainId, ProviderKind};
use peerfleet_core::provider::{CreateContext, ErrorKind, Inventory, MachineProvider, ProviderError};
use peerfleet_core::resource::{Machine, MachineSpec, MachineStatus};
use peerfleet_core::retry::RetryPolicy;

use crate::engine::DockerEngine;
use crate::error::{PROVIDER, engine_error, is_not_found};
use crate::labels;
use crate::networks::{DockerNetwork, internet_networks, label, list_networks};

/// What [`Machine::image`] says for a local node: there is no machine image.
pub const LOCAL_IMAGE: &str = "local";

/// The machine provider for `provider = "local"`: virtual nodes on one Docker engine.
#[derive(Debug, Clone)]
pub struct LocalNodes {
    engine: Arc<DockerEngine>,
}

impl LocalNodes {
    /// Local nodes on `engine` (usually the one [`DockerEngine::connect_local`] reaches; the
    /// [`crate::DockerConnector`] should be given the same engine for containers).
    pub fn new(engine: Arc<DockerEngine>) -> Self {
        LocalNodes { engine }
    }

    /// The engine the nodes live on.
    pub fn engine(&self) -> &Arc<DockerEngine> {
        &self.engine
    }

    /// The Docker network name of a node: `<network>-<cluster>-<slot>`.
    pub fn node_network_name(network: &str, address: &Address) -> String {
        match address {
            Address::Machine { cluster, slot } => format!("{network}-{cluster}-{slot}"),
            other => format!("{network}-{}", other.slug()),
        }
    }

    /// Removes `network`'s internet network when no node of `network` is left. Idempotent.
    ///
    /// The engine refuses while endpoints are attached. Endpoints of containers that no longer exist
    /// (the engine can lag behind a removal) or that are `network`'s own are disconnected, and the
    /// removal is tried again a few times with backoff. Anything else attached is not ours to cut.
    ///
    /// Returns what is left, one line per network naming what still holds it (empty: all gone).
    ///
    /// # Errors
    /// When the engine cannot be reached.
    pub async fn cleanup(&self, network: &str) -> Result<Vec<String>, ProviderError> {
        let docker = self.engine.client();
        let nodes = list_networks(docker, &[(labels::NETWORK, network)]).await?;
        if nodes.iter().any(|n| label(n, labels::ADDRESS).is_some()) {
            return Ok(Vec::new());
        }
        let mut attempts = CLEANUP_RETRY.attempts();
        loop {
            let mut left = Vec::new();
            for internet in internet_networks(docker, network).await? {
                let Some(id) = internet.id else { continue };
                match docker.remove_network(&id).await {
                    Ok(()) => {}
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => {
                        let err = engine_error(e, format!("removing the internet network of {network}"));
                        if err.kind != ErrorKind::Conflict {
                            return Err(err);
                        }
                        let holders = self.disconnect_stale(&id, network).await?;
                        left.push(format!(
                            "Docker network {network}-internet ({}): still attached: {}",
                            short(&id),
                            if holders.is_empty() {
                                "endpoints being released".into()
                            } else {
                                holders.join(", ")
                            }
                        ));
                    }
                }
            }
            if left.is_empty() {
                return Ok(left);
            }
            tracing::debug!(network, attempt = attempts.made(), "the internet network is still in use");
            if !attempts.wait(None).await {
                return Ok(left);
            }
        }
    }

    /// Disconnects the endpoints of network `id` whose containers are gone or belong to `network`;
    /// returns the names of the other containers still attached.
    async fn disconnect_stale(&self, id: &str, network: &str) -> Result<Vec<String>, ProviderError> {
        let docker = self.engine.client();
        let inspected = match docker.inspect_network(id, None::<InspectNetworkOptions>).await {
            Ok(n) => n,
            Err(e) if is_not_found(&e) => return Ok(Vec::new()),
            Err(e) => return Err(engine_error(e, format!("network {id}"))),
        };
        let mut foreign = Vec::new();
        for (container, endpoint) in inspected.containers.unwrap_or_default() {
            let name = endpoint.name.unwrap_or_else(|| short(&container).to_string());
            let owner = match docker.inspect_container(&container, None::<InspectContainerOptions>).await {
                Ok(c) => c.config.and_then(|c| c.labels).and_then(|mut l| l.remove(labels::NETWORK)),
                Err(e) if is_not_found(&e) => Some(network.to_string()),
                Err(e) => return Err(engine_error(e, format!("container {name}"))),
            };
            if owner.as_deref() != Some(network) {
                foreign.push(name);
                continue;
            }
            let request = NetworkDisconnectRequest { container: container.clone(), force: Some(true) };
            if let Err(e) = docker.disconnect_network(id, request).await
                && !is_not_found(&e)
            {
                tracing::debug!(container = %name, "disconnecting a stale endpoint: {e}");
            }
        }
        foreign.sort();
        Ok(foreign)
    }

    async fn inspect(&self, name_or_id: &str) -> Result<Option<DockerNetwork>, ProviderError> {
        match self.engine.client().inspect_network(name_or_id, None::<InspectNetworkOptions>).await {
            Ok(n) => Ok(Some(n.into())),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(engine_error(e, format!("network {name_or_id}"))),
        }
    }
}

#[async_trait]
impl MachineProvider for LocalNodes {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Local
    }

    /// One network list call, filtered by the network and region labels.
    async fn inventory(&self, network: &str, region: &str) -> Result<Inventory, ProviderError> {
        let found =
            list_networks(self.engine.client(), &[(labels::NETWORK, network), (labels::REGION, region)])
                .await?;
        let mut machines: Vec<Machine> = found.iter().filter_map(machine_from).collect();
        machines.sort_by(|a, b| a.address.cmp(&b.address).then_with(|| a.id.cmp(&b.id)));
        Ok(Inventory { machines, ..Inventory::default() })
    }

    /// # Guarantees
    /// Repeatable: a node network of the same name that is ours for the same address is returned as
    /// it is. A network of that name that is not ours is a [`ErrorKind::Conflict`].
    async fn create_machine(
        &self,
        spec: &MachineSpec,
        _ctx: &CreateContext,
    ) -> Result<Machine, ProviderError> {
        let name = Self::node_network_name(&spec.network, &spec.address);
        if let Some(existing) = self.inspect(&name).await? {
            let ours = label(&existing, labels::NETWORK) == Some(spec.network.as_str())
                && label(&existing, labels::ADDRESS) == Some(spec.address.to_string().as_str());
            return match (ours, machine_from(&existing)) {
                (true, Some(machine)) => Ok(machine),
                _ => Err(ProviderError::new(
                    ErrorKind::Conflict,
                    PROVIDER,
                    format!(
                        "a Docker network named {name} exists that is not peerfleet's node {}; remove or rename it",
                        spec.address
                    ),
                )),
            };
        }
        let request = NetworkCreateRequest {
            name: name.clone(),
            driver: Some("bridge".into()),
            labels: Some(node_labels(spec)),
            ..Default::default()
        };
        let created = self
            .engine
            .client()
            .create_network(request)
            .await
            .map_err(|e| engine_error(e, format!("creating node network {name}")))?;
        let made = self.inspect(&created.id).await?;
        made.as_ref().and_then(machine_from).ok_or_else(|| {
            ProviderError::new(
                ErrorKind::Transient,
                PROVIDER,
                format!("node network {name} vanished right after it was made"),
            )
        })
    }

    /// Returns the node unchanged when `spec` changes nothing it stores; otherwise refuses with
    /// [`ErrorKind::Invalid`] naming the fields, because Docker cannot relabel a network.
    async fn update_machine(&self, current: &Machine, spec: &MachineSpec) -> Result<Machine, ProviderError> {
        let changed = unrepresentable_changes(current, spec);
        if changed.is_empty() {
            return Ok(current.clone());
        }
        Err(ProviderError::new(
            ErrorKind::Invalid,
            PROVIDER,
            format!(
                "local node {} cannot change {} in place (Docker cannot relabel a network); replace the node instead",
                current.address,
                changed.join(", ")
            ),
        ))
    }

    /// Removes the node's network, then the internet network when this was the network's last node.
    /// The planner deletes a node's containers before the node; if some are still attached, the engine
    /// refuses with [`ErrorKind::Conflict`].
    async fn delete_machine(&self, current: &Machine) -> Result<(), ProviderError> {
        let Some(existing) = self.inspect(&current.id).await? else {
            return Ok(());
        };
        let network = label(&existing, labels::NETWORK).map(str::to_string);
        match self.engine.client().remove_network(&current.id).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(engine_error(e, format!("removing local node {}", current.address))),
        }
        // What remains is reported by the destroy that removes the last node (see `cleanup`).
        if let Some(network) = network {
            let left = self.cleanup(&network).await?;
            if !left.is_empty() {
                tracing::debug!(network, "kept for now: {}", left.join("; "));
            }
        }
        Ok(())
    }
}

/// How [`LocalNodes::cleanup`] tries again to remove an internet network that is still in use: the
/// engine releases endpoints within a second or two of a container's removal.
const CLEANUP_RETRY: RetryPolicy = RetryPolicy {
    base: Duration::from_millis(100),
    cap: Duration::from_secs(2),
    max_attempts: 5,
    max_wait: Duration::ZERO,
};

/// The first twelve characters of a Docker ID, as `docker ps` shows it.
fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// The labels of a node network.
fn node_labels(spec: &MachineSpec) -> HashMap<String, String> {
    let mut l = HashMap::from([
        (labels::NETWORK.to_string(), spec.network.clone()),
        (labels::ADDRESS.to_string(), spec.address.to_string()),
        (labels::REGION.to_string(), spec.region.slug.clone()),
        (labels::SIZE.to_string(), spec.size.clone()),
        (labels::GENERATION.to_string(), spec.generation.to_string()),
        (labels::BOOTSTRAP.to_string(), spec.bootstrap.to_string()),
    ]);
    // The city's name as specs write it (`sao_paulo`), from its serde form.
    if let Some(serde_json::Value::String(city)) = spec.region.city.and_then(|c| serde_json::to_value(c).ok())
    {
        l.insert(labels::CITY.to_string(), city);
    }
    if let Some(chain_id) = &spec.chain_id {
        l.insert(labels::CHAIN_ID.to_string(), chain_id.to_string());
    }
    for tag in &spec.tags {
        l.insert(format!("{}{tag}", labels::TAG_PREFIX), "1".to_string());
    }
    l
}

/// The fields `spec` would change that a node network stores in its (immutable) labels.
fn unrepresentable_changes(current: &Machine, spec: &MachineSpec) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if current.tags != spec.tags {
        changed.push("tags");
    }
    if current.size != spec.size {
        changed.push("size");
    }
    if current.region != spec.region.slug {
        changed.push("region");
    }
    if current.generation != spec.generation {
        changed.push("generation");
    }
    if current.bootstrap != spec.bootstrap {
        changed.push("bootstrap");
    }
    if current.chain_id != spec.chain_id {
        changed.push("chain_id");
    }
    changed
}

/// A node from its network; `None` for networks that are not nodes (no readable address).
fn machine_from(n: &DockerNetwork) -> Option<Machine> {
    let address: Address = label(n, labels::ADDRESS)?.parse().ok()?;
    if !matches!(address, Address::Machine { .. }) {
        return None;
    }
    let number = |key| label(n, key).and_then(|v| v.parse().ok()).unwrap_or(0);
    let tags: BTreeSet<String> =
        n.labels.keys().filter_map(|k| k.strip_prefix(labels::TAG_PREFIX).map(str::to_string)).collect();
    Some(Machine {
        id: n.id.clone()?,
        address,
        provider: ProviderKind::Local,
        region: label(n, labels::REGION).unwrap_or_default().to_string(),
        size: label(n, labels::SIZE).unwrap_or_default().to_string(),
        image: LOCAL_IMAGE.to_string(),
        tags,
        chain_id: label(n, labels::CHAIN_ID).and_then(ChainId::parse),
        generation: number(labels::GENERATION),
        bootstrap: number(labels::BOOTSTRAP),
        status: MachineStatus::Running,
        public_ip: None,
        private_ip: None,
    })
}

#[cfg(test)]
mod tests {
    use peerfleet_core::network::{City, Region};

    use super::*;

    fn spec() -> MachineSpec {
        MachineSpec {
            address: Address::machine("frankfurt", 1),
            network: "testnet".into(),
            provider: ProviderKind::Local,
            region: Region { slug: "frankfurt".into(), city: Some(City::Frankfurt) },
            size: "small".into(),
            image: None,
            tags: BTreeSet::from(["peer_cluster".to_string(), "eu".to_string()]),
            profile: None,
            bootstrap: 1,
            chain_id: Some(ChainId::of(b"genesis")),
            generation: 2,
            idempotency_key: "k".into(),
            firewall: None,
        }
    }

    fn network_of(spec: &MachineSpec) -> DockerNetwork {
        DockerNetwork { id: Some("abc123".into()), labels: node_labels(spec) }
    }

    #[test]
    fn node_labels_read_back_as_the_same_machine() {
        let s = spec();
        let m = machine_from(&network_of(&s)).unwrap();
        assert_eq!(m.id, "abc123");
        assert_eq!(m.address, s.address);
        assert_eq!(m.region, "frankfurt");
        assert_eq!(m.tags, s.tags);
        assert_eq!(m.chain_id, s.chain_id);
        assert_eq!((m.generation, m.bootstrap), (2, 1));
        assert_eq!(m.image, LOCAL_IMAGE);
        assert_eq!(m.status, MachineStatus::Running);
        assert!(unrepresentable_changes(&m, &s).is_empty());
        assert_eq!(node_labels(&s)[labels::CITY], "frankfurt");
    }

    #[test]
    fn node_network_is_named_after_network_cluster_and_slot() {
        assert_eq!(
            LocalNodes::node_network_name("testnet", &Address::machine("sydney", 3)),
            "testnet-sydney-3"
        );
    }

    #[test]
    fn tag_and_size_changes_are_reported_as_not_representable() {
        let s = spec();
        let m = machine_from(&network_of(&s)).unwrap();
        let mut wanted = s.clone();
        wanted.tags.insert("new".into());
        wanted.size = "large".into();
        assert_eq!(unrepresentable_changes(&m, &wanted), vec!["tags", "size"]);
    }

    #[test]
    fn networks_without_a_machine_address_are_not_nodes() {
        let mut n = network_of(&spec());
        n.labels.insert(labels::ADDRESS.into(), "container.relay[0]".into());
        assert!(machine_from(&n).is_none());
        n.labels.remove(labels::ADDRESS);
        assert!(machine_from(&n).is_none());
    }
}
