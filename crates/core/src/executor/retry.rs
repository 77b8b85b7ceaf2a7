//! Retrying provider calls: only retryable errors, jittered exponential backoff, the provider's hint
//! honoured.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;

use super::ApplyEvent;
use crate::address::Address;
use crate::provider::{ErrorKind, ProviderError};

/// How failed provider calls are retried.
///
/// Only errors whose [`ProviderError::is_retryable`] is true (throttling, passing failures) are
/// retried; anything else fails the step at once, because repeating a wrong request cannot make it
/// right and only spends the account's rate limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first backoff; each further one doubles.
    pub base: Duration,
    /// The longest computed backoff (a provider's `retry_after` hint is honoured even beyond it).
    pub cap: Duration,
    /// Attempts in all, the first included; 1 disables retries.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { base: Duration::from_millis(500), cap: Duration::from_secs(30), max_attempts: 5 }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (1-based), with `jitter` in `[0, 1)`.
    ///
    /// Without a hint: "equal jitter" — half the exponential backoff fixed, half random — so that
    /// steps throttled together do not retry together. With the provider's `retry_after`: that long,
    /// plus up to one `base` of jitter; never sooner than the provider asked.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
        let jitter = jitter.clamp(0.0, 1.0);
        if let Some(hint) = retry_after {
            return hint + self.base.mul_f64(jitter);
        }
        let doublings = attempt.saturating_sub(1).min(30);
        let backoff = self.base.saturating_mul(1 << doublings).min(self.cap);
        backoff / 2 + (backoff / 2).mul_f64(jitter)
    }
}

/// Throttled errors seen, per provider name.
pub(crate) type ThrottleCounts = Arc<Mutex<BTreeMap<String, u64>>>;

/// What a running step needs to make provider calls: its address (for events), the retry policy,
/// the coordinator's event channel and the shared throttle counts.
#[derive(Clone)]
pub(crate) struct Calls {
    pub(crate) address: Address,
    pub(crate) policy: RetryPolicy,
    pub(crate) events: UnboundedSender<ApplyEvent>,
    pub(crate) throttled: ThrottleCounts,
}

impl Calls {
    /// Tells the coordinator (and through it the reporter) about progress.
    pub(crate) fn report(&self, event: ApplyEvent) {
        // The coordinator outlives every step; if it is gone, nobody is listening anyway.
        let _ = self.events.send(event);
    }

    /// Runs `call` until it succeeds, fails with a non-retryable error, or runs out of attempts.
    pub(crate) async fn call<T, F, Fut>(&self, mut call: F) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ProviderError>>,
    {
        let mut attempt = 1;
        loop {
            let error = match call().await {
                Ok(value) => return Ok(value),
                Err(e) => e,
            };
            if matches!(error.kind, ErrorKind::Throttled { .. }) {
                let mut counts = self.throttled.lock().unwrap_or_else(|p| p.into_inner());
                *counts.entry(error.provider.clone()).or_default() += 1;
            }
            if !error.is_retryable() {
                return Err(error);
            }
            if attempt >= self.policy.max_attempts {
                let mut error = error;
                if attempt > 1 {
                    error.message = format!("{} (gave up after {attempt} attempts)", error.message);
                }
                return Err(error);
            }
            let delay = self.policy.delay(attempt, error.retry_after(), rand::random());
            self.report(ApplyEvent::Retrying { address: self.address.clone(), attempt, error, delay });
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_equal_jitter() {
        let p = RetryPolicy { base: Duration::from_secs(1), cap: Duration::from_secs(5), max_attempts: 9 };
        let low: Vec<u64> = (1..=5).map(|a| p.delay(a, None, 0.0).as_millis() as u64).collect();
        let high: Vec<u64> = (1..=5).map(|a| p.delay(a, None, 1.0).as_millis() as u64).collect();
        assert_eq!(low, [500, 1000, 2000, 2500, 2500]);
        assert_eq!(high, [1000, 2000, 4000, 5000, 5000]);
        assert_eq!(p.delay(1000, None, 1.0), Duration::from_secs(5), "no overflow on huge attempt counts");
    }

    #[test]
    fn a_retry_after_hint_is_never_undercut_even_beyond_the_cap() {
        let p = RetryPolicy { base: Duration::from_secs(1), cap: Duration::from_secs(5), max_attempts: 3 };
        let hint = Some(Duration::from_secs(60));
        assert_eq!(p.delay(1, hint, 0.0), Duration::from_secs(60));
        assert_eq!(p.delay(1, hint, 1.0), Duration::from_secs(61));
    }
}
