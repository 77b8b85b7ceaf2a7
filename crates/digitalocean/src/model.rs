//! The parts of DigitalOcean's objects peerfleet reads. Lenient on purpose: fields peerfleet does not
//! need are ignored, so additions to the API never break it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A droplet.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Droplet {
    /// ID.
    pub id: u64,
    /// Name.
    pub name: String,
    /// `new`, `active`, `off`, `archive`.
    pub status: String,
    /// Whether an action in progress keeps others from starting.
    #[serde(default)]
    pub locked: bool,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Size slug.
    #[serde(default)]
    pub size_slug: String,
    /// Region.
    pub region: Slugged,
    /// Image.
    pub image: ImageRef,
    /// Addresses.
    #[serde(default)]
    pub networks: Networks,
}

/// An object known by its slug.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Slugged {
    /// Slug.
    #[serde(default)]
    pub slug: String,
}

/// The image a droplet was made from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ImageRef {
    /// Numeric ID.
    #[serde(default)]
    pub id: Option<u64>,
    /// Slug (absent for snapshots and custom images).
    #[serde(default)]
    pub slug: Option<String>,
}

impl ImageRef {
    /// The slug, or the ID when there is none.
    pub fn key(&self) -> String {
        match (&self.slug, self.id) {
            (Some(s), _) => s.clone(),
            (None, Some(id)) => id.to_string(),
            (None, None) => String::new(),
        }
    }
}

/// A droplet's networks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Networks {
    /// IPv4 interfaces.
    #[serde(default)]
    pub v4: Vec<NetworkV4>,
}

/// One IPv4 interface.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NetworkV4 {
    /// Address.
    pub ip_address: String,
    /// `public` or `private`.
    #[serde(rename = "type")]
    pub kind: String,
}

impl Droplet {
    /// The first address of `kind`.
    pub fn address(&self, kind: &str) -> Option<String> {
        self.networks.v4.iter().find(|n| n.kind == kind).map(|n| n.ip_address.clone())
    }
}

/// A firewall.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Firewall {
    /// ID (a UUID).
    pub id: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Tags whose droplets it applies to.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// Inbound rules.
    #[serde(default)]
    pub inbound_rules: Option<Vec<Rule>>,
}

/// One firewall rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// `tcp`, `udp`, `icmp`.
    pub protocol: String,
    /// A port, a range `a-b`, or `0` for all.
    pub ports: String,
    /// Where inbound traffic may come from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<Target>,
    /// Where outbound traffic may go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destinations: Option<Target>,
}

/// Sources or destinations of a rule (only addresses are used by peerfleet).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// CIDRs or addresses.
    #[serde(default)]
    pub addresses: Vec<String>,
}

/// A reserved IP.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ReservedIp {
    /// The address.
    pub ip: String,
    /// Its region.
    #[serde(default)]
    pub region: Option<Slugged>,
    /// The droplet it is assigned to (a full droplet object, or null).
    #[serde(default)]
    pub droplet: Option<Value>,
}

impl ReservedIp {
    /// The ID of the droplet it is assigned to.
    pub fn droplet_id(&self) -> Option<u64> {
        self.droplet.as_ref()?.get("id")?.as_u64()
    }
}

/// An action (power, resize, assign, ...).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Action {
    /// ID.
    pub id: u64,
    /// `in-progress`, `completed`, `errored`.
    #[serde(default)]
    pub status: String,
}
