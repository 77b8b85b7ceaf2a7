//! Apply at scale (issue 12): 1,000 nodes and 10,000 containers applied from nothing through the
//! in-memory test provider, every provider call taking 20 ms, at a parallelism of 50, with the state
//! in a real local state file.
//!
//! ```text
//! cargo bench -p peerfleet-core --features testing --bench apply
//! ```
//!
//! Run twice: saving through the journal (what `apply` does), and rewriting the whole file at every
//! save (what it did before). For each: the wall time; the bound latency and parallelism allow, from
//! the plan's dependency levels (a level's steps ÷ 50 × the calls each makes × 20 ms, but never less
//! than its slowest step), and the bound no schedule can beat (all calls ÷ 50, or the longest chain
//! of steps, whichever is longer); the ratio of wall to the level bound (goal ≤ 1.2×); and the time
//! spent inside the state backend's saves, as a share of the wall (goal ≤ 10 %).
//!
//! The markdown table goes to stdout (`scripts/bench` splices it into BENCHMARKS.md); progress goes
//! to stderr.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use peerfleet_core::actual::ActualState;
use peerfleet_core::address::Address;
use peerfleet_core::executor::{ApplyEvent, ApplyOptions, Interrupt, apply};
use peerfleet_core::network::Network;
use peerfleet_core::plan::{Plan, PlanOptions, Remembered, plan};
use peerfleet_core::state::{
    LocalStateFile, LockInfo, LockOptions, State, StateBackend, StateError, StateLock, Touched,
};
use peerfleet_core::testing::{Op, TestWorld};

mod support;
use support::network;

/// The allocator the `peerfleet` CLI uses (see its `main.rs`): whole-file saves serialise the state,
/// and this measures them as `apply` pays for them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NODES: u32 = 1_000;
const CONTAINERS: u32 = 10_000;
const LATENCY: Duration = Duration::from_millis(20);
const PARALLELISM: usize = 50;

/// Every operation of the test world: all of them take [`LATENCY`].
const OPS: [Op; 15] = [
    Op::Inventory,
    Op::CreateMachine,
    Op::UpdateMachine,
    Op::DeleteMachine,
    Op::CreateFirewall,
    Op::UpdateFirewall,
    Op::DeleteFirewall,
    Op::CreateStableIp,
    Op::AttachStableIp,
    Op::DeleteStableIp,
    Op::EngineFor,
    Op::ListContainers,
    Op::CreateContainer,
    Op::RemoveContainer,
    Op::InspectContainer,
];

/// How the state is saved.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Saving {
    /// What `apply` does: each save appends what changed to the journal; compacted at the end.
    Journal,
    /// What it did before: each save rewrites the whole file.
    WholeFile,
}

/// The local state file, timed: how long the apply spent inside its saves.
struct Timed {
    file: LocalStateFile,
    strategy: Saving,
    spent: Mutex<(Duration, usize)>,
    /// Of those, the saves that wrote the whole file: (time, count).
    whole: Mutex<(Duration, usize)>,
}

impl Timed {
    async fn timed<T>(&self, work: impl std::future::Future<Output = T>) -> T {
        let journal = self.file.journal_path();
        let start = Instant::now();
        let out = work.await;
        let took = start.elapsed();
        let mut spent = self.spent.lock().unwrap_or_else(|p| p.into_inner());
        spent.0 += took;
        spent.1 += 1;
        if !journal.exists() {
            let mut whole = self.whole.lock().unwrap_or_else(|p| p.into_inner());
            whole.0 += took;
            whole.1 += 1;
        }
        out
    }
}

#[async_trait]
impl StateBackend for Timed {
    fn location(&self) -> String {
        self.file.location()
    }

    async fn load(&self) -> Result<State, StateError> {
        self.file.load().await
    }

    async fn write(&self, state: &State) -> Result<(), StateError> {
        self.timed(self.file.write(state)).await
    }

    async fn save(&self, state: &mut State) -> Result<(), StateError> {
        self.timed(self.file.save(state)).await
    }

    async fn save_touched(&self, state: &mut State, touched: &Touched) -> Result<(), StateError> {
        match self.strategy {
            Saving::Journal => self.timed(self.file.save_touched(state, touched)).await,
            Saving::WholeFile => self.timed(self.file.save(state)).await,
        }
    }

    async fn compact(&self, state: &State) -> Result<(), StateError> {
        self.timed(self.file.compact(state)).await
    }

    async fn lock(&self, operation: &str, options: &LockOptions) -> Result<Box<dyn StateLock>, StateError> {
        self.file.lock(operation, options).await
    }

    async fn force_unlock(&self) -> Result<Option<LockInfo>, StateError> {
        self.file.force_unlock().await
    }
}

/// What one apply measured.
struct Measured {
    wall: Duration,
    saving: Duration,
    saves: usize,
    /// Provider calls per step, by address.
    calls: BTreeMap<Address, u64>,
    state_bytes: u64,
}

fn run(rt: &tokio::runtime::Runtime, net: &Network, plan: &Plan, strategy: Saving) -> Measured {
    let world = TestWorld::new();
    for op in OPS {
        world.set_latency(op, LATENCY);
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("bench.state.json");
    let store = Timed {
        file: LocalStateFile::new(&path),
        strategy,
        spent: Mutex::default(),
        whole: Mutex::default(),
    };
    let options = ApplyOptions {
        parallelism: PARALLELISM,
        genesis: Some(net.chain.genesis.clone()),
        // Containers report healthy as they start: their gates pass without a poll.
        ..ApplyOptions::default()
    };
    let start = Instant::now();
    let outcome = rt
        .block_on(apply(plan, &world.providers(), &store, &options, &|_: &ApplyEvent| {}, Interrupt::new()))
        .expect("apply starts");
    let wall = start.elapsed();
    assert!(outcome.is_success(), "{:?} {:?}", outcome.failed.first(), outcome.state_error);
    let calls = plan
        .changes
        .iter()
        .map(|c| (c.address.clone(), OPS.iter().map(|op| world.calls_for(*op, &c.address)).sum()))
        .collect();
    let (saving, saves) = *store.spent.lock().unwrap_or_else(|p| p.into_inner());
    let (whole, wholes) = *store.whole.lock().unwrap_or_else(|p| p.into_inner());
    eprintln!("  of the saves, {wholes} wrote the whole file, in {:.2} s", whole.as_secs_f64());
    let state_bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    Measured { wall, saving, saves, calls, state_bytes }
}

/// The bounds latency and parallelism allow, from the calls each step made: (by dependency levels,
/// no schedule can beat).
fn bounds(plan: &Plan, calls: &BTreeMap<Address, u64>) -> (Duration, Duration) {
    let mut level: BTreeMap<&Address, usize> = BTreeMap::new();
    let mut finish: BTreeMap<&Address, Duration> = BTreeMap::new();
    // Steps after what they wait for: the planner orders changes so, but do not rely on it.
    let mut pending: Vec<_> = plan.changes.iter().collect();
    while !pending.is_empty() {
        pending.retain(|c| {
            if !c.waits_for.iter().all(|w| level.contains_key(w)) {
                return true;
            }
            let own = LATENCY * calls[&c.address] as u32;
            let l = c.waits_for.iter().map(|w| level[w] + 1).max().unwrap_or(0);
            let f = c.waits_for.iter().map(|w| finish[w]).max().unwrap_or_default() + own;
            level.insert(&c.address, l);
            finish.insert(&c.address, f);
            false
        });
    }
    let mut levels: BTreeMap<usize, (Duration, Duration)> = BTreeMap::new();
    for c in &plan.changes {
        let own = LATENCY * calls[&c.address] as u32;
        let entry = levels.entry(level[&c.address]).or_default();
        entry.0 += own;
        entry.1 = entry.1.max(own);
    }
    let by_levels = levels.values().map(|(work, longest)| (*work / PARALLELISM as u32).max(*longest)).sum();
    let work: Duration = levels.values().map(|(work, _)| *work).sum();
    let chain = finish.values().copied().max().unwrap_or_default();
    (by_levels, (work / PARALLELISM as u32).max(chain))
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let net = network(NODES, CONTAINERS);
    let planned =
        plan(&net, &ActualState::default(), &Remembered::default(), &PlanOptions::default()).expect("plans");
    let plan = planned.plan;
    eprintln!("{} changes planned", plan.changes.len());
    let mut rows = Vec::new();
    for (name, strategy) in [
        ("journal: each save appends what changed (now)", Saving::Journal),
        ("whole file rewritten at each save (before)", Saving::WholeFile),
    ] {
        eprintln!("applying: {name}");
        let m = run(&rt, &net, &plan, strategy);
        let (by_levels, floor) = bounds(&plan, &m.calls);
        eprintln!("  wall {}, {} saves, {} in saves", secs(m.wall), m.saves, secs(m.saving));
        rows.push(format!(
            "| {name} | {} | {} | {} | {:.2}× | {} ({:.1} %) | {} | {:.1} MB |",
            secs(m.wall),
            secs(by_levels),
            secs(floor),
            m.wall.as_secs_f64() / by_levels.as_secs_f64(),
            secs(m.saving),
            100.0 * m.saving.as_secs_f64() / m.wall.as_secs_f64(),
            m.saves,
            m.state_bytes as f64 / 1e6,
        ));
    }
    println!(
        "{} nodes / {} containers from nothing, {} changes; every provider call {} ms; parallelism {}. \
         Goals: wall ≤ 1.2× the level bound, state I/O ≤ 10 % of wall.\n",
        NODES,
        CONTAINERS,
        plan.changes.len(),
        LATENCY.as_millis(),
        PARALLELISM
    );
    println!(
        "| state saves | wall | bound by dependency levels | bound no schedule beats | wall ÷ level bound | state I/O (share of wall) | saves | final state file |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
}
