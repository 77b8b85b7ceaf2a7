//! What a node knows about itself and its peers, and the `/status` document built from it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::{ChainId, Role};

/// Which side opened a peer connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The peer connected to this node.
    Inbound,
    /// This node connected to the peer.
    Outbound,
}

/// A peer that completed the handshake and is still alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// The peer's node ID.
    pub node_id: String,
    /// The peer's role.
    pub role: Role,
    /// The remote socket address of the connection.
    pub addr: String,
    /// Who connected to whom.
    pub direction: Direction,
    /// When the handshake completed, in seconds since the Unix epoch (set by the node when the peer is
    /// added; absent from other node implementations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_unix_s: Option<u64>,
}

/// Refused handshakes, so a chain-ID mismatch is visible without reading logs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusals {
    /// Handshakes this node refused.
    pub refused: u64,
    /// Handshakes a peer refused.
    pub refused_by_peers: u64,
    /// The most recent reason, either way.
    pub last_reason: Option<String>,
}

/// The `GET /status` document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The node's role.
    pub role: Role,
    /// The pinned chain ID.
    pub chain_id: ChainId,
    /// The node's ID.
    pub node_id: String,
    /// Genesis role: serving; master and relay: the genesis was fetched and verified.
    pub ready: bool,
    /// Live peers, sorted by node ID.
    pub peers: Vec<PeerInfo>,
    /// Refused handshakes (absent from other node implementations, hence the default).
    #[serde(default)]
    pub refusals: Refusals,
    /// Seconds since the node started (absent from other node implementations).
    #[serde(default)]
    pub uptime_s: u64,
}

/// Counters for `GET /metrics`, kept since the node started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Handshakes that completed (a peer was added).
    pub accepted: u64,
    /// Refused handshakes, either side, by [`refusal_kind`].
    pub refused: BTreeMap<&'static str, u64>,
    /// Bytes of genesis served on `/genesis.json`.
    pub genesis_bytes: u64,
}

/// A refusal reason as a metric label: the reasons are free text naming chain IDs and node IDs, too
/// many values for a label, so they are grouped by what went wrong.
pub fn refusal_kind(reason: &str) -> &'static str {
    let r = reason.to_ascii_lowercase();
    if r.contains("chain") {
        "chain_mismatch"
    } else if r.contains("node id") {
        "bad_node_id"
    } else if r.contains("role") {
        "role"
    } else if r.contains("version") || r.contains("protocol") {
        "protocol"
    } else {
        "other"
    }
}

struct PeerEntry {
    info: PeerInfo,
    connection: u64,
    kick: Arc<Notify>,
}

/// State shared by a node's tasks. Locks are held only for map updates, never across `.await`.
pub(crate) struct Shared {
    pub role: Role,
    pub chain_id: ChainId,
    pub node_id: String,
    ready: AtomicBool,
    peers: Mutex<BTreeMap<String, PeerEntry>>,
    refusals: Mutex<Refusals>,
    next_connection: AtomicU64,
    started: Instant,
    counters: Mutex<Counters>,
}

/// Membership of one connection in the peer table; dropping it removes the entry (unless a newer
/// connection from the same node replaced it meanwhile).
pub(crate) struct PeerGuard {
    shared: Arc<Shared>,
    node_id: String,
    connection: u64,
    /// Notified when a newer connection from the same node replaces this one.
    pub kick: Arc<Notify>,
}

impl Drop for PeerGuard {
    fn drop(&mut self) {
        let mut peers = lock(&self.shared.peers);
        if peers.get(&self.node_id).is_some_and(|e| e.connection == self.connection) {
            peers.remove(&self.node_id);
        }
    }
}

// A panic while holding these locks cannot leave the maps half-updated (each update is one call),
// so a poisoned lock is still consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub fn new(role: Role, chain_id: ChainId, node_id: String) -> Shared {
        Shared {
            role,
            chain_id,
            node_id,
            ready: AtomicBool::new(false),
            peers: Mutex::default(),
            refusals: Mutex::default(),
            next_connection: AtomicU64::new(0),
            started: Instant::now(),
            counters: Mutex::default(),
        }
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn has_peer(&self, node_id: &str) -> bool {
        lock(&self.peers).contains_key(node_id)
    }

    /// Adds a peer; a previous connection from the same node ID is told to close, since a node that
    /// reconnects knows better than our keepalive that its old connection is dead.
    pub fn add_peer(self: &Arc<Self>, mut info: PeerInfo) -> PeerGuard {
        info.since_unix_s = SystemTime::now().duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs());
        lock(&self.counters).accepted += 1;
        let connection = self.next_connection.fetch_add(1, Ordering::Relaxed);
        let kick = Arc::new(Notify::new());
        let node_id = info.node_id.clone();
        let entry = PeerEntry { info, connection, kick: kick.clone() };
        if let Some(old) = lock(&self.peers).insert(node_id.clone(), entry) {
            old.kick.notify_one();
        }
        PeerGuard { shared: self.clone(), node_id, connection, kick }
    }

    pub fn record_refusal(&self, by_us: bool, reason: &str) {
        let mut refusals = lock(&self.refusals);
        if by_us {
            refusals.refused += 1;
        } else {
            refusals.refused_by_peers += 1;
        }
        refusals.last_reason = Some(reason.to_owned());
        *lock(&self.counters).refused.entry(refusal_kind(reason)).or_default() += 1;
    }

    pub fn record_genesis_served(&self, bytes: usize) {
        lock(&self.counters).genesis_bytes += u64::try_from(bytes).unwrap_or(u64::MAX);
    }

    pub fn counters(&self) -> Counters {
        lock(&self.counters).clone()
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn status(&self) -> Status {
        Status {
            role: self.role,
            chain_id: self.chain_id.clone(),
            node_id: self.node_id.clone(),
            ready: self.is_ready(),
            peers: lock(&self.peers).values().map(|e| e.info.clone()).collect(),
            refusals: lock(&self.refusals).clone(),
            uptime_s: self.uptime().as_secs(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Arc<Shared> {
        Arc::new(Shared::new(Role::Master, ChainId::of(b"g"), "me".into()))
    }

    fn peer(id: &str) -> PeerInfo {
        PeerInfo {
            node_id: id.into(),
            role: Role::Relay,
            addr: "127.0.0.1:1".into(),
            direction: Direction::Inbound,
            since_unix_s: None,
        }
    }

    #[test]
    fn dropping_the_guard_removes_the_peer() {
        let shared = shared();
        let guard = shared.add_peer(peer("a"));
        let peers = shared.status().peers;
        assert_eq!(peers.len(), 1);
        assert!(peers[0].since_unix_s.is_some(), "the node stamps when the peer joined");
        assert_eq!(shared.counters().accepted, 1);
        drop(guard);
        assert!(shared.status().peers.is_empty());
    }

    #[tokio::test]
    async fn reconnect_from_same_node_kicks_the_old_connection_and_survives_its_cleanup() {
        let shared = shared();
        let old = shared.add_peer(peer("a"));
        let new = shared.add_peer(peer("a"));
        tokio::time::timeout(std::time::Duration::from_secs(1), old.kick.notified())
            .await
            .expect("old connection was told to close");
        drop(old);
        assert!(shared.has_peer("a"), "the old connection's cleanup removed the new entry");
        drop(new);
        assert!(!shared.has_peer("a"));
    }
}
