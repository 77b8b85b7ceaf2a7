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
///
/// Containers are kept as their service's [`ContainerTemplate`] and their placement rather than as
/// 10,000 specs: a no-op plan compares each running container with its template and builds a spec only
/// for the containers that change (see [`DesiredContainer`]).
#[derive(Debug, Clone, Default)]
pub struct DesiredSet {
    /// Every resource but containers: machines, firewalls, stable IPs.
    pub resources: BTreeMap<Address, Desired>,
    /// What the containers of each service share, by service name.
    pub services: BTreeMap<String, ContainerTemplate>,
    /// Container → node.
    pub placement: Placement,
}

impl DesiredSet {
    /// Every desired container, in address order.
    pub fn containers(&self) -> impl Iterator<Item = DesiredContainer<'_>> {
        self.placement.iter().filter_map(|(address, node)| self.container_at(address, node))
    }

    fn container_at<'a>(&'a self, address: &'a Address, node: &'a Address) -> Option<DesiredContainer<'a>> {
        let Address::Container { service, slot } = address else { return None };
        let template = self.services.get(service)?;
        // `every_node` places one per matching node; only the slots the service asks for are wanted.
        (*slot < template.containers).then_some(DesiredContainer { address, slot: *slot, node, template })
    }
}

/// What every container of one service shares: all of its [`ContainerSpec`] but the address, the
/// stable name, the aliases and the node.
#[derive(Debug, Clone)]
pub struct ContainerTemplate {
    /// A spec whose per-container fields (address, name, aliases, node) are those of slot 0 on no
    /// node; [`ContainerTemplate::spec`] fills them in.
    shared: ContainerSpec,
    /// How many containers the service wants.
    containers: u32,
}

impl ContainerTemplate {
    /// The fields every container of the service shares (ignore address, name, aliases and node).
    pub fn shared(&self) -> &ContainerSpec {
        &self.shared
    }

    /// The spec of the container in `slot`, placed on `node`.
    pub fn spec(&self, slot: u32, node: &Address) -> ContainerSpec {
        let service = &self.shared.service;
        let name = stable_name(service, slot);
        ContainerSpec {
            address: Address::container(service.clone(), slot),
            aliases: vec![name.clone(), service.clone()],
            name,
            node: node.clone(),
            ..self.shared.clone()
        }
    }
}

/// One desired container: a slot of a service's template, placed on a node.
#[derive(Debug, Clone, Copy)]
pub struct DesiredContainer<'a> {
    /// Its address.
    pub address: &'a Address,
    /// Its slot.
    pub slot: u32,
    /// The node it is placed on.
    pub node: &'a Address,
    /// Its service's template.
    pub template: &'a ContainerTemplate,
}

impl DesiredContainer<'_> {
    /// Its full spec (built on each call).
    pub fn spec(&self) -> ContainerSpec {
        self.template.spec(self.slot, self.node)
    }
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
    let existing = actual.objects.values().filter_map(|o| match o {
        crate::resource::Actual::Container(c) => c.spec.as_ref().map(|s| (&c.address, &s.node)),
        _ => None,
    });
    set.placement = placement::place(network, &nodes(network), existing)?;

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
        let shared = ContainerSpec {
            address: Address::container(service.name.clone(), 0),
            network: network.name.clone(),
            service: service.name.clone(),
            role: service.role,
            name: String::new(),
            aliases: vec![],
            node: Address::machine(String::new(), 0),
            image,
            env,
            ports: if service.ports.is_empty() { default_ports(service.role) } else { service.ports.clone() },
            restart: service.restart,
            health,
            needs,
            chain_id: (service.role == Role::Genesis).then(|| opts.chain_id.clone()),
            seals,
        };
        set.services
            .insert(service.name.clone(), ContainerTemplate { shared, containers: service.containers });
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
