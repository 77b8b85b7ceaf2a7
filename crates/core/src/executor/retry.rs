//! What a running step needs to call providers: its address (for events), the retry policy (the
//! one mechanism of [`crate::retry`]), the step's deadline, the coordinator's event channel and the
//! shared throttle counts.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;

use super::{ApplyEvent, own_error};
use crate::address::Address;
use crate::provider::{ErrorKind, ProviderError};
use crate::retry::{RetryPolicy, Verdict};

/// Throttled errors seen, per provider name.
pub(crate) type ThrottleCounts = Arc<Mutex<BTreeMap<String, u64>>>;

/// One step's provider calls: retried by the executor's policy unless the callee retries its own
/// requests, all of them bounded by the step's deadline.
#[derive(Clone)]
pub(crate) struct StepContext {
    pub(crate) address: Address,
    pub(crate) policy: RetryPolicy,
    pub(crate) events: UnboundedSender<ApplyEvent>,
    pub(crate) throttled: ThrottleCounts,
    /// When the step started, and how long it may take.
    pub(crate) started: Instant,
    pub(crate) deadline: Duration,
    /// Provider calls made so far by this step, retries included.
    pub(crate) attempts: Arc<AtomicU32>,
}

/// Who retries a call: one layer per call path, never both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retries {
    /// The executor retries, with [`super::ApplyOptions::retry`].
    Here,
    /// The callee retries its own requests; the executor makes one attempt.
    Below,
}

impl StepContext {
    /// Tells the coordinator (and through it the reporter) about progress.
    pub(crate) fn report(&self, event: ApplyEvent) {
        // The coordinator outlives every step; if it is gone, nobody is listening anyway.
        let _ = self.events.send(event);
    }

    /// Runs `call` until it succeeds, fails with a non-retryable error, or runs out of attempts
    /// (one attempt when the callee retries by itself), within the step's deadline.
    pub(crate) async fn call<T, F, Fut>(&self, retries: Retries, mut call: F) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ProviderError>>,
    {
        let policy = match retries {
            Retries::Here => self.policy,
            Retries::Below => RetryPolicy { max_attempts: 1, ..self.policy },
        };
        let run = policy.run(
            || {
                self.attempts.fetch_add(1, Ordering::Relaxed);
                call()
            },
            |error: &ProviderError| {
                if matches!(error.kind, ErrorKind::Throttled { .. }) {
                    let mut counts = self.throttled.lock().unwrap_or_else(|p| p.into_inner());
                    *counts.entry(error.provider.clone()).or_default() += 1;
                }
                if error.is_retryable() {
                    Verdict::Retry { after: error.retry_after() }
                } else {
                    Verdict::Stop
                }
            },
            |error, attempt, delay| {
                self.report(ApplyEvent::Retrying {
                    address: self.address.clone(),
                    attempt,
                    error: error.clone(),
                    delay,
                })
            },
        );
        let result = self.within_deadline(run).await?;
        result.map_err(|gave_up| {
            let mut error = gave_up.error;
            if gave_up.exhausted && gave_up.attempts > 1 {
                error.message = format!("{} (gave up after {} attempts)", error.message, gave_up.attempts);
            }
            error
        })
    }

    /// Runs `work` unless the step's deadline passes first; then fails saying how many attempts
    /// the step made and for how long.
    pub(crate) async fn within_deadline<T>(&self, work: impl Future<Output = T>) -> Result<T, ProviderError> {
        match tokio::time::timeout_at(self.started + self.deadline, work).await {
            Ok(done) => Ok(done),
            Err(_) => Err(own_error(
                ErrorKind::Transient,
                format!(
                    "gave up after {} attempt(s) in {:.1}s: the step deadline ({:.1}s) passed",
                    self.attempts.load(Ordering::Relaxed),
                    self.started.elapsed().as_secs_f64(),
                    self.deadline.as_secs_f64(),
                ),
            )),
        }
    }
}
