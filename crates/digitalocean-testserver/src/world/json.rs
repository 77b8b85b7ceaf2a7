//! The JSON shapes of the account's objects, as DigitalOcean's API writes them.

use std::net::Ipv4Addr;
use std::time::SystemTime;

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::World;
use super::model::{Action, Droplet, DropletStatus, Firewall, ReservedIp};
use crate::catalog;

impl World {
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

    pub(super) fn tag_json(&self, name: &str) -> Value {
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

    pub(super) fn firewall_json(&self, f: &Firewall) -> Value {
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

    pub(super) fn reserved_ip_json(&self, r: &ReservedIp) -> Value {
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

pub(super) fn action_json(a: &Action) -> Value {
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

/// RFC 3339 UTC timestamp, whole seconds.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let at = i64::try_from(secs)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    at.format(&Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }
}
