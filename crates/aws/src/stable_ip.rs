//! Stable addresses as Elastic IPs: allocated tagged, associated with the machine hosting genesis or
//! master, re-associated when that machine is replaced, released on delete.
//!
//! A [`StableIp`]'s ID is `<region>/<allocation-id>`: the core's `StableIp` carries no region, and a
//! delete must know which regional endpoint to call.

use aws_sdk_ec2::config::retry::RetryConfig;
use aws_sdk_ec2::types::{Address as ElasticIp, DomainType, ResourceType};
use peerfleet_core::Address;
use peerfleet_core::network::ProviderKind;
use peerfleet_core::provider::{ErrorKind, ProviderError};
use peerfleet_core::resource::{Machine, StableIp, StableIpSpec};

use crate::client::{AwsProvider, Ec2, invalid};
use crate::error::{PROVIDER, classify};
use crate::tags;

/// The stable IP ID of an allocation in a region.
pub fn stable_ip_id(region: &str, allocation_id: &str) -> String {
    format!("{region}/{allocation_id}")
}

/// Region and allocation ID of a stable IP ID.
pub fn parse_stable_ip_id(id: &str) -> Result<(&str, &str), ProviderError> {
    id.split_once('/')
        .filter(|(r, a)| !r.is_empty() && !a.is_empty())
        .ok_or_else(|| invalid(format!("`{id}` is not an AWS stable IP ID (REGION/ALLOCATION-ID)")))
}

fn stable_ip_from(address: &ElasticIp, region: &str) -> Option<StableIp> {
    let map = tags::to_map(address.tags());
    let owner = map.get(tags::ADDRESS)?.parse::<Address>().ok()?;
    if !matches!(owner, Address::StableIp { .. }) {
        return None;
    }
    Some(StableIp {
        id: stable_ip_id(region, address.allocation_id()?),
        address: owner,
        ip: address.public_ip()?.to_string(),
        machine_id: address.instance_id().map(str::to_string),
        provider: Some(ProviderKind::Aws),
    })
}

/// The network's Elastic IPs in one region (`DescribeAddresses` is not paginated).
pub(crate) async fn list(ec2: &Ec2, network: &str) -> Result<Vec<StableIp>, ProviderError> {
    let out = ec2
        .client
        .describe_addresses()
        .filters(tags::tag_filter(tags::NETWORK, network))
        .send()
        .await
        .map_err(|e| classify("DescribeAddresses", &ec2.target, e))?;
    Ok(out.addresses().iter().filter_map(|a| stable_ip_from(a, &ec2.target.region)).collect())
}

impl AwsProvider {
    pub(crate) async fn allocate_ip(
        &self,
        spec: &StableIpSpec,
        machine: &Machine,
    ) -> Result<StableIp, ProviderError> {
        let ec2 = self.ec2(&spec.region).await;
        let ip = self.find_or_allocate(&ec2, spec).await?;
        self.associate(&ec2, ip, machine).await
    }

    /// The network's Elastic IP for `spec.address`: the one that exists, else a new allocation.
    ///
    /// AllocateAddress has no client token, so a repeated request allocates a second address. After
    /// a crash the address may exist already, and a response lost after EC2 allocated (a timeout, a
    /// reset connection) leaves one behind too: so the SDK must not repeat the request on its own.
    /// This loop is the request's one retry layer: look the address up by its ownership tags, and
    /// allocate (once) only when it is not there; a retryable failure looks up again before the
    /// next allocation, within the provider's retry policy. The address is matched here, not in the
    /// filter: filter values are patterns, and addresses contain `[` and `]`.
    async fn find_or_allocate(&self, ec2: &Ec2, spec: &StableIpSpec) -> Result<StableIp, ProviderError> {
        let mut attempts = self.settings.retry.attempts();
        loop {
            let existing = list(ec2, &spec.network).await?.into_iter().find(|ip| ip.address == spec.address);
            if let Some(ip) = existing {
                return Ok(ip);
            }
            let name = format!("{}-{}", spec.network, spec.address.slug());
            let sent = ec2
                .client
                .allocate_address()
                .domain(DomainType::Vpc)
                .set_tag_specifications(Some(tags::specifications(
                    &[ResourceType::ElasticIp],
                    &tags::object_tags(&spec.network, &spec.address, &name),
                )))
                .customize()
                .config_override(
                    aws_sdk_ec2::config::Builder::default().retry_config(RetryConfig::disabled()),
                )
                .send()
                .await;
            let out = match sent {
                Ok(out) => out,
                Err(e) => {
                    let error = classify("AllocateAddress", &ec2.target, e);
                    if !error.is_retryable() {
                        return Err(error);
                    }
                    tracing::debug!(address = %spec.address, "AllocateAddress failed ({error}); looking up before trying again");
                    if !attempts.wait(error.retry_after()).await {
                        return Err(error);
                    }
                    continue;
                }
            };
            let (Some(allocation), Some(public_ip)) = (out.allocation_id(), out.public_ip()) else {
                return Err(ProviderError::new(
                    ErrorKind::Transient,
                    PROVIDER,
                    "AllocateAddress returned no allocation ID or address",
                ));
            };
            return Ok(StableIp {
                id: stable_ip_id(&spec.region, allocation),
                address: spec.address.clone(),
                ip: public_ip.to_string(),
                machine_id: None,
                provider: Some(ProviderKind::Aws),
            });
        }
    }

    pub(crate) async fn associate_ip(
        &self,
        current: &StableIp,
        machine: &Machine,
    ) -> Result<StableIp, ProviderError> {
        let (region, _) = parse_stable_ip_id(&current.id)?;
        if region != machine.region {
            return Err(invalid(format!(
                "{} is in {region} and cannot be attached to {} in {}",
                current.address, machine.address, machine.region
            )));
        }
        let ec2 = self.ec2(region).await;
        self.associate(&ec2, current.clone(), machine).await
    }

    async fn associate(&self, ec2: &Ec2, ip: StableIp, machine: &Machine) -> Result<StableIp, ProviderError> {
        if ip.machine_id.as_deref() == Some(machine.id.as_str()) {
            return Ok(ip);
        }
        let (_, allocation) = parse_stable_ip_id(&ip.id)?;
        self.wait_running(ec2, machine).await?;
        ec2.client
            .associate_address()
            .allocation_id(allocation)
            .instance_id(&machine.id)
            // Re-pointing the address from a replaced machine to its successor is the whole point.
            .allow_reassociation(true)
            .send()
            .await
            .map_err(|e| classify("AssociateAddress", &ec2.target, e))?;
        Ok(StableIp { machine_id: Some(machine.id.clone()), ..ip })
    }

    pub(crate) async fn release_ip(&self, current: &StableIp) -> Result<(), ProviderError> {
        let (region, allocation) = parse_stable_ip_id(&current.id)?;
        let ec2 = self.ec2(region).await;
        let found = match ec2.client.describe_addresses().allocation_ids(allocation).send().await {
            Ok(out) => out.addresses().first().cloned(),
            Err(e) => {
                let e = classify("DescribeAddresses", &ec2.target, e);
                if e.kind == ErrorKind::NotFound {
                    return Ok(());
                }
                return Err(e);
            }
        };
        let Some(found) = found else { return Ok(()) };
        if let Some(association) = found.association_id()
            && let Err(e) = ec2.client.disassociate_address().association_id(association).send().await
        {
            let e = classify("DisassociateAddress", &ec2.target, e);
            if e.kind != ErrorKind::NotFound {
                return Err(e);
            }
        }
        match ec2.client.release_address().allocation_id(allocation).send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = classify("ReleaseAddress", &ec2.target, e);
                if e.kind == ErrorKind::NotFound { Ok(()) } else { Err(e) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_ip_ids_carry_their_region() {
        let id = stable_ip_id("cn-north-1", "eipalloc-0abc");
        assert_eq!(id, "cn-north-1/eipalloc-0abc");
        assert_eq!(parse_stable_ip_id(&id).ok(), Some(("cn-north-1", "eipalloc-0abc")));
        for bad in ["eipalloc-0abc", "/eipalloc", "us-east-1/"] {
            assert!(parse_stable_ip_id(bad).is_err(), "{bad}");
        }
    }
}
