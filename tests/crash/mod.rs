//! The crash-trial harness: kill an apply at a seeded random moment, apply again, then check that
//! exactly the desired set exists (no duplicate, no orphan, nothing missing), that the state records
//! it with no intent left, and that a plan from the state alone agrees (invariants 3 and 9).
//!
//! The suite runs a few trials per stand-in (`PEERFLEET_CRASH_TRIALS`, default 5; seed
//! `PEERFLEET_CRASH_SEED`); `scripts/crash-trials` runs many more and prints each stand-in's tally.
//! Stand-ins: the in-memory test provider (`tests/heal`), moto and the DigitalOcean test server
//! (machine layer only), and the local Docker engine (whole network).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use peerfleet::core::Address;
use peerfleet::core::actual::ActualState;
use peerfleet::core::network::Network;
use peerfleet::core::plan::{self, Layer, PlanOptions, Remembered, layer_of};
use peerfleet::core::state::State;

mod clouds;
pub(crate) mod engine;
mod faults;

/// How many trials, from which seed.
pub struct Trials {
    /// Trials per stand-in.
    pub count: u32,
    /// The seed every kill moment derives from.
    pub seed: u64,
}

impl Trials {
    /// From `PEERFLEET_CRASH_TRIALS` (default 5) and `PEERFLEET_CRASH_SEED` (default 14).
    pub fn from_env() -> Trials {
        let var = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .map(|v| v.parse().unwrap_or_else(|_| panic!("{name}={v}: a number")))
                .unwrap_or(default)
        };
        Trials { count: var("PEERFLEET_CRASH_TRIALS", 5) as u32, seed: var("PEERFLEET_CRASH_SEED", 14) }
    }

    /// The kill moment of trial `n`: uniform in `[0, within)`, the same for the same seed.
    pub fn kill_at(&self, n: u32, within: Duration) -> Duration {
        let mut rng = StdRng::seed_from_u64(self.seed ^ (u64::from(n) << 32));
        within.mul_f64(rng.random::<f64>())
    }
}

/// What exists of one network, by address: every object's ID (two or more is a duplicate).
pub struct Census {
    /// IDs by address.
    pub found: BTreeMap<Address, Vec<String>>,
}

/// The addresses `network` wants (in `only`'s layer): a plan from nothing creates exactly these.
pub fn desired(network: &Network, only: Option<Layer>) -> BTreeSet<Address> {
    let options = PlanOptions { only, ..PlanOptions::default() };
    let planned = plan::plan(network, &ActualState::default(), &Remembered::default(), &options).unwrap();
    planned.plan.changes.into_iter().map(|c| c.address).collect()
}

/// Where the state disagrees with what exists (in `only`'s layer), and intents left over.
pub fn state_problems(state: &State, census: &Census, only: Option<Layer>) -> Vec<String> {
    let in_layer = |a: &Address| only.is_none_or(|l| layer_of(a) == l);
    let mut problems = Vec::new();
    let recorded: BTreeMap<&Address, &str> =
        state.resources.iter().filter(|(a, _)| in_layer(a)).map(|(a, r)| (a, r.id())).collect();
    for (address, ids) in census.found.iter().filter(|(a, _)| in_layer(a)) {
        match recorded.get(address) {
            None => problems.push(format!("{address} exists ({}) but the state does not record it", ids[0])),
            Some(id) if !ids.iter().any(|i| i == id) => {
                problems.push(format!("the state records {address} as {id}, but it is {ids:?}"))
            }
            Some(_) => {}
        }
    }
    for address in recorded.keys().filter(|a| !census.found.contains_key(**a)) {
        problems.push(format!("the state records {address}, which does not exist"));
    }
    for address in state.intents.keys() {
        problems.push(format!("an intent for {address} remains"));
    }
    problems
}

/// The results of one stand-in's trials.
pub struct Tally {
    name: String,
    started: Instant,
    trials: u32,
    killed_mid_run: u32,
    duplicates: usize,
    orphans: usize,
    missing: usize,
    heal_failures: u32,
    details: Vec<String>,
}

impl Tally {
    /// An empty tally for the stand-in `name`.
    pub fn new(name: &str) -> Tally {
        Tally {
            name: name.to_string(),
            started: Instant::now(),
            trials: 0,
            killed_mid_run: 0,
            duplicates: 0,
            orphans: 0,
            missing: 0,
            heal_failures: 0,
            details: Vec::new(),
        }
    }

    /// Notes whether the kill struck before the run finished by itself.
    pub fn killed(&mut self, mid_run: bool) {
        self.killed_mid_run += u32::from(mid_run);
    }

    /// Counts duplicates, orphans and missing objects of one trial.
    pub fn count(&mut self, trial: &str, desired: &BTreeSet<Address>, census: &Census) {
        self.trials += 1;
        for (address, ids) in &census.found {
            if ids.len() > 1 {
                self.duplicates += ids.len() - 1;
                self.details.push(format!("{trial}: {address} exists {} times: {ids:?}", ids.len()));
            }
            if !desired.contains(address) {
                self.orphans += ids.len();
                self.details.push(format!("{trial}: orphan {address} {ids:?}"));
            }
        }
        for address in desired.iter().filter(|a| !census.found.contains_key(*a)) {
            self.missing += 1;
            self.details.push(format!("{trial}: {address} is missing"));
        }
    }

    /// Counts a trial whose state did not heal (any problem).
    pub fn heal(&mut self, trial: &str, problems: Vec<String>) {
        if !problems.is_empty() {
            self.heal_failures += 1;
            self.details.extend(problems.into_iter().map(|p| format!("{trial}: {p}")));
        }
    }

    /// Prints the tally line `scripts/crash-trials` collects.
    pub fn report(&self, trials: &Trials) {
        eprintln!(
            "crash trials [{}] seed {}: {} trials ({} killed mid-run), {} duplicates, {} orphans, {} missing, {} heal failures, {:.1} s",
            self.name,
            trials.seed,
            self.trials,
            self.killed_mid_run,
            self.duplicates,
            self.orphans,
            self.missing,
            self.heal_failures,
            self.started.elapsed().as_secs_f64()
        );
    }

    /// Fails with every detail unless all trials were clean.
    pub fn assert_clean(&self) {
        assert!(
            self.duplicates + self.orphans + self.missing == 0 && self.heal_failures == 0,
            "crash trials [{}]:\n{}",
            self.name,
            self.details.join("\n")
        );
    }
}
