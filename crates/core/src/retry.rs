//! The one retry and backoff mechanism of peerfleet: [`RetryPolicy`] (how many attempts, how long
//! between them) and [`Backoff`] (waits that double up to a cap, for polls). Every loop that waits
//! and tries again uses them: the executor's step calls and health gates, the DigitalOcean client
//! and its look-up-before-create loops, the AWS provider's polls and its SDK's retry settings, and
//! the reference node's reconnects to its seed.
//!
//! Why one small module rather than a crate such as `backon`: the delay is a pure function of the
//! attempt, the provider's hint and a jitter draw ([`RetryPolicy::delay`]), so schedules are tested
//! without clocks; a provider's `retry_after` is never undercut; and loops that carry state from one
//! attempt to the next (a create batch that shrinks as droplets are adopted) use [`Attempts`]
//! directly instead of fitting into a closure. It needs only `tokio`'s timer and `rand`, so the
//! reference node (`peerfleet-node`) uses it too without pulling anything heavy in: core has no
//! network code, and its few dependencies are ones the node already builds or small.
//!
//! # One retry layer per call path
//! Retries multiply when layers stack (5 executor attempts × 5 client attempts × 5 SDK attempts),
//! so each path has exactly one layer that retries, and the others make one attempt:
//!
//! | path | retried by | bounded by |
//! |---|---|---|
//! | AWS EC2 requests (refresh and apply) | the AWS SDK's standard retry, configured from the provider's [`RetryPolicy`] (`max_attempts`, `base`, `cap`) | attempts × the SDK's per-attempt timeout |
//! | DigitalOcean requests (refresh and apply) | the provider's client, with its [`RetryPolicy`]: `5xx`/timeouts for requests safe to repeat, `429` after the server's reset (at most [`RetryPolicy::max_wait`]) for any | attempts × request timeout + waits |
//! | DigitalOcean creates (droplet, firewall, reserved IP) | the provider's look-up-before-create loop, with the same policy; the create request itself is never repeated by the client | attempts |
//! | Docker engine calls, and any provider whose [`MachineProvider::retries_requests`] is false | the executor, with [`ApplyOptions::retry`] | attempts |
//! | a whole apply step (all of the above, plus polls and health gates) | — | [`ApplyOptions::step_deadline`] |
//!
//! The executor asks each machine provider ([`MachineProvider::retries_requests`]) and makes one
//! attempt per call for a provider that retries its own requests. Whatever happens inside, a step
//! that runs past [`ApplyOptions::step_deadline`] is stopped and fails saying how many attempts it
//! made and for how long; the state lock's lease is renewed by the executor's coordinator loop the
//! whole time, since steps wait on their own tasks.
//!
//! [`MachineProvider::retries_requests`]: crate::provider::MachineProvider::retries_requests
//! [`ApplyOptions::retry`]: crate::executor::ApplyOptions::retry
//! [`ApplyOptions::step_deadline`]: crate::executor::ApplyOptions::step_deadline

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How a failing call is retried: how many attempts, and how long to wait between them.
///
/// Only failures the caller judges retryable are retried (throttling, passing failures); repeating a
/// wrong request cannot make it right and only spends the account's rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first backoff; each further one doubles.
    pub base: Duration,
    /// The longest computed backoff (a provider's `retry_after` hint is honoured even beyond it,
    /// up to [`RetryPolicy::max_wait`]).
    pub cap: Duration,
    /// Attempts in all, the first included; 1 disables retries.
    pub max_attempts: u32,
    /// The longest wait a provider may ask for (`retry_after`, a rate limit's reset). A longer one
    /// is not waited for: the call fails at once with the provider's error and its hint.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
            max_attempts: 5,
            max_wait: Duration::from_secs(120),
        }
    }
}

/// `first × 2^doublings`, at most `cap`, without overflow.
fn doubled(first: Duration, cap: Duration, doublings: u32) -> Duration {
    first.saturating_mul(1u32 << doublings.min(30)).min(cap)
}

impl RetryPolicy {
    /// A policy that makes one attempt: for a layer whose callee retries by itself.
    pub fn once() -> Self {
        RetryPolicy { max_attempts: 1, ..RetryPolicy::default() }
    }

    /// The wait after failed attempt number `attempt` (1-based), with `jitter` in `[0, 1)`.
    ///
    /// Without a hint: "equal jitter" — half the exponential backoff fixed, half random — so that
    /// callers failing together do not retry together. With the provider's `retry_after`: that long,
    /// plus up to one `base` of jitter; never sooner than the provider asked.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
        let jitter = jitter.clamp(0.0, 1.0);
        if let Some(hint) = retry_after {
            return hint + self.base.mul_f64(jitter);
        }
        let backoff = doubled(self.base, self.cap, attempt.saturating_sub(1));
        backoff / 2 + (backoff / 2).mul_f64(jitter)
    }

    /// The longest time this policy can spend waiting between attempts when no hint is given
    /// (every backoff at its maximum jitter): with the time of each attempt, the documented bound
    /// of a call.
    pub fn worst_case_waits(&self) -> Duration {
        (1..self.max_attempts.max(1)).map(|a| self.delay(a, None, 1.0)).sum()
    }

    /// Attempts under this policy, for a loop that keeps its own state between them.
    pub fn attempts(&self) -> Attempts {
        Attempts { policy: *self, made: 1 }
    }

    /// Runs `call` until it succeeds, `judge` says a failure is final ([`Verdict::Stop`]), the
    /// attempts are used up, or the wait asked for exceeds [`RetryPolicy::max_wait`].
    /// `before_retry` sees each failure that will be retried, with the attempt number and the wait.
    ///
    /// # Errors
    /// The last failure, with how many attempts were made ([`GaveUp`]).
    pub async fn run<T, E, Fut>(
        &self,
        mut call: impl FnMut() -> Fut,
        mut judge: impl FnMut(&E) -> Verdict,
        mut before_retry: impl FnMut(&E, u32, Duration),
    ) -> Result<T, GaveUp<E>>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        let mut attempts = self.attempts();
        loop {
            let error = match call().await {
                Ok(value) => return Ok(value),
                Err(e) => e,
            };
            let made = attempts.made();
            let retry_after = match judge(&error) {
                Verdict::Stop => return Err(GaveUp { error, attempts: made, exhausted: false }),
                Verdict::Retry { after } => after,
            };
            let Some(delay) = attempts.next_delay(retry_after) else {
                return Err(GaveUp { error, attempts: made, exhausted: true });
            };
            before_retry(&error, made, delay);
            tokio::time::sleep(delay).await;
        }
    }
}

/// Whether a failed attempt may be repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The failure is final: repeating cannot help (or could act twice).
    Stop,
    /// The attempt may be repeated, after the provider's hint when it gave one.
    Retry {
        /// How long the provider asked to wait.
        after: Option<Duration>,
    },
}

/// A call that failed for good under a [`RetryPolicy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GaveUp<E> {
    /// The last failure.
    pub error: E,
    /// Attempts made, the first included.
    pub attempts: u32,
    /// Whether the failure was retryable, and the policy (attempts or longest wait) ended it.
    pub exhausted: bool,
}

/// The attempts of one call under a policy; see [`RetryPolicy::attempts`].
#[derive(Debug, Clone)]
pub struct Attempts {
    policy: RetryPolicy,
    made: u32,
}

impl Attempts {
    /// Attempts made so far (the first counts once it is made; this starts at 1).
    pub fn made(&self) -> u32 {
        self.made
    }

    /// The wait before the next attempt, counting it as made; `None` when the policy allows no
    /// more, or the provider asks for a wait longer than [`RetryPolicy::max_wait`].
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Option<Duration> {
        if self.made >= self.policy.max_attempts || retry_after.is_some_and(|w| w > self.policy.max_wait) {
            return None;
        }
        let delay = self.policy.delay(self.made, retry_after, rand::random());
        self.made += 1;
        Some(delay)
    }

    /// Sleeps until the next attempt may be made; `false` (without sleeping) when none may.
    pub async fn wait(&mut self, retry_after: Option<Duration>) -> bool {
        match self.next_delay(retry_after) {
            Some(delay) => {
                tokio::time::sleep(delay).await;
                true
            }
            None => false,
        }
    }
}

/// Waits between polls: `first`, doubling up to `max`, optionally ending at a deadline. Used where
/// something is expected to become true (an instance running, a container healthy, a seed back).
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
    deadline: Option<Instant>,
}

impl Backoff {
    /// Waits from `first`, doubling up to `max`, without end.
    pub fn new(first: Duration, max: Duration) -> Self {
        Backoff { first, max: max.max(first), next: first, deadline: None }
    }

    /// The same, giving up `bound` from now.
    pub fn bounded(first: Duration, max: Duration, bound: Duration) -> Self {
        Backoff { deadline: Some(Instant::now() + bound), ..Backoff::new(first, max) }
    }

    /// The next wait (then doubles it, up to `max`).
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = doubled(self.next, self.max, 1);
        delay
    }

    /// Starts again from `first` (after a success).
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// Sleeps until the next poll, cut short at the deadline; `false` (without sleeping) once the
    /// deadline has passed.
    pub async fn wait(&mut self) -> bool {
        let delay = self.next_delay();
        match self.deadline {
            None => tokio::time::sleep(delay).await,
            Some(deadline) => {
                let now = Instant::now();
                if now >= deadline {
                    return false;
                }
                tokio::time::sleep(delay.min(deadline - now)).await;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(base: u64, cap: u64, max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_secs(base),
            cap: Duration::from_secs(cap),
            max_attempts,
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_equal_jitter() {
        let p = policy(1, 5, 9);
        let low: Vec<u64> = (1..=5).map(|a| p.delay(a, None, 0.0).as_millis() as u64).collect();
        let high: Vec<u64> = (1..=5).map(|a| p.delay(a, None, 1.0).as_millis() as u64).collect();
        assert_eq!(low, [500, 1000, 2000, 2500, 2500]);
        assert_eq!(high, [1000, 2000, 4000, 5000, 5000]);
        assert_eq!(p.delay(1000, None, 1.0), Duration::from_secs(5), "no overflow on huge attempt counts");
    }

    #[test]
    fn a_retry_after_hint_is_never_undercut_even_beyond_the_cap() {
        let p = policy(1, 5, 3);
        let hint = Some(Duration::from_secs(60));
        assert_eq!(p.delay(1, hint, 0.0), Duration::from_secs(60));
        assert_eq!(p.delay(1, hint, 1.0), Duration::from_secs(61));
    }

    #[test]
    fn the_worst_case_wait_is_the_sum_of_the_largest_backoffs() {
        // 1 + 2 + 4 + 5 (capped): four waits between five attempts.
        assert_eq!(policy(1, 5, 5).worst_case_waits(), Duration::from_secs(12));
        assert_eq!(RetryPolicy::once().worst_case_waits(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn run_stops_after_max_attempts_and_says_how_many() {
        let mut calls = 0;
        let result: Result<(), GaveUp<&str>> = policy(1, 5, 4)
            .run(
                || {
                    calls += 1;
                    async { Err("down") }
                },
                |_| Verdict::Retry { after: None },
                |_, _, _| {},
            )
            .await;
        assert_eq!(calls, 4);
        assert_eq!(result, Err(GaveUp { error: "down", attempts: 4, exhausted: true }));
    }

    #[tokio::test(start_paused = true)]
    async fn run_never_repeats_a_final_failure_nor_waits_longer_than_max_wait() {
        let mut calls = 0;
        let stop: Result<(), _> = policy(1, 5, 4)
            .run(
                || {
                    calls += 1;
                    async { Err("bad request") }
                },
                |_| Verdict::Stop,
                |_, _, _| {},
            )
            .await;
        assert_eq!((calls, stop), (1, Err(GaveUp { error: "bad request", attempts: 1, exhausted: false })));
        let start = Instant::now();
        let too_long: Result<(), _> = policy(1, 5, 4)
            .run(
                || async { Err("throttled for an hour") },
                |_| Verdict::Retry { after: Some(Duration::from_secs(3600)) },
                |_, _, _| {},
            )
            .await;
        assert_eq!(too_long.map_err(|g| (g.attempts, g.exhausted)), Err((1, true)));
        assert_eq!(start.elapsed(), Duration::ZERO, "an hour-long hint is not waited for");
    }

    #[tokio::test(start_paused = true)]
    async fn polls_double_up_to_the_cap_and_stop_at_the_bound() {
        let start = Instant::now();
        let mut b = Backoff::bounded(Duration::from_secs(1), Duration::from_secs(4), Duration::from_secs(10));
        let mut at = Vec::new();
        while b.wait().await {
            at.push((Instant::now() - start).as_secs());
        }
        // 1, +2, +4, +4 (capped), then the last sleep is cut short at the 10 s bound.
        assert_eq!(at, vec![1, 3, 7, 10]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_secs(1));
    }
}
