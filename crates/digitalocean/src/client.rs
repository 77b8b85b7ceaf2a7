//! The HTTP client: bearer auth, the rate limiter, bounded retries, pagination.
//!
//! This client is the one retry layer of every DigitalOcean request (see [`peerfleet_core::retry`]):
//! the executor does not retry this provider's calls again. Retries use the provider's
//! [`RetryPolicy`], which counts every attempt, `429`s included:
//! - `429`: the request was refused before it was processed, so any request is retried, after the
//!   server's `retry-after` (burst limit) or `ratelimit-reset` (hourly quota); every other request
//!   of the token waits too ([`RateLimiter::burst_refused`], [`RateLimiter::block_until`]). A wait
//!   longer than [`RetryPolicy::max_wait`] is not waited for: the call fails as
//!   `Throttled { retry_after }`.
//! - `5xx`, `408`, timeouts, broken connections: retried with jittered exponential backoff, but only
//!   for [`Retry::Safe`] calls (reads, deletes, full updates). A create is [`Retry::Unsafe`]: when its
//!   answer is lost the droplet may exist, so the caller looks it up before trying again. A
//!   connection that was never established is retried for [`Retry::Unsafe`] calls too, but not for
//!   [`Retry::Caller`] ones, whose caller's look-up loop is their retry layer.
//! - Anything else (`4xx`) is returned at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use peerfleet_core::provider::{ErrorKind, Secret};
use peerfleet_core::retry::{RetryPolicy, Verdict};
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::time::Instant;

use crate::error::ApiError;
use crate::limit::{Outcome, RateLimiter};

/// DigitalOcean's largest page.
pub const PER_PAGE: u32 = 200;

/// Whether a call may be sent again after its answer was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Repeating it is harmless.
    Safe,
    /// Repeating it could act twice (creates); only retried when it provably was not processed.
    Unsafe,
    /// The caller's own loop retries it, looking up first: the client makes one attempt (`429`s
    /// aside, which were refused before any processing).
    Caller,
}

/// A failed attempt, and what it allows.
struct Failure {
    error: ApiError,
    /// The request never reached the server (no connection, or refused by the rate limit).
    never_sent: bool,
    throttled: bool,
    /// How long the server asked to wait.
    hint: Option<Duration>,
    /// The request was processed; repeating it is never right.
    processed: bool,
}

impl Failure {
    fn new(error: ApiError) -> Self {
        Failure { error, never_sent: false, throttled: false, hint: None, processed: false }
    }

    fn verdict(&self, retry: Retry) -> Verdict {
        if self.throttled {
            return Verdict::Retry { after: self.hint };
        }
        let repeatable = match retry {
            Retry::Safe => true,
            Retry::Unsafe => self.never_sent,
            Retry::Caller => false,
        };
        if repeatable && !self.processed && self.error.kind == ErrorKind::Transient {
            Verdict::Retry { after: None }
        } else {
            Verdict::Stop
        }
    }
}

/// Request counters, for tests and benchmarks.
#[derive(Debug, Default)]
pub struct Counters {
    requests: AtomicU64,
    throttled: AtomicU64,
    retried: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// HTTP requests sent.
    pub requests: u64,
    /// `429` answers received.
    pub throttled: u64,
    /// Transient failures retried.
    pub retried: u64,
}

/// A successful answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// JSON body (`Null` when empty).
    pub body: Value,
}

/// The API client of one token.
pub struct Api {
    http: reqwest::Client,
    base: Url,
    auth: HeaderValue,
    limiter: Arc<RateLimiter>,
    retry: RetryPolicy,
    counters: Counters,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("base", &self.base.as_str())
            .field("token", &"<redacted>")
            .field("limits", &self.limiter.limits())
            .finish_non_exhaustive()
    }
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// The instant (on tokio's clock) of a Unix time in seconds.
fn instant_of_epoch(secs: u64) -> Instant {
    let target = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    let ahead = target.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
    Instant::now() + ahead
}

impl Api {
    /// A client for `base` (scheme, host, port; a trailing `/v2` is ignored) with `token`; each
    /// HTTP exchange may take `request_timeout`.
    pub fn new(
        base: &str,
        token: &Secret,
        limiter: Arc<RateLimiter>,
        retry: RetryPolicy,
        request_timeout: Duration,
    ) -> Result<Api, ApiError> {
        let trimmed = base.trim_end_matches('/');
        let trimmed = trimmed.strip_suffix("/v2").unwrap_or(trimmed);
        let base = Url::parse(trimmed).map_err(|e| {
            ApiError::local(
                ErrorKind::Invalid,
                "configure",
                format!("DIGITALOCEAN_API_URL {trimmed:?} is not a URL: {e}"),
            )
        })?;
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
            ApiError::local(
                ErrorKind::Unauthorized,
                "configure",
                "the API token contains characters a header cannot carry",
            )
        })?;
        auth.set_sensitive(true);
        let http = reqwest::Client::builder()
            // A redirect could carry the token to another host; DigitalOcean's API never redirects.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(request_timeout)
            .connect_timeout(request_timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| ApiError::local(ErrorKind::Invalid, "configure", format!("HTTP client: {e}")))?;
        Ok(Api { http, base, auth, limiter, retry, counters: Counters::default() })
    }

    /// The limiter this client spends from.
    pub fn limiter(&self) -> &Arc<RateLimiter> {
        &self.limiter
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        Stats {
            requests: self.counters.requests.load(Ordering::Relaxed),
            throttled: self.counters.throttled.load(Ordering::Relaxed),
            retried: self.counters.retried.load(Ordering::Relaxed),
        }
    }

    fn url(&self, path: &str) -> Result<Url, ApiError> {
        self.base.join(path).map_err(|e| ApiError::local(ErrorKind::Invalid, path, format!("bad path: {e}")))
    }

    /// Sends one call, with rate limiting and retries.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        retry: Retry,
    ) -> Result<Answer, ApiError> {
        let mut url = self.url(path)?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        self.send(method, url, body, retry).await
    }

    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        retry: Retry,
    ) -> Result<Answer, ApiError> {
        let operation = format!("{method} {}", url.path());
        let result = self
            .retry
            .run(
                || self.attempt(&method, &url, body, &operation),
                |f: &Failure| f.verdict(retry),
                |f, attempt, delay| {
                    if f.throttled {
                        tracing::debug!(%operation, wait_ms = delay.as_millis() as u64, "rate limited; waiting for the reset");
                    } else {
                        self.counters.retried.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%operation, attempt, "retrying after a failure: {}", f.error);
                    }
                },
            )
            .await;
        result.map_err(|gave_up| gave_up.error.error)
    }

    /// One request: a permit from the limiter, the exchange, and what a failure means.
    async fn attempt(
        &self,
        method: &Method,
        url: &Url,
        body: Option<&Value>,
        operation: &str,
    ) -> Result<Answer, Failure> {
        let permit = self.limiter.acquire().await;
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let mut req = self
            .http
            .request(method.clone(), url.clone())
            .header(AUTHORIZATION, self.auth.clone())
            .header(ACCEPT, "application/json");
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let never_sent = e.is_connect();
                permit.finish(if never_sent { Outcome::Refused } else { Outcome::Counted });
                let what = if e.is_timeout() {
                    "timed out"
                } else if never_sent {
                    "could not connect"
                } else {
                    "failed"
                };
                let error = ApiError::local(
                    ErrorKind::Transient,
                    operation,
                    format!("request {what}: {}", e.without_url()),
                );
                return Err(Failure { never_sent, ..Failure::new(error) });
            }
        };
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let header_request_id = headers.get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_string);
        if status == 429 {
            permit.finish(Outcome::Refused);
            self.counters.throttled.fetch_add(1, Ordering::Relaxed);
            let now = Instant::now();
            let retry_after = header_u64(&headers, "retry-after").map(Duration::from_secs);
            let until = match (retry_after, header_u64(&headers, "ratelimit-reset")) {
                (Some(wait), _) => now + wait,
                // The hourly quota: wait until its oldest request expires.
                (None, Some(reset)) => instant_of_epoch(reset).max(now + self.retry.base),
                (None, None) => now + self.retry.base,
            };
            let wait = until - now;
            // Every request of the token waits for the reset, not only this one.
            match retry_after {
                Some(wait) => self.limiter.burst_refused(wait),
                None => self.limiter.block_until(until),
            }
            let body = resp.bytes().await.unwrap_or_default();
            let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let error = ApiError::from_response(
                operation,
                429,
                parsed.get("id").and_then(Value::as_str).map(str::to_string),
                parsed.get("message").and_then(Value::as_str).map(str::to_string),
                parsed.get("request_id").and_then(Value::as_str).map(str::to_string).or(header_request_id),
                Some(wait),
            );
            return Err(Failure {
                never_sent: true,
                throttled: true,
                hint: Some(wait),
                ..Failure::new(error)
            });
        }
        permit.finish(Outcome::Counted);
        if let (Some(remaining), Some(reset)) =
            (header_u64(&headers, "ratelimit-remaining"), header_u64(&headers, "ratelimit-reset"))
        {
            self.limiter.observe(u32::try_from(remaining).unwrap_or(u32::MAX), instant_of_epoch(reset));
        }
        let bytes = resp.bytes().await.map_err(|e| {
            Failure::new(ApiError::local(
                ErrorKind::Transient,
                operation,
                format!("reading the answer failed: {}", e.without_url()),
            ))
        })?;
        let parsed: Result<Value, _> =
            if bytes.is_empty() { Ok(Value::Null) } else { serde_json::from_slice(&bytes) };
        if (200..300).contains(&status) {
            return match parsed {
                Ok(body) => Ok(Answer { status, body }),
                // A mangled success answer is not repeated: the request was processed.
                Err(e) => Err(Failure {
                    processed: true,
                    ..Failure::new(ApiError::local(
                        ErrorKind::Transient,
                        operation,
                        format!("HTTP {status} with a body that is not JSON: {e}"),
                    ))
                }),
            };
        }
        let body = parsed.unwrap_or(Value::Null);
        let field = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
        let error = ApiError::from_response(
            operation,
            status,
            field("id"),
            field("message"),
            field("request_id").or(header_request_id),
            None,
        );
        Err(Failure::new(error))
    }

    /// Every object of a list endpoint, `per_page=200`, following `links.pages.next`: one request
    /// per page of 200.
    pub async fn list<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
        key: &str,
    ) -> Result<Vec<T>, ApiError> {
        let mut url = self.url(path)?;
        {
            let mut q = url.query_pairs_mut();
            q.extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
            q.append_pair("per_page", &PER_PAGE.to_string());
        }
        let operation = format!("GET {path}");
        let mut out = Vec::new();
        // Bounded: 10,000 pages of 200 is far beyond any account peerfleet manages.
        for _ in 0..10_000 {
            let answer = self.send(Method::GET, url.clone(), None, Retry::Safe).await?;
            let items = answer.body.get(key).cloned().unwrap_or(Value::Array(Vec::new()));
            let items: Vec<T> = serde_json::from_value(items).map_err(|e| {
                ApiError::local(
                    ErrorKind::Transient,
                    &operation,
                    format!("unexpected `{key}` in the answer: {e}"),
                )
            })?;
            out.extend(items);
            let next = answer.body.pointer("/links/pages/next").and_then(Value::as_str);
            let Some(next) = next else { return Ok(out) };
            let next = Url::parse(next).map_err(|e| {
                ApiError::local(ErrorKind::Transient, &operation, format!("bad next-page link: {e}"))
            })?;
            // The token goes only to the API it was configured for.
            if next.origin() != self.base.origin() || next.path() != url.path() {
                return Err(ApiError::local(
                    ErrorKind::Invalid,
                    &operation,
                    format!(
                        "the next-page link leaves {} {}; not following it",
                        self.base.origin().ascii_serialization(),
                        url.path()
                    ),
                ));
            }
            url = next;
        }
        Err(ApiError::local(ErrorKind::Transient, &operation, "more than 10,000 pages; giving up"))
    }
}
