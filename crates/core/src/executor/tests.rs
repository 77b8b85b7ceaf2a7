//! The executor against the in-memory test world, with tokio's clock paused where time matters.

// Test helpers (not only `#[test]` functions) may unwrap: a poisoned recorder is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use super::*;
use crate::network::{HealthCheck, ProviderKind, Region, RestartPolicy, Role};
use crate::plan::{Change, Gate, Plan, PlanBase, Reason};
use crate::provider::ErrorKind;
use crate::resource::{Actual, ContainerSpec, Desired, FirewallSpec, MachineSpec, StableIpSpec};
use crate::state::{ChainPin, LockInfo, MemoryState, StateBackend, StateErrorKind};
use crate::testing::{Op, TestWorld};

const NET: &str = "testnet";
const GENESIS: &[u8] = b"{\"chain\":\"test\",\"height\":0}";

// ---- building plans by hand (the planner is not needed to test the executor) ----

fn fw_address() -> Address {
    Address::firewall(ProviderKind::Aws, "us-east-1")
}

fn firewall_spec() -> Desired {
    Desired::Firewall(FirewallSpec {
        address: fw_address(),
        network: NET.into(),
        provider: ProviderKind::Aws,
        region: "us-east-1".into(),
        rules: vec![],
    })
}

fn machine_spec(cluster: &str, slot: u32, generation: u32, firewall: Option<Address>) -> MachineSpec {
    MachineSpec {
        address: Address::machine(cluster, slot),
        network: NET.into(),
        provider: ProviderKind::Aws,
        region: Region { slug: "us-east-1".into(), city: None },
        size: "t3.small".into(),
        image: None,
        tags: BTreeSet::from(["peer_cluster".to_string()]),
        profile: None,
        bootstrap: 1,
        chain_id: None,
        generation,
        idempotency_key: format!("{NET}-{cluster}-{slot}-g{generation}"),
        firewall,
    }
}

fn machine(cluster: &str, slot: u32) -> Desired {
    Desired::Machine(machine_spec(cluster, slot, 1, None))
}

fn stable_ip(cluster: &str, slot: u32) -> Desired {
    Desired::StableIp(StableIpSpec {
        address: Address::stable_ip(cluster, slot),
        network: NET.into(),
        machine: Address::machine(cluster, slot),
        provider: ProviderKind::Aws,
        region: "us-east-1".into(),
    })
}

fn container(service: &str, slot: u32, role: Role, node: Address) -> Desired {
    let needs = match role {
        Role::Genesis => vec![],
        Role::Master => vec!["genesis".to_string()],
        Role::Relay => vec!["genesis".to_string(), "master".to_string()],
    };
    Desired::Container(ContainerSpec {
        address: Address::container(service, slot),
        network: NET.into(),
        service: service.into(),
        role,
        name: format!("{service}-{}", slot + 1),
        aliases: vec![format!("{service}-{}", slot + 1), service.into()],
        node,
        image: "peerfleet-node:test".into(),
        env: BTreeMap::new(),
        ports: vec![],
        restart: RestartPolicy::Always,
        health: HealthCheck {
            command: vec!["probe".into()],
            interval_ms: 1000,
            timeout_ms: 1000,
            retries: 3,
        },
        needs,
        chain_id: (role == Role::Genesis).then(|| ChainId::of(GENESIS)),
    })
}

fn change(action: Action, before: Option<Actual>, after: Option<Desired>, waits_for: &[Address]) -> Change {
    let address =
        after.as_ref().map(|d| d.address().clone()).or(before.as_ref().map(|a| a.address().clone()));
    let gate = match &after {
        Some(Desired::Container(s)) if action != Action::Delete => {
            Some(Gate { waiting_for: format!("{} healthy", s.name), timeout_ms: 30_000 })
        }
        _ => None,
    };
    Change {
        address: address.expect("a change has a before or an after"),
        action,
        reasons: vec![Reason::field("state", None, None, false)],
        before,
        after,
        waits_for: waits_for.to_vec(),
        gate,
        rollout: None,
    }
}

fn create(after: Desired, waits_for: &[Address]) -> Change {
    change(Action::Create, None, Some(after), waits_for)
}

fn plan_from(state: &State, changes: Vec<Change>, prior: Vec<Actual>) -> Plan {
    Plan {
        format_version: crate::plan::FORMAT_VERSION,
        network: NET.into(),
        chain_id: ChainId::of(GENESIS),
        only: None,
        changes,
        unchanged: 0,
        prior,
        base: PlanBase { lineage: state.lineage.clone(), serial: state.serial, actual_digest: None },
        rollouts: vec![],
    }
}

/// The whole network of one cluster: firewall, two machines, a stable IP on the first, genesis and
/// master on the first machine, two relays on the second.
fn network_changes() -> Vec<Change> {
    let (m0, m1) = (Address::machine("virginia", 0), Address::machine("virginia", 1));
    let (genesis, master) = (Address::container("genesis", 0), Address::container("master", 0));
    vec![
        create(firewall_spec(), &[]),
        create(Desired::Machine(machine_spec("virginia", 0, 1, Some(fw_address()))), &[fw_address()]),
        create(Desired::Machine(machine_spec("virginia", 1, 1, Some(fw_address()))), &[fw_address()]),
        create(stable_ip("virginia", 0), std::slice::from_ref(&m0)),
        create(
            container("genesis", 0, Role::Genesis, m0.clone()),
            &[m0.clone(), Address::stable_ip("virginia", 0)],
        ),
        create(container("master", 0, Role::Master, m0.clone()), &[m0, genesis.clone()]),
        create(container("relay", 0, Role::Relay, m1.clone()), &[m1.clone(), master.clone()]),
        create(container("relay", 1, Role::Relay, m1.clone()), &[m1, master]),
    ]
}

// ---- running ----

/// Records every event, with the (tokio) time it arrived.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<(tokio::time::Instant, ApplyEvent)>>,
}

impl Reporter for Recorder {
    fn event(&self, event: &ApplyEvent) {
        self.events.lock().unwrap().push((tokio::time::Instant::now(), event.clone()));
    }
}

impl Recorder {
    fn events(&self) -> Vec<ApplyEvent> {
        self.events.lock().unwrap().iter().map(|(_, e)| e.clone()).collect()
    }

    fn position(&self, wanted: impl Fn(&ApplyEvent) -> bool) -> usize {
        self.events().iter().position(wanted).expect("event not reported")
    }

    fn started(&self, address: &Address) -> usize {
        self.position(|e| matches!(e, ApplyEvent::Started { address: a, .. } if a == address))
    }

    fn finished(&self, address: &Address) -> usize {
        self.position(|e| matches!(e, ApplyEvent::Finished { address: a, .. } if a == address))
    }

    fn time_of(&self, wanted: impl Fn(&ApplyEvent) -> bool) -> tokio::time::Instant {
        self.events
            .lock()
            .unwrap()
            .iter()
            .find(|(_, e)| wanted(e))
            .map(|(t, _)| *t)
            .expect("event not reported")
    }
}

fn options() -> ApplyOptions {
    ApplyOptions { genesis: Some(GENESIS.to_vec()), ..ApplyOptions::default() }
}

/// Fails the test instead of hanging it (in tokio time: paused tests advance instantly).
async fn in_time<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(3600), f).await.expect("apply hung")
}

async fn run(
    plan: &Plan,
    world: &TestWorld,
    store: &MemoryState,
    options: &ApplyOptions,
) -> (ApplyOutcome, Recorder) {
    let recorder = Recorder::default();
    let outcome = in_time(apply(plan, &world.providers(), store, options, &recorder, Interrupt::new()))
        .await
        .expect("apply starts");
    (outcome, recorder)
}

/// Applies a plan that must be refused before anything runs; returns why.
async fn refused(
    plan: &Plan,
    providers: &crate::provider::Providers,
    store: &MemoryState,
    options: &ApplyOptions,
) -> ExecutorError {
    let outcome = apply(plan, providers, store, options, &|_: &ApplyEvent| {}, Interrupt::new()).await;
    outcome.expect_err("the apply must be refused")
}

/// A world whose machine creates take 30 s, and a held lock with a 3 s lease (renewed every second).
async fn slow_world_with_short_lease()
-> (TestWorld, MemoryState, ApplyOptions, Box<dyn crate::state::StateLock>) {
    let world = TestWorld::new();
    world.set_latency(Op::CreateMachine, Duration::from_secs(30));
    let store = MemoryState::new();
    let options = ApplyOptions {
        lock: crate::state::LockOptions { lease: Duration::from_secs(3), ..Default::default() },
        ..options()
    };
    let lock = store.lock("apply", &options.lock).await.unwrap();
    (world, store, options, lock)
}

/// [`apply_locked`] with a lock the test holds.
async fn apply_holding(
    plan: &Plan,
    world: &TestWorld,
    store: &MemoryState,
    lock: &mut dyn crate::state::StateLock,
    options: &ApplyOptions,
) -> ApplyOutcome {
    let noop = |_: &ApplyEvent| {};
    in_time(apply_locked(plan, &world.providers(), store, lock, options, &noop, Interrupt::new()))
        .await
        .unwrap()
}

// ---- ordering, state, outputs ----

#[tokio::test(start_paused = true)]
async fn a_network_comes_up_in_dependency_order_and_is_recorded() {
    let world = TestWorld::new();
    world.set_healthy_after(Duration::from_secs(2));
    let store = MemoryState::recording();
    let plan = plan_from(&State::new(), network_changes(), vec![]);
    let (outcome, rec) = run(&plan, &world, &store, &options()).await;

    assert!(outcome.is_success(), "{outcome:?}");
    assert_eq!(outcome.succeeded.len(), 8);
    for change in &plan.changes {
        for dep in &change.waits_for {
            assert!(
                rec.finished(dep) < rec.started(&change.address),
                "{} started before {dep} finished",
                change.address
            );
        }
    }
    // Each container waited for health, not just for its create call.
    assert!(
        rec.events()
            .iter()
            .any(|e| matches!(e, ApplyEvent::Waiting { what, .. } if what == "genesis-1 healthy (container running, health starting)"))
    );

    let state = store.current();
    assert_eq!(state, outcome.state);
    assert_eq!(state.resources.len(), 8);
    assert!(state.intents.is_empty());
    assert_eq!(state.generations.get(&Address::machine("virginia", 0)), Some(&1));
    assert_eq!(state.chain.as_ref().map(|p| p.id.clone()), Some(ChainId::of(GENESIS)));
    assert_eq!(state.chain.as_ref().and_then(ChainPin::genesis).as_deref(), Some(GENESIS));
    assert_eq!(state.outputs.get("chain_id"), Some(&ChainId::of(GENESIS).to_string()));

    // The master's host is the stable IP of the machine it runs on; relays were told so.
    let ip = world.stable_ips(NET)[0].ip.clone();
    assert_eq!(state.outputs.get("master_host"), Some(&ip));
    assert_eq!(state.outputs.get("genesis_host"), Some(&ip));
    let hosts = world.hosts_given(&Address::container("relay", 1)).unwrap();
    assert_eq!(hosts, BTreeMap::from([("genesis".to_string(), ip.clone()), ("master".to_string(), ip)]));
    // Machines joined the firewall created before them.
    let fw = world.firewalls(NET)[0].id.clone();
    assert_eq!(world.firewall_given(&Address::machine("virginia", 1)), Some(Some(fw)));
    // One save per intent batch and per completion batch, never a half-written step.
    assert!(store.writes() >= 8, "{}", store.writes());
    let serials: Vec<u64> = store.history().iter().map(|s| s.serial).collect();
    assert_eq!(serials.len(), store.writes());
    assert!(serials.windows(2).all(|w| w[1] == w[0] + 1), "{serials:?}");
}

#[tokio::test(start_paused = true)]
async fn every_create_is_on_record_before_the_provider_is_called() {
    let world = TestWorld::new();
    let store = MemoryState::recording();
    let changes = vec![create(machine("a", 0), &[]), create(machine("b", 0), &[Address::machine("a", 0)])];
    let plan = plan_from(&State::new(), changes, vec![]);
    let (outcome, _) = run(&plan, &world, &store, &options()).await;
    assert!(outcome.is_success());
    let history = store.history();
    for address in [Address::machine("a", 0), Address::machine("b", 0)] {
        let recorded = history.iter().position(|s| s.intents.contains_key(&address)).unwrap();
        let created = history.iter().position(|s| s.resources.contains_key(&address)).unwrap();
        assert!(recorded < created);
        let intent = &history[recorded].intents[&address];
        let key = format!("{NET}-{}-0-g1", if address == Address::machine("a", 0) { "a" } else { "b" });
        assert_eq!(intent.idempotency_key.as_deref(), Some(key.as_str()));
        assert_eq!(intent.generation, Some(1));
        assert!(!history[created].intents.contains_key(&address));
    }
}

#[tokio::test(start_paused = true)]
async fn replace_deletes_the_old_machine_then_creates_the_new_generation() {
    let world = TestWorld::new();
    let store = MemoryState::new();
    let first = plan_from(&State::new(), vec![create(machine("a", 0), &[])], vec![]);
    let (outcome, _) = run(&first, &world, &store, &options()).await;
    let old = outcome.state.resources[&Address::machine("a", 0)].clone();

    let new = Desired::Machine(machine_spec("a", 0, 2, None));
    let second = plan_from(
        &outcome.state,
        vec![change(Action::Replace, Some(old.clone()), Some(new), &[])],
        vec![old.clone()],
    );
    let (outcome, _) = run(&second, &world, &store, &options()).await;
    assert!(outcome.is_success(), "{outcome:?}");
    let machines = world.machines_at(&Address::machine("a", 0));
    assert_eq!(machines.len(), 1);
    assert_ne!(machines[0].id, old.id());
    assert_eq!(machines[0].generation, 2);
    assert_eq!(outcome.state.generations[&Address::machine("a", 0)], 2);
    assert_eq!(outcome.state.resources[&Address::machine("a", 0)], Actual::Machine(machines[0].clone()));
}

#[tokio::test(start_paused = true)]
async fn a_replace_that_fails_after_deleting_forgets_the_old_object() {
    let world = TestWorld::new();
    let store = MemoryState::new();
    let first = plan_from(&State::new(), vec![create(machine("a", 0), &[])], vec![]);
    let (outcome, _) = run(&first, &world, &store, &options()).await;
    let old = outcome.state.resources[&Address::machine("a", 0)].clone();

    world.fail(Op::CreateMachine, None, 1, ErrorKind::Invalid);
    let new = Desired::Machine(machine_spec("a", 0, 2, None));
    let second = plan_from(
        &outcome.state,
        vec![change(Action::Replace, Some(old.clone()), Some(new), &[])],
        vec![old],
    );
    let (outcome, _) = run(&second, &world, &store, &options()).await;
    assert_eq!(outcome.failed.len(), 1);
    assert!(world.machines(NET).is_empty());
    assert!(!store.current().resources.contains_key(&Address::machine("a", 0)));
    assert!(
        store.current().intents.contains_key(&Address::machine("a", 0)),
        "the failed create stays on record"
    );
}

#[tokio::test(start_paused = true)]
async fn deletes_remove_objects_from_world_and_state() {
    let world = TestWorld::new();
    let store = MemoryState::new();
    let plan = plan_from(&State::new(), network_changes(), vec![]);
    let (outcome, _) = run(&plan, &world, &store, &options()).await;
    let state = outcome.state;

    // Destroy: dependents first (the planner points deletes the reverse way).
    let prior: Vec<Actual> = state.resources.values().cloned().collect();
    let mut changes = Vec::new();
    for change in plan.changes.iter().rev() {
        let actual = state.resources[&change.address].clone();
        let dependents: Vec<Address> = plan
            .changes
            .iter()
            .filter(|c| c.waits_for.contains(&change.address))
            .map(|c| c.address.clone())
            .collect();
        changes.push(change_for_delete(actual, &dependents));
    }
    changes.sort_by(|a, b| a.address.cmp(&b.address));
    let destroy = plan_from(&state, changes, prior);
    let (outcome, _) = run(&destroy, &world, &store, &options()).await;
    assert!(outcome.is_success(), "{outcome:?}");
    assert!(
        world.machines(NET).is_empty() && world.firewalls(NET).is_empty() && world.stable_ips(NET).is_empty()
    );
    assert!(outcome.state.resources.is_empty());
    assert!(!outcome.state.outputs.contains_key("master_host"));
    assert_eq!(world.calls(Op::RemoveContainer), 4);
}

fn change_for_delete(actual: Actual, waits_for: &[Address]) -> Change {
    change(Action::Delete, Some(actual), None, waits_for)
}

// ---- failures, skips, parallelism ----

#[tokio::test(start_paused = true)]
async fn failed_create_skips_dependent_relays_while_an_independent_branch_completes() {
    let world = TestWorld::new();
    let store = MemoryState::new();
    let master = Address::container("master", 0);
    world.fail(Op::CreateContainer, Some(master.clone()), 1, ErrorKind::Invalid);
    let mut changes = network_changes();
    changes.push(create(machine("oregon", 0), &[]));
    let plan = plan_from(&State::new(), changes, vec![]);
    let (outcome, rec) = run(&plan, &world, &store, &options()).await;

    assert_eq!(outcome.failed.len(), 1, "root causes only: {:?}", outcome.failed);
    assert_eq!(outcome.failed[0].0, master);
    assert_eq!(outcome.failed[0].1.kind, ErrorKind::Invalid);
    assert_eq!(
        outcome.skipped,
        [(Address::container("relay", 0), master.clone()), (Address::container("relay", 1), master.clone())]
    );
    assert!(outcome.succeeded.contains(&Address::machine("oregon", 0)));
    assert!(outcome.succeeded.contains(&Address::container("genesis", 0)));
    assert_eq!(world.calls_for(Op::CreateContainer, &Address::container("relay", 0)), 0);
    assert!(
        rec.events().iter().any(|e| matches!(e, ApplyEvent::Skipped { because, .. } if *because == master))
    );
    assert!(!outcome.is_success());
    assert_eq!(
        store.current().resources.len(),
        outcome.succeeded.len(),
        "everything that succeeded is recorded"
    );
    assert_eq!(outcome.succeeded.len(), 6);
}

#[tokio::test(start_paused = true)]
async fn parallelism_bound_is_never_exceeded() {
    let world = TestWorld::new();
    world.set_latency(Op::CreateMachine, Duration::from_millis(100));
    let store = MemoryState::new();
    let changes = (0..30).map(|i| create(machine("wide", i), &[])).collect();
    let plan = plan_from(&State::new(), changes, vec![]);
    let options = ApplyOptions { parallelism: 4, ..options() };
    let (outcome, _) = run(&plan, &world, &store, &options).await;
    assert!(outcome.is_success());
    assert_eq!(world.max_in_flight(), 4);
    assert_eq!(world.machines(NET).len(), 30);
}

#[tokio::test(start_paused = true)]
async fn a_dependency_that_failed_outside_waits_for_fails_the_step_clearly() {
    // The plan forgot that the container waits for its machine: the step fails, it does not guess.
    let world = TestWorld::new();
    let store = MemoryState::new();
    world.fail(Op::CreateMachine, None, 1, ErrorKind::Invalid);
    let changes = vec![
        create(machine("a", 0), &[]),
        create(container("genesis", 0, Role::Genesis, Address::machine("b", 0)), &[]),
    ];
    let plan = plan_from(&State::new(), changes, vec![]);
    let (outcome, _) = run(&plan, &world, &store, &options()).await;
    assert_eq!(outcome.failed.len(), 2);
    let (_, error) = outcome.failed.iter().find(|(a, _)| a.kind() == "container").unwrap();
    assert!(error.message.contains("machine.b[0] does not exist"), "{error}");
    assert_eq!(world.calls(Op::CreateContainer), 0);
}

// ---- retries ----

#[tokio::test(start_paused = true)]
async fn transient_errors_are_retried_until_success() {
    let world = TestWorld::new();
    world.fail(Op::CreateMachine, None, 2, ErrorKind::Transient);
    let store = MemoryState::new();
    let plan = plan_from(&State::new(), vec![create(machine("a", 0), &[])], vec![]);
    let (outcome, rec) = run(&plan, &world, &store, &options()).await;
    assert!(outcome.is_success());
    assert_eq!(world.calls(Op::CreateMachine), 3);
    let attempts: Vec<u32> = rec
        .events()
        .iter()
        .filter_map(|e| match e {
            ApplyEvent::Retrying { attempt, .. } => Some(*attempt),
            _ => None,
        })
        .collect();
    assert_eq!(attempts, [1, 2]);
}

#[tokio::test(start_paused = true)]
async fn invalid_errors_are_not_retried() {
    let world = TestWorld::new();
    world.fail(Op::CreateMachine, None, 1, ErrorKind::Invalid);
    let store = MemoryState::new();
    let plan = plan_from(&State::new(), vec![create(machine("a", 0), &[])], vec![]);
    let (outcome, rec) = run(&plan, &world, &store, &options()).await;
    assert_eq!(world.calls(Op::CreateMachine), 1);
    assert_eq!(outcome.failed[0].1.kind, ErrorKind::Invalid);
    assert!(!rec.events().iter().any(|e| matches!(e, ApplyEvent::Retrying { .. })));
}

#[tokio::test(start_paused = true)]
async fn retries_stop_after_max_attempts() {
    let world = TestWorld::new();
    world.fail(Op::CreateMachine, None, 10, ErrorKind::Transient);
    let store = MemoryState::new();
    let plan = plan_from(&State::new(), vec![create(machine("a", 0), &[])], vec![]);
    let options =
        ApplyOptions { retry: RetryPolicy { max_attempts: 3, ..RetryPolicy::default() }, ..options() };
    let (outcome, _) = run(&plan, &world, &store, &options).await;
    assert_eq!(world.calls(Op::CreateMachine), 3);
    assert!(outcome.failed[0].1.message.contains("gave up after 3 attempts"), "{}", outcome.failed[0].1);
}

#[tokio::test(start_paused = true)]
async fn throttled_calls_wait_for_retry_after_and_are_counted() {
    let world = TestWorld::new();
    world.throttle(Op::CreateMachine, None, 2, Some(Duration::from_secs(7)));
    let store = MemoryState::new();
    let plan = plan_from(&State::new(), vec![create(machine("a", 0), &[])], vec![]);
    let started = tokio::time::Instant::now();
    let (outcome, rec) = run(&plan, &world, &store, &options()).await;
    assert!(outcome.is_success());
    assert!(started.elapsed() >= Duration::from_secs(14), "{:?}", started.elapsed());
    assert_eq!(outcome.throttled, BTreeMap::from([("test".to_string(), 2)]));
    let delays: Vec<Duration> = rec
        .events()
        .iter()
        .filter_map(|e| match e {
            ApplyEvent::Retrying { delay, .. } => Some(*delay),
            _ => None,
        })
        .collect();
    assert!(delays.iter().all(|d| *d >= Duration::from_secs(7)), "{delays:?}");
}

/// A machine provider that retries its own requests (as the AWS and DigitalOcean providers do): the
/// test world's, saying so.
struct RetriesItself(TestWorld);

#[async_trait::async_trait]
impl crate::provider::MachineProvider for RetriesItself {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Aws
    }
    fn retries_requests(&self) -> bool {
        true
    }
    async fn inventory(&self, n: &str, r: &str) -> Result<crate::provider::Inventory, ProviderError> {
        self.0.inventory(n, r).await
    }
    async fn create_machine(
        &self,
        spec: &MachineSpec,
        ctx: &crate::provider::CreateContext,
    ) -> Result<crate::resource::Machine, ProviderError> {
        self.0.create_machine(spec, ctx).await
    }
    async fn update_machine(
        &self,
        current: &crate::resource::Machine,
        spec: &MachineSpec,
    ) -> Result<crate::resource::Machine, ProviderError> {
        self.0.update_machine(current, spec).await
    }
    async fn delete_machine(&self, current: &crate::resource::Machine) -> Result<(), ProviderError> {
        self.0.delete_machine(current).await
    }
    async fn create_firewall(&self, spec: &FirewallSpec) -> Result<crate::resource::Firewall, ProviderError> {
        self.0.create_firewall(spec).await
    }
    async fn update_firewall(
        &self,
        current: &crate::resource::Firewall,
        spec: &FirewallSpec,
    ) -> Result<crate::resource::Firewall, ProviderError> {
        self.0.update_firewall(current, spec).await
    }
    async fn delete_firewall(&self, current: &crate::resource::Firewall) -> Result<(), ProviderError> {
        self.0.delete_firewall(current).await
    }
    async fn create_stable_ip(
        &self,
        spec: &StableIpSpec,
        machine: &crate::resource::Machine,
    ) -> Result<crate::resource::StableIp, ProviderError> {
        self.0.create_stable_ip(spec, machine).await
    }
    async fn attach_stable_ip(
        &self,
        current: &crate::resource::StableIp,
        machine: &crate::resource::Machine,
    ) -> Result<crate::resource::StableIp, ProviderError> {
        self.0.attach_stable_ip(current, machine).await
    }
    async fn delete_stable_ip(&self, current: &crate::resource::StableIp) -> Result<(), ProviderError> {
        self.0.delete_stable_ip(current).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_permanently_failing_provider_gives_up_after_the_documented_attempts_and_waits() {
    let world = TestWorld::new();
    world.fail(Op::CreateMachine, None, 1000, ErrorKind::Transient);
    let store = MemoryState::new();
    let plan = plan_from(&State::new(), vec![create(machine("a", 0), &[])], vec![]);
    let started = tokio::time::Instant::now();
    let (outcome, _) = run(&plan, &world, &store, &options()).await;
    let policy = RetryPolicy::default();
    assert_eq!(
        world.calls(Op::CreateMachine),
        u64::from(policy.max_attempts),
        "exactly the policy's attempts"
    );
    assert!(started.elapsed() <= policy.worst_case_waits(), "{:?}", started.elapsed());
    assert!(outcome.failed[0].1.message.contains("gave up after 5 attempts"), "{}", outcome.failed[0].1);
}

#[tokio::test(start_paused = true)]
async fn a_provider_that_retries_itself_is_called_once_per_step_not_retried_again() {
    let world = TestWorld::new();
    world.fail(Op::CreateMachine, None, 1000, ErrorKind::Transient);
    let store = MemoryState::new();
    let providers = crate::provider::Providers::new()
        .with_engines(std::sync::Arc::new(world.clone()))
        .with_machines(std::sync::Arc::new(RetriesItself(world.clone())));
    let plan = plan_from(&State::new(), vec![create(machine("a", 0), &[])], vec![]);
    let outcome =
        in_time(apply(&plan, &providers, &store, &options(), &|_: &ApplyEvent| {}, Interrupt::new()))
            .await
            .unwrap();
    assert_eq!(world.calls(Op::CreateMachine), 1, "one retry layer: the provider's");
    assert_eq!(outcome.failed[0].1.kind, ErrorKind::Transient);
}

#[tokio::test(start_paused = true)]
async fn a_step_past_its_deadline_fails_saying_attempts_and_time() {
    let world = TestWorld::new();
    // A provider that hangs (or keeps asking to wait) for an hour.
    world.set_latency(Op::CreateMachine, Duration::from_secs(3600));
    let store = MemoryState::new();
    let plan = plan_from(&State::new(), vec![create(machine("a", 0), &[])], vec![]);
    let options = ApplyOptions { step_deadline: Duration::from_secs(90), ..options() };
    let started = tokio::time::Instant::now();
    let (outcome, _) = run(&plan, &world, &store, &options).await;
    assert!(started.elapsed() < Duration::from_secs(91), "{:?}", started.elapsed());
    let error = &outcome.failed[0].1;
    assert!(error.message.contains("gave up after 1 attempt(s) in 90.0s"), "{error}");
    assert!(error.message.contains("step deadline (90.0s)"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn a_throttled_step_keeps_the_lease_renewed_until_its_deadline() {
    let (world, store, _, mut lock) = slow_world_with_short_lease().await;
    world.set_latency(Op::CreateMachine, Duration::ZERO);
    world.throttle(Op::CreateMachine, None, 1000, Some(Duration::from_secs(100)));
    let options = ApplyOptions {
        retry: RetryPolicy { max_attempts: 1000, ..RetryPolicy::default() },
        // Attempts at 0, 100, ..., 500 s (plus jitter); the seventh would come after the deadline.
        step_deadline: Duration::from_secs(550),
        lock: crate::state::LockOptions { lease: Duration::from_secs(3), ..Default::default() },
        ..options()
    };
    let first = lock.info().lease_expires_at;
    let plan = plan_from(&State::new(), vec![create(machine("a", 0), &[])], vec![]);
    std::thread::sleep(Duration::from_millis(5));
    let outcome = apply_holding(&plan, &world, &store, lock.as_mut(), &options).await;
    let error = &outcome.failed[0].1;
    assert!(error.message.contains("gave up after 6 attempt(s)"), "{error}");
    assert!(lock.info().lease_expires_at > first, "renewed while the step waited");
    assert_eq!(store.holder().as_ref(), Some(lock.info()));
}

// ---- health gates ----

#[tokio::test(start_paused = true)]
async fn the_master_starts_only_once_genesis_is_healthy() {
    let world = TestWorld::new();
    world.set_healthy_after(Duration::from_secs(5));
    let store = MemoryState::new();
    let plan = plan_from(&State::new(), network_changes(), vec![]);
    let (outcome, rec) = run(&plan, &world, &store, &options()).await;
    assert!(outcome.is_success());
    let genesis_created = rec.time_of(
        |e| matches!(e, ApplyEvent::Started { address, .. } if *address == Address::container("genesis", 0)),
    );
    let master_started = rec.time_of(
        |e| matches!(e, ApplyEvent::Started { address, .. } if *address == Address::container("master", 0)),
    );
    assert!(master_started - genesis_created >= Duration::from_secs(5));
    // Polling backs off: far fewer inspections than a 100 ms sleep loop would make.
    assert!(world.calls_for(Op::InspectContainer, &Address::container("genesis", 0)) <= 8);
}

#[tokio::test(start_paused = true)]
async fn a_health_gate_times_out_saying_what_it_waited_for() {
    let world = TestWorld::new();
    world.never_healthy(Address::container("genesis", 0));
    let store = MemoryState::new();
    let plan = plan_from(&State::new(), network_changes(), vec![]);
    let started = tokio::time::Instant::now();
    let (outcome, rec) = run(&plan, &world, &store, &options()).await;
    assert!(started.elapsed() >= Duration::from_secs(30));
    let (address, error) = &outcome.failed[0];
    assert_eq!(address, &Address::container("genesis", 0));
    assert!(error.message.contains("not healthy after 30s waiting for genesis-1 healthy"), "{error}");
    assert!(error.message.contains("health unhealthy"), "{error}");
    assert_eq!(outcome.skipped.len(), 3, "master and relays");
    assert!(
        rec.events()
            .iter()
            .any(|e| matches!(e, ApplyEvent::Waiting { what, .. } if what.contains("unhealthy")))
    );
}

// ---- refusals before anything runs ----

#[tokio::test]
async fn a_stale_plan_is_refused() {
    let world = TestWorld::new();
    let store = MemoryState::new();
    let mut state = State::new();
    store.save(&mut state).await.unwrap();
    let plan = plan_from(&state, vec![create(machine("a", 0), &[])], vec![]);
    store.save(&mut state).await.unwrap(); // someone applied meanwhile
    let err = refused(&plan, &world.providers(), &store, &options()).await;
    assert!(matches!(err, ExecutorError::StalePlan { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("serial 1 of lineage") && text.contains("now serial 2") && text.contains("plan again"),
        "{text}"
    );
    assert!(world.call_counts().is_empty());
    assert_eq!(store.holder(), None, "the lock is released");
}

#[tokio::test]
async fn a_plan_from_before_the_first_apply_is_stale_after_it() {
    let world = TestWorld::new();
    let store = MemoryState::new();
    let plan = plan_from(&State::new(), vec![create(machine("a", 0), &[])], vec![]);
    run(&plan, &world, &store, &options()).await;
    let err = refused(&plan, &world.providers(), &store, &options()).await;
    assert!(err.to_string().contains("made from no state"), "{err}");
    assert_eq!(world.machines(NET).len(), 1);
}

#[tokio::test]
async fn a_cycle_is_refused_before_anything_runs() {
    let world = TestWorld::new();
    let store = MemoryState::new();
    let changes = vec![
        create(machine("a", 0), &[Address::machine("b", 0)]),
        create(machine("b", 0), &[Address::machine("a", 0)]),
    ];
    let plan = plan_from(&State::new(), changes, vec![]);
    let err = refused(&plan, &world.providers(), &store, &options()).await;
    assert!(err.to_string().contains("machine.a[0] → machine.b[0] → machine.a[0]"), "{err}");
    assert!(world.call_counts().is_empty());
    assert_eq!(store.writes(), 0);
}

#[tokio::test]
async fn a_held_lock_fails_the_apply_at_once_naming_the_holder() {
    let world = TestWorld::new();
    let store = MemoryState::new();
    let mut holder = LockInfo::for_this_process("apply", Duration::from_secs(600));
    holder.owner = "alice".into();
    holder.host = "ci-7".into();
    store.set_holder(Some(holder));
    let plan = plan_from(&State::new(), vec![create(machine("a", 0), &[])], vec![]);
    let err = refused(&plan, &world.providers(), &store, &options()).await;
    let ExecutorError::State(e) = &err else { panic!("{err}") };
    assert!(matches!(e.kind(), StateErrorKind::Locked(_)));
    assert!(err.to_string().contains("alice") && err.to_string().contains("ci-7"), "{err}");
    assert!(world.call_counts().is_empty());
}

#[tokio::test]
async fn the_pinned_chain_cannot_be_silently_switched() {
    let world = TestWorld::new();
    let mut state = State::new();
    state.chain = Some(ChainPin::new(b"another genesis"));
    let store = MemoryState::new();
    store.save(&mut state).await.unwrap();
    let plan = plan_from(&state, vec![create(machine("a", 0), &[])], vec![]);
    let err = refused(&plan, &world.providers(), &store, &options()).await;
    assert!(matches!(err, ExecutorError::ChainMismatch { .. }), "{err}");
    assert!(world.call_counts().is_empty());
}

#[tokio::test]
async fn creating_genesis_needs_its_bytes_to_pin_the_chain() {
    let world = TestWorld::new();
    let store = MemoryState::new();
    let plan = plan_from(&State::new(), network_changes(), vec![]);
    let without = ApplyOptions::default();
    let err = refused(&plan, &world.providers(), &store, &without).await;
    assert!(
        matches!(err, ExecutorError::InvalidPlan(_)) && err.to_string().contains("genesis bytes"),
        "{err}"
    );
    let wrong = ApplyOptions { genesis: Some(b"not it".to_vec()), ..ApplyOptions::default() };
    let err = refused(&plan, &world.providers(), &store, &wrong).await;
    assert!(err.to_string().contains("hash to chain"), "{err}");
    assert!(world.call_counts().is_empty());
}

#[tokio::test]
async fn a_missing_provider_is_named_before_anything_runs() {
    let world = TestWorld::new();
    let store = MemoryState::new();
    let plan = plan_from(&State::new(), network_changes(), vec![]);
    let only_machines = crate::provider::Providers::new()
        .with_machines_as(ProviderKind::Aws, std::sync::Arc::new(world.clone()));
    let err = refused(&plan, &only_machines, &store, &options()).await;
    assert!(err.to_string().contains("container engine connector"), "{err}");
    assert!(world.call_counts().is_empty());
}

// ---- crashes and interrupts ----

#[tokio::test(start_paused = true)]
async fn a_crash_between_provider_create_and_state_save_then_reapply_makes_no_duplicate() {
    let world = TestWorld::new();
    let store = MemoryState::new();
    let target = Address::machine("a", 0);
    world.crash_after(Op::CreateMachine, target.clone());
    let plan =
        plan_from(&State::new(), vec![create(machine("a", 0), &[]), create(machine("b", 0), &[])], vec![]);

    // kill -9: the apply future is dropped while the provider has made the machine.
    let providers = world.providers();
    let noop = |_: &ApplyEvent| {};
    let killed = tokio::time::timeout(
        Duration::from_secs(60),
        apply(&plan, &providers, &store, &options(), &noop, Interrupt::new()),
    )
    .await;
    assert!(killed.is_err(), "the crashed apply never returns");
    assert_eq!(world.machines_at(&target).len(), 1, "the provider did create it");
    let after_crash = store.current();
    assert!(!after_crash.resources.contains_key(&target), "the state never heard back");
    let intent = after_crash.intents.get(&target).expect("the intent was saved before the create");
    assert_eq!(intent.idempotency_key.as_deref(), Some("testnet-a-0-g1"));
    store.force_unlock().await.unwrap(); // a killed process leaves its lock behind

    // Re-plan from the state after the crash; the create reuses the intent's key, as the planner does.
    let remaining = vec![create(machine("a", 0), &[])];
    let replan = plan_from(&after_crash, remaining, vec![]);
    let (outcome, _) = run(&replan, &world, &store, &options()).await;
    assert!(outcome.is_success(), "{outcome:?}");
    assert_eq!(world.machines_at(&target).len(), 1, "no duplicate");
    assert_eq!(world.machines(NET).len(), 2);
    assert!(outcome.state.intents.is_empty());
    assert_eq!(outcome.state.resources[&target].id(), world.machines_at(&target)[0].id);
}

#[tokio::test(start_paused = true)]
async fn first_interrupt_stops_scheduling_and_lets_in_flight_steps_finish() {
    let world = TestWorld::new();
    world.set_latency(Op::CreateMachine, Duration::from_secs(1));
    let store = MemoryState::new();
    let changes = (0..6).map(|i| create(machine("n", i), &[])).collect();
    let plan = plan_from(&State::new(), changes, vec![]);
    let interrupt = Interrupt::new();
    let signal = interrupt.clone();
    let events = Mutex::new(Vec::new());
    let reporter = |e: &ApplyEvent| {
        if matches!(e, ApplyEvent::Started { .. })
            && !events.lock().unwrap().iter().any(|x: &ApplyEvent| matches!(x, ApplyEvent::Started { .. }))
        {
            assert_eq!(signal.escalate(), InterruptLevel::StopScheduling); // "Ctrl-C" once
        }
        events.lock().unwrap().push(e.clone());
    };
    let options = ApplyOptions { parallelism: 2, ..options() };
    let outcome =
        in_time(apply(&plan, &world.providers(), &store, &options, &reporter, interrupt)).await.unwrap();
    assert!(outcome.interrupted);
    assert_eq!(outcome.succeeded, [Address::machine("n", 0), Address::machine("n", 1)]);
    assert_eq!(outcome.not_started.len(), 4);
    assert!(outcome.aborted.is_empty() && outcome.failed.is_empty());
    assert_eq!(world.machines(NET).len(), 2);
    assert_eq!(store.current().resources.len(), 2, "finished steps are saved");
    assert!(store.current().intents.is_empty());
    assert!(events.lock().unwrap().iter().any(|e| matches!(e, ApplyEvent::Stopping { aborting: false, .. })));
}

#[tokio::test(start_paused = true)]
async fn second_interrupt_abandons_in_flight_steps_with_their_intents_saved() {
    let world = TestWorld::new();
    world.set_latency(Op::CreateMachine, Duration::from_secs(10));
    let store = MemoryState::new();
    let changes = (0..4).map(|i| create(machine("n", i), &[])).collect();
    let plan = plan_from(&State::new(), changes, vec![]);
    let interrupt = Interrupt::new();
    let signal = interrupt.clone();
    let ctrl_c = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        signal.escalate();
        tokio::time::sleep(Duration::from_secs(1)).await;
        signal.escalate()
    });
    let options = ApplyOptions { parallelism: 2, ..options() };
    let outcome =
        in_time(apply(&plan, &world.providers(), &store, &options, &|_: &ApplyEvent| {}, interrupt))
            .await
            .unwrap();
    assert_eq!(ctrl_c.await.unwrap(), InterruptLevel::Abort);
    assert!(outcome.interrupted);
    assert_eq!(outcome.aborted, [Address::machine("n", 0), Address::machine("n", 1)]);
    assert_eq!(outcome.not_started, [Address::machine("n", 2), Address::machine("n", 3)]);
    let saved = store.current();
    assert!(
        saved.intents.contains_key(&Address::machine("n", 0))
            && saved.intents.contains_key(&Address::machine("n", 1))
    );
    assert!(saved.resources.is_empty());
    assert_eq!(store.holder(), None, "the lock is released after an abort");
}

// ---- state backend trouble ----

#[tokio::test(start_paused = true)]
async fn a_failed_intent_save_starts_nothing_and_is_reported() {
    let world = TestWorld::new();
    let store = MemoryState::new();
    store.fail_writes(1);
    let plan = plan_from(
        &State::new(),
        vec![create(machine("a", 0), &[]), create(machine("b", 0), &[Address::machine("a", 0)])],
        vec![],
    );
    let (outcome, _) = run(&plan, &world, &store, &options()).await;
    assert!(world.call_counts().is_empty(), "no create without its intent on record");
    assert!(outcome.state_error.is_some());
    assert_eq!(outcome.failed.len(), 1);
    assert!(outcome.failed[0].1.message.contains("not started"), "{}", outcome.failed[0].1);
    assert_eq!(outcome.skipped, [(Address::machine("b", 0), Address::machine("a", 0))]);
    assert!(!outcome.is_success());
}

#[tokio::test(start_paused = true)]
async fn the_lock_lease_is_renewed_while_applying() {
    let (world, store, options, mut lock) = slow_world_with_short_lease().await;
    let first = lock.info().lease_expires_at;
    let plan = plan_from(&State::new(), vec![create(machine("a", 0), &[])], vec![]);
    // Wall-clock lease times move in real milliseconds; make sure at least one passes.
    std::thread::sleep(Duration::from_millis(5));
    let outcome = apply_holding(&plan, &world, &store, lock.as_mut(), &options).await;
    assert!(outcome.is_success());
    assert!(lock.info().lease_expires_at > first, "renewed during the 30 s step");
    assert_eq!(store.holder().as_ref(), Some(lock.info()));
}

#[tokio::test(start_paused = true)]
async fn a_lost_lock_stops_all_state_writes() {
    let (world, store, options, mut lock) = slow_world_with_short_lease().await;
    let a0 = Address::machine("a", 0);
    let changes = vec![
        create(machine("a", 0), &[]),
        create(machine("a", 1), std::slice::from_ref(&a0)),
        create(machine("a", 2), std::slice::from_ref(&a0)),
    ];
    let plan = plan_from(&State::new(), changes, vec![]);
    let thief = store.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        thief.force_unlock().await.unwrap();
        thief.set_holder(Some(LockInfo::for_this_process("apply", Duration::from_secs(600))));
    });
    let outcome = apply_holding(&plan, &world, &store, lock.as_mut(), &options).await;
    let err = outcome.state_error.as_ref().expect("the lost lock is reported");
    assert!(matches!(err.kind(), StateErrorKind::LockLost(_)), "{err}");
    assert_eq!(outcome.not_started.len(), 2, "nothing new starts without the lock");
    assert!(store.current().resources.is_empty(), "nothing is written without the lock");
    assert_eq!(outcome.succeeded, [Address::machine("a", 0)], "the step in flight still completes");
}

#[tokio::test]
async fn a_lock_lost_before_applying_is_refused_before_anything_runs() {
    let world = TestWorld::new();
    let store = MemoryState::new();
    let mut lock = store.lock("apply", &crate::state::LockOptions::default()).await.unwrap();
    // While our user sat at the confirmation prompt, the lease ran out and someone took over.
    store.set_holder(Some(LockInfo::for_this_process("apply", Duration::from_secs(600))));
    let plan = plan_from(&State::new(), vec![create(machine("a", 0), &[])], vec![]);
    let noop = |_: &ApplyEvent| {};
    let err =
        apply_locked(&plan, &world.providers(), &store, lock.as_mut(), &options(), &noop, Interrupt::new())
            .await
            .expect_err("a lost lock must be refused");
    let ExecutorError::State(e) = &err else { panic!("{err}") };
    assert!(matches!(e.kind(), StateErrorKind::LockLost(Some(_))), "{err}");
    assert!(world.call_counts().is_empty());
    assert_eq!(store.writes(), 0);
}

#[test]
fn the_apply_future_can_run_on_any_thread() {
    fn assert_send<T: Send>(_: &T) {}
    let (world, store) = (TestWorld::new(), MemoryState::new());
    let providers = world.providers();
    let plan = plan_from(&State::new(), vec![], vec![]);
    let options = options();
    let reporter = |_: &ApplyEvent| {};
    let fut = apply(&plan, &providers, &store, &options, &reporter, Interrupt::new());
    assert_send(&fut);
}
