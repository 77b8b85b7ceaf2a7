//! The server's account state and the semantics of each operation.
//!
//! Time-driven transitions (a droplet going `new` → `active`, an action completing) are applied
//! lazily by [`World::tick`] at the start of every request, so the state needs no background task
//! and is always consistent with the clock when it is read.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Instant, SystemTime};

use serde_json::{Value, json};

use crate::catalog;

mod droplets;
mod json;
mod model;
mod resources;
mod routes;

use json::action_json;
pub use json::rfc3339;
use model::{Action, Effect, Firewall, ReservedIp, documentation_addresses};
pub use model::{Call, Delays, Droplet, DropletStatus, Reply, valid_tag};
pub use routes::{Operation, ROUTES, route};

/// The largest page DigitalOcean serves.
pub const MAX_PER_PAGE: usize = 200;
/// DigitalOcean's default page size.
pub const DEFAULT_PER_PAGE: usize = 20;
/// Names per multi-create request (documented limit).
pub const MAX_NAMES_PER_CREATE: usize = 10;
/// DigitalOcean's limit on user data.
pub const USER_DATA_LIMIT: usize = 64 * 1024;

/// The account.
#[derive(Debug)]
pub struct World {
    timing: Delays,
    base_url: String,
    next_droplet: u64,
    next_action: u64,
    next_firewall: u64,
    droplets: BTreeMap<u64, Droplet>,
    tags: BTreeSet<String>,
    firewalls: BTreeMap<String, Firewall>,
    reserved_ips: BTreeMap<Ipv4Addr, ReservedIp>,
    actions: BTreeMap<u64, Action>,
    public_pool: Vec<Ipv4Addr>,
    next_private: u32,
}

impl World {
    /// An empty account whose pagination links point at `base_url`.
    pub fn new(timing: Delays, base_url: String) -> Self {
        World {
            timing,
            base_url,
            next_droplet: 500_000_001,
            next_action: 900_000_001,
            next_firewall: 1,
            droplets: BTreeMap::new(),
            tags: BTreeSet::new(),
            firewalls: BTreeMap::new(),
            reserved_ips: BTreeMap::new(),
            actions: BTreeMap::new(),
            public_pool: documentation_addresses(),
            next_private: 0,
        }
    }

    /// Changes the timing for what is created from now on.
    pub fn set_timing(&mut self, timing: Delays) {
        self.timing = timing;
    }

    /// Applies every transition due by `now`.
    pub fn tick(&mut self, now: Instant) {
        for d in self.droplets.values_mut() {
            if d.status == DropletStatus::New && d.active_at <= now {
                d.status = DropletStatus::Active;
            }
        }
        let due: Vec<u64> = self
            .actions
            .values()
            .filter(|a| a.completed.is_none() && a.done_at <= now)
            .map(|a| a.id)
            .collect();
        for id in due {
            let effect = match self.actions.get_mut(&id) {
                Some(a) => {
                    a.completed = Some(SystemTime::now());
                    std::mem::replace(&mut a.effect, Effect::None)
                }
                None => continue,
            };
            self.apply(effect);
        }
    }

    fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::None => {}
            Effect::PowerOff(id) => {
                if let Some(d) = self.droplets.get_mut(&id) {
                    d.status = DropletStatus::Off;
                }
            }
            Effect::PowerOn(id) => {
                if let Some(d) = self.droplets.get_mut(&id) {
                    d.status = DropletStatus::Active;
                }
            }
            Effect::Resize(id, size) => {
                if let Some(d) = self.droplets.get_mut(&id) {
                    d.size = size;
                }
            }
            Effect::Rename(id, name) => {
                if let Some(d) = self.droplets.get_mut(&id) {
                    d.name = name;
                }
            }
            Effect::Assign(ip, droplet) => {
                if let Some(r) = self.reserved_ips.get_mut(&ip) {
                    r.droplet = Some(droplet);
                }
            }
            Effect::Unassign(ip) => {
                if let Some(r) = self.reserved_ips.get_mut(&ip) {
                    r.droplet = None;
                }
            }
        }
    }

    /// Every droplet, by ID.
    pub fn droplets(&self) -> Vec<Droplet> {
        self.droplets.values().cloned().collect()
    }

    /// Every firewall as JSON.
    pub fn firewalls_json(&self) -> Vec<Value> {
        self.firewalls.values().map(|f| self.firewall_json(f)).collect()
    }

    /// Every reserved IP as JSON.
    pub fn reserved_ips_json(&self) -> Vec<Value> {
        self.reserved_ips.values().map(|r| self.reserved_ip_json(r)).collect()
    }

    /// Every tag name.
    pub fn tags(&self) -> Vec<String> {
        self.tags.iter().cloned().collect()
    }

    /// Adds droplets directly (bypassing the API), e.g. to make an account with 500 droplets.
    pub fn seed_droplet(
        &mut self,
        name: &str,
        region: &str,
        size: &str,
        image: &str,
        tags: &[String],
        active: bool,
    ) -> Option<u64> {
        let now = Instant::now();
        let id = self.insert_droplet(name, region, size, image, tags, None, now)?;
        if active && let Some(d) = self.droplets.get_mut(&id) {
            d.status = DropletStatus::Active;
        }
        Some(id)
    }

    /// Handles one call.
    pub fn handle(&mut self, op: Operation, call: &Call<'_>, now: Instant) -> Reply {
        self.tick(now);
        match op {
            Operation::DropletsList => self.droplets_list(call),
            Operation::DropletsCreate => self.droplets_create(call, now),
            Operation::DropletsGet => {
                match call.param_u64("droplet_id").and_then(|id| self.droplets.get(&id)) {
                    Some(d) => Reply::ok(200, json!({ "droplet": self.droplet_json(d) })),
                    None => Reply::not_found(),
                }
            }
            Operation::DropletsDestroy => self.droplets_destroy(call),
            Operation::DropletActionsPost => self.droplet_action(call, now),
            Operation::DropletActionsGet => {
                let droplet = call.param_u64("droplet_id");
                match call.param_u64("action_id").and_then(|id| self.actions.get(&id)) {
                    Some(a) if a.resource_type == "droplet" && Some(a.resource_id) == droplet => {
                        Reply::ok(200, json!({ "action": action_json(a) }))
                    }
                    _ => Reply::not_found(),
                }
            }
            Operation::ActionsGet => match call.param_u64("action_id").and_then(|id| self.actions.get(&id)) {
                Some(a) => Reply::ok(200, json!({ "action": action_json(a) })),
                None => Reply::not_found(),
            },
            Operation::TagsCreate => self.tags_create(call),
            Operation::TagsGet => match call.params.get("tag_id") {
                Some(t) if self.tags.contains(t) => Reply::ok(200, json!({ "tag": self.tag_json(t) })),
                _ => Reply::not_found(),
            },
            Operation::TagsDelete => self.tags_delete(call),
            Operation::TagsAssign | Operation::TagsUnassign => {
                self.tag_resources(call, op == Operation::TagsAssign)
            }
            Operation::FirewallsList => {
                let items = self.firewalls.values().map(|f| self.firewall_json(f)).collect();
                self.page(call, items, "firewalls")
            }
            Operation::FirewallsCreate => self.firewall_write(call, None),
            Operation::FirewallsGet => {
                match call.params.get("firewall_id").and_then(|id| self.firewalls.get(id)) {
                    Some(f) => Reply::ok(200, json!({ "firewall": self.firewall_json(f) })),
                    None => Reply::not_found(),
                }
            }
            Operation::FirewallsUpdate => match call.params.get("firewall_id") {
                Some(id) if self.firewalls.contains_key(id) => self.firewall_write(call, Some(id.clone())),
                _ => Reply::not_found(),
            },
            Operation::FirewallsDelete => {
                match call.params.get("firewall_id").and_then(|id| self.firewalls.remove(id)) {
                    Some(_) => Reply::empty(),
                    None => Reply::not_found(),
                }
            }
            Operation::FirewallsAddTags | Operation::FirewallsDeleteTags => {
                self.firewall_tags(call, op == Operation::FirewallsAddTags)
            }
            Operation::ReservedIpsList => {
                let items = self.reserved_ips.values().map(|r| self.reserved_ip_json(r)).collect();
                self.page(call, items, "reserved_ips")
            }
            Operation::ReservedIpsCreate => self.reserved_ip_create(call, now),
            Operation::ReservedIpsGet => match self.reserved_ip_param(call) {
                Some(r) => Reply::ok(200, json!({ "reserved_ip": self.reserved_ip_json(r) })),
                None => Reply::not_found(),
            },
            Operation::ReservedIpsDelete => match self.reserved_ip_param(call).map(|r| r.ip) {
                Some(ip) => {
                    self.reserved_ips.remove(&ip);
                    self.public_pool.push(ip);
                    Reply::empty()
                }
                None => Reply::not_found(),
            },
            Operation::ReservedIpActionsPost => self.reserved_ip_action(call, now),
            Operation::ReservedIpActionsGet => {
                let ip = self.reserved_ip_param(call).map(|r| u32::from(r.ip) as u64);
                match call.param_u64("action_id").and_then(|id| self.actions.get(&id)) {
                    Some(a) if a.resource_type == "reserved_ip" && Some(a.resource_id) == ip => {
                        Reply::ok(200, json!({ "action": action_json(a) }))
                    }
                    _ => Reply::not_found(),
                }
            }
            Operation::RegionsList => {
                let items = catalog::REGIONS.iter().map(catalog::region_json).collect();
                self.page(call, items, "regions")
            }
            Operation::SizesList => {
                let items = catalog::SIZES.iter().map(catalog::size_json).collect();
                self.page(call, items, "sizes")
            }
        }
    }

    /// One page of `items` under `key`, with `links.pages` (absolute URLs) and `meta.total`.
    fn page(&self, call: &Call<'_>, items: Vec<Value>, key: &str) -> Reply {
        let per_page = call
            .query("per_page")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(DEFAULT_PER_PAGE)
            .clamp(1, MAX_PER_PAGE);
        let page = call.query("page").and_then(|v| v.parse::<usize>().ok()).unwrap_or(1).max(1);
        let total = items.len();
        let last = total.div_ceil(per_page).max(1);
        let slice: Vec<Value> = items.into_iter().skip((page - 1) * per_page).take(per_page).collect();
        let link = |n: usize| {
            let mut q = form_urlencoded::Serializer::new(String::new());
            q.append_pair("page", &n.to_string());
            for (k, v) in call.query.iter().filter(|(k, _)| k != "page") {
                q.append_pair(k, v);
            }
            format!("{}{}?{}", self.base_url, call.path, q.finish())
        };
        let mut pages = serde_json::Map::new();
        if page > 1 {
            pages.insert("first".into(), link(1).into());
            pages.insert("prev".into(), link(page - 1).into());
        }
        if page < last {
            pages.insert("next".into(), link(page + 1).into());
            pages.insert("last".into(), link(last).into());
        }
        Reply::ok(200, json!({ key: slice, "links": { "pages": pages }, "meta": { "total": total } }))
    }
}
