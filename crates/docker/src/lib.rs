//! Docker for peerfleet: the container engine of every node, the local virtual nodes, the network's
//! certificate authority, and the reference node image.
//!
//! One decision shaped this crate: **the Docker engine is the only store of truth about what runs on
//! it.** Everything peerfleet needs to recognise its own objects travels with them as labels set at
//! creation (network, address, the full container spec, the chain ID), so refresh is one labelled list
//! call per engine, a lost state file never causes duplicates, and objects nobody labelled are never
//! touched. The same holds for local virtual nodes, which are plain Docker bridge networks whose labels
//! carry what a cloud machine's tags would.
//!
//! The pieces, each in its own module:
//! - [`engine`]: [`DockerEngine`], the [`ContainerEngine`](peerfleet_core::provider::ContainerEngine)
//!   over `bollard`, reached at an [`endpoint`]: local socket, or TCP with mutual TLS.
//! - [`local`]: [`LocalNodes`], the [`MachineProvider`](peerfleet_core::provider::MachineProvider) for
//!   `provider = "local"`; each node is a bridge network, and one more network stands for the internet.
//! - [`connector`]: [`DockerConnector`], which finds (and caches) the engine of a machine.
//! - [`pki`]: [`NetworkCa`], the network's own CA; it signs engine server certificates and
//!   peerfleet's client certificate.
//! - [`image`]: the reference node image, built on the engine from the `peerfleet-node` binary with no
//!   registry, tagged by content.
//! - [`labels`]: the label vocabulary shared by all of the above.
//!
//! # Wiring
//! How a program hands the Docker side to the core (the CA comes from the state's secrets after the
//! first apply; here it is new):
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use peerfleet_core::provider::Providers;
//! use peerfleet_docker::{DockerConnector, DockerEngine, LocalNodes, NetworkCa};
//!
//! # async fn wire() -> Result<(), Box<dyn std::error::Error>> {
//! let binary = peerfleet_docker::locate_node_binary(Some(env!("CARGO_MANIFEST_DIR").as_ref()))?;
//! let image = Arc::new(peerfleet_docker::reference_image(&binary)?); // image.tag goes into the plan
//! let engine = Arc::new(DockerEngine::connect_local().await?);
//! let ca = Arc::new(NetworkCa::generate("mainnet")?);
//! let connector = DockerConnector::new("mainnet")
//!     .with_local_engine(engine.clone())
//!     .with_client_identity(ca.client_identity()?)
//!     .with_reference_image(image);
//! let providers = Providers::new()
//!     .with_machines(Arc::new(LocalNodes::new(engine)))
//!     .with_engines(Arc::new(connector))
//!     .with_pki(ca);
//! # let _ = providers;
//! # Ok(())
//! # }
//! ```

pub mod connector;
mod container;
pub mod endpoint;
pub mod engine;
mod error;
pub mod image;
pub mod labels;
pub mod local;
mod networks;
pub mod pki;
mod tls;

pub use connector::DockerConnector;
pub use endpoint::Endpoint;
pub use engine::{DockerEngine, EngineVersion};
pub use error::Error;
pub use image::{EnsureOutcome, ReferenceImage, ensure_image, locate_node_binary, reference_image};
pub use local::LocalNodes;
pub use pki::{ClientIdentity, NetworkCa};
