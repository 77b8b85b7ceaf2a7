//! [`AwsProvider`]: the EC2 clients, one per (region, profile), and the [`MachineProvider`] impl.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use async_trait::async_trait;
use aws_sdk_ec2::Client;
use peerfleet_core::ProviderKind;
use peerfleet_core::provider::{CreateContext, ErrorKind, Inventory, MachineProvider, ProviderError};
use peerfleet_core::resource::{Firewall, FirewallSpec, Machine, MachineSpec, StableIp, StableIpSpec};
use tokio::sync::Mutex;

use crate::error::{PROVIDER, Target};
use crate::settings::AwsSettings;

/// An EC2 client and where it points.
#[derive(Clone, Debug)]
pub(crate) struct Ec2 {
    pub client: Client,
    pub target: Target,
}

/// The AWS EC2 machine provider.
///
/// Build it once per run: it caches one SDK client per (region, credentials profile), created on first
/// use, so the credentials chain, endpoint resolution and connection pool are set up once per region,
/// and the default image of each region is looked up once.
///
/// # Guarantees (beyond [`MachineProvider`]'s)
/// - Instances, their root volumes, security groups and Elastic IPs are tagged in the create request
///   itself (`TagSpecifications`), never afterwards.
/// - `RunInstances` carries the spec's idempotency key as `ClientToken`, so a retried or repeated
///   create returns the instance the first one launched; a token EC2 rejects as reused with other
///   parameters (fresh TLS material after a crash) is resolved by looking the instance up by its
///   ownership tags.
/// - `inventory` is one paginated `DescribeInstances`, one `DescribeSecurityGroups` and one
///   `DescribeAddresses` per region, run concurrently.
pub struct AwsProvider {
    pub(crate) settings: AwsSettings,
    clients: Mutex<HashMap<(String, Option<String>), Ec2>>,
    /// Default image per (region, profile), looked up once.
    pub(crate) images: Mutex<BTreeMap<(String, Option<String>), String>>,
}

impl fmt::Debug for AwsProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsProvider").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl AwsProvider {
    /// A provider configured by `settings`.
    pub fn new(settings: AwsSettings) -> Self {
        AwsProvider { settings, clients: Mutex::new(HashMap::new()), images: Mutex::new(BTreeMap::new()) }
    }

    /// A provider configured from the environment the way every AWS tool is: the default credentials
    /// chain (environment, profiles, SSO, instance metadata), `AWS_ENDPOINT_URL`, default Debian 12
    /// images; `endpoint_url`, when given, overrides the endpoint for every region (a stand-in).
    pub fn from_env(endpoint_url: Option<String>) -> Self {
        Self::new(AwsSettings { endpoint_url, ..AwsSettings::default() })
    }

    /// The settings it was built with.
    pub fn settings(&self) -> &AwsSettings {
        &self.settings
    }

    /// The client for `region` with the profile the settings name for it.
    pub(crate) async fn ec2(&self, region: &str) -> Ec2 {
        let profile = self.settings.profile_for(region).map(str::to_string);
        self.ec2_as(region, profile).await
    }

    /// The client for `region` with `profile` (built on first use, then cached).
    pub(crate) async fn ec2_as(&self, region: &str, profile: Option<String>) -> Ec2 {
        let key = (region.to_string(), profile);
        let mut clients = self.clients.lock().await;
        if let Some(ec2) = clients.get(&key) {
            return ec2.clone();
        }
        let config = self.settings.sdk_config(Some(region), key.1.as_deref()).await;
        let ec2 = Ec2 {
            client: Client::new(&config),
            target: Target { region: key.0.clone(), profile: key.1.clone() },
        };
        clients.insert(key, ec2.clone());
        ec2
    }
}

pub(crate) fn invalid(message: impl Into<String>) -> ProviderError {
    ProviderError::new(ErrorKind::Invalid, PROVIDER, message)
}

#[async_trait]
impl MachineProvider for AwsProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Aws
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
