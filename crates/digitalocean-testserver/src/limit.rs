//! DigitalOcean's rate limit as the API enforces it: every request counts for one window after it
//! was made (a sliding window per request, not a counter reset on the hour), per minute and per hour.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

/// A rate limit: at most `per_minute` requests in any `minute`, and `per_hour` in any `hour`.
///
/// The windows are configurable so tests can use a scaled limit (e.g. 25 per 6 s) with the same
/// semantics instead of waiting real minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed in the short window (the "burst" limit).
    pub per_minute: u32,
    /// The short window.
    pub minute: Duration,
    /// Requests allowed in the long window.
    pub per_hour: u32,
    /// The long window.
    pub hour: Duration,
}

impl RateLimit {
    /// DigitalOcean's documented limits: 250 per minute, 5,000 per hour.
    pub const DIGITALOCEAN: RateLimit = RateLimit {
        per_minute: 250,
        minute: Duration::from_secs(60),
        per_hour: 5000,
        hour: Duration::from_secs(3600),
    };
}

/// What the limiter decided for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the request may proceed.
    pub admitted: bool,
    /// Headers to send (`ratelimit-*`, and `retry-after` when the burst limit refused).
    pub headers: Vec<(String, String)>,
}

/// The request log of one token.
#[derive(Debug, Default)]
pub struct Windows {
    minute: VecDeque<Instant>,
    hour: VecDeque<Instant>,
}

fn epoch_secs_at(target: Instant, now: Instant) -> u64 {
    let at = SystemTime::now() + target.saturating_duration_since(now);
    at.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl Windows {
    /// Admits or refuses a request at `now`; refused requests do not count.
    pub fn admit(&mut self, limit: &RateLimit, now: Instant) -> Verdict {
        while self.minute.front().is_some_and(|t| *t + limit.minute <= now) {
            self.minute.pop_front();
        }
        while self.hour.front().is_some_and(|t| *t + limit.hour <= now) {
            self.hour.pop_front();
        }
        let burst_full = self.minute.len() >= limit.per_minute as usize;
        let hour_full = self.hour.len() >= limit.per_hour as usize;
        let admitted = !burst_full && !hour_full;
        if admitted {
            self.minute.push_back(now);
            self.hour.push_back(now);
        }
        let remaining =
            if burst_full { 0 } else { (limit.per_hour as usize).saturating_sub(self.hour.len()) };
        let reset = self
            .hour
            .front()
            .map(|t| epoch_secs_at(*t + limit.hour, now))
            .unwrap_or_else(|| epoch_secs_at(now, now));
        let mut headers = vec![
            ("ratelimit-limit".to_string(), limit.per_hour.to_string()),
            ("ratelimit-remaining".to_string(), remaining.to_string()),
            ("ratelimit-reset".to_string(), reset.to_string()),
        ];
        if burst_full && let Some(oldest) = self.minute.front() {
            let wait = (*oldest + limit.minute).saturating_duration_since(now);
            headers.push(("retry-after".to_string(), ceil_secs(wait).max(1).to_string()));
        }
        Verdict { admitted, headers }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(v: &'a Verdict, name: &str) -> Option<&'a str> {
        v.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn each_request_expires_one_window_after_it_was_made() {
        let limit = RateLimit {
            per_minute: 2,
            minute: Duration::from_secs(10),
            per_hour: 100,
            hour: Duration::from_secs(100),
        };
        let mut w = Windows::default();
        let t0 = Instant::now();
        assert!(w.admit(&limit, t0).admitted);
        assert!(w.admit(&limit, t0 + Duration::from_secs(4)).admitted);
        let refused = w.admit(&limit, t0 + Duration::from_secs(5));
        assert!(!refused.admitted);
        assert_eq!(header(&refused, "retry-after"), Some("5"));
        assert_eq!(header(&refused, "ratelimit-remaining"), Some("0"));
        // The first request's slot frees at t0 + 10 s, the second's only at t0 + 14 s.
        assert!(w.admit(&limit, t0 + Duration::from_secs(10)).admitted);
        assert!(!w.admit(&limit, t0 + Duration::from_secs(13)).admitted);
        assert!(w.admit(&limit, t0 + Duration::from_secs(14)).admitted);
    }

    #[test]
    fn remaining_counts_the_hourly_quota() {
        let limit = RateLimit {
            per_minute: 10,
            minute: Duration::from_secs(10),
            per_hour: 3,
            hour: Duration::from_secs(100),
        };
        let mut w = Windows::default();
        let t0 = Instant::now();
        assert_eq!(header(&w.admit(&limit, t0), "ratelimit-remaining"), Some("2"));
        assert_eq!(header(&w.admit(&limit, t0), "ratelimit-remaining"), Some("1"));
        assert_eq!(header(&w.admit(&limit, t0), "ratelimit-remaining"), Some("0"));
        let refused = w.admit(&limit, t0);
        assert!(!refused.admitted);
        assert_eq!(header(&refused, "retry-after"), None, "retry-after is only sent for the burst limit");
    }
}
