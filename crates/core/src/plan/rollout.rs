//! Rollouts: replaces of running members of one service (or cluster) in ordered batches.
//!
//! A change that replaces every relay at once takes the whole peer network down for as long as the
//! slowest relay needs to come back. So the planner splits such replaces into batches of at most
//! `max_unavailable` ([`crate::update::UpdatePolicy`]) and makes every member of batch N+1 wait for every
//! member of batch N. Because a container step is only done once its health gate passed, and a failed
//! step skips everything that waits for it, the executor's ordinary rules give exactly the rollout:
//! batch N+1 starts after batch N is healthy, and a failed batch stops what follows (`pause`). What the
//! executor needs beyond `waits_for` (start-first, rollback) is on each change ([`RolloutStep`]).
//!
//! Not part of a rollout: creates and deletes (nothing running is taken down), containers that are not
//! running anyway (repairing them costs no availability), and containers whose machine is replaced
//! (they go with the machine, in the cluster's rollout).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::actual::ActualState;
use crate::address::Address;
use crate::network::{Network, Role};
use crate::plan::{Action, Change};
use crate::resource::{Actual, ContainerSpec, ContainerState, Desired};
use crate::update::{FailureAction, MaxUnavailable, UpdateOrder, UpdatePolicy};

/// What a rollout replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutKind {
    /// Containers of one service.
    Service,
    /// Machines of one cluster (with the containers on them).
    Cluster,
}

/// One service's (or cluster's) replaces, in batches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    /// Service or cluster.
    pub kind: RolloutKind,
    /// Its name.
    pub name: String,
    /// As declared.
    pub max_unavailable: MaxUnavailable,
    /// The order declared (members that cannot follow it are named in `notes`).
    pub order: UpdateOrder,
    /// On a failed gate, as it will happen (rollback falls back to pause when it cannot be done).
    pub failure_action: FailureAction,
    /// The batches, in the order they run; each holds the addresses replaced together.
    pub batches: Vec<Vec<Address>>,
    /// Where the plan departs from the declared policy, and why.
    pub notes: Vec<String>,
}

impl Rollout {
    /// "replace relay in 9 batches of 1".
    pub fn headline(&self) -> String {
        let largest = self.batches.iter().map(Vec::len).max().unwrap_or(0);
        let kind = match self.kind {
            RolloutKind::Service => "",
            RolloutKind::Cluster => "cluster ",
        };
        let batches = if self.batches.len() == 1 { "batch" } else { "batches" };
        format!(
            "replace {kind}{} in {} {batches} of {largest} ({}, on failure {})",
            self.name,
            self.batches.len(),
            self.order.as_str(),
            self.failure_action.as_str()
        )
    }
}

/// Where one change stands in its rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutStep {
    /// The service or cluster rolled out.
    pub name: String,
    /// Its batch, from 1.
    pub batch: u32,
    /// How many batches the rollout has.
    pub batches: u32,
    /// How this member is replaced (stop-first where start-first is impossible).
    pub order: UpdateOrder,
    /// What happens when its gate fails.
    pub on_failure: FailureAction,
}

/// Whether a container is up, so that replacing it costs availability.
fn running(change: &Change) -> bool {
    matches!(&change.before, Some(Actual::Container(c))
        if matches!(c.state, ContainerState::Running | ContainerState::Restarting))
}

fn after_spec(change: &Change) -> Option<&ContainerSpec> {
    match &change.after {
        Some(Desired::Container(s)) => Some(s),
        _ => None,
    }
}

fn before_spec(change: &Change) -> Option<&ContainerSpec> {
    match &change.before {
        Some(Actual::Container(c)) => c.spec.as_ref(),
        _ => None,
    }
}

/// Why the new container cannot run beside the old one, if it cannot: both on one machine and both
/// publishing the same host ports there. Local virtual nodes publish no ports (they share one engine and
/// reach each other by DNS), so any two containers fit side by side.
fn start_first_blocked(change: &Change, actual: &ActualState) -> Option<String> {
    let (old, new) = (before_spec(change)?, after_spec(change)?);
    if old.node != new.node {
        return None;
    }
    let publishes = actual.machine(&new.node).is_none_or(|m| m.provider.capabilities().remote_engine);
    let clash: Vec<String> =
        new.ports.iter().filter(|p| old.ports.contains(p)).map(ToString::to_string).collect();
    (publishes && !clash.is_empty())
        .then(|| format!("both would publish port(s) {} on {}", clash.join(", "), new.node))
}

/// Why the old spec cannot be restored, if it cannot: unreadable labels, or sealed secret values
/// (the labels keep only their hashes).
fn rollback_blocked(change: &Change) -> Option<&'static str> {
    match before_spec(change) {
        None => Some("its previous spec is unreadable"),
        Some(s) if s.env.values().any(|v| crate::seal::is_seal(v)) => {
            Some("its previous spec holds sensitive values only as hashes")
        }
        Some(_) => None,
    }
}

/// Splits the replaces of running members into batches, records them on the changes (order, gate
/// timeout, waits), and returns the rollouts in spec order.
pub(super) fn plan_rollouts(
    network: &Network,
    actual: &ActualState,
    changes: &mut BTreeMap<Address, Change>,
) -> Vec<Rollout> {
    let replaced_machines: BTreeSet<Address> = changes
        .values()
        .filter(|c| c.action == Action::Replace && matches!(c.address, Address::Machine { .. }))
        .map(|c| c.address.clone())
        .collect();
    let mut rollouts = Vec::new();
    for cluster in &network.clusters {
        if let Some(r) = cluster_rollout(cluster, &replaced_machines, changes) {
            rollouts.push(r);
        }
    }
    for service in &network.services {
        // The genesis server is one container, protected by the chain pin; nothing to batch.
        if service.role == Role::Genesis {
            continue;
        }
        let members: Vec<Address> = changes
            .values()
            .filter(|c| c.action == Action::Replace && running(c))
            .filter(|c| matches!(&c.address, Address::Container { service: s, .. } if *s == service.name))
            .filter(|c| after_spec(c).is_none_or(|s| !replaced_machines.contains(&s.node)))
            .map(|c| c.address.clone())
            .collect();
        if members.is_empty() {
            continue;
        }
        rollouts.push(service_rollout(
            &service.name,
            service.containers,
            service.update,
            members,
            actual,
            changes,
        ));
    }
    rollouts
}

fn service_rollout(
    name: &str,
    declared: u32,
    policy: UpdatePolicy,
    members: Vec<Address>,
    actual: &ActualState,
    changes: &mut BTreeMap<Address, Change>,
) -> Rollout {
    let mut notes = Vec::new();
    let mut failure_action = policy.failure_action;
    if failure_action == FailureAction::Rollback {
        let blocked: Vec<String> = members
            .iter()
            .filter_map(|a| rollback_blocked(&changes[a]).map(|why| format!("{a} ({why})")))
            .collect();
        if !blocked.is_empty() {
            failure_action = FailureAction::Pause;
            notes.push(format!("rollback falls back to pause: cannot restore {}", blocked.join(", ")));
        }
    }
    let mut stop_first = Vec::new();
    if policy.order == UpdateOrder::StartFirst {
        for a in &members {
            if let Some(why) = start_first_blocked(&changes[a], actual) {
                stop_first.push(format!("{a} ({why})"));
            }
        }
        if !stop_first.is_empty() {
            notes.push(format!("start-first falls back to stop-first for {}", stop_first.join(", ")));
        }
    }
    let size = policy.max_unavailable.batch_size(declared.max(1)) as usize;
    let batches: Vec<Vec<Address>> = members.chunks(size).map(<[Address]>::to_vec).collect();
    let count = u32::try_from(batches.len()).unwrap_or(u32::MAX);
    for (i, batch) in batches.iter().enumerate() {
        for a in batch {
            let Some(change) = changes.get_mut(a) else { continue };
            let order =
                if policy.order == UpdateOrder::StartFirst && start_first_blocked(change, actual).is_none() {
                    UpdateOrder::StartFirst
                } else {
                    UpdateOrder::StopFirst
                };
            change.rollout = Some(RolloutStep {
                name: name.to_string(),
                batch: u32::try_from(i + 1).unwrap_or(u32::MAX),
                batches: count,
                order,
                on_failure: failure_action,
            });
            if let (Some(gate), Some(ms)) = (change.gate.as_mut(), policy.gate_timeout_ms) {
                gate.timeout_ms = ms;
            }
            if i > 0 {
                wait_for_all(change, &batches[i - 1]);
            }
        }
    }
    Rollout {
        kind: RolloutKind::Service,
        name: name.to_string(),
        max_unavailable: policy.max_unavailable,
        order: policy.order,
        failure_action,
        batches,
        notes,
    }
}

/// Machines of one cluster in batches. A batch is done when its machines and everything on them that
/// this plan rebuilds are done, so batch N+1 waits for all of those. Machines hosting what others
/// need (genesis, then master) go first: what stands on them waits for them anyway, so putting them
/// later would tie the batches in a knot.
fn cluster_rollout(
    cluster: &crate::network::Cluster,
    replaced_machines: &BTreeSet<Address>,
    changes: &mut BTreeMap<Address, Change>,
) -> Option<Rollout> {
    let mut members: Vec<(u8, Address)> = replaced_machines
        .iter()
        .filter(|a| matches!(a, Address::Machine { cluster: c, .. } if *c == cluster.name))
        .map(|a| {
            let rank = changes
                .values()
                .filter_map(after_spec)
                .filter(|s| s.node == *a)
                .map(|s| match s.role {
                    Role::Genesis => 0,
                    Role::Master => 1,
                    Role::Relay => 2,
                })
                .min()
                .unwrap_or(3);
            (rank, a.clone())
        })
        .collect();
    if members.is_empty() {
        return None;
    }
    members.sort();
    let policy = cluster.update;
    let mut notes = Vec::new();
    if policy.order == UpdateOrder::StartFirst {
        notes.push(
            "machines are replaced stop-first: the new machine takes the old one's name and address".into(),
        );
    }
    let size = policy.max_unavailable.batch_size(cluster.nodes.max(1)) as usize;
    let machines: Vec<Address> = members.into_iter().map(|(_, a)| a).collect();
    let batches: Vec<Vec<Address>> = machines.chunks(size).map(<[Address]>::to_vec).collect();
    // What each batch rebuilds: its machines and the changes standing directly on them.
    let closure: Vec<Vec<Address>> = batches
        .iter()
        .map(|batch| {
            let mut all = batch.clone();
            all.extend(
                changes
                    .values()
                    .filter(|c| c.waits_for.iter().any(|w| batch.contains(w)))
                    .filter(|c| !matches!(c.address, Address::Machine { .. }))
                    .map(|c| c.address.clone()),
            );
            all
        })
        .collect();
    let count = u32::try_from(batches.len()).unwrap_or(u32::MAX);
    for (i, batch) in batches.iter().enumerate() {
        for a in batch {
            let Some(change) = changes.get_mut(a) else { continue };
            change.rollout = Some(RolloutStep {
                name: cluster.name.clone(),
                batch: u32::try_from(i + 1).unwrap_or(u32::MAX),
                batches: count,
                order: UpdateOrder::StopFirst,
                on_failure: FailureAction::Pause,
            });
            if i > 0 {
                wait_for_all(change, &closure[i - 1]);
            }
        }
    }
    Some(Rollout {
        kind: RolloutKind::Cluster,
        name: cluster.name.clone(),
        max_unavailable: policy.max_unavailable,
        order: policy.order,
        failure_action: FailureAction::Pause,
        batches,
        notes,
    })
}

fn wait_for_all(change: &mut Change, previous: &[Address]) {
    let mut waits: BTreeSet<Address> = change.waits_for.drain(..).collect();
    waits.extend(previous.iter().filter(|a| **a != change.address).cloned());
    change.waits_for = waits.into_iter().collect();
}
