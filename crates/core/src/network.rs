//! The validated network: what the spec (TOML or builder) resolves to.
//!
//! Everything here has already passed validation ([`crate::spec`]): names are unique, exactly one
//! genesis and one master exist, regions are served by their providers, counts are in range. The rest
//! of the core trusts these invariants and never re-checks them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::update::UpdatePolicy;

/// The tag every machine of a peer network carries (Tutum's deploy tag of the original workflow).
pub const PEER_CLUSTER_TAG: &str = "peer_cluster";

/// A whole peer-server network: one genesis server, one master, relays, and the machines they run on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// The network's name; part of every ownership tag, so two networks never touch each other.
    pub name: String,
    /// The chain this network serves; its ID is the hash of the genesis block.
    pub chain: Chain,
    /// Groups of machines, each on one provider in one region, in spec order.
    pub clusters: Vec<Cluster>,
    /// The services (node roles) run as containers on the clusters' machines, in spec order.
    pub services: Vec<Service>,
    /// Who may reach the machines' administrative ports.
    pub access: Access,
    /// Where the state lives (`[state]`; a local file beside the spec when absent).
    #[serde(default)]
    pub state: StateSpec,
}

impl Network {
    /// The service with `name`, if declared.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    /// The cluster with `name`, if declared.
    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.name == name)
    }

    /// The service of `role`, if declared (validation guarantees one genesis and one master).
    pub fn service_of_role(&self, role: Role) -> Option<&Service> {
        self.services.iter().find(|s| s.role == role)
    }
}

/// The chain: its genesis block and the ID derived from it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    /// Where the genesis block was read from (for messages only).
    pub source: Option<PathBuf>,
    /// The genesis block's bytes, exactly as served by the genesis server.
    pub genesis: Vec<u8>,
    /// sha256 of [`Chain::genesis`].
    pub id: ChainId,
}

impl Chain {
    /// A chain from its genesis bytes; the ID is computed, never given.
    pub fn from_genesis(genesis: Vec<u8>, source: Option<PathBuf>) -> Self {
        let id = ChainId::of(&genesis);
        Chain { source, genesis, id }
    }
}

impl fmt::Debug for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The genesis may be large; its ID says everything a reader of debug output needs.
        f.debug_struct("Chain")
            .field("source", &self.source)
            .field("genesis_len", &self.genesis.len())
            .field("id", &self.id)
            .finish()
    }
}

/// A chain ID: the lowercase hex sha256 of the genesis block.
///
/// Always 64 lowercase hex digits: reading one from a state or plan file checks that, so a
/// hand-edited file cannot smuggle in text that breaks what is built from it (labels, tags, output).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ChainId(String);

impl TryFrom<String> for ChainId {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            Ok(ChainId(s))
        } else {
            Err(format!("expected a chain ID (64 lowercase hex digits), found {}", crate::text::quoted(&s)))
        }
    }
}

impl From<ChainId> for String {
    fn from(id: ChainId) -> Self {
        id.0
    }
}

impl ChainId {
    /// The chain ID of a genesis block.
    pub fn of(genesis: &[u8]) -> Self {
        ChainId(hex::encode(Sha256::digest(genesis)))
    }

    /// Parses a chain ID given by a person (e.g. `--replace-genesis`): 64 hex digits.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim().to_ascii_lowercase();
        (s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())).then_some(ChainId(s))
    }

    /// The hex string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 hex digits, for compact human output.
    pub fn short(&self) -> &str {
        // Every constructor makes 64 ASCII hex digits, so byte 12 is a character boundary; `get`
        // keeps even a broken invariant from panicking.
        self.0.get(..12).unwrap_or(&self.0)
    }
}

impl fmt::Display for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where machines come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Amazon EC2.
    Aws,
    /// DigitalOcean droplets.
    #[serde(rename = "digitalocean")]
    DigitalOcean,
    /// Virtual nodes on the local Docker engine.
    Local,
}

impl ProviderKind {
    /// Every provider, in a fixed order.
    pub const ALL: [ProviderKind; 3] = [ProviderKind::Aws, ProviderKind::DigitalOcean, ProviderKind::Local];

    /// The name used in specs, addresses and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Aws => "aws",
            ProviderKind::DigitalOcean => "digitalocean",
            ProviderKind::Local => "local",
        }
    }

    /// What the provider's API can do, which decides replace-versus-update and which resources exist.
    pub fn capabilities(self) -> Capabilities {
        match self {
            // EC2 can only change an instance type while stopped, so a size change replaces.
            ProviderKind::Aws => Capabilities {
                resize: false,
                retag: true,
                firewalls: true,
                stable_ips: true,
                remote_engine: true,
            },
            ProviderKind::DigitalOcean => Capabilities {
                resize: true,
                retag: true,
                firewalls: true,
                stable_ips: true,
                remote_engine: true,
            },
            // A local node is a Docker network, whose labels (size, tags) are fixed at creation.
            ProviderKind::Local => Capabilities {
                resize: false,
                retag: false,
                firewalls: false,
                stable_ips: false,
                remote_engine: false,
            },
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a provider can do in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// The machine size can change without replacing the machine.
    pub resize: bool,
    /// Deploy tags can change without replacing the machine.
    pub retag: bool,
    /// The provider has firewalls (security groups) peerfleet manages.
    pub firewalls: bool,
    /// The provider has stable addresses (Elastic IPs, Reserved IPs) for genesis and master hosts.
    pub stable_ips: bool,
    /// Containers are reached through a Docker engine on the machine itself (mutual TLS).
    pub remote_engine: bool,
}

/// One of the nine cities of the original network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum City {
    /// Beijing; AWS `cn-north-1` in the separate `aws-cn` partition.
    NorthernChina,
    /// Singapore.
    Singapore,
    /// Sydney.
    Sydney,
    /// Frankfurt.
    Frankfurt,
    /// Amsterdam.
    Amsterdam,
    /// London.
    London,
    /// Northern Virginia.
    Virginia,
    /// Oregon.
    Oregon,
    /// São Paulo.
    SaoPaulo,
}

/// A region: a provider's slug, and the city it stands for when it is one of the nine.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Region {
    /// The provider's own name for it (`us-east-1`, `fra1`, `virginia`).
    pub slug: String,
    /// The city, when the region is one of the nine.
    pub city: Option<City>,
}

/// A group of identical machines on one provider in one region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    /// Unique name within the network; part of machine addresses.
    pub name: String,
    /// Where the machines come from.
    pub provider: ProviderKind,
    /// Where they run.
    pub region: Region,
    /// Provider machine size (`t3.small`, `s-1vcpu-1gb`); free-form, the provider checks it.
    pub size: String,
    /// Machine image; `None` = the provider's default (looked up, never hard-coded).
    pub image: Option<String>,
    /// How many machines.
    pub nodes: u32,
    /// Deploy tags the machines carry; services are placed by them.
    pub tags: BTreeSet<String>,
    /// Provider credentials profile (AWS: a named profile; required for the `aws-cn` partition).
    pub profile: Option<String>,
    /// How machine replaces roll out (`[clusters.update]`).
    #[serde(default)]
    pub update: UpdatePolicy,
}

/// The role a service plays in the peer network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Serves the genesis block; never peers. Holds the chain ID.
    Genesis,
    /// Fetches the genesis, boots the chain, accepts peers.
    Master,
    /// Peers with the master.
    Relay,
}

impl Role {
    /// The order roles come up in; each is gated on the previous being healthy.
    pub const ORDER: [Role; 3] = [Role::Genesis, Role::Master, Role::Relay];

    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Genesis => "genesis",
            Role::Master => "master",
            Role::Relay => "relay",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How containers of a service are spread over the matching nodes (Tutum's strategies, plus one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The matching node with the fewest containers of any service.
    #[default]
    EmptiestNode,
    /// The matching node with the fewest containers of this service.
    HighAvailability,
    /// One container on every matching node; the count follows the nodes.
    EveryNode,
    /// At most one container per region until every region has one.
    RegionSpread,
}

impl Strategy {
    /// The strategy's name as written in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::EmptiestNode => "emptiest_node",
            Strategy::HighAvailability => "high_availability",
            Strategy::EveryNode => "every_node",
            Strategy::RegionSpread => "region_spread",
        }
    }
}

/// Tutum's `autorestart`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never restart.
    Off,
    /// Restart when the process exits non-zero.
    OnFailure,
    /// Always restart.
    #[default]
    Always,
}

impl RestartPolicy {
    /// The policy's name as written in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Off => "off",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Always => "always",
        }
    }
}

/// How the engine checks a container is healthy (Docker's `HEALTHCHECK`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// Command run inside the container; exit 0 = healthy.
    pub command: Vec<String>,
    /// Time between checks, in milliseconds.
    pub interval_ms: u64,
    /// How long one check may take, in milliseconds.
    pub timeout_ms: u64,
    /// Failures in a row before the container counts as unhealthy.
    pub retries: u32,
}

/// A container image.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Image {
    /// The reference node (`peerfleet-node`), built locally and tagged by content.
    Reference,
    /// Any other image, by reference (`repo/name:tag`); it must already be on the engine or pullable.
    Named(String),
}

/// A service: one node role run as `containers` containers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// Unique name; the containers' stable names derive from it (`relay`, `relay-1`, ...).
    pub name: String,
    /// What the containers do.
    pub role: Role,
    /// What they run.
    pub image: Image,
    /// How many containers (for `every_node`: the number of matching nodes, set by validation).
    pub containers: u32,
    /// How they are placed.
    pub strategy: Strategy,
    /// Nodes must carry all of these; empty = every node.
    pub deploy_tags: BTreeSet<String>,
    /// Extra environment, on top of what the role gets.
    pub env: BTreeMap<String, String>,
    /// Environment declared secret (read from the operator's environment or a file when the spec is
    /// loaded): sealed wherever it is recorded (see [`crate::seal`]), never printed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, crate::secret::Secret>,
    /// Ports published on the node (same number on host and container).
    pub ports: Vec<u16>,
    /// When the engine restarts the container.
    pub restart: RestartPolicy,
    /// Health check; `None` = the reference node's probe for the role.
    pub health: Option<HealthCheck>,
    /// How container replaces roll out (`[services.update]`).
    #[serde(default)]
    pub update: UpdatePolicy,
}

/// Who may reach administrative ports of cloud machines.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Access {
    /// CIDRs allowed to reach the Docker TLS port (and SSH when enabled). Required for cloud clusters.
    pub admin_cidrs: Vec<String>,
    /// Open SSH (22) to `admin_cidrs`.
    pub ssh: bool,
}

/// Where a network's state lives (`[state]`). The client-side encryption *key* is never part of the
/// spec; only whether one is required.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case")]
pub enum StateSpec {
    /// A local file beside the spec (the default).
    #[default]
    Local,
    /// An S3 object shared by a team.
    S3(S3StateSpec),
}

/// `[state] backend = "s3"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3StateSpec {
    /// The bucket (it must exist).
    pub bucket: String,
    /// The state object's key; the lock is the object `key` + `.lock`.
    pub key: String,
    /// The bucket's region (default: the AWS default region chain).
    pub region: Option<String>,
    /// The AWS credentials profile (default: the default credentials chain).
    pub profile: Option<String>,
    /// Server-side encryption to ask S3 for.
    pub server_side: ServerSideEncryption,
    /// Whether the state must be encrypted client-side (AES-256-GCM, key from the environment).
    pub client_encryption: bool,
}

impl S3StateSpec {
    /// The object an `s3://bucket/key` URL names (the key may contain `/`), every option at its
    /// default; `None` for anything else.
    pub fn from_url(url: &str) -> Option<Self> {
        let (bucket, key) = url.strip_prefix("s3://")?.split_once('/')?;
        (!bucket.is_empty() && !key.is_empty() && !key.ends_with('/')).then(|| Self::new(bucket, key))
    }

    /// `s3://bucket/key` with every option at its default.
    pub fn new(bucket: &str, key: &str) -> Self {
        S3StateSpec {
            bucket: bucket.to_string(),
            key: key.to_string(),
            region: None,
            profile: None,
            server_side: ServerSideEncryption::BucketDefault,
            client_encryption: false,
        }
    }
}

/// Server-side encryption of the state objects (`[state] encryption`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerSideEncryption {
    /// The bucket's default encryption (S3 encrypts every new object with SSE-S3 by default).
    #[default]
    BucketDefault,
    /// SSE-S3 (`encryption = "sse-s3"`).
    S3,
    /// SSE-KMS (`encryption = "sse-kms"`), with `kms_key_id` or the account's default key.
    Kms {
        /// A KMS key ARN, ID or alias.
        key_id: Option<String>,
    },
}

/// Default ports of the reference node.
pub mod ports {
    /// Where the genesis server serves `/genesis.json` and `/chain_id`.
    pub const FETCH: u16 = 8080;
    /// Where master and relays speak the peer protocol.
    pub const PEER: u16 = 26656;
    /// Where master and relays answer `GET /status`.
    pub const STATUS: u16 = 26657;
    /// Docker's TLS API port on cloud machines.
    pub const DOCKER_TLS: u16 = 2376;
}
