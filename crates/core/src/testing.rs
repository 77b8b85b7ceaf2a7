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
//!
//! - [`TestWorld::fail_randomly`]: from then on, a seeded share of the calls that change something
//!   fails — throttled, a transient error before acting, or a response lost after acting.
//!
//! Latency and health delays use tokio's clock, so tests can run with paused time.
//!
//! Only for tests (feature `testing`); it is not a provider for users.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::address::Address;
use crate::network::ProviderKind;
use crate::provider::{
    ContainerContext, ContainerEngine, CreateContext, EngineConnector, ErrorKind, Inventory, MachineProvider,
    ProviderError, Providers,
};
use crate::resource::{
    Container, ContainerSpec, ContainerState, Firewall, FirewallSpec, Health, Machine, MachineSpec,
    MachineStatus, StableIp, StableIpSpec,
};

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

/// When an armed fault strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timing {
    /// Before the call does anything.
    Before,
    /// After the call took effect: the response is lost.
    After,
    /// After the call took effect: the call never returns.
    Hang,
}

#[derive(Debug, Clone)]
struct Fault {
    op: Op,
    address: Option<Address>,
    remaining: u32,
    kind: ErrorKind,
    timing: Timing,
}

#[derive(Debug, Clone)]
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
    /// Seeded random faults: (PRNG state, probability per call).
    random: Option<(u64, f64)>,
    healthy_after: Duration,
    never_healthy: BTreeSet<Address>,
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

    /// Consumes the first armed fault matching the call, if any; else rolls the random faults.
    fn take_fault(&mut self, op: Op, address: Option<&Address>, timing: Timing) -> Option<ErrorKind> {
        let armed = self.take_armed(op, address, timing);
        armed.or_else(|| self.roll(op, timing))
    }

    /// A random fault for a call that changes something (listings stand for provider clients that
    /// retry on their own, and are spared).
    fn roll(&mut self, op: Op, timing: Timing) -> Option<ErrorKind> {
        let (state, rate) = self.random.as_mut()?;
        if matches!(op, Op::Inventory | Op::ListContainers | Op::InspectContainer | Op::EngineFor)
            || timing == Timing::Hang
        {
            return None;
        }
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut x = *state;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        // Half the rate before acting, half after (a lost response), so a call fails at `rate`.
        let hit = ((x >> 11) as f64 / (1u64 << 53) as f64) < *rate / 2.0;
        hit.then(|| match (timing, x % 3) {
            (Timing::Before, 0) => ErrorKind::Throttled { retry_after: Some(Duration::from_millis(5)) },
            _ => ErrorKind::Transient,
        })
    }

    fn take_armed(&mut self, op: Op, address: Option<&Address>, timing: Timing) -> Option<ErrorKind> {
        let i = self.faults.iter().position(|f| {
            f.op == op
                && f.timing == timing
                && f.remaining > 0
                && (f.address.is_none() || f.address.as_ref() == address)
        })?;
        let fault = &mut self.faults[i];
        fault.remaining -= 1;
        let kind = fault.kind.clone();
        if fault.remaining == 0 {
            self.faults.remove(i);
        }
        Some(kind)
    }

    fn health_of(&self, r: &Running, healthy_after: Duration) -> Health {
        if r.created.elapsed() < healthy_after {
            Health::Starting
        } else if self.never_healthy.contains(&r.container.address) {
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

    /// The container at `address` never becomes healthy (it reports `Unhealthy` once started).
    pub fn never_healthy(&self, address: Address) {
        self.lock().never_healthy.insert(address);
    }

    fn arm(&self, op: Op, address: Option<Address>, times: u32, kind: ErrorKind, timing: Timing) {
        self.lock().faults.push(Fault { op, address, remaining: times, kind, timing });
    }

    /// The next `times` calls of `op` (for `address`, or for any address when `None`) fail with `kind`
    /// before doing anything.
    pub fn fail(&self, op: Op, address: Option<Address>, times: u32, kind: ErrorKind) {
        self.arm(op, address, times, kind, Timing::Before);
    }

    /// The next `times` calls of `op` are throttled, with `retry_after` as the provider's hint.
    pub fn throttle(&self, op: Op, address: Option<Address>, times: u32, retry_after: Option<Duration>) {
        self.arm(op, address, times, ErrorKind::Throttled { retry_after }, Timing::Before);
    }

    /// The next `times` calls of `op` take effect, then fail with `kind` (a response lost on the way).
    pub fn lose_response(&self, op: Op, address: Option<Address>, times: u32, kind: ErrorKind) {
        self.arm(op, address, times, kind, Timing::After);
    }

    /// From now on, each call that changes something fails with probability `rate`, from a PRNG
    /// seeded with `seed` (the same seed and calls give the same faults): before acting (throttled,
    /// or a transient error such as a timeout or a reset connection) or after acting (the response
    /// is lost). Armed faults strike first.
    pub fn fail_randomly(&self, seed: u64, rate: f64) {
        self.lock().random = Some((seed, rate));
    }

    /// The next call of `op` for `address` takes effect and never returns.
    pub fn crash_after(&self, op: Op, address: Address) {
        self.arm(op, Some(address), 1, ErrorKind::Transient, Timing::Hang);
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
        let fault = self.lock().take_fault(op, address, Timing::Before);
        match fault {
            Some(kind) => Err(error(kind, format!("injected failure of {op:?}"))),
            None => Ok(guard),
        }
    }

    /// Strikes an `After` or `Hang` fault once the call took effect, else returns `value`.
    async fn leave<T>(&self, op: Op, address: Option<&Address>, value: T) -> Result<T, ProviderError> {
        let (hang, lost) = {
            let mut w = self.lock();
            (w.take_fault(op, address, Timing::Hang).is_some(), w.take_fault(op, address, Timing::After))
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

#[async_trait]
impl MachineProvider for TestWorld {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Local
    }

    async fn inventory(&self, network: &str, region: &str) -> Result<Inventory, ProviderError> {
        let _call = self.enter(Op::Inventory, None).await?;
        let inventory = {
            let w = self.lock();
            let mine = |n: &str, r: &str| n == network && r == region;
            Inventory {
                machines: w
                    .machines
                    .values()
                    .filter(|m| mine(&m.network, &m.region))
                    .map(|m| m.value.clone())
                    .collect(),
                firewalls: w
                    .firewalls
                    .values()
                    .filter(|f| mine(&f.network, &f.region))
                    .map(|f| f.value.clone())
                    .collect(),
                stable_ips: w
                    .stable_ips
                    .values()
                    .filter(|s| mine(&s.network, &s.region))
                    .map(|s| s.value.clone())
                    .collect(),
            }
        };
        self.leave(Op::Inventory, None, inventory).await
    }

    async fn create_machine(
        &self,
        spec: &MachineSpec,
        ctx: &CreateContext,
    ) -> Result<Machine, ProviderError> {
        let _call = self.enter(Op::CreateMachine, Some(&spec.address)).await?;
        let machine = {
            let mut w = self.lock();
            w.firewall_given.insert(spec.address.clone(), ctx.firewall.as_ref().map(|f| f.id.clone()));
            let existing =
                w.keys.get(&spec.idempotency_key).and_then(|id| w.machines.get(id)).map(|m| m.value.clone());
            match existing {
                Some(m) => m,
                None => {
                    let id = w.id("i");
                    let machine = Self::machine_from_spec(id.clone(), w.next_id, spec);
                    let owned = Owned {
                        network: spec.network.clone(),
                        region: machine.region.clone(),
                        value: machine.clone(),
                    };
                    w.machines.insert(id.clone(), owned);
                    w.keys.insert(spec.idempotency_key.clone(), id);
                    machine
                }
            }
        };
        self.leave(Op::CreateMachine, Some(&spec.address), machine).await
    }

    async fn update_machine(&self, current: &Machine, spec: &MachineSpec) -> Result<Machine, ProviderError> {
        let _call = self.enter(Op::UpdateMachine, Some(&spec.address)).await?;
        let updated = {
            let mut w = self.lock();
            let m = w.machines.get_mut(&current.id).ok_or_else(|| not_found(&current.id))?;
            m.value.tags = spec.tags.clone();
            m.value.size = spec.size.clone();
            m.value.clone()
        };
        self.leave(Op::UpdateMachine, Some(&spec.address), updated).await
    }

    async fn delete_machine(&self, current: &Machine) -> Result<(), ProviderError> {
        let _call = self.enter(Op::DeleteMachine, Some(&current.address)).await?;
        {
            let mut w = self.lock();
            w.machines.remove(&current.id);
            // Its containers die with it; a stable IP attached to it comes loose.
            w.containers.remove(&current.id);
            for ip in w.stable_ips.values_mut() {
                if ip.value.machine_id.as_deref() == Some(current.id.as_str()) {
                    ip.value.machine_id = None;
                }
            }
        }
        self.leave(Op::DeleteMachine, Some(&current.address), ()).await
    }

    async fn create_firewall(&self, spec: &FirewallSpec) -> Result<Firewall, ProviderError> {
        let _call = self.enter(Op::CreateFirewall, Some(&spec.address)).await?;
        let firewall = {
            let mut w = self.lock();
            let existing =
                w.firewalls.values().find(|f| f.network == spec.network && f.value.address == spec.address);
            match existing {
                Some(f) => f.value.clone(),
                None => {
                    let id = w.id("sg");
                    let f =
                        Firewall { id: id.clone(), address: spec.address.clone(), rules: spec.rules.clone() };
                    let owned = Owned {
                        network: spec.network.clone(),
                        region: spec.region.clone(),
                        value: f.clone(),
                    };
                    w.firewalls.insert(id, owned);
                    f
                }
            }
        };
        self.leave(Op::CreateFirewall, Some(&spec.address), firewall).await
    }

    async fn update_firewall(
        &self,
        current: &Firewall,
        spec: &FirewallSpec,
    ) -> Result<Firewall, ProviderError> {
        let _call = self.enter(Op::UpdateFirewall, Some(&spec.address)).await?;
        let updated = {
            let mut w = self.lock();
            let f = w.firewalls.get_mut(&current.id).ok_or_else(|| not_found(&current.id))?;
            f.value.rules = spec.rules.clone();
            f.value.clone()
        };
        self.leave(Op::UpdateFirewall, Some(&spec.address), updated).await
    }

    async fn delete_firewall(&self, current: &Firewall) -> Result<(), ProviderError> {
        let _call = self.enter(Op::DeleteFirewall, Some(&current.address)).await?;
        self.lock().firewalls.remove(&current.id);
        self.leave(Op::DeleteFirewall, Some(&current.address), ()).await
    }

    async fn create_stable_ip(
        &self,
        spec: &StableIpSpec,
        machine: &Machine,
    ) -> Result<StableIp, ProviderError> {
        let _call = self.enter(Op::CreateStableIp, Some(&spec.address)).await?;
        let ip = {
            let mut w = self.lock();
            if !w.machines.contains_key(&machine.id) {
                return Err(not_found(&machine.id));
            }
            let existing = w
                .stable_ips
                .values_mut()
                .find(|s| s.network == spec.network && s.value.address == spec.address);
            match existing {
                Some(s) => {
                    s.value.machine_id = Some(machine.id.clone());
                    s.value.clone()
                }
                None => {
                    let id = w.id("eip");
                    let ip = StableIp {
                        ip: format!("198.51.100.{}", w.next_id % 250 + 1),
                        id: id.clone(),
                        address: spec.address.clone(),
                        machine_id: Some(machine.id.clone()),
                    };
                    let owned = Owned {
                        network: spec.network.clone(),
                        region: spec.region.clone(),
                        value: ip.clone(),
                    };
                    w.stable_ips.insert(id, owned);
                    ip
                }
            }
        };
        self.leave(Op::CreateStableIp, Some(&spec.address), ip).await
    }

    async fn attach_stable_ip(
        &self,
        current: &StableIp,
        machine: &Machine,
    ) -> Result<StableIp, ProviderError> {
        let _call = self.enter(Op::AttachStableIp, Some(&current.address)).await?;
        let ip = {
            let mut w = self.lock();
            if !w.machines.contains_key(&machine.id) {
                return Err(not_found(&machine.id));
            }
            let s = w.stable_ips.get_mut(&current.id).ok_or_else(|| not_found(&current.id))?;
            s.value.machine_id = Some(machine.id.clone());
            s.value.clone()
        };
        self.leave(Op::AttachStableIp, Some(&current.address), ip).await
    }

    async fn delete_stable_ip(&self, current: &StableIp) -> Result<(), ProviderError> {
        let _call = self.enter(Op::DeleteStableIp, Some(&current.address)).await?;
        self.lock().stable_ips.remove(&current.id);
        self.leave(Op::DeleteStableIp, Some(&current.address), ()).await
    }
}

/// The engine of one machine of the test world.
#[derive(Debug, Clone)]
pub struct TestEngine {
    world: TestWorld,
    machine_id: String,
}

#[async_trait]
impl EngineConnector for TestWorld {
    fn engine_key(&self, machine: &Machine) -> String {
        machine.id.clone()
    }

    async fn engine_for(&self, machine: &Machine) -> Result<Arc<dyn ContainerEngine>, ProviderError> {
        let _call = self.enter(Op::EngineFor, Some(&machine.address)).await?;
        if !self.lock().machines.contains_key(&machine.id) {
            return Err(error(ErrorKind::Transient, format!("cannot reach the engine of {}", machine.id)));
        }
        let engine: Arc<dyn ContainerEngine> =
            Arc::new(TestEngine { world: self.clone(), machine_id: machine.id.clone() });
        self.leave(Op::EngineFor, Some(&machine.address), engine).await
    }
}

#[async_trait]
impl ContainerEngine for TestEngine {
    async fn list_containers(&self, network: &str) -> Result<Vec<Container>, ProviderError> {
        let _call = self.world.enter(Op::ListContainers, None).await?;
        let list = {
            let w = self.world.lock();
            let healthy_after = w.healthy_after;
            w.containers
                .get(&self.machine_id)
                .into_iter()
                .flat_map(|on| on.values())
                .filter(|r| r.network == network)
                .map(|r| Container { health: w.health_of(r, healthy_after), ..r.container.clone() })
                .collect()
        };
        self.world.leave(Op::ListContainers, None, list).await
    }

    async fn create_container(
        &self,
        spec: &ContainerSpec,
        ctx: &ContainerContext,
    ) -> Result<Container, ProviderError> {
        let _call = self.world.enter(Op::CreateContainer, Some(&spec.address)).await?;
        let container = {
            let mut w = self.world.lock();
            w.hosts_given.insert(spec.address.clone(), ctx.hosts.clone());
            if !w.machines.contains_key(&self.machine_id) {
                return Err(error(
                    ErrorKind::Transient,
                    format!("cannot reach the engine of {}", self.machine_id),
                ));
            }
            let id = w.id("c");
            let healthy_after = w.healthy_after;
            let mut container = Container {
                id: id.clone(),
                address: spec.address.clone(),
                spec: Some(spec.clone()),
                state: ContainerState::Running,
                health: Health::Starting,
                chain_id: spec.chain_id.clone(),
            };
            let running = Running {
                network: spec.network.clone(),
                container: container.clone(),
                created: Instant::now(),
            };
            container.health = w.health_of(&running, healthy_after);
            let on_machine = w.containers.entry(self.machine_id.clone()).or_default();
            // Names are unique per engine: a container of the same name left by a crash is replaced.
            on_machine.retain(|_, r| {
                !(r.network == spec.network && r.container.spec.as_ref().map(|s| &s.name) == Some(&spec.name))
            });
            on_machine.insert(id, running);
            container
        };
        self.world.leave(Op::CreateContainer, Some(&spec.address), container).await
    }

    async fn remove_container(&self, current: &Container) -> Result<(), ProviderError> {
        let _call = self.world.enter(Op::RemoveContainer, Some(&current.address)).await?;
        if let Some(on) = self.world.lock().containers.get_mut(&self.machine_id) {
            on.remove(&current.id);
        }
        self.world.leave(Op::RemoveContainer, Some(&current.address), ()).await
    }

    async fn inspect_container(&self, current: &Container) -> Result<Option<Container>, ProviderError> {
        let _call = self.world.enter(Op::InspectContainer, Some(&current.address)).await?;
        let found = {
            let w = self.world.lock();
            let healthy_after = w.healthy_after;
            w.containers
                .get(&self.machine_id)
                .and_then(|on| on.get(&current.id))
                .map(|r| Container { health: w.health_of(r, healthy_after), ..r.container.clone() })
        };
        self.world.leave(Op::InspectContainer, Some(&current.address), found).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::Region;

    fn spec(network: &str, cluster: &str, region: &str, key: &str) -> MachineSpec {
        MachineSpec {
            address: Address::machine(cluster, 0),
            network: network.into(),
            provider: ProviderKind::Aws,
            region: Region { slug: region.into(), city: None },
            size: "small".into(),
            image: None,
            tags: BTreeSet::new(),
            profile: None,
            bootstrap: 1,
            chain_id: None,
            generation: 0,
            idempotency_key: key.into(),
            firewall: None,
        }
    }

    #[tokio::test]
    async fn a_repeated_create_with_the_same_key_returns_the_same_machine() {
        let world = TestWorld::new();
        let ctx = CreateContext::default();
        let a = world.create_machine(&spec("n", "c", "r", "k1"), &ctx).await.unwrap();
        let b = world.create_machine(&spec("n", "c", "r", "k1"), &ctx).await.unwrap();
        assert_eq!(a, b);
        assert_eq!(a.id, "i-000001");
        assert_eq!(world.machines_at(&a.address).len(), 1);
        let c = world.create_machine(&spec("n", "c", "r", "k2"), &ctx).await.unwrap();
        assert_ne!(c.id, a.id, "a different key is a different create, as on EC2");
        assert_eq!(world.calls(Op::CreateMachine), 3);
        assert_eq!(world.calls_for(Op::CreateMachine, &a.address), 3);
    }

    #[tokio::test]
    async fn inventory_returns_only_one_network_in_one_region() {
        let world = TestWorld::new();
        let ctx = CreateContext::default();
        world.create_machine(&spec("n", "a", "r1", "1"), &ctx).await.unwrap();
        world.create_machine(&spec("n", "b", "r2", "2"), &ctx).await.unwrap();
        world.create_machine(&spec("other", "a", "r1", "3"), &ctx).await.unwrap();
        let inv = world.inventory("n", "r1").await.unwrap();
        assert_eq!(inv.machines.len(), 1);
        assert_eq!(inv.machines[0].address, Address::machine("a", 0));
        assert_eq!(world.calls(Op::Inventory), 1);
    }

    #[tokio::test]
    async fn armed_faults_strike_the_matching_calls_then_disarm() {
        let world = TestWorld::new();
        let ctx = CreateContext::default();
        world.fail(Op::CreateMachine, Some(Address::machine("b", 0)), 2, ErrorKind::Invalid);
        world.create_machine(&spec("n", "a", "r", "1"), &ctx).await.unwrap();
        for _ in 0..2 {
            let e = world.create_machine(&spec("n", "b", "r", "2"), &ctx).await.unwrap_err();
            assert_eq!(e.kind, ErrorKind::Invalid);
        }
        world.create_machine(&spec("n", "b", "r", "2"), &ctx).await.unwrap();
        assert!(world.machines("n").len() == 2);
    }

    #[tokio::test]
    async fn a_lost_response_still_creates_and_a_retry_finds_it() {
        let world = TestWorld::new();
        let ctx = CreateContext::default();
        world.lose_response(Op::CreateMachine, None, 1, ErrorKind::Transient);
        assert!(world.create_machine(&spec("n", "a", "r", "k"), &ctx).await.is_err());
        assert_eq!(world.machines("n").len(), 1);
        world.create_machine(&spec("n", "a", "r", "k"), &ctx).await.unwrap();
        assert_eq!(world.machines("n").len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_crash_point_acts_and_never_returns() {
        let world = TestWorld::new();
        world.crash_after(Op::CreateMachine, Address::machine("a", 0));
        let (s, ctx) = (spec("n", "a", "r", "k"), CreateContext::default());
        let call = world.create_machine(&s, &ctx);
        assert!(tokio::time::timeout(Duration::from_secs(3600), call).await.is_err());
        assert_eq!(world.machines("n").len(), 1);
        assert_eq!(world.max_in_flight(), 1);
        assert_eq!(world.lock().in_flight, 0, "a dropped call is no longer in flight");
    }

    #[tokio::test(start_paused = true)]
    async fn containers_turn_healthy_after_the_configured_delay() {
        let world = TestWorld::new();
        world.set_healthy_after(Duration::from_secs(5));
        let m = world.create_machine(&spec("n", "a", "r", "k"), &CreateContext::default()).await.unwrap();
        let engine = world.engine_for(&m).await.unwrap();
        let c = Container {
            id: "c-x".into(),
            address: Address::container("relay", 0),
            spec: None,
            state: ContainerState::Running,
            health: Health::Starting,
            chain_id: None,
        };
        world.insert_container("n", &m.id, c.clone());
        assert_eq!(engine.inspect_container(&c).await.unwrap().unwrap().health, Health::Starting);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(engine.inspect_container(&c).await.unwrap().unwrap().health, Health::Healthy);
        assert_eq!(engine.list_containers("n").await.unwrap().len(), 1);
        assert!(engine.list_containers("other").await.unwrap().is_empty());
        world.delete_machine(&m).await.unwrap();
        assert!(world.containers("n").is_empty(), "containers die with their machine");
        world.delete_machine(&m).await.unwrap();
    }
}
