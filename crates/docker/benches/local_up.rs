//! From nothing to the whole nine-region network healthy on the local Docker engine: nine virtual
//! nodes, genesis, master and nine relays — compared with the critical path.
//!
//! ```text
//! cargo bench -p peerfleet-docker --bench local_up
//! ```
//!
//! The critical path is the longest chain of dependent steps, each counted with the duration it
//! actually took in that run (create + health gate): node → genesis → master → slowest relay. The
//! executor's goal is a total wall time ≤ 1.5× that path: everything off the path must overlap it.
//! Three runs; each starts from nothing and is destroyed afterwards.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use peerfleet_core::Address;
use peerfleet_core::executor::{self, ApplyEvent, ApplyOptions, Interrupt, Reporter};
use peerfleet_core::network::{Network, ProviderKind, Role, Strategy};
use peerfleet_core::plan::{Plan, PlanOptions, Remembered, plan};
use peerfleet_core::provider::Providers;
use peerfleet_core::refresh::refresh;
use peerfleet_core::spec::{ClusterBuilder, NetworkBuilder, ServiceBuilder};
use peerfleet_core::state::MemoryState;
use peerfleet_docker::{DockerConnector, DockerEngine, LocalNodes, locate_node_binary, reference_image};

const RUNS: usize = 3;

#[derive(Default)]
struct Timings(Mutex<BTreeMap<Address, Duration>>);

impl Reporter for Timings {
    fn event(&self, event: &ApplyEvent) {
        if let ApplyEvent::Finished { address, elapsed, .. } = event {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(address.clone(), *elapsed);
        }
    }
}

fn network() -> Network {
    let cities = [
        "Northern China",
        "Singapore",
        "Sydney",
        "Frankfurt",
        "Amsterdam",
        "London",
        "Virginia",
        "Oregon",
        "São Paulo",
    ];
    let genesis = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/genesis.json"))
        .expect("examples/genesis.json");
    let mut b = NetworkBuilder::new("bench-local-up").genesis(genesis);
    for city in cities {
        let name = city.to_lowercase().replace(' ', "-").replace('ã', "a");
        b = b.cluster(ClusterBuilder::new(name, ProviderKind::Local, city).tags(["peer_cluster"]));
    }
    b.service(ServiceBuilder::new("genesis", Role::Genesis))
        .service(ServiceBuilder::new("master", Role::Master))
        .service(
            ServiceBuilder::new("relay", Role::Relay)
                .containers(9)
                .strategy(Strategy::EmptiestNode)
                .deploy_tags(["peer_cluster"]),
        )
        .build()
        .expect("valid network")
}

/// The longest path through the plan's DAG, each step weighted by its measured duration.
fn critical_path(plan: &Plan, took: &BTreeMap<Address, Duration>) -> Duration {
    let mut memo: BTreeMap<&Address, Duration> = BTreeMap::new();
    fn finish<'a>(
        a: &'a Address,
        plan: &'a Plan,
        took: &BTreeMap<Address, Duration>,
        memo: &mut BTreeMap<&'a Address, Duration>,
    ) -> Duration {
        if let Some(d) = memo.get(a) {
            return *d;
        }
        let change = plan.change(a).expect("edges point into the plan");
        let before = change.waits_for.iter().map(|d| finish(d, plan, took, memo)).max().unwrap_or_default();
        let d = before + took.get(a).copied().unwrap_or_default();
        memo.insert(a, d);
        d
    }
    plan.changes.iter().map(|c| finish(&c.address, plan, took, &mut memo)).max().unwrap_or_default()
}

async fn once(net: &Network, providers: &Providers, image: &str) -> (Duration, Duration, Duration, usize) {
    let options =
        PlanOptions { reference_image: Some(image.to_string()), refreshed: true, ..Default::default() };
    let actual = refresh(net, providers, &[], None).await.expect("refresh");
    assert!(
        actual.objects.is_empty(),
        "the benchmark starts from nothing; found leftovers of `{}`",
        net.name
    );
    let planned = plan(net, &actual, &Remembered::default(), &options).expect("plan").plan;
    let store = MemoryState::new();
    let timings = Timings::default();
    let apply = ApplyOptions { genesis: Some(net.chain.genesis.clone()), ..ApplyOptions::default() };
    let start = Instant::now();
    let outcome = executor::apply(&planned, providers, &store, &apply, &timings, Interrupt::new())
        .await
        .expect("apply starts");
    let wall = start.elapsed();
    assert!(outcome.is_success(), "apply failed: {:?}", outcome.failed);
    let took = timings.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let path = critical_path(&planned, &took);
    let sequential: Duration = took.values().sum();

    // Tear down.
    let now = refresh(net, providers, &[], None).await.expect("refresh");
    let destroy = PlanOptions {
        destroy: true,
        replace_genesis: Some(net.chain.id.clone()),
        refreshed: true,
        ..options
    };
    let memory = Remembered {
        serial: outcome.state.serial,
        lineage: outcome.state.lineage.clone(),
        ..Remembered::default()
    };
    let down = plan(net, &now, &memory, &destroy).expect("destroy plan").plan;
    let outcome = executor::apply(
        &down,
        providers,
        &store,
        &ApplyOptions::default(),
        &Timings::default(),
        Interrupt::new(),
    )
    .await
    .expect("destroy starts");
    assert!(outcome.is_success(), "destroy failed: {:?}", outcome.failed);
    (wall, path, sequential, planned.changes.len())
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let engine = match DockerEngine::connect_local().await {
            Ok(e) => e,
            Err(e) => {
                eprintln!("SKIPPED local_up: no Docker engine ({e})");
                return;
            }
        };
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let binary = locate_node_binary(Some(&workspace)).expect("node binary");
        let image = Arc::new(reference_image(&binary).expect("reference image"));
        peerfleet_docker::ensure_image(engine.client(), &image).await.expect("image builds");
        let engine = Arc::new(engine.with_reference_image(image.clone()));
        let net = network();
        let providers = Providers::new()
            .with_machines(Arc::new(LocalNodes::new(engine.clone())))
            .with_engines(Arc::new(DockerConnector::new(net.name.clone()).with_local_engine(engine.clone())));
        println!("from nothing to 9 nodes + 11 healthy containers (local Docker engine), {RUNS} runs\n");
        println!("| run | steps | wall time | critical path | ratio | all steps one after another |");
        println!("|---|---|---|---|---|---|");
        let mut ratios = Vec::new();
        for run in 1..=RUNS {
            let (wall, path, sequential, steps) = once(&net, &providers, &image.tag).await;
            let ratio = wall.as_secs_f64() / path.as_secs_f64();
            ratios.push(ratio);
            println!(
                "| {run} | {steps} | {:.2} s | {:.2} s | {ratio:.2}× | {:.2} s |",
                wall.as_secs_f64(),
                path.as_secs_f64(),
                sequential.as_secs_f64()
            );
        }
        ratios.sort_by(f64::total_cmp);
        println!("\nmedian ratio {:.2}× (goal ≤ 1.5×)", ratios[ratios.len() / 2]);
    });
}
