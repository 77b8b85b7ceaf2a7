//! The peer protocol: newline-delimited JSON over TCP.
//!
//! Each message is one JSON object on one line of at most [`MAX_MESSAGE`] bytes, tagged by `type`.
//! A connection goes through two phases:
//!
//! 1. **Handshake.** Both sides send [`Message::Hello`] at once (chain ID, node ID, role, protocol
//!    version), then each judges the other's hello and sends its verdict, [`Message::Accept`] or
//!    [`Message::Refuse`] with a reason, then reads the other's verdict. The peer counts only when both
//!    accepted. Exchanging verdicts in both directions means a refusal — above all a chain-ID mismatch —
//!    is logged on both sides with the refusing side's reason, not just seen as a closed socket.
//! 2. **Session.** Every keepalive interval each side sends [`Message::Ping`], answered by
//!    [`Message::Pong`]; a peer silent for three intervals is dropped. [`Message::Bye`] closes with a
//!    reason (shutdown, replaced by a newer connection).

use peerfleet_core::retry::RetryPolicy;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout};

use crate::Role;
use crate::accept::accept_until_shutdown;
use crate::config::{Timing, valid_node_id};
use crate::shutdown::Shutdown;
use crate::state::{Direction, PeerInfo, Shared};

/// Version of this protocol, carried in the hello; peers speaking another version are refused.
pub const PROTOCOL: u32 = 1;
/// Longest message line accepted, newline excluded; longer input closes the connection.
pub const MAX_MESSAGE: usize = 4096;
/// Inbound peer connections served at once.
const MAX_INBOUND: usize = 1024;
/// How long a refusing side waits for the refused peer's verdict.
const VERDICT_GRACE: Duration = Duration::from_millis(500);
/// Silent keepalive intervals after which a peer counts as dead.
const DEAD_AFTER_INTERVALS: u32 = 3;

/// A protocol message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// First message of each side.
    Hello {
        /// [`PROTOCOL`].
        protocol: u32,
        /// The sender's chain ID. Kept as text so a malformed one is refused with a reason.
        chain_id: String,
        /// The sender's node ID.
        node_id: String,
        /// The sender's role.
        role: Role,
    },
    /// Verdict: the hello was acceptable.
    Accept,
    /// Verdict: the hello was refused, and why.
    Refuse {
        /// Human-readable reason, logged by the receiver.
        reason: String,
    },
    /// Keepalive request.
    Ping {
        /// Echoed in the pong.
        seq: u64,
    },
    /// Keepalive answer.
    Pong {
        /// The ping's `seq`.
        seq: u64,
    },
    /// The sender is closing an established session.
    Bye {
        /// Why, logged by the receiver.
        reason: String,
    },
}

/// Why a connection could not continue.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PeerError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("message longer than {MAX_MESSAGE} bytes")]
    TooLarge,
    #[error("connection closed in the middle of a message")]
    Truncated,
    #[error("connection closed by the peer")]
    Closed,
    #[error("undecodable message: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("unexpected {0} message")]
    Unexpected(&'static str),
    #[error("sending timed out")]
    WriteTimeout,
}

/// Reads messages line by line with a size bound.
///
/// `next` is cancel-safe (usable in `select!`): a partial line stays in `line` until the rest arrives.
pub(crate) struct MessageReader<R> {
    inner: BufReader<R>,
    line: Vec<u8>,
}

impl<R: AsyncRead + Unpin> MessageReader<R> {
    pub fn new(inner: R) -> Self {
        MessageReader { inner: BufReader::new(inner), line: Vec::new() }
    }

    /// The next message, or `None` at a clean end of stream.
    pub async fn next(&mut self) -> Result<Option<Message>, PeerError> {
        loop {
            let available = self.inner.fill_buf().await?;
            if available.is_empty() {
                return if self.line.is_empty() { Ok(None) } else { Err(PeerError::Truncated) };
            }
            let newline = available.iter().position(|b| *b == b'\n');
            let take = newline.unwrap_or(available.len());
            if self.line.len() + take > MAX_MESSAGE {
                return Err(PeerError::TooLarge);
            }
            self.line.extend_from_slice(&available[..take]);
            self.inner.consume(take + usize::from(newline.is_some()));
            if newline.is_some() {
                let line = std::mem::take(&mut self.line);
                return Ok(Some(serde_json::from_slice(&line)?));
            }
        }
    }

    async fn expect(&mut self) -> Result<Message, PeerError> {
        self.next().await?.ok_or(PeerError::Closed)
    }
}

/// Writes messages, each bounded in time so a peer that stops reading cannot stall us.
pub(crate) struct MessageWriter<W> {
    inner: W,
    deadline: Duration,
}

impl<W: AsyncWrite + Unpin> MessageWriter<W> {
    pub fn new(inner: W, deadline: Duration) -> Self {
        MessageWriter { inner, deadline }
    }

    pub async fn send(&mut self, message: &Message) -> Result<(), PeerError> {
        let mut line = serde_json::to_vec(message)?;
        line.push(b'\n');
        match timeout(self.deadline, self.inner.write_all(&line)).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(PeerError::WriteTimeout),
        }
    }
}

/// How a handshake ended.
enum Handshake {
    Peered { node_id: String, role: Role },
    Refused { ours: Option<String>, theirs: Option<String> },
}

impl Shared {
    /// This node's verdict on a peer's hello.
    fn judge(&self, hello: &Message, direction: Direction) -> Result<(), String> {
        let Message::Hello { protocol, chain_id, node_id, role } = hello else {
            return Err("the first message was not a hello".into());
        };
        if *protocol != PROTOCOL {
            return Err(format!("protocol version {protocol} offered, this node speaks {PROTOCOL}"));
        }
        if chain_id != self.chain_id.as_str() {
            // Worded so it reads right in either side's log.
            return Err(format!(
                "chain ID mismatch: {} {} is on chain {}, the other side on {chain_id}",
                self.role, self.node_id, self.chain_id
            ));
        }
        valid_node_id(node_id).map_err(|reason| format!("bad node ID: {reason}"))?;
        if *node_id == self.node_id {
            return Err("the peer has this node's own ID (connected to itself?)".into());
        }
        if *role == Role::Genesis {
            return Err("genesis servers do not join the peer network".into());
        }
        if !self.is_ready() {
            return Err("not ready: the genesis is not fetched and verified yet".into());
        }
        // Inbound duplicates replace the old connection (see `Shared::add_peer`); an outbound duplicate
        // means two seeds name the same node, and one connection to it is enough.
        if direction == Direction::Outbound && self.has_peer(node_id) {
            return Err(format!("already connected to {node_id}"));
        }
        Ok(())
    }
}

async fn handshake<R, W>(
    shared: &Shared,
    direction: Direction,
    reader: &mut MessageReader<R>,
    writer: &mut MessageWriter<W>,
) -> Result<Handshake, PeerError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    writer
        .send(&Message::Hello {
            protocol: PROTOCOL,
            chain_id: shared.chain_id.to_string(),
            node_id: shared.node_id.clone(),
            role: shared.role,
        })
        .await?;
    let hello = match reader.expect().await? {
        Message::Refuse { reason } => return Ok(Handshake::Refused { ours: None, theirs: Some(reason) }),
        hello => hello,
    };
    let verdict = shared.judge(&hello, direction);
    let ours = match &verdict {
        Ok(()) => {
            writer.send(&Message::Accept).await?;
            None
        }
        Err(reason) => {
            // Best effort: the peer may already be gone, and we are closing either way.
            let _ = writer.send(&Message::Refuse { reason: reason.clone() }).await;
            Some(reason.clone())
        }
    };
    let theirs = if ours.is_some() {
        // Give the refused peer's own verdict a moment so both reasons reach this side's log, but
        // no more: a peer that never answers must not turn our refusal into a timeout.
        match timeout(VERDICT_GRACE, reader.next()).await {
            Ok(Ok(Some(Message::Refuse { reason }))) => Some(reason),
            _ => None,
        }
    } else {
        match reader.expect().await? {
            Message::Accept => None,
            Message::Refuse { reason } => Some(reason),
            _ => return Err(PeerError::Unexpected("non-verdict")),
        }
    };
    match (ours, theirs, hello) {
        (None, None, Message::Hello { node_id, role, .. }) => Ok(Handshake::Peered { node_id, role }),
        (ours, theirs, _) => Ok(Handshake::Refused { ours, theirs }),
    }
}

/// Runs one connection from handshake to close. Returns whether the handshake succeeded.
async fn connection(
    stream: TcpStream,
    addr: SocketAddr,
    direction: Direction,
    shared: Arc<Shared>,
    timing: Timing,
    mut shutdown: Shutdown,
) -> bool {
    // Messages are tiny and latency-sensitive (keepalive); do not let Nagle hold them back.
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let mut reader = MessageReader::new(read);
    let mut writer = MessageWriter::new(write, timing.handshake_timeout);
    let outcome = tokio::select! {
        () = shutdown.wait() => return false,
        outcome = timeout(timing.handshake_timeout, handshake(&shared, direction, &mut reader, &mut writer)) => outcome,
    };
    let (node_id, role) = match outcome {
        Err(_) => {
            tracing::warn!(%addr, timeout = ?timing.handshake_timeout, "peer handshake timed out");
            return false;
        }
        Ok(Err(e)) => {
            tracing::warn!(%addr, error = %e, "peer handshake failed");
            return false;
        }
        Ok(Ok(Handshake::Refused { ours, theirs })) => {
            if let Some(reason) = &ours {
                tracing::warn!(%addr, %reason, "refused peer");
                shared.record_refusal(true, reason);
            }
            if let Some(reason) = &theirs {
                tracing::warn!(%addr, %reason, "peer refused this node");
                shared.record_refusal(false, reason);
            }
            return false;
        }
        Ok(Ok(Handshake::Peered { node_id, role })) => (node_id, role),
    };
    let guard = shared.add_peer(PeerInfo {
        node_id: node_id.clone(),
        role,
        addr: addr.to_string(),
        direction,
        since_unix_s: None,
    });
    tracing::info!(%addr, peer = %node_id, %role, ?direction, "peered");
    let ended = session(&mut reader, &mut writer, &guard.kick, timing.keepalive, &mut shutdown).await;
    drop(guard);
    tracing::info!(%addr, peer = %node_id, reason = %ended, "peer dropped");
    true
}

/// The established phase: keepalive until the peer dies, leaves, is replaced, or we shut down.
/// Returns why it ended.
async fn session<R, W>(
    reader: &mut MessageReader<R>,
    writer: &mut MessageWriter<W>,
    kick: &tokio::sync::Notify,
    keepalive: Duration,
    shutdown: &mut Shutdown,
) -> String
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut ticker = tokio::time::interval(keepalive);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let mut seq = 0u64;
    let goodbye = |reason: &str| Message::Bye { reason: reason.to_owned() };
    loop {
        tokio::select! {
            () = shutdown.wait() => {
                let _ = writer.send(&goodbye("the peer is shutting down")).await;
                return "this node is shutting down".into();
            }
            () = kick.notified() => {
                let _ = writer.send(&goodbye("replaced by a newer connection from this node")).await;
                return "replaced by a newer connection from the same node".into();
            }
            message = reader.next() => {
                last_heard = Instant::now();
                let reply = match message {
                    Ok(Some(Message::Ping { seq })) => Message::Pong { seq },
                    Ok(Some(Message::Pong { .. })) => continue,
                    Ok(Some(Message::Bye { reason })) => return format!("the peer left: {reason}"),
                    Ok(Some(_)) => return "protocol error: handshake message in an established session".into(),
                    Ok(None) => return PeerError::Closed.to_string(),
                    Err(e) => return e.to_string(),
                };
                if let Err(e) = writer.send(&reply).await {
                    return e.to_string();
                }
            }
            _ = ticker.tick() => {
                if last_heard.elapsed() >= keepalive * DEAD_AFTER_INTERVALS {
                    return format!("silent for {:?}, keepalive timed out", last_heard.elapsed());
                }
                seq += 1;
                if let Err(e) = writer.send(&Message::Ping { seq }).await {
                    return e.to_string();
                }
            }
        }
    }
}

/// Accepts inbound peers until shutdown.
pub(crate) async fn listen(
    listener: TcpListener,
    shared: Arc<Shared>,
    timing: Timing,
    mut shutdown: Shutdown,
) {
    let sessions = shutdown.clone();
    let mut connections =
        accept_until_shutdown(&listener, "peer", MAX_INBOUND, &mut shutdown, |stream, addr| {
            connection(stream, addr, Direction::Inbound, shared.clone(), timing, sessions.clone())
        })
        .await;
    // Sessions see the same shutdown and say goodbye; give them a moment, then drop (abort) the rest.
    let _ = timeout(Duration::from_secs(1), async { while connections.join_next().await.is_some() {} }).await;
}

/// Keeps one outbound connection to `seed` (`host:port`) until shutdown, reconnecting with capped
/// exponential backoff and jitter; a connection that got through the handshake resets the backoff.
pub(crate) async fn dial(seed: String, shared: Arc<Shared>, timing: Timing, mut shutdown: Shutdown) {
    let mut failures = 0u32;
    loop {
        let connected = tokio::select! {
            () = shutdown.wait() => return,
            connected = timeout(timing.handshake_timeout, TcpStream::connect(seed.as_str())) => connected,
        };
        let peered = match connected {
            Ok(Ok(stream)) => match stream.peer_addr() {
                Ok(addr) => {
                    connection(stream, addr, Direction::Outbound, shared.clone(), timing, shutdown.clone())
                        .await
                }
                Err(e) => {
                    tracing::warn!(%seed, error = %e, "connection to seed lost at once");
                    false
                }
            },
            Ok(Err(e)) => {
                tracing::warn!(%seed, error = %e, "cannot connect to seed");
                false
            }
            Err(_) => {
                tracing::warn!(%seed, timeout = ?timing.handshake_timeout, "connecting to seed timed out");
                false
            }
        };
        if shutdown.is_requested() {
            return;
        }
        failures = if peered { 0 } else { failures.saturating_add(1) };
        let delay = backoff(&timing, failures);
        tracing::info!(%seed, ?delay, "reconnecting to seed");
        tokio::select! {
            () = shutdown.wait() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// Delay before retry number `failures` (0 after a success): `initial × 2^failures`, capped at `max`,
/// then a random point in its upper half so many nodes restarting together do not retry in lockstep
/// (peerfleet's one backoff, [`RetryPolicy::delay`]).
pub(crate) fn backoff(timing: &Timing, failures: u32) -> Duration {
    let policy =
        RetryPolicy { base: timing.backoff_initial, cap: timing.backoff_max, ..RetryPolicy::default() };
    policy.delay(failures.saturating_add(1), None, rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ChainId;

    fn timing() -> Timing {
        Timing {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            ..Timing::default()
        }
    }

    #[test]
    fn backoff_doubles_then_caps_and_stays_in_the_jitter_band() {
        let timing = timing();
        for (failures, ceiling_ms) in [(0, 100), (1, 200), (3, 800), (5, 2000), (60, 2000)] {
            for _ in 0..50 {
                let d = backoff(&timing, failures);
                let ceiling = Duration::from_millis(ceiling_ms);
                assert!(
                    d >= ceiling / 2 && d <= ceiling,
                    "failures {failures}: {d:?} outside band of {ceiling:?}"
                );
            }
        }
    }

    #[tokio::test]
    async fn reader_decodes_lines_split_across_reads() {
        let (client, server) = tokio::io::duplex(64);
        let mut writer = MessageWriter::new(client, Duration::from_secs(1));
        let mut reader = MessageReader::new(server);
        let ping = Message::Ping { seq: 7 };
        writer.send(&ping).await.expect("send");
        writer.send(&Message::Accept).await.expect("send");
        drop(writer);
        assert_eq!(reader.next().await.expect("decodes"), Some(ping));
        assert_eq!(reader.next().await.expect("decodes"), Some(Message::Accept));
        assert_eq!(reader.next().await.expect("clean end"), None);
    }

    #[tokio::test]
    async fn reader_refuses_oversized_and_truncated_lines() {
        let long = vec![b'x'; MAX_MESSAGE + 1];
        let mut reader = MessageReader::new(long.as_slice());
        assert!(matches!(reader.next().await, Err(PeerError::TooLarge)));
        let mut reader = MessageReader::new(&b"{\"type\":\"accept\"}"[..]);
        assert!(matches!(reader.next().await, Err(PeerError::Truncated)));
    }

    #[test]
    fn wire_format_is_tagged_json() {
        let hello =
            Message::Hello { protocol: 1, chain_id: "c".into(), node_id: "n".into(), role: Role::Relay };
        let text = serde_json::to_string(&hello).expect("serialises");
        assert_eq!(text, r#"{"type":"hello","protocol":1,"chain_id":"c","node_id":"n","role":"relay"}"#);
    }

    #[test]
    fn judge_refuses_wrong_chain_self_genesis_and_unready() {
        let shared = Shared::new(Role::Master, ChainId::of(b"a"), "me".into());
        let hello = |chain: &ChainId, id: &str, role| Message::Hello {
            protocol: PROTOCOL,
            chain_id: chain.to_string(),
            node_id: id.into(),
            role,
        };
        let ours = ChainId::of(b"a");
        let ok = hello(&ours, "relay-1", Role::Relay);
        assert!(shared.judge(&ok, Direction::Inbound).unwrap_err().starts_with("not ready"));
        shared.set_ready();
        assert_eq!(shared.judge(&ok, Direction::Inbound), Ok(()));
        let other = hello(&ChainId::of(b"b"), "relay-1", Role::Relay);
        assert!(shared.judge(&other, Direction::Inbound).unwrap_err().starts_with("chain ID mismatch"));
        assert!(shared.judge(&hello(&ours, "me", Role::Relay), Direction::Inbound).is_err());
        assert!(shared.judge(&hello(&ours, "g", Role::Genesis), Direction::Inbound).is_err());
        assert!(shared.judge(&hello(&ours, "bad id", Role::Relay), Direction::Inbound).is_err());
    }
}
