//! Plans: the difference between desired and actual, as data.
//!
//! A [`Plan`] is everything apply needs and nothing more: the changes, each with its reasons and the
//! changes it waits for, plus the snapshot it was computed from (so a stale plan can be refused). Apply
//! executes exactly the plan's changes; it never re-plans.

use serde::{Deserialize, Serialize};

use crate::address::Address;
use crate::network::ChainId;
use crate::resource::{Actual, Desired};

/// The version of the plan file and `plan --json` format. Bumped on any incompatible change.
pub const FORMAT_VERSION: u32 = 1;

/// What a change does to one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Nothing to do (never stored in [`Plan::changes`]; counted in [`Plan::unchanged`]).
    NoOp,
    /// `+` make it.
    Create,
    /// `~` change it in place.
    Update,
    /// `-/+` delete it, then make it again.
    Replace,
    /// `-` delete it.
    Delete,
}

impl Action {
    /// Terraform's symbol for the action.
    pub fn symbol(self) -> &'static str {
        match self {
            Action::NoOp => " ",
            Action::Create => "+",
            Action::Update => "~",
            Action::Replace => "-/+",
            Action::Delete => "-",
        }
    }
}

/// Why a change is in the plan: one field, before and after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    /// The field (`size`, `env.CHAIN_ID`, `tags`, `state`, `placement`).
    pub field: String,
    /// Its value now (`None` = absent).
    pub before: Option<String>,
    /// Its value wanted (`None` = absent).
    pub after: Option<String>,
    /// Whether this difference alone forces a replace.
    pub forces_replace: bool,
}

impl Reason {
    /// A reason that is a change of one field.
    pub fn field(
        field: impl Into<String>,
        before: Option<String>,
        after: Option<String>,
        forces_replace: bool,
    ) -> Self {
        Reason { field: field.into(), before, after, forces_replace }
    }
}

/// Which layer a plan covers (`--only`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// Firewalls, machines, stable IPs.
    Machines,
    /// Containers.
    Containers,
}

/// A health gate a step must pass before it counts as done (and its dependents may start).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gate {
    /// What is awaited, for progress output: "genesis serving chain 3fa1…".
    pub waiting_for: String,
    /// How long to wait before the step fails, in milliseconds.
    pub timeout_ms: u64,
    /// Relays that must be peered with it again before the step is done: set on a master replaced
    /// while its relays keep running, so an upgrade of the master reports success only once the
    /// relays reconnected (they do so by themselves, with backoff). Read from the master's own health
    /// check output; an image whose probe does not report its relays is not waited for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relays: Option<u32>,
}

/// One change to one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The resource.
    pub address: Address,
    /// What happens to it.
    pub action: Action,
    /// Why, field by field (a create or delete has one reason saying so).
    pub reasons: Vec<Reason>,
    /// What exists now (`None` for a create).
    pub before: Option<Actual>,
    /// What is wanted (`None` for a delete).
    pub after: Option<Desired>,
    /// Changes in this plan that must finish first. Deletes already point the reverse way.
    pub waits_for: Vec<Address>,
    /// Health gate after the step (containers).
    pub gate: Option<Gate>,
    /// Where the change stands in a rollout, when it replaces a running member of a service or
    /// cluster ([`Plan::rollouts`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStep>,
}

/// What the plan was computed from; apply refuses the plan when this no longer holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanBase {
    /// State lineage (`None` when there was no state).
    pub lineage: Option<String>,
    /// State serial at plan time.
    pub serial: u64,
    /// Digest of the refreshed actual state (`None` when planned with `--refresh=false`).
    pub actual_digest: Option<String>,
}

/// Counts by action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Creates.
    pub create: usize,
    /// Updates.
    pub update: usize,
    /// Replaces.
    pub replace: usize,
    /// Deletes.
    pub delete: usize,
}

/// A plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// Network name.
    pub network: String,
    /// The chain ID this plan serves (the pinned one).
    pub chain_id: ChainId,
    /// The layer the plan is restricted to, if any.
    pub only: Option<Layer>,
    /// Changes, in address order.
    pub changes: Vec<Change>,
    /// Resources with nothing to do.
    pub unchanged: usize,
    /// Everything refresh saw, so apply can resolve unchanged dependencies (the machine an added
    /// container lands on, the firewall a new machine joins).
    pub prior: Vec<Actual>,
    /// What the plan was computed from.
    pub base: PlanBase,
    /// Replaces of running members, per service or cluster, in ordered batches. Their order is also in
    /// the changes' `waits_for`, so the executor needs nothing else to run them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollouts: Vec<Rollout>,
}

impl Plan {
    /// Counts by action.
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for c in &self.changes {
            match c.action {
                Action::Create => s.create += 1,
                Action::Update => s.update += 1,
                Action::Replace => s.replace += 1,
                Action::Delete => s.delete += 1,
                Action::NoOp => {}
            }
        }
        s
    }

    /// Whether applying would change anything.
    pub fn has_changes(&self) -> bool {
        !self.changes.is_empty()
    }

    /// The change for `address`.
    pub fn change(&self, address: &Address) -> Option<&Change> {
        self.changes.iter().find(|c| &c.address == address)
    }
}

pub mod diff;
pub mod file;
mod join;
mod planner;
mod rollout;

pub use rollout::{Rollout, RolloutKind, RolloutStep};

pub use planner::{
    GATE_TIMEOUT_MS, PlanError, PlanOptions, Planned, Remembered, idempotency_key, layer_of, plan,
};

#[cfg(test)]
pub(crate) mod tests;
