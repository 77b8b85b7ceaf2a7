//! A rolling upgrade of the nine relays of the nine-region network on the local Docker engine,
//! compared with the sum of its batches' critical paths, with the fewest relays healthy during it.
//!
//! ```text
//! cargo bench -p peerfleet-docker --bench rolling
//! ```
//!
//! The network comes up once (nine virtual nodes, genesis, master, nine relays); then each run changes
//! the relays' env, which the planner turns into nine batches of one (`max_unavailable = 1`,
//! stop-first), and applies it through the real executor with a file-backed state, as the CLI does.
//! A batch's critical path is its slowest member's step as measured in that run (remove the old
//! container, create the new one, wait for its health gate), so the sum over batches is what the
//! rollout must take; the goal is a total wall time ≤ 1.2× that sum, i.e. little time between
//! batches. A sampler polls the engine every 100 ms for the relays it reports healthy (their probe
//! passes only while peered with the master). The network is destroyed at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use peerfleet_core::Address;
use peerfleet_core::executor::{ApplyEvent, Reporter};
use peerfleet_core::network::Network;
use peerfleet_core::plan::{Remembered, plan};
use peerfleet_core::provider::ContainerEngine;
use peerfleet_core::refresh::refresh;
use peerfleet_core::resource::{ContainerState, Health};
use peerfleet_core::state::{LocalStateFile, State};
use peerfleet_docker::DockerEngine;

mod support;

use support::Local;

const NAME: &str = "bench-rolling";
const RELAYS: usize = 9;
const RUNS: usize = 3;

/// One step by the wall clock, and how long the executor says it took.
#[derive(Clone, Copy)]
struct Step {
    started: Instant,
    finished: Option<(Instant, Duration)>,
}

/// Every step of an apply.
#[derive(Default)]
struct Steps(Mutex<BTreeMap<Address, Step>>);

impl Reporter for Steps {
    fn event(&self, event: &ApplyEvent) {
        let mut steps = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            ApplyEvent::Started { address, .. } => {
                steps.insert(address.clone(), Step { started: Instant::now(), finished: None });
            }
            ApplyEvent::Finished { address, elapsed, .. } => {
                if let Some(step) = steps.get_mut(address) {
                    step.finished = Some((Instant::now(), *elapsed));
                }
            }
            _ => {}
        }
    }
}

fn network(version: &str) -> Network {
    support::network(NAME, &[("CLIENT_VERSION", version)])
}

/// What the sampler saw: the fewest relays healthy, and when each relay was first healthy on `version`.
struct Seen {
    fewest: usize,
    samples: usize,
    healthy_on_new: BTreeMap<String, Instant>,
}

/// Polls the engine every 100 ms until `stop`.
async fn sample(engine: Arc<DockerEngine>, version: String, stop: Arc<AtomicBool>) -> Seen {
    let mut seen = Seen { fewest: usize::MAX, samples: 0, healthy_on_new: BTreeMap::new() };
    let mut ticks = tokio::time::interval(Duration::from_millis(100));
    while !stop.load(Ordering::SeqCst) {
        ticks.tick().await;
        let Ok(all) = engine.list_containers(NAME).await else { continue };
        let now = Instant::now();
        let healthy: Vec<_> = all
            .iter()
            .filter(|c| c.address.to_string().starts_with("container.relay["))
            .filter(|c| c.state == ContainerState::Running && c.health == Health::Healthy)
            .collect();
        let distinct: BTreeSet<String> = healthy.iter().map(|c| c.address.to_string()).collect();
        seen.fewest = seen.fewest.min(distinct.len());
        seen.samples += 1;
        for c in healthy {
            let on_new = c.spec.as_ref().and_then(|s| s.env.get("CLIENT_VERSION")) == Some(&version);
            if on_new {
                seen.healthy_on_new.entry(c.address.to_string()).or_insert(now);
            }
        }
    }
    seen
}

struct Run {
    wall: Duration,
    batches: usize,
    sum_of_paths: Duration,
    between: Duration,
    fewest: usize,
    samples: usize,
    mean_step: Duration,
    mean_noticed: Duration,
}

async fn roll(version: &str, local: &Local, store: &LocalStateFile, state: &mut State) -> Run {
    let net = network(version);
    let actual = refresh(&net, &local.providers, &[], None).await.expect("refresh");
    let planned =
        plan(&net, &actual, &Remembered::of(state), &support::plan_options(&local.image)).expect("plan").plan;
    assert_eq!(planned.rollouts.len(), 1, "one rollout: the relays");
    let batches = planned.rollouts[0].batches.clone();
    assert_eq!(batches.len(), RELAYS, "{}", planned.rollouts[0].headline());

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(sample(local.engine.clone(), version.to_string(), stop.clone()));
    let steps = Steps::default();
    let start = Instant::now();
    let outcome = support::apply(&planned, local, store, &net, &steps).await;
    let wall = start.elapsed();
    stop.store(true, Ordering::SeqCst);
    let seen = sampler.await.expect("the sampler ran");
    *state = outcome.state;

    let steps = steps.0.into_inner().unwrap_or_else(|e| e.into_inner());
    let step = |a: &Address| {
        let s = steps.get(a).expect("every member ran");
        let (finished, took) = s.finished.expect("every member finished");
        (s.started, finished, took)
    };
    let mut sum_of_paths = Duration::ZERO;
    let mut between = Duration::ZERO;
    let mut previous_end: Option<Instant> = None;
    for batch in &batches {
        sum_of_paths += batch.iter().map(|a| step(a).2).max().unwrap_or_default();
        let first_start = batch.iter().map(|a| step(a).0).min().expect("a batch has members");
        if let Some(end) = previous_end {
            between += first_start.saturating_duration_since(end);
        }
        previous_end = batch.iter().map(|a| step(a).1).max();
    }
    let members: Vec<&Address> = batches.iter().flatten().collect();
    let mean_step = members.iter().map(|a| step(a).2).sum::<Duration>() / RELAYS as u32;
    // How long after the engine first reported a new relay healthy the gate let its step finish.
    let noticed: Vec<Duration> = members
        .iter()
        .filter_map(|a| {
            let healthy = seen.healthy_on_new.get(&a.to_string())?;
            Some(step(a).1.saturating_duration_since(*healthy))
        })
        .collect();
    let mean_noticed = noticed.iter().sum::<Duration>() / u32::try_from(noticed.len().max(1)).unwrap_or(1);
    Run {
        wall,
        batches: batches.len(),
        sum_of_paths,
        between,
        fewest: seen.fewest,
        samples: seen.samples,
        mean_step,
        mean_noticed,
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let Some(local) = support::connect("rolling", NAME).await else { return };
        let dir = tempfile::tempdir().expect("temp dir");
        let store = LocalStateFile::new(dir.path().join("peerfleet.state"));

        // Up, from nothing.
        let net = network("v0");
        let actual = refresh(&net, &local.providers, &[], None).await.expect("refresh");
        assert!(actual.objects.is_empty(), "the benchmark starts from nothing; found leftovers of `{NAME}`");
        let up = plan(&net, &actual, &Remembered::default(), &support::plan_options(&local.image)).expect("plan").plan;
        let mut state = support::apply(&up, &local, &store, &net, &|_: &ApplyEvent| {}).await.state;

        println!("rolling upgrade of 9 relays (env change, max_unavailable = 1, stop-first), {RUNS} runs\n");
        println!(
            "| run | batches | wall time | Σ batch critical paths | ratio | between batches | fewest relays healthy (samples) | mean step | gate noticed healthy after |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        for run in 1..=RUNS {
            // Let the relays settle (every one healthy) so each run starts from the same place.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let r = roll(&format!("v{run}"), &local, &store, &mut state).await;
            println!(
                "| {run} | {} | {:.2} s | {:.2} s | {:.2}× | {:.2} s | {} of {RELAYS} ({}) | {:.2} s | {:.2} s |",
                r.batches,
                r.wall.as_secs_f64(),
                r.sum_of_paths.as_secs_f64(),
                r.wall.as_secs_f64() / r.sum_of_paths.as_secs_f64(),
                r.between.as_secs_f64(),
                r.fewest,
                r.samples,
                r.mean_step.as_secs_f64(),
                r.mean_noticed.as_secs_f64(),
            );
        }

        support::destroy(&network(&format!("v{RUNS}")), &local, &store, &state).await;
    });
}
