//! Benchmark against moto: 200 machines (25 in each of the eight AWS regions) created from empty,
//! then the no-op refresh, counting the API requests through the fault proxy.
//!
//! Budgets (from the AWS issue): at most 2 requests per machine for the create (plus waits), at most
//! 2 `DescribeInstances` per region and at most 1 s wall time for the refresh. Exits non-zero when a
//! budget is exceeded, so it can gate CI.
//!
//! Run: `scripts/setup-moto.sh && cargo run --release -p peerfleet-aws --features testing --example bench_moto`

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::future::try_join_all;
use peerfleet_aws::AwsProvider;
use peerfleet_aws::testing::{self, FaultProxy, Moto};
use peerfleet_core::provider::{CreateContext, MachineProvider};
use peerfleet_core::resource::{FirewallSpec, MachineSpec};
use peerfleet_docker::NetworkCa;
use tokio::sync::Semaphore;

const REGIONS: [&str; 8] = testing::EIGHT_REGIONS;
const PER_REGION: u32 = 25;
const NETWORK: &str = "bench";
/// Creates in flight at once (the executor's default parallelism is of this order).
const PARALLEL: usize = 16;
const REFRESH_RUNS: usize = 5;

fn firewall(region: &str) -> FirewallSpec {
    testing::firewall_spec(NETWORK, region, &["198.51.100.0/24"])
}

fn machine(region: &str, slot: u32) -> MachineSpec {
    testing::machine_spec(NETWORK, region, slot, region)
}

fn counts(proxy: &FaultProxy) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in proxy.requests() {
        *out.entry(r.action).or_insert(0) += 1;
    }
    out
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let moto = Moto::start().context("moto is needed: run scripts/setup-moto.sh")?;
    let proxy = FaultProxy::start(moto.addr()).await?;
    let provider = Arc::new(AwsProvider::new(testing::settings(&proxy.endpoint())));
    let pki = Arc::new(NetworkCa::generate(NETWORK)?);
    let machines = REGIONS.len() * PER_REGION as usize;

    // Create from empty: the firewall of each region, then its machines.
    let started = Instant::now();
    let firewalls = try_join_all(REGIONS.map(|r| {
        let provider = provider.clone();
        async move { provider.create_firewall(&firewall(r)).await }
    }))
    .await?;
    let gate = Arc::new(Semaphore::new(PARALLEL));
    let creates = REGIONS.iter().zip(&firewalls).flat_map(|(region, fw)| {
        (0..PER_REGION).map(|slot| {
            let (provider, gate) = (provider.clone(), gate.clone());
            let ctx = CreateContext { firewall: Some(fw.clone()), pki: Some(pki.clone()) };
            let spec = machine(region, slot);
            async move {
                let _permit = gate.acquire().await?;
                provider.create_machine(&spec, &ctx).await.map_err(anyhow::Error::from)
            }
        })
    });
    try_join_all(creates).await?;
    let create_wall = started.elapsed();
    let create_counts = counts(&proxy);
    let create_total: usize = create_counts.values().sum();

    // The no-op refresh, as a plan right after the apply does it: every region at once.
    let mut refresh_walls = Vec::new();
    let mut describes_per_region = BTreeMap::new();
    let mut refresh_total = 0;
    for _ in 0..REFRESH_RUNS {
        proxy.clear();
        let started = Instant::now();
        let inventories = try_join_all(REGIONS.map(|r| {
            let provider = provider.clone();
            async move { provider.inventory(NETWORK, r).await }
        }))
        .await?;
        refresh_walls.push(started.elapsed());
        let seen: usize = inventories.iter().map(|i| i.machines.len()).sum();
        if seen != machines {
            bail!("refresh saw {seen} machines, expected {machines}");
        }
        describes_per_region.clear();
        for r in proxy.requests_of("DescribeInstances") {
            *describes_per_region.entry(r.region.unwrap_or_default()).or_insert(0usize) += 1;
        }
        refresh_total = proxy.requests().len();
    }
    refresh_walls.sort();
    let worst_describes = describes_per_region.values().copied().max().unwrap_or(0);
    let median = refresh_walls[refresh_walls.len() / 2];
    let worst = refresh_walls[refresh_walls.len() - 1];

    println!("## create from empty: {machines} machines in {} regions", REGIONS.len());
    println!("| action | requests |\n|---|---|");
    for (action, n) in &create_counts {
        println!("| {action} | {n} |");
    }
    println!(
        "| **total** | **{create_total}** ({:.2} per machine) |\n\nwall: {:.2} s ({PARALLEL} creates in flight)\n",
        create_total as f64 / machines as f64,
        create_wall.as_secs_f64()
    );
    println!("## no-op refresh, {REFRESH_RUNS} runs");
    println!(
        "requests per refresh: {refresh_total} ({worst_describes} DescribeInstances per region at most); wall: \
         median {:.0} ms, worst {:.0} ms, best {:.0} ms",
        ms(median),
        ms(worst),
        ms(refresh_walls[0])
    );

    // The stand-in is one Python process on the same machine: its speed, and so the wall times above,
    // depend on what else runs. Printed so a reader can judge a number.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load average while measuring (1, 5, 15 min): {}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );

    let mut failed = Vec::new();
    if create_total > 2 * machines {
        failed.push(format!("create used {create_total} requests for {machines} machines"));
    }
    if worst_describes > 2 {
        failed.push(format!("refresh used {worst_describes} DescribeInstances in one region"));
    }
    if worst > Duration::from_secs(1) {
        failed.push(format!("refresh took {:.0} ms", ms(worst)));
    }
    if !failed.is_empty() {
        bail!("budget exceeded: {}", failed.join("; "));
    }
    println!("\nall budgets met");
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
