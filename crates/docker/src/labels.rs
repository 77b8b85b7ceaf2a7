//! The labels peerfleet puts on Docker objects, and how a container spec is stored in one.
//!
//! Labels are set when an object is created and can never change afterwards (Docker has no relabel
//! call), which is exactly the ownership guarantee the core asks for: an object either carries
//! peerfleet's labels from its first moment or is not peerfleet's.

use peerfleet_core::resource::ContainerSpec;
use peerfleet_core::seal;

/// The peer network an object belongs to (containers and networks).
pub const NETWORK: &str = "peerfleet.network";
/// The object's address in its text form (`container.relay[0]`, `machine.virginia[0]`).
pub const ADDRESS: &str = "peerfleet.address";
/// The pinned chain ID, on the genesis container and the node that hosts it.
pub const CHAIN_ID: &str = "peerfleet.chain_id";
/// The container spec as JSON, secrets sealed (see [`stored_spec`]).
pub const SPEC: &str = "peerfleet.spec";
/// A local node's region slug.
pub const REGION: &str = "peerfleet.region";
/// A local node's city, when its region is one of the nine.
pub const CITY: &str = "peerfleet.city";
/// A local node's size.
pub const SIZE: &str = "peerfleet.size";
/// A local node's generation (raised on every replace).
pub const GENERATION: &str = "peerfleet.generation";
/// A local node's bootstrap version.
pub const BOOTSTRAP: &str = "peerfleet.bootstrap";
/// Prefix of a local node's deploy tag labels: `peerfleet.tag.peer_cluster=1`.
pub const TAG_PREFIX: &str = "peerfleet.tag.";
/// Marks the network that stands for the internet between a network's local nodes.
pub const INTERNET: &str = "peerfleet.internet";
/// Marks images peerfleet built (the reference node image).
pub const IMAGE: &str = "peerfleet.image";

/// The spec as it is stored in the [`SPEC`] label: every sensitive env value replaced by its seal
/// ([`ContainerSpec::sealed`], see `peerfleet_core::seal`), the form the core's planner compares in.
/// The container itself gets the values in clear; only the label, which refresh reads into plans and
/// state, is sealed.
pub fn stored_spec(spec: &ContainerSpec) -> ContainerSpec {
    let mut stored = spec.sealed();
    // Second line: a spec that reached the engine without its seals (built by hand, by an embedding
    // program) must still not put a value whose name looks secret into a label anyone can read.
    for (key, value) in &mut stored.env {
        if seal::is_secret_name(key) && !seal::is_seal(value) {
            *value = seal::seal(None, value);
        }
    }
    stored
}

/// The [`SPEC`] label value.
pub(crate) fn encode_spec(spec: &ContainerSpec) -> String {
    // Serialising plain data (strings, maps, numbers) cannot fail.
    serde_json::to_string(&stored_spec(spec)).unwrap_or_default()
}

/// Reads a [`SPEC`] label back; `None` when it is missing or not a spec this version understands.
pub(crate) fn decode_spec(label: Option<&String>) -> Option<ContainerSpec> {
    label.and_then(|s| serde_json::from_str(s).ok())
}
