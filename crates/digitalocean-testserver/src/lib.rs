//! A stateful stand-in for DigitalOcean's API v2, for peerfleet's tests.
//!
//! DigitalOcean publishes no emulator, so the contract tests hold the provider to is DigitalOcean's
//! own OpenAPI description. That decision shaped this crate: the server is deliberately small (the
//! endpoints peerfleet uses: droplets, actions, tags, firewalls, reserved IPs, regions, sizes), but
//! **every request it receives and every response it sends is validated against the official
//! description** ([`openapi`]). A request the description rejects is recorded as a violation and
//! answered `400`; [`TestServer::assert_conforms`] fails the test on any violation. When the
//! description is not available the check reports itself as skipped, loudly, and fails under
//! `CI=true`.
//!
//! Beyond conformance it models what the provider must cope with: droplets that take time to boot,
//! actions that complete later, DigitalOcean's sliding-window rate limit with its documented headers
//! and `429` body ([`limit`]), and injected faults ([`Fault`]): errors, lost responses, slow
//! responses. Addresses it hands out come from the documentation ranges (RFC 5737) and must never be
//! connected to.
//!
//! The server listens on 127.0.0.1 only, on a port the OS picks.

pub mod catalog;
pub mod limit;
pub mod openapi;
pub mod world;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

pub use limit::RateLimit;
use limit::Windows;
use openapi::{Description, Direction, LoadError, RequestParts};
use world::{Call, Reply, World};
pub use world::{Delays, Droplet, DropletStatus};

/// A fault to inject into matching requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status (and DigitalOcean's error body) without doing anything.
    Fail(u16),
    /// Do the work, then answer with this status: the client never learns that it succeeded.
    FailAfter(u16),
    /// Wait this long, then handle the request normally.
    Delay(Duration),
    /// Do the work, then wait this long before answering (a client timing out meanwhile has
    /// "crashed" after the server acted).
    DelayAfter(Duration),
}

/// How the server starts.
#[derive(Debug, Clone)]
pub struct Config {
    /// The bearer token requests must carry.
    pub token: String,
    /// Boot and action durations.
    pub timing: Delays,
    /// The rate limit, if any.
    pub rate_limit: Option<RateLimit>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            token: "dop_v1_test_token_0123456789abcdef".to_string(),
            timing: Delays { boot: Duration::from_millis(200), action: Duration::from_millis(100) },
            rate_limit: None,
        }
    }
}

/// A request or response the description rejects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which message was wrong.
    pub direction: Direction,
    /// Method.
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Response status, for responses.
    pub status: Option<u16>,
    /// What is wrong.
    pub problems: Vec<String>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(s) => write!(f, "response {s} to {} {}: ", self.method, self.target)?,
            None => write!(f, "request {} {}: ", self.method, self.target)?,
        }
        f.write_str(&self.problems.join("; "))
    }
}

/// Whether conformance is being checked.
#[derive(Debug, Clone)]
pub enum Conformance {
    /// Every message is checked against the description at this path.
    Checked(std::path::PathBuf),
    /// The description is unavailable; nothing is checked.
    Skipped(String),
}

struct Shared {
    token: String,
    base_url: String,
    world: Mutex<World>,
    limit: Mutex<(Option<RateLimit>, Windows)>,
    faults: Mutex<Vec<(String, Fault, usize)>>,
    /// Seeded random faults: (PRNG state, probability per request, the faults to pick from).
    random: Mutex<Option<(StdRng, f64, Vec<Fault>)>>,
    /// Random faults that struck.
    random_hits: AtomicU64,
    counts: Mutex<BTreeMap<String, u64>>,
    throttled: AtomicU64,
    sequence: AtomicU64,
    violations: Mutex<Vec<Violation>>,
    description: Result<Arc<Description>, Arc<LoadError>>,
}

/// Locks a mutex, recovering from poisoning: a panicking test thread must not hide later results.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running server; stops when dropped.
pub struct TestServer {
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl fmt::Debug for TestServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestServer").field("url", &self.shared.base_url).finish_non_exhaustive()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl TestServer {
    /// Starts a server with the default [`Config`] on 127.0.0.1 (any free port).
    pub async fn start() -> std::io::Result<TestServer> {
        TestServer::start_with(Config::default()).await
    }

    /// Starts a server with `config`.
    pub async fn start_with(config: Config) -> std::io::Result<TestServer> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Shared {
            token: config.token,
            world: Mutex::new(World::new(config.timing, base_url.clone())),
            base_url,
            limit: Mutex::new((config.rate_limit, Windows::default())),
            faults: Mutex::default(),
            random: Mutex::default(),
            random_hits: AtomicU64::new(0),
            counts: Mutex::default(),
            throttled: AtomicU64::new(0),
            sequence: AtomicU64::new(0),
            violations: Mutex::default(),
            description: Description::shared(),
        });
        let app = Router::new().fallback(serve).with_state(shared.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let server = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = rx.await;
            });
            if let Err(e) = server.await {
                tracing::warn!("DigitalOcean test server stopped: {e}");
            }
        });
        Ok(TestServer { shared, shutdown: Some(tx) })
    }

    /// The base URL, for `DIGITALOCEAN_API_URL`.
    pub fn url(&self) -> &str {
        &self.shared.base_url
    }

    /// The token requests must carry, for `DIGITALOCEAN_TOKEN`.
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// Sets (or removes) the rate limit; the request log is kept.
    pub fn set_rate_limit(&self, limit: Option<RateLimit>) {
        lock(&self.shared.limit).0 = limit;
    }

    /// Records `n` requests at once in the rate limit's log, as another client of the same token
    /// would have made them.
    pub fn consume_rate_limit(&self, n: u32) {
        let mut guard = lock(&self.shared.limit);
        let (limit, windows) = &mut *guard;
        if let Some(limit) = limit {
            let now = Instant::now();
            for _ in 0..n {
                windows.admit(limit, now);
            }
        }
    }

    /// Records `n` requests spread evenly over the last `over` (at most one short window), as another
    /// client of the same token that has been busy for a while would have made them. Use on a
    /// server whose limit has seen no requests yet.
    pub fn consume_rate_limit_over(&self, n: u32, over: Duration) {
        let mut guard = lock(&self.shared.limit);
        let (limit, windows) = &mut *guard;
        if let Some(limit) = limit {
            let now = Instant::now();
            let span = over.min(limit.minute);
            for i in 0..n {
                // Oldest first, so the log stays in time order.
                let ago = span.mul_f64(f64::from(n - i) / f64::from(n.max(1)));
                windows.admit(limit, now.checked_sub(ago).unwrap_or(now));
            }
        }
    }

    /// Changes boot and action durations for what happens from now on.
    pub fn set_timing(&self, timing: Delays) {
        lock(&self.shared.world).set_timing(timing);
    }

    /// From now on, each request fails with probability `rate` with one of `faults` (picked
    /// uniformly), from a PRNG seeded with `seed`. Faults armed with [`TestServer::inject`] strike
    /// first.
    pub fn inject_randomly(&self, seed: u64, rate: f64, faults: Vec<Fault>) {
        *lock(&self.shared.random) =
            (!faults.is_empty()).then(|| (StdRng::seed_from_u64(seed), rate, faults));
    }

    /// How many random faults ([`TestServer::inject_randomly`]) struck so far.
    pub fn random_faults(&self) -> u64 {
        self.shared.random_hits.load(Ordering::SeqCst)
    }

    /// Injects `fault` into the next `times` requests of `operation_id` (`"*"` = any operation).
    pub fn inject(&self, operation_id: &str, fault: Fault, times: usize) {
        lock(&self.shared.faults).push((operation_id.to_string(), fault, times));
    }

    /// Requests received, by operation ID (`unknown` for paths the description lacks).
    pub fn request_counts(&self) -> BTreeMap<String, u64> {
        lock(&self.shared.counts).clone()
    }

    /// Requests received for one operation ID.
    pub fn request_count(&self, operation_id: &str) -> u64 {
        lock(&self.shared.counts).get(operation_id).copied().unwrap_or(0)
    }

    /// All requests received.
    pub fn total_requests(&self) -> u64 {
        lock(&self.shared.counts).values().sum()
    }

    /// Requests answered `429`.
    pub fn throttled(&self) -> u64 {
        self.shared.throttled.load(Ordering::SeqCst)
    }

    /// Zeroes the request counters and the `429` count.
    pub fn reset_counts(&self) {
        lock(&self.shared.counts).clear();
        self.shared.throttled.store(0, Ordering::SeqCst);
    }

    /// Every violation recorded so far.
    pub fn violations(&self) -> Vec<Violation> {
        lock(&self.shared.violations).clone()
    }

    /// Whether messages are being checked against the description.
    pub fn conformance(&self) -> Conformance {
        match &self.shared.description {
            Ok(d) => Conformance::Checked(d.path().to_path_buf()),
            Err(e) => Conformance::Skipped(e.to_string()),
        }
    }

    /// Panics if any request or response violated the description. When the description is
    /// unavailable, prints that the check is SKIPPED, and panics if `CI=true`.
    pub fn assert_conforms(&self) {
        match self.conformance() {
            Conformance::Checked(_) => {
                let v = self.violations();
                assert!(
                    v.is_empty(),
                    "{} message(s) violate DigitalOcean's OpenAPI description:\n{}",
                    v.len(),
                    v.iter().map(|v| format!("  - {v}")).collect::<Vec<_>>().join("\n")
                );
            }
            Conformance::Skipped(reason) => {
                skipped("the OpenAPI conformance check of the DigitalOcean test server", &reason);
            }
        }
    }

    /// Runs `f` on the account state (after applying due transitions).
    pub fn with_world<R>(&self, f: impl FnOnce(&mut World) -> R) -> R {
        let mut w = lock(&self.shared.world);
        w.tick(Instant::now());
        f(&mut w)
    }

    /// Every droplet.
    pub fn droplets(&self) -> Vec<Droplet> {
        self.with_world(|w| w.droplets())
    }

    /// Every firewall, as the API shows it.
    pub fn firewalls(&self) -> Vec<Value> {
        self.with_world(|w| w.firewalls_json())
    }

    /// Every reserved IP, as the API shows it.
    pub fn reserved_ips(&self) -> Vec<Value> {
        self.with_world(|w| w.reserved_ips_json())
    }

    /// Every tag.
    pub fn tags(&self) -> Vec<String> {
        self.with_world(|w| w.tags())
    }

    /// Checks one message body against a schema of the description, e.g. to prove that a bad
    /// response would be caught. `None` when the description is unavailable.
    pub fn check_response(&self, method: &str, path: &str, status: u16, body: &Value) -> Option<Vec<String>> {
        let d = self.shared.description.as_ref().ok()?;
        Some(d.check_response(method, path, status, &[], Some(body)))
    }
}

/// Reports that `what` was skipped for `reason`: loudly on the terminal even when the test harness
/// captures output, and as a failure when `CI=true`.
///
/// # Panics
/// Under `CI=true`, so a CI run can never pass by skipping.
pub fn skipped(what: &str, reason: &str) {
    use std::io::Write as _;
    // Written to the stderr handle, not through `eprintln!`, which the test harness captures.
    let _ = writeln!(std::io::stderr(), "\n*** SKIPPED: {what}: {reason} ***\n");
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{what} skipped under CI=true: {reason}");
}

fn next_request_id(shared: &Shared) -> String {
    let n = shared.sequence.fetch_add(1, Ordering::SeqCst) + 1;
    format!("7e1c3a50-0d1f-4c7b-9e2a-{n:012x}")
}

fn take_fault(shared: &Shared, operation_id: &str) -> Option<Fault> {
    let mut faults = lock(&shared.faults);
    let Some(i) = faults.iter().position(|(op, _, n)| *n > 0 && (op == operation_id || op == "*")) else {
        return roll(shared);
    };
    faults[i].2 -= 1;
    let fault = faults[i].1;
    faults.retain(|(_, _, n)| *n > 0);
    Some(fault)
}

/// A random fault, when [`TestServer::inject_randomly`] asked for them and the dice say so.
fn roll(shared: &Shared) -> Option<Fault> {
    let mut random = lock(&shared.random);
    let (rng, rate, faults) = random.as_mut()?;
    if rng.random::<f64>() >= *rate {
        return None;
    }
    shared.random_hits.fetch_add(1, Ordering::SeqCst);
    Some(faults[rng.random_range(0..faults.len())])
}

/// Every request lands here: count, check, authenticate, rate-limit, inject, handle, check again.
async fn serve(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let method = parts.method.as_str().to_string();
    let path = parts.uri.path().to_string();
    let target = parts.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| path.clone());
    let query: Vec<(String, String)> = form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let request_id = next_request_id(&shared);
    let bytes = axum::body::to_bytes(body, 4 << 20).await.unwrap_or_default();
    let content_type = parts.headers.get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);

    let routed = world::route(&method, &path);
    let description = shared.description.as_ref().ok().cloned();
    let operation_id = routed
        .as_ref()
        .map(|(_, id, _)| id.to_string())
        .or_else(|| description.as_ref().and_then(|d| d.operation_id(&method, &path)))
        .unwrap_or_else(|| "unknown".to_string());
    *lock(&shared.counts).entry(operation_id.clone()).or_default() += 1;

    let record = |direction, status, problems: Vec<String>| {
        lock(&shared.violations).push(Violation {
            direction,
            method: method.clone(),
            target: target.clone(),
            status,
            problems,
        });
    };

    let mut headers: Vec<(String, String)> = Vec::new();
    let reply = 'reply: {
        if let Some(d) = &description {
            let problems = d.check_request(&RequestParts {
                method: &method,
                path: &path,
                query: query.clone(),
                content_type: content_type.as_deref(),
                body: (!bytes.is_empty()).then_some(&bytes[..]),
            });
            if !problems.is_empty() {
                let message = format!("request rejected by the OpenAPI description: {}", problems.join("; "));
                record(Direction::Request, None, problems);
                break 'reply Reply::error(400, "bad_request", message);
            }
        }
        let authorized = parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| t == shared.token);
        if !authorized {
            break 'reply Reply::error(401, "unauthorized", "Unable to authenticate you");
        }
        {
            let mut guard = lock(&shared.limit);
            let (limit, windows) = &mut *guard;
            if let Some(limit) = limit {
                let verdict = windows.admit(limit, Instant::now());
                headers.extend(verdict.headers);
                if !verdict.admitted {
                    shared.throttled.fetch_add(1, Ordering::SeqCst);
                    break 'reply Reply::error(429, "too_many_requests", "API rate limit exceeded.");
                }
            }
        }
        let Some((op, _, params)) = routed else {
            if description.as_ref().is_some_and(|d| d.template_for(&path).is_some()) {
                record(
                    Direction::Request,
                    None,
                    vec![format!(
                        "{method} {path} is in the description but not implemented by the test server"
                    )],
                );
            }
            break 'reply Reply::error(
                404,
                "not_found",
                "The resource you were accessing could not be found.",
            );
        };
        let fault = take_fault(&shared, &operation_id);
        match fault {
            Some(Fault::Fail(status)) => break 'reply injected(status),
            Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
            _ => {}
        }
        let body_json: Option<Value> =
            if bytes.is_empty() { None } else { serde_json::from_slice(&bytes).ok() };
        let reply = {
            let call = Call { params: &params, query: &query, path: &path, body: body_json.as_ref() };
            lock(&shared.world).handle(op, &call, Instant::now())
        };
        match fault {
            Some(Fault::FailAfter(status)) => injected(status),
            Some(Fault::DelayAfter(d)) => {
                tokio::time::sleep(d).await;
                reply
            }
            _ => reply,
        }
    };

    let mut body = reply.body;
    if reply.status >= 400
        && let Some(Value::Object(map)) = &mut body
    {
        map.insert("request_id".into(), Value::String(request_id.clone()));
    }
    if headers.iter().all(|(n, _)| n != "ratelimit-limit") {
        // Without a configured limit the headers still come, as DigitalOcean always sends them.
        headers.extend([
            ("ratelimit-limit".to_string(), "5000".to_string()),
            ("ratelimit-remaining".to_string(), "4999".to_string()),
            ("ratelimit-reset".to_string(), unix_now().to_string()),
        ]);
    }
    if body.is_some() || method == "DELETE" {
        headers.push(("content-type".to_string(), "application/json; charset=utf-8".to_string()));
    }
    headers.push(("x-request-id".to_string(), request_id));
    if let Some(d) = &description {
        let problems = d.check_response(&method, &path, reply.status, &headers, body.as_ref());
        if !problems.is_empty() {
            record(Direction::Response, Some(reply.status), problems);
        }
    }
    build_response(reply.status, &headers, body)
}

fn injected(status: u16) -> Reply {
    match status {
        429 => Reply::error(429, "too_many_requests", "API rate limit exceeded."),
        s if s >= 500 => {
            Reply::error(s, "server_error", "Unexpected server-side error (injected by the test).")
        }
        s => Reply::error(s, "injected", "Injected by the test."),
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn build_response(status: u16, headers: &[(String, String)], body: Option<Value>) -> Response {
    let bytes = body.map(|b| serde_json::to_vec(&b).unwrap_or_default()).unwrap_or_default();
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) =
            (axum::http::HeaderName::try_from(name.as_str()), HeaderValue::from_str(value))
        {
            resp.headers_mut().append(n, v);
        }
    }
    resp
}
