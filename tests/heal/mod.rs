//! State heals (invariant 9), on the in-memory test world through the library's [`Deployment`]:
//! after any successful apply the state records exactly what exists, no intent remains, a lost chain
//! pin is restored from the genesis server's labels, and a plan from the state alone agrees with a
//! refreshed one. Includes the short seeded crash-trial run for the test provider.

use std::collections::BTreeMap;
use std::time::Duration;

use peerfleet::core::Address;
use peerfleet::core::executor::{ApplyEvent, Interrupt};
use peerfleet::core::network::{Network, ProviderKind, Role, Strategy};
use peerfleet::core::spec::{ClusterBuilder, NetworkBuilder, ServiceBuilder};
use peerfleet::core::testing::{Op, TestWorld};
use peerfleet::{Applied, ApplyRequest, Deployment, PlanRequest};

use crate::crash::{Census, Tally, Trials};

/// Two local clusters (three nodes), genesis, master and `relays` relays.
fn network(name: &str, relays: u32) -> Network {
    NetworkBuilder::new(name)
        .genesis(format!("genesis of {name}").into_bytes())
        .cluster(ClusterBuilder::new("east", ProviderKind::Local, "Virginia").nodes(2))
        .cluster(ClusterBuilder::new("west", ProviderKind::Local, "Oregon").nodes(1))
        .service(ServiceBuilder::new("genesis", Role::Genesis))
        .service(ServiceBuilder::new("master", Role::Master))
        .service(
            ServiceBuilder::new("relay", Role::Relay).containers(relays).strategy(Strategy::EmptiestNode),
        )
        .build()
        .unwrap()
}

fn quiet(_: &ApplyEvent) {}

async fn apply(d: &Deployment) -> Applied {
    let request = ApplyRequest { parallelism: 4, ..ApplyRequest::default() };
    d.apply(&request, &mut |_| true, &quiet, Interrupt::new()).await.unwrap()
}

fn succeeded(applied: &Applied) -> bool {
    match applied {
        Applied::NothingToDo(_) => true,
        Applied::Ran(_, outcome) => outcome.is_success(),
        Applied::Declined(_) => false,
    }
}

/// What exists of `network` in `world`, by address (every object, duplicates included).
fn census(world: &TestWorld, network: &str) -> Census {
    let mut found: BTreeMap<Address, Vec<String>> = BTreeMap::new();
    for m in world.machines(network) {
        found.entry(m.address).or_default().push(m.id);
    }
    for f in world.firewalls(network) {
        found.entry(f.address).or_default().push(f.id);
    }
    for s in world.stable_ips(network) {
        found.entry(s.address).or_default().push(s.id);
    }
    for c in world.containers(network) {
        found.entry(c.address).or_default().push(c.id);
    }
    Census { found }
}

/// Checks one network after its re-apply: exactly the desired set, state complete, plans agree.
async fn check(d: &Deployment, world: &TestWorld, tally: &mut Tally, trial: &str) {
    let desired = crate::crash::desired(d.network(), None);
    tally.count(trial, &desired, &census(world, &d.network().name));
    let state = d.store().load().await.unwrap();
    let mut problems = crate::crash::state_problems(&state, &census(world, &d.network().name), None);
    if state.chain.as_ref().map(|p| &p.id) != Some(&d.network().chain.id) {
        problems.push(format!("the state pins {:?}", state.chain));
    }
    for no_refresh in [true, false] {
        let prepared = d.plan(&PlanRequest { no_refresh, ..PlanRequest::default() }).await.unwrap();
        if let Some(c) = prepared.planned.plan.changes.first() {
            problems.push(format!("plan (refresh: {}) wants {:?} {}", !no_refresh, c.action, c.address));
        }
    }
    tally.heal(trial, problems);
}

#[tokio::test]
async fn objects_adopted_after_a_crash_are_written_back_with_the_chain_pin() {
    // The killed run created the genesis container (and everything before it) but died before
    // saving it: the state has its intent, no resource and no pin.
    let world = TestWorld::new();
    let dir = tempfile::tempdir().unwrap();
    let net = network("heal-adopt", 2);
    let d = Deployment::new(net.clone(), dir.path().join("s.json")).with_providers(world.providers());
    let genesis = Address::Container { service: "genesis".into(), slot: 0 };
    world.crash_after(Op::CreateContainer, genesis.clone());
    let crashed = tokio::time::timeout(Duration::from_secs(2), apply(&d)).await;
    assert!(crashed.is_err(), "the run hangs at the crash point, and is dropped there (a kill)");
    let after_crash = d.store().load().await.unwrap();
    assert!(after_crash.intents.contains_key(&genesis) && after_crash.chain.is_none());

    // The re-apply adopts the genesis container and creates the rest.
    assert!(succeeded(&apply(&d).await));
    let mut tally = Tally::new("adopted after a crash");
    check(&d, &world, &mut tally, "crash at the genesis create").await;
    tally.assert_clean();
}

#[tokio::test]
async fn a_no_op_apply_heals_what_a_crash_left_unrecorded() {
    // The crash came after the very last create: the re-apply has nothing to do, yet the state must
    // end up complete. (It used to return "no changes" without saving anything.)
    let world = TestWorld::new();
    let dir = tempfile::tempdir().unwrap();
    let net = network("heal-noop", 1);
    let d = Deployment::new(net.clone(), dir.path().join("s.json")).with_providers(world.providers());
    assert!(succeeded(&apply(&d).await));
    let healed = d.store().load().await.unwrap();
    // Forget what the last steps recorded, as a kill between their create and the save would have.
    let mut lost = healed.clone();
    let relay = Address::Container { service: "relay".into(), slot: 0 };
    lost.resources.remove(&relay);
    lost.intents.insert(
        relay.clone(),
        peerfleet::core::state::Intent {
            action: peerfleet::core::plan::Action::Create,
            idempotency_key: None,
            generation: None,
            started_at: peerfleet::core::state::Timestamp::now(),
        },
    );
    lost.chain = None;
    d.store().save(&mut lost).await.unwrap();
    let stale = d.plan(&PlanRequest { no_refresh: true, ..PlanRequest::default() }).await.unwrap();
    assert!(stale.planned.plan.has_changes(), "the state alone disagrees with what exists");

    let applied = apply(&d).await;
    assert!(matches!(applied, Applied::NothingToDo(_)), "what exists is already right: {applied:?}");
    let mut tally = Tally::new("no-op heal");
    check(&d, &world, &mut tally, "no-op re-apply").await;
    tally.assert_clean();
    let state = d.store().load().await.unwrap();
    assert_eq!(state.resources, healed.resources);
}

/// One crash trial on the test world: apply, dropped at a random moment (the in-memory world lives
/// on, like a cloud after a kill -9), then apply again and check.
async fn test_world_trial(trials: &Trials, n: u32, tally: &mut Tally) {
    let world = TestWorld::new();
    for op in [Op::CreateMachine, Op::CreateContainer, Op::CreateFirewall, Op::CreateStableIp] {
        world.set_latency(op, Duration::from_millis(15));
    }
    world.set_healthy_after(Duration::from_millis(10));
    let dir = tempfile::tempdir().unwrap();
    let net = network(&format!("crash-{n}"), 4);
    let d = Deployment::new(net, dir.path().join("s.json")).with_providers(world.providers());
    let kill_at = trials.kill_at(n, Duration::from_millis(250));
    let finished = tokio::time::timeout(kill_at, apply(&d)).await.is_ok();
    tally.killed(!finished);
    // The dropped run's last save may still be on the blocking pool; a killed process's would not.
    tokio::time::sleep(Duration::from_millis(30)).await;
    let re_applied = apply(&d).await;
    let trial = format!("trial {n} (killed at {kill_at:?})");
    if !succeeded(&re_applied) {
        tally.heal(&trial, vec![format!("the re-apply failed: {re_applied:?}")]);
    }
    check(&d, &world, tally, &trial).await;
}

#[tokio::test]
async fn crash_trials_on_the_test_provider_converge_without_duplicates_orphans_or_unhealed_state() {
    let trials = Trials::from_env();
    let mut tally = Tally::new("test provider");
    for n in 0..trials.count {
        test_world_trial(&trials, n, &mut tally).await;
    }
    tally.report(&trials);
    tally.assert_clean();
}

#[tokio::test]
async fn with_a_fifth_of_provider_calls_failing_apply_converges_and_creates_nothing_twice() {
    let trials = Trials::from_env();
    let mut tally = Tally::new("test provider, 20 % faults");
    for n in 0..3u32 {
        let world = TestWorld::new();
        world.fail_randomly(trials.seed + u64::from(n), 0.2);
        let dir = tempfile::tempdir().unwrap();
        let d = Deployment::new(network(&format!("faults-{n}"), 4), dir.path().join("s.json"))
            .with_providers(world.providers());
        let applied = apply(&d).await;
        let trial = format!("faults seed {}", trials.seed + u64::from(n));
        if !succeeded(&applied) {
            tally.heal(&trial, vec![format!("did not converge: {applied:?}")]);
        }
        check(&d, &world, &mut tally, &trial).await;
    }
    tally.report(&trials);
    tally.assert_clean();
}

#[tokio::test]
async fn a_non_retryable_failure_amid_random_faults_stops_only_its_branch() {
    let world = TestWorld::new();
    world.fail_randomly(Trials::from_env().seed, 0.2);
    let relay = Address::Container { service: "relay".into(), slot: 1 };
    world.fail(Op::CreateContainer, Some(relay.clone()), 1, peerfleet::core::provider::ErrorKind::Invalid);
    let dir = tempfile::tempdir().unwrap();
    let d = Deployment::new(network("faults-branch", 4), dir.path().join("s.json"))
        .with_providers(world.providers());
    let Applied::Ran(_, outcome) = apply(&d).await else { panic!("the plan has changes") };
    let failed: Vec<_> = outcome.failed.iter().map(|(a, _)| a.clone()).collect();
    assert_eq!(failed, std::slice::from_ref(&relay), "only the relay with the invalid request failed");
    assert!(outcome.skipped.is_empty(), "nothing waits for a relay");
    assert_eq!(world.containers(&d.network().name).len(), 2 + 3, "genesis, master and the other relays run");
    // The next apply creates the missing relay and nothing else.
    assert!(succeeded(&apply(&d).await));
    let mut tally = Tally::new("non-retryable");
    check(&d, &world, &mut tally, "after the failed branch").await;
    tally.assert_clean();
}
