//! The translation between peerfleet's containers and Docker's: the create request for a
//! [`ContainerSpec`] (labels, wiring, restart policy, health check), and a [`Container`] read back
//! from the engine's list and inspect answers. Pure functions, no engine calls.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummary,
    ContainerSummaryHealthStatusEnum, ContainerSummaryStateEnum, HealthConfig, HealthStatusEnum, HostConfig,
    PortBinding, RestartPolicy as DockerRestart, RestartPolicyNameEnum,
};
use peerfleet_core::network::{ChainId, RestartPolicy};
use peerfleet_core::provider::ContainerContext;
use peerfleet_core::resource::{Container, ContainerSpec, ContainerState, Health};

use crate::labels;

/// Whether the container lands on a local virtual node (shared engine, networks instead of machines).
pub(crate) fn is_local(ctx: &ContainerContext) -> bool {
    !ctx.node.provider.capabilities().remote_engine
}

/// The labels a container is created with.
pub(crate) fn container_labels(spec: &ContainerSpec) -> HashMap<String, String> {
    let mut l = HashMap::from([
        (labels::NETWORK.to_string(), spec.network.clone()),
        (labels::ADDRESS.to_string(), spec.address.to_string()),
        (labels::SPEC.to_string(), labels::encode_spec(spec)),
    ]);
    if let Some(chain_id) = &spec.chain_id {
        l.insert(labels::CHAIN_ID.to_string(), chain_id.to_string());
    }
    l
}

/// The create request for `spec` placed as `ctx` says (see the module documentation).
pub(crate) fn container_body(spec: &ContainerSpec, ctx: &ContainerContext) -> ContainerCreateBody {
    let local = is_local(ctx);
    let mut host = HostConfig { restart_policy: Some(restart_policy(spec.restart)), ..Default::default() };
    let mut exposed = None;
    if local {
        // The node's network is the machine; its ID is the machine's provider ID.
        host.network_mode = Some(ctx.node.id.clone());
    } else {
        let key = |p: &u16| format!("{p}/tcp");
        exposed = Some(spec.ports.iter().map(key).collect());
        host.port_bindings = Some(
            spec.ports
                .iter()
                .map(|p| {
                    let binding =
                        PortBinding { host_ip: Some("0.0.0.0".into()), host_port: Some(p.to_string()) };
                    (key(p), Some(vec![binding]))
                })
                .collect(),
        );
        host.extra_hosts = Some(ctx.hosts.iter().map(|(name, ip)| format!("{name}:{ip}")).collect());
    }
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        hostname: Some(spec.name.clone()),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: Some(container_labels(spec)),
        healthcheck: Some(health_config(&spec.health)),
        exposed_ports: exposed,
        host_config: Some(host),
        ..Default::default()
    }
}

fn restart_policy(policy: RestartPolicy) -> DockerRestart {
    let name = match policy {
        RestartPolicy::Off => RestartPolicyNameEnum::NO,
        RestartPolicy::OnFailure => RestartPolicyNameEnum::ON_FAILURE,
        RestartPolicy::Always => RestartPolicyNameEnum::ALWAYS,
    };
    DockerRestart { name: Some(name), maximum_retry_count: None }
}

/// Docker's health check; its durations are nanoseconds and must be 0 or at least 1 ms.
fn health_config(check: &peerfleet_core::network::HealthCheck) -> HealthConfig {
    if check.command.is_empty() {
        // Explicitly none, so a health check baked into the image does not apply either.
        return HealthConfig { test: Some(vec!["NONE".into()]), ..Default::default() };
    }
    let nanos = |ms: u64| i64::try_from(ms.max(1).saturating_mul(1_000_000)).unwrap_or(i64::MAX);
    let mut test = vec!["CMD".to_string()];
    test.extend(check.command.iter().cloned());
    HealthConfig {
        test: Some(test),
        interval: Some(nanos(check.interval_ms)),
        timeout: Some(nanos(check.timeout_ms)),
        retries: Some(i64::from(check.retries)),
        ..Default::default()
    }
}

/// A container from what labels and state say; `None` when it carries no readable address (then it is
/// not something peerfleet can act on).
fn decode(
    id: String,
    labels: Option<&HashMap<String, String>>,
    state: ContainerState,
    health: Health,
) -> Option<Container> {
    let labels = labels?;
    let address = match labels.get(labels::ADDRESS).map(|a| a.parse()) {
        Some(Ok(address)) => address,
        _ => {
            tracing::warn!(container = %id, "ignoring a container with the network label but no readable address");
            return None;
        }
    };
    Some(Container {
        id,
        address,
        spec: labels::decode_spec(labels.get(labels::SPEC)),
        state,
        health,
        chain_id: labels.get(labels::CHAIN_ID).and_then(|c| ChainId::parse(c)),
    })
}

pub(crate) fn container_from_summary(s: ContainerSummary) -> Option<Container> {
    let state = match s.state {
        Some(ContainerSummaryStateEnum::CREATED) => ContainerState::Created,
        Some(ContainerSummaryStateEnum::RUNNING | ContainerSummaryStateEnum::STOPPING) => {
            ContainerState::Running
        }
        Some(ContainerSummaryStateEnum::RESTARTING) => ContainerState::Restarting,
        Some(ContainerSummaryStateEnum::EXITED) => ContainerState::Exited,
        Some(ContainerSummaryStateEnum::PAUSED) => ContainerState::Paused,
        _ => ContainerState::Dead,
    };
    let health = match s.health.and_then(|h| h.status) {
        Some(ContainerSummaryHealthStatusEnum::HEALTHY) => Health::Healthy,
        Some(ContainerSummaryHealthStatusEnum::UNHEALTHY) => Health::Unhealthy,
        Some(ContainerSummaryHealthStatusEnum::STARTING) => Health::Starting,
        Some(_) => Health::None,
        None => health_from_status(s.status.as_deref().unwrap_or_default()),
    };
    decode(s.id?, s.labels.as_ref(), state, health)
}

/// Health from a list entry's status line, for engines older than API 1.52, whose list entries have
/// no health field. The engine itself formats the suffix — `(healthy)`, `(unhealthy)`,
/// `(health: starting)` — after the uptime of a running container with a health check.
fn health_from_status(status: &str) -> Health {
    if status.ends_with("(healthy)") {
        Health::Healthy
    } else if status.ends_with("(unhealthy)") {
        Health::Unhealthy
    } else if status.ends_with("(health: starting)") {
        Health::Starting
    } else {
        Health::None
    }
}

pub(crate) fn container_from_inspect(c: ContainerInspectResponse) -> Option<Container> {
    let state = c.state.as_ref();
    let run_state = match state.and_then(|s| s.status) {
        Some(ContainerStateStatusEnum::CREATED) => ContainerState::Created,
        Some(ContainerStateStatusEnum::RUNNING) => ContainerState::Running,
        Some(ContainerStateStatusEnum::RESTARTING) => ContainerState::Restarting,
        Some(ContainerStateStatusEnum::EXITED) => ContainerState::Exited,
        Some(ContainerStateStatusEnum::PAUSED) => ContainerState::Paused,
        _ => ContainerState::Dead,
    };
    let health = match state.and_then(|s| s.health.as_ref()).and_then(|h| h.status) {
        Some(HealthStatusEnum::HEALTHY) => Health::Healthy,
        Some(HealthStatusEnum::UNHEALTHY) => Health::Unhealthy,
        Some(HealthStatusEnum::STARTING) => Health::Starting,
        _ => Health::None,
    };
    decode(c.id?, c.config.as_ref().and_then(|cfg| cfg.labels.as_ref()), run_state, health)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use peerfleet_core::Address;
    use peerfleet_core::network::{HealthCheck, ProviderKind, Role};
    use peerfleet_core::resource::{Machine, MachineStatus};

    use super::*;

    fn spec() -> ContainerSpec {
        ContainerSpec {
            address: Address::container("relay", 0),
            network: "testnet".into(),
            service: "relay".into(),
            role: Role::Relay,
            name: "relay-1".into(),
            aliases: vec!["relay".into(), "relay-1".into()],
            node: Address::machine("virginia", 0),
            image: "peerfleet-node:0123456789abcdef".into(),
            env: BTreeMap::from([
                ("CHAIN_ID".to_string(), "abc".to_string()),
                ("API_TOKEN".to_string(), "hunter2".to_string()),
            ]),
            ports: vec![26656, 26657],
            restart: RestartPolicy::OnFailure,
            health: HealthCheck {
                command: vec!["/peerfleet-node".into(), "probe".into()],
                interval_ms: 500,
                timeout_ms: 0,
                retries: 3,
            },
            needs: vec!["master".into()],
            chain_id: None,
            seals: Default::default(),
        }
    }

    fn ctx(provider: ProviderKind) -> ContainerContext {
        ContainerContext {
            node: Machine {
                id: "net-id-1".into(),
                address: Address::machine("virginia", 0),
                provider,
                region: "us-east-1".into(),
                size: "small".into(),
                image: "local".into(),
                tags: BTreeSet::new(),
                chain_id: None,
                generation: 0,
                bootstrap: 1,
                status: MachineStatus::Running,
                public_ip: None,
                private_ip: None,
            },
            hosts: BTreeMap::from([("master".to_string(), "198.51.100.4".to_string())]),
            beside: None,
        }
    }

    #[test]
    fn container_on_a_local_node_joins_its_network_and_publishes_nothing() {
        let body = container_body(&spec(), &ctx(ProviderKind::Local));
        let host = body.host_config.unwrap();
        assert_eq!(host.network_mode.as_deref(), Some("net-id-1"));
        assert!(host.port_bindings.is_none());
        assert!(host.extra_hosts.is_none());
        assert!(body.exposed_ports.is_none());
    }

    #[test]
    fn container_on_a_cloud_machine_publishes_its_ports_and_maps_needed_names() {
        let body = container_body(&spec(), &ctx(ProviderKind::Aws));
        let host = body.host_config.unwrap();
        let bindings = host.port_bindings.unwrap();
        let b = bindings["26657/tcp"].as_ref().unwrap();
        assert_eq!(b[0].host_port.as_deref(), Some("26657"));
        assert_eq!(b[0].host_ip.as_deref(), Some("0.0.0.0"));
        assert_eq!(host.extra_hosts.unwrap(), vec!["master:198.51.100.4".to_string()]);
        assert_eq!(host.network_mode, None);
    }

    #[test]
    fn restart_policies_map_to_dockers_names() {
        for (ours, theirs) in [
            (RestartPolicy::Off, RestartPolicyNameEnum::NO),
            (RestartPolicy::OnFailure, RestartPolicyNameEnum::ON_FAILURE),
            (RestartPolicy::Always, RestartPolicyNameEnum::ALWAYS),
        ] {
            assert_eq!(restart_policy(ours).name, Some(theirs));
        }
    }

    #[test]
    fn health_durations_are_nanoseconds_and_never_below_a_millisecond() {
        let h = health_config(&spec().health);
        assert_eq!(h.test.unwrap(), vec!["CMD", "/peerfleet-node", "probe"]);
        assert_eq!(h.interval, Some(500_000_000));
        assert_eq!(h.timeout, Some(1_000_000));
        assert_eq!(h.retries, Some(3));
    }

    #[test]
    fn secret_env_reaches_the_container_but_only_its_hash_the_label() {
        let body = container_body(&spec(), &ctx(ProviderKind::Local));
        assert!(body.env.unwrap().contains(&"API_TOKEN=hunter2".to_string()));
        let labels = body.labels.unwrap();
        assert!(!labels.values().any(|v| v.contains("hunter2")));
        let stored = labels::decode_spec(labels.get(labels::SPEC)).unwrap();
        // No seals were computed for this hand-built spec: the label still holds a seal, never the value.
        assert!(peerfleet_core::seal::is_seal(&stored.env["API_TOKEN"]), "{}", stored.env["API_TOKEN"]);
        assert_eq!(stored.env["CHAIN_ID"], "abc");
    }

    #[test]
    fn health_is_read_from_the_engines_status_suffix() {
        assert_eq!(health_from_status("Up 3 seconds (healthy)"), Health::Healthy);
        assert_eq!(health_from_status("Up 1 minute (unhealthy)"), Health::Unhealthy);
        assert_eq!(health_from_status("Up 1 second (health: starting)"), Health::Starting);
        assert_eq!(health_from_status("Exited (1) 2 seconds ago"), Health::None);
        assert_eq!(health_from_status("Up 5 seconds"), Health::None);
    }
}
