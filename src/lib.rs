//! peerfleet: declare a blockchain peer-server network and converge real infrastructure to it.
//!
//! A network is one genesis server (its genesis block's hash is the chain ID, pinned for ever), one
//! master and any number of relays, run as containers on machines tagged `peer_cluster` on AWS EC2,
//! DigitalOcean, or virtual nodes of the local Docker engine. [`Deployment`] is the whole workflow —
//! refresh what exists, plan the difference, apply it — as a library; the `peerfleet` binary is a thin
//! shell around it.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use peerfleet::{Deployment, PlanRequest};
//! let network = peerfleet::core::spec::load("network.toml".as_ref())?;
//! let deployment = Deployment::new(network, ".peerfleet/state.json");
//! let prepared = deployment.plan(&PlanRequest::default()).await?;
//! print!("{}", peerfleet::core::render::text(&prepared.planned.plan, Default::default()));
//! # Ok(()) }
//! ```
//!
//! The crates underneath are re-exported: [`core`] (spec, placement, planner, executor, state — no
//! network code), `docker`, `aws`, `digitalocean` (providers) and `node` (the reference node).
//!
//! # Features
//! `aws` and `digitalocean` (both on by default) build those providers in. Without one, a network that
//! uses it fails to connect with [`ConnectError::NotBuiltIn`]; the local Docker engine is always
//! there. A tool that only deploys locally turns both off and skips compiling the AWS SDK, most of a
//! build.

#[cfg(feature = "aws")]
pub use peerfleet_aws as aws;
pub use peerfleet_core as core;
#[cfg(feature = "digitalocean")]
pub use peerfleet_digitalocean as digitalocean;
pub use peerfleet_docker as docker;
pub use peerfleet_node as node;

pub mod connect;
pub mod deploy;
mod status;
pub mod store;

pub use connect::{ConnectError, ConnectOptions, Connected};
pub use deploy::{Applied, ApplyRequest, DeployError, Deployment, PlanRequest, Prepared};
