//! Rollouts end to end in the core: planner batches run by the executor against the test world.

// Test helpers (not only `#[test]` functions) may unwrap.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use super::*;
use crate::actual::ActualState;
use crate::network::{Network, ProviderKind, Role};
use crate::plan::{Plan, PlanOptions, Remembered, plan};
use crate::refresh::refresh;
use crate::resource::{ContainerState, Health};
use crate::spec::{ClusterBuilder, NetworkBuilder, ServiceBuilder};
use crate::state::MemoryState;
use crate::testing::TestWorld;
use crate::update::{FailureAction, MaxUnavailable, UpdateOrder, UpdatePolicy};

const NET: &str = "rolling";
const RELAYS: u32 = 6;

fn network(version: &str, policy: UpdatePolicy) -> Network {
    NetworkBuilder::new(NET)
        .genesis(b"{\"chain\":\"rolling\"}".to_vec())
        .cluster(ClusterBuilder::new("virginia", ProviderKind::Local, "Virginia").nodes(3))
        .service(ServiceBuilder::new("genesis", Role::Genesis))
        .service(ServiceBuilder::new("master", Role::Master))
        .service(
            ServiceBuilder::new("relay", Role::Relay)
                .containers(RELAYS)
                .env("CLIENT_VERSION", version)
                .update(policy),
        )
        .build()
        .unwrap()
}

async fn plan_for(world: &TestWorld, store: &MemoryState, net: &Network) -> Plan {
    let actual: ActualState = refresh(net, &world.providers(), &[], None).await.unwrap();
    let state = store.current();
    plan(net, &actual, &Remembered::of(&state), &PlanOptions { refreshed: true, ..Default::default() })
        .unwrap()
        .plan
}

async fn apply_plan(world: &TestWorld, store: &MemoryState, net: &Network, plan: &Plan) -> ApplyOutcome {
    let options = ApplyOptions {
        genesis: Some(net.chain.genesis.clone()),
        gate_poll: Duration::from_millis(10),
        gate_poll_max: Duration::from_millis(20),
        ..ApplyOptions::default()
    };
    let quiet = |_: &ApplyEvent| {};
    apply(plan, &world.providers(), store, &options, &quiet, Interrupt::new()).await.unwrap()
}

async fn converge(world: &TestWorld, store: &MemoryState, net: &Network) -> ApplyOutcome {
    let plan = plan_for(world, store, net).await;
    apply_plan(world, store, net, &plan).await
}

/// Relay containers by version, counting only healthy ones.
fn healthy_relays(world: &TestWorld, version: &str) -> usize {
    world
        .containers(NET)
        .iter()
        .filter(|c| c.health == Health::Healthy && c.state == ContainerState::Running)
        .filter_map(|c| c.spec.as_ref())
        .filter(|s| s.role == Role::Relay && s.env.get("CLIENT_VERSION").map(String::as_str) == Some(version))
        .count()
}

fn relays_total(world: &TestWorld) -> usize {
    world.containers(NET).iter().filter(|c| c.spec.as_ref().is_some_and(|s| s.role == Role::Relay)).count()
}

/// Samples healthy relays (any version) while `f` runs; returns the fewest seen.
async fn fewest_healthy_during<T>(world: &TestWorld, f: impl Future<Output = T>) -> (T, usize) {
    let done = Arc::new(AtomicBool::new(false));
    let fewest = Arc::new(AtomicUsize::new(usize::MAX));
    let sampler = {
        let (world, done, fewest) = (world.clone(), done.clone(), fewest.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                let n = world
                    .containers(NET)
                    .iter()
                    .filter(|c| c.health == Health::Healthy)
                    .filter(|c| c.spec.as_ref().is_some_and(|s| s.role == Role::Relay))
                    .count();
                fewest.fetch_min(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let out = f.await;
    done.store(true, Ordering::SeqCst);
    sampler.await.unwrap();
    (out, fewest.load(Ordering::SeqCst))
}

async fn up(policy: UpdatePolicy) -> (TestWorld, MemoryState) {
    let world = TestWorld::new();
    world.set_healthy_after(Duration::from_millis(50));
    let store = MemoryState::new();
    let outcome = converge(&world, &store, &network("v1", policy)).await;
    assert!(outcome.is_success(), "{:?}", outcome.failed);
    assert_eq!(healthy_relays(&world, "v1"), RELAYS as usize);
    (world, store)
}

#[tokio::test(start_paused = true)]
async fn a_rollout_keeps_all_but_max_unavailable_relays_healthy() {
    let (world, store) = up(UpdatePolicy::default()).await;
    let v2 = network("v2", UpdatePolicy::default());
    let (outcome, fewest) = fewest_healthy_during(&world, converge(&world, &store, &v2)).await;
    assert!(outcome.is_success(), "{:?}", outcome.failed);
    assert_eq!(fewest, RELAYS as usize - 1);
    assert_eq!(healthy_relays(&world, "v2"), RELAYS as usize);
}

#[tokio::test(start_paused = true)]
async fn fifty_percent_replaces_half_the_relays_at_a_time() {
    let half = UpdatePolicy { max_unavailable: MaxUnavailable::Percent(50), ..Default::default() };
    let (world, store) = up(half).await;
    let v2 = network("v2", half);
    let plan = plan_for(&world, &store, &v2).await;
    assert_eq!(plan.rollouts[0].batches.len(), 2);
    let (outcome, fewest) = fewest_healthy_during(&world, apply_plan(&world, &store, &v2, &plan)).await;
    assert!(outcome.is_success(), "{:?}", outcome.failed);
    assert_eq!(fewest, RELAYS as usize / 2);
    assert_eq!(healthy_relays(&world, "v2"), RELAYS as usize);
}

#[tokio::test(start_paused = true)]
async fn start_first_never_takes_a_relay_down() {
    let start_first = UpdatePolicy { order: UpdateOrder::StartFirst, ..Default::default() };
    let (world, store) = up(start_first).await;
    let v2 = network("v2", start_first);
    let (outcome, fewest) = fewest_healthy_during(&world, converge(&world, &store, &v2)).await;
    assert!(outcome.is_success(), "{:?}", outcome.failed);
    assert_eq!(fewest, RELAYS as usize);
    assert_eq!(healthy_relays(&world, "v2"), RELAYS as usize);
    assert_eq!(relays_total(&world), RELAYS as usize, "every old container was removed");
}

#[tokio::test(start_paused = true)]
async fn a_failing_batch_pauses_the_rollout_and_a_fixed_spec_resumes_it() {
    let pause = UpdatePolicy { gate_timeout_ms: Some(2_000), ..Default::default() };
    let (world, store) = up(pause).await;
    world.never_healthy_with_env("CLIENT_VERSION", "broken");
    let broken = network("broken", pause);
    let plan = plan_for(&world, &store, &broken).await;
    let outcome = apply_plan(&world, &store, &broken, &plan).await;
    assert!(!outcome.is_success());
    let lines = crate::render::stopped_rollouts(&plan, &outcome.failed, &outcome.succeeded);
    assert_eq!(lines.len(), 1);
    assert!(
        lines[0].starts_with("rollout of relay paused at batch 1 of 6: container.relay[0] (not healthy"),
        "{lines:?}"
    );
    assert!(lines[0].contains("0 replaced, 5 not reached still run the previous spec"), "{lines:?}");
    assert_eq!(outcome.failed.len(), 1, "{:?}", outcome.failed);
    let (failed, error) = &outcome.failed[0];
    assert_eq!(*failed, Address::container("relay", 0));
    assert!(error.message.contains("relay-1 peered with the master"), "{error}");
    assert!(error.message.contains("health unhealthy"), "{error}");
    assert_eq!(outcome.skipped.len(), RELAYS as usize - 1);
    // Not reached: still the old spec, untouched and healthy.
    assert_eq!(healthy_relays(&world, "v1"), RELAYS as usize - 1);

    // A fixed spec resumes: the failed relay and the rest move to it.
    let fixed = network("v2", pause);
    let outcome = converge(&world, &store, &fixed).await;
    assert!(outcome.is_success(), "{:?}", outcome.failed);
    assert_eq!(healthy_relays(&world, "v2"), RELAYS as usize);
    assert!(!plan_for(&world, &store, &fixed).await.has_changes());
}

#[tokio::test(start_paused = true)]
async fn rollback_puts_the_failed_batch_back_on_the_previous_spec() {
    let rollback = UpdatePolicy {
        failure_action: FailureAction::Rollback,
        gate_timeout_ms: Some(2_000),
        ..Default::default()
    };
    let (world, store) = up(rollback).await;
    world.never_healthy_with_env("CLIENT_VERSION", "broken");
    let outcome = converge(&world, &store, &network("broken", rollback)).await;
    assert_eq!(outcome.failed.len(), 1, "{:?}", outcome.failed);
    assert!(
        outcome.failed[0].1.message.contains("rolled back to the previous spec"),
        "{}",
        outcome.failed[0].1
    );
    assert_eq!(healthy_relays(&world, "v1"), RELAYS as usize, "the failed one is back on v1");
    assert_eq!(relays_total(&world), RELAYS as usize);
    // The state records the rolled-back container, so a plan against it still sees v1 everywhere.
    let state = store.current();
    let Some(crate::resource::Actual::Container(c)) = state.resources.get(&Address::container("relay", 0))
    else {
        panic!("relay 0 missing from the state")
    };
    assert_eq!(c.spec.as_ref().unwrap().env["CLIENT_VERSION"], "v1");
    let outcome = converge(&world, &store, &network("v2", rollback)).await;
    assert!(outcome.is_success(), "{:?}", outcome.failed);
    assert_eq!(healthy_relays(&world, "v2"), RELAYS as usize);
}

#[tokio::test(start_paused = true)]
async fn a_failing_start_first_replacement_leaves_the_old_container_running() {
    let policy =
        UpdatePolicy { order: UpdateOrder::StartFirst, gate_timeout_ms: Some(2_000), ..Default::default() };
    let (world, store) = up(policy).await;
    world.never_healthy_with_env("CLIENT_VERSION", "broken");
    let (outcome, fewest) =
        fewest_healthy_during(&world, converge(&world, &store, &network("broken", policy))).await;
    assert_eq!(outcome.failed.len(), 1, "{:?}", outcome.failed);
    assert!(outcome.failed[0].1.message.contains("the previous container keeps running"));
    assert_eq!(fewest, RELAYS as usize);
    assert_eq!(healthy_relays(&world, "v1"), RELAYS as usize);
    assert_eq!(relays_total(&world), RELAYS as usize, "the broken container was taken away");
}

/// The rolling network with the master's client at `version` (the relays stay at v1).
fn with_master(version: &str) -> Network {
    let mut net = network("v1", UpdatePolicy::default());
    let master = net.services.iter_mut().find(|s| s.role == Role::Master).unwrap();
    master.env.insert("MASTER_VERSION".into(), version.into());
    master.update.gate_timeout_ms = Some(3_000);
    net
}

#[tokio::test(start_paused = true)]
async fn a_master_upgrade_is_done_only_once_its_relays_are_peered_again() {
    let world = TestWorld::new();
    world.set_healthy_after(Duration::from_millis(50));
    let store = MemoryState::new();
    assert!(converge(&world, &store, &with_master("m1")).await.is_success());
    // Relays reconnect by themselves, with backoff: here 500 ms after the new master is healthy.
    world.set_relays_repeer_after(Duration::from_millis(500));
    let m2 = with_master("m2");
    let plan = plan_for(&world, &store, &m2).await;
    let change = plan.change(&Address::container("master", 0)).unwrap();
    assert_eq!(change.action, crate::plan::Action::Replace);
    let gate = change.gate.as_ref().unwrap();
    assert_eq!(gate.relays, Some(RELAYS), "{gate:?}");
    assert!(gate.waiting_for.ends_with(&format!("with its {RELAYS} relays peered again")), "{gate:?}");
    assert!(
        plan.changes
            .iter()
            .all(|c| !matches!(&c.address, Address::Container { service, .. } if service == "relay"))
    );

    let started = tokio::time::Instant::now();
    let outcome = apply_plan(&world, &store, &m2, &plan).await;
    assert!(outcome.is_success(), "{:?}", outcome.failed);
    assert!(started.elapsed() >= Duration::from_millis(550), "returned after {:?}", started.elapsed());
    assert_eq!(healthy_relays(&world, "v1"), RELAYS as usize, "the relays were kept, not replaced");

    // Relays that never come back fail the master's step, saying how many did.
    world.set_relays_repeer_after(Duration::from_secs(3_600));
    let outcome = converge(&world, &store, &with_master("m3")).await;
    assert_eq!(outcome.failed.len(), 1, "{:?}", outcome.failed);
    let (failed, error) = &outcome.failed[0];
    assert_eq!(*failed, Address::container("master", 0));
    assert!(error.message.contains("relays not peered again"), "{error}");
    assert!(error.message.contains(&format!("0 of {RELAYS} relays peered")), "{error}");
}
