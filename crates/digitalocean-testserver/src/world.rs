//! The server's account state and the semantics of each operation.
//!
//! Time-driven transitions (a droplet going `new` → `active`, an action completing) are applied
//! lazily by [`World::tick`] at the start of every request, so the state needs no background task
//! and is always consistent with the clock when it is read.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use crate::catalog;

/// The largest page DigitalOcean serves.
pub const MAX_PER_PAGE: usize = 200;
/// DigitalOcean's default page size.
pub const DEFAULT_PER_PAGE: usize = 20;
/// Names per multi-create request (documented limit).
pub const MAX_NAMES_PER_CREATE: usize = 10;
/// DigitalOcean's limit on user data.
pub const USER_DATA_LIMIT: usize = 64 * 1024;

/// An operation the server implements, named by the description's `operationId`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Op {
    DropletsList,
    DropletsCreate,
    DropletsGet,
    DropletsDestroy,
    DropletActionsPost,
    DropletActionsGet,
    ActionsGet,
    TagsCreate,
    TagsGet,
    TagsDelete,
    TagsAssign,
    TagsUnassign,
    FirewallsList,
    FirewallsCreate,
    FirewallsGet,
    FirewallsUpdate,
    FirewallsDelete,
    FirewallsAddTags,
    FirewallsDeleteTags,
    ReservedIpsList,
    ReservedIpsCreate,
    ReservedIpsGet,
    ReservedIpsDelete,
    ReservedIpActionsPost,
    ReservedIpActionsGet,
    RegionsList,
    SizesList,
}

/// Method, path template and operation ID of every implemented operation.
pub const ROUTES: &[(&str, &str, Op, &str)] = &[
    ("GET", "/v2/droplets", Op::DropletsList, "droplets_list"),
    ("POST", "/v2/droplets", Op::DropletsCreate, "droplets_create"),
    ("GET", "/v2/droplets/{droplet_id}", Op::DropletsGet, "droplets_get"),
    ("DELETE", "/v2/droplets/{droplet_id}", Op::DropletsDestroy, "droplets_destroy"),
    ("POST", "/v2/droplets/{droplet_id}/actions", Op::DropletActionsPost, "dropletActions_post"),
    ("GET", "/v2/droplets/{droplet_id}/actions/{action_id}", Op::DropletActionsGet, "dropletActions_get"),
    ("GET", "/v2/actions/{action_id}", Op::ActionsGet, "actions_get"),
    ("POST", "/v2/tags", Op::TagsCreate, "tags_create"),
    ("GET", "/v2/tags/{tag_id}", Op::TagsGet, "tags_get"),
    ("DELETE", "/v2/tags/{tag_id}", Op::TagsDelete, "tags_delete"),
    ("POST", "/v2/tags/{tag_id}/resources", Op::TagsAssign, "tags_assign_resources"),
    ("DELETE", "/v2/tags/{tag_id}/resources", Op::TagsUnassign, "tags_unassign_resources"),
    ("GET", "/v2/firewalls", Op::FirewallsList, "firewalls_list"),
    ("POST", "/v2/firewalls", Op::FirewallsCreate, "firewalls_create"),
    ("GET", "/v2/firewalls/{firewall_id}", Op::FirewallsGet, "firewalls_get"),
    ("PUT", "/v2/firewalls/{firewall_id}", Op::FirewallsUpdate, "firewalls_update"),
    ("DELETE", "/v2/firewalls/{firewall_id}", Op::FirewallsDelete, "firewalls_delete"),
    ("POST", "/v2/firewalls/{firewall_id}/tags", Op::FirewallsAddTags, "firewalls_add_tags"),
    ("DELETE", "/v2/firewalls/{firewall_id}/tags", Op::FirewallsDeleteTags, "firewalls_delete_tags"),
    ("GET", "/v2/reserved_ips", Op::ReservedIpsList, "reservedIPs_list"),
    ("POST", "/v2/reserved_ips", Op::ReservedIpsCreate, "reservedIPs_create"),
    ("GET", "/v2/reserved_ips/{reserved_ip}", Op::ReservedIpsGet, "reservedIPs_get"),
    ("DELETE", "/v2/reserved_ips/{reserved_ip}", Op::ReservedIpsDelete, "reservedIPs_delete"),
    ("POST", "/v2/reserved_ips/{reserved_ip}/actions", Op::ReservedIpActionsPost, "reservedIPsActions_post"),
    (
        "GET",
        "/v2/reserved_ips/{reserved_ip}/actions/{action_id}",
        Op::ReservedIpActionsGet,
        "reservedIPsActions_get",
    ),
    ("GET", "/v2/regions", Op::RegionsList, "regions_list"),
    ("GET", "/v2/sizes", Op::SizesList, "sizes_list"),
];

/// Finds the route for a request: the operation, its ID and the path parameters by name.
pub fn route(method: &str, path: &str) -> Option<(Op, &'static str, BTreeMap<&'static str, String>)> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut best: Option<(usize, Op, &'static str, BTreeMap<&'static str, String>)> = None;
    for (m, template, op, id) in ROUTES {
        if *m != method {
            continue;
        }
        let tsegs: Vec<&'static str> = template.trim_start_matches('/').split('/').collect();
        if tsegs.len() != segs.len() {
            continue;
        }
        let mut params = BTreeMap::new();
        let mut literals = 0;
        let matched = tsegs.iter().zip(&segs).all(|(t, s)| {
            match t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                Some(name) => {
                    params.insert(name, (*s).to_string());
                    !s.is_empty()
                }
                None => {
                    literals += 1;
                    t == s
                }
            }
        });
        if matched && best.as_ref().is_none_or(|(l, ..)| literals > *l) {
            best = Some((literals, *op, *id, params));
        }
    }
    best.map(|(_, op, id, params)| (op, id, params))
}

/// What a handler answers.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// JSON body, if any.
    pub body: Option<Value>,
}

impl Reply {
    fn ok(status: u16, body: Value) -> Self {
        Reply { status, body: Some(body) }
    }

    fn empty() -> Self {
        Reply { status: 204, body: None }
    }

    /// An error in DigitalOcean's shape (`request_id` is added by the HTTP layer).
    pub fn error(status: u16, id: &str, message: impl Into<String>) -> Self {
        Reply { status, body: Some(json!({ "id": id, "message": message.into() })) }
    }

    fn not_found() -> Self {
        Reply::error(404, "not_found", "The resource you were accessing could not be found.")
    }

    fn unprocessable(message: impl Into<String>) -> Self {
        Reply::error(422, "unprocessable_entity", message)
    }
}

/// Droplet life-cycle status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropletStatus {
    /// Booting.
    New,
    /// Running.
    Active,
    /// Powered off.
    Off,
}

impl DropletStatus {
    fn as_str(self) -> &'static str {
        match self {
            DropletStatus::New => "new",
            DropletStatus::Active => "active",
            DropletStatus::Off => "off",
        }
    }
}

/// A droplet the server holds.
#[derive(Debug, Clone)]
pub struct Droplet {
    /// ID.
    pub id: u64,
    /// Name.
    pub name: String,
    /// Region slug.
    pub region: String,
    /// Size slug.
    pub size: String,
    /// Image slug.
    pub image: String,
    /// Tags, in the order given.
    pub tags: Vec<String>,
    /// User data as sent.
    pub user_data: Option<String>,
    /// Status.
    pub status: DropletStatus,
    created: SystemTime,
    active_at: Instant,
    public_ip: Ipv4Addr,
    private_ip: Ipv4Addr,
}

#[derive(Debug, Clone)]
struct Firewall {
    id: String,
    name: String,
    created: SystemTime,
    inbound: Value,
    outbound: Value,
    droplet_ids: Vec<u64>,
    tags: Vec<String>,
}

#[derive(Debug, Clone)]
struct ReservedIp {
    ip: Ipv4Addr,
    region: String,
    droplet: Option<u64>,
}

#[derive(Debug, Clone)]
enum Effect {
    None,
    PowerOff(u64),
    PowerOn(u64),
    Resize(u64, String),
    Rename(u64, String),
    Assign(Ipv4Addr, u64),
    Unassign(Ipv4Addr),
}

#[derive(Debug, Clone)]
struct Action {
    id: u64,
    kind: String,
    resource_id: u64,
    resource_type: &'static str,
    region: String,
    started: SystemTime,
    done_at: Instant,
    completed: Option<SystemTime>,
    effect: Effect,
}

/// Timing of the simulated account.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How long a droplet stays `new`.
    pub boot: Duration,
    /// How long an action stays `in-progress`.
    pub action: Duration,
}

/// The account.
#[derive(Debug)]
pub struct World {
    timing: Timing,
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

/// Public addresses the server hands out: the three documentation ranges (RFC 5737), which are
/// never routed, so nothing can reach a real machine through them.
fn documentation_addresses() -> Vec<Ipv4Addr> {
    let mut v = Vec::with_capacity(762);
    for net in [[192, 0, 2], [198, 51, 100], [203, 0, 113]] {
        for host in 1..=254u8 {
            v.push(Ipv4Addr::new(net[0], net[1], net[2], host));
        }
    }
    // Handed out from the end of the vector; reversed so the first droplet gets 192.0.2.1.
    v.reverse();
    v
}

/// Private addresses come from 198.18.0.0/15 (RFC 2544, benchmarking): not a private range any
/// test could be tempted to reach, and never routed either.
fn private_address(n: u32) -> Ipv4Addr {
    let base = u32::from(Ipv4Addr::new(198, 18, 0, 1));
    Ipv4Addr::from(base + (n % (2 * 65536 - 2)))
}

/// RFC 3339 UTC timestamp, whole seconds.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Whether `tag` is a valid DigitalOcean tag name (letters, digits, `:`, `-`, `_`; at most 255).
pub fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 255
        && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-:".contains(&b))
}

/// One parsed request, as handlers see it.
#[derive(Debug)]
pub struct Call<'a> {
    /// Path template parameters.
    pub params: &'a BTreeMap<&'static str, String>,
    /// Query pairs.
    pub query: &'a [(String, String)],
    /// The path, for pagination links.
    pub path: &'a str,
    /// JSON body.
    pub body: Option<&'a Value>,
}

impl Call<'_> {
    fn query(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn param_u64(&self, name: &str) -> Option<u64> {
        self.params.get(name).and_then(|v| v.parse().ok())
    }

    fn body_str(&self, key: &str) -> Option<&str> {
        self.body.and_then(|b| b.get(key)).and_then(Value::as_str)
    }
}

impl World {
    /// An empty account whose pagination links point at `base_url`.
    pub fn new(timing: Timing, base_url: String) -> Self {
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
    pub fn set_timing(&mut self, timing: Timing) {
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
    pub fn handle(&mut self, op: Op, call: &Call<'_>, now: Instant) -> Reply {
        self.tick(now);
        match op {
            Op::DropletsList => self.droplets_list(call),
            Op::DropletsCreate => self.droplets_create(call, now),
            Op::DropletsGet => match call.param_u64("droplet_id").and_then(|id| self.droplets.get(&id)) {
                Some(d) => Reply::ok(200, json!({ "droplet": self.droplet_json(d) })),
                None => Reply::not_found(),
            },
            Op::DropletsDestroy => self.droplets_destroy(call),
            Op::DropletActionsPost => self.droplet_action(call, now),
            Op::DropletActionsGet => {
                let droplet = call.param_u64("droplet_id");
                match call.param_u64("action_id").and_then(|id| self.actions.get(&id)) {
                    Some(a) if a.resource_type == "droplet" && Some(a.resource_id) == droplet => {
                        Reply::ok(200, json!({ "action": action_json(a) }))
                    }
                    _ => Reply::not_found(),
                }
            }
            Op::ActionsGet => match call.param_u64("action_id").and_then(|id| self.actions.get(&id)) {
                Some(a) => Reply::ok(200, json!({ "action": action_json(a) })),
                None => Reply::not_found(),
            },
            Op::TagsCreate => self.tags_create(call),
            Op::TagsGet => match call.params.get("tag_id") {
                Some(t) if self.tags.contains(t) => Reply::ok(200, json!({ "tag": self.tag_json(t) })),
                _ => Reply::not_found(),
            },
            Op::TagsDelete => self.tags_delete(call),
            Op::TagsAssign | Op::TagsUnassign => self.tag_resources(call, op == Op::TagsAssign),
            Op::FirewallsList => {
                let items = self.firewalls.values().map(|f| self.firewall_json(f)).collect();
                self.page(call, items, "firewalls")
            }
            Op::FirewallsCreate => self.firewall_write(call, None),
            Op::FirewallsGet => match call.params.get("firewall_id").and_then(|id| self.firewalls.get(id)) {
                Some(f) => Reply::ok(200, json!({ "firewall": self.firewall_json(f) })),
                None => Reply::not_found(),
            },
            Op::FirewallsUpdate => match call.params.get("firewall_id") {
                Some(id) if self.firewalls.contains_key(id) => self.firewall_write(call, Some(id.clone())),
                _ => Reply::not_found(),
            },
            Op::FirewallsDelete => {
                match call.params.get("firewall_id").and_then(|id| self.firewalls.remove(id)) {
                    Some(_) => Reply::empty(),
                    None => Reply::not_found(),
                }
            }
            Op::FirewallsAddTags | Op::FirewallsDeleteTags => {
                self.firewall_tags(call, op == Op::FirewallsAddTags)
            }
            Op::ReservedIpsList => {
                let items = self.reserved_ips.values().map(|r| self.reserved_ip_json(r)).collect();
                self.page(call, items, "reserved_ips")
            }
            Op::ReservedIpsCreate => self.reserved_ip_create(call, now),
            Op::ReservedIpsGet => match self.reserved_ip_param(call) {
                Some(r) => Reply::ok(200, json!({ "reserved_ip": self.reserved_ip_json(r) })),
                None => Reply::not_found(),
            },
            Op::ReservedIpsDelete => match self.reserved_ip_param(call).map(|r| r.ip) {
                Some(ip) => {
                    self.reserved_ips.remove(&ip);
                    self.public_pool.push(ip);
                    Reply::empty()
                }
                None => Reply::not_found(),
            },
            Op::ReservedIpActionsPost => self.reserved_ip_action(call, now),
            Op::ReservedIpActionsGet => {
                let ip = self.reserved_ip_param(call).map(|r| u32::from(r.ip) as u64);
                match call.param_u64("action_id").and_then(|id| self.actions.get(&id)) {
                    Some(a) if a.resource_type == "reserved_ip" && Some(a.resource_id) == ip => {
                        Reply::ok(200, json!({ "action": action_json(a) }))
                    }
                    _ => Reply::not_found(),
                }
            }
            Op::RegionsList => {
                let items = catalog::REGIONS.iter().map(catalog::region_json).collect();
                self.page(call, items, "regions")
            }
            Op::SizesList => {
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

    fn droplets_list(&self, call: &Call<'_>) -> Reply {
        let tag = call.query("tag_name");
        let name = call.query("name");
        if tag.is_some() && name.is_some() {
            return Reply::unprocessable("tag_name can not be combined with name");
        }
        let items = self
            .droplets
            .values()
            .filter(|d| tag.is_none_or(|t| d.tags.iter().any(|x| x == t)))
            .filter(|d| name.is_none_or(|n| d.name.eq_ignore_ascii_case(n)))
            .map(|d| self.droplet_json(d))
            .collect();
        self.page(call, items, "droplets")
    }

    #[allow(clippy::too_many_arguments)]
    fn insert_droplet(
        &mut self,
        name: &str,
        region: &str,
        size: &str,
        image: &str,
        tags: &[String],
        user_data: Option<String>,
        now: Instant,
    ) -> Option<u64> {
        let public_ip = self.public_pool.pop()?;
        let private_ip = private_address(self.next_private);
        self.next_private += 1;
        let id = self.next_droplet;
        self.next_droplet += 1;
        for t in tags {
            self.tags.insert(t.clone());
        }
        self.droplets.insert(
            id,
            Droplet {
                id,
                name: name.to_string(),
                region: region.to_string(),
                size: size.to_string(),
                image: image.to_string(),
                tags: tags.to_vec(),
                user_data,
                status: DropletStatus::New,
                created: SystemTime::now(),
                active_at: now + self.timing.boot,
                public_ip,
                private_ip,
            },
        );
        Some(id)
    }

    fn droplets_create(&mut self, call: &Call<'_>, now: Instant) -> Reply {
        let Some(body) = call.body else { return Reply::unprocessable("a request body is required") };
        let names: Vec<String> = match (body.get("name"), body.get("names")) {
            (Some(Value::String(n)), None) => vec![n.clone()],
            (None, Some(Value::Array(ns))) => {
                ns.iter().filter_map(Value::as_str).map(str::to_string).collect()
            }
            _ => return Reply::unprocessable("give either name or names"),
        };
        let multi = body.get("names").is_some();
        if names.is_empty() || names.len() > MAX_NAMES_PER_CREATE {
            return Reply::unprocessable(format!("between 1 and {MAX_NAMES_PER_CREATE} names may be given"));
        }
        let region = call.body_str("region").unwrap_or_default().to_string();
        if catalog::region(&region).is_none() {
            return Reply::unprocessable(format!("Region is not available: {region}"));
        }
        let size = call.body_str("size").unwrap_or_default().to_string();
        if catalog::size(&size).is_none() {
            return Reply::unprocessable(format!("Size is not available: {size}"));
        }
        let Some(image) = body.get("image").and_then(catalog::image) else {
            return Reply::unprocessable("You specified an invalid image for Droplet creation.");
        };
        let tags: Vec<String> = body
            .get("tags")
            .and_then(Value::as_array)
            .map(|t| t.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default();
        if let Some(bad) = tags.iter().find(|t| !valid_tag(t)) {
            return Reply::unprocessable(format!(
                "tag {bad:?}: tags may contain letters, numbers, colons, dashes, and underscores, up to 255 characters"
            ));
        }
        let user_data = call.body_str("user_data").map(str::to_string);
        if user_data.as_ref().is_some_and(|u| u.len() > USER_DATA_LIMIT) {
            return Reply::unprocessable("user_data is larger than 64 KiB");
        }
        if self.public_pool.len() < names.len() {
            return Reply::unprocessable(
                "no public addresses left in the test server's documentation ranges",
            );
        }
        let mut created = Vec::new();
        let mut links = Vec::new();
        for name in &names {
            let Some(id) =
                self.insert_droplet(name, &region, &size, image.slug, &tags, user_data.clone(), now)
            else {
                break;
            };
            let action =
                self.new_action("create", id, "droplet", &region, now, self.timing.boot, Effect::None);
            links.push(json!({ "id": action, "rel": "create", "href": format!("{}/v2/actions/{action}", self.base_url) }));
            if let Some(d) = self.droplets.get(&id) {
                created.push(self.droplet_json(d));
            }
        }
        if multi {
            Reply::ok(202, json!({ "droplets": created, "links": { "actions": links } }))
        } else {
            let droplet = created.into_iter().next().unwrap_or(Value::Null);
            Reply::ok(202, json!({ "droplet": droplet, "links": { "actions": links } }))
        }
    }

    fn droplets_destroy(&mut self, call: &Call<'_>) -> Reply {
        let Some(d) = call.param_u64("droplet_id").and_then(|id| self.droplets.remove(&id)) else {
            return Reply::not_found();
        };
        self.public_pool.push(d.public_ip);
        for r in self.reserved_ips.values_mut() {
            if r.droplet == Some(d.id) {
                r.droplet = None;
            }
        }
        for f in self.firewalls.values_mut() {
            f.droplet_ids.retain(|x| *x != d.id);
        }
        Reply::empty()
    }

    #[allow(clippy::too_many_arguments)]
    fn new_action(
        &mut self,
        kind: &str,
        resource_id: u64,
        resource_type: &'static str,
        region: &str,
        now: Instant,
        takes: Duration,
        effect: Effect,
    ) -> u64 {
        let id = self.next_action;
        self.next_action += 1;
        self.actions.insert(
            id,
            Action {
                id,
                kind: kind.to_string(),
                resource_id,
                resource_type,
                region: region.to_string(),
                started: SystemTime::now(),
                done_at: now + takes,
                completed: None,
                effect,
            },
        );
        id
    }

    fn pending_action_on(&self, resource_type: &str, resource_id: u64) -> bool {
        self.actions.values().any(|a| {
            a.completed.is_none() && a.resource_type == resource_type && a.resource_id == resource_id
        })
    }

    fn droplet_action(&mut self, call: &Call<'_>, now: Instant) -> Reply {
        let Some(d) = call.param_u64("droplet_id").and_then(|id| self.droplets.get(&id)).cloned() else {
            return Reply::not_found();
        };
        if self.pending_action_on("droplet", d.id) {
            return Reply::unprocessable("Droplet already has a pending event.");
        }
        let kind = call.body_str("type").unwrap_or_default().to_string();
        let effect = match kind.as_str() {
            "power_off" | "shutdown" => Effect::PowerOff(d.id),
            "power_on" => Effect::PowerOn(d.id),
            "reboot" | "power_cycle" => Effect::None,
            "resize" => {
                if d.status != DropletStatus::Off {
                    return Reply::unprocessable("Droplet must be powered off to resize.");
                }
                let size = call.body_str("size").unwrap_or_default().to_string();
                if catalog::size(&size).is_none() {
                    return Reply::unprocessable(format!("Size is not available: {size}"));
                }
                Effect::Resize(d.id, size)
            }
            "rename" => match call.body_str("name") {
                Some(n) => Effect::Rename(d.id, n.to_string()),
                None => return Reply::unprocessable("a name is required"),
            },
            other => {
                return Reply::unprocessable(format!(
                    "the test server does not implement the {other:?} action"
                ));
            }
        };
        let id = self.new_action(&kind, d.id, "droplet", &d.region, now, self.timing.action, effect);
        match self.actions.get(&id) {
            Some(a) => Reply::ok(201, json!({ "action": action_json(a) })),
            None => Reply::error(500, "server_error", "action vanished"),
        }
    }

    fn tags_create(&mut self, call: &Call<'_>) -> Reply {
        let Some(name) = call.body_str("name") else { return Reply::unprocessable("name is required") };
        if !valid_tag(name) {
            return Reply::error(400, "bad_request", "invalid tag name");
        }
        // Creating an existing tag answers like creating it: the call is idempotent.
        self.tags.insert(name.to_string());
        Reply::ok(201, json!({ "tag": self.tag_json(name) }))
    }

    fn tags_delete(&mut self, call: &Call<'_>) -> Reply {
        let Some(tag) = call.params.get("tag_id") else { return Reply::not_found() };
        if !self.tags.remove(tag) {
            return Reply::not_found();
        }
        for d in self.droplets.values_mut() {
            d.tags.retain(|t| t != tag);
        }
        for f in self.firewalls.values_mut() {
            f.tags.retain(|t| t != tag);
        }
        Reply::empty()
    }

    fn tag_resources(&mut self, call: &Call<'_>, assign: bool) -> Reply {
        let Some(tag) = call.params.get("tag_id").cloned() else { return Reply::not_found() };
        if !self.tags.contains(&tag) {
            return Reply::not_found();
        }
        let resources =
            call.body.and_then(|b| b.get("resources")).and_then(Value::as_array).cloned().unwrap_or_default();
        let mut ids = Vec::new();
        for r in &resources {
            if r.get("resource_type").and_then(Value::as_str) != Some("droplet") {
                return Reply::unprocessable("the test server tags droplets only");
            }
            match r.get("resource_id").and_then(Value::as_str).and_then(|s| s.parse::<u64>().ok()) {
                Some(id) if self.droplets.contains_key(&id) => ids.push(id),
                _ => return Reply::not_found(),
            }
        }
        for id in ids {
            if let Some(d) = self.droplets.get_mut(&id) {
                let has = d.tags.contains(&tag);
                if assign && !has {
                    d.tags.push(tag.clone());
                } else if !assign {
                    d.tags.retain(|t| *t != tag);
                }
            }
        }
        Reply::empty()
    }

    fn firewall_write(&mut self, call: &Call<'_>, existing: Option<String>) -> Reply {
        let Some(body) = call.body else {
            return Reply::error(400, "bad_request", "a request body is required");
        };
        let name = call.body_str("name").unwrap_or_default().to_string();
        let tags: Vec<String> = body
            .get("tags")
            .and_then(Value::as_array)
            .map(|t| t.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default();
        if let Some(unknown) = tags.iter().find(|t| !self.tags.contains(*t)) {
            return Reply::unprocessable(format!("tag {unknown:?} does not exist"));
        }
        let droplet_ids: Vec<u64> = body
            .get("droplet_ids")
            .and_then(Value::as_array)
            .map(|d| d.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        if droplet_ids.iter().any(|id| !self.droplets.contains_key(id)) {
            return Reply::unprocessable("a droplet ID does not exist");
        }
        let rules = |key: &str| body.get(key).cloned().filter(|v| !v.is_null()).unwrap_or_else(|| json!([]));
        let id = existing.unwrap_or_else(|| {
            let n = self.next_firewall;
            self.next_firewall += 1;
            format!("fb6045f1-cf1d-4ca3-bfac-{n:012x}")
        });
        let created = self.firewalls.get(&id).map(|f| f.created).unwrap_or_else(SystemTime::now);
        let fw = Firewall {
            id: id.clone(),
            name,
            created,
            inbound: rules("inbound_rules"),
            outbound: rules("outbound_rules"),
            droplet_ids,
            tags,
        };
        let status = if self.firewalls.insert(id, fw.clone()).is_some() { 200 } else { 202 };
        Reply::ok(status, json!({ "firewall": self.firewall_json(&fw) }))
    }

    fn firewall_tags(&mut self, call: &Call<'_>, add: bool) -> Reply {
        let tags: Vec<String> = call
            .body
            .and_then(|b| b.get("tags"))
            .and_then(Value::as_array)
            .map(|t| t.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default();
        if add && let Some(unknown) = tags.iter().find(|t| !self.tags.contains(*t)) {
            return Reply::unprocessable(format!("tag {unknown:?} does not exist"));
        }
        let Some(f) = call.params.get("firewall_id").and_then(|id| self.firewalls.get_mut(id)) else {
            return Reply::not_found();
        };
        for t in tags {
            let has = f.tags.contains(&t);
            if add && !has {
                f.tags.push(t);
            } else if !add {
                f.tags.retain(|x| *x != t);
            }
        }
        Reply::empty()
    }

    fn reserved_ip_param(&self, call: &Call<'_>) -> Option<&ReservedIp> {
        let ip: Ipv4Addr = call.params.get("reserved_ip")?.parse().ok()?;
        self.reserved_ips.get(&ip)
    }

    fn reserved_ip_create(&mut self, call: &Call<'_>, now: Instant) -> Reply {
        let droplet = call.body.and_then(|b| b.get("droplet_id")).and_then(Value::as_u64);
        let (region, assign_to) = match droplet {
            Some(id) => match self.droplets.get(&id) {
                Some(d) if d.status == DropletStatus::New => {
                    return Reply::unprocessable("Droplet is not ready: it is still being created.");
                }
                Some(d) => (d.region.clone(), Some(id)),
                None => return Reply::unprocessable("Droplet does not exist."),
            },
            None => match call.body_str("region") {
                Some(r) if catalog::region(r).is_some() => (r.to_string(), None),
                _ => return Reply::unprocessable("a valid region or droplet_id is required"),
            },
        };
        let Some(ip) = self.public_pool.pop() else {
            return Reply::unprocessable("no addresses left in the test server's documentation ranges");
        };
        // Like DigitalOcean, the new IP shows its droplet at once; the assign action completes later.
        self.reserved_ips.insert(ip, ReservedIp { ip, region: region.clone(), droplet: assign_to });
        let mut links = Vec::new();
        if let Some(d) = assign_to {
            let action = self.new_action(
                "assign_ip",
                u32::from(ip) as u64,
                "reserved_ip",
                &region,
                now,
                self.timing.action,
                Effect::Assign(ip, d),
            );
            links.push(json!({ "id": action, "rel": "assign_ip", "href": format!("{}/v2/actions/{action}", self.base_url) }));
        }
        let r = self.reserved_ips.get(&ip).cloned();
        match r {
            Some(r) => Reply::ok(
                202,
                json!({ "reserved_ip": self.reserved_ip_json(&r), "links": { "actions": links } }),
            ),
            None => Reply::error(500, "server_error", "reserved IP vanished"),
        }
    }

    fn reserved_ip_action(&mut self, call: &Call<'_>, now: Instant) -> Reply {
        let Some(r) = self.reserved_ip_param(call).cloned() else { return Reply::not_found() };
        let resource = u32::from(r.ip) as u64;
        if self.pending_action_on("reserved_ip", resource) {
            return Reply::unprocessable("Reserved IP already has a pending event.");
        }
        let (kind, effect) = match call.body_str("type") {
            Some("assign") => {
                let Some(id) = call.body.and_then(|b| b.get("droplet_id")).and_then(Value::as_u64) else {
                    return Reply::unprocessable("droplet_id is required");
                };
                match self.droplets.get(&id) {
                    Some(d) if d.region != r.region => {
                        return Reply::unprocessable("Droplet is in another region than the reserved IP.");
                    }
                    Some(d) if d.status == DropletStatus::New => {
                        return Reply::unprocessable("Droplet is not ready: it is still being created.");
                    }
                    Some(_) => ("assign_ip", Effect::Assign(r.ip, id)),
                    None => return Reply::unprocessable("Droplet does not exist."),
                }
            }
            Some("unassign") => ("unassign_ip", Effect::Unassign(r.ip)),
            _ => return Reply::unprocessable("type must be assign or unassign"),
        };
        let id = self.new_action(kind, resource, "reserved_ip", &r.region, now, self.timing.action, effect);
        match self.actions.get(&id) {
            Some(a) => Reply::ok(201, json!({ "action": action_json(a) })),
            None => Reply::error(500, "server_error", "action vanished"),
        }
    }

    /// A droplet object.
    pub fn droplet_json(&self, d: &Droplet) -> Value {
        let size = catalog::size(&d.size).copied().unwrap_or(catalog::SIZES[0]);
        let image = catalog::image(&Value::String(d.image.clone())).copied().unwrap_or(catalog::IMAGES[0]);
        let region = catalog::region(&d.region).copied().unwrap_or(catalog::REGIONS[0]);
        // A droplet has no addresses until it has booted.
        let v4 = if d.status == DropletStatus::New {
            json!([])
        } else {
            json!([
                { "ip_address": d.public_ip.to_string(), "netmask": "255.255.255.0", "gateway": gateway(d.public_ip), "type": "public" },
                { "ip_address": d.private_ip.to_string(), "netmask": "255.254.0.0", "gateway": "198.18.0.1", "type": "private" },
            ])
        };
        json!({
            "id": d.id,
            "name": d.name,
            "memory": size.memory,
            "vcpus": size.vcpus,
            "disk": size.disk,
            "disk_info": [{ "type": "local", "size": { "amount": size.disk, "unit": "gib" } }],
            "locked": self.pending_action_on("droplet", d.id),
            "status": d.status.as_str(),
            "kernel": null,
            "created_at": rfc3339(d.created),
            "features": ["droplet_agent", "private_networking"],
            "backup_ids": [],
            "next_backup_window": null,
            "snapshot_ids": [],
            "image": catalog::image_json(&image),
            "volume_ids": [],
            "size": catalog::size_json(&size),
            "size_slug": d.size,
            "networks": { "v4": v4, "v6": [] },
            "region": catalog::region_json(&region),
            "tags": d.tags,
            "vpc_uuid": "5a4981aa-9653-4bd1-bef5-d6bff52042e4",
        })
    }

    fn tag_json(&self, name: &str) -> Value {
        let count = self.droplets.values().filter(|d| d.tags.iter().any(|t| t == name)).count();
        let last = self
            .droplets
            .values()
            .rev()
            .find(|d| d.tags.iter().any(|t| t == name))
            .map(|d| format!("{}/v2/droplets/{}", self.base_url, d.id));
        let mut droplets = json!({ "count": count });
        let mut all = json!({ "count": count });
        if let Some(l) = last {
            droplets["last_tagged_uri"] = l.clone().into();
            all["last_tagged_uri"] = l.into();
        }
        all["droplets"] = droplets;
        json!({ "name": name, "resources": all })
    }

    fn firewall_json(&self, f: &Firewall) -> Value {
        json!({
            "id": f.id,
            "status": "succeeded",
            "created_at": rfc3339(f.created),
            "pending_changes": [],
            "name": f.name,
            "droplet_ids": f.droplet_ids,
            "tags": f.tags,
            "inbound_rules": f.inbound,
            "outbound_rules": f.outbound,
        })
    }

    fn reserved_ip_json(&self, r: &ReservedIp) -> Value {
        let region = catalog::region(&r.region).copied().unwrap_or(catalog::REGIONS[0]);
        let droplet = r
            .droplet
            .and_then(|id| self.droplets.get(&id))
            .map(|d| self.droplet_json(d))
            .unwrap_or(Value::Null);
        json!({
            "ip": r.ip.to_string(),
            "region": catalog::region_json(&region),
            "droplet": droplet,
            "locked": false,
            "project_id": "746c6152-2fa2-11ed-92d3-27aaa54e4988",
        })
    }
}

fn gateway(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    Ipv4Addr::new(o[0], o[1], o[2], 1).to_string()
}

fn action_json(a: &Action) -> Value {
    let region = catalog::region(&a.region).copied().unwrap_or(catalog::REGIONS[0]);
    json!({
        "id": a.id,
        "status": if a.completed.is_some() { "completed" } else { "in-progress" },
        "type": a.kind,
        "started_at": rfc3339(a.started),
        "completed_at": a.completed.map(rfc3339),
        "resource_id": a.resource_id,
        "resource_type": a.resource_type,
        "region": catalog::region_json(&region),
        "region_slug": a.region,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_templates_and_extract_parameters() {
        let (op, id, params) =
            route("GET", "/v2/droplets/7/actions/9").unwrap_or((Op::SizesList, "", BTreeMap::new()));
        assert_eq!((op, id), (Op::DropletActionsGet, "dropletActions_get"));
        assert_eq!(params.get("droplet_id").map(String::as_str), Some("7"));
        assert_eq!(params.get("action_id").map(String::as_str), Some("9"));
        assert!(route("PATCH", "/v2/droplets/7").is_none());
        assert!(route("GET", "/v2/droplets/").is_none(), "an empty parameter is no match");
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn handed_out_addresses_are_documentation_ranges_only() {
        let all = documentation_addresses();
        assert_eq!(all.len(), 762);
        for ip in all {
            let o = ip.octets();
            assert!(matches!((o[0], o[1], o[2]), (192, 0, 2) | (198, 51, 100) | (203, 0, 113)), "{ip}");
        }
        for n in [0, 1, 70_000, 200_000] {
            let o = private_address(n).octets();
            assert!(o[0] == 198 && (o[1] == 18 || o[1] == 19), "{:?}", o);
        }
    }

    #[test]
    fn tag_names_follow_digitaloceans_charset() {
        assert!(valid_tag("peerfleet:network:prod-1"));
        assert!(valid_tag("peer_cluster"));
        assert!(!valid_tag("has space"));
        assert!(!valid_tag("dot.ted"));
        assert!(!valid_tag(&"a".repeat(256)));
    }
}
