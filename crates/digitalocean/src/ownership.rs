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
//! | `peerfleet:deploy:<tag>` | droplets | deploy tag `<tag>` is peerfleet's |
//!
//! Deploy tags (`peer_cluster`, the cluster's tags) are written as they are, each with its marker
//! `peerfleet:deploy:<tag>`: tags have no values here, so the marker is what tells a deploy tag
//! peerfleet wrote from one a person added by hand, which is never reported and never removed. The
//! scheme itself (keys, spellings, names, the policy for foreign tags) is the core's
//! [`peerfleet_core::ownership`]; this module adds DigitalOcean's limits.
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
use peerfleet_core::ownership::{self, Key, MachineOwnership};
pub use peerfleet_core::ownership::{PREFIX, address_of_name};
use peerfleet_core::provider::ProviderError;
use peerfleet_core::resource::{Machine, MachineSpec, MachineStatus};
use peerfleet_core::{Address, ChainId};

use crate::error::invalid;
use crate::model::Droplet;

/// DigitalOcean's limit on tag and droplet-name length.
pub const MAX_LEN: usize = 255;

/// `peerfleet:network:<network>`.
pub fn network_tag(network: &str) -> String {
    Key::Network.bare(network)
}

/// `peerfleet:gen:<n>`.
pub fn generation_tag(generation: u32) -> String {
    Key::Generation.bare(&generation.to_string())
}

/// `peerfleet:boot:<n>`.
pub fn bootstrap_tag(version: u32) -> String {
    Key::Bootstrap.bare(&version.to_string())
}

/// `peerfleet:chain:<id>`.
pub fn chain_tag(chain: &ChainId) -> String {
    Key::ChainId.bare(chain.as_str())
}

/// `peerfleet:fw:<network>:<region>`: the tag a network's firewall in `region` applies to.
pub fn firewall_tag(network: &str, region: &str) -> String {
    Key::Firewall.bare(&format!("{network}:{region}"))
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

/// The droplet name of a machine: the core's [`ownership::machine_name`], checked against what
/// DigitalOcean accepts.
pub fn droplet_name(network: &str, address: &Address) -> Result<String, ProviderError> {
    check_network(network)?;
    let Address::Machine { cluster, .. } = address else {
        return Err(invalid(format!("{address} is not a machine")));
    };
    let ok =
        !cluster.is_empty() && cluster.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    let name = ownership::machine_name(network, address);
    if !ok || name.len() > MAX_LEN {
        return Err(invalid(format!(
            "cluster name {cluster:?} cannot be used on DigitalOcean: droplet names allow only letters, digits, '-' and '.', up to {MAX_LEN} characters"
        )));
    }
    Ok(name)
}

/// Every tag a machine is created with, sorted: the core's ownership record in its bare spelling
/// (deploy tags with their markers, network, generation, bootstrap, chain ID), and the firewall tag.
pub fn machine_tags(spec: &MachineSpec) -> Result<Vec<String>, ProviderError> {
    check_network(&spec.network)?;
    for t in &spec.tags {
        if ownership::is_reserved(t) {
            return Err(invalid(format!(
                "{}: deploy tag {t:?} uses the reserved prefix {PREFIX:?}",
                spec.address
            )));
        }
        // The marker beside it must fit too.
        if !is_valid_tag(t) || !is_valid_tag(&Key::Deploy.bare(t)) {
            return Err(invalid(format!(
                "{}: deploy tag {t:?} is not a valid DigitalOcean tag (letters, digits, ':', '-', '_'; at most {})",
                spec.address,
                MAX_LEN - Key::Deploy.bare_prefix().len()
            )));
        }
    }
    let mut tags: BTreeSet<String> = MachineOwnership::of(spec).to_bare(&spec.network).into_iter().collect();
    if spec.firewall.is_some() {
        let fw = firewall_tag(&spec.network, &spec.region.slug);
        if !is_valid_tag(&fw) {
            return Err(invalid(format!("region {:?} cannot be part of a tag", spec.region.slug)));
        }
        tags.insert(fw);
    }
    Ok(tags.into_iter().collect())
}

/// Whether a tag is of a kind peerfleet changes on an existing droplet: deploy tags (and their
/// markers), the chain ID and the firewall tag (never the network, generation or bootstrap tags,
/// which only a replace changes).
pub fn is_mutable_tag(tag: &str) -> bool {
    !tag.starts_with(PREFIX)
        || [Key::Deploy, Key::ChainId, Key::Firewall].iter().any(|k| tag.starts_with(k.bare_prefix()))
}

/// The tags among `tags` that an update may add or remove: of a mutable kind, and written by
/// peerfleet — a tag someone added by hand is never among them (see [`ownership`]).
pub fn managed_tags(tags: &[String]) -> BTreeSet<String> {
    ownership::managed_bare(tags).into_iter().filter(|t| is_mutable_tag(t)).collect()
}

/// The machine a droplet of `network` is, or `None` when it is not one of ours (no network tag, or a
/// name that is not an address of the network).
pub fn machine_of(network: &str, d: &Droplet) -> Option<Machine> {
    let owned = MachineOwnership::from_bare(network, &d.name, &d.tags)?;
    let status = match d.status.as_str() {
        "active" => MachineStatus::Running,
        "off" => MachineStatus::Stopped,
        "archive" => MachineStatus::ShuttingDown,
        _ => MachineStatus::Pending,
    };
    Some(Machine {
        id: d.id.to_string(),
        address: owned.address,
        provider: ProviderKind::DigitalOcean,
        region: d.region.slug.clone(),
        size: d.size_slug.clone(),
        image: d.image.key(),
        tags: owned.deploy,
        chain_id: owned.chain_id,
        generation: owned.generation,
        bootstrap: owned.bootstrap,
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
