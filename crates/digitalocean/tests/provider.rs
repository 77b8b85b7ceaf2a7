//! The DigitalOcean provider against the in-process test server, whose every request and response is
//! checked against DigitalOcean's OpenAPI description (each test ends with `assert_conforms`).

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
use peerfleet_digitalocean_testserver::{Config, Fault, RateLimit, TestServer, Timing};

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
        timing: Timing { boot: Duration::from_millis(100), action: Duration::from_millis(40) },
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

#[tokio::test]
async fn a_machine_is_created_with_its_tags_name_region_size_image_and_user_data() -> anyhow::Result<()> {
    bounded(async {
        let server = server().await?;
        let p = provider(&server)?;
        let mut s = spec("prod", "frankfurt", 0);
        s.chain_id = Some(ChainId::of(b"genesis"));
        let m = p.create_machine(&s, &ctx(PerMachinePki)).await?;
        assert_eq!(m.address, Address::machine("frankfurt", 0));
        assert_eq!(m.status, MachineStatus::Running, "create returns once the droplet is active");
        assert_eq!(
            (m.region.as_str(), m.size.as_str(), m.image.as_str()),
            ("fra1", "s-1vcpu-1gb", "debian-12-x64")
        );
        assert_eq!(m.tags, s.tags);
        assert_eq!(m.chain_id, s.chain_id);
        assert_eq!((m.generation, m.bootstrap), (0, 1));
        only_documentation_addresses(&m);

        let droplets = server.droplets();
        assert_eq!(droplets.len(), 1);
        let d = &droplets[0];
        assert_eq!(d.name, "prod-frankfurt-0");
        let tags: BTreeSet<&str> = d.tags.iter().map(String::as_str).collect();
        let chain = format!("peerfleet:chain:{}", ChainId::of(b"genesis"));
        for t in [
            "peer_cluster",
            "relay",
            "peerfleet:network:prod",
            "peerfleet:gen:0",
            "peerfleet:boot:1",
            "peerfleet:fw:prod:fra1",
            chain.as_str(),
        ] {
            assert!(tags.contains(t), "missing tag {t} in {tags:?}");
        }
        let user_data = d.user_data.clone().unwrap_or_default();
        assert!(user_data.starts_with("#cloud-config\n"), "{}", &user_data[..40.min(user_data.len())]);
        assert!(user_data.contains("/etc/docker/tls/server-key.pem"));

        let inv = p.inventory("prod", "fra1").await?;
        assert_eq!(inv.machines, vec![m]);
        assert!(p.inventory("prod", "ams3").await?.machines.is_empty(), "inventories are per region");
        assert!(p.inventory("other", "fra1").await?.machines.is_empty(), "and per network");
        server.assert_conforms();
        Ok(())
    })
    .await
}

#[tokio::test]
async fn concurrent_creates_with_identical_requests_share_multi_creates_of_at_most_ten() -> anyhow::Result<()>
{
    bounded(async {
        let server = server().await?;
        let p = provider(&server)?;
        let made =
            create_all(&p, (0..12).map(|i| spec("net", "sydney", i)).collect(), ctx(SharedPki)).await?;
        assert_eq!(made.len(), 12);
        let addresses: BTreeSet<Address> = made.iter().map(|m| m.address.clone()).collect();
        assert_eq!(addresses.len(), 12, "each machine gets its own droplet");
        assert_eq!(server.droplets().len(), 12);
        assert_eq!(server.request_count("droplets_create"), 2, "12 names = one request of 10 + one of 2");
        server.assert_conforms();
        Ok(())
    })
    .await
}

#[tokio::test]
async fn machines_with_their_own_keys_get_one_request_each_but_share_lookup_and_polls() -> anyhow::Result<()>
{
    bounded(async {
        let server = server().await?;
        let p = provider(&server)?;
        create_all(&p, (0..30).map(|i| spec("net", "london", i)).collect(), ctx(PerMachinePki)).await?;
        assert_eq!(server.request_count("droplets_create"), 30);
        let lists = server.request_count("droplets_list");
        assert!(
            lists <= 12,
            "one shared look-up and a few shared polls, not per droplet: {lists} list requests"
        );
        server.assert_conforms();
        Ok(())
    })
    .await
}

#[tokio::test]
async fn refresh_of_500_droplets_takes_three_list_requests() -> anyhow::Result<()> {
    bounded(async {
        let server = server().await?;
        let tags = vec![
            "peerfleet:network:big".to_string(),
            "peerfleet:gen:0".to_string(),
            "peerfleet:boot:1".to_string(),
            "peer_cluster".to_string(),
        ];
        server.with_world(|w| {
            for i in 0..500 {
                let region = if i % 5 == 0 { "ams3" } else { "fra1" };
                w.seed_droplet(
                    &format!("big-c{}-{i}", i % 5),
                    region,
                    "s-1vcpu-1gb",
                    "debian-12-x64",
                    &tags,
                    true,
                );
            }
            // Not ours: no network tag, or another network's.
            w.seed_droplet(
                "big-c1-9999",
                "fra1",
                "s-1vcpu-1gb",
                "debian-12-x64",
                &["peer_cluster".to_string()],
                true,
            );
            w.seed_droplet(
                "other-c1-0",
                "fra1",
                "s-1vcpu-1gb",
                "debian-12-x64",
                &["peerfleet:network:other".to_string()],
                true,
            );
        });
        let p = provider(&server)?;
        let (fra, ams) = tokio::join!(p.inventory("big", "fra1"), p.inventory("big", "ams3"));
        let (fra, ams) = (fra?, ams?);
        assert_eq!((fra.machines.len(), ams.machines.len()), (400, 100));
        assert!(fra.machines.iter().all(|m| m.tags == BTreeSet::from(["peer_cluster".to_string()])));
        assert_eq!(
            server.request_count("droplets_list"),
            3,
            "500 droplets = 3 pages of 200, shared by both regions"
        );
        assert_eq!(server.request_count("firewalls_list"), 1);
        assert_eq!(server.request_count("reservedIPs_list"), 1);
        assert_eq!(server.total_requests(), 5);
        server.assert_conforms();
        Ok(())
    })
    .await
}

#[tokio::test]
async fn update_changes_tags_in_place_and_resizes_through_power_off_and_on() -> anyhow::Result<()> {
    bounded(async {
        let server = server().await?;
        let p = provider(&server)?;
        let before = spec("upd", "frankfurt", 0);
        let m = p.create_machine(&before, &ctx(PerMachinePki)).await?;
        let mut after = before.clone();
        after.tags = BTreeSet::from(["peer_cluster".to_string(), "seed".to_string()]);
        after.size = "s-2vcpu-4gb".into();
        let updated = p.update_machine(&m, &after).await?;
        assert_eq!(updated.id, m.id, "updated in place");
        assert_eq!(updated.tags, after.tags);
        assert_eq!(updated.size, "s-2vcpu-4gb");
        assert_eq!(updated.status, MachineStatus::Running, "powered on again after the resize");
        assert_eq!(server.request_count("dropletActions_post"), 3, "power_off, resize, power_on");
        let d = &server.droplets()[0];
        assert!(d.tags.contains(&"peerfleet:network:upd".to_string()), "ownership tags are never removed");
        assert!(!d.tags.contains(&"relay".to_string()));
        // Nothing left to do: a second update sends no action.
        p.update_machine(&updated, &after).await?;
        assert_eq!(server.request_count("dropletActions_post"), 3);
        server.assert_conforms();
        Ok(())
    })
    .await
}

#[tokio::test]
async fn delete_cleans_up_machines_firewalls_and_reserved_ips() -> anyhow::Result<()> {
    bounded(async {
        let server = server().await?;
        let p = provider(&server)?;
        let fw_spec = firewall_spec("del");
        let fw = p.create_firewall(&fw_spec).await?;
        let m = p.create_machine(&spec("del", "frankfurt", 0), &ctx(PerMachinePki)).await?;
        let ip_spec = StableIpSpec {
            address: Address::stable_ip("frankfurt", 0),
            network: "del".into(),
            machine: m.address.clone(),
            provider: ProviderKind::DigitalOcean,
            region: "fra1".into(),
        };
        let ip = p.create_stable_ip(&ip_spec, &m).await?;
        assert_eq!(ip.machine_id.as_deref(), Some(m.id.as_str()));
        assert!(
            ip.ip.starts_with("192.0.2.")
                || ip.ip.starts_with("198.51.100.")
                || ip.ip.starts_with("203.0.113.")
        );
        // Creating it again adopts the one already assigned.
        assert_eq!(p.create_stable_ip(&ip_spec, &m).await?, ip);

        let inv = p.inventory("del", "fra1").await?;
        assert_eq!((inv.machines.len(), inv.firewalls.len(), inv.stable_ips.len()), (1, 1, 1));
        assert_eq!(inv.firewalls[0].id, fw.id);
        assert_eq!(inv.stable_ips[0], ip);

        p.delete_stable_ip(&ip).await?;
        p.delete_machine(&m).await?;
        p.delete_firewall(&fw).await?;
        assert!(server.droplets().is_empty());
        assert!(server.firewalls().is_empty());
        assert!(server.reserved_ips().is_empty());
        let inv = p.inventory("del", "fra1").await?;
        assert!(inv.machines.is_empty() && inv.firewalls.is_empty() && inv.stable_ips.is_empty());
        // Deleting what is already gone succeeds.
        p.delete_stable_ip(&ip).await?;
        p.delete_machine(&m).await?;
        p.delete_firewall(&fw).await?;
        server.assert_conforms();
        Ok(())
    })
    .await
}

#[tokio::test]
async fn firewalls_carry_the_spec_rules_and_allow_all_outbound_traffic() -> anyhow::Result<()> {
    bounded(async {
        let server = server().await?;
        let p = provider(&server)?;
        let mut s = firewall_spec("fw");
        let fw = p.create_firewall(&s).await?;
        let mut want = s.rules.clone();
        want.sort();
        assert_eq!(fw.rules, want);
        let raw = &server.firewalls()[0];
        assert_eq!(raw["tags"], serde_json::json!(["peerfleet:fw:fw:fra1"]));
        let outbound = raw["outbound_rules"].as_array().cloned().unwrap_or_default();
        for proto in ["tcp", "udp", "icmp"] {
            assert!(
                outbound
                    .iter()
                    .any(|r| r["protocol"] == proto && r["destinations"]["addresses"][0] == "0.0.0.0/0"),
                "{outbound:?}"
            );
        }
        // Creating again adopts; a changed spec is converged in place.
        s.rules.push(FirewallRule {
            protocol: Protocol::Udp,
            port: 26656,
            sources: vec!["0.0.0.0/0".into()],
        });
        let again = p.create_firewall(&s).await?;
        assert_eq!(again.id, fw.id);
        assert_eq!(again.rules.len(), 3);
        assert_eq!(server.request_count("firewalls_create"), 1);
        assert_eq!(server.request_count("firewalls_update"), 1);
        server.assert_conforms();
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_create_whose_answer_is_lost_is_looked_up_and_adopted_not_repeated() -> anyhow::Result<()> {
    bounded(async {
        let server = server().await?;
        let p = provider(&server)?;
        server.inject("droplets_create", Fault::FailAfter(500), 1);
        let m = p.create_machine(&spec("lost", "frankfurt", 0), &ctx(PerMachinePki)).await?;
        assert_eq!(server.droplets().len(), 1, "no duplicate");
        assert_eq!(server.request_count("droplets_create"), 1);
        assert_eq!(m.id, server.droplets()[0].id.to_string());
        server.assert_conforms();
        Ok(())
    })
    .await
}

#[tokio::test]
async fn crash_after_the_create_then_rerun_adopts_instead_of_duplicating() -> anyhow::Result<()> {
    bounded(async {
        let server = server().await?;
        let s = spec("crash", "frankfurt", 0);
        // The server makes the droplet, then holds the answer: the first run "crashes" meanwhile.
        server.inject("droplets_create", Fault::DelayAfter(Duration::from_secs(30)), 1);
        // The first run lives on its own runtime, so the crash ends every task it had, as kill -9 would.
        let doomed = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let first = provider(&server)?;
        {
            let s = s.clone();
            doomed.spawn(async move { first.create_machine(&s, &ctx(PerMachinePki)).await });
        }
        while server.droplets().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        doomed.shutdown_background();
        assert_eq!(server.droplets().len(), 1);

        // A new process: nothing in memory, the same spec.
        let second = provider(&server)?;
        let m = second.create_machine(&s, &ctx(PerMachinePki)).await?;
        assert_eq!(server.droplets().len(), 1, "adopted, not duplicated");
        assert_eq!(m.id, server.droplets()[0].id.to_string());
        assert_eq!(server.request_count("droplets_create"), 1);
        // A replacement (next generation) is a new droplet, never the old one adopted.
        let mut next = s.clone();
        next.generation = 1;
        let replacement = second.create_machine(&next, &ctx(PerMachinePki)).await?;
        assert_ne!(replacement.id, m.id);
        assert_eq!(replacement.generation, 1);
        server.assert_conforms();
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_429_waits_until_the_reset_then_succeeds() -> anyhow::Result<()> {
    bounded(async {
        let limit = RateLimit {
            per_minute: 5,
            minute: Duration::from_secs(2),
            per_hour: 1000,
            hour: Duration::from_secs(3600),
        };
        let server = TestServer::start_with(Config { rate_limit: Some(limit), ..Config::default() }).await?;
        // Another client of the same token used the whole burst a moment ago.
        server.consume_rate_limit(5);
        let p = provider(&server)?;
        let started = std::time::Instant::now();
        let inv = p.inventory("rl", "fra1").await?;
        assert!(inv.machines.is_empty());
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(1500), "waited only {waited:?}");
        assert!(waited < Duration::from_secs(6), "waited {waited:?}");
        let stats = p.stats();
        assert!((1..=3).contains(&stats.throttled), "{stats:?}");
        assert_eq!(stats.throttled, server.throttled());
        server.assert_conforms();
        Ok(())
    })
    .await
}

#[tokio::test]
async fn the_client_paces_itself_under_the_limit_without_429s() -> anyhow::Result<()> {
    bounded(async {
        // 25 per 3 s, scaled from 250 per minute.
        let limit = RateLimit {
            per_minute: 25,
            minute: Duration::from_secs(3),
            per_hour: 5000,
            hour: Duration::from_secs(3600),
        };
        let server = TestServer::start_with(Config { rate_limit: Some(limit), ..Config::default() }).await?;
        let mut st = settings(&server);
        st.limits = RateLimits {
            per_minute: 25,
            minute: Duration::from_secs(3),
            per_hour: 5000,
            hour: Duration::from_secs(3600),
        };
        st.refresh_reuse = Duration::ZERO;
        let p = DigitalOceanProvider::new(Secret::new(server.token()), st)?;
        let started = std::time::Instant::now();
        // 10 inventories of 3 list requests each.
        for _ in 0..10 {
            p.inventory("pace", "fra1").await?;
        }
        let waited = started.elapsed();
        assert_eq!(server.total_requests(), 30);
        assert_eq!(server.throttled(), 0, "the client never exceeded the limit");
        assert!(waited >= Duration::from_secs(3), "30 requests at 25 per 3 s need one window: {waited:?}");
        server.assert_conforms();
        Ok(())
    })
    .await
}

#[tokio::test]
async fn server_errors_and_timeouts_are_retried() -> anyhow::Result<()> {
    bounded(async {
        let server = server().await?;
        let mut st = settings(&server);
        st.request_timeout = Duration::from_millis(500);
        let p = DigitalOceanProvider::new(Secret::new(server.token()), st)?;
        server.inject("droplets_list", Fault::Fail(503), 1);
        server.inject("firewalls_list", Fault::Fail(500), 1);
        server.inject("reservedIPs_list", Fault::Delay(Duration::from_millis(1500)), 1);
        p.inventory("retry", "fra1").await?;
        // At least the three injected failures (a loaded machine may time out another request too).
        assert!(p.stats().retried >= 3, "{:?}", p.stats());
        assert_eq!(server.request_count("droplets_list"), 2);
        server.assert_conforms();
        Ok(())
    })
    .await
}

#[tokio::test]
async fn client_errors_are_not_retried_and_keep_digitaloceans_id_and_request_id() -> anyhow::Result<()> {
    bounded(async {
        let server = server().await?;
        let p = provider(&server)?;
        let mut s = spec("bad", "frankfurt", 0);
        s.size = "s-64vcpu-1tb".into();
        let err = p
            .create_machine(&s, &ctx(PerMachinePki))
            .await
            .err()
            .ok_or_else(|| anyhow::anyhow!("no error"))?;
        assert_eq!(err.kind, ErrorKind::Invalid);
        assert!(err.message.contains("unprocessable_entity"), "{err}");
        assert!(err.request_id.is_some(), "{err:?}");
        assert_eq!(server.request_count("droplets_create"), 1, "not retried");

        let missing = Machine {
            id: "123456".into(),
            ..p.create_machine(&spec("bad", "frankfurt", 1), &ctx(PerMachinePki)).await?
        };
        let err = p
            .update_machine(&missing, &spec("bad", "frankfurt", 1))
            .await
            .err()
            .ok_or_else(|| anyhow::anyhow!("no error"))?;
        assert_eq!(err.kind, ErrorKind::NotFound);
        assert_eq!(server.request_count("droplets_get"), 1);
        server.assert_conforms();
        Ok(())
    })
    .await
}

#[tokio::test]
async fn names_and_tags_digitalocean_cannot_hold_fail_before_any_request() -> anyhow::Result<()> {
    bounded(async {
        let server = server().await?;
        let p = provider(&server)?;
        let mut s = spec("net", "under_score", 0);
        assert_eq!(
            p.create_machine(&s, &ctx(PerMachinePki)).await.err().map(|e| e.kind),
            Some(ErrorKind::Invalid)
        );
        s = spec("net", "ok", 0);
        s.tags.insert("has space".into());
        assert_eq!(
            p.create_machine(&s, &ctx(PerMachinePki)).await.err().map(|e| e.kind),
            Some(ErrorKind::Invalid)
        );
        s = spec("net", "ok", 0);
        let no_pki = CreateContext::default();
        assert_eq!(p.create_machine(&s, &no_pki).await.err().map(|e| e.kind), Some(ErrorKind::Invalid));
        assert_eq!(server.total_requests(), 0);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn the_token_never_appears_in_errors_or_debug_output() -> anyhow::Result<()> {
    bounded(async {
        let server = server().await?;
        let token = "dop_v1_f00dfacecafe0123456789abcdef0123456789abcdef0123456789abcdef";
        let p = DigitalOceanProvider::new(Secret::new(token), settings(&server))?;
        let mut texts = vec![format!("{p:?}"), format!("{:?}", p.settings())];
        // Wrong token: 401.
        let err = p.inventory("tok", "fra1").await.err().ok_or_else(|| anyhow::anyhow!("no error"))?;
        assert_eq!(err.kind, ErrorKind::Unauthorized);
        texts.push(err.to_string());
        texts.push(format!("{err:?}"));
        // A server error, a lost create.
        let right = provider(&server)?;
        server.inject("*", Fault::Fail(500), 100);
        let err = right
            .create_machine(&spec("tok", "frankfurt", 0), &ctx(PerMachinePki))
            .await
            .err()
            .ok_or_else(|| anyhow::anyhow!("no error"))?;
        texts.push(err.to_string());
        texts.push(format!("{err:?}"));
        texts.push(format!("{right:?}"));
        // Nothing to connect to.
        let nowhere = DigitalOceanProvider::new(
            Secret::new(token),
            Settings { api_url: "http://127.0.0.1:9".into(), ..settings(&server) },
        )?;
        let err = nowhere.inventory("tok", "fra1").await.err().ok_or_else(|| anyhow::anyhow!("no error"))?;
        assert_eq!(err.kind, ErrorKind::Transient);
        texts.push(err.to_string());
        texts.push(format!("{err:?}"));
        for t in &texts {
            assert!(!t.contains(token) && !t.contains(server.token()), "token leaked: {t}");
            assert!(!t.contains("PRIVATE KEY"), "user data leaked: {t}");
        }
        server.assert_conforms();
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_permanently_failing_api_gets_exactly_the_policys_attempts() -> anyhow::Result<()> {
    bounded(async {
        let server = server().await?;
        let p = provider(&server)?;
        let attempts = u64::from(settings(&server).retry.max_attempts);
        server.inject("droplets_list", Fault::Fail(503), 1000);
        let err = p.inventory("down", "fra1").await.err().ok_or_else(|| anyhow::anyhow!("listed"))?;
        assert_eq!(err.kind, ErrorKind::Transient, "{err}");
        assert_eq!(
            server.request_count("droplets_list"),
            attempts,
            "one retry layer, not attempts × attempts"
        );

        // `429`s count as attempts too: never 20 waits of up to 10 minutes.
        let server = self::server().await?;
        let p = provider(&server)?;
        server.inject("firewalls_list", Fault::Fail(429), 1000);
        let err = p.inventory("limited", "fra1").await.err().ok_or_else(|| anyhow::anyhow!("listed"))?;
        assert!(matches!(err.kind, ErrorKind::Throttled { .. }), "{err}");
        assert_eq!(server.request_count("firewalls_list"), attempts);
        server.assert_conforms();
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_create_that_keeps_failing_is_sent_once_per_look_up_never_retried_by_the_client_too()
-> anyhow::Result<()> {
    bounded(async {
        let server = server().await?;
        let p = provider(&server)?;
        let attempts = u64::from(settings(&server).retry.max_attempts);
        // A connection reset after the server made the droplet would look the same; here nothing is made.
        server.inject("droplets_create", Fault::Fail(503), 1000);
        let err = p
            .create_machine(&spec("flaky", "frankfurt", 0), &ctx(PerMachinePki))
            .await
            .err()
            .ok_or_else(|| anyhow::anyhow!("created"))?;
        assert_eq!(err.kind, ErrorKind::Transient, "{err}");
        assert_eq!(server.request_count("droplets_create"), attempts);
        assert!(p.retries_requests(), "the executor makes one attempt per call of this provider");
        server.assert_conforms();
        Ok(())
    })
    .await
}
