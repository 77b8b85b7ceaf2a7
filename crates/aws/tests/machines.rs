//! Machines against moto: create, refresh, update tags, delete; tags at launch; user data.

use std::collections::BTreeSet;

use anyhow::{Context as _, anyhow, ensure};
use aws_sdk_ec2::types::{InstanceAttributeName, Tag};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use peerfleet_aws::tags;
use peerfleet_aws::testing::DEBIAN_AMI;
use peerfleet_core::bootstrap::{self, BootstrapOptions};
use peerfleet_core::provider::{ErrorKind, MachineProvider};
use peerfleet_core::resource::MachineStatus;

use crate::support::{Harness, bounded, chain};

const REGION: &str = "us-east-1";

#[tokio::test]
async fn create_refresh_retag_and_delete_round_trip() -> anyhow::Result<()> {
    bounded(async {
        let Some(h) = Harness::start("create_refresh_retag_and_delete_round_trip").await? else {
            return Ok(());
        };
        let fw = h.provider.create_firewall(&h.firewall(REGION)).await?;
        let mut genesis_host = h.machine("virginia", 0, REGION);
        genesis_host.chain_id = Some(chain());
        genesis_host.tags.insert("genesis".into());
        let relay_host = h.machine("virginia", 1, REGION);

        let created = h.provider.create_machine(&genesis_host, &h.ctx(&fw)).await?;
        let other = h.provider.create_machine(&relay_host, &h.ctx(&fw)).await?;
        ensure!(created.id.starts_with("i-") && created.id != other.id);
        ensure!(created.image == DEBIAN_AMI, "default image: {}", created.image);

        let inv = h.provider.inventory(&h.network, REGION).await?;
        ensure!(inv.machines.len() == 2, "{inv:#?}");
        let m = &inv.machines[0];
        ensure!(m.address == genesis_host.address && m.id == created.id);
        ensure!(m.size == "t3.micro" && m.image == DEBIAN_AMI && m.region == REGION);
        ensure!(m.tags == genesis_host.tags, "deploy tags {:?}", m.tags);
        ensure!(m.chain_id == Some(chain()) && m.generation == 0 && m.bootstrap == genesis_host.bootstrap);
        ensure!(m.status == MachineStatus::Running && m.private_ip.is_some());
        ensure!(inv.machines[1].chain_id.is_none() && inv.machines[1].address == relay_host.address);
        ensure!(inv.firewalls.len() == 1 && inv.firewalls[0].id == fw.id);

        // Deploy tags change in place: one added, one removed, ownership tags untouched.
        let mut retagged = genesis_host.clone();
        retagged.tags = BTreeSet::from(["peer_cluster".to_string(), "master".to_string()]);
        let updated = h.provider.update_machine(m, &retagged).await?;
        ensure!(updated.tags == retagged.tags && updated.id == m.id);
        let inv = h.provider.inventory(&h.network, REGION).await?;
        ensure!(inv.machines[0].tags == retagged.tags, "{:?}", inv.machines[0].tags);
        ensure!(inv.machines[0].chain_id == Some(chain()));

        for m in &inv.machines {
            h.provider.delete_machine(m).await?;
        }
        let inv = h.provider.inventory(&h.network, REGION).await?;
        ensure!(inv.machines.is_empty(), "terminated machines are not listed: {:?}", inv.machines);
        // Deleting what is already gone succeeds.
        h.provider.delete_machine(&created).await?;

        h.provider.delete_firewall(&fw).await?;
        ensure!(h.provider.inventory(&h.network, REGION).await?.firewalls.is_empty());
        h.provider.delete_firewall(&fw).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_tag_added_by_hand_survives_an_update_and_is_never_reported() -> anyhow::Result<()> {
    bounded(async {
        let Some(h) = Harness::start("a_tag_added_by_hand_survives_an_update").await? else {
            return Ok(());
        };
        let fw = h.provider.create_firewall(&h.firewall(REGION)).await?;
        let spec = h.machine("virginia", 0, REGION);
        let created = h.provider.create_machine(&spec, &h.ctx(&fw)).await?;
        let by_hand = Tag::builder().key("Owner").value("alice").build();
        h.inspect(REGION).create_tags().resources(&created.id).tags(by_hand).send().await?;

        let m = h.provider.inventory(&h.network, REGION).await?.machines.remove(0);
        ensure!(m.tags == spec.tags, "a hand-added tag is no deploy tag: {:?}", m.tags);
        let mut retagged = spec.clone();
        retagged.tags = BTreeSet::from(["peer_cluster".to_string(), "seed".to_string()]);
        let updated = h.provider.update_machine(&m, &retagged).await?;
        ensure!(updated.tags == retagged.tags, "{:?}", updated.tags);

        let out = h.inspect(REGION).describe_instances().instance_ids(&created.id).send().await?;
        let instance = out.reservations().first().and_then(|r| r.instances().first()).context("instance")?;
        let on_ec2 = tags::to_map(instance.tags());
        ensure!(
            on_ec2.get("Owner").map(String::as_str) == Some("alice"),
            "the hand-added tag is gone: {on_ec2:?}"
        );
        ensure!(on_ec2.contains_key("seed") && !on_ec2.contains_key("relay"), "{on_ec2:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn ownership_tags_travel_in_the_launch_request_for_instance_and_volume() -> anyhow::Result<()> {
    bounded(async {
        let Some(h) = Harness::start("ownership_tags_travel_in_the_launch_request").await? else {
            return Ok(());
        };
        let fw = h.provider.create_firewall(&h.firewall(REGION)).await?;
        let mut spec = h.machine("virginia", 0, REGION);
        spec.chain_id = Some(chain());
        spec.generation = 2;
        h.proxy.clear();
        h.provider.create_machine(&spec, &h.ctx(&fw)).await?;

        let runs = h.proxy.requests_of("RunInstances");
        ensure!(runs.len() == 1, "{runs:#?}");
        let specs = runs[0].tag_specifications();
        let kinds: Vec<&str> = specs.iter().map(|(k, _)| k.as_str()).collect();
        ensure!(kinds == ["instance", "volume"], "{kinds:?}");
        for (kind, tags) in &specs {
            let get = |k: &str| tags.get(k).map(String::as_str);
            ensure!(get(tags::NETWORK) == Some(h.network.as_str()), "{kind}: {tags:?}");
            ensure!(get(tags::ADDRESS) == Some("machine.virginia[0]"), "{kind}");
            ensure!(get(tags::GENERATION) == Some("2") && get(tags::BOOTSTRAP) == Some("1"), "{kind}");
            ensure!(get(tags::CHAIN_ID) == Some(chain().as_str()), "{kind}");
            ensure!(get("peer_cluster") == Some(""), "{kind}: deploy tag as a key");
            let name = format!("{}-virginia-0", h.network);
            ensure!(get(tags::NAME) == Some(name.as_str()), "{kind}");
        }
        ensure!(runs[0].params.get("SecurityGroupId.1") == Some(&fw.id), "launched into the network's group");
        ensure!(h.proxy.count("CreateTags") == 0, "nothing is tagged after the launch");

        // And EC2 (moto) stored them on the instance.
        let out = h.inspect(REGION).describe_instances().send().await?;
        let instance = out.reservations().iter().flat_map(|r| r.instances()).next().context("no instance")?;
        let stored = tags::to_map(instance.tags());
        ensure!(stored.get(tags::ADDRESS).map(String::as_str) == Some("machine.virginia[0]"));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn user_data_round_trips_and_carries_the_issued_tls() -> anyhow::Result<()> {
    bounded(async {
        let Some(h) = Harness::start("user_data_round_trips").await? else { return Ok(()) };
        let fw = h.provider.create_firewall(&h.firewall(REGION)).await?;
        let spec = h.machine("virginia", 0, REGION);
        let m = h.provider.create_machine(&spec, &h.ctx(&fw)).await?;

        let attr = h
            .inspect(REGION)
            .describe_instance_attribute()
            .instance_id(&m.id)
            .attribute(InstanceAttributeName::UserData)
            .send()
            .await?;
        let encoded = attr.user_data().and_then(|v| v.value()).context("no user data stored")?;
        let stored = String::from_utf8(BASE64.decode(encoded)?)?;
        let tls = h.pki.issued_for(&spec.address).context("nothing issued")?;
        let expected = bootstrap::cloud_init(&tls, &BootstrapOptions::default());
        ensure!(stored == expected, "user data differs from what was generated");
        ensure!(stored.starts_with("#cloud-config\n"));
        ensure!(stored.len() <= bootstrap::EC2_USER_DATA_LIMIT, "{} bytes", stored.len());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn objects_of_other_networks_and_by_hand_are_not_listed() -> anyhow::Result<()> {
    bounded(async {
        let Some(h) = Harness::start("objects_of_other_networks").await? else { return Ok(()) };
        let fw = h.provider.create_firewall(&h.firewall(REGION)).await?;
        h.provider.create_machine(&h.machine("virginia", 0, REGION), &h.ctx(&fw)).await?;
        let ec2 = h.inspect(REGION);
        // One by hand without tags, one of another network.
        ec2.run_instances().image_id(DEBIAN_AMI).min_count(1).max_count(1).send().await?;
        let other = peerfleet_aws::testing::machine_spec("othernet", "virginia", 0, REGION);
        h.provider.create_machine(&other, &h.ctx(&fw)).await?;

        let inv = h.provider.inventory(&h.network, REGION).await?;
        ensure!(inv.machines.len() == 1, "{:#?}", inv.machines);
        let theirs = h.provider.inventory("othernet", REGION).await?;
        ensure!(theirs.machines.len() == 1 && theirs.machines[0].id != inv.machines[0].id);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn retagging_leaves_tags_set_by_hand_alone() -> anyhow::Result<()> {
    bounded(async {
        let Some(h) = Harness::start("retagging_leaves_tags_set_by_hand").await? else { return Ok(()) };
        let fw = h.provider.create_firewall(&h.firewall(REGION)).await?;
        let mut spec = h.machine("virginia", 0, REGION);
        spec.tags.insert("relay".into());
        let m = h.provider.create_machine(&spec, &h.ctx(&fw)).await?;
        let ec2 = h.inspect(REGION);
        ec2.create_tags()
            .resources(&m.id)
            .tags(Tag::builder().key("Owner").value("alice").build())
            .send()
            .await?;

        let inv = h.provider.inventory(&h.network, REGION).await?;
        ensure!(
            inv.machines[0].tags == spec.tags,
            "a valued tag is not a deploy tag: {:?}",
            inv.machines[0].tags
        );
        let mut fewer = spec.clone();
        fewer.tags.remove("relay");
        h.provider.update_machine(&inv.machines[0], &fewer).await?;

        let out = ec2.describe_instances().instance_ids(&m.id).send().await?;
        let instance = out.reservations().iter().flat_map(|r| r.instances()).next().context("gone")?;
        let stored = tags::to_map(instance.tags());
        ensure!(stored.get("Owner").map(String::as_str) == Some("alice"), "{stored:?}");
        ensure!(!stored.contains_key("relay") && stored.contains_key("peer_cluster"), "{stored:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn changes_that_replace_are_refused_as_updates() -> anyhow::Result<()> {
    bounded(async {
        let Some(h) = Harness::start("changes_that_replace_are_refused").await? else { return Ok(()) };
        let fw = h.provider.create_firewall(&h.firewall(REGION)).await?;
        let spec = h.machine("virginia", 0, REGION);
        let m = h.provider.create_machine(&spec, &h.ctx(&fw)).await?;
        let mut bigger = spec.clone();
        bigger.size = "t3.large".into();
        let err =
            h.provider.update_machine(&m, &bigger).await.err().ok_or_else(|| anyhow!("resize accepted"))?;
        ensure!(err.kind == ErrorKind::Invalid && err.message.contains("size"), "{err}");
        ensure!(h.proxy.count("ModifyInstanceAttribute") == 0);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn the_default_image_is_looked_up_once_per_region() -> anyhow::Result<()> {
    bounded(async {
        let Some(h) = Harness::start("the_default_image_is_looked_up_once").await? else { return Ok(()) };
        let fw = h.provider.create_firewall(&h.firewall(REGION)).await?;
        for slot in 0..3 {
            let m = h.provider.create_machine(&h.machine("virginia", slot, REGION), &h.ctx(&fw)).await?;
            ensure!(m.image == DEBIAN_AMI, "newest Debian amd64 by Debian's account, got {}", m.image);
        }
        ensure!(h.proxy.count("DescribeImages") == 1, "{}", h.proxy.count("DescribeImages"));
        // An explicit image is used as given, without a lookup.
        let mut pinned = h.machine("virginia", 3, REGION);
        pinned.image = Some("ami-0de12a2024010100a".into());
        let m = h.provider.create_machine(&pinned, &h.ctx(&fw)).await?;
        ensure!(m.image == "ami-0de12a2024010100a");
        ensure!(h.proxy.count("DescribeImages") == 1);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_machine_without_the_networks_pki_is_refused_before_any_request() -> anyhow::Result<()> {
    bounded(async {
        let Some(h) = Harness::start("a_machine_without_the_pki").await? else { return Ok(()) };
        let fw = h.provider.create_firewall(&h.firewall(REGION)).await?;
        let ctx = peerfleet_core::provider::CreateContext { firewall: Some(fw), pki: None };
        h.proxy.clear();
        let err = h.provider.create_machine(&h.machine("virginia", 0, REGION), &ctx).await.err();
        ensure!(err.map(|e| e.kind) == Some(ErrorKind::Invalid));
        ensure!(h.proxy.requests().is_empty(), "{:?}", h.proxy.requests());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_replace_launches_the_next_generation_then_terminates_the_old() -> anyhow::Result<()> {
    bounded(async {
        let Some(h) = Harness::start("a_replace_launches_the_next_generation").await? else { return Ok(()) };
        let fw = h.provider.create_firewall(&h.firewall(REGION)).await?;
        let spec = h.machine("virginia", 0, REGION);
        let old = h.provider.create_machine(&spec, &h.ctx(&fw)).await?;

        // A size change replaces: the planner raises the generation, which changes the token.
        let mut next = spec.clone();
        next.size = "t3.small".into();
        next.generation = 1;
        next.idempotency_key = peerfleet_core::plan::idempotency_key(&h.network, &next.address, 1);
        let new = h.provider.create_machine(&next, &h.ctx(&fw)).await?;
        ensure!(new.id != old.id && new.generation == 1 && new.size == "t3.small");
        h.provider.delete_machine(&old).await?;

        let inv = h.provider.inventory(&h.network, REGION).await?;
        ensure!(inv.machines.len() == 1, "{:#?}", inv.machines);
        let m = &inv.machines[0];
        ensure!(m.id == new.id && m.generation == 1 && m.size == "t3.small" && m.address == spec.address);
        Ok(())
    })
    .await
}
