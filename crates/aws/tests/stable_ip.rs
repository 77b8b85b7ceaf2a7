//! Elastic IPs against moto: allocate tagged, associate, move to a replacement, release.

use anyhow::{Context as _, ensure};
use aws_sdk_ec2::types::Address as ElasticIp;
use peerfleet_aws::testing::Fault;
use peerfleet_aws::{parse_stable_ip_id, tags};
use peerfleet_core::Address;
use peerfleet_core::ProviderKind;
use peerfleet_core::provider::MachineProvider;
use peerfleet_core::resource::{Firewall, Machine, StableIpSpec};

use crate::support::{Harness, bounded};

const REGION: &str = "sa-east-1";

async fn stored(h: &Harness, allocation: &str) -> anyhow::Result<Option<ElasticIp>> {
    let out = h.inspect(REGION).describe_addresses().send().await?;
    Ok(out.addresses().iter().find(|a| a.allocation_id() == Some(allocation)).cloned())
}

/// A firewall, a machine in [`REGION`] behind it, and the spec of the stable IP the machine carries.
async fn host_with_stable_ip(h: &Harness) -> anyhow::Result<(Firewall, Machine, StableIpSpec)> {
    let fw = h.provider.create_firewall(&h.firewall(REGION)).await?;
    let host = h.provider.create_machine(&h.machine("saopaulo", 0, REGION), &h.ctx(&fw)).await?;
    let spec = StableIpSpec {
        address: Address::stable_ip("saopaulo", 0),
        network: h.network.clone(),
        machine: host.address.clone(),
        provider: ProviderKind::Aws,
        region: REGION.into(),
    };
    Ok((fw, host, spec))
}

#[tokio::test]
async fn elastic_ip_is_allocated_tagged_moved_and_released() -> anyhow::Result<()> {
    bounded(async {
        let Some(h) = Harness::start("elastic_ip_is_allocated_tagged_moved_and_released").await? else {
            return Ok(());
        };
        let (fw, host, spec) = host_with_stable_ip(&h).await?;

        let ip = h.provider.create_stable_ip(&spec, &host).await?;
        let (region, allocation) = parse_stable_ip_id(&ip.id)?;
        ensure!(region == REGION && ip.machine_id.as_deref() == Some(host.id.as_str()), "{ip:?}");
        let alloc = h.proxy.requests_of("AllocateAddress");
        ensure!(
            alloc.len() == 1 && alloc[0].tag_specifications()[0].0 == "elastic-ip",
            "tagged at allocation"
        );
        let eip = stored(&h, allocation).await?.context("not allocated")?;
        ensure!(eip.instance_id() == Some(host.id.as_str()) && eip.public_ip() == Some(ip.ip.as_str()));
        let eip_tags = tags::to_map(eip.tags());
        ensure!(eip_tags.get(tags::ADDRESS).map(String::as_str) == Some("ip.saopaulo[0]"), "{eip_tags:?}");

        // A repeated create (crash after allocating) finds the address instead of allocating another.
        let again = h.provider.create_stable_ip(&spec, &host).await?;
        ensure!(
            again.id == ip.id && h.proxy.count("AllocateAddress") == 1,
            "{again:?} vs {ip:?}: {:?}",
            h.proxy.requests_of("DescribeAddresses")
        );

        // The host is replaced: the address moves to the successor and keeps its IP.
        let mut successor_spec = h.machine("saopaulo", 0, REGION);
        successor_spec.generation = 1;
        successor_spec.idempotency_key =
            peerfleet_core::plan::idempotency_key(&h.network, &successor_spec.address, 1);
        let successor = h.provider.create_machine(&successor_spec, &h.ctx(&fw)).await?;
        let moved = h.provider.attach_stable_ip(&ip, &successor).await?;
        ensure!(moved.ip == ip.ip && moved.machine_id.as_deref() == Some(successor.id.as_str()));
        let eip = stored(&h, allocation).await?.context("gone")?;
        ensure!(eip.instance_id() == Some(successor.id.as_str()), "{eip:?}");

        let inv = h.provider.inventory(&h.network, REGION).await?;
        ensure!(inv.stable_ips == vec![moved.clone()], "{:?}", inv.stable_ips);

        h.provider.delete_stable_ip(&moved).await?;
        ensure!(stored(&h, allocation).await?.is_none(), "released");
        ensure!(h.proxy.count("DisassociateAddress") == 1 && h.proxy.count("ReleaseAddress") == 1);
        h.provider.delete_stable_ip(&moved).await?;
        ensure!(h.provider.inventory(&h.network, REGION).await?.stable_ips.is_empty());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_lost_allocate_address_answer_is_looked_up_never_allocated_twice() -> anyhow::Result<()> {
    bounded(async {
        let Some(h) = Harness::start("a_lost_allocate_address_answer_is_looked_up").await? else {
            return Ok(());
        };
        let (_, host, spec) = host_with_stable_ip(&h).await?;
        // EC2 allocates, the answer never arrives. AllocateAddress has no client token: a blind
        // repeat (the SDK's own retry) would allocate a second, billed address.
        h.proxy.fail("AllocateAddress", 1, Fault::LoseResponse);
        let ip = h.provider.create_stable_ip(&spec, &host).await?;

        ensure!(h.proxy.count("AllocateAddress") == 1, "allocated once, then found by its tags");
        let all = h.inspect(REGION).describe_addresses().send().await?;
        ensure!(all.addresses().len() == 1, "one Elastic IP in the region: {:?}", all.addresses());
        let (_, allocation) = parse_stable_ip_id(&ip.id)?;
        let eip = stored(&h, allocation).await?.context("the adopted address exists")?;
        ensure!(eip.instance_id() == Some(host.id.as_str()), "and is associated with its host");
        Ok(())
    })
    .await
}
