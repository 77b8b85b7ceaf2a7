//! The Rust builder: the same spec as `network.toml`, written in code.
//!
//! The builders only collect values; [`NetworkBuilder::build`] turns them into the raw spec the TOML
//! parser produces and runs the one shared validation. So a builder network is valid exactly when
//! the equivalent file is, and equal to the network that file yields.

use std::collections::BTreeMap;

use crate::network::{Chain, HealthCheck, Image, Network, ProviderKind, RestartPolicy, Role, Strategy};
use crate::update::{MaxUnavailable, UpdatePolicy};

use super::error::{Origin, SpecError, SpecErrorKind, SpecErrors};
use super::raw::{
    Located, RawAccess, RawCluster, RawCount, RawEnvSource, RawEnvValue, RawHealth, RawService, RawSpec,
    RawUpdate,
};
use super::validate::validate;

fn unplaced<T>(value: T) -> Option<Located<T>> {
    Some(Located::unplaced(value))
}

fn unplaced_list<T>(values: impl IntoIterator<Item = T>) -> Option<Located<Vec<Located<T>>>> {
    unplaced(values.into_iter().map(Located::unplaced).collect())
}

/// Builds a [`Network`] in code. Defaults are those of `network.toml`.
#[derive(Debug, Clone)]
pub struct NetworkBuilder {
    name: String,
    genesis: Option<Chain>,
    admin_cidrs: Vec<String>,
    ssh: bool,
    force_open_admin: bool,
    clusters: Vec<ClusterBuilder>,
    services: Vec<ServiceBuilder>,
}

impl NetworkBuilder {
    /// A network called `name` (`^[a-z][a-z0-9-]{0,31}$`).
    pub fn new(name: impl Into<String>) -> Self {
        NetworkBuilder {
            name: name.into(),
            genesis: None,
            admin_cidrs: Vec::new(),
            ssh: false,
            force_open_admin: false,
            clusters: Vec::new(),
            services: Vec::new(),
        }
    }

    /// The genesis block's bytes (required); the chain ID is their sha256.
    pub fn genesis(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.genesis = Some(Chain::from_genesis(bytes.into(), None));
        self
    }

    /// Adds a CIDR allowed to reach administrative ports (`access.admin_cidrs`).
    pub fn admin_cidr(mut self, cidr: impl Into<String>) -> Self {
        self.admin_cidrs.push(cidr.into());
        self
    }

    /// Opens SSH (22) to the admin CIDRs (`access.ssh`).
    pub fn ssh(mut self, open: bool) -> Self {
        self.ssh = open;
        self
    }

    /// Allows `0.0.0.0/0` or `::/0` among the admin CIDRs (`access.force_open_admin`).
    pub fn force_open_admin(mut self, force: bool) -> Self {
        self.force_open_admin = force;
        self
    }

    /// Adds a cluster (`[[clusters]]`), after those added before.
    pub fn cluster(mut self, cluster: ClusterBuilder) -> Self {
        self.clusters.push(cluster);
        self
    }

    /// Adds a service (`[[services]]`), after those added before.
    pub fn service(mut self, service: ServiceBuilder) -> Self {
        self.services.push(service);
        self
    }

    /// Validates and builds the network.
    ///
    /// # Errors
    /// Every rule `network.toml` is held to; errors carry field paths (`services[1].containers`)
    /// and no file or line.
    pub fn build(self) -> Result<Network, SpecErrors> {
        let access = RawAccess {
            admin_cidrs: (!self.admin_cidrs.is_empty()).then(|| unplaced_list(self.admin_cidrs)).flatten(),
            ssh: Some(self.ssh),
            force_open_admin: Some(self.force_open_admin),
        };
        let raw = RawSpec {
            name: unplaced(self.name),
            // The builder has the bytes, not a file: the chain is passed to validation directly.
            chain: None,
            access: unplaced(access),
            clusters: self.clusters.into_iter().map(|c| Located::unplaced(c.raw)).collect(),
            services: self.services.into_iter().map(|s| Located::unplaced(s.into_raw())).collect(),
            // An embedding program picks its store itself (`Deployment::with_store`).
            state: None,
        };
        let chain = self.genesis.ok_or_else(|| SpecError::new("chain.genesis", SpecErrorKind::Missing));
        validate(&raw, chain, Origin::default())
    }
}

/// Builds one cluster: `nodes` machines of one provider in one region.
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    raw: RawCluster,
}

impl ClusterBuilder {
    /// A cluster of one node tagged `peer_cluster`; `region` is a city name or a provider slug.
    pub fn new(name: impl Into<String>, provider: ProviderKind, region: impl Into<String>) -> Self {
        ClusterBuilder {
            raw: RawCluster {
                name: unplaced(name.into()),
                provider: unplaced(provider.as_str().to_string()),
                region: unplaced(region.into()),
                ..RawCluster::default()
            },
        }
    }

    /// The machine size (default: the provider's smallest, see [`super::catalog::default_size`]).
    pub fn size(mut self, size: impl Into<String>) -> Self {
        self.raw.size = unplaced(size.into());
        self
    }

    /// The machine image (default: the provider's default image).
    pub fn image(mut self, image: impl Into<String>) -> Self {
        self.raw.image = unplaced(image.into());
        self
    }

    /// How many machines (0..=1000; default 1).
    pub fn nodes(mut self, nodes: u32) -> Self {
        self.raw.nodes = unplaced(i64::from(nodes));
        self
    }

    /// The deploy tags the machines carry, replacing the default `["peer_cluster"]`.
    pub fn tags<S: Into<String>>(mut self, tags: impl IntoIterator<Item = S>) -> Self {
        self.raw.tags = unplaced_list(tags.into_iter().map(Into::into));
        self
    }

    /// The AWS credentials profile (aws clusters only).
    pub fn profile(mut self, profile: impl Into<String>) -> Self {
        self.raw.profile = unplaced(profile.into());
        self
    }

    /// How replaces of its machines roll out (default: one at a time, stop-first, pause on failure).
    pub fn update(mut self, update: UpdatePolicy) -> Self {
        self.raw.update = unplaced(raw_update(update));
        self
    }
}

/// Builds one service: a node role run as containers.
#[derive(Debug, Clone)]
pub struct ServiceBuilder {
    raw: RawService,
    env: BTreeMap<Located<String>, Located<RawEnvValue>>,
}

impl ServiceBuilder {
    /// A service of one container of the reference node, placed `emptiest_node` on any node.
    pub fn new(name: impl Into<String>, role: Role) -> Self {
        ServiceBuilder {
            raw: RawService {
                name: unplaced(name.into()),
                role: unplaced(role.as_str().to_string()),
                ..RawService::default()
            },
            env: BTreeMap::new(),
        }
    }

    /// The container image (default [`Image::Reference`]).
    pub fn image(mut self, image: Image) -> Self {
        self.raw.image = match image {
            Image::Reference => None,
            Image::Named(name) => unplaced(name),
        };
        self
    }

    /// How many containers (0..=100000; genesis and master exactly 1; not for `every_node`).
    pub fn containers(mut self, containers: u32) -> Self {
        self.raw.containers = unplaced(i64::from(containers));
        self
    }

    /// The placement strategy (default `emptiest_node`).
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.raw.strategy = unplaced(strategy.as_str().to_string());
        self
    }

    /// Nodes must carry all of these tags (default: none, so every node).
    pub fn deploy_tags<S: Into<String>>(mut self, tags: impl IntoIterator<Item = S>) -> Self {
        self.raw.deploy_tags = unplaced_list(tags.into_iter().map(Into::into));
        self
    }

    /// Sets one extra environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(Located::unplaced(key.into()), Located::unplaced(RawEnvValue::Text(value.into())));
        self
    }

    /// Sets one environment variable declared secret: sealed wherever it is recorded, never shown
    /// (`KEY = { value = "...", secret = true }`; a file reads it `from_env` or `from_file` instead).
    pub fn secret(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let source =
            RawEnvSource { value: unplaced(value.into()), secret: unplaced(true), ..RawEnvSource::default() };
        self.env.insert(Located::unplaced(key.into()), Located::unplaced(RawEnvValue::Source(source)));
        self
    }

    /// Publishes a port (same number on host and container).
    pub fn port(mut self, port: u16) -> Self {
        let ports = self.raw.ports.get_or_insert_with(|| Located::unplaced(Vec::new()));
        ports.value.push(Located::unplaced(i64::from(port)));
        self
    }

    /// The restart policy (default `always`).
    pub fn restart(mut self, restart: RestartPolicy) -> Self {
        self.raw.restart = unplaced(restart.as_str().to_string());
        self
    }

    /// The health check (default: the reference node's probe for the role).
    pub fn health(mut self, health: HealthCheck) -> Self {
        // Out-of-range values are the validator's to report, so convert without clamping.
        let millis = |ms: u64| i64::try_from(ms).unwrap_or(i64::MAX);
        self.raw.health = unplaced(RawHealth {
            command: unplaced_list(health.command),
            interval_ms: unplaced(millis(health.interval_ms)),
            timeout_ms: unplaced(millis(health.timeout_ms)),
            retries: unplaced(i64::from(health.retries)),
        });
        self
    }

    /// How replaces of its containers roll out (default: one at a time, stop-first, pause on failure).
    pub fn update(mut self, update: UpdatePolicy) -> Self {
        self.raw.update = unplaced(raw_update(update));
        self
    }

    fn into_raw(mut self) -> RawService {
        if !self.env.is_empty() {
            self.raw.env = unplaced(self.env);
        }
        self.raw
    }
}

/// The raw form of a policy, so the builder goes through the same validation as TOML.
fn raw_update(u: UpdatePolicy) -> RawUpdate {
    let max_unavailable = match u.max_unavailable {
        MaxUnavailable::Count(n) => RawCount::Number(i64::from(n)),
        MaxUnavailable::Percent(p) => RawCount::Text(format!("{p}%")),
    };
    RawUpdate {
        max_unavailable: unplaced(max_unavailable),
        order: unplaced(u.order.as_str().to_string()),
        failure_action: unplaced(u.failure_action.as_str().to_string()),
        gate_timeout_ms: u.gate_timeout_ms.and_then(|ms| unplaced(i64::try_from(ms).unwrap_or(i64::MAX))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::PEER_CLUSTER_TAG;
    use std::path::Path;

    const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");

    /// examples/nine_regions.toml, written with the builder.
    fn nine_regions() -> NetworkBuilder {
        let genesis = std::fs::read(Path::new(EXAMPLES).join("genesis.json")).unwrap();
        let cloud = [
            ("northern-china", ProviderKind::Aws, "Northern China"),
            ("virginia", ProviderKind::Aws, "Virginia"),
            ("oregon", ProviderKind::Aws, "Oregon"),
            ("sao-paulo", ProviderKind::Aws, "São Paulo"),
            ("singapore", ProviderKind::DigitalOcean, "Singapore"),
            ("sydney", ProviderKind::DigitalOcean, "Sydney"),
            ("frankfurt", ProviderKind::DigitalOcean, "Frankfurt"),
            ("amsterdam", ProviderKind::DigitalOcean, "Amsterdam"),
            ("london", ProviderKind::DigitalOcean, "London"),
        ];
        let mut b =
            NetworkBuilder::new("nine-regions").genesis(genesis).admin_cidr("203.0.113.0/24").ssh(false);
        for (name, provider, region) in cloud {
            let mut c = ClusterBuilder::new(name, provider, region).tags([PEER_CLUSTER_TAG]);
            if name == "northern-china" {
                c = c.profile("china");
            }
            b = b.cluster(c);
        }
        b.service(ServiceBuilder::new("genesis", Role::Genesis).deploy_tags([PEER_CLUSTER_TAG]))
            .service(ServiceBuilder::new("master", Role::Master).deploy_tags([PEER_CLUSTER_TAG]))
            .service(
                ServiceBuilder::new("relay", Role::Relay)
                    .containers(9)
                    .strategy(Strategy::EmptiestNode)
                    .deploy_tags([PEER_CLUSTER_TAG]),
            )
    }

    #[test]
    fn builder_and_toml_produce_equal_networks() {
        let built = nine_regions().build().unwrap();
        let mut loaded = super::super::load(&Path::new(EXAMPLES).join("nine_regions.toml")).unwrap();
        // The builder got bytes, not a file; everything else must match exactly.
        assert!(loaded.chain.source.take().is_some());
        assert_eq!(built, loaded);
    }

    #[test]
    fn builder_options_reach_the_network() {
        let health =
            HealthCheck { command: vec!["/probe".into()], interval_ms: 500, timeout_ms: 900, retries: 2 };
        let n = NetworkBuilder::new("opts")
            .genesis(b"g".to_vec())
            .cluster(
                ClusterBuilder::new("home", ProviderKind::Local, "oregon").size("big").image("img").nodes(3),
            )
            .service(ServiceBuilder::new("genesis", Role::Genesis))
            .service(ServiceBuilder::new("master", Role::Master).image(Image::Named("acme/node:1".into())))
            .service(
                ServiceBuilder::new("relay", Role::Relay)
                    .containers(4)
                    .strategy(Strategy::RegionSpread)
                    .env("LOG_LEVEL", "debug")
                    .port(26656)
                    .port(26657)
                    .restart(RestartPolicy::OnFailure)
                    .health(health.clone()),
            )
            .build()
            .unwrap();
        let c = &n.clusters[0];
        assert_eq!(
            (c.size.as_str(), c.image.as_deref(), c.nodes, c.region.slug.as_str()),
            ("big", Some("img"), 3, "oregon")
        );
        assert_eq!(n.services[1].image, Image::Named("acme/node:1".into()));
        let relay = &n.services[2];
        assert_eq!(
            (relay.containers, relay.strategy, relay.restart),
            (4, Strategy::RegionSpread, RestartPolicy::OnFailure)
        );
        assert_eq!(relay.env["LOG_LEVEL"], "debug");
        assert_eq!(relay.ports, [26656, 26657]);
        assert_eq!(relay.health, Some(health));
    }

    #[test]
    fn builder_errors_name_field_paths_without_lines() {
        let e = NetworkBuilder::new("nine-regions")
            .cluster(ClusterBuilder::new("a", ProviderKind::Aws, "Amsterdam"))
            .service(ServiceBuilder::new("genesis", Role::Genesis))
            .service(ServiceBuilder::new("master", Role::Master))
            .service(ServiceBuilder::new("relay", Role::Relay).strategy(Strategy::EveryNode).containers(3))
            .build()
            .unwrap_err();
        let messages: Vec<String> = e.errors().iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            [
                "chain.genesis: required key is missing",
                "clusters[0].region: region \"Amsterdam\" is not served by aws; it is served by: digitalocean (ams3), \
                 local (amsterdam)",
                "access.admin_cidrs: required (non-empty) because a cluster is on aws: it says who may reach the \
                 machines' Docker API port",
                "services[2].containers: scaling an every_node service: it runs one container on every matching node, \
                 so its count follows the nodes; remove `containers` or choose another strategy",
            ]
        );
        assert!(e.errors().iter().all(|e| e.file().is_none() && e.line().is_none()));
    }

    #[test]
    fn builder_is_held_to_the_same_rules_as_a_file() {
        let e = nine_regions().admin_cidr("0.0.0.0/0").build().unwrap_err();
        assert_eq!(e.first().path(), "access.admin_cidrs[1]");
        assert!(nine_regions().admin_cidr("0.0.0.0/0").force_open_admin(true).build().is_ok());
        let e = nine_regions().service(ServiceBuilder::new("relay", Role::Relay)).build().unwrap_err();
        assert!(
            e.first().to_string().starts_with("services[3].name: duplicate service name \"relay\""),
            "{e}"
        );
        let e = nine_regions()
            .service(ServiceBuilder::new("x", Role::Relay).env("SEEDS", "m:1"))
            .build()
            .unwrap_err();
        assert_eq!(e.first().path(), "services[3].env.SEEDS");
    }
}
