//! Security groups against moto: rules as declared, Docker's TLS port only from admin CIDRs, rule
//! changes as a difference, adoption after a crash, deletion while in use.

use std::collections::BTreeSet;

use anyhow::{Context as _, ensure};
use aws_sdk_ec2::types::Filter;
use peerfleet_aws::group_name;
use peerfleet_aws::testing::{Fault, rule};
use peerfleet_core::network::ports;
use peerfleet_core::plan::diff;
use peerfleet_core::provider::{ErrorKind, MachineProvider};

use crate::support::{ADMIN_CIDRS, Harness, bounded};

const REGION: &str = "eu-central-1";

/// (port, CIDR) pairs of the group's inbound TCP rules, as EC2 stores them.
async fn stored_grants(h: &Harness, group_id: &str) -> anyhow::Result<BTreeSet<(i32, String)>> {
    let out = h.inspect(REGION).describe_security_groups().group_ids(group_id).send().await?;
    let group = out.security_groups().first().context("group gone")?;
    let mut grants = BTreeSet::new();
    for p in group.ip_permissions() {
        ensure!(p.ip_protocol() == Some("tcp") && p.from_port() == p.to_port(), "unexpected shape {p:?}");
        for r in p.ip_ranges() {
            grants.insert((p.from_port().unwrap_or(-1), r.cidr_ip().unwrap_or_default().to_string()));
        }
    }
    Ok(grants)
}

#[tokio::test]
async fn docker_tls_port_is_open_only_to_admin_cidrs() -> anyhow::Result<()> {
    bounded(async {
        let Some(h) = Harness::start("docker_tls_port_is_open_only_to_admin_cidrs").await? else {
            return Ok(());
        };
        let spec = h.firewall(REGION);
        let fw = h.provider.create_firewall(&spec).await?;
        ensure!(fw.rules == spec.rules, "{:?}", fw.rules);

        let grants = stored_grants(&h, &fw.id).await?;
        let tls: BTreeSet<&str> = grants
            .iter()
            .filter(|(p, _)| *p == i32::from(ports::DOCKER_TLS))
            .map(|(_, c)| c.as_str())
            .collect();
        ensure!(tls == BTreeSet::from(ADMIN_CIDRS), "Docker TLS port sources: {tls:?}");
        ensure!(!grants.iter().any(|(p, _)| *p == 22), "no SSH unless asked");
        ensure!(grants.contains(&(i32::from(ports::PEER), "0.0.0.0/0".into())));
        ensure!(grants.contains(&(i32::from(ports::FETCH), "0.0.0.0/0".into())));
        ensure!(grants.len() == 4, "{grants:?}");

        // Name and tags from creation.
        let out = h
            .inspect(REGION)
            .describe_security_groups()
            .filters(Filter::builder().name("group-name").values(group_name(&h.network)).build())
            .send()
            .await?;
        let group = out.security_groups().first().context("not found by name")?;
        let tags = peerfleet_aws::tags::to_map(group.tags());
        ensure!(
            tags.get(peerfleet_aws::tags::ADDRESS).map(String::as_str) == Some("firewall.aws.eu-central-1")
        );
        ensure!(tags.contains_key("peer_cluster"), "{tags:?}");

        let inv = h.provider.inventory(&h.network, REGION).await?;
        ensure!(inv.firewalls == vec![fw], "refresh reads back the declared rules: {:?}", inv.firewalls);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn rule_changes_authorize_and_revoke_only_the_difference() -> anyhow::Result<()> {
    bounded(async {
        let Some(h) = Harness::start("rule_changes_authorize_and_revoke").await? else { return Ok(()) };
        let spec = h.firewall(REGION);
        let fw = h.provider.create_firewall(&spec).await?;

        let mut changed = spec.clone();
        changed.rules = vec![
            rule(22, &["198.51.100.0/24"]),
            rule(ports::DOCKER_TLS, &["198.51.100.0/24"]),
            rule(ports::FETCH, &["0.0.0.0/0"]),
            rule(ports::PEER, &["0.0.0.0/0"]),
        ];
        h.proxy.clear();
        let updated = h.provider.update_firewall(&fw, &changed).await?;
        ensure!(updated.rules == changed.rules && updated.id == fw.id);

        let auth = h.proxy.requests_of("AuthorizeSecurityGroupIngress");
        let revoke = h.proxy.requests_of("RevokeSecurityGroupIngress");
        ensure!(auth.len() == 1 && revoke.len() == 1, "{:?}", h.proxy.requests());
        ensure!(auth[0].params.get("IpPermissions.1.FromPort").map(String::as_str) == Some("22"));
        ensure!(!auth[0].params.contains_key("IpPermissions.2.FromPort"), "only SSH is new");
        ensure!(
            revoke[0].params.get("IpPermissions.1.IpRanges.1.CidrIp").map(String::as_str)
                == Some("203.0.113.7/32")
        );

        let inv = h.provider.inventory(&h.network, REGION).await?;
        ensure!(inv.firewalls.len() == 1 && inv.firewalls[0].rules == changed.rules, "{:?}", inv.firewalls);

        // Nothing to change: no request.
        h.proxy.clear();
        h.provider.update_firewall(&inv.firewalls[0], &changed).await?;
        ensure!(h.proxy.requests().is_empty(), "{:?}", h.proxy.requests());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn reordered_firewall_sources_produce_no_diff() -> anyhow::Result<()> {
    bounded(async {
        let Some(h) = Harness::start("reordered_firewall_sources_produce_no_diff").await? else {
            return Ok(());
        };
        let spec = h.firewall(REGION);
        h.provider.create_firewall(&spec).await?;
        let inv = h.provider.inventory(&h.network, REGION).await?;
        let actual = inv.firewalls.first().context("the group is listed")?;
        // The same access, written in another order: rules reversed, each rule's sources reversed.
        let mut reordered = spec.clone();
        reordered.rules.reverse();
        for r in &mut reordered.rules {
            r.sources.reverse();
        }
        ensure!(reordered.rules != spec.rules, "the test must reorder something");
        let reasons = diff::firewall(&reordered, actual);
        ensure!(reasons.is_empty(), "{reasons:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn creating_the_group_again_after_a_crash_adopts_it() -> anyhow::Result<()> {
    bounded(async {
        let Some(h) = Harness::start("creating_the_group_again").await? else { return Ok(()) };
        let spec = h.firewall(REGION);
        let first = h.provider.create_firewall(&spec).await?;
        let again = h.provider.create_firewall(&spec).await?;
        ensure!(again.id == first.id && again.rules == spec.rules);
        let inv = h.provider.inventory(&h.network, REGION).await?;
        ensure!(inv.firewalls.len() == 1);

        // A same-named group that is not ours is not adopted.
        let other = h.inspect("us-east-1");
        other
            .create_security_group()
            .group_name(group_name(&h.network))
            .description("by hand")
            .send()
            .await?;
        let mut elsewhere = spec.clone();
        elsewhere.region = "us-east-1".into();
        elsewhere.address = peerfleet_core::Address::firewall(peerfleet_core::ProviderKind::Aws, "us-east-1");
        let err = h.provider.create_firewall(&elsewhere).await.err().context("adopted a stranger's group")?;
        ensure!(err.kind == ErrorKind::Conflict && err.message.contains("not tagged"), "{err}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_group_still_in_use_is_retried_then_reported_as_a_conflict() -> anyhow::Result<()> {
    bounded(async {
        let Some(h) = Harness::start("a_group_still_in_use").await? else { return Ok(()) };
        let fw = h.provider.create_firewall(&h.firewall(REGION)).await?;
        let in_use = Fault::Error { status: 400, code: "DependencyViolation".into() };

        // Briefly in use (instances still shutting down): retried, then deleted.
        h.proxy.fail("DeleteSecurityGroup", 2, in_use.clone());
        h.provider.delete_firewall(&fw).await?;
        ensure!(h.proxy.count("DeleteSecurityGroup") == 3);

        // In use for good: a conflict once the wait is over, with EC2's request ID.
        let fw = h.provider.create_firewall(&h.firewall(REGION)).await?;
        h.proxy.fail("DeleteSecurityGroup", 1000, in_use);
        let err = h.provider.delete_firewall(&fw).await.err().context("deleted while in use")?;
        ensure!(err.kind == ErrorKind::Conflict && !err.is_retryable(), "{err}");
        ensure!(err.message.contains("still in use"), "{err}");
        ensure!(err.request_id.as_deref().is_some_and(|id| id.starts_with("peerfleet-fault-")), "{err:?}");
        Ok(())
    })
    .await
}
