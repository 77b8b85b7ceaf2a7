//! Shared fixtures: a moto server per test behind a fault proxy, specs, and a recording PKI.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use peerfleet_aws::AwsProvider;
use peerfleet_aws::testing::{self, FaultProxy, Moto};
use peerfleet_core::provider::{CreateContext, EngineTls, NodePki, ProviderError};
use peerfleet_core::resource::{Firewall, FirewallSpec, MachineSpec};
use peerfleet_core::{Address, ChainId};
use peerfleet_docker::NetworkCa;

/// Every test body runs under this bound, so a hang fails instead of blocking the suite.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Admin CIDRs used by the firewall specs (documentation ranges).
pub const ADMIN_CIDRS: [&str; 2] = ["198.51.100.0/24", "203.0.113.7/32"];

/// Runs `body` under [`TEST_TIMEOUT`].
pub async fn bounded<T>(body: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .map_err(|_| anyhow!("test timed out after {TEST_TIMEOUT:?}"))?
}

/// moto, the fault proxy in front of it, and a provider that talks through the proxy.
pub struct Harness {
    pub moto: Moto,
    pub proxy: FaultProxy,
    pub provider: AwsProvider,
    pub pki: Arc<RecordingPki>,
    pub network: String,
}

impl Harness {
    /// A fresh moto for `test` (each test has its own, so nothing leaks between tests); `None` when
    /// moto is not installed and the test is skipped (never under CI).
    pub async fn start(test: &str) -> anyhow::Result<Option<Harness>> {
        let Some(moto) = Moto::for_test(test)? else { return Ok(None) };
        let proxy = FaultProxy::start(moto.addr()).await?;
        let provider = AwsProvider::new(testing::settings(&proxy.endpoint()));
        let network = test.replace('_', "-");
        let pki = Arc::new(RecordingPki::new(&network)?);
        Ok(Some(Harness { moto, proxy, provider, pki, network }))
    }

    /// A machine spec of this network in `region`.
    pub fn machine(&self, cluster: &str, slot: u32, region: &str) -> MachineSpec {
        testing::machine_spec(&self.network, cluster, slot, region)
    }

    /// The network's firewall spec for `region`, Docker's TLS port open to [`ADMIN_CIDRS`] only.
    pub fn firewall(&self, region: &str) -> FirewallSpec {
        testing::firewall_spec(&self.network, region, &ADMIN_CIDRS)
    }

    /// The create context for a machine behind `firewall`.
    pub fn ctx(&self, firewall: &Firewall) -> CreateContext {
        CreateContext { firewall: Some(firewall.clone()), pki: Some(self.pki.clone()) }
    }

    /// An SDK client straight to moto (not through the proxy), to inspect what the provider did.
    pub fn inspect(&self, region: &str) -> aws_sdk_ec2::Client {
        let config = aws_sdk_ec2::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .endpoint_url(self.moto.endpoint())
            .credentials_provider(Credentials::new("testing", "testing", None, None, "inspect"))
            .build();
        aws_sdk_ec2::Client::from_conf(config)
    }
}

/// A chain ID for genesis hosts.
pub fn chain() -> ChainId {
    ChainId::of(b"{\"chain\":\"test\"}")
}

/// The network's real CA (from the Docker crate), remembering what it issued so tests can compare
/// the user data EC2 stored with what was sent.
pub struct RecordingPki {
    ca: NetworkCa,
    issued: Mutex<Vec<(Address, EngineTls)>>,
}

impl RecordingPki {
    pub fn new(network: &str) -> anyhow::Result<Self> {
        Ok(RecordingPki { ca: NetworkCa::generate(network).context("CA")?, issued: Mutex::new(Vec::new()) })
    }

    /// The material last issued for `address`.
    pub fn issued_for(&self, address: &Address) -> Option<EngineTls> {
        let issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        issued.iter().rev().find(|(a, _)| a == address).map(|(_, t)| t.clone())
    }
}

impl NodePki for RecordingPki {
    fn issue_server(&self, address: &Address, sans: &[String]) -> Result<EngineTls, ProviderError> {
        let tls = self.ca.issue_server(address, sans)?;
        self.issued.lock().unwrap_or_else(|p| p.into_inner()).push((address.clone(), tls.clone()));
        Ok(tls)
    }
}
