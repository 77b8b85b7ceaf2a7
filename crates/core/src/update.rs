//! How a change that replaces running things rolls out: the `[services.update]` and
//! `[clusters.update]` tables.
//!
//! The shape follows Docker Swarm's `update_config` (parallelism, `failure_action`, `order`), with
//! Kubernetes' name for the batch size: `max_unavailable` says how many containers (or machines) of one
//! service (or cluster) peerfleet may have down at once, which is what a person operating a peer
//! network reasons about. The planner turns it into ordered batches ([`crate::plan::Rollout`]); the
//! executor only follows the plan.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How many members of a service or cluster may be replaced at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaxUnavailable {
    /// At most this many (at least 1).
    Count(u32),
    /// At most this percentage (1..=100) of the declared count, rounded down, but at least 1.
    Percent(u8),
}

impl Default for MaxUnavailable {
    fn default() -> Self {
        MaxUnavailable::Count(1)
    }
}

impl MaxUnavailable {
    /// The batch size for a service or cluster of `total` members: never 0, so a rollout always moves.
    pub fn batch_size(self, total: u32) -> u32 {
        let n = match self {
            MaxUnavailable::Count(n) => n,
            MaxUnavailable::Percent(p) => {
                u32::try_from(u64::from(total) * u64::from(p) / 100).unwrap_or(u32::MAX)
            }
        };
        n.max(1)
    }
}

impl fmt::Display for MaxUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaxUnavailable::Count(n) => write!(f, "{n}"),
            MaxUnavailable::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// Whether the old member stops before its replacement starts, or after it passed its gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    /// Remove the old one, then create the new one (always possible).
    #[default]
    StopFirst,
    /// Create the new one beside the old one, remove the old one once the new one is healthy. Only
    /// where both can run at once: another node, or no host port they would both publish.
    StartFirst,
}

impl UpdateOrder {
    /// Every order, as written in specs.
    pub const ALL: [UpdateOrder; 2] = [UpdateOrder::StopFirst, UpdateOrder::StartFirst];

    /// The name as written in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateOrder::StopFirst => "stop-first",
            UpdateOrder::StartFirst => "start-first",
        }
    }
}

/// What a rollout does when a batch fails its health gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureAction {
    /// Stop there: members not reached keep running the previous spec; a later apply resumes.
    #[default]
    Pause,
    /// Put the failed batch back on the previous spec, then stop.
    Rollback,
}

impl FailureAction {
    /// Every action, as written in specs.
    pub const ALL: [FailureAction; 2] = [FailureAction::Pause, FailureAction::Rollback];

    /// The name as written in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureAction::Pause => "pause",
            FailureAction::Rollback => "rollback",
        }
    }
}

/// One service's (or cluster's) rollout settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UpdatePolicy {
    /// Batch size.
    pub max_unavailable: MaxUnavailable,
    /// Stop-first or start-first.
    pub order: UpdateOrder,
    /// Pause or roll back on a failed gate.
    pub failure_action: FailureAction,
    /// How long each replaced container may take to pass its health gate before its batch fails;
    /// `None` = the bring-up gate's timeout ([`crate::plan::GATE_TIMEOUT_MS`]).
    pub gate_timeout_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_down_but_never_to_zero() {
        assert_eq!(MaxUnavailable::Percent(50).batch_size(9), 4);
        assert_eq!(MaxUnavailable::Percent(50).batch_size(10), 5);
        assert_eq!(MaxUnavailable::Percent(10).batch_size(3), 1);
        assert_eq!(MaxUnavailable::Percent(100).batch_size(9), 9);
        assert_eq!(MaxUnavailable::Count(0).batch_size(9), 1);
        assert_eq!(MaxUnavailable::default().batch_size(9), 1);
    }
}
