//! The whole workflow as a library: refresh → plan → (confirm) → apply, holding the state lock.
//!
//! Everything the CLI does with infrastructure goes through [`Deployment`], so embedding tools get the
//! same guarantees: a plan is data, apply executes exactly it, a stale plan is refused, and the state
//! lock is held from the refresh that a plan is based on until the apply that executes it.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use peerfleet_core::actual::ActualState;
use peerfleet_core::executor::{self, ApplyOptions, ApplyOutcome, ExecutorError, Interrupt, Reporter};
use peerfleet_core::network::{ChainId, Network};
use peerfleet_core::plan::{self, Layer, Plan, PlanError, PlanOptions, Planned, Remembered};
use peerfleet_core::provider::Providers;
use peerfleet_core::refresh::{self, RefreshError};
use peerfleet_core::resource::{Actual, Desired};
use peerfleet_core::seal::{self, SealKey};
use peerfleet_core::state::{
    LocalStateFile, LockOptions, Refreshed, State, StateBackend, StateError, keep_renewed,
};

use crate::connect::{self, ConnectError, ConnectOptions, Connected};

/// What to plan.
#[derive(Debug, Clone, Default)]
pub struct PlanRequest {
    /// Restrict to one layer.
    pub only: Option<Layer>,
    /// Plan against what state remembers, without asking providers.
    pub no_refresh: bool,
    /// Plan the removal of everything.
    pub destroy: bool,
    /// The current chain ID, to allow replacing or destroying the genesis server.
    pub replace_genesis: Option<ChainId>,
}

/// A plan with what it was computed from.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The plan, warnings and placement.
    pub planned: Planned,
    /// The state it was planned against.
    pub state: State,
    /// What refresh found (or what state remembered).
    pub actual: ActualState,
}

/// How to apply.
#[derive(Debug, Clone)]
pub struct ApplyRequest {
    /// What to plan.
    pub plan: PlanRequest,
    /// A saved plan (from `plan --out`) that must still hold; it is executed exactly.
    pub saved: Option<Plan>,
    /// Steps at once.
    pub parallelism: usize,
    /// How long to wait for another run's lock.
    pub lock_timeout: std::time::Duration,
    /// How long a leased (S3) lock stays valid if this run stops renewing it: a run killed mid-apply
    /// blocks others for at most this long. Renewed every third of it.
    pub lock_lease: std::time::Duration,
}

impl Default for ApplyRequest {
    fn default() -> Self {
        ApplyRequest {
            plan: PlanRequest::default(),
            saved: None,
            parallelism: 10,
            lock_timeout: std::time::Duration::ZERO,
            lock_lease: LockOptions::default().lease,
        }
    }
}

/// What an apply did.
#[derive(Debug)]
pub enum Applied {
    /// The plan had no changes: nothing ran.
    NothingToDo(Box<Prepared>),
    /// The person (or the confirmation callback) declined.
    Declined(Box<Prepared>),
    /// The plan ran; see the outcome for failures.
    Ran(Box<Prepared>, Box<ApplyOutcome>),
}

/// Why the workflow stopped before changing anything.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeployError {
    /// State could not be read, written or locked.
    #[error(transparent)]
    State(#[from] StateError),
    /// Providers could not be built.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// Refresh failed.
    #[error(transparent)]
    Refresh(#[from] RefreshError),
    /// No plan could be made.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The executor refused to start.
    #[error(transparent)]
    Executor(#[from] ExecutorError),
    /// A destroy found nothing left to delete, but could not remove what the network shares.
    #[error("the destroy left behind: {}", .0.join("; "))]
    LeftBehind(Vec<String>),
    /// A saved plan no longer matches what exists.
    #[error("the saved plan is stale: {0}. Run `peerfleet plan` again")]
    Stale(String),
    /// `status` of a network that was never applied: no state, and no machine carries its tags.
    #[error(
        "network `{network}` has not been deployed: {state} holds no state and no machine carries its tags"
    )]
    NotDeployed {
        /// The network.
        network: String,
        /// Where its state would be.
        state: String,
    },
}

/// One network, its state store, and how to reach its providers.
#[derive(Clone)]
pub struct Deployment {
    network: Network,
    store: Arc<dyn StateBackend>,
    connect: ConnectOptions,
    /// Providers given by the embedder, used instead of building them from the environment.
    providers: Option<Providers>,
}

impl std::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployment")
            .field("network", &self.network.name)
            .field("store", &self.store.location())
            .field("connect", &self.connect)
            .finish()
    }
}

impl Deployment {
    /// A deployment of `network` whose state lives in the local file at `state_path`.
    pub fn new(network: Network, state_path: impl Into<PathBuf>) -> Self {
        Self::with_store(network, Arc::new(LocalStateFile::new(state_path)))
    }

    /// Uses `providers` instead of building them from the environment: for embedders with providers
    /// of their own, and for the in-memory test world. No reference node image is built then; the
    /// containers' image is whatever the plan would use without one.
    pub fn with_providers(mut self, providers: Providers) -> Self {
        self.providers = Some(providers);
        self
    }

    /// A deployment of `network` whose state lives in `store` (a local file, S3, memory).
    pub fn with_store(network: Network, store: Arc<dyn StateBackend>) -> Self {
        Deployment { network, store, connect: ConnectOptions::default(), providers: None }
    }

    /// Lets the node binary be built with `cargo build --example peerfleet-node` in `dir`
    /// when it is not installed beside the running executable (examples run from the source tree
    /// pass theirs).
    pub fn with_workspace(mut self, dir: impl Into<PathBuf>) -> Self {
        self.connect.workspace_dir = Some(dir.into());
        self
    }

    /// Builds the reference node image from this `peerfleet-node` binary. For programs that embed
    /// the crates: `cargo install peerfleet` installs the binary (its path, or `PEERFLEET_NODE_BIN`,
    /// works as well); without either, the binary is looked for beside the running program.
    pub fn with_node_binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.connect.node_binary = Some(path.into());
        self
    }

    /// The network.
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// The state store.
    pub fn store(&self) -> &dyn StateBackend {
        self.store.as_ref()
    }

    pub(crate) fn connect_options(&self, only: Option<Layer>) -> ConnectOptions {
        ConnectOptions { containers: only != Some(Layer::Machines), ..self.connect.clone() }
    }

    /// Builds the providers this deployment needs, against `state`.
    pub async fn connect(&self, state: &State, only: Option<Layer>) -> Result<Connected, DeployError> {
        self.connect_with(state, &self.connect_options(only)).await
    }

    /// [`Deployment::connect`] with `options` (the embedder's providers, when given, win).
    pub(crate) async fn connect_with(
        &self,
        state: &State,
        options: &ConnectOptions,
    ) -> Result<Connected, DeployError> {
        if let Some(providers) = &self.providers {
            return Ok(Connected { providers: providers.clone(), reference_image: None, local: None });
        }
        Ok(connect::connect(&self.network, state, options).await?)
    }

    /// Loads the state and claims it for this network: another network's state is refused before
    /// anything is planned from it.
    pub(crate) async fn load_state(&self) -> Result<State, DeployError> {
        let mut state = self.store.load().await?;
        state.claim(&self.network.name).map_err(|kind| StateError::new(self.store.location(), kind))?;
        Ok(state)
    }

    /// Plans without locking (a read-only look, like `peerfleet plan`).
    pub async fn plan(&self, request: &PlanRequest) -> Result<Prepared, DeployError> {
        let state = self.load_state().await?;
        let connected =
            if request.no_refresh { None } else { Some(self.connect(&state, request.only).await?) };
        self.plan_with(state, connected.as_ref(), request).await
    }

    async fn plan_with(
        &self,
        state: State,
        connected: Option<&Connected>,
        request: &PlanRequest,
    ) -> Result<Prepared, DeployError> {
        let remembered: Vec<Actual> = state.resources.values().cloned().collect();
        let actual = match connected {
            Some(c) => {
                // Destroy never talks to a cloud machine's engine: its containers go with it.
                let engines = match (request.only, request.destroy) {
                    (Some(Layer::Machines), _) => refresh::Engines::None,
                    (_, true) => refresh::Engines::LocalOnly,
                    _ => refresh::Engines::All,
                };
                refresh::refresh_engines(&self.network, &c.providers, &remembered, engines).await?
            }
            None => {
                let mut actual = ActualState::default();
                remembered.into_iter().for_each(|o| actual.insert(o));
                actual.containers_listed = true;
                actual
            }
        };
        let reference_image = match connected.and_then(|c| c.reference_image.as_ref()) {
            Some(image) => Some(image.tag.clone()),
            // Without a node binary at hand, plan against the image the containers already run, so a
            // read-only plan does not report every container as changed.
            None => reference_tag_in_use(&actual),
        };
        let options = PlanOptions {
            only: request.only,
            destroy: request.destroy,
            replace_genesis: request.replace_genesis.clone(),
            reference_image,
            refreshed: connected.is_some(),
        };
        let planned = plan::plan(&self.network, &actual, &Remembered::of(&state), &options)?;
        Ok(Prepared { planned, state, actual })
    }

    /// Locks the state, refreshes, plans, asks `confirm` (when the plan has changes), and applies.
    ///
    /// With `request.saved`, the saved plan must still hold: the state is the version it was made from
    /// and a fresh plan is identical to it; otherwise nothing runs ([`DeployError::Stale`]).
    pub async fn apply(
        &self,
        request: &ApplyRequest,
        confirm: &mut (dyn FnMut(&Prepared) -> bool + Send),
        reporter: &dyn Reporter,
        interrupt: Interrupt,
    ) -> Result<Applied, DeployError> {
        let operation = if request.plan.destroy { "destroy" } else { "apply" };
        let lock_options = LockOptions {
            timeout: request.lock_timeout,
            lease: request.lock_lease,
            ..LockOptions::default()
        };
        // A leased lock (S3) is renewed in the background from here on: through refresh, the
        // confirmation prompt and every step.
        let mut lock = keep_renewed(self.store.lock(operation, &lock_options).await?);
        if let Some(abandoned) = lock.took_over() {
            tracing::warn!("took over an abandoned state lock: {abandoned}");
        }
        let result =
            self.apply_under_lock(request, lock.as_mut(), confirm, reporter, interrupt, operation).await;
        if let Err(e) = lock.release().await {
            tracing::warn!("{e}");
        }
        result
    }

    async fn apply_under_lock(
        &self,
        request: &ApplyRequest,
        lock: &mut dyn peerfleet_core::state::StateLock,
        confirm: &mut (dyn FnMut(&Prepared) -> bool + Send),
        reporter: &dyn Reporter,
        interrupt: Interrupt,
        operation: &str,
    ) -> Result<Applied, DeployError> {
        let mut state = self.load_state().await?;
        if let Some(saved) = &request.saved
            && !state.is_base_of(&saved.base)
        {
            return Err(DeployError::Stale(format!(
                "the state changed since the plan was made (plan from serial {}, state now at serial {})",
                saved.base.serial, state.serial
            )));
        }
        // Cloud machines get their engine's TLS identity from the network's own CA, made once.
        if !request.plan.destroy
            && connect::needs_ca(&self.network)
            && connect::ensure_ca(&self.network, &mut state)?
        {
            self.store.save(&mut state).await?;
        }
        // Seals need the network's key before the plan apply executes is made.
        if !request.plan.destroy && ensure_seal_key(&mut state) {
            self.store.save(&mut state).await?;
        }
        let connected = self.connect(&state, request.plan.only).await?;
        let prepared = self.plan_with(state, Some(&connected), &request.plan).await?;
        if let Some(saved) = &request.saved {
            let with_digest = saved.base.actual_digest.is_some();
            // A plan made before the network had a seal key holds unkeyed seals: compare like with like.
            let fresh = if holds_unkeyed_seals(saved) {
                forget_seal_key(&prepared.planned.plan)
            } else {
                prepared.planned.plan.clone()
            };
            let (a, b) = (comparable(saved, with_digest), comparable(&fresh, with_digest));
            if a != b {
                return Err(DeployError::Stale("what exists changed since the plan was made".into()));
            }
        }
        if !prepared.planned.plan.has_changes() {
            let mut prepared = prepared;
            // Nothing to run, but a crashed run may have left objects the state never recorded.
            let refreshed = self.refreshed(&prepared.actual, &request.plan);
            if prepared.state.heal(&refreshed, &BTreeSet::new()) {
                self.store.save(&mut prepared.state).await?;
            }
            // A destroy that found nothing left may follow one that could not remove it all.
            if request.plan.destroy {
                let left = self.remove_shared(&connected).await;
                if !left.is_empty() {
                    return Err(DeployError::LeftBehind(left));
                }
            }
            return Ok(Applied::NothingToDo(Box::new(prepared)));
        }
        if !without_stalling(|| confirm(&prepared)) {
            return Ok(Applied::Declined(Box::new(prepared)));
        }
        let plan = &prepared.planned.plan;
        let genesis = genesis_bytes(&self.network, &prepared.state, &plan.chain_id);
        let options = ApplyOptions {
            parallelism: request.parallelism.max(1),
            operation: operation.to_string(),
            genesis,
            // The executor renews the lease every third of it, as the background task does.
            lock: LockOptions { lease: request.lock_lease, ..LockOptions::default() },
            ..ApplyOptions::default()
        };
        let mut outcome = executor::apply_locked(
            plan,
            &connected.providers,
            self.store.as_ref(),
            lock,
            &options,
            reporter,
            interrupt,
        )
        .await?;
        // The executor recorded its own steps; everything else the refresh found is written back too.
        if outcome.state_error.is_none() {
            let recorded: BTreeSet<_> = plan.changes.iter().map(|c| c.address.clone()).collect();
            let refreshed = self.refreshed(&prepared.actual, &request.plan);
            if outcome.state.heal(&refreshed, &recorded)
                && let Err(e) = self.store.save(&mut outcome.state).await
            {
                outcome.state_error = Some(e);
            }
        }
        // The shared "internet" network of local nodes goes with the last node; a destroy that
        // cannot remove it has not succeeded, and says what holds it.
        if request.plan.destroy && outcome.is_success() {
            let left = self.remove_shared(&connected).await;
            outcome.left_behind.extend(left);
        }
        Ok(Applied::Ran(Box::new(prepared), Box::new(outcome)))
    }

    /// Removes what the network's local nodes share (their "internet" network); returns what is
    /// left, naming it.
    async fn remove_shared(&self, connected: &Connected) -> Vec<String> {
        let Some(local) = &connected.local else { return Vec::new() };
        match local.cleanup(&self.network.name).await {
            Ok(left) => left,
            Err(e) => vec![format!("the shared Docker network (cannot check: {e})")],
        }
    }

    /// What a refresh for `request` covered, for healing the state.
    fn refreshed<'a>(&'a self, actual: &'a ActualState, request: &PlanRequest) -> Refreshed<'a> {
        // A destroy lists containers only on engines that outlive their machines: with cloud machines
        // about, it did not see every container.
        let cloud = || {
            actual
                .objects
                .values()
                .any(|o| matches!(o, Actual::Machine(m) if m.provider.capabilities().remote_engine))
        };
        let containers = actual.containers_listed
            && request.only != Some(Layer::Machines)
            && !(request.destroy && cloud());
        Refreshed { actual, containers, spec_genesis: Some(&self.network.chain.genesis) }
    }
}

/// Makes the network's seal key when state has none (or one that does not read); true if it did.
fn ensure_seal_key(state: &mut State) -> bool {
    if state.secrets.get(seal::STATE_SECRET).and_then(SealKey::from_secret).is_some() {
        return false;
    }
    state.secrets.insert(seal::STATE_SECRET.to_string(), SealKey::generate().to_secret());
    true
}

/// Whether a (saved) plan was sealed without a key: made before the network's first apply.
fn holds_unkeyed_seals(plan: &Plan) -> bool {
    plan.changes.iter().any(|c| match &c.after {
        Some(Desired::Container(s)) => s.sealed().env.values().any(|v| v == seal::UNKEYED),
        _ => false,
    })
}

/// `plan` as it would have been sealed without a key.
fn forget_seal_key(plan: &Plan) -> Plan {
    let mut plan = plan.clone();
    for change in &mut plan.changes {
        if let Some(Desired::Container(s)) = &mut change.after {
            s.seals.values_mut().for_each(|v| *v = seal::UNKEYED.to_string());
        }
    }
    plan
}

/// The genesis bytes of `chain`: the pinned ones, or the spec's when they hash to it.
fn genesis_bytes(network: &Network, state: &State, chain: &ChainId) -> Option<Vec<u8>> {
    state
        .chain
        .as_ref()
        .filter(|pin| &pin.id == chain)
        .and_then(|pin| pin.genesis())
        .or_else(|| (&network.chain.id == chain).then(|| network.chain.genesis.clone()))
}

/// The reference image tag running containers were created from, if any.
fn reference_tag_in_use(actual: &ActualState) -> Option<String> {
    actual.objects.values().find_map(|o| match o {
        Actual::Container(c) => {
            c.spec.as_ref().map(|s| s.image.clone()).filter(|i| i.starts_with("peerfleet-node:"))
        }
        _ => None,
    })
}

/// Runs `blocking` (the confirmation prompt), which may block this thread for as long as a person
/// takes to answer. On a multi-threaded runtime the thread is handed over first (`block_in_place`),
/// so the tasks it was running move elsewhere: the background renewal of a leased lock must go on
/// while the prompt waits, or a slow "yes" would find the lock taken over. (A current-thread runtime
/// cannot do that; an embedder that prompts on one must answer within the lease.)
fn without_stalling<T>(blocking: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(blocking),
        _ => blocking(),
    }
}

/// A plan with sensitive values sealed: what a plan file holds (see `peerfleet_core::seal`).
pub fn sealed(plan: &Plan) -> Plan {
    let mut plan = plan.clone();
    for change in &mut plan.changes {
        if let Some(Desired::Container(s)) = &mut change.after {
            *s = s.sealed();
        }
        if let Some(Actual::Container(c)) = &mut change.before
            && let Some(s) = &mut c.spec
        {
            *s = s.sealed();
        }
    }
    for prior in &mut plan.prior {
        if let Actual::Container(c) = prior
            && let Some(s) = &mut c.spec
        {
            *s = s.sealed();
        }
    }
    plan
}

/// The parts of two plans that must be identical for a saved plan to still hold: each change's
/// action, reasons, target and ordering, and — when the saved plan was refreshed — the digest of what
/// existed. Runtime fields of `before` (a machine finishing its boot, a health check passing) are left
/// out on purpose; the digest leaves them out too.
fn comparable(plan: &Plan, with_digest: bool) -> String {
    let p = sealed(plan);
    let changes: Vec<_> = p
        .changes
        .iter()
        .map(|c| (&c.address, c.action, &c.reasons, &c.after, &c.waits_for, &c.gate))
        .collect();
    let digest = if with_digest { p.base.actual_digest.clone() } else { None };
    serde_json::to_string(&(&p.network, &p.chain_id, &p.only, changes, digest))
        .expect("plans always serialize")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use peerfleet_core::state::{MemoryState, StateBackend, StateErrorKind};

    use super::*;

    /// One worker thread, as on a one-core machine: a prompt that blocks it without handing it over
    /// would stop the lease renewal, and another run would take the lock over meanwhile.
    #[test]
    fn a_lease_is_renewed_while_the_confirmation_prompt_blocks() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        // Spawned, so that it runs on the one worker (the future given to `block_on` would not).
        let run = rt.spawn(async {
            let store = MemoryState::new();
            let options = LockOptions { lease: Duration::from_millis(300), ..LockOptions::default() };
            let mut lock = keep_renewed(store.lock("apply", &options).await.unwrap());
            // A person reads the plan for three leases before typing "yes".
            without_stalling(|| std::thread::sleep(Duration::from_millis(900)));
            let other = store.lock("apply", &options).await.err().expect("the lock is still held");
            assert!(matches!(other.kind(), StateErrorKind::Locked(_)), "{other}");
            lock.renew().await.unwrap();
            lock.release().await.unwrap();
        });
        rt.block_on(run).unwrap();
    }
}
