//! Planning at scale: refresh through the in-memory test provider, then plan, for a network of
//! 1,000 nodes and 10,000 containers, and for 2× and 4× that.
//!
//! ```text
//! cargo bench -p peerfleet-core --features testing --bench plan
//! ```
//!
//! Each size runs in its own child process so its peak memory (VmHWM) is its own. Two cases per
//! size: planning from nothing, and the no-op plan of a converged network (the common case of
//! `peerfleet plan` on a running network). Goals: the no-op plan at 1× ≤ 60 ms, memory ≤ 100 MB, and
//! time and memory growing ≤ 2.2× per doubling up to 4×.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use peerfleet_core::actual::ActualState;
use peerfleet_core::executor::{ApplyEvent, ApplyOptions, Interrupt, apply};
use peerfleet_core::network::Network;
use peerfleet_core::plan::{PlanOptions, Remembered, plan};
use peerfleet_core::refresh::refresh;
use peerfleet_core::resource::{Container, ContainerState, Desired, Health, Machine, MachineStatus};
use peerfleet_core::state::MemoryState;
use peerfleet_core::testing::TestWorld;

mod support;
use support::network;

const RUNS: usize = 7;
/// How many times each size runs (in its own process, the sizes taking turns).
const ROUNDS: usize = 3;

/// The allocator the `peerfleet` CLI uses (see its `main.rs`), so this measures what `plan` costs there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A world holding exactly what applying `network` leaves. Machines and containers are put in
/// directly (running 11,000 steps through the executor would measure the executor, not planning);
/// the few firewalls and stable IPs then go through the executor, which the world has no other way in.
fn converged_world(rt: &tokio::runtime::Runtime, network: &Network) -> TestWorld {
    let world = TestWorld::new();
    {
        let first = plan(network, &ActualState::default(), &Remembered::default(), &PlanOptions::default())
            .expect("plans");
        let mut ids = BTreeMap::new();
        for (n, change) in first.plan.changes.iter().enumerate() {
            if let Some(Desired::Machine(m)) = &change.after {
                let id = format!("m-{n}");
                ids.insert(m.address.clone(), id.clone());
                let machine = Machine {
                    id,
                    address: m.address.clone(),
                    provider: m.provider,
                    region: m.region.slug.clone(),
                    size: m.size.clone(),
                    image: "img".into(),
                    tags: m.tags.clone(),
                    chain_id: m.chain_id.clone(),
                    generation: 0,
                    bootstrap: m.bootstrap,
                    status: MachineStatus::Running,
                    public_ip: Some("192.0.2.10".into()),
                    private_ip: None,
                };
                world.insert_machine(&network.name, machine);
            }
        }
        for (n, change) in first.plan.changes.iter().enumerate() {
            if let Some(Desired::Container(s)) = &change.after {
                let container = Container {
                    id: format!("c-{n}"),
                    address: s.address.clone(),
                    spec: Some(s.clone()),
                    state: ContainerState::Running,
                    health: Health::Healthy,
                    chain_id: s.chain_id.clone(),
                };
                world.insert_container(&network.name, &ids[&s.node], container);
            }
        }
    }
    let actual = rt.block_on(refresh(network, &world.providers(), &[], None)).expect("refresh");
    let rest = plan(network, &actual, &Remembered::default(), &PlanOptions::default()).expect("plans").plan;
    let options = ApplyOptions { genesis: Some(network.chain.genesis.clone()), ..Default::default() };
    let outcome = rt
        .block_on(apply(
            &rest,
            &world.providers(),
            &MemoryState::new(),
            &options,
            &|_: &ApplyEvent| {},
            Interrupt::new(),
        ))
        .expect("apply starts");
    assert!(outcome.is_success(), "{:?}", outcome.failed.first());
    world
}

fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Resets the kernel's peak-RSS mark to the current RSS (Linux `clear_refs`), so the peak measured
/// afterwards belongs to what runs afterwards.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// One size, in this process: prints a result line.
fn run(scale: u32) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let (nodes, containers) = (1_000 * scale, 10_000 * scale);
    let net = network(nodes, containers);
    let empty = TestWorld::new();
    let converged = converged_world(&rt, &net);
    let mut fresh_times = Vec::new();
    let mut noop_times = Vec::new();
    let mut noop_plan_times = Vec::new();
    let mut changes = (0, 0);
    reset_peak();
    let baseline = rss_kib("VmRSS:");
    for _ in 0..RUNS {
        for (world, slot) in [(&empty, 0), (&converged, 1)] {
            let start = Instant::now();
            let actual = rt.block_on(refresh(&net, &world.providers(), &[], None)).expect("refresh");
            let planning = Instant::now();
            let planned = plan(
                &net,
                &actual,
                &Remembered::default(),
                &PlanOptions { refreshed: true, ..Default::default() },
            )
            .expect("plan");
            let (planned_in, all_in) = (planning.elapsed(), start.elapsed());
            // Dropped after timing, as a CLI run ends there anyway.
            drop((planned, actual));
            if slot == 0 {
                fresh_times.push(all_in);
            } else {
                noop_times.push(all_in);
                noop_plan_times.push(planned_in);
            }
        }
    }
    // The change counts, outside the timed runs.
    for (world, slot) in [(&empty, 0), (&converged, 1)] {
        let actual = rt.block_on(refresh(&net, &world.providers(), &[], None)).expect("refresh");
        let options = PlanOptions { refreshed: true, ..Default::default() };
        let planned = plan(&net, &actual, &Remembered::default(), &options).expect("plan");
        if slot == 0 {
            changes.0 = planned.plan.changes.len();
        } else {
            changes.1 = planned.plan.changes.len();
        }
    }
    // One line for the parent, which compares sizes.
    println!(
        "RESULT {scale} {nodes} {containers} {:.1} {} {:.1} {} {:.1} {:.1} {:.1}",
        median(fresh_times).as_secs_f64() * 1e3,
        changes.0,
        median(noop_times).as_secs_f64() * 1e3,
        changes.1,
        median(noop_plan_times).as_secs_f64() * 1e3,
        rss_kib("VmHWM:").saturating_sub(baseline) as f64 / 1024.0,
        rss_kib("VmHWM:") as f64 / 1024.0,
    );
}

/// `--profile-noop SIZE RUNS`: only the no-op refresh and plan, RUNS times, in [`noop_rounds`], so a
/// profiler can count that alone (`valgrind --tool=callgrind --collect-atstart=no
/// --toggle-collect=plan::noop_rounds`).
fn profile_noop(scale: u32, runs: usize) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let net = network(1_000 * scale, 10_000 * scale);
    let converged = converged_world(&rt, &net);
    let start = Instant::now();
    noop_rounds(&rt, &net, &converged, runs);
    println!("{runs} no-op rounds: {:.1} ms each", start.elapsed().as_secs_f64() * 1e3 / runs as f64);
}

#[inline(never)]
fn noop_rounds(rt: &tokio::runtime::Runtime, net: &Network, world: &TestWorld, runs: usize) {
    for _ in 0..runs {
        let actual = rt.block_on(refresh(net, &world.providers(), &[], None)).expect("refresh");
        let options = PlanOptions { refreshed: true, ..Default::default() };
        let planned = plan(net, &actual, &Remembered::default(), &options).expect("plan");
        assert!(planned.plan.changes.is_empty());
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--profile-noop") {
        profile_noop(
            args[i + 1].parse().expect("--profile-noop SIZE RUNS"),
            args[i + 2].parse().expect("RUNS"),
        );
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--size") {
        run(args[i + 1].parse().expect("--size N"));
        return;
    }
    println!(
        "Refresh (test provider) + plan, median of {RUNS} runs; each size in its own process. \"plan\" is"
    );
    println!(
        "the planner alone on the refreshed state; \"peak growth\" is the peak RSS growth while refreshing"
    );
    println!("and planning; \"×\" is the growth from the size before (goal ≤ 2.2× per doubling).\n");
    println!(
        "| size | nodes | containers | plan from nothing | × | no-op plan (converged) | × | of which plan | peak growth | × | process peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let exe = std::env::current_exe().expect("own path");
    // The sizes take turns, ROUNDS times, and each figure is the median of its size's rounds: a load
    // that comes and goes on a shared machine then hits every size alike, so the growth per doubling
    // compares like with like.
    let sizes = [1u32, 2, 4];
    let mut results: Vec<Vec<Vec<f64>>> = vec![Vec::new(); sizes.len()];
    let mut failed = false;
    for _ in 0..ROUNDS {
        for (k, scale) in sizes.iter().enumerate() {
            let out = Command::new(&exe).args(["--size", &scale.to_string()]).output().expect("child runs");
            let text = String::from_utf8_lossy(&out.stdout);
            match text.lines().find_map(|l| l.strip_prefix("RESULT ")) {
                Some(line) => {
                    results[k].push(line.split_whitespace().map(|x| x.parse().unwrap_or(f64::NAN)).collect())
                }
                None => {
                    eprintln!("size {scale}× failed:\n{}", String::from_utf8_lossy(&out.stderr));
                    failed = true;
                }
            }
        }
    }
    let mut previous: Option<Vec<f64>> = None;
    for (scale, rounds) in sizes.iter().zip(&results) {
        if rounds.is_empty() {
            continue;
        }
        let v: Vec<f64> = (0..rounds[0].len())
            .map(|i| {
                let mut column: Vec<f64> = rounds.iter().map(|r| r[i]).collect();
                column.sort_by(f64::total_cmp);
                column[column.len() / 2]
            })
            .collect();
        let growth = |i: usize| match &previous {
            Some(p) => format!("{:.2}×", v[i] / p[i]),
            None => "—".to_string(),
        };
        println!(
            "| {scale}× | {:.0} | {:.0} | {:.1} ms ({} changes) | {} | {:.1} ms ({} changes) | {} | {:.1} ms | {:.1} MB | {} | {:.1} MB |",
            v[1],
            v[2],
            v[3],
            v[4],
            growth(3),
            v[5],
            v[6],
            growth(5),
            v[7],
            v[8],
            growth(8),
            v[9],
        );
        previous = Some(v);
    }
    if failed {
        std::process::exit(1);
    }
}
