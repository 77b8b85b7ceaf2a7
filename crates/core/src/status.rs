//! Live status: what the engines say about a network, judged against its spec and pinned chain.
//!
//! Pure, like planning: the caller refreshes (one list per engine, as `plan` does) and asks each
//! container's engine for its [`HealthDetail`]; [`assess`] turns that into a [`StatusReport`] with a
//! verdict a monitor can use ([`StatusReport::exit_code`]). The peer facts come from the health check's
//! own output: the reference node's probe prints one JSON line ([`ProbeLine`]), which the engine keeps in
//! its health log — so status opens no port of its own.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::actual::ActualState;
use crate::address::Address;
use crate::network::{ChainId, Network, Role};
use crate::provider::HealthDetail;
use crate::resource::{Actual, ContainerState, Health, MachineStatus};

/// The JSON line the reference node's probe prints (`peerfleet-node probe`). Every field is optional:
/// another node image may print anything, and then status knows only what the engine knows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProbeLine {
    /// Whether the probe passed.
    pub healthy: bool,
    /// Why not, when it did not.
    pub reason: Option<String>,
    /// The chain ID the node reports.
    pub chain_id: Option<String>,
    /// Live peers.
    pub peers: Option<u32>,
    /// Relay: whether it is peered with a master.
    pub master_peered: Option<bool>,
    /// Relay: since when (seconds since the Unix epoch).
    pub peered_since_unix_s: Option<u64>,
    /// Master: relays peered with it.
    pub relays: Option<u32>,
    /// Seconds since the node process started.
    pub uptime_s: Option<u64>,
    /// The most recent refused handshake's reason, either side.
    pub last_refusal: Option<String>,
}

impl ProbeLine {
    /// The last line of `output` that is a probe line, if any.
    pub fn find(output: &str) -> Option<ProbeLine> {
        output.lines().rev().find_map(|l| serde_json::from_str(l.trim()).ok())
    }
}

/// One machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeStatus {
    /// `machine.CLUSTER[SLOT]`.
    pub address: String,
    /// Provider.
    pub provider: String,
    /// Region slug.
    pub region: String,
    /// Public address, if any.
    pub public_ip: Option<String>,
    /// `running`, `pending`, `stopped`, `shutting_down`.
    pub state: MachineStatus,
}

/// One container the spec declares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerStatus {
    /// `container.SERVICE[SLOT]`.
    pub address: String,
    /// Stable name (`relay-3`).
    pub name: String,
    /// Role.
    pub role: Role,
    /// The machine it runs on (as labelled), if it exists.
    pub node: Option<String>,
    /// `missing` when the engine has no such container.
    pub state: String,
    /// Engine's health.
    pub health: Option<Health>,
    /// The chain ID it reports, if its probe said.
    pub chain_id: Option<String>,
    /// Whether that is the pinned chain (`None`: unknown).
    pub chain_matches: Option<bool>,
    /// Live peers.
    pub peers: Option<u32>,
    /// Relay: peered with the master.
    pub master_peered: Option<bool>,
    /// Relay: peered since (Unix seconds).
    pub peered_since_unix_s: Option<u64>,
    /// Master: relays peered.
    pub relays: Option<u32>,
    /// Seconds since the container started.
    pub uptime_s: Option<u64>,
    /// The last refused handshake's reason.
    pub last_refusal: Option<String>,
    /// What the last health check said when it failed.
    pub probe_says: Option<String>,
    /// Why this container makes the network degraded (`None`: fine).
    pub problem: Option<String>,
}

/// The whole network's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusReport {
    /// Network name.
    pub network: String,
    /// The chain every node must report.
    pub chain_id: ChainId,
    /// Machines, in address order.
    pub nodes: Vec<NodeStatus>,
    /// Declared containers, in address order.
    pub containers: Vec<ContainerStatus>,
    /// What makes the network degraded, one line each (empty: healthy).
    pub problems: Vec<String>,
    /// When the engines were asked (seconds since the Unix epoch): uptimes count to it.
    pub checked_unix_s: u64,
    /// Only the machines were looked at (`--only machines`): `containers` is empty, not judged.
    pub machines_only: bool,
}

impl StatusReport {
    /// Whether every declared container runs, is healthy, and reports the pinned chain.
    pub fn is_healthy(&self) -> bool {
        self.problems.is_empty()
    }

    /// 0 healthy, 2 degraded (1, an error, is the caller's).
    pub fn exit_code(&self) -> u8 {
        if self.is_healthy() { 0 } else { 2 }
    }

    /// "healthy: 9 machines running, 11/11 containers healthy, 9/9 relays peered, chain 3fa1…" or
    /// "degraded: …; what is wrong".
    pub fn summary(&self) -> String {
        let running = self.nodes.iter().filter(|n| n.state == MachineStatus::Running).count();
        let healthy = self.containers.iter().filter(|c| c.problem.is_none()).count();
        let relays: Vec<&ContainerStatus> =
            self.containers.iter().filter(|c| c.role == Role::Relay).collect();
        let peered = relays.iter().filter(|c| c.problem.is_none()).count();
        let containers = if self.machines_only {
            " (containers not looked at)".to_string()
        } else {
            format!(
                ", {healthy}/{} containers healthy, {peered}/{} relays peered",
                self.containers.len(),
                relays.len()
            )
        };
        let head = format!("{running} machines running{containers}, chain {}", self.chain_id.short());
        if self.is_healthy() {
            format!("healthy: {head}")
        } else {
            format!("degraded: {head}; {}", self.problems.join("; "))
        }
    }

    /// A table for people.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "Network {}  chain {}", self.network, self.chain_id);
        let _ =
            writeln!(out, "\n  {:<28} {:<13} {:<16} {:<16} STATE", "NODE", "PROVIDER", "REGION", "ADDRESS");
        for n in &self.nodes {
            let state = serde_json::to_value(n.state).ok().and_then(|v| v.as_str().map(String::from));
            let _ = writeln!(
                out,
                "  {:<28} {:<13} {:<16} {:<16} {}",
                n.address,
                n.provider,
                n.region,
                n.public_ip.as_deref().unwrap_or("-"),
                state.unwrap_or_default()
            );
        }
        if !self.machines_only {
            let _ = writeln!(
                out,
                "\n  {:<22} {:<8} {:<9} {:<10} {:<13} {:<26} {:<8} NOTE",
                "CONTAINER", "ROLE", "STATE", "HEALTH", "CHAIN", "PEERS", "UPTIME"
            );
        }
        for c in &self.containers {
            let health = c.health.map(|h| format!("{h:?}").to_lowercase()).unwrap_or_else(|| "-".into());
            // By characters: the ID is what a probe printed, and a byte cut could split a character.
            let short = |id: &str| id.chars().take(12).collect::<String>();
            let chain = match (&c.chain_id, c.chain_matches) {
                (Some(id), Some(false)) => format!("{}!", short(id)),
                (Some(id), _) => short(id),
                (None, _) => "-".into(),
            };
            let peers = match (c.role, c.master_peered, c.relays) {
                (Role::Relay, Some(true), _) => match c.peered_since_unix_s {
                    Some(since) => format!("master for {}", age(self.checked_unix_s.saturating_sub(since))),
                    None => "master".into(),
                },
                (Role::Relay, Some(false), _) => "not peered".into(),
                (Role::Master, _, Some(n)) => format!("{n} relays"),
                _ => "-".into(),
            };
            let uptime = c.uptime_s.map_or_else(|| "-".into(), age);
            let note = c
                .problem
                .clone()
                .or_else(|| c.last_refusal.as_ref().map(|r| format!("last refusal: {r}")))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {:<22} {:<8} {:<9} {:<10} {:<13} {:<26} {:<8} {}",
                c.address,
                c.role.as_str(),
                c.state,
                health,
                chain,
                peers,
                uptime,
                note
            );
        }
        let _ = writeln!(out, "\n{}", self.summary());
        // Rows end where their last cell does (an empty note would leave padding behind).
        let out: String = out.lines().map(|l| format!("{}\n", l.trim_end())).collect();
        // Names, chain IDs, reasons and refusals come from labels and from what a node's probe
        // printed: a terminal must show them, never obey an escape sequence among them.
        crate::text::terminal_safe(&out)
    }
}

/// `seconds` as a person reads an age: `45s`, `3m12s`, `2h05m`, `3d04h`.
fn age(seconds: u64) -> String {
    let (m, h, d) = (seconds / 60, seconds / 3600, seconds / 86_400);
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{m}m{:02}s", seconds % 60),
        3600..86_400 => format!("{h}h{:02}m", m % 60),
        _ => format!("{d}d{:02}h", h % 24),
    }
}

/// Judges what refresh found (`actual`) and the engines' details against `network` and `chain`.
/// `now_unix_s` turns start times into uptimes. With `machines_only`, containers are not judged.
pub fn assess(
    network: &Network,
    actual: &ActualState,
    details: &BTreeMap<Address, HealthDetail>,
    chain: &ChainId,
    now_unix_s: u64,
    machines_only: bool,
) -> StatusReport {
    let mut problems = Vec::new();
    let nodes: Vec<NodeStatus> = actual
        .objects
        .values()
        .filter_map(|o| match o {
            Actual::Machine(m) => Some(NodeStatus {
                address: m.address.to_string(),
                provider: m.provider.as_str().to_string(),
                region: m.region.clone(),
                public_ip: m.public_ip.clone(),
                state: m.status,
            }),
            _ => None,
        })
        .collect();
    for cluster in &network.clusters {
        for slot in 0..cluster.nodes {
            let address = Address::machine(cluster.name.clone(), slot);
            match actual.machine(&address) {
                None => problems.push(format!("{address} is missing")),
                Some(m) if m.status != MachineStatus::Running => {
                    problems.push(format!("{address} is {:?}", m.status).to_lowercase())
                }
                Some(_) => {}
            }
        }
    }
    let mut containers = Vec::new();
    if !machines_only {
        for service in &network.services {
            for slot in 0..service.containers {
                let address = Address::container(service.name.clone(), slot);
                let status = container_status(
                    &address,
                    service.role,
                    &service.name,
                    slot,
                    actual,
                    details,
                    chain,
                    now_unix_s,
                );
                if let Some(p) = &status.problem {
                    problems.push(format!("{} ({}): {p}", status.name, address));
                }
                containers.push(status);
            }
        }
    }
    StatusReport {
        network: network.name.clone(),
        chain_id: chain.clone(),
        nodes,
        containers,
        problems,
        checked_unix_s: now_unix_s,
        machines_only,
    }
}

#[allow(clippy::too_many_arguments)]
fn container_status(
    address: &Address,
    role: Role,
    service: &str,
    slot: u32,
    actual: &ActualState,
    details: &BTreeMap<Address, HealthDetail>,
    chain: &ChainId,
    now_unix_s: u64,
) -> ContainerStatus {
    let found = match actual.objects.get(address) {
        Some(Actual::Container(c)) => Some(c),
        _ => None,
    };
    // What a stopped container's last check printed is history: it must not count as peered, nor
    // its last run's start as uptime.
    let running = found.is_some_and(|c| c.state == ContainerState::Running);
    let detail = details.get(address).filter(|_| running);
    let probe = detail.and_then(|d| d.last_check_output.as_deref()).and_then(ProbeLine::find);
    let mut status = ContainerStatus {
        address: address.to_string(),
        name: found
            .and_then(|c| c.spec.as_ref())
            .map_or_else(|| format!("{service}-{}", slot + 1), |s| s.name.clone()),
        role,
        node: found.and_then(|c| c.spec.as_ref()).map(|s| s.node.to_string()),
        state: found.map_or("missing", |c| c.state.as_str()).to_string(),
        health: found.map(|c| c.health),
        chain_id: probe.as_ref().and_then(|p| p.chain_id.clone()),
        chain_matches: None,
        peers: probe.as_ref().and_then(|p| p.peers),
        master_peered: probe.as_ref().and_then(|p| p.master_peered),
        peered_since_unix_s: probe.as_ref().and_then(|p| p.peered_since_unix_s),
        relays: probe.as_ref().and_then(|p| p.relays),
        uptime_s: detail.and_then(|d| d.started_unix_s).map(|s| now_unix_s.saturating_sub(s)),
        last_refusal: probe.as_ref().and_then(|p| p.last_refusal.clone()),
        probe_says: probe.as_ref().filter(|p| !p.healthy).and_then(|p| p.reason.clone()),
        problem: None,
    };
    status.chain_matches = status.chain_id.as_ref().map(|id| id == chain.as_str());
    status.problem = match found {
        None => Some("missing".into()),
        Some(c) if c.state != ContainerState::Running => Some(c.state.as_str().to_string()),
        Some(_) if status.chain_matches == Some(false) => {
            Some(format!("reports chain {}, not the pinned one", status.chain_id.clone().unwrap_or_default()))
        }
        Some(_) if role == Role::Relay && status.master_peered == Some(false) => {
            Some(match &status.probe_says {
                Some(why) => format!("not peered with the master: {why}"),
                None => "not peered with the master".into(),
            })
        }
        Some(c) if !matches!(c.health, Health::Healthy | Health::None) => {
            let health = format!("{:?}", c.health).to_lowercase();
            Some(match &status.probe_says {
                Some(why) => format!("{health}: {why}"),
                None => health,
            })
        }
        Some(_) => None,
    };
    status
}

#[cfg(test)]
mod tests;
