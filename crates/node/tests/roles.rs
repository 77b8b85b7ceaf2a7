//! The three roles end to end, in-process on 127.0.0.1 with OS-chosen ports: real TCP, real HTTP.
//! Every wait is bounded; polling (not sleeping) is the only synchronisation.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use peerfleet_node::http::{self, HttpError};
use peerfleet_node::peer::{Message, PROTOCOL};
use peerfleet_node::{
    ChainId, Config, Direction, HttpUrl, Node, NodeError, Ports, Role, Status, Timing, new_genesis, probe,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout};

/// Upper bound for anything a test waits for.
const WAIT: Duration = Duration::from_secs(10);

fn logs() {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("peerfleet_node=debug").try_init();
}

/// Short timers so reconnects and dead-peer detection happen within a test's patience.
fn fast_timing() -> Timing {
    Timing {
        keepalive: Duration::from_millis(200),
        handshake_timeout: Duration::from_secs(2),
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(400),
        http_timeout: Duration::from_secs(2),
    }
}

fn on_loopback(mut config: Config) -> Config {
    config.listen_ip = Ipv4Addr::LOCALHOST.into();
    config.ports = Ports::EPHEMERAL;
    config.timing = fast_timing();
    config
}

fn url(addr: SocketAddr, path: &str) -> HttpUrl {
    HttpUrl { host: addr.ip().to_string(), port: addr.port(), path: path.into() }
}

async fn start(config: Config) -> Node {
    timeout(WAIT, Node::start(config)).await.expect("start within the bound").expect("node starts")
}

/// Starts a node on a port it must get back (a restart): another test's short-lived connection can
/// hold that number as its ephemeral source port for a moment, so retry the bind, boundedly.
async fn start_on_known_port(config: Config) -> Node {
    eventually("the known port to be free again", || async {
        match Node::start(config.clone()).await {
            Ok(node) => Some(node),
            Err(NodeError::Bind { .. }) => None,
            Err(e) => panic!("node failed to start: {e}"),
        }
    })
    .await
}

/// A genesis node serving a fresh genesis; returns it, its bytes and its `/genesis.json` URL.
async fn genesis_node(name: &str) -> (Node, Vec<u8>, HttpUrl) {
    let bytes = new_genesis(name);
    let node = start(on_loopback(Config::genesis(ChainId::of(&bytes), bytes.clone()))).await;
    let fetch = node.fetch_addr().expect("genesis has a fetch port");
    (node, bytes, url(fetch, "/genesis.json"))
}

async fn master_node(chain_id: ChainId, genesis_url: HttpUrl) -> Node {
    start(on_loopback(Config::master(chain_id, genesis_url))).await
}

async fn relay_node(chain_id: ChainId, genesis_url: HttpUrl, master: &Node) -> Node {
    let seed = master.peer_addr().expect("master has a peer port").to_string();
    start(on_loopback(Config::relay(chain_id, genesis_url, vec![seed]))).await
}

async fn get(addr: SocketAddr, path: &str) -> Result<Vec<u8>, HttpError> {
    timeout(WAIT, http::get(&url(addr, path), 1 << 20)).await.expect("HTTP answer within the bound")
}

async fn status(node: &Node) -> Status {
    let addr = node.status_addr().or(node.fetch_addr()).expect("node serves /status");
    let body = get(addr, "/status").await.expect("GET /status");
    serde_json::from_slice(&body).expect("status is a status document")
}

/// Polls `check` until it returns `Some`, failing the test after [`WAIT`] with `what`.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {WAIT:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The probe's view of a running node: its config with the ports it actually bound.
fn probe_config(mut config: Config, node: &Node) -> Config {
    config.ports = Ports {
        fetch: node.fetch_addr().map_or(0, |a| a.port()),
        peer: node.peer_addr().map_or(0, |a| a.port()),
        status: node.status_addr().map_or(0, |a| a.port()),
    };
    config
}

#[tokio::test]
async fn genesis_serves_exact_bytes_chain_id_and_status() {
    logs();
    let (node, bytes, _) = genesis_node("exact").await;
    let fetch = node.fetch_addr().expect("fetch port");
    assert_eq!(get(fetch, "/genesis.json").await.expect("genesis"), bytes);
    let chain_id = ChainId::of(&bytes);
    assert_eq!(get(fetch, "/chain_id").await.expect("chain id"), chain_id.as_str().as_bytes());
    let status = status(&node).await;
    assert_eq!((status.role, &status.chain_id, status.ready), (Role::Genesis, &chain_id, true));
    assert!(status.peers.is_empty());
    assert!(matches!(get(fetch, "/nothing").await, Err(HttpError::Status(404))));
    assert_eq!(node.peer_addr(), None, "the genesis role never listens for peers");
    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn genesis_with_a_chain_id_that_is_not_its_hash_refuses_to_start() {
    let bytes = new_genesis("pinned");
    let wrong = ChainId::of(b"another genesis");
    let err = Node::start(on_loopback(Config::genesis(wrong.clone(), bytes.clone()))).await.err();
    match err {
        Some(NodeError::GenesisNotPinned { expected, actual }) => {
            assert_eq!((expected, actual), (wrong, ChainId::of(&bytes)));
        }
        other => panic!("expected GenesisNotPinned, got {other:?}"),
    }
}

#[tokio::test]
async fn master_waits_for_the_genesis_server_then_verifies_and_becomes_ready() {
    logs();
    // Hold a port with a listener that closes every connection unanswered: the genesis server is
    // "not up yet". The master keeps retrying against it.
    let placeholder = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind");
    let genesis_addr = placeholder.local_addr().expect("addr");
    let bytes = new_genesis("late");
    let chain_id = ChainId::of(&bytes);
    let master = master_node(chain_id.clone(), url(genesis_addr, "/genesis.json")).await;
    for _ in 0..2 {
        let (refused, _) =
            timeout(WAIT, placeholder.accept()).await.expect("master retries").expect("accept");
        drop(refused);
    }
    let early = status(&master).await;
    assert!(!early.ready, "ready before any genesis was served: {early:?}");

    drop(placeholder);
    let mut config = on_loopback(Config::genesis(chain_id.clone(), bytes));
    config.ports.fetch = genesis_addr.port();
    let genesis = start_on_known_port(config).await;
    let ready = eventually("the master to fetch and verify the genesis", || async {
        Some(status(&master).await).filter(|s| s.ready)
    })
    .await;
    assert_eq!((ready.role, ready.chain_id), (Role::Master, chain_id));
    master.shutdown().await.expect("clean shutdown");
    genesis.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn master_refuses_to_run_on_a_genesis_that_does_not_hash_to_its_chain_id() {
    logs();
    let (genesis, bytes, genesis_url) = genesis_node("served").await;
    let pinned = ChainId::of(b"the genesis the master was told about");
    let master = master_node(pinned.clone(), genesis_url).await;
    let result = timeout(WAIT, master.wait()).await.expect("the master stops by itself");
    match result {
        Err(NodeError::GenesisMismatch { expected, actual, .. }) => {
            assert_eq!((expected, actual), (pinned, ChainId::of(&bytes)));
        }
        other => panic!("expected GenesisMismatch, got {other:?}"),
    }
    genesis.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn relay_peers_with_master_and_both_statuses_show_it() {
    logs();
    let (genesis, bytes, genesis_url) = genesis_node("peering").await;
    let chain_id = ChainId::of(&bytes);
    let master = master_node(chain_id.clone(), genesis_url.clone()).await;
    let relay = relay_node(chain_id.clone(), genesis_url, &master).await;
    let (master_id, relay_id) = (master.status().node_id, relay.status().node_id);

    let relay_view = eventually("the relay to list the master", || async {
        status(&relay).await.peers.into_iter().find(|p| p.node_id == master_id)
    })
    .await;
    assert_eq!((relay_view.role, relay_view.direction), (Role::Master, Direction::Outbound));
    assert_eq!(relay_view.addr, master.peer_addr().expect("peer port").to_string());
    let master_view = eventually("the master to list the relay", || async {
        status(&master).await.peers.into_iter().find(|p| p.node_id == relay_id)
    })
    .await;
    assert_eq!((master_view.role, master_view.direction), (Role::Relay, Direction::Inbound));
    let master_status = status(&master).await;
    assert_eq!((master_status.chain_id, master_status.refusals.refused), (chain_id, 0));

    // Several keepalive rounds later the peering still stands.
    tokio::time::sleep(fast_timing().keepalive * 5).await;
    assert_eq!(status(&relay).await.peers.len(), 1);
    assert_eq!(status(&master).await.peers.len(), 1);

    relay.shutdown().await.expect("clean shutdown");
    eventually("the master to drop the departed relay", || async {
        status(&master).await.peers.is_empty().then_some(())
    })
    .await;
    master.shutdown().await.expect("clean shutdown");
    genesis.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn relay_on_another_chain_is_refused_and_both_sides_record_why() {
    logs();
    let (genesis, bytes, genesis_url) = genesis_node("ours").await;
    let master = master_node(ChainId::of(&bytes), genesis_url).await;
    // The stranger is fully consistent with its own chain, so only the handshake can catch it.
    let (their_genesis, their_bytes, their_url) = genesis_node("theirs").await;
    let stranger_chain = ChainId::of(&their_bytes);
    let stranger = relay_node(stranger_chain.clone(), their_url, &master).await;
    let stranger_config = Config::relay(stranger_chain, url(master.peer_addr().expect("peer"), "/"), vec![]);

    let master_side = eventually("the master to refuse the stranger", || async {
        Some(status(&master).await.refusals).filter(|r| r.refused >= 1)
    })
    .await;
    let stranger_side = eventually("the stranger to hear the master's refusal", || async {
        Some(status(&stranger).await.refusals).filter(|r| r.refused_by_peers >= 1)
    })
    .await;
    for reason in [&master_side.last_reason, &stranger_side.last_reason] {
        let reason = reason.as_deref().unwrap_or_default();
        assert!(reason.starts_with("chain ID mismatch"), "reason: {reason:?}");
    }
    assert!(status(&master).await.peers.is_empty(), "a refused node must not count as a peer");
    assert!(status(&stranger).await.peers.is_empty(), "a refused node must not count as a peer");
    let unhealthy =
        probe(&probe_config(stranger_config, &stranger)).await.expect_err("stranger is not healthy");
    assert!(unhealthy.contains("chain ID mismatch"), "{unhealthy}");

    for node in [stranger, master, their_genesis, genesis] {
        node.shutdown().await.expect("clean shutdown");
    }
}

#[tokio::test]
async fn relay_re_peers_after_the_master_restarts() {
    logs();
    let (genesis, bytes, genesis_url) = genesis_node("restart").await;
    let chain_id = ChainId::of(&bytes);
    let master = master_node(chain_id.clone(), genesis_url.clone()).await;
    let peer_addr = master.peer_addr().expect("peer port");
    let relay = relay_node(chain_id.clone(), genesis_url.clone(), &master).await;
    let first_id = master.status().node_id;
    eventually("the first peering", || async {
        status(&relay).await.peers.iter().any(|p| p.node_id == first_id).then_some(())
    })
    .await;

    master.shutdown().await.expect("clean shutdown");
    let mut config = on_loopback(Config::master(chain_id, genesis_url));
    config.ports.peer = peer_addr.port();
    let restarted = start_on_known_port(config).await;
    let second_id = restarted.status().node_id;
    let started = Instant::now();
    let peers = eventually("the relay to re-peer with the restarted master", || async {
        let peers = status(&relay).await.peers;
        peers.iter().any(|p| p.node_id == second_id).then_some(peers)
    })
    .await;
    assert_eq!(peers.len(), 1, "the old master must be gone from the relay's peers: {peers:?}");
    // Backoff is capped at 400 ms here; re-peering must not take many multiples of that.
    assert!(started.elapsed() < Duration::from_secs(3), "re-peering took {:?}", started.elapsed());

    for node in [relay, restarted, genesis] {
        node.shutdown().await.expect("clean shutdown");
    }
}

/// Speaks the peer protocol by hand, then goes silent as a crashed host would (no FIN, no pings).
#[tokio::test]
async fn silent_peer_is_dropped_after_three_keepalive_intervals() {
    logs();
    let (genesis, bytes, genesis_url) = genesis_node("keepalive").await;
    let chain_id = ChainId::of(&bytes);
    let master = master_node(chain_id.clone(), genesis_url).await;
    eventually("the master to be ready", || async { status(&master).await.ready.then_some(()) }).await;

    let stream = TcpStream::connect(master.peer_addr().expect("peer port")).await.expect("connect");
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut send = async |message: Message| {
        let mut line = serde_json::to_vec(&message).expect("serialises");
        line.push(b'\n');
        write.write_all(&line).await.expect("write");
    };
    let hello = Message::Hello {
        protocol: PROTOCOL,
        chain_id: chain_id.to_string(),
        node_id: "mute".into(),
        role: Role::Relay,
    };
    send(hello).await;
    send(Message::Accept).await;
    let mut next = async || -> Message {
        let line = timeout(WAIT, lines.next_line()).await.expect("bounded").expect("read").expect("open");
        serde_json::from_str(&line).expect("a protocol message")
    };
    assert!(matches!(next().await, Message::Hello { .. }));
    assert_eq!(next().await, Message::Accept);
    eventually("the master to list the mute peer", || async {
        status(&master).await.peers.iter().any(|p| p.node_id == "mute").then_some(())
    })
    .await;
    let listed = Instant::now();
    eventually("the master to drop the mute peer", || async {
        status(&master).await.peers.is_empty().then_some(())
    })
    .await;
    let keepalive = fast_timing().keepalive;
    assert!(listed.elapsed() >= keepalive * 2, "dropped too early: {:?}", listed.elapsed());

    master.shutdown().await.expect("clean shutdown");
    genesis.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn oversized_message_closes_the_connection_without_peering() {
    logs();
    let (genesis, bytes, genesis_url) = genesis_node("oversized").await;
    let master = master_node(ChainId::of(&bytes), genesis_url).await;
    let mut stream = TcpStream::connect(master.peer_addr().expect("peer port")).await.expect("connect");
    let flood = vec![b'x'; peerfleet_node::peer::MAX_MESSAGE * 4];
    // The master may close mid-write; only its reaction matters.
    let _ = stream.write_all(&flood).await;
    let mut rest = Vec::new();
    let closed = timeout(WAIT, tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut rest)).await;
    assert!(closed.is_ok(), "the master kept an oversized sender connected");
    assert!(status(&master).await.peers.is_empty());
    master.shutdown().await.expect("clean shutdown");
    genesis.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn probe_passes_and_fails_for_each_role_as_specified() {
    logs();
    // Genesis: healthy when serving its pinned chain; unhealthy when asked about another chain.
    let (genesis, bytes, genesis_url) = genesis_node("probe").await;
    let chain_id = ChainId::of(&bytes);
    let genesis_config = probe_config(Config::genesis(chain_id.clone(), bytes.clone()), &genesis);
    assert_eq!(probe(&genesis_config).await, Ok(()));
    let other = ChainId::of(b"other");
    let wrong = Config { chain_id: other.clone(), ..genesis_config.clone() };
    assert!(probe(&wrong).await.expect_err("wrong chain").contains("expected"));

    // Master: unhealthy while its genesis is unavailable, healthy once verified.
    let unreachable = url(SocketAddr::from((Ipv4Addr::LOCALHOST, 1)), "/genesis.json");
    let waiting = master_node(chain_id.clone(), unreachable.clone()).await;
    let waiting_config = probe_config(Config::master(chain_id.clone(), unreachable), &waiting);
    assert!(probe(&waiting_config).await.expect_err("not ready").starts_with("not ready"));
    waiting.shutdown().await.expect("clean shutdown");

    let master = master_node(chain_id.clone(), genesis_url.clone()).await;
    let master_config = probe_config(Config::master(chain_id.clone(), genesis_url.clone()), &master);
    eventually("the master probe to pass", || async { probe(&master_config).await.ok() }).await;
    let other_master = Config { chain_id: other, ..master_config.clone() };
    assert!(probe(&other_master).await.expect_err("wrong chain").contains("chain ID"));

    // Relay: healthy only when peered with the master; unhealthy after the master goes away.
    let relay = relay_node(chain_id.clone(), genesis_url.clone(), &master).await;
    let seed = master.peer_addr().expect("peer").to_string();
    let relay_config = probe_config(Config::relay(chain_id.clone(), genesis_url, vec![seed]), &relay);
    eventually("the relay probe to pass", || async { probe(&relay_config).await.ok() }).await;
    master.shutdown().await.expect("clean shutdown");
    let why = eventually("the relay probe to fail", || async { probe(&relay_config).await.err() }).await;
    assert!(why.starts_with("not peered with a master"), "{why}");

    // Nothing listening at all.
    relay.shutdown().await.expect("clean shutdown");
    genesis.shutdown().await.expect("clean shutdown");
    assert!(probe(&relay_config).await.is_err());
    assert!(probe(&genesis_config).await.is_err());
}

#[tokio::test]
async fn probe_gives_up_within_its_deadline_when_the_node_never_answers() {
    // A listener that never accepts: connects succeed (backlog), answers never come.
    let mute = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind");
    let bytes = new_genesis("mute");
    let mut config = on_loopback(Config::genesis(ChainId::of(&bytes), bytes));
    config.ports.fetch = mute.local_addr().expect("addr").port();
    let started = Instant::now();
    let why = timeout(WAIT, probe(&config)).await.expect("probe returns").expect_err("unhealthy");
    let took = started.elapsed();
    assert!(why.contains("no answer within"), "{why}");
    assert!(took <= peerfleet_node::PROBE_DEADLINE + Duration::from_millis(300), "probe took {took:?}");
}
