//! The client side of DigitalOcean's rate limit: a token bucket per API token whose tokens come back
//! one window after they were spent.
//!
//! DigitalOcean does not refill at a steady rate: every request counts against the token for one
//! full window after it was made (250 per minute, 5,000 per hour), and expires on its own timer. A
//! bucket refilling continuously at 250/60 s would, after a burst of 250, send its 251st request a
//! quarter second later and be refused; so each spent token here returns exactly one window after
//! its request was *answered* (never earlier than the server counts it). Requests in flight hold a
//! token too.
//!
//! Other clients of the same token are invisible until the server says so; the limiter is corrected
//! from `ratelimit-remaining` / `ratelimit-reset` (hourly quota) and from `429` answers
//! ([`RateLimiter::burst_refused`], [`RateLimiter::block_until`]).
//!
//! Time is [`tokio::time::Instant`], so tests run the limiter on tokio's paused clock, and the windows
//! are configurable ([`RateLimits`]) so tests and benchmarks can use a scaled limit with the same
//! semantics.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// A rate limit: at most `per_minute` requests in any `minute`, and `per_hour` in any `hour`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// Requests per short window (DigitalOcean's burst limit).
    pub per_minute: u32,
    /// The short window.
    pub minute: Duration,
    /// Requests per long window.
    pub per_hour: u32,
    /// The long window.
    pub hour: Duration,
}

impl RateLimits {
    /// DigitalOcean's documented limits: 250 per minute and 5,000 per hour, per token.
    pub const DIGITALOCEAN: RateLimits = RateLimits {
        per_minute: 250,
        minute: Duration::from_secs(60),
        per_hour: 5000,
        hour: Duration::from_secs(3600),
    };
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits::DIGITALOCEAN
    }
}

/// Spent tokens of one window, as the times they come back (with how many come back then), oldest
/// first. Counted entries keep corrections for thousands of unseen requests one entry each.
#[derive(Debug, Default)]
struct Window {
    returns: VecDeque<(Instant, u64)>,
    spent: u64,
}

impl Window {
    fn expire(&mut self, now: Instant) {
        while let Some((at, n)) = self.returns.front().copied()
            && at <= now
        {
            self.returns.pop_front();
            self.spent -= n;
        }
    }

    fn push(&mut self, at: Instant, n: u64) {
        if n == 0 {
            return;
        }
        // Answers arrive in time order, so this is almost always an append.
        let pos = self.returns.partition_point(|(t, _)| *t <= at);
        self.returns.insert(pos, (at, n));
        self.spent += n;
    }

    fn next_return(&self) -> Option<Instant> {
        self.returns.front().map(|(at, _)| *at)
    }

    /// Tokens left of `cap`, with `in_flight` held by requests under way.
    fn left(&self, cap: u32, in_flight: u32) -> u64 {
        u64::from(cap).saturating_sub(self.spent + u64::from(in_flight))
    }
}

#[derive(Debug, Default)]
struct State {
    minute: Window,
    hour: Window,
    in_flight: u32,
    blocked_until: Option<Instant>,
}

/// The limiter of one API token. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct RateLimiter {
    limits: RateLimits,
    state: Mutex<State>,
    released: Notify,
}

/// What became of a request that held a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The server counted it (any answer but `429`, or no answer at all).
    Counted,
    /// The server refused it with `429` and did not count it.
    Refused,
}

/// A token held by one request; returns it to the limiter when finished or dropped.
#[derive(Debug)]
pub struct Permit {
    limiter: Arc<RateLimiter>,
    finished: bool,
}

impl Permit {
    /// Records what became of the request.
    pub fn finish(mut self, outcome: Outcome) {
        self.finished = true;
        self.limiter.release(outcome);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.finished {
            // A request abandoned mid-flight may still have reached the server: count it.
            self.limiter.release(Outcome::Counted);
        }
    }
}

impl RateLimiter {
    /// A limiter with a full bucket.
    pub fn new(limits: RateLimits) -> Arc<Self> {
        Arc::new(RateLimiter { limits, state: Mutex::default(), released: Notify::new() })
    }

    /// The limits it enforces.
    pub fn limits(&self) -> RateLimits {
        self.limits
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent across a panic (every update is a single push or pop).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a token.
    pub async fn acquire(self: &Arc<Self>) -> Permit {
        loop {
            let released = self.released.notified();
            let wait = {
                let mut s = self.lock();
                let now = Instant::now();
                s.minute.expire(now);
                s.hour.expire(now);
                if let Some(until) = s.blocked_until.filter(|u| *u > now) {
                    Some(until)
                } else if s.minute.left(self.limits.per_minute, s.in_flight) == 0 {
                    s.minute.next_return()
                } else if s.hour.left(self.limits.per_hour, s.in_flight) == 0 {
                    s.hour.next_return()
                } else {
                    s.in_flight += 1;
                    return Permit { limiter: self.clone(), finished: false };
                }
            };
            // `None`: every token is held by a request in flight; one comes back when it finishes.
            match wait {
                Some(until) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(until) => {}
                        _ = released => {}
                    }
                }
                None => released.await,
            }
        }
    }

    fn release(&self, outcome: Outcome) {
        {
            let mut s = self.lock();
            s.in_flight = s.in_flight.saturating_sub(1);
            if outcome == Outcome::Counted {
                let now = Instant::now();
                s.minute.push(now + self.limits.minute, 1);
                s.hour.push(now + self.limits.hour, 1);
            }
        }
        self.released.notify_waiters();
    }

    /// Sends nothing before `until` (a `429`'s `retry-after`, or the reset of an exhausted quota).
    pub fn block_until(&self, until: Instant) {
        let mut s = self.lock();
        if s.blocked_until.is_none_or(|b| b < until) {
            s.blocked_until = Some(until);
        }
    }

    /// The burst limit refused a request and the next slot frees in `retry_after`: the short window
    /// is full, with requests this limiter never saw. Nothing is sent before the slot frees, and the
    /// unseen requests are assumed to expire evenly between then and one window from now (as if they
    /// had been spread over the last window). When they were one recent burst, `retry_after` is
    /// close to the window and they all free at once; when they were spread out, so are their
    /// expiries. Either way the pace that follows matches what the server admits, instead of a
    /// second wave of `429`s.
    pub fn burst_refused(&self, retry_after: Duration) {
        let now = Instant::now();
        let from = now + retry_after;
        let to = now + self.limits.minute.max(retry_after);
        let mut s = self.lock();
        if s.blocked_until.is_none_or(|b| b < from) {
            s.blocked_until = Some(from);
        }
        s.minute.expire(now);
        let unseen = s.minute.left(self.limits.per_minute, s.in_flight);
        // In at most 100 steps from `from` to `to`, each returning its share of the unseen tokens.
        let steps = unseen.min(100);
        for i in 0..steps {
            let share = unseen * (i + 1) / steps - unseen * i / steps;
            let at = from + (to - from).mul_f64(i as f64 / steps as f64);
            s.minute.push(at, share);
        }
    }

    /// Corrects the hourly bucket from the server's count: `remaining` requests left, the oldest
    /// counted one expiring at `reset`. Only ever lowers what the limiter believes is left: requests
    /// this limiter did not see were made by another client of the same token.
    pub fn observe(&self, remaining: u32, reset: Instant) {
        let mut s = self.lock();
        let now = Instant::now();
        s.hour.expire(now);
        let missing = s.hour.left(self.limits.per_hour, s.in_flight).saturating_sub(u64::from(remaining));
        // The unknown requests expire from `reset` on; assuming all of them expire then is the
        // earliest they can, and the server corrects us again if not.
        s.hour.push(reset.max(now), missing);
    }

    /// Tokens available right now in the (minute, hour) windows, for tests and diagnostics.
    pub fn available(&self) -> (u32, u32) {
        let mut s = self.lock();
        let now = Instant::now();
        s.minute.expire(now);
        s.hour.expire(now);
        let left = |w: &Window, cap: u32| u32::try_from(w.left(cap, s.in_flight)).unwrap_or(u32::MAX);
        (left(&s.minute, self.limits.per_minute), left(&s.hour, self.limits.per_hour))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_minute: u32, per_hour: u32) -> RateLimits {
        RateLimits { per_minute, minute: Duration::from_secs(60), per_hour, hour: Duration::from_secs(3600) }
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_bucket_lets_a_burst_through_then_paces_by_expiry() {
        let limiter = RateLimiter::new(limits(250, 5000));
        let t0 = Instant::now();
        for _ in 0..250 {
            limiter.acquire().await.finish(Outcome::Counted);
        }
        assert_eq!(t0.elapsed(), Duration::ZERO, "the first 250 go at once");
        limiter.acquire().await.finish(Outcome::Counted);
        assert_eq!(t0.elapsed(), Duration::from_secs(60), "the 251st waits until the first token returns");
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_return_one_window_after_each_request_not_all_at_once() {
        let limiter = RateLimiter::new(limits(2, 100));
        let t0 = Instant::now();
        limiter.acquire().await.finish(Outcome::Counted);
        tokio::time::sleep(Duration::from_secs(30)).await;
        limiter.acquire().await.finish(Outcome::Counted);
        limiter.acquire().await.finish(Outcome::Counted);
        assert_eq!(t0.elapsed(), Duration::from_secs(60));
        limiter.acquire().await.finish(Outcome::Counted);
        assert_eq!(t0.elapsed(), Duration::from_secs(90));
    }

    #[tokio::test(start_paused = true)]
    async fn requests_in_flight_hold_their_token() {
        let limiter = RateLimiter::new(limits(1, 100));
        let held = limiter.acquire().await;
        let waiter = {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                let t = Instant::now();
                limiter.acquire().await.finish(Outcome::Counted);
                t.elapsed()
            })
        };
        tokio::time::sleep(Duration::from_secs(5)).await;
        held.finish(Outcome::Counted);
        // Answered at t=5 s, so its token returns at t=65 s.
        assert_eq!(waiter.await.ok(), Some(Duration::from_secs(65)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_request_gives_its_token_back_at_once() {
        let limiter = RateLimiter::new(limits(1, 100));
        limiter.acquire().await.finish(Outcome::Refused);
        assert_eq!(limiter.available(), (1, 100));
    }

    #[tokio::test(start_paused = true)]
    async fn the_hourly_window_binds_too() {
        let limiter = RateLimiter::new(RateLimits {
            per_minute: 10,
            minute: Duration::from_secs(1),
            per_hour: 3,
            hour: Duration::from_secs(100),
        });
        let t0 = Instant::now();
        for _ in 0..4 {
            limiter.acquire().await.finish(Outcome::Counted);
        }
        assert_eq!(t0.elapsed(), Duration::from_secs(100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_block_holds_everyone_until_it_ends() {
        let limiter = RateLimiter::new(limits(250, 5000));
        let t0 = Instant::now();
        limiter.block_until(t0 + Duration::from_secs(7));
        limiter.acquire().await.finish(Outcome::Counted);
        assert_eq!(t0.elapsed(), Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_burst_refusal_unseen_requests_expire_between_the_retry_and_one_window() {
        let limiter = RateLimiter::new(limits(10, 5000));
        let t0 = Instant::now();
        limiter.burst_refused(Duration::from_secs(20));
        // Ten unseen requests return at 20, 24, 28, ... 56 s.
        limiter.acquire().await.finish(Outcome::Counted);
        assert_eq!(t0.elapsed(), Duration::from_secs(20));
        limiter.acquire().await.finish(Outcome::Counted);
        assert_eq!(t0.elapsed(), Duration::from_secs(24));
        // A refusal right after a burst (retry close to the window) frees everything at once.
        let fresh = RateLimiter::new(limits(10, 5000));
        let t1 = Instant::now();
        fresh.burst_refused(Duration::from_secs(60));
        for _ in 0..10 {
            fresh.acquire().await.finish(Outcome::Counted);
        }
        assert_eq!(t1.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn corrections_cost_one_entry_however_large_the_limit() {
        let limiter = RateLimiter::new(RateLimits {
            per_minute: u32::MAX,
            minute: Duration::from_secs(60),
            per_hour: u32::MAX,
            hour: Duration::from_secs(3600),
        });
        limiter.observe(4999, Instant::now() + Duration::from_secs(10));
        limiter.burst_refused(Duration::from_secs(1));
        assert_eq!(limiter.available(), (0, 4999));
        assert!(limiter.lock().minute.returns.len() <= 100 && limiter.lock().hour.returns.len() == 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_servers_remaining_count_lowers_the_bucket_until_reset() {
        let limiter = RateLimiter::new(limits(250, 5000));
        let t0 = Instant::now();
        limiter.observe(2, t0 + Duration::from_secs(40));
        assert_eq!(limiter.available(), (250, 2));
        limiter.acquire().await.finish(Outcome::Counted);
        limiter.acquire().await.finish(Outcome::Counted);
        limiter.acquire().await.finish(Outcome::Counted);
        assert_eq!(t0.elapsed(), Duration::from_secs(40));
        // A higher count from the server never raises what this limiter knows it spent.
        limiter.observe(5000, t0);
        assert_eq!(limiter.available().1, 5000 - 3);
    }
}
