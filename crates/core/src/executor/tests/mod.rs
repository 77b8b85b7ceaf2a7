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

mod backend;
mod crashes;
mod gates;
mod order;
mod refusals;
mod retries;

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
        seals: BTreeMap::new(),
    })
}

fn change(action: Action, before: Option<Actual>, after: Option<Desired>, waits_for: &[Address]) -> Change {
    let address =
        after.as_ref().map(|d| d.address().clone()).or(before.as_ref().map(|a| a.address().clone()));
    let gate = match &after {
        Some(Desired::Container(s)) if action != Action::Delete => {
            Some(Gate { waiting_for: format!("{} healthy", s.name), timeout_ms: 30_000, relays: None })
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
