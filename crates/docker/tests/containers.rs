//! Containers on local virtual nodes against the real engine.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::RestartPolicyNameEnum;
use bollard::query_parameters::{InspectContainerOptions, ListNetworksOptionsBuilder};
use peerfleet_core::network::RestartPolicy;
use peerfleet_core::provider::{ContainerEngine, ErrorKind, MachineProvider};
use peerfleet_core::resource::{Container, ContainerState, Health};
use peerfleet_docker::labels;

use crate::support::*;

const HEALTH_WAIT: Duration = Duration::from_secs(60);

/// Waits until the labelled list shows the container named `name` with `health`.
async fn health_of(t: &TestNet, name: &str, health: Health) -> anyhow::Result<Container> {
    until(&format!("{name} to be {health:?}"), HEALTH_WAIT, || async {
        let listed = t.engine.list_containers(&t.name).await?;
        Ok(listed.into_iter().find(|c| c.spec.as_ref().is_some_and(|s| s.name == name) && c.health == health))
    })
    .await
}

#[tokio::test]
async fn container_spec_round_trips_through_labels_with_secrets_hashed() -> anyhow::Result<()> {
    let Some(t) = TestNet::start("spec").await else { return Ok(()) };
    bounded(async {
        let node = t.node("frankfurt").await?;
        let image = t.stub_image().await?;
        // The probe checks the environment reached the container's process: healthy means it did. It
        // must not name the secret: the health command is part of the stored spec.
        let mut spec = t.container(&image, "genesis", 0, &node, &["env", "CHAIN_ID", chain().as_str()]);
        spec.env.insert("API_TOKEN".into(), "hunter2".into());
        spec.env.insert("CHAIN_ID".into(), chain().to_string());
        spec.chain_id = Some(chain());
        spec.restart = RestartPolicy::OnFailure;

        let made = t.create(&spec, &node).await?;
        assert_eq!(made.address, spec.address);
        assert_eq!(made.state, ContainerState::Running);

        let listed = health_of(&t, "genesis-1", Health::Healthy).await?;
        assert_eq!(listed.id, made.id);
        assert_eq!(listed.spec, Some(labels::stored_spec(&spec)), "the spec reads back from the labels");
        assert_eq!(listed.chain_id, Some(chain()));
        let stored = listed.spec.unwrap();
        assert!(peerfleet_core::seal::is_seal(&stored.env["API_TOKEN"]), "a seal, never the value");
        assert_eq!(stored.env["CHAIN_ID"], chain().to_string());

        let raw = t.engine.client().inspect_container(&made.id, None::<InspectContainerOptions>).await?;
        assert_eq!(raw.name.as_deref(), Some(format!("/{}-genesis-1", t.name).as_str()));
        let config = raw.config.unwrap_or_default();
        assert!(!config.labels.unwrap_or_default().values().any(|v| v.contains("hunter2")));
        assert!(config.env.unwrap_or_default().contains(&"API_TOKEN=hunter2".to_string()));
        let host = raw.host_config.unwrap_or_default();
        assert_eq!(host.restart_policy.and_then(|r| r.name), Some(RestartPolicyNameEnum::ON_FAILURE));
        assert!(host.port_bindings.unwrap_or_default().is_empty(), "local nodes publish nothing");

        let inspected = t.engine.inspect_container(&made).await?.expect("it exists");
        assert_eq!(inspected.health, Health::Healthy);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn failing_probe_is_reported_unhealthy_by_list_and_inspect() -> anyhow::Result<()> {
    let Some(t) = TestNet::start("sick").await else { return Ok(()) };
    bounded(async {
        let node = t.node("sydney").await?;
        let image = t.stub_image().await?;
        let made = t.create(&t.container(&image, "relay", 0, &node, &["fail"]), &node).await?;
        health_of(&t, "relay-1", Health::Unhealthy).await?;
        assert_eq!(t.engine.inspect_container(&made).await?.map(|c| c.health), Some(Health::Unhealthy));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn stable_names_resolve_across_nodes_on_the_internet_network() -> anyhow::Result<()> {
    let Some(t) = TestNet::start("dns").await else { return Ok(()) };
    bounded(async {
        let (a, b) = (t.node("london").await?, t.node("oregon").await?);
        let image = t.stub_image().await?;
        t.create(&t.container(&image, "master", 0, &a, &["ok"]), &a).await?;
        // On another node: healthy only if the master's names resolve from there.
        for (slot, name) in ["master-1", "master", "nobody-here"].into_iter().enumerate() {
            t.create(&t.container(&image, "relay", slot as u32, &b, &["resolve", name]), &b).await?;
        }
        health_of(&t, "relay-1", Health::Healthy).await?;
        health_of(&t, "relay-2", Health::Healthy).await?;
        health_of(&t, "relay-3", Health::Unhealthy).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn restart_policy_governs_what_the_engine_does_after_an_exit() -> anyhow::Result<()> {
    let Some(t) = TestNet::start("restart").await else { return Ok(()) };
    bounded(async {
        let node = t.node("virginia").await?;
        let image = t.stub_image().await?;
        for (slot, policy) in [RestartPolicy::Off, RestartPolicy::OnFailure].into_iter().enumerate() {
            let mut spec = t.container(&image, "relay", slot as u32, &node, &["ok"]);
            spec.env.insert("STUB_EXIT".into(), "3".into());
            spec.restart = policy;
            let made = t.create(&spec, &node).await?;
            let restarts =
                until(&format!("the {policy:?} container to exit or restart"), HEALTH_WAIT, || async {
                    let raw = t
                        .engine
                        .client()
                        .inspect_container(&made.id, None::<InspectContainerOptions>)
                        .await?;
                    let count = raw.restart_count.unwrap_or(0);
                    let state = t.engine.inspect_container(&made).await?.map(|c| c.state);
                    Ok(match policy {
                        RestartPolicy::OnFailure => (count >= 1).then_some(count),
                        _ => (state == Some(ContainerState::Exited)).then_some(count),
                    })
                })
                .await?;
            if policy == RestartPolicy::Off {
                assert_eq!(restarts, 0, "a container with restart off stays down");
            }
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn create_replaces_its_own_leftover_and_remove_is_idempotent() -> anyhow::Result<()> {
    let Some(t) = TestNet::start("again").await else { return Ok(()) };
    bounded(async {
        let node = t.node("saopaulo").await?;
        let image = t.stub_image().await?;
        let spec = t.container(&image, "relay", 0, &node, &["ok"]);
        let first = t.create(&spec, &node).await?;
        let second = t.create(&spec, &node).await?;
        assert_ne!(first.id, second.id);
        let listed = t.engine.list_containers(&t.name).await?;
        assert_eq!(listed.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), vec![second.id.as_str()]);

        t.engine.remove_container(&second).await?;
        t.engine.remove_container(&second).await?;
        assert_eq!(t.engine.inspect_container(&second).await?, None);
        assert!(t.engine.list_containers(&t.name).await?.is_empty());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn deleting_the_last_node_removes_the_internet_network() -> anyhow::Result<()> {
    let Some(t) = TestNet::start("last").await else { return Ok(()) };
    bounded(async {
        let (a, b) = (t.node("amsterdam").await?, t.node("singapore").await?);
        let image = t.stub_image().await?;
        let made = t.create(&t.container(&image, "relay", 0, &a, &["ok"]), &a).await?;
        let internet = || async {
            let wanted = vec![format!("{}={}", labels::NETWORK, t.name), format!("{}=1", labels::INTERNET)];
            let options =
                ListNetworksOptionsBuilder::default().filters(&HashMap::from([("label", wanted)])).build();
            anyhow::Ok(t.engine.client().list_networks(Some(options)).await?.len())
        };
        assert_eq!(internet().await?, 1);
        let err = t.nodes.delete_machine(&a).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Conflict, "a node with containers stays: {err}");
        t.engine.remove_container(&made).await?;
        t.nodes.delete_machine(&a).await?;
        assert_eq!(internet().await?, 1, "kept while a node is left");
        t.nodes.delete_machine(&b).await?;
        assert_eq!(internet().await?, 0, "removed with the last node");
        Ok(())
    })
    .await
}
