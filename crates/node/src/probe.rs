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
    probe_report(config).await.verdict
}

/// What one probe found, for the line the health check prints (see [`ProbeReport::line`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    /// `Ok` when healthy, else why not.
    pub verdict: Result<(), String>,
    /// The node's `/status`, when it answered (master and relay).
    pub status: Option<Status>,
}

impl ProbeReport {
    /// One JSON line: the verdict and the peer facts `peerfleet status` reads back from the engine's
    /// health log (healthy, reason, chain ID, peers, peered with the master and since when, relays of a
    /// master, uptime, last refusal).
    pub fn line(&self) -> String {
        let mut doc = serde_json::json!({ "healthy": self.verdict.is_ok() });
        if let Err(why) = &self.verdict {
            doc["reason"] = why.clone().into();
        }
        if let Some(s) = &self.status {
            let master =
                s.peers.iter().find(|p| p.direction == Direction::Outbound && p.role == Role::Master);
            doc["chain_id"] = s.chain_id.to_string().into();
            doc["peers"] = s.peers.len().into();
            doc["uptime_s"] = s.uptime_s.into();
            match s.role {
                Role::Relay => {
                    doc["master_peered"] = master.is_some().into();
                    if let Some(since) = master.and_then(|m| m.since_unix_s) {
                        doc["peered_since_unix_s"] = since.into();
                    }
                }
                _ => doc["relays"] = s.peers.iter().filter(|p| p.role == Role::Relay).count().into(),
            }
            if let Some(reason) = &s.refusals.last_reason {
                doc["last_refusal"] = reason.clone().into();
            }
        }
        doc.to_string()
    }
}

/// [`probe`], keeping what the node said.
pub async fn probe_report(config: &Config) -> ProbeReport {
    let mut status = None;
    let verdict = check(config, &mut status).await;
    ProbeReport { verdict, status }
}

async fn check(config: &Config, seen: &mut Option<Status>) -> Result<(), String> {
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
            let verdict = judge_status(config.role(), want, &status);
            *seen = Some(status);
            verdict
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
            uptime_s: 0,
        }
    }

    fn peer(role: Role, direction: Direction) -> PeerInfo {
        PeerInfo { node_id: "p".into(), role, addr: "127.0.0.1:1".into(), direction, since_unix_s: None }
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
    fn the_probe_line_carries_the_peer_facts_status_reads() {
        let mut master = peer(Role::Master, Direction::Outbound);
        master.since_unix_s = Some(1_700_000_000);
        let mut s = status(Role::Relay, vec![master]);
        s.refusals.last_reason = Some("chain ID mismatch".into());
        let report = ProbeReport { verdict: Ok(()), status: Some(s) };
        let line: serde_json::Value = serde_json::from_str(&report.line()).unwrap();
        assert_eq!(line["healthy"], true);
        assert_eq!(line["master_peered"], true);
        assert_eq!(line["peered_since_unix_s"], 1_700_000_000u64);
        assert_eq!(line["last_refusal"], "chain ID mismatch");
        let failed = ProbeReport { verdict: Err("not peered with a master".into()), status: None };
        assert_eq!(failed.line(), r#"{"healthy":false,"reason":"not peered with a master"}"#);
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
