//! Benchmark against moto: 200 machines (25 in each of the eight AWS regions) created from empty, and
//! the no-op refresh of them, each timed against its floor — the bare EC2 calls that cannot be
//! avoided, sent with the SDK directly to the same moto in the same run:
//!
//! - create: 200 bare `RunInstances` (same image, type, security group, client token, tags and user
//!   data size), 16 in flight, as peerfleet's creates are;
//! - refresh: one bare `DescribeInstances` per region, the eight at once.
//!
//! Floor and peerfleet runs alternate (floor first in one pair, peerfleet first in the next), so the
//! machine's load falls on both alike; each create starts from a reset moto. A separate run through
//! the fault proxy counts every request. Goals (issue 12): both ratios ≤ 1.3×; budgets (the AWS issue):
//! ≤ 2 requests per machine for the create and ≤ 2 `DescribeInstances` per region for the refresh.
//!
//! Prints markdown tables on stdout (what `scripts/bench aws` writes into `BENCHMARKS.md`) and progress
//! on stderr. Exits non-zero when a request budget is exceeded or a refresh misses a machine; a missed
//! time goal is reported in the table, not as a failure, since it depends on the machine's load.
//!
//! Run: `scripts/setup-moto.sh && cargo run --release -p peerfleet-aws --features testing --example bench_moto`

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use aws_sdk_ec2::Client;
use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ec2::types::{Filter, InstanceType, ResourceType};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::future::try_join_all;
use peerfleet_aws::testing::{self, FaultProxy, Moto};
use peerfleet_aws::{AwsProvider, Partition, tags};
use peerfleet_core::bootstrap::{self, BootstrapOptions};
use peerfleet_core::provider::{CreateContext, MachineProvider, NodePki};
use peerfleet_core::resource::{Firewall, FirewallSpec, MachineSpec};
use peerfleet_docker::NetworkCa;
use tokio::sync::Semaphore;

const REGIONS: [&str; 8] = testing::EIGHT_REGIONS;
const PER_REGION: u32 = 25;
const MACHINES: usize = REGIONS.len() * PER_REGION as usize;
const NETWORK: &str = "bench";
/// Creates in flight at once (the executor's default parallelism is of this order).
const PARALLEL: usize = 16;
/// Floor/peerfleet pairs of creates (each from a reset moto) and of refreshes.
const CREATE_PAIRS: usize = 5;
const REFRESH_PAIRS: usize = 25;
/// Rounds of single requests, one at a time, for moto's cost per request.
const SINGLE_ROUNDS: usize = 3;
/// Both ratios' goal (issue 12).
const GOAL: f64 = 1.3;

fn firewall(region: &str) -> FirewallSpec {
    testing::firewall_spec(NETWORK, region, &["198.51.100.0/24"])
}

fn machine(region: &str, slot: u32) -> MachineSpec {
    testing::machine_spec(NETWORK, region, slot, region)
}

/// The image peerfleet's default lookup picks in `region` (moto serves the same ones everywhere).
fn image(region: &str) -> &'static str {
    if Partition::of(region) == Partition::AwsCn { testing::DEBIAN_AMI_CN } else { testing::DEBIAN_AMI }
}

fn counts(proxy: &FaultProxy) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in proxy.requests() {
        *out.entry(r.action).or_insert(0) += 1;
    }
    out
}

fn load_average() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.split_whitespace().next().unwrap_or("?").to_string()
}

/// One floor client per region, built once as any SDK user would: no peerfleet code in between.
async fn floor_clients(endpoint: &str) -> Vec<Client> {
    let mut clients = Vec::new();
    for region in REGIONS {
        let config = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region))
            .endpoint_url(endpoint)
            .credentials_provider(Credentials::new("testing", "testing", None, None, "floor"))
            .load()
            .await;
        clients.push(Client::new(&config));
    }
    clients
}

/// Creates the network's firewalls, then times its 200 machines through the provider.
async fn peerfleet_create(provider: &Arc<AwsProvider>, pki: &Arc<NetworkCa>) -> anyhow::Result<Duration> {
    let firewalls = try_join_all(REGIONS.map(|r| {
        let provider = provider.clone();
        async move { provider.create_firewall(&firewall(r)).await }
    }))
    .await?;
    let started = Instant::now();
    create_machines(provider, &firewalls, pki).await?;
    Ok(started.elapsed())
}

async fn create_machines(
    provider: &Arc<AwsProvider>,
    firewalls: &[Firewall],
    pki: &Arc<NetworkCa>,
) -> anyhow::Result<()> {
    let gate = Arc::new(Semaphore::new(PARALLEL));
    let creates = REGIONS.iter().zip(firewalls).flat_map(|(region, fw)| {
        (0..PER_REGION).map(|slot| {
            let (provider, gate) = (provider.clone(), gate.clone());
            let pki: Arc<dyn NodePki> = pki.clone();
            let ctx = CreateContext { firewall: Some(fw.clone()), pki: Some(pki) };
            let spec = machine(region, slot);
            async move {
                let _permit = gate.acquire().await?;
                provider.create_machine(&spec, &ctx).await.map_err(anyhow::Error::from)
            }
        })
    });
    try_join_all(creates).await?;
    Ok(())
}

/// Creates a security group per region, then times 200 bare `RunInstances` with the parameters
/// peerfleet sends (its user data issued once, outside the clock: the floor is the calls alone).
async fn floor_create(endpoint: &str, user_data: &str) -> anyhow::Result<Duration> {
    let clients = floor_clients(endpoint).await;
    let groups = try_join_all(clients.iter().map(|client| async move {
        let out = client
            .create_security_group()
            .group_name(peerfleet_aws::group_name(NETWORK))
            .description("floor")
            .send()
            .await?;
        out.group_id().map(str::to_string).context("CreateSecurityGroup returned no ID")
    }))
    .await?;
    let gate = Arc::new(Semaphore::new(PARALLEL));
    let started = Instant::now();
    let launches = REGIONS.iter().zip(&clients).zip(&groups).flat_map(|((region, client), group)| {
        let gate = gate.clone();
        (0..PER_REGION).map(move |slot| {
            let spec = machine(region, slot);
            let gate = gate.clone();
            let request = client
                .run_instances()
                .image_id(image(region))
                .instance_type(InstanceType::from(spec.size.as_str()))
                .min_count(1)
                .max_count(1)
                .client_token(&spec.idempotency_key)
                .user_data(user_data)
                .security_group_ids(group)
                .set_tag_specifications(Some(tags::specifications(
                    &[ResourceType::Instance, ResourceType::Volume],
                    &tags::machine_tags(&spec),
                )));
            async move {
                let _permit = gate.acquire().await?;
                request.send().await?;
                anyhow::Ok(())
            }
        })
    });
    try_join_all(launches).await?;
    Ok(started.elapsed())
}

/// The no-op refresh as a plan does it: every region's inventory at once.
async fn peerfleet_refresh(provider: &AwsProvider) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let inventories = try_join_all(REGIONS.map(|r| provider.inventory(NETWORK, r))).await?;
    let took = started.elapsed();
    let machines: usize = inventories.iter().map(|i| i.machines.len()).sum();
    let firewalls: usize = inventories.iter().map(|i| i.firewalls.len()).sum();
    ensure!(machines == MACHINES, "refresh saw {machines} machines, expected {MACHINES}");
    ensure!(firewalls == REGIONS.len(), "refresh saw {firewalls} firewalls, expected {}", REGIONS.len());
    Ok(took)
}

/// One bare `DescribeInstances` per region, the eight at once.
async fn floor_refresh(clients: &[Client]) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let outs = try_join_all(clients.iter().map(|c| c.describe_instances().send())).await?;
    let took = started.elapsed();
    let seen: usize = outs.iter().flat_map(|o| o.reservations()).map(|r| r.instances().len()).sum();
    ensure!(seen == MACHINES, "floor refresh saw {seen} instances, expected {MACHINES}");
    Ok(took)
}

/// Runs the pair in alternating order (floor first in even pairs), `before` ahead of each run.
async fn pairs<B, F, P>(
    n: usize,
    label: &str,
    mut before: B,
    mut floor: F,
    mut peerfleet: P,
) -> anyhow::Result<Pairs>
where
    B: AsyncFnMut() -> anyhow::Result<()>,
    F: AsyncFnMut() -> anyhow::Result<Duration>,
    P: AsyncFnMut() -> anyhow::Result<Duration>,
{
    let mut out = Pairs::default();
    for i in 0..n {
        let (f, p) = if i % 2 == 0 {
            before().await?;
            let f = floor().await.context("floor")?;
            before().await?;
            (f, peerfleet().await.context("peerfleet")?)
        } else {
            before().await?;
            let p = peerfleet().await.context("peerfleet")?;
            before().await?;
            (floor().await.context("floor")?, p)
        };
        eprintln!("{label} {}/{n}: floor {:.0} ms, peerfleet {:.0} ms", i + 1, ms(f), ms(p));
        out.floor.push(f);
        out.peerfleet.push(p);
    }
    Ok(out)
}

/// Paired timings.
#[derive(Default)]
struct Pairs {
    floor: Vec<Duration>,
    peerfleet: Vec<Duration>,
}

impl Pairs {
    fn ratios(&self) -> Vec<f64> {
        self.floor.iter().zip(&self.peerfleet).map(|(f, p)| p.as_secs_f64() / f.as_secs_f64()).collect()
    }

    /// A table row: both medians with their ranges, the median of the pairs' ratios, the goal.
    fn row(&self, what: &str, unit: fn(Duration) -> String) -> String {
        let ratios = self.ratios();
        let ratio = median_f(&ratios);
        let verdict = if ratio <= GOAL {
            format!("≤ {GOAL}×: met")
        } else {
            format!(
                "≤ {GOAL}×: **missed by {:.2}×** ({:.0} % over)",
                ratio - GOAL,
                (ratio / GOAL - 1.0) * 100.0
            )
        };
        format!(
            "| {what} | {} ({}–{}) | {} ({}–{}) | **{ratio:.2}×** ({:.2}–{:.2}) | {verdict} |",
            unit(median(&self.floor)),
            unit(min(&self.floor)),
            unit(max(&self.floor)),
            unit(median(&self.peerfleet)),
            unit(min(&self.peerfleet)),
            unit(max(&self.peerfleet)),
            ratios.iter().copied().fold(f64::INFINITY, f64::min),
            ratios.iter().copied().fold(0.0, f64::max),
        )
    }
}

/// Times one request.
async fn timed<T, E>(request: impl Future<Output = Result<T, E>>) -> anyhow::Result<Duration>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let started = Instant::now();
    request.await?;
    Ok(started.elapsed())
}

/// moto's time for single requests, sent one at a time to each region in turn.
async fn single_costs(clients: &[Client]) -> anyhow::Result<Vec<(&'static str, Duration)>> {
    let network = || Filter::builder().name(format!("tag:{}", tags::NETWORK)).values(NETWORK).build();
    // The states peerfleet's refresh asks for: every one but `terminated`.
    let live = ["pending", "running", "stopping", "stopped", "shutting-down"].map(String::from).to_vec();
    let live = || Filter::builder().name("instance-state-name").set_values(Some(live.clone())).build();
    let mut times: [Vec<Duration>; 4] = Default::default();
    for _ in 0..SINGLE_ROUNDS {
        for c in clients {
            times[0].push(timed(c.describe_instances().send()).await?);
            let peerfleets = c.describe_instances().filters(network()).filters(live()).max_results(1000);
            times[1].push(timed(peerfleets.send()).await?);
            times[2].push(timed(c.describe_security_groups().filters(network()).send()).await?);
            times[3].push(timed(c.describe_addresses().filters(network()).send()).await?);
        }
    }
    let names = [
        "`DescribeInstances`, bare (the floor's)",
        "`DescribeInstances`, network tag and live states (peerfleet's)",
        "`DescribeSecurityGroups`, network tag (peerfleet's; one group)",
        "`DescribeAddresses`, network tag (peerfleet's; none: about moto's fixed cost per request)",
    ];
    Ok(names.into_iter().zip(times.iter().map(|t| median(t))).collect())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let load_before = load_average();
    let moto = Moto::start().context("moto is needed: run scripts/setup-moto.sh")?;
    let endpoint = moto.endpoint();
    let pki = Arc::new(NetworkCa::generate(NETWORK)?);
    let user_data = {
        let tls = pki.issue_server(&machine(REGIONS[0], 0).address, &[])?;
        BASE64.encode(bootstrap::cloud_init(&tls, &BootstrapOptions::default()))
    };

    // 1. One counted create and refresh through the fault proxy: the request budgets.
    eprintln!("counted run through the fault proxy");
    let proxy = FaultProxy::start(moto.addr()).await?;
    let counted = Arc::new(AwsProvider::new(testing::settings(&proxy.endpoint())));
    peerfleet_create(&counted, &pki).await?;
    let create_counts = counts(&proxy);
    proxy.clear();
    peerfleet_refresh(&counted).await?;
    let refresh_counts = counts(&proxy);
    let mut describes_per_region = BTreeMap::new();
    for r in proxy.requests_of("DescribeInstances") {
        *describes_per_region.entry(r.region.unwrap_or_default()).or_insert(0usize) += 1;
    }
    drop(proxy);

    // 2. Refresh against its floor, on the account the counted run left (200 machines, 8 groups),
    //    both sides straight to moto with clients already connected (a refresh right after an apply).
    let provider = AwsProvider::new(testing::settings(&endpoint));
    let clients = floor_clients(&endpoint).await;
    peerfleet_refresh(&provider).await?;
    floor_refresh(&clients).await?;
    let refresh = pairs(
        REFRESH_PAIRS,
        "refresh",
        async || Ok(()),
        async || floor_refresh(&clients).await,
        async || peerfleet_refresh(&provider).await,
    )
    .await?;
    eprintln!("single requests");
    let singles = single_costs(&clients).await?;

    // 3. Create against its floor, each run from a reset moto (an empty account, as the first run had).
    let create = pairs(
        CREATE_PAIRS,
        "create",
        async || moto.reset().map_err(Into::into),
        async || floor_create(&endpoint, &user_data).await,
        async || {
            // A new provider per run, as each `peerfleet apply` builds one: its clients and image
            // lookups are part of the time.
            let provider = Arc::new(AwsProvider::new(testing::settings(&endpoint)));
            peerfleet_create(&provider, &pki).await
        },
    )
    .await?;
    let load_after = load_average();

    let secs = |d: Duration| format!("{:.2} s", d.as_secs_f64());
    let millis = |d: Duration| format!("{:.0} ms", ms(d));
    println!(
        "Load average (1 min) {load_before} at the start, {load_after} at the end. Medians, ranges in \
         brackets; the ratio is the median of the pairs' ratios.\n"
    );
    println!("| | floor: bare SDK calls | peerfleet | peerfleet / floor | goal |");
    println!("|---|---|---|---|---|");
    println!(
        "{}",
        create.row(
            &format!("create {MACHINES} machines, {PARALLEL} in flight ({CREATE_PAIRS} pairs; floor: {MACHINES} `RunInstances`)"),
            secs
        )
    );
    println!(
        "{}",
        refresh.row(
            &format!(
                "no-op refresh, {} regions at once ({REFRESH_PAIRS} pairs; floor: {} `DescribeInstances`)",
                REGIONS.len(),
                REGIONS.len()
            ),
            millis
        )
    );

    let create_total: usize = create_counts.values().sum();
    let refresh_total: usize = refresh_counts.values().sum();
    let worst_describes = describes_per_region.values().copied().max().unwrap_or(0);
    let list = |c: &BTreeMap<String, usize>| {
        c.iter().map(|(action, n)| format!("{n} `{action}`")).collect::<Vec<_>>().join(", ")
    };
    println!("\n| requests (counted by the fault proxy) | total | budget |\n|---|---|---|");
    println!(
        "| create: {} | {create_total} ({:.2} per machine) | ≤ 2 per machine: {} |",
        list(&create_counts),
        create_total as f64 / MACHINES as f64,
        if create_total <= 2 * MACHINES { "met" } else { "**missed**" }
    );
    println!(
        "| no-op refresh: {} | {refresh_total} | ≤ 2 `DescribeInstances` per region: {} ({worst_describes}) |",
        list(&refresh_counts),
        if worst_describes <= 2 { "met" } else { "**missed**" }
    );

    println!(
        "\n| moto's time for one request, sent alone ({SINGLE_ROUNDS} rounds × {} regions) | median |",
        REGIONS.len()
    );
    println!("|---|---|");
    for (what, d) in &singles {
        println!("| {what} | {:.1} ms |", ms(*d));
    }
    println!(
        "| `RunInstances`, effective (the floor's median create / {MACHINES}) | {:.1} ms |",
        ms(median(&create.floor)) / MACHINES as f64
    );
    // What bounds the refresh ratio: moto serves one request at a time, so what the three requests
    // of a region cost it, next to the floor's one, is roughly the ratio a refresh can reach.
    let cost = |i: usize| ms(singles[i].1);
    println!(
        "\nSent alone, peerfleet's three requests of a region cost moto {:.2}× the floor's one \
         ((DescribeInstances {:.0} + DescribeSecurityGroups {:.0} + DescribeAddresses {:.0} ms) / {:.0} ms).",
        (cost(1) + cost(2) + cost(3)) / cost(0),
        cost(1),
        cost(2),
        cost(3),
        cost(0)
    );

    let mut failed = Vec::new();
    if create_total > 2 * MACHINES {
        failed.push(format!("create used {create_total} requests for {MACHINES} machines"));
    }
    if worst_describes > 2 {
        failed.push(format!("refresh used {worst_describes} DescribeInstances in one region"));
    }
    if !failed.is_empty() {
        bail!("budget exceeded: {}", failed.join("; "));
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn min(v: &[Duration]) -> Duration {
    v.iter().copied().min().unwrap_or_default()
}

fn max(v: &[Duration]) -> Duration {
    v.iter().copied().max().unwrap_or_default()
}

fn median_f(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}
