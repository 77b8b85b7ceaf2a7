//! peerfleet's core: the network spec, placement, the plan/apply engine and state.
//!
//! This crate is pure in the sense that matters for an infrastructure tool: it never opens a network
//! connection. It reads and writes the spec and state files it is pointed at, and reaches the world only
//! through the traits in [`provider`], which the provider crates (`peerfleet-aws`,
//! `peerfleet-digitalocean`, `peerfleet-docker`) implement. That split is what lets the planner be a
//! deterministic function of (spec, actual state, recorded state) and the executor be tested against
//! an in-memory provider with injected faults.

pub mod actual;
pub mod address;
pub mod atomic;
pub mod bootstrap;
pub mod desired;
pub mod executor;
pub mod graph;
pub mod input;
pub mod network;
pub mod ownership;
pub mod placement;
pub mod plan;
pub mod provider;
pub mod refresh;
pub mod render;
pub mod resource;
pub mod retry;
pub mod seal;
pub mod secret;
pub mod spec;
pub mod state;
pub mod status;
#[cfg(feature = "testing")]
pub mod testing;
pub mod text;
pub mod update;

pub use address::Address;
pub use network::{ChainId, Network, ProviderKind, Role, Strategy};
pub use plan::{Action, Change, Plan};
