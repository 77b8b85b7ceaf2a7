//! The executor saving through the local file's journal: what a large apply leaves on disk reads back
//! as exactly the state it ended with, and the saves in between append to the journal alone.

// Test helpers (not only `#[test]` functions) may unwrap.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use super::*;
use crate::actual::ActualState;
use crate::network::{Network, ProviderKind, Role, Strategy};
use crate::plan::{PlanOptions, Remembered, plan};
use crate::refresh::refresh;
use crate::spec::{ClusterBuilder, NetworkBuilder, ServiceBuilder};
use crate::state::{LocalStateFile, LockInfo, LockOptions, Refreshed, StateBackend, StateLock, Touched};
use crate::testing::TestWorld;

/// 30 nodes in three clusters of three provider kinds, and 300 containers.
fn network() -> Network {
    let mut b = NetworkBuilder::new("journaled")
        .genesis(b"{\"chain\":\"journaled\"}".to_vec())
        .admin_cidr("203.0.113.0/24");
    for (name, provider, city) in [
        ("aws", ProviderKind::Aws, "Virginia"),
        ("ocean", ProviderKind::DigitalOcean, "Amsterdam"),
        ("home", ProviderKind::Local, "Oregon"),
    ] {
        b = b.cluster(ClusterBuilder::new(name, provider, city).nodes(10).tags(["peer_cluster"]));
    }
    b.service(ServiceBuilder::new("genesis", Role::Genesis))
        .service(ServiceBuilder::new("master", Role::Master))
        .service(
            ServiceBuilder::new("relay", Role::Relay)
                .containers(298)
                .strategy(Strategy::EmptiestNode)
                .deploy_tags(["peer_cluster"]),
        )
        .build()
        .unwrap()
}

/// The local state file, watched: after each `save_touched`, whether the state file itself changed;
/// `compact` forwarded or not.
struct Watched {
    file: LocalStateFile,
    compact: bool,
    rewrote: Mutex<Vec<bool>>,
}

impl Watched {
    fn new(path: &Path, compact: bool) -> Self {
        Watched { file: LocalStateFile::new(path), compact, rewrote: Mutex::default() }
    }
}

#[async_trait]
impl StateBackend for Watched {
    fn location(&self) -> String {
        self.file.location()
    }

    async fn load(&self) -> Result<State, StateError> {
        self.file.load().await
    }

    async fn write(&self, state: &State) -> Result<(), StateError> {
        self.file.write(state).await
    }

    async fn save_touched(&self, state: &mut State, touched: &Touched) -> Result<(), StateError> {
        let before = std::fs::read(self.file.path()).ok();
        self.file.save_touched(state, touched).await?;
        let after = std::fs::read(self.file.path()).ok();
        self.rewrote.lock().unwrap().push(before != after);
        Ok(())
    }

    async fn compact(&self, state: &State) -> Result<(), StateError> {
        if self.compact { self.file.compact(state).await } else { Ok(()) }
    }

    async fn lock(&self, operation: &str, options: &LockOptions) -> Result<Box<dyn StateLock>, StateError> {
        self.file.lock(operation, options).await
    }

    async fn force_unlock(&self) -> Result<Option<LockInfo>, StateError> {
        self.file.force_unlock().await
    }
}

/// Refreshes, plans from `state` and applies, as `peerfleet apply` does; then heals the state with
/// what the refresh found and the apply did not touch, and saves that. Returns the outcome, with the
/// healed state.
async fn apply_with(net: &Network, world: &TestWorld, store: &dyn StateBackend) -> ApplyOutcome {
    let state = store.load().await.unwrap();
    let remembered: Vec<_> = state.resources.values().cloned().collect();
    let actual = refresh(net, &world.providers(), &remembered, None).await.unwrap();
    let planned = PlanOptions { refreshed: true, ..Default::default() };
    let plan = plan(net, &actual, &Remembered::of(&state), &planned).unwrap().plan;
    let options = ApplyOptions {
        parallelism: 16,
        genesis: Some(net.chain.genesis.clone()),
        retry: crate::retry::RetryPolicy {
            base: Duration::from_millis(1),
            max_attempts: 2,
            ..Default::default()
        },
        gate_poll: Duration::from_millis(1),
        gate_poll_max: Duration::from_millis(5),
        ..ApplyOptions::default()
    };
    let quiet = |_: &ApplyEvent| {};
    let providers = world.providers();
    let outcome = apply(&plan, &providers, store, &options, &quiet, Interrupt::new());
    let mut outcome =
        tokio::time::timeout(Duration::from_secs(60), outcome).await.expect("apply hung").unwrap();
    if outcome.state_error.is_none() {
        let recorded: BTreeSet<_> = plan.changes.iter().map(|c| c.address.clone()).collect();
        let refreshed =
            Refreshed { actual: &actual, containers: true, spec_genesis: Some(&net.chain.genesis) };
        if outcome.state.heal(&refreshed, &recorded) {
            store.save(&mut outcome.state).await.unwrap();
        }
    }
    outcome
}

/// What a fresh handle loads from `path` is `expected`; a difference is named by its counts (the
/// states are far too large to print).
async fn assert_reads_back(path: &Path, expected: &State) {
    let loaded = LocalStateFile::new(path).load().await.unwrap();
    let count =
        |s: &State| (s.serial, s.resources.len(), s.generations.len(), s.intents.len(), s.outputs.len());
    assert!(
        &loaded == expected,
        "(serial, resources, generations, intents, outputs) read back {:?}, expected {:?}",
        count(&loaded),
        count(expected)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_apply_with_random_failures_reads_back_exactly_as_it_ended() {
    let net = network();
    let world = TestWorld::new();
    world.fail_randomly(12, 0.1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journaled.state.json");

    // Not compacted: what the apply left is the file of its first save and the journal of the rest.
    let store = Watched::new(&path, false);
    let first = apply_with(&net, &world, &store).await;
    assert!(!first.failed.is_empty(), "the random failures struck");
    assert!(first.state_error.is_none());
    let rewrote = store.rewrote.lock().unwrap().clone();
    // Saves arm steps ahead of free slots: far fewer saves than steps.
    let steps = first.succeeded.len() + first.failed.len();
    assert!(rewrote.len() > 5 && rewrote.len() * 4 < steps, "{} saves for {steps} steps", rewrote.len());
    assert_eq!(rewrote.iter().filter(|r| **r).count(), 1, "only the first save (no lineage yet) is whole");
    assert!(rewrote[0]);
    assert!(std::fs::metadata(LocalStateFile::new(&path).journal_path()).unwrap().len() > 0);
    assert_reads_back(&path, &first.state).await;

    // Then until it converges, compacting at the end of each apply.
    let store = Watched::new(&path, true);
    for _ in 0..8 {
        let outcome = apply_with(&net, &world, &store).await;
        assert!(outcome.state_error.is_none());
        assert!(!LocalStateFile::new(&path).journal_path().exists(), "compacted at the end");
        assert_reads_back(&path, &outcome.state).await;
        if outcome.is_success() {
            return;
        }
    }
    panic!("no convergence in 8 applies at a 10% failure rate");
}

// ---- a real process killed in the middle of an apply ----

const CHILD_ENV: &str = "PEERFLEET_JOURNAL_CRASH_CHILD";

/// Not a test of its own: the child process of `a_run_killed_at_a_random_step_left_every_create_it_sent_on_record`,
/// run with the environment variable [`CHILD_ENV`] naming a directory. It applies the network from
/// nothing against a world kept in that directory (`world.log`), with its state file beside it
/// (`state.json`), until it is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run as a child process by a_run_killed_at_a_random_step_left_every_create_it_sent_on_record"]
async fn killed_apply_child() {
    let dir = PathBuf::from(std::env::var(CHILD_ENV).expect("run by the parent test only"));
    let world = TestWorld::new();
    world.persist_to(dir.join("world.log")).unwrap();
    apply_with(&network(), &world, &LocalStateFile::new(dir.join("state.json"))).await;
}

/// Every object the world holds, by address (more than one at an address is a duplicate).
fn objects(world: &TestWorld, net: &str) -> BTreeMap<Address, usize> {
    let mut seen = BTreeMap::new();
    let addresses = world.machines(net).into_iter().map(|m| m.address);
    let addresses = addresses.chain(world.firewalls(net).into_iter().map(|f| f.address));
    let addresses = addresses.chain(world.stable_ips(net).into_iter().map(|s| s.address));
    for address in addresses.chain(world.containers(net).into_iter().map(|c| c.address)) {
        *seen.entry(address).or_default() += 1;
    }
    seen
}

/// Runs the child, and kills it (SIGKILL) the moment its providers have made `changes` changes;
/// returns whether it was killed before it ended.
fn run_child_until(dir: &Path, changes: usize) -> bool {
    use std::process::{Command, Stdio};
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "executor::journal_tests::killed_apply_child", "--ignored"])
        .env(CHILD_ENV, dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let log = dir.join("world.log");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let made = std::fs::read(&log).map(|b| b.iter().filter(|&&c| c == b'\n').count());
        if made.unwrap_or(0) >= changes {
            child.kill().unwrap(); // SIGKILL: no destructor, no flush, no compaction
            child.wait().unwrap();
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        assert!(std::time::Instant::now() < deadline, "the child neither made changes nor ended");
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// The durability rules, read off what a killed run left on disk: every create that reached a
/// provider has its intent or its resource in the state (an intent is durable before its create is
/// sent), and everything it waited for is recorded as done (a finished step is durable before
/// anything that depends on it starts).
fn assert_killed_run_kept_its_promises(net: &Network, world: &Path, state: &State) {
    let first = plan(net, &ActualState::default(), &Remembered::default(), &PlanOptions::default()).unwrap();
    let waits: BTreeMap<_, _> = first.plan.changes.iter().map(|c| (&c.address, &c.waits_for)).collect();
    let changes = TestWorld::changes_made(world).unwrap();
    let created: BTreeSet<_> =
        changes.iter().filter(|(op, _)| op.starts_with("Create")).map(|(_, a)| a).collect();
    assert!(!created.is_empty(), "killed before anything was made");
    for address in created {
        assert!(
            state.intents.contains_key(address) || state.resources.contains_key(address),
            "{address} was created, and the state does not know: its intent was not on disk before the create"
        );
        for before in waits[address] {
            assert!(
                state.resources.contains_key(before),
                "{address} was created before {before}, which it waits for, was on disk as done"
            );
        }
    }
}

#[cfg(unix)]
#[test]
fn a_run_killed_at_a_random_step_left_every_create_it_sent_on_record() {
    use rand::{Rng, SeedableRng};
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let net = network();
    for seed in 1..=5 {
        let dir = tempfile::tempdir().unwrap();
        // Any step: the network makes about 340 changes.
        let changes = rand::rngs::StdRng::seed_from_u64(seed).random_range(1..320);
        assert!(run_child_until(dir.path(), changes), "seed {seed}: the apply ended before change {changes}");
        let store = LocalStateFile::new(dir.path().join("state.json"));
        let killed = store.load_sync().unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let kept = dir.path().join("world.log");
        assert_killed_run_kept_its_promises(&net, &kept, &killed);
        let world = TestWorld::restore(&kept).unwrap();

        // Applied again, to the end: nothing made twice, nothing left in flight, nothing left to do.
        let outcome = rt.block_on(apply_with(&net, &world, &store));
        assert!(outcome.is_success(), "seed {seed}: {:?}", outcome.failed.first());
        let made = objects(&world, &net.name);
        let duplicated: Vec<_> = made.iter().filter(|(_, n)| **n > 1).collect();
        assert!(duplicated.is_empty(), "seed {seed}: made twice: {duplicated:?}");
        let state = store.load_sync().unwrap();
        assert!(state.intents.is_empty(), "seed {seed}: {:?}", state.intents.keys().next());
        assert_eq!(state.resources.len(), made.len());
        let again = rt.block_on(async {
            let actual = refresh(&net, &world.providers(), &[], None).await.unwrap();
            let options = PlanOptions { refreshed: true, ..Default::default() };
            plan(&net, &actual, &Remembered::of(&state), &options).unwrap().plan
        });
        assert!(!again.has_changes(), "seed {seed}: {:?}", again.changes.first().map(|c| &c.address));
    }
}
