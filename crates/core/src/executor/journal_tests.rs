//! The executor saving through the local file's journal: what a large apply leaves on disk reads back
//! as exactly the state it ended with, and the saves in between append to the journal alone.

// Test helpers (not only `#[test]` functions) may unwrap.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use super::*;
use crate::network::{Network, ProviderKind, Role, Strategy};
use crate::plan::{Plan, PlanOptions, Remembered, plan};
use crate::refresh::refresh;
use crate::spec::{ClusterBuilder, NetworkBuilder, ServiceBuilder};
use crate::state::{LocalStateFile, LockInfo, LockOptions, StateBackend, StateLock, Touched};
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

async fn plan_for(net: &Network, world: &TestWorld, state: &State) -> Plan {
    let remembered: Vec<_> = state.resources.values().cloned().collect();
    let actual = refresh(net, &world.providers(), &remembered, None).await.unwrap();
    let options = PlanOptions { refreshed: true, ..Default::default() };
    plan(net, &actual, &Remembered::of(state), &options).unwrap().plan
}

async fn apply_with(net: &Network, world: &TestWorld, store: &Watched) -> ApplyOutcome {
    let state = store.load().await.unwrap();
    let plan = plan_for(net, world, &state).await;
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
    tokio::time::timeout(Duration::from_secs(60), outcome).await.expect("apply hung").unwrap()
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
    assert!(rewrote.len() > 10, "{} saves", rewrote.len());
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
