//! The objects the account holds (droplets, firewalls, reserved IPs, actions), the addresses it hands
//! out, and the request and reply as handlers see them.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

/// What a handler answers.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// JSON body, if any.
    pub body: Option<Value>,
}

impl Reply {
    pub(super) fn ok(status: u16, body: Value) -> Self {
        Reply { status, body: Some(body) }
    }

    pub(super) fn empty() -> Self {
        Reply { status: 204, body: None }
    }

    /// An error in DigitalOcean's shape (`request_id` is added by the HTTP layer).
    pub fn error(status: u16, id: &str, message: impl Into<String>) -> Self {
        Reply { status, body: Some(json!({ "id": id, "message": message.into() })) }
    }

    pub(super) fn not_found() -> Self {
        Reply::error(404, "not_found", "The resource you were accessing could not be found.")
    }

    pub(super) fn unprocessable(message: impl Into<String>) -> Self {
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
    pub(super) fn as_str(self) -> &'static str {
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
    pub(super) created: SystemTime,
    pub(super) active_at: Instant,
    pub(super) public_ip: Ipv4Addr,
    pub(super) private_ip: Ipv4Addr,
}

#[derive(Debug, Clone)]
pub(super) struct Firewall {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) created: SystemTime,
    pub(super) inbound: Value,
    pub(super) outbound: Value,
    pub(super) droplet_ids: Vec<u64>,
    pub(super) tags: Vec<String>,
}

#[derive(Debug, Clone)]
pub(super) struct ReservedIp {
    pub(super) ip: Ipv4Addr,
    pub(super) region: String,
    pub(super) droplet: Option<u64>,
}

#[derive(Debug, Clone)]
pub(super) enum Effect {
    None,
    PowerOff(u64),
    PowerOn(u64),
    Resize(u64, String),
    Rename(u64, String),
    Assign(Ipv4Addr, u64),
    Unassign(Ipv4Addr),
}

#[derive(Debug, Clone)]
pub(super) struct Action {
    pub(super) id: u64,
    pub(super) kind: String,
    pub(super) resource_id: u64,
    pub(super) resource_type: &'static str,
    pub(super) region: String,
    pub(super) started: SystemTime,
    pub(super) done_at: Instant,
    pub(super) completed: Option<SystemTime>,
    pub(super) effect: Effect,
}

/// How long the simulated account takes: a droplet to boot, an action to complete.
#[derive(Debug, Clone, Copy)]
pub struct Delays {
    /// How long a droplet stays `new`.
    pub boot: Duration,
    /// How long an action stays `in-progress`.
    pub action: Duration,
}

/// Public addresses the server hands out: the three documentation ranges (RFC 5737), which are
/// never routed, so nothing can reach a real machine through them.
pub(super) fn documentation_addresses() -> Vec<Ipv4Addr> {
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
pub(super) fn private_address(n: u32) -> Ipv4Addr {
    let base = u32::from(Ipv4Addr::new(198, 18, 0, 1));
    Ipv4Addr::from(base + (n % (2 * 65536 - 2)))
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
    pub(super) fn query(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub(super) fn param_u64(&self, name: &str) -> Option<u64> {
        self.params.get(name).and_then(|v| v.parse().ok())
    }

    pub(super) fn body_str(&self, key: &str) -> Option<&str> {
        self.body.and_then(|b| b.get(key)).and_then(Value::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
