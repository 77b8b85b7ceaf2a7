//! The network spec: `network.toml` or the Rust builder → a validated [`Network`].
//!
//! Input is read in two steps, as written and then resolved (ripgrep's low-level versus high-level
//! arguments): serde reads the TOML into raw types that keep byte spans and reject unknown keys,
//! then one validation function checks everything and builds the [`Network`]. The builder fills the
//! same raw types without spans, so a network built in Rust is held to exactly the rules a file is,
//! and its errors name the same field paths (without lines).
//!
//! Errors are for people: each names the file, line, column, the field (`services[2].strategy`,
//! indexes from 0) and what was expected versus found. A TOML syntax error stops at the first one;
//! semantic problems are all reported at once. See `docs/spec.md` for the format.
//!
//! ```
//! use peerfleet_core::network::{ProviderKind, Role};
//! use peerfleet_core::spec::{ClusterBuilder, NetworkBuilder, ServiceBuilder};
//!
//! let network = NetworkBuilder::new("demo")
//!     .genesis(br#"{"chain":"demo"}"#.to_vec())
//!     .cluster(ClusterBuilder::new("home", ProviderKind::Local, "Frankfurt").nodes(2))
//!     .service(ServiceBuilder::new("genesis", Role::Genesis))
//!     .service(ServiceBuilder::new("master", Role::Master))
//!     .service(ServiceBuilder::new("relay", Role::Relay).containers(3))
//!     .build()
//!     .expect("a valid network");
//! assert_eq!(network.clusters[0].region.slug, "frankfurt");
//! ```

use std::path::Path;

use crate::input;
use crate::network::{Chain, Network};

/// The largest spec file read, in bytes. A real network's spec is a few kilobytes; the limit keeps
/// a wrong path (a log, a disk image) from being read whole.
pub const MAX_SPEC_BYTES: u64 = 4 << 20;

/// The largest genesis file, in bytes. The genesis travels to the genesis server base64-encoded in
/// one environment variable (`GENESIS_B64`), and Linux refuses a single environment string over
/// 128 KiB; 64 KiB of genesis is 87,384 characters of base64, safely under that.
pub const MAX_GENESIS_BYTES: u64 = 64 << 10;

mod builder;
pub mod catalog;
pub mod edit;
mod error;
#[cfg(test)]
mod hostile_tests;
mod raw;
mod secrets;
mod state;
#[cfg(test)]
mod tests;
mod validate;

pub use builder::{ClusterBuilder, NetworkBuilder, ServiceBuilder};
pub use error::{
    Location, MAX_ECHO_CHARS, MAX_REPORTED_ERRORS, SpecError, SpecErrorKind, SpecErrors, quoted,
    terminal_safe,
};
pub use validate::{
    MAX_CLUSTERS, MAX_CONTAINERS, MAX_NETWORK_CONTAINERS, MAX_NETWORK_NODES, MAX_NODES, MAX_SERVICES,
    MAX_TAGS, REFERENCE_IMAGE, RESERVED_ENV,
};

use error::{LineIndex, Origin, escaped};
use raw::RawSpec;

/// Reads and validates the spec file at `path`; the genesis file is resolved against its directory.
///
/// # Errors
/// The file cannot be read, is not valid TOML, has unknown keys or wrong types (the first such
/// problem), or fails validation (every problem found).
pub fn load(path: &Path) -> Result<Network, SpecErrors> {
    let text = input::read_regular_text(path, MAX_SPEC_BYTES)
        .map_err(|cause| SpecError::new("", SpecErrorKind::ReadSpec { cause }).in_file(path))?;
    parse(&text, path, base_dir_of(path))
}

/// Validates spec `text`, naming `file` in errors and reading the genesis file relative to `base_dir`.
///
/// # Errors
/// As [`load`], except reading the spec itself.
pub fn parse(text: &str, file: &Path, base_dir: &Path) -> Result<Network, SpecErrors> {
    parse_with(text, file, base_dir, &|name| std::env::var_os(name))
}

/// [`parse`], reading `from_env` values through `lookup` instead of the process environment.
pub(crate) fn parse_with(
    text: &str,
    file: &Path,
    base_dir: &Path,
    lookup: secrets::Lookup<'_>,
) -> Result<Network, SpecErrors> {
    let lines = LineIndex::new(text);
    let origin = Origin { file: Some(file), lines: Some(&lines) };
    let mut raw = read_raw(text, origin)?;
    let chain = read_chain(&raw, base_dir, origin);
    let unread = secrets::resolve(&mut raw, base_dir, lookup, origin);
    // A value that could not be read is left out of validation, which then cannot see the spec is
    // unusable: its errors are added here, with the others, in document order.
    match validate::validate(&raw, chain, origin) {
        Ok(network) => SpecErrors::with_omitted(unread, 0).map_or(Ok(network), Err),
        Err(errors) => {
            let omitted = errors.omitted();
            let mut all = errors.into_vec();
            all.extend(unread);
            Err(SpecErrors::with_omitted(all, omitted).expect("a failed validation has at least one error"))
        }
    }
}

/// The directory relative paths in the spec at `path` are resolved against.
pub(crate) fn base_dir_of(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// TOML text → raw spec; stops at the first syntax or shape error.
fn read_raw(text: &str, origin: Origin<'_>) -> Result<RawSpec, SpecError> {
    // Parsed once for syntax (and to map serde's error spans back to field paths), then by serde.
    let doc = toml_edit::Document::parse(text).map_err(|e| {
        origin.error(e.span(), "", SpecErrorKind::Syntax { message: escaped(e.message().trim()) })
    })?;
    toml::from_str::<RawSpec>(text).map_err(|e| {
        // Both may quote the document: an unknown key can hold anything.
        let path = e.span().map(|s| escaped(&raw::path_at(&doc, s.start))).unwrap_or_default();
        origin.error(e.span(), path, SpecErrorKind::Schema { message: escaped(e.message().trim()) })
    })
}

/// Reads the genesis file named by `chain.genesis`; the chain ID is its sha256.
fn read_chain(raw: &RawSpec, base_dir: &Path, origin: Origin<'_>) -> Result<Chain, SpecError> {
    const PATH: &str = "chain.genesis";
    let chain = raw.chain.as_ref().ok_or_else(|| origin.error(None, PATH, SpecErrorKind::Missing))?;
    let genesis = chain
        .value
        .genesis
        .as_ref()
        .ok_or_else(|| origin.error(chain.span.clone(), PATH, SpecErrorKind::Missing))?;
    let path = base_dir.join(&genesis.value);
    match input::read_regular(&path, MAX_GENESIS_BYTES) {
        // An empty genesis would pin the chain ID of nothing; it is always a mistake (a truncated copy).
        Ok(bytes) if bytes.is_empty() => Err(origin.error(
            genesis.span.clone(),
            PATH,
            SpecErrorKind::Invalid {
                expected: "a non-empty genesis file".into(),
                found: format!("{} (0 bytes)", path.display()),
            },
        )),
        Ok(bytes) => Ok(Chain::from_genesis(bytes, Some(path))),
        Err(cause) => Err(origin.error(genesis.span.clone(), PATH, SpecErrorKind::Genesis { path, cause })),
    }
}
