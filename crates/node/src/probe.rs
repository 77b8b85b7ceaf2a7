//! The container health check: asks the node on this machine whether it does its role's job.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use tokio::time::{Instant, timeout_at};

use crate::http::{self, HttpUrl};
use crate::state::{Direction, Status};
use crate::{ChainId, Config, Role};

/// The whole probe, all requests included, finishes within this.
pub const PROBE_DEADLINE: Duration = Duration::from_secs(2);
/// `/status` documents are small; anything bigger is not ours.
const MAX_STATUS: usize = 1024 * 1024;

/// Checks the local node for `config`'s role, within [`PROBE_DEADLINE`]:
///
/// - genesis: `/chain_id` is `CHAIN_ID` and `/genesis.json` hashes to it;
/// - master: `/status` reports `CHAIN_ID` and `ready`;
/// - relay: `/status` reports `CHAIN_ID` and an outbound peer whose role is master.
///
/// # Errors
/// One line saying why the node is not healthy.
pub async fn probe(config: &Config) -> Result<(), String> {
    let deadline = Instant::now() + PROBE_DEADLINE;
    // The node listens on all interfaces in a container; a specific listen address is asked directly.
    let host = match config.listen_ip {
        ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    let port = match config.role() {
        Role::Genesis => config.ports.fetch,
        Role::Master | Role::Relay => config.ports.status,
    };
    let base = HttpUrl { host: host_text(host), port, path: "/".into() };
    let get = |path: &'static str, max: usize| {
        let url = base.with_path(path);
        async move {
            match timeout_at(deadline, http::get(&url, max)).await {
                Ok(Ok(body)) => Ok(body),
                Ok(Err(e)) => Err(format!("GET {url}: {e}")),
                Err(_) => Err(format!("GET {url}: no answer within {PROBE_DEADLINE:?}")),
            }
        }
    };
    let want = &config.chain_id;
    match config.role() {
        Role::Genesis => {
            let served = get("/chain_id", 1024).await?;
            let served = String::from_utf8_lossy(&served);
            if served.trim() != want.as_str() {
                return Err(format!("genesis serves chain ID {:?}, expected {want}", served.trim()));
            }
            let genesis = get("/genesis.json", crate::node::MAX_GENESIS).await?;
            let actual = ChainId::of(&genesis);
            if actual != *want {
                return Err(format!("/genesis.json hashes to {actual}, expected {want}"));
            }
            Ok(())
        }
        Role::Master | Role::Relay => {
            let body = get("/status", MAX_STATUS).await?;
            let status: Status = serde_json::from_slice(&body)
                .map_err(|e| format!("/status is not a status document: {e}"))?;
            judge_status(config.role(), want, &status)
        }
    }
}

fn host_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

fn judge_status(role: Role, want: &ChainId, status: &Status) -> Result<(), String> {
    if status.chain_id != *want {
        return Err(format!("node reports chain ID {}, expected {want}", status.chain_id));
    }
    if status.role != role {
        return Err(format!("node reports role {}, expected {role}", status.role));
    }
    if !status.ready {
        return Err("not ready: the genesis is not fetched and verified yet".into());
    }
    if role == Role::Relay
        && !status.peers.iter().any(|p| p.direction == Direction::Outbound && p.role == Role::Master)
    {
        let refused = match &status.refusals.last_reason {
            Some(reason) => format!(" (last refusal: {reason})"),
            None => String::new(),
        };
        return Err(format!("not peered with a master{refused}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{PeerInfo, Refusals};

    fn status(role: Role, peers: Vec<PeerInfo>) -> Status {
        Status {
            role,
            chain_id: ChainId::of(b"g"),
            node_id: "n".into(),
            ready: true,
            peers,
            refusals: Refusals::default(),
        }
    }

    fn peer(role: Role, direction: Direction) -> PeerInfo {
        PeerInfo { node_id: "p".into(), role, addr: "127.0.0.1:1".into(), direction }
    }

    #[test]
    fn relay_is_healthy_only_with_an_outbound_master_peer() {
        let want = ChainId::of(b"g");
        assert!(judge_status(Role::Relay, &want, &status(Role::Relay, vec![])).is_err());
        let inbound = vec![peer(Role::Master, Direction::Inbound)];
        assert!(judge_status(Role::Relay, &want, &status(Role::Relay, inbound)).is_err());
        let relay_peer = vec![peer(Role::Relay, Direction::Outbound)];
        assert!(judge_status(Role::Relay, &want, &status(Role::Relay, relay_peer)).is_err());
        let master = vec![peer(Role::Master, Direction::Outbound)];
        assert_eq!(judge_status(Role::Relay, &want, &status(Role::Relay, master)), Ok(()));
    }

    #[test]
    fn master_must_report_the_pinned_chain_and_be_ready() {
        let want = ChainId::of(b"g");
        assert_eq!(judge_status(Role::Master, &want, &status(Role::Master, vec![])), Ok(()));
        let other = ChainId::of(b"other");
        assert!(judge_status(Role::Master, &other, &status(Role::Master, vec![])).is_err());
        let unready = Status { ready: false, ..status(Role::Master, vec![]) };
        assert!(judge_status(Role::Master, &want, &unready).unwrap_err().starts_with("not ready"));
    }
}
