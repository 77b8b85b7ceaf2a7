//! The executor: applies a [`Plan`](crate::plan::Plan), exactly its changes, safely.
//!
//! Modelled on cargo's job queue. Scheduling is a pure structure ([`queue::Queue`]) built from the
//! plan's changes and their `waits_for` edges; execution is one coordinator loop that starts ready
//! steps (at most [`ApplyOptions::parallelism`] at once), drains their events and results, and is the
//! **only writer of state**: it records an intent (and saves) before every create, and records every
//! completed step in a save before anything that waits for it starts. One save records many steps: it
//! arms ready steps ahead of free slots (their intents on record, so they start without a save of
//! their own), which keeps a large apply's saves far fewer than its steps. A save names the addresses it
//! touched ([`crate::state::Touched`]), so a store can write only those (the local file appends them
//! to its journal) and fold the pieces into one whole state when the apply ends
//! ([`crate::state::StateBackend::compact`]). Each step runs in its own task with what it needs copied
//! in, so steps share nothing mutable.
//!
//! # Guarantees
//! - Only the plan's changes run; a plan made from another version of the state is refused
//!   ([`ExecutorError::StalePlan`]) before anything runs, as is a plan whose changes wait for each other
//!   in a cycle.
//! - A failed step skips every change that (transitively) waits for it; independent branches go on.
//!   [`ApplyOutcome::failed`] holds root causes only; skipped changes name theirs.
//! - Provider calls are retried only for retryable errors ([`crate::provider::ProviderError::is_retryable`]),
//!   with jittered exponential backoff, never sooner than a provider's `retry_after`, and only by
//!   one layer: a provider that retries its own requests
//!   ([`crate::provider::MachineProvider::retries_requests`]) gets one attempt per call.
//! - Every step ends within [`ApplyOptions::step_deadline`], failing with the attempts it made.
//! - A container step with a health gate is done when the container is healthy, not when it started.
//! - A crash (or an abort) at any instant leaves a state that says what may have happened: the intent
//!   of every create that started is saved before the provider is called, and machine creates carry
//!   their idempotency key, so re-applying never duplicates.
//! - Interrupts ([`Interrupt`]): the first stops scheduling and lets in-flight steps finish; the second
//!   abandons them (as a crash would, safely for the same reason).
//!
//! # Using it
//! ```no_run
//! # async fn demo(plan: &peerfleet_core::Plan, providers: &peerfleet_core::provider::Providers)
//! #     -> Result<(), Box<dyn std::error::Error>> {
//! use peerfleet_core::executor::{apply, ApplyEvent, ApplyOptions, Interrupt};
//! use peerfleet_core::state::LocalStateFile;
//!
//! let store = LocalStateFile::new(".peerfleet/testnet.state.json");
//! let interrupt = Interrupt::new(); // call `interrupt.escalate()` from a Ctrl-C handler
//! let report = |e: &ApplyEvent| println!("{e}");
//! let options = ApplyOptions { parallelism: 4, ..ApplyOptions::default() };
//! let outcome = apply(plan, providers, &store, &options, &report, interrupt).await?;
//! if !outcome.is_success() {
//!     for (address, error) in &outcome.failed {
//!         eprintln!("{address}: {error}");
//!     }
//! }
//! # Ok(()) }
//! ```

pub mod queue;

mod gate;
mod retry;
mod run;
mod steps;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::address::Address;
use crate::network::ChainId;
use crate::plan::Action;
use crate::provider::{ErrorKind, ProviderError};
use crate::state::{LockOptions, State, StateError};

pub use crate::retry::RetryPolicy;
pub use queue::QueueError;
pub use run::{apply, apply_locked};

/// [`ApplyOptions::step_deadline`]'s default.
pub const DEFAULT_STEP_DEADLINE: Duration = Duration::from_secs(20 * 60);

/// How to apply.
#[derive(Clone)]
pub struct ApplyOptions {
    /// Steps in flight at most (`--parallelism`, default 10; 0 counts as 1).
    pub parallelism: usize,
    /// How failed calls to providers and engines without a retry layer of their own are retried
    /// (see [`crate::retry`]: one retry layer per call path).
    pub retry: RetryPolicy,
    /// How long one step may take in all (its calls, their retries, polls and health gate). A step
    /// still running then is stopped and fails, saying how many attempts it made; the state lock's
    /// lease is renewed meanwhile. Default 20 minutes: above the longest single wait a provider
    /// makes (10 minutes for a droplet to boot or an instance to terminate) plus a health gate.
    pub step_deadline: Duration,
    /// How the state lock is taken ([`apply`] only) and how long its lease lasts; the lease is renewed
    /// every third of it while applying.
    pub lock: LockOptions,
    /// The operation named in the lock (`apply`, `destroy`).
    pub operation: String,
    /// First wait between health-gate polls; it doubles up to [`ApplyOptions::gate_poll_max`].
    pub gate_poll: Duration,
    /// Longest wait between health-gate polls.
    pub gate_poll_max: Duration,
    /// The genesis bytes of the plan's chain. Needed when the plan creates the genesis container and
    /// the state has not pinned this chain yet: the pin keeps the bytes so the genesis server can be
    /// rebuilt from the state alone. Must hash to [`Plan::chain_id`](crate::plan::Plan::chain_id).
    pub genesis: Option<Vec<u8>>,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            parallelism: 10,
            retry: RetryPolicy::default(),
            step_deadline: DEFAULT_STEP_DEADLINE,
            lock: LockOptions::default(),
            operation: "apply".to_string(),
            gate_poll: Duration::from_millis(100),
            gate_poll_max: Duration::from_secs(2),
            genesis: None,
        }
    }
}

impl fmt::Debug for ApplyOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApplyOptions")
            .field("parallelism", &self.parallelism)
            .field("retry", &self.retry)
            .field("step_deadline", &self.step_deadline)
            .field("lock", &self.lock)
            .field("operation", &self.operation)
            .field("gate_poll", &self.gate_poll)
            .field("gate_poll_max", &self.gate_poll_max)
            .field("genesis_len", &self.genesis.as_ref().map(Vec::len))
            .finish()
    }
}

/// Progress of an apply, as it happens.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ApplyEvent {
    /// A step started.
    Started {
        /// The resource.
        address: Address,
        /// What the step does.
        action: Action,
    },
    /// A provider call failed with a retryable error and will be tried again after `delay`.
    Retrying {
        /// The resource.
        address: Address,
        /// The attempt that failed (1 = the first).
        attempt: u32,
        /// Why it failed.
        error: ProviderError,
        /// How long until the next attempt.
        delay: Duration,
    },
    /// A step waits for something (a health gate), described for a person.
    Waiting {
        /// The resource.
        address: Address,
        /// What it waits for.
        what: String,
    },
    /// A step finished successfully.
    Finished {
        /// The resource.
        address: Address,
        /// What the step did.
        action: Action,
        /// How long it took.
        elapsed: Duration,
    },
    /// A step failed; its dependents will be skipped.
    Failed {
        /// The resource.
        address: Address,
        /// What the step tried.
        action: Action,
        /// Why it failed.
        error: ProviderError,
    },
    /// A change never started because a change it waits for failed.
    Skipped {
        /// The resource.
        address: Address,
        /// The failed change that is the root cause.
        because: Address,
    },
    /// An interrupt arrived: no new steps start; `aborting` means in-flight steps are abandoned too.
    Stopping {
        /// Steps in flight when it arrived.
        in_flight: usize,
        /// Whether in-flight steps are abandoned rather than awaited.
        aborting: bool,
    },
}

impl fmt::Display for ApplyEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplyEvent::Started { address, action } => write!(f, "{address}: {} started", verb(*action)),
            ApplyEvent::Retrying { address, attempt, error, delay } => {
                write!(
                    f,
                    "{address}: attempt {attempt} failed ({error}); retrying in {:.1}s",
                    delay.as_secs_f64()
                )
            }
            ApplyEvent::Waiting { address, what } => write!(f, "{address}: waiting for {what}"),
            ApplyEvent::Finished { address, action, elapsed } => {
                write!(f, "{address}: {} complete after {:.1}s", verb(*action), elapsed.as_secs_f64())
            }
            ApplyEvent::Failed { address, action, error } => {
                write!(f, "{address}: {} failed: {error}", verb(*action))
            }
            ApplyEvent::Skipped { address, because } => {
                write!(f, "{address}: skipped because {because} failed")
            }
            ApplyEvent::Stopping { in_flight, aborting: false } => {
                write!(f, "interrupted: starting nothing new, waiting for {in_flight} step(s) in flight")
            }
            ApplyEvent::Stopping { in_flight, aborting: true } => {
                write!(f, "interrupted again: abandoning {in_flight} step(s) in flight")
            }
        }
    }
}

fn verb(action: Action) -> &'static str {
    match action {
        Action::NoOp => "nothing",
        Action::Create => "creation",
        Action::Update => "update",
        Action::Replace => "replacement",
        Action::Delete => "deletion",
    }
}

/// Receives [`ApplyEvent`]s as they happen (the CLI draws progress bars; an embedder may print).
///
/// Called from the coordinator loop: keep it quick, and do not block.
pub trait Reporter: Send + Sync {
    /// One event.
    fn event(&self, event: &ApplyEvent);
}

impl<F: Fn(&ApplyEvent) + Send + Sync> Reporter for F {
    fn event(&self, event: &ApplyEvent) {
        self(event)
    }
}

/// How far an interrupt has gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum InterruptLevel {
    /// Running normally.
    None,
    /// Start nothing new; let in-flight steps finish.
    StopScheduling,
    /// Abandon in-flight steps too.
    Abort,
}

/// Stops an apply from outside (the CLI wires Ctrl-C to [`Interrupt::escalate`]). Clones share the
/// signal.
#[derive(Debug, Clone)]
pub struct Interrupt {
    level: Arc<watch::Sender<InterruptLevel>>,
}

impl Default for Interrupt {
    fn default() -> Self {
        Interrupt { level: Arc::new(watch::Sender::new(InterruptLevel::None)) }
    }
}

impl Interrupt {
    /// An interrupt that has not fired.
    pub fn new() -> Self {
        Self::default()
    }

    fn raise(&self, to: InterruptLevel) {
        self.level.send_if_modified(|level| {
            let raised = to > *level;
            *level = (*level).max(to);
            raised
        });
    }

    /// Start no new steps; in-flight ones finish and are saved.
    pub fn stop_scheduling(&self) {
        self.raise(InterruptLevel::StopScheduling);
    }

    /// Abandon in-flight steps (their intents are saved, so a later apply recognises them).
    pub fn abort(&self) {
        self.raise(InterruptLevel::Abort);
    }

    /// The next level: the first call stops scheduling, the second aborts. Returns the new level.
    pub fn escalate(&self) -> InterruptLevel {
        let mut now = InterruptLevel::None;
        self.level.send_modify(|level| {
            *level = match *level {
                InterruptLevel::None => InterruptLevel::StopScheduling,
                _ => InterruptLevel::Abort,
            };
            now = *level;
        });
        now
    }

    /// The current level.
    pub fn level(&self) -> InterruptLevel {
        *self.level.borrow()
    }

    fn subscribe(&self) -> watch::Receiver<InterruptLevel> {
        self.level.subscribe()
    }
}

/// What an apply did. Returned even when steps failed: the state in it is what was saved.
#[derive(Debug)]
pub struct ApplyOutcome {
    /// Changes that completed, in completion order.
    pub succeeded: Vec<Address>,
    /// Changes that failed, with why: root causes only.
    pub failed: Vec<(Address, ProviderError)>,
    /// Changes skipped, each with the failed change that is its root cause.
    pub skipped: Vec<(Address, Address)>,
    /// Changes that never started because of an interrupt (or a state error that stopped scheduling).
    pub not_started: Vec<Address>,
    /// Changes abandoned in flight by a second interrupt; their intents remain in the state.
    pub aborted: Vec<Address>,
    /// Whether an interrupt stopped the apply early.
    pub interrupted: bool,
    /// Throttled responses seen, per provider name (steps retried them).
    pub throttled: BTreeMap<String, u64>,
    /// A failure to save state or to renew the lock during the apply. Scheduling stopped when it
    /// happened; if it is set, [`ApplyOutcome::state`] may be newer than what the backend holds.
    pub state_error: Option<StateError>,
    /// What the apply meant to remove but is still there, one line each, naming it (the caller
    /// fills it: e.g. a destroy's shared Docker network that something still holds).
    pub left_behind: Vec<String>,
    /// The state at the end.
    pub state: State,
}

impl ApplyOutcome {
    /// Whether every change completed and the state is saved.
    pub fn is_success(&self) -> bool {
        self.failed.is_empty()
            && self.skipped.is_empty()
            && self.not_started.is_empty()
            && self.aborted.is_empty()
            && !self.interrupted
            && self.state_error.is_none()
            && self.left_behind.is_empty()
    }
}

/// What prevents an apply from starting. Failures of steps are not errors: they are in
/// [`ApplyOutcome`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecutorError {
    /// The state changed since the plan was made.
    #[error("the plan is stale: it was made from {planned}, but the state is now {current}; run plan again")]
    StalePlan {
        /// The state version the plan was made from.
        planned: String,
        /// The state version now.
        current: String,
    },
    /// The plan's changes cannot be scheduled.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The state could not be loaded or locked.
    #[error(transparent)]
    State(#[from] StateError),
    /// The plan is malformed or incomplete (a planner bug, or a hand-edited plan file).
    #[error("the plan cannot be applied: {0}")]
    InvalidPlan(String),
    /// A provider the plan needs is not registered.
    #[error("the plan needs {0}, which is not registered")]
    MissingProvider(String),
    /// The state pins another chain than the plan serves.
    #[error(
        "the state pins chain {pinned}, but the plan serves chain {planned} without replacing the pinned genesis server"
    )]
    ChainMismatch {
        /// The pinned chain.
        pinned: ChainId,
        /// The plan's chain.
        planned: ChainId,
    },
}

/// An error the executor itself reports for a step (not a provider's).
pub(crate) fn own_error(kind: ErrorKind, message: impl Into<String>) -> ProviderError {
    ProviderError::new(kind, "peerfleet", message)
}

/// "serial 4 of lineage 1b2c…", or "no state".
fn describe_version(lineage: Option<&str>, serial: u64) -> String {
    match lineage {
        Some(l) => format!("serial {serial} of lineage {l}"),
        None if serial == 0 => "no state".to_string(),
        None => format!("serial {serial} (no lineage)"),
    }
}

#[cfg(all(test, feature = "testing"))]
mod tests;

#[cfg(all(test, feature = "testing"))]
mod rollout_tests;

#[cfg(all(test, feature = "testing"))]
mod journal_tests;
