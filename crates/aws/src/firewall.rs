//! Firewalls as security groups: one per network per region, named `peerfleet-<network>`, in the
//! region's default VPC.
//!
//! Only what a [`FirewallRule`] can say is managed: inbound TCP/UDP to one port from CIDRs. Outbound
//! stays EC2's default (everything; machines fetch packages and images), and inbound rules of other
//! shapes someone added by hand (port ranges, group references) are neither reported nor revoked.

use std::collections::BTreeSet;

use aws_sdk_ec2::types::{IpPermission, IpRange, Ipv6Range, ResourceType, SecurityGroup};
use peerfleet_core::provider::{ErrorKind, ProviderError};
use peerfleet_core::resource::{Firewall, FirewallRule, FirewallSpec, Protocol};
use peerfleet_core::{Address, ProviderKind};

use crate::client::{AwsProvider, Ec2, invalid};
use crate::error::{PROVIDER, classify};
use crate::tags;

/// One allowed (protocol, port, source CIDR).
type Grant = (Protocol, u16, String);

/// The security group name of a network.
pub fn group_name(network: &str) -> String {
    format!("peerfleet-{network}")
}

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

fn grants(rules: &[FirewallRule]) -> BTreeSet<Grant> {
    rules.iter().flat_map(|r| r.sources.iter().map(|s| (r.protocol, r.port, s.clone()))).collect()
}

/// `grants` as rules in the core's canonical form ([`FirewallRule::canonical`]).
fn rules(grants: &BTreeSet<Grant>) -> Vec<FirewallRule> {
    let single: Vec<FirewallRule> = grants
        .iter()
        .map(|(protocol, port, source)| FirewallRule {
            protocol: *protocol,
            port: *port,
            sources: vec![source.clone()],
        })
        .collect();
    FirewallRule::canonical(&single)
}

/// EC2 permissions for `grants`, one per (protocol, port).
fn permissions(grants: &BTreeSet<Grant>) -> Vec<IpPermission> {
    rules(grants)
        .into_iter()
        .map(|rule| {
            let (v6, v4): (Vec<_>, Vec<_>) = rule.sources.iter().partition(|s| s.contains(':'));
            IpPermission::builder()
                .ip_protocol(protocol_name(rule.protocol))
                .from_port(i32::from(rule.port))
                .to_port(i32::from(rule.port))
                .set_ip_ranges(Some(v4.into_iter().map(|c| IpRange::builder().cidr_ip(c).build()).collect()))
                .set_ipv6_ranges(Some(
                    v6.into_iter().map(|c| Ipv6Range::builder().cidr_ipv6(c).build()).collect(),
                ))
                .build()
        })
        .collect()
}

/// The grants a group's permissions express in peerfleet's terms (single-port TCP/UDP from CIDRs).
fn grants_of(permissions: &[IpPermission]) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for p in permissions {
        let protocol = match p.ip_protocol() {
            Some("tcp" | "6") => Protocol::Tcp,
            Some("udp" | "17") => Protocol::Udp,
            _ => continue,
        };
        let (Some(from), Some(to)) = (p.from_port(), p.to_port()) else { continue };
        let Ok(port) = u16::try_from(from) else { continue };
        if from != to {
            continue;
        }
        for cidr in p.ip_ranges().iter().filter_map(|r| r.cidr_ip()) {
            out.insert((protocol, port, cidr.to_string()));
        }
        for cidr in p.ipv6_ranges().iter().filter_map(|r| r.cidr_ipv6()) {
            out.insert((protocol, port, cidr.to_string()));
        }
    }
    out
}

fn firewall_from(group: &SecurityGroup) -> Option<Firewall> {
    let map = tags::to_map(group.tags());
    let address = map.get(tags::ADDRESS)?.parse::<Address>().ok()?;
    if !matches!(address, Address::Firewall { provider: ProviderKind::Aws, .. }) {
        return None;
    }
    Some(Firewall {
        id: group.group_id()?.to_string(),
        address,
        rules: rules(&grants_of(group.ip_permissions())),
    })
}

/// The region of a firewall address.
fn region_of(address: &Address) -> Result<&str, ProviderError> {
    match address {
        Address::Firewall { provider: ProviderKind::Aws, region } => Ok(region),
        other => Err(invalid(format!("{other} is not an AWS firewall address"))),
    }
}

/// The network's security groups in one region.
pub(crate) async fn list(ec2: &Ec2, network: &str) -> Result<Vec<Firewall>, ProviderError> {
    let mut pages = ec2
        .client
        .describe_security_groups()
        .filters(tags::tag_filter(tags::NETWORK, network))
        .into_paginator()
        .send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| classify("DescribeSecurityGroups", &ec2.target, e))?;
        out.extend(page.security_groups().iter().filter_map(firewall_from));
    }
    Ok(out)
}

impl AwsProvider {
    pub(crate) async fn create_group(&self, spec: &FirewallSpec) -> Result<Firewall, ProviderError> {
        let region = region_of(&spec.address)?;
        let ec2 = self.ec2(region).await;
        let name = group_name(&spec.network);
        let created = ec2
            .client
            .create_security_group()
            .group_name(&name)
            .description(format!(
                "peerfleet network {}: peer and fetch ports, admin ports from admin CIDRs",
                spec.network
            ))
            .set_tag_specifications(Some(tags::specifications(
                &[ResourceType::SecurityGroup],
                &tags::object_tags(&spec.network, &spec.address, &name),
            )))
            .send()
            .await;
        let (id, have) = match created {
            Ok(out) => {
                let id = out.group_id().ok_or_else(|| {
                    ProviderError::new(
                        ErrorKind::Transient,
                        PROVIDER,
                        "CreateSecurityGroup returned no group ID",
                    )
                })?;
                (id.to_string(), Vec::new())
            }
            Err(e) => {
                let e = classify("CreateSecurityGroup", &ec2.target, e);
                if e.kind != ErrorKind::Conflict {
                    return Err(e);
                }
                // A retry after a crash: the group exists. Adopt it only if it is this network's.
                let mine = list(&ec2, &spec.network).await?.into_iter().find(|f| f.address == spec.address);
                match mine {
                    Some(existing) => (existing.id, existing.rules),
                    None => {
                        return Err(ProviderError::new(
                            ErrorKind::Conflict,
                            PROVIDER,
                            format!(
                                "a security group named `{name}` exists in {region} but is not tagged as {} of \
                                 network {}: rename or delete it",
                                spec.address, spec.network
                            ),
                        ));
                    }
                }
            }
        };
        self.converge_rules(&ec2, &id, &have, &spec.rules).await?;
        Ok(Firewall { id, address: spec.address.clone(), rules: rules(&grants(&spec.rules)) })
    }

    pub(crate) async fn update_group(
        &self,
        current: &Firewall,
        spec: &FirewallSpec,
    ) -> Result<Firewall, ProviderError> {
        let ec2 = self.ec2(region_of(&spec.address)?).await;
        self.converge_rules(&ec2, &current.id, &current.rules, &spec.rules).await?;
        Ok(Firewall {
            id: current.id.clone(),
            address: spec.address.clone(),
            rules: rules(&grants(&spec.rules)),
        })
    }

    /// Authorizes what `want` has beyond `have` and revokes the rest (at most two requests). When
    /// `have` was stale (a duplicate or missing permission), re-reads the group once and tries again.
    async fn converge_rules(
        &self,
        ec2: &Ec2,
        group_id: &str,
        have: &[FirewallRule],
        want: &[FirewallRule],
    ) -> Result<(), ProviderError> {
        let want = grants(want);
        let mut have = grants(have);
        for attempt in 0..2 {
            let result = self.apply_rule_diff(ec2, group_id, &have, &want).await;
            match result {
                Err(e) if attempt == 0 && matches!(e.kind, ErrorKind::Conflict | ErrorKind::NotFound) => {
                    have = self.group_grants(ec2, group_id).await?;
                }
                other => return other,
            }
        }
        Ok(())
    }

    async fn apply_rule_diff(
        &self,
        ec2: &Ec2,
        group_id: &str,
        have: &BTreeSet<Grant>,
        want: &BTreeSet<Grant>,
    ) -> Result<(), ProviderError> {
        let add: BTreeSet<Grant> = want.difference(have).cloned().collect();
        let remove: BTreeSet<Grant> = have.difference(want).cloned().collect();
        if !add.is_empty() {
            ec2.client
                .authorize_security_group_ingress()
                .group_id(group_id)
                .set_ip_permissions(Some(permissions(&add)))
                .send()
                .await
                .map_err(|e| classify("AuthorizeSecurityGroupIngress", &ec2.target, e))?;
        }
        if !remove.is_empty() {
            ec2.client
                .revoke_security_group_ingress()
                .group_id(group_id)
                .set_ip_permissions(Some(permissions(&remove)))
                .send()
                .await
                .map_err(|e| classify("RevokeSecurityGroupIngress", &ec2.target, e))?;
        }
        Ok(())
    }

    async fn group_grants(&self, ec2: &Ec2, group_id: &str) -> Result<BTreeSet<Grant>, ProviderError> {
        let out = ec2
            .client
            .describe_security_groups()
            .group_ids(group_id)
            .send()
            .await
            .map_err(|e| classify("DescribeSecurityGroups", &ec2.target, e))?;
        Ok(out.security_groups().iter().flat_map(|g| grants_of(g.ip_permissions())).collect())
    }

    /// Deletes the group. While instances that used it are still shutting down EC2 answers
    /// `DependencyViolation`; that is retried up to `waits.dependency`. Past that bound something
    /// else (made by hand) uses the group, which no retry fixes, so the error is a `Conflict`.
    pub(crate) async fn delete_group(&self, current: &Firewall) -> Result<(), ProviderError> {
        let region = region_of(&current.address)?;
        let ec2 = self.ec2(region).await;
        let mut backoff = self.settings.waits.poll(self.settings.waits.dependency);
        loop {
            let e = match ec2.client.delete_security_group().group_id(&current.id).send().await {
                Ok(_) => return Ok(()),
                Err(e) => classify("DeleteSecurityGroup", &ec2.target, e),
            };
            match e.kind {
                ErrorKind::NotFound => return Ok(()),
                ErrorKind::Conflict if backoff.wait().await => continue,
                ErrorKind::Conflict => {
                    return Err(ProviderError {
                        message: format!(
                            "{} (security group {}) is still in use after {:?}; whatever uses it was not made \
                             by peerfleet for this network: {}",
                            current.address, current.id, self.settings.waits.dependency, e.message
                        ),
                        ..e
                    });
                }
                _ => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(port: u16, sources: &[&str]) -> FirewallRule {
        FirewallRule {
            protocol: Protocol::Tcp,
            port,
            sources: sources.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn rules_round_trip_through_ec2_permissions() {
        let spec = vec![
            rule(2376, &["198.51.100.0/24", "2001:db8::/32"]),
            rule(8080, &["0.0.0.0/0"]),
            rule(26656, &["0.0.0.0/0"]),
        ];
        let perms = permissions(&grants(&spec));
        assert_eq!(perms.len(), 3);
        assert_eq!(perms[0].ipv6_ranges().len(), 1);
        assert_eq!(rules(&grants_of(&perms)), spec);
    }

    #[test]
    fn shapes_peerfleet_does_not_manage_are_ignored() {
        let range = IpPermission::builder()
            .ip_protocol("tcp")
            .from_port(1000)
            .to_port(2000)
            .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
            .build();
        let all = IpPermission::builder()
            .ip_protocol("-1")
            .ip_ranges(IpRange::builder().cidr_ip("10.0.0.0/8").build())
            .build();
        assert!(grants_of(&[range, all]).is_empty());
    }

    #[test]
    fn canonical_rules_sort_sources_and_ports() {
        let messy = vec![rule(26656, &["b", "a"]), rule(80, &["z"])];
        assert_eq!(rules(&grants(&messy)), vec![rule(80, &["z"]), rule(26656, &["a", "b"])]);
    }
}
