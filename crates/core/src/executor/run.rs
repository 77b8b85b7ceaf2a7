//! The coordinator loop, and the checks made before it starts.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::{Id, JoinError, JoinSet};
use tokio::time::Instant;

use super::gate::Poll;
use super::queue::Queue;
use super::retry::{StepContext, ThrottleCounts};
use super::steps::{self, Live, StepResult};
use super::{
    ApplyEvent, ApplyOptions, ApplyOutcome, ExecutorError, Interrupt, InterruptLevel, Reporter,
    describe_version, own_error,
};
use crate::address::Address;
use crate::network::{ChainId, ProviderKind, Role};
use crate::plan::{Action, Change, FORMAT_VERSION, Plan};
use crate::provider::{ErrorKind, ProviderError, Providers};
use crate::resource::{Actual, Desired};
use crate::state::{
    ChainPin, Intent, State, StateBackend, StateError, StateErrorKind, StateLock, Timestamp, Touched,
};

/// Applies `plan`: takes the state lock (as `options.lock` says), checks the plan against the state,
/// runs the changes, releases the lock.
///
/// # Errors
/// Only what prevents starting: a malformed or cyclic plan, a missing provider, the lock held by
/// someone else, a state that cannot be loaded, a stale plan, a chain mismatch. Everything that
/// happens once steps run (failures, skips, interrupts, even state save errors) is in the
/// [`ApplyOutcome`].
pub async fn apply(
    plan: &Plan,
    providers: &Providers,
    store: &dyn StateBackend,
    options: &ApplyOptions,
    reporter: &dyn Reporter,
    interrupt: Interrupt,
) -> Result<ApplyOutcome, ExecutorError> {
    // Cheap checks first: a bad plan must not even take the lock.
    preflight(plan, providers, options)?;
    let mut lock = store.lock(&options.operation, &options.lock).await?;
    if let Some(abandoned) = lock.took_over() {
        tracing::warn!(state = %store.location(), "took over an abandoned lock: {abandoned}");
    }
    let outcome = apply_locked(plan, providers, store, lock.as_mut(), options, reporter, interrupt).await;
    if let Err(e) = lock.release().await {
        tracing::warn!("{e}");
    }
    outcome
}

/// [`apply`] for a caller that already holds the state lock (e.g. across refresh, plan and apply).
/// The lease is renewed first (a lock lost while the caller held it is refused before anything runs)
/// and then every third of the lease while applying; if a renewal fails (the lock was taken over),
/// nothing more is written and the outcome's `state_error` says why.
///
/// # Errors
/// As [`apply`]; a lock that was taken over or removed is [`crate::state::StateErrorKind::LockLost`].
pub async fn apply_locked(
    plan: &Plan,
    providers: &Providers,
    store: &dyn StateBackend,
    lock: &mut dyn StateLock,
    options: &ApplyOptions,
    reporter: &dyn Reporter,
    interrupt: Interrupt,
) -> Result<ApplyOutcome, ExecutorError> {
    let queue = preflight(plan, providers, options)?;
    // The caller may have held the lock for a while (a confirmation prompt): if its lease ran out and
    // someone took it over, we must not write a byte. Renewing also proves the lock is still ours.
    lock.renew().await?;
    let state = store.load().await?;
    if !state.is_base_of(&plan.base) {
        return Err(ExecutorError::StalePlan {
            planned: describe_version(plan.base.lineage.as_deref(), plan.base.serial),
            current: describe_version(state.lineage.as_deref(), state.serial),
        });
    }
    check_chain(plan, &state, options)?;
    let (events_tx, events) = mpsc::unbounded_channel();
    let run = Run {
        plan,
        providers,
        store,
        lock,
        options,
        reporter,
        interrupts: interrupt.subscribe(),
        _interrupt: interrupt,
        changes: plan.changes.iter().map(|c| (c.address.clone(), c)).collect(),
        queue,
        state,
        live: plan.prior.iter().map(|a| (a.address().clone(), a.clone())).collect(),
        tasks: JoinSet::new(),
        in_flight: BTreeMap::new(),
        events,
        events_tx,
        throttled: Arc::new(Mutex::new(BTreeMap::new())),
        stopping: false,
        may_write: true,
        dirty: false,
        last_save: Instant::now(),
        touched: Touched::new(),
        armed: VecDeque::new(),
        succeeded: Vec::new(),
        failed: Vec::new(),
        skipped: Vec::new(),
        aborted: Vec::new(),
        interrupted: false,
        state_error: None,
    };
    Ok(run.run().await)
}

/// How long finished steps may wait, at most, for a save that records them when nothing needs one
/// sooner (nothing waits for them, and nothing new can start).
const FLUSH_AFTER: Duration = Duration::from_secs(1);

/// How many parallelisms' worth of ready steps a save arms beyond the free slots.
const ARM_AHEAD: usize = 2;

fn invalid(message: impl Into<String>) -> ExecutorError {
    ExecutorError::InvalidPlan(message.into())
}

/// Whether `change` creates the genesis server (a genesis container create or replace).
fn creates_genesis(change: &Change) -> bool {
    matches!(change.action, Action::Create | Action::Replace)
        && matches!(&change.after, Some(Desired::Container(s)) if s.role == Role::Genesis)
}

/// Checks the plan's shape and that its providers are registered; builds the schedule.
fn preflight(plan: &Plan, providers: &Providers, options: &ApplyOptions) -> Result<Queue, ExecutorError> {
    if plan.format_version != FORMAT_VERSION {
        return Err(invalid(format!(
            "plan format {} is not the format this peerfleet applies ({FORMAT_VERSION})",
            plan.format_version
        )));
    }
    let prior: Live = plan.prior.iter().map(|a| (a.address().clone(), a.clone())).collect();
    let need = |kind: ProviderKind| {
        providers
            .machines(kind)
            .map(|_| ())
            .ok_or_else(|| ExecutorError::MissingProvider(format!("the {kind} machine provider")))
    };
    for c in &plan.changes {
        let a = &c.address;
        let (has_before, has_after) = (c.before.is_some(), c.after.is_some());
        let shape_ok = match c.action {
            Action::NoOp => false,
            Action::Create => has_after,
            Action::Update | Action::Replace => has_before && has_after,
            Action::Delete => has_before,
        };
        if !shape_ok {
            return Err(invalid(format!("{a}: a {:?} change without the before/after it needs", c.action)));
        }
        if c.before.as_ref().is_some_and(|b| b.address() != a)
            || c.after.as_ref().is_some_and(|d| d.address() != a)
        {
            return Err(invalid(format!("{a}: the change's resources carry another address")));
        }
        match a {
            Address::Machine { .. } => {
                if let Some(Desired::Machine(s)) = &c.after {
                    need(s.provider)?;
                }
                if let Some(Actual::Machine(m)) = &c.before {
                    need(m.provider)?;
                }
            }
            Address::Firewall { provider, .. } => need(*provider)?,
            Address::StableIp { .. } => {
                let kind = steps::stable_ip_kind(plan, &prior, c)
                    .ok_or_else(|| invalid(format!("{a}: cannot tell which provider holds it")))?;
                need(kind)?;
            }
            Address::Container { .. } => {
                if c.action == Action::Update {
                    return Err(invalid(format!("{a}: containers are replaced, never updated in place")));
                }
                if providers.engines().is_none() {
                    return Err(ExecutorError::MissingProvider("a container engine connector".into()));
                }
            }
        }
    }
    if let Some(genesis) = &options.genesis
        && plan.changes.iter().any(creates_genesis)
        && ChainId::of(genesis) != plan.chain_id
    {
        return Err(invalid(format!(
            "the genesis bytes given hash to chain {}, but the plan serves chain {}",
            ChainId::of(genesis),
            plan.chain_id
        )));
    }
    Ok(Queue::new(&plan.changes)?)
}

/// Defence in depth for the chain pin (the planner checks it first): the plan must serve the pinned
/// chain unless it explicitly replaces the pinned genesis server, and a new pin needs the bytes.
fn check_chain(plan: &Plan, state: &State, options: &ApplyOptions) -> Result<(), ExecutorError> {
    if let Some(pin) = &state.chain
        && pin.id != plan.chain_id
    {
        let replaces_pinned = plan.changes.iter().any(|c| {
            matches!(c.action, Action::Replace | Action::Delete)
                && matches!(&c.before, Some(Actual::Container(k)) if k.chain_id.as_ref() == Some(&pin.id))
        });
        if !replaces_pinned {
            return Err(ExecutorError::ChainMismatch {
                pinned: pin.id.clone(),
                planned: plan.chain_id.clone(),
            });
        }
    }
    let pinned = state.chain.as_ref().is_some_and(|p| p.id == plan.chain_id);
    if !pinned && options.genesis.is_none() && plan.changes.iter().any(creates_genesis) {
        return Err(invalid(format!(
            "the plan creates the genesis server of chain {}, which the state has not pinned yet; \
             the genesis bytes must be given (ApplyOptions::genesis) so the pin can keep them",
            plan.chain_id
        )));
    }
    Ok(())
}

/// One apply in progress: the coordinator's data. Only the coordinator (this struct's methods) reads
/// the live view and writes the state.
struct Run<'a> {
    plan: &'a Plan,
    providers: &'a Providers,
    store: &'a dyn StateBackend,
    lock: &'a mut dyn StateLock,
    options: &'a ApplyOptions,
    reporter: &'a dyn Reporter,
    /// Kept so the interrupt's sender lives as long as we listen.
    _interrupt: Interrupt,
    interrupts: watch::Receiver<InterruptLevel>,
    changes: BTreeMap<Address, &'a Change>,
    queue: Queue,
    state: State,
    live: Live,
    tasks: JoinSet<StepResult>,
    in_flight: BTreeMap<Id, (Address, Instant)>,
    events: mpsc::UnboundedReceiver<ApplyEvent>,
    events_tx: mpsc::UnboundedSender<ApplyEvent>,
    throttled: ThrottleCounts,
    stopping: bool,
    /// False once the lock is lost: someone else may be writing the state now.
    may_write: bool,
    dirty: bool,
    last_save: Instant,
    /// The addresses whose entries changed since the last save: what the next save must record.
    touched: Touched,
    /// Ready steps whose intents a save recorded, waiting for a free slot (in the queue's order).
    armed: VecDeque<Address>,
    succeeded: Vec<Address>,
    failed: Vec<(Address, ProviderError)>,
    skipped: Vec<(Address, Address)>,
    aborted: Vec<Address>,
    interrupted: bool,
    state_error: Option<StateError>,
}

impl<'a> Run<'a> {
    async fn run(mut self) -> ApplyOutcome {
        let level = *self.interrupts.borrow_and_update();
        self.on_interrupt(level).await;
        let period = (self.options.lock.lease / 3).max(Duration::from_millis(100));
        let mut renew = tokio::time::interval_at(Instant::now() + period, period);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        // CAUTION: never `?` (or return) out of this loop. A failed step skips its dependents and the
        // loop goes on; a state or lock error stops scheduling, and in-flight steps still drain. Only
        // when nothing is in flight does the loop end, so every step that ran is recorded. Each turn
        // starts by saving what the previous one recorded.
        loop {
            self.save_and_schedule().await;
            if self.in_flight.is_empty() {
                if !self.stopping && (self.queue.has_ready() || !self.armed.is_empty()) {
                    continue; // steps that failed before starting freed their slots
                }
                break;
            }
            tokio::select! {
                changed = self.interrupts.changed() => {
                    if changed.is_ok() {
                        let level = *self.interrupts.borrow_and_update();
                        if self.on_interrupt(level).await {
                            break;
                        }
                    }
                }
                Some(event) = self.events.recv() => self.reporter.event(&event),
                Some(joined) = self.tasks.join_next_with_id() => {
                    self.completed(joined);
                    // Record everything that has finished meanwhile; the next turn saves it all.
                    while let Some(joined) = self.tasks.try_join_next_with_id() {
                        self.completed(joined);
                    }
                }
                _ = renew.tick() => self.renew().await,
            }
        }
        self.finish().await
    }

    fn parallelism(&self) -> usize {
        self.options.parallelism.max(1)
    }

    /// One turn of scheduling. Steps armed by an earlier save (their intents already on record) start
    /// as slots free up, with no save of their own. When slots stay free and more changes are ready,
    /// one save records everything that finished since the last save together with the intents of
    /// enough ready changes to fill the free slots and to arm as many again as the parallelism; then
    /// those that fit start.
    ///
    /// So a create never reaches a provider before its intent is on record, and a step never starts
    /// before what it waits for is on record as done (it became ready when that finished, so the save
    /// that armed it recorded that too). Recording an intent early is harmless: an intent only says a
    /// step may have acted. Arming ahead is what keeps saves far fewer than steps: a large apply's
    /// saves are what bounds it (a durable save costs milliseconds, whatever it holds).
    async fn save_and_schedule(&mut self) {
        self.start_armed();
        let free = self.parallelism().saturating_sub(self.in_flight.len());
        let needed = !self.stopping && free > 0 && self.queue.has_ready();
        // Also keep what is on record from falling far behind (for readers of the state meanwhile).
        let overdue = self.dirty && self.last_save.elapsed() >= FLUSH_AFTER;
        if !needed && !overdue {
            return;
        }
        let mut batch = Vec::new();
        while needed && batch.len() < free + ARM_AHEAD * self.parallelism() {
            let Some(address) = self.queue.dequeue() else { break };
            batch.push(address);
        }
        let mut intents = Vec::new();
        for address in &batch {
            if let Some(intent) = self.intent_for(self.changes[address]) {
                self.state.intents.insert(address.clone(), intent);
                self.touched.insert(address);
                intents.push(address.clone());
            }
        }
        self.dirty |= !intents.is_empty();
        if self.dirty && !self.save().await {
            // Without its intent on record, a create must not reach a provider.
            let why = self.state_error.as_ref().map(ToString::to_string).unwrap_or_default();
            for address in intents {
                self.state.intents.remove(&address);
            }
            for address in batch {
                let error = own_error(ErrorKind::Transient, format!("not started: {why}"));
                self.fail(address, error, false);
            }
            return;
        }
        self.armed.extend(batch);
        self.start_armed();
    }

    /// Starts armed steps while slots are free (and nothing stops scheduling).
    fn start_armed(&mut self) {
        while !self.stopping && self.in_flight.len() < self.parallelism() {
            let Some(address) = self.armed.pop_front() else { break };
            self.start(address);
        }
    }

    /// Takes back the intents of armed steps that will never start now; returns them.
    fn disarm(&mut self) -> Vec<Address> {
        let armed: Vec<Address> = self.armed.drain(..).collect();
        for address in &armed {
            if self.state.intents.remove(address).is_some() {
                self.touched.insert(address);
                self.dirty = true;
            }
        }
        armed
    }

    fn intent_for(&self, change: &Change) -> Option<Intent> {
        if !matches!(change.action, Action::Create | Action::Replace) {
            return None;
        }
        let (key, generation) = match &change.after {
            Some(Desired::Machine(s)) => (Some(s.idempotency_key.clone()), Some(s.generation)),
            _ => (None, None),
        };
        Some(Intent { action: change.action, idempotency_key: key, generation, started_at: Timestamp::now() })
    }

    fn start(&mut self, address: Address) {
        let change = self.changes[&address];
        self.reporter.event(&ApplyEvent::Started { address: address.clone(), action: change.action });
        let work = match steps::prepare(change, self.plan, &self.live, self.providers) {
            Ok(work) => work,
            Err(error) => return self.fail(address, error, false),
        };
        let calls = StepContext {
            address: address.clone(),
            policy: self.options.retry,
            events: self.events_tx.clone(),
            throttled: self.throttled.clone(),
            started: Instant::now(),
            deadline: self.options.step_deadline,
            attempts: Default::default(),
        };
        let poll = Poll { first: self.options.gate_poll, max: self.options.gate_poll_max };
        let handle = self.tasks.spawn(async move { work.run(&calls, poll).await });
        self.in_flight.insert(handle.id(), (address, Instant::now()));
    }

    /// Handles an interrupt at `level`; returns whether the loop must end now (abort).
    async fn on_interrupt(&mut self, level: InterruptLevel) -> bool {
        match level {
            InterruptLevel::None => false,
            InterruptLevel::StopScheduling => {
                if !self.interrupted {
                    self.interrupted = true;
                    self.stopping = true;
                    self.reporter
                        .event(&ApplyEvent::Stopping { in_flight: self.in_flight.len(), aborting: false });
                }
                false
            }
            InterruptLevel::Abort => {
                self.interrupted = true;
                self.stopping = true;
                self.reporter
                    .event(&ApplyEvent::Stopping { in_flight: self.in_flight.len(), aborting: true });
                // Dropping a step is a crash of that step: its intent is on record. Steps that finished
                // meanwhile are still recorded.
                self.tasks.abort_all();
                while let Some(joined) = self.tasks.join_next_with_id().await {
                    if joined.as_ref().is_ok() {
                        self.completed(joined);
                    }
                }
                self.aborted = std::mem::take(&mut self.in_flight).into_values().map(|(a, _)| a).collect();
                true
            }
        }
    }

    fn drain_events(&mut self) {
        while let Ok(event) = self.events.try_recv() {
            self.reporter.event(&event);
        }
    }

    fn completed(&mut self, joined: Result<(Id, StepResult), JoinError>) {
        // Events a step sent before it ended are reported before its end.
        self.drain_events();
        let (id, result) = match joined {
            Ok(done) => done,
            Err(e) => {
                let id = e.id();
                let why = if e.is_panic() { panic_message(e) } else { "the step was cancelled".to_string() };
                (
                    id,
                    StepResult {
                        result: Err(own_error(ErrorKind::Transient, why)),
                        old_removed: false,
                        restored: None,
                    },
                )
            }
        };
        let Some((address, started)) = self.in_flight.remove(&id) else { return };
        match result.result {
            Ok(actual) => self.succeed(address, actual, started.elapsed()),
            Err(error) => {
                if let Some(back) = result.restored {
                    // A rollback put the previous spec back: that is what exists now.
                    self.state.resources.insert(address.clone(), back.clone());
                    self.touched.insert(&address);
                    self.live.insert(address.clone(), back);
                    self.dirty = true;
                    self.fail(address, error, false);
                } else {
                    self.fail(address, error, result.old_removed);
                }
            }
        }
    }

    fn succeed(&mut self, address: Address, actual: Option<Actual>, elapsed: Duration) {
        let change = self.changes[&address];
        match actual {
            Some(a) => {
                self.state.resources.insert(address.clone(), a.clone());
                self.live.insert(address.clone(), a);
            }
            None => {
                self.state.resources.remove(&address);
                self.live.remove(&address);
            }
        }
        if let Some(Desired::Machine(s)) = &change.after
            && matches!(change.action, Action::Create | Action::Replace)
        {
            let g = self.state.generations.entry(address.clone()).or_insert(s.generation);
            *g = (*g).max(s.generation);
        }
        self.state.intents.remove(&address);
        self.touched.insert(&address);
        if creates_genesis(change) && self.state.chain.as_ref().map(|p| &p.id) != Some(&self.plan.chain_id) {
            // `check_chain` made sure the bytes are there when this pin is needed.
            if let Some(genesis) = &self.options.genesis {
                self.state.chain = Some(ChainPin::new(genesis));
            }
        }
        self.dirty = true;
        self.queue.finish(&address, true);
        self.reporter.event(&ApplyEvent::Finished {
            address: address.clone(),
            action: change.action,
            elapsed,
        });
        self.succeeded.push(address);
    }

    fn fail(&mut self, address: Address, error: ProviderError, old_removed: bool) {
        let action = self.changes[&address].action;
        if old_removed {
            self.state.resources.remove(&address);
            self.touched.insert(&address);
            self.live.remove(&address);
            self.dirty = true;
        }
        let skipped = self.queue.finish(&address, false);
        self.reporter.event(&ApplyEvent::Failed { address: address.clone(), action, error: error.clone() });
        self.failed.push((address, error));
        for (address, because) in skipped {
            self.reporter.event(&ApplyEvent::Skipped { address: address.clone(), because: because.clone() });
            self.skipped.push((address, because));
        }
    }

    /// Saves the state; on failure stops scheduling and keeps the first error. Returns whether saved.
    async fn save(&mut self) -> bool {
        if !self.may_write {
            return false;
        }
        // Only what changed since the last save: a large apply's state is megabytes, its turns touch
        // a few dozen entries.
        match self.store.save_touched(&mut self.state, &self.touched).await {
            Ok(()) => {
                self.dirty = false;
                self.touched.clear();
                self.last_save = Instant::now();
                true
            }
            Err(e) => {
                tracing::error!("{e}; starting no more steps");
                self.stopping = true;
                self.state_error.get_or_insert(e);
                false
            }
        }
    }

    async fn save_if_dirty(&mut self) {
        if self.dirty {
            self.save().await;
        }
    }

    /// Folds what the saves stored in pieces back into the store's whole form (the local file's
    /// journal into the file). Everything is already saved, so a failure here loses nothing: loading
    /// reads the pieces too.
    async fn compact(&mut self) {
        if !self.may_write || self.state_error.is_some() {
            return;
        }
        if let Err(e) = self.store.compact(&self.state).await {
            tracing::warn!("{e}; the saved state is whole, kept in pieces until the next apply");
        }
    }

    async fn renew(&mut self) {
        if !self.may_write {
            return;
        }
        if let Err(e) = self.lock.renew().await {
            tracing::error!("{e}; starting no more steps");
            if matches!(e.kind(), StateErrorKind::LockLost(_)) {
                self.may_write = false;
            }
            self.stopping = true;
            self.state_error.get_or_insert(e);
        }
    }

    fn update_outputs(&mut self) {
        let mut outputs = self.state.outputs.clone();
        if let Some(pin) = &self.state.chain {
            outputs.insert("chain_id".into(), pin.id.to_string());
        }
        for role in [Role::Genesis, Role::Master] {
            let key = format!("{role}_host");
            match steps::role_host(self.plan, &self.live, role) {
                Some(host) => outputs.insert(key, host),
                None => outputs.remove(&key),
            };
        }
        if outputs != self.state.outputs {
            self.state.outputs = outputs;
            self.dirty = true;
        }
    }

    async fn finish(mut self) -> ApplyOutcome {
        self.drain_events();
        let mut not_started = self.disarm();
        not_started.extend(self.queue.not_started());
        self.update_outputs();
        self.save_if_dirty().await;
        self.compact().await;
        let throttled = self.throttled.lock().map(|t| t.clone()).unwrap_or_else(|p| p.into_inner().clone());
        ApplyOutcome {
            succeeded: self.succeeded,
            failed: self.failed,
            skipped: self.skipped,
            not_started,
            aborted: self.aborted,
            interrupted: self.interrupted,
            throttled,
            state_error: self.state_error,
            left_behind: Vec::new(),
            state: self.state,
        }
    }
}

fn panic_message(e: JoinError) -> String {
    let payload = e.into_panic();
    let text = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    format!("the step panicked: {text}")
}
