//! Test support (feature `testing`): the EC2 and S3 stand-in and a fault layer in front of it.
//!
//! - [`Moto`] starts `moto_server` on a free loopback port (found at `PEERFLEET_MOTO`, else the
//!   repository's `.venv/bin/moto_server`, installed by `scripts/setup-moto.sh`) and stops it on drop.
//! - [`FaultProxy`] sits between the SDK and moto: it records every request (action, region,
//!   `ClientToken`, tags) and injects EC2 errors such as throttling; it forwards S3 conditional
//!   writes one at a time, which makes moto's check-then-write atomic as S3's is.
//! - [`s3_client`] and [`create_bucket`] look at and prepare the bucket of an S3 state.
//! - [`settings`] points an [`AwsProvider`](crate::AwsProvider) at either, with static dummy
//!   credentials set in the SDK config only (never in the process environment, which other tests
//!   share), short retries and short waits.
//! - [`machine_spec`] and [`firewall_spec`] build the specs the planner would.
//!
//! Nothing here connects anywhere but loopback; the public addresses moto hands out are never dialled.

mod moto;
mod proxy;

use std::collections::BTreeSet;
use std::time::Duration;

use aws_sdk_ec2::config::{Credentials, SharedCredentialsProvider};
use peerfleet_core::network::{PEER_CLUSTER_TAG, Region, ports};
use peerfleet_core::plan::idempotency_key;
use peerfleet_core::resource::{BOOTSTRAP_VERSION, FirewallRule, FirewallSpec, MachineSpec, Protocol};
use peerfleet_core::{Address, ProviderKind};

pub use moto::{DEBIAN_AMI, DEBIAN_AMI_CN, Moto, MotoError, MotoOptions};
pub use proxy::{Fault, FaultProxy, Recorded};

use crate::{AwsSettings, RetryPolicy, Timeouts, Waits};

/// Settings for a provider talking to a stand-in at `endpoint`: dummy static credentials, three
/// attempts per request with millisecond backoff, and waits bounded in seconds.
pub fn settings(endpoint: &str) -> AwsSettings {
    let credentials = Credentials::new("testing", "testing", None, None, "peerfleet-testing");
    AwsSettings {
        endpoint_url: Some(endpoint.to_string()),
        credentials: Some(SharedCredentialsProvider::new(credentials)),
        retry: RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(10),
            cap: Duration::from_millis(100),
            ..RetryPolicy::default()
        },
        timeouts: Timeouts { connect: Duration::from_secs(2), attempt: Duration::from_secs(20) },
        waits: Waits {
            visibility: Duration::from_secs(2),
            running: Duration::from_secs(10),
            terminated: Duration::from_secs(10),
            dependency: Duration::from_secs(2),
            first_poll: Duration::from_millis(20),
            max_poll: Duration::from_millis(200),
        },
        ..AwsSettings::default()
    }
}

/// The eight AWS regions of the nine cities of the original network.
pub const EIGHT_REGIONS: [&str; 8] = [
    "cn-north-1",
    "ap-southeast-1",
    "ap-southeast-2",
    "eu-central-1",
    "eu-west-2",
    "us-east-1",
    "us-west-2",
    "sa-east-1",
];

/// An inbound TCP rule.
pub fn rule(port: u16, sources: &[&str]) -> FirewallRule {
    FirewallRule { protocol: Protocol::Tcp, port, sources: sources.iter().map(|s| s.to_string()).collect() }
}

/// A network's firewall in `region` as the planner declares it: peer and fetch ports from anywhere,
/// Docker's TLS port from `admin_cidrs` only, no SSH.
pub fn firewall_spec(network: &str, region: &str, admin_cidrs: &[&str]) -> FirewallSpec {
    FirewallSpec {
        address: Address::firewall(ProviderKind::Aws, region),
        network: network.to_string(),
        provider: ProviderKind::Aws,
        region: region.to_string(),
        rules: vec![
            rule(ports::DOCKER_TLS, admin_cidrs),
            rule(ports::FETCH, &["0.0.0.0/0"]),
            rule(ports::PEER, &["0.0.0.0/0"]),
        ],
    }
}

/// A first-generation `t3.micro` machine with the `peer_cluster` deploy tag behind the region's
/// firewall, keyed the way the planner keys it.
pub fn machine_spec(network: &str, cluster: &str, slot: u32, region: &str) -> MachineSpec {
    let address = Address::machine(cluster, slot);
    MachineSpec {
        idempotency_key: idempotency_key(network, &address, 0),
        address,
        network: network.to_string(),
        provider: ProviderKind::Aws,
        region: Region { slug: region.to_string(), city: None },
        size: "t3.micro".into(),
        image: None,
        tags: BTreeSet::from([PEER_CLUSTER_TAG.to_string()]),
        profile: None,
        bootstrap: BOOTSTRAP_VERSION,
        chain_id: None,
        generation: 0,
        firewall: Some(Address::firewall(ProviderKind::Aws, region)),
    }
}

/// An S3 client for a stand-in at `endpoint` (path-style addressing, the dummy credentials of
/// [`settings`]), for tests to create buckets and look at objects as a bucket reader would.
pub async fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    let sdk = settings(endpoint).sdk_config(Some("us-east-1"), None).await;
    aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&sdk).force_path_style(true).build())
}

/// Creates `bucket` on the stand-in at `endpoint`.
///
/// # Errors
/// When the stand-in refuses.
pub async fn create_bucket(endpoint: &str, bucket: &str) -> Result<(), String> {
    let client = s3_client(endpoint).await;
    client
        .create_bucket()
        .bucket(bucket)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| aws_sdk_s3::error::DisplayErrorContext(&e).to_string())
}
