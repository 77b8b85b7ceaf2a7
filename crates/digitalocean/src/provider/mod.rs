//! [`DigitalOceanProvider`]: droplets, firewalls and reserved IPs of a network.
//!
//! Split along DigitalOcean's seams: [`batch`] coalesces droplet creates, [`wait`] polls until
//! DigitalOcean settles, [`droplet`], [`firewall`] and [`reserved_ip`] hold each object's calls;
//! this module holds the shared client, listings and the [`MachineProvider`] impl.

mod batch;
mod droplet;
mod firewall;
mod reserved_ip;
mod wait;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::FutureExt as _;
use peerfleet_core::Address;
use peerfleet_core::network::ProviderKind;
use peerfleet_core::provider::{CreateContext, ErrorKind, Inventory, MachineProvider, ProviderError, Secret};
use peerfleet_core::resource::{Firewall, FirewallSpec, Machine, MachineSpec, StableIp, StableIpSpec};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::client::{Answer, Api, Retry, Stats};
use crate::error::{ApiError, PROVIDER, invalid};
use crate::limit::RateLimiter;
use crate::listing::{ListKey, Listings};
use crate::model::{self, Droplet, ReservedIp};
use crate::ownership::{self, machine_of, network_tag};
use crate::settings::{Settings, token_from_env};

pub use batch::MAX_NAMES_PER_CREATE;

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

struct Inner {
    api: Api,
    settings: Settings,
    listings: Listings,
    batches: Mutex<HashMap<String, Vec<batch::Pending>>>,
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
        let api = Api::new(&settings.api_url, &token, limiter, settings.retry, settings.request_timeout)?;
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

    /// Deletes what `path` names; one that is already gone counts as deleted.
    pub(super) async fn delete(&self, path: &str) -> Result<(), ProviderError> {
        let result = self.call(Method::DELETE, path, None, Retry::Safe).await;
        self.touch();
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub(super) async fn ensure_tag(&self, tag: &str) -> Result<(), ProviderError> {
        self.call(Method::POST, "/v2/tags", Some(&json!({ "name": tag })), Retry::Safe).await?;
        Ok(())
    }

    pub(super) async fn tag_droplet(&self, tag: &str, id: u64, add: bool) -> Result<(), ProviderError> {
        let body = json!({ "resources": [{ "resource_id": id.to_string(), "resource_type": "droplet" }] });
        let method = if add { Method::POST } else { Method::DELETE };
        match self.call(method, &format!("/v2/tags/{tag}/resources"), Some(&body), Retry::Safe).await {
            Ok(_) => Ok(()),
            // Removing a tag that no longer exists leaves the droplet without it: done.
            Err(e) if e.is_not_found() && !add => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
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

    /// Its client retries each request, and its look-up-before-create loops retry creates ([`crate::client`]).
    fn retries_requests(&self) -> bool {
        true
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
                    provider: Some(ProviderKind::DigitalOcean),
                })
            })
            .collect();
        stable_ips.sort_by(|a, b| a.address.cmp(&b.address));
        Ok(Inventory { machines, firewalls, stable_ips })
    }

    async fn create_machine(
        &self,
        spec: &MachineSpec,
        ctx: &CreateContext,
    ) -> Result<Machine, ProviderError> {
        self.inner.create_machine(spec, ctx).await
    }

    async fn update_machine(&self, current: &Machine, spec: &MachineSpec) -> Result<Machine, ProviderError> {
        self.inner.update_machine(current, spec).await
    }

    async fn delete_machine(&self, current: &Machine) -> Result<(), ProviderError> {
        let id = parse_id("machine", &current.id)?;
        self.inner.delete(&format!("/v2/droplets/{id}")).await
    }

    async fn create_firewall(&self, spec: &FirewallSpec) -> Result<Firewall, ProviderError> {
        self.inner.create_firewall(spec).await
    }

    async fn update_firewall(
        &self,
        current: &Firewall,
        spec: &FirewallSpec,
    ) -> Result<Firewall, ProviderError> {
        self.inner.update_firewall(current, spec).await
    }

    async fn delete_firewall(&self, current: &Firewall) -> Result<(), ProviderError> {
        self.inner.delete(&format!("/v2/firewalls/{}", current.id)).await
    }

    async fn find_stable_ip(&self, remembered: &StableIp) -> Result<Option<StableIp>, ProviderError> {
        self.inner.find_stable_ip(remembered).await
    }

    async fn create_stable_ip(
        &self,
        spec: &StableIpSpec,
        machine: &Machine,
    ) -> Result<StableIp, ProviderError> {
        self.inner.create_stable_ip(spec, machine).await
    }

    async fn attach_stable_ip(
        &self,
        current: &StableIp,
        machine: &Machine,
    ) -> Result<StableIp, ProviderError> {
        self.inner.attach_stable_ip(current, machine).await
    }

    async fn delete_stable_ip(&self, current: &StableIp) -> Result<(), ProviderError> {
        self.inner.delete_stable_ip(current).await
    }
}
