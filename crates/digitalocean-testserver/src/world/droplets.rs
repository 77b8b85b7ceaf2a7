//! Droplets and their actions: create (one or many names), list, destroy, power, resize, rename.

use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use super::json::action_json;
use super::model::{Action, Call, Droplet, DropletStatus, Effect, Reply, private_address, valid_tag};
use super::{MAX_NAMES_PER_CREATE, USER_DATA_LIMIT, World};
use crate::catalog;

impl World {
    pub(super) fn droplets_list(&self, call: &Call<'_>) -> Reply {
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
    pub(super) fn insert_droplet(
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

    pub(super) fn droplets_create(&mut self, call: &Call<'_>, now: Instant) -> Reply {
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

    pub(super) fn droplets_destroy(&mut self, call: &Call<'_>) -> Reply {
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
    pub(super) fn new_action(
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

    pub(super) fn pending_action_on(&self, resource_type: &str, resource_id: u64) -> bool {
        self.actions.values().any(|a| {
            a.completed.is_none() && a.resource_type == resource_type && a.resource_id == resource_id
        })
    }

    pub(super) fn droplet_action(&mut self, call: &Call<'_>, now: Instant) -> Reply {
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
}
