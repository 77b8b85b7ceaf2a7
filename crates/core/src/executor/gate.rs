//! Health gates: a container step is done when the engine says the container is healthy, not when
//! the create call returned. Dependents (the master after genesis, relays after the master) start
//! only then.

use std::time::Duration;

use tokio::time::Instant;

use super::retry::StepContext;
use super::{ApplyEvent, own_error};
use crate::plan::Gate;
use crate::provider::{ContainerEngine, ErrorKind, ProviderError};
use crate::resource::{Container, ContainerState, Health};
use crate::retry::Backoff;

/// How often a gate looks: `first`, doubling up to `max`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Poll {
    pub(crate) first: Duration,
    pub(crate) max: Duration,
}

/// Whether the gate is passed: healthy, or running with no health check to wait for.
fn passes(c: &Container) -> bool {
    c.health == Health::Healthy || (c.health == Health::None && c.state == ContainerState::Running)
}

fn describe(c: &Container) -> String {
    let state = c.state.as_str();
    let health = match c.health {
        Health::None => "none",
        Health::Starting => "starting",
        Health::Healthy => "healthy",
        Health::Unhealthy => "unhealthy",
    };
    format!("container {state}, health {health}")
}

/// Polls `engine` until `started` passes the gate; fails at `gate.timeout_ms` saying what it waited
/// for and what it last saw. Retryable inspect errors are polled through; others fail at once.
pub(crate) async fn wait_healthy(
    engine: &dyn ContainerEngine,
    started: Container,
    gate: &Gate,
    poll: Poll,
    calls: &StepContext,
) -> Result<Container, ProviderError> {
    if passes(&started) {
        return Ok(started);
    }
    let timeout = Duration::from_millis(gate.timeout_ms);
    let deadline = Instant::now() + timeout;
    let mut last_seen = describe(&started);
    let waiting = |seen: &str| ApplyEvent::Waiting {
        address: calls.address.clone(),
        what: format!("{} ({seen})", gate.waiting_for),
    };
    calls.report(waiting(&last_seen));
    let polling = async {
        let mut polls = Backoff::new(poll.first, poll.max);
        loop {
            polls.wait().await;
            match engine.inspect_container(&started).await {
                Ok(Some(now)) if passes(&now) => return Ok(now),
                Ok(Some(now)) => {
                    let seen = describe(&now);
                    if seen != last_seen {
                        calls.report(waiting(&seen));
                        last_seen = seen;
                    }
                }
                Ok(None) => {
                    return Err(own_error(
                        ErrorKind::NotFound,
                        format!("the container disappeared while waiting for {}", gate.waiting_for),
                    ));
                }
                Err(e) if e.is_retryable() => last_seen = format!("engine unreachable: {e}"),
                Err(e) => return Err(e),
            }
        }
    };
    match tokio::time::timeout_at(deadline, polling).await {
        Ok(result) => result,
        Err(_) => Err(own_error(
            ErrorKind::Transient,
            format!(
                "not healthy after {}s waiting for {}; last seen: {last_seen}",
                timeout.as_secs_f64(),
                gate.waiting_for
            ),
        )),
    }
}
