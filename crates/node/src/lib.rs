//! The reference peer node: one binary for the three roles of a peerfleet network — genesis server,
//! master and relay — configured entirely by environment variables (see docs/architecture.md, "Node roles").
//!
//! The design is shaped by where it runs: as PID 1 of a `FROM scratch` container image holding only
//! this binary and its shared libraries. Hence no shell, no files beyond the environment, logs on
//! stderr, and a handful of dependencies: HTTP is a small hand-written HTTP/1.1 subset ([`http`]) and
//! the peer protocol is newline-delimited JSON over TCP ([`peer`]), both with size and time bounds on
//! every read and write.
//!
//! Roles:
//! - **genesis** verifies `sha256(GENESIS_B64 bytes) == CHAIN_ID` (or refuses to start) and serves
//!   `GET /genesis.json`, `/chain_id` and `/status` on `FETCH_PORT`. It never peers.
//! - **master** fetches `GENESIS_URL` (retrying with capped backoff), refuses to run on a genesis whose
//!   hash is not `CHAIN_ID`, then accepts peers on `PEER_PORT`; `/status` on `STATUS_PORT`.
//! - **relay** fetches and verifies the genesis likewise, then keeps a connection to each of `SEEDS`,
//!   reconnecting with capped exponential backoff and jitter (`BACKOFF_INITIAL_MS`, default 250, and
//!   `BACKOFF_MAX_MS`, default 10000); `/status` on `STATUS_PORT`.
//!
//! `peerfleet-node probe` (the container health check) runs [`probe`] against the same environment.
//! Embedders and tests build a [`Config`] directly and use [`Node`] (port 0 allowed; bound addresses
//! are reported) or [`run`].

mod accept;
mod chain;
pub mod cli;
mod config;
pub mod genesis;
pub mod http;
mod metrics;
mod node;
pub mod peer;
mod probe;
mod shutdown;
mod state;

pub use chain::ChainId;
pub use config::{
    Config, ConfigError, GenesisBytes, Ports, Role, RoleConfig, Timing, random_node_id, valid_node_id,
};
pub use genesis::new_genesis;
pub use http::HttpUrl;
pub use node::{MAX_GENESIS, Node, NodeError, run};
pub use probe::{PROBE_DEADLINE, ProbeReport, probe, probe_report};
pub use state::{Direction, PeerInfo, Refusals, Status};
