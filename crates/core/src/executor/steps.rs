//! What each change means in provider calls.
//!
//! A change is turned into a [`Work`] by [`prepare`] in the coordinator, which alone reads the live
//! view (what exists now: the plan's prior, updated by every finished step); the work then runs in its
//! own task with everything it needs owned, so steps never share mutable data.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use super::gate::{self, Poll};
use super::own_error;
use super::retry::{Retries, StepContext};
use crate::address::Address;
use crate::network::{ProviderKind, Role};
use crate::plan::{Action, Change, Gate, Plan};
use crate::provider::{
    ContainerContext, CreateContext, EngineConnector, ErrorKind, MachineProvider, ProviderError, Providers,
};
use crate::resource::{
    Actual, Container, ContainerSpec, Desired, Firewall, FirewallSpec, Machine, MachineSpec, StableIp,
    StableIpSpec,
};
use crate::update::{FailureAction, UpdateOrder};

/// What exists now, by address.
pub(crate) type Live = BTreeMap<Address, Actual>;

type SharedProvider = Arc<dyn MachineProvider>;

/// The provider calls of one change, with everything they need.
// Variant sizes differ by a few hundred bytes; a `Work` lives only while its step runs (at most
// `parallelism` at once), so boxing variants would buy nothing but indirection.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Work {
    Machine {
        remove: Option<(SharedProvider, Machine)>,
        update: Option<(SharedProvider, Machine, MachineSpec)>,
        create: Option<(SharedProvider, MachineSpec, CreateContext)>,
    },
    Firewall {
        remove: Option<(SharedProvider, Firewall)>,
        update: Option<(SharedProvider, Firewall, FirewallSpec)>,
        create: Option<(SharedProvider, FirewallSpec)>,
    },
    StableIp {
        remove: Option<(SharedProvider, StableIp)>,
        attach: Option<(SharedProvider, StableIp, Machine)>,
        create: Option<(SharedProvider, StableIpSpec, Machine)>,
    },
    Container {
        engines: Arc<dyn EngineConnector>,
        /// The old container and the machine whose engine runs it.
        remove: Option<(Machine, Container)>,
        create: Option<NewContainer>,
        /// Start the new container before removing the old one (a start-first rollout).
        start_first: bool,
        /// The previous spec to put back if the new one fails (a rollout with `rollback`); boxed, as
        /// few steps carry one.
        rollback: Option<Box<(ContainerSpec, ContainerContext, Gate)>>,
    },
}

/// How a step ended.
pub(crate) struct StepResult {
    /// What exists at the address now (`None`: nothing), or why the step failed.
    pub(crate) result: Result<Option<Actual>, ProviderError>,
    /// On failure: whether the old object was already removed (a replace that failed halfway).
    pub(crate) old_removed: bool,
    /// On failure: what a rollback put back at the address (the previous spec, healthy).
    pub(crate) restored: Option<Actual>,
}

/// The provider registered for `kind`.
pub(crate) fn provider_of(
    providers: &Providers,
    kind: ProviderKind,
) -> Result<SharedProvider, ProviderError> {
    providers
        .machines(kind)
        .cloned()
        .ok_or_else(|| own_error(ErrorKind::Invalid, format!("no {kind} provider is registered")))
}

fn live_machine(live: &Live, address: &Address) -> Result<Machine, ProviderError> {
    match live.get(address) {
        Some(Actual::Machine(m)) => Ok(m.clone()),
        _ => Err(own_error(
            ErrorKind::NotFound,
            format!("{address} does not exist (its own step failed, or the plan does not create it)"),
        )),
    }
}

/// The provider kind of the machine at `machine`, from the live view or the plan.
pub(crate) fn machine_kind(plan: &Plan, live: &Live, machine: &Address) -> Option<ProviderKind> {
    if let Some(Actual::Machine(m)) = live.get(machine) {
        return Some(m.provider);
    }
    let change = plan.change(machine)?;
    match (&change.after, &change.before) {
        (Some(Desired::Machine(s)), _) => Some(s.provider),
        (_, Some(Actual::Machine(m))) => Some(m.provider),
        _ => None,
    }
}

/// The provider of a stable IP change: the spec's, else the one recorded with it, else its machine's
/// (states written before stable IPs recorded their provider).
pub(crate) fn stable_ip_kind(plan: &Plan, live: &Live, change: &Change) -> Option<ProviderKind> {
    if let Some(Desired::StableIp(s)) = &change.after {
        return Some(s.provider);
    }
    if let Some(Actual::StableIp(StableIp { provider: Some(kind), .. })) = &change.before {
        return Some(*kind);
    }
    machine_kind(plan, live, &change.address.machine_of_ip()?)
}

/// Whether a container spec answers to `name` (a service name, an alias, or a role).
fn answers_to(spec: &ContainerSpec, name: &str) -> bool {
    spec.names().any(|n| n == name)
}

/// The public address of the machine at `machine`: its stable IP if it has one, else its public IP.
pub(crate) fn public_address(live: &Live, machine: &Address) -> Option<String> {
    let stable = live.values().find_map(|a| match a {
        Actual::StableIp(ip) if ip.address.machine_of_ip().as_ref() == Some(machine) => Some(ip.ip.clone()),
        _ => None,
    });
    stable.or_else(|| match live.get(machine) {
        Some(Actual::Machine(m)) => m.public_ip.clone(),
        _ => None,
    })
}

/// The machine hosting the container that answers to `name`: an existing one first (its spec as
/// read back from the engine), else where the plan places it.
pub(crate) fn host_of(plan: &Plan, live: &Live, name: &str) -> Option<Address> {
    let existing = live.values().find_map(|a| match a {
        Actual::Container(c) => c.spec.as_ref().filter(|s| answers_to(s, name)).map(|s| s.node.clone()),
        _ => None,
    });
    existing.or_else(|| {
        plan.changes.iter().find_map(|c| match &c.after {
            Some(Desired::Container(s)) if answers_to(s, name) => Some(s.node.clone()),
            _ => None,
        })
    })
}

/// The public address of the machine hosting role `role`, for outputs.
pub(crate) fn role_host(plan: &Plan, live: &Live, role: Role) -> Option<String> {
    public_address(live, &host_of(plan, live, role.as_str())?)
}

/// Stable name → address for the names a container needs. A name no machine can be found for is
/// left out: engines with shared DNS (local virtual nodes) resolve it themselves.
fn hosts_for(plan: &Plan, live: &Live, spec: &ContainerSpec) -> BTreeMap<String, String> {
    let mut hosts = BTreeMap::new();
    for name in &spec.needs {
        match host_of(plan, live, name).and_then(|m| public_address(live, &m)) {
            Some(ip) => {
                hosts.insert(name.clone(), ip);
            }
            None => tracing::debug!(container = %spec.address, "no public address known for `{name}`"),
        }
    }
    hosts
}

fn kind_mismatch(change: &Change) -> ProviderError {
    own_error(ErrorKind::Invalid, format!("the change of {} mixes resource kinds", change.address))
}

/// Turns `change` into provider calls, resolving what it depends on from the live view.
///
/// # Errors
/// When something the change needs does not exist (a dependency whose step failed but which the plan
/// did not list in `waits_for`), or no provider is registered for it.
pub(crate) fn prepare(
    change: &Change,
    plan: &Plan,
    live: &Live,
    providers: &Providers,
) -> Result<Work, ProviderError> {
    let action = change.action;
    let removes = matches!(action, Action::Replace | Action::Delete);
    let creates = matches!(action, Action::Create | Action::Replace);
    match (&change.before, &change.after, &change.address) {
        (before, after, Address::Machine { .. }) => {
            let before = match before {
                Some(Actual::Machine(m)) => Some(m),
                None => None,
                Some(_) => return Err(kind_mismatch(change)),
            };
            let after = match after {
                Some(Desired::Machine(s)) => Some(s),
                None => None,
                Some(_) => return Err(kind_mismatch(change)),
            };
            let remove = match before.filter(|_| removes) {
                Some(m) => Some((provider_of(providers, m.provider)?, m.clone())),
                None => None,
            };
            let update = match (action, before, after) {
                (Action::Update, Some(m), Some(s)) => {
                    Some((provider_of(providers, s.provider)?, m.clone(), s.clone()))
                }
                _ => None,
            };
            let create = match after.filter(|_| creates) {
                Some(s) => {
                    let firewall = match &s.firewall {
                        Some(fw) => match live.get(fw) {
                            Some(Actual::Firewall(f)) => Some(f.clone()),
                            _ => {
                                return Err(own_error(
                                    ErrorKind::NotFound,
                                    format!("{fw}, which {} joins, does not exist", s.address),
                                ));
                            }
                        },
                        None => None,
                    };
                    let ctx = CreateContext { firewall, pki: providers.pki().cloned() };
                    Some((provider_of(providers, s.provider)?, s.clone(), ctx))
                }
                None => None,
            };
            Ok(Work::Machine { remove, update, create })
        }
        (before, after, Address::Firewall { provider, .. }) => {
            let api = provider_of(providers, *provider)?;
            let before = match before {
                Some(Actual::Firewall(f)) => Some(f),
                None => None,
                Some(_) => return Err(kind_mismatch(change)),
            };
            let after = match after {
                Some(Desired::Firewall(s)) => Some(s),
                None => None,
                Some(_) => return Err(kind_mismatch(change)),
            };
            Ok(Work::Firewall {
                remove: before.filter(|_| removes).map(|f| (api.clone(), f.clone())),
                update: match (action, before, after) {
                    (Action::Update, Some(f), Some(s)) => Some((api.clone(), f.clone(), s.clone())),
                    _ => None,
                },
                create: after.filter(|_| creates).map(|s| (api.clone(), s.clone())),
            })
        }
        (before, after, Address::StableIp { .. }) => {
            let kind = stable_ip_kind(plan, live, change).ok_or_else(|| {
                own_error(ErrorKind::Invalid, format!("cannot tell which provider holds {}", change.address))
            })?;
            let api = provider_of(providers, kind)?;
            let before = match before {
                Some(Actual::StableIp(ip)) => Some(ip),
                None => None,
                Some(_) => return Err(kind_mismatch(change)),
            };
            let after = match after {
                Some(Desired::StableIp(s)) => Some(s),
                None => None,
                Some(_) => return Err(kind_mismatch(change)),
            };
            let attach = match (action, before, after) {
                (Action::Update, Some(ip), Some(s)) => {
                    Some((api.clone(), ip.clone(), live_machine(live, &s.machine)?))
                }
                _ => None,
            };
            let create = match after.filter(|_| creates) {
                Some(s) => Some((api.clone(), s.clone(), live_machine(live, &s.machine)?)),
                None => None,
            };
            Ok(Work::StableIp {
                remove: before.filter(|_| removes).map(|ip| (api.clone(), ip.clone())),
                attach,
                create,
            })
        }
        (before, after, Address::Container { .. }) => {
            let engines = providers.engines().cloned().ok_or_else(|| {
                own_error(ErrorKind::Invalid, "no container engine connector is registered")
            })?;
            let before = match before {
                Some(Actual::Container(c)) => Some(c),
                None => None,
                Some(_) => return Err(kind_mismatch(change)),
            };
            let after = match after {
                Some(Desired::Container(s)) => Some(s),
                None => None,
                Some(_) => return Err(kind_mismatch(change)),
            };
            if action == Action::Update {
                return Err(own_error(
                    ErrorKind::Invalid,
                    format!("{}: containers are replaced, never updated in place", change.address),
                ));
            }
            let remove = match before.filter(|_| removes) {
                Some(c) => {
                    let node =
                        c.spec.as_ref().map(|s| &s.node).or(after.map(|s| &s.node)).ok_or_else(|| {
                            own_error(
                                ErrorKind::Invalid,
                                format!(
                                    "cannot tell which machine runs {} (its labels are unreadable)",
                                    c.address
                                ),
                            )
                        })?;
                    // A machine that is gone took its containers with it: nothing left to remove.
                    live_machine(live, node).ok().map(|m| (m, c.clone()))
                }
                None => None,
            };
            let step = change.rollout.as_ref();
            let start_first = step.is_some_and(|r| r.order == UpdateOrder::StartFirst) && remove.is_some();
            let create = match after.filter(|_| creates) {
                Some(s) => {
                    let ctx = ContainerContext {
                        node: live_machine(live, &s.node)?,
                        hosts: hosts_for(plan, live, s),
                        beside: remove.as_ref().filter(|_| start_first).map(|(_, c)| Box::new(c.clone())),
                    };
                    Some((s.clone(), ctx, change.gate.clone()))
                }
                None => None,
            };
            let rollback = match (step, before.and_then(|c| c.spec.as_ref()), &change.gate) {
                (Some(r), Some(old), Some(gate))
                    if r.on_failure == FailureAction::Rollback && !start_first =>
                {
                    let ctx = ContainerContext {
                        node: live_machine(live, &old.node)?,
                        hosts: hosts_for(plan, live, old),
                        beside: None,
                    };
                    let gate = Gate {
                        waiting_for: format!("{} back on its previous spec", old.name),
                        timeout_ms: gate.timeout_ms,
                        relays: None,
                    };
                    Some(Box::new((old.clone(), ctx, gate)))
                }
                _ => None,
            };
            Ok(Work::Container { engines, remove, create, start_first, rollback })
        }
    }
}

/// Who retries calls to `api`: the provider itself when it says so, else the executor.
fn retries(api: &SharedProvider) -> Retries {
    if api.retries_requests() { Retries::Below } else { Retries::Here }
}

/// Removes the old object (if any), then creates the new one (if any); a failure after the removal
/// says so, because the old object is then gone from the world and must go from the state.
async fn remove_then_create(
    remove: Option<impl Future<Output = Result<(), ProviderError>>>,
    create: Option<impl Future<Output = Result<Actual, ProviderError>>>,
) -> StepResult {
    let mut old_removed = false;
    if let Some(remove) = remove {
        if let Err(e) = remove.await {
            return StepResult { result: Err(e), old_removed: false, restored: None };
        }
        old_removed = true;
    }
    match create {
        Some(create) => StepResult { result: create.await.map(Some), old_removed, restored: None },
        None => StepResult { result: Ok(None), old_removed, restored: None },
    }
}

fn updated(result: Result<Actual, ProviderError>) -> StepResult {
    StepResult { result: result.map(Some), old_removed: false, restored: None }
}

impl Work {
    /// Performs the calls, each retried as `calls` says.
    pub(crate) async fn run(self, calls: &StepContext, poll: Poll) -> StepResult {
        match self {
            Work::Machine { remove, update, create } => {
                if let Some((api, current, spec)) = update {
                    return updated(
                        calls
                            .call(retries(&api), || api.update_machine(&current, &spec))
                            .await
                            .map(Actual::Machine),
                    );
                }
                let remove =
                    remove.as_ref().map(|(api, m)| calls.call(retries(api), move || api.delete_machine(m)));
                let create = create.as_ref().map(|(api, spec, ctx)| async move {
                    calls.call(retries(api), || api.create_machine(spec, ctx)).await.map(Actual::Machine)
                });
                remove_then_create(remove, create).await
            }
            Work::Firewall { remove, update, create } => {
                if let Some((api, current, spec)) = update {
                    return updated(
                        calls
                            .call(retries(&api), || api.update_firewall(&current, &spec))
                            .await
                            .map(Actual::Firewall),
                    );
                }
                let remove =
                    remove.as_ref().map(|(api, f)| calls.call(retries(api), move || api.delete_firewall(f)));
                let create = create.as_ref().map(|(api, spec)| async move {
                    calls.call(retries(api), || api.create_firewall(spec)).await.map(Actual::Firewall)
                });
                remove_then_create(remove, create).await
            }
            Work::StableIp { remove, attach, create } => {
                if let Some((api, current, machine)) = attach {
                    return updated(
                        calls
                            .call(retries(&api), || api.attach_stable_ip(&current, &machine))
                            .await
                            .map(Actual::StableIp),
                    );
                }
                let remove = remove
                    .as_ref()
                    .map(|(api, ip)| calls.call(retries(api), move || api.delete_stable_ip(ip)));
                let create = create.as_ref().map(|(api, spec, machine)| async move {
                    calls
                        .call(retries(api), || api.create_stable_ip(spec, machine))
                        .await
                        .map(Actual::StableIp)
                });
                remove_then_create(remove, create).await
            }
            Work::Container { engines, remove, create, start_first, rollback } => {
                let containers = Containers { engines: engines.as_ref(), calls, poll };
                match (remove, create) {
                    (Some(old), Some(new)) if start_first => containers.start_first(old, new).await,
                    (remove, create) => containers.stop_first(remove, create, rollback).await,
                }
            }
        }
    }
}

/// A container's new spec: what to create, where, and the gate it must pass.
type NewContainer = (ContainerSpec, ContainerContext, Option<Gate>);

/// The container calls of one step.
struct Containers<'a> {
    engines: &'a dyn EngineConnector,
    calls: &'a StepContext,
    poll: Poll,
}

impl Containers<'_> {
    async fn remove(&self, node: &Machine, container: &Container) -> Result<(), ProviderError> {
        let engine = self.calls.call(Retries::Here, || self.engines.engine_for(node)).await?;
        self.calls.call(Retries::Here, || engine.remove_container(container)).await
    }

    /// Creates and starts `spec`, then waits for its gate. On failure, also returns the container that
    /// was made (if any), so the caller can take it away again.
    async fn start(
        &self,
        spec: &ContainerSpec,
        ctx: &ContainerContext,
        gate: Option<&Gate>,
    ) -> Result<Container, (Option<Container>, ProviderError)> {
        let engine = self
            .calls
            .call(Retries::Here, || self.engines.engine_for(&ctx.node))
            .await
            .map_err(|e| (None, e))?;
        let started = self
            .calls
            .call(Retries::Here, || engine.create_container(spec, ctx))
            .await
            .map_err(|e| (None, e))?;
        match gate {
            Some(gate) => {
                let made = started.clone();
                let waiting = gate::wait_healthy(engine.as_ref(), started, gate, self.poll, self.calls);
                self.calls.within_deadline(waiting).await.and_then(|r| r).map_err(|e| (Some(made), e))
            }
            None => Ok(started),
        }
    }

    /// Takes away a container that failed its gate; a failure here is only logged (a later apply sees
    /// it as a container with the wrong spec and replaces it).
    async fn discard(&self, node: &Machine, made: Option<Container>) {
        if let Some(made) = made
            && let Err(e) = self.remove(node, &made).await
        {
            tracing::warn!(container = %made.address, error = %e, "could not remove a container that failed its gate");
        }
    }

    /// Old one out, new one in; with a rollback spec, a new one that fails is replaced by the old spec.
    async fn stop_first(
        &self,
        remove: Option<(Machine, Container)>,
        create: Option<NewContainer>,
        rollback: Option<Box<(ContainerSpec, ContainerContext, Gate)>>,
    ) -> StepResult {
        let mut old_removed = false;
        if let Some((node, old)) = &remove {
            if let Err(e) = self.remove(node, old).await {
                return StepResult { result: Err(e), old_removed: false, restored: None };
            }
            old_removed = true;
        }
        let Some((spec, ctx, gate)) = create else {
            return StepResult { result: Ok(None), old_removed, restored: None };
        };
        let (made, error) = match self.start(&spec, &ctx, gate.as_ref()).await {
            Ok(ready) => {
                return StepResult {
                    result: Ok(Some(Actual::Container(ready))),
                    old_removed,
                    restored: None,
                };
            }
            Err(failed) => failed,
        };
        let Some((old_spec, old_ctx, old_gate)) = rollback.map(|b| *b) else {
            return StepResult { result: Err(error), old_removed, restored: None };
        };
        self.discard(&ctx.node, made).await;
        match self.start(&old_spec, &old_ctx, Some(&old_gate)).await {
            Ok(back) => {
                let error = ProviderError {
                    message: format!("{}; rolled back to the previous spec", error.message),
                    ..error
                };
                StepResult { result: Err(error), old_removed, restored: Some(Actual::Container(back)) }
            }
            Err((_, e)) => {
                let error = ProviderError {
                    message: format!("{}; the rollback to the previous spec failed too: {e}", error.message),
                    ..error
                };
                StepResult { result: Err(error), old_removed, restored: None }
            }
        }
    }

    /// New one beside the old one; the old one goes once the new one passed its gate. A new one that
    /// fails is taken away and the old one keeps running, untouched.
    async fn start_first(&self, old: (Machine, Container), new: NewContainer) -> StepResult {
        let (old_node, old) = old;
        let (spec, ctx, gate) = new;
        match self.start(&spec, &ctx, gate.as_ref()).await {
            Ok(ready) => match self.remove(&old_node, &old).await {
                Ok(()) => StepResult {
                    result: Ok(Some(Actual::Container(ready))),
                    old_removed: true,
                    restored: None,
                },
                Err(e) => {
                    // Both run now; the state keeps the old one, and the next plan sees the new one too.
                    let message =
                        format!("{} (the new container {} is running beside it)", e.message, ready.id);
                    StepResult {
                        result: Err(ProviderError { message, ..e }),
                        old_removed: false,
                        restored: None,
                    }
                }
            },
            Err((made, error)) => {
                self.discard(&ctx.node, made).await;
                let message = format!("{}; the previous container keeps running", error.message);
                StepResult {
                    result: Err(ProviderError { message, ..error }),
                    old_removed: false,
                    restored: None,
                }
            }
        }
    }
}
