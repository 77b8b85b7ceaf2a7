//! The DigitalOcean provider against the in-process test server, whose every request and response is
//! checked against DigitalOcean's OpenAPI description (each test ends with `assert_conforms`).
//!
//! `objects`: what creates, refreshes, updates and deletes do to droplets, firewalls and tags;
//! `failures`: lost answers, crashes, rate limits, retries and errors.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use peerfleet_core::Address;
use peerfleet_core::ChainId;
use peerfleet_core::network::{ProviderKind, Region};
use peerfleet_core::provider::{
    CreateContext, EngineTls, ErrorKind, MachineProvider, NodePki, ProviderError, Secret,
};
use peerfleet_core::resource::{
    FirewallRule, FirewallSpec, Machine, MachineSpec, MachineStatus, Protocol, StableIpSpec,
};
use peerfleet_digitalocean::{DigitalOceanProvider, PollPolicy, RateLimits, RetryPolicy, Settings};
use peerfleet_digitalocean_testserver::{Config, Delays, Fault, RateLimit, TestServer};

/// Every test is bounded: a hang fails instead of blocking the suite.
const TEST_LIMIT: Duration = Duration::from_secs(60);

async fn bounded<T>(f: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::time::timeout(TEST_LIMIT, f)
        .await
        .map_err(|_| anyhow::anyhow!("test timed out after {TEST_LIMIT:?}"))?
}

/// Issues distinct material per machine, as the network's real PKI does.
struct PerMachinePki;

impl NodePki for PerMachinePki {
    fn issue_server(&self, address: &Address, _sans: &[String]) -> Result<EngineTls, ProviderError> {
        Ok(EngineTls {
            ca_cert_pem: "-----BEGIN CERTIFICATE-----\nQ0E=\n-----END CERTIFICATE-----\n".into(),
            server_cert_pem: format!(
                "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                address.slug()
            ),
            server_key_pem: Secret::new(format!(
                "-----BEGIN PRIVATE KEY-----\nkey-of-{}\n-----END PRIVATE KEY-----\n",
                address.slug()
            )),
        })
    }
}

/// Issues the same material to every machine, so their create requests are identical.
struct SharedPki;

impl NodePki for SharedPki {
    fn issue_server(&self, _address: &Address, _sans: &[String]) -> Result<EngineTls, ProviderError> {
        Ok(EngineTls {
            ca_cert_pem: "-----BEGIN CERTIFICATE-----\nQ0E=\n-----END CERTIFICATE-----\n".into(),
            server_cert_pem: "-----BEGIN CERTIFICATE-----\nU0hBUkVE\n-----END CERTIFICATE-----\n".into(),
            server_key_pem: Secret::new("-----BEGIN PRIVATE KEY-----\nS0VZ\n-----END PRIVATE KEY-----\n"),
        })
    }
}

fn ctx(pki: impl NodePki + 'static) -> CreateContext {
    CreateContext { firewall: None, pki: Some(Arc::new(pki)) }
}

fn settings(server: &TestServer) -> Settings {
    Settings {
        api_url: server.url().to_string(),
        limits: RateLimits::DIGITALOCEAN,
        retry: RetryPolicy {
            max_attempts: 4,
            base: Duration::from_millis(20),
            cap: Duration::from_millis(200),
            max_wait: Duration::from_secs(20),
        },
        request_timeout: Duration::from_secs(5),
        poll: PollPolicy {
            min_interval: Duration::from_millis(20),
            max_interval: Duration::from_millis(100),
            active_timeout: Duration::from_secs(10),
            action_timeout: Duration::from_secs(10),
        },
        create_window: Duration::from_millis(50),
        refresh_reuse: Duration::from_secs(2),
        ..Settings::default()
    }
}

fn provider(server: &TestServer) -> anyhow::Result<DigitalOceanProvider> {
    Ok(DigitalOceanProvider::new(Secret::new(server.token()), settings(server))?)
}

async fn server() -> anyhow::Result<TestServer> {
    Ok(TestServer::start_with(Config {
        timing: Delays { boot: Duration::from_millis(100), action: Duration::from_millis(40) },
        ..Config::default()
    })
    .await?)
}

fn spec(network: &str, cluster: &str, slot: u32) -> MachineSpec {
    MachineSpec {
        address: Address::machine(cluster, slot),
        network: network.to_string(),
        provider: ProviderKind::DigitalOcean,
        region: Region { slug: "fra1".into(), city: None },
        size: "s-1vcpu-1gb".into(),
        image: None,
        tags: BTreeSet::from(["peer_cluster".to_string(), "relay".to_string()]),
        profile: None,
        bootstrap: 1,
        chain_id: None,
        generation: 0,
        idempotency_key: String::new(),
        firewall: Some(Address::firewall(ProviderKind::DigitalOcean, "fra1")),
    }
}

/// Creates all machines at once, as the executor does.
async fn create_all(
    p: &DigitalOceanProvider,
    specs: Vec<MachineSpec>,
    ctx: CreateContext,
) -> anyhow::Result<Vec<Machine>> {
    let made = futures::future::join_all(specs.iter().map(|s| p.create_machine(s, &ctx))).await;
    Ok(made.into_iter().collect::<Result<_, _>>()?)
}

fn firewall_spec(network: &str) -> FirewallSpec {
    FirewallSpec {
        address: Address::firewall(ProviderKind::DigitalOcean, "fra1"),
        network: network.to_string(),
        provider: ProviderKind::DigitalOcean,
        region: "fra1".into(),
        rules: vec![
            FirewallRule { protocol: Protocol::Tcp, port: 2376, sources: vec!["198.51.100.7/32".into()] },
            FirewallRule {
                protocol: Protocol::Tcp,
                port: 26656,
                sources: vec!["0.0.0.0/0".into(), "::/0".into()],
            },
        ],
    }
}

fn only_documentation_addresses(m: &Machine) {
    for ip in m.public_ip.iter().chain(m.private_ip.iter()) {
        assert!(
            ip.starts_with("192.0.2.")
                || ip.starts_with("198.51.100.")
                || ip.starts_with("203.0.113.")
                || ip.starts_with("198.18.")
                || ip.starts_with("198.19."),
            "{ip} is not a documentation or benchmarking address"
        );
    }
}

mod failures;
mod objects;
