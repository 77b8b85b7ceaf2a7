//! Desired resources: the network expanded into machines, firewalls, stable IPs and placed containers.
//!
//! This is where the role contract of the node image is written down: which environment each role
//! gets, which stable names it needs, which ports the firewall opens. Pure: the same network and the
//! same actual state always give the same set.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;

use crate::actual::ActualState;
use crate::address::Address;
use crate::network::{ChainId, Cluster, HealthCheck, Image, Network, Role, ports};
use crate::placement::{self, Node, Placement, PlacementError};
use crate::resource::{
    BOOTSTRAP_VERSION, ContainerSpec, Desired, FirewallRule, FirewallSpec, MachineSpec, Protocol,
    StableIpSpec,
};

/// Inputs besides the network that shape desired resources.
#[derive(Debug, Clone)]
pub struct DesiredOptions {
    /// The reference node image's content tag (`peerfleet-node:<hash>`).
    pub reference_image: String,
    /// The chain the genesis server must serve: the pinned one (its bytes from state) or the spec's.
    pub chain_id: ChainId,
    /// The genesis bytes the genesis server serves.
    pub genesis: Vec<u8>,
    /// The network's seal key, from state; `None` before the first apply (see [`crate::seal`]).
    pub seal_key: Option<crate::seal::SealKey>,
}

/// The desired resources of a network, by address, with the placement that produced the containers.
#[derive(Debug, Clone, Default)]
pub struct DesiredSet {
    /// Every resource.
    pub resources: BTreeMap<Address, Desired>,
    /// Container → node.
    pub placement: Placement,
}

/// The image tag used when the caller has no reference image at hand (plans without Docker).
pub const REFERENCE_IMAGE_UNBUILT: &str = "peerfleet-node:unbuilt";

/// The reference node's health probe (runs inside the container; see `peerfleet-node probe`).
pub fn reference_health() -> HealthCheck {
    HealthCheck {
        command: vec!["/peerfleet-node".into(), "probe".into()],
        interval_ms: 500,
        timeout_ms: 2000,
        retries: 3,
    }
}

/// The region key placement spreads over: the city when it is one of the nine.
fn region_key(cluster: &Cluster) -> String {
    match cluster.region.city {
        Some(city) => format!("{city:?}"),
        None => format!("{}:{}", cluster.provider, cluster.region.slug),
    }
}

/// The nodes of the network, as placement sees them.
pub fn nodes(network: &Network) -> Vec<Node> {
    network
        .clusters
        .iter()
        .flat_map(|c| {
            (0..c.nodes).map(move |slot| Node {
                address: Address::machine(c.name.clone(), slot),
                region: region_key(c),
                tags: c.tags.clone(),
            })
        })
        .collect()
}

/// The stable name of a container: `SERVICE-N`, N from 1 (Tutum's naming).
pub fn stable_name(service: &str, slot: u32) -> String {
    format!("{service}-{}", slot + 1)
}

/// The role environment of the node contract (docs/architecture.md, "Node roles").
fn role_env(
    role: Role,
    opts: &DesiredOptions,
    genesis_name: &str,
    master_name: &str,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("NODE_ROLE".to_string(), role.as_str().to_string());
    env.insert("CHAIN_ID".to_string(), opts.chain_id.to_string());
    let genesis_url = format!("http://{genesis_name}:{}/genesis.json", ports::FETCH);
    match role {
        Role::Genesis => {
            env.insert("GENESIS_B64".into(), base64::engine::general_purpose::STANDARD.encode(&opts.genesis));
            env.insert("FETCH_PORT".into(), ports::FETCH.to_string());
        }
        Role::Master => {
            env.insert("GENESIS_URL".into(), genesis_url);
            env.insert("PEER_PORT".into(), ports::PEER.to_string());
            env.insert("STATUS_PORT".into(), ports::STATUS.to_string());
        }
        Role::Relay => {
            env.insert("GENESIS_URL".into(), genesis_url);
            env.insert("SEEDS".into(), format!("{master_name}:{}", ports::PEER));
            env.insert("STATUS_PORT".into(), ports::STATUS.to_string());
        }
    }
    env
}

/// Ports a role publishes when its service names none: what the other roles must reach.
fn default_ports(role: Role) -> Vec<u16> {
    match role {
        Role::Genesis => vec![ports::FETCH],
        Role::Master => vec![ports::PEER],
        Role::Relay => vec![],
    }
}

/// The inbound rules of a network's firewalls: the public peer and fetch ports, published service
/// ports, and the administrative ports from `admin_cidrs` only.
pub fn firewall_rules(network: &Network) -> Vec<FirewallRule> {
    let world = || vec!["0.0.0.0/0".to_string()];
    let mut by_port: BTreeMap<u16, BTreeSet<String>> = BTreeMap::new();
    let mut public: BTreeSet<u16> = [ports::FETCH, ports::PEER].into();
    for s in &network.services {
        public.extend(if s.ports.is_empty() { default_ports(s.role) } else { s.ports.clone() });
    }
    for p in public {
        by_port.entry(p).or_default().extend(world());
    }
    let mut admin = vec![ports::DOCKER_TLS];
    if network.access.ssh {
        admin.push(22);
    }
    for p in admin {
        by_port.entry(p).or_default().extend(network.access.admin_cidrs.iter().cloned());
    }
    by_port
        .into_iter()
        .filter(|(_, sources)| !sources.is_empty())
        .map(|(port, sources)| FirewallRule {
            protocol: Protocol::Tcp,
            port,
            sources: sources.into_iter().collect(),
        })
        .collect()
}

/// Expands the network into desired resources.
///
/// Machine specs come out with generation 0 and no idempotency key: the planner sets both, because
/// they depend on whether the machine is created fresh or replaced.
pub fn desired(
    network: &Network,
    actual: &ActualState,
    opts: &DesiredOptions,
) -> Result<DesiredSet, PlacementError> {
    let mut set = DesiredSet::default();

    // Placement first: which machine hosts genesis decides which machine carries the chain tag.
    let existing: Placement = actual
        .objects
        .values()
        .filter_map(|o| match o {
            crate::resource::Actual::Container(c) => {
                c.spec.as_ref().map(|s| (c.address.clone(), s.node.clone()))
            }
            _ => None,
        })
        .collect();
    set.placement = placement::place(network, &nodes(network), &existing)?;

    let role_of = |service: &str| network.service(service).map(|s| s.role);
    let hosts_of = |role: Role| -> BTreeSet<Address> {
        set.placement
            .iter()
            .filter(|(c, _)| container_role(c, &role_of) == Some(role))
            .map(|(_, n)| n.clone())
            .collect()
    };
    let genesis_hosts = hosts_of(Role::Genesis);
    let anchor_hosts: BTreeSet<Address> =
        genesis_hosts.iter().cloned().chain(hosts_of(Role::Master)).collect();

    for cluster in &network.clusters {
        let caps = cluster.provider.capabilities();
        let firewall = (caps.firewalls && cluster.nodes > 0).then(|| {
            let address = Address::firewall(cluster.provider, cluster.region.slug.clone());
            set.resources.entry(address.clone()).or_insert_with(|| {
                Desired::Firewall(FirewallSpec {
                    address: address.clone(),
                    network: network.name.clone(),
                    provider: cluster.provider,
                    region: cluster.region.slug.clone(),
                    rules: firewall_rules(network),
                })
            });
            address
        });
        for slot in 0..cluster.nodes {
            let address = Address::machine(cluster.name.clone(), slot);
            let spec = MachineSpec {
                address: address.clone(),
                network: network.name.clone(),
                provider: cluster.provider,
                region: cluster.region.clone(),
                size: cluster.size.clone(),
                image: cluster.image.clone(),
                tags: cluster.tags.clone(),
                profile: cluster.profile.clone(),
                bootstrap: BOOTSTRAP_VERSION,
                chain_id: genesis_hosts.contains(&address).then(|| opts.chain_id.clone()),
                generation: 0,
                idempotency_key: String::new(),
                firewall: firewall.clone(),
            };
            set.resources.insert(address.clone(), Desired::Machine(spec));
            if caps.stable_ips && anchor_hosts.contains(&address) {
                let ip = Address::stable_ip(cluster.name.clone(), slot);
                set.resources.insert(
                    ip.clone(),
                    Desired::StableIp(StableIpSpec {
                        address: ip,
                        network: network.name.clone(),
                        machine: address.clone(),
                        provider: cluster.provider,
                        region: cluster.region.slug.clone(),
                    }),
                );
            }
        }
    }

    // Stable names of the genesis and master services, for the environment of the others.
    let name_of = |role: Role| {
        network.service_of_role(role).map(|s| s.name.clone()).unwrap_or_else(|| role.to_string())
    };
    let (genesis_name, master_name) = (name_of(Role::Genesis), name_of(Role::Master));
    for service in &network.services {
        let image = match &service.image {
            Image::Reference => opts.reference_image.clone(),
            Image::Named(name) => name.clone(),
        };
        let health = match (&service.health, &service.image) {
            (Some(h), _) => h.clone(),
            (None, Image::Reference) => reference_health(),
            // A named image with no health check declared: the engine's own (none) applies.
            (None, Image::Named(_)) => {
                HealthCheck { command: vec![], interval_ms: 0, timeout_ms: 0, retries: 0 }
            }
        };
        let needs = match service.role {
            Role::Genesis => vec![],
            Role::Master => vec![genesis_name.clone()],
            Role::Relay => vec![genesis_name.clone(), master_name.clone()],
        };
        let mut env = role_env(service.role, opts, &genesis_name, &master_name);
        env.extend(service.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.extend(service.secrets.iter().map(|(k, v)| (k.clone(), v.expose().to_string())));
        let seals = seals(&env, &service.secrets, opts.seal_key.as_ref());
        for slot in 0..service.containers {
            let address = Address::container(service.name.clone(), slot);
            let Some(node) = set.placement.get(&address) else { continue };
            let name = stable_name(&service.name, slot);
            let spec = ContainerSpec {
                address: address.clone(),
                network: network.name.clone(),
                service: service.name.clone(),
                role: service.role,
                aliases: vec![name.clone(), service.name.clone()],
                name,
                node: node.clone(),
                image: image.clone(),
                env: env.clone(),
                ports: if service.ports.is_empty() {
                    default_ports(service.role)
                } else {
                    service.ports.clone()
                },
                restart: service.restart,
                health: health.clone(),
                needs: needs.clone(),
                chain_id: (service.role == Role::Genesis).then(|| opts.chain_id.clone()),
                seals: seals.clone(),
            };
            set.resources.insert(address, Desired::Container(spec));
        }
    }
    Ok(set)
}

/// The seals of a container's sensitive values: those declared secret, and (the second line) those
/// whose name looks secret.
fn seals(
    env: &BTreeMap<String, String>,
    declared: &BTreeMap<String, crate::provider::Secret>,
    key: Option<&crate::seal::SealKey>,
) -> BTreeMap<String, String> {
    env.iter()
        .filter(|(k, _)| declared.contains_key(*k) || crate::seal::is_secret_name(k))
        .map(|(k, v)| (k.clone(), crate::seal::seal(key, v)))
        .collect()
}

fn container_role(address: &Address, role_of: &impl Fn(&str) -> Option<Role>) -> Option<Role> {
    match address {
        Address::Container { service, .. } => role_of(service),
        _ => None,
    }
}
