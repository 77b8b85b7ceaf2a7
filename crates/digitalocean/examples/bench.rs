//! Benchmark of the DigitalOcean provider against the in-process test server (which applies
//! DigitalOcean's rate limit the way the API does, and checks every message against the OpenAPI
//! description).
//!
//! ```text
//! cargo run -p peerfleet-digitalocean --example bench -- [--scale N] [--boot SECONDS] [--only NAME]
//! ```
//!
//! - `--scale N` divides the limit's windows, the boot time and the poll intervals by N while keeping
//!   the request counts (250 per minute becomes 250 per 60/N s); default 1, DigitalOcean's real limit.
//! - `--boot SECONDS`: how long a droplet stays `new` (default 20).
//! - `--only refresh|apply|busy|spread|pace` runs one scenario.
//!
//! Scenarios, each on a fresh server and a fresh provider:
//! - `refresh`: inventory of a network of 500 droplets in five regions;
//! - `apply`: the machine layer of a 100-droplet network (5 firewalls, 100 droplets, 2 reserved
//!   IPs), first without any rate limit (the reference), then under 250/minute;
//! - `busy`: the same apply on a token whose 250 requests of the minute another client has just
//!   spent;
//! - `spread`: the same apply on a token another client has been using at the full rate for the
//!   last minute (its requests expire one by one while the apply runs);
//! - `pace`: 750 list requests back to back, which the limit alone makes take two windows.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use peerfleet_core::Address;
use peerfleet_core::network::{ProviderKind, Region};
use peerfleet_core::provider::{CreateContext, EngineTls, MachineProvider, NodePki, ProviderError, Secret};
use peerfleet_core::resource::{FirewallRule, FirewallSpec, MachineSpec, Protocol, StableIpSpec};
use peerfleet_digitalocean::{DigitalOceanProvider, PollPolicy, RateLimits, Settings};
use peerfleet_digitalocean_testserver::{Config, Delays, RateLimit, TestServer};

const REGIONS: [&str; 5] = ["sgp1", "syd1", "fra1", "ams3", "lon1"];
const NETWORK: &str = "bench";

struct Options {
    scale: u32,
    boot: Duration,
    only: Option<String>,
}

fn options() -> anyhow::Result<Options> {
    let mut o = Options { scale: 1, boot: Duration::from_secs(20), only: None };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--scale" => o.scale = value()?.parse().context("--scale")?,
            "--boot" => o.boot = Duration::from_secs_f64(value()?.parse().context("--boot")?),
            "--only" => o.only = Some(value()?),
            other => bail!("unknown argument {other}"),
        }
    }
    if o.scale == 0 {
        bail!("--scale must be at least 1");
    }
    Ok(o)
}

impl Options {
    fn limit(&self) -> RateLimit {
        let d = RateLimit::DIGITALOCEAN;
        RateLimit { minute: d.minute / self.scale, hour: d.hour / self.scale, ..d }
    }

    fn window(&self) -> Duration {
        self.limit().minute
    }

    fn timing(&self) -> Delays {
        Delays { boot: self.boot / self.scale, action: Duration::from_secs(2) / self.scale }
    }

    fn settings(&self, server: &TestServer, limited: bool) -> Settings {
        let l = self.limit();
        let limits = if limited {
            RateLimits { per_minute: l.per_minute, minute: l.minute, per_hour: l.per_hour, hour: l.hour }
        } else {
            RateLimits { per_minute: u32::MAX / 2, minute: l.minute, per_hour: u32::MAX / 2, hour: l.hour }
        };
        let poll = PollPolicy::default();
        Settings {
            api_url: server.url().to_string(),
            limits,
            poll: PollPolicy {
                min_interval: poll.min_interval / self.scale,
                max_interval: poll.max_interval / self.scale,
                ..poll
            },
            ..Settings::default()
        }
    }

    async fn server(&self, limited: bool) -> anyhow::Result<TestServer> {
        Ok(TestServer::start_with(Config {
            timing: self.timing(),
            rate_limit: limited.then(|| self.limit()),
            ..Config::default()
        })
        .await?)
    }
}

/// Distinct TLS material per machine, like the network's PKI.
struct Pki;

impl NodePki for Pki {
    fn issue_server(&self, address: &Address, _sans: &[String]) -> Result<EngineTls, ProviderError> {
        Ok(EngineTls {
            ca_cert_pem: "-----BEGIN CERTIFICATE-----\nQ0E=\n-----END CERTIFICATE-----\n".into(),
            server_cert_pem: format!(
                "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                address.slug()
            ),
            server_key_pem: Secret::new("-----BEGIN PRIVATE KEY-----\nS0VZ\n-----END PRIVATE KEY-----\n"),
        })
    }
}

fn firewall(region: &str) -> FirewallSpec {
    FirewallSpec {
        address: Address::firewall(ProviderKind::DigitalOcean, region),
        network: NETWORK.into(),
        provider: ProviderKind::DigitalOcean,
        region: region.into(),
        rules: vec![
            FirewallRule { protocol: Protocol::Tcp, port: 2376, sources: vec!["198.51.100.0/24".into()] },
            FirewallRule { protocol: Protocol::Tcp, port: 26656, sources: vec!["0.0.0.0/0".into()] },
        ],
    }
}

fn machine(region: &str, slot: u32) -> MachineSpec {
    MachineSpec {
        address: Address::machine(format!("c-{region}"), slot),
        network: NETWORK.into(),
        provider: ProviderKind::DigitalOcean,
        region: Region { slug: region.into(), city: None },
        size: "s-1vcpu-1gb".into(),
        image: None,
        tags: BTreeSet::from(["peer_cluster".to_string()]),
        profile: None,
        bootstrap: 1,
        chain_id: None,
        generation: 0,
        idempotency_key: String::new(),
        firewall: Some(Address::firewall(ProviderKind::DigitalOcean, region)),
    }
}

struct Applied {
    total: Duration,
    phases: [Duration; 3],
}

/// The machine layer of a 100-droplet network, in the executor's order: firewalls, then machines,
/// then the stable IPs of the genesis and master hosts; each phase fully concurrent.
async fn apply(p: &DigitalOceanProvider) -> anyhow::Result<Applied> {
    let start = Instant::now();
    let fws: Vec<FirewallSpec> = REGIONS.iter().map(|r| firewall(r)).collect();
    for r in futures::future::join_all(fws.iter().map(|f| p.create_firewall(f))).await {
        r?;
    }
    let t_fw = start.elapsed();
    let ctx = CreateContext { firewall: None, pki: Some(Arc::new(Pki)) };
    let specs: Vec<MachineSpec> = REGIONS.iter().flat_map(|r| (0..20).map(move |i| machine(r, i))).collect();
    let mut machines = Vec::new();
    for r in futures::future::join_all(specs.iter().map(|s| p.create_machine(s, &ctx))).await {
        machines.push(r?);
    }
    let t_machines = start.elapsed();
    // The genesis and master hosts: the first machine of the first two clusters.
    let mut anchors = Vec::new();
    for m in [&machines[0], &machines[20]] {
        let Address::Machine { cluster, slot } = &m.address else {
            bail!("{} is not a machine address", m.address)
        };
        let spec = StableIpSpec {
            address: Address::stable_ip(cluster.clone(), *slot),
            network: NETWORK.into(),
            machine: m.address.clone(),
            provider: ProviderKind::DigitalOcean,
            region: m.region.clone(),
        };
        anchors.push((spec, m));
    }
    for r in futures::future::join_all(anchors.iter().map(|(s, m)| p.create_stable_ip(s, m))).await {
        r?;
    }
    let total = start.elapsed();
    Ok(Applied { total, phases: [t_fw, t_machines - t_fw, total - t_machines] })
}

/// Prints one apply's row of the table; with `allowed`, also the 429s and the ratio to what the limit
/// allows.
fn report(title: &str, a: &Applied, server: &TestServer, allowed: Option<(&str, Duration)>) {
    let (throttled, allowed, ratio) = match allowed {
        Some((how, allowed)) => (
            server.throttled().to_string(),
            format!("{}{how}", secs(allowed)),
            format!("{:.3}", a.total.as_secs_f64() / allowed.as_secs_f64()),
        ),
        None => ("—".into(), "—".into(), "—".into()),
    };
    println!(
        "| {title} | {} | {throttled} | {} (firewalls {}, machines {}, stable IPs {}) | {allowed} | {ratio} |",
        server.total_requests(),
        secs(a.total),
        secs(a.phases[0]),
        secs(a.phases[1]),
        secs(a.phases[2])
    );
    eprintln!("{title}: requests {}", counts(server));
}

fn counts(server: &TestServer) -> String {
    let c: BTreeMap<String, u64> = server.request_counts();
    c.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// What a sliding window of `per` requests per `window` alone allows for `n` requests sent as fast
/// as possible: request k waits for request k-per to expire.
fn limit_bound(n: u64, per: u32, window: Duration) -> Duration {
    window * (n.saturating_sub(1) / u64::from(per)) as u32
}

async fn refresh(o: &Options) -> anyhow::Result<()> {
    let server = o.server(true).await?;
    let tags = vec![
        format!("peerfleet:network:{NETWORK}"),
        "peerfleet:gen:0".into(),
        "peerfleet:boot:1".into(),
        "peer_cluster".into(),
    ];
    server.with_world(|w| {
        for i in 0..500u32 {
            let region = REGIONS[(i % 5) as usize];
            w.seed_droplet(
                &format!("{NETWORK}-c-{region}-{}", i / 5),
                region,
                "s-1vcpu-1gb",
                "debian-12-x64",
                &tags,
                true,
            );
        }
    });
    let p = DigitalOceanProvider::new(Secret::new(server.token()), o.settings(&server, true))?;
    let start = Instant::now();
    let all = futures::future::join_all(REGIONS.iter().map(|r| p.inventory(NETWORK, r))).await;
    let elapsed = start.elapsed();
    let machines: usize = all.into_iter().map(|r| r.map(|i| i.machines.len())).sum::<Result<usize, _>>()?;
    println!(
        "| refresh, {machines} droplets in {} regions | {} ({}) | {} | {} | — | — |",
        REGIONS.len(),
        server.total_requests(),
        counts(&server),
        server.throttled(),
        secs(elapsed)
    );
    server.assert_conforms();
    Ok(())
}

/// The unconstrained apply: its phases, and how many requests its firewall phase took.
struct Reference {
    applied: Applied,
    firewall_requests: u64,
}

async fn apply_fresh(o: &Options) -> anyhow::Result<Reference> {
    let reference = {
        let server = o.server(false).await?;
        let p = DigitalOceanProvider::new(Secret::new(server.token()), o.settings(&server, false))?;
        let a = apply(&p).await?;
        report("apply, 100 droplets, no limit (reference)", &a, &server, None);
        server.assert_conforms();
        let firewall_requests = ["tags_create", "firewalls_list", "firewalls_create"]
            .iter()
            .map(|op| server.request_count(op))
            .sum();
        Reference { applied: a, firewall_requests }
    };
    let server = o.server(true).await?;
    let p = DigitalOceanProvider::new(Secret::new(server.token()), o.settings(&server, true))?;
    let a = apply(&p).await?;
    let n = server.total_requests();
    let allowed = reference.applied.total.max(limit_bound(n, o.limit().per_minute, o.window()));
    report("apply, 100 droplets, fresh token", &a, &server, Some(("", allowed)));
    server.assert_conforms();
    Ok(reference)
}

async fn apply_busy(o: &Options, reference: &Reference) -> anyhow::Result<()> {
    let server = o.server(true).await?;
    // Another client of the token has just spent the minute's 250 requests.
    server.consume_rate_limit(o.limit().per_minute);
    let p = DigitalOceanProvider::new(Secret::new(server.token()), o.settings(&server, true))?;
    let a = apply(&p).await?;
    let allowed = o.window() + reference.applied.total;
    report("apply, 100 droplets, minute just spent by another client", &a, &server, Some(("", allowed)));
    server.assert_conforms();
    Ok(())
}

async fn apply_spread(o: &Options, reference: &Reference) -> anyhow::Result<()> {
    let server = o.server(true).await?;
    // Another client has sent at the full rate for the last minute: its requests expire one by one.
    server.consume_rate_limit_over(o.limit().per_minute, o.window());
    let p = DigitalOceanProvider::new(Secret::new(server.token()), o.settings(&server, true))?;
    let a = apply(&p).await?;
    // The k-th request of the apply can go once the k-th of the other client's expires, k/250 of the
    // window from now. The last create is request number (firewall phase + look-up + 100); after it
    // the apply runs as the reference did from its machine phase on.
    let last_create = reference.firewall_requests + 101;
    let slot = o.window().mul_f64(last_create as f64 / f64::from(o.limit().per_minute));
    let allowed = slot + reference.applied.phases[1] + reference.applied.phases[2];
    report("apply, 100 droplets, token in use at the full rate", &a, &server, Some((" (estimate)", allowed)));
    server.assert_conforms();
    Ok(())
}

async fn pace(o: &Options) -> anyhow::Result<()> {
    let server = o.server(true).await?;
    let mut settings = o.settings(&server, true);
    // Every inventory lists anew, so each costs three requests.
    settings.refresh_reuse = Duration::ZERO;
    let p = DigitalOceanProvider::new(Secret::new(server.token()), settings)?;
    let start = Instant::now();
    for _ in 0..250 {
        p.inventory(NETWORK, "fra1").await?;
    }
    let elapsed = start.elapsed();
    let n = server.total_requests();
    let allowed = limit_bound(n, o.limit().per_minute, o.window());
    println!(
        "| {n} requests back to back | {n} | {} | {} | {} | {:.3} |",
        server.throttled(),
        secs(elapsed),
        secs(allowed),
        elapsed.as_secs_f64() / allowed.as_secs_f64()
    );
    server.assert_conforms();
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let o = options()?;
    // A markdown table on stdout (what `scripts/bench digitalocean` writes into BENCHMARKS.md).
    println!(
        "Limit {} per {} and {} per {}, droplets boot in {}.\n",
        o.limit().per_minute,
        secs(o.limit().minute),
        o.limit().per_hour,
        secs(o.limit().hour),
        secs(o.timing().boot)
    );
    println!("| scenario | requests | 429s | time | what the limit allows | ratio |");
    println!("|---|---|---|---|---|---|");
    let run = |name: &str| o.only.as_deref().is_none_or(|only| only == name);
    if run("refresh") {
        refresh(&o).await?;
    }
    if run("apply") || run("busy") || run("spread") {
        let reference = apply_fresh(&o).await?;
        if run("busy") {
            apply_busy(&o, &reference).await?;
        }
        if run("spread") {
            apply_spread(&o, &reference).await?;
        }
    }
    if run("pace") {
        pace(&o).await?;
    }
    Ok(())
}
