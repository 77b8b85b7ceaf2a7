//! State: what the last apply knew, and the lock that keeps two applies apart.
//!
//! Refresh (listing by ownership tags) is the source of truth for *what exists*; the state records what
//! refresh cannot see: the chain-ID pin (with the genesis bytes, so the genesis server can be rebuilt
//! even after the spec lost its file), the generation last used per machine (so a replacement never
//! reuses an idempotency key), in-flight intents (so a crash between "provider created it" and "state
//! saved" is recognised), secrets such as the network CA key, and outputs. `lineage` and `serial`
//! identify a version of the state, which is how apply refuses a plan made from an older one.
//!
//! Storage is behind [`StateBackend`]: [`LocalStateFile`] (a JSON file, atomically replaced, mode
//! 0600, locked by an operating-system lock on a `.lock` file; saves during an apply append what
//! changed to a journal beside it, see [`StateBackend::save_touched`]), [`MemoryState`] (in memory, with a
//! leased lock like a shared store's), and shared stores in other crates (S3 in `peerfleet-aws`),
//! whose saves are conditional on the version they read and whose lock is leased and renewed in the
//! background ([`keep_renewed`]). A shared store may encrypt the whole state client-side
//! ([`encryption`]).
//!
//! # Typical use
//! ```no_run
//! # async fn demo() -> Result<(), peerfleet_core::state::StateError> {
//! use peerfleet_core::state::{LocalStateFile, LockOptions, StateBackend, default_state_path};
//! let store = LocalStateFile::new(default_state_path("network.toml".as_ref(), "testnet"));
//! let lock = store.lock("plan", &LockOptions::default()).await?; // fails at once if held, naming the holder
//! let mut state = store.load().await?;
//! state.outputs.insert("note".into(), "hello".into());
//! store.save(&mut state).await?; // lineage assigned on first save, serial + 1
//! lock.release().await?;
//! # Ok(()) }
//! ```

pub mod encryption;
mod error;
mod heal;
mod journal;
mod local;
mod lock;
mod memory;
mod time;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::address::Address;
use crate::network::ChainId;
use crate::plan::{Action, PlanBase};
use crate::resource::Actual;

pub use crate::provider::Secret;
pub use encryption::StateKey;
pub use error::{StateError, StateErrorKind};
pub use heal::Refreshed;
pub use journal::Touched;
pub use local::{LocalStateFile, MAX_STATE_BYTES, force_unlock};
pub use lock::{Acquired, Attempt, LockInfo, LockOptions, LockSlot, StateLock, acquire, keep_renewed};
pub use memory::MemoryState;
pub use time::Timestamp;

/// The version of the state file format this build writes (and the newest it reads).
pub const STATE_FORMAT_VERSION: u32 = 1;

/// Everything peerfleet keeps between runs for one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// [`STATE_FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// A random ID made at the first save; every later version of this state keeps it. A state file
    /// from another lineage is another network's history, and no plan made from one applies to the
    /// other.
    pub lineage: Option<String>,
    /// Incremented by every save.
    pub serial: u64,
    /// The network this state belongs to, recorded at the first use. A copied file keeps its
    /// lineage, so the lineage alone cannot tell one network's state from another's; the name can.
    #[serde(default)]
    pub network: Option<String>,
    /// The chain this network serves, pinned by the first apply that created the genesis server.
    pub chain: Option<ChainPin>,
    /// What the last apply knew of each resource.
    pub resources: BTreeMap<Address, Actual>,
    /// The last generation used (sent to a provider) per machine address.
    #[serde(default)]
    pub generations: BTreeMap<Address, u32>,
    /// Steps that started and have not finished: whoever finds one must assume the provider may have
    /// acted on it.
    #[serde(default)]
    pub intents: BTreeMap<Address, Intent>,
    /// Secrets of the network (e.g. the CA key); never printed.
    #[serde(default)]
    pub secrets: BTreeMap<String, Secret>,
    /// Values for people and scripts (`chain_id`, the genesis and master hosts).
    #[serde(default)]
    pub outputs: BTreeMap<String, String>,
}

impl Default for State {
    fn default() -> Self {
        State {
            format_version: STATE_FORMAT_VERSION,
            lineage: None,
            serial: 0,
            network: None,
            chain: None,
            resources: BTreeMap::new(),
            generations: BTreeMap::new(),
            intents: BTreeMap::new(),
            secrets: BTreeMap::new(),
            outputs: BTreeMap::new(),
        }
    }
}

impl State {
    /// An empty state: no lineage, serial 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads state JSON, refusing a format newer than this build's.
    pub fn from_json(bytes: &[u8]) -> Result<Self, StateErrorKind> {
        #[derive(Deserialize)]
        struct Version {
            format_version: u32,
        }
        // Look at the version alone first: a newer file must say "upgrade", not "unknown field".
        let version: Version = serde_json::from_slice(bytes).map_err(StateErrorKind::Corrupt)?;
        if version.format_version > STATE_FORMAT_VERSION {
            return Err(StateErrorKind::Version {
                found: version.format_version,
                supported: STATE_FORMAT_VERSION,
            });
        }
        let state: State = serde_json::from_slice(bytes).map_err(StateErrorKind::Corrupt)?;
        // Refused on reading, before anything is planned from it: no save could follow this one.
        if state.serial == u64::MAX {
            return Err(StateErrorKind::SerialExhausted);
        }
        Ok(state)
    }

    /// Claims this state for `network`: records the name if none is recorded yet (a state from
    /// before names were recorded, or a new one).
    ///
    /// # Errors
    /// [`StateErrorKind::OtherNetwork`] when the state records another network.
    pub fn claim(&mut self, network: &str) -> Result<(), StateErrorKind> {
        match &self.network {
            Some(recorded) if recorded != network => Err(StateErrorKind::OtherNetwork {
                recorded: crate::spec::quoted(recorded),
                spec: network.to_string(),
            }),
            Some(_) => Ok(()),
            None => {
                self.network = Some(network.to_string());
                Ok(())
            }
        }
    }

    /// The state as pretty JSON (stable: maps are ordered), ending in a newline.
    pub fn to_json(&self) -> Vec<u8> {
        // Every map key is a string or an address (which serializes as a string): this cannot fail.
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// The [`PlanBase`] of a plan computed from this state.
    pub fn plan_base(&self, actual_digest: Option<String>) -> PlanBase {
        PlanBase { lineage: self.lineage.clone(), serial: self.serial, actual_digest }
    }

    /// Whether a plan with `base` was computed from this very version of the state (lineage and
    /// serial; the actual digest is the caller's to compare).
    pub fn is_base_of(&self, base: &PlanBase) -> bool {
        self.lineage == base.lineage && self.serial == base.serial
    }

    /// The highest generation ever used for `address`, by a finished step or an in-flight intent. A
    /// planner making a replacement uses one more than this (and more than any generation it saw).
    pub fn last_generation(&self, address: &Address) -> Option<u32> {
        let intent = self.intents.get(address).and_then(|i| i.generation);
        self.generations.get(address).copied().max(intent)
    }

    /// Prepares the next version: assigns the lineage on the first save and increments the serial.
    ///
    /// # Errors
    /// [`StateErrorKind::SerialExhausted`] when the serial is already `u64::MAX` (a hand-edited file):
    /// wrapping to 0 would make an old plan look current.
    fn advance(&mut self) -> Result<(), StateErrorKind> {
        let serial = self.serial.checked_add(1).ok_or(StateErrorKind::SerialExhausted)?;
        if self.lineage.is_none() {
            self.lineage = Some(new_lineage());
        }
        self.serial = serial;
        self.format_version = STATE_FORMAT_VERSION;
        Ok(())
    }
}

/// A random lineage ID, shaped like a UUID.
fn new_lineage() -> String {
    let hex = format!("{:032x}", rand::random::<u128>());
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// The pinned chain: its ID and the genesis bytes it is the hash of.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainPin {
    /// The chain ID (sha256 of the genesis bytes).
    pub id: ChainId,
    /// The genesis bytes, base64 (standard alphabet, padded).
    pub genesis_b64: String,
}

impl ChainPin {
    /// The pin of a genesis block; the ID is computed from the bytes.
    pub fn new(genesis: &[u8]) -> Self {
        ChainPin {
            id: ChainId::of(genesis),
            genesis_b64: base64::engine::general_purpose::STANDARD.encode(genesis),
        }
    }

    /// The genesis bytes, if they decode and hash to [`ChainPin::id`] (a hand-edited state may not).
    pub fn genesis(&self) -> Option<Vec<u8>> {
        let bytes = base64::engine::general_purpose::STANDARD.decode(&self.genesis_b64).ok()?;
        (ChainId::of(&bytes) == self.id).then_some(bytes)
    }
}

impl fmt::Debug for ChainPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainPin")
            .field("id", &self.id)
            .field("genesis_b64_len", &self.genesis_b64.len())
            .finish()
    }
}

/// A step that was started: the provider may have acted on it even if nothing else was recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    /// What the step does.
    pub action: Action,
    /// The idempotency key the create was sent with (machines); a re-plan reuses it so that a create
    /// the provider already performed returns the existing object.
    pub idempotency_key: Option<String>,
    /// The machine generation the create was sent with.
    pub generation: Option<u32>,
    /// When the step started.
    pub started_at: Timestamp,
}

/// Where state is stored.
///
/// # Guarantees an implementation gives
/// - `write` replaces the stored state as a whole, atomically: a reader or a crash never sees a mix.
/// - A store shared between machines (S3) makes `write` conditional on the version this handle last
///   loaded or wrote: if another writer saved meanwhile, the write fails with
///   [`StateErrorKind::Conflict`] and stores nothing, so a stale run can never overwrite a newer state.
/// - `lock` gives at most one holder at a time; a held lock fails at once (or after
///   [`LockOptions::timeout`]) with [`StateErrorKind::Locked`]/[`StateErrorKind::LockTimeout`] naming
///   the holder. A dead holder's lock is free at once (operating-system lock) or once its lease
///   expired (leased lock, [`StateLock::lease`]), when it may be taken over.
///
/// # Assumptions
/// Callers write only while holding the lock (the executor does).
#[async_trait]
pub trait StateBackend: Send + Sync {
    /// Where the state lives, for messages (a path, a bucket and key).
    fn location(&self) -> String;

    /// Reads the state; a state never saved is [`State::new`].
    async fn load(&self) -> Result<State, StateError>;

    /// Stores `state` exactly as given.
    async fn write(&self, state: &State) -> Result<(), StateError>;

    /// Saves the next version of `state`: assigns the lineage if it has none, increments the serial,
    /// then writes. If the write fails, `state` keeps its previous lineage and serial.
    async fn save(&self, state: &mut State) -> Result<(), StateError> {
        let (lineage, serial) = (state.lineage.clone(), state.serial);
        state.advance().map_err(|kind| StateError::new(self.location(), kind))?;
        let written = self.write(state).await;
        if written.is_err() {
            state.lineage = lineage;
            state.serial = serial;
        }
        written
    }

    /// Saves the next version of `state` like [`StateBackend::save`], given that it differs from the
    /// version last loaded or saved through this handle only in the entries (resource, generation,
    /// intent) of the `touched` addresses and in its small fields (network, chain, secrets, outputs).
    ///
    /// A store that can write only that does ([`LocalStateFile`] appends it to its journal); the
    /// default writes the whole state. Either way the version is durable when this returns, exactly
    /// as after [`StateBackend::save`]: callers rely on it before they act.
    ///
    /// # Assumptions
    /// `touched` names every address whose entry changed since that version. A handle that did not
    /// load or save that version itself cannot know what is stored, and writes the whole state.
    async fn save_touched(&self, state: &mut State, touched: &Touched) -> Result<(), StateError> {
        let _ = touched;
        self.save(state).await
    }

    /// Rewrites what [`StateBackend::save_touched`] stored in pieces as one whole state, if it did
    /// (the local file folds its journal back into the file). `state` must be the version last saved
    /// through this handle; a handle that saved something else does nothing. The default does
    /// nothing.
    ///
    /// Nothing is lost if this fails or never runs: the pieces are read back on every load.
    async fn compact(&self, state: &State) -> Result<(), StateError> {
        let _ = state;
        Ok(())
    }

    /// Takes the lock for `operation` (`apply`, `destroy`, ...).
    async fn lock(&self, operation: &str, options: &LockOptions) -> Result<Box<dyn StateLock>, StateError>;

    /// Removes the lock whoever holds it (`peerfleet force-unlock`); returns the holder it removed.
    async fn force_unlock(&self) -> Result<Option<LockInfo>, StateError>;
}

/// The conventional state path of network `network` declared in the spec file at `spec_path`:
/// `<spec dir>/.peerfleet/<network>.state.json`. Characters other than letters, digits, `-`, `_` and
/// `.` in the name become `_`, so a name can never point outside that directory.
pub fn default_state_path(spec_path: &Path, network: &str) -> PathBuf {
    let dir = match spec_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut name: String = network
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' })
        .collect();
    if name.is_empty() || name.starts_with('.') {
        name.insert(0, '_');
    }
    dir.join(".peerfleet").join(format!("{name}.state.json"))
}

#[cfg(test)]
mod tests;
