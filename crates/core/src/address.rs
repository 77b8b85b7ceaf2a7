//! Resource addresses: the stable identity of every object peerfleet manages.
//!
//! An address is what ownership tags record, what plans and state are keyed by, and what
//! idempotency keys are derived from. It never contains a provider's own ID, which changes on replace.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::network::ProviderKind;

/// The identity of one managed object. Ordering is the plan's display order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Address {
    /// The firewall (security group) of the network in one provider-region: `firewall.aws.us-east-1`.
    Firewall {
        /// Provider.
        provider: ProviderKind,
        /// Provider region slug.
        region: String,
    },
    /// A machine: `machine.virginia[0]` (cluster name, slot).
    Machine {
        /// Cluster name.
        cluster: String,
        /// Slot within the cluster, from 0.
        slot: u32,
    },
    /// The stable public address of a machine that hosts genesis or master: `ip.virginia[0]`.
    StableIp {
        /// Cluster name.
        cluster: String,
        /// Slot of the machine within the cluster.
        slot: u32,
    },
    /// A container of a service: `container.relay[3]`.
    Container {
        /// Service name.
        service: String,
        /// Slot within the service, from 0.
        slot: u32,
    },
}

impl Address {
    /// A machine's address.
    pub fn machine(cluster: impl Into<String>, slot: u32) -> Self {
        Address::Machine { cluster: cluster.into(), slot }
    }

    /// A container's address.
    pub fn container(service: impl Into<String>, slot: u32) -> Self {
        Address::Container { service: service.into(), slot }
    }

    /// The stable IP address resource of a machine.
    pub fn stable_ip(cluster: impl Into<String>, slot: u32) -> Self {
        Address::StableIp { cluster: cluster.into(), slot }
    }

    /// A firewall's address.
    pub fn firewall(provider: ProviderKind, region: impl Into<String>) -> Self {
        Address::Firewall { provider, region: region.into() }
    }

    /// The machine a stable IP belongs to.
    pub fn machine_of_ip(&self) -> Option<Address> {
        match self {
            Address::StableIp { cluster, slot } => Some(Address::machine(cluster.clone(), *slot)),
            _ => None,
        }
    }

    /// The resource kind's name (`machine`, `container`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Address::Firewall { .. } => "firewall",
            Address::Machine { .. } => "machine",
            Address::StableIp { .. } => "ip",
            Address::Container { .. } => "container",
        }
    }

    /// A form safe for provider names and tags (letters, digits, `-`): `machine-virginia-0`.
    pub fn slug(&self) -> String {
        match self {
            Address::Firewall { provider, region } => format!("firewall-{provider}-{region}"),
            Address::Machine { cluster, slot } => format!("machine-{cluster}-{slot}"),
            Address::StableIp { cluster, slot } => format!("ip-{cluster}-{slot}"),
            Address::Container { service, slot } => format!("container-{service}-{slot}"),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Firewall { provider, region } => write!(f, "firewall.{provider}.{region}"),
            Address::Machine { cluster, slot } => write!(f, "machine.{cluster}[{slot}]"),
            Address::StableIp { cluster, slot } => write!(f, "ip.{cluster}[{slot}]"),
            Address::Container { service, slot } => write!(f, "container.{service}[{slot}]"),
        }
    }
}

/// An address string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid resource address `{0}`: expected machine.NAME[N], ip.NAME[N], container.NAME[N] or firewall.PROVIDER.REGION"
)]
pub struct AddressParseError(String);

impl FromStr for Address {
    type Err = AddressParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || AddressParseError(s.to_string());
        let (kind, rest) = s.split_once('.').ok_or_else(err)?;
        if kind == "firewall" {
            let (provider, region) = rest.split_once('.').ok_or_else(err)?;
            let provider = ProviderKind::ALL.into_iter().find(|p| p.as_str() == provider).ok_or_else(err)?;
            if region.is_empty() {
                return Err(err());
            }
            return Ok(Address::firewall(provider, region));
        }
        let (name, slot) = rest.strip_suffix(']').and_then(|r| r.split_once('[')).ok_or_else(err)?;
        let slot: u32 = slot.parse().map_err(|_| err())?;
        if name.is_empty() {
            return Err(err());
        }
        match kind {
            "machine" => Ok(Address::machine(name, slot)),
            "ip" => Ok(Address::stable_ip(name, slot)),
            "container" => Ok(Address::container(name, slot)),
            _ => Err(err()),
        }
    }
}

impl Serialize for Address {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_through_their_text_form() {
        for a in [
            Address::machine("virginia", 0),
            Address::container("relay", 12),
            Address::stable_ip("sao-paulo", 1),
            Address::firewall(ProviderKind::DigitalOcean, "fra1"),
        ] {
            assert_eq!(a.to_string().parse::<Address>().unwrap(), a);
        }
    }

    #[test]
    fn malformed_addresses_are_rejected() {
        for s in ["machine", "machine.x", "machine.x[a]", "box.x[1]", "firewall.gcp.x", "container.[1]"] {
            assert!(s.parse::<Address>().is_err(), "{s}");
        }
    }
}
