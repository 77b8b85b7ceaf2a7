//! The node's configuration: from the environment (the role contract) or built directly.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::ChainId;
use crate::http::HttpUrl;

/// What a node does in the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Serves the genesis bytes; never peers.
    Genesis,
    /// Fetches and verifies the genesis, then accepts peers.
    Master,
    /// Fetches and verifies the genesis, then peers with the seeds.
    Relay,
}

impl Role {
    /// The role's name as in `NODE_ROLE`.
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

/// The genesis document a genesis node serves, shared without copying between requests.
#[derive(Clone, PartialEq, Eq)]
pub struct GenesisBytes(Arc<[u8]>);

impl GenesisBytes {
    /// Wraps the exact bytes to serve.
    pub fn new(bytes: Vec<u8>) -> Self {
        GenesisBytes(bytes.into())
    }

    /// The exact bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for GenesisBytes {
    // The document can be large; its size and hash identify it in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GenesisBytes({} bytes, sha256 {})", self.0.len(), ChainId::of(&self.0))
    }
}

/// What the node needs for its role.
#[derive(Debug, Clone)]
pub enum RoleConfig {
    /// `NODE_ROLE=genesis`.
    Genesis {
        /// The bytes to serve (`GENESIS_B64`).
        genesis: GenesisBytes,
    },
    /// `NODE_ROLE=master`.
    Master {
        /// Where to fetch the genesis (`GENESIS_URL`).
        genesis_url: HttpUrl,
    },
    /// `NODE_ROLE=relay`.
    Relay {
        /// Where to fetch the genesis (`GENESIS_URL`).
        genesis_url: HttpUrl,
        /// `host:port` of the masters' peer ports to connect to (`SEEDS`).
        seeds: Vec<String>,
    },
}

/// The TCP ports a node listens on; 0 lets the OS pick (learn the result from [`crate::Node`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// Genesis role: `/genesis.json`, `/chain_id`, `/status` (`FETCH_PORT`, default 8080).
    pub fetch: u16,
    /// Master role: the peer protocol (`PEER_PORT`, default 26656).
    pub peer: u16,
    /// Master and relay roles: `/status` (`STATUS_PORT`, default 26657).
    pub status: u16,
}

impl Ports {
    /// Port 0 everywhere, for tests and embedding: the OS picks free ports.
    pub const EPHEMERAL: Ports = Ports { fetch: 0, peer: 0, status: 0 };
}

impl Default for Ports {
    fn default() -> Self {
        Ports { fetch: 8080, peer: 26656, status: 26657 }
    }
}

/// Timers of the peer protocol and the genesis fetch. The defaults suit real networks; tests shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Interval between pings; a peer silent for three intervals is dropped.
    pub keepalive: Duration,
    /// How long the hello/verdict exchange may take.
    pub handshake_timeout: Duration,
    /// First delay before reconnecting or refetching; doubles per failure.
    pub backoff_initial: Duration,
    /// Cap on that delay.
    pub backoff_max: Duration,
    /// Limit on one HTTP request for the genesis.
    pub http_timeout: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            keepalive: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(5),
            backoff_initial: Duration::from_millis(250),
            backoff_max: Duration::from_secs(10),
            http_timeout: Duration::from_secs(10),
        }
    }
}

/// Everything a node runs from.
#[derive(Debug, Clone)]
pub struct Config {
    /// The pinned chain ID (`CHAIN_ID`).
    pub chain_id: ChainId,
    /// This node's ID in handshakes and status (`NODE_ID`; random by default).
    pub node_id: String,
    /// The role and its inputs (`NODE_ROLE` and the role's variables).
    pub role: RoleConfig,
    /// Address the listeners bind to; all IPv4 interfaces by default, as a container needs.
    pub listen_ip: IpAddr,
    /// Listening ports.
    pub ports: Ports,
    /// Protocol timers.
    pub timing: Timing,
}

/// A missing or malformed environment variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A variable the role needs is unset or empty.
    #[error("{var} is required{hint}")]
    Missing {
        /// The variable's name.
        var: &'static str,
        /// What it should hold, with a leading separator.
        hint: &'static str,
    },
    /// A variable is set but does not hold what was expected.
    #[error("{var}: {reason}")]
    Invalid {
        /// The variable's name.
        var: &'static str,
        /// What is wrong, naming what was expected.
        reason: String,
    },
}

impl Config {
    /// A genesis node serving `genesis`, with default ports and a random node ID.
    pub fn genesis(chain_id: ChainId, genesis: Vec<u8>) -> Config {
        Config::with_role(chain_id, RoleConfig::Genesis { genesis: GenesisBytes::new(genesis) })
    }

    /// A master fetching its genesis from `genesis_url`.
    pub fn master(chain_id: ChainId, genesis_url: HttpUrl) -> Config {
        Config::with_role(chain_id, RoleConfig::Master { genesis_url })
    }

    /// A relay fetching its genesis from `genesis_url` and peering with `seeds` (`host:port`).
    pub fn relay(chain_id: ChainId, genesis_url: HttpUrl, seeds: Vec<String>) -> Config {
        Config::with_role(chain_id, RoleConfig::Relay { genesis_url, seeds })
    }

    fn with_role(chain_id: ChainId, role: RoleConfig) -> Config {
        Config {
            chain_id,
            node_id: random_node_id(),
            role,
            listen_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            ports: Ports::default(),
            timing: Timing::default(),
        }
    }

    /// The role this configuration runs.
    pub fn role(&self) -> Role {
        match self.role {
            RoleConfig::Genesis { .. } => Role::Genesis,
            RoleConfig::Master { .. } => Role::Master,
            RoleConfig::Relay { .. } => Role::Relay,
        }
    }

    /// Reads the role contract from the process environment.
    ///
    /// # Errors
    /// The first missing or malformed variable, by name.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads the role contract from `var` (a lookup by name), so callers can supply an environment
    /// other than the process's. Empty values count as unset, as container specs often leave them so.
    ///
    /// # Errors
    /// The first missing or malformed variable, by name.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let get = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let required = |name: &'static str, hint: &'static str| {
            get(name).ok_or(ConfigError::Missing { var: name, hint })
        };

        let role = match required("NODE_ROLE", " (genesis, master or relay)")?.trim() {
            "genesis" => Role::Genesis,
            "master" => Role::Master,
            "relay" => Role::Relay,
            other => {
                return Err(invalid(
                    "NODE_ROLE",
                    format!("expected genesis, master or relay, got {other:?}"),
                ));
            }
        };
        let chain_id_text = required("CHAIN_ID", " (64 hex characters: sha256 of the genesis)")?;
        let chain_id = ChainId::parse(&chain_id_text).ok_or_else(|| {
            invalid("CHAIN_ID", format!("expected 64 hex characters, got {:?}", chain_id_text.trim()))
        })?;
        let genesis_url = || -> Result<HttpUrl, ConfigError> {
            let url = required("GENESIS_URL", " (http://host:port/genesis.json)")?;
            HttpUrl::parse(url.trim()).map_err(|reason| invalid("GENESIS_URL", reason))
        };
        let role_config = match role {
            Role::Genesis => {
                let b64 = required("GENESIS_B64", " (base64 of the genesis bytes)")?;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .map_err(|e| invalid("GENESIS_B64", format!("not standard base64: {e}")))?;
                RoleConfig::Genesis { genesis: GenesisBytes::new(bytes) }
            }
            Role::Master => RoleConfig::Master { genesis_url: genesis_url()? },
            Role::Relay => {
                let genesis_url = genesis_url()?;
                let seeds =
                    parse_seeds(&required("SEEDS", " (comma-separated host:port, e.g. master:26656)")?)
                        .map_err(|reason| invalid("SEEDS", reason))?;
                RoleConfig::Relay { genesis_url, seeds }
            }
        };

        let node_id = match get("NODE_ID") {
            Some(id) => {
                let id = id.trim().to_owned();
                valid_node_id(&id).map_err(|reason| invalid("NODE_ID", reason))?;
                id
            }
            None => random_node_id(),
        };
        let defaults = Ports::default();
        let timing = Timing::default();
        // Reconnect delays: a network whose master restarts often may want relays back sooner, one
        // on a metered link later. Bounded so a typo cannot park a relay for a day.
        let millis = |name: &'static str, default: Duration| match get(name) {
            None => Ok(default),
            Some(text) => match text.trim().parse::<u64>() {
                Ok(ms @ 1..=600_000) => Ok(Duration::from_millis(ms)),
                _ => Err(invalid(name, format!("expected milliseconds 1-600000, got {:?}", text.trim()))),
            },
        };
        let port = |name: &'static str, default: u16| match get(name) {
            None => Ok(default),
            Some(text) => text
                .trim()
                .parse::<u16>()
                .map_err(|_| invalid(name, format!("expected a port number 0-65535, got {:?}", text.trim()))),
        };
        Ok(Config {
            chain_id,
            node_id,
            role: role_config,
            listen_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            ports: Ports {
                fetch: port("FETCH_PORT", defaults.fetch)?,
                peer: port("PEER_PORT", defaults.peer)?,
                status: port("STATUS_PORT", defaults.status)?,
            },
            timing: Timing {
                backoff_initial: millis("BACKOFF_INITIAL_MS", timing.backoff_initial)?,
                backoff_max: millis("BACKOFF_MAX_MS", timing.backoff_max)?,
                ..timing
            },
        })
    }
}

fn invalid(var: &'static str, reason: String) -> ConfigError {
    ConfigError::Invalid { var, reason }
}

/// A random node ID: 16 bytes of hex, unique enough that two nodes of one network never collide.
pub fn random_node_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// Node IDs appear in logs and status: 1-64 characters of `A-Z a-z 0-9 . _ -`.
///
/// # Errors
/// What is wrong with `id`.
pub fn valid_node_id(id: &str) -> Result<(), String> {
    let ok_chars = id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if (1..=64).contains(&id.len()) && ok_chars {
        Ok(())
    } else {
        Err(format!("expected 1-64 characters of A-Z a-z 0-9 . _ -, got {id:?}"))
    }
}

/// Parses `SEEDS`: comma-separated `host:port`, blanks between commas ignored.
fn parse_seeds(text: &str) -> Result<Vec<String>, String> {
    let seeds: Vec<String> =
        text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
    if seeds.is_empty() {
        return Err("expected at least one host:port".into());
    }
    for seed in &seeds {
        let valid = seed
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0));
        if !valid {
            return Err(format!("expected host:port with a port 1-65535, got {seed:?}"));
        }
    }
    Ok(seeds)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const ID: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn from(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_vars(|name| vars.get(name).cloned())
    }

    #[test]
    fn relay_env_parses_with_default_ports_and_random_node_id() {
        let config = from(&[
            ("NODE_ROLE", "relay"),
            ("CHAIN_ID", ID),
            ("GENESIS_URL", "http://genesis:8080/genesis.json"),
            ("SEEDS", "master:26656, ,other:1"),
        ])
        .expect("valid relay env");
        assert_eq!(config.role(), Role::Relay);
        assert_eq!(config.ports, Ports::default());
        assert_eq!(config.node_id.len(), 32);
        let RoleConfig::Relay { genesis_url, seeds } = &config.role else {
            panic!("not a relay: {config:?}")
        };
        assert_eq!(seeds, &["master:26656", "other:1"]);
        assert_eq!((genesis_url.host.as_str(), genesis_url.port), ("genesis", 8080));
    }

    #[test]
    fn genesis_env_decodes_bytes_and_reads_fetch_port() {
        let config = from(&[
            ("NODE_ROLE", "genesis"),
            ("CHAIN_ID", ID),
            ("GENESIS_B64", "e30K"),
            ("FETCH_PORT", "9000"),
        ])
        .expect("valid genesis env");
        let RoleConfig::Genesis { genesis } = &config.role else { panic!("not genesis: {config:?}") };
        assert_eq!(genesis.as_bytes(), b"{}\n");
        assert_eq!(config.ports.fetch, 9000);
    }

    #[test]
    fn missing_and_malformed_variables_are_named() {
        assert_eq!(
            from(&[("CHAIN_ID", ID)]).unwrap_err().to_string(),
            "NODE_ROLE is required (genesis, master or relay)"
        );
        let err = from(&[("NODE_ROLE", "master"), ("CHAIN_ID", "abc")]).unwrap_err();
        assert!(err.to_string().starts_with("CHAIN_ID: expected 64 hex characters"), "{err}");
        let err =
            from(&[("NODE_ROLE", "master"), ("CHAIN_ID", ID), ("GENESIS_URL", "https://x/g")]).unwrap_err();
        assert!(err.to_string().starts_with("GENESIS_URL:"), "{err}");
        let relay = [("NODE_ROLE", "relay"), ("CHAIN_ID", ID), ("GENESIS_URL", "http://g/genesis.json")];
        let err = from(&[relay.as_slice(), &[("SEEDS", "master")]].concat()).unwrap_err();
        assert!(err.to_string().starts_with("SEEDS: expected host:port"), "{err}");
        let err = from(&[relay.as_slice(), &[("SEEDS", "m:1"), ("NODE_ID", "a b")]].concat()).unwrap_err();
        assert!(err.to_string().starts_with("NODE_ID:"), "{err}");
        let err =
            from(&[relay.as_slice(), &[("SEEDS", "m:1"), ("STATUS_PORT", "70000")]].concat()).unwrap_err();
        assert!(err.to_string().starts_with("STATUS_PORT:"), "{err}");
        let err =
            from(&[relay.as_slice(), &[("SEEDS", "m:1"), ("BACKOFF_MAX_MS", "0")]].concat()).unwrap_err();
        assert!(err.to_string().starts_with("BACKOFF_MAX_MS: expected milliseconds"), "{err}");
    }

    #[test]
    fn reconnect_delays_come_from_the_environment_or_the_defaults() {
        let relay = [
            ("NODE_ROLE", "relay"),
            ("CHAIN_ID", ID),
            ("GENESIS_URL", "http://g/genesis.json"),
            ("SEEDS", "m:1"),
        ];
        assert_eq!(from(&relay).unwrap().timing, Timing::default());
        let slow =
            from(&[relay.as_slice(), &[("BACKOFF_INITIAL_MS", "4000"), ("BACKOFF_MAX_MS", "8000")]].concat())
                .unwrap();
        assert_eq!(slow.timing.backoff_initial, Duration::from_millis(4000));
        assert_eq!(slow.timing.backoff_max, Duration::from_millis(8000));
    }
}
