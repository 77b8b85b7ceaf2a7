//! How peerfleet recognises its DigitalOcean objects, within DigitalOcean's limits.
//!
//! DigitalOcean tags are bare names (letters, digits, `:`, `-`, `_`; at most 255 characters), so
//! ownership data is written as `peerfleet:<key>:<value>` tags:
//!
//! | tag | on | meaning |
//! |---|---|---|
//! | `peerfleet:network:<network>` | droplets | the network; refresh lists by it |
//! | `peerfleet:gen:<n>` | droplets | generation (raised on every replace) |
//! | `peerfleet:boot:<n>` | droplets | bootstrap (user data) version |
//! | `peerfleet:chain:<sha256 hex>` | the genesis host | the pinned chain ID |
//! | `peerfleet:fw:<network>:<region>` | droplets, firewall | which firewall applies (firewalls attach by tag) |
//!
//! Deploy tags (`peer_cluster`, the cluster's tags) are written as they are; every tag outside
//! `peerfleet:` counts as one.
//!
//! **The machine's address is carried by the droplet's name**, `<network>-<cluster>-<slot>`, not by
//! a tag. A multi-create request (several droplets in one `POST /v2/droplets`) gives every droplet the
//! same tags but its own name, so the name is the only per-droplet field set at creation; using it
//! for the address keeps the rule "everything is tagged at creation, never afterwards" for single
//! and multi-creates alike. It is unambiguous because the network is known from the network tag (the
//! name must start with `<network>-`), the slot is the part after the last `-`, and names are only
//! read from droplets that carry our network tag, which only peerfleet sets. A droplet someone
//! renames drops out of its address; refresh then reports it as unowned and leaves it alone.
//!
//! These rules restrict names: a network name is letters, digits and `-` (it appears in tags and
//! droplet names), a cluster name letters, digits, `-` and `.` (droplet names only).

use std::collections::BTreeSet;

use peerfleet_core::network::ProviderKind;
use peerfleet_core::provider::ProviderError;
use peerfleet_core::resource::{Machine, MachineSpec, MachineStatus};
use peerfleet_core::{Address, ChainId};

use crate::error::invalid;
use crate::model::Droplet;

/// Prefix of every tag peerfleet reserves.
pub const PREFIX: &str = "peerfleet:";
/// DigitalOcean's limit on tag and droplet-name length.
pub const MAX_LEN: usize = 255;

/// `peerfleet:network:<network>`.
pub fn network_tag(network: &str) -> String {
    format!("{PREFIX}network:{network}")
}

/// `peerfleet:gen:<n>`.
pub fn generation_tag(generation: u32) -> String {
    format!("{PREFIX}gen:{generation}")
}

/// `peerfleet:boot:<n>`.
pub fn bootstrap_tag(version: u32) -> String {
    format!("{PREFIX}boot:{version}")
}

/// `peerfleet:chain:<id>`.
pub fn chain_tag(chain: &ChainId) -> String {
    format!("{PREFIX}chain:{}", chain.as_str())
}

/// `peerfleet:fw:<network>:<region>`: the tag a network's firewall in `region` applies to.
pub fn firewall_tag(network: &str, region: &str) -> String {
    format!("{PREFIX}fw:{network}:{region}")
}

/// The firewall's name: `peerfleet-<network>-<region>`.
pub fn firewall_name(network: &str, region: &str) -> String {
    format!("peerfleet-{network}-{region}")
}

/// Whether `tag` is a valid DigitalOcean tag.
pub fn is_valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= MAX_LEN
        && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-:".contains(&b))
}

/// Checks a network name for use in tags and droplet names.
pub fn check_network(network: &str) -> Result<(), ProviderError> {
    let ok = !network.is_empty()
        && network.len() <= 200
        && network.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && network.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "network name {network:?} cannot be used on DigitalOcean: it must start with a letter or digit and contain only letters, digits and '-' (it is part of tags and droplet names)"
        )))
    }
}

/// The droplet name of a machine: `<network>-<cluster>-<slot>`.
pub fn droplet_name(network: &str, address: &Address) -> Result<String, ProviderError> {
    check_network(network)?;
    let Address::Machine { cluster, slot } = address else {
        return Err(invalid(format!("{address} is not a machine")));
    };
    let ok =
        !cluster.is_empty() && cluster.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    let name = format!("{network}-{cluster}-{slot}");
    if !ok || name.len() > MAX_LEN {
        return Err(invalid(format!(
            "cluster name {cluster:?} cannot be used on DigitalOcean: droplet names allow only letters, digits, '-' and '.', up to {MAX_LEN} characters"
        )));
    }
    Ok(name)
}

/// The machine address a droplet name stands for, given the network (from its tag).
pub fn address_of_name(network: &str, name: &str) -> Option<Address> {
    let rest = name.strip_prefix(network)?.strip_prefix('-')?;
    let (cluster, slot) = rest.rsplit_once('-')?;
    if cluster.is_empty() || slot.is_empty() || !slot.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(Address::machine(cluster, slot.parse().ok()?))
}

/// Every tag a machine is created with, sorted: deploy tags, then ownership.
pub fn machine_tags(spec: &MachineSpec) -> Result<Vec<String>, ProviderError> {
    check_network(&spec.network)?;
    let mut tags: BTreeSet<String> = BTreeSet::new();
    for t in &spec.tags {
        if t.starts_with(PREFIX) {
            return Err(invalid(format!(
                "{}: deploy tag {t:?} uses the reserved prefix {PREFIX:?}",
                spec.address
            )));
        }
        if !is_valid_tag(t) {
            return Err(invalid(format!(
                "{}: deploy tag {t:?} is not a valid DigitalOcean tag (letters, digits, ':', '-', '_'; at most {MAX_LEN})",
                spec.address
            )));
        }
        tags.insert(t.clone());
    }
    tags.insert(network_tag(&spec.network));
    tags.insert(generation_tag(spec.generation));
    tags.insert(bootstrap_tag(spec.bootstrap));
    if let Some(chain) = &spec.chain_id {
        tags.insert(chain_tag(chain));
    }
    if spec.firewall.is_some() {
        let fw = firewall_tag(&spec.network, &spec.region.slug);
        if !is_valid_tag(&fw) {
            return Err(invalid(format!("region {:?} cannot be part of a tag", spec.region.slug)));
        }
        tags.insert(fw);
    }
    Ok(tags.into_iter().collect())
}

/// Tags peerfleet may add or remove on an existing droplet: deploy tags, the chain ID and the
/// firewall tag (never the network, generation or bootstrap tags, which only a replace changes).
pub fn is_mutable_tag(tag: &str) -> bool {
    !tag.starts_with(PREFIX)
        || tag.starts_with(&format!("{PREFIX}chain:"))
        || tag.starts_with(&format!("{PREFIX}fw:"))
}

fn tag_value<'a>(tags: &'a [String], key: &str) -> Option<&'a str> {
    let prefix = format!("{PREFIX}{key}:");
    tags.iter().find_map(|t| t.strip_prefix(prefix.as_str()))
}

/// The machine a droplet of `network` is, or `None` when it is not one of ours (no network tag, or a
/// name that is not an address of the network).
pub fn machine_of(network: &str, d: &Droplet) -> Option<Machine> {
    let ours = network_tag(network);
    if !d.tags.contains(&ours) {
        return None;
    }
    let address = address_of_name(network, &d.name)?;
    let status = match d.status.as_str() {
        "active" => MachineStatus::Running,
        "off" => MachineStatus::Stopped,
        "archive" => MachineStatus::ShuttingDown,
        _ => MachineStatus::Pending,
    };
    Some(Machine {
        id: d.id.to_string(),
        address,
        provider: ProviderKind::DigitalOcean,
        region: d.region.slug.clone(),
        size: d.size_slug.clone(),
        image: d.image.key(),
        tags: d.tags.iter().filter(|t| !t.starts_with(PREFIX)).cloned().collect(),
        chain_id: tag_value(&d.tags, "chain").and_then(ChainId::parse),
        generation: tag_value(&d.tags, "gen").and_then(|v| v.parse().ok()).unwrap_or(0),
        bootstrap: tag_value(&d.tags, "boot").and_then(|v| v.parse().ok()).unwrap_or(0),
        status,
        public_ip: d.address("public"),
        private_ip: d.address("private"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_even_with_dashes_in_network_and_cluster() {
        let a = Address::machine("sao-paulo", 12);
        let name = droplet_name("prod-eu", &a).unwrap_or_default();
        assert_eq!(name, "prod-eu-sao-paulo-12");
        assert_eq!(address_of_name("prod-eu", &name), Some(a));
        assert_eq!(address_of_name("prod", &name), Some(Address::machine("eu-sao-paulo", 12)));
        assert_eq!(address_of_name("other", &name), None);
        assert_eq!(address_of_name("prod-eu", "prod-eu-x"), None);
        assert_eq!(address_of_name("prod-eu", "prod-eu--3"), None);
    }

    #[test]
    fn names_digitalocean_cannot_hold_are_refused_up_front() {
        assert!(droplet_name("net", &Address::machine("under_score", 0)).is_err());
        assert!(droplet_name("net.work", &Address::machine("c", 0)).is_err());
        assert!(droplet_name("net", &Address::machine("fra1.b", 0)).is_ok());
        assert!(check_network("-net").is_err());
    }

    #[test]
    fn ownership_tags_fit_digitaloceans_charset_and_length() {
        let chain = ChainId::of(b"genesis");
        for t in [
            network_tag("prod-1"),
            generation_tag(u32::MAX),
            bootstrap_tag(1),
            chain_tag(&chain),
            firewall_tag(&"n".repeat(200), "fra1"),
        ] {
            assert!(is_valid_tag(&t), "{t}");
        }
    }

    #[test]
    fn only_deploy_chain_and_firewall_tags_are_mutable() {
        assert!(is_mutable_tag("relay"));
        assert!(is_mutable_tag("peerfleet:chain:ab"));
        assert!(is_mutable_tag("peerfleet:fw:n:fra1"));
        assert!(!is_mutable_tag("peerfleet:network:n"));
        assert!(!is_mutable_tag("peerfleet:gen:1"));
    }
}
