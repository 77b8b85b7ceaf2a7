//! Running a node: binding its ports, then the role's tasks until shutdown.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tracing::Instrument;

use crate::config::{Config, GenesisBytes, RoleConfig, Timing};
use crate::http::{self, Handler, HttpUrl, Response};
use crate::shutdown::{self, Shutdown, Trigger};
use crate::state::{Shared, Status};
use crate::{ChainId, peer};

/// Largest genesis document a master or relay accepts.
pub const MAX_GENESIS: usize = 16 * 1024 * 1024;

/// Why a node refused to start or stopped on its own.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The genesis role was given bytes that are not the pinned chain's.
    #[error("refusing to serve: GENESIS_B64 hashes to {actual}, but CHAIN_ID is {expected}")]
    GenesisNotPinned {
        /// `CHAIN_ID`.
        expected: ChainId,
        /// sha256 of the given bytes.
        actual: ChainId,
    },
    /// The fetched genesis is not the pinned chain's.
    #[error("refusing to start: the genesis from {url} hashes to {actual}, but CHAIN_ID is {expected}")]
    GenesisMismatch {
        /// Where it came from.
        url: String,
        /// `CHAIN_ID`.
        expected: ChainId,
        /// sha256 of the fetched bytes.
        actual: ChainId,
    },
    /// A listening port could not be bound.
    #[error("cannot listen on {addr} for {purpose}: {source}")]
    Bind {
        /// What the port is for.
        purpose: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The node's task panicked (a bug); the message is the panic's.
    #[error("node task failed: {0}")]
    Crashed(String),
}

/// A running node: its bound addresses, its live status, and the means to stop it.
/// Dropping the handle stops the node as well.
pub struct Node {
    shared: Arc<Shared>,
    fetch_addr: Option<SocketAddr>,
    peer_addr: Option<SocketAddr>,
    status_addr: Option<SocketAddr>,
    trigger: Trigger,
    task: JoinHandle<Result<(), NodeError>>,
}

impl Node {
    /// Verifies what can be verified locally, binds the role's ports, and starts the role.
    ///
    /// The genesis fetch of master and relay happens afterwards, in the background: their status port
    /// answers (`ready: false`) while it is retried, and a master refuses peers until it is verified.
    ///
    /// # Errors
    /// [`NodeError::GenesisNotPinned`] (genesis role) or [`NodeError::Bind`].
    pub async fn start(config: Config) -> Result<Node, NodeError> {
        let role_name = config.role();
        let Config { chain_id, node_id, role, listen_ip, ports, timing } = config;
        // Every log line of the node carries its role and ID: several nodes may share one log (tests,
        // embedding), and container logs are often aggregated.
        let span = tracing::info_span!("node", role = %role_name, id = %node_id);
        let shared = Arc::new(Shared::new(role_name, chain_id.clone(), node_id));
        let (trigger, shutdown) = shutdown::channel();
        let bind = |purpose: &'static str, port: u16| async move {
            let addr = SocketAddr::new(listen_ip, port);
            let listener =
                TcpListener::bind(addr).await.map_err(|source| NodeError::Bind { purpose, addr, source })?;
            let bound = listener.local_addr().map_err(|source| NodeError::Bind { purpose, addr, source })?;
            Ok::<_, NodeError>((listener, bound))
        };
        let (fetch_addr, peer_addr, status_addr);
        let task = match role {
            RoleConfig::Genesis { genesis } => {
                let actual = ChainId::of(genesis.as_bytes());
                if actual != chain_id {
                    return Err(NodeError::GenesisNotPinned { expected: chain_id, actual });
                }
                let (listener, addr) = bind("the genesis fetch port", ports.fetch).await?;
                (fetch_addr, peer_addr, status_addr) = (Some(addr), None, None);
                shared.set_ready();
                let handler = genesis_handler(genesis, shared.clone());
                let serve = async move {
                    http::serve(listener, handler, shutdown).await;
                    Ok(())
                };
                tokio::spawn(serve.instrument(span.clone()))
            }
            RoleConfig::Master { genesis_url } => {
                let (status_listener, status) = bind("the status port", ports.status).await?;
                let (peer_listener, peer) = bind("the peer port", ports.peer).await?;
                (fetch_addr, peer_addr, status_addr) = (None, Some(peer), Some(status));
                let mut tasks = JoinSet::new();
                let status = http::serve(status_listener, status_handler(shared.clone()), shutdown.clone());
                tasks.spawn(status.instrument(span.clone()));
                let peers = peer::listen(peer_listener, shared.clone(), timing, shutdown.clone());
                tasks.spawn(peers.instrument(span.clone()));
                let role = run_peer_role(shared.clone(), genesis_url, Vec::new(), timing, tasks, shutdown);
                tokio::spawn(role.instrument(span.clone()))
            }
            RoleConfig::Relay { genesis_url, seeds } => {
                let (status_listener, status) = bind("the status port", ports.status).await?;
                (fetch_addr, peer_addr, status_addr) = (None, None, Some(status));
                let mut tasks = JoinSet::new();
                let status = http::serve(status_listener, status_handler(shared.clone()), shutdown.clone());
                tasks.spawn(status.instrument(span.clone()));
                let role = run_peer_role(shared.clone(), genesis_url, seeds, timing, tasks, shutdown);
                tokio::spawn(role.instrument(span.clone()))
            }
        };
        span.in_scope(|| {
            tracing::info!(
                chain_id = %shared.chain_id,
                fetch = ?fetch_addr,
                peer = ?peer_addr,
                status = ?status_addr,
                "node started"
            )
        });
        Ok(Node { shared, fetch_addr, peer_addr, status_addr, trigger, task })
    }

    /// Where the genesis role serves `/genesis.json`, `/chain_id` and `/status`.
    pub fn fetch_addr(&self) -> Option<SocketAddr> {
        self.fetch_addr
    }

    /// Where the master accepts peers.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer_addr
    }

    /// Where master and relay serve `/status`.
    pub fn status_addr(&self) -> Option<SocketAddr> {
        self.status_addr
    }

    /// The node's current status, as `/status` would report it.
    pub fn status(&self) -> Status {
        self.shared.status()
    }

    /// Stops the node and waits for its tasks to end; peers are sent a goodbye.
    ///
    /// # Errors
    /// The error the node had already stopped with, if any.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        let _ = self.trigger.send(true);
        join(self.task).await
    }

    /// Waits until the node stops on its own, which happens only on an error (e.g. a genesis mismatch).
    ///
    /// # Errors
    /// Why it stopped.
    pub async fn wait(self) -> Result<(), NodeError> {
        let Node { task, trigger, .. } = self;
        let result = join(task).await;
        drop(trigger);
        result
    }
}

async fn join(task: JoinHandle<Result<(), NodeError>>) -> Result<(), NodeError> {
    task.await.map_err(|e| NodeError::Crashed(e.to_string()))?
}

/// Runs the node configured by `config` until `shutdown` resolves (e.g. on SIGTERM) or it fails.
///
/// # Errors
/// See [`Node::start`] and [`Node::wait`].
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), NodeError> {
    let mut node = Node::start(config).await?;
    tokio::select! {
        () = shutdown => {
            tracing::info!("shutting down");
            node.shutdown().await
        }
        result = &mut node.task => {
            result.map_err(|e| NodeError::Crashed(e.to_string()))?
        }
    }
}

/// Master and relay: fetch and verify the genesis, become ready, start dialing seeds, serve until shutdown.
async fn run_peer_role(
    shared: Arc<Shared>,
    genesis_url: HttpUrl,
    seeds: Vec<String>,
    timing: Timing,
    mut tasks: JoinSet<()>,
    mut shutdown: Shutdown,
) -> Result<(), NodeError> {
    if fetch_genesis(&genesis_url, &shared.chain_id, &timing, &mut shutdown).await?.is_none() {
        return Ok(());
    }
    shared.set_ready();
    for seed in seeds {
        tasks.spawn(peer::dial(seed, shared.clone(), timing, shutdown.clone()).in_current_span());
    }
    shutdown.wait().await;
    // Every task watches the same shutdown and ends promptly (peer sessions send a goodbye first).
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Fetches the genesis until it arrives, with capped backoff; `Ok(None)` if shut down first.
async fn fetch_genesis(
    url: &HttpUrl,
    chain_id: &ChainId,
    timing: &Timing,
    shutdown: &mut Shutdown,
) -> Result<Option<Vec<u8>>, NodeError> {
    let mut failures = 0u32;
    loop {
        let attempt = tokio::select! {
            () = shutdown.wait() => return Ok(None),
            attempt = tokio::time::timeout(timing.http_timeout, http::get(url, MAX_GENESIS)) => attempt,
        };
        let error = match attempt {
            Ok(Ok(bytes)) => {
                let actual = ChainId::of(&bytes);
                if actual != *chain_id {
                    return Err(NodeError::GenesisMismatch {
                        url: url.to_string(),
                        expected: chain_id.clone(),
                        actual,
                    });
                }
                tracing::info!(%url, bytes = bytes.len(), %chain_id, "genesis fetched and verified");
                return Ok(Some(bytes));
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {:?}", timing.http_timeout),
        };
        failures = failures.saturating_add(1);
        let delay = peer::backoff(timing, failures);
        tracing::warn!(%url, %error, retry_in = ?delay, "genesis not available yet");
        tokio::select! {
            () = shutdown.wait() => return Ok(None),
            () = tokio::time::sleep(delay) => {}
        }
    }
}

fn status_json(shared: &Shared) -> Response {
    match serde_json::to_vec(&shared.status()) {
        Ok(body) => Response::ok("application/json", body),
        Err(_) => Response::error(500),
    }
}

fn status_handler(shared: Arc<Shared>) -> Handler {
    Arc::new(move |path| match path {
        "/status" => status_json(&shared),
        "/metrics" => metrics(&shared),
        _ => Response::error(404),
    })
}

fn metrics(shared: &Shared) -> Response {
    Response::ok("text/plain; version=0.0.4; charset=utf-8", crate::metrics::render(shared).into_bytes())
}

fn genesis_handler(genesis: GenesisBytes, shared: Arc<Shared>) -> Handler {
    Arc::new(move |path| match path {
        "/genesis.json" => {
            shared.record_genesis_served(genesis.as_bytes().len());
            Response::ok("application/json", genesis.as_bytes().to_vec())
        }
        // Exactly the 64 characters, no newline, so clients can compare the body as is.
        "/chain_id" => Response::ok("text/plain; charset=utf-8", shared.chain_id.to_string().into_bytes()),
        "/status" => status_json(&shared),
        "/metrics" => metrics(&shared),
        _ => Response::error(404),
    })
}
