//! [`AwsProvider`] and its EC2 clients, one per (region, profile), built on first use and cached;
//! plus the error helper every operation module shares. The operations themselves live in
//! `machines`, `firewall`, `stable_ip` and `image`, and the [`MachineProvider`] impl in `provider`,
//! so that this module depends on none of them.
//!
//! [`MachineProvider`]: peerfleet_core::provider::MachineProvider

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use aws_sdk_ec2::Client;
use peerfleet_core::provider::{ErrorKind, ProviderError};
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
/// - [`MachineProvider::inventory`](peerfleet_core::provider::MachineProvider::inventory) is one paginated `DescribeInstances`, one `DescribeSecurityGroups` and one
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
