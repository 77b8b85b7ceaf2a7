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
use crate::status::ProbeLine;

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

/// Polls `engine` until `started` passes the gate (healthy, then, for a master replaced under running
/// relays, reporting them peered again: [`Gate::relays`]); fails at `gate.timeout_ms` saying what it
/// waited for and what it last saw. Retryable engine errors are polled through; others fail at once.
pub(crate) async fn wait_healthy(
    engine: &dyn ContainerEngine,
    started: Container,
    gate: &Gate,
    poll: Poll,
    calls: &StepContext,
) -> Result<Container, ProviderError> {
    let timeout = Duration::from_millis(gate.timeout_ms);
    let deadline = Instant::now() + timeout;
    let healthy = until_healthy(engine, started, gate, poll, calls, deadline).await?;
    match gate.relays {
        Some(relays) if relays > 0 => {
            until_relays_peered(engine, &healthy, relays, gate, poll, calls, deadline).await?;
            Ok(healthy)
        }
        _ => Ok(healthy),
    }
}

/// What a gate last saw, reported to the progress output each time it changes.
struct Seen<'a> {
    last: String,
    gate: &'a Gate,
    calls: &'a StepContext,
}

impl<'a> Seen<'a> {
    fn new(first: String, gate: &'a Gate, calls: &'a StepContext) -> Self {
        calls.report(ApplyEvent::Waiting {
            address: calls.address.clone(),
            what: format!("{} ({first})", gate.waiting_for),
        });
        Seen { last: first, gate, calls }
    }

    fn now(&mut self, seen: String) {
        if seen != self.last {
            self.calls.report(ApplyEvent::Waiting {
                address: self.calls.address.clone(),
                what: format!("{} ({seen})", self.gate.waiting_for),
            });
            self.last = seen;
        }
    }

    /// An engine error: fatal unless retryable, then only remembered.
    fn engine_error(&mut self, e: ProviderError) -> Result<(), ProviderError> {
        if !e.is_retryable() {
            return Err(e);
        }
        self.last = format!("engine unreachable: {e}");
        Ok(())
    }

    fn disappeared(&self) -> ProviderError {
        own_error(
            ErrorKind::NotFound,
            format!("the container disappeared while waiting for {}", self.gate.waiting_for),
        )
    }

    /// The error of a gate whose time ran out: what was missing, what it waited for, what it last saw.
    fn gave_up(&self, missing: &str) -> ProviderError {
        let waited = Duration::from_millis(self.gate.timeout_ms).as_secs_f64();
        own_error(
            ErrorKind::Transient,
            format!(
                "{missing} after {waited}s waiting for {}; last seen: {}",
                self.gate.waiting_for, self.last
            ),
        )
    }
}

async fn until_healthy(
    engine: &dyn ContainerEngine,
    started: Container,
    gate: &Gate,
    poll: Poll,
    calls: &StepContext,
    deadline: Instant,
) -> Result<Container, ProviderError> {
    if passes(&started) {
        return Ok(started);
    }
    let mut seen = Seen::new(describe(&started), gate, calls);
    let polling = async {
        let mut polls = Backoff::new(poll.first, poll.max);
        loop {
            polls.wait().await;
            match engine.inspect_container(&started).await {
                Ok(Some(now)) if passes(&now) => return Ok(now),
                Ok(Some(now)) => seen.now(describe(&now)),
                Ok(None) => return Err(seen.disappeared()),
                Err(e) => seen.engine_error(e)?,
            }
        }
    };
    match tokio::time::timeout_at(deadline, polling).await {
        Ok(result) => result,
        Err(_) => Err(seen.gave_up("not healthy")),
    }
}

/// Polls the master's own health check output until it reports `relays` relays peered with it. An
/// image whose probe prints no relay count cannot be waited for: the gate passes, as before.
async fn until_relays_peered(
    engine: &dyn ContainerEngine,
    master: &Container,
    relays: u32,
    gate: &Gate,
    poll: Poll,
    calls: &StepContext,
    deadline: Instant,
) -> Result<(), ProviderError> {
    let mut seen = Seen::new("no health check output yet".into(), gate, calls);
    let polling = async {
        let mut polls = Backoff::new(poll.first, poll.max);
        loop {
            match engine.health_detail(master).await {
                Ok(Some(detail)) => {
                    let probe = detail.last_check_output.as_deref().and_then(ProbeLine::find);
                    let Some(peered) = probe.and_then(|p| p.relays) else { return Ok(()) };
                    if peered >= relays {
                        return Ok(());
                    }
                    seen.now(format!("{peered} of {relays} relays peered"));
                }
                Ok(None) => return Err(seen.disappeared()),
                Err(e) => seen.engine_error(e)?,
            }
            polls.wait().await;
        }
    };
    match tokio::time::timeout_at(deadline, polling).await {
        Ok(result) => result,
        Err(_) => Err(seen.gave_up("relays not peered again")),
    }
}
