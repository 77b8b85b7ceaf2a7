//! The reference image, built on the real engine with no registry.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use peerfleet_core::network::{ChainId, Role};
use peerfleet_core::provider::{ContainerEngine, EngineConnector};
use peerfleet_core::resource::Health;
use peerfleet_docker::image::reference_image_named;
use peerfleet_docker::{DockerConnector, EnsureOutcome, ensure_image, locate_node_binary, reference_image};

use crate::support::*;

/// A copy of the stub binary made unique by trailing bytes (ignored by the loader), so its image is
/// new to the engine.
fn unique_binary(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let mut bytes = std::fs::read(stub_binary()?)?;
    bytes.extend_from_slice(unique(name).as_bytes());
    let path = dir.join(name);
    std::fs::write(&path, bytes)?;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    Ok(path)
}

#[tokio::test]
async fn image_is_built_once_per_content_and_a_changed_binary_gets_a_new_tag() -> anyhow::Result<()> {
    let Some(mut t) = TestNet::start("image").await else { return Ok(()) };
    let dir = tempfile::tempdir()?;
    let first = reference_image_named("peerfleet-test-rollout", &unique_binary(dir.path(), "one")?)?;
    let second = reference_image_named("peerfleet-test-rollout", &unique_binary(dir.path(), "two")?)?;
    t.guard.image(&first.tag);
    t.guard.image(&second.tag);
    bounded(async {
        assert_ne!(first.tag, second.tag, "a changed binary is a new tag");
        let started = Instant::now();
        assert_eq!(ensure_image(t.engine.client(), &first).await?, EnsureOutcome::Built);
        eprintln!(
            "built {} ({} bytes of context) in {:?}",
            first.tag,
            first.context.len(),
            started.elapsed()
        );
        let started = Instant::now();
        assert_eq!(ensure_image(t.engine.client(), &first).await?, EnsureOutcome::Present);
        eprintln!("found {} present in {:?}", first.tag, started.elapsed());
        assert_eq!(ensure_image(t.engine.client(), &second).await?, EnsureOutcome::Built);

        // The image runs: a container from it becomes healthy through the binary's own probe.
        let node = t.node("tokyo").await?;
        t.create(&t.container(&first.tag, "relay", 0, &node, &["ok"]), &node).await?;
        until("the container from the built image to be healthy", Duration::from_secs(60), || async {
            let listed = t.engine.list_containers(&t.name).await?;
            Ok(listed.iter().any(|c| c.health == Health::Healthy).then_some(()))
        })
        .await
    })
    .await
}

#[tokio::test]
async fn connector_engine_builds_the_reference_image_before_the_first_container_that_needs_it()
-> anyhow::Result<()> {
    let Some(mut t) = TestNet::start("ensure").await else { return Ok(()) };
    let dir = tempfile::tempdir()?;
    let image = reference_image_named("peerfleet-test-ensure", &unique_binary(dir.path(), "node")?)?;
    t.guard.image(&image.tag);
    bounded(async {
        let connector = DockerConnector::new(&t.name)
            .with_local_engine(t.engine.clone())
            .with_reference_image(Arc::new(image.clone()));
        let node = t.node("paris").await?;
        assert_eq!(connector.engine_key(&node), "local");
        let engine = connector.engine_for(&node).await?;
        engine.create_container(&t.container(&image.tag, "relay", 0, &node, &["ok"]), &on(&node)).await?;
        assert_eq!(ensure_image(t.engine.client(), &image).await?, EnsureOutcome::Present, "built on demand");
        assert_eq!(engine.list_containers(&t.name).await?.len(), 1);
        Ok(())
    })
    .await
}

/// The role environment of the node contract (docs/architecture.md, "Node roles"), as the core's
/// planner writes it.
fn role_env(role: Role, genesis: &[u8]) -> BTreeMap<String, String> {
    let mut env = BTreeMap::from([
        ("NODE_ROLE".to_string(), role.as_str().to_string()),
        ("CHAIN_ID".to_string(), ChainId::of(genesis).to_string()),
    ]);
    let genesis_url = "http://genesis:8080/genesis.json".to_string();
    match role {
        Role::Genesis => {
            env.insert("GENESIS_B64".into(), base64::engine::general_purpose::STANDARD.encode(genesis));
        }
        Role::Master => {
            env.insert("GENESIS_URL".into(), genesis_url);
        }
        Role::Relay => {
            env.insert("GENESIS_URL".into(), genesis_url);
            env.insert("SEEDS".into(), "master:26656".into());
        }
    }
    env
}

#[tokio::test]
async fn real_node_image_runs_all_three_roles_healthy_on_local_nodes() -> anyhow::Result<()> {
    let Some(mut t) = TestNet::start("real").await else { return Ok(()) };
    // The workspace root: this crate lives in crates/docker.
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let started = Instant::now();
    let binary = tokio::task::spawn_blocking(move || locate_node_binary(Some(&workspace))).await??;
    eprintln!("located {} in {:?}", binary.display(), started.elapsed());
    let image = reference_image(&binary)?;
    assert!(image.tag.starts_with("peerfleet-node:"));
    let started = Instant::now();
    if ensure_image(t.engine.client(), &image).await? == EnsureOutcome::Built {
        // Only an image this test made is removed; one already there belongs to whoever built it.
        t.guard.image(&image.tag);
    }
    eprintln!("{} ready ({} bytes of context) in {:?}", image.tag, image.context.len(), started.elapsed());
    bounded(async {
        let genesis = b"{\"chain\": \"peerfleet docker tests\"}\n";
        let started = Instant::now();
        for (role, cluster) in
            [(Role::Genesis, "virginia"), (Role::Master, "london"), (Role::Relay, "sydney")]
        {
            let node = t.node(cluster).await?;
            let mut spec = t.container(&image.tag, role.as_str(), 0, &node, &[]);
            spec.role = role;
            spec.env = role_env(role, genesis);
            t.create(&spec, &node).await?;
        }
        until("genesis, master and relay to be healthy", Duration::from_secs(90), || async {
            let listed = t.engine.list_containers(&t.name).await?;
            Ok((listed.len() == 3 && listed.iter().all(|c| c.health == Health::Healthy)).then_some(()))
        })
        .await?;
        eprintln!("three roles healthy {:?} after the first create", started.elapsed());
        Ok(())
    })
    .await
}
