//! Tags, firewalls and reserved IPs.

use std::net::Ipv4Addr;
use std::time::{Instant, SystemTime};

use serde_json::{Value, json};

use super::World;
use super::json::action_json;
use super::model::{Call, DropletStatus, Effect, Firewall, Reply, ReservedIp, valid_tag};
use crate::catalog;

impl World {
    pub(super) fn tags_create(&mut self, call: &Call<'_>) -> Reply {
        let Some(name) = call.body_str("name") else { return Reply::unprocessable("name is required") };
        if !valid_tag(name) {
            return Reply::error(400, "bad_request", "invalid tag name");
        }
        // Creating an existing tag answers like creating it: the call is idempotent.
        self.tags.insert(name.to_string());
        Reply::ok(201, json!({ "tag": self.tag_json(name) }))
    }

    pub(super) fn tags_delete(&mut self, call: &Call<'_>) -> Reply {
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

    pub(super) fn tag_resources(&mut self, call: &Call<'_>, assign: bool) -> Reply {
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

    pub(super) fn firewall_write(&mut self, call: &Call<'_>, existing: Option<String>) -> Reply {
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

    pub(super) fn firewall_tags(&mut self, call: &Call<'_>, add: bool) -> Reply {
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

    pub(super) fn reserved_ip_param(&self, call: &Call<'_>) -> Option<&ReservedIp> {
        let ip: Ipv4Addr = call.params.get("reserved_ip")?.parse().ok()?;
        self.reserved_ips.get(&ip)
    }

    pub(super) fn reserved_ip_create(&mut self, call: &Call<'_>, now: Instant) -> Reply {
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

    pub(super) fn reserved_ip_action(&mut self, call: &Call<'_>, now: Instant) -> Reply {
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
}
