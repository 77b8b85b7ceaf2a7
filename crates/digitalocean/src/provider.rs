//! [`DigitalOceanProvider`]: droplets, firewalls and reserved IPs of a network.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt as _;
use futures::future::BoxFuture;
use peerfleet_core::Address;
use peerfleet_core::bootstrap::{self, DIGITALOCEAN_USER_DATA_LIMIT};
use peerfleet_core::network::ProviderKind;
use peerfleet_core::provider::{CreateContext, ErrorKind, Inventory, MachineProvider, ProviderError, Secret};
use peerfleet_core::resource::{
    Firewall, FirewallRule, FirewallSpec, Machine, MachineSpec, MachineStatus, Protocol, StableIp,
    StableIpSpec,
};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::client::{Answer, Api, Retry, Stats};
use crate::error::{ApiError, PROVIDER, invalid};
use crate::limit::RateLimiter;
use crate::listing::{ListKey, Listings};
use crate::model::{self, Droplet, ReservedIp, Rule, Target};
use crate::ownership::{self, firewall_tag, machine_of, network_tag};
use crate::settings::{Settings, token_from_env};

/// Most droplets one create request may name (DigitalOcean's documented limit).
pub const MAX_NAMES_PER_CREATE: usize = 10;

/// The DigitalOcean machine provider. Cloning is cheap and shares the token's rate limiter, listings
/// and create batches.
#[derive(Clone)]
pub struct DigitalOceanProvider {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DigitalOceanProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigitalOceanProvider")
            .field("api", &self.inner.api)
            .field("token", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// One droplet a create asks for.
struct CreateRequest {
    name: String,
    region: String,
    generation_tag: String,
    /// The request body without `name`: requests with equal bodies may share one multi-create.
    body: Value,
}

/// A create waiting in its batch.
struct Pending {
    request: CreateRequest,
    arrived: Instant,
    reply: oneshot::Sender<Result<Droplet, ApiError>>,
}

/// One droplet to make, and everyone waiting for it.
struct Wanted {
    name: String,
    region: String,
    generation_tag: String,
    body: Value,
    replies: Vec<oneshot::Sender<Result<Droplet, ApiError>>>,
}

impl Wanted {
    fn answer(self, result: Result<Droplet, ApiError>) {
        for r in self.replies {
            let _ = r.send(result.clone());
        }
    }

    /// Whether `d` is this droplet made earlier: same name, region and generation, still there.
    fn is(&self, d: &Droplet) -> bool {
        d.name == self.name
            && d.region.slug == self.region
            && d.tags.contains(&self.generation_tag)
            && d.status != "archive"
    }
}

struct Inner {
    api: Api,
    settings: Settings,
    listings: Listings,
    batches: Mutex<HashMap<String, Vec<Pending>>>,
    /// When this provider last changed something; inventories never reuse a listing older than it.
    changed: Mutex<Instant>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn transient(message: impl Into<String>) -> ProviderError {
    ProviderError::new(ErrorKind::Transient, PROVIDER, message)
}

fn parse_id(what: &str, id: &str) -> Result<u64, ProviderError> {
    id.parse().map_err(|_| invalid(format!("{what} ID {id:?} is not a DigitalOcean droplet ID")))
}

/// Deserializes listed objects, skipping (and logging) any that do not have the expected shape.
fn parse_all<T: serde::de::DeserializeOwned>(what: &str, items: &[Value]) -> Vec<T> {
    items
        .iter()
        .filter_map(|v| match serde_json::from_value(v.clone()) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!("skipping a {what} of unexpected shape: {e}");
                None
            }
        })
        .collect()
}

impl DigitalOceanProvider {
    /// A provider from the environment: the token from `DIGITALOCEAN_TOKEN` (or
    /// `DIGITALOCEAN_ACCESS_TOKEN`), the API from `DIGITALOCEAN_API_URL` (default DigitalOcean's).
    ///
    /// # Errors
    /// `Unauthorized` without a token; `Invalid` for an unusable URL.
    pub fn from_env() -> Result<Self, ProviderError> {
        DigitalOceanProvider::new(token_from_env()?, Settings::from_env())
    }

    /// A provider with an explicit token and settings (tests, benchmarks, embedding).
    ///
    /// # Errors
    /// `Invalid` for an unusable URL, `Unauthorized` for a token no header can carry.
    pub fn new(token: Secret, settings: Settings) -> Result<Self, ProviderError> {
        let limiter = RateLimiter::new(settings.limits);
        let api = Api::new(&settings.api_url, &token, limiter, settings.retry)?;
        Ok(DigitalOceanProvider {
            inner: Arc::new(Inner {
                api,
                settings,
                listings: Listings::default(),
                batches: Mutex::default(),
                changed: Mutex::new(Instant::now()),
            }),
        })
    }

    /// Requests sent, `429`s seen and retries made so far.
    pub fn stats(&self) -> Stats {
        self.inner.api.stats()
    }

    /// The token's rate limiter.
    pub fn limiter(&self) -> &Arc<RateLimiter> {
        self.inner.api.limiter()
    }

    /// The settings in use.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }
}

impl Inner {
    fn touch(&self) {
        *lock(&self.changed) = Instant::now();
    }

    async fn listed(
        self: &Arc<Self>,
        key: ListKey,
        not_before: Instant,
    ) -> Result<Arc<Vec<Value>>, ApiError> {
        let inner = self.clone();
        let k = key.clone();
        self.listings
            .get(key, not_before, move || {
                async move {
                    let items: Vec<Value> = match &k {
                        ListKey::Droplets(network) => {
                            inner
                                .api
                                .list("/v2/droplets", &[("tag_name", network_tag(network))], "droplets")
                                .await?
                        }
                        ListKey::Firewalls => inner.api.list("/v2/firewalls", &[], "firewalls").await?,
                        ListKey::ReservedIps => {
                            inner.api.list("/v2/reserved_ips", &[], "reserved_ips").await?
                        }
                    };
                    Ok(Arc::new(items))
                }
                .boxed()
            })
            .await
    }

    async fn droplets(
        self: &Arc<Self>,
        network: &str,
        not_before: Instant,
    ) -> Result<Vec<Droplet>, ApiError> {
        let items = self.listed(ListKey::Droplets(network.to_string()), not_before).await?;
        Ok(parse_all("droplet", &items))
    }

    async fn firewalls(self: &Arc<Self>, not_before: Instant) -> Result<Vec<model::Firewall>, ApiError> {
        let items = self.listed(ListKey::Firewalls, not_before).await?;
        Ok(parse_all("firewall", &items))
    }

    async fn reserved_ips(self: &Arc<Self>, not_before: Instant) -> Result<Vec<ReservedIp>, ApiError> {
        let items = self.listed(ListKey::ReservedIps, not_before).await?;
        Ok(parse_all("reserved IP", &items))
    }

    /// The oldest listing an inventory call starting now may use.
    fn inventory_bound(&self) -> Instant {
        let reuse = Instant::now().checked_sub(self.settings.refresh_reuse).unwrap_or_else(Instant::now);
        reuse.max(*lock(&self.changed))
    }

    fn backoff(&self, attempt: u32) -> Duration {
        self.settings.retry.base_delay.saturating_mul(1 << attempt.min(10)).min(self.settings.retry.max_delay)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        retry: Retry,
    ) -> Result<Answer, ApiError> {
        self.api.call(method, path, &[], body, retry).await
    }

    async fn get_droplet(&self, id: u64) -> Result<Droplet, ProviderError> {
        let answer = self.call(Method::GET, &format!("/v2/droplets/{id}"), None, Retry::Safe).await?;
        serde_json::from_value(answer.body.get("droplet").cloned().unwrap_or(Value::Null))
            .map_err(|e| transient(format!("GET /v2/droplets/{id}: unexpected droplet: {e}")))
    }

    // ---- creates ------------------------------------------------------------------------------

    /// Queues a create into its network's batch and waits for the droplet (made or adopted).
    async fn create_droplet(
        self: &Arc<Self>,
        network: &str,
        request: CreateRequest,
    ) -> Result<Droplet, ApiError> {
        let (tx, rx) = oneshot::channel();
        let first = {
            let mut batches = lock(&self.batches);
            let batch = batches.entry(network.to_string()).or_default();
            batch.push(Pending { request, arrived: Instant::now(), reply: tx });
            batch.len() == 1
        };
        if first {
            // The batch runs on its own task, so a caller that gives up cannot strand the others.
            let inner = self.clone();
            let network = network.to_string();
            tokio::spawn(async move {
                tokio::time::sleep(inner.settings.create_window).await;
                inner.flush(&network).await;
            });
        }
        rx.await.unwrap_or_else(|_| {
            Err(ApiError::local(
                ErrorKind::Transient,
                "POST /v2/droplets",
                "the create batch ended without an answer",
            ))
        })
    }

    /// Runs one batch: one look-up for all of it, adoption of what exists, then as few create
    /// requests as the API allows; an ambiguous failure (the droplet may exist) is followed by a new
    /// look-up before anything is created again.
    async fn flush(self: &Arc<Self>, network: &str) {
        let batch = lock(&self.batches).remove(network).unwrap_or_default();
        let Some(mut not_before) = batch.iter().map(|p| p.arrived).max() else { return };
        let mut wanted: Vec<Wanted> = Vec::new();
        for p in batch {
            match wanted.iter_mut().find(|w| w.name == p.request.name) {
                // The same name twice in one batch is one droplet, never two.
                Some(w) => w.replies.push(p.reply),
                None => wanted.push(Wanted {
                    name: p.request.name,
                    region: p.request.region,
                    generation_tag: p.request.generation_tag,
                    body: p.request.body,
                    replies: vec![p.reply],
                }),
            }
        }
        let attempts = self.settings.retry.attempts.max(1);
        let mut last_error = None;
        for attempt in 0..attempts {
            let existing = match self.droplets(network, not_before).await {
                Ok(d) => d,
                Err(e) => {
                    for w in wanted {
                        w.answer(Err(e.clone()));
                    }
                    return;
                }
            };
            let mut missing = Vec::new();
            for w in wanted {
                match existing.iter().filter(|d| w.is(d)).min_by_key(|d| d.id) {
                    Some(d) => {
                        tracing::info!(name = %w.name, id = d.id, "adopting an existing droplet instead of creating one");
                        let d = d.clone();
                        w.answer(Ok(d));
                    }
                    None => missing.push(w),
                }
            }
            if missing.is_empty() {
                return;
            }
            let requests = group_for_create(missing);
            let results =
                futures::future::join_all(requests.iter().map(|group| self.post_create(group))).await;
            self.touch();
            wanted = Vec::new();
            for (group, result) in requests.into_iter().zip(results) {
                match result {
                    Ok(mut made) => {
                        for w in group {
                            match made.iter().position(|d| d.name == w.name) {
                                Some(i) => w.answer(Ok(made.swap_remove(i))),
                                None => w.answer(Err(ApiError::local(
                                    ErrorKind::Transient,
                                    "POST /v2/droplets",
                                    "the answer did not include the droplet",
                                ))),
                            }
                        }
                    }
                    // The request may have been processed: look again before creating again.
                    Err(e) if e.kind == ErrorKind::Transient => {
                        tracing::debug!("create answer lost ({e}); looking up before trying again");
                        last_error = Some(e);
                        wanted.extend(group);
                    }
                    Err(e) => {
                        for w in group {
                            w.answer(Err(e.clone()));
                        }
                    }
                }
            }
            if wanted.is_empty() {
                return;
            }
            tokio::time::sleep(self.backoff(attempt)).await;
            not_before = Instant::now();
        }
        let e = last_error.unwrap_or_else(|| {
            ApiError::local(ErrorKind::Transient, "POST /v2/droplets", "creates kept failing")
        });
        for w in wanted {
            w.answer(Err(e.clone()));
        }
    }

    async fn post_create(&self, group: &[Wanted]) -> Result<Vec<Droplet>, ApiError> {
        let mut body = group[0].body.clone();
        if group.len() == 1 {
            body["name"] = Value::String(group[0].name.clone());
        } else {
            body["names"] = Value::Array(group.iter().map(|w| Value::String(w.name.clone())).collect());
        }
        let answer = self.call(Method::POST, "/v2/droplets", Some(&body), Retry::Unsafe).await?;
        let made = match (answer.body.get("droplet"), answer.body.get("droplets")) {
            (Some(d), _) => vec![d.clone()],
            (None, Some(Value::Array(ds))) => ds.clone(),
            _ => Vec::new(),
        };
        Ok(parse_all("droplet", &made))
    }

    /// Calls `check` until it yields a value, sleeping between calls in proportion to the time
    /// already waited ([`crate::PollPolicy::interval`]); bounded by `timeout`. `check` is given the
    /// instant the previous check began: anything observed since then is news to it.
    async fn poll_until<'a, T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(Instant) -> BoxFuture<'a, Result<Option<T>, ProviderError>> + Send,
    ) -> Result<T, ProviderError> {
        let start = Instant::now();
        let mut since = start;
        loop {
            let elapsed = start.elapsed();
            if elapsed >= timeout {
                return Err(transient(format!("{what} within {} s", timeout.as_secs())));
            }
            tokio::time::sleep(self.settings.poll.interval(elapsed)).await;
            let now = Instant::now();
            if let Some(done) = check(since).await? {
                return Ok(done);
            }
            since = now;
        }
    }

    /// Polls the network's listing until droplet `id` is `active`. Every waiter accepts any listing
    /// that started after its previous look, so all droplets waiting at once share one listing per
    /// round, however slow listings are.
    async fn wait_active(self: &Arc<Self>, network: &str, id: u64) -> Result<Droplet, ProviderError> {
        let what = format!("droplet {id} did not become active");
        self.poll_until(&what, self.settings.poll.active_timeout, |since| {
            async move {
                let listed = self.droplets(network, since).await?;
                match listed.into_iter().find(|d| d.id == id) {
                    Some(d) if d.status == "active" => Ok(Some(d)),
                    Some(d) if d.status == "archive" => Err(ProviderError::new(
                        ErrorKind::NotFound,
                        PROVIDER,
                        format!("droplet {id} was destroyed while booting"),
                    )),
                    // Still `new`, or not listed yet.
                    _ => Ok(None),
                }
            }
            .boxed()
        })
        .await
    }

    /// Polls droplet `id` itself until it is `active` (when its network's listing is not at hand).
    async fn wait_droplet_active(&self, id: u64) -> Result<(), ProviderError> {
        let what = format!("droplet {id} did not become active");
        self.poll_until(&what, self.settings.poll.active_timeout, |_| {
            async move { Ok((self.get_droplet(id).await?.status == "active").then_some(())) }.boxed()
        })
        .await
    }

    /// Polls an action until it completes.
    async fn wait_action(&self, action: u64) -> Result<(), ProviderError> {
        let what = format!("action {action} did not complete");
        self.poll_until(&what, self.settings.poll.action_timeout, |_| {
            async move {
                let answer =
                    self.call(Method::GET, &format!("/v2/actions/{action}"), None, Retry::Safe).await?;
                match answer.body.pointer("/action/status").and_then(Value::as_str) {
                    Some("completed") => Ok(Some(())),
                    Some("errored") => Err(transient(format!("action {action} errored"))),
                    _ => Ok(None),
                }
            }
            .boxed()
        })
        .await
    }

    /// Returns what `find` finds in a listing that started at or after the instant it is given;
    /// else runs `create`. A create whose answer was lost (`Transient`) may have happened, so it is
    /// followed by another `find`, never by a blind repeat. Bounded by the retry policy.
    async fn find_or_create<'a, T>(
        &self,
        what: &str,
        mut find: impl FnMut(Instant) -> BoxFuture<'a, Result<Option<T>, ProviderError>> + Send,
        mut create: impl FnMut() -> BoxFuture<'a, Result<T, ProviderError>> + Send,
    ) -> Result<T, ProviderError> {
        let mut not_before = Instant::now();
        let mut last = None;
        for attempt in 0..self.settings.retry.attempts.max(1) {
            if let Some(found) = find(not_before).await? {
                return Ok(found);
            }
            let result = create().await;
            self.touch();
            match result {
                Err(e) if e.kind == ErrorKind::Transient => {
                    tracing::debug!("{what} create answer lost ({e}); looking up before trying again");
                    last = Some(e);
                    tokio::time::sleep(self.backoff(attempt)).await;
                    not_before = Instant::now();
                }
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| transient(format!("{what} creates kept failing"))))
    }

    /// Starts a droplet action and waits for it.
    async fn droplet_action(&self, id: u64, body: Value) -> Result<(), ProviderError> {
        let answer = self
            .call(Method::POST, &format!("/v2/droplets/{id}/actions"), Some(&body), Retry::Unsafe)
            .await?;
        let action: model::Action =
            serde_json::from_value(answer.body.get("action").cloned().unwrap_or(Value::Null))
                .map_err(|e| transient(format!("droplet {id}: unexpected action: {e}")))?;
        self.wait_action(action.id).await
    }

    /// Brings droplet `id` to `size` (off, resize, on), from whatever state a crash left it in.
    async fn resize(self: &Arc<Self>, id: u64, size: &str) -> Result<(), ProviderError> {
        // Each step moves the droplet one state further; 8 is more than the longest path.
        for _ in 0..8 {
            let d = self.get_droplet(id).await?;
            if d.locked {
                tokio::time::sleep(self.settings.poll.min_interval).await;
                continue;
            }
            match (d.size_slug == size, d.status.as_str()) {
                (true, "off") => self.droplet_action(id, json!({ "type": "power_on" })).await?,
                (true, _) => return Ok(()),
                (false, "active") => self.droplet_action(id, json!({ "type": "power_off" })).await?,
                // `disk: false` resizes CPU and memory only, which keeps the change reversible.
                (false, "off") => {
                    self.droplet_action(id, json!({ "type": "resize", "size": size, "disk": false })).await?;
                }
                (false, _) => tokio::time::sleep(self.settings.poll.min_interval).await,
            }
        }
        Err(transient(format!("droplet {id}: resize to {size} did not settle")))
    }

    /// Deletes what `path` names; one that is already gone counts as deleted.
    async fn delete(&self, path: &str) -> Result<(), ProviderError> {
        let result = self.call(Method::DELETE, path, None, Retry::Safe).await;
        self.touch();
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The network's firewall of `region` in an answer's `firewall`.
    fn answered_firewall(
        &self,
        answer: &Answer,
        network: &str,
        region: &str,
    ) -> Result<Firewall, ProviderError> {
        let fw: model::Firewall =
            serde_json::from_value(answer.body.get("firewall").cloned().unwrap_or(Value::Null))
                .map_err(|e| transient(format!("unexpected firewall in the answer: {e}")))?;
        self.firewall_of(network, region, &fw)
            .ok_or_else(|| transient("the firewall in the answer lacks its tag"))
    }

    async fn ensure_tag(&self, tag: &str) -> Result<(), ProviderError> {
        self.call(Method::POST, "/v2/tags", Some(&json!({ "name": tag })), Retry::Safe).await?;
        Ok(())
    }

    async fn tag_droplet(&self, tag: &str, id: u64, add: bool) -> Result<(), ProviderError> {
        let body = json!({ "resources": [{ "resource_id": id.to_string(), "resource_type": "droplet" }] });
        let method = if add { Method::POST } else { Method::DELETE };
        match self.call(method, &format!("/v2/tags/{tag}/resources"), Some(&body), Retry::Safe).await {
            Ok(_) => Ok(()),
            // Removing a tag that no longer exists leaves the droplet without it: done.
            Err(e) if e.is_not_found() && !add => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    // ---- firewalls ----------------------------------------------------------------------------

    fn firewall_of(&self, network: &str, region: &str, fw: &model::Firewall) -> Option<Firewall> {
        let tag = firewall_tag(network, region);
        if !fw.tags.as_ref().is_some_and(|t| t.contains(&tag)) {
            return None;
        }
        let rules: Vec<FirewallRule> = fw
            .inbound_rules
            .iter()
            .flatten()
            .filter_map(|r| {
                let protocol = match r.protocol.as_str() {
                    "tcp" => Protocol::Tcp,
                    "udp" => Protocol::Udp,
                    _ => return None,
                };
                let port = r.ports.parse().ok()?;
                let sources = r.sources.as_ref().map(|s| s.addresses.clone()).unwrap_or_default();
                Some(FirewallRule { protocol, port, sources })
            })
            .collect();
        Some(Firewall {
            id: fw.id.clone(),
            address: Address::firewall(ProviderKind::DigitalOcean, region),
            rules: FirewallRule::canonical(&rules),
        })
    }

    fn firewall_body(spec: &FirewallSpec) -> Value {
        let inbound: Vec<Rule> = spec
            .rules
            .iter()
            .map(|r| Rule {
                protocol: match r.protocol {
                    Protocol::Tcp => "tcp".into(),
                    Protocol::Udp => "udp".into(),
                },
                ports: r.port.to_string(),
                sources: Some(Target { addresses: r.sources.clone() }),
                destinations: None,
            })
            .collect();
        // DigitalOcean firewalls drop outbound traffic without outbound rules; a security group
        // allows it. Same rules as AWS means: everything out is allowed.
        let everywhere = Target { addresses: vec!["0.0.0.0/0".into(), "::/0".into()] };
        let outbound: Vec<Rule> = ["tcp", "udp", "icmp"]
            .into_iter()
            .map(|p| Rule {
                protocol: p.into(),
                ports: "0".into(),
                sources: None,
                destinations: Some(everywhere.clone()),
            })
            .collect();
        json!({
            "name": ownership::firewall_name(&spec.network, &spec.region),
            "inbound_rules": inbound,
            "outbound_rules": outbound,
            "tags": [firewall_tag(&spec.network, &spec.region)],
        })
    }
}

/// Splits what must be created into requests: equal bodies (same region, size, image, tags, user
/// data) in the same request, at most [`MAX_NAMES_PER_CREATE`] names each.
fn group_for_create(missing: Vec<Wanted>) -> Vec<Vec<Wanted>> {
    let mut groups: Vec<Vec<Wanted>> = Vec::new();
    for w in missing {
        match groups.iter_mut().find(|g| g.len() < MAX_NAMES_PER_CREATE && g[0].body == w.body) {
            Some(g) => g.push(w),
            None => groups.push(vec![w]),
        }
    }
    groups
}

/// The machine's cloud-init user data: the shared bootstrap (Docker with its API behind mutual TLS),
/// with a server certificate issued for this machine.
///
/// Each machine gets its own server key, so machines' user data differ and each is created by its
/// own request; see the crate documentation for why that is preferred over a shared key.
fn user_data(spec: &MachineSpec, ctx: &CreateContext, settings: &Settings) -> Result<String, ProviderError> {
    let pki = ctx.pki.as_ref().ok_or_else(|| {
        invalid(format!("{}: the network's PKI is needed to bootstrap the engine's TLS", spec.address))
    })?;
    // The IP is not known before the create; the certificate names the machine by its address.
    let tls = pki.issue_server(&spec.address, &[])?;
    let user_data = bootstrap::cloud_init(&tls, &settings.bootstrap);
    bootstrap::check_size(&user_data, DIGITALOCEAN_USER_DATA_LIMIT)
        .map_err(|e| invalid(format!("{}: {e}", spec.address)))?;
    Ok(user_data)
}

fn check_provider(kind: ProviderKind, what: &Address) -> Result<(), ProviderError> {
    if kind == ProviderKind::DigitalOcean {
        Ok(())
    } else {
        Err(invalid(format!("{what} is a {kind} resource, not a DigitalOcean one")))
    }
}

#[async_trait]
impl MachineProvider for DigitalOceanProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::DigitalOcean
    }

    /// One listing of the network's droplets (one request per 200), one of the account's firewalls
    /// and one of its reserved IPs; concurrent inventories of other regions share them.
    async fn inventory(&self, network: &str, region: &str) -> Result<Inventory, ProviderError> {
        ownership::check_network(network)?;
        let inner = &self.inner;
        let bound = inner.inventory_bound();
        let (droplets, firewalls, reserved) =
            tokio::join!(inner.droplets(network, bound), inner.firewalls(bound), inner.reserved_ips(bound));
        let machines: Vec<Machine> = droplets?
            .iter()
            .filter(|d| d.region.slug == region && d.status != "archive")
            .filter_map(|d| machine_of(network, d))
            .collect();
        let firewalls: Vec<Firewall> =
            firewalls?.iter().filter_map(|f| inner.firewall_of(network, region, f)).collect();
        let mut stable_ips: Vec<StableIp> = reserved?
            .iter()
            .filter(|r| r.region.as_ref().is_none_or(|reg| reg.slug == region))
            .filter_map(|r| {
                let droplet = r.droplet_id()?.to_string();
                let machine = machines.iter().find(|m| m.id == droplet)?;
                let Address::Machine { cluster, slot } = &machine.address else { return None };
                Some(StableIp {
                    id: r.ip.clone(),
                    address: Address::stable_ip(cluster.clone(), *slot),
                    ip: r.ip.clone(),
                    machine_id: Some(droplet),
                })
            })
            .collect();
        stable_ips.sort_by(|a, b| a.address.cmp(&b.address));
        Ok(Inventory { machines, firewalls, stable_ips })
    }

    /// Looks up the network's droplets for one of this name and generation right before creating
    /// (adopting it if a crashed run made it), then creates, sharing the look-up and, when bodies are
    /// equal, the request with concurrent creates; returns once the droplet is `active`.
    async fn create_machine(
        &self,
        spec: &MachineSpec,
        ctx: &CreateContext,
    ) -> Result<Machine, ProviderError> {
        check_provider(spec.provider, &spec.address)?;
        let name = ownership::droplet_name(&spec.network, &spec.address)?;
        let tags = ownership::machine_tags(spec)?;
        let image = spec.image.clone().unwrap_or_else(|| self.inner.settings.default_image.clone());
        // An image given by numeric ID is sent as a number, as DigitalOcean expects.
        let image = match image.parse::<u64>() {
            Ok(id) => Value::from(id),
            Err(_) => Value::String(image),
        };
        let user_data = user_data(spec, ctx, &self.inner.settings)?;
        let body = json!({
            "region": spec.region.slug,
            "size": spec.size,
            "image": image,
            "tags": tags,
            "user_data": user_data,
        });
        let request = CreateRequest {
            name,
            region: spec.region.slug.clone(),
            generation_tag: ownership::generation_tag(spec.generation),
            body,
        };
        let droplet = self.inner.create_droplet(&spec.network, request).await?;
        // Only a booting droplet is waited for; an adopted one that was powered off is reported as
        // it is (`Stopped`), for the plan to show.
        let droplet = if droplet.status == "new" {
            self.inner.wait_active(&spec.network, droplet.id).await?
        } else {
            droplet
        };
        machine_of(&spec.network, &droplet).ok_or_else(|| {
            transient(format!("droplet {} does not carry {}'s ownership", droplet.id, spec.address))
        })
    }

    /// Adds and removes deploy, chain and firewall tags; resizes (off, resize CPU/memory, on).
    async fn update_machine(&self, current: &Machine, spec: &MachineSpec) -> Result<Machine, ProviderError> {
        check_provider(spec.provider, &spec.address)?;
        let id = parse_id("machine", &current.id)?;
        let inner = &self.inner;
        let droplet = inner.get_droplet(id).await?;
        // Only tags peerfleet wrote are ever removed: one added by hand is in neither set.
        let want = ownership::managed_tags(&ownership::machine_tags(spec)?);
        let have = ownership::managed_tags(&droplet.tags);
        let changes = async {
            for tag in want.difference(&have) {
                inner.ensure_tag(tag).await?;
                inner.tag_droplet(tag, id, true).await?;
            }
            for tag in have.difference(&want) {
                inner.tag_droplet(tag, id, false).await?;
            }
            if droplet.size_slug != spec.size {
                inner.resize(id, &spec.size).await?;
            }
            Ok::<(), ProviderError>(())
        };
        let result = changes.await;
        // Whatever part of it happened, listings from before are stale now.
        inner.touch();
        result?;
        let droplet = inner.get_droplet(id).await?;
        machine_of(&spec.network, &droplet)
            .ok_or_else(|| transient(format!("droplet {id} lost {}'s ownership", spec.address)))
    }

    async fn delete_machine(&self, current: &Machine) -> Result<(), ProviderError> {
        let id = parse_id("machine", &current.id)?;
        self.inner.delete(&format!("/v2/droplets/{id}")).await
    }

    /// Adopts the network's firewall of the region if one exists (correcting its rules), else
    /// creates it, attached to the region's droplets by tag.
    async fn create_firewall(&self, spec: &FirewallSpec) -> Result<Firewall, ProviderError> {
        check_provider(spec.provider, &spec.address)?;
        ownership::check_network(&spec.network)?;
        let inner = &self.inner;
        inner.ensure_tag(&firewall_tag(&spec.network, &spec.region)).await?;
        let body = &Inner::firewall_body(spec);
        let fw = inner
            .find_or_create(
                "firewall",
                move |not_before| {
                    async move {
                        let existing = inner.firewalls(not_before).await?;
                        Ok(existing.iter().find_map(|f| inner.firewall_of(&spec.network, &spec.region, f)))
                    }
                    .boxed()
                },
                move || {
                    async move {
                        let answer =
                            inner.call(Method::POST, "/v2/firewalls", Some(body), Retry::Unsafe).await?;
                        inner.answered_firewall(&answer, &spec.network, &spec.region)
                    }
                    .boxed()
                },
            )
            .await?;
        // An adopted firewall may have been changed by hand since: converge its rules.
        if fw.rules == FirewallRule::canonical(&spec.rules) {
            Ok(fw)
        } else {
            self.update_firewall(&fw, spec).await
        }
    }

    async fn update_firewall(
        &self,
        current: &Firewall,
        spec: &FirewallSpec,
    ) -> Result<Firewall, ProviderError> {
        check_provider(spec.provider, &spec.address)?;
        let inner = &self.inner;
        inner.ensure_tag(&firewall_tag(&spec.network, &spec.region)).await?;
        let body = Inner::firewall_body(spec);
        let result =
            inner.call(Method::PUT, &format!("/v2/firewalls/{}", current.id), Some(&body), Retry::Safe).await;
        inner.touch();
        let answer = result?;
        inner.answered_firewall(&answer, &spec.network, &spec.region)
    }

    async fn delete_firewall(&self, current: &Firewall) -> Result<(), ProviderError> {
        self.inner.delete(&format!("/v2/firewalls/{}", current.id)).await
    }

    /// Adopts the reserved IP already assigned to the machine, else reserves one assigned to it
    /// (once the droplet is `active`, which DigitalOcean requires).
    async fn create_stable_ip(
        &self,
        spec: &StableIpSpec,
        machine: &Machine,
    ) -> Result<StableIp, ProviderError> {
        check_provider(spec.provider, &spec.address)?;
        let inner = &self.inner;
        let id = parse_id("machine", &machine.id)?;
        if machine.status != MachineStatus::Running {
            inner.wait_active(&spec.network, id).await?;
        }
        let stable = &|ip: &str| StableIp {
            id: ip.to_string(),
            address: spec.address.clone(),
            ip: ip.to_string(),
            machine_id: Some(machine.id.clone()),
        };
        inner
            .find_or_create(
                "reserved IP",
                move |not_before| {
                    async move {
                        let existing = inner.reserved_ips(not_before).await?;
                        Ok(existing.iter().find(|r| r.droplet_id() == Some(id)).map(|r| stable(&r.ip)))
                    }
                    .boxed()
                },
                move || {
                    async move {
                        let answer = inner
                            .call(
                                Method::POST,
                                "/v2/reserved_ips",
                                Some(&json!({ "droplet_id": id })),
                                Retry::Unsafe,
                            )
                            .await?;
                        let ip = answer
                            .body
                            .pointer("/reserved_ip/ip")
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        if ip.is_empty() {
                            return Err(transient("POST /v2/reserved_ips: the answer has no IP"));
                        }
                        if let Some(action) =
                            answer.body.pointer("/links/actions/0/id").and_then(Value::as_u64)
                        {
                            inner.wait_action(action).await?;
                        }
                        Ok(stable(ip))
                    }
                    .boxed()
                },
            )
            .await
    }

    async fn attach_stable_ip(
        &self,
        current: &StableIp,
        machine: &Machine,
    ) -> Result<StableIp, ProviderError> {
        let inner = &self.inner;
        let id = parse_id("machine", &machine.id)?;
        let attached = StableIp { machine_id: Some(machine.id.clone()), ..current.clone() };
        let path = format!("/v2/reserved_ips/{}", current.ip);
        let answer = inner.call(Method::GET, &path, None, Retry::Safe).await?;
        let reserved: ReservedIp =
            serde_json::from_value(answer.body.get("reserved_ip").cloned().unwrap_or(Value::Null))
                .map_err(|e| transient(format!("GET {path}: unexpected reserved IP: {e}")))?;
        if reserved.droplet_id() == Some(id) {
            return Ok(attached);
        }
        if machine.status != MachineStatus::Running {
            inner.wait_droplet_active(id).await?;
        }
        let result = inner
            .call(
                Method::POST,
                &format!("{path}/actions"),
                Some(&json!({ "type": "assign", "droplet_id": id })),
                Retry::Unsafe,
            )
            .await;
        inner.touch();
        let answer = result?;
        if let Some(action) = answer.body.pointer("/action/id").and_then(Value::as_u64) {
            inner.wait_action(action).await?;
        }
        Ok(attached)
    }

    async fn delete_stable_ip(&self, current: &StableIp) -> Result<(), ProviderError> {
        let inner = &self.inner;
        let path = format!("/v2/reserved_ips/{}", current.ip);
        let answer = match inner.call(Method::GET, &path, None, Retry::Safe).await {
            Ok(a) => a,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let assigned = answer.body.pointer("/reserved_ip/droplet/id").is_some_and(|v| !v.is_null());
        if assigned {
            let result = inner
                .call(
                    Method::POST,
                    &format!("{path}/actions"),
                    Some(&json!({ "type": "unassign" })),
                    Retry::Unsafe,
                )
                .await;
            inner.touch();
            if let Some(action) = result?.body.pointer("/action/id").and_then(Value::as_u64) {
                inner.wait_action(action).await?;
            }
        }
        inner.delete(&path).await
    }
}
