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
use std::sync::Mutex;
use std::time::{Duration, Instant};

use peerfleet_core::Address;
use peerfleet_core::executor::{ApplyEvent, Reporter};
use peerfleet_core::network::Network;
use peerfleet_core::plan::{Plan, Remembered, plan};
use peerfleet_core::refresh::refresh;
use peerfleet_core::state::MemoryState;

mod support;

use support::Local;

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

async fn once(net: &Network, local: &Local) -> (Duration, Duration, Duration, usize) {
    let actual = refresh(net, &local.providers, &[], None).await.expect("refresh");
    assert!(
        actual.objects.is_empty(),
        "the benchmark starts from nothing; found leftovers of `{}`",
        net.name
    );
    let options = support::plan_options(&local.image);
    let planned = plan(net, &actual, &Remembered::default(), &options).expect("plan").plan;
    let store = MemoryState::new();
    let timings = Timings::default();
    let start = Instant::now();
    let outcome = support::apply(&planned, local, &store, net, &timings).await;
    let wall = start.elapsed();
    let took = timings.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let path = critical_path(&planned, &took);
    let sequential: Duration = took.values().sum();
    support::destroy(net, local, &store, &outcome.state).await;
    (wall, path, sequential, planned.changes.len())
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let Some(local) = support::connect("local_up", "bench-local-up").await else { return };
        let net = support::network("bench-local-up", &[]);
        println!("from nothing to 9 nodes + 11 healthy containers (local Docker engine), {RUNS} runs\n");
        println!("| run | steps | wall time | critical path | ratio | all steps one after another |");
        println!("|---|---|---|---|---|---|");
        let mut ratios = Vec::new();
        for run in 1..=RUNS {
            let (wall, path, sequential, steps) = once(&net, &local).await;
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
