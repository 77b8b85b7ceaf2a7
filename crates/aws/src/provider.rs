//! The [`MachineProvider`] impl of [`AwsProvider`]: each call is one operation of `machines`,
//! `firewall` or `stable_ip`.

use async_trait::async_trait;
use peerfleet_core::ProviderKind;
use peerfleet_core::provider::{CreateContext, Inventory, MachineProvider, ProviderError};
use peerfleet_core::resource::{Firewall, FirewallSpec, Machine, MachineSpec, StableIp, StableIpSpec};

use crate::client::AwsProvider;

#[async_trait]
impl MachineProvider for AwsProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Aws
    }

    /// The SDK retries each request, configured by [`crate::AwsSettings::retry`].
    fn retries_requests(&self) -> bool {
        true
    }

    async fn inventory(&self, network: &str, region: &str) -> Result<Inventory, ProviderError> {
        let ec2 = self.ec2(region).await;
        let (mut machines, mut firewalls, mut stable_ips) = tokio::try_join!(
            crate::machines::list(&ec2, network),
            crate::firewall::list(&ec2, network),
            crate::stable_ip::list(&ec2, network),
        )?;
        machines.sort_by(|a, b| a.address.cmp(&b.address).then_with(|| a.id.cmp(&b.id)));
        firewalls.sort_by(|a, b| a.address.cmp(&b.address).then_with(|| a.id.cmp(&b.id)));
        stable_ips.sort_by(|a, b| a.address.cmp(&b.address).then_with(|| a.id.cmp(&b.id)));
        Ok(Inventory { machines, firewalls, stable_ips })
    }

    async fn create_machine(
        &self,
        spec: &MachineSpec,
        ctx: &CreateContext,
    ) -> Result<Machine, ProviderError> {
        self.create_instance(spec, ctx).await
    }

    async fn update_machine(&self, current: &Machine, spec: &MachineSpec) -> Result<Machine, ProviderError> {
        self.update_instance(current, spec).await
    }

    async fn delete_machine(&self, current: &Machine) -> Result<(), ProviderError> {
        self.terminate_instance(current).await
    }

    async fn create_firewall(&self, spec: &FirewallSpec) -> Result<Firewall, ProviderError> {
        self.create_group(spec).await
    }

    async fn update_firewall(
        &self,
        current: &Firewall,
        spec: &FirewallSpec,
    ) -> Result<Firewall, ProviderError> {
        self.update_group(current, spec).await
    }

    async fn delete_firewall(&self, current: &Firewall) -> Result<(), ProviderError> {
        self.delete_group(current).await
    }

    async fn create_stable_ip(
        &self,
        spec: &StableIpSpec,
        machine: &Machine,
    ) -> Result<StableIp, ProviderError> {
        self.allocate_ip(spec, machine).await
    }

    async fn attach_stable_ip(
        &self,
        current: &StableIp,
        machine: &Machine,
    ) -> Result<StableIp, ProviderError> {
        self.associate_ip(current, machine).await
    }

    async fn delete_stable_ip(&self, current: &StableIp) -> Result<(), ProviderError> {
        self.release_ip(current).await
    }
}
