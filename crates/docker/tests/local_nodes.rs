//! Local virtual nodes against the real engine.

use bollard::models::{ContainerCreateBody, NetworkCreateRequest};
use bollard::query_parameters::{CreateContainerOptionsBuilder, InspectNetworkOptions};
use peerfleet_core::provider::{ContainerEngine, CreateContext, ErrorKind, MachineProvider};
use peerfleet_docker::labels;

use crate::support::*;

#[tokio::test]
async fn local_node_is_created_found_by_region_and_deleted() -> anyhow::Result<()> {
    let Some(t) = TestNet::start("nodes").await else { return Ok(()) };
    bounded(async {
        let mut spec = node_spec(&t.name, "frankfurt", 0, "frankfurt");
        spec.tags.insert("eu".into());
        spec.chain_id = Some(chain());
        spec.generation = 3;
        let made = t.nodes.create_machine(&spec, &CreateContext::default()).await?;
        let other = t.node("sydney").await?;

        let frankfurt = t.nodes.inventory(&t.name, "frankfurt").await?;
        assert_eq!(frankfurt.machines, vec![made.clone()], "only the node of that region");
        let m = &frankfurt.machines[0];
        assert_eq!((m.region.as_str(), m.image.as_str(), m.generation), ("frankfurt", "local", 3));
        assert_eq!(m.tags, spec.tags);
        assert_eq!(m.chain_id, Some(chain()));
        assert_eq!((m.public_ip.as_deref(), m.private_ip.as_deref()), (None, None));

        let name = format!("{}-frankfurt-0", t.name);
        let inspected = t.engine.client().inspect_network(&name, None::<InspectNetworkOptions>).await?;
        let l = inspected.labels.unwrap_or_default();
        assert_eq!(l.get(labels::CITY).map(String::as_str), Some("frankfurt"));
        assert_eq!(l.get("peerfleet.tag.eu").map(String::as_str), Some("1"));

        let again = t.nodes.create_machine(&spec, &CreateContext::default()).await?;
        assert_eq!(again.id, made.id, "a repeated create returns the node it made");

        t.nodes.delete_machine(&made).await?;
        t.nodes.delete_machine(&made).await?;
        assert!(t.nodes.inventory(&t.name, "frankfurt").await?.machines.is_empty());
        assert_eq!(t.nodes.inventory(&t.name, "sydney").await?.machines, vec![other.clone()]);
        t.nodes.delete_machine(&other).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn update_of_a_local_node_is_refused_unless_it_changes_nothing() -> anyhow::Result<()> {
    let Some(t) = TestNet::start("update").await else { return Ok(()) };
    bounded(async {
        let spec = node_spec(&t.name, "london", 0, "london");
        let made = t.nodes.create_machine(&spec, &CreateContext::default()).await?;
        assert_eq!(t.nodes.update_machine(&made, &spec).await?, made);
        let mut retagged = spec.clone();
        retagged.tags.insert("extra".into());
        let err = t.nodes.update_machine(&made, &retagged).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Invalid);
        assert!(err.message.contains("tags"), "{}", err.message);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn objects_peerfleet_did_not_label_are_never_taken_or_removed() -> anyhow::Result<()> {
    let Some(mut t) = TestNet::start("foreign").await else { return Ok(()) };
    let foreign_network = format!("{}-oslo-0", t.name);
    let foreign_container = format!("{}-relay-1", t.name);
    t.guard.docker_network(&foreign_network);
    t.guard.container(&foreign_container);
    bounded(async {
        let docker = t.engine.client();
        let image = t.stub_image().await?;
        // Made by hand: the names peerfleet would use, no labels.
        docker
            .create_network(NetworkCreateRequest { name: foreign_network.clone(), ..Default::default() })
            .await?;
        let options = CreateContainerOptionsBuilder::default().name(&foreign_container).build();
        docker
            .create_container(
                Some(options),
                ContainerCreateBody { image: Some(image.clone()), ..Default::default() },
            )
            .await?;

        let err = t.node("oslo").await.unwrap_err();
        assert!(err.to_string().contains("not peerfleet's"), "{err}");
        assert!(t.nodes.inventory(&t.name, "oslo").await?.machines.is_empty());

        let node = t.node("bergen").await?;
        let err = t
            .engine
            .create_container(&t.container(&image, "relay", 0, &node, &["ok"]), &on(&node))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Conflict, "{err}");
        assert!(t.engine.list_containers(&t.name).await?.is_empty());

        // Tear down everything peerfleet owns; the hand-made objects stay.
        t.nodes.delete_machine(&node).await?;
        t.nodes.cleanup(&t.name).await?;
        docker.inspect_network(&foreign_network, None::<InspectNetworkOptions>).await?;
        docker.inspect_container(&foreign_container, None).await?;
        Ok(())
    })
    .await
}
