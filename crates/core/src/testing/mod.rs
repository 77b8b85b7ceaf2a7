//! An in-memory world for the engine's tests: a machine provider, an engine connector and container
//! engines, with injectable latency, errors, throttling and crash points.
//!
//! It behaves like the real providers where the engine's guarantees depend on it: objects carry their
//! ownership (network and address) from creation and listings return only one network's objects;
//! machine creates honour idempotency keys the way EC2 honours `ClientToken` (a repeated create
//! returns the existing instance); firewalls and stable IPs are looked up by ownership before a
//! create, as on DigitalOcean; deletes of what is gone succeed. It counts every call, per operation
//! and per address, and the most calls ever in flight at once, so tests can pin "no duplicates",
//! "refresh is O(regions)" and "parallelism is bounded".
//!
//! Faults are armed per operation (and optionally per address) and consumed as calls hit them:
//! - [`TestWorld::fail`]: the next N calls fail before doing anything (any [`ErrorKind`]);
//! - [`TestWorld::throttle`]: the same with `Throttled { retry_after }`;
//! - [`TestWorld::lose_response`]: the call takes effect, then fails (a timeout after the provider
//!   accepted the request);
//! - [`TestWorld::crash_after`]: the call takes effect and never returns — the state of a `kill -9`
//!   between the provider's create and the state save, once the executor is aborted or dropped.
//! - [`TestWorld::fail_randomly`]: from then on, a seeded share of the calls that change something
//!   fails — throttled, a transient error before acting, or a response lost after acting.
//!
//! Latency and health delays use tokio's clock, so tests can run with paused time.
//!
//! [`TestWorld::persist_to`] logs every change to a file the instant it takes effect, so a test can
//! kill the process applying against the world (SIGKILL) and still know what the providers did
//! ([`TestWorld::changes_made`]) and continue against the same world ([`TestWorld::restore`]).
//!
//! Only for tests (feature `testing`); it is not a provider for users.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::address::Address;
use crate::network::ProviderKind;
use crate::provider::{ErrorKind, ProviderError, Providers};
use crate::resource::{Container, Firewall, Health, Machine, MachineSpec, MachineStatus, StableIp};

mod engine;
mod faults;
mod machines;
mod persist;

pub use engine::TestEngine;
use faults::{Fault, Strike};

/// The provider name in the test world's errors.
pub const PROVIDER: &str = "test";

/// An operation of the test world, for counting calls and arming faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    /// [`MachineProvider::inventory`].
    Inventory,
    /// [`MachineProvider::create_machine`].
    CreateMachine,
    /// [`MachineProvider::update_machine`].
    UpdateMachine,
    /// [`MachineProvider::delete_machine`].
    DeleteMachine,
    /// [`MachineProvider::create_firewall`].
    CreateFirewall,
    /// [`MachineProvider::update_firewall`].
    UpdateFirewall,
    /// [`MachineProvider::delete_firewall`].
    DeleteFirewall,
    /// [`MachineProvider::create_stable_ip`].
    CreateStableIp,
    /// [`MachineProvider::attach_stable_ip`].
    AttachStableIp,
    /// [`MachineProvider::delete_stable_ip`].
    DeleteStableIp,
    /// [`EngineConnector::engine_for`].
    EngineFor,
    /// [`ContainerEngine::list_containers`].
    ListContainers,
    /// [`ContainerEngine::create_container`].
    CreateContainer,
    /// [`ContainerEngine::remove_container`].
    RemoveContainer,
    /// [`ContainerEngine::inspect_container`].
    InspectContainer,
}

impl Op {
    /// Whether the call changes the world (listings and look-ups do not).
    pub fn changes_something(self) -> bool {
        !matches!(self, Op::Inventory | Op::ListContainers | Op::InspectContainer | Op::EngineFor)
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Owned<T> {
    network: String,
    region: String,
    value: T,
}

#[derive(Debug, Clone)]
struct Running {
    network: String,
    container: Container,
    created: Instant,
}

#[derive(Debug, Default)]
struct World {
    next_id: u64,
    machines: BTreeMap<String, Owned<Machine>>,
    keys: BTreeMap<String, String>,
    firewalls: BTreeMap<String, Owned<Firewall>>,
    stable_ips: BTreeMap<String, Owned<StableIp>>,
    /// Containers by the machine whose engine runs them, then by ID.
    containers: BTreeMap<String, BTreeMap<String, Running>>,
    calls: BTreeMap<Op, u64>,
    calls_by_address: BTreeMap<(Op, Address), u64>,
    in_flight: usize,
    max_in_flight: usize,
    latency: BTreeMap<Op, Duration>,
    faults: Vec<Fault>,
    /// Seeded random faults: (generator, probability per call).
    random: Option<(rand::rngs::StdRng, f64)>,
    healthy_after: Duration,
    /// Where every change is logged ([`TestWorld::persist_to`]).
    persist: Option<persist::Kept>,
    /// When set, a master's health check reports its relays (as the reference node's probe does):
    /// none until this long after it became healthy, then every running relay of its network.
    relays_repeer_after: Option<Duration>,
    never_healthy: BTreeSet<Address>,
    /// Containers whose env holds one of these key-value pairs never become healthy (a broken spec).
    never_healthy_env: BTreeSet<(String, String)>,
    /// The firewall ID each machine create was given, by address (last create wins).
    firewall_given: BTreeMap<Address, Option<String>>,
    /// The hosts map each container create was given, by address (last create wins).
    hosts_given: BTreeMap<Address, BTreeMap<String, String>>,
}

impl World {
    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}-{:06}", self.next_id)
    }

    fn health_of(&self, r: &Running, healthy_after: Duration) -> Health {
        if r.created.elapsed() < healthy_after {
            Health::Starting
        } else if self.never_healthy.contains(&r.container.address)
            || r.container
                .spec
                .as_ref()
                .is_some_and(|s| self.never_healthy_env.iter().any(|(k, v)| s.env.get(k) == Some(v)))
        {
            Health::Unhealthy
        } else {
            Health::Healthy
        }
    }
}

/// The in-memory world. Cheap to clone: clones share the world.
#[derive(Debug, Clone, Default)]
pub struct TestWorld {
    world: Arc<Mutex<World>>,
}

/// Decrements the in-flight count when a call ends, however it ends (including being dropped).
struct InFlight(Arc<Mutex<World>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        lock(&self.0).in_flight -= 1;
    }
}

fn lock(world: &Mutex<World>) -> MutexGuard<'_, World> {
    // Test data only; a panicking test elsewhere must not hide this world's contents.
    world.lock().unwrap_or_else(|p| p.into_inner())
}

fn error(kind: ErrorKind, message: impl Into<String>) -> ProviderError {
    ProviderError::new(kind, PROVIDER, message)
}

fn not_found(what: impl std::fmt::Display) -> ProviderError {
    error(ErrorKind::NotFound, format!("{what} does not exist"))
}

impl TestWorld {
    /// An empty world; containers are healthy as soon as they start.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, World> {
        lock(&self.world)
    }

    /// [`Providers`] with this world standing in for every machine provider kind and as the engine
    /// connector.
    pub fn providers(&self) -> Providers {
        let mut providers = Providers::new().with_engines(Arc::new(self.clone()));
        for kind in ProviderKind::ALL {
            providers = providers.with_machines_as(kind, Arc::new(self.clone()));
        }
        providers
    }

    // ---- configuration ----

    /// Every call of `op` takes `latency` (tokio time).
    pub fn set_latency(&self, op: Op, latency: Duration) {
        self.lock().latency.insert(op, latency);
    }

    /// Containers report `Starting` for `delay` after they start, then `Healthy`.
    pub fn set_healthy_after(&self, delay: Duration) {
        self.lock().healthy_after = delay;
    }

    /// Masters report their relays in their health check output, the relays peering again `delay`
    /// after the master became healthy (they reconnect with backoff).
    pub fn set_relays_repeer_after(&self, delay: Duration) {
        self.lock().relays_repeer_after = Some(delay);
    }

    /// The container at `address` never becomes healthy (it reports `Unhealthy` once started).
    pub fn never_healthy(&self, address: Address) {
        self.lock().never_healthy.insert(address);
    }

    /// Containers created with `key=value` in their environment never become healthy: a new spec
    /// that is broken, while containers of the previous spec stay fine.
    pub fn never_healthy_with_env(&self, key: &str, value: &str) {
        self.lock().never_healthy_env.insert((key.to_string(), value.to_string()));
    }

    // ---- observation ----

    /// How many times `op` was called.
    pub fn calls(&self, op: Op) -> u64 {
        self.lock().calls.get(&op).copied().unwrap_or(0)
    }

    /// How many times `op` was called for `address`.
    pub fn calls_for(&self, op: Op, address: &Address) -> u64 {
        self.lock().calls_by_address.get(&(op, address.clone())).copied().unwrap_or(0)
    }

    /// All calls so far, by operation.
    pub fn call_counts(&self) -> BTreeMap<Op, u64> {
        self.lock().calls.clone()
    }

    /// The most calls that were ever in flight at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.lock().max_in_flight
    }

    /// Forgets the call counts and the in-flight maximum.
    pub fn reset_counts(&self) {
        let mut w = self.lock();
        w.calls.clear();
        w.calls_by_address.clear();
        w.max_in_flight = w.in_flight;
    }

    /// The firewall ID the last create of the machine at `address` was given (`Some(None)`: none).
    pub fn firewall_given(&self, address: &Address) -> Option<Option<String>> {
        self.lock().firewall_given.get(address).cloned()
    }

    /// The hosts map the last create of the container at `address` was given.
    pub fn hosts_given(&self, address: &Address) -> Option<BTreeMap<String, String>> {
        self.lock().hosts_given.get(address).cloned()
    }

    /// The machines of `network`, by ID.
    pub fn machines(&self, network: &str) -> Vec<Machine> {
        self.lock().machines.values().filter(|m| m.network == network).map(|m| m.value.clone()).collect()
    }

    /// Every machine that carries `address` (more than one is a duplicate).
    pub fn machines_at(&self, address: &Address) -> Vec<Machine> {
        self.lock()
            .machines
            .values()
            .filter(|m| &m.value.address == address)
            .map(|m| m.value.clone())
            .collect()
    }

    /// The firewalls of `network`.
    pub fn firewalls(&self, network: &str) -> Vec<Firewall> {
        self.lock().firewalls.values().filter(|f| f.network == network).map(|f| f.value.clone()).collect()
    }

    /// The stable IPs of `network`.
    pub fn stable_ips(&self, network: &str) -> Vec<StableIp> {
        self.lock().stable_ips.values().filter(|s| s.network == network).map(|s| s.value.clone()).collect()
    }

    /// The containers of `network` on every engine.
    pub fn containers(&self, network: &str) -> Vec<Container> {
        let w = self.lock();
        let healthy_after = w.healthy_after;
        w.containers
            .values()
            .flat_map(|on_machine| on_machine.values())
            .filter(|r| r.network == network)
            .map(|r| Container { health: w.health_of(r, healthy_after), ..r.container.clone() })
            .collect()
    }

    /// Every container that carries `address` (more than one is a duplicate).
    pub fn containers_at(&self, address: &Address) -> Vec<Container> {
        let w = self.lock();
        w.containers
            .values()
            .flat_map(|on_machine| on_machine.values())
            .filter(|r| &r.container.address == address)
            .map(|r| r.container.clone())
            .collect()
    }

    /// The ID of the machine whose engine runs the container with `container_id`.
    pub fn host_of(&self, container_id: &str) -> Option<String> {
        let w = self.lock();
        w.containers.iter().find(|(_, on)| on.contains_key(container_id)).map(|(m, _)| m.clone())
    }

    // ---- seeding (objects that exist before a test, e.g. made by an earlier run or by hand) ----

    /// Puts a machine of `network` into the world as if created earlier.
    pub fn insert_machine(&self, network: &str, machine: Machine) {
        let owned = Owned { network: network.into(), region: machine.region.clone(), value: machine };
        self.lock().machines.insert(owned.value.id.clone(), owned);
    }

    /// Puts a container of `network` on the engine of machine `machine_id`.
    pub fn insert_container(&self, network: &str, machine_id: &str, container: Container) {
        let running = Running { network: network.into(), container, created: Instant::now() };
        self.lock()
            .containers
            .entry(machine_id.into())
            .or_default()
            .insert(running.container.id.clone(), running);
    }

    // ---- call plumbing ----

    /// Counts the call, waits its latency, and strikes a `Before` fault if one is armed.
    async fn enter(&self, op: Op, address: Option<&Address>) -> Result<InFlight, ProviderError> {
        let latency = {
            let mut w = self.lock();
            *w.calls.entry(op).or_default() += 1;
            if let Some(a) = address {
                *w.calls_by_address.entry((op, a.clone())).or_default() += 1;
            }
            w.in_flight += 1;
            w.max_in_flight = w.max_in_flight.max(w.in_flight);
            w.latency.get(&op).copied().unwrap_or_default()
        };
        let guard = InFlight(self.world.clone());
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let fault = self.lock().take_fault(op, address, Strike::Before);
        match fault {
            Some(kind) => Err(error(kind, format!("injected failure of {op:?}"))),
            None => Ok(guard),
        }
    }

    /// Strikes an `After` or `Hang` fault once the call took effect, else returns `value`.
    async fn leave<T>(&self, op: Op, address: Option<&Address>, value: T) -> Result<T, ProviderError> {
        let (hang, lost) = {
            let mut w = self.lock();
            if op.changes_something()
                && let Err(e) = w.persist(op, address)
            {
                return Err(error(ErrorKind::Transient, format!("the test world was not persisted: {e}")));
            }
            (w.take_fault(op, address, Strike::Hang).is_some(), w.take_fault(op, address, Strike::After))
        };
        if hang {
            // The provider acted; the caller never hears back (it is aborted or dropped meanwhile).
            std::future::pending::<()>().await;
        }
        match lost {
            Some(kind) => Err(error(kind, format!("injected lost response of {op:?}"))),
            None => Ok(value),
        }
    }

    fn machine_from_spec(id: String, n: u64, spec: &MachineSpec) -> Machine {
        Machine {
            id,
            address: spec.address.clone(),
            provider: spec.provider,
            region: spec.region.slug.clone(),
            size: spec.size.clone(),
            image: spec.image.clone().unwrap_or_else(|| "test-default-image".into()),
            tags: spec.tags.clone(),
            chain_id: spec.chain_id.clone(),
            generation: spec.generation,
            bootstrap: spec.bootstrap,
            status: MachineStatus::Running,
            // Documentation addresses (RFC 5737): never routable, never connected to.
            public_ip: Some(format!("203.0.113.{}", n % 250 + 1)),
            private_ip: None,
        }
    }
}

#[cfg(test)]
mod tests;
